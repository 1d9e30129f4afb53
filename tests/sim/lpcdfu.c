/* SPDX-License-Identifier: GPL-2.0-or-later */
/* lpcdfu: the LPC176x community DFU bootloader (1d50:6015) as its source behaves.
 *
 * From dfu.c of triffid/LPC17xx-DFU-Bootloader (commit 9ce7c4d) and of the SKR 1.3/1.4 fork
 * ardiehl/BTT_SKR_13_14_14T_SD-DFU-Bootloader (same DFU code), sbl_iap.c and sbl_config.h:
 * - Descriptors: 1d50:6015, bcdDevice 0x0040, EP0 64, strings "SmoothieWare", "Smoothie",
 *   interface "Smoothie DFU", no serial; one interface FE/01/02 with no endpoints; the DFU
 *   functional descriptor WILLDETACH|CANDOWNLOAD|CANUPLOAD, wDetachTimeout 500,
 *   wTransferSize 512, bcdDFU 1.1. Bus powered, 500 mA.
 * - DFU_status starts {OK, 500 ms, dfuIDLE} and bwPollTimeout is never changed. GETSTATUS
 *   sends DFU_status (bState = "the state we're about to enter"); when the transfer
 *   completes current_state becomes that bState, and dfuMANIFEST-WAIT-RESET disconnects USB:
 *   start_dfu() returns and main() jumps to the application without any check.
 * - DNLOAD: flash_p = 0x4000 + wValue * 512, no state check. wLength > 0 inside the user
 *   flash (0x4000 + 0x7c000): current_state dfuDNLOAD-SYNC, bState dfuDNLOAD-IDLE; outside:
 *   errADDRESS. When the data stage completes, write_flash(flash_p, block_buffer, 512)
 *   always programs 512 bytes (the tail of a short block is left over from the previous
 *   one); an IAP failure gives errPROG / dfuERROR, success moves flash_p by wLength.
 *   wLength 0: current_state dfuMANIFEST-SYNC, bState dfuMANIFEST-WAIT-RESET.
 * - write_flash() -> find_erase_prepare_sector(): the sector (4 KiB up to 0x10000, then
 *   32 KiB) is erased only when the block starts exactly at its first address, so a block
 *   whose sector start was skipped is programmed over old data. The IAP "copy RAM to flash"
 *   does no blank check: NOR programming leaves the AND of old and new bits, and the
 *   bootloader does not read back. [LPC IAP behaviour on non-blank flash: from NOR
 *   semantics, not confirmed on silicon]
 * - UPLOAD: flash_p = 0x4000 + wValue * 512; inside the user flash wLength bytes from there,
 *   else a zero-length reply (dfu-util's end of upload).
 * - ABORT and CLRSTATUS: bStatus OK, bState dfuIDLE, flash_p back to the start; DETACH is
 *   ignored. Requests are not checked against the state.
 * - A USB bus reset in a MANIFEST state resets the chip (USBEvent_busReset); not modelled:
 *   no host here resets the bus before the manifest GETSTATUS. */
#include "lpcdfu.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "proto/dfu.h"
#include "usbdevfs.h"
#include "util.h"

#define USB_REQ_GET_STATUS 0x00
#define USB_REQ_GET_DESCRIPTOR 0x06
#define USB_REQ_SET_CONFIGURATION 0x09
#define USB_REQ_SET_INTERFACE 0x0b

struct lpcdfu_dev {
	pthread_mutex_t lock;
	struct flash *flash;
	uint8_t desc[LPCDFU_MAX_DESCRIPTORS];
	size_t desc_len;

	uint8_t cur_state; /* current_state */
	uint8_t status;	   /* DFU_status.bStatus */
	uint8_t next;	   /* DFU_status.bState */
	uint32_t flash_p;
	uint32_t next_block_addr; /* where an in-order block would go */
	uint8_t block_buffer[LPCDFU_BLOCK];
	uint32_t busy_us; /* IAP time of the last transfer, paid before it completes */

