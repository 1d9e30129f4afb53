/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Unit tests of the Klipper protocol codec. The vectors were computed with the rules of
 * Klipper's klippy/msgproto.py transcribed literally (crc16_ccitt, PT_uint32.encode,
 * PT_string.encode, MessageParser.encode); the identify block is the one in protocols.md
 * §4.2. */
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "harness.h"
#include "image/kdict.h"
#include "proto/klipper.h"

static size_t
unhex(const char *s, uint8_t *out)
{
	size_t n = 0;

	for (; s[0] && s[1]; s += 2) {
		unsigned v;

		sscanf(s, "%2x", &v);
		out[n++] = (uint8_t)v;
	}
	return n;
}

static const struct {
	int64_t v;
	const char *hex;
} vlqs[] = {
    {0, "00"},
    {1, "01"},
    {0x5f, "5f"},
    {0x60, "8060"},
    {-1, "7f"},
    {-0x20, "60"},
    {-0x21, "ff5f"},
    {0x2fff, "df7f"},
    {0x3000, "80e000"},
    {-0x1000, "e000"},
    {-0x1001, "ffdf7f"},
    {0x17ffff, "dfff7f"},
    {0x180000, "80e08000"},
    {0xbffffff, "dfffff7f"},
    {0xc000000, "80e0808000"},
    {0x7fffffff, "87ffffff7f"},
    {-0x4000000, "e0808000"},
    {-0x4000001, "ffdfffff7f"},
    {300, "822c"},
    {4000000, "81f49200"},
};

static void
test_vlq(void)
{
	for (size_t i = 0; i < sizeof(vlqs) / sizeof(vlqs[0]); i++) {
		uint8_t want[8], got[8];
		size_t n = unhex(vlqs[i].hex, want);
		uint32_t v = (uint32_t)vlqs[i].v, back = 0;
		int r = klipper_vlq_encode(v, got, sizeof(got));

		CHECK_EQ_INT(r, n);
		CHECK(r > 0 && memcmp(got, want, n) == 0);
		CHECK_EQ_INT(klipper_vlq_decode(want, n, &back), n);
		CHECK_EQ_INT(back, v);
	}
	{
		uint8_t b[2];
		uint8_t run[] = {0x81, 0x82, 0x83, 0x84, 0x85, 0x06};
		uint32_t v;

		CHECK_EQ_INT(klipper_vlq_encode(0x60, b, 1), -ENOBUFS);
		CHECK_EQ_INT(klipper_vlq_decode(run, 2, &v), -EBADMSG);
		CHECK_EQ_INT(klipper_vlq_decode(run, sizeof(run), &v), -EBADMSG);
		CHECK_EQ_INT(klipper_vlq_decode(run, 0, &v), -EBADMSG);
	}
}

static void
test_crc_and_blocks(void)
{
	uint8_t buf[80], want[80];
	uint8_t id[] = {0x01, 0x00, 0x28};
	struct klipper_block blk;
	size_t n;

	CHECK_EQ_INT(klipper_crc16((const uint8_t *)"123456789", 9), 0x6f91);
	/* protocols.md §4.2: identify offset=0 count=40 */
	n = unhex("08100100285e9f7e", want);
	CHECK_EQ_INT(klipper_block_encode(0, id, sizeof(id), buf, sizeof(buf)), n);
	CHECK(memcmp(buf, want, n) == 0);
	CHECK_EQ_INT(klipper_block_find(want, n, &blk), n);
	CHECK_EQ_INT(blk.seq, 0);
	CHECK_EQ_INT(blk.payload_len, 3);
	/* an ack (empty block) with seq 5 */
	n = unhex("0515c92c7e", want);
	CHECK_EQ_INT(klipper_block_encode(0x25, NULL, 0, buf, sizeof(buf)), n);
	CHECK(memcmp(buf, want, n) == 0);
	CHECK_EQ_INT(klipper_block_find(want, n, &blk), n);
	CHECK_EQ_INT(blk.seq, 5);
	CHECK_EQ_INT(blk.payload_len, 0);
	/* partial: need more; leading sync byte: drop one; corrupt crc: drop through sync */
	CHECK_EQ_INT(klipper_block_find(want, 4, &blk), 0);
	CHECK_EQ_INT(klipper_block_find((const uint8_t *)"\x7e\x05\x15\xc9\x2c\x7e", 6, &blk), -1);
	want[3] ^= 1;
	CHECK_EQ_INT(klipper_block_find(want, n, &blk), -(int)n);
	/* junk then a block: skip to after the sync */
	CHECK_EQ_INT(klipper_block_find((const uint8_t *)"\x01\x02\x7e\x05\x15", 5, &blk), -3);
	/* bad seq byte (no 0x10 dest bit) */
	CHECK_EQ_INT(klipper_block_find((const uint8_t *)"\x05\x05\xc9\x2c\x7e", 5, &blk), -5);
	/* too long payload */
	CHECK_EQ_INT(klipper_block_encode(0, buf, KLIPPER_PAYLOAD_MAX + 1, want, sizeof(want)),
		     -EMSGSIZE);
	CHECK_EQ_INT(klipper_block_encode(0, id, 3, buf, 7), -ENOBUFS);
}

