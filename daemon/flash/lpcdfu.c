/* SPDX-License-Identifier: GPL-2.0-or-later */
/* flash/lpcdfu: flashing through the community LPC176x SD+DFU bootloader, 1d50:6015.
 *
 * Plain DFU 1.1 (not DfuSe), as the bootloader implements it in dfu.c of
 * triffid/LPC17xx-DFU-Bootloader (Smoothieboard) and of its SKR 1.3/1.4 fork
 * ardiehl/BTT_SKR_13_14_14T_SD-DFU-Bootloader (protocols.md §3.7):
 * - functional descriptor: bmAttributes WillDetach|CanUpload|CanDnload (0x0b, not
 *   manifestation tolerant), wDetachTimeOut 500, wTransferSize 512 (DFU_BLOCK_SIZE), bcdDFU
 *   1.1; one interface, alt 0, no DfuSe commands.
 * - DNLOAD block n goes to _user_flash_start + n * 512 (0x4000 + n * 512): DFU_Download()
 *   sets flash_p from wValue; the data is programmed when the data stage completes
 *   (DFU_transferComplete() -> write_flash()), before the host's GETSTATUS, which answers
 *   dfuDNLOAD-IDLE at once (or dfuERROR/errPROG). bwPollTimeout is a constant 500 ms.
 * - write_flash() (sbl_iap.c) erases a sector only when a block starts at the sector's first
 *   address (find_erase_prepare_sector()), so blocks must come in order from 0; a block that
 *   skips a sector start lands on flash that was not erased.
 * - it always programs DFU_BLOCK_SIZE bytes ("it does not flash if we pass a smaller
 *   length"): after a short last block the rest of the 512 bytes is whatever the previous
 *   block left in block_buffer. This backend pads the last block with 0xff itself.
 * - UPLOAD block n reads 0x4000 + n * 512; past the end of flash it answers zero bytes.
 * - ABORT and CLRSTATUS set flash_p back to the start and state dfuIDLE.
 * - a zero-length DNLOAD enters dfuMANIFEST-SYNC; the next GETSTATUS answers
 *   dfuMANIFEST-WAIT-RESET and the bootloader disconnects USB, returns from start_dfu() and
 *   jumps to the application at 0x4000 (main.c) without checking it: a wrong image crashes.
 * dfu-util drives it as `dfu-util -D klipper.bin` (Klipper's flash_usb.py flash_lpc176x()):
 * blocks 0, 1, 2, ..., then the zero-length DNLOAD. This backend does the same, then reads
 * every block back with UPLOAD before it sends the zero-length DNLOAD that starts the app:
 * a verify that fails leaves the board in DFU with the old image's sectors partly rewritten,
 * still reachable and never booted. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libusb.h>

#include "flash/backend.h"
#include "flash/usbdfu.h"
#include "proto/dfu.h"
#include "log.h"
#include "util.h"

#define LPCDFU_TIMEOUT_MS 5000	 /* dfu-util's control-transfer timeout (§3.2) */
#define LPCDFU_APP_START 0x4000u /* _user_flash_start: USER_START_SECTOR 4 (sbl_config.h) */
#define LPCDFU_APP_SIZE 0x7c000u /* _user_flash_size: up to the end of 512 KiB */
#define LPCDFU_BLOCK 512u	 /* DFU_BLOCK_SIZE: the address step of wBlockNum */
#define LPCDFU_MAX_POLLS 200u	 /* GETSTATUS rounds per block before giving up */
#define LPCDFU_START_TRIES 8

struct lpcdfu {
	struct usbdfu u;
	uint32_t blocks; /* written by write(): the zero-length DNLOAD follows them */
	const uint8_t *data;
	uint32_t len;
};

static int
request(struct lpcdfu *d, struct flash_session *s, bool in, enum dfu_request req, uint16_t value,
	uint8_t *data, uint16_t len)
{
	return usbdfu_request(&d->u, s, in, req, value, data, len);
}

static int
getstatus(struct lpcdfu *d, struct flash_session *s, struct dfu_status_reply *st)
{
	return usbdfu_getstatus(&d->u, s, st);
}

