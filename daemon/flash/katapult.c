/* SPDX-License-Identifier: GPL-2.0-or-later */
/* flash/katapult: flashing through the Katapult (CanBoot) bootloader over USB CDC.
 *
 * The wire format lives in proto/katapult; this file owns the conversation: the USBFS prime
 * quirk, CONNECT, a window of SEND_BLOCK/REQUEST_BLOCK frames in flight with go-back-N
 * recovery, SEND_EOF and COMPLETE (protocols.md §2.2-2.4). The reference host is a Python
 * script (Katapult's flashtool), so there is no C library to use instead.
 *
 * What the device does that shapes the window and the recovery (Arksine/katapult):
 * - src/generic/usb_cdc.c: every reply goes into a 192-byte transmit buffer and is silently
 *   dropped when it does not fit; received frames are dispatched without looking at that
 *   space. So the window counts the replies in flight by their size against 192 bytes:
 *   a REQUEST_BLOCK reply is 80 bytes (2 in flight), a SEND_BLOCK reply 16 (12 in flight).
 * - src/lpc176x/flash.c: a block whose address is not the next expected one is refused
 *   with COMMAND_ERROR (unless both are 256-byte aligned), so resending a block the device
 *   already took fails there. Recovery on LPC176x moves forward one block at a time from
 *   the first unacknowledged one until the device accepts one: that is where it stands.
 *   STM32 (src/stm32/flash.c) and RP2040 (src/rp2040/flash.c) accept a resend.
 * - The USBFS parts (F0/F1/G0/G4/L4) hold the first IN packet after enumeration until a
 *   second one is queued: the prime's reply comes out in front of CONNECT's, or not at
 *   all when this enumeration already sent one.
 *
 * One deliberate deviation from flashtool: COMPLETE is sent only by leave(), i.e. after a
 * verified write. flashtool sends it in a `finally`, even after a failed write; Katapult then
 * jumps into a half-erased application area and the board boot-loops, out of reach of USB.
 * Without COMPLETE the board stays in Katapult, where the next attempt can reach it. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "flash/backend.h"
#include "proto/katapult.h"
#include "log.h"
#include "util.h"

#define KAT_DEFAULT_WINDOW 8
#define KAT_MAX_WINDOW 64
#define KAT_DEFAULT_TIMEOUT_MS 5000 /* flashtool's SEND_BLOCK read timeout (§2.4 step 7) */
#define KAT_TRIES 5		    /* flashtool send_command: 5 tries per command */
#define KAT_DEVICE_TX_BUF 192	    /* usb_cdc.c transmit_buf */
#define KAT_DRAIN_QUIET_MS 250	    /* flashtool discards pending input for 0.25 s */

struct kat {
	int fd;
	bool connected;
	uint32_t block_size;
	unsigned window;
	int timeout_ms;
	uint8_t rx[4 * KATAPULT_FRAME_MAX];
	size_t rx_len;
	uint8_t frame[KATAPULT_FRAME_MAX]; /* the last frame received; payloads point here */
	uint8_t *sent;			   /* the padded image, n_blocks * block_size bytes */
	size_t n_blocks;
	uint32_t start;
	bool lpc;    /* lpc176x/flash.c: in-order blocks only, resends refused */
	bool rp2040; /* rp2040/flash.c: SEND_EOF counts 256-byte program pages */
	bool primed; /* a prime was sent whose COMMAND_ERROR may still come */
};

static int
remaining_ms(uint64_t deadline)
{
	uint64_t now = now_monotonic_usec();

	if (now >= deadline)
		return 0;
	return (int)((deadline - now + 999) / 1000);
}

