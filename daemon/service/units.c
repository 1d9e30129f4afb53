/* SPDX-License-Identifier: GPL-2.0-or-later */
/* units: asynchronous StopUnit/StartUnit over sd-bus, completed by JobRemoved.
 *
 * Protocol (org.freedesktop.systemd1(5)): Manager.StopUnit(s name, s mode) -> o job returns
 * as soon as the job is queued; the job's end is announced by the Manager signal
 * JobRemoved(u id, o job, s unit, s result), sent only while some client has called
 * Subscribe(). The signal match is installed before any call, and a JobRemoved that
 * overtakes the method reply is kept in a small ring until the reply names its job. */
#include <errno.h>
#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <systemd/sd-bus.h>

#include "log.h"
#include "service/units.h"
#include "util.h"

#define SD_DEST "org.freedesktop.systemd1"
#define SD_PATH "/org/freedesktop/systemd1"
#define SD_MANAGER "org.freedesktop.systemd1.Manager"
#define ORPHANS 16

enum op_kind {
	OP_STOP,
	OP_START,
	OP_RESTORE, /* a start nobody waits for: reverting a failed stop, or shutdown */
};

struct op {
	struct units *u;
	struct op *next;
	enum op_kind kind;
	char *unit;
	char *job;		/* job object path once StopUnit/StartUnit replied */
	sd_bus_slot *call;	/* pending method call */
	sd_event_source *timer; /* overall timeout, or the deferred "held" completion */
	units_done_fn cb;
	void *userdata;
};

struct held {
	struct held *next;
	char *unit;
	unsigned refs; /* callers holding it stopped, including stops in flight */
};

struct orphan {
	char *job;
	char result[32];
};

struct units {
	sd_event *loop;
	sd_bus *bus;
	sd_bus_slot *match;
	struct op *ops;
	struct held *held;
	struct orphan orphans[ORPHANS];
	unsigned orphan_next;
	uint64_t timeout_usec;
	unsigned restoring; /* OP_RESTORE ops in flight, for units_restore_all */
	int restore_error;
	bool shutting_down; /* in units_restore_all: the event loop no longer runs */
};

static struct held *
held_find(const struct units *u, const char *unit)
{
	for (struct held *h = u->held; h; h = h->next)
		if (strcmp(h->unit, unit) == 0)
			return h;
	return NULL;
}

static void
held_drop(struct units *u, struct held *h)
{
	for (struct held **p = &u->held; *p; p = &(*p)->next)
		if (*p == h) {
			*p = h->next;
			free(h->unit);
			free(h);
			return;
		}
}

static struct op *
op_free(struct op *op)
{
	if (!op)
		return NULL;
	for (struct op **p = &op->u->ops; *p; p = &(*p)->next)
		if (*p == op) {
			*p = op->next;
			break;
		}
	sd_bus_slot_unref(op->call);
	sd_event_source_disable_unref(op->timer);
	free(op->unit);
	free(op->job);
	free(op);
	return NULL;
}

static int start_call(struct op *op);

/* Revert a stop that may have begun: put the unit back, nobody waits for the outcome. */
static void
restore_unit(struct units *u, const char *unit)
{
	struct op *op = xnew(struct op);
	int r;

	op->u = u;
	op->kind = OP_RESTORE;
	op->unit = xstrdup(unit);
	op->next = u->ops;
	u->ops = op;
	u->restoring++;
	r = start_call(op);
	if (r < 0) {
		log_error_errno(r, "cannot start %s again", unit);
		u->restoring--;
		if (u->restore_error == 0)
			u->restore_error = r;
		op_free(op);
	}
}

