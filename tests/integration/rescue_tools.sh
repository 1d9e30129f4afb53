#!/bin/sh
# The UART ROM simulators against the real host tools (Debian's lpc21isp and stm32flash):
# each tool writes an image through a pty and reads or verifies it back, and the bytes in
# the simulated flash must be the image. A fault run proves the simulator can disagree.
set -u
BUILD=${BUILD:-build}
SIM="$BUILD/tests/integration/uartsim"
T=$(mktemp -d)
pid=
failed=0
checks=0
cleanup() {
	[ -n "$pid" ] && kill "$pid" 2>/dev/null
	rm -rf "$T"
}
trap cleanup EXIT

check() { # check NAME COMMAND...: one assertion
	name=$1
	shift
	checks=$((checks + 1))
	if "$@"; then echo "ok   $name"; else echo "FAIL: $name"; failed=$((failed + 1)); fi
}

sim_start() { # sim_start KIND MCU [ARGS...]: uartsim on $T/tty, flash dumped to $T/flash.bin
	kind=$1
	mcu=$2
	shift 2
	rm -f "$T/tty" "$T/flash.bin"
	"$SIM" "$kind" "$mcu" "$T/tty" "$T/flash.bin" "$@" >"$T/sim.out" 2>"$T/sim.err" &
	pid=$!
	n=0
	while [ ! -e "$T/tty" ] && [ $n -lt 100 ]; do sleep 0.05; n=$((n + 1)); done
	check "simulator up ($kind $mcu $*)" test -e "$T/tty"
}

sim_stop() { # stop the simulator; it writes the flash dump as it exits
	kill "$pid" && wait "$pid"
	pid=
	cat "$T/sim.err"
}

for tool in lpc21isp stm32flash; do
	if ! command -v $tool >/dev/null; then
		echo "FAIL: $tool not installed (make deps installs it)"
		exit 1
	fi
done

# An LPC image with a valid vector checksum (word 7), so lpc21isp's own patch leaves it as is,
# and a fake application at 0x10000 (sector 16) that must survive.
python3 - "$T" <<'PY'
import random, struct, sys
t = sys.argv[1]
random.seed(15)
d = bytearray(random.getrandbits(8) for _ in range(20000))
w = list(struct.unpack("<8I", d[:32]))
w[0], w[1] = 0x10008000, 0x00000101
w[7] = (-sum(w[:7])) & 0xFFFFFFFF
d[:32] = struct.pack("<8I", *w)
d[0x2FC:0x300] = bytes(4)  # no code-read-protection word
open(t + "/lpc.bin", "wb").write(d)
open(t + "/app.bin", "wb").write(bytes(random.getrandbits(8) for _ in range(8192)))
open(t + "/stm.bin", "wb").write(bytes(random.getrandbits(8) for _ in range(40000)))
PY

fails_with() { # fails_with TEXT COMMAND...: the command fails and says TEXT
	text=$1
	shift
	out=$("$@" 2>&1) && return 1
	echo "$out" | grep -q "$text"
}

slice() { # slice FILE OFFSET LEN OUT
	dd if="$1" of="$4" bs=1 skip="$2" count="$3" 2>/dev/null
}

# --- lpc21isp: write + verify (M compare) on an LPC1769 -------------------------------------
sim_start lpc lpc1769 "load=$T/app.bin@0x10000" fault=echo
check "lpc21isp writes and verifies through the LPC ISP simulator" \
	timeout 120 lpc21isp -bin -verify "$T/lpc.bin" "$T/tty" 115200 12000
sim_stop
slice "$T/flash.bin" 0 20000 "$T/got.bin"
check "LPC flash holds the image byte for byte" cmp "$T/lpc.bin" "$T/got.bin"
slice "$T/flash.bin" 65536 8192 "$T/got.bin"
check "the application in sector 16 is untouched" cmp "$T/app.bin" "$T/got.bin"

# --- lpc21isp against a part with code read protection: verification must fail ------------
sim_start lpc lpc1769 fault=crp
check "lpc21isp -verify fails when the simulated part refuses reads (CRP)" \
	fails_with "CODE READ PROTECTION ENABLED" timeout 120 lpc21isp -bin -verify "$T/lpc.bin" "$T/tty" 115200 12000
sim_stop

