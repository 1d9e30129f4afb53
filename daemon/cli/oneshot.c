/* SPDX-License-Identifier: GPL-2.0-or-later */
/* oneshot: find the board behind --device, get it into a bootloader, flash it in-process and
 * wait for the application to come back on the same USB port (see oneshot.h).
 *
 * Devices are found through libudev (DEVNAME, DEVLINKS, the usb_device sysname), never by
 * resolving links with realpath(): the port path is the identity that survives the change
 * from Klipper to Katapult or ROM DFU, whose serial number differs. */
#include "cli/oneshot.h"
#include "cli/progress.h"

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <libudev.h>

#include "flash/backend.h"
#include "catalog.h"
#include "device.h"
#include "log.h"
#include "flash/touch.h"
#include "udevwatch.h"
#include "util.h"
#include "flash/worker.h"
#include "image/validate.h"

#define ONESHOT_WAIT_MS 10000

/* Fill dev from the usb_device at `port`; false when absent. */
static bool
device_from_port(struct udev *udev, const char *port, struct device *dev)
{
	memset(dev, 0, sizeof(*dev));
	return udevwatch_device_at_port(udev, port, dev) == 0;
}

static bool
node_matches(struct udev_device *d, const char *path)
{
	const char *node = udev_device_get_devnode(d), *links;
	struct udev_list_entry *e;
	size_t n = strlen(path);

	if (node && strcmp(node, path) == 0)
		return true;
	udev_list_entry_foreach(e, udev_device_get_devlinks_list_entry(d)) {
		if (strcmp(udev_list_entry_get_name(e), path) == 0)
			return true;
	}
	/* a device read from sysfs (not from an event) may carry its links only in the
	 * DEVLINKS property: space-separated */
	links = udev_device_get_property_value(d, "DEVLINKS");
	for (const char *p = links; p && *p;) {
		size_t l = strcspn(p, " ");

		if (l == n && strncmp(p, path, n) == 0)
			return true;
		p += l;
		p += strspn(p, " ");
	}
	return false;
}

/* The USB port (usb_device sysname) behind a device path or a port name. */
static int
find_port(struct udev *udev, const char *path, char *port, size_t size)
{
	struct udev_enumerate *en;
	struct udev_list_entry *e;
	int r = -ENODEV;

	if (path[0] != '/') {
		struct device dev;

		if (!device_from_port(udev, path, &dev))
			return -ENODEV;
		return str_copy(port, size, path) ? 0 : -ENAMETOOLONG;
	}
	en = udev_enumerate_new(udev);
	if (!en)
		return -ENOMEM;
	(void)udev_enumerate_add_match_subsystem(en, "tty");
	(void)udev_enumerate_add_match_subsystem(en, "usb");
	(void)udev_enumerate_scan_devices(en);
	udev_list_entry_foreach(e, udev_enumerate_get_list_entry(en)) {
		struct udev_device *d =
		    udev_device_new_from_syspath(udev, udev_list_entry_get_name(e));

		if (!d)
			continue;
		if (node_matches(d, path)) {
			const char *t = udev_device_get_devtype(d);
			struct udev_device *usb;

			usb = t && strcmp(t, "usb_device") == 0
				  ? d
				  : udev_device_get_parent_with_subsystem_devtype(d, "usb",
										  "usb_device");
			if (usb && str_copy(port, size, udev_device_get_sysname(usb)))
				r = 0;
		}
		udev_device_unref(d);
		if (r == 0)
			break;
	}
	udev_enumerate_unref(en);
	return r;
}

struct waiter {
	struct udev *udev;
	struct udev_monitor *mon;
	const char *port;
	bool gone; /* a remove of the port's usb_device was seen */
	bool back; /* and an add after it: sysfs may still show the old device after a remove */
};

