/* SPDX-License-Identifier: GPL-2.0-or-later */
/* skrflashd: the daemon - one sd-event loop that ties udev, the queue, the state database
 * and the control socket together. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <grp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <systemd/sd-daemon.h>
#include <systemd/sd-event.h>

#include "service/boards.h"
#include "catalog.h"
#include "config.h"
#include "service/control.h"
#include "image/image.h"
#include "image/kdict.h"
#include "service/job.h"
#include "log.h"
#include "paths.h"
#include "service/queue.h"
#include "service/store.h"
#include "udevwatch.h"
#include "util.h"
#include "image/validate.h"
#include "proto/marlin.h"
#include "flash/worker.h"

#define EXIT_CONFIG 78 /* EX_CONFIG */

struct daemon {
	sd_event *loop;
	char *config_path;    /* NULL = built-in defaults */
	bool config_explicit; /* -c given: a missing file is an error */
	struct config_overrides ov;
	struct config *cfg;
	struct store *store;
	struct boards *boards;
	struct udevwatch *udev;
	struct queue *queue;
	struct control *control;
	struct job_table *jobs;
	char *socket_path;
	int lock_fd; /* flock on <state_dir>/skrflashd.lock: one daemon per state directory */
	char last_status[256];
	uint64_t started_usec;
	char *reload_error; /* why the last reload was refused, NULL after a good one */
	struct {
		char sha[65];
		char version[128];
	} versions[32]; /* Klipper version of stored firmware, for history; round robin */
	unsigned next_version;
	int64_t reload_failed_at; /* wall clock of that refusal */
	int exe_fd;		  /* this executable, for the workers */
};

static int
load_config(struct daemon *d, struct config **ret)
{
	struct config *cfg = NULL;
	char *errors = NULL;
	const char *path = d->config_path;
	int r;

	if (path && !d->config_explicit && access(path, F_OK) < 0 && errno == ENOENT)
		path = NULL; /* no file at the default place: run on the built-in catalog */
	r = config_load(path, &d->ov, &cfg, &errors);
	if (r >= 0) {
		/* the package creates this group; without a config line its members may drop
		 * firmware and use skrflashctl, as the README promises */
		const struct group *g = getgrnam(SKRFLASH_GROUP);

		if (g && !cfg->has_drop_gid) {
			cfg->has_drop_gid = true;
			cfg->drop_gid = g->gr_gid;
		}
		if (g && !cfg->has_control_gid) {
			cfg->has_control_gid = true;
			cfg->control_gid = g->gr_gid;
		}
		*ret = cfg;
	}
	if (r < 0) {
		char first[512];

		(void)snprintf(first, sizeof(first), "%.*s",
			       (int)strcspn(errors ? errors : "", "\n"), errors ? errors : "");
		if (!errors)
			(void)snprintf(first, sizeof(first), "cannot load %s: %s",
				       path ? path : "(built-in)", strerror(-r));
		free(d->reload_error);
		d->reload_error = xstrdup(first);
		d->reload_failed_at = now_realtime_sec();
		if (errors) {
			/* one line per problem, each already "FILE:LINE: key: what" */
			for (char *line = strtok(errors, "\n"); line; line = strtok(NULL, "\n"))
				log_error("%s", line);
		} else {
			log_error_errno(r, "cannot load configuration %s",
					path ? path : "(built-in)");
		}
	}
	free(errors);
	return r;
}

static json_object *
status_json(struct daemon *d, unsigned *ret_waiting)
{
	json_object *o = json_object_new_object(), *desired = NULL;
	unsigned waiting = 0;

	/* "waiting" = a profile's desired firmware that none of its present boards runs yet */
	if (store_desired_list_json(d->store, &desired) >= 0) {
		for (size_t i = 0; i < json_object_array_length(desired); i++) {
			json_object *e = json_object_array_get_idx(desired, i), *v;
			const char *profile = "", *sha = "";
			bool done = false;

			if (json_object_object_get_ex(e, "profile", &v))
				profile = json_object_get_string(v);
			if (json_object_object_get_ex(e, "sha256", &v))
				sha = json_object_get_string(v);
			for (struct board *b = boards_next(d->boards, NULL); b;
			     b = boards_next(d->boards, b))
				if (strcmp(b->profile, profile) == 0 &&
				    strcmp(b->installed_sha, sha) == 0)
					done = true;
			waiting += !done;
		}
		json_object_put(desired);
	}
	json_object_object_add(o, "ok", json_object_new_boolean(true));
	json_object_object_add(o, "version", json_object_new_string(SKRFLASH_VERSION));
	json_object_object_add(o, "pid", json_object_new_int64((int64_t)getpid()));
	json_object_object_add(
	    o, "uptime_sec",
	    json_object_new_int64((int64_t)((now_monotonic_usec() - d->started_usec) / 1000000u)));
	json_object_object_add(o, "boards_present",
			       json_object_new_int64((int64_t)boards_count_present(d->boards)));
	json_object_object_add(
	    o, "jobs_running",
	    json_object_new_int64(d->jobs ? (int64_t)job_table_running(d->jobs) : 0));
	if (d->jobs)
		json_object_object_add(o, "jobs", job_table_to_json(d->jobs));
	json_object_object_add(o, "firmware_waiting", json_object_new_int64(waiting));
	json_object_object_add(o, "config",
			       json_object_new_string(d->cfg->path ? d->cfg->path : "(built-in)"));
	json_object_object_add(o, "profiles", json_object_new_int64((int64_t)d->cfg->n_profiles));
	json_object_object_add(o, "state_dir", json_object_new_string(d->cfg->state_dir));
	json_object_object_add(o, "queue_dir", json_object_new_string(d->cfg->queue_dir));
	json_object_object_add(o, "control_socket", json_object_new_string(d->socket_path));
	if (d->reload_error) {
		char when[32];

		format_time_iso(d->reload_failed_at, when, sizeof(when));
		json_object_object_add(o, "reload_error", json_object_new_string(d->reload_error));
		json_object_object_add(o, "reload_failed_at", json_object_new_string(when));
	}
	if (ret_waiting)
		*ret_waiting = waiting;
	return o;
}

