/* SPDX-License-Identifier: GPL-2.0-or-later */
/* catalog: the built-in board and MCU tables (see catalog.h).
 *
 * The facts come from the board vendors' documentation, Klipper's and Katapult's Kconfig
 * and CMSIS headers and the ST reference manuals; every board skrflash knows lives in the
 * two tables below, so adding a board is one entry here and nothing elsewhere. */
#include "catalog.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "util.h"

#define KiB(n) ((uint32_t)(n)*1024u)
#define MiB(n) ((uint32_t)(n)*1024u * 1024u)

#define STM32_FLASH 0x08000000u

/* Sector runs shared by several STM32F4 parts (RM0090 §3.3, RM0390 §3.3, RM0368 §3.3). */
#define F4_1M_SECTORS                                                                              \
	{                                                                                          \
		{4, KiB(16)}, {1, KiB(64)},                                                        \
		{                                                                                  \
			7, KiB(128)                                                                \
		}                                                                                  \
	}
#define F4_512K_SECTORS                                                                            \
	{                                                                                          \
		{4, KiB(16)}, {1, KiB(64)},                                                        \
		{                                                                                  \
			3, KiB(128)                                                                \
		}                                                                                  \
	}
#define F4_256K_SECTORS                                                                            \
	{                                                                                          \
		{4, KiB(16)}, {1, KiB(64)},                                                        \
		{                                                                                  \
			1, KiB(128)                                                                \
		}                                                                                  \
	}

/* STM32F407/F429 ROM DfuSe layout of the 1 MiB parts (single bank, AN2606). */
#define F4_1M_DFU "@Internal Flash  /0x08000000/04*016Kg,01*064Kg,07*128Kg"

/*
 * The "Bootloader offset" choices of Klipper's menuconfig, per MCU: the `choice` in
 * src/stm32/Kconfig ("bool \"32KiB bootloader\" if MACH_STM32F1 || ..."), src/lpc176x/Kconfig
 * and src/rp2040/Kconfig, read from a stored copy of v0.13-era sources (KalicoCrew/kalico
 * 00a9b44, whose Kconfig follows mainline). Only these names are ever offered in messages.
 *   F103:      2, 4, 8, 16, 20, 28, 32, 34, 36, 64 KiB (MACH_STM32F1 / MACH_STM32F103 choices)
 *   F401:      16, 32, 48, 64 KiB
 *   F407/F429: 16, 32, 48, 64 KiB and "128KiB bootloader with 512 byte offset" (MACH_STM32F4x5)
 *   F446:      32, 64 KiB (no 16 or 48: those are F4x5/F401-only)
 *   G0B0/G0B1: 8 KiB
 *   H723/H743: 128 KiB
 *   LPC176x:   16 KiB
 *   RP2040:    "No bootloader" is 0x10000100 (boot2 first), and 16 KiB
 * and "No bootloader" (offset 0) everywhere else.
 */
#define NO_BL                                                                                      \
	{                                                                                          \
		0, "No bootloader"                                                                 \
	}
#define OFF(o, kib)                                                                                \
	{                                                                                          \
		o, #kib "KiB bootloader"                                                           \
	}
#define OFF_END                                                                                    \
	{                                                                                          \
		0, NULL                                                                            \
	}
static const struct catalog_offset offsets_f103[] = {
    NO_BL,	     OFF(0x800, 2),   OFF(0x1000, 4),	OFF(0x2000, 8),
    OFF(0x4000, 16), OFF(0x5000, 20), OFF(0x7000, 28),	OFF(0x8000, 32),
    OFF(0x8800, 34), OFF(0x9000, 36), OFF(0x10000, 64), OFF_END,
};
static const struct catalog_offset offsets_f401[] = {
    NO_BL, OFF(0x4000, 16), OFF(0x8000, 32), OFF(0xC000, 48), OFF(0x10000, 64), OFF_END,
};
static const struct catalog_offset offsets_f4x5[] = {
    NO_BL,	     OFF(0x4000, 16),  OFF(0x8000, 32),
    OFF(0xC000, 48), OFF(0x10000, 64), {0x20200, "128KiB bootloader with 512 byte offset"},
    OFF_END,
};
static const struct catalog_offset offsets_f446[] = {
    NO_BL,
    OFF(0x8000, 32),
    OFF(0x10000, 64),
    OFF_END,
};
static const struct catalog_offset offsets_g0[] = {NO_BL, OFF(0x2000, 8), OFF_END};
static const struct catalog_offset offsets_h7[] = {NO_BL, OFF(0x20000, 128), OFF_END};
static const struct catalog_offset offsets_lpc[] = {NO_BL, OFF(0x4000, 16), OFF_END};
static const struct catalog_offset offsets_rp2040[] = {
    {0x100, "No bootloader"}, OFF(0x4000, 16), OFF_END};

