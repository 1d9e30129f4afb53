/* SPDX-License-Identifier: GPL-2.0-or-later */
/* job: the flash engine's state machine in the daemon (see job.h). */
#include "service/job.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "service/holder.h"
#include "service/ident.h"
#include "image/image.h"
#include "log.h"
#include "service/moonraker.h"
#include "service/power.h"
#include "service/octoprint.h"
#include "service/units.h"
#include "util.h"
#include "image/validate.h"
#include "flash/worker.h"
#include "proto/marlin.h"

#define GATE_TIMEOUT_MS 2000u
#define DEFAULT_MOONRAKER "http://127.0.0.1:7125"

enum job_step {
	STEP_GATE,
	STEP_STOP_UNIT,
	STEP_ENTER,
	STEP_WAIT_BOOTLOADER,
	STEP_WRITE,
	STEP_VERIFY,
	STEP_LEAVE,
	STEP_BOOT_CHECK,
	STEP_ROLLBACK_WAIT,
	STEP_ROLLBACK_WRITE,
	STEP_ROLLBACK_BOOT_CHECK,
	STEP_RESTORE,
	STEP_POWER_CYCLE, /* SDIO board: the profile's power group switches it off and on */
	STEP_NEEDS_POWER, /* SDIO board: waits for the user's power cycle (no power group) */
	_STEP_MAX,
};

static const char *const step_names[_STEP_MAX] = {
    [STEP_GATE] = "gate",
    [STEP_STOP_UNIT] = "stop-unit",
    [STEP_ENTER] = "enter-bootloader",
    [STEP_WAIT_BOOTLOADER] = "wait-bootloader",
    [STEP_WRITE] = "write",
    [STEP_VERIFY] = "verify",
    [STEP_LEAVE] = "leave",
    [STEP_BOOT_CHECK] = "boot-check",
    [STEP_ROLLBACK_WAIT] = "rollback-wait",
    [STEP_ROLLBACK_WRITE] = "rollback-write",
    [STEP_ROLLBACK_BOOT_CHECK] = "rollback-boot-check",
    [STEP_RESTORE] = "restore",
    [STEP_POWER_CYCLE] = "power-cycle",
    [STEP_NEEDS_POWER] = "needs-power-cycle",
};

enum child_kind {
	CHILD_NONE,
	CHILD_GATE,
	CHILD_WORKER,
};

struct job;
/* What a job's one-shot timer does when it fires (its source is gone by then). */
typedef void (*job_timer_fn)(struct job *j);

struct job {
	struct job_table *t;
	struct store_job rec; /* the history row */
	char job_id[24];
	char port[64];
	char serial[DEVICE_STR];
	const struct catalog_board *catalog;
	char **stop_globs;	   /* copy of the profile's stop_units */
	struct power_cycle *power; /* the running power cycle */
	struct worker_rescue_plan *rplan;
	char profile[72];
	char sha[SHA256_HEX_LEN + 1]; /* the firmware this job installs */
	char lkg[SHA256_HEX_LEN + 1]; /* last known good, "" if none */
	char version[128];	      /* Klipper version in the image, "" if none */
	uint32_t app_start;
	enum config_interface interface;
	char moonraker[256];
	char moonraker_key_file[256]; /* "" = no API key */
	bool moonraker_fail_open;
	/* zero config: no Moonraker at the default address is fine */
	bool moonraker_optional;
	char octoprint[256]; /* host = "octoprint": its URL, else "" */
	char octoprint_key_file[256];
	char stopped_unit[256]; /* the unit this job stopped, "" if none */
	enum job_step step;
	bool resumed;
	bool saw_gone;	     /* the board left its port since the touch */
	bool rollback;	     /* writing the last known-good image back */
	bool gone_in_worker; /* the board left the bus while a worker talked to it */
	bool touched;	     /* a 1200-baud request was sent */
	unsigned touches;    /* requests that brought the app back instead of a bootloader */
	unsigned flickers;   /* boot check: times the app came up and left again */
	bool cold_boot;	     /* left for longer than the leave grace during the boot check */
	bool gone_checked;   /* a worker's "gone" result waited for udev's remove once */
	/* Marlin (issue 16): the image is a Marlin build (it comes back as Marlin, and the
	 * msc method checks FIRMWARE.CUR and M115 then); the enumeration the msc write
	 * started on, which must have left before the board counts as back */
	bool marlin_image;
	char msc_node[DEVICE_PATH];
	bool msc_checking; /* the worker checks what the SD bootloader did */
	unsigned rearms;   /* bootloader waits restarted because the board came back */

	/* the SD path (method "sd"): written while the app runs, the stock bootloader flashes
	 * it on the reset, then a confirm step asks the running app (see sd_write) */
	bool sd;
	bool sd_confirming; /* the confirm worker runs */
	bool sd_confirmed;  /* the board runs the image: the boot check after it is the last */
	bool sd_need_gone;  /* a reset was sent: the app seen before it leaves is the old one */
	unsigned sd_asked;  /* confirm workers that ended without an answer */
	char note[256];	    /* a warning for the final message, "" if none */
	bool result_reset;  /* the worker restarted the board on purpose (a rescue: it pulsed
			     * RESET; else the user was asked to) */

	/* the running child: gate check or worker */
	enum child_kind child;
	pid_t pid;
	int out_fd;
	sd_event_source *out_src;
	sd_event_source *child_src;
	char out[8192];
	size_t out_len;
	bool result_ok;
	bool result_gone; /* the worker's device vanished under it (its result's "gone") */
	char result_error[512];
	char result_step[16]; /* where the worker stopped: "open", "check", "write", ... */
	unsigned open_retries;
	uint64_t bytes;
	unsigned last_percent;

	sd_event_source *timer;	 /* step timeout */
	sd_event_source *stable; /* boot check: app must stay up */
	job_timer_fn timer_fn;	 /* what j->timer calls (arm_timer) */
	job_timer_fn stable_fn;	 /* what j->stable calls (arm_stable) */
	char error[512];

	/* SDIO boards after the SD-card path (power.h) */
	bool power_gone;       /* the board left the bus since firmware.bin was written */
	bool power_verify;     /* after the gate and the unit: the confirm, not a write */
	bool power_pending;    /* the cycle waits for the board back from the confirm's reset */
	unsigned power_cycles; /* power cycles this job asked for */
	char power_why[1024];  /* STEP_NEEDS_POWER: what the user reads in boards/status */

	/* a UART rescue or restore (job_table_rescue): the worker runs the rescue plan, then
	 * the board must come back on USB (port = its USB port, or "uart:TTY" when it was not
	 * on USB) */
	bool rescue;
	bool old_partial; /* the LPC ROM showed its own vectors for flash 0-63 */
};

struct job_table {
	sd_event *loop;
	const struct config *cfg;
	struct store *store;
	struct boards *boards;
	struct units *units;
	struct octoprint *octoprint; /* OctoPrint connections to give back */
	char *worker_exe;
	job_event_fn ev;
	void *userdata;
	struct job **jobs;
	size_t n_jobs;
	char **pending; /* ports waiting for a free job slot */
	size_t n_pending;
	char **bl_seen; /* ports whose bootloader visit was considered */
	/* ports whose last job failed while the board stayed connected: not retried by the
	 * reconcile loop until the board leaves (a fault that outlasts every retry must not
	 * loop) */
	char **held_off;
	char **retried;		    /* held-off ports given their one retry this appearance */
	sd_event_source *retry_src; /* the cool-down after which they get it */
	/* ports whose board has no bootloader path skrflash can write: the request only took
	 * it somewhere useless, so it is not sent again by itself (a new file or a `flash`
	 * asks again) */
	char **no_path;
	char **kat_seen; /* ports where a board was seen in Katapult (the SD path's choice) */
	/* ports whose board a failed SD job reset on purpose: leaving for that is no new
	 * plug-in, so its failure is not retried for it */
	char **own_reset;
	char **own_gone; /* ... and it has left the bus for it */
	char **no_card;	 /* ports whose board has no SD card that answers (until it leaves) */
	sd_event_source *reconcile_src; /* deferred reconcile pass */
	struct ident_table *ident;	/* M115 of Marlin boards (service/ident.c) */
	json_object **dry_run; /* set by job_table_plan: prepare_job answers a plan, no job */
};

