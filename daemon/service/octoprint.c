/* SPDX-License-Identifier: GPL-2.0-or-later */
/* octoprint: OctoPrint's print state and serial connection over its REST API (service/http,
 * json-c); the port released before a flash and given back after it. */
#include "service/octoprint.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#include "log.h"
#include "service/http.h"
#include "service/moonraker.h"
#include "util.h"

#define POLL_MS 200u
#define RETRY_USEC (10ull * 1000000ull)
#define RETRIES_MAX 5u

/* ---- pure: replies and decisions -------------------------------------------------------- */

/* a string member, null, or absent: 0 and copied ("" for null/absent); -EBADMSG otherwise */
static int
optional_string(struct json_object *o, const char *key, char *ret, size_t size)
{
	struct json_object *v = NULL;

	ret[0] = '\0';
	if (!json_object_object_get_ex(o, key, &v) || !v)
		return 0;
	if (!json_object_is_type(v, json_type_string))
		return -EBADMSG;
	escape_name(json_object_get_string(v), ret, size);
	return 0;
}

int
octoprint_parse_connection(const char *buf, size_t len, struct octoprint_conn *ret)
{
	struct json_object *root = http_json_parse(buf, len, NULL), *cur, *v = NULL, *st;
	int r = -EBADMSG;

	memset(ret, 0, sizeof(*ret));
	/* {"current": {"state": "Operational", "port": "/dev/ttyACM0", "baudrate": 250000,
	 *  "printerProfile": "_default"}, "options": {...}} (api/connection.html); port,
	 * baudrate and printerProfile are null while "Closed" */
	cur = http_json_member(root, "current", json_type_object);
	st = http_json_member(cur, "state", json_type_string);
	if (!st)
		goto out;
	escape_name(json_object_get_string(st), ret->state, sizeof(ret->state));
	if (optional_string(cur, "port", ret->port, sizeof(ret->port)) < 0 ||
	    optional_string(cur, "printerProfile", ret->profile, sizeof(ret->profile)) < 0)
		goto out;
	if (json_object_object_get_ex(cur, "baudrate", &v) && v) {
		int64_t b;

		if (!json_object_is_type(v, json_type_int))
			goto out;
		b = json_object_get_int64(v);
		if (b < 0 || b > 100000000)
			goto out;
		ret->baudrate = (long)b;
	}
	r = 0;
out:
	json_object_put(root);
	return r;
}

int
octoprint_parse_job(const char *buf, size_t len, char *ret_state, size_t size)
{
	struct json_object *root = http_json_parse(buf, len, NULL);
	struct json_object *st = http_json_member(root, "state", json_type_string);
	int r = -EBADMSG;

	/* {"job": {...}, "progress": {...}, "state": "Printing"} (api/job.html) */
	if (st && size > 0) {
		escape_name(json_object_get_string(st), ret_state, size);
		r = 0;
	}
	json_object_put(root);
	return r;
}

enum octoprint_activity
octoprint_activity(const char *state)
{
	/* comm.py getStateString: STATE_NONE/STATE_CLOSED "Offline", STATE_OPERATIONAL,
	 * STATE_ERROR, STATE_CLOSED_WITH_ERROR; "Closed" from get_current_connection */
	static const char *const idle[] = {"Operational", "Offline", "Closed", "Error",
					   "Offline after error"};
	/* STATE_STARTING, STATE_PRINTING (from SD, to SD), STATE_PAUSING, STATE_PAUSED,
	 * STATE_RESUMING, STATE_CANCELLING, STATE_FINISHING, STATE_TRANSFERING_FILE */
	static const char *const busy[] = {
	    "Starting",
	    "Starting print from SD",
	    "Starting to send file to SD",
	    "Printing",
	    "Printing from SD",
	    "Sending file to SD",
	    "Pausing",
	    "Paused",
	    "Resuming",
	    "Cancelling",
	    "Finishing",
	    "Transferring file to SD",
	};

	for (size_t i = 0; i < ELEMENTSOF(idle); i++)
		if (strcmp(state, idle[i]) == 0)
			return OCTOPRINT_IDLE;
	for (size_t i = 0; i < ELEMENTSOF(busy); i++)
		if (strcmp(state, busy[i]) == 0)
			return OCTOPRINT_BUSY;
	return OCTOPRINT_UNKNOWN;
}

