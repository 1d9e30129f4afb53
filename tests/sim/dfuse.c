/* SPDX-License-Identifier: GPL-2.0-or-later */
/* dfuse: simulated STM32 ROM DfuSe bootloader served through a umockdev usbdevfs handler
 * (usbdevfs.c): a state machine where all timing lives in the DFU state (bwPollTimeout), as
 * on hardware. The behaviour follows DFU 1.1 and ST AN2662/AN3156 as summarised in
 * protocols.md §3. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "proto/dfu.h"
#include "dfuse.h"
#include "usbdevfs.h"
#include "util.h"

#define USB_REQ_GET_STATUS 0x00
#define USB_REQ_GET_DESCRIPTOR 0x06
#define USB_REQ_SET_CONFIGURATION 0x09
#define USB_REQ_SET_INTERFACE 0x0b
#define USB_DT_DEVICE 1
#define USB_DT_CONFIG 2
#define USB_DT_STRING 3

enum pending_kind {
	PEND_NONE,
	PEND_SET_ADDRESS,
	PEND_ERASE,
	PEND_MASS_ERASE,
	PEND_UNPROTECT,
	PEND_WRITE,
	PEND_LEAVE,
};

struct dfuse_dev {
	pthread_mutex_t lock;
	struct flash *flash;
	char *serial;
	char *alt_names[DFUSE_MAX_ALTS];
	struct dfu_layout alt_layout[DFUSE_MAX_ALTS];
	size_t n_alts;
	uint8_t desc[DFUSE_MAX_DESCRIPTORS];
	size_t desc_len;
	uint16_t xfer;
	unsigned alt;

	uint8_t state, status;
	uint32_t pointer;
	enum pending_kind pending;
	uint32_t pend_addr;
	uint16_t pend_len;
	uint8_t *pend_data;   /* xfer bytes */
	uint8_t result_state; /* shown by the GETSTATUS after dfuDNBUSY */
	uint8_t result_status;
	uint64_t ready_at_us; /* device busy until then (enforced bwPollTimeout) */
	uint64_t bus_done_us; /* when the last control transfer completed on the bus */

	unsigned op_count[_DFUSE_OP_MAX];
	unsigned fail_nth[_DFUSE_OP_MAX];
	uint8_t fail_status[_DFUSE_OP_MAX];
	unsigned req_count[7];
	uint8_t stall_request;
	unsigned stall_nth;

	struct dfuse_stats st;
	bool powered_off; /* unplugged: the session died with the power */
	/* flash changed (erase or write) and not read back since: a host that stops here has
	 * not finished its download (every host reads back before it leaves) */
	bool unread_changes;
	void (*leave_cb)(void *ctx, uint32_t jump_addr);
	void *leave_ctx;
	uint64_t (*now_us)(void *ctx);
	void *now_ctx;
	struct usbdevfs_sim usb;
};

static const struct usbdevfs_sim_ops dfuse_usb_ops;

static uint64_t
default_now_us(void *ctx)
{
	(void)ctx;
	return now_monotonic_usec();
}

static void
put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

/* "@Internal Flash  /0x08000000/04*016Kg,..." from the flash geometry, for MCUs whose ROM
 * string the catalog does not know. */
static char *
layout_from_geometry(const struct flash *f)
{
	char buf[512];
	size_t n = (size_t)snprintf(buf, sizeof(buf), "@Internal Flash  /0x%08X/", f->base);

	for (uint32_t i = 0; i < f->n_sectors && n < sizeof(buf) - 32;) {
		uint32_t j = i;

		while (j < f->n_sectors && f->sector_size[j] == f->sector_size[i])
			j++;
		n += (size_t)snprintf(buf + n, sizeof(buf) - n, "%s%02u*%03uKg", i ? "," : "",
				      j - i, f->sector_size[i] / 1024);
		i = j;
	}
	return xstrdup(buf);
}

/* The ROM's other alternate settings. F4 strings are the ones dfu-util's device logs show
 * (protocols.md §3.1); the G0/H7 option-byte regions follow their reference manuals (RM0444
 * option bytes at 0x1FFF7800; RM0433/RM0468 expose option bytes as registers) and are
 * unconfirmed on real ROMs. */
