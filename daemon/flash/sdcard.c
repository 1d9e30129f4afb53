/* SPDX-License-Identifier: GPL-2.0-or-later */
/* flash/sdcard: SD card blockdev over Klipper SPI commands (see sdcard.h).
 *
 * Every spi_transfer / spi_send asserts the chip select for its own bytes only
 * (src/spicmds.c spidev_transfer); SD cards keep their state across CS toggles, which
 * spi_flash.py relies on too (a 512-byte block is read in 32-byte transfers).
 *
 * Speed: nothing waits for a round trip that the card's own timing does not force, and
 * bytes whose answer tells nothing go out as spi_send (no response: the MCU can only owe a
 * few spi_transfer answers at a time, see flash/klipper.c). A read queues CMD17 and clocks
 * for the card's access time (as long as it took last time, plus a margin), the token, the
 * block and its CRC in one batch; the next sector's batch is queued behind it, and after the
 * last sector of a call the following one (the filesystem reads files in order). A write queues
 * CMD13 of the previous sector, CMD24, the data, a transfer for the data response, blind clocks for
 * about as long as the card stayed busy last time, and a few small polls: the first poll usually
 * finds the card ready (a command sent while the card is busy is not received, SD spec 7.2.4, so
 * the next sector waits for that answer). A guess that is wrong costs a retry or a poll, never
 * data: every block has its CRC16, every write its data response and CMD13. */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "flash/sdcard.h"
#include "proto/sdspi.h"
#include "util.h"

#define SD_TRIES 3	    /* spi_flash.py: 3 tries per sector */
#define SD_NCR 8	    /* bytes until an R1 at most */
#define SD_BUSY_US 500000u  /* write busy: the spec allows 250 ms */
#define SD_TOKEN_BYTES 4096 /* read: how long to clock for a late start token */
#define SD_RX_MAX 8192
#define SD_POLL 24	  /* bytes per busy poll: a few tens of microseconds of SPI */
#define SD_POLLS 3	  /* busy polls in flight (the client's transmit-buffer budget) */
#define SD_LEAD_MARGIN 24 /* read: bytes clocked beyond the access time the card took last time */

struct sdcard {
	struct klipper_client *c;
	size_t chunk;
	struct sdcard_info info;
	struct sdcard_stats st;
	char error[512];
	uint8_t ff[KLIPPER_PAYLOAD_MAX];
	uint8_t rx[SD_RX_MAX];
	size_t rx_len;
	bool status_pending; /* a CMD13 after the last write is still to be checked */
	int stale;	     /* transfer answers to skip: polls and prefetches nobody needs */
	size_t lead;	     /* read: bytes after CMD17 until the data, as the card did last time */
	size_t busy_bytes; /* write: bytes clocked after the data response until ready, last time */
	uint64_t pf_lba;   /* a read of this sector is queued ahead (pf_t transfers) */
	int pf_t;
};