/*
 * Klipper reports "stm32f103xe" for every F103 whatever its real size, so the RC (256 KiB)
 * and RE (512 KiB) geometries are two entries with the same name; likewise the H723 VG
 * (1 MiB) and ZE (512 KiB). catalog_mcu_find() on such a name returns the first entry, which
 * is fine for what callers use it for (family, RAM ranges, write block); boards always point
 * at the exact geometry.
 */
enum {
	MCU_LPC1768,
	MCU_LPC1769,
	MCU_F103RC,
	MCU_F103RE,
	MCU_F401RC,
	MCU_F407,
	MCU_F429,
	MCU_F446,
	MCU_G0B1,
	MCU_G0B0,
	MCU_H743,
	MCU_H723VG,
	MCU_H723ZE,
	MCU_RP2040,
	_MCU_MAX,
};

static const struct catalog_mcu
    mcus[_MCU_MAX] =
	{
	    /* UM10360 §32.5: 16 x 4 KiB then 14 x 32 KiB; IAP writes 256-byte pages. */
	    [MCU_LPC1768] =
		{
		    .name = "lpc1768",
		    .chip = "LPC1768FBD100",
		    .family = CATALOG_FAMILY_LPC176X,
		    .flash_base = 0,
		    .flash_size = KiB(512),
		    .sectors = {{16, KiB(4)}, {14, KiB(32)}},
		    .ram = {{0x10000000u, KiB(32)}, {0x2007C000u, KiB(32)}},
		    .write_block = 256,
		    .offsets = offsets_lpc,
		},
	    [MCU_LPC1769] =
		{
		    .name = "lpc1769",
		    .chip = "LPC1769FBD100",
		    .family = CATALOG_FAMILY_LPC176X,
		    .flash_base = 0,
		    .flash_size = KiB(512),
		    .sectors = {{16, KiB(4)}, {14, KiB(32)}},
		    .ram = {{0x10000000u, KiB(32)}, {0x2007C000u, KiB(32)}},
		    .write_block = 256,
		    .offsets = offsets_lpc,
		},
	    /* RM0008 §3.3.3: high-density pages are 2 KiB, programmed by half-words. */
	    [MCU_F103RC] =
		{
		    .name = "stm32f103xe",
		    .chip = "STM32F103RCT6",
		    .family = CATALOG_FAMILY_STM32F1,
		    .flash_base = STM32_FLASH,
		    .flash_size = KiB(256),
		    .sectors = {{128, KiB(2)}},
		    .ram = {{0x20000000u, KiB(48)}},
		    .write_block = 2,
		    .offsets = offsets_f103,
		},
	    [MCU_F103RE] =
		{
		    .name = "stm32f103xe",
		    .chip = "STM32F103RET6",
		    .family = CATALOG_FAMILY_STM32F1,
		    .flash_base = STM32_FLASH,
		    .flash_size = KiB(512),
		    .sectors = {{256, KiB(2)}},
		    .ram = {{0x20000000u, KiB(64)}},
		    .write_block = 2,
		    .offsets = offsets_f103,
		},
	    [MCU_F401RC] =
		{
		    .name = "stm32f401xc",
		    .chip = "STM32F401RCT6",
		    .family = CATALOG_FAMILY_STM32F4,
		    .flash_base = STM32_FLASH,
		    .flash_size = KiB(256),
		    .sectors = F4_256K_SECTORS,
		    .ram = {{0x20000000u, KiB(64)}},
		    .write_block = 4,
		    .offsets = offsets_f401,
		    .dfu_layout = "@Internal Flash  /0x08000000/04*016Kg,01*064Kg,01*128Kg",
		},
	    [MCU_F407] =
		{
		    .name = "stm32f407xx",
		    .chip = "STM32F407xGT6",
		    .family = CATALOG_FAMILY_STM32F4,
		    .flash_base = STM32_FLASH,
		    .flash_size = MiB(1),
		    .sectors = F4_1M_SECTORS,
		    .ram = {{0x20000000u, KiB(128)}, {0x10000000u, KiB(64)}},
		    .write_block = 4,
		    .offsets = offsets_f4x5,
		    .dfu_layout = F4_1M_DFU,
		},
	    [MCU_F429] =
		{
		    .name = "stm32f429xx",
		    .chip = "STM32F429xGT6",
		    .family = CATALOG_FAMILY_STM32F4,
		    .flash_base = STM32_FLASH,
		    .flash_size = MiB(1),
		    .sectors = F4_1M_SECTORS,
		    .ram = {{0x20000000u, KiB(192)}, {0x10000000u, KiB(64)}},
		    .write_block = 4,
		    .offsets = offsets_f4x5,
		    .dfu_layout = F4_1M_DFU,
		},
	    [MCU_F446] =
		{
		    .name = "stm32f446xx",
		    .chip = "STM32F446ZET6",
		    .family = CATALOG_FAMILY_STM32F4,
		    .flash_base = STM32_FLASH,
		    .flash_size = KiB(512),
		    .sectors = F4_512K_SECTORS,
		    .ram = {{0x20000000u, KiB(128)}},
		    .write_block = 4,
		    .offsets = offsets_f446,
		    .dfu_layout = "@Internal Flash  /0x08000000/04*016Kg,01*064Kg,03*128Kg",
		},
	    /* RM0444 §3.3: 2 KiB pages, programmed by 64-bit double words. */
	    [MCU_G0B1] =
		{
		    .name = "stm32g0b1xx",
		    .chip = "STM32G0B1xET6",
		    .family = CATALOG_FAMILY_STM32G0,
		    .flash_base = STM32_FLASH,
		    .flash_size = KiB(512),
		    .sectors = {{256, KiB(2)}},
		    .ram = {{0x20000000u, KiB(144)}},
		    .write_block = 8,
		    .offsets = offsets_g0,
		    .dfu_layout = "@Internal Flash   /0x08000000/256*02Kg",
		},
	    [MCU_G0B0] =
		{
		    .name = "stm32g0b0xx",
		    .chip = "STM32G0B0RET6",
		    .family = CATALOG_FAMILY_STM32G0,
		    .flash_base = STM32_FLASH,
		    .flash_size = KiB(512),
		    .sectors = {{256, KiB(2)}},
		    .ram = {{0x20000000u, KiB(144)}},
		    .write_block = 8,
		    .offsets = offsets_g0,
		    .dfu_layout = "@Internal Flash   /0x08000000/256*02Kg",
		},
	    /* RM0433 §4.3: two banks of 8 x 128 KiB, programmed by 256-bit flash words. */
	    [MCU_H743] =
		{
		    .name = "stm32h743xx",
		    .chip = "STM32H743VIT6",
		    .family = CATALOG_FAMILY_STM32H7,
		    .flash_base = STM32_FLASH,
		    .flash_size = MiB(2),
		    .sectors = {{16, KiB(128)}},
		    .ram =
			{
			    {0x20000000u, KiB(128)}, /* DTCM */
			    {0x24000000u, KiB(512)}, /* AXI SRAM */
			    {0x30000000u, KiB(288)}, /* SRAM1-3 */
			    {0x38000000u, KiB(64)},  /* SRAM4 */
			},
		    .write_block = 32,
		    .offsets = offsets_h7,
		    .dfu_layout = "@Internal Flash   /0x08000000/16*128Kg",
		},
	    /* RM0468 §4.3: one bank of 128 KiB sectors. */
	    [MCU_H723VG] =
		{
		    .name = "stm32h723xx",
		    .chip = "STM32H723VGT6",
		    .family = CATALOG_FAMILY_STM32H7,
		    .flash_base = STM32_FLASH,
		    .flash_size = MiB(1),
		    .sectors = {{8, KiB(128)}},
		    .ram =
			{
			    {0x20000000u, KiB(128)}, /* DTCM */
			    {0x24000000u, KiB(320)}, /* AXI SRAM incl. the ITCM-shared part */
			    {0x30000000u, KiB(32)},  /* SRAM1/2 */
			    {0x38000000u, KiB(16)},  /* SRAM4 */
			},
		    .write_block = 32,
		    .offsets = offsets_h7,
		    .dfu_layout = "@Internal Flash   /0x08000000/8*128Kg",
		},
	    [MCU_H723ZE] =
		{
		    .name = "stm32h723xx",
		    .chip = "STM32H723ZET6",
		    .family = CATALOG_FAMILY_STM32H7,
		    .flash_base = STM32_FLASH,
		    .flash_size = KiB(512),
		    .sectors = {{4, KiB(128)}},
		    .ram =
			{
			    {0x20000000u, KiB(128)},
			    {0x24000000u, KiB(320)},
			    {0x30000000u, KiB(32)},
			    {0x38000000u, KiB(16)},
			},
		    .write_block = 32,
		    .offsets = offsets_h7,
		    .dfu_layout = "@Internal Flash   /0x08000000/4*128Kg",
		},
	    /* External QSPI flash behind XIP: 4 KiB erase sectors, 256-byte program pages. */
	    [MCU_RP2040] =
		{
		    .name = "rp2040",
		    .chip = "RP2040",
		    .family = CATALOG_FAMILY_RP2040,
		    .flash_base = 0x10000000u,
		    .flash_size = MiB(2),
		    .sectors = {{512, KiB(4)}},
		    .ram = {{0x20000000u, KiB(264)}},
		    .write_block = 256,
		    .offsets = offsets_rp2040,
		},
};