/* The end of an operation: update the references, then tell the caller. */
static void
op_complete(struct op *op, int r, const char *result)
{
	struct units *u = op->u;
	struct held *h = held_find(u, op->unit);
	bool job_started = op->job != NULL;
	units_done_fn cb = op->cb;
	void *userdata = op->userdata;
	char *unit = xstrdup(op->unit);

	switch (op->kind) {
	case OP_STOP:
		if (r == 0) {
			log_info("stopped %s", unit);
			break;
		}
		log_error_errno(r, "stopping %s failed (job result %s)", unit,
				result ? result : "none");
		if (h && --h->refs == 0) {
			held_drop(u, h);
			/* the job ran (failed, timed out): whatever state the unit is in now,
			 * bring it back rather than leave a printer without its host */
			if (job_started)
				restore_unit(u, unit);
		}
		break;
	case OP_START:
		if (r == 0)
			log_info("started %s again", unit);
		else
			log_error_errno(r, "starting %s failed (job result %s)", unit,
					result ? result : "none");
		break;
	case OP_RESTORE:
		u->restoring--;
		if (r < 0) {
			log_error_errno(r, "starting %s failed (job result %s)", unit,
					result ? result : "none");
			if (u->restore_error == 0)
				u->restore_error = r;
		} else {
			log_info("started %s again", unit);
		}
		break;
	}
	op_free(op);
	if (cb)
		cb(userdata, unit, r, result);
	free(unit);
}

static int
result_to_errno(const char *result)
{
	return strcmp(result, "done") == 0 ? 0 : -EIO;
}

static struct op *
op_by_job(struct units *u, const char *job)
{
	for (struct op *op = u->ops; op; op = op->next)
		if (op->job && strcmp(op->job, job) == 0)
			return op;
	return NULL;
}

static int
on_job_removed(sd_bus_message *m, void *userdata, sd_bus_error *ret_error)
{
	struct units *u = userdata;
	const char *job, *unit, *result;
	struct orphan *o;
	struct op *op;
	uint32_t id;
	int r;

	(void)ret_error;
	r = sd_bus_message_read(m, "uoss", &id, &job, &unit, &result);
	if (r < 0) {
		log_debug_errno(r, "malformed JobRemoved signal");
		return 0;
	}
	op = op_by_job(u, job);
	if (op) {
		op_complete(op, result_to_errno(result), result);
		return 0;
	}
	/* maybe ours with the reply still queued behind it; remember a few */
	o = &u->orphans[u->orphan_next++ % ORPHANS];
	free(o->job);
	o->job = xstrdup(job);
	str_copy(o->result, sizeof(o->result), result);
	return 0;
}

static int
on_reply(sd_bus_message *m, void *userdata, sd_bus_error *ret_error)
{
	struct op *op = userdata;
	const sd_bus_error *e = sd_bus_message_get_error(m);
	const char *job;
	int r;

	(void)ret_error;
	op->call = sd_bus_slot_unref(op->call);
	if (e) {
		r = sd_bus_error_has_name(e, "org.freedesktop.systemd1.NoSuchUnit")
			? -ENOENT
			: -sd_bus_error_get_errno(e);
		log_error("%s %s: %s", op->kind == OP_STOP ? "StopUnit" : "StartUnit", op->unit,
			  e->message ? e->message : e->name);
		op_complete(op, r < 0 ? r : -EIO, NULL);
		return 0;
	}
	r = sd_bus_message_read(m, "o", &job);
	if (r < 0) {
		op_complete(op, r, NULL);
		return 0;
	}
	op->job = xstrdup(job);
	for (unsigned i = 0; i < ORPHANS; i++) {
		struct orphan *o = &op->u->orphans[i];

		if (o->job && strcmp(o->job, job) == 0) {
			char result[sizeof(o->result)];

			str_copy(result, sizeof(result), o->result);
			free(o->job);
			o->job = NULL;
			op_complete(op, result_to_errno(result), result);
			break;
		}
	}
	return 0;
}

static int
on_timeout(sd_event_source *s, uint64_t usec, void *userdata)
{
	struct op *op = userdata;

	(void)s;
	(void)usec;
	op_complete(op, -ETIMEDOUT, NULL);
	return 0;
}

static int
start_call(struct op *op)
{
	struct units *u = op->u;
	int r;

	r = sd_bus_call_method_async(u->bus, &op->call, SD_DEST, SD_PATH, SD_MANAGER,
				     op->kind == OP_STOP ? "StopUnit" : "StartUnit", on_reply, op,
				     "ss", op->unit, "replace");
	if (r < 0)
		return r;
	/* at shutdown units_restore_all bounds the wait: the (possibly finished) event loop
	 * would never run a timer */
	if (u->shutting_down)
		return 0;
	return sd_event_add_time_relative(u->loop, &op->timer, CLOCK_MONOTONIC, u->timeout_usec, 0,
					  on_timeout, op);
}

