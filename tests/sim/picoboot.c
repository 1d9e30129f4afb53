/* SPDX-License-Identifier: GPL-2.0-or-later */
/* picoboot: simulated RP2040 BOOTSEL PICOBOOT interface (see picoboot.h for the sources). */
#include "picoboot.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "usbdevfs.h"
#include "util.h"

#define MAGIC 0x431FD10Bu
#define FLASH_BASE 0x10000000u
#define XIP_SPAN 0x01000000u
#define SRAM_BASE 0x20000000u
#define SRAM_SIZE 0x42000u
#define SECTOR 4096u
#define PAGE 256u
#define MAX_TRANSFER (256u * 1024u)
#define PACKET 64u
#define PACKETS_PER_FRAME 19u /* full-speed bulk: 19 x 64 bytes per 1 ms frame at best */

/* RP2040 datasheet §2.8.5.3 command ids and §2.8.5.4 status codes */
enum {
	CMD_EXCLUSIVE = 0x01,
	CMD_REBOOT = 0x02,
	CMD_ERASE = 0x03,
	CMD_READ = 0x84,
	CMD_WRITE = 0x05,
	CMD_EXIT_XIP = 0x06,
	CMD_ENTER_XIP = 0x07,
	CMD_EXEC = 0x08,
	CMD_VECTORIZE = 0x09,
};
enum {
	ST_OK = 0,
	ST_UNKNOWN_CMD = 1,
	ST_INVALID_CMD_LENGTH = 2,
	ST_INVALID_TRANSFER_LENGTH = 3,
	ST_INVALID_ADDRESS = 4,
	ST_BAD_ALIGNMENT = 5,
	ST_REBOOTING = 7,
};

enum phase { PH_CMD, PH_DATA_OUT, PH_DATA_IN, PH_ACK_IN, PH_ACK_OUT };

struct picoboot_sim {
	pthread_mutex_t lock;
	struct flash *flash;
	uint8_t *sram;
	enum phase phase;
	bool halted_in, halted_out;
	/* the command being handled */
	uint32_t token, addr, size, pc, delay_ms;
	uint8_t id;
	uint8_t *buf; /* data phase */
	uint32_t len, pos;
	uint64_t busy_until_us;
	uint32_t status; /* of the last command */
	bool reboot_pending;
	bool busy; /* the vendor interface is claimed by another program */
	struct picoboot_sim_stats st;
	enum picoboot_sim_fault fault;
	uint32_t fault_at;
	uint32_t fault_status;
	void (*reboot_cb)(void *ctx, uint32_t pc, uint32_t delay_ms);
	void *reboot_ctx;
	void (*unplug_cb)(void *ctx);
	void *unplug_ctx;
	struct usbdevfs_sim usb;
};

static const struct usbdevfs_sim_ops picoboot_usb_ops;

static uint32_t
le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t
mono_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

struct picoboot_sim *
picoboot_sim_new(struct flash *flash)
{
	struct picoboot_sim *d = xnew(struct picoboot_sim);

	pthread_mutex_init(&d->lock, NULL);
	d->flash = flash;
	d->sram = xcalloc(SRAM_SIZE, 1);
	d->buf = xmalloc(MAX_TRANSFER);
	usbdevfs_sim_init(&d->usb, &picoboot_usb_ops, d);
	return d;
}

struct picoboot_sim *
picoboot_sim_free(struct picoboot_sim *d)
{
	if (!d)
		return NULL;
	usbdevfs_sim_release(&d->usb);
	pthread_mutex_destroy(&d->lock);
	free(d->sram);
	free(d->buf);
	free(d);
	return NULL;
}

void
picoboot_sim_set_reboot_cb(struct picoboot_sim *d, void (*cb)(void *, uint32_t, uint32_t),
			   void *ctx)
{
	pthread_mutex_lock(&d->lock);
	d->reboot_cb = cb;
	d->reboot_ctx = ctx;
	pthread_mutex_unlock(&d->lock);
}

void
picoboot_sim_set_unplug_cb(struct picoboot_sim *d, void (*cb)(void *), void *ctx)
{
	pthread_mutex_lock(&d->lock);
	d->unplug_cb = cb;
	d->unplug_ctx = ctx;
	pthread_mutex_unlock(&d->lock);
}

