/* SPDX-License-Identifier: GPL-2.0-or-later */
/* test_engine_security: the control socket against local users, with the unmodified daemon running
 * as in production (tests/integration/as-user): a watcher that cannot be written to while its
 * own request starts a job (use-after-free), an operator whose group is only supplementary
 * (SO_PEERGROUPS) and a user outside it, one user's idle connections (per-user limit, root
 * keeps its slots, idle timeout), clients that never read (memory bound), and a flood of
 * requests and drops (the longest gap between watchdog pings).
 *
 * The figures it prints (watchdog gap, RSS) are measurements, not assertions: the bounds it
 * checks are a multiple of what the daemon needs, far below what the faults produced. */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "flash.h"
#include "harness.h"
#include "test_engine_lib.h"
#include "util.h"

#define PER_UID 8 /* control.c MAX_PER_UID */

static char *sock_path;

static int
connect_plain(void)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	(void)str_copy(sa.sun_path, sizeof(sa.sun_path), sock_path);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		close_fd(fd);
		return -1;
	}
	return fd;
}

/* n connections made by a child as `role` (SO_PEERCRED is taken at connect), handed back
 * over SCM_RIGHTS; returns how many arrived. */
static int
connect_as(const char *role, int *fds, int n)
{
	int sp[2], got = 0;
	pid_t pid;

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) < 0)
		return -errno;
	pid = fork();
	if (pid == 0) {
		uid_t uid = sim_role_uid(role);
		gid_t ops = sim_ops_gid();
		bool member = strcmp(role, "member") == 0;

		if (setgroups(member ? 1 : 0, &ops) < 0 || setresgid(uid, uid, uid) < 0 ||
		    setresuid(uid, uid, uid) < 0)
			_exit(1);
		for (int i = 0; i < n; i++) {
			int fd = connect_plain();
			char c[CMSG_SPACE(sizeof(int))] = {0};
			char byte = fd >= 0 ? 'y' : 'n';
			struct iovec iov = {.iov_base = &byte, .iov_len = 1};
			struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1};

			if (fd >= 0) {
				struct cmsghdr *cm;

				m.msg_control = c;
				m.msg_controllen = sizeof(c);
				cm = CMSG_FIRSTHDR(&m);
				cm->cmsg_level = SOL_SOCKET;
				cm->cmsg_type = SCM_RIGHTS;
				cm->cmsg_len = CMSG_LEN(sizeof(int));
				memcpy(CMSG_DATA(cm), &fd, sizeof(int));
			}
			if (sendmsg(sp[1], &m, 0) < 0)
				_exit(1);
			close_fd(fd);
		}
		_exit(0);
	}
	close(sp[1]);
	for (int i = 0; i < n; i++) {
		char c[CMSG_SPACE(sizeof(int))], byte;
		struct iovec iov = {.iov_base = &byte, .iov_len = 1};
		struct msghdr m = {.msg_iov = &iov,
				   .msg_iovlen = 1,
				   .msg_control = c,
				   .msg_controllen = sizeof(c)};
		struct cmsghdr *cm;

		if (recvmsg(sp[0], &m, MSG_CMSG_CLOEXEC) <= 0)
			break;
		cm = CMSG_FIRSTHDR(&m);
		if (byte == 'y' && cm && cm->cmsg_type == SCM_RIGHTS)
			memcpy(&fds[got++], CMSG_DATA(cm), sizeof(int));
	}
	close(sp[0]);
	(void)waitpid(pid, NULL, 0);
	return got;
}

static int
send_all(int fd, const char *s)
{
	size_t len = strlen(s);

	return send(fd, s, len, MSG_NOSIGNAL) == (ssize_t)len ? 0 : -EIO;
}

/* one line from fd within timeout_ms; "" on EOF, NULL on timeout */
static char *
read_line_fd(int fd, int timeout_ms)
{
	char buf[8192];
	size_t n = 0;

	while (n + 1 < sizeof(buf)) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		ssize_t r;

		if (poll(&p, 1, timeout_ms) <= 0)
			return NULL;
		r = recv(fd, buf + n, 1, 0);
		if (r <= 0)
			break;
		if (buf[n] == '\n')
			break;
		n++;
	}
	buf[n] = 0;
	return xstrdup(buf);
}

static long
rss_kib(void)
{
	char *path = xasprintf("/proc/%d/status", sim_proc_pid(eng_daemon())), line[256];
	FILE *f = fopen(path, "re");
	long kib = -1;

	while (f && fgets(line, sizeof(line), f))
		if (strncmp(line, "VmRSS:", 6) == 0)
			kib = strtol(line + 6, NULL, 10);
	if (f)
		fclose(f);
	free(path);
	return kib;
}