static struct op *
op_new(struct units *u, enum op_kind kind, const char *unit, units_done_fn cb, void *userdata)
{
	struct op *op = xnew(struct op);

	op->u = u;
	op->kind = kind;
	op->unit = xstrdup(unit);
	op->cb = cb;
	op->userdata = userdata;
	op->next = u->ops;
	u->ops = op;
	return op;
}

static bool
unit_name_valid(const char *unit)
{
	/* systemd's limit (UNIT_NAME_MAX); the rest is checked by PID 1 */
	return unit && *unit && strlen(unit) < 256 && !strchr(unit, '/');
}

int
units_stop(struct units *u, const char *unit, units_done_fn cb, void *userdata)
{
	struct held *h;
	struct op *op;
	int r;

	if (!unit_name_valid(unit))
		return -EINVAL;
	op = op_new(u, OP_STOP, unit, cb, userdata);
	r = start_call(op);
	if (r < 0) {
		op_free(op);
		return log_error_errno(r, "cannot ask systemd to stop %s", unit);
	}
	/* StopUnit is idempotent in PID 1, so a second holder also asks: if something started
	 * the unit in between, it is stopped again before that holder flashes */
	h = held_find(u, unit);
	if (!h) {
		h = xnew(struct held);
		h->unit = xstrdup(unit);
		h->next = u->held;
		u->held = h;
	}
	h->refs++;
	log_info("stopping %s", unit);
	return 0;
}

static int
on_held(sd_event_source *s, void *userdata)
{
	struct op *op = userdata;

	(void)s;
	op_complete(op, 0, "held");
	return 0;
}

int
units_start(struct units *u, const char *unit, units_done_fn cb, void *userdata)
{
	struct held *h;
	struct op *op;
	int r;

	if (!unit_name_valid(unit))
		return -EINVAL;
	h = held_find(u, unit);
	op = op_new(u, OP_START, unit, cb, userdata);
	if (h && h->refs > 1) {
		/* another job still needs it stopped; complete from the loop, not from here */
		r = sd_event_add_defer(u->loop, &op->timer, on_held, op);
		if (r < 0) {
			op_free(op);
			return r;
		}
		h->refs--;
		log_debug("%s stays stopped for %u other job(s)", unit, h->refs);
		return 0;
	}
	r = start_call(op);
	if (r < 0) {
		op_free(op);
		return log_error_errno(r, "cannot ask systemd to start %s", unit);
	}
	if (h)
		held_drop(u, h);
	log_info("starting %s", unit);
	return 0;
}

void
units_forget(struct units *u, const void *userdata)
{
	for (struct op *op = u->ops; op; op = op->next)
		if (op->userdata == userdata) {
			op->cb = NULL;
			op->userdata = NULL;
		}
}

bool
units_is_held(const struct units *u, const char *unit)
{
	return held_find(u, unit) != NULL;
}

const char *
units_held_matching(const struct units *u, char *const *globs, size_t n_globs)
{
	for (struct held *h = u->held; h; h = h->next)
		if (h->refs && units_match(globs, n_globs, h->unit))
			return h->unit;
	return NULL;
}

void
units_set_timeout(struct units *u, uint64_t usec)
{
	u->timeout_usec = usec ? usec : UNITS_TIMEOUT_DEFAULT_USEC;
}

