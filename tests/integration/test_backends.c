/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Flash backends on simulated boards: Katapult (windowed writes, prime quirk, app-start
 * refusal, every reply fault), STM32 ROM DfuSe (sector-diff writes, device errors), the
 * 1200-baud touch, the worker's JSON lines and the one-shot `flash --device` path. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "flash/backend.h"
#include "catalog.h"
#include "flash.h"
#include "harness.h"
#include "log.h"
#include "cli/oneshot.h"
#include "sim.h"
#include "flash/touch.h"
#include "util.h"
#include "flash/worker.h"

static char tmpdir[] = "/tmp/skrflash-backends-XXXXXX";
static unsigned image_seq;

/* Store an image in the temporary directory; returns its path (caller frees). */
static char *
save_image(const uint8_t *data, size_t len)
{
	char *path = xasprintf("%s/image-%u.bin", tmpdir, ++image_seq);

	CHECK_EQ_INT(write_file_atomic(path, data, len, 0644), 0);
	return path;
}

static uint8_t *
klipper_image(struct sim_board *b, uint32_t linked_at, const char *version, size_t size)
{
	size_t len = 0;
	uint8_t *img = sim_image_klipper(sim_board_model(b)->mcu, linked_at, version, size, &len);

	CHECK_EQ_INT(len, size);
	return img;
}

static int
oneshot(const char *first, ...)
{
	va_list ap;
	char **v;
	int r;

	va_start(ap, first);
	v = strv_append_va(NULL, first, ap);
	va_end(ap);
	r = strcmp(first, "reboot") == 0 ? oneshot_reboot((int)strv_length(v), v)
					 : oneshot_flash((int)strv_length(v), v);
	strv_free(v);
	return r;
}

static enum device_mode
device_mode_of(enum sim_mode m)
{
	switch (m) {
	case SIM_MODE_KLIPPER_APP:
		return DEVICE_MODE_KLIPPER_APP;
	case SIM_MODE_KATAPULT:
		return DEVICE_MODE_KATAPULT;
	case SIM_MODE_ROM_DFU:
		return DEVICE_MODE_STM32_ROM_DFU;
	case SIM_MODE_BOOTSEL:
		return DEVICE_MODE_RP2040_BOOTSEL;
	case SIM_MODE_OFF:
	case SIM_MODE_LPC_DFU:
	case SIM_MODE_MARLIN_LPC:
	case SIM_MODE_MARLIN_STM32:
	case _SIM_MODE_MAX:
	default:
		return DEVICE_MODE_NONE;
	}
}

static void
plan_for(struct worker_plan *p, struct sim_board *b, const char *board, const char *image)
{
	const char *tty = sim_board_tty(b), *node = sim_board_devnode(b);

	memset(p, 0, sizeof(*p));
	(void)str_copy(p->action, sizeof(p->action), "flash");
	(void)str_copy(p->board, sizeof(p->board), board ? board : "");
	(void)str_copy(p->image_path, sizeof(p->image_path), image ? image : "");
	(void)DEVICE_SET(&p->dev, port, sim_board_port(b));
	(void)DEVICE_SET(&p->dev, product, sim_board_model(b)->mcu->name);
	(void)DEVICE_SET(&p->dev, serial, sim_board_serial(b));
	if (tty)
		(void)DEVICE_SET(&p->dev, tty, tty);
	if (sim_board_drive(b))
		(void)DEVICE_SET(&p->dev, block, sim_board_drive(b));
	if (node) {
		(void)DEVICE_SET(&p->dev, usb_node, node);
		CHECK_EQ_INT(sscanf(node, "/dev/bus/usb/%u/%u", &p->dev.busnum, &p->dev.devnum), 2);
	}
	p->dev.mode = device_mode_of(sim_board_mode(b));
	p->interface = CONFIG_INTERFACE_USB;
}

static uint8_t *
snapshot(struct sim_board *b, size_t *ret_len)
{
	struct flash *f = sim_board_flash(b);
	uint8_t *buf = xmalloc(f->size);

	CHECK_EQ_INT(flash_read(f, f->base, buf, f->size), 0);
	*ret_len = f->size;
	return buf;
}

static int
run_plan(const struct worker_plan *p, struct worker_report *r)
{
	int ret = worker_execute(p, NULL, r);

	if (ret < 0)
		fprintf(stderr, "  worker: %s: %s\n", r->step, r->error);
	return ret;
}

/* --- Katapult -------------------------------------------------------------------------- */

/* Katapult's EOF page count for the image of katapult_flash_ok on a freshly booted device:
 * erase units touched (stm32/flash.c, lpc176x/flash.c), 256-byte pages on RP2040. */
static uint32_t
katapult_pages(const struct catalog_mcu *mcu, uint32_t app, size_t len)
{
	uint32_t n = 0, ps, psz;

	if (mcu->family == CATALOG_FAMILY_RP2040)
		return (uint32_t)((len + 255) / 256);
	for (uint32_t a = app; a < app + len; a = ps + psz) {
		if (catalog_mcu_sector(mcu, a, &ps, &psz) < 0)
			return 0;
		n++;
	}
	return n;
}