/* skrflashctl as root, outside the production roles: the admin's view */
static int
root_ctl(const char *cmd)
{
	char *ctl = xasprintf("%s/skrflashctl", eng_build());
	char **v = strv_new(ctl, "--socket", sock_path, cmd, NULL);
	int r = sim_run(eng_sim(), v, 20000, NULL);

	strv_free(v);
	free(ctl);
	return r;
}

/* High 1: `watch`, shut the read side, `flash`: the job-started broadcast cannot be sent to
 * that watcher, which is the client whose request is being answered. */
static void
test_watcher_dropped_in_its_own_request(struct sim_board *b)
{
	uint8_t *img;
	size_t len;
	char sha[65], *out = NULL, *line;
	char *path = eng_image(b, 0, "v0.13.0-uaf", 16 * 1024, &img, &len, sha);
	char *needle = xasprintf("flashed octopus-f446 on port 1-1 with %.12s", sha);
	int fd;

	CHECK_EQ_INT(eng_ctl(&out, "queue", "sec", path, NULL), 0);
	free(out);
	fd = connect_plain(); /* now: an idle client is closed after timeouts.client_idle */
	CHECK(fd >= 0);
	CHECK_EQ_INT(send_all(fd, "{\"command\":\"watch\"}\n"), 0);
	line = read_line_fd(fd, 10000);
	CHECK(line && strstr(line, "\"watching\":true"));
	free(line);
	CHECK_EQ_INT(shutdown(fd, SHUT_RD), 0);
	CHECK_EQ_INT(send_all(fd, "{\"command\":\"flash\",\"board\":\"1-1\"}\n"), 0);
	CHECK_EQ_INT(eng_wait(needle, 30000), 0);
	CHECK_EQ_INT(eng_ctl(NULL, "status", NULL), 0);
	CHECK(flash_equals(sim_board_flash(b), sim_board_app_start(b), img, len));
	close_fd(fd);
	free(needle);
	free(path);
	free(img);
}

/* Medium 4: the operators' group as a supplementary group is enough; no group is not. */
static void
test_access(void)
{
	int fd = -1;
	char *line;

	CHECK_EQ_INT(eng_ctl(NULL, "status", NULL), 0); /* eng_ctl runs as the member */
	/* the socket (0660, the operators' group) keeps the outsider out; were it reachable,
	 * the daemon would refuse it */
	if (connect_as("outsider", &fd, 1) == 1) {
		CHECK_EQ_INT(send_all(fd, "{\"command\":\"status\"}\n"), 0);
		line = read_line_fd(fd, 10000);
		CHECK(line && strstr(line, "permission denied"));
		free(line);
		close_fd(fd);
	}
}

/* Medium 6: one user's idle connections: a few are taken, the rest refused with a reason,
 * root still gets in, and the taken ones are closed once idle. */
static void
test_idle_connections(void)
{
	int fds[3 * PER_UID], n, refused = 0, closed = 0;
	bool was_refused[3 * PER_UID] = {false};

	n = connect_as("member", fds, 3 * PER_UID);
	CHECK_EQ_INT(n, 3 * PER_UID);
	for (int i = 0; i < n; i++) {
		char *line = read_line_fd(fds[i], 1000);

		if (line && strstr(line, "too many connections from this user"))
			was_refused[i] = true;
		refused += was_refused[i];
		free(line);
	}
	fprintf(stderr, "idle connections of one operator: %d of %d refused\n", refused, n);
	CHECK_EQ_INT(refused, 2 * PER_UID);
	CHECK_EQ_INT(root_ctl("status"), 0);
	/* timeouts.client_idle = 2: every accepted one is closed by the daemon */
	for (int i = 0; i < n; i++) {
		char *line = was_refused[i] ? NULL : read_line_fd(fds[i], 15000);

		if (line && !*line)
			closed++;
		free(line);
		close(fds[i]);
	}
	CHECK_EQ_INT(closed, PER_UID);
}

