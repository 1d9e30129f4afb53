/* SPDX-License-Identifier: GPL-2.0-or-later */
/* skrflashctl: the command-line client of skrflashd, plus the commands that need no daemon
 * (catalog, validate, flash --device). Exit codes: 0 success, 1 failed or refused, 2 usage
 * error, 3 daemon not reachable, 4 permission denied; the status is always the outcome,
 * also with --json, whose errors are JSON on stdout too.
 *
 * Options are GNU-style: global and command options in any position, `--` ends them. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <libgen.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#include "catalog.h"
#include "config.h"
#include "cli/oneshot.h"
#include "cli/progress.h"
#include "cli/rescuecmd.h"
#include "image/image.h"
#include "paths.h"
#include "util.h"
#include "image/validate.h"

enum {
	EXIT_OK = 0,
	EXIT_FAILED = 1,
	EXIT_USAGE = 2,
	EXIT_UNREACHABLE = 3,
	EXIT_DENIED = 4,
};

struct ctl {
	const char *socket_path;
	const char *config_path;
	const char *queue_dir;
	bool json;
	bool verbose; /* requests and answers on stderr, every event of a followed job */
	struct config *cfg;
	char *socket_buf;
	char *queue_buf;
	const char *cmd;
	/* command options */
	bool all, no_wait, dry_run, force;
	const char *board, *profile, *device, *method, *window;
	const char *baud, *crystal, *reset_line, *boot_line, *save_old; /* rescue */
	bool local;	 /* rescue in this process, without the daemon */
	const char *sha; /* restore */
	unsigned limit;
};

static void print_json(json_object *o);

/* A failure in the form the caller asked for: a line on stderr, or with --json an object
 * {"ok": false, "error": ..., "exit": N} on stdout. Returns code. */
static int fail(const struct ctl *c, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int
fail(const struct ctl *c, int code, const char *fmt, ...)
{
	char msg[2048];
	va_list ap;

	va_start(ap, fmt);
	(void)vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (c && c->json) {
		json_object *o = json_object_new_object();

		json_object_object_add(o, "ok", json_object_new_boolean(false));
		json_object_object_add(o, "error", json_object_new_string(msg));
		json_object_object_add(o, "exit", json_object_new_int(code));
		print_json(o);
		json_object_put(o);
	} else {
		fprintf(stderr, "skrflashctl: %s\n", msg);
	}
	return code;
}

/* ---- output helpers ---------------------------------------------------------------- */

#define TABLE_MAX_COLS 10

struct table {
	size_t n_cols;
	char **cells; /* row-major */
	size_t n_rows;
	size_t width[TABLE_MAX_COLS];
};

static void
table_row(struct table *t, const char *const *cols)
{
	t->cells = xreallocarray(t->cells, (t->n_rows + 1) * t->n_cols, sizeof(char *));
	for (size_t i = 0; i < t->n_cols; i++) {
		const char *c = cols[i] && *cols[i] ? cols[i] : "-";
		size_t w = strlen(c);

		t->cells[t->n_rows * t->n_cols + i] = xstrdup(c);
		if (w > t->width[i])
			t->width[i] = w;
	}
	t->n_rows++;
}

static void
table_print(struct table *t)
{
	for (size_t r = 0; r < t->n_rows; r++) {
		for (size_t i = 0; i < t->n_cols; i++) {
			const char *c = t->cells[r * t->n_cols + i];

			if (i + 1 == t->n_cols)
				printf("%s\n", c);
			else
				printf("%-*s  ", (int)t->width[i], c);
			free(t->cells[r * t->n_cols + i]);
		}
	}
	free(t->cells);
}

static const char *
jstr(json_object *o, const char *key)
{
	json_object *v;

	if (!o || !json_object_object_get_ex(o, key, &v) || json_object_is_type(v, json_type_null))
		return "";
	return json_object_get_string(v);
}

static void
print_json(json_object *o)
{
	printf("%s\n", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY |
							     JSON_C_TO_STRING_NOSLASHESCAPE));
}

/* ---- daemon connection ------------------------------------------------------------- */

static int
ctl_connect(const struct ctl *c)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	int fd;

	if (strlen(c->socket_path) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	memcpy(sa.sun_path, c->socket_path, strlen(c->socket_path) + 1);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		int r = -errno;

		close_fd(fd);
		return r;
	}
	return fd;
}

static bool
is_unreachable(int r)
{
	return r == -ENOENT || r == -ECONNREFUSED || r == -ENOTDIR || r == -ENAMETOOLONG;
}

static int
unreachable(const struct ctl *c, int r)
{
	if (r == -EACCES || r == -EPERM)
		return fail(c, EXIT_DENIED,
			    "permission denied on %s: run as root or as a member of the skrflash "
			    "group",
			    c->socket_path);
	return fail(c, EXIT_UNREACHABLE,
		    "skrflashd is not running (cannot connect to %s: %s); start it with: "
		    "systemctl start skrflashd",
		    c->socket_path, strerror(-r));
}

/* Read one line (without '\n') into a malloc'd string; NULL on EOF or timeout. */
static char *
read_line(int fd, char **buf, size_t *len, int timeout_ms)
{
	for (;;) {
		char *nl = *len ? memchr(*buf, '\n', *len) : NULL;
		struct pollfd p = {.fd = fd, .events = POLLIN};
		char chunk[4096];
		ssize_t n;

		if (nl) {
			size_t l = (size_t)(nl - *buf);
			char *line = xstrndup(*buf, l);

			memmove(*buf, nl + 1, *len - l - 1);
			*len -= l + 1;
			return line;
		}
		if (poll(&p, 1, timeout_ms) <= 0)
			return NULL;
		n = read(fd, chunk, sizeof(chunk));
		if (n <= 0)
			return NULL;
		*buf = xreallocarray(*buf, *len + (size_t)n + 1, 1);
		memcpy(*buf + *len, chunk, (size_t)n);
		*len += (size_t)n;
	}
}

static int
send_request(const struct ctl *c, int fd, json_object *req)
{
	const char *s = json_object_to_json_string_ext(req, JSON_C_TO_STRING_PLAIN);
	size_t len = strlen(s);
	char *line = xasprintf("%s\n", s);
	ssize_t n = send(fd, line, len + 1, MSG_NOSIGNAL);

	if (c->verbose)
		fprintf(stderr, "> %s", line);
	free(line);
	return n == (ssize_t)(len + 1) ? 0 : -EIO;
}

/* One request, one response; takes req. Returns an exit code; *ret gets the response when
 * ok. With quiet, a daemon that is not running is not reported (the caller has a plan B):
 * the return is then -1. */
static int
call_ex(const struct ctl *c, json_object *req, json_object **ret, bool quiet)
{
	char *buf = NULL, *line;
	size_t len = 0;
	json_object *resp, *ok;
	int fd = ctl_connect(c);

	*ret = NULL;
	if (fd < 0) {
		json_object_put(req);
		return quiet && is_unreachable(fd) ? -1 : unreachable(c, fd);
	}
	if (send_request(c, fd, req) < 0) {
		json_object_put(req);
		close_fd(fd);
		return unreachable(c, -EPIPE);
	}
	json_object_put(req);
	line = read_line(fd, &buf, &len, 30000);
	close_fd(fd);
	free(buf);
	if (!line)
		return fail(c, EXIT_UNREACHABLE, "no answer from skrflashd on %s", c->socket_path);
	if (c->verbose)
		fprintf(stderr, "< %s\n", line);
	resp = json_tokener_parse(line);
	free(line);
	if (!resp || !json_object_object_get_ex(resp, "ok", &ok)) {
		json_object_put(resp);
		return fail(c, EXIT_FAILED, "malformed answer from skrflashd");
	}
	if (!json_object_get_boolean(ok)) {
		const char *e = jstr(resp, "error");
		int code =
		    fail(c, strstr(e, "permission denied") ? EXIT_DENIED : EXIT_FAILED, "%s", e);

		json_object_put(resp);
		return code;
	}
	*ret = resp;
	return EXIT_OK;
}

