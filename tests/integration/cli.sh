#!/bin/sh
# skrflashctl as a new user meets it, against the real daemon on simulated boards and no
# configuration file: zero-config flashing of boards that share an MCU, the ambiguity
# refusal and its profile, one daemon per state directory, queue size and name safety,
# GNU-style options, JSON errors and exit status, progress, watch, boards and history.
# shellcheck disable=SC2119 # start_daemon takes optional extra daemon options
set -u
BUILD=${BUILD:-build}
if [ -z "${SKRFLASH_IN_SIM:-}" ]; then
	# 1-1: an Octopus (stm32f446xx: Octopus or Octopus Pro); 1-3 and 1-4: a Manta M8P and
	# an SKR Mini E3 V3, both stm32g0b1xx, so firmware "for a manta-m8p" could go to either
	SKRFLASH_IN_SIM=1 exec "$BUILD/skrsim" --quiet \
		--board manta-m8p@1-3:katapult-installed \
		--board skr-mini-e3-v3@1-4:katapult-installed \
		--board octopus-f446@1-1:katapult-installed \
		-- sh "$0"
fi
# Under `make asan` skrsim preloads ASan into every child, python3 and the shells too, whose
# own leaks at exit would fail the checks: leak reports are for the unit and engine tests
case ${LD_PRELOAD:-} in
*libasan*) export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0" ;;
esac
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"
# a configuration without profiles: the built-in catalog's (lib.sh writes it)
start_daemon

sim="$BUILD/skrsim"
"$sim" image octopus-f446 v0.13.0-one "$T/octo1.bin"
"$sim" image octopus-f446 v0.13.0-two "$T/octo2.bin"
"$sim" image manta-m8p v0.13.0-farm "$T/manta.bin"

says() { # says PATTERN CTL-ARGS...: skrflashctl's output (stdout and stderr) matches
	pat=$1
	shift
	ctl "$@" 2>&1 | grep -q -- "$pat"
}

board_field() { # board_field PORT KEY: from `skrflashctl --json boards`
	ctl --json boards | python3 -c '
import json, sys
for b in json.load(sys.stdin):
    if b["port"] == sys.argv[1]:
        print(b.get(sys.argv[2], ""))' "$1" "$2"
}

# --- zero configuration -----------------------------------------------------------------
check "an Octopus is seen without a profile: two catalog boards share its MCU" \
	test -z "$(board_field 1-1 profile)"
check "its state says how to pick one" says 'queue firmware under one of: octopus-f446, octopus-pro-f446' boards
check "queue under a catalog name of an ambiguous MCU is accepted" ctl queue octopus-f446 "$T/octo1.bin"
check "the queue name picked the board's profile" test "$(board_field 1-1 profile)" = octopus-f446
check "and its board" test "$(board_field 1-1 board)" = octopus-f446
check "boards says an update is pending" says 'update pending' boards
ctl flash octopus-f446 >"$T/flash.out" 2>&1
rc=$?
check "flash octopus-f446 with no config exits 0" test $rc -eq 0
check "and the board runs the image" test "$(board_field 1-1 installed_sha256)" = "$(sha_of "$T/octo1.bin")"
check "off a terminal, the progress is a few lines, not one per percent" test "$(wc -l <"$T/flash.out")" -le 25
check "with a rate" grep -q 'KiB/s' "$T/flash.out"
check "boards says up to date" says 'up to date' boards
check "boards shows the /dev/serial/by-id path" says '/dev/serial/by-id/' boards
check "boards shows the version, not a hash" says 'v0.13.0-one' boards

# two boards could take firmware queued for manta-m8p: refused with the profile that helps
ctl queue manta-m8p "$T/manta.bin" >"$T/amb.out" 2>&1
rc=$?
check "a real ambiguity is refused (exit 1)" test $rc -eq 1
check "the refusal shows the profile that resolves it" grep -q 'port = "1-3"' "$T/amb.out"
sed -n '/^profiles = ($/,/^);$/p' "$T/amb.out" >"$T/fix.conf"
check "the profile is three lines" test "$(wc -l <"$T/fix.conf")" -eq 3
check "and passes skrflashd --check-config" "$SKRFLASHD" --check-config "$T/fix.conf"
check "nothing was queued for manta-m8p" test -z "$(ctl --json queued | grep manta-m8p)"

