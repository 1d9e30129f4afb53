/* SPDX-License-Identifier: GPL-2.0-or-later */
/* test_engine_recover: the flash engine when things go wrong after the plan - a new image
 * that does not boot (rolled back to the last known-good one, marked bad, not retried until
 * `skrflashctl retry`), a board unplugged during the write (flashed again when it comes back
 * in its bootloader), and the daemon killed mid-write (the next daemon resumes the same job
 * from the write step). Boards boot-loop into Katapult (SIM_BOOTLOOP_RECOVER). */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "flash.h"
#include "harness.h"
#include "test_engine_lib.h"
#include "util.h"

static const char profiles[] =
    "  { name = \"rb\"; match = { board = \"octopus-f446\"; port = \"1-1\"; };\n"
    "    auto_flash = [\"hotplug\", \"queue\"]; },\n"
    "  { name = \"unplug\"; match = { board = \"octopus-f446\"; port = \"1-2\"; };\n"
    "    auto_flash = [\"hotplug\", \"queue\"]; },\n"
    "  { name = \"kill\"; match = { board = \"octopus-f446\"; port = \"1-3\"; };\n"
    "    auto_flash = [\"hotplug\", \"queue\"]; },\n"
    "  { name = \"lpc\"; match = { board = \"skr-1.4\"; port = \"1-4\"; };\n"
    "    methods = [\"katapult\"]; auto_flash = [\"hotplug\", \"queue\"]; }";

static size_t
rows_on(json_object *hist, const char *port)
{
	size_t n = 0;

	for (size_t i = 0; hist && i < json_object_array_length(hist); i++)
		n += strcmp(eng_str(json_object_array_get_idx(hist, i), "port"), port) == 0;
	return n;
}

static char *
flashed_needle(struct sim_board *b, const char *sha)
{
	return xasprintf("flashed %s on port %s with %.12s", sim_board_model(b)->name,
			 sim_board_port(b), sha);
}

/* Good image A, then B that crashes at start-up, on the board on 1-1. */
struct rollback {
	struct sim_board *b;
	struct flash *f;
	uint32_t start;
	uint8_t *ia, *ib, *bl; /* the images, and the bootloader's bytes before them */
	size_t la, lb, rows;
	char sa[65], sb[65];
	long long job_b;
};

/* B passes every check the host can make, and crashes at start-up on the board: A back. */
static void
rollback_crash(struct rollback *t, const char *pb)
{
	struct sim_fault crash = {.kind = SIM_FAULT_BOOT_FAIL};
	char buf[128], *out = NULL, *needle;

	CHECK_EQ_INT(sim_board_set_fault(t->b, &crash), 0);
	CHECK_EQ_INT(eng_ctl(&out, "queue", "rb", pb, NULL), 0);
	free(out);
	needle = xasprintf("did not boot firmware %.12s; rolled back to the last known-good %.12s",
			   t->sb, t->sa);
	CHECK_EQ_INT(eng_wait(needle, 30000), 0);
	free(needle);
	needle = xasprintf("octopus-f446 on port 1-1 did not boot the new firmware %.12s", t->sb);
	CHECK_EQ_INT(eng_count(needle), 1);
	free(needle);
	CHECK_EQ_INT(sim_board_wait_mode(t->b, SIM_MODE_KLIPPER_APP, 5000), 0);
	CHECK_STREQ(sim_board_app_version(t->b), "v0.13.0-good");
	CHECK(flash_equals(t->f, t->start, t->ia, t->la));
	CHECK(flash_equals(t->f, t->f->base, t->bl, t->start - t->f->base));
	CHECK_STREQ(eng_board_field("1-1", "installed_sha256", buf, sizeof(buf)), t->sa);
}

/* B's row says it was rolled back and how to try it again; the journal line is a warning. */
static void
rollback_recorded(struct rollback *t)
{
	json_object *hist = eng_history(), *row = eng_newest_on(hist, "1-1");
	char *line;

	t->job_b = eng_int(row, "job");
	CHECK_STREQ(eng_str(row, "sha256"), t->sb);
	CHECK_STREQ(eng_str(row, "result"), "rolled-back");
	CHECK_STREQ(eng_str(row, "method"), "katapult");
	CHECK(strstr(eng_str(row, "error"), "marked bad") != NULL);
	CHECK(strstr(eng_str(row, "error"), "skrflashctl retry 1-1") != NULL);
	t->rows = rows_on(hist, "1-1");
	CHECK_EQ_INT(t->rows, 2);
	json_object_put(hist);
	line = eng_line("rolled back to the last known-good");
	CHECK(line && strncmp(line, "<4>", 3) == 0);
	CHECK(line && strstr(line, "step=rollback-boot-check"));
	free(line);
}

