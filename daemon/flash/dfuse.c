/* SPDX-License-Identifier: GPL-2.0-or-later */
/* flash/dfuse: flashing through the STM32 system-memory (ROM) DFU bootloader, 0483:df11.
 *
 * DfuSe (ST AN3156/AN2662, protocols.md §3) over libusb control transfers; the codec is in
 * proto/dfu. dfu-util speaks the same protocol but is a program, not a library, and it always
 * erases and rewrites everything. This backend first reads the target range, then erases and
 * programs only the erase sectors whose content differs, so re-flashing an identical image
 * costs no flash wear, and it never writes below the application start: the vendor
 * bootloader in the first sectors stays intact. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libusb.h>

#include "flash/backend.h"
#include "flash/usbdfu.h"
#include "proto/dfu.h"
#include "log.h"
#include "util.h"

#define DFU_DEFAULT_TIMEOUT_MS 5000 /* dfu-util's control-transfer timeout (§3.2) */
#define DFU_MAX_TRANSFER 4096	    /* Linux usbfs limit dfu-util clamps to (§3.1) */
#define DFU_MAX_BUSY_POLLS 2000
#define DFU_START_TRIES 8

struct dfu {
	struct usbdfu u; /* u.left: the ROM jumped to the application, the device is gone */
	bool idle;	 /* known to be in dfuIDLE: no request since it was confirmed or implied */
	uint8_t alt;
	uint16_t xfer; /* wTransferSize */
	struct dfu_layout layout;
	uint32_t start; /* range written by write(), checked by verify() */
	uint32_t len;
	const uint8_t *data;
	/* sectors rewritten by write(): only they need reading back; the others were read
	 * in full and found identical before writing */
	struct dfu_run {
		uint32_t start, end;
	} * runs;
	size_t n_runs;
};

/* One class request to the DFU interface (§3.2); returns the byte count or -errno. */
static int
dfu_request(struct dfu *d, struct flash_session *s, bool in, enum dfu_request req, uint16_t value,
	    uint8_t *data, uint16_t len)
{
	d->idle = false;
	return usbdfu_request(&d->u, s, in, req, value, data, len);
}

static int
dfu_getstatus(struct dfu *d, struct flash_session *s, struct dfu_status_reply *st)
{
	d->idle = false;
	return usbdfu_getstatus(&d->u, s, st);
}

/* Back to dfuIDLE: ABORT from the *-IDLE states, CLRSTATUS from dfuERROR (§3.3). Nothing to
 * send when no request went out since the device was last known idle. */
static int
dfu_to_idle(struct dfu *d, struct flash_session *s)
{
	struct dfu_status_reply st = {0};

	if (d->idle)
		return 0;
	for (unsigned i = 0; i < DFU_START_TRIES; i++) {
		int r = dfu_getstatus(d, s, &st);

		if (r < 0)
			return r;
		if (st.state == DFU_STATE_IDLE && st.status == DFU_STATUS_OK) {
			d->idle = true;
			return 0;
		}
		/* a download a killed worker left behind: the device finishes the block it is
		 * busy with first (DFU 1.1 §7.4, dfuDNBUSY answers only GETSTATUS) */
		if (st.state == DFU_STATE_DNBUSY) {
			(void)usleep((useconds_t)(st.poll_timeout_ms ? st.poll_timeout_ms : 1u) *
				     1000u);
			continue;
		}
		if (st.state == DFU_STATE_ERROR || st.status != DFU_STATUS_OK)
			r = dfu_request(d, s, false, DFU_REQ_CLRSTATUS, 0, NULL, 0);
		else
			r = dfu_request(d, s, false, DFU_REQ_ABORT, 0, NULL, 0);
		/* a request the state does not take is stalled and leaves the device in dfuERROR
		 * (DFU 1.1 §6.1.2, errSTALLEDPKT), which the next round clears */
		if (r == -EPIPE)
			continue;
		if (r < 0)
			return r;
	}
	return -EPROTO;
}

/* From dfuUPLOAD-IDLE or dfuDNLOAD-IDLE with status OK, where DFU 1.1's state table takes
 * ABORT straight to dfuIDLE: one transfer instead of GETSTATUS, ABORT, GETSTATUS. */