# --- one daemon per state directory -------------------------------------------------------
# bounded: a second daemon that does not refuse would run for ever
timeout 10 "$SKRFLASHD" --state-dir "$STATE" --runtime-dir "$RUN" --log-target stderr \
	>"$T/second.out" 2>&1
rc=$?
check "a second skrflashd on the same state directory exits with status 1" test $rc -eq 1
check "saying another one runs" grep -q 'another skrflashd (pid [0-9]*) is already running' "$T/second.out"
check "the first one's socket is still there and answers" ctl status
timeout 10 "$SKRFLASHD" --state-dir "$T/other" --runtime-dir "$RUN" --log-target stderr \
	>"$T/third.out" 2>&1
rc=$?
check "another state directory on the same socket is refused too" test $rc -eq 1
check "and the socket still answers" ctl status

# --- GNU-style options, JSON and exit status ----------------------------------------------
check "--version" sh -c "'$SKRFLASHCTL' --version | grep -q '^skrflashctl [0-9]'"
check "global options after the command" sh -c "'$SKRFLASHCTL' status --json --socket '$RUN/control.sock' | python3 -c 'import json,sys; json.load(sys.stdin)'"
make_image "$T/order.bin" 0x08008000 0x20020000 4096 9
check "queue P FILE --no-wait (the order --help shows)" ctl queue octopus-f446 "$T/order.bin" --no-wait
is_json() { python3 -c 'import json,sys; json.load(sys.stdin)'; }
ctl --json validate "$T/octo1.bin" --board octopus-f446 >"$T/v.json"
check "validate with --json before the command prints JSON" is_json <"$T/v.json"
ctl --json flash no-such-board >"$T/err.json" 2>/dev/null
rc=$?
check "--json errors: exit 1" test $rc -eq 1
check "--json errors are JSON on stdout" python3 -c 'import json,sys; o=json.load(open(sys.argv[1])); sys.exit(0 if o["ok"] is False and o["exit"] == 1 else 1)' "$T/err.json"
check "did you mean for a board name" says "did you mean 'octopus-f446'" flash octopus-f447
check "did you mean for a profile name" says "did you mean 'octopus-f446'" queue octopus-f44 "$T/octo2.bin"
check "did you mean for a command" says "did you mean 'status'" stauts
ctl stauts 2>/dev/null
rc=$?
check "unknown command: exit 2" test $rc -eq 2
ctl queue octopus-f446 "$T/octo2.bin" >/dev/null 2>&1
# --dry-run: every check, the plan, nothing touched
jobs_before=$(ctl --json history | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')
ctl flash --dry-run octopus-f446 >"$T/plan.out" 2>&1
rc=$?
check "flash --dry-run exits 0" test $rc -eq 0
check "the plan names the method" grep -q 'method: *bootloader request' "$T/plan.out"
check "the units it would stop" grep -q 'stop units: *none' "$T/plan.out"
check "the print state" grep -q 'print state: ' "$T/plan.out"
check "and the versions" grep -q 'v0.13.0-one -> v0.13.0-two' "$T/plan.out"
check "no job was started or recorded" test "$(ctl --json history | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')" = "$jobs_before"
check "the board still runs the first image" test "$(board_field 1-1 installed_sha256)" = "$(sha_of "$T/octo1.bin")"
check "--dry-run of an image the board cannot take is refused" sh -c "! '$SKRFLASHCTL' --socket '$RUN/control.sock' flash 1-3 --dry-run"
ctl --json flash octopus-f446 >"$T/flash.json" 2>"$T/flash.err"
rc=$?
check "--json flash waits for the outcome and exits 0 on success" test $rc -eq 0
check "its JSON says succeeded" python3 -c 'import json,sys; o=json.load(open(sys.argv[1])); sys.exit(0 if o["result"] == "succeeded" and o["ok"] else 1)' "$T/flash.json"
check "the board runs the second image" test "$(board_field 1-1 installed_sha256)" = "$(sha_of "$T/octo2.bin")"
check "history shows versions old -> new" says 'v0.13.0-one -> v0.13.0-two' history

# --- queue: size and names ----------------------------------------------------------------
truncate -s 3G "$T/huge.bin"
ctl queue octopus-f446 "$T/huge.bin" >"$T/huge.out" 2>&1
rc=$?
check "an oversize file is refused by the client (exit 1)" test $rc -eq 1
check "saying nothing was copied" grep -q 'nothing copied' "$T/huge.out"
check "and nothing was copied" test -z "$(find "$QUEUE" "$STATE/rejected" -name '*huge*' 2>/dev/null)"

# --- watch says when the daemon stops; a reload that failed shows in status -----------------
printf 'profiles = ( { name = "x"; match = { board = "no-such"; }; } );\n' >"$CONFIG"
kill -HUP "$DAEMON_PID"
check "status says the last reload failed" wait_for 10 says 'last reload: *FAILED' status
printf '# empty again\n' >"$CONFIG"
ctl watch >"$T/watch.out" 2>"$T/watch.err" &
watch=$!
# the watch is subscribed once it reports an event: a file that is no firmware is one
i=0
while [ $i -lt 20 ] && ! grep -q watch-probe "$T/watch.out" 2>/dev/null && kill -0 $watch 2>/dev/null; do
	printf 'no firmware\n' >"$QUEUE/octopus-f446/watch-probe-$i.hex"
	wait_for 1 grep -q watch-probe "$T/watch.out" || true
	i=$((i + 1))
done
check "watch reports a rejected file" grep -q watch-probe "$T/watch.out"
stop_daemon
# a watch that does not notice would wait for ever: give it 10 s
i=0
while kill -0 $watch 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
kill $watch 2>/dev/null
wait $watch
rc=$?
check "watch exits non-zero when the daemon stops" test $rc -eq 3
check "and says so" grep -q 'skrflashd stopped' "$T/watch.err"

# --- offline: same-named files never replace each other; /etc/hostname is refused ----------
check "offline queue of a good image" ctl queue octopus-f446 "$T/octo1.bin"
check "offline queue of a second file with the same name" says 'this one is octo1-2.bin' queue octopus-f446 "$T/octo1.bin"
check "both are waiting" test -f "$QUEUE/octopus-f446/octo1.bin" -a -f "$QUEUE/octopus-f446/octo1-2.bin"
ctl queue octopus-f446 /etc/hostname >"$T/host.out" 2>&1
rc=$?
check "offline, a file that is no firmware is refused (exit 1)" test $rc -eq 1
check "not copied into the queue" test ! -e "$QUEUE/octopus-f446/hostname"

# --- from no config to a first config file: no noise, no stale state -----------------------
start_daemon
check "the files queued offline are picked up at start" wait_for 10 test ! -e "$QUEUE/octopus-f446/octo1-2.bin"
check "firmware waits for octopus-f446" says 'firmware waiting: 1' status
lines=$(wc -l <"$DAEMON_LOG")
cat >"$CONFIG" <<CONF
profiles = ( { name = "voron"; match = { board = "octopus-f446"; port = "1-1"; }; } );
CONF
kill -HUP "$DAEMON_PID"
wait_for 10 grep -q 'configuration reloaded' "$DAEMON_LOG"
# the queue removes the folders of profiles that are gone in its next pass, after the reload
queue_is() { test "$(ls "$QUEUE")" = "$1"; }
check "the catalog's empty queue folders are gone" wait_for 10 queue_is voron
tail -n +"$((lines + 1))" "$DAEMON_LOG" >"$T/reload.log"
check "the reload logs no error or warning" test -z "$(grep '^<[0-4]>' "$T/reload.log")"
check "nothing waits for a profile that is gone" says 'firmware waiting: 0' status
check "the log says what became of the orphaned firmware" grep -q "profile 'octopus-f446' is no longer in the configuration: its firmware .* stays stored as" "$T/reload.log"
check "and it is still stored" test -f "$STATE/firmware/$(sha_of "$T/octo1.bin")"
stop_daemon
finish
