/* SPDX-License-Identifier: GPL-2.0-or-later */
/* test_engine_safety: the engine's gates with the unmodified daemon - the unit that holds a
 * board's tty is stopped through systemd (fake_systemd on a private bus) and started again
 * after the flash; Moonraker printing or down refuses the flash, moonraker_fail_open flashes.
 *
 * The tty holder is a real process in a cgroup named klipper.service: holder_find reads the
 * real /proc, so the test needs a writable cgroup2 hierarchy and mknod (root in CI); without
 * them that scenario is skipped with a message and the others still run. */
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
#include "test_engine_lib.h"
#include "util.h"

/* A cgroup named klipper.service below this test's own in the cgroup2 hierarchy; NULL if
 * none can be made here. */
static char *
make_klipper_cgroup(void)
{
	char *parent = eng_cgroup_dir("engine", getpid()), *cg, *cmd;

	if (!parent)
		return NULL;
	cg = xasprintf("%s/klipper.service", parent);
	cmd = xasprintf("mkdir -p '%s' 2>/dev/null", cg);
	if (eng_sh_plain(cmd) != 0) {
		free(cg);
		cg = NULL;
	}
	free(cmd);
	free(parent);
	return cg;
}

static void
remove_cgroup(const char *cg)
{
	char *cmd = xasprintf("rmdir '%s' && rmdir \"$(dirname '%s')\"", cg, cg);

	if (eng_sh_plain(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", cg);
	free(cmd);
}

static char *
flashed_needle(struct sim_board *b, const char *sha)
{
	return xasprintf("flashed %s on port %s with %.12s", sim_board_model(b)->name,
			 sim_board_port(b), sha);
}

/* The stand-in's node for the board's tty (eng_tty_node); NULL, with the scenario skipped,
 * where device nodes cannot be made. */
static char *
klipper_node(struct sim_board *b)
{
	struct stat st;
	char *node;

	CHECK_EQ_INT(stat(sim_board_tty(b), &st), 0);
	node = eng_tty_node(b, "klipper-tty");
	if (!node)
		fprintf(stderr, "SKIP klipper unit scenario: cannot make a device node (%s)\n",
			strerror(errno));
	return node;
}

/* Klipper's own user holding the tty through node, put in the cgroup cg; its pid. */
static pid_t
start_klipper(struct sim_board *b, const char *node, const char *cg, int *ret_in)
{
	pid_t pid = eng_hold_tty(b, node, "klipper", true, ret_in);
	char *cmd = xasprintf("echo %d > '%s/cgroup.procs'", (int)pid, cg);

	CHECK(pid > 0);
	CHECK_EQ_INT(eng_sh_plain(cmd), 0);
	free(cmd);
	return pid;
}

/* A job for the held board: the unit stopped before the write, started again after it. */
static void
flash_held_board(struct sim_board *b)
{
	char sha[65], *path, *needle, *out = NULL;
	const char *o, *stop, *start, *wrote;
	uint8_t *img;
	size_t len;

	path = eng_image(b, 0, "v0.13.0-unit", 16 * 1024, &img, &len, sha);
	needle = flashed_needle(b, sha);
	CHECK_EQ_INT(eng_ctl(&out, "queue", "klipper", path, NULL), 0);
	free(out);
	CHECK_EQ_INT(eng_wait(needle, 20000), 0);
	CHECK_EQ_INT(eng_wait("started klipper.service again", 10000), 0);
	CHECK(flash_equals(sim_board_flash(b), sim_board_app_start(b), img, len));
	o = sim_proc_output(eng_daemon());
	stop = strstr(o, "stopped klipper.service to flash octopus-f446 on port 1-1");
	wrote = strstr(o, "octopus-f446 on port 1-1: bootloader reports");
	start = strstr(o, "started klipper.service again");
	CHECK(stop && wrote && start && stop < wrote && wrote < start);
	CHECK(start && strstr(o, needle) < start);
	free(needle);
	free(path);
	free(img);
}

/* Exactly that unit, stopped once and started once, in that order. */
static void
check_unit_calls(const char *calls_path)
{
	char *calls = NULL;
	size_t n = 0;

	CHECK_EQ_INT(read_file(calls_path, 1 << 20, (uint8_t **)&calls, &n), 0);
	if (calls) {
		char *s, *t;

		calls = xreallocarray(calls, n + 1, 1);
		calls[n] = 0;
		s = strstr(calls, "StopUnit klipper.service");
		t = strstr(calls, "StartUnit klipper.service");
		CHECK(s && t && s < t);
		CHECK(s && !strstr(s + 1, "StopUnit"));
		CHECK(t && !strstr(t + 1, "StartUnit"));
		fprintf(stderr, "fake systemd calls:\n%s", calls);
	}
	free(calls);
}

/* Klipper (a process in klipper.service) holds the tty: stopped, flashed, started again.
 *
 * umockdev gives /dev/ttyACMn a device number of its own (166:n) while the pty behind it
 * has another, and an fd opened through the testbed points at /dev/pts/N, so a process that
 * simply opened the board's tty would not look like its holder. The stand-in holds, with
 * O_PATH, a character node carrying the very device number the daemon sees for the tty:
 * holder_find matches holders by that number, as it does with a real ttyACM. */
static void
test_klipper_unit(struct sim_board *b, const char *calls_path)
{
	char *cg = make_klipper_cgroup(), *node;
	int in = -1;
	pid_t klipper;

	if (!cg) {
		fprintf(stderr,
			"SKIP klipper unit scenario: no writable cgroup2 hierarchy to put a "
			"process in a klipper.service cgroup\n");
		return;
	}
	node = klipper_node(b);
	if (!node) {
		remove_cgroup(cg);
		free(cg);
		return;
	}
	klipper = start_klipper(b, node, cg, &in);
	flash_held_board(b);
	check_unit_calls(calls_path);
	if (in >= 0)
		close(in); /* the stand-in exits on EOF */
	if (klipper > 0)
		(void)waitpid(klipper, NULL, 0);
	remove_cgroup(cg);
	(void)unlink(node);
	free(node);
	free(cg);
}

/* The print-state gate: refuses while printing or when Moonraker is down, unless fail-open */
static void
test_moonraker(struct sim_board *printing, struct sim_board *down, struct sim_board *open)
{
	uint8_t *ip, *idn, *io,
	    *before_p = eng_flash_copy(printing, sim_board_app_start(printing),
				       sim_board_app_start(printing) + 65536);
	uint8_t *before_d =
	    eng_flash_copy(down, sim_board_app_start(down), sim_board_app_start(down) + 65536);
	size_t lp, ld, lo;
	char sp[65], sd[65], so[65];
	char *pp = eng_image(printing, 0, "v0.13.0-printing", 16 * 1024, &ip, &lp, sp);
	char *pd = eng_image(down, 0, "v0.13.0-down", 16 * 1024, &idn, &ld, sd);
	char *po = eng_image(open, 0, "v0.13.0-open", 16 * 1024, &io, &lo, so);
	char *needle = flashed_needle(open, so), *out = NULL;
	uint64_t erases_p = eng_erases(printing), erases_d = eng_erases(down);
	json_object *hist, *row;

	CHECK_EQ_INT(eng_ctl(&out, "queue", "printing", pp, NULL), 0);
	free(out);
	CHECK_EQ_INT(eng_wait("is printing; not flashing octopus-f446 now", 10000), 0);
	CHECK_EQ_INT(eng_ctl(&out, "queue", "down", pd, NULL), 0);
	free(out);
	CHECK_EQ_INT(eng_wait("did not answer", 10000), 0);
	CHECK_EQ_INT(eng_wait("not flashing octopus-f446", 10000), 0);
	CHECK_EQ_INT(eng_ctl(&out, "queue", "open", po, NULL), 0);
	free(out);
	CHECK_EQ_INT(eng_wait(needle, 20000), 0);
	CHECK(flash_equals(sim_board_flash(open), sim_board_app_start(open), io, lo));

	hist = eng_history();
	row = eng_newest_on(hist, "1-2");
	CHECK_STREQ(eng_str(row, "result"), "failed");
	CHECK(strstr(eng_str(row, "error"), "is printing") != NULL);
	CHECK_STREQ(eng_str(row, "step"), "gate");
	row = eng_newest_on(hist, "1-3");
	CHECK_STREQ(eng_str(row, "result"), "failed");
	CHECK(strstr(eng_str(row, "error"), "did not answer") != NULL);
	row = eng_newest_on(hist, "1-4");
	CHECK_STREQ(eng_str(row, "result"), "succeeded");
	json_object_put(hist);
	/* refused boards were never touched: same app, no erase, still running Klipper */
	CHECK(flash_equals(sim_board_flash(printing), sim_board_app_start(printing), before_p,
			   65536));
	CHECK(flash_equals(sim_board_flash(down), sim_board_app_start(down), before_d, 65536));
	CHECK_EQ_INT(eng_erases(printing), erases_p);
	CHECK_EQ_INT(eng_erases(down), erases_d);
	CHECK_EQ_INT(sim_board_enumerations(printing), 1);
	CHECK_EQ_INT(sim_board_enumerations(down), 1);
	free(needle);
	free(pp);
	free(pd);
	free(po);
	free(ip);
	free(idn);
	free(io);
	free(before_p);
	free(before_d);
}

/* The key file as docs/security.md says: mode 0600, owned by the daemon's user, so that
 * operators (the daemon's group) cannot read it. */
static void
give_to_daemon(const char *path)
{
	if (sim_production())
		CHECK_EQ_INT(chown(path, sim_daemon_uid(), 0), 0);
}

/* A Moonraker that does not trust this host: the key comes from moonraker_api_key_file, read
 * at each check. A wrong key refuses with the hint; the right one, written without a reload,
 * flashes on the next attempt. */
static void
test_api_key(struct sim_board *b, const char *key_file)
{
	uint8_t *img,
	    *before = eng_flash_copy(b, sim_board_app_start(b), sim_board_app_start(b) + 65536);
	size_t len;
	char sha[65], *out = NULL;
	char *path = eng_image(b, 0, "v0.13.0-auth", 16 * 1024, &img, &len, sha);
	char *needle = flashed_needle(b, sha);
	json_object *hist;

	CHECK_EQ_INT(write_file_atomic(key_file, "wrong\n", 6, 0600), 0);
	give_to_daemon(key_file);
	CHECK_EQ_INT(eng_ctl(&out, "queue", "auth", path, NULL), 0);
	free(out);
	CHECK_EQ_INT(eng_wait("HTTP status 401, not authorized", 10000), 0);
	hist = eng_history();
	CHECK(strstr(eng_str(eng_newest_on(hist, "1-5"), "error"), "refused the API key") != NULL);
	CHECK_STREQ(eng_str(eng_newest_on(hist, "1-5"), "step"), "gate");
	json_object_put(hist);
	CHECK(flash_equals(sim_board_flash(b), sim_board_app_start(b), before, 65536));
	CHECK_EQ_INT(sim_board_enumerations(b), 1);

	CHECK_EQ_INT(write_file_atomic(key_file, "0123456789abcdef\n", 17, 0600), 0);
	give_to_daemon(key_file);
	CHECK_EQ_INT(eng_ctl(&out, "flash", "1-5", NULL), 0);
	free(out);
	CHECK_EQ_INT(eng_wait(needle, 20000), 0);
	CHECK(flash_equals(sim_board_flash(b), sim_board_app_start(b), img, len));
	free(needle);
	free(path);
	free(img);
	free(before);
}

/* The hosts around the daemon: a Moonraker stand-in and a private bus with fake_systemd. */
struct hosts {
	pid_t mr;
	int mr_in;
	char port[32]; /* the Moonraker stand-in's */
	struct eng_bus bus;
};

static void
hosts_start(struct hosts *h)
{
	/* Moonraker stand-in: one server, the state chosen by the URL prefix */
	char *a[] = {(char[]){"python3"}, (char[]){"tests/integration/fake_moonraker.py"}, NULL};
	/* StopUnit ends the stand-in, as systemd ends Klipper */
	char *cgroups = eng_cgroup_dir("engine", getpid());

	h->mr_in = -1;
	h->mr = eng_fake_start(NULL, a, &h->mr_in, h->port, sizeof(h->port));
	CHECK(h->mr > 0);
	/* a private bus with fake_systemd on it (units.sh does the same) */
	CHECK_EQ_INT(eng_bus_start(&h->bus, eng_dir(), cgroups), 0);
	free(cgroups);
}

static void
hosts_stop(struct hosts *h)
{
	if (h->mr_in >= 0)
		close(h->mr_in); /* fake_moonraker exits on EOF */
	if (h->mr > 0)
		(void)waitpid(h->mr, NULL, 0);
	eng_bus_stop(&h->bus);
}

/* One board a scenario: Klipper's unit, printing, Moonraker down, fail-open, an API key. */
static void
write_conf(const char *port, const char *key_file)
{
	char *profiles = xasprintf(
	    "  { name = \"klipper\"; match = { board = \"octopus-f446\"; port = \"1-1\"; };\n"
	    "    auto_flash = [\"queue\"]; stop_units = [\"klipper.service\"];\n"
	    "    moonraker = \"http://127.0.0.1:%s/standby\"; },\n"
	    "  { name = \"printing\"; match = { board = \"octopus-f446\"; port = \"1-2\"; };\n"
	    "    auto_flash = [\"queue\"]; moonraker = \"http://127.0.0.1:%s/printing\"; },\n"
	    "  { name = \"down\"; match = { board = \"octopus-f446\"; port = \"1-3\"; };\n"
	    "    auto_flash = [\"queue\"]; moonraker = \"http://127.0.0.1:1\"; },\n"
	    "  { name = \"open\"; match = { board = \"octopus-f446\"; port = \"1-4\"; };\n"
	    "    auto_flash = [\"queue\"]; moonraker = \"http://127.0.0.1:1\";\n"
	    "    moonraker_fail_open = true; },\n"
	    "  { name = \"auth\"; match = { board = \"octopus-f446\"; port = \"1-5\"; };\n"
	    "    auto_flash = [\"queue\"]; moonraker = \"http://127.0.0.1:%s/auth\";\n"
	    "    moonraker_api_key_file = \"%s\"; }",
	    port, port, port, key_file);

	eng_write_conf("", profiles);
	free(profiles);
}

int
main(int argc, char **argv)
{
	struct sim_board *k, *p, *d, *o, *ak;
	struct hosts h = {0};
	char *key_file, *env_bus;

	eng_init(argc, argv, "engine-safety");
	key_file = xasprintf("%s/moonraker.key", eng_dir());
	hosts_start(&h);
	write_conf(h.port, key_file);
	k = eng_add("octopus-f446", "1-1", SIM_MODE_KLIPPER_APP, true);
	p = eng_add("octopus-f446", "1-2", SIM_MODE_KLIPPER_APP, true);
	d = eng_add("octopus-f446", "1-3", SIM_MODE_KLIPPER_APP, true);
	o = eng_add("octopus-f446", "1-4", SIM_MODE_KLIPPER_APP, true);
	ak = eng_add("octopus-f446", "1-5", SIM_MODE_KLIPPER_APP, true);
	env_bus = xasprintf("DBUS_SYSTEM_BUS_ADDRESS=%s", h.bus.addr);
	{
		/* the real cgroup tree: the daemon's umockdev preload redirects /sys */
		char *env[] = {
		    env_bus, (char[]){"SKRFLASHD_CGROUP_ROOT=/proc/self/root/sys/fs/cgroup"}, NULL};

		int r = k && p && d && o && ak ? eng_start(env) : -ENODEV;

		CHECK_EQ_INT(r, 0);
		if (r == 0) {
			test_klipper_unit(k, h.bus.calls);
			test_moonraker(p, d, o);
			test_api_key(ak, key_file);
			CHECK_EQ_INT(eng_stop(), 0);
		}
	}
	eng_done();
	hosts_stop(&h);
	free(env_bus);
	free(key_file);
	TEST_DONE();
}
