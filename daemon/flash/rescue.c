/* SPDX-License-Identifier: GPL-2.0-or-later */
/* rescue: serial set-up, checks and the dispatch to the two ROM clients. See rescue.h. */
#include "flash/rescue.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include <json.h>

#include "flash/rescue_lpc.h"
#include "flash/rescue_stm32.h"
#include "flash/rescue_wiring.h"
#include "flash/worker.h"
#include "image/image.h"
#include "proto/lpcisp.h"
#include "util.h"

void
rescue_error(struct rescue_result *res, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(res->error, sizeof(res->error), fmt, ap);
	va_end(ap);
}

void
rescue_progress(const struct rescue_opts *o, const char *step, uint64_t done, uint64_t total)
{
	if (o->progress)
		o->progress(o->userdata, step, done, total);
}

int
rescue_sync(const struct rescue_opts *o, struct rescue_result *res, bool release_boot,
	    int (*once)(void *ctx), void *ctx)
{
	unsigned tries = o->sync_tries ? o->sync_tries : 10;
	int r = -EAGAIN;

	for (unsigned i = 0; i < tries && r == -EAGAIN; i++) {
		res->sync_attempts++;
		rescue_progress(o, "sync", i, tries);
		/* every other try re-enters the ROM: a missed reset is the usual cause */
		if (o->gpio && i % 2 == 0) {
			r = gpio_enter_rom(o->gpio, 100, release_boot);
			if (r == -ENODEV)
				r = 0; /* RESET not wired: the user resets by hand */
			if (r < 0)
				break;
		}
		r = once(ctx);
	}
	return r;
}

int
rescue_finish(const struct rescue_opts *o)
{
	rescue_progress(o, "done", o->boot_size, o->boot_size);
	return o->gpio && gpio_wired(o->gpio, GPIO_ROLE_RESET) ? gpio_run(o->gpio) : 0;
}

int
rescue_write(int fd, const void *buf, size_t len)
{
	const uint8_t *b = buf;

	while (len) {
		ssize_t n = write(fd, b, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN) {
			struct pollfd pf = {fd, POLLOUT, 0};

			if (poll(&pf, 1, 2000) == 0)
				return -ETIMEDOUT;
			continue;
		}
		if (n <= 0)
			return n < 0 ? -errno : -EIO;
		b += n;
		len -= (size_t)n;
	}
	return 0;
}

int
rescue_read(int fd, void *buf, size_t len, unsigned timeout_ms)
{
	struct pollfd pf = {fd, POLLIN, 0};
	ssize_t n;
	int r;

	do
		r = poll(&pf, 1, (int)timeout_ms);
	while (r < 0 && errno == EINTR);
	if (r < 0)
		return -errno;
	if (r == 0)
		return 0;
	n = read(fd, buf, len);
	if (n < 0)
		return errno == EAGAIN || errno == EINTR ? 0 : -errno;
	if (n == 0)
		return -EIO; /* hang-up: the adaptor went away */
	return (int)n;
}

enum rescue_uart_kind
rescue_uart_kind(const char *tty, const char *sysfs)
{
	char real[PATH_MAX], link[PATH_MAX], target[PATH_MAX];
	const char *name;
	ssize_t n;

	if (!realpath(tty, real))
		return RESCUE_UART_OTHER;
	name = strrchr(real, '/') ? strrchr(real, '/') + 1 : real;
	if ((size_t)snprintf(link, sizeof(link), "%s/class/tty/%.200s/device/driver",
			     sysfs ? sysfs : "/sys", name) >= sizeof(link))
		return RESCUE_UART_OTHER;
	n = readlink(link, target, sizeof(target) - 1);
	if (n <= 0)
		return RESCUE_UART_OTHER;
	target[n] = '\0';
	/* the Pi mini UART is an 8250 driven by "bcm2835-aux-uart" (research §2.6) */
	return strstr(target, "bcm2835-aux") ? RESCUE_UART_MINI_UART : RESCUE_UART_OTHER;
}

