/* SPDX-License-Identifier: GPL-2.0-or-later */
/* test_engine_lib: the bench shared by the flash engine tests (see test_engine_lib.h). */
#include "test_engine_lib.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "flash.h"
#include "hostproc.h"
#include "util.h"

static struct sim *sim;
static struct sim_proc *daemon_proc;
static char *dir, *state, *run, *sock, *conf, *build;

void
eng_init(int argc, char **argv, const char *name)
{
	char *tmpl;

	sim_init(argc, argv);
	build = xstrdup(getenv("BUILD") ? getenv("BUILD") : "build");
	tmpl = xasprintf("/tmp/skrflash-%s-XXXXXX", name);
	if (!mkdtemp(tmpl)) {
		perror("mkdtemp");
		exit(1);
	}
	dir = tmpl;
	state = xasprintf("%s/state", dir);
	run = xasprintf("%s/run", dir);
	sock = xasprintf("%s/control.sock", run);
	conf = xasprintf("%s/skrflash.conf", dir);
	if (sim_prepare_production(dir, state, run) < 0) {
		perror("preparing the production users' directories");
		exit(1);
	}
	sim = sim_new();
}

void
eng_done(void)
{
	char *cmd;

	if (daemon_proc)
		(void)eng_stop();
	sim = sim_free(sim);
	cmd = xasprintf("rm -rf '%s'", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "cannot remove %s\n", dir);
	free(cmd);
	free(state);
	free(run);
	free(sock);
	free(conf);
	free(build);
	free(dir);
}

struct sim *
eng_sim(void)
{
	return sim;
}

const char *
eng_dir(void)
{
	return dir;
}

const char *
eng_build(void)
{
	return build;
}

void
eng_write_conf(const char *globals, const char *profiles)
{
	FILE *f = fopen(conf, "w");

	if (!f) {
		perror(conf);
		exit(1);
	}
	fprintf(f,
		"timeouts = { bootloader = 3.0; boot = 3.0; leave_grace = 1.0; };\n%s\n"
		"profiles = (\n%s\n);\n",
		globals, profiles);
	fclose(f);
	(void)chmod(conf, 0644);
}

int
eng_start(char *const extra_env[])
{
	char *path = xasprintf("%s/skrflashd", build);
	char *args[] = {path,
			(char[]){"-c"},
			conf,
			(char[]){"--state-dir"},
			state,
			(char[]){"--runtime-dir"},
			run,
			(char[]){"--log-level"},
			(char[]){"debug"},
			NULL};
	char **as = sim_as("daemon", dir, args);
	int r;

	daemon_proc = sim_proc_spawn(sim, as, extra_env);
	strv_free(as);
	free(path);
	r = sim_proc_wait_ready(daemon_proc, 10000);
	if (r < 0)
		fprintf(stderr, "skrflashd did not get ready\n");
	return r;
}

struct sim_proc *
eng_daemon(void)
{
	return daemon_proc;
}

int
eng_stop(void)
{
	int r;

	if (!daemon_proc)
		return -ESRCH;
	(void)sim_proc_kill(daemon_proc, SIGTERM);
	r = sim_proc_wait_exit(daemon_proc, 15000);
	daemon_proc = sim_proc_free(daemon_proc);
	return r;
}

int
eng_kill(void)
{
	int r;

	if (!daemon_proc)
		return -ESRCH;
	(void)sim_proc_kill(daemon_proc, SIGKILL);
	r = sim_proc_wait_exit(daemon_proc, 15000);
	daemon_proc = sim_proc_free(daemon_proc);
	return r;
}

int
eng_wait(const char *needle, int timeout_ms)
{
	int r = daemon_proc ? sim_proc_wait_output(daemon_proc, needle, timeout_ms) : -ESRCH;

	if (r < 0)
		fprintf(stderr, "daemon output never said '%s' (%s)\n", needle, strerror(-r));
	return r;
}

size_t
eng_count(const char *needle)
{
	const char *out = daemon_proc ? sim_proc_output(daemon_proc) : "";
	size_t n = 0;

	for (const char *p = out; (p = strstr(p, needle)); p += strlen(needle))
		n++;
	return n;
}

