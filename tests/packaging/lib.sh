# SPDX-License-Identifier: GPL-2.0-or-later
# Shared by the package tests: build the .deb once (make deb is a no-op when it is up to
# date), and install/purge it on this machine while leaving the machine as it was found.
# shellcheck shell=bash

pass=0
fail=0
ok() { pass=$((pass + 1)); echo "ok   $1"; }
bad() { fail=$((fail + 1)); echo "FAIL $1"; }
# check NAME COMMAND...: passes when COMMAND succeeds; check_not: when it fails.
check() {
	local name=$1
	shift
	if "$@"; then ok "$name"; else bad "$name"; fi
}
check_not() {
	local name=$1
	shift
	if "$@"; then bad "$name"; else ok "$name"; fi
}
finish() {
	echo "$pass passed, $fail failed"
	[ "$fail" -eq 0 ]
}

# The package is built with the distribution's flags; the sanitizer run would only build
# the same package a second time.
skip_under_asan() {
	if [ -n "${SKRFLASH_ASAN:-}" ]; then
		echo "SKIP: package tests run in the normal check, not under the sanitizers"
		exit 0
	fi
}

# Sets DEB to the package file, building it first if needed.
ensure_deb() {
	local build=${BUILD:-build}
	if ! env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL -u MAKEOVERRIDES \
		make --no-print-directory BUILD="$build" deb; then
		echo "make deb failed"
		return 1
	fi
	DEB=$(find "$build/deb" -maxdepth 1 -name 'skrflash_*.deb' 2>/dev/null | head -n 1)
	[ -n "$DEB" ] && DEB=$(readlink -f "$DEB")
	[ -n "$DEB" ]
}

# may_install WHAT: succeeds when this run may install and purge the package here;
# otherwise says why WHAT is skipped.
may_install() {
	if [ "$(id -u)" != 0 ]; then
		echo "SKIP $1: needs root to install the package (CI runs as root)"
		return 1
	fi
	if dpkg-query -W -f='${Status}' skrflash 2>/dev/null | grep -q installed; then
		echo "SKIP $1: skrflash is installed on this machine, not touching it"
		return 1
	fi
}

# Serialises package tests of concurrent runs on one machine (one dpkg database).
pkg_lock() {
	exec 9>/run/lock/skrflash-package-test.lock
	flock -w 900 9
}

# Records what the tests may change; pkg_restore puts it back.
pkg_snapshot() {
	HAD_USER=0
	HAD_GROUP=0
	getent passwd skrflash >/dev/null && HAD_USER=1
	getent group skrflash >/dev/null && HAD_GROUP=1
	HAD_STATE=0
	[ -e /var/lib/skrflash ] && HAD_STATE=1
	return 0
}

pkg_restore() {
	if dpkg-query -W -f='${Status}' skrflash 2>/dev/null | grep -q 'installed\|config-files'; then
		dpkg --purge skrflash >/dev/null 2>&1 || echo "warning: dpkg --purge skrflash failed"
	fi
	[ "$HAD_USER" = 1 ] || ! getent passwd skrflash >/dev/null || userdel skrflash
	[ "$HAD_GROUP" = 1 ] || ! getent group skrflash >/dev/null || groupdel skrflash
	[ "$HAD_STATE" = 1 ] || rm -rf /var/lib/skrflash
	rm -rf /run/skrflash
	rmdir /etc/skrflash 2>/dev/null || true
}
