/* SPDX-License-Identifier: GPL-2.0-or-later */
/* sim_proc: processes under test inside the testbed: the daemon or skrflashctl, with their
 * output collected (and echoed, prefixed) and sd_notify messages received on a private
 * NOTIFY_SOCKET, so tests wait for READY=1 and STATUS= instead of sleeping. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "sim_int.h"
#include "util.h"

extern char **environ;

struct sim_proc {
	pid_t pid;
	char name[32];
	int out_fd;
	int notify_fd;
	int stop_fd;
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	char *out;
	size_t out_len;
	size_t echoed;
	char *notify; /* every message, separated by "\n" */
	size_t notify_len;
	char status[256];
	char *snapshot;
	bool ready;
	uint64_t watchdog_last_us; /* arrival of the last WATCHDOG=1, 0 = none yet */
	uint64_t watchdog_gap_us;  /* longest time between two of them */
	bool out_eof;
	bool exited;
	int exit_status;
};

static void
append(char **buf, size_t *len, const char *data, size_t n)
{
	*buf = xreallocarray(*buf, *len + n + 1, 1);
	memcpy(*buf + *len, data, n);
	*len += n;
	(*buf)[*len] = '\0';
}

static void
echo_lines(struct sim_proc *p, bool flush)
{
	for (;;) {
		char *start = p->out + p->echoed;
		char *nl = memchr(start, '\n', p->out_len - p->echoed);
		size_t n;

		if (!nl) {
			if (flush && p->echoed < p->out_len) {
				fprintf(stderr, "[%s] %s\n", p->name, start);
				p->echoed = p->out_len;
			}
			return;
		}
		n = (size_t)(nl - start);
		fprintf(stderr, "[%s] %.*s\n", p->name, (int)n, start);
		p->echoed += n + 1;
	}
}

static void
on_notify(struct sim_proc *p, char *msg, size_t n)
{
	char *save = NULL;

	msg[n] = '\0';
	append(&p->notify, &p->notify_len, msg, n);
	append(&p->notify, &p->notify_len, "\n", 1);
	for (char *l = strtok_r(msg, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
		if (strcmp(l, "READY=1") == 0)
			p->ready = true;
		else if (strcmp(l, "WATCHDOG=1") == 0) {
			uint64_t now = sim_now_us();

			if (p->watchdog_last_us && now - p->watchdog_last_us > p->watchdog_gap_us)
				p->watchdog_gap_us = now - p->watchdog_last_us;
			p->watchdog_last_us = now;
		} else if (strncmp(l, "STATUS=", 7) == 0)
			snprintf(p->status, sizeof(p->status), "%s", l + 7);
	}
}

static void *
reader_thread(void *arg)
{
	struct sim_proc *p = arg;

	for (;;) {
		struct pollfd pfd[3] = {
		    {.fd = p->stop_fd, .events = POLLIN},
		    {.fd = p->notify_fd, .events = POLLIN},
		    {.fd = p->out_eof ? -1 : p->out_fd, .events = POLLIN},
		};
		char buf[8192];
		ssize_t n;

		if (poll(pfd, 3, -1) < 0 && errno != EINTR)
			break;
		if (pfd[0].revents)
			break;
		pthread_mutex_lock(&p->lock);
		if (pfd[1].revents & POLLIN) {
			n = recv(p->notify_fd, buf, sizeof(buf) - 1, MSG_DONTWAIT);
			if (n > 0)
				on_notify(p, buf, (size_t)n);
		}
		if (pfd[2].revents & (POLLIN | POLLHUP | POLLERR)) {
			n = read(p->out_fd, buf, sizeof(buf));
			if (n > 0) {
				append(&p->out, &p->out_len, buf, (size_t)n);
				echo_lines(p, false);
			} else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
				p->out_eof = true;
				echo_lines(p, true);
			}
		}
		pthread_cond_broadcast(&p->cond);
		pthread_mutex_unlock(&p->lock);
	}
	return NULL;
}

