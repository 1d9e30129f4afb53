/* SPDX-License-Identifier: GPL-2.0-or-later */
/* worker: the fixed flash sequence and its JSON plan/event protocol (see worker.h). */
#include "flash/worker.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <json.h>

#include "flash/backend.h"
#include "flash/rescue.h"
#include "flash/msc.h"
#include "catalog.h"
#include "image/image.h"
#include "log.h"
#include "flash/touch.h"
#include "util.h"
#include "image/validate.h"

#define PLAN_MAX (64u << 10)

/* --- plan <-> JSON ------------------------------------------------------------------- */

static void
add_str(struct json_object *o, const char *key, const char *v)
{
	json_object_object_add(o, key, json_object_new_string(v));
}

static void
add_hex(struct json_object *o, const char *key, uint32_t v)
{
	char buf[16];

	snprintf(buf, sizeof(buf), "0x%08" PRIx32, v);
	add_str(o, key, buf);
}

int
worker_plan_to_json(const struct worker_plan *p, char **ret)
{
	struct json_object *o = json_object_new_object(), *d = json_object_new_object();
	const struct device *dev = &p->dev;

	add_str(o, "action", p->action);
	add_str(o, "method", p->method);
	add_str(d, "syspath", dev->syspath);
	add_str(d, "port", dev->port);
	add_str(d, "id_path", dev->id_path);
	json_object_object_add(d, "vid", json_object_new_int(dev->vid));
	json_object_object_add(d, "pid", json_object_new_int(dev->pid));
	add_str(d, "mode", device_mode_to_string(dev->mode));
	add_str(d, "serial", dev->serial);
	add_str(d, "manufacturer", dev->manufacturer);
	add_str(d, "product", dev->product);
	add_str(d, "usb_node", dev->usb_node);
	add_str(d, "tty", dev->tty);
	add_str(d, "by_id", dev->by_id);
	add_str(d, "block", dev->block);
	json_object_object_add(d, "busnum", json_object_new_int64(dev->busnum));
	json_object_object_add(d, "devnum", json_object_new_int64(dev->devnum));
	json_object_object_add(o, "device", d);
	add_str(o, "board", p->board);
	add_str(o, "image", p->image_path);
	add_hex(o, "app_start", p->app_start);
	add_str(o, "interface", config_interface_to_string(p->interface));
	json_object_object_add(o, "window", json_object_new_int64(p->window));
	json_object_object_add(o, "timeout_ms", json_object_new_int64(p->timeout_ms));
	if (p->force)
		json_object_object_add(o, "force", json_object_new_boolean(true));
	*ret = xstrdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN |
							     JSON_C_TO_STRING_NOSLASHESCAPE));
	json_object_put(o);
	return 0;
}

/* Copy a string member into a fixed field; a missing member leaves "" (fields are zeroed). */
static bool
get_str(struct json_object *o, const char *key, char *field, size_t size, bool required)
{
	struct json_object *v;

	if (!json_object_object_get_ex(o, key, &v))
		return !required;
	if (!json_object_is_type(v, json_type_string))
		return false;
	return str_copy(field, size, json_object_get_string(v));
}

static bool
get_uint(struct json_object *o, const char *key, uint64_t max, uint64_t *ret)
{
	struct json_object *v;
	int64_t n;

	*ret = 0;
	if (!json_object_object_get_ex(o, key, &v))
		return true;
	if (!json_object_is_type(v, json_type_int))
		return false;
	n = json_object_get_int64(v);
	if (n < 0 || (uint64_t)n > max)
		return false;
	*ret = (uint64_t)n;
	return true;
}

static bool
plan_action_known(const char *action)
{
	static const char *const known[] = {"enter",   "flash",	   "reboot",
					    "confirm", "identify", "msc-check"};

	for (size_t i = 0; i < ELEMENTSOF(known); i++)
		if (strcmp(action, known[i]) == 0)
			return true;
	return false;
}

static enum config_interface
plan_interface(const char *name)
{
	enum config_interface found = _CONFIG_INTERFACE_MAX;

	for (int i = 0; i < _CONFIG_INTERFACE_MAX; i++)
		if (strcmp(config_interface_to_string((enum config_interface)i), name) == 0)
			found = (enum config_interface)i;
	return found;
}

