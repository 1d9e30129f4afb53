/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Unit tests of the SD SPI-mode codec. Vectors: the fixed frames every SD SPI driver sends
 * (CMD0 = 40 00 00 00 00 95, CMD8 0x1AA = 48 00 00 01 AA 87, from the SD Physical Layer
 * specification), CRC16-XMODEM check value 0x31C3, and the CRC of a block of 0xFF 0x7FA1. */
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "harness.h"
#include "proto/sdspi.h"

static void
test_frames(void)
{
	uint8_t f[6], blk[512];
	static const uint8_t cmd0[] = {0x40, 0, 0, 0, 0, 0x95};
	static const uint8_t cmd8[] = {0x48, 0, 0, 0x01, 0xaa, 0x87};
	static const uint8_t cmd55[] = {0x77, 0, 0, 0, 0, 0x65};
	static const uint8_t acmd41[] = {0x69, 0x40, 0, 0, 0, 0x77};
	uint32_t a = 0;

	sdspi_command(0, 0, f);
	CHECK(memcmp(f, cmd0, 6) == 0);
	sdspi_command(8, 0x1aa, f);
	CHECK(memcmp(f, cmd8, 6) == 0);
	sdspi_command(55, 0, f);
	CHECK(memcmp(f, cmd55, 6) == 0);
	sdspi_command(41, 1u << 30, f);
	CHECK(memcmp(f, acmd41, 6) == 0);
	CHECK_EQ_INT(sdspi_crc16((const uint8_t *)"123456789", 9), 0x31c3);
	memset(blk, 0xff, sizeof(blk));
	CHECK_EQ_INT(sdspi_crc16(blk, sizeof(blk)), 0x7fa1);
	CHECK_EQ_INT(sdspi_data_response(0xe5), 0);
	CHECK_EQ_INT(sdspi_data_response(0x05), 0);
	CHECK_EQ_INT(sdspi_data_response(0x0b), -EILSEQ);
	CHECK_EQ_INT(sdspi_data_response(0x0d), -EIO);
	CHECK_EQ_INT(sdspi_data_response(0xff), -EBADMSG);
	CHECK_EQ_INT(sdspi_address(true, 1000, &a), 0);
	CHECK_EQ_INT(a, 1000);
	CHECK_EQ_INT(sdspi_address(false, 1000, &a), 0);
	CHECK_EQ_INT(a, 512000);
	CHECK_EQ_INT(sdspi_address(false, 1u << 23, &a), -ERANGE);
	CHECK_EQ_INT(sdspi_address(true, 1ull << 32, &a), -ERANGE);
}

static void
test_blocks(void)
{
	uint8_t buf[600];
	uint16_t crc;

	memset(buf, 0xff, sizeof(buf));
	CHECK_EQ_INT(sdspi_find_block(buf, 20, 512), -EAGAIN);
	buf[3] = 0xfe;
	for (int i = 0; i < 512; i++)
		buf[4 + i] = (uint8_t)(i * 7);
	crc = sdspi_crc16(buf + 4, 512);
	buf[516] = (uint8_t)(crc >> 8);
	buf[517] = (uint8_t)crc;
	CHECK_EQ_INT(sdspi_find_block(buf, 517, 512), -EBADMSG);
	CHECK_EQ_INT(sdspi_find_block(buf, 518, 512), 4);
	buf[100] ^= 1;
	CHECK_EQ_INT(sdspi_find_block(buf, 518, 512), -EILSEQ);
	buf[3] = 0x08; /* data error token: out of range */
	CHECK_EQ_INT(sdspi_find_block(buf, 518, 512), -EIO);
}

