/* SPDX-License-Identifier: GPL-2.0-or-later */
/* power: a board's power cycle as a child process on the event loop (see power.h). */
#include "service/power.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "service/moonraker.h"
#include "util.h"

#define DEFAULT_MOONRAKER "http://127.0.0.1:7125"
/* a Moonraker request; the cycle's own timeout bounds the whole */
#define REQUEST_TIMEOUT_MS 2000u
/* exit status of the Moonraker child when the print state forbids the cycle */
#define EXIT_REFUSED 3

struct power_cycle {
	sd_event *loop;
	power_done_fn done;
	void *userdata;
	char what[160]; /* power_describe() */
	char board[64]; /* catalog name */
	char port[64];	/* USB port */
	char job[24];	/* "" = none */
	pid_t pid;	/* 0 once reaped */
	int out_fd;	/* the child's stdout+stderr */
	char out[1024]; /* a partial line */
	size_t out_len;
	char last[512]; /* the last complete line: the child's final word */
	unsigned timeout_ms;
	bool moonraker; /* the child is the Moonraker client, not a command */
	bool timed_out;
	sd_event_source *out_src, *child_src, *timer;
};

void
power_describe(const struct config_power *power, char *buf, size_t size)
{
	if (power->moonraker_device)
		(void)snprintf(buf, size, "Moonraker power device '%s'", power->moonraker_device);
	else
		(void)snprintf(buf, size, "power command '%s'",
			       power->command && power->command[0] ? power->command[0] : "?");
}

static void
fields(const struct power_cycle *pc, struct log_fields *f)
{
	memset(f, 0, sizeof(*f));
	f->message_id = LOG_MID_POWER_CYCLE;
	f->board = pc->board[0] ? pc->board : NULL;
	f->port = pc->port;
	f->job = pc->job[0] ? pc->job : NULL;
	f->state = "power-cycle";
}

/* ---- the Moonraker child: gate, off, wait, on ---------------------------------------- */

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void
say(const char *fmt, ...)
{
	char line[600];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(line, sizeof(line) - 1, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n > sizeof(line) - 2)
		n = (int)sizeof(line) - 2;
	line[n++] = '\n';
	(void)!write(STDOUT_FILENO, line, (size_t)n);
}

