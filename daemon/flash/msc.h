/* SPDX-License-Identifier: GPL-2.0-or-later */
/* msc: the "msc" backend (firmware.bin over Marlin's SD card drive; see msc.c) and the check
 * that the stock bootloader took the file, run once the board is back. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "device.h"
#include "proto/fat.h"
#include "proto/marlin.h"

#define MSC_FILE "firmware.bin"	     /* what the stock bootloader looks for (protocols.md §1.2) */
#define MSC_DONE_FILE "FIRMWARE.CUR" /* what it renames the file to once programmed */

/* Compares file NAME in the root of V with WANT: 0, -ENOENT, -EIO (MSG says how). */
int msc_compare_file(struct fat_vol *v, const char *name, const uint8_t *want, size_t len,
		     char *msg, size_t msglen);

/* M115 over the tty: which Marlin build runs. 0 or -errno with MSG. */
int msc_identify(const char *tty, struct marlin_info *info, char *msg, size_t msglen);

/* After M997 and the board's return: M115 names the image's build (the FIRMWARE_NAME literal
 * in IMG; not compared for an image without one, a migration's Klipper build), the card holds
 * FIRMWARE.CUR equal to IMG and no firmware.bin. The card is released for the check (M22) and given
 * back (M21). 0, -EBUSY (an SD print), -ENOEXEC (the bootloader did not take it: MSG says what was
 * found), other -errno. */
int msc_check_after(const struct device *dev, const uint8_t *img, size_t len, char *msg,
		    size_t msglen);
