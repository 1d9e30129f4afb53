/* SPDX-License-Identifier: GPL-2.0-or-later */
/* test_flash: geometry, NOR rules, timing model, thread safety and boot model of the
 * simulated flash. */
#include <errno.h>
#include <pthread.h>
#include <time.h>
#include <zlib.h>

#include "flash.h"
#include "harness.h"

static const struct catalog_mcu *
mcu(const char *name)
{
	const struct catalog_mcu *m = catalog_mcu_find(name);

	if (!m) {
		fprintf(stderr, "catalog has no MCU '%s'\n", name);
		exit(1);
	}
	return m;
}

static void
put32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
	p[2] = (uint8_t)(v >> 16);
	p[3] = (uint8_t)(v >> 24);
}

/* A Klipper-like vector table linked at `link`: SP, reset, then 60 handlers all pointing
 * into the image (DefaultHandler style), followed by a little code. */
static void
make_image(uint8_t *img, size_t len, uint32_t link, uint32_t sp)
{
	memset(img, 0x00, len);
	put32(img, sp);
	put32(img + 4, link + 0x195);
	for (uint32_t i = 2; i < 76; i++)
		put32(img + 4 * i, link + 0x1a1 + 4 * (i % 5));
	put32(img + 4 * 7, 0); /* reserved slots are 0 in CMSIS tables */
	for (size_t i = 76 * 4; i < len; i++)
		img[i] = (uint8_t)(0x70 + i % 13); /* "code": even-looking words end the table */
}

static void
test_geometry(void)
{
	struct flash *f = flash_new(mcu("stm32f446xx"), 0.0);
	uint32_t idx = 99, start = 0, size = 0;

	CHECK_EQ_INT(f->base, 0x08000000);
	CHECK_EQ_INT(f->size, 512 * 1024);
	CHECK_EQ_INT(f->n_sectors, 8);
	CHECK(flash_is_erased(f, f->base, f->size));
	CHECK_EQ_INT(flash_sector(f, 0x08004001, &idx, &start, &size), 0);
	CHECK_EQ_INT(idx, 1);
	CHECK_EQ_INT(start, 0x08004000);
	CHECK_EQ_INT(size, 16 * 1024);
	CHECK_EQ_INT(flash_sector(f, 0x08010000, &idx, &start, &size), 0);
	CHECK_EQ_INT(idx, 4);
	CHECK_EQ_INT(size, 64 * 1024);
	CHECK_EQ_INT(flash_sector(f, 0x0807ffff, &idx, &start, &size), 0);
	CHECK_EQ_INT(idx, 7);
	CHECK_EQ_INT(start, 0x08060000);
	CHECK_EQ_INT(size, 128 * 1024);
	CHECK_EQ_INT(flash_sector(f, 0x08080000, NULL, NULL, NULL), -ERANGE);
	CHECK_EQ_INT(flash_sector(f, 0x07ffffff, NULL, NULL, NULL), -ERANGE);
	f = flash_free(f);
	CHECK(f == NULL);

	f = flash_new(mcu("stm32g0b1xx"), 0.0);
	CHECK_EQ_INT(f->n_sectors, 256);
	CHECK_EQ_INT(flash_sector(f, 0x08002800, &idx, &start, &size), 0);
	CHECK_EQ_INT(idx, 5);
	CHECK_EQ_INT(size, 2048);
	flash_free(f);

	f = flash_new(mcu("lpc1768"), 0.0);
	CHECK_EQ_INT(f->base, 0);
	CHECK_EQ_INT(f->n_sectors, 30);
	CHECK_EQ_INT(flash_sector(f, 0x10000, &idx, &start, &size), 0);
	CHECK_EQ_INT(idx, 16);
	CHECK_EQ_INT(size, 32 * 1024);
	flash_free(f);
}

