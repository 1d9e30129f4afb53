/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Simulator self-test: the 1200-baud touch in its three outcomes (Katapult, ROM DFU, back to
 * the app), the boot model (boot loops, never-back, boot loops that end in a bootloader, an
 * application that crashes at start-up), and processes run in the testbed. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>

#include "flash.h"
#include "harness.h"
#include "sim.h"

/* flash_usb.py / flashtool.py enter_bootloader (§2.1), errors ignored like they do */
static void
touch(const char *tty, speed_t speed)
{
	int fd = open(tty, O_RDWR | O_NOCTTY | O_NONBLOCK);
	int dtr = TIOCM_DTR;
	struct termios t;

	CHECK(fd >= 0);
	if (fd < 0)
		return;
	CHECK_EQ_INT(ioctl(fd, TIOCMBIS, &dtr), 0);
	if (tcgetattr(fd, &t) == 0) {
		cfsetispeed(&t, speed);
		cfsetospeed(&t, speed);
		(void)tcsetattr(fd, TCSANOW, &t);
	}
	CHECK_EQ_INT(ioctl(fd, TIOCMBIC, &dtr), 0);
	close(fd);
}

static void
test_touch(struct sim *s)
{
	struct sim_board_spec kat = {.model = "octopus-f446",
				     .port = "1-1",
				     .bootloader = SIM_BL_KATAPULT,
				     .mode = SIM_MODE_KLIPPER_APP};
	struct sim_board_spec rom = {
	    .model = "skr-3-h743", .port = "1-2", .mode = SIM_MODE_KLIPPER_APP};
	struct sim_board_spec none = {
	    .model = "skr-mini-e3-v2-f103re", .port = "1-3", .mode = SIM_MODE_KLIPPER_APP};
	struct sim_board *a = sim_board_add(s, &kat);
	struct sim_board *b = sim_board_add(s, &rom);
	struct sim_board *c = sim_board_add(s, &none);
	char serial[64];
	unsigned n;

	CHECK(a && b && c);
	if (!a || !b || !c)
		return;
	/* Katapult installed: same serial, new VID:PID */
	snprintf(serial, sizeof(serial), "%s", sim_board_serial(a));
	touch(sim_board_by_id(a), B1200);
	CHECK_EQ_INT(sim_board_wait_mode(a, SIM_MODE_KATAPULT, 3000), 0);
	CHECK_STREQ(sim_board_serial(a), serial);
	CHECK_EQ_INT(sim_board_enumerations(a), 2);
	/* Katapult ignores the touch (§2.1); a COMPLETE-less reset returns to the valid app */
	touch(sim_board_tty(a), B1200);
	CHECK_EQ_INT(sim_board_reset(a), 0);
	CHECK_EQ_INT(sim_board_wait_mode(a, SIM_MODE_KLIPPER_APP, 3000), 0);
	CHECK_EQ_INT(sim_board_enumerations(a), 3);

	/* stock H7: Klipper's dfu_reboot -> ROM DFU with a different serial */
	snprintf(serial, sizeof(serial), "%s", sim_board_serial(b));
	touch(sim_board_tty(b), B1200);
	CHECK_EQ_INT(sim_board_wait_mode(b, SIM_MODE_ROM_DFU, 3000), 0);
	CHECK(strcmp(sim_board_serial(b), serial) != 0);
	CHECK(sim_board_tty(b) == NULL);
	CHECK(access(sim_board_devnode(b), F_OK) == 0);
	CHECK_EQ_INT(sim_board_reset(b), 0);
	CHECK_EQ_INT(sim_board_wait_mode(b, SIM_MODE_KLIPPER_APP, 3000), 0);

	/* F103 with its 28 KiB SD bootloader: the request does nothing, the app comes back */
	touch(sim_board_tty(c), B115200); /* not a touch: nothing happens */
	touch(sim_board_tty(c), B1200);
	CHECK_EQ_INT(sim_board_wait_enumerations(c, 2, 3000), 0);
	CHECK_EQ_INT(sim_board_wait_mode(c, SIM_MODE_KLIPPER_APP, 3000), 0);
	n = sim_board_enumerations(c);
	CHECK_EQ_INT(n, 2);
	sim_board_unplug(a);
	sim_board_unplug(b);
	sim_board_unplug(c);
}

