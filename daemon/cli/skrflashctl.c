/* SPDX-License-Identifier: GPL-2.0-or-later */
/* skrflashctl: the command-line client of skrflashd, plus the commands that need no daemon
 * (catalog, validate, queue). Exit codes: 0 success, 1 failed or refused, 2 usage error,
 * 3 daemon not reachable, 4 permission denied. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <libgen.h>
#include <poll.h>
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
#include "cli/rescuecmd.h"
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
	struct config *cfg;
	char *socket_buf;
};

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

static int
unreachable(const struct ctl *c, int r)
{
	if (r == -EACCES || r == -EPERM) {
		fprintf(stderr,
			"skrflashctl: permission denied on %s: run as root or as a member of "
			"the skrflash group\n",
			c->socket_path);
		return EXIT_DENIED;
	}
	fprintf(stderr,
		"skrflashctl: skrflashd is not running (cannot connect to %s: %s)\n"
		"  start it with: systemctl start skrflashd\n",
		c->socket_path, strerror(-r));
	return EXIT_UNREACHABLE;
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
send_request(int fd, json_object *req)
{
	const char *s = json_object_to_json_string_ext(req, JSON_C_TO_STRING_PLAIN);
	size_t len = strlen(s);
	char *line = xasprintf("%s\n", s);
	ssize_t n = send(fd, line, len + 1, MSG_NOSIGNAL);

	free(line);
	return n == (ssize_t)(len + 1) ? 0 : -EIO;
}

/* One request, one response. Returns an exit code; *ret gets the response when ok. */
static int
call(const struct ctl *c, json_object *req, json_object **ret)
{
	char *buf = NULL, *line;
	size_t len = 0;
	json_object *resp, *ok;
	int fd = ctl_connect(c);

	if (fd < 0) {
		json_object_put(req);
		return unreachable(c, fd);
	}
	if (send_request(fd, req) < 0) {
		json_object_put(req);
		close_fd(fd);
		return unreachable(c, -EPIPE);
	}
	json_object_put(req);
	line = read_line(fd, &buf, &len, 30000);
	close_fd(fd);
	free(buf);
	if (!line) {
		fprintf(stderr, "skrflashctl: no answer from skrflashd\n");
		return EXIT_UNREACHABLE;
	}
	resp = json_tokener_parse(line);
	free(line);
	if (!resp || !json_object_object_get_ex(resp, "ok", &ok)) {
		json_object_put(resp);
		fprintf(stderr, "skrflashctl: malformed answer from skrflashd\n");
		return EXIT_FAILED;
	}
	if (!json_object_get_boolean(ok)) {
		const char *e = jstr(resp, "error");
		int code = strstr(e, "permission denied") ? EXIT_DENIED : EXIT_FAILED;

		fprintf(stderr, "skrflashctl: %s\n", e);
		json_object_put(resp);
		return code;
	}
	*ret = resp;
	return EXIT_OK;
}

static json_object *
request(const char *command)
{
	json_object *o = json_object_new_object();

	json_object_object_add(o, "command", json_object_new_string(command));
	return o;
}

/* ---- commands ---------------------------------------------------------------------- */

static int
cmd_status(struct ctl *c)
{
	json_object *resp;
	int code = call(c, request("status"), &resp);

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
		printf("queue:            %s\n", jstr(resp, "queue_dir"));
	}
	json_object_put(resp);
	return EXIT_OK;
}

