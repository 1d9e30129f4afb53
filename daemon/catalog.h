/* SPDX-License-Identifier: GPL-2.0-or-later */
/* catalog: the built-in table of SKR-family boards and their MCUs.
 *
 * Pure data, no I/O. Everything skrflash knows about a board without a config file comes
 * from here: which MCU it carries, where its stock bootloader starts the application, how
 * its flash is divided, and which entry and flash paths work on it. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum catalog_family {
	CATALOG_FAMILY_LPC176X,
	CATALOG_FAMILY_STM32F1,
	CATALOG_FAMILY_STM32F4,
	CATALOG_FAMILY_STM32G0,
	CATALOG_FAMILY_STM32H7,
	CATALOG_FAMILY_RP2040,
	_CATALOG_FAMILY_MAX,
};

/* What sits at the start of flash when the board leaves the factory. */
enum catalog_bootloader {
	CATALOG_BOOTLOADER_BTT_SD, /* BTT STM32 SD bootloader: firmware.bin -> FIRMWARE.CUR */
	CATALOG_BOOTLOADER_LPC_SD, /* smoothie-style LPC176x SD bootloader (+ opportunistic DFU) */
	CATALOG_BOOTLOADER_ROM_ONLY, /* no vendor bootloader (RP2040 BOOTSEL in mask ROM) */
	_CATALOG_BOOTLOADER_MAX,
};

/* Ways into and through a bootloader that work on a board (bit mask). */
enum {
	CATALOG_PATH_KATAPULT = 1u << 0, /* Katapult over USB CDC, once installed */
	CATALOG_PATH_ROM_DFU_SOFT =
	    1u << 1, /* 1200-baud touch -> STM32 ROM DFU (Klipper dfu_reboot) */
	CATALOG_PATH_ROM_DFU_BUTTON = 1u << 2, /* ROM DFU by BOOT button/jumper */
	CATALOG_PATH_SD = 1u << 3,	       /* firmware.bin on the SD card */
	CATALOG_PATH_LPC_DFU = 1u << 4,	       /* smoothie DFU 1d50:6015 (opportunistic) */
	CATALOG_PATH_BOOTSEL = 1u << 5,	       /* RP2040 BOOTSEL (UF2 / PICOBOOT) */
};

/* [base, base + size) */
struct catalog_range {
	uint32_t base;
	uint32_t size;
};

/* `count` erase units of `size` bytes each; runs follow each other from flash_base. */
struct catalog_sector_run {
	uint32_t count;
	uint32_t size;
};

#define CATALOG_MAX_RAM 4
#define CATALOG_MAX_SECTOR_RUNS 4
#define CATALOG_MAX_OFFSETS 12

/* One "Bootloader offset" choice of Klipper's `make menuconfig`. */
struct catalog_offset {
	uint32_t offset;	/* FLASH_APPLICATION_ADDRESS - flash_base */
	const char *menuconfig; /* the choice as menuconfig shows it: "32KiB bootloader" */
};

struct catalog_mcu {
	const char *name; /* Klipper CONFIG_MCU string, e.g. "stm32f446xx" */
	const char *chip; /* marking, e.g. "STM32F446ZET6" */
	enum catalog_family family;
	uint32_t flash_base;
	uint32_t flash_size;
	struct catalog_sector_run sectors[CATALOG_MAX_SECTOR_RUNS]; /* zero-terminated */
	struct catalog_range
	    ram[CATALOG_MAX_RAM]; /* valid initial SP: base < SP <= base+size; zero-terminated */
	uint32_t write_block;	  /* smallest programmable unit in bytes (page/flash word) */
	const char *dfu_layout;	  /* ROM DfuSe "@Internal Flash" layout string, NULL if none */
	const struct catalog_offset *offsets; /* menuconfig's choices for this MCU, ascending,
					       * terminated by a NULL menuconfig */
};

struct catalog_board {
	const char *name;  /* lowercase-with-dashes, variant last: "octopus-f446" */
	const char *title; /* human name: "BTT Octopus V1.0/V1.1 (STM32F446)" */
	const struct catalog_mcu *mcu;
	uint32_t app_start; /* absolute address where the stock bootloader starts the app */
	enum catalog_bootloader bootloader;
	unsigned paths;	   /* CATALOG_PATH_* that work on this board */
	const char *notes; /* one line for humans, may be NULL */
};

/* How a board wires its SD card slot, for the SD-card update path through the running
 * Klipper firmware (Klipper scripts/spi_flash/board_defs.py; protocols.md §4.3). */
struct catalog_sd_bus {
	const char *klipper_name; /* the board_defs.py key it comes from */
	const char *spi_bus;	  /* hardware bus ("spi1", "ssp1"); NULL = software SPI */
	const char *sw_pins[3];	  /* software SPI: MISO, MOSI, SCLK */
	const char *cs_pin;
	/* The stock bootloader reads the card over SDIO (board_defs "skip_verify"): after SPI use
	 * the card stays in SPI mode until power-cycled (protocols.md §4.4). */
	bool sdio;
};

/* The SD bus of a board; NULL when Klipper has no definition for it (no host-driven SD
 * path: SKR Pico, Manta M8P, SKR Mini E3 V3.0.1). */
const struct catalog_sd_bus *catalog_sd_bus(const struct catalog_board *board);

/* All boards, in catalog order. Never NULL. */
const struct catalog_board *catalog_boards(size_t *ret_n);
/* Exact name lookup; NULL if unknown. */
const struct catalog_board *catalog_find(const char *name);
/* MCU by Klipper CONFIG_MCU string (case-insensitive); NULL if unknown. */
const struct catalog_mcu *catalog_mcu_find(const char *name);
/* Largest flash size in the catalog: the upper bound for any queued image. */
uint32_t catalog_max_flash_size(void);
/* The "Bootloader offset" choices Klipper's menuconfig offers for this MCU, ascending; returns
 * the count (at most CATALOG_MAX_OFFSETS). */
size_t catalog_mcu_offsets(const struct catalog_mcu *mcu, const struct catalog_offset **ret);
/* menuconfig's name of `offset` for this MCU ("32KiB bootloader"), NULL if it offers none. */
const char *catalog_offset_name(const struct catalog_mcu *mcu, uint32_t offset);
/* Erase unit containing `addr`: sets *ret_start and *ret_size; -ERANGE outside flash. */
int catalog_mcu_sector(const struct catalog_mcu *mcu, uint32_t addr, uint32_t *ret_start,
		       uint32_t *ret_size);
const char *catalog_family_to_string(enum catalog_family family);
const char *catalog_bootloader_to_string(enum catalog_bootloader bl);
/* Human form of the app offset, e.g. "32KiB" for app_start - flash_base = 0x8000. */
void catalog_format_offset(uint32_t offset, char *buf, size_t len);