void
picoboot_sim_fault(struct picoboot_sim *d, enum picoboot_sim_fault kind, uint32_t at,
		   uint32_t status)
{
	pthread_mutex_lock(&d->lock);
	d->fault = kind;
	d->fault_at = at;
	d->fault_status = status;
	pthread_mutex_unlock(&d->lock);
}

void
picoboot_sim_set_busy(struct picoboot_sim *d, bool busy)
{
	pthread_mutex_lock(&d->lock);
	d->busy = busy;
	pthread_mutex_unlock(&d->lock);
}

void
picoboot_sim_get_stats(struct picoboot_sim *d, struct picoboot_sim_stats *ret)
{
	pthread_mutex_lock(&d->lock);
	*ret = d->st;
	ret->last_status = d->status;
	pthread_mutex_unlock(&d->lock);
}

/* A refused command: remember why and halt both bulk endpoints (datasheet §2.8.5). */
static int
refuse(struct picoboot_sim *d, uint32_t status)
{
	d->status = status;
	d->halted_in = d->halted_out = true;
	d->phase = PH_CMD;
	d->st.refused++;
	return -EPIPE;
}

static bool
in_range(uint32_t addr, uint32_t size, uint32_t base, uint32_t span)
{
	return addr >= base && size <= span && addr - base <= span - size;
}

/* The address rules of the command just decoded: ST_OK or the status to refuse with. */
static uint32_t
check_address(const struct picoboot_sim *d)
{
	bool flash = in_range(d->addr, d->size, FLASH_BASE, XIP_SPAN);
	bool sram = in_range(d->addr, d->size, SRAM_BASE, SRAM_SIZE);

	switch (d->id) {
	case CMD_ERASE:
		if (!flash)
			return ST_INVALID_ADDRESS;
		return (d->addr | d->size) % SECTOR ? ST_BAD_ALIGNMENT : ST_OK;
	case CMD_WRITE:
		if (sram)
			return ST_OK;
		if (!flash)
			return ST_INVALID_ADDRESS;
		return (d->addr | d->size) % PAGE ? ST_BAD_ALIGNMENT : ST_OK;
	case CMD_READ:
		return flash || sram ? ST_OK : ST_INVALID_ADDRESS;
	default:
		return ST_OK;
	}
}

/* Expected bCmdSize of each command; 0xff for an unknown id. */
static uint8_t
arg_bytes(uint8_t id)
{
	switch (id) {
	case CMD_EXCLUSIVE:
		return 1;
	case CMD_REBOOT:
		return 12;
	case CMD_ERASE:
	case CMD_READ:
	case CMD_WRITE:
		return 8;
	case CMD_EXIT_XIP:
	case CMD_ENTER_XIP:
		return 0;
	case CMD_EXEC:
	case CMD_VECTORIZE:
		return 4;
	default:
		return 0xff;
	}
}

/* The QSPI chip ignores address bits above its size: the 16 MiB XIP window mirrors it. */
static uint32_t
flash_addr(const struct picoboot_sim *d, uint32_t addr)
{
	return d->flash->base + (addr - FLASH_BASE) % d->flash->size;
}

static uint64_t
exec_erase(struct picoboot_sim *d)
{
	uint64_t busy = 0;

	for (uint32_t a = d->addr; a < d->addr + d->size; a += SECTOR) {
		uint32_t us = 0;

		(void)flash_erase(d->flash, flash_addr(d, a), &us);
		busy += us;
		d->st.erases++;
	}
	return busy;
}

/* NOR programming can only clear bits: data lands ANDed with what the cells hold. */
static uint64_t
exec_write(struct picoboot_sim *d)
{
	uint32_t us = 0;
	uint8_t *old;
	bool clean = true;

	d->st.writes++;
	d->st.bytes_written += d->len;
	if (d->addr >= SRAM_BASE) {
		memcpy(d->sram + (d->addr - SRAM_BASE), d->buf, d->len);
		return 0;
	}
	old = xmalloc(d->len);
	for (uint32_t off = 0; off < d->len; off += PAGE)
		(void)flash_read(d->flash, flash_addr(d, d->addr + off), old + off, PAGE);
	for (uint32_t i = 0; i < d->len; i++)
		if ((old[i] & d->buf[i]) != d->buf[i])
			clean = false;
	for (uint32_t off = 0; off < d->len; off += PAGE) {
		uint32_t a = flash_addr(d, d->addr + off);

		if (clean) {
			uint32_t t = 0;

			(void)flash_program(d->flash, a, d->buf + off, PAGE, &t);
			us += t;
		} else {
			for (uint32_t i = 0; i < PAGE; i++)
				old[off + i] &= d->buf[off + i];
			(void)flash_load(d->flash, a, old + off, PAGE);
			us += flash_program_time(d->flash, PAGE);
		}
	}
	if (!clean)
		d->st.and_writes++;
	free(old);
	return us;
}