/* B is bad for this board: the board coming back (in its app or in Katapult) does not start
 * it again, nor does a plain `flash` (it needs --force). */
static void
rollback_not_again(struct rollback *t)
{
	json_object *hist;
	char *out = NULL, *needle;

	CHECK_EQ_INT(sim_board_unplug(t->b), 0);
	CHECK_EQ_INT(eng_wait("board left: octopus-f446 on port 1-1", 10000), 0);
	CHECK_EQ_INT(sim_board_plug(t->b, SIM_MODE_KLIPPER_APP), 0);
	needle = xasprintf("firmware %.12s did not boot on octopus-f446 before; not flashing it "
			   "again",
			   t->sb);
	CHECK_EQ_INT(eng_wait(needle, 10000), 0);
	free(needle);
	CHECK_EQ_INT(sim_board_plug(t->b, SIM_MODE_KATAPULT), 0);
	CHECK_EQ_INT(eng_wait("on port 1-1: klipper-app -> katapult", 10000), 0);
	CHECK_EQ_INT(sim_board_plug(t->b, SIM_MODE_KLIPPER_APP), 0);
	CHECK_EQ_INT(eng_wait("on port 1-1: katapult -> klipper-app", 10000), 0);
	hist = eng_history();
	CHECK_EQ_INT(rows_on(hist, "1-1"), t->rows);
	CHECK_EQ_INT(eng_int(eng_newest_on(hist, "1-1"), "job"), t->job_b);
	json_object_put(hist);

	CHECK_EQ_INT(eng_ctl(&out, "flash", "1-1", NULL), 1);
	CHECK(out && strstr(out, "did not boot on octopus-f446 before") &&
	      strstr(out, "flash --force 1-1"));
	free(out);
	hist = eng_history();
	CHECK_EQ_INT(rows_on(hist, "1-1"), t->rows);
	json_object_put(hist);
}

/* `retry` lifts the mark and flashes B at once; it boots now */
static void
rollback_retry(struct rollback *t)
{
	char buf[128], *out = NULL, *needle;

	CHECK_EQ_INT(eng_ctl(&out, "retry", "1-1", NULL), 0);
	CHECK(out && strstr(out, "mark cleared; flashing started"));
	free(out);
	needle = flashed_needle(t->b, t->sb);
	CHECK_EQ_INT(eng_wait(needle, 20000), 0);
	free(needle);
	CHECK_STREQ(eng_board_field("1-1", "installed_sha256", buf, sizeof(buf)), t->sb);
	CHECK(flash_equals(t->f, t->start, t->ib, t->lb));
	CHECK(flash_equals(t->f, t->f->base, t->bl, t->start - t->f->base));
}

static void
test_rollback(struct sim_board *b)
{
	struct rollback t = {.b = b, .f = sim_board_flash(b), .start = sim_board_app_start(b)};
	char buf[128], *out = NULL, *pa, *pb, *na;

	t.bl = eng_flash_copy(b, t.f->base, t.start);
	pa = eng_image(b, 0, "v0.13.0-good", 32 * 1024, &t.ia, &t.la, t.sa);
	pb = eng_image(b, 0, "v0.14.0-crashes", 32 * 1024, &t.ib, &t.lb, t.sb);
	na = flashed_needle(b, t.sa);
	/* A: the known-good image */
	CHECK_EQ_INT(eng_ctl(&out, "queue", "rb", pa, NULL), 0);
	free(out);
	CHECK_EQ_INT(eng_wait(na, 20000), 0);
	CHECK_STREQ(eng_board_field("1-1", "installed_sha256", buf, sizeof(buf)), t.sa);
	rollback_crash(&t, pb);
	rollback_recorded(&t);
	rollback_not_again(&t);
	rollback_retry(&t);
	free(na);
	free(pa);
	free(pb);
	free(t.ia);
	free(t.ib);
	free(t.bl);
}