char *
octoprint_connect_body(const struct octoprint_conn *c, const char *port)
{
	struct json_object *o = json_object_new_object();
	char *s;

	/* "connect": port, baudrate and printerProfile as it had them; a missing baudrate or
	 * profile lets OctoPrint use its preference (api/connection.html) */
	json_object_object_add(o, "command", json_object_new_string("connect"));
	json_object_object_add(o, "port", json_object_new_string(port));
	if (c->baudrate > 0)
		json_object_object_add(o, "baudrate", json_object_new_int64(c->baudrate));
	if (c->profile[0])
		json_object_object_add(o, "printerProfile", json_object_new_string(c->profile));
	s = xstrdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
	json_object_put(o);
	return s;
}

/* path with its symbolic links followed (at most 16) and "." and ".." folded: 0, or -errno.
 * By hand, not realpath(3): umockdev's preload, under which the tests run the daemon, does
 * not wrap it safely. */
static int
resolve(const char *path, char *ret, size_t size)
{
	char cur[PATH_MAX], link[PATH_MAX];

	if (!str_copy(cur, sizeof(cur), path) || cur[0] != '/')
		return -EINVAL;
	for (int hop = 0; hop < 16; hop++) {
		ssize_t n = readlink(cur, link, sizeof(link) - 1);

		if (n < 0)
			return errno == EINVAL && str_copy(ret, size, cur) ? 0 : -errno;
		link[n] = '\0';
		if (link[0] == '/') {
			(void)str_copy(cur, sizeof(cur), link);
		} else {
			char *slash = strrchr(cur, '/');

			slash[1] = '\0';
			if (strlen(cur) + (size_t)n >= sizeof(cur))
				return -ENAMETOOLONG;
			strcat(cur, link);
		}
		/* fold "/./" and "/x/../" */
		for (char *p; (p = strstr(cur, "/./"));)
			memmove(p, p + 2, strlen(p + 2) + 1);
		for (char *p; (p = strstr(cur, "/../"));) {
			char *q = p;

			while (q > cur && *--q != '/')
				;
			memmove(q, p + 3, strlen(p + 3) + 1);
		}
	}
	return -ELOOP;
}

bool
octoprint_port_is_board(const char *port, const char *tty, const char *by_id)
{
	char rp[PATH_MAX], rt[PATH_MAX];

	if (!port || !port[0] || !tty || !tty[0])
		return false;
	if (strcmp(port, tty) == 0 || (by_id && by_id[0] && strcmp(port, by_id) == 0))
		return true;
	/* another link to the same node (by-path, a udev alias) */
	return resolve(port, rp, sizeof(rp)) == 0 && resolve(tty, rt, sizeof(rt)) == 0 &&
	       strcmp(rp, rt) == 0;
}

/* ---- the record of a released connection ----------------------------------------------- */

char *
octoprint_record_path(const char *dir, const char *usb_port)
{
	return xasprintf("%s/%s.json", dir, usb_port);
}

int
octoprint_record_parse(const char *buf, size_t len, struct octoprint_record *ret)
{
	struct json_object *root = http_json_parse(buf, len, NULL), *v;
	int r = -EBADMSG;

	memset(ret, 0, sizeof(*ret));
	if (!http_json_member(root, "url", json_type_string) ||
	    !http_json_member(root, "port", json_type_string))
		goto out;
	if (optional_string(root, "url", ret->url, sizeof(ret->url)) < 0 ||
	    optional_string(root, "api_key_file", ret->key_file, sizeof(ret->key_file)) < 0 ||
	    optional_string(root, "board", ret->board, sizeof(ret->board)) < 0 ||
	    optional_string(root, "port", ret->conn.port, sizeof(ret->conn.port)) < 0 ||
	    optional_string(root, "printerProfile", ret->conn.profile, sizeof(ret->conn.profile)) <
		0)
		goto out;
	if ((v = http_json_member(root, "baudrate", json_type_int)))
		ret->conn.baudrate = (long)json_object_get_int64(v);
	if (ret->conn.baudrate < 0 || !ret->url[0] || !ret->conn.port[0])
		goto out;
	r = 0;
out:
	json_object_put(root);
	return r;
}