static void
katapult_flash_ok(struct sim *s, const char *model, const char *port, unsigned window)
{
	struct sim_board_spec spec = {
	    .model = model, .port = port, .bootloader = SIM_BL_KATAPULT, .mode = SIM_MODE_KATAPULT};
	struct sim_board *b = sim_board_add(s, &spec);
	struct sim_katapult_stats st;
	struct worker_plan p;
	struct worker_report r;
	uint8_t *before, *img;
	size_t flen;
	uint32_t app, pages;
	enum catalog_family fam;
	bool prime;
	char *path;

	CHECK(b != NULL);
	if (!b)
		return;
	fprintf(stderr, "katapult: %s window %u\n", model, window);
	app = sim_board_app_start(b);
	fam = sim_board_model(b)->mcu->family;
	prime = fam == CATALOG_FAMILY_STM32F1 || fam == CATALOG_FAMILY_STM32G0;
	pages = katapult_pages(sim_board_model(b)->mcu, app, 20480 + 64);
	before = snapshot(b, &flen);
	img = klipper_image(b, app, "v0.12.0-katapult", 20480 + 36); /* last block padded */
	path = save_image(img, 20480 + 36);
	plan_for(&p, b, model, path);
	p.window = window;
	CHECK_EQ_INT(run_plan(&p, &r), 0);
	CHECK(r.ok);
	CHECK_STREQ(r.step, "leave");
	CHECK_STREQ(r.mcu, sim_board_model(b)->mcu->name);
	CHECK_EQ_INT(r.app_start, app);
	CHECK_EQ_INT(r.bytes, 20480 + 64);
	CHECK(flash_equals(sim_board_flash(b), app, img, 20480 + 36));
	/* the last block is padded with 0xFF, the bootloader region is untouched */
	CHECK(flash_is_erased(sim_board_flash(b), app + 20480 + 36, 28));
	CHECK(memcmp(before, snapshot(b, &flen), app - sim_board_flash(b)->base) == 0);
	sim_board_katapult_stats(b, &st);
	CHECK_EQ_INT(st.completes, 1);
	/* nothing lost in the device's 192-byte transmit buffer, no retry: the prime (USBFS
	 * parts), CONNECT, 321 blocks, EOF, 321 reads, COMPLETE */
	CHECK_EQ_INT(st.tx_dropped, 0);
	CHECK_EQ_INT(st.frames_rx, (prime ? 1u : 0u) + 1 + 321 + 1 + 321 + 1);
	CHECK_EQ_INT(st.errors, prime ? 1 : 0);
	CHECK_EQ_INT(r.erases, pages);
	/* COMPLETE boots the new application */
	CHECK_EQ_INT(sim_board_wait_mode(b, SIM_MODE_KLIPPER_APP, 5000), 0);
	CHECK_STREQ(sim_board_app_version(b), "v0.12.0-katapult");
	free(before);
	free(img);
	free(path);
	sim_board_unplug(b);
}

static void
katapult_wrong_app_start(struct sim *s)
{
	struct sim_board_spec spec = {.model = "octopus-f446",
				      .port = "1-3",
				      .bootloader = SIM_BL_KATAPULT,
				      .mode = SIM_MODE_KATAPULT};
	struct sim_board *b = sim_board_add(s, &spec);
	struct sim_katapult_stats st;
	struct worker_plan p;
	struct worker_report r;
	uint8_t *before, *after, *img;
	size_t flen;
	char *path;

	CHECK(b != NULL);
	if (!b)
		return;
	before = snapshot(b, &flen);
	img = klipper_image(b, 0x08008000, "v-x", 8192);
	path = save_image(img, 8192);
	/* the profile expects a 64 KiB offset: refused before any write */
	plan_for(&p, b, "octopus-f446", path);
	p.app_start = 0x08010000;
	CHECK(run_plan(&p, &r) < 0);
	CHECK_STREQ(r.step, "check");
	CHECK(strstr(r.error, "Katapult on this board starts the app at 0x08008000") != NULL);
	CHECK(strstr(r.error, "0x08010000") != NULL);
	/* an image linked for no bootloader is refused by the image checks */
	free(img);
	free(path);
	img = klipper_image(b, 0x08000000, "v-x", 8192);
	path = save_image(img, 8192);
	plan_for(&p, b, "octopus-f446", path);
	CHECK(run_plan(&p, &r) < 0);
	CHECK_STREQ(r.step, "check");
	after = snapshot(b, &flen);
	CHECK(memcmp(before, after, flen) == 0);
	sim_board_katapult_stats(b, &st);
	CHECK_EQ_INT(st.blocks, 0);
	CHECK_EQ_INT(st.completes, 0);
	CHECK_EQ_INT(sim_board_mode(b), SIM_MODE_KATAPULT);
	free(before);
	free(after);
	free(img);
	free(path);
	sim_board_unplug(b);
}

/* A fault during a windowed flash: either a successful retry or a clear error, and the board
 * stays in Katapult (no COMPLETE) when it fails. */
static void
katapult_fault(struct sim *s, const char *port, struct sim_fault fault, unsigned timeout_ms,
	       bool expect_ok, const char *expect_error)
{
	struct sim_board_spec spec = {.model = "octopus-f446",
				      .port = port,
				      .bootloader = SIM_BL_KATAPULT,
				      .mode = SIM_MODE_KATAPULT};
	struct sim_board *b = sim_board_add(s, &spec);
	struct sim_katapult_stats st;
	struct worker_plan p;
	struct worker_report r;
	uint8_t *img;
	char *path;
	int ret;

	CHECK(b != NULL);
	if (!b)
		return;
	fprintf(stderr, "katapult fault %d at %u count %u\n", (int)fault.kind, fault.at,
		fault.count);
	img = klipper_image(b, 0x08008000, "v-fault", 8192);
	path = save_image(img, 8192);
	plan_for(&p, b, "octopus-f446", path);
	p.window = 8;
	p.timeout_ms = timeout_ms;
	CHECK_EQ_INT(sim_board_set_fault(b, &fault), 0);
	ret = run_plan(&p, &r);
	sim_board_katapult_stats(b, &st);
	if (expect_ok) {
		CHECK_EQ_INT(ret, 0);
		CHECK(flash_equals(sim_board_flash(b), 0x08008000, img, 8192));
		CHECK_EQ_INT(st.completes, 1);
		CHECK_EQ_INT(sim_board_wait_mode(b, SIM_MODE_KLIPPER_APP, 5000), 0);
	} else {
		CHECK(ret < 0);
		CHECK(!r.ok);
		CHECK(expect_error && strstr(r.error, expect_error) != NULL);
		CHECK(strstr(r.error, "0x0800") != NULL); /* names the address */
		CHECK_EQ_INT(st.completes, 0);
		/* recoverable: back in Katapult (after a replug if it vanished), a retry works */
		if (sim_board_mode(b) != SIM_MODE_KATAPULT)
			CHECK_EQ_INT(sim_board_plug(b, SIM_MODE_KATAPULT), 0);
		CHECK_EQ_INT(sim_board_mode(b), SIM_MODE_KATAPULT);
		fault.kind = SIM_FAULT_NONE;
		CHECK_EQ_INT(sim_board_set_fault(b, &fault), 0);
		plan_for(&p, b, "octopus-f446", path);
		CHECK_EQ_INT(run_plan(&p, &r), 0);
		CHECK(flash_equals(sim_board_flash(b), 0x08008000, img, 8192));
	}
	free(img);
	free(path);
	sim_board_unplug(b);
}