static int
call(const struct ctl *c, json_object *req, json_object **ret)
{
	return call_ex(c, req, ret, false);
}

static json_object *
request(const char *command)
{
	json_object *o = json_object_new_object();

	json_object_object_add(o, "command", json_object_new_string(command));
	return o;
}

/* Connect and subscribe; returns the fd (the subscription's answer already read). */
static int
subscribe(const struct ctl *c, char **buf, size_t *len)
{
	json_object *req = request("watch");
	char *line;
	int fd = ctl_connect(c);

	if (fd < 0) {
		json_object_put(req);
		return fd;
	}
	if (send_request(c, fd, req) < 0) {
		json_object_put(req);
		close_fd(fd);
		return -EPIPE;
	}
	json_object_put(req);
	line = read_line(fd, buf, len, 10000);
	if (!line || !strstr(line, "\"ok\":true")) {
		free(line);
		close_fd(fd);
		return line ? -EACCES : -EPIPE;
	}
	free(line);
	return fd;
}

/* ---- commands ---------------------------------------------------------------------- */

/* Jobs that wait for a person to switch a board off and on (SDIO boards, docs/sd-card.md). */
static void
print_needs_power(json_object *status)
{
	json_object *jobs;

	if (!json_object_object_get_ex(status, "jobs", &jobs))
		return;
	for (size_t i = 0; i < json_object_array_length(jobs); i++) {
		json_object *j = json_object_array_get_idx(jobs, i);

		if (strcmp(jstr(j, "state"), "needs-power-cycle") == 0)
			printf("needs power cycle: %s on port %s (job %s): %s\n", jstr(j, "board"),
			       jstr(j, "port"), jstr(j, "job"), jstr(j, "why"));
	}
}

static int
cmd_status(struct ctl *c, char **args)
{
	json_object *resp;
	int code = call(c, request("status"), &resp);

	(void)args;
	if (code)
		return code;
	if (c->json) {
		print_json(resp);
	} else {
		printf("skrflashd %s (pid %s), up %s s\n", jstr(resp, "version"), jstr(resp, "pid"),
		       jstr(resp, "uptime_sec"));
		printf("boards present:   %s\n", jstr(resp, "boards_present"));
		printf("jobs running:     %s\n", jstr(resp, "jobs_running"));
		printf("firmware waiting: %s\n", jstr(resp, "firmware_waiting"));
		printf("config:           %s (%s profiles)\n", jstr(resp, "config"),
		       jstr(resp, "profiles"));
		if (*jstr(resp, "reload_error"))
			printf("last reload:      FAILED at %s, still running the previous "
			       "config:\n                  %s\n",
			       jstr(resp, "reload_failed_at"), jstr(resp, "reload_error"));
		printf("queue:            %s\n", jstr(resp, "queue_dir"));
		print_needs_power(resp);
	}
	json_object_put(resp);
	return EXIT_OK;
}

/* "0.13.0-farm", else the short hash, else "-" */
static void
version_of(json_object *o, const char *vkey, const char *shakey, char *buf, size_t len)
{
	if (*jstr(o, vkey))
		(void)snprintf(buf, len, "%s", jstr(o, vkey));
	else if (*jstr(o, shakey))
		(void)snprintf(buf, len, "%.12s", jstr(o, shakey));
	else
		(void)snprintf(buf, len, "-");
}

static int
cmd_boards(struct ctl *c, char **args)
{
	json_object *req = request("boards"), *resp, *arr;
	struct table t = {.n_cols = 8};
	int code;

	(void)args;
	if (c->all)
		json_object_object_add(req, "all", json_object_new_boolean(true));
	code = call(c, req, &resp);
	if (code)
		return code;
	json_object_object_get_ex(resp, "boards", &arr);
	if (c->json) {
		print_json(arr);
		json_object_put(resp);
		return EXIT_OK;
	}
	table_row(&t, (const char *const[]){"ID", "BOARD", "PORT", "MODE", "PROFILE", "VERSION",
					    "STATE", "DEVICE"});
	for (size_t i = 0; i < json_object_array_length(arr); i++) {
		json_object *b = json_object_array_get_idx(arr, i);
		json_object *present;
		char version[160];
		const char *mode = jstr(b, "mode");

		version_of(b, "installed_version", "installed_sha256", version, sizeof(version));
		if (json_object_object_get_ex(b, "present", &present) &&
		    !json_object_get_boolean(present))
			mode = *jstr(b, "last_mode") ? jstr(b, "last_mode") : "absent";
		table_row(&t,
			  (const char *const[]){
			      jstr(b, "id"),
			      *jstr(b, "board") ? jstr(b, "board") : jstr(b, "candidates"),
			      jstr(b, "port"), mode, jstr(b, "profile"), version, jstr(b, "state"),
			      *jstr(b, "by_id") ? jstr(b, "by_id") : jstr(b, "tty")});
	}
	table_print(&t);
	if (json_object_array_length(arr) == 0)
		printf("(no boards connected)\n");
	for (size_t i = 0; i < json_object_array_length(arr); i++) {
		json_object *b = json_object_array_get_idx(arr, i);

		if (strcmp(jstr(b, "state"), "needs-power-cycle") == 0)
			printf("\n%s on port %s needs a power cycle: %s\n", jstr(b, "board"),
			       jstr(b, "port"), jstr(b, "why"));
	}
	json_object_put(resp);
	return EXIT_OK;
}

static int
cmd_catalog(struct ctl *c, char **args)
{
	static const char *const path_names[] = {"katapult", "rom-dfu", "dfu-button",
						 "sd",	     "lpc-dfu", "bootsel"};
	size_t n;
	const struct catalog_board *boards = catalog_boards(&n);
	json_object *arr = json_object_new_array();
	struct table t = {.n_cols = 6};

	(void)args;
	table_row(
	    &t, (const char *const[]){"NAME", "MCU", "APP START", "BOOTLOADER", "PATHS", "TITLE"});
	for (size_t i = 0; i < n; i++) {
		const struct catalog_board *b = &boards[i];
		json_object *o = json_object_new_object(), *paths = json_object_new_array();
		char start[16], flash[16], plist[96] = "";

		(void)snprintf(start, sizeof(start), "0x%08x", b->app_start);
		(void)snprintf(flash, sizeof(flash), "0x%08x", b->mcu->flash_base);
		for (size_t k = 0; k < ELEMENTSOF(path_names); k++) {
			if (!(b->paths & (1u << k)))
				continue;
			json_object_array_add(paths, json_object_new_string(path_names[k]));
			if (plist[0])
				strcat(plist, ",");
			strcat(plist, path_names[k]);
		}
		json_object_object_add(o, "name", json_object_new_string(b->name));
		json_object_object_add(o, "title", json_object_new_string(b->title));
		json_object_object_add(o, "mcu", json_object_new_string(b->mcu->name));
		json_object_object_add(o, "chip", json_object_new_string(b->mcu->chip));
		json_object_object_add(
		    o, "family", json_object_new_string(catalog_family_to_string(b->mcu->family)));
		json_object_object_add(o, "flash_base", json_object_new_string(flash));
		json_object_object_add(o, "flash_size", json_object_new_int64(b->mcu->flash_size));
		json_object_object_add(o, "app_start", json_object_new_string(start));
		json_object_object_add(
		    o, "bootloader",
		    json_object_new_string(catalog_bootloader_to_string(b->bootloader)));
		json_object_object_add(o, "paths", paths);
		json_object_object_add(o, "notes",
				       json_object_new_string(b->notes ? b->notes : ""));
		json_object_array_add(arr, o);
		table_row(&t, (const char *const[]){b->name, b->mcu->name, start,
						    catalog_bootloader_to_string(b->bootloader),
						    plist, b->title});
	}
	if (c->json) {
		print_json(arr);
		for (size_t r = 0; r < t.n_rows * t.n_cols; r++)
			free(t.cells[r]);
		free(t.cells);
	} else {
		table_print(&t);
	}
	json_object_put(arr);
	return EXIT_OK;
}

