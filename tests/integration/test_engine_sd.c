/* SPDX-License-Identifier: GPL-2.0-or-later */
/* test_engine_sd: the unmodified daemon flashes stock SD-bootloader boards (an SKR 1.4 Turbo
 * and an SKR Pro, bus 7) through the SD card of their running Klipper firmware: firmware.bin
 * written over Klipper's SPI commands, Klipper's reset, the simulated stock bootloader
 * (tests/sim/sdboot.c) programs and renames it, the app comes back on the same port and is
 * asked what it runs. Every write is proven by the bytes in the simulated flash, the
 * running version, `boards` and `history` (method "sd"), and on the card by the real tools:
 * fsck.fat -n clean, mdir shows FIRMWARE.CUR alone and mcopy reads it back identical.
 *
 * Failure modes: the bootloader's rename fails (no re-flash left behind), the card does not
 * initialise for the bootloader, an exFAT card (refused before writing), orphaned long
 * names (cleaned), an SDIO board (needs a power cycle), power lost while the bootloader
 * programs (back at once, and back only later), the worker SIGKILLed while writing and
 * while confirming, the daemon SIGKILLed after the write, "already runs", and the rollback
 * of a build that crashes at start-up. */
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "flash.h"
#include "harness.h"
#include "test_engine_lib.h"
#include "util.h"

static const char profiles[] =
    "  { name = \"turbo\"; match = { board = \"skr-1.4-turbo\"; port = \"7-1\"; };\n"
    "    auto_flash = [\"queue\"]; },\n"
    "  { name = \"pro\"; match = { board = \"skr-pro\"; port = \"7-2\"; };\n"
    "    auto_flash = [\"queue\"]; },\n"
    "  { name = \"pro-exfat\"; match = { board = \"skr-pro\"; port = \"7-3\"; };\n"
    "    auto_flash = [\"queue\"]; },\n"
    "  { name = \"pro-rb\"; match = { board = \"skr-pro\"; port = \"7-6\"; };\n"
    "    auto_flash = [\"queue\"]; },\n"
    "  { name = \"noinit\"; match = { board = \"skr-1.4\"; port = \"7-5\"; };\n"
    "    auto_flash = [\"queue\"]; },\n"
    "  { name = \"octopus\"; match = { board = \"octopus-f446\"; port = \"7-4\"; };\n"
    "    methods = [\"sd\"]; auto_flash = [\"queue\"]; }";

/* The card after a job: a clean volume (fsck.fat exits 0 even for a long name whose
 * checksum is wrong, so its report is read too) whose root holds FIRMWARE.CUR alone, equal
 * to the image file. */
static int
card_holds(struct sim_board *b, const char *image)
{
	const char *card = sim_board_sdcard_path(b);

	return sim_sh(eng_sim(),
		      "fsck.fat -n %s >%s.fsck 2>&1 && ! grep -q -i -e wrong -e orphan %s.fsck && "
		      "test \"$(mdir -b -i %s ::)\" = '::/FIRMWARE.CUR' && rm -f %s.cur && "
		      "mcopy -n -i %s ::FIRMWARE.CUR %s.cur && cmp %s.cur %s",
		      card, card, card, card, card, card, card, card, image);
}

static void
check_history(const char *port, const char *sha, const char *result)
{
	json_object *hist = eng_history(), *row = eng_newest_on(hist, port);

	CHECK(row != NULL);
	CHECK_STREQ(eng_str(row, "result"), result);
	CHECK_STREQ(eng_str(row, "method"), "sd");
	CHECK_STREQ(eng_str(row, "sha256"), sha);
	json_object_put(hist);
}

static unsigned
flashes(struct sim_board *b)
{
	struct sim_sdboot_stats st;

	sim_board_sdboot_stats(b, &st);
	return st.flashes;
}

struct img {
	char *path;
	uint8_t *bytes;
	size_t len;
	char sha[65];
};

static void
img_make(struct img *m, struct sim_board *b, const char *version, size_t size)
{
	m->path = eng_image(b, 0, version, size, &m->bytes, &m->len, m->sha);
}

static void
img_free(struct img *m)
{
	free(m->path);
	free(m->bytes);
}