/* Medium 6: clients that send requests and never read the answers */
static void
test_clients_that_never_read(void)
{
	enum { CLIENTS = 24, REQUESTS = 3000 };
	static const char req[] = "{\"command\":\"boards\",\"all\":true}\n";
	int fds[CLIENTS];
	long before = rss_kib(), after;
	struct timespec t0, t;

	for (int i = 0; i < CLIENTS; i++) {
		fds[i] = connect_plain();
		CHECK(fds[i] >= 0);
		if (fds[i] >= 0)
			(void)fcntl(fds[i], F_SETFL, O_NONBLOCK);
	}
	clock_gettime(CLOCK_MONOTONIC, &t0);
	/* write as much as the daemon takes, for at most ~5 s */
	for (int sent = 0; sent < REQUESTS; sent++) {
		for (int i = 0; i < CLIENTS; i++)
			if (fds[i] >= 0)
				(void)!send(fds[i], req, sizeof(req) - 1, MSG_NOSIGNAL);
		clock_gettime(CLOCK_MONOTONIC, &t);
		if (t.tv_sec - t0.tv_sec > 5)
			break;
	}
	sleep(2);
	after = rss_kib();
	fprintf(stderr, "RSS with %d clients that never read: %ld KiB -> %ld KiB\n", CLIENTS,
		before, after);
	/* under ASan freed memory stays in its quarantine: only the release build tells */
	if (!getenv("SKRSIM_ASAN_OPTIONS"))
		CHECK(before > 0 && after > 0 && after - before < 32 * 1024);
	CHECK_EQ_INT(root_ctl("status"), 0);
	for (int i = 0; i < CLIENTS; i++)
		close_fd(fds[i]);
}

