/* SPDX-License-Identifier: GPL-2.0-or-later */
/* test_engine_paths: the unmodified daemon flashes simulated boards end to end - Klipper app
 * to Katapult on queue, Klipper app to STM32 ROM DFU, a board plugged in already in ROM DFU,
 * two identical boards in parallel, and images refused before any write. Each flash is
 * checked in the board's flash (image at the app start, bootloader untouched), in the
 * history, in the installed sha, in the journal-style log and in STATUS=. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "flash.h"
#include "harness.h"
#include "test_engine_lib.h"
#include "util.h"

static const char profiles[] =
    "  { name = \"octo-a\"; match = { board = \"octopus-f446\"; port = \"1-1\"; };\n"
    "    auto_flash = [\"queue\"]; },\n"
    "  { name = \"octo-b\"; match = { board = \"octopus-f446\"; port = \"1-2\"; };\n"
    "    auto_flash = [\"queue\"]; },\n"
    "  { name = \"skr3\"; match = { board = \"skr-3-h723\"; port = \"1-3\"; };\n"
    "    methods = [\"dfu\"]; auto_flash = [\"queue\"]; },\n"
    "  { name = \"octo-dfu\"; match = { board = \"octopus-f446\"; port = \"1-4\"; };\n"
    "    methods = [\"dfu\"]; auto_flash = [\"hotplug\"]; },\n"
    "  { name = \"manta\"; match = { board = \"manta-m8p\"; port = \"1-5\"; };\n"
    "    auto_flash = []; }";

/* What every successful flash must show. */
static void
check_flashed(struct sim_board *b, const uint8_t *img, size_t len, const char *sha,
	      const uint8_t *bootloader, const char *method)
{
	struct flash *f = sim_board_flash(b);
	uint32_t start = sim_board_app_start(b);
	json_object *hist = eng_history(), *row = NULL;
	char buf[128], *needle;

	CHECK(flash_equals(sim_board_flash(b), start, img, len));
	CHECK(flash_equals(sim_board_flash(b), f->base, bootloader, start - f->base));
	for (size_t i = 0; hist && i < json_object_array_length(hist); i++) {
		json_object *r = json_object_array_get_idx(hist, i);

		if (strcmp(eng_str(r, "port"), sim_board_port(b)) == 0) {
			row = r; /* newest first */
			break;
		}
	}
	CHECK_STREQ(eng_str(row, "result"), "succeeded");
	CHECK_STREQ(eng_str(row, "method"), method);
	CHECK_STREQ(eng_str(row, "sha256"), sha);
	CHECK_EQ_INT(eng_int(row, "bytes"), (long long)len);
	CHECK_STREQ(eng_str(row, "error"), "");
	CHECK_STREQ(eng_board_field(sim_board_port(b), "installed_sha256", buf, sizeof(buf)), sha);
	CHECK_EQ_INT(sim_board_wait_mode(b, SIM_MODE_KLIPPER_APP, 5000), 0);
	(void)snprintf(buf, sizeof(buf), "%s", sim_board_app_version(b));
	CHECK(strlen(buf) > 0);
	/* the journal line carries the job's context in its fields */
	needle = xasprintf("on port %s with %.12s (%zu bytes, %s, verified) and it booted",
			   sim_board_port(b), sha, len, method);
	{
		char *line = eng_line(needle), *fields = xasprintf("port=%s", sim_board_port(b));
		char *shaf = xasprintf("sha256=%s job=%lld", sha, eng_int(row, "job"));

		CHECK(line != NULL);
		CHECK(line && strncmp(line, "<5>", 3) == 0);
		CHECK(line && strstr(line, "[board=") && strstr(line, fields));
		CHECK(line && strstr(line, shaf));
		free(line);
		free(fields);
		free(shaf);
	}
	free(needle);
	json_object_put(hist);
}

static char *
flashed_needle(struct sim_board *b, const char *sha)
{
	return xasprintf("flashed %s on port %s with %.12s", sim_board_model(b)->name,
			 sim_board_port(b), sha);
}

