/* SPDX-License-Identifier: GPL-2.0-or-later */
/* test_engine_lpcdfu: the unmodified daemon, run as in production, flashes SKR 1.3/1.4 boards
 * whose community SD+DFU bootloader (1d50:6015) takes Klipper's bootloader request (WDTOF)
 * into plain DFU 1.1: the write from block 0 at 0x4000, the verify by UPLOAD, the manifest
 * that starts the app, the boot check; a board found in LPC DFU already (button, boot loop)
 * is written without a request; a build that crashes at start-up is rolled back through the
 * same bootloader once the watchdog reset lands the board there; and an unplug during the
 * write resumes the job when the board is back. A board with BTT's SD-only bootloader is
 * not: the request brings it back as the app. USB bus 11. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "flash.h"
#include "harness.h"
#include "test_engine_lib.h"
#include "util.h"

static const char profiles[] =
    "  { name = \"lpc-a\"; match = { board = \"skr-1.4\"; port = \"11-1\"; };\n"
    "    methods = [\"katapult\", \"lpc-dfu\"]; auto_flash = [\"queue\"]; },\n"
    "  { name = \"lpc-b\"; match = { board = \"skr-1.4-turbo\"; port = \"11-2\"; };\n"
    "    methods = [\"lpc-dfu\"]; auto_flash = [\"queue\"]; },\n"
    "  { name = \"lpc-c\"; match = { board = \"skr-1.3\"; port = \"11-3\"; };\n"
    "    methods = [\"lpc-dfu\"]; auto_flash = [\"queue\"]; },\n"
    "  { name = \"lpc-d\"; match = { board = \"skr-1.4\"; port = \"11-4\"; };\n"
    "    methods = [\"lpc-dfu\"]; auto_flash = [\"queue\"]; }";

static char *
flashed_needle(struct sim_board *b, const char *sha)
{
	return xasprintf("flashed %s on port %s with %.12s", sim_board_model(b)->name,
			 sim_board_port(b), sha);
}

static void
check_row(const char *port, const char *sha, const char *result)
{
	json_object *hist = eng_history(), *row = eng_newest_on(hist, port);

	CHECK(row != NULL);
	CHECK_STREQ(eng_str(row, "method"), "lpc-dfu");
	CHECK_STREQ(eng_str(row, "sha256"), sha);
	CHECK_STREQ(eng_str(row, "result"), result);
	json_object_put(hist);
}

/* Klipper app -> request -> LPC DFU -> blocks, UPLOAD verify, manifest -> Klipper app; then
 * a build that crashes: the watchdog lands the board in LPC DFU and the good one goes back */