static void
test_formats(void)
{
	struct klipper_msgfmt f;
	uint8_t buf[64], want[64];
	uint8_t ff[8];
	size_t n;
	struct klipper_value vals[KLIPPER_MAX_PARAMS];

	memset(ff, 0xff, sizeof(ff));
	CHECK_EQ_INT(klipper_format_parse("spi_transfer oid=%c data=%*s", &f), 0);
	CHECK_STREQ(f.name, "spi_transfer");
	CHECK_EQ_INT(f.n_params, 2);
	CHECK_EQ_INT(f.params[0].type, KLIPPER_PT_BYTE);
	CHECK_EQ_INT(f.params[1].type, KLIPPER_PT_BUFFER);
	CHECK_STREQ(f.params[1].name, "data");
	f.id = 50;
	{
		struct klipper_arg a[] = {{"data", {.data = ff, .len = 8}}, {"oid", {.u = 0}}};
		uint8_t blk[80];

		int r = klipper_encode_named(&f, a, 2, buf, sizeof(buf));

		CHECK_EQ_INT(r, 11);
		/* block with seq 3, vector from msgproto rules */
		n = unhex("1013320008ffffffffffffffff38b07e", want);
		CHECK_EQ_INT(klipper_block_encode(3, buf, (size_t)r, blk, sizeof(blk)), n);
		CHECK(memcmp(blk, want, n) == 0);
		CHECK_EQ_INT(klipper_encode_named(&f, a, 1, buf, sizeof(buf)), -ENOENT);
		a[1].name = "nope";
		CHECK_EQ_INT(klipper_encode_named(&f, a, 2, buf, sizeof(buf)), -EINVAL);
		CHECK_EQ_INT(klipper_encode_named(&f, a, 1, buf, 5), -ENOENT);
	}
	/* identify_response offset=40 data="xyz", seq 1 */
	n = unhex("0b1100280378797a539b7e", want);
	{
		struct klipper_block blk;
		int32_t id = -1;
		int r;

		CHECK_EQ_INT(klipper_block_find(want, n, &blk), n);
		CHECK_EQ_INT(klipper_format_parse("identify_response offset=%u data=%.*s", &f), 0);
		r = klipper_decode_id(blk.payload, blk.payload_len, &id);
		CHECK_EQ_INT(r, 1);
		CHECK_EQ_INT(id, 0);
		CHECK_EQ_INT(klipper_decode(&f, blk.payload + 1, blk.payload_len - 1, vals), 5);
		CHECK_EQ_INT(vals[0].u, 40);
		CHECK_EQ_INT(vals[1].len, 3);
		CHECK(memcmp(vals[1].data, "xyz", 3) == 0);
		/* a length byte past the end */
		CHECK_EQ_INT(klipper_decode(&f, blk.payload + 1, 3, vals), -EBADMSG);
	}
	/* two messages in one block: config_spi + spi_set_sw_bus, seq 7 */
	{
		struct klipper_msgfmt a, b;
		struct klipper_value va[3] = {{.u = 0}, {.u = 4}, {.u = 0}};
		struct klipper_value vb[6] = {{.u = 0},	 {.u = 38}, {.u = 51},
					      {.u = 44}, {.u = 0},  {.u = 210}};
		uint8_t pl[64], blk[80];
		int r1, r2;

		CHECK_EQ_INT(klipper_format_parse("config_spi oid=%c pin=%u cs_active_high=%c", &a),
			     0);
		CHECK_EQ_INT(klipper_format_parse("spi_set_sw_bus oid=%c miso_pin=%u mosi_pin=%u "
						  "sclk_pin=%u mode=%u pulse_ticks=%u",
						  &b),
			     0);
		a.id = 20;
		b.id = 21;
		r1 = klipper_encode(&a, va, pl, sizeof(pl));
		r2 = klipper_encode(&b, vb, pl + r1, sizeof(pl) - (size_t)r1);
		n = unhex("111714000400150026332c00815278737e", want);
		CHECK_EQ_INT(klipper_block_encode(7, pl, (size_t)(r1 + r2), blk, sizeof(blk)), n);
		CHECK(memcmp(blk, want, n) == 0);
	}
	/* bad formats */
	CHECK_EQ_INT(klipper_format_parse("x a=%q", &f), -EINVAL);
	CHECK_EQ_INT(klipper_format_parse("x a", &f), -EINVAL);
	CHECK_EQ_INT(klipper_format_parse("", &f), -EINVAL);
	CHECK_EQ_INT(klipper_format_parse("x a=%u b=%u c=%u d=%u e=%u f=%u g=%u h=%u i=%u j=%u "
					  "k=%u l=%u m=%u",
					  &f),
		     -EINVAL);
	/* %hi sign-extends, %c keeps 8 bits */
	CHECK_EQ_INT(klipper_format_parse("t a=%hi b=%c", &f), 0);
	{
		uint8_t in[] = {0x7f, 0x82, 0x01};

		CHECK_EQ_INT(klipper_decode(&f, in, sizeof(in), vals), 3);
		CHECK_EQ_INT((int32_t)vals[0].u, -1);
		CHECK_EQ_INT(vals[1].u, 0x01);
	}
}

