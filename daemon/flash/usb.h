/* SPDX-License-Identifier: GPL-2.0-or-later */
/* usb: the libusb plumbing every USB backend needs (ROM DfuSe, PICOBOOT): find the
 * enumeration the daemon saw, open it, and speak -errno. */
#pragma once

#include <libusb.h>

#include "device.h"

/* A LIBUSB_ERROR_* as -errno. */
int usb_errno(int libusb_error);
/* The libusb device at dev's bus number and address (from the uevent, or parsed from its
 * /dev/bus/usb/BBB/DDD node), referenced; NULL when it is not on the bus. */
libusb_device *usb_find(libusb_context *ctx, const struct device *dev);