static int
dfu_abort_to_idle(struct dfu *d, struct flash_session *s)
{
	int r = dfu_request(d, s, false, DFU_REQ_ABORT, 0, NULL, 0);

	if (r < 0)
		return r;
	d->idle = true;
	return 0;
}

/* After a DNLOAD: the ROM executes it on the first GETSTATUS, which answers dfuDNBUSY with
 * the operation's bwPollTimeout; a later GETSTATUS reports the outcome (§3.2, AN2662 §4.5.2).
 * 0 when done, -EIO with *st holding the device's error. */
static int
dfu_wait(struct dfu *d, struct flash_session *s, struct dfu_status_reply *st)
{
	unsigned zero_polls = 0;

	for (unsigned i = 0; i < DFU_MAX_BUSY_POLLS; i++) {
		int r = dfu_getstatus(d, s, st);

		if (r < 0)
			return r;
		if (st->status != DFU_STATUS_OK || st->state == DFU_STATE_ERROR)
			return -EIO;
		if (st->state != DFU_STATE_DNBUSY && st->state != DFU_STATE_DNLOAD_SYNC)
			return 0;
		/* dfu-util: 100 busy answers in a row without a poll timeout = stuck device */
		if (st->poll_timeout_ms == 0 && ++zero_polls >= 100)
			return -ETIMEDOUT;
		usbdfu_poll_wait(st);
	}
	return -ETIMEDOUT;
}

/* A device error: leave it in dfuIDLE (recoverable) and describe it. */
static int
device_error(struct dfu *d, struct flash_session *s, int r, const struct dfu_status_reply *st,
	     const char *what, uint32_t addr)
{
	if (r == -EIO && st)
		backend_error(s, "%s at 0x%08x failed: %s (state %s); the board stays in ROM DFU",
			      what, addr, dfu_status_to_string(st->status),
			      dfu_state_to_string(st->state));
	else
		backend_error(s, "%s at 0x%08x failed: %s", what, addr, strerror(-r));
	if (r != -ENODEV)
		(void)dfu_to_idle(d, s);
	return r;
}

/* A DfuSe command (DNLOAD wBlockNum 0, §3.4) and its GETSTATUS pair. */
static int
dfuse_command(struct dfu *d, struct flash_session *s, uint8_t *cmd, size_t len, const char *what,
	      uint32_t addr)
{
	struct dfu_status_reply st = {0};
	int r = dfu_request(d, s, false, DFU_REQ_DNLOAD, 0, cmd, (uint16_t)len);

	if (r >= 0)
		r = dfu_wait(d, s, &st);
	return r < 0 ? device_error(d, s, r, &st, what, addr) : 0;
}

static int
dfuse_set_address(struct dfu *d, struct flash_session *s, uint32_t addr)
{
	uint8_t cmd[DFUSE_CMD_LEN];
	size_t n = dfu_cmd_set_address(cmd, addr);

	return dfuse_command(d, s, cmd, n, "setting the address", addr);
}

/* Ready for UPLOADs from addr: the pointer set, then ABORT back to dfuIDLE. Each UPLOAD reads
 * at (wBlockNum - 2) * wTransferSize + pointer (AN3156). */
static int
dfu_upload_begin(struct dfu *d, struct flash_session *s, uint32_t addr)
{
	int r = dfu_to_idle(d, s);

	if (r >= 0)
		r = dfuse_set_address(d, s, addr);
	if (r < 0)
		return r;
	r = dfu_request(d, s, false, DFU_REQ_ABORT, 0, NULL, 0);
	return r < 0 ? device_error(d, s, r, NULL, "reading", addr) : 0;
}

/* Read [addr, addr + len) into buf: set the pointer once, then step wBlockNum. */
static int
dfu_read(struct dfu *d, struct flash_session *s, uint32_t addr, uint8_t *buf, uint32_t len,
	 const char *step)
{
	int r = dfu_upload_begin(d, s, addr);

	if (r < 0)
		return r;
	for (uint32_t off = 0, block = 2; off < len; off += d->xfer, block++) {
		uint16_t n = (uint16_t)(len - off < d->xfer ? len - off : d->xfer);

		if (block > UINT16_MAX) {
			backend_error(s, "reading 0x%08x: range too large", addr);
			return -EFBIG;
		}
		r = dfu_request(d, s, true, DFU_REQ_UPLOAD, (uint16_t)block, buf + off, n);
		if (r < 0)
			return device_error(d, s, r, NULL, "reading block", addr + off);
		if (r != n) {
			backend_error(s, "reading 0x%08x: short UPLOAD (%d of %u bytes)",
				      addr + off, r, n);
			(void)dfu_to_idle(d, s);
			return -EIO;
		}
		if (s->progress)
			s->progress(s->userdata, step, off + n, len);
	}
	return dfu_abort_to_idle(d, s);
}

