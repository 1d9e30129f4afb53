/* SPDX-License-Identifier: GPL-2.0-or-later */
/* test_daemon: the unmodified skrflashd on simulated boards - coldplug and hotplug in every
 * mode, identity across re-enumeration on the same port, two identical boards on two ports,
 * leave after the grace period, STATUS=, SIGHUP reload (good and bad), exit 78. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <json-c/json.h>

#include "harness.h"
#include "sim.h"
#include "util.h"

static struct sim *sim;
static char *dir, *sock, *conf, *build;

/* skrflashctl --json CMD [ARG], its output parsed; NULL (and a failed check) otherwise */
static json_object *
ctl_json(const char *cmd, const char *arg)
{
	char *ctl = xasprintf("%s/skrflashctl", build), *out = NULL;
	char **v = strv_new(ctl, "--json", "--socket", sock, "--config", conf, cmd, arg, NULL);
	char **argv = sim_as("member", dir, v); /* an operator */
	json_object *o = NULL;
	int st = sim_run(sim, argv, 10000, &out);

	CHECK_EQ_INT(st, 0);
	if (st == 0 && out)
		o = json_tokener_parse(out);
	if (!o)
		fprintf(stderr, "skrflashctl %s said: %s\n", cmd, out ? out : "(nothing)");
	free(out);
	free(ctl);
	strv_free(argv);
	strv_free(v);
	return o;
}

/* the daemon's command line in this test's directories */
static char **
daemon_args(const char *daemon_path, const char *state, const char *run)
{
	char **v = strv_new(daemon_path, "-c", conf, "--state-dir", state, "--runtime-dir", run,
			    "--log-level", "debug", NULL);
	/* as the packaged unit runs it (sim_as) */
	char **as = sim_as("daemon", dir, v);

	strv_free(v);
	return as;
}

static json_object *
board_on(json_object *boards, const char *port)
{
	for (size_t i = 0; boards && i < json_object_array_length(boards); i++) {
		json_object *b = json_object_array_get_idx(boards, i);

		if (strcmp(json_object_get_string(json_object_object_get(b, "port")), port) == 0)
			return b;
	}
	return NULL;
}

static const char *
field(json_object *b, const char *key)
{
	json_object *v = b ? json_object_object_get(b, key) : NULL;

	return v ? json_object_get_string(v) : "(none)";
}

static size_t
count(const char *hay, const char *needle)
{
	size_t n = 0;

	for (const char *p = hay; (p = strstr(p, needle)); p += strlen(needle))
		n++;
	return n;
}

static void
write_conf(const char *path, const char *extra)
{
	FILE *f = fopen(path, "w");

	CHECK(f != NULL);
	if (!f)
		return;
	fprintf(f,
		"timeouts = { leave_grace = 1.0; };\n"
		"profiles = (\n"
		"  { name = \"octo-a\"; match = { board = \"octopus-f446\"; port = \"1-1\"; }; },\n"
		"  { name = \"octo-b\"; match = { board = \"octopus-f446\"; port = \"1-2\"; }; },\n"
		"  { name = \"skr3\"; match = { board = \"skr-3-h723\"; }; }%s\n"
		");\n",
		extra);
	fclose(f);
	(void)chmod(path, 0644);
}

static struct sim_board *
add(const char *model, const char *port, enum sim_mode mode)
{
	struct sim_board_spec spec = {.model = model, .port = port, .mode = mode};
	struct sim_board *b = sim_board_add(sim, &spec);

	CHECK(b != NULL);
	return b;
}

/* The daemon of a step and the boards the steps share. */
struct run {
	struct sim_proc *d;
	struct sim_board *a, *b2, *h7;
	char *state, *run, *daemon_path;
};

static struct sim_proc *
spawn_daemon(struct run *t)
{
	char **args = daemon_args(t->daemon_path, t->state, t->run);
	struct sim_proc *d = sim_proc_spawn(sim, args, NULL);

	strv_free(args);
	return d;
}

