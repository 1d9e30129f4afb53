/* SPDX-License-Identifier: GPL-2.0-or-later */
/* msc: the "msc" backend (firmware.bin over Marlin's SD card drive; see msc.c) and the check
 * that the stock bootloader took the file, run once the board is back. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "proto/fat.h"

#define MSC_FILE "firmware.bin"	     /* what the stock bootloader looks for (protocols.md §1.2) */
#define MSC_DONE_FILE "FIRMWARE.CUR" /* what it renames the file to once programmed */

/* Compares file NAME in the root of V with WANT: 0, -ENOENT, -EIO (MSG says how). */
int msc_compare_file(struct fat_vol *v, const char *name, const uint8_t *want, size_t len,
		     char *msg, size_t msglen);