static void
exec_read(struct picoboot_sim *d)
{
	d->st.reads++;
	if (d->addr >= SRAM_BASE) {
		memcpy(d->buf, d->sram + (d->addr - SRAM_BASE), d->size);
		return;
	}
	for (uint32_t off = 0; off < d->size;) {
		uint32_t a = flash_addr(d, d->addr + off);
		uint32_t n = d->flash->base + d->flash->size - a;

		if (n > d->size - off)
			n = d->size - off;
		(void)flash_read(d->flash, a, d->buf + off, n);
		off += n;
	}
}

/* Run the command; sets the busy time the acknowledgement waits for. */
static void
execute(struct picoboot_sim *d)
{
	uint64_t busy = 0;

	switch (d->id) {
	case CMD_EXCLUSIVE:
		d->st.exclusive = d->addr & 0xff;
		break;
	case CMD_EXIT_XIP:
		d->st.xip_exited = true;
		break;
	case CMD_ENTER_XIP:
		d->st.xip_exited = false;
		break;
	case CMD_ERASE:
		busy = exec_erase(d);
		break;
	case CMD_WRITE:
		busy = exec_write(d);
		break;
	case CMD_READ:
		exec_read(d);
		break;
	case CMD_REBOOT:
		d->reboot_pending = true;
		d->st.reboot_pc = d->pc;
		d->st.reboot_delay_ms = d->delay_ms;
		break;
	default: /* EXEC, VECTORIZE_FLASH: nothing to model */
		break;
	}
	d->status = ST_OK;
	d->busy_until_us = mono_us() + busy;
}

static int
take_command(struct picoboot_sim *d, const uint8_t *b, size_t len)
{
	uint32_t st;

	d->st.commands++;
	if (len != 32 || le32(b) != MAGIC || arg_bytes(b[8]) == 0xff)
		return refuse(d, ST_UNKNOWN_CMD);
	if (b[9] != arg_bytes(b[8]))
		return refuse(d, ST_INVALID_CMD_LENGTH);
	d->token = le32(b + 4);
	d->id = b[8];
	d->len = le32(b + 12);
	d->addr = d->pc = le32(b + 16);
	d->size = le32(b + 20);
	d->delay_ms = le32(b + 24);
	if (d->id == CMD_READ || d->id == CMD_WRITE) {
		if (d->len != d->size || d->len > MAX_TRANSFER)
			return refuse(d, ST_INVALID_TRANSFER_LENGTH);
	} else if (d->len != 0) {
		return refuse(d, ST_INVALID_TRANSFER_LENGTH);
	}
	st = check_address(d);
	if (st != ST_OK)
		return refuse(d, st);
	d->pos = 0;
	if (d->id == CMD_READ) {
		execute(d);
		d->phase = d->len ? PH_DATA_IN : PH_ACK_OUT;
	} else if (d->len) {
		d->phase = PH_DATA_OUT;
	} else {
		execute(d);
		d->phase = PH_ACK_IN;
	}
	return (int)len;
}

/* Fault injection on a WRITE; returns true when the WRITE must not run. */
static bool
write_fault(struct picoboot_sim *d, int *ret, bool *ret_unplug)
{
	if (d->id != CMD_WRITE)
		return false;
	switch (d->fault) {
	case PICOBOOT_SIM_FAULT_UNPLUG:
		if (d->st.bytes_written + d->len < d->fault_at)
			return false;
		d->st.left = true;
		*ret_unplug = true;
		*ret = -ENODEV;
		break;
	case PICOBOOT_SIM_FAULT_STATUS:
		if (d->st.writes + 1 < d->fault_at)
			return false;
		*ret = refuse(d, d->fault_status);
		break;
	case PICOBOOT_SIM_FAULT_NONE:
	default:
		return false;
	}
	d->fault = PICOBOOT_SIM_FAULT_NONE;
	return true;
}