static char **
build_env(const char *notify, char *const extra_env[])
{
	size_t n = 0, k = 0, extra = extra_env ? strv_length(extra_env) : 0;
	const char *asan = getenv("SKRSIM_ASAN_OPTIONS");
	bool asan_given = false;
	char **env;

	while (environ[n])
		n++;
	env = xnew_array(char *, n + extra + 3);
	env[k++] = xasprintf("NOTIFY_SOCKET=%s", notify);
	for (size_t j = 0; j < extra && asan; j++)
		if (strncmp(extra_env[j], "ASAN_OPTIONS=", 13) == 0)
			asan_given = true;
	/* the harness runs with leak detection off (GLib); the program under test must not */
	if (asan && !asan_given)
		env[k++] = xasprintf("ASAN_OPTIONS=%s", asan);
	for (size_t i = 0; i < n; i++) {
		const char *eq = strchr(environ[i], '=');
		size_t kl = eq ? (size_t)(eq - environ[i]) + 1 : strlen(environ[i]);
		bool skip = strncmp(environ[i], "NOTIFY_SOCKET=", 14) == 0 ||
			    (asan && strncmp(environ[i], "ASAN_OPTIONS=", 13) == 0) ||
			    strncmp(environ[i], "SKRSIM_ASAN_OPTIONS=", 20) == 0;

		for (size_t j = 0; j < extra && !skip; j++)
			if (strncmp(extra_env[j], environ[i], kl) == 0)
				skip = true;
		if (!skip)
			env[k++] = xstrdup(environ[i]);
	}
	for (size_t j = 0; j < extra; j++)
		env[k++] = xstrdup(extra_env[j]);
	env[k] = NULL;
	return env;
}

struct sim_proc *
sim_proc_spawn(struct sim *s, char *const argv[], char *const extra_env[])
{
	struct sim_proc *p = xnew(struct sim_proc);
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	char name[64];
	char **env;
	int pipefd[2] = {-1, -1}, one = 1, devnull;
	socklen_t salen;
	const char *base = strrchr(argv[0], '/');

	snprintf(p->name, sizeof(p->name), "%s", base ? base + 1 : argv[0]);
	pthread_mutex_lock(&s->lock);
	snprintf(name, sizeof(name), "skrsim-%d-%u", (int)getpid(), ++s->proc_seq);
	pthread_mutex_unlock(&s->lock);
	/* an abstract socket: nothing to clean up, and no path for the preload to redirect */
	p->notify_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	memcpy(sa.sun_path + 1, name, strlen(name));
	salen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + strlen(name));
	if (p->notify_fd < 0 || bind(p->notify_fd, (struct sockaddr *)&sa, salen) < 0 ||
	    pipe2(pipefd, O_CLOEXEC) < 0)
		abort();
	(void)setsockopt(p->notify_fd, SOL_SOCKET, SO_PASSCRED, &one, sizeof(one));
	p->stop_fd = eventfd(0, EFD_CLOEXEC);
	devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
	{
		char *n = xasprintf("@%s", name);

		env = build_env(n, extra_env);
		free(n);
	}
	fflush(stderr);
	p->pid = fork();
	if (p->pid == 0) {
		if (devnull >= 0)
			dup2(devnull, 0);
		dup2(pipefd[1], 1);
		dup2(pipefd[1], 2);
		execvpe(argv[0], argv, env);
		_exit(127);
	}
	strv_free(env);
	close_fd(devnull);
	close(pipefd[1]);
	if (p->pid < 0)
		abort();
	p->out_fd = pipefd[0];
	p->out = xstrdup("");
	p->notify = xstrdup("");
	pthread_mutex_init(&p->lock, NULL);
	pthread_cond_init(&p->cond, NULL);
	if (pthread_create(&p->thread, NULL, reader_thread, p) != 0)
		abort();
	return p;
}

