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

extern char **environ;

/* A helper outside the umockdev preload (it must see the real /sys and /proc): argv run with
 * stdin and stdout on pipes returned in *ret_in / *ret_out (either may be NULL). */
static pid_t
spawn_plain(char *const argv[], int *ret_in, int *ret_out)
{
	int in[2], out[2];
	pid_t pid;

	if (pipe2(in, O_CLOEXEC) < 0 || pipe2(out, O_CLOEXEC) < 0)
		return -errno;
	pid = fork();
	if (pid < 0)
		return -errno;
	if (pid == 0) {
		(void)dup2(in[0], STDIN_FILENO);
		(void)dup2(out[1], STDOUT_FILENO);
		(void)unsetenv("LD_PRELOAD");
		execvp(argv[0], argv);
		_exit(127);
	}
	close(in[0]);
	close(out[1]);
	if (ret_in)
		*ret_in = in[1];
	else
		close(in[1]);
	if (ret_out)
		*ret_out = out[0];
	else
		close(out[0]);
	return pid;
}

static int
read_line(int fd, char *buf, size_t size)
{
	size_t n = 0;

	while (n + 1 < size) {
		ssize_t r = read(fd, buf + n, 1);

		if (r <= 0)
			return -EIO;
		if (buf[n] == '\n')
			break;
		n++;
	}
	buf[n] = 0;
	return 0;
}

