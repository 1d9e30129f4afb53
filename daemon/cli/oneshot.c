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

/* Wait until the port shows a usable device in one of `modes` (bit mask of 1 << mode);
 * with after_gone, only once it has left the bus first. 0 with *dev, or -ETIMEDOUT. */
static int
waiter_wait(struct waiter *w, unsigned modes, bool after_gone, struct device *dev)
{
	uint64_t deadline = now_monotonic_usec() + (uint64_t)ONESHOT_WAIT_MS * 1000;

	for (;;) {
		struct pollfd p = {.fd = udev_monitor_get_fd(w->mon), .events = POLLIN};
		uint64_t now = now_monotonic_usec();
		struct udev_device *d;

		while ((d = udev_monitor_receive_device(w->mon))) {
			const char *a = udev_device_get_action(d), *n = udev_device_get_sysname(d);
			const char *t = udev_device_get_devtype(d);

			if (a && n && t && strcmp(t, "usb_device") == 0 &&
			    strcmp(n, w->port) == 0) {
				if (strcmp(a, "remove") == 0) {
					w->gone = true;
					w->back = false;
				} else if (w->gone && strcmp(a, "add") == 0) {
					w->back = true;
				}
			}
			udev_device_unref(d);
		}
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
		struct udev_device *d;

		while ((d = udev_monitor_receive_device(w->mon))) {
			const char *a = udev_device_get_action(d), *n = udev_device_get_sysname(d);
			const char *t = udev_device_get_devtype(d);

			if (a && n && t && strcmp(t, "usb_device") == 0 &&
			    strcmp(n, w->port) == 0 && strcmp(a, "remove") == 0)
				w->gone = true;
			udev_device_unref(d);
		}
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

int
oneshot_flash(int argc, char **argv)
{
	const char *device = NULL, *board = NULL, *method = NULL, *file = NULL;
	const struct flash_backend *be = NULL;
	struct worker_plan plan;
	struct worker_report rep;
	struct progress bar;
	struct worker_events ev = {
	    .progress = on_progress, .reported = on_reported, .userdata = &bar};
	struct waiter w = {0};
	struct device dev;
	struct udev *udev = NULL;
	char port[64];
	unsigned window = 0;
	bool force = false;
	int r, ret = 1;

	progress_init(&bar, stdout, isatty(STDOUT_FILENO) == 1, "");
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char **target = NULL;

		if (strcmp(a, "--device") == 0)
			target = &device;
		else if (strcmp(a, "--board") == 0)
			target = &board;
		else if (strcmp(a, "--method") == 0)
			target = &method;
		else if (strcmp(a, "--force") == 0) {
			force = true;
			continue;
		} else if (strcmp(a, "--window") == 0) {
			uint32_t v;

			if (i + 1 >= argc || parse_u32(argv[++i], &v) < 0 || v == 0 || v > 64) {
				fprintf(stderr, "skrflashctl flash: --window takes 1..64\n");
				return 2;
			}
			window = v;
			continue;
		} else if (a[0] == '-' && a[1]) {
			fprintf(stderr, "skrflashctl flash: unknown option '%s'\n", a);
			return usage();
		} else if (file) {
			return usage();
		} else {
			file = a;
			continue;
		}
		if (i + 1 >= argc)
			return usage();
		*target = argv[++i];
	}
	/* cppcheck-suppress knownConditionTrueFalse ; device is set through *target above */
	if (!device || !file)
		return usage();
	if (board && !catalog_find(board)) {
		fprintf(stderr, "skrflashctl flash: unknown board '%s'\n", board);
		return 2;
	}
	if (method) {
		be = backend_find(method);
		if (!be) {
			fprintf(stderr,
				"skrflashctl flash: unknown method '%s' (katapult, dfu, uf2)\n",
				method);
			return 2;
		}
	}

	udev = udev_new();
	if (!udev) {
		fprintf(stderr, "skrflashctl flash: libudev unavailable\n");
		return 1;
	}
	r = find_port(udev, device, port, sizeof(port));
	if (r < 0 || !device_from_port(udev, port, &dev)) {
		fprintf(stderr, "skrflashctl flash: no USB device found for %s\n", device);
		goto out;
	}
	/* --force skips the verdict, not the reading: the worker still parses the file */
	r = force ? 0 : precheck(file, board, &dev);
	if (r > 0) {
		ret = r;
		goto out;
	}
	if (dev.mode == DEVICE_MODE_KLIPPER_APP) {
		unsigned want =
		    be ? 1u << be->mode
		       : (1u << DEVICE_MODE_KATAPULT) | (1u << DEVICE_MODE_STM32_ROM_DFU) |
			     (1u << DEVICE_MODE_RP2040_BOOTSEL) | (1u << DEVICE_MODE_LPC_DFU);

		printf("%s on port %s runs Klipper: requesting its bootloader\n",
		       board_title(board, &dev), port);
		r = waiter_start(&w, udev, port);
		if (r >= 0)
			r = touch_enter_bootloader(dev.tty);
		if (r < 0) {
			fprintf(stderr, "skrflashctl flash: 1200-baud touch of %s failed: %s\n",
				dev.tty, strerror(-r));
			goto out;
		}
		r = waiter_wait(&w, want | (1u << DEVICE_MODE_KLIPPER_APP), true, &dev);
		if (r < 0 || dev.mode == DEVICE_MODE_KLIPPER_APP) {
			fprintf(
			    stderr,
			    "skrflashctl flash: %s on port %s %s: it has neither Katapult nor a "
			    "software way into ROM DFU. To make it flashable: install Katapult, "
			    "use the SD card (firmware.bin), or start it with BOOT0 held for ROM "
			    "DFU.\n",
			    board_title(board, &dev), port,
			    r < 0 ? "did not come back in a bootloader"
				  : "came back as the Klipper application");
			goto out;
		}
		waiter_stop(&w);
	}
	if (!be)
		be = backend_for_mode(dev.mode);
	if (!be || be->mode != dev.mode) {
		fprintf(stderr, "skrflashctl flash: port %s is in mode %s, which %s cannot flash\n",
			port, device_mode_to_string(dev.mode), be ? be->name : "skrflash");
		goto out;
	}

	memset(&plan, 0, sizeof(plan));
	(void)str_copy(plan.action, sizeof(plan.action), "flash");
	(void)str_copy(plan.method, sizeof(plan.method), be->name);
	plan.dev = dev;
	(void)str_copy(plan.board, sizeof(plan.board), board ? board : "");
	if (!str_copy(plan.image_path, sizeof(plan.image_path), file)) {
		fprintf(stderr, "skrflashctl flash: file name too long\n");
		goto out;
	}
	plan.interface = CONFIG_INTERFACE_USB;
	plan.window = window;
	plan.force = force;

	/* arm the boot check before the bootloader starts the application */
	r = waiter_start(&w, udev, port);
	if (r < 0) {
		fprintf(stderr, "skrflashctl flash: udev monitor: %s\n", strerror(-r));
		goto out;
	}
	/* a device that has just enumerated may not be ready for a moment (udev still applying
	 * permissions, the bootloader still starting): retry only a failed open, which wrote
	 * nothing */
	/* the daemon kills a stuck worker after its step timeout; here nobody would: the
	 * whole write has a deadline too */
	(void)signal(SIGALRM, on_flash_timeout);
	alarm(ONESHOT_FLASH_TIMEOUT_S);
	for (unsigned attempt = 0;; attempt++) {
		(void)worker_execute(&plan, &ev, &rep);
		if (rep.ok || strcmp(rep.step, "open") != 0 || attempt >= 4)
			break;
		log_debug("oneshot: open failed (%s), retrying", rep.error);
		(void)poll(NULL, 0, 250);
	}
	alarm(0);
	progress_break(&bar);
	if (!rep.ok) {
		fprintf(stderr, "skrflashctl flash: %s failed: %s\n", rep.step, rep.error);
		if (strcmp(rep.step, "open") != 0)
			fprintf(stderr,
				"  the board stays in its bootloader (%s); nothing was "
				"started\n",
				device_mode_to_string(dev.mode));
		goto out;
	}
	r = waiter_wait(&w, 1u << DEVICE_MODE_KLIPPER_APP, false, &dev);
	if (r < 0) {
		fprintf(stderr,
			"skrflashctl flash: written and verified, but the application did not come "
			"back on port %s within %d s\n",
			port, ONESHOT_WAIT_MS / 1000);
		goto out;
	}
	if (waiter_stays(&w) < 0) {
		fprintf(stderr,
			"skrflashctl flash: written and verified, but the application on port %s "
			"came back and left again within %u ms: it boot-loops; flash a working "
			"image (the board may be in its bootloader now)\n",
			port, WORKER_APP_STABLE_MS);
		goto out;
	}
	printf("flashed %" PRIu64 " bytes (%u erases, %u transfers) via %s; %s is back on port "
	       "%s as %s\n",
	       rep.bytes, rep.erases, rep.transfers, be->name, board_title(board, &dev), port,
	       dev.tty[0] ? dev.tty : "the application");
	ret = 0;
out:
	waiter_stop(&w);
	udev_unref(udev);
	return ret;
}

/* `skrflashctl reboot --device PATH [--board NAME]`: ask the bootloader the board sits in to
 * start the application already in flash, and wait until it stays up. */
int
oneshot_reboot(int argc, char **argv)
{
	const char *device = NULL, *board = NULL;
	struct worker_plan plan;
	struct worker_report rep;
	struct waiter w = {0};
	struct device dev;
	struct udev *udev = NULL;
	char port[64];
	int r, ret = 1;

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--device") == 0 && i + 1 < argc)
			device = argv[++i];
		else if (strcmp(argv[i], "--board") == 0 && i + 1 < argc)
			board = argv[++i];
		else if (argv[i][0] != '-' && !device) {
			fprintf(stderr,
				"skrflashctl reboot: rebooting a board through the daemon is not "
				"available yet: use --device PATH\n");
			return 2;
		} else {
			fprintf(stderr, "Usage: skrflashctl reboot --device PATH [--board NAME]\n");
			return 2;
		}
	}
	if (!device) {
		fprintf(stderr, "Usage: skrflashctl reboot --device PATH [--board NAME]\n");
		return 2;
	}
	if (board && !catalog_find(board)) {
		fprintf(stderr, "skrflashctl reboot: unknown board '%s'\n", board);
		return 2;
	}
	udev = udev_new();
	if (!udev) {
		fprintf(stderr, "skrflashctl reboot: libudev unavailable\n");
		return 1;
	}
	r = find_port(udev, device, port, sizeof(port));
	if (r < 0 || !device_from_port(udev, port, &dev)) {
		fprintf(stderr, "skrflashctl reboot: no USB device found for %s\n", device);
		goto out;
	}
	switch (dev.mode) {
	case DEVICE_MODE_KLIPPER_APP:
		printf("%s on port %s already runs the application\n", board_title(board, &dev),
		       port);
		ret = 0;
		goto out;
	case DEVICE_MODE_KATAPULT:
	case DEVICE_MODE_STM32_ROM_DFU:
	case DEVICE_MODE_RP2040_BOOTSEL:
	case DEVICE_MODE_LPC_DFU: /* the zero-length DNLOAD starts the app (flash/lpcdfu.c) */
		break;
	case DEVICE_MODE_NONE:
	case DEVICE_MODE_MARLIN_LPC:
	case DEVICE_MODE_MARLIN_STM32:
	case _DEVICE_MODE_MAX:
	default:
		fprintf(stderr,
			"skrflashctl reboot: port %s is in mode %s, which skrflash cannot ask to "
			"start the application: press reset or power-cycle the board\n",
			port, device_mode_to_string(dev.mode));
		goto out;
	}
	memset(&plan, 0, sizeof(plan));
	(void)str_copy(plan.action, sizeof(plan.action), "reboot");
	plan.dev = dev;
	(void)str_copy(plan.board, sizeof(plan.board), board ? board : "");
	plan.interface = CONFIG_INTERFACE_USB;
	r = waiter_start(&w, udev, port);
	if (r < 0) {
		fprintf(stderr, "skrflashctl reboot: udev monitor: %s\n", strerror(-r));
		goto out;
	}
	(void)worker_execute(&plan, NULL, &rep);
	if (!rep.ok) {
		fprintf(stderr, "skrflashctl reboot: %s failed: %s\n", rep.step, rep.error);
		goto out;
	}
	if (waiter_wait(&w, 1u << DEVICE_MODE_KLIPPER_APP, false, &dev) < 0) {
		fprintf(stderr,
			"skrflashctl reboot: the bootloader on port %s left, but no application "
			"came up within %d s: the application in flash may be damaged; flash it "
			"again\n",
			port, ONESHOT_WAIT_MS / 1000);
		goto out;
	}
	if (waiter_stays(&w) < 0) {
		fprintf(stderr,
			"skrflashctl reboot: the application on port %s came up and left again "
			"within %u ms: it boot-loops; flash a working image\n",
			port, WORKER_APP_STABLE_MS);
		goto out;
	}
	printf("%s on port %s runs the application again (%s)\n", board_title(board, &dev), port,
	       dev.tty[0] ? dev.tty : "no tty");
	ret = 0;
out:
	waiter_stop(&w);
	udev_unref(udev);
	return ret;
}
