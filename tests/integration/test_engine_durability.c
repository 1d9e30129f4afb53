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
#define STORM_BOARDS 6
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

/* ---- the shared host: a private bus with fake_systemd, and a Moonraker ---------------- */

struct host {
	struct eng_bus bus;
	pid_t mr;
	int mr_in;
	char dir[256];
};

static int
host_start(struct host *h)
{
	char port[32];
	int r;

	memset(h, 0, sizeof(*h));
	h->mr_in = -1;
	(void)snprintf(h->dir, sizeof(h->dir), "/tmp/skrflash-matrix-host-XXXXXX");
	if (!mkdtemp(h->dir))
		return -errno;
	r = eng_bus_start(&h->bus, h->dir, NULL);
	if (r < 0)
		return r;
	{
		char *a[] = {(char[]){"python3"}, (char[]){"tests/integration/fake_moonraker.py"},
			     NULL};

		h->mr = eng_fake_start(NULL, a, &h->mr_in, port, sizeof(port));
	}
	if (h->mr <= 0)
		return -EIO;
	setenv("SKRFLASH_MATRIX_MR_PORT", port, 1);
	setenv("SKRFLASH_MATRIX_CALLS", h->bus.calls, 1);
	return 0;
}

static void
host_stop(struct host *h)
{
	char *cmd;

	if (h->mr_in >= 0)
		close(h->mr_in); /* fake_moonraker exits on EOF */
	if (h->mr > 0)
		(void)waitpid(h->mr, NULL, 0);
	eng_bus_stop(&h->bus);
	if (h->dir[0]) {
		cmd = xasprintf("rm -rf '%s'", h->dir);
		(void)eng_sh_plain(cmd);
		free(cmd);
	}
}

/* ---- one cell ------------------------------------------------------------------------ */

struct klipper {
	char *cg;
	char *node;
	pid_t pid;
	int in;
};

/* A stand-in for Klipper in a cgroup named UNIT holding the board's tty (see
 * test_engine_safety: an O_PATH node with the tty's device number); false if the host has
 * no writable cgroup2 hierarchy. */