static int
queue(const char *profile, const struct img *m)
{
	char *out = NULL;
	int r = eng_ctl(&out, "queue", "--no-wait", profile, m->path, NULL);

	free(out);
	return r;
}

/* Waits for the daemon's success line of this image on this port. */
static int
wait_flashed(struct sim_board *b, const struct img *m, int timeout_ms)
{
	char *needle = xasprintf("flashed %s on port %s with %.12s", sim_board_model(b)->name,
				 sim_board_port(b), m->sha);
	int r = eng_wait(needle, timeout_ms);

	free(needle);
	return r;
}

static void
check_runs(struct sim_board *b, const struct img *m, const char *version)
{
	char buf[128];

	CHECK(flash_equals(sim_board_flash(b), sim_board_app_start(b), m->bytes, m->len));
	CHECK_EQ_INT(sim_board_wait_mode(b, SIM_MODE_KLIPPER_APP, 5000), 0);
	CHECK_STREQ(sim_board_app_version(b), version);
	CHECK_STREQ(eng_board_field(sim_board_port(b), "installed_sha256", buf, sizeof(buf)),
		    m->sha);
	CHECK_EQ_INT(card_holds(b, m->path), 0);
}

/* A stock board from its running Klipper, through the card, and "already runs". */
static void
test_flash(struct sim_board *b, const char *profile, const char *version)
{
	struct img m;
	unsigned before = flashes(b);
	char *out = NULL;

	img_make(&m, b, version, 40 * 1024);
	CHECK_EQ_INT(queue(profile, &m), 0);
	CHECK_EQ_INT(wait_flashed(b, &m, 30000), 0);
	check_runs(b, &m, version);
	check_history(sim_board_port(b), m.sha, "succeeded");
	CHECK_EQ_INT(flashes(b), before + 1);
	CHECK_EQ_INT(sim_proc_wait_notify(eng_daemon(), "0 jobs running", 10000), 0);
	CHECK(eng_ctl(&out, "flash", sim_board_port(b), NULL) != 0);
	CHECK(out && strstr(out, "already runs"));
	free(out);
	img_free(&m);
}

/* The bootloader programs the file but cannot rename it: it would flash it on every boot.
 * The job confirms the new firmware, removes firmware.bin and says so; later resets flash
 * nothing. */
static void
test_rename_fails(struct sim_board *b)
{
	struct sim_fault f = {.kind = SIM_FAULT_SD_RENAME_FAIL};
	struct img m;
	unsigned before = flashes(b), enums;

	img_make(&m, b, "v-norename", 36 * 1024);
	CHECK_EQ_INT(sim_board_set_fault(b, &f), 0);
	CHECK_EQ_INT(queue("turbo", &m), 0);
	CHECK_EQ_INT(wait_flashed(b, &m, 30000), 0);
	CHECK_EQ_INT(eng_wait("did not rename firmware.bin to FIRMWARE.CUR", 1000), 0);
	CHECK(flash_equals(sim_board_flash(b), sim_board_app_start(b), m.bytes, m.len));
	CHECK_STREQ(sim_board_app_version(b), "v-norename");
	CHECK_EQ_INT(flashes(b), before + 1);
	CHECK_EQ_INT(
	    sim_sh(eng_sim(),
		   "! mdir -i %s ::firmware.bin >/dev/null 2>&1 && fsck.fat -n %s >/dev/null",
		   sim_board_sdcard_path(b), sim_board_sdcard_path(b)),
	    0);
	check_history("7-1", m.sha, "succeeded");
	CHECK_EQ_INT(sim_proc_wait_notify(eng_daemon(), "0 jobs running", 10000), 0);
	enums = sim_board_enumerations(b);
	sim_board_reset(b);
	CHECK_EQ_INT(sim_board_wait_enumerations(b, enums + 1, 10000), 0);
	CHECK_EQ_INT(sim_board_wait_mode(b, SIM_MODE_KLIPPER_APP, 10000), 0);
	CHECK_EQ_INT(flashes(b), before + 1);
	f.kind = SIM_FAULT_NONE;
	CHECK_EQ_INT(sim_board_set_fault(b, &f), 0);
	img_free(&m);
}

/* The card does not initialise for the bootloader (on every boot): the app comes back
 * unchanged. The job fails saying so, firmware.bin is removed, the board runs its firmware
 * as before. */
