/* SPDX-License-Identifier: GPL-2.0-or-later */
/* sim: the board simulator core: testbed, USB identities per mode, plug/unplug like the
 * kernel, the 1200-baud touch, the boot model and the service thread.
 *
 * Every tty is a pty made here rather than by umockdev, because umockdev 0.17 aborts when a
 * tty name is re-added and its own nodes fail isatty(); see research umockdev.md §3. */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "sdboot.h"
#include "sdcard.h"
#include "sim_int.h"
#include "util.h"

#if __has_include("dfuse.h")
#include "dfuse.h"
#define SIM_HAVE_DFUSE 1
#else
#define SIM_HAVE_DFUSE 0
#endif
#include "lpcdfu.h"
#include "picoboot.h"

#define PCI_DEV "0000:00:14.0"
#define SYS_USB_PARENT "/devices/pci0000:00/" PCI_DEV
#define PROBE_US 20000 /* how often a closed tty is checked for an unnoticed open */
/* a Katapult tty (no ioctl handler to report its open) is checked every FAST_PROBE_US for
 * FAST_PROBE_FOR_US after it appears, when a host opens it */
#define FAST_PROBE_US 500
#define FAST_PROBE_FOR_US 3000000

static const char *const mode_names[_SIM_MODE_MAX] = {
    [SIM_MODE_OFF] = "off",
    [SIM_MODE_KLIPPER_APP] = "klipper-app",
    [SIM_MODE_KATAPULT] = "katapult",
    [SIM_MODE_ROM_DFU] = "stm32-rom-dfu",
    [SIM_MODE_LPC_DFU] = "lpc-dfu",
    [SIM_MODE_BOOTSEL] = "bootsel",
    [SIM_MODE_MARLIN_LPC] = "marlin-lpc",
    [SIM_MODE_MARLIN_STM32] = "marlin-stm32",
};

const char *
sim_mode_to_string(enum sim_mode mode)
{
	if ((unsigned)mode >= _SIM_MODE_MAX)
		return "unknown";
	return mode_names[mode];
}

int
sim_mode_from_string(const char *s, enum sim_mode *ret)
{
	static const struct {
		const char *name;
		enum sim_mode mode;
	} aliases[] = {
	    {"klipper", SIM_MODE_KLIPPER_APP},
	    {"app", SIM_MODE_KLIPPER_APP},
	    {"rom-dfu", SIM_MODE_ROM_DFU},
	    {"dfu", SIM_MODE_ROM_DFU},
	};

	for (size_t i = 0; i < _SIM_MODE_MAX; i++)
		if (strcmp(s, mode_names[i]) == 0) {
			*ret = (enum sim_mode)i;
			return 0;
		}
	for (size_t i = 0; i < ELEMENTSOF(aliases); i++)
		if (strcmp(s, aliases[i].name) == 0) {
			*ret = aliases[i].mode;
			return 0;
		}
	return -EINVAL;
}

uint64_t
sim_now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

void
sim_wake(struct sim *s)
{
	uint64_t one = 1;

	(void)!write(s->wake_fd, &one, sizeof(one));
}

uint32_t
sim_board_delay_us(const struct sim_board *b, uint32_t base_us, uint32_t min_us)
{
	double d = (double)base_us * b->speed;

	if (d < (double)min_us)
		return min_us;
	if (d > 60e6)
		return 60000000u;
	return (uint32_t)d;
}

/* ---- preload ---------------------------------------------------------------------- */

#ifdef __SANITIZE_ADDRESS__
extern void __asan_init(void);
#endif

void
sim_init(int argc, char **argv)
{
	const char *p = getenv("LD_PRELOAD");
	const char *first = "";
	char *asan = NULL, *np;

	(void)argc;
	if (p && strstr(p, "libumockdev-preload"))
		return;
#ifdef __SANITIZE_ADDRESS__
	{
		/* ASan insists on coming first in the initial library list (umockdev.md §5) */
		Dl_info di;
		const char *opts = getenv("ASAN_OPTIONS");

		if (dladdr((void *)(uintptr_t)__asan_init, &di) && di.dli_fname)
			first = asan = xasprintf("%s:", di.dli_fname);
		/* children get the caller's options back; the GLib harness leaks a little by design
		 */
		setenv("SKRSIM_ASAN_OPTIONS", opts ? opts : "", 1);
		np = xasprintf("%s%sdetect_leaks=0", opts ? opts : "", opts && *opts ? ":" : "");
		setenv("ASAN_OPTIONS", np, 1);
		free(np);
	}
#endif
	np = xasprintf("%slibumockdev-preload.so.0%s%s", first, p && *p ? ":" : "", p ? p : "");
	setenv("LD_PRELOAD", np, 1);
	execv("/proc/self/exe", argv);
	fprintf(stderr, "sim: cannot re-exec under the umockdev preload: %s\n", strerror(errno));
	free(np);
	free(asan);
	exit(99);
}

/* ---- identities (protocols.md §1.4-1.5) ------------------------------------------- */

enum layout {
	LAYOUT_CDC,	/* CDC-ACM: comm if00 (tty) + data if01 */
	LAYOUT_CDC_MSC, /* Marlin LPC: CDC if00/if01 + mass storage if02 */
	LAYOUT_DFUSE,	/* STM32 ROM: DfuSe interface */
	LAYOUT_DFU,	/* smoothie-style LPC DFU 1.1 */
	LAYOUT_BOOTSEL, /* RP2040: mass storage if00 + PICOBOOT vendor if01 */
};

struct ident {
	uint16_t vid, pid, bcd;
	const char *manufacturer;
	char product[64];
	char serial[64];
	enum layout layout;
};

static size_t
uid_bytes(const struct sim_board *b, uint8_t *out, size_t max)
{
	size_t n = 0;

	for (const char *c = b->uid; c[0] && c[1] && n < max; c += 2) {
		unsigned v;

		if (sscanf(c, "%2x", &v) != 1)
			break;
		out[n++] = (uint8_t)v;
	}
	return n;
}

/* ST's USB device library: serial = hex(UID word0 + word2) followed by the top 16 bits of
 * word1, 12 characters; the ROM bootloader and STM32duino CDC use the same scheme. */
static void
st_serial(const struct sim_board *b, char *buf, size_t len)
{
	uint8_t u[16] = {0};
	uint32_t w0, w1, w2;

	(void)uid_bytes(b, u, sizeof(u));
	w0 = (uint32_t)u[0] | (uint32_t)u[1] << 8 | (uint32_t)u[2] << 16 | (uint32_t)u[3] << 24;
	w1 = (uint32_t)u[4] | (uint32_t)u[5] << 8 | (uint32_t)u[6] << 16 | (uint32_t)u[7] << 24;
	w2 = (uint32_t)u[8] | (uint32_t)u[9] << 8 | (uint32_t)u[10] << 16 | (uint32_t)u[11] << 24;
	snprintf(buf, len, "%08X%04X", w0 + w2, w1 >> 16);
}

static int
ident_for(const struct sim_board *b, enum sim_mode mode, struct ident *id)
{
	const struct catalog_mcu *mcu = b->model->mcu;

	memset(id, 0, sizeof(*id));
	id->bcd = 0x0100;
	switch (mode) {
	case SIM_MODE_KLIPPER_APP:
	case SIM_MODE_KATAPULT:
		id->vid = 0x1d50;
		id->pid = mode == SIM_MODE_KATAPULT ? 0x6177 : 0x614e;
		id->manufacturer = mode == SIM_MODE_KATAPULT ? "katapult" : "Klipper";
		snprintf(id->product, sizeof(id->product), "%s", mcu->name);
		snprintf(id->serial, sizeof(id->serial), "%s", b->uid);
		id->layout = LAYOUT_CDC;
		return 0;
	case SIM_MODE_ROM_DFU:
		id->vid = 0x0483;
		id->pid = 0xdf11;
		id->bcd = 0x2200;
		id->manufacturer = "STMicroelectronics";
		snprintf(id->product, sizeof(id->product), "DFU in FS Mode");
		st_serial(b, id->serial, sizeof(id->serial));
		id->layout = LAYOUT_DFUSE;
		return 0;
	case SIM_MODE_LPC_DFU:
		/* the community bootloader's descriptor (lpcdfu.c: dfu.c of triffid's and
		 * ardiehl's LPC17xx-DFU-Bootloader); no serial number */
		id->vid = LPCDFU_VID;
		id->pid = LPCDFU_PID;
		id->bcd = LPCDFU_BCD_DEVICE;
		id->manufacturer = "SmoothieWare";
		snprintf(id->product, sizeof(id->product), "Smoothie");
		id->layout = LAYOUT_DFU;
		return 0;
	case SIM_MODE_BOOTSEL:
		id->vid = 0x2e8a;
		id->pid = 0x0003;
		id->bcd = 0x0100;
		id->manufacturer = "Raspberry Pi";
		snprintf(id->product, sizeof(id->product), "RP2 Boot");
		/* not unique on RP2040: every chip reports the same (§1.4) */
		snprintf(id->serial, sizeof(id->serial), "E0C9125B0D9B");
		id->layout = LAYOUT_BOOTSEL;
		return 0;
	case SIM_MODE_MARLIN_LPC:
		id->vid = 0x1d50;
		id->pid = 0x6029;
		id->manufacturer = "marlinfw.org";
		snprintf(id->product, sizeof(id->product), "Marlin USB Device");
		snprintf(id->serial, sizeof(id->serial), "1.00000000000");
		id->layout = LAYOUT_CDC_MSC;
		return 0;
	case SIM_MODE_MARLIN_STM32: {
		/* "<USB_PRODUCT> CDC in FS Mode", USB_PRODUCT = MARLIN_ + chip without package */
		size_t n = strlen(mcu->chip);

		id->vid = 0x0483;
		id->pid = 0x5740;
		id->bcd = 0x0200;
		id->manufacturer = "STMicroelectronics";
		snprintf(id->product, sizeof(id->product), "MARLIN_%.*s CDC in FS Mode",
			 (int)(n > 2 ? n - 2 : n), mcu->chip);
		st_serial(b, id->serial, sizeof(id->serial));
		id->layout = LAYOUT_CDC;
		return 0;
	}
	case SIM_MODE_OFF:
	case _SIM_MODE_MAX:
	default:
		return -EINVAL;
	}
}

/* udev's whitespace and character replacement for ID_VENDOR/ID_MODEL/ID_SERIAL (§1.5) */
static void
udev_clean(const char *in, char *out, size_t len)
{
	size_t o = 0;
	bool space = false;

	while (*in == ' ' || *in == '\t')
		in++;
	for (; *in && o + 1 < len; in++) {
		unsigned char c = (unsigned char)*in;

		if (c == ' ' || c == '\t' || c == '\n') {
			space = true;
			continue;
		}
		if (space && o + 2 < len)
			out[o++] = '_';
		space = false;
		if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		    strchr("#+-.:=@_", c))
			out[o++] = (char)c;
		else
			out[o++] = '_';
	}
	out[o] = '\0';
}

static void
udev_encode(const char *in, char *out, size_t len)
{
	size_t o = 0;

	for (; *in && o + 5 < len; in++) {
		if (*in == ' ' || *in == '\\') {
			o += (size_t)snprintf(out + o, len - o, "\\x%02x", (unsigned char)*in);
			continue;
		}
		out[o++] = *in;
	}
	out[o] = '\0';
}