static int
waiter_start(struct waiter *w, struct udev *udev, const char *port)
{
	memset(w, 0, sizeof(*w));
	w->udev = udev;
	w->port = port;
	w->mon = udev_monitor_new_from_netlink(udev, "udev");
	if (!w->mon)
		return -ENOMEM;
	(void)udev_monitor_filter_add_match_subsystem_devtype(w->mon, "usb", "usb_device");
	(void)udev_monitor_filter_add_match_subsystem_devtype(w->mon, "tty", NULL);
	if (udev_monitor_enable_receiving(w->mon) < 0)
		return -EIO;
	return 0;
}

static void
waiter_stop(struct waiter *w)
{
	if (w->mon)
		udev_monitor_unref(w->mon);
	w->mon = NULL;
}

static bool
usable(const struct device *d)
{
	switch (d->mode) {
	case DEVICE_MODE_KLIPPER_APP:
	case DEVICE_MODE_KATAPULT:
		return d->tty[0] != '\0';
	case DEVICE_MODE_STM32_ROM_DFU:
	case DEVICE_MODE_NONE:
	case DEVICE_MODE_LPC_DFU:
	case DEVICE_MODE_RP2040_BOOTSEL:
	case DEVICE_MODE_MARLIN_LPC:
	case DEVICE_MODE_MARLIN_STM32:
	case _DEVICE_MODE_MAX:
	default:
		return d->usb_node[0] != '\0';
	}
}

/* Take the monitor's pending events: a remove of the port's usb_device marks it gone, an add
 * after that marks it back. */
static void
waiter_drain(struct waiter *w)
{
	struct udev_device *d;

	while ((d = udev_monitor_receive_device(w->mon))) {
		const char *a = udev_device_get_action(d), *n = udev_device_get_sysname(d);
		const char *t = udev_device_get_devtype(d);

		if (a && n && t && strcmp(t, "usb_device") == 0 && strcmp(n, w->port) == 0) {
			if (strcmp(a, "remove") == 0) {
				w->gone = true;
				w->back = false;
			} else if (w->gone && strcmp(a, "add") == 0) {
				w->back = true;
			}
		}
		udev_device_unref(d);
	}
}

/* Wait until the port shows a usable device in one of `modes` (bit mask of 1 << mode);
 * with after_gone, only once it has left the bus first. 0 with *dev, or -ETIMEDOUT. */
static int
waiter_wait(struct waiter *w, unsigned modes, bool after_gone, struct device *dev)
{
	uint64_t deadline = now_monotonic_usec() + (uint64_t)ONESHOT_WAIT_MS * 1000;

	for (;;) {
		struct pollfd p = {.fd = udev_monitor_get_fd(w->mon), .events = POLLIN};
		uint64_t now = now_monotonic_usec();

		waiter_drain(w);
		if (!device_from_port(w->udev, w->port, dev)) {
			w->gone = true;
			w->back = true; /* whatever shows up next is new */
		} else if ((!after_gone || (w->gone && w->back)) && (modes & (1u << dev->mode)) &&
			   usable(dev)) {
			return 0;
		}
		if (now >= deadline)
			return -ETIMEDOUT;
		/* events wake us at once; the 250 ms re-check covers events lost to a race
		 * between the enumeration above and the monitor */
		(void)poll(
		    &p, 1,
		    (int)((deadline - now) / 1000 < 250 ? (deadline - now) / 1000 + 1 : 250));
	}
}

/* The daemon's boot check (WORKER_APP_STABLE_MS): the application that appeared must stay on
 * the bus; a boot-looping one leaves again. 0 when it stayed, -ENODEV when it left. */
static int
waiter_stays(struct waiter *w)
{
	uint64_t deadline = now_monotonic_usec() + (uint64_t)WORKER_APP_STABLE_MS * 1000;
	struct device dev;

	w->gone = false;
	for (;;) {
		struct pollfd p = {.fd = udev_monitor_get_fd(w->mon), .events = POLLIN};
		uint64_t now = now_monotonic_usec();

		waiter_drain(w);
		if (w->gone || !device_from_port(w->udev, w->port, &dev) ||
		    dev.mode != DEVICE_MODE_KLIPPER_APP)
			return -ENODEV;
		if (now >= deadline)
			return 0;
		(void)poll(&p, 1, (int)((deadline - now) / 1000 + 1));
	}
}

