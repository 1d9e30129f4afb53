/* SPDX-License-Identifier: GPL-2.0-or-later */
/* flash/picoboot: flashing the RP2040 (SKR Pico) through its bootrom's PICOBOOT interface in
 * BOOTSEL mode, 2e8a:0003 (protocols.md §5.2; the wire format is proto/picoboot).
 *
 * The sequence follows what Klipper's lib/rp2040_flash/main.c and picotool do on real
 * boards: clear halted endpoints, IF_RESET, EXCLUSIVE_ACCESS (so the RPI-RP2 drive cannot
 * interleave writes), EXIT_XIP, then erase and program, and REBOOT(pc 0, sp end of SRAM,
 * 500 ms) to start from flash. Unlike those tools it reads every 4 KiB sector first and
 * erases and programs only the sectors that differ (a WRITE does no implicit erase on the
 * RP2040: it can only clear bits), and it reads the rewritten sectors back to verify. The
 * READ of flash after EXIT_XIP goes through the bootrom's serial flash read, as the tools that
 * verify after writing rely on.
 *
 * Where PICOBOOT cannot be claimed (another program holds the interface, or a ROM without
 * it) the image goes to the RPI-RP2 drive instead, as a .uf2 written with proto/fat on the
 * raw block device: no mount. That drive is virtual and keeps nothing written to it, so this
 * path cannot read back; the boot check after the ROM's own reboot verifies it. */
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <libudev.h>
#include <libusb.h>

#include "flash/backend.h"
#include "flash/uf2drive.h"
#include "flash/usb.h"
#include "proto/picoboot.h"
#include "proto/uf2.h"
#include "log.h"
#include "udevwatch.h"
#include "util.h"

#define CMD_TIMEOUT_MS 3000   /* picoboot_connection.c: the command block */
#define DATA_TIMEOUT_MS 10000 /* and the data phase / a command without data */
#define REBOOT_DELAY_MS 500

struct pico {
	libusb_context *ctx;
	libusb_device_handle *h;
	int iface;
	uint8_t ep_out, ep_in;
	bool claimed;
	bool left;
	uint32_t token;
	/* what write() did, for verify(): the image and the sectors it rewrote */
	uint32_t start, len;
	const uint8_t *data;
	bool *rewritten; /* per sector of [start & ~4095, end) */
	uint32_t first_sector, n_sectors;
	bool drive; /* PICOBOOT unavailable: write a .uf2 to the RPI-RP2 drive */
	char drive_node[DEVICE_PATH];
};

/* The RPI-RP2 drive of this BOOTSEL device: the one the plan names, else the block device
 * udev shows under the same USB port now (its uevent may come after the device's). */
static bool
find_drive(const struct flash_session *s, struct pico *p)
{
	struct device now;
	struct udev *u;
	bool found = false;

	if (s->dev->block[0])
		return str_copy(p->drive_node, sizeof(p->drive_node), s->dev->block);
	u = udev_new();
	if (u && udevwatch_device_at_port(u, s->dev->port, &now) == 0 && now.block[0])
		found = str_copy(p->drive_node, sizeof(p->drive_node), now.block);
	if (u)
		udev_unref(u);
	return found;
}

/* The vendor interface (class 0xFF) with a bulk OUT then a bulk IN endpoint: interface 1
 * next to the mass-storage drive, or 0 when the drive is disabled (picoboot_connection.c). */
static int
find_interface(struct pico *p, const struct libusb_config_descriptor *cfg)
{
	for (int i = 0; i < cfg->bNumInterfaces; i++) {
		const struct libusb_interface_descriptor *alt = &cfg->interface[i].altsetting[0];

		if (cfg->interface[i].num_altsetting < 1 || alt->bInterfaceClass != 0xff ||
		    alt->bNumEndpoints != 2)
			continue;
		p->ep_out = alt->endpoint[0].bEndpointAddress;
		p->ep_in = alt->endpoint[1].bEndpointAddress;
		if ((p->ep_out & 0x80u) || !(p->ep_in & 0x80u))
			continue;
		p->iface = alt->bInterfaceNumber;
		return 0;
	}
	return -ENOENT;
}

static bool
halted(struct pico *p, uint8_t ep)
{
	uint8_t st[2];

	/* standard GET_STATUS to the endpoint: bit 0 is the halt feature */
	return libusb_control_transfer(p->h, LIBUSB_ENDPOINT_IN | LIBUSB_RECIPIENT_ENDPOINT,
				       LIBUSB_REQUEST_GET_STATUS, 0, ep, st, sizeof(st),
				       CMD_TIMEOUT_MS) == (int)sizeof(st) &&
	       (st[0] & 1);
}