#define P_KAT CATALOG_PATH_KATAPULT
#define P_SOFT CATALOG_PATH_ROM_DFU_SOFT
#define P_BUTTON CATALOG_PATH_ROM_DFU_BUTTON
#define P_SD CATALOG_PATH_SD

#define NOTE_SD_ONLY "SD-only stock bootloader: install Katapult for USB flashing"
#define NOTE_LPC "stock DFU entry is unreliable: SD card is the primary path"
#define NOTE_F103 "no USB ROM DFU on the F103: SD card, or Katapult for USB flashing"
#define NOTE_SDIO "SD path needs a power cycle (SDIO card); ROM DFU keeps the SD bootloader"

static const struct catalog_board boards[] = {
    {"skr-1.3", "BTT SKR V1.3 (LPC1768)", &mcus[MCU_LPC1768], 0x4000, CATALOG_BOOTLOADER_LPC_SD,
     P_KAT | P_SD | CATALOG_PATH_LPC_DFU, NOTE_LPC},
    {"skr-1.4", "BTT SKR V1.4 (LPC1768)", &mcus[MCU_LPC1768], 0x4000, CATALOG_BOOTLOADER_LPC_SD,
     P_KAT | P_SD | CATALOG_PATH_LPC_DFU, NOTE_LPC},
    {"skr-1.4-turbo", "BTT SKR V1.4 Turbo (LPC1769)", &mcus[MCU_LPC1769], 0x4000,
     CATALOG_BOOTLOADER_LPC_SD, P_KAT | P_SD | CATALOG_PATH_LPC_DFU, NOTE_LPC},
    {"skr-pro", "BTT SKR Pro V1.1/V1.2 (STM32F407)", &mcus[MCU_F407], 0x08008000u,
     CATALOG_BOOTLOADER_BTT_SD, P_KAT | P_SD, NOTE_SD_ONLY},
    {"skr-2-f407", "BTT SKR 2 rev A (STM32F407)", &mcus[MCU_F407], 0x08008000u,
     CATALOG_BOOTLOADER_BTT_SD, P_KAT | P_SD, NOTE_SD_ONLY},
    {"skr-2-f429", "BTT SKR 2 rev B (STM32F429)", &mcus[MCU_F429], 0x08008000u,
     CATALOG_BOOTLOADER_BTT_SD, P_KAT | P_SD, NOTE_SD_ONLY},
    {"skr-3-h743", "BTT SKR 3 / SKR 3 EZ (STM32H743)", &mcus[MCU_H743], 0x08020000u,
     CATALOG_BOOTLOADER_BTT_SD, P_KAT | P_SOFT | P_BUTTON | P_SD, NOTE_SDIO},
    {"skr-3-h723", "BTT SKR 3 / SKR 3 EZ (STM32H723)", &mcus[MCU_H723VG], 0x08020000u,
     CATALOG_BOOTLOADER_BTT_SD, P_KAT | P_SOFT | P_BUTTON | P_SD, NOTE_SDIO},
    {"skr-mini-e3-v1.2", "BTT SKR Mini E3 V1.2 (STM32F103RC)", &mcus[MCU_F103RC], 0x08007000u,
     CATALOG_BOOTLOADER_BTT_SD, P_KAT | P_SD, NOTE_F103},
    {"skr-mini-e3-v2-f103rc", "BTT SKR Mini E3 V2.0 (STM32F103RC)", &mcus[MCU_F103RC], 0x08007000u,
     CATALOG_BOOTLOADER_BTT_SD, P_KAT | P_SD, NOTE_F103},
    {"skr-mini-e3-v2-f103re", "BTT SKR Mini E3 V2.0 (STM32F103RE)", &mcus[MCU_F103RE], 0x08007000u,
     CATALOG_BOOTLOADER_BTT_SD, P_KAT | P_SD, NOTE_F103},
    {"skr-mini-e3-v3", "BTT SKR Mini E3 V3.0 (STM32G0B1)", &mcus[MCU_G0B1], 0x08002000u,
     CATALOG_BOOTLOADER_BTT_SD, P_KAT | P_SOFT | P_SD,
     "ROM DFU needs Klipper running: the first flash must be by SD card"},
    {"skr-mini-e3-v3-g0b0", "BTT SKR Mini E3 V3.0 (STM32G0B0)", &mcus[MCU_G0B0], 0x08002000u,
     CATALOG_BOOTLOADER_BTT_SD, P_KAT | P_SOFT | P_SD,
     "ROM DFU needs Klipper running: the first flash must be by SD card"},
    {"skr-mini-e3-v3.0.1", "BTT SKR Mini E3 V3.0.1 (STM32F401)", &mcus[MCU_F401RC], 0x08004000u,
     CATALOG_BOOTLOADER_BTT_SD, P_KAT | P_SD,
     "16KiB offset: Klipper's DFU request only reboots; use SD card or Katapult"},
    {"skr-pico", "BTT SKR Pico V1.0 (RP2040)", &mcus[MCU_RP2040], 0x10000100u,
     CATALOG_BOOTLOADER_ROM_ONLY, P_KAT | CATALOG_PATH_BOOTSEL,
     "no vendor bootloader: BOOTSEL by 1200-baud touch or Boot jumper + Reset"},
    {"octopus-f446", "BTT Octopus V1.0/V1.1 (STM32F446)", &mcus[MCU_F446], 0x08008000u,
     CATALOG_BOOTLOADER_BTT_SD, P_KAT | P_SOFT | P_BUTTON | P_SD, NOTE_SDIO},
    {"octopus-f429", "BTT Octopus V1.0/V1.1 (STM32F429)", &mcus[MCU_F429], 0x08008000u,
     CATALOG_BOOTLOADER_BTT_SD, P_KAT | P_SOFT | P_BUTTON | P_SD, NOTE_SDIO},
    {"octopus-f407", "BTT Octopus V1.0/V1.1 (STM32F407)", &mcus[MCU_F407], 0x08008000u,
     CATALOG_BOOTLOADER_BTT_SD, P_KAT | P_SOFT | P_BUTTON | P_SD, NOTE_SDIO},
    {"octopus-pro-f446", "BTT Octopus Pro V1.0 (STM32F446)", &mcus[MCU_F446], 0x08008000u,
     CATALOG_BOOTLOADER_BTT_SD, P_KAT | P_SOFT | P_BUTTON | P_SD, NOTE_SDIO},
    {"octopus-pro-f429", "BTT Octopus Pro V1.0 (STM32F429)", &mcus[MCU_F429], 0x08008000u,
     CATALOG_BOOTLOADER_BTT_SD, P_KAT | P_SOFT | P_BUTTON | P_SD, NOTE_SDIO},
    {"octopus-pro-h723", "BTT Octopus Pro V1.0.1/V1.1 (STM32H723ZE)", &mcus[MCU_H723ZE],
     0x08020000u, CATALOG_BOOTLOADER_BTT_SD, P_KAT | P_SOFT | P_BUTTON | P_SD, NOTE_SDIO},
    {"manta-m8p", "BTT Manta M8P V1.0/V1.1 (STM32G0B1)", &mcus[MCU_G0B1], 0x08002000u,
     CATALOG_BOOTLOADER_BTT_SD, P_KAT | P_SOFT | P_BUTTON | P_SD, NULL},
};

