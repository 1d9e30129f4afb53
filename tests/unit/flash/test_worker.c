/* SPDX-License-Identifier: GPL-2.0-or-later */
/* worker: the plan's JSON round trip, malformed plans, the result line, the backend registry,
 * failures that must happen before any device is touched, and the result's "gone" for a
 * device that leaves under the worker. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "flash/backend.h"
#include "harness.h"
#include "util.h"
#include "flash/worker.h"

static void
test_round_trip(void)
{
	struct worker_plan p, q;
	const char *err = NULL;
	char *json = NULL;

	memset(&p, 0, sizeof(p));
	strcpy(p.action, "flash");
	strcpy(p.method, "katapult");
	strcpy(p.board, "octopus-f446");
	strcpy(p.image_path, "/var/lib/skrflash/store/ab/abcdef.bin");
	p.app_start = 0x08008000;
	p.interface = CONFIG_INTERFACE_CAN;
	p.window = 8;
	p.timeout_ms = 1500;
	(void)DEVICE_SET(&p.dev, syspath, "/sys/devices/pci0000:00/usb1/1-1.2");
	(void)DEVICE_SET(&p.dev, port, "1-1.2");
	(void)DEVICE_SET(&p.dev, id_path, "pci-0000:00:14.0-usb-0:1.2");
	p.dev.vid = 0x1d50;
	p.dev.pid = 0x6177;
	p.dev.mode = DEVICE_MODE_KATAPULT;
	(void)DEVICE_SET(&p.dev, serial, "4D003C000B50345033313820");
	(void)DEVICE_SET(&p.dev, manufacturer, "katapult");
	(void)DEVICE_SET(&p.dev, product, "stm32f446xx");
	(void)DEVICE_SET(&p.dev, usb_node, "/dev/bus/usb/001/007");
	(void)DEVICE_SET(&p.dev, tty, "/dev/ttyACM0");
	(void)DEVICE_SET(&p.dev, by_id, "/dev/serial/by-id/usb-katapult_stm32f446xx_4D-if00");
	p.dev.busnum = 1;
	p.dev.devnum = 7;

	CHECK_EQ_INT(worker_plan_to_json(&p, &json), 0);
	CHECK(json && strstr(json, "\"app_start\":\"0x08008000\"") != NULL);
	CHECK(json && strstr(json, "\"mode\":\"katapult\"") != NULL);
	CHECK(json && strstr(json, "\"interface\":\"can\"") != NULL);
	memset(&q, 0x5a, sizeof(q));
	CHECK_EQ_INT(worker_plan_from_json(json, &q, &err), 0);
	CHECK_STREQ(q.action, "flash");
	CHECK_STREQ(q.method, "katapult");
	CHECK_STREQ(q.board, "octopus-f446");
	CHECK_STREQ(q.image_path, p.image_path);
	CHECK_EQ_INT(q.app_start, 0x08008000);
	CHECK_EQ_INT(q.interface, CONFIG_INTERFACE_CAN);
	CHECK_EQ_INT(q.window, 8);
	CHECK_EQ_INT(q.timeout_ms, 1500);
	CHECK_STREQ(q.dev.syspath, p.dev.syspath);
	CHECK_STREQ(q.dev.port, "1-1.2");
	CHECK_STREQ(q.dev.id_path, p.dev.id_path);
	CHECK_EQ_INT(q.dev.vid, 0x1d50);
	CHECK_EQ_INT(q.dev.pid, 0x6177);
	CHECK_EQ_INT(q.dev.mode, DEVICE_MODE_KATAPULT);
	CHECK_STREQ(q.dev.serial, p.dev.serial);
	CHECK_STREQ(q.dev.manufacturer, "katapult");
	CHECK_STREQ(q.dev.product, "stm32f446xx");
	CHECK_STREQ(q.dev.usb_node, "/dev/bus/usb/001/007");
	CHECK_STREQ(q.dev.tty, "/dev/ttyACM0");
	CHECK_STREQ(q.dev.by_id, p.dev.by_id);
	CHECK_STREQ(q.dev.block, "");
	CHECK_EQ_INT(q.dev.busnum, 1);
	CHECK_EQ_INT(q.dev.devnum, 7);
	/* the whole struct survives (all padding aside): re-encoding gives the same text */
	{
		char *again = NULL;

		CHECK_EQ_INT(worker_plan_to_json(&q, &again), 0);
		CHECK_STREQ(again, json);
		free(again);
	}
	free(json);
}

