/* SPDX-License-Identifier: GPL-2.0-or-later */
/* flash/sdpath: method "sd", firmware.bin on the board's SD card through the running Klipper
 * firmware, for boards whose stock BTT/LPC bootloader flashes from the card (protocols.md
 * §1.2, §4). An app-mode backend (flash/backend.h): the engine runs it while the application
 * is up and plans no bootloader entry.
 *
 * What Klipper's scripts/spi_flash/spi_flash.py does, and what this file does the same way:
 * - connect, check the MCU constant against the board ("MCU Type mismatch");
 * - a configured MCU (is_config) gets "reset" and a reconnect first (check_need_restart);
 * - configure the card's SPI bus from board_defs.py (catalog_sd_bus), initialise the card;
 * - write firmware.bin, read it back and compare a hash (SHA-1 there, SHA-256 here);
 * - "reset" (MCUConnection.reset: the command, then 15 ms), the stock bootloader programs
 *   the file and renames it to FIRMWARE.CUR;
 * - after the reconnect: the MCU's raw dictionary must equal the image's, else FIRMWARE.CUR
 *   must hash like the upload; a firmware.bin still there when the dictionary matched is
 *   deleted; then "reset" again, so that klippy finds an unconfigured MCU.
 * What it adds (peers.md pain point 4): before writing, orphaned long-name entries (which
 * make BTT loaders pick an old entry) and a leftover firmware.bin are removed; exFAT,
 * unformatted and full cards are refused with what to do before anything is written; a
 * firmware.bin that the loader did not take is removed again (or kept on an SDIO board that
 * only needs a power cycle), so the card never holds a file that flashes by surprise. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "catalog.h"
#include "flash/backend.h"
#include "flash/klipper.h"
#include "flash/sdcard.h"
#include "image/kdict.h"
#include "proto/fat.h"
#include "util.h"

#define SD_FILE "firmware.bin"
#define SD_CUR "FIRMWARE.CUR"
#define SD_RATE 4000000u       /* spi_flash.py -s: 4 MHz; 400 kHz is its slow default */
#define SD_RECONNECT_MS 15000u /* the app back on its tty after "reset" */

struct sdpath {
	struct klipper_client *kc;
	struct sdcard *card;
	struct blockdev bd;
	struct fat_vol vol;
	bool mounted;
	bool configured; /* SPI set up: the MCU needs a reset before Klipper's host uses it */
	bool wrote, verified;
	const char *tty;
};

static const char *
board_name(const struct flash_session *s)
{
	return s->board ? s->board->name : "the board";
}

