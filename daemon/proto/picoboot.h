/* SPDX-License-Identifier: GPL-2.0-or-later */
/* proto/picoboot: the pure codec of the RP2040 bootrom's PICOBOOT interface (protocols.md
 * §5.2; RP2040 datasheet §2.8.5; pico-sdk boot/picoboot.h). No I/O.
 *
 * A command is a 32-byte block on the bulk OUT endpoint, then an optional data phase
 * (bulk OUT for writes, bulk IN when bit 7 of the command id is set), then a zero-length
 * acknowledgement in the opposite direction. Two vendor control requests on the interface
 * reset it (clearing a halted command) and report the status of the last command. All
 * fields are little-endian. */
#ifndef SKRFLASH_PROTO_PICOBOOT_H
#define SKRFLASH_PROTO_PICOBOOT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PICOBOOT_MAGIC 0x431FD10Bu
#define PICOBOOT_CMD_SIZE 32u
#define PICOBOOT_STATUS_SIZE 16u
/* Vendor requests on the interface: bmRequestType 0x41 (OUT) / 0xC1 (IN). */
#define PICOBOOT_IF_RESET 0x41u
#define PICOBOOT_IF_CMD_STATUS 0x42u
/* RP2040 flash geometry as the bootrom enforces it. */
#define PICOBOOT_FLASH_BASE 0x10000000u
#define PICOBOOT_FLASH_MAX 0x01000000u /* 16 MiB of XIP address space */
#define PICOBOOT_SECTOR 4096u	       /* FLASH_ERASE unit */
#define PICOBOOT_PAGE 256u	       /* WRITE unit to flash */
#define PICOBOOT_SRAM_BASE 0x20000000u
#define PICOBOOT_SRAM_END 0x20042000u

enum picoboot_cmd_id {
	PICOBOOT_EXCLUSIVE_ACCESS = 0x01,
	PICOBOOT_REBOOT = 0x02,
	PICOBOOT_FLASH_ERASE = 0x03,
	PICOBOOT_READ = 0x84, /* bit 7: data phase IN */
	PICOBOOT_WRITE = 0x05,
	PICOBOOT_EXIT_XIP = 0x06,
	PICOBOOT_ENTER_CMD_XIP = 0x07,
	PICOBOOT_EXEC = 0x08,
	PICOBOOT_VECTORIZE_FLASH = 0x09,
};

/* EXCLUSIVE_ACCESS argument. */
enum picoboot_exclusive {
	PICOBOOT_NOT_EXCLUSIVE = 0,
	PICOBOOT_EXCLUSIVE = 1,
	PICOBOOT_EXCLUSIVE_AND_EJECT = 2,
};

/* dStatusCode of IF_CMD_STATUS (pico-sdk enum picoboot_status). */
enum picoboot_status {
	PICOBOOT_OK = 0,
	PICOBOOT_UNKNOWN_CMD = 1,
	PICOBOOT_INVALID_CMD_LENGTH = 2,
	PICOBOOT_INVALID_TRANSFER_LENGTH = 3,
	PICOBOOT_INVALID_ADDRESS = 4,
	PICOBOOT_BAD_ALIGNMENT = 5,
	PICOBOOT_INTERLEAVED_WRITE = 6,
	PICOBOOT_REBOOTING = 7,
	PICOBOOT_UNKNOWN_ERROR = 8,
};

/* One decoded command block. args holds the command's argument words as sent: range
 * commands (FLASH_ERASE, READ, WRITE) use addr + size, REBOOT pc + sp + delay_ms, EXEC and
 * VECTORIZE_FLASH addr, EXCLUSIVE_ACCESS exclusive. */
struct picoboot_cmd {
	uint32_t token;
	uint8_t id;
	uint8_t args_size;
	uint32_t transfer_length;
	uint32_t addr, size;
	uint32_t pc, sp, delay_ms;
	uint8_t exclusive;
};

struct picoboot_status_reply {
	uint32_t token;
	uint32_t status; /* enum picoboot_status */
	uint8_t cmd_id;
	bool in_progress;
};

/* Command block builders: fill out[PICOBOOT_CMD_SIZE]. Range commands check alignment
 * against what the bootrom accepts (-EINVAL otherwise). */
void picoboot_encode_simple(uint8_t out[PICOBOOT_CMD_SIZE], uint32_t token,
			    enum picoboot_cmd_id id);
void picoboot_encode_exclusive(uint8_t out[PICOBOOT_CMD_SIZE], uint32_t token,
			       enum picoboot_exclusive mode);
void picoboot_encode_reboot(uint8_t out[PICOBOOT_CMD_SIZE], uint32_t token, uint32_t pc,
			    uint32_t sp, uint32_t delay_ms);
int picoboot_encode_range(uint8_t out[PICOBOOT_CMD_SIZE], uint32_t token, enum picoboot_cmd_id id,
			  uint32_t addr, uint32_t size);

/* Decode and check a command block as the bootrom does: magic, a known id, bCmdSize equal
 * to that command's argument size and dTransferLength as the command implies. 0, or the
 * enum picoboot_status the device reports (positive) when the block is refused. */
int picoboot_decode_cmd(const uint8_t *buf, size_t len, struct picoboot_cmd *ret);
/* Check a decoded range command's address and alignment against the RP2040 rules:
 * FLASH_ERASE 4 KiB, WRITE to flash 256 bytes, all inside flash or SRAM. 0 or a status. */
int picoboot_check_range(const struct picoboot_cmd *c);

void picoboot_encode_status(uint8_t out[PICOBOOT_STATUS_SIZE],
			    const struct picoboot_status_reply *s);
int picoboot_decode_status(const uint8_t *buf, size_t len, struct picoboot_status_reply *ret);
/* "invalid address" etc.; never NULL. */
const char *picoboot_status_to_string(uint32_t status);
/* Whether the command has a data phase IN (device to host). */
bool picoboot_cmd_is_in(uint8_t id);

/* CRC-32/MPEG-2 (poly 0x04C11DB7, init 0xFFFFFFFF, not reflected, no final xor): the
 * checksum in the last word of RP2040 boot2 (protocols.md §5.2). */
uint32_t picoboot_crc32(const uint8_t *buf, size_t len, uint32_t crc);
/* Whether 256 bytes of boot2 carry their valid checksum in bytes 252-255. */
bool picoboot_boot2_valid(const uint8_t boot2[256]);

#endif