/* LPC176x refuses a block it already took (lpc176x/flash.c next_address): a lost or
 * corrupted SEND_BLOCK reply must not end the flash there. */
static void
katapult_lpc_fault(struct sim *s, const char *port, struct sim_fault fault)
{
	struct sim_board_spec spec = {.model = "skr-1.4-turbo",
				      .port = port,
				      .bootloader = SIM_BL_KATAPULT,
				      .mode = SIM_MODE_KATAPULT};
	struct sim_board *b = sim_board_add(s, &spec);
	struct sim_katapult_stats st;
	struct worker_plan p;
	struct worker_report r;
	uint8_t *img;
	char *path;

	CHECK(b != NULL);
	if (!b)
		return;
	fprintf(stderr, "katapult lpc fault %d at %u count %u\n", (int)fault.kind, fault.at,
		fault.count);
	img = klipper_image(b, 0x4000, "v-lpc-fault", 8192);
	path = save_image(img, 8192);
	plan_for(&p, b, "skr-1.4-turbo", path);
	p.timeout_ms = 500;
	CHECK_EQ_INT(sim_board_set_fault(b, &fault), 0);
	CHECK_EQ_INT(run_plan(&p, &r), 0);
	sim_board_katapult_stats(b, &st);
	CHECK(st.errors >= 1); /* the resend was refused, and that did not stop it */
	CHECK_EQ_INT(st.completes, 1);
	CHECK(flash_equals(sim_board_flash(b), 0x4000, img, 8192));
	CHECK_EQ_INT(r.erases, 2); /* two 4 KiB sectors, each counted once */
	CHECK_EQ_INT(sim_board_wait_mode(b, SIM_MODE_KLIPPER_APP, 5000), 0);
	free(img);
	free(path);
	sim_board_unplug(b);
}

static void
katapult_faults(struct sim *s)
{
	/* reply 10 is the ACK of a block in the middle of a 256-byte chunk, 12 of the last */
	katapult_lpc_fault(s, "5-1", (struct sim_fault){SIM_FAULT_DROP_FRAME, 10, 1});
	katapult_lpc_fault(s, "5-2", (struct sim_fault){SIM_FAULT_CORRUPT_FRAME, 12, 2});
	katapult_fault(s, "1-4", (struct sim_fault){SIM_FAULT_CORRUPT_FRAME, 5, 2}, 0, true, NULL);
	katapult_fault(s, "1-5", (struct sim_fault){SIM_FAULT_DROP_FRAME, 7, 1}, 500, true, NULL);
	katapult_fault(s, "1-6", (struct sim_fault){SIM_FAULT_DUP_FRAME, 3, 4}, 0, true, NULL);
	katapult_fault(s, "1-7", (struct sim_fault){SIM_FAULT_NACK_STORM, 4, 3}, 0, true, NULL);
	katapult_fault(s, "1-8", (struct sim_fault){SIM_FAULT_STALL, 6, 900}, 300, true, NULL);
	katapult_fault(s, "1-9", (struct sim_fault){SIM_FAULT_NACK_STORM, 4, 100000}, 0, false,
		       "failed 5 times");
	katapult_fault(s, "1-10", (struct sim_fault){SIM_FAULT_UNPLUG_AT_BYTE, 2048, 0}, 500, false,
		       "disconnected");
}

/* --- DfuSe ----------------------------------------------------------------------------- */

static struct sim_board *
sim_add_checked(struct sim *s, const struct sim_board_spec *spec)
{
	struct sim_board *b = sim_board_add(s, spec);

	CHECK(b != NULL);
	return b;
}

static struct sim_board *
dfu_board(struct sim *s, const char *model, const char *port)
{
	struct sim_board_spec spec = {.model = model, .port = port, .mode = SIM_MODE_ROM_DFU};

	return sim_board_add(s, &spec);
}

static void
dfu_full_flash(struct sim *s, const char *model, const char *port)
{
	struct sim_board *b = dfu_board(s, model, port);
	const struct catalog_board *m;
	struct worker_plan p;
	struct worker_report r;
	struct flash *f;
	uint8_t *before, *img;
	size_t flen, len = 40960 + 100;
	uint64_t erases;
	char *path;

	CHECK(b != NULL);
	if (!b)
		return;
	fprintf(stderr, "dfu: %s\n", model);
	m = sim_board_model(b);
	f = sim_board_flash(b);
	before = snapshot(b, &flen);
	img = klipper_image(b, m->app_start, "v0.12.0-dfu", len - 100);
	img = xreallocarray(img, len, 1);
	memset(img + len - 100, 0x5a, 100); /* a short last chunk */
	path = save_image(img, len);
	plan_for(&p, b, m->name, path);
	erases = f->total_erases;
	CHECK_EQ_INT(run_plan(&p, &r), 0);
	CHECK(flash_equals(sim_board_flash(b), m->app_start, img, len));
	CHECK(memcmp(before, snapshot(b, &flen), m->app_start - f->base) == 0);
	CHECK_EQ_INT(r.bytes, len);
	CHECK_EQ_INT(r.erases, f->total_erases - erases);
	CHECK(r.erases >= 1);
	CHECK(r.transfers > 0);
	CHECK_EQ_INT(sim_board_wait_mode(b, SIM_MODE_KLIPPER_APP, 5000), 0);
	CHECK_STREQ(sim_board_app_version(b), "v0.12.0-dfu");

	/* the identical image again: read, compare, no erase, no write */
	CHECK_EQ_INT(sim_board_plug(b, SIM_MODE_ROM_DFU), 0);
	plan_for(&p, b, m->name, path);
	erases = f->total_erases;
	CHECK_EQ_INT(run_plan(&p, &r), 0);
	CHECK_EQ_INT(f->total_erases, erases);
	CHECK_EQ_INT(r.erases, 0);
	CHECK_EQ_INT(r.bytes, 0);
	CHECK_EQ_INT(sim_board_wait_mode(b, SIM_MODE_KLIPPER_APP, 5000), 0);
	free(before);
	free(img);
	free(path);
	sim_board_unplug(b);
}

