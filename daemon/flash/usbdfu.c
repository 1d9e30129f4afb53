/* SPDX-License-Identifier: GPL-2.0-or-later */
/* usbdfu: the DFU 1.1 class transport of the DFU backends (see usbdfu.h). */
#include "flash/usbdfu.h"

#include <errno.h>
#include <time.h>

#include "flash/usb.h"

int
usbdfu_open(struct usbdfu *u, struct flash_session *s, const char *what, unsigned timeout_ms,
	    struct libusb_device_descriptor *ret_dd, struct libusb_config_descriptor **ret_cfg)
{
	u->timeout_ms = timeout_ms;
	return usb_open(s, what, &u->ctx, &u->h, ret_dd, ret_cfg);
}

int
usbdfu_claim(struct usbdfu *u, struct flash_session *s, uint8_t alt)
{
	int r;

	(void)libusb_set_auto_detach_kernel_driver(u->h, 1);
	r = libusb_claim_interface(u->h, u->iface);
	if (r == 0) {
		u->claimed = true;
		r = libusb_set_interface_alt_setting(u->h, u->iface, alt);
	}
	if (r < 0) {
		backend_error(s, "cannot claim the DFU interface of %s: %s", s->dev->usb_node,
			      libusb_strerror(r));
		return usb_errno(r);
	}
	return 0;
}

int
usbdfu_request(struct usbdfu *u, struct flash_session *s, bool in, enum dfu_request req,
	       uint16_t value, uint8_t *data, uint16_t len)
{
	int r =
	    libusb_control_transfer(u->h, /* bmRequestType */ in ? DFU_REQTYPE_IN : DFU_REQTYPE_OUT,
				    /* bRequest */ (uint8_t)req, /* wValue */ value,
				    /* wIndex */ u->iface, data, len, u->timeout_ms);

	s->transfers++;
	return r < 0 ? usb_errno(r) : r;
}

int
usbdfu_getstatus(struct usbdfu *u, struct flash_session *s, struct dfu_status_reply *st)
{
	uint8_t buf[DFU_STATUS_LEN];
	int r = usbdfu_request(u, s, true, DFU_REQ_GETSTATUS, 0, buf, sizeof(buf));

	return r < 0 ? r : dfu_status_decode(buf, (size_t)r, st);
}

void
usbdfu_poll_wait(const struct dfu_status_reply *st)
{
	uint32_t ms = st->poll_timeout_ms;
	struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

int
usbdfu_leaving(struct usbdfu *u, int r)
{
	if (r == -EIO || r == -ENODEV || r == -EPIPE)
		r = 0;
	u->left = r >= 0;
	return r;
}

void
usbdfu_close(struct usbdfu *u)
{
	/* after the leave nobody answers on the interface any more */
	usb_close(u->ctx, u->h, u->iface, u->claimed && !u->left);
	u->ctx = NULL;
	u->h = NULL;
}
