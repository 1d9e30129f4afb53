/* SPDX-License-Identifier: GPL-2.0-or-later */
/* proto/picoboot: PICOBOOT command blocks and status replies (protocols.md §5.2, RP2040
 * datasheet §2.8.5, pico-sdk src/common/boot_picoboot/include/boot/picoboot.h). Pure. */
#include "proto/picoboot.h"

#include <errno.h>
#include <string.h>

static void
put32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
	p[2] = (uint8_t)(v >> 16);
	p[3] = (uint8_t)(v >> 24);
}

static uint32_t
get32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Argument bytes of each command (bCmdSize), as the bootrom expects them exactly:
 * range {dAddr, dSize}, reboot {dPC, dSP, dDelayMS}, address_only {dAddr},
 * exclusive {bExclusive}. -1: unknown command. */
static int
args_size(uint8_t id)
{
	switch (id) {
	case PICOBOOT_EXCLUSIVE_ACCESS:
		return 1;
	case PICOBOOT_REBOOT:
		return 12;
	case PICOBOOT_FLASH_ERASE:
	case PICOBOOT_READ:
	case PICOBOOT_WRITE:
		return 8;
	case PICOBOOT_EXIT_XIP:
	case PICOBOOT_ENTER_CMD_XIP:
		return 0;
	case PICOBOOT_EXEC:
	case PICOBOOT_VECTORIZE_FLASH:
		return 4;
	default:
		return -1;
	}
}

static void
header(uint8_t out[PICOBOOT_CMD_SIZE], uint32_t token, uint8_t id, uint32_t transfer_length)
{
	memset(out, 0, PICOBOOT_CMD_SIZE);
	put32(out, PICOBOOT_MAGIC);
	put32(out + 4, token);
	out[8] = id;
	out[9] = (uint8_t)args_size(id);
	put32(out + 12, transfer_length);
}

void
picoboot_encode_simple(uint8_t out[PICOBOOT_CMD_SIZE], uint32_t token, enum picoboot_cmd_id id)
{
	header(out, token, (uint8_t)id, 0);
}

void
picoboot_encode_exclusive(uint8_t out[PICOBOOT_CMD_SIZE], uint32_t token,
			  enum picoboot_exclusive mode)
{
	header(out, token, PICOBOOT_EXCLUSIVE_ACCESS, 0);
	out[16] = (uint8_t)mode;
}

void
picoboot_encode_reboot(uint8_t out[PICOBOOT_CMD_SIZE], uint32_t token, uint32_t pc, uint32_t sp,
		       uint32_t delay_ms)
{
	header(out, token, PICOBOOT_REBOOT, 0);
	put32(out + 16, pc);
	put32(out + 20, sp);
	put32(out + 24, delay_ms);
}

int
picoboot_encode_range(uint8_t out[PICOBOOT_CMD_SIZE], uint32_t token, enum picoboot_cmd_id id,
		      uint32_t addr, uint32_t size)
{
	struct picoboot_cmd c = {.id = (uint8_t)id, .addr = addr, .size = size};

	if (id != PICOBOOT_FLASH_ERASE && id != PICOBOOT_READ && id != PICOBOOT_WRITE)
		return -EINVAL;
	if (picoboot_check_range(&c) != PICOBOOT_OK)
		return -EINVAL;
	header(out, token, (uint8_t)id, id == PICOBOOT_FLASH_ERASE ? 0 : size);
	put32(out + 16, addr);
	put32(out + 20, size);
	return 0;
}

bool
picoboot_cmd_is_in(uint8_t id)
{
	return (id & 0x80u) != 0;
}