/* Read and validate the file before anything touches the board: against --board, else
 * against every catalog board with the MCU the device reports (the worker checks again
 * against the app start its bootloader reports). Prints why on refusal; 0 or exit code. */
static int
precheck(const char *file, const char *board, const struct device *dev)
{
	const struct catalog_board *all, *first = NULL;
	struct verdict v, refused = {0};
	uint8_t *data = NULL;
	size_t size = 0, n;
	const char *base = strrchr(file, '/');
	int r, tried = 0, ok = 0;

	r = read_file(file, IMAGE_MAX_SIZE + 1, &data, &size);
	if (r < 0) {
		fprintf(stderr,
			"skrflashctl flash: cannot read %s: %s; the board was not touched\n", file,
			r == -EFBIG ? "larger than 16 MiB" : strerror(-r));
		return r == -EFBIG ? 1 : 2;
	}
	all = catalog_boards(&n);
	for (size_t i = 0; i < n && !ok; i++) {
		struct validate_target t = {.board = &all[i],
					    .interface = CONFIG_INTERFACE_USB,
					    .file_name = base ? base + 1 : file};

		if (board ? strcmp(all[i].name, board) != 0
			  : strcasecmp(all[i].mcu->name, dev->product) != 0)
			continue;
		tried++;
		if (validate_image(data, size, &t, &v) < 0)
			continue;
		if (v.accepted) {
			ok = 1;
			verdict_done(&v);
		} else if (!first) {
			first = &all[i];
			refused = v;
		} else {
			verdict_done(&v);
		}
	}
	free(data);
	if (ok || (!tried && !board)) {
		/* no catalog board for what the device reports: the worker's check decides */
		verdict_done(&refused);
		return 0;
	}
	fprintf(stderr, "skrflashctl flash: %s refused for %s; the board was not touched:\n", file,
		first ? first->title : board);
	for (size_t i = 0; i < refused.n_reasons; i++)
		fprintf(stderr, "  - %s\n", refused.reasons[i]);
	verdict_done(&refused);
	return 1;
}

static void
on_progress(void *userdata, const char *step, uint64_t done, uint64_t total)
{
	progress_update(userdata, step, done, total);
}

static void
on_reported(void *userdata, const char *mcu, uint32_t app_start, const char *version)
{
	(void)userdata;
	printf("bootloader: %s%sapplication at 0x%08x%s%s\n", mcu, mcu[0] ? ", " : "", app_start,
	       version[0] ? ", version " : "", version);
}

static int
usage(void)
{
	fprintf(stderr, "Usage: skrflashctl flash --device PATH [--board NAME] [--method M] "
			"[--window N] [--force] FILE\n");
	return 2;
}

static const char *
board_title(const char *name, const struct device *dev)
{
	const struct catalog_board *b = name ? catalog_find(name) : NULL;
	size_t n;

	if (b)
		return b->title;
	b = catalog_boards(&n);
	for (size_t i = 0; i < n; i++)
		if (b[i].mcu && strcasecmp(b[i].mcu->name, dev->product) == 0)
			return dev->product;
	return "the board";
}

#define ONESHOT_FLASH_TIMEOUT_S 600

static void
on_flash_timeout(int sig)
{
	static const char msg[] = "\nskrflashctl flash: not done after 10 minutes: giving up; "
				  "the board stays in its bootloader\n";

	(void)sig;
	(void)!write(STDERR_FILENO, msg, sizeof(msg) - 1);
	_exit(1);
}

/* What the one-shot flash and reboot share: the board behind --device, its USB port and the
 * watch on that port. */
