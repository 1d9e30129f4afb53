/* SPDX-License-Identifier: GPL-2.0-or-later */
/* usbdevfs: usbdevfs ioctls of a simulated device (EP0, and bulk endpoints if it has them) over
 * umockdev (see usbdevfs.h). Runs on umockdev's worker thread; the device model does its own
 * locking. */
#include "usbdevfs.h"

#include <errno.h>
#include <linux/usbdevice_fs.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#include "util.h"

#define USB_DT_DEVICE 1
#define USB_DT_CONFIG 2
#define USB_DT_STRING 3

void
usbdevfs_sim_init(struct usbdevfs_sim *u, const struct usbdevfs_sim_ops *ops, void *dev)
{
	memset(u, 0, sizeof(*u));
	u->ops = ops;
	u->dev = dev;
}

int
usbdevfs_sim_string(const char *s, unsigned index, uint16_t wlength, uint8_t *data)
{
	uint8_t buf[256];
	size_t n = 2;

	if (index == 0) {
		buf[2] = 0x09; /* LANGID en-US */
		buf[3] = 0x04;
		n = 4;
	} else {
		if (!s)
			return -EPIPE;
		for (; *s && n + 2 <= 254; s++) {
			buf[n++] = (uint8_t)*s;
			buf[n++] = 0;
		}
	}
	buf[0] = (uint8_t)n;
	buf[1] = USB_DT_STRING;
	if (n > wlength)
		n = wlength;
	memcpy(data, buf, n);
	return (int)n;
}

struct usbdevfs_setup
usbdevfs_sim_setup(const uint8_t setup[8])
{
	return (struct usbdevfs_setup){.type = setup[0],
				       .req = setup[1],
				       .value = (uint16_t)(setup[2] | setup[3] << 8),
				       .index = (uint16_t)(setup[4] | setup[5] << 8),
				       .length = (uint16_t)(setup[6] | setup[7] << 8)};
}

size_t
usbdevfs_sim_descriptors(const uint8_t *desc, size_t desc_len, uint8_t *buf, size_t len)
{
	if (buf)
		memcpy(buf, desc, len < desc_len ? len : desc_len);
	return desc_len;
}

int
usbdevfs_sim_get_descriptor(const uint8_t *desc, size_t desc_len, const char *string,
			    uint16_t wvalue, uint16_t wlength, uint8_t *data)
{
	size_t n;

	switch (wvalue >> 8) {
	case USB_DT_DEVICE:
		n = wlength < 18 ? wlength : 18;
		memcpy(data, desc, n);
		return (int)n;
	case USB_DT_CONFIG:
		n = desc_len - 18 < wlength ? desc_len - 18 : wlength;
		memcpy(data, desc + 18, n);
		return (int)n;
	case USB_DT_STRING:
		return usbdevfs_sim_string(string, wvalue & 0xff, wlength, data);
	default:
		return -EPIPE;
	}
}

static void
pace(struct usbdevfs_sim *u)
{
	if (u->ops->pace)
		u->ops->pace(u->dev);
}

/* Finished URBs of one client, reaped in order by REAPURB/REAPURBNDELAY. */
static GQueue *
client_queue(UMockdevIoctlClient *c)
{
	GQueue *q = g_object_get_data(G_OBJECT(c), "usbdevfs-sim-urbs");

	if (!q) {
		q = g_queue_new();
		g_object_set_data_full(G_OBJECT(c), "usbdevfs-sim-urbs", q,
				       (GDestroyNotify)g_queue_free);
	}
	return q;
}

/* One URB's transfer through the model: the byte count, or -errno (the URB's status). */
static int
urb_transfer(struct usbdevfs_sim *u, const struct usbdevfs_urb *urb, uint8_t *buf)
{
	int r;

	if (urb->type == USBDEVFS_URB_TYPE_CONTROL)
		r = u->ops->control(u->dev, buf, buf + 8);
	else
		r = u->ops->bulk(u->dev, urb->endpoint, buf, (size_t)urb->buffer_length);
	pace(u);
	return r;
}