static void
test_nor(void)
{
	struct flash *f = flash_new(mcu("stm32f446xx"), 0.0);
	uint8_t data[8] = {0x12, 0x34, 0x56, 0x78, 0xf0, 0x0f, 0xff, 0x00};
	uint8_t less[2] = {0x10, 0x30}, back[8];
	uint32_t busy = 1;

	CHECK_EQ_INT(flash_program(f, 0x08008000, data, sizeof data, &busy), 0);
	CHECK_EQ_INT(busy, 0); /* speed 0: instant */
	CHECK_EQ_INT(flash_read(f, 0x08008000, back, sizeof back), 0);
	CHECK(memcmp(back, data, sizeof data) == 0);
	CHECK_EQ_INT(f->total_programmed, 8);
	/* 1 -> 0 only: clearing more bits works, setting one back does not */
	CHECK_EQ_INT(flash_program(f, 0x08008000, less, sizeof less, NULL), 0);
	CHECK_EQ_INT(flash_program(f, 0x08008004, data, 1, NULL), -EIO);
	CHECK_EQ_INT(flash_read(f, 0x08008004, back, 1), 0);
	CHECK_EQ_INT(back[0], 0xf0); /* a refused write changes nothing */
	CHECK(!flash_is_erased(f, 0x08008000, 4));
	CHECK(flash_is_erased(f, 0x08008008, 0x100));
	/* outside flash */
	CHECK_EQ_INT(flash_program(f, 0x0807fffc, data, 8, NULL), -ERANGE);
	CHECK_EQ_INT(flash_read(f, 0x08080000, back, 1), -ERANGE);
	CHECK_EQ_INT(flash_erase(f, 0x20000000, NULL), -ERANGE);
	CHECK(!flash_is_erased(f, 0x0807fffc, 8));
	/* erase of the 16 KiB sector 2 clears it and counts once; its neighbours stay */
	CHECK_EQ_INT(flash_program(f, 0x0800c000, data, 4, NULL), 0);
	CHECK_EQ_INT(flash_erase(f, 0x08009234, NULL), 0);
	CHECK(flash_is_erased(f, 0x08008000, 0x4000));
	CHECK(!flash_is_erased(f, 0x0800c000, 4));
	CHECK_EQ_INT(flash_erase_count(f, 0x08008000), 1);
	CHECK_EQ_INT(flash_erase_count(f, 0x0800c000), 0);
	CHECK_EQ_INT(f->total_erases, 1);
	CHECK_EQ_INT(flash_program(f, 0x08008004, data, 1, NULL), 0);
	/* flash_load ignores the NOR rule (factory programming) */
	CHECK_EQ_INT(flash_load(f, 0x08000000, data, 8), 0);
	CHECK_EQ_INT(flash_load(f, 0x08000000, data + 4, 4), 0);
	CHECK_EQ_INT(flash_read(f, 0x08000000, back, 4), 0);
	CHECK(memcmp(back, data + 4, 4) == 0);
	CHECK_EQ_INT(flash_erase_all(f, NULL), 0);
	CHECK(flash_is_erased(f, f->base, f->size));
	CHECK_EQ_INT(flash_erase_count(f, 0x08008000), 2);
	CHECK_EQ_INT(flash_erase_count(f, 0x08060000), 1);
	CHECK_EQ_INT(f->total_erases, 9);
	flash_free(f);
}