static speed_t
baud_of(unsigned baud)
{
	switch (baud) {
	case 9600:
		return B9600;
	case 19200:
		return B19200;
	case 38400:
		return B38400;
	case 57600:
		return B57600;
	case 115200:
		return B115200;
	case 230400:
		return B230400;
	default:
		return 0;
	}
}

static int
serial_fail(int fd, int r, char *err, size_t errlen, const char *tty, const char *what)
{
	snprintf(err, errlen, "%s: %s: %s", tty, what, strerror(-r));
	if (fd >= 0)
		close(fd);
	return r;
}

int
rescue_serial_open(const char *tty, unsigned baud, const struct rescue_opts *o, char *err,
		   size_t errlen)
{
	bool parity = o->rom == RESCUE_ROM_AN3155;
	speed_t sp = baud_of(baud);
	struct termios t;
	int fd;

	if (!sp) {
		snprintf(err, errlen, "%s: baud rate %u not supported (9600 to 230400)", tty, baud);
		return -EINVAL;
	}
	if (parity && rescue_uart_kind(tty, o->sysfs) == RESCUE_UART_MINI_UART) {
		snprintf(err, errlen,
			 "%s is the Raspberry Pi mini UART (bcm2835-aux), which cannot do the even "
			 "parity the STM32 ROM bootloader needs: use a PL011 UART "
			 "(dtoverlay=disable-bt puts ttyAMA0 on GPIO14/15; a Pi 4 also has "
			 "dtoverlay=uart2..uart5)",
			 tty);
		return -EOPNOTSUPP;
	}
	fd = open(tty, O_RDWR | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0)
		return serial_fail(-1, -errno, err, errlen, tty, "cannot open");
	if (tcgetattr(fd, &t) < 0)
		return serial_fail(fd, -errno, err, errlen, tty, "not a serial port");
	cfmakeraw(&t);
	t.c_cflag |= CLOCAL | CREAD;
	t.c_cflag &= ~(tcflag_t)(CSTOPB | CRTSCTS | PARODD);
	if (parity)
		t.c_cflag |= PARENB; /* AN3155: 8 data bits, even parity, 1 stop bit */
	else
		t.c_iflag |= IXON | IXOFF; /* UM10360 §32.7: the ROM sends XOFF/XON */
	t.c_cc[VMIN] = 0;
	t.c_cc[VTIME] = 0;
	cfsetispeed(&t, sp);
	cfsetospeed(&t, sp);
	if (tcsetattr(fd, TCSANOW, &t) < 0)
		return serial_fail(fd, -errno, err, errlen, tty, "cannot set 8E1/8N1");
	if (parity && !o->no_parity_ok && (tcgetattr(fd, &t) < 0 || !(t.c_cflag & PARENB))) {
		snprintf(err, errlen,
			 "%s did not take even parity (the driver ignores PARENB): the STM32 ROM "
			 "bootloader needs 8E1; use a PL011 UART or a USB adaptor that can",
			 tty);
		close(fd);
		return -EOPNOTSUPP;
	}
	tcflush(fd, TCIOFLUSH);
	return fd;
}

static uint32_t
le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static bool
sp_in_ram(const struct catalog_mcu *mcu, uint32_t sp)
{
	for (size_t i = 0; i < CATALOG_MAX_RAM && mcu->ram[i].size; i++)
		if (sp > mcu->ram[i].base && sp - mcu->ram[i].base <= mcu->ram[i].size)
			return true;
	return false;
}

/* Katapult marks its builds (Arksine/katapult): src/generic/armcm_canboot.c puts the 8-byte
 * CANBOOT_SIGNATURE "CanBoot!" right before ResetHandler (Klipper's armcm_reset.c finds it at
 * vector[1] - 9), and command_connect() in src/flashcmd.c answers CONFIG_MCU (a C string in
 * .rodata) and CONFIG_LAUNCH_APP_ADDRESS (a 32-bit literal; command_write_block() compares
 * with it too, and start_application() jumps through CONFIG_APPLICATION_START, the same
 * address). So the MCU and the application start of a build are both visible in its bytes. */