static void
sleep_ms(unsigned ms)
{
	struct timespec ts = {.tv_sec = ms / 1000u, .tv_nsec = (long)(ms % 1000u) * 1000000L};

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/* klipper_client_open, retried while the tty comes back after a reset. */
static int
connect_app(struct flash_session *s, struct sdpath *p, unsigned wait_ms)
{
	char err[256] = "";
	int r;

	for (unsigned waited = 0;; waited += 100) {
		r = klipper_client_open(p->tty, NULL, &p->kc, err, sizeof(err));
		if (r == 0 || waited >= wait_ms)
			break;
		sleep_ms(100);
	}
	if (r < 0)
		backend_error(s, "cannot talk to the Klipper firmware of %s on %s: %s",
			      board_name(s), p->tty, err[0] ? err : strerror(-r));
	return r;
}

static int
setup_bus(struct flash_session *s, struct sdpath *p, const struct catalog_sd_bus *sd)
{
	struct klipper_spi_bus bus = {
	    .spi_bus = sd->spi_bus, .cs_pin = sd->cs_pin, .rate = SD_RATE};
	int r;

	memcpy(bus.sw_pins, sd->sw_pins, sizeof(bus.sw_pins));
	r = klipper_client_spi_setup(p->kc, &bus);
	if (r == -EALREADY) {
		/* configured by Klipper's host before it was stopped: reset, reconnect, again
		 * (spi_flash.py check_need_restart) */
		(void)klipper_client_reset(p->kc);
		klipper_client_close(p->kc);
		p->kc = NULL;
		sleep_ms(500);
		r = connect_app(s, p, SD_RECONNECT_MS);
		if (r < 0)
			return r;
		r = klipper_client_spi_setup(p->kc, &bus);
	}
	if (r < 0)
		backend_error(s, "%s on %s: cannot configure its SD card's SPI bus: %s",
			      board_name(s), p->tty, klipper_client_error(p->kc));
	p->configured = r == 0;
	return r;
}

static int
mount_card(struct flash_session *s, struct sdpath *p)
{
	int r = sdcard_open(p->kc, &p->card);

	if (r < 0) {
		backend_error(s,
			      "%s on %s: its SD card does not answer (%s); check that a card "
			      "is in the slot",
			      board_name(s), p->tty, sdcard_error(p->card));
		/* no card answers (-ENOMEDIUM): the engine may take another path (worker step
		 * "no-medium"); a tty that vanished stays -ENODEV */
		return r;
	}
	sdcard_blockdev(p->card, &p->bd);
	r = fat_mount(&p->vol, &p->bd);
	if (r < 0) {
		backend_error(s, "the SD card of %s on %s cannot be used: %s; nothing was written",
			      board_name(s), p->tty, fat_error(&p->vol));
		return r;
	}
	p->mounted = true;
	return 0;
}

static int
sd_open(struct flash_session *s)
{
	const struct catalog_sd_bus *sd = s->board ? catalog_sd_bus(s->board) : NULL;
	struct sdpath *p = xnew(struct sdpath);
	int r;

	s->priv = p;
	p->tty = s->dev->by_id[0] ? s->dev->by_id : s->dev->tty;
	if (!sd) {
		backend_error(s,
			      "%s: Klipper has no SD card definition for it (board_defs.py); "
			      "flash it through Katapult or its ROM bootloader",
			      board_name(s));
		return -ENOTSUP;
	}
	if (!p->tty[0]) {
		backend_error(s, "%s on port %s has no tty", board_name(s), s->dev->port);
		return -ENXIO; /* not -ENODEV: nothing left the bus */
	}
	r = connect_app(s, p, 2000);
	if (r < 0)
		return r;
	(void)str_copy(s->reported_mcu, sizeof(s->reported_mcu), klipper_client_mcu(p->kc));
	if (klipper_client_dict(p->kc)->version)
		(void)str_copy(s->reported_version, sizeof(s->reported_version),
			       klipper_client_dict(p->kc)->version);
	/* the stock bootloader programs the file at the board's application start */
	s->reported_app_start = s->board->app_start;
	s->reported_flash_end = s->board->mcu->flash_base + s->board->mcu->flash_size;
	if (strcasecmp(s->reported_mcu, s->board->mcu->name) != 0) {
		backend_error(s,
			      "%s on %s runs Klipper for %s, but the board is a %s (%s); "
			      "nothing was written",
			      board_name(s), p->tty, s->reported_mcu[0] ? s->reported_mcu : "?",
			      s->board->mcu->name, s->board->title);
		return -EINVAL;
	}
	r = setup_bus(s, p, sd);
	return r < 0 ? r : mount_card(s, p);
}

/* The flat bytes the bootloader programs at the app start. */
static int
flat_image(struct flash_session *s, const uint8_t **ret, size_t *ret_len)
{
	const struct image *img = s->img;

	if (img->has_load_address && img->load_address != s->board->app_start) {
		backend_error(s,
			      "the image is linked at 0x%08x, %s's SD bootloader programs at "
			      "0x%08x",
			      (unsigned)img->load_address, board_name(s),
			      (unsigned)s->board->app_start);
		return -EINVAL;
	}
	*ret = img->data;
	*ret_len = img->size;
	return 0;
}

static int
sd_write(struct flash_session *s)
{
	struct sdpath *p = s->priv;
	const uint8_t *data;
	size_t len;
	int orphans, r = flat_image(s, &data, &len);

	if (r < 0)
		return r;
	if (s->progress)
		s->progress(s->userdata, "write", 0, len);
	/* leftovers first: an orphaned long name can make the loader take an old entry, and
	 * fat_write refuses a name that exists */
	orphans = fat_clean_orphans(&p->vol);
	r = orphans < 0 ? orphans : fat_delete(&p->vol, SD_FILE);
	if (r == -ENOENT)
		r = 0;
	if (r == 0)
		r = fat_write(&p->vol, SD_FILE, data, len);
	p->wrote = r == 0;
	if (r == 0)
		r = fat_flush(&p->vol);
	if (r < 0) {
		backend_error(s, "writing %s to the SD card of %s on %s failed: %s", SD_FILE,
			      board_name(s), p->tty, fat_error(&p->vol));
		return r;
	}
	if (orphans > 0)
		(void)snprintf(s->note, sizeof(s->note),
			       "removed %d orphaned long-name entries from the SD card", orphans);
	s->bytes_written = len;
	if (s->progress)
		s->progress(s->userdata, "write", len, len);
	return 0;
}

struct collect {
	uint8_t *buf;
	size_t len, max;
};

static int
collect(void *ctx, const uint8_t *data, size_t len)
{
	struct collect *c = ctx;

	if (len > c->max - c->len)
		return -EFBIG;
	memcpy(c->buf + c->len, data, len);
	c->len += len;
	return 0;
}

/* SHA-256 of a file on the card equals that of data: 1, 0 when not, -ENOENT, -errno. */
static int
file_matches(struct sdpath *p, const char *name, const uint8_t *data, size_t len)
{
	struct fat_dirent e;
	struct collect c = {0};
	int r = fat_find(&p->vol, name, &e);

	if (r < 0)
		return r;
	if (e.size != len)
		return 0;
	c.max = len;
	c.buf = xmalloc(len ? len : 1);
	r = fat_read(&p->vol, &e, collect, &c);
	if (r >= 0) {
		char want[SHA256_HEX_LEN + 1], got[SHA256_HEX_LEN + 1];

		sha256_hex(data, len, want);
		sha256_hex(c.buf, c.len, got);
		r = c.len == len && strcmp(want, got) == 0;
	}
	free(c.buf);
	return r;
}

static int
sd_verify(struct flash_session *s)
{
	struct sdpath *p = s->priv;
	const uint8_t *data;
	size_t len;
	int r = flat_image(s, &data, &len);

	if (r < 0)
		return r;
	r = file_matches(p, SD_FILE, data, len);
	if (r == 1) {
		p->verified = true;
		s->bytes_verified = len;
		return 0;
	}
	backend_error(s, "%s read back from the SD card of %s on %s %s", SD_FILE, board_name(s),
		      p->tty, r == 0 ? "differs from the image (SHA-256)" : fat_error(&p->vol));
	return r < 0 ? r : -EIO;
}

/* "reset": the MCU restarts through its bootloader. The card is released first. */
static int
sd_leave(struct flash_session *s)
{
	struct sdpath *p = s->priv;
	int r;

	if (p->mounted)
		(void)fat_flush(&p->vol);
	p->mounted = false;
	sdcard_close(p->card);
	p->card = NULL;
	r = klipper_client_reset(p->kc);
	p->configured = false;
	s->reset = true;
	if (r < 0 && r != -ENODEV)
		backend_error(s, "%s on %s: the reset command failed: %s", board_name(s), p->tty,
			      strerror(-r));
	sleep_ms(15); /* spi_flash.py: the MCU needs the time to act on it */
	return r == -ENODEV ? 0 : r;
}

static void
sd_close(struct flash_session *s)
{
	struct sdpath *p = s->priv;

	if (!p)
		return;
	/* a file that is not known good must not be there when the board resets */
	if (p->mounted && p->wrote && !p->verified && fat_delete(&p->vol, SD_FILE) == 0)
		(void)fat_flush(&p->vol);
	sdcard_close(p->card);
	p->card = NULL;
	if (p->configured && p->kc) {
		/* a failed run leaves the MCU unconfigured for Klipper's host too */
		(void)klipper_client_reset(p->kc);
		s->reset = true;
	}
	klipper_client_close(p->kc);
	free(p);
	s->priv = NULL;
}

/* The running application is the image: its dictionary is the image's embedded one. -1
 * when the image has none (then the card decides). */
static int
dict_matches(struct sdpath *p, const uint8_t *data, size_t len)
{
	struct kdict kd;
	char *text = NULL;
	size_t text_len = 0, raw_len = 0;
	const char *raw = klipper_client_raw_dict(p->kc, &raw_len);
	int r;

	if (kdict_find(data, len, &kd) != 1 ||
	    kdict_inflate(data + kd.offset, len - kd.offset, &text, &text_len) < 0)
		return -1;
	r = raw && raw_len == text_len && memcmp(raw, text, text_len) == 0;
	free(text);
	return r;
}

static int
sd_check(struct flash_session *s)
{
	struct sdpath *p = s->priv;
	const struct catalog_sd_bus *sd = catalog_sd_bus(s->board);
	struct fat_dirent e;
	const uint8_t *data;
	size_t len;
	bool left;
	int runs, r = flat_image(s, &data, &len);

	if (r < 0)
		return r;
	left = fat_find(&p->vol, SD_FILE, &e) == 0;
	runs = dict_matches(p, data, len);
	if (runs < 0) /* no dictionary in the image: what the bootloader renamed decides */
		runs = file_matches(p, SD_CUR, data, len) == 1 && !left;
	if (!runs && left && sd && sd->sdio) {
		/* the card stays in SPI mode until its power is removed (protocols.md §4.4):
		 * firmware.bin stays for the bootloader to take after a power cycle */
		backend_error(s,
			      "%s on %s still runs its old firmware: its bootloader reads the SD "
			      "card over SDIO and cannot until the board is power-cycled. "
			      "firmware.bin is on the card; power-cycle the board to finish",
			      board_name(s), p->tty);
		return -EAGAIN;
	}
	if (left) {
		/* taken and not renamed (it re-flashes on every boot), or not taken at all: either
		 * way the file must not stay for the next reset to act on */
		r = fat_delete(&p->vol, SD_FILE);
		if (r == 0)
			r = fat_flush(&p->vol);
		if (r < 0) {
			backend_error(s, "cannot remove %s from the SD card of %s on %s: %s",
				      SD_FILE, board_name(s), p->tty, fat_error(&p->vol));
			return r;
		}
	}
	(void)fat_clean_orphans(&p->vol);
	(void)fat_flush(&p->vol);
	if (!runs) {
		backend_error(s,
			      "%s on %s did not take firmware.bin: it came back with its old "
			      "firmware (the bootloader could not read the card, or "
			      "ignored the file). skrflash removed firmware.bin; try another "
			      "card (FAT32, 32 GB or less) or flash through Katapult",
			      board_name(s), p->tty);
		return -ENOEXEC;
	}
	if (left)
		(void)snprintf(s->note, sizeof(s->note),
			       "the bootloader of %s did not rename firmware.bin to FIRMWARE.CUR "
			       "(it would re-flash it on every boot); skrflash removed it",
			       board_name(s));
	return 0;
}

const struct flash_backend backend_sd = {
    .name = "sd",
    .mode = DEVICE_MODE_KLIPPER_APP,
    .open = sd_open,
    .write = sd_write,
    .verify = sd_verify,
    .leave = sd_leave,
    .close = sd_close,
    .app_mode = true,
    .check = sd_check,
};