static void
test_timing(void)
{
	struct flash *f = flash_new(mcu("stm32f446xx"), 1.0);
	uint32_t us = 0;

	/* datasheet typ. values (x32): 16 KiB 250 ms, 64 KiB 550 ms, 128 KiB 1 s; 16 us/word */
	CHECK_EQ_INT(flash_erase(f, 0x08000000, &us), 0);
	CHECK(us >= 240000 && us <= 260000);
	CHECK_EQ_INT(flash_erase(f, 0x08010000, &us), 0);
	CHECK(us >= 530000 && us <= 600000);
	CHECK_EQ_INT(flash_erase(f, 0x08020000, &us), 0);
	CHECK(us >= 950000 && us <= 1050000);
	CHECK_EQ_INT(flash_program_time(f, 2048), 2048 / 4 * 16);
	flash_free(f);

	f = flash_new(mcu("stm32f446xx"), 0.001);
	CHECK_EQ_INT(flash_erase(f, 0x08020000, &us), 0);
	CHECK(us >= 950 && us <= 1050);
	flash_free(f);

	f = flash_new(mcu("stm32g0b1xx"), 1.0);
	CHECK_EQ_INT(flash_erase(f, 0x08002000, &us), 0);
	CHECK_EQ_INT(us, 22000);
	CHECK_EQ_INT(flash_program_time(f, 1024), 128 * 85);
	flash_free(f);

	f = flash_new(mcu("stm32h723xx"), 1.0);
	CHECK_EQ_INT(flash_erase(f, 0x08020000, &us), 0);
	CHECK(us >= 900000 && us <= 2000000);
	flash_free(f);

	f = flash_new(mcu("lpc1768"), 1.0);
	CHECK_EQ_INT(flash_erase(f, 0x4000, &us), 0);
	CHECK_EQ_INT(us, 100000);
	CHECK_EQ_INT(flash_erase(f, 0x10000, &us), 0);
	CHECK_EQ_INT(us, 100000);
	CHECK_EQ_INT(flash_program_time(f, 256), 1000);
	flash_free(f);

	{
		struct timespec a, b;
		long el;

		clock_gettime(CLOCK_MONOTONIC, &a);
		flash_busy_wait(3000);
		clock_gettime(CLOCK_MONOTONIC, &b);
		el = (b.tv_sec - a.tv_sec) * 1000000L + (b.tv_nsec - a.tv_nsec) / 1000;
		CHECK(el >= 3000);
	}
}

struct writer {
	struct flash *f;
	uint32_t addr;
	int fails;
};

static void *
writer_main(void *p)
{
	struct writer *w = p;
	uint8_t b[16];

	memset(b, (int)(w->addr >> 12) & 0x7f, sizeof b);
	for (uint32_t i = 0; i < 256; i++)
		if (flash_program(w->f, w->addr + i * 16, b, sizeof b, NULL) < 0)
			w->fails++;
	return NULL;
}

static void
test_threads(void)
{
	struct flash *f = flash_new(mcu("stm32f446xx"), 0.0);
	struct writer w[4];
	pthread_t t[4];
	uint8_t b;

	for (int i = 0; i < 4; i++) {
		w[i] = (struct writer){f, 0x08020000 + (uint32_t)i * 0x1000, 0};
		pthread_create(&t[i], NULL, writer_main, &w[i]);
	}
	for (int i = 0; i < 4; i++) {
		pthread_join(t[i], NULL);
		CHECK_EQ_INT(w[i].fails, 0);
		CHECK_EQ_INT(flash_read(f, w[i].addr + 0xff0, &b, 1), 0);
		CHECK_EQ_INT(b, (w[i].addr >> 12) & 0x7f);
	}
	CHECK_EQ_INT(f->total_programmed, 4 * 256 * 16);
	flash_free(f);
}

/* A Klipper-like image linked at `link`: make_image plus a zlib dictionary at 0x200 and the
 * absolute pointer to it (link + 0x200) at 0x1f8, as the code's literal pool holds it. */
static void
make_klipper(uint8_t *img, size_t len, uint32_t link, uint32_t sp)
{
	static const char json[] = "{\"app\": \"Klipper\", \"version\": \"v1\"}";
	uLongf n = len - 0x200;

	make_image(img, len, link, sp);
	if (compress2(img + 0x200, &n, (const Bytef *)json, sizeof(json) - 1, 9) != Z_OK)
		abort();
	put32(img + 0x1f8, link + 0x200);
}