static int
cmd_queued(struct ctl *c, char **args)
{
	json_object *resp, *arr;
	struct table t = {.n_cols = 6};
	int code = call(c, request("queued"), &resp);

	(void)args;
	if (code)
		return code;
	json_object_object_get_ex(resp, "queued", &arr);
	if (c->json) {
		print_json(arr);
	} else {
		table_row(&t, (const char *const[]){"PROFILE", "SHA256", "FORMAT", "SIZE", "QUEUED",
						    "SOURCE"});
		for (size_t i = 0; i < json_object_array_length(arr); i++) {
			json_object *e = json_object_array_get_idx(arr, i);
			char sha[16];

			(void)snprintf(sha, sizeof(sha), "%.12s", jstr(e, "sha256"));
			table_row(&t,
				  (const char *const[]){jstr(e, "profile"), sha, jstr(e, "format"),
							jstr(e, "size"), jstr(e, "queued_at"),
							jstr(e, "source")});
		}
		table_print(&t);
	}
	json_object_put(resp);
	return EXIT_OK;
}

static int
cmd_history(struct ctl *c, char **args)
{
	json_object *req = request("history"), *resp, *arr;
	struct table t = {.n_cols = 9};
	int code;

	(void)args;
	if (c->board)
		json_object_object_add(req, "board", json_object_new_string(c->board));
	if (c->limit)
		json_object_object_add(req, "limit", json_object_new_int64(c->limit));
	code = call(c, req, &resp);
	if (code)
		return code;
	json_object_object_get_ex(resp, "history", &arr);
	if (c->json) {
		print_json(arr);
	} else {
		table_row(&t, (const char *const[]){"JOB", "STARTED", "BOARD", "PORT", "METHOD",
						    "VERSION", "TOOK", "RESULT", "ERROR"});
		for (size_t i = 0; i < json_object_array_length(arr); i++) {
			json_object *e = json_object_array_get_idx(arr, i);
			char from[80], to[80], versions[200], took[32];
			int64_t secs =
			    json_object_get_int64(json_object_object_get(e, "duration_sec"));

			version_of(e, "old_version", "old_sha256", from, sizeof(from));
			version_of(e, "version", "sha256", to, sizeof(to));
			(void)snprintf(versions, sizeof(versions), "%s -> %s", from, to);
			if (strcmp(jstr(e, "result"), "running") == 0)
				(void)snprintf(took, sizeof(took), "-");
			else
				(void)snprintf(took, sizeof(took), "%lld:%02lld",
					       (long long)(secs / 60), (long long)(secs % 60));
			table_row(&t, (const char *const[]){jstr(e, "job"), jstr(e, "started_at"),
							    jstr(e, "board"), jstr(e, "port"),
							    jstr(e, "method"), versions, took,
							    jstr(e, "result"), jstr(e, "error")});
		}
		table_print(&t);
		if (json_object_array_length(arr) == 0)
			printf("(no flash jobs yet)\n");
	}
	json_object_put(resp);
	return EXIT_OK;
}

/* Progress of the jobs `watch` follows, one per job id. */
struct watch_jobs {
	char id[16][24];
	struct progress p[16];
	size_t n;
};

static struct progress *
watch_progress(struct watch_jobs *w, const char *id, const char *label)
{
	size_t i;

	for (i = 0; i < w->n; i++)
		if (strcmp(w->id[i], id) == 0)
			return &w->p[i];
	i = w->n < ELEMENTSOF(w->id) ? w->n++ : 0; /* the oldest slot when full */
	(void)str_copy(w->id[i], sizeof(w->id[i]), id);
	/* a log of events: quarter lines even on a terminal, a bar would tear it apart */
	progress_init(&w->p[i], stdout, false, label);
	return &w->p[i];
}

static void
print_event(json_object *ev, struct watch_jobs *w, bool verbose)
{
	json_object *data = NULL;
	const char *name = jstr(ev, "event");
	char when[32];
	time_t t = (time_t)json_object_get_int64(json_object_object_get(ev, "time"));
	struct tm tm;

	json_object_object_get_ex(ev, "data", &data);
	if (!localtime_r(&t, &tm) || !strftime(when, sizeof(when), "%H:%M:%S", &tm))
		(void)str_copy(when, sizeof(when), "--:--:--");
	if (data && strcmp(name, "job-progress") == 0) {
		char label[64];

		(void)snprintf(label, sizeof(label), "%s job %s %.20s", when, jstr(data, "job"),
			       *jstr(data, "board") ? jstr(data, "board") : jstr(data, "port"));
		progress_update(
		    watch_progress(w, jstr(data, "job"), label), jstr(data, "phase"),
		    (uint64_t)json_object_get_int64(json_object_object_get(data, "done")),
		    (uint64_t)json_object_get_int64(json_object_object_get(data, "total")));
		return;
	}
	/* a board re-enumerates several times per flash: that is detail, for --verbose */
	if (!verbose && (strcmp(name, "board-updated") == 0 || strcmp(name, "board-gone") == 0))
		return;
	printf("%s %-20s", when, name);
	if (data && strncmp(name, "job-", 4) == 0) {
		printf(" job %s %s port %s", jstr(data, "job"),
		       *jstr(data, "board") ? jstr(data, "board") : "board", jstr(data, "port"));
		if (strcmp(name, "job-step") == 0)
			printf(" step %s", jstr(data, "step"));
		else if (strcmp(name, "job-finished") == 0)
			printf(" %s: %s", jstr(data, "result"), jstr(data, "message"));
	} else if (data && *jstr(data, "port")) {
		printf(" %s port %s mode %s%s%s",
		       *jstr(data, "board") ? jstr(data, "board") : "board", jstr(data, "port"),
		       jstr(data, "mode"), *jstr(data, "profile") ? " profile " : "",
		       jstr(data, "profile"));
	}
	if (data && *jstr(data, "file"))
		printf(" '%s'", jstr(data, "file"));
	if (data && *jstr(data, "profile") && !*jstr(data, "port"))
		printf(" for profile %s", jstr(data, "profile"));
	if (data && *jstr(data, "reason"))
		printf(": %s", jstr(data, "reason"));
	printf("\n");
	fflush(stdout);
}

static int
cmd_watch(struct ctl *c, char **args)
{
	struct watch_jobs *w = xnew(struct watch_jobs);
	char *buf = NULL, *line;
	size_t len = 0;
	int fd = subscribe(c, &buf, &len);

	(void)args;
	if (fd < 0) {
		free(w);
		return unreachable(c, fd);
	}
	while ((line = read_line(fd, &buf, &len, -1))) {
		json_object *ev = json_tokener_parse(line);

		if (c->json)
			printf("%s\n", line);
		else if (ev)
			print_event(ev, w, c->verbose);
		fflush(stdout);
		json_object_put(ev);
		free(line);
	}
	free(buf);
	free(w);
	close_fd(fd);
	/* the daemon went away (stopped, restarted, crashed): a follower must know; with --json
	 * as one more line of the stream */
	if (c->json) {
		printf("{\"ok\":false,\"error\":\"skrflashd stopped\",\"exit\":%d}\n",
		       EXIT_UNREACHABLE);
		return EXIT_UNREACHABLE;
	}
	return fail(c, EXIT_UNREACHABLE, "skrflashd stopped: the connection to %s closed",
		    c->socket_path);
}

static int
copy_fd(int in, int out)
{
	char buf[65536];

	for (;;) {
		ssize_t n = read(in, buf, sizeof(buf)), w = 0;

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return 0;
		while (w < n) {
			ssize_t k = write(out, buf + w, (size_t)(n - w));

			if (k < 0 && errno == EINTR)
				continue;
			if (k < 0)
				return -errno;
			w += k;
		}
	}
}

static int load_ctl_config(struct ctl *c);

