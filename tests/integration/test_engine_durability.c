/* SPDX-License-Identifier: GPL-2.0-or-later */
/* test_engine_durability: the fault matrix of a flash job. Every step of a job (gate, after
 * the unit stop, right after the 1200-baud touch, waiting for the bootloader, write at 10, 50
 * and 90 %, verify, leave, boot check) x {daemon SIGKILLed and restarted, board unplugged for
 * 1 s, for 5 s} x {Katapult on an Octopus F446, ROM DfuSe on an SKR 3 H723}, plus a kill
 * and an unplug during a rollback on each, and a bounded udev storm.
 *
 * Each cell is a fresh run - its own testbed, state directory and unmodified daemon - in a
 * child process of this program (cells run in parallel). It ends when the board is back up
 * in its application and the daemon has no job left, and asserts:
 *  - the board runs the new image (or, in rollback cells, the last known-good one): the bytes
 *    in the simulated flash, the version the running app reports, and `boards`;
 *  - the Klipper unit the job stopped runs again (the last call fake_systemd saw for it is a
 *    StartUnit);
 *  - no file is lost (the queued firmware is in the store);
 *  - the history row of the job names the step it was in when the fault hit, and its method
 *    once the write began;
 *  - no board is left with pending firmware and nothing scheduled (`status` waiting = 0).
 * The matrix is printed as a table at the end.
 *
 * SKRFLASH_MATRIX_JOBS (default 8) cells run at once (they mostly wait), SKRFLASH_MATRIX_RESTART_MS
 * (default 300) is the delay before the killed daemon is started again (the unit restarts it after
 * 5 s; the delay does not change what the new daemon finds), SKRFLASH_MATRIX_ONLY=N runs one
 * cell. */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "flash.h"
#include "harness.h"
#include "test_engine_lib.h"
#include "util.h"

enum at {
	AT_GATE,
	AT_UNIT_STOPPED,
	AT_TOUCH,
	AT_WAIT_BOOTLOADER,
	AT_WRITE_10,
	AT_WRITE_50,
	AT_WRITE_90,
	AT_VERIFY,
	AT_LEAVE,
	AT_BOOT_CHECK,
	AT_ROLLBACK, /* the rollback write of the known-good image */
	AT_STORM,
	_AT_MAX,
};

static const char *const at_names[_AT_MAX] = {
    [AT_GATE] = "gate",
    [AT_UNIT_STOPPED] = "unit stopped",
    [AT_TOUCH] = "after touch",
    [AT_WAIT_BOOTLOADER] = "wait bootloader",
    [AT_WRITE_10] = "write 10%",
    [AT_WRITE_50] = "write 50%",
    [AT_WRITE_90] = "write 90%",
    [AT_VERIFY] = "verify",
    [AT_LEAVE] = "leave",
    [AT_BOOT_CHECK] = "boot check",
    [AT_ROLLBACK] = "rollback write",
    [AT_STORM] = "udev storm",
};

enum fault { F_KILL, F_UNPLUG_1S, F_UNPLUG_5S, _F_MAX };
static const char *const fault_names[_F_MAX] = {"kill", "unplug 1s", "unplug 5s"};

struct cell {
	enum at at;
	enum fault fault;
	bool dfu; /* SKR 3 H723 over ROM DfuSe, else Octopus F446 over Katapult */
};

#define MAX_CELLS 80
#define STORM_GAP_US 250000ull
#define MAX_JOBS 8 /* ttys numbered apart per running cell: 8 + 5 * slot, storm at 50 */
static struct cell cells[MAX_CELLS];
static size_t n_cells;

static void
build_matrix(void)
{
	for (int dfu = 0; dfu < 2; dfu++) {
		for (int at = AT_GATE; at <= AT_BOOT_CHECK; at++)
			for (int f = 0; f < _F_MAX; f++)
				cells[n_cells++] = (struct cell){(enum at)at, (enum fault)f, dfu};
		cells[n_cells++] = (struct cell){AT_ROLLBACK, F_KILL, dfu};
		cells[n_cells++] = (struct cell){AT_ROLLBACK, F_UNPLUG_1S, dfu};
	}
	cells[n_cells++] = (struct cell){AT_STORM, F_UNPLUG_1S, false};
}

static unsigned
env_uint(const char *name, unsigned def)
{
	const char *v = getenv(name);

	return v && *v ? (unsigned)strtoul(v, NULL, 10) : def;
}

static void
sleep_ms(unsigned ms)
{
	struct timespec t = {.tv_sec = ms / 1000u, .tv_nsec = (long)(ms % 1000u) * 1000000L};

	nanosleep(&t, NULL);
}

/* ---- helpers outside the umockdev preload (the real /sys, /proc and cgroups) ---------- */

extern char **environ;

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
read_line_fd(int fd, char *buf, size_t size)
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

/* cgroup2 mount and our own cgroup; "" when there is none */
static void
cgroup_base(char *mnt, size_t mnt_size, char *own, size_t own_size)
{
	FILE *f = fopen("/proc/self/mounts", "re");
	char line[1024];

	mnt[0] = own[0] = 0;
	while (f && fgets(line, sizeof(line), f)) {
		char dev[128], path[512], type[64];

		if (sscanf(line, "%127s %511s %63s", dev, path, type) == 3 &&
		    strcmp(type, "cgroup2") == 0) {
			(void)str_copy(mnt, mnt_size, path);
			break;
		}
	}
	if (f)
		fclose(f);
	f = fopen("/proc/self/cgroup", "re");
	while (f && fgets(line, sizeof(line), f))
		if (strncmp(line, "0::", 3) == 0) {
			line[strcspn(line, "\n")] = 0;
			(void)str_copy(own, own_size, strcmp(line + 3, "/") ? line + 3 : "");
		}
	if (f)
		fclose(f);
}

