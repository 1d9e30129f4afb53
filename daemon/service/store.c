/* SPDX-License-Identifier: GPL-2.0-or-later */
/* store: SQLite state and the content-addressed firmware files (see store.h). */
#include "service/store.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sqlite3.h>

#include "util.h"

struct store {
	sqlite3 *db;
	char *state_dir;
	char *firmware_dir;
};

/* Each entry migrates from version i to i + 1; append only, never edit a shipped step. */
static const char *const migrations[] = {
    "CREATE TABLE boards ("
    "  id INTEGER PRIMARY KEY,"
    "  port TEXT NOT NULL,"
    "  serial TEXT NOT NULL,"
    "  board TEXT NOT NULL DEFAULT '',"
    "  mcu TEXT NOT NULL DEFAULT '',"
    "  last_mode TEXT NOT NULL DEFAULT '',"
    "  installed_sha TEXT NOT NULL DEFAULT '',"
    "  installed_version TEXT NOT NULL DEFAULT '',"
    "  first_seen INTEGER NOT NULL,"
    "  last_seen INTEGER NOT NULL,"
    "  UNIQUE (port, serial));"
    "CREATE TABLE firmware ("
    "  sha TEXT PRIMARY KEY,"
    "  size INTEGER NOT NULL,"
    "  format TEXT NOT NULL DEFAULT '',"
    "  source TEXT NOT NULL DEFAULT '',"
    "  stored_at INTEGER NOT NULL);"
    "CREATE TABLE desired ("
    "  profile TEXT PRIMARY KEY,"
    "  sha TEXT NOT NULL REFERENCES firmware (sha),"
    "  source TEXT NOT NULL DEFAULT '',"
    "  size INTEGER NOT NULL,"
    "  queued_at INTEGER NOT NULL);"
    "CREATE TABLE jobs ("
    "  id INTEGER PRIMARY KEY,"
    "  board_id INTEGER REFERENCES boards (id),"
    "  port TEXT NOT NULL,"
    "  profile TEXT NOT NULL DEFAULT '',"
    "  method TEXT NOT NULL DEFAULT '',"
    "  sha TEXT NOT NULL DEFAULT '',"
    "  step TEXT NOT NULL DEFAULT '',"
    "  started_at INTEGER NOT NULL,"
    "  ended_at INTEGER NOT NULL DEFAULT 0,"
    "  result TEXT NOT NULL DEFAULT 'running',"
    "  error TEXT NOT NULL DEFAULT '',"
    "  bytes INTEGER NOT NULL DEFAULT 0);"
    "CREATE INDEX jobs_board ON jobs (board_id, id);"
    "CREATE TABLE bad_firmware ("
    "  board_id INTEGER NOT NULL REFERENCES boards (id),"
    "  sha TEXT NOT NULL,"
    "  reason TEXT NOT NULL DEFAULT '',"
    "  marked_at INTEGER NOT NULL,"
    "  PRIMARY KEY (board_id, sha));",
    /* 2: the job as a persisted state machine - what it changed on the host (units it
     * stopped, restored whatever happens next) and the image a rollback writes; a board's
     * last known-good image survives a write that did not finish (installed_sha is then
     * unknown) */
    "ALTER TABLE jobs ADD COLUMN stopped_units TEXT NOT NULL DEFAULT '';"
    "ALTER TABLE jobs ADD COLUMN lkg TEXT NOT NULL DEFAULT '';"
    "ALTER TABLE boards ADD COLUMN known_good_sha TEXT NOT NULL DEFAULT '';"
    "UPDATE boards SET known_good_sha = installed_sha;",
};

static int
sql_err(int rc)
{
	switch (rc) {
	case SQLITE_OK:
	case SQLITE_DONE:
	case SQLITE_ROW:
		return 0;
	case SQLITE_BUSY:
	case SQLITE_LOCKED:
		return -EBUSY;
	case SQLITE_NOMEM:
		return -ENOMEM;
	case SQLITE_READONLY:
	case SQLITE_PERM:
	case SQLITE_AUTH:
		return -EACCES;
	case SQLITE_FULL:
		return -ENOSPC;
	case SQLITE_CANTOPEN:
		return -ENOENT;
	case SQLITE_CONSTRAINT:
		return -EEXIST;
	default:
		return -EIO;
	}
}