	unsigned writes, fail_nth;
	uint32_t unplug_at;
	void (*unplug_cb)(void *ctx);
	void *unplug_ctx;
	bool unplug_due;
	void (*manifest_cb)(void *ctx);
	void *manifest_ctx;
	bool powered_off;
	bool programmed; /* blocks written since the last manifest */
	struct lpcdfu_stats st;
	struct usbdevfs_sim usb;
};

static void
put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static void
build_descriptors(struct lpcdfu_dev *d)
{
	uint8_t *p = d->desc;

	p[0] = 18; /* device: USB 2.0, class in the interface, EP0 64 */
	p[1] = 1;
	put16(p + 2, 0x0200);
	p[4] = p[5] = p[6] = 0;
	p[7] = 64;
	put16(p + 8, LPCDFU_VID);
	put16(p + 10, LPCDFU_PID);
	put16(p + 12, LPCDFU_BCD_DEVICE);
	p[14] = LPCDFU_STR_MANUFACTURER;
	p[15] = LPCDFU_STR_PRODUCT;
	p[16] = 0; /* iSerial 0: no serial number */
	p[17] = 1;
	p += 18;
	p[0] = 9; /* configuration: one interface, bus powered, 500 mA */
	p[1] = 2;
	put16(p + 2, 9 + 9 + 9);
	p[4] = 1;
	p[5] = 1;
	p[6] = 0;
	p[7] = 0x80;
	p[8] = 250;
	p += 9;
	p[0] = 9; /* interface 0 alt 0, no endpoints, DFU mode, iInterface 3 */
	p[1] = 4;
	p[2] = p[3] = p[4] = 0;
	p[5] = 0xfe;
	p[6] = 0x01;
	p[7] = 0x02;
	p[8] = LPCDFU_STR_INTERFACE;
	p += 9;
	p[0] = 9;
	p[1] = DFU_DESC_FUNCTIONAL;
	p[2] = DFU_ATTR_WILL_DETACH | DFU_ATTR_CAN_DNLOAD | DFU_ATTR_CAN_UPLOAD;
	put16(p + 3, 500);
	put16(p + 5, LPCDFU_BLOCK);
	put16(p + 7, 0x0101);
	p += 9;
	d->desc_len = (size_t)(p - d->desc);
}

static const struct usbdevfs_sim_ops lpcdfu_usb_ops;

struct lpcdfu_dev *
lpcdfu_new(struct flash *flash)
{
	struct lpcdfu_dev *d = xnew(struct lpcdfu_dev);

	pthread_mutex_init(&d->lock, NULL);
	d->flash = flash;
	d->cur_state = DFU_STATE_IDLE;
	d->status = DFU_STATUS_OK;
	d->next = DFU_STATE_IDLE;
	d->flash_p = LPCDFU_USER_START; /* DFU_init() */
	d->next_block_addr = LPCDFU_USER_START;
	d->unplug_at = UINT32_MAX;
	build_descriptors(d);
	usbdevfs_sim_init(&d->usb, &lpcdfu_usb_ops, d);
	return d;
}

struct lpcdfu_dev *
lpcdfu_free(struct lpcdfu_dev *d)
{
	if (!d)
		return NULL;
	usbdevfs_sim_release(&d->usb);
	pthread_mutex_destroy(&d->lock);
	free(d);
	return NULL;
}

size_t
lpcdfu_descriptors(const struct lpcdfu_dev *d, uint8_t *buf, size_t len)
{
	return usbdevfs_sim_descriptors(d->desc, d->desc_len, buf, len);
}

const char *
lpcdfu_string(const struct lpcdfu_dev *d, unsigned index)
{
	(void)d;
	switch (index) {
	case LPCDFU_STR_MANUFACTURER:
		return "SmoothieWare";
	case LPCDFU_STR_PRODUCT:
		return "Smoothie";
	case LPCDFU_STR_INTERFACE:
		return "Smoothie DFU";
	default:
		return NULL;
	}
}