struct oneshot {
	const char *cmd; /* "flash" or "reboot": the word after "skrflashctl" in every message */
	const char *device, *board;
	struct udev *udev;
	struct waiter w;
	struct device dev;
	char port[64];
};

/* --board names a catalog board: 0, or the usage exit code 2 (said so). */
static int
oneshot_check_board(const struct oneshot *o)
{
	if (o->board && !catalog_find(o->board)) {
		fprintf(stderr, "skrflashctl %s: unknown board '%s'\n", o->cmd, o->board);
		return 2;
	}
	return 0;
}

/* Find the board: the USB port behind --device and the device on it now. 0 or exit code 1. */
static int
oneshot_find_board(struct oneshot *o)
{
	o->udev = udev_new();
	if (!o->udev) {
		fprintf(stderr, "skrflashctl %s: libudev unavailable\n", o->cmd);
		return 1;
	}
	if (find_port(o->udev, o->device, o->port, sizeof(o->port)) < 0 ||
	    !device_from_port(o->udev, o->port, &o->dev)) {
		fprintf(stderr, "skrflashctl %s: no USB device found for %s\n", o->cmd, o->device);
		return 1;
	}
	return 0;
}

/* Watch the port from before the worker leaves the bootloader: an application that starts
 * at once must not be missed. 0 or exit code 1. */
static int
oneshot_watch_port(struct oneshot *o)
{
	int r = waiter_start(&o->w, o->udev, o->port);

	if (r < 0) {
		fprintf(stderr, "skrflashctl %s: udev monitor: %s\n", o->cmd, strerror(-r));
		return 1;
	}
	return 0;
}

/* Wait for the application on the port, and keep watching it for the daemon's boot check.
 * Says why not, in the words of a flash or a reboot; 0 when it came and stayed, or exit
 * code 1. */
static int
oneshot_wait_app(struct oneshot *o)
{
	bool flash = strcmp(o->cmd, "flash") == 0;
	int r = waiter_wait(&o->w, 1u << DEVICE_MODE_KLIPPER_APP, false, &o->dev);

	if (r == 0)
		r = waiter_stays(&o->w);
	if (r == -ETIMEDOUT)
		fprintf(stderr,
			flash ? "skrflashctl flash: written and verified, but the application did "
				"not come back on port %s within %d s\n"
			      : "skrflashctl reboot: the bootloader on port %s left, but no "
				"application came up within %d s: the application in flash may be "
				"damaged; flash it again\n",
			o->port, ONESHOT_WAIT_MS / 1000);
	else if (r < 0)
		fprintf(stderr,
			flash ? "skrflashctl flash: written and verified, but the application on "
				"port %s came back and left again within %u ms: it boot-loops; "
				"flash a working image (the board may be in its bootloader now)\n"
			      : "skrflashctl reboot: the application on port %s came up and left "
				"again within %u ms: it boot-loops; flash a working image\n",
			o->port, WORKER_APP_STABLE_MS);
	return r < 0 ? 1 : 0;
}

static void
oneshot_done(struct oneshot *o)
{
	waiter_stop(&o->w);
	udev_unref(o->udev);
}

/* skrflashctl flash --device: the one-shot flash's own state. */
struct flash_run {
	struct oneshot o;
	const char *method, *file;
	const struct flash_backend *be; /* --method's, then the one for the bootloader mode */
	unsigned window;
	bool force;
	struct progress bar;
	struct worker_report rep;
};

/* The command line; 0 or the usage exit code 2 (said so). */
static int
flash_parse(struct flash_run *f, int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char **target = NULL;

		if (strcmp(a, "--device") == 0)
			target = &f->o.device;
		else if (strcmp(a, "--board") == 0)
			target = &f->o.board;
		else if (strcmp(a, "--method") == 0)
			target = &f->method;
		else if (strcmp(a, "--force") == 0) {
			f->force = true;
			continue;
		} else if (strcmp(a, "--window") == 0) {
			uint32_t v;

			if (i + 1 >= argc || parse_u32(argv[++i], &v) < 0 || v == 0 || v > 64) {
				fprintf(stderr, "skrflashctl flash: --window takes 1..64\n");
				return 2;
			}
			f->window = v;
			continue;
		} else if (a[0] == '-' && a[1]) {
			fprintf(stderr, "skrflashctl flash: unknown option '%s'\n", a);
			return usage();
		} else if (f->file) {
			return usage();
		} else {
			f->file = a;
			continue;
		}
		if (i + 1 >= argc)
			return usage();
		*target = argv[++i];
	}
	if (!f->o.device || !f->file)
		return usage();
	return 0;
}

