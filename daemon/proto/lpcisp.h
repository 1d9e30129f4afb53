/* SPDX-License-Identifier: GPL-2.0-or-later */
/* proto/lpcisp: the pure codec of the NXP LPC176x ROM ISP protocol over UART0.
 *
 * NXP UM10360 chapter 32 ("Flash memory interface and programming"): the autobaud handshake,
 * the ASCII command lines and their decimal return codes, the UU-encoded data of W and R with
 * a decimal byte-sum checksum every 20 lines, the "valid user code" vector checksum and the
 * code-read-protection word at 0x2FC. Facts and their sources: research round2-uart-rescue.md
 * §1. Shared by the rescue client (flash/rescue.c) and the ISP simulator; no I/O here. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* UM10360 §32.7: "?" starts autobaud; the ROM answers "Synchronized", the host repeats it and
 * the ROM answers "OK"; then the crystal in kHz, answered "OK". */
#define LPCISP_SYNC_CHAR '?'
#define LPCISP_SYNC_STRING "Synchronized"
#define LPCISP_OK_STRING "OK"
#define LPCISP_RESEND_STRING "RESEND"
/* UM10360 §32.8.1: the unlock code of "U" */
#define LPCISP_UNLOCK_CODE 23130u
/* UM10360 §32.7: software flow control and abort */
#define LPCISP_XON 0x11
#define LPCISP_XOFF 0x13
#define LPCISP_ESC 0x1b

/* UM10360 §32.8.2: at most 45 raw bytes per UU line, a checksum line after every 20 lines */
#define LPCISP_UU_LINE_BYTES 45
#define LPCISP_UU_BLOCK_LINES 20
/* 1 length char + 60 data chars + CR LF + NUL */
#define LPCISP_UU_LINE_MAX 64
#define LPCISP_LINE_MAX 96

/* W data buffer in local SRAM: above the ISP handler's variables (0x10000118-0x100001FF),
 * as lpc21isp's LPC_RAMBASE_LPC17XX; the ISP stack and IAP scratch sit at the top. */
#define LPCISP_RAM_BUFFER 0x10000200u
#define LPCISP_COPY_MAX 4096u

/* Code read protection word (UM10360 §32.6) and the values that select a CRP level. */
#define LPCISP_CRP_OFFSET 0x2fcu
#define LPCISP_CRP1 0x12345678u
#define LPCISP_CRP2 0x87654321u
#define LPCISP_CRP3 0x43218765u
#define LPCISP_NO_ISP 0x4e697370u

/* Vector table: word 7 (offset 0x1C) makes words 0-7 sum to zero (UM10360 §32.3.1.1). */
#define LPCISP_VECTOR_CHECKSUM_OFFSET 0x1cu

/* Part identification numbers answered by "J" (lpc21isp's LPCtypes table). */
#define LPCISP_PART_LPC1769 0x26113f37u
#define LPCISP_PART_LPC1768 0x26013f37u

/* Return codes (UM10360 Table 585); 0..19 on the LPC176x. */
enum lpcisp_rc {
	LPCISP_CMD_SUCCESS = 0,
	LPCISP_INVALID_COMMAND = 1,
	LPCISP_SRC_ADDR_ERROR = 2,
	LPCISP_DST_ADDR_ERROR = 3,
	LPCISP_SRC_ADDR_NOT_MAPPED = 4,
	LPCISP_DST_ADDR_NOT_MAPPED = 5,
	LPCISP_COUNT_ERROR = 6,
	LPCISP_INVALID_SECTOR = 7,
	LPCISP_SECTOR_NOT_BLANK = 8,
	LPCISP_SECTOR_NOT_PREPARED = 9,
	LPCISP_COMPARE_ERROR = 10,
	LPCISP_BUSY = 11,
	LPCISP_PARAM_ERROR = 12,
	LPCISP_ADDR_ERROR = 13,
	LPCISP_ADDR_NOT_MAPPED = 14,
	LPCISP_CMD_LOCKED = 15,
	LPCISP_INVALID_CODE = 16,
	LPCISP_INVALID_BAUD_RATE = 17,
	LPCISP_INVALID_STOP_BIT = 18,
	LPCISP_CODE_READ_PROTECTION = 19,
};

