/* SPDX-License-Identifier: GPL-2.0-or-later */
/* proto/katapult: Katapult frame codec (protocols.md §2.2-2.3). Pure functions, no I/O. */
#include <errno.h>
#include <string.h>

#include "proto/katapult.h"

uint16_t
katapult_crc16(const uint8_t *data, size_t len)
{
	uint16_t crc = 0xffff;

	/* §2.2: byte-wise CCITT update in the reflected domain, equivalent to MCRF4XX */
	for (size_t i = 0; i < len; i++) {
		uint8_t b = (uint8_t)(data[i] ^ (crc & 0xff));

		b = (uint8_t)(b ^ (b << 4));
		crc = (uint16_t)(((unsigned)b << 8 | crc >> 8) ^ (unsigned)(b >> 4) ^
				 ((unsigned)b << 3));
	}
	return crc;
}

static int
encode_begin(uint8_t code, size_t payload_len, uint8_t *buf, size_t len)
{
	size_t total;

	if (payload_len % 4 || payload_len / 4 > 255)
		return -EINVAL;
	total = payload_len + KATAPULT_FRAME_OVERHEAD;
	if (len < total)
		return -ENOBUFS;
	buf[0] = KATAPULT_HEADER_0;
	buf[1] = KATAPULT_HEADER_1;
	buf[2] = code;
	buf[3] = (uint8_t)(payload_len / 4);
	return (int)total;
}

static int
encode_end(uint8_t *buf, size_t total)
{
	uint16_t crc = katapult_crc16(buf + 2, total - 6);

	/* §2.2: Katapult sends the CRC little-endian, unlike Klipper's msgproto */
	buf[total - 4] = (uint8_t)crc;
	buf[total - 3] = (uint8_t)(crc >> 8);
	buf[total - 2] = KATAPULT_TRAILER_0;
	buf[total - 1] = KATAPULT_TRAILER_1;
	return (int)total;
}

int
katapult_frame_encode(uint8_t code, const uint32_t *words, size_t n_words, uint8_t *buf, size_t len)
{
	int total;

	if (n_words > 255)
		return -EINVAL;
	total = encode_begin(code, n_words * 4, buf, len);
	if (total < 0)
		return total;
	for (size_t i = 0; i < n_words; i++)
		katapult_put_le32(buf + 4 + 4 * i, words[i]);
	return encode_end(buf, (size_t)total);
}

int
katapult_frame_encode_bytes(uint8_t code, const uint8_t *payload, size_t payload_len, uint8_t *buf,
			    size_t len)
{
	int total = encode_begin(code, payload_len, buf, len);

	if (total < 0)
		return total;
	if (payload_len)
		memcpy(buf + 4, payload, payload_len);
	return encode_end(buf, (size_t)total);
}

int
katapult_frame_encode_word_bytes(uint8_t code, uint32_t w0, const uint8_t *data, size_t data_len,
				 uint8_t *buf, size_t len)
{
	int total;

	if (data_len > (size_t)254 * 4) /* 255 words at most, one of them w0 */
		return -EINVAL;
	total = encode_begin(code, 4 + data_len, buf, len);
	if (total < 0)
		return total;
	katapult_put_le32(buf + 4, w0);
	if (data_len)
		memcpy(buf + 8, data, data_len);
	return encode_end(buf, (size_t)total);
}

/* Bytes to drop so that the stream restarts at the next possible header byte. */
static int
resync(const uint8_t *buf, size_t len)
{
	const uint8_t *next = len > 1 ? memchr(buf + 1, KATAPULT_HEADER_0, len - 1) : NULL;
	size_t n = next ? (size_t)(next - buf) : len;

	/* a finder result is an int: never ask to drop more than fits */
	if (n > 0x7fffffff)
		n = 0x7fffffff;
	return -(int)n;
}

