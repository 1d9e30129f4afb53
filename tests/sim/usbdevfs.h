/* SPDX-License-Identifier: GPL-2.0-or-later */
/* usbdevfs: the usbdevfs ioctls of a simulated USB device that only uses EP0 (the STM32 ROM
 * DfuSe and the LPC176x DFU bootloader), served through a umockdev "handle-ioctl" handler.
 *
 * umockdev's recorded ioctl scripts cannot answer control IN transfers (research umockdev.md
 * §2), so each device model is a state machine behind this handler: every URB is completed
 * at once and handed to the model's control() callback; all timing lives in the model. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include <umockdev.h>

#define USBDEVFS_SIM_MAX_ATTACH 4

/* What a device model provides. control: one control transfer (setup packet, wLength bytes
 * of data in or out); the IN/OUT byte count, -EPIPE for a stall, -ENODEV when the device is
 * gone from the bus. set_alt: USBDEVFS_SETINTERFACE. pace: after every transfer on the bus
 * (the model's timing; may be NULL). unhandled: an ioctl left to umockdev (may be NULL). */
struct usbdevfs_sim_ops {
	int (*control)(void *dev, const uint8_t setup[8], uint8_t *data);
	int (*set_alt)(void *dev, unsigned iface, unsigned alt);
	void (*pace)(void *dev);
	void (*unhandled)(void *dev);
};

struct usbdevfs_sim {
	const struct usbdevfs_sim_ops *ops;
	void *dev;
	struct {
		char *devnode;
		UMockdevIoctlBase *handler;
	} att[USBDEVFS_SIM_MAX_ATTACH];
};

void usbdevfs_sim_init(struct usbdevfs_sim *u, const struct usbdevfs_sim_ops *ops, void *dev);
/* Serve the usbdevfs node `devnode` ("/dev/bus/usb/001/007") of a device already added to the
 * testbed; attach before the program under test opens it. 0 or -errno. */
int usbdevfs_sim_attach(struct usbdevfs_sim *u, UMockdevTestbed *tb, const char *devnode);
void usbdevfs_sim_detach(struct usbdevfs_sim *u, UMockdevTestbed *tb, const char *devnode);
/* Drop every handler (the device is being freed). */
void usbdevfs_sim_release(struct usbdevfs_sim *u);

/* A GET_DESCRIPTOR(STRING) answer: index 0 is the LANGID list (en-US), else `s` as UTF-16LE
 * (ASCII only); -EPIPE when s is NULL. At most wlength bytes go to data. */
int usbdevfs_sim_string(const char *s, unsigned index, uint16_t wlength, uint8_t *data);
