/* SPDX-License-Identifier: GPL-2.0-or-later */
/* test_engine_octoprint: boards driven by OctoPrint (profile host = "octoprint") with the
 * unmodified daemon, production-like: OctoPrint (tests/integration/fake_octoprint.py) runs as
 * another user and holds the board's tty open while connected, as its pyserial does.
 *
 * - printing: refused, the board untouched, OctoPrint's connection left as it was;
 * - unreachable, a refused key, a missing key file: refused with a message naming the
 *   board, the URL or the file;
 * - idle: OctoPrint disconnects, the holder check finds the tty free, the board is flashed
 *   and OctoPrint is connected again, with its baudrate and profile, to the board's port;
 * - a port OctoPrint does not release: the job fails and the connection is given back;
 * - OctoPrint connected to another board: that connection is never touched;
 * - mixed hosts: a Moonraker profile and an OctoPrint profile on one daemon, each gated by
 *   its own host;
 * - a daemon killed after the disconnect: the next one gives the port back. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "flash.h"
#include "harness.h"
#include "service/octoprint.h"
#include "test_engine_lib.h"
#include "util.h"

#define KEY "OCTOPRINTKEY0123456789ABCDEF0000"

static char op_url[64], mr_url[64];
static char *calls_path, *key_file;

/* The fake's call log from byte `from` on (caller frees). */
static char *
calls_since(size_t from)
{
	uint8_t *data = NULL;
	size_t n = 0;
	char *s;

	if (read_file(calls_path, 1 << 20, &data, &n) < 0)
		return xstrdup("");
	s = xstrndup(from < n ? (const char *)data + from : "", from < n ? n - from : 0);
	free(data);
	return s;
}

static size_t
calls_len(void)
{
	struct stat st;

	return stat(calls_path, &st) == 0 ? (size_t)st.st_size : 0;
}

/* POST to the fake, as OctoPrint's clients do (the library's own request code). */
static int
op_post(const char *path, const char *body)
{
	struct octoprint_reply rep;

	return octoprint_request(op_url, KEY, path, body, 5000, NULL, &rep);
}

static int
op_connection(struct octoprint_conn *c)
{
	struct octoprint_reply rep;
	char *body = NULL;
	int r = octoprint_request(op_url, KEY, "/api/connection", NULL, 5000, &body, &rep);

	if (r >= 0)
		r = octoprint_parse_connection(body, strlen(body), c);
	free(body);
	return r;
}

static char *
flashed_needle(struct sim_board *b, const char *sha)
{
	return xasprintf("flashed %s on port %s with %.12s", sim_board_model(b)->name,
			 sim_board_port(b), sha);
}

static void
queue_image(struct sim_board *b, const char *profile, const char *name, char sha[65], uint8_t **img,
	    size_t *len)
{
	char *out = NULL, *path = eng_image(b, 0, name, 16 * 1024, img, len, sha);

	CHECK_EQ_INT(eng_ctl(&out, "queue", profile, path, NULL), 0);
	free(out);
	free(path);
}

/* A refusal at the gate: the history row says why, and the board was never touched. */
static void
check_refused(struct sim_board *b, const char *needle, const uint8_t *before, uint64_t erases)
{
	json_object *hist = eng_history();
	json_object *row = eng_newest_on(hist, sim_board_port(b));

	CHECK_STREQ(eng_str(row, "result"), "failed");
	CHECK_STREQ(eng_str(row, "step"), "gate");
	CHECK(strstr(eng_str(row, "error"), needle) != NULL);
	if (!strstr(eng_str(row, "error"), needle))
		fprintf(stderr, "error was: %s\n", eng_str(row, "error"));
	json_object_put(hist);
	CHECK(flash_equals(sim_board_flash(b), sim_board_app_start(b), before, 65536));
	CHECK_EQ_INT(eng_erases(b), erases);
	CHECK_EQ_INT(sim_board_enumerations(b), 1);
}