/* The DfuSe interface and the alt setting whose string names the internal flash (§3.1). */
static int
find_flash_alt(struct dfu *d, struct flash_session *s, const struct libusb_config_descriptor *cfg,
	       struct dfu_func_desc *ret_func)
{
	bool found = false, have_func = false;
	int r;

	for (uint8_t i = 0; i < cfg->bNumInterfaces && !found; i++) {
		const struct libusb_interface *itf = &cfg->interface[i];

		for (int a = 0; a < itf->num_altsetting && !found; a++) {
			const struct libusb_interface_descriptor *alt = &itf->altsetting[a];
			char name[256];

			if (alt->bInterfaceClass != 0xfe || alt->bInterfaceSubClass != 0x01 ||
			    (alt->bInterfaceProtocol != 0x02 && alt->bInterfaceProtocol != 0x00))
				continue;
			if (!have_func && alt->extra_length > 0 &&
			    dfu_func_desc_parse(alt->extra, (size_t)alt->extra_length, ret_func) ==
				0)
				have_func = true;
			r = alt->iInterface
				? libusb_get_string_descriptor_ascii(
				      d->u.h, alt->iInterface, (unsigned char *)name, sizeof(name))
				: LIBUSB_ERROR_NOT_FOUND;
			s->transfers++;
			if (r == LIBUSB_ERROR_NO_DEVICE) {
				backend_error(s, "the ROM DFU device %s left the bus",
					      s->dev->usb_node);
				return -ENODEV;
			}
			if (r < 0)
				continue;
			if (strncmp(name, "@Internal Flash", 15) != 0)
				continue;
			if (dfu_layout_parse(name, &d->layout) < 0) {
				backend_error(s, "cannot parse the DfuSe memory layout \"%s\"",
					      name);
				return -EPROTO;
			}
			d->u.iface = alt->bInterfaceNumber;
			d->alt = alt->bAlternateSetting;
			found = true;
		}
	}
	if (!found) {
		backend_error(s, "no DfuSe \"@Internal Flash\" interface on %s", s->dev->usb_node);
		return -ENOENT;
	}
	/* libusb hangs the functional descriptor on whichever alt setting precedes it (on
	 * the ST ROM: the last one), so look at all of them */
	for (uint8_t i = 0; i < cfg->bNumInterfaces && !have_func; i++)
		for (int a = 0; a < cfg->interface[i].num_altsetting && !have_func; a++) {
			const struct libusb_interface_descriptor *alt =
			    &cfg->interface[i].altsetting[a];

			if (alt->bInterfaceNumber == d->u.iface && alt->extra_length > 0 &&
			    dfu_func_desc_parse(alt->extra, (size_t)alt->extra_length, ret_func) ==
				0)
				have_func = true;
		}
	if (!have_func && cfg->extra_length > 0 &&
	    dfu_func_desc_parse(cfg->extra, (size_t)cfg->extra_length, ret_func) == 0)
		have_func = true;
	if (!have_func) {
		backend_error(s, "no DFU functional descriptor on %s", s->dev->usb_node);
		return -ENOENT;
	}
	return 0;
}

/* The writable, erasable run of pages that contains addr; its end in *ret_end. */
static bool
writable_page(const struct dfu_layout *l, uint32_t addr, uint32_t *ret_start, uint32_t *ret_size)
{
	int i = dfu_layout_find(l, addr, ret_start, ret_size);
	unsigned need = DFU_MEM_WRITABLE | DFU_MEM_ERASABLE;

	return i >= 0 && (l->segments[i].flags & need) == need;
}

