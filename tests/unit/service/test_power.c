/* SPDX-License-Identifier: GPL-2.0-or-later */
/* power: power cycles on a real sd-event loop - a command (its environment, output, exit
 * status, a timeout that kills its whole process group, a program that does not exist) and
 * a Moonraker power device against tests/integration/fake_moonraker.py (off then on with the
 * pause between, the print-state gate, Klipper down, a failing or locked device). */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "integration/hostproc.h"
#include "log.h"
#include "service/moonraker.h"
#include "service/power.h"
#include "util.h"

static char dir[] = "/tmp/skrflash-power-XXXXXX";

struct outcome {
	bool done;
	int r;
	char msg[1024];
};

static void
on_done(void *userdata, int r, const char *message)
{
	struct outcome *o = userdata;

	o->done = true;
	o->r = r;
	(void)str_copy(o->msg, sizeof(o->msg), message);
}

/* Runs one cycle to its end on a fresh loop; the elapsed milliseconds in *ret_ms. */
static int
run(const struct config_power *pw, const char *url, bool klipper_stopped, struct outcome *o,
    uint64_t *ret_ms)
{
	struct power_request req = {
	    .power = pw,
	    .board = "octopus-f446",
	    .port = "9-1",
	    .job = "7",
	    .moonraker_url = url,
	    .klipper_stopped = klipper_stopped,
	};
	struct power_cycle *pc = NULL;
	uint64_t t0 = now_monotonic_usec();
	sd_event *loop = NULL;
	sigset_t ss;
	int r;

	memset(o, 0, sizeof(*o));
	sigemptyset(&ss);
	sigaddset(&ss, SIGCHLD);
	(void)sigprocmask(SIG_BLOCK, &ss, NULL);
	if (sd_event_new(&loop) < 0)
		return -ENOMEM;
	r = power_cycle_start(loop, &req, on_done, o, &pc);
	while (r >= 0 && !o->done)
		if (sd_event_run(loop, UINT64_MAX) < 0)
			break;
	power_cycle_free(pc);
	sd_event_unref(loop);
	*ret_ms = (now_monotonic_usec() - t0) / 1000u;
	return r;
}

static char *
script(const char *name, const char *body)
{
	char *path = xasprintf("%s/%s", dir, name);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0755);

	if (fd >= 0) {
		(void)!write(fd, body, strlen(body));
		close(fd);
	}
	return path;
}

static char *
slurp(const char *path)
{
	uint8_t *data = NULL;
	size_t len = 0;

	if (read_file(path, 65536, &data, &len) < 0)
		return xstrdup("");
	data = xreallocarray(data, len + 1, 1);
	data[len] = 0;
	return (char *)data;
}

/* The arguments as configured (one with a blank: no shell splits it), the environment. */
static void
command_runs(void)
{
	char *env_file = xasprintf("%s/env", dir);
	char *ok =
	    script("ok.sh", "#!/bin/sh\n"
			    "echo \"$SKRFLASH_BOARD $SKRFLASH_PORT $SKRFLASH_OFF_SECONDS $1\" "
			    ">\"$2\"\n"
			    "echo 'Sent power off request'\n"
			    "echo 'Sent power on request' >&2\n");
	char *argv_ok[] = {ok, (char[]){"x y"}, env_file, NULL};
	struct config_power pw = {
	    .command = argv_ok, .n_command = 3, .off_ms = 1500, .timeout_ms = 10000};
	struct outcome o;
	uint64_t ms;
	char *env, *want;

	CHECK_EQ_INT(run(&pw, NULL, false, &o, &ms), 0);
	CHECK(o.done);
	CHECK_EQ_INT(o.r, 0);
	want = xasprintf("power command '%s' power-cycled octopus-f446 on port 9-1", ok);
	CHECK_STREQ(o.msg, want);
	free(want);
	env = slurp(env_file);
	CHECK_STREQ(env, "octopus-f446 9-1 1.500 x y\n");
	free(env);
	free(ok);
	free(env_file);
}

/* A failure carries the program's last words; a program that does not exist is a failure
 * with its reason, not a hang. */
