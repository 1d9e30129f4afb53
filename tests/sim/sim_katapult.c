/* SPDX-License-Identifier: GPL-2.0-or-later */
/* sim_katapult: the device side of the Katapult bootloader (protocols.md §2.2-2.3) on a
 * simulated board's flash, per MCU family as upstream Katapult behaves, with faults.
 *
 * What the real firmware does (Arksine/katapult, read at the commits named):
 *
 * Transmit path [src/generic/usb_cdc.c @15f12d79, src/command.c @2861e995]: every reply goes
 * through console_sendf() into `transmit_buf[192]`. When `transmit_pos + reply size > 192`
 * the reply is silently dropped ("Not enough space for message"). usb_bulk_in_task() moves
 * at most one 64-byte packet into the bulk IN endpoint when the endpoint is free (the host
 * has read the previous packet, src/stm32/usbfs.c usb_send_bulk_in returns -1 otherwise).
 * Reply sizes: REQUEST_BLOCK ACK 8 + 8 + 64 = 80 bytes, SEND_BLOCK and SEND_EOF ACK 16,
 * NACK and COMMAND_ERROR 8 (command.c command_respond, flashcmd.c out[] sizes).
 *
 * Receive path [usb_cdc.c usb_bulk_out_task, command.c command_find_and_dispatch]: the
 * device reads a 64-byte OUT packet into `receive_buf[128]` when it has room (else the host
 * is NAKed, nothing is lost) and dispatches one complete frame per task run. Nothing there
 * looks at the transmit space: frames are dispatched as fast as they arrive, and a burst of
 * requests whose replies do not fit loses those replies.
 *
 * Command handlers [src/flashcmd.c @019c087a]: SEND_BLOCK checks the word count and
 * `address >= CONFIG_LAUNCH_APP_ADDRESS`, then flash_write_block(); SEND_EOF replies with
 * flash_complete()'s count; REQUEST_BLOCK reads flash with memcpy (no buffer involved);
 * COMPLETE acknowledges and jumps to the app 100 ms later.
 *
 * flash_write_block per family:
 * - STM32 [src/stm32/flash.c @019c087a]: the first block of a page erases the page unless
 *   the page is already erased, or unless the block holds the same bytes and the rest of
 *   the page is still erased: then it is a retransmit and is ignored (no erase, not
 *   counted). A mid-page block must be erased, or identical (ignored), else -2. Every write
 *   is compared afterwards (-3). page_write_count (the EOF reply) counts first blocks of
 *   pages that were written, per boot.
 * - LPC176x [src/lpc176x/flash.c @b4594196]: blocks are collected in `iap_buf[256]`. A block
 *   whose address is not `next_address` is refused (-2) unless both addresses are 256-byte
 *   aligned (a new chunk may start anywhere on a chunk boundary). The chunk is written when
 *   its last block arrives, with the STM32 rules above applied to 4/32 KiB sectors and
 *   256-byte writes; flash_complete() pads and writes a partial chunk. page_write_count
 *   counts sectors, per boot.
 * - RP2040 [src/rp2040/flash.c @401fa022]: blocks are collected in a 256-byte page buffer;
 *   a block outside the buffered page flushes it first (erasing the 4 KiB sector when the
 *   page starts one), flash_complete() flushes the last one. No retransmit detection and no
 *   order check: a block for an earlier page re-opens that page (0xFF-filled) and its flush
 *   programs it again. page_write_count counts 256-byte program operations, per boot.
 *
 * USBFS "prime" quirk (F0/F1/G0/G4/L4, the double-buffered full-speed controller; the issue
 * report and Katapult's flashtool priming describe it; the copy of src/stm32/usbfs.c read
 * here, @c510d532, is the older single-buffered driver): the first IN packet after
 * enumeration stays in the endpoint until a second one is queued behind it. It is delayed,
 * not lost, and it happens once per enumeration, not per open of the tty.
 *
 * The timing model (the facts and the assumptions are listed in bench/README.md):
 * - USB full speed carries at most KAT_WIRE_BYTES_PER_FRAME bytes per 1 ms frame in each
 *   direction; OUT bytes reach the device at that rate and each IN packet leaves at that
 *   rate once the previous one has been read. These wire rates do not scale with the
 *   board's speed factor: the USB bus is not part of the device.
 * - A request alone on the bus (nothing behind it, nothing in the IN pipe) gets its reply
 *   read one frame later (host controller scheduling), scaled by the speed factor.
 * - Flash times come from tests/sim/flash.c; the CPU time of a handler is otherwise 0.
 * - The IN endpoint keeps draining while a handler runs (the real bulk_in task does not run
 *   then; with replies of 16 bytes during writes, that never decides a drop). */
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "proto/katapult.h"
#include "sim_int.h"
#include "util.h"