static void
test_bootloop(struct sim *s)
{
	struct sim_board_spec spec = {
	    .model = "manta-m8p", .port = "1-4", .mode = SIM_MODE_OFF, .bootloop_cycles = 4};
	struct sim_board *b = sim_board_add(s, &spec);
	struct flash *f;
	size_t len;
	uint8_t *img;

	CHECK(b != NULL);
	if (!b)
		return;
	f = sim_board_flash(b);
	/* an image linked for 0x08000000 written at the 8 KiB offset: boot loop (§7.4) */
	img = sim_image_klipper(sim_board_model(b)->mcu, 0x08000000, "v-wrong-offset", 4096, &len);
	CHECK_EQ_INT(flash_erase(f, 0x08002000, NULL), 0);
	CHECK_EQ_INT(flash_erase(f, 0x08002800, NULL), 0);
	CHECK_EQ_INT(flash_program(f, 0x08002000, img, len, NULL), 0);
	CHECK(!flash_app_valid(f, 0x08002000));
	CHECK_EQ_INT(sim_board_reset(b), 0);
	/* flickers as klipper-app 4 times, then stays away */
	CHECK_EQ_INT(sim_board_wait_enumerations(b, 4, 5000), 0);
	CHECK_EQ_INT(sim_board_wait_mode(b, SIM_MODE_OFF, 3000), 0);
	CHECK_EQ_INT(sim_board_enumerations(b), 4);
	free(img);

	/* silent variant: the same image never shows up on USB */
	{
		struct sim_board_spec s2 = {.model = "manta-m8p",
					    .port = "1-5",
					    .mode = SIM_MODE_KLIPPER_APP,
					    .bootloop = SIM_BOOTLOOP_SILENT};
		struct sim_board *c = sim_board_add(s, &s2);
		struct sim_fault fault = {.kind = SIM_FAULT_NEVER_BACK};

		CHECK(c != NULL);
		if (!c)
			return;
		CHECK_EQ_INT(flash_erase(sim_board_flash(c), 0x08002000, NULL), 0);
		CHECK_EQ_INT(flash_erase(sim_board_flash(c), 0x08002800, NULL), 0);
		CHECK_EQ_INT(sim_board_reset(c), 0);
		CHECK_EQ_INT(sim_board_wait_mode(c, SIM_MODE_OFF, 3000), 0);
		/* valid app again, but the board never comes back from the next reset */
		img = sim_image_klipper(sim_board_model(c)->mcu, 0x08002000, "v1", 4096, &len);
		CHECK_EQ_INT(flash_program(sim_board_flash(c), 0x08002000, img, len, NULL), 0);
		free(img);
		sim_board_set_fault(c, &fault);
		CHECK_EQ_INT(sim_board_reset(c), 0);
		CHECK_EQ_INT(sim_board_wait_mode(c, SIM_MODE_KLIPPER_APP, 300), -ETIMEDOUT);
		CHECK_EQ_INT(sim_board_enumerations(c), 1);
		/* power cycle by hand: back with the new version */
		CHECK_EQ_INT(sim_board_reset(c), 0);
		CHECK_EQ_INT(sim_board_wait_mode(c, SIM_MODE_KLIPPER_APP, 3000), 0);
		CHECK_STREQ(sim_board_app_version(c), "v1");
		sim_board_unplug(c);
	}
	sim_board_unplug(b);
}

/* Makes the application area of b invalid without erasing it: a first word that is neither
 * 0 nor erased, so the stock bootloaders and Katapult jump into it (protocols.md §7.4). */
static void
break_app(struct sim_board *b)
{
	struct flash *f = sim_board_flash(b);
	uint32_t start = sim_board_app_start(b);
	uint8_t junk[8] = {0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00};

	CHECK_EQ_INT(flash_erase(f, start, NULL), 0);
	CHECK_EQ_INT(flash_program(f, start, junk, sizeof(junk), NULL), 0);
	CHECK(!flash_app_valid(f, start));
}

