/* SPDX-License-Identifier: GPL-2.0-or-later */
/* blockdev: a device of 512-byte sectors, the one interface between the filesystem code
 * (proto/fat) and whatever carries the sectors: an SD card driven over SPI through the running
 * Klipper firmware, a USB mass-storage drive (Marlin's SD card, the RP2040's RPI-RP2), or an
 * image file in tests. The callbacks do the I/O; proto/ code only calls them, so it stays pure
 * and testable on memory. */
#ifndef SKRFLASH_PROTO_BLOCKDEV_H
#define SKRFLASH_PROTO_BLOCKDEV_H

#include <stdint.h>

#define BLOCKDEV_SECTOR 512u

struct blockdev {
	void *ctx;
	/* Size of the device in sectors. */
	uint64_t sectors;
	/* Read or write COUNT sectors at LBA into/from BUF (COUNT * 512 bytes): 0 or -errno. */
	int (*read)(void *ctx, uint64_t lba, uint32_t count, uint8_t *buf);
	int (*write)(void *ctx, uint64_t lba, uint32_t count, const uint8_t *buf);
	/* Make every written sector durable (fsync, SD busy wait); NULL when writes already are. */
	int (*flush)(void *ctx);
};

#endif