int
units_new(sd_event *loop, const char *address, struct units **ret)
{
	struct units *u = xnew(struct units);
	int r;

	u->loop = sd_event_ref(loop);
	u->timeout_usec = UNITS_TIMEOUT_DEFAULT_USEC;
	if (address) {
		r = sd_bus_new(&u->bus);
		if (r >= 0)
			r = sd_bus_set_address(u->bus, address);
		if (r >= 0)
			r = sd_bus_set_bus_client(u->bus, 1);
		if (r >= 0)
			r = sd_bus_start(u->bus);
	} else {
		r = sd_bus_open_system(&u->bus);
	}
	if (r < 0) {
		log_debug_errno(r, "cannot connect to the bus of systemd");
		goto fail;
	}
	r = sd_bus_attach_event(u->bus, loop, SD_EVENT_PRIORITY_NORMAL);
	if (r < 0)
		goto fail;
	r = sd_bus_match_signal_async(u->bus, &u->match, SD_DEST, SD_PATH, SD_MANAGER, "JobRemoved",
				      on_job_removed, NULL, u);
	if (r < 0)
		goto fail;
	/* PID 1 sends JobRemoved only while at least one client is subscribed */
	r = sd_bus_call_method_async(u->bus, NULL, SD_DEST, SD_PATH, SD_MANAGER, "Subscribe", NULL,
				     NULL, "");
	if (r < 0)
		goto fail;
	*ret = u;
	return 0;
fail:
	units_free(u);
	return r;
}

struct units *
units_free(struct units *u)
{
	if (!u)
		return NULL;
	while (u->ops)
		op_free(u->ops);
	while (u->held)
		held_drop(u, u->held);
	for (unsigned i = 0; i < ORPHANS; i++)
		free(u->orphans[i].job);
	sd_bus_slot_unref(u->match);
	if (u->bus) {
		sd_bus_flush(u->bus);
		sd_bus_detach_event(u->bus);
		sd_bus_close_unref(u->bus);
	}
	sd_event_unref(u->loop);
	free(u);
	return NULL;
}

int
units_restore_all(struct units *u, uint64_t timeout_usec)
{
	uint64_t deadline = now_monotonic_usec() + timeout_usec;
	int r;

	for (struct op *op = u->ops; op; op = op->next) {
		op->cb = NULL;
		op->userdata = NULL;
	}
	u->restore_error = 0;
	u->shutting_down = true;
	while (u->held) {
		char *unit = xstrdup(u->held->unit);

		held_drop(u, u->held);
		log_notice("starting %s again before exiting", unit);
		restore_unit(u, unit);
		free(unit);
	}
	r = 0;
	while (u->restoring > 0 && r == 0) {
		uint64_t now = now_monotonic_usec();

		if (now >= deadline) {
			log_error("gave up waiting for %u unit(s) to start", u->restoring);
			r = -ETIMEDOUT;
			break;
		}
		r = sd_bus_process(u->bus, NULL);
		if (r > 0) {
			r = 0;
			continue;
		}
		if (r == 0)
			r = sd_bus_wait(u->bus, deadline - now);
		if (r == -EINTR || r > 0)
			r = 0;
		if (r < 0)
			log_error_errno(r, "bus failed while starting units");
	}
	u->shutting_down = false;
	return r < 0 ? r : u->restore_error;
}

bool
units_match(char *const *globs, size_t n_globs, const char *unit)
{
	for (size_t i = 0; i < n_globs; i++)
		if (globs[i] && fnmatch(globs[i], unit, 0) == 0)
			return true;
	return false;
}

int
units_plan(const struct holder *h, size_t n, char *const *globs, size_t n_globs, const char *dev,
	   char ***ret_units, char **ret_reason)
{
	char **list = xnew_array(char *, n + 1);
	size_t k = 0;

	*ret_reason = NULL;
	for (size_t i = 0; i < n; i++) {
		bool dup = false;

		if (!h[i].unit || h[i].user_manager) {
			*ret_reason = xasprintf("%s is held open by pid %d (%s), which is not in a "
						"system service skrflash can stop; close it first",
						dev, (int)h[i].pid, h[i].comm);
			break;
		}
		if (!units_match(globs, n_globs, h[i].unit)) {
			*ret_reason =
			    xasprintf("%s is held open by %s (pid %d, %s), which is not in "
				      "the profile's stop_units",
				      dev, h[i].unit, (int)h[i].pid, h[i].comm);
			break;
		}
		for (size_t j = 0; j < k; j++)
			dup |= strcmp(list[j], h[i].unit) == 0;
		if (!dup)
			list[k++] = xstrdup(h[i].unit);
	}
	if (*ret_reason) {
		strv_free(list);
		return -EBUSY;
	}
	*ret_units = list;
	return 0;
}
