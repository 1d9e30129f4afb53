/* SPDX-License-Identifier: GPL-2.0-or-later */
/* rescue_stm32: STM32 USART bootloader client. See rescue_stm32.h and research round2 §2.
 *
 * The sequence follows what stm32flash 0.7 sends (research §2.3, read to learn the
 * protocol): 0x7F, Get, Get ID, Extended Erase of a sector list, Write Memory in 256-byte
 * blocks, Read Memory to verify. Unlike a plain stm32flash run it reads the old bootloader
 * area first, erases only the bootloader sectors and leaves by BOOT0 low + RESET, not Go. */
#include "flash/rescue_stm32.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>

#include "proto/an3155.h"

#define SYNC_WAIT_MS 250

struct stm {
	int fd;
	const struct rescue_opts *o;
	struct rescue_result *res;
	unsigned timeout;
	bool garbage;
	bool ext_erase;
};

/* Product IDs (AN2606) of the MCUs in the catalog. */
static uint16_t
expected_pid(const char *mcu)
{
	static const struct {
		const char *prefix;
		uint16_t pid;
	} t[] = {
	    {"stm32f407", 0x413}, {"stm32f405", 0x413}, {"stm32f429", 0x419},
	    {"stm32f446", 0x421}, {"stm32h723", 0x483}, {"stm32h743", 0x450},
	    {"stm32g0b1", 0x467}, {"stm32f103", 0x414}, {"stm32f401", 0x433},
	};

	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++)
		if (strncmp(mcu, t[i].prefix, strlen(t[i].prefix)) == 0)
			return t[i].pid;
	return 0;
}

static int
read_exact(struct stm *c, uint8_t *b, size_t n, unsigned timeout)
{
	size_t got = 0;

	while (got < n) {
		int r = rescue_read(c->fd, b + got, n - got, timeout);

		if (r < 0)
			return r;
		if (r == 0)
			return -ETIMEDOUT;
		got += (size_t)r;
	}
	return 0;
}

/* ACK -> 0, NACK -> -EPERM, timeout -> -ETIMEDOUT; BUSY is waited out (as stm32flash). */
static int
wait_ack(struct stm *c, unsigned timeout)
{
	for (;;) {
		uint8_t b;
		int r = read_exact(c, &b, 1, timeout);

		if (r < 0)
			return r;
		if (b == AN3155_ACK)
			return 0;
		if (b == AN3155_NACK)
			return -EPERM;
		if (b != AN3155_BUSY) {
			c->garbage = true;
			return -EPROTO;
		}
	}
}

static int
send_wait(struct stm *c, const uint8_t *b, size_t n, unsigned timeout)
{
	int r = rescue_write(c->fd, b, n);

	return r < 0 ? r : wait_ack(c, timeout);
}

static int
send_cmd(struct stm *c, uint8_t code)
{
	uint8_t b[2];

	an3155_cmd(code, b);
	return send_wait(c, b, 2, c->timeout);
}

/* Set the error once (the first, most specific one wins); returns r. */
static int
fail(struct stm *c, int r, const char *what)
{
	if (c->res->error[0])
		return r;
	if (r == -EPERM)
		rescue_error(c->res, "%s: the STM32 ROM refused %s (NACK)", c->o->tty, what);
	else if (r == -ETIMEDOUT)
		rescue_error(c->res, "%s: the STM32 ROM stopped answering during %s", c->o->tty,
			     what);
	else
		rescue_error(c->res, "%s: %s failed: %s", c->o->tty, what, strerror(-r));
	return r;
}

static int
sync_once(void *ctx)
{
	struct stm *c = ctx;
	uint8_t b = AN3155_SYNC;
	int r;

	tcflush(c->fd, TCIFLUSH);
	if ((r = rescue_write(c->fd, &b, 1)) < 0)
		return r;
	r = read_exact(c, &b, 1, SYNC_WAIT_MS);
	if (r == -ETIMEDOUT)
		return -EAGAIN;
	if (r < 0)
		return r;
	/* NACK: the ROM was already synchronised by an earlier session (stm32flash alike) */
	if (b == AN3155_ACK || b == AN3155_NACK)
		return 0;
	c->garbage = true;
	return -EAGAIN;
}