#define SOFTWARE_VERSION "v0.0.1-sim"
#define KAT_TX_BUF 192 /* usb_cdc.c transmit_buf */
#define KAT_EP_SIZE 64 /* USB_CDC_EP_BULK_IN_SIZE */
#define KAT_CHUNK 256  /* lpc176x IAP_BUF_MIN_SIZE, rp2040 PAGE_SIZE */
#define KAT_RP2040_SECTOR 4096
#define KAT_WIRE_BYTES_PER_FRAME 1216 /* 19 bulk packets of 64 bytes per 1 ms frame */
#define KAT_HELD UINT64_MAX

enum kat_rules { KAT_RULES_STM32, KAT_RULES_LPC176X, KAT_RULES_RP2040 };

static enum kat_rules
rules(const struct sim_board *b)
{
	switch (b->model->mcu->family) {
	case CATALOG_FAMILY_LPC176X:
		return KAT_RULES_LPC176X;
	case CATALOG_FAMILY_RP2040:
		return KAT_RULES_RP2040;
	case CATALOG_FAMILY_STM32F1:
	case CATALOG_FAMILY_STM32F4:
	case CATALOG_FAMILY_STM32G0:
	case CATALOG_FAMILY_STM32H7:
	case _CATALOG_FAMILY_MAX:
	default:
		return KAT_RULES_STM32;
	}
}

/* Wire time of n bytes at full speed, in microseconds (unscaled, see above). */
static uint64_t
wire_us(const struct sim_board *b, size_t n)
{
	return ((uint64_t)n * b->flash->timing.usb_frame_us + KAT_WIRE_BYTES_PER_FRAME - 1) /
	       KAT_WIRE_BYTES_PER_FRAME;
}

static uint64_t
frame_latency_us(const struct sim_board *b)
{
	return (uint64_t)((double)b->flash->timing.usb_frame_us * b->speed);
}

static void
clear_transport(struct sim_board *b)
{
	b->rx_len = 0;
	b->tx_len = 0;
	b->kat_ep = 0;
	b->kat_ep_read_us = 0;
	b->kat_pend_len = 0;
	b->kat_busy_until = 0;
	b->kat_in_clock = 0;
	b->kat_out_clock = 0;
	b->kat_n_marks = 0;
	b->kat_silent = false;
}

void
sim_katapult_reset(struct sim_board *b)
{
	enum catalog_family fam = b->model->mcu->family;

	clear_transport(b);
	/* static variables of a fresh boot */
	b->kat_pages = 0;
	b->kat_next_addr = 0;
	b->kat_wbuf_used = false;
	b->kat_wbuf_addr = 0;
	memset(b->kat_wbuf, 0xff, sizeof(b->kat_wbuf));
	/* per enumeration: USBFS double-buffered parts hold their first IN packet */
	b->kat_hold_next = fam == CATALOG_FAMILY_STM32F1 || fam == CATALOG_FAMILY_STM32G0;
}

void
sim_katapult_opened(struct sim_board *b)
{
	/* the device cannot see an open; only the host side starts empty */
	b->rx_len = 0;
	b->kat_n_marks = 0;
}

void
sim_katapult_closed(struct sim_board *b)
{
	/* A held packet stays in the endpoint (the device does not see the close) and comes
	 * out in front of the next reply. Simplification: anything else the device still had
	 * to send is discarded with the host's buffers. */
	size_t held = b->kat_ep && b->kat_ep_read_us == KAT_HELD ? b->kat_ep : 0;

	clear_transport(b);
	b->tx_len = b->kat_ep = held;
	b->kat_ep_read_us = held ? KAT_HELD : 0;
}