static const uint8_t katapult_sig[8] = {'C', 'a', 'n', 'B', 'o', 'o', 't', '!'};

bool
rescue_image_is_katapult(const struct catalog_mcu *mcu, const uint8_t *img, size_t len)
{
	uint32_t reset;

	if (len < 8)
		return false;
	reset = le32(img + 4) & ~1u;
	if (reset < mcu->flash_base + 8 || reset - mcu->flash_base > len)
		return false;
	return memcmp(img + (reset - mcu->flash_base - 8), katapult_sig, 8) == 0;
}

static bool
has_cstring(const uint8_t *img, size_t len, const char *s)
{
	/* with its NUL: "stm32f103" is not "stm32f103xe" */
	return memmem(img, len, s, strlen(s) + 1) != NULL;
}

static bool
has_word(const uint8_t *img, size_t len, uint32_t v)
{
	for (size_t i = 0; i + 4 <= len; i += 4)
		if (le32(img + i) == v)
			return true;
	return false;
}

/* The MCU a Katapult build names, when it is a catalog MCU other than ours. */
static const char *
other_mcu(const struct catalog_mcu *mcu, const uint8_t *img, size_t len)
{
	size_t n;
	const struct catalog_board *b = catalog_boards(&n);

	for (size_t i = 0; i < n; i++)
		if (b[i].mcu && strcmp(b[i].mcu->name, mcu->name) != 0 &&
		    has_cstring(img, len, b[i].mcu->name))
			return b[i].mcu->name;
	return NULL;
}

/* Another application start this build may use: the catalog's menuconfig offsets and the
 * usual Katapult sizes (protocols.md §2.3), found as a literal. 0 = none found. */
static uint32_t
other_app_start(const struct catalog_mcu *mcu, const uint8_t *img, size_t len, uint32_t want)
{
	static const uint32_t sizes[] = {0x2000, 0x4000, 0x8000, 0x10000, 0x20000};
	const struct catalog_offset *off;
	size_t n = catalog_mcu_offsets(mcu, &off);

	for (size_t i = 0; i < n; i++)
		if (off[i].offset && mcu->flash_base + off[i].offset != want &&
		    has_word(img, len, mcu->flash_base + off[i].offset))
			return mcu->flash_base + off[i].offset;
	for (size_t i = 0; i < ELEMENTSOF(sizes); i++)
		if (mcu->flash_base + sizes[i] != want &&
		    has_word(img, len, mcu->flash_base + sizes[i]))
			return mcu->flash_base + sizes[i];
	return 0;
}

static int
check_katapult(const struct rescue_opts *o, const uint8_t *img, size_t len, char *err,
	       size_t errlen)
{
	uint32_t want = o->mcu->flash_base + o->boot_size, other;

	if (!has_cstring(img, len, o->mcu->name)) {
		const char *mcu = other_mcu(o->mcu, img, len);

		snprintf(err, errlen,
			 "this Katapult build is for %s, not %s: build it for the board's MCU "
			 "(make menuconfig: Processor model)",
			 mcu ? mcu : "an MCU it does not name", o->mcu->name);
		return -EINVAL;
	}
	if (has_word(img, len, want))
		return 0;
	other = other_app_start(o->mcu, img, len, want);
	if (other)
		snprintf(
		    err, errlen,
		    "this Katapult build starts the application at 0x%08x, but the installed "
		    "application is at 0x%08x: it would not boot Klipper; rebuild Katapult with "
		    "the %s application offset",
		    other, want,
		    catalog_offset_name(o->mcu, want - o->mcu->flash_base)
			? catalog_offset_name(o->mcu, want - o->mcu->flash_base)
			: "board's");
	else
		snprintf(err, errlen,
			 "cannot find the application start 0x%08x in this Katapult build: it "
			 "would not boot the installed Klipper; rebuild Katapult with that "
			 "application offset",
			 want);
	return -EINVAL;
}