/* ---- the shared host: a private bus with fake_systemd, and a Moonraker ---------------- */

struct host {
	pid_t bus, fake, mr;
	int mr_in;
	char dir[256];
	char calls[300];
};

static int
host_start(struct host *h)
{
	char addr[512], ready[16], port[32], *conf, *fifo, *fake_path;
	int bus_out = -1, mr_out = -1, fd;
	FILE *f;

	memset(h, 0, sizeof(*h));
	h->mr_in = -1;
	(void)snprintf(h->dir, sizeof(h->dir), "/tmp/skrflash-matrix-host-XXXXXX");
	if (!mkdtemp(h->dir))
		return -errno;
	(void)snprintf(h->calls, sizeof(h->calls), "%s/calls.log", h->dir);
	conf = xasprintf("%s/bus.conf", h->dir);
	f = fopen(conf, "w");
	if (!f)
		return -errno;
	fprintf(f,
		"<!DOCTYPE busconfig PUBLIC \"-//freedesktop//DTD D-Bus Bus Configuration "
		"1.0//EN\"\n \"http://www.freedesktop.org/standards/dbus/1.0/"
		"busconfig.dtd\">\n<busconfig><type>session</type>"
		"<listen>unix:dir=%s</listen><auth>EXTERNAL</auth>"
		"<policy context=\"default\"><allow send_destination=\"*\" "
		"eavesdrop=\"true\"/><allow eavesdrop=\"true\"/><allow own=\"*\"/>"
		"</policy></busconfig>\n",
		h->dir);
	fclose(f);
	{
		char *cf = xasprintf("--config-file=%s", conf);
		char *a[] = {(char[]){"dbus-daemon"}, cf, (char[]){"--nofork"},
			     (char[]){"--print-address=1"}, NULL};

		h->bus = spawn_plain(a, NULL, &bus_out);
		free(cf);
	}
	free(conf);
	if (h->bus <= 0 || read_line_fd(bus_out, addr, sizeof(addr)) < 0)
		return -EIO;
	close(bus_out);
	setenv("DBUS_SYSTEM_BUS_ADDRESS", addr, 1);
	fifo = xasprintf("%s/ready", h->dir);
	if (mkfifo(fifo, 0600) < 0)
		return -errno;
	fake_path = xasprintf("%s/tests/integration/fake_systemd",
			      getenv("BUILD") ? getenv("BUILD") : "build");
	if (access(fake_path, X_OK) < 0)
		return -ENOENT;
	{
		char *a[] = {fake_path, h->calls, fifo, NULL};

		h->fake = spawn_plain(a, NULL, NULL);
	}
	fd = open(fifo, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || read_line_fd(fd, ready, sizeof(ready)) < 0 || strcmp(ready, "ready") != 0)
		return -EIO;
	close(fd);
	free(fifo);
	free(fake_path);
	{
		char *a[] = {(char[]){"python3"}, (char[]){"tests/integration/fake_moonraker.py"},
			     NULL};

		h->mr = spawn_plain(a, &h->mr_in, &mr_out);
	}
	if (h->mr <= 0 || read_line_fd(mr_out, port, sizeof(port)) < 0)
		return -EIO;
	close(mr_out);
	setenv("SKRFLASH_MATRIX_MR_PORT", port, 1);
	setenv("SKRFLASH_MATRIX_CALLS", h->calls, 1);
	return 0;
}

static void
host_stop(struct host *h)
{
	char *cmd;

	if (h->mr_in >= 0)
		close(h->mr_in); /* fake_moonraker exits on EOF */
	if (h->fake > 0)
		(void)kill(h->fake, SIGTERM);
	if (h->bus > 0)
		(void)kill(h->bus, SIGTERM);
	if (h->mr > 0)
		(void)waitpid(h->mr, NULL, 0);
	if (h->fake > 0)
		(void)waitpid(h->fake, NULL, 0);
	if (h->bus > 0)
		(void)waitpid(h->bus, NULL, 0);
	if (h->dir[0]) {
		cmd = xasprintf("rm -rf '%s'", h->dir);
		(void)sh_plain(cmd);
		free(cmd);
	}
}

/* ---- one cell ------------------------------------------------------------------------ */

struct klipper {
	char *cg;
	char *node;
	pid_t pid;
	int in, out;
};

/* A stand-in for Klipper in a cgroup named UNIT holding the board's tty (see
 * test_engine_safety: an O_PATH node with the tty's device number); false if the host has
 * no writable cgroup2 hierarchy. */