/* scripts/spi_flash/board_defs.py (BOARD_DEFS + BOARD_ALIASES), by catalog board name.
 * Software SPI pins are given MISO, MOSI, SCLK like "spi_pins". The SDIO-wired boards use
 * software SPI on the SDIO lines (DATA0 = MISO, CMD = MOSI, CLK = SCLK, DATA3 = CS,
 * docs/SDCard_Updates.md). "btt-skr-mini-e3-v3-b0" (G0B0) is in newer board_defs. */
static const struct catalog_sd_bus sd_lpc1768 = {"generic-lpc1768", "ssp1", {NULL}, "P0.6", false};
static const struct catalog_sd_bus sd_lpc1769 = {"generic-lpc1769", "ssp1", {NULL}, "P0.6", false};
static const struct catalog_sd_bus sd_mini = {"btt-skr-mini", "spi1", {NULL}, "PA4", false};
static const struct catalog_sd_bus sd_mini_v3 = {"btt-skr-mini-v3", "spi1", {NULL}, "PA4", false};
static const struct catalog_sd_bus sd_mini_v3_b0 = {
    "btt-skr-mini-v3-b0", "spi1", {NULL}, "PA4", false};
static const struct catalog_sd_bus sd_skr_pro = {
    "btt-skr-pro", NULL, {"PA6", "PB5", "PA5"}, "PA4", false};
