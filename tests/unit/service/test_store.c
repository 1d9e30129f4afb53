/* SPDX-License-Identifier: GPL-2.0-or-later */
/* test_store: the SQLite state survives reopening, migrates, and keeps identities apart. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

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
	CHECK_EQ_INT(store_schema_version(s), 1);

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
	CHECK_EQ_INT(store_schema_version(s), 1);
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
	TEST_DONE();
}