size_t
eng_proc_count(struct sim_proc *p, const char *needle)
{
	const char *out = p ? sim_proc_output(p) : "";
	size_t n = 0;

	for (const char *q = out; (q = strstr(q, needle)); q += strlen(needle))
		n++;
	return n;
}

int
eng_proc_wait_count(struct sim_proc *p, const char *needle, size_t n, int timeout_ms)
{
	struct timespec tick = {.tv_sec = 0, .tv_nsec = 5000000};

	/* sim_proc only waits for the first occurrence: look again as the output grows */
	for (int waited = 0; waited <= timeout_ms; waited += 5) {
		if (eng_proc_count(p, needle) >= n)
			return 0;
		nanosleep(&tick, NULL);
	}
	fprintf(stderr, "output never said '%s' %zu times\n", needle, n);
	return -ETIMEDOUT;
}

int
eng_wait_count(const char *needle, size_t n, int timeout_ms)
{
	return eng_proc_wait_count(daemon_proc, needle, n, timeout_ms);
}

int
eng_watch_ready(struct sim_proc *w, const char *profile)
{
	/* only firmware and job events reach watchers: drop a file the queue rejects until
	 * the watcher reports the rejection */
	for (unsigned i = 0; i < 10; i++) {
		char *tmp = xasprintf("%s/queue/.probe%u.tmp", state, i);
		char *dst = xasprintf("%s/queue/%s/probe%u.bin", state, profile, i);
		int r = write_file_atomic(tmp, "not firmware", 12, 0644);

		if (r >= 0)
			r = rename(tmp, dst) < 0 ? -errno : 0;
		free(tmp);
		free(dst);
		if (r < 0) {
			fprintf(stderr, "cannot drop a probe into the queue: %s\n", strerror(-r));
			return r;
		}
		if (sim_proc_wait_output(w, "firmware-rejected", 2000) == 0)
			return 0;
	}
	return -ETIMEDOUT;
}

char *
eng_line(const char *needle)
{
	const char *out = daemon_proc ? sim_proc_output(daemon_proc) : "";
	const char *p = strstr(out, needle), *start, *end;

	if (!p)
		return NULL;
	for (start = p; start > out && start[-1] != '\n'; start--)
		;
	end = strchrnul(p, '\n');
	return xstrndup(start, (size_t)(end - start));
}

static char **
ctl_argv(bool json, const char *arg, va_list ap)
{
	char **v = xnew_array(char *, 11);
	size_t n = 0;

	v[n++] = xasprintf("%s/skrflashctl", build);
	if (json)
		v[n++] = xstrdup("--json");
	v[n++] = xstrdup("--socket");
	v[n++] = xstrdup(sock);
	v[n++] = xstrdup("--config");
	v[n++] = xstrdup(conf);
	/* the CLI cannot know the daemon's --state-dir */
	v[n++] = xstrdup("--queue-dir");
	v[n++] = xasprintf("%s/queue", state);
	v[n] = NULL;
	v = strv_append_va(v, arg, ap);
	{
		/* the CLI as an operator, as the daemon as its user */
		char **as = sim_as("member", dir, v);

		strv_free(v);
		return as;
	}
}

int
eng_ctl(char **ret_out, const char *arg, ...)
{
	va_list ap;
	char **v;
	int r;

	va_start(ap, arg);
	v = ctl_argv(false, arg, ap);
	va_end(ap);
	r = sim_run(sim, v, 20000, ret_out);
	strv_free(v);
	return r;
}

json_object *
eng_ctl_json(const char *arg, ...)
{
	json_object *o = NULL;
	char *out = NULL;
	va_list ap;
	char **v;
	int r;

	va_start(ap, arg);
	v = ctl_argv(true, arg, ap);
	va_end(ap);
	r = sim_run(sim, v, 20000, &out);
	if (r == 0 && out)
		o = json_tokener_parse(out);
	if (!o)
		fprintf(stderr, "skrflashctl --json %s exited %d: %s\n", arg, r,
			out ? out : "(nothing)");
	strv_free(v);
	free(out);
	return o;
}

struct sim_proc *
eng_watch(void)
{
	char **v = xnew_array(char *, 6);
	struct sim_proc *p;

	v[0] = xasprintf("%s/skrflashctl", build);
	v[1] = xstrdup("--json");
	v[2] = xstrdup("--socket");
	v[3] = xstrdup(sock);
	v[4] = xstrdup("watch");
	{
		char **as = sim_as("member", dir, v);

		p = sim_proc_spawn(sim, as, NULL);
		strv_free(as);
	}
	strv_free(v);
	return p;
}