void
sim_katapult_received(struct sim_board *b, size_t n)
{
	uint64_t now = sim_now_us();
	uint64_t start = b->kat_out_clock > now ? b->kat_out_clock : now;

	b->kat_rx_total += n;
	b->kat_out_clock = start + wire_us(b, n);
	if (b->kat_n_marks == ELEMENTSOF(b->kat_marks)) {
		/* merge the two oldest marks: later arrival, never earlier */
		memmove(b->kat_marks, b->kat_marks + 1,
			(b->kat_n_marks - 1) * sizeof(b->kat_marks[0]));
		b->kat_n_marks--;
	}
	b->kat_marks[b->kat_n_marks].end = b->kat_rx_total;
	b->kat_marks[b->kat_n_marks].at = b->kat_out_clock;
	b->kat_n_marks++;
}

/* When the byte before stream position `end` reached the device. */
static uint64_t
arrival_us(const struct sim_board *b, uint64_t end)
{
	for (unsigned i = 0; i < b->kat_n_marks; i++) {
		uint64_t back;

		if (b->kat_marks[i].end < end)
			continue;
		back = wire_us(b, (size_t)(b->kat_marks[i].end - end));
		return b->kat_marks[i].at > back ? b->kat_marks[i].at - back : 0;
	}
	return b->kat_out_clock;
}

static void
drop_marks(struct sim_board *b)
{
	uint64_t consumed = b->kat_rx_total - b->rx_len;
	unsigned k = 0;

	while (k < b->kat_n_marks && b->kat_marks[k].end <= consumed)
		k++;
	memmove(b->kat_marks, b->kat_marks + k, (b->kat_n_marks - k) * sizeof(b->kat_marks[0]));
	b->kat_n_marks -= k;
}

/* ---- IN side: transmit_buf and the bulk IN endpoint ---------------------------------- */

static void
write_host(struct sim_board *b, size_t n)
{
	size_t off = 0;

	while (off < n && b->master_fd >= 0) {
		ssize_t w = write(b->master_fd, b->tx + off, n - off);

		if (w <= 0)
			break;
		off += (size_t)w;
	}
	memmove(b->tx, b->tx + n, b->tx_len - n);
	b->tx_len -= n;
}

/* usb_bulk_in_task: a free endpoint takes the next packet from transmit_buf at `t`. */
static void
load_endpoint(struct sim_board *b, uint64_t t, bool lone)
{
	size_t queued = b->tx_len;

	if (b->kat_ep || !queued)
		return;
	b->kat_ep = queued < KAT_EP_SIZE ? queued : KAT_EP_SIZE;
	b->kat_ep_read_us = t + (lone ? frame_latency_us(b) : wire_us(b, KAT_EP_SIZE));
	if (b->kat_hold_next) {
		b->kat_hold_next = false;
		/* held until a second packet is queued behind it */
		if (b->tx_len == b->kat_ep)
			b->kat_ep_read_us = KAT_HELD;
	}
}

/* Advance the IN side to t: the host reads endpoint packets that are due. */
static void
in_advance(struct sim_board *b, uint64_t t)
{
	if (t < b->kat_in_clock)
		t = b->kat_in_clock;
	while (b->kat_ep && b->kat_ep_read_us <= t) {
		uint64_t at = b->kat_ep_read_us;

		write_host(b, b->kat_ep);
		b->kat_ep = 0;
		load_endpoint(b, at, false);
	}
	b->kat_in_clock = t;
}

/* console_sendf at t: into transmit_buf if it fits, else dropped. */
static void
send_reply(struct sim_board *b, const uint8_t *buf, size_t len, uint64_t t, bool lone)
{
	size_t in_buf = b->tx_len - b->kat_ep;

	if (in_buf + len > KAT_TX_BUF || b->tx_len + len > sizeof(b->tx)) {
		b->stats.tx_dropped++;
		return;
	}
	memcpy(b->tx + b->tx_len, buf, len);
	b->tx_len += len;
	b->stats.replies++;
	if (b->kat_ep && b->kat_ep_read_us == KAT_HELD)
		b->kat_ep_read_us = t + wire_us(b, KAT_EP_SIZE); /* the second packet frees it */
	load_endpoint(b, t, lone && b->tx_len == len);
}

/* A reply the handler produced; the reply faults act here, as if lost or damaged on the
 * way (DROP never reaches transmit_buf, DUP is queued twice). */
