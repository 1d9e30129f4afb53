/* SPDX-License-Identifier: GPL-2.0-or-later */
/* msc: firmware.bin on the SD card of a board that runs Marlin, through the card's USB
 * drive (method "msc", issue 16; protocols.md §5.1, peers.md §1.1).
 *
 * What OctoPrint-FirmwareUpdater's lpc1768 method does by hand (M22, wait for the mount,
 * copy, sync, umount, M997), without mounting anything and with a verify at each end:
 *   open   - M115 (Marlin, which build), M27 (refuse while an SD print runs: M22 would be
 *            ignored silently, gcode/sd/M21_M22.cpp), M22 (release the card: Marlin's LPC176x
 *            HAL then drops its MSC lock and the drive shows the medium again, HAL/LPC1768
 *            main.cpp), then the block device of the same USB device, waited for until it has
 *            a medium, and its FAT volume (proto/fat, no mount).
 *   write  - firmware.bin in the root (an older one deleted first), data then FAT then the
 *            directory entry, fsync.
 *   verify - the file read back through the FAT and compared with the image.
 *   leave  - close the drive, M997: Marlin's flashFirmware() waits 1.5 s and resets
 *            (HAL/LPC1768/HAL.cpp); the stock bootloader programs firmware.bin from its app
 *            start and renames it to FIRMWARE.CUR (protocols.md §1.2). No "ok" comes.
 * That the bootloader took the file (FIRMWARE.CUR equal to the image, firmware.bin gone, M115
 * of the new build) is checked after the board is back: msc_check_after(). */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <libudev.h>

#include "flash/backend.h"
#include "flash/blockfile.h"
#include "flash/marlin.h"
#include "flash/msc.h"
#include "log.h"
#include "proto/fat.h"
#include "udevwatch.h"
#include "util.h"

#define MEDIUM_WAIT_MS 10000u /* OctoPrint-FirmwareUpdater waits 2 s after M22, then 60 s */

struct msc {
	struct marlin_client mc;
	struct blockfile bf;
	struct fat_vol vol;
	bool mounted; /* vol is valid */
	char drive[DEVICE_PATH];
};

/* The block device of this USB device: the one the plan names, else what udev shows under
 * the same port now (the drive may have come after the tty). */
static bool
find_drive(const struct device *dev, char *out, size_t size)
{
	struct device now;
	struct udev *u;
	bool found = false;

	u = udev_new();
	if (u && udevwatch_device_at_port(u, dev->port, &now) == 0 && now.block[0])
		found = str_copy(out, size, now.block);
	if (u)
		udev_unref(u);
	if (!found && dev->block[0])
		found = str_copy(out, size, dev->block);
	return found;
}

