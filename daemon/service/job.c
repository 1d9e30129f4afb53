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
#include "image/image.h"
#include "log.h"
#include "service/moonraker.h"
#include "service/units.h"
#include "util.h"
#include "image/validate.h"
#include "flash/worker.h"

#define APP_STABLE_MS 1000u /* an app that stays up this long has booted, not boot-looped */
#define GATE_TIMEOUT_MS 2000u
#define DEFAULT_MOONRAKER "http://127.0.0.1:7125"

enum job_step {
	STEP_GATE,
	STEP_STOP_UNIT,
	STEP_ENTER,
	STEP_WAIT_BOOTLOADER,
	STEP_WRITE,
	STEP_BOOT_CHECK,
	STEP_ROLLBACK_WAIT,
	STEP_ROLLBACK_WRITE,
	STEP_ROLLBACK_BOOT_CHECK,
	STEP_RESTORE,
	_STEP_MAX,
};

static const char *const step_names[_STEP_MAX] = {
    [STEP_GATE] = "gate",
    [STEP_STOP_UNIT] = "stop-unit",
    [STEP_ENTER] = "enter-bootloader",
    [STEP_WAIT_BOOTLOADER] = "wait-bootloader",
    [STEP_WRITE] = "write",
    [STEP_BOOT_CHECK] = "boot-check",
    [STEP_ROLLBACK_WAIT] = "rollback-wait",
    [STEP_ROLLBACK_WRITE] = "rollback-write",
    [STEP_ROLLBACK_BOOT_CHECK] = "rollback-boot-check",
    [STEP_RESTORE] = "restore",
};

enum child_kind {
	CHILD_NONE,
	CHILD_GATE,
	CHILD_WORKER,
};

struct job {
	struct job_table *t;
	struct store_job rec; /* the history row */
	char job_id[24];
	char port[64];
	char serial[DEVICE_STR];
	const struct catalog_board *catalog;
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
	char **stop_globs;	/* copy of the profile's stop_units */
	char stopped_unit[256]; /* the unit this job stopped, "" if none */
	enum job_step step;
	bool resumed;
	bool saw_gone; /* the board left its port since the touch */

	/* the running child: gate check or worker */
	enum child_kind child;
	pid_t pid;
	int out_fd;
	sd_event_source *out_src;
	sd_event_source *child_src;
	char out[8192];
	size_t out_len;
	bool result_ok;
	char result_error[512];
	uint64_t bytes;
	unsigned last_percent;

	sd_event_source *timer;	 /* step timeout */
	sd_event_source *stable; /* boot check: app must stay up */
	char error[512];
};

struct job_table {
	sd_event *loop;
	const struct config *cfg;
	struct store *store;
	struct boards *boards;
	struct units *units;
	char *worker_exe;
	job_event_fn ev;
	void *userdata;
	struct job **jobs;
	size_t n_jobs;
	char **pending; /* ports waiting for a free job slot */
	size_t n_pending;
	char **bl_seen; /* ports whose bootloader visit was considered */
};

