#!/bin/sh
# Runs the validator on every test image of build.sh and asserts each verdict: exit code and
# the words of the message. The table runs through vcli (validate_command() alone) and,
# once skrflashctl has the validate command, through `skrflashctl validate` as well.
set -u
build=${BUILD:-build}
dir=$build/tests/image
fail=0
count=0

# expect TOOL CODE TEXT ARGS...: exit code CODE and TEXT (fixed string, may be "") on stdout
expect() {
	tool=$1 code=$2 text=$3
	shift 3
	out=$("$tool" validate "$@" 2>&1)
	rc=$?
	count=$((count + 1))
	if [ "$rc" -ne "$code" ]; then
		echo "FAIL: validate $*: exit $rc, expected $code"
		echo "$out" | sed 's/^/    /'
		fail=$((fail + 1))
	elif [ -n "$text" ] && ! printf '%s\n' "$out" | grep -qF -- "$text"; then
		echo "FAIL: validate $*: output lacks: $text"
		echo "$out" | sed 's/^/    /'
		fail=$((fail + 1))
	fi
}

# refuse TOOL BOARD FILE TEXT / accept TOOL BOARD FILE
refuse() { expect "$1" 1 "$4" --board "$2" "$dir/$3"; }
accept() { expect "$1" 0 "accepted" --board "$2" "$dir/$3"; }

