#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Offline tests of udev/70-skrflash.rules: umockdev fakes sysfs, "udevadm test" evaluates the
# real system rules plus ours. systemd 252 has no "udevadm verify" and "udevadm test" exits 0
# on broken rules, so every line it prints about our file counts as an error. It also writes
# into /dev and /run/udev: each case runs in a private mount namespace with tmpfs over both,
# and a private /etc/group that knows the skrflash and skrflash-dev groups. Needs root
# (unshare -m).
set -u
cd "$(dirname "$0")/../.." || exit 1
RULES=${RULES:-$PWD/udev/70-skrflash.rules}
RULES_RE=$(basename "$RULES" | sed 's/[.]/[.]/g')

if [ "$(id -u)" != 0 ]; then
	echo "SKIP: needs root for unshare -m (CI runs as root)"
	exit 0
fi
for tool in udevadm umockdev-run unshare; do
	command -v "$tool" >/dev/null || { echo "missing $tool (packages udev umockdev)"; exit 1; }
done

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
FAKE_GID=4242
HUB=/sys/devices/platform/soc/3f980000.usb/usb1/1-1

# usb_device RECORD: port devnum vid pid manufacturer product serial
usb_device() {
	printf 'P: %s\nN: bus/usb/001/%03d\nE: DEVNAME=/dev/bus/usb/001/%03d\nE: DEVTYPE=usb_device\n' \
		"${HUB#/sys}/$1" "$2" "$2"
	printf 'E: DRIVER=usb\nE: PRODUCT=%s/%s/100\nE: TYPE=0/0/0\nE: BUSNUM=001\nE: DEVNUM=%03d\n' \
		"${3#0}" "$4" "$2"
	printf 'E: MAJOR=189\nE: MINOR=%d\nE: SUBSYSTEM=usb\n' "$2"
	printf 'A: idVendor=%s\nA: idProduct=%s\nA: bcdDevice=0100\nA: manufacturer=%s\n' "$3" "$4" "$5"
	printf 'A: product=%s\nA: serial=%s\nA: busnum=1\nA: devnum=%d\n' "$6" "$7" "$2"
	printf 'A: bDeviceClass=00\n'
	printf 'A: bNumInterfaces= 1\nA: bConfigurationValue=1\nA: speed=12\nA: dev=189:%d\n\n' "$2"
}

# interface RECORD: port ifnum class subclass protocol driver
usb_interface() {
	printf 'P: %s/%s:1.%d\nE: DEVTYPE=usb_interface\nE: DRIVER=%s\nE: SUBSYSTEM=usb\n' \
		"${HUB#/sys}/$1" "$1" "$2" "$6"
	printf 'E: INTERFACE=%d/%d/%d\n' "$((16#$3))" "$((16#$4))" "$((16#$5))"
	printf 'L: driver=../../../../../../../bus/usb/drivers/%s\n' "$6"
	printf 'A: bInterfaceNumber=%02d\nA: bInterfaceClass=%s\nA: bInterfaceSubClass=%s\n' "$2" "$3" "$4"
	printf 'A: bInterfaceProtocol=%s\nA: bAlternateSetting= 0\n\n' "$5"
}

# tty FILE: port vid pid manufacturer product serial
acm_board() {
	{
		printf 'P: %s/%s:1.0/tty/ttyACM0\nN: ttyACM0\nE: DEVNAME=/dev/ttyACM0\n' "${HUB#/sys}/$1" "$1"
		printf 'E: MAJOR=166\nE: MINOR=0\nE: SUBSYSTEM=tty\nA: dev=166:0\n\n'
		usb_interface "$1" 0 02 02 01 cdc_acm
		usb_device "$1" 7 "$2" "$3" "$4" "$5" "$6"
	} >"$WORK/$7.umockdev"
}

