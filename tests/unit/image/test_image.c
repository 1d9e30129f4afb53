/* SPDX-License-Identifier: GPL-2.0-or-later */
/* test_image: format detection and normalisation of .bin, Intel HEX, ELF and UF2. */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "image/image.h"
#include "util.h"

static void
put_le32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
	p[2] = (uint8_t)(v >> 16);
	p[3] = (uint8_t)(v >> 24);
}

static void
put_le16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

/* Appends one Intel HEX record with a correct checksum (unless `corrupt`). */
static void
hex_record(char *out, uint8_t type, uint16_t addr, const uint8_t *data, uint8_t n, bool corrupt)
{
	uint8_t sum = (uint8_t)(n + (addr >> 8) + (addr & 0xFF) + type);
	char *p = out + strlen(out);

	p += sprintf(p, ":%02X%04X%02X", n, addr, type);
	for (uint8_t i = 0; i < n; i++) {
		sum = (uint8_t)(sum + data[i]);
		p += sprintf(p, "%02X", data[i]);
	}
	sprintf(p, "%02X\r\n", (uint8_t)(-sum + (corrupt ? 1 : 0)) & 0xFF);
}

static int
parse_str(const char *s, struct image *img, const char **err)
{
	return image_parse((const uint8_t *)s, strlen(s), img, err);
}

static void
test_bin(void)
{
	const uint8_t raw[] = {0x00, 0x00, 0x02, 0x20, 0x01, 0x01, 0x00, 0x08};
	struct image img;

	CHECK_EQ_INT(image_parse(raw, sizeof(raw), &img, NULL), 0);
	CHECK_EQ_INT(img.format, IMAGE_FORMAT_BIN);
	CHECK(!img.has_load_address);
	CHECK_EQ_INT(img.size, sizeof(raw));
	CHECK(memcmp(img.data, raw, sizeof(raw)) == 0);
	image_done(&img);
	CHECK(img.data == NULL);
	image_done(&img); /* twice is fine */

	CHECK_EQ_INT(image_parse(NULL, 0, &img, NULL), 0);
	CHECK_EQ_INT(img.format, IMAGE_FORMAT_BIN);
	CHECK_EQ_INT(img.size, 0);
	image_done(&img);
	CHECK_STREQ(image_format_to_string(IMAGE_FORMAT_HEX), "hex");
	CHECK_STREQ(image_format_to_string(IMAGE_FORMAT_UF2), "uf2");
	CHECK_STREQ(image_format_to_string(IMAGE_FORMAT_ELF), "elf");
	CHECK_STREQ(image_format_to_string(IMAGE_FORMAT_BIN), "bin");
}