static void
update_status(struct daemon *d)
{
	unsigned waiting = 0;
	json_object *o = status_json(d, &waiting);
	size_t n = boards_count_present(d->boards);
	char status[256];

	json_object_put(o);
	size_t jobs = d->jobs ? job_table_running(d->jobs) : 0;

	(void)snprintf(status, sizeof(status),
		       "%zu board%s present, %zu job%s running, %u firmware waiting", n,
		       n == 1 ? "" : "s", jobs, jobs == 1 ? "" : "s", waiting);
	if (strcmp(status, d->last_status) == 0)
		return;
	(void)str_copy(d->last_status, sizeof(d->last_status), status);
	(void)sd_notifyf(false, "STATUS=%s", status);
}

static void
broadcast(struct daemon *d, const char *event, json_object *data)
{
	json_object *ev = json_object_new_object();

	json_object_object_add(ev, "event", json_object_new_string(event));
	json_object_object_add(ev, "time", json_object_new_int64(now_realtime_sec()));
	if (data)
		json_object_object_add(ev, "data", data);
	if (d->control)
		control_broadcast(d->control, ev);
	else
		json_object_put(ev);
}

/* udev events were lost: the registry is up to date again, now nothing pending may stay
 * forgotten */
static void
on_rescanned(void *userdata)
{
	struct daemon *d = userdata;

	job_table_reconcile(d->jobs);
}

static void
on_board(void *userdata, enum boards_event ev, struct board *b)
{
	static const char *const names[] = {
	    [BOARDS_APPEARED] = "board-appeared", [BOARDS_MODE_CHANGED] = "board-mode-changed",
	    [BOARDS_UPDATED] = "board-updated",	  [BOARDS_GONE] = "board-gone",
	    [BOARDS_LEFT] = "board-left",
	};
	struct daemon *d = userdata;

	broadcast(d, names[ev], board_to_json(b));
	if (d->jobs)
		job_table_on_board(d->jobs, ev, b);
	update_status(d);
}

static void
on_job_event(void *userdata, const char *event, json_object *data)
{
	struct daemon *d = userdata;

	broadcast(d, event, data);
	if (strcmp(event, "job-progress") != 0)
		update_status(d);
}

static int
on_validate(void *userdata, const struct config_profile *p, const char *name, const uint8_t *data,
	    size_t size, const char **ret_format, char **ret_reason)
{
	struct validate_target t = {0};
	struct verdict v;
	struct image img;
	const char *err = NULL;
	char *reason;
	size_t len = 0;
	int r;

	struct daemon *d = userdata;
	char *ambiguous = boards_ambiguity(d->boards, p->name);

	if (ambiguous) {
		*ret_reason = ambiguous;
		return -EINVAL;
	}
	if (!p->match.board) {
		/* no board to check against yet: at least it must be a well-formed image; the
		 * engine checks it against the board and its bootloader before writing */
		r = image_parse(data, size, &img, &err);
		if (r < 0) {
			*ret_reason =
			    xasprintf("not a firmware image: %s", err ? err : "malformed");
			return -EINVAL;
		}
		*ret_format = image_format_to_string(img.format);
		image_done(&img);
		return 0;
	}
	t.board = p->match.board;
	t.app_start = config_profile_app_start(p);
	t.interface = p->interface;
	t.file_name = name;
	r = validate_image(data, size, &t, &v);
	if (r < 0) {
		*ret_reason = xasprintf("cannot validate: %s", strerror(-r));
		return -EINVAL;
	}
	*ret_format = image_format_to_string(v.format);
	if (v.accepted) {
		verdict_done(&v);
		return 0;
	}
	for (size_t i = 0; i < v.n_reasons; i++)
		len += strlen(v.reasons[i]) + 2;
	reason = xcalloc(1, len + 1);
	for (size_t i = 0; i < v.n_reasons; i++) {
		if (i)
			strcat(reason, "; ");
		strcat(reason, v.reasons[i]);
	}
	*ret_reason = reason;
	verdict_done(&v);
	return -EINVAL;
}

static void
on_accepted(void *userdata, const struct config_profile *p, const char *sha, const char *name)
{
	struct daemon *d = userdata;
	json_object *o = json_object_new_object();

	json_object_object_add(o, "profile", json_object_new_string(p->name));
	json_object_object_add(o, "sha256", json_object_new_string(sha));
	json_object_object_add(o, "file", json_object_new_string(name));
	broadcast(d, "firmware-queued", o);
	/* without a config file, the queue name may just have said which board one is */
	boards_set_config(d->boards, d->cfg);
	if (d->jobs)
		job_table_on_firmware(d->jobs, p->name);
	update_status(d);
}

static void
on_rejected(void *userdata, const char *name, const char *reason)
{
	struct daemon *d = userdata;
	json_object *o = json_object_new_object();

	json_object_object_add(o, "file", json_object_new_string(name));
	json_object_object_add(o, "reason", json_object_new_string(reason));
	broadcast(d, "firmware-rejected", o);
}

static json_object *
ok_with(const char *key, json_object *value)
{
	json_object *o = json_object_new_object();

	json_object_object_add(o, "ok", json_object_new_boolean(true));
	json_object_object_add(o, key, value);
	return o;
}