/* OctoPrint prints on 13-1: refused; idle: released, flashed, connected again. */
static void
test_gate_and_release(struct sim_board *b)
{
	uint8_t *before = eng_flash_copy(b, sim_board_app_start(b), sim_board_app_start(b) + 65536);
	uint64_t erases = eng_erases(b);
	struct octoprint_conn c;
	char sha[65], *needle, *calls, *out = NULL, *body;
	const char *o, *d, *w, *f, *cn;
	uint8_t *img;
	size_t len, mark;

	/* OctoPrint connected to the board through its by-id link, 250000 baud, a profile */
	body = xasprintf("{\"command\":\"connect\",\"port\":\"%s\",\"baudrate\":250000,"
			 "\"printerProfile\":\"skr_pro\"}",
			 sim_board_by_id(b));
	CHECK_EQ_INT(op_post("/api/connection", body), 0);
	free(body);
	CHECK_EQ_INT(op_connection(&c), 0);
	CHECK_STREQ(c.state, "Operational");
	CHECK_EQ_INT(op_post("/_fake/state", "{\"state\":\"Printing\"}"), 0);

	mark = calls_len();
	queue_image(b, "op-main", "v0.13.0-op", sha, &img, &len);
	CHECK_EQ_INT(eng_wait("printer at http://127.0.0.1:", 10000), 0);
	CHECK_EQ_INT(eng_wait("is Printing; not flashing octopus-f446 now", 10000), 0);
	check_refused(b, "is Printing", before, erases);
	calls = calls_since(mark);
	CHECK(strstr(calls, "GET /api/job") != NULL);
	CHECK(strstr(calls, "POST disconnect") == NULL);
	free(calls);
	CHECK_EQ_INT(op_connection(&c), 0);
	CHECK_STREQ(c.port, sim_board_by_id(b));

	/* the print ended: released, flashed, given back */
	CHECK_EQ_INT(op_post("/_fake/state", "{\"state\":\"Operational\"}"), 0);
	mark = calls_len();
	needle = flashed_needle(b, sha);
	CHECK_EQ_INT(eng_ctl(&out, "flash", "13-1", NULL), 0);
	free(out);
	CHECK_EQ_INT(eng_wait(needle, 30000), 0);
	CHECK_EQ_INT(eng_wait("is connected again to", 20000), 0);
	CHECK(flash_equals(sim_board_flash(b), sim_board_app_start(b), img, len));
	o = sim_proc_output(eng_daemon());
	d = strstr(o, "released /dev/serial/by-id/");
	w = strstr(o, "octopus-f446 on port 13-1: bootloader reports");
	f = strstr(o, needle);
	cn = strstr(o, "is connected again to");
	CHECK(d && w && f && cn && d < w && w < f && f < cn);
	calls = calls_since(mark);
	{
		char *want = xasprintf("POST connect port=%s baudrate=250000 profile=skr_pro",
				       sim_board_by_id(b));
		const char *p1 = strstr(calls, "POST disconnect"), *p2 = strstr(calls, want);

		CHECK(p1 && p2 && p1 < p2);
		/* exactly one of each */
		CHECK(p1 && !strstr(p1 + 1, "POST disconnect"));
		CHECK(p2 && !strstr(p2 + 1, "POST connect"));
		if (!p2)
			fprintf(stderr, "calls:\n%s\nwanted: %s\n", calls, want);
		free(want);
	}
	free(calls);
	/* OctoPrint holds the (re-enumerated) board's port again */
	CHECK_EQ_INT(op_connection(&c), 0);
	CHECK_STREQ(c.state, "Operational");
	CHECK_STREQ(c.port, sim_board_by_id(b));
	CHECK_EQ_INT((int)c.baudrate, 250000);
	CHECK_STREQ(c.profile, "skr_pro");
	free(needle);
	free(img);
	free(before);
}

/* OctoPrint keeps the port open despite the disconnect: refused after the wait, nothing
 * written, and the connection is given back anyway. Then OctoPrint is connected to 13-1,
 * and 13-2 (also an OctoPrint profile) is flashed without touching that connection. */
