/* SPDX-License-Identifier: GPL-2.0-or-later */
/* test_validate: every check of validate_image() on synthetic images, the flash-side API,
 * the JSON form and validate_command()'s exit codes. tests/image/verdicts.sh repeats the
 * verdicts on real toolchain output. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "catalog.h"
#include "harness.h"
#include "util.h"
#include "image/validate.h"

static uint32_t
get_le32_t(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void
put_le32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
	p[2] = (uint8_t)(v >> 16);
	p[3] = (uint8_t)(v >> 24);
}

/* A small .bin linked at `base`: vector table (SP, 23 handlers spread over the first 0x400
 * bytes), code-like filler, the vector table's address as a literal (SCB->VTOR) at 0x3f8
 * and, when `dict` is set, a compressed Klipper dictionary at 0x400 with its absolute
 * address as a literal at 0x3f0, as a real build's code holds it. */
static uint8_t *
make_bin(uint32_t base, uint32_t sp, size_t size, const char *dict)
{
	uint8_t *b = xmalloc(size);

	for (size_t i = 0; i < size; i++)
		b[i] = (uint8_t)(i * 7 + 3);
	put_le32(b, sp);
	for (uint32_t i = 1; i < 24; i++)
		put_le32(b + 4 * i, (i >= 7 && i <= 10) ? 0 : base + 0x100 + 0x20 * i + 1);
	if (dict) {
		uLongf n = 4096;

		if (size < 0x400 + n ||
		    compress2(b + 0x400, &n, (const Bytef *)dict, (uLong)strlen(dict), 9) != Z_OK)
			abort();
		put_le32(b + 0x3f0, base + 0x400);
	}
	if (size >= 0x400)
		put_le32(b + 0x3f8, base);
	return b;
}

static const char *
klipper(const char *mcu, const char *iface)
{
	static char json[512];

	snprintf(json, sizeof(json),
		 "{\"app\": \"Klipper\", \"config\": {\"MCU\": \"%s\", \"CLOCK_FREQ\": 1000, %s}, "
		 "\"version\": \"v0.12.0-test\"}",
		 mcu, iface);
	return json;
}

#define USB "\"RESERVE_PINS_USB\": \"PA11,PA12\""
#define SERIAL "\"SERIAL_BAUD\": 250000"

static bool
has_reason(const struct verdict *v, const char *text)
{
	for (size_t i = 0; i < v->n_reasons; i++)
		if (strstr(v->reasons[i], text))
			return true;
	return false;
}

static void
test_bin_offsets(void)
{
	const struct catalog_board *pro = catalog_find("skr-pro");
	struct validate_target t = {.board = pro, .file_name = "klipper.bin"};
	struct verdict v;
	uint8_t *b;

	CHECK(pro != NULL);
	if (!pro)
		return;
	b = make_bin(0x08008000, 0x20020000, 48 * 1024, klipper("stm32f407xx", USB));
	CHECK_EQ_INT(validate_image(b, 48 * 1024, &t, &v), 0);
	CHECK(v.accepted);
	CHECK_EQ_INT(v.n_reasons, 0);
	CHECK_EQ_INT(v.format, IMAGE_FORMAT_BIN);
	CHECK_EQ_INT(v.load_address, 0x08008000);
	CHECK_EQ_INT(v.size, 48 * 1024);
	CHECK_STREQ(v.mcu, "stm32f407xx");
	CHECK_STREQ(v.interface, "usb");
	CHECK_STREQ(v.version, "v0.12.0-test");
	verdict_done(&v);
	free(b);

	/* below: the reset vector points into the bootloader */
	b = make_bin(0x08000000, 0x20020000, 48 * 1024, NULL);
	CHECK_EQ_INT(validate_image(b, 48 * 1024, &t, &v), 0);
	CHECK(!v.accepted);
	CHECK_EQ_INT(v.n_reasons, 1);
	CHECK(has_reason(&v, "klipper.bin is linked for 0x08000000 (\"No bootloader\") but the app "
			     "on BTT SKR Pro V1.1/V1.2 (STM32F407) starts at 0x08008000: rebuild "
			     "with make menuconfig -> Bootloader offset \"32KiB bootloader\""));
	verdict_done(&v);
	free(b);

	/* above, image larger than the gap: the reset vector alone would pass */
	b = make_bin(0x08010000, 0x20020000, 48 * 1024, NULL);
	CHECK_EQ_INT(validate_image(b, 48 * 1024, &t, &v), 0);
	CHECK(!v.accepted);
	CHECK(has_reason(&v, "is linked for 0x08010000 (\"64KiB bootloader\")"));
	verdict_done(&v);

	/* the same image is right for a profile whose app starts at 0x08010000 */
	t.app_start = 0x08010000;
	CHECK_EQ_INT(validate_image(b, 48 * 1024, &t, &v), 0);
	CHECK(v.accepted);
	CHECK_EQ_INT(v.load_address, 0x08010000);
	verdict_done(&v);
	free(b);

	/* an unusual app start outside the Kconfig choices still counts as a candidate */
	t.app_start = 0x08006000;
	b = make_bin(0x08006000, 0x20020000, 4096, NULL);
	CHECK_EQ_INT(validate_image(b, 4096, &t, &v), 0);
	CHECK(v.accepted);
	verdict_done(&v);
	free(b);

	/* no known base holds the handlers: the reset vector check still speaks */
	t.app_start = 0;
	b = make_bin(0x08008000, 0x20020000, 4096, NULL);
	put_le32(b + 4, 0x08090001);
	put_le32(b + 8, 0x08090001);
	CHECK_EQ_INT(validate_image(b, 4096, &t, &v), 0);
	CHECK(!v.accepted);
	CHECK(has_reason(&v, "reset vector 0x08090001 lies outside the image"));
	verdict_done(&v);
	free(b);
}