static json_object *fail_with(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static json_object *
fail_with(const char *fmt, ...)
{
	json_object *o = json_object_new_object();
	char msg[1024];
	va_list ap;

	va_start(ap, fmt);
	(void)vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	json_object_object_add(o, "ok", json_object_new_boolean(false));
	json_object_object_add(o, "error", json_object_new_string(msg));
	return o;
}

/* Why a board cannot be flashed in the mode it is in now, and what to install; NULL when
 * a backend can reach it. */
static const char *
no_flash_path(const struct board *b, const struct config_profile *p)
{
	bool msc = false;

	for (size_t i = 0; p && i < p->n_methods; i++)
		msc |= p->methods[i] == CONFIG_METHOD_MSC;
	switch (b->dev.mode) {
	case DEVICE_MODE_KATAPULT:
	case DEVICE_MODE_STM32_ROM_DFU:
	case DEVICE_MODE_RP2040_BOOTSEL:
	case DEVICE_MODE_LPC_DFU:
	case DEVICE_MODE_KLIPPER_APP: /* the bootloader request says which (see state) */
		return NULL;
	case DEVICE_MODE_MARLIN_LPC:
		return msc ? NULL
			   : "Marlin: add \"msc\" to the profile's methods to write firmware.bin "
			     "to its SD card over USB, or install Katapult";
	case DEVICE_MODE_MARLIN_STM32:
		return "Marlin has no bootloader request: install Katapult, or use the SD card";
	case DEVICE_MODE_NONE:
	case _DEVICE_MODE_MAX:
	default:
		return "unknown mode";
	}
}

/* One word for the operator: up to date, update pending, blocked (why), no flash path
 * (what to install). */
static void
board_state(struct daemon *d, const struct board *b, char *buf, size_t len)
{
	const struct config_profile *p = config_find_profile(d->cfg, b->profile);
	const char *nopath = no_flash_path(b, p);
	struct store_desired want;
	char *ambiguous;

	if (!b->present) {
		(void)snprintf(buf, len, "absent");
	} else if (!p && b->candidates[0] && d->cfg->n_profiles && d->cfg->profiles[0].implicit) {
		(void)snprintf(buf, len, "blocked (which board? queue firmware under one of: %s)",
			       b->candidates);
	} else if (!p) {
		(void)snprintf(buf, len, "blocked (no profile matches it: add one to %s)",
			       d->cfg->path ? d->cfg->path : SKRFLASH_CONFIG_FILE);
	} else if (nopath) {
		(void)snprintf(buf, len, "no flash path (%s)", nopath);
	} else if (store_desired_get(d->store, p->name, &want) < 0) {
		(void)snprintf(buf, len, "%s",
			       b->installed_sha[0] ? "up to date (nothing queued)"
						   : "nothing queued");
	} else if (strcmp(want.sha, b->installed_sha) == 0) {
		(void)snprintf(buf, len, "up to date");
	} else if (store_bad_is_marked(d->store, b->id, want.sha)) {
		(void)snprintf(buf, len,
			       "blocked (%.12s did not boot here; fix the build, or skrflashctl "
			       "retry %s)",
			       want.sha, b->dev.port);
	} else if ((ambiguous = boards_ambiguity(d->boards, p->name))) {
		free(ambiguous);
		(void)snprintf(buf, len, "blocked (another board takes queue '%s' too)", p->queue);
	} else {
		(void)snprintf(buf, len, "update pending%s",
			       b->catalog &&
				       !(b->catalog->paths &
					 (CATALOG_PATH_ROM_DFU_SOFT | CATALOG_PATH_BOOTSEL)) &&
				       b->dev.mode == DEVICE_MODE_KLIPPER_APP
				   ? " (needs Katapult on the board)"
				   : "");
	}
}

static const char *firmware_version(struct daemon *d, const char *sha);

static json_object *
boards_json(struct daemon *d, bool all)
{
	json_object *arr = json_object_new_array(), *known = NULL;

	for (struct board *b = boards_next(d->boards, NULL); b; b = boards_next(d->boards, b)) {
		json_object *o = board_to_json(b);
		char state[256];

		const char *why = d->jobs ? job_table_needs_power(d->jobs, b->dev.port) : NULL;

		board_state(d, b, state, sizeof(state));
		/* an SDIO board whose firmware.bin waits for a power cycle: a state to act on */
		if (why) {
			(void)str_copy(state, sizeof(state), "needs-power-cycle");
			json_object_object_add(o, "why", json_object_new_string(why));
		}
		json_object_object_add(o, "state", json_object_new_string(state));
		if (!b->installed_version[0] && b->installed_sha[0])
			json_object_object_add(
			    o, "installed_version",
			    json_object_new_string(firmware_version(d, b->installed_sha)));
		json_object_array_add(arr, o);
	}
	if (all && store_boards_json(d->store, &known) >= 0) {
		for (size_t i = 0; i < json_object_array_length(known); i++) {
			json_object *e = json_object_array_get_idx(known, i), *id;
			bool present = false;

			if (json_object_object_get_ex(e, "id", &id))
				for (struct board *b = boards_next(d->boards, NULL); b;
				     b = boards_next(d->boards, b))
					present = present || b->id == json_object_get_int64(id);
			if (present)
				continue;
			json_object_object_add(e, "present", json_object_new_boolean(false));
			json_object_array_add(arr, json_object_get(e));
		}
		json_object_put(known);
	}
	return arr;
}

/* The Klipper version a stored image carries, or Marlin's build ("" if none), read once per
 * image. */
static const char *
firmware_version(struct daemon *d, const char *sha)
{
	unsigned slot = d->next_version++ % ELEMENTSOF(d->versions);
	struct kdict dict;
	struct image img;
	const char *err = NULL;
	uint8_t *data = NULL;
	size_t size = 0;
	char *path = NULL;

	if (!sha || !*sha)
		return "";
	for (size_t i = 0; i < ELEMENTSOF(d->versions); i++)
		if (strcmp(d->versions[i].sha, sha) == 0)
			return d->versions[i].version;
	(void)str_copy(d->versions[slot].sha, sizeof(d->versions[slot].sha), sha);
	d->versions[slot].version[0] = 0;
	if (store_firmware_path(d->store, sha, &path) >= 0 &&
	    read_file(path, IMAGE_MAX_SIZE, &data, &size) >= 0 &&
	    image_parse(data, size, &img, &err) >= 0) {
		struct marlin_info mi;

		/* 0 is "no dictionary" (a Marlin build): dict is not filled in then */
		if (kdict_find(img.data, img.size, &dict) > 0)
			(void)str_copy(d->versions[slot].version, sizeof(d->versions[slot].version),
				       dict.version);
		else if (marlin_image_info(img.data, img.size, &mi) == 0)
			(void)str_copy(d->versions[slot].version, sizeof(d->versions[slot].version),
				       mi.firmware);
		image_done(&img);
	}
	free(data);
	free(path);
	return d->versions[slot].version;
}

/* History rows with what each job changed: the version it wrote and the one the board ran
 * before (the last earlier job on the board that succeeded; "" when not known). */
static json_object *
history_json(struct daemon *d, int64_t board_id, unsigned limit)
{
	json_object *all = NULL, *arr;
	size_t want = limit ? limit : 100, n;

	if (store_history_json(d->store, board_id, (unsigned)want + 100, &all) < 0)
		return NULL;
	n = json_object_array_length(all);
	arr = json_object_new_array();
	for (size_t i = 0; i < n && i < want; i++) {
		json_object *e = json_object_array_get_idx(all, i);
		const char *sha = json_object_get_string(json_object_object_get(e, "sha256"));
		int64_t bid = json_object_get_int64(json_object_object_get(e, "board_id"));
		const char *old = "";

		const char *method = json_object_get_string(json_object_object_get(e, "method"));
		bool uart = method && (strncmp(method, "rescue-", 7) == 0 ||
				       strncmp(method, "restore-", 8) == 0);

		if (uart) /* the bootloader area it replaced, kept in the store */
			old = json_object_get_string(json_object_object_get(e, "lkg_sha256"));
		for (size_t k = i + 1; k < n && !uart; k++) {
			json_object *o = json_object_array_get_idx(all, k);
			const char *m = json_object_get_string(json_object_object_get(o, "method"));

			if (m && (strncmp(m, "rescue-", 7) == 0 || strncmp(m, "restore-", 8) == 0))
				continue;
			if (json_object_get_int64(json_object_object_get(o, "board_id")) == bid &&
			    strcmp(json_object_get_string(json_object_object_get(o, "result")),
				   "succeeded") == 0) {
				old = json_object_get_string(json_object_object_get(o, "sha256"));
				break;
			}
		}
		/* a bootloader has no Klipper version */
		json_object_object_add(
		    e, "version", json_object_new_string(uart ? "" : firmware_version(d, sha)));
		json_object_object_add(e, "old_sha256", json_object_new_string(old));
		json_object_object_add(
		    e, "old_version", json_object_new_string(uart ? "" : firmware_version(d, old)));
		json_object_array_add(arr, json_object_get(e));
	}
	json_object_put(all);
	return arr;
}

static json_object *
no_such_board(struct daemon *d, const char *key)
{
	struct str_closest cl = {.word = key};

	boards_suggest(d->boards, &cl);
	if (cl.best)
		return fail_with("no board '%s' is connected; did you mean '%s'?", key, cl.best);
	return fail_with("no board '%s' is connected (`skrflashctl boards` lists the connected "
			 "ones)",
			 key);
}

/* Before a drop: which queue a name feeds in the running config, and how large a file the
 * queue takes; the image itself is checked at pickup, against this same config. */
static json_object *
profile_json(struct daemon *d, const char *name)
{
	const struct config_profile *p = config_find_profile(d->cfg, name);
	json_object *o;
	char *ambiguous;

	if (!p)
		p = config_find_queue(d->cfg, name);
	if (!p) {
		struct str_closest cl = {.word = name};

		for (size_t i = 0; i < d->cfg->n_profiles; i++) {
			str_closest_add(&cl, d->cfg->profiles[i].name);
			str_closest_add(&cl, d->cfg->profiles[i].queue);
		}
		return fail_with("no profile or queue named '%s' in %s%s%s%s", name,
				 d->cfg->path ? d->cfg->path : "the built-in catalog",
				 cl.best ? "; did you mean '" : "", cl.best ? cl.best : "",
				 cl.best ? "'?" : "");
	}
	ambiguous = boards_ambiguity(d->boards, p->name);
	if (ambiguous) {
		o = fail_with("%s", ambiguous);
		free(ambiguous);
		return o;
	}
	o = json_object_new_object();
	json_object_object_add(o, "name", json_object_new_string(p->name));
	json_object_object_add(o, "queue", json_object_new_string(p->queue));
	json_object_object_add(o, "board",
			       json_object_new_string(p->match.board ? p->match.board->name : ""));
	json_object_object_add(o, "max_file_size",
			       json_object_new_int64((int64_t)catalog_max_flash_size()));
	o = ok_with("profile", o);
	json_object_object_add(o, "queue_dir", json_object_new_string(d->cfg->queue_dir));
	return o;
}

/* ---- rescue and restore over a UART (docs/rescue.md) ---------------------------------- */

/* The rescue entry of the config for a device or a board, else one made of the device. */
static const struct config_rescue *
rescue_entry(struct daemon *d, const char *device, const struct catalog_board *cb)
{
	const struct config_rescue *pick = NULL;

	for (size_t i = 0; i < d->cfg->n_rescues; i++) {
		const struct config_rescue *e = &d->cfg->rescues[i];

		if ((device[0] && strcmp(device, e->device) == 0) ||
		    (!device[0] && cb && e->board == cb) || (!device[0] && d->cfg->n_rescues == 1))
			pick = e;
	}
	return pick;
}

/* The one present board of that catalog entry, the board `key` names, or NULL. */
static int
rescue_usb_board(struct daemon *d, const char *key, const struct catalog_board *cb,
		 struct board **ret)
{
	*ret = NULL;
	if (key[0] && boards_lookup(d->boards, key, ret) >= 0)
		return 0;
	for (struct board *b = boards_next(d->boards, NULL); b; b = boards_next(d->boards, b)) {
		if (!b->present || b->catalog != cb)
			continue;
		if (*ret)
			return -ENOTUNIQ;
		*ret = b;
	}
	return 0;
}

/* The newest bootloader a rescue kept for this UART (and board), for restore. */
static int
rescue_kept_sha(struct daemon *d, const char *tty, int64_t board_id, char sha[65])
{
	json_object *all = NULL;
	char port[300];
	int r = -ENOENT;

	(void)snprintf(port, sizeof(port), "uart:%s", tty);
	if (store_history_json(d->store, board_id > 0 ? board_id : -1, 10000, &all) < 0)
		return -EIO;
	for (size_t i = 0; i < json_object_array_length(all) && r < 0; i++) {
		json_object *e = json_object_array_get_idx(all, i);
		const char *m = json_object_get_string(json_object_object_get(e, "method"));
		const char *lkg = json_object_get_string(json_object_object_get(e, "lkg_sha256"));

		if (m && strncmp(m, "rescue-", 7) == 0 && lkg && lkg[0] &&
		    strcmp(json_object_get_string(json_object_object_get(e, "port")), port) == 0) {
			(void)str_copy(sha, 65, lkg);
			r = 0;
		}
	}
	json_object_put(all);
	return r;
}

/* The bootloader to write: the user's file into the store, or for restore a kept one. */
static json_object *
rescue_image(struct daemon *d, const struct control_request *req, const char *tty,
	     const struct board *usb, char sha[65])
{
	uint8_t *data = NULL;
	size_t len = 0;
	int r;

	if (req->restore) {
		char fmt[32] = "";

		if (req->sha[0])
			(void)str_copy(sha, 65, req->sha);
		else if (rescue_kept_sha(d, tty, usb ? usb->id : 0, sha) < 0)
			return fail_with("no bootloader was kept by a rescue over %s; give --sha",
					 tty);
		if (store_firmware_format(d->store, sha, fmt, sizeof(fmt)) < 0)
			return fail_with("no stored file %.12s", sha);
		if (strcmp(fmt, "bootloader-partial") == 0)
			return fail_with("the kept bootloader %.12s is incomplete (its first 64 "
					 "bytes read as the "
					 "LPC boot ROM's while in ISP): restore the vendor's "
					 "bootloader file with "
					 "`skrflashctl rescue FILE` instead",
					 sha);
		return NULL;
	}
	r = read_file(req->file, 4u << 20, &data, &len);
	if (r < 0)
		return fail_with("skrflashd cannot read %s: %s (it reads the file as its own user: "
				 "put it where that user can read it, e.g. /tmp)",
				 req->file, strerror(-r));
	sha256_hex(data, len, sha);
	r = store_firmware_put(d->store, sha, data, len, "bootloader", req->file);
	free(data);
	return r < 0 ? fail_with("cannot store %s: %s", req->file, strerror(-r)) : NULL;
}

static json_object *
rescue_json(struct daemon *d, const struct control_request *req)
{
	const struct catalog_board *cb = req->board[0] ? catalog_find(req->board) : NULL;
	const struct config_rescue *e;
	struct worker_rescue_plan plan = {0};
	struct board *usb = NULL;
	struct job_rescue jr;
	json_object *o;
	char sha[65] = "", *msg = NULL;
	int r;

	if (!cb && req->board[0] && boards_lookup(d->boards, req->board, &usb) >= 0)
		cb = usb->catalog;
	e = rescue_entry(d, req->device, cb);
	if (!cb && e)
		cb = e->board;
	if (!cb)
		return fail_with("which board is on %s? give --board (a catalog name)",
				 req->device[0] ? req->device : "the UART");
	if (!req->device[0] && !e)
		return fail_with("%s has no rescue entry for %s: give --device",
				 d->cfg->path ? d->cfg->path : "the configuration", cb->name);
	if (!usb && rescue_usb_board(d, req->board, cb, &usb) < 0)
		return fail_with("several %s boards are connected: name the one on this UART by "
				 "its port (--board PORT)",
				 cb->name);
	(void)str_copy(plan.action, sizeof(plan.action), req->restore ? "restore" : "rescue");
	(void)str_copy(plan.board, sizeof(plan.board), cb->name);
	(void)str_copy(plan.tty, sizeof(plan.tty),
		       req->device[0] ? req->device
		       : e	      ? e->device
				      : "");
	plan.baud = e ? e->baud : 115200;
	if (e && e->reset_line)
		(void)str_copy(plan.reset_line, sizeof(plan.reset_line), e->reset_line);
	if (e && e->boot_line)
		(void)str_copy(plan.boot_line, sizeof(plan.boot_line), e->boot_line);
	/* a pseudo-terminal cannot do parity: the simulator's UART (tests, demo) */
	plan.no_parity_ok =
	    strncmp(plan.tty, "/dev/pts/", 9) == 0 || secure_getenv("SKRFLASHD_RESCUE_PTY") != NULL;
	{
		/* tests only: how long a guided rescue waits for the ROM, in 250 ms tries */
		const char *tries = secure_getenv("SKRFLASHD_RESCUE_SYNC_TRIES");
		uint32_t n;

		if (tries && parse_u32(tries, &n) >= 0)
			plan.sync_tries = n;
	}
	o = rescue_image(d, req, plan.tty, usb, sha);
	if (o)
		return o;
	jr = (struct job_rescue){.catalog = cb, .usb = usb, .sha = sha, .plan = &plan};
	r = job_table_rescue(d->jobs, &jr, &msg);
	if (r < 0) {
		o = fail_with("%s", msg ? msg : strerror(-r));
		free(msg);
		return o;
	}
	o = json_object_new_object();
	json_object_object_add(o, "board", json_object_new_string(cb->name));
	{
		char *port = usb ? xstrdup(usb->dev.port) : xasprintf("uart:%s", plan.tty);

		/* the job's events carry this port */
		json_object_object_add(o, "port", json_object_new_string(port));
		free(port);
	}
	json_object_object_add(o, "device", json_object_new_string(plan.tty));
	json_object_object_add(o, "sha256", json_object_new_string(sha));
	return ok_with("rescue", o);
}

static json_object *
queued_reply(struct daemon *d)
{
	json_object *arr = NULL;
	int r = store_desired_list_json(d->store, &arr);

	return r < 0 ? fail_with("cannot read the state database: %s", strerror(-r))
		     : ok_with("queued", arr);
}

/* The history of one board (present, or by its database id) or of all of them. */
static json_object *
history_reply(struct daemon *d, const struct control_request *req)
{
	struct board *b = NULL;
	json_object *arr;
	int64_t id = -1;

	if (req->board[0]) {
		struct store_board sb;
		int r = boards_lookup(d->boards, req->board, &b);

		if (r >= 0)
			id = b->id;
		else if (strtoll(req->board, NULL, 10) > 0 &&
			 store_board_get(d->store, strtoll(req->board, NULL, 10), &sb) >= 0)
			id = sb.id;
		else
			return fail_with(r == -ENOTUNIQ ? "'%s' names more than one board"
							: "no board '%s'",
					 req->board);
	}
	arr = history_json(d, id, req->limit);
	return !arr ? fail_with("cannot read the state database") : ok_with("history", arr);
}

/* The connected board a flash or retry names; NULL with the reply in *ret_fail when the key
 * names none or several. */
static struct board *
flash_target(struct daemon *d, const char *key, json_object **ret_fail)
{
	struct board *b = NULL;
	int r = boards_lookup(d->boards, key, &b);

	if (r == -ENOTUNIQ) {
		char *why = boards_ambiguity(d->boards, key);

		*ret_fail =
		    why ? fail_with("%s", why)
			: fail_with("'%s' names more than one board; use its port or serial "
				    "(`skrflashctl boards` lists them)",
				    key);
		free(why);
		return NULL;
	}
	if (r < 0) {
		*ret_fail = no_such_board(d, key);
		return NULL;
	}
	return b;
}

/* retry means flashing again: say whether a job started, and why not */
static json_object *
retry_reply(struct daemon *d, struct board *b)
{
	char *msg = NULL;
	json_object *o;
	int r = store_bad_clear(d->store, b->id);

	if (r < 0)
		return fail_with("cannot clear the mark: %s", strerror(-r));
	r = job_table_flash(d->jobs, b, false, &msg);
	o = ok_with("board", board_to_json(b));
	json_object_object_add(o, "started", json_object_new_boolean(r >= 0));
	if (r >= 0) {
		json_object_object_add(o, "message",
				       json_object_new_string("mark cleared; flashing started"));
	} else {
		char *m = xasprintf("mark cleared; not flashing now: %s", msg ? msg : strerror(-r));

		json_object_object_add(o, "message", json_object_new_string(m));
		free(m);
	}
	free(msg);
	return o;
}

static json_object *
dry_run_reply(struct daemon *d, struct board *b)
{
	char *msg = NULL;
	json_object *plan = NULL, *o;
	int r = job_table_plan(d->jobs, b, &plan, &msg);

	o = r < 0 ? fail_with("%s", msg ? msg : strerror(-r)) : ok_with("plan", plan);
	free(msg);
	return o;
}

static json_object *
flash_reply(struct daemon *d, const struct control_request *req)
{
	json_object *o = NULL;
	struct board *b = flash_target(d, req->board, &o);
	char *msg = NULL;
	int r;

	if (!b)
		return o;
	if (req->command == CONTROL_RETRY)
		return retry_reply(d, b);
	if (req->dry_run)
		return dry_run_reply(d, b);
	r = job_table_flash(d->jobs, b, req->force, &msg);
	o = r < 0 ? fail_with("%s", msg ? msg : strerror(-r)) : ok_with("board", board_to_json(b));
	free(msg);
	return o;
}

static json_object *
on_control(void *userdata, const struct control_request *req)
{
	struct daemon *d = userdata;

	switch (req->command) {
	case CONTROL_STATUS:
		return status_json(d, NULL);
	case CONTROL_BOARDS:
		return ok_with("boards", boards_json(d, req->all));
	case CONTROL_QUEUED:
		return queued_reply(d);
	case CONTROL_HISTORY:
		return history_reply(d, req);
	case CONTROL_WATCH:
		return ok_with("watching", json_object_new_boolean(true));
	case CONTROL_PROFILE:
		return profile_json(d, req->profile);
	case CONTROL_FLASH:
	case CONTROL_RETRY:
		return flash_reply(d, req);
	case CONTROL_RESCUE:
		return rescue_json(d, req);
	case _CONTROL_COMMAND_MAX:
	default:
		return fail_with("unknown command");
	}
}

/* Firmware queued for a profile the configuration no longer has would count as "waiting"
 * for ever: it stops waiting, says so once, and stays in the store under its sha256. */
static void
forget_orphaned_firmware(struct daemon *d)
{
	json_object *desired = NULL;

	if (store_desired_list_json(d->store, &desired) < 0)
		return;
	for (size_t i = 0; i < json_object_array_length(desired); i++) {
		json_object *e = json_object_array_get_idx(desired, i);
		const char *profile = json_object_get_string(json_object_object_get(e, "profile"));
		const char *sha = json_object_get_string(json_object_object_get(e, "sha256"));
		const char *src = json_object_get_string(json_object_object_get(e, "source"));

		if (!profile || config_find_profile(d->cfg, profile) ||
		    store_desired_delete(d->store, profile) < 0)
			continue;
		log_notice(
		    "profile '%s' is no longer in the configuration: its firmware %.12s%s%s%s "
		    "is not waiting any more; it stays stored as %s/firmware/%s (queue it "
		    "again under a profile of the new configuration to flash it)",
		    profile, sha ? sha : "", src && *src ? " ('" : "", src ? src : "",
		    src && *src ? "')" : "", d->cfg->state_dir, sha ? sha : "");
	}
	json_object_put(desired);
}

static int
on_signal(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata)
{
	struct daemon *d = userdata;
	struct config *fresh = NULL;

	(void)s;
	if (si->ssi_signo != SIGHUP) {
		log_notice("stopping on signal %u", si->ssi_signo);
		(void)sd_notify(false, "STOPPING=1\nSTATUS=stopping");
		return sd_event_exit(d->loop, 0);
	}
	(void)sd_notify(false, "RELOADING=1");
	if (load_config(d, &fresh) < 0) {
		log_error("configuration not reloaded; still running with the previous one");
	} else {
		struct config *old = d->cfg;

		d->cfg = fresh;
		boards_set_config(d->boards, fresh);
		job_table_set_config(d->jobs, fresh);
		queue_set_config(d->queue, fresh);
		forget_orphaned_firmware(d);
		control_set_group(d->control, fresh->has_control_gid, fresh->control_gid);
		control_set_idle_timeout(d->control, fresh->client_idle_ms * 1000ULL);
		log_set_max_priority(fresh->log_level);
		config_free(old);
		free(d->reload_error);
		d->reload_error = NULL;
		log_notice("configuration reloaded from %s (%zu profiles)",
			   fresh->path ? fresh->path : "(built-in)", fresh->n_profiles);
	}
	(void)sd_notify(false, "READY=1");
	update_status(d);
	return 0;
}

/* One daemon per state directory: two would flash the same boards from the same queue and
 * take each other's control socket. The lock dies with the process, so a crash leaves no
 * stale lock behind; the file holds the holder's pid for the message. */
static int
lock_state_dir(struct daemon *d)
{
	char *path, pid[32] = "";
	int r = mkdir_p(d->cfg->state_dir, 0750);

	if (r < 0) {
		log_error_errno(r, "cannot create the state directory %s", d->cfg->state_dir);
		return r;
	}
	path = xasprintf("%s/skrflashd.lock", d->cfg->state_dir);
	d->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0640);
	if (d->lock_fd < 0) {
		r = -errno;
		log_error_errno(r, "cannot open %s", path);
		free(path);
		return r;
	}
	if (flock(d->lock_fd, LOCK_EX | LOCK_NB) < 0) {
		ssize_t n;

		r = -errno;
		n = pread(d->lock_fd, pid, sizeof(pid) - 1, 0);
		pid[n > 0 ? n : 0] = 0;
		pid[strcspn(pid, "\n")] = 0;
		if (r == -EWOULDBLOCK)
			log_error("another skrflashd%s%s%s is already running on the state "
				  "directory %s; stop it first (systemctl stop skrflashd) or give "
				  "this one its own --state-dir",
				  pid[0] ? " (pid " : "", pid, pid[0] ? ")" : "",
				  d->cfg->state_dir);
		else
			log_error_errno(r, "cannot lock %s", path);
		free(path);
		return r == -EWOULDBLOCK ? -EBUSY : r;
	}
	(void)snprintf(pid, sizeof(pid), "%ld\n", (long)getpid());
	if (ftruncate(d->lock_fd, 0) < 0 || pwrite(d->lock_fd, pid, strlen(pid), 0) < 0)
		log_debug("cannot write my pid into %s", path);
	free(path);
	return 0;
}

