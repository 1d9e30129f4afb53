/* SPDX-License-Identifier: GPL-2.0-or-later */
/* test_sim_marlin: Marlin on a simulated SKR 1.3 (sim_marlin.c) and the "msc" backend against
 * it. The tty answers M115/M21/M22/M27 like Marlin (ok lines); the card is the board's SD
 * image, shown on its USB drive only once Marlin released it (M22); the backend writes
 * firmware.bin there, proven by mtools and fsck.fat; M997 resets the board. Failure modes:
 * an SD print (M27) and an M22 that does not release the card end clearly, nothing written. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include <libudev.h>

#include "flash.h"
#include "flash/marlin.h"
#include "flash/worker.h"
#include "harness.h"
#include "proto/marlin.h"
#include "sim.h"
#include "udevwatch.h"
#include "util.h"

static char tmpdir[] = "/tmp/skrflash-marlin-XXXXXX";

/* A 64 MiB card as they come: an MBR, one FAT32 partition from sector 2048. */
static char *
make_card(const char *name)
{
	char *img = xasprintf("%s/%s", tmpdir, name);
	char *cmd = xasprintf("rm -f %s && truncate -s 64M %s && "
			      "printf 'label: dos\\nstart=2048, type=c\\n' | "
			      "/sbin/sfdisk -q %s >/dev/null && "
			      "/sbin/mkfs.fat -F 32 -n MARLINSD --offset 2048 %s >/dev/null 2>&1",
			      img, img, img, img);

	CHECK_EQ_INT(system(cmd), 0);
	free(cmd);
	return img;
}

static char *
partition(const char *img)
{
	return xasprintf("%s@@%u", img, 2048u * 512u);
}

/* the card's FAT32 partition, from sector 2048 */
static int
fsck_card(struct sim *s, const char *img)
{
	char *part = xasprintf("%s.part", img);
	int r = sim_fsck_fat(s, img, 2048u * 512u, part);

	free(part);
	return r;
}

static char *
write_image(const char *name, const uint8_t *img, size_t len)
{
	char *path = xasprintf("%s/%s", tmpdir, name);

	CHECK_EQ_INT(write_file_atomic(path, img, len, 0644), 0);
	return path;
}

static void
plan_for(struct sim_board *b, const char *image, struct worker_plan *p)
{
	struct udev *u = udev_new();

	memset(p, 0, sizeof(*p));
	(void)str_copy(p->action, sizeof(p->action), "flash");
	(void)str_copy(p->method, sizeof(p->method), "msc");
	(void)str_copy(p->board, sizeof(p->board), sim_board_model(b)->name);
	(void)str_copy(p->image_path, sizeof(p->image_path), image);
	p->interface = CONFIG_INTERFACE_USB;
	CHECK_EQ_INT(udevwatch_device_at_port(u, sim_board_port(b), &p->dev), 0);
	udev_unref(u);
}

/* The tty by hand, as a host would talk to it. */
static void
gcode_dialogue(struct sim_board *b)
{
	struct marlin_client c;
	struct marlin_info info;
	char reply[1024];
	bool printing = true;
	uint64_t pos = 1, size = 1;

	CHECK_EQ_INT(marlin_client_open(&c, sim_board_tty(b)), 0);
	CHECK_EQ_INT(marlin_client_identify(&c, &info), 0);
	CHECK_STREQ(info.firmware, "Marlin 2.1.2");
	CHECK_STREQ(info.version, "2.1.2");
	CHECK_STREQ(info.machine, "SKR 1.3 Ender");
	CHECK_EQ_INT((int)info.extruders, 1);
	CHECK_EQ_INT(marlin_client_sd_status(&c, &printing, &pos, &size), 0);
	CHECK(!printing);
	CHECK_EQ_INT(marlin_client_command(&c, "G4711", 0, reply, sizeof(reply)), 0);
	CHECK(strstr(reply, "Unknown command") != NULL);
	/* M22 releases the card, M21 takes it back */
	CHECK(sim_board_marlin_card_held(b));
	CHECK_EQ_INT(marlin_client_command(&c, "M22", 0, NULL, 0), 0);
	CHECK(!sim_board_marlin_card_held(b));
	CHECK_EQ_INT(marlin_client_command(&c, "M21", 0, reply, sizeof(reply)), 0);
	CHECK(strstr(reply, "echo:SD card ok") != NULL);
	CHECK(sim_board_marlin_card_held(b));
	marlin_client_close(&c);
}