int
rescue_check_image(const struct rescue_opts *o, const uint8_t *img, size_t len, char *err,
		   size_t errlen)
{
	uint32_t sp, reset, base = o->mcu->flash_base;
	const char *crp;

	if (len < 64 || len > o->boot_size) {
		snprintf(err, errlen,
			 "the bootloader image is %zu bytes; the bootloader area of %s holds %u "
			 "(and a vector table needs 64)",
			 len, o->mcu->name, o->boot_size);
		return -EINVAL;
	}
	sp = le32(img);
	reset = le32(img + 4);
	if (!sp_in_ram(o->mcu, sp)) {
		snprintf(err, errlen,
			 "the bootloader image's initial stack pointer 0x%08x is not in %s RAM: "
			 "not a bootloader for this MCU",
			 sp, o->mcu->name);
		return -EINVAL;
	}
	if (!(reset & 1) || (reset & ~1u) < base || (reset & ~1u) - base >= o->boot_size) {
		snprintf(err, errlen,
			 "the bootloader image's reset handler 0x%08x is not inside the bootloader "
			 "area 0x%08x-0x%08x: it is not linked to run at the start of flash",
			 reset, base, base + o->boot_size - 1);
		return -EINVAL;
	}
	if (o->rom == RESCUE_ROM_LPCISP && lpcisp_crp_word(img, len, &crp)) {
		snprintf(err, errlen,
			 "the bootloader image sets code read protection (%s word at 0x2FC): "
			 "refusing, it could lock the board out of ISP for good",
			 crp);
		return -EINVAL;
	}
	if (rescue_image_is_katapult(o->mcu, img, len))
		return check_katapult(o, img, len, err, errlen);
	return 0;
}

int
rescue_boot_sectors(const struct rescue_opts *o, uint32_t *ret_mask)
{
	uint32_t addr = o->mcu->flash_base, end = addr + o->boot_size, mask = 0, start, size;

	for (uint32_t i = 0; addr < end; i++) {
		if (i >= 32 || catalog_mcu_sector(o->mcu, addr, &start, &size) < 0 || start != addr)
			return -ERANGE;
		mask |= 1u << i;
		addr += size;
	}
	if (addr != end)
		return -ERANGE;
	*ret_mask = mask;
	return 0;
}

int
rescue_install(int fd, const struct rescue_opts *o, const uint8_t *img, size_t len,
	       struct rescue_result *res)
{
	uint32_t mask;
	int r;

	memset(res, 0, sizeof(*res));
	r = rescue_check_image(o, img, len, res->error, sizeof(res->error));
	if (r < 0)
		return r;
	if (rescue_boot_sectors(o, &mask) < 0) {
		rescue_error(res,
			     "the bootloader area of %u bytes does not end on a sector boundary of "
			     "%s: erasing it would take part of the application",
			     o->boot_size, o->mcu->name);
		return -ERANGE;
	}
	if (o->rom == RESCUE_ROM_LPCISP)
		return rescue_lpc_install(fd, o, img, len, mask, res);
	return rescue_stm32_install(fd, o, img, len, mask, res);
}

void
rescue_result_free(struct rescue_result *res)
{
	free(res->old_boot);
	res->old_boot = NULL;
	res->old_boot_len = 0;
}

int
rescue_load_image(const char *file, const struct catalog_mcu *mcu, struct image *img, char *err,
		  size_t errlen)
{
	uint8_t *buf = NULL;
	size_t len = 0;
	const char *why = NULL;
	int r = read_file(file, 16u << 20, &buf, &len);

	if (r < 0) {
		snprintf(err, errlen, "%s: %s", file, strerror(-r));
		return r;
	}
	r = image_parse(buf, len, img, &why);
	free(buf);
	if (r < 0) {
		snprintf(err, errlen, "%s: %s", file, why ? why : strerror(-r));
		return r;
	}
	if (img->has_load_address && img->load_address != mcu->flash_base) {
		snprintf(
		    err, errlen,
		    "%s loads at 0x%08x, not at the flash base 0x%08x: that is an application, "
		    "not a bootloader",
		    file, img->load_address, mcu->flash_base);
		image_done(img);
		return -EINVAL;
	}
	return 0;
}