static int
check_config(const char *path, bool verbose)
{
	struct config *cfg = NULL;
	char *errors = NULL;
	int r = config_load(path, NULL, &cfg, &errors);

	if (r < 0) {
		if (errors)
			fputs(errors, stderr);
		else
			fprintf(stderr, "%s: %s\n", path ? path : "(built-in)", strerror(-r));
		free(errors);
		return EXIT_CONFIG;
	}
	printf("configuration OK\n");
	if (verbose)
		config_dump(cfg, stdout);
	config_free(cfg);
	return 0;
}

static int
parse_level(const char *s)
{
	static const char *const names[] = {"emerg",   "alert",	 "crit", "error",
					    "warning", "notice", "info", "debug"};

	for (int i = 0; i < (int)ELEMENTSOF(names); i++)
		if (strcmp(s, names[i]) == 0)
			return i;
	return -1;
}

static void
usage(FILE *f)
{
	fprintf(f,
		"Usage: skrflashd [OPTIONS]\n"
		"Flash firmware onto BigTreeTech SKR-family boards as they come and go.\n\n"
		"  -c, --config FILE        configuration file (default " SKRFLASH_CONFIG_FILE ")\n"
		"      --state-dir DIR      state directory (default " SKRFLASH_STATE_DIR ")\n"
		"      --queue-dir DIR      queue directory (default STATE_DIR/queue)\n"
		"      --runtime-dir DIR    runtime directory (default " SKRFLASH_RUNTIME_DIR ")\n"
		"      --log-level LEVEL    error, warning, notice, info or debug\n"
		"      --log-target TARGET  auto, stderr or journal\n"
		"      --check-config [-v] [FILE]\n"
		"                           check a configuration file and exit (78 if invalid)\n"
		"  -h, --help               show this help\n"
		"      --version            show the version\n");
}

