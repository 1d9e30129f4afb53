/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Unit tests of the AN3155 codec against the byte sequences of research
 * round2-uart-rescue.md §2.3 (stm32flash 0.7 host bytes, F407 v3.1 replies). */
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "harness.h"
#include "proto/an3155.h"

static void
test_frames(void)
{
	uint8_t b[2 + 256 + 1], data[256];
	uint32_t addr = 0;
	size_t n = 0;
	const uint8_t *d = NULL;

	an3155_cmd(AN3155_CMD_EXT_ERASE, b);
	CHECK(b[0] == 0x44 && b[1] == 0xbb);
	CHECK(an3155_cmd_check(b));
	b[1] = 0xbc;
	CHECK(!an3155_cmd_check(b));
	an3155_addr(0x08008000u, b); /* §2.3 worked example */
	CHECK(b[0] == 0x08 && b[1] == 0x00 && b[2] == 0x80 && b[3] == 0x00 && b[4] == 0x88);
	CHECK_EQ_INT(an3155_parse_addr(b, &addr), 0);
	CHECK_EQ_INT(addr, 0x08008000u);
	an3155_addr(0x08000000u, b);
	CHECK(b[4] == 0x08);
	b[4] ^= 1;
	CHECK_EQ_INT(an3155_parse_addr(b, &addr), -EBADMSG);
	CHECK_EQ_INT(an3155_read_len(256, b), 0);
	CHECK(b[0] == 0xff && b[1] == 0x00);
	CHECK_EQ_INT(an3155_parse_read_len(b, &n), 0);
	CHECK_EQ_INT(n, 256);
	CHECK_EQ_INT(an3155_read_len(0, b), -EINVAL);
	CHECK_EQ_INT(an3155_read_len(257, b), -EINVAL);
	for (size_t i = 0; i < sizeof(data); i++)
		data[i] = (uint8_t)(i * 7);
	CHECK_EQ_INT(an3155_write_frame(data, 64, b, sizeof(b)), 66);
	CHECK(b[0] == 0x3f); /* §2.3: the last 64-byte block goes out as 3F */
	{
		uint8_t x = 0x3f;

		for (size_t i = 0; i < 64; i++)
			x ^= data[i];
		CHECK(b[65] == x);
	}
	CHECK_EQ_INT(an3155_parse_write_frame(b, 65, &d, &n), 0);
	CHECK_EQ_INT(an3155_parse_write_frame(b, 66, &d, &n), 66);
	CHECK_EQ_INT(n, 64);
	CHECK(d == b + 1);
	b[10] ^= 0x40;
	CHECK_EQ_INT(an3155_parse_write_frame(b, 66, &d, &n), -EBADMSG);
	CHECK_EQ_INT(an3155_write_frame(data, 6, b, sizeof(b)), -EINVAL);
	CHECK_EQ_INT(an3155_write_frame(data, 256, b, 100), -ENOBUFS);
	CHECK_EQ_INT(an3155_write_frame(data, 256, b, sizeof(b)), 258);
	CHECK(b[0] == 0xff);
}