static int
kat_send(struct kat *k, struct flash_session *s, const uint8_t *buf, size_t len)
{
	size_t done = 0;

	while (done < len) {
		ssize_t n = write(k->fd, buf + done, len - done);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN) {
			struct pollfd p = {.fd = k->fd, .events = POLLOUT};
			int r = poll(&p, 1, k->timeout_ms);

			if (r < 0 && errno != EINTR)
				return -errno;
			if (r == 0)
				return -ETIMEDOUT;
			if (p.revents & (POLLHUP | POLLERR))
				return -ENODEV;
			continue;
		}
		if (n < 0)
			return errno == EIO ? -ENODEV : -errno;
		done += (size_t)n;
	}
	s->transfers++;
	return 0;
}

/* Next valid frame within timeout_ms: 0 (*f points into k->frame), -ETIMEDOUT, -EBADMSG when
 * a corrupt frame was skipped (the caller may retry at once), -ENODEV when the tty is gone. */
static int
kat_recv(struct kat *k, struct katapult_frame *f, int timeout_ms)
{
	uint64_t deadline = now_monotonic_usec() + (uint64_t)timeout_ms * 1000;

	for (;;) {
		bool bad = false;
		int r = katapult_frame_find(k->rx, k->rx_len, KATAPULT_FRAME_MAX, f, &bad);
		struct pollfd p = {.fd = k->fd, .events = POLLIN};
		ssize_t n;

		if (r > 0) {
			memcpy(k->frame, k->rx, (size_t)r);
			memmove(k->rx, k->rx + r, k->rx_len - (size_t)r);
			k->rx_len -= (size_t)r;
			f->payload = k->frame + 4;
			return 0;
		}
		if (r < 0) {
			memmove(k->rx, k->rx + (size_t)-r, k->rx_len - (size_t)-r);
			k->rx_len -= (size_t)-r;
			if (bad)
				return -EBADMSG;
			continue;
		}
		if (k->rx_len == sizeof(k->rx)) /* cannot happen with frames <= FRAME_MAX */
			k->rx_len = 0;
		r = poll(&p, 1, remaining_ms(deadline));
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -errno;
		if (r == 0)
			return -ETIMEDOUT;
		n = read(k->fd, k->rx + k->rx_len, sizeof(k->rx) - k->rx_len);
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			continue;
		if (n <= 0) /* EIO or EOF: the CDC device went away (a pty hangs up alike) */
			return -ENODEV;
		k->rx_len += (size_t)n;
	}
}

/* Discard whatever the device still sends, until it is quiet (flashtool does the same). */
static int
kat_drain(struct kat *k)
{
	k->rx_len = 0;
	for (;;) {
		struct pollfd p = {.fd = k->fd, .events = POLLIN};
		uint8_t junk[512];
		int r = poll(&p, 1, KAT_DRAIN_QUIET_MS);
		ssize_t n;

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return r < 0 ? -errno : 0;
		n = read(k->fd, junk, sizeof(junk));
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			continue;
		if (n <= 0)
			return -ENODEV;
	}
}

/* One command with KAT_TRIES tries (§2.4 send_command); the ACK frame in *ret (its payload
 * points into k->frame) and its data after the acked-command word in *ret_data and *ret_len. */
static int
kat_command(struct kat *k, struct flash_session *s, uint8_t cmd, struct katapult_frame *ret,
	    const uint8_t **ret_data, size_t *ret_len)
{
	uint8_t buf[KATAPULT_FRAME_MIN];
	int n = katapult_frame_encode(cmd, NULL, 0, buf, sizeof(buf));
	int r = -ETIMEDOUT;

	if (n < 0)
		return n;
	for (unsigned t = 0; t < KAT_TRIES; t++) {
		struct katapult_frame f;

		if (t > 0 && kat_drain(k) == -ENODEV)
			return -ENODEV;
		r = kat_send(k, s, buf, (size_t)n);
		if (r < 0)
			return r;
		for (;;) {
			r = kat_recv(k, &f, k->timeout_ms);
			if (r < 0)
				break;
			r = katapult_check_ack(&f, cmd, ret_data, ret_len);
			/* the prime's COMMAND_ERROR, once */
			if (r == -EINVAL && k->primed) {
				k->primed = false;
				continue;
			}
			/* an ACK of an earlier command is stale: keep reading */
			if (r != -EPROTO)
				break;
		}
		if (r == 0 && ret)
			*ret = f;
		if (r == 0 || r == -ENODEV)
			return r;
		if (r == -EBUSY)
			(void)nanosleep(&(struct timespec){.tv_sec = 1, .tv_nsec = 500000000},
					NULL);
		log_debug("katapult: %s: %s, try %u of %u", katapult_code_name(cmd),
			  r == -ETIMEDOUT ? "no answer" : strerror(-r), t + 1, KAT_TRIES);
	}
	return r;
}

