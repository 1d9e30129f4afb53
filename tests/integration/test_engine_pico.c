/* SPDX-License-Identifier: GPL-2.0-or-later */
/* test_engine_pico: the unmodified daemon flashes a simulated SKR Pico (RP2040) from its
 * running Klipper through BOOTSEL and back: the 1200-baud touch, PICOBOOT (only the sectors
 * that change), the reboot, the boot check; the same image again is "already runs"; a board
 * plugged in already in BOOTSEL is flashed on hotplug; where another program holds PICOBOOT
 * the image goes to the RPI-RP2 drive as a .uf2; an image whose boot2 the bootrom refuses
 * is never written (validation); and a build that crashes at start-up is rolled back through
 * BOOTSEL once the operator presses BOOT, as the daemon asks. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "flash.h"
#include "harness.h"
#include "test_engine_lib.h"
#include "util.h"

static const char profiles[] =
    "  { name = \"pico\"; match = { board = \"skr-pico\"; port = \"1-6\"; };\n"
    "    auto_flash = [\"queue\"]; },\n"
    "  { name = \"pico-bootsel\"; match = { board = \"skr-pico\"; port = \"1-7\"; };\n"
    "    auto_flash = [\"hotplug\"]; },\n"
    "  { name = \"pico-drive\"; match = { board = \"skr-pico\"; port = \"1-8\"; };\n"
    "    auto_flash = [\"queue\"]; },\n"
    "  { name = \"pico-crash\"; match = { board = \"skr-pico\"; port = \"1-9\"; };\n"
    "    auto_flash = [\"queue\"]; }";

/* A "No bootloader" RP2040 build as Klipper makes it: boot2 (256 bytes ending in its
 * CRC-32) at 0x10000000, the application linked at 0x10000100. */
static char *
pico_image(struct sim_board *b, const char *name, size_t app_len, bool good_boot2,
	   uint8_t **ret_img, size_t *ret_len, char sha[65])
{
	char *path = xasprintf("%s/%s.bin", eng_dir(), name);

	*ret_img = sim_image_rp2040(sim_board_model(b)->mcu, name, app_len, good_boot2, ret_len);
	if (write_file_atomic(path, *ret_img, *ret_len, 0644) < 0) {
		fprintf(stderr, "cannot write %s\n", path);
		exit(1);
	}
	sha256_hex(*ret_img, *ret_len, sha);
	return path;
}

static void
check_history(const char *port, const char *sha, const char *result, const char *method)
{
	json_object *hist = eng_history(), *row = eng_newest_on(hist, port);

	CHECK(row != NULL);
	CHECK_STREQ(eng_str(row, "result"), result);
	CHECK_STREQ(eng_str(row, "method"), method);
	CHECK_STREQ(eng_str(row, "sha256"), sha);
	json_object_put(hist);
}

/* The board runs `version`, written over PICOBOOT or the drive, and its job is recorded. */
static void
check_flashed(struct sim_board *b, const uint8_t *img, size_t len, const char *sha,
	      const char *version)
{
	CHECK(flash_equals(sim_board_flash(b), 0x10000000u, img, len));
	CHECK_EQ_INT(sim_board_wait_mode(b, SIM_MODE_KLIPPER_APP, 5000), 0);
	CHECK_STREQ(sim_board_app_version(b), version);
	check_history(sim_board_port(b), sha, "succeeded", "uf2");
}

/* Klipper app -> 1200 baud -> BOOTSEL -> PICOBOOT -> reboot -> Klipper app */
static void
test_from_klipper(struct sim_board *b)
{
	uint8_t *img;
	size_t len;
	char sha[65], buf[128], *out = NULL;
	char *path = pico_image(b, "v0.13.0-pico", 44 * 1024, true, &img, &len, sha);
	char *needle = xasprintf("flashed skr-pico on port 1-6 with %.12s", sha);

	CHECK_EQ_INT(eng_ctl(&out, "queue", "pico", path, NULL), 0);
	free(out);
	CHECK_EQ_INT(eng_wait("on port 1-6: klipper-app -> rp2040-bootsel", 10000), 0);
	CHECK_EQ_INT(eng_wait(needle, 20000), 0);
	check_flashed(b, img, len, sha, "v0.13.0-pico");
	CHECK_STREQ(eng_board_field("1-6", "installed_sha256", buf, sizeof(buf)), sha);
	CHECK_EQ_INT(sim_proc_wait_notify(eng_daemon(), "0 jobs running", 10000), 0);
	/* the same firmware again: nothing to do */
	CHECK(eng_ctl(&out, "flash", "1-6", NULL) != 0);
	CHECK(out && strstr(out, "already runs"));
	free(out);
	free(needle);
	free(path);
	free(img);
}