static void
command_fails(void)
{
	char *bad = script("bad.sh", "#!/bin/sh\necho 'No compatible devices detected!'\nexit 3\n");
	char *argv_bad[] = {bad, NULL};
	char *argv_none[] = {(char[]){"/nonexistent/uhubctl"}, NULL};
	struct config_power pw = {
	    .command = argv_bad, .n_command = 3, .off_ms = 1500, .timeout_ms = 10000};
	struct outcome o;
	uint64_t ms;

	CHECK_EQ_INT(run(&pw, NULL, false, &o, &ms), 0);
	CHECK_EQ_INT(o.r, -EIO);
	CHECK(strstr(o.msg, "failed for octopus-f446 on port 9-1 (exit status 3: No compatible "
			    "devices detected!)") != NULL);

	pw.command = argv_none;
	CHECK_EQ_INT(run(&pw, NULL, false, &o, &ms), 0);
	CHECK_EQ_INT(o.r, -EIO);
	CHECK(strstr(o.msg, "exit status 127: cannot run /nonexistent/uhubctl: No such file") !=
	      NULL);
	free(bad);
}

/* A hung command is stopped at the timeout, its children with it. */
static void
command_hangs(void)
{
	char *pid_file = xasprintf("%s/pid", dir);
	char *hang = script("hang.sh", "#!/bin/sh\nsleep 60 &\necho $! >\"$1\"\necho waiting\n"
				       "wait\n");
	char *argv_hang[] = {hang, pid_file, NULL};
	struct config_power pw = {
	    .command = argv_hang, .n_command = 3, .off_ms = 1500, .timeout_ms = 1000};
	struct outcome o;
	uint64_t ms;
	char *pid;
	pid_t p;
	bool gone = false;

	CHECK_EQ_INT(run(&pw, NULL, false, &o, &ms), 0);
	CHECK_EQ_INT(o.r, -ETIMEDOUT);
	CHECK(ms >= 900 && ms < 20000);
	CHECK(strstr(o.msg, "did not power-cycle octopus-f446 on port 9-1 within 1.000 s; stopped "
			    "it (last output: waiting)") != NULL);
	pid = slurp(pid_file);
	p = (pid_t)atoi(pid);
	/* reaped by us (the subreaper), or gone: never still sleeping. The group's SIGKILL was
	 * sent, but on a busy machine the sleep may not have died (or become our zombie) yet:
	 * look for up to 5 s */
	for (int i = 0; p > 0 && i < 500 && !gone; i++) {
		(void)waitpid(p, NULL, WNOHANG);
		gone = kill(p, 0) < 0 && errno == ESRCH;
		if (!gone)
			(void)usleep(10000);
	}
	CHECK(p > 0 && gone);
	free(pid);
	free(pid_file);
	free(hang);
}

static void
test_command(void)
{
	command_runs();
	command_fails();
	command_hangs();
}

/* The fake Moonraker, its port, and the pipe whose closing makes it exit. */
static pid_t server_pid;
static int server_stdin = -1;
static unsigned server_port;

static bool
start_server(const char *log_path)
{
	char *copy = xstrdup(log_path);
	char *a[] = {(char[]){"python3"},
		     (char[]){"tests/integration/fake_moonraker.py"},
		     (char[]){"0"},
		     (char[]){"standby"},
		     copy,
		     NULL};
	char port[32];

	server_pid = hostproc_fake(a, &server_stdin, port, sizeof(port));
	server_port = server_pid > 0 ? (unsigned)strtoul(port, NULL, 10) : 0;
	free(copy);
	return server_port > 0;
}