static const char *
reason(int r)
{
	switch (r) {
	case -ETIMEDOUT:
		return "no answer";
	case -EAGAIN:
		return "NACK";
	case -EINVAL:
		return "COMMAND_ERROR";
	case -EBUSY:
		return "BUSY";
	case -EBADMSG:
		return "corrupt reply";
	case -EPROTO:
		return "reply for another address";
	default:
		return strerror(-r);
	}
}

/* §2.4 step 5: USBFS double-buffered parts (product "stm32" + not f2/f4/h7) hold the first
 * IN packet of an enumeration until a second is queued; a dummy command in front of CONNECT
 * gives CONNECT's reply a packet to follow. */
static bool
needs_prime(const char *product)
{
	if (strncasecmp(product, "stm32", 5) != 0 || strlen(product) < 7)
		return false;
	return strncasecmp(product + 5, "f2", 2) != 0 && strncasecmp(product + 5, "f4", 2) != 0 &&
	       strncasecmp(product + 5, "h7", 2) != 0;
}

static int
kat_open(struct flash_session *s)
{
	struct kat *k = xnew(struct kat);
	struct katapult_connect_info ci;
	struct katapult_frame f;
	struct termios t;
	int r;

	s->priv = k;
	k->fd = -1;
	k->window = s->window ? s->window : KAT_DEFAULT_WINDOW;
	if (k->window > KAT_MAX_WINDOW)
		k->window = KAT_MAX_WINDOW;
	k->timeout_ms = s->timeout_ms ? (int)s->timeout_ms : KAT_DEFAULT_TIMEOUT_MS;
	if (!s->dev->tty[0]) {
		backend_error(s, "the Katapult device on port %s has no tty", s->dev->port);
		return -ENXIO; /* not -ENODEV: nothing left the bus */
	}
	k->fd = open(s->dev->tty, O_RDWR | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);
	if (k->fd < 0) {
		r = -errno;
		backend_error(s, "cannot open %s: %s", s->dev->tty, strerror(-r));
		return r;
	}
	/* exclusive like flashtool; umockdev's ptys answer ENOTTY, which is fine */
	if (ioctl(k->fd, TIOCEXCL) < 0 && errno != ENOTTY)
		log_debug_errno(-errno, "katapult: TIOCEXCL on %s", s->dev->tty);
	if (tcgetattr(k->fd, &t) == 0) {
		cfmakeraw(&t);
		t.c_cflag |= CLOCAL | CREAD;
		(void)cfsetspeed(&t, B115200); /* USB CDC ignores the rate */
		if (tcsetattr(k->fd, TCSANOW, &t) < 0)
			log_debug_errno(-errno, "katapult: raw mode on %s", s->dev->tty);
	}
	(void)tcflush(k->fd, TCIOFLUSH);

	if (needs_prime(s->dev->product)) {
		uint8_t buf[KATAPULT_FRAME_MIN];

		/* no wait: its reply (COMMAND_ERROR) is skipped while CONNECT waits for its own */
		r = katapult_frame_encode(KATAPULT_CMD_PRIME, NULL, 0, buf, sizeof(buf));
		k->primed = r > 0 && kat_send(k, s, buf, (size_t)r) == 0;
	}

	r = kat_command(k, s, KATAPULT_CMD_CONNECT, &f, NULL, NULL);
	if (r < 0) {
		backend_error(s, "Katapult on %s does not answer CONNECT (%s)", s->dev->tty,
			      reason(r));
		return r;
	}
	if (katapult_parse_connect(&f, &ci) < 0) {
		backend_error(s, "malformed CONNECT reply from Katapult on %s", s->dev->tty);
		return -EPROTO;
	}
	if (ci.block_size < 64 || ci.block_size > 512 || (ci.block_size & (ci.block_size - 1))) {
		backend_error(
		    s, "Katapult reports block size %u; only 64..512, a power of two, is valid",
		    ci.block_size);
		return -EPROTO;
	}
	k->connected = true;
	k->primed = false;
	k->block_size = ci.block_size;
	k->lpc = strncasecmp(ci.mcu, "lpc176", 6) == 0;
	k->rp2040 = strncasecmp(ci.mcu, "rp2040", 6) == 0;
	(void)str_copy(s->reported_mcu, sizeof(s->reported_mcu), ci.mcu);
	(void)str_copy(s->reported_version, sizeof(s->reported_version), ci.software_version);
	s->reported_app_start = ci.app_start;
	if (s->board && s->board->mcu)
		s->reported_flash_end = s->board->mcu->flash_base + s->board->mcu->flash_size;
	log_debug("katapult: %s %s, protocol %u.%u.%u, app at 0x%08x, block %u", ci.mcu,
		  ci.software_version, (ci.proto_version >> 16) & 0xff,
		  (ci.proto_version >> 8) & 0xff, ci.proto_version & 0xff, ci.app_start,
		  ci.block_size);
	return 0;
}