static void
emit(struct sim_board *b, uint64_t t)
{
	unsigned idx = b->fault_replies++;
	bool hit = idx >= b->fault.at && idx - b->fault.at < b->fault.count;
	unsigned copies = 1;

	if (hit) {
		switch (b->fault.kind) {
		case SIM_FAULT_CORRUPT_FRAME:
			if (b->kat_pend_len >= KATAPULT_FRAME_MIN)
				b->kat_pend[b->kat_pend_len - 4] ^= 0x5a; /* CRC low byte */
			break;
		case SIM_FAULT_DROP_FRAME:
			copies = 0;
			break;
		case SIM_FAULT_DUP_FRAME:
			copies = 2;
			break;
		case SIM_FAULT_NONE:
		case SIM_FAULT_UNPLUG_AT_BYTE:
		case SIM_FAULT_NACK_STORM:
		case SIM_FAULT_STALL:
		case SIM_FAULT_NEVER_BACK:
		case SIM_FAULT_BOOT_FAIL:
		case SIM_FAULT_DFU_ERR_WRITE:
		case SIM_FAULT_DFU_ERR_VERIFY:
		case SIM_FAULT_DFU_ERR_ERASE:
		case SIM_FAULT_PICOBOOT_REFUSE:
		case SIM_FAULT_PICOBOOT_BUSY:
		case SIM_FAULT_SD_RENAME_FAIL:
		case SIM_FAULT_SD_NO_INIT:
		default:
			break;
		}
	}
	in_advance(b, t);
	for (unsigned c = 0; c < copies; c++)
		send_reply(b, b->kat_pend, b->kat_pend_len, t, b->kat_pend_lone);
	b->kat_pend_len = 0;
}

/* ---- command handlers ---------------------------------------------------------------- */

static void
pend(struct sim_board *b, int len)
{
	b->kat_pend_len = len > 0 ? (size_t)len : 0;
}

static void
reply_code(struct sim_board *b, uint8_t code)
{
	if (code == KATAPULT_RSP_NACK)
		b->stats.nacks++;
	if (code == KATAPULT_RSP_COMMAND_ERROR)
		b->stats.errors++;
	pend(b, katapult_frame_encode(code, NULL, 0, b->kat_pend, sizeof(b->kat_pend)));
}

static void
reply_words(struct sim_board *b, const uint32_t *w, size_t n)
{
	pend(b, katapult_frame_encode(KATAPULT_RSP_ACK, w, n, b->kat_pend, sizeof(b->kat_pend)));
}

static size_t
put_string(uint8_t *p, const char *s)
{
	size_t n = strlen(s);

	memcpy(p, s, n);
	/* NUL-padded to a word boundary, with at least one NUL */
	do
		p[n++] = 0;
	while (n % 4);
	return n;
}

static void
do_connect(struct sim_board *b)
{
	uint8_t p[160] = {0};
	size_t n = 16;

	/* §2.3 CONNECT: version, app start, block size, MCU, zero word, software version */
	katapult_put_le32(p, KATAPULT_CMD_CONNECT);
	katapult_put_le32(p + 4, KATAPULT_PROTO_VERSION);
	katapult_put_le32(p + 8, b->app_start);
	katapult_put_le32(p + 12, SIM_BLOCK_SIZE);
	n += put_string(p + n, b->model->mcu->name);
	n += 4;
	n += put_string(p + n, SOFTWARE_VERSION);
	pend(b,
	     katapult_frame_encode_bytes(KATAPULT_RSP_ACK, p, n, b->kat_pend, sizeof(b->kat_pend)));
}

/* The STM32 write rules on one unit of `len` bytes at addr inside the erase unit
 * [ps, ps + psz): stm32/flash.c flash_write_block, lpc176x/flash.c write_buffer. */