static bool
klipper_start(struct klipper *k, struct sim_board *b, const char *unit)
{
	char mnt[512], own[512], line[32], *cmd;
	char script[] = "import os, sys\n"
			"fd = os.open(sys.argv[1], os.O_PATH)\n"
			"print('holding', flush=True)\n"
			"sys.stdin.read()\n";
	struct stat st;

	memset(k, 0, sizeof(*k));
	k->in = k->out = -1;
	cgroup_base(mnt, sizeof(mnt), own, sizeof(own));
	if (!mnt[0] || stat(sim_board_tty(b), &st) < 0)
		return false;
	k->cg = xasprintf("%s%s/skrflash-matrix-%d/%s", mnt, own, (int)getpid(), unit);
	cmd = xasprintf("mkdir -p '%s' 2>/dev/null", k->cg);
	if (sh_plain(cmd) != 0) {
		free(cmd);
		free(k->cg);
		k->cg = NULL;
		return false;
	}
	free(cmd);
	k->node = xasprintf("%s/klipper-tty", eng_dir());
	if (mknod(k->node, S_IFCHR | 0600, st.st_rdev) < 0)
		return false;
	{
		char *a[] = {(char[]){"python3"}, (char[]){"-c"}, script, k->node, NULL};

		k->pid = spawn_plain(a, &k->in, &k->out);
	}
	if (k->pid <= 0 || read_line_fd(k->out, line, sizeof(line)) < 0)
		return false;
	cmd = xasprintf("echo %d > '%s/cgroup.procs'", (int)k->pid, k->cg);
	if (sh_plain(cmd) != 0) {
		free(cmd);
		return false;
	}
	free(cmd);
	return true;
}

static void
klipper_stop(struct klipper *k)
{
	char *cmd;

	if (k->in >= 0)
		close(k->in);
	if (k->out >= 0)
		close(k->out);
	if (k->pid > 0)
		(void)waitpid(k->pid, NULL, 0);
	if (k->cg) {
		cmd = xasprintf("rmdir '%s' && rmdir \"$(dirname '%s')\"", k->cg, k->cg);
		(void)sh_plain(cmd);
		free(cmd);
	}
	if (k->node)
		(void)unlink(k->node);
	free(k->cg);
	free(k->node);
}

/* The last fake_systemd call for unit: "StopUnit", "StartUnit" or "" (none). */
static void
last_unit_call(const char *unit, char *buf, size_t size)
{
	FILE *f = fopen(getenv("SKRFLASH_MATRIX_CALLS"), "re");
	char line[512], *stop, *start;

	buf[0] = 0;
	while (f && fgets(line, sizeof(line), f)) {
		line[strcspn(line, "\n")] = 0;
		stop = strstr(line, "StopUnit ");
		start = strstr(line, "StartUnit ");
		if (stop && strncmp(stop + 9, unit, strlen(unit)) == 0 &&
		    stop[9 + strlen(unit)] == ' ')
			(void)str_copy(buf, size, "StopUnit");
		if (start && strncmp(start + 10, unit, strlen(unit)) == 0 &&
		    start[10 + strlen(unit)] == ' ')
			(void)str_copy(buf, size, "StartUnit");
	}
	if (f)
		fclose(f);
}

/* The newest event line of the watcher holding `needle`, parsed; NULL if none. */
static json_object *
last_event(struct sim_proc *w, const char *needle)
{
	const char *out = sim_proc_output(w), *p = NULL, *q;

	for (q = out; (q = strstr(q, needle)); q++)
		p = q;
	if (!p)
		return NULL;
	while (p > out && p[-1] != '\n')
		p--;
	q = strchrnul(p, '\n');
	{
		char *line = xstrndup(p, (size_t)(q - p));
		json_object *o;

		/* sim_proc does not prefix stdout lines it echoes; be lenient anyway */
		o = json_tokener_parse(strchr(line, '{') ? strchr(line, '{') : line);
		free(line);
		return o;
	}
}

static const char *
data_str(json_object *ev, const char *key)
{
	json_object *d;

	if (!ev || !json_object_object_get_ex(ev, "data", &d))
		return "";
	return eng_str(d, key);
}

static long long
data_int(json_object *ev, const char *key)
{
	json_object *d;

	if (!ev || !json_object_object_get_ex(ev, "data", &d))
		return -1;
	return eng_int(d, key);
}

/* Steps in the order a job takes them: a short step the poll missed counts as reached once a
 * later one is seen (the table then shows where the fault really hit). */
static int
step_order(const char *s)
{
	static const char *const order[] = {
	    "plan",  "gate",   "stop-unit", "enter-bootloader", "wait-bootloader",
	    "write", "verify", "leave",	    "boot-check"};

	for (size_t i = 0; i < sizeof(order) / sizeof(order[0]); i++)
		if (strcmp(order[i], s) == 0)
			return (int)i;
	return -1;
}