/* An SKR Pico running Klipper on port, once the daemon saw it; NULL if none could be added. */
static struct sim_board *
add_pico(const char *port)
{
	struct sim_board *b = eng_add("skr-pico", port, SIM_MODE_KLIPPER_APP, false);
	char *appeared;

	CHECK(b != NULL);
	if (!b)
		return NULL;
	appeared = xasprintf("board appeared: skr-pico in klipper-app mode on port %s", port);
	CHECK_EQ_INT(eng_wait(appeared, 10000), 0);
	free(appeared);
	return b;
}

/* A good image `version` queued for profile; its path (the bytes and sha256 in img, len,
 * sha) and the line that says it was flashed in *ret_needle. */
static char *
queue_pico(struct sim_board *b, const char *profile, const char *version, size_t app_len,
	   uint8_t **img, size_t *len, char sha[65], char **ret_needle)
{
	char *out = NULL, *path = pico_image(b, version, app_len, true, img, len, sha);

	*ret_needle = xasprintf("flashed skr-pico on port %s with %.12s", sim_board_port(b), sha);
	CHECK_EQ_INT(eng_ctl(&out, "queue", profile, path, NULL), 0);
	free(out);
	return path;
}

/* A board plugged in already in BOOTSEL (Boot jumper + reset) is flashed on hotplug: BOOTSEL
 * has no unique serial, the profile's port names it. */
static void
test_already_bootsel(void)
{
	struct sim_board *b = add_pico("1-7");
	uint8_t *img;
	size_t len;
	char sha[65], *path, *needle;

	if (!b)
		return;
	CHECK_EQ_INT(sim_board_unplug(b), 0);
	CHECK_EQ_INT(eng_wait("board left: skr-pico on port 1-7", 10000), 0);
	path =
	    queue_pico(b, "pico-bootsel", "v0.13.0-bootsel", 40 * 1024, &img, &len, sha, &needle);
	CHECK_EQ_INT(sim_board_plug(b, SIM_MODE_BOOTSEL), 0);
	CHECK_EQ_INT(eng_wait(needle, 20000), 0);
	check_flashed(b, img, len, sha, "v0.13.0-bootsel");
	free(needle);
	free(path);
	free(img);
}

/* boot2 with a wrong CRC: the bootrom would stay in BOOTSEL for ever; refused before the
 * board is touched, and the file kept in rejected/ */
static void
test_bad_boot2(struct sim_board *b)
{
	uint8_t *img, *before = eng_flash_copy(b, 0x10000000u, 0x10000000u + 64 * 1024);
	size_t len;
	char sha[65], *out = NULL;
	char *path = pico_image(b, "v-bad-boot2", 40 * 1024, false, &img, &len, sha);

	CHECK(eng_ctl(&out, "queue", "pico", path, NULL) != 0);
	CHECK(out && strstr(out, "boot2"));
	free(out);
	CHECK_EQ_INT(sim_board_mode(b), SIM_MODE_KLIPPER_APP);
	{
		uint8_t *after = eng_flash_copy(b, 0x10000000u, 0x10000000u + 64 * 1024);

		CHECK(memcmp(before, after, 64 * 1024) == 0);
		free(after);
	}
	free(before);
	free(path);
	free(img);
}

/* PICOBOOT held by another program: the daemon writes NEW.UF2 to the RPI-RP2 drive, the ROM
 * reboots into it, and the boot check confirms it. */
