#!/bin/sh
# Golden tests of the configuration loader. Each tests/config/*.conf, the shipped
# conf/skrflash.conf and its commented-out profile example go through
# `skrflashd --check-config -v`; stdout, stderr and the exit code must equal the .out file.
# Every accepted file's dump must load again and dump identically.
# SKRFLASH_UPDATE_GOLDEN=1 rewrites the .out files instead of comparing.
set -u
build=${BUILD:-build}
checker=${SKRFLASH_CHECK_CONFIG:-$build/skrflashd}
dir=tests/config
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0

if [ ! -x "$checker" ]; then
	echo "missing $checker" >&2
	exit 1
fi

# check NAME FILE: compare one file's result with $dir/NAME.out
check() {
	"$checker" --check-config -v "$2" >"$tmp/stdout" 2>"$tmp/stderr"
	rc=$?
	{
		cat "$tmp/stdout" "$tmp/stderr"
		echo "exit $rc"
	} >"$tmp/$1.actual"
	if [ "${SKRFLASH_UPDATE_GOLDEN:-}" = 1 ]; then
		cp "$tmp/$1.actual" "$dir/$1.out"
	elif ! diff -u "$dir/$1.out" "$tmp/$1.actual"; then
		echo "FAIL $1: output differs from $dir/$1.out"
		fail=1
	fi
	[ "$rc" -eq 0 ] || return 0
	# The dump is everything after the "configuration OK" line.
	awk 'seen { print } /^configuration OK$/ { seen = 1 }' "$tmp/stdout" >"$tmp/$1.dump.conf"
	if ! "$checker" --check-config -v "$tmp/$1.dump.conf" >"$tmp/$1.again" 2>&1; then
		echo "FAIL $1: the dump does not load again:"
		cat "$tmp/$1.again"
		fail=1
	elif ! diff -u "$tmp/stdout" "$tmp/$1.again"; then
		echo "FAIL $1: the dump does not load back to the same configuration"
		fail=1
	fi
}

check shipped conf/skrflash.conf
# The example profiles are commented out with "#" directly before the text; the example
# groups are replaced by one that exists everywhere.
sed -e 's/^#\([^ #]\)/\1/' -e 's/_group = "skrflash"/_group = "root"/' conf/skrflash.conf \
	>"$tmp/example.conf"
check example "$tmp/example.conf"
for f in "$dir"/*.conf; do
	check "$(basename "$f" .conf)" "$f"
done
[ "$fail" -eq 0 ] && echo "all configuration golden tests passed"
exit "$fail"