/* --board and --method name what exists; 0 or the usage exit code 2 (said so). */
static int
flash_check_args(struct flash_run *f)
{
	int r = oneshot_check_board(&f->o);

	if (r || !f->method)
		return r;
	f->be = backend_find(f->method);
	if (!f->be) {
		fprintf(stderr, "skrflashctl flash: unknown method '%s' (katapult, dfu, uf2)\n",
			f->method);
		return 2;
	}
	return 0;
}

/* A board running Klipper: the 1200-baud touch, then wait until it is back in a bootloader
 * (the one --method drives, or any). 0 or exit code 1. */
static int
flash_enter_bootloader(struct flash_run *f)
{
	struct oneshot *o = &f->o;
	unsigned want = f->be
			    ? 1u << f->be->mode
			    : (1u << DEVICE_MODE_KATAPULT) | (1u << DEVICE_MODE_STM32_ROM_DFU) |
				  (1u << DEVICE_MODE_RP2040_BOOTSEL) | (1u << DEVICE_MODE_LPC_DFU);
	int r;

	if (o->dev.mode != DEVICE_MODE_KLIPPER_APP)
		return 0; /* in a bootloader already */
	printf("%s on port %s runs Klipper: requesting its bootloader\n",
	       board_title(o->board, &o->dev), o->port);
	r = waiter_start(&o->w, o->udev, o->port);
	if (r >= 0)
		r = touch_enter_bootloader(o->dev.tty);
	if (r < 0) {
		fprintf(stderr, "skrflashctl flash: 1200-baud touch of %s failed: %s\n", o->dev.tty,
			strerror(-r));
		return 1;
	}
	r = waiter_wait(&o->w, want | (1u << DEVICE_MODE_KLIPPER_APP), true, &o->dev);
	if (r < 0 || o->dev.mode == DEVICE_MODE_KLIPPER_APP) {
		fprintf(stderr,
			"skrflashctl flash: %s on port %s %s: it has neither Katapult nor a "
			"software way into ROM DFU. To make it flashable: install Katapult, "
			"use the SD card (firmware.bin), or start it with BOOT0 held for ROM "
			"DFU.\n",
			board_title(o->board, &o->dev), o->port,
			r < 0 ? "did not come back in a bootloader"
			      : "came back as the Klipper application");
		return 1;
	}
	waiter_stop(&o->w);
	return 0;
}

/* The backend for the mode the board is in now, which --method must match. 0 or exit
 * code 1. */
static int
flash_pick_backend(struct flash_run *f)
{
	if (!f->be)
		f->be = backend_for_mode(f->o.dev.mode);
	if (!f->be || f->be->mode != f->o.dev.mode) {
		fprintf(stderr, "skrflashctl flash: port %s is in mode %s, which %s cannot flash\n",
			f->o.port, device_mode_to_string(f->o.dev.mode),
			f->be ? f->be->name : "skrflash");
		return 1;
	}
	return 0;
}

/* The worker's plan: the same one the daemon hands its worker. 0 or exit code 1. */
static int
flash_plan(const struct flash_run *f, struct worker_plan *plan)
{
	memset(plan, 0, sizeof(*plan));
	(void)str_copy(plan->action, sizeof(plan->action), "flash");
	(void)str_copy(plan->method, sizeof(plan->method), f->be->name);
	plan->dev = f->o.dev;
	(void)str_copy(plan->board, sizeof(plan->board), f->o.board ? f->o.board : "");
	if (!str_copy(plan->image_path, sizeof(plan->image_path), f->file)) {
		fprintf(stderr, "skrflashctl flash: file name too long\n");
		return 1;
	}
	plan->interface = CONFIG_INTERFACE_USB;
	plan->window = f->window;
	plan->force = f->force;
	return 0;
}