/* The names a queue accepts, for "did you mean". */
static const char *
closest_profile(const struct config *cfg, const char *name)
{
	struct str_closest cl = {.word = name};

	for (size_t i = 0; cfg && i < cfg->n_profiles; i++) {
		str_closest_add(&cl, cfg->profiles[i].name);
		str_closest_add(&cl, cfg->profiles[i].queue);
	}
	return cl.best;
}

/* What the queue needs to know about a profile when the daemon is not running: this
 * client's reading of the same configuration file, and the image checked against it. */
struct queue_target {
	char profile[128];
	char queue[128];
	char queue_dir[4096]; /* the daemon's, when it answered */
	uint64_t max_size;
	bool offline;
};

static int
queue_check_offline(struct ctl *c, const char *name, const char *file, struct queue_target *qt)
{
	const struct config_profile *p;
	struct validate_target t = {0};
	struct verdict v;
	uint8_t *data = NULL;
	size_t size = 0;
	int r, code = load_ctl_config(c);

	if (code)
		return code;
	p = config_find_profile(c->cfg, name);
	if (!p)
		p = config_find_queue(c->cfg, name);
	if (!p) {
		const char *best = closest_profile(c->cfg, name);

		return fail(c, EXIT_FAILED, "no profile or queue named '%s' in %s%s%s%s", name,
			    c->cfg->path ? c->cfg->path : "the built-in catalog",
			    best ? "; did you mean '" : "", best ? best : "", best ? "'?" : "");
	}
	(void)str_copy(qt->profile, sizeof(qt->profile), p->name);
	(void)str_copy(qt->queue, sizeof(qt->queue), p->queue);
	qt->max_size = catalog_max_flash_size();
	qt->offline = true;
	r = read_file(file, qt->max_size, &data, &size);
	if (r == -EFBIG)
		return EXIT_OK; /* the size check that follows says it */
	if (r < 0)
		return fail(c, EXIT_USAGE, "cannot read %s: %s", file, strerror(-r));
	if (!p->match.board) {
		struct image img;
		const char *err = NULL;

		r = image_parse(data, size, &img, &err);
		free(data);
		if (r < 0)
			return fail(c, EXIT_FAILED, "refused %s: not a firmware image: %s", file,
				    err ? err : "malformed");
		image_done(&img);
		return EXIT_OK;
	}
	t.board = p->match.board;
	t.app_start = config_profile_app_start(p);
	t.interface = p->interface;
	t.file_name = file;
	r = validate_image(data, size, &t, &v);
	free(data);
	if (r < 0)
		return fail(c, EXIT_FAILED, "cannot validate %s: %s", file, strerror(-r));
	code = v.accepted ? EXIT_OK
			  : fail(c, EXIT_FAILED, "refused %s for profile '%s': %s", file, p->name,
				 v.n_reasons ? v.reasons[0] : "it does not fit the board");
	verdict_done(&v);
	return code;
}

/* Ask the running daemon which queue a name feeds and how large a file it takes; -1 when
 * it does not run (then the caller checks offline). */
static int
queue_check_daemon(struct ctl *c, const char *name, struct queue_target *qt)
{
	json_object *req = request("profile"), *resp, *p;
	int code;

	json_object_object_add(req, "profile", json_object_new_string(name));
	code = call_ex(c, req, &resp, true);
	if (code)
		return code;
	json_object_object_get_ex(resp, "profile", &p);
	(void)str_copy(qt->profile, sizeof(qt->profile), jstr(p, "name"));
	(void)str_copy(qt->queue, sizeof(qt->queue), jstr(p, "queue"));
	qt->max_size = (uint64_t)json_object_get_int64(json_object_object_get(p, "max_file_size"));
	(void)str_copy(qt->queue_dir, sizeof(qt->queue_dir), jstr(resp, "queue_dir"));
	json_object_put(resp);
	if (!qt->queue[0] || strchr(qt->queue, '/') || qt->queue[0] == '.')
		return fail(c, EXIT_FAILED, "skrflashd named no usable queue for '%s'", name);
	return EXIT_OK;
}

/* Rename tmp into dir under base, or base-2, base-3, ... before the extension: a file of
 * the same name still waiting there is never replaced. Sets *ret_name. */
static int
place_unique(const char *tmp, const char *dir, const char *base, char **ret_name)
{
	const char *dot = strrchr(base, '.');
	size_t stem = dot && dot != base ? (size_t)(dot - base) : strlen(base);

	for (unsigned i = 1; i <= 100; i++) {
		char *name = i == 1 ? xstrdup(base)
				    : xasprintf("%.*s-%u%s", (int)stem, base, i, base + stem);
		char *target = xasprintf("%s/%s", dir, name);
		int r = renameat2(AT_FDCWD, tmp, AT_FDCWD, target, RENAME_NOREPLACE);

		r = r < 0 ? -errno : 0;
		free(target);
		if (r == 0) {
			*ret_name = name;
			return 0;
		}
		free(name);
		if (r != -EEXIST)
			return r;
	}
	return -EEXIST;
}

/* Wait for the daemon's verdict on the file `name` in the queue. */
static int
queue_wait_verdict(struct ctl *c, int watch, char **buf, size_t *len, const char *name)
{
	char *line;

	while ((line = read_line(watch, buf, len, 30000))) {
		json_object *ev = json_tokener_parse(line), *data = NULL;
		const char *ename = jstr(ev, "event");
		bool ok = strcmp(ename, "firmware-queued") == 0;

		free(line);
		if (ev)
			json_object_object_get_ex(ev, "data", &data);
		if (!data || strcmp(jstr(data, "file"), name) != 0 ||
		    (!ok && strcmp(ename, "firmware-rejected") != 0)) {
			json_object_put(ev);
			continue;
		}
		if (c->json) {
			json_object_object_add(data, "ok", json_object_new_boolean(ok));
			print_json(data);
		} else if (ok) {
			printf("queued %s for profile '%s' (sha256 %s)\n", name,
			       jstr(data, "profile"), jstr(data, "sha256"));
		} else {
			printf("refused %s: %s\n", name, jstr(data, "reason"));
		}
		json_object_put(ev);
		return ok ? EXIT_OK : EXIT_FAILED;
	}
	return fail(c, EXIT_FAILED, "%s was queued but skrflashd did not report on it in time",
		    name);
}

static int
queue_copy(struct ctl *c, int in, const char *file, const char *dir, const char *base,
	   char **ret_tmp)
{
	char *tmp = xasprintf("%s/.%s.XXXXXX", dir, base);
	int out = mkostemp(tmp, O_CLOEXEC), r;

	if (out < 0) {
		r = errno;
		free(tmp);
		return fail(c, r == EACCES ? EXIT_DENIED : EXIT_FAILED, "cannot write into %s: %s",
			    dir, strerror(r));
	}
	r = copy_fd(in, out);
	if (r >= 0 && (fchmod(out, 0640) < 0 || fsync(out) < 0))
		r = -errno;
	/* closed before the rename: the daemon refuses files still open for writing */
	if (close(out) < 0 && r >= 0)
		r = -errno;
	if (r < 0) {
		(void)unlink(tmp);
		free(tmp);
		return fail(c, EXIT_FAILED, "cannot copy %s: %s", file, strerror(-r));
	}
	*ret_tmp = tmp;
	return EXIT_OK;
}

/* Which queue the file goes to and whether it fits any board's flash: the running daemon's
 * answer, else this client's reading of the configuration. */
static int
queue_resolve(struct ctl *c, const char *name, const char *file, uint64_t size,
	      struct queue_target *qt)
{
	int code = queue_check_daemon(c, name, qt);

	if (code < 0)
		code = queue_check_offline(c, name, file, qt);
	if (code)
		return code;
	/* before a single byte is copied: the daemon would refuse it at pickup anyway */
	if (size > qt->max_size)
		return fail(c, EXIT_FAILED,
			    "%s is %llu bytes, larger than any board's flash (%llu bytes): not "
			    "queued, nothing copied",
			    file, (unsigned long long)size, (unsigned long long)qt->max_size);
	return EXIT_OK;
}

