/* SPDX-License-Identifier: GPL-2.0-or-later */
/* flash/sdcard: the board's SD card as a struct blockdev, driven in SPI mode through the
 * running Klipper firmware's spi_transfer / spi_send commands (worker side, blocking).
 *
 * Klipper's scripts/spi_flash/spi_flash.py does one spi_transfer at a time and waits for
 * each answer: about 20 round trips per sector. Here every sector's transfers are queued at
 * once and two sectors are kept in flight (the Klipper client's window carries them), so a
 * sector costs about one round trip. A sector whose answer does not parse (late data token,
 * CRC error) is drained and retried alone; CRC16 on every block means a misparse is never
 * taken for data. Codec: proto/sdspi. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "flash/klipper.h"
#include "proto/blockdev.h"

struct sdcard;

struct sdcard_info {
	unsigned version; /* 1 or 2 */
	bool sdhc;	  /* block addressing */
	uint64_t sectors; /* from the CSD */
};

/* Initialise the card on oid 0 (klipper_client_spi_setup first). 0 or -errno with a
 * message naming the step in sdcard_error / the client's error. On -ENOMEDIUM no card
 * answered: "is a card inserted?"; -ENODEV: the board's tty went away. */
int sdcard_open(struct klipper_client *c, struct sdcard **ret);
void sdcard_close(struct sdcard *sd);
const char *sdcard_error(const struct sdcard *sd);
void sdcard_get_info(const struct sdcard *sd, struct sdcard_info *ret);
/* The block device over the card; valid until sdcard_close. */
void sdcard_blockdev(struct sdcard *sd, struct blockdev *ret);
/* Sectors read/written and retries, for tests and benchmarks. */
struct sdcard_stats {
	uint64_t sectors_read, sectors_written, retries;
};
void sdcard_stats(const struct sdcard *sd, struct sdcard_stats *ret);