void
lpcdfu_set_manifest_cb(struct lpcdfu_dev *d, void (*cb)(void *ctx), void *ctx)
{
	pthread_mutex_lock(&d->lock);
	d->manifest_cb = cb;
	d->manifest_ctx = ctx;
	pthread_mutex_unlock(&d->lock);
}

void
lpcdfu_set_unplug_at(struct lpcdfu_dev *d, uint32_t at, void (*cb)(void *ctx), void *ctx)
{
	pthread_mutex_lock(&d->lock);
	d->unplug_at = cb ? at : UINT32_MAX;
	d->unplug_cb = cb;
	d->unplug_ctx = ctx;
	pthread_mutex_unlock(&d->lock);
}

void
lpcdfu_fail_write_at(struct lpcdfu_dev *d, unsigned nth)
{
	pthread_mutex_lock(&d->lock);
	d->fail_nth = nth;
	d->writes = 0;
	pthread_mutex_unlock(&d->lock);
}

void
lpcdfu_get_stats(struct lpcdfu_dev *d, struct lpcdfu_stats *ret)
{
	pthread_mutex_lock(&d->lock);
	*ret = d->st;
	ret->state = d->cur_state;
	ret->status = d->status;
	pthread_mutex_unlock(&d->lock);
}

/* The first address of the sector holding addr (sbl_config.h SECTOR_START). */
static bool
sector_start(uint32_t addr)
{
	return addr < 0x10000u ? addr % 0x1000u == 0 : addr % 0x8000u == 0;
}

/* write_flash(flash_p, block_buffer, 512): 0, or an IAP error (non-zero). */
static int
write_flash(struct lpcdfu_dev *d, uint32_t addr)
{
	uint8_t old[LPCDFU_BLOCK];
	uint32_t busy = 0, t = 0;
	int r;

	if (addr < LPCDFU_USER_START || addr - d->flash->base > d->flash->size - LPCDFU_BLOCK)
		return -ERANGE; /* no sector found, none prepared: the copy fails */
	if (sector_start(addr)) {
		if (flash_erase(d->flash, addr, &t) < 0)
			return -EIO;
		busy += t;
		d->st.erases++;
	}
	r = flash_program(d->flash, addr, d->block_buffer, LPCDFU_BLOCK, &t);
	if (r == -EIO) {
		/* no blank check in the IAP copy: the AND of old and new bits stays */
		if (flash_read(d->flash, addr, old, sizeof(old)) < 0)
			return -EIO;
		for (size_t i = 0; i < sizeof(old); i++)
			old[i] &= d->block_buffer[i];
		(void)flash_load(d->flash, addr, old, sizeof(old));
		t = flash_program_time(d->flash, LPCDFU_BLOCK);
		d->st.not_erased++;
		r = 0;
	}
	d->busy_us += busy + t;
	return r;
}

static int
do_dnload(struct lpcdfu_dev *d, uint16_t block, uint16_t wlength, const uint8_t *data)
{
	uint32_t addr = LPCDFU_USER_START + (uint32_t)block * LPCDFU_BLOCK;

	/* block_buffer holds 512 bytes; the real data stage would overrun it */
	if (wlength > LPCDFU_BLOCK)
		return -EPIPE;
	d->flash_p = addr;
	if (wlength == 0) {
		d->cur_state = DFU_STATE_MANIFEST_SYNC;
		d->next = DFU_STATE_MANIFEST_WAIT_RESET;
		return 0;
	}
	memcpy(d->block_buffer, data, wlength);
	if (addr + wlength <= LPCDFU_USER_START + LPCDFU_USER_SIZE) {
		d->cur_state = DFU_STATE_DNLOAD_SYNC;
		d->next = DFU_STATE_DNLOAD_IDLE;
	} else {
		d->cur_state = DFU_STATE_ERROR;
		d->status = DFU_STATUS_ERR_ADDRESS;
		d->next = DFU_STATE_ERROR;
	}
	if (addr >= d->unplug_at) {
		d->unplug_due = true; /* the cable goes before this block is programmed */
		return wlength;
	}
	/* DFU_transferComplete(): the block is programmed when the data stage completes */
	if (addr != d->next_block_addr)
		d->st.out_of_order++;
	d->writes++;
	if ((d->fail_nth && d->writes == d->fail_nth) || write_flash(d, addr) != 0) {
		d->status = DFU_STATUS_ERR_PROG;
		d->next = DFU_STATE_ERROR;
		return wlength;
	}
	d->programmed = true;
	d->st.blocks++;
	d->st.bytes_written += wlength;
	d->flash_p += wlength;
	d->next_block_addr = addr + LPCDFU_BLOCK;
	d->next = DFU_STATE_DNLOAD_IDLE;
	return wlength;
}

