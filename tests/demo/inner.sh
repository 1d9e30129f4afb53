#!/bin/sh
# The part of the demo that runs inside the simulated machine (see demo.sh).
set -u
# under `make asan`, skrsim preloads ASan into python3 and the shells too: their own leaks at
# exit are not what the demo checks
case ${LD_PRELOAD:-} in
*libasan*) export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0" ;;
esac
T=$1
BUILD=$2
D="$BUILD/skrflashd"
ctl() { "$BUILD/skrflashctl" --socket "$T/run/control.sock" --config "$T/skrflash.conf" "$@"; }
say() { printf '\n%s\n' "$*"; }
more() { printf '%s\n' "$*"; }
show() { printf '$ skrflashctl %s\n' "$*"; ctl "$@"; }

# the daemon's own log goes to a file: the story is told by skrflashctl, as an operator sees it
"$D" -c "$T/skrflash.conf" --state-dir "$T/state" --runtime-dir "$T/run" \
	--log-target stderr >"$T/daemon.log" 2>&1 &
daemon=$!
i=0
while ! ctl status >/dev/null 2>&1; do
	i=$((i + 1))
	[ $i -gt 100 ] && { echo "skrflashd did not start:"; cat "$T/daemon.log"; exit 1; }
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

say "This Pi drives five printers. skrflashd has found their boards:"
show boards

watch_start() { # skrflashctl watch in the background, its pid in $T/watch.pid
	{
		"$BUILD/skrflashctl" --socket "$T/run/control.sock" watch 2>&1 &
		echo $! >"$T/watch.pid"
		wait
	} | sed -u 's/^/    watch | /' &
	watcher=$!
	sleep 0.3
}

say "skrflashctl watch follows what the daemon does (its lines are marked 'watch |')."
watch_start

say "1. New Klipper builds for the SKR 3 (flashed through the STM32 ROM bootloader), the"
more "   Manta M8P (through Katapult) and the SKR Pico (no bootloader of its own: through the"
more "   RP2040's BOOTSEL mode). Each file is checked against its board, then flashed:"
show queue skr3 "$T/skr3.bin"
show queue manta "$T/manta-good.bin"
show queue pico "$T/pico.bin"
wait_job 1-2 1
wait_job 1-4 1
wait_job 1-5 1

kill "$(cat "$T/watch.pid")" 2>/dev/null
wait "$watcher" 2>/dev/null

say "2. An SKR Pro build that forgot the 32KiB bootloader offset would never start."
more "   It is refused before the board is touched, and kept in rejected/ with the reason:"
show queue skrpro "$T/skrpro-no-offset.bin"

say "3. The Octopus is flashed only when the operator says so (auto_flash = [] in its profile)."
more "   A dry run first: every check, and the plan, without touching the board:"
show queue octopus "$T/octopus.bin"
show flash --dry-run octopus
say "   Then the flash itself, with its progress:"
show flash octopus

say "4. A Manta build for the wrong crystal passes every check but crashes at start-up."
more "   skrflashd sees it not boot, puts the last good image back, and blocks the bad one:"
watch_start
show queue manta "$T/manta-crash.bin"
wait_job 1-4 2
sleep 0.5

say "5. The SKR Pro on port 2-4 drives a printer run by OctoPrint, not Klipper (host ="
more "   \"octoprint\" in its profile). OctoPrint holds the board's serial port open:"
# OctoPrint: a fake one, outside the simulator's preload, holding the tty as pyserial does
mkfifo "$T/octoprint.in"
env -u LD_PRELOAD python3 "$(dirname "$0")/../integration/fake_octoprint.py" "$SKRSIM_ROOT" \
	"$T/octoprint-calls.log" "$(cat "$T/octoprint.port")" <"$T/octoprint.in" \
	>/dev/null 2>"$T/octoprint.log" &