json_object *
eng_board(const char *port)
{
	json_object *boards = eng_ctl_json("boards", NULL), *ret = NULL;

	for (size_t i = 0; boards && i < json_object_array_length(boards); i++) {
		json_object *b = json_object_array_get_idx(boards, i);

		if (strcmp(eng_str(b, "port"), port) == 0) {
			ret = json_object_get(b);
			break;
		}
	}
	json_object_put(boards);
	return ret;
}

const char *
eng_board_field(const char *port, const char *key, char *buf, size_t size)
{
	json_object *b = eng_board(port);

	(void)str_copy(buf, size, eng_str(b, key));
	json_object_put(b);
	return buf;
}

int
eng_wait_board_mode(const char *port, const char *mode, int timeout_ms)
{
	struct timespec tick = {.tv_sec = 0, .tv_nsec = 50000000};

	/* the board's state, not a log line: a board back after the leave grace is logged as
	 * "left" + "appeared" rather than as a mode change, and both are right */
	for (int waited = 0; waited <= timeout_ms; waited += 50) {
		json_object *b = eng_board(port);
		bool there = strcmp(eng_str(b, "mode"), mode) == 0 &&
			     strcmp(eng_str(b, "present"), "true") == 0;

		json_object_put(b);
		if (there)
			return 0;
		nanosleep(&tick, NULL);
	}
	fprintf(stderr, "the daemon never saw the board on port %s in %s mode\n", port, mode);
	return -ETIMEDOUT;
}

json_object *
eng_history(void)
{
	return eng_ctl_json("history", "--limit", "100", NULL);
}

json_object *
eng_history_job(json_object *history, long long id)
{
	for (size_t i = 0; history && i < json_object_array_length(history); i++) {
		json_object *j = json_object_array_get_idx(history, i);

		if (eng_int(j, "job") == id)
			return j;
	}
	return NULL;
}

const char *
eng_str(json_object *o, const char *key)
{
	json_object *v;

	if (!o || !json_object_object_get_ex(o, key, &v) || !v)
		return "";
	return json_object_get_string(v);
}

long long
eng_int(json_object *o, const char *key)
{
	json_object *v;

	if (!o || !json_object_object_get_ex(o, key, &v) || !v)
		return -1;
	return (long long)json_object_get_int64(v);
}

char *
eng_image(struct sim_board *b, uint32_t app_start, const char *name, size_t size, uint8_t **ret_img,
	  size_t *ret_len, char ret_sha[65])
{
	const struct catalog_board *m = sim_board_model(b);
	char *path = xasprintf("%s/%s.bin", dir, name);
	uint8_t *img;
	size_t len;

	img = sim_image_klipper(m->mcu, app_start ? app_start : sim_board_app_start(b), name, size,
				&len);
	if (write_file_atomic(path, img, len, 0644) < 0) {
		fprintf(stderr, "cannot write %s\n", path);
		exit(1);
	}
	sha256_hex(img, len, ret_sha);
	*ret_img = img;
	*ret_len = len;
	return path;
}

uint8_t *
eng_flash_copy(struct sim_board *b, uint32_t from, uint32_t to)
{
	uint8_t *buf = xmalloc(to > from ? to - from : 1);

	if (to > from && flash_read(sim_board_flash(b), from, buf, to - from) < 0)
		memset(buf, 0, to - from);
	return buf;
}

uint64_t
eng_erases(struct sim_board *b)
{
	struct flash *f = sim_board_flash(b);
	uint64_t n;

	pthread_mutex_lock(&f->lock);
	n = f->total_erases;
	pthread_mutex_unlock(&f->lock);
	return n;
}

struct sim_board *
eng_add(const char *model, const char *port, enum sim_mode mode, bool katapult)
{
	struct sim_board_spec spec = {.model = model,
				      .port = port,
				      .mode = mode,
				      .bootloader = katapult ? SIM_BL_KATAPULT : SIM_BL_STOCK,
				      .bootloop = SIM_BOOTLOOP_RECOVER};
	struct sim_board *b = sim_board_add(sim, &spec);

	if (!b)
		fprintf(stderr, "cannot add %s on %s\n", model, port);
	return b;
}