static void
test_hex(void)
{
	const uint8_t ela[] = {0x08, 0x00}, ela2[] = {0x09, 0x00}, seg[] = {0x10, 0x00};
	const uint8_t d1[] = {1, 2, 3, 4}, d2[] = {5, 6}, entry[] = {0x08, 0, 0x01, 0x01};
	char text[1024] = "";
	const char *err = NULL;
	struct image img;

	hex_record(text, 0x04, 0, ela, 2, false);
	hex_record(text, 0x00, 0x8000, d1, 4, false);
	hex_record(text, 0x00, 0x8006, d2, 2, false);
	hex_record(text, 0x05, 0, entry, 4, false);
	hex_record(text, 0x01, 0, NULL, 0, false);
	CHECK_EQ_INT(parse_str(text, &img, &err), 0);
	CHECK_EQ_INT(img.format, IMAGE_FORMAT_HEX);
	CHECK(img.has_load_address);
	CHECK_EQ_INT(img.load_address, 0x08008000);
	CHECK_EQ_INT(img.size, 8);
	CHECK(memcmp(img.data, (const uint8_t[]){1, 2, 3, 4, 0xFF, 0xFF, 5, 6}, 8) == 0);
	image_done(&img);

	/* lowercase digits and bare LF line ends */
	CHECK_EQ_INT(parse_str(":0400100001020304e2\n:00000001ff\n", &img, &err), 0);
	CHECK_EQ_INT(img.load_address, 0x10);
	image_done(&img);

	/* extended segment address: base = value << 4 */
	text[0] = '\0';
	hex_record(text, 0x02, 0, seg, 2, false);
	hex_record(text, 0x00, 0x0004, d2, 2, false);
	hex_record(text, 0x01, 0, NULL, 0, false);
	CHECK_EQ_INT(parse_str(text, &img, &err), 0);
	CHECK_EQ_INT(img.load_address, 0x10004);
	image_done(&img);

	/* bad checksum */
	text[0] = '\0';
	hex_record(text, 0x00, 0, d1, 4, true);
	hex_record(text, 0x01, 0, NULL, 0, false);
	err = NULL;
	CHECK_EQ_INT(parse_str(text, &img, &err), -EINVAL);
	CHECK_STREQ(err, "record checksum mismatch");

	/* truncated: no EOF record, or a record cut in the middle */
	text[0] = '\0';
	hex_record(text, 0x00, 0, d1, 4, false);
	CHECK_EQ_INT(parse_str(text, &img, &err), -EINVAL);
	CHECK(strstr(err, "end-of-file") != NULL);
	CHECK_EQ_INT(parse_str(":04000000010203", &img, &err), -EINVAL);

	/* overlapping records */
	text[0] = '\0';
	hex_record(text, 0x00, 0x0000, d1, 4, false);
	hex_record(text, 0x00, 0x0002, d2, 2, false);
	hex_record(text, 0x01, 0, NULL, 0, false);
	CHECK_EQ_INT(parse_str(text, &img, &err), -EINVAL);
	CHECK(strstr(err, "overlapping") != NULL);

	/* data after EOF, junk lines, unknown record types, no data at all */
	text[0] = '\0';
	hex_record(text, 0x00, 0, d1, 4, false);
	hex_record(text, 0x01, 0, NULL, 0, false);
	hex_record(text, 0x00, 8, d1, 4, false);
	CHECK_EQ_INT(parse_str(text, &img, &err), -EINVAL);
	CHECK_EQ_INT(parse_str(":00000001FF\nhello\n", &img, &err), -EINVAL);
	CHECK_EQ_INT(parse_str(":00000006FA\n:00000001FF\n", &img, &err), -EINVAL);
	CHECK_EQ_INT(parse_str(":00000001FF\n", &img, &err), -EINVAL);

	/* records 16 MiB apart: too large once normalised */
	text[0] = '\0';
	hex_record(text, 0x04, 0, ela, 2, false);
	hex_record(text, 0x00, 0, d1, 4, false);
	hex_record(text, 0x04, 0, ela2, 2, false);
	hex_record(text, 0x00, 0x10, d1, 4, false);
	hex_record(text, 0x01, 0, NULL, 0, false);
	CHECK_EQ_INT(parse_str(text, &img, &err), -EFBIG);
}

/* A minimal ELF32 ARM file: header, `n_ph` program headers, then the segment bytes. */
static size_t
make_elf(uint8_t *buf, uint16_t machine, uint32_t paddr, const uint8_t *data, uint32_t n)
{
	uint8_t *ph = buf + 52;

	memset(buf, 0, 52 + 32);
	memcpy(buf, "\177ELF", 4);
	buf[4] = 1;	       /* ELFCLASS32 */
	buf[5] = 1;	       /* little-endian */
	buf[6] = 1;	       /* EV_CURRENT */
	put_le16(buf + 16, 2); /* ET_EXEC */
	put_le16(buf + 18, machine);
	put_le32(buf + 20, 1);
	put_le32(buf + 24, paddr | 1); /* entry */
	put_le32(buf + 28, 52);	       /* e_phoff */
	put_le16(buf + 40, 52);	       /* e_ehsize */
	put_le16(buf + 42, 32);	       /* e_phentsize */
	put_le16(buf + 44, 1);	       /* e_phnum */
	put_le16(buf + 46, 40);	       /* e_shentsize */
	put_le32(ph, 1);	       /* PT_LOAD */
	put_le32(ph + 4, 84);	       /* p_offset */
	put_le32(ph + 8, 0x20000000);  /* p_vaddr: a RAM address, must be ignored */
	put_le32(ph + 12, paddr);
	put_le32(ph + 16, n);
	put_le32(ph + 20, n);
	put_le32(ph + 24, 5);
	memcpy(buf + 84, data, n);
	return 84 + n;
}

static void
test_elf(void)
{
	const uint8_t data[] = {0x00, 0x00, 0x02, 0x20, 0x41, 0x80, 0x00, 0x08, 9, 9, 9, 9};
	uint8_t buf[256];
	const char *err = NULL;
	struct image img;
	size_t n = make_elf(buf, 40 /* EM_ARM */, 0x08008000, data, sizeof(data));

	CHECK_EQ_INT(image_parse(buf, n, &img, &err), 0);
	CHECK_EQ_INT(img.format, IMAGE_FORMAT_ELF);
	CHECK(img.has_load_address);
	CHECK_EQ_INT(img.load_address, 0x08008000);
	CHECK_EQ_INT(img.size, sizeof(data));
	CHECK(img.size == sizeof(data) && memcmp(img.data, data, sizeof(data)) == 0);
	image_done(&img);

	CHECK_EQ_INT(image_parse(buf, n - 4, &img, &err), -EINVAL); /* segment cut */
	CHECK(strstr(err, "truncated") != NULL);
	CHECK_EQ_INT(image_parse(buf, 30, &img, &err), -EINVAL); /* header cut */
	CHECK_EQ_INT(image_parse(buf, 60, &img, &err), -EINVAL); /* program headers cut */
	n = make_elf(buf, 62 /* EM_X86_64 */, 0x08008000, data, sizeof(data));
	CHECK_EQ_INT(image_parse(buf, n, &img, &err), -EINVAL);
	CHECK(strstr(err, "ARM") != NULL);
}

