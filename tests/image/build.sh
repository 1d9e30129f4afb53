#!/bin/sh
# Builds the test firmware images of verdicts.sh with the arm-none-eabi toolchain:
#   tests/image/build.sh OUTDIR MKDICT MKUF2
# Each line of the table is one program: name, CPU, link origin, RAM base and size (the
# initial SP is the RAM end), padding bytes, dictionary (MCU/interface or "none") and whether
# the image starts with an RP2040 boot2 stage. Every program is emitted as .elf, .bin, .hex
# and, for RP2040, .uf2.
set -eu
out=$1
mkdict=$2
mkuf2=$3
src=$(dirname "$0")
cross=${CROSS_COMPILE:-arm-none-eabi-}
mkdir -p "$out"

clock_of() {
	case $1 in
	lpc1768) echo 100000000 ;;
	stm32f103xe) echo 72000000 ;;
	stm32f401xc) echo 84000000 ;;
	stm32f407xx) echo 168000000 ;;
	stm32f429xx) echo 180000000 ;;
	stm32g0b1xx | stm32g0b0xx) echo 64000000 ;;
	stm32h743xx | stm32h723xx) echo 400000000 ;;
	rp2040) echo 12000000 ;;
	*) echo 0 ;;
	esac
}

build() {
	name=$1 cpu=$2 origin=$3 ram_base=$4 ram_size=$5 pad=$6 dict=$7 boot2=$8
	layout=${9:-}
	defs="-DTAIL_SIZE=$pad"
	# real layout: handlers after ~26 KiB of code, the dictionary ~35 KiB in
	[ "$layout" = real ] && defs="$defs -DCODE_SIZE=$CODE -DRO_FILL=$RO"
	if [ "$dict" != none ]; then
		mcu=${dict%%/*}
		iface=${dict#*/}
		mkdir -p "$out/$name.dict"
		"$mkdict" "$mcu" "$(clock_of "$mcu")" "v0.13.0-test-$name" "$iface" \
			"$out/$name.dict/klipper_dict.inc"
		defs="$defs -DWITH_DICT -I$out/$name.dict"
	fi
	[ "$boot2" = 1 ] && defs="$defs -DWITH_BOOT2"
	sed -e "s/@ORIGIN@/$origin/" -e "s/@RAM_BASE@/$ram_base/" -e "s/@RAM_SIZE@/$ram_size/" \
		"$src/link.ld.in" >"$out/$name.ld"
	# shellcheck disable=SC2086 # $defs is a list of options
	"${cross}gcc" -mcpu="$cpu" -mthumb -Os -nostdlib -ffreestanding -Wall -Werror $defs \
		-T "$out/$name.ld" -o "$out/$name.elf" "$src/cm.c"
	"${cross}objcopy" -O binary "$out/$name.elf" "$out/$name.bin"
	"${cross}objcopy" -O ihex "$out/$name.elf" "$out/$name.hex"
	case $dict in
	rp2040/*) "$mkuf2" "$origin" "$out/$name.bin" "$out/$name.uf2" ;;
	esac
}

# Klipper's CONFIG_RAM_START + CONFIG_RAM_SIZE per MCU (the initial SP), its CPU, and the
# flash base; the offsets are the MCU's menuconfig choices (catalog.c, from Klipper's
# src/*/Kconfig "Bootloader offset").
mcu_info() {
	case $1 in
	lpc1768 | lpc1769) echo "cortex-m3 0x00000000 0x10000000 0x7fe0 0x0 0x4000" ;;
	stm32f103xe) echo "cortex-m3 0x08000000 0x20000000 0x5000 0x0 0x800 0x1000 0x2000 0x4000 0x5000 0x7000 0x8000 0x8800 0x9000 0x10000" ;;
	stm32f401xc) echo "cortex-m4 0x08000000 0x20000000 0x10000 0x0 0x4000 0x8000 0xc000 0x10000" ;;
	stm32f407xx | stm32f429xx) echo "cortex-m4 0x08000000 0x20000000 0x20000 0x0 0x4000 0x8000 0xc000 0x10000 0x20200" ;;
	stm32f446xx) echo "cortex-m4 0x08000000 0x20000000 0x20000 0x0 0x8000 0x10000" ;;
	stm32g0b1xx | stm32g0b0xx) echo "cortex-m0plus 0x08000000 0x20000000 0x24000 0x0 0x2000" ;;
	stm32h743xx | stm32h723xx) echo "cortex-m7 0x08000000 0x20000000 0x20000 0x0 0x20000" ;;
	rp2040) echo "cortex-m0plus 0x10000000 0x20000000 0x42000 0x100 0x4000" ;;
	esac
}