/* Klipper app -> Katapult, started by the queue (auto_flash queue) */
static void
test_katapult(struct sim_board *a)
{
	struct flash *f = sim_board_flash(a);
	uint8_t *img, *bl = eng_flash_copy(a, f->base, sim_board_app_start(a));
	size_t len;
	char sha[65], *path = eng_image(a, 0, "v0.13.0-kat", 24 * 1024, &img, &len, sha);
	char *out = NULL, *needle = flashed_needle(a, sha);
	struct sim_katapult_stats st;

	CHECK_EQ_INT(eng_ctl(&out, "queue", "octo-a", path, NULL), 0);
	CHECK(out && strstr(out, "queued v0.13.0-kat.bin for profile 'octo-a' (sha256 "));
	free(out);
	CHECK_EQ_INT(sim_proc_wait_notify(eng_daemon(), "1 job running", 10000), 0);
	CHECK_EQ_INT(eng_wait(needle, 20000), 0);
	check_flashed(a, img, len, sha, bl, "katapult");
	CHECK_STREQ(sim_board_app_version(a), "v0.13.0-kat");
	sim_board_katapult_stats(a, &st);
	CHECK_EQ_INT(st.completes, 1);
	CHECK(st.blocks >= len / 64);
	CHECK_EQ_INT(sim_proc_wait_notify(eng_daemon(), "0 jobs running", 10000), 0);
	/* the same firmware again: nothing to do */
	CHECK(eng_ctl(&out, "flash", "1-1", NULL) != 0);
	CHECK(out && strstr(out, "already runs"));
	free(out);
	free(needle);
	free(path);
	free(img);
	free(bl);
}

/* Klipper app -> STM32 ROM DFU (no Katapult): Klipper's dfu_reboot, DfuSe, leave */
static void
test_rom_dfu(struct sim_board *h7)
{
	struct flash *f = sim_board_flash(h7);
	uint8_t *img, *bl = eng_flash_copy(h7, f->base, sim_board_app_start(h7));
	size_t len;
	char sha[65], *path = eng_image(h7, 0, "v0.13.0-dfu", 20 * 1024, &img, &len, sha);
	char *out = NULL, *needle = flashed_needle(h7, sha);

	CHECK_EQ_INT(eng_ctl(&out, "queue", "skr3", path, NULL), 0);
	free(out);
	CHECK_EQ_INT(eng_wait("on port 1-3: klipper-app -> stm32-rom-dfu", 10000), 0);
	CHECK_EQ_INT(eng_wait(needle, 20000), 0);
	check_flashed(h7, img, len, sha, bl, "dfu");
	CHECK_STREQ(sim_board_app_version(h7), "v0.13.0-dfu");
	free(needle);
	free(path);
	free(img);
	free(bl);
}

/* A known board plugged in again while already in ROM DFU (BOOT0 held): flashed on hotplug,
 * leaves, boots. (A board never seen before cannot be told apart in ROM DFU: the profile's
 * board key needs the MCU the app reports.) */
static void
test_already_dfu(void)
{
	struct sim_board *b = eng_add("octopus-f446", "1-4", SIM_MODE_KLIPPER_APP, false);
	struct flash *f;
	uint8_t *img, *bl;
	size_t len;
	char sha[65], *path, *out = NULL, *needle;

	CHECK(b != NULL);
	if (!b)
		return;
	CHECK_EQ_INT(
	    eng_wait("board appeared: octopus-f446 in klipper-app mode on port 1-4", 10000), 0);
	CHECK_EQ_INT(sim_board_unplug(b), 0);
	CHECK_EQ_INT(eng_wait("board left: octopus-f446 on port 1-4", 10000), 0);
	f = sim_board_flash(b);
	bl = eng_flash_copy(b, f->base, sim_board_app_start(b));
	path = eng_image(b, 0, "v0.13.0-boot0", 16 * 1024, &img, &len, sha);
	needle = flashed_needle(b, sha);
	/* auto_flash = hotplug only: queueing records the firmware and starts nothing */
	CHECK_EQ_INT(eng_ctl(&out, "queue", "octo-dfu", path, NULL), 0);
	free(out);
	CHECK_EQ_INT(sim_board_plug(b, SIM_MODE_ROM_DFU), 0);
	CHECK_EQ_INT(eng_wait(needle, 20000), 0);
	check_flashed(b, img, len, sha, bl, "dfu");
	CHECK_STREQ(sim_board_app_version(b), "v0.13.0-boot0");
	free(needle);
	free(path);
	free(img);
	free(bl);
}