static int
sh_plain(const char *script)
{
	char *copy = xstrdup(script);
	char *argv[] = {(char[]){"sh"}, (char[]){"-c"}, copy, NULL};
	pid_t pid = spawn_plain(argv, NULL, NULL);
	int st;

	free(copy);
	if (pid < 0 || waitpid(pid, &st, 0) < 0)
		return -1;
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* A cgroup named klipper.service under our own, in the cgroup2 hierarchy; NULL if none can be
 * made here. */
/* Where this test's cgroups go: a child of our own cgroup in the cgroup2 hierarchy; NULL
 * when there is none. */
static char *
cgroup_parent(void)
{
	FILE *f = fopen("/proc/self/mounts", "re");
	char line[1024], mnt[512] = "", own[512] = "";

	while (f && fgets(line, sizeof(line), f)) {
		char dev[128], path[512], type[64];

		if (sscanf(line, "%127s %511s %63s", dev, path, type) == 3 &&
		    strcmp(type, "cgroup2") == 0) {
			(void)str_copy(mnt, sizeof(mnt), path);
			break;
		}
	}
	if (f)
		fclose(f);
	f = fopen("/proc/self/cgroup", "re");
	while (f && fgets(line, sizeof(line), f))
		if (strncmp(line, "0::", 3) == 0) {
			line[strcspn(line, "\n")] = 0;
			(void)str_copy(own, sizeof(own), line + 3);
		}
	if (f)
		fclose(f);
	if (!mnt[0])
		return NULL;
	return xasprintf("%s%s/skrflash-engine-%d", mnt, strcmp(own, "/") ? own : "",
			 (int)getpid());
}

static char *
make_klipper_cgroup(void)
{
	char *parent = cgroup_parent(), *cg, *cmd;

	if (!parent)
		return NULL;
	cg = xasprintf("%s/klipper.service", parent);
	cmd = xasprintf("mkdir -p '%s' 2>/dev/null", cg);
	if (sh_plain(cmd) != 0) {
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

	if (sh_plain(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", cg);
	free(cmd);
}

static char *
flashed_needle(struct sim_board *b, const char *sha)
{
	return xasprintf("flashed %s on port %s with %.12s", sim_board_model(b)->name,
			 sim_board_port(b), sha);
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
	char *cg = make_klipper_cgroup(), *node, *cmd, *path, *needle, *out = NULL, *calls = NULL;
	char sha[65], line[32];
	/* as root it is seen through /proc/PID/fd; in production mode (another uid, the daemon
	 * cannot see it) through its lock, taken as Klipper takes it: pyserial's
	 * exclusive=True is flock(LOCK_EX | LOCK_NB) on the open tty (klippy/serialhdl.py) */
	char script[] = "import fcntl, os, sys\n"
			"fd = os.open(sys.argv[1], os.O_PATH)\n"
			"t = os.open(sys.argv[2], os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)\n"
			"fcntl.flock(t, fcntl.LOCK_EX | fcntl.LOCK_NB)\n"
			"print('holding', flush=True)\n"
			"sys.stdin.read()\n";
	char pts[256];
	ssize_t pl;
	struct stat st;
	uint8_t *img;
	size_t len, n = 0;
	int in = -1, outfd = -1;
	pid_t klipper;
	const char *o, *stop, *start, *wrote;

	if (!cg) {
		fprintf(stderr,
			"SKIP klipper unit scenario: no writable cgroup2 hierarchy to put a "
			"process in a klipper.service cgroup\n");
		return;
	}
	node = xasprintf("%s/klipper-tty", eng_dir());
	CHECK_EQ_INT(stat(sim_board_tty(b), &st), 0);
	if (mknod(node, S_IFCHR | 0600, st.st_rdev) < 0) {
		fprintf(stderr, "SKIP klipper unit scenario: cannot make a device node (%s)\n",
			strerror(errno));
		remove_cgroup(cg);
		free(node);
		free(cg);
		return;
	}
	/* the pty behind the testbed's tty, which the stand-in opens outside the preload */
	pl = readlink(sim_board_tty(b), pts, sizeof(pts) - 1);
	CHECK(pl > 0);
	pts[pl > 0 ? pl : 0] = 0;
	{
		char *a[] = {(char[]){"python3"}, (char[]){"-c"}, script, node, pts, NULL};
		char **as = sim_as("klipper", eng_dir(), a); /* Klipper's own user */

		klipper = spawn_plain(as, &in, &outfd);
		strv_free(as);
	}
	CHECK(klipper > 0 && read_line(outfd, line, sizeof(line)) == 0);
	CHECK_STREQ(line, "holding");
	cmd = xasprintf("echo %d > '%s/cgroup.procs'", (int)klipper, cg);
	CHECK_EQ_INT(sh_plain(cmd), 0);
	free(cmd);

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
	/* exactly that unit, stopped once and started once, in that order */
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
	close(in); /* the stand-in exits on EOF */
	close(outfd);
	(void)waitpid(klipper, NULL, 0);
	remove_cgroup(cg);
	(void)unlink(node);
	free(node);
	free(needle);
	free(path);
	free(img);
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

int
main(int argc, char **argv)
{
	struct sim_board *k, *p, *d, *o, *ak;
	char port[32], addr[512], ready[16], *profiles, *bus_conf, *calls, *fifo, *env_bus;
	char *key_file;
	char *fake_path, *mr_script;
	int mr_in = -1, mr_out = -1, bus_out = -1, fd;
	pid_t mr, bus, fake;
	FILE *f;

	eng_init(argc, argv, "engine-safety");
	key_file = xasprintf("%s/moonraker.key", eng_dir());
	/* Moonraker stand-in: one server, the state chosen by the URL prefix */
	mr_script = xstrdup("tests/integration/fake_moonraker.py");
	{
		char *a[] = {(char[]){"python3"}, mr_script, NULL};

		mr = spawn_plain(a, &mr_in, &mr_out);
	}
	CHECK(mr > 0 && read_line(mr_out, port, sizeof(port)) == 0);

	/* a private bus with fake_systemd on it (units.sh does the same) */
	bus_conf = xasprintf("%s/bus.conf", eng_dir());
	f = fopen(bus_conf, "w");
	CHECK(f != NULL);
	if (f) {
		fprintf(f,
			"<!DOCTYPE busconfig PUBLIC \"-//freedesktop//DTD D-Bus Bus Configuration "
			"1.0//EN\"\n \"http://www.freedesktop.org/standards/dbus/1.0/"
			"busconfig.dtd\">\n<busconfig><type>session</type>"
			"<listen>unix:dir=%s</listen><auth>EXTERNAL</auth>"
			/* the daemon runs as its own user (sim_as): any user may connect */
			"<policy context=\"default\"><allow user=\"*\"/>"
			"<allow send_destination=\"*\" "
			"eavesdrop=\"true\"/><allow eavesdrop=\"true\"/><allow own=\"*\"/>"
			"</policy></busconfig>\n",
			eng_dir());
		fclose(f);
	}
	{
		char *cf = xasprintf("--config-file=%s", bus_conf);
		char *a[] = {(char[]){"dbus-daemon"}, cf, (char[]){"--nofork"},
			     (char[]){"--print-address=1"}, NULL};
		/* the bus must know the daemon's user, as the system's user database does */
		char **as = sim_as("system", eng_dir(), a);

		bus = spawn_plain(as, NULL, &bus_out);
		strv_free(as);
		free(cf);
	}
	CHECK(bus > 0 && read_line(bus_out, addr, sizeof(addr)) == 0);
	calls = xasprintf("%s/calls.log", eng_dir());
	fifo = xasprintf("%s/ready", eng_dir());
	CHECK_EQ_INT(mkfifo(fifo, 0600), 0);
	fake_path = xasprintf("%s/tests/integration/fake_systemd", eng_build());
	setenv("DBUS_SYSTEM_BUS_ADDRESS", addr, 1);
	{
		/* StopUnit ends the stand-in, as systemd ends Klipper */
		char *parent = cgroup_parent();

		if (parent)
			setenv("FAKE_SYSTEMD_CGROUPS", parent, 1);
		free(parent);
	}
	{
		char *a[] = {fake_path, calls, fifo, NULL};

		fake = spawn_plain(a, NULL, NULL);
	}
	/* a fake that cannot start would leave the open below waiting for a writer forever */
	CHECK(access(fake_path, X_OK) == 0);
	fd = access(fake_path, X_OK) == 0 ? open(fifo, O_RDONLY | O_CLOEXEC) : -1;
	CHECK(fd >= 0 && read_line(fd, ready, sizeof(ready)) == 0);
	CHECK_STREQ(ready, "ready");
	if (fd >= 0)
		close(fd);

	profiles = xasprintf(
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
	k = eng_add("octopus-f446", "1-1", SIM_MODE_KLIPPER_APP, true);
	p = eng_add("octopus-f446", "1-2", SIM_MODE_KLIPPER_APP, true);
	d = eng_add("octopus-f446", "1-3", SIM_MODE_KLIPPER_APP, true);
	o = eng_add("octopus-f446", "1-4", SIM_MODE_KLIPPER_APP, true);
	ak = eng_add("octopus-f446", "1-5", SIM_MODE_KLIPPER_APP, true);
	env_bus = xasprintf("DBUS_SYSTEM_BUS_ADDRESS=%s", addr);
	{
		/* the real cgroup tree: the daemon's umockdev preload redirects /sys */
		char *env[] = {
		    env_bus, (char[]){"SKRFLASHD_CGROUP_ROOT=/proc/self/root/sys/fs/cgroup"}, NULL};

		int r = k && p && d && o && ak ? eng_start(env) : -ENODEV;

		CHECK_EQ_INT(r, 0);
		if (r == 0) {
			test_klipper_unit(k, calls);
			test_moonraker(p, d, o);
			test_api_key(ak, key_file);
			CHECK_EQ_INT(eng_stop(), 0);
		}
	}
	eng_done();
	if (mr_in >= 0)
		close(mr_in); /* fake_moonraker exits on EOF */
	if (mr > 0)
		(void)waitpid(mr, NULL, 0);
	if (fake > 0)
		(void)kill(fake, SIGTERM);
	if (bus > 0)
		(void)kill(bus, SIGTERM);
	(void)waitpid(fake, NULL, 0);
	(void)waitpid(bus, NULL, 0);
	free(env_bus);
	free(profiles);
	free(key_file);
	free(fake_path);
	free(fifo);
	free(calls);
	free(bus_conf);
	free(mr_script);
	TEST_DONE();
}