static int
exec(struct store *s, const char *sql)
{
	return sql_err(sqlite3_exec(s->db, sql, NULL, NULL, NULL));
}

static sqlite3_stmt *
prepare(struct store *s, const char *sql)
{
	sqlite3_stmt *st = NULL;

	if (sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) != SQLITE_OK)
		return NULL;
	return st;
}

static void
col_text(sqlite3_stmt *st, int col, char *buf, size_t size)
{
	const unsigned char *t = sqlite3_column_text(st, col);

	(void)snprintf(buf, size, "%s", t ? (const char *)t : "");
}

static const char *
col_str(sqlite3_stmt *st, int col)
{
	const unsigned char *t = sqlite3_column_text(st, col);

	return t ? (const char *)t : "";
}

static int
migrate(struct store *s)
{
	sqlite3_stmt *st = prepare(s, "PRAGMA user_version");
	int version;

	if (!st)
		return -EIO;
	if (sqlite3_step(st) != SQLITE_ROW) {
		sqlite3_finalize(st);
		return -EIO;
	}
	version = sqlite3_column_int(st, 0);
	sqlite3_finalize(st);
	if (version > (int)ELEMENTSOF(migrations))
		return -EPROTONOSUPPORT; /* written by a newer skrflash: do not touch it */
	for (int v = version; v < (int)ELEMENTSOF(migrations); v++) {
		char pragma[64];
		int r = exec(s, "BEGIN IMMEDIATE");

		if (r < 0)
			return r;
		(void)snprintf(pragma, sizeof(pragma), "PRAGMA user_version = %d", v + 1);
		r = exec(s, migrations[v]);
		if (r >= 0)
			r = exec(s, pragma);
		if (r < 0) {
			(void)exec(s, "ROLLBACK");
			return r;
		}
		r = exec(s, "COMMIT");
		if (r < 0)
			return r;
	}
	return 0;
}

/* A crash inside write_file_atomic leaves "<sha>.<pid>.tmp"; nothing refers to those. */
static void
remove_stale_tmp(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *de;

	if (!d)
		return;
	while ((de = readdir(d))) {
		size_t len = strlen(de->d_name);

		if (len > 4 && strcmp(de->d_name + len - 4, ".tmp") == 0)
			(void)unlinkat(dirfd(d), de->d_name, 0);
	}
	closedir(d);
}

int
store_open(const char *state_dir, struct store **ret)
{
	struct store *s = xnew(struct store);
	char *path = NULL;
	int r;

	s->state_dir = xstrdup(state_dir);
	s->firmware_dir = xasprintf("%s/firmware", state_dir);
	r = mkdir_p(s->firmware_dir, 0750);
	if (r < 0)
		goto fail;
	remove_stale_tmp(s->firmware_dir);
	path = xasprintf("%s/skrflash.db", state_dir);
	r = sql_err(sqlite3_open_v2(
	    path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
	    NULL));
	if (r < 0)
		goto fail;
	(void)sqlite3_busy_timeout(s->db, 5000);
	r = exec(s, "PRAGMA journal_mode = WAL");
	if (r >= 0)
		r = exec(s, "PRAGMA synchronous = FULL");
	if (r >= 0)
		r = exec(s, "PRAGMA foreign_keys = ON");
	if (r >= 0)
		r = migrate(s);
	if (r < 0)
		goto fail;
	free(path);
	*ret = s;
	return 0;
fail:
	free(path);
	store_close(s);
	return r;
}

struct store *
store_close(struct store *s)
{
	if (!s)
		return NULL;
	if (s->db)
		(void)sqlite3_close(s->db);
	free(s->state_dir);
	free(s->firmware_dir);
	free(s);
	return NULL;
}

int
store_schema_version(struct store *s)
{
	sqlite3_stmt *st = prepare(s, "PRAGMA user_version");
	int v = -EIO;

	if (st && sqlite3_step(st) == SQLITE_ROW)
		v = sqlite3_column_int(st, 0);
	sqlite3_finalize(st);
	return v;
}