/* Two identical boards, one job each, both running at the same time */
static void
test_parallel(struct sim_board *a, struct sim_board *b)
{
	struct flash *fa = sim_board_flash(a), *fb = sim_board_flash(b);
	uint8_t *ia, *ib, *bla = eng_flash_copy(a, fa->base, sim_board_app_start(a));
	uint8_t *blb = eng_flash_copy(b, fb->base, sim_board_app_start(b));
	size_t la, lb;
	char sa[65], sb[65];
	char *pa = eng_image(a, 0, "v0.14.0-a", 96 * 1024, &ia, &la, sa);
	char *pb = eng_image(b, 0, "v0.14.0-b", 96 * 1024, &ib, &lb, sb);
	char *na = flashed_needle(a, sa), *nb = flashed_needle(b, sb), *out = NULL;

	/* the second queue call returns before the first job ends (96 KiB at board speed) */
	CHECK_EQ_INT(eng_ctl(&out, "queue", "--no-wait", "octo-a", pa, NULL), 0);
	free(out);
	CHECK_EQ_INT(eng_ctl(&out, "queue", "--no-wait", "octo-b", pb, NULL), 0);
	free(out);
	CHECK_EQ_INT(sim_proc_wait_notify(eng_daemon(), "2 jobs running", 20000), 0);
	CHECK_EQ_INT(eng_wait(na, 30000), 0);
	CHECK_EQ_INT(eng_wait(nb, 30000), 0);
	check_flashed(a, ia, la, sa, bla, "katapult");
	check_flashed(b, ib, lb, sb, blb, "katapult");
	/* each board got its own image: identical models do not mix up */
	CHECK(!flash_equals(sim_board_flash(a), sim_board_app_start(a), ib, lb));
	free(na);
	free(nb);
	free(pa);
	free(pb);
	free(ia);
	free(ib);
	free(bla);
	free(blb);
}

/* Images that do not fit are refused before anything touches the board */
static void
test_refused(struct sim_board *m)
{
	struct flash *f = sim_board_flash(m);
	uint8_t *before = eng_flash_copy(m, f->base, f->base + f->size), *img, *good;
	uint64_t erases = eng_erases(m);
	size_t len, glen;
	char sha[65], gsha[65], *out = NULL, *state_fw;
	/* linked for 0x08000000 ("no bootloader") on a board whose bootloader ends at 8 KiB */
	char *path = eng_image(m, 0x08000000u, "v-wrong-offset", 16 * 1024, &img, &len, sha);
	char *gpath = eng_image(m, 0, "v0.13.0-manta", 16 * 1024, &good, &glen, gsha);
	unsigned enums = sim_board_enumerations(m);
	json_object *hist;

	CHECK(eng_ctl(&out, "queue", "manta", path, NULL) != 0);
	CHECK(out && strstr(out, "0x08000000"));
	free(out);
	/* a good image, then the stored copy goes bad behind the daemon's back (disk error,
	 * an edit by hand): `flash` validates again and refuses */
	CHECK_EQ_INT(eng_ctl(&out, "queue", "manta", gpath, NULL), 0);
	free(out);
	state_fw = NULL;
	{
		char *cmd = xasprintf("find '%s/state' -name '%s*' -type f", eng_dir(), gsha);
		FILE *p = popen(cmd, "r");
		char line[1024];

		if (p && fgets(line, sizeof(line), p)) {
			line[strcspn(line, "\n")] = 0;
			state_fw = xstrdup(line);
		}
		if (p)
			pclose(p);
		free(cmd);
	}
	CHECK(state_fw != NULL);
	if (state_fw)
		CHECK_EQ_INT(write_file_atomic(state_fw, img, len, 0644), 0);
	CHECK(eng_ctl(&out, "flash", "1-5", NULL) != 0);
	/* a replaced store file no longer matches its name: refused before validation */
	CHECK(out &&
	      (strstr(out, "refusing to flash") || strstr(out, "no longer matches its sha256")));
	free(out);
	hist = eng_history();
	for (size_t i = 0; hist && i < json_object_array_length(hist); i++)
		CHECK(strcmp(eng_str(json_object_array_get_idx(hist, i), "port"), "1-5") != 0);
	json_object_put(hist);
	CHECK(flash_equals(sim_board_flash(m), f->base, before, f->size));
	CHECK_EQ_INT(eng_erases(m), erases);
	CHECK_EQ_INT(sim_board_enumerations(m), enums);
	CHECK_EQ_INT(sim_board_mode(m), SIM_MODE_KLIPPER_APP);
	free(state_fw);
	free(path);
	free(gpath);
	free(img);
	free(good);
	free(before);
}

int
main(int argc, char **argv)
{
	struct sim_board *a, *b, *h7, *m;

	eng_init(argc, argv, "engine-paths");
	eng_write_conf("", profiles);
	a = eng_add("octopus-f446", "1-1", SIM_MODE_KLIPPER_APP, true);
	b = eng_add("octopus-f446", "1-2", SIM_MODE_KLIPPER_APP, true);
	h7 = eng_add("skr-3-h723", "1-3", SIM_MODE_KLIPPER_APP, false);
	m = eng_add("manta-m8p", "1-5", SIM_MODE_KLIPPER_APP, true);
	CHECK(a && b && h7 && m);
	if (!a || !b || !h7 || !m || eng_start(NULL) < 0) {
		eng_done();
		TEST_DONE();
	}
	test_katapult(a);
	test_rom_dfu(h7);
	test_already_dfu();
	test_parallel(a, b);
	test_refused(m);
	CHECK_EQ_INT(eng_stop(), 0);
	eng_done();
	TEST_DONE();
}