static void
test_unplug(struct sim_board *b)
{
	struct flash *f = sim_board_flash(b);
	uint32_t start = sim_board_app_start(b);
	uint8_t *img, *bl = eng_flash_copy(b, f->base, start);
	size_t len;
	char sha[65], buf[128];
	char *path = eng_image(b, 0, "v0.13.0-unplug", 64 * 1024, &img, &len, sha);
	char *needle = flashed_needle(b, sha), *out = NULL;
	/* the cable goes at 16 KiB into the image, power stays off */
	struct sim_fault cut = {.kind = SIM_FAULT_UNPLUG_AT_BYTE, .at = 16 * 1024, .count = 0};
	json_object *hist, *row;
	long long failed_job;

	CHECK_EQ_INT(sim_board_set_fault(b, &cut), 0);
	CHECK_EQ_INT(eng_ctl(&out, "queue", "unplug", path, NULL), 0);
	free(out);
	CHECK_EQ_INT(eng_wait("was unplugged during step write", 20000), 0);
	CHECK_EQ_INT(sim_board_mode(b), SIM_MODE_OFF);
	/* what really happened, and no claim about where a board that is gone "stays" */
	{
		char *line = eng_line("was unplugged during step write");

		CHECK(line && strstr(line, "the job resumes when it is plugged in again"));
		CHECK(line && !strstr(line, "stays in"));
		free(line);
	}
	hist = eng_history();
	row = eng_newest_on(hist, "1-2");
	failed_job = eng_int(row, "job");
	CHECK_STREQ(eng_str(row, "result"), "interrupted");
	CHECK_STREQ(eng_str(row, "step"), "write");
	CHECK_STREQ(eng_str(row, "method"), "katapult");
	CHECK_STREQ(eng_str(row, "sha256"), sha);
	CHECK(strlen(eng_str(row, "error")) > 0);
	json_object_put(hist);
	CHECK(!flash_equals(sim_board_flash(b), start, img, len));
	CHECK_STREQ(eng_board_field("1-2", "installed_sha256", buf, sizeof(buf)), "");

	/* plugged back in: the half-written app cannot run, Katapult stays; the same job
	 * resumes from its write */
	CHECK_EQ_INT(sim_board_plug(b, SIM_MODE_KATAPULT), 0);
	CHECK_EQ_INT(eng_wait(needle, 20000), 0);
	hist = eng_history();
	row = eng_newest_on(hist, "1-2");
	CHECK_EQ_INT(eng_int(row, "job"), failed_job);
	CHECK_STREQ(eng_str(row, "result"), "succeeded");
	CHECK_EQ_INT(eng_int(row, "bytes"), (long long)len);
	json_object_put(hist);
	CHECK(flash_equals(sim_board_flash(b), start, img, len));
	CHECK(flash_equals(sim_board_flash(b), f->base, bl, start - f->base));
	CHECK_STREQ(eng_board_field("1-2", "installed_sha256", buf, sizeof(buf)), sha);
	free(needle);
	free(path);
	free(img);
	free(bl);
}

/* Waits (bounded) until the board has received n Katapult frames: the simulator has no
 * event for it. */
static int
wait_frames(struct sim_board *b, unsigned n, int timeout_ms)
{
	struct timespec tick = {.tv_sec = 0, .tv_nsec = 1000000};

	for (int i = 0; i < timeout_ms; i++) {
		struct sim_katapult_stats st;

		sim_board_katapult_stats(b, &st);
		if (st.frames_rx >= n)
			return 0;
		nanosleep(&tick, NULL);
	}
	return -ETIMEDOUT;
}

static void
test_kill(struct sim_board *b)
{
	struct flash *f = sim_board_flash(b);
	uint32_t start = sim_board_app_start(b);
	uint8_t *img, *bl = eng_flash_copy(b, f->base, start);
	size_t len;
	char sha[65], buf[128];
	char *path = eng_image(b, 0, "v0.13.0-kill", 64 * 1024, &img, &len, sha);
	char *needle = flashed_needle(b, sha), *out = NULL, *resumed;
	struct sim_katapult_stats st;
	/* the board goes quiet in the middle of the write: the daemon is killed right there */
	struct sim_fault stall = {.kind = SIM_FAULT_STALL, .at = 200, .count = 1500};
	json_object *hist, *row;
	long long job;

	sim_board_katapult_stats(b, &st);
	stall.at = 200;
	CHECK_EQ_INT(sim_board_set_fault(b, &stall), 0);
	CHECK_EQ_INT(eng_ctl(&out, "queue", "--no-wait", "kill", path, NULL), 0);
	free(out);
	CHECK_EQ_INT(eng_wait("octopus-f446 on port 1-3: bootloader reports", 20000), 0);
	CHECK_EQ_INT(wait_frames(b, st.frames_rx + 200, 10000), 0);
	CHECK_EQ_INT(eng_kill(), 128 + SIGKILL);
	CHECK_EQ_INT(sim_board_mode(b), SIM_MODE_KATAPULT);
	CHECK(!flash_equals(sim_board_flash(b), start, img, len));

	/* the next daemon finds the job in the write step and the board in Katapult */
	CHECK_EQ_INT(eng_start(NULL), 0);
	hist = eng_history();
	row = eng_newest_on(hist, "1-3");
	job = eng_int(row, "job");
	json_object_put(hist);
	resumed =
	    xasprintf("resuming flash of octopus-f446 on port 1-3 with %.12s (profile 'kill', "
		      "job %lld)",
		      sha, job);
	CHECK_EQ_INT(eng_wait(resumed, 20000), 0);
	CHECK_EQ_INT(eng_wait(needle, 20000), 0);
	hist = eng_history();
	row = eng_newest_on(hist, "1-3");
	CHECK_EQ_INT(eng_int(row, "job"), job);
	CHECK_STREQ(eng_str(row, "result"), "succeeded");
	CHECK_STREQ(eng_str(row, "sha256"), sha);
	CHECK_EQ_INT(rows_on(hist, "1-3"), 1);
	json_object_put(hist);
	CHECK(flash_equals(sim_board_flash(b), start, img, len));
	CHECK(flash_equals(sim_board_flash(b), f->base, bl, start - f->base));
	CHECK_STREQ(eng_board_field("1-3", "installed_sha256", buf, sizeof(buf)), sha);
	CHECK_EQ_INT(sim_board_wait_mode(b, SIM_MODE_KLIPPER_APP, 5000), 0);
	CHECK_STREQ(sim_board_app_version(b), "v0.13.0-kill");
	free(resumed);
	free(needle);
	free(path);
	free(img);
	free(bl);
}

