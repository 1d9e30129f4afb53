/* SPDX-License-Identifier: GPL-2.0-or-later */
/* test_store: the SQLite state survives reopening, migrates, and keeps identities apart. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sqlite3.h>

#include "harness.h"
#include "service/store.h"
#include "util.h"

static char *
tmpdir(void)
{
	char tmpl[] = "/tmp/skrflash-store-XXXXXX";
	char *d = mkdtemp(tmpl);

	return d ? xstrdup(d) : NULL;
}

/* A state database of schema 1 (before jobs recorded their host changes) migrates to 2:
 * rows kept, the installed image becomes the known-good one, no job has stopped units. */
static void
test_migrate_from_1(void)
{
	char *dir = tmpdir(), *path = xasprintf("%s/skrflash.db", dir), *cmd;
	struct store *s = NULL;
	struct store_board got;
	struct store_job ju;
	sqlite3 *db = NULL;
	char **units = NULL;

	CHECK_EQ_INT(sqlite3_open(path, &db), SQLITE_OK);
	CHECK_EQ_INT(
	    sqlite3_exec(db,
			 "CREATE TABLE boards (id INTEGER PRIMARY KEY, port TEXT NOT NULL,"
			 " serial TEXT NOT NULL, board TEXT NOT NULL DEFAULT '',"
			 " mcu TEXT NOT NULL DEFAULT '', last_mode TEXT NOT NULL DEFAULT '',"
			 " installed_sha TEXT NOT NULL DEFAULT '',"
			 " installed_version TEXT NOT NULL DEFAULT '',"
			 " first_seen INTEGER NOT NULL, last_seen INTEGER NOT NULL,"
			 " UNIQUE (port, serial));"
			 "CREATE TABLE firmware (sha TEXT PRIMARY KEY, size INTEGER NOT NULL,"
			 " format TEXT NOT NULL DEFAULT '', source TEXT NOT NULL DEFAULT '',"
			 " stored_at INTEGER NOT NULL);"
			 "CREATE TABLE desired (profile TEXT PRIMARY KEY, sha TEXT NOT NULL,"
			 " source TEXT NOT NULL DEFAULT '', size INTEGER NOT NULL,"
			 " queued_at INTEGER NOT NULL);"
			 "CREATE TABLE jobs (id INTEGER PRIMARY KEY, board_id INTEGER,"
			 " port TEXT NOT NULL, profile TEXT NOT NULL DEFAULT '',"
			 " method TEXT NOT NULL DEFAULT '', sha TEXT NOT NULL DEFAULT '',"
			 " step TEXT NOT NULL DEFAULT '', started_at INTEGER NOT NULL,"
			 " ended_at INTEGER NOT NULL DEFAULT 0,"
			 " result TEXT NOT NULL DEFAULT 'running',"
			 " error TEXT NOT NULL DEFAULT '', bytes INTEGER NOT NULL DEFAULT 0);"
			 "CREATE INDEX jobs_board ON jobs (board_id, id);"
			 "CREATE TABLE bad_firmware (board_id INTEGER NOT NULL, sha TEXT NOT NULL,"
			 " reason TEXT NOT NULL DEFAULT '', marked_at INTEGER NOT NULL,"
			 " PRIMARY KEY (board_id, sha));"
			 "INSERT INTO boards VALUES (1, '1-1', 'ABC', 'octopus-f446', '',"
			 " 'klipper-app', 'aa11', 'v0.12', 1, 2);"
			 "INSERT INTO jobs (board_id, port, sha, step, started_at) VALUES"
			 " (1, '1-1', 'bb22', 'write', 3);"
			 "PRAGMA user_version = 1;",
			 NULL, NULL, NULL),
	    SQLITE_OK);
	sqlite3_close(db);
	CHECK_EQ_INT(store_open(dir, &s), 0);
	CHECK_EQ_INT(store_schema_version(s), 2);
	CHECK_EQ_INT(store_board_find(s, "1-1", "ABC", &got), 0);
	CHECK_STREQ(got.installed_sha, "aa11");
	CHECK_STREQ(got.known_good_sha, "aa11");
	CHECK_EQ_INT(store_job_unfinished(s, "1-1", &ju), 0);
	CHECK_STREQ(ju.step, "write");
	CHECK_STREQ(ju.stopped_units, "");
	CHECK_EQ_INT(store_units_stopped(s, &units), 0);
	strv_free(units);
	store_close(s);
	cmd = xasprintf("rm -rf '%s'", dir);
	CHECK_EQ_INT(system(cmd), 0);
	free(cmd);
	free(path);
	free(dir);
}

