/* SPDX-License-Identifier: GPL-2.0-or-later */
/* test_dfu: DFU/DfuSe codec against the real ROM strings and descriptors of
 * protocols.md §3.1 and §3.5. */
#include <errno.h>

#include "proto/dfu.h"
#include "harness.h"

static void
test_status(void)
{
	const uint8_t busy[6] = {0x00, 0x64, 0x00, 0x00, 0x04, 0x00};
	const uint8_t big[6] = {0x0a, 0x10, 0x27, 0x01, 0x0a, 0x05};
	struct dfu_status_reply s;
	uint8_t out[6];

	CHECK_EQ_INT(dfu_status_decode(busy, sizeof busy, &s), 0);
	CHECK_EQ_INT(s.status, DFU_STATUS_OK);
	CHECK_EQ_INT(s.poll_timeout_ms, 100);
	CHECK_EQ_INT(s.state, DFU_STATE_DNBUSY);
	CHECK_EQ_INT(dfu_status_decode(big, sizeof big, &s), 0);
	CHECK_EQ_INT(s.poll_timeout_ms, 0x012710); /* 24-bit little-endian */
	CHECK_EQ_INT(s.status, DFU_STATUS_ERR_FIRMWARE);
	CHECK_EQ_INT(s.state, DFU_STATE_ERROR);
	CHECK_EQ_INT(s.istring, 5);
	CHECK_EQ_INT(dfu_status_decode(big, 5, &s), -EBADMSG);
	dfu_status_encode(&s, out);
	CHECK(memcmp(out, big, 6) == 0);
	s.poll_timeout_ms = 0x12345678;
	dfu_status_encode(&s, out);
	CHECK_EQ_INT(out[1], 0xff);
	CHECK_EQ_INT(out[3], 0xff);
	CHECK_EQ_INT(out[4], DFU_STATE_ERROR);

	CHECK_STREQ(dfu_state_to_string(DFU_STATE_DNLOAD_IDLE), "dfuDNLOAD-IDLE");
	CHECK_STREQ(dfu_state_to_string(DFU_STATE_ERROR), "dfuERROR");
	CHECK_STREQ(dfu_state_to_string(11), "unknown");
	CHECK_STREQ(dfu_status_to_string(DFU_STATUS_ERR_STALLEDPKT), "errSTALLEDPKT");
	CHECK_STREQ(dfu_status_to_string(DFU_STATUS_ERR_TARGET), "errTARGET");
	CHECK_STREQ(dfu_status_to_string(16), "unknown");
}

static void
test_func_desc(void)
{
	/* STM32F4 ROM: 0x0B, 255 ms, 2048, DfuSe 1.1a (§3.1), after an unrelated descriptor */
	const uint8_t f4[] = {0x05, 0x24, 0x00, 0x10, 0x01, 0x09, 0x21,
			      0x0b, 0xff, 0x00, 0x00, 0x08, 0x1a, 0x01};
	const uint8_t dfu10[] = {0x07, 0x21, 0x03, 0xe8, 0x03, 0x00, 0x02};
	const uint8_t none[] = {0x05, 0x24, 0x00, 0x10, 0x01};
	const uint8_t zero_len[] = {0x00, 0x21, 0x0b};
	const uint8_t over[] = {0x09, 0x21, 0x0b, 0xff};
	const uint8_t short_func[] = {0x05, 0x21, 0x0b, 0xff, 0x00};
	struct dfu_func_desc d;

	CHECK_EQ_INT(dfu_func_desc_parse(f4, sizeof f4, &d), 0);
	CHECK_EQ_INT(d.attributes,
		     DFU_ATTR_CAN_DNLOAD | DFU_ATTR_CAN_UPLOAD | DFU_ATTR_WILL_DETACH);
	CHECK_EQ_INT(d.detach_timeout, 255);
	CHECK_EQ_INT(d.transfer_size, 2048);
	CHECK_EQ_INT(d.bcd_dfu, DFU_BCD_DFUSE);
	CHECK_EQ_INT(dfu_func_desc_parse(dfu10, sizeof dfu10, &d), 0);
	CHECK_EQ_INT(d.transfer_size, 512);
	CHECK_EQ_INT(d.detach_timeout, 1000);
	CHECK_EQ_INT(d.bcd_dfu, 0x0100);
	CHECK_EQ_INT(dfu_func_desc_parse(none, sizeof none, &d), -ENOENT);
	CHECK_EQ_INT(dfu_func_desc_parse(NULL, 0, &d), -ENOENT);
	CHECK_EQ_INT(dfu_func_desc_parse(zero_len, sizeof zero_len, &d), -EBADMSG);
	CHECK_EQ_INT(dfu_func_desc_parse(over, sizeof over, &d), -EBADMSG);
	CHECK_EQ_INT(dfu_func_desc_parse(short_func, sizeof short_func, &d), -EBADMSG);
	CHECK_EQ_INT(dfu_func_desc_parse(f4, 1, &d), -EBADMSG);
}