static void
test_no_init(void)
{
	struct sim_board *b = eng_add("skr-1.4", "7-5", SIM_MODE_KLIPPER_APP, false);
	struct sim_fault f = {.kind = SIM_FAULT_SD_NO_INIT};
	uint8_t *before;
	struct img m;

	CHECK(b != NULL);
	if (!b)
		return;
	CHECK_EQ_INT(sim_board_new_sdcard(b, 32ull << 20, "fat"), 0);
	CHECK_EQ_INT(eng_wait("board appeared: skr-1.4 in klipper-app mode on port 7-5", 10000), 0);
	before = eng_flash_copy(b, sim_board_app_start(b), sim_board_app_start(b) + 65536);
	img_make(&m, b, "v-noinit", 36 * 1024);
	CHECK_EQ_INT(sim_board_set_fault(b, &f), 0);
	CHECK_EQ_INT(queue("noinit", &m), 0);
	CHECK_EQ_INT(eng_wait("did not take firmware.bin", 30000), 0);
	CHECK_EQ_INT(sim_proc_wait_notify(eng_daemon(), "0 jobs running", 10000), 0);
	check_history("7-5", m.sha, "failed");
	{
		uint8_t *after =
		    eng_flash_copy(b, sim_board_app_start(b), sim_board_app_start(b) + 65536);

		CHECK(memcmp(before, after, 65536) == 0);
		free(after);
	}
	CHECK_EQ_INT(sim_board_wait_mode(b, SIM_MODE_KLIPPER_APP, 5000), 0);
	CHECK_STREQ(sim_board_app_version(b), "v0.12.0-sim");
	CHECK_EQ_INT(
	    sim_sh(eng_sim(),
		   "! mdir -i %s ::firmware.bin >/dev/null 2>&1 && fsck.fat -n %s >/dev/null",
		   sim_board_sdcard_path(b), sim_board_sdcard_path(b)),
	    0);
	free(before);
	img_free(&m);
}

/* A desktop copied "Firmware.bin" (long name + FIRMWARE.BIN) and the bootloader renamed the
 * 8.3 entry in place: the long name is left as an orphan in front of FIRMWARE.CUR, and the
 * bootloader would flash that old entry instead of any new firmware.bin. The job cleans it
 * before writing. */
static void
test_orphan(struct sim_board *b)
{
	struct img old, m;
	unsigned enums;

	img_make(&old, b, "v-desktop", 24 * 1024);
	img_make(&m, b, "v-after-orphan", 30 * 1024);
	CHECK_EQ_INT(sim_sh(eng_sim(), "mdel -i %s ::FIRMWARE.CUR && mcopy -i %s %s ::Firmware.bin",
			    sim_board_sdcard_path(b), sim_board_sdcard_path(b), old.path),
		     0);
	enums = sim_board_enumerations(b);
	sim_board_reset(b);
	CHECK_EQ_INT(sim_board_wait_enumerations(b, enums + 1, 10000), 0);
	CHECK_EQ_INT(sim_board_wait_mode(b, SIM_MODE_KLIPPER_APP, 10000), 0);
	CHECK_STREQ(sim_board_app_version(b), "v-desktop");
	CHECK_EQ_INT(sim_sh(eng_sim(),
			    "fsck.fat -n %s | grep -q 'Wrong checksum for long file name'",
			    sim_board_sdcard_path(b)),
		     0);
	CHECK_EQ_INT(queue("turbo", &m), 0);
	CHECK_EQ_INT(wait_flashed(b, &m, 30000), 0);
	CHECK_EQ_INT(eng_wait("removed 1 orphaned long-name entries", 1000), 0);
	check_runs(b, &m, "v-after-orphan");
	check_history("7-1", m.sha, "succeeded");
	CHECK_EQ_INT(sim_proc_wait_notify(eng_daemon(), "0 jobs running", 10000), 0);
	img_free(&old);
	img_free(&m);
}

/* An exFAT card: the stock bootloader cannot read it. Refused before anything is written,
 * naming the board and what to do. */