/* A job's step, method and the unit it stopped are in the database before they are taken;
 * an interrupted job is resumable, a newer job supersedes it, and a unit recorded stopped
 * is listed until it runs again. */
static void
test_job_state(void)
{
	char *dir = tmpdir(), *cmd;
	struct store *s = NULL;
	struct store_job j, j2, ju;
	char **units = NULL;

	CHECK_EQ_INT(store_open(dir, &s), 0);
	memset(&j, 0, sizeof(j));
	strcpy(j.port, "1-2");
	strcpy(j.sha, "cc33");
	strcpy(j.step, "plan");
	CHECK_EQ_INT(store_job_begin(s, &j), 0);
	strcpy(j.step, "stop-unit");
	strcpy(j.stopped_units, "klipper.service");
	CHECK_EQ_INT(store_job_update(s, &j), 0);
	strcpy(j.step, "write");
	strcpy(j.method, "dfu");
	strcpy(j.lkg, "aa11");
	j.bytes = 2048;
	CHECK_EQ_INT(store_job_update(s, &j), 0);
	CHECK_EQ_INT(store_units_stopped(s, &units), 1);
	CHECK(units && units[0] && strcmp(units[0], "klipper.service") == 0);
	strv_free(units);
	CHECK_EQ_INT(store_job_unfinished(s, "1-2", &ju), 0);
	CHECK_EQ_INT(ju.id, j.id);
	CHECK_STREQ(ju.step, "write");
	CHECK_STREQ(ju.method, "dfu");
	CHECK_STREQ(ju.lkg, "aa11");
	CHECK_STREQ(ju.stopped_units, "klipper.service");

	/* the board left: interrupted, still resumable */
	strcpy(j.result, "interrupted");
	CHECK_EQ_INT(store_job_end(s, &j), 0);
	CHECK_EQ_INT(store_job_unfinished(s, "1-2", &ju), 0);
	CHECK_STREQ(ju.result, "interrupted");

	/* the unit runs again: forgotten everywhere */
	CHECK_EQ_INT(store_units_restored(s, "klipper.service"), 0);
	CHECK_EQ_INT(store_units_stopped(s, &units), 0);
	strv_free(units);

	/* a newer job on the port supersedes the interrupted one */
	memset(&j2, 0, sizeof(j2));
	strcpy(j2.port, "1-2");
	strcpy(j2.sha, "dd44");
	CHECK_EQ_INT(store_job_begin(s, &j2), 0);
	CHECK_EQ_INT(store_job_unfinished(s, "1-2", &ju), 0);
	CHECK_EQ_INT(ju.id, j2.id);
	strcpy(j2.result, "succeeded");
	CHECK_EQ_INT(store_job_end(s, &j2), 0);
	CHECK_EQ_INT(store_job_unfinished(s, "1-2", &ju), -ENOENT);
	store_close(s);
	cmd = xasprintf("rm -rf '%s'", dir);
	CHECK_EQ_INT(system(cmd), 0);
	free(cmd);
	free(dir);
}

