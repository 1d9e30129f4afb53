#!/bin/sh
# make demo tells its story: it succeeds, opens calmly (no daemon warning as its first words),
# shows skrflashctl flash with its progress and a dry run, and skrflashctl watch, including
# watch saying that the daemon stopped.
set -u
BUILD=${BUILD:-build}
out=$(mktemp)
trap 'rm -f "$out"' EXIT
fail=0
BUILD=$BUILD sh "$(dirname "$0")/demo.sh" >"$out" 2>&1
rc=$?
check() { # check DESCRIPTION COMMAND...
	desc=$1
	shift
	if "$@" >/dev/null 2>&1; then echo "ok: $desc"; else echo "FAIL: $desc"; fail=1; fi
}
check "the demo succeeds" test "$rc" -eq 0
check "its first lines alarm nobody" sh -c "! head -5 '$out' | grep -qi 'cannot\|error\|warning\|no systemd'"
check "no line of the daemon's log or of a compiler in the story" sh -c "! grep -q '^<[0-9]>\|^cc \|skrflashd: no systemd' '$out'"
check "it shows skrflashctl flash" grep -q '^\$ skrflashctl flash octopus$' "$out"
check "with its progress and rate" grep -q '^write 100% (24/24 KiB) .*KiB/s' "$out"
check "and a dry run" grep -q '^dry run: octopus-f446 on port 1-1 would be flashed' "$out"
check "it shows skrflashctl watch" grep -q 'watch | .*job-finished' "$out"
check "watch says when the daemon stops" grep -q 'watch | skrflashctl: skrflashd stopped' "$out"
[ $fail -eq 0 ] || cat "$out"
exit $fail