/* The ROM's transfer size: its wTransferSize, at most what usbfs takes, at least ep0's. */
static int
set_transfer_size(struct dfu *d, struct flash_session *s, const struct dfu_func_desc *func,
		  uint8_t max_packet0)
{
	if (func->bcd_dfu != DFU_BCD_DFUSE) {
		backend_error(s, "%s speaks DFU %x.%02x, not ST DfuSe 1.1a", s->dev->usb_node,
			      func->bcd_dfu >> 8, func->bcd_dfu & 0xff);
		return -EPROTONOSUPPORT;
	}
	d->xfer = func->transfer_size > DFU_MAX_TRANSFER ? DFU_MAX_TRANSFER : func->transfer_size;
	if (d->xfer < max_packet0)
		d->xfer = max_packet0;
	if (d->xfer == 0) {
		backend_error(s, "%s reports wTransferSize 0", s->dev->usb_node);
		return -EPROTO;
	}
	return 0;
}

/* Open the device and claim its "@Internal Flash" alt setting. */
static int
claim_flash(struct dfu *d, struct flash_session *s)
{
	struct libusb_config_descriptor *cfg = NULL;
	struct libusb_device_descriptor dd;
	struct dfu_func_desc func;
	int r = usbdfu_open(&d->u, s, "ROM DFU",
			    s->timeout_ms ? s->timeout_ms : DFU_DEFAULT_TIMEOUT_MS, &dd, &cfg);

	if (r < 0)
		return r;
	r = find_flash_alt(d, s, cfg, &func);
	libusb_free_config_descriptor(cfg);
	if (r >= 0)
		r = set_transfer_size(d, s, &func, dd.bMaxPacketSize0);
	if (r >= 0)
		r = usbdfu_claim(&d->u, s, d->alt);
	return r;
}

/* The application start: the board's (or the profile's), rounded up to the first writable
 * page, never below it: the vendor bootloader stays. Without a board the image's own address
 * is the only safe guess. The writable flash runs from there to reported_flash_end. */
static int
find_app_flash(struct dfu *d, struct flash_session *s)
{
	uint32_t want, ps = 0, psz = 0, end;

	want = s->board ? s->board->app_start
			: (s->img && s->img->has_load_address ? s->img->load_address : 0);
	if (!want) {
		backend_error(
		    s, "the ROM bootloader does not say where the application starts: name the "
		       "board");
		return -EINVAL;
	}
	for (uint64_t a = want;; a = (uint64_t)ps + psz) {
		/* a layout that reaches the end of the address space must not wrap back to 0
		 * and search forever (a device's string is outside input) */
		if (a > UINT32_MAX || dfu_layout_find(&d->layout, (uint32_t)a, &ps, &psz) < 0) {
			backend_error(s, "no writable flash at or above 0x%08x on %s", want,
				      s->dev->usb_node);
			return -ERANGE;
		}
		if (ps < want)
			continue;
		if (writable_page(&d->layout, ps, &ps, &psz))
			break;
	}
	s->reported_app_start = ps;
	for (end = ps; writable_page(&d->layout, end, &ps, &psz); end = ps + psz)
		if (ps + psz < ps)
			break;
	s->reported_flash_end = end;
	return 0;
}

static int
dfu_open(struct flash_session *s)
{
	struct dfu *d = xnew(struct dfu);
	int r;

	s->priv = d;
	r = claim_flash(d, s);
	if (r < 0)
		return r;
	/* §3.3: the ROM often starts in dfuERROR (errFIRMWARE) when no valid app is present */
	r = dfu_to_idle(d, s);
	if (r < 0) {
		backend_error(s, "the ROM DFU bootloader on %s does not reach dfuIDLE (%s)",
			      s->dev->usb_node, strerror(-r));
		return r;
	}
	r = find_app_flash(d, s);
	if (r < 0)
		return r;
	(void)str_copy(s->reported_mcu, sizeof(s->reported_mcu), "");
	(void)str_copy(s->reported_version, sizeof(s->reported_version), "");
	log_debug("dfu: %s \"%s\", transfer size %u, app at 0x%08x, flash end 0x%08x",
		  s->dev->usb_node, d->layout.name, d->xfer, s->reported_app_start,
		  s->reported_flash_end);
	return 0;
}

/* Which sectors differ from the image? Reads from one address pointer, stepping wBlockNum,
 * and skips to the next sector at the first block that differs: a sector about to be erased
 * need not be read further (AN3156 computes each UPLOAD's address from its wBlockNum, so the
 * blocks need not be consecutive). Needs sector starts on wTransferSize boundaries from
 * `start`; returns -EDOM when they are not, so that the caller reads everything. */