static int
record_read(const char *path, struct octoprint_record *ret)
{
	uint8_t *data = NULL;
	size_t len = 0;
	int r = read_file(path, 16384, &data, &len);

	if (r < 0)
		return r;
	r = octoprint_record_parse((const char *)data, len, ret);
	free(data);
	return r;
}

/* Written before the disconnect, never over an older record: a port released by an earlier
 * job that was not given back yet keeps the connection OctoPrint had then. 1 = written,
 * 0 = one exists, -errno. */
static int
record_write(const struct octoprint_target *t, const struct octoprint_conn *c)
{
	struct json_object *o;
	char *path;
	const char *text;
	int r;

	r = mkdir_p(t->dir, 0750);
	if (r < 0)
		return r;
	path = octoprint_record_path(t->dir, t->usb_port);
	if (access(path, F_OK) == 0) {
		free(path);
		return 0;
	}
	o = json_object_new_object();
	json_object_object_add(o, "url", json_object_new_string(t->url));
	json_object_object_add(o, "api_key_file", json_object_new_string(t->key_file));
	json_object_object_add(o, "board", json_object_new_string(t->board));
	json_object_object_add(o, "port", json_object_new_string(c->port));
	json_object_object_add(o, "baudrate", json_object_new_int64(c->baudrate));
	json_object_object_add(o, "printerProfile", json_object_new_string(c->profile));
	text = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY);
	r = write_file_atomic(path, text, strlen(text), 0640);
	json_object_put(o);
	free(path);
	return r < 0 ? r : 1;
}

/* ---- HTTP ------------------------------------------------------------------------------- */

int
octoprint_request(const char *url, const char *key, const char *path, const char *body,
		  unsigned timeout_ms, char **ret_body, struct octoprint_reply *ret)
{
	struct http_result h;
	char *reply = NULL;

	memset(ret, 0, sizeof(*ret));
	if (ret_body)
		*ret_body = NULL;
	if (!key) {
		ret->error = -EINVAL;
		str_copy(ret->detail, sizeof(ret->detail), "bad API key");
		return ret->error;
	}
	ret->error = http_request(url, path, key, body, timeout_ms, &h, &reply, NULL);
	ret->http_status = h.status;
	str_copy(ret->detail, sizeof(ret->detail), h.detail);
	if (ret->error == -EPROTO && (h.status == 401 || h.status == 403)) {
		/* OctoPrint answers 403 to an unknown key (and to a key without the
		 * permission), 401 where login is required */
		ret->error = -EACCES;
		snprintf(ret->detail, sizeof(ret->detail),
			 "HTTP status %ld, the API key was refused", h.status);
	}
	if (ret_body)
		*ret_body = reply;
	else
		free(reply);
	return ret->error;
}

static int
get_connection(const char *url, const char *key, struct octoprint_conn *c,
	       struct octoprint_reply *rep)
{
	char *body = NULL;
	int r =
	    octoprint_request(url, key, "/api/connection", NULL, OCTOPRINT_TIMEOUT_MS, &body, rep);

	if (r >= 0 && octoprint_parse_connection(body, strlen(body), c) < 0) {
		rep->error = r = -EBADMSG;
		str_copy(rep->detail, sizeof(rep->detail),
			 "reply to GET /api/connection has no current.state");
	}
	free(body);
	return r;
}

static int
get_job_state(const char *url, const char *key, char *state, size_t size,
	      struct octoprint_reply *rep)
{
	char *body = NULL;
	int r = octoprint_request(url, key, "/api/job", NULL, OCTOPRINT_TIMEOUT_MS, &body, rep);

	if (r >= 0 && octoprint_parse_job(body, strlen(body), state, size) < 0) {
		rep->error = r = -EBADMSG;
		str_copy(rep->detail, sizeof(rep->detail), "reply to GET /api/job has no state");
	}
	free(body);
	return r;
}