static void
test_csd(void)
{
	/* CSD v2 of a 7.4 GiB card (C_SIZE 0x3B37 = 15159): (15159 + 1) * 1024 sectors */
	uint8_t v2[16] = {0x40, 0x0e, 0x00, 0x32, 0x5b, 0x59, 0x00, 0x00,
			  0x3b, 0x37, 0x7f, 0x80, 0x0a, 0x40, 0x00, 0x00};
	/* CSD v1: READ_BL_LEN 9, C_SIZE 4095, C_SIZE_MULT 7 -> 4096 * 512 * 512 bytes = 1 GiB */
	uint8_t v1[16] = {0x00, 0x26, 0x00, 0x32, 0x5f, 0x59, 0x83, 0xff,
			  0xc0, 0x03, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00};
	uint64_t n = 0;

	v2[15] = (uint8_t)(sdspi_crc7(v2, 15) << 1 | 1);
	v1[15] = (uint8_t)(sdspi_crc7(v1, 15) << 1 | 1);
	CHECK_EQ_INT(sdspi_csd_sectors(v2, &n), 0);
	CHECK_EQ_INT(n, 15160ull * 1024);
	CHECK_EQ_INT(sdspi_csd_sectors(v1, &n), 0);
	CHECK_EQ_INT(n, 2097152);
	v1[15] ^= 2;
	CHECK_EQ_INT(sdspi_csd_sectors(v1, &n), -EILSEQ);
	v2[0] = 0x80;
	v2[15] = (uint8_t)(sdspi_crc7(v2, 15) << 1 | 1);
	CHECK_EQ_INT(sdspi_csd_sectors(v2, &n), -EOPNOTSUPP);
}

/* Run the init machine against scripted card answers (each answer: bytes after the command). */
static int
run_init(struct sdspi_init *s, const char *const *answers, size_t n, unsigned *cmds)
{
	int r = 0;

	sdspi_init_start(s);
	for (size_t i = 0; i < n; i++) {
		uint8_t f[6], resp[16];
		size_t len = 0;

		sdspi_init_command(s, f);
		cmds[i] = f[0] & 0x3f;
		for (const char *h = answers[i]; h[0] && h[1]; h += 2) {
			unsigned v;

			sscanf(h, "%2x", &v);
			resp[len++] = (uint8_t)v;
		}
		r = sdspi_init_feed(s, resp, len);
		if (r != 0)
			return r;
	}
	return r;
}

static void
test_init(void)
{
	struct sdspi_init s;
	unsigned cmds[16];
	/* SDHC v2: idle, R7 echo, CRC on, ACMD41 busy once then ready, OCR with CCS, CMD16 */
	static const char *const v2ok[] = {"ff01ff", "01000001aa", "01",	 "01", "01",
					   "01",     "00",	   "00c0ff8000", "00"};
	static const unsigned want_v2[] = {0, 8, 59, 55, 41, 55, 41, 58, 16};
	/* SDSC v1: CMD8 illegal, OCR (3.3 V), ACMD41 ready */
	static const char *const v1[] = {"01", "05", "05", "0100ff8000", "01", "00", "00"};
	static const unsigned want_v1[] = {0, 8, 59, 58, 55, 41, 16};

	CHECK_EQ_INT(run_init(&s, v2ok, 9, cmds), 1);
	CHECK(memcmp(cmds, want_v2, sizeof(want_v2)) == 0);
	CHECK(s.sdhc);
	CHECK_EQ_INT(s.version, 2);
	CHECK_EQ_INT(run_init(&s, v1, 7, cmds), 1);
	CHECK(memcmp(cmds, want_v1, sizeof(want_v1)) == 0);
	CHECK(!s.sdhc);
	CHECK_EQ_INT(s.version, 1);
	/* no card: CMD0 never answered */
	{
		const char *none[15];

		for (int i = 0; i < 15; i++)
			none[i] = "ffffffff";
		CHECK_EQ_INT(run_init(&s, none, 15, cmds), -ENODEV);
	}
	/* wrong voltage echo */
	{
		static const char *const bad[] = {"01", "01000001bb"};

		CHECK_EQ_INT(run_init(&s, bad, 2, cmds), -EOPNOTSUPP);
	}
	CHECK_STREQ(sdspi_init_step_name(SDSPI_INIT_ACMD41), "ACMD41 SD_SEND_OP_COND");
}

int
main(void)
{
	test_frames();
	test_blocks();
	test_csd();
	test_init();
	TEST_DONE();
}