/* Unstall both endpoints and reset the interface's command state. */
static int
pico_reset(struct pico *p)
{
	int r;

	if (halted(p, p->ep_in))
		(void)libusb_clear_halt(p->h, p->ep_in);
	if (halted(p, p->ep_out))
		(void)libusb_clear_halt(p->h, p->ep_out);
	r = libusb_control_transfer(p->h, LIBUSB_REQUEST_TYPE_VENDOR | LIBUSB_RECIPIENT_INTERFACE,
				    PICOBOOT_IF_RESET, 0, (uint16_t)p->iface, NULL, 0,
				    CMD_TIMEOUT_MS);
	return r < 0 ? usb_errno(r) : 0;
}

/* Why the last command failed, as the device says it, into s->error. */
static int
command_error(struct pico *p, struct flash_session *s, const char *what, uint32_t addr, int r)
{
	uint8_t buf[PICOBOOT_STATUS_SIZE];
	struct picoboot_status_reply st = {0};
	int n = libusb_control_transfer(
	    p->h, LIBUSB_ENDPOINT_IN | LIBUSB_REQUEST_TYPE_VENDOR | LIBUSB_RECIPIENT_INTERFACE,
	    PICOBOOT_IF_CMD_STATUS, 0, (uint16_t)p->iface, buf, sizeof(buf), CMD_TIMEOUT_MS);

	if (r == -ENODEV) {
		backend_error(s, "the RP2040 on %s left the bus during %s at 0x%08" PRIx32,
			      s->dev->usb_node, what, addr);
		return r;
	}
	if (n == (int)sizeof(buf) && picoboot_decode_status(buf, sizeof(buf), &st) == 0 &&
	    st.status != PICOBOOT_OK) {
		backend_error(s, "PICOBOOT %s at 0x%08" PRIx32 " on %s failed: %s", what, addr,
			      s->dev->usb_node, picoboot_status_to_string(st.status));
		(void)pico_reset(p); /* the device halts its endpoints on an error */
		return -EIO;
	}
	backend_error(s, "PICOBOOT %s at 0x%08" PRIx32 " on %s failed: %s", what, addr,
		      s->dev->usb_node, strerror(-r));
	(void)pico_reset(p);
	return r;
}

static int
bulk(struct pico *p, uint8_t ep, uint8_t *buf, int len, unsigned timeout_ms)
{
	int done = 0, r = libusb_bulk_transfer(p->h, ep, buf, len, &done, timeout_ms);

	if (r < 0)
		return usb_errno(r);
	return done;
}

/* One command: block, data phase, and the acknowledgement in the opposite direction
 * (a zero-length packet the host reads, or sends, as picoboot_connection.c does). */
static int
pico_cmd(struct pico *p, struct flash_session *s, uint8_t block[PICOBOOT_CMD_SIZE], uint8_t *data,
	 uint32_t len, const char *what, uint32_t addr)
{
	bool in = picoboot_cmd_is_in(block[8]);
	int r;

	s->transfers++;
	r = bulk(p, p->ep_out, block, PICOBOOT_CMD_SIZE, CMD_TIMEOUT_MS);
	if (r >= 0 && r != PICOBOOT_CMD_SIZE)
		r = -EIO;
	if (r >= 0 && len) {
		r = bulk(p, in ? p->ep_in : p->ep_out, data, (int)len, DATA_TIMEOUT_MS);
		if (r >= 0 && (uint32_t)r != len)
			r = -EIO;
	}
	/* the real tools send one byte as the OUT acknowledgement; the bootrom takes the next
	 * OUT packet, whatever its length */
	if (r >= 0) {
		uint8_t ack[64] = {0};

		r = bulk(p, in ? p->ep_out : p->ep_in, ack, in ? 1 : (int)sizeof(ack),
			 len ? CMD_TIMEOUT_MS : DATA_TIMEOUT_MS);
	}
	return r < 0 ? command_error(p, s, what, addr, r) : 0;
}

static int
pico_range(struct pico *p, struct flash_session *s, enum picoboot_cmd_id id, uint32_t addr,
	   uint8_t *data, uint32_t len, const char *what)
{
	uint8_t block[PICOBOOT_CMD_SIZE];

	if (picoboot_encode_range(block, ++p->token, id, addr, len) < 0) {
		backend_error(s,
			      "PICOBOOT %s of %" PRIu32 " bytes at 0x%08" PRIx32
			      " is not allowed on the RP2040 (alignment or range)",
			      what, len, addr);
		return -EINVAL;
	}
	return pico_cmd(p, s, block, id == PICOBOOT_FLASH_ERASE ? NULL : data,
			id == PICOBOOT_FLASH_ERASE ? 0 : len, what, addr);
}