static int
bulk_out(struct picoboot_sim *d, const uint8_t *buf, size_t len, bool *ret_unplug)
{
	size_t n;
	int r;

	if (d->halted_out)
		return -EPIPE;
	switch (d->phase) {
	case PH_CMD:
		return take_command(d, buf, len);
	case PH_DATA_OUT:
		n = len < d->len - d->pos ? len : d->len - d->pos;
		memcpy(d->buf + d->pos, buf, n);
		d->pos += (uint32_t)n;
		if (d->pos == d->len) {
			if (write_fault(d, &r, ret_unplug))
				return r;
			execute(d);
			d->phase = PH_ACK_IN;
		}
		return (int)n;
	case PH_ACK_OUT:
		/* the bootrom takes the next OUT packet as the acknowledgement: the real tools
		 * send one byte here */
		if (len > PACKET)
			return refuse(d, ST_UNKNOWN_CMD);
		d->phase = PH_CMD;
		return (int)len;
	case PH_DATA_IN:
	case PH_ACK_IN:
		break;
	}
	return refuse(d, ST_UNKNOWN_CMD); /* out of sequence */
}

/* -EAGAIN: nothing to send (the device NAKs; the host times out). */
static int
bulk_in(struct picoboot_sim *d, uint8_t *buf, size_t len, uint64_t *ret_wait_until)
{
	size_t n;

	if (d->halted_in)
		return -EPIPE;
	switch (d->phase) {
	case PH_DATA_IN:
		n = len < d->len - d->pos ? len : d->len - d->pos;
		memcpy(buf, d->buf + d->pos, n);
		d->pos += (uint32_t)n;
		d->st.bytes_read += n;
		if (d->pos == d->len)
			d->phase = PH_ACK_OUT;
		return (int)n;
	case PH_ACK_IN:
		*ret_wait_until = d->busy_until_us;
		d->phase = PH_CMD;
		return 0;
	case PH_CMD:
	case PH_DATA_OUT:
	case PH_ACK_OUT:
		break;
	}
	return -EAGAIN;
}

/* Bus time of a bulk transfer of len bytes at full speed (an assumption: the best case of
 * 19 packets per frame; a real host may schedule fewer), scaled like the device times. */
static uint64_t
bus_us(const struct picoboot_sim *d, size_t len)
{
	size_t packets = len / PACKET + 1; /* a short or zero-length packet ends it */

	return (uint64_t)((double)(packets * d->flash->timing.usb_frame_us / PACKETS_PER_FRAME) *
			  d->flash->speed);
}

static void
sleep_until(uint64_t t)
{
	uint64_t now = mono_us();

	if (t > now)
		flash_busy_wait((uint32_t)(t - now));
}

int
picoboot_sim_bulk(struct picoboot_sim *d, uint8_t ep, uint8_t *buf, size_t len)
{
	void (*reboot_cb)(void *, uint32_t, uint32_t) = NULL;
	void (*unplug_cb)(void *) = NULL;
	void *ctx = NULL;
	uint64_t wait_until = 0, start = mono_us();
	bool unplug = false;
	uint32_t pc = 0, delay = 0;
	int r;

	pthread_mutex_lock(&d->lock);
	if (d->st.left) {
		pthread_mutex_unlock(&d->lock);
		return -ENODEV;
	}
	if (ep == PICOBOOT_SIM_EP_OUT)
		r = bulk_out(d, buf, len, &unplug);
	else if (ep == PICOBOOT_SIM_EP_IN)
		r = bulk_in(d, buf, len, &wait_until);
	else
		r = -EINVAL;
	if (r == 0 && ep == PICOBOOT_SIM_EP_IN && d->reboot_pending) {
		/* acknowledged: the chip leaves the bus dDelayMS later, and boots */
		d->reboot_pending = false;
		d->st.left = true;
		reboot_cb = d->reboot_cb;
		ctx = d->reboot_ctx;
		pc = d->pc;
		delay = d->delay_ms;
	}
	if (unplug) {
		unplug_cb = d->unplug_cb;
		ctx = d->unplug_ctx;
	}
	pthread_mutex_unlock(&d->lock);
	sleep_until(wait_until);
	if (r >= 0)
		sleep_until(start + bus_us(d, (size_t)r));
	if (reboot_cb)
		reboot_cb(ctx, pc, delay);
	if (unplug_cb)
		unplug_cb(ctx);
	return r;
}