int
katapult_frame_find(const uint8_t *buf, size_t len, size_t max_frame, struct katapult_frame *ret,
		    bool *ret_bad)
{
	size_t flen;
	uint16_t crc;

	if (ret_bad)
		*ret_bad = false;
	if (max_frame < KATAPULT_FRAME_MIN || max_frame > KATAPULT_FRAME_MAX)
		max_frame = KATAPULT_FRAME_MAX;
	if (len == 0)
		return 0;
	if (buf[0] != KATAPULT_HEADER_0)
		return resync(buf, len);
	if (len < 2)
		return 0;
	if (ret_bad)
		*ret_bad = true;
	if (buf[1] != KATAPULT_HEADER_1)
		return resync(buf, len);
	if (len < 4) {
		if (ret_bad)
			*ret_bad = false;
		return 0;
	}
	flen = (size_t)buf[3] * 4 + KATAPULT_FRAME_OVERHEAD;
	if (flen > max_frame)
		return resync(buf, len);
	if (len < flen) {
		if (ret_bad)
			*ret_bad = false;
		return 0;
	}
	if (buf[flen - 2] != KATAPULT_TRAILER_0 || buf[flen - 1] != KATAPULT_TRAILER_1)
		return resync(buf, len);
	crc = katapult_crc16(buf + 2, flen - 6);
	if (buf[flen - 4] != (uint8_t)crc || buf[flen - 3] != (uint8_t)(crc >> 8))
		return resync(buf, len);
	if (ret_bad)
		*ret_bad = false;
	if (ret) {
		ret->code = buf[2];
		ret->n_words = buf[3];
		ret->payload = buf + 4;
		ret->payload_len = (size_t)buf[3] * 4;
	}
	return (int)flen;
}

int
katapult_check_ack(const struct katapult_frame *f, uint8_t cmd, const uint8_t **ret_data,
		   size_t *ret_len)
{
	switch (f->code) {
	case KATAPULT_RSP_ACK:
		break;
	case KATAPULT_RSP_NACK:
		return -EAGAIN;
	case KATAPULT_RSP_COMMAND_ERROR:
		return -EINVAL;
	case KATAPULT_RSP_BUSY:
		return -EBUSY;
	default:
		return -EBADMSG;
	}
	/* §2.3: every ACK starts with the code of the command it acknowledges */
	if (f->payload_len < 4 || katapult_get_le32(f->payload) != cmd)
		return -EPROTO;
	if (ret_data)
		*ret_data = f->payload + 4;
	if (ret_len)
		*ret_len = f->payload_len - 4;
	return 0;
}

/* Copy a NUL-terminated (or region-terminated) string, truncating to fit; returns the
 * number of bytes of the region it used, excluding the terminator. */
static size_t
copy_string(char *dst, size_t dst_len, const uint8_t *src, size_t src_len)
{
	size_t n = 0;

	while (n < src_len && src[n])
		n++;
	{
		size_t c = n < dst_len - 1 ? n : dst_len - 1;

		memcpy(dst, src, c);
		dst[c] = '\0';
	}
	return n;
}

int
katapult_parse_connect(const struct katapult_frame *f, struct katapult_connect_info *ret)
{
	const uint8_t *d;
	size_t len, n;
	int r;

	r = katapult_check_ack(f, KATAPULT_CMD_CONNECT, &d, &len);
	if (r < 0)
		return r;
	if (len < 12)
		return -EPROTO;
	memset(ret, 0, sizeof(*ret));
	ret->proto_version = katapult_get_le32(d);
	ret->app_start = katapult_get_le32(d + 4);
	ret->block_size = katapult_get_le32(d + 8);
	d += 12;
	len -= 12;
	/* MCU string, NUL padding, a zero word, then (>= 1.1.0) the software version */
	n = copy_string(ret->mcu, sizeof(ret->mcu), d, len);
	while (n < len && d[n] == 0)
		n++;
	if (ret->proto_version >= KATAPULT_PROTO_VERSION)
		copy_string(ret->software_version, sizeof(ret->software_version), d + n, len - n);
	return 0;
}

const char *
katapult_code_name(uint8_t code)
{
	switch (code) {
	case KATAPULT_CMD_CONNECT:
		return "CONNECT";
	case KATAPULT_CMD_SEND_BLOCK:
		return "SEND_BLOCK";
	case KATAPULT_CMD_SEND_EOF:
		return "SEND_EOF";
	case KATAPULT_CMD_REQUEST_BLOCK:
		return "REQUEST_BLOCK";
	case KATAPULT_CMD_COMPLETE:
		return "COMPLETE";
	case KATAPULT_CMD_GET_CANBUS_ID:
		return "GET_CANBUS_ID";
	case KATAPULT_CMD_PRIME:
		return "PRIME";
	case KATAPULT_RSP_ACK:
		return "ACK";
	case KATAPULT_RSP_NACK:
		return "NACK";
	case KATAPULT_RSP_COMMAND_ERROR:
		return "COMMAND_ERROR";
	case KATAPULT_RSP_BUSY:
		return "BUSY";
	default:
		return "unknown";
	}
}
