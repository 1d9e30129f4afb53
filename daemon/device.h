/* SPDX-License-Identifier: GPL-2.0-or-later */
/* device: what one USB device on the bus is, as plain data (no libudev types).
 *
 * A device is one enumeration of a board in one mode. The same physical board shows up as
 * several devices over time (Klipper app, Katapult, ROM DFU); the board registry ties them
 * together by USB port path. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum device_mode {
	DEVICE_MODE_NONE, /* not an SKR-family identity: ignored */
	DEVICE_MODE_KLIPPER_APP,
	DEVICE_MODE_KATAPULT,
	DEVICE_MODE_STM32_ROM_DFU,
	DEVICE_MODE_LPC_DFU,
	DEVICE_MODE_RP2040_BOOTSEL,
	DEVICE_MODE_MARLIN_LPC,
	DEVICE_MODE_MARLIN_STM32,
	_DEVICE_MODE_MAX,
};

#define DEVICE_STR 128
#define DEVICE_PATH 256

struct device {
	char syspath[DEVICE_PATH]; /* /sys/devices/... of the usb_device */
	char port[64];		   /* USB port path = usb_device sysname, e.g. "1-1.2" */
	char id_path[DEVICE_STR];  /* udev ID_PATH of the usb_device, may be empty */
	uint16_t vid;
	uint16_t pid;
	enum device_mode mode;
	char serial[DEVICE_STR];
	char manufacturer[DEVICE_STR];
	char product[DEVICE_STR];   /* Klipper and Katapult: the CONFIG_MCU string */
	char usb_node[DEVICE_PATH]; /* /dev/bus/usb/BBB/DDD (DEVNAME), may be empty */
	char tty[DEVICE_PATH];	    /* /dev/ttyACMn (DEVNAME of the tty child), may be empty */
	char by_id[DEVICE_PATH];    /* /dev/serial/by-id/... link of the tty, may be empty */
	char block[DEVICE_PATH];    /* /dev/sdX of a mass-storage child, may be empty */
	unsigned busnum;
	unsigned devnum;
};

/* Mode of a USB identity; manufacturer may be NULL. Pure. */
enum device_mode device_mode_from_ids(uint16_t vid, uint16_t pid, const char *manufacturer);
const char *device_mode_to_string(enum device_mode mode);
/* Inverse of device_mode_to_string; -EINVAL for an unknown name. */
int device_mode_from_string(const char *s, enum device_mode *ret);
/* True for modes in which a bootloader, not the application, is running. */
bool device_mode_is_bootloader(enum device_mode mode);
/* Copy src into a fixed field, truncating; returns -ENAMETOOLONG if truncated. */
int device_set_field(char *field, size_t size, const char *src);
#define DEVICE_SET(dev, field, src) device_set_field((dev)->field, sizeof((dev)->field), (src))