#define BOARD_COLS                                                                                 \
	"id, port, serial, board, mcu, last_mode, installed_sha, installed_version, first_seen, "  \
	"last_seen, known_good_sha"

static void
board_from_row(sqlite3_stmt *st, void *ret)
{
	struct store_board *b = ret;

	memset(b, 0, sizeof(*b));
	b->id = sqlite3_column_int64(st, 0);
	col_text(st, 1, b->port, sizeof(b->port));
	col_text(st, 2, b->serial, sizeof(b->serial));
	col_text(st, 3, b->board, sizeof(b->board));
	col_text(st, 4, b->mcu, sizeof(b->mcu));
	col_text(st, 5, b->last_mode, sizeof(b->last_mode));
	col_text(st, 6, b->installed_sha, sizeof(b->installed_sha));
	col_text(st, 7, b->installed_version, sizeof(b->installed_version));
	b->first_seen = sqlite3_column_int64(st, 8);
	b->last_seen = sqlite3_column_int64(st, 9);
	col_text(st, 10, b->known_good_sha, sizeof(b->known_good_sha));
}

/* The first row of a query (NULL: it could not be prepared) into *ret by from_row: 0,
 * -ENOENT when there is none, or -errno. */
static int
query_row(sqlite3_stmt *st, void (*from_row)(sqlite3_stmt *st, void *ret), void *ret)
{
	int rc;

	if (!st)
		return -EIO;
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		from_row(st, ret);
		rc = 0;
	} else {
		rc = rc == SQLITE_DONE ? -ENOENT : sql_err(rc);
	}
	sqlite3_finalize(st);
	return rc;
}

/* Every row of a query (NULL: it could not be prepared) as a JSON array in *ret, one object
 * per row by to_json: 0 or -errno. */
static int
query_json(sqlite3_stmt *st, json_object *(*to_json)(sqlite3_stmt *st), json_object **ret)
{
	json_object *arr;
	int rc;

	if (!st)
		return -EIO;
	arr = json_object_new_array();
	while ((rc = sqlite3_step(st)) == SQLITE_ROW)
		json_object_array_add(arr, to_json(st));
	sqlite3_finalize(st);
	if (rc != SQLITE_DONE) {
		json_object_put(arr);
		return sql_err(rc) ? sql_err(rc) : -EIO;
	}
	*ret = arr;
	return 0;
}

int
store_board_find(struct store *s, const char *port, const char *serial, struct store_board *ret)
{
	sqlite3_stmt *st =
	    prepare(s, "SELECT " BOARD_COLS " FROM boards WHERE port = ? AND serial = ?");

	if (st) {
		sqlite3_bind_text(st, 1, port, -1, SQLITE_TRANSIENT);
		sqlite3_bind_text(st, 2, serial, -1, SQLITE_TRANSIENT);
	}
	return query_row(st, board_from_row, ret);
}

int
store_board_last_on_port(struct store *s, const char *port, struct store_board *ret)
{
	sqlite3_stmt *st = prepare(s, "SELECT " BOARD_COLS " FROM boards WHERE port = ? "
				      "ORDER BY last_seen DESC, id DESC LIMIT 1");

	if (st)
		sqlite3_bind_text(st, 1, port, -1, SQLITE_TRANSIENT);
	return query_row(st, board_from_row, ret);
}

int
store_board_get(struct store *s, int64_t id, struct store_board *ret)
{
	sqlite3_stmt *st = prepare(s, "SELECT " BOARD_COLS " FROM boards WHERE id = ?");

	if (st)
		sqlite3_bind_int64(st, 1, id);
	return query_row(st, board_from_row, ret);
}