static int
dfu_compare(struct dfu *d, struct flash_session *s, uint32_t start, uint32_t end,
	    const uint8_t *img, uint32_t n_pages, const uint32_t *page_start, bool *changed)
{
	uint8_t *buf;
	int r;

	for (uint32_t i = 1; i < n_pages; i++)
		if ((page_start[i] - start) % d->xfer != 0)
			return -EDOM;
	r = dfu_upload_begin(d, s, start);
	if (r < 0)
		return r;
	buf = xmalloc(d->xfer);
	for (uint32_t i = 0; i < n_pages && r >= 0; i++) {
		uint32_t a = page_start[i] < start ? start : page_start[i];
		uint32_t b = i + 1 < n_pages ? page_start[i + 1] : end;

		changed[i] = false;
		for (uint32_t off = a; off < b && !changed[i]; off += d->xfer) {
			uint32_t block = 2 + (off - start) / d->xfer;
			uint16_t n = (uint16_t)(b - off < d->xfer ? b - off : d->xfer);

			if (block > UINT16_MAX) {
				backend_error(s, "reading 0x%08x: range too large", off);
				r = -EFBIG;
				break;
			}
			r = dfu_request(d, s, true, DFU_REQ_UPLOAD, (uint16_t)block, buf, n);
			if (r < 0) {
				r = device_error(d, s, r, NULL, "reading block", off);
				break;
			}
			if (r != n) {
				backend_error(s, "reading 0x%08x: short UPLOAD (%d of %u bytes)",
					      off, r, n);
				r = -EIO;
				break;
			}
			changed[i] = memcmp(buf, img + (off - start), n) != 0;
			if (s->progress)
				s->progress(s->userdata, "read", off + n - start, end - start);
		}
	}
	free(buf);
	if (r < 0) {
		(void)dfu_to_idle(d, s);
		return r;
	}
	return dfu_abort_to_idle(d, s);
}

/* One write: the image's range, its erase sectors and which of them differ. */
struct dfu_write_plan {
	const struct image *img;
	uint32_t start, end; /* [start, end) is written */
	struct dfu_page {
		uint32_t start, size;
		bool changed;
	} * pages;
	size_t n_pages;
	uint8_t *cur;	    /* what the range held; then the DNLOAD buffer */
	uint64_t total;	    /* bytes in changed sectors */
	uint32_t n_changed; /* sectors */
};

/* The part of page i inside the image's range. */
static void
page_range(const struct dfu_write_plan *w, size_t i, uint32_t *ret_a, uint32_t *ret_b)
{
	const struct dfu_page *pg = &w->pages[i];

	*ret_a = pg->start < w->start ? w->start : pg->start;
	*ret_b = pg->start + pg->size > w->end ? w->end : pg->start + pg->size;
}

/* The range the image covers, inside the application flash, as a list of erase sectors. */
static int
plan_pages(struct dfu *d, struct flash_session *s, struct dfu_write_plan *w)
{
	const struct image *img = w->img;
	uint32_t ps, psz;

	w->start = img->has_load_address ? img->load_address : s->reported_app_start;
	if (img->size == 0 || img->size > UINT32_MAX - w->start) {
		backend_error(s, "the image is empty or too large");
		return -EINVAL;
	}
	w->end = w->start + (uint32_t)img->size;
	if (w->start < s->reported_app_start || w->end > s->reported_flash_end) {
		backend_error(s,
			      "the image [0x%08x, 0x%08x) is outside the application flash "
			      "[0x%08x, 0x%08x): refusing to write",
			      w->start, w->end, s->reported_app_start, s->reported_flash_end);
		return -ERANGE;
	}
	for (uint64_t a = w->start; a < w->end; a = (uint64_t)ps + psz) {
		if (!writable_page(&d->layout, (uint32_t)a, &ps, &psz)) {
			backend_error(s, "0x%08x is not writable flash", (uint32_t)a);
			return -ERANGE;
		}
		w->pages = xreallocarray(w->pages, w->n_pages + 1, sizeof(*w->pages));
		w->pages[w->n_pages].start = ps;
		w->pages[w->n_pages].size = psz;
		w->pages[w->n_pages].changed = false;
		w->n_pages++;
	}
	return 0;
}

/* Read what is there and compare per erase sector; everything when the sectors do not start
 * on transfer boundaries. */