static bool
submit_urb(struct usbdevfs_sim *u, UMockdevIoctlClient *c, UMockdevIoctlData *arg)
{
	UMockdevIoctlData *ud, *bd = NULL;
	struct usbdevfs_urb *urb;
	uint8_t empty[8] = {0};
	int r;

	ud = umockdev_ioctl_data_resolve(arg, 0, sizeof(struct usbdevfs_urb), NULL);
	if (!ud)
		return false;
	urb = (struct usbdevfs_urb *)(void *)ud->data;
	if (!(urb->type == USBDEVFS_URB_TYPE_CONTROL && urb->buffer_length >= 8) &&
	    !(urb->type == USBDEVFS_URB_TYPE_BULK && u->ops->bulk)) {
		g_object_unref(ud);
		umockdev_ioctl_client_complete(c, -1, EINVAL); /* no such endpoint or setup */
		return true;
	}
	if (urb->buffer_length > 0) {
		bd = umockdev_ioctl_data_resolve(ud, G_STRUCT_OFFSET(struct usbdevfs_urb, buffer),
						 (gsize)urb->buffer_length, NULL);
		if (!bd) {
			g_object_unref(ud);
			return false;
		}
	}
	r = urb_transfer(u, urb, bd ? bd->data : empty);
	if (bd)
		g_object_unref(bd);
	if (r == -ENODEV) {
		/* gone from the bus: the kernel refuses new URBs */
		g_object_unref(ud);
		umockdev_ioctl_client_complete(c, -1, ENODEV);
		return true;
	}
	urb->status = r < 0 ? r : 0;
	urb->actual_length = r < 0 ? 0 : r;
	/* completed now; never leave URBs pending (libusb would spin on REAPURBNDELAY) */
	g_queue_push_tail(client_queue(c), GSIZE_TO_POINTER((gsize)ud->client_addr));
	umockdev_ioctl_client_complete(c, 0, 0);
	g_object_unref(ud);
	return true;
}

static bool
sync_control(struct usbdevfs_sim *u, UMockdevIoctlClient *c, UMockdevIoctlData *arg)
{
	UMockdevIoctlData *cd, *dd = NULL;
	struct usbdevfs_ctrltransfer *ct;
	uint8_t setup[8], scratch[8] = {0};
	int r;

	cd = umockdev_ioctl_data_resolve(arg, 0, sizeof(struct usbdevfs_ctrltransfer), NULL);
	if (!cd)
		return false;
	ct = (struct usbdevfs_ctrltransfer *)(void *)cd->data;
	setup[0] = ct->bRequestType;
	setup[1] = ct->bRequest;
	setup[2] = (uint8_t)ct->wValue;
	setup[3] = (uint8_t)(ct->wValue >> 8);
	setup[4] = (uint8_t)ct->wIndex;
	setup[5] = (uint8_t)(ct->wIndex >> 8);
	setup[6] = (uint8_t)ct->wLength;
	setup[7] = (uint8_t)(ct->wLength >> 8);
	if (ct->wLength) {
		dd = umockdev_ioctl_data_resolve(
		    cd, G_STRUCT_OFFSET(struct usbdevfs_ctrltransfer, data), ct->wLength, NULL);
		if (!dd) {
			g_object_unref(cd);
			return false;
		}
	}
	r = u->ops->control(u->dev, setup, dd ? dd->data : scratch);
	pace(u);
	if (dd)
		g_object_unref(dd);
	g_object_unref(cd);
	umockdev_ioctl_client_complete(c, r < 0 ? -1 : r, r < 0 ? -r : 0);
	return true;
}

static gboolean
reap_urb(UMockdevIoctlClient *c, UMockdevIoctlData *arg)
{
	GQueue *q = client_queue(c);
	UMockdevIoctlData *x;

	if (g_queue_is_empty(q)) {
		umockdev_ioctl_client_complete(c, -1, EAGAIN);
		return TRUE;
	}
	x = umockdev_ioctl_data_resolve(arg, 0, sizeof(gpointer), NULL);
	if (!x)
		return FALSE;
	*(gsize *)(void *)x->data = GPOINTER_TO_SIZE(g_queue_pop_head(q));
	g_object_unref(x);
	umockdev_ioctl_client_complete(c, 0, 0);
	return TRUE;
}

static gboolean
get_capabilities(UMockdevIoctlClient *c, UMockdevIoctlData *arg)
{
	UMockdevIoctlData *x = umockdev_ioctl_data_resolve(arg, 0, sizeof(uint32_t), NULL);

	if (!x)
		return FALSE;
	*(uint32_t *)(void *)x->data = USBDEVFS_CAP_ZERO_PACKET | USBDEVFS_CAP_BULK_CONTINUATION |
				       USBDEVFS_CAP_NO_PACKET_SIZE_LIM;
	g_object_unref(x);
	umockdev_ioctl_client_complete(c, 0, 0);
	return TRUE;
}

static gboolean
set_interface(struct usbdevfs_sim *u, UMockdevIoctlClient *c, UMockdevIoctlData *arg)
{
	struct usbdevfs_setinterface si;
	UMockdevIoctlData *x = umockdev_ioctl_data_resolve(arg, 0, sizeof(si), NULL);
	int r;

	if (!x)
		return FALSE;
	memcpy(&si, x->data, sizeof(si));
	g_object_unref(x);
	r = u->ops->set_alt(u->dev, si.interface, si.altsetting);
	umockdev_ioctl_client_complete(c, r < 0 ? -1 : 0, r < 0 ? -r : 0);
	return TRUE;
}

