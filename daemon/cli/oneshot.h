/* SPDX-License-Identifier: GPL-2.0-or-later */
/* oneshot: `skrflashctl flash --device PATH FILE`, a foreground flash without the daemon.
 *
 * Same backends and the same worker sequence as the daemon; for a bench, a first install or
 * a board the daemon is not configured for. */
#pragma once

/* argv[0] is "flash"; options --device PATH (tty, /dev/serial/by-id link, /dev/bus/usb node
 * or USB port like 1-1.2), --board NAME, --method katapult|dfu, --window N; one FILE.
 * Returns the exit code: 0 flashed and booted, 1 failed, 2 usage error. */
int oneshot_flash(int argc, char **argv);
/* argv[0] is "reboot"; --device PATH [--board NAME]: leave Katapult (COMPLETE) or ROM DFU
 * (DfuSe leave) for the application already in flash. Returns 0 when the application came up
 * and stayed, 1 when not (BOOTSEL: needs PICOBOOT, said so), 2 usage error. */
int oneshot_reboot(int argc, char **argv);