/* ---- descriptors ------------------------------------------------------------------ */

struct desc {
	uint8_t d[512];
	size_t n;
};

static void
desc_put(struct desc *d, size_t n, ...)
{
	va_list ap;

	va_start(ap, n);
	for (size_t i = 0; i < n && d->n < sizeof(d->d); i++)
		d->d[d->n++] = (uint8_t)va_arg(ap, int);
	va_end(ap);
}

#define LO(x) ((x)&0xff)
#define HI(x) (((x) >> 8) & 0xff)

static void
desc_iface(struct desc *d, int num, int neps, int cls, int sub, int proto, int istr)
{
	desc_put(d, 9, 9, 4, num, 0, neps, cls, sub, proto, istr);
}

static void
desc_ep(struct desc *d, int addr, int type, int size, int interval)
{
	desc_put(d, 7, 7, 5, addr, type, LO(size), HI(size), interval);
}

static void
desc_cdc(struct desc *d, int first)
{
	desc_iface(d, first, 1, 0x02, 0x02, 0x00, 0);
	desc_put(d, 5, 5, 0x24, 0x00, 0x10, 0x01);	 /* header, CDC 1.10 */
	desc_put(d, 5, 5, 0x24, 0x01, 0x00, first + 1);	 /* call management */
	desc_put(d, 4, 4, 0x24, 0x02, 0x02);		 /* ACM: line coding */
	desc_put(d, 5, 5, 0x24, 0x06, first, first + 1); /* union */
	desc_ep(d, 0x80 | (first + 2), 0x03, 16, 255);
	desc_iface(d, first + 1, 2, 0x0a, 0x00, 0x00, 0);
	desc_ep(d, 0x01 + first, 0x02, 64, 0);
	desc_ep(d, 0x81 + first, 0x02, 64, 0);
}

static size_t
build_descriptors(const struct ident *id, uint8_t *out, size_t len, unsigned *ret_ifaces)
{
	struct desc d = {.n = 0};
	size_t cfg;
	unsigned nif = 1;
	int dev_class = 0, dev_sub = 0, dev_proto = 0;

	switch (id->layout) {
	case LAYOUT_CDC:
		dev_class = 0x02;
		nif = 2;
		break;
	case LAYOUT_CDC_MSC:
		dev_class = 0xef;
		dev_sub = 0x02;
		dev_proto = 0x01;
		nif = 3;
		break;
	case LAYOUT_BOOTSEL:
		nif = 2;
		break;
	case LAYOUT_DFUSE:
	case LAYOUT_DFU:
		nif = 1;
		break;
	}
	/* USB 2.0 §9.6.1 device descriptor */
	desc_put(&d, 18, 18, 1, 0x00, 0x02, dev_class, dev_sub, dev_proto, 64, LO(id->vid),
		 HI(id->vid), LO(id->pid), HI(id->pid), LO(id->bcd), HI(id->bcd), 1, 2,
		 id->serial[0] ? 3 : 0, 1);
	cfg = d.n;
	desc_put(&d, 9, 9, 2, 0, 0, nif, 1, 0, 0xc0, 50);
	switch (id->layout) {
	case LAYOUT_CDC:
		desc_cdc(&d, 0);
		break;
	case LAYOUT_CDC_MSC:
		desc_put(&d, 8, 8, 0x0b, 0, 2, 0x02, 0x02, 0x00, 0); /* IAD */
		desc_cdc(&d, 0);
		desc_iface(&d, 2, 2, 0x08, 0x06, 0x50, 0);
		desc_ep(&d, 0x05, 0x02, 64, 0);
		desc_ep(&d, 0x85, 0x02, 64, 0);
		break;
	case LAYOUT_DFUSE:
		desc_iface(&d, 0, 0, 0xfe, 0x01, 0x02, 4);
		/* DFU functional: CanDnload|CanUpload|WillDetach, 255 ms, 2048, DfuSe 1.1a */
		desc_put(&d, 9, 9, 0x21, 0x0b, 255, 0, LO(2048), HI(2048), 0x1a, 0x01);
		break;
	case LAYOUT_DFU:
		desc_iface(&d, 0, 0, 0xfe, 0x01, 0x02, 0);
		desc_put(&d, 9, 9, 0x21, 0x0d, 0, 0x10, LO(512), HI(512), 0x10, 0x01);
		break;
	case LAYOUT_BOOTSEL:
		desc_iface(&d, 0, 2, 0x08, 0x06, 0x50, 0);
		desc_ep(&d, 0x81, 0x02, 64, 0);
		desc_ep(&d, 0x02, 0x02, 64, 0);
		desc_iface(&d, 1, 2, 0xff, 0x00, 0x00, 0);
		desc_ep(&d, 0x03, 0x02, 64, 0);
		desc_ep(&d, 0x84, 0x02, 64, 0);
		break;
	}
	d.d[cfg + 2] = (uint8_t)LO(d.n - cfg);
	d.d[cfg + 3] = (uint8_t)HI(d.n - cfg);
	*ret_ifaces = nif;
	if (d.n > len)
		return 0;
	memcpy(out, d.d, d.n);
	return d.n;
}

/* ---- testbed plumbing ------------------------------------------------------------- */

static void sb_printf(char **buf, size_t *len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
sb_printf(char **buf, size_t *len, const char *fmt, ...)
{
	va_list ap;
	char *add;
	int n;

	va_start(ap, fmt);
	n = vasprintf(&add, fmt, ap);
	va_end(ap);
	if (n < 0)
		abort();
	*buf = xreallocarray(*buf, *len + (size_t)n + 1, 1);
	memcpy(*buf + *len, add, (size_t)n + 1);
	*len += (size_t)n;
	free(add);
}

static char *
hex_string(const uint8_t *d, size_t n)
{
	char *s = xmalloc(2 * n + 1);

	for (size_t i = 0; i < n; i++)
		snprintf(s + 2 * i, 3, "%02x", d[i]);
	s[2 * n] = '\0';
	return s;
}

static int
tty_alloc(struct sim *s)
{
	/* SKRSIM_TTY_BASE: testbeds run side by side number their ttys apart, so that a process
	 * scanning the real /proc for a tty's holder (by device number) sees only its own */
	const char *base = getenv("SKRSIM_TTY_BASE");
	int first = base ? atoi(base) : 0;

	for (int i = first > 0 && first < SIM_MAX_TTYS ? first : 0; i < SIM_MAX_TTYS; i++)
		if (!s->tty_used[i]) {
			s->tty_used[i] = true;
			return i;
		}
	return -1;
}

/* A pty standing in for /dev/ttyACMn: raw master, slave opened once so that the master
 * reports POLLHUP exactly while no client has the tty open. */
static int
make_pty(char **ret_pts)
{
	int m = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC | O_NONBLOCK);
	int sl;
	struct termios t;

	if (m < 0 || grantpt(m) < 0 || unlockpt(m) < 0)
		goto fail;
	sl = open(ptsname(m), O_RDWR | O_NOCTTY | O_CLOEXEC);
	if (sl < 0)
		goto fail;
	if (tcgetattr(m, &t) == 0) {
		cfmakeraw(&t);
		(void)tcsetattr(m, TCSANOW, &t);
	}
	close(sl);
	*ret_pts = xstrdup(ptsname(m));
	sim_share_tree(*ret_pts);
	return m;
fail:
	if (m >= 0)
		close(m);
	return -1;
}

static void
on_client_connected(UMockdevIoctlBase *h, UMockdevIoctlClient *c, gpointer data)
{
	struct sim_board *b = data;

	(void)h;
	(void)c;
	atomic_fetch_add(&b->open_events, 1);
	sim_wake(b->sim);
}

/* The tty's ioctls: modem lines are emulated (a pty has none), the rest runs on the pty. */
static gboolean
on_tty_ioctl(UMockdevIoctlBase *h, UMockdevIoctlClient *c, gpointer data)
{
	struct sim_board *b = data;
	gulong req = umockdev_ioctl_client_get_request(c);
	UMockdevIoctlData *arg = umockdev_ioctl_client_get_arg(c);
	GError *err = NULL;
	int e = 0, r;

	(void)h;
	if (req == TIOCMGET || req == TIOCMSET || req == TIOCMBIS || req == TIOCMBIC) {
		UMockdevIoctlData *d = umockdev_ioctl_data_resolve(arg, 0, sizeof(int), &err);
		int v;

		if (!d) {
			g_clear_error(&err);
			umockdev_ioctl_client_complete(c, -1, EFAULT);
			return TRUE;
		}
		memcpy(&v, d->data, sizeof(v));
		if (req == TIOCMGET) {
			v = atomic_load(&b->modem_bits);
			memcpy(d->data, &v, sizeof(v));
		} else if (req == TIOCMSET) {
			atomic_store(&b->modem_bits, v);
		} else if (req == TIOCMBIS) {
			atomic_fetch_or(&b->modem_bits, v);
		} else {
			atomic_fetch_and(&b->modem_bits, ~v);
		}
		g_object_unref(d);
		umockdev_ioctl_client_complete(c, 0, 0);
		return TRUE;
	}
	if (req == TIOCEXCL || req == TIOCNXCL) {
		/* a ttyACM forgets TIOCEXCL at its last close; the pty behind it lives on while
		 * the simulator holds its master and would refuse every later open by a user
		 * without CAP_SYS_ADMIN (the daemon in production): accepted, not applied */
		umockdev_ioctl_client_complete(c, 0, 0);
		return TRUE;
	}
	r = umockdev_ioctl_client_execute(c, &e, &err);
	g_clear_error(&err);
	umockdev_ioctl_client_complete(c, r, e);
	return TRUE;
}

static char *
dev_path(const struct sim *s, const char *devname)
{
	return xasprintf("%s%s", s->root, devname);
}

static void
attach_tty_handler(struct sim_board *b)
{
	const char *paths[] = {b->tty, b->by_id, b->by_path};
	GError *err = NULL;

	b->tty_handler = umockdev_ioctl_base_new();
	g_signal_connect(b->tty_handler, "client-connected", G_CALLBACK(on_client_connected), b);
	g_signal_connect(b->tty_handler, "handle-ioctl", G_CALLBACK(on_tty_ioctl), b);
	/* Marlin on LPC176x has one serial for every board: a second one's by-id link is the
	 * first one's (udev makes it point at the newest); and every bus hangs off one PCI
	 * controller here, so "1-2" and "2-2" share a by-path name. umockdev takes one handler
	 * per path: a link another board serves stays with it. */
	b->links_handled = 0;
	for (size_t i = 1; i < ELEMENTSOF(paths); i++) {
		bool taken = false;

		for (size_t k = 0; k < b->sim->n_boards && paths[i]; k++) {
			const struct sim_board *o = b->sim->boards[k];
			const char *op = i == 1 ? o->by_id : o->by_path;

			taken |= o != b && o->tty_handler && (o->links_handled & (1u << i)) && op &&
				 strcmp(op, paths[i]) == 0;
		}
		if (!taken)
			b->links_handled |= 1u << i;
	}
	for (size_t i = 0; i < ELEMENTSOF(paths); i++) {
		if (!paths[i] || (i > 0 && !(b->links_handled & (1u << i))))
			continue;
		if (!umockdev_testbed_attach_ioctl(b->sim->tb, paths[i], b->tty_handler, &err)) {
			fprintf(stderr, "sim: attach ioctl %s: %s\n", paths[i], err->message);
			g_clear_error(&err);
		}
	}
}

