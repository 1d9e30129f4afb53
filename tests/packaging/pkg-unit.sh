#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Offline checks of the systemd files: the unit must verify without a single line of output
# (systemd-analyze verify exits 0 on unknown keys and bad values, so output is the signal),
# keep its exposure score at or below 3.0 and keep the settings flashing depends on;
# sysusers.d and tmpfiles.d must create the user and the queue with the right modes.
set -u
cd "$(dirname "$0")/../.." || exit 1
build=${BUILD:-build}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
pass=0
fail=0
ok() { pass=$((pass + 1)); echo "ok   $1"; }
bad() { fail=$((fail + 1)); echo "FAIL $1"; }

# verify needs an executable ExecStart: point it at the build output when there is one.
exe=$PWD/$build/skrflashd
[ -x "$exe" ] || exe=/bin/true
unit=$work/skrflashd.service
sed "s#^ExecStart=/usr/sbin/skrflashd#ExecStart=$exe#" systemd/skrflashd.service >"$unit"

out=$(systemd-analyze verify --man=no "$unit" 2>&1)
if [ -z "$out" ]; then ok verify-silent; else bad verify-silent; echo "$out"; fi

# The check itself must notice a typo, or a silent verify proves nothing.
sed 's/^DeviceAllow=char-ttyACM rw/DeviceAlow=char-ttyACM rw/' "$unit" >"$work/typo.service"
out=$(systemd-analyze verify --man=no "$work/typo.service" 2>&1)
if [ -n "$out" ]; then ok verify-catches-typo; else bad verify-catches-typo; fi

sec=$(systemd-analyze security --offline=true --man=no "$unit" 2>&1)
score=$(sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p' <<<"$sec")
echo "exposure: ${score:-none}"
if [ -n "$score" ] && awk -v s="$score" 'BEGIN { exit !(s <= 3.0) }'; then
	ok "exposure-$score"
else
	bad "exposure-${score:-unknown}"
	echo "$sec" | grep '✗'
fi

# Settings the daemon relies on (brief and skrflashd(8)): losing one breaks flashing or a
# promise to the admin, yet verify and the score would not notice.
for want in 'Type=notify' 'WatchdogSec=' 'Restart=on-failure' 'RestartPreventExitStatus=78' \
	'User=skrflash' 'SupplementaryGroups=dialout skrflash-dev' 'MemoryMax=' \
	'StateDirectory=skrflash' \
	'RuntimeDirectory=skrflash' 'ConfigurationDirectory=skrflash' 'DevicePolicy=closed' \
	'DeviceAllow=char-usb_device rw' 'DeviceAllow=char-ttyACM rw' 'DeviceAllow=block-sd rw' \
	'RestrictAddressFamilies=AF_UNIX AF_NETLINK AF_INET AF_INET6' 'IPAddressDeny=any' \
	'IPAddressAllow=localhost' 'ProtectSystem=strict' 'NoNewPrivileges=yes' \
	'PrivateDevices=no' 'ExecStart=/usr/sbin/skrflashd' 'WantedBy=multi-user.target'; do
	case $want in
	*=) found=$(grep -c -- "^$want." systemd/skrflashd.service) ;;
	*) found=$(grep -cxF -- "$want" systemd/skrflashd.service) ;;
	esac
	if [ "$found" -gt 0 ]; then ok "has $want"; else bad "has $want"; fi
done
for never in 'PrivateNetwork=yes' 'PrivateUsers=yes' 'DynamicUser=yes' 'PrivateDevices=yes'; do
	if grep -qxF -- "$never" systemd/skrflashd.service; then bad "not $never"; else ok "not $never"; fi
done

# sysusers + tmpfiles into a scratch root: user, group and directory modes.
root=$work/root
mkdir -p "$root/etc"
if out=$(systemd-sysusers --root="$root" "$PWD/systemd/skrflash.sysusers" 2>&1) &&
	grep -q '^skrflash:x:[0-9]*:[0-9]*:[^:]*:/var/lib/skrflash:/usr/sbin/nologin$' \
		"$root/etc/passwd" && grep -q '^skrflash:x:' "$root/etc/group"; then
	ok sysusers
else
	bad sysusers
	echo "$out"
fi
uid=$(awk -F: '$1 == "skrflash" { print $3 }' "$root/etc/passwd")
gid=$(awk -F: '$1 == "skrflash" { print $3 }' "$root/etc/group")
out=$(systemd-tmpfiles --root="$root" --create "$PWD/systemd/skrflash.tmpfiles" 2>&1)
[ -z "$out" ] || echo "$out"
check_dir() {
	local got
	got=$(stat -c '%a %u %g' "$root$1" 2>/dev/null)
	if [ "$got" = "$2 $uid $gid" ]; then ok "dir $1 $2"; else bad "dir $1 $2 (got: $got)"; fi
}
check_dir /var/lib/skrflash 750
check_dir /var/lib/skrflash/queue 3770
check_dir /var/lib/skrflash/rejected 2750

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