static void
test_malformed(void)
{
	static const char *const bad[] = {
	    "",
	    "[]",
	    "{\"action\":\"dance\",\"device\":{}}",
	    "{\"action\":\"flash\",\"device\":{}}",   /* no image */
	    "{\"action\":\"confirm\",\"device\":{}}", /* no image either */
	    "{\"action\":\"enter\"}",		      /* no device */
	    "{\"action\":\"enter\",\"device\":{\"mode\":\"warp\"}}",
	    "{\"action\":\"enter\",\"device\":{\"vid\":70000}}",
	    "{\"action\":\"enter\",\"device\":{\"vid\":-1}}",
	    "{\"action\":\"enter\",\"device\":{\"tty\":5}}",
	    "{\"action\":\"enter\",\"device\":{},\"app_start\":\"0xzz\"}",
	    "{\"action\":\"enter\",\"device\":{},\"interface\":\"spi\"}",
	    "{\"action\":\"enter\",\"device\":{},\"window\":100000}",
	    "{\"action\":\"enter\",\"device\":{},\"board\":"
	    "\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
	    "xxxxxxxxxxxxxxxxxxxxxxxxxxxx\"}",
	};
	struct worker_plan q;

	for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
		const char *err = NULL;

		memset(&q, 0x5a, sizeof(q));
		CHECK_EQ_INT(worker_plan_from_json(bad[i], &q, &err), -EINVAL);
		CHECK(err != NULL);
		CHECK_EQ_INT((unsigned char)q.action[0], 0x5a); /* untouched */
	}
	CHECK_EQ_INT(worker_plan_from_json("{\"action\":\"enter\",\"device\":{\"tty\":\"/dev/x\"}}",
					   &q, NULL),
		     0);
	CHECK_STREQ(q.dev.tty, "/dev/x");
	CHECK_EQ_INT(q.interface, CONFIG_INTERFACE_USB);
	CHECK_EQ_INT(worker_plan_from_json("{\"action\":\"confirm\",\"method\":\"sd\",\"device\":"
					   "{},\"image\":\"/x.bin\"}",
					   &q, NULL),
		     0);
	CHECK_STREQ(q.action, "confirm");
	CHECK_STREQ(q.method, "sd");
}

static void
test_registry(void)
{
	CHECK(backend_find("katapult") != NULL);
	CHECK(backend_find("dfu") != NULL);
	CHECK(backend_find(NULL) == NULL);
	CHECK(backend_for_mode(DEVICE_MODE_KATAPULT) == backend_find("katapult"));
	CHECK(backend_for_mode(DEVICE_MODE_STM32_ROM_DFU) == backend_find("dfu"));
	/* the SD path works while the app runs: found by name, never by the app's mode */
	CHECK(backend_find("sd") != NULL && backend_find("sd")->app_mode &&
	      backend_find("sd")->check != NULL);
	CHECK(!backend_find("katapult")->app_mode && !backend_find("katapult")->check);
	CHECK(backend_for_mode(DEVICE_MODE_KLIPPER_APP) == NULL);
	CHECK(worker_method_for_mode(DEVICE_MODE_KLIPPER_APP) == NULL);
}

