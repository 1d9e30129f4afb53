/* SPDX-License-Identifier: GPL-2.0-or-later */
/* rescue_lpc: LPC176x UART ISP client. See rescue_lpc.h and research round2 §1.11.
 *
 * What lpc21isp does against the same ROM (its lpcprog.c NxpDownload, read to learn the
 * sequence): sync, U 23130, J, erase sector 0 first, program the other sectors, sector 0
 * last, G 0 T. We differ where the research recommends: echo off after sync (no echo
 * parsing in the data phase), erase only the bootloader sectors, pad with 0xFF instead of
 * copying stale RAM, verify the other sectors before sector 0 makes the code valid, and
 * leave by RESET instead of G. */
#include "flash/rescue_lpc.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>

#include "proto/lpcisp.h"

#define SYNC_WAIT_MS 250
#define MAX_RESEND 5

struct lpc {
	int fd;
	const struct rescue_opts *o;
	struct rescue_result *res;
	uint8_t buf[512];
	size_t len;
	bool garbage; /* bytes no ISP answer contains: a baud mismatch */
	unsigned timeout;
};

static void
note_garbage(struct lpc *c, const uint8_t *b, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (b[i] >= 0x80 || (b[i] < 0x20 && b[i] != '\r' && b[i] != '\n' &&
				     b[i] != LPCISP_XON && b[i] != LPCISP_XOFF))
			c->garbage = true;
}

static void
drop(struct lpc *c, size_t n)
{
	memmove(c->buf, c->buf + n, c->len - n);
	c->len -= n;
}

/* Next answer line within timeout_ms: 0, -ETIMEDOUT or -errno. */
static int
read_line(struct lpc *c, char *line, size_t n, unsigned timeout_ms)
{
	for (;;) {
		size_t skip;
		int r = lpcisp_line_next(c->buf, c->len, line, n, &skip);

		if (r > 0) {
			drop(c, (size_t)r);
			return 0;
		}
		drop(c, skip);
		if (r < 0) {
			c->garbage = true;
			continue;
		}
		if (c->len == sizeof(c->buf))
			c->len = 0;
		r = rescue_read(c->fd, c->buf + c->len, sizeof(c->buf) - c->len, timeout_ms);
		if (r < 0)
			return r;
		if (r == 0)
			return -ETIMEDOUT;
		note_garbage(c, c->buf + c->len, (size_t)r);
		c->len += (size_t)r;
	}
}

static int
send_text(struct lpc *c, const char *text)
{
	return rescue_write(c->fd, text, strlen(text));
}

/* Read lines until one equals want (echoes and blank lines skipped). */
static int
expect(struct lpc *c, const char *want, unsigned timeout_ms)
{
	char line[LPCISP_LINE_MAX];

	for (unsigned i = 0; i < 8; i++) {
		int r = read_line(c, line, sizeof(line), timeout_ms);

		if (r < 0)
			return r;
		if (strcmp(line, want) == 0)
			return 0;
	}
	return -EPROTO;
}

/* Send a command; returns its return code (>= 0), or -errno. The echo (while echo is on)
 * is the command itself and is skipped. */
static int
command(struct lpc *c, enum lpcisp_op op, uint32_t a, uint32_t b, uint32_t x, unsigned wait)
{
	struct lpcisp_cmd cmd = {op, a, b, x};
	char text[LPCISP_LINE_MAX], line[LPCISP_LINE_MAX];
	int r = lpcisp_format(&cmd, text, sizeof(text));

	if (r < 0)
		return r;
	if ((r = send_text(c, text)) < 0)
		return r;
	text[strcspn(text, "\r\n")] = '\0';
	for (unsigned i = 0; i < 4; i++) {
		if ((r = read_line(c, line, sizeof(line), wait)) < 0)
			return r;
		if (strcmp(line, text) == 0)
			continue;
		return lpcisp_parse_rc(line) < 0 ? -EPROTO : lpcisp_parse_rc(line);
	}
	return -EPROTO;
}

/* A command that must answer CMD_SUCCESS; anything else becomes res->error. */
static int
must(struct lpc *c, const char *what, enum lpcisp_op op, uint32_t a, uint32_t b, uint32_t x,
     unsigned wait)
{
	int r = command(c, op, a, b, x, wait);

	if (r == LPCISP_CMD_SUCCESS)
		return 0;
	if (r == -ETIMEDOUT)
		rescue_error(c->res, "%s: the LPC ROM stopped answering during %s", c->o->tty,
			     what);
	else if (r < 0)
		rescue_error(c->res, "%s: %s failed: %s", c->o->tty, what, strerror(-r));
	else
		rescue_error(c->res, "%s: the LPC ROM refused %s: %d %s", c->o->tty, what, r,
			     lpcisp_rc_name(r));
	return r < 0 ? r : -EIO;
}