static const char dict_json[] =
    "{\"app\": \"Klipper\", \"version\": \"v0.12.0-1-gabc\", \"config\": {\"MCU\": "
    "\"stm32f407xx\", \"CLOCK_FREQ\": 168000000, \"RECEIVE_WINDOW\": 192}, "
    "\"commands\": {\"spi_transfer oid=%c data=%*s\": 61, \"identify offset=%u count=%c\": 1, "
    "\"config_spi oid=%c pin=%u cs_active_high=%c\": 58, \"get_config\": 70}, "
    "\"responses\": {\"spi_transfer_response oid=%c response=%*s\": 83, "
    "\"identify_response offset=%u data=%.*s\": 0}, \"output\": {\"hello %u\": 90}, "
    "\"enumerations\": {\"pin\": {\"PA0\": [0, 16], \"PB0\": [16, 16], \"P0.6\": 6}, "
    "\"spi_bus\": {\"spi1\": 0, \"spi3a\": 7}}}";

static void
test_dict(void)
{
	struct klipper_dict d;
	const struct klipper_msgfmt *m;
	uint32_t v = 0;

	klipper_dict_init(&d);
	CHECK_EQ_INT(kdict_to_klipper(dict_json, strlen(dict_json), &d), 0);
	m = klipper_dict_by_name(&d, "spi_transfer");
	CHECK(m && m->id == 61 && m->kind == KLIPPER_KIND_COMMAND);
	m = klipper_dict_by_id(&d, 83, KLIPPER_KIND_RESPONSE);
	CHECK(m && strcmp(m->name, "spi_transfer_response") == 0);
	CHECK(klipper_dict_by_id(&d, 83, KLIPPER_KIND_COMMAND) == NULL);
	m = klipper_dict_by_id(&d, 90, KLIPPER_KIND_RESPONSE);
	CHECK(m && m->kind == KLIPPER_KIND_OUTPUT);
	m = klipper_dict_by_name(&d, "get_config");
	CHECK(m && m->n_params == 0);
	CHECK_STREQ(klipper_dict_constant(&d, "MCU"), "stm32f407xx");
	CHECK_STREQ(klipper_dict_constant(&d, "RECEIVE_WINDOW"), "192");
	CHECK_STREQ(d.version, "v0.12.0-1-gabc");
	/* ranges and the "_pin" suffix rule */
	CHECK_EQ_INT(klipper_dict_enum_value(&d, "pin", "PA4", &v), 0);
	CHECK_EQ_INT(v, 4);
	CHECK_EQ_INT(klipper_dict_enum_value(&d, "miso_pin", "PB5", &v), 0);
	CHECK_EQ_INT(v, 21);
	CHECK_EQ_INT(klipper_dict_enum_value(&d, "pin", "PA16", &v), -ENOENT);
	CHECK_EQ_INT(klipper_dict_enum_value(&d, "pin", "P0.6", &v), 0);
	CHECK_EQ_INT(v, 6);
	CHECK_EQ_INT(klipper_dict_enum_value(&d, "spi_bus", "spi3a", &v), 0);
	CHECK_EQ_INT(v, 7);
	CHECK_EQ_INT(klipper_dict_enum_value(&d, "bus", "spi1", &v), -ENOENT);
	CHECK_EQ_INT(klipper_dict_enum_value(&d, "spin", "PA1", &v), -ENOENT);
	klipper_dict_free(&d);

	klipper_dict_init(&d);
	CHECK_EQ_INT(kdict_to_klipper("{\"commands\": {\"x a=%z\": 3}}", 27, &d), -EBADMSG);
	klipper_dict_free(&d);
	/* an output() format with more parameters than a message can have (found by fuzzing) */
	klipper_dict_init(&d);
	CHECK_EQ_INT(klipper_dict_add_message(&d, 90, KLIPPER_KIND_OUTPUT,
					      "x %c %c %c %c %c %c %c %c %c %c %c %c %c"),
		     -EINVAL);
	CHECK_EQ_INT(klipper_dict_add_message(&d, 90, KLIPPER_KIND_OUTPUT, "x %c %% %u"), 0);
	klipper_dict_free(&d);
	klipper_dict_init(&d);
	CHECK_EQ_INT(kdict_to_klipper("[1]", 3, &d), -EBADMSG);
	CHECK_EQ_INT(kdict_to_klipper("{\"enumerations\": {\"pin\": {\"PA0\": [0]}}}", 38, &d),
		     -EBADMSG);
	klipper_dict_free(&d);
}

int
main(void)
{
	test_vlq();
	test_crc_and_blocks();
	test_formats();
	test_dict();
	TEST_DONE();
}