octoprint=$!
exec 7>"$T/octoprint.in"
op() { # op GET|POST PATH [JSON]: OctoPrint's REST API with its key; prints the reply
	env -u LD_PRELOAD python3 - "$(cat "$T/octoprint.port")" "$@" <<'PY'
import json, sys, time, urllib.request
port, method, path = sys.argv[1:4]
data = sys.argv[4].encode() if len(sys.argv) > 4 else None
for _ in range(50):
    try:
        req = urllib.request.Request("http://127.0.0.1:%s%s" % (port, path), data=data,
                                     method=method, headers={
                                         "X-Api-Key": "OCTOPRINTKEY0123456789ABCDEF0000",
                                         "Content-Type": "application/json"})
        body = urllib.request.urlopen(req, timeout=5).read()
        break
    except OSError:
        time.sleep(0.1)
if path == "/api/connection" and method == "GET":
    c = json.loads(body)["current"]
    print("   OctoPrint: %s%s" % (c["state"], " on %s, %s baud" % (c["port"], c["baudrate"])
                                  if c["port"] else ""))
PY
}
byid=$(ctl --json boards | python3 -c 'import json, sys
print([b["by_id"] for b in json.load(sys.stdin) if b["port"] == "2-4"][0])')
op POST /api/connection "{\"command\":\"connect\",\"port\":\"$byid\",\"baudrate\":250000}"
op GET /api/connection
more "   While OctoPrint prints, the flash is refused and the board is not touched:"
op POST /_fake/state '{"state": "Printing"}'
show queue octoprint "$T/octoprint.bin"
show flash octoprint
more "   The print is done. OctoPrint lets go of the port for the flash and gets it back:"
op POST /_fake/state '{"state": "Operational"}'
show flash octoprint
i=0
while ! grep -q "^<[0-9]>OctoPrint at .* is connected again" "$T/daemon.log"; do
	i=$((i + 1))
	[ $i -gt 100 ] && break
	sleep 0.1
done
op GET /api/connection
op GET /api/connection >"$T/octoprint-after.txt"
more "   skrflashd's journal on the way:"
sed -n 's/^<[0-9]>\(OctoPrint at .*\(released\|connected again\)[^[]*\).*/     \1/p' "$T/daemon.log"

say "The boards now, and what happened to them:"
show boards
show history

H="$T/history.json"
ctl --json history >"$H"
ctl --json boards >"$T/boards.json"
say "When skrflashd stops (here: the end of the demo), watch says so and exits:"
kill "$daemon"
wait "$daemon"
wait "$watcher" 2>/dev/null
exec 7>&- # the fake OctoPrint exits at EOF
wait "$octoprint" 2>/dev/null

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
expect "SKR Pico flashed through BOOTSEL (PICOBOOT), verified, booted" check_history 1-5 succeeded uf2
expect "SKR Pico runs the new image" installed 1-5 "$T/pico.bin"
# shellcheck disable=SC2317 # called through expect "$@"
refused_while_printing() { # PORT: the board's first job was refused by OctoPrint's state
	python3 - "$H" "$1" <<'PY'
import json, sys
rows = [r for r in json.load(open(sys.argv[1])) if r["port"] == sys.argv[2]]
sys.exit(0 if rows and rows[-1]["result"] == "failed" and "is Printing" in rows[-1]["error"]
         and rows[-1]["step"] == "gate" else 1)
PY
}
# shellcheck disable=SC2317 # called through expect "$@"
port_given_back() { # OctoPrint was disconnected, then connected again to the same port
	python3 - "$T/octoprint-calls.log" "$T/octoprint-after.txt" <<'PY'
import sys
calls = open(sys.argv[1]).read().splitlines()
after = open(sys.argv[2]).read()
first = next(c for c in calls if c.startswith("POST connect"))
port = first.split()[2]
d = calls.index("POST disconnect")
back = [c for c in calls[d:] if c.startswith("POST connect")]
sys.exit(0 if back and back[0].split()[2] == port and "Operational on %s" % port[5:] in after
         else 1)
PY
}
expect "OctoPrint's SKR Pro refused while it prints" refused_while_printing 2-4
expect "OctoPrint's SKR Pro flashed over Katapult, verified, booted" check_history 2-4 succeeded katapult
expect "OctoPrint's SKR Pro runs the new image" installed 2-4 "$T/octoprint.bin"
expect "OctoPrint released the port and got it back" port_given_back
if [ $fail -eq 0 ]; then
	echo "demo: every expected outcome happened"
else
	echo "demo: some outcomes did not happen; the daemon's log:"
	cat "$T/daemon.log"
fi
exit $fail