# real MCU OFFSET [INTERFACE]: a realistic build, named MCU-OFFSET[-INTERFACE]; sizes vary a
# little per MCU like real builds do (reset handler +0x6000..+0x7000, dictionary 34-39 KiB
# in, 40-46 KiB in all).
real() {
	mcu=$1 off=$2 iface=${3:-usb}
	# shellcheck disable=SC2046 # word list
	set -- $(mcu_info "$mcu")
	cpu=$1 base=$2 ram=$3 ramsize=$4
	name=$mcu-${off#0x}
	[ "$iface" != usb ] && name=$name-$iface
	boot2=0
	origin=$(printf '0x%08x' $((base + off)))
	if [ "$mcu" = rp2040 ] && [ "$off" = 0x100 ]; then
		boot2=1
		origin=$(printf '0x%08x' "$base")
	fi
	seed=$(printf '%s' "$mcu" | cksum | cut -d' ' -f1)
	CODE=$((0x6000 + seed % 0x800 * 2))
	RO=$((0x2000 + seed % 0x1000))
	build "$name" "$cpu" "$origin" "$ram" "$ramsize" $((5000 + seed % 3000)) "$mcu/$iface" \
		"$boot2" real
}

for m in lpc1768 lpc1769 stm32f103xe stm32f401xc stm32f407xx stm32f429xx stm32f446xx \
	stm32g0b1xx stm32g0b0xx stm32h743xx stm32h723xx rp2040; do
	# shellcheck disable=SC2046 # word list
	set -- $(mcu_info "$m")
	shift 4
	for o in "$@"; do real "$m" "$o"; done
done
# Other interfaces, at the offset of the catalog boards
for m in lpc1769:0x4000 stm32f103xe:0x7000 stm32f401xc:0x4000 stm32f407xx:0x8000 \
	stm32f429xx:0x8000 stm32f446xx:0x8000 stm32g0b1xx:0x2000 stm32h723xx:0x20000 \
	rp2040:0x100; do
	real "${m%%:*}" "${m#*:}" serial
done
for m in stm32f407xx:0x8000 stm32f446xx:0x8000 stm32g0b1xx:0x2000 stm32h723xx:0x20000 \
	rp2040:0x100; do
	real "${m%%:*}" "${m#*:}" can
	real "${m%%:*}" "${m#*:}" bridge
done
# A realistic build without a dictionary (Marlin-like): only the vector table and the
# SCB->VTOR literal tell where it is linked.
CODE=$((0x6800)) RO=$((0x2400))
build marlin-f407-8000 cortex-m4 0x08008000 0x20000000 0x20000 6000 none 0 real
build marlin-f407-0 cortex-m4 0x08000000 0x20000000 0x20000 6000 none 0 real

# The tiny images below are edge cases: handlers right after the vector table, a few KiB.
# name              cpu           origin      RAM base    RAM size pad    dictionary     boot2
build lpc-4000      cortex-m3     0x00004000  0x10000000  0x8000   2000   lpc1768/usb        0
build lpc-0         cortex-m3     0x00000000  0x10000000  0x8000   20000  lpc1768/usb        0
build f103-7000     cortex-m3     0x08007000  0x20000000  0x5000   2000   stm32f103xe/usb    0
build f103-0        cortex-m3     0x08000000  0x20000000  0x5000   2000   stm32f103xe/usb    0
build f103-8800     cortex-m3     0x08008800  0x20000000  0x5000   2000   stm32f103xe/usb    0
build f401-4000     cortex-m4     0x08004000  0x20000000  0x10000  2000   stm32f401xc/usb    0
build f407-8000     cortex-m4     0x08008000  0x20000000  0x20000  40000  stm32f407xx/usb    0
build f407-0        cortex-m4     0x08000000  0x20000000  0x20000  40000  stm32f407xx/usb    0
build f407-10000    cortex-m4     0x08010000  0x20000000  0x20000  40000  stm32f407xx/usb    0
build f407-c000     cortex-m4     0x0800c000  0x20000000  0x20000  20000  stm32f407xx/usb    0
build f407-serial   cortex-m4     0x08008000  0x20000000  0x20000  2000   stm32f407xx/serial 0
build f407-can      cortex-m4     0x08008000  0x20000000  0x20000  2000   stm32f407xx/can    0
build f407-bridge   cortex-m4     0x08008000  0x20000000  0x20000  2000   stm32f407xx/bridge 0
build f407-nomcu    cortex-m4     0x08008000  0x20000000  0x20000  2000   stm32f407xx/nomcu  0
build f407-marlin   cortex-m4     0x08008000  0x20000000  0x20000  2000   none               0
build f429-8000     cortex-m4     0x08008000  0x20000000  0x30000  2000   stm32f429xx/usb    0
build f429-nodict   cortex-m4     0x08008000  0x20000000  0x30000  2000   none               0
build f446-8000     cortex-m4     0x08008000  0x20000000  0x20000  2000   stm32f446xx/usb    0
build g0b1-2000     cortex-m0plus 0x08002000  0x20000000  0x24000  2000   stm32g0b1xx/usb    0
build g0b0-2000     cortex-m0plus 0x08002000  0x20000000  0x24000  2000   stm32g0b0xx/usb    0
build g0b1-0        cortex-m0plus 0x08000000  0x20000000  0x24000  2000   stm32g0b1xx/usb    0
build g0b1-1000     cortex-m0plus 0x08001000  0x20000000  0x24000  2000   stm32g0b1xx/usb    0
build h743-20000    cortex-m7     0x08020000  0x20000000  0x20000  2000   stm32h743xx/usb    0
build h723-20000    cortex-m7     0x08020000  0x20000000  0x20000  2000   stm32h723xx/usb    0
build h723-0        cortex-m7     0x08000000  0x20000000  0x20000  2000   stm32h723xx/usb    0
build h723-0-big    cortex-m7     0x08000000  0x20000000  0x20000  140000 stm32h723xx/usb    0
build rp2040        cortex-m0plus 0x10000000  0x20000000  0x42000  2000   rp2040/usb         1
build rp2040-4000   cortex-m0plus 0x10004000  0x20000000  0x42000  2000   rp2040/usb         0

# Broken UF2 files: wrong family, a missing block, a duplicated blockNo.
"$mkuf2" -f 0xe48bff59 0x10000000 "$out/rp2040.bin" "$out/uf2-family.uf2"
"$mkuf2" -s 2 0x10000000 "$out/rp2040.bin" "$out/uf2-missing.uf2"
"$mkuf2" -d 3 0x10000000 "$out/rp2040.bin" "$out/uf2-dup.uf2"
"$mkuf2" 0x10000000 "$out/f407-8000.bin" "$out/f407-8000.uf2"

# Size and content edge cases.
: >"$out/empty.bin"
head -c 8192 /dev/zero | tr '\0' '\377' >"$out/ff.bin"
cp "$out/f407-8000.bin" "$out/f407-huge.bin"
truncate -s 1100000 "$out/f407-huge.bin"
head -c 1000 "$out/rp2040.uf2" >"$out/rp2040-cut.uf2"
lines=$(wc -l <"$out/f407-8000.hex")
head -n $((lines / 2)) "$out/f407-8000.hex" >"$out/f407-cut.hex"
head -c 40 "$out/f407-8000.elf" >"$out/f407-cut-header.elf"
size=$(wc -c <"$out/f407-8000.elf")
head -c $((size / 3)) "$out/f407-8000.elf" >"$out/f407-cut.elf"
cat >"$out/test.conf" <<'CONF'
profiles = (
	{ name = "pro-serial"; match = { board = "skr-pro"; serial = "A"; }; interface = "serial"; },
	{ name = "oct-at-0"; match = { board = "octopus-f407"; }; app_start = 0x08000000;
	  methods = [ "dfu" ]; },
	{ name = "anyboard"; match = { serial = "X"; }; }
);
CONF
touch "$out/stamp"
