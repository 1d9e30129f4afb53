#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Man pages and journal catalog: the pages lint clean with mandoc and man-db, skrflash.conf(5)
# documents every configuration key, and a catalog database built offline from our catalog
# explains every MESSAGE_ID that daemon/log.h defines.
set -u
cd "$(dirname "$0")/../.." || exit 1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
pass=0
fail=0
ok() { pass=$((pass + 1)); echo "ok   $1"; }
bad() { fail=$((fail + 1)); echo "FAIL $1"; }

pages="daemon/service/skrflashd.8 daemon/cli/skrflashctl.1 conf/skrflash.conf.5"
for page in $pages; do
	out=$(mandoc -T lint -W warning "$page" 2>&1)
	if [ -z "$out" ]; then ok "mandoc $page"; else bad "mandoc $page"; echo "$out"; fi
	# man-db runs groff with warnings on; anything on stderr is a problem in the page.
	out=$(LC_ALL=C.UTF-8 MANWIDTH=80 man --warnings -E UTF-8 -l "$page" 2>&1 >/dev/null)
	if [ -z "$out" ]; then ok "man --warnings $page"; else bad "man --warnings $page"; echo "$out"; fi
	name=$(basename "$page")
	if grep -q "^\\.TH $(echo "${name%.*}" | tr "[:lower:]" "[:upper:]") ${name##*.} " "$page"; then
		ok "TH $page"
	else
		bad "TH $page"
	fi
done

# Every key of skrflash.conf must be described in skrflash.conf(5).
for key in state_dir queue_dir runtime_dir log_level max_jobs timeouts bootloader boot step \
	leave_grace client_idle rejected max_days max_mib drop_group control_group profiles name match board usb_id serial port mcu \
	product queue methods katapult dfu sd uf2 auto_flash hotplug stop_units moonraker \
	moonraker_fail_open moonraker_api_key_file app_start interface usb can; do
	if grep -Eq "^\\.(B|BR|TP|I) \"?$key\\b|^\\.BR .*\\b$key\\b" conf/skrflash.conf.5; then
		ok "conf key $key"
	else
		bad "conf key $key"
	fi
done
# The keys of a profile driven by OctoPrint.
for key in host octoprint url api_key_file; do
	if grep -Eq "^\\.(B|BR|TP|I) \"?$key\\b|^\\.BR .*\\b$key\\b" conf/skrflash.conf.5; then
		ok "conf key $key"
	else
		bad "conf key $key"
	fi
done
# And every top-level key the shipped example config uses.
if [ -f conf/skrflash.conf ]; then
	while read -r key; do
		if grep -q "^\\.BR $key " conf/skrflash.conf.5; then ok "example key $key"; else
			bad "example key $key (in conf/skrflash.conf, not in skrflash.conf.5)"; fi
	done < <(sed -n 's/^#\{0,1\}\([a-z_]*\) = .*/\1/p' conf/skrflash.conf | sort -u)
fi

# Catalog: build the database in a scratch root, then list it.
mkdir -p "$work/usr/lib/systemd/catalog"
cp systemd/skrflash.catalog "$work/usr/lib/systemd/catalog/"
out=$(journalctl --root="$work" --update-catalog 2>&1)
if [ -z "$out" ]; then ok "update-catalog"; else bad "update-catalog"; echo "$out"; fi
listed=$(journalctl --root="$work" --list-catalog 2>&1)
ids=$(sed -n 's/^#define LOG_MID_[A-Z_]* "\([0-9a-f]\{32\}\)".*/\1/p' daemon/log.h)
if [ "$(echo "$ids" | wc -w)" -ge 8 ]; then ok "log.h has message ids"; else bad "log.h ids"; fi
for id in $ids; do
	if grep -q "^$id skrflash: " <<<"$listed"; then ok "catalog $id"; else bad "catalog $id"; fi
done
n_entries=$(grep -c '^-- [0-9a-f]\{32\}$' systemd/skrflash.catalog)
if [ "$n_entries" -eq "$(echo "$ids" | wc -w)" ]; then ok "no stray entries"; else
	bad "no stray entries"; fi
# journalctl substitutes only @NAME@ made of capitals and '_': a digit leaves it literal.
if grep -Eq '@[A-Z_]*[0-9][A-Z0-9_]*@' systemd/skrflash.catalog; then
	bad "no unsubstitutable fields"
else
	ok "no unsubstitutable fields"
fi

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
