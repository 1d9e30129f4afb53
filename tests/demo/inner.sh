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

# the simulated SD cards are image files; mtools reads them without the testbed's preload
card() { env -u LD_PRELOAD "$@"; }
say "5. An SKR 1.4 Turbo and an SKR Pro with nothing but their stock SD bootloaders: no USB"
more "   bootloader at all. skrflashd writes firmware.bin to their SD cards through the running"
more "   Klipper, resets them, the bootloader flashes it, and the new Klipper is asked what it runs:"
show queue turbo "$T/turbo.bin"
show queue skrpro-sd "$T/skrpro-sd.bin"
wait_job 1-6 1
wait_job 1-7 1
more "   The SKR 1.4 Turbo's card afterwards (the bootloader renamed firmware.bin):"
card mdir -i "$SKRSIM_ROOT/sdcard-1-6.img" :: | sed -n 's/^/    /; /CUR\|bin\|BIN/p'
sleep 0.5
say "6. Two SKR 1.3 boards run Marlin. Marlin shows the board's SD card to the Pi as a USB"
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