static int
sync_once(void *ctx)
{
	struct lpc *c = ctx;
	char line[LPCISP_LINE_MAX];
	int r;

	tcflush(c->fd, TCIFLUSH);
	c->len = 0;
	if ((r = send_text(c, "?")) < 0)
		return r;
	r = read_line(c, line, sizeof(line), SYNC_WAIT_MS);
	if (r < 0 || strcmp(line, LPCISP_SYNC_STRING) != 0)
		return r < 0 && r != -ETIMEDOUT ? r : -EAGAIN;
	/* UM10360 §32.7: echo the string, then the crystal in kHz; each answered OK */
	if ((r = send_text(c, LPCISP_SYNC_STRING "\r\n")) < 0 ||
	    (r = expect(c, LPCISP_OK_STRING, c->timeout)) < 0)
		return r == -ETIMEDOUT || r == -EPROTO ? -EAGAIN : r;
	if ((r = lpcisp_format_crystal(c->o->crystal_khz ? c->o->crystal_khz : 12000, line,
				       sizeof(line))) < 0 ||
	    (r = send_text(c, line)) < 0 || (r = expect(c, LPCISP_OK_STRING, c->timeout)) < 0)
		return r == -ETIMEDOUT || r == -EPROTO ? -EAGAIN : r;
	return 0;
}

static void
sync_error(struct lpc *c, unsigned tries)
{
	const struct rescue_opts *o = c->o;

	if (c->garbage)
		rescue_error(c->res,
			     "%s: the LPC176x ROM answers, but garbled: its autobaud did not lock "
			     "on (wrong baud rate or crystal, or a noisy line); try 57600 or 38400 "
			     "and check that GND is shared",
			     o->tty);
	else if (o->gpio)
		rescue_error(c->res,
			     "%s: no answer from the LPC176x ROM after %u tries: check TX/RX are "
			     "crossed and GND shared, that the ISP line really pulls P2.10 low and "
			     "RESET is wired; if Klipper asked for its bootloader just before, the "
			     "watchdog flag makes the ROM ignore P2.10 until a power cycle: switch "
			     "the board off and on, and retry",
			     o->tty, tries);
	else
		rescue_error(c->res,
			     "%s: no answer from the LPC176x ROM after %u tries: hold ISP (P2.10) "
			     "low, press and release RESET, then release ISP; check TX/RX are "
			     "crossed and GND shared; if it still does not answer, power-cycle the "
			     "board (a watchdog reset makes the ROM ignore P2.10) and retry",
			     o->tty, tries);
}

static int
lpc_sync(struct lpc *c)
{
	unsigned tries = c->o->sync_tries ? c->o->sync_tries : 10;
	int r = rescue_sync(c->o, c->res, true, sync_once, c);

	if (r == -EAGAIN)
		sync_error(c, tries);
	else if (r < 0)
		rescue_error(c->res, "%s: %s while synchronising", c->o->tty, strerror(-r));
	return r == -EAGAIN ? -ETIMEDOUT : r;
}

static int
read_values(struct lpc *c, uint32_t *v, unsigned n)
{
	char line[LPCISP_LINE_MAX];

	for (unsigned i = 0; i < n; i++) {
		int r = read_line(c, line, sizeof(line), c->timeout);

		if (r < 0)
			return r;
		if (lpcisp_parse_u32(line, &v[i]) < 0)
			return -EPROTO;
	}
	return 0;
}

static int
identify(struct lpc *c)
{
	uint32_t want =
	    strcmp(c->o->mcu->name, "lpc1768") == 0 ? LPCISP_PART_LPC1768 : LPCISP_PART_LPC1769;
	int r;

	if ((r = must(c, "unlock (U)", LPCISP_OP_UNLOCK, 0, 0, 0, c->timeout)) < 0 ||
	    (r = must(c, "echo off (A 0)", LPCISP_OP_ECHO, 0, 0, 0, c->timeout)) < 0 ||
	    (r = must(c, "part ID (J)", LPCISP_OP_PART_ID, 0, 0, 0, c->timeout)) < 0)
		return r;
	if ((r = read_values(c, &c->res->part_id, 1)) < 0) {
		rescue_error(c->res, "%s: no part ID after J", c->o->tty);
		return r;
	}
	if (c->res->part_id != want) {
		const char *name = lpcisp_part_name(c->res->part_id);

		rescue_error(c->res,
			     "%s: the ROM reports %s (part ID 0x%08x) but the board profile says "
			     "%s: wrong board or profile; nothing was written",
			     c->o->tty, name ? name : "an unknown part", c->res->part_id,
			     c->o->mcu->name);
		return -ENODEV;
	}
	if ((r = must(c, "serial number (N)", LPCISP_OP_SERIAL, 0, 0, 0, c->timeout)) < 0)
		return r;
	return read_values(c, c->res->serial, 4);
}