int
rescue_open_lines(const char *reset_line, const char *boot_line, enum rescue_rom rom,
		  struct gpio **ret, char *err, size_t errlen)
{
	struct gpio_config cfg = {.consumer = "skrflash-rescue"};

	*ret = NULL;
	if ((!reset_line || !*reset_line) && (!boot_line || !*boot_line))
		return 0;
	cfg.lines[GPIO_ROLE_RESET] = (struct gpio_line_config){reset_line, true, true};
	/* LPC ISP is pulled up on the board and pulled low to assert; STM32 BOOT0 has a
	 * pull-down and must be driven high (research §3.2) */
	cfg.lines[GPIO_ROLE_BOOT] = rom == RESCUE_ROM_LPCISP
					? (struct gpio_line_config){boot_line, true, true}
					: (struct gpio_line_config){boot_line, false, false};
	return gpio_open(&cfg, ret, err, errlen);
}

/* --- `skrflashd --worker` with a rescue plan: JSON lines out ----------------------------- */

struct run_out {
	int fd;
	char step[16];
	unsigned percent;
};

static void
out_line(int fd, json_object *o)
{
	const char *s = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN |
							      JSON_C_TO_STRING_NOSLASHESCAPE);

	(void)rescue_write(fd, s, strlen(s));
	(void)rescue_write(fd, "\n", 1);
	json_object_put(o);
}

static void
out_progress(void *userdata, const char *step, uint64_t done, uint64_t total)
{
	struct run_out *l = userdata;
	unsigned pct = total ? (unsigned)(done * 100u / total) : 0;
	json_object *o;

	if (strcmp(step, l->step) == 0 && pct == l->percent && done != total)
		return;
	(void)str_copy(l->step, sizeof(l->step), step);
	l->percent = pct;
	o = json_object_new_object();
	json_object_object_add(o, "type", json_object_new_string("progress"));
	json_object_object_add(o, "step", json_object_new_string(step));
	json_object_object_add(o, "done", json_object_new_int64((int64_t)done));
	json_object_object_add(o, "total", json_object_new_int64((int64_t)total));
	out_line(l->fd, o);
}

static void
out_note(int fd, const char *msg)
{
	json_object *o = json_object_new_object();

	json_object_object_add(o, "type", json_object_new_string("note"));
	json_object_object_add(o, "message", json_object_new_string(msg));
	out_line(fd, o);
}

static int
out_result(int fd, int r, const char *step, const char *error, const struct rescue_result *res,
	   bool reset_done)
{
	json_object *o = json_object_new_object();

	json_object_object_add(o, "type", json_object_new_string("result"));
	json_object_object_add(o, "ok", json_object_new_boolean(r >= 0));
	json_object_object_add(o, "step", json_object_new_string(step));
	json_object_object_add(o, "error", json_object_new_string(r >= 0 ? "" : error));
	json_object_object_add(o, "bytes",
			       json_object_new_int64(res ? (int64_t)res->bytes_written : 0));
	if (res) {
		json_object_object_add(o, "old_partial",
				       json_object_new_boolean(res->old_vectors_unreadable));
		json_object_object_add(o, "old_len",
				       json_object_new_int64((int64_t)res->old_boot_len));
		json_object_object_add(o, "part_id", json_object_new_int64(res->part_id));
		json_object_object_add(o, "erased", json_object_new_int64(res->erased_sectors));
	}
	json_object_object_add(o, "reset", json_object_new_boolean(reset_done));
	out_line(fd, o);
	return r;
}

