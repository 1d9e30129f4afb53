/* SPDX-License-Identifier: GPL-2.0-or-later */
/* test_engine_sdio: the unmodified daemon, as in production (tests/integration/as-user),
 * flashes stock SDIO boards (Octopus, SKR 2, SKR 3 with their BTT SD bootloader, no
 * Katapult) over the SD-card path. Their bootloader cannot read the card Klipper latched in
 * SPI mode until the board loses power, so:
 *
 * - with a Moonraker power device: the fake Moonraker switches it off and on (its requests
 *   become power cuts of the simulated board), then the job verifies and records;
 * - with a power command (a script that cuts the board's power the same way): likewise;
 * - with neither: the board shows "needs-power-cycle" (boards, status, --json, journal), the
 *   printer keeps its old firmware, and when the test switches the board off and on the job
 *   finishes by itself;
 * - a power cycle that is refused (print state unknown), fails or hangs leaves the board in
 *   that same state with the reason, never stranded, and a manual power cycle finishes it;
 * - a print in progress refuses the whole job before anything is written. */
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
#include "sim_power.h"
#include "test_engine_lib.h"
#include "util.h"

#define CARD_BYTES ((uint64_t)64 * 1024 * 1024)
/* the SD path talks to the card one SPI command at a time through the simulated Klipper: on
 * a loaded machine a write and its confirm take tens of seconds */
#define SLOW_MS 120000

static struct sim_power power; /* the requests of the fake Moonraker and the script */
static char *power_path;       /* their file */
static pid_t moon_pid;	       /* the fake Moonraker */
static int moon_stdin = -1;    /* closing it ends the fake */
static unsigned moon_port;

/* The fake Moonraker, on the power requests' file; not under the testbed's preload: it is
 * a network service, not a USB user. */
static bool
start_moonraker(void)
{
	char *a[] = {(char[]){"python3"}, (char[]){"tests/integration/fake_moonraker.py"},
		     (char[]){"0"},	  (char[]){"standby"},
		     power_path,	  NULL};
	char port[32];

	moon_pid = eng_fake_start(NULL, a, &moon_stdin, port, sizeof(port));
	moon_port = moon_pid > 0 ? (unsigned)strtoul(port, NULL, 10) : 0;
	return moon_port > 0;
}

/* Waits for needle in the daemon's output while the power requests are carried out. */
static int
wait_powered(const char *needle, int timeout_ms)
{
	for (int waited = 0; waited < timeout_ms; waited += 50) {
		(void)sim_power_poll(eng_sim(), &power);
		if (eng_count(needle) > 0)
			return 0;
		usleep(50 * 1000);
	}
	fprintf(stderr, "timed out waiting for: %s\n", needle);
	return -ETIMEDOUT;
}

