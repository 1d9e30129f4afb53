/* SPDX-License-Identifier: GPL-2.0-or-later */
/* sdboot (simulator): the stock SD bootloaders of BTT's STM32 boards and of the LPC176x SKR
 * 1.x boards, run by the board model on every reset and power-on (sim.c boot()).
 *
 * What the real ones do (closed source for BTT; protocols.md §1.2): mount the card's FAT
 * volume, and when the root directory holds firmware.bin, program it at the application
 * start, remove an old firmware.cur, rename firmware.bin to FIRMWARE.CUR and start the
 * application. The LPC176x loader behaves like Smoothieware's LPC17xx-DFU-Bootloader
 * (triffid): main.c check_sd_firmware() opens "/firmware.bin", writes it in 512-byte chunks
 * from USER_FLASH_START, f_unlink("/firmware.cur"), f_rename(bin -> cur), NVIC_SystemReset().
 *
 * The FAT reader here is the simulator's own (it shares nothing with daemon/proto/fat.c),
 * written after FatFs (ff.c: check_fs, find_volume, dir_find), which these loaders embed, so
 * the daemon's writer can be wrong against it. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct flash;
struct sim_board;
struct sim_sdcard;

enum sdboot_outcome {
	SDBOOT_NO_CARD,	   /* the slot is empty */
	SDBOOT_UNREADABLE, /* the card does not initialise (fault; SDIO loader and SPI latch) */
	SDBOOT_NO_FS,	   /* no FAT volume FatFs would mount: exFAT, unformatted, damaged */
	SDBOOT_NO_FILE,	   /* mounted, no firmware.bin */
	SDBOOT_FLASHED,	   /* firmware.bin programmed (renamed unless the rename failed) */
	SDBOOT_POWER_CUT,  /* power was lost while programming: the application is torn */
};

struct sdboot_env {
	struct sim_sdcard *card; /* NULL: no card */
	bool card_unreadable;	 /* the loader cannot initialise the card this boot */
	struct flash *flash;
	uint32_t app_start;
	bool rename_fails; /* f_rename fails ("Rename fail"): firmware.bin stays */
	uint32_t cut_at;   /* power is lost before programming this address; 0: never */
};

struct sdboot_result {
	enum sdboot_outcome outcome;
	uint32_t len;	  /* bytes programmed */
	uint32_t busy_us; /* erase + program time (scaled by the flash's speed) */
	bool renamed;	  /* firmware.bin became FIRMWARE.CUR */
	uint32_t slot;	  /* root directory slot of the 8.3 entry that was flashed */
};

/* One run of the loader's SD check. Returns 0, or -errno when the card's image cannot be
 * read or written (the outcome is then SDBOOT_UNREADABLE). */
int sdboot_run(const struct sdboot_env *env, struct sdboot_result *ret);

const char *sdboot_outcome_name(enum sdboot_outcome o);

/* The board model's hook (sim.c boot(), with sim->lock held): runs the stock loader when
 * the board has one with an SD path. Returns true when the boot is taken over (the loader
 * is busy programming and the application starts later, or the power was cut). */
bool sim_sdboot_boot(struct sim_board *b);
