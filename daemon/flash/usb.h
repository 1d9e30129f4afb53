/* SPDX-License-Identifier: GPL-2.0-or-later */
/* usb: the libusb plumbing every USB backend needs (ROM DfuSe, PICOBOOT): find the
 * enumeration the daemon saw, open it, and speak -errno. */
#pragma once

#include <stdbool.h>

#include <libusb.h>

#include "device.h"

struct flash_session;

/* A LIBUSB_ERROR_* as -errno. */
int usb_errno(int libusb_error);
/* The libusb device at dev's bus number and address (from the uevent, or parsed from its
 * /dev/bus/usb/BBB/DDD node), referenced; NULL when it is not on the bus. */
libusb_device *usb_find(libusb_context *ctx, const struct device *dev);
/* libusb_init, then open the enumeration of s->dev; its device descriptor in *ret_dd (when
 * not NULL) and its active configuration in *ret_cfg (libusb_free_config_descriptor()).
 * 0, or -errno with s->error naming the device; `what` says which ("ROM DFU" for "ROM DFU
 * device ... not found"). *ret_ctx and *ret_h hold what was opened: usb_close() them. */
int usb_open(struct flash_session *s, const char *what, libusb_context **ret_ctx,
	     libusb_device_handle **ret_h, struct libusb_device_descriptor *ret_dd,
	     struct libusb_config_descriptor **ret_cfg);
/* Release iface when `release` (not after the device left for its application: nobody
 * answers then), close the handle and exit the context; each may be NULL. */
void usb_close(libusb_context *ctx, libusb_device_handle *h, int iface, bool release);