/* What the command line asks for besides the daemon's paths (those go into d->ov). */
struct options {
	enum log_target target;
	bool check;   /* --check-config: check and exit */
	bool verbose; /* with it, print the normalized configuration */
};

/* main() goes on to run the daemon; anything else parse_options() returns is an exit status */
#define RUN_DAEMON (-1)

enum {
	OPT_STATE = 256,
	OPT_QUEUE,
	OPT_RUNTIME,
	OPT_LEVEL,
	OPT_TARGET,
	OPT_CHECK,
	OPT_VERSION,
	OPT_WORKER,
};

static const struct option long_options[] = {
    {"config", required_argument, NULL, 'c'},
    {"state-dir", required_argument, NULL, OPT_STATE},
    {"queue-dir", required_argument, NULL, OPT_QUEUE},
    {"runtime-dir", required_argument, NULL, OPT_RUNTIME},
    {"log-level", required_argument, NULL, OPT_LEVEL},
    {"log-target", required_argument, NULL, OPT_TARGET},
    {"check-config", no_argument, NULL, OPT_CHECK},
    {"verbose", no_argument, NULL, 'v'},
    {"help", no_argument, NULL, 'h'},
    {"version", no_argument, NULL, OPT_VERSION},
    {"worker", no_argument, NULL, OPT_WORKER},
    {NULL, 0, NULL, 0},
};