static void
add_alt_names(struct dfuse_dev *d)
{
	const struct catalog_mcu *m = d->flash->mcu;

	d->alt_names[d->n_alts++] =
	    m->dfu_layout ? xstrdup(m->dfu_layout) : layout_from_geometry(d->flash);
	switch (m->family) {
	case CATALOG_FAMILY_STM32F4:
		d->alt_names[d->n_alts++] = xstrdup("@Option Bytes  /0x1FFFC000/01*016 g");
		d->alt_names[d->n_alts++] = xstrdup("@OTP Memory /0x1FFF7800/01*512 g,01*016 g");
		d->alt_names[d->n_alts++] = xstrdup("@Device Feature/0xFFFF0000/01*004 g");
		break;
	case CATALOG_FAMILY_STM32G0:
		d->alt_names[d->n_alts++] = xstrdup("@Option Bytes   /0x1FFF7800/01*128 e");
		break;
	case CATALOG_FAMILY_STM32H7:
		d->alt_names[d->n_alts++] = xstrdup("@Option Bytes   /0x5200201C/01*128 e");
		break;
	case CATALOG_FAMILY_LPC176X:
	case CATALOG_FAMILY_STM32F1:
	case CATALOG_FAMILY_RP2040:
	case _CATALOG_FAMILY_MAX:
		break;
	}
	for (size_t i = 0; i < d->n_alts; i++)
		if (dfu_layout_parse(d->alt_names[i], &d->alt_layout[i]) < 0)
			memset(&d->alt_layout[i], 0, sizeof(d->alt_layout[i]));
}

static void
build_descriptors(struct dfuse_dev *d)
{
	uint8_t *p = d->desc;
	size_t total = 9 + d->n_alts * 9 + 9;

	/* device: USB 2.0 full speed, EP0 64 bytes, 0483:df11 bcdDevice 2200, strings 1/2/3 */
	p[0] = 18;
	p[1] = USB_DT_DEVICE;
	put16(p + 2, 0x0200);
	p[4] = p[5] = p[6] = 0;
	p[7] = 64;
	put16(p + 8, DFUSE_VID);
	put16(p + 10, DFUSE_PID);
	put16(p + 12, DFUSE_BCD_DEVICE);
	p[14] = DFUSE_STR_MANUFACTURER;
	p[15] = DFUSE_STR_PRODUCT;
	p[16] = DFUSE_STR_SERIAL;
	p[17] = 1;
	p += 18;
	/* configuration 1, one interface, self powered, 100 mA */
	p[0] = 9;
	p[1] = USB_DT_CONFIG;
	put16(p + 2, (uint16_t)total);
	p[4] = 1;
	p[5] = 1;
	p[6] = 0;
	p[7] = 0xc0;
	p[8] = 50;
	p += 9;
	/* interface 0, one alt per memory region, class FE/01/02 (DFU mode) */
	for (size_t i = 0; i < d->n_alts; i++) {
		p[0] = 9;
		p[1] = 4;
		p[2] = 0;
		p[3] = (uint8_t)i;
		p[4] = 0;
		p[5] = 0xfe;
		p[6] = 0x01;
		p[7] = 0x02;
		p[8] = (uint8_t)(DFUSE_STR_ALT0 + i);
		p += 9;
	}
	/* the ROM sends the functional descriptor once, after the last alt setting */
	p[0] = 9;
	p[1] = DFU_DESC_FUNCTIONAL;
	p[2] = DFU_ATTR_CAN_DNLOAD | DFU_ATTR_CAN_UPLOAD | DFU_ATTR_WILL_DETACH;
	put16(p + 3, 255);
	put16(p + 5, d->xfer);
	put16(p + 7, DFU_BCD_DFUSE);
	p += 9;
	d->desc_len = (size_t)(p - d->desc);
}

struct dfuse_dev *
dfuse_new(struct flash *flash, const char *serial)
{
	struct dfuse_dev *d = xnew(struct dfuse_dev);

	pthread_mutex_init(&d->lock, NULL);
	d->flash = flash;
	d->serial = xstrdup(serial ? serial : "");
	d->xfer = DFUSE_TRANSFER_SIZE;
	d->pend_data = xmalloc(d->xfer);
	/* a ROM entered without a valid application reports errFIRMWARE (protocols.md §3.3) */
	d->state = DFU_STATE_ERROR;
	d->status = DFU_STATUS_ERR_FIRMWARE;
	d->pointer = flash->base;
	d->now_us = default_now_us;
	usbdevfs_sim_init(&d->usb, &dfuse_usb_ops, d);
	add_alt_names(d);
	build_descriptors(d);
	return d;
}

