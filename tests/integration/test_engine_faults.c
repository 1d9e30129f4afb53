/* SPDX-License-Identifier: GPL-2.0-or-later */
/* test_engine_faults: every Katapult fault (corrupt, dropped and duplicated frames, NACK
 * storms, stalls, an unplug) and every DfuSe error (errWRITE, errVERIFY, errERASE) injected
 * into a job of the unmodified daemon. Each ends in a successful retry or a clear error with
 * the board still recoverable: a second attempt (`skrflashctl flash`) then flashes it. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "flash.h"
#include "harness.h"
#include "test_engine_lib.h"
#include "util.h"

static const char profiles[] =
    "  { name = \"kat\"; match = { board = \"octopus-f446\"; port = \"1-1\"; };\n"
    "    auto_flash = [\"queue\"]; },\n"
    "  { name = \"dfu\"; match = { board = \"skr-3-h723\"; port = \"1-2\"; };\n"
    "    methods = [\"dfu\"]; auto_flash = [\"queue\"]; }";

struct fault_case {
	const char *name;
	struct sim_fault fault;
	bool must_fail;	    /* the fault outlasts every retry: a clear error is the right outcome */
	const char *error;  /* part of the error text when it fails */
	enum sim_mode back; /* where the board is after the failure */
};

static bool
in_bootloader(struct sim_board *b)
{
	enum sim_mode m = sim_board_mode(b);

	return m == SIM_MODE_KATAPULT || m == SIM_MODE_ROM_DFU;
}

/* A job that failed is recoverable: the board is up where it should be, and the next attempt
 * flashes it. */
static void
check_recoverable(struct sim_board *b, const struct fault_case *c, json_object *row,
		  const char *sha, const char *flashed)
{
	struct sim_fault none = {.kind = SIM_FAULT_NONE};
	char buf[128], *out = NULL;
	int r;

	CHECK_STREQ(eng_str(row, "result"), "failed");
	CHECK(strlen(eng_str(row, "error")) > 20);
	CHECK_EQ_INT(sim_board_wait_mode(b, c->back, 5000), 0);
	CHECK(c->back == SIM_MODE_KLIPPER_APP || in_bootloader(b));
	CHECK_EQ_INT(sim_board_set_fault(b, &none), 0);
	/* the daemon must have seen it come back before it is asked again */
	if (c->back == SIM_MODE_KLIPPER_APP)
		CHECK_EQ_INT(eng_wait_board_mode(sim_board_port(b), "klipper-app", 5000), 0);
	CHECK(strcmp(eng_board_field(sim_board_port(b), "installed_sha256", buf, sizeof(buf)),
		     sha) != 0);
	/* the engine may have begun its own retry after its cool-down already */
	r = eng_ctl(&out, "flash", sim_board_port(b), NULL);
	CHECK(r == 0 || (out && strstr(out, "being flashed already")));
	free(out);
	CHECK_EQ_INT(eng_wait(flashed, 20000), 0);
}

/* One job with the fault armed, then (if it failed) a second attempt without it. */
static struct sim_proc *watch;

static void
run_case(struct sim_board *b, const char *profile, const struct fault_case *c, unsigned seq)
{
	struct flash *f = sim_board_flash(b);
	uint32_t start = sim_board_app_start(b);
	uint8_t *img, *bl = eng_flash_copy(b, f->base, start);
	size_t len;
	char sha[65], name[64], buf[128];
	char *path, *out = NULL, *flashed;
	size_t finished;
	json_object *hist, *row;
	long long job;
	const char *result;

	fprintf(stderr, "--- %s: %s\n", sim_board_port(b), c->name);
	(void)snprintf(name, sizeof(name), "v0.13.%u-%s", seq, c->name);
	path = eng_image(b, 0, name, 40 * 1024, &img, &len, sha);
	flashed = xasprintf("flashed %s on port %s with %.12s", sim_board_model(b)->name,
			    sim_board_port(b), sha);
	finished = eng_proc_count(watch, "\"job-finished\"");
	CHECK_EQ_INT(sim_board_set_fault(b, &c->fault), 0);
	CHECK_EQ_INT(eng_ctl(&out, "queue", profile, path, NULL), 0);
	free(out);
	/* the job ends either way: one more job-finished event */
	CHECK_EQ_INT(eng_proc_wait_count(watch, "\"job-finished\"", finished + 1, 30000), 0);
	hist = eng_history();
	job = eng_int(eng_newest_on(hist, sim_board_port(b)), "job");
	json_object_put(hist);
	hist = eng_history();
	row = eng_history_job(hist, job);
	result = eng_str(row, "result");
	fprintf(stderr, "%s: job %lld %s: %s\n", c->name, job, result, eng_str(row, "error"));
	if (c->error && !c->must_fail) {
		/* the board left mid-write: the same job resumes by itself when it is back. The row
		 * says "interrupted" until then; a loaded machine may read it after the resume
		 * ("running"), so the suspension is checked in the journal as well */
		if (strcmp(result, "interrupted") == 0) {
			CHECK(strstr(eng_str(row, "error"), c->error) != NULL);
			CHECK(strstr(eng_str(row, "error"), "resumes when it is plugged in again"));
		} else {
			CHECK_STREQ(result, "running");
		}
		CHECK_EQ_INT(eng_wait(c->error, 1000), 0);
		CHECK_EQ_INT(eng_wait("resumes when it is plugged in again", 1000), 0);
		CHECK_EQ_INT(eng_wait(flashed, 20000), 0);
		json_object_put(hist);
		hist = eng_history();
		row = eng_history_job(hist, job);
		result = eng_str(row, "result");
		CHECK_STREQ(eng_str(row, "step"), "boot-check");
	}
	if (c->must_fail) {
		CHECK_STREQ(result, "failed");
		CHECK(strstr(eng_str(row, "error"), c->error) != NULL);
	} else {
		CHECK_STREQ(result, "succeeded");
	}
	if (strcmp(result, "succeeded") != 0)
		check_recoverable(b, c, row, sha, flashed);
	json_object_put(hist);
	CHECK(flash_equals(sim_board_flash(b), start, img, len));
	CHECK(flash_equals(sim_board_flash(b), f->base, bl, start - f->base));
	CHECK_STREQ(eng_board_field(sim_board_port(b), "installed_sha256", buf, sizeof(buf)), sha);
	CHECK_EQ_INT(sim_board_wait_mode(b, SIM_MODE_KLIPPER_APP, 5000), 0);
	CHECK_STREQ(sim_board_app_version(b), name);
	free(flashed);
	free(path);
	free(img);
	free(bl);
}