static void
test_not_released_and_other_board(struct sim_board *b1, struct sim_board *b2)
{
	uint8_t *before =
	    eng_flash_copy(b1, sim_board_app_start(b1), sim_board_app_start(b1) + 65536);
	uint64_t erases = eng_erases(b1);
	struct octoprint_conn c;
	char sha[65], sha2[65], *needle, *calls, *out = NULL;
	uint8_t *img, *img2;
	size_t len, len2, mark, enums = sim_board_enumerations(b1);

	CHECK_EQ_INT(op_post("/_fake/mode", "{\"mode\":\"ignore-disconnect\"}"), 0);
	mark = calls_len();
	queue_image(b1, "op-main", "v0.13.0-stuck", sha, &img, &len);
	CHECK_EQ_INT(eng_wait("after the disconnect; not flashing octopus-f446", 30000), 0);
	CHECK_EQ_INT(eng_wait_count("is connected again to", 2, 20000), 0);
	CHECK(flash_equals(sim_board_flash(b1), sim_board_app_start(b1), before, 65536));
	CHECK_EQ_INT(eng_erases(b1), erases);
	CHECK_EQ_INT(sim_board_enumerations(b1), enums);
	calls = calls_since(mark);
	{
		const char *p1 = strstr(calls, "POST disconnect"),
			   *p2 = strstr(calls, "POST connect");

		CHECK(p1 && p2 && p1 < p2);
	}
	free(calls);
	/* the failure is retried once after a cool-down: with the port released this time, it
	 * flashes, and OctoPrint is connected again a third time */
	CHECK_EQ_INT(op_post("/_fake/mode", "{\"mode\":\"normal\"}"), 0);
	needle = flashed_needle(b1, sha);
	CHECK_EQ_INT(eng_wait(needle, 60000), 0);
	CHECK_EQ_INT(eng_wait_count("is connected again to", 3, 20000), 0);
	CHECK(flash_equals(sim_board_flash(b1), sim_board_app_start(b1), img, len));
	free(needle);

	/* another board of an OctoPrint profile while OctoPrint drives 13-1 */
	mark = calls_len();
	queue_image(b2, "op-other", "v0.13.0-other", sha2, &img2, &len2);
	needle = flashed_needle(b2, sha2);
	CHECK_EQ_INT(eng_wait(needle, 30000), 0);
	CHECK_EQ_INT(eng_wait("its connection is left alone; flashing octopus-f446", 1000), 0);
	CHECK(flash_equals(sim_board_flash(b2), sim_board_app_start(b2), img2, len2));
	calls = calls_since(mark);
	CHECK(strstr(calls, "GET /api/connection") != NULL);
	CHECK(strstr(calls, "POST") == NULL);
	free(calls);
	CHECK_EQ_INT(op_connection(&c), 0);
	CHECK_STREQ(c.port, sim_board_by_id(b1));
	CHECK_STREQ(c.state, "Operational");
	(void)out;
	free(needle);
	free(img);
	free(img2);
	free(before);
}

/* Fail-closed: no OctoPrint, a key OctoPrint refuses, no key file. */
static void
test_refusals(struct sim_board *down, struct sim_board *badkey, struct sim_board *nokey)
{
	struct sim_board *bs[] = {down, badkey, nokey};
	const char *profiles[] = {"op-down", "op-badkey", "op-nokey"};
	const char *needles[] = {
	    "OctoPrint at http://127.0.0.1:1 did not answer",
	    "refused the API key from",
	    "does not exist: put an application key of OctoPrint",
	};

	for (size_t i = 0; i < 3; i++) {
		struct sim_board *b = bs[i];
		uint8_t *before = eng_flash_copy(b, sim_board_app_start(b),
						 sim_board_app_start(b) + 65536),
			*img;
		uint64_t erases = eng_erases(b);
		char sha[65], *name = xasprintf("v0.13.0-%s", profiles[i]);
		size_t len;

		queue_image(b, profiles[i], name, sha, &img, &len);
		CHECK_EQ_INT(eng_wait(needles[i], 10000), 0);
		check_refused(b, needles[i], before, erases);
		free(name);
		free(img);
		free(before);
	}
	/* a key file the daemon's user cannot read (root's, 0600): says so and how to fix it */
	if (sim_production()) {
		char *path = xasprintf("%s/missing.key", eng_dir()), *out = NULL;

		CHECK_EQ_INT(write_file_atomic(path, KEY "\n", strlen(KEY) + 1, 0600), 0);
		/* `flash` waits for the job: exit 1, refused */
		CHECK_EQ_INT(eng_ctl(&out, "flash", "13-5", NULL), 1);
		free(out);
		CHECK_EQ_INT(eng_wait("is not readable by skrflashd's user (Permission denied): "
				      "chown skrflash",
				      10000),
			     0);
		CHECK_EQ_INT(sim_board_enumerations(nokey), 1);
		free(path);
	}
}