static int
do_upload(struct lpcdfu_dev *d, uint16_t block, uint16_t wlength, uint8_t *data)
{
	uint32_t addr = LPCDFU_USER_START + (uint32_t)block * LPCDFU_BLOCK;

	d->st.uploads++;
	d->cur_state = DFU_STATE_UPLOAD_IDLE;
	d->flash_p = addr;
	d->next = DFU_STATE_UPLOAD_IDLE;
	if (addr + wlength > LPCDFU_USER_START + LPCDFU_USER_SIZE)
		return 0; /* "Upload Complete!": a zero-length packet */
	if (flash_read(d->flash, addr, data, wlength) < 0)
		return -EPIPE;
	d->flash_p += wlength;
	d->st.bytes_read += wlength;
	return wlength;
}

static int
class_request(struct lpcdfu_dev *d, const uint8_t *setup, uint8_t *data, bool *ret_manifest)
{
	struct usbdevfs_setup p = usbdevfs_sim_setup(setup);
	bool in = p.type & 0x80;
	uint8_t req = p.req;
	uint16_t wvalue = p.value, wlength = p.length;
	uint8_t reply[DFU_STATUS_LEN];
	struct dfu_status_reply s;

	if (req > DFU_REQ_ABORT)
		return -EPIPE;
	d->st.request[req]++;
	switch ((enum dfu_request)req) {
	case DFU_REQ_DNLOAD:
		return in ? -EPIPE : do_dnload(d, wvalue, wlength, data);
	case DFU_REQ_UPLOAD:
		return in ? do_upload(d, wvalue, wlength, data) : -EPIPE;
	case DFU_REQ_GETSTATUS:
		if (!in)
			return -EPIPE;
		s = (struct dfu_status_reply){d->status, LPCDFU_POLL_TIMEOUT_MS, d->next, 0};
		dfu_status_encode(&s, reply);
		memcpy(data, reply, wlength < DFU_STATUS_LEN ? wlength : DFU_STATUS_LEN);
		/* DFU_transferComplete(): the announced state becomes the current one */
		d->cur_state = d->next;
		if (d->cur_state == DFU_STATE_MANIFEST_WAIT_RESET) {
			d->st.manifested = true;
			d->programmed = false;
			*ret_manifest = true;
		}
		return wlength < DFU_STATUS_LEN ? wlength : DFU_STATUS_LEN;
	case DFU_REQ_GETSTATE:
		if (!in || wlength < 1)
			return -EPIPE;
		data[0] = d->cur_state;
		return 1;
	case DFU_REQ_CLRSTATUS:
	case DFU_REQ_ABORT:
		d->status = DFU_STATUS_OK;
		d->next = DFU_STATE_IDLE;
		d->flash_p = LPCDFU_USER_START;
		return 0;
	case DFU_REQ_DETACH:
		return 0; /* "shouldn't happen, we're already in DFU mode" */
	}
	return -EPIPE;
}

