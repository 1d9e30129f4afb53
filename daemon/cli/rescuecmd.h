/* SPDX-License-Identifier: GPL-2.0-or-later */
/* rescuecmd: `skrflashctl rescue`, installing a USB bootloader over a UART through the MCU's
 * ROM (flash/rescue), in the foreground; with --dry-run it only prints the plan, the wiring
 * for the board and what would be erased. docs/rescue.md describes it. */
#pragma once

/* argv[0] is "rescue"; options --board NAME, --device TTY, --baud N, --reset-line NAME,
 * --boot-line NAME, --crystal KHZ, --save-old FILE, --dry-run; one bootloader FILE.
 * Returns the exit code: 0 done (or plan printed), 1 failed or refused, 2 usage error. */
int rescue_command(int argc, char **argv);