static void
test_moonraker(void)
{
	char *log_path = xasprintf("%s/power.log", dir);
	struct config_power pw = {
	    .moonraker_device = (char[]){"printer psu"}, .off_ms = 700, .timeout_ms = 15000};
	struct outcome o;
	char *url, *got;
	uint64_t ms;
	int status;

	CHECK(start_server(log_path));
	if (server_port == 0)
		return;
	url = xasprintf("http://127.0.0.1:%u", server_port);

	/* off, the pause, on; the device name with a blank travels escaped */
	CHECK_EQ_INT(run(&pw, url, false, &o, &ms), 0);
	CHECK_EQ_INT(o.r, 0);
	CHECK_STREQ(o.msg, "Moonraker power device 'printer psu' power-cycled octopus-f446 on "
			   "port 9-1");
	CHECK(ms >= 700);
	got = slurp(log_path);
	CHECK_STREQ(got, "printer psu off\nprinter psu on\n");
	free(got);
	free(url);

	/* printing: refused before anything is switched */
	(void)unlink(log_path);
	url = xasprintf("http://127.0.0.1:%u/printing", server_port);
	CHECK_EQ_INT(run(&pw, url, false, &o, &ms), 0);
	CHECK_EQ_INT(o.r, -EPERM);
	CHECK(strstr(o.msg, "not power-cycling octopus-f446 through power device 'printer psu': "
			    "printer at") != NULL);
	CHECK(strstr(o.msg, "is printing") != NULL);
	CHECK(access(log_path, F_OK) < 0);
	free(url);

	/* Klipper down (503): refused, unless skrflash holds Klipper stopped itself */
	url = xasprintf("http://127.0.0.1:%u/klippy-down", server_port);
	CHECK_EQ_INT(run(&pw, url, false, &o, &ms), 0);
	CHECK_EQ_INT(o.r, -EPERM);
	CHECK(strstr(o.msg, "did not answer (HTTP status 503)") != NULL);
	CHECK(access(log_path, F_OK) < 0);
	CHECK_EQ_INT(run(&pw, url, true, &o, &ms), 0);
	CHECK_EQ_INT(o.r, 0);
	got = slurp(log_path);
	CHECK_STREQ(got, "printer psu off\nprinter psu on\n");
	free(got);
	free(url);

	/* a device that fails, one that does not switch */
	url = xasprintf("http://127.0.0.1:%u", server_port);
	pw.moonraker_device = (char[]){"broken"};
	CHECK_EQ_INT(run(&pw, url, false, &o, &ms), 0);
	CHECK_EQ_INT(o.r, -EIO);
	CHECK(strstr(o.msg, "did not switch power device 'broken' off: HTTP status 500") != NULL);
	pw.moonraker_device = (char[]){"locked"};
	CHECK_EQ_INT(run(&pw, url, false, &o, &ms), 0);
	CHECK_EQ_INT(o.r, -EIO);
	CHECK(strstr(o.msg, "the device reports \"on\", not \"off\"") != NULL);
	free(url);

	/* nobody listening: fail-closed */
	url = xasprintf("http://127.0.0.1:%u", 1u);
	pw.moonraker_device = (char[]){"printer_psu"};
	CHECK_EQ_INT(run(&pw, url, false, &o, &ms), 0);
	CHECK_EQ_INT(o.r, -EPERM);
	free(url);

	close(server_stdin);
	CHECK_EQ_INT(waitpid(server_pid, &status, 0), server_pid);
	free(log_path);
}

static int
parse(const char *json, char *state, size_t size)
{
	return moonraker_power_parse(json, strlen(json), "psu", state, size);
}

static void
test_parse(void)
{
	char state[16];

	CHECK_EQ_INT(parse("{\"result\":{\"psu\":\"off\"}}", state, sizeof(state)), 0);
	CHECK_STREQ(state, "off");
	CHECK_EQ_INT(parse("{\"result\":{\"other\":\"off\"}}", state, sizeof(state)), -EBADMSG);
	CHECK_EQ_INT(parse("{\"psu\":\"off\"}", state, sizeof(state)), -EBADMSG);
	CHECK_EQ_INT(parse("{\"result\":{\"psu\":1}}", state, sizeof(state)), -EBADMSG);
	CHECK_EQ_INT(parse("{\"result\":{\"psu\":\"on\"}} x", state, sizeof(state)), -EBADMSG);
	CHECK_EQ_INT(parse("", state, sizeof(state)), -EBADMSG);
}

int
main(void)
{
	log_open(LOG_TARGET_STDERR, LOG_DEBUG, "test_power");
	/* the hung command's grandchild is reparented here, so the test can see it is gone */
	(void)prctl(PR_SET_CHILD_SUBREAPER, 1);
	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return 1;
	}
	test_parse();
	test_command();
	test_moonraker();
	{
		char *cmd = xasprintf("rm -rf %s", dir);

		(void)!system(cmd);
		free(cmd);
	}
	TEST_DONE();
}
