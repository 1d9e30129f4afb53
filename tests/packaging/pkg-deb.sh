#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# The Debian package: built by "make deb" (which fails on any lintian error or warning), it
# holds every file in its place, registers the conffile and the maintainer script steps,
# and - as root, on this machine without systemd as PID 1 - installs and purges cleanly:
# user, group, setgid queue, enabled unit and journal catalog appear and go away again.
set -u
cd "$(dirname "$0")/../.." || exit 1
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
check conffiles test "$(cat "$ctl/conffiles")" = /etc/skrflash/skrflash.conf
check "postinst sysusers" grep -q 'systemd-sysusers .*skrflash.conf' "$ctl/postinst"
check "postinst tmpfiles" grep -q 'systemd-tmpfiles .*--create skrflash.conf' "$ctl/postinst"
check "postinst enable" grep -q "deb-systemd-helper enable 'skrflashd.service'" "$ctl/postinst"
check "postrm purges state" grep -q 'rm -rf /var/lib/skrflash' "$ctl/postrm"
makever=$(sed -n 's/^VERSION *:= *//p' Makefile)
debver=$(dpkg-deb -f "$DEB" Version)
check "version: Makefile $makever, changelog $debver" test "$makever" = "$debver"

if ! may_install "install/purge"; then
	finish
	exit
fi
pkg_lock || { bad "package test lock"; finish; exit 1; }
pkg_snapshot
trap 'pkg_restore; rm -rf "$ctl"' EXIT

if out=$(dpkg -i "$DEB" 2>&1); then ok "dpkg -i"; else bad "dpkg -i"; echo "$out"; fi
status() { dpkg-query -W -f='${Status}' skrflash 2>/dev/null; }
mode() { stat -c '%a %U %G' "$1" 2>&1; }
has_catalog() { journalctl --list-catalog 2>/dev/null | grep -q "^$1 skrflash:"; }
check installed test "$(status)" = "install ok installed"
check user test "$(getent passwd skrflash | cut -d: -f6-)" = /var/lib/skrflash:/usr/sbin/nologin
check group getent group skrflash
check "queue 3770 skrflash:skrflash ($(mode /var/lib/skrflash/queue))" \
	test "$(mode /var/lib/skrflash/queue)" = "3770 skrflash skrflash"
check "state dir 750 ($(mode /var/lib/skrflash))" \
	test "$(mode /var/lib/skrflash)" = "750 skrflash skrflash"
wants=/etc/systemd/system/multi-user.target.wants/skrflashd.service
check "unit enabled" test "$(readlink "$wants")" = /lib/systemd/system/skrflashd.service
check "catalog registered" has_catalog 3b0f5f0ec4b84a52a0f2a7e4a1c1d106
check "skrflashd --version" /usr/sbin/skrflashd --version
check "skrflashctl --help" /usr/bin/skrflashctl --help
check "queue writable by skrflash" runuser -u skrflash -- test -w /var/lib/skrflash/queue
check_not "queue hidden from others" runuser -u nobody -- test -r /var/lib/skrflash/queue

if out=$(dpkg --purge skrflash 2>&1); then ok "dpkg --purge"; else
	bad "dpkg --purge"
	echo "$out"
fi
check removed test -z "$(status | grep installed)"
for f in /usr/sbin/skrflashd /etc/skrflash/skrflash.conf /var/lib/skrflash "$wants" \
	/lib/udev/rules.d/70-skrflash.rules; do
	check_not "gone: $f" test -e "$f" -o -L "$f"
done
check_not "catalog unregistered" has_catalog 3b0f5f0ec4b84a52a0f2a7e4a1c1d106
finish
