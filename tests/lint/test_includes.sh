#!/bin/sh
# test_includes: the layering check passes on the real tree and fails on each kind of
# wrong-direction include planted in a copy of it.
set -u
here=$(dirname "$0")
check="$here/includes.sh"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
pass=0
fail=0
ok() { pass=$((pass + 1)); echo "ok: $*"; }
no() { fail=$((fail + 1)); echo "CHECK failed: $*"; }

if "$check" daemon >"$work/out" 2>&1; then ok "daemon/ keeps the rules"; else
	no "daemon/ breaks the rules:"; cat "$work/out"; fi

# plant FILE INCLUDE: expect a failure that names FILE
plant() {
	rm -rf "$work/d"
	cp -r daemon "$work/d"
	printf '#include "%s"\n' "$2" >>"$work/d/$1"
	if "$check" "$work/d" >"$work/out" 2>&1; then
		no "$1 including \"$2\" passed the check"
	elif grep -q "$work/d/$1:" "$work/out"; then
		ok "$1 including \"$2\" is refused: $(head -n 1 "$work/out" | sed "s|$work/d/||")"
	else
		no "$1 including \"$2\" failed without naming the file"; cat "$work/out"
	fi
}
plant proto/dfu.c util.h
plant proto/katapult.h image/image.h
plant image/validate.c flash/backend.h
plant flash/worker.c service/job.h
plant flash/katapult.c cli/oneshot.h
plant service/job.c flash/backend.h
plant cli/oneshot.c service/store.h
plant util.c service/store.h
plant catalog.h proto/dfu.h
plant service/job.c boards.h

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