static void
test_vector_and_size(void)
{
	struct validate_target t = {.board = catalog_find("skr-pro"), .file_name = "fw.bin"};
	struct verdict v;
	uint8_t *b, ff[64], tiny[4] = {1, 2, 3, 4};

	b = make_bin(0x08008000, 0x20030000, 4096, NULL); /* F429's RAM end on an F407 */
	put_le32(b + 4, 0x08008100);			  /* even reset vector */
	CHECK_EQ_INT(validate_image(b, 4096, &t, &v), 0);
	CHECK(!v.accepted);
	CHECK(has_reason(&v, "initial stack pointer 0x20030000 is not in the RAM of the "
			     "stm32f407xx (0x20000000-0x2001ffff, 0x10000000-0x1000ffff)"));
	CHECK_EQ_INT(v.n_reasons, 1); /* the Thumb bit follows from the same cause */
	verdict_done(&v);
	put_le32(b, 0x20020000);
	CHECK_EQ_INT(validate_image(b, 4096, &t, &v), 0);
	CHECK(has_reason(&v, "reset vector 0x08008100 is not a Thumb address"));
	CHECK_EQ_INT(v.n_reasons, 1);
	verdict_done(&v);
	put_le32(b, 0x10010000); /* CCM end: valid */
	put_le32(b + 4, 0x08008101);
	CHECK_EQ_INT(validate_image(b, 4096, &t, &v), 0);
	CHECK(v.accepted);
	verdict_done(&v);
	put_le32(b, 0x20000000); /* RAM base itself: not a valid SP (base < SP) */
	CHECK_EQ_INT(validate_image(b, 4096, &t, &v), 0);
	CHECK(!v.accepted);
	verdict_done(&v);
	put_le32(b, 0x2001fffe); /* unaligned */
	CHECK_EQ_INT(validate_image(b, 4096, &t, &v), 0);
	CHECK(!v.accepted);
	verdict_done(&v);
	free(b);

	/* too large for the flash after the app start (1 MiB - 32 KiB) */
	b = make_bin(0x08008000, 0x20020000, 1024 * 1024, NULL);
	CHECK_EQ_INT(validate_image(b, 1024 * 1024, &t, &v), 0);
	CHECK(!v.accepted);
	CHECK(has_reason(&v, "fw.bin is 1048576 bytes but only 1015808 bytes of flash follow "
			     "0x08008000"));
	verdict_done(&v);
	CHECK_EQ_INT(validate_image(b, 1015808, &t, &v), 0);
	CHECK(v.accepted);
	verdict_done(&v);
	free(b);

	CHECK_EQ_INT(validate_image(NULL, 0, &t, &v), 0);
	CHECK(!v.accepted);
	CHECK(has_reason(&v, "fw.bin is empty"));
	verdict_done(&v);
	memset(ff, 0xFF, sizeof(ff));
	CHECK_EQ_INT(validate_image(ff, sizeof(ff), &t, &v), 0);
	CHECK(has_reason(&v, "only 0xFF bytes"));
	CHECK_EQ_INT(v.n_reasons, 1);
	verdict_done(&v);
	CHECK_EQ_INT(validate_image(tiny, sizeof(tiny), &t, &v), 0);
	CHECK(has_reason(&v, "too small to hold a Cortex-M vector table"));
	verdict_done(&v);

	/* malformed input is a verdict, not an error */
	CHECK_EQ_INT(validate_image((const uint8_t *)":0000", 5, &t, &v), 0);
	CHECK(!v.accepted);
	CHECK(has_reason(&v, "fw.bin is not a valid firmware file"));
	verdict_done(&v);

	t.board = NULL;
	CHECK_EQ_INT(validate_image(tiny, sizeof(tiny), &t, &v), -EINVAL);
}

