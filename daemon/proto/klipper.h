/* SPDX-License-Identifier: GPL-2.0-or-later */
/* proto/klipper: the pure codec of the Klipper host <-> MCU protocol (protocols.md §4.2).
 *
 * What upstream does, read from Klipper3d/klipper:
 * - klippy/msgproto.py and src/command.c: a message block is <len> <seq> <payload...>
 *   <crc_hi> <crc_lo> 0x7E; len counts the whole block (MESSAGE_MIN 5 .. MESSAGE_MAX 64);
 *   seq = 0x10 | (n & 0x0F) (MESSAGE_DEST | MESSAGE_SEQ_MASK); the CRC is crc16_ccitt over
 *   len, seq and payload, sent high byte first. The payload holds one or more messages:
 *   a message id then its parameters.
 * - Integers (%u %i %hu %hi %c, and the message id) are VLQs: 7 bits a byte, most
 *   significant group first, bit 7 on every byte but the last; extra leading bytes are
 *   emitted for v >= 0x60 || v < -0x20 (2), >= 0x3000 || < -0x1000 (3), >= 0x180000 ||
 *   < -0x80000 (4), >= 0xC000000 || < -0x4000000 (5) (PT_uint32.encode, encode_int). On
 *   parse a first byte with (c & 0x60) == 0x60 is sign-extended (parse_int).
 * - Strings and buffers (%s %.*s %*s) are a length byte then the bytes.
 * - Ids 0 "identify_response offset=%u data=%.*s" and 1 "identify offset=%u count=%c" are
 *   fixed (DefaultMessages); every other id comes from the zlib-compressed JSON data
 *   dictionary the MCU returns in chunks of identify_response.
 * - Enumerations (MessageParser.fill_enumerations, lookup_params): a parameter named like
 *   an enumeration, or ending in "_" + its name ("miso_pin" -> "pin"), takes symbolic
 *   values; a dictionary entry "PA0": [0, 16] is the range PA0..PA15 = 0..15.
 * - The MCU acknowledges each block it accepted with its next expected seq; a block with
 *   the wrong seq is discarded and answered by an empty block with the expected seq (a
 *   NAK) (command_find_block). The host retransmits on timeout or duplicate ack
 *   (klippy/chelper/serialqueue.c); flash/klipper.c does that, this file has no state.
 *
 * No I/O here: the dictionary is filled by image/kdict.c (which owns zlib and JSON). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define KLIPPER_MESSAGE_MIN 5
#define KLIPPER_MESSAGE_MAX 64
#define KLIPPER_PAYLOAD_MAX (KLIPPER_MESSAGE_MAX - KLIPPER_MESSAGE_MIN)
#define KLIPPER_SYNC 0x7e
#define KLIPPER_DEST 0x10
#define KLIPPER_SEQ_MASK 0x0f
#define KLIPPER_ID_IDENTIFY_RESPONSE 0
#define KLIPPER_ID_IDENTIFY 1
#define KLIPPER_VLQ_MAX 5
#define KLIPPER_MAX_PARAMS 12
#define KLIPPER_NAME_MAX 48

/* msgproto.py MessageTypes */
enum klipper_ptype {
	KLIPPER_PT_UINT32,	   /* %u */
	KLIPPER_PT_INT32,	   /* %i */
	KLIPPER_PT_UINT16,	   /* %hu */
	KLIPPER_PT_INT16,	   /* %hi */
	KLIPPER_PT_BYTE,	   /* %c */
	KLIPPER_PT_STRING,	   /* %s */
	KLIPPER_PT_PROGMEM_BUFFER, /* %.*s */
	KLIPPER_PT_BUFFER,	   /* %*s */
	_KLIPPER_PT_MAX,
};

enum klipper_kind {
	KLIPPER_KIND_COMMAND,  /* host -> MCU */
	KLIPPER_KIND_RESPONSE, /* MCU -> host */
	KLIPPER_KIND_OUTPUT,   /* MCU -> host debug printf ("output" in the dictionary) */
};

struct klipper_param {
	char name[KLIPPER_NAME_MAX];
	enum klipper_ptype type;
};

/* One message format: "spi_transfer oid=%c data=%*s" parsed. */
struct klipper_msgfmt {
	int32_t id;
	enum klipper_kind kind;
	char name[KLIPPER_NAME_MAX];
	char *format; /* the full format string as in the dictionary */
	unsigned n_params;
	struct klipper_param params[KLIPPER_MAX_PARAMS];
};

/* A parameter value: integers in u (signed types as their two's complement), strings and
 * buffers in data/len (pointing into the decoded buffer or the caller's bytes). */
struct klipper_value {
	uint32_t u;
	const uint8_t *data;
	size_t len;
};

/* A parameter given by name, for klipper_encode_named(). */
struct klipper_arg {
	const char *name;
	struct klipper_value v;
};

struct klipper_enum {
	char *enumeration; /* "pin", "spi_bus" */
	char *name;	   /* "PA4" */
	int32_t value;
};