static int
parse_options(int argc, char **argv, struct daemon *d, struct options *o)
{
	int c;

	while ((c = getopt_long(argc, argv, "c:vh", long_options, NULL)) != -1) {
		switch (c) {
		case 'c':
			free(d->config_path);
			d->config_path = xstrdup(optarg);
			d->config_explicit = true;
			break;
		case OPT_STATE:
			d->ov.state_dir = optarg;
			break;
		case OPT_QUEUE:
			d->ov.queue_dir = optarg;
			break;
		case OPT_RUNTIME:
			d->ov.runtime_dir = optarg;
			break;
		case OPT_LEVEL:
			d->ov.log_level = parse_level(optarg);
			if (d->ov.log_level < 0) {
				fprintf(stderr, "skrflashd: unknown log level '%s'\n", optarg);
				return 2;
			}
			break;
		case OPT_TARGET:
			if (strcmp(optarg, "stderr") == 0)
				o->target = LOG_TARGET_STDERR;
			else if (strcmp(optarg, "journal") == 0)
				o->target = LOG_TARGET_JOURNAL;
			else if (strcmp(optarg, "auto") == 0)
				o->target = LOG_TARGET_AUTO;
			else {
				fprintf(stderr, "skrflashd: unknown log target '%s'\n", optarg);
				return 2;
			}
			break;
		case OPT_CHECK:
			o->check = true;
			break;
		case 'v':
			o->verbose = true;
			break;
		case 'h':
			usage(stdout);
			return 0;
		case OPT_VERSION:
			printf("skrflashd %s\n", SKRFLASH_VERSION);
			return 0;
		case OPT_WORKER:
			/* one blocking flash step for the daemon: plan on stdin, events on stdout
			 */
			log_open(LOG_TARGET_STDERR, LOG_INFO, "worker");
			return worker_main();
		default:
			usage(stderr);
			return 2;
		}
	}
	if (o->check)
		return check_config(optind < argc ? argv[optind] : d->config_path, o->verbose);
	if (optind < argc) {
		usage(stderr);
		return 2;
	}
	return RUN_DAEMON;
}