/* The queue's directory (the daemon's queue_dir when it answered), created if missing;
 * *ret_dir is malloc'd, also on failure. */
static int
queue_make_dir(struct ctl *c, const struct queue_target *qt, char **ret_dir)
{
	int code, r;

	if (!c->queue_dir && qt->queue_dir[0]) {
		c->queue_buf = xstrdup(qt->queue_dir);
		c->queue_dir = c->queue_buf;
	}
	if (!c->queue_dir && (code = load_ctl_config(c)))
		return code;
	*ret_dir = xasprintf("%s/%s", c->queue_dir, qt->queue);
	r = mkdir_p(*ret_dir, 0770);
	if (r < 0)
		return fail(c, r == -EACCES ? EXIT_DENIED : EXIT_FAILED, "cannot create %s: %s",
			    *ret_dir, strerror(-r));
	return EXIT_OK;
}

/* The file is in the queue as `name`: what the user may not expect. */
static void
queue_notices(const struct ctl *c, const char *file, const char *base, const char *name,
	      const struct queue_target *qt)
{
	if (strcmp(name, base) != 0 && !c->json)
		printf("a file named %s is still waiting in the queue: this one is %s\n", base,
		       name);
	if (qt->offline && !c->json)
		printf("skrflashd is not running: %s was checked offline against %s and is "
		       "picked up when skrflashd starts\n",
		       file, c->cfg && c->cfg->path ? c->cfg->path : "the built-in catalog");
}

/* Queued without waiting for the daemon's verdict (--no-wait, or no daemon running). */
static int
queue_print_queued(const struct ctl *c, const char *name, const struct queue_target *qt)
{
	if (c->json) {
		json_object *o = json_object_new_object();

		json_object_object_add(o, "ok", json_object_new_boolean(true));
		json_object_object_add(o, "file", json_object_new_string(name));
		json_object_object_add(o, "profile", json_object_new_string(qt->profile));
		json_object_object_add(o, "checked_offline", json_object_new_boolean(qt->offline));
		print_json(o);
		json_object_put(o);
	} else {
		printf("queued %s for profile '%s'\n", name, qt->profile);
	}
	return EXIT_OK;
}

static int
cmd_queue(struct ctl *c, char **args)
{
	const char *file = args[1];
	struct queue_target qt = {0};
	char *copy = xstrdup(file), *base = basename(copy);
	char *dir = NULL, *tmp = NULL, *name = NULL, *buf = NULL;
	size_t len = 0;
	int in = -1, watch = -1, code, r;
	struct stat st;

	in = open(file, O_RDONLY | O_CLOEXEC);
	if (in < 0 || fstat(in, &st) < 0 || !S_ISREG(st.st_mode)) {
		code = fail(c, EXIT_USAGE, "cannot read %s: %s", file,
			    in < 0 ? strerror(errno) : "not a regular file");
		goto out;
	}
	code = queue_resolve(c, args[0], file, (uint64_t)st.st_size, &qt);
	if (code)
		goto out;
	code = queue_make_dir(c, &qt, &dir);
	if (code)
		goto out;
	code = queue_copy(c, in, file, dir, base, &tmp);
	if (code)
		goto out;
	watch = !qt.offline && !c->no_wait ? subscribe(c, &buf, &len) : -1;
	r = place_unique(tmp, dir, base, &name);
	if (r < 0 || !name) {
		code = fail(c, EXIT_FAILED, "cannot move %s into the queue %s: %s", file, dir,
			    r == -EEXIST ? "100 files of that name are waiting already"
					 : strerror(-r));
		goto out;
	}
	free(tmp);
	tmp = NULL;
	queue_notices(c, file, base, name, &qt);
	code = watch < 0 ? queue_print_queued(c, name, &qt)
			 : queue_wait_verdict(c, watch, &buf, &len, name);
out:
	if (tmp)
		(void)unlink(tmp);
	close_fd(in);
	close_fd(watch);
	free(buf);
	free(tmp);
	free(name);
	free(dir);
	free(copy);
	return code;
}

static void
print_plan(json_object *plan)
{
	json_object *units = json_object_object_get(plan, "stop_units"), *gates;

	printf("dry run: %s on port %s would be flashed; nothing was touched\n",
	       jstr(plan, "board"), jstr(plan, "port"));
	printf("  firmware:    %s -> %s\n", *jstr(plan, "from") ? jstr(plan, "from") : "unknown",
	       jstr(plan, "to"));
	printf("  method:      %s\n", jstr(plan, "method"));
	printf("  stop units:  ");
	for (size_t i = 0; units && i < json_object_array_length(units); i++)
		printf("%s%s", i ? ", " : "",
		       json_object_get_string(json_object_array_get_idx(units, i)));
	printf("%s\n", units && json_object_array_length(units) ? "" : "none");
	printf("  print state: %s\n", jstr(plan, "print_state"));
	if (json_object_object_get_ex(plan, "gates", &gates))
		for (size_t i = 0; i < json_object_array_length(gates); i++)
			printf("  gate:        %s\n",
			       json_object_get_string(json_object_array_get_idx(gates, i)));
}

/* Follow the job the daemon started on `port` to its end: progress, steps, verdict. */
static int
follow_job(struct ctl *c, int watch, char **buf, size_t *len, const char *board, const char *port)
{
	struct progress p;
	char *line, job[24] = "";

	progress_init(&p, stdout, !c->json && isatty(STDOUT_FILENO) == 1, "");
	while ((line = read_line(watch, buf, len, -1))) {
		json_object *ev = json_tokener_parse(line), *data = NULL;
		const char *name = jstr(ev, "event");

		free(line);
		if (!ev || !json_object_object_get_ex(ev, "data", &data) ||
		    strcmp(jstr(data, "port"), port) != 0 || strncmp(name, "job-", 4) != 0 ||
		    (job[0] && strcmp(jstr(data, "job"), job) != 0)) {
			json_object_put(ev);
			continue;
		}
		(void)str_copy(job, sizeof(job), jstr(data, "job"));
		if (c->verbose && !c->json) {
			progress_break(&p);
			fprintf(stderr, "< %s\n", json_object_to_json_string(ev));
		}
		if (strcmp(name, "job-progress") == 0 && !c->json) {
			progress_update(
			    &p, jstr(data, "phase"),
			    (uint64_t)json_object_get_int64(json_object_object_get(data, "done")),
			    (uint64_t)json_object_get_int64(json_object_object_get(data, "total")));
		} else if (strcmp(name, "job-step") == 0 && !c->json) {
			progress_break(&p);
			printf("%s: %s\n", board, jstr(data, "step"));
		} else if (strcmp(name, "job-note") == 0 && !c->json) {
			progress_break(&p);
			printf("%s: %s\n", board, jstr(data, "message"));
		} else if (strcmp(name, "job-finished") == 0) {
			bool ok = strcmp(jstr(data, "result"), "succeeded") == 0;

			progress_break(&p);
			if (c->json) {
				json_object_object_add(data, "ok", json_object_new_boolean(ok));
				print_json(data);
			} else {
				printf("%s: %s\n", jstr(data, "result"), jstr(data, "message"));
			}
			json_object_put(ev);
			return ok ? EXIT_OK : EXIT_FAILED;
		}
		fflush(stdout);
		json_object_put(ev);
	}
	progress_break(&p);
	return fail(c, EXIT_UNREACHABLE,
		    "skrflashd stopped before the flash of %s finished; `skrflashctl history` "
		    "shows where it ended",
		    board);
}