/* To dfuIDLE with flash_p at the start: CLRSTATUS after an error, else ABORT (both reset
 * flash_p in DFU_ClearStatus()/DFU_Abort()); the GETSTATUS after it confirms. */
static int
to_idle(struct lpcdfu *d, struct flash_session *s)
{
	for (unsigned i = 0; i < LPCDFU_START_TRIES; i++) {
		struct dfu_status_reply st = {0};
		int r = getstatus(d, s, &st);

		if (r < 0)
			return r;
		if (st.state == DFU_STATE_IDLE && st.status == DFU_STATUS_OK && i > 0)
			return 0;
		r = request(d, s, false,
			    st.status != DFU_STATUS_OK || st.state == DFU_STATE_ERROR
				? DFU_REQ_CLRSTATUS
				: DFU_REQ_ABORT,
			    0, NULL, 0);
		if (r < 0 && r != -EPIPE)
			return r;
	}
	return -EPROTO;
}

/* The GETSTATUS after a DNLOAD: dfuDNLOAD-IDLE once the block is programmed; a device that
 * says it is busy gets its bwPollTimeout (DFU 1.1 §6.1.2), like dfu-util's
 * dfuload_do_dnload(). -EIO with *st holding the device's error. */
static int
wait_block(struct lpcdfu *d, struct flash_session *s, struct dfu_status_reply *st)
{
	for (unsigned i = 0; i < LPCDFU_MAX_POLLS; i++) {
		int r = getstatus(d, s, st);

		if (r < 0)
			return r;
		if (st->status != DFU_STATUS_OK || st->state == DFU_STATE_ERROR)
			return -EIO;
		if (st->state == DFU_STATE_DNLOAD_IDLE)
			return 0;
		if (st->state != DFU_STATE_DNBUSY && st->state != DFU_STATE_DNLOAD_SYNC)
			return -EPROTO;
		usbdfu_poll_wait(st);
	}
	return -ETIMEDOUT;
}

static int
find_interface(struct lpcdfu *d, struct flash_session *s,
	       const struct libusb_config_descriptor *cfg, struct dfu_func_desc *ret_func)
{
	for (uint8_t i = 0; i < cfg->bNumInterfaces; i++) {
		const struct libusb_interface *itf = &cfg->interface[i];

		for (int a = 0; a < itf->num_altsetting; a++) {
			const struct libusb_interface_descriptor *alt = &itf->altsetting[a];

			if (alt->bInterfaceClass != 0xfe || alt->bInterfaceSubClass != 0x01 ||
			    alt->bInterfaceProtocol != 0x02)
				continue;
			d->u.iface = alt->bInterfaceNumber;
			if ((alt->extra_length > 0 &&
			     dfu_func_desc_parse(alt->extra, (size_t)alt->extra_length, ret_func) ==
				 0) ||
			    (cfg->extra_length > 0 &&
			     dfu_func_desc_parse(cfg->extra, (size_t)cfg->extra_length, ret_func) ==
				 0))
				return 0;
			backend_error(s, "no DFU functional descriptor on %s", s->dev->usb_node);
			return -ENOENT;
		}
	}
	backend_error(s, "no DFU interface on %s", s->dev->usb_node);
	return -ENOENT;
}

static int
check_descriptor(struct flash_session *s, const struct dfu_func_desc *f)
{
	if (f->bcd_dfu == DFU_BCD_DFUSE) {
		backend_error(s, "%s speaks ST DfuSe, not the plain DFU 1.1 of the LPC bootloader",
			      s->dev->usb_node);
		return -EPROTONOSUPPORT;
	}
	/* wBlockNum steps the address by 512 whatever the host sends (DFU_BLOCK_SIZE) */
	if (f->transfer_size != LPCDFU_BLOCK || !(f->attributes & DFU_ATTR_CAN_DNLOAD)) {
		backend_error(s,
			      "%s is not the LPC176x DFU bootloader it claims to be "
			      "(wTransferSize %u, attributes 0x%02x; expected 512 with download)",
			      s->dev->usb_node, f->transfer_size, f->attributes);
		return -EPROTONOSUPPORT;
	}
	if (!(f->attributes & DFU_ATTR_CAN_UPLOAD)) {
		backend_error(s, "%s cannot upload: skrflash cannot verify a write over it",
			      s->dev->usb_node);
		return -EPROTONOSUPPORT;
	}
	return 0;
}