/* failures before any device I/O, and their result lines */
static void
test_early_failures(void)
{
	struct worker_plan p;
	struct worker_report r;
	char *line;
	int fds[2];
	char buf[4096];
	ssize_t n;

	memset(&p, 0, sizeof(p));
	strcpy(p.action, "flash");
	strcpy(p.image_path, "/nonexistent/skrflash/image.bin");
	p.dev.mode = DEVICE_MODE_KATAPULT;
	strcpy(p.board, "no-such-board");
	CHECK(worker_execute(&p, NULL, &r) < 0);
	CHECK(!r.ok);
	CHECK_STREQ(r.step, "check");
	CHECK(strstr(r.error, "no-such-board") != NULL);

	p.board[0] = '\0';
	CHECK_EQ_INT(worker_execute(&p, NULL, &r), -ENOENT);
	CHECK_STREQ(r.step, "check");
	CHECK(strstr(r.error, "/nonexistent/skrflash/image.bin") != NULL);

	p.dev.mode = DEVICE_MODE_MARLIN_STM32;
	CHECK(worker_execute(&p, NULL, &r) < 0);
	CHECK_STREQ(r.step, "open");
	CHECK(strstr(r.error, "no flash backend") != NULL);

	memset(&p, 0, sizeof(p));
	strcpy(p.action, "enter");
	CHECK_EQ_INT(worker_execute(&p, NULL, &r), -ENXIO); /* not "gone": it never had one */
	CHECK_STREQ(r.step, "enter");

	line = worker_report_to_json(&r);
	CHECK(strstr(line, "{\"type\":\"result\",\"ok\":false,\"step\":\"enter\",\"error\":") ==
	      line);
	free(line);

	/* worker_run writes exactly one result line */
	CHECK_EQ_INT(pipe(fds), 0);
	CHECK(worker_run(&p, fds[1]) < 0);
	close(fds[1]);
	n = read(fds[0], buf, sizeof(buf) - 1);
	close(fds[0]);
	buf[n > 0 ? n : 0] = '\0';
	CHECK(strncmp(buf, "{\"type\":\"result\",\"ok\":false", 27) == 0);
	CHECK(n > 0 && buf[n - 1] == '\n' && strchr(buf, '\n') == buf + n - 1);
}

/* worker_run's one result line on a pipe, into buf. */
static void
result_line(const struct worker_plan *p, char *buf, size_t size)
{
	int fds[2];
	ssize_t n;

	buf[0] = '\0';
	CHECK_EQ_INT(pipe(fds), 0);
	CHECK(worker_run(p, fds[1]) < 0);
	close(fds[1]);
	n = read(fds[0], buf, size - 1);
	close(fds[0]);
	buf[n > 0 ? n : 0] = '\0';
}

/* A Katapult board that leaves the bus as soon as it is spoken to: a pty whose master (the
 * board's side) a child closes after the first bytes of CONNECT. The worker's tty hangs up,
 * the backend says -ENODEV, and the result line says "gone". Any other failure does not. */
