/* SPDX-License-Identifier: GPL-2.0-or-later */
/* ident: M115 through a worker for Marlin boards (see ident.h). */
#include "service/ident.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <json-c/json.h>

#include "flash/worker.h"
#include "log.h"
#include "service/holder.h"
#include "util.h"

#define IDENT_MAX 16u	/* questions in flight */
#define IDENT_ASKED 64u /* enumerations remembered as asked */

struct ident {
	struct ident_table *t;
	char port[64];
	char usb_node[DEVICE_PATH]; /* the enumeration asked */
	pid_t pid;
	int out_fd;
	sd_event_source *out_src, *child_src;
	char out[2048];
	size_t out_len;
};

struct ident_table {
	sd_event *loop;
	struct boards *boards;
	char *worker_exe;
	struct ident *running[IDENT_MAX];
	char asked[IDENT_ASKED][DEVICE_PATH]; /* usb nodes asked already (a ring) */
	unsigned n_asked;
};

int
ident_table_new(sd_event *loop, struct boards *boards, const char *worker_exe,
		struct ident_table **ret)
{
	struct ident_table *t = xnew(struct ident_table);

	t->loop = sd_event_ref(loop);
	t->boards = boards;
	t->worker_exe = xstrdup(worker_exe);
	*ret = t;
	return 0;
}

static void
ident_free(struct ident *q)
{
	if (!q)
		return;
	q->out_src = sd_event_source_disable_unref(q->out_src);
	q->child_src = sd_event_source_disable_unref(q->child_src);
	if (q->pid > 0) {
		(void)kill(q->pid, SIGKILL);
		(void)waitpid(q->pid, NULL, 0);
	}
	if (q->out_fd >= 0)
		close(q->out_fd);
	free(q);
}

struct ident_table *
ident_table_free(struct ident_table *t)
{
	if (!t)
		return NULL;
	for (size_t i = 0; i < IDENT_MAX; i++)
		ident_free(t->running[i]);
	sd_event_unref(t->loop);
	free(t->worker_exe);
	free(t);
	return NULL;
}

static bool
was_asked(const struct ident_table *t, const char *node)
{
	for (size_t i = 0; i < IDENT_ASKED; i++)
		if (strcmp(t->asked[i], node) == 0)
			return true;
	return false;
}

/* The worker's result line: the build and the machine go to the board that was asked, if
 * it is still the same enumeration. */
static void
answer(struct ident *q, const char *line)
{
	json_object *o = json_tokener_parse(line), *v;
	struct board *b = boards_find_port(q->t->boards, q->port);
	const char *fw = NULL, *machine = NULL, *err = NULL;

	if (!o)
		return;
	if (json_object_object_get_ex(o, "type", &v) &&
	    strcmp(json_object_get_string(v), "result") == 0) {
		if (json_object_object_get_ex(o, "version", &v))
			fw = json_object_get_string(v);
		if (json_object_object_get_ex(o, "machine", &v))
			machine = json_object_get_string(v);
		if (json_object_object_get_ex(o, "error", &v))
			err = json_object_get_string(v);
		if (b && strcmp(b->dev.usb_node, q->usb_node) == 0 && fw && fw[0]) {
			(void)str_copy(b->firmware, sizeof(b->firmware), fw);
			(void)str_copy(b->machine, sizeof(b->machine), machine ? machine : "");
			log_info("board %s on port %s runs %s (machine \"%s\")",
				 board_display_name(b), q->port, b->firmware, b->machine);
		} else if (err && err[0]) {
			log_info("board on port %s: cannot ask which firmware it runs: %s", q->port,
				 err);
		}
	}
	json_object_put(o);
}

static int
on_output(sd_event_source *s, int fd, uint32_t revents, void *userdata)
{
	struct ident *q = userdata;
	char *nl;
	ssize_t n;

	(void)s;
	(void)fd;
	(void)revents;
	if (q->out_len >= sizeof(q->out) - 1)
		q->out_len = 0;
	n = read(q->out_fd, q->out + q->out_len, sizeof(q->out) - 1 - q->out_len);
	if (n <= 0) {
		q->out_src = sd_event_source_disable_unref(q->out_src);
		return 0;
	}
	q->out_len += (size_t)n;
	while ((nl = memchr(q->out, '\n', q->out_len))) {
		*nl = 0;
		answer(q, q->out);
		q->out_len -= (size_t)(nl + 1 - q->out);
		memmove(q->out, nl + 1, q->out_len);
	}
	return 0;
}

