/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Invariants of the board catalog: geometry adds up, app starts are sane, names are clean. */
#include <ctype.h>
#include <errno.h>
#include <string.h>

#include "catalog.h"
#include "harness.h"

static uint32_t
sector_total(const struct catalog_mcu *m)
{
	uint32_t sum = 0;

	for (size_t i = 0; i < CATALOG_MAX_SECTOR_RUNS && m->sectors[i].count; i++)
		sum += m->sectors[i].count * m->sectors[i].size;
	return sum;
}

static void
test_boards(void)
{
	size_t n;
	const struct catalog_board *b = catalog_boards(&n);

	CHECK_EQ_INT(n, 22);
	for (size_t i = 0; i < n; i++) {
		const struct catalog_mcu *m = b[i].mcu;
		uint32_t start, size;
		const char *s;

		CHECK(m != NULL);
		CHECK(b[i].title && *b[i].title);
		/* lowercase, digits, dashes and version dots; no leading/trailing dash */
		for (s = b[i].name; *s; s++)
			CHECK(islower((unsigned char)*s) || isdigit((unsigned char)*s) ||
			      *s == '-' || *s == '.');
		CHECK(b[i].name[0] != '-' && s[-1] != '-');
		for (size_t j = 0; j < i; j++)
			CHECK(strcmp(b[i].name, b[j].name) != 0);
		CHECK(catalog_find(b[i].name) == &b[i]);
		CHECK(b[i].paths & CATALOG_PATH_KATAPULT);
		/* app start inside flash, on an erase boundary (the RP2040 no-bootloader image
		 * is written whole from the flash base: its vector table follows the 256-byte
		 * boot2, on a program-page boundary) */
		CHECK(b[i].app_start > m->flash_base);
		CHECK(b[i].app_start < m->flash_base + m->flash_size);
		CHECK_EQ_INT(catalog_mcu_sector(m, b[i].app_start, &start, &size), 0);
		if (b[i].bootloader == CATALOG_BOOTLOADER_ROM_ONLY)
			CHECK_EQ_INT(b[i].app_start % m->write_block, 0);
		else
			CHECK_EQ_INT(start, b[i].app_start);
		if (b[i].paths & (CATALOG_PATH_ROM_DFU_SOFT | CATALOG_PATH_ROM_DFU_BUTTON))
			CHECK(m->dfu_layout != NULL);
	}
	CHECK(catalog_find("octopus") == NULL);
	CHECK(catalog_find(NULL) == NULL);
	CHECK(catalog_find("octopus-f446")->app_start == 0x08008000u);
	CHECK(catalog_find("octopus-pro-h723")->mcu->flash_size == 512 * 1024);
	CHECK(catalog_find("skr-3-h723")->mcu->flash_size == 1024 * 1024);
	CHECK_EQ_INT(catalog_find("skr-mini-e3-v1.2")->app_start, 0x08007000);
	CHECK_EQ_INT(catalog_find("skr-1.4-turbo")->app_start, 0x4000);
	/* SD-only stock bootloaders: no ROM DFU path */
	CHECK(!(catalog_find("skr-pro")->paths & CATALOG_PATH_ROM_DFU_SOFT));
	CHECK(!(catalog_find("skr-2-f429")->paths & CATALOG_PATH_ROM_DFU_SOFT));
	CHECK(!(catalog_find("skr-mini-e3-v3.0.1")->paths & CATALOG_PATH_ROM_DFU_SOFT));
	CHECK(catalog_find("skr-mini-e3-v3")->paths & CATALOG_PATH_ROM_DFU_SOFT);
	CHECK(catalog_find("skr-pico")->paths & CATALOG_PATH_BOOTSEL);
	CHECK(catalog_find("skr-1.3")->paths & CATALOG_PATH_LPC_DFU);
}