static int
run_install(const struct worker_rescue_plan *p, struct rescue_opts *o, const struct image *img,
	    int out_fd)
{
	struct rescue_result res;
	bool by_hand = !o->gpio || !gpio_wired(o->gpio, GPIO_ROLE_RESET);
	int fd, r;

	memset(&res, 0, sizeof(res));
	fd =
	    rescue_serial_open(p->tty, p->baud ? p->baud : 115200, o, res.error, sizeof(res.error));
	if (fd < 0)
		return out_result(out_fd, fd, "open", res.error, NULL, false);
	if (by_hand) {
		char msg[600];

		o->sync_tries = p->sync_tries ? p->sync_tries : 120; /* 30 s for the user */
		snprintf(msg, sizeof(msg),
			 "now, on %s: %s, press and release RESET%s; waiting for the ROM to answer "
			 "on %s",
			 p->board,
			 o->rom == RESCUE_ROM_LPCISP ? "hold ISP (P2.10) low" : "set BOOT0 high",
			 o->rom == RESCUE_ROM_LPCISP ? ", then release ISP" : "", p->tty);
		out_note(out_fd, msg);
	}
	r = rescue_install(fd, o, img->data, img->size, &res);
	close(fd);
	if (res.old_boot_len && p->old_path[0] &&
	    write_file_atomic(p->old_path, res.old_boot, res.old_boot_len, 0640) < 0 && r >= 0) {
		snprintf(res.error, sizeof(res.error), "cannot write the old bootloader to %.300s",
			 p->old_path);
		r = -EIO;
	}
	if (r >= 0 && by_hand)
		out_note(out_fd, o->rom == RESCUE_ROM_LPCISP
				     ? "installed and verified: now press and release RESET"
				     : "installed and verified: now set BOOT0 low and press RESET");
	r = out_result(out_fd, r,
		       r >= 0		    ? "done"
		       : res.erased_sectors ? "write"
					    : "check",
		       res.error, &res, !by_hand);
	rescue_result_free(&res);
	return r;
}

int
rescue_worker_run(const struct worker_rescue_plan *p, int out_fd)
{
	const struct catalog_board *b = catalog_find(p->board);
	const struct rescue_wiring *w = b ? rescue_wiring_find(b->name) : NULL;
	struct run_out l = {.fd = out_fd, .percent = 101};
	struct rescue_opts o;
	struct image img = {0};
	struct gpio *g = NULL;
	char err[512];
	int r;

	if (!b || !w || !w->possible) {
		snprintf(err, sizeof(err), "%s: no UART rescue for this board%s%s", p->board,
			 w && w->notes ? ": " : "", w && w->notes ? w->notes : "");
		return out_result(out_fd, -EINVAL, "check", err, NULL, false);
	}
	o = (struct rescue_opts){.rom = w->rom,
				 .tty = p->tty,
				 .mcu = b->mcu,
				 .boot_size = b->app_start - b->mcu->flash_base,
				 .crystal_khz = p->crystal_khz ? p->crystal_khz : 12000,
				 .sync_tries = p->sync_tries,
				 .timeout_ms = p->timeout_ms,
				 .no_parity_ok = p->no_parity_ok,
				 .progress = out_progress,
				 .userdata = &l};
	r = rescue_load_image(p->image_path, b->mcu, &img, err, sizeof(err));
	if (r < 0)
		return out_result(out_fd, r, "check", err, NULL, false);
	r = rescue_check_image(&o, img.data, img.size, err, sizeof(err));
	if (r < 0) {
		char msg[800];

		snprintf(msg, sizeof(msg), "%.150s for %s: %s", p->image_path, b->name, err);
		image_done(&img);
		return out_result(out_fd, r, "check", msg, NULL, false);
	}
	r = rescue_open_lines(p->reset_line, p->boot_line, w->rom, &g, err, sizeof(err));
	if (r < 0) {
		image_done(&img);
		return out_result(out_fd, r, "open", err, NULL, false);
	}
	o.gpio = g;
	r = run_install(p, &o, &img, out_fd);
	gpio_close(g);
	image_done(&img);
	return r;
}
