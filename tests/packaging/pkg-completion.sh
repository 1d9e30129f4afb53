#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Loads the bash completion into this shell and asserts what it offers for command lines
# typed so far (COMP_WORDS/COMP_CWORD as bash sets them).
set -u
cd "$(dirname "$0")/../.." || exit 1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# shellcheck source=/dev/null
. packaging/skrflashctl.bash-completion
pass=0
fail=0

# expect "WANTED WORDS (sorted, space separated)" WORD...   (last WORD = word being completed)
expect() {
	local want=$1 got
	shift
	COMP_WORDS=(skrflashctl "$@")
	COMP_CWORD=$#
	COMPREPLY=()
	_skrflashctl
	got=$(printf '%s\n' "${COMPREPLY[@]}" | sed '/^$/d' | sort | tr '\n' ' ')
	got=${got% }
	if [ "$got" = "$want" ]; then
		pass=$((pass + 1))
		echo "ok   [$*] -> $got"
	else
		fail=$((fail + 1))
		echo "FAIL [$*] -> '$got', want '$want'"
	fi
}

if [ "$(complete -p skrflashctl 2>/dev/null)" = "complete -F _skrflashctl skrflashctl" ]; then
	pass=$((pass + 1))
else
	fail=$((fail + 1))
	echo "FAIL completion not registered"
fi
mkdir -p "$work/queue/octopus" "$work/queue/toolhead" "$work/files"
touch "$work/files/klipper.bin" "$work/queue/not-a-dir"
export SKRFLASH_QUEUE_DIR=$work/queue

expect "boards catalog flash history queue queued reboot rescue retry status validate watch" ""
expect "--board --device" reboot --
expect "queue queued" qu
expect "--config --help --json --queue-dir --socket --verbose --version" --
expect "--dry-run" flash --dr
expect "status" --json st
expect "status" --socket /run/x.sock st
expect "octopus toolhead" queue ""
expect "toolhead" --json queue t
expect "$work/files/klipper.bin" queue octopus "$work/files/k"
expect "--board --json --limit" history --
expect "" history --limit ""
expect "--board --profile" validate --
expect "octopus" validate --profile o
expect "--all --json" boards --
expect "--no-wait" queue --n
expect "" flash ""
expect "--baud --board --boot-line --config --crystal --device --dry-run --reset-line --save-old" rescue --
expect "$work/files/klipper.bin" rescue --board skr-1.4-turbo --baud 57600 "$work/files/k"
mkdir -p "$work/other/printer9"
expect "printer9" --queue-dir "$work/other" queue ""
expect "" status ""

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
