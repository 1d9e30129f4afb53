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
	sh -c "! timeout 120 lpc21isp -bin -verify '$T/lpc.bin' '$T/tty' 115200 12000"
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
	sh -c "! timeout 120 stm32flash -b 115200 -m 8n1 -w '$T/stm.bin' '$T/tty'"
sim_stop
check "nothing was written under RDP" sh -c \
	"tr -d '\377' < '$T/flash.bin' | wc -c | grep -qx 0"

echo "rescue_tools: $checks checks, $failed failed"
[ "$failed" -eq 0 ]