/* Klipper+Moonraker and OctoPrint on one daemon: each board is gated by its own host. */
static void
test_mixed(struct sim_board *op, struct sim_board *mr_busy, struct sim_board *mr_idle)
{
	uint8_t *before = eng_flash_copy(mr_busy, sim_board_app_start(mr_busy),
					 sim_board_app_start(mr_busy) + 65536),
		*img, *img2;
	uint64_t erases = eng_erases(mr_busy);
	char sha[65], sha2[65], *needle;
	size_t len, len2, mark;

	/* OctoPrint prints on 13-1; Moonraker's printers are one printing, one idle */
	CHECK_EQ_INT(op_post("/_fake/state", "{\"state\":\"Paused\"}"), 0);
	mark = calls_len();
	queue_image(mr_busy, "mr-busy", "v0.13.0-mrbusy", sha, &img, &len);
	CHECK_EQ_INT(eng_wait("is printing; not flashing octopus-f446 now", 10000), 0);
	check_refused(mr_busy, "is printing", before, erases);
	queue_image(mr_idle, "mr-idle", "v0.13.0-mridle", sha2, &img2, &len2);
	needle = flashed_needle(mr_idle, sha2);
	CHECK_EQ_INT(eng_wait(needle, 30000), 0);
	CHECK(flash_equals(sim_board_flash(mr_idle), sim_board_app_start(mr_idle), img2, len2));
	/* OctoPrint was not asked about Moonraker's boards */
	{
		char *calls = calls_since(mark);

		CHECK(strstr(calls, "GET /api") == NULL);
		free(calls);
	}
	free(needle);
	free(img);
	free(img2);
	free(before);
	/* and OctoPrint's paused printer is refused by OctoPrint (it stays paused: the retry
	 * after the cool-down is refused too) */
	{
		uint8_t *b4 = eng_flash_copy(op, sim_board_app_start(op),
					     sim_board_app_start(op) + 65536),
			*img3;
		uint64_t e4 = eng_erases(op);
		size_t len3;
		char sha3[65];

		queue_image(op, "op-main", "v0.13.0-paused", sha3, &img3, &len3);
		CHECK_EQ_INT(eng_wait("is Paused; not flashing octopus-f446 now", 10000), 0);
		CHECK(flash_equals(sim_board_flash(op), sim_board_app_start(op), b4, 65536));
		CHECK_EQ_INT(eng_erases(op), e4);
		free(img3);
		free(b4);
	}
}

/* The daemon was killed after OctoPrint released 13-2's port: its record is found by the
 * next daemon, which connects OctoPrint again once the board is up. */
