/* SPDX-License-Identifier: GPL-2.0-or-later */
/* touch: the USB "1200-baud touch" that asks a running Klipper to reboot into its bootloader
 * (protocols.md §2.1): Katapult when installed, else STM32 ROM DFU, LPC DFU or RP2040 BOOTSEL. */
#pragma once

/* Open tty, raise DTR, set 1200 baud, drop DTR, close. Errors after the open are ignored
 * because the board may vanish mid-sequence. 0, or -errno when the tty cannot be opened. */
int touch_enter_bootloader(const char *tty);