# raw bootloader without tty FILE: port vid pid manufacturer product serial class subclass proto
raw_board() {
	{
		usb_interface "$1" 0 "$7" "$8" "$9" ""
		usb_device "$1" 9 "$2" "$3" "$4" "$5" "$6"
	} >"$WORK/${10}.umockdev"
}

# mass storage FILE: port vid pid manufacturer product serial fstype label
usb_disk() {
	local d="${HUB#/sys}/$1/$1:1.0/host0/target0:0:0/0:0:0:0"
	{
		printf 'P: %s/block/sda/sda1\nN: sda1\nE: DEVNAME=/dev/sda1\nE: DEVTYPE=partition\n' "$d"
		printf 'E: MAJOR=8\nE: MINOR=1\nE: SUBSYSTEM=block\nE: PARTN=1\n'
		printf 'E: ID_FS_TYPE=%s\nE: ID_FS_LABEL=%s\nE: ID_FS_USAGE=filesystem\n' "$7" "$8"
		printf 'A: partition=1\nA: start=2048\nA: size=262144\nA: dev=8:1\n\n'
		printf 'P: %s/block/sda\nN: sda\nE: DEVNAME=/dev/sda\nE: DEVTYPE=disk\n' "$d"
		printf 'E: MAJOR=8\nE: MINOR=0\nE: SUBSYSTEM=block\nA: removable=1\nA: size=264192\n'
		printf 'A: dev=8:0\n\n'
		printf 'P: %s\nE: DEVTYPE=scsi_device\nE: DRIVER=sd\nE: SUBSYSTEM=scsi\n' "$d"
		printf 'L: driver=../../../../../../../../../../bus/scsi/drivers/sd\n'
		printf 'A: vendor=%-8s\nA: model=%-16s\nA: rev=1.00\nA: type=0\n\n' "$4" "$5"
		printf 'P: %s/%s:1.0/host0/target0:0:0\nE: DEVTYPE=scsi_target\nE: SUBSYSTEM=scsi\n\n' \
			"${HUB#/sys}/$1" "$1"
		printf 'P: %s/%s:1.0/host0\nE: DEVTYPE=scsi_host\nE: SUBSYSTEM=scsi\n\n' "${HUB#/sys}/$1" "$1"
		usb_interface "$1" 0 08 06 50 usb-storage
		usb_device "$1" 11 "$2" "$3" "$4" "$5" "$6"
	} >"$WORK/${9}.umockdev"
}

acm_board 1-1.2 1d50 614e Klipper stm32g0b1xx 3B0033000F50315939343520 klipper
acm_board 1-1.2 1d50 6177 katapult stm32g0b1xx 3B0033000F50315939343520 katapult
acm_board 1-1.3 1d50 6029 marlinfw.org "Marlin USB Device" 1.00000000000 marlin-lpc
acm_board 1-1.3 0483 5740 STMicroelectronics "MARLIN_STM32G0B1RE CDC in FS Mode" 203D32775841 \
	marlin-stm32
acm_board 1-1.4 2341 0043 Arduino "Arduino Uno" 8503631393635 other-acm
raw_board 1-1.2 0483 df11 STMicroelectronics "DFU in FS Mode" 203D32775841 fe 01 02 stm32-dfu
raw_board 1-1.2 1d50 6015 Smoothieware "LPC DFU" 0000 fe 01 02 lpc-dfu
raw_board 1-1.2 2e8a 0003 "Raspberry Pi" "RP2 Boot" E0C9125B0D9B ff 00 00 rp2040-usb
usb_disk 1-1.2 2e8a 0003 RPI RP2 E0C9125B0D9B vfat RPI-RP2 rp2040-msc
usb_disk 1-1.3 1d50 6029 NXP LPC17xx 1.00000000000 vfat MARLINSD marlin-msc
usb_disk 1-1.5 05e3 0749 Generic "STORAGE DEVICE" 000000000819 vfat SKRFLASH sdcard
usb_disk 1-1.5 05e3 0749 Generic "STORAGE DEVICE" 000000000819 vfat PHOTOS other-stick