static void
test_restart(struct sim_board *b)
{
	char *dir = xasprintf("%s/state/octoprint", eng_dir());
	char *path = xasprintf("%s/13-2.json", dir);
	char *text = xasprintf("{\"url\":\"%s\",\"api_key_file\":\"%s\",\"board\":"
			       "\"octopus-f446\",\"port\":\"%s\",\"baudrate\":115200,"
			       "\"printerProfile\":\"_default\"}",
			       op_url, key_file, sim_board_tty(b));
	struct octoprint_conn c;
	char *want, *calls;
	size_t mark = calls_len();

	CHECK_EQ_INT(op_post("/api/connection", "{\"command\":\"disconnect\"}"), 0);
	CHECK_EQ_INT(op_post("/_fake/state", "{\"state\":\"Operational\"}"), 0);
	(void)mkdir(dir, 0750);
	CHECK_EQ_INT(write_file_atomic(path, text, strlen(text), 0640), 0);
	if (sim_production()) {
		CHECK_EQ_INT(chown(dir, sim_daemon_uid(), sim_ops_gid()), 0);
		CHECK_EQ_INT(chown(path, sim_daemon_uid(), sim_ops_gid()), 0);
	}
	CHECK_EQ_INT(eng_start(NULL), 0);
	CHECK_EQ_INT(eng_wait("is connected again to", 20000), 0);
	want = xasprintf("POST connect port=%s baudrate=115200 profile=_default", sim_board_tty(b));
	calls = calls_since(mark);
	CHECK(strstr(calls, want) != NULL);
	CHECK_EQ_INT(op_connection(&c), 0);
	CHECK_STREQ(c.port, sim_board_tty(b));
	CHECK_STREQ(c.state, "Operational");
	/* given back once: the record is gone */
	CHECK(access(path, F_OK) < 0);
	free(calls);
	free(want);
	free(text);
	free(path);
	free(dir);
}

/* The fakes, both outside the preload: OctoPrint as another user (it holds ttys as its
 * pyserial does), Moonraker as the caller. */
struct fakes {
	pid_t op, mr;
	int op_in, mr_in;
};

static void
fakes_start(struct fakes *f)
{
	char port[32], *root = xstrdup(sim_root(eng_sim()));
	char *op[] = {(char[]){"python3"}, (char[]){"tests/integration/fake_octoprint.py"}, root,
		      calls_path, NULL};
	char *mr[] = {(char[]){"python3"}, (char[]){"tests/integration/fake_moonraker.py"}, NULL};

	f->op_in = f->mr_in = -1;
	f->op = eng_fake_start("klipper", op, &f->op_in, port, sizeof(port)); /* OctoPrint's user */
	CHECK(f->op > 0);
	(void)snprintf(op_url, sizeof(op_url), "http://127.0.0.1:%s", port);
	f->mr = eng_fake_start(NULL, mr, &f->mr_in, port, sizeof(port));
	CHECK(f->mr > 0);
	(void)snprintf(mr_url, sizeof(mr_url), "http://127.0.0.1:%s", port);
	free(root);
}

static void
fakes_stop(struct fakes *f)
{
	if (f->op_in >= 0)
		close(f->op_in); /* the fakes exit on EOF */
	if (f->mr_in >= 0)
		close(f->mr_in);
	if (f->op > 0)
		(void)waitpid(f->op, NULL, 0);
	if (f->mr > 0)
		(void)waitpid(f->mr, NULL, 0);
}

/* The fake's call log and the key files, as docs/safety.md says: mode 0600, owned by the
 * daemon's user (the fake runs as another user: it appends to a log the test made). */
static void
write_key_files(void)
{
	char *wrong = xasprintf("%s/wrong.key", eng_dir());

	CHECK_EQ_INT(write_file_atomic(calls_path, "", 0, 0666), 0);
	(void)chmod(calls_path, 0666);
	CHECK_EQ_INT(write_file_atomic(key_file, KEY "\n", strlen(KEY) + 1, 0600), 0);
	if (sim_production())
		CHECK_EQ_INT(chown(key_file, sim_daemon_uid(), 0), 0);
	CHECK_EQ_INT(write_file_atomic(wrong, "0000BADKEY\n", 11, 0600), 0);
	if (sim_production())
		CHECK_EQ_INT(chown(wrong, sim_daemon_uid(), 0), 0);
	free(wrong);
}

/* OctoPrint profiles on 13-1..13-5 (main, other, down, a refused key, no key file) and
 * Moonraker ones on 13-6 (printing) and 13-7 (idle). */