/* The plan's members but its device; NULL, or why the plan is refused. */
static const char *
plan_members(struct json_object *o, struct worker_plan *p)
{
	char iface[16] = "usb", app[16] = "";
	struct json_object *v;
	uint64_t n;

	if (!get_str(o, "action", p->action, sizeof(p->action), true) ||
	    !plan_action_known(p->action))
		return "plan action must be \"enter\", \"flash\", \"confirm\", \"reboot\", "
		       "\"identify\" or \"msc-check\"";
	if (!get_str(o, "method", p->method, sizeof(p->method), false) ||
	    !get_str(o, "board", p->board, sizeof(p->board), false) ||
	    !get_str(o, "image", p->image_path, sizeof(p->image_path), false) ||
	    !get_str(o, "app_start", app, sizeof(app), false) ||
	    !get_str(o, "interface", iface, sizeof(iface), false))
		return "plan has a malformed or too long string member";
	if (app[0] && parse_u32(app, &p->app_start) < 0)
		return "plan app_start is not a number";
	p->interface = plan_interface(iface);
	if (p->interface == _CONFIG_INTERFACE_MAX)
		return "plan interface is unknown";
	if (!get_uint(o, "window", 1024, &n))
		return "plan window is out of range";
	p->window = (unsigned)n;
	if (!get_uint(o, "timeout_ms", 3600000, &n))
		return "plan timeout_ms is out of range";
	p->timeout_ms = (unsigned)n;
	if (json_object_object_get_ex(o, "force", &v)) {
		if (!json_object_is_type(v, json_type_boolean))
			return "plan force is not a boolean";
		p->force = json_object_get_boolean(v);
	}
	return NULL;
}

/* The plan's device object; NULL, or why the plan is refused. */
static const char *
plan_device(struct json_object *d, struct device *dev)
{
	char mode[32] = "";
	uint64_t vid, pid, bus, devnum;

	if (!get_str(d, "syspath", dev->syspath, sizeof(dev->syspath), false) ||
	    !get_str(d, "port", dev->port, sizeof(dev->port), false) ||
	    !get_str(d, "id_path", dev->id_path, sizeof(dev->id_path), false) ||
	    !get_str(d, "mode", mode, sizeof(mode), false) ||
	    !get_str(d, "serial", dev->serial, sizeof(dev->serial), false) ||
	    !get_str(d, "manufacturer", dev->manufacturer, sizeof(dev->manufacturer), false) ||
	    !get_str(d, "product", dev->product, sizeof(dev->product), false) ||
	    !get_str(d, "usb_node", dev->usb_node, sizeof(dev->usb_node), false) ||
	    !get_str(d, "tty", dev->tty, sizeof(dev->tty), false) ||
	    !get_str(d, "by_id", dev->by_id, sizeof(dev->by_id), false) ||
	    !get_str(d, "block", dev->block, sizeof(dev->block), false))
		return "plan device has a malformed or too long string member";
	if (mode[0] && device_mode_from_string(mode, &dev->mode) < 0)
		return "plan device mode is unknown";
	if (!get_uint(d, "vid", UINT16_MAX, &vid) || !get_uint(d, "pid", UINT16_MAX, &pid) ||
	    !get_uint(d, "busnum", UINT32_MAX, &bus) || !get_uint(d, "devnum", UINT32_MAX, &devnum))
		return "plan device has an out-of-range number";
	dev->vid = (uint16_t)vid;
	dev->pid = (uint16_t)pid;
	dev->busnum = (unsigned)bus;
	dev->devnum = (unsigned)devnum;
	return NULL;
}

/* The whole plan from its JSON object; NULL, or why it is refused. */
static const char *
plan_from_object(struct json_object *o, struct worker_plan *p)
{
	struct json_object *d;
	const char *err;

	if (!o || !json_object_is_type(o, json_type_object))
		return "plan is not a JSON object";
	err = plan_members(o, p);
	if (err)
		return err;
	if (!json_object_object_get_ex(o, "device", &d) ||
	    !json_object_is_type(d, json_type_object))
		return "plan has no device object";
	err = plan_device(d, &p->dev);
	if (err)
		return err;
	if ((strcmp(p->action, "flash") == 0 || strcmp(p->action, "confirm") == 0 ||
	     strcmp(p->action, "msc-check") == 0) &&
	    !p->image_path[0])
		return "flash plan without an image";
	return NULL;
}

