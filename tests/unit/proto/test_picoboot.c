/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Unit tests of the PICOBOOT codec: command blocks byte for byte as pico-sdk's struct
 * picoboot_cmd lays them out (protocols.md §5.2), the bootrom's refusals, status replies,
 * and the boot2 CRC-32/MPEG-2 check value. */
#include <stdint.h>
#include <string.h>

#include "harness.h"
#include "proto/picoboot.h"

static void
test_blocks(void)
{
	uint8_t b[PICOBOOT_CMD_SIZE];
	struct picoboot_cmd c;
	/* WRITE 0x10000100+256, token 7: magic, token, id 0x05, bCmdSize 8, reserved,
	 * dTransferLength 256, dAddr, dSize, zero padding */
	static const uint8_t write_vec[PICOBOOT_CMD_SIZE] = {
	    0x0b, 0xd1, 0x1f, 0x43, 7,	  0,	0, 0, 0x05, 8, 0, 0, 0x00, 0x01, 0, 0,
	    0x00, 0x01, 0x00, 0x10, 0x00, 0x01, 0, 0, 0,    0, 0, 0, 0,	   0,	 0, 0};

	CHECK_EQ_INT(picoboot_encode_range(b, 7, PICOBOOT_WRITE, 0x10000100u, 256), 0);
	CHECK(memcmp(b, write_vec, sizeof(b)) == 0);
	CHECK_EQ_INT(picoboot_decode_cmd(b, sizeof(b), &c), PICOBOOT_OK);
	CHECK_EQ_INT(c.id, PICOBOOT_WRITE);
	CHECK_EQ_INT(c.addr, 0x10000100u);
	CHECK_EQ_INT(c.size, 256);
	CHECK_EQ_INT(c.transfer_length, 256);
	CHECK_EQ_INT(c.token, 7);

	/* READ has the IN bit and a data phase; FLASH_ERASE has none */
	CHECK_EQ_INT(picoboot_encode_range(b, 1, PICOBOOT_READ, 0x10000000u, 4096), 0);
	CHECK(picoboot_cmd_is_in(b[8]));
	CHECK_EQ_INT(b[12] | b[13] << 8, 4096);
	CHECK_EQ_INT(picoboot_encode_range(b, 2, PICOBOOT_FLASH_ERASE, 0x10001000u, 4096), 0);
	CHECK(!picoboot_cmd_is_in(b[8]));
	CHECK_EQ_INT(b[12] | b[13] << 8, 0);
	CHECK_EQ_INT(picoboot_decode_cmd(b, sizeof(b), &c), PICOBOOT_OK);

	/* REBOOT pc=0 sp=0x20042000 delay 500 as Klipper's rp2040_flash sends it */
	picoboot_encode_reboot(b, 3, 0, PICOBOOT_SRAM_END, 500);
	CHECK_EQ_INT(b[9], 12);
	CHECK_EQ_INT(picoboot_decode_cmd(b, sizeof(b), &c), PICOBOOT_OK);
	CHECK_EQ_INT(c.pc, 0);
	CHECK_EQ_INT(c.sp, PICOBOOT_SRAM_END);
	CHECK_EQ_INT(c.delay_ms, 500);

	picoboot_encode_exclusive(b, 4, PICOBOOT_EXCLUSIVE_AND_EJECT);
	CHECK_EQ_INT(picoboot_decode_cmd(b, sizeof(b), &c), PICOBOOT_OK);
	CHECK_EQ_INT(c.exclusive, 2);
	picoboot_encode_simple(b, 5, PICOBOOT_EXIT_XIP);
	CHECK_EQ_INT(b[9], 0);
	CHECK_EQ_INT(picoboot_decode_cmd(b, sizeof(b), &c), PICOBOOT_OK);
}