static void
test_exfat(void)
{
	struct sim_board *b = eng_add("skr-pro", "7-3", SIM_MODE_KLIPPER_APP, false);
	uint8_t *before;
	struct img m;

	CHECK(b != NULL);
	if (!b)
		return;
	CHECK_EQ_INT(sim_board_new_sdcard(b, 64ull << 20, "exfat"), 0);
	CHECK_EQ_INT(eng_wait("board appeared: skr-pro in klipper-app mode on port 7-3", 10000), 0);
	before = eng_flash_copy(b, sim_board_app_start(b), sim_board_app_start(b) + 65536);
	img_make(&m, b, "v-exfat", 30 * 1024);
	CHECK_EQ_INT(queue("pro-exfat", &m), 0);
	CHECK_EQ_INT(eng_wait("the SD card of skr-pro on", 30000), 0);
	CHECK_EQ_INT(eng_wait("format the card FAT32", 1000), 0);
	CHECK_EQ_INT(sim_proc_wait_notify(eng_daemon(), "0 jobs running", 10000), 0);
	check_history("7-3", m.sha, "failed");
	{
		uint8_t *after =
		    eng_flash_copy(b, sim_board_app_start(b), sim_board_app_start(b) + 65536);

		CHECK(memcmp(before, after, 65536) == 0);
		free(after);
	}
	CHECK_EQ_INT(flashes(b), 0);
	free(before);
	img_free(&m);
}

/* An Octopus (SDIO-wired card, profile methods = ["sd"]): after Klipper used the card over
 * SPI its bootloader cannot read it; the job waits in needs-power-cycle with firmware.bin
 * kept, and a power cycle finishes the flash (test_engine_sdio has the rest). */
static void
test_sdio(void)
{
	struct sim_board *b = eng_add("octopus-f446", "7-4", SIM_MODE_KLIPPER_APP, false);
	struct img m;
	unsigned enums;

	CHECK(b != NULL);
	if (!b)
		return;
	CHECK_EQ_INT(sim_board_new_sdcard(b, 64ull << 20, "fat32"), 0);
	CHECK_EQ_INT(
	    eng_wait("board appeared: octopus-f446 in klipper-app mode on port 7-4", 10000), 0);
	img_make(&m, b, "v-sdio", 30 * 1024);
	CHECK_EQ_INT(queue("octopus", &m), 0);
	CHECK_EQ_INT(eng_wait("power-cycle the board to finish", 30000), 0);
	CHECK_EQ_INT(sim_proc_wait_notify(eng_daemon(), "0 jobs running", 10000), 0);
	check_history("7-4", m.sha, "running");
	CHECK_EQ_INT(
	    sim_sh(eng_sim(), "mdir -i %s ::firmware.bin >/dev/null", sim_board_sdcard_path(b)), 0);
	enums = sim_board_enumerations(b);
	/* off past the leave grace: a person's power cycle, not a reset */
	CHECK_EQ_INT(sim_board_power_off(b), 0);
	usleep(1500 * 1000);
	CHECK_EQ_INT(sim_board_power_cycle(b), 0);
	CHECK_EQ_INT(sim_board_wait_enumerations(b, enums + 1, 10000), 0);
	CHECK_EQ_INT(sim_board_wait_mode(b, SIM_MODE_KLIPPER_APP, 10000), 0);
	CHECK_STREQ(sim_board_app_version(b), "v-sdio");
	CHECK(flash_equals(sim_board_flash(b), sim_board_app_start(b), m.bytes, m.len));
	{
		char *needle = xasprintf("flashed octopus-f446 on port 7-4 with %.12s", m.sha);

		CHECK_EQ_INT(eng_wait(needle, 120000), 0);
		check_history("7-4", m.sha, "succeeded");
		free(needle);
	}
	img_free(&m);
}

/* Power lost while the bootloader programs: back after 300 ms, it programs the file again
 * (still firmware.bin) and the job goes on; back only after the boot check gave up, the
 * job is suspended and resumes with the confirm step when the board is back. */
