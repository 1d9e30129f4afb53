#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# "make install-data" into a DESTDIR puts every system integration file where systemd, udev,
# polkit, man and bash look on this distribution; "make uninstall-data" removes them again.
set -u
cd "$(dirname "$0")/../.." || exit 1
dest=$(mktemp -d)
trap 'rm -rf "$dest"' EXIT
pass=0
fail=0
mk() {
	env -u MAKEFLAGS -u MAKEOVERRIDES make --no-print-directory -s BUILD="${BUILD:-build}" "$@"
}

mk install-data PREFIX=/usr DESTDIR="$dest" >/dev/null || { echo "FAIL install-data"; exit 1; }
unitdir=$(pkg-config --variable=systemdsystemunitdir systemd 2>/dev/null ||
	echo /lib/systemd/system)
udevdir=$(pkg-config --variable=udevdir udev 2>/dev/null || echo /lib/udev)
for f in "$unitdir/skrflashd.service" "$udevdir/rules.d/70-skrflash.rules" \
	/usr/lib/sysusers.d/skrflash.conf /usr/lib/tmpfiles.d/skrflash.conf \
	/usr/lib/systemd/catalog/skrflash.catalog /usr/share/polkit-1/rules.d/50-skrflash.rules \
	/usr/share/bash-completion/completions/skrflashctl /usr/share/man/man8/skrflashd.8 \
	/usr/share/man/man1/skrflashctl.1 /usr/share/man/man5/skrflash.conf.5; do
	if [ -f "$dest$f" ] && [ "$(stat -c %a "$dest$f")" = 644 ]; then
		pass=$((pass + 1))
		echo "ok   $f"
	else
		fail=$((fail + 1))
		echo "FAIL $f"
	fi
done
check() {
	if "${@:2}"; then pass=$((pass + 1)); echo "ok   $1"; else fail=$((fail + 1)); echo "FAIL $1"; fi
}
check "ExecStart follows SBINDIR" grep -qx 'ExecStart=/usr/sbin/skrflashd' \
	"$dest$unitdir/skrflashd.service"
mk uninstall-data PREFIX=/usr DESTDIR="$dest" >/dev/null
local_dest=$dest/local
mk install-data PREFIX=/usr/local DESTDIR="$local_dest" >/dev/null
check "ExecStart with PREFIX=/usr/local" grep -qx 'ExecStart=/usr/local/sbin/skrflashd' \
	"$local_dest$unitdir/skrflashd.service"
check "man pages under PREFIX" test -f "$local_dest/usr/local/share/man/man8/skrflashd.8"
rm -rf "$local_dest"
left=$(find "$dest" -type f)
if [ -z "$left" ]; then pass=$((pass + 1)); echo "ok   uninstall-data"; else
	fail=$((fail + 1)); echo "FAIL uninstall-data left: $left"; fi
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
