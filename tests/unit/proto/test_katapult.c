/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Unit tests of the Katapult codec against the protocols.md §2.2 test vectors. */
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "harness.h"
#include "proto/katapult.h"
#include "util.h"

struct vector {
	const char *name;
	uint8_t code;
	uint32_t words[3];
	size_t n_words;
	const char *hex;
};

/* §2.2 table, byte for byte */
static const struct vector vectors[] = {
    {"CONNECT", 0x11, {0}, 0, "01881100f17c9903"},
    {"SEND_EOF", 0x13, {0}, 0, "01881300414f9903"},
    {"COMPLETE", 0x15, {0}, 0, "01881500911b9903"},
    {"GET_CANBUS_ID", 0x16, {0}, 0, "01881600f9319903"},
    {"prime", 0x90, {0}, 0, "01889000e5e99903"},
    {"REQUEST_BLOCK", 0x14, {0x08008000}, 1, "01881401008000088cd19903"},
    {"NACK", 0xf1, {0}, 0, "0188f10068959903"},
    {"COMMAND_ERROR", 0xf2, {0}, 0, "0188f20000bf9903"},
    {"BUSY", 0xf3, {0}, 0, "0188f300d8a69903"},
    {"ACK SEND_BLOCK", 0xa0, {0x12, 0x08008000}, 2, "0188a00212000000008000088dd99903"},
    {"ACK EOF", 0xa0, {0x13, 5}, 2, "0188a0021300000005000000c1b69903"},
    {"ACK COMPLETE", 0xa0, {0x15}, 1, "0188a00115000000002e9903"},
};

static size_t
unhex(const char *s, uint8_t *out)
{
	size_t n = 0;

	for (; s[0] && s[1]; s += 2) {
		unsigned v;

		(void)sscanf(s, "%2x", &v);
		out[n++] = (uint8_t)v;
	}
	return n;
}

static void
test_crc(void)
{
	CHECK_EQ_INT(katapult_crc16((const uint8_t *)"123456789", 9), 0x6f91);
	CHECK_EQ_INT(katapult_crc16(NULL, 0), 0xffff);
}

static void
test_vectors(void)
{
	for (size_t i = 0; i < ELEMENTSOF(vectors); i++) {
		const struct vector *v = &vectors[i];
		uint8_t want[64], got[64];
		size_t n = unhex(v->hex, want);
		int r = katapult_frame_encode(v->code, v->words, v->n_words, got, sizeof(got));
		struct katapult_frame f;

		CHECK_EQ_INT(r, (int)n);
		if (r != (int)n || memcmp(want, got, n) != 0)
			fprintf(stderr, "vector %s differs\n", v->name);
		CHECK(r == (int)n && memcmp(want, got, n) == 0);
		CHECK_EQ_INT(katapult_frame_find(want, n, KATAPULT_FRAME_MAX, &f, NULL), (int)n);
		CHECK_EQ_INT(f.code, v->code);
		CHECK_EQ_INT(f.n_words, v->n_words);
		for (size_t w = 0; w < v->n_words; w++)
			CHECK_EQ_INT(katapult_get_le32(f.payload + 4 * w), v->words[w]);
	}
}