static void
test_mcus(void)
{
	size_t n;
	const struct catalog_board *b = catalog_boards(&n);
	uint32_t max = 0;

	for (size_t i = 0; i < n; i++) {
		const struct catalog_mcu *m = b[i].mcu;

		CHECK_EQ_INT(sector_total(m), m->flash_size);
		CHECK(m->ram[0].size > 0);
		for (size_t r = 0; r < CATALOG_MAX_RAM && m->ram[r].size; r++)
			CHECK((uint64_t)m->ram[r].base + m->ram[r].size <= 0x100000000ull);
		CHECK(m->write_block > 0 && (m->write_block & (m->write_block - 1)) == 0);
		CHECK(catalog_mcu_find(m->name) != NULL);
		CHECK_EQ_INT(catalog_mcu_find(m->name)->family, m->family);
		if (m->dfu_layout)
			CHECK(strncmp(m->dfu_layout, "@Internal Flash", 15) == 0);
		if (m->flash_size > max)
			max = m->flash_size;
	}
	CHECK_EQ_INT(catalog_max_flash_size(), max);
	CHECK_EQ_INT(catalog_max_flash_size(), 2 * 1024 * 1024);
	CHECK(catalog_mcu_find("STM32F446XX") != NULL);
	CHECK(catalog_mcu_find("stm32f103xe") != NULL);
	CHECK(catalog_mcu_find("stm32f072xb") == NULL);
	CHECK(catalog_mcu_find("stm32f103xe") == catalog_find("skr-mini-e3-v1.2")->mcu ||
	      catalog_mcu_find("stm32f103xe") == catalog_find("skr-mini-e3-v2-f103re")->mcu);
	CHECK_STREQ(catalog_find("octopus-f446")->mcu->dfu_layout,
		    "@Internal Flash  /0x08000000/04*016Kg,01*064Kg,03*128Kg");
	CHECK(catalog_find("skr-mini-e3-v2-f103re")->mcu->dfu_layout == NULL);
}

static void
test_sectors(void)
{
	const struct catalog_mcu *f4 = catalog_find("skr-pro")->mcu;
	const struct catalog_mcu *lpc = catalog_find("skr-1.3")->mcu;
	uint32_t start = 0, size = 0;

	CHECK_EQ_INT(catalog_mcu_sector(f4, 0x08000000u, &start, &size), 0);
	CHECK_EQ_INT(start, 0x08000000u);
	CHECK_EQ_INT(size, 16384);
	CHECK_EQ_INT(catalog_mcu_sector(f4, 0x0800C123u, &start, &size), 0);
	CHECK_EQ_INT(start, 0x0800C000u);
	CHECK_EQ_INT(catalog_mcu_sector(f4, 0x08010000u, &start, &size), 0);
	CHECK_EQ_INT(size, 65536);
	CHECK_EQ_INT(catalog_mcu_sector(f4, 0x080FFFFFu, &start, &size), 0);
	CHECK_EQ_INT(start, 0x080E0000u);
	CHECK_EQ_INT(size, 131072);
	CHECK_EQ_INT(catalog_mcu_sector(f4, 0x08100000u, &start, &size), -ERANGE);
	CHECK_EQ_INT(catalog_mcu_sector(f4, 0x07FFFFFFu, &start, &size), -ERANGE);
	CHECK_EQ_INT(catalog_mcu_sector(lpc, 0x10000, &start, &size), 0);
	CHECK_EQ_INT(start, 0x10000);
	CHECK_EQ_INT(size, 32768);
	CHECK_EQ_INT(catalog_mcu_sector(lpc, 0xFFFF, &start, &size), 0);
	CHECK_EQ_INT(start, 0xF000);
	CHECK_EQ_INT(size, 4096);
}

