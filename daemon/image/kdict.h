/* SPDX-License-Identifier: GPL-2.0-or-later */
/* kdict: the Klipper data dictionary embedded in a firmware image.
 *
 * Klipper links a zlib-compressed JSON "data dictionary" into every build; it names the MCU,
 * the clock and the constants of the transport the build talks over. Reading it tells what
 * a file was built for before it is written to a board. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto/klipper.h"

enum kdict_interface {
	KDICT_INTERFACE_UNKNOWN,
	KDICT_INTERFACE_USB,
	KDICT_INTERFACE_SERIAL,
	KDICT_INTERFACE_CAN,
	_KDICT_INTERFACE_MAX,
};

struct kdict {
	char mcu[32];	     /* config.MCU, e.g. "stm32f407xx" */
	char version[128];   /* "version", e.g. "v0.12.0-123-gabcdef" */
	uint32_t clock_freq; /* config.CLOCK_FREQ in Hz, 0 if absent */
	enum kdict_interface interface;
	bool can_bridge; /* a "USB to CAN bus bridge" build (config.CANBUS_BRIDGE) */
	size_t offset;	 /* where the zlib stream starts in the buffer searched */
};

/* Pure. Scan buf for a zlib stream that inflates to a Klipper dictionary. Returns 1 and fills
 * *ret when found, 0 when there is none, -EBADMSG when a Klipper dictionary is there but
 * lacks config.MCU or has fields of the wrong type. */
int kdict_find(const uint8_t *buf, size_t len, struct kdict *ret);
/* "unknown", "usb", "serial", "can". */
const char *kdict_interface_to_string(enum kdict_interface i);

/* Pure. Inflate a zlib-compressed dictionary (the concatenated identify_response data, or
 * the stream embedded in an image): 0 and a NUL-terminated malloc'd text in *ret (length in
 * *ret_len), -EBADMSG when it is not one complete zlib stream, -E2BIG past 2 MiB. */
int kdict_inflate(const uint8_t *z, size_t len, char **ret, size_t *ret_len);
/* Pure. Fill a klipper_dict (klipper_dict_init first) from the JSON text of a dictionary
 * (msgproto.py process_identify): "commands", "responses", "output" (format -> id),
 * "enumerations" (name -> {symbol: value | [first, count]}), "config" constants and
 * "version". 0, -EBADMSG (not a Klipper dictionary, or a bad entry), -ENOMEM. */
int kdict_to_klipper(const char *text, size_t len, struct klipper_dict *ret);