/* coldplug: present before the daemon starts; two identical Octopus boards */
static void
test_coldplug(struct run *t)
{
	json_object *boards, *status;

	t->a = add("octopus-f446", "1-1", SIM_MODE_KLIPPER_APP);
	t->b2 = add("octopus-f446", "1-2", SIM_MODE_KLIPPER_APP);
	t->h7 = add("skr-3-h723", "1-3", SIM_MODE_KLIPPER_APP);
	t->d = spawn_daemon(t);
	CHECK_EQ_INT(sim_proc_wait_ready(t->d, 10000), 0);
	CHECK(strstr(sim_proc_status(t->d), "3 boards present") != NULL);

	status = ctl_json("status", NULL);
	CHECK_EQ_INT(json_object_get_int(json_object_object_get(status, "boards_present")), 3);
	json_object_put(status);

	boards = ctl_json("boards", NULL);
	CHECK_EQ_INT(boards ? json_object_array_length(boards) : 0, 3);
	CHECK_STREQ(field(board_on(boards, "1-1"), "board"), "octopus-f446");
	CHECK_STREQ(field(board_on(boards, "1-1"), "profile"), "octo-a");
	CHECK_STREQ(field(board_on(boards, "1-2"), "profile"), "octo-b");
	CHECK_STREQ(field(board_on(boards, "1-3"), "profile"), "skr3");
	CHECK_STREQ(field(board_on(boards, "1-3"), "mcu"), "stm32h723xx");
	CHECK_STREQ(field(board_on(boards, "1-1"), "mode"), "klipper-app");
	CHECK_STREQ(field(board_on(boards, "1-1"), "serial"), sim_board_uid(t->a));
	CHECK_STREQ(field(board_on(boards, "1-2"), "serial"), sim_board_uid(t->b2));
	CHECK(strcmp(sim_board_uid(t->a), sim_board_uid(t->b2)) != 0);
	CHECK_STREQ(field(board_on(boards, "1-1"), "tty"), sim_board_tty(t->a));
	CHECK(strstr(field(board_on(boards, "1-1"), "by_id"),
		     "/serial/by-id/usb-Klipper_stm32f446xx_") != NULL);
	CHECK_STREQ(field(board_on(boards, "1-1"), "usb_id"), "1d50:614e");
	json_object_put(boards);
}

/* hotplug in every other mode */
static void
test_hotplug(struct run *t)
{
	json_object *boards;

	add("manta-m8p", "1-4", SIM_MODE_KATAPULT);
	add("skr-1.4-turbo", "1-5", SIM_MODE_LPC_DFU);
	add("skr-pico", "1-6", SIM_MODE_BOOTSEL);
	add("skr-1.4", "1-7", SIM_MODE_MARLIN_LPC);
	add("skr-mini-e3-v3", "1-8", SIM_MODE_MARLIN_STM32);
	add("octopus-pro-h723", "1-9", SIM_MODE_ROM_DFU);
	CHECK_EQ_INT(sim_proc_wait_notify(t->d, "9 boards present", 10000), 0);
	boards = ctl_json("boards", NULL);
	CHECK_STREQ(field(board_on(boards, "1-4"), "mode"), "katapult");
	/* stm32g0b1xx: a Manta M8P or an SKR Mini E3 V3 until a profile says which */
	CHECK_STREQ(field(board_on(boards, "1-4"), "board"), "");
	CHECK(strstr(field(board_on(boards, "1-4"), "candidates"), "manta-m8p") != NULL);
	CHECK_STREQ(field(board_on(boards, "1-5"), "mode"), "lpc-dfu");
	CHECK_STREQ(field(board_on(boards, "1-6"), "mode"), "rp2040-bootsel");
	CHECK_STREQ(field(board_on(boards, "1-7"), "mode"), "marlin-lpc");
	CHECK_STREQ(field(board_on(boards, "1-8"), "mode"), "marlin-stm32");
	CHECK_STREQ(field(board_on(boards, "1-9"), "mode"), "stm32-rom-dfu");
	CHECK_STREQ(field(board_on(boards, "1-9"), "usb_id"), "0483:df11");
	json_object_put(boards);
}

/* the same board re-appears in ROM DFU on the same port: identity and profile kept */
static void
test_reenumeration(struct run *t)
{
	json_object *boards;

	CHECK_EQ_INT(sim_board_plug(t->a, SIM_MODE_ROM_DFU), 0);
	CHECK_EQ_INT(sim_proc_wait_output(t->d, "on port 1-1: klipper-app -> stm32-rom-dfu", 10000),
		     0);
	boards = ctl_json("boards", NULL);
	CHECK_STREQ(field(board_on(boards, "1-1"), "mode"), "stm32-rom-dfu");
	CHECK_STREQ(field(board_on(boards, "1-1"), "serial"), sim_board_uid(t->a));
	CHECK(strcmp(field(board_on(boards, "1-1"), "usb_serial"), sim_board_uid(t->a)) != 0);
	CHECK_STREQ(field(board_on(boards, "1-1"), "board"), "octopus-f446");
	CHECK_STREQ(field(board_on(boards, "1-1"), "profile"), "octo-a");
	json_object_put(boards);
	CHECK_EQ_INT(sim_board_plug(t->a, SIM_MODE_KLIPPER_APP), 0);
	CHECK_EQ_INT(sim_proc_wait_output(t->d, "on port 1-1: stm32-rom-dfu -> klipper-app", 10000),
		     0);
	/* and into Katapult */
	CHECK_EQ_INT(sim_board_plug(t->h7, SIM_MODE_KATAPULT), 0);
	CHECK_EQ_INT(sim_proc_wait_output(t->d, "on port 1-3: klipper-app -> katapult", 10000), 0);
}