static void
test_erase(void)
{
	static const uint8_t want[] = {0x00, 0x02, 0x00, 0x00, 0x00, 0x01, 0x00, 0x02, 0x01};
	uint16_t pages[3] = {0, 1, 2}, got[8];
	uint8_t b[16];
	size_t n = 9;
	uint16_t special = 1;

	/* §2.3: stm32flash erased sectors 0, 1, 2 with exactly these bytes */
	CHECK_EQ_INT(an3155_ext_erase_frame(pages, 3, b, sizeof(b)), 9);
	CHECK(memcmp(b, want, sizeof(want)) == 0);
	CHECK_EQ_INT(an3155_parse_ext_erase(b, 8, got, 8, &n, &special), 0);
	CHECK_EQ_INT(an3155_parse_ext_erase(b, 9, got, 8, &n, &special), 9);
	CHECK_EQ_INT(n, 3);
	CHECK_EQ_INT(special, 0);
	CHECK(got[0] == 0 && got[1] == 1 && got[2] == 2);
	CHECK_EQ_INT(an3155_parse_ext_erase(b, 9, got, 2, &n, &special), -E2BIG);
	b[8] ^= 1;
	CHECK_EQ_INT(an3155_parse_ext_erase(b, 9, got, 8, &n, &special), -EBADMSG);
	an3155_ext_erase_special(AN3155_EXT_ERASE_MASS, b);
	CHECK(b[0] == 0xff && b[1] == 0xff && b[2] == 0x00);
	CHECK_EQ_INT(an3155_parse_ext_erase(b, 3, got, 8, &n, &special), 3);
	CHECK_EQ_INT(n, 0);
	CHECK_EQ_INT(special, 0xffff);
	an3155_ext_erase_special(AN3155_EXT_ERASE_BANK1, b);
	CHECK(b[0] == 0xff && b[1] == 0xfe && b[2] == 0x01);
	pages[1] = 0xffff;
	CHECK_EQ_INT(an3155_ext_erase_frame(pages, 3, b, sizeof(b)), -EINVAL);
	CHECK_EQ_INT(an3155_ext_erase_frame(pages, 0, b, sizeof(b)), -EINVAL);
	CHECK_EQ_INT(an3155_ext_erase_frame(pages, 3, b, 5), -ENOBUFS);
	{
		static const uint8_t lp[2] = {4, 5};

		CHECK_EQ_INT(an3155_erase_frame(lp, 2, b, sizeof(b)), 4);
		CHECK(b[0] == 1 && b[1] == 4 && b[2] == 5 && b[3] == (1 ^ 4 ^ 5));
	}
}

static void
test_replies(void)
{
	/* §2.3 replies after the first 79 */
	static const uint8_t get[] = {0x0b, 0x31, 0x00, 0x01, 0x02, 0x11, 0x21,
				      0x31, 0x44, 0x63, 0x73, 0x82, 0x92, 0x79};
	static const uint8_t ver[] = {0x31, 0x00, 0x00, 0x79};
	static const uint8_t id[] = {0x01, 0x04, 0x13, 0x79};
	struct an3155_info info;
	uint8_t v = 0, bad[sizeof(get)];
	uint16_t pid = 0;

	CHECK_EQ_INT(an3155_parse_get(get, sizeof(get) - 1, &info), 0);
	CHECK_EQ_INT(an3155_parse_get(get, sizeof(get), &info), 14);
	CHECK_EQ_INT(info.version, 0x31);
	CHECK_EQ_INT(info.n_cmds, 11);
	CHECK(an3155_has_cmd(&info, AN3155_CMD_EXT_ERASE));
	CHECK(!an3155_has_cmd(&info, AN3155_CMD_ERASE));
	memcpy(bad, get, sizeof(get));
	bad[13] = AN3155_NACK;
	CHECK_EQ_INT(an3155_parse_get(bad, sizeof(bad), &info), -EPROTO);
	CHECK_EQ_INT(an3155_parse_get_version(ver, 3, &v), 0);
	CHECK_EQ_INT(an3155_parse_get_version(ver, 4, &v), 4);
	CHECK_EQ_INT(v, 0x31);
	CHECK_EQ_INT(an3155_parse_get_id(id, sizeof(id), &pid), 4);
	CHECK_EQ_INT(pid, 0x413);
	CHECK_STREQ(an3155_pid_name(pid), "STM32F405/407/415/417");
	CHECK_STREQ(an3155_pid_name(0x421), "STM32F446");
	CHECK(an3155_pid_name(0x999) == NULL);
	{
		static const uint8_t id3[] = {0x02, 0x04, 0x13, 0x00, 0x79};

		CHECK_EQ_INT(an3155_parse_get_id(id3, sizeof(id3), &pid), -EPROTO);
	}
}

int
main(void)
{
	test_frames();
	test_erase();
	test_replies();
	TEST_DONE();
}