static void
test_find_stream(void)
{
	uint8_t buf[64];
	uint8_t frame[16];
	size_t n = unhex("0188a0021300000005000000c1b69903", frame);
	struct katapult_frame f;
	bool bad;
	size_t len;
	int r;

	/* partial frames need more, at every length */
	for (size_t i = 0; i < n; i++)
		CHECK_EQ_INT(katapult_frame_find(frame, i, 128, &f, &bad), 0);
	/* junk before a frame is discarded up to the header byte */
	buf[0] = 0x55;
	buf[1] = 0x99;
	memcpy(buf + 2, frame, n);
	CHECK_EQ_INT(katapult_frame_find(buf, n + 2, 128, &f, &bad), -2);
	CHECK(!bad);
	CHECK_EQ_INT(katapult_frame_find(buf + 2, n, 128, &f, &bad), (int)n);
	/* a corrupt CRC: discard to the next header byte, flagged bad */
	memcpy(buf, frame, n);
	buf[12] ^= 0x40;
	r = katapult_frame_find(buf, n, 128, &f, &bad);
	CHECK(r < 0);
	CHECK(bad);
	/* no further 0x01 in the frame: everything goes */
	CHECK_EQ_INT(r, -(int)n);
	/* bad trailer */
	memcpy(buf, frame, n);
	buf[n - 1] = 0x04;
	CHECK(katapult_frame_find(buf, n, 128, &f, &bad) < 0);
	CHECK(bad);
	/* 01 followed by a wrong second header byte */
	buf[0] = 0x01;
	buf[1] = 0x01;
	memcpy(buf + 2, frame, n);
	CHECK_EQ_INT(katapult_frame_find(buf, n + 2, 128, &f, &bad), -1);
	CHECK_EQ_INT(katapult_frame_find(buf + 1, n + 1, 128, &f, &bad), -1);
	CHECK_EQ_INT(katapult_frame_find(buf + 2, n, 128, &f, &bad), (int)n);
	/* the device limit: a 33-word frame (140 bytes) is too long for 128 */
	{
		uint8_t big[160];
		uint8_t zero[132] = {0};

		len =
		    (size_t)katapult_frame_encode_bytes(0x12, zero, sizeof(zero), big, sizeof(big));
		CHECK_EQ_INT(len, 140);
		CHECK(katapult_frame_find(big, len, 128, &f, &bad) < 0);
		CHECK_EQ_INT(katapult_frame_find(big, len, KATAPULT_FRAME_MAX, &f, &bad), 140);
	}
	/* two frames back to back */
	memcpy(buf, frame, n);
	memcpy(buf + n, frame, n);
	CHECK_EQ_INT(katapult_frame_find(buf, 2 * n, 128, &f, NULL), (int)n);
	CHECK_EQ_INT(katapult_frame_find(buf + n, n, 128, &f, NULL), (int)n);
}

static void
test_encode_limits(void)
{
	uint8_t buf[16];
	uint32_t w[256] = {0};
	uint8_t three[3] = {1, 2, 3};

	CHECK_EQ_INT(katapult_frame_encode(0x11, NULL, 0, buf, 7), -ENOBUFS);
	CHECK_EQ_INT(katapult_frame_encode(0x11, w, 256, buf, sizeof(buf)), -EINVAL);
	CHECK_EQ_INT(katapult_frame_encode_bytes(0x12, three, 3, buf, sizeof(buf)), -EINVAL);
	CHECK_EQ_INT(katapult_frame_encode_word_bytes(0x12, 0x08008000, three, 0, buf, sizeof(buf)),
		     12);
	CHECK_EQ_INT(katapult_get_le32(buf + 4), 0x08008000);
}

static void
test_acks(void)
{
	uint8_t buf[64];
	struct katapult_frame f;
	const uint8_t *d;
	size_t dl;
	uint32_t w[2] = {KATAPULT_CMD_SEND_BLOCK, 0x08008040};
	int n = katapult_frame_encode(KATAPULT_RSP_ACK, w, 2, buf, sizeof(buf));

	CHECK_EQ_INT(katapult_frame_find(buf, (size_t)n, 128, &f, NULL), n);
	CHECK_EQ_INT(katapult_check_ack(&f, KATAPULT_CMD_SEND_BLOCK, &d, &dl), 0);
	CHECK_EQ_INT(dl, 4);
	CHECK_EQ_INT(katapult_get_le32(d), 0x08008040);
	CHECK_EQ_INT(katapult_check_ack(&f, KATAPULT_CMD_SEND_EOF, &d, &dl), -EPROTO);
	n = katapult_frame_encode(KATAPULT_RSP_NACK, NULL, 0, buf, sizeof(buf));
	CHECK_EQ_INT(katapult_frame_find(buf, (size_t)n, 128, &f, NULL), n);
	CHECK_EQ_INT(katapult_check_ack(&f, KATAPULT_CMD_SEND_EOF, NULL, NULL), -EAGAIN);
	n = katapult_frame_encode(KATAPULT_RSP_COMMAND_ERROR, NULL, 0, buf, sizeof(buf));
	CHECK_EQ_INT(katapult_frame_find(buf, (size_t)n, 128, &f, NULL), n);
	CHECK_EQ_INT(katapult_check_ack(&f, KATAPULT_CMD_SEND_EOF, NULL, NULL), -EINVAL);
	n = katapult_frame_encode(KATAPULT_RSP_BUSY, NULL, 0, buf, sizeof(buf));
	CHECK_EQ_INT(katapult_frame_find(buf, (size_t)n, 128, &f, NULL), n);
	CHECK_EQ_INT(katapult_check_ack(&f, KATAPULT_CMD_SEND_EOF, NULL, NULL), -EBUSY);
	n = katapult_frame_encode(0x42, NULL, 0, buf, sizeof(buf));
	CHECK_EQ_INT(katapult_frame_find(buf, (size_t)n, 128, &f, NULL), n);
	CHECK_EQ_INT(katapult_check_ack(&f, KATAPULT_CMD_SEND_EOF, NULL, NULL), -EBADMSG);
	/* ACK without the acked-command word */
	n = katapult_frame_encode(KATAPULT_RSP_ACK, NULL, 0, buf, sizeof(buf));
	CHECK_EQ_INT(katapult_frame_find(buf, (size_t)n, 128, &f, NULL), n);
	CHECK_EQ_INT(katapult_check_ack(&f, KATAPULT_CMD_SEND_EOF, NULL, NULL), -EPROTO);
	CHECK_STREQ(katapult_code_name(KATAPULT_RSP_NACK), "NACK");
	CHECK_STREQ(katapult_code_name(0x42), "unknown");
}