struct dfuse_dev *
dfuse_free(struct dfuse_dev *d)
{
	if (!d)
		return NULL;
	usbdevfs_sim_release(&d->usb);
	for (size_t i = 0; i < d->n_alts; i++)
		free(d->alt_names[i]);
	free(d->serial);
	free(d->pend_data);
	pthread_mutex_destroy(&d->lock);
	free(d);
	return NULL;
}

size_t
dfuse_descriptors(const struct dfuse_dev *d, uint8_t *buf, size_t len)
{
	return usbdevfs_sim_descriptors(d->desc, d->desc_len, buf, len);
}

const char *
dfuse_string(const struct dfuse_dev *d, unsigned index)
{
	switch (index) {
	case DFUSE_STR_MANUFACTURER:
		return "STMicroelectronics";
	case DFUSE_STR_PRODUCT:
		return "DFU in FS Mode";
	case DFUSE_STR_SERIAL:
		return d->serial;
	default:
		if (index >= DFUSE_STR_ALT0 && index - DFUSE_STR_ALT0 < d->n_alts)
			return d->alt_names[index - DFUSE_STR_ALT0];
		return NULL;
	}
}

size_t
dfuse_alt_count(const struct dfuse_dev *d)
{
	return d->n_alts;
}

void
dfuse_set_leave_cb(struct dfuse_dev *d, void (*cb)(void *ctx, uint32_t jump_addr), void *ctx)
{
	pthread_mutex_lock(&d->lock);
	d->leave_cb = cb;
	d->leave_ctx = ctx;
	pthread_mutex_unlock(&d->lock);
}

void
dfuse_set_clock(struct dfuse_dev *d, uint64_t (*now_us)(void *ctx), void *ctx)
{
	pthread_mutex_lock(&d->lock);
	d->now_us = now_us ? now_us : default_now_us;
	d->now_ctx = ctx;
	pthread_mutex_unlock(&d->lock);
}

void
dfuse_fail_at(struct dfuse_dev *d, enum dfuse_op op, unsigned nth, uint8_t status)
{
	if ((unsigned)op >= _DFUSE_OP_MAX)
		return;
	pthread_mutex_lock(&d->lock);
	d->fail_nth[op] = nth;
	d->fail_status[op] = status;
	pthread_mutex_unlock(&d->lock);
}

void
dfuse_stall_at(struct dfuse_dev *d, uint8_t request, unsigned nth)
{
	pthread_mutex_lock(&d->lock);
	d->stall_request = request;
	d->stall_nth = nth;
	pthread_mutex_unlock(&d->lock);
}

void
dfuse_get_stats(struct dfuse_dev *d, struct dfuse_stats *ret)
{
	pthread_mutex_lock(&d->lock);
	*ret = d->st;
	ret->state = d->state;
	ret->status = d->status;
	ret->pointer = d->pointer;
	pthread_mutex_unlock(&d->lock);
}

int
dfuse_set_alt(struct dfuse_dev *d, unsigned alt)
{
	int r = 0;

	pthread_mutex_lock(&d->lock);
	d->st.set_interface++;
	if (alt < d->n_alts)
		d->alt = alt;
	else
		r = -EINVAL;
	pthread_mutex_unlock(&d->lock);
	return r;
}

/* DFU 1.1 §6.1.2: a request not valid in the current state stalls and sets dfuERROR. */
static int
stall_error(struct dfuse_dev *d)
{
	d->state = DFU_STATE_ERROR;
	d->status = DFU_STATUS_ERR_STALLEDPKT;
	d->pending = PEND_NONE;
	return -EPIPE;
}

/* True when this is the injected failure of an operation of kind op. */
static bool
fault_hit(struct dfuse_dev *d, enum dfuse_op op, uint8_t *ret_status)
{
	d->op_count[op]++;
	if (d->fail_nth[op] == 0 || d->op_count[op] != d->fail_nth[op])
		return false;
	*ret_status = d->fail_status[op];
	return true;
}