static void
detach_tty_handler(struct sim_board *b)
{
	const char *paths[] = {b->tty, b->by_id, b->by_path};
	GError *err = NULL;

	if (!b->tty_handler)
		return;
	for (size_t i = 0; i < ELEMENTSOF(paths); i++) {
		if (i > 0 && !(b->links_handled & (1u << i)))
			continue;
		if (paths[i] && !umockdev_testbed_detach_ioctl(b->sim->tb, paths[i], &err))
			g_clear_error(&err);
	}
	g_object_unref(b->tty_handler);
	b->tty_handler = NULL;
}

#if SIM_HAVE_DFUSE
static void
on_dfuse_leave(void *ctx, uint32_t jump_addr)
{
	struct sim_board *b = ctx;

	(void)jump_addr;
	atomic_fetch_add(&b->leave_requests, 1);
	sim_wake(b->sim);
}
#endif

/* PICOBOOT REBOOT acknowledged: the chip leaves the bus and boots (boot() decides into what) */
static void
on_picoboot_reboot(void *ctx, uint32_t pc, uint32_t delay_ms)
{
	struct sim_board *b = ctx;

	(void)pc;
	(void)delay_ms;
	atomic_fetch_add(&b->leave_requests, 1);
	sim_wake(b->sim);
}

static void
on_picoboot_unplug(void *ctx)
{
	struct sim_board *b = ctx;

	atomic_fetch_add(&b->power_cuts, 1);
	sim_wake(b->sim);
}

/* LPC DFU manifest: the bootloader disconnects and jumps to the application (boot model) */
static void
on_lpcdfu_manifest(void *ctx)
{
	struct sim_board *b = ctx;

	atomic_fetch_add(&b->leave_requests, 1);
	sim_wake(b->sim);
}

/* SIM_FAULT_UNPLUG_AT_BYTE (an address, below the app start counted from it) and
 * SIM_FAULT_DFU_ERR_WRITE (the at-th block, errPROG: the bootloader's only write error) */
static void
apply_lpcdfu_fault(struct sim_board *b)
{
	uint32_t at = b->fault.at < b->app_start ? b->app_start + b->fault.at : b->fault.at;

	lpcdfu_set_unplug_at(b->lpcdfu, at,
			     b->fault.kind == SIM_FAULT_UNPLUG_AT_BYTE ? on_picoboot_unplug : NULL,
			     b);
	lpcdfu_fail_write_at(b->lpcdfu, b->fault.kind == SIM_FAULT_DFU_ERR_WRITE
					    ? (b->fault.at ? b->fault.at : 1)
					    : 0);
}

/* SIM_FAULT_UNPLUG_AT_BYTE counts written bytes; SIM_FAULT_PICOBOOT_REFUSE WRITEs */
static void
apply_picoboot_fault(struct sim_board *b)
{
	if (b->fault.kind == SIM_FAULT_UNPLUG_AT_BYTE)
		picoboot_sim_fault(b->picoboot, PICOBOOT_SIM_FAULT_UNPLUG, b->fault.at, 0);
	else if (b->fault.kind == SIM_FAULT_PICOBOOT_REFUSE)
		picoboot_sim_fault(b->picoboot, PICOBOOT_SIM_FAULT_STATUS, b->fault.at,
				   b->fault.count);
	picoboot_sim_set_busy(b->picoboot, b->fault.kind == SIM_FAULT_PICOBOOT_BUSY);
}

#if SIM_HAVE_DFUSE
static void
apply_dfu_fault(struct sim_board *b)
{
	unsigned nth = b->fault.at ? b->fault.at : 1;

	/* DFU 1.1 §6.1.2 bStatus: errWRITE 0x03, errERASE 0x04, errVERIFY 0x07 */
	switch (b->fault.kind) {
	case SIM_FAULT_DFU_ERR_WRITE:
		dfuse_fail_at(b->dfuse, DFUSE_OP_WRITE, nth, 0x03);
		break;
	case SIM_FAULT_DFU_ERR_VERIFY:
		dfuse_fail_at(b->dfuse, DFUSE_OP_WRITE, nth, 0x07);
		break;
	case SIM_FAULT_DFU_ERR_ERASE:
		dfuse_fail_at(b->dfuse, DFUSE_OP_ERASE, nth, 0x04);
		break;
	case SIM_FAULT_PICOBOOT_REFUSE:
	case SIM_FAULT_PICOBOOT_BUSY:
	case SIM_FAULT_SD_RENAME_FAIL:
	case SIM_FAULT_SD_NO_INIT:
	case SIM_FAULT_NONE:
	case SIM_FAULT_UNPLUG_AT_BYTE:
	case SIM_FAULT_CORRUPT_FRAME:
	case SIM_FAULT_DROP_FRAME:
	case SIM_FAULT_DUP_FRAME:
	case SIM_FAULT_NACK_STORM:
	case SIM_FAULT_STALL:
	case SIM_FAULT_NEVER_BACK:
	case SIM_FAULT_BOOT_FAIL:
	default:
		break;
	}
}
#endif

static void
app_version_from_flash(struct sim_board *b)
{
	struct flash *f = b->flash;
	uint32_t end = f->base + f->size;
	uint32_t len = end - b->app_start > 0x40000 ? 0x40000 : end - b->app_start;
	uint8_t *buf = xmalloc(len);
	char *v = NULL;

	if (flash_read(f, b->app_start, buf, len) == 0)
		v = sim_image_version(buf, len);
	snprintf(b->app_version, sizeof(b->app_version), "%s", v ? v : "");
	free(v);
	free(buf);
}

/* What one plug-in tells udev: the identity, its cleaned and encoded names, the interfaces
 * and the udev database text built from them (sim_board_plug_locked's steps share it). */
struct plug {
	struct ident id;
	uint8_t descr[512];
	size_t dlen;
	unsigned nif;
	char vendor[80], model[80], serial_clean[80], id_serial[256], venc[160], menc[160];
	char *txt;
	size_t tlen;
	const char *iface_driver[3];
	int ifclass[3][3];
	char id_usb_interfaces[64];
};

/* the interface classes and kernel drivers of each USB layout */
static void
plug_interfaces(struct plug *p)
{
	const char **iface_driver = p->iface_driver;
	int(*ifclass)[3] = p->ifclass;

	switch (p->id.layout) {
	case LAYOUT_CDC:
		iface_driver[0] = iface_driver[1] = "cdc_acm";
		ifclass[0][0] = 2, ifclass[0][1] = 2, ifclass[0][2] = 0;
		ifclass[1][0] = 0x0a;
		break;
	case LAYOUT_CDC_MSC:
		iface_driver[0] = iface_driver[1] = "cdc_acm";
		iface_driver[2] = "usb-storage";
		ifclass[0][0] = 2, ifclass[0][1] = 2, ifclass[0][2] = 0;
		ifclass[1][0] = 0x0a;
		ifclass[2][0] = 8, ifclass[2][1] = 6, ifclass[2][2] = 0x50;
		break;
	case LAYOUT_DFUSE:
	case LAYOUT_DFU:
		ifclass[0][0] = 0xfe, ifclass[0][1] = 1, ifclass[0][2] = 2;
		break;
	case LAYOUT_BOOTSEL:
		iface_driver[0] = "usb-storage";
		ifclass[0][0] = 8, ifclass[0][1] = 6, ifclass[0][2] = 0x50;
		ifclass[1][0] = 0xff;
		break;
	}
}

/* the DFU bootloaders describe themselves: their descriptors replace the generic ones */
static void
plug_dfu_models(struct sim_board *b, struct plug *p)
{
#if SIM_HAVE_DFUSE
	if (p->id.layout == LAYOUT_DFUSE) {
		size_t n;

		b->dfuse = dfuse_new(b->flash, p->id.serial);
		if (b->dfuse && b->dfu_layout[0])
			dfuse_set_layout(b->dfuse, b->dfu_layout);
		n = b->dfuse ? dfuse_descriptors(b->dfuse, p->descr, sizeof(p->descr)) : 0;
		if (n > 0 && n <= sizeof(p->descr)) {
			const char *prod = dfuse_string(b->dfuse, DFUSE_STR_PRODUCT);

			p->dlen = n;
			if (prod)
				snprintf(p->id.product, sizeof(p->id.product), "%s", prod);
			apply_dfu_fault(b);
		} else {
			b->dfuse = dfuse_free(b->dfuse);
		}
	}
#endif
	if (p->id.layout == LAYOUT_DFU) {
		size_t n;

		b->lpcdfu = lpcdfu_new(b->flash);
		n = lpcdfu_descriptors(b->lpcdfu, p->descr, sizeof(p->descr));
		if (n <= sizeof(p->descr))
			p->dlen = n;
		apply_lpcdfu_fault(b);
	}
}

/* the bus address, sysfs and /dev names, and udev's cleaned and encoded identity strings */
static void
plug_names(struct sim_board *b, struct plug *p)
{
	struct sim *s = b->sim;

	for (unsigned i = 0; i < p->nif && i < 3; i++) {
		size_t l = strlen(p->id_usb_interfaces);

		snprintf(p->id_usb_interfaces + l, sizeof(p->id_usb_interfaces) - l,
			 "%02x%02x%02x:", p->ifclass[i][0], p->ifclass[i][1], p->ifclass[i][2]);
	}
	if (++s->next_devnum[b->bus] > 127 || s->next_devnum[b->bus] < 2)
		s->next_devnum[b->bus] = 2;
	b->devnum = s->next_devnum[b->bus];
	b->n_ifaces = p->nif;
	b->syspath = xasprintf("/sys" SYS_USB_PARENT "/usb%d/%s", b->bus, b->port);
	b->devnode = xasprintf("/dev/bus/usb/%03d/%03d", b->bus, b->devnum);
	snprintf(b->serial, sizeof(b->serial), "%s", p->id.serial);
	udev_clean(p->id.manufacturer, p->vendor, sizeof(p->vendor));
	udev_clean(p->id.product, p->model, sizeof(p->model));
	udev_clean(p->id.serial, p->serial_clean, sizeof(p->serial_clean));
	udev_encode(p->id.manufacturer, p->venc, sizeof(p->venc));
	udev_encode(p->id.product, p->menc, sizeof(p->menc));
	if (p->id.serial[0])
		snprintf(p->id_serial, sizeof(p->id_serial), "%s_%s_%s", p->vendor, p->model,
			 p->serial_clean);
	else
		snprintf(p->id_serial, sizeof(p->id_serial), "%s_%s", p->vendor, p->model);
}

