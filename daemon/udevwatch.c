/* SPDX-License-Identifier: GPL-2.0-or-later */
/* udevwatch: libudev monitor + coldplug enumeration into struct device (see udevwatch.h). */
#include "udevwatch.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <libudev.h>

#include "log.h"
#include "util.h"

struct udevwatch {
	struct udev *udev;
	struct udev_monitor *monitor;
	sd_event_source *source;
	udevwatch_handler handler;
	void *userdata;
	void (*rescanned)(void *userdata);
	void *rescanned_userdata;
	/* "port syspath" of every usb_device reported and not removed: a rescan after lost
	 * events reports the ones no longer there as removed */
	char **known;
	char **seen; /* during a rescan */
	unsigned rescans;
};

/* What udevd itself asks for its monitors (systemd's udev-ctrl/udevd use 128 MiB): a burst
 * of a dozen boards re-enumerating must not overflow the socket. Without the privilege to
 * force it, the kernel caps SO_RCVBUF at net.core.rmem_max; a loss is then recovered by a
 * rescan. */
#define RCVBUF_SIZE (128 * 1024 * 1024)

static bool
strv_has_str(char **v, const char *s)
{
	for (size_t i = 0; v && v[i]; i++)
		if (strcmp(v[i], s) == 0)
			return true;
	return false;
}

static void
known_set(char ***v, const char *key, bool present)
{
	size_t n = strv_length(*v);

	for (size_t i = 0; i < n; i++) {
		if (strcmp((*v)[i], key) != 0)
			continue;
		if (!present) {
			free((*v)[i]);
			memmove(&(*v)[i], &(*v)[i + 1], (n - i) * sizeof(**v));
		}
		return;
	}
	if (!present)
		return;
	*v = xreallocarray(*v, n + 2, sizeof(**v));
	(*v)[n] = xstrdup(key);
	(*v)[n + 1] = NULL;
}

static unsigned
parse_hex16(const char *s)
{
	unsigned long v;
	char *end;

	if (!s)
		return 0;
	v = strtoul(s, &end, 16);
	return *end || v > 0xffff ? 0 : (unsigned)v;
}

static const char *
prop_or_attr(struct udev_device *d, const char *prop, const char *attr)
{
	const char *v = udev_device_get_property_value(d, prop);

	if (!v || !*v)
		v = udev_device_get_sysattr_value(d, attr);
	return v;
}

/* The /dev/serial/by-id link of a tty, if udev made one. */
static void
find_by_id(struct udev_device *tty, struct device *dev)
{
	struct udev_list_entry *e;

	const char *links;

	udev_list_entry_foreach(e, udev_device_get_devlinks_list_entry(tty)) {
		const char *link = udev_list_entry_get_name(e);

		if (strstr(link, "/serial/by-id/")) {
			(void)DEVICE_SET(dev, by_id, link);
			return;
		}
	}
	/* the database may hold the links only as the DEVLINKS property */
	links = udev_device_get_property_value(tty, "DEVLINKS");
	for (const char *p = links; p && *p;) {
		size_t len = strcspn(p, " ");

		if (len < sizeof(dev->by_id) && memmem(p, len, "/serial/by-id/", 14)) {
			memcpy(dev->by_id, p, len);
			dev->by_id[len] = 0;
			return;
		}
		p += len;
		p += strspn(p, " ");
	}
}

/* tty and block children: one enumeration per event keeps add/bind/child orderings alike */
static void
find_children(struct udev *udev, struct udev_device *usb, struct device *dev)
{
	struct udev_enumerate *en = udev_enumerate_new(udev);
	struct udev_list_entry *e;

	if (!en)
		return;
	(void)udev_enumerate_add_match_parent(en, usb);
	(void)udev_enumerate_scan_devices(en);
	udev_list_entry_foreach(e, udev_enumerate_get_list_entry(en)) {
		struct udev_device *c =
		    udev_device_new_from_syspath(udev, udev_list_entry_get_name(e));
		const char *subsystem, *node;

		if (!c)
			continue;
		subsystem = udev_device_get_subsystem(c);
		node = udev_device_get_devnode(c);
		if (subsystem && node && strcmp(subsystem, "tty") == 0 && !dev->tty[0]) {
			(void)DEVICE_SET(dev, tty, node);
			find_by_id(c, dev);
		} else if (subsystem && node && strcmp(subsystem, "block") == 0 && !dev->block[0]) {
			const char *type = udev_device_get_devtype(c);

			if (type && strcmp(type, "disk") == 0)
				(void)DEVICE_SET(dev, block, node);
		}
		udev_device_unref(c);
	}
	udev_enumerate_unref(en);
}