static const struct catalog_sd_bus sd_oct_f407 = {
    "btt-octopus-f407-v1", NULL, {"PC8", "PD2", "PC12"}, "PC11", true};
static const struct catalog_sd_bus sd_oct_f429 = {
    "btt-octopus-f429-v1", NULL, {"PC8", "PD2", "PC12"}, "PC11", true};
static const struct catalog_sd_bus sd_oct_f446 = {
    "btt-octopus-f446-v1", NULL, {"PC8", "PD2", "PC12"}, "PC11", true};
static const struct catalog_sd_bus sd_skr3_h743 = {
    "btt-skr-3-h743", NULL, {"PC8", "PD2", "PC12"}, "PC11", true};
static const struct catalog_sd_bus sd_skr3_h723 = {
    "btt-skr-3-h723", NULL, {"PC8", "PD2", "PC12"}, "PC11", true};

static const struct {
	const char *board;
	const struct catalog_sd_bus *bus;
} sd_buses[] = {
    {"skr-1.3", &sd_lpc1768},		     /* btt-skr-v1.3 */
    {"skr-1.4", &sd_lpc1768},		     /* btt-skr-v1.4 */
    {"skr-1.4-turbo", &sd_lpc1769},	     /* btt-skr-turbo-v1.4 */
    {"skr-pro", &sd_skr_pro},		     /* btt-skr-pro-v1.1/-v1.2 */
    {"skr-2-f407", &sd_oct_f407},	     /* btt-skr-2-f407 */
    {"skr-2-f429", &sd_oct_f429},	     /* btt-skr-2-f429 */
    {"skr-3-h743", &sd_skr3_h743},	     /* btt-skr-3-h743 */
    {"skr-3-h723", &sd_skr3_h723},	     /* btt-skr-3-h723 */
    {"skr-mini-e3-v1.2", &sd_mini},	     /* btt-skr-mini-e3-v1.2 */
    {"skr-mini-e3-v2-f103rc", &sd_mini},     /* btt-skr-mini-e3-v2 */
    {"skr-mini-e3-v2-f103re", &sd_mini},     /* btt-skr-mini-e3-v2 */
    {"skr-mini-e3-v3", &sd_mini_v3},	     /* btt-skr-mini-e3-v3 */
    {"skr-mini-e3-v3-g0b0", &sd_mini_v3_b0}, /* btt-skr-mini-e3-v3-b0 */
    {"octopus-f446", &sd_oct_f446},	     /* btt-octopus-f446-v1.0/1.1 */
    {"octopus-f429", &sd_oct_f429},	     /* btt-octopus-f429-v1.0/1.1 */
    {"octopus-f407", &sd_oct_f407},	     /* btt-octopus-f407-v1.0/1.1 */
    {"octopus-pro-f446", &sd_oct_f446},	     /* btt-octopus-pro-f446-v1.0 */
    {"octopus-pro-f429", &sd_oct_f429},	     /* btt-octopus-pro-f429-v1.0 */
    {"octopus-pro-h723", &sd_skr3_h723},     /* btt-octopus-pro-h723-v1.1 */
};