/* Signals arrive through signalfd sources; SIGIO stays blocked because the queue's short
 * read leases would otherwise kill us when a writer breaks one. */
static void
block_signals(void)
{
	sigset_t mask;

	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGHUP);
	sigaddset(&mask, SIGCHLD);
	sigaddset(&mask, SIGIO);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	(void)signal(SIGPIPE, SIG_IGN);
}

static int
open_loop(struct daemon *d)
{
	int r = sd_event_default(&d->loop);

	if (r < 0) {
		log_error_errno(r, "cannot create the event loop");
		return r;
	}
	if ((r = sd_event_add_signal(d->loop, NULL, SIGTERM, on_signal, d)) < 0 ||
	    (r = sd_event_add_signal(d->loop, NULL, SIGINT, on_signal, d)) < 0 ||
	    (r = sd_event_add_signal(d->loop, NULL, SIGHUP, on_signal, d)) < 0) {
		log_error("cannot watch signals");
		return r;
	}
	(void)sd_event_set_watchdog(d->loop, true);
	return 0;
}

static int
open_store(struct daemon *d)
{
	int r = store_open(d->cfg->state_dir, &d->store);

	if (r < 0)
		log_error_errno(r, "cannot open the state database in %s", d->cfg->state_dir);
	return r;
}