/* the usb_device, as the kernel and udev's usb_id/path_id builtins describe it */
static void
plug_usb_device(const struct sim_board *b, struct plug *p)
{
	const struct ident *id = &p->id;
	char *hex = hex_string(p->descr, p->dlen);

	sb_printf(&p->txt, &p->tlen,
		  "P: %s\nN: bus/usb/%03d/%03d\n"
		  "E: DEVNAME=%s\nE: DEVTYPE=usb_device\nE: DRIVER=usb\nE: PRODUCT=%x/%x/%x\n"
		  "E: TYPE=%d/0/0\nE: BUSNUM=%03d\nE: DEVNUM=%03d\nE: MAJOR=189\nE: MINOR=%d\n"
		  "E: SUBSYSTEM=usb\nE: ID_VENDOR=%s\nE: ID_VENDOR_ENC=%s\nE: ID_VENDOR_ID=%04x\n"
		  "E: ID_MODEL=%s\nE: ID_MODEL_ENC=%s\nE: ID_MODEL_ID=%04x\nE: ID_REVISION=%04x\n"
		  "E: ID_SERIAL=%s\n",
		  b->syspath + 4, b->bus, b->devnum, b->devnode, id->vid, id->pid, id->bcd,
		  p->descr[4], b->bus, b->devnum, (b->bus - 1) * 128 + b->devnum - 1, p->vendor,
		  p->venc, id->vid, p->model, p->menc, id->pid, id->bcd, p->id_serial);
	if (id->serial[0])
		sb_printf(&p->txt, &p->tlen, "E: ID_SERIAL_SHORT=%s\n", p->serial_clean);
	sb_printf(&p->txt, &p->tlen,
		  "E: ID_BUS=usb\nE: ID_USB_INTERFACES=%s\nE: ID_PATH=pci-" PCI_DEV "-usb-0:%s\n"
		  "E: ID_PATH_TAG=pci-0000_00_14_0-usb-0_%s\n"
		  "A: idVendor=%04x\nA: idProduct=%04x\nA: bcdDevice=%04x\nA: manufacturer=%s\n"
		  "A: product=%s\n",
		  p->id_usb_interfaces, b->port_path, b->port_path, id->vid, id->pid, id->bcd,
		  id->manufacturer, id->product);
	if (id->serial[0])
		sb_printf(&p->txt, &p->tlen, "A: serial=%s\n", id->serial);
	sb_printf(
	    &p->txt, &p->tlen,
	    "A: busnum=%d\nA: devnum=%d\nA: devpath=%s\nA: speed=12\nA: version= 2.00\n"
	    "A: bConfigurationValue=1\nA: bNumConfigurations=1\nA: bNumInterfaces=%2u\n"
	    "A: bDeviceClass=%02x\nA: bMaxPacketSize0=64\nA: maxchild=0\nA: removable=unknown\n"
	    "A: dev=189:%d\nL: driver=../../../../../bus/usb/drivers/usb\nH: descriptors=%s\n\n",
	    b->bus, b->devnum, b->port_path, p->nif, p->descr[4],
	    (b->bus - 1) * 128 + b->devnum - 1, hex);
	free(hex);
}

/* its usb_interfaces, with the driver bound to each */
static void
plug_usb_interfaces(struct sim_board *b, struct plug *p)
{
	const struct ident *id = &p->id;

	for (unsigned i = 0; i < p->nif && i < 3; i++) {
		const int *cls = p->ifclass[i];

		sb_printf(&p->txt, &p->tlen,
			  "P: %s/%s:1.%u\nE: DEVTYPE=usb_interface\nE: PRODUCT=%x/%x/%x\n"
			  "E: TYPE=%d/0/0\nE: INTERFACE=%d/%d/%d\nE: SUBSYSTEM=usb\n"
			  "A: bInterfaceNumber=%02x\nA: bAlternateSetting= 0\n"
			  "A: bInterfaceClass=%02x\n"
			  "A: bInterfaceSubClass=%02x\nA: bInterfaceProtocol=%02x\n",
			  b->syspath + 4, b->port, i, id->vid, id->pid, id->bcd, p->descr[4],
			  cls[0], cls[1], cls[2], i, cls[0], cls[1], cls[2]);
		if (p->iface_driver[i])
			sb_printf(&p->txt, &p->tlen,
				  "E: DRIVER=%s\nL: driver=../../../../../../bus/usb/drivers/%s\n",
				  p->iface_driver[i], p->iface_driver[i]);
		sb_printf(&p->txt, &p->tlen, "\n");
		b->iface_has_driver[i] = p->iface_driver[i] != NULL;
	}
}

/* the ttyACMn device of interface 0, as udev's 60-serial.rules describe it */
static void
plug_tty_device(const struct sim_board *b, struct plug *p, int idx)
{
	const struct ident *id = &p->id;
	char *ifpath_tty = xasprintf("%s/%s:1.0/tty/ttyACM%d", b->syspath + 4, b->port, idx);

	sb_printf(&p->txt, &p->tlen,
		  "P: %s\nE: DEVNAME=%s\nE: SUBSYSTEM=tty\nE: MAJOR=166\nE: MINOR=%d\n"
		  "E: DEVLINKS=%s %s\nE: ID_BUS=usb\nE: ID_VENDOR=%s\nE: ID_VENDOR_ENC=%s\n"
		  "E: ID_VENDOR_ID=%04x\nE: ID_MODEL=%s\nE: ID_MODEL_ENC=%s\nE: "
		  "ID_MODEL_ID=%04x\n"
		  "E: ID_REVISION=%04x\nE: ID_SERIAL=%s\nE: ID_SERIAL_SHORT=%s\n"
		  "E: ID_TYPE=generic\nE: ID_USB_INTERFACES=%s\nE: ID_USB_INTERFACE_NUM=00\n"
		  "E: ID_USB_DRIVER=cdc_acm\nE: ID_PATH=pci-" PCI_DEV "-usb-0:%s:1.0\n"
		  "E: ID_PATH_TAG=pci-0000_00_14_0-usb-0_%s_1_0\nE: TAGS=:systemd:\n"
		  "A: dev=166:%d\n\n",
		  ifpath_tty, b->tty, idx, b->by_id, b->by_path, p->vendor, p->venc, id->vid,
		  p->model, p->menc, id->pid, id->bcd, p->id_serial, p->serial_clean,
		  p->id_usb_interfaces, b->port_path, b->port_path, idx);
	free(ifpath_tty);
}

/* the tty node (a symlink to the pty) and udev's by-id and by-path links to it */
static void
plug_tty_links(const struct sim_board *b, const char *pts)
{
	struct sim *s = b->sim;
	char *node = dev_path(s, b->tty), *link_id = dev_path(s, b->by_id);
	char *link_path = dev_path(s, b->by_path), *rel;
	char *d1 = dev_path(s, "/dev/serial/by-id"), *d2 = dev_path(s, "/dev/serial/by-path");

	(void)mkdir_p(d1, 0755);
	(void)mkdir_p(d2, 0755);
	free(d1);
	free(d2);
	unlink(node);
	unlink(link_id);
	unlink(link_path);
	/* udev's links are relative (60-serial.rules SYMLINK+=): ../../ttyACMn */
	rel = xasprintf("../..%s", b->tty + strlen("/dev"));
	if (symlink(pts, node) < 0 || symlink(rel, link_id) < 0 || symlink(rel, link_path) < 0)
		fprintf(stderr, "sim: tty links for %s: %s\n", b->tty, strerror(errno));
	free(rel);
	free(node);
	free(link_id);
	free(link_path);
}

/* CDC: ttyACMn on interface 0, with udev's by-id and by-path links (§1.5). 0 or -errno. */
static int
plug_tty(struct sim_board *b, struct plug *p, enum sim_mode mode)
{
	struct sim *s = b->sim;
	char *pts = NULL;
	int idx = tty_alloc(s);

	if (idx < 0)
		return -ENOSPC;
	b->master_fd = make_pty(&pts);
	if (b->master_fd < 0) {
		s->tty_used[idx] = false;
		return -errno;
	}
	b->tty_index = idx;
	b->tty = xasprintf("/dev/ttyACM%d", idx);
	b->by_id = xasprintf("/dev/serial/by-id/usb-%s-if00", p->id_serial);
	b->by_path = xasprintf("/dev/serial/by-path/pci-" PCI_DEV "-usb-0:%s:1.0", b->port_path);
	plug_tty_device(b, p, idx);
	plug_tty_links(b, pts);
	free(pts);
	atomic_store(&b->modem_bits, TIOCM_DTR | TIOCM_RTS);
	b->open_seen = atomic_load(&b->open_events);
	b->tty_open = false;
	/* attach before the add event: the daemon may open the tty as soon as it sees it.
	 * Without it (spec.plain_katapult_tty), the open is seen by probing. */
	if ((mode != SIM_MODE_KATAPULT || !b->plain_katapult_tty) &&
	    (mode != SIM_MODE_KLIPPER_APP || !b->plain_klipper_tty))
		attach_tty_handler(b);
	else
		b->probe_fast_until_us = sim_now_us() + FAST_PROBE_FOR_US;
	return 0;
}

/* the drives behind a mass-storage interface */
static void
plug_drives(struct sim_board *b, struct plug *p)
{
	struct sim *s = b->sim;

	if (p->id.layout == LAYOUT_BOOTSEL) {
		/* the RPI-RP2 drive behind the mass-storage interface */
		char *ifp = xasprintf("%s/%s:1.0", b->syspath + 4, b->port), *udev = NULL;

		if (sim_drive_create(b, s->root, s->next_drive++, &udev, ifp) == 0)
			sb_printf(&p->txt, &p->tlen, "%s", udev);
		else
			fprintf(stderr, "sim: cannot make the RPI-RP2 drive of %s\n", b->port);
		free(udev);
		free(ifp);
	}
	if (p->id.layout == LAYOUT_CDC_MSC && b->sdcard_path) {
		/* Marlin's SD card behind its mass-storage interface (protocols.md §5.1) */
		char *ifp = xasprintf("%s/%s:1.2", b->syspath + 4, b->port), *udev = NULL;

		if (sim_drive_create_card(b, s->next_drive++, &udev, ifp) == 0)
			sb_printf(&p->txt, &p->tlen, "%s", udev);
		free(udev);
		free(ifp);
	}
}

/* The DfuSe, LPC DFU and PICOBOOT handlers before the device is added: adding it sends the
 * "add" uevent, and the daemon may open the node as soon as it sees it (as another user it
 * needs the handler's socket shared by then, or libumockdev-preload aborts the opener:
 * "Failed to connect to ioctl socket") */
static void
plug_ioctl_models(struct sim_board *b, enum sim_mode mode)
{
	struct sim *s = b->sim;

#if SIM_HAVE_DFUSE
	if (b->dfuse) {
		dfuse_set_leave_cb(b->dfuse, on_dfuse_leave, b);
		if (dfuse_attach(b->dfuse, s->tb, b->devnode) < 0)
			fprintf(stderr, "sim: dfuse attach %s failed\n", b->devnode);
	}
#endif
	if (b->lpcdfu) {
		lpcdfu_set_manifest_cb(b->lpcdfu, on_lpcdfu_manifest, b);
		if (lpcdfu_attach(b->lpcdfu, s->tb, b->devnode) < 0)
			fprintf(stderr, "sim: lpcdfu attach %s failed\n", b->devnode);
	}
	if (mode == SIM_MODE_BOOTSEL) {
		b->picoboot = picoboot_sim_new(b->flash);
		picoboot_sim_set_reboot_cb(b->picoboot, on_picoboot_reboot, b);
		picoboot_sim_set_unplug_cb(b->picoboot, on_picoboot_unplug, b);
		apply_picoboot_fault(b);
		if (picoboot_sim_attach(b->picoboot, s->tb, b->devnode) < 0)
			fprintf(stderr, "sim: picoboot attach %s failed\n", b->devnode);
	}
}