static void
sleep_ms(unsigned ms)
{
	struct timespec ts = {.tv_sec = ms / 1000u, .tv_nsec = (long)(ms % 1000u) * 1000000L};

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static int
moonraker_child(const struct power_request *req)
{
	const char *url = req->moonraker_url ? req->moonraker_url : DEFAULT_MOONRAKER;
	const char *dev = req->power->moonraker_device;
	char key[MOONRAKER_KEY_MAX] = "", *msg = NULL;
	struct moonraker_state st;
	const char *k = NULL;

	if (req->moonraker_key_file && req->moonraker_key_file[0]) {
		int r = moonraker_read_key(req->moonraker_key_file, key, sizeof(key));
		if (r < 0) {
			say("cannot read the Moonraker API key from %s (%s); not switching power "
			    "device '%s'",
			    req->moonraker_key_file, r == -EINVAL ? "no key" : strerror(-r), dev);
			return 1;
		}
		k = key;
	}
	/* the gate again, right before the power goes: fail-closed, whatever
	 * moonraker_fail_open says, since this switches power. A Moonraker that cannot tell
	 * (Klipper is down: HTTP 503) is fine only while skrflash itself holds Klipper stopped:
	 * then nothing prints. */
	(void)moonraker_query(url, k, REQUEST_TIMEOUT_MS, &st);
	if (st.error != 0 && req->klipper_stopped && st.http_status >= 500) {
		say("Moonraker at %s cannot tell the print state (%s) while Klipper is stopped for "
		    "this flash; nothing prints",
		    url, st.detail);
	} else if (!moonraker_gate(&st, url, false, req->board, &msg)) {
		say("not power-cycling %s through power device '%s': %s", req->board, dev, msg);
		free(msg);
		return EXIT_REFUSED;
	}
	free(msg);
	if (moonraker_power(url, k, dev, false, REQUEST_TIMEOUT_MS, &st) < 0) {
		say("Moonraker at %s did not switch power device '%s' off: %s", url, dev,
		    st.detail[0] ? st.detail : strerror(-st.error));
		return 1;
	}
	say("Moonraker power device '%s' is off; on again in %u.%03u s", dev,
	    req->power->off_ms / 1000u, req->power->off_ms % 1000u);
	sleep_ms(req->power->off_ms);
	/* once off, on is tried until the cycle's timeout: a printer must not stay dark
	 * because one request was lost */
	for (unsigned tries = 0;; tries++) {
		if (moonraker_power(url, k, dev, true, REQUEST_TIMEOUT_MS, &st) == 0)
			break;
		say("Moonraker at %s did not switch power device '%s' on: %s%s", url, dev,
		    st.detail[0] ? st.detail : strerror(-st.error), tries < 4 ? "; again" : "");
		if (tries >= 4)
			return 1;
		sleep_ms(1000);
	}
	say("Moonraker power device '%s' is on again", dev);
	return 0;
}

/* ---- the parent side ------------------------------------------------------------------- */

static void
log_line(struct power_cycle *pc, const char *line)
{
	struct log_fields f;

	if (!*line)
		return;
	(void)str_copy(pc->last, sizeof(pc->last), line);
	fields(pc, &f);
	f.message_id = NULL;
	/* the Moonraker child's lines name the device already */
	if (pc->moonraker)
		log_full(LOG_INFO, 0, &f, "%s", line);
	else
		log_full(LOG_INFO, 0, &f, "%s: %s", pc->what, line);
}

static void
drain(struct power_cycle *pc, bool eof)
{
	for (;;) {
		ssize_t n;
		char *nl;

		if (pc->out_len >= sizeof(pc->out) - 1) {
			/* a line longer than this is cut, not lost */
			pc->out[pc->out_len] = 0;
			log_line(pc, pc->out);
			pc->out_len = 0;
		}
		n = read(pc->out_fd, pc->out + pc->out_len, sizeof(pc->out) - 1 - pc->out_len);
		if (n <= 0)
			break;
		pc->out_len += (size_t)n;
		while ((nl = memchr(pc->out, '\n', pc->out_len))) {
			*nl = 0;
			log_line(pc, pc->out);
			pc->out_len -= (size_t)(nl + 1 - pc->out);
			memmove(pc->out, nl + 1, pc->out_len);
		}
	}
	if (eof && pc->out_len) {
		pc->out[pc->out_len] = 0;
		log_line(pc, pc->out);
		pc->out_len = 0;
	}
}

static int
on_output(sd_event_source *s, int fd, uint32_t revents, void *userdata)
{
	(void)s;
	(void)fd;
	(void)revents;
	drain(userdata, false);
	return 0;
}

static int
on_timeout(sd_event_source *s, uint64_t usec, void *userdata)
{
	struct power_cycle *pc = userdata;

	(void)s;
	(void)usec;
	pc->timer = sd_event_source_disable_unref(pc->timer);
	pc->timed_out = true;
	/* the whole group: a script's own children (uhubctl, sleep) end with it */
	if (pc->pid > 0)
		(void)kill(-pc->pid, SIGKILL);
	return 0;
}

static int
on_child_exit(sd_event_source *s, const siginfo_t *si, void *userdata)
{
	struct power_cycle *pc = userdata;
	char msg[900];
	int r = 0;

	(void)s;
	drain(pc, true);
	pc->pid = 0;
	pc->timer = sd_event_source_disable_unref(pc->timer);
	pc->child_src = sd_event_source_disable_unref(pc->child_src);
	pc->out_src = sd_event_source_disable_unref(pc->out_src);
	pc->out_fd = close_fd(pc->out_fd);
	if (pc->timed_out) {
		r = -ETIMEDOUT;
		(void)snprintf(
		    msg, sizeof(msg),
		    "%s did not power-cycle %s on port %s within %u.%03u s; stopped it%s%s",
		    pc->what, pc->board, pc->port, pc->timeout_ms / 1000u, pc->timeout_ms % 1000u,
		    pc->last[0] ? " (last output: " : "", pc->last[0] ? pc->last : "");
		if (pc->last[0])
			strcat(msg, ")");
	} else if (si->si_code == CLD_EXITED && si->si_status == 0) {
		(void)snprintf(msg, sizeof(msg), "%s power-cycled %s on port %s", pc->what,
			       pc->board, pc->port);
	} else if (pc->moonraker && si->si_code == CLD_EXITED && si->si_status == EXIT_REFUSED) {
		r = -EPERM;
		(void)snprintf(msg, sizeof(msg), "%s", pc->last);
	} else if (si->si_code == CLD_EXITED) {
		r = -EIO;
		(void)snprintf(msg, sizeof(msg), "%s failed for %s on port %s (exit status %d%s%s)",
			       pc->what, pc->board, pc->port, si->si_status,
			       pc->last[0] ? ": " : "", pc->last);
	} else {
		r = -EIO;
		(void)snprintf(msg, sizeof(msg), "%s for %s on port %s was killed by signal %d",
			       pc->what, pc->board, pc->port, si->si_status);
	}
	if (pc->done)
		pc->done(pc->userdata, r, msg);
	return 0;
}

static void
exec_command(const struct power_request *req)
{
	char off[32];

	(void)snprintf(off, sizeof(off), "%u.%03u", req->power->off_ms / 1000u,
		       req->power->off_ms % 1000u);
	if (setenv("SKRFLASH_BOARD", req->board ? req->board : "", 1) < 0 ||
	    setenv("SKRFLASH_PORT", req->port ? req->port : "", 1) < 0 ||
	    setenv("SKRFLASH_OFF_SECONDS", off, 1) < 0)
		_exit(127);
	execvp(req->power->command[0], req->power->command);
	say("cannot run %s: %s", req->power->command[0], strerror(errno));
	_exit(127);
}

/* In the child: its own process group (the timeout kills it whole), output to the pipe,
 * stdin from /dev/null, the signals the loop blocked unblocked. */
static void
child_setup(int out_fd)
{
	sigset_t none;
	int null = open("/dev/null", O_RDONLY | O_CLOEXEC);

	(void)setpgid(0, 0);
	sigemptyset(&none);
	(void)sigprocmask(SIG_SETMASK, &none, NULL);
	if (null < 0 || dup2(null, STDIN_FILENO) < 0 || dup2(out_fd, STDOUT_FILENO) < 0 ||
	    dup2(out_fd, STDERR_FILENO) < 0)
		_exit(127);
}

int
power_cycle_start(sd_event *loop, const struct power_request *req, power_done_fn done,
		  void *userdata, struct power_cycle **ret)
{
	struct power_cycle *pc;
	int out[2], r;
	pid_t pid;

	if (!req->power ||
	    (!req->power->moonraker_device && (!req->power->command || !req->power->command[0])))
		return -EINVAL;
	if (pipe2(out, O_CLOEXEC) < 0)
		return -errno;
	pid = fork();
	if (pid < 0) {
		r = -errno;
		close_fd(out[0]);
		close_fd(out[1]);
		return r;
	}
	if (pid == 0) {
		child_setup(out[1]);
		if (req->power->moonraker_device)
			_exit(moonraker_child(req));
		exec_command(req);
	}
	/* both sides: whichever runs first, the group exists before a kill can name it */
	(void)setpgid(pid, pid);
	close_fd(out[1]);
	pc = xnew(struct power_cycle);
	pc->loop = sd_event_ref(loop);
	pc->done = done;
	pc->userdata = userdata;
	pc->pid = pid;
	pc->out_fd = out[0];
	pc->timeout_ms = req->power->timeout_ms;
	pc->moonraker = req->power->moonraker_device != NULL;
	power_describe(req->power, pc->what, sizeof(pc->what));
	(void)str_copy(pc->board, sizeof(pc->board), req->board ? req->board : "board");
	(void)str_copy(pc->port, sizeof(pc->port), req->port ? req->port : "?");
	(void)str_copy(pc->job, sizeof(pc->job), req->job ? req->job : "");
	(void)fcntl(out[0], F_SETFL, O_NONBLOCK);
	r = sd_event_add_io(loop, &pc->out_src, out[0], EPOLLIN, on_output, pc);
	if (r >= 0)
		r = sd_event_add_child(loop, &pc->child_src, pid, WEXITED, on_child_exit, pc);
	if (r >= 0)
		r = sd_event_add_time_relative(loop, &pc->timer, CLOCK_MONOTONIC,
					       (uint64_t)pc->timeout_ms * 1000u, 0, on_timeout, pc);
	if (r < 0) {
		(void)kill(-pid, SIGKILL);
		(void)waitpid(pid, NULL, 0);
		pc->pid = 0;
		power_cycle_free(pc);
		return r;
	}
	{
		struct log_fields f;

		fields(pc, &f);
		log_full(LOG_NOTICE, 0, &f, "power-cycling %s on port %s through the %s", pc->board,
			 pc->port, pc->what);
	}
	*ret = pc;
	return 0;
}

struct power_cycle *
power_cycle_free(struct power_cycle *pc)
{
	if (!pc)
		return NULL;
	/* a cycle that switched the power off is left to finish (the daemon stopping must not
	 * leave a printer dark): it is bounded by its own requests' timeouts, and init reaps
	 * it; only the loop stops watching */
	sd_event_source_disable_unref(pc->out_src);
	sd_event_source_disable_unref(pc->child_src);
	sd_event_source_disable_unref(pc->timer);
	close_fd(pc->out_fd);
	sd_event_unref(pc->loop);
	free(pc);
	return NULL;
}
