#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# The Debian package: built by "make deb" (which fails on any lintian error or warning), it
# holds every file in its place, registers the conffile and the maintainer script steps,
# and - as root, on this machine without systemd as PID 1 - installs and purges cleanly:
# user, group, setgid queue, enabled unit and journal catalog appear and go away again.
set -u
cd "$(dirname "$0")/../.."
. tests/packaging/lib.sh
skip_under_asan

ensure_deb || { bad "make deb"; finish; exit 1; }
ok "make deb (lintian clean): $DEB"

want="/etc/skrflash/skrflash.conf /lib/systemd/system/skrflashd.service
/lib/udev/rules.d/70-skrflash.rules /usr/bin/skrflashctl /usr/lib/systemd/catalog/skrflash.catalog
/usr/lib/sysusers.d/skrflash.conf /usr/lib/tmpfiles.d/skrflash.conf /usr/sbin/skrflashd
/usr/share/bash-completion/completions/skrflashctl /usr/share/man/man1/skrflashctl.1.gz
/usr/share/man/man5/skrflash.conf.5.gz /usr/share/man/man8/skrflashd.8.gz
/usr/share/polkit-1/rules.d/50-skrflash.rules"
got=$(dpkg-deb -c "$DEB" | awk '$1 !~ /^d/ { sub(/^\./, "", $6); print $6 }' |
	grep -v -e '^/usr/share/doc/' -e '^/usr/share/lintian/' | sort)
if [ "$got" = "$(tr ' ' '\n' <<<"$want" | sed '/^$/d' | sort)" ]; then
	ok "package contents"
else
	bad "package contents"
	diff <(tr ' ' '\n' <<<"$want" | sed '/^$/d' | sort) <(echo "$got")
fi

ctl=$(mktemp -d)
trap 'rm -rf "$ctl"' EXIT
dpkg-deb -e "$DEB" "$ctl"
[ "$(cat "$ctl/conffiles")" = /etc/skrflash/skrflash.conf ] && ok conffiles || bad conffiles
grep -q 'systemd-sysusers .*skrflash.conf' "$ctl/postinst" && ok "postinst sysusers" ||
	bad "postinst sysusers"
grep -q 'systemd-tmpfiles .*--create skrflash.conf' "$ctl/postinst" && ok "postinst tmpfiles" ||
	bad "postinst tmpfiles"
grep -q "deb-systemd-helper enable 'skrflashd.service'" "$ctl/postinst" && ok "postinst enable" ||
	bad "postinst enable"
grep -q 'rm -rf /var/lib/skrflash' "$ctl/postrm" && ok "postrm purges state" ||
	bad "postrm purges state"
makever=$(sed -n 's/^VERSION *:= *//p' Makefile)
debver=$(dpkg-deb -f "$DEB" Version)
[ "$makever" = "$debver" ] && ok "version $debver" || bad "Makefile $makever vs changelog $debver"

if [ "$(id -u)" != 0 ]; then
	echo "SKIP install/purge: needs root (CI runs as root)"
	finish
	exit
fi
if dpkg-query -W -f='${Status}' skrflash 2>/dev/null | grep -q installed; then
	echo "SKIP install/purge: skrflash is installed on this machine, not touching it"
	finish
	exit
fi
pkg_lock || { bad "package test lock"; finish; exit 1; }
pkg_snapshot
trap 'pkg_restore; rm -rf "$ctl"' EXIT

if out=$(dpkg -i "$DEB" 2>&1); then ok "dpkg -i"; else bad "dpkg -i"; echo "$out"; fi
[ "$(dpkg-query -W -f='${Status}' skrflash)" = "install ok installed" ] && ok installed ||
	bad installed
getent passwd skrflash | grep -q ':/var/lib/skrflash:/usr/sbin/nologin$' && ok "user" ||
	bad "user"
getent group skrflash >/dev/null && ok "group" || bad "group"
[ "$(stat -c '%a %U %G' /var/lib/skrflash/queue 2>&1)" = "2770 skrflash skrflash" ] &&
	ok "queue 2770 skrflash:skrflash" || bad "queue: $(stat -c '%a %U %G' /var/lib/skrflash/queue 2>&1)"
[ "$(stat -c '%a %U %G' /var/lib/skrflash 2>&1)" = "750 skrflash skrflash" ] && ok "state dir" ||
	bad "state dir"
wants=/etc/systemd/system/multi-user.target.wants/skrflashd.service
[ "$(readlink "$wants")" = /lib/systemd/system/skrflashd.service ] && ok "unit enabled" ||
	bad "unit enabled"
journalctl --list-catalog 2>/dev/null | grep -q '^3b0f5f0ec4b84a52a0f2a7e4a1c1d106 skrflash:' &&
	ok "catalog registered" || bad "catalog registered"
/usr/sbin/skrflashd --version >/dev/null 2>&1 && ok "skrflashd --version" || bad "skrflashd --version"
/usr/bin/skrflashctl --help >/dev/null 2>&1
[ $? -le 2 ] && ok "skrflashctl runs" || bad "skrflashctl runs"
runuser -u skrflash -- test -w /var/lib/skrflash/queue && ok "queue writable by skrflash" ||
	bad "queue writable by skrflash"
runuser -u nobody -- test -r /var/lib/skrflash/queue && bad "queue hidden from others" ||
	ok "queue hidden from others"

if out=$(dpkg --purge skrflash 2>&1); then ok "dpkg --purge"; else bad "dpkg --purge"; echo "$out"; fi
dpkg-query -W -f='${Status}' skrflash 2>/dev/null | grep -q installed && bad "removed" || ok "removed"
for f in /usr/sbin/skrflashd /etc/skrflash/skrflash.conf /var/lib/skrflash "$wants" \
	/lib/udev/rules.d/70-skrflash.rules; do
	[ -e "$f" ] || [ -L "$f" ] && bad "gone: $f" || ok "gone: $f"
done
journalctl --list-catalog 2>/dev/null | grep -q '^3b0f5f0ec4b84a52a0f2a7e4a1c1d106' &&
	bad "catalog unregistered" || ok "catalog unregistered"
finish
