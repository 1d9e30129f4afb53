#!/bin/sh
# Runs each test given on the command line and ends with the "N passed, N failed" line.
# An argument is a program, or "script:arg" for a script that takes one argument.
# Each test's output goes to $BUILD/test-logs/<name>.log; a failure prints its failed checks
# and the tail of that log.
set -u
build=${BUILD:-build}
logs="$build/test-logs"
mkdir -p "$logs"
limit=${SKRFLASH_TEST_TIMEOUT:-300}
pass=0
fail=0
for t in "$@"; do
	case "$t" in
	*:*) prog=${t%%:*}; arg=${t#*:}; name="$(basename "$prog" .sh)-$arg" ;;
	*) prog=$t; arg=; name=$(basename "$t") ;;
	esac
	log="$logs/$name.log"
	start=$(date +%s)
	if [ -n "$arg" ]; then
		timeout -k 5 "$limit" "$prog" "$arg" >"$log" 2>&1
	else
		timeout -k 5 "$limit" "$prog" >"$log" 2>&1
	fi
	rc=$?
	secs=$(($(date +%s) - start))
	if [ "$rc" -eq 0 ]; then
		pass=$((pass + 1))
		printf 'PASS  %-40s %3ss\n' "$name" "$secs"
	else
		fail=$((fail + 1))
		printf 'FAIL  %-40s %3ss (exit %s, log %s)\n' "$name" "$secs" "$rc" "$log"
		# the failed checks first (they may be far from the end), then the tail
		grep -E 'CHECK failed|== .* failed: |^FAIL[: ]' "$log" | head -n 20 |
			sed 's/^/      ! /'
		tail -n 25 "$log" | sed 's/^/      | /'
	fi
done
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
