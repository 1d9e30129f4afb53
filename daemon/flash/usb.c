/* SPDX-License-Identifier: GPL-2.0-or-later */
/* usb: shared libusb helpers of the USB backends (see usb.h). */
#include "flash/usb.h"

#include <errno.h>
#include <stdbool.h>
#include <string.h>

#include "flash/backend.h"
#include "util.h"

int
usb_errno(int r)
{
	switch (r) {
	case LIBUSB_ERROR_PIPE:
		return -EPIPE;
	case LIBUSB_ERROR_NO_DEVICE:
		return -ENODEV;
	case LIBUSB_ERROR_TIMEOUT:
		return -ETIMEDOUT;
	case LIBUSB_ERROR_ACCESS:
		return -EACCES;
	case LIBUSB_ERROR_BUSY:
		return -EBUSY;
	case LIBUSB_ERROR_NOT_FOUND:
		return -ENOENT;
	case LIBUSB_ERROR_NO_MEM:
		return -ENOMEM;
	case LIBUSB_ERROR_OVERFLOW:
		return -EOVERFLOW;
	default:
		return -EIO;
	}
}

/* "/dev/bus/usb/BBB/DDD", for a device whose uevent gave no BUSNUM/DEVNUM; libusb's bus
 * numbers and addresses are 8-bit. */
static bool
parse_usb_node(const char *node, unsigned *ret_bus, unsigned *ret_addr)
{
	static const char prefix[] = "/dev/bus/usb/";
	unsigned long long bus, addr;
	const char *p = node;

	if (strncmp(p, prefix, sizeof(prefix) - 1) != 0)
		return false;
	p = parse_decimal_to(p + sizeof(prefix) - 1, '/', 255, &bus);
	if (!p || !parse_decimal_to(p + 1, '\0', 255, &addr))
		return false;
	*ret_bus = (unsigned)bus;
	*ret_addr = (unsigned)addr;
	return true;
}

/* Enumerate and match bus/address: wrapping the open usbfs fd would skip enumeration, but
 * needs descriptor reads from the node that umockdev's testbed cannot serve. */
libusb_device *
usb_find(libusb_context *ctx, const struct device *dev)
{
	libusb_device **list, *found = NULL;
	unsigned bus = dev->busnum, addr = dev->devnum;
	ssize_t n;

	if ((!bus || !addr) && !parse_usb_node(dev->usb_node, &bus, &addr))
		return NULL;
	n = libusb_get_device_list(ctx, &list);
	if (n < 0)
		return NULL;
	for (ssize_t i = 0; i < n; i++)
		if (libusb_get_bus_number(list[i]) == bus &&
		    libusb_get_device_address(list[i]) == addr) {
			found = libusb_ref_device(list[i]);
			break;
		}
	libusb_free_device_list(list, 1);
	return found;
}

int
usb_open(struct flash_session *s, const char *what, libusb_context **ret_ctx,
	 libusb_device_handle **ret_h, struct libusb_device_descriptor *ret_dd,
	 struct libusb_config_descriptor **ret_cfg)
{
	libusb_device *dev;
	int r = libusb_init(ret_ctx);

	if (r < 0) {
		backend_error(s, "libusb: %s", libusb_strerror(r));
		return usb_errno(r);
	}
	dev = usb_find(*ret_ctx, s->dev);
	if (!dev) {
		backend_error(s, "%s device %s (port %s) not found", what, s->dev->usb_node,
			      s->dev->port);
		return -ENODEV;
	}
	r = libusb_open(dev, ret_h);
	if (r == 0 && ret_dd)
		r = libusb_get_device_descriptor(dev, ret_dd);
	if (r == 0)
		r = libusb_get_active_config_descriptor(dev, ret_cfg);
	libusb_unref_device(dev);
	if (r != 0) { /* libusb: 0 or a negative LIBUSB_ERROR */
		backend_error(s, "cannot open %s: %s", s->dev->usb_node, libusb_strerror(r));
		return usb_errno(r);
	}
	return 0;
}

void
usb_close(libusb_context *ctx, libusb_device_handle *h, int iface, bool release)
{
	if (h) {
		if (release)
			(void)libusb_release_interface(h, iface);
		libusb_close(h);
	}
	if (ctx)
		libusb_exit(ctx);
}