static int
write_unit(struct sim_board *b, uint32_t addr, const uint8_t *data, size_t len, uint32_t ps,
	   uint32_t psz, uint32_t *busy)
{
	struct flash *f = b->flash;
	uint32_t us = 0;
	bool need_erase = false;

	if (addr == ps) {
		if (flash_is_erased(f, ps, psz)) {
			/* page already erased */
		} else if (flash_equals(f, addr, data, len) &&
			   flash_is_erased(f, addr + (uint32_t)len, psz - len)) {
			b->stats.resends++; /* retransmitted first block: ignored, not counted */
			return 0;
		} else {
			need_erase = true;
		}
		b->kat_pages++;
	} else if (!flash_is_erased(f, addr, len)) {
		if (flash_equals(f, addr, data, len)) {
			b->stats.resends++;
			return 0;
		}
		return -2; /* out of order */
	}
	if (need_erase) {
		if (flash_erase(f, ps, &us) < 0)
			return -EIO;
		*busy += us;
		b->stats.erases++;
	}
	if (flash_program(f, addr, data, len, &us) < 0)
		return -EIO;
	*busy += us;
	return flash_equals(f, addr, data, len) ? 0 : -3;
}

static int
write_stm32(struct sim_board *b, uint32_t addr, const uint8_t *data, uint32_t *busy)
{
	uint32_t ps = 0, psz = 0;

	if (catalog_mcu_sector(b->model->mcu, addr, &ps, &psz) < 0)
		return -ERANGE;
	return write_unit(b, addr, data, SIM_BLOCK_SIZE, ps, psz, busy);
}

static int
flush_lpc(struct sim_board *b, uint32_t chunk, uint32_t *busy)
{
	uint32_t ps = 0, psz = 0;

	if (catalog_mcu_sector(b->model->mcu, chunk, &ps, &psz) < 0)
		return -ERANGE;
	return write_unit(b, chunk, b->kat_wbuf, KAT_CHUNK, ps, psz, busy);
}

static int
write_lpc(struct sim_board *b, uint32_t addr, const uint8_t *data, uint32_t *busy)
{
	uint32_t idx = addr & (KAT_CHUNK - 1);

	if (addr != b->kat_next_addr) {
		if ((addr | b->kat_next_addr) & (KAT_CHUNK - 1))
			return -2; /* out of order */
		b->kat_next_addr = addr;
	}
	memcpy(b->kat_wbuf + idx, data, SIM_BLOCK_SIZE);
	if (idx == KAT_CHUNK - SIM_BLOCK_SIZE) {
		int r = flush_lpc(b, addr - idx, busy);

		if (r < 0)
			return r;
	}
	b->kat_next_addr += SIM_BLOCK_SIZE;
	return 0;
}

/* rp2040/flash.c flush_buffer: no result is checked there, so none is here. */
static void
flush_rp2040(struct sim_board *b, uint32_t *busy)
{
	uint32_t us = 0;

	if (!b->kat_wbuf_used)
		return;
	if (b->kat_wbuf_addr % KAT_RP2040_SECTOR == 0 &&
	    flash_erase(b->flash, b->kat_wbuf_addr, &us) == 0) {
		*busy += us;
		b->stats.erases++;
	}
	if (flash_program(b->flash, b->kat_wbuf_addr, b->kat_wbuf, KAT_CHUNK, &us) == 0)
		*busy += us;
	b->kat_pages++;
	b->kat_wbuf_used = false;
}

static int
write_rp2040(struct sim_board *b, uint32_t addr, const uint8_t *data, uint32_t *busy)
{
	struct flash *f = b->flash;

	if (addr < f->base)
		return -2;
	if (b->kat_wbuf_used &&
	    (addr < b->kat_wbuf_addr || addr + SIM_BLOCK_SIZE > b->kat_wbuf_addr + KAT_CHUNK))
		flush_rp2040(b, busy);
	if (!b->kat_wbuf_used) {
		b->kat_wbuf_used = true;
		b->kat_wbuf_addr = addr / KAT_CHUNK * KAT_CHUNK;
		memset(b->kat_wbuf, 0xff, sizeof(b->kat_wbuf));
	}
	memcpy(b->kat_wbuf + (addr - b->kat_wbuf_addr), data, SIM_BLOCK_SIZE);
	return 0;
}

static int
write_block(struct sim_board *b, uint32_t addr, const uint8_t *data, uint32_t *busy)
{
	struct flash *f = b->flash;

	if (addr % SIM_BLOCK_SIZE || addr < b->app_start)
		return -EINVAL;
	if (addr + SIM_BLOCK_SIZE > f->base + f->size)
		return -ERANGE;
	switch (rules(b)) {
	case KAT_RULES_LPC176X:
		return write_lpc(b, addr, data, busy);
	case KAT_RULES_RP2040:
		return write_rp2040(b, addr, data, busy);
	case KAT_RULES_STM32:
	default:
		return write_stm32(b, addr, data, busy);
	}
}