static void
test_klipper_checks(void)
{
	struct validate_target t = {.board = catalog_find("skr-2-f429"), .file_name = "k.bin"};
	struct verdict v;
	uint8_t *b = make_bin(0x08008000, 0x20020000, 8192, klipper("stm32f407xx", SERIAL));

	CHECK_EQ_INT(validate_image(b, 8192, &t, &v), 0);
	CHECK(!v.accepted);
	/* one reason: the interface of a build for another MCU does not matter */
	CHECK_EQ_INT(v.n_reasons, 1);
	CHECK(has_reason(&v, "k.bin was built for stm32f407xx, but BTT SKR 2 rev B (STM32F429) is "
			     "stm32f429xx: rebuild with make menuconfig -> Processor model set to "
			     "stm32f429xx"));
	CHECK_STREQ(v.interface, "serial");
	verdict_done(&v);

	t.board = catalog_find("skr-2-f407");
	t.interface = CONFIG_INTERFACE_SERIAL;
	CHECK_EQ_INT(validate_image(b, 8192, &t, &v), 0);
	CHECK(v.accepted);
	verdict_done(&v);

	/* the bootloader's report wins over the catalog when they disagree */
	t.reported_mcu = "stm32f429xx";
	CHECK_EQ_INT(validate_image(b, 8192, &t, &v), 0);
	CHECK(!v.accepted);
	CHECK(has_reason(&v, "the board's bootloader reports stm32f429xx"));
	verdict_done(&v);
	t.reported_mcu = "STM32F407XX";
	CHECK_EQ_INT(validate_image(b, 8192, &t, &v), 0);
	CHECK(v.accepted);
	verdict_done(&v);
	free(b);

	/* G0B0 build on a G0B1 board, H743 on H723 */
	t = (struct validate_target){.board = catalog_find("skr-mini-e3-v3")};
	b = make_bin(0x08002000, 0x20024000, 8192, klipper("stm32g0b0xx", USB));
	CHECK_EQ_INT(validate_image(b, 8192, &t, &v), 0);
	CHECK(has_reason(&v, "the image was built for stm32g0b0xx"));
	verdict_done(&v);
	free(b);
	t.board = catalog_find("skr-3-h723");
	b = make_bin(0x08020000, 0x20020000, 8192, klipper("stm32h743xx", USB));
	CHECK_EQ_INT(validate_image(b, 8192, &t, &v), 0);
	CHECK(has_reason(&v, "built for stm32h743xx, but BTT SKR 3 / SKR 3 EZ (STM32H723) is "
			     "stm32h723xx"));
	verdict_done(&v);
	free(b);

	/* a CAN build, and a damaged dictionary */
	t.board = catalog_find("skr-pro");
	b = make_bin(0x08008000, 0x20020000, 8192,
		     klipper("stm32f407xx", "\"CANBUS_FREQUENCY\": 500000"));
	CHECK_EQ_INT(validate_image(b, 8192, &t, &v), 0);
	CHECK(has_reason(&v, "is a CAN build"));
	verdict_done(&v);
	free(b);
	b = make_bin(0x08008000, 0x20020000, 8192, "{\"app\": \"Klipper\", \"config\": {}}");
	CHECK_EQ_INT(validate_image(b, 8192, &t, &v), 0);
	CHECK(has_reason(&v, "damaged Klipper data dictionary"));
	verdict_done(&v);
	free(b);
}