/* Fill dev from a usb_device, whatever its mode. */
static void
fill_from_usb(struct udev *udev, struct udev_device *usb, struct device *dev)
{
	const char *v;

	memset(dev, 0, sizeof(*dev));
	(void)DEVICE_SET(dev, syspath, udev_device_get_syspath(usb));
	(void)DEVICE_SET(dev, port, udev_device_get_sysname(usb));
	dev->vid = (uint16_t)parse_hex16(prop_or_attr(usb, "ID_VENDOR_ID", "idVendor"));
	dev->pid = (uint16_t)parse_hex16(prop_or_attr(usb, "ID_MODEL_ID", "idProduct"));
	v = udev_device_get_sysattr_value(usb, "manufacturer");
	if (v)
		(void)DEVICE_SET(dev, manufacturer, v);
	dev->mode = device_mode_from_ids(dev->vid, dev->pid, dev->manufacturer);
	v = udev_device_get_sysattr_value(usb, "product");
	if (v)
		(void)DEVICE_SET(dev, product, v);
	v = udev_device_get_sysattr_value(usb, "serial");
	if (!v)
		v = udev_device_get_property_value(usb, "ID_SERIAL_SHORT");
	if (v)
		(void)DEVICE_SET(dev, serial, v);
	v = udev_device_get_property_value(usb, "ID_PATH");
	if (v)
		(void)DEVICE_SET(dev, id_path, v);
	v = udev_device_get_devnode(usb);
	if (v)
		(void)DEVICE_SET(dev, usb_node, v);
	v = udev_device_get_sysattr_value(usb, "busnum");
	dev->busnum = v ? (unsigned)strtoul(v, NULL, 10) : 0;
	v = udev_device_get_sysattr_value(usb, "devnum");
	dev->devnum = v ? (unsigned)strtoul(v, NULL, 10) : 0;
	find_children(udev, usb, dev);
}

/* false when it is not a mode skrflash cares about */
static bool
device_from_usb(struct udevwatch *w, struct udev_device *usb, struct device *dev)
{
	fill_from_usb(w->udev, usb, dev);
	return dev->mode != DEVICE_MODE_NONE;
}

int
udevwatch_device_at_port(struct udev *udev, const char *port, struct device *ret)
{
	struct udev_device *usb = udev_device_new_from_subsystem_sysname(udev, "usb", port);
	const char *type = usb ? udev_device_get_devtype(usb) : NULL;
	int r = -ENODEV;

	if (type && strcmp(type, "usb_device") == 0) {
		fill_from_usb(udev, usb, ret);
		r = 0;
	}
	if (usb)
		udev_device_unref(usb);
	return r;
}

static bool
is_usb_device(struct udev_device *d)
{
	const char *s = udev_device_get_subsystem(d), *t = udev_device_get_devtype(d);

	return s && t && strcmp(s, "usb") == 0 && strcmp(t, "usb_device") == 0;
}

static void
handle(struct udevwatch *w, struct udev_device *d, const char *action)
{
	const char *subsystem = udev_device_get_subsystem(d);
	struct udev_device *usb;
	struct device dev;

	if (!subsystem)
		return;
	if (is_usb_device(d)) {
		char key[600];

		(void)snprintf(key, sizeof(key), "%s %s", udev_device_get_sysname(d),
			       udev_device_get_syspath(d));
		if (strcmp(action, "remove") == 0) {
			known_set(&w->known, key, false);
			memset(&dev, 0, sizeof(dev));
			(void)DEVICE_SET(&dev, syspath, udev_device_get_syspath(d));
			(void)DEVICE_SET(&dev, port, udev_device_get_sysname(d));
			w->handler(w->userdata, UDEVWATCH_REMOVE, &dev);
		} else if (strcmp(action, "unbind") != 0 && device_from_usb(w, d, &dev)) {
			known_set(&w->known, key, true);
			known_set(&w->seen, key, true);
			w->handler(w->userdata,
				   strcmp(action, "change") == 0 ? UDEVWATCH_CHANGE : UDEVWATCH_ADD,
				   &dev);
		}
		return;
	}
	if (strcmp(subsystem, "tty") != 0 && strcmp(subsystem, "block") != 0)
		return;
	/* borrowed reference: owned by d */
	usb = udev_device_get_parent_with_subsystem_devtype(d, "usb", "usb_device");
	if (!usb || !device_from_usb(w, usb, &dev))
		return;
	if (strcmp(action, "remove") == 0) {
		const char *node = udev_device_get_devnode(d);

		/* the child may still be listed while its remove event is delivered */
		if (node && strcmp(node, dev.tty) == 0) {
			dev.tty[0] = 0;
			dev.by_id[0] = 0;
		}
		if (node && strcmp(node, dev.block) == 0)
			dev.block[0] = 0;
	}
	w->handler(w->userdata, UDEVWATCH_CHANGE, &dev);
}

static int
on_monitor(sd_event_source *s, int fd, uint32_t revents, void *userdata)
{
	struct udevwatch *w = userdata;

	(void)s;
	(void)fd;
	(void)revents;
	for (;;) {
		struct udev_device *d;
		const char *action;

		errno = 0;
		d = udev_monitor_receive_device(w->monitor);
		if (!d)
			break;
		action = udev_device_get_action(d);
		if (action)
			handle(w, d, action);
		udev_device_unref(d);
	}
	/* the socket overflowed: events were lost, and only a full scan tells what is there */
	if (errno == ENOBUFS)
		udevwatch_rescan(w);
	return 0;
}