static void
write_conf(const char *nokey)
{
	char *profiles = xasprintf(
	    "  { name = \"op-main\"; match = { board = \"octopus-f446\"; port = \"13-1\"; };\n"
	    "    auto_flash = [\"queue\"]; host = \"octoprint\";\n"
	    "    octoprint = { url = \"%s\"; api_key_file = \"%s\"; }; },\n"
	    "  { name = \"op-other\"; match = { board = \"octopus-f446\"; port = \"13-2\"; };\n"
	    "    auto_flash = [\"queue\"]; host = \"octoprint\";\n"
	    "    octoprint = { url = \"%s\"; api_key_file = \"%s\"; }; },\n"
	    "  { name = \"op-down\"; match = { board = \"octopus-f446\"; port = \"13-3\"; };\n"
	    "    auto_flash = [\"queue\"]; host = \"octoprint\";\n"
	    "    octoprint = { url = \"http://127.0.0.1:1\"; api_key_file = \"%s\"; }; },\n"
	    "  { name = \"op-badkey\"; match = { board = \"octopus-f446\"; port = \"13-4\"; };\n"
	    "    auto_flash = [\"queue\"]; host = \"octoprint\";\n"
	    "    octoprint = { url = \"%s\"; api_key_file = \"%s/wrong.key\"; }; },\n"
	    "  { name = \"op-nokey\"; match = { board = \"octopus-f446\"; port = \"13-5\"; };\n"
	    "    auto_flash = [\"queue\"]; host = \"octoprint\";\n"
	    "    octoprint = { url = \"%s\"; api_key_file = \"%s\"; }; },\n"
	    "  { name = \"mr-busy\"; match = { board = \"octopus-f446\"; port = \"13-6\"; };\n"
	    "    auto_flash = [\"queue\"]; moonraker = \"%s/printing\"; },\n"
	    "  { name = \"mr-idle\"; match = { board = \"octopus-f446\"; port = \"13-7\"; };\n"
	    "    auto_flash = [\"queue\"]; moonraker = \"%s/standby\"; }",
	    op_url, key_file, op_url, key_file, key_file, op_url, eng_dir(), op_url, nokey, mr_url,
	    mr_url);

	eng_write_conf("", profiles);
	free(profiles);
}

int
main(int argc, char **argv)
{
	struct sim_board *b1, *b2, *bd, *bk, *bn, *mb, *mi;
	struct fakes f;
	char *nokey;
	int r;

	eng_init(argc, argv, "engine-octoprint");
	calls_path = xasprintf("%s/octoprint-calls.log", eng_dir());
	key_file = xasprintf("%s/octoprint.key", eng_dir());
	nokey = xasprintf("%s/missing.key", eng_dir());
	write_key_files();
	b1 = eng_add("octopus-f446", "13-1", SIM_MODE_KLIPPER_APP, true);
	b2 = eng_add("octopus-f446", "13-2", SIM_MODE_KLIPPER_APP, true);
	bd = eng_add("octopus-f446", "13-3", SIM_MODE_KLIPPER_APP, true);
	bk = eng_add("octopus-f446", "13-4", SIM_MODE_KLIPPER_APP, true);
	bn = eng_add("octopus-f446", "13-5", SIM_MODE_KLIPPER_APP, true);
	mb = eng_add("octopus-f446", "13-6", SIM_MODE_KLIPPER_APP, true);
	mi = eng_add("octopus-f446", "13-7", SIM_MODE_KLIPPER_APP, true);
	fakes_start(&f);
	write_conf(nokey);
	r = b1 && b2 && bd && bk && bn && mb && mi && f.op > 0 ? eng_start(NULL) : -ENODEV;
	CHECK_EQ_INT(r, 0);
	if (r == 0) {
		test_gate_and_release(b1);
		test_not_released_and_other_board(b1, b2);
		test_refusals(bd, bk, bn);
		test_mixed(b1, mb, mi);
		CHECK_EQ_INT(eng_kill(), 128 + 9);
		test_restart(b2);
		CHECK_EQ_INT(eng_stop(), 0);
	}
	{
		char *log = calls_since(0);

		fprintf(stderr, "fake OctoPrint calls:\n%s", log);
		free(log);
	}
	eng_done();
	fakes_stop(&f);
	free(nokey);
	free(key_file);
	free(calls_path);
	TEST_DONE();
}