table() {
	t=$1
	# the right offset, in every format, for each board
	for b in skr-1.3 skr-1.4; do accept "$t" $b lpc-4000.bin; done
	accept "$t" skr-mini-e3-v1.2 f103-7000.bin
	accept "$t" skr-mini-e3-v2-f103rc f103-7000.hex
	accept "$t" skr-mini-e3-v2-f103re f103-7000.elf
	accept "$t" skr-mini-e3-v3.0.1 f401-4000.bin
	for f in bin hex elf; do
		accept "$t" skr-pro f407-8000.$f
		accept "$t" skr-2-f407 f407-8000.$f
		accept "$t" skr-2-f429 f429-8000.$f
		accept "$t" skr-mini-e3-v3 g0b1-2000.$f
		accept "$t" skr-3-h743 h743-20000.$f
		accept "$t" skr-3-h723 h723-20000.$f
		accept "$t" skr-pico rp2040.$f
	done
	accept "$t" octopus-f407 f407-8000.bin
	accept "$t" octopus-f446 f446-8000.bin
	accept "$t" octopus-pro-h723 h723-20000.bin
	accept "$t" manta-m8p g0b1-2000.bin
	accept "$t" skr-mini-e3-v3-g0b0 g0b0-2000.bin
	accept "$t" skr-pico rp2040.uf2
	accept "$t" skr-pro f407-marlin.bin
	expect "$t" 0 "bin, 40868 bytes at 0x08008000, klipper stm32f407xx, usb, v0.13.0-test-f407-8000" \
		--board skr-pro "$dir/f407-8000.bin"

	# linked below the app start
	refuse "$t" skr-pro f407-0.bin \
		'f407-0.bin is linked for 0x08000000 ("No bootloader") but the app on BTT SKR Pro V1.1/V1.2 (STM32F407) starts at 0x08008000: rebuild with make menuconfig -> Bootloader offset "32KiB bootloader"'
	refuse "$t" skr-1.4 lpc-0.bin \
		'lpc-0.bin is linked for 0x00000000 ("No bootloader") but the app on BTT SKR V1.4 (LPC1768) starts at 0x00004000: rebuild with make menuconfig -> Bootloader offset "16KiB bootloader"'
	refuse "$t" skr-mini-e3-v1.2 f103-0.bin 'is linked for 0x08000000 ("No bootloader")'
	refuse "$t" skr-mini-e3-v3 g0b1-0.bin 'rebuild with make menuconfig -> Bootloader offset "8KiB bootloader"'
	refuse "$t" skr-mini-e3-v3 g0b1-1000.bin 'is linked for 0x08001000 (no Bootloader offset menuconfig offers)'
	refuse "$t" skr-3-h723 h723-0.bin 'rebuild with make menuconfig -> Bootloader offset "128KiB bootloader"'
	refuse "$t" skr-3-h723 h723-0-big.bin 'is linked for 0x08000000 ("No bootloader")'
	# linked above the app start, image larger than the gap
	refuse "$t" skr-pro f407-10000.bin \
		'f407-10000.bin is linked for 0x08010000 ("64KiB bootloader") but the app on BTT SKR Pro V1.1/V1.2 (STM32F407) starts at 0x08008000'
	refuse "$t" skr-pro f407-c000.bin 'is linked for 0x0800c000 ("48KiB bootloader")'
	expect "$t" 1 'is linked for 0x08008000 ("32KiB bootloader") but the app on BTT Octopus V1.0/V1.1 (STM32F407) starts at 0x08000000: rebuild with make menuconfig -> Bootloader offset "No bootloader"' \
		--profile oct-at-0 --config "$dir/test.conf" "$dir/f407-8000.bin"
	expect "$t" 0 "accepted" --profile oct-at-0 --config "$dir/test.conf" "$dir/f407-0.bin"
	# ELF and HEX carry their load address
	for f in elf hex; do
		refuse "$t" skr-pro f407-0.$f \
			"f407-0.$f is linked for 0x08000000 (\"No bootloader\") but BTT SKR Pro V1.1/V1.2 (STM32F407) needs it at 0x08008000: rebuild with make menuconfig -> Bootloader offset \"32KiB bootloader\""
		refuse "$t" skr-pro f407-10000.$f "is linked for 0x08010000"
	done
	# RP2040 layouts
	refuse "$t" skr-pico rp2040-4000.uf2 \
		'rp2040-4000.uf2 is linked for 0x10004000 ("16KiB bootloader") but BTT SKR Pico V1.0 (RP2040) needs it at 0x10000000'
	refuse "$t" skr-pico rp2040-4000.bin \
		'is linked for 0x10004000 ("16KiB bootloader") but the app on BTT SKR Pico V1.0 (RP2040) starts at 0x10000100: rebuild with make menuconfig -> Bootloader offset "No bootloader", or set app_start = 0x10004000 in the profile'
	refuse "$t" skr-pro f407-8000.uf2 'is a UF2 file, which only RP2040 boards take'

	# size and content
	refuse "$t" skr-pro f407-huge.bin \
		'f407-huge.bin is 1100000 bytes but only 1015808 bytes of flash follow 0x08008000'
	refuse "$t" skr-pro empty.bin 'empty.bin is empty'
	refuse "$t" skr-pro ff.bin 'contains only 0xFF bytes'
	refuse "$t" skr-pro f407-cut.hex 'not a valid firmware file: no end-of-file record'
	refuse "$t" skr-pro f407-cut.elf 'not a valid firmware file: segment extends past the end'
	refuse "$t" skr-pro f407-cut-header.elf 'not a valid firmware file: unreadable ELF header'
	refuse "$t" skr-pico rp2040-cut.uf2 'UF2 size is not a multiple of 512'
	refuse "$t" skr-pico uf2-family.uf2 'not for the RP2040 family'
	refuse "$t" skr-pico uf2-missing.uf2 'numBlocks does not match'
	refuse "$t" skr-pico uf2-dup.uf2 'UF2 blockNo repeated'
	refuse "$t" skr-pro f429-8000.bin 'was built for stm32f429xx, but BTT SKR Pro V1.1/V1.2 (STM32F407) is stm32f407xx'
	refuse "$t" skr-pro f429-nodict.bin 'initial stack pointer 0x20030000 is not in the RAM of the stm32f407xx'

	# MCU variants
	refuse "$t" skr-2-f429 f407-8000.bin \
		'f407-8000.bin was built for stm32f407xx, but BTT SKR 2 rev B (STM32F429) is stm32f429xx: rebuild with make menuconfig -> Processor model set to stm32f429xx'
	refuse "$t" skr-3-h723 h743-20000.bin 'was built for stm32h743xx, but BTT SKR 3 / SKR 3 EZ (STM32H723) is stm32h723xx'
	refuse "$t" skr-mini-e3-v3 g0b0-2000.bin 'was built for stm32g0b0xx, but BTT SKR Mini E3 V3.0 (STM32G0B1) is stm32g0b1xx'
	refuse "$t" skr-pro f407-nomcu.bin 'damaged Klipper data dictionary'

	# interface
	refuse "$t" skr-pro f407-serial.bin \
		'f407-serial.bin is a serial build, but the board is expected to talk USB: rebuild with make menuconfig -> Communication interface set to USB, or set interface = "serial" in the profile'
	refuse "$t" skr-pro f407-can.bin 'is a CAN build, but the board is expected to talk USB'
	refuse "$t" skr-pro f407-bridge.bin 'is a USB to CAN bus bridge build'
	expect "$t" 0 "accepted" --profile pro-serial --config "$dir/test.conf" "$dir/f407-serial.bin"
	expect "$t" 1 "is a USB build, but the board is expected to talk serial" \
		--profile pro-serial --config "$dir/test.conf" "$dir/f407-8000.bin"
	expect "$t" 1 "" --profile skr-pro "$dir/f407-serial.bin"

	# JSON
	expect "$t" 0 '{"accepted":true,"format":"uf2","load_address":"0x10000000","size":3328,"mcu":"rp2040","interface":"usb","version":"v0.13.0-test-rp2040","reasons":[]}' \
		--json --board skr-pico "$dir/rp2040.uf2"
	expect "$t" 1 '"accepted":false,"format":"bin","load_address":"0x08008000"' \
		--json --board skr-pro "$dir/f407-0.bin"
	expect "$t" 1 '"reasons":["f407-can.bin is a CAN build' --json --board skr-pro "$dir/f407-can.bin"

	# usage and unreadable files
	expect "$t" 2 "" --board skr-pro
	expect "$t" 2 "" --board skr-pro --profile skr-pro "$dir/f407-8000.bin"
	expect "$t" 2 "unknown board" --board no-such-board "$dir/f407-8000.bin"
	expect "$t" 2 "cannot read" --board skr-pro "$dir/does-not-exist.bin"
	expect "$t" 2 "names no board" --profile anyboard --config "$dir/test.conf" "$dir/f407-8000.bin"
	expect "$t" 2 "no profile" --profile nope --config "$dir/test.conf" "$dir/f407-8000.bin"
	expect "$t" 2 "" --bogus "$dir/f407-8000.bin"
}

table "$dir/vcli"
ctl=$build/skrflashctl
if [ -x "$ctl" ] && "$ctl" validate --help >/dev/null 2>&1; then
	table "$ctl"
else
	echo "note: $ctl has no validate command yet; checked through vcli only"
fi
echo "$count checks, $fail failed"
# The verdict table on the realistic builds: every board x every build of its MCU
if ! python3 "$(dirname "$0")/table.py" "$dir" "$dir/vcli"; then
	echo "FAIL: verdict table"
	fail=$((fail + 1))
fi
[ "$fail" -eq 0 ]