static struct sim_board *
sdio_board(const char *model, const char *port)
{
	struct sim_board *b = eng_add(model, port, SIM_MODE_KLIPPER_APP, false);

	if (b && sim_board_new_sdcard(b, CARD_BYTES, "fat32") < 0) {
		fprintf(stderr, "cannot make the SD card of %s\n", port);
		return NULL;
	}
	return b;
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

/* Queues an image for the board on `port` (profile of the same name); its path, bytes and
 * sha256. */
static char *
queue(struct sim_board *b, const char *profile, const char *version, uint8_t **img, size_t *len,
      char sha[65])
{
	char *out = NULL, *path = eng_image(b, 0, version, 40 * 1024, img, len, sha);

	CHECK_EQ_INT(eng_ctl(&out, "queue", profile, path, NULL), 0);
	free(out);
	return path;
}

/* The board ran `version` after a verified, recorded flash over the SD path. */
static void
check_flashed(struct sim_board *b, const char *port, const uint8_t *img, size_t len,
	      const char *sha, const char *version)
{
	char buf[128];

	CHECK_EQ_INT(sim_board_wait_mode(b, SIM_MODE_KLIPPER_APP, 5000), 0);
	CHECK_STREQ(sim_board_app_version(b), version);
	CHECK(flash_equals(sim_board_flash(b), sim_board_app_start(b), img, len));
	check_history(port, sha, "succeeded");
	CHECK_STREQ(eng_board_field(port, "installed_sha256", buf, sizeof(buf)), sha);
	CHECK(strcmp(eng_board_field(port, "state", buf, sizeof(buf)), "needs-power-cycle") != 0);
}

/* Moonraker's power device switches the board off and on; the job verifies by itself. */
static void
test_moonraker_device(void)
{
	struct sim_board *b = sdio_board("octopus-f446", "9-1");
	uint8_t *img;
	size_t len;
	char sha[65], *needle, *path;
	unsigned before = power.applied;

	CHECK(b != NULL);
	if (!b)
		return;
	CHECK_EQ_INT(
	    eng_wait("board appeared: octopus-f446 in klipper-app mode on port 9-1", 10000), 0);
	path = queue(b, "psu", "v0.13.0-psu", &img, &len, sha);
	CHECK_EQ_INT(wait_powered("Moonraker power device '9-1' power-cycled octopus-f446 on "
				  "port 9-1",
				  SLOW_MS),
		     0);
	needle = xasprintf("flashed octopus-f446 on port 9-1 with %.12s", sha);
	CHECK_EQ_INT(wait_powered(needle, SLOW_MS), 0);
	/* exactly one cycle: off, then on */
	CHECK_EQ_INT(power.applied - before, 2);
	check_flashed(b, "9-1", img, len, sha, "v0.13.0-psu");
	CHECK_EQ_INT(eng_count("needs a power cycle"), 0);
	free(needle);
	free(path);
	free(img);
}

/* A command (here a script standing in for uhubctl) does the power cycle. */
static void
test_command(void)
{
	struct sim_board *b = sdio_board("skr-2-f429", "9-2");
	uint8_t *img;
	size_t len;
	char sha[65], *needle, *path;

	CHECK(b != NULL);
	if (!b)
		return;
	CHECK_EQ_INT(eng_wait("board appeared: skr-2-f429 in klipper-app mode on port 9-2", 10000),
		     0);
	path = queue(b, "hub", "v0.13.0-hub", &img, &len, sha);
	/* its output reaches the journal with the board's fields */
	CHECK_EQ_INT(wait_powered("switching port 9-2 off for 0.300 s", SLOW_MS), 0);
	needle = xasprintf("flashed skr-2-f429 on port 9-2 with %.12s", sha);
	CHECK_EQ_INT(wait_powered(needle, SLOW_MS), 0);
	check_flashed(b, "9-2", img, len, sha, "v0.13.0-hub");
	free(needle);
	free(path);
	free(img);
}

/* No power group: the state is shown until a person switches the board off and on. */
static void
test_needs_power_cycle(void)
{
	struct sim_board *b = sdio_board("skr-3-h723", "9-3");
	json_object *o, *st, *jobs;
	uint8_t *img;
	size_t len;
	char sha[65], *needle, *path, *out = NULL, buf[700];
	bool listed = false;

	CHECK(b != NULL);
	if (!b)
		return;
	CHECK_EQ_INT(eng_wait("board appeared: skr-3-h723 in klipper-app mode on port 9-3", 10000),
		     0);
	path = queue(b, "manual", "v0.13.0-manual", &img, &len, sha);
	CHECK_EQ_INT(eng_wait("profile 'manual' has no power group", SLOW_MS), 0);
	/* the journal line: the warning, with the board's structured fields */
	{
		char *line = eng_line("profile 'manual' has no power group");

		CHECK(line && strstr(line, "<4>firmware.bin is on the SD card of skr-3-h723 on "
					   "port 9-3"));
		CHECK(line && strstr(line, "board=skr-3-h723 port=9-3"));
		CHECK(line && strstr(line, "step=needs-power-cycle state=needs-power-cycle"));
		free(line);
	}
	/* the old firmware runs meanwhile: the bootloader could not read the card */
	CHECK_EQ_INT(sim_board_wait_mode(b, SIM_MODE_KLIPPER_APP, 5000), 0);
	CHECK_STREQ(sim_board_app_version(b), "v0.12.0-sim");
	CHECK(sim_board_sdcard_spi_mode(b));
	/* boards, boards --json, status --json, status */
	CHECK_STREQ(eng_board_field("9-3", "state", buf, sizeof(buf)), "needs-power-cycle");
	CHECK(strstr(eng_board_field("9-3", "why", buf, sizeof(buf)),
		     "Switch the board off and on") != NULL);
	CHECK_EQ_INT(eng_ctl(&out, "boards", NULL), 0);
	CHECK(out && strstr(out, "needs-power-cycle"));
	CHECK(out && strstr(out, "skr-3-h723 on port 9-3 needs a power cycle: firmware.bin"));
	free(out);
	o = eng_ctl_json("status", NULL);
	CHECK(o != NULL);
	CHECK(o && json_object_object_get_ex(o, "jobs", &jobs));
	for (size_t i = 0; o && jobs && i < json_object_array_length(jobs); i++) {
		st = json_object_array_get_idx(jobs, i);
		if (strcmp(eng_str(st, "port"), "9-3") == 0) {
			listed = true;
			CHECK_STREQ(eng_str(st, "state"), "needs-power-cycle");
			CHECK_STREQ(eng_str(st, "step"), "needs-power-cycle");
			CHECK(strstr(eng_str(st, "why"), "has no power group") != NULL);
		}
	}
	CHECK(listed);
	/* a job that waits for a person holds no slot */
	CHECK_EQ_INT(eng_int(o, "jobs_running"), 0);
	json_object_put(o);
	CHECK_EQ_INT(eng_ctl(&out, "status", NULL), 0);
	CHECK(out && strstr(out, "needs power cycle: skr-3-h723 on port 9-3"));
	free(out);

	/* a daemon restart keeps the state: the resumed job asks the app, which still runs
	 * the old firmware, and waits again */
	CHECK_EQ_INT(eng_kill(), 128 + 9);
	CHECK_EQ_INT(eng_start(NULL), 0);
	CHECK_EQ_INT(eng_wait("profile 'manual' has no power group", SLOW_MS), 0);
	CHECK_STREQ(eng_board_field("9-3", "state", buf, sizeof(buf)), "needs-power-cycle");
	CHECK_STREQ(sim_board_app_version(b), "v0.12.0-sim");

	/* the person switches it off and on: the job finishes by itself */
	CHECK_EQ_INT(sim_board_power_off(b), 0);
	usleep(1500 * 1000); /* off past the leave grace (1 s): a person's power cycle */
	CHECK_EQ_INT(sim_board_power_cycle(b), 0);
	needle = xasprintf("flashed skr-3-h723 on port 9-3 with %.12s", sha);
	CHECK_EQ_INT(eng_wait(needle, SLOW_MS), 0);
	check_flashed(b, "9-3", img, len, sha, "v0.13.0-manual");
	free(needle);
	free(path);
	free(img);
}

/* A power cycle that fails or hangs: the reason is shown in the same state, nothing is
 * stranded, and a manual power cycle finishes the job. */
static void
test_power_fails(const char *model, const char *port, const char *profile, const char *why)
{
	struct sim_board *b = sdio_board(model, port);
	uint8_t *img;
	size_t len;
	char sha[65], *needle, *path, buf[700], *version = xasprintf("v0.13.0-%s", profile);

	CHECK(b != NULL);
	if (!b)
		return;
	needle = xasprintf("board appeared: %s in klipper-app mode on port %s", model, port);
	CHECK_EQ_INT(eng_wait(needle, 10000), 0);
	free(needle);
	path = queue(b, profile, version, &img, &len, sha);
	for (int i = 0; i < SLOW_MS / 100; i++) {
		if (strcmp(eng_board_field(port, "state", buf, sizeof(buf)), "needs-power-cycle") ==
		    0)
			break;
		usleep(100 * 1000);
	}
	CHECK_STREQ(eng_board_field(port, "state", buf, sizeof(buf)), "needs-power-cycle");
	CHECK(strstr(eng_board_field(port, "why", buf, sizeof(buf)), why) != NULL);
	if (!strstr(buf, why))
		fprintf(stderr, "why: %s\n", buf);
	/* not stranded: the old firmware runs */
	CHECK_EQ_INT(sim_board_wait_mode(b, SIM_MODE_KLIPPER_APP, 5000), 0);
	CHECK_STREQ(sim_board_app_version(b), "v0.12.0-sim");
	CHECK_EQ_INT(sim_board_power_off(b), 0);
	usleep(1500 * 1000); /* off past the leave grace (1 s): a person's power cycle */
	CHECK_EQ_INT(sim_board_power_cycle(b), 0);
	needle = xasprintf("flashed %s on port %s with %.12s", model, port, sha);
	CHECK_EQ_INT(eng_wait(needle, SLOW_MS), 0);
	check_flashed(b, port, img, len, sha, version);
	free(needle);
	free(path);
	free(img);
	free(version);
}

/* Printing: nothing is written and no power is switched. */
static void
test_printing(void)
{
	struct sim_board *b = sdio_board("octopus-f446", "9-7");
	uint8_t *img;
	size_t len;
	char sha[65], *path;
	unsigned before;

	CHECK(b != NULL);
	if (!b)
		return;
	CHECK_EQ_INT(
	    eng_wait("board appeared: octopus-f446 in klipper-app mode on port 9-7", 10000), 0);
	before = power.applied;
	path = queue(b, "printing", "v0.13.0-printing", &img, &len, sha);
	CHECK_EQ_INT(eng_wait("/printing is printing; not flashing octopus-f446", 20000), 0);
	(void)sim_power_poll(eng_sim(), &power);
	CHECK_EQ_INT(power.applied, before);
	CHECK_STREQ(sim_board_app_version(b), "v0.12.0-sim");
	CHECK(!sim_board_sdcard_spi_mode(b)); /* the card was never touched */
	free(path);
	free(img);
}

static void
write_script(const char *path, const char *body)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0755);

	if (fd < 0 || write(fd, body, strlen(body)) != (ssize_t)strlen(body)) {
		perror(path);
		exit(1);
	}
	close(fd);
	(void)chmod(path, 0755);
}