# Runs "$@" in a private mount namespace: our rules in /etc/udev/rules.d, a group file that
# knows skrflash, tmpfs over /run and /dev (with the few real nodes umockdev needs).
sandbox() {
	local box rc
	box=$(mktemp -d "$WORK/box.XXXX")
	# shellcheck disable=SC2016 # the inner script expands its own positional parameters
	unshare -m --propagation private bash -eu -c '
		box=$1 rules=$2 gid=$3; shift 3
		mkdir -p "$box/rules" "$box/dev"
		cp "$rules" "$box/rules/"
		mount --bind "$box/rules" /etc/udev/rules.d
		# device nodes go to skrflash-dev (the daemon only), never to the operators
		grep -Ev "^skrflash(-dev)?:" /etc/group >"$box/group"
		echo "skrflash-dev:x:$gid:" >>"$box/group"
		echo "skrflash:x:$((gid + 1)):" >>"$box/group"
		mount --bind "$box/group" /etc/group
		mount -t tmpfs none /run
		mkdir -p /run/udev
		mount -t tmpfs none "$box/dev"
		mkdir -p "$box/dev/pts"
		for n in null zero full random urandom tty; do
			touch "$box/dev/$n"
			mount --bind "/dev/$n" "$box/dev/$n"
		done
		mount -t devpts -o newinstance,ptmxmode=0666 devpts "$box/dev/pts"
		ln -s pts/ptmx "$box/dev/ptmx"
		mount --rbind "$box/dev" /dev
		"$@"' _ "$box" "$RULES" "$FAKE_GID" "$@"
	rc=$?
	return $rc
}

pass=0
fail=0
# check NAME FIXTURE ACTION "SYSPATHS (earlier ones only prime the udev db)" REGEX...
# A REGEX starting with "!" must not match. Any diagnostic that names our rules file fails.
check() {
	local name=$1 fixture=$2 action=$3 paths=$4 cmd="" p out ok=1 re
	shift 4
	local -a arr
	read -ra arr <<<"$paths"
	for p in "${arr[@]:0:${#arr[@]}-1}"; do
		cmd+="udevadm test --action=add $p >/dev/null 2>&1; "
	done
	p=${arr[-1]}
	[ "$action" = remove ] && cmd+="udevadm test --action=add $p >/dev/null 2>&1; "
	cmd+="udevadm test --action=$action $p 2>&1"
	out=$(sandbox umockdev-run -d "$WORK/$fixture.umockdev" -- sh -c "$cmd")
	if grep -E "$RULES_RE:[0-9]+ " <<<"$out" |
		grep -Ev ' (GROUP|MODE|OWNER) [0-9]+$|(GROUP|MODE) ' >/dev/null; then
		ok=0
		echo "  diagnostics about our rules:"
		grep -E "$RULES_RE:[0-9]+ " <<<"$out" | sed 's/^/    /'
	fi
	if grep -Eiq 'invalid|unknown (group|key)|no matching label|failed to parse' <<<"$out"; then
		ok=0
		echo "  udevadm reported a rules problem:"
		grep -Ei 'invalid|unknown (group|key)|no matching label|failed to parse' <<<"$out" |
			sed 's/^/    /'
	fi
	for re in "$@"; do
		if [[ $re == !* ]]; then
			grep -Eq -- "${re#!}" <<<"$out" && { ok=0; echo "  unexpected: ${re#!}"; }
		else
			grep -Eq -- "$re" <<<"$out" || { ok=0; echo "  missing: $re"; }
		fi
	done
	if ((ok)); then
		pass=$((pass + 1))
		echo "ok   $name"
	else
		fail=$((fail + 1))
		echo "FAIL $name"
		echo "$out" | tail -n 40 | sed 's/^/    | /'
	fi
}