static int
lpcdfu_open(struct flash_session *s)
{
	struct lpcdfu *d = xnew(struct lpcdfu);
	struct libusb_config_descriptor *cfg = NULL;
	struct dfu_func_desc func;
	int r;

	s->priv = d;
	r = usbdfu_open(&d->u, s, "LPC DFU", s->timeout_ms ? s->timeout_ms : LPCDFU_TIMEOUT_MS,
			NULL, &cfg);
	if (r < 0)
		return r;
	r = find_interface(d, s, cfg, &func);
	libusb_free_config_descriptor(cfg);
	if (r >= 0)
		r = check_descriptor(s, &func);
	if (r >= 0)
		r = usbdfu_claim(&d->u, s, 0);
	if (r < 0)
		return r;
	r = to_idle(d, s);
	if (r < 0) {
		backend_error(s, "the LPC DFU bootloader on %s does not reach dfuIDLE (%s)",
			      s->dev->usb_node, strerror(-r));
		return r;
	}
	/* fixed by the bootloader's build, not reported: block 0 is 0x4000 */
	s->reported_app_start = LPCDFU_APP_START;
	s->reported_flash_end = LPCDFU_APP_START + LPCDFU_APP_SIZE;
	s->reported_mcu[0] = 0;
	s->reported_version[0] = 0;
	return 0;
}

static int
block_error(struct lpcdfu *d, struct flash_session *s, int r, const struct dfu_status_reply *st,
	    const char *what, uint32_t block)
{
	uint32_t addr = LPCDFU_APP_START + block * LPCDFU_BLOCK;

	if (r == -EIO && st)
		backend_error(s,
			      "%s block %u (0x%05x) failed: %s (state %s); the board stays in "
			      "LPC DFU",
			      what, block, addr, dfu_status_to_string(st->status),
			      dfu_state_to_string(st->state));
	else
		backend_error(s, "%s block %u (0x%05x) failed: %s", what, block, addr,
			      strerror(-r));
	if (r != -ENODEV)
		(void)to_idle(d, s);
	return r;
}

static int
lpcdfu_write(struct flash_session *s)
{
	struct lpcdfu *d = s->priv;
	const struct image *img = s->img;
	uint8_t buf[LPCDFU_BLOCK];
	uint32_t n_blocks;
	int r;

	if (!d || !d->u.h)
		return -ENOTCONN;
	if (img->has_load_address && img->load_address != LPCDFU_APP_START) {
		backend_error(s,
			      "the image is linked for 0x%08x, but the LPC DFU bootloader writes "
			      "block 0 at 0x%05x: rebuild with the 16KiB bootloader offset",
			      img->load_address, LPCDFU_APP_START);
		return -EINVAL;
	}
	if (img->size == 0 || img->size > LPCDFU_APP_SIZE) {
		backend_error(s,
			      "the image (%zu bytes) does not fit the %u KiB after the LPC DFU "
			      "bootloader",
			      img->size, LPCDFU_APP_SIZE / 1024);
		return -ERANGE;
	}
	n_blocks = (uint32_t)((img->size + LPCDFU_BLOCK - 1) / LPCDFU_BLOCK);
	for (uint32_t b = 0; b < n_blocks; b++) {
		struct dfu_status_reply st = {0};
		size_t off = (size_t)b * LPCDFU_BLOCK;
		size_t n = img->size - off < LPCDFU_BLOCK ? img->size - off : LPCDFU_BLOCK;

		/* the bootloader programs 512 bytes whatever wLength says: pad with erased flash */
		memset(buf, 0xff, sizeof(buf));
		memcpy(buf, img->data + off, n);
		r = request(d, s, false, DFU_REQ_DNLOAD, (uint16_t)b, buf, LPCDFU_BLOCK);
		if (r >= 0)
			r = wait_block(d, s, &st);
		if (r < 0)
			return block_error(d, s, r, &st, "writing", b);
		s->bytes_written += n;
		/* a block that starts a sector (4 KiB below 64 KiB, then 32 KiB) erases it
		 * (find_erase_prepare_sector()) */
		if (((LPCDFU_APP_START + off) < 0x10000u && off % 0x1000u == 0) ||
		    (LPCDFU_APP_START + off) % 0x8000u == 0)
			s->erases++;
		if (s->progress)
			s->progress(s->userdata, "write", off + n, img->size);
	}
	d->blocks = n_blocks;
	d->data = img->data;
	d->len = (uint32_t)img->size;
	/* ABORT: flash_p back to block 0 and dfuIDLE, ready for the uploads */
	r = to_idle(d, s);
	if (r < 0)
		backend_error(s, "the LPC DFU bootloader does not return to dfuIDLE after writing");
	return r < 0 ? r : 0;
}