static int
cmd_flash(struct ctl *c, char **args)
{
	json_object *req = request("flash"), *resp, *b;
	char *buf = NULL, port[64] = "";
	size_t len = 0;
	int code, watch = -1;

	/* subscribed before the request, so that no event of the job is missed */
	if (!c->dry_run) {
		watch = subscribe(c, &buf, &len);
		if (watch < 0) {
			json_object_put(req);
			free(buf);
			return unreachable(c, watch);
		}
	}
	json_object_object_add(req, "board", json_object_new_string(args[0]));
	if (c->force)
		json_object_object_add(req, "force", json_object_new_boolean(true));
	if (c->dry_run)
		json_object_object_add(req, "dry_run", json_object_new_boolean(true));
	code = call(c, req, &resp);
	if (code) {
		close_fd(watch);
		free(buf);
		return code;
	}
	if (c->dry_run) {
		json_object *plan = json_object_object_get(resp, "plan");

		if (c->json)
			print_json(resp);
		else
			print_plan(plan);
		json_object_put(resp);
		return EXIT_OK;
	}
	if (json_object_object_get_ex(resp, "board", &b))
		(void)str_copy(port, sizeof(port), jstr(b, "port"));
	json_object_put(resp);
	code = follow_job(c, watch, &buf, &len, args[0], port);
	close_fd(watch);
	free(buf);
	return code;
}

static int
cmd_retry(struct ctl *c, char **args)
{
	json_object *req = request("retry"), *resp;
	int code;

	json_object_object_add(req, "board", json_object_new_string(args[0]));
	code = call(c, req, &resp);
	if (code)
		return code;
	if (c->json)
		print_json(resp);
	else if (*jstr(resp, "message"))
		printf("%s\n", jstr(resp, "message"));
	else
		printf("%s: firmware that failed to boot there may be flashed again\n", args[0]);
	json_object_put(resp);
	return EXIT_OK;
}

static char **argv_add(char **v, const char *first, ...) __attribute__((sentinel));

static char **
argv_add(char **v, const char *first, ...)
{
	va_list ap;

	va_start(ap, first);
	v = strv_append_va(v, first, ap);
	va_end(ap);
	return v;
}

/* Run a command that parses its own line (validate, flash --device, reboot, rescue) on the
 * argv built for it, and free it: the command's exit code. */
static int
run_argv(int (*command)(int argc, char **argv), char **argv)
{
	int code = command((int)strv_length(argv), argv);

	strv_free(argv);
	return code;
}

static const char *
closest_board(const char *name)
{
	struct str_closest cl = {.word = name};
	size_t n;
	const struct catalog_board *all = catalog_boards(&n);

	for (size_t i = 0; i < n; i++)
		str_closest_add(&cl, all[i].name);
	return cl.best;
}

static int
unknown_board(const struct ctl *c, const char *name)
{
	const char *best = closest_board(name);

	return fail(c, EXIT_USAGE, "unknown board '%s'%s%s%s (`skrflashctl catalog` lists them)",
		    name, best ? "; did you mean '" : "", best ? best : "", best ? "'?" : "");
}

/* validate and flash --device parse their own options: hand them what was given here, in
 * their order (options first), with the global ones they understand. */
static int
cmd_validate(struct ctl *c, char **args)
{
	char **argv;

	if (!!c->board == !!c->profile)
		return fail(c, EXIT_USAGE, "validate needs --board NAME or --profile NAME");
	if (c->board && !catalog_find(c->board))
		return unknown_board(c, c->board);
	if (c->profile) {
		int code = load_ctl_config(c);

		if (code)
			return code;
		if (!config_find_profile(c->cfg, c->profile)) {
			const char *best = closest_profile(c->cfg, c->profile);

			return fail(c, EXIT_USAGE, "no profile named '%s' in %s%s%s%s", c->profile,
				    c->cfg->path ? c->cfg->path : "the built-in catalog",
				    best ? "; did you mean '" : "", best ? best : "",
				    best ? "'?" : "");
		}
	}
	argv = strv_new("validate", c->board ? "--board" : "--profile",
			c->board ? c->board : c->profile, (char *)NULL);
	if (c->json)
		argv = argv_add(argv, "--json", (char *)NULL);
	if (c->profile && c->cfg && c->cfg->path)
		argv = argv_add(argv, "--config", c->cfg->path, (char *)NULL);
	argv = argv_add(argv, args[0], (char *)NULL);
	return run_argv(validate_command, argv);
}

static int
cmd_flash_device(struct ctl *c, char **args)
{
	char **argv = strv_new("flash", "--device", c->device, (char *)NULL);

	if (c->board && !catalog_find(c->board)) {
		strv_free(argv);
		return unknown_board(c, c->board);
	}
	if (c->board)
		argv = argv_add(argv, "--board", c->board, (char *)NULL);
	if (c->method)
		argv = argv_add(argv, "--method", c->method, (char *)NULL);
	if (c->window)
		argv = argv_add(argv, "--window", c->window, (char *)NULL);
	if (c->force)
		argv = argv_add(argv, "--force", (char *)NULL);
	argv = argv_add(argv, args[0], (char *)NULL);
	return run_argv(oneshot_flash, argv);
}

/* reboot --device PATH: leave the bootloader for the application already in flash. */
static int
cmd_reboot(struct ctl *c, char **args)
{
	char **argv = strv_new("reboot", (char *)NULL);

	if (c->device)
		argv = argv_add(argv, "--device", c->device, (char *)NULL);
	if (c->board)
		argv = argv_add(argv, "--board", c->board, (char *)NULL);
	if (args[0])
		argv = argv_add(argv, args[0], (char *)NULL);
	return run_argv(oneshot_reboot, argv);
}

static int load_ctl_config_ex(struct ctl *c, bool report);

/* rescue --local / --dry-run: in this process (cli/rescuecmd). */
static int
rescue_here(struct ctl *c, char **args)
{
	const struct {
		const char *flag, *value;
	} pass[] = {
	    {"--board", c->board},
	    {"--device", c->device},
	    {"--baud", c->baud},
	    {"--crystal", c->crystal},
	    {"--reset-line", c->reset_line},
	    {"--boot-line", c->boot_line},
	    {"--save-old", c->save_old},
	    {"--config", c->config_path},
	};
	char **argv = strv_new("rescue", (char *)NULL);

	for (size_t i = 0; i < ELEMENTSOF(pass); i++)
		if (pass[i].value)
			argv = argv_add(argv, pass[i].flag, pass[i].value, (char *)NULL);
	if (c->dry_run)
		argv = argv_add(argv, "--dry-run", (char *)NULL);
	argv = argv_add(argv, args[0], (char *)NULL);
	return run_argv(rescue_command, argv);
}

/* rescue FILE / restore BOARD through the daemon: a job with the gates of a flash, journal
 * and history, followed to its end. */
static int
rescue_daemon(struct ctl *c, const char *file, const char *board, bool restore)
{
	json_object *req = request("rescue"), *resp, *r;
	char *buf = NULL, *abs = NULL, port[80] = "", name[80] = "";
	size_t len = 0;
	int code, watch;

	if (!c->socket_path && load_ctl_config_ex(c, false) != EXIT_OK)
		c->socket_path = SKRFLASH_RUNTIME_DIR "/" SKRFLASH_CONTROL_SOCKET_NAME;
	watch = subscribe(c, &buf, &len);
	if (watch < 0) {
		json_object_put(req);
		free(buf);
		if (is_unreachable(watch) && !restore)
			return fail(
			    c, EXIT_UNREACHABLE,
			    "skrflashd is not running (cannot connect to %s): start it, or "
			    "run the rescue in this process with --local (then nothing stops "
			    "Klipper and nothing is recorded in the journal or history)",
			    c->socket_path);
		return unreachable(c, watch);
	}
	if (board)
		json_object_object_add(req, "board", json_object_new_string(board));
	if (c->device)
		json_object_object_add(req, "device", json_object_new_string(c->device));
	if (restore)
		json_object_object_add(req, "restore", json_object_new_boolean(true));
	if (c->sha)
		json_object_object_add(req, "sha", json_object_new_string(c->sha));
	if (file) {
		abs = realpath(file, NULL);
		json_object_object_add(req, "file", json_object_new_string(abs ? abs : file));
		free(abs);
	}
	code = call(c, req, &resp);
	if (code) {
		close_fd(watch);
		free(buf);
		return code;
	}
	if (json_object_object_get_ex(resp, "rescue", &r)) {
		(void)str_copy(port, sizeof(port), jstr(r, "port"));
		(void)str_copy(name, sizeof(name), jstr(r, "board"));
		if (!c->json)
			printf("%s %s over %s with bootloader %.12s (skrflashd job; `skrflashctl "
			       "history` keeps it)\n",
			       restore ? "Restoring the bootloader of" : "Rescuing", name,
			       jstr(r, "device"), jstr(r, "sha256"));
	}
	json_object_put(resp);
	code = follow_job(c, watch, &buf, &len, name, port);
	close_fd(watch);
	free(buf);
	return code;
}