static void
test_one_reason(void)
{
	struct validate_target t = {.board = catalog_find("skr-pro")};
	struct verdict v;
	uint8_t *b = make_bin(0x08000000, 0x30000000, 512 * 1024, klipper("stm32h743xx", SERIAL));

	/* an H743 serial build at another offset: the MCU is the cause, the rest follows */
	put_le32(b + 4, 0x08000100);
	CHECK_EQ_INT(validate_image(b, 512 * 1024, &t, &v), 0);
	CHECK(!v.accepted);
	CHECK_EQ_INT(v.n_reasons, 1);
	CHECK(has_reason(&v, "was built for stm32h743xx"));
	verdict_done(&v);
	CHECK_EQ_INT(v.n_reasons, 0);
	free(b);

	/* a serial build at the wrong offset: both are real, both are said */
	b = make_bin(0x08000000, 0x20020000, 8192, klipper("stm32f407xx", SERIAL));
	CHECK_EQ_INT(validate_image(b, 8192, &t, &v), 0);
	CHECK_EQ_INT(v.n_reasons, 2);
	CHECK(has_reason(&v, "is a serial build"));
	CHECK(has_reason(&v, "is linked for 0x08000000 (\"No bootloader\")"));
	verdict_done(&v);
	free(b);
}

/* The dictionary's literal pins the link address where the vector table cannot: handlers
 * 24 KiB into a 64 KiB image fit two of the F446's bases. */
static void
test_dict_literal(void)
{
	struct validate_target t = {.board = catalog_find("octopus-f446"), .file_name = "k.bin"};
	struct verdict v;
	const size_t size = 64 * 1024;
	uint8_t *b;

	for (uint32_t base = 0x08000000; base <= 0x08010000; base += 0x8000) {
		b = make_bin(base, 0x20020000, size, klipper("stm32f446xx", USB));
		for (uint32_t i = 1; i < 24; i++) /* handlers at +0x6000.. like a real build */
			if (get_le32_t(b + 4 * i))
				put_le32(b + 4 * i, base + 0x6001 + 0x10 * i);
		put_le32(b + 0x3f8, 0); /* no VTOR literal: the dictionary alone decides */
		CHECK_EQ_INT(validate_image(b, size, &t, &v), 0);
		CHECK_EQ_INT(v.accepted, base == 0x08008000);
		if (base == 0x08000000)
			CHECK(has_reason(&v,
					 "k.bin is linked for 0x08000000 (\"No bootloader\") but "
					 "the app on BTT Octopus V1.0/V1.1 (STM32F446) starts at "
					 "0x08008000: rebuild with make menuconfig -> Bootloader "
					 "offset \"32KiB bootloader\""));
		if (base == 0x08010000)
			CHECK(has_reason(&v, "is linked for 0x08010000 (\"64KiB bootloader\")"));
		verdict_done(&v);

		/* no literal at all: cannot tell, says so (unless the reset vector proves it) */
		put_le32(b + 0x3f0, 0);
		CHECK_EQ_INT(validate_image(b, size, &t, &v), 0);
		CHECK(!v.accepted);
		CHECK_EQ_INT(v.n_reasons, 1);
		CHECK(has_reason(&v, base < 0x08008000 ? "reset vector 0x08006011 lies outside"
						       : "holds a Klipper data dictionary but no "
							 "absolute reference"));
		verdict_done(&v);

		if (base != 0x08008000) {
			free(b);
			continue;
		}
		/* two literals for two menuconfig bases that both fit: ambiguous, says so */
		put_le32(b + 0x3f0, 0x08000400);
		put_le32(b + 0x3f4, 0x08008400);
		CHECK_EQ_INT(validate_image(b, size, &t, &v), 0);
		CHECK(!v.accepted);
		CHECK(has_reason(&v, "refers to its data dictionary as if linked at each of "
				     "0x08000000 (\"No bootloader\"), 0x08008000 (\"32KiB "
				     "bootloader\")"));
		verdict_done(&v);
		free(b);
	}
}