static void
test_refusals(void)
{
	uint8_t b[PICOBOOT_CMD_SIZE];
	struct picoboot_cmd c = {0};

	/* the builder refuses what the bootrom would */
	CHECK(picoboot_encode_range(b, 1, PICOBOOT_FLASH_ERASE, 0x10000100u, 4096) < 0);
	CHECK(picoboot_encode_range(b, 1, PICOBOOT_WRITE, 0x10000080u, 256) < 0);
	CHECK(picoboot_encode_range(b, 1, PICOBOOT_WRITE, 0x08000000u, 256) < 0);
	CHECK(picoboot_encode_range(b, 1, PICOBOOT_EXIT_XIP, 0x10000000u, 256) < 0);
	/* the range must not wrap past the end of the XIP window */
	CHECK(picoboot_encode_range(b, 1, PICOBOOT_READ, 0x10fff000u, 0x2000) < 0);
	CHECK(picoboot_encode_range(b, 1, PICOBOOT_READ, 0xfffff000u, 0x2000) < 0);
	/* writes to SRAM need no page alignment */
	CHECK_EQ_INT(picoboot_encode_range(b, 1, PICOBOOT_WRITE, 0x20000004u, 12), 0);

	/* decoding: magic, length, unknown id, argument size, transfer length */
	picoboot_encode_simple(b, 1, PICOBOOT_EXIT_XIP);
	CHECK_EQ_INT(picoboot_decode_cmd(b, 31, &c), PICOBOOT_UNKNOWN_CMD);
	b[0] ^= 1;
	CHECK_EQ_INT(picoboot_decode_cmd(b, sizeof(b), &c), PICOBOOT_UNKNOWN_CMD);
	b[0] ^= 1;
	b[8] = 0x7f;
	CHECK_EQ_INT(picoboot_decode_cmd(b, sizeof(b), &c), PICOBOOT_UNKNOWN_CMD);
	b[8] = PICOBOOT_EXIT_XIP;
	b[9] = 4;
	CHECK_EQ_INT(picoboot_decode_cmd(b, sizeof(b), &c), PICOBOOT_INVALID_CMD_LENGTH);
	CHECK_EQ_INT(picoboot_encode_range(b, 1, PICOBOOT_WRITE, 0x10000000u, 256), 0);
	b[12] = 0x80; /* dTransferLength 384 != dSize 256 */
	CHECK_EQ_INT(picoboot_decode_cmd(b, sizeof(b), &c), PICOBOOT_INVALID_TRANSFER_LENGTH);

	c = (struct picoboot_cmd){.id = PICOBOOT_FLASH_ERASE, .addr = 0x11000000u, .size = 4096};
	CHECK_EQ_INT(picoboot_check_range(&c), PICOBOOT_INVALID_ADDRESS);
	c.addr = 0x10000800u;
	CHECK_EQ_INT(picoboot_check_range(&c), PICOBOOT_BAD_ALIGNMENT);
}

static void
test_status(void)
{
	struct picoboot_status_reply s = {.token = 9,
					  .status = PICOBOOT_BAD_ALIGNMENT,
					  .cmd_id = PICOBOOT_WRITE,
					  .in_progress = false};
	struct picoboot_status_reply r;
	uint8_t b[PICOBOOT_STATUS_SIZE];

	picoboot_encode_status(b, &s);
	CHECK_EQ_INT(b[4], 5);
	CHECK_EQ_INT(b[8], PICOBOOT_WRITE);
	CHECK_EQ_INT(picoboot_decode_status(b, sizeof(b), &r), 0);
	CHECK_EQ_INT(r.token, 9);
	CHECK_EQ_INT(r.status, PICOBOOT_BAD_ALIGNMENT);
	CHECK(picoboot_decode_status(b, 15, &r) < 0);
	CHECK_STREQ(picoboot_status_to_string(PICOBOOT_BAD_ALIGNMENT), "bad alignment");
	CHECK_STREQ(picoboot_status_to_string(PICOBOOT_INVALID_ADDRESS), "invalid address");
	CHECK_STREQ(picoboot_status_to_string(99), "unknown status");
}

static void
test_crc(void)
{
	uint8_t boot2[256];

	/* CRC-32/MPEG-2 check value (protocols.md §5.2) */
	CHECK_EQ_INT(picoboot_crc32((const uint8_t *)"123456789", 9, 0xFFFFFFFFu), 0x0376E6E7u);
	memset(boot2, 0, sizeof(boot2));
	for (unsigned i = 0; i < 252; i++)
		boot2[i] = (uint8_t)(i * 7 + 3);
	{
		uint32_t crc = picoboot_crc32(boot2, 252, 0xFFFFFFFFu);

		boot2[252] = (uint8_t)crc;
		boot2[253] = (uint8_t)(crc >> 8);
		boot2[254] = (uint8_t)(crc >> 16);
		boot2[255] = (uint8_t)(crc >> 24);
	}
	CHECK(picoboot_boot2_valid(boot2));
	boot2[17] ^= 0x40;
	CHECK(!picoboot_boot2_valid(boot2));
	memset(boot2, 0xff, sizeof(boot2)); /* erased flash: no boot2 */
	CHECK(!picoboot_boot2_valid(boot2));
}

int
main(void)
{
	test_blocks();
	test_refusals();
	test_status();
	test_crc();
	TEST_DONE();
}
