/* SPDX-License-Identifier: GPL-2.0-or-later */
/* flash: the simulated on-chip flash of one board, with the MCU's erase geometry, NOR
 * semantics (erase sets 0xFF, programming can only clear bits) and a datasheet timing
 * model. Shared by the Katapult and DfuSe simulators; thread-safe (one mutex). */
#pragma once

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "catalog.h"

/* Datasheet timing of one MCU family, in microseconds (before the speed multiplier). */
struct flash_timing {
	uint32_t erase_us_base;	     /* fixed part of one sector/page erase */
	uint32_t erase_us_per_kib;   /* sector/page erase time per KiB of the erase unit */
	uint32_t program_us_per_kib; /* programming time per KiB */
	uint32_t usb_frame_us;	     /* one full-speed frame: 1000 */
};

struct flash {
	pthread_mutex_t lock;
	const struct catalog_mcu *mcu;
	uint32_t base;
	uint32_t size;
	uint8_t *bytes;	       /* size bytes, index = address - base */
	uint32_t *erase_count; /* per erase unit, in sector order */
	uint32_t n_sectors;
	uint32_t *sector_start; /* n_sectors erase units, ascending */
	uint32_t *sector_size;
	uint64_t total_erases;
	uint64_t total_programmed; /* bytes */
	struct flash_timing timing;
	double speed; /* 1.0 = datasheet time, 0 = instant */
};

/* Erased flash of the MCU's geometry. speed: 1.0 datasheet, 0.0 instant. */
struct flash *flash_new(const struct catalog_mcu *mcu, double speed);
struct flash *flash_free(struct flash *f);
/* Erase the unit containing addr. Returns 0, -ERANGE outside flash. *ret_busy_us = the
 * time the operation takes on the device (already scaled by speed), may be NULL. */
int flash_erase(struct flash *f, uint32_t addr, uint32_t *ret_busy_us);
/* Program bytes; -ERANGE outside flash, -EIO if a bit would have to go 0 -> 1 (not erased). */
int flash_program(struct flash *f, uint32_t addr, const uint8_t *data, size_t len,
		  uint32_t *ret_busy_us);
/* Copy out bytes; -ERANGE outside flash. */
int flash_read(struct flash *f, uint32_t addr, uint8_t *buf, size_t len);
/* Load bytes directly (factory programming: no timing, no erase rule). */
int flash_load(struct flash *f, uint32_t addr, const uint8_t *data, size_t len);
/* True when every byte of [addr, addr+len) is 0xFF. */
bool flash_is_erased(struct flash *f, uint32_t addr, size_t len);
/* True when [addr, addr+len) holds exactly data. */
bool flash_equals(struct flash *f, uint32_t addr, const uint8_t *data, size_t len);
/* Boot model (protocols.md §7): would a bootloader jumping to app_start run the app, as a
 * Cortex-M does? Initial SP inside the MCU's RAM, reset vector odd, inside the programmed
 * application and holding code, and (Klipper) the absolute pointer to the data dictionary
 * pointing at the dictionary's bytes in this flash. Independent of daemon/image. */
bool flash_app_valid(struct flash *f, uint32_t app_start);
/* Sleep for a device busy time (the caller decides where the wait happens). */
void flash_busy_wait(uint32_t busy_us);

/* Erase every unit (mass erase); *ret_busy_us as flash_erase. */
int flash_erase_all(struct flash *f, uint32_t *ret_busy_us);
/* Erase unit containing addr: index, start and size (each may be NULL); -ERANGE outside. */
int flash_sector(struct flash *f, uint32_t addr, uint32_t *ret_index, uint32_t *ret_start,
		 uint32_t *ret_size);
/* Erase counter of the unit containing addr (0 outside flash). */
uint32_t flash_erase_count(struct flash *f, uint32_t addr);
/* Busy time of programming len bytes, scaled by speed (no state change). */
uint32_t flash_program_time(const struct flash *f, size_t len);
/* Datasheet timing of a family (unscaled); the figures and sources are in flash.c. */
struct flash_timing flash_family_timing(enum catalog_family family);
