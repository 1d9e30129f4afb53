/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Unit tests of the LPC176x ISP codec against UM10360 chapter 32 and the vectors in
 * research round2-uart-rescue.md §1.5 and §1.8. */
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "harness.h"
#include "proto/lpcisp.h"

static void
check_fmt(enum lpcisp_op op, uint32_t a, uint32_t b, uint32_t c, const char *want)
{
	struct lpcisp_cmd cmd = {op, a, b, c};
	char buf[LPCISP_LINE_MAX];
	int r = lpcisp_format(&cmd, buf, sizeof(buf));

	if (!want) {
		CHECK_EQ_INT(r, -EINVAL);
		return;
	}
	CHECK_EQ_INT(r, (int)strlen(want));
	CHECK_STREQ(buf, want);
}

static void
test_format(void)
{
	char small[4];
	struct lpcisp_cmd c = {LPCISP_OP_COPY, 0x1000, LPCISP_RAM_BUFFER, 4096};

	check_fmt(LPCISP_OP_UNLOCK, 0, 0, 0, "U 23130\r\n");
	check_fmt(LPCISP_OP_ECHO, 0, 0, 0, "A 0\r\n");
	check_fmt(LPCISP_OP_ECHO, 2, 0, 0, NULL);
	check_fmt(LPCISP_OP_PREPARE, 0, 3, 0, "P 0 3\r\n");
	check_fmt(LPCISP_OP_PREPARE, 3, 0, 0, NULL);
	check_fmt(LPCISP_OP_ERASE, 0, 30, 0, NULL); /* LPC1769 has sectors 0-29 */
	check_fmt(LPCISP_OP_ERASE, 1, 3, 0, "E 1 3\r\n");
	/* lpc21isp's own lines (research §1.10): W to 0x10000200 and C of a whole 4 KiB */
	check_fmt(LPCISP_OP_WRITE, LPCISP_RAM_BUFFER, 4140, 0, "W 268435968 4140\r\n");
	check_fmt(LPCISP_OP_WRITE, LPCISP_RAM_BUFFER + 2, 4, 0, NULL);
	check_fmt(LPCISP_OP_WRITE, LPCISP_RAM_BUFFER, 6, 0, NULL);
	check_fmt(LPCISP_OP_COPY, 0, LPCISP_RAM_BUFFER, 4096, "C 0 268435968 4096\r\n");
	check_fmt(LPCISP_OP_COPY, 0x80, LPCISP_RAM_BUFFER, 256, NULL);	 /* not 256-aligned */
	check_fmt(LPCISP_OP_COPY, 0x100, LPCISP_RAM_BUFFER, 2048, NULL); /* count not allowed */
	check_fmt(LPCISP_OP_READ, 0x3000, 4096, 0, "R 12288 4096\r\n");
	check_fmt(LPCISP_OP_GO, 0, 0, 0, "G 0 T\r\n");
	check_fmt(LPCISP_OP_PART_ID, 0, 0, 0, "J\r\n");
	check_fmt(LPCISP_OP_SERIAL, 0, 0, 0, "N\r\n");
	check_fmt(LPCISP_OP_BOOT_VERSION, 0, 0, 0, "K\r\n");
	check_fmt(LPCISP_OP_BAUD, 115200, 1, 0, "B 115200 1\r\n");
	check_fmt(LPCISP_OP_BAUD, 115200, 3, 0, NULL);
	check_fmt(LPCISP_OP_COMPARE, 0x1000, LPCISP_RAM_BUFFER, 4096, "M 4096 268435968 4096\r\n");
	CHECK_EQ_INT(lpcisp_format(&c, small, sizeof(small)), -ENOBUFS);
	CHECK_EQ_INT(lpcisp_format_crystal(12000, small, sizeof(small)), -ENOBUFS);
	{
		char buf[16];

		CHECK_EQ_INT(lpcisp_format_crystal(12000, buf, sizeof(buf)), 7);
		CHECK_STREQ(buf, "12000\r\n");
	}
	CHECK_EQ_INT(lpcisp_reply_lines(LPCISP_OP_PART_ID), 1);
	CHECK_EQ_INT(lpcisp_reply_lines(LPCISP_OP_BOOT_VERSION), 2);
	CHECK_EQ_INT(lpcisp_reply_lines(LPCISP_OP_SERIAL), 4);
	CHECK_EQ_INT(lpcisp_reply_lines(LPCISP_OP_ERASE), 0);
}