int
store_board_upsert(struct store *s, struct store_board *b)
{
	sqlite3_stmt *st = prepare(
	    s, "INSERT INTO boards (port, serial, board, mcu, last_mode, first_seen, last_seen) "
	       "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6) "
	       "ON CONFLICT (port, serial) DO UPDATE SET "
	       "board = CASE WHEN excluded.board != '' THEN excluded.board ELSE board END, "
	       "mcu = CASE WHEN excluded.mcu != '' THEN excluded.mcu ELSE mcu END, "
	       "last_mode = excluded.last_mode, last_seen = excluded.last_seen "
	       "RETURNING id, first_seen, installed_sha, installed_version, known_good_sha");
	int rc;

	if (!st)
		return -EIO;
	if (!b->last_seen)
		b->last_seen = now_realtime_sec();
	sqlite3_bind_text(st, 1, b->port, -1, SQLITE_TRANSIENT);
	sqlite3_bind_text(st, 2, b->serial, -1, SQLITE_TRANSIENT);
	sqlite3_bind_text(st, 3, b->board, -1, SQLITE_TRANSIENT);
	sqlite3_bind_text(st, 4, b->mcu, -1, SQLITE_TRANSIENT);
	sqlite3_bind_text(st, 5, b->last_mode, -1, SQLITE_TRANSIENT);
	sqlite3_bind_int64(st, 6, b->last_seen);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		b->id = sqlite3_column_int64(st, 0);
		b->first_seen = sqlite3_column_int64(st, 1);
		col_text(st, 2, b->installed_sha, sizeof(b->installed_sha));
		col_text(st, 3, b->installed_version, sizeof(b->installed_version));
		col_text(st, 4, b->known_good_sha, sizeof(b->known_good_sha));
		rc = 0;
	} else {
		rc = rc == SQLITE_DONE ? -EIO : sql_err(rc);
	}
	sqlite3_finalize(st);
	return rc;
}

static int
step_done(sqlite3_stmt *st)
{
	int rc;

	if (!st)
		return -EIO;
	rc = sqlite3_step(st);
	sqlite3_finalize(st);
	return rc == SQLITE_DONE ? 0 : sql_err(rc) ? sql_err(rc) : -EIO;
}

int
store_board_set_serial(struct store *s, int64_t id, const char *serial)
{
	sqlite3_stmt *st = prepare(s, "UPDATE boards SET serial = ? WHERE id = ?");

	if (st) {
		sqlite3_bind_text(st, 1, serial, -1, SQLITE_TRANSIENT);
		sqlite3_bind_int64(st, 2, id);
	}
	return step_done(st);
}

int
store_board_set_installed(struct store *s, int64_t id, const char *sha, const char *version)
{
	/* an image that booted is the board's known-good one; "" (a write began) keeps it */
	sqlite3_stmt *st = prepare(
	    s, "UPDATE boards SET installed_sha = ?1, installed_version = ?2, known_good_sha = "
	       "CASE WHEN ?1 != '' THEN ?1 ELSE known_good_sha END WHERE id = ?3");

	if (st) {
		sqlite3_bind_text(st, 1, sha ? sha : "", -1, SQLITE_TRANSIENT);
		sqlite3_bind_text(st, 2, version ? version : "", -1, SQLITE_TRANSIENT);
		sqlite3_bind_int64(st, 3, id);
	}
	return step_done(st);
}

int
store_firmware_path(struct store *s, const char *sha, char **ret_path)
{
	char *path;

	if (!sha256_hex_valid(sha))
		return -EINVAL;
	path = xasprintf("%s/%s", s->firmware_dir, sha);
	if (access(path, R_OK) < 0) {
		int r = -errno;

		free(path);
		return r;
	}
	*ret_path = path;
	return 0;
}

int
store_firmware_format(struct store *s, const char *sha, char *buf, size_t size)
{
	sqlite3_stmt *st = prepare(s, "SELECT format FROM firmware WHERE sha = ?");
	int rc;

	if (!st)
		return -EIO;
	sqlite3_bind_text(st, 1, sha, -1, SQLITE_TRANSIENT);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		(void)str_copy(buf, size, col_str(st, 0));
	sqlite3_finalize(st);
	return rc == SQLITE_ROW ? 0 : rc == SQLITE_DONE ? -ENOENT : -EIO;
}