static void
deadline_in(struct timespec *ts, int timeout_ms)
{
	clock_gettime(CLOCK_REALTIME, ts);
	ts->tv_sec += timeout_ms / 1000;
	ts->tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
	if (ts->tv_nsec >= 1000000000L) {
		ts->tv_sec++;
		ts->tv_nsec -= 1000000000L;
	}
}

static bool
reap(struct sim_proc *p)
{
	int st;

	if (p->exited)
		return true;
	if (waitpid(p->pid, &st, WNOHANG) != p->pid)
		return false;
	p->exited = true;
	p->exit_status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
	return true;
}

/* Waits for cond(p, arg) with p->lock held; gives up when the process is gone for good. */
static int
wait_for(struct sim_proc *p, bool (*cond)(struct sim_proc *, const char *), const char *arg,
	 int timeout_ms)
{
	struct timespec end;
	int r = 0;

	deadline_in(&end, timeout_ms);
	pthread_mutex_lock(&p->lock);
	while (!cond(p, arg)) {
		struct timespec step;

		if (p->out_eof && reap(p) && !cond(p, arg)) {
			r = -EPIPE;
			break;
		}
		/* the exit itself has no fd here: look again at least every 20 ms */
		deadline_in(&step, 20);
		if (step.tv_sec > end.tv_sec ||
		    (step.tv_sec == end.tv_sec && step.tv_nsec > end.tv_nsec))
			step = end;
		if (pthread_cond_timedwait(&p->cond, &p->lock, &step) == ETIMEDOUT) {
			struct timespec now;

			clock_gettime(CLOCK_REALTIME, &now);
			if (now.tv_sec > end.tv_sec ||
			    (now.tv_sec == end.tv_sec && now.tv_nsec >= end.tv_nsec)) {
				r = cond(p, arg) ? 0 : -ETIMEDOUT;
				break;
			}
		}
	}
	pthread_mutex_unlock(&p->lock);
	return r;
}

static bool
is_ready(struct sim_proc *p, const char *arg)
{
	(void)arg;
	return p->ready;
}

static bool
notify_has(struct sim_proc *p, const char *needle)
{
	return strstr(p->notify, needle) != NULL;
}

static bool
output_has(struct sim_proc *p, const char *needle)
{
	return strstr(p->out, needle) != NULL;
}

static bool
has_exited(struct sim_proc *p, const char *arg)
{
	(void)arg;
	return reap(p) && p->out_eof;
}

int
sim_proc_wait_ready(struct sim_proc *p, int timeout_ms)
{
	return wait_for(p, is_ready, NULL, timeout_ms);
}

const char *
sim_proc_status(struct sim_proc *p)
{
	return p->status;
}

int
sim_proc_wait_notify(struct sim_proc *p, const char *needle, int timeout_ms)
{
	return wait_for(p, notify_has, needle, timeout_ms);
}

int
sim_proc_wait_output(struct sim_proc *p, const char *needle, int timeout_ms)
{
	return wait_for(p, output_has, needle, timeout_ms);
}

const char *
sim_proc_output(struct sim_proc *p)
{
	pthread_mutex_lock(&p->lock);
	free(p->snapshot);
	p->snapshot = xstrdup(p->out);
	pthread_mutex_unlock(&p->lock);
	return p->snapshot;
}

int
sim_proc_pid(struct sim_proc *p)
{
	return (int)p->pid;
}

int
sim_proc_kill(struct sim_proc *p, int sig)
{
	if (p->exited)
		return -ESRCH;
	return kill(p->pid, sig) < 0 ? -errno : 0;
}

int
sim_proc_wait_exit(struct sim_proc *p, int timeout_ms)
{
	int r = wait_for(p, has_exited, NULL, timeout_ms);

	if (r == -EPIPE || r == 0) {
		pthread_mutex_lock(&p->lock);
		r = reap(p) ? p->exit_status : -ETIMEDOUT;
		pthread_mutex_unlock(&p->lock);
	}
	return r;
}

