/* SPDX-License-Identifier: GPL-2.0-or-later */
/* sdcard (simulator): an SD card backed by an image file, as seen on its pins.
 *
 * Written from the SD Physical Layer Simplified Specification (chapter 7, SPI mode), not
 * from the daemon's codec: the card decides on its own whether a command frame, a CRC, an
 * address or a data token is acceptable, so the host code can be wrong against it.
 *
 * The mode latch: a card powers up in SD (native) mode; CMD0 received with CS asserted
 * switches it to SPI mode, where it stays until power is removed. A bootloader that reads
 * the card over SDIO (Octopus, SKR 2/3) cannot talk to it then (protocols.md §4.4). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct sim_sdcard;

struct sim_sdcard_stats {
	unsigned commands;	 /* command frames accepted */
	unsigned crc_errors;	 /* command or data CRC errors seen */
	unsigned blocks_read;	 /* CMD17 blocks sent */
	unsigned blocks_written; /* CMD24 blocks stored */
};

/* The card over an image file (kept open; its size, rounded down to what a CSD can express,
 * is the card's). sdhc: block-addressed SDHC, else byte-addressed SDSC (at most 2 GiB). NULL
 * and errno on failure. */
struct sim_sdcard *sim_sdcard_new(const char *path, bool sdhc);
void sim_sdcard_free(struct sim_sdcard *c);
/* Power removed and restored: back to SD mode, uninitialised. */
void sim_sdcard_power_cycle(struct sim_sdcard *c);
/* Latched in SPI mode (since the last power cycle). */
bool sim_sdcard_spi_mode(const struct sim_sdcard *c);
/* One SPI transaction with CS asserted: len bytes in on MOSI, len bytes out on MISO. */
void sim_sdcard_transfer(struct sim_sdcard *c, const uint8_t *in, uint8_t *out, size_t len);
uint64_t sim_sdcard_sectors(const struct sim_sdcard *c);
void sim_sdcard_get_stats(const struct sim_sdcard *c, struct sim_sdcard_stats *ret);
/* The card as a bootloader's own driver sees it once it has initialised the card (the
 * stock SD bootloaders of tests/sim/sdboot.c): count 512-byte sectors at lba, straight from
 * the image. -ERANGE beyond the card, -EIO on a short transfer. */
int sim_sdcard_read_sectors(struct sim_sdcard *c, uint64_t lba, uint8_t *buf, size_t count);
int sim_sdcard_write_sectors(struct sim_sdcard *c, uint64_t lba, const uint8_t *buf, size_t count);