static int
cmd_boards(struct ctl *c, bool all)
{
	json_object *req = request("boards"), *resp, *arr;
	struct table t = {.n_cols = 8};
	int code;

	if (all)
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
	table_row(&t, (const char *const[]){"ID", "BOARD", "PORT", "MODE", "PROFILE", "SERIAL",
					    "TTY", "INSTALLED"});
	for (size_t i = 0; i < json_object_array_length(arr); i++) {
		json_object *b = json_object_array_get_idx(arr, i);
		json_object *present;
		char sha[16];
		const char *mode = jstr(b, "mode");

		(void)snprintf(sha, sizeof(sha), "%.12s", jstr(b, "installed_sha256"));
		if (json_object_object_get_ex(b, "present", &present) &&
		    !json_object_get_boolean(present))
			mode = *jstr(b, "last_mode") ? jstr(b, "last_mode") : "absent";
		table_row(&t, (const char *const[]){jstr(b, "id"),
						    *jstr(b, "board") ? jstr(b, "board")
								      : jstr(b, "candidates"),
						    jstr(b, "port"), mode, jstr(b, "profile"),
						    jstr(b, "serial"), jstr(b, "tty"), sha});
	}
	table_print(&t);
	if (json_object_array_length(arr) == 0)
		printf("(no boards connected)\n");
	json_object_put(resp);
	return EXIT_OK;
}