/* rescue FILE: install a USB bootloader over a UART (docs/rescue.md). */
static int
cmd_rescue(struct ctl *c, char **args)
{
	if (c->dry_run || c->local) {
		if (c->local && !c->dry_run && !c->json)
			fprintf(stderr,
				"skrflashctl rescue: --local: running here, without "
				"skrflashd: Klipper is not stopped and nothing is recorded\n");
		return rescue_here(c, args);
	}
	return rescue_daemon(c, args[0], c->board, false);
}

/* restore BOARD: the bootloader a rescue kept, written back over the same UART. */
static int
cmd_restore(struct ctl *c, char **args)
{
	return rescue_daemon(c, NULL, args[0], true);
}

/* ---- command line -------------------------------------------------------------------- */

/* Options, by their short letter; which a command takes is its `opts` string. */
enum {
	OPT_DRY_RUN = 'D',
	OPT_VERSION = 'V',
	OPT_BAUD = 'B',
	OPT_CRYSTAL = 'x',
	OPT_RESET_LINE = 'r',
	OPT_BOOT_LINE = 'i',
	OPT_SAVE_OLD = 'S',
	OPT_LOCAL = 'o',
	OPT_SHA = 'H',
};

static const struct option options[] = {
    {"json", no_argument, NULL, 'j'},
    {"socket", required_argument, NULL, 's'},
    {"config", required_argument, NULL, 'c'},
    {"queue-dir", required_argument, NULL, 'q'},
    {"help", no_argument, NULL, 'h'},
    {"version", no_argument, NULL, OPT_VERSION},
    {"verbose", no_argument, NULL, 'v'},
    {"all", no_argument, NULL, 'a'},
    {"board", required_argument, NULL, 'b'},
    {"profile", required_argument, NULL, 'p'},
    {"limit", required_argument, NULL, 'l'},
    {"no-wait", no_argument, NULL, 'n'},
    {"dry-run", no_argument, NULL, OPT_DRY_RUN},
    {"force", no_argument, NULL, 'f'},
    {"device", required_argument, NULL, 'd'},
    {"method", required_argument, NULL, 'm'},
    {"window", required_argument, NULL, 'w'},
    {"baud", required_argument, NULL, OPT_BAUD},
    {"crystal", required_argument, NULL, OPT_CRYSTAL},
    {"reset-line", required_argument, NULL, OPT_RESET_LINE},
    {"boot-line", required_argument, NULL, OPT_BOOT_LINE},
    {"save-old", required_argument, NULL, OPT_SAVE_OLD},
    {"local", no_argument, NULL, OPT_LOCAL},
    {"sha", required_argument, NULL, OPT_SHA},
    {NULL, 0, NULL, 0},
};

struct command {
	const char *name;
	unsigned min_args, max_args;
	const char *opts; /* command options it takes, by short letter */
	bool daemon;	  /* talks to skrflashd (needs the socket path) */
	int (*run)(struct ctl *c, char **args);
	const char *synopsis;
	const char *help;
};

static const struct command commands[] = {
    {"status", 0, 0, "", true, cmd_status, "status", "what the daemon is doing"},
    {"boards", 0, 0, "a", true, cmd_boards, "boards [--all]",
     "boards connected now: version, state, /dev/serial/by-id path (--all: every board "
     "ever seen)"},
    {"catalog", 0, 0, "", false, cmd_catalog, "catalog",
     "the built-in board catalog (no daemon needed)"},
    {"queue", 2, 2, "n", true, cmd_queue, "queue PROFILE FILE [--no-wait]",
     "drop firmware into PROFILE's queue and wait for the daemon's verdict"},
    {"queued", 0, 0, "", true, cmd_queued, "queued", "the firmware each profile wants"},
    {"history", 0, 0, "bl", true, cmd_history, "history [--board B] [--limit N]",
     "flash jobs, newest first: versions old -> new, duration, result"},
    {"watch", 0, 0, "", true, cmd_watch, "watch",
     "follow events as they happen (exits 3 when the daemon stops)"},
    {"validate", 1, 1, "bp", false, cmd_validate, "validate --board NAME|--profile NAME FILE",
     "check an image against a board (no daemon needed)"},
    {"flash", 1, 1, "bDfdmw", true, cmd_flash, "flash BOARD [--dry-run] [--force]",
     "flash a connected board now, through the daemon, and wait for the result;\n"
     "--dry-run runs every check and prints the plan without touching the board;\n"
     "--force also flashes an image that failed to boot on this board before"},
    {"retry", 1, 1, "", true, cmd_retry, "retry BOARD",
     "allow firmware that failed to boot on BOARD again, and flash it now"},
    {"reboot", 0, 1, "db", false, cmd_reboot, "reboot --device PATH [--board NAME]",
     "start the application already in flash: leave Katapult, ROM DFU, LPC DFU or BOOTSEL"},
    {"rescue", 1, 1, "bdDBxriSo", false, cmd_rescue,
     "rescue FILE [--board NAME] [--device TTY] [--dry-run] [--local]",
     "install a USB bootloader (Katapult) over a UART, keeping the application\n"
     "(docs/rescue.md): a skrflashd job (print-state gate, Klipper stopped, the old\n"
     "bootloader kept for `restore`, journal + history), the UART, lines and board from\n"
     "the rescue section of skrflash.conf; --dry-run prints the plan and the wiring;\n"
     "--local runs it here without the daemon (also --reset-line L, --boot-line L,\n"
     "--baud N, --crystal KHZ, --save-old FILE)"},
    {"restore", 1, 1, "dH", false, cmd_restore, "restore BOARD [--sha SHA] [--device TTY]",
     "write the bootloader the last rescue of BOARD kept (or stored file SHA) back over\n"
     "the same UART, through skrflashd"},
};

static void
usage(FILE *f)
{
	fprintf(f, "Usage: skrflashctl [OPTIONS] COMMAND [ARGS]\n\nCommands:\n");
	for (size_t i = 0; i < ELEMENTSOF(commands); i++) {
		const char *h = commands[i].help;

		fprintf(f, "  %s\n", commands[i].synopsis);
		while (h && *h) {
			size_t n = strcspn(h, "\n");

			fprintf(f, "      %.*s\n", (int)n, h);
			h += n + (h[n] == '\n');
		}
		if (strcmp(commands[i].name, "flash") == 0)
			fprintf(f, "  flash --device PATH FILE [--board NAME] [--method M] "
				   "[--window N]\n"
				   "      flash in the foreground, without the daemon\n");
	}
	fprintf(f, "\nOptions (anywhere on the line):\n"
		   "  --json             JSON output; errors too, as {\"ok\": false, ...}\n"
		   "  --config FILE      configuration for the commands that work offline\n"
		   "  --socket PATH      the daemon's control socket\n"
		   "  --queue-dir DIR    queue directory for `queue`\n"
		   "  -v, --verbose      show requests, answers and every event of a job\n"
		   "  --version          print the version\n"
		   "  -h, --help         this help\n"
		   "\nExit status: 0 success, 1 failed or refused, 2 usage error, 3 daemon not "
		   "reachable,\n4 permission denied.\n");
}