int
main(int argc, char **argv)
{
	char *profiles, *script, *hang;
	int fd;

	eng_init(argc, argv, "sdio");
	power_path = xasprintf("%s/power", eng_dir());
	power.path = power_path;
	/* the daemon's user appends to it (the script runs as that user) */
	fd = open(power_path, O_WRONLY | O_CREAT | O_CLOEXEC, 0666);
	if (fd >= 0)
		close(fd);
	(void)chmod(power_path, 0666);
	script = xasprintf("%s/power-cycle.sh", eng_dir());
	write_script(script,
		     "#!/bin/sh\n"
		     "# a stand-in for uhubctl: cut the port's power, wait, restore it\n"
		     "echo \"switching port $SKRFLASH_PORT off for $SKRFLASH_OFF_SECONDS s\"\n"
		     "echo \"$SKRFLASH_PORT off\" >>\"$1\"\n"
		     "sleep \"$SKRFLASH_OFF_SECONDS\"\n"
		     "echo \"$SKRFLASH_PORT on\" >>\"$1\"\n");
	hang = xasprintf("%s/hang.sh", eng_dir());
	write_script(hang, "#!/bin/sh\necho 'waiting for the hub'\nsleep 60\n");
	if (!start_moonraker()) {
		fprintf(stderr, "cannot start the fake Moonraker\n");
		return 1;
	}
	profiles = xasprintf(
	    "  { name = \"psu\"; match = { board = \"octopus-f446\"; port = \"9-1\"; };\n"
	    "    methods = [ \"sd\" ]; auto_flash = [ \"queue\" ];\n"
	    "    moonraker = \"http://127.0.0.1:%u\";\n"
	    "    power = { moonraker_device = \"9-1\"; off_seconds = 0.3; }; },\n"
	    "  { name = \"hub\"; match = { board = \"skr-2-f429\"; port = \"9-2\"; };\n"
	    "    methods = [ \"sd\" ]; auto_flash = [ \"queue\" ];\n"
	    "    power = { command = [ \"%s\", \"%s\" ]; off_seconds = 0.3; }; },\n"
	    "  { name = \"manual\"; match = { board = \"skr-3-h723\"; port = \"9-3\"; };\n"
	    "    methods = [ \"sd\" ]; auto_flash = [ \"queue\" ]; },\n"
	    "  { name = \"unknown\"; match = { board = \"octopus-f446\"; port = \"9-4\"; };\n"
	    "    methods = [ \"sd\" ]; auto_flash = [ \"queue\" ];\n"
	    "    moonraker = \"http://127.0.0.1:%u/klippy-down\"; moonraker_fail_open = true;\n"
	    "    power = { moonraker_device = \"9-4\"; }; },\n"
	    "  { name = \"failing\"; match = { board = \"skr-2-f407\"; port = \"9-5\"; };\n"
	    "    methods = [ \"sd\" ]; auto_flash = [ \"queue\" ];\n"
	    "    power = { command = [ \"/bin/sh\", \"-c\", \"echo 'No compatible devices "
	    "detected!'; exit 1\" ]; }; },\n"
	    "  { name = \"hanging\"; match = { board = \"skr-3-h743\"; port = \"9-6\"; };\n"
	    "    methods = [ \"sd\" ]; auto_flash = [ \"queue\" ];\n"
	    "    power = { command = [ \"%s\" ]; off_seconds = 0.2; timeout = 1.5; }; },\n"
	    "  { name = \"printing\"; match = { board = \"octopus-f446\"; port = \"9-7\"; };\n"
	    "    methods = [ \"sd\" ]; auto_flash = [ \"queue\" ];\n"
	    "    moonraker = \"http://127.0.0.1:%u/printing\";\n"
	    "    power = { moonraker_device = \"9-7\"; }; }",
	    moon_port, script, power_path, moon_port, hang, moon_port);
	eng_write_conf("", profiles);
	if (eng_start(NULL) < 0)
		return 1;
	test_moonraker_device();
	test_command();
	test_needs_power_cycle();
	test_power_fails("octopus-f446", "9-4", "unknown",
			 "the power cycle failed: not power-cycling octopus-f446 through power "
			 "device '9-4'");
	test_power_fails("skr-2-f407", "9-5", "failing",
			 "exit status 1: No compatible devices detected!");
	test_power_fails("skr-3-h743", "9-6", "hanging",
			 "did not power-cycle skr-3-h743 on port 9-6 within 1.500 s; stopped it "
			 "(last output: waiting for the hub)");
	test_printing();
	CHECK_EQ_INT(eng_stop(), 0);
	close(moon_stdin);
	(void)waitpid(moon_pid, NULL, 0);
	eng_done();
	free(profiles);
	free(script);
	free(hang);
	free(power_path);
	TEST_DONE();
}