const struct catalog_sd_bus *
catalog_sd_bus(const struct catalog_board *board)
{
	if (!board)
		return NULL;
	for (size_t i = 0; i < ELEMENTSOF(sd_buses); i++)
		if (strcmp(sd_buses[i].board, board->name) == 0)
			return sd_buses[i].bus;
	return NULL;
}

const struct catalog_board *
catalog_boards(size_t *ret_n)
{
	if (ret_n)
		*ret_n = ELEMENTSOF(boards);
	return boards;
}

const struct catalog_board *
catalog_find(const char *name)
{
	if (!name)
		return NULL;
	for (size_t i = 0; i < ELEMENTSOF(boards); i++)
		if (strcmp(boards[i].name, name) == 0)
			return &boards[i];
	return NULL;
}

const struct catalog_mcu *
catalog_mcu_find(const char *name)
{
	if (!name)
		return NULL;
	for (size_t i = 0; i < ELEMENTSOF(mcus); i++)
		if (strcasecmp(mcus[i].name, name) == 0)
			return &mcus[i];
	return NULL;
}

uint32_t
catalog_max_flash_size(void)
{
	uint32_t max = 0;

	for (size_t i = 0; i < ELEMENTSOF(mcus); i++)
		if (mcus[i].flash_size > max)
			max = mcus[i].flash_size;
	return max;
}