int
store_firmware_put(struct store *s, const char *sha, const void *data, size_t size,
		   const char *format, const char *source)
{
	char *path;
	struct stat st;
	sqlite3_stmt *q;
	int r = 0;

	if (!sha256_hex_valid(sha))
		return -EINVAL;
	path = xasprintf("%s/%s", s->firmware_dir, sha);
	/* content-addressed: an existing file of the right size is this content (it was
	 * renamed into place only after fsync), so a second drop of the same image is free */
	if (stat(path, &st) < 0 || !S_ISREG(st.st_mode) || (size_t)st.st_size != size)
		r = write_file_atomic(path, data, size, 0640);
	free(path);
	if (r < 0)
		return r;
	q = prepare(s, "INSERT INTO firmware (sha, size, format, source, stored_at) "
		       "VALUES (?, ?, ?, ?, ?) ON CONFLICT (sha) DO NOTHING");
	if (q) {
		sqlite3_bind_text(q, 1, sha, -1, SQLITE_TRANSIENT);
		sqlite3_bind_int64(q, 2, (sqlite3_int64)size);
		sqlite3_bind_text(q, 3, format ? format : "", -1, SQLITE_TRANSIENT);
		sqlite3_bind_text(q, 4, source ? source : "", -1, SQLITE_TRANSIENT);
		sqlite3_bind_int64(q, 5, now_realtime_sec());
	}
	return step_done(q);
}

int
store_desired_set(struct store *s, const struct store_desired *d)
{
	sqlite3_stmt *st = prepare(
	    s, "INSERT INTO desired (profile, sha, source, size, queued_at) VALUES (?, ?, ?, ?, ?) "
	       "ON CONFLICT (profile) DO UPDATE SET sha = excluded.sha, source = excluded.source, "
	       "size = excluded.size, queued_at = excluded.queued_at");

	if (st) {
		sqlite3_bind_text(st, 1, d->profile, -1, SQLITE_TRANSIENT);
		sqlite3_bind_text(st, 2, d->sha, -1, SQLITE_TRANSIENT);
		sqlite3_bind_text(st, 3, d->source, -1, SQLITE_TRANSIENT);
		sqlite3_bind_int64(st, 4, (sqlite3_int64)d->size);
		sqlite3_bind_int64(st, 5, d->queued_at ? d->queued_at : now_realtime_sec());
	}
	return step_done(st);
}

int
store_desired_delete(struct store *s, const char *profile)
{
	sqlite3_stmt *st = prepare(s, "DELETE FROM desired WHERE profile = ?");

	if (st)
		sqlite3_bind_text(st, 1, profile, -1, SQLITE_TRANSIENT);
	return step_done(st);
}

static void
desired_from_row(sqlite3_stmt *st, void *ret)
{
	struct store_desired *d = ret;

	memset(d, 0, sizeof(*d));
	col_text(st, 0, d->profile, sizeof(d->profile));
	col_text(st, 1, d->sha, sizeof(d->sha));
	col_text(st, 2, d->source, sizeof(d->source));
	d->size = (uint64_t)sqlite3_column_int64(st, 3);
	d->queued_at = sqlite3_column_int64(st, 4);
}

int
store_desired_get(struct store *s, const char *profile, struct store_desired *ret)
{
	sqlite3_stmt *st = prepare(
	    s, "SELECT profile, sha, source, size, queued_at FROM desired WHERE profile = ?");

	if (st)
		sqlite3_bind_text(st, 1, profile, -1, SQLITE_TRANSIENT);
	return query_row(st, desired_from_row, ret);
}

static void
add_time(json_object *o, const char *key, int64_t t)
{
	char buf[32];

	if (!t) {
		json_object_object_add(o, key, NULL);
		return;
	}
	format_time_iso(t, buf, sizeof(buf));
	json_object_object_add(o, key, json_object_new_string(buf));
}

static json_object *
desired_row_json(sqlite3_stmt *st)
{
	json_object *o = json_object_new_object();

	json_object_object_add(o, "profile", json_object_new_string(col_str(st, 0)));
	json_object_object_add(o, "sha256", json_object_new_string(col_str(st, 1)));
	json_object_object_add(o, "source", json_object_new_string(col_str(st, 2)));
	json_object_object_add(o, "size", json_object_new_int64(sqlite3_column_int64(st, 3)));
	add_time(o, "queued_at", sqlite3_column_int64(st, 4));
	json_object_object_add(o, "format", json_object_new_string(col_str(st, 5)));
	return o;
}