int
main(int argc, char **argv)
{
	static const struct fault_case kat[] = {
	    /* single transport faults: the backend's resend recovers */
	    {"corrupt", {SIM_FAULT_CORRUPT_FRAME, 6, 1}, false, NULL, SIM_MODE_OFF},
	    {"drop", {SIM_FAULT_DROP_FRAME, 6, 1}, false, NULL, SIM_MODE_OFF},
	    {"dup", {SIM_FAULT_DUP_FRAME, 6, 2}, false, NULL, SIM_MODE_OFF},
	    {"nack", {SIM_FAULT_NACK_STORM, 6, 2}, false, NULL, SIM_MODE_OFF},
	    {"stall", {SIM_FAULT_STALL, 6, 200}, false, NULL, SIM_MODE_OFF},
	    /* longer than one read timeout (5 s): a resend after the timeout recovers */
	    {"stall-long", {SIM_FAULT_STALL, 6, 5500}, false, NULL, SIM_MODE_OFF},
	    /* faults that outlast every retry */
	    {"nack-storm",
	     {SIM_FAULT_NACK_STORM, 6, 100000},
	     true,
	     "failed 5 times (last: NACK)",
	     SIM_MODE_KATAPULT},
	    /* power back after 300 ms: the half-written image still has its vector table, so
	     * the simulated board boots it; the interrupted job resumes, the touch takes it to
	     * Katapult and the write completes */
	    {"unplug",
	     {SIM_FAULT_UNPLUG_AT_BYTE, 8192, 300},
	     false,
	     "was unplugged during step write (the board disconnected during the transfer",
	     SIM_MODE_KLIPPER_APP},
	};
	static const struct fault_case dfu[] = {
	    {"errwrite", {SIM_FAULT_DFU_ERR_WRITE, 2, 0}, true, "errWRITE", SIM_MODE_ROM_DFU},
	    {"errverify", {SIM_FAULT_DFU_ERR_VERIFY, 2, 0}, true, "errVERIFY", SIM_MODE_ROM_DFU},
	    {"erase", {SIM_FAULT_DFU_ERR_ERASE, 1, 0}, true, "errERASE", SIM_MODE_ROM_DFU},
	};
	struct sim_board *k, *d;
	unsigned seq = 0;

	eng_init(argc, argv, "engine-faults");
	eng_write_conf("", profiles);
	k = eng_add("octopus-f446", "1-1", SIM_MODE_KLIPPER_APP, true);
	d = eng_add("skr-3-h723", "1-2", SIM_MODE_KLIPPER_APP, false);
	CHECK(k && d);
	if (!k || !d || eng_start(NULL) < 0) {
		eng_done();
		TEST_DONE();
	}
	watch = eng_watch();
	CHECK_EQ_INT(eng_watch_ready(watch, "kat"), 0);
	for (size_t i = 0; i < sizeof(kat) / sizeof(kat[0]); i++)
		run_case(k, "kat", &kat[i], seq++);
	for (size_t i = 0; i < sizeof(dfu) / sizeof(dfu[0]); i++)
		run_case(d, "dfu", &dfu[i], seq++);
	sim_proc_free(watch);
	CHECK_EQ_INT(eng_stop(), 0);
	eng_done();
	TEST_DONE();
}