static void
test_lines(void)
{
	char line[LPCISP_LINE_MAX];
	size_t skip;
	const char *s = "\r\nSynchronized\r\nOK\r\n";
	const uint8_t *b = (const uint8_t *)s;
	int r = lpcisp_line_next(b, strlen(s), line, sizeof(line), &skip);

	CHECK_EQ_INT(r, 15);
	CHECK_STREQ(line, "Synchronized");
	r = lpcisp_line_next(b + 15, strlen(s) - 15, line, sizeof(line), &skip);
	CHECK_EQ_INT(r, 4);	 /* "\nOK\r" */
	CHECK_STREQ(line, "OK"); /* the LF left over from the CR LF is skipped */
	/* real ROMs echo LF as CR LF or add LFs; XON/XOFF may sit anywhere */
	{
		static const uint8_t q[] = "\n\n\r0\x13\x11\r\n";

		r = lpcisp_line_next(q, sizeof(q) - 1, line, sizeof(line), &skip);
		CHECK_EQ_INT(r, 7);
		CHECK_STREQ(line, "0");
		CHECK_EQ_INT(lpcisp_parse_rc(line), 0);
	}
	r = lpcisp_line_next((const uint8_t *)"\r\nOK", 4, line, sizeof(line), &skip);
	CHECK_EQ_INT(r, 0);
	CHECK_EQ_INT(skip, 2);
	{
		uint8_t junk[200];

		memset(junk, 'x', sizeof(junk));
		r = lpcisp_line_next(junk, sizeof(junk), line, sizeof(line), &skip);
		CHECK_EQ_INT(r, -EMSGSIZE);
		CHECK(skip > 0 && skip <= sizeof(junk));
	}
	CHECK_EQ_INT(lpcisp_parse_rc("19"), 19);
	CHECK_EQ_INT(lpcisp_parse_rc("9"), 9);
	CHECK_EQ_INT(lpcisp_parse_rc(""), -EINVAL);
	CHECK_EQ_INT(lpcisp_parse_rc("1234"), -EINVAL);
	CHECK_EQ_INT(lpcisp_parse_rc("OK"), -EINVAL);
	CHECK_EQ_INT(lpcisp_parse_rc("-1"), -EINVAL);
	{
		uint32_t v = 0;

		CHECK_EQ_INT(lpcisp_parse_u32("638664503", &v), 0);
		CHECK_EQ_INT(v, LPCISP_PART_LPC1769);
		CHECK_EQ_INT(lpcisp_parse_u32("4294967295", &v), 0);
		CHECK_EQ_INT(v, 0xffffffffu);
		CHECK_EQ_INT(lpcisp_parse_u32("4294967296", &v), -EINVAL);
		CHECK_EQ_INT(lpcisp_parse_u32("12a", &v), -EINVAL);
	}
	CHECK_STREQ(lpcisp_rc_name(9), "SECTOR_NOT_PREPARED_FOR_WRITE_OPERATION");
	CHECK_STREQ(lpcisp_rc_name(19), "CODE_READ_PROTECTION_ENABLED");
	CHECK_STREQ(lpcisp_rc_name(20), "unknown return code");
	CHECK_STREQ(lpcisp_part_name(637615927u), "LPC1768");
	CHECK(lpcisp_part_name(0x12345678u) == NULL);
}

static void
check_uu(const uint8_t *data, size_t n, const char *want)
{
	char line[LPCISP_UU_LINE_MAX];
	uint8_t back[LPCISP_UU_LINE_BYTES];
	int r = lpcisp_uu_encode_line(data, n, line, sizeof(line));

	CHECK_EQ_INT(r, (int)strlen(want) + 2);
	CHECK(strncmp(line, want, strlen(want)) == 0 && strcmp(line + strlen(want), "\r\n") == 0);
	line[strlen(want)] = '\0';
	CHECK_EQ_INT(lpcisp_uu_decode_line(line, back, sizeof(back)), (int)n);
	CHECK(memcmp(back, data, n) == 0);
}