static void
test_boot_model(void)
{
	struct flash *f = flash_new(mcu("stm32f446xx"), 0.0);
	uint8_t img[1024];
	uint8_t big[0x3000];

	CHECK(!flash_app_valid(f, 0x08008000)); /* erased */

	/* right: linked and written at 0x08008000 */
	make_image(img, sizeof img, 0x08008000, 0x20020000);
	CHECK_EQ_INT(flash_load(f, 0x08008000, img, sizeof img), 0);
	CHECK(flash_app_valid(f, 0x08008000));

	/* a 32 KiB-offset image written at 0x08000000 of an erased chip: its reset vector is
	 * inside flash and above app_start, but points at erased flash (§7.4 lock-up) */
	flash_free(f);
	f = flash_new(mcu("stm32f446xx"), 0.0);
	CHECK_EQ_INT(flash_load(f, 0x08000000, img, sizeof img), 0);
	CHECK(!flash_app_valid(f, 0x08000000));

	/* a no-bootloader image written at 0x08008000: reset vector below app_start */
	make_image(img, sizeof img, 0x08000000, 0x20020000);
	CHECK_EQ_INT(flash_load(f, 0x08008000, img, sizeof img), 0);
	CHECK(!flash_app_valid(f, 0x08008000));
	CHECK_EQ_INT(flash_load(f, 0x08000000, img, sizeof img), 0);
	CHECK(flash_app_valid(f, 0x08000000));

	/* SP rules: base < SP <= base + size */
	make_image(img, sizeof img, 0x08008000, 0x20000000);
	CHECK_EQ_INT(flash_load(f, 0x08008000, img, sizeof img), 0);
	CHECK(!flash_app_valid(f, 0x08008000));
	make_image(img, sizeof img, 0x08008000, 0x20020004);
	CHECK_EQ_INT(flash_load(f, 0x08008000, img, sizeof img), 0);
	CHECK(!flash_app_valid(f, 0x08008000));
	make_image(img, sizeof img, 0x08008000, 0x2001fff0);
	CHECK_EQ_INT(flash_load(f, 0x08008000, img, sizeof img), 0);
	CHECK(flash_app_valid(f, 0x08008000));
	/* even (ARM-state) reset vector */
	put32(img + 4, 0x08008194);
	CHECK_EQ_INT(flash_load(f, 0x08008000, img, sizeof img), 0);
	CHECK(!flash_app_valid(f, 0x08008000));
	CHECK(!flash_app_valid(f, 0x0807fffc)); /* table would run off the end */
	flash_free(f);

	/* Klipper: the dictionary pointer must point at the dictionary. An image linked at
	 * 0x08004000 written at 0x08002000 (G0B1) has its reset handler inside the programmed
	 * image, holding code: only the pointer tells, and it points 8 KiB past the dictionary */
	f = flash_new(mcu("stm32g0b1xx"), 0.0);
	make_klipper(big, sizeof big, 0x08002000, 0x20024000);
	CHECK_EQ_INT(flash_load(f, 0x08002000, big, sizeof big), 0);
	CHECK(flash_app_valid(f, 0x08002000));
	make_klipper(big, sizeof big, 0x08001000, 0x20024000);
	put32(big + 4, 0x08002801); /* a reset handler 6 KiB in, like a real build */
	CHECK_EQ_INT(flash_load(f, 0x08002000, big, sizeof big), 0);
	CHECK(!flash_app_valid(f, 0x08002000));
	CHECK_EQ_INT(flash_load(f, 0x08001000, big, sizeof big), 0);
	CHECK(flash_app_valid(f, 0x08001000));
	flash_free(f);

	/* LPC1768: SP in local SRAM (Klipper's 0x10007FE0) or AHB SRAM, app at 0x4000 */
	f = flash_new(mcu("lpc1768"), 0.0);
	make_image(img, sizeof img, 0x4000, 0x10007fe0);
	CHECK_EQ_INT(flash_load(f, 0x4000, img, sizeof img), 0);
	CHECK(flash_app_valid(f, 0x4000));
	make_image(img, sizeof img, 0x4000, 0x20084000);
	CHECK_EQ_INT(flash_load(f, 0x4000, img, sizeof img), 0);
	CHECK(flash_app_valid(f, 0x4000));
	flash_free(f);

	/* H723: 128 KiB offset, SP in DTCM */
	f = flash_new(mcu("stm32h723xx"), 0.0);
	make_image(img, sizeof img, 0x08020000, 0x20020000);
	CHECK_EQ_INT(flash_load(f, 0x08020000, img, sizeof img), 0);
	CHECK(flash_app_valid(f, 0x08020000));
	flash_free(f);
	f = flash_new(mcu("stm32h723xx"), 0.0);
	CHECK_EQ_INT(flash_load(f, 0x08000000, img, sizeof img), 0);
	CHECK(!flash_app_valid(f, 0x08000000));
	flash_free(f);
}

int
main(void)
{
	test_geometry();
	test_nor();
	test_timing();
	test_threads();
	test_boot_model();
	TEST_DONE();
}