/* F446 sectors from the app start 0x08008000: 16 KiB @0x08008000, 16 KiB @0x0800C000,
 * 64 KiB @0x08010000; a change in the second erases only that one. */
static void
dfu_changed_sector(struct sim *s)
{
	struct sim_board *b = dfu_board(s, "octopus-f446", "2-1");
	struct worker_plan p;
	struct worker_report r;
	struct flash *f;
	uint32_t c0, c1, c2;
	uint8_t *img;
	size_t len = 40960;
	char *path;

	CHECK(b != NULL);
	if (!b)
		return;
	f = sim_board_flash(b);
	img = klipper_image(b, 0x08008000, "v-sector", len);
	path = save_image(img, len);
	plan_for(&p, b, "octopus-f446", path);
	CHECK_EQ_INT(run_plan(&p, &r), 0);
	CHECK_EQ_INT(r.erases, 3);
	CHECK_EQ_INT(sim_board_wait_mode(b, SIM_MODE_KLIPPER_APP, 5000), 0);

	img[0x5000] ^= 0xff; /* 0x0800D000 */
	free(path);
	path = save_image(img, len);
	c0 = flash_erase_count(f, 0x08008000);
	c1 = flash_erase_count(f, 0x0800c000);
	c2 = flash_erase_count(f, 0x08010000);
	CHECK_EQ_INT(sim_board_plug(b, SIM_MODE_ROM_DFU), 0);
	plan_for(&p, b, "octopus-f446", path);
	CHECK_EQ_INT(run_plan(&p, &r), 0);
	CHECK_EQ_INT(r.erases, 1);
	CHECK_EQ_INT(r.bytes, 0x4000);
	CHECK_EQ_INT(flash_erase_count(f, 0x08008000), c0);
	CHECK_EQ_INT(flash_erase_count(f, 0x0800c000), c1 + 1);
	CHECK_EQ_INT(flash_erase_count(f, 0x08010000), c2);
	CHECK(flash_equals(sim_board_flash(b), 0x08008000, img, len));
	free(img);
	free(path);
	sim_board_unplug(b);
}

static void
dfu_device_error(struct sim *s, const char *port, struct sim_fault fault, const char *status,
		 const char *where)
{
	struct sim_board *b = dfu_board(s, "octopus-f446", port);
	struct worker_plan p;
	struct worker_report r;
	uint8_t *img;
	char *path;

	CHECK(b != NULL);
	if (!b)
		return;
	img = klipper_image(b, 0x08008000, "v-err", 24576);
	path = save_image(img, 24576);
	plan_for(&p, b, "octopus-f446", path);
	CHECK_EQ_INT(sim_board_set_fault(b, &fault), 0);
	CHECK(run_plan(&p, &r) < 0);
	CHECK_STREQ(r.step, "write");
	CHECK(strstr(r.error, status) != NULL);
	CHECK(strstr(r.error, where) != NULL);
	if (strstr(r.error, status) == NULL || strstr(r.error, where) == NULL)
		fprintf(stderr, "  expected %s and %s in: %s\n", status, where, r.error);
	/* still in ROM DFU and usable */
	CHECK_EQ_INT(sim_board_mode(b), SIM_MODE_ROM_DFU);
	fault.kind = SIM_FAULT_NONE;
	CHECK_EQ_INT(sim_board_set_fault(b, &fault), 0);
	CHECK_EQ_INT(run_plan(&p, &r), 0);
	CHECK(flash_equals(sim_board_flash(b), 0x08008000, img, 24576));
	free(img);
	free(path);
	sim_board_unplug(b);
}

static void
dfu_device_errors(struct sim *s)
{
	/* the 3rd data block of the run from 0x08008000 is wBlockNum 4 at 0x08009000 */
	dfu_device_error(s, "2-2", (struct sim_fault){SIM_FAULT_DFU_ERR_WRITE, 3, 0}, "errWRITE",
			 "block 4 at 0x08009000");
	dfu_device_error(s, "2-3", (struct sim_fault){SIM_FAULT_DFU_ERR_VERIFY, 5, 0}, "errVERIFY",
			 "block 6 at 0x0800a000");
	/* the 2nd erase is the sector at 0x0800C000 */
	dfu_device_error(s, "2-4", (struct sim_fault){SIM_FAULT_DFU_ERR_ERASE, 2, 0}, "errERASE",
			 "0x0800c000");
}

/* A crafted layout string that covers the whole address space with pages that are not
 * writable: the search for the application start stopped only by wrapping back to 0, and
 * then searched forever. Now it ends with an error. */
static void
dfu_layout_wraps(struct sim *s)
{
	struct sim_board_spec spec = {.model = "octopus-f446",
				      .port = "2-9",
				      .mode = SIM_MODE_ROM_DFU,
				      .dfu_layout = "@Internal Flash  /0x00000000/512*008Ma"};
	struct sim_board *b = sim_add_checked(s, &spec);
	struct worker_plan p;
	struct worker_report r;
	uint8_t *img;
	char *path;

	if (!b)
		return;
	img = klipper_image(b, 0x08008000, "v-wrap", 4096);
	path = save_image(img, 4096);
	plan_for(&p, b, "octopus-f446", path);
	CHECK(run_plan(&p, &r) < 0);
	CHECK(strstr(r.error, "no writable flash at or above 0x08008000") != NULL);
	free(img);
	free(path);
	sim_board_unplug(b);
}

/* --- touch, worker process, one-shot ---------------------------------------------------- */