/* unplug: left once, after the grace period */
static void
test_unplug(struct run *t)
{
	const char *out;

	CHECK_EQ_INT(sim_board_unplug(t->b2), 0);
	CHECK_EQ_INT(sim_proc_wait_output(t->d, "board left: octopus-f446 on port 1-2", 10000), 0);
	CHECK_EQ_INT(sim_proc_wait_notify(t->d, "8 boards present", 10000), 0);

	out = sim_proc_output(t->d);
	/* appear/leave once per real change: no repeats for re-enumeration or bind events */
	CHECK_EQ_INT(count(out, "board appeared: octopus-f446 in klipper-app mode on port 1-1"), 1);
	CHECK_EQ_INT(count(out, "board appeared:"), 9);
	CHECK_EQ_INT(count(out, "board left:"), 1);
	CHECK(
	    strstr(
		out,
		"<5>board appeared: skr-3-h723 in klipper-app mode on port 1-3, profile 'skr3'") !=
	    NULL);
}

/* SIGHUP with a broken file keeps the old snapshot; with a good one, the new profile applies
 * to boards already present */
static void
test_reload(struct run *t)
{
	json_object *boards, *status;
	FILE *f = fopen(conf, "w");

	CHECK(f != NULL);
	if (f) {
		fputs("profiles = ( { name = \"x\"; match = { board = \"no-such\"; }; } );\n", f);
		fclose(f);
	}
	CHECK_EQ_INT(sim_proc_kill(t->d, SIGHUP), 0);
	CHECK_EQ_INT(sim_proc_wait_output(t->d, "configuration not reloaded", 10000), 0);
	CHECK(strstr(sim_proc_output(t->d), "skrflash.conf:1: profiles.[0].match.board") != NULL);
	status = ctl_json("status", NULL);
	CHECK_EQ_INT(json_object_get_int(json_object_object_get(status, "profiles")), 3);
	json_object_put(status);
	write_conf(conf, ",\n  { name = \"manta\"; match = { board = \"manta-m8p\"; }; }");
	CHECK_EQ_INT(sim_proc_kill(t->d, SIGHUP), 0);
	CHECK_EQ_INT(sim_proc_wait_output(t->d, "configuration reloaded", 10000), 0);
	boards = ctl_json("boards", NULL);
	CHECK_STREQ(field(board_on(boards, "1-4"), "profile"), "manta");
	json_object_put(boards);
}

/* SIGTERM: clean exit; then a config that cannot be loaded at start: exit 78 with FILE:LINE */
static void
test_exit(struct run *t)
{
	FILE *f;
	char **args, *o = NULL, *needle;

	CHECK_EQ_INT(sim_proc_kill(t->d, SIGTERM), 0);
	CHECK_EQ_INT(sim_proc_wait_exit(t->d, 10000), 0);
	t->d = sim_proc_free(t->d);

	f = fopen(conf, "w");
	args = daemon_args(t->daemon_path, t->state, t->run);
	CHECK(f != NULL);
	if (f) {
		fputs("max_jobs = 0;\n", f);
		fclose(f);
	}
	CHECK_EQ_INT(sim_run(sim, args, 10000, &o), 78);
	needle = xasprintf("%s:1: max_jobs", conf);
	CHECK(o && strstr(o, needle));
	free(needle);
	free(o);
	strv_free(args);
}

/* identities survive a restart: the database remembers the boards */
static void
test_restart(struct run *t)
{
	json_object *x;

	write_conf(conf, "");
	t->d = spawn_daemon(t);
	CHECK_EQ_INT(sim_proc_wait_ready(t->d, 10000), 0);
	x = ctl_json("boards", NULL);
	CHECK_STREQ(field(board_on(x, "1-1"), "serial"), sim_board_uid(t->a));
	json_object_put(x);
	/* the unplugged board on 1-2 is still known, as absent */
	x = ctl_json("boards", "--all");
	CHECK(x && board_on(x, "1-2") != NULL);
	CHECK_STREQ(field(board_on(x, "1-2"), "present"), "false");
	json_object_put(x);
	CHECK_EQ_INT(sim_proc_kill(t->d, SIGTERM), 0);
	CHECK_EQ_INT(sim_proc_wait_exit(t->d, 10000), 0);
	t->d = sim_proc_free(t->d);
}

int
main(int argc, char **argv)
{
	char tmpl[] = "/tmp/skrflash-daemon-XXXXXX";
	struct run t = {0};

	sim_init(argc, argv);
	build = xstrdup(getenv("BUILD") ? getenv("BUILD") : "build");
	dir = xstrdup(mkdtemp(tmpl));
	t.state = xasprintf("%s/state", dir);
	t.run = xasprintf("%s/run", dir);
	sock = xasprintf("%s/control.sock", t.run);
	conf = xasprintf("%s/skrflash.conf", dir);
	t.daemon_path = xasprintf("%s/skrflashd", build);
	CHECK_EQ_INT(sim_prepare_production(dir, t.state, t.run), 0);
	write_conf(conf, "");
	sim = sim_new();

	test_coldplug(&t);
	test_hotplug(&t);
	test_reenumeration(&t);
	test_unplug(&t);
	test_reload(&t);
	test_exit(&t);
	test_restart(&t);
	sim_free(sim);
	{
		char *cmd = xasprintf("rm -rf '%s'", dir);

		(void)system(cmd);
		free(cmd);
	}
	free(t.state);
	free(t.run);
	free(sock);
	free(conf);
	free(t.daemon_path);
	free(dir);
	TEST_DONE();
}