static void
test_connect(void)
{
	/* CONNECT ACK as Katapult 1.1.0 sends it for an F446 */
	uint8_t payload[64] = {0};
	uint8_t buf[128];
	struct katapult_frame f;
	struct katapult_connect_info ci;
	size_t off = 0;
	int n;

	katapult_put_le32(payload + off, KATAPULT_CMD_CONNECT);
	katapult_put_le32(payload + off + 4, 0x00010100);
	katapult_put_le32(payload + off + 8, 0x08008000);
	katapult_put_le32(payload + off + 12, 64);
	off = 16;
	memcpy(payload + off, "stm32f446xx", 11); /* padded to 12 */
	off += 12;
	off += 4; /* the zero word */
	memcpy(payload + off, "v0.0.1-75-g6bf3b9a", 18);
	off += 20;
	n = katapult_frame_encode_bytes(KATAPULT_RSP_ACK, payload, off, buf, sizeof(buf));
	CHECK(n > 0);
	CHECK_EQ_INT(katapult_frame_find(buf, (size_t)n, 128, &f, NULL), n);
	CHECK_EQ_INT(katapult_parse_connect(&f, &ci), 0);
	CHECK_EQ_INT(ci.proto_version, 0x00010100);
	CHECK_EQ_INT(ci.app_start, 0x08008000);
	CHECK_EQ_INT(ci.block_size, 64);
	CHECK_STREQ(ci.mcu, "stm32f446xx");
	CHECK_STREQ(ci.software_version, "v0.0.1-75-g6bf3b9a");

	/* protocol 1.0.0: no version string even if bytes follow */
	katapult_put_le32(payload + 4, 0x00010000);
	n = katapult_frame_encode_bytes(KATAPULT_RSP_ACK, payload, off, buf, sizeof(buf));
	CHECK_EQ_INT(katapult_frame_find(buf, (size_t)n, 128, &f, NULL), n);
	CHECK_EQ_INT(katapult_parse_connect(&f, &ci), 0);
	CHECK_STREQ(ci.software_version, "");

	/* too short */
	n = katapult_frame_encode_bytes(KATAPULT_RSP_ACK, payload, 8, buf, sizeof(buf));
	CHECK_EQ_INT(katapult_frame_find(buf, (size_t)n, 128, &f, NULL), n);
	CHECK_EQ_INT(katapult_parse_connect(&f, &ci), -EPROTO);

	/* an MCU string without terminator filling the frame is truncated, not over-read */
	memset(payload + 16, 'x', 48);
	katapult_put_le32(payload + 4, 0x00010100);
	n = katapult_frame_encode_bytes(KATAPULT_RSP_ACK, payload, 64, buf, sizeof(buf));
	CHECK_EQ_INT(katapult_frame_find(buf, (size_t)n, 128, &f, NULL), n);
	CHECK_EQ_INT(katapult_parse_connect(&f, &ci), 0);
	CHECK_EQ_INT(strlen(ci.mcu), 48);
	CHECK_STREQ(ci.software_version, "");
}

int
main(void)
{
	test_crc();
	test_vectors();
	test_find_stream();
	test_encode_limits();
	test_acks();
	test_connect();
	TEST_DONE();
}