/* Is the job where the cell wants its fault? *where says where it was. */
static bool
reached(struct sim_proc *w, enum at at, char *where, size_t size)
{
	static const char *const target[_AT_MAX] = {[AT_GATE] = "gate",
						    [AT_UNIT_STOPPED] = "stop-unit",
						    [AT_TOUCH] = "enter-bootloader",
						    [AT_WAIT_BOOTLOADER] = "wait-bootloader",
						    [AT_WRITE_10] = "write",
						    [AT_WRITE_50] = "write",
						    [AT_WRITE_90] = "write",
						    [AT_VERIFY] = "verify",
						    [AT_LEAVE] = "leave",
						    [AT_BOOT_CHECK] = "boot-check",
						    [AT_ROLLBACK] = "rollback-write"};
	json_object *step = last_event(w, "\"job-step\""), *prog;
	const char *s = data_str(step, "step");
	bool hit = false;
	long long done, total;

	(void)snprintf(where, size, "%s", s);
	if (at == AT_ROLLBACK || (at >= AT_WRITE_10 && at <= AT_WRITE_90)) {
		unsigned pct = at == AT_WRITE_10 ? 10u : at == AT_WRITE_50 ? 50u : 90u;
		bool rb = at == AT_ROLLBACK;

		pct = rb ? 30u : pct;
		prog = last_event(w, "\"phase\":\"write\"");
		done = data_int(prog, "done");
		total = data_int(prog, "total");
		if (strcmp(s, target[at]) == 0 && total > 0) {
			hit = done * 100 >= total * (long long)pct;
			(void)snprintf(where, size, "%s %lld%%", s, done * 100 / total);
		} else if (!rb && step_order(s) > step_order("write")) {
			hit = true;
		} else if (rb && strcmp(s, "rollback-boot-check") == 0) {
			hit = true;
		}
		json_object_put(prog);
	} else if (at == AT_UNIT_STOPPED) {
		/* right after the stop: the job is between the unit stop and the touch */
		hit = eng_count("stopped klipper-") > 0;
	} else if (at < _AT_MAX && target[at]) {
		hit = step_order(s) >= step_order(target[at]) && step_order(target[at]) >= 0;
	}
	json_object_put(step);
	return hit;
}

/* Datasheet timing where the fault must land inside a step (the write's percentages most),
 * none where the step waits anyway: the matrix fits its time budget. */
static double
cell_speed(enum at at)
{
	switch (at) {
	case AT_WRITE_10:
	case AT_WRITE_50:
	case AT_WRITE_90:
		return 0.6;
	case AT_TOUCH:
	case AT_WAIT_BOOTLOADER:
	case AT_VERIFY:
	case AT_LEAVE:
	case AT_ROLLBACK:
		return 0.3;
	case AT_GATE:
	case AT_UNIT_STOPPED:
	case AT_BOOT_CHECK:
	case AT_STORM:
	case _AT_MAX:
	default:
		return 0.0;
	}
}

static struct sim_board *
add_board(bool dfu, const char *port, double speed)
{
	struct sim_board_spec spec = {.model = dfu ? "skr-3-h723" : "octopus-f446",
				      .port = port,
				      .mode = SIM_MODE_KLIPPER_APP,
				      .bootloader = dfu ? SIM_BL_STOCK : SIM_BL_KATAPULT,
				      .bootloop = SIM_BOOTLOOP_RECOVER,
				      .speed = speed};

	return sim_board_add(eng_sim(), &spec);
}

/* Polls until the board is up in its app, runs `sha` as far as the daemon knows, and no job
 * runs; 0 or -ETIMEDOUT. */
static int
settle(struct sim_board *b, const char *sha, int timeout_ms)
{
	char buf[128];

	for (int waited = 0; waited < timeout_ms; waited += 100) {
		json_object *st;
		bool idle = false;

		if (sim_board_mode(b) == SIM_MODE_KLIPPER_APP &&
		    strcmp(eng_board_field(sim_board_port(b), "installed_sha256", buf, sizeof(buf)),
			   sha) == 0) {
			st = eng_ctl_json("status", NULL);
			if (st) {
				json_object *jobs;

				idle = json_object_object_get_ex(st, "jobs", &jobs) &&
				       json_object_array_length(jobs) == 0;
				json_object_put(st);
			}
			if (idle)
				return 0;
		}
		sleep_ms(100);
	}
	return -ETIMEDOUT;
}

static const char *
conf_profile(bool dfu, const char *name, const char *port, const char *unit, bool slow_gate)
{
	static char buf[1024];

	(void)snprintf(buf, sizeof(buf),
		       "  { name = \"%s\"; match = { board = \"%s\"; port = \"%s\"; };\n"
		       "    methods = [\"%s\"]; auto_flash = [\"hotplug\", \"queue\"];\n"
		       "    stop_units = [\"%s\"];\n"
		       "    moonraker = \"http://127.0.0.1:%s/%s\"; moonraker_fail_open = true; }",
		       name, dfu ? "skr-3-h723" : "octopus-f446", port, dfu ? "dfu" : "katapult",
		       unit, getenv("SKRFLASH_MATRIX_MR_PORT"), slow_gate ? "slow" : "standby");
	return buf;
}

/* The job's row as the state database holds it right now (the daemon may be dead). */
static void
db_row(long long job, char *step, size_t step_size, char *method, size_t method_size)
{
	char *path = xasprintf("%s/state/skrflash.db", eng_dir());
	sqlite3 *db = NULL;
	sqlite3_stmt *st = NULL;

	(void)snprintf(step, step_size, "?");
	method[0] = 0;
	if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK &&
	    sqlite3_prepare_v2(db, "SELECT step, method FROM jobs WHERE id = ?", -1, &st, NULL) ==
		SQLITE_OK) {
		sqlite3_bind_int64(st, 1, job);
		if (sqlite3_step(st) == SQLITE_ROW) {
			(void)snprintf(step, step_size, "%s", sqlite3_column_text(st, 0));
			(void)snprintf(method, method_size, "%s", sqlite3_column_text(st, 1));
		}
	}
	sqlite3_finalize(st);
	sqlite3_close(db);
	free(path);
}

