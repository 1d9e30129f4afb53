/* SPDX-License-Identifier: GPL-2.0-or-later */
/* usbdfu: the USB DFU 1.1 class transport both DFU backends share (ST's ROM DfuSe in
 * flash/dfuse, the LPC176x DFU bootloader in flash/lpcdfu): the device opened and its DFU
 * interface claimed, class requests to that interface (DFU 1.1 §3, protocols.md §3.2), the
 * leave, and the release. What the requests mean is each backend's. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include <libusb.h>

#include "flash/backend.h"
#include "proto/dfu.h"

struct usbdfu {
	libusb_context *ctx;
	libusb_device_handle *h;
	bool claimed;
	bool left; /* the device jumped to its application: nobody answers any more */
	uint16_t iface;
	unsigned timeout_ms; /* per control transfer */
};

/* Open s->dev (usb_open(): `what` names it in s->error); 0 or -errno. */
int usbdfu_open(struct usbdfu *u, struct flash_session *s, const char *what, unsigned timeout_ms,
		struct libusb_device_descriptor *ret_dd, struct libusb_config_descriptor **ret_cfg);
/* Claim u->iface (the kernel's driver detached) and select its alt setting; 0 or -errno. */
int usbdfu_claim(struct usbdfu *u, struct flash_session *s, uint8_t alt);
/* One class request to the DFU interface; the byte count or -errno. */
int usbdfu_request(struct usbdfu *u, struct flash_session *s, bool in, enum dfu_request req,
		   uint16_t value, uint8_t *data, uint16_t len);
/* GETSTATUS, decoded; 0 or -errno. */
int usbdfu_getstatus(struct usbdfu *u, struct flash_session *s, struct dfu_status_reply *st);
/* Sleep the bwPollTimeout a status asks for before the next GETSTATUS. */
void usbdfu_poll_wait(const struct dfu_status_reply *st);
/* The outcome r of the requests that start the application: a device that vanished, stalled
 * or failed the transfer while doing so has left too (0). Sets u->left; returns r or 0. */
int usbdfu_leaving(struct usbdfu *u, int r);
/* Release the interface (unless the device left), close; accepts a half-opened one. */
void usbdfu_close(struct usbdfu *u);