TTY() { echo "$HUB/$1/$1:1.0/tty/ttyACM0"; }
SDA="0:0:0:0/block/sda"
DISK() { echo "$HUB/$1/$1:1.0/host0/target0:0:0/$SDA"; }
OURS="$RULES_RE:[0-9]+"
GRP="$OURS GROUP $FAKE_GID"
NOGRP="!$OURS (GROUP|MODE)"

check klipper-tty klipper add "$(TTY 1-1.2)" '^SKRFLASH_MODE=klipper-app$' \
	'^CURRENT_TAGS=.*:skrflash:' '^ID_MM_DEVICE_IGNORE=1$' "$NOGRP" 'serial/by-id/usb-Klipper_'
check klipper-usb klipper add "$HUB/1-1.2" '^SKRFLASH_MODE=klipper-app$' ':skrflash:' "$NOGRP"
check katapult-tty katapult add "$(TTY 1-1.2)" '^SKRFLASH_MODE=katapult$' ':skrflash:' "$NOGRP"
check katapult-usb katapult add "$HUB/1-1.2" '^SKRFLASH_MODE=katapult$' "$NOGRP"
check marlin-lpc-tty marlin-lpc add "$(TTY 1-1.3)" '^SKRFLASH_MODE=marlin-lpc$' "$NOGRP"
check marlin-stm32-tty marlin-stm32 add "$(TTY 1-1.3)" '^SKRFLASH_MODE=marlin-stm32$' \
	'^ID_MM_DEVICE_IGNORE=1$' "$NOGRP"
check marlin-stm32-usb marlin-stm32 add "$HUB/1-1.3" '^SKRFLASH_MODE=marlin-stm32$'
check stm32-dfu stm32-dfu add "$HUB/1-1.2" '^SKRFLASH_MODE=stm32-rom-dfu$' ':skrflash:' \
	"$GRP" "$OURS MODE 0660"
check lpc-dfu lpc-dfu add "$HUB/1-1.2" '^SKRFLASH_MODE=lpc-dfu$' "$GRP" "$OURS MODE 0660"
check rp2040-usb rp2040-usb add "$HUB/1-1.2" '^SKRFLASH_MODE=rp2040-bootsel$' "$GRP" \
	"$OURS MODE 0660"
check rp2040-disk rp2040-msc add "$(DISK 1-1.2)" '^SKRFLASH_MODE=rp2040-bootsel$' "$GRP" \
	'^UDISKS_IGNORE=1$'
check rp2040-part rp2040-msc add "$(DISK 1-1.2) $(DISK 1-1.2)/sda1" \
	'^SKRFLASH_MODE=rp2040-bootsel$' "$GRP" '^UDISKS_IGNORE=1$'
check marlin-lpc-disk marlin-msc add "$(DISK 1-1.3)" '^SKRFLASH_MODE=marlin-lpc$' "$GRP"
check sdcard sdcard add "$(DISK 1-1.5) $(DISK 1-1.5)/sda1" '^SKRFLASH_MEDIA=sdcard$' "$GRP" \
	'^ID_USB_DRIVER=usb-storage$' '!SKRFLASH_MODE'
check other-stick other-stick add "$(DISK 1-1.5) $(DISK 1-1.5)/sda1" '!SKRFLASH' '!:skrflash:' \
	"$NOGRP"
check other-acm other-acm add "$(TTY 1-1.4)" '!SKRFLASH' '!:skrflash:' '!ID_MM_DEVICE_IGNORE'
check dfu-remove stm32-dfu remove "$HUB/1-1.2" "!$OURS" '^SKRFLASH_MODE=stm32-rom-dfu$'

# Never world-writable, whatever the rule.
if grep -Eq 'MODE="?0?6[0-9]6' "$RULES"; then
	fail=$((fail + 1))
	echo "FAIL no-world-writable"
else
	pass=$((pass + 1))
	echo "ok   no-world-writable"
fi
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
