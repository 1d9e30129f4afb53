/* SPDX-License-Identifier: GPL-2.0-or-later */
/* validate: decide whether a firmware file may be written to a given board.
 *
 * A wrong image does not fail loudly: a build for the wrong bootloader offset or the wrong
 * MCU variant makes the board boot-loop or lock up without USB (protocols.md §7.4), and on
 * SD-only boards recovery needs a card reader or a debugger. So every file is checked
 * against the target before it is queued, and the verdict says what to rebuild. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "catalog.h"
#include "config.h"
#include "image/image.h"

struct validate_target {
	const struct catalog_board *board; /* required */
	uint32_t app_start;		   /* 0 = board's; else profile override or bootloader's */
	enum config_interface interface;   /* expected */
	const char *reported_mcu;	   /* MCU string reported by the bootloader, may be NULL */
	const char *file_name;		   /* for messages ("klipper.bin"), may be NULL */
};

#define VALIDATE_MAX_REASONS 8

struct verdict {
	bool accepted;
	enum image_format format;
	uint32_t load_address; /* where the image will be written */
	size_t size;
	char mcu[32];			     /* from the Klipper dictionary, "" if none */
	char interface[16];		     /* "usb", "serial", "can", "" if unknown */
	char version[128];		     /* Klipper version, "" if none */
	char *reasons[VALIDATE_MAX_REASONS]; /* malloc'd; why it was refused, what to do */
	size_t n_reasons;
};

/* Pure: parse + check. Returns 0 with *ret filled (accepted or not; release it with
 * verdict_done()), -EINVAL if t has no board. */
int validate_image(const uint8_t *buf, size_t len, const struct validate_target *t,
		   struct verdict *ret);
/* Same checks; when accepted also returns the image to flash in *ret_image, with
 * has_load_address set and load_address = where it must be written (the app start for a
 * .bin). Returns 1 accepted (*ret_image filled), 0 refused (*ret_image zeroed), -errno. */
int validate_image_for_flash(const uint8_t *buf, size_t len, const struct validate_target *t,
			     struct verdict *ret_verdict, struct image *ret_image);
/* Frees the reasons; accepts an already released verdict. */
void verdict_done(struct verdict *v);
/* The verdict as a json-c object string (malloc'd):
 * {"accepted", "format", "load_address": "0x08008000", "size", "mcu", "interface",
 *  "version", "reasons": [...]} */
char *verdict_to_json(const struct verdict *v);

/* `skrflashctl validate [--board NAME | --profile NAME] [--config FILE] [--json] FILE`;
 * argv[0] is "validate". Returns the exit code: 0 accepted, 1 refused (verdict on stdout),
 * 2 usage error or unreadable file. */
int validate_command(int argc, char **argv);