void
picoboot_sim_clear_halt(struct picoboot_sim *d, uint8_t ep)
{
	pthread_mutex_lock(&d->lock);
	if (ep == PICOBOOT_SIM_EP_IN)
		d->halted_in = false;
	else if (ep == PICOBOOT_SIM_EP_OUT)
		d->halted_out = false;
	pthread_mutex_unlock(&d->lock);
}

static int
control_locked(struct picoboot_sim *d, const uint8_t s[8], uint8_t *data)
{
	uint16_t index = (uint16_t)(s[4] | s[5] << 8), length = (uint16_t)(s[6] | s[7] << 8);

	/* standard GET_STATUS of an endpoint: bit 0 = halted */
	if (s[0] == 0x82 && s[1] == 0x00 && length >= 2) {
		bool h = index == PICOBOOT_SIM_EP_IN ? d->halted_in : d->halted_out;

		data[0] = h ? 1 : 0;
		data[1] = 0;
		return 2;
	}
	/* standard CLEAR_FEATURE(ENDPOINT_HALT) */
	if (s[0] == 0x02 && s[1] == 0x01) {
		if (index == PICOBOOT_SIM_EP_IN)
			d->halted_in = false;
		else if (index == PICOBOOT_SIM_EP_OUT)
			d->halted_out = false;
		return 0;
	}
	if (index != PICOBOOT_SIM_IFACE)
		return -EPIPE;
	/* PICOBOOT_IF_RESET: unstall, forget the command in progress */
	if (s[0] == 0x41 && s[1] == 0x41 && length == 0) {
		d->halted_in = d->halted_out = false;
		d->phase = PH_CMD;
		return 0;
	}
	/* PICOBOOT_IF_CMD_STATUS: token, status, command id, in progress */
	if (s[0] == 0xc1 && s[1] == 0x42 && length >= 16) {
		memset(data, 0, 16);
		for (int i = 0; i < 4; i++) {
			data[i] = (uint8_t)(d->token >> (8 * i));
			data[4 + i] = (uint8_t)(d->status >> (8 * i));
		}
		data[8] = d->id;
		data[9] = d->phase == PH_CMD ? 0 : 1;
		return 16;
	}
	return -EPIPE;
}

int
picoboot_sim_control(struct picoboot_sim *d, const uint8_t setup[8], uint8_t *data)
{
	int r;

	pthread_mutex_lock(&d->lock);
	r = d->st.left ? -ENODEV : control_locked(d, setup, data);
	pthread_mutex_unlock(&d->lock);
	return r;
}

/* ---- usbdevfs emulation (usbdevfs.c, on umockdev's worker thread) ---- */

static int
usb_control(void *dev, const uint8_t setup[8], uint8_t *data)
{
	return picoboot_sim_control(dev, setup, data);
}

static int
usb_bulk(void *dev, uint8_t ep, uint8_t *buf, size_t len)
{
	int r = picoboot_sim_bulk(dev, ep, buf, len);

	return r == -EAGAIN ? -EPROTO : r; /* a NAKed IN: a transfer error, not left pending */
}

static void
usb_clear_halt(void *dev, unsigned ep)
{
	picoboot_sim_clear_halt(dev, (uint8_t)ep);
}

/* another program holding the vendor interface makes the claim fail */
static int
usb_claim(void *dev)
{
	struct picoboot_sim *d = dev;
	bool busy;

	pthread_mutex_lock(&d->lock);
	busy = d->busy;
	pthread_mutex_unlock(&d->lock);
	return busy ? -EBUSY : 0;
}

/* no SETINTERFACE (left to umockdev) and no pacing: bulk_in/bulk_out keep the bus time */
static const struct usbdevfs_sim_ops picoboot_usb_ops = {
    .control = usb_control,
    .bulk = usb_bulk,
    .clear_halt = usb_clear_halt,
    .claim = usb_claim,
};

int
picoboot_sim_attach(struct picoboot_sim *d, UMockdevTestbed *tb, const char *devnode)
{
	return usbdevfs_sim_attach(&d->usb, tb, devnode);
}

void
picoboot_sim_detach(struct picoboot_sim *d, UMockdevTestbed *tb, const char *devnode)
{
	usbdevfs_sim_detach(&d->usb, tb, devnode);
}