static bool
in_any_alt(const struct dfuse_dev *d, uint32_t addr)
{
	for (size_t i = 0; i < d->n_alts; i++)
		if (dfu_layout_find(&d->alt_layout[i], addr, NULL, NULL) >= 0)
			return true;
	return false;
}

static bool
in_flash(const struct dfuse_dev *d, uint32_t addr, size_t len)
{
	const struct flash *f = d->flash;

	return addr >= f->base && addr - f->base <= f->size && len <= f->size - (addr - f->base);
}

static uint32_t
command_time(const struct dfuse_dev *d)
{
	double us = d->flash->timing.usb_frame_us * d->flash->speed;

	return us > 0 ? (uint32_t)us : 0;
}

/* Run the pending DNLOAD (AN2662: executed on the GETSTATUS that follows it); sets the
 * result shown after the busy period and returns the busy time. */
static uint32_t
execute_pending(struct dfuse_dev *d)
{
	uint8_t fail = DFU_STATUS_OK;
	uint32_t busy = 0;
	int r;

	d->result_state = DFU_STATE_DNLOAD_IDLE;
	d->result_status = DFU_STATUS_OK;
	switch (d->pending) {
	case PEND_SET_ADDRESS:
		busy = command_time(d);
		if (fault_hit(d, DFUSE_OP_SET_ADDRESS, &fail))
			break;
		if (in_flash(d, d->pend_addr, 1) || in_any_alt(d, d->pend_addr))
			d->pointer = d->pend_addr;
		else
			fail = DFU_STATUS_ERR_TARGET;
		break;
	case PEND_ERASE:
		if (fault_hit(d, DFUSE_OP_ERASE, &fail))
			break;
		if (flash_erase(d->flash, d->pend_addr, &busy) < 0)
			fail = DFU_STATUS_ERR_TARGET;
		else
			d->st.erases++;
		d->unread_changes = true;
		break;
	case PEND_MASS_ERASE:
		if (fault_hit(d, DFUSE_OP_ERASE, &fail))
			break;
		flash_erase_all(d->flash, &busy);
		d->st.mass_erases++;
		break;
	case PEND_UNPROTECT:
		/* the flash is not read-protected: the ROM refuses (AN2662 errVENDOR) */
		busy = command_time(d);
		fail = DFU_STATUS_ERR_VENDOR;
		break;
	case PEND_WRITE:
		if (fault_hit(d, DFUSE_OP_WRITE, &fail) && fail != DFU_STATUS_ERR_VERIFY)
			break;
		if (!in_flash(d, d->pend_addr, d->pend_len)) {
			fail = DFU_STATUS_ERR_ADDRESS;
			break;
		}
		if (fail == DFU_STATUS_ERR_VERIFY && d->pend_len > 0)
			d->pend_data[d->pend_len - 1] = 0x00; /* what a failed verify finds */
		r = flash_program(d->flash, d->pend_addr, d->pend_data, d->pend_len, &busy);
		if (r == -EIO) {
			/* F1/F4 program the AND of old and new bits and the ROM's read-back fails;
			 * the ECC parts (G0, H7) refuse a non-erased flash word outright */
			enum catalog_family fam = d->flash->mcu->family;

			fail = fam == CATALOG_FAMILY_STM32F1 || fam == CATALOG_FAMILY_STM32F4
				   ? DFU_STATUS_ERR_VERIFY
				   : DFU_STATUS_ERR_PROG;
			busy = flash_program_time(d->flash, d->pend_len);
		} else if (r < 0) {
			fail = DFU_STATUS_ERR_ADDRESS;
		} else {
			d->st.bytes_written += d->pend_len;
		}
		break;
	case PEND_NONE:
	case PEND_LEAVE:
		break;
	}
	if (fail != DFU_STATUS_OK) {
		d->result_state = DFU_STATE_ERROR;
		d->result_status = fail;
	}
	d->pending = PEND_NONE;
	return busy;
}