/* The ISP commands this codec formats (UM10360 §32.8). */
enum lpcisp_op {
	LPCISP_OP_UNLOCK,	/* U 23130 */
	LPCISP_OP_ECHO,		/* A a (0 off, 1 on) */
	LPCISP_OP_BAUD,		/* B a b (baud, stop bits) */
	LPCISP_OP_WRITE,	/* W a b (RAM address, count), UU data follows */
	LPCISP_OP_READ,		/* R a b (address, count), UU data comes back */
	LPCISP_OP_PREPARE,	/* P a b (start, end sector) */
	LPCISP_OP_ERASE,	/* E a b (start, end sector) */
	LPCISP_OP_BLANK,	/* I a b (start, end sector) */
	LPCISP_OP_COPY,		/* C a b c (flash, RAM, count) */
	LPCISP_OP_GO,		/* G a T (address, Thumb) */
	LPCISP_OP_PART_ID,	/* J */
	LPCISP_OP_BOOT_VERSION, /* K */
	LPCISP_OP_SERIAL,	/* N */
	LPCISP_OP_COMPARE,	/* M a b c (address, address, count) */
};

struct lpcisp_cmd {
	enum lpcisp_op op;
	uint32_t a, b, c;
};

/* Format one command line with its CR LF. Refuses (-EINVAL) what the ROM would refuse:
 * W/R/M not word-aligned or count not a multiple of 4, C not to a 256-byte boundary or a
 * count other than 256/512/1024/4096, P/E/I with end < start, A with a value other than 0/1.
 * Returns the length, -ENOBUFS if buf is too small. */
int lpcisp_format(const struct lpcisp_cmd *cmd, char *buf, size_t len);
/* The crystal line of the handshake: "12000\r\n". */
int lpcisp_format_crystal(unsigned khz, char *buf, size_t len);
/* Number of value lines that follow CMD_SUCCESS for op (J 1, K 2, N 4, others 0). */
unsigned lpcisp_reply_lines(enum lpcisp_op op);

/* Next line of a received byte stream, normalised as real ROMs need it (their echoes turn LF
 * into CR LF or add LFs; lpc21isp's FormatCommand does the same): XON/XOFF are dropped,
 * leading CR/LF skipped, the line ends at the first CR or LF. Copies the line, NUL
 * terminated and without its end, into out. Returns the bytes consumed (> 0) when a line was
 * found, 0 when the stream holds no complete line yet (*ret_skip = leading bytes that may be
 * dropped), -EMSGSIZE when a line does not fit out (*ret_skip = the bytes to drop; the rest of
 * that line comes back as another line). */
int lpcisp_line_next(const uint8_t *buf, size_t len, char *out, size_t outlen, size_t *ret_skip);
/* A decimal return code line: 0..255 digits only. Returns the code or -EINVAL. */
int lpcisp_parse_rc(const char *line);
/* A decimal 32-bit value line (the J/K/N answers, checksum lines). 0 or -EINVAL. */
int lpcisp_parse_u32(const char *line, uint32_t *ret);
/* Human name of a return code ("SECTOR_NOT_PREPARED_FOR_WRITE_OPERATION"), never NULL. */
const char *lpcisp_rc_name(int rc);
/* Marketing name of a part ID ("LPC1769"), NULL when unknown. */
const char *lpcisp_part_name(uint32_t part_id);

/* UU-encode 1..45 bytes as one line with CR LF (zero values sent as '`', as NXP's own tool
 * and lpc21isp do). Returns the line length, -EINVAL for a bad n, -ENOBUFS. */
int lpcisp_uu_encode_line(const uint8_t *data, size_t n, char *out, size_t outlen);
/* Decode one UU line (without its CR LF); both ' ' and '`' decode as zero. Returns the
 * number of raw bytes (the length character), -EINVAL for a malformed line or -ENOBUFS. */