/* the devices into the testbed ("add"), then the kernel's bind events once drivers probed */
static int
plug_add(struct sim_board *b, struct plug *p)
{
	struct sim *s = b->sim;
	GError *err = NULL;

	sim_share_tree(s->root);
	if (!umockdev_testbed_add_from_string(s->tb, p->txt, &err)) {
		fprintf(stderr, "sim: add %s: %s\n", b->port, err->message);
		g_clear_error(&err);
		return -EIO;
	}
	sim_share_tree(s->root);
	for (unsigned i = 0; i < p->nif && i < 3; i++) {
		if (p->iface_driver[i]) {
			char *ip = xasprintf("%s/%s:1.%u", b->syspath, b->port, i);

			umockdev_testbed_uevent(s->tb, ip, "bind");
			free(ip);
		}
	}
	umockdev_testbed_uevent(s->tb, b->syspath, "bind");
	return 0;
}

/* what runs on the board once it is on the bus in `mode` */
static void
plug_start_firmware(struct sim_board *b, enum sim_mode mode)
{
	if (mode == SIM_MODE_KLIPPER_APP) {
		app_version_from_flash(b);
		sim_klipper_boot(b);
	} else {
		b->app_version[0] = '\0';
	}
	if (mode == SIM_MODE_KATAPULT)
		sim_katapult_reset(b);
	if (mode == SIM_MODE_MARLIN_LPC || mode == SIM_MODE_MARLIN_STM32) {
		(void)sim_marlin_app(b);
		sim_marlin_boot(b);
	}
}

int
sim_board_plug_locked(struct sim_board *b, enum sim_mode mode)
{
	struct sim *s = b->sim;
	struct plug p = {.id_usb_interfaces = ":"};
	int r;

	if (mode == SIM_MODE_OFF)
		return sim_board_unplug_locked(b);
	r = ident_for(b, mode, &p.id);
	if (r < 0)
		return r;
	if (b->mode != SIM_MODE_OFF)
		sim_board_unplug_locked(b);
	p.dlen = build_descriptors(&p.id, p.descr, sizeof(p.descr), &p.nif);
	plug_interfaces(&p);
	plug_dfu_models(b, &p);
	plug_names(b, &p);
	plug_usb_device(b, &p);
	plug_usb_interfaces(b, &p);
	b->tty_index = -1;
	b->master_fd = -1;
	if (p.id.layout == LAYOUT_CDC || p.id.layout == LAYOUT_CDC_MSC) {
		r = plug_tty(b, &p, mode);
		if (r < 0)
			goto out;
	}
	plug_drives(b, &p);
	plug_ioctl_models(b, mode);
	r = plug_add(b, &p);
	if (r < 0)
		goto out;
	b->mode = mode;
	b->enumerations++;
	plug_start_firmware(b, mode);
	pthread_cond_broadcast(&s->cond);
	sim_wake(s);
out:
	free(p.txt);
	return r;
}

/* The RPI-RP2 drive leaves with the chip: its block and scsi devices, then the image. */
static void
drive_remove(struct sim_board *b)
{
	struct sim *s = b->sim;
	/* RPI-RP2: mass storage on interface 0; Marlin's card: interface 2 */
	unsigned h = sim_drive_host(b->drive);
	char *scsi = xasprintf("%s/%s:1.%d/host%u/target%u:0:0/%u:0:0:0", b->syspath, b->port,
			       b->mode == SIM_MODE_BOOTSEL ? 0 : 2, h, h, h);
	char *blk = xasprintf("%s/block/%s", scsi, sim_drive_node(b->drive) + 5);

	umockdev_testbed_uevent(s->tb, blk, "remove");
	umockdev_testbed_uevent(s->tb, scsi, "remove");
	umockdev_testbed_remove_device(s->tb, blk);
	umockdev_testbed_remove_device(s->tb, scsi);
	b->drive = sim_drive_free(b->drive);
	free(blk);
	free(scsi);
}

/* The bootloader models leave the bus; their handlers may still be mid-call on umockdev's
 * thread, so a model is parked on the dead list rather than freed. */
static void
unplug_models(struct sim_board *b)
{
	struct sim *s = b->sim;

#if SIM_HAVE_DFUSE
	if (b->dfuse) {
		struct dfuse_stats st;

		/* a leave is no power loss: the download completed and the app is whole */
		dfuse_get_stats(b->dfuse, &st);
		if (dfuse_power_off(b->dfuse))
			b->app_torn = true;
		else if (st.left)
			b->app_torn = false;
		dfuse_detach(b->dfuse, s->tb, b->devnode);
		if (s->n_dead_dfuse < ELEMENTSOF(s->dead_dfuse))
			s->dead_dfuse[s->n_dead_dfuse++] = b->dfuse;
		else
			(void)dfuse_free(b->dfuse);
		b->dfuse = NULL;
	}
#endif
	if (b->lpcdfu) {
		struct lpcdfu_stats st;

		/* the manifest is no power loss: the download ended and the app is whole */
		lpcdfu_get_stats(b->lpcdfu, &st);
		if (lpcdfu_power_off(b->lpcdfu))
			b->app_torn = true;
		else if (st.manifested)
			b->app_torn = false;
		lpcdfu_detach(b->lpcdfu, s->tb, b->devnode);
		if (s->n_dead_lpcdfu < ELEMENTSOF(s->dead_lpcdfu))
			s->dead_lpcdfu[s->n_dead_lpcdfu++] = b->lpcdfu;
		else
			(void)lpcdfu_free(b->lpcdfu);
		b->lpcdfu = NULL;
	}
	if (b->picoboot) {
		picoboot_sim_detach(b->picoboot, s->tb, b->devnode);
		if (s->n_dead_picoboot < ELEMENTSOF(s->dead_picoboot))
			s->dead_picoboot[s->n_dead_picoboot++] = b->picoboot;
		else
			(void)picoboot_sim_free(b->picoboot);
		b->picoboot = NULL;
	}
}

/* 0.17: uevent() reads sysfs, so send children-first before removing (umockdev.md §1) */
static void
unplug_uevents(struct sim_board *b, const char *tty_sys)
{
	struct sim *s = b->sim;

	if (tty_sys)
		umockdev_testbed_uevent(s->tb, tty_sys, "remove");
	for (unsigned i = b->n_ifaces; i-- > 0;) {
		char *ip = xasprintf("%s/%s:1.%u", b->syspath, b->port, i);

		if (b->iface_has_driver[i])
			umockdev_testbed_uevent(s->tb, ip, "unbind");
		umockdev_testbed_uevent(s->tb, ip, "remove");
		free(ip);
	}
	umockdev_testbed_uevent(s->tb, b->syspath, "unbind");
	umockdev_testbed_uevent(s->tb, b->syspath, "remove");
}

static void
unplug_remove_devices(struct sim_board *b, const char *tty_sys)
{
	struct sim *s = b->sim;

	if (tty_sys)
		umockdev_testbed_remove_device(s->tb, tty_sys);
	for (unsigned i = b->n_ifaces; i-- > 0;) {
		char *ip = xasprintf("%s/%s:1.%u", b->syspath, b->port, i);

		umockdev_testbed_remove_device(s->tb, ip);
		free(ip);
	}
	umockdev_testbed_remove_device(s->tb, b->syspath);
}

/* the /dev nodes: the tty, its links and the pty behind them, the usbdevfs node */
static void
unplug_nodes(struct sim_board *b)
{
	struct sim *s = b->sim;
	char *p;

	if (b->tty_index >= 0) {
		const char *names[] = {b->tty, b->by_id, b->by_path};

		for (size_t i = 0; i < ELEMENTSOF(names); i++) {
			p = dev_path(s, names[i]);
			unlink(p);
			free(p);
		}
		s->tty_used[b->tty_index] = false;
		b->master_fd = close_fd(b->master_fd);
	}
	p = dev_path(s, b->devnode);
	unlink(p);
	free(p);
}

/* what the board forgets when it leaves the bus */
static void
unplug_forget(struct sim_board *b)
{
	free(b->syspath);
	free(b->devnode);
	free(b->tty);
	free(b->by_id);
	free(b->by_path);
	b->syspath = b->devnode = b->tty = b->by_id = b->by_path = NULL;
	b->tty_index = -1;
	b->tty_open = false;
	b->serial[0] = '\0';
	b->app_version[0] = '\0';
	b->rx_len = 0;
	b->tx_len = 0;
	b->mode = SIM_MODE_OFF;
}

int
sim_board_unplug_locked(struct sim_board *b)
{
	char *tty_sys = NULL;

	if (b->mode == SIM_MODE_OFF)
		return 0;
	detach_tty_handler(b);
	unplug_models(b);
	if (b->tty_index >= 0)
		tty_sys = xasprintf("%s/%s:1.0/tty/ttyACM%d", b->syspath, b->port, b->tty_index);
	if (b->drive)
		drive_remove(b);
	unplug_uevents(b, tty_sys);
	unplug_remove_devices(b, tty_sys);
	unplug_nodes(b);
	free(tty_sys);
	unplug_forget(b);
	pthread_cond_broadcast(&b->sim->cond);
	return 0;
}

void
sim_board_schedule(struct sim_board *b, enum sim_action action, uint32_t delay_us)
{
	b->action = action;
	b->action_at_us = sim_now_us() + delay_us;
	sim_wake(b->sim);
}

/* ---- boot model (protocols.md §2.1, §7.4) ----------------------------------------- */

static uint32_t
reenum_delay(const struct sim_board *b)
{
	/* a reset takes the USB stack down and up again in roughly 100 ms */
	return sim_board_delay_us(b, 100000, 3000);
}

static bool
rp2040_boot2_ok(struct flash *f)
{
	uint8_t b2[256];

	if (flash_read(f, f->base, b2, sizeof(b2)) < 0)
		return false;
	/* the ROM runs nothing unless boot2 carries its checksum (RP2040 datasheet §2.8.1.3) */
	return sim_boot2_crc(b2) == ((uint32_t)b2[252] | (uint32_t)b2[253] << 8 |
				     (uint32_t)b2[254] << 16 | (uint32_t)b2[255] << 24);
}

/* the boot loop of a crashing application: up, and down again 300 ms later */
static void
boot_crashing_app(struct sim_board *b)
{
	sim_board_plug_locked(b, SIM_MODE_KLIPPER_APP);
	sim_board_schedule(b, SIM_ACT_FLICKER_DOWN, sim_board_delay_us(b, 300000, 5000));
}

/* A bootloader asked for by the reset (the touch, a leave): true when it took the boot. */
static bool
boot_requested(struct sim_board *b, enum sim_boot_request req)
{
	switch (req) {
	case SIM_REQ_KATAPULT:
		if (b->bootloader == SIM_BL_KATAPULT) {
			sim_board_plug_locked(b, SIM_MODE_KATAPULT);
			return true;
		}
		return false;
	case SIM_REQ_ROM_DFU:
		sim_board_plug_locked(b, SIM_MODE_ROM_DFU);
		return true;
	case SIM_REQ_LPC_DFU:
		sim_board_plug_locked(b, SIM_MODE_LPC_DFU);
		return true;
	case SIM_REQ_BOOTSEL:
		sim_board_plug_locked(b, SIM_MODE_BOOTSEL);
		return true;
	case SIM_REQ_APP:
	case SIM_REQ_NONE:
		break;
	}
	return false;
}