static int
do_getstatus(struct dfuse_dev *d, uint16_t wlength, uint8_t *data, bool *ret_left)
{
	struct dfu_status_reply s = {d->status, 0, d->state, 0};
	uint64_t now = d->now_us(d->now_ctx);

	if (wlength < DFU_STATUS_LEN)
		return stall_error(d);
	d->st.getstatus++;
	if (now < d->ready_at_us) {
		/* polled before bwPollTimeout elapsed: a real ROM is still busy */
		d->st.early_polls++;
		d->st.busy_replies++;
		s.status = DFU_STATUS_OK;
		s.state = DFU_STATE_DNBUSY;
		s.poll_timeout_ms = (uint32_t)((d->ready_at_us - now + 999) / 1000);
		dfu_status_encode(&s, data);
		return DFU_STATUS_LEN;
	}
	switch (d->state) {
	case DFU_STATE_DNLOAD_SYNC: {
		uint32_t busy = execute_pending(d);

		d->state = DFU_STATE_DNBUSY;
		d->ready_at_us = now + busy;
		d->st.busy_replies++;
		s.status = DFU_STATUS_OK;
		s.state = DFU_STATE_DNBUSY;
		s.poll_timeout_ms = (busy + 999) / 1000;
		break;
	}
	case DFU_STATE_DNBUSY:
		d->state = d->result_state;
		d->status = d->result_status;
		s.state = d->state;
		s.status = d->status;
		break;
	case DFU_STATE_MANIFEST_SYNC:
		/* AN2662: leave runs on this GETSTATUS; the reply says dfuMANIFEST, then the
		 * device drops off the bus and jumps to the address pointer */
		s.state = DFU_STATE_MANIFEST;
		s.status = DFU_STATUS_OK;
		d->state = DFU_STATE_MANIFEST_WAIT_RESET;
		d->st.left = true;
		d->st.jump_addr = d->pointer;
		*ret_left = true;
		break;
	case DFU_STATE_APP_IDLE:
	case DFU_STATE_APP_DETACH:
	case DFU_STATE_IDLE:
	case DFU_STATE_DNLOAD_IDLE:
	case DFU_STATE_MANIFEST:
	case DFU_STATE_MANIFEST_WAIT_RESET:
	case DFU_STATE_UPLOAD_IDLE:
	case DFU_STATE_ERROR:
	default:
		break;
	}
	dfu_status_encode(&s, data);
	return DFU_STATUS_LEN;
}

static uint32_t
le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static int
do_dnload(struct dfuse_dev *d, uint16_t block, uint16_t wlength, const uint8_t *data)
{
	if (d->state != DFU_STATE_IDLE && d->state != DFU_STATE_DNLOAD_IDLE)
		return stall_error(d);
	if (wlength == 0) {
		/* zero-length DNLOAD: leave (§3.6) */
		d->pending = PEND_LEAVE;
		d->state = DFU_STATE_MANIFEST_SYNC;
		return 0;
	}
	if (wlength > d->xfer)
		return stall_error(d);
	if (block == 0) {
		d->st.dnload_cmd++;
		if (data[0] == DFUSE_CMD_SET_ADDRESS && wlength == DFUSE_CMD_LEN) {
			d->pending = PEND_SET_ADDRESS;
			d->pend_addr = le32(data + 1);
		} else if (data[0] == DFUSE_CMD_ERASE && wlength == DFUSE_CMD_LEN) {
			d->pending = PEND_ERASE;
			d->pend_addr = le32(data + 1);
		} else if (data[0] == DFUSE_CMD_ERASE && wlength == 1) {
			d->pending = PEND_MASS_ERASE;
		} else if (data[0] == DFUSE_CMD_READ_UNPROTECT && wlength == 1) {
			d->pending = PEND_UNPROTECT;
		} else {
			/* AN2662: unsupported command -> dfuERROR, errSTALLEDPKT */
			return stall_error(d);
		}
		d->state = DFU_STATE_DNLOAD_SYNC;
		return wlength;
	}
	if (dfu_block_address(block, d->xfer, d->pointer, &d->pend_addr) < 0)
		return stall_error(d); /* wBlockNum 1 is not valid for data */
	d->st.dnload_data++;
	d->unread_changes = true;
	memcpy(d->pend_data, data, wlength);
	d->pend_len = wlength;
	d->pending = PEND_WRITE;
	d->state = DFU_STATE_DNLOAD_SYNC;
	return wlength;
}

