/* SPDX-License-Identifier: GPL-2.0-or-later */
/* units: stop the systemd unit holding a board's tty, and start it again afterwards.
 *
 * Klipper keeps its MCU's tty open; a flash through the same tty needs it stopped first, and
 * it must come back on success, failure and daemon shutdown alike. This talks to PID 1
 * through sd-bus (org.freedesktop.systemd1.Manager StopUnit/StartUnit with mode "replace")
 * without blocking the event loop: each call completes through a callback once the job's
 * JobRemoved signal arrives. Stops are reference-counted per unit: two boards of one printer
 * flashed in parallel stop klipper.service once, and it starts again after the last one. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <systemd/sd-event.h>

#include "service/holder.h"

struct units;

/* Completion of units_stop/units_start, called once from the event loop (never from inside
 * the call that started it). r is 0 on success, else -errno: -ENOENT (no such unit),
 * -EIO (the job ended with a result other than "done"), -ETIMEDOUT, or what the bus said.
 * result is systemd's job result ("done", "failed", "canceled", "timeout", ...), "held"
 * when a start only dropped a reference, or NULL when no job ran. */
typedef void (*units_done_fn)(void *userdata, const char *unit, int r, const char *result);

#define UNITS_TIMEOUT_DEFAULT_USEC (120ull * 1000000ull)

/* Connect to systemd on the bus at address (NULL = the system bus, which honours
 * $DBUS_SYSTEM_BUS_ADDRESS) and attach to loop. 0 or -errno. */
int units_new(sd_event *loop, const char *address, struct units **ret);
/* Drops pending callbacks without calling them and disconnects; units still stopped stay
 * stopped (call units_restore_all first). Accepts NULL, returns NULL. */
struct units *units_free(struct units *u);
/* Bound on each stop/start (method call plus job); default UNITS_TIMEOUT_DEFAULT_USEC. */
void units_set_timeout(struct units *u, uint64_t usec);

/* Stop unit and take a reference on it. On r == 0 the unit is inactive and held until the
 * matching units_start(). On r < 0 nothing is held: the caller must not flash, and must not
 * call units_start() (a stop job that was begun is already reverted). 0 if queued, or -errno
 * (callback not called). */
int units_stop(struct units *u, const char *unit, units_done_fn cb, void *userdata);
/* Release a reference taken by units_stop; the last one starts the unit again. A unit this
 * module never stopped is simply started. 0 if queued, or -errno (callback not called). */
int units_start(struct units *u, const char *unit, units_done_fn cb, void *userdata);
/* Forget every pending callback with this userdata (a job being destroyed); the systemd jobs
 * and the references are not affected. */
void units_forget(struct units *u, const void *userdata);
/* Whether unit is currently held stopped (or being stopped) through units_stop. */
bool units_is_held(const struct units *u, const char *unit);
/* A unit held stopped by some caller that matches one of the globs, or NULL: a second board
 * of the same printer must take its own reference, or the first job to finish would start
 * Klipper again while the second board is still being flashed. */
const char *units_held_matching(const struct units *u, char *const *globs, size_t n_globs);

/* Shutdown: start every unit still held or being stopped, synchronously, waiting at most
 * timeout_usec in total for their jobs. Pending callbacks are dropped, not called. Must not
 * be called from a units callback. 0, or the first error (-ETIMEDOUT when time ran out). */
int units_restore_all(struct units *u, uint64_t timeout_usec);

/* Pure: does unit match one of the fnmatch(3) globs of a profile's stop_units? */
bool units_match(char *const *globs, size_t n_globs, const char *unit);

/* Pure: decide what to stop before opening a tty held by the processes in h. 0 and a
 * NULL-terminated, de-duplicated list of units in *ret_units (empty when nobody holds the
 * tty), or -EBUSY and a malloc'd *ret_reason when a holder cannot be stopped: it is not in a
 * system service, or its unit matches none of the globs. dev names the tty in the reason. */
int units_plan(const struct holder *h, size_t n, char *const *globs, size_t n_globs,
	       const char *dev, char ***ret_units, char **ret_reason);
