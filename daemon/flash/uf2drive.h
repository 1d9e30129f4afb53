/* SPDX-License-Identifier: GPL-2.0-or-later */
/* uf2drive: the RP2040 BOOTSEL fallback when PICOBOOT cannot be claimed (issue 17, point 2):
 * a .uf2 file written as NEW.UF2 to the RPI-RP2 drive's raw block device through proto/fat,
 * without mounting it. The boot ROM programs every 512-byte sector that is a UF2 block,
 * whatever file it belongs to, and reboots once all blocks arrived (protocols.md §5.2). */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "proto/blockdev.h"

#define UF2DRIVE_NAME "NEW.UF2"

/* Checks that UF2 is whole UF2 blocks (the three magics of every 512-byte block) and that DEV
 * holds a UF2 bootloader's drive (INFO_UF2.TXT in the root), then writes the file. Errors
 * after all data sectors reached the drive count as success: the board reboots as soon as
 * it has every block, and the flush, FAT and directory writes may then find the drive gone:
 * that returns 1, and only the board coming back as the application proves the flash. 0 when the
 * whole file was written, -errno on failure; MSG says what happened either way. */
int uf2drive_write(const struct blockdev *dev, const uint8_t *uf2, size_t len, char *msg,
		   size_t msglen);

/* The same on a block device or image file path (flash/blockfile). */
int uf2drive_write_path(const char *path, const uint8_t *uf2, size_t len, char *msg, size_t msglen);