/* One Marlin board with its card, shared by the steps of the test. */
struct marlin_test {
	struct sim *s;
	struct sim_board *b;
	const struct catalog_mcu *mcu;
	char *card, *at; /* the card's image, and its FAT partition for mtools */
	uint8_t *img;	 /* the new build written through the msc backend */
	size_t len;
	char *bin;
};

/* the factory app is Klipper: reset with a Marlin build in flash boots Marlin */
static void
boot_marlin(struct marlin_test *t)
{
	uint8_t *img;
	size_t len;

	t->mcu = sim_board_model(t->b)->mcu;
	t->card = make_card("card.img");
	t->at = partition(t->card);
	CHECK_EQ_INT(sim_board_set_sdcard(t->b, t->card, true), 0);
	img = sim_image_marlin(t->mcu, 0x4000, "2.1.2", "SKR 1.3 Ender", 96 * 1024, &len);
	CHECK_EQ_INT(flash_load(sim_board_flash(t->b), 0x4000, img, len), 0);
	free(img);
	CHECK_EQ_INT(sim_board_power_on(t->b), 0);
	CHECK_EQ_INT(sim_board_wait_mode(t->b, SIM_MODE_MARLIN_LPC, 5000), 0);
	CHECK(sim_board_drive(t->b) != NULL);
	CHECK_STREQ(sim_board_serial(t->b), "1.00000000000");
}

/* the msc backend: a new Marlin build as firmware.bin on the card, then M997 */
static void
test_msc_flash(struct marlin_test *t)
{
	struct worker_plan plan;
	struct worker_report rep;
	char *back = xasprintf("%s/back.bin", tmpdir), *out = NULL;
	uint8_t *got = NULL;
	size_t glen = 0;

	t->img = sim_image_marlin(t->mcu, 0x4000, "2.1.2.1", "SKR 1.3 Ender", 200 * 1024, &t->len);
	t->bin = write_image("marlin-new.bin", t->img, t->len);
	plan_for(t->b, t->bin, &plan);
	CHECK_EQ_INT(worker_execute(&plan, NULL, &rep), 0);
	if (!rep.ok)
		fprintf(stderr, "worker: %s: %s\n", rep.step, rep.error);
	CHECK_STREQ(rep.version, "Marlin 2.1.2");
	CHECK_EQ_INT(sim_board_wait_mode(t->b, SIM_MODE_OFF, 5000), 0);
	CHECK_EQ_INT(sim_board_wait_mode(t->b, SIM_MODE_MARLIN_LPC, 10000), 0);
	/* the stock bootloader (sdboot.c) took it: flash, FIRMWARE.CUR, the new build's M115 */
	CHECK(flash_equals(sim_board_flash(t->b), 0x4000, t->img, t->len));
	CHECK_EQ_INT(sim_run_args(t->s, 20000, &out, "mdir", "-i", t->at, "::/", NULL), 0);
	CHECK(out && strstr(out, "FIRMWARE CUR    204800") != NULL && !strcasestr(out, " bin "));
	free(out);
	CHECK_EQ_INT(sim_run_args(t->s, 20000, &out, "mcopy", "-n", "-i", t->at, "::/FIRMWARE.CUR",
				  back, NULL),
		     0);
	free(out);
	CHECK_EQ_INT(read_file(back, 1u << 20, &got, &glen), 0);
	CHECK(glen == t->len && got && memcmp(got, t->img, t->len) == 0);
	free(got);
	free(back);
}

