/* SPDX-License-Identifier: GPL-2.0-or-later */
/* proto/sdspi: SD cards in SPI mode as a pure codec (SD Physical Layer Simplified
 * Specification, chapter 7 "SPI Mode"; protocols.md §4.1 step 4).
 *
 * What Klipper's scripts/spi_flash/spi_flash.py (class SDCardSPI) does, which this follows:
 * - Command frame: 0x40 | index, a 32-bit big-endian argument, then CRC7 (x^7 + x^3 + 1)
 *   shifted left with the end bit set (calc_crc7). Every command is sent with a valid CRC.
 * - Init: CMD0 until R1 = 0x01 (idle); CMD8 arg 0x1AA-style (0x100 | check pattern): an
 *   illegal-command R1 means a v1 card, else a 5-byte R7 with R1 0x01 echoing voltage 0x1
 *   and the pattern; CMD59 arg 1 turns CRC checking on; ACMD41 (CMD55 then CMD41) with HCS
 *   (bit 30) on v2 cards until R1 = 0x00; CMD58 reads the OCR, CCS (bit 30) = SDHC/SDXC with
 *   block addressing; v1 cards run ACMD41 (no HCS) after CMD58; CMD16 sets 512-byte blocks.
 * - Data blocks: start token 0xFE, 512 bytes, CRC16 (XMODEM: poly 0x1021, init 0, sent high
 *   byte first, calc_crc16). A write is answered by a data response token xxx0sss1 (0x05 =
 *   accepted), then busy (0x00) until the card is done; CMD13 (R2) reads the status after.
 * - CSD (CMD9, a 16-byte data block): version 1 capacity (C_SIZE+1) * 2^(C_SIZE_MULT+2) *
 *   2^READ_BL_LEN, version 2 (C_SIZE+1) * 512 KiB (_process_csd_reg).
 * One deliberate difference: spi_flash.py uses the check pattern 0b1010 (arg 0x10A); we send
 * the specification's recommended 0x1AA. No I/O here. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SDSPI_CMD_LEN 6
#define SDSPI_BLOCK 512u
#define SDSPI_TOKEN_START 0xfe
#define SDSPI_CHECK_PATTERN 0xaa

/* R1 bits */
#define SDSPI_R1_IDLE 0x01
#define SDSPI_R1_ERASE_RESET 0x02
#define SDSPI_R1_ILLEGAL 0x04
#define SDSPI_R1_CRC 0x08
#define SDSPI_R1_ERASE_SEQ 0x10
#define SDSPI_R1_ADDRESS 0x20
#define SDSPI_R1_PARAMETER 0x40

enum {
	SDSPI_CMD0_GO_IDLE = 0,
	SDSPI_CMD8_SEND_IF_COND = 8,
	SDSPI_CMD9_SEND_CSD = 9,
	SDSPI_CMD12_STOP = 12,
	SDSPI_CMD13_SEND_STATUS = 13,
	SDSPI_CMD16_SET_BLOCKLEN = 16,
	SDSPI_CMD17_READ_SINGLE = 17,
	SDSPI_CMD24_WRITE_SINGLE = 24,
	SDSPI_ACMD41_SEND_OP_COND = 41,
	SDSPI_CMD55_APP_CMD = 55,
	SDSPI_CMD58_READ_OCR = 58,
	SDSPI_CMD59_CRC_ON_OFF = 59,
};

/* CRC7 of the spec (the 7-bit value, not shifted). */
uint8_t sdspi_crc7(const uint8_t *data, size_t len);
/* CRC16-XMODEM of a data block. */
uint16_t sdspi_crc16(const uint8_t *data, size_t len);
/* The 6-byte command frame. */
void sdspi_command(uint8_t index, uint32_t arg, uint8_t out[SDSPI_CMD_LEN]);
/* Index of the first response byte (bit 7 clear) in bytes clocked out after a command, or
 * -ENOENT when the card left the line high (0xFF) throughout. */
int sdspi_find_r1(const uint8_t *buf, size_t len);
/* An R1 followed by 4 bytes (R3 for CMD58, R7 for CMD8): 0 with *r1 and *value, -ENOENT
 * (no response), -EBADMSG (cut short). An R1 with ILLEGAL set carries no trailing bytes:
 * *value is 0 and the result 0. */
int sdspi_parse_r37(const uint8_t *buf, size_t len, uint8_t *r1, uint32_t *value);
/* Data response token after a written block: 0 accepted, -EILSEQ CRC error, -EIO write
 * error, -EBADMSG not a token. */
int sdspi_data_response(uint8_t token);
/* Block address argument: the LBA for block-addressed (SDHC/SDXC) cards, the byte offset for
 * SDSC. -ERANGE when a byte offset would not fit in 32 bits. */
int sdspi_address(bool block_addressed, uint64_t lba, uint32_t *ret);
/* Card size in 512-byte sectors from a CSD register (CRC7 checked): 0, -EILSEQ bad CRC,
 * -EOPNOTSUPP unknown CSD structure. */
int sdspi_csd_sectors(const uint8_t csd[16], uint64_t *ret);
/* Find a start token followed by a whole block of `len` bytes + CRC16 in bytes clocked out
 * after the R1 of a read command. Returns the index of the first data byte, -EAGAIN when no
 * token yet (keep clocking), -EBADMSG when the token came but the block is cut short (clock
 * more), -EILSEQ on a CRC mismatch, -EIO on a data error token (0000xxxx). */
int sdspi_find_block(const uint8_t *buf, size_t n, size_t len);

/* The init sequence as a state machine: the caller sends sdspi_init_command(), clocks out
 * enough bytes for the answer (SDSPI_CMD_LEN + 8 0xFF bytes is plenty: Ncr <= 8) and feeds
 * them (without the command bytes) to sdspi_init_feed(). */
enum sdspi_init_step {
	SDSPI_INIT_CMD0,
	SDSPI_INIT_CMD8,
	SDSPI_INIT_CMD59,
	SDSPI_INIT_CMD55,
	SDSPI_INIT_ACMD41,
	SDSPI_INIT_CMD58,
	SDSPI_INIT_CMD16,
	SDSPI_INIT_DONE,
};

struct sdspi_init {
	enum sdspi_init_step step;
	unsigned version; /* 1 or 2, after CMD8 */
	bool sdhc;	  /* CCS: block addressing */
	bool ocr_read;
	unsigned tries; /* of the current step */
	bool wait;	/* the caller should pause ~10 ms before the next command */
};

void sdspi_init_start(struct sdspi_init *s);
void sdspi_init_command(const struct sdspi_init *s, uint8_t out[SDSPI_CMD_LEN]);
/* 0 go on, 1 done, -ENODEV no card answers CMD0, -ETIMEDOUT the card never left idle,
 * -EOPNOTSUPP unusable card (voltage, MMC), -EIO a command failed. */
int sdspi_init_feed(struct sdspi_init *s, const uint8_t *resp, size_t len);
/* Human name of an init step ("CMD8 SEND_IF_COND"), for messages. */
const char *sdspi_init_step_name(enum sdspi_init_step step);
