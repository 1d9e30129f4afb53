/* SPDX-License-Identifier: GPL-2.0-or-later */
/* proto/an3155: the pure codec of the STM32 ROM USART bootloader protocol (ST AN3155).
 *
 * 0x7F autobaud, ACK/NACK bytes, command + complement, MSB-first addresses with an XOR
 * checksum, data blocks with a length byte and XOR checksum, Extended Erase page/sector
 * lists and special codes, and the parsers of the Get / Get Version / Get ID replies.
 * Facts and sources: research round2-uart-rescue.md §2 (AN3155, AN2662 pages, the verified
 * stm32flash 0.7 sequence). Shared by the rescue client and the USART simulator (which uses
 * the device-side parsers); no I/O here. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define AN3155_SYNC 0x7f /* sent once after reset; the ROM measures it for its baud rate */
#define AN3155_ACK 0x79
#define AN3155_NACK 0x1f
#define AN3155_BUSY 0x76 /* tolerated while waiting, as stm32flash does */

/* AN3155 §2 command codes */
enum an3155_cmd {
	AN3155_CMD_GET = 0x00,
	AN3155_CMD_GET_VERSION = 0x01,
	AN3155_CMD_GET_ID = 0x02,
	AN3155_CMD_READ = 0x11,
	AN3155_CMD_GO = 0x21,
	AN3155_CMD_WRITE = 0x31,
	AN3155_CMD_ERASE = 0x43,
	AN3155_CMD_EXT_ERASE = 0x44,
	AN3155_CMD_WRITE_PROTECT = 0x63,
	AN3155_CMD_WRITE_UNPROTECT = 0x73,
	AN3155_CMD_READOUT_PROTECT = 0x82,
	AN3155_CMD_READOUT_UNPROTECT = 0x92,
};

#define AN3155_BLOCK_MAX 256 /* Read/Write Memory move at most 256 bytes */
#define AN3155_EXT_ERASE_MASS 0xffffu
#define AN3155_EXT_ERASE_BANK1 0xfffeu
#define AN3155_EXT_ERASE_BANK2 0xfffdu
#define AN3155_EXT_ERASE_MAX_PAGES 512 /* more than any supported part has sectors/pages */

/* Get reply (§3.1): bootloader version and the commands it supports. */
struct an3155_info {
	uint8_t version; /* 0x31 = 3.1 */
	uint8_t n_cmds;
	uint8_t cmds[32];
};

/* The command frame: code, code ^ 0xFF. */
void an3155_cmd(uint8_t code, uint8_t out[2]);
/* Device side: true when in[1] is the complement of in[0]. */
bool an3155_cmd_check(const uint8_t in[2]);
/* Address frame: 4 bytes MSB first + XOR of the four. 0x08008000 -> 08 00 80 00 88. */
void an3155_addr(uint32_t addr, uint8_t out[5]);
/* Device side: 0, or -EBADMSG when the checksum is wrong. */
int an3155_parse_addr(const uint8_t in[5], uint32_t *ret_addr);
/* Read length frame: N-1 and its complement (1 <= n <= 256, else -EINVAL). */
int an3155_read_len(size_t n, uint8_t out[2]);
/* Device side: the byte count of a Read length frame, or -EBADMSG. */
int an3155_parse_read_len(const uint8_t in[2], size_t *ret_n);
/* Write Memory data frame: N-1, N bytes, XOR of N-1 and the bytes. n must be 1..256 and a
 * multiple of 4 (the host pads with 0xFF, as stm32flash does). Returns the frame length,
 * -EINVAL or -ENOBUFS. */
int an3155_write_frame(const uint8_t *data, size_t n, uint8_t *out, size_t outlen);
/* Device side: parse a Write data frame from a stream. Returns the frame length when a whole
 * frame is there (*ret_data points into in), 0 when more bytes are needed, -EBADMSG for a
 * checksum mismatch. */
int an3155_parse_write_frame(const uint8_t *in, size_t len, const uint8_t **ret_data,
			     size_t *ret_n);
/* Extended Erase (§3.8) of a page/sector list: N-1 (2 bytes, MSB first), each number as 2
 * bytes MSB first, XOR of all those bytes. n is 1..AN3155_EXT_ERASE_MAX_PAGES, and no number
 * may be a special code (>= 0xFFF0). Returns the frame length, -EINVAL or -ENOBUFS. */
int an3155_ext_erase_frame(const uint16_t *pages, size_t n, uint8_t *out, size_t outlen);
/* Extended Erase special code (mass / bank 1 / bank 2): 2 bytes + their XOR. */
void an3155_ext_erase_special(uint16_t code, uint8_t out[3]);
/* Device side: parse an Extended Erase frame. Returns its length when complete (pages in
 * pages[0..*ret_n), or *ret_n = 0 and *ret_special = the code), 0 when more bytes are
 * needed, -EBADMSG for a bad checksum, -E2BIG for more than max_pages numbers. */
int an3155_parse_ext_erase(const uint8_t *in, size_t len, uint16_t *pages, size_t max_pages,
			   size_t *ret_n, uint16_t *ret_special);
/* Legacy Erase (0x43) of 1..255 pages: N-1, pages, XOR. */
int an3155_erase_frame(const uint8_t *pages, size_t n, uint8_t *out, size_t outlen);

/* Host side reply parsers; in = the bytes after the first ACK. Each returns the bytes
 * consumed (including the final ACK) when complete, 0 when more bytes are needed, -EPROTO
 * when the reply is malformed (no final ACK). */
int an3155_parse_get(const uint8_t *in, size_t len, struct an3155_info *ret);
int an3155_parse_get_version(const uint8_t *in, size_t len, uint8_t *ret_version);
int an3155_parse_get_id(const uint8_t *in, size_t len, uint16_t *ret_pid);
/* True when the Get reply lists the command. */
bool an3155_has_cmd(const struct an3155_info *info, uint8_t code);
/* Device family of a product ID (AN2606 / stm32flash dev_table), NULL when unknown. */
const char *an3155_pid_name(uint16_t pid);