/* Write and verify in this process; the worker leaves the bootloader at the end. 0 or exit
 * code 1. */
static int
flash_write(struct flash_run *f)
{
	struct worker_events ev = {
	    .progress = on_progress, .reported = on_reported, .userdata = &f->bar};
	struct worker_plan plan;

	if (flash_plan(f, &plan) || oneshot_watch_port(&f->o))
		return 1;
	/* a device that has just enumerated may not be ready for a moment (udev still applying
	 * permissions, the bootloader still starting): retry only a failed open, which wrote
	 * nothing */
	/* the daemon kills a stuck worker after its step timeout; here nobody would: the
	 * whole write has a deadline too */
	(void)signal(SIGALRM, on_flash_timeout);
	alarm(ONESHOT_FLASH_TIMEOUT_S);
	for (unsigned attempt = 0;; attempt++) {
		(void)worker_execute(&plan, &ev, &f->rep);
		if (f->rep.ok || strcmp(f->rep.step, "open") != 0 || attempt >= 4)
			break;
		log_debug("oneshot: open failed (%s), retrying", f->rep.error);
		(void)poll(NULL, 0, 250);
	}
	alarm(0);
	progress_break(&f->bar);
	if (!f->rep.ok) {
		fprintf(stderr, "skrflashctl flash: %s failed: %s\n", f->rep.step, f->rep.error);
		if (strcmp(f->rep.step, "open") != 0)
			fprintf(stderr,
				"  the board stays in its bootloader (%s); nothing was "
				"started\n",
				device_mode_to_string(f->o.dev.mode));
		return 1;
	}
	return 0;
}

static int
flash_report(struct flash_run *f)
{
	printf("flashed %" PRIu64 " bytes (%u erases, %u transfers) via %s; %s is back on port "
	       "%s as %s\n",
	       f->rep.bytes, f->rep.erases, f->rep.transfers, f->be->name,
	       board_title(f->o.board, &f->o.dev), f->o.port,
	       f->o.dev.tty[0] ? f->o.dev.tty : "the application");
	return 0;
}

static int
flash_find_board(struct flash_run *f)
{
	return oneshot_find_board(&f->o);
}

/* Read and validate the file before anything touches the board. --force skips the verdict,
 * not the reading: the worker still parses the file. */
static int
flash_check_image(struct flash_run *f)
{
	return f->force ? 0 : precheck(f->file, f->o.board, &f->o.dev);
}

static int
flash_wait_app(struct flash_run *f)
{
	return oneshot_wait_app(&f->o);
}

/* The one-shot flash, step by step: each step says why it stops (an exit code). */
static int (*const flash_steps[])(struct flash_run *f) = {
    flash_find_board,	    /* the USB port behind --device, the device on it */
    flash_check_image,	    /* the file fits the board */
    flash_enter_bootloader, /* a board running Klipper: the 1200-baud touch */
    flash_pick_backend,	    /* the backend for the bootloader it is in */
    flash_write,	    /* write, verify, leave the bootloader */
    flash_wait_app,	    /* the application back on the same port, and staying */
    flash_report,
};

int
oneshot_flash(int argc, char **argv)
{
	struct flash_run f = {.o = {.cmd = "flash"}};
	int ret;

	progress_init(&f.bar, stdout, isatty(STDOUT_FILENO) == 1, "");
	ret = flash_parse(&f, argc, argv);
	if (!ret)
		ret = flash_check_args(&f);
	if (ret)
		return ret;
	for (size_t i = 0; !ret && i < ELEMENTSOF(flash_steps); i++)
		ret = flash_steps[i](&f);
	oneshot_done(&f.o);
	return ret;
}