static void
test_layout_f4(void)
{
	struct dfu_layout l;
	uint32_t start = 0, size = 0;

	CHECK_EQ_INT(
	    dfu_layout_parse("@Internal Flash  /0x08000000/04*016Kg,01*064Kg,07*128Kg", &l), 0);
	CHECK_STREQ(l.name, "Internal Flash");
	CHECK_EQ_INT(l.n_segments, 3);
	CHECK_EQ_INT(l.segments[0].start, 0x08000000);
	CHECK_EQ_INT(l.segments[0].count, 4);
	CHECK_EQ_INT(l.segments[0].page_size, 16384);
	CHECK_EQ_INT(l.segments[0].flags, DFU_MEM_READABLE | DFU_MEM_ERASABLE | DFU_MEM_WRITABLE);
	CHECK_EQ_INT(l.segments[1].start, 0x08010000);
	CHECK_EQ_INT(l.segments[1].page_size, 65536);
	CHECK_EQ_INT(l.segments[2].start, 0x08020000);
	CHECK_EQ_INT(l.segments[2].count, 7);
	CHECK_EQ_INT(dfu_layout_size(&l), 1024 * 1024);

	CHECK_EQ_INT(dfu_layout_find(&l, 0x08008123, &start, &size), 0);
	CHECK_EQ_INT(start, 0x08008000);
	CHECK_EQ_INT(size, 16384);
	CHECK_EQ_INT(dfu_layout_find(&l, 0x0801ffff, &start, &size), 1);
	CHECK_EQ_INT(start, 0x08010000);
	CHECK_EQ_INT(dfu_layout_find(&l, 0x080fffff, &start, &size), 2);
	CHECK_EQ_INT(start, 0x080e0000);
	CHECK_EQ_INT(size, 131072);
	CHECK_EQ_INT(dfu_layout_find(&l, 0x08100000, &start, &size), -ENOENT);
	CHECK_EQ_INT(dfu_layout_find(&l, 0x07ffffff, NULL, NULL), -ENOENT);
}