/* SIM_BOOTLOOP_RECOVER: after the flickers the board stays in the bootloader it has */
static void
test_bootloop_recover(struct sim *s)
{
	struct sim_board_spec kat = {.model = "octopus-f446",
				     .port = "5-1",
				     .bootloader = SIM_BL_KATAPULT,
				     .mode = SIM_MODE_KLIPPER_APP,
				     .bootloop = SIM_BOOTLOOP_RECOVER,
				     .bootloop_cycles = 2};
	struct sim_board_spec h7 = {.model = "skr-3-h723",
				    .port = "5-2",
				    .mode = SIM_MODE_KLIPPER_APP,
				    .bootloop = SIM_BOOTLOOP_RECOVER};
	struct sim_board_spec lpc = {.model = "skr-1.4-turbo",
				     .port = "5-3",
				     .mode = SIM_MODE_KLIPPER_APP,
				     .bootloop = SIM_BOOTLOOP_RECOVER};
	struct sim_board_spec f1 = {.model = "skr-mini-e3-v2-f103re",
				    .port = "5-4",
				    .mode = SIM_MODE_KLIPPER_APP,
				    .bootloop = SIM_BOOTLOOP_RECOVER,
				    .bootloop_cycles = 2};
	struct sim_fault crash = {.kind = SIM_FAULT_BOOT_FAIL};
	struct sim_board *a = sim_board_add(s, &kat), *b = sim_board_add(s, &h7);
	struct sim_board *c = sim_board_add(s, &lpc), *d = sim_board_add(s, &f1);

	CHECK(a && b && c && d);
	if (!a || !b || !c || !d)
		return;

	/* a valid image that crashes at start-up: 2 flickers, then Katapult's double-reset entry */
	CHECK_EQ_INT(sim_board_set_fault(a, &crash), 0);
	CHECK_EQ_INT(sim_board_reset(a), 0);
	CHECK_EQ_INT(sim_board_wait_mode(a, SIM_MODE_KATAPULT, 5000), 0);
	CHECK_EQ_INT(sim_board_enumerations(a), 1 + 2 + 1);
	CHECK(flash_app_valid(sim_board_flash(a), sim_board_app_start(a)));
	/* the fault is used up: the next start-up of the same image works */
	CHECK_EQ_INT(sim_board_reset(a), 0);
	CHECK_EQ_INT(sim_board_wait_mode(a, SIM_MODE_KLIPPER_APP, 3000), 0);
	CHECK_STREQ(sim_board_app_version(a), "v0.12.0-sim");
	CHECK_EQ_INT(sim_board_enumerations(a), 5);
	/* a bootloader request boots the bootloader and leaves an armed fault for the app */
	crash.count = 1;
	CHECK_EQ_INT(sim_board_set_fault(a, &crash), 0);
	touch(sim_board_tty(a), B1200);
	CHECK_EQ_INT(sim_board_wait_mode(a, SIM_MODE_KATAPULT, 3000), 0);
	CHECK_EQ_INT(sim_board_enumerations(a), 6);
	CHECK_EQ_INT(sim_board_reset(a), 0);
	CHECK_EQ_INT(sim_board_wait_enumerations(a, 6 + 2 + 1, 5000), 0);
	CHECK_EQ_INT(sim_board_wait_mode(a, SIM_MODE_KATAPULT, 3000), 0);
	CHECK_EQ_INT(sim_board_enumerations(a), 6 + 2 + 1);

	/* stock STM32 with a ROM DFU path: an invalid image ends in ROM DFU (BOOT0) */
	break_app(b);
	CHECK_EQ_INT(sim_board_reset(b), 0);
	CHECK_EQ_INT(sim_board_wait_mode(b, SIM_MODE_ROM_DFU, 5000), 0);
	CHECK_EQ_INT(sim_board_enumerations(b), 1 + 3 + 1);
	CHECK(sim_board_devnode(b) != NULL);

	/* LPC176x: the watchdog reset sets WDTOF, the smoothie-style bootloader enters DFU */
	break_app(c);
	CHECK_EQ_INT(sim_board_reset(c), 0);
	CHECK_EQ_INT(sim_board_wait_mode(c, SIM_MODE_LPC_DFU, 5000), 0);
	CHECK_EQ_INT(sim_board_enumerations(c), 1 + 3 + 1);

	/* F103 with an SD-only bootloader: nowhere to recover to, it goes silent */
	break_app(d);
	CHECK_EQ_INT(sim_board_reset(d), 0);
	CHECK_EQ_INT(sim_board_wait_enumerations(d, 1 + 2, 5000), 0);
	CHECK_EQ_INT(sim_board_wait_mode(d, SIM_MODE_OFF, 3000), 0);
	CHECK_EQ_INT(sim_board_wait_mode(d, SIM_MODE_KLIPPER_APP, 300), -ETIMEDOUT);
	CHECK_EQ_INT(sim_board_enumerations(d), 1 + 2);

	sim_board_unplug(a);
	sim_board_unplug(b);
	sim_board_unplug(c);
	sim_board_unplug(d);
}