static void
touch_transitions(struct sim *s)
{
	struct sim_board_spec kspec = {.model = "octopus-f446",
				       .port = "3-1",
				       .bootloader = SIM_BL_KATAPULT,
				       .mode = SIM_MODE_KLIPPER_APP};
	struct sim_board_spec dspec = {
	    .model = "octopus-f446", .port = "3-2", .mode = SIM_MODE_KLIPPER_APP};
	struct sim_board *k = sim_board_add(s, &kspec), *d = sim_board_add(s, &dspec);
	char tty[DEVICE_PATH];

	CHECK(k != NULL && d != NULL);
	if (!k || !d)
		return;
	(void)str_copy(tty, sizeof(tty), sim_board_tty(k));
	CHECK_EQ_INT(touch_enter_bootloader(tty), 0);
	CHECK_EQ_INT(sim_board_wait_mode(k, SIM_MODE_KATAPULT, 5000), 0);
	(void)str_copy(tty, sizeof(tty), sim_board_tty(d));
	CHECK_EQ_INT(touch_enter_bootloader(tty), 0);
	CHECK_EQ_INT(sim_board_wait_mode(d, SIM_MODE_ROM_DFU, 5000), 0);
	CHECK_EQ_INT(touch_enter_bootloader("/dev/ttyACM-none"), -ENOENT);
	sim_board_unplug(k);
	sim_board_unplug(d);
}

/* worker_run's JSON lines, then the real `skrflashd --worker` when it has the flag */
static void
worker_lines(struct sim *s)
{
	struct sim_board_spec spec = {.model = "octopus-f446",
				      .port = "3-3",
				      .bootloader = SIM_BL_KATAPULT,
				      .mode = SIM_MODE_KATAPULT};
	struct sim_board *b = sim_board_add(s, &spec);
	const char *build = getenv("BUILD") ? getenv("BUILD") : "build";
	struct worker_plan p;
	char *path, *json, *planfile, *cmd, *out = NULL, buf[65536];
	uint8_t *img;
	int fds[2], rc;
	ssize_t n;

	CHECK(b != NULL);
	if (!b)
		return;
	img = klipper_image(b, 0x08008000, "v-worker", 4096);
	path = save_image(img, 4096);
	plan_for(&p, b, "octopus-f446", path);
	CHECK_EQ_INT(pipe(fds), 0);
	CHECK_EQ_INT(worker_run(&p, fds[1]), 0);
	close(fds[1]);
	n = read(fds[0], buf, sizeof(buf) - 1);
	close(fds[0]);
	buf[n > 0 ? n : 0] = '\0';
	CHECK(strstr(buf, "{\"type\":\"reported\",\"mcu\":\"stm32f446xx\",\"app_start\":"
			  "\"0x08008000\"") != NULL);
	CHECK(strstr(buf,
		     "{\"type\":\"progress\",\"step\":\"write\",\"done\":4096,\"total\":4096}") !=
	      NULL);
	CHECK(strstr(buf, "{\"type\":\"result\",\"ok\":true,\"step\":\"leave\",\"error\":\"\","
			  "\"bytes\":4096") != NULL);
	CHECK_EQ_INT(sim_board_wait_mode(b, SIM_MODE_KLIPPER_APP, 5000), 0);

	/* the same plan through the daemon binary */
	CHECK_EQ_INT(sim_board_plug(b, SIM_MODE_KATAPULT), 0);
	plan_for(&p, b, "octopus-f446", path);
	CHECK_EQ_INT(worker_plan_to_json(&p, &json), 0);
	planfile = xasprintf("%s/plan.json", tmpdir);
	CHECK_EQ_INT(write_file_atomic(planfile, json, strlen(json), 0644), 0);
	cmd = xasprintf("exec %s/skrflashd --worker < %s", build, planfile);
	{
		char **argv = strv_new("/bin/sh", "-c", cmd, NULL);

		rc = sim_run(s, argv, 30000, &out);
		strv_free(argv);
	}
	if (out && strstr(out, "\"type\":\"result\"")) {
		CHECK_EQ_INT(rc, 0);
		CHECK(strstr(out, "\"type\":\"result\",\"ok\":true") != NULL);
		CHECK_EQ_INT(sim_board_wait_mode(b, SIM_MODE_KLIPPER_APP, 5000), 0);
	} else {
		fprintf(stderr, "SKIP: %s/skrflashd has no --worker yet (exit %d)\n", build, rc);
	}
	free(out);
	free(cmd);
	free(planfile);
	free(json);
	free(img);
	free(path);
	sim_board_unplug(b);
}

/* klipper-app -> touch -> Katapult -> flash -> app back on the same port */
static void
oneshot_katapult(struct sim_board *k)
{
	uint8_t *img = klipper_image(k, 0x08008000, "v-oneshot-k", 12288);
	char tty[DEVICE_PATH], *path = save_image(img, 12288);

	(void)str_copy(tty, sizeof(tty), sim_board_tty(k));
	CHECK_EQ_INT(oneshot("flash", "--device", tty, "--board", "octopus-f446", path, NULL), 0);
	CHECK_EQ_INT(sim_board_mode(k), SIM_MODE_KLIPPER_APP);
	CHECK_STREQ(sim_board_app_version(k), "v-oneshot-k");
	free(img);
	free(path);
}

/* a board with no software way into a bootloader: refused with what would help */
static void
oneshot_no_bootloader(struct sim *s)
{
	struct sim_board_spec nspec = {
	    .model = "skr-mini-e3-v2-f103rc", .port = "4-3", .mode = SIM_MODE_KLIPPER_APP};
	struct sim_board *n = sim_board_add(s, &nspec);

	CHECK(n != NULL);
	if (n) {
		unsigned before = sim_board_enumerations(n);
		uint8_t *fimg = klipper_image(n, 0x08007000, "v-oneshot-n", 12288);
		char *fpath = save_image(fimg, 12288);

		CHECK_EQ_INT(oneshot("flash", "--device", sim_board_by_id(n), fpath, NULL), 1);
		CHECK(sim_board_enumerations(n) > before); /* it did reboot, into the app */
		free(fimg);
		free(fpath);
		sim_board_unplug(n);
	}
}

/* the file is read and validated before the board is touched: a missing file, a text file
 * and a build for another offset leave the running board alone */