static int
load_ctl_config_ex(struct ctl *c, bool report)
{
	char *errors = NULL;
	const char *path = c->config_path;
	int r;

	if (c->cfg)
		return EXIT_OK;
	if (!path && access(SKRFLASH_CONFIG_FILE, R_OK) == 0)
		path = SKRFLASH_CONFIG_FILE;
	r = config_load(path, NULL, &c->cfg, &errors);
	if (r < 0) {
		int code = EXIT_USAGE;

		if (report)
			code = fail(c, EXIT_USAGE, "cannot load %s:\n%s",
				    path ? path : "(built-in)", errors ? errors : strerror(-r));
		else if (!c->json)
			fprintf(stderr, "skrflashctl: %s does not load (%s)\n",
				path ? path : "(built-in)", errors ? "invalid" : strerror(-r));
		free(errors);
		return code;
	}
	if (!c->queue_dir)
		c->queue_dir = c->cfg->queue_dir;
	if (!c->socket_path) {
		c->socket_buf = xasprintf("%s/" SKRFLASH_CONTROL_SOCKET_NAME, c->cfg->runtime_dir);
		c->socket_path = c->socket_buf;
	}
	return EXIT_OK;
}

static int
load_ctl_config(struct ctl *c)
{
	return load_ctl_config_ex(c, true);
}

static const struct command *
find_command(const struct ctl *c, const char *name)
{
	struct str_closest cl = {.word = name};

	for (size_t i = 0; i < ELEMENTSOF(commands); i++) {
		if (strcmp(commands[i].name, name) == 0)
			return &commands[i];
		str_closest_add(&cl, commands[i].name);
	}
	(void)fail(c, EXIT_USAGE, "unknown command '%s'%s%s%s (skrflashctl --help lists them)",
		   name, cl.best ? "; did you mean '" : "", cl.best ? cl.best : "",
		   cl.best ? "'?" : "");
	return NULL;
}

static int
unknown_option(const struct ctl *c, const char *arg)
{
	struct str_closest cl = {.word = arg + strspn(arg, "-")};
	char word[64];

	(void)str_copy(word, sizeof(word), cl.word);
	word[strcspn(word, "=")] = 0;
	cl.word = word;
	for (size_t i = 0; options[i].name; i++)
		str_closest_add(&cl, options[i].name);
	return fail(c, EXIT_USAGE, "unknown option or missing value: '%s'%s%s%s", arg,
		    cl.best ? "; did you mean '--" : "", cl.best ? cl.best : "",
		    cl.best ? "'?" : "");
}

/* The field an option with a value fills, or NULL when `opt` is not one of them. */
static const char **
option_value(struct ctl *c, int opt)
{
	const struct {
		int opt;
		const char **field;
	} map[] = {
	    {'s', &c->socket_path},
	    {'c', &c->config_path},
	    {'q', &c->queue_dir},
	    {'b', &c->board},
	    {'p', &c->profile},
	    {'d', &c->device},
	    {'m', &c->method},
	    {'w', &c->window},
	    {OPT_BAUD, &c->baud},
	    {OPT_CRYSTAL, &c->crystal},
	    {OPT_RESET_LINE, &c->reset_line},
	    {OPT_BOOT_LINE, &c->boot_line},
	    {OPT_SAVE_OLD, &c->save_old},
	    {OPT_SHA, &c->sha},
	};

	for (size_t i = 0; i < ELEMENTSOF(map); i++)
		if (map[i].opt == opt)
			return map[i].field;
	return NULL;
}

/* The flag an option without a value sets, or NULL when `opt` is not one of them. */
static bool *
option_flag(struct ctl *c, int opt)
{
	const struct {
		int opt;
		bool *field;
	} map[] = {
	    {'j', &c->json},	    {'v', &c->verbose},		{'a', &c->all},
	    {'n', &c->no_wait},	    {OPT_DRY_RUN, &c->dry_run}, {'f', &c->force},
	    {OPT_LOCAL, &c->local},
	};

	for (size_t i = 0; i < ELEMENTSOF(map); i++)
		if (map[i].opt == opt)
			return map[i].field;
	return NULL;
}

/* One pass over the whole line (GNU getopt permutes: options may follow the command). */
static int
parse_options(struct ctl *c, int argc, char **argv, char *seen, bool *ret_exit)
{
	int opt;

	opterr = 0;
	optind = 1;
	while ((opt = getopt_long(argc, argv, ":hjvs:c:q:ab:p:l:nfd:m:w:", options, NULL)) != -1) {
		const char **value;
		bool *flag;
		uint32_t v;

		if (opt == '?' || opt == ':')
			return unknown_option(c, argv[optind - 1]);
		if (opt > 0 && opt < 128)
			seen[opt] = 1;
		if ((value = option_value(c, opt))) {
			*value = optarg;
			continue;
		}
		if ((flag = option_flag(c, opt))) {
			*flag = true;
			continue;
		}
		switch (opt) {
		case 'h':
			usage(stdout);
			*ret_exit = true;
			return EXIT_OK;
		case OPT_VERSION:
			printf("skrflashctl %s\n", SKRFLASH_VERSION);
			*ret_exit = true;
			return EXIT_OK;
		case 'l':
			if (parse_u32(optarg, &v) < 0 || v < 1 || v > 10000)
				return fail(c, EXIT_USAGE,
					    "--limit wants a number from 1 to 10000");
			c->limit = v;
			break;
		default:
			return unknown_option(c, argv[optind - 1]);
		}
	}
	return EXIT_OK;
}

/* The options given that `cmd` does not take: a usage error that names one. */
static int
check_options(const struct ctl *c, const struct command *cmd, const char *seen)
{
	static const char globals[] = "jvscqhV";

	if (strcmp(cmd->name, "flash") == 0 && !c->device && (seen['m'] || seen['w']))
		return fail(c, EXIT_USAGE, "--%s goes with flash --device PATH",
			    seen['m'] ? "method" : "window");
	if (strcmp(cmd->name, "flash") == 0 && c->device && c->dry_run)
		return fail(c, EXIT_USAGE, "flash --device takes no --dry-run");
	for (size_t i = 0; options[i].name; i++) {
		int o = options[i].val;

		if (!seen[o] || strchr(globals, o) || strchr(cmd->opts, o))
			continue;
		return fail(c, EXIT_USAGE, "'%s' takes no --%s (skrflashctl --help)", cmd->name,
			    options[i].name);
	}
	return EXIT_OK;
}

int
main(int argc, char **argv)
{
	struct ctl c = {0};
	const struct command *cmd;
	char seen[128] = {0};
	bool done = false;
	unsigned nargs;
	int code;

	code = parse_options(&c, argc, argv, seen, &done);
	if (code || done)
		return code;
	if (optind >= argc) {
		usage(stderr);
		return EXIT_USAGE;
	}
	cmd = find_command(&c, argv[optind]);
	if (!cmd)
		return EXIT_USAGE;
	c.cmd = cmd->name;
	code = check_options(&c, cmd, seen);
	if (code)
		return code;
	nargs = (unsigned)(argc - optind - 1);
	if (nargs < cmd->min_args || nargs > cmd->max_args) {
		fail(&c, EXIT_USAGE, "usage: skrflashctl %s", cmd->synopsis);
		return EXIT_USAGE;
	}
	if (strcmp(cmd->name, "flash") == 0 && c.device) {
		code = cmd_flash_device(&c, argv + optind + 1);
		goto out;
	}
	/* the daemon commands need only the socket; a broken config must not lock users out
	 * of asking the daemon what is wrong */
	if (cmd->daemon && !c.socket_path && load_ctl_config_ex(&c, false) != EXIT_OK) {
		config_free(c.cfg);
		c.cfg = NULL;
		c.socket_path = SKRFLASH_RUNTIME_DIR "/" SKRFLASH_CONTROL_SOCKET_NAME;
		if (!c.json)
			fprintf(stderr, "skrflashctl: using %s\n", c.socket_path);
	}
	code = cmd->run(&c, argv + optind + 1);
out:
	config_free(c.cfg);
	free(c.socket_buf);
	free(c.queue_buf);
	return code;
}