/* The fault; the job's row is read while it is in force (daemon dead, board off). */
static void
inject(struct sim_board *b, enum fault f, long long job, char *step, size_t step_size, char *method,
       size_t method_size)
{
	if (f == F_KILL) {
		CHECK_EQ_INT(eng_kill(), 128 + SIGKILL);
		db_row(job, step, step_size, method, method_size);
		sleep_ms(env_uint("SKRFLASH_MATRIX_RESTART_MS", 300));
		CHECK_EQ_INT(eng_start(NULL), 0);
		return;
	}
	(void)sim_board_power_off(b);
	sleep_ms(f == F_UNPLUG_1S ? 1000u : 5000u);
	db_row(job, step, step_size, method, method_size);
	(void)sim_board_power_on(b);
}

/* The common assertions of a cell (board b should run img/sha, named version). */
static void
assert_end(struct sim_board *b, const char *unit, const char *sha, const uint8_t *img, size_t len,
	   const char *version, char *call, size_t call_size)
{
	char buf[128], *fw;
	json_object *st, *v;
	struct stat sst;

	CHECK(flash_equals(sim_board_flash(b), sim_board_app_start(b), img, len));
	CHECK_STREQ(sim_board_app_version(b), version);
	CHECK_STREQ(eng_board_field(sim_board_port(b), "installed_sha256", buf, sizeof(buf)), sha);
	last_unit_call(unit, call, call_size);
	CHECK(strcmp(call, "StopUnit") != 0);
	fprintf(stderr, "last call for %s: %s\n", unit, call[0] ? call : "(none)");
	fw = xasprintf("%s/state/firmware/%s", eng_dir(), sha);
	CHECK_EQ_INT(stat(fw, &sst), 0);
	free(fw);
	st = eng_ctl_json("status", NULL);
	CHECK(st != NULL);
	if (st && json_object_object_get_ex(st, "waiting", &v))
		CHECK_EQ_INT(json_object_get_int(v), 0);
	json_object_put(st);
}

/* Writes "RESULT <verdict> | <where> | <history step> | <outcome>" for the parent. */
static int
run_cell(size_t idx, int argc, char **argv)
{
	const struct cell *c = &cells[idx];
	char name[64], unit[64], where[64] = "-", sha[65], sha_a[65], *path, *path_a = NULL, *out;
	char outcome[160] = "", hstep[48] = "-", method[16] = "", call[32] = "";
	uint8_t *img, *img_a = NULL;
	size_t len, len_a = 0;
	struct sim_board *b;
	struct sim_proc *w;
	struct klipper k;
	bool holder, rollback = c->at == AT_ROLLBACK;
	json_object *hist, *row;
	long long job = -1;
	int r = -1;

	(void)snprintf(name, sizeof(name), "matrix-%zu", idx);
	eng_init(argc, argv, name);
	(void)snprintf(unit, sizeof(unit), "klipper-c%zu-%d.service", idx, (int)getpid());
	eng_write_conf("", conf_profile(c->dfu, "p", "1-1", unit, c->at == AT_GATE));
	/* slow enough that the write has steps to hit, fast enough for the matrix budget */
	b = add_board(c->dfu, "1-1", cell_speed(c->at));
	if (!b || eng_start(NULL) < 0) {
		eng_done();
		return 1;
	}
	CHECK_EQ_INT(eng_wait_board_mode("1-1", "klipper-app", 10000), 0);
	holder = klipper_start(&k, b, unit);
	if (!holder)
		fprintf(stderr, "no cgroup2 hierarchy: the cell runs without a Klipper unit\n");
	w = eng_watch();
	CHECK_EQ_INT(eng_watch_ready(w, "p"), 0);
	if (rollback) {
		/* a known-good image first, then one that crashes at start-up */
		struct sim_fault crash = {.kind = SIM_FAULT_BOOT_FAIL};
		char *flashed;

		path_a = eng_image(b, 0, "v0.13.0-good", 48 * 1024, &img_a, &len_a, sha_a);
		CHECK_EQ_INT(eng_ctl(&out, "queue", "p", path_a, NULL), 0);
		free(out);
		flashed = xasprintf("with %.12s (", sha_a);
		CHECK_EQ_INT(settle(b, sha_a, 60000), 0);
		free(flashed);
		CHECK_EQ_INT(sim_board_set_fault(b, &crash), 0);
	}
	path = eng_image(b, 0, "v0.14.0-new", 48 * 1024, &img, &len, sha);
	CHECK_EQ_INT(eng_ctl(&out, "queue", "--no-wait", "p", path, NULL), 0);
	free(out);
	for (int waited = 0; waited < 60000; waited += 2) {
		if (reached(w, c->at, where, sizeof(where))) {
			r = 0;
			break;
		}
		sleep_ms(2);
	}
	CHECK_EQ_INT(r, 0);
	if (r < 0) {
		printf("RESULT FAIL | never reached (%s) | - | -\n", where);
		fflush(stdout);
		return 1; /* the parent cleans up after a cell */
	}
	fprintf(stderr, "=== injecting %s at %s (job in %s)\n", fault_names[c->fault],
		at_names[c->at], where);
	hist = eng_history();
	job = eng_int(eng_newest_on(hist, "1-1"), "job");
	json_object_put(hist);
	inject(b, c->fault, job, hstep, sizeof(hstep), method, sizeof(method));
	/* the row names the step the job was in when the fault hit, and its method from the
	 * write on */
	CHECK(step_order(hstep) >= step_order("gate") || strncmp(hstep, "rollback-", 9) == 0);
	if (step_order(hstep) >= step_order("write") || strncmp(hstep, "rollback-", 9) == 0)
		CHECK_STREQ(method, c->dfu ? "dfu" : "katapult");
	if (rollback) {
		r = settle(b, sha_a, 60000);
		CHECK_EQ_INT(r, 0);
		assert_end(b, unit, sha_a, img_a, len_a, "v0.13.0-good", call, sizeof(call));
		(void)snprintf(outcome, sizeof(outcome), "known-good %.8s", sha_a);
	} else {
		r = settle(b, sha, 60000);
		CHECK_EQ_INT(r, 0);
		assert_end(b, unit, sha, img, len, "v0.14.0-new", call, sizeof(call));
		(void)snprintf(outcome, sizeof(outcome), "new %.8s", sha);
	}
	hist = eng_history();
	row = eng_history_job(hist, job);
	CHECK(row != NULL);
	CHECK(strcmp(eng_str(row, "step"), "plan") != 0 && eng_str(row, "step")[0]);
	CHECK(strcmp(eng_str(row, "result"), "running") != 0);
	fprintf(stderr, "job %lld: %s at %s, %s\n", job, eng_str(row, "result"),
		eng_str(row, "step"), eng_str(row, "error"));
	(void)snprintf(outcome + strlen(outcome), sizeof(outcome) - strlen(outcome),
		       ", job %s, unit %s", eng_str(row, "result"),
		       !holder	 ? "(no cgroup)"
		       : call[0] ? (strcmp(call, "StartUnit") == 0 ? "started again" : call)
				 : "never stopped");
	json_object_put(hist);
	sim_proc_free(w);
	CHECK_EQ_INT(eng_stop(), 0);
	if (holder)
		klipper_stop(&k);
	printf("RESULT %s | %s | %s | %s\n", harness_failed ? "FAIL" : "ok", where, hstep, outcome);
	fflush(stdout);
	eng_done();
	free(path);
	free(path_a);
	free(img);
	free(img_a);
	TEST_DONE();
}