struct sim_proc *
sim_proc_free(struct sim_proc *p)
{
	uint64_t one = 1;

	if (!p)
		return NULL;
	if (!p->exited) {
		(void)kill(p->pid, SIGTERM);
		if (sim_proc_wait_exit(p, 3000) < 0) {
			(void)kill(p->pid, SIGKILL);
			(void)sim_proc_wait_exit(p, 3000);
		}
	}
	(void)!write(p->stop_fd, &one, sizeof(one));
	pthread_join(p->thread, NULL);
	close(p->stop_fd);
	close(p->notify_fd);
	close(p->out_fd);
	pthread_mutex_destroy(&p->lock);
	pthread_cond_destroy(&p->cond);
	free(p->out);
	free(p->notify);
	free(p->snapshot);
	free(p);
	return NULL;
}

int
sim_run(struct sim *s, char *const argv[], int timeout_ms, char **ret_out)
{
	struct sim_proc *p = sim_proc_spawn(s, argv, NULL);
	int r = sim_proc_wait_exit(p, timeout_ms);

	if (r < 0) {
		(void)kill(p->pid, SIGKILL);
		(void)sim_proc_wait_exit(p, 3000);
		r = -ETIMEDOUT;
	}
	if (ret_out)
		*ret_out = xstrdup(sim_proc_output(p));
	sim_proc_free(p);
	return r;
}

int
sim_run_args(struct sim *s, int timeout_ms, char **ret_out, const char *first, ...)
{
	va_list ap;
	char **argv;
	int r;

	va_start(ap, first);
	argv = strv_append_va(NULL, first, ap);
	va_end(ap);
	r = sim_run(s, argv, timeout_ms, ret_out);
	strv_free(argv);
	return r;
}

int
sim_sh(struct sim *s, const char *fmt, ...)
{
	va_list ap;
	char *cmd, *out = NULL;
	int r;

	va_start(ap, fmt);
	if (vasprintf(&cmd, fmt, ap) < 0)
		abort();
	va_end(ap);
	r = sim_run_args(s, 60000, &out, "/usr/bin/env", "-u", "LD_PRELOAD", "/bin/sh", "-c", cmd,
			 (char *)NULL);
	if (r != 0)
		fprintf(stderr, "(exit %d) %s\n%s", r, cmd, out ? out : "");
	free(out);
	free(cmd);
	return r;
}

int
sim_fsck_fat(struct sim *s, const char *image, size_t offset, const char *part)
{
	uint8_t *buf = NULL;
	size_t len = 0;
	char *out = NULL;
	int r = read_file(image, 256u << 20, &buf, &len);

	if (r == 0 && len <= offset)
		r = -EINVAL;
	if (r == 0)
		r = write_file_atomic(part, buf + offset, len - offset, 0644);
	free(buf);
	if (r < 0)
		return r;
	r = sim_run_args(s, 20000, &out, "/sbin/fsck.fat", "-n", part, (char *)NULL);
	if (r != 0)
		fprintf(stderr, "fsck.fat:\n%s\n", out ? out : "");
	free(out);
	unlink(part);
	return r;
}

void
sim_run_ignore_leaks(void)
{
	const char *o = getenv("SKRSIM_ASAN_OPTIONS");
	char *opts;

	if (!o)
		return;
	opts = xasprintf("%s%sdetect_leaks=0", o, *o ? ":" : "");
	(void)setenv("SKRSIM_ASAN_OPTIONS", opts, 1);
	free(opts);
}

uint64_t
sim_proc_watchdog_gap_us(struct sim_proc *p, bool reset)
{
	uint64_t gap;

	pthread_mutex_lock(&p->lock);
	gap = p->watchdog_gap_us;
	if (reset)
		p->watchdog_gap_us = 0;
	pthread_mutex_unlock(&p->lock);
	return gap;
}