json_object *
eng_newest_on(json_object *hist, const char *port)
{
	for (size_t i = 0; hist && i < json_object_array_length(hist); i++) {
		json_object *r = json_object_array_get_idx(hist, i);

		if (strcmp(eng_str(r, "port"), port) == 0)
			return r;
	}
	return NULL;
}

int
eng_sh_plain(const char *script)
{
	char *copy = xstrdup(script);
	char *argv[] = {(char[]){"sh"}, (char[]){"-c"}, copy, NULL};
	pid_t pid = hostproc_spawn(argv, NULL, NULL);
	int st;

	free(copy);
	if (pid < 0 || waitpid(pid, &st, 0) < 0)
		return -1;
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

char *
eng_cgroup_dir(const char *tag, pid_t pid)
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
			(void)str_copy(own, sizeof(own), strcmp(line + 3, "/") ? line + 3 : "");
		}
	if (f)
		fclose(f);
	if (!mnt[0])
		return NULL;
	return xasprintf("%s%s/skrflash-%s-%d", mnt, own, tag, (int)pid);
}

pid_t
eng_fake_start(const char *role, char *const argv[], int *ret_in, char *port, size_t size)
{
	char **as = role ? sim_as(role, dir, argv) : NULL;
	pid_t pid = hostproc_fake(as ? as : argv, ret_in, port, size);

	strv_free(as);
	return pid;
}

static int
bus_conf(const char *path, const char *dir_)
{
	FILE *f = fopen(path, "w");

	if (!f)
		return -errno;
	fprintf(f,
		"<!DOCTYPE busconfig PUBLIC \"-//freedesktop//DTD D-Bus Bus Configuration "
		"1.0//EN\"\n \"http://www.freedesktop.org/standards/dbus/1.0/"
		"busconfig.dtd\">\n<busconfig><type>session</type>"
		"<listen>unix:dir=%s</listen><auth>EXTERNAL</auth>"
		/* the daemon may run as its own user (sim_as): any user may connect */
		"<policy context=\"default\"><allow user=\"*\"/>"
		"<allow send_destination=\"*\" "
		"eavesdrop=\"true\"/><allow eavesdrop=\"true\"/><allow own=\"*\"/>"
		"</policy></busconfig>\n",
		dir_);
	return fclose(f) == 0 ? 0 : -errno;
}

/* dbus-daemon on dir's bus.conf; its address in bus->addr. */
static int
bus_daemon(struct eng_bus *bus, const char *dir_)
{
	char *conf_path = xasprintf("%s/bus.conf", dir_),
	     *cf = xasprintf("--config-file=%s", conf_path);
	char *a[] = {(char[]){"dbus-daemon"}, cf, (char[]){"--nofork"},
		     (char[]){"--print-address=1"}, NULL};
	/* the bus must know the daemon's user, as the system's user database does */
	char **as = sim_as("system", dir_, a);
	int out = -1, r = bus_conf(conf_path, dir_);

	if (r >= 0) {
		bus->bus = hostproc_spawn(as, NULL, &out);
		r = bus->bus > 0 && hostproc_read_line(out, bus->addr, sizeof(bus->addr)) == 0
			? 0
			: -EIO;
	}
	if (out >= 0)
		close(out);
	if (r < 0)
		fprintf(stderr, "no private bus: %s\n", strerror(-r));
	strv_free(as);
	free(cf);
	free(conf_path);
	return r;
}