static int
pico_simple(struct pico *p, struct flash_session *s, uint8_t block[PICOBOOT_CMD_SIZE],
	    const char *what)
{
	return pico_cmd(p, s, block, NULL, 0, what, 0);
}

static int
pico_claim(struct pico *p, struct flash_session *s)
{
	struct libusb_config_descriptor *cfg = NULL;
	int r = usb_open(s, "RP2040 BOOTSEL", &p->ctx, &p->h, NULL, &cfg);

	if (r < 0)
		return r;
	r = find_interface(p, cfg);
	libusb_free_config_descriptor(cfg);
	if (r < 0) {
		backend_error(s, "%s has no PICOBOOT interface (BOOTSEL with PICOBOOT disabled?)",
			      s->dev->usb_node);
		return r;
	}
	r = libusb_claim_interface(p->h, p->iface);
	if (r < 0) {
		backend_error(s, "cannot claim the PICOBOOT interface of %s: %s", s->dev->usb_node,
			      libusb_strerror(r));
		return usb_errno(r);
	}
	p->claimed = true;
	return 0;
}

/* 2e8a:0003 is the RP2040 bootrom itself: the chip is known; the application start is the
 * board's (after boot2 for "No bootloader" builds). */
static void
report(struct flash_session *s)
{
	(void)str_copy(s->reported_mcu, sizeof(s->reported_mcu), "rp2040");
	(void)str_copy(s->reported_version, sizeof(s->reported_version), "RP2040 bootrom");
	s->reported_app_start =
	    s->board ? s->board->app_start : PICOBOOT_FLASH_BASE + PICOBOOT_PAGE /* boot2 */;
	s->reported_flash_end = s->board ? s->board->mcu->flash_base + s->board->mcu->flash_size
					 : PICOBOOT_FLASH_BASE + PICOBOOT_FLASH_MAX;
}

static int
pico_open(struct flash_session *s)
{
	struct pico *p = xnew(struct pico);
	uint8_t block[PICOBOOT_CMD_SIZE];
	int r;

	s->priv = p;
	r = pico_claim(p, s);
	if (r < 0 && (r == -EBUSY || r == -EACCES || r == -ENOENT) && find_drive(s, p)) {
		log_notice("%s; writing a .uf2 to the RPI-RP2 drive %s instead", s->error,
			   p->drive_node);
		s->error[0] = '\0';
		p->drive = true;
		report(s);
		return 0;
	}
	if (r < 0)
		return r;
	r = pico_reset(p);
	if (r < 0) {
		backend_error(s, "PICOBOOT interface reset on %s failed: %s", s->dev->usb_node,
			      strerror(-r));
		return r;
	}
	picoboot_encode_exclusive(block, ++p->token, PICOBOOT_EXCLUSIVE);
	r = pico_simple(p, s, block, "exclusive access");
	if (r == 0) {
		picoboot_encode_simple(block, ++p->token, PICOBOOT_EXIT_XIP);
		r = pico_simple(p, s, block, "exit XIP");
	}
	if (r < 0)
		return r;
	report(s);
	log_debug("picoboot: %s interface %d, app at 0x%08" PRIx32, s->dev->usb_node, p->iface,
		  s->reported_app_start);
	return 0;
}

/* Where a .bin goes: a "No bootloader" RP2040 build starts with boot2 at the flash base,
 * its vector table right after it, where the board's app start points. */
static uint32_t
load_address(const struct flash_session *s)
{
	if (s->img->has_load_address)
		return s->img->load_address;
	return s->reported_app_start == PICOBOOT_FLASH_BASE + PICOBOOT_PAGE ? PICOBOOT_FLASH_BASE
									    : s->reported_app_start;
}

/* Read one sector and merge the image over it into want[]; *ret_differs when it must
 * change. */