static bool
klipper_start(struct klipper *k, struct sim_board *b, const char *unit)
{
	char *parent = eng_cgroup_dir("matrix", getpid()), *cmd;
	struct stat st;

	memset(k, 0, sizeof(*k));
	k->in = -1;
	if (!parent || stat(sim_board_tty(b), &st) < 0) {
		free(parent);
		return false;
	}
	k->cg = xasprintf("%s/%s", parent, unit);
	free(parent);
	cmd = xasprintf("mkdir -p '%s' 2>/dev/null", k->cg);
	if (eng_sh_plain(cmd) != 0) {
		free(cmd);
		free(k->cg);
		k->cg = NULL;
		return false;
	}
	free(cmd);
	k->node = eng_tty_node(b, "klipper-tty");
	if (!k->node)
		return false;
	k->pid = eng_hold_tty(b, k->node, NULL, false, &k->in);
	if (k->pid <= 0)
		return false;
	cmd = xasprintf("echo %d > '%s/cgroup.procs'", (int)k->pid, k->cg);
	if (eng_sh_plain(cmd) != 0) {
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
	if (k->pid > 0)
		(void)waitpid(k->pid, NULL, 0);
	if (k->cg) {
		cmd = xasprintf("rmdir '%s' && rmdir \"$(dirname '%s')\"", k->cg, k->cg);
		(void)eng_sh_plain(cmd);
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

/* One cell's run: what it set up, where the fault hit, what it found. */
struct cell_run {
	const struct cell *c;
	char unit[64], where[64], sha[65], sha_a[65];
	char outcome[160], hstep[48], method[16], call[32];
	char *path, *path_a;
	uint8_t *img, *img_a;
	size_t len, len_a;
	struct sim_board *b;
	struct sim_proc *w;
	struct klipper k;
	bool holder;
	long long job;
};

/* The testbed, the daemon, the Klipper stand-in and a subscribed watcher; -errno when the
 * board or the daemon cannot be had. */
static int
cell_start(struct cell_run *cr, size_t idx, int argc, char **argv)
{
	const struct cell *c = cr->c;
	char name[64];

	(void)snprintf(name, sizeof(name), "matrix-%zu", idx);
	eng_init(argc, argv, name);
	(void)snprintf(cr->unit, sizeof(cr->unit), "klipper-c%zu-%d.service", idx, (int)getpid());
	eng_write_conf("", conf_profile(c->dfu, "p", "1-1", cr->unit, c->at == AT_GATE));
	/* slow enough that the write has steps to hit, fast enough for the matrix budget */
	cr->b = add_board(c->dfu, "1-1", cell_speed(c->at));
	if (!cr->b || eng_start(NULL) < 0)
		return -ENODEV;
	CHECK_EQ_INT(eng_wait_board_mode("1-1", "klipper-app", 10000), 0);
	cr->holder = klipper_start(&cr->k, cr->b, cr->unit);
	if (!cr->holder)
		fprintf(stderr, "no cgroup2 hierarchy: the cell runs without a Klipper unit\n");
	cr->w = eng_watch();
	CHECK_EQ_INT(eng_watch_ready(cr->w, "p"), 0);
	return 0;
}

/* Rollback cells: a known-good image first, then one that crashes at start-up. */
static void
cell_known_good(struct cell_run *cr)
{
	struct sim_fault crash = {.kind = SIM_FAULT_BOOT_FAIL};
	char *out;

	cr->path_a =
	    eng_image(cr->b, 0, "v0.13.0-good", 48 * 1024, &cr->img_a, &cr->len_a, cr->sha_a);
	CHECK_EQ_INT(eng_ctl(&out, "queue", "p", cr->path_a, NULL), 0);
	free(out);
	CHECK_EQ_INT(settle(cr->b, cr->sha_a, 60000), 0);
	CHECK_EQ_INT(sim_board_set_fault(cr->b, &crash), 0);
}

/* Queues the new image and waits until the job is where the cell wants its fault. */
static int
cell_queue_until_reached(struct cell_run *cr)
{
	char *out;
	int r = -1;

	cr->path = eng_image(cr->b, 0, "v0.14.0-new", 48 * 1024, &cr->img, &cr->len, cr->sha);
	CHECK_EQ_INT(eng_ctl(&out, "queue", "--no-wait", "p", cr->path, NULL), 0);
	free(out);
	for (int waited = 0; waited < 60000; waited += 2) {
		if (reached(cr->w, cr->c->at, cr->where, sizeof(cr->where))) {
			r = 0;
			break;
		}
		sleep_ms(2);
	}
	CHECK_EQ_INT(r, 0);
	return r;
}

/* The fault, and the row's step and method read while it was in force. */
static void
cell_inject(struct cell_run *cr)
{
	const struct cell *c = cr->c;
	json_object *hist;

	fprintf(stderr, "=== injecting %s at %s (job in %s)\n", fault_names[c->fault],
		at_names[c->at], cr->where);
	hist = eng_history();
	cr->job = eng_int(eng_newest_on(hist, "1-1"), "job");
	json_object_put(hist);
	inject(cr->b, c->fault, cr->job, cr->hstep, sizeof(cr->hstep), cr->method,
	       sizeof(cr->method));
	/* the row names the step the job was in when the fault hit, and its method from the
	 * write on */
	CHECK(step_order(cr->hstep) >= step_order("gate") ||
	      strncmp(cr->hstep, "rollback-", 9) == 0);
	if (step_order(cr->hstep) >= step_order("write") || strncmp(cr->hstep, "rollback-", 9) == 0)
		CHECK_STREQ(cr->method, c->dfu ? "dfu" : "katapult");
}

/* The board ends with the new image, or in rollback cells with the known-good one. */
static void
cell_check_end(struct cell_run *cr)
{
	if (cr->c->at == AT_ROLLBACK) {
		CHECK_EQ_INT(settle(cr->b, cr->sha_a, 60000), 0);
		assert_end(cr->b, cr->unit, cr->sha_a, cr->img_a, cr->len_a, "v0.13.0-good",
			   cr->call, sizeof(cr->call));
		(void)snprintf(cr->outcome, sizeof(cr->outcome), "known-good %.8s", cr->sha_a);
	} else {
		CHECK_EQ_INT(settle(cr->b, cr->sha, 60000), 0);
		assert_end(cr->b, cr->unit, cr->sha, cr->img, cr->len, "v0.14.0-new", cr->call,
			   sizeof(cr->call));
		(void)snprintf(cr->outcome, sizeof(cr->outcome), "new %.8s", cr->sha);
	}
}

/* The job's history row is finished and names a step; its outcome for the table. */
static void
cell_check_row(struct cell_run *cr)
{
	json_object *hist = eng_history(), *row = eng_history_job(hist, cr->job);
	size_t l = strlen(cr->outcome);

	CHECK(row != NULL);
	CHECK(strcmp(eng_str(row, "step"), "plan") != 0 && eng_str(row, "step")[0]);
	CHECK(strcmp(eng_str(row, "result"), "running") != 0);
	fprintf(stderr, "job %lld: %s at %s, %s\n", cr->job, eng_str(row, "result"),
		eng_str(row, "step"), eng_str(row, "error"));
	(void)snprintf(
	    cr->outcome + l, sizeof(cr->outcome) - l, ", job %s, unit %s", eng_str(row, "result"),
	    !cr->holder	  ? "(no cgroup)"
	    : cr->call[0] ? (strcmp(cr->call, "StartUnit") == 0 ? "started again" : cr->call)
			  : "never stopped");
	json_object_put(hist);
}

/* Writes "RESULT <verdict> | <where> | <history step> | <outcome>" for the parent. */
static int
run_cell(size_t idx, int argc, char **argv)
{
	struct cell_run cr = {.c = &cells[idx], .where = "-", .hstep = "-", .job = -1};

	if (cell_start(&cr, idx, argc, argv) < 0) {
		eng_done();
		return 1;
	}
	if (cr.c->at == AT_ROLLBACK)
		cell_known_good(&cr);
	if (cell_queue_until_reached(&cr) < 0) {
		printf("RESULT FAIL | never reached (%s) | - | -\n", cr.where);
		fflush(stdout);
		return 1; /* the parent cleans up after a cell */
	}
	cell_inject(&cr);
	cell_check_end(&cr);
	cell_check_row(&cr);
	sim_proc_free(cr.w);
	CHECK_EQ_INT(eng_stop(), 0);
	if (cr.holder)
		klipper_stop(&cr.k);
	printf("RESULT %s | %s | %s | %s\n", harness_failed ? "FAIL" : "ok", cr.where, cr.hstep,
	       cr.outcome);
	fflush(stdout);
	eng_done();
	free(cr.path);
	free(cr.path_a);
	free(cr.img);
	free(cr.img_a);
	TEST_DONE();
}

/* The storm's boards and what each should end with. */
struct storm {
	struct sim_board *b[STORM_BOARDS];
	char sha[STORM_BOARDS][65];
	uint8_t *img[STORM_BOARDS];
	size_t len[STORM_BOARDS];
	char *path[STORM_BOARDS];
	uint64_t next[STORM_BOARDS]; /* when each board toggles next */
	bool off[STORM_BOARDS];
};

/* The least gap between two toggles. The testbed delivers uevents over unix datagram
 * sockets, which queue only net.unix.max_dgram_qlen (10) datagrams - and umockdev aborts when
 * one is full. In a network namespace of its own (root, as in CI) the storm raises it to
 * what a kernel netlink socket with udevd's 128 MiB buffer holds and runs at full pace;
 * elsewhere its toggles are spread out. */
static uint64_t
storm_gap(void)
{
	uint64_t gap = STORM_GAP_US;

	if (unshare(CLONE_NEWNET) == 0) {
		FILE *q = fopen("/proc/sys/net/unix/max_dgram_qlen", "we");

		if (q && fputs("4096\n", q) >= 0 && fclose(q) == 0)
			gap = 0;
		else if (q)
			fclose(q);
	}
	fprintf(stderr, "storm: toggles at least %llu ms apart\n", (unsigned long long)gap / 1000);
	return gap;
}

/* Half the boards over Katapult, half over ROM DfuSe, two jobs at once. */
static void
storm_conf(void)
{
	char profiles[STORM_BOARDS * 512] = "", port[16], name[16];

	for (int i = 0; i < STORM_BOARDS; i++) {
		bool dfu = i >= STORM_BOARDS / 2;
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
}

static int
storm_add_boards(struct storm *s)
{
	char port[16];

	for (int i = 0; i < STORM_BOARDS; i++) {
		(void)snprintf(port, sizeof(port), "1-%d", i + 1);
		s->b[i] = add_board(i >= STORM_BOARDS / 2, port, 0.0);
		CHECK(s->b[i] != NULL);
		if (!s->b[i])
			return -ENODEV;
	}
	return 0;
}

static void
storm_queue(struct storm *s)
{
	char port[16], name[16], *out;

	for (int i = 0; i < STORM_BOARDS; i++) {
		(void)snprintf(port, sizeof(port), "1-%d", i + 1);
		(void)snprintf(name, sizeof(name), "s%d", i);
		CHECK_EQ_INT(eng_wait_board_mode(port, "klipper-app", 10000), 0);
		s->path[i] = eng_image(s->b[i], 0,
				       i < STORM_BOARDS / 2 ? "v0.14.0-storm-k" : "v0.14.0-storm-d",
				       32 * 1024, &s->img[i], &s->len[i], s->sha[i]);
		CHECK_EQ_INT(eng_ctl(&out, "queue", "--no-wait", name, s->path[i], NULL), 0);
		free(out);
		s->next[i] = now_monotonic_usec() + 20000u * (unsigned)(i + 1);
		s->off[i] = false;
	}
}

/* Each board toggles its power at its own random pace, 20-260 ms, toggles at least `gap`
 * apart across the boards; every board is on again at the end. */
static void
storm_toggle(struct storm *s, uint64_t gap, unsigned storm_ms)
{
	uint64_t *next = s->next;
	bool *off = s->off;
	unsigned seed = 0x5eed1234u;

	for (uint64_t end = now_monotonic_usec() + storm_ms * 1000ull, last = 0;
	     now_monotonic_usec() < end;) {
		for (int i = 0; i < STORM_BOARDS; i++) {
			if (now_monotonic_usec() < next[i] || now_monotonic_usec() - last < gap)
				continue;
			last = now_monotonic_usec();
			if (off[i])
				(void)sim_board_power_on(s->b[i]);
			else
				(void)sim_board_power_off(s->b[i]);
			off[i] = !off[i];
			seed = seed * 1103515245u + 12345u;
			next[i] = now_monotonic_usec() + 1000ull * (20u + (seed >> 16) % 241u);
		}
		sleep_ms(5);
	}
	for (int i = 0; i < STORM_BOARDS; i++)
		if (off[i])
			(void)sim_board_power_on(s->b[i]);
}

/* Every board ends with its new image, nothing left waiting; 0 if all settled. */
static int
storm_check_end(struct storm *s)
{
	json_object *st, *v;
	int r = 0;

	for (int i = 0; i < STORM_BOARDS; i++) {
		int k = settle(s->b[i], s->sha[i], i == 0 ? 90000 : 20000);

		CHECK_EQ_INT(k, 0);
		r |= k;
		CHECK(flash_equals(sim_board_flash(s->b[i]), sim_board_app_start(s->b[i]),
				   s->img[i], s->len[i]));
	}
	st = eng_ctl_json("status", NULL);
	CHECK(st != NULL);
	if (st && json_object_object_get_ex(st, "waiting", &v))
		CHECK_EQ_INT(json_object_get_int(v), 0);
	json_object_put(st);
	return r;
}

/* 8 boards power-cycling at random every 20-260 ms while firmware is queued for each: once
 * the storm is over every board ends with its new image, nothing left pending. */
static int
run_storm(size_t idx, int argc, char **argv)
{
	struct storm s = {0};
	char where[64];
	unsigned storm_ms = env_uint("SKRFLASH_MATRIX_STORM_MS", 6000);
	uint64_t gap;
	int r;

	(void)idx;
	eng_init(argc, argv, "matrix-storm");
	gap = storm_gap();
	storm_conf();
	if (storm_add_boards(&s) < 0 || eng_start(NULL) < 0) {
		eng_done();
		return 1;
	}
	storm_queue(&s);
	storm_toggle(&s, gap, storm_ms);
	r = storm_check_end(&s);
	CHECK_EQ_INT(eng_stop(), 0);
	(void)snprintf(where, sizeof(where), "%u ms, %d boards", storm_ms, STORM_BOARDS);
	printf("RESULT %s | %s | - | %s\n", harness_failed ? "FAIL" : "ok", where,
	       r == 0 ? "all new" : "some not flashed");
	fflush(stdout);
	eng_done();
	for (int i = 0; i < STORM_BOARDS; i++) {
		free(s.path[i]);
		free(s.img[i]);
	}
	TEST_DONE();
}

/* ---- the parent: cells in parallel, then the table ------------------------------------ */

/* What a cell that did not finish left in the cgroup tree (its Klipper stand-in's group). */
static void
cgroup_cleanup(pid_t cell)
{
	char *d = eng_cgroup_dir("matrix", cell), *cmd;

	if (!d)
		return;
	cmd = xasprintf("d='%s'; [ -d \"$d\" ] || exit 0; "
			"for c in \"$d\"/*/; do [ -d \"$c\" ] && rmdir \"$c\"; done; rmdir \"$d\"",
			d);
	(void)eng_sh_plain(cmd);
	free(cmd);
	free(d);
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

/* The cells running in parallel, each in a process group of its own with its log. */
struct pool {
	unsigned jobs, slots[MAX_CELLS];
	uint64_t deadline, started[MAX_CELLS];
	bool slot_busy[MAX_JOBS];
	const char *only;
	pid_t pids[MAX_CELLS];
	int status[MAX_CELLS];
	char logdir[40], *logs[MAX_CELLS];
	size_t next, running;
};

/* The child of a cell: its log, its ttys, then this program again with --cell. */
static void
cell_exec(struct pool *p, size_t i, unsigned slot, const char *argv0)
{
	char num[24], base[24];

	(void)setpgid(0, 0); /* the parent can end the whole cell */
	int fd = open(p->logs[i], O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

	(void)snprintf(num, sizeof(num), "%zu", i);
	/* apart from each other and from other tests' ttyACM0..: a tty's holder is found by
	 * its device number in the real /proc */
	(void)snprintf(base, sizeof(base), "%u", cells[i].at == AT_STORM ? 50u : 8u + slot * 5u);
	setenv("SKRSIM_TTY_BASE", base, 1);
	if (fd < 0 || dup2(fd, STDOUT_FILENO) < 0 || dup2(fd, STDERR_FILENO) < 0)
		_exit(127);
	execl("/proc/self/exe", argv0, "--cell", num, (char *)NULL);
	_exit(127);
}

/* Starts cells while fewer than p->jobs run. */
static void
pool_launch(struct pool *p, const char *argv0)
{
	while (p->next < n_cells && p->running < (p->jobs ? p->jobs : 1)) {
		size_t i = p->next++;
		unsigned slot;
		pid_t pid;

		if (p->only && *p->only && (size_t)strtoul(p->only, NULL, 10) != i)
			continue;
		p->logs[i] = xasprintf("%s/cell-%zu.log", p->logdir, i);
		for (slot = 0; slot < MAX_JOBS - 1 && p->slot_busy[slot]; slot++)
			;
		pid = fork();
		if (pid == 0)
			cell_exec(p, i, slot, argv0);
		p->pids[i] = pid;
		p->started[i] = now_monotonic_usec();
		p->slots[i] = slot;
		p->slot_busy[slot] = pid > 0;
		p->running += pid > 0;
	}
}

/* Collects a cell that ended; a cell past its deadline is ended, with everything it
 * started. */
static void
pool_reap(struct pool *p)
{
	int st;
	pid_t done = waitpid(-1, &st, WNOHANG);

	for (size_t i = 0; done == 0 && i < n_cells; i++)
		if (p->pids[i] > 0 && now_monotonic_usec() - p->started[i] > p->deadline) {
			fprintf(stderr, "cell %zu: past its deadline, ended\n", i);
			(void)kill(-p->pids[i], SIGKILL);
		}
	if (done == 0)
		sleep_ms(50);

	for (size_t i = 0; done > 0 && i < n_cells; i++)
		if (p->pids[i] == done) {
			p->status[i] = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
			if (p->status[i] != 0)
				cgroup_cleanup(p->pids[i]);
			p->pids[i] = 0;
			p->slot_busy[p->slots[i]] = false;
			p->running--;
		}
}

/* One row of the table from the cell's RESULT line; a cell that failed shows its log. */
static void
print_row(struct pool *p, size_t i)
{
	const struct cell *c = &cells[i];
	char *res, *f[4] = {NULL, NULL, NULL, NULL}, *save = NULL, *tok;
	int nf = 0;

	res = result_line(p->logs[i]);
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
		p->status[i] == 0 && f[0] && strcmp(f[0], "ok") == 0 ? "ok" : "FAIL",
		f[1] ? f[1] : "-", f[2] ? f[2] : "-", f[3] ? f[3] : "(no result)");
	CHECK_EQ_INT(p->status[i], 0);
	if (p->status[i] != 0)
		print_tail(p->logs[i], 120);
	free(res);
}

static void
print_table(struct pool *p, uint64_t t0)
{
	fprintf(stderr, "\nfault matrix (%zu cells, %u at once, %.0f s):\n", n_cells, p->jobs,
		(double)(now_monotonic_usec() - t0) / 1e6);
	fprintf(stderr, "%-3s %-8s %-16s %-10s %-6s %-24s %-22s %s\n", "#", "board", "step",
		"fault", "result", "hit at", "row step", "board runs");
	for (size_t i = 0; i < n_cells; i++)
		if (p->logs[i])
			print_row(p, i);
}

int
main(int argc, char **argv)
{
	struct pool p = {.logdir = "/tmp/skrflash-matrix-logs-XXXXXX"};
	struct host h;
	uint64_t t0 = now_monotonic_usec();

	/* The matrix is about durability, not privileges: its host (a private bus with
	 * fake_systemd, cgroups for the Klipper stand-ins) is set up for a daemon running as
	 * the caller. The production-like runs (unprivileged daemon, hidepid /proc) are
	 * test_engine_safety and test_engine_security. Cells inherit this. */
	(void)setenv("SKRTEST_AS_ROOT", "1", 0);

	build_matrix();
	p.jobs = env_uint("SKRFLASH_MATRIX_JOBS", 8);
	p.deadline = env_uint("SKRFLASH_MATRIX_CELL_S", 150) * 1000000ull;
	p.only = getenv("SKRFLASH_MATRIX_ONLY");
	if (p.jobs > MAX_JOBS)
		p.jobs = MAX_JOBS;
	if (argc >= 3 && strcmp(argv[1], "--cell") == 0) {
		size_t idx = (size_t)strtoul(argv[2], NULL, 10);

		if (idx >= n_cells)
			return 2;
		return cells[idx].at == AT_STORM ? run_storm(idx, argc, argv)
						 : run_cell(idx, argc, argv);
	}
	CHECK_EQ_INT(host_start(&h), 0);
	CHECK(mkdtemp(p.logdir) != NULL);
	for (size_t i = 0; i < n_cells; i++)
		p.status[i] = -1;
	while (p.next < n_cells || p.running > 0) {
		pool_launch(&p, argv[0]);
		if (p.running > 0)
			pool_reap(&p);
	}
	print_table(&p, t0);
	host_stop(&h);
	if (!harness_failed) {
		char *cmd = xasprintf("rm -rf '%s'", p.logdir);

		(void)eng_sh_plain(cmd);
		free(cmd);
	} else {
		fprintf(stderr, "cell logs kept in %s\n", p.logdir);
	}
	for (size_t i = 0; i < n_cells; i++)
		free(p.logs[i]);
	TEST_DONE();
}