static void
sleep_ms(unsigned ms)
{
	struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/* After M22: the drive with its medium (the kernel says ENOMEDIUM until Marlin lets go). */
static int
open_drive(struct flash_session *s, struct msc *m)
{
	uint64_t deadline = now_monotonic_usec() + (uint64_t)MEDIUM_WAIT_MS * 1000u;
	int r = -ENODEV;

	for (;;) {
		if (find_drive(s->dev, m->drive, sizeof(m->drive))) {
			r = blockfile_open(&m->bf, m->drive, true);
			if (r == 0)
				return 0;
		}
		if (now_monotonic_usec() >= deadline)
			break;
		sleep_ms(100);
	}
	if (r == -ENOMEDIUM)
		backend_error(
		    s,
		    "Marlin on port %s kept its SD card after M22 (the USB drive %s shows "
		    "no medium after %u s); nothing was written. Marlin releases the card "
		    "only when built with SDCARD_CONNECTION ONBOARD and not printing: "
		    "check the build, or eject the card from the LCD menu and retry",
		    s->dev->port, m->drive, MEDIUM_WAIT_MS / 1000);
	else if (r == -ENODEV)
		backend_error(s,
			      "Marlin on port %s shows no USB drive: its build has no onboard SD "
			      "card over USB (SDSUPPORT, SDCARD_CONNECTION ONBOARD); nothing was "
			      "written",
			      s->dev->port);
	else
		backend_error(s, "cannot open the SD card drive %s of port %s: %s", m->drive,
			      s->dev->port, strerror(-r));
	return r;
}

static int
msc_open(struct flash_session *s)
{
	struct msc *m = calloc(1, sizeof(*m));
	struct marlin_info info;
	bool printing = false;
	uint64_t pos = 0, size = 0;
	int r;

	if (!m)
		return -ENOMEM;
	m->bf.fd = -1;
	m->mc.fd = -1;
	s->priv = m;
	if (!s->dev->tty[0]) {
		backend_error(s, "the Marlin board on port %s has no serial port", s->dev->port);
		return -ENXIO; /* not -ENODEV: nothing left the bus */
	}
	r = marlin_client_open(&m->mc, s->dev->tty);
	if (r == 0)
		r = marlin_client_identify(&m->mc, &info);
	if (r < 0) {
		backend_error(s, "%s", m->mc.error);
		return r;
	}
	(void)str_copy(s->reported_version, sizeof(s->reported_version), info.firmware);
	s->reported_app_start = s->board ? s->board->app_start : 0;
	r = marlin_client_sd_status(&m->mc, &printing, &pos, &size);
	if (r < 0) {
		backend_error(s, "%s", m->mc.error);
		return r;
	}
	if (printing) {
		backend_error(s,
			      "Marlin on port %s is printing from its SD card (byte %" PRIu64
			      " of %" PRIu64
			      "): the card stays with the print; flash after it ends",
			      s->dev->port, pos, size);
		return -EBUSY;
	}
	r = marlin_client_command(&m->mc, "M22", 0, NULL, 0);
	if (r < 0) {
		backend_error(s, "%s", m->mc.error);
		return r;
	}
	r = open_drive(s, m);
	if (r < 0)
		return r;
	r = fat_mount(&m->vol, &m->bf.dev);
	if (r < 0) {
		backend_error(s,
			      "the SD card on port %s (%s) has no FAT file system the bootloader "
			      "could read: %s",
			      s->dev->port, m->drive, fat_error(&m->vol));
		return r;
	}
	m->mounted = true;
	return 0;
}

/* A firmware.bin that is not the whole image must not stay: the bootloader would program it
 * at the next reset, whoever causes it. 0 when none is left. */
static int
drop_partial(struct msc *m)
{
	struct fat_dirent e;
	int r = 0;

	if (fat_find(&m->vol, MSC_FILE, &e) == 0)
		r = fat_delete(&m->vol, MSC_FILE);
	if (r == 0)
		r = fat_flush(&m->vol);
	if (r == 0)
		r = m->bf.dev.flush(m->bf.dev.ctx); /* fsync; a drive gone: -ENODEV */
	return r;
}

static int
msc_write(struct flash_session *s)
{
	struct msc *m = s->priv;
	const struct image *img = s->img;
	struct fat_dirent e;
	int r;

	if (!m || !m->mounted)
		return -EBADF;
	if (img->has_load_address && s->board && img->load_address != s->board->app_start) {
		backend_error(s,
			      "the image starts at 0x%08" PRIx32 "; the SD bootloader writes "
			      "firmware.bin at 0x%08" PRIx32,
			      img->load_address, s->board->app_start);
		return -EINVAL;
	}
	if (s->progress)
		s->progress(s->userdata, "write", 0, img->size);
	r = fat_find(&m->vol, MSC_FILE, &e) == 0 ? fat_delete(&m->vol, MSC_FILE) : 0;
	if (r == 0)
		r = fat_write(&m->vol, MSC_FILE, img->data, img->size);
	if (r == 0)
		r = fat_flush(&m->vol);
	if (r == 0)
		r = m->bf.dev.flush(m->bf.dev.ctx); /* fsync; a drive gone: -ENODEV */
	if (r < 0) {
		backend_error(s, "writing %s to the SD card %s of port %s failed: %s%s", MSC_FILE,
			      m->drive, s->dev->port,
			      fat_error(&m->vol)[0] ? fat_error(&m->vol) : strerror(-r),
			      drop_partial(m) == 0 ? "; the partial file was removed" : "");
		return r;
	}
	s->bytes_written = img->size;
	s->transfers = (uint32_t)((img->size + 511) / 512);
	if (s->progress)
		s->progress(s->userdata, "write", img->size, img->size);
	return 0;
}

struct cmp {
	const uint8_t *want;
	size_t len, at;
};

static int
cmp_sink(void *ctx, const uint8_t *data, size_t len)
{
	struct cmp *c = ctx;

	if (c->at + len > c->len || memcmp(c->want + c->at, data, len) != 0)
		return -EIO;
	c->at += len;
	return 0;
}

int
msc_compare_file(struct fat_vol *v, const char *name, const uint8_t *want, size_t len, char *msg,
		 size_t msglen)
{
	struct fat_dirent e;
	struct cmp c = {.want = want, .len = len};
	int r = fat_find(v, name, &e);

	if (r < 0) {
		snprintf(msg, msglen, "%s is not on the card", name);
		return r;
	}
	if (e.size != len) {
		snprintf(msg, msglen, "%s on the card has %" PRIu32 " bytes, the image %zu", name,
			 e.size, len);
		return -EIO;
	}
	r = fat_read(v, &e, cmp_sink, &c);
	if (r < 0 || c.at != len) {
		snprintf(msg, msglen, "%s on the card differs from the image near byte %zu", name,
			 c.at);
		return -EIO;
	}
	return 0;
}

static int
msc_verify(struct flash_session *s)
{
	struct msc *m = s->priv;
	char msg[256];
	int r;

	if (!m || !m->mounted)
		return -EBADF;
	r = msc_compare_file(&m->vol, MSC_FILE, s->img->data, s->img->size, msg, sizeof(msg));
	if (r < 0) {
		backend_error(s, "read back from %s of port %s: %s%s", m->drive, s->dev->port, msg,
			      drop_partial(m) == 0 ? "; the file was removed" : "");
		return r;
	}
	s->bytes_verified = s->img->size;
	return 0;
}

static int
msc_leave(struct flash_session *s)
{
	struct msc *m = s->priv;
	int r;

	if (!m)
		return -EBADF;
	if (m->bf.fd >= 0) {
		r = blockfile_close(&m->bf);
		m->mounted = false;
		if (r < 0) {
			backend_error(s, "flushing the SD card %s of port %s failed: %s", m->drive,
				      s->dev->port, strerror(-r));
			return r;
		}
	}
	/* flashFirmware(): Marlin answers nothing and resets 1.5 s later */
	r = marlin_client_send(&m->mc, "M997");
	if (r == -ENODEV)
		return 0; /* gone already: the reset happened */
	if (r < 0)
		backend_error(s, "%s", m->mc.error);
	return r;
}

static void
msc_close(struct flash_session *s)
{
	struct msc *m = s->priv;

	if (!m)
		return;
	if (m->bf.fd >= 0)
		(void)blockfile_close(&m->bf);
	marlin_client_close(&m->mc);
	free(m);
	s->priv = NULL;
}

const struct flash_backend backend_msc = {
    .name = "msc",
    .mode = DEVICE_MODE_MARLIN_LPC,
    .open = msc_open,
    .write = msc_write,
    .verify = msc_verify,
    .leave = msc_leave,
    .close = msc_close,
};

int
msc_identify(const char *tty, struct marlin_info *info, char *msg, size_t msglen)
{
	struct marlin_client c;
	int r = marlin_client_open(&c, tty);

	if (r == 0)
		r = marlin_client_identify(&c, info);
	if (r < 0)
		snprintf(msg, msglen, "%s", c.error);
	marlin_client_close(&c);
	return r;
}

/* What the stock bootloader leaves on the card once it took firmware.bin. */
static int
check_card(struct fat_vol *v, const uint8_t *img, size_t len, char *msg, size_t msglen)
{
	struct fat_dirent e;
	char why[256];
	int r;

	if (fat_find(v, MSC_FILE, &e) == 0) {
		snprintf(msg, msglen,
			 "%s is still on the card: the bootloader did not take it, or could not "
			 "rename it to %s and flashes it again on every reset (check the card "
			 "with fsck.fat; a bootloader that does not read this card needs another "
			 "method)",
			 MSC_FILE, MSC_DONE_FILE);
		return -ENOEXEC;
	}
	r = msc_compare_file(v, MSC_DONE_FILE, img, len, why, sizeof(why));
	if (r < 0) {
		snprintf(msg, msglen,
			 "the bootloader removed %s but %s: the file was not programmed as written "
			 "(a failed rename, or a bootloader that only deletes it)",
			 MSC_FILE, why);
		return -ENOEXEC;
	}
	return 0;
}

int
msc_check_after(const struct device *dev, const uint8_t *img, size_t len, char *msg, size_t msglen)
{
	struct marlin_info want, got;
	struct flash_session s = {.dev = dev};
	struct msc *m;
	bool marlin = marlin_image_info(img, len, &want) == 0;
	int r;

	msg[0] = 0;
	/* open() identifies, refuses during a print, releases the card and mounts its FAT */
	r = msc_open(&s);
	m = s.priv;
	memset(&got, 0, sizeof(got));
	if (r == 0) {
		r = marlin_client_identify(&m->mc, &got);
		/* a Klipper image (a migration) has no build to compare: the card tells */
		if (r == 0 && marlin &&
		    (strcmp(got.firmware, want.firmware) != 0 ||
		     strcmp(got.build, want.build) != 0)) {
			snprintf(msg, msglen,
				 "Marlin on port %s reports %s (built %s), the image is %s (built "
				 "%s): the board runs the old firmware",
				 dev->port, got.firmware, got.build, want.firmware, want.build);
			r = -ENOEXEC;
		}
	}
	if (r == 0)
		r = check_card(&m->vol, img, len, msg, msglen);
	else if (!msg[0])
		snprintf(msg, msglen, "%s", s.error);
	/* the card back to Marlin (M21), whatever was found */
	if (m) {
		if (m->bf.fd >= 0)
			(void)blockfile_close(&m->bf);
		if (m->mc.fd >= 0)
			(void)marlin_client_command(&m->mc, "M21", 0, NULL, 0);
	}
	msc_close(&s);
	return r;
}