int
main(void)
{
	char *dir = tmpdir(), *path = NULL;
	struct store *s = NULL;
	struct store_board b, got;
	struct store_desired d, dg;
	struct store_job j, ju;
	json_object *arr = NULL;
	char sha[SHA256_HEX_LEN + 1];
	static const char data[] = "firmware bytes";
	uint8_t *back = NULL;
	size_t back_len = 0;

	CHECK(dir != NULL);
	CHECK_EQ_INT(store_open(dir, &s), 0);
	CHECK_EQ_INT(store_schema_version(s), 2);

	/* two identical boards on two ports are two boards */
	memset(&b, 0, sizeof(b));
	strcpy(b.port, "1-1");
	strcpy(b.serial, "ABC");
	strcpy(b.board, "octopus-f446");
	strcpy(b.last_mode, "klipper-app");
	CHECK_EQ_INT(store_board_upsert(s, &b), 0);
	CHECK(b.id > 0);
	{
		struct store_board b2 = b;

		strcpy(b2.port, "1-2");
		CHECK_EQ_INT(store_board_upsert(s, &b2), 0);
		CHECK(b2.id != b.id);
	}
	/* an update keeps the id and first_seen, and does not forget the board name */
	{
		struct store_board again = b;

		again.board[0] = 0;
		strcpy(again.last_mode, "katapult");
		again.last_seen = b.last_seen + 100;
		CHECK_EQ_INT(store_board_upsert(s, &again), 0);
		CHECK_EQ_INT(again.id, b.id);
		CHECK_EQ_INT(store_board_find(s, "1-1", "ABC", &got), 0);
		CHECK_STREQ(got.board, "octopus-f446");
		CHECK_STREQ(got.last_mode, "katapult");
		CHECK_EQ_INT(got.first_seen, b.first_seen);
	}
	CHECK_EQ_INT(store_board_last_on_port(s, "1-1", &got), 0);
	CHECK_EQ_INT(got.id, b.id);
	CHECK_EQ_INT(store_board_last_on_port(s, "9-9", &got), -ENOENT);
	CHECK_EQ_INT(store_board_set_installed(s, b.id, "aa", "v1"), 0);

	/* firmware is content addressed and idempotent */
	sha256_hex(data, sizeof(data), sha);
	CHECK_EQ_INT(store_firmware_put(s, sha, data, sizeof(data), "bin", "a.bin"), 0);
	CHECK_EQ_INT(store_firmware_put(s, sha, data, sizeof(data), "bin", "b.bin"), 0);
	CHECK_EQ_INT(store_firmware_path(s, sha, &path), 0);
	CHECK_EQ_INT(read_file(path, 1024, &back, &back_len), 0);
	CHECK_EQ_INT(back_len, sizeof(data));
	CHECK(back && memcmp(back, data, sizeof(data)) == 0);
	CHECK_EQ_INT(store_firmware_put(s, "nothex", data, 1, NULL, NULL), -EINVAL);

	memset(&d, 0, sizeof(d));
	strcpy(d.profile, "octopus");
	strcpy(d.sha, sha);
	strcpy(d.source, "a.bin");
	d.size = sizeof(data);
	CHECK_EQ_INT(store_desired_set(s, &d), 0);
	CHECK_EQ_INT(store_desired_get(s, "octopus", &dg), 0);
	CHECK_STREQ(dg.sha, sha);
	CHECK_EQ_INT(store_desired_get(s, "none", &dg), -ENOENT);
	/* desired must refer to stored firmware */
	strcpy(d.sha, "0000000000000000000000000000000000000000000000000000000000000000");
	CHECK(store_desired_set(s, &d) < 0);

	memset(&j, 0, sizeof(j));
	j.board_id = b.id;
	strcpy(j.port, "1-1");
	strcpy(j.profile, "octopus");
	strcpy(j.method, "katapult");
	strcpy(j.sha, sha);
	strcpy(j.step, "write");
	CHECK_EQ_INT(store_job_begin(s, &j), 0);
	CHECK_EQ_INT(store_job_unfinished(s, "1-1", &ju), 0);
	CHECK_EQ_INT(ju.id, j.id);
	strcpy(j.result, "succeeded");
	j.bytes = 1234;
	CHECK_EQ_INT(store_job_end(s, &j), 0);
	CHECK_EQ_INT(store_job_unfinished(s, "1-1", &ju), -ENOENT);
	CHECK_EQ_INT(store_history_json(s, -1, 0, &arr), 0);
	CHECK_EQ_INT(json_object_array_length(arr), 1);
	CHECK_STREQ(json_object_get_string(
			json_object_object_get(json_object_array_get_idx(arr, 0), "result")),
		    "succeeded");
	CHECK_EQ_INT(json_object_get_int64(
			 json_object_object_get(json_object_array_get_idx(arr, 0), "bytes")),
		     1234);
	json_object_put(arr);

	CHECK(!store_bad_is_marked(s, b.id, sha));
	CHECK_EQ_INT(store_bad_mark(s, b.id, sha, "did not boot"), 0);
	CHECK(store_bad_is_marked(s, b.id, sha));
	CHECK_EQ_INT(store_bad_clear(s, b.id), 0);
	CHECK(!store_bad_is_marked(s, b.id, sha));

	/* reopen: everything is still there, no second migration */
	s = store_close(s);
	CHECK_EQ_INT(store_open(dir, &s), 0);
	CHECK_EQ_INT(store_schema_version(s), 2);
	CHECK_EQ_INT(store_board_find(s, "1-1", "ABC", &got), 0);
	CHECK_STREQ(got.installed_sha, "aa");
	CHECK_EQ_INT(store_boards_json(s, &arr), 0);
	CHECK_EQ_INT(json_object_array_length(arr), 2);
	json_object_put(arr);
	store_close(s);

	free(back);
	free(path);
	{
		char *cmd = xasprintf("rm -rf '%s'", dir);

		CHECK_EQ_INT(system(cmd), 0);
		free(cmd);
	}
	free(dir);
	test_migrate_from_1();
	test_job_state();
	TEST_DONE();
}