static int
do_upload(struct dfuse_dev *d, uint16_t block, uint16_t wlength, uint8_t *data)
{
	static const uint8_t commands[] = {DFUSE_CMD_GET_COMMANDS, DFUSE_CMD_SET_ADDRESS,
					   DFUSE_CMD_ERASE, DFUSE_CMD_READ_UNPROTECT};
	const struct flash *f = d->flash;
	uint32_t addr, n;

	if (d->state != DFU_STATE_IDLE && d->state != DFU_STATE_UPLOAD_IDLE)
		return stall_error(d);
	d->st.upload++;
	if (block >= 2)
		d->unread_changes = false;
	if (block == 0) {
		n = wlength < sizeof(commands) ? wlength : (uint32_t)sizeof(commands);
		memcpy(data, commands, n);
		d->state = DFU_STATE_UPLOAD_IDLE;
		return (int)n;
	}
	if (dfu_block_address(block, d->xfer, d->pointer, &addr) < 0)
		return stall_error(d);
	if (!in_flash(d, addr, 0)) {
		d->state = DFU_STATE_ERROR;
		d->status = DFU_STATUS_ERR_ADDRESS;
		return -EPIPE;
	}
	n = f->size - (addr - f->base);
	if (n > wlength)
		n = wlength;
	if (flash_read(d->flash, addr, data, n) < 0)
		return stall_error(d);
	d->st.bytes_read += n;
	/* DFU 1.1 §6.2: a short frame ends the upload */
	d->state = n < wlength ? DFU_STATE_IDLE : DFU_STATE_UPLOAD_IDLE;
	return (int)n;
}

static int
standard_request(struct dfuse_dev *d, const uint8_t *setup, uint8_t *data)
{
	struct usbdevfs_setup p = usbdevfs_sim_setup(setup);

	if (p.type == 0x80 && p.req == USB_REQ_GET_DESCRIPTOR) {
		d->st.get_descriptor++;
		return usbdevfs_sim_get_descriptor(
		    d->desc, d->desc_len, dfuse_string(d, p.value & 0xff), p.value, p.length, data);
	}
	if (p.type == 0x80 && p.req == USB_REQ_GET_STATUS && p.length >= 2) {
		data[0] = 1; /* self powered */
		data[1] = 0;
		return 2;
	}
	if (p.type == 0x00 && p.req == USB_REQ_SET_CONFIGURATION)
		return 0;
	if (p.type == 0x01 && p.req == USB_REQ_SET_INTERFACE) {
		d->st.set_interface++;
		if (p.value >= d->n_alts)
			return -EPIPE;
		d->alt = p.value;
		return 0;
	}
	return -EPIPE;
}

static int
class_request(struct dfuse_dev *d, const uint8_t *setup, uint8_t *data, bool *ret_left)
{
	struct usbdevfs_setup p = usbdevfs_sim_setup(setup);
	uint8_t req = p.req;
	uint16_t wvalue = p.value, wlength = p.length;
	bool in = p.type == DFU_REQTYPE_IN;

	if ((p.type != DFU_REQTYPE_IN && p.type != DFU_REQTYPE_OUT) || p.index != 0 || req > 6)
		return -EPIPE;
	d->st.request[req]++;
	d->req_count[req]++;
	if (d->stall_nth && req == d->stall_request && d->req_count[req] == d->stall_nth)
		return -EPIPE;
	switch (req) {
	case DFU_REQ_DNLOAD:
		return in ? -EPIPE : do_dnload(d, wvalue, wlength, data);
	case DFU_REQ_UPLOAD:
		return in ? do_upload(d, wvalue, wlength, data) : -EPIPE;
	case DFU_REQ_GETSTATUS:
		return in ? do_getstatus(d, wlength, data, ret_left) : -EPIPE;
	case DFU_REQ_CLRSTATUS:
		if (in || d->state != DFU_STATE_ERROR)
			return stall_error(d);
		d->state = DFU_STATE_IDLE;
		d->status = DFU_STATUS_OK;
		return 0;
	case DFU_REQ_GETSTATE:
		if (!in || wlength < 1)
			return -EPIPE;
		data[0] = d->state;
		return 1;
	case DFU_REQ_ABORT:
		switch (d->state) {
		case DFU_STATE_IDLE:
		case DFU_STATE_DNLOAD_SYNC:
		case DFU_STATE_DNLOAD_IDLE:
		case DFU_STATE_MANIFEST_SYNC:
		case DFU_STATE_UPLOAD_IDLE:
			d->state = DFU_STATE_IDLE;
			d->pending = PEND_NONE;
			return 0;
		default:
			return stall_error(d);
		}
	case DFU_REQ_DETACH:
	default:
		/* DETACH is a run-time request; the ROM is in DFU mode already */
		return stall_error(d);
	}
}