/* 8 boards power-cycling at random every 20-260 ms while firmware is queued for each: once
 * the storm is over every board ends with its new image, nothing left pending. */
static int
run_storm(size_t idx, int argc, char **argv)
{
	enum { N = 6 };
	struct sim_board *b[N];
	char profiles[N * 512] = "", port[16], name[16], sha[N][65], where[64] = "-";
	uint8_t *img[N];
	size_t len[N];
	char *path[N], *out;
	uint64_t next[N];
	bool off[N];
	uint64_t gap = STORM_GAP_US;
	unsigned seed = 0x5eed1234u, storm_ms = env_uint("SKRFLASH_MATRIX_STORM_MS", 6000);
	int r;

	(void)idx;
	eng_init(argc, argv, "matrix-storm");
	/* the testbed delivers uevents over unix datagram sockets, which queue only
	 * net.unix.max_dgram_qlen (10) datagrams - and umockdev aborts when one is full. In a
	 * network namespace of its own (root, as in CI) the storm raises it to what a kernel
	 * netlink socket with udevd's 128 MiB buffer holds and runs at full pace; elsewhere its
	 * toggles are spread out */
	if (unshare(CLONE_NEWNET) == 0) {
		FILE *q = fopen("/proc/sys/net/unix/max_dgram_qlen", "we");

		if (q && fputs("4096\n", q) >= 0 && fclose(q) == 0)
			gap = 0;
		else if (q)
			fclose(q);
	}
	fprintf(stderr, "storm: toggles at least %llu ms apart\n", (unsigned long long)gap / 1000);
	for (int i = 0; i < N; i++) {
		bool dfu = i >= N / 2;
		size_t l = strlen(profiles);

		(void)snprintf(port, sizeof(port), "1-%d", i + 1);
		(void)snprintf(name, sizeof(name), "s%d", i);
		(void)snprintf(profiles + l, sizeof(profiles) - l,
			       "%s  { name = \"%s\"; match = { board = \"%s\"; port = \"%s\"; };\n"
			       "    methods = [\"%s\"]; auto_flash = [\"hotplug\", \"queue\"]; }",
			       i ? ",\n" : "", name, dfu ? "skr-3-h723" : "octopus-f446", port,
			       dfu ? "dfu" : "katapult");
	}
	eng_write_conf("max_jobs = 2;", profiles);
	for (int i = 0; i < N; i++) {
		(void)snprintf(port, sizeof(port), "1-%d", i + 1);
		b[i] = add_board(i >= N / 2, port, 0.0);
		CHECK(b[i] != NULL);
		if (!b[i]) {
			eng_done();
			return 1;
		}
	}
	if (eng_start(NULL) < 0) {
		eng_done();
		return 1;
	}
	for (int i = 0; i < N; i++) {
		(void)snprintf(port, sizeof(port), "1-%d", i + 1);
		(void)snprintf(name, sizeof(name), "s%d", i);
		CHECK_EQ_INT(eng_wait_board_mode(port, "klipper-app", 10000), 0);
		path[i] = eng_image(b[i], 0, i < N / 2 ? "v0.14.0-storm-k" : "v0.14.0-storm-d",
				    32 * 1024, &img[i], &len[i], sha[i]);
		CHECK_EQ_INT(eng_ctl(&out, "queue", "--no-wait", name, path[i], NULL), 0);
		free(out);
		next[i] = now_monotonic_usec() + 20000u * (unsigned)(i + 1);
		off[i] = false;
	}
	/* each board toggles its power at its own random pace, 20-260 ms; the testbed's uevent
	 * socket holds only net.unix.max_dgram_qlen (10) datagrams and umockdev aborts when it
	 * is full, so toggles are spread at least STORM_GAP_US apart across the boards */
	for (uint64_t end = now_monotonic_usec() + storm_ms * 1000ull, last = 0;
	     now_monotonic_usec() < end;) {
		for (int i = 0; i < N; i++) {
			if (now_monotonic_usec() < next[i] || now_monotonic_usec() - last < gap)
				continue;
			last = now_monotonic_usec();
			if (off[i])
				(void)sim_board_power_on(b[i]);
			else
				(void)sim_board_power_off(b[i]);
			off[i] = !off[i];
			seed = seed * 1103515245u + 12345u;
			next[i] = now_monotonic_usec() + 1000ull * (20u + (seed >> 16) % 241u);
		}
		sleep_ms(5);
	}
	for (int i = 0; i < N; i++)
		if (off[i])
			(void)sim_board_power_on(b[i]);
	r = 0;
	for (int i = 0; i < N; i++) {
		int k = settle(b[i], sha[i], i == 0 ? 90000 : 20000);

		CHECK_EQ_INT(k, 0);
		r |= k;
		CHECK(
		    flash_equals(sim_board_flash(b[i]), sim_board_app_start(b[i]), img[i], len[i]));
	}
	{
		json_object *st = eng_ctl_json("status", NULL), *v;

		CHECK(st != NULL);
		if (st && json_object_object_get_ex(st, "waiting", &v))
			CHECK_EQ_INT(json_object_get_int(v), 0);
		json_object_put(st);
	}
	CHECK_EQ_INT(eng_stop(), 0);
	(void)snprintf(where, sizeof(where), "%u ms, %d boards", storm_ms, N);
	printf("RESULT %s | %s | - | %s\n", harness_failed ? "FAIL" : "ok", where,
	       r == 0 ? "all new" : "some not flashed");
	fflush(stdout);
	eng_done();
	for (int i = 0; i < N; i++) {
		free(path[i]);
		free(img[i]);
	}
	TEST_DONE();
}