static void
sleep_ms(unsigned ms)
{
	struct timespec ts = {.tv_sec = ms / 1000u, .tv_nsec = (long)(ms % 1000u) * 1000000L};

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/* ---- the gate (blocking, in a child) ----------------------------------------------------- */

static int
read_key(const char *url, const char *key_file, const char *board, char *key, size_t size,
	 char **ret_message)
{
	int r = moonraker_read_key(key_file, key, size);

	if (r >= 0)
		return 0;
	/* as the Moonraker key (docs/security.md): the daemon's user reads it, operators (group
	 * skrflash) must not, since the key controls the printer */
	if (r == -ENOENT)
		*ret_message = xasprintf(
		    "the OctoPrint API key file %s does not exist: put an application key of "
		    "OctoPrint at %s in it (OctoPrint: Settings > Application Keys), mode 0600, "
		    "owner skrflash; not flashing %s",
		    key_file, url, board);
	else if (r == -EACCES || r == -EPERM)
		*ret_message = xasprintf("the OctoPrint API key file %s is not readable by "
					 "skrflashd's user (%s): chown skrflash %s; chmod 0600 %s; "
					 "not flashing %s",
					 key_file, strerror(-r), key_file, key_file, board);
	else if (r == -EINVAL)
		*ret_message = xasprintf("the OctoPrint API key file %s has no key on its first "
					 "line; not flashing %s",
					 key_file, board);
	else
		*ret_message = xasprintf("cannot read the OctoPrint API key file %s: %s; not "
					 "flashing %s",
					 key_file, strerror(-r), board);
	return r;
}

static char *
unanswered(const struct octoprint_target *t, const struct octoprint_reply *rep)
{
	if (rep->error == -EACCES)
		return xasprintf("OctoPrint at %s refused the API key from %s (%s): put a valid "
				 "application key in it; not flashing %s",
				 t->url, t->key_file, rep->detail, t->board);
	return xasprintf("OctoPrint at %s did not answer (%s); not flashing %s while the print "
			 "state is unknown",
			 t->url, rep->detail[0] ? rep->detail : strerror(-rep->error), t->board);
}

/* Polls the connection until OctoPrint no longer holds the board's port. */
static bool
wait_released(const struct octoprint_target *t, const char *key, struct octoprint_conn *c)
{
	struct octoprint_reply rep;

	for (unsigned waited = 0; waited <= OCTOPRINT_SETTLE_MS; waited += POLL_MS) {
		if (get_connection(t->url, key, c, &rep) >= 0 &&
		    (strcmp(c->state, "Closed") == 0 ||
		     !octoprint_port_is_board(c->port, t->tty, t->by_id)))
			return true;
		sleep_ms(POLL_MS);
	}
	return false;
}

static bool
release(const struct octoprint_target *t, const char *key, const struct octoprint_conn *c,
	const char *job_state, char **ret_message)
{
	struct octoprint_reply rep;
	struct octoprint_conn now;
	int r = record_write(t, c);

	if (r < 0) {
		*ret_message = xasprintf("cannot record OctoPrint's connection to %s in %s (%s), "
					 "so it could not be given back; not flashing %s",
					 c->port, t->dir, strerror(-r), t->board);
		return false;
	}
	(void)octoprint_request(t->url, key, "/api/connection", "{\"command\":\"disconnect\"}",
				OCTOPRINT_DISCONNECT_TIMEOUT_MS, NULL, &rep);
	if (rep.error != 0 && rep.http_status >= 300 && r == 1) {
		/* refused: nothing changed, nothing to give back */
		char *path = octoprint_record_path(t->dir, t->usb_port);

		(void)unlink(path);
		free(path);
	}
	if (rep.error != 0) {
		*ret_message = xasprintf("OctoPrint at %s did not disconnect from %s (%s); not "
					 "flashing %s",
					 t->url, c->port, rep.detail, t->board);
		return false;
	}
	if (!wait_released(t, key, &now)) {
		*ret_message = xasprintf("OctoPrint at %s still holds %s %.0f s after the "
					 "disconnect; not flashing %s",
					 t->url, c->port, OCTOPRINT_SETTLE_MS / 1000.0, t->board);
		return false;
	}
	*ret_message = xasprintf("OctoPrint at %s is %s and released %s (%ld baud, profile %s) "
				 "for the flash; flashing %s",
				 t->url, job_state, c->port, c->baudrate,
				 c->profile[0] ? c->profile : "default", t->board);
	return true;
}

bool
octoprint_gate_run(const struct octoprint_target *t, char **ret_message)
{
	char key[MOONRAKER_KEY_MAX], job_state[64];
	struct octoprint_reply rep;
	struct octoprint_conn c;
	enum octoprint_activity a;

	if (read_key(t->url, t->key_file, t->board, key, sizeof(key), ret_message) < 0)
		return false;
	if (get_connection(t->url, key, &c, &rep) < 0) {
		*ret_message = unanswered(t, &rep);
		return false;
	}
	if (strcmp(c.state, "Closed") == 0 || !c.port[0]) {
		*ret_message = xasprintf("OctoPrint at %s has no printer connected; flashing %s",
					 t->url, t->board);
		return true;
	}
	/* OctoPrint drives one printer: connected elsewhere, its state is not this board's,
	 * and that connection is not ours to touch */
	if (!octoprint_port_is_board(c.port, t->tty, t->by_id)) {
		*ret_message = xasprintf("OctoPrint at %s is connected to %s, not to %s on %s; "
					 "its connection is left alone; flashing %s",
					 t->url, c.port, t->board, t->tty, t->board);
		return true;
	}
	if (get_job_state(t->url, key, job_state, sizeof(job_state), &rep) < 0) {
		*ret_message = unanswered(t, &rep);
		return false;
	}
	a = octoprint_activity(job_state);
	if (a == OCTOPRINT_IDLE)
		a = octoprint_activity(c.state);
	if (a == OCTOPRINT_BUSY) {
		*ret_message = xasprintf("printer at %s is %s; not flashing %s now (it will be "
					 "flashed when the print ends: `skrflashctl flash %s`)",
					 t->url, job_state, t->board, t->board);
		return false;
	}
	if (a == OCTOPRINT_UNKNOWN) {
		*ret_message =
		    xasprintf("OctoPrint at %s reports state \"%s\" (connection \"%s\"), "
			      "unknown to skrflash; not flashing %s",
			      t->url, job_state, c.state, t->board);
		return false;
	}
	return release(t, key, &c, job_state, ret_message);
}

/* ---- giving the port back (event loop + one child per reconnect) ------------------------ */

struct pending {
	struct octoprint *o;
	char usb_port[64];
	char tty[256];
	char by_id[256];
	pid_t pid;
	int out_fd;
	unsigned attempts;
	sd_event_source *child;
	sd_event_source *timer;
};

struct octoprint {
	sd_event *loop;
	char *dir;
	octoprint_done_fn done;
	void *userdata;
	struct pending **v;
	size_t n;
};

int
octoprint_new(sd_event *loop, const char *dir, octoprint_done_fn done, void *userdata,
	      struct octoprint **ret)
{
	struct octoprint *o = xnew(struct octoprint);

	o->loop = sd_event_ref(loop);
	o->dir = xstrdup(dir);
	o->done = done;
	o->userdata = userdata;
	*ret = o;
	return 0;
}

static void
pending_free(struct pending *p)
{
	if (p->pid > 0)
		(void)kill(p->pid, SIGKILL);
	sd_event_source_disable_unref(p->child);
	sd_event_source_disable_unref(p->timer);
	close_fd(p->out_fd);
	free(p);
}

static void
pending_drop(struct octoprint *o, struct pending *p)
{
	for (size_t i = 0; i < o->n; i++) {
		if (o->v[i] != p)
			continue;
		memmove(&o->v[i], &o->v[i + 1], (o->n - i - 1) * sizeof(struct pending *));
		o->n--;
		break;
	}
	pending_free(p);
}

struct octoprint *
octoprint_free(struct octoprint *o)
{
	if (!o)
		return NULL;
	for (size_t i = 0; i < o->n; i++)
		pending_free(o->v[i]);
	free(o->v);
	sd_event_unref(o->loop);
	free(o->dir);
	free(o);
	return NULL;
}

static struct pending *
pending_find(const struct octoprint *o, const char *usb_port)
{
	for (size_t i = 0; i < o->n; i++)
		if (strcmp(o->v[i]->usb_port, usb_port) == 0)
			return o->v[i];
	return NULL;
}

bool
octoprint_busy(const struct octoprint *o, const char *usb_port)
{
	const struct pending *p = o ? pending_find(o, usb_port) : NULL;

	return p && p->pid > 0;
}

/* The child: connect, then wait until OctoPrint has the port open (or says it cannot). */
static int
reconnect_child(const struct octoprint_record *rec, const char *port, char **ret_message)
{
	char key[MOONRAKER_KEY_MAX], *body;
	struct octoprint_reply rep;
	struct octoprint_conn c;

	if (read_key(rec->url, rec->key_file, rec->board, key, sizeof(key), ret_message) < 0)
		return -EACCES;
	body = octoprint_connect_body(&rec->conn, port);
	(void)octoprint_request(rec->url, key, "/api/connection", body, OCTOPRINT_TIMEOUT_MS, NULL,
				&rep);
	free(body);
	if (rep.error != 0) {
		*ret_message = xasprintf("OctoPrint at %s did not take the connect command for %s "
					 "(%s)",
					 rec->url, port, rep.detail);
		return rep.error;
	}
	for (unsigned waited = 0; waited <= OCTOPRINT_SETTLE_MS; waited += POLL_MS) {
		if (get_connection(rec->url, key, &c, &rep) >= 0 && strcmp(c.port, port) == 0) {
			if (strcmp(c.state, "Error") == 0 ||
			    strcmp(c.state, "Offline after error") == 0) {
				*ret_message = xasprintf("OctoPrint at %s could not open %s (%s)",
							 rec->url, port, c.state);
				return -EIO;
			}
			if (strcmp(c.state, "Closed") != 0 && strcmp(c.state, "Offline") != 0) {
				*ret_message = xasprintf(
				    "OctoPrint at %s is connected again to %s (%s, %ld baud, "
				    "profile %s) after the job on %s",
				    rec->url, port, c.state, rec->conn.baudrate,
				    rec->conn.profile[0] ? rec->conn.profile : "default",
				    rec->board[0] ? rec->board : "the board");
				return 0;
			}
		}
		sleep_ms(POLL_MS);
	}
	*ret_message = xasprintf("OctoPrint at %s did not open %s within %.0f s", rec->url, port,
				 OCTOPRINT_SETTLE_MS / 1000.0);
	return -ETIMEDOUT;
}

static int on_retry(sd_event_source *s, uint64_t usec, void *userdata);

static int
on_reconnected(sd_event_source *s, const siginfo_t *si, void *userdata)
{
	struct pending *p = userdata;
	struct octoprint *o = p->o;
	char msg[700] = "";
	ssize_t n;
	char *path = octoprint_record_path(o->dir, p->usb_port);

	(void)s;
	p->child = sd_event_source_disable_unref(p->child);
	p->pid = 0;
	/* the message is one short line, written before the child exited */
	n = read(p->out_fd, msg, sizeof(msg) - 1);
	msg[n > 0 ? n : 0] = '\0';
	msg[strcspn(msg, "\n")] = '\0';
	p->out_fd = close_fd(p->out_fd);
	if (o->done)
		o->done(o->userdata, p->usb_port);
	/* the record goes before the line that says so: whoever reads the journal finds the
	 * state it describes */
	if (si->si_code == CLD_EXITED && si->si_status == 0) {
		(void)unlink(path);
		log_notice("%s", msg);
		pending_drop(o, p);
	} else if (++p->attempts < RETRIES_MAX) {
		log_warn("%s; trying again in %llu s",
			 msg[0] ? msg : "reconnecting OctoPrint failed", RETRY_USEC / 1000000ull);
		if (sd_event_add_time_relative(o->loop, &p->timer, CLOCK_MONOTONIC, RETRY_USEC, 0,
					       on_retry, p) < 0)
			pending_drop(o, p);
	} else {
		(void)unlink(path);
		log_error("%s; gave up after %u attempts: connect the printer in OctoPrint "
			  "(Connection panel)",
			  msg[0] ? msg : "reconnecting OctoPrint failed", p->attempts);
		pending_drop(o, p);
	}
	free(path);
	return 0;
}

/* The port string to connect: OctoPrint's own when it still names this board (a by-id link
 * does across re-enumerations), else the board's by-id link, else its tty. */
static const char *
reconnect_port(const struct octoprint_record *rec, const struct pending *p)
{
	if (octoprint_port_is_board(rec->conn.port, p->tty, p->by_id))
		return rec->conn.port;
	return p->by_id[0] ? p->by_id : p->tty;
}

static void
start_reconnect(struct octoprint *o, struct pending *p, const struct octoprint_record *rec)
{
	const char *port = reconnect_port(rec, p);
	int out[2];
	pid_t pid;

	if (pipe2(out, O_CLOEXEC) < 0)
		goto fail;
	pid = fork();
	if (pid < 0) {
		close_fd(out[0]);
		close_fd(out[1]);
		goto fail;
	}
	if (pid == 0) {
		char *msg = NULL;
		int r;
		sigset_t none;

		(void)prctl(PR_SET_PDEATHSIG, SIGKILL);
		sigemptyset(&none);
		(void)sigprocmask(SIG_SETMASK, &none, NULL);
		r = reconnect_child(rec, port, &msg);
		dprintf(out[1], "%s\n", msg ? msg : "");
		_exit(r < 0 ? 1 : 0);
	}
	close_fd(out[1]);
	p->out_fd = out[0];
	p->pid = pid;
	if (sd_event_add_child(o->loop, &p->child, pid, WEXITED, on_reconnected, p) >= 0) {
		log_info("connecting OctoPrint at %s again to %s (%s on port %s)", rec->url, port,
			 rec->board, p->usb_port);
		return;
	}
	(void)kill(pid, SIGKILL);
	(void)waitpid(pid, NULL, 0);
	p->pid = 0;
fail:
	log_warn("cannot start giving OctoPrint at %s its port back for port %s; trying again "
		 "when the board is seen again",
		 rec->url, p->usb_port);
}

static void
try_reconnect(struct octoprint *o, struct pending *p)
{
	struct octoprint_record rec;
	char *path = octoprint_record_path(o->dir, p->usb_port);
	int r = record_read(path, &rec);

	if (r == -ENOENT) {
		pending_drop(o, p);
	} else if (r < 0) {
		(void)unlink(path);
		log_warn_errno(r,
			       "cannot read %s, the OctoPrint connection a job released; "
			       "removing it: connect the printer in OctoPrint by hand",
			       path);
		pending_drop(o, p);
	} else {
		start_reconnect(o, p, &rec);
	}
	free(path);
}

static int
on_retry(sd_event_source *s, uint64_t usec, void *userdata)
{
	struct pending *p = userdata;

	(void)s;
	(void)usec;
	p->timer = sd_event_source_disable_unref(p->timer);
	try_reconnect(p->o, p);
	return 0;
}

void
octoprint_board_ready(struct octoprint *o, const char *usb_port, const char *tty, const char *by_id)
{
	struct pending *p;
	char *path;

	if (!o || !tty || !tty[0])
		return;
	p = pending_find(o, usb_port);
	if (p && (p->pid > 0 || p->timer)) {
		/* a reconnect runs or waits for its retry: it takes the newest names */
		(void)str_copy(p->tty, sizeof(p->tty), tty);
		(void)str_copy(p->by_id, sizeof(p->by_id), by_id ? by_id : "");
		return;
	}
	path = octoprint_record_path(o->dir, usb_port);
	if (access(path, F_OK) < 0) {
		free(path);
		return;
	}
	free(path);
	if (!p) {
		p = xnew(struct pending);
		p->o = o;
		p->out_fd = -1;
		(void)str_copy(p->usb_port, sizeof(p->usb_port), usb_port);
		o->v = xreallocarray(o->v, o->n + 1, sizeof(struct pending *));
		o->v[o->n++] = p;
	}
	(void)str_copy(p->tty, sizeof(p->tty), tty);
	(void)str_copy(p->by_id, sizeof(p->by_id), by_id ? by_id : "");
	try_reconnect(o, p);
}