static int
on_exit_child(sd_event_source *s, const siginfo_t *si, void *userdata)
{
	struct ident *q = userdata;
	struct ident_table *t = q->t;

	(void)s;
	(void)si;
	q->pid = 0;
	if (q->out_src)
		(void)on_output(NULL, q->out_fd, 0, q);
	for (size_t i = 0; i < IDENT_MAX; i++)
		if (t->running[i] == q)
			t->running[i] = NULL;
	ident_free(q);
	return 0;
}

/* Somebody on the host has the tty open: not ours to talk on. */
static bool
tty_held(const struct board *b)
{
	struct holder *h = NULL;
	struct stat st;
	size_t n = 0;
	int r = holder_find(NULL, b->dev.tty, stat(b->dev.tty, &st) == 0 ? st.st_rdev : 0, &h, &n);

	holder_free(h, n);
	return r != 0; /* held, or cannot tell */
}

static int
spawn(struct ident *q, const char *plan)
{
	int in[2] = {-1, -1}, out[2] = {-1, -1};
	size_t len = strlen(plan);

	if (pipe2(in, O_CLOEXEC) < 0 || pipe2(out, O_CLOEXEC) < 0)
		goto fail;
	q->pid = fork();
	if (q->pid < 0)
		goto fail;
	if (q->pid == 0) {
		char *args[] = {q->t->worker_exe, (char[]){"--worker"}, NULL};
		sigset_t none;

		(void)prctl(PR_SET_PDEATHSIG, SIGKILL);
		sigemptyset(&none);
		(void)sigprocmask(SIG_SETMASK, &none, NULL);
		if (dup2(out[1], STDOUT_FILENO) < 0 || dup2(in[0], STDIN_FILENO) < 0)
			_exit(127);
		execv(q->t->worker_exe, args);
		_exit(127);
	}
	close(out[1]);
	close(in[0]);
	if (write(in[1], plan, len) != (ssize_t)len || write(in[1], "\n", 1) != 1)
		log_warn("ident: short write of the worker plan");
	close(in[1]);
	q->out_fd = out[0];
	(void)fcntl(q->out_fd, F_SETFL, O_NONBLOCK);
	if (sd_event_add_io(q->t->loop, &q->out_src, q->out_fd, EPOLLIN, on_output, q) < 0 ||
	    sd_event_add_child(q->t->loop, &q->child_src, q->pid, WEXITED, on_exit_child, q) < 0)
		return -ENOMEM;
	return 0;
fail:
	for (size_t i = 0; i < 2; i++) {
		if (in[i] >= 0)
			close(in[i]);
		if (out[i] >= 0)
			close(out[i]);
	}
	return -errno;
}

void
ident_board(struct ident_table *t, const struct board *b)
{
	struct worker_plan plan;
	struct ident *q;
	char *json = NULL;
	size_t slot = IDENT_MAX;

	if (!t || !b->present || !b->dev.tty[0] || !b->dev.usb_node[0] ||
	    (b->dev.mode != DEVICE_MODE_MARLIN_LPC && b->dev.mode != DEVICE_MODE_MARLIN_STM32) ||
	    was_asked(t, b->dev.usb_node))
		return;
	for (size_t i = 0; i < IDENT_MAX; i++) {
		if (t->running[i] && strcmp(t->running[i]->port, b->dev.port) == 0)
			return;
		if (!t->running[i] && slot == IDENT_MAX)
			slot = i;
	}
	if (slot == IDENT_MAX)
		return;
	(void)str_copy(t->asked[t->n_asked++ % (IDENT_ASKED)], DEVICE_PATH, b->dev.usb_node);
	if (tty_held(b)) {
		log_info("board on port %s runs Marlin; %s is open in another program, so its "
			 "build is not asked",
			 b->dev.port, b->dev.tty);
		return;
	}
	memset(&plan, 0, sizeof(plan));
	(void)str_copy(plan.action, sizeof(plan.action), "identify");
	plan.dev = b->dev;
	if (worker_plan_to_json(&plan, &json) < 0)
		return;
	q = xnew(struct ident);
	q->t = t;
	q->out_fd = -1;
	(void)str_copy(q->port, sizeof(q->port), b->dev.port);
	(void)str_copy(q->usb_node, sizeof(q->usb_node), b->dev.usb_node);
	if (spawn(q, json) < 0) {
		log_warn("ident: cannot start a worker for port %s", b->dev.port);
		ident_free(q);
	} else {
		t->running[slot] = q;
	}
	free(json);
}