static void
test_flash_and_rollback(struct sim_board *b)
{
	struct flash *f = sim_board_flash(b);
	uint8_t *ia, *ib, *bl = eng_flash_copy(b, f->base, 0x4000);
	size_t la, lb;
	char sa[65], sb[65], buf[128], *out = NULL;
	char *pa = eng_image(b, 0, "v0.13.0-lpcdfu", 40 * 1024 + 123, &ia, &la, sa);
	char *pb = eng_image(b, 0, "v0.14.0-crashes", 36 * 1024, &ib, &lb, sb);
	char *needle = flashed_needle(b, sa);
	struct sim_fault crash = {.kind = SIM_FAULT_BOOT_FAIL};

	CHECK_EQ_INT(sim_board_app_start(b), 0x4000);
	CHECK_EQ_INT(eng_ctl(&out, "queue", "lpc-a", pa, NULL), 0);
	free(out);
	CHECK_EQ_INT(eng_wait("on port 11-1: klipper-app -> lpc-dfu", 15000), 0);
	CHECK_EQ_INT(eng_wait(needle, 30000), 0);
	free(needle);
	CHECK(flash_equals(f, 0x4000, ia, la));
	CHECK(flash_equals(f, f->base, bl, 0x4000)); /* the bootloader is never touched */
	CHECK_EQ_INT(sim_board_wait_mode(b, SIM_MODE_KLIPPER_APP, 5000), 0);
	CHECK_STREQ(sim_board_app_version(b), "v0.13.0-lpcdfu");
	check_row("11-1", sa, "succeeded");
	CHECK_STREQ(eng_board_field("11-1", "installed_sha256", buf, sizeof(buf)), sa);
	{
		json_object *hist = eng_history(), *row = eng_newest_on(hist, "11-1");

		CHECK_EQ_INT(eng_int(row, "bytes"), (long long)la);
		json_object_put(hist);
	}

	CHECK_EQ_INT(sim_board_set_fault(b, &crash), 0);
	CHECK_EQ_INT(eng_ctl(&out, "queue", "lpc-a", pb, NULL), 0);
	free(out);
	needle = xasprintf("did not boot firmware %.12s; rolled back to the last known-good %.12s",
			   sb, sa);
	CHECK_EQ_INT(eng_wait(needle, 40000), 0);
	free(needle);
	CHECK_EQ_INT(sim_board_wait_mode(b, SIM_MODE_KLIPPER_APP, 5000), 0);
	CHECK_STREQ(sim_board_app_version(b), "v0.13.0-lpcdfu");
	CHECK(flash_equals(f, 0x4000, ia, la));
	CHECK(flash_equals(f, f->base, bl, 0x4000));
	check_row("11-1", sb, "rolled-back");
	CHECK_STREQ(eng_board_field("11-1", "installed_sha256", buf, sizeof(buf)), sa);
	free(pa);
	free(pb);
	free(ia);
	free(ib);
	free(bl);
}

/* Found in LPC DFU (the button held at reset): written at once, no request needed */
static void
test_found_in_dfu(struct sim_board *b)
{
	struct flash *f = sim_board_flash(b);
	uint8_t *img;
	size_t len;
	char sha[65], *out = NULL;
	char *path = eng_image(b, 0, "v0.13.0-button", 24 * 1024, &img, &len, sha);
	char *needle = flashed_needle(b, sha);

	CHECK_EQ_INT(eng_wait_board_mode("11-2", "lpc-dfu", 10000), 0);
	CHECK_EQ_INT(eng_ctl(&out, "queue", "lpc-b", path, NULL), 0);
	free(out);
	CHECK_EQ_INT(eng_wait(needle, 30000), 0);
	CHECK(flash_equals(f, 0x4000, img, len));
	CHECK_EQ_INT(sim_board_wait_mode(b, SIM_MODE_KLIPPER_APP, 5000), 0);
	CHECK_STREQ(sim_board_app_version(b), "v0.13.0-button");
	check_row("11-2", sha, "succeeded");
	free(needle);
	free(path);
	free(img);
}

/* The cable goes 8 KiB into the image: the job waits; back in LPC DFU it resumes */
static void
test_unplug(struct sim_board *b)
{
	struct flash *f = sim_board_flash(b);
	uint8_t *img;
	size_t len;
	char sha[65], *out = NULL;
	char *path = eng_image(b, 0, "v0.13.0-unplug", 32 * 1024, &img, &len, sha);
	char *needle = flashed_needle(b, sha);
	struct sim_fault cut = {.kind = SIM_FAULT_UNPLUG_AT_BYTE, .at = 8 * 1024, .count = 0};
	json_object *hist, *row;
	long long job;

	CHECK_EQ_INT(sim_board_set_fault(b, &cut), 0);
	CHECK_EQ_INT(eng_ctl(&out, "queue", "lpc-c", path, NULL), 0);
	free(out);
	CHECK_EQ_INT(eng_wait("was unplugged during step write", 30000), 0);
	CHECK_EQ_INT(sim_board_mode(b), SIM_MODE_OFF);
	hist = eng_history();
	row = eng_newest_on(hist, "11-3");
	job = eng_int(row, "job");
	CHECK_STREQ(eng_str(row, "result"), "interrupted");
	CHECK_STREQ(eng_str(row, "method"), "lpc-dfu");
	json_object_put(hist);
	CHECK(!flash_equals(f, 0x4000, img, len));
	/* the first 8 KiB arrived, the rest did not */
	CHECK(flash_equals(f, 0x4000, img, 8 * 1024));

	/* plugged back in with its DFU button held (P2.12 / the encoder button at reset): the
	 * job resumes at its write. (Powered on without the button, the torn app would start,
	 * flicker as the app and crash until the watchdog lands it in DFU: a first visit of
	 * the app that restarts the job at its gate, a timing the test cannot pin down.) */
	CHECK_EQ_INT(sim_board_plug(b, SIM_MODE_LPC_DFU), 0);
	CHECK_EQ_INT(eng_wait(needle, 40000), 0);
	hist = eng_history();
	row = eng_newest_on(hist, "11-3");
	CHECK_EQ_INT(eng_int(row, "job"), job);
	CHECK_STREQ(eng_str(row, "result"), "succeeded");
	json_object_put(hist);
	CHECK(flash_equals(f, 0x4000, img, len));
	CHECK_EQ_INT(sim_board_wait_mode(b, SIM_MODE_KLIPPER_APP, 5000), 0);
	CHECK_STREQ(sim_board_app_version(b), "v0.13.0-unplug");
	free(needle);
	free(path);
	free(img);
}