static int
lpcdfu_verify(struct flash_session *s)
{
	struct lpcdfu *d = s->priv;
	uint8_t buf[LPCDFU_BLOCK];

	if (!d || !d->data)
		return -ENOTCONN;
	for (uint32_t b = 0; b < d->blocks; b++) {
		uint32_t off = b * LPCDFU_BLOCK;
		uint16_t n = (uint16_t)(d->len - off < LPCDFU_BLOCK ? d->len - off : LPCDFU_BLOCK);
		int r = request(d, s, true, DFU_REQ_UPLOAD, (uint16_t)b, buf, n);
		if (r < 0)
			return block_error(d, s, r, NULL, "reading", b);
		if (r != n) {
			backend_error(s, "reading block %u: short UPLOAD (%d of %u bytes)", b, r,
				      n);
			(void)to_idle(d, s);
			return -EIO;
		}
		for (uint32_t i = 0; i < n; i++)
			if (buf[i] != d->data[off + i]) {
				backend_error(s,
					      "verify failed at 0x%05x: read 0x%02x, wrote 0x%02x; "
					      "the board stays in LPC DFU",
					      LPCDFU_APP_START + off + i, buf[i], d->data[off + i]);
				(void)to_idle(d, s);
				return -EIO;
			}
		if (s->progress)
			s->progress(s->userdata, "verify", off + n, d->len);
	}
	s->bytes_verified = d->len;
	return to_idle(d, s);
}

/* Zero-length DNLOAD (the next wBlockNum, as dfu-util sends it), then GETSTATUS until
 * dfuMANIFEST-WAIT-RESET: the bootloader disconnects and jumps to 0x4000. A device that is
 * gone by then has left too. */
static int
lpcdfu_leave(struct flash_session *s)
{
	struct lpcdfu *d = s->priv;
	struct dfu_status_reply st = {0};
	int r;

	if (!d || !d->u.h)
		return -ENOTCONN;
	r = request(d, s, false, DFU_REQ_DNLOAD, (uint16_t)d->blocks, NULL, 0);
	for (unsigned i = 0; r >= 0 && i < LPCDFU_MAX_POLLS; i++) {
		r = getstatus(d, s, &st);
		if (r < 0 || st.state == DFU_STATE_MANIFEST_WAIT_RESET)
			break;
		if (st.state != DFU_STATE_MANIFEST_SYNC && st.state != DFU_STATE_MANIFEST) {
			backend_error(s,
				      "the LPC DFU bootloader answered the end of the download "
				      "with %s (%s), not dfuMANIFEST-WAIT-RESET",
				      dfu_state_to_string(st.state),
				      dfu_status_to_string(st.status));
			return -EPROTO;
		}
		usbdfu_poll_wait(&st);
	}
	r = usbdfu_leaving(&d->u, r);
	if (r < 0)
		backend_error(s, "leaving LPC DFU failed: %s", strerror(-r));
	return r < 0 ? r : 0;
}

static void
lpcdfu_close(struct flash_session *s)
{
	struct lpcdfu *d = s->priv;

	if (!d)
		return;
	usbdfu_close(&d->u);
	free(d);
	s->priv = NULL;
}

const struct flash_backend backend_lpcdfu = {
    .name = "lpc-dfu",
    .mode = DEVICE_MODE_LPC_DFU,
    .open = lpcdfu_open,
    .write = lpcdfu_write,
    .verify = lpcdfu_verify,
    .leave = lpcdfu_leave,
    .close = lpcdfu_close,
};