/* flash_complete: flush what is buffered; the reply carries page_write_count. */
static int
complete(struct sim_board *b, uint32_t *busy)
{
	switch (rules(b)) {
	case KAT_RULES_LPC176X: {
		uint32_t idx = b->kat_next_addr & (KAT_CHUNK - 1);

		if (idx) {
			memset(b->kat_wbuf + idx, 0xff, KAT_CHUNK - idx);
			return flush_lpc(b, b->kat_next_addr - idx, busy);
		}
		return 0;
	}
	case KAT_RULES_RP2040:
		flush_rp2040(b, busy);
		return 0;
	case KAT_RULES_STM32:
	default:
		return 0;
	}
}

static uint32_t
unplug_threshold(const struct sim_board *b)
{
	/* `at` below the app start counts from it, so tests can say "after 4 KiB" */
	return b->fault.at < b->app_start ? b->app_start + b->fault.at : b->fault.at;
}

static void
do_send_block(struct sim_board *b, const struct katapult_frame *f, uint32_t *busy)
{
	uint32_t w[2], addr;

	if (f->n_words != 1 + SIM_BLOCK_SIZE / 4) {
		reply_code(b, KATAPULT_RSP_COMMAND_ERROR);
		return;
	}
	addr = katapult_get_le32(f->payload);
	if (b->fault.kind == SIM_FAULT_UNPLUG_AT_BYTE && addr >= unplug_threshold(b)) {
		uint32_t back_ms = b->fault.count;

		b->fault.kind = SIM_FAULT_NONE;
		sim_board_unplug_locked(b);
		/* power comes back after `count` ms (0: stays unplugged) */
		if (back_ms)
			sim_board_schedule(b, SIM_ACT_BOOT, back_ms * 1000u);
		return;
	}
	if (write_block(b, addr, f->payload + 4, busy) < 0) {
		reply_code(b, KATAPULT_RSP_COMMAND_ERROR);
		return;
	}
	b->stats.blocks++;
	w[0] = KATAPULT_CMD_SEND_BLOCK;
	w[1] = addr;
	reply_words(b, w, 2);
}

static void
do_request_block(struct sim_board *b, const struct katapult_frame *f)
{
	uint8_t p[8 + SIM_BLOCK_SIZE];
	uint32_t addr;

	if (f->n_words != 1) {
		reply_code(b, KATAPULT_RSP_COMMAND_ERROR);
		return;
	}
	addr = katapult_get_le32(f->payload);
	if (flash_read(b->flash, addr, p + 8, SIM_BLOCK_SIZE) < 0) {
		reply_code(b, KATAPULT_RSP_COMMAND_ERROR);
		return;
	}
	/* ACK payload: acked command, address, data */
	katapult_put_le32(p, KATAPULT_CMD_REQUEST_BLOCK);
	katapult_put_le32(p + 4, addr);
	pend(b, katapult_frame_encode_bytes(KATAPULT_RSP_ACK, p, sizeof(p), b->kat_pend,
					    sizeof(b->kat_pend)));
}

static void
dispatch(struct sim_board *b, const struct katapult_frame *f, uint32_t *busy)
{
	switch (f->code) {
	case KATAPULT_CMD_CONNECT:
		do_connect(b);
		return;
	case KATAPULT_CMD_SEND_BLOCK:
		do_send_block(b, f, busy);
		return;
	case KATAPULT_CMD_SEND_EOF: {
		uint32_t w[2] = {KATAPULT_CMD_SEND_EOF, 0};

		if (complete(b, busy) < 0) {
			reply_code(b, KATAPULT_RSP_COMMAND_ERROR);
			return;
		}
		w[1] = b->kat_pages;
		reply_words(b, w, 2);
		return;
	}
	case KATAPULT_CMD_REQUEST_BLOCK:
		do_request_block(b, f);
		return;
	case KATAPULT_CMD_COMPLETE: {
		uint32_t w[1] = {KATAPULT_CMD_COMPLETE};

		b->stats.completes++;
		reply_words(b, w, 1);
		/* about 100 ms after the ACK: REQUEST_START_APP and reset */
		b->request = SIM_REQ_APP;
		sim_board_schedule(b, SIM_ACT_RESET, *busy + sim_board_delay_us(b, 100000, 2000));
		return;
	}
	default:
		/* unknown commands (and the prime dummy, and CAN-only GET_CANBUS_ID) */
		reply_code(b, KATAPULT_RSP_COMMAND_ERROR);
		return;
	}
}