/* UF2 block `no` of `total` with a 256-byte payload of `fill` at `addr`. */
static void
uf2_block(uint8_t *b, uint32_t addr, uint32_t no, uint32_t total, uint8_t fill)
{
	memset(b, 0, 512);
	put_le32(b, 0x0A324655u);
	put_le32(b + 4, 0x9E5D5157u);
	put_le32(b + 8, 0x2000);
	put_le32(b + 12, addr);
	put_le32(b + 16, 256);
	put_le32(b + 20, no);
	put_le32(b + 24, total);
	put_le32(b + 28, 0xE48BFF56u);
	memset(b + 32, fill, 256);
	put_le32(b + 508, 0x0AB16F30u);
}

static void
test_uf2(void)
{
	uint8_t buf[4 * 512];
	const char *err = NULL;
	struct image img;

	/* out of address order, with a gap and a not-main-flash block */
	uf2_block(buf, 0x10000200, 0, 4, 0xAA);
	uf2_block(buf + 512, 0x10000000, 1, 4, 0xBB);
	uf2_block(buf + 1024, 0x10000400, 2, 4, 0xCC);
	uf2_block(buf + 1536, 0x20000000, 3, 4, 0xDD);
	put_le32(buf + 1536 + 8, 0x1); /* not main flash: skipped */
	CHECK_EQ_INT(image_parse(buf, sizeof(buf), &img, &err), 0);
	CHECK_EQ_INT(img.format, IMAGE_FORMAT_UF2);
	CHECK_EQ_INT(img.load_address, 0x10000000);
	CHECK_EQ_INT(img.size, 0x500);
	if (img.size == 0x500) {
		CHECK_EQ_INT(img.data[0], 0xBB);
		CHECK_EQ_INT(img.data[0x100], 0xFF);
		CHECK_EQ_INT(img.data[0x200], 0xAA);
		CHECK_EQ_INT(img.data[0x4FF], 0xCC);
	}
	image_done(&img);

	CHECK_EQ_INT(image_parse(buf, sizeof(buf) - 100, &img, &err), -EINVAL);
	CHECK(strstr(err, "multiple of 512") != NULL);
	CHECK_EQ_INT(image_parse(buf, 3 * 512, &img, &err), -EINVAL); /* numBlocks says 4 */
	CHECK(strstr(err, "numBlocks") != NULL);

	put_le32(buf + 512 + 20, 0); /* two blocks numbered 0 */
	CHECK_EQ_INT(image_parse(buf, sizeof(buf), &img, &err), -EINVAL);
	CHECK(strstr(err, "repeated") != NULL);
	put_le32(buf + 512 + 20, 7);
	CHECK_EQ_INT(image_parse(buf, sizeof(buf), &img, &err), -EINVAL);
	put_le32(buf + 512 + 20, 1);

	put_le32(buf + 28, 0xE48BFF59u); /* RP2350 */
	CHECK_EQ_INT(image_parse(buf, sizeof(buf), &img, &err), -EINVAL);
	CHECK(strstr(err, "family") != NULL);
	put_le32(buf + 28, 0xE48BFF56u);
	put_le32(buf + 16, 476);
	CHECK_EQ_INT(image_parse(buf, sizeof(buf), &img, &err), -EINVAL);
	put_le32(buf + 16, 256);
	put_le32(buf + 12, 0x10000280); /* unaligned */
	CHECK_EQ_INT(image_parse(buf, sizeof(buf), &img, &err), -EINVAL);
	put_le32(buf + 12, 0x10000000); /* same address as block 1 */
	CHECK_EQ_INT(image_parse(buf, sizeof(buf), &img, &err), -EINVAL);
	put_le32(buf + 12, 0x10000200);
	put_le32(buf + 508, 0);
	CHECK_EQ_INT(image_parse(buf, sizeof(buf), &img, &err), -EINVAL);
	CHECK(strstr(err, "magic") != NULL);
	put_le32(buf + 508, 0x0AB16F30u);
	CHECK_EQ_INT(image_parse(buf, sizeof(buf), &img, &err), 0);
	image_done(&img);
}

int
main(void)
{
	test_bin();
	test_hex();
	test_elf();
	test_uf2();
	TEST_DONE();
}
