/* SPDX-License-Identifier: GPL-2.0-or-later */
/* sim_katapult: the device side of the Katapult bootloader (protocols.md §2.2-2.3) on a
 * simulated board's flash, with its flash-write rules, the USBFS prime quirk and faults. */
#include <errno.h>
#include <string.h>

#include "proto/katapult.h"
#include "sim_int.h"

#define SOFTWARE_VERSION "v0.0.1-sim"

void
sim_katapult_reset(struct sim_board *b)
{
	b->rx_len = 0;
	b->tx_len = 0;
	b->rx_early = 0;
	b->tx_at_us = 0;
	b->kat_start_us = 0;
	b->kat_silent = false;
	b->kat_pages = 0;
	b->kat_drop_first = false;
}

void
sim_katapult_opened(struct sim_board *b)
{
	enum catalog_family fam = b->model->mcu->family;

	b->rx_len = 0;
	b->rx_early = 0;
	b->kat_silent = false;
	/* §2.4 step 5: on USBFS double-buffered parts (F0/F1/G0/G4/L4) the first reply after
	 * the port opens is lost unless the host primes with a dummy command */
	b->kat_drop_first = fam == CATALOG_FAMILY_STM32F1 || fam == CATALOG_FAMILY_STM32G0;
}

unsigned
sim_katapult_reply_fault(struct sim_board *b, uint8_t *buf, size_t len)
{
	unsigned idx;
	bool hit;

	if (b->kat_drop_first) {
		b->kat_drop_first = false;
		return 0;
	}
	idx = b->fault_replies++;
	hit = idx >= b->fault.at && idx - b->fault.at < b->fault.count;
	if (!hit)
		return 1;
	switch (b->fault.kind) {
	case SIM_FAULT_CORRUPT_FRAME:
		if (len >= KATAPULT_FRAME_MIN)
			buf[len - 4] ^= 0x5a; /* CRC low byte */
		return 1;
	case SIM_FAULT_DROP_FRAME:
		return 0;
	case SIM_FAULT_DUP_FRAME:
		return 2;
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
	default:
		return 1;
	}
}

static void
queue(struct sim_board *b, int len, uint32_t busy_us)
{
	uint64_t base = b->kat_start_us ? b->kat_start_us : sim_now_us();
	uint64_t start = b->stall_until_us > base ? b->stall_until_us : base;

	if (len <= 0)
		return;
	b->tx_len = (size_t)len;
	b->tx_at_us = start + busy_us;
}

static void
reply_code(struct sim_board *b, uint8_t code, uint32_t busy_us)
{
	if (code == KATAPULT_RSP_NACK)
		b->stats.nacks++;
	if (code == KATAPULT_RSP_COMMAND_ERROR)
		b->stats.errors++;
	queue(b, katapult_frame_encode(code, NULL, 0, b->tx, sizeof(b->tx)), busy_us);
}

static void
reply_words(struct sim_board *b, const uint32_t *w, size_t n, uint32_t busy_us)
{
	queue(b, katapult_frame_encode(KATAPULT_RSP_ACK, w, n, b->tx, sizeof(b->tx)), busy_us);
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
do_connect(struct sim_board *b, uint32_t busy)
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
	b->kat_pages = 0;
	queue(b, katapult_frame_encode_bytes(KATAPULT_RSP_ACK, p, n, b->tx, sizeof(b->tx)), busy);
}

/* KAT stm32/flash.c rules (§2.3): the first block of a page erases it unless erased, a block
 * in the middle of a page must already be erased (else -2 "out of order") unless it carries
 * the same bytes (idempotent resend), and every write is read back (-3). */
static int
write_block(struct sim_board *b, uint32_t addr, const uint8_t *data, uint32_t *busy)
{
	struct flash *f = b->flash;
	uint32_t ps = 0, psz = 0, us = 0;
	uint8_t back[SIM_BLOCK_SIZE];

	if (addr % SIM_BLOCK_SIZE || addr < b->app_start)
		return -EINVAL;
	if (catalog_mcu_sector(b->model->mcu, addr, &ps, &psz) < 0)
		return -ERANGE;
	if (addr + SIM_BLOCK_SIZE > f->base + f->size)
		return -ERANGE;
	if (addr == ps) {
		b->kat_pages++;
		if (!flash_is_erased(f, ps, psz)) {
			if (flash_erase(f, ps, &us) < 0)
				return -EIO;
			*busy += us;
			b->stats.erases++;
		}
	} else if (!flash_is_erased(f, addr, SIM_BLOCK_SIZE)) {
		if (flash_read(f, addr, back, sizeof(back)) == 0 &&
		    memcmp(back, data, SIM_BLOCK_SIZE) == 0) {
			b->stats.resends++;
			return 0;
		}
		return -2;
	}
	if (flash_program(f, addr, data, SIM_BLOCK_SIZE, &us) < 0)
		return -EIO;
	*busy += us;
	if (flash_read(f, addr, back, sizeof(back)) < 0 || memcmp(back, data, sizeof(back)) != 0)
		return -3;
	return 0;
}

static uint32_t
unplug_threshold(const struct sim_board *b)
{
	/* `at` below the app start counts from it, so tests can say "after 4 KiB" */
	return b->fault.at < b->app_start ? b->app_start + b->fault.at : b->fault.at;
}