static void
test_uu(void)
{
	static const uint8_t zeros[3] = {0, 0, 0};
	static const uint8_t four[4] = {1, 2, 3, 4};
	uint8_t full[45], back[45];
	char line[LPCISP_UU_LINE_MAX];

	/* research §1.5 vectors */
	check_uu((const uint8_t *)"Cat", 3, "#0V%T");
	check_uu(zeros, 3, "#````");
	check_uu(four, 4, "$`0(#!```");
	for (size_t i = 0; i < sizeof(full); i++)
		full[i] = (uint8_t)(i * 37 + 11);
	CHECK_EQ_INT(lpcisp_uu_encode_line(full, 45, line, sizeof(line)), 63);
	CHECK(line[0] == 'M'); /* 45 bytes: length char 0x20 + 45 */
	line[61] = '\0';
	CHECK_EQ_INT(lpcisp_uu_decode_line(line, back, sizeof(back)), 45);
	CHECK(memcmp(full, back, 45) == 0);
	/* zero may come as ' ' from other encoders */
	CHECK_EQ_INT(lpcisp_uu_decode_line("#    ", back, sizeof(back)), 3);
	CHECK(memcmp(back, zeros, 3) == 0);
	CHECK_EQ_INT(lpcisp_uu_encode_line(full, 46, line, sizeof(line)), -EINVAL);
	CHECK_EQ_INT(lpcisp_uu_encode_line(full, 0, line, sizeof(line)), -EINVAL);
	CHECK_EQ_INT(lpcisp_uu_encode_line(full, 45, line, 20), -ENOBUFS);
	CHECK_EQ_INT(lpcisp_uu_decode_line("", back, sizeof(back)), -EINVAL);
	CHECK_EQ_INT(lpcisp_uu_decode_line("#0V%", back, sizeof(back)), -EINVAL);
	CHECK_EQ_INT(lpcisp_uu_decode_line("#0V%T!", back, sizeof(back)), -EINVAL);
	CHECK_EQ_INT(lpcisp_uu_decode_line("#0V\x7fT", back, sizeof(back)), -EINVAL);
	CHECK_EQ_INT(lpcisp_uu_decode_line("#0V%T", back, 2), -ENOBUFS);
}

/* 4096 bytes = 91 full lines + 1 byte: checksum lines after lines 20, 40, 60, 80 and 92. */
static void
test_blocks(void)
{
	static uint8_t data[4096], got[4096];
	struct lpcisp_uu_writer w;
	struct lpcisp_uu_reader r;
	char line[LPCISP_UU_LINE_MAX];
	unsigned data_lines = 0, sums = 0, resends = 0, done = 0;
	bool is_sum;
	int n;

	for (size_t i = 0; i < sizeof(data); i++)
		data[i] = (uint8_t)(i ^ (i >> 8));
	lpcisp_uu_writer_init(&w, data, sizeof(data));
	lpcisp_uu_reader_init(&r, got, sizeof(got));
	while ((n = lpcisp_uu_writer_next(&w, line, sizeof(line), &is_sum)) > 0) {
		int ev;

		CHECK(line[n - 2] == '\r' && line[n - 1] == '\n');
		line[n - 2] = '\0';
		CHECK_EQ_INT(is_sum, lpcisp_uu_reader_want_checksum(&r));
		if (is_sum && sums == 1 && resends == 0)
			line[0] = line[0] == '1' ? '2' : '1'; /* corrupt the second checksum once */
		ev = lpcisp_uu_reader_feed(&r, line);
		if (!is_sum) {
			CHECK_EQ_INT(ev, LPCISP_UU_DATA);
			data_lines++;
			continue;
		}
		CHECK_EQ_INT(lpcisp_uu_writer_next(&w, line, sizeof(line), NULL), -EAGAIN);
		if (ev == LPCISP_UU_BLOCK_BAD) {
			resends++;
			lpcisp_uu_writer_resend(&w);
			continue;
		}
		sums++;
		done += ev == LPCISP_UU_DONE;
		lpcisp_uu_writer_ack(&w);
	}
	CHECK_EQ_INT(n, 0);
	CHECK_EQ_INT(sums, 5);
	CHECK_EQ_INT(resends, 1);
	CHECK_EQ_INT(done, 1);
	CHECK_EQ_INT(data_lines, 92 + 20);
	CHECK(memcmp(data, got, sizeof(data)) == 0);
	/* a data line beyond the announced count is out of step */
	lpcisp_uu_reader_init(&r, got, 3);
	CHECK_EQ_INT(lpcisp_uu_reader_feed(&r, "$`0(#!```"), -EINVAL);
	CHECK_EQ_INT(lpcisp_uu_reader_feed(&r, "#0V%T"), LPCISP_UU_DATA);
	CHECK(lpcisp_uu_reader_want_checksum(&r));
	CHECK_EQ_INT(lpcisp_uu_reader_feed(&r, "x"), -EINVAL);
	CHECK_EQ_INT(lpcisp_uu_reader_feed(&r, "280"), LPCISP_UU_DONE); /* 67 + 97 + 116 */
}