/* An SKR 1.4 without Katapult whose bootloader takes Klipper's request into LPC DFU, where a
 * profile that does not allow the lpc-dfu method keeps skrflash from writing
 * (test_engine_lpcdfu flashes over it). The job says so at once and writes nothing. */
static void
test_lpc_dfu(struct sim_board *b)
{
	uint8_t *img, *before = eng_flash_copy(b, sim_board_flash(b)->base,
					       sim_board_flash(b)->base + 256 * 1024);
	size_t len;
	char sha[65];
	char *path = eng_image(b, 0, "v0.13.0-lpc", 16 * 1024, &img, &len, sha);
	char *out = NULL;
	json_object *hist, *row;
	long long job;

	CHECK_EQ_INT(eng_ctl(&out, "queue", "lpc", path, NULL), 0);
	free(out);
	CHECK_EQ_INT(eng_wait("but profile 'lpc' does not allow the lpc-dfu method", 20000), 0);
	CHECK_EQ_INT(sim_board_mode(b), SIM_MODE_LPC_DFU);
	hist = eng_history();
	row = eng_newest_on(hist, "1-4");
	job = eng_int(row, "job");
	CHECK_STREQ(eng_str(row, "result"), "failed");
	CHECK_STREQ(eng_str(row, "step"), "wait-bootloader");
	CHECK(strstr(eng_str(row, "error"), "is in lpc-dfu mode"));
	CHECK(strstr(eng_str(row, "error"), "add it to methods"));
	CHECK(!strstr(eng_str(row, "error"), "check the cable"));
	json_object_put(hist);
	{
		uint8_t *after = eng_flash_copy(b, sim_board_flash(b)->base,
						sim_board_flash(b)->base + 256 * 1024);

		CHECK(memcmp(before, after, 256 * 1024) == 0);
		free(after);
	}
	/* reset, as the message says: the old app runs again */
	CHECK_EQ_INT(sim_board_reset(b), 0);
	CHECK_EQ_INT(sim_board_wait_mode(b, SIM_MODE_KLIPPER_APP, 5000), 0);
	CHECK_EQ_INT(eng_wait_board_mode("1-4", "klipper-app", 5000), 0);
	hist = eng_history();
	CHECK_EQ_INT(eng_int(eng_newest_on(hist, "1-4"), "job"), job);
	json_object_put(hist);
	free(path);
	free(img);
	free(before);
}

int
main(int argc, char **argv)
{
	struct sim_board *a, *b, *c, *p;

	eng_init(argc, argv, "engine-recover");
	eng_write_conf("", profiles);
	a = eng_add("octopus-f446", "1-1", SIM_MODE_KLIPPER_APP, true);
	b = eng_add("octopus-f446", "1-2", SIM_MODE_KLIPPER_APP, true);
	c = eng_add("octopus-f446", "1-3", SIM_MODE_KLIPPER_APP, true);
	p = eng_add("skr-1.4", "1-4", SIM_MODE_KLIPPER_APP, false);
	CHECK(a && b && c && p);
	if (!a || !b || !c || !p || eng_start(NULL) < 0) {
		eng_done();
		TEST_DONE();
	}
	test_rollback(a);
	test_unplug(b);
	test_kill(c);
	test_lpc_dfu(p);
	CHECK_EQ_INT(eng_stop(), 0);
	eng_done();
	TEST_DONE();
}