/* Nothing requested: the bootloader looks at the application area. True when it stays. */
static bool
boot_bootloader_stays(struct sim_board *b)
{
	const struct catalog_mcu *mcu = b->model->mcu;
	uint8_t w[4] = {0xff, 0xff, 0xff, 0xff};
	uint32_t first;

	(void)flash_read(b->flash, b->app_start, w, 4);
	first = (uint32_t)w[0] | (uint32_t)w[1] << 8 | (uint32_t)w[2] << 16 | (uint32_t)w[3] << 24;
	/* Katapult stays when the application area is empty (§2.1 "other entry paths") */
	if (b->bootloader == SIM_BL_KATAPULT && (first == 0 || first == 0xffffffffu)) {
		sim_board_plug_locked(b, SIM_MODE_KATAPULT);
		return true;
	}
	if (b->bootloader == SIM_BL_STOCK && mcu->family == CATALOG_FAMILY_LPC176X &&
	    first == 0xffffffffu && b->lpc_dfu) {
		sim_board_plug_locked(b, SIM_MODE_LPC_DFU);
		return true;
	}
	/* RP2040 bootrom: boot2, the first 256 bytes of flash, must end in its CRC-32 or the
	 * chip stays in BOOTSEL whatever follows (RP2040 datasheet §2.8.1.3) */
	if (mcu->family == CATALOG_FAMILY_RP2040 && b->bootloader != SIM_BL_KATAPULT &&
	    !rp2040_boot2_ok(b->flash)) {
		sim_board_plug_locked(b, SIM_MODE_BOOTSEL);
		return true;
	}
	return false;
}

/* A valid application starts: Marlin or Klipper, or it crashes (injected or a bad version) */
static void
boot_app(struct sim_board *b)
{
	const struct catalog_mcu *mcu = b->model->mcu;
	bool crashes = false;

	if (b->crash_version[0]) {
		app_version_from_flash(b);
		crashes = strstr(b->app_version, b->crash_version) != NULL;
	}
	if ((crashes || b->app_torn) && b->boot_fail_left == 0)
		b->boot_fail_left = 1;
	if (b->boot_fail_left == 0 && sim_marlin_app(b)) {
		/* a Marlin build: its USB identity is the framework's (protocols.md §1.4) */
		sim_board_plug_locked(b, mcu->family == CATALOG_FAMILY_LPC176X
					     ? SIM_MODE_MARLIN_LPC
					     : SIM_MODE_MARLIN_STM32);
		return;
	}
	if (b->boot_fail_left == 0) {
		sim_board_plug_locked(b, SIM_MODE_KLIPPER_APP);
		return;
	}
	/* SIM_FAULT_BOOT_FAIL: it starts, enumerates, and crashes like a bad image */
	b->boot_fail_left--;
	b->flicker_left = b->bootloop_cycles;
	boot_crashing_app(b);
}

static void
boot(struct sim_board *b)
{
	enum sim_boot_request req = b->request;
	const struct catalog_mcu *mcu = b->model->mcu;

	b->request = SIM_REQ_NONE;
	sim_uart_bootloader_from_flash(b);
	if (b->never_back) {
		b->never_back = false;
		b->flicker_left = 0;
		return;
	}
	/* a stock SD bootloader runs first on every reset unless the ROM took the boot */
	if (req != SIM_REQ_ROM_DFU && req != SIM_REQ_BOOTSEL && sim_sdboot_boot(b))
		return;
	if (b->flicker_left > 0) {
		/* still boot-looping: the crash happens the same way every time */
		boot_crashing_app(b);
		return;
	}
	if (boot_requested(b, req) || boot_bootloader_stays(b))
		return;
	if (flash_app_valid(b->flash, b->app_start)) {
		boot_app(b);
		return;
	}
	if (mcu->family == CATALOG_FAMILY_RP2040 && b->bootloader != SIM_BL_KATAPULT) {
		/* the bootrom finds no valid boot2 and stays in BOOTSEL */
		sim_board_plug_locked(b, SIM_MODE_BOOTSEL);
		return;
	}
	if (b->bootloop != SIM_BOOTLOOP_SILENT) {
		b->flicker_left = b->bootloop_cycles;
		boot_crashing_app(b);
	}
	/* SIM_BOOTLOOP_SILENT: HardFault lockup, nothing on USB */
}

/* SIM_BOOTLOOP_RECOVER: where a board lands once its boot loop gives up (sim.h) */
static enum sim_boot_request
recover_request(const struct sim_board *b)
{
	const struct catalog_board *m = b->model;

	if (b->bootloader == SIM_BL_KATAPULT)
		return SIM_REQ_KATAPULT; /* double-reset entry within Katapult's window (§2.1) */
	if (m->mcu->family != CATALOG_FAMILY_LPC176X && m->mcu->family != CATALOG_FAMILY_RP2040 &&
	    (m->paths & (CATALOG_PATH_ROM_DFU_BUTTON | CATALOG_PATH_ROM_DFU_SOFT)))
		return SIM_REQ_ROM_DFU;
	if (m->mcu->family == CATALOG_FAMILY_LPC176X && b->lpc_dfu)
		return SIM_REQ_LPC_DFU; /* watchdog reset sets WDTOF (§7.4) */
	return SIM_REQ_NONE;
}

static void
run_action(struct sim_board *b)
{
	enum sim_action a = b->action;

	b->action = SIM_ACT_NONE;
	switch (a) {
	case SIM_ACT_RESET:
		sim_board_unplug_locked(b);
		sim_board_schedule(b, SIM_ACT_BOOT, reenum_delay(b));
		break;
	case SIM_ACT_BOOT:
		boot(b);
		break;
	case SIM_ACT_FLICKER_DOWN:
		sim_board_unplug_locked(b);
		if (b->flicker_left > 0 && --b->flicker_left > 0) {
			sim_board_schedule(b, SIM_ACT_BOOT, reenum_delay(b));
		} else if (b->bootloop == SIM_BOOTLOOP_RECOVER) {
			b->request = recover_request(b);
			if (b->request != SIM_REQ_NONE)
				sim_board_schedule(b, SIM_ACT_BOOT, reenum_delay(b));
		}
		break;
	case SIM_ACT_NONE:
		break;
	}
}

/* §2.1: what Klipper's bootloader_request() does on this board after the 1200-baud touch */
static enum sim_boot_request
touch_request(const struct sim_board *b)
{
	const struct catalog_board *m = b->model;

	if (b->bootloader == SIM_BL_KATAPULT)
		return SIM_REQ_KATAPULT;
	if (m->paths & CATALOG_PATH_ROM_DFU_SOFT)
		return SIM_REQ_ROM_DFU;
	if (m->mcu->family == CATALOG_FAMILY_RP2040)
		return SIM_REQ_BOOTSEL;
	/* Klipper's LPC request resets through the watchdog: WDTOF (protocols.md §1.2) */
	if (m->mcu->family == CATALOG_FAMILY_LPC176X && b->lpc_dfu)
		return SIM_REQ_LPC_DFU;
	return SIM_REQ_NONE;
}

static speed_t
slave_speed(int master)
{
	int peer = ioctl(master, TIOCGPTPEER, O_RDWR | O_NOCTTY | O_NONBLOCK);
	struct termios t;
	speed_t sp = B0;

	/* glibc's tcsetattr bypasses umockdev, so the speed is only visible on the pty itself */
	if (peer < 0)
		return B0;
	if (tcgetattr(peer, &t) == 0)
		sp = cfgetospeed(&t);
	close(peer);
	return sp;
}

static void
on_tty_open(struct sim_board *b)
{
	b->tty_open = true;
	if (b->mode == SIM_MODE_KATAPULT)
		sim_katapult_opened(b);
}

static void
on_tty_close(struct sim_board *b)
{
	b->tty_open = false;
	b->rx_len = 0;
	if (b->mode == SIM_MODE_KATAPULT)
		sim_katapult_closed(b);
	if (b->mode != SIM_MODE_KLIPPER_APP || b->action != SIM_ACT_NONE)
		return;
	/* the last close drops DTR (HUPCL); at 1200 baud that is Klipper's reboot request */
	if (slave_speed(b->master_fd) != B1200)
		return;
	b->request = touch_request(b);
	sim_board_schedule(b, SIM_ACT_RESET, sim_board_delay_us(b, 20000, 1000));
}

static void
read_tty(struct sim_board *b)
{
	for (;;) {
		uint8_t tmp[512];
		size_t room = sizeof(b->rx) - b->rx_len;
		ssize_t n;

		if (b->mode == SIM_MODE_KLIPPER_APP) {
			if (!sim_klipper_wants_input(b))
				return; /* the MCU's buffers are full: the host's bytes wait */
			if (room == 0)
				b->rx_len = room = sizeof(b->rx); /* junk: Klipper drops it */
			n = read(b->master_fd, b->rx + b->rx_len, room);
			if (n > 0) {
				b->rx_len += (size_t)n;
				sim_klipper_process(b);
			}
			if (n <= 0)
				return;
			continue;
		} else if (b->mode != SIM_MODE_KATAPULT) {
			n = read(b->master_fd, tmp, sizeof(tmp));
			if (n > 0 &&
			    (b->mode == SIM_MODE_MARLIN_LPC || b->mode == SIM_MODE_MARLIN_STM32))
				sim_marlin_received(b, tmp, (size_t)n);
		} else {
			if (room == 0)
				return;
			n = read(b->master_fd, b->rx + b->rx_len, room);
		}
		if (n <= 0)
			return;
		if (b->mode == SIM_MODE_KATAPULT) {
			b->rx_len += (size_t)n;
			sim_katapult_received(b, (size_t)n);
		}
	}
}

/* What one turn of the service thread waits for: the wake-up eventfd and the open ttys. */
struct wait_set {
	struct pollfd pfd[SIM_MAX_BOARDS + 1];
	struct sim_board *pb[SIM_MAX_BOARDS + 1];
	size_t n;
};

/* The fds to poll and the earliest modelled event due (in sim_now_us time). */
static uint64_t
wait_set_build(struct sim *s, struct wait_set *ws, uint64_t now)
{
	uint64_t next = now + PROBE_US;

	ws->n = 0;
	ws->pfd[ws->n] = (struct pollfd){.fd = s->wake_fd, .events = POLLIN};
	ws->pb[ws->n++] = NULL;
	for (size_t i = 0; i < s->n_boards; i++) {
		struct sim_board *b = s->boards[i];

		if (b->action != SIM_ACT_NONE && b->action_at_us < next)
			next = b->action_at_us;
		if (sim_katapult_next_us(b) < next)
			next = sim_katapult_next_us(b);
		if (sim_klipper_next_us(b) < next)
			next = sim_klipper_next_us(b);
		if (b->stall_until_us > now && b->stall_until_us < next)
			next = b->stall_until_us;
		if (b->master_fd >= 0 && !b->tty_open && now < b->probe_fast_until_us &&
		    now + FAST_PROBE_US < next)
			next = now + FAST_PROBE_US;
		/* a closed pty master reports POLLHUP forever: watch it only while open */
		if (b->master_fd >= 0 && b->tty_open && b->stall_until_us <= now &&
		    (b->mode != SIM_MODE_KLIPPER_APP || sim_klipper_wants_input(b))) {
			ws->pfd[ws->n] = (struct pollfd){.fd = b->master_fd, .events = POLLIN};
			ws->pb[ws->n++] = b;
		}
	}
	return next;
}