/* Take the next frame from rx if the device is free for it by `now`; true when it did. */
static bool
take_frame(struct sim_board *b, uint64_t now)
{
	struct katapult_frame f;
	uint8_t frame[KATAPULT_DEVICE_FRAME_MAX];
	uint64_t start;
	uint32_t busy = 0;
	unsigned idx;
	bool bad = false;
	int r = katapult_frame_find(b->rx, b->rx_len, KATAPULT_DEVICE_FRAME_MAX, &f, &bad);
	size_t used = r < 0 ? (size_t)-r : (size_t)r;

	if (r == 0)
		return false;
	start = arrival_us(b, b->kat_rx_total - b->rx_len + used);
	if (start < b->kat_busy_until)
		start = b->kat_busy_until;
	if (start < b->kat_in_clock)
		start = b->kat_in_clock;
	if (start < b->stall_until_us && r > 0)
		start = b->stall_until_us;
	if (start > now)
		return false;
	memcpy(frame, b->rx, used);
	memmove(b->rx, b->rx + used, b->rx_len - used);
	b->rx_len -= used;
	drop_marks(b);
	b->kat_busy_until = start;
	b->kat_pend_lone = b->rx_len == 0;
	if (r < 0) {
		/* §2.2: resync to the next 0x01, one NACK, then quiet until a valid frame */
		if (!b->kat_silent) {
			b->kat_silent = true;
			reply_code(b, KATAPULT_RSP_NACK);
		}
		return true;
	}
	f.payload = frame + 4;
	b->kat_silent = false;
	b->stats.frames_rx++;
	idx = b->fault_frames++;
	if (idx >= b->fault.at && idx - b->fault.at < b->fault.count &&
	    b->fault.kind == SIM_FAULT_NACK_STORM) {
		reply_code(b, KATAPULT_RSP_NACK);
		return true;
	}
	if (idx == b->fault.at && b->fault.kind == SIM_FAULT_STALL) {
		b->stall_until_us = start + (uint64_t)b->fault.count * 1000u;
		b->kat_busy_until = b->stall_until_us;
	}
	dispatch(b, &f, &busy);
	b->kat_busy_until += busy;
	return true;
}

void
sim_katapult_run(struct sim_board *b)
{
	uint64_t now = sim_now_us();

	for (;;) {
		if (b->mode != SIM_MODE_KATAPULT || !b->tty_open)
			return;
		if (b->kat_pend_len) {
			if (b->kat_busy_until > now)
				break;
			emit(b, b->kat_busy_until);
			continue;
		}
		if (!b->rx_len || b->action != SIM_ACT_NONE || !take_frame(b, now))
			break;
	}
	if (b->mode == SIM_MODE_KATAPULT)
		in_advance(b, now);
}

uint64_t
sim_katapult_next_us(const struct sim_board *b)
{
	uint64_t next = UINT64_MAX;
	struct katapult_frame f;
	bool bad = false;

	if (b->mode != SIM_MODE_KATAPULT || !b->tty_open)
		return next;
	if (b->kat_ep && b->kat_ep_read_us < next)
		next = b->kat_ep_read_us;
	if (b->kat_pend_len && b->kat_busy_until < next)
		next = b->kat_busy_until;
	if (!b->kat_pend_len && b->rx_len && b->action == SIM_ACT_NONE &&
	    katapult_frame_find(b->rx, b->rx_len, KATAPULT_DEVICE_FRAME_MAX, &f, &bad) != 0) {
		/* a frame waiting for the wire or for the device */
		uint64_t t =
		    b->kat_busy_until > b->kat_out_clock ? b->kat_busy_until : b->kat_out_clock;
		if (b->stall_until_us > t)
			t = b->stall_until_us;
		if (t < next)
			next = t;
	}
	return next;
}