static void
test_proc(struct sim *s)
{
	char sh[] = "sh", dash_c[] = "-c";
	char script[] = "echo hello; ls /dev/serial/by-id/; test -n \"$NOTIFY_SOCKET\"";
	char wait_script[] = "echo started; exec sleep 30";
	char *argv[] = {sh, dash_c, script, NULL};
	char *wait_argv[] = {sh, dash_c, wait_script, NULL};
	struct sim_board_spec spec = {
	    .model = "skr-pico", .port = "3-1", .mode = SIM_MODE_KLIPPER_APP};
	struct sim_board *b = sim_board_add(s, &spec);
	struct sim_proc *p;
	char *out = NULL;

	CHECK(b != NULL);
	/* a child sees the testbed's /dev, and gets a NOTIFY_SOCKET */
	CHECK_EQ_INT(sim_run(s, argv, 5000, &out), 0);
	CHECK(out && strstr(out, "hello"));
	CHECK(out && strstr(out, "usb-Klipper_rp2040_"));
	free(out);
	p = sim_proc_spawn(s, wait_argv, NULL);
	CHECK_EQ_INT(sim_proc_wait_output(p, "started", 5000), 0);
	CHECK_EQ_INT(sim_proc_wait_ready(p, 100), -ETIMEDOUT);
	CHECK_EQ_INT(sim_proc_kill(p, 9), 0);
	CHECK_EQ_INT(sim_proc_wait_exit(p, 5000), 128 + 9);
	sim_proc_free(p);
	/* RP2040: the touch goes to BOOTSEL */
	if (b) {
		touch(sim_board_tty(b), B1200);
		CHECK_EQ_INT(sim_board_wait_mode(b, SIM_MODE_BOOTSEL, 3000), 0);
		CHECK_STREQ(sim_board_serial(b), "E0C9125B0D9B");
		sim_board_unplug(b);
	}
}

/* ROM DFU through the real dfu-util: DfuSe download at the app offset, leave, app boots */
static void
test_rom_dfu_leave(struct sim *s)
{
	struct sim_board_spec spec = {
	    .model = "octopus-f446", .port = "4-2", .mode = SIM_MODE_ROM_DFU};
	struct sim_board *b = sim_board_add(s, &spec);
	char path[] = "/tmp/skrsim-dfu-XXXXXX";
	char dfu_util[] = "dfu-util", a[] = "-a", a0[] = "0", d[] = "-d", id[] = "0483:df11";
	char sopt[] = "-s", addr[] = "0x08008000:leave", dopt[] = "-D";
	char *argv[] = {dfu_util, a, a0, d, id, sopt, addr, dopt, path, NULL};
	uint8_t *img;
	size_t len;
	int fd, r;

	CHECK(b != NULL);
	if (!b)
		return;
	if (access("/usr/bin/dfu-util", X_OK) != 0) {
		fprintf(stderr, "dfu-util not installed: ROM DFU leave not tested\n");
		sim_board_unplug(b);
		return;
	}
	img = sim_image_klipper(sim_board_model(b)->mcu, 0x08008000, "v0.13.0-dfu", 8192, &len);
	fd = mkstemp(path);
	CHECK(fd >= 0);
	CHECK_EQ_INT(write(fd, img, len), (long long)len);
	close(fd);
	{
		/* under make asan, libasan is preloaded into every child: dfu-util is not ours */
		char no_leaks[] = "ASAN_OPTIONS=detect_leaks=0";
		char *env[] = {no_leaks, NULL};
		struct sim_proc *p = sim_proc_spawn(s, argv, env);

		r = sim_proc_wait_exit(p, 20000);
		sim_proc_free(p);
	}
	/* dfu-util may report the expected get_status error after :leave (§3) */
	CHECK(r == 0 || r == 74);
	CHECK_EQ_INT(sim_board_wait_mode(b, SIM_MODE_KLIPPER_APP, 5000), 0);
	CHECK_STREQ(sim_board_app_version(b), "v0.13.0-dfu");
	CHECK_STREQ(sim_board_serial(b), sim_board_uid(b));
	unlink(path);
	free(img);
	sim_board_unplug(b);
}

/* A notify client gets a private NOTIFY_SOCKET; READY=1 and STATUS= arrive. */
static void
test_notify(struct sim *s)
{
	char sh[] = "sh", c[] = "-c";
	char script[] = "systemd-notify --status='2 boards' --ready; exec sleep 30";
	char *argv[] = {sh, c, script, NULL};
	struct sim_proc *p;

	if (access("/usr/bin/systemd-notify", X_OK) != 0 &&
	    access("/bin/systemd-notify", X_OK) != 0) {
		fprintf(stderr, "systemd-notify not installed: notify not tested\n");
		return;
	}
	p = sim_proc_spawn(s, argv, NULL);
	CHECK_EQ_INT(sim_proc_wait_ready(p, 5000), 0);
	CHECK_STREQ(sim_proc_status(p), "2 boards");
	CHECK_EQ_INT(sim_proc_wait_notify(p, "STATUS=2 boards", 100), 0);
	CHECK_EQ_INT(sim_proc_kill(p, 15), 0);
	CHECK_EQ_INT(sim_proc_wait_exit(p, 5000), 128 + 15);
	sim_proc_free(p);
}

int
main(int argc, char **argv)
{
	struct sim *s;

	sim_init(argc, argv);
	s = sim_new();
	test_touch(s);
	test_bootloop(s);
	test_bootloop_recover(s);
	test_proc(s);
	test_rom_dfu_leave(s);
	test_notify(s);
	sim_free(s);
	TEST_DONE();
}