int
store_desired_list_json(struct store *s, json_object **ret)
{
	sqlite3_stmt *st =
	    prepare(s, "SELECT d.profile, d.sha, d.source, d.size, d.queued_at, "
		       "f.format FROM desired d LEFT JOIN firmware f ON f.sha = d.sha "
		       "ORDER BY d.profile");

	return query_json(st, desired_row_json, ret);
}

int
store_job_begin(struct store *s, struct store_job *j)
{
	sqlite3_stmt *st = prepare(
	    s, "INSERT INTO jobs (board_id, port, profile, method, sha, step, started_at, result) "
	       "VALUES (?, ?, ?, ?, ?, ?, ?, 'running')");
	int r;

	if (!st)
		return -EIO;
	if (!j->started_at)
		j->started_at = now_realtime_sec();
	if (j->board_id > 0)
		sqlite3_bind_int64(st, 1, j->board_id);
	else
		sqlite3_bind_null(st, 1);
	sqlite3_bind_text(st, 2, j->port, -1, SQLITE_TRANSIENT);
	sqlite3_bind_text(st, 3, j->profile, -1, SQLITE_TRANSIENT);
	sqlite3_bind_text(st, 4, j->method, -1, SQLITE_TRANSIENT);
	sqlite3_bind_text(st, 5, j->sha, -1, SQLITE_TRANSIENT);
	sqlite3_bind_text(st, 6, j->step, -1, SQLITE_TRANSIENT);
	sqlite3_bind_int64(st, 7, j->started_at);
	r = step_done(st);
	if (r < 0)
		return r;
	j->id = sqlite3_last_insert_rowid(s->db);
	/* one job per port: an older one left unfinished is not resumed any more */
	st = prepare(s, "UPDATE jobs SET result = 'superseded', ended_at = ?, error = CASE WHEN "
			"error = '' THEN 'a newer job took over the board' ELSE error END "
			"WHERE port = ? AND id != ? AND result IN ('running', 'interrupted')");
	if (st) {
		sqlite3_bind_int64(st, 1, now_realtime_sec());
		sqlite3_bind_text(st, 2, j->port, -1, SQLITE_TRANSIENT);
		sqlite3_bind_int64(st, 3, j->id);
	}
	(void)step_done(st);
	(void)snprintf(j->result, sizeof(j->result), "running");
	return 0;
}

int
store_job_end(struct store *s, const struct store_job *j)
{
	sqlite3_stmt *st = prepare(s, "UPDATE jobs SET ended_at = ?, result = ?, error = ?, "
				      "bytes = ?, step = ?, method = ?, lkg = ? WHERE id = ?");

	if (st) {
		sqlite3_bind_int64(st, 1, j->ended_at ? j->ended_at : now_realtime_sec());
		sqlite3_bind_text(st, 2, j->result, -1, SQLITE_TRANSIENT);
		sqlite3_bind_text(st, 3, j->error, -1, SQLITE_TRANSIENT);
		sqlite3_bind_int64(st, 4, (sqlite3_int64)j->bytes);
		sqlite3_bind_text(st, 5, j->step, -1, SQLITE_TRANSIENT);
		sqlite3_bind_text(st, 6, j->method, -1, SQLITE_TRANSIENT);
		sqlite3_bind_text(st, 7, j->lkg, -1, SQLITE_TRANSIENT);
		sqlite3_bind_int64(st, 8, j->id);
	}
	return step_done(st);
}

int
store_job_update(struct store *s, const struct store_job *j)
{
	sqlite3_stmt *st =
	    prepare(s, "UPDATE jobs SET step = ?, method = ?, bytes = ?, "
		       "stopped_units = ?, lkg = ?, result = ?, error = ? WHERE id = ?");

	if (st) {
		sqlite3_bind_text(st, 1, j->step, -1, SQLITE_TRANSIENT);
		sqlite3_bind_text(st, 2, j->method, -1, SQLITE_TRANSIENT);
		sqlite3_bind_int64(st, 3, (sqlite3_int64)j->bytes);
		sqlite3_bind_text(st, 4, j->stopped_units, -1, SQLITE_TRANSIENT);
		sqlite3_bind_text(st, 5, j->lkg, -1, SQLITE_TRANSIENT);
		sqlite3_bind_text(st, 6, j->result[0] ? j->result : "running", -1,
				  SQLITE_TRANSIENT);
		sqlite3_bind_text(st, 7, j->error, -1, SQLITE_TRANSIENT);
		sqlite3_bind_int64(st, 8, j->id);
	}
	return step_done(st);
}

