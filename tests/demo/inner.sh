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

say "This Pi drives thirteen printers. skrflashd has found their boards:"
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

say "5. An SKR 1.4 without Katapult, with the community SD+DFU bootloader: Klipper's"
more "   bootloader request takes it into LPC DFU (plain DFU 1.1). skrflashd writes the image"
more "   there, reads every block back, and starts it:"
show queue skr14 "$T/skr14.bin"
wait_job 2-1 1
# the simulated SD cards are image files; mtools reads them without the testbed's preload
card() { env -u LD_PRELOAD "$@"; }
say "6. An SKR 1.4 Turbo and an SKR Pro with nothing but their stock SD bootloaders: no USB"
more "   bootloader at all. skrflashd writes firmware.bin to their SD cards through the running"
more "   Klipper, resets them, the bootloader flashes it, and the new Klipper is asked what it runs:"
show queue turbo "$T/turbo.bin"
show queue skrpro-sd "$T/skrpro-sd.bin"
wait_job 1-6 1
wait_job 1-7 1
more "   The SKR 1.4 Turbo's card afterwards (the bootloader renamed firmware.bin):"
card mdir -i "$SKRSIM_ROOT/sdcard-1-6.img" :: | sed -n 's/^/    /; /CUR\|bin\|BIN/p'
sleep 0.5
# the operator's hands on the SKR 1.4 Turbo, as skrflashctl asks for them (the Nth time)
hands() { # hands N
	i=0
	until [ "$(grep -c 'now, on skr-1.4-turbo: hold ISP' "$T/daemon.log")" -ge "$1" ]; do
		i=$((i + 1)); [ $i -gt 300 ] && return 1; sleep 0.1
	done
	echo isp >"$T/uart-1-9.pins"
	until [ "$(grep -c 'installed and verified: now press and release RESET' "$T/daemon.log")" -ge "$1" ]; do
		i=$((i + 1)); [ $i -gt 900 ] && return 1; sleep 0.1
	done
	echo reset >"$T/uart-1-9.pins"
}

say "7. An SKR 1.4 Turbo whose SD slot died: its stock bootloader only reads that slot, so it"
more "   could never be updated again. Its LPC1769 ROM still listens on UART0, wired to the Pi."
more "   First the plan: the wiring, and exactly what will be erased:"
echo "dump $T/turbo-before.bin" >"$T/uart-1-9.pins"
show rescue --dry-run "$T/katapult.bin"
say "   The rescue is a job of skrflashd (print state checked, Klipper stopped, the old"
more "   bootloader kept); the operator sets ISP and presses RESET when told:"
hands 1 &
hands_pid=$!
show rescue --board rescued "$T/katapult.bin"
wait "$hands_pid"
echo "dump $T/turbo-rescued.bin" >"$T/uart-1-9.pins"
say "   From now on an ordinary Katapult board: a new Klipper goes over USB."
show queue rescued "$T/turbo.bin"
wait_job 1-9 1
say "   And the stock bootloader can always go back, over the same UART:"
hands 2 &
hands_pid=$!
show restore rescued
wait "$hands_pid"
echo "dump $T/turbo-restored.bin" >"$T/uart-1-9.pins"
sleep 0.3
say "8. The SKR Pro on port 2-4 drives a printer run by OctoPrint, not Klipper (host ="
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