/* fake_systemd on the bus; returns once it says it is ready. */
static int
bus_fake_systemd(struct eng_bus *bus, const char *dir_, const char *cgroups)
{
	char *fifo = xasprintf("%s/ready", dir_), *path;
	char ready[16] = "";
	int fd = -1, r = 0;

	path = xasprintf("%s/tests/integration/fake_systemd",
			 getenv("BUILD") ? getenv("BUILD") : "build");
	/* a fake that cannot start would leave the open below waiting for a writer forever */
	if (mkfifo(fifo, 0600) < 0 || access(path, X_OK) < 0)
		r = -errno;
	if (r >= 0) {
		char *a[] = {path, bus->calls, fifo, NULL};

		/* StopUnit ends the unit's processes there, as systemd ends Klipper */
		if (cgroups)
			setenv("FAKE_SYSTEMD_CGROUPS", cgroups, 1);
		bus->fake = hostproc_spawn(a, NULL, NULL);
		fd = bus->fake > 0 ? open(fifo, O_RDONLY | O_CLOEXEC) : -1;
		if (fd < 0 || hostproc_read_line(fd, ready, sizeof(ready)) < 0 ||
		    strcmp(ready, "ready") != 0)
			r = -EIO;
	}
	if (fd >= 0)
		close(fd);
	if (r < 0)
		fprintf(stderr, "%s did not get ready: %s\n", path, strerror(-r));
	free(path);
	free(fifo);
	return r;
}

int
eng_bus_start(struct eng_bus *bus, const char *dir_, const char *cgroups)
{
	int r;

	memset(bus, 0, sizeof(*bus));
	bus->calls = xasprintf("%s/calls.log", dir_);
	r = bus_daemon(bus, dir_);
	if (r < 0)
		return r;
	setenv("DBUS_SYSTEM_BUS_ADDRESS", bus->addr, 1);
	return bus_fake_systemd(bus, dir_, cgroups);
}

void
eng_bus_stop(struct eng_bus *bus)
{
	if (bus->fake > 0)
		(void)kill(bus->fake, SIGTERM);
	if (bus->bus > 0)
		(void)kill(bus->bus, SIGTERM);
	if (bus->fake > 0)
		(void)waitpid(bus->fake, NULL, 0);
	if (bus->bus > 0)
		(void)waitpid(bus->bus, NULL, 0);
	free(bus->calls);
	memset(bus, 0, sizeof(*bus));
}

char *
eng_tty_node(struct sim_board *b, const char *name)
{
	char *node = xasprintf("%s/%s", dir, name);
	struct stat st;

	if (stat(sim_board_tty(b), &st) < 0 || mknod(node, S_IFCHR | 0600, st.st_rdev) < 0) {
		int e = errno;

		free(node);
		errno = e;
		return NULL;
	}
	return node;
}

pid_t
eng_hold_tty(struct sim_board *b, const char *node, const char *role, bool lock, int *ret_in)
{
	/* as root the holder is seen through /proc/PID/fd; in production mode (another uid, the
	 * daemon cannot see it) through its lock, taken as Klipper takes it: pyserial's
	 * exclusive=True is flock(LOCK_EX | LOCK_NB) on the open tty (klippy/serialhdl.py) */
	char locking[] = "import fcntl, os, sys\n"
			 "fd = os.open(sys.argv[1], os.O_PATH)\n"
			 "t = os.open(sys.argv[2], os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)\n"
			 "fcntl.flock(t, fcntl.LOCK_EX | fcntl.LOCK_NB)\n"
			 "print('holding', flush=True)\n"
			 "sys.stdin.read()\n";
	char plain[] = "import os, sys\n"
		       "fd = os.open(sys.argv[1], os.O_PATH)\n"
		       "print('holding', flush=True)\n"
		       "sys.stdin.read()\n";
	char pts[256], line[32] = "", *node_copy = xstrdup(node);
	/* the pty behind the testbed's tty, which the holder opens outside the preload */
	ssize_t pl = readlink(sim_board_tty(b), pts, sizeof(pts) - 1);
	char *a[] = {(char[]){"python3"}, (char[]){"-c"},    lock ? locking : plain,
		     node_copy,		  lock ? pts : NULL, NULL};
	char **as;
	int out = -1;
	pid_t pid;

	if (lock && pl <= 0) {
		free(node_copy);
		return -EIO;
	}
	pts[pl > 0 ? pl : 0] = 0;
	as = role ? sim_as(role, dir, a) : NULL;
	pid = hostproc_spawn(as ? as : a, ret_in, &out);
	strv_free(as);
	if (pid > 0 &&
	    (hostproc_read_line(out, line, sizeof(line)) < 0 || strcmp(line, "holding"))) {
		fprintf(stderr, "the tty holder did not say it holds %s\n", node);
		pid = -EIO;
	}
	if (out >= 0)
		close(out);
	free(node_copy);
	return pid;
}