/* msc-check and identify against what the board runs now */
static void
test_msc_check(struct marlin_test *t)
{
	struct worker_plan plan;
	struct worker_report rep;
	size_t olen;
	uint8_t *other;
	char *obin;

	plan_for(t->b, t->bin, &plan);
	(void)str_copy(plan.action, sizeof(plan.action), "msc-check");
	CHECK_EQ_INT(worker_execute(&plan, NULL, &rep), 0);
	if (!rep.ok)
		fprintf(stderr, "msc-check: %s\n", rep.error);
	CHECK(sim_board_marlin_card_held(t->b)); /* given back with M21 */
	(void)str_copy(plan.action, sizeof(plan.action), "identify");
	CHECK_EQ_INT(worker_execute(&plan, NULL, &rep), 0);
	CHECK_STREQ(rep.version, "Marlin 2.1.2.1");
	CHECK_STREQ(rep.machine, "SKR 1.3 Ender");
	/* a check against an image that is not what the board runs: the old build is named */
	other = sim_image_marlin(t->mcu, 0x4000, "2.1.3", "SKR 1.3 Ender", 8192, &olen);
	obin = write_image("marlin-other.bin", other, olen);
	plan_for(t->b, obin, &plan);
	(void)str_copy(plan.action, sizeof(plan.action), "msc-check");
	CHECK(worker_execute(&plan, NULL, &rep) == -ENOEXEC);
	CHECK(strstr(rep.error, "reports Marlin 2.1.2.1") &&
	      strstr(rep.error, "the image is Marlin 2.1.3"));
	free(other);
	free(obin);
}

/* an SD print, and an M22 that keeps the card: refused clearly, nothing written */
static void
test_msc_refused(struct marlin_test *t)
{
	struct worker_plan plan;
	struct worker_report rep;

	/* an SD print: refused before M22, the card untouched */
	CHECK_EQ_INT(sim_board_set_marlin(t->b, SIM_MARLIN_PRINTING), 0);
	plan_for(t->b, t->bin, &plan);
	CHECK(worker_execute(&plan, NULL, &rep) == -EBUSY);
	CHECK_STREQ(rep.step, "open");
	CHECK(strstr(rep.error, "is printing from its SD card (byte 123456 of 4567890)") != NULL);
	CHECK(sim_board_marlin_card_held(t->b));
	CHECK_EQ_INT(sim_board_mode(t->b), SIM_MODE_MARLIN_LPC);
	/* an M22 that keeps the card: the drive never shows a medium, nothing written */
	CHECK_EQ_INT(sim_board_set_marlin(t->b, SIM_MARLIN_M22_IGNORED), 0);
	plan_for(t->b, t->bin, &plan);
	CHECK(worker_execute(&plan, NULL, &rep) == -ENOMEDIUM);
	CHECK(strstr(rep.error, "kept its SD card after M22") != NULL);
	CHECK_EQ_INT(sim_board_mode(t->b), SIM_MODE_MARLIN_LPC);
}

int
main(int argc, char **argv)
{
	struct sim_board_spec spec = {.model = "skr-1.3", .port = "12-1", .mode = SIM_MODE_OFF};
	struct marlin_test t = {.s = NULL};
	char *cmd;

	sim_init(argc, argv);
	sim_run_ignore_leaks();
	if (!mkdtemp(tmpdir))
		return 1;
	t.s = sim_new();
	t.b = sim_board_add(t.s, &spec);
	CHECK(t.b != NULL);
	if (!t.b)
		return 1;
	boot_marlin(&t);
	gcode_dialogue(t.b);
	test_msc_flash(&t);
	test_msc_check(&t);
	CHECK_EQ_INT(fsck_card(t.s, t.card), 0);
	test_msc_refused(&t);
	CHECK_EQ_INT(fsck_card(t.s, t.card), 0);

	free(t.img);
	free(t.bin);
	free(t.at);
	free(t.card);
	sim_free(t.s);
	cmd = xasprintf("rm -rf %s", tmpdir);
	(void)!system(cmd);
	free(cmd);
	TEST_DONE();
}