int
dfuse_control(struct dfuse_dev *d, const uint8_t setup[8], uint8_t *data)
{
	void (*cb)(void *ctx, uint32_t jump_addr) = NULL;
	void *ctx = NULL;
	uint32_t jump = 0;
	bool left = false;
	int r;

	pthread_mutex_lock(&d->lock);
	/* gone from the bus (after leave, or the power went): a client that kept the node open
	 * gets ENODEV for every new transfer, as from usbfs */
	if (d->st.left || d->powered_off) {
		pthread_mutex_unlock(&d->lock);
		return -ENODEV;
	}
	d->st.control++;
	if ((setup[0] & 0x60) == 0x00)
		r = standard_request(d, setup, data);
	else
		r = class_request(d, setup, data, &left);
	if (r == -EPIPE)
		d->st.stalls++;
	if (left) {
		cb = d->leave_cb;
		ctx = d->leave_ctx;
		jump = d->st.jump_addr;
	}
	pthread_mutex_unlock(&d->lock);
	if (cb)
		cb(ctx, jump);
	return r;
}

/* ---- usbdevfs emulation (umockdev handle-ioctl, runs on umockdev's worker thread) ---- */

/* Timing model, USB cost: at full speed EP0 carries one control transfer per 1 ms frame, so
 * a transfer completes no sooner than one frame after the previous one on this device. The
 * simulator's own per-transfer overhead counts toward that frame instead of adding to it.
 * Only bus-level transfers (the ioctl path) pay; dfuse_control() callers and tests with
 * their own clock do not. At speed 0 nothing waits. */
static void
bus_pace(struct dfuse_dev *d)
{
	uint64_t frame, now, due, wait = 0;

	pthread_mutex_lock(&d->lock);
	frame = command_time(d);
	now = now_monotonic_usec();
	if (frame && d->now_us == default_now_us) {
		due = d->bus_done_us + frame;
		wait = due > now ? due - now : 0;
		d->st.paced_us += wait;
	}
	d->bus_done_us = now + wait;
	pthread_mutex_unlock(&d->lock);
	if (wait)
		flash_busy_wait((uint32_t)wait);
}

static void
pace_cb(void *dev)
{
	bus_pace(dev);
}

static void
unhandled_cb(void *dev)
{
	struct dfuse_dev *d = dev;

	pthread_mutex_lock(&d->lock);
	d->st.unhandled_ioctls++;
	pthread_mutex_unlock(&d->lock);
}

static int
control_cb(void *dev, const uint8_t setup[8], uint8_t *data)
{
	return dfuse_control(dev, setup, data);
}

static int
set_alt_cb(void *dev, unsigned iface, unsigned alt)
{
	return iface == 0 ? dfuse_set_alt(dev, alt) : -EINVAL;
}

static const struct usbdevfs_sim_ops dfuse_usb_ops = {
    .control = control_cb,
    .set_alt = set_alt_cb,
    .pace = pace_cb,
    .unhandled = unhandled_cb,
};

int
dfuse_attach(struct dfuse_dev *d, UMockdevTestbed *tb, const char *devnode)
{
	return usbdevfs_sim_attach(&d->usb, tb, devnode);
}

bool
dfuse_power_off(struct dfuse_dev *d)
{
	bool torn;

	pthread_mutex_lock(&d->lock);
	d->powered_off = true;
	torn = !d->st.left && d->unread_changes;
	pthread_mutex_unlock(&d->lock);
	return torn;
}

void
dfuse_detach(struct dfuse_dev *d, UMockdevTestbed *tb, const char *devnode)
{
	usbdevfs_sim_detach(&d->usb, tb, devnode);
}

void
dfuse_set_layout(struct dfuse_dev *d, const char *layout)
{
	free(d->alt_names[0]);
	d->alt_names[0] = xstrdup(layout);
}
