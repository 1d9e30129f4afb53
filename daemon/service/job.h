/* SPDX-License-Identifier: GPL-2.0-or-later */
/* job: the flash engine - turns a matched board plus its desired firmware into a flashed,
 * verified, booted board, or a clear failure with the board left recoverable.
 *
 * Only this module knows the sequence: plan -> prepare (print-state gate, stop the unit
 * holding the tty) -> enter bootloader -> wait for the board on the same port -> write ->
 * verify -> leave (one worker) -> boot check -> record -> restore units; with a rollback to
 * the last known-good image when the new one does not boot. Blocking work runs in worker
 * processes (skrflashd --worker); every wait is for an event (udev, child exit, timer). */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include <json-c/json.h>
#include <systemd/sd-event.h>

#include "service/boards.h"
#include "config.h"
#include "service/store.h"
#include "flash/worker.h"

struct job_table;

/* Events for watchers ("job-started", "job-progress", "job-finished", ...); data is owned
 * by the callee. */
typedef void (*job_event_fn)(void *userdata, const char *event, json_object *data);

int job_table_new(sd_event *loop, const struct config *cfg, struct store *store,
		  struct boards *boards, const char *worker_exe, job_event_fn ev, void *userdata,
		  struct job_table **ret);
/* Kills running workers (their boards stay in the bootloader, resumed on the next start)
 * and starts every unit the engine stopped. Accepts NULL, returns NULL. */
struct job_table *job_table_free(struct job_table *t);
void job_table_set_config(struct job_table *t, const struct config *cfg);

/* Feeds: board registry events, newly recorded firmware. */
void job_table_on_board(struct job_table *t, enum boards_event ev, struct board *b);
void job_table_on_firmware(struct job_table *t, const char *profile);

/* `skrflashctl flash [--force] BOARD`: 0 started, or -errno with *ret_message saying why
 * not. An image marked bad for the board (it did not boot there) needs force. */
int job_table_flash(struct job_table *t, struct board *b, bool force, char **ret_message);
/* Compare what every present board runs with what it should run and start what is
 * missing (soon, on the loop): after lost udev events, or whenever state may be stale.
 * The engine runs it itself at start-up, when a board appears and when a slot frees. */
void job_table_reconcile(struct job_table *t);

/* `skrflashctl rescue` / `restore` through the daemon: write the stored bootloader `sha`
 * into the bootloader area of `catalog` over a UART (the worker's rescue plan), after the
 * gates of a flash when the board is on USB (`usb`: its print state, the Klipper unit
 * holding it), keeping the old area in the store; then wait for the board to come back on
 * its USB port. 0 started, or -errno with *ret_message saying why not. */
struct job_rescue {
	const struct catalog_board *catalog;
	struct board *usb;		       /* the board on USB when it is there, else NULL */
	const char *sha;		       /* stored bootloader to write */
	const struct worker_rescue_plan *plan; /* action, board, tty, baud, lines, tries */
};
int job_table_rescue(struct job_table *t, const struct job_rescue *r, char **ret_message);

/* flash --dry-run: every check a flash makes, and the plan (method, units to stop, print
 * state) as JSON; nothing is touched and no job is recorded. */
int job_table_plan(struct job_table *t, struct board *b, json_object **ret_plan,
		   char **ret_message);
/* Jobs that hold a slot (not those waiting for a person to power-cycle a board). */
size_t job_table_running(const struct job_table *t);
/* The job on `port` waits for its board to be switched off and on (an SDIO board after the
 * SD-card path, no power group or a failed power cycle): why, in words; NULL otherwise. */
const char *job_table_needs_power(const struct job_table *t, const char *port);
json_object *job_table_to_json(const struct job_table *t);