static void
test_power_loss(struct sim_board *b)
{
	struct sim_fault f = {.kind = SIM_FAULT_UNPLUG_AT_BYTE, .at = 8192, .count = 300};
	struct img m, m2;
	unsigned before = flashes(b);

	img_make(&m, b, "v-powerloss", 40 * 1024);
	CHECK_EQ_INT(sim_board_set_fault(b, &f), 0);
	CHECK_EQ_INT(queue("pro", &m), 0);
	CHECK_EQ_INT(wait_flashed(b, &m, 30000), 0);
	check_runs(b, &m, "v-powerloss");
	CHECK_EQ_INT(flashes(b), before + 1);
	CHECK_EQ_INT(sim_proc_wait_notify(eng_daemon(), "0 jobs running", 10000), 0);

	f.count = 0; /* stays off */
	img_make(&m2, b, "v-powerloss-2", 40 * 1024);
	CHECK_EQ_INT(sim_board_set_fault(b, &f), 0);
	CHECK_EQ_INT(queue("pro", &m2), 0);
	CHECK_EQ_INT(eng_wait("skr-pro on port 7-2 was unplugged during step boot-check", 30000),
		     0);
	CHECK_EQ_INT(sim_board_mode(b), SIM_MODE_OFF);
	CHECK_EQ_INT(sim_board_power_on(b), 0);
	CHECK_EQ_INT(wait_flashed(b, &m2, 30000), 0);
	check_runs(b, &m2, "v-powerloss-2");
	check_history("7-2", m2.sha, "succeeded");
	CHECK_EQ_INT(sim_proc_wait_notify(eng_daemon(), "0 jobs running", 10000), 0);
	img_free(&m);
	img_free(&m2);
}

/* A build that crashes at start-up (the checks cannot see it): the stock SKR Pro has no
 * application left to write through, so the daemon names the stored known-good file to put
 * on the card; once the operator copied it and powered the board up, the daemon confirms
 * the rollback by itself (writing the known-good image the same way) and marks the build
 * bad. */
static void
test_rollback(void)
{
	struct sim_board_spec spec = {.model = "skr-pro",
				      .port = "7-6",
				      .mode = SIM_MODE_KLIPPER_APP,
				      .crash_version = "crash",
				      .bootloop = SIM_BOOTLOOP_FLICKER,
				      .bootloop_cycles = 2};
	struct sim_board *b = sim_board_add(eng_sim(), &spec);
	struct img good, bad;
	char *line, *path = NULL, *needle;

	CHECK(b != NULL);
	if (!b)
		return;
	CHECK_EQ_INT(sim_board_new_sdcard(b, 64ull << 20, "fat32"), 0);
	CHECK_EQ_INT(eng_wait("board appeared: skr-pro in klipper-app mode on port 7-6", 10000), 0);
	img_make(&good, b, "v-good", 32 * 1024);
	img_make(&bad, b, "v-crash", 32 * 1024);
	CHECK_EQ_INT(queue("pro-rb", &good), 0);
	CHECK_EQ_INT(wait_flashed(b, &good, 30000), 0);
	CHECK_EQ_INT(sim_proc_wait_notify(eng_daemon(), "0 jobs running", 10000), 0);

	CHECK_EQ_INT(queue("pro-rb", &bad), 0);
	needle = xasprintf("on port 7-6 did not boot the new firmware %.12s", bad.sha);
	CHECK_EQ_INT(eng_wait(needle, 30000), 0);
	free(needle);
	CHECK(flash_equals(sim_board_flash(b), sim_board_app_start(b), bad.bytes, bad.len));
	CHECK_EQ_INT(eng_wait("its stock SD bootloader is the way back: copy ", 5000), 0);
	line = eng_line("its stock SD bootloader is the way back: copy ");
	if (line) {
		char *at = strstr(line, "copy ") + 5, *end = strstr(at, " to its SD card");

		if (end)
			path = strndup(at, (size_t)(end - at));
		free(line);
	}
	CHECK(path != NULL);
	/* the operator: the file onto the card, the board powered up */
	if (path)
		CHECK_EQ_INT(sim_sh(eng_sim(), "mcopy -o -i %s %s ::firmware.bin",
				    sim_board_sdcard_path(b), path),
			     0);
	CHECK_EQ_INT(sim_board_power_on(b), 0);
	needle = xasprintf("rolled back to the last known-good %.12s", good.sha);
	CHECK_EQ_INT(eng_wait(needle, 30000), 0);
	free(needle);
	CHECK(flash_equals(sim_board_flash(b), sim_board_app_start(b), good.bytes, good.len));
	CHECK_EQ_INT(sim_board_wait_mode(b, SIM_MODE_KLIPPER_APP, 5000), 0);
	CHECK_STREQ(sim_board_app_version(b), "v-good");
	check_history("7-6", bad.sha, "rolled-back");
	CHECK_EQ_INT(card_holds(b, good.path), 0);
	free(path);
	img_free(&good);
	img_free(&bad);
}