static void
oneshot_refusals(struct sim_board *k)
{
	unsigned before = sim_board_enumerations(k);
	static const char text[] = "flash me\n";
	char *txt = save_image((const uint8_t *)text, sizeof(text) - 1);
	uint8_t *wrong = klipper_image(k, 0x08000000, "v-oneshot-wrong", 12288);
	char tty[DEVICE_PATH], *wpath = save_image(wrong, 12288);

	(void)str_copy(tty, sizeof(tty), sim_board_tty(k));
	CHECK_EQ_INT(oneshot("flash", "--device", tty, "/nonexistent/klipper.bin", NULL), 2);
	CHECK_EQ_INT(oneshot("flash", "--device", tty, txt, NULL), 1);
	CHECK_EQ_INT(oneshot("flash", "--device", tty, "--board", "octopus-f446", wpath, NULL), 1);
	CHECK_EQ_INT(oneshot("flash", "--device", tty, wpath, NULL), 1);
	CHECK_EQ_INT(sim_board_enumerations(k), before);
	CHECK_EQ_INT(sim_board_mode(k), SIM_MODE_KLIPPER_APP);
	CHECK_STREQ(sim_board_app_version(k), "v-oneshot-k");

	/* validation bypassed: the wrong build is written at 0x08008000, and the simulator's
	 * own boot model (not the validator) makes it boot-loop; the one-shot flash reports the
	 * failed boot instead of success */
	before = sim_board_enumerations(k);
	CHECK_EQ_INT(oneshot("flash", "--device", tty, "--force", wpath, NULL), 1);
	CHECK(flash_equals(sim_board_flash(k), 0x08008000, wrong, 12288));
	CHECK(!flash_app_valid(sim_board_flash(k), 0x08008000));
	CHECK_EQ_INT(sim_board_wait_mode(k, SIM_MODE_OFF, 5000), 0);
	CHECK(sim_board_enumerations(k) > before + 1); /* Katapult, then the flickers */
	free(txt);
	free(wrong);
	free(wpath);
}

/* reboot: out of Katapult, ROM DFU and BOOTSEL into the application already in flash */
static void
oneshot_reboots(struct sim *s)
{
	struct sim_board_spec kat = {.model = "octopus-f446",
				     .port = "4-5",
				     .bootloader = SIM_BL_KATAPULT,
				     .mode = SIM_MODE_KATAPULT};
	struct sim_board_spec dfu = {
	    .model = "octopus-f446", .port = "4-6", .mode = SIM_MODE_ROM_DFU};
	struct sim_board_spec pico = {.model = "skr-pico", .port = "4-7", .mode = SIM_MODE_BOOTSEL};
	struct sim_board *a = sim_board_add(s, &kat), *b = sim_board_add(s, &dfu);
	struct sim_board *c = sim_board_add(s, &pico);
	char node[DEVICE_PATH];

	CHECK(a && b && c);
	if (a && b && c) {
		(void)str_copy(node, sizeof(node), sim_board_tty(a));
		CHECK_EQ_INT(oneshot("reboot", "--device", node, NULL), 0);
		CHECK_EQ_INT(sim_board_mode(a), SIM_MODE_KLIPPER_APP);
		/* a running app: nothing to do */
		(void)str_copy(node, sizeof(node), sim_board_tty(a));
		CHECK_EQ_INT(oneshot("reboot", "--device", node, NULL), 0);
		/* ROM DFU needs to know where the app starts */
		CHECK_EQ_INT(oneshot("reboot", "--device", "4-6", NULL), 1);
		CHECK_EQ_INT(sim_board_mode(b), SIM_MODE_ROM_DFU);
		CHECK_EQ_INT(oneshot("reboot", "--device", "4-6", "--board", "octopus-f446", NULL),
			     0);
		CHECK_EQ_INT(sim_board_mode(b), SIM_MODE_KLIPPER_APP);
		/* PICOBOOT's REBOOT: the factory build (valid boot2) starts */
		CHECK_EQ_INT(oneshot("reboot", "--device", "4-7", NULL), 0);
		CHECK_EQ_INT(sim_board_mode(c), SIM_MODE_KLIPPER_APP);
		CHECK_EQ_INT(oneshot("reboot", "4-7", NULL), 2);
	}
	if (a)
		sim_board_unplug(a);
	if (b)
		sim_board_unplug(b);
	if (c)
		sim_board_unplug(c);
}

static void
oneshot_paths(struct sim *s)
{
	struct sim_board_spec kspec = {.model = "octopus-f446",
				       .port = "4-1",
				       .bootloader = SIM_BL_KATAPULT,
				       .mode = SIM_MODE_KLIPPER_APP};
	struct sim_board_spec dspec = {
	    .model = "skr-3-h723", .port = "4-2", .mode = SIM_MODE_KLIPPER_APP};
	struct sim_board *k = sim_board_add(s, &kspec), *d = sim_board_add(s, &dspec);
	char *path;
	uint8_t *img;

	CHECK(k != NULL && d != NULL);
	if (!k || !d)
		return;
	oneshot_katapult(k);
	/* by port, klipper-app -> touch -> ROM DFU -> flash -> app */
	img = klipper_image(d, 0x08020000, "v-oneshot-d", 12288);
	path = save_image(img, 12288);
	CHECK_EQ_INT(oneshot("flash", "--device", "4-2", "--board", "skr-3-h723", path, NULL), 0);
	CHECK_EQ_INT(sim_board_mode(d), SIM_MODE_KLIPPER_APP);
	CHECK_STREQ(sim_board_app_version(d), "v-oneshot-d");
	oneshot_no_bootloader(s);
	oneshot_refusals(k);
	oneshot_reboots(s);
	/* usage errors */
	CHECK_EQ_INT(oneshot("flash", path, NULL), 2);
	CHECK_EQ_INT(oneshot("flash", "--device", "/dev/ttyNONE", path, NULL), 1);
	free(img);
	free(path);
	sim_board_unplug(k);
	sim_board_unplug(d);
}

/* --- RP2040 BOOTSEL (PICOBOOT) ---------------------------------------------------------- */

/* A "No bootloader" RP2040 build: boot2 (256 bytes ending in its CRC) then the application
 * linked at 0x10000100. */
static uint8_t *
rp2040_image(struct sim_board *b, const char *version, size_t app_len, bool good_boot2)
{
	size_t len = 0;
	uint8_t *img =
	    sim_image_rp2040(sim_board_model(b)->mcu, version, app_len, good_boot2, &len);

	CHECK_EQ_INT(len, 256 + app_len);
	return img;
}