say "9. The SKR 2 has only its stock bootloader, which reads the SD card over SDIO. skrflash"
more "   writes firmware.bin through the running Klipper, but the card stays in SPI mode until it"
more "   loses power, so the bootloader cannot read it yet. Without a power group in its profile"
more "   (a Moonraker power device or a command such as uhubctl) the board says what it needs:"
show queue skr2 "$T/skr2.bin"
i=0
while [ "$(ctl --json boards 2>/dev/null | python3 -c '
import json, sys
print(next((b["state"] for b in json.load(sys.stdin) if b["port"] == "1-8"), ""))' 2>/dev/null)" \
	!= needs-power-cycle ]; do
	i=$((i + 1))
	[ $i -gt 1200 ] && break
	sleep 0.1
done
ctl --json boards >"$T/boards-power.json"
show boards
say "   The printer keeps working on its old firmware meanwhile. Someone switches the board"
more "   off and on (here the simulator cuts its power); its bootloader flashes firmware.bin and"
more "   skrflash verifies and records the flash by itself:"
echo "1-8 off" >>"$SKRSIM_POWER"
sleep 1.5
echo "1-8 on" >>"$SKRSIM_POWER"
wait_job 1-8 1 || wait_job 1-8 1 || wait_job 1-8 1 || wait_job 1-8 1
say "10. Two SKR 1.3 boards run Marlin. Marlin shows the board's SD card to the Pi as a USB"
more "   drive: skrflashd asks Marlin to let go of it (M22), writes firmware.bin to the card"
more "   without mounting anything, reads it back, resets the board (M997), and once Marlin is"
more "   back checks what the SD bootloader did: FIRMWARE.CUR is the image, and M115 names the"
more "   new build:"
show queue ender "$T/ender-marlin.bin"
wait_job 2-2 1
say "   The second one moves to Klipper: a change of firmware family, which its profile allows"
more "   (allow_migration = true). The same card carries the Klipper build:"
show queue ender-klipper "$T/ender-klipper.bin"
wait_job 2-3 1

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
expect "SKR 1.4 flashed through its LPC DFU bootloader, verified, booted" check_history 2-1 succeeded lpc-dfu
expect "SKR 1.4 runs the new image" installed 2-1 "$T/skr14.bin"
# shellcheck disable=SC2317 # called through expect "$@"
card_holds() { # PORT FILE: FIRMWARE.CUR on the board's card is that image, the volume clean
	img="$SKRSIM_ROOT/sdcard-$1.img"
	card fsck.fat -n "$img" && card mcopy -n -i "$img" ::FIRMWARE.CUR "$T/$1.cur" &&
		cmp "$T/$1.cur" "$2" && ! card mdir -i "$img" ::firmware.bin
}
expect "SKR 1.4 Turbo flashed through its SD card (method sd), verified, booted" check_history 1-6 succeeded sd
expect "SKR 1.4 Turbo runs the new image" installed 1-6 "$T/turbo.bin"
expect "SKR 1.4 Turbo's card holds it as FIRMWARE.CUR" card_holds 1-6 "$T/turbo.bin"
expect "SKR Pro flashed through its SD card (method sd), verified, booted" check_history 1-7 succeeded sd
expect "SKR Pro runs the new image" installed 1-7 "$T/skrpro-sd.bin"
expect "SKR Pro's card holds it as FIRMWARE.CUR" card_holds 1-7 "$T/skrpro-sd.bin"
# shellcheck disable=SC2317 # called through expect "$@"
same_bytes() { # A FROM TO B FROM: bytes [FROM, TO) of file A equal B's from FROM
	python3 - "$@" <<'PY'
import sys
a, af, at, b, bf = sys.argv[1], int(sys.argv[2], 0), int(sys.argv[3], 0), sys.argv[4], int(sys.argv[5], 0)
x = open(a, "rb").read()[af:at]
y = open(b, "rb").read()[bf:bf + len(x)]
sys.exit(0 if len(x) == at - af and x == y else 1)
PY
}
expect "SKR 1.4 Turbo: Katapult installed over the UART (rescue job)" check_history "uart:$T/uart-1-9" succeeded rescue-lpc
expect "SKR 1.4 Turbo: Katapult's bytes in sectors 0-3" same_bytes "$T/turbo-rescued.bin" 0 14336 "$T/katapult.bin" 0
# shellcheck disable=SC2317 # called through expect "$@"
rescued() { # the dump after the rescue holds Katapult, not the old bootloader: the checks
	# of the application and of the restore compare a real change, not an untouched board
	same_bytes "$T/turbo-rescued.bin" 0 14336 "$T/katapult.bin" 0 &&
		! same_bytes "$T/turbo-rescued.bin" 0 0x4000 "$T/turbo-before.bin" 0
}
# shellcheck disable=SC2317
app_kept() { rescued && same_bytes "$T/turbo-rescued.bin" 0x4000 0x80000 "$T/turbo-before.bin" 0x4000; }
# shellcheck disable=SC2317
stock_back() { rescued && same_bytes "$T/turbo-restored.bin" 0 0x4000 "$T/turbo-before.bin" 0; }
expect "SKR 1.4 Turbo: the application kept byte for byte" app_kept
expect "SKR 1.4 Turbo: new Klipper flashed over USB through Katapult" check_history 1-9 succeeded katapult
expect "SKR 1.4 Turbo runs the new image" installed 1-9 "$T/turbo.bin"
expect "SKR 1.4 Turbo: stock bootloader restored over the UART" check_history "uart:$T/uart-1-9" succeeded restore-lpc
expect "SKR 1.4 Turbo: the stock bootloader's bytes are back" stock_back
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
expect "SKR 2 (SDIO) showed needs-power-cycle after the SD write" python3 -c '
import json, sys
b = [b for b in json.load(open(sys.argv[1])) if b["port"] == "1-8"]
sys.exit(0 if b and b[0]["state"] == "needs-power-cycle" and b[0]["why"] else 1)' "$T/boards-power.json"
expect "SKR 2's state in the journal with SKRFLASH_STATE" grep -q "state=needs-power-cycle" "$T/daemon.log"
expect "SKR 2 flashed over its SD card after a power cycle, verified" check_history 1-8 succeeded sd
expect "SKR 2 runs the new image" installed 1-8 "$T/skr2.bin"
expect "SKR 1.3 on Marlin flashed over its SD card drive, checked" check_history 2-2 succeeded msc
expect "SKR 1.3 runs the new Marlin build" installed 2-2 "$T/ender-marlin.bin"
expect "SKR 1.3 reports Marlin 2.1.2.1" grep -q '"firmware":"Marlin 2.1.2.1"' "$T/boards.json"
expect "SKR 1.3 migrated from Marlin to Klipper over its card" check_history 2-3 succeeded msc
expect "the migrated SKR 1.3 runs the Klipper build" installed 2-3 "$T/ender-klipper.bin"
if [ $fail -eq 0 ]; then
	echo "demo: every expected outcome happened"
else
	echo "demo: some outcomes did not happen; the daemon's log:"
	cat "$T/daemon.log"
fi
exit $fail