static int
standard_request(struct lpcdfu_dev *d, const uint8_t *setup, uint8_t *data)
{
	struct usbdevfs_setup p = usbdevfs_sim_setup(setup);

	if (p.type == 0x80 && p.req == USB_REQ_GET_DESCRIPTOR)
		return usbdevfs_sim_get_descriptor(d->desc, d->desc_len,
						   lpcdfu_string(d, p.value & 0xff), p.value,
						   p.length, data);
	if (p.type == 0x80 && p.req == USB_REQ_GET_STATUS && p.length >= 2) {
		data[0] = data[1] = 0; /* bus powered */
		return 2;
	}
	if (p.type == 0x00 && p.req == USB_REQ_SET_CONFIGURATION)
		return 0;
	if (p.type == 0x01 && p.req == USB_REQ_SET_INTERFACE)
		return p.value == 0 ? 0 : -EPIPE;
	return -EPIPE;
}

int
lpcdfu_control(struct lpcdfu_dev *d, const uint8_t setup[8], uint8_t *data)
{
	void (*manifest_cb)(void *ctx) = NULL, (*unplug_cb)(void *ctx) = NULL;
	void *mctx = NULL, *uctx = NULL;
	bool manifest = false;
	int r;

	pthread_mutex_lock(&d->lock);
	if (d->st.manifested || d->powered_off) {
		pthread_mutex_unlock(&d->lock);
		return -ENODEV; /* disconnected */
	}
	d->st.control++;
	/* the firmware takes (bmRequestType & 0x7f) == 0x21 as its class requests */
	if ((setup[0] & 0x7f) == 0x21)
		r = class_request(d, setup, data, &manifest);
	else
		r = standard_request(d, setup, data);
	if (r == -EPIPE)
		d->st.stalls++;
	if (manifest) {
		manifest_cb = d->manifest_cb;
		mctx = d->manifest_ctx;
	}
	if (d->unplug_due) {
		d->unplug_due = false;
		d->powered_off = true;
		d->programmed = true; /* the blocks before this one are in flash: torn */
		unplug_cb = d->unplug_cb;
		uctx = d->unplug_ctx;
		r = -ENODEV;
	}
	pthread_mutex_unlock(&d->lock);
	if (manifest_cb)
		manifest_cb(mctx);
	if (unplug_cb)
		unplug_cb(uctx);
	return r;
}

bool
lpcdfu_power_off(struct lpcdfu_dev *d)
{
	bool torn;

	pthread_mutex_lock(&d->lock);
	d->powered_off = true;
	torn = d->programmed && !d->st.manifested;
	pthread_mutex_unlock(&d->lock);
	return torn;
}

/* The IAP erase and program run inside the USB interrupt, before the transfer completes. */
static void
pace_cb(void *dev)
{
	struct lpcdfu_dev *d = dev;
	uint32_t busy;

	pthread_mutex_lock(&d->lock);
	busy = d->busy_us;
	d->busy_us = 0;
	pthread_mutex_unlock(&d->lock);
	if (busy)
		flash_busy_wait(busy);
}

static int
control_cb(void *dev, const uint8_t setup[8], uint8_t *data)
{
	return lpcdfu_control(dev, setup, data);
}

static int
set_alt_cb(void *dev, unsigned iface, unsigned alt)
{
	(void)dev;
	return iface == 0 && alt == 0 ? 0 : -EINVAL;
}

static const struct usbdevfs_sim_ops lpcdfu_usb_ops = {
    .control = control_cb,
    .set_alt = set_alt_cb,
    .pace = pace_cb,
    .unhandled = NULL,
};

int
lpcdfu_attach(struct lpcdfu_dev *d, UMockdevTestbed *tb, const char *devnode)
{
	return usbdevfs_sim_attach(&d->usb, tb, devnode);
}

void
lpcdfu_detach(struct lpcdfu_dev *d, UMockdevTestbed *tb, const char *devnode)
{
	usbdevfs_sim_detach(&d->usb, tb, devnode);
}
