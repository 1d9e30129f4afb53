#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# The polkit rule runs in a small stand-in for polkitd's JavaScript environment (polkit.addRule,
# polkit.Result, action.lookup, subject.user) under duktape, the engine Debian's polkitd 122
# embeds: what the rule grants to whom is asserted case by case. node is used only when duk
# is missing. A structural check makes sure no broader grant slipped in.
set -u
cd "$(dirname "$0")/../.." || exit 1
rule=packaging/50-skrflash.rules
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if command -v duk >/dev/null; then
	js=duk
elif command -v node >/dev/null; then
	js=node
else
	echo "no JavaScript engine: install duktape"
	exit 1
fi

cat >"$work/prelude.js" <<'EOF'
var polkit = {
	Result: { NO: "no", YES: "yes", AUTH_SELF: "auth_self", AUTH_SELF_KEEP: "auth_self_keep",
		  AUTH_ADMIN: "auth_admin", AUTH_ADMIN_KEEP: "auth_admin_keep", NOT_HANDLED: null },
	rules: [],
	addRule: function (f) { this.rules.push(f); },
	addAdminRule: function (f) { },
	log: function (m) { },
	run: function (action, subject) {
		for (var i = 0; i < this.rules.length; i++) {
			var r = this.rules[i](action, subject);
			if (r) return r;
		}
		return null;
	}
};
EOF
cat >"$work/cases.js" <<'EOF'
var pass = 0, fail = 0;
function out(s) { if (typeof print === "function") print(s); else console.log(s); }
function ask(id, user, unit, verb) {
	var details = { unit: unit, verb: verb };
	var action = { id: id, lookup: function (k) { return details[k]; } };
	var subject = { user: user, groups: [user], local: false, active: false, system_unit: "" };
	return polkit.run(action, subject);
}
function expect(want, id, user, unit, verb) {
	var got = ask(id, user, unit, verb);
	var line = id + " " + user + " " + unit + " " + verb + " -> " + got;
	if (got === want) { pass++; out("ok   " + line); }
	else { fail++; out("FAIL " + line + " (want " + want + ")"); }
}
var M = "org.freedesktop.systemd1.manage-units";
expect("yes", M, "skrflash", "klipper.service", "stop");
expect("yes", M, "skrflash", "klipper.service", "start");
expect("yes", M, "skrflash", "klipper.service", "restart");
expect("yes", M, "skrflash", "klipper-2.service", "stop");
expect("yes", M, "skrflash", "klipper_printer3.service", "start");
expect("yes", M, "skrflash", "klipper@left.service", "stop");
expect(null, M, "skrflash", "klipper.service", "reload-or-restart");
expect(null, M, "skrflash", "klipper.service", "kill");
expect(null, M, "skrflash", "moonraker.service", "stop");
expect(null, M, "skrflash", "sshd.service", "stop");
expect(null, M, "skrflash", "myklipper.service", "stop");
expect(null, M, "skrflash", "klipper.socket", "start");
expect(null, M, "skrflash", "klipper.service.d/x.service", "start");
expect(null, M, "skrflash", "klipper/../sshd.service", "stop");
expect(null, M, "skrflash", undefined, "stop");
expect(null, M, "pi", "klipper.service", "stop");
expect(null, M, "root", "klipper.service", "stop");
expect(null, "org.freedesktop.systemd1.manage-unit-files", "skrflash", "klipper.service", "enable");
expect(null, "org.freedesktop.login1.reboot", "skrflash", undefined, undefined);
out(pass + " passed, " + fail + " failed");
if (fail > 0) throw new Error("polkit rule cases failed");
EOF
cat "$work/prelude.js" "$rule" "$work/cases.js" >"$work/all.js"
"$js" "$work/all.js"
rc=$?

# Structural: one rule, no blanket grant, nothing but YES/NOT_HANDLED as results.
sfail=0
[ "$(grep -c 'polkit.addRule' "$rule")" -eq 1 ] || { echo "FAIL exactly one addRule"; sfail=1; }
grep -q 'addAdminRule' "$rule" && { echo "FAIL no admin rule"; sfail=1; }
grep -Eq 'Result\.(AUTH|NO\b)' "$rule" && { echo "FAIL only YES/NOT_HANDLED"; sfail=1; }
grep -q 'subject.user !== "skrflash"' "$rule" || { echo "FAIL user check"; sfail=1; }
[ "$sfail" -eq 0 ] && echo "ok   structure"
[ "$rc" -eq 0 ] && [ "$sfail" -eq 0 ]