static int
merge_sector(struct pico *p, struct flash_session *s, uint32_t sector, uint8_t *want,
	     bool *ret_differs)
{
	uint8_t cur[PICOBOOT_SECTOR];
	uint32_t lo = sector > p->start ? sector : p->start;
	uint32_t hi = sector + PICOBOOT_SECTOR < p->start + p->len ? sector + PICOBOOT_SECTOR
								   : p->start + p->len;
	int r = pico_range(p, s, PICOBOOT_READ, sector, cur, PICOBOOT_SECTOR, "read");

	if (r < 0)
		return r;
	memcpy(want, cur, PICOBOOT_SECTOR);
	memcpy(want + (lo - sector), p->data + (lo - p->start), hi - lo);
	*ret_differs = memcmp(cur, want, PICOBOOT_SECTOR) != 0;
	return 0;
}

static int
erase_sector(struct pico *p, struct flash_session *s, uint32_t sector)
{
	int r = pico_range(p, s, PICOBOOT_FLASH_ERASE, sector, NULL, PICOBOOT_SECTOR, "erase");

	if (r == 0)
		s->erases++;
	return r;
}

static int
program_sector(struct pico *p, struct flash_session *s, uint32_t sector, uint8_t *want)
{
	int r = pico_range(p, s, PICOBOOT_WRITE, sector, want, PICOBOOT_SECTOR, "write");

	if (r == 0)
		s->bytes_written += PICOBOOT_SECTOR;
	return r;
}

static void
progress(struct pico *p, struct flash_session *s, const char *step, uint32_t done)
{
	if (s->progress)
		s->progress(s->userdata, step, (uint64_t)done * PICOBOOT_SECTOR,
			    (uint64_t)p->n_sectors * PICOBOOT_SECTOR);
}

/* Every sector that differs is erased and programmed; the others are left alone. The first
 * sector of flash holds boot2, which the bootrom checks before it runs anything: it is
 * erased first and programmed last, so an interrupted write leaves a chip that stays in
 * BOOTSEL (and can be flashed again) rather than one that starts half an application. */
static int
write_sectors(struct pico *p, struct flash_session *s)
{
	uint8_t want[PICOBOOT_SECTOR], boot2_sector[PICOBOOT_SECTOR];
	bool boot2_first = p->first_sector == PICOBOOT_FLASH_BASE, boot2_differs = false;
	int r = 0;

	if (boot2_first) {
		r = merge_sector(p, s, PICOBOOT_FLASH_BASE, boot2_sector, &boot2_differs);
		if (r == 0 && boot2_differs)
			r = erase_sector(p, s, PICOBOOT_FLASH_BASE);
		p->rewritten[0] = boot2_differs;
		progress(p, s, "write", 1);
	}
	for (uint32_t i = boot2_first ? 1 : 0; i < p->n_sectors && r == 0; i++) {
		uint32_t sector = p->first_sector + i * PICOBOOT_SECTOR;

		r = merge_sector(p, s, sector, want, &p->rewritten[i]);
		if (r == 0 && p->rewritten[i])
			r = erase_sector(p, s, sector);
		if (r == 0 && p->rewritten[i])
			r = program_sector(p, s, sector, want);
		progress(p, s, "write", i + 1);
	}
	if (r == 0 && boot2_differs)
		r = program_sector(p, s, PICOBOOT_FLASH_BASE, boot2_sector);
	return r;
}

/* The RPI-RP2 drive: the image as UF2 blocks in NEW.UF2 on its FAT16 volume
 * (flash/uf2drive). The ROM programs the blocks as their sectors arrive and reboots once it
 * has all of them, possibly before the last FAT and directory writes: uf2drive counts that
 * as written (1), and the boot check proves it either way. */
static int
drive_write(struct pico *p, struct flash_session *s)
{
	size_t len = uf2_encoded_size(p->len);
	uint8_t *uf2 = xmalloc(len);
	char msg[256] = "";
	int r = (int)uf2_encode(p->start, p->data, p->len, UF2_FAMILY_RP2040, uf2);

	if (r < 0)
		backend_error(s,
			      "image at 0x%08" PRIx32 " cannot be written as UF2 (not 256-aligned)",
			      p->start);
	else
		r = uf2drive_write_path(p->drive_node, uf2, len, msg, sizeof(msg));
	if (r < 0 && msg[0])
		backend_error(s, "writing %s to the RPI-RP2 drive %s failed: %s", UF2DRIVE_NAME,
			      p->drive_node, msg);
	else if (r > 0)
		log_info("picoboot: %s", msg);
	if (r >= 0) {
		s->bytes_written = p->len;
		progress(p, s, "write", p->n_sectors);
	}
	free(uf2);
	return r < 0 ? r : 0;
}