static void coldplug(struct udevwatch *w);

void
udevwatch_rescan(struct udevwatch *w)
{
	size_t n;

	w->rescans++;
	log_notice("udev events were lost (receive buffer overflow); rescanning the USB devices");
	w->seen = strv_free(w->seen);
	w->seen = xnew_array(char *, 1);
	coldplug(w);
	/* what was there before and is not now left while nobody listened */
	n = strv_length(w->known);
	for (size_t i = n; i-- > 0;) {
		struct device dev;
		char *sp;

		if (strv_has_str(w->seen, w->known[i]))
			continue;
		sp = strchr(w->known[i], ' ');
		memset(&dev, 0, sizeof(dev));
		if (sp) {
			*sp = 0;
			(void)DEVICE_SET(&dev, port, w->known[i]);
			(void)DEVICE_SET(&dev, syspath, sp + 1);
			*sp = ' ';
		}
		known_set(&w->known, w->known[i], false);
		w->handler(w->userdata, UDEVWATCH_REMOVE, &dev);
	}
	w->seen = strv_free(w->seen);
	if (w->rescanned)
		w->rescanned(w->rescanned_userdata);
}

unsigned
udevwatch_rescans(const struct udevwatch *w)
{
	return w->rescans;
}

void
udevwatch_set_rescanned(struct udevwatch *w, void (*fn)(void *userdata), void *userdata)
{
	w->rescanned = fn;
	w->rescanned_userdata = userdata;
}

static void
coldplug(struct udevwatch *w)
{
	/* usb devices first so that tty/block children find their parent already known */
	static const char *const subsystems[] = {"usb", "tty", "block"};

	for (size_t i = 0; i < ELEMENTSOF(subsystems); i++) {
		struct udev_enumerate *en = udev_enumerate_new(w->udev);
		struct udev_list_entry *e;

		if (!en)
			return;
		(void)udev_enumerate_add_match_subsystem(en, subsystems[i]);
		(void)udev_enumerate_scan_devices(en);
		udev_list_entry_foreach(e, udev_enumerate_get_list_entry(en)) {
			struct udev_device *d =
			    udev_device_new_from_syspath(w->udev, udev_list_entry_get_name(e));

			if (!d)
				continue;
			handle(w, d, "add");
			udev_device_unref(d);
		}
		udev_enumerate_unref(en);
	}
}

int
udevwatch_start(sd_event *loop, udevwatch_handler h, void *userdata, struct udevwatch **ret)
{
	struct udevwatch *w = xnew(struct udevwatch);
	int r;

	w->handler = h;
	w->userdata = userdata;
	w->udev = udev_new();
	if (!w->udev) {
		r = -ENOMEM;
		goto fail;
	}
	w->monitor = udev_monitor_new_from_netlink(w->udev, "udev");
	if (!w->monitor) {
		r = errno ? -errno : -EIO;
		goto fail;
	}
	if (udev_monitor_filter_add_match_subsystem_devtype(w->monitor, "usb", "usb_device") < 0 ||
	    udev_monitor_filter_add_match_subsystem_devtype(w->monitor, "tty", NULL) < 0 ||
	    udev_monitor_filter_add_match_subsystem_devtype(w->monitor, "block", NULL) < 0) {
		r = -EIO;
		goto fail;
	}
	if (udev_monitor_set_receive_buffer_size(w->monitor, RCVBUF_SIZE) < 0) {
		int size = RCVBUF_SIZE;

		/* unprivileged: as much as net.core.rmem_max allows */
		if (setsockopt(udev_monitor_get_fd(w->monitor), SOL_SOCKET, SO_RCVBUF, &size,
			       sizeof(size)) < 0)
			log_debug("cannot enlarge the udev receive buffer: %s", strerror(errno));
	}
	r = udev_monitor_enable_receiving(w->monitor);
	if (r < 0)
		goto fail;
	r = sd_event_add_io(loop, &w->source, udev_monitor_get_fd(w->monitor), EPOLLIN, on_monitor,
			    w);
	if (r < 0)
		goto fail;
	(void)sd_event_source_set_description(w->source, "udev-monitor");
	coldplug(w);
	*ret = w;
	return 0;
fail:
	udevwatch_free(w);
	return r;
}

struct udevwatch *
udevwatch_free(struct udevwatch *w)
{
	if (!w)
		return NULL;
	sd_event_source_disable_unref(w->source);
	if (w->monitor)
		udev_monitor_unref(w->monitor);
	if (w->udev)
		udev_unref(w->udev);
	strv_free(w->known);
	strv_free(w->seen);
	free(w);
	return NULL;
}