int lpcisp_uu_decode_line(const char *line, uint8_t *out, size_t outlen);

/* The sending side of a W data phase (host) or an R data phase (device): yields data lines
 * and, after every 20 lines and after the last, the decimal checksum line; the peer answers
 * OK (lpcisp_uu_writer_ack) or RESEND (lpcisp_uu_writer_resend: the block is sent again). */
struct lpcisp_uu_writer {
	const uint8_t *data;
	size_t len;
	size_t pos;	    /* next byte to encode */
	size_t block_start; /* first byte of the current block */
	unsigned lines;	    /* data lines sent in this block */
	uint32_t sum;	    /* byte sum of this block */
	bool await_ack;	    /* the checksum line went out; OK/RESEND expected */
};
void lpcisp_uu_writer_init(struct lpcisp_uu_writer *w, const uint8_t *data, size_t len);
/* Next line to send into out (with CR LF). Returns its length; 0 when everything was sent
 * and acknowledged; -EAGAIN while an OK/RESEND is awaited; -ENOBUFS. *ret_checksum tells
 * whether the line is the checksum line (may be NULL). */
int lpcisp_uu_writer_next(struct lpcisp_uu_writer *w, char *out, size_t outlen, bool *ret_checksum);
void lpcisp_uu_writer_ack(struct lpcisp_uu_writer *w);
void lpcisp_uu_writer_resend(struct lpcisp_uu_writer *w);

/* The receiving side: decodes data lines into a buffer and checks each checksum line. */
struct lpcisp_uu_reader {
	uint8_t *out;
	size_t len;
	size_t pos;
	size_t block_start;
	unsigned lines;
	uint32_t sum;
};
enum lpcisp_uu_event {
	LPCISP_UU_DATA = 1,	 /* a data line was stored */
	LPCISP_UU_BLOCK_OK = 2,	 /* checksum matched: answer OK (LPCISP_UU_DONE when last) */
	LPCISP_UU_BLOCK_BAD = 3, /* checksum mismatch: answer RESEND; the block is dropped */
	LPCISP_UU_DONE = 4,	 /* last checksum matched: the transfer is complete */
};
void lpcisp_uu_reader_init(struct lpcisp_uu_reader *r, uint8_t *out, size_t len);
/* True when the next line must be a checksum line. */
bool lpcisp_uu_reader_want_checksum(const struct lpcisp_uu_reader *r);
/* Feed one received line. Returns an lpcisp_uu_event, or -EINVAL (malformed line, or a data
 * line that would overrun the expected count: the sender is out of step). */
int lpcisp_uu_reader_feed(struct lpcisp_uu_reader *r, const char *line);

/* Valid-user-code checksum: the value word 7 must hold (two's complement of words 0-6). */
uint32_t lpcisp_vector_checksum(const uint8_t *image, size_t len);
/* Store that value in word 7. -EINVAL when the image is shorter than 32 bytes. */
int lpcisp_vector_patch(uint8_t *image, size_t len);
/* True when words 0-7 sum to zero (the ROM would run this code). */
bool lpcisp_vector_valid(const uint8_t *image, size_t len);
/* The CRP level an image would set: 0 none, else the magic word found at 0x2FC (CRP1/2/3 or
 * NO_ISP); images shorter than 0x300 bytes set none. *ret_name gets "CRP1"... (may be NULL). */
uint32_t lpcisp_crp_word(const uint8_t *image, size_t len, const char **ret_name);

/* LPC1768/1769 sector map: 0-15 are 4 KiB, 16-29 are 32 KiB (UM10360 Table 568). */
#define LPCISP_SECTORS 30u
/* Sector holding a flash address, -ERANGE past 512 KiB. */
int lpcisp_sector_of(uint32_t addr);
/* Start address and size of a sector; -ERANGE for a bad sector. */
int lpcisp_sector_range(unsigned sector, uint32_t *ret_start, uint32_t *ret_size);