int
picoboot_decode_cmd(const uint8_t *buf, size_t len, struct picoboot_cmd *ret)
{
	int want;

	memset(ret, 0, sizeof(*ret));
	if (len != PICOBOOT_CMD_SIZE || get32(buf) != PICOBOOT_MAGIC)
		return PICOBOOT_UNKNOWN_CMD;
	ret->token = get32(buf + 4);
	ret->id = buf[8];
	ret->args_size = buf[9];
	ret->transfer_length = get32(buf + 12);
	want = args_size(ret->id);
	if (want < 0)
		return PICOBOOT_UNKNOWN_CMD;
	if (ret->args_size != want)
		return PICOBOOT_INVALID_CMD_LENGTH;
	ret->addr = get32(buf + 16);
	ret->size = get32(buf + 20);
	ret->pc = ret->addr;
	ret->sp = ret->size;
	ret->delay_ms = get32(buf + 24);
	ret->exclusive = buf[16];
	switch (ret->id) {
	case PICOBOOT_READ:
	case PICOBOOT_WRITE:
		/* the data phase carries exactly the range */
		return ret->transfer_length == ret->size ? PICOBOOT_OK
							 : PICOBOOT_INVALID_TRANSFER_LENGTH;
	default:
		return ret->transfer_length == 0 ? PICOBOOT_OK : PICOBOOT_INVALID_TRANSFER_LENGTH;
	}
}

static bool
inside(uint32_t addr, uint32_t size, uint32_t base, uint32_t len)
{
	return addr >= base && size <= len && addr - base <= len - size;
}

int
picoboot_check_range(const struct picoboot_cmd *c)
{
	bool flash = inside(c->addr, c->size, PICOBOOT_FLASH_BASE, PICOBOOT_FLASH_MAX);
	bool sram =
	    inside(c->addr, c->size, PICOBOOT_SRAM_BASE, PICOBOOT_SRAM_END - PICOBOOT_SRAM_BASE);

	switch (c->id) {
	case PICOBOOT_FLASH_ERASE:
		if (!flash)
			return PICOBOOT_INVALID_ADDRESS;
		return c->addr % PICOBOOT_SECTOR || c->size % PICOBOOT_SECTOR
			   ? PICOBOOT_BAD_ALIGNMENT
			   : PICOBOOT_OK;
	case PICOBOOT_WRITE:
		if (sram)
			return PICOBOOT_OK;
		if (!flash)
			return PICOBOOT_INVALID_ADDRESS;
		return c->addr % PICOBOOT_PAGE || c->size % PICOBOOT_PAGE ? PICOBOOT_BAD_ALIGNMENT
									  : PICOBOOT_OK;
	case PICOBOOT_READ:
		return flash || sram ? PICOBOOT_OK : PICOBOOT_INVALID_ADDRESS;
	default:
		return PICOBOOT_OK;
	}
}

void
picoboot_encode_status(uint8_t out[PICOBOOT_STATUS_SIZE], const struct picoboot_status_reply *s)
{
	memset(out, 0, PICOBOOT_STATUS_SIZE);
	put32(out, s->token);
	put32(out + 4, s->status);
	out[8] = s->cmd_id;
	out[9] = s->in_progress ? 1 : 0;
}

int
picoboot_decode_status(const uint8_t *buf, size_t len, struct picoboot_status_reply *ret)
{
	if (len < PICOBOOT_STATUS_SIZE)
		return -EBADMSG;
	ret->token = get32(buf);
	ret->status = get32(buf + 4);
	ret->cmd_id = buf[8];
	ret->in_progress = buf[9] != 0;
	return 0;
}

const char *
picoboot_status_to_string(uint32_t status)
{
	/* In the order of the enum: Klipper's rp2040_flash prints these from a table in a
	 * different order, so its messages mislabel codes 2-6 (protocols.md §5.2). */
	static const char *const names[] = {
	    "ok",
	    "unknown command",
	    "invalid command length",
	    "invalid transfer length",
	    "invalid address",
	    "bad alignment",
	    "interleaved write (the USB drive is being written at the same time)",
	    "rebooting",
	    "unknown error",
	};

	return status < sizeof(names) / sizeof(names[0]) ? names[status] : "unknown status";
}

uint32_t
picoboot_crc32(const uint8_t *buf, size_t len, uint32_t crc)
{
	for (size_t i = 0; i < len; i++) {
		crc ^= (uint32_t)buf[i] << 24;
		for (int b = 0; b < 8; b++)
			crc = crc & 0x80000000u ? crc << 1 ^ 0x04C11DB7u : crc << 1;
	}
	return crc;
}

bool
picoboot_boot2_valid(const uint8_t boot2[256])
{
	return picoboot_crc32(boot2, 252, 0xFFFFFFFFu) == get32(boot2 + 252);
}