static void
test_gone(void)
{
	char dir[] = "/tmp/skrflash-test-worker-XXXXXX", image[64], tty[64], line[4096];
	static const uint8_t bin[256];
	struct worker_plan p;
	struct worker_report r;
	int master, status = -1;
	pid_t pid;

	CHECK(mkdtemp(dir) != NULL);
	snprintf(image, sizeof(image), "%s/klipper.bin", dir);
	CHECK_EQ_INT(write_file_atomic(image, bin, sizeof(bin), 0644), 0);
	master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
	CHECK(master >= 0);
	CHECK(grantpt(master) == 0 && unlockpt(master) == 0);
	CHECK_EQ_INT(ptsname_r(master, tty, sizeof(tty)), 0);
	pid = fork();
	if (pid == 0) {
		uint8_t buf[64];

		(void)read(master, buf, sizeof(buf)); /* CONNECT arrives: the cable goes */
		_exit(0);
	}
	CHECK(pid > 0);
	close(master);

	memset(&p, 0, sizeof(p));
	strcpy(p.action, "flash");
	strcpy(p.method, "katapult");
	strcpy(p.board, "octopus-f446");
	(void)str_copy(p.image_path, sizeof(p.image_path), image);
	(void)DEVICE_SET(&p.dev, port, "1-1.2");
	(void)DEVICE_SET(&p.dev, tty, tty);
	p.dev.mode = DEVICE_MODE_KATAPULT;
	p.timeout_ms = 5000; /* a pty that did not hang up fails by this instead */
	result_line(&p, line, sizeof(line));
	CHECK(waitpid(pid, &status, 0) == pid && WIFEXITED(status));
	fprintf(stderr, "device gone: %s", line);
	CHECK(strstr(line, "\"ok\":false,\"step\":\"open\"") != NULL);
	CHECK(strstr(line, "\"gone\":true") != NULL);

	/* ordinary failures: an unknown board, a board without a tty to touch */
	strcpy(p.board, "no-such-board");
	result_line(&p, line, sizeof(line));
	CHECK(strstr(line, "\"ok\":false,\"step\":\"check\"") != NULL);
	CHECK(strstr(line, "gone") == NULL);
	memset(&p, 0, sizeof(p));
	strcpy(p.action, "enter");
	result_line(&p, line, sizeof(line));
	CHECK(strstr(line, "\"ok\":false,\"step\":\"enter\"") != NULL);
	CHECK(strstr(line, "gone") == NULL);

	/* the key follows the recorded errno, and only on a failure */
	memset(&r, 0, sizeof(r));
	r.err = -ENODEV;
	{
		char *json = worker_report_to_json(&r);

		CHECK(strstr(json, "\"gone\":true") != NULL);
		free(json);
		r.ok = true;
		json = worker_report_to_json(&r);
		CHECK(strstr(json, "gone") == NULL);
		free(json);
	}
	CHECK_EQ_INT(unlink(image), 0);
	CHECK_EQ_INT(rmdir(dir), 0);
}

/* The rescue plan (flash/rescue.c runs it): round trip, malformed plans, and the worker's
 * refusals before the UART is opened. */
static void
test_rescue_plan(void)
{
	struct worker_rescue_plan p = {0}, q;
	const char *err = NULL;
	char *json = NULL;

	strcpy(p.action, "restore");
	strcpy(p.board, "skr-1.4-turbo");
	strcpy(p.tty, "/dev/ttyAMA0");
	p.baud = 57600;
	p.crystal_khz = 12000;
	strcpy(p.reset_line, "GPIO27");
	strcpy(p.image_path, "/var/lib/skrflash/firmware/ab");
	strcpy(p.old_path, "/var/lib/skrflash/firmware/ab.old-1");
	p.sync_tries = 8;
	p.no_parity_ok = true;
	CHECK_EQ_INT(worker_rescue_plan_to_json(&p, &json), 0);
	CHECK_EQ_INT(worker_rescue_plan_from_json(json, &q, &err), 0);
	CHECK(memcmp(&p, &q, sizeof(p)) == 0);
	free(json);
	CHECK_EQ_INT(worker_rescue_plan_from_json("{\"action\":\"flash\",\"board\":\"x\","
						  "\"tty\":\"t\",\"image\":\"i\"}",
						  &q, &err),
		     -EINVAL);
	CHECK(err && strstr(err, "rescue"));
	CHECK_EQ_INT(worker_rescue_plan_from_json("{\"action\":\"rescue\",\"board\":\"x\","
						  "\"image\":\"i\"}",
						  &q, &err),
		     -EINVAL); /* no tty */
	CHECK_EQ_INT(worker_rescue_plan_from_json("{\"action\":\"rescue\",\"board\":\"x\","
						  "\"tty\":\"t\",\"image\":\"i\",\"baud\":-1}",
						  &q, &err),
		     -EINVAL);
}

int
main(void)
{
	test_rescue_plan();
	test_round_trip();
	test_malformed();
	test_registry();
	test_early_failures();
	test_gone();
	TEST_DONE();
}