/* CLEAR_HALT of an endpoint the model keeps halt state for (a bulk device) */
static gboolean
clear_halt(struct usbdevfs_sim *u, UMockdevIoctlClient *c, UMockdevIoctlData *arg)
{
	if (u->ops->clear_halt) {
		UMockdevIoctlData *x =
		    umockdev_ioctl_data_resolve(arg, 0, sizeof(unsigned int), NULL);

		if (!x)
			return FALSE;
		u->ops->clear_halt(u->dev, *(unsigned int *)(void *)x->data);
		g_object_unref(x);
	}
	umockdev_ioctl_client_complete(c, 0, 0);
	return TRUE;
}

static gboolean
claim_interface(struct usbdevfs_sim *u, UMockdevIoctlClient *c)
{
	int r = u->ops->claim ? u->ops->claim(u->dev) : 0;

	umockdev_ioctl_client_complete(c, r < 0 ? -1 : 0, r < 0 ? -r : 0);
	return TRUE;
}

static gboolean
on_ioctl(UMockdevIoctlBase *h, UMockdevIoctlClient *c, gpointer user)
{
	struct usbdevfs_sim *u = user;
	unsigned long req = umockdev_ioctl_client_get_request(c);
	UMockdevIoctlData *arg = umockdev_ioctl_client_get_arg(c);

	(void)h;
	switch (req) {
	case USBDEVFS_SUBMITURB:
		return submit_urb(u, c, arg);
	case USBDEVFS_REAPURB:
	case USBDEVFS_REAPURBNDELAY:
		return reap_urb(c, arg);
	case USBDEVFS_CONTROL:
		return sync_control(u, c, arg);
	case USBDEVFS_GET_CAPABILITIES:
		return get_capabilities(c, arg);
	case USBDEVFS_SETINTERFACE:
		if (!u->ops->set_alt)
			return FALSE; /* umockdev's stateless fallback */
		return set_interface(u, c, arg);
	case USBDEVFS_CLEAR_HALT:
		return clear_halt(u, c, arg);
	case USBDEVFS_CLAIMINTERFACE:
		return claim_interface(u, c);
	case USBDEVFS_RELEASEINTERFACE:
	case USBDEVFS_RESET:
	case USBDEVFS_DISCONNECT_CLAIM:
		umockdev_ioctl_client_complete(c, 0, 0);
		return TRUE;
	case USBDEVFS_GETDRIVER:
		umockdev_ioctl_client_complete(c, -1, ENODATA); /* no kernel driver bound */
		return TRUE;
	case USBDEVFS_DISCARDURB:
		umockdev_ioctl_client_complete(c, -1, EINVAL); /* every URB completed already */
		return TRUE;
	default:
		if (u->ops->unhandled)
			u->ops->unhandled(u->dev);
		return FALSE; /* umockdev's stateless fallback */
	}
}

int
usbdevfs_sim_attach(struct usbdevfs_sim *u, UMockdevTestbed *tb, const char *devnode)
{
	GError *err = NULL;
	size_t i;

	for (i = 0; i < USBDEVFS_SIM_MAX_ATTACH && u->att[i].handler; i++)
		;
	if (i == USBDEVFS_SIM_MAX_ATTACH)
		return -ENOSPC;
	u->att[i].handler = umockdev_ioctl_base_new();
	g_signal_connect(u->att[i].handler, "handle-ioctl", G_CALLBACK(on_ioctl), u);
	if (!umockdev_testbed_attach_ioctl(tb, devnode, u->att[i].handler, &err)) {
		g_error_free(err);
		g_object_unref(u->att[i].handler);
		u->att[i].handler = NULL;
		return -EIO;
	}
	u->att[i].devnode = xstrdup(devnode);
	return 0;
}

void
usbdevfs_sim_detach(struct usbdevfs_sim *u, UMockdevTestbed *tb, const char *devnode)
{
	for (size_t i = 0; i < USBDEVFS_SIM_MAX_ATTACH; i++) {
		if (!u->att[i].handler || strcmp(u->att[i].devnode, devnode) != 0)
			continue;
		(void)umockdev_testbed_detach_ioctl(tb, devnode, NULL);
		g_object_unref(u->att[i].handler);
		u->att[i].handler = NULL;
		free(u->att[i].devnode);
		u->att[i].devnode = NULL;
	}
}

void
usbdevfs_sim_release(struct usbdevfs_sim *u)
{
	for (size_t i = 0; i < USBDEVFS_SIM_MAX_ATTACH; i++) {
		if (u->att[i].handler)
			g_object_unref(u->att[i].handler);
		free(u->att[i].devnode);
		u->att[i].handler = NULL;
		u->att[i].devnode = NULL;
	}
}