struct klipper_constant {
	char *name;
	char *value; /* as text: JSON strings unquoted, numbers printed */
};

/* The parsed data dictionary: what the codec is fed with (image/kdict.c fills it). */
struct klipper_dict {
	struct klipper_msgfmt *msgs;
	size_t n_msgs;
	struct klipper_enum *enums;
	size_t n_enums;
	struct klipper_constant *constants;
	size_t n_constants;
	char *version;
};

/* A block located in a byte stream; payload points into the caller's buffer. */
struct klipper_block {
	uint8_t seq; /* low 4 bits of the seq byte */
	const uint8_t *payload;
	size_t payload_len;
};

/* crc16_ccitt of msgproto.py / src/generic/crc16_ccitt.c: init 0xFFFF, reflected update,
 * no final xor ("123456789" -> 0x6F91); sent big-endian in a block. */
uint16_t klipper_crc16(const uint8_t *data, size_t len);

/* VLQ integer: encode returns the byte count (1..5) or -ENOBUFS; decode returns the bytes
 * consumed or -EBADMSG (runs off the end or longer than 5 bytes). */
int klipper_vlq_encode(uint32_t v, uint8_t *buf, size_t len);
int klipper_vlq_decode(const uint8_t *buf, size_t len, uint32_t *ret);

/* Wrap a payload (at most KLIPPER_PAYLOAD_MAX bytes, else -EMSGSIZE) in a block with
 * sequence number seq. Returns the block length or -ENOBUFS. */
int klipper_block_encode(uint8_t seq, const uint8_t *payload, size_t payload_len, uint8_t *buf,
			 size_t len);
/* Find the block at the start of buf, like msgblock_check/command_find_block: >0 a valid
 * block of that many bytes (*ret filled); 0 need more bytes; <0 discard -r bytes (junk up to
 * and including the next sync byte, or a leading sync byte). */
int klipper_block_find(const uint8_t *buf, size_t len, struct klipper_block *ret);

/* Parse a format string "name p1=%u p2=%*s" into *ret (id and kind set by the caller):
 * 0, or -EINVAL for an unknown type, a parameter without '=', too many parameters or a
 * name too long. ret->format is not set. */
int klipper_format_parse(const char *format, struct klipper_msgfmt *ret);

/* Encode one message (id + parameters, values in format order) into buf: bytes written,
 * -ENOBUFS, or -EINVAL (a string/buffer longer than 255 bytes). */
int klipper_encode(const struct klipper_msgfmt *f, const struct klipper_value *vals, uint8_t *buf,
		   size_t len);
/* Same with the parameters by name, in any order: -ENOENT when one the format needs is
 * missing, -EINVAL when one is given that the format does not have. */
int klipper_encode_named(const struct klipper_msgfmt *f, const struct klipper_arg *args,
			 size_t n_args, uint8_t *buf, size_t len);
/* Read the message id at buf: bytes consumed or -EBADMSG. */
int klipper_decode_id(const uint8_t *buf, size_t len, int32_t *ret_id);
/* Decode the parameters of f from buf (just after the id) into vals (f->n_params entries):
 * bytes consumed or -EBADMSG when they run past len. */
int klipper_decode(const struct klipper_msgfmt *f, const uint8_t *buf, size_t len,
		   struct klipper_value *vals);
/* Index of parameter `name` in f, or -ENOENT. */
int klipper_param_index(const struct klipper_msgfmt *f, const char *name);

/* Dictionary. init adds the two fixed identify messages; add_* copy their strings. All
 * return 0, -ENOMEM, or -EINVAL (bad format / id outside what a 2-byte VLQ id carries). */
void klipper_dict_init(struct klipper_dict *d);
void klipper_dict_free(struct klipper_dict *d);
int klipper_dict_add_message(struct klipper_dict *d, int32_t id, enum klipper_kind kind,
			     const char *format);
int klipper_dict_add_enum(struct klipper_dict *d, const char *enumeration, const char *name,
			  int32_t value);
int klipper_dict_add_constant(struct klipper_dict *d, const char *name, const char *value);
int klipper_dict_set_version(struct klipper_dict *d, const char *version);
/* Lookups: NULL when absent. by_name matches the message name ("spi_transfer"). */
const struct klipper_msgfmt *klipper_dict_by_name(const struct klipper_dict *d, const char *name);
const struct klipper_msgfmt *klipper_dict_by_id(const struct klipper_dict *d, int32_t id,
						enum klipper_kind kind);
const char *klipper_dict_constant(const struct klipper_dict *d, const char *name);
/* The value of symbol `sym` for parameter `param` by msgproto's rule (enumeration named
 * like the parameter or its "_suffix"): 0 and *ret, or -ENOENT. Case-sensitive like
 * Klipper (its host upper-cases pin names first). */
int klipper_dict_enum_value(const struct klipper_dict *d, const char *param, const char *sym,
			    uint32_t *ret);