static void
test_vector_checksum(void)
{
	/* research §1.8: an NXP forum vector table; word 7 must be 0xEFFFF4E6 */
	static const uint32_t words[7] = {0x10000268, 0x00000169, 0x00000171, 0x00000173,
					  0x00000175, 0x00000177, 0x00000179};
	uint8_t img[0x300];

	memset(img, 0xff, sizeof(img));
	for (size_t i = 0; i < 7; i++)
		for (size_t k = 0; k < 4; k++)
			img[i * 4 + k] = (uint8_t)(words[i] >> (8 * k));
	CHECK_EQ_INT(lpcisp_vector_checksum(img, sizeof(img)), 0xEFFFF4E6u);
	CHECK(!lpcisp_vector_valid(img, sizeof(img)));
	CHECK_EQ_INT(lpcisp_vector_patch(img, sizeof(img)), 0);
	CHECK(lpcisp_vector_valid(img, sizeof(img)));
	CHECK(img[0x1c] == 0xe6 && img[0x1d] == 0xf4 && img[0x1e] == 0xff && img[0x1f] == 0xef);
	CHECK_EQ_INT(lpcisp_vector_patch(img, 31), -EINVAL);
	CHECK(!lpcisp_vector_valid(img, 31));
	/* CRP words at 0x2FC (UM10360 §32.6) */
	{
		const char *name = "x";

		CHECK_EQ_INT(lpcisp_crp_word(img, sizeof(img), &name), 0);
		CHECK(name == NULL);
		img[0x2fc] = 0x65;
		img[0x2fd] = 0x87;
		img[0x2fe] = 0x21;
		img[0x2ff] = 0x43;
		CHECK_EQ_INT(lpcisp_crp_word(img, sizeof(img), &name), LPCISP_CRP3);
		CHECK_STREQ(name, "CRP3");
		CHECK_EQ_INT(lpcisp_crp_word(img, 0x2ff, &name), 0);
		img[0x2fc] = 0x78;
		img[0x2fd] = 0x56;
		img[0x2fe] = 0x34;
		img[0x2ff] = 0x12;
		CHECK_EQ_INT(lpcisp_crp_word(img, sizeof(img), &name), LPCISP_CRP1);
	}
}

static void
test_sectors(void)
{
	uint32_t start = 0, size = 0;

	CHECK_EQ_INT(lpcisp_sector_of(0), 0);
	CHECK_EQ_INT(lpcisp_sector_of(0x3fff), 3);
	CHECK_EQ_INT(lpcisp_sector_of(0x4000), 4);
	CHECK_EQ_INT(lpcisp_sector_of(0xffff), 15);
	CHECK_EQ_INT(lpcisp_sector_of(0x10000), 16);
	CHECK_EQ_INT(lpcisp_sector_of(0x7ffff), 29);
	CHECK_EQ_INT(lpcisp_sector_of(0x80000), -ERANGE);
	CHECK_EQ_INT(lpcisp_sector_range(3, &start, &size), 0);
	CHECK_EQ_INT(start, 0x3000);
	CHECK_EQ_INT(size, 0x1000);
	CHECK_EQ_INT(lpcisp_sector_range(17, &start, &size), 0);
	CHECK_EQ_INT(start, 0x18000);
	CHECK_EQ_INT(size, 0x8000);
	CHECK_EQ_INT(lpcisp_sector_range(30, &start, &size), -ERANGE);
}

int
main(void)
{
	test_format();
	test_lines();
	test_uu();
	test_blocks();
	test_vector_checksum();
	test_sectors();
	TEST_DONE();
}