/* Medium 6: one operator pipelining requests while 300 files are dropped at once */
static void
test_flood(struct sim_board *b)
{
	enum { FILES = 300, REQUESTS = 20000 };
	static const char req[] = "{\"command\":\"history\",\"limit\":10000}\n";
	char *qdir = xasprintf("%s/state/queue/sec", eng_dir()), *paths[FILES];
	int fd = -1, sent = 0;
	uint64_t gap;
	struct timespec t0, t1;

	for (int i = 0; i < FILES; i++) {
		uint8_t *img;
		size_t len;
		char sha[65], *name = xasprintf("flood%03d", i);
		char *path = eng_image(b, 0, name, 4096, &img, &len, sha);
		paths[i] = path; /* renamed in all at once below */
		free(img);
		free(name);
	}
	(void)sim_proc_watchdog_gap_us(eng_daemon(), true);
	/* the daemon may still be closing this user's earlier connections: ask again */
	for (int attempt = 0; attempt < 10; attempt++) {
		char *line;

		CHECK_EQ_INT(connect_as("member", &fd, 1), 1);
		if (send_all(fd, "{\"command\":\"status\"}\n") == 0 &&
		    (line = read_line_fd(fd, 5000)) != NULL) {
			bool ok = strstr(line, "\"ok\":true") != NULL;

			if (!ok)
				fprintf(stderr, "flood client refused: %s\n", line);
			free(line);
			if (ok)
				break;
		}
		fd = close_fd(fd);
		sleep(1);
	}
	CHECK(fd >= 0);
	(void)fcntl(fd, F_SETFL, O_NONBLOCK);
	/* connected last: the client must not sit idle past timeouts.client_idle */
	for (int i = 0; i < FILES; i++) {
		char *dst = xasprintf("%s/%s", qdir, strrchr(paths[i], '/') + 1);

		CHECK_EQ_INT(rename(paths[i], dst), 0);
		free(dst);
		free(paths[i]);
	}
	clock_gettime(CLOCK_MONOTONIC, &t0);
	while (sent < REQUESTS && send(fd, req, sizeof(req) - 1, MSG_NOSIGNAL) > 0)
		sent++;
	/* all picked up, while the loop kept answering others */
	for (int i = 0; i < 600; i++) {
		char *cmd = xasprintf("test -z \"$(ls -A '%s')\"", qdir);
		int empty = system(cmd) == 0;

		free(cmd);
		CHECK_EQ_INT(root_ctl("status"), 0);
		if (empty)
			break;
		usleep(100000);
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	gap = sim_proc_watchdog_gap_us(eng_daemon(), false);
	fprintf(stderr,
		"flood: %d files and %d pipelined requests; all picked up after %.1f s; longest "
		"watchdog gap %.0f ms (WatchdogSec=30s)\n",
		FILES, sent,
		(double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9,
		(double)gap / 1000.0);
	CHECK(gap > 0 && gap < 5 * 1000 * 1000);
	CHECK(sent > 0);
	CHECK_EQ_INT(eng_wait_count("firmware queued: 'flood", FILES, 10000), 0);
	close_fd(fd);
	free(qdir);
}

static void
restart_with(char *const env[])
{
	CHECK_EQ_INT(eng_stop(), 0);
	CHECK_EQ_INT(eng_start(env), 0);
	CHECK_EQ_INT(eng_wait_board_mode("1-1", "klipper-app", 10000), 0);
}

static void
write_exec(const char *path, const char *text)
{
	CHECK_EQ_INT(write_file_atomic(path, text, strlen(text), 0755), 0);
}

/* Low: a worker line without "version" (another version of the worker) crashed the daemon;
 * the worker is the binary the daemon started from, not whatever the path holds later. */
static void
test_worker(struct sim_board *b)
{
	char *fake = xasprintf("%s/fake-worker", eng_dir());
	char *copy = xasprintf("%s/skrflashd-copy", eng_dir());
	char *env_fake = xasprintf("SKRFLASHD_WORKER=%s", fake);
	char *env_copy = xasprintf("SKRFLASHD_WORKER=%s", copy);
	char *src = xasprintf("%s/skrflashd", eng_build()), *out = NULL, *cmd, sha[65];
	uint8_t *img;
	size_t len;
	char *path = eng_image(b, 0, "v0.13.0-worker", 16 * 1024, &img, &len, sha);
	char *needle = xasprintf("flashed octopus-f446 on port 1-1 with %.12s", sha);

	write_exec(fake, "#!/bin/sh\n"
			 "cat >/dev/null\n"
			 "echo '{\"type\":\"reported\",\"mcu\":\"stm32f446xx\"}'\n"
			 "echo '{\"type\":\"result\",\"ok\":false,\"error\":\"fake worker\"}'\n"
			 "exit 1\n");
	{
		char *env[] = {env_fake, NULL};

		restart_with(env);
	}
	CHECK_EQ_INT(eng_ctl(&out, "queue", "sec", path, NULL), 0);
	free(out);
	(void)eng_ctl(NULL, "flash", "1-1", NULL);
	/* the line without "version" (and "app_start") is logged, not a crash */
	CHECK_EQ_INT(eng_wait("bootloader reports stm32f446xx, app start ?", 20000), 0);
	CHECK_EQ_INT(eng_wait("did not come back in a bootloader", 20000), 0);
	CHECK_EQ_INT(eng_ctl(NULL, "status", NULL), 0); /* still alive */

	/* the worker binary replaced after the start: the daemon still runs its own */
	cmd = xasprintf("cp '%s' '%s' && chmod 755 '%s'", src, copy, copy);
	CHECK_EQ_INT(system(cmd), 0);
	free(cmd);
	{
		char *env[] = {env_copy, NULL};

		restart_with(env);
	}
	CHECK_EQ_INT(unlink(copy), 0);
	write_exec(copy, "#!/bin/sh\necho '{\"type\":\"result\",\"ok\":false,"
			 "\"error\":\"a new version\"}'\nexit 1\n");
	(void)eng_ctl(NULL, "flash", "1-1", NULL);
	CHECK_EQ_INT(eng_wait(needle, 30000), 0);
	CHECK(flash_equals(sim_board_flash(b), sim_board_app_start(b), img, len));
	CHECK_EQ_INT(eng_count("a new version"), 0);
	free(needle);
	free(path);
	free(img);
	free(src);
	free(env_fake);
	free(env_copy);
	free(fake);
	free(copy);
}

/* Low: the stored file is hashed again before it is flashed */
static void
test_store_rehash(struct sim_board *b)
{
	uint8_t *img, *before;
	size_t len;
	char sha[65], *out = NULL;
	char *path = eng_image(b, 0, "v0.13.0-rot", 16 * 1024, &img, &len, sha);
	char *stored = xasprintf("%s/state/firmware/%s", eng_dir(), sha);
	FILE *f;

	CHECK_EQ_INT(eng_ctl(&out, "queue", "sec", path, NULL), 0);
	free(out);
	before = eng_flash_copy(b, sim_board_app_start(b), sim_board_app_start(b) + 16 * 1024);
	/* a bit flipped on disk */
	f = fopen(stored, "r+");
	CHECK(f != NULL);
	if (f) {
		fseek(f, 4096, SEEK_SET);
		fputc(img[4096] ^ 0x40, f);
		fclose(f);
	}
	CHECK(eng_ctl(&out, "flash", "1-1", NULL) != 0);
	CHECK(out && strstr(out, "no longer matches its sha256"));
	free(out);
	{
		uint8_t *after =
		    eng_flash_copy(b, sim_board_app_start(b), sim_board_app_start(b) + 16 * 1024);

		CHECK(memcmp(before, after, 16 * 1024) == 0);
		free(after);
	}
	free(before);
	free(stored);
	free(path);
	free(img);
}

/* Medium 3: a board without configuration is gated by Moonraker at its default address
 * whenever one listens there; a refused connection (no Moonraker) lets it go ahead. */
static void
test_zero_config_gate(struct sim_board *b)
{
	char *conf = xasprintf("%s/skrflash.conf", eng_dir()), *out = NULL, sha[65];
	char *needle, *path;
	uint8_t *img, *before;
	size_t len;
	int mr_in = -1;
	pid_t mr;
	char port[16] = "";
	FILE *f;

	{
		char *a[] = {(char[]){"python3"}, (char[]){"tests/integration/fake_moonraker.py"},
			     (char[]){"7125"}, (char[]){"printing"}, NULL};

		/* its stdin is close-on-exec: the daemon started later does not hold it open */
		mr = eng_fake_start(NULL, a, &mr_in, port, sizeof(port));
	}
	if (strncmp(port, "7125", 4) != 0) {
		fprintf(stderr, "SKIP zero-config gate: cannot listen on 127.0.0.1:7125\n");
		goto out;
	}
	f = fopen(conf, "w");
	if (f) {
		fputs("# no profiles: the built-in catalog\n", f);
		fclose(f);
	}
	restart_with(NULL);
	path = eng_image(b, 0, "v0.13.0-zero", 16 * 1024, &img, &len, sha);
	needle = xasprintf("flashed octopus-f446 on port 1-1 with %.12s", sha);
	before = eng_flash_copy(b, sim_board_app_start(b), sim_board_app_start(b) + 16 * 1024);
	CHECK_EQ_INT(eng_ctl(&out, "queue", "octopus-f446", path, NULL), 0);
	free(out);
	(void)eng_ctl(&out, "flash", "1-1", NULL);
	free(out);
	CHECK_EQ_INT(eng_wait("is printing; not flashing", 20000), 0);
	{
		uint8_t *after =
		    eng_flash_copy(b, sim_board_app_start(b), sim_board_app_start(b) + 16 * 1024);

		CHECK(memcmp(before, after, 16 * 1024) == 0);
		free(after);
	}
	/* no Moonraker at all: flashed */
	close(mr_in);
	mr_in = -1;
	(void)waitpid(mr, NULL, 0);
	mr = 0;
	CHECK_EQ_INT(eng_ctl(NULL, "flash", "1-1", NULL), 0);
	CHECK_EQ_INT(eng_wait(needle, 30000), 0);
	CHECK_EQ_INT(eng_wait("no Moonraker listens at http://127.0.0.1:7125", 1000), 0);
	free(before);
	free(needle);
	free(path);
	free(img);
out:
	if (mr_in >= 0)
		close(mr_in);
	if (mr > 0)
		(void)waitpid(mr, NULL, 0);
	free(conf);
}

int
main(int argc, char **argv)
{
	struct sim_board *b;
	char *conf;
	FILE *f;

	eng_init(argc, argv, "security");
	if (!sim_production()) {
		fprintf(stderr, "SKIP: needs root to run the daemon and clients as other users\n");
		eng_done();
		return 0;
	}
	sock_path = xasprintf("%s/run/control.sock", eng_dir());
	conf = xasprintf("%s/skrflash.conf", eng_dir());
	f = fopen(conf, "w");
	CHECK(f != NULL);
	if (f) {
		fputs("timeouts = { bootloader = 3.0; boot = 3.0; leave_grace = 1.0; "
		      "client_idle = 2.0; };\n"
		      "profiles = ( { name = \"sec\"; match = { board = \"octopus-f446\"; "
		      "port = \"1-1\"; }; auto_flash = []; } );\n",
		      f);
		fclose(f);
		(void)chmod(conf, 0644);
	}
	b = eng_add("octopus-f446", "1-1", SIM_MODE_KLIPPER_APP, true);
	{
		char *env[] = {(char[]){"WATCHDOG_USEC=2000000"}, NULL};

		CHECK_EQ_INT(eng_start(env), 0);
	}
	CHECK_EQ_INT(eng_wait_board_mode("1-1", "klipper-app", 10000), 0);
	test_access();
	test_watcher_dropped_in_its_own_request(b);
	test_idle_connections();
	test_clients_that_never_read();
	test_flood(b);
	test_store_rehash(b);
	test_worker(b);
	test_zero_config_gate(b);
	CHECK_EQ_INT(eng_stop(), 0);
	eng_done();
	free(conf);
	free(sock_path);
	TEST_DONE();
}