int
worker_plan_from_json(const char *s, struct worker_plan *ret, const char **ret_error)
{
	struct json_object *o = json_tokener_parse(s);
	struct worker_plan p;
	const char *err;

	memset(&p, 0, sizeof(p));
	err = plan_from_object(o, &p);
	if (o)
		json_object_put(o);
	if (err) {
		if (ret_error)
			*ret_error = err;
		return -EINVAL;
	}
	*ret = p;
	return 0;
}

int
worker_rescue_plan_to_json(const struct worker_rescue_plan *p, char **ret)
{
	struct json_object *o = json_object_new_object();

	add_str(o, "action", p->action);
	add_str(o, "board", p->board);
	add_str(o, "tty", p->tty);
	json_object_object_add(o, "baud", json_object_new_int64(p->baud));
	json_object_object_add(o, "crystal_khz", json_object_new_int64(p->crystal_khz));
	add_str(o, "reset_line", p->reset_line);
	add_str(o, "boot_line", p->boot_line);
	add_str(o, "image", p->image_path);
	add_str(o, "old", p->old_path);
	json_object_object_add(o, "sync_tries", json_object_new_int64(p->sync_tries));
	json_object_object_add(o, "timeout_ms", json_object_new_int64(p->timeout_ms));
	if (p->no_parity_ok)
		json_object_object_add(o, "no_parity_ok", json_object_new_boolean(true));
	*ret = xstrdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN |
							     JSON_C_TO_STRING_NOSLASHESCAPE));
	json_object_put(o);
	return 0;
}

int
worker_rescue_plan_from_json(const char *s, struct worker_rescue_plan *ret, const char **ret_error)
{
	struct json_object *o = json_tokener_parse(s), *v;
	struct worker_rescue_plan p = {0};
	uint64_t baud, crystal, tries, timeout;
	const char *err = NULL;

	if (!o || !json_object_is_type(o, json_type_object))
		err = "plan is not a JSON object";
	else if (!get_str(o, "action", p.action, sizeof(p.action), true) ||
		 (strcmp(p.action, "rescue") != 0 && strcmp(p.action, "restore") != 0))
		err = "rescue plan action must be \"rescue\" or \"restore\"";
	else if (!get_str(o, "board", p.board, sizeof(p.board), true) ||
		 !get_str(o, "tty", p.tty, sizeof(p.tty), true) ||
		 !get_str(o, "reset_line", p.reset_line, sizeof(p.reset_line), false) ||
		 !get_str(o, "boot_line", p.boot_line, sizeof(p.boot_line), false) ||
		 !get_str(o, "image", p.image_path, sizeof(p.image_path), true) ||
		 !get_str(o, "old", p.old_path, sizeof(p.old_path), false))
		err = "rescue plan has a missing, malformed or too long string member";
	else if (!get_uint(o, "baud", 4000000, &baud) ||
		 !get_uint(o, "crystal_khz", 100000, &crystal) ||
		 !get_uint(o, "sync_tries", 10000, &tries) ||
		 !get_uint(o, "timeout_ms", 600000, &timeout))
		err = "rescue plan has an out-of-range number";
	if (!err && json_object_object_get_ex(o, "no_parity_ok", &v)) {
		if (!json_object_is_type(v, json_type_boolean))
			err = "rescue plan no_parity_ok is not a boolean";
		else
			p.no_parity_ok = json_object_get_boolean(v);
	}
	if (o)
		json_object_put(o);
	if (err) {
		if (ret_error)
			*ret_error = err;
		return -EINVAL;
	}
	p.baud = (unsigned)baud;
	p.crystal_khz = (unsigned)crystal;
	p.sync_tries = (unsigned)tries;
	p.timeout_ms = (unsigned)timeout;
	*ret = p;
	return 0;
}

/* --- the sequence ---------------------------------------------------------------------- */