static void
test_rp2040_and_flash(void)
{
	struct validate_target t = {.board = catalog_find("skr-pico"), .file_name = "p.bin"};
	struct verdict v;
	struct image img;
	uint32_t crc = 0xFFFFFFFFu;
	uint8_t *b = xmalloc(4096), *vt;
	char *json;

	memset(b, 0x11, 4096);
	for (size_t i = 0; i < 252; i++) {
		crc ^= (uint32_t)b[i] << 24;
		for (int k = 0; k < 8; k++)
			crc = crc & 0x80000000u ? crc << 1 ^ 0x04C11DB7u : crc << 1;
	}
	put_le32(b + 252, crc);
	vt = make_bin(0x10000100, 0x20042000, 1024, NULL);
	memcpy(b + 256, vt, 1024);
	free(vt);
	CHECK_EQ_INT(validate_image_for_flash(b, 4096, &t, &v, &img), 1);
	CHECK(v.accepted);
	CHECK(img.has_load_address);
	CHECK_EQ_INT(img.load_address, 0x10000000);
	CHECK_EQ_INT(img.size, 4096);
	image_done(&img);
	json = verdict_to_json(&v);
	CHECK_STREQ(json, "{\"accepted\":true,\"format\":\"bin\",\"load_address\":\"0x10000000\","
			  "\"size\":4096,\"mcu\":\"\",\"interface\":\"\",\"version\":\"\","
			  "\"reasons\":[]}");
	free(json);
	verdict_done(&v);

	b[5] ^= 1; /* boot2 CRC broken */
	CHECK_EQ_INT(validate_image_for_flash(b, 4096, &t, &v, &img), 0);
	CHECK(img.data == NULL);
	CHECK(has_reason(&v, "p.bin has no valid RP2040 boot2 stage at 0x10000000"));
	json = verdict_to_json(&v);
	CHECK(strstr(json, "\"accepted\":false") && strstr(json, "boot2 stage"));
	free(json);
	verdict_done(&v);
	free(b);
}

static int
run_command(const char *a1, const char *a2, const char *a3, const char *a4)
{
	char *argv[6] = {(char *)(uintptr_t) "validate"};
	const char *args[4] = {a1, a2, a3, a4};
	int argc = 1;

	for (size_t i = 0; i < 4 && args[i]; i++)
		argv[argc++] = (char *)(uintptr_t)args[i];
	return validate_command(argc, argv);
}

static void
test_command(void)
{
	char path[] = "/tmp/test_validate.XXXXXX";
	uint8_t *b = make_bin(0x08008000, 0x20020000, 4096, NULL);
	int fd = mkstemp(path);

	CHECK(fd >= 0);
	if (fd < 0)
		return;
	CHECK_EQ_INT(write(fd, b, 4096), 4096);
	close(fd);
	CHECK_EQ_INT(run_command("--board", "skr-pro", path, NULL), 0);
	CHECK_EQ_INT(run_command("--board", "skr-pro", "--json", path), 0);
	CHECK_EQ_INT(run_command("--board", "octopus-f446", path, NULL), 0);
	CHECK_EQ_INT(run_command("--board", "skr-mini-e3-v3", path, NULL), 1);
	CHECK_EQ_INT(run_command("--profile", "skr-mini-e3-v3", "--config", "/dev/null"), 2);
	CHECK_EQ_INT(run_command("--board", "nope", path, NULL), 2);
	CHECK_EQ_INT(run_command("--board", "skr-pro", NULL, NULL), 2);
	CHECK_EQ_INT(run_command(path, NULL, NULL, NULL), 2);
	CHECK_EQ_INT(run_command("--board", "skr-pro", "/nonexistent/x.bin", NULL), 2);
	unlink(path);
	free(b);
}

int
main(void)
{
	test_bin_offsets();
	test_vector_and_size();
	test_klipper_checks();
	test_one_reason();
	test_dict_literal();
	test_rp2040_and_flash();
	test_command();
	TEST_DONE();
}