static void
test_strings(void)
{
	const struct catalog_offset *o;
	char buf[32];
	size_t n;

	catalog_format_offset(0x8000, buf, sizeof(buf));
	CHECK_STREQ(buf, "32KiB");
	catalog_format_offset(0, buf, sizeof(buf));
	CHECK_STREQ(buf, "no bootloader");
	catalog_format_offset(0x100, buf, sizeof(buf));
	CHECK_STREQ(buf, "256B");
	catalog_format_offset(0x20000, buf, sizeof(buf));
	CHECK_STREQ(buf, "128KiB");
	CHECK_STREQ(catalog_family_to_string(CATALOG_FAMILY_STM32H7), "stm32h7");
	CHECK_STREQ(catalog_bootloader_to_string(CATALOG_BOOTLOADER_ROM_ONLY), "rom-only");
	/* every MCU's menuconfig choices: ascending, "No bootloader" first */
	{
		size_t nb;
		const struct catalog_board *b = catalog_boards(&nb);

		for (size_t i = 0; i < nb; i++) {
			n = catalog_mcu_offsets(b[i].mcu, &o);
			CHECK(n >= 2 && n <= CATALOG_MAX_OFFSETS);
			CHECK_STREQ(o[0].menuconfig, "No bootloader");
			for (size_t k = 1; k < n; k++)
				CHECK(o[k - 1].offset < o[k].offset);
			/* every board's own offset is one menuconfig offers for its MCU */
			CHECK(catalog_offset_name(b[i].mcu, b[i].app_start - b[i].mcu->flash_base));
		}
	}
	/* Kconfig: F446 offers 32 and 64 KiB only; F407 also 16, 48 and 128+512 B */
	CHECK_STREQ(catalog_offset_name(catalog_find("octopus-f446")->mcu, 0x8000),
		    "32KiB bootloader");
	CHECK(!catalog_offset_name(catalog_find("octopus-f446")->mcu, 0xC000));
	CHECK(!catalog_offset_name(catalog_find("octopus-f446")->mcu, 0x4000));
	CHECK_STREQ(catalog_offset_name(catalog_find("skr-pro")->mcu, 0x20200),
		    "128KiB bootloader with 512 byte offset");
	CHECK_STREQ(catalog_offset_name(catalog_find("skr-mini-e3-v1.2")->mcu, 0x7000),
		    "28KiB bootloader");
	CHECK_STREQ(catalog_offset_name(catalog_find("skr-pico")->mcu, 0x100), "No bootloader");
	CHECK(!catalog_offset_name(catalog_find("skr-mini-e3-v3")->mcu, 0x1000));
	CHECK(!catalog_offset_name(NULL, 0));
}

/* board_defs.py facts (protocols.md §4.3), and the SDIO flag exactly on the boards whose
 * stock bootloader reads the card over SDIO (Octopus, Octopus Pro, SKR 2, SKR 3). */
static void
test_sd_buses(void)
{
	size_t nb;
	const struct catalog_board *b = catalog_boards(&nb);
	const struct catalog_sd_bus *s;

	s = catalog_sd_bus(catalog_find("skr-1.4-turbo"));
	CHECK(s && s->spi_bus && strcmp(s->spi_bus, "ssp1") == 0 && !s->sdio);
	CHECK(s && strcmp(s->cs_pin, "P0.6") == 0);
	s = catalog_sd_bus(catalog_find("skr-pro"));
	CHECK(s && !s->spi_bus && !s->sdio);
	CHECK(s && strcmp(s->sw_pins[0], "PA6") == 0 && strcmp(s->sw_pins[1], "PB5") == 0 &&
	      strcmp(s->sw_pins[2], "PA5") == 0 && strcmp(s->cs_pin, "PA4") == 0);
	s = catalog_sd_bus(catalog_find("skr-mini-e3-v2-f103rc"));
	CHECK(s && strcmp(s->spi_bus, "spi1") == 0 && strcmp(s->cs_pin, "PA4") == 0);
	s = catalog_sd_bus(catalog_find("octopus-pro-h723"));
	CHECK(s && s->sdio && strcmp(s->cs_pin, "PC11") == 0 && strcmp(s->sw_pins[0], "PC8") == 0);
	CHECK(catalog_sd_bus(catalog_find("skr-pico")) == NULL);
	CHECK(catalog_sd_bus(NULL) == NULL);
	for (size_t i = 0; i < nb; i++) {
		bool sdio_board = strncmp(b[i].name, "octopus", 7) == 0 ||
				  strncmp(b[i].name, "skr-2-", 6) == 0 ||
				  strncmp(b[i].name, "skr-3-", 6) == 0;

		s = catalog_sd_bus(&b[i]);
		if (!s)
			continue;
		CHECK(b[i].paths & CATALOG_PATH_SD);
		CHECK(s->cs_pin &&
		      (s->spi_bus || (s->sw_pins[0] && s->sw_pins[1] && s->sw_pins[2])));
		CHECK_EQ_INT(s->sdio, sdio_board);
	}
}

int
main(void)
{
	test_sd_buses();
	test_boards();
	test_mcus();
	test_sectors();
	test_strings();
	TEST_DONE();
}