static struct sim_board *
pico_board(struct sim *s, const char *port)
{
	struct sim_board_spec spec = {.model = "skr-pico", .port = port, .mode = SIM_MODE_BOOTSEL};

	return sim_board_add(s, &spec);
}

static void
picoboot_flash_ok(struct sim *s)
{
	struct sim_board *b = pico_board(s, "6-1");
	struct worker_plan p;
	struct worker_report r;
	struct flash *f;
	size_t len = 256 + 45056 + 300; /* a real build's size, not sector-aligned */
	uint8_t *img;
	uint64_t erases;
	uint32_t c3;
	char *path;

	CHECK(b != NULL);
	if (!b)
		return;
	f = sim_board_flash(b);
	img = rp2040_image(b, "v0.13.0-pico", len - 256, true);
	path = save_image(img, len);
	plan_for(&p, b, "skr-pico", path);
	CHECK_STREQ(p.method, "");
	CHECK_EQ_INT(run_plan(&p, &r), 0);
	CHECK(r.ok);
	CHECK_STREQ(r.mcu, "rp2040");
	CHECK(flash_equals(f, 0x10000000u, img, len));
	/* the rest of the last sector is erased, nothing beyond it touched */
	CHECK(flash_is_erased(f, 0x10000000u + (uint32_t)len, 4096 - len % 4096));
	CHECK_EQ_INT(r.erases, (len + 4095) / 4096);
	/* REBOOT: the bootrom finds a valid boot2 and starts the new application */
	CHECK_EQ_INT(sim_board_wait_mode(b, SIM_MODE_KLIPPER_APP, 5000), 0);
	CHECK_STREQ(sim_board_app_version(b), "v0.13.0-pico");

	/* the same image again: every sector read and found identical, nothing erased */
	CHECK_EQ_INT(sim_board_plug(b, SIM_MODE_BOOTSEL), 0);
	plan_for(&p, b, "skr-pico", path);
	erases = f->total_erases;
	CHECK_EQ_INT(run_plan(&p, &r), 0);
	CHECK_EQ_INT(f->total_erases, erases);
	CHECK_EQ_INT(r.bytes, 0);
	CHECK_EQ_INT(sim_board_wait_mode(b, SIM_MODE_KLIPPER_APP, 5000), 0);

	/* one byte changed in the fourth sector: only that sector is erased and written */
	img[3 * 4096 + 17] ^= 0xff;
	free(path);
	path = save_image(img, len);
	c3 = flash_erase_count(f, 0x10003000u);
	CHECK_EQ_INT(sim_board_plug(b, SIM_MODE_BOOTSEL), 0);
	plan_for(&p, b, "skr-pico", path);
	CHECK_EQ_INT(run_plan(&p, &r), 0);
	CHECK_EQ_INT(r.erases, 1);
	CHECK_EQ_INT(r.bytes, 4096);
	CHECK_EQ_INT(flash_erase_count(f, 0x10003000u), c3 + 1);
	CHECK(flash_equals(f, 0x10000000u, img, len));
	CHECK_EQ_INT(sim_board_wait_mode(b, SIM_MODE_KLIPPER_APP, 5000), 0);
	free(img);
	free(path);
	sim_board_unplug(b);
}

/* The boot model disagrees with a bad boot2 even when the flash itself went right: the
 * backend is driven directly (the worker's validation would refuse this image). */
static void
picoboot_bad_boot2(struct sim *s)
{
	struct sim_board *b = pico_board(s, "6-2");
	const struct flash_backend *be = backend_for_mode(DEVICE_MODE_RP2040_BOOTSEL);
	struct flash_session fs;
	struct worker_plan p;
	struct image im = {0};
	size_t len = 256 + 8192;
	unsigned before;
	uint8_t *img;

	CHECK(b != NULL && be != NULL);
	if (!b || !be)
		return;
	img = rp2040_image(b, "v-bad-boot2", len - 256, false);
	plan_for(&p, b, "skr-pico", NULL);
	im.format = IMAGE_FORMAT_BIN;
	im.has_load_address = true;
	im.load_address = 0x10000000u;
	im.data = img;
	im.size = len;
	memset(&fs, 0, sizeof(fs));
	fs.dev = &p.dev;
	fs.board = sim_board_model(b);
	fs.img = &im;
	CHECK_EQ_INT(be->open(&fs), 0);
	CHECK_EQ_INT(be->write(&fs), 0);
	CHECK_EQ_INT(be->verify(&fs), 0);
	before = sim_board_enumerations(b);
	CHECK_EQ_INT(be->leave(&fs), 0);
	be->close(&fs);
	CHECK(flash_equals(sim_board_flash(b), 0x10000000u, img, len));
	/* the chip reboots, refuses boot2, and shows up in BOOTSEL again (counted by its
	 * enumerations: it is off for a few ms only, a loaded machine may never see that) */
	CHECK_EQ_INT(sim_board_wait_enumerations(b, before + 1, 5000), 0);
	CHECK_EQ_INT(sim_board_wait_mode(b, SIM_MODE_BOOTSEL, 5000), 0);
	free(img);
	sim_board_unplug(b);
}

/* A write the device refuses, and an unplug in the middle: clear errors, no reboot, and the
 * next attempt succeeds. */