/* ---- the parent: cells in parallel, then the table ------------------------------------ */

/* What a cell that did not finish left in the cgroup tree (its Klipper stand-in's group). */
static void
cgroup_cleanup(pid_t cell)
{
	char mnt[512], own[512], *cmd;

	cgroup_base(mnt, sizeof(mnt), own, sizeof(own));
	if (!mnt[0])
		return;
	cmd = xasprintf("d='%s%s/skrflash-matrix-%d'; [ -d \"$d\" ] || exit 0; "
			"for c in \"$d\"/*/; do [ -d \"$c\" ] && rmdir \"$c\"; done; rmdir \"$d\"",
			mnt, own, (int)cell);
	(void)sh_plain(cmd);
	free(cmd);
}

static char *
result_line(const char *log)
{
	uint8_t *data = NULL;
	size_t n = 0;
	char *p, *r = NULL;

	if (read_file(log, 64u << 20, &data, &n) < 0)
		return NULL;
	data = xreallocarray(data, n + 1, 1);
	data[n] = 0;
	p = strstr((char *)data, "RESULT ");
	if (p)
		r = xstrndup(p + 7, strcspn(p + 7, "\n"));
	free(data);
	return r;
}

static void
print_tail(const char *log, size_t lines)
{
	uint8_t *data = NULL;
	size_t n = 0, seen = 0;
	char *p;

	if (read_file(log, 64u << 20, &data, &n) < 0 || n == 0) {
		free(data);
		return;
	}
	for (p = (char *)data + n - 1; p > (char *)data && seen <= lines; p--)
		seen += *p == '\n';
	fprintf(stderr, "----- %s (last %zu lines) -----\n%.*s\n", log, lines,
		(int)((char *)data + n - p), p);
	free(data);
}