/* The pid of a worker the daemon runs now, or -1 (only descendants of our daemon). */
static int
worker_pid(void)
{
	int daemon = sim_proc_pid(eng_daemon());
	DIR *d = opendir("/proc");
	struct dirent *e;
	int found = -1;

	while (d && (e = readdir(d)) && found < 0) {
		char *path = xasprintf("/proc/%s/cmdline", e->d_name), cmd[512] = "";
		FILE *f = fopen(path, "r");
		size_t n = f ? fread(cmd, 1, sizeof(cmd) - 1, f) : 0;
		int pid = atoi(e->d_name);

		if (f)
			fclose(f);
		free(path);
		for (size_t i = 0; i + 1 < n; i++)
			if (!cmd[i])
				cmd[i] = ' ';
		if (pid <= 0 || !strstr(cmd, "--worker"))
			continue;
		/* walk up to our daemon */
		for (int p = pid, hops = 0; p > 1 && hops < 8; hops++) {
			char *st = xasprintf("/proc/%d/stat", p), line[512] = "", *rp;
			FILE *sf = fopen(st, "r");

			free(st);
			if (!sf || !fgets(line, sizeof(line), sf)) {
				if (sf)
					fclose(sf);
				break;
			}
			fclose(sf);
			rp = strrchr(line, ')');
			p = rp ? atoi(rp + 4) : 0; /* ") S PPID" */
			if (p == daemon) {
				found = pid;
				break;
			}
		}
	}
	if (d)
		closedir(d);
	return found;
}

/* Waits for a worker of the daemon to run; its pid or -ETIMEDOUT. */
static int
wait_worker(int timeout_ms)
{
	for (int waited = 0; waited < timeout_ms; waited += 5) {
		int pid = worker_pid();

		if (pid > 0)
			return pid;
		usleep(5000);
	}
	return -ETIMEDOUT;
}

/* Waits until process pid is gone; 0 or -ETIMEDOUT. */
static int
wait_gone(int pid, int timeout_ms)
{
	for (int waited = 0; waited < timeout_ms; waited += 5) {
		if (kill(pid, 0) < 0 && errno == ESRCH)
			return 0;
		usleep(5000);
	}
	return -ETIMEDOUT;
}

/* Waits for the newest history row of the port to be at `step` while it runs. */
static int
wait_step(const char *port, const char *step, int timeout_ms)
{
	for (int waited = 0; waited < timeout_ms; waited += 50) {
		json_object *hist = eng_history(), *row = eng_newest_on(hist, port);
		bool at = row && strcmp(eng_str(row, "step"), step) == 0 &&
			  strcmp(eng_str(row, "result"), "running") == 0;

		json_object_put(hist);
		if (at)
			return 0;
		usleep(50000);
	}
	return -ETIMEDOUT;
}

/* The worker SIGKILLed while it writes the card: the board is never stranded (it runs its
 * old or its new firmware), the file stays queued, and the next attempt flashes it. Killed
 * while it confirms: the board runs the new firmware, and the job asks it again. Only this board is
 * busy here: the first worker of the job writes, the second one confirms. */