/* BTT's stock SD-only bootloader ignores the request (no DFU): the board comes back as the
 * app twice, the job says so, and nothing is written */
static void
test_sd_only(struct sim_board *b)
{
	uint8_t *img, *before = eng_flash_copy(b, 0, 0x80000);
	size_t len;
	char sha[65], *out = NULL;
	char *path = eng_image(b, 0, "v0.13.0-sdonly", 16 * 1024, &img, &len, sha);
	json_object *hist, *row;

	CHECK_EQ_INT(eng_ctl(&out, "queue", "lpc-d", path, NULL), 0);
	free(out);
	CHECK_EQ_INT(eng_wait("on port 11-4 came back as the Klipper app after the 1200-baud "
			      "request, twice",
			      40000),
		     0);
	hist = eng_history();
	row = eng_newest_on(hist, "11-4");
	CHECK_STREQ(eng_str(row, "result"), "failed");
	CHECK(strstr(eng_str(row, "error"), "nothing was written") != NULL);
	json_object_put(hist);
	CHECK_EQ_INT(eng_count("port 11-4: klipper-app -> lpc-dfu"), 0);
	{
		uint8_t *after = eng_flash_copy(b, 0, 0x80000);

		CHECK(memcmp(before, after, 0x80000) == 0);
		free(after);
	}
	CHECK_EQ_INT(sim_board_mode(b), SIM_MODE_KLIPPER_APP);
	free(path);
	free(img);
	free(before);
}

int
main(int argc, char **argv)
{
	struct sim_board_spec sd_only = {.model = "skr-1.4",
					 .port = "11-4",
					 .mode = SIM_MODE_KLIPPER_APP,
					 .bootloop = SIM_BOOTLOOP_RECOVER,
					 .lpc_sd_only = true};
	struct sim_board *a, *b, *c, *d;

	eng_init(argc, argv, "engine-lpcdfu");
	eng_write_conf("", profiles);
	a = eng_add("skr-1.4", "11-1", SIM_MODE_KLIPPER_APP, false);
	b = eng_add("skr-1.4-turbo", "11-2", SIM_MODE_LPC_DFU, false);
	c = eng_add("skr-1.3", "11-3", SIM_MODE_KLIPPER_APP, false);
	d = sim_board_add(eng_sim(), &sd_only);
	CHECK(a && b && c && d);
	if (!a || !b || !c || !d || eng_start(NULL) < 0) {
		eng_done();
		TEST_DONE();
	}
	test_flash_and_rollback(a);
	test_found_in_dfu(b);
	test_unplug(c);
	test_sd_only(d);
	CHECK_EQ_INT(eng_stop(), 0);
	eng_done();
	TEST_DONE();
}