static int
start_control(struct daemon *d)
{
	int r;

	d->socket_path = xasprintf("%s/" SKRFLASH_CONTROL_SOCKET_NAME, d->cfg->runtime_dir);
	r = control_start(d->loop, d->socket_path, d->cfg->has_control_gid, d->cfg->control_gid,
			  on_control, d, &d->control);
	if (r < 0) {
		if (r == -EADDRINUSE)
			log_error("another skrflashd already answers on %s; stop it first "
				  "(systemctl stop skrflashd)",
				  d->socket_path);
		else
			log_error_errno(r, "cannot listen on %s", d->socket_path);
		return r;
	}
	control_set_idle_timeout(d->control, d->cfg->client_idle_ms * 1000ULL);
	return 0;
}

/* Workers run this very binary, opened now: after a package upgrade replaced the file, a path
 * would start the new version under the old daemon. Exec'ing /proc/self/fd/N is what
 * fexecve(3) does. */
static int
start_jobs(struct daemon *d)
{
	const char *test_worker = secure_getenv("SKRFLASHD_WORKER"); /* tests only */
	char exe[64];

	/* a test's stand-in may be a script, whose interpreter opens the path after the exec: it
	 * must not be close-on-exec then */
	d->exe_fd = test_worker && *test_worker ? open(test_worker, O_RDONLY)
						: open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
	if (d->exe_fd < 0) {
		int r = -errno;

		log_error_errno(r, "cannot open my own executable for workers");
		return r;
	}
	(void)snprintf(exe, sizeof(exe), "/proc/self/fd/%d", d->exe_fd);
	job_table_new(d->loop, d->cfg, d->store, d->boards, exe, on_job_event, d, &d->jobs);
	return 0;
}

static int
start_udev(struct daemon *d)
{
	int r = udevwatch_start(d->loop, boards_on_device, d->boards, &d->udev);

	if (r < 0) {
		log_error_errno(r, "cannot watch udev for boards");
		return r;
	}
	udevwatch_set_rescanned(d->udev, on_rescanned, d);
	return 0;
}

static int
start_queue(struct daemon *d)
{
	const struct queue_callbacks cb = {
	    .validate = on_validate,
	    .accepted = on_accepted,
	    .rejected = on_rejected,
	};

	return queue_start(d->loop, d->cfg, d->store, &cb, d, &d->queue);
}

/* Everything the loop serves, in the order each needs the ones before it; each step says
 * what went wrong itself. */
static int
start_daemon(struct daemon *d)
{
	int r;

	block_signals();
	if ((r = open_loop(d)) < 0 || (r = lock_state_dir(d)) < 0 || (r = open_store(d)) < 0 ||
	    (r = start_control(d)) < 0)
		return r;
	boards_new(d->loop, d->store, d->cfg, on_board, d, &d->boards);
	if ((r = start_jobs(d)) < 0 || (r = start_udev(d)) < 0 || (r = start_queue(d)) < 0)
		return r;
	forget_orphaned_firmware(d);
	return 0;
}

static int
run_daemon(struct daemon *d)
{
	log_notice("skrflashd %s running: %zu board%s present, config %s, queue %s",
		   SKRFLASH_VERSION, boards_count_present(d->boards),
		   boards_count_present(d->boards) == 1 ? "" : "s",
		   d->cfg->path ? d->cfg->path : "(built-in catalog)", d->cfg->queue_dir);
	update_status(d);
	(void)sd_notifyf(false, "READY=1\nSTATUS=%s", d->last_status);
	return sd_event_loop(d->loop) < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}

/* Tears down in the reverse order of start_daemon(); each step accepts what never started. */
static void
stop_daemon(struct daemon *d)
{
	d->queue = queue_free(d->queue);
	d->jobs = job_table_free(d->jobs);
	d->udev = udevwatch_free(d->udev);
	d->boards = boards_free(d->boards);
	d->control = control_free(d->control);
	d->store = store_close(d->store);
	d->cfg = config_free(d->cfg);
	d->loop = sd_event_unref(d->loop);
	free(d->socket_path);
	free(d->config_path);
	free(d->reload_error);
	close_fd(d->lock_fd);
	close_fd(d->exe_fd);
}

int
main(int argc, char **argv)
{
	struct daemon d = {.ov = {.log_level = -1}, .lock_fd = -1, .exe_fd = -1};
	struct options o = {.target = LOG_TARGET_AUTO};
	int ret;

	d.config_path = xstrdup(SKRFLASH_CONFIG_FILE);
	ret = parse_options(argc, argv, &d, &o);
	if (ret != RUN_DAEMON) {
		free(d.config_path);
		return ret;
	}
	log_open(o.target, d.ov.log_level >= 0 ? d.ov.log_level : LOG_INFO, NULL);
	d.started_usec = now_monotonic_usec();
	if (load_config(&d, &d.cfg) < 0) {
		ret = EXIT_CONFIG;
	} else {
		log_set_max_priority(d.cfg->log_level);
		ret = start_daemon(&d) < 0 ? EXIT_FAILURE : run_daemon(&d);
	}
	stop_daemon(&d);
	return ret;
}
