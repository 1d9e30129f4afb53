#!/bin/sh
# The part of the demo that runs inside the simulated machine (see demo.sh).
set -u
T=$1
BUILD=$2
D="$BUILD/skrflashd"
ctl() { "$BUILD/skrflashctl" --socket "$T/run/control.sock" --queue-dir "$T/state/queue" \
	--config "$T/skrflash.conf" "$@"; }

# the daemon's log, shown as it happens without the journal decoration
"$D" -c "$T/skrflash.conf" --state-dir "$T/state" --runtime-dir "$T/run" \
	--log-target stderr >"$T/daemon.log" 2>&1 &
daemon=$!
tail -n +1 -f "$T/daemon.log" 2>/dev/null | sed -u -e 's/^<[0-9]>/  skrflashd: /' -e 's/ \[.*\]$//' &
tailer=$!
i=0
while ! ctl status >/dev/null 2>&1; do
	i=$((i + 1))
	[ $i -gt 100 ] && { echo "daemon did not start"; exit 1; }
	sleep 0.1
done

wait_job() { # wait_job PORT COUNT: until COUNT jobs on PORT have finished
	i=0
	while [ "$(ctl --json history 2>/dev/null | python3 -c '
import json, sys
rows = json.load(sys.stdin)
print(sum(1 for r in rows if r["port"] == sys.argv[1] and r["result"] not in ("running", "")))
' "$1" 2>/dev/null || echo 0)" -lt "$2" ]; do
		i=$((i + 1))
		[ $i -gt 300 ] && return 1
		sleep 0.1
	done
}

step() { printf '\n-- %s\n' "$*"; }

step "queue firmware for the Octopus (Katapult) and the SKR 3 (ROM DFU)"
ctl queue octopus "$T/octopus.bin"
ctl queue skr3 "$T/skr3.bin"
step "queue an image built without the bootloader offset for the SKR Pro"
ctl queue skrpro "$T/skrpro-no-offset.bin"
step "queue a good image for the Manta M8P"
ctl queue manta "$T/manta-good.bin"
wait_job 1-1 1; wait_job 1-2 1; wait_job 1-4 1
step "queue an image for the Manta M8P that crashes at start-up"
ctl queue manta "$T/manta-crash.bin"
wait_job 1-4 2

step "skrflashctl boards"
ctl boards
step "skrflashctl history"
ctl history

H="$T/history.json"
ctl --json history >"$H"
ctl --json boards >"$T/boards.json"
kill "$daemon"
wait "$daemon"
kill "$tailer" 2>/dev/null

# the outcomes, checked
fail=0
expect() { # expect DESCRIPTION COMMAND...
	desc=$1
	shift
	if "$@" >/dev/null 2>&1; then echo "ok: $desc"; else echo "NOT OK: $desc"; fail=1; fi
}
# shellcheck disable=SC2317 # called through expect "$@"
check_history() { # PORT RESULT METHOD
	python3 - "$H" "$@" <<'PY'
import json, sys
rows = json.load(open(sys.argv[1]))
port, result, method = sys.argv[2:5]
sys.exit(0 if any(r["port"] == port and r["result"] == result and r["method"] == method
                  for r in rows) else 1)
PY
}
# shellcheck disable=SC2317 # called through expect "$@"
installed() { # PORT FILE: the board runs that image
	python3 - "$T/boards.json" "$1" "$(sha256sum "$2" | cut -d' ' -f1)" <<'PY'
import json, sys
rows = json.load(open(sys.argv[1]))
sys.exit(0 if any(r["port"] == sys.argv[2] and r["installed_sha256"] == sys.argv[3]
                  for r in rows) else 1)
PY
}
echo
expect "Octopus flashed over Katapult, verified, booted" check_history 1-1 succeeded katapult
expect "Octopus runs the new image" installed 1-1 "$T/octopus.bin"
expect "SKR 3 flashed through ROM DFU, verified, booted" check_history 1-2 succeeded dfu
expect "SKR 3 runs the new image" installed 1-2 "$T/skr3.bin"
expect "SKR Pro image refused before any write" grep -q "skrpro-no-offset.bin.*32KiB bootloader" "$T/daemon.log"
expect "SKR Pro refused file kept in rejected/" test -f "$T/state/rejected/skrpro-no-offset.bin"
expect "Manta's crashing image rolled back" check_history 1-4 rolled-back katapult
expect "Manta runs the known-good image again" installed 1-4 "$T/manta-good.bin"
if [ $fail -eq 0 ]; then
	echo "demo: every expected outcome happened"
else
	echo "demo: some outcomes did not happen (daemon log: above)"
fi
exit $fail
