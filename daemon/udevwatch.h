/* SPDX-License-Identifier: GPL-2.0-or-later */
/* udevwatch: USB devices in SKR-family modes, from libudev, hotplug and coldplug alike.
 *
 * The monitor (usb, tty, block) is armed before the coldplug enumeration, and both feed the
 * same handler, so a device that appears during start-up is seen at least once; the board
 * registry makes repeated sightings harmless. Device nodes come from DEVNAME and DEVLINKS,
 * never from realpath(). */
#pragma once

#include <systemd/sd-event.h>

#include "device.h"

enum udevwatch_action {
	UDEVWATCH_ADD,	  /* a usb_device in a known mode appeared (or was bound again) */
	UDEVWATCH_CHANGE, /* its tty or block child came or went */
	UDEVWATCH_REMOVE, /* the usb_device is gone: only syspath and port are set */
};

typedef void (*udevwatch_handler)(void *userdata, enum udevwatch_action action,
				  const struct device *dev);

struct udevwatch;

/* Arm the monitor on `loop`, then enumerate what is already there (calling h for each). */
int udevwatch_start(sd_event *loop, udevwatch_handler h, void *userdata, struct udevwatch **ret);
struct udevwatch *udevwatch_free(struct udevwatch *w); /* accepts NULL, returns NULL */
/* Events were lost (the monitor socket overflowed, ENOBUFS - done by the monitor itself):
 * enumerate again, report every device as added and the ones that vanished meanwhile as
 * removed, then call the rescanned callback. */
void udevwatch_rescan(struct udevwatch *w);
unsigned udevwatch_rescans(const struct udevwatch *w);
void udevwatch_set_rescanned(struct udevwatch *w, void (*fn)(void *userdata), void *userdata);

struct udev;
/* The usb_device at a port path ("1-1.2") as struct device, in any mode (DEVICE_MODE_NONE
 * included), with its tty and block children; 0 or -ENODEV. For one-shot use outside the
 * daemon's loop. */
int udevwatch_device_at_port(struct udev *udev, const char *port, struct device *ret);