static int
pico_write(struct flash_session *s)
{
	struct pico *p = s->priv;
	uint32_t load, end;

	if (!p || (!p->h && !p->drive))
		return -ENOTCONN;
	load = load_address(s);
	if (load < PICOBOOT_FLASH_BASE || s->img->size > s->reported_flash_end - load ||
	    load > s->reported_flash_end) {
		backend_error(s,
			      "image of %zu bytes at 0x%08" PRIx32 " does not fit the flash "
			      "[0x%08x, 0x%08" PRIx32 ")",
			      s->img->size, load, PICOBOOT_FLASH_BASE, s->reported_flash_end);
		return -ERANGE;
	}
	p->start = load;
	p->len = (uint32_t)s->img->size;
	p->data = s->img->data;
	p->first_sector = load & ~(PICOBOOT_SECTOR - 1);
	end = (load + p->len + PICOBOOT_SECTOR - 1) & ~(PICOBOOT_SECTOR - 1);
	p->n_sectors = (end - p->first_sector) / PICOBOOT_SECTOR;
	free(p->rewritten);
	p->rewritten = xcalloc(p->n_sectors ? p->n_sectors : 1, sizeof(bool));
	return p->drive ? drive_write(p, s) : write_sectors(p, s);
}

/* Read back the rewritten sectors; the others were read in full and matched. */
static int
pico_verify(struct flash_session *s)
{
	struct pico *p = s->priv;
	uint8_t back[PICOBOOT_SECTOR];

	if (!p || !p->data)
		return -ENOTCONN;
	if (p->drive) {
		log_info("picoboot: the RPI-RP2 drive cannot be read back; the boot check "
			 "verifies this image");
		return 0;
	}
	for (uint32_t i = 0; i < p->n_sectors; i++) {
		uint32_t sector = p->first_sector + i * PICOBOOT_SECTOR;
		uint32_t lo = sector > p->start ? sector : p->start;
		uint32_t hi = sector + PICOBOOT_SECTOR < p->start + p->len
				  ? sector + PICOBOOT_SECTOR
				  : p->start + p->len;
		int r;

		if (!p->rewritten[i])
			continue;
		r = pico_range(p, s, PICOBOOT_READ, sector, back, PICOBOOT_SECTOR, "verify read");
		if (r < 0)
			return r;
		for (uint32_t a = lo; a < hi; a++)
			if (back[a - sector] != p->data[a - p->start]) {
				backend_error(s,
					      "verify failed at 0x%08" PRIx32
					      ": read 0x%02x, wrote 0x%02x",
					      a, back[a - sector], p->data[a - p->start]);
				return -EIO;
			}
		if (s->progress)
			s->progress(s->userdata, "verify", (uint64_t)(i + 1) * PICOBOOT_SECTOR,
				    (uint64_t)p->n_sectors * PICOBOOT_SECTOR);
	}
	s->bytes_verified = p->len;
	return 0;
}

/* REBOOT pc 0 (a normal boot from flash through boot2), after 500 ms so that the
 * acknowledgement still reaches the host, as Klipper's rp2040_flash does. */
static int
pico_leave(struct flash_session *s)
{
	struct pico *p = s->priv;
	uint8_t block[PICOBOOT_CMD_SIZE];
	int r;

	if (p && p->drive)
		return 0; /* the ROM reboots by itself once the last block arrived */
	if (!p || !p->h)
		return -ENOTCONN;
	picoboot_encode_reboot(block, ++p->token, 0, 0, REBOOT_DELAY_MS);
	r = pico_simple(p, s, block, "reboot");
	/* gone already: the reboot happened */
	if (r == -ENODEV)
		r = 0;
	p->left = r == 0;
	return r;
}

static void
pico_close(struct flash_session *s)
{
	struct pico *p = s->priv;

	if (!p)
		return;
	if (p->h && p->claimed && !p->left) {
		uint8_t block[PICOBOOT_CMD_SIZE];

		/* give the RPI-RP2 drive back to the host: the board stays in BOOTSEL */
		picoboot_encode_exclusive(block, ++p->token, PICOBOOT_NOT_EXCLUSIVE);
		(void)pico_simple(p, s, block, "release");
	}
	usb_close(p->ctx, p->h, p->iface, p->claimed && !p->left);
	free(p->rewritten);
	free(p);
	s->priv = NULL;
}

const struct flash_backend backend_picoboot = {
    /* the config method of the BOOTSEL path (config.c: "uf2") */
    .name = "uf2",	   .mode = DEVICE_MODE_RP2040_BOOTSEL,
    .open = pico_open,	   .write = pico_write,
    .verify = pico_verify, .leave = pico_leave,
    .close = pico_close,
};