static int fail(struct worker_report *r, const char *step, int err, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* The report of a failed step; returns err (-EIO when it is none). err is kept: -ENODEV
 * marks a device that left under the worker (the result line's "gone"). */
static int
fail(struct worker_report *r, const char *step, int err, const char *fmt, ...)
{
	va_list ap;

	r->ok = false;
	r->err = err < 0 ? err : -EIO;
	(void)str_copy(r->step, sizeof(r->step), step);
	va_start(ap, fmt);
	vsnprintf(r->error, sizeof(r->error), fmt, ap);
	va_end(ap);
	return r->err;
}

/* A backend step that failed: its own sentence, else the errno's. */
static int
fail_step(struct worker_report *r, const char *step, const struct flash_session *s, int err)
{
	return fail(r, step, err, "%s", s->error[0] ? s->error : strerror(-err));
}

/* A catalog board carrying this MCU, for validating against its family when the plan names
 * no board; the app start comes from the bootloader then. */
static const struct catalog_board *
board_for_mcu(const char *mcu)
{
	size_t n;
	const struct catalog_board *b = catalog_boards(&n);

	if (!mcu || !mcu[0])
		return NULL;
	for (size_t i = 0; i < n; i++)
		if (b[i].mcu && strcasecmp(b[i].mcu->name, mcu) == 0)
			return &b[i];
	return NULL;
}

static void
stats(struct worker_report *r, const struct flash_session *s)
{
	r->bytes = s->bytes_written;
	r->erases = s->erases;
	r->transfers = s->transfers;
}

/* What a flash or a reboot talks to: the backend of the plan's method (else of the device's
 * mode), and the plan's board, its app start moved by the profile (the backends take it from
 * the board). what: "flash backend" or "backend"; board_step: where an unknown board fails. */
struct target {
	const struct flash_backend *be;
	struct catalog_board board;
	bool named;
};

static int
pick_target(const struct worker_plan *p, struct worker_report *r, const char *what,
	    const char *board_step, struct target *t)
{
	const struct catalog_board *named;

	t->named = false;
	t->be = p->method[0] ? backend_find(p->method) : backend_for_mode(p->dev.mode);
	if (!t->be)
		return fail(r, "open", -EPROTONOSUPPORT, "no %s for %s", what,
			    p->method[0] ? p->method : device_mode_to_string(p->dev.mode));
	if (!p->board[0])
		return 0;
	named = catalog_find(p->board);
	if (!named)
		return fail(r, board_step, -EINVAL, "unknown board '%s'", p->board);
	t->board = *named;
	if (p->app_start)
		t->board.app_start = p->app_start;
	t->named = true;
	return 0;
}

/* Open the backend's session and pass on what the bootloader reports. */
static int
open_session(const struct flash_backend *be, struct flash_session *s,
	     const struct worker_events *ev, struct worker_report *r)
{
	int ret = be->open(s);

	(void)str_copy(r->mcu, sizeof(r->mcu), s->reported_mcu);
	(void)str_copy(r->version, sizeof(r->version), s->reported_version);
	r->app_start = s->reported_app_start;
	if (ret >= 0 && ev && ev->reported)
		ev->reported(ev->userdata, s->reported_mcu, s->reported_app_start,
			     s->reported_version);
	return ret;
}

/* An app-mode backend after the board restarted (action "confirm"): does it run the image,
 * then reset it in any case, so that the MCU is left unconfigured for Klipper's host (as
 * spi_flash.py does after its verify). Step "power-cycle" when only a power cycle lets the
 * bootloader finish, "confirm" for any other failure. */
static int
run_confirm(const struct flash_backend *be, struct flash_session *s, struct worker_report *r)
{
	int ret;

	if (!be->check)
		return fail(r, "confirm", -EPROTONOSUPPORT, "method %s has no confirm step",
			    be->name);
	ret = be->check(s);
	if (ret < 0) {
		char why[sizeof(s->error)];

		(void)str_copy(why, sizeof(why), s->error[0] ? s->error : strerror(-ret));
		(void)be->leave(s);
		return fail(r, ret == -EAGAIN ? "power-cycle" : "confirm", ret, "%s", why);
	}
	/* no "leave" progress: the engine keeps the job at its confirm step until it ends */
	ret = be->leave(s);
	if (ret < 0)
		return fail_step(r, "leave", s, ret);
	r->ok = true;
	(void)str_copy(r->step, sizeof(r->step), "confirm");
	return 0;
}

/* One flash (or confirm) run: what its steps share. */
struct flash_run {
	const struct worker_plan *p;
	const struct worker_events *ev;
	struct worker_report *r;
	struct target t;
	struct flash_session s;
	uint8_t *buf; /* the image file as read */
	size_t len;
	struct image parsed, flash_img;
	struct verdict v;
};

/* READ and PARSE the image file. */
static int
load_image(struct flash_run *f)
{
	const char *path = f->p->image_path, *perr = NULL;
	int ret = read_file(path, IMAGE_MAX_SIZE, &f->buf, &f->len);

	if (ret < 0)
		return fail(f->r, "check", ret, "cannot read %s: %s", path, strerror(-ret));
	ret = image_parse(f->buf, f->len, &f->parsed, &perr);
	if (ret < 0)
		return fail(f->r, "check", ret, "%s: %s", path, perr ? perr : strerror(-ret));
	return 0;
}

/* OPEN the bootloader. An app-mode method without its medium (no SD card) fails at step
 * "no-medium": nothing was written, and the engine may take the board's bootloader path. */
static int
open_bootloader(struct flash_run *f)
{
	const struct worker_plan *p = f->p;
	struct flash_session *s = &f->s;
	int ret;

	s->dev = &p->dev;
	s->board = f->t.named ? &f->t.board : NULL;
	s->img = &f->parsed;
	s->window = p->window;
	s->timeout_ms = p->timeout_ms;
	s->progress = f->ev ? f->ev->progress : NULL;
	s->userdata = f->ev ? f->ev->userdata : NULL;
	ret = open_session(f->t.be, s, f->ev, f->r);
	if (ret < 0)
		return fail_step(
		    f->r, f->t.be->app_mode && ret == -ENOMEDIUM ? "no-medium" : "open", s, ret);
	return 0;
}

/* CHECK, before the first write: the app start the bootloader reports is the profile's. */
static int
check_app_start(struct flash_run *f)
{
	const struct worker_plan *p = f->p;
	const struct flash_session *s = &f->s;

	if (!p->app_start || s->reported_app_start == p->app_start)
		return 0;
	return fail(f->r, "check", -EINVAL,
		    "%s on this board starts the app at 0x%08" PRIx32
		    ", the profile expects 0x%08" PRIx32,
		    strcmp(f->t.be->name, "katapult") == 0 ? "Katapult" : "The bootloader",
		    s->reported_app_start, p->app_start);
}

/* A verdict the user overrides (--force): its first reason becomes a warning, a .bin goes to
 * the app start. 1 when the image is written anyway, else ret as it was. */
static int
force_image(struct flash_run *f, const struct catalog_board *board, int ret)
{
	if (ret != 0 || !f->p->force || !f->v.n_reasons ||
	    image_parse(f->buf, f->len, &f->flash_img, NULL) != 0)
		return ret;
	log_warn("%s: writing an image refused for %s (forced): %s", f->p->image_path, board->name,
		 f->v.reasons[0]);
	if (!f->flash_img.has_load_address) {
		f->flash_img.has_load_address = true;
		f->flash_img.load_address = f->v.load_address;
	}
	return 1;
}

/* The validator's reasons as one sentence. */
static int
refuse_image(struct flash_run *f, const struct catalog_board *board, int ret)
{
	char why[400] = "";

	for (size_t i = 0; i < f->v.n_reasons; i++) {
		size_t l = strlen(why);

		snprintf(why + l, sizeof(why) - l, "%s%s", i ? "; " : "", f->v.reasons[i]);
	}
	return fail(f->r, "check", ret < 0 ? ret : -EINVAL, "image refused for %s: %s", board->name,
		    why[0] ? why : strerror(ret < 0 ? -ret : EINVAL));
}

/* CHECK the image against the board (the named one, else one with the reported MCU). */
static int
check_image(struct flash_run *f)
{
	const struct worker_plan *p = f->p;
	const struct flash_session *s = &f->s;
	const char *name = strrchr(p->image_path, '/');
	struct validate_target t = {
	    .board = s->board
			 ? s->board
			 : board_for_mcu(s->reported_mcu[0] ? s->reported_mcu : p->dev.product),
	    .app_start = s->reported_app_start,
	    .interface = p->interface,
	    .reported_mcu = s->reported_mcu[0] ? s->reported_mcu : NULL,
	    .file_name = name ? name + 1 : p->image_path,
	};
	int ret;

	if (!t.board)
		return fail(f->r, "check", -EINVAL,
			    "board unknown and the bootloader reports no known MCU: name the "
			    "board");
	ret = validate_image_for_flash(f->buf, f->len, &t, &f->v, &f->flash_img);
	ret = force_image(f, t.board, ret);
	return ret <= 0 ? refuse_image(f, t.board, ret) : 0;
}

/* WRITE, VERIFY and LEAVE. */
static int
write_verify_leave(struct flash_run *f)
{
	const struct flash_backend *be = f->t.be;
	struct flash_session *s = &f->s;
	int ret = be->write(s);

	if (ret < 0)
		return fail_step(f->r, "write", s, ret);
	ret = be->verify(s);
	if (ret < 0)
		return fail_step(f->r, "verify", s, ret);
	/* the engine records the step before the board resets into its application */
	if (s->progress)
		s->progress(s->userdata, "leave", 0, 1);
	ret = be->leave(s);
	if (ret < 0)
		return fail_step(f->r, "leave", s, ret);
	f->r->ok = true;
	(void)str_copy(f->r->step, sizeof(f->r->step), "leave");
	return 0;
}

/* After open: the checks, then the confirm or the write. */
static int
flash_opened(struct flash_run *f)
{
	int ret = check_app_start(f);

	if (ret >= 0)
		ret = check_image(f);
	if (ret < 0)
		return ret;
	f->s.img = &f->flash_img;
	if (strcmp(f->p->action, "confirm") == 0)
		return run_confirm(f->t.be, &f->s, f->r);
	return write_verify_leave(f);
}

static int
run_flash(const struct worker_plan *p, const struct worker_events *ev, struct worker_report *r)
{
	struct flash_run f = {.p = p, .ev = ev, .r = r};
	int ret = pick_target(p, r, "flash backend", "check", &f.t);

	if (ret < 0)
		return ret;
	ret = load_image(&f);
	if (ret < 0) {
		free(f.buf);
		return ret;
	}
	ret = open_bootloader(&f);
	if (ret >= 0)
		ret = flash_opened(&f);
	/* on failure without leave: the board stays in its bootloader, recoverable */
	(void)str_copy(r->note, sizeof(r->note), f.s.note);
	f.t.be->close(&f.s);
	r->reset = f.s.reset;
	stats(r, &f.s);
	verdict_done(&f.v);
	image_done(&f.flash_img);
	image_done(&f.parsed);
	free(f.buf);
	return ret;
}

/* Start the application already in flash: connect to the bootloader and leave it, writing
 * nothing (Katapult: COMPLETE, src/flashcmd.c command_complete() jumps to the app; ROM
 * DfuSe: set address + zero-length DNLOAD + GETSTATUS, AN3156 §6.3 "Leave DFU mode"). */
static int
run_reboot(const struct worker_plan *p, const struct worker_events *ev, struct worker_report *r)
{
	struct target t;
	struct flash_session s;
	int ret = pick_target(p, r, "backend", "open", &t);

	if (ret < 0)
		return ret;
	memset(&s, 0, sizeof(s));
	s.dev = &p->dev;
	s.board = t.named ? &t.board : NULL;
	s.timeout_ms = p->timeout_ms;
	ret = open_session(t.be, &s, ev, r);
	if (ret < 0) {
		ret = fail_step(r, "open", &s, ret);
	} else {
		ret = t.be->leave(&s);
		if (ret < 0) {
			ret = fail_step(r, "leave", &s, ret);
		} else {
			r->ok = true;
			(void)str_copy(r->step, sizeof(r->step), "leave");
		}
	}
	t.be->close(&s);
	return ret;
}

/* Marlin (issue 16): which build runs (M115), and whether the stock bootloader took the
 * firmware.bin the msc backend left on the card (flash/msc.c). */
static int
run_marlin(const struct worker_plan *p, const struct worker_events *ev, struct worker_report *r)
{
	char msg[512];
	int ret;

	if (!p->dev.tty[0])
		return fail(r, "open", -ENXIO, "the board on port %s has no serial port",
			    p->dev.port);
	if (strcmp(p->action, "identify") == 0) {
		struct marlin_info info;

		ret = msc_identify(p->dev.tty, &info, msg, sizeof(msg));
		if (ret < 0)
			return fail(r, "open", ret, "%s", msg);
		(void)str_copy(r->version, sizeof(r->version), info.firmware);
		(void)str_copy(r->machine, sizeof(r->machine), info.machine);
		if (ev && ev->reported)
			ev->reported(ev->userdata, "", 0, info.firmware);
	} else {
		uint8_t *buf = NULL;
		size_t len = 0;

		ret = read_file(p->image_path, IMAGE_MAX_SIZE, &buf, &len);
		if (ret < 0)
			return fail(r, "check", ret, "cannot read %s: %s", p->image_path,
				    strerror(-ret));
		ret = msc_check_after(&p->dev, buf, len, msg, sizeof(msg));
		free(buf);
		if (ret < 0)
			return fail(r, "check", ret, "%s", msg);
	}
	r->ok = true;
	(void)str_copy(r->step, sizeof(r->step), "check");
	return 0;
}

int
worker_execute(const struct worker_plan *p, const struct worker_events *ev,
	       struct worker_report *ret)
{
	memset(ret, 0, sizeof(*ret));
	if (strcmp(p->action, "enter") == 0) {
		int r;

		if (!p->dev.tty[0])
			return fail(ret, "enter", -ENXIO, "the board on port %s has no tty",
				    p->dev.port);
		r = touch_enter_bootloader(p->dev.tty);
		if (r < 0)
			return fail(ret, "enter", r, "1200-baud touch of %s failed: %s", p->dev.tty,
				    strerror(-r));
		ret->ok = true;
		(void)str_copy(ret->step, sizeof(ret->step), "enter");
		return 0;
	}
	if (strcmp(p->action, "flash") == 0 || strcmp(p->action, "confirm") == 0)
		return run_flash(p, ev, ret);
	if (strcmp(p->action, "reboot") == 0)
		return run_reboot(p, ev, ret);
	if (strcmp(p->action, "identify") == 0 || strcmp(p->action, "msc-check") == 0)
		return run_marlin(p, ev, ret);
	return fail(ret, "open", -EINVAL, "unknown action '%s'", p->action);
}

/* --- JSON event lines ------------------------------------------------------------------ */

struct line_out {
	int fd;
	char step[16];
	int percent;
};

static void
write_line(int fd, struct json_object *o)
{
	const char *s = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN |
							      JSON_C_TO_STRING_NOSLASHESCAPE);
	size_t len = strlen(s), done = 0;
	char *line = xasprintf("%s\n", s);

	len++;
	while (done < len) {
		ssize_t n = write(fd, line + done, len - done);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break; /* the daemon went away; the job goes on regardless */
		done += (size_t)n;
	}
	free(line);
	json_object_put(o);
}

/* one line per step change and per whole percent: a 512 KiB Katapult flash has 8192 blocks */
static void
line_progress(void *userdata, const char *step, uint64_t done, uint64_t total)
{
	struct line_out *l = userdata;
	int pct = total ? (int)(done * 100 / total) : 0;
	struct json_object *o;

	if (strcmp(l->step, step) == 0 && pct == l->percent && done != total)
		return;
	(void)str_copy(l->step, sizeof(l->step), step);
	l->percent = pct;
	o = json_object_new_object();
	add_str(o, "type", "progress");
	add_str(o, "step", step);
	json_object_object_add(o, "done", json_object_new_int64((int64_t)done));
	json_object_object_add(o, "total", json_object_new_int64((int64_t)total));
	write_line(l->fd, o);
}

static void
line_reported(void *userdata, const char *mcu, uint32_t app_start, const char *version)
{
	struct line_out *l = userdata;
	struct json_object *o = json_object_new_object();

	add_str(o, "type", "reported");
	add_str(o, "mcu", mcu);
	add_hex(o, "app_start", app_start);
	add_str(o, "version", version);
	write_line(l->fd, o);
}

static struct json_object *
report_object(const struct worker_report *r)
{
	struct json_object *o = json_object_new_object();

	add_str(o, "type", "result");
	json_object_object_add(o, "ok", json_object_new_boolean(r->ok));
	add_str(o, "step", r->step);
	add_str(o, "error", r->error);
	if (r->note[0])
		add_str(o, "note", r->note);
	if (r->reset)
		json_object_object_add(o, "reset", json_object_new_boolean(true));
	/* the device left the bus under the worker (the backend saw it vanish): the daemon
	 * waits for udev's remove instead of taking the failure as the board's answer */
	if (!r->ok && r->err == -ENODEV)
		json_object_object_add(o, "gone", json_object_new_boolean(true));
	json_object_object_add(o, "bytes", json_object_new_int64((int64_t)r->bytes));
	json_object_object_add(o, "erases", json_object_new_int64(r->erases));
	json_object_object_add(o, "transfers", json_object_new_int64(r->transfers));
	/* Marlin's identify: the build and the machine it reports */
	if (r->machine[0]) {
		add_str(o, "version", r->version);
		add_str(o, "machine", r->machine);
	}
	return o;
}

char *
worker_report_to_json(const struct worker_report *r)
{
	struct json_object *o = report_object(r);
	char *s = xstrdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN |
								JSON_C_TO_STRING_NOSLASHESCAPE));

	json_object_put(o);
	return s;
}