/* R addr n into out: UU lines, and after each checksum line our OK or RESEND. */
static int
read_mem(struct lpc *c, uint32_t addr, uint8_t *out, uint32_t n)
{
	struct lpcisp_uu_reader rd;
	char line[LPCISP_LINE_MAX];
	unsigned resends = 0;
	int r = command(c, LPCISP_OP_READ, addr, n, 0, c->timeout);

	if (r == LPCISP_CODE_READ_PROTECTION) {
		rescue_error(c->res,
			     "%s: the board has code read protection (CRP) set: the ROM refuses to "
			     "read flash, so the old bootloader cannot be saved; nothing was "
			     "erased",
			     c->o->tty);
		return -EACCES;
	}
	if (r != 0)
		return r < 0 ? r : -EIO;
	lpcisp_uu_reader_init(&rd, out, n);
	for (;;) {
		if ((r = read_line(c, line, sizeof(line), c->timeout)) < 0)
			return r;
		r = lpcisp_uu_reader_feed(&rd, line);
		if (r < 0)
			return -EPROTO;
		if (r == LPCISP_UU_BLOCK_BAD) {
			if (++resends > MAX_RESEND)
				return -EIO;
			r = send_text(c, LPCISP_RESEND_STRING "\r\n");
		} else if (r == LPCISP_UU_BLOCK_OK || r == LPCISP_UU_DONE) {
			int w = send_text(c, LPCISP_OK_STRING "\r\n");

			if (w < 0 || r == LPCISP_UU_DONE)
				return w;
			r = 0;
		}
		if (r < 0)
			return r;
	}
}

/* W to the RAM buffer: UU lines, a checksum every 20 lines, the ROM's OK or RESEND. */
static int
write_ram(struct lpc *c, const uint8_t *data, uint32_t n)
{
	struct lpcisp_uu_writer w;
	char line[LPCISP_LINE_MAX];
	unsigned resends = 0;
	bool sum;
	int r;

	if ((r = must(c, "write to RAM (W)", LPCISP_OP_WRITE, LPCISP_RAM_BUFFER, n, 0,
		      c->timeout)) < 0)
		return r;
	lpcisp_uu_writer_init(&w, data, n);
	while ((r = lpcisp_uu_writer_next(&w, line, sizeof(line), &sum)) > 0) {
		if ((r = send_text(c, line)) < 0)
			return r;
		if (!sum)
			continue;
		for (;;) {
			if ((r = read_line(c, line, sizeof(line), c->timeout)) < 0)
				return r;
			if (strcmp(line, LPCISP_OK_STRING) == 0) {
				lpcisp_uu_writer_ack(&w);
				break;
			}
			if (strcmp(line, LPCISP_RESEND_STRING) == 0) {
				if (++resends > MAX_RESEND)
					return -EIO;
				lpcisp_uu_writer_resend(&w);
				break;
			}
		}
	}
	return r;
}

static int
program_sector(struct lpc *c, unsigned s, const uint8_t *data, uint32_t addr, uint32_t size)
{
	int r;

	for (uint32_t off = 0; off < size; off += LPCISP_COPY_MAX) {
		bool blank = true;

		for (uint32_t i = 0; i < LPCISP_COPY_MAX && blank; i++)
			blank = data[off + i] == 0xff;
		if (blank && s != 0)
			continue; /* erased already */
		if ((r = write_ram(c, data + off, LPCISP_COPY_MAX)) < 0) {
			if (!c->res->error[0])
				rescue_error(c->res, "%s: writing to RAM failed: %s", c->o->tty,
					     strerror(-r));
			return r;
		}
		/* UM10360: P before every C; the sector relocks after it */
		if ((r = must(c, "prepare (P)", LPCISP_OP_PREPARE, s, s, 0, c->timeout)) < 0 ||
		    (r = must(c, "copy RAM to flash (C)", LPCISP_OP_COPY, addr + off,
			      LPCISP_RAM_BUFFER, LPCISP_COPY_MAX, c->timeout + 1000)) < 0)
			return r;
		c->res->bytes_written += LPCISP_COPY_MAX;
		rescue_progress(c->o, "write", c->res->bytes_written, c->o->boot_size);
	}
	return 0;
}

/* Read back [addr, addr+size) and compare with data; from offset `from` only. */
static int
verify(struct lpc *c, const uint8_t *data, uint32_t addr, uint32_t size, uint32_t from,
       uint8_t *scratch)
{
	int r = read_mem(c, addr, scratch, size);

	if (r < 0) {
		if (!c->res->error[0])
			rescue_error(c->res, "%s: reading back 0x%05x failed: %s", c->o->tty, addr,
				     strerror(-r));
		return r;
	}
	for (uint32_t i = from; i < size; i++) {
		if (scratch[i] != data[i]) {
			rescue_error(c->res,
				     "%s: verify failed at 0x%05x (wrote 0x%02x, read 0x%02x): "
				     "sector 0 is left invalid, so the ROM starts ISP on the next "
				     "reset and the rescue can be run again",
				     c->o->tty, addr + i, data[i], scratch[i]);
			return -EIO;
		}
	}
	c->res->bytes_verified += size - from;
	return 0;
}