/* Sleep until an fd is ready or `next`, with the lock released. */
static void
wait_set_poll(struct sim *s, struct wait_set *ws, uint64_t now, uint64_t next)
{
	struct timespec wait;

	/* microsecond timeouts: a reply due in 200 us must not wait for the next whole
	 * millisecond, or every Katapult frame would cost at least 1 ms */
	wait.tv_sec = next > now ? (time_t)((next - now) / 1000000u) : 0;
	wait.tv_nsec = next > now ? (long)((next - now) % 1000000u) * 1000L : 0;
	pthread_mutex_unlock(&s->lock);
	(void)ppoll(ws->pfd, (nfds_t)ws->n, &wait, NULL);
	pthread_mutex_lock(&s->lock);
	if (ws->pfd[0].revents & POLLIN) {
		uint64_t v;

		(void)!read(s->wake_fd, &v, sizeof(v));
	}
}

/* the host's bytes on the ttys that were watched, and the closes */
static void
wait_set_serve(struct wait_set *ws)
{
	for (size_t i = 1; i < ws->n; i++) {
		struct sim_board *b = ws->pb[i];

		if (b->master_fd != ws->pfd[i].fd || !b->tty_open)
			continue;
		if (ws->pfd[i].revents & POLLIN)
			read_tty(b);
		if (ws->pfd[i].revents & (POLLHUP | POLLERR)) {
			read_tty(b);
			on_tty_close(b);
		}
	}
}

/* what the ioctl and drive threads asked for: a reset after a leave or a UF2 file, a power
 * cut */
static void
board_requests(struct sim_board *b)
{
	if (atomic_exchange(&b->leave_requests, 0) && b->action == SIM_ACT_NONE)
		sim_board_schedule(b, SIM_ACT_RESET, sim_board_delay_us(b, 10000, 1000));
	/* a whole UF2 file on the RPI-RP2 drive: the ROM reboots */
	if (b->drive && sim_drive_poll(b) && b->action == SIM_ACT_NONE)
		sim_board_schedule(b, SIM_ACT_RESET, sim_board_delay_us(b, 500000, 1000));
	if (atomic_exchange(&b->power_cuts, 0)) {
		/* power comes back after `count` ms (0: stays unplugged) */
		uint32_t back_ms = b->fault.count;

		b->fault.kind = SIM_FAULT_NONE;
		sim_board_unplug_locked(b);
		if (back_ms)
			sim_board_schedule(b, SIM_ACT_BOOT, back_ms * 1000u);
	}
}

/* A closed tty without an ioctl handler: has the host opened it since? (probed) */
static void
board_probe_open(struct sim_board *b, unsigned ev, uint64_t now, uint64_t last_probe)
{
	struct pollfd p = {.fd = b->master_fd, .events = 0};
	bool evented = ev != b->open_seen;

	if (b->master_fd < 0 || b->tty_open ||
	    (ev == b->open_seen && now - last_probe < PROBE_US && now >= b->probe_fast_until_us))
		return;
	b->open_seen = ev;
	if (poll(&p, 1, 0) >= 0 && !(p.revents & POLLHUP)) {
		on_tty_open(b);
		read_tty(b);
	} else if (evented) {
		/* opened and closed again before we looked */
		on_tty_open(b);
		read_tty(b);
		on_tty_close(b);
	}
}

/* one board's turn: requests, the tty's open, the firmware's own clock, a due action */
static void
board_service(struct sim_board *b, uint64_t now, uint64_t last_probe)
{
	unsigned ev = atomic_load(&b->open_events);

	board_requests(b);
	board_probe_open(b, ev, now, last_probe);
	/* the device dispatches every frame it has, whatever its transmit space
	 * (sim_katapult.c); a frame waiting in the pty is in flight */
	if (b->mode == SIM_MODE_KATAPULT && b->tty_open) {
		read_tty(b);
		sim_katapult_run(b);
	}
	/* the Klipper MCU's modelled clock (speed > 0): blocks and IN packets due */
	if (b->mode == SIM_MODE_KLIPPER_APP && b->tty_open)
		sim_klipper_run(b);
	if (b->action != SIM_ACT_NONE && b->action_at_us <= sim_now_us())
		run_action(b);
}

static void *
service_thread(void *arg)
{
	struct sim *s = arg;
	uint64_t last_probe = 0;

	/* replies are due at modelled microseconds: the default 50 us timer slack would add
	 * itself to every one of them */
	(void)prctl(PR_SET_TIMERSLACK, 1UL, 0UL, 0UL, 0UL);
	pthread_mutex_lock(&s->lock);
	while (!s->stop) {
		struct wait_set ws;
		uint64_t now = sim_now_us(), next = wait_set_build(s, &ws, now);

		wait_set_poll(s, &ws, now, next);
		now = sim_now_us();
		wait_set_serve(&ws);
		for (size_t i = 0; i < s->n_boards; i++)
			board_service(s->boards[i], now, last_probe);
		if (now - last_probe >= PROBE_US)
			last_probe = now;
	}
	pthread_mutex_unlock(&s->lock);
	return NULL;
}

/* ---- public API ------------------------------------------------------------------- */

struct sim *
sim_new(void)
{
	struct sim *s = xnew(struct sim);
	pthread_mutexattr_t ma;

	/* umockdev caches in_mock_environment() on first use: ask only after the testbed exists */
	s->tb = umockdev_testbed_new();
	if (!umockdev_in_mock_environment())
		fprintf(stderr, "sim: not running under libumockdev-preload (call sim_init)\n");
	s->root = umockdev_testbed_get_root_dir(s->tb);
	if (s->root)
		sim_share_tree(s->root);
	s->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (!s->tb || !s->root || s->wake_fd < 0)
		abort();
	pthread_mutexattr_init(&ma);
	pthread_mutexattr_settype(&ma, PTHREAD_MUTEX_RECURSIVE);
	pthread_mutex_init(&s->lock, &ma);
	pthread_mutexattr_destroy(&ma);
	pthread_cond_init(&s->cond, NULL);
	for (size_t i = 0; i < ELEMENTSOF(s->next_devnum); i++)
		s->next_devnum[i] = 1;
	if (pthread_create(&s->thread, NULL, service_thread, s) != 0)
		abort();
	s->thread_started = true;
	return s;
}

struct sim *
sim_free(struct sim *s)
{
	if (!s)
		return NULL;
	pthread_mutex_lock(&s->lock);
	s->stop = true;
	pthread_mutex_unlock(&s->lock);
	sim_wake(s);
	if (s->thread_started)
		pthread_join(s->thread, NULL);
	for (size_t i = 0; i < s->n_boards; i++)
		sim_board_unplug_locked(s->boards[i]);
#if SIM_HAVE_DFUSE
	/* before the flashes they point into */
	for (size_t i = 0; i < s->n_dead_dfuse; i++)
		(void)dfuse_free(s->dead_dfuse[i]);
#endif
	for (size_t i = 0; i < s->n_dead_picoboot; i++)
		(void)picoboot_sim_free(s->dead_picoboot[i]);
	for (size_t i = 0; i < s->n_dead_lpcdfu; i++)
		(void)lpcdfu_free(s->dead_lpcdfu[i]);
	for (size_t i = 0; i < s->n_boards; i++) {
		struct sim_board *b = s->boards[i];

		sim_uart_free(b);
		flash_free(b->flash);
		sim_sdcard_free(b->kl.card);
		free(b->sdcard_path);
		free(b->kl.dict_z);
		free(b->port);
		free(b->port_path);
		free(b);
	}
	g_object_unref(s->tb);
	g_free(s->root);
	close(s->wake_fd);
	pthread_cond_destroy(&s->cond);
	pthread_mutex_destroy(&s->lock);
	free(s);
	return NULL;
}

const char *
sim_root(struct sim *s)
{
	return s->root;
}

size_t
sim_board_count(struct sim *s)
{
	return s->n_boards;
}

struct sim_board *
sim_board_get(struct sim *s, size_t i)
{
	return i < s->n_boards ? s->boards[i] : NULL;
}

struct sim_board *
sim_board_by_port(struct sim *s, const char *port)
{
	for (size_t i = 0; i < s->n_boards; i++)
		if (strcmp(s->boards[i]->port, port) == 0)
			return s->boards[i];
	return NULL;
}

static void
derive_uid(const struct catalog_board *m, const char *port, char *buf, size_t len)
{
	size_t nbytes = m->mcu->family == CATALOG_FAMILY_LPC176X  ? 16
			: m->mcu->family == CATALOG_FAMILY_RP2040 ? 8
								  : 12;
	uint32_t h = 2166136261u;

	/* §1.4: STM32 12-byte, LPC 16-byte, RP2040 8-byte UID, hex uppercase */
	for (const char *c = m->name; *c; c++)
		h = (h ^ (uint8_t)*c) * 16777619u;
	for (const char *c = port; *c; c++)
		h = (h ^ (uint8_t)*c) * 16777619u;
	for (size_t i = 0; i < nbytes && 2 * i + 2 < len; i++) {
		h = h * 1103515245u + 12345u;
		snprintf(buf + 2 * i, 3, "%02X", (h >> 16) & 0xff);
	}
}

/* Factory content: bootloader region, then the application the board ships with. */
static void
factory_flash(struct sim_board *b, const char *version, bool empty, bool marlin)
{
	struct flash *f = b->flash;
	uint32_t bl_len = b->app_start - f->base;

	if (bl_len >= 1024 && b->bootloader != SIM_BL_NONE) {
		/* a vector table and, for Katapult, its marks: a UART rescue reads, keeps and
		 * restores this area, and the board model tells Katapult by it */
		uint8_t *bl = sim_image_bootloader(b->model->mcu, b->bootloader == SIM_BL_KATAPULT,
						   b->app_start, bl_len);

		(void)flash_load(f, f->base, bl, bl_len);
		free(bl);
	} else if (bl_len > 0 && b->bootloader != SIM_BL_NONE) {
		uint8_t *bl = xmalloc(bl_len);
		uint32_t x = b->bootloader == SIM_BL_KATAPULT ? 0x4b415450u : 0x42545453u;

		for (uint32_t i = 0; i < bl_len; i++) {
			x = x * 1664525u + 1013904223u;
			bl[i] = (uint8_t)(x >> 24);
			if (bl[i] == 0xff)
				bl[i] = 0x5a;
		}
		(void)flash_load(f, f->base, bl, bl_len);
		free(bl);
	}
	if (!empty && b->model->mcu->family == CATALOG_FAMILY_RP2040 && bl_len == 256) {
		/* a "No bootloader" RP2040 build: boot2 with its checksum, then the app */
		size_t len;
		uint8_t *img = sim_image_rp2040(b->model->mcu, version, 8192, true, &len);

		(void)flash_load(f, f->base, img, len);
		free(img);
		return;
	}
	if (!empty && marlin) {
		size_t len;
		uint8_t *img =
		    sim_image_marlin(b->model->mcu, b->app_start, version, NULL, 64 * 1024, &len);

		(void)flash_load(f, b->app_start, img, len);
		free(img);
		return;
	}
	if (!empty) {
		size_t len;
		uint8_t *img = sim_image_klipper(b->model->mcu, b->app_start, version, 8192, &len);

		(void)flash_load(f, b->app_start, img, len);
		free(img);
	}
}