static void
test_drive(void)
{
	struct sim_board *b = add_pico("1-8");
	struct sim_fault busy = {.kind = SIM_FAULT_PICOBOOT_BUSY};
	uint8_t *img;
	size_t len;
	char sha[65], *path, *needle;

	if (!b)
		return;
	CHECK_EQ_INT(sim_board_set_fault(b, &busy), 0);
	path = queue_pico(b, "pico-drive", "v0.13.0-drive", 36 * 1024, &img, &len, sha, &needle);
	CHECK_EQ_INT(eng_wait(needle, 20000), 0);
	CHECK(eng_wait("writing a .uf2 to the RPI-RP2 drive", 1000) == 0);
	check_flashed(b, img, len, sha, "v0.13.0-drive");
	free(needle);
	free(path);
	free(img);
}

/* A build that crashes at start-up: the RP2040 has no bootloader to fall back to, so the
 * daemon asks for the BOOTSEL button; once the operator holds it and resets the board, the
 * job rolls back to the known-good image through PICOBOOT by itself. */
static void
test_rollback(void)
{
	struct sim_board_spec spec = {.model = "skr-pico",
				      .port = "1-9",
				      .mode = SIM_MODE_KLIPPER_APP,
				      .crash_version = "crash",
				      .bootloop = SIM_BOOTLOOP_FLICKER,
				      .bootloop_cycles = 2};
	struct sim_board *b = sim_board_add(eng_sim(), &spec);
	uint8_t *good, *bad;
	size_t glen, blen;
	char gsha[65], bsha[65], *gpath, *bpath, *out = NULL, *needle;

	CHECK(b != NULL);
	if (!b)
		return;
	CHECK_EQ_INT(eng_wait("board appeared: skr-pico in klipper-app mode on port 1-9", 10000),
		     0);
	gpath = pico_image(b, "v0.13.0-good", 32 * 1024, true, &good, &glen, gsha);
	bpath = pico_image(b, "v0.14.0-crash", 32 * 1024, true, &bad, &blen, bsha);
	needle = xasprintf("flashed skr-pico on port 1-9 with %.12s", gsha);
	CHECK_EQ_INT(eng_ctl(&out, "queue", "pico-crash", gpath, NULL), 0);
	free(out);
	CHECK_EQ_INT(eng_wait(needle, 20000), 0);
	free(needle);
	CHECK_EQ_INT(sim_proc_wait_notify(eng_daemon(), "0 jobs running", 10000), 0);

	CHECK_EQ_INT(eng_ctl(&out, "queue", "--no-wait", "pico-crash", bpath, NULL), 0);
	free(out);
	needle = xasprintf("on port 1-9 did not boot the new firmware %.12s", bsha);
	CHECK_EQ_INT(eng_wait(needle, 30000), 0);
	free(needle);
	CHECK(flash_equals(sim_board_flash(b), 0x10000000u, bad, blen));
	CHECK_EQ_INT(eng_wait("on port 1-9: hold its BOOT button and press RESET", 5000), 0);
	/* the operator: BOOT held, RESET pressed */
	CHECK_EQ_INT(sim_board_plug(b, SIM_MODE_BOOTSEL), 0);
	needle = xasprintf("rolled back to the last known-good %.12s", gsha);
	CHECK_EQ_INT(eng_wait(needle, 20000), 0);
	free(needle);
	CHECK(flash_equals(sim_board_flash(b), 0x10000000u, good, glen));
	CHECK_EQ_INT(sim_board_wait_mode(b, SIM_MODE_KLIPPER_APP, 5000), 0);
	CHECK_STREQ(sim_board_app_version(b), "v0.13.0-good");
	check_history("1-9", bsha, "rolled-back", "uf2");
	free(gpath);
	free(bpath);
	free(good);
	free(bad);
}

int
main(int argc, char **argv)
{
	struct sim_board *b;

	eng_init(argc, argv, "pico");
	b = eng_add("skr-pico", "1-6", SIM_MODE_KLIPPER_APP, false);
	eng_write_conf("", profiles);
	CHECK_EQ_INT(eng_start(NULL), 0);
	CHECK_EQ_INT(eng_wait("board appeared: skr-pico in klipper-app mode on port 1-6", 10000),
		     0);
	if (b) {
		test_from_klipper(b);
		test_bad_boot2(b);
	}
	test_already_bootsel();
	test_drive();
	test_rollback();
	CHECK_EQ_INT(eng_stop(), 0);
	eng_done();
	TEST_DONE();
}