static int
send_block(struct kat *k, struct flash_session *s, uint8_t cmd, size_t i)
{
	uint8_t buf[KATAPULT_FRAME_MAX];
	uint32_t addr = k->start + (uint32_t)(i * k->block_size);
	int n;

	if (cmd == KATAPULT_CMD_SEND_BLOCK)
		n = katapult_frame_encode_word_bytes(cmd, addr, k->sent + i * k->block_size,
						     k->block_size, buf, sizeof(buf));
	else
		n = katapult_frame_encode(cmd, &addr, 1, buf, sizeof(buf));
	if (n < 0)
		return n;
	return kat_send(k, s, buf, (size_t)n);
}

/* How many replies of cmd may be in flight: what the device's transmit buffer holds (an ACK
 * frame is 8 bytes around its payload: 16 for SEND_BLOCK, 16 + block for REQUEST_BLOCK),
 * and no more than the configured window. */
static size_t
window_for(const struct kat *k, uint8_t cmd)
{
	size_t reply = 8 + 8 + (cmd == KATAPULT_CMD_REQUEST_BLOCK ? k->block_size : 0);
	size_t fit = KAT_DEVICE_TX_BUF / reply;

	if (fit < 1)
		fit = 1;
	return fit < k->window ? fit : k->window;
}

/* The next reply, for block `base`: 0 it is acknowledged (and a read matches), 1 the reply
 * is not for it (stale, duplicate), -EILSEQ the block read back differs (reported), else the
 * reason to go back to it. */
static int
block_reply(struct kat *k, struct flash_session *s, uint8_t cmd, size_t base)
{
	uint32_t expected = k->start + (uint32_t)(base * k->block_size), addr;
	const uint8_t *d, *want = k->sent + base * k->block_size;
	struct katapult_frame f;
	size_t dl;
	int r = kat_recv(k, &f, k->timeout_ms);

	if (r < 0)
		return r;
	r = katapult_check_ack(&f, cmd, &d, &dl);
	if (r == -EPROTO)
		return 1; /* a late ACK of another command */
	if (r < 0)
		return r;
	if (dl < 4)
		return -EPROTO;
	addr = katapult_get_le32(d);
	if (addr >= k->start && addr < expected)
		return 1; /* duplicate reply for a block already acknowledged */
	if (addr != expected)
		return -EPROTO;
	if (cmd != KATAPULT_CMD_REQUEST_BLOCK)
		return 0;
	if (dl < 4 + k->block_size)
		return -EPROTO;
	for (uint32_t j = 0; j < k->block_size; j++) {
		if (d[4 + j] != want[j]) {
			backend_error(s, "verify failed at 0x%08x: read 0x%02x, wrote 0x%02x",
				      expected + j, d[4 + j], want[j]);
			return -EILSEQ;
		}
	}
	return 0;
}