struct sim_board *
sim_board_add(struct sim *s, const struct sim_board_spec *spec)
{
	const struct catalog_board *m = catalog_find(spec->model);
	struct sim_board *b;
	const char *dash;
	char *end;
	long bus;

	if (!m) {
		fprintf(stderr, "sim: unknown board model '%s'\n", spec->model ? spec->model : "");
		return NULL;
	}
	dash = spec->port ? strchr(spec->port, '-') : NULL;
	bus = spec->port ? strtol(spec->port, &end, 10) : 0;
	if (!dash || end != dash || bus < 1 || bus > 127 || !dash[1]) {
		fprintf(stderr, "sim: bad port '%s' (want BUS-PORT[.PORT...])\n",
			spec->port ? spec->port : "");
		return NULL;
	}
	pthread_mutex_lock(&s->lock);
	if (sim_board_by_port(s, spec->port) || s->n_boards >= SIM_MAX_BOARDS) {
		pthread_mutex_unlock(&s->lock);
		fprintf(stderr, "sim: port '%s' in use or too many boards\n", spec->port);
		return NULL;
	}
	b = xnew(struct sim_board);
	b->sim = s;
	b->index = s->n_boards;
	b->model = m;
	b->port = xstrdup(spec->port);
	b->bus = (int)bus;
	b->port_path = xstrdup(dash + 1);
	b->bootloader = spec->bootloader;
	if (m->mcu->family == CATALOG_FAMILY_RP2040 && b->bootloader == SIM_BL_STOCK)
		b->bootloader = SIM_BL_NONE;
	b->app_start =
	    b->bootloader == SIM_BL_KATAPULT ? sim_katapult_app_start(m->mcu) : m->app_start;
	b->speed = spec->speed > 0 ? spec->speed : 0.0;
	b->plain_katapult_tty = spec->plain_katapult_tty;
	b->plain_klipper_tty = spec->plain_klipper_tty;
	b->bootloop = spec->bootloop;
	b->bootloop_cycles = spec->bootloop_cycles ? spec->bootloop_cycles : 3;
	snprintf(b->crash_version, sizeof(b->crash_version), "%s",
		 spec->crash_version ? spec->crash_version : "");
	b->lpc_dfu = (b->model->paths & CATALOG_PATH_LPC_DFU) && !spec->lpc_sd_only;
	snprintf(b->dfu_layout, sizeof(b->dfu_layout), "%s",
		 spec->dfu_layout ? spec->dfu_layout : "");
	b->tty_index = -1;
	b->master_fd = -1;
	if (spec->uid)
		snprintf(b->uid, sizeof(b->uid), "%s", spec->uid);
	else
		derive_uid(m, spec->port, b->uid, sizeof(b->uid));
	for (char *c = b->uid; *c; c++)
		if (*c >= 'a' && *c <= 'f')
			*c = (char)(*c - 'a' + 'A');
	b->flash = flash_new(m->mcu, b->speed);
	factory_flash(b, spec->app_version, spec->empty,
		      spec->mode == SIM_MODE_MARLIN_LPC || spec->mode == SIM_MODE_MARLIN_STM32);
	if (spec->uart && sim_uart_attach(b) < 0)
		fprintf(stderr, "sim: %s has no ROM UART model\n", m->name);
	s->boards[s->n_boards++] = b;
	if (spec->mode != SIM_MODE_OFF && sim_board_plug_locked(b, spec->mode) < 0)
		fprintf(stderr, "sim: cannot plug %s in %s\n", b->port,
			sim_mode_to_string(spec->mode));
	pthread_mutex_unlock(&s->lock);
	return b;
}

int
sim_board_plug(struct sim_board *b, enum sim_mode mode)
{
	int r;

	pthread_mutex_lock(&b->sim->lock);
	b->action = SIM_ACT_NONE;
	b->flicker_left = 0;
	r = sim_board_plug_locked(b, mode);
	pthread_mutex_unlock(&b->sim->lock);
	return r;
}

int
sim_board_unplug(struct sim_board *b)
{
	int r;

	pthread_mutex_lock(&b->sim->lock);
	b->action = SIM_ACT_NONE;
	b->flicker_left = 0;
	r = sim_board_unplug_locked(b);
	pthread_mutex_unlock(&b->sim->lock);
	return r;
}

int
sim_board_reset(struct sim_board *b)
{
	pthread_mutex_lock(&b->sim->lock);
	b->flicker_left = 0;
	sim_board_schedule(b, SIM_ACT_RESET, 0);
	pthread_mutex_unlock(&b->sim->lock);
	return 0;
}

int
sim_board_power_off(struct sim_board *b)
{
	int r;

	pthread_mutex_lock(&b->sim->lock);
	b->action = SIM_ACT_NONE;
	b->flicker_left = 0;
	b->request = SIM_REQ_NONE; /* Katapult's request lives in RAM (protocols.md §2.1) */
	r = sim_board_unplug_locked(b);
	pthread_mutex_unlock(&b->sim->lock);
	return r;
}

void
sim_board_klipper_stats(struct sim_board *b, struct sim_klipper_stats *ret)
{
	pthread_mutex_lock(&b->sim->lock);
	*ret = b->kl.stats;
	pthread_mutex_unlock(&b->sim->lock);
}

int
sim_board_set_sdcard(struct sim_board *b, const char *path, bool sdhc)
{
	struct sim_sdcard *card = NULL;

	if (path) {
		card = sim_sdcard_new(path, sdhc);
		if (!card)
			return -errno;
	}
	pthread_mutex_lock(&b->sim->lock);
	sim_sdcard_free(b->kl.card);
	b->kl.card = card;
	/* the same card is Marlin's USB drive (sim_marlin.c) at its next enumeration: a card
	 * put in while Marlin on LPC176x is up comes with one (a test's or skrsim's setup) */
	free(b->sdcard_path);
	b->sdcard_path = path ? xstrdup(path) : NULL;
	if (b->mode == SIM_MODE_MARLIN_LPC && (path != NULL) != (b->drive != NULL))
		(void)sim_board_plug_locked(b, b->mode);
	pthread_mutex_unlock(&b->sim->lock);
	return 0;
}

bool
sim_board_sdcard_spi_mode(struct sim_board *b)
{
	bool r;

	pthread_mutex_lock(&b->sim->lock);
	r = b->kl.card && sim_sdcard_spi_mode(b->kl.card);
	pthread_mutex_unlock(&b->sim->lock);
	return r;
}

int
sim_board_power_on(struct sim_board *b)
{
	pthread_mutex_lock(&b->sim->lock);
	b->flicker_left = 0;
	b->request = SIM_REQ_NONE;
	sim_board_schedule(b, SIM_ACT_BOOT, reenum_delay(b));
	pthread_mutex_unlock(&b->sim->lock);
	return 0;
}

int
sim_board_power_cycle(struct sim_board *b)
{
	pthread_mutex_lock(&b->sim->lock);
	if (b->mode != SIM_MODE_OFF)
		sim_board_unplug_locked(b);
	if (b->kl.card)
		sim_sdcard_power_cycle(b->kl.card);
	b->request = SIM_REQ_NONE;
	b->flicker_left = 0;
	sim_board_schedule(b, SIM_ACT_BOOT, sim_board_delay_us(b, 500000, 20000));
	pthread_mutex_unlock(&b->sim->lock);
	return 0;
}

enum sim_mode
sim_board_mode(struct sim_board *b)
{
	enum sim_mode m;

	pthread_mutex_lock(&b->sim->lock);
	m = b->mode;
	pthread_mutex_unlock(&b->sim->lock);
	return m;
}

static int
wait_until(struct sim *s, bool (*done)(struct sim_board *, unsigned), struct sim_board *b,
	   unsigned arg, int timeout_ms)
{
	struct timespec ts;
	int r = 0;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += timeout_ms / 1000;
	ts.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&s->lock);
	while (!done(b, arg)) {
		if (pthread_cond_timedwait(&s->cond, &s->lock, &ts) == ETIMEDOUT) {
			r = done(b, arg) ? 0 : -ETIMEDOUT;
			break;
		}
	}
	pthread_mutex_unlock(&s->lock);
	return r;
}

static bool
mode_is(struct sim_board *b, unsigned mode)
{
	/* a plug is complete only once its scheduled follow-up is not a pending reset */
	return b->mode == (enum sim_mode)mode && b->action != SIM_ACT_RESET;
}

static bool
enumerated_at_least(struct sim_board *b, unsigned n)
{
	return b->enumerations >= n;
}

int
sim_board_wait_mode(struct sim_board *b, enum sim_mode mode, int timeout_ms)
{
	return wait_until(b->sim, mode_is, b, mode, timeout_ms);
}

int
sim_board_wait_enumerations(struct sim_board *b, unsigned n, int timeout_ms)
{
	return wait_until(b->sim, enumerated_at_least, b, n, timeout_ms);
}

struct flash *
sim_board_flash(struct sim_board *b)
{
	return b->flash;
}

const struct catalog_board *
sim_board_model(struct sim_board *b)
{
	return b->model;
}

const char *
sim_board_port(struct sim_board *b)
{
	return b->port;
}

const char *
sim_board_uid(struct sim_board *b)
{
	return b->uid;
}

uint32_t
sim_board_app_start(struct sim_board *b)
{
	return b->app_start;
}

const char *
sim_board_app_version(struct sim_board *b)
{
	return b->app_version;
}

const char *
sim_board_tty(struct sim_board *b)
{
	return b->tty;
}

const char *
sim_board_drive(struct sim_board *b)
{
	return b->drive ? sim_drive_node(b->drive) : NULL;
}

const char *
sim_board_drive_image(struct sim_board *b)
{
	return b->drive ? sim_drive_file(b->drive) : NULL;
}

const char *
sim_board_serial(struct sim_board *b)
{
	return b->serial;
}

const char *
sim_board_syspath(struct sim_board *b)
{
	return b->syspath;
}

const char *
sim_board_devnode(struct sim_board *b)
{
	return b->devnode;
}

const char *
sim_board_by_id(struct sim_board *b)
{
	return b->by_id;
}

unsigned
sim_board_enumerations(struct sim_board *b)
{
	unsigned n;

	pthread_mutex_lock(&b->sim->lock);
	n = b->enumerations;
	pthread_mutex_unlock(&b->sim->lock);
	return n;
}

void
sim_board_katapult_stats(struct sim_board *b, struct sim_katapult_stats *ret)
{
	pthread_mutex_lock(&b->sim->lock);
	*ret = b->stats;
	pthread_mutex_unlock(&b->sim->lock);
}

int
sim_board_set_fault(struct sim_board *b, const struct sim_fault *f)
{
	pthread_mutex_lock(&b->sim->lock);
	b->fault = *f;
	b->fault_frames = 0;
	b->fault_replies = 0;
	if (f->kind == SIM_FAULT_NEVER_BACK)
		b->never_back = true;
	b->boot_fail_left = f->kind == SIM_FAULT_BOOT_FAIL ? (f->count ? f->count : 1) : 0;
#if SIM_HAVE_DFUSE
	if (b->dfuse)
		apply_dfu_fault(b);
#endif
	if (b->picoboot)
		apply_picoboot_fault(b);
	if (b->lpcdfu)
		apply_lpcdfu_fault(b);
	pthread_mutex_unlock(&b->sim->lock);
	return 0;
}