static int
save_old(struct lpc *c)
{
	uint32_t size = c->o->boot_size;

	c->res->old_boot = malloc(size);
	if (!c->res->old_boot)
		return -ENOMEM;
	for (uint32_t a = 0; a < size; a += LPCISP_COPY_MAX) {
		int r;

		rescue_progress(c->o, "read", a, size);
		r = read_mem(c, a, c->res->old_boot + a, LPCISP_COPY_MAX);
		if (r < 0) {
			if (!c->res->error[0])
				rescue_error(c->res,
					     "%s: reading the old bootloader at 0x%05x failed: %s; "
					     "nothing was erased",
					     c->o->tty, a, strerror(-r));
			return r;
		}
	}
	c->res->old_boot_len = size;
	return 0;
}

static int
erase(struct lpc *c, unsigned last)
{
	unsigned wait = c->timeout + 500 * (last + 1);
	int r;

	/* sector 0 first: the ROM no longer sees valid user code, so a board that loses power
	 * from here on comes back in ISP and can be rescued again */
	if ((r = must(c, "prepare (P 0 0)", LPCISP_OP_PREPARE, 0, 0, 0, c->timeout)) < 0 ||
	    (r = must(c, "erase (E 0 0)", LPCISP_OP_ERASE, 0, 0, 0, wait)) < 0)
		return r;
	if (last == 0)
		return 0;
	if ((r = must(c, "prepare (P)", LPCISP_OP_PREPARE, 1, last, 0, c->timeout)) < 0 ||
	    (r = must(c, "erase (E)", LPCISP_OP_ERASE, 1, last, 0, wait)) < 0)
		return r;
	return 0;
}

static int
write_all(struct lpc *c, const uint8_t *data, unsigned last, uint8_t *scratch)
{
	uint32_t start, size;
	int r;

	for (unsigned s = 1; s <= last; s++) {
		(void)lpcisp_sector_range(s, &start, &size);
		if ((r = program_sector(c, s, data + start, start, size)) < 0)
			return r;
	}
	for (unsigned s = 1; s <= last; s++) {
		(void)lpcisp_sector_range(s, &start, &size);
		rescue_progress(c->o, "verify", start, c->o->boot_size);
		if ((r = verify(c, data + start, start, size, 0, scratch)) < 0)
			return r;
	}
	/* sector 0 last: its vector checksum makes the new code valid only now */
	(void)lpcisp_sector_range(0, &start, &size);
	if ((r = program_sector(c, 0, data, 0, size)) < 0)
		return r;
	/* the first 64 bytes may read as the boot ROM's vectors while in ISP (lpc21isp skips
	 * them too); compare from 64 and note whether 0-63 were readable */
	if ((r = verify(c, data, 0, size, 64, scratch)) < 0)
		return r;
	c->res->old_vectors_unreadable = memcmp(scratch, data, 64) != 0;
	return 0;
}

int
rescue_lpc_install(int fd, const struct rescue_opts *o, const uint8_t *img, size_t len,
		   uint32_t sector_mask, struct rescue_result *res)
{
	struct lpc c = {
	    .fd = fd, .o = o, .res = res, .timeout = o->timeout_ms ? o->timeout_ms : 1000};
	uint8_t *data = malloc(o->boot_size), *scratch = malloc(o->boot_size);
	unsigned last = 0;
	int r = -ENOMEM;

	while (sector_mask >> (last + 1))
		last++;
	if (!data || !scratch || o->boot_size % LPCISP_COPY_MAX || last >= 16)
		goto out;
	memset(data, 0xff, o->boot_size);
	memcpy(data, img, len);
	(void)lpcisp_vector_patch(data, o->boot_size); /* idempotent for Katapult's own */
	if ((r = lpc_sync(&c)) < 0 || (r = identify(&c)) < 0 || (r = save_old(&c)) < 0)
		goto out;
	rescue_progress(o, "erase", 0, last + 1);
	if ((r = erase(&c, last)) < 0)
		goto out;
	res->erased_sectors = sector_mask;
	if ((r = write_all(&c, data, last, scratch)) < 0)
		goto out;
	r = rescue_finish(o);
out:
	if (r == -ENOMEM && !res->error[0])
		rescue_error(res,
			     "%s: out of memory, or a bootloader area that is not whole "
			     "4 KiB sectors 0-15",
			     o->tty);
	free(data);
	free(scratch);
	return r;
}