# --- stm32flash: write + verify, then read back into a file, on an F407 and an F446 --------
for mcu in stm32f407xx stm32f446xx; do
	sim_start stm32 $mcu
	check "stm32flash writes and verifies ($mcu)" \
		timeout 120 stm32flash -b 115200 -m 8n1 -w "$T/stm.bin" -v "$T/tty"
	rm -f "$T/back.bin"
	check "stm32flash reads it back ($mcu)" \
		timeout 120 stm32flash -b 115200 -m 8n1 -r "$T/back.bin" -S 0x08000000:40000 "$T/tty"
	check "read-back file equals the image ($mcu)" cmp "$T/stm.bin" "$T/back.bin"
	sim_stop
	slice "$T/flash.bin" 0 40000 "$T/got.bin"
	check "STM32 flash holds the image ($mcu)" cmp "$T/stm.bin" "$T/got.bin"
	check "sectors past the image stay erased ($mcu)" sh -c \
		"dd if='$T/flash.bin' bs=1024 skip=48 count=16 2>/dev/null | tr -d '\377' | wc -c | grep -qx 0"
done

# --- stm32flash against read protection: the write is refused ------------------------------
sim_start stm32 stm32f407xx fault=rdp
check "stm32flash fails against a read-protected part (RDP)" \
	fails_with "NACK" timeout 120 stm32flash -b 115200 -m 8n1 -w "$T/stm.bin" "$T/tty"
sim_stop
check "nothing was written under RDP" sh -c \
	"tr -d '\377' < '$T/flash.bin' | wc -c | grep -qx 0"

# --- skrflashctl rescue in manual mode against the LPC simulator: Katapult in, app kept -----
CTL="$(cd "$BUILD" && pwd)/skrflashctl"
python3 - "$T" <<'PY'
import random, struct, sys
t = sys.argv[1]
random.seed(16)
for name, size in (("stock.bin", 16384), ("katapult.bin", 14336)):
    d = bytearray(random.getrandbits(8) for _ in range(size))
    w = list(struct.unpack("<8I", d[:32]))
    w[0], w[1] = 0x10008000, 0x000001C1
    w[7] = (-sum(w[:7])) & 0xFFFFFFFF
    d[:32] = struct.pack("<8I", *w)
    d[0x2FC:0x300] = bytes(4)
    open(t + "/" + name, "wb").write(d)
d = bytearray(random.getrandbits(8) for _ in range(20000))
d[:8] = struct.pack("<2I", 0x20020000, 0x08000201)
open(t + "/katapult-f4.bin", "wb").write(d)
PY
check "rescue --dry-run prints the plan and what it erases" sh -c \
	"'$CTL' rescue --board skr-1.4-turbo --device /dev/null --dry-run '$T/katapult.bin' |
	 grep -q 'Will erase: 4 sectors, 0x00000000-0x00003fff'"
printf 'rescue = ( { device = "/dev/null"; board = "skr-1.4-turbo"; reset_line = "GPIO27"; } );\n' \
	>"$T/rescue.conf"
check "rescue takes device, board and lines from the rescue section" sh -c \
	"'$CTL' rescue --config '$T/rescue.conf' --dry-run '$T/katapult.bin' |
	 grep -q 'EXP2 pin 3.*GPIO line GPIO27'"
check "rescue refuses a board without a UART ROM path" fails_with "tied to GND" \
	"$CTL" rescue --board skr-mini-e3-v2-f103rc --device /dev/null --dry-run "$T/katapult.bin"
sim_start lpc lpc1769 "load=$T/stock.bin@0" "load=$T/app.bin@0x4000"
check "skrflashctl rescue installs Katapult through the LPC ISP simulator" sh -c \
	"cd '$T' && '$CTL' rescue --local --board skr-1.4-turbo --device '$T/tty' --save-old old.bin katapult.bin"
sim_stop
slice "$T/flash.bin" 0 14336 "$T/got.bin"
check "Katapult is at the flash base" cmp "$T/katapult.bin" "$T/got.bin"
slice "$T/flash.bin" 16384 8192 "$T/got.bin"
check "the application at 0x4000 is byte-identical" cmp "$T/app.bin" "$T/got.bin"
check "the stock bootloader was saved before writing" cmp "$T/stock.bin" "$T/old.bin"
sim_start stm32 stm32f407xx
check "rescue without --local asks the daemon, and says what to do when it is not running" \
	fails_with "run the rescue in this process with --local" \
	"$CTL" --socket "$T/no-daemon.sock" rescue --board skr-1.4-turbo --device "$T/tty" "$T/katapult.bin"
check "STM32 rescue on a port without parity says so" fails_with "even parity" \
	"$CTL" rescue --local --board skr-pro --device "$T/tty" "$T/katapult-f4.bin"
sim_stop

echo "rescue_tools: $checks checks, $failed failed"
[ "$failed" -eq 0 ]