int
worker_run(const struct worker_plan *p, int out_fd)
{
	struct line_out l = {.fd = out_fd, .percent = -1};
	struct worker_events ev = {
	    .progress = line_progress, .reported = line_reported, .userdata = &l};
	struct worker_report r;
	int ret = worker_execute(p, &ev, &r);

	if (!r.ok)
		log_debug("worker: %s failed: %s", r.step, r.error);
	write_line(out_fd, report_object(&r));
	return ret;
}

static bool
is_rescue_plan(const char *s)
{
	struct json_object *o = json_tokener_parse(s), *v;
	bool yes = o && json_object_object_get_ex(o, "action", &v) &&
		   json_object_is_type(v, json_type_string) &&
		   (strcmp(json_object_get_string(v), "rescue") == 0 ||
		    strcmp(json_object_get_string(v), "restore") == 0);

	if (o)
		json_object_put(o);
	return yes;
}

/* A plan the worker cannot run: its result line, and the exit code. */
static int
invalid_plan(int ret, const char *err)
{
	struct worker_report r;

	memset(&r, 0, sizeof(r));
	(void)fail(&r, "open", ret, "invalid plan: %s", err ? err : "unreadable");
	write_line(STDOUT_FILENO, report_object(&r));
	return 1;
}

int
worker_main(void)
{
	struct worker_plan p;
	const char *err = NULL;
	char *buf = xmalloc(PLAN_MAX + 1);
	size_t len = 0;
	int ret;

	for (;;) {
		ssize_t n = read(STDIN_FILENO, buf + len, PLAN_MAX - len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		len += (size_t)n;
		if (len == PLAN_MAX)
			break;
	}
	buf[len] = '\0';
	if (is_rescue_plan(buf)) { /* a UART rescue: flash/rescue.c */
		struct worker_rescue_plan rp;

		ret = worker_rescue_plan_from_json(buf, &rp, &err);
		free(buf);
		if (ret == 0)
			return rescue_worker_run(&rp, STDOUT_FILENO) < 0 ? 1 : 0;
		return invalid_plan(ret, err);
	}
	ret = worker_plan_from_json(buf, &p, &err);
	free(buf);
	if (ret < 0)
		return invalid_plan(ret, err);
	return worker_run(&p, STDOUT_FILENO) < 0 ? 1 : 0;
}

const char *
worker_method_for_mode(enum device_mode mode)
{
	const struct flash_backend *be = backend_for_mode(mode);

	return be ? be->name : NULL;
}