static void job_fail(struct job *j, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void job_suspend(struct job *j, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void step_write(struct job *j, struct board *b);
static void step_enter(struct job *j);
static void begin_boot_check(struct job *j);
static bool sd_chosen(const struct job *j, const struct board *b);
static void sd_write(struct job *j, struct board *b);
static void sd_confirm(struct job *j, struct board *b);
static void sd_done(struct job *j, int status);
static void sdio_needs_power(struct job *j, const char *err);
static void sdio_verify_now(struct job *j, struct board *b);
static void on_board_in_job(struct job *j, enum boards_event ev, struct board *b);
static bool bootloader_visit_new(struct job_table *t, const char *port);
static void reconcile_soon(struct job_table *t);
static bool strv_has(char **v, const char *s);
static void strv_drop(char ***v, const char *s);
static void strv_add(char ***v, const char *s);
static bool bootloader_mode(enum device_mode m);
static bool marlin_mode(enum device_mode m);
static void unreachable_bootloader(struct job *j, const struct board *b);
static void rescue_write(struct job *j);
static void rescue_child_done(struct job *j, int status);
static void rescue_on_board(struct job *j, enum boards_event ev, struct board *b);
static struct job *find_job(struct job_table *t, const char *port);

static void
fields(const struct job *j, const char *mid, struct log_fields *f)
{
	memset(f, 0, sizeof(*f));
	f->message_id = mid;
	f->board = j->catalog ? j->catalog->name : NULL;
	f->port = j->port;
	f->serial = j->serial[0] ? j->serial : NULL;
	f->profile = j->profile[0] ? j->profile : NULL;
	f->sha256 = j->sha;
	f->job = j->job_id;
	f->step = step_names[j->step];
}

static const char *
name_of(const struct job *j)
{
	return j->catalog ? j->catalog->name : "board";
}

static json_object *
job_json(const struct job *j)
{
	json_object *o = json_object_new_object();

	json_object_object_add(o, "job", json_object_new_int64(j->rec.id));
	json_object_object_add(o, "board",
			       json_object_new_string(j->catalog ? j->catalog->name : ""));
	json_object_object_add(o, "port", json_object_new_string(j->port));
	json_object_object_add(o, "profile", json_object_new_string(j->profile));
	json_object_object_add(o, "sha256", json_object_new_string(j->sha));
	json_object_object_add(o, "method", json_object_new_string(j->rec.method));
	json_object_object_add(o, "step", json_object_new_string(step_names[j->step]));
	json_object_object_add(o, "bytes", json_object_new_int64((int64_t)j->bytes));
	if (j->step == STEP_NEEDS_POWER) {
		json_object_object_add(o, "state", json_object_new_string("needs-power-cycle"));
		json_object_object_add(o, "why", json_object_new_string(j->power_why));
	}
	return o;
}

static void
emit(struct job *j, const char *event, json_object *extra)
{
	json_object *o = job_json(j);

	if (extra) {
		json_object_object_foreach(extra, k, v)
			json_object_object_add(o, k, json_object_get(v));
		json_object_put(extra);
	}
	if (j->t->ev)
		j->t->ev(j->t->userdata, event, o);
	else
		json_object_put(o);
}

/* Every step is in the state database before it is taken: a daemon killed at any point
 * finds the job, its method and what it changed on the host, and resumes from there. */
static void
persist(struct job *j)
{
	j->rec.bytes = j->bytes;
	(void)str_copy(j->rec.lkg, sizeof(j->rec.lkg), j->lkg);
	if (store_job_update(j->t->store, &j->rec) < 0)
		log_warn("job %s: cannot record step %s in the state database", j->job_id,
			 j->rec.step);
}

static void
set_step(struct job *j, enum job_step s)
{
	j->step = s;
	(void)str_copy(j->rec.step, sizeof(j->rec.step), step_names[s]);
	persist(j);
	emit(j, "job-step", NULL);
}

/* The rollback's wait ended without the board in a bootloader. */
static void
rollback_never_back(struct job *j)
{
	job_fail(j,
		 "board did not boot the new firmware: %s on port %s never came back in a "
		 "bootloader to roll back to %.12s; it needs recovery by hand",
		 name_of(j), j->port, j->lkg);
}

static void
on_timeout(struct job *j)
{
	if (j->pid > 0) {
		/* the child's exit handler reports the failure with this message */
		(void)snprintf(j->result_error, sizeof(j->result_error),
			       "step %s took longer than %u s; stopped it", step_names[j->step],
			       j->t->cfg->step_timeout_ms / 1000u);
		(void)kill(j->pid, SIGKILL);
		return;
	}
	/* boot checks have their own timer (on_boot_timeout); this one guards the waits */
	if (j->step == STEP_WAIT_BOOTLOADER) {
		struct board *b = boards_find_port(j->t->boards, j->port);
		double secs = j->t->cfg->bootloader_timeout_ms / 1000.0;

		if (!b || !b->present)
			job_suspend(j,
				    "%s on port %s left the USB bus %s and was not back within "
				    "%.1f s; nothing was written. The job resumes when it is "
				    "plugged in again",
				    name_of(j), j->port,
				    j->touched ? "after the 1200-baud request"
					       : "before the "
						 "bootloader request",
				    secs);
		else if (j->touched && device_mode_is_bootloader(b->dev.mode) &&
			 !bootloader_mode(b->dev.mode))
			/* it did go to a bootloader, one without a writer, while the
			 * touch's worker was still on its way out */
			unreachable_bootloader(j, b);
		else if (!j->touched)
			job_fail(
			    j,
			    "%s on port %s is in %s mode: skrflash can neither send it the "
			    "bootloader request nor write to it there; nothing was written. "
			    "Enter its bootloader by hand (BOOT0/DFU button or Katapult double "
			    "reset)",
			    name_of(j), j->port, device_mode_to_string(b->dev.mode));
		else
			job_fail(
			    j,
			    "%s on port %s did not come back in a bootloader within %.1f s after "
			    "the 1200-baud request (it is in %s mode now); nothing was written. "
			    "Check the cable, or enter the bootloader by hand",
			    name_of(j), j->port, secs, device_mode_to_string(b->dev.mode));
	} else if (j->step == STEP_ROLLBACK_WAIT)
		rollback_never_back(j);
}

/* Both one-shot timers of a job (j->timer, j->stable) end here: the source that fired is
 * released, then the function it was armed with runs. */
static int
/* cppcheck-suppress constParameter ; sd_event_time_handler_t fixes the type of s */
on_job_timer(sd_event_source *s, uint64_t usec, void *userdata)
{
	struct job *j = userdata;
	bool stable = s == j->stable;
	job_timer_fn fn = stable ? j->stable_fn : j->timer_fn;

	(void)usec;
	if (stable)
		j->stable = sd_event_source_disable_unref(j->stable);
	else
		j->timer = sd_event_source_disable_unref(j->timer);
	fn(j);
	return 0;
}

/* The step's timer: fn (on_timeout when NULL) runs in ms unless it is armed again or
 * released first. */
static void
arm_timer(struct job *j, unsigned ms, job_timer_fn fn)
{
	j->timer = sd_event_source_disable_unref(j->timer);
	j->timer_fn = fn ? fn : on_timeout;
	if (sd_event_add_time_relative(j->t->loop, &j->timer, CLOCK_MONOTONIC, (uint64_t)ms * 1000u,
				       0, on_job_timer, j) < 0)
		log_warn("job %s: cannot arm a timer", j->job_id);
}

/* An app that came up must stay up for WORKER_APP_STABLE_MS before fn takes it as up.
 * Accuracy 1 ms: sd-event's default (250 ms) would add up to a quarter second to every
 * job's end. 0, or -errno with nothing armed. */
static int
arm_stable(struct job *j, job_timer_fn fn)
{
	j->stable_fn = fn;
	return sd_event_add_time_relative(j->t->loop, &j->stable, CLOCK_MONOTONIC,
					  (uint64_t)WORKER_APP_STABLE_MS * 1000u, 1000u,
					  on_job_timer, j);
}

static void
job_free(struct job *j)
{
	if (!j)
		return;
	if (j->t->units)
		units_forget(j->t->units, j);
	if (j->pid > 0)
		(void)kill(j->pid, SIGKILL);
	sd_event_source_disable_unref(j->out_src);
	sd_event_source_disable_unref(j->child_src);
	sd_event_source_disable_unref(j->timer);
	sd_event_source_disable_unref(j->stable);
	power_cycle_free(j->power);
	close_fd(j->out_fd);
	strv_free(j->stop_globs);
	free(j->rplan);
	free(j);
}

static void start_pending(struct job_table *t);

/* A unit runs again: no job needs to remember it any more. A start that only dropped one
 * job's reference ("held") leaves it recorded for the job still holding it. */
static void
on_unit_started(void *userdata, const char *unit, int r, const char *result)
{
	struct job_table *t = userdata;

	/* units logs the success itself; a failure stays recorded and is retried at start-up */
	if (r < 0) {
		log_warn_errno(r, "could not start %s again after flashing; start it by hand",
			       unit);
		return;
	}
	if (!result || strcmp(result, "held") != 0)
		(void)store_units_restored(t->store, unit);
}

static void
restore_unit(struct job_table *t, const char *unit)
{
	if (!t->units) {
		log_warn("cannot start %s again: no systemd bus; start it by hand", unit);
		return;
	}
	if (units_start(t->units, unit, on_unit_started, t) < 0)
		log_warn("could not start %s again after flashing; start it by hand", unit);
}

static bool
board_present(struct job_table *t, const char *port)
{
	struct board *b = boards_find_port(t->boards, port);

	return b && b->present;
}

/* A failure with the board still connected is retried once, after a cool-down, in case it
 * was transient (a storm of re-enumerations, a cable that was wiggled); a second failure
 * waits for the board to be plugged in again, a new file or a `flash`. */
#define RETRY_COOLDOWN_USEC (10ull * 1000000ull)

static int
on_retry(sd_event_source *s, uint64_t usec, void *userdata)
{
	struct job_table *t = userdata;
	char **ports = t->held_off;

	(void)s;
	(void)usec;
	t->retry_src = sd_event_source_disable_unref(t->retry_src);
	t->held_off = NULL;
	for (size_t i = 0; ports && ports[i]; i++) {
		if (strv_has(t->retried, ports[i]))
			strv_add(&t->held_off, ports[i]);
		else
			strv_add(&t->retried, ports[i]);
	}
	strv_free(ports);
	reconcile_soon(t);
	return 0;
}

static void
retry_later(struct job_table *t)
{
	t->retry_src = sd_event_source_disable_unref(t->retry_src);
	if (sd_event_add_time_relative(t->loop, &t->retry_src, CLOCK_MONOTONIC, RETRY_COOLDOWN_USEC,
				       0, on_retry, t) < 0)
		log_warn("cannot schedule a retry of failed jobs");
}

/* The end of every job: history row, journal, units back, slot free. "interrupted" keeps
 * the job resumable from its step when the board is seen again. */
/* An OctoPrint connection a job released goes back once the board runs its application
 * again and no job uses it or will resume on it (on success, failure or rollback; after a
 * restart too). */
static void
give_port_back(struct job_table *t, const char *port)
{
	struct board *b = boards_find_port(t->boards, port);
	struct store_job unfinished;

	if (b && b->present && b->dev.tty[0] && !device_mode_is_bootloader(b->dev.mode) &&
	    !find_job(t, port) && store_job_unfinished(t->store, port, &unfinished) < 0)
		octoprint_board_ready(t->octoprint, port, b->dev.tty, b->dev.by_id);
}

static void
job_finish(struct job *j, const char *result, const char *mid, int prio, const char *msg)
{
	struct job_table *t = j->t;
	char port[sizeof(j->port)];
	struct log_fields f;
	json_object *extra = json_object_new_object();

	(void)str_copy(j->rec.result, sizeof(j->rec.result), result);
	(void)str_copy(j->rec.error, sizeof(j->rec.error), strcmp(result, "succeeded") ? msg : "");
	j->rec.bytes = j->bytes;
	(void)str_copy(j->rec.lkg, sizeof(j->rec.lkg), j->lkg);
	if (store_job_end(t->store, &j->rec) < 0)
		log_warn("job %s: cannot record the result in the state database", j->job_id);
	fields(j, mid, &f);
	log_full(prio, 0, &f, "%s", msg);
	/* a failure with the board still here is not retried by itself: the next attempt
	 * is the user's, or comes when the board is plugged in again */
	if (strcmp(result, "failed") == 0 && board_present(t, j->port)) {
		strv_add(&t->held_off, j->port);
		retry_later(t);
	}
	if (j->stopped_unit[0])
		restore_unit(t, j->stopped_unit);
	json_object_object_add(extra, "result", json_object_new_string(result));
	json_object_object_add(extra, "message", json_object_new_string(msg));
	emit(j, "job-finished", extra);
	(void)str_copy(port, sizeof(port), j->port);
	for (size_t i = 0; i < t->n_jobs; i++) {
		if (t->jobs[i] != j)
			continue;
		memmove(&t->jobs[i], &t->jobs[i + 1], (t->n_jobs - i - 1) * sizeof(struct job *));
		t->n_jobs--;
		break;
	}
	job_free(j);
	give_port_back(t, port);
	start_pending(t);
	reconcile_soon(t);
}

static void job_endv(struct job *j, const char *result, int prio, const char *fmt, va_list ap)
    __attribute__((format(printf, 4, 0)));

/* A job that did not succeed ends with its message formatted here. */
static void
job_endv(struct job *j, const char *result, int prio, const char *fmt, va_list ap)
{
	char msg[600];

	(void)vsnprintf(msg, sizeof(msg), fmt, ap);
	job_finish(j, result, LOG_MID_FLASH_FAILED, prio, msg);
}

/* The board left in the middle of the job: nothing is lost. The host is restored now, the
 * job stays recorded at its step and resumes when the board is seen again. */
static void
job_suspend(struct job *j, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	job_endv(j, "interrupted", LOG_WARNING, fmt, ap);
	va_end(ap);
}

static void
job_fail(struct job *j, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	job_endv(j, "failed", LOG_ERR, fmt, ap);
	va_end(ap);
}

static struct job *
find_job(struct job_table *t, const char *port)
{
	for (size_t i = 0; i < t->n_jobs; i++)
		if (strcmp(t->jobs[i]->port, port) == 0)
			return t->jobs[i];
	return NULL;
}

/* ---- children: the gate check and workers ------------------------------------------ */

static void
child_line(struct job *j, const char *line)
{
	json_object *o = json_tokener_parse(line), *v;
	const char *type;

	if (!o)
		return;
	type = json_object_object_get_ex(o, "type", &v) ? json_object_get_string(v) : "";
	if (strcmp(type, "progress") == 0) {
		uint64_t done = (uint64_t)json_object_get_int64(json_object_object_get(o, "done"));
		uint64_t total =
		    (uint64_t)json_object_get_int64(json_object_object_get(o, "total"));
		const char *step = json_object_get_string(json_object_object_get(o, "step"));
		unsigned pct = total ? (unsigned)(done * 100u / total) : 0;

		if (step && strcmp(step, "write") == 0)
			j->bytes = done;
		/* the worker runs write, verify and leave; each is recorded as it begins */
		if (step && !j->rollback && strcmp(step, "verify") == 0 && j->step == STEP_WRITE)
			set_step(j, STEP_VERIFY);
		else if (step && !j->rollback && strcmp(step, "leave") == 0 &&
			 (j->step == STEP_WRITE || j->step == STEP_VERIFY))
			set_step(j, STEP_LEAVE);
		/* one event per percent keeps watchers informed without flooding them */
		if (pct != j->last_percent || done == total) {
			json_object *extra = json_object_new_object();

			j->last_percent = pct;
			json_object_object_add(extra, "phase",
					       json_object_new_string(step ? step : ""));
			json_object_object_add(extra, "done", json_object_new_int64((int64_t)done));
			json_object_object_add(extra, "total",
					       json_object_new_int64((int64_t)total));
			emit(j, "job-progress", extra);
		}
	} else if (strcmp(type, "reported") == 0) {
		struct log_fields f;

		fields(j, NULL, &f);
		/* any key may be missing (a worker of another version): "" then, never NULL */
		const char *mcu = json_object_get_string(json_object_object_get(o, "mcu"));
		const char *start = json_object_get_string(json_object_object_get(o, "app_start"));
		const char *ver = json_object_get_string(json_object_object_get(o, "version"));

		log_full(LOG_INFO, 0, &f, "%s on port %s: bootloader reports %s%sapp start %s%s%s",
			 name_of(j), j->port, mcu && *mcu ? mcu : "", mcu && *mcu ? ", " : "",
			 start && *start ? start : "?", ver && *ver ? ", version " : "",
			 ver ? ver : "");
	} else if (strcmp(type, "note") == 0) {
		/* what the user has to do by hand (a rescue without GPIO lines) */
		json_object *extra = json_object_new_object();
		const char *msg = json_object_get_string(json_object_object_get(o, "message"));

		log_notice("job %s: %s", j->job_id, msg ? msg : "");
		json_object_object_add(extra, "message", json_object_new_string(msg ? msg : ""));
		emit(j, "job-note", extra);
	} else if (strcmp(type, "result") == 0) {
		j->result_ok = json_object_get_boolean(json_object_object_get(o, "ok"));
		j->old_partial = json_object_get_boolean(json_object_object_get(o, "old_partial"));
		j->result_gone = json_object_get_boolean(json_object_object_get(o, "gone"));
		if (json_object_object_get_ex(o, "bytes", &v) && json_object_get_int64(v) > 0)
			j->bytes = (uint64_t)json_object_get_int64(v);
		if (json_object_object_get_ex(o, "error", &v) && json_object_get_string(v)[0])
			(void)str_copy(j->result_error, sizeof(j->result_error),
				       json_object_get_string(v));
		if (json_object_object_get_ex(o, "step", &v))
			(void)str_copy(j->result_step, sizeof(j->result_step),
				       json_object_get_string(v));
		if (json_object_object_get_ex(o, "note", &v) && json_object_get_string(v)[0])
			(void)str_copy(j->note, sizeof(j->note), json_object_get_string(v));
		j->result_reset =
		    json_object_object_get_ex(o, "reset", &v) && json_object_get_boolean(v);
	}
	json_object_put(o);
}

static void
drain(struct job *j)
{
	for (;;) {
		ssize_t n;
		char *nl;

		if (j->out_len >= sizeof(j->out) - 1)
			j->out_len = 0; /* a line this long is not ours: drop it */
		n = read(j->out_fd, j->out + j->out_len, sizeof(j->out) - 1 - j->out_len);
		if (n <= 0)
			break;
		j->out_len += (size_t)n;
		while ((nl = memchr(j->out, '\n', j->out_len))) {
			*nl = 0;
			child_line(j, j->out);
			j->out_len -= (size_t)(nl + 1 - j->out);
			memmove(j->out, nl + 1, j->out_len);
		}
	}
}

static int
on_child_output(sd_event_source *s, int fd, uint32_t revents, void *userdata)
{
	(void)s;
	(void)fd;
	(void)revents;
	drain(userdata);
	return 0;
}

static void child_done(struct job *j, int status);

static int
on_child_exit(sd_event_source *s, const siginfo_t *si, void *userdata)
{
	struct job *j = userdata;
	int status = si->si_code == CLD_EXITED ? si->si_status : 128 + si->si_status;

	(void)s;
	drain(j);
	j->out_src = sd_event_source_disable_unref(j->out_src);
	j->child_src = sd_event_source_disable_unref(j->child_src);
	j->out_fd = close_fd(j->out_fd);
	j->pid = 0;
	j->timer = sd_event_source_disable_unref(j->timer);
	child_done(j, status);
	return 0;
}

/* The gate child's one line: whether the flash may go on, and what it found. */
static int
gate_report(bool ok, const char *msg)
{
	dprintf(STDOUT_FILENO, "{\"type\":\"result\",\"ok\":%s,\"error\":%s}\n",
		ok ? "true" : "false",
		json_object_to_json_string(json_object_new_string(msg ? msg : "")));
	return ok ? 0 : 1;
}

/* The gate child of a board driven by OctoPrint: its print state, and its serial port
 * released when OctoPrint holds it (service/octoprint.c). */
static int
octoprint_gate_child(const struct job *j)
{
	const struct board *b = boards_find_port(j->t->boards, j->port);
	char *dir = xasprintf("%s/octoprint", j->t->cfg->state_dir), *msg = NULL;
	struct octoprint_target target = {
	    .url = j->octoprint,
	    .key_file = j->octoprint_key_file,
	    .board = name_of(j),
	    .usb_port = j->port,
	    .tty = b ? b->dev.tty : "",
	    .by_id = b ? b->dev.by_id : "",
	    .dir = dir,
	};
	bool ok = octoprint_gate_run(&target, &msg);

	return gate_report(ok, msg);
}

/* The gate child of a board behind Moonraker: its print state (service/moonraker.c). */
static int
moonraker_gate_child(const struct job *j)
{
	struct moonraker_state st;
	char key[MOONRAKER_KEY_MAX], *msg = NULL;
	int k = 0;
	bool ok;

	/* read here, at every check: a rotated key needs no reload */
	if (j->moonraker_key_file[0])
		k = moonraker_read_key(j->moonraker_key_file, key, sizeof(key));
	if (k < 0) {
		msg =
		    xasprintf("cannot read the Moonraker API key from %s: %s; not flashing %s "
			      "(the file must hold the key and be readable by the daemon's user)",
			      j->moonraker_key_file,
			      k == -EINVAL ? "no key on its first line" : strerror(-k), name_of(j));
		return gate_report(false, msg);
	}
	(void)moonraker_query(j->moonraker, j->moonraker_key_file[0] ? key : NULL, GATE_TIMEOUT_MS,
			      &st);
	ok = moonraker_gate(&st, j->moonraker, j->moonraker_fail_open, name_of(j), &msg);
	if (!ok && j->moonraker_optional && st.error == -ECONNREFUSED) {
		free(msg);
		msg = xasprintf("no Moonraker listens at %s; flashing %s without a print-state "
				"check",
				j->moonraker, name_of(j));
		ok = true;
	}
	return gate_report(ok, msg);
}

/* The forked child: the worker re-executed with the plan on its stdin, or the gate check
 * run here. Its stdout is the pipe the job reads. */
_Noreturn static void
child_run(const struct job *j, const char *plan, int in_fd, int out_fd)
{
	sigset_t none;

	/* a worker must not outlive the daemon: the board stays in its bootloader and the
	 * next daemon resumes the job */
	(void)prctl(PR_SET_PDEATHSIG, SIGKILL);
	sigemptyset(&none);
	(void)sigprocmask(SIG_SETMASK, &none, NULL);
	if (dup2(out_fd, STDOUT_FILENO) < 0)
		_exit(127);
	if (plan) {
		char *args[] = {j->t->worker_exe, (char[]){"--worker"}, NULL};

		if (dup2(in_fd, STDIN_FILENO) < 0)
			_exit(127);
		execv(j->t->worker_exe, args);
		_exit(127);
	}
	_exit(j->octoprint[0] ? octoprint_gate_child(j) : moonraker_gate_child(j));
}

/* The plan on the worker's stdin, which is then closed. */
static void
send_plan(const struct job *j, int in[2], const char *plan)
{
	size_t len = strlen(plan);

	close_fd(in[0]);
	/* plans are a few hundred bytes: they fit in the pipe without blocking */
	if (write(in[1], plan, len) != (ssize_t)len || write(in[1], "\n", 1) != 1)
		log_warn("job %s: short write of the worker plan", j->job_id);
	close_fd(in[1]);
}

/* The job's running child from now on: its lines are read as they come, its exit ends the
 * step, and the step's timer bounds it. 0, or -errno with the child killed. */
static int
watch_child(struct job *j, enum child_kind kind, pid_t pid, int out_fd)
{
	int r;

	(void)fcntl(out_fd, F_SETFL, O_NONBLOCK);
	j->out_fd = out_fd;
	j->out_len = 0;
	j->pid = pid;
	j->child = kind;
	j->result_ok = false;
	j->result_gone = false;
	j->result_error[0] = 0;
	j->result_step[0] = 0;
	j->result_reset = false;
	j->last_percent = 101;
	r = sd_event_add_io(j->t->loop, &j->out_src, out_fd, EPOLLIN, on_child_output, j);
	if (r >= 0)
		r = sd_event_add_child(j->t->loop, &j->child_src, pid, WEXITED, on_child_exit, j);
	if (r < 0) {
		(void)kill(pid, SIGKILL);
		(void)waitpid(pid, NULL, 0);
		j->pid = 0;
		return r;
	}
	arm_timer(j, j->t->cfg->step_timeout_ms, NULL);
	return 0;
}

/* Start a child that writes JSON lines on its stdout: a re-executed worker when plan is
 * given, else a forked print-state check (short-lived, single-threaded parent). */
static int
spawn(struct job *j, enum child_kind kind, const char *plan)
{
	int in[2] = {-1, -1}, out[2] = {-1, -1};
	pid_t pid;
	int r;

	if (pipe2(out, O_CLOEXEC) < 0 || (plan && pipe2(in, O_CLOEXEC) < 0)) {
		r = -errno;
		goto fail;
	}
	pid = fork();
	if (pid < 0) {
		r = -errno;
		goto fail;
	}
	if (pid == 0)
		child_run(j, plan, in[0], out[1]);
	close_fd(out[1]);
	if (plan)
		send_plan(j, in, plan);
	return watch_child(j, kind, pid, out[0]);
fail:
	close_fd(in[0]);
	close_fd(in[1]);
	close_fd(out[0]);
	close_fd(out[1]);
	return r;
}

/* A worker for plan; a job whose worker cannot start fails. */
static void
run_worker(struct job *j, const struct worker_plan *plan)
{
	char *json = NULL;
	int r = worker_plan_to_json(plan, &json);

	if (r >= 0)
		r = spawn(j, CHILD_WORKER, json);
	free(json);
	if (r < 0)
		job_fail(j, "cannot start a worker for %s", name_of(j));
}

/* ---- the sequence ---------------------------------------------------------------------- */

static void
on_unit_stopped(void *userdata, const char *unit, int r, const char *result)
{
	struct job *j = userdata;

	(void)result;
	if (r < 0) {
		/* nothing is held: nothing to start again */
		j->stopped_unit[0] = 0;
		j->rec.stopped_units[0] = 0;
		persist(j);
		job_fail(j, "could not stop %s, which holds the tty of %s on port %s: %s", unit,
			 name_of(j), j->port, strerror(-r));
		return;
	}
	log_info("stopped %s to flash %s on port %s", unit, name_of(j), j->port);
	step_enter(j);
}

/* The unit is in the state database before the stop is asked for: whoever finds it there
 * (this job, a resumed one, the next daemon) starts it again. */
static int
stop_unit(struct job *j, const char *unit)
{
	int r;

	(void)str_copy(j->stopped_unit, sizeof(j->stopped_unit), unit);
	(void)str_copy(j->rec.stopped_units, sizeof(j->rec.stopped_units), unit);
	persist(j);
	r = units_stop(j->t->units, j->stopped_unit, on_unit_stopped, j);
	if (r < 0) {
		j->stopped_unit[0] = 0;
		j->rec.stopped_units[0] = 0;
		persist(j);
	}
	return r;
}

/* A tty held open (Klipper): stop exactly that unit when the profile allows it. */
static void
step_stop_unit(struct job *j)
{
	struct board *b = boards_find_port(j->t->boards, j->port);
	struct holder *h = NULL;
	char **units = NULL, *reason = NULL;
	size_t n = 0;
	struct stat st;
	int r;

	set_step(j, STEP_STOP_UNIT);
	/* Marlin's tty too: a host (OctoPrint) that holds it talks G-code to the board */
	if (!b || (b->dev.mode != DEVICE_MODE_KLIPPER_APP && !marlin_mode(b->dev.mode)) ||
	    !b->dev.tty[0]) {
		step_enter(j);
		return;
	}
	r = holder_find(NULL, b->dev.tty, stat(b->dev.tty, &st) == 0 ? st.st_rdev : 0, &h, &n);
	if (r < 0) {
		/* cannot inspect is not "free": resetting a board under Klipper is worse */
		job_fail(
		    j,
		    "%s on port %s: cannot tell whether a program has %s open (%s): other "
		    "users' processes are invisible to skrflashd and /proc/locks is unreadable; "
		    "stop Klipper by hand, or see SECURITY in skrflashd(8)",
		    name_of(j), j->port, b->dev.tty, strerror(-r));
		return;
	}
	if (r == 0) {
		/* nobody holds the tty - maybe because another job of this printer stopped
		 * Klipper: then hold it too, so that it starts only after both are done */
		const char *held = j->t->units ? units_held_matching(j->t->units, j->stop_globs,
								     strv_length(j->stop_globs))
					       : NULL;

		if (!held) {
			step_enter(j);
			return;
		}
		r = stop_unit(j, held);
		if (r < 0)
			step_enter(j);
		return;
	}
	r = units_plan(h, n, j->stop_globs, strv_length(j->stop_globs), b->dev.tty, &units,
		       &reason);
	holder_free(h, n);
	if (r < 0) {
		job_fail(j, "%s on port %s: %s", name_of(j), j->port,
			 reason ? reason : "its tty is in use");
		free(reason);
		return;
	}
	if (!units || !units[0]) {
		strv_free(units);
		step_enter(j);
		return;
	}
	if (!j->t->units) {
		job_fail(j,
			 "%s on port %s: %s holds its tty, and there is no systemd bus to stop it",
			 name_of(j), j->port, units[0]);
		strv_free(units);
		return;
	}
	/* one printer's Klipper holds one tty: the first unit is the one */
	r = stop_unit(j, units[0]);
	if (r < 0)
		job_fail(j, "could not stop %s: %s", units[0], strerror(-r));
	strv_free(units);
}

static void
step_gate(struct job *j)
{
	set_step(j, STEP_GATE);
	if (!j->moonraker[0] && !j->octoprint[0]) {
		step_stop_unit(j);
		return;
	}
	if (spawn(j, CHILD_GATE, NULL) < 0)
		job_fail(j, "cannot check the print state at %s",
			 j->octoprint[0] ? j->octoprint : j->moonraker);
}

/* A bootloader the worker has a backend for. */
static bool
bootloader_mode(enum device_mode m)
{
	/* Marlin has a writer too (msc), but it is an application */
	return worker_method_for_mode(m) != NULL && device_mode_is_bootloader(m);
}

static bool
marlin_mode(enum device_mode m)
{
	return m == DEVICE_MODE_MARLIN_LPC || m == DEVICE_MODE_MARLIN_STM32;
}

static bool method_allowed(const struct job *j, const char *method);

/* The method that writes while Marlin runs (flash/msc.c), when this job may use it. */
static const char *
app_writer(const struct job *j, const struct board *b)
{
	if (!b->present || !marlin_mode(b->dev.mode) || !b->dev.tty[0] || !method_allowed(j, "msc"))
		return NULL;
	return "msc";
}

/* A bootloader is usable once the node its backend opens exists: Katapult's tty arrives
 * in a uevent after its usb_device; the libusb backends (ROM DFU, BOOTSEL) open the usb
 * node, which comes with it. */
static bool
bootloader_ready(const struct board *b)
{
	if (!b->present || !bootloader_mode(b->dev.mode))
		return false;
	if (b->dev.mode == DEVICE_MODE_KATAPULT)
		return b->dev.tty[0] != 0;
	return b->dev.usb_node[0] != 0;
}

static void
step_enter(struct job *j)
{
	struct board *b = boards_find_port(j->t->boards, j->port);
	struct worker_plan plan;

	if (j->rescue) {
		rescue_write(j);
		return;
	}
	if (j->power_verify) {
		sdio_verify_now(j, b);
		return;
	}
	if (b && app_writer(j, b)) {
		step_write(j, b);
		return;
	}
	if (b && b->present && marlin_mode(b->dev.mode)) {
		job_fail(j,
			 "%s on port %s runs Marlin, which has no bootloader request: add \"msc\" "
			 "to the methods of profile '%s' to write firmware.bin to its SD card over "
			 "USB, or install Katapult",
			 name_of(j), j->port, j->profile);
		return;
	}
	if (b && bootloader_ready(b)) {
		step_write(j, b);
		return;
	}
	if (!b || b->dev.mode != DEVICE_MODE_KLIPPER_APP || !b->dev.tty[0]) {
		set_step(j, j->rollback ? STEP_ROLLBACK_WAIT : STEP_WAIT_BOOTLOADER);
		arm_timer(j, j->t->cfg->bootloader_timeout_ms, NULL);
		return;
	}
	if (sd_chosen(j, b)) {
		sd_write(j, b);
		return;
	}
	/* a rollback's request keeps its step name: a restart must not take it for the
	 * new image's job */
	set_step(j, j->rollback ? STEP_ROLLBACK_WAIT : STEP_ENTER);
	memset(&plan, 0, sizeof(plan));
	(void)str_copy(plan.action, sizeof(plan.action), "enter");
	plan.dev = b->dev;
	run_worker(j, &plan);
}

static bool
method_allowed(const struct job *j, const char *method)
{
	const struct config_profile *p = config_find_profile(j->t->cfg, j->profile);

	if (!p)
		return true;
	for (size_t i = 0; i < p->n_methods; i++)
		if (strcmp(config_method_to_string(p->methods[i]), method) == 0)
			return true;
	return false;
}

/* The stored file of `sha`, read whole and checked against its name: the worker verifies
 * the board against this file, so a file corrupted on disk would be flashed and "verified"
 * against itself. 0 with *ret_data, *ret_size (and *ret_path when asked for, set once the
 * store names the file), the store's or the read's -errno, or -EBADMSG. */
static int
read_stored_firmware(struct job_table *t, const char *sha, char **ret_path, uint8_t **ret_data,
		     size_t *ret_size)
{
	char got[SHA256_HEX_LEN + 1], *path = NULL;
	int r = store_firmware_path(t->store, sha, &path);

	if (r >= 0)
		r = read_file(path, IMAGE_MAX_SIZE, ret_data, ret_size);
	if (ret_path)
		*ret_path = path;
	else
		free(path);
	if (r < 0)
		return r;
	sha256_hex(*ret_data, *ret_size, got);
	if (strcmp(got, sha) == 0)
		return 0;
	free(*ret_data);
	*ret_data = NULL;
	return -EBADMSG;
}

/* A worker plan for the image this job writes (the known-good one in a rollback) on board b,
 * after checking the stored file still hashes to its name. 0, or -errno with the job
 * failed. */
static int
image_plan(struct job *j, const struct board *b, const char *method, const char *action,
	   struct worker_plan *plan)
{
	const char *sha = j->rollback ? j->lkg : j->sha;
	char *path = NULL;
	uint8_t *data = NULL;
	size_t size = 0;
	int r = read_stored_firmware(j->t, sha, &path, &data, &size);

	free(data);
	if (r < 0) {
		job_fail(j,
			 r == -EBADMSG ? "firmware %.12s in the store no longer matches its sha256 "
					 "(disk corruption?); queue the file again"
				       : "firmware %.12s is missing from the store",
			 sha);
		free(path);
		return r;
	}
	memset(plan, 0, sizeof(*plan));
	(void)str_copy(plan->action, sizeof(plan->action), action);
	(void)str_copy(plan->method, sizeof(plan->method), method);
	plan->dev = b->dev;
	(void)str_copy(plan->board, sizeof(plan->board), j->catalog ? j->catalog->name : "");
	(void)str_copy(plan->image_path, sizeof(plan->image_path), path);
	plan->app_start = j->app_start;
	plan->interface = j->interface;
	free(path);
	return 0;
}

/* The write worker of every method: recorded with its method, and from the first write on
 * what the board runs is unknown until it boots (`boards` must not claim the old image; the
 * known-good one stays recorded). */
static void
start_write(struct job *j, struct board *b, const char *method, const struct worker_plan *plan)
{
	(void)str_copy(j->rec.method, sizeof(j->rec.method), method);
	j->gone_in_worker = false;
	if (j->rec.board_id > 0 &&
	    store_board_set_installed(j->t->store, j->rec.board_id, "", "") >= 0 &&
	    b->id == j->rec.board_id) {
		b->installed_sha[0] = 0;
		b->installed_version[0] = 0;
	}
	set_step(j, j->rollback ? STEP_ROLLBACK_WRITE : STEP_WRITE);
	j->bytes = 0;
	run_worker(j, plan);
}

static void
step_write(struct job *j, struct board *b)
{
	const char *method =
	    app_writer(j, b) ? app_writer(j, b) : worker_method_for_mode(b->dev.mode);
	struct worker_plan plan;

	j->timer = sd_event_source_disable_unref(j->timer);
	j->stable = sd_event_source_disable_unref(j->stable);
	if (!method_allowed(j, method)) {
		/* the board's path leads here every time: no retry until it is plugged again
		 * or new firmware comes */
		strv_add(&j->t->no_path, j->port);
		job_fail(j,
			 "%s on port %s is in %s mode, but profile '%s' does not allow the %s "
			 "method; add it to methods",
			 name_of(j), j->port, device_mode_to_string(b->dev.mode), j->profile,
			 method);
		return;
	}
	if (image_plan(j, b, method, "flash", &plan) < 0)
		return;
	/* this visit to the bootloader is ours: a failed write is not retried on the next
	 * udev event, only when the board comes back */
	(void)bootloader_visit_new(j->t, j->port);
	(void)str_copy(j->msc_node, sizeof(j->msc_node),
		       strcmp(method, "msc") == 0 ? b->dev.usb_node : "");
	start_write(j, b, method, &plan);
}

static void
record_success(struct job *j, bool rolled_back)
{
	struct store_board sb;
	char msg[600];

	if (j->rec.board_id > 0) {
		(void)store_board_set_installed(j->t->store, j->rec.board_id,
						rolled_back ? j->lkg : j->sha,
						rolled_back ? "" : j->version);
		if (store_board_get(j->t->store, j->rec.board_id, &sb) >= 0) {
			struct board *b = boards_find_port(j->t->boards, j->port);

			if (b && b->id == sb.id) {
				/* Marlin's checked M115 is the image's (msc_check) */
				if (j->marlin_image && !rolled_back)
					(void)str_copy(b->firmware, sizeof(b->firmware),
						       j->version);
				(void)str_copy(b->installed_sha, sizeof(b->installed_sha),
					       sb.installed_sha);
				(void)str_copy(b->installed_version, sizeof(b->installed_version),
					       sb.installed_version);
				(void)str_copy(b->known_good_sha, sizeof(b->known_good_sha),
					       sb.known_good_sha);
			}
		}
	}
	if (rolled_back) {
		(void)snprintf(msg, sizeof(msg),
			       "%s on port %s did not boot firmware %.12s; rolled back to the last "
			       "known-good %.12s, which booted. %.12s is marked bad for this board "
			       "(`skrflashctl retry %s` allows it again)",
			       name_of(j), j->port, j->sha, j->lkg, j->sha, j->port);
		job_finish(j, "rolled-back", LOG_MID_ROLLED_BACK, LOG_WARNING, msg);
		return;
	}
	(void)snprintf(
	    msg, sizeof(msg),
	    "flashed %s on port %s with %.12s (%llu bytes, %s, verified) and it booted%s%s%s%s",
	    name_of(j), j->port, j->sha, (unsigned long long)j->bytes,
	    j->rec.method[0] ? j->rec.method : "written before a restart",
	    j->version[0] ? ": " : "", j->version, j->note[0] ? "; " : "", j->note);
	job_finish(j, "succeeded", LOG_MID_FLASH_SUCCEEDED, LOG_NOTICE, msg);
}

/* Back to the last known-good image: from the bootloader the board is in, or through the
 * bootloader request when it is up in an application. */
static void
start_rollback(struct job *j, struct board *b)
{
	j->rollback = true;
	set_step(j, STEP_ROLLBACK_WAIT);
	if (b && bootloader_ready(b)) {
		step_write(j, b);
		return;
	}
	if (b && b->present && b->dev.mode == DEVICE_MODE_KLIPPER_APP && b->dev.tty[0]) {
		step_enter(j);
		return;
	}
	/* an RP2040 without Katapult has no bootloader a crashing application falls back to:
	 * only its BOOT button reaches the ROM */
	if (j->catalog && (j->catalog->paths & CATALOG_PATH_BOOTSEL) &&
	    j->catalog->bootloader == CATALOG_BOOTLOADER_ROM_ONLY) {
		struct log_fields f;

		fields(j, LOG_MID_FLASH_FAILED, &f);
		log_full(LOG_WARNING, 0, &f,
			 "%s on port %s: hold its BOOT button and press RESET (or power it up with "
			 "BOOT held) within %.0f s; skrflash then rolls back to %.12s by itself",
			 name_of(j), j->port, j->t->cfg->boot_timeout_ms / 1000.0, j->lkg);
	}
	/* a stock SD bootloader outlives a crashing application, but only a card that holds
	 * firmware.bin reaches it: the operator's copy, then the rollback is confirmed */
	if (j->sd) {
		struct log_fields f;
		char *path = NULL;

		(void)store_firmware_path(j->t->store, j->lkg, &path);
		fields(j, LOG_MID_FLASH_FAILED, &f);
		log_full(
		    LOG_WARNING, 0, &f,
		    "%s on port %s: its stock SD bootloader is the way back: copy %s to its SD "
		    "card as firmware.bin and power it up (or reset it) within %.0f s; "
		    "skrflash then rolls back to %.12s by itself",
		    name_of(j), j->port, path ? path : j->lkg, j->t->cfg->boot_timeout_ms / 1000.0,
		    j->lkg);
		free(path);
	}
	arm_timer(j, j->t->cfg->boot_timeout_ms, NULL);
}

/* The new image did not come up: mark it and go back to what worked, if we know it. */
static void
boot_failed(struct job *j)
{
	struct board *b = boards_find_port(j->t->boards, j->port);
	struct log_fields f;

	j->stable = sd_event_source_disable_unref(j->stable);
	if (j->step == STEP_ROLLBACK_BOOT_CHECK) {
		job_fail(j,
			 "%s on port %s booted neither the new firmware %.12s nor the known-good "
			 "%.12s; it needs recovery by hand (BOOT0/DFU button or the SD card)",
			 name_of(j), j->port, j->sha, j->lkg);
		return;
	}
	if (j->rec.board_id > 0)
		(void)store_bad_mark(j->t->store, j->rec.board_id, j->sha, "did not boot");
	fields(j, LOG_MID_FLASH_FAILED, &f);
	log_full(LOG_ERR, 0, &f, "%s on port %s did not boot the new firmware %.12s", name_of(j),
		 j->port, j->sha);
	if (!j->lkg[0] || strcmp(j->lkg, j->sha) == 0) {
		job_fail(j,
			 "board did not boot the new firmware: %s on port %s, and no known-good "
			 "image is stored to roll back to; recover it through its bootloader "
			 "(BOOT0/DFU button, Katapult double reset or the SD card)",
			 name_of(j), j->port);
		return;
	}
	start_rollback(j, b);
}

/* msc: Marlin is back; a worker asks it and its card what the SD bootloader did
 * (flash/msc.c msc_check_after): M115 names the new build, FIRMWARE.CUR is the image. */
static void
msc_check(struct job *j, struct board *b)
{
	struct worker_plan plan;
	char *path = NULL;

	if (store_firmware_path(j->t->store, j->sha, &path) < 0) {
		free(path);
		job_fail(j, "firmware %.12s is missing from the store", j->sha);
		return;
	}
	memset(&plan, 0, sizeof(plan));
	(void)str_copy(plan.action, sizeof(plan.action), "msc-check");
	plan.dev = b->dev;
	(void)str_copy(plan.board, sizeof(plan.board), j->catalog ? j->catalog->name : "");
	(void)str_copy(plan.image_path, sizeof(plan.image_path), path);
	free(path);
	j->msc_checking = true;
	run_worker(j, &plan);
}

/* The answer of msc_check(): Marlin came back; only the expected build on a card that shows
 * the bootloader took the file is a success. Nothing is marked bad: the board runs what it
 * ran (or the new build), and the card holds what the message says. */
static void
msc_checked(struct job *j, int status)
{
	j->msc_checking = false;
	if (status == 0 && j->result_ok && j->marlin_image) {
		record_success(j, false);
		return;
	}
	if (status == 0 && j->result_ok)
		job_fail(j,
			 "%s on port %s came back running Marlin, not the Klipper build %.12s: "
			 "the SD bootloader did not take firmware.bin",
			 name_of(j), j->port, j->sha);
	else
		job_fail(j, "%s on port %s did not take the new firmware over its SD card: %s",
			 name_of(j), j->port,
			 j->result_error[0] ? j->result_error : "the check failed");
}

static void
on_stable(struct job *j)
{
	j->timer = sd_event_source_disable_unref(j->timer);
	if (j->sd && !j->sd_confirmed) {
		/* up after the bootloader's turn: ask the app what it runs */
		sd_confirm(j, boards_find_port(j->t->boards, j->port));
		return;
	}
	if (j->msc_node[0] && j->step == STEP_BOOT_CHECK) {
		struct board *b = boards_find_port(j->t->boards, j->port);

		if (b && marlin_mode(b->dev.mode)) {
			msc_check(j, b);
			return;
		}
	}
	record_success(j, j->step == STEP_ROLLBACK_BOOT_CHECK);
}

static void
on_boot_timeout(struct job *j)
{
	if (j->sd && j->sd_need_gone && board_present(j->t, j->port)) {
		job_fail(
		    j,
		    "%s on port %s did not restart after Klipper's reset command; firmware.bin "
		    "stays on its SD card for the next reset or power cycle",
		    name_of(j), j->port);
		return;
	}
	/* an app that came up and left more than once is boot-looping, even if it then stays
	 * away (a board with no bootloader to fall back to); one disappearance is an unplug */
	if (!board_present(j->t, j->port) && j->flickers < 2) {
		/* unplugged, not a boot failure: nothing is marked bad, and the boot check
		 * runs again when the board is back (the image was verified) */
		job_suspend(j,
			    "%s on port %s was unplugged during step %s and was not back within "
			    "%.1f s; the written image was verified. The boot check resumes when "
			    "it is plugged in again",
			    name_of(j), j->port, step_names[j->step],
			    j->t->cfg->boot_timeout_ms / 1000.0);
		return;
	}
	if (j->step == STEP_ROLLBACK_WAIT) {
		rollback_never_back(j);
		return;
	}
	boot_failed(j);
}

static void
begin_boot_check(struct job *j)
{
	struct board *b = boards_find_port(j->t->boards, j->port);

	set_step(j, j->rollback ? STEP_ROLLBACK_BOOT_CHECK : STEP_BOOT_CHECK);
	j->flickers = 0;
	arm_timer(j, j->t->cfg->boot_timeout_ms, on_boot_timeout);
	if (b && b->dev.mode == DEVICE_MODE_KLIPPER_APP)
		job_table_on_board(j->t, BOARDS_MODE_CHANGED, b);
}

/* A worker that failed: where the board really is decides what is said and what follows.
 * A board that left the bus lost nothing - the job resumes from its step when it is back;
 * one still here keeps what its bootloader reported. */
static void
on_reopen(struct job *j)
{
	struct board *b = boards_find_port(j->t->boards, j->port);

	if (b && bootloader_ready(b))
		step_write(j, b);
	else
		job_suspend(j,
			    "%s on port %s left its bootloader before it could be opened; the "
			    "job resumes when it is plugged in again",
			    name_of(j), j->port);
}

static void
write_failed(struct job *j)
{
	const char *err = j->result_error[0] ? j->result_error : "the worker failed";
	struct board *b = boards_find_port(j->t->boards, j->port);
	/* msc talks to Marlin, not a bootloader: its refusals are answers, not a slow start */
	bool msc = strcmp(j->rec.method, "msc") == 0;

	/* a bootloader that just enumerated may not answer yet (udev still applying the
	 * node's permissions, descriptors not readable): opening it again a moment later is
	 * what a person would do; nothing was written */
	if (!msc && !j->gone_in_worker && b && b->present && strcmp(j->result_step, "open") == 0 &&
	    j->open_retries < 2) {
		j->open_retries++;
		log_info("%s on port %s: %s; opening its bootloader again", name_of(j), j->port,
			 err);
		arm_timer(j, 500, on_reopen);
		return;
	}
	/* the backend saw the device vanish (a call of it failed with ENODEV: the worker's
	 * "gone") before udev's remove event reached this loop (the worker's exit and the
	 * uevent race): give the event a moment, then decide */
	if (!j->gone_in_worker && b && b->present && !j->gone_checked && j->result_gone) {
		/* a moment later udev's remove has arrived, or the board is still there and
		 * the failure stands */
		j->gone_checked = true;
		arm_timer(j, 1000, write_failed);
		return;
	}
	if (j->gone_in_worker || !b || !b->present) {
		char what[400], *stays;
		size_t n;

		/* the backend's "stays in ..." describes a board that is not there any more */
		(void)str_copy(what, sizeof(what), err);
		stays = strstr(what, "stays in");
		for (n = stays ? (size_t)(stays - what) : 0; n > 0; n--)
			if (what[n - 1] == ':' || what[n - 1] == ';') {
				what[n - 1] = 0;
				break;
			}
		job_suspend(j,
			    "%s on port %s was unplugged during step %s (%s); the job resumes "
			    "when it is plugged in again%s",
			    name_of(j), j->port, step_names[j->step], what,
			    j->rollback ? ", writing the known-good image back" : "");
		return;
	}
	job_fail(j, "%s on port %s: %s%s", name_of(j), j->port, err,
		 msc ? "; Marlin keeps running the firmware it had"
		 : j->step != STEP_ROLLBACK_WRITE && !strstr(err, "stays in")
		     ? "; the board stays in its bootloader and can be flashed again"
		     : "");
}

/* ---- the SD-card path (method "sd") ----------------------------------------------------
 *
 * Boards whose only bootloader is the stock SD one (SKR Pro, SKR 1.x, Mini E3 V1.2/V2) are
 * written while the Klipper application runs (flash/sdpath.c): firmware.bin on the card,
 * Klipper's reset, the bootloader programs it, and the application comes back on the same
 * port with the same chip serial. The boot check then waits for it, a confirm worker asks
 * it whether it runs the image (its dictionary, else FIRMWARE.CUR on the card) and cleans
 * the card, resets it once more so Klipper's host finds it unconfigured, and a last boot
 * check ends the job. */

/* The SD path for a board up in its application: the profile allows it, the stock
 * bootloader flashes from the card and Klipper knows how the card is wired; and no better
 * path is open: the profile lists sd before its USB methods, the bootloader request
 * already proved useless on this port, or no request can reach a USB bootloader here (no
 * soft ROM DFU, not an SDIO-wired board, where the SD path needs a power cycle, and no
 * Katapult ever seen on this port). */
static bool
sd_chosen(const struct job *j, const struct board *b)
{
	const struct config_profile *p = config_find_profile(j->t->cfg, j->profile);
	const struct catalog_sd_bus *bus = j->catalog ? catalog_sd_bus(j->catalog) : NULL;

	(void)b;
	if (!bus || !(j->catalog->paths & CATALOG_PATH_SD) || !method_allowed(j, "sd") ||
	    strv_has(j->t->no_card, j->port))
		return false;
	if (j->sd || strv_has(j->t->no_path, j->port))
		return true;
	for (size_t i = 0; p && i < p->n_methods; i++) {
		if (p->methods[i] == CONFIG_METHOD_SD)
			return true;
		if (p->methods[i] == CONFIG_METHOD_KATAPULT || p->methods[i] == CONFIG_METHOD_DFU ||
		    p->methods[i] == CONFIG_METHOD_LPC_DFU || p->methods[i] == CONFIG_METHOD_UF2)
			break; /* a USB bootloader the profile prefers */
	}
	return !bus->sdio && !(j->catalog->paths & CATALOG_PATH_ROM_DFU_SOFT) &&
	       !strv_has(j->t->kat_seen, j->port);
}

static void
sd_write(struct job *j, struct board *b)
{
	struct worker_plan plan;

	j->timer = sd_event_source_disable_unref(j->timer);
	j->stable = sd_event_source_disable_unref(j->stable);
	j->sd = true;
	j->sd_confirming = j->sd_confirmed = j->sd_need_gone = false;
	if (image_plan(j, b, "sd", "flash", &plan) < 0)
		return;
	start_write(j, b, "sd", &plan);
}

static void
sd_confirm(struct job *j, struct board *b)
{
	struct worker_plan plan;

	if (!b || !b->present || !b->dev.tty[0]) {
		job_suspend(j,
			    "%s on port %s left before its firmware could be confirmed; the job "
			    "resumes when it is plugged in again",
			    name_of(j), j->port);
		return;
	}
	if (image_plan(j, b, "sd", "confirm", &plan) < 0)
		return;
	j->gone_in_worker = false;
	j->sd_confirming = true;
	/* a rollback keeps its step name, so that a restart resumes the rollback */
	set_step(j, j->rollback ? STEP_ROLLBACK_WRITE : STEP_VERIFY);
	run_worker(j, &plan);
}

/* The write or the confirm worker ended; both end with Klipper's reset when they succeed. */
static void
sd_done(struct job *j, int status)
{
	struct board *b = boards_find_port(j->t->boards, j->port);
	const char *err = j->result_error[0] ? j->result_error : "the worker failed";
	bool confirming = j->sd_confirming;

	j->sd_confirming = false;
	if (status == 0 && j->result_ok) {
		j->sd_confirmed = confirming;
		/* the reset may have taken the old app off the bus while the worker ran */
		j->sd_need_gone = !j->gone_in_worker;
		begin_boot_check(j);
		return;
	}
	if (confirming && !j->result_error[0] && b && b->present && j->sd_asked++ == 0) {
		/* the confirm worker died without an answer (killed): the question is harmless
		 * to ask again, once */
		log_info("%s on port %s: the confirm step ended without an answer; asking again",
			 name_of(j), j->port);
		j->sd_need_gone = false;
		begin_boot_check(j);
		return;
	}
	if (!confirming && strcmp(j->result_step, "no-medium") == 0) {
		/* nothing was written: the bootloader request is the way left (Katapult, ROM or
		 * LPC DFU); the board may be away for the worker's reset, step_enter waits */
		log_info("%s on port %s: %s; trying its USB bootloader instead", name_of(j),
			 j->port, err);
		strv_add(&j->t->no_card, j->port);
		j->sd = false;
		step_enter(j);
		return;
	}
	if (strcmp(j->result_step, "power-cycle") == 0) {
		/* an SDIO-wired card: only a power cycle lets the bootloader read it (the
		 * confirm reset the board, which comes back with its old firmware) */
		sdio_needs_power(j, err);
		return;
	}
	/* a worker that reset the board after its failure: it comes back by itself, the
	 * failure is what it reported */
	if (!j->result_reset && (j->gone_in_worker || !b || !b->present)) {
		job_suspend(j,
			    "%s on port %s was unplugged during step %s (%s); the job resumes "
			    "when it is plugged in again",
			    name_of(j), j->port, step_names[j->step], err);
		return;
	}
	/* unless it left and is back already, it is still to leave or to come back; and it
	 * is held off like a failed board that stayed (job_finish sees it away) */
	if (j->result_reset && !(j->gone_in_worker && b && b->present)) {
		strv_add(&j->t->own_reset, j->port);
		if (j->gone_in_worker)
			strv_add(&j->t->own_gone, j->port);
		if (!strv_has(j->t->held_off, j->port)) {
			strv_add(&j->t->held_off, j->port);
			retry_later(j->t);
		}
	}
	job_fail(j, "%s on port %s: %s", name_of(j), j->port, err);
}

static void
child_done(struct job *j, int status)
{
	enum child_kind kind = j->child;

	j->child = CHILD_NONE;
	if (j->rescue && kind == CHILD_WORKER) {
		rescue_child_done(j, status);
		return;
	}
	if (kind == CHILD_GATE) {
		if (status != 0 || !j->result_ok) {
			job_fail(j, "%s",
				 j->result_error[0] ? j->result_error : "print-state check failed");
			return;
		}
		log_info("%s", j->result_error[0] ? j->result_error : "printer is idle");
		if (!j->rescue && !board_present(j->t, j->port)) {
			job_suspend(
			    j,
			    "%s on port %s was unplugged during step gate; nothing was sent "
			    "to it. The job resumes when it is plugged in again",
			    name_of(j), j->port);
			return;
		}
		step_stop_unit(j);
		return;
	}
	if (j->msc_checking) {
		msc_checked(j, status);
		return;
	}
	if (j->sd && (j->step == STEP_WRITE || j->step == STEP_VERIFY || j->step == STEP_LEAVE ||
		      j->step == STEP_ROLLBACK_WRITE)) {
		sd_done(j, status);
		return;
	}
	switch (j->step) {
	case STEP_ENTER:
	case STEP_ROLLBACK_WAIT:
		/* the touch itself cannot tell us anything: the board answers on udev */
		j->touched = true;
		set_step(j, j->rollback ? STEP_ROLLBACK_WAIT : STEP_WAIT_BOOTLOADER);
		arm_timer(j, j->t->cfg->bootloader_timeout_ms, NULL);
		{
			struct board *b = boards_find_port(j->t->boards, j->port);

			if (b && bootloader_ready(b))
				step_write(j, b);
			else if (b && b->present && b->dev.mode == DEVICE_MODE_KLIPPER_APP &&
				 j->saw_gone)
				on_board_in_job(j, BOARDS_MODE_CHANGED, b);
		}
		break;
	case STEP_WRITE:
	case STEP_VERIFY:
	case STEP_LEAVE:
	case STEP_ROLLBACK_WRITE:
		if (status != 0 || !j->result_ok) {
			write_failed(j);
			return;
		}
		begin_boot_check(j);
		break;
	case STEP_GATE:
	case STEP_STOP_UNIT:
	case STEP_WAIT_BOOTLOADER:
	case STEP_BOOT_CHECK:
	case STEP_ROLLBACK_BOOT_CHECK:
	case STEP_RESTORE:
	case STEP_POWER_CYCLE:
	case STEP_NEEDS_POWER:
	case _STEP_MAX:
	default:
		break;
	}
}

/* ---- SDIO boards: the power cycle after the SD-card path -------------------------------
 *
 * The stock bootloader of an Octopus, Octopus Pro, SKR 2 or SKR 3 reads the card over SDIO.
 * Once Klipper has driven the card in SPI mode (the SD-card path) the card stays in SPI mode
 * until it loses power, so the bootloader cannot read firmware.bin after a reset, only after
 * a power cycle (Klipper's scripts/spi_flash/board_defs.py marks these boards "skip_verify";
 * docs/SDCard_Updates.md). With the profile's power group the engine does that cycle itself
 * and verifies; without one, or when the cycle fails, the job waits in STEP_NEEDS_POWER: the
 * board shows "needs-power-cycle" in boards and status, the printer runs its old firmware
 * (its Klipper unit is started again), the job holds no slot, and it finishes by itself -
 * verified and recorded - when the board comes back after someone switched it off and on. */

/* Jobs that hold a slot: one waiting for a person to switch a board off and on does not. */
static size_t
active_jobs(const struct job_table *t)
{
	size_t n = 0;

	for (size_t i = 0; i < t->n_jobs; i++)
		n += t->jobs[i]->step != STEP_NEEDS_POWER;
	return n;
}

static void
park_needs_power(struct job *j, const char *reason)
{
	char why[400];
	struct log_fields f;

	j->timer = sd_event_source_disable_unref(j->timer);
	j->stable = sd_event_source_disable_unref(j->stable);
	j->power_gone = false;
	if (reason)
		(void)snprintf(why, sizeof(why), "the power cycle failed: %s", reason);
	else
		(void)snprintf(why, sizeof(why), "profile '%s' has no power group", j->profile);
	(void)snprintf(
	    j->power_why, sizeof(j->power_why),
	    "firmware.bin is on the SD card of %s on port %s, but its bootloader reads "
	    "the card over SDIO and can only after the board loses power, and %s. Switch "
	    "the board off and on (USB power too): skrflash then verifies and records "
	    "the flash by itself. It runs its old firmware until then",
	    name_of(j), j->port, why);
	set_step(j, STEP_NEEDS_POWER);
	fields(j, LOG_MID_NEEDS_POWER_CYCLE, &f);
	f.state = "needs-power-cycle";
	log_full(LOG_WARNING, 0, &f, "%s", j->power_why);
	/* the printer works on its old firmware meanwhile: Klipper runs again */
	if (j->stopped_unit[0]) {
		restore_unit(j->t, j->stopped_unit);
		j->stopped_unit[0] = 0;
		j->rec.stopped_units[0] = 0;
		persist(j);
	}
	{
		json_object *extra = json_object_new_object();

		json_object_object_add(extra, "state", json_object_new_string("needs-power-cycle"));
		json_object_object_add(extra, "why", json_object_new_string(j->power_why));
		emit(j, "job-needs-power-cycle", extra);
	}
	start_pending(j->t);
}

static void sdio_board_back(struct job *j, struct board *b);

/* The board is back in its application after a power cycle; it is verified once it stayed
 * up (a board that is switched on may flicker while its bootloader flashes). */
static void
on_power_back_stable(struct job *j)
{
	struct board *b = boards_find_port(j->t->boards, j->port);

	if (b && b->present && b->dev.mode == DEVICE_MODE_KLIPPER_APP && b->dev.tty[0])
		sdio_board_back(j, b);
}

static void
watch_power_back(struct job *j, struct board *b)
{
	if (!j->power_gone || j->power || j->stable || !b->present ||
	    b->dev.mode != DEVICE_MODE_KLIPPER_APP || !b->dev.tty[0])
		return;
	if (arm_stable(j, on_power_back_stable) < 0)
		sdio_board_back(j, b);
}

/* The power cycle reported success but the board never left, or never came back. */
static void
on_power_timeout(struct job *j)
{
	char msg[300];

	if (!j->power_gone)
		(void)snprintf(msg, sizeof(msg),
			       "it reported success, but %s on port %s never left the USB bus: "
			       "check that the power group switches this board",
			       name_of(j), j->port);
	else
		(void)snprintf(msg, sizeof(msg),
			       "%s on port %s was not back in its application within %.1f s",
			       name_of(j), j->port, j->t->cfg->boot_timeout_ms / 1000.0);
	park_needs_power(j, msg);
}

static void
on_power_done(void *userdata, int r, const char *message)
{
	struct job *j = userdata;
	struct log_fields f;

	j->power = power_cycle_free(j->power);
	if (r < 0) {
		park_needs_power(j, message);
		return;
	}
	fields(j, LOG_MID_POWER_CYCLE, &f);
	f.state = "power-cycle";
	log_full(LOG_NOTICE, 0, &f, "%s", message);
	/* the board must have left and come back: the boot wait starts now */
	arm_timer(j, j->t->cfg->boot_timeout_ms, on_power_timeout);
	{
		struct board *b = boards_find_port(j->t->boards, j->port);

		if (b)
			watch_power_back(j, b);
	}
}

static void
power_start(struct job *j)
{
	const struct config_profile *p = config_find_profile(j->t->cfg, j->profile);
	struct power_request req = {0};
	int r;

	j->timer = sd_event_source_disable_unref(j->timer);
	j->power_pending = false;
	if (!p || !p->has_power) { /* the configuration was reloaded meanwhile */
		park_needs_power(j, NULL);
		return;
	}
	j->power_gone = false;
	req.power = &p->power;
	req.board = name_of(j);
	req.port = j->port;
	req.job = j->job_id;
	req.moonraker_url = j->moonraker[0] ? j->moonraker : NULL;
	req.moonraker_key_file = j->moonraker_key_file;
	req.klipper_stopped = j->stopped_unit[0] != 0;
	r = power_cycle_start(j->t->loop, &req, on_power_done, j, &j->power);
	if (r < 0) {
		char msg[300];

		(void)snprintf(msg, sizeof(msg), "cannot start it: %s", strerror(-r));
		park_needs_power(j, msg);
	}
}

/* firmware.bin is on the card of an SDIO board: switch it off and on. The confirm that found
 * it reset the board; the cycle starts once it is back, so that its leaving is the power's. */
static void
step_power_cycle(struct job *j)
{
	struct board *b = boards_find_port(j->t->boards, j->port);

	set_step(j, STEP_POWER_CYCLE);
	if (b && b->present && b->dev.mode == DEVICE_MODE_KLIPPER_APP && b->dev.tty[0]) {
		power_start(j);
		return;
	}
	j->power_pending = true;
	arm_timer(j, j->t->cfg->boot_timeout_ms, power_start);
}

/* Board events while the power goes and comes (STEP_POWER_CYCLE) or while the job waits for
 * a person (STEP_NEEDS_POWER). */
static void
on_board_power(struct job *j, enum boards_event ev, struct board *b)
{
	if (ev == BOARDS_GONE || ev == BOARDS_LEFT) {
		/* while waiting for a person, only a board away past the leave grace was switched
		 * off: Klipper, started again meanwhile, resets a board it finds configured, and
		 * that flicker is no power cycle */
		if (ev == BOARDS_LEFT || (j->step == STEP_POWER_CYCLE && !j->power_pending))
			j->power_gone = true;
		j->stable = sd_event_source_disable_unref(j->stable);
		return;
	}
	if (j->power_pending && b->present && b->dev.mode == DEVICE_MODE_KLIPPER_APP &&
	    b->dev.tty[0]) {
		power_start(j);
		return;
	}
	watch_power_back(j, b);
}

/* The board is back after a power cycle: the boot check, then the engine's confirm step
 * (flash/sdpath.c: does the app run the image, clean the card). After the power cycle the
 * engine did, the Klipper unit is still stopped; after a person's, Klipper ran meanwhile:
 * the print gate and the unit first (step_enter then comes here through power_verify). */
static void
sdio_board_back(struct job *j, struct board *b)
{
	j->timer = sd_event_source_disable_unref(j->timer);
	if (j->step == STEP_NEEDS_POWER) {
		j->power_verify = true;
		step_gate(j);
		return;
	}
	sdio_verify_now(j, b);
}

static void
sdio_verify_now(struct job *j, struct board *b)
{
	j->power_verify = false;
	if (!b || !b->present || b->dev.mode != DEVICE_MODE_KLIPPER_APP || !b->dev.tty[0]) {
		park_needs_power(j, "the board left again before its firmware could be checked");
		return;
	}
	j->sd = true;
	j->sd_confirmed = j->sd_need_gone = false;
	j->step = STEP_WRITE;
	begin_boot_check(j);
}

/* The confirm found firmware.bin still waiting on an SDIO card: one power cycle through the
 * profile's power group, or the wait for a person. */
static void
sdio_needs_power(struct job *j, const char *err)
{
	const struct config_profile *p = config_find_profile(j->t->cfg, j->profile);
	struct log_fields f;

	fields(j, NULL, &f);
	log_full(LOG_INFO, 0, &f, "%s", err);
	if (p && p->has_power && j->power_cycles++ == 0) {
		step_power_cycle(j);
		return;
	}
	park_needs_power(j, j->power_cycles > 1 ? "the board came back with its old firmware "
						  "(is it powered over USB too?)"
						: NULL);
}

/* The boards of the jobs that wait for a power cycle: their "why", NULL for others. */
const char *
job_table_needs_power(const struct job_table *t, const char *port)
{
	for (size_t i = 0; i < t->n_jobs; i++)
		if (t->jobs[i]->step == STEP_NEEDS_POWER && strcmp(t->jobs[i]->port, port) == 0)
			return t->jobs[i]->power_why;
	return NULL;
}

/* ---- triggers --------------------------------------------------------------------------- */

/* What a job for j would do, from the same checks the job makes, without doing any of it:
 * the method, the units it would stop, the print state now. The print state is asked here,
 * on the loop, because a dry run is one explicit request that waits for its answer anyway;
 * the query is bounded (2 s). */
static json_object *
plan_json(const struct job *j, const struct board *b)
{
	json_object *o = json_object_new_object(), *units = json_object_new_array();
	struct holder *h = NULL;
	struct moonraker_state ms;
	char **names = NULL, *reason = NULL, state[640];
	struct stat st;
	size_t n = 0;

	json_object_object_add(o, "board", json_object_new_string(name_of(j)));
	json_object_object_add(o, "port", json_object_new_string(j->port));
	json_object_object_add(o, "to",
			       json_object_new_string(j->version[0] ? j->version : j->sha));
	json_object_object_add(o, "from",
			       json_object_new_string(b->installed_version[0] ? b->installed_version
									      : b->installed_sha));
	json_object_object_add(
	    o, "method",
	    json_object_new_string(
		bootloader_mode(b->dev.mode) ? worker_method_for_mode(b->dev.mode)
		: b->dev.mode == DEVICE_MODE_KLIPPER_APP && sd_chosen(j, b)
		    ? "sd (firmware.bin on its SD card, through the running Klipper)"
		    : "bootloader request (1200 baud), then Katapult, ROM DFU or BOOTSEL, "
		      "whichever the board enters"));
	if (b->dev.mode == DEVICE_MODE_KLIPPER_APP && b->dev.tty[0] &&
	    holder_find(NULL, b->dev.tty, stat(b->dev.tty, &st) == 0 ? st.st_rdev : 0, &h, &n) >
		0) {
		int r = units_plan(h, n, j->stop_globs, strv_length(j->stop_globs), b->dev.tty,
				   &names, &reason);
		holder_free(h, n);
		if (r < 0)
			json_object_object_add(
			    o, "gates",
			    json_object_new_string(reason ? reason : "its tty is in use"));
		for (size_t i = 0; r >= 0 && names && names[i]; i++)
			json_object_array_add(units, json_object_new_string(names[i]));
		strv_free(names);
		free(reason);
	}
	json_object_object_add(o, "stop_units", units);
	if (j->octoprint[0]) {
		(void)snprintf(state, sizeof(state),
			       "asked at the flash: OctoPrint at %s (its job state; a connection "
			       "to this board is released for the flash and given back after it)",
			       j->octoprint);
	} else if (!j->moonraker[0]) {
		(void)snprintf(state, sizeof(state), "not checked (no Moonraker for this profile)");
	} else {
		char key[MOONRAKER_KEY_MAX + 1] = "";

		if (j->moonraker_key_file[0])
			(void)moonraker_read_key(j->moonraker_key_file, key, sizeof(key));
		(void)moonraker_query(j->moonraker, key[0] ? key : NULL, 2000, &ms);
		if (ms.error)
			(void)snprintf(state, sizeof(state), "unknown: %s does not answer (%s)%s",
				       j->moonraker, ms.detail,
				       j->moonraker_fail_open ? "; flashing anyway (fail-open)"
							      : "; the flash would wait");
		else
			(void)snprintf(state, sizeof(state), "%s (%s)", ms.state,
				       moonraker_print_to_string(ms.print));
	}
	json_object_object_add(o, "print_state", json_object_new_string(state));
	return o;
}

static enum job_step
step_from_name(const char *name)
{
	for (int i = 0; i < _STEP_MAX; i++)
		if (strcmp(step_names[i], name) == 0)
			return (enum job_step)i;
	return STEP_GATE; /* "plan": nothing was done yet */
}

/* Resume a job from the step its row names, after asking the board what it runs: a board
 * up in its application after a verified write is checked for boot, never written again;
 * a board in its bootloader gets the write (again); anything before the write starts over
 * at the gate, since nothing was written. */
static void
resume_at(struct job *j, struct board *b)
{
	enum job_step s = step_from_name(j->rec.step);
	bool app = b->dev.mode == DEVICE_MODE_KLIPPER_APP;

	j->rollback =
	    s == STEP_ROLLBACK_WAIT || s == STEP_ROLLBACK_WRITE || s == STEP_ROLLBACK_BOOT_CHECK;
	if (j->rollback && !j->lkg[0]) {
		job_fail(j, "%s on port %s: the known-good image to roll back to is not recorded",
			 name_of(j), j->port);
		return;
	}
	/* the SD path after its write: the app it is up in is asked what it runs (the
	 * confirm step is idempotent); before it, the write starts over at the gate */
	j->sd = strcmp(j->rec.method, "sd") == 0;
	if ((s == STEP_POWER_CYCLE || s == STEP_NEEDS_POWER) && app) {
		/* firmware.bin waited for a power cycle when the daemon stopped: whether one came
		 * meanwhile, the running app tells (the confirm), after the gate and the unit */
		j->sd = true;
		j->power_verify = true;
		step_gate(j);
		return;
	}
	if (j->sd && app && s == STEP_VERIFY)
		s = STEP_BOOT_CHECK;
	if ((s == STEP_LEAVE || s == STEP_BOOT_CHECK || s == STEP_ROLLBACK_BOOT_CHECK) && app) {
		j->step = j->rollback ? STEP_ROLLBACK_WRITE : STEP_WRITE;
		begin_boot_check(j);
		return;
	}
	if (bootloader_ready(b)) {
		if (j->rollback)
			j->step = STEP_ROLLBACK_WAIT;
		step_write(j, b);
		return;
	}
	if (j->rollback) {
		start_rollback(j, b);
		return;
	}
	step_gate(j);
}

enum start_flags {
	START_MANUAL = 1 << 0, /* skrflashctl flash */
	START_FORCE = 1 << 1,  /* --force: an image marked bad for this board too */
	START_RESUME = 1 << 2, /* an unfinished job of the state database */
};

static void
push_pending(struct job_table *t, const char *port)
{
	for (size_t i = 0; i < t->n_pending; i++)
		if (strcmp(t->pending[i], port) == 0)
			return;
	t->pending = xreallocarray(t->pending, t->n_pending + 1, sizeof(*t->pending));
	t->pending[t->n_pending++] = xstrdup(port);
}

/* What the job installs: the resumed job's image, the one asked for, or the profile's. */
static int
pick_image(struct job_table *t, struct board *b, const struct config_profile *p, unsigned flags,
	   const char *sha, const struct store_job *unfinished, struct store_desired *d,
	   char **ret_message)
{
	memset(d, 0, sizeof(*d));
	if (flags & START_RESUME) {
		(void)str_copy(d->sha, sizeof(d->sha), unfinished->sha);
		return 0;
	}
	if (sha) {
		(void)str_copy(d->sha, sizeof(d->sha), sha);
	} else if (store_desired_get(t->store, p->name, d) < 0) {
		*ret_message = xasprintf("no firmware queued for profile '%s'", p->name);
		return -ENOENT;
	}
	if (strcmp(b->installed_sha, d->sha) == 0) {
		*ret_message = xasprintf("%s on port %s already runs %.12s", board_display_name(b),
					 b->dev.port, d->sha);
		return -EALREADY;
	}
	if (!(flags & START_FORCE) && store_bad_is_marked(t->store, b->id, d->sha)) {
		*ret_message = xasprintf(
		    "firmware %.12s did not boot on %s before; not flashing it again (`skrflashctl "
		    "retry %s` allows it again, `skrflashctl flash --force %s` flashes it anyway)",
		    d->sha, board_display_name(b), b->dev.port, b->dev.port);
		return -ECANCELED;
	}
	return 0;
}

/* Marlin <-> Klipper is a deliberate step (issue 16): an image of the other firmware family
 * than the board runs is refused unless the profile allows the migration. The family of the
 * board is its mode (a bootloader says nothing); of the image, Marlin's M115 literal or
 * Klipper's dictionary (its version). */
static bool
migration_refused(const struct board *b, const struct config_profile *p, bool marlin_image,
		  const char *klipper_version, const char *file, char **ret_message)
{
	bool board_marlin = marlin_mode(b->dev.mode);
	bool board_klipper = b->dev.mode == DEVICE_MODE_KLIPPER_APP;
	bool image_klipper = !marlin_image && klipper_version && klipper_version[0];

	if (p->allow_migration)
		return false;
	if (board_marlin && image_klipper) {
		*ret_message = xasprintf(
		    "refusing to flash %s on port %s: it runs Marlin and %s is a Klipper build; "
		    "changing the firmware family is a deliberate step: set allow_migration = "
		    "true; in profile '%s' (with \"msc\" in its methods) and queue it again",
		    board_display_name(b), b->dev.port, file, p->name);
		return true;
	}
	if (board_klipper && marlin_image) {
		*ret_message = xasprintf(
		    "refusing to flash %s on port %s: it runs Klipper and %s is a Marlin build; "
		    "changing the firmware family is a deliberate step: set allow_migration = "
		    "true; in profile '%s' and queue it again",
		    board_display_name(b), b->dev.port, file, p->name);
		return true;
	}
	return false;
}

/* The image a new job would write, checked before anything touches the board. */
struct job_image {
	struct store_desired d;
	struct verdict v; /* accepted (released with verdict_done) */
	bool marlin;	  /* a Marlin build, which mi names */
	struct marlin_info mi;
};

/* Never touch a board with an image that does not fit it: the stored file intact, accepted
 * for the board (image/validate.c), of the firmware family the profile allows. 0 with
 * img->v to release, or -errno with *ret_message. */
static int
check_image(struct job_table *t, const struct board *b, const struct config_profile *p,
	    struct job_image *img, char **ret_message)
{
	struct validate_target target = {0};
	uint8_t *data = NULL;
	size_t size = 0;
	int r = read_stored_firmware(t, img->d.sha, NULL, &data, &size);

	if (r == -EBADMSG) {
		*ret_message = xasprintf("firmware %.12s for profile '%s' in the store no longer "
					 "matches its sha256 (disk corruption?); queue the file "
					 "again",
					 img->d.sha, p->name);
		return r;
	}
	if (r < 0) {
		*ret_message =
		    xasprintf("firmware %.12s for profile '%s' is missing from the store",
			      img->d.sha, p->name);
		return r;
	}
	target.board = b->catalog;
	target.app_start = config_profile_app_start(p);
	target.interface = p->interface;
	target.file_name = img->d.source[0] ? img->d.source : img->d.sha;
	r = validate_image(data, size, &target, &img->v);
	img->marlin = marlin_image_info(data, size, &img->mi) == 0;
	free(data);
	if (r >= 0 && img->v.accepted &&
	    migration_refused(b, p, img->marlin, img->v.version, target.file_name, ret_message)) {
		verdict_done(&img->v);
		return -EPERM;
	}
	if (r < 0 || !img->v.accepted) {
		*ret_message = xasprintf("refusing to flash %s on port %s: %s",
					 board_display_name(b), b->dev.port,
					 r < 0		    ? strerror(-r)
					 : img->v.n_reasons ? img->v.reasons[0]
							    : "refused");
		if (r >= 0)
			verdict_done(&img->v);
		return -EINVAL;
	}
	return 0;
}

/* What every job takes from its profile for the gates: fail-open, the API key, the units
 * that may hold the board's tty. */
static void
gates_from_profile(struct job *j, const struct config_profile *p)
{
	j->moonraker_fail_open = p->moonraker_fail_open;
	if (p->moonraker_api_key_file)
		(void)str_copy(j->moonraker_key_file, sizeof(j->moonraker_key_file),
			       p->moonraker_api_key_file);
	j->stop_globs = xnew_array(char *, p->n_stop_units + 1);
	for (size_t i = 0; i < p->n_stop_units; i++)
		j->stop_globs[i] = xstrdup(p->stop_units[i]);
}

/* The gates of a flash with profile p: who is asked for the print state (Moonraker, or
 * OctoPrint when it is the host), and the units that may hold the tty. */
static void
flash_gates(struct job *j, const struct config_profile *p)
{
	if (p->moonraker_url) {
		(void)str_copy(j->moonraker, sizeof(j->moonraker), p->moonraker_url);
	} else if (p->implicit) {
		/* no configuration: Moonraker at its default address gates the flash whenever
		 * one listens there; only a refused connection (none on this host) skips it */
		(void)str_copy(j->moonraker, sizeof(j->moonraker), DEFAULT_MOONRAKER);
		j->moonraker_optional = true;
	} else {
		for (size_t i = 0; i < p->n_stop_units; i++)
			if (strncmp(p->stop_units[i], "klipper", 7) == 0)
				(void)str_copy(j->moonraker, sizeof(j->moonraker),
					       DEFAULT_MOONRAKER);
	}
	if (p->host == CONFIG_HOST_OCTOPRINT) {
		/* OctoPrint is this board's host: it alone is asked, never Moonraker */
		j->moonraker[0] = 0;
		(void)str_copy(j->octoprint, sizeof(j->octoprint), p->octoprint_url);
		(void)str_copy(j->octoprint_key_file, sizeof(j->octoprint_key_file),
			       p->octoprint_api_key_file);
	}
	gates_from_profile(j, p);
}

/* A flash job for board b with the checked image (resuming `unfinished` when given), not
 * recorded or started yet. */
static struct job *
flash_job_new(struct job_table *t, const struct board *b, const struct config_profile *p,
	      const struct job_image *img, const struct store_job *unfinished)
{
	struct job *j = xnew(struct job);

	j->t = t;
	j->out_fd = -1;
	(void)str_copy(j->port, sizeof(j->port), b->dev.port);
	(void)str_copy(j->serial, sizeof(j->serial), b->serial);
	(void)str_copy(j->profile, sizeof(j->profile), p->name);
	(void)str_copy(j->sha, sizeof(j->sha), img->d.sha);
	/* Marlin's build as M115 names it ("Marlin 2.1.2.1"), Klipper's from its dictionary */
	(void)str_copy(j->version, sizeof(j->version),
		       img->marlin ? img->mi.firmware : img->v.version);
	j->marlin_image = img->marlin;
	if (unfinished && unfinished->lkg[0]) {
		(void)str_copy(j->lkg, sizeof(j->lkg), unfinished->lkg);
	} else if (b->known_good_sha[0] && strcmp(b->known_good_sha, img->d.sha) != 0) {
		char *lkg = NULL;

		if (store_firmware_path(t->store, b->known_good_sha, &lkg) >= 0)
			(void)str_copy(j->lkg, sizeof(j->lkg), b->known_good_sha);
		free(lkg);
	}
	j->catalog = b->catalog;
	j->app_start = config_profile_app_start(p);
	j->interface = p->interface;
	j->resumed = unfinished != NULL;
	flash_gates(j, p);
	return j;
}

/* The job's new row in the history; its id names the job. 0, or -errno with *ret_message. */
static int
job_begin_row(struct job *j, char **ret_message)
{
	int r = store_job_begin(j->t->store, &j->rec);

	if (r < 0) {
		*ret_message = xasprintf("cannot record the job: %s", strerror(-r));
		return r;
	}
	(void)snprintf(j->job_id, sizeof(j->job_id), "%lld", (long long)j->rec.id);
	return 0;
}

/* A flash job's row: the unfinished one it resumes, or a new one. 0, or -errno with
 * *ret_message. */
static int
flash_job_row(struct job *j, const struct board *b, const struct store_job *unfinished,
	      char **ret_message)
{
	if (unfinished) {
		j->rec = *unfinished;
		(void)str_copy(j->rec.result, sizeof(j->rec.result), "running");
		j->rec.error[0] = 0;
		j->bytes = j->rec.bytes;
		(void)snprintf(j->job_id, sizeof(j->job_id), "%lld", (long long)j->rec.id);
		return 0;
	}
	j->rec.board_id = b->id;
	(void)str_copy(j->rec.port, sizeof(j->rec.port), j->port);
	(void)str_copy(j->rec.profile, sizeof(j->rec.profile), j->profile);
	(void)str_copy(j->rec.sha, sizeof(j->rec.sha), j->sha);
	(void)str_copy(j->rec.step, sizeof(j->rec.step), "plan");
	return job_begin_row(j, ret_message);
}

/* The recorded job takes its place in the table; watchers hear of it. */
static void
job_started(struct job *j)
{
	struct job_table *t = j->t;

	t->jobs = xreallocarray(t->jobs, t->n_jobs + 1, sizeof(struct job *));
	t->jobs[t->n_jobs++] = j;
	emit(j, "job-started", NULL);
}

/* A flash job for board b, when it may start: the profile's (or the given, or the resumed)
 * image, checked; a slot free; the job recorded and started (or, for a dry run, only its
 * plan). 0, or -errno with *ret_message where there is something to say. */
static int
prepare_job(struct job_table *t, struct board *b, unsigned flags, const char *sha,
	    const struct store_job *unfinished, char **ret_message)
{
	const struct config_profile *p = config_find_profile(t->cfg, b->profile);
	const struct store_job *resumed = (flags & START_RESUME) ? unfinished : NULL;
	struct job_image img;
	struct log_fields f;
	struct job *j;
	int r;

	if (find_job(t, b->dev.port))
		return -EBUSY;
	if (!p) {
		*ret_message = xasprintf("%s on port %s matches no profile", board_display_name(b),
					 b->dev.port);
		return -ENOENT;
	}
	r = pick_image(t, b, p, flags, sha, unfinished, &img.d, ret_message);
	if (r < 0)
		return r;
	if (!b->catalog) {
		*ret_message =
		    xasprintf("cannot tell which board is on port %s (%s); set board = "
			      "\"...\" in its profile",
			      b->dev.port, b->candidates[0] ? b->candidates : "unknown MCU");
		return -ENXIO;
	}
	r = check_image(t, b, p, &img, ret_message);
	if (r < 0)
		return r;
	if (!t->dry_run && active_jobs(t) >= t->cfg->max_jobs) {
		verdict_done(&img.v);
		push_pending(t, b->dev.port);
		*ret_message = xasprintf("%zu jobs running; %s on port %s waits for a free slot",
					 t->n_jobs, board_display_name(b), b->dev.port);
		return -EAGAIN;
	}
	j = flash_job_new(t, b, p, &img, resumed);
	verdict_done(&img.v);
	if (t->dry_run) {
		*t->dry_run = plan_json(j, b);
		job_free(j);
		return 0;
	}
	r = flash_job_row(j, b, resumed, ret_message);
	if (r < 0) {
		job_free(j);
		return r;
	}
	fields(j, LOG_MID_FLASH_STARTED, &f);
	log_full(LOG_NOTICE, 0, &f, "%s %s on port %s with %.12s (profile '%s', job %s)",
		 resumed ? "resuming flash of" : "flashing", name_of(j), j->port, j->sha,
		 j->profile, j->job_id);
	job_started(j);
	if (resumed)
		resume_at(j, b);
	else
		step_gate(j);
	return 0;
}

static void
try_start(struct job_table *t, struct board *b, unsigned flags, const char *sha, const char *why)
{
	char *msg = NULL;
	int r = prepare_job(t, b, flags, sha, NULL, &msg);

	if (r == -EALREADY || r == -ENOENT)
		log_info("nothing to flash (%s): %s", why, msg ? msg : "nothing to do");
	else if (r < 0 && r != -EBUSY && msg)
		log_warn("%s", msg);
	free(msg);
}

/* Ports that asked for a slot stay asked for while their board is briefly away (a storm,
 * a re-enumeration): they are dropped only once started or gone for good (LEFT). */
static void
start_pending(struct job_table *t)
{
	size_t i = 0;

	while (i < t->n_pending && active_jobs(t) < t->cfg->max_jobs) {
		char *port = t->pending[i];
		struct board *b = boards_find_port(t->boards, port);

		if (!b || !b->present || find_job(t, port)) {
			i++;
			continue;
		}
		memmove(t->pending + i, t->pending + i + 1,
			(t->n_pending - i - 1) * sizeof(*t->pending));
		t->n_pending--;
		try_start(t, b, START_MANUAL, NULL, "queued job");
		free(port);
	}
}

static void
drop_pending(struct job_table *t, const char *port)
{
	for (size_t i = 0; i < t->n_pending; i++) {
		if (strcmp(t->pending[i], port) != 0)
			continue;
		free(t->pending[i]);
		memmove(t->pending + i, t->pending + i + 1,
			(t->n_pending - i - 1) * sizeof(*t->pending));
		t->n_pending--;
		return;
	}
}

/* The board came back as its application after the bootloader request. A power cycle in
 * between looks the same as a board without a USB bootloader, so the request is sent once
 * more before saying so. */
static void
app_after_touch(struct job *j)
{
	if (j->touches++ == 0) {
		log_info("%s on port %s came back as the Klipper app after the bootloader request; "
			 "sending it once more",
			 name_of(j), j->port);
		j->saw_gone = false;
		step_enter(j);
		return;
	}
	strv_add(&j->t->no_path, j->port);
	{
		struct board *b = boards_find_port(j->t->boards, j->port);

		/* no USB bootloader answers: its stock SD bootloader is the way left */
		if (b && b->present && b->dev.tty[0] && sd_chosen(j, b)) {
			log_info("%s on port %s has no USB bootloader that answers the request; "
				 "writing firmware.bin to its SD card instead",
				 name_of(j), j->port);
			sd_write(j, b);
			return;
		}
	}
	job_fail(j,
		 "%s on port %s came back as the Klipper app after the 1200-baud request, twice: "
		 "it has no USB bootloader path skrflash can use (nothing was written; the board "
		 "runs its old firmware). Install Katapult, use the SD card (firmware.bin), or "
		 "enter ROM DFU with BOOT0",
		 name_of(j), j->port);
}

/* The request took the board to a bootloader skrflash has no writer for (every bootloader
 * mode has a backend since LPC DFU got one; kept for the next kind): say exactly that, and
 * how to get the board back - it sits there until reset, with its old firmware intact. */
static const char *
mode_title(enum device_mode m)
{
	return m == DEVICE_MODE_LPC_DFU ? "LPC DFU" : device_mode_to_string(m);
}

static void
unreachable_bootloader(struct job *j, const struct board *b)
{
	strv_add(&j->t->no_path, j->port);
	job_fail(j,
		 "%s on port %s went to %s after the 1200-baud request: it has no Katapult, and "
		 "skrflash cannot write over %s yet. Nothing was written; its firmware is "
		 "intact%s. Press its reset button (or unplug and plug it) to run Klipper again, "
		 "then install Katapult, or use the SD card (firmware.bin)",
		 name_of(j), j->port, mode_title(b->dev.mode), mode_title(b->dev.mode),
		 j->stopped_unit[0] ? " and its Klipper unit is started again" : "");
}

static void
on_board_waiting(struct job *j, enum boards_event ev, struct board *b)
{
	if (ev == BOARDS_GONE || ev == BOARDS_LEFT) {
		/* an app that flickers away again is boot-looping (a torn image): it ends in
		 * its bootloader, which is what we wait for */
		j->stable = sd_event_source_disable_unref(j->stable);
		j->saw_gone = true;
		return;
	}
	if (!b->present)
		return;
	/* back on the bus after it left: whatever it does next (its bootloader, the app after
	 * a power cycle) gets the full wait again - a few times, a board that keeps coming and
	 * going still ends */
	if ((ev == BOARDS_APPEARED || ev == BOARDS_MODE_CHANGED) && j->saw_gone && j->rearms < 4 &&
	    j->timer && j->pid <= 0) {
		j->rearms++;
		arm_timer(j, j->t->cfg->bootloader_timeout_ms, NULL);
	}
	if (bootloader_mode(b->dev.mode)) {
		if (j->pid <= 0 && bootloader_ready(b))
			step_write(j, b);
		return;
	}
	/* a bootloader without a backend (bootloader_mode() took those with one) */
	if (j->touched && j->pid <= 0 && device_mode_is_bootloader(b->dev.mode)) {
		unreachable_bootloader(j, b);
		return;
	}
	if (ev == BOARDS_UPDATED && !(b->dev.mode == DEVICE_MODE_KLIPPER_APP && b->dev.tty[0] &&
				      j->pid <= 0 && (!j->touched || j->saw_gone)))
		return;
	if (b->dev.mode != DEVICE_MODE_KLIPPER_APP || j->pid > 0)
		return;
	if (!j->touched) {
		/* it was away when the request was due: send it now that it is here */
		if (b->dev.tty[0])
			step_enter(j);
		return;
	}
	/* only an app that stays up came back: a boot loop shows the app for a moment; once it
	 * stayed up, it counts as having come back */
	if (j->saw_gone && !j->stable && arm_stable(j, app_after_touch) < 0)
		app_after_touch(j);
}

/* Board events during the boot check: the app must come up as what was written and stay
 * up; a flicker or a fall back into the bootloader is a failed boot. */
static void
on_board_boot_check(struct job *j, enum boards_event ev, struct board *b)
{
	if (ev == BOARDS_GONE || ev == BOARDS_LEFT) {
		/* the SD path's reset: the old app leaves, that is no flicker */
		if (j->sd_need_gone) {
			j->sd_need_gone = false;
			j->stable = sd_event_source_disable_unref(j->stable);
			j->cold_boot |= ev == BOARDS_LEFT;
			return;
		}
		/* up and gone again: a boot loop, not a boot */
		if (j->stable)
			j->flickers++;
		j->stable = sd_event_source_disable_unref(j->stable);
		/* gone past the leave grace is a power cycle, not a flicker: the board
		 * boots afresh when it is back, with a full boot timeout again */
		j->cold_boot |= ev == BOARDS_LEFT;
		return;
	}
	if (b->present && j->cold_boot) {
		j->cold_boot = false;
		arm_timer(j, j->t->cfg->boot_timeout_ms, on_boot_timeout);
	}
	/* msc: the Marlin that got M997 resets 1.5 s later; until its enumeration has
	 * left, nothing says what the bootloader did */
	if (j->msc_node[0] && b->present && strcmp(b->dev.usb_node, j->msc_node) == 0)
		return;
	if ((j->msc_node[0] || j->marlin_image) && marlin_mode(b->dev.mode) && b->dev.tty[0] &&
	    b->present && !j->stable && j->pid <= 0) {
		(void)arm_stable(j, on_stable);
		return;
	}
	if (b->dev.mode == DEVICE_MODE_KLIPPER_APP && b->present && !j->stable && j->marlin_image) {
		job_fail(j,
			 "%s on port %s came back as a Klipper application, expected the "
			 "Marlin build %s",
			 name_of(j), j->port, j->sha);
		return;
	}
	if (j->sd_need_gone)
		return; /* still the app that was told to reset */
	if (b->dev.mode == DEVICE_MODE_KLIPPER_APP && b->present && !j->stable) {
		if (j->catalog && strcasecmp(b->dev.product, j->catalog->mcu->name) != 0) {
			job_fail(j, "%s on port %s came back as a %s application, expected %s",
				 name_of(j), j->port, b->dev.product, j->catalog->mcu->name);
			return;
		}
		(void)arm_stable(j, on_stable);
		return;
	}
	if (bootloader_mode(b->dev.mode) && b->present && ev != BOARDS_UPDATED) {
		/* fell back into its bootloader: the app did not start */
		j->timer = sd_event_source_disable_unref(j->timer);
		boot_failed(j);
	}
}

static void
on_board_in_job(struct job *j, enum boards_event ev, struct board *b)
{
	if (j->rescue) {
		rescue_on_board(j, ev, b);
		return;
	}
	switch (j->step) {
	case STEP_WAIT_BOOTLOADER:
	case STEP_ENTER:
	case STEP_ROLLBACK_WAIT:
		on_board_waiting(j, ev, b);
		return;
	case STEP_BOOT_CHECK:
	case STEP_ROLLBACK_BOOT_CHECK:
		on_board_boot_check(j, ev, b);
		return;
	case STEP_WRITE:
	case STEP_VERIFY:
	case STEP_LEAVE:
	case STEP_ROLLBACK_WRITE:
		if ((ev == BOARDS_GONE || ev == BOARDS_LEFT) && j->pid > 0)
			j->gone_in_worker = true;
		return;
	case STEP_POWER_CYCLE:
	case STEP_NEEDS_POWER:
		on_board_power(j, ev, b);
		return;
	case STEP_GATE:
	case STEP_STOP_UNIT:
	case STEP_RESTORE:
	case _STEP_MAX:
	default:
		return;
	}
}

/* Marks the board's current bootloader visit as handled; false if it already was. A visit
 * ends when the board leaves the bootloader or the port. */
static bool
bootloader_visit_new(struct job_table *t, const char *port)
{
	if (strv_has(t->bl_seen, port))
		return false;
	strv_add(&t->bl_seen, port);
	return true;
}

static bool
strv_has(char **v, const char *s)
{
	for (size_t i = 0; v && v[i]; i++)
		if (strcmp(v[i], s) == 0)
			return true;
	return false;
}

static void
strv_add(char ***v, const char *s)
{
	size_t n = strv_length(*v);

	if (strv_has(*v, s))
		return;
	*v = xreallocarray(*v, n + 2, sizeof(**v));
	(*v)[n] = xstrdup(s);
	(*v)[n + 1] = NULL;
}

static void
strv_drop(char ***v, const char *s)
{
	size_t n = strv_length(*v);

	for (size_t i = 0; i < n; i++) {
		if (strcmp((*v)[i], s) != 0)
			continue;
		free((*v)[i]);
		memmove(&(*v)[i], &(*v)[i + 1], (n - i) * sizeof(**v));
		return;
	}
}

/* ---- reconcile: what each present board runs against what it should run ---------------- */

/* A board can be acted on: up in its application with its tty, or in a usable bootloader. */
static bool
board_actionable(const struct board *b)
{
	return b->present &&
	       ((b->dev.mode == DEVICE_MODE_KLIPPER_APP && b->dev.tty[0]) || bootloader_ready(b));
}

static void
reconcile_board(struct job_table *t, struct board *b, const char *why)
{
	const struct config_profile *p;
	struct store_job unfinished;
	struct store_desired d;
	const char *sha = NULL;

	/* OctoPrint is being connected again to it: a gate now would find it half-open */
	if (!board_actionable(b) || find_job(t, b->dev.port) ||
	    octoprint_busy(t->octoprint, b->dev.port))
		return;
	/* a job interrupted by a restart or an unplug resumes first, whatever the profile:
	 * it was asked for already */
	if (store_job_unfinished(t->store, b->dev.port, &unfinished) >= 0) {
		char *msg = NULL;

		if (bootloader_ready(b))
			(void)bootloader_visit_new(t, b->dev.port);
		if (prepare_job(t, b, START_RESUME, NULL, &unfinished, &msg) < 0 && msg)
			log_warn("cannot resume job %lld: %s", (long long)unfinished.id, msg);
		free(msg);
		return;
	}
	p = config_find_profile(t->cfg, b->profile);
	if (!p || !(p->auto_flash & (CONFIG_AUTO_HOTPLUG | CONFIG_AUTO_QUEUE)) ||
	    strv_has(t->held_off, b->dev.port) || strv_has(t->no_path, b->dev.port) || !b->catalog)
		return;
	if (store_desired_get(t->store, p->name, &d) < 0)
		return;
	if (store_bad_is_marked(t->store, b->id, d.sha)) {
		/* the wanted image did not boot here: the board should run its known-good one,
		 * and a board left without it (a rollback cut short) gets it back */
		if (!b->known_good_sha[0] || strcmp(b->installed_sha, b->known_good_sha) == 0 ||
		    store_bad_is_marked(t->store, b->id, b->known_good_sha)) {
			/* said once per appearance, not on every pass */
			if (strcmp(why, "board appeared") == 0)
				log_info(
				    "firmware %.12s did not boot on %s before; not flashing it "
				    "again (`skrflashctl retry %s` allows it again)",
				    d.sha, board_display_name(b), b->dev.port);
			return;
		}
		sha = b->known_good_sha;
		log_notice("%s on port %s does not run its last known-good firmware %.12s (%s); "
			   "writing it back",
			   board_display_name(b), b->dev.port, sha, why);
	} else if (strcmp(b->installed_sha, d.sha) == 0) {
		return;
	}
	try_start(t, b, 0, sha, why);
}

static void
reconcile_all(struct job_table *t, const char *why)
{
	start_pending(t);
	for (struct board *b = boards_next(t->boards, NULL); b; b = boards_next(t->boards, b)) {
		if (active_jobs(t) >= t->cfg->max_jobs)
			break;
		reconcile_board(t, b, why);
	}
}

static int
on_reconcile(sd_event_source *s, void *userdata)
{
	struct job_table *t = userdata;

	(void)s;
	t->reconcile_src = sd_event_source_disable_unref(t->reconcile_src);
	reconcile_all(t, "reconcile");
	return 0;
}

/* One pass on the next loop iteration, however many triggers came before it. */
static void
reconcile_soon(struct job_table *t)
{
	if (t->reconcile_src)
		return;
	if (sd_event_add_defer(t->loop, &t->reconcile_src, on_reconcile, t) < 0)
		log_warn("cannot schedule a reconcile pass");
}

void
job_table_reconcile(struct job_table *t)
{
	reconcile_soon(t);
}

void
job_table_on_board(struct job_table *t, enum boards_event ev, struct board *b)
{
	struct job *j = find_job(t, b->dev.port);

	if (ev == BOARDS_GONE || ev == BOARDS_LEFT || !bootloader_mode(b->dev.mode))
		strv_drop(&t->bl_seen, b->dev.port);
	if (b->dev.mode == DEVICE_MODE_KATAPULT && !strv_has(t->kat_seen, b->dev.port))
		strv_add(&t->kat_seen, b->dev.port);
	if (j) {
		on_board_in_job(j, ev, b);
		return;
	}
	/* the reset a failed SD job sent is no new plug-in: its failure stands */
	if (strv_has(t->own_reset, b->dev.port) && ev != BOARDS_LEFT) {
		if (ev == BOARDS_GONE && !strv_has(t->own_gone, b->dev.port))
			strv_add(&t->own_gone, b->dev.port);
		else if (ev != BOARDS_GONE && strv_has(t->own_gone, b->dev.port) && b->present) {
			strv_drop(&t->own_reset, b->dev.port);
			strv_drop(&t->own_gone, b->dev.port);
		}
		return;
	}
	if (ev == BOARDS_LEFT) {
		strv_drop(&t->own_reset, b->dev.port);
		strv_drop(&t->own_gone, b->dev.port);
		strv_drop(&t->no_card, b->dev.port);
	}
	if (ev == BOARDS_GONE || ev == BOARDS_LEFT) {
		/* plugged in again later, the board gets a fresh attempt */
		strv_drop(&t->held_off, b->dev.port);
		strv_drop(&t->retried, b->dev.port);
		if (ev == BOARDS_LEFT)
			drop_pending(t, b->dev.port);
		return;
	}
	/* appeared, changed mode, or got its tty: act on it if it needs anything */
	give_port_back(t, b->dev.port);
	reconcile_board(t, b, ev == BOARDS_APPEARED ? "board appeared" : "board changed");
	/* a job talks to the board itself; otherwise a Marlin board is asked which build */
	if (!find_job(t, b->dev.port))
		ident_board(t->ident, b);
}

void
job_table_on_firmware(struct job_table *t, const char *profile)
{
	const struct config_profile *p = config_find_profile(t->cfg, profile);

	if (!p || !(p->auto_flash & CONFIG_AUTO_QUEUE))
		return;
	for (struct board *b = boards_next(t->boards, NULL); b; b = boards_next(t->boards, b))
		if (b->present && strcmp(b->profile, profile) == 0) {
			/* new firmware is a fresh attempt for a board whose last one failed */
			strv_drop(&t->held_off, b->dev.port);
			strv_drop(&t->no_path, b->dev.port);
			try_start(t, b, 0, NULL, "new firmware");
		}
}

int
job_table_flash(struct job_table *t, struct board *b, bool force, char **ret_message)
{
	int r;

	if (find_job(t, b->dev.port)) {
		*ret_message = xasprintf("%s on port %s is being flashed already",
					 board_display_name(b), b->dev.port);
		return -EBUSY;
	}
	strv_drop(&t->held_off, b->dev.port);
	strv_drop(&t->no_path, b->dev.port);
	r = prepare_job(t, b, START_MANUAL | (force ? START_FORCE : 0u), NULL, NULL, ret_message);
	return r == -EAGAIN ? 0 : r;
}

int
job_table_plan(struct job_table *t, struct board *b, json_object **ret_plan, char **ret_message)
{
	json_object *plan = NULL;
	int r;

	t->dry_run = &plan;
	r = prepare_job(t, b, START_MANUAL, NULL, NULL, ret_message);
	t->dry_run = NULL;
	if (r < 0)
		return r;
	*ret_plan = plan;
	return 0;
}

size_t
job_table_running(const struct job_table *t)
{
	return active_jobs(t);
}

json_object *
job_table_to_json(const struct job_table *t)
{
	json_object *arr = json_object_new_array();

	for (size_t i = 0; i < t->n_jobs; i++)
		json_object_array_add(arr, job_json(t->jobs[i]));
	return arr;
}

/* A reconnect ended: whatever waited for the board (a queued image) may go on. */
static void
on_port_given_back(void *userdata, const char *usb_port)
{
	(void)usb_port;
	reconcile_soon(userdata);
}

int
job_table_new(sd_event *loop, const struct config *cfg, struct store *store, struct boards *boards,
	      const char *worker_exe, job_event_fn ev, void *userdata, struct job_table **ret)
{
	struct job_table *t = xnew(struct job_table);
	char **stopped = NULL;
	int r;

	t->loop = sd_event_ref(loop);
	t->cfg = cfg;
	t->store = store;
	t->boards = boards;
	t->worker_exe = xstrdup(worker_exe);
	t->ev = ev;
	t->userdata = userdata;
	r = units_new(loop, NULL, &t->units);
	if (r < 0) {
		/* no system bus (containers, tests): flashing works, stopping units does not */
		log_info("no systemd bus: cannot stop units that hold a tty (%s)", strerror(-r));
		t->units = NULL;
	}
	/* whatever happened to the previous daemon, the units its jobs stopped run again; a
	 * job resumed later stops its unit again if the board still needs it */
	if (store_units_stopped(store, &stopped) > 0)
		for (size_t i = 0; stopped[i]; i++) {
			log_notice("starting %s again: a job of the previous daemon stopped it",
				   stopped[i]);
			restore_unit(t, stopped[i]);
		}
	strv_free(stopped);
	{
		char *dir = xasprintf("%s/octoprint", cfg->state_dir);

		(void)octoprint_new(loop, dir, on_port_given_back, t, &t->octoprint);
		free(dir);
	}
	(void)ident_table_new(loop, boards, worker_exe, &t->ident);
	reconcile_soon(t);
	*ret = t;
	return 0;
}

struct job_table *
job_table_free(struct job_table *t)
{
	if (!t)
		return NULL;
	for (size_t i = 0; i < t->n_jobs; i++) {
		struct job *j = t->jobs[i];

		if (j->pid > 0)
			log_warn(
			    "job %s on port %s interrupted in step %s; it resumes when the board "
			    "is seen again",
			    j->job_id, j->port, step_names[j->step]);
		job_free(j);
	}
	free(t->jobs);
	for (size_t i = 0; i < t->n_pending; i++)
		free(t->pending[i]);
	free(t->pending);
	strv_free(t->bl_seen);
	strv_free(t->held_off);
	strv_free(t->retried);
	sd_event_source_disable_unref(t->retry_src);
	strv_free(t->no_path);
	strv_free(t->kat_seen);
	strv_free(t->own_reset);
	strv_free(t->own_gone);
	strv_free(t->no_card);
	sd_event_source_disable_unref(t->reconcile_src);
	t->octoprint = octoprint_free(t->octoprint);
	t->ident = ident_table_free(t->ident);
	if (t->units) {
		(void)units_restore_all(t->units, 30ull * 1000000ull);
		t->units = units_free(t->units);
	}
	sd_event_unref(t->loop);
	free(t->worker_exe);
	free(t);
	return NULL;
}

void
job_table_set_config(struct job_table *t, const struct config *cfg)
{
	t->cfg = cfg;
}

/* ---- UART rescue jobs (docs/rescue.md) --------------------------------------------------
 *
 * The same gates as a flash (print state, the Klipper unit that holds the board's tty when
 * the board is on USB), then one worker runs the rescue plan over the UART (flash/rescue.c):
 * it keeps the bootloader area as it read it, which goes into the store content-addressed
 * (the history row's known-good image: what `restore` writes back), erases and writes only
 * the bootloader sectors and verifies them. Then the board must come back on USB on its port,
 * as Katapult or as the application Katapult started; from there it is an ordinary board. */

#define RESCUE_WORKER_MS (10u * 60u * 1000u) /* by hand: 30 s to sync, then the writes */
#define RESCUE_BY_HAND_MS (3u * 60u * 1000u) /* the user presses RESET */

static void
rescue_write(struct job *j)
{
	char *json = NULL;
	int r;

	set_step(j, STEP_WRITE);
	r = worker_rescue_plan_to_json(j->rplan, &json);
	if (r >= 0) {
		log_debug("job %s: rescue plan %s", j->job_id, json);
		r = spawn(j, CHILD_WORKER, json);
	}
	free(json);
	if (r < 0) {
		job_fail(j, "cannot start a worker for the rescue of %s: %s", name_of(j),
			 strerror(-r));
		return;
	}
	arm_timer(j,
		  RESCUE_WORKER_MS > j->t->cfg->step_timeout_ms ? RESCUE_WORKER_MS
								: j->t->cfg->step_timeout_ms,
		  NULL);
}

/* The area as the worker read it before writing, into the store: also after a failed
 * write, so that the stock bootloader can always be put back. */
static void
rescue_keep_old(struct job *j)
{
	char sha[SHA256_HEX_LEN + 1], *src;
	uint8_t *data = NULL;
	size_t len = 0;

	if (!j->rplan->old_path[0] || read_file(j->rplan->old_path, 4u << 20, &data, &len) < 0)
		return;
	(void)unlink(j->rplan->old_path);
	sha256_hex(data, len, sha);
	src = xasprintf("bootloader area of %s as read over %s before job %s", name_of(j),
			j->rplan->tty, j->job_id);
	if (store_firmware_put(j->t->store, sha, data, len,
			       j->old_partial ? "bootloader-partial" : "bootloader", src) < 0) {
		log_warn("job %s: cannot store the old bootloader of %s", j->job_id, name_of(j));
	} else {
		(void)str_copy(j->lkg, sizeof(j->lkg), sha);
		persist(j);
		log_notice(
		    "job %s: the old bootloader of %s is stored as %.12s%s", j->job_id, name_of(j),
		    sha, j->old_partial ? " (its first 64 bytes read as the LPC boot ROM's)" : "");
	}
	free(src);
	free(data);
}

static void
rescue_succeeded(struct job *j, const struct board *b)
{
	char msg[600];

	(void)snprintf(msg, sizeof(msg),
		       "bootloader %.12s written over %s and verified; %s is back on USB port %s "
		       "as %s",
		       j->sha, j->rplan->tty, name_of(j), j->port,
		       device_mode_to_string(b->dev.mode));
	job_finish(j, "succeeded", LOG_MID_FLASH_SUCCEEDED, LOG_NOTICE, msg);
}

static void
on_rescue_timeout(struct job *j)
{
	job_fail(j,
		 "bootloader written over %s and verified, but %s did not come back on USB port "
		 "%s: %s; check the USB cable, then `skrflashctl boards`",
		 j->rplan->tty, name_of(j), j->port,
		 j->result_reset ? "it was reset through its RESET line"
				 : "was RESET pressed (and the boot jumper removed)?");
}

static bool
rescue_mode_ok(const struct job *j, const struct board *b)
{
	return b->present &&
	       (b->dev.mode == DEVICE_MODE_KLIPPER_APP ||
		(strcmp(j->rplan->action, "rescue") == 0 && b->dev.mode == DEVICE_MODE_KATAPULT));
}

static void
rescue_child_done(struct job *j, int status)
{
	struct board *b;

	rescue_keep_old(j);
	if (status != 0 || !j->result_ok) {
		job_fail(j, "%s",
			 j->result_error[0] ? j->result_error : "the rescue worker failed");
		return;
	}
	if (strncmp(j->port, "uart:", 5) == 0) {
		char msg[600];

		(void)snprintf(msg, sizeof(msg),
			       "bootloader %.12s written over %s and verified; %s was not on USB "
			       "before, so `skrflashctl boards` shows where it is now",
			       j->sha, j->rplan->tty, name_of(j));
		job_finish(j, "succeeded", LOG_MID_FLASH_SUCCEEDED, LOG_NOTICE, msg);
		return;
	}
	set_step(j, STEP_BOOT_CHECK);
	arm_timer(j, j->result_reset ? j->t->cfg->boot_timeout_ms : RESCUE_BY_HAND_MS,
		  on_rescue_timeout);
	b = boards_find_port(j->t->boards, j->port);
	if (b && j->saw_gone && rescue_mode_ok(j, b))
		rescue_succeeded(j, b);
}

static void
rescue_on_board(struct job *j, enum boards_event ev, struct board *b)
{
	if (ev == BOARDS_GONE || ev == BOARDS_LEFT) {
		j->saw_gone = true; /* the ROM took it off USB */
		return;
	}
	if (j->step == STEP_BOOT_CHECK && j->saw_gone && rescue_mode_ok(j, b))
		rescue_succeeded(j, b);
}

/* The gates of a flash job, from the profile of the board on USB (or none: Moonraker at its
 * default address gates it when one listens there). */
static void
rescue_gates(struct job *j, const struct config_profile *p)
{
	if (!p || p->implicit || (!p->moonraker_url && !p->n_stop_units)) {
		(void)str_copy(j->moonraker, sizeof(j->moonraker),
			       p && p->moonraker_url ? p->moonraker_url : DEFAULT_MOONRAKER);
		j->moonraker_optional = !p || !p->moonraker_url;
	} else {
		(void)str_copy(j->moonraker, sizeof(j->moonraker),
			       p->moonraker_url ? p->moonraker_url : DEFAULT_MOONRAKER);
	}
	if (p)
		gates_from_profile(j, p);
}

int
job_table_rescue(struct job_table *t, const struct job_rescue *r, char **ret_message)
{
	const struct config_profile *p =
	    r->usb ? config_find_profile(t->cfg, r->usb->profile) : NULL;
	bool lpc = r->catalog->mcu->family == CATALOG_FAMILY_LPC176X;
	char port[sizeof(((struct job *)0)->port)], *path = NULL;
	struct log_fields f;
	struct job *j;
	int e;

	(void)snprintf(port, sizeof(port), "%s%.58s",
		       r->usb ? "" : "uart:", r->usb ? r->usb->dev.port : r->plan->tty);
	if (find_job(t, port)) {
		*ret_message = xasprintf("%s on %s is being flashed or rescued already",
					 r->catalog->name, port);
		return -EBUSY;
	}
	e = store_firmware_path(t->store, r->sha, &path);
	if (e < 0) {
		*ret_message = xasprintf("bootloader %.12s is not in the store", r->sha);
		return e;
	}
	j = xnew(struct job);
	j->t = t;
	j->out_fd = -1;
	j->rescue = true;
	j->rplan = xnew(struct worker_rescue_plan);
	*j->rplan = *r->plan;
	(void)str_copy(j->rplan->image_path, sizeof(j->rplan->image_path), path);
	free(path);
	j->catalog = r->catalog;
	(void)str_copy(j->port, sizeof(j->port), port);
	(void)str_copy(j->sha, sizeof(j->sha), r->sha);
	if (r->usb) {
		(void)str_copy(j->serial, sizeof(j->serial), r->usb->serial);
		(void)str_copy(j->profile, sizeof(j->profile), r->usb->profile);
		j->rec.board_id = r->usb->id;
	}
	rescue_gates(j, p);
	(void)snprintf(j->rec.port, sizeof(j->rec.port), "uart:%.58s", r->plan->tty);
	(void)str_copy(j->rec.profile, sizeof(j->rec.profile), j->profile);
	(void)snprintf(j->rec.method, sizeof(j->rec.method), "%.7s-%s", r->plan->action,
		       lpc ? "lpc" : "stm32");
	(void)str_copy(j->rec.sha, sizeof(j->rec.sha), j->sha);
	(void)str_copy(j->rec.step, sizeof(j->rec.step), "plan");
	e = job_begin_row(j, ret_message);
	if (e < 0) {
		job_free(j);
		return e;
	}
	/* next to the store's files (the daemon's), one per job */
	(void)snprintf(j->rplan->old_path, sizeof(j->rplan->old_path), "%.4000s.old-job%s",
		       j->rplan->image_path, j->job_id);
	fields(j, LOG_MID_FLASH_STARTED, &f);
	log_full(LOG_NOTICE, 0, &f, "%s %s over %s with bootloader %.12s (%s, job %s)",
		 strcmp(r->plan->action, "restore") == 0 ? "restoring the bootloader of"
							 : "rescuing",
		 name_of(j), r->plan->tty, j->sha, j->rec.method, j->job_id);
	job_started(j);
	step_gate(j);
	return 0;
}