static void
test_worker_killed(struct sim_board *b)
{
	struct img m;
	int pid;
	char *out = NULL;

	img_make(&m, b, "v-killed", 48 * 1024);
	CHECK_EQ_INT(queue("pro", &m), 0);
	pid = wait_worker(20000);
	CHECK(pid > 0);
	if (pid > 0)
		CHECK_EQ_INT(kill(pid, SIGKILL), 0);
	CHECK_EQ_INT(sim_proc_wait_notify(eng_daemon(), "0 jobs running", 20000), 0);
	CHECK_EQ_INT(sim_board_wait_mode(b, SIM_MODE_KLIPPER_APP, 10000), 0);
	CHECK(strcmp(sim_board_app_version(b), "v-powerloss-2") == 0 ||
	      strcmp(sim_board_app_version(b), "v-killed") == 0);
	CHECK_EQ_INT(sim_sh(eng_sim(), "fsck.fat -n %s >/dev/null", sim_board_sdcard_path(b)), 0);
	/* the file is not lost: asking again flashes it */
	CHECK_EQ_INT(eng_ctl(&out, "flash", "7-2", NULL), 0);
	free(out);
	CHECK_EQ_INT(wait_flashed(b, &m, 30000), 0);
	check_runs(b, &m, "v-killed");
	CHECK_EQ_INT(sim_proc_wait_notify(eng_daemon(), "0 jobs running", 10000), 0);
	img_free(&m);

	img_make(&m, b, "v-killed-confirm", 44 * 1024);
	CHECK_EQ_INT(queue("pro", &m), 0);
	pid = wait_worker(20000);
	CHECK(pid > 0 && wait_gone(pid, 20000) == 0);
	pid = wait_worker(20000);
	CHECK(pid > 0);
	if (pid > 0)
		CHECK_EQ_INT(kill(pid, SIGKILL), 0);
	/* the bootloader had its turn already: the new firmware runs, and the question is
	 * asked again */
	CHECK_EQ_INT(wait_flashed(b, &m, 30000), 0);
	CHECK_EQ_INT(eng_wait("the confirm step ended without an answer; asking again", 1000), 0);
	check_runs(b, &m, "v-killed-confirm");
	check_history("7-2", m.sha, "succeeded");
	CHECK_EQ_INT(sim_proc_wait_notify(eng_daemon(), "0 jobs running", 10000), 0);
	img_free(&m);
}

/* The daemon SIGKILLed after the write, while the new firmware boots: the restarted daemon
 * resumes the job, confirms what the board runs without writing again, and records it. */
static void
test_daemon_killed(struct sim_board *b)
{
	struct img m;
	unsigned before = flashes(b);
	int pid;

	img_make(&m, b, "v-daemon-killed", 40 * 1024);
	CHECK_EQ_INT(queue("turbo", &m), 0);
	pid = wait_worker(20000);
	CHECK(pid > 0 && wait_gone(pid, 20000) == 0);
	CHECK_EQ_INT(wait_step("7-1", "boot-check", 10000), 0);
	CHECK_EQ_INT(eng_kill(), 128 + SIGKILL);
	CHECK_EQ_INT(eng_start(NULL), 0);
	CHECK_EQ_INT(wait_flashed(b, &m, 30000), 0);
	check_runs(b, &m, "v-daemon-killed");
	check_history("7-1", m.sha, "succeeded");
	CHECK_EQ_INT(flashes(b), before + 1);
	img_free(&m);
}

int
main(int argc, char **argv)
{
	struct sim_board *turbo, *pro;

	eng_init(argc, argv, "sd");
	turbo = eng_add("skr-1.4-turbo", "7-1", SIM_MODE_KLIPPER_APP, false);
	pro = eng_add("skr-pro", "7-2", SIM_MODE_KLIPPER_APP, false);
	if (!turbo || !pro)
		return 1;
	CHECK_EQ_INT(sim_board_new_sdcard(turbo, 64ull << 20, "fat16"), 0);
	CHECK_EQ_INT(sim_board_new_sdcard(pro, 128ull << 20, "fat32"), 0);
	eng_write_conf("", profiles);
	CHECK_EQ_INT(eng_start(NULL), 0);
	CHECK_EQ_INT(
	    eng_wait("board appeared: skr-1.4-turbo in klipper-app mode on port 7-1", 10000), 0);
	CHECK_EQ_INT(eng_wait("board appeared: skr-pro in klipper-app mode on port 7-2", 10000), 0);
	test_flash(turbo, "turbo", "v0.13.0-turbo");
	test_flash(pro, "pro", "v0.13.0-pro");
	test_rename_fails(turbo);
	test_orphan(turbo);
	test_power_loss(pro);
	/* the kills first: failed jobs are retried once after a cool-down, and a worker of
	 * such a retry must not be taken for the one to kill */
	test_worker_killed(pro);
	test_daemon_killed(turbo);
	test_rollback();
	test_no_init();
	test_exfat();
	test_sdio();
	CHECK_EQ_INT(eng_stop(), 0);
	eng_done();
	TEST_DONE();
}