static void
dispatch(struct sim_board *b, const struct katapult_frame *f, uint32_t busy)
{
	uint32_t addr;

	switch (f->code) {
	case KATAPULT_CMD_CONNECT:
		do_connect(b, busy);
		return;
	case KATAPULT_CMD_SEND_BLOCK: {
		uint32_t w[2];

		if (f->n_words != 1 + SIM_BLOCK_SIZE / 4) {
			reply_code(b, KATAPULT_RSP_COMMAND_ERROR, busy);
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
		if (write_block(b, addr, f->payload + 4, &busy) < 0) {
			reply_code(b, KATAPULT_RSP_COMMAND_ERROR, busy);
			return;
		}
		b->stats.blocks++;
		w[0] = KATAPULT_CMD_SEND_BLOCK;
		w[1] = addr;
		reply_words(b, w, 2, busy);
		return;
	}
	case KATAPULT_CMD_SEND_EOF: {
		uint32_t w[2] = {KATAPULT_CMD_SEND_EOF, b->kat_pages};

		reply_words(b, w, 2, busy);
		return;
	}
	case KATAPULT_CMD_REQUEST_BLOCK: {
		uint8_t data[SIM_BLOCK_SIZE];

		if (f->n_words != 1) {
			reply_code(b, KATAPULT_RSP_COMMAND_ERROR, busy);
			return;
		}
		addr = katapult_get_le32(f->payload);
		if (flash_read(b->flash, addr, data, sizeof(data)) < 0) {
			reply_code(b, KATAPULT_RSP_COMMAND_ERROR, busy);
			return;
		}
		{
			/* ACK payload: acked command, address, data */
			uint8_t p[8 + SIM_BLOCK_SIZE];

			katapult_put_le32(p, KATAPULT_CMD_REQUEST_BLOCK);
			katapult_put_le32(p + 4, addr);
			memcpy(p + 8, data, sizeof(data));
			queue(b,
			      katapult_frame_encode_bytes(KATAPULT_RSP_ACK, p, sizeof(p), b->tx,
							  sizeof(b->tx)),
			      busy);
		}
		return;
	}
	case KATAPULT_CMD_COMPLETE: {
		uint32_t w[1] = {KATAPULT_CMD_COMPLETE};

		b->stats.completes++;
		reply_words(b, w, 1, busy);
		/* about 100 ms after the ACK: REQUEST_START_APP and reset */
		b->request = SIM_REQ_APP;
		sim_board_schedule(b, SIM_ACT_RESET, busy + sim_board_delay_us(b, 100000, 2000));
		return;
	}
	default:
		/* unknown commands (and the prime dummy, and CAN-only GET_CANBUS_ID) */
		reply_code(b, KATAPULT_RSP_COMMAND_ERROR, busy);
		return;
	}
}

/* Timing model, USB cost (full-speed CDC): a request/response pair alone on the bus costs one
 * 1 ms frame on top of the device's busy time. Pairs in flight together share frames, and
 * then the wire is the limit only where it is slower than the flash: at most
 * KAT_WIRE_BYTES_PER_FRAME bytes (19 bulk packets of 64 bytes) per frame, both directions. */
#define KAT_WIRE_BYTES_PER_FRAME 1216

static void
wire_floor(struct sim_board *b, uint64_t t0, size_t bytes)
{
	double us = (double)bytes * b->flash->timing.usb_frame_us / KAT_WIRE_BYTES_PER_FRAME;
	uint64_t floor_at = t0 + (uint64_t)(us * b->speed);

	if (b->tx_at_us < floor_at)
		b->tx_at_us = floor_at;
}

void
sim_katapult_process(struct sim_board *b)
{
	while (b->rx_len && !b->tx_len && b->action == SIM_ACT_NONE &&
	       b->mode == SIM_MODE_KATAPULT) {
		struct katapult_frame f;
		uint8_t frame[KATAPULT_DEVICE_FRAME_MAX];
		uint32_t busy;
		uint64_t t0;
		unsigned idx;
		bool bad = false, pipelined;
		int r = katapult_frame_find(b->rx, b->rx_len, KATAPULT_DEVICE_FRAME_MAX, &f, &bad);

		if (r == 0)
			return;
		if (r < 0) {
			/* §2.2: resync to the next 0x01, one NACK, then quiet until a valid frame
			 */
			memmove(b->rx, b->rx + (size_t)-r, b->rx_len - (size_t)-r);
			b->rx_len -= (size_t)-r;
			if (!b->kat_silent) {
				b->kat_silent = true;
				reply_code(b, KATAPULT_RSP_NACK, 0);
			}
			continue;
		}
		/* a frame the device already had starts when the device was free again (the
		 * previous reply's due time), else now */
		t0 = (size_t)r <= b->rx_early ? b->rx_early_seen_us : sim_now_us();
		if (t0 < b->tx_at_us)
			t0 = b->tx_at_us;
		b->rx_early = b->rx_early > (size_t)r ? b->rx_early - (size_t)r : 0;
		memcpy(frame, b->rx, (size_t)r);
		memmove(b->rx, b->rx + r, b->rx_len - (size_t)r);
		b->rx_len -= (size_t)r;
		f.payload = frame + 4;
		b->kat_silent = false;
		b->stats.frames_rx++;
		/* a frame with more behind it shares its USB frames with them */
		pipelined = b->rx_len > 0;
		busy = pipelined ? 0 : (uint32_t)((double)b->flash->timing.usb_frame_us * b->speed);
		b->kat_start_us = t0;
		idx = b->fault_frames++;
		if (idx >= b->fault.at && idx - b->fault.at < b->fault.count &&
		    b->fault.kind == SIM_FAULT_NACK_STORM) {
			reply_code(b, KATAPULT_RSP_NACK, busy);
			b->kat_start_us = 0;
			continue;
		}
		if (idx == b->fault.at && b->fault.kind == SIM_FAULT_STALL)
			b->stall_until_us = sim_now_us() + (uint64_t)b->fault.count * 1000u;
		dispatch(b, &f, busy);
		b->kat_start_us = 0;
		if (pipelined && b->tx_len)
			wire_floor(b, t0, (size_t)r + b->tx_len);
	}
}