static int
stm_sync(struct stm *c)
{
	unsigned tries = c->o->sync_tries ? c->o->sync_tries : 10;
	/* BOOT0 stays high until gpio_run: the ROM latches it at reset */
	int r = rescue_sync(c->o, c->res, false, sync_once, c);

	if (r != -EAGAIN) {
		return r < 0 ? fail(c, r, "synchronisation") : r;
	}
	if (c->garbage)
		rescue_error(c->res,
			     "%s: the STM32 ROM answers, but garbled: wrong baud rate or framing "
			     "(it needs 8E1), or a noisy line; check GND",
			     c->o->tty);
	else
		rescue_error(
		    c->res,
		    "%s: no answer from the STM32 ROM bootloader after %u tries: check "
		    "TX/RX are crossed (PA9/PA10 on USART1) and GND shared, and that BOOT0 "
		    "is high while RESET is released%s",
		    c->o->tty, tries,
		    c->o->gpio ? " (is the BOOT0 line wired to the BOOT0 pin, and RESET to "
				 "NRST?)"
			       : " (set the BOOT0 jumper, press RESET)");
	return -ETIMEDOUT;
}

/* Read a counted reply (after the ACK) byte by byte until the parser has it all. */
static int
reply(struct stm *c, uint8_t *b, size_t cap, size_t *len)
{
	int r;

	if (*len >= cap)
		return -EPROTO;
	r = read_exact(c, b + *len, 1, c->timeout);
	if (r == 0)
		(*len)++;
	return r;
}

static int
identify(struct stm *c)
{
	struct an3155_info info;
	uint8_t b[64];
	size_t n = 0;
	uint16_t pid = 0, want;
	int r;

	if ((r = send_cmd(c, AN3155_CMD_GET)) < 0)
		return fail(c, r, "Get");
	while ((r = an3155_parse_get(b, n, &info)) == 0)
		if ((r = reply(c, b, sizeof(b), &n)) < 0)
			return fail(c, r, "Get");
	if (r < 0)
		return fail(c, r, "Get");
	c->res->rom_version = info.version;
	c->ext_erase = an3155_has_cmd(&info, AN3155_CMD_EXT_ERASE);
	if ((r = send_cmd(c, AN3155_CMD_GET_ID)) < 0)
		return fail(c, r, "Get ID");
	n = 0;
	while ((r = an3155_parse_get_id(b, n, &pid)) == 0)
		if ((r = reply(c, b, sizeof(b), &n)) < 0)
			return fail(c, r, "Get ID");
	if (r < 0)
		return fail(c, r, "Get ID");
	c->res->part_id = pid;
	want = expected_pid(c->o->mcu->name);
	if (pid != want) {
		const char *name = an3155_pid_name(pid);

		rescue_error(
		    c->res,
		    "%s: the ROM reports %s (product ID 0x%03x) but the board profile says "
		    "%s: wrong board or profile; nothing was written",
		    c->o->tty, name ? name : "an unknown STM32", pid, c->o->mcu->name);
		return -ENODEV;
	}
	return 0;
}

static void
rdp_error(struct stm *c)
{
	rescue_error(c->res,
		     "%s: the STM32 has read protection (RDP) on: the ROM refuses to read or write "
		     "flash. Removing it mass-erases the whole chip, application included; "
		     "skrflash will not do that. Nothing was erased",
		     c->o->tty);
}

static int
read_mem(struct stm *c, uint32_t addr, uint8_t *out, size_t n)
{
	uint8_t b[5];
	int r = send_cmd(c, AN3155_CMD_READ);

	if (r == -EPERM) {
		rdp_error(c);
		return -EACCES;
	}
	an3155_addr(addr, b);
	if (r < 0 || (r = send_wait(c, b, 5, c->timeout)) < 0)
		return r;
	(void)an3155_read_len(n, b);
	if ((r = send_wait(c, b, 2, c->timeout)) < 0)
		return r;
	return read_exact(c, out, n, c->timeout);
}

static int
save_old(struct stm *c)
{
	uint32_t size = c->o->boot_size, base = c->o->mcu->flash_base;

	c->res->old_boot = malloc(size);
	if (!c->res->old_boot)
		return -ENOMEM;
	for (uint32_t off = 0; off < size; off += AN3155_BLOCK_MAX) {
		int r;

		rescue_progress(c->o, "read", off, size);
		r = read_mem(c, base + off, c->res->old_boot + off, AN3155_BLOCK_MAX);
		if (r < 0)
			return fail(c, r, "reading the old bootloader (nothing was erased)");
	}
	c->res->old_boot_len = size;
	return 0;
}