int
main(int argc, char **argv)
{
	struct host h;
	unsigned jobs = env_uint("SKRFLASH_MATRIX_JOBS", 8), slot, slots[MAX_CELLS] = {0};
	uint64_t started[MAX_CELLS] = {0},
		 deadline = env_uint("SKRFLASH_MATRIX_CELL_S", 150) * 1000000ull;
	bool slot_busy[MAX_JOBS] = {false};
	const char *only = getenv("SKRFLASH_MATRIX_ONLY");
	pid_t pids[MAX_CELLS] = {0};
	int status[MAX_CELLS];
	char logdir[] = "/tmp/skrflash-matrix-logs-XXXXXX", *logs[MAX_CELLS] = {0};
	size_t next = 0, running = 0;
	uint64_t t0 = now_monotonic_usec();

	/* The matrix is about durability, not privileges: its host (a private bus with
	 * fake_systemd, cgroups for the Klipper stand-ins) is set up for a daemon running as
	 * the caller. The production-like runs (unprivileged daemon, hidepid /proc) are
	 * test_engine_safety and test_engine_security. Cells inherit this. */
	(void)setenv("SKRTEST_AS_ROOT", "1", 0);

	build_matrix();
	if (jobs > MAX_JOBS)
		jobs = MAX_JOBS;
	if (argc >= 3 && strcmp(argv[1], "--cell") == 0) {
		size_t idx = (size_t)strtoul(argv[2], NULL, 10);

		if (idx >= n_cells)
			return 2;
		return cells[idx].at == AT_STORM ? run_storm(idx, argc, argv)
						 : run_cell(idx, argc, argv);
	}
	CHECK_EQ_INT(host_start(&h), 0);
	CHECK(mkdtemp(logdir) != NULL);
	for (size_t i = 0; i < n_cells; i++)
		status[i] = -1;
	while (next < n_cells || running > 0) {
		while (next < n_cells && running < (jobs ? jobs : 1)) {
			size_t i = next++;
			pid_t pid;

			if (only && *only && (size_t)strtoul(only, NULL, 10) != i)
				continue;
			logs[i] = xasprintf("%s/cell-%zu.log", logdir, i);
			for (slot = 0; slot < MAX_JOBS - 1 && slot_busy[slot]; slot++)
				;
			pid = fork();
			if (pid == 0) {
				char num[24], base[24];

				(void)setpgid(0, 0); /* the parent can end the whole cell */
				int fd =
				    open(logs[i], O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

				(void)snprintf(num, sizeof(num), "%zu", i);
				/* apart from each other and from other tests' ttyACM0..: a tty's
				 * holder is found by its device number in the real /proc */
				(void)snprintf(base, sizeof(base), "%u",
					       cells[i].at == AT_STORM ? 50u : 8u + slot * 5u);
				setenv("SKRSIM_TTY_BASE", base, 1);
				if (fd < 0 || dup2(fd, STDOUT_FILENO) < 0 ||
				    dup2(fd, STDERR_FILENO) < 0)
					_exit(127);
				execl("/proc/self/exe", argv[0], "--cell", num, (char *)NULL);
				_exit(127);
			}
			pids[i] = pid;
			started[i] = now_monotonic_usec();
			slots[i] = slot;
			slot_busy[slot] = pid > 0;
			running += pid > 0;
		}
		if (running > 0) {
			int st;
			pid_t done = waitpid(-1, &st, WNOHANG);

			/* a cell past its deadline is ended, with everything it started */
			for (size_t i = 0; done == 0 && i < n_cells; i++)
				if (pids[i] > 0 && now_monotonic_usec() - started[i] > deadline) {
					fprintf(stderr, "cell %zu: past its deadline, ended\n", i);
					(void)kill(-pids[i], SIGKILL);
				}
			if (done == 0)
				sleep_ms(50);

			for (size_t i = 0; done > 0 && i < n_cells; i++)
				if (pids[i] == done) {
					status[i] =
					    WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
					if (status[i] != 0)
						cgroup_cleanup(pids[i]);
					pids[i] = 0;
					slot_busy[slots[i]] = false;
					running--;
				}
		}
	}
	fprintf(stderr, "\nfault matrix (%zu cells, %u at once, %.0f s):\n", n_cells, jobs,
		(double)(now_monotonic_usec() - t0) / 1e6);
	fprintf(stderr, "%-3s %-8s %-16s %-10s %-6s %-24s %-22s %s\n", "#", "board", "step",
		"fault", "result", "hit at", "row step", "board runs");
	for (size_t i = 0; i < n_cells; i++) {
		const struct cell *c = &cells[i];
		char *res, *f[4] = {NULL, NULL, NULL, NULL}, *save = NULL, *tok;
		int nf = 0;

		if (!logs[i])
			continue;
		res = result_line(logs[i]);
		for (tok = res ? strtok_r(res, "|", &save) : NULL; tok && nf < 4;
		     tok = strtok_r(NULL, "|", &save)) {
			while (*tok == ' ')
				tok++;
			tok[strcspn(tok, "\n")] = 0;
			for (size_t l = strlen(tok); l > 0 && tok[l - 1] == ' '; l--)
				tok[l - 1] = 0;
			f[nf++] = tok;
		}
		fprintf(stderr, "%-3zu %-8s %-16s %-10s %-6s %-24s %-22s %s\n", i,
			c->at == AT_STORM ? "both"
			: c->dfu	  ? "dfuse"
					  : "katapult",
			at_names[c->at], c->at == AT_STORM ? "power" : fault_names[c->fault],
			status[i] == 0 && f[0] && strcmp(f[0], "ok") == 0 ? "ok" : "FAIL",
			f[1] ? f[1] : "-", f[2] ? f[2] : "-", f[3] ? f[3] : "(no result)");
		CHECK_EQ_INT(status[i], 0);
		if (status[i] != 0)
			print_tail(logs[i], 120);
		free(res);
	}
	host_stop(&h);
	if (!harness_failed) {
		char *cmd = xasprintf("rm -rf '%s'", logdir);

		(void)sh_plain(cmd);
		free(cmd);
	} else {
		fprintf(stderr, "cell logs kept in %s\n", logdir);
	}
	for (size_t i = 0; i < n_cells; i++)
		free(logs[i]);
	TEST_DONE();
}