/* SEND_BLOCK or REQUEST_BLOCK for every block, window_for() frames in flight. Replies come
 * in order; anything unexpected (NACK, COMMAND_ERROR, silence, a corrupt reply, a wrong
 * echo) goes back to the first unacknowledged block: STM32 and RP2040 take a resend. On
 * LPC176x the resend goes one block at a time, and a COMMAND_ERROR to a block sent before
 * means the device has it and expects a later one (lpc176x/flash.c next_address). */
static int
kat_transfer(struct kat *k, struct flash_session *s, uint8_t cmd)
{
	const char *step = cmd == KATAPULT_CMD_SEND_BLOCK ? "write" : "verify";
	uint64_t total = (uint64_t)k->n_blocks * k->block_size;
	size_t base = 0, next = 0, win = window_for(k, cmd), high = 0;
	bool probing = false;
	unsigned tries = 0;
	int r;

	while (base < k->n_blocks) {
		while (next < k->n_blocks && next - base < (probing ? 1 : win)) {
			r = send_block(k, s, cmd, next);
			if (r < 0)
				goto fail;
			next++;
		}
		r = block_reply(k, s, cmd, base);
		if (r == 1)
			continue;
		if (r == 0 || (probing && r == -EINVAL && base < high)) {
			base++;
			next = base > next ? base : next;
			tries = 0;
			probing = probing && r != 0;
			if (s->progress)
				s->progress(s->userdata, step, (uint64_t)base * k->block_size,
					    total);
			continue;
		}
		if (r == -EILSEQ)
			return -EIO;
		if (r == -ENODEV)
			goto fail;
		if (++tries >= KAT_TRIES) {
			backend_error(s, "%s of the block at 0x%08x failed %u times (last: %s)",
				      cmd == KATAPULT_CMD_SEND_BLOCK ? "write" : "read-back",
				      k->start + (uint32_t)(base * k->block_size), tries,
				      reason(r));
			return -EIO;
		}
		log_debug("katapult: block 0x%08x: %s, resending from there",
			  k->start + (uint32_t)(base * k->block_size), reason(r));
		if (kat_drain(k) == -ENODEV) {
			r = -ENODEV;
			goto fail;
		}
		high = next > high ? next : high;
		next = base;
		probing = k->lpc && cmd == KATAPULT_CMD_SEND_BLOCK;
	}
	return 0;
fail:
	backend_error(s, "%s at 0x%08x: %s",
		      r == -ENODEV ? "the board disconnected during the transfer"
				   : "transfer failed",
		      k->start + (uint32_t)(base * k->block_size),
		      r == -ENODEV ? "it stays in Katapult when it comes back" : strerror(-r));
	return r;
}

/* Erase units [start, end) touches, from the catalog; 0 when unknown. */
static uint32_t
expected_pages(const struct flash_session *s, uint32_t start, uint32_t end)
{
	uint32_t n = 0, ps, psz;

	if (!s->board || !s->board->mcu)
		return 0;
	for (uint32_t a = start; a < end; a = ps + psz) {
		if (catalog_mcu_sector(s->board->mcu, a, &ps, &psz) < 0 || psz == 0)
			return 0;
		n++;
	}
	return n;
}

