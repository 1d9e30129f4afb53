/* SPDX-License-Identifier: GPL-2.0-or-later */
/* usbdevfs: the usbdevfs ioctls of a simulated USB device (EP0 only: the STM32 ROM DfuSe and
 * the LPC176x DFU bootloader; EP0 and bulk: the RP2040 PICOBOOT interface), served through a
 * umockdev "handle-ioctl" handler.
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
 * gone from the bus. set_alt: USBDEVFS_SETINTERFACE (NULL: left to umockdev). pace: after
 * every transfer on the bus (the model's timing; may be NULL). unhandled: an ioctl left to
 * umockdev (may be NULL). A device with bulk endpoints also has bulk: one bulk URB on
 * endpoint `ep` (returns as control), clear_halt: USBDEVFS_CLEAR_HALT of `ep`, and claim:
 * USBDEVFS_CLAIMINTERFACE, 0 or -errno (each NULL for an EP0-only device: bulk URBs fail
 * with EINVAL, CLEAR_HALT and claiming succeed). */
struct usbdevfs_sim_ops {
	int (*control)(void *dev, const uint8_t setup[8], uint8_t *data);
	int (*set_alt)(void *dev, unsigned iface, unsigned alt);
	void (*pace)(void *dev);
	void (*unhandled)(void *dev);
	int (*bulk)(void *dev, uint8_t ep, uint8_t *buf, size_t len);
	void (*clear_halt)(void *dev, unsigned ep);
	int (*claim)(void *dev);
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

/* A setup packet's fields (USB 2.0 §9.3). */
struct usbdevfs_setup {
	uint8_t type, req;
	uint16_t value, index, length;
};

struct usbdevfs_setup usbdevfs_sim_setup(const uint8_t setup[8]);
/* A device's descriptors `desc` (the 18-byte device descriptor, then its configuration with
 * all it holds): at most len bytes of them into buf (if not NULL); their whole length. */
size_t usbdevfs_sim_descriptors(const uint8_t *desc, size_t desc_len, uint8_t *buf, size_t len);
/* A standard GET_DESCRIPTOR answer from those descriptors (wValue: type and index): DEVICE,
 * CONFIGURATION, or STRING with `string` as the text of that index (usbdevfs_sim_string);
 * -EPIPE for any other type. At most wlength bytes go to data. */
int usbdevfs_sim_get_descriptor(const uint8_t *desc, size_t desc_len, const char *string,
				uint16_t wvalue, uint16_t wlength, uint8_t *data);
/* A GET_DESCRIPTOR(STRING) answer: index 0 is the LANGID list (en-US), else `s` as UTF-16LE
 * (ASCII only); -EPIPE when s is NULL. At most wlength bytes go to data. */
int usbdevfs_sim_string(const char *s, unsigned index, uint16_t wlength, uint8_t *data);
