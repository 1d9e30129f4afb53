/* SPDX-License-Identifier: GPL-2.0-or-later */
/* proto/katapult: the pure codec of the Katapult (CanBoot) serial bootloader protocol.
 *
 * Framing, CRC and reply decoding for protocols.md §2.2-2.3, shared by the daemon's Katapult
 * backend and the board simulator. No packaged C library speaks this protocol (the reference
 * host is a Python script), and it is small enough to own. No I/O here. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* §2.3 command codes */
#define KATAPULT_CMD_CONNECT 0x11
#define KATAPULT_CMD_SEND_BLOCK 0x12
#define KATAPULT_CMD_SEND_EOF 0x13
#define KATAPULT_CMD_REQUEST_BLOCK 0x14
#define KATAPULT_CMD_COMPLETE 0x15
#define KATAPULT_CMD_GET_CANBUS_ID 0x16
/* flashtool's "prime" dummy command for USBFS double-buffered parts (§2.4 step 5) */
#define KATAPULT_CMD_PRIME 0x90

/* §2.3 response codes */
#define KATAPULT_RSP_ACK 0xa0
#define KATAPULT_RSP_NACK 0xf1
#define KATAPULT_RSP_COMMAND_ERROR 0xf2
#define KATAPULT_RSP_BUSY 0xf3

/* §2.2 frame layout */
#define KATAPULT_HEADER_0 0x01
#define KATAPULT_HEADER_1 0x88
#define KATAPULT_TRAILER_0 0x99
#define KATAPULT_TRAILER_1 0x03
#define KATAPULT_FRAME_OVERHEAD 8
#define KATAPULT_FRAME_MIN 8
#define KATAPULT_DEVICE_FRAME_MAX 128 /* MESSAGE_MAX: the device rejects longer frames */
#define KATAPULT_FRAME_MAX (KATAPULT_FRAME_OVERHEAD + 4 * 255)
#define KATAPULT_PROTO_VERSION 0x00010100 /* 1.1.0: CONNECT carries the software version */

/* A frame located in a byte stream; payload points into the caller's buffer. */
struct katapult_frame {
	uint8_t code;
	uint8_t n_words;
	const uint8_t *payload; /* 4 * n_words bytes */
	size_t payload_len;
};

/* CONNECT acknowledgement (§2.3). Strings are NUL-terminated, truncated to fit. */
struct katapult_connect_info {
	uint32_t proto_version; /* 0x00MMmmpp */
	uint32_t app_start;
	uint32_t block_size;
	char mcu[64];
	char software_version[64]; /* "" before protocol 1.1.0 */
};

/* CRC-16/MCRF4XX (poly 0x1021 reflected, init 0xFFFF, no xorout): "123456789" -> 0x6F91. */
uint16_t katapult_crc16(const uint8_t *data, size_t len);

static inline uint32_t
katapult_get_le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline void
katapult_put_le32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
	p[2] = (uint8_t)(v >> 16);
	p[3] = (uint8_t)(v >> 24);
}

/* Encode a frame whose payload is `n_words` little-endian words. Returns the frame length,
 * or -EINVAL (more than 255 words) / -ENOBUFS (buf too small). */
int katapult_frame_encode(uint8_t code, const uint32_t *words, size_t n_words, uint8_t *buf,
			  size_t len);
/* Same with a raw payload (payload_len a multiple of 4, else -EINVAL); payload may be NULL
 * when payload_len is 0. Used for SEND_BLOCK data and REQUEST_BLOCK replies. */
int katapult_frame_encode_bytes(uint8_t code, const uint8_t *payload, size_t payload_len,
				uint8_t *buf, size_t len);
/* Convenience: encode `code` with a leading word `w0` followed by raw bytes. */
int katapult_frame_encode_word_bytes(uint8_t code, uint32_t w0, const uint8_t *data,
				     size_t data_len, uint8_t *buf, size_t len);

/* Find the frame at the start of buf (Klipper command_find_block style). Returns >0: a valid
 * frame of that many bytes is at buf[0] (*ret filled); 0: need more bytes; <0: discard -r
 * bytes (junk or a bad frame: the caller drops them and calls again). Frames longer than
 * max_frame (8..KATAPULT_FRAME_MAX) are rejected like the device does. *ret_bad, if not NULL,
 * is set true when the discarded bytes started like a frame (header) but were corrupt. */
int katapult_frame_find(const uint8_t *buf, size_t len, size_t max_frame,
			struct katapult_frame *ret, bool *ret_bad);

/* Check a reply to command `cmd`: 0 when it is an ACK of cmd, with the bytes after the
 * acked-command word in *ret_data and *ret_len (may be NULL). -EAGAIN for NACK, -EINVAL for
 * COMMAND_ERROR, -EBUSY for BUSY, -EPROTO for an ACK of another command or without the
 * acked-command word, -EBADMSG for an unknown response code. */
int katapult_check_ack(const struct katapult_frame *f, uint8_t cmd, const uint8_t **ret_data,
		       size_t *ret_len);
/* Parse a CONNECT reply (§2.3): 0 or a katapult_check_ack error, -EPROTO when too short. */
int katapult_parse_connect(const struct katapult_frame *f, struct katapult_connect_info *ret);
/* Human name of a command or response code ("CONNECT", "NACK", ...; "unknown" otherwise). */
const char *katapult_code_name(uint8_t code);
