/* SPDX-License-Identifier: GPL-2.0-or-later */
/* store: what skrflash remembers across restarts - boards, the firmware each profile wants,
 * the content-addressed firmware files, and the history of every flash job.
 *
 * SQLite in WAL mode under the state directory; firmware bytes live next to it as
 * firmware/<sha256>, written atomically before any row refers to them. The schema carries a
 * version (PRAGMA user_version) and is migrated forward at open. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <json-c/json.h>

struct store;

struct store_board {
	int64_t id;
	char port[64];
	char serial[128];
	char board[64]; /* catalog name, may be empty */
	char mcu[32];
	char last_mode[32];
	char installed_sha[65];
	char installed_version[128];
	int64_t first_seen;
	int64_t last_seen;
	char known_good_sha[65]; /* the last image that booted on it; kept while a write runs */
};

struct store_desired {
	char profile[65];
	char sha[65];
	char source[256];
	uint64_t size;
	int64_t queued_at;
};

struct store_job {
	int64_t id;
	int64_t board_id;
	char port[64];
	char profile[65];
	char method[16];
	char sha[65];
	char step[32];
	int64_t started_at;
	int64_t ended_at; /* 0 while running */
	char result[16];  /* running|succeeded|failed|rolled-back|interrupted|superseded */
	char error[512];
	uint64_t bytes;
	/* what the job changed on the host, recorded before the change is made: the systemd
	 * unit it stopped ("" none), started again by whoever finds it recorded */
	char stopped_units[256];
	char lkg[65]; /* the known-good image a rollback writes, "" none */
};

/* Open (creating and migrating as needed) <state_dir>/skrflash.db. */
int store_open(const char *state_dir, struct store **ret);
struct store *store_close(struct store *s); /* accepts NULL, returns NULL */
int store_schema_version(struct store *s);

/* Boards. Find by physical identity; `serial` may be "" for modes that hide it. */
int store_board_find(struct store *s, const char *port, const char *serial,
		     struct store_board *ret);
/* The board last seen on a port (any serial); -ENOENT if none. */
int store_board_last_on_port(struct store *s, const char *port, struct store_board *ret);
/* Insert or update by (port, serial); sets b->id and keeps first_seen. */
int store_board_upsert(struct store *s, struct store_board *b);
int store_board_get(struct store *s, int64_t id, struct store_board *ret);
/* Give a board recorded without a chip serial (first seen in ROM DFU) its serial. */
int store_board_set_serial(struct store *s, int64_t id, const char *serial);
int store_board_set_installed(struct store *s, int64_t id, const char *sha, const char *version);

/* Firmware store: put bytes under firmware/<sha> (idempotent) and record it. */
int store_firmware_put(struct store *s, const char *sha, const void *data, size_t size,
		       const char *format, const char *source);
/* Path of a stored firmware file (malloc'd); -ENOENT if not stored. */
int store_firmware_path(struct store *s, const char *sha, char **ret_path);

/* The format a stored file was recorded with ("bootloader", "bootloader-partial", ...). */
int store_firmware_format(struct store *s, const char *sha, char *buf, size_t size);

/* Desired firmware per profile (the newest queued wins). */
int store_desired_set(struct store *s, const struct store_desired *d);
int store_desired_get(struct store *s, const char *profile, struct store_desired *ret);
/* The profile no longer wants anything (it left the configuration); the image stays stored. */
int store_desired_delete(struct store *s, const char *profile);
/* Desired entries as a JSON array (caller owns). */
int store_desired_list_json(struct store *s, json_object **ret);

/* Jobs. */
int store_job_begin(struct store *s, struct store_job *j); /* sets j->id, result=running */
int store_job_end(struct store *s, const struct store_job *j);
/* Records step, method, bytes, stopped units, lkg and result of a job not ended yet. */
int store_job_update(struct store *s, const struct store_job *j);
/* Units some job recorded as stopped and nobody started again yet: a NULL-terminated list
 * in *ret (caller frees, strv_free); the count or -errno. */
int store_units_stopped(struct store *s, char ***ret);
/* The unit runs again: forget it in every job that recorded it. */
int store_units_restored(struct store *s, const char *unit);
/* The newest job of a port still to be resumed: "running" (the daemon died under it) or
 * "interrupted" (the board left in the middle); -ENOENT if none. */
int store_job_unfinished(struct store *s, const char *port, struct store_job *ret);
/* History as JSON array, newest first; board_id < 0 = all; limit 0 = 100. */
int store_history_json(struct store *s, int64_t board_id, unsigned limit, json_object **ret);
/* Boards as JSON array (all known boards, newest first). */
int store_boards_json(struct store *s, json_object **ret);

/* Firmware a board failed to boot: never retried automatically until cleared. */
int store_bad_mark(struct store *s, int64_t board_id, const char *sha, const char *reason);
bool store_bad_is_marked(struct store *s, int64_t board_id, const char *sha);
int store_bad_clear(struct store *s, int64_t board_id);