int
store_units_stopped(struct store *s, char ***ret)
{
	sqlite3_stmt *st = prepare(
	    s, "SELECT DISTINCT stopped_units FROM jobs WHERE stopped_units != '' ORDER BY 1");
	char **v = xnew_array(char *, 1);
	size_t n = 0;
	int rc;

	if (!st) {
		free(v);
		return -EIO;
	}
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		v = xreallocarray(v, n + 2, sizeof(*v));
		v[n++] = xstrdup(col_str(st, 0));
		v[n] = NULL;
	}
	sqlite3_finalize(st);
	if (rc != SQLITE_DONE) {
		strv_free(v);
		return sql_err(rc) ? sql_err(rc) : -EIO;
	}
	*ret = v;
	return (int)n;
}

int
store_units_restored(struct store *s, const char *unit)
{
	sqlite3_stmt *st = prepare(s, "UPDATE jobs SET stopped_units = '' WHERE stopped_units = ?");

	if (st)
		sqlite3_bind_text(st, 1, unit, -1, SQLITE_TRANSIENT);
	return step_done(st);
}

static void
job_from_row(sqlite3_stmt *st, void *ret)
{
	struct store_job *j = ret;

	memset(j, 0, sizeof(*j));
	j->id = sqlite3_column_int64(st, 0);
	j->board_id = sqlite3_column_int64(st, 1);
	col_text(st, 2, j->port, sizeof(j->port));
	col_text(st, 3, j->profile, sizeof(j->profile));
	col_text(st, 4, j->method, sizeof(j->method));
	col_text(st, 5, j->sha, sizeof(j->sha));
	col_text(st, 6, j->step, sizeof(j->step));
	j->started_at = sqlite3_column_int64(st, 7);
	col_text(st, 8, j->stopped_units, sizeof(j->stopped_units));
	col_text(st, 9, j->lkg, sizeof(j->lkg));
	col_text(st, 10, j->result, sizeof(j->result));
}

int
store_job_unfinished(struct store *s, const char *port, struct store_job *ret)
{
	sqlite3_stmt *st = prepare(
	    s, "SELECT id, IFNULL(board_id, 0), port, profile, method, sha, step, started_at, "
	       "stopped_units, lkg, result FROM jobs WHERE result IN ('running', 'interrupted') "
	       "AND port = ? ORDER BY id DESC LIMIT 1");

	if (st)
		sqlite3_bind_text(st, 1, port, -1, SQLITE_TRANSIENT);
	return query_row(st, job_from_row, ret);
}

static json_object *
history_row_json(sqlite3_stmt *st)
{
	json_object *o = json_object_new_object();
	int64_t start = sqlite3_column_int64(st, 7), end = sqlite3_column_int64(st, 8);

	json_object_object_add(o, "job", json_object_new_int64(sqlite3_column_int64(st, 0)));
	json_object_object_add(o, "board_id", json_object_new_int64(sqlite3_column_int64(st, 1)));
	json_object_object_add(o, "board", json_object_new_string(col_str(st, 12)));
	json_object_object_add(o, "serial", json_object_new_string(col_str(st, 13)));
	json_object_object_add(o, "port", json_object_new_string(col_str(st, 2)));
	json_object_object_add(o, "profile", json_object_new_string(col_str(st, 3)));
	json_object_object_add(o, "method", json_object_new_string(col_str(st, 4)));
	json_object_object_add(o, "sha256", json_object_new_string(col_str(st, 5)));
	json_object_object_add(o, "step", json_object_new_string(col_str(st, 6)));
	add_time(o, "started_at", start);
	add_time(o, "ended_at", end);
	json_object_object_add(o, "duration_sec",
			       json_object_new_int64(end >= start && end ? end - start : 0));
	json_object_object_add(o, "result", json_object_new_string(col_str(st, 9)));
	json_object_object_add(o, "error", json_object_new_string(col_str(st, 10)));
	json_object_object_add(o, "bytes", json_object_new_int64(sqlite3_column_int64(st, 11)));
	/* a rescue or restore: the bootloader it replaced, kept in the store */
	json_object_object_add(o, "lkg_sha256", json_object_new_string(col_str(st, 14)));
	return o;
}