static int sd_error(struct sdcard *sd, int r, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int
sd_error(struct sdcard *sd, int r, const char *fmt, ...)
{
	va_list ap;
	size_t n;

	va_start(ap, fmt);
	vsnprintf(sd->error, sizeof(sd->error), fmt, ap);
	va_end(ap);
	n = strlen(sd->error);
	if (klipper_client_error(sd->c)[0] && n + 3 < sizeof(sd->error))
		snprintf(sd->error + n, sizeof(sd->error) - n, " (%s)",
			 klipper_client_error(sd->c));
	return r;
}

/* Queue spi_transfer of n bytes in chunks; returns the number of transfers or -errno. */
static int
q_transfer(struct sdcard *sd, const uint8_t *out, size_t n)
{
	int count = 0;

	for (size_t off = 0; off < n; off += sd->chunk) {
		size_t len = n - off < sd->chunk ? n - off : sd->chunk;
		struct klipper_arg a[] = {{"oid", {.u = 0}},
					  {"data", {.data = out + off, .len = len}}};
		int r = klipper_client_queue(sd->c, "spi_transfer", a, 2);

		if (r < 0)
			return r;
		count++;
	}
	return count;
}

static int
q_send(struct sdcard *sd, const uint8_t *out, size_t n)
{
	for (size_t off = 0; off < n; off += sd->chunk) {
		size_t len = n - off < sd->chunk ? n - off : sd->chunk;
		struct klipper_arg a[] = {{"oid", {.u = 0}},
					  {"data", {.data = out + off, .len = len}}};
		int r = klipper_client_queue(sd->c, "spi_send", a, 2);

		if (r < 0)
			return r;
	}
	return 0;
}

static int
q_ff(struct sdcard *sd, size_t n)
{
	int count = 0;

	while (n) {
		size_t len = n < sd->chunk ? n : sd->chunk;
		int r = q_transfer(sd, sd->ff, len);

		if (r < 0)
			return r;
		count += r;
		n -= len;
	}
	return count;
}

/* Collect the answers of n transfers, appended to sd->rx. -ENOMSG when the MCU dropped one
 * of them (the others are still taken, so the next collect lines up). */
static int
collect(struct sdcard *sd, int n)
{
	int lost = 0;

	while (sd->stale > 0) {
		struct klipper_response skip;
		int r = klipper_client_response(sd->c, "spi_transfer_response", &skip);

		if (r < 0 && r != -ENOMSG)
			return r;
		sd->stale--;
	}
	for (int i = 0; i < n; i++) {
		struct klipper_response resp;
		const struct klipper_value *v;
		int r = klipper_client_response(sd->c, "spi_transfer_response", &resp);

		if (r == -ENOMSG) {
			lost = r;
			continue;
		}
		if (r < 0)
			return r;
		v = klipper_response_get(&resp, "response");
		if (!v)
			return -EPROTO;
		if (sd->rx_len + v->len > sizeof(sd->rx))
			sd->rx_len = 0; /* callers never need this much: keep going, parse fails */
		memcpy(sd->rx + sd->rx_len, v->data, v->len);
		sd->rx_len += v->len;
	}
	return lost;
}

/* Send a command with Ncr bytes after it; the bytes after the command in sd->rx. */
static int
command(struct sdcard *sd, uint8_t index, uint32_t arg, size_t extra)
{
	uint8_t buf[SDSPI_CMD_LEN + 64];
	size_t n = SDSPI_CMD_LEN + SD_NCR + extra;
	int t;

	if (n > sizeof(buf))
		n = sizeof(buf);
	sdspi_command(index, arg, buf);
	memset(buf + SDSPI_CMD_LEN, 0xff, n - SDSPI_CMD_LEN);
	sd->rx_len = 0;
	t = q_transfer(sd, buf, n);
	if (t < 0)
		return t;
	t = collect(sd, t);
	if (t < 0)
		return t;
	memmove(sd->rx, sd->rx + SDSPI_CMD_LEN, sd->rx_len - SDSPI_CMD_LEN);
	sd->rx_len -= SDSPI_CMD_LEN;
	return 0;
}

static int wait_not_busy(struct sdcard *sd, size_t from, size_t blind, int owed);

/* Clock 0xFF until the card has nothing more to say (a stuck read, a write's busy). */
static int
drain(struct sdcard *sd)
{
	int t = q_ff(sd, SDSPI_BLOCK + 2 + 64);

	sd->rx_len = 0;
	if (t >= 0)
		t = collect(sd, t);
	if (t == -ENOMSG)
		t = 0;
	/* still busy from a write that went through (its answer was lost): wait it out */
	if (t == 0 && sd->rx_len && sd->rx[sd->rx_len - 1] == 0x00)
		t = wait_not_busy(sd, sd->rx_len - 1, 0, 0);
	return t;
}

static void
pause_ms(unsigned ms)
{
	struct timespec ts = {.tv_sec = 0, .tv_nsec = (long)ms * 1000000L};

	nanosleep(&ts, NULL);
}

static int
init_card(struct sdcard *sd)
{
	struct sdspi_init s;

	sdspi_init_start(&s);
	for (;;) {
		uint8_t f[SDSPI_CMD_LEN];
		int r;

		sdspi_init_command(&s, f);
		r = command(
		    sd, f[0] & 0x3f,
		    (uint32_t)f[1] << 24 | (uint32_t)f[2] << 16 | (uint32_t)f[3] << 8 | f[4], 0);
		if (r < 0)
			return sd_error(sd, r, "SD card init: %s got no answer from the firmware",
					sdspi_init_step_name(s.step));
		r = sdspi_init_feed(&s, sd->rx, sd->rx_len);
		if (r == 1)
			break;
		/* sdspi's -ENODEV: no card; -ENODEV from the client means its tty is gone */
		if (r == -ENODEV)
			return sd_error(sd, -ENOMEDIUM,
					"no SD card answers (CMD0): is a card inserted, and "
					"is the board's SD bus definition right?");
		if (r < 0)
			return sd_error(sd, r, "SD card init failed at %s (%s)",
					sdspi_init_step_name(s.step), strerror(-r));
		if (s.wait)
			pause_ms(10);
	}
	sd->info.version = s.version;
	sd->info.sdhc = s.sdhc;
	return 0;
}

static int
read_csd(struct sdcard *sd)
{
	int r = command(sd, SDSPI_CMD9_SEND_CSD, 0, 1 + 16 + 2 + 8);
	int i, d;

	if (r < 0)
		return sd_error(sd, r, "SD card: CMD9 SEND_CSD got no answer");
	i = sdspi_find_r1(sd->rx, sd->rx_len);
	if (i < 0 || sd->rx[i] != 0)
		return sd_error(sd, -EIO, "SD card: CMD9 SEND_CSD refused");
	d = sdspi_find_block(sd->rx + i + 1, sd->rx_len - (size_t)i - 1, 16);
	if (d < 0)
		return sd_error(sd, -EIO, "SD card: unreadable CSD register (%s)", strerror(-d));
	r = sdspi_csd_sectors(sd->rx + i + 1 + d, &sd->info.sectors);
	if (r < 0 || !sd->info.sectors)
		return sd_error(sd, -EIO, "SD card: CSD register without a usable size");
	return 0;
}

int
sdcard_open(struct klipper_client *c, struct sdcard **ret)
{
	struct sdcard *sd = xcalloc(1, sizeof(*sd));
	int r;

	sd->c = c;
	sd->chunk = klipper_client_spi_chunk(c);
	memset(sd->ff, 0xff, sizeof(sd->ff));
	r = init_card(sd);
	if (r == 0)
		r = read_csd(sd);
	*ret = sd;
	return r;
}

void
sdcard_close(struct sdcard *sd)
{
	free(sd);
}

const char *
sdcard_error(const struct sdcard *sd)
{
	return sd->error;
}

void
sdcard_get_info(const struct sdcard *sd, struct sdcard_info *ret)
{
	*ret = sd->info;
}

void
sdcard_stats(const struct sdcard *sd, struct sdcard_stats *ret)
{
	*ret = sd->st;
}

/* ---- reads: CMD17 with the whole sector clocked out in one batch ---- */

/* Queue CMD17 for lba and enough clocks for its answer: the R1, the card's access time (as
 * long as it took last time, and a margin: the access time is time, so the bytes it takes
 * vary with how busy the MCU kept the bus; all of them are answered, a token is never clocked
 * blind), the token, the block and its CRC. Returns the number of transfers or -errno. */
static int
read_queue(struct sdcard *sd, uint64_t lba)
{
	uint8_t first[KLIPPER_PAYLOAD_MAX];
	size_t lead = sd->lead + SD_LEAD_MARGIN, n;
	uint32_t addr;
	int t, u;

	if (sdspi_address(sd->info.sdhc, lba, &addr) < 0)
		return -ERANGE;
	/* at least Ncr, R1, Nac and one chunk for a late token, as before anything was learned */
	if (lead < SD_NCR + 1 + 1 + sd->chunk)
		lead = SD_NCR + 1 + 1 + sd->chunk;
	n = SDSPI_CMD_LEN + lead + SDSPI_BLOCK + 2;
	sdspi_command(SDSPI_CMD17_READ_SINGLE, addr, first);
	memset(first + SDSPI_CMD_LEN, 0xff, sd->chunk - SDSPI_CMD_LEN);
	t = q_transfer(sd, first, sd->chunk);
	if (t < 0)
		return t;
	u = q_ff(sd, n - sd->chunk);
	return u < 0 ? u : t + u;
}

/* Parse sd->rx (bytes from the command on) into out. more: clock on for a late token. */
static int
read_parse(struct sdcard *sd, uint8_t *out, bool more)
{
	size_t clocked = 0;

	for (;;) {
		int d, i = sdspi_find_r1(sd->rx + SDSPI_CMD_LEN, sd->rx_len - SDSPI_CMD_LEN);
		if (i < 0)
			return -EIO;
		if (sd->rx[SDSPI_CMD_LEN + i] != 0)
			return (sd->rx[SDSPI_CMD_LEN + i] & SDSPI_R1_ADDRESS) ? -ERANGE : -EIO;
		i += SDSPI_CMD_LEN + 1;
		d = sdspi_find_block(sd->rx + i, sd->rx_len - (size_t)i, SDSPI_BLOCK);
		if (d >= 0) {
			size_t lead = (size_t)i + (size_t)d - SDSPI_CMD_LEN;

			memcpy(out, sd->rx + i + d, SDSPI_BLOCK);
			/* a longer access time at once, a shorter one slowly (the MCU may have
			 * been waiting for the host meanwhile: fewer bytes for the same time) */
			sd->lead = lead > sd->lead ? lead : sd->lead - (sd->lead - lead + 7) / 8;
			return 0;
		}
		if ((d != -EAGAIN && d != -EBADMSG) || !more || clocked > SD_TOKEN_BYTES)
			return d;
		d = q_ff(sd, sd->chunk);
		if (d < 0 || (d = collect(sd, d)) < 0)
			return d;
		clocked += sd->chunk;
	}
}

static int
read_one(struct sdcard *sd, uint64_t lba, uint8_t *out)
{
	int r = 0;

	for (int attempt = 0; attempt < SD_TRIES; attempt++) {
		int t;

		if (attempt)
			sd->st.retries++;
		if ((r = drain(sd)) < 0)
			return r;
		t = read_queue(sd, lba);
		if (t < 0)
			return t;
		sd->rx_len = 0;
		r = collect(sd, t);
		if (r == -ENOMSG)
			continue; /* an answer lost on the way: read it again */
		if (r < 0)
			return r;
		r = read_parse(sd, out, true);
		if (r == 0 || r == -ERANGE)
			return r;
	}
	return r;
}

/* A queued read ahead that nobody wants: its answers are skipped. */
static void
drop_prefetch(struct sdcard *sd)
{
	sd->stale += sd->pf_t;
	sd->pf_t = 0;
}

static int
sd_read(void *ctx, uint64_t lba, uint32_t count, uint8_t *buf)
{
	struct sdcard *sd = ctx;
	int t_next = -1;

	if (lba + count > sd->info.sectors)
		return sd_error(sd, -ERANGE, "SD card: read past the end (sector %" PRIu64 ")",
				lba + count - 1);
	if (sd->pf_t > 0 && sd->pf_lba == lba) {
		t_next = sd->pf_t;
		sd->pf_t = 0;
	}
	drop_prefetch(sd);
	for (uint32_t k = 0; k < count; k++) {
		int r, t = t_next >= 0 ? t_next : read_queue(sd, lba + k);

		if (t < 0)
			return sd_error(sd, t, "SD card: cannot queue a read");
		/* the next sector's transfers go out while this one's answers come back (after
		 * the last one: the sector after it, as a prefetch) */
		t_next = lba + k + 1 < sd->info.sectors ? read_queue(sd, lba + k + 1) : -1;
		if (t_next < -1)
			return sd_error(sd, t_next, "SD card: cannot queue a read");
		sd->rx_len = 0;
		r = collect(sd, t);
		if (r == 0)
			r = read_parse(sd, buf + (size_t)k * SDSPI_BLOCK, false);
		/* the sector is in range (checked above): an R1 address error is a misparse too */
		if (r < 0 && r != -ENODEV && r != -ETIMEDOUT && r != -EPROTO) {
			/* misparse (late token, CRC, a lost answer): skip the queued one (a card
			 * still sending a block after it is drained), redo this alone */
			if (t_next >= 0)
				sd->stale += t_next;
			t_next = -1;
			r = read_one(sd, lba + k, buf + (size_t)k * SDSPI_BLOCK);
			sd->st.retries++;
		}
		if (r < 0) {
			if (t_next >= 0)
				sd->stale += t_next;
			return sd_error(sd, r, "SD card: reading sector %" PRIu64 " failed (%s)",
					lba + k, strerror(-r));
		}
		sd->st.sectors_read++;
	}
	if (t_next >= 0) {
		sd->pf_lba = lba + count;
		sd->pf_t = t_next;
	}
	return 0;
}

/* ---- writes: CMD24, data block, response token and busy; CMD13 after ---- */

static int
check_status(struct sdcard *sd)
{
	int i;

	/* R2: R1 then a second status byte; both zero when the write went well */
	i = sdspi_find_r1(sd->rx, sd->rx_len);
	if (i < 0 || (size_t)i + 1 >= sd->rx_len)
		return -EIO;
	return sd->rx[i] == 0 && sd->rx[i + 1] == 0 ? 0 : -EIO;
}

/* Busy: the card holds the line at 0 after the data response until the write is done.
 * sd->rx[from, rx_len) is what came right after the response, then `blind` bytes were
 * clocked without answers and `owed` polls are in flight. Polls are kept in flight until
 * one sees 0xFF; the ones still owed then are skipped by the next collect. */
static int
wait_not_busy(struct sdcard *sd, size_t from, size_t blind, int owed)
{
	uint64_t deadline = now_monotonic_usec() + SD_BUSY_US;
	size_t clocked = 0;

	for (;;) {
		for (size_t k = from; k < sd->rx_len; k++)
			if (sd->rx[k] == 0xff) {
				size_t busy = clocked + k - from;

				/* longer at once, shorter slowly: bytes clocked while the MCU
				 * waited for the host are missing here, the time was not */
				sd->busy_bytes =
				    busy > sd->busy_bytes
					? busy
					: sd->busy_bytes - (sd->busy_bytes - busy + 7) / 8;
				sd->stale += owed;
				return 0;
			}
		clocked += sd->rx_len - from + blind;
		blind = 0;
		from = 0;
		if (now_monotonic_usec() > deadline) {
			sd->stale += owed;
			return -ETIMEDOUT;
		}
		for (; owed < SD_POLLS; owed++) {
			int t = q_ff(sd, SD_POLL);

			if (t < 0)
				return t;
		}
		sd->rx_len = 0;
		int t = collect(sd, 1);

		if (t < 0 && t != -ENOMSG) /* a lost poll only tells nothing */
			return t;
		owed--;
	}
}

/* Queue the bytes after a block's CRC: a transfer for the data response, the busy time the
 * card took last time (a little less) clocked blind, and polls. Returns the polls queued. */
static int
queue_busy(struct sdcard *sd, int *t2, size_t *blind)
{
	int polls = 0;

	*blind = sd->busy_bytes > 48 ? sd->busy_bytes - sd->busy_bytes / 32 - 16 : 0;
	*t2 = q_ff(sd, 8);
	if (*t2 < 0)
		return *t2;
	for (size_t left = *blind; left;) {
		size_t n = left < sd->chunk ? left : sd->chunk;
		int r = q_send(sd, sd->ff, n);

		if (r < 0)
			return r;
		left -= n;
	}
	for (; *blind && polls < SD_POLLS; polls++) {
		int r = q_ff(sd, SD_POLL);

		if (r < 0)
			return r;
	}
	return polls;
}

static int
write_one(struct sdcard *sd, uint64_t lba, const uint8_t *data)
{
	uint8_t cmd[SDSPI_CMD_LEN + SD_NCR], blk[2 + SDSPI_BLOCK + 2];
	uint16_t crc = sdspi_crc16(data, SDSPI_BLOCK);
	uint32_t addr;
	size_t blind = 0;
	int t0 = 0, t1, t2 = 0, r, i, status = 0, polls, lost = 0;

	if (sdspi_address(sd->info.sdhc, lba, &addr) < 0)
		return -ERANGE;
	sdspi_command(SDSPI_CMD24_WRITE_SINGLE, addr, cmd);
	memset(cmd + SDSPI_CMD_LEN, 0xff, SD_NCR);
	blk[0] = 0xff; /* one byte gap (Nwr) before the token */
	blk[1] = SDSPI_TOKEN_START;
	memcpy(blk + 2, data, SDSPI_BLOCK);
	blk[2 + SDSPI_BLOCK] = (uint8_t)(crc >> 8);
	blk[3 + SDSPI_BLOCK] = (uint8_t)crc;
	/* CMD13 of the previous write (the card left busy) rides in the same batch */
	if (sd->status_pending) {
		uint8_t st[SDSPI_CMD_LEN + SD_NCR];

		sdspi_command(SDSPI_CMD13_SEND_STATUS, 0, st);
		memset(st + SDSPI_CMD_LEN, 0xff, SD_NCR);
		if ((t0 = q_transfer(sd, st, sizeof(st))) < 0)
			return t0;
	}
	t1 = q_transfer(sd, cmd, sizeof(cmd));
	if (t1 < 0)
		return t1;
	r = q_send(sd, blk, sizeof(blk));
	if (r < 0)
		return r;
	polls = queue_busy(sd, &t2, &blind);
	if (polls < 0)
		return polls;
	/* an answer the MCU dropped (-ENOMSG) makes this a retry; a lost CMD13 answer is asked
	 * again with the retry (status_pending stays) */
	if (t0) {
		sd->rx_len = 0;
		r = collect(sd, t0);
		if (r < 0 && r != -ENOMSG)
			return r;
		lost = r;
		if (r == 0) {
			memmove(sd->rx, sd->rx + SDSPI_CMD_LEN, sd->rx_len - SDSPI_CMD_LEN);
			sd->rx_len -= SDSPI_CMD_LEN;
			sd->status_pending = false;
			status = check_status(sd);
		}
	}
	sd->rx_len = 0;
	r = collect(sd, t1);
	if (r < 0 && r != -ENOMSG)
		return r;
	if (r == 0) {
		i = sdspi_find_r1(sd->rx + SDSPI_CMD_LEN, sd->rx_len - SDSPI_CMD_LEN);
		r = i < 0 ? -EIO : sd->rx[SDSPI_CMD_LEN + i] ? -EIO : 0;
	}
	sd->rx_len = 0;
	i = collect(sd, t2);
	if (i < 0 && i != -ENOMSG)
		return i;
	sd->stale += polls; /* unless wait_not_busy takes them over below */
	if (i == -ENOMSG || r == -ENOMSG || lost)
		return -ENOMSG;
	if (status < 0)
		return -EREMOTEIO; /* the previous sector failed: not this one's to retry */
	if (r < 0)
		return r;
	for (i = 0; i < (int)sd->rx_len && sd->rx[i] == 0xff; i++)
		;
	if (i == (int)sd->rx_len)
		return -EIO;
	if ((r = sdspi_data_response(sd->rx[i])) < 0)
		return r;
	sd->stale -= polls;
	if ((r = wait_not_busy(sd, (size_t)i + 1, blind, polls)) < 0)
		return r;
	sd->status_pending = true;
	return 0;
}

static int
finish_status(struct sdcard *sd)
{
	int r;

	if (!sd->status_pending)
		return 0;
	r = command(sd, SDSPI_CMD13_SEND_STATUS, 0, 0);
	if (r == 0)
		r = check_status(sd);
	sd->status_pending = false;
	return r;
}

static int
sd_write(void *ctx, uint64_t lba, uint32_t count, const uint8_t *buf)
{
	struct sdcard *sd = ctx;
	int r;

	if (lba + count > sd->info.sectors)
		return sd_error(sd, -ERANGE, "SD card: write past the end (sector %" PRIu64 ")",
				lba + count - 1);
	drop_prefetch(sd); /* it may hold a sector about to change */
	for (uint32_t k = 0; k < count; k++) {
		r = -EIO;
		for (int attempt = 0; attempt < SD_TRIES; attempt++) {
			if (attempt) {
				sd->st.retries++;
				sd->status_pending = false;
				sd->busy_bytes = 0;
				if (drain(sd) < 0)
					break;
			}
			r = write_one(sd, lba + k, buf + (size_t)k * SDSPI_BLOCK);
			if (r == 0 || r == -ERANGE || r == -ENODEV || r == -EPROTO ||
			    r == -EREMOTEIO)
				break;
		}
		if (r < 0)
			return sd_error(sd, r, "SD card: writing sector %" PRIu64 " failed (%s)",
					lba + k, strerror(-r));
		sd->st.sectors_written++;
	}
	r = finish_status(sd);
	if (r == -ENODEV) /* the board's tty went away: that is no card's verdict */
		return sd_error(sd, r, "SD card: the board left during CMD13 SEND_STATUS");
	if (r < 0)
		return sd_error(sd, -EIO,
				"SD card: the card reports a write error near sector %" PRIu64 "",
				lba + count - 1);
	return 0;
}

void
sdcard_blockdev(struct sdcard *sd, struct blockdev *ret)
{
	*ret = (struct blockdev){
	    .ctx = sd,
	    .sectors = sd->info.sectors,
	    .read = sd_read,
	    .write = sd_write,
	    .flush = NULL, /* every write ends with the card out of busy and CMD13 checked */
	};
}