/* The command line of reboot; 0 or the usage exit code 2 (said so). */
static int
reboot_parse(struct oneshot *o, int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--device") == 0 && i + 1 < argc)
			o->device = argv[++i];
		else if (strcmp(argv[i], "--board") == 0 && i + 1 < argc)
			o->board = argv[++i];
		else if (argv[i][0] != '-' && !o->device) {
			fprintf(stderr,
				"skrflashctl reboot: rebooting a board through the daemon is not "
				"available yet: use --device PATH\n");
			return 2;
		} else {
			fprintf(stderr, "Usage: skrflashctl reboot --device PATH [--board NAME]\n");
			return 2;
		}
	}
	if (!o->device) {
		fprintf(stderr, "Usage: skrflashctl reboot --device PATH [--board NAME]\n");
		return 2;
	}
	return oneshot_check_board(o);
}

/* Whether the bootloader the board sits in can be asked to start the application. 0 or exit
 * code 1 (said why). */
static int
reboot_check_mode(const struct oneshot *o)
{
	switch (o->dev.mode) {
	case DEVICE_MODE_KLIPPER_APP: /* answered before */
	case DEVICE_MODE_KATAPULT:
	case DEVICE_MODE_STM32_ROM_DFU:
	case DEVICE_MODE_RP2040_BOOTSEL:
	case DEVICE_MODE_LPC_DFU: /* the zero-length DNLOAD starts the app (flash/lpcdfu.c) */
		return 0;
	case DEVICE_MODE_NONE:
	case DEVICE_MODE_MARLIN_LPC:
	case DEVICE_MODE_MARLIN_STM32:
	case _DEVICE_MODE_MAX:
	default:
		fprintf(stderr,
			"skrflashctl reboot: port %s is in mode %s, which skrflash cannot ask to "
			"start the application: press reset or power-cycle the board\n",
			o->port, device_mode_to_string(o->dev.mode));
		return 1;
	}
}

/* The worker leaves the bootloader (action "reboot"), watched from before. 0 or exit code 1. */
static int
reboot_leave(struct oneshot *o)
{
	struct worker_plan plan;
	struct worker_report rep;

	memset(&plan, 0, sizeof(plan));
	(void)str_copy(plan.action, sizeof(plan.action), "reboot");
	plan.dev = o->dev;
	(void)str_copy(plan.board, sizeof(plan.board), o->board ? o->board : "");
	plan.interface = CONFIG_INTERFACE_USB;
	if (oneshot_watch_port(o))
		return 1;
	(void)worker_execute(&plan, NULL, &rep);
	if (!rep.ok) {
		fprintf(stderr, "skrflashctl reboot: %s failed: %s\n", rep.step, rep.error);
		return 1;
	}
	return 0;
}

/* `skrflashctl reboot --device PATH [--board NAME]`: ask the bootloader the board sits in to
 * start the application already in flash, and wait until it stays up. */
int
oneshot_reboot(int argc, char **argv)
{
	struct oneshot o = {.cmd = "reboot"};
	int ret = reboot_parse(&o, argc, argv);

	if (ret)
		return ret;
	ret = oneshot_find_board(&o);
	if (!ret && o.dev.mode == DEVICE_MODE_KLIPPER_APP) {
		printf("%s on port %s already runs the application\n", board_title(o.board, &o.dev),
		       o.port);
		oneshot_done(&o);
		return 0;
	}
	if (!ret)
		ret = reboot_check_mode(&o);
	if (!ret)
		ret = reboot_leave(&o);
	if (!ret)
		ret = oneshot_wait_app(&o);
	if (!ret)
		printf("%s on port %s runs the application again (%s)\n",
		       board_title(o.board, &o.dev), o.port, o.dev.tty[0] ? o.dev.tty : "no tty");
	oneshot_done(&o);
	return ret;
}