static void
picoboot_faults(struct sim *s)
{
	struct sim_board *b = pico_board(s, "6-3");
	/* status 4: invalid address; power back 200 ms after the cut */
	struct sim_fault status = {.kind = SIM_FAULT_PICOBOOT_REFUSE, .at = 3, .count = 4};
	struct sim_fault unplug = {.kind = SIM_FAULT_UNPLUG_AT_BYTE, .at = 8192, .count = 200};
	struct worker_plan p;
	struct worker_report r;
	size_t len = 256 + 20480;
	uint8_t *img;
	char *path;

	CHECK(b != NULL);
	if (!b)
		return;
	img = rp2040_image(b, "v-faults", len - 256, true);
	path = save_image(img, len);

	CHECK_EQ_INT(sim_board_set_fault(b, &status), 0);
	plan_for(&p, b, "skr-pico", path);
	CHECK(run_plan(&p, &r) < 0);
	CHECK_STREQ(r.step, "write");
	CHECK(strstr(r.error, "PICOBOOT write at 0x10003000") != NULL);
	CHECK(strstr(r.error, "invalid address") != NULL);
	CHECK_EQ_INT(sim_board_mode(b), SIM_MODE_BOOTSEL); /* no reboot: still in BOOTSEL */

	CHECK_EQ_INT(sim_board_set_fault(b, &unplug), 0);
	plan_for(&p, b, "skr-pico", path);
	CHECK(run_plan(&p, &r) < 0);
	CHECK_STREQ(r.step, "write");
	CHECK(strstr(r.error, "left the bus") != NULL);
	/* boot2 was erased first and is written last: the half-written image does not start,
	 * the chip comes back in BOOTSEL when the power returns */
	CHECK_EQ_INT(sim_board_wait_mode(b, SIM_MODE_BOOTSEL, 5000), 0);

	plan_for(&p, b, "skr-pico", path);
	CHECK_EQ_INT(run_plan(&p, &r), 0);
	CHECK(flash_equals(sim_board_flash(b), 0x10000000u, img, len));
	CHECK_EQ_INT(sim_board_wait_mode(b, SIM_MODE_KLIPPER_APP, 5000), 0);
	CHECK_STREQ(sim_board_app_version(b), "v-faults");
	free(img);
	free(path);
	sim_board_unplug(b);
}

/* PICOBOOT held by another program: the image goes to the RPI-RP2 drive as NEW.UF2 through
 * the project's FAT writer; the simulated ROM programs it from the drive's sectors and
 * reboots into it. */
static void
picoboot_drive(struct sim *s)
{
	struct sim_board *b = pico_board(s, "6-4");
	struct sim_fault busy = {.kind = SIM_FAULT_PICOBOOT_BUSY};
	struct worker_plan p;
	struct worker_report r;
	size_t len = 256 + 24576 + 100;
	uint8_t *img;
	char *path;

	CHECK(b != NULL);
	if (!b)
		return;
	CHECK(sim_board_drive(b) != NULL);
	CHECK_EQ_INT(sim_board_set_fault(b, &busy), 0);
	img = rp2040_image(b, "v-uf2-drive", len - 256, true);
	path = save_image(img, len);
	plan_for(&p, b, "skr-pico", path);
	CHECK_EQ_INT(run_plan(&p, &r), 0);
	CHECK(r.ok);
	CHECK_EQ_INT(r.bytes, len);
	CHECK_EQ_INT(sim_board_wait_mode(b, SIM_MODE_KLIPPER_APP, 5000), 0);
	CHECK(flash_equals(sim_board_flash(b), 0x10000000u, img, len));
	CHECK_STREQ(sim_board_app_version(b), "v-uf2-drive");
	/* a plan made before the drive's uevent arrived: the backend finds it by the port */
	img[300] ^= 0x5a;
	free(path);
	path = save_image(img, len);
	CHECK_EQ_INT(sim_board_plug(b, SIM_MODE_BOOTSEL), 0);
	CHECK_EQ_INT(sim_board_set_fault(b, &busy), 0);
	plan_for(&p, b, "skr-pico", path);
	p.dev.block[0] = '\0';
	CHECK_EQ_INT(run_plan(&p, &r), 0);
	CHECK_EQ_INT(sim_board_wait_mode(b, SIM_MODE_KLIPPER_APP, 5000), 0);
	CHECK(flash_equals(sim_board_flash(b), 0x10000000u, img, len));
	free(img);
	free(path);
	sim_board_unplug(b);
}

/* SKRFLASH_TEST_ONLY=name runs one group (for debugging) */
static bool
want(const char *group)
{
	const char *only = getenv("SKRFLASH_TEST_ONLY");

	if (only && *only && strcmp(only, group) != 0)
		return false;
	fprintf(stderr, "== %s\n", group);
	return true;
}

int
main(int argc, char **argv)
{
	struct sim *s;

	sim_init(argc, argv);
	log_open(LOG_TARGET_STDERR, getenv("SKRFLASH_DEBUG") ? LOG_DEBUG : LOG_NOTICE, "test");
	if (!mkdtemp(tmpdir)) {
		perror("mkdtemp");
		return 1;
	}
	s = sim_new();
	if (want("katapult")) {
		katapult_flash_ok(s, "octopus-f446", "1-1", 8);
		katapult_flash_ok(s, "skr-mini-e3-v3", "1-2", 1);
		/* every family at the default window */
		katapult_flash_ok(s, "skr-mini-e3-v3", "1-11", 0);
		katapult_flash_ok(s, "skr-mini-e3-v2-f103rc", "1-12", 0);
		katapult_flash_ok(s, "octopus-pro-h723", "1-13", 0);
		katapult_flash_ok(s, "skr-1.4-turbo", "1-14", 0);
		katapult_flash_ok(s, "skr-pico", "1-15", 0);
		katapult_wrong_app_start(s);
	}
	if (want("faults"))
		katapult_faults(s);
	if (want("dfu")) {
		dfu_full_flash(s, "octopus-f446", "2-5");
		dfu_full_flash(s, "octopus-pro-h723", "2-6");
		dfu_changed_sector(s);
	}
	if (want("dfu-errors"))
		dfu_device_errors(s);
	if (want("picoboot")) {
		picoboot_flash_ok(s);
		picoboot_bad_boot2(s);
		picoboot_faults(s);
		picoboot_drive(s);
	}
	if (want("touch"))
		touch_transitions(s);
	if (want("worker"))
		worker_lines(s);
	if (want("oneshot"))
		oneshot_paths(s);
	/* last: its crafted device must not share a node with a later group's */
	if (want("dfu-layout"))
		dfu_layout_wraps(s);
	sim_free(s);
	{
		char *cmd = xasprintf("rm -rf %s", tmpdir);

		if (system(cmd) != 0)
			fprintf(stderr, "could not remove %s\n", tmpdir);
		free(cmd);
	}
	TEST_DONE();
}