static int
find_changed(struct dfu *d, struct flash_session *s, struct dfu_write_plan *w)
{
	uint32_t *ps_list = xnew_array(uint32_t, w->n_pages);
	bool *ch = xnew_array(bool, w->n_pages);
	int r;

	w->cur = xmalloc(w->img->size);
	for (size_t i = 0; i < w->n_pages; i++)
		ps_list[i] = w->pages[i].start;
	r = dfu_compare(d, s, w->start, w->end, w->img->data, (uint32_t)w->n_pages, ps_list, ch);
	for (size_t i = 0; r >= 0 && i < w->n_pages; i++)
		w->pages[i].changed = ch[i];
	free(ps_list);
	free(ch);
	if (r != -EDOM)
		return r;
	r = dfu_read(d, s, w->start, w->cur, (uint32_t)w->img->size, "read");
	for (size_t i = 0; r >= 0 && i < w->n_pages; i++) {
		uint32_t a, b;

		page_range(w, i, &a, &b);
		w->pages[i].changed =
		    memcmp(w->cur + (a - w->start), w->img->data + (a - w->start), b - a) != 0;
	}
	return r;
}

/* The runs of changed sectors, for verify(), and what they add up to. */
static void
plan_runs(struct dfu *d, struct dfu_write_plan *w)
{
	free(d->runs);
	d->runs = NULL;
	d->n_runs = 0;
	for (size_t i = 0; i < w->n_pages; i++) {
		uint32_t a, b;

		if (!w->pages[i].changed)
			continue;
		page_range(w, i, &a, &b);
		w->total += b - a;
		w->n_changed++;
		if (d->n_runs && d->runs[d->n_runs - 1].end == a) {
			d->runs[d->n_runs - 1].end = b;
		} else {
			d->runs = xreallocarray(d->runs, d->n_runs + 1, sizeof(*d->runs));
			d->runs[d->n_runs].start = a;
			d->runs[d->n_runs].end = b;
			d->n_runs++;
		}
	}
}

static int
erase_changed(struct dfu *d, struct flash_session *s, const struct dfu_write_plan *w)
{
	for (size_t i = 0; i < w->n_pages; i++) {
		uint8_t cmd[DFUSE_CMD_LEN];
		size_t n;
		int r;

		if (!w->pages[i].changed)
			continue;
		n = dfu_cmd_erase_page(cmd, w->pages[i].start);
		r = dfuse_command(d, s, cmd, n, "erasing the sector", w->pages[i].start);
		if (r < 0)
			return r;
		s->erases++;
		if (s->progress)
			s->progress(s->userdata, "erase", s->erases, w->n_changed);
	}
	return 0;
}

/* Program [a, b): set the address once, then step wBlockNum, every chunk wTransferSize bytes
 * except the last of the run (AN3156). */
static int
program_run(struct dfu *d, struct flash_session *s, struct dfu_write_plan *w, uint32_t a,
	    uint32_t b, uint64_t *done)
{
	int r = dfuse_set_address(d, s, a);

	if (r < 0)
		return r;
	for (uint32_t off = a, block = 2; off < b; off += d->xfer, block++) {
		struct dfu_status_reply st = {0};
		uint16_t len = (uint16_t)(b - off < d->xfer ? b - off : d->xfer);
		uint8_t *chunk = w->cur + (off - w->start);

		if (block > UINT16_MAX) {
			backend_error(s, "run at 0x%08x too long for wBlockNum", a);
			return -EFBIG;
		}
		/* libusb takes a non-const buffer for OUT transfers too */
		memcpy(chunk, w->img->data + (off - w->start), len);
		r = dfu_request(d, s, false, DFU_REQ_DNLOAD, (uint16_t)block, chunk, len);
		if (r >= 0)
			r = dfu_wait(d, s, &st);
		if (r < 0) {
			char what[48];

			snprintf(what, sizeof(what), "writing block %u", block);
			return device_error(d, s, r, &st, what, off);
		}
		s->bytes_written += len;
		*done += len;
		if (s->progress)
			s->progress(s->userdata, "write", *done, w->total);
	}
	return 0;
}