static int
cmd_catalog(struct ctl *c)
{
	static const char *const path_names[] = {"katapult", "rom-dfu", "dfu-button",
						 "sd",	     "lpc-dfu", "bootsel"};
	size_t n;
	const struct catalog_board *boards = catalog_boards(&n);
	json_object *arr = json_object_new_array();
	struct table t = {.n_cols = 6};

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
cmd_queued(struct ctl *c)
{
	json_object *resp, *arr;
	struct table t = {.n_cols = 6};
	int code = call(c, request("queued"), &resp);

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
cmd_history(struct ctl *c, const char *board, unsigned limit)
{
	json_object *req = request("history"), *resp, *arr;
	struct table t = {.n_cols = 9};
	int code;

	if (board)
		json_object_object_add(req, "board", json_object_new_string(board));
	if (limit)
		json_object_object_add(req, "limit", json_object_new_int64(limit));
	code = call(c, req, &resp);
	if (code)
		return code;
	json_object_object_get_ex(resp, "history", &arr);
	if (c->json) {
		print_json(arr);
	} else {
		table_row(&t, (const char *const[]){"JOB", "STARTED", "BOARD", "PORT", "PROFILE",
						    "METHOD", "RESULT", "SHA256", "ERROR"});
		for (size_t i = 0; i < json_object_array_length(arr); i++) {
			json_object *e = json_object_array_get_idx(arr, i);
			char sha[16];

			(void)snprintf(sha, sizeof(sha), "%.12s", jstr(e, "sha256"));
			table_row(&t, (const char *const[]){
					  jstr(e, "job"), jstr(e, "started_at"), jstr(e, "board"),
					  jstr(e, "port"), jstr(e, "profile"), jstr(e, "method"),
					  jstr(e, "result"), sha, jstr(e, "error")});
		}
		table_print(&t);
		if (json_object_array_length(arr) == 0)
			printf("(no flash jobs yet)\n");
	}
	json_object_put(resp);
	return EXIT_OK;
}

static void
print_event(json_object *ev)
{
	json_object *data = NULL;
	const char *name = jstr(ev, "event");
	char when[32];
	time_t t = (time_t)json_object_get_int64(json_object_object_get(ev, "time"));
	struct tm tm;

	json_object_object_get_ex(ev, "data", &data);
	if (!localtime_r(&t, &tm) || !strftime(when, sizeof(when), "%H:%M:%S", &tm))
		(void)str_copy(when, sizeof(when), "--:--:--");
	printf("%s %-20s", when, name);
	if (data && strncmp(name, "job-", 4) == 0) {
		printf(" job %s %s port %s", jstr(data, "job"),
		       *jstr(data, "board") ? jstr(data, "board") : "board", jstr(data, "port"));
		if (strcmp(name, "job-progress") == 0) {
			int64_t done = json_object_get_int64(json_object_object_get(data, "done"));
			int64_t total =
			    json_object_get_int64(json_object_object_get(data, "total"));

			printf(" %s %lld/%lld bytes (%lld%%)", jstr(data, "phase"), (long long)done,
			       (long long)total, total ? (long long)(done * 100 / total) : 0LL);
		} else if (strcmp(name, "job-step") == 0) {
			printf(" step %s", jstr(data, "step"));
		} else if (strcmp(name, "job-finished") == 0) {
			printf(" %s: %s", jstr(data, "result"), jstr(data, "message"));
		}
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
	if (send_request(fd, req) < 0) {
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

static int
cmd_watch(struct ctl *c)
{
	char *buf = NULL, *line;
	size_t len = 0;
	int fd = subscribe(c, &buf, &len);

	if (fd < 0)
		return unreachable(c, fd);
	while ((line = read_line(fd, &buf, &len, -1))) {
		json_object *ev = json_tokener_parse(line);

		if (c->json)
			printf("%s\n", line);
		else if (ev)
			print_event(ev);
		fflush(stdout);
		json_object_put(ev);
		free(line);
	}
	free(buf);
	close_fd(fd);
	return EXIT_OK;
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

static int
cmd_queue(struct ctl *c, const char *profile, const char *file, bool wait)
{
	const struct config_profile *p = config_find_profile(c->cfg, profile);
	char *copy = xstrdup(file), *base = basename(copy);
	char *dir = NULL, *tmp = NULL, *target = NULL, *buf = NULL, *line;
	size_t len = 0;
	int in = -1, out = -1, watch = -1, code = EXIT_FAILED, r;
	struct stat st;

	if (!p)
		p = config_find_queue(c->cfg, profile);
	if (!p) {
		fprintf(stderr, "skrflashctl: no profile or queue named '%s' in %s\n", profile,
			c->cfg->path ? c->cfg->path : "the built-in catalog");
		goto out;
	}
	in = open(file, O_RDONLY | O_CLOEXEC);
	if (in < 0 || fstat(in, &st) < 0 || !S_ISREG(st.st_mode)) {
		fprintf(stderr, "skrflashctl: cannot read %s: %s\n", file,
			in < 0 ? strerror(errno) : "not a regular file");
		code = EXIT_USAGE;
		goto out;
	}
	dir = xasprintf("%s/%s", c->queue_dir, p->queue);
	r = mkdir_p(dir, 0770);
	if (r < 0) {
		fprintf(stderr, "skrflashctl: cannot create %s: %s\n", dir, strerror(-r));
		code = r == -EACCES ? EXIT_DENIED : EXIT_FAILED;
		goto out;
	}
	/* the queue contract: write under a dot-name, then rename into place */
	tmp = xasprintf("%s/.%s.XXXXXX", dir, base);
	out = mkostemp(tmp, O_CLOEXEC);
	if (out < 0) {
		fprintf(stderr, "skrflashctl: cannot write into %s: %s\n", dir, strerror(errno));
		code = errno == EACCES ? EXIT_DENIED : EXIT_FAILED;
		free(tmp);
		tmp = NULL;
		goto out;
	}
	r = copy_fd(in, out);
	if (r >= 0 && (fchmod(out, 0640) < 0 || fsync(out) < 0))
		r = -errno;
	/* closed before the rename: the daemon refuses files still open for writing */
	if (close(out) < 0 && r >= 0)
		r = -errno;
	out = -1;
	if (r < 0) {
		fprintf(stderr, "skrflashctl: cannot copy %s: %s\n", file, strerror(-r));
		goto out;
	}
	watch = wait ? subscribe(c, &buf, &len) : -1;
	target = xasprintf("%s/%s", dir, base);
	if (rename(tmp, target) < 0) {
		fprintf(stderr, "skrflashctl: cannot move %s into the queue: %s\n", file,
			strerror(errno));
		goto out;
	}
	free(tmp);
	tmp = NULL;
	if (watch < 0) {
		printf("queued %s for profile '%s'%s\n", base, p->name,
		       wait ? " (skrflashd is not running: it is picked up when it starts)" : "");
		code = EXIT_OK;
		goto out;
	}
	code = EXIT_FAILED;
	while ((line = read_line(watch, &buf, &len, 30000))) {
		json_object *ev = json_tokener_parse(line), *data = NULL;
		const char *name = jstr(ev, "event");

		free(line);
		if (ev)
			json_object_object_get_ex(ev, "data", &data);
		if (data && strcmp(jstr(data, "file"), base) == 0 &&
		    (strcmp(name, "firmware-queued") == 0 ||
		     strcmp(name, "firmware-rejected") == 0)) {
			bool ok = strcmp(name, "firmware-queued") == 0;

			if (c->json)
				print_json(data);
			else if (ok)
				printf("queued %s for profile '%s' (sha256 %s)\n", base,
				       jstr(data, "profile"), jstr(data, "sha256"));
			else
				printf("refused %s: %s\n", base, jstr(data, "reason"));
			code = ok ? EXIT_OK : EXIT_FAILED;
			json_object_put(ev);
			goto out;
		}
		json_object_put(ev);
	}
	fprintf(stderr, "skrflashctl: %s was queued but skrflashd did not report on it in time\n",
		base);
out:
	if (tmp)
		(void)unlink(tmp);
	close_fd(in);
	close_fd(out);
	close_fd(watch);
	free(buf);
	free(tmp);
	free(target);
	free(dir);
	free(copy);
	return code;
}

/* A progress bar on a terminal, plain lines otherwise. */
static void
show_progress(json_object *data, bool tty)
{
	int64_t done = json_object_get_int64(json_object_object_get(data, "done"));
	int64_t total = json_object_get_int64(json_object_object_get(data, "total"));
	int pct = total ? (int)(done * 100 / total) : 0;

	if (tty) {
		char bar[41];
		int fill = pct * 40 / 100;

		for (int i = 0; i < 40; i++)
			bar[i] = i < fill ? '#' : '.';
		bar[40] = 0;
		printf("\r%-7s [%s] %3d%% %lld/%lld", jstr(data, "phase"), bar, pct,
		       (long long)done, (long long)total);
	} else {
		printf("%s %d%% (%lld/%lld bytes)\n", jstr(data, "phase"), pct, (long long)done,
		       (long long)total);
	}
	fflush(stdout);
}

/* `flash BOARD` follows its job to the end; `retry BOARD` says what it started. */
static int
cmd_board_action(struct ctl *c, const char *command, const char *board, bool force)
{
	json_object *req = request(command), *resp, *b;
	bool follow = strcmp(command, "flash") == 0, tty = isatty(STDOUT_FILENO), bar = false;
	char *buf = NULL, *line, port[64] = "";
	size_t len = 0;
	int code, watch = -1;

	/* subscribed before the request, so that no event of the job is missed */
	if (follow)
		watch = subscribe(c, &buf, &len);
	json_object_object_add(req, "board", json_object_new_string(board));
	if (force)
		json_object_object_add(req, "force", json_object_new_boolean(true));
	code = call(c, req, &resp);
	if (code) {
		close_fd(watch);
		free(buf);
		return code;
	}
	if (json_object_object_get_ex(resp, "board", &b))
		(void)str_copy(port, sizeof(port), jstr(b, "port"));
	if (!follow || watch < 0 || c->json) {
		if (c->json)
			print_json(resp);
		else if (json_object_object_get_ex(resp, "message", &b))
			printf("%s %s: %s\n", command, board, json_object_get_string(b));
		else
			printf("%s %s: started\n", command, board);
		json_object_put(resp);
		close_fd(watch);
		free(buf);
		return EXIT_OK;
	}
	json_object_put(resp);
	code = EXIT_FAILED;
	while ((line = read_line(watch, &buf, &len, -1))) {
		json_object *ev = json_tokener_parse(line), *data = NULL;
		const char *name = jstr(ev, "event");

		free(line);
		if (!ev || !json_object_object_get_ex(ev, "data", &data) ||
		    strcmp(jstr(data, "port"), port) != 0) {
			json_object_put(ev);
			continue;
		}
		if (strcmp(name, "job-progress") == 0) {
			show_progress(data, tty);
			bar = tty;
		} else if (strcmp(name, "job-step") == 0) {
			if (bar)
				printf("\n");
			bar = false;
			printf("%s: %s\n", board, jstr(data, "step"));
		} else if (strcmp(name, "job-finished") == 0) {
			if (bar)
				printf("\n");
			printf("%s: %s\n", jstr(data, "result"), jstr(data, "message"));
			code =
			    strcmp(jstr(data, "result"), "succeeded") == 0 ? EXIT_OK : EXIT_FAILED;
			json_object_put(ev);
			break;
		}
		json_object_put(ev);
	}
	close_fd(watch);
	free(buf);
	return code;
}

static void
usage(FILE *f)
{
	fprintf(
	    f,
	    "Usage: skrflashctl [--json] [--socket PATH] [--config FILE] [--queue-dir DIR] "
	    "COMMAND\n"
	    "\n"
	    "Commands:\n"
	    "  status                      what the daemon is doing\n"
	    "  boards [--all]              boards connected now (--all: every board ever seen)\n"
	    "  catalog                     the built-in board catalog (no daemon needed)\n"
	    "  queue PROFILE FILE          drop firmware into PROFILE's queue and wait for the "
	    "verdict\n"
	    "        [--no-wait]\n"
	    "  queued                      the firmware each profile wants\n"
	    "  history [--board B] [--limit N]\n"
	    "                              flash jobs, newest first\n"
	    "  watch                       follow events as they happen\n"
	    "  validate --board NAME|--profile NAME FILE\n"
	    "                              check an image against a board (no daemon needed)\n"
	    "  flash [--force] BOARD       flash a connected board now (through the daemon);\n"
	    "                              --force: also an image that did not boot on it\n"
	    "  flash --device PATH FILE [--board NAME] [--method M]\n"
	    "                              flash in the foreground, without the daemon\n"
	    "  retry BOARD                 allow firmware that failed to boot on BOARD again,\n"
	    "                              and flash it now\n"
	    "  rescue --board NAME --device TTY [--dry-run] [--reset-line L] [--boot-line L]\n"
	    "         FILE                 install a USB bootloader over a UART (docs/rescue.md)\n"
	    "  reboot --device PATH [--board NAME]\n"
	    "                              leave Katapult or ROM DFU for the app in flash\n"
	    "\n"
	    "Exit status: 0 success, 1 failed or refused, 2 usage error, 3 daemon not reachable,\n"
	    "4 permission denied.\n");
}

static int
load_ctl_config(struct ctl *c)
{
	char *errors = NULL;
	const char *path = c->config_path;
	int r;

	if (!path && access(SKRFLASH_CONFIG_FILE, R_OK) == 0)
		path = SKRFLASH_CONFIG_FILE;
	r = config_load(path, NULL, &c->cfg, &errors);
	if (r < 0) {
		fprintf(stderr, "skrflashctl: cannot load %s:\n%s", path ? path : "(built-in)",
			errors ? errors : strerror(-r));
		free(errors);
		return EXIT_USAGE;
	}
	if (!c->queue_dir)
		c->queue_dir = c->cfg->queue_dir;
	if (!c->socket_path) {
		c->socket_buf = xasprintf("%s/" SKRFLASH_CONTROL_SOCKET_NAME, c->cfg->runtime_dir);
		c->socket_path = c->socket_buf;
	}
	return EXIT_OK;
}

int
main(int argc, char **argv)
{
	static const struct option global[] = {
	    {"json", no_argument, NULL, 'j'},	      {"socket", required_argument, NULL, 's'},
	    {"config", required_argument, NULL, 'c'}, {"queue-dir", required_argument, NULL, 'q'},
	    {"help", no_argument, NULL, 'h'},	      {NULL, 0, NULL, 0},
	};
	static const struct option sub[] = {
	    {"json", no_argument, NULL, 'j'},
	    {"all", no_argument, NULL, 'a'},
	    {"board", required_argument, NULL, 'b'},
	    {"limit", required_argument, NULL, 'l'},
	    {"no-wait", no_argument, NULL, 'n'},
	    {"force", no_argument, NULL, 'f'},
	    {NULL, 0, NULL, 0},
	};
	struct ctl c = {0};
	const char *cmd, *board = NULL;
	bool all = false, wait = true, force = false;
	unsigned limit = 0;
	int opt, code;

	while ((opt = getopt_long(argc, argv, "+hjs:c:q:", global, NULL)) != -1) {
		switch (opt) {
		case 'j':
			c.json = true;
			break;
		case 's':
			c.socket_path = optarg;
			break;
		case 'c':
			c.config_path = optarg;
			break;
		case 'q':
			c.queue_dir = optarg;
			break;
		case 'h':
			usage(stdout);
			return EXIT_OK;
		default:
			usage(stderr);
			return EXIT_USAGE;
		}
	}
	if (optind >= argc) {
		usage(stderr);
		return EXIT_USAGE;
	}
	cmd = argv[optind];
	if (strcmp(cmd, "validate") == 0)
		return validate_command(argc - optind, argv + optind);
	if (strcmp(cmd, "rescue") == 0)
		return rescue_command(argc - optind, argv + optind);
	if (strcmp(cmd, "reboot") == 0)
		return oneshot_reboot(argc - optind, argv + optind);
	/* flash --device: one-shot in the foreground, the daemon's backends without the daemon */
	for (int i = optind + 1; strcmp(cmd, "flash") == 0 && i < argc; i++)
		if (strcmp(argv[i], "--device") == 0 || strncmp(argv[i], "--device=", 9) == 0)
			return oneshot_flash(argc - optind, argv + optind);
	argc -= optind;
	argv += optind;
	optind = 1;
	while ((opt = getopt_long(argc, argv, "+", sub, NULL)) != -1) {
		uint32_t v;

		switch (opt) {
		case 'j':
			c.json = true;
			break;
		case 'a':
			all = true;
			break;
		case 'b':
			board = optarg;
			break;
		case 'l':
			if (parse_u32(optarg, &v) < 0 || v < 1 || v > 10000) {
				fprintf(stderr,
					"skrflashctl: --limit wants a number from 1 to 10000\n");
				return EXIT_USAGE;
			}
			limit = v;
			break;
		case 'n':
			wait = false;
			break;
		case 'f':
			force = true;
			break;
		default:
			usage(stderr);
			return EXIT_USAGE;
		}
	}
	/* the daemon commands need only the socket; a broken config must not lock users out
	 * of asking the daemon what is wrong */
	if (strcmp(cmd, "queue") == 0 || !c.socket_path) {
		code = load_ctl_config(&c);
		if (code && strcmp(cmd, "queue") == 0)
			goto out;
		if (code) {
			c.socket_path = SKRFLASH_RUNTIME_DIR "/" SKRFLASH_CONTROL_SOCKET_NAME;
			fprintf(stderr, "skrflashctl: using %s\n", c.socket_path);
		}
	}
	code = EXIT_USAGE;
#define NARGS(n)                                                                                   \
	if (argc - optind != (n)) {                                                                \
		fprintf(stderr, "skrflashctl: '%s' takes %d argument%s\n", cmd, (n),               \
			(n) == 1 ? "" : "s");                                                      \
		goto out;                                                                          \
	}
	if (strcmp(cmd, "status") == 0) {
		NARGS(0);
		code = cmd_status(&c);
	} else if (strcmp(cmd, "boards") == 0) {
		NARGS(0);
		code = cmd_boards(&c, all);
	} else if (strcmp(cmd, "catalog") == 0) {
		NARGS(0);
		code = cmd_catalog(&c);
	} else if (strcmp(cmd, "queue") == 0) {
		NARGS(2);
		code = cmd_queue(&c, argv[optind], argv[optind + 1], wait);
	} else if (strcmp(cmd, "queued") == 0) {
		NARGS(0);
		code = cmd_queued(&c);
	} else if (strcmp(cmd, "history") == 0) {
		NARGS(0);
		code = cmd_history(&c, board, limit);
	} else if (strcmp(cmd, "watch") == 0) {
		NARGS(0);
		code = cmd_watch(&c);
	} else if (strcmp(cmd, "flash") == 0 || strcmp(cmd, "retry") == 0) {
		NARGS(1);
		code = cmd_board_action(&c, cmd, argv[optind], force);
	} else {
		fprintf(stderr, "skrflashctl: unknown command '%s'\n", cmd);
		usage(stderr);
	}
#undef NARGS
out:
	config_free(c.cfg);
	free(c.socket_buf);
	return code;
}