size_t
catalog_mcu_offsets(const struct catalog_mcu *mcu, const struct catalog_offset **ret)
{
	size_t n = 0;

	if (ret)
		*ret = mcu ? mcu->offsets : NULL;
	if (!mcu || !mcu->offsets)
		return 0;
	while (n < CATALOG_MAX_OFFSETS && mcu->offsets[n].menuconfig)
		n++;
	return n;
}

const char *
catalog_offset_name(const struct catalog_mcu *mcu, uint32_t offset)
{
	const struct catalog_offset *o;
	size_t n = catalog_mcu_offsets(mcu, &o);

	for (size_t i = 0; i < n; i++)
		if (o[i].offset == offset)
			return o[i].menuconfig;
	return NULL;
}

int
catalog_mcu_sector(const struct catalog_mcu *mcu, uint32_t addr, uint32_t *ret_start,
		   uint32_t *ret_size)
{
	uint64_t start;

	if (!mcu || addr < mcu->flash_base)
		return -ERANGE;
	start = mcu->flash_base;
	for (size_t i = 0; i < CATALOG_MAX_SECTOR_RUNS && mcu->sectors[i].count; i++) {
		const struct catalog_sector_run *run = &mcu->sectors[i];
		uint64_t end = start + (uint64_t)run->count * run->size;

		if (addr < end) {
			uint64_t idx = (addr - start) / run->size;

			if (ret_start)
				*ret_start = (uint32_t)(start + idx * run->size);
			if (ret_size)
				*ret_size = run->size;
			return 0;
		}
		start = end;
	}
	return -ERANGE;
}

const char *
catalog_family_to_string(enum catalog_family family)
{
	static const char *const names[_CATALOG_FAMILY_MAX] = {
	    [CATALOG_FAMILY_LPC176X] = "lpc176x", [CATALOG_FAMILY_STM32F1] = "stm32f1",
	    [CATALOG_FAMILY_STM32F4] = "stm32f4", [CATALOG_FAMILY_STM32G0] = "stm32g0",
	    [CATALOG_FAMILY_STM32H7] = "stm32h7", [CATALOG_FAMILY_RP2040] = "rp2040",
	};

	if ((unsigned)family >= _CATALOG_FAMILY_MAX)
		return "unknown";
	return names[family];
}

const char *
catalog_bootloader_to_string(enum catalog_bootloader bl)
{
	static const char *const names[_CATALOG_BOOTLOADER_MAX] = {
	    [CATALOG_BOOTLOADER_BTT_SD] = "btt-sd",
	    [CATALOG_BOOTLOADER_LPC_SD] = "lpc-sd",
	    [CATALOG_BOOTLOADER_ROM_ONLY] = "rom-only",
	};

	if ((unsigned)bl >= _CATALOG_BOOTLOADER_MAX)
		return "unknown";
	return names[bl];
}

void
catalog_format_offset(uint32_t offset, char *buf, size_t len)
{
	if (!buf || !len)
		return;
	if (offset == 0)
		snprintf(buf, len, "no bootloader");
	else if (offset % 1024 == 0)
		snprintf(buf, len, "%" PRIu32 "KiB", offset / 1024);
	else
		snprintf(buf, len, "%" PRIu32 "B", offset);
}
