/* SPDX-License-Identifier: GPL-2.0-or-later */
/* rescue: install a USB-capable bootloader (Katapult) over a UART into the bootloader area
 * of a board whose stock bootloader cannot be used, through the MCU's ROM bootloader: NXP
 * LPC176x ISP (proto/lpcisp) or the STM32 USART bootloader (proto/an3155).
 *
 * Worker side, blocking. One call does the whole job on an open serial port: into the ROM
 * (GPIO lines, or the caller has asked the user to press the buttons), identify the part,
 * read the old bootloader region and hand it back (so it can be stored and restored), erase
 * only the sectors of the bootloader area, write, verify by readback, and leave the ROM.
 * The application above the bootloader area is never erased, so an installed Klipper keeps
 * booting. Facts: research round2-uart-rescue.md §1.11 (LPC) and §2.5, §4.3 (STM32). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "catalog.h"
#include "flash/gpio.h"

enum rescue_rom {
	RESCUE_ROM_LPCISP, /* LPC176x UART0 ISP: 8N1, XON/XOFF */
	RESCUE_ROM_AN3155, /* STM32 USART bootloader: 8E1 */
};

/* How a serial device looks to the rescue (from sysfs). */
enum rescue_uart_kind {
	RESCUE_UART_OTHER,     /* PL011, USB adaptor, pty: trusted to do what termios says */
	RESCUE_UART_MINI_UART, /* Raspberry Pi mini UART (8250 bcm2835-aux): no parity */
};

struct rescue_opts {
	enum rescue_rom rom;
	const char *tty; /* for messages */
	const struct catalog_mcu *mcu;
	uint32_t boot_size;   /* the bootloader area: board app_start - flash_base */
	unsigned crystal_khz; /* LPC: the board's crystal (12000 on SKR 1.x); 0 = 12000 */
	unsigned sync_tries;  /* 0 = 10 */
	unsigned timeout_ms;  /* per answer; 0 = 1000 (erase waits longer, scaled) */
	struct gpio *gpio;    /* NULL: manual mode, the user put the board into its ROM */
	bool no_parity_ok;    /* tests on a pty (which refuses parity) */
	const char *sysfs;    /* "/sys" unless a test says otherwise */
	void (*progress)(void *userdata, const char *step, uint64_t done, uint64_t total);
	void *userdata;
};

struct rescue_result {
	char error[512];    /* one sentence naming what, where and what to do */
	uint32_t part_id;   /* LPC "J" or STM32 product ID */
	uint32_t serial[4]; /* LPC "N" (zero for STM32) */
	uint8_t rom_version;
	uint8_t *old_boot; /* the bootloader area as read before writing (malloc'd) */
	size_t old_boot_len;
	bool old_vectors_unreadable; /* LPC: flash 0-63 read as the boot ROM's (remapped) */
	unsigned sync_attempts;
	uint32_t erased_sectors; /* a bit per sector index */
	uint64_t bytes_written;
	uint64_t bytes_verified;
};

/* Classify a serial device by its sysfs driver (sysfs root injectable, NULL = "/sys"). */
enum rescue_uart_kind rescue_uart_kind(const char *tty, const char *sysfs);
/* Open and configure a serial port for the ROM: raw, baud, 8N1 + XON/XOFF (LPC) or 8E1
 * (STM32; refused on a mini UART, and checked that PARENB stuck unless no_parity_ok).
 * Returns the fd or -errno with err set. */
int rescue_serial_open(const char *tty, unsigned baud, const struct rescue_opts *o, char *err,
		       size_t errlen);
/* Check a bootloader image before anything is touched: fits the area, initial SP inside the
 * MCU's RAM, reset handler inside the area, (LPC) no code-read-protection word, and for a
 * Katapult build: made for this MCU, starting the application where the board has it.
 * 0 or -EINVAL with err set. */
int rescue_check_image(const struct rescue_opts *o, const uint8_t *img, size_t len, char *err,
		       size_t errlen);
/* A Katapult build: its signature "CanBoot!" right before the reset handler. A Katapult
 * image must also name the MCU and use the board's application start (flash_base +
 * boot_size), which rescue_check_image checks. */
bool rescue_image_is_katapult(const struct catalog_mcu *mcu, const uint8_t *img, size_t len);
/* Sectors of the bootloader area as a bit mask of sector indices (catalog geometry).
 * -ERANGE when the area does not end on a sector boundary. */
int rescue_boot_sectors(const struct rescue_opts *o, uint32_t *ret_mask);

/* The whole install on an open port (see the top of this file). 0, or -errno with
 * res->error set; res->old_boot is filled as soon as it was read (also on a later failure). */
int rescue_install(int fd, const struct rescue_opts *o, const uint8_t *img, size_t len,
		   struct rescue_result *res);
void rescue_result_free(struct rescue_result *res);

struct image;
struct worker_rescue_plan;
/* A bootloader file (.bin, or .hex/.elf that must load at the flash base); err names the
 * file. 0 or -errno. */
int rescue_load_image(const char *file, const struct catalog_mcu *mcu, struct image *img, char *err,
		      size_t errlen);
/* The RESET and boot-mode lines by name (NULL/"" = not wired; none: *ret = NULL, the user's
 * hands), requested as the ROM needs them. 0 or -errno with err set. */
int rescue_open_lines(const char *reset_line, const char *boot_line, enum rescue_rom rom,
		      struct gpio **ret, char *err, size_t errlen);
/* `skrflashd --worker` with a rescue plan (flash/worker.h): check the image, the lines, the
 * port, rescue_install, the old area to p->old_path; progress, "note" (what the user must do
 * by hand) and one result line as JSON on out_fd. 0 or -errno. */
int rescue_worker_run(const struct worker_rescue_plan *p, int out_fd);

/* For the clients (rescue_lpc.c, rescue_stm32.c). */
void rescue_error(struct rescue_result *res, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Write all of buf; -errno. */
int rescue_write(int fd, const void *buf, size_t len);
/* Read up to len bytes within timeout_ms; returns the count (0 = timeout) or -errno. */
int rescue_read(int fd, void *buf, size_t len, unsigned timeout_ms);
void rescue_progress(const struct rescue_opts *o, const char *step, uint64_t done, uint64_t total);
/* Synchronise with the ROM: up to o->sync_tries (0 = 10) calls of once(ctx), which returns 0
 * when the ROM answered, -EAGAIN to try again, or -errno. With lines, every other try first
 * re-enters the ROM (gpio_enter_rom(), release_boot as there; RESET not wired: the user
 * resets by hand). Counts res->sync_attempts. Returns once's last answer (-EAGAIN: no answer
 * in all tries) or the lines' -errno. */
int rescue_sync(const struct rescue_opts *o, struct rescue_result *res, bool release_boot,
		int (*once)(void *ctx), void *ctx);
/* The end of an install that went well: progress "done", then, when RESET is wired, the
 * board out of the ROM into its new bootloader (gpio_run(); else the user resets it).
 * 0 or -errno. */
int rescue_finish(const struct rescue_opts *o);
