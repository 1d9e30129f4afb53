/* SPDX-License-Identifier: GPL-2.0-or-later */
/* backend: how skrflash talks to one kind of bootloader, behind one small const vtable.
 *
 * The engine owns the sequence (open -> check what the bootloader reports -> write ->
 * verify -> leave -> close); a backend only fills in those steps for its protocol and
 * never decides what comes next. Backends run in the worker process (or in
 * `skrflashctl flash --device`), never in the daemon's event loop: they block. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "catalog.h"
#include "device.h"
#include "image/image.h"

struct flash_session {
	/* set by the caller before open */
	const struct device *dev;	   /* the bootloader's enumeration (tty or usb node) */
	const struct catalog_board *board; /* may be NULL when unknown */
	const struct image *img;	   /* load_address + bytes to write */
	unsigned window;		   /* blocks in flight (Katapult); 0 = backend default */
	unsigned timeout_ms;		   /* per-transfer timeout; 0 = backend default */
	/* progress callback: step name ("erase", "write", "verify", ...), bytes done/total */
	void (*progress)(void *userdata, const char *step, uint64_t done, uint64_t total);
	void *userdata;

	/* filled in by open: what the bootloader itself reports */
	char reported_mcu[32];	     /* Katapult CONNECT MCU string, "" if unknown */
	char reported_version[64];   /* bootloader software version, "" if unknown */
	uint32_t reported_app_start; /* Katapult app start / DFU layout writable start */
	uint32_t reported_flash_end; /* end of writable flash per bootloader, 0 unknown */

	/* filled in by every step on failure: one human sentence naming what and where */
	char error[512];
	/* a warning worth passing on even when every step succeeded (app-mode backends: what
	 * the bootloader left behind and what was cleaned up), "" if none */
	char note[256];
	/* the backend restarted the board on purpose (an app-mode backend's reset): it leaves
	 * the bus and comes back by itself */
	bool reset;

	/* statistics for history and benchmarks */
	uint64_t bytes_written;
	uint64_t bytes_verified;
	uint32_t erases;
	uint32_t transfers; /* USB control transfers or serial frames */

	void *priv; /* owned by the backend between open and close */
};

struct flash_backend {
	const char *name;      /* "katapult", "dfu": the names of config methods */
	enum device_mode mode; /* the bootloader mode it drives */
	/* Claim the device and read what the bootloader reports; no writes. 0 or -errno. */
	int (*open)(struct flash_session *s);
	/* Write img (only what must change); 0 or -errno with s->error set. */
	int (*write)(struct flash_session *s);
	/* Read back and compare every written byte; 0, -EIO on mismatch (s->error says where). */
	int (*verify)(struct flash_session *s);
	/* Start the application; a device that vanishes while doing so is success. */
	int (*leave)(struct flash_session *s);
	/* Release everything; must accept a half-opened session. */
	void (*close)(struct flash_session *s);
	/* An app-mode backend (the SD card through the running Klipper firmware) writes while
	 * the application runs; its leave resets the board and the stock bootloader programs
	 * the image. It is never chosen by a device mode, only by name. */
	bool app_mode;
	/* App-mode backends, after the board restarted (open first): confirm that it runs
	 * s->img and clean up what the bootloader left (s->note says what). 0 when it does;
	 * -EAGAIN when the bootloader could not read the medium until the board's power is
	 * cycled; another -errno with s->error. */
	int (*check)(struct flash_session *s);
};

/* For backends: set s->error (one sentence naming what and where). */
void backend_error(struct flash_session *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Backend by config method name or by bootloader mode; NULL if none. */
const struct flash_backend *backend_find(const char *name);
const struct flash_backend *backend_for_mode(enum device_mode mode);