int
store_history_json(struct store *s, int64_t board_id, unsigned limit, json_object **ret)
{
	sqlite3_stmt *st = prepare(
	    s, "SELECT j.id, IFNULL(j.board_id, 0), j.port, j.profile, j.method, j.sha, j.step, "
	       "j.started_at, j.ended_at, j.result, j.error, j.bytes, IFNULL(b.board, ''), "
	       "IFNULL(b.serial, ''), j.lkg FROM jobs j LEFT JOIN boards b ON b.id = j.board_id "
	       "WHERE ?1 < 0 OR j.board_id = ?1 ORDER BY j.id DESC LIMIT ?2");

	if (st) {
		sqlite3_bind_int64(st, 1, board_id);
		sqlite3_bind_int(st, 2, limit ? (int)limit : 100);
	}
	return query_json(st, history_row_json, ret);
}

static json_object *
board_row_json(sqlite3_stmt *st)
{
	struct store_board b;
	json_object *o = json_object_new_object();

	board_from_row(st, &b);
	json_object_object_add(o, "id", json_object_new_int64(b.id));
	json_object_object_add(o, "port", json_object_new_string(b.port));
	json_object_object_add(o, "serial", json_object_new_string(b.serial));
	json_object_object_add(o, "board", json_object_new_string(b.board));
	json_object_object_add(o, "mcu", json_object_new_string(b.mcu));
	json_object_object_add(o, "last_mode", json_object_new_string(b.last_mode));
	json_object_object_add(o, "installed_sha256", json_object_new_string(b.installed_sha));
	json_object_object_add(o, "installed_version", json_object_new_string(b.installed_version));
	add_time(o, "first_seen", b.first_seen);
	add_time(o, "last_seen", b.last_seen);
	return o;
}

int
store_boards_json(struct store *s, json_object **ret)
{
	sqlite3_stmt *st =
	    prepare(s, "SELECT " BOARD_COLS " FROM boards ORDER BY last_seen DESC, id");

	return query_json(st, board_row_json, ret);
}

int
store_bad_mark(struct store *s, int64_t board_id, const char *sha, const char *reason)
{
	sqlite3_stmt *st = prepare(s, "INSERT OR REPLACE INTO bad_firmware (board_id, sha, reason, "
				      "marked_at) VALUES (?, ?, ?, ?)");

	if (st) {
		sqlite3_bind_int64(st, 1, board_id);
		sqlite3_bind_text(st, 2, sha, -1, SQLITE_TRANSIENT);
		sqlite3_bind_text(st, 3, reason ? reason : "", -1, SQLITE_TRANSIENT);
		sqlite3_bind_int64(st, 4, now_realtime_sec());
	}
	return step_done(st);
}

bool
store_bad_is_marked(struct store *s, int64_t board_id, const char *sha)
{
	sqlite3_stmt *st = prepare(s, "SELECT 1 FROM bad_firmware WHERE board_id = ? AND sha = ?");
	bool marked;

	if (!st)
		return false;
	sqlite3_bind_int64(st, 1, board_id);
	sqlite3_bind_text(st, 2, sha, -1, SQLITE_TRANSIENT);
	marked = sqlite3_step(st) == SQLITE_ROW;
	sqlite3_finalize(st);
	return marked;
}

int
store_bad_clear(struct store *s, int64_t board_id)
{
	sqlite3_stmt *st = prepare(s, "DELETE FROM bad_firmware WHERE board_id = ?");

	if (st)
		sqlite3_bind_int64(st, 1, board_id);
	return step_done(st);
}