static int
erase(struct stm *c, uint32_t mask)
{
	uint16_t pages[32];
	uint8_t b[2 + 2 * 32 + 1];
	size_t n = 0;
	int r;

	for (uint16_t i = 0; i < 32; i++)
		if (mask & (1u << i))
			pages[n++] = i; /* F4/H7: Extended Erase numbers are sector indices */
	if (!c->ext_erase) {
		rescue_error(c->res,
			     "%s: this ROM has no Extended Erase; the legacy Erase is not used by "
			     "skrflash (no catalog board needs it)",
			     c->o->tty);
		return -EOPNOTSUPP;
	}
	if ((r = send_cmd(c, AN3155_CMD_EXT_ERASE)) == -EPERM) {
		rdp_error(c);
		return -EACCES;
	}
	if (r < 0)
		return fail(c, r, "Extended Erase");
	r = an3155_ext_erase_frame(pages, n, b, sizeof(b));
	if (r < 0)
		return fail(c, r, "Extended Erase");
	/* stm32flash allows 5 s per page; a 128 KiB F4/H7 sector takes about 1-2 s */
	r = send_wait(c, b, (size_t)r, c->timeout + 5000 * (unsigned)n);
	if (r < 0)
		return fail(c, r, "erasing the bootloader sectors");
	c->res->erased_sectors = mask;
	return 0;
}

static int
write_block(struct stm *c, uint32_t addr, const uint8_t *data)
{
	uint8_t b[2 + AN3155_BLOCK_MAX];
	int r;

	if ((r = send_cmd(c, AN3155_CMD_WRITE)) < 0)
		return r;
	an3155_addr(addr, b);
	if ((r = send_wait(c, b, 5, c->timeout)) < 0)
		return r;
	r = an3155_write_frame(data, AN3155_BLOCK_MAX, b, sizeof(b));
	return r < 0 ? r : send_wait(c, b, (size_t)r, c->timeout + 1000);
}

static int
write_verify(struct stm *c, const uint8_t *data)
{
	uint32_t size = c->o->boot_size, base = c->o->mcu->flash_base;
	uint8_t back[AN3155_BLOCK_MAX];
	int r;

	for (uint32_t off = 0; off < size; off += AN3155_BLOCK_MAX) {
		bool blank = true;

		for (uint32_t i = 0; i < AN3155_BLOCK_MAX && blank; i++)
			blank = data[off + i] == 0xff;
		if (blank)
			continue;
		if ((r = write_block(c, base + off, data + off)) < 0) {
			rescue_error(c->res,
				     "%s: writing 0x%08x failed (%s): the bootloader area is "
				     "incomplete; keep BOOT0 set and run the rescue again",
				     c->o->tty, base + off, r == -EPERM ? "NACK" : strerror(-r));
			return r;
		}
		c->res->bytes_written += AN3155_BLOCK_MAX;
		rescue_progress(c->o, "write", off, size);
	}
	for (uint32_t off = 0; off < size; off += AN3155_BLOCK_MAX) {
		rescue_progress(c->o, "verify", off, size);
		if ((r = read_mem(c, base + off, back, AN3155_BLOCK_MAX)) < 0)
			return fail(c, r, "reading back");
		for (uint32_t i = 0; i < AN3155_BLOCK_MAX; i++) {
			if (back[i] != data[off + i]) {
				rescue_error(c->res,
					     "%s: verify failed at 0x%08x (wrote 0x%02x, read "
					     "0x%02x): keep BOOT0 set and run the rescue again",
					     c->o->tty, base + off + i, data[off + i], back[i]);
				return -EIO;
			}
		}
		c->res->bytes_verified += AN3155_BLOCK_MAX;
	}
	return 0;
}

int
rescue_stm32_install(int fd, const struct rescue_opts *o, const uint8_t *img, size_t len,
		     uint32_t sector_mask, struct rescue_result *res)
{
	struct stm c = {.fd = fd, .o = o, .res = res};
	uint8_t *data = malloc(o->boot_size);
	int r = -ENOMEM;

	c.timeout = o->timeout_ms ? o->timeout_ms : 1000;
	if (!data || o->boot_size % AN3155_BLOCK_MAX)
		goto out;
	memset(data, 0xff, o->boot_size);
	memcpy(data, img, len);
	if ((r = stm_sync(&c)) < 0 || (r = identify(&c)) < 0 || (r = save_old(&c)) < 0)
		goto out;
	rescue_progress(o, "erase", 0, 1);
	if ((r = erase(&c, sector_mask)) < 0 || (r = write_verify(&c, data)) < 0)
		goto out;
	r = rescue_finish(o);
out:
	if (r == -ENOMEM && !res->error[0])
		rescue_error(res,
			     "%s: out of memory, or a bootloader area that is not whole "
			     "256-byte blocks",
			     o->tty);
	free(data);
	return r;
}