static void job_fail(struct job *j, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void step_write(struct job *j, struct board *b);
static void step_enter(struct job *j);
static void begin_boot_check(struct job *j);
static void on_board_in_job(struct job *j, enum boards_event ev, struct board *b);
static bool bootloader_visit_new(struct job_table *t, const char *port);

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

static void
set_step(struct job *j, enum job_step s)
{
	j->step = s;
	(void)str_copy(j->rec.step, sizeof(j->rec.step), step_names[s]);
	emit(j, "job-step", NULL);
}

static int
on_timeout(sd_event_source *s, uint64_t usec, void *userdata)
{
	struct job *j = userdata;

	(void)s;
	(void)usec;
	j->timer = sd_event_source_disable_unref(j->timer);
	if (j->pid > 0) {
		/* the child's exit handler reports the failure with this message */
		(void)snprintf(j->result_error, sizeof(j->result_error),
			       "step %s took longer than %u s; stopped it", step_names[j->step],
			       j->t->cfg->step_timeout_ms / 1000u);
		(void)kill(j->pid, SIGKILL);
		return 0;
	}
	/* boot checks have their own timer (on_boot_timeout); this one guards the waits */
	if (j->step == STEP_WAIT_BOOTLOADER)
		job_fail(j,
			 "%s on port %s did not come back in a bootloader within %.1f s after the "
			 "1200-baud request; check the cable, or enter the bootloader by hand",
			 name_of(j), j->port, j->t->cfg->bootloader_timeout_ms / 1000.0);
	else if (j->step == STEP_ROLLBACK_WAIT)
		job_fail(j,
			 "board did not boot the new firmware: %s on port %s never came back in a "
			 "bootloader to roll back to %.12s; it needs recovery by hand",
			 name_of(j), j->port, j->lkg);
	return 0;
}

static void
arm_timer(struct job *j, unsigned ms, sd_event_time_handler_t cb)
{
	j->timer = sd_event_source_disable_unref(j->timer);
	if (sd_event_add_time_relative(j->t->loop, &j->timer, CLOCK_MONOTONIC, (uint64_t)ms * 1000u,
				       0, cb ? cb : on_timeout, j) < 0)
		log_warn("job %s: cannot arm a timer", j->job_id);
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
	close_fd(j->out_fd);
	strv_free(j->stop_globs);
	free(j);
}

static void start_pending(struct job_table *t);

static void
on_unit_started(void *userdata, const char *unit, int r, const char *result)
{
	(void)userdata;
	(void)result;
	/* units logs the success itself */
	if (r < 0)
		log_warn_errno(r, "could not start %s again after flashing; start it by hand",
			       unit);
}

/* The end of every job: history row, journal, units back, slot free. */
static void
job_finish(struct job *j, const char *result, const char *mid, int prio, const char *msg)
{
	struct job_table *t = j->t;
	struct log_fields f;
	json_object *extra = json_object_new_object();

	(void)str_copy(j->rec.result, sizeof(j->rec.result), result);
	(void)str_copy(j->rec.error, sizeof(j->rec.error), strcmp(result, "succeeded") ? msg : "");
	j->rec.bytes = j->bytes;
	if (store_job_end(t->store, &j->rec) < 0)
		log_warn("job %s: cannot record the result in the state database", j->job_id);
	fields(j, mid, &f);
	log_full(prio, 0, &f, "%s", msg);
	if (j->stopped_unit[0] && t->units) {
		set_step(j, STEP_RESTORE);
		if (units_start(t->units, j->stopped_unit, on_unit_started, NULL) < 0)
			log_warn("could not start %s again after flashing; start it by hand",
				 j->stopped_unit);
	}
	json_object_object_add(extra, "result", json_object_new_string(result));
	json_object_object_add(extra, "message", json_object_new_string(msg));
	emit(j, "job-finished", extra);
	for (size_t i = 0; i < t->n_jobs; i++) {
		if (t->jobs[i] != j)
			continue;
		memmove(&t->jobs[i], &t->jobs[i + 1], (t->n_jobs - i - 1) * sizeof(struct job *));
		t->n_jobs--;
		break;
	}
	job_free(j);
	start_pending(t);
}

static void
job_fail(struct job *j, const char *fmt, ...)
{
	char msg[600];
	va_list ap;

	va_start(ap, fmt);
	(void)vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	job_finish(j, "failed", LOG_MID_FLASH_FAILED, LOG_ERR, msg);
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
	} else if (strcmp(type, "result") == 0) {
		j->result_ok = json_object_get_boolean(json_object_object_get(o, "ok"));
		if (json_object_object_get_ex(o, "bytes", &v) && json_object_get_int64(v) > 0)
			j->bytes = (uint64_t)json_object_get_int64(v);
		if (json_object_object_get_ex(o, "error", &v) && json_object_get_string(v)[0])
			(void)str_copy(j->result_error, sizeof(j->result_error),
				       json_object_get_string(v));
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
	if (pid == 0) {
		sigset_t none;

		/* a worker must not outlive the daemon: the board stays in its bootloader and
		 * the next daemon resumes the job */
		(void)prctl(PR_SET_PDEATHSIG, SIGKILL);
		sigemptyset(&none);
		(void)sigprocmask(SIG_SETMASK, &none, NULL);
		if (dup2(out[1], STDOUT_FILENO) < 0)
			_exit(127);
		if (plan) {
			char *args[] = {j->t->worker_exe, (char[]){"--worker"}, NULL};

			if (dup2(in[0], STDIN_FILENO) < 0)
				_exit(127);
			execv(j->t->worker_exe, args);
			_exit(127);
		} else {
			struct moonraker_state st;
			char key[MOONRAKER_KEY_MAX], *msg = NULL;
			int k = 0;
			bool ok;

			/* read here, at every check: a rotated key needs no reload */
			if (j->moonraker_key_file[0])
				k = moonraker_read_key(j->moonraker_key_file, key, sizeof(key));
			if (k < 0) {
				ok = false;
				msg = xasprintf("cannot read the Moonraker API key from %s: %s; "
						"not flashing %s "
						"(the file must hold the key and be readable by "
						"the daemon's user)",
						j->moonraker_key_file,
						k == -EINVAL ? "no key on its first line"
							     : strerror(-k),
						name_of(j));
			} else {
				(void)moonraker_query(j->moonraker,
						      j->moonraker_key_file[0] ? key : NULL,
						      GATE_TIMEOUT_MS, &st);
				ok = moonraker_gate(&st, j->moonraker, j->moonraker_fail_open,
						    name_of(j), &msg);
				if (!ok && j->moonraker_optional && st.error == -ECONNREFUSED) {
					free(msg);
					msg = xasprintf("no Moonraker listens at %s; flashing %s "
							"without a print-state check",
							j->moonraker, name_of(j));
					ok = true;
				}
			}
			dprintf(STDOUT_FILENO, "{\"type\":\"result\",\"ok\":%s,\"error\":%s}\n",
				ok ? "true" : "false",
				json_object_to_json_string(json_object_new_string(msg ? msg : "")));
			_exit(ok ? 0 : 1);
		}
	}
	close_fd(out[1]);
	if (plan) {
		size_t len = strlen(plan);

		close_fd(in[0]);
		/* plans are a few hundred bytes: they fit in the pipe without blocking */
		if (write(in[1], plan, len) != (ssize_t)len || write(in[1], "\n", 1) != 1)
			log_warn("job %s: short write of the worker plan", j->job_id);
		close_fd(in[1]);
	}
	(void)fcntl(out[0], F_SETFL, O_NONBLOCK);
	j->out_fd = out[0];
	j->out_len = 0;
	j->pid = pid;
	j->child = kind;
	j->result_ok = false;
	j->result_error[0] = 0;
	j->last_percent = 101;
	r = sd_event_add_io(j->t->loop, &j->out_src, out[0], EPOLLIN, on_child_output, j);
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
fail:
	close_fd(in[0]);
	close_fd(in[1]);
	close_fd(out[0]);
	close_fd(out[1]);
	return r;
}

static int
spawn_worker(struct job *j, const struct worker_plan *plan)
{
	char *json = NULL;
	int r = worker_plan_to_json(plan, &json);

	if (r >= 0)
		r = spawn(j, CHILD_WORKER, json);
	free(json);
	return r;
}

/* ---- the sequence ---------------------------------------------------------------------- */

static void
on_unit_stopped(void *userdata, const char *unit, int r, const char *result)
{
	struct job *j = userdata;

	(void)result;
	if (r < 0) {
		j->stopped_unit[0] = 0;
		job_fail(j, "could not stop %s, which holds the tty of %s on port %s: %s", unit,
			 name_of(j), j->port, strerror(-r));
		return;
	}
	log_info("stopped %s to flash %s on port %s", unit, name_of(j), j->port);
	step_enter(j);
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
	if (!b || b->dev.mode != DEVICE_MODE_KLIPPER_APP || !b->dev.tty[0]) {
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
		(void)str_copy(j->stopped_unit, sizeof(j->stopped_unit), held);
		r = units_stop(j->t->units, j->stopped_unit, on_unit_stopped, j);
		if (r < 0) {
			j->stopped_unit[0] = 0;
			step_enter(j);
		}
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
	(void)str_copy(j->stopped_unit, sizeof(j->stopped_unit), units[0]);
	strv_free(units);
	r = units_stop(j->t->units, j->stopped_unit, on_unit_stopped, j);
	if (r < 0) {
		char unit[256];

		(void)str_copy(unit, sizeof(unit), j->stopped_unit);
		j->stopped_unit[0] = 0;
		job_fail(j, "could not stop %s: %s", unit, strerror(-r));
	}
}

static void
step_gate(struct job *j)
{
	set_step(j, STEP_GATE);
	if (!j->moonraker[0]) {
		step_stop_unit(j);
		return;
	}
	if (spawn(j, CHILD_GATE, NULL) < 0)
		job_fail(j, "cannot check the print state at %s", j->moonraker);
}

static bool
bootloader_mode(enum device_mode m)
{
	return m == DEVICE_MODE_KATAPULT || m == DEVICE_MODE_STM32_ROM_DFU;
}

/* A bootloader is usable once the node its backend opens exists: Katapult's tty arrives
 * in a uevent after its usb_device, ROM DFU's usb node comes with it. */
static bool
bootloader_ready(const struct board *b)
{
	if (!b->present)
		return false;
	if (b->dev.mode == DEVICE_MODE_KATAPULT)
		return b->dev.tty[0] != 0;
	return b->dev.mode == DEVICE_MODE_STM32_ROM_DFU && b->dev.usb_node[0] != 0;
}

static void
step_enter(struct job *j)
{
	struct board *b = boards_find_port(j->t->boards, j->port);
	struct worker_plan plan;

	if (b && bootloader_ready(b)) {
		step_write(j, b);
		return;
	}
	if (!b || b->dev.mode != DEVICE_MODE_KLIPPER_APP || !b->dev.tty[0]) {
		set_step(j, STEP_WAIT_BOOTLOADER);
		arm_timer(j, j->t->cfg->bootloader_timeout_ms, NULL);
		return;
	}
	set_step(j, STEP_ENTER);
	memset(&plan, 0, sizeof(plan));
	(void)str_copy(plan.action, sizeof(plan.action), "enter");
	plan.dev = b->dev;
	if (spawn_worker(j, &plan) < 0)
		job_fail(j, "cannot start a worker for %s", name_of(j));
}

static const char *
method_for(enum device_mode m)
{
	return m == DEVICE_MODE_KATAPULT ? "katapult" : "dfu";
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

/* The stored file hashes to its name: the worker verifies the board against this file, so
 * a file corrupted on disk would be flashed and "verified" against itself. 0, -ENOENT, or
 * -EBADMSG; *ret_path set when stored. */
static int
stored_firmware_intact(struct job_table *t, const char *sha, char **ret_path)
{
	char got[SHA256_HEX_LEN + 1];
	uint8_t *data = NULL;
	size_t size = 0;
	int r = store_firmware_path(t->store, sha, ret_path);

	if (r >= 0)
		r = read_file(*ret_path, IMAGE_MAX_SIZE, &data, &size);
	if (r < 0)
		return -ENOENT;
	sha256_hex(data, size, got);
	free(data);
	return strcmp(got, sha) == 0 ? 0 : -EBADMSG;
}

static void
step_write(struct job *j, struct board *b)
{
	bool rollback = j->step == STEP_ROLLBACK_WAIT || j->step == STEP_ROLLBACK_WRITE;
	const char *sha = rollback ? j->lkg : j->sha;
	const char *method = method_for(b->dev.mode);
	struct worker_plan plan;
	char *path = NULL;
	int r;

	j->timer = sd_event_source_disable_unref(j->timer);
	if (!method_allowed(j, method)) {
		job_fail(j,
			 "%s on port %s is in %s mode, but profile '%s' does not allow the %s "
			 "method; add it to methods",
			 name_of(j), j->port, device_mode_to_string(b->dev.mode), j->profile,
			 method);
		return;
	}
	r = stored_firmware_intact(j->t, sha, &path);
	if (r < 0) {
		job_fail(j,
			 r == -EBADMSG ? "firmware %.12s in the store no longer matches its sha256 "
					 "(disk corruption?); queue the file again"
				       : "firmware %.12s is missing from the store",
			 sha);
		free(path);
		return;
	}
	/* this visit to the bootloader is ours: a failed write is not retried on the next
	 * udev event, only when the board comes back */
	(void)bootloader_visit_new(j->t, j->port);
	(void)str_copy(j->rec.method, sizeof(j->rec.method), method);
	set_step(j, rollback ? STEP_ROLLBACK_WRITE : STEP_WRITE);
	memset(&plan, 0, sizeof(plan));
	(void)str_copy(plan.action, sizeof(plan.action), "flash");
	(void)str_copy(plan.method, sizeof(plan.method), method);
	plan.dev = b->dev;
	(void)str_copy(plan.board, sizeof(plan.board), j->catalog ? j->catalog->name : "");
	(void)str_copy(plan.image_path, sizeof(plan.image_path), path);
	plan.app_start = j->app_start;
	plan.interface = j->interface;
	free(path);
	j->bytes = 0;
	if (spawn_worker(j, &plan) < 0)
		job_fail(j, "cannot start a worker for %s", name_of(j));
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
				(void)str_copy(b->installed_sha, sizeof(b->installed_sha),
					       sb.installed_sha);
				(void)str_copy(b->installed_version, sizeof(b->installed_version),
					       sb.installed_version);
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
	    "flashed %s on port %s with %.12s (%llu bytes, %s, verified) and it booted%s%s",
	    name_of(j), j->port, j->sha, (unsigned long long)j->bytes, j->rec.method,
	    j->version[0] ? ": " : "", j->version);
	job_finish(j, "succeeded", LOG_MID_FLASH_SUCCEEDED, LOG_NOTICE, msg);
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
	set_step(j, STEP_ROLLBACK_WAIT);
	if (b && bootloader_ready(b)) {
		step_write(j, b);
		return;
	}
	arm_timer(j, j->t->cfg->boot_timeout_ms, NULL);
}

static int
on_stable(sd_event_source *s, uint64_t usec, void *userdata)
{
	struct job *j = userdata;

	(void)s;
	(void)usec;
	j->stable = sd_event_source_disable_unref(j->stable);
	j->timer = sd_event_source_disable_unref(j->timer);
	record_success(j, j->step == STEP_ROLLBACK_BOOT_CHECK);
	return 0;
}

static int
on_boot_timeout(sd_event_source *s, uint64_t usec, void *userdata)
{
	struct job *j = userdata;

	(void)s;
	(void)usec;
	j->timer = sd_event_source_disable_unref(j->timer);
	if (j->step == STEP_ROLLBACK_WAIT) {
		job_fail(j,
			 "board did not boot the new firmware: %s on port %s never came back in a "
			 "bootloader to roll back to %.12s; it needs recovery by hand",
			 name_of(j), j->port, j->lkg);
		return 0;
	}
	boot_failed(j);
	return 0;
}

static void
begin_boot_check(struct job *j)
{
	struct board *b = boards_find_port(j->t->boards, j->port);

	set_step(j, j->step == STEP_ROLLBACK_WRITE ? STEP_ROLLBACK_BOOT_CHECK : STEP_BOOT_CHECK);
	arm_timer(j, j->t->cfg->boot_timeout_ms, on_boot_timeout);
	if (b && b->dev.mode == DEVICE_MODE_KLIPPER_APP)
		job_table_on_board(j->t, BOARDS_MODE_CHANGED, b);
}

static void
child_done(struct job *j, int status)
{
	enum child_kind kind = j->child;

	j->child = CHILD_NONE;
	if (kind == CHILD_GATE) {
		if (status != 0 || !j->result_ok) {
			job_fail(j, "%s",
				 j->result_error[0] ? j->result_error : "print-state check failed");
			return;
		}
		log_info("%s", j->result_error[0] ? j->result_error : "printer is idle");
		step_stop_unit(j);
		return;
	}
	switch (j->step) {
	case STEP_ENTER:
		/* the touch itself cannot tell us anything: the board answers on udev */
		set_step(j, STEP_WAIT_BOOTLOADER);
		arm_timer(j, j->t->cfg->bootloader_timeout_ms, NULL);
		{
			struct board *b = boards_find_port(j->t->boards, j->port);

			if (b && bootloader_ready(b))
				step_write(j, b);
			else if (b && b->dev.mode == DEVICE_MODE_KLIPPER_APP && j->saw_gone)
				on_board_in_job(j, BOARDS_MODE_CHANGED, b);
		}
		break;
	case STEP_WRITE:
	case STEP_ROLLBACK_WRITE:
		if (status != 0 || !j->result_ok) {
			/* backends say where the board is left; say it once */
			job_fail(
			    j, "%s on port %s: %s%s", name_of(j), j->port,
			    j->result_error[0] ? j->result_error : "the worker failed",
			    j->step == STEP_WRITE && !strstr(j->result_error, "stays in")
				? "; the board stays in its bootloader and can be flashed again"
				: "");
			return;
		}
		begin_boot_check(j);
		break;
	case STEP_GATE:
	case STEP_STOP_UNIT:
	case STEP_WAIT_BOOTLOADER:
	case STEP_BOOT_CHECK:
	case STEP_ROLLBACK_WAIT:
	case STEP_ROLLBACK_BOOT_CHECK:
	case STEP_RESTORE:
	case _STEP_MAX:
	default:
		break;
	}
}

/* ---- triggers --------------------------------------------------------------------------- */

static int
prepare_job(struct job_table *t, struct board *b, bool manual, bool resume,
	    const struct store_job *unfinished, char **ret_message)
{
	const struct config_profile *p = config_find_profile(t->cfg, b->profile);
	struct validate_target target = {0};
	struct store_desired d;
	struct verdict v;
	struct job *j;
	struct log_fields f;
	uint8_t *data = NULL;
	size_t size = 0;
	char *path = NULL;
	int r;

	if (find_job(t, b->dev.port))
		return -EBUSY;
	if (!p) {
		*ret_message = xasprintf("%s on port %s matches no profile", board_display_name(b),
					 b->dev.port);
		return -ENOENT;
	}
	memset(&d, 0, sizeof(d));
	if (resume) {
		(void)str_copy(d.sha, sizeof(d.sha), unfinished->sha);
	} else if (store_desired_get(t->store, p->name, &d) < 0) {
		*ret_message = xasprintf("no firmware queued for profile '%s'", p->name);
		return -ENOENT;
	}
	if (!resume && strcmp(b->installed_sha, d.sha) == 0) {
		*ret_message = xasprintf("%s on port %s already runs %.12s", board_display_name(b),
					 b->dev.port, d.sha);
		return -EALREADY;
	}
	if (!resume && !manual && store_bad_is_marked(t->store, b->id, d.sha)) {
		*ret_message = xasprintf("firmware %.12s did not boot on %s before; not retrying "
					 "(`skrflashctl retry %s` allows it again)",
					 d.sha, board_display_name(b), b->dev.port);
		return -ECANCELED;
	}
	if (!b->catalog) {
		*ret_message =
		    xasprintf("cannot tell which board is on port %s (%s); set board = "
			      "\"...\" in its profile",
			      b->dev.port, b->candidates[0] ? b->candidates : "unknown MCU");
		return -ENXIO;
	}
	/* never touch a board with an image that does not fit it */
	r = store_firmware_path(t->store, d.sha, &path);
	if (r >= 0)
		r = read_file(path, IMAGE_MAX_SIZE, &data, &size);
	free(path);
	if (r < 0) {
		*ret_message = xasprintf(
		    "firmware %.12s for profile '%s' is missing from the store", d.sha, p->name);
		return r;
	}
	{
		char got[SHA256_HEX_LEN + 1];

		sha256_hex(data, size, got);
		if (strcmp(got, d.sha) != 0) {
			free(data);
			*ret_message = xasprintf("firmware %.12s for profile '%s' in the store no "
						 "longer matches its sha256 (disk corruption?); "
						 "queue the file again",
						 d.sha, p->name);
			return -EBADMSG;
		}
	}
	target.board = b->catalog;
	target.app_start = config_profile_app_start(p);
	target.interface = p->interface;
	target.file_name = d.source[0] ? d.source : d.sha;
	r = validate_image(data, size, &target, &v);
	free(data);
	if (r < 0 || !v.accepted) {
		*ret_message = xasprintf("refusing to flash %s on port %s: %s",
					 board_display_name(b), b->dev.port,
					 r < 0	       ? strerror(-r)
					 : v.n_reasons ? v.reasons[0]
						       : "refused");
		if (r >= 0)
			verdict_done(&v);
		return -EINVAL;
	}
	if (t->n_jobs >= t->cfg->max_jobs) {
		verdict_done(&v);
		t->pending = xreallocarray(t->pending, t->n_pending + 1, sizeof(*t->pending));
		t->pending[t->n_pending++] = xstrdup(b->dev.port);
		*ret_message = xasprintf("%zu jobs running; %s on port %s waits for a free slot",
					 t->n_jobs, board_display_name(b), b->dev.port);
		return -EAGAIN;
	}

	j = xnew(struct job);
	j->t = t;
	j->out_fd = -1;
	(void)str_copy(j->port, sizeof(j->port), b->dev.port);
	(void)str_copy(j->serial, sizeof(j->serial), b->serial);
	(void)str_copy(j->profile, sizeof(j->profile), p->name);
	(void)str_copy(j->sha, sizeof(j->sha), d.sha);
	(void)str_copy(j->version, sizeof(j->version), v.version);
	verdict_done(&v);
	if (b->installed_sha[0] && strcmp(b->installed_sha, d.sha) != 0) {
		char *lkg = NULL;

		if (store_firmware_path(t->store, b->installed_sha, &lkg) >= 0)
			(void)str_copy(j->lkg, sizeof(j->lkg), b->installed_sha);
		free(lkg);
	}
	j->catalog = b->catalog;
	j->app_start = config_profile_app_start(p);
	j->interface = p->interface;
	j->resumed = resume;
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
	j->moonraker_fail_open = p->moonraker_fail_open;
	if (p->moonraker_api_key_file)
		(void)str_copy(j->moonraker_key_file, sizeof(j->moonraker_key_file),
			       p->moonraker_api_key_file);
	j->stop_globs = xnew_array(char *, p->n_stop_units + 1);
	for (size_t i = 0; i < p->n_stop_units; i++)
		j->stop_globs[i] = xstrdup(p->stop_units[i]);
	if (resume) {
		j->rec = *unfinished;
	} else {
		j->rec.board_id = b->id;
		(void)str_copy(j->rec.port, sizeof(j->rec.port), j->port);
		(void)str_copy(j->rec.profile, sizeof(j->rec.profile), j->profile);
		(void)str_copy(j->rec.sha, sizeof(j->rec.sha), j->sha);
		(void)str_copy(j->rec.step, sizeof(j->rec.step), "plan");
		r = store_job_begin(t->store, &j->rec);
		if (r < 0) {
			*ret_message = xasprintf("cannot record the job: %s", strerror(-r));
			job_free(j);
			return r;
		}
	}
	(void)snprintf(j->job_id, sizeof(j->job_id), "%lld", (long long)j->rec.id);
	t->jobs = xreallocarray(t->jobs, t->n_jobs + 1, sizeof(struct job *));
	t->jobs[t->n_jobs++] = j;
	fields(j, LOG_MID_FLASH_STARTED, &f);
	log_full(LOG_NOTICE, 0, &f, "%s %s on port %s with %.12s (profile '%s', job %s)",
		 resume ? "resuming flash of" : "flashing", name_of(j), j->port, j->sha, j->profile,
		 j->job_id);
	emit(j, "job-started", NULL);
	if (resume)
		step_write(j, b);
	else
		step_gate(j);
	return 0;
}

static void
try_start(struct job_table *t, struct board *b, const char *why)
{
	char *msg = NULL;
	int r = prepare_job(t, b, false, false, NULL, &msg);

	if (r == -EALREADY || r == -ENOENT)
		log_info("nothing to flash (%s): %s", why, msg ? msg : "nothing to do");
	else if (r < 0 && r != -EBUSY && msg)
		log_warn("%s", msg);
	free(msg);
}

static void
start_pending(struct job_table *t)
{
	while (t->n_pending && t->n_jobs < t->cfg->max_jobs) {
		char *port = t->pending[0];
		struct board *b;

		memmove(t->pending, t->pending + 1, (t->n_pending - 1) * sizeof(*t->pending));
		t->n_pending--;
		b = boards_find_port(t->boards, port);
		if (b)
			try_start(t, b, "queued job");
		free(port);
	}
}

static void
on_board_in_job(struct job *j, enum boards_event ev, struct board *b)
{
	switch (j->step) {
	case STEP_WAIT_BOOTLOADER:
	case STEP_ENTER:
		if (ev == BOARDS_GONE) {
			j->saw_gone = true;
			return;
		}
		if (bootloader_mode(b->dev.mode)) {
			if (j->pid <= 0 && bootloader_ready(b))
				step_write(j, b);
			return;
		}
		if (ev == BOARDS_UPDATED)
			return;
		if (b->dev.mode == DEVICE_MODE_KLIPPER_APP && j->saw_gone &&
		    (j->step == STEP_WAIT_BOOTLOADER || j->pid <= 0)) {
			job_fail(
			    j,
			    "%s on port %s came back as the Klipper app after the bootloader "
			    "request: it has no USB bootloader path. Install Katapult, use the "
			    "SD card (firmware.bin), or enter ROM DFU with BOOT0",
			    name_of(j), j->port);
		}
		return;
	case STEP_BOOT_CHECK:
	case STEP_ROLLBACK_BOOT_CHECK:
		if (ev == BOARDS_GONE || ev == BOARDS_LEFT) {
			/* up and gone again: a boot loop, not a boot */
			j->stable = sd_event_source_disable_unref(j->stable);
			return;
		}
		if (b->dev.mode == DEVICE_MODE_KLIPPER_APP && b->present && !j->stable) {
			if (j->catalog && strcasecmp(b->dev.product, j->catalog->mcu->name) != 0) {
				job_fail(
				    j, "%s on port %s came back as a %s application, expected %s",
				    name_of(j), j->port, b->dev.product, j->catalog->mcu->name);
				return;
			}
			/* accuracy 1 ms: sd-event's default (250 ms) would add up to a quarter
			 * second to every job's end */
			(void)sd_event_add_time_relative(j->t->loop, &j->stable, CLOCK_MONOTONIC,
							 (uint64_t)APP_STABLE_MS * 1000u, 1000u,
							 on_stable, j);
			return;
		}
		if (bootloader_mode(b->dev.mode) && b->present && ev != BOARDS_UPDATED) {
			/* fell back into its bootloader: the app did not start */
			j->timer = sd_event_source_disable_unref(j->timer);
			boot_failed(j);
		}
		return;
	case STEP_ROLLBACK_WAIT:
		if (bootloader_ready(b) && j->pid <= 0)
			step_write(j, b);
		return;
	case STEP_GATE:
	case STEP_STOP_UNIT:
	case STEP_WRITE:
	case STEP_ROLLBACK_WRITE:
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
	size_t n = strv_length(t->bl_seen);

	for (size_t i = 0; i < n; i++)
		if (strcmp(t->bl_seen[i], port) == 0)
			return false;
	t->bl_seen = xreallocarray(t->bl_seen, n + 2, sizeof(*t->bl_seen));
	t->bl_seen[n] = xstrdup(port);
	t->bl_seen[n + 1] = NULL;
	return true;
}

static void
bootloader_visit_end(struct job_table *t, const char *port)
{
	size_t n = strv_length(t->bl_seen);

	for (size_t i = 0; i < n; i++) {
		if (strcmp(t->bl_seen[i], port) != 0)
			continue;
		free(t->bl_seen[i]);
		memmove(&t->bl_seen[i], &t->bl_seen[i + 1], (n - i) * sizeof(*t->bl_seen));
		return;
	}
}

void
job_table_on_board(struct job_table *t, enum boards_event ev, struct board *b)
{
	struct job *j = find_job(t, b->dev.port);
	const struct config_profile *p;
	struct store_job unfinished;

	if (ev == BOARDS_GONE || ev == BOARDS_LEFT || !bootloader_mode(b->dev.mode))
		bootloader_visit_end(t, b->dev.port);
	if (j) {
		on_board_in_job(j, ev, b);
		return;
	}
	if (ev != BOARDS_APPEARED && ev != BOARDS_MODE_CHANGED && ev != BOARDS_UPDATED)
		return;
	/* a job the previous daemon (or an unplug) left mid-write resumes from the write */
	if (bootloader_ready(b) && store_job_unfinished(t->store, b->dev.port, &unfinished) >= 0) {
		char *msg = NULL;

		(void)bootloader_visit_new(t, b->dev.port);
		if (prepare_job(t, b, false, true, &unfinished, &msg) < 0 && msg)
			log_warn("cannot resume job %lld: %s", (long long)unfinished.id, msg);
		free(msg);
		return;
	}
	/* A board that shows up in its bootloader without a job of ours asking (plugged in with
	 * BOOT0 held, back after a write that failed when it was unplugged, a boot loop that
	 * ended in Katapult) still lacks its firmware: flash it when hotplug flashing is on.
	 * Once per visit: udev sends several events while a bootloader enumerates. */
	if (bootloader_ready(b)) {
		p = config_find_profile(t->cfg, b->profile);
		if (p && (p->auto_flash & CONFIG_AUTO_HOTPLUG) &&
		    bootloader_visit_new(t, b->dev.port))
			try_start(t, b, "board in its bootloader");
		return;
	}
	if (ev != BOARDS_APPEARED || b->dev.mode != DEVICE_MODE_KLIPPER_APP)
		return;
	if (store_job_unfinished(t->store, b->dev.port, &unfinished) >= 0) {
		/* it booted an application, so the interrupted job never reached the write */
		(void)str_copy(unfinished.result, sizeof(unfinished.result), "interrupted");
		(void)str_copy(unfinished.error, sizeof(unfinished.error),
			       "the daemon stopped before the job finished");
		(void)store_job_end(t->store, &unfinished);
	}
	p = config_find_profile(t->cfg, b->profile);
	if (p && (p->auto_flash & CONFIG_AUTO_HOTPLUG))
		try_start(t, b, "board appeared");
}

void
job_table_on_firmware(struct job_table *t, const char *profile)
{
	const struct config_profile *p = config_find_profile(t->cfg, profile);

	if (!p || !(p->auto_flash & CONFIG_AUTO_QUEUE))
		return;
	for (struct board *b = boards_next(t->boards, NULL); b; b = boards_next(t->boards, b))
		if (b->present && strcmp(b->profile, profile) == 0)
			try_start(t, b, "new firmware");
}

int
job_table_flash(struct job_table *t, struct board *b, char **ret_message)
{
	int r;

	if (find_job(t, b->dev.port)) {
		*ret_message = xasprintf("%s on port %s is being flashed already",
					 board_display_name(b), b->dev.port);
		return -EBUSY;
	}
	r = prepare_job(t, b, true, false, NULL, ret_message);
	return r == -EAGAIN ? 0 : r;
}

size_t
job_table_running(const struct job_table *t)
{
	return t->n_jobs;
}

json_object *
job_table_to_json(const struct job_table *t)
{
	json_object *arr = json_object_new_array();

	for (size_t i = 0; i < t->n_jobs; i++)
		json_object_array_add(arr, job_json(t->jobs[i]));
	return arr;
}

int
job_table_new(sd_event *loop, const struct config *cfg, struct store *store, struct boards *boards,
	      const char *worker_exe, job_event_fn ev, void *userdata, struct job_table **ret)
{
	struct job_table *t = xnew(struct job_table);
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