static int
kat_write(struct flash_session *s)
{
	struct kat *k = s->priv;
	const struct image *img = s->img;
	uint32_t load = img->has_load_address ? img->load_address : s->reported_app_start;
	const uint8_t *d;
	size_t dl;
	uint32_t pages, want;
	int r;

	if (!k || !k->connected)
		return -ENOTCONN;
	if (load != s->reported_app_start) {
		backend_error(s,
			      "the image starts at 0x%08x but Katapult on this board starts the "
			      "application at 0x%08x: refusing to write",
			      load, s->reported_app_start);
		return -EINVAL;
	}
	if (img->size == 0) {
		backend_error(s, "the image is empty");
		return -EINVAL;
	}
	k->n_blocks = (img->size + k->block_size - 1) / k->block_size;
	if (s->reported_flash_end &&
	    (uint64_t)load + (uint64_t)k->n_blocks * k->block_size > s->reported_flash_end) {
		backend_error(
		    s,
		    "the image (%zu bytes from 0x%08x) does not fit below the end of flash "
		    "at 0x%08x",
		    img->size, load, s->reported_flash_end);
		return -EFBIG;
	}
	free(k->sent);
	k->sent = xmalloc(k->n_blocks * k->block_size);
	memset(k->sent, 0xff, k->n_blocks * k->block_size); /* §2.3: pad the last block */
	memcpy(k->sent, img->data, img->size);
	k->start = load;

	r = kat_transfer(k, s, KATAPULT_CMD_SEND_BLOCK);
	if (r < 0)
		return r;
	s->bytes_written = (uint64_t)k->n_blocks * k->block_size;
	r = kat_command(k, s, KATAPULT_CMD_SEND_EOF, NULL, &d, &dl);
	if (r < 0 || dl < 4) {
		backend_error(s, "SEND_EOF after 0x%08x failed (%s)",
			      load + (uint32_t)s->bytes_written, r < 0 ? reason(r) : "short reply");
		return r < 0 ? r : -EPROTO;
	}
	pages = katapult_get_le32(d);
	s->erases = pages;
	/* rp2040/flash.c counts 256-byte program pages, the others erase units */
	want = k->rp2040 ? (uint32_t)((s->bytes_written + 255) / 256)
			 : expected_pages(s, load, load + (uint32_t)s->bytes_written);
	/* a page counts once per boot of Katapult, or more where RP2040 re-opens one; fewer
	 * pages than the image spans means lost data */
	if (pages == 0 || (want && pages < want)) {
		backend_error(s, "Katapult reports %u flash pages written, the image spans %u",
			      pages, want ? want : 1);
		return -EIO;
	}
	return 0;
}

static int
kat_verify(struct flash_session *s)
{
	struct kat *k = s->priv;
	int r;

	if (!k || !k->sent)
		return -ENOTCONN;
	r = kat_transfer(k, s, KATAPULT_CMD_REQUEST_BLOCK);
	if (r == 0)
		s->bytes_verified = (uint64_t)k->n_blocks * k->block_size;
	return r;
}

static int
kat_leave(struct flash_session *s)
{
	struct kat *k = s->priv;
	int r;

	if (!k || !k->connected)
		return -ENOTCONN;
	/* Katapult acknowledges, then resets about 100 ms later (§2.3); a device that is
	 * already gone when we retry did get the command */
	r = kat_command(k, s, KATAPULT_CMD_COMPLETE, NULL, NULL, NULL);
	if (r == -ENODEV)
		r = 0;
	if (r < 0)
		backend_error(s, "COMPLETE was not acknowledged (%s); the board stays in Katapult",
			      reason(r));
	return r;
}

static void
kat_close(struct flash_session *s)
{
	struct kat *k = s->priv;

	if (!k)
		return;
	if (k->fd >= 0)
		close(k->fd);
	free(k->sent);
	free(k);
	s->priv = NULL;
}

const struct flash_backend backend_katapult = {
    .name = "katapult",
    .mode = DEVICE_MODE_KATAPULT,
    .open = kat_open,
    .write = kat_write,
    .verify = kat_verify,
    .leave = kat_leave,
    .close = kat_close,
};