/* Program each run of changed sectors. */
static int
program_changed(struct dfu *d, struct flash_session *s, struct dfu_write_plan *w)
{
	uint64_t done = 0;
	int r;

	for (size_t i = 0; i < w->n_pages;) {
		uint32_t a, b, unused;
		size_t j = i;

		if (!w->pages[i].changed) {
			i++;
			continue;
		}
		while (j + 1 < w->n_pages && w->pages[j + 1].changed)
			j++;
		page_range(w, i, &a, &unused);
		page_range(w, j, &unused, &b);
		r = program_run(d, s, w, a, b, &done);
		if (r < 0)
			return r;
		i = j + 1;
	}
	/* the last GETSTATUS reported dfuDNLOAD-IDLE, status OK */
	r = dfu_abort_to_idle(d, s);
	if (r < 0)
		backend_error(s, "the ROM DFU bootloader does not return to dfuIDLE after writing");
	return r;
}

/* Erase and program only the sectors whose content differs from the image. */
static int
write_changed(struct dfu *d, struct flash_session *s, struct dfu_write_plan *w)
{
	int r = plan_pages(d, s, w);

	if (r >= 0)
		r = find_changed(d, s, w);
	if (r < 0)
		return r;
	plan_runs(d, w);
	if (w->total == 0) {
		log_debug("dfu: [0x%08x, 0x%08x) already holds this image: nothing to write",
			  w->start, w->end);
		return 0;
	}
	r = erase_changed(d, s, w);
	return r < 0 ? r : program_changed(d, s, w);
}

static int
dfu_write(struct flash_session *s)
{
	struct dfu *d = s->priv;
	struct dfu_write_plan w = {.img = s->img};
	int r;

	if (!d || !d->u.h)
		return -ENOTCONN;
	r = write_changed(d, s, &w);
	if (r >= 0) {
		d->start = w.start;
		d->len = (uint32_t)w.img->size;
		d->data = w.img->data;
	}
	free(w.cur);
	free(w.pages);
	return r < 0 ? r : 0;
}

static int
dfu_verify(struct flash_session *s)
{
	struct dfu *d = s->priv;
	uint8_t *back;
	int r;

	if (!d || !d->data)
		return -ENOTCONN;
	/* the sectors not rewritten were read in full before and matched the image */
	back = xmalloc(d->len);
	r = 0;
	for (size_t k = 0; k < d->n_runs && r == 0; k++) {
		uint32_t a = d->runs[k].start, len = d->runs[k].end - a;

		r = dfu_read(d, s, a, back, len, "verify");
		for (uint32_t i = 0; r == 0 && i < len; i++)
			if (back[i] != d->data[a - d->start + i]) {
				backend_error(s,
					      "verify failed at 0x%08x: read 0x%02x, wrote 0x%02x",
					      a + i, back[i], d->data[a - d->start + i]);
				r = -EIO;
			}
	}
	if (r == 0)
		s->bytes_verified = d->len;
	free(back);
	return r;
}

/* §3.6: set the jump address, zero-length DNLOAD, GETSTATUS. The ROM jumps to the
 * application during or right after that GETSTATUS, so a vanished device is success. */
static int
dfu_leave(struct flash_session *s)
{
	struct dfu *d = s->priv;
	struct dfu_status_reply st;
	int r;

	if (!d || !d->u.h)
		return -ENOTCONN;
	r = dfu_to_idle(d, s);
	if (r >= 0)
		r = dfuse_set_address(d, s, s->reported_app_start);
	if (r < 0)
		return r;
	r = dfu_request(d, s, false, DFU_REQ_DNLOAD, 2, NULL, 0);
	if (r >= 0)
		r = dfu_getstatus(d, s, &st);
	r = usbdfu_leaving(&d->u, r);
	if (r < 0)
		backend_error(s, "leaving DFU for 0x%08x failed: %s", s->reported_app_start,
			      strerror(-r));
	return r < 0 ? r : 0;
}

static void
dfu_close(struct flash_session *s)
{
	struct dfu *d = s->priv;

	if (!d)
		return;
	usbdfu_close(&d->u);
	free(d->runs);
	free(d);
	s->priv = NULL;
}

const struct flash_backend backend_dfu = {
    .name = "dfu",
    .mode = DEVICE_MODE_STM32_ROM_DFU,
    .open = dfu_open,
    .write = dfu_write,
    .verify = dfu_verify,
    .leave = dfu_leave,
    .close = dfu_close,
};