static void
test_layout_others(void)
{
	struct dfu_layout l;
	uint32_t start = 0, size = 0;

	/* option bytes: a space multiplier means bytes */
	CHECK_EQ_INT(dfu_layout_parse("@Option Bytes  /0x1FFFC000/01*016 g", &l), 0);
	CHECK_STREQ(l.name, "Option Bytes");
	CHECK_EQ_INT(l.n_segments, 1);
	CHECK_EQ_INT(l.segments[0].start, 0x1fffc000);
	CHECK_EQ_INT(l.segments[0].page_size, 16);
	CHECK_EQ_INT(l.segments[0].flags, 7);

	CHECK_EQ_INT(dfu_layout_parse("@OTP Memory /0x1FFF7800/01*512 g,01*016 g", &l), 0);
	CHECK_STREQ(l.name, "OTP Memory");
	CHECK_EQ_INT(l.n_segments, 2);
	CHECK_EQ_INT(l.segments[1].start, 0x1fff7a00);
	CHECK_EQ_INT(l.segments[1].page_size, 16);
	CHECK_EQ_INT(dfu_layout_size(&l), 528);

	/* the Device Feature quirk: forced to 'e' (read + write) whatever the string says */
	CHECK_EQ_INT(dfu_layout_parse("@Device Feature/0xFFFF0000/01*004 g", &l), 0);
	CHECK_STREQ(l.name, "Device Feature");
	CHECK_EQ_INT(l.segments[0].flags, DFU_MEM_READABLE | DFU_MEM_WRITABLE);
	CHECK_EQ_INT(l.segments[0].page_size, 4);
	CHECK_EQ_INT(dfu_layout_find(&l, 0xffff0003, &start, &size), 0);
	CHECK_EQ_INT(dfu_layout_find(&l, 0xffff0004, &start, &size), -ENOENT);

	CHECK_EQ_INT(dfu_layout_parse("@Internal Flash  /0x08000000/128*002Kg", &l), 0);
	CHECK_EQ_INT(l.segments[0].count, 128);
	CHECK_EQ_INT(l.segments[0].page_size, 2048);
	CHECK_EQ_INT(dfu_layout_parse("@Internal Flash  /0x08000000/256*08Kg", &l), 0);
	CHECK_EQ_INT(dfu_layout_size(&l), 2 * 1024 * 1024);
	CHECK_EQ_INT(
	    dfu_layout_parse("@Internal Flash  /0x08000000/04*016Kg,01*064Kg,03*128Kg", &l), 0);
	CHECK_EQ_INT(dfu_layout_size(&l), 512 * 1024);

	/* several regions, 'M' multiplier, letters a..f */
	CHECK_EQ_INT(
	    dfu_layout_parse("@Mix/0x08000000/2*1Ma,/0x20000000/3*4Kb,1*8Bc,1*1d,1*1e,1*1f", &l),
	    0);
	CHECK_EQ_INT(l.n_segments, 6);
	CHECK_EQ_INT(l.segments[0].page_size, 1024 * 1024);
	CHECK_EQ_INT(l.segments[0].flags, DFU_MEM_READABLE);
	CHECK_EQ_INT(l.segments[1].start, 0x20000000);
	CHECK_EQ_INT(l.segments[1].flags, DFU_MEM_ERASABLE);
	CHECK_EQ_INT(l.segments[2].start, 0x20003000);
	CHECK_EQ_INT(l.segments[2].page_size, 8);
	CHECK_EQ_INT(l.segments[2].flags, DFU_MEM_READABLE | DFU_MEM_ERASABLE);
	CHECK_EQ_INT(l.segments[3].flags, DFU_MEM_WRITABLE);
	CHECK_EQ_INT(l.segments[5].flags, DFU_MEM_ERASABLE | DFU_MEM_WRITABLE);
	CHECK_EQ_INT(dfu_layout_find(&l, 0x08180000, &start, &size), 0);
	CHECK_EQ_INT(start, 0x08100000);
	CHECK_EQ_INT(dfu_layout_find(&l, 0x20003004, &start, &size), 2);

	/* errors */
	CHECK_EQ_INT(dfu_layout_parse("Internal Flash/0x08000000/1*1Kg", &l), -EINVAL);
	CHECK_EQ_INT(dfu_layout_parse("@Internal Flash", &l), -EINVAL);
	CHECK_EQ_INT(dfu_layout_parse("@X/0x08000000/", &l), -EINVAL);
	CHECK_EQ_INT(dfu_layout_parse("@X/08000000/1*1Kg", &l), -EINVAL);
	CHECK_EQ_INT(dfu_layout_parse("@X/0x/1*1Kg", &l), -EINVAL);
	CHECK_EQ_INT(dfu_layout_parse("@X/0x08000000/0*1Kg", &l), -EINVAL);
	CHECK_EQ_INT(dfu_layout_parse("@X/0x08000000/1*0Kg", &l), -EINVAL);
	CHECK_EQ_INT(dfu_layout_parse("@X/0x08000000/1Kg", &l), -EINVAL);
	CHECK_EQ_INT(dfu_layout_parse("@X/0x08000000/1*1Kg;", &l), -EINVAL);
	CHECK_EQ_INT(dfu_layout_parse("@X/0x108000000/1*1Kg", &l), -EINVAL);
	CHECK_EQ_INT(dfu_layout_parse("@X/0x08000000/99999999999*1Kg", &l), -EINVAL);
	CHECK_EQ_INT(dfu_layout_parse("@X/0xFFFF0000/17*4Kg", &l), -ERANGE);
	CHECK_EQ_INT(dfu_layout_parse("@X/0xFFFF0000/16*4Kg", &l), 0);
	CHECK_EQ_INT(dfu_layout_parse("@X/0x0/1*4096M", &l), -EINVAL);
	{
		char many[400] = "@X/0x0/";
		for (int i = 0; i < 33; i++)
			strcat(many, "1*1K,");
		CHECK_EQ_INT(dfu_layout_parse(many, &l), -E2BIG);
	}
	/* a long name is truncated, not an error */
	CHECK_EQ_INT(dfu_layout_parse("@A name much longer than the forty-eight bytes we keep "
				      "for it/0x0/1*1Kg",
				      &l),
		     0);
	CHECK_EQ_INT(strlen(l.name), DFU_LAYOUT_NAME_MAX - 1);
}

static void
test_commands(void)
{
	uint8_t b[DFUSE_CMD_LEN];
	const uint8_t set[] = {0x21, 0x00, 0x80, 0x00, 0x08};
	const uint8_t erase[] = {0x41, 0x00, 0x00, 0x02, 0x08};
	uint32_t a = 0;

	CHECK_EQ_INT(dfu_cmd_set_address(b, 0x08008000), 5);
	CHECK(memcmp(b, set, 5) == 0);
	CHECK_EQ_INT(dfu_cmd_erase_page(b, 0x08020000), 5);
	CHECK(memcmp(b, erase, 5) == 0);
	CHECK_EQ_INT(dfu_cmd_mass_erase(b), 1);
	CHECK_EQ_INT(b[0], 0x41);

	CHECK_EQ_INT(dfu_block_address(2, 2048, 0x08008000, &a), 0);
	CHECK_EQ_INT(a, 0x08008000);
	CHECK_EQ_INT(dfu_block_address(5, 2048, 0x08008000, &a), 0);
	CHECK_EQ_INT(a, 0x08008000 + 3 * 2048);
	CHECK_EQ_INT(dfu_block_address(1, 2048, 0x08008000, &a), -EINVAL);
	CHECK_EQ_INT(dfu_block_address(0, 2048, 0x08008000, &a), -EINVAL);
	CHECK_EQ_INT(dfu_block_address(0xffff, 0xffff, 0xffff0000, &a), -ERANGE);
}

int
main(void)
{
	test_status();
	test_func_desc();
	test_layout_f4();
	test_layout_others();
	test_commands();
	TEST_DONE();
}
