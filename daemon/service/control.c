/* SPDX-License-Identifier: GPL-2.0-or-later */
/* control: unix socket server and request parser (see control.h). */
#include "service/control.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "log.h"
#include "util.h"

static const char *const command_names[_CONTROL_COMMAND_MAX] = {
    [CONTROL_STATUS] = "status",   [CONTROL_BOARDS] = "boards",	  [CONTROL_QUEUED] = "queued",
    [CONTROL_HISTORY] = "history", [CONTROL_WATCH] = "watch",	  [CONTROL_FLASH] = "flash",
    [CONTROL_RETRY] = "retry",	   [CONTROL_PROFILE] = "profile", [CONTROL_RESCUE] = "rescue",
};

const char *
control_command_to_string(enum control_command c)
{
	return (unsigned)c < _CONTROL_COMMAND_MAX ? command_names[c] : "?";
}

static int
get_string(json_object *o, const char *key, char *buf, size_t size, bool required,
	   const char **ret_error)
{
	json_object *v;
	const char *s;

	if (!json_object_object_get_ex(o, key, &v) || json_object_is_type(v, json_type_null)) {
		if (required) {
			*ret_error = "missing argument";
			return -EINVAL;
		}
		return 0;
	}
	if (!json_object_is_type(v, json_type_string)) {
		*ret_error = "argument must be a string";
		return -EINVAL;
	}
	s = json_object_get_string(v);
	if (!*s || strlen(s) >= size || memchr(s, '\n', strlen(s))) {
		*ret_error = "argument is empty, too long or has a newline";
		return -EINVAL;
	}
	(void)str_copy(buf, size, s);
	return 0;
}

static int
get_bool(json_object *o, const char *key, bool *ret, const char **ret_error)
{
	json_object *v;

	if (!json_object_object_get_ex(o, key, &v))
		return 0;
	if (!json_object_is_type(v, json_type_boolean)) {
		*ret_error = "a flag must be true or false";
		return -EINVAL;
	}
	*ret = json_object_get_boolean(v);
	return 0;
}

/* One JSON object, strict: only UTF-8 strings (they come back in answers and logs), no
 * trailing garbage after the object. NULL on any error. */
static json_object *
parse_object(const char *line, size_t len)
{
	struct json_tokener *tok = json_tokener_new_ex(16);
	json_object *o;

	if (!tok)
		return NULL;
	json_tokener_set_flags(tok, JSON_TOKENER_VALIDATE_UTF8);
	o = json_tokener_parse_ex(tok, line, (int)len);
	if (o &&
	    (json_tokener_get_error(tok) != json_tokener_success ||
	     json_tokener_get_parse_end(tok) != len || !json_object_is_type(o, json_type_object))) {
		json_object_put(o);
		o = NULL;
	}
	json_tokener_free(tok);
	return o;
}

static bool
known_keys(json_object *o)
{
	static const char *const keys[] = {"command", "board",	"limit", "all", "force",  "dry_run",
					   "profile", "device", "file",	 "sha", "restore"};

	json_object_object_foreach(o, key, val) {
		bool known = false;

		(void)val;
		for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]) && !known; i++)
			known = strcmp(key, keys[i]) == 0;
		if (!known)
			return false;
	}
	return true;
}

static int
parse_command(json_object *o, struct control_request *req, const char **ret_error)
{
	json_object *v;
	const char *name;

	if (!json_object_object_get_ex(o, "command", &v) ||
	    !json_object_is_type(v, json_type_string)) {
		*ret_error = "request has no \"command\" string";
		return -EINVAL;
	}
	name = json_object_get_string(v);
	req->command = _CONTROL_COMMAND_MAX;
	for (int i = 0; i < _CONTROL_COMMAND_MAX; i++)
		if (strcmp(name, command_names[i]) == 0)
			req->command = (enum control_command)i;
	if (req->command == _CONTROL_COMMAND_MAX) {
		*ret_error = "unknown command";
		return -EINVAL;
	}
	return 0;
}

static int
parse_limit(json_object *o, struct control_request *req, const char **ret_error)
{
	json_object *v;
	int64_t l;

	if (!json_object_object_get_ex(o, "limit", &v))
		return 0;
	if (!json_object_is_type(v, json_type_int)) {
		*ret_error = "\"limit\" must be an integer";
		return -EINVAL;
	}
	l = json_object_get_int64(v);
	if (l < 1 || l > 10000) {
		*ret_error = "\"limit\" must be 1..10000";
		return -EINVAL;
	}
	req->limit = (unsigned)l;
	return 0;
}

/* The members after "command": each checked for its type, the required ones for presence. */
static int
parse_members(json_object *o, struct control_request *req, const char **ret_error)
{
	if (get_string(o, "board", req->board, sizeof(req->board),
		       req->command == CONTROL_FLASH || req->command == CONTROL_RETRY,
		       ret_error) < 0 ||
	    parse_limit(o, req, ret_error) < 0 ||
	    get_string(o, "profile", req->profile, sizeof(req->profile),
		       req->command == CONTROL_PROFILE, ret_error) < 0 ||
	    get_bool(o, "all", &req->all, ret_error) < 0 ||
	    get_bool(o, "force", &req->force, ret_error) < 0 ||
	    get_bool(o, "dry_run", &req->dry_run, ret_error) < 0 ||
	    get_string(o, "device", req->device, sizeof(req->device), false, ret_error) < 0 ||
	    get_string(o, "file", req->file, sizeof(req->file), false, ret_error) < 0 ||
	    get_string(o, "sha", req->sha, sizeof(req->sha), false, ret_error) < 0 ||
	    get_bool(o, "restore", &req->restore, ret_error) < 0)
		return -EINVAL;
	if (req->command == CONTROL_RESCUE && !req->restore && !req->file[0]) {
		*ret_error = "rescue needs a \"file\" (or \"restore\": true)";
		return -EINVAL;
	}
	return 0;
}

int
control_parse_request(const char *line, size_t len, struct control_request *ret,
		      const char **ret_error)
{
	struct control_request req;
	json_object *o;
	int r = -EINVAL;

	memset(&req, 0, sizeof(req));
	*ret_error = "request is not a JSON object";
	if (len == 0 || len > CONTROL_MAX_LINE || memchr(line, 0, len))
		return -EINVAL;
	o = parse_object(line, len);
	if (!o)
		return -EINVAL;
	if (!known_keys(o))
		*ret_error = "unknown key in request";
	else if (parse_command(o, &req, ret_error) == 0 && parse_members(o, &req, ret_error) == 0) {
		*ret = req;
		*ret_error = NULL;
		r = 0;
	}
	json_object_put(o);
	return r;
}

/* Limits that keep one local user from starving the others or the loop (issue: a member
 * pipelining requests held the loop 36 s; 64 idle connections locked root out; clients that
 * never read grew the daemon to 433 MiB). */
#define MAX_CLIENTS 64
#define RESERVED_CLIENTS 4	  /* slots only root and the daemon's own user may take */
#define MAX_PER_UID 8		  /* connections of one other user at a time */
#define LINES_PER_WAKEUP 4	  /* requests answered per wake-up before others get a turn */
#define WATCH_OUTPUT (256u << 10) /* a watcher this far behind is dropped */

struct client {
	struct control *owner;
	int fd;
	uid_t uid;
	bool privileged; /* root or the daemon's user */
	sd_event_source *source;
	sd_event_source *more; /* deferred: requests already read but not answered yet */
	sd_event_source *idle; /* timer: a client that asks nothing is dropped */
	char in[CONTROL_MAX_LINE + 1];
	size_t in_len;
	char *out;
	size_t out_len;
	bool watching;
	bool closing;
	bool dead;     /* dropped while in use: freed when the user lets go */
	unsigned busy; /* handlers on the stack that use this client */
};

struct control {
	sd_event *loop;
	char *path;
	int fd;
	sd_event_source *source;
	control_handler handler;
	void *userdata;
	bool has_gid;
	gid_t gid;
	bool bound; /* the path is ours to unlink: never another daemon's live socket */
	uint64_t idle_usec;
	struct client *clients[MAX_CLIENTS];
};

static void
client_release(struct client *cl)
{
	sd_event_source_disable_unref(cl->more);
	sd_event_source_disable_unref(cl->idle);
	free(cl->out);
	free(cl);
}

/* Close a client now; free it now, or when the handler that is using it returns (a
 * broadcast inside a request may drop the very client whose request is being answered). */
static void
client_drop(struct client *cl)
{
	struct control *c = cl->owner;

	if (cl->dead)
		return;
	for (size_t i = 0; i < MAX_CLIENTS; i++)
		if (c->clients[i] == cl)
			c->clients[i] = NULL;
	cl->source = sd_event_source_disable_unref(cl->source);
	cl->more = sd_event_source_disable_unref(cl->more);
	cl->idle = sd_event_source_disable_unref(cl->idle);
	cl->fd = close_fd(cl->fd);
	cl->dead = true;
	if (cl->busy == 0)
		client_release(cl);
}

static void
client_update_events(struct client *cl)
{
	uint32_t ev = 0;

	/* back-pressure: a client gets no new answer before it read the last one */
	if (!cl->closing && cl->out_len == 0)
		ev |= EPOLLIN;
	if (cl->out_len)
		ev |= EPOLLOUT;
	(void)sd_event_source_set_io_events(cl->source, ev);
	(void)sd_event_source_set_enabled(cl->source, ev ? SD_EVENT_ON : SD_EVENT_OFF);
	if (cl->more)
		(void)sd_event_source_set_enabled(cl->more, cl->out_len == 0 &&
								    memchr(cl->in, '\n', cl->in_len)
								? SD_EVENT_ONESHOT
								: SD_EVENT_OFF);
}

static void
client_touch(struct client *cl)
{
	/* watchers wait for events by design; everyone else must keep asking */
	if (!cl->idle)
		return;
	if (cl->watching) {
		(void)sd_event_source_set_enabled(cl->idle, SD_EVENT_OFF);
		return;
	}
	(void)sd_event_source_set_time_relative(cl->idle, cl->owner->idle_usec);
	(void)sd_event_source_set_enabled(cl->idle, SD_EVENT_ONESHOT);
}

static int
client_flush(struct client *cl)
{
	while (cl->out_len) {
		ssize_t n = send(cl->fd, cl->out, cl->out_len, MSG_NOSIGNAL | MSG_DONTWAIT);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			break;
		if (n < 0)
			return -errno;
		memmove(cl->out, cl->out + n, cl->out_len - (size_t)n);
		cl->out_len -= (size_t)n;
	}
	if (cl->out_len == 0 && cl->closing)
		return -ECONNRESET;
	if (cl->out_len == 0 && !cl->watching) {
		/* an answered request: give the buffer back */
		free(cl->out);
		cl->out = NULL;
	}
	client_update_events(cl);
	return 0;
}

/* Queue one line. A request's answer always fits (the client asked for it and gets no
 * other until it read it); events for a watcher that fell WATCH_OUTPUT behind do not. */
static int
client_send(struct client *cl, json_object *o, bool event)
{
	const char *s = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);
	size_t len = strlen(s);

	if (cl->dead)
		return -ECONNRESET;
	if (event && cl->out_len + len + 1 > WATCH_OUTPUT)
		return -ENOBUFS;
	cl->out = xreallocarray(cl->out, cl->out_len + len + 1, 1);
	memcpy(cl->out + cl->out_len, s, len);
	cl->out[cl->out_len + len] = '\n';
	cl->out_len += len + 1;
	return client_flush(cl);
}

static json_object *
error_response(const char *msg)
{
	json_object *o = json_object_new_object();

	json_object_object_add(o, "ok", json_object_new_boolean(false));
	json_object_object_add(o, "error", json_object_new_string(msg));
	return o;
}

static int
client_line(struct client *cl, const char *line, size_t len)
{
	struct control *c = cl->owner;
	struct control_request req;
	const char *err = NULL;
	json_object *resp;
	int r;

	if (control_parse_request(line, len, &req, &err) < 0) {
		char msg[160];

		(void)snprintf(msg, sizeof(msg), "bad request: %s", err ? err : "invalid");
		resp = error_response(msg);
	} else {
		resp = c->handler(c->userdata, &req);
		if (req.command == CONTROL_WATCH)
			cl->watching = true;
	}
	r = client_send(cl, resp, false);
	json_object_put(resp);
	return r;
}

/* Answer at most LINES_PER_WAKEUP complete requests, and only while the client reads its
 * answers; the rest waits for the next turn of the loop. */
static int
client_process(struct client *cl)
{
	char *nl;

	for (unsigned i = 0; i < LINES_PER_WAKEUP && cl->out_len == 0 && !cl->dead &&
			     (nl = memchr(cl->in, '\n', cl->in_len));
	     i++) {
		size_t len = (size_t)(nl - cl->in);
		int r = client_line(cl, cl->in, len);

		if (cl->dead)
			return -ECONNRESET;
		memmove(cl->in, nl + 1, cl->in_len - len - 1);
		cl->in_len -= len + 1;
		client_touch(cl);
		if (r < 0)
			return r;
	}
	if (cl->in_len > CONTROL_MAX_LINE) {
		json_object *e = error_response("request line too long");

		(void)client_send(cl, e, false);
		json_object_put(e);
		return -EMSGSIZE;
	}
	if (!cl->dead)
		client_update_events(cl);
	return 0;
}

static int
client_read(struct client *cl)
{
	ssize_t n;

	if (cl->in_len > CONTROL_MAX_LINE)
		return -EMSGSIZE;
	n = recv(cl->fd, cl->in + cl->in_len, CONTROL_MAX_LINE + 1 - cl->in_len, MSG_DONTWAIT);
	if (n < 0)
		return errno == EINTR || errno == EAGAIN ? 0 : -errno;
	if (n == 0) {
		/* peer closed: answer what it asked, finish sending, then go */
		if (cl->out_len == 0 && !memchr(cl->in, '\n', cl->in_len))
			return -ECONNRESET;
		cl->closing = true;
		return 0;
	}
	cl->in_len += (size_t)n;
	return 0;
}

static int
on_client(sd_event_source *s, int fd, uint32_t revents, void *userdata)
{
	struct client *cl = userdata;
	int r = 0;

	(void)s;
	(void)fd;
	cl->busy++;
	if (revents & EPOLLOUT)
		r = client_flush(cl);
	if (r >= 0 && !cl->dead && cl->out_len == 0 && (revents & (EPOLLIN | EPOLLHUP | EPOLLERR)))
		r = client_read(cl);
	if (r >= 0 && !cl->dead)
		r = client_process(cl);
	if (r >= 0 && !cl->dead && cl->closing && cl->out_len == 0 &&
	    !memchr(cl->in, '\n', cl->in_len))
		r = -ECONNRESET;
	if (r < 0)
		client_drop(cl);
	if (--cl->busy == 0 && cl->dead)
		client_release(cl);
	return 0;
}

static int
on_client_more(sd_event_source *s, void *userdata)
{
	(void)s;
	return on_client(NULL, -1, 0, userdata);
}

static int
on_client_idle(sd_event_source *s, uint64_t usec, void *userdata)
{
	struct client *cl = userdata;

	(void)s;
	(void)usec;
	log_debug("control socket: dropping a client of uid %u that asked nothing for %llu s",
		  (unsigned)cl->uid, (unsigned long long)(cl->owner->idle_usec / 1000000));
	client_drop(cl);
	return 0;
}

/* Supplementary groups from the socket itself (SO_PEERGROUPS, Linux 4.13): /proc/PID/status
 * of another user is invisible under ProtectProc=invisible. */
static bool
in_peer_groups(int fd, gid_t gid)
{
	gid_t groups[256];
	socklen_t len = sizeof(groups);

	if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups, &len) < 0)
		return false;
	for (size_t i = 0; i < len / sizeof(gid_t); i++)
		if (groups[i] == gid)
			return true;
	return false;
}

static bool
peer_allowed(const struct control *c, int fd, struct ucred *cred)
{
	socklen_t len = sizeof(*cred);

	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, cred, &len) < 0)
		return false;
	if (cred->uid == 0 || cred->uid == geteuid())
		return true;
	if (!c->has_gid)
		return false;
	return cred->gid == c->gid || in_peer_groups(fd, c->gid);
}

static void
refuse(int fd, const char *msg)
{
	json_object *e = error_response(msg);
	const char *s = json_object_to_json_string_ext(e, JSON_C_TO_STRING_PLAIN);

	(void)!send(fd, s, strlen(s), MSG_NOSIGNAL | MSG_DONTWAIT);
	(void)!send(fd, "\n", 1, MSG_NOSIGNAL | MSG_DONTWAIT);
	json_object_put(e);
	close_fd(fd);
}

/* A free slot for a new client, or MAX_CLIENTS with *ret_why set. */
static size_t
find_slot(const struct control *c, uid_t uid, bool privileged, const char **ret_why)
{
	size_t used = 0, mine = 0, slot = MAX_CLIENTS;

	for (size_t i = 0; i < MAX_CLIENTS; i++) {
		if (!c->clients[i]) {
			if (slot == MAX_CLIENTS)
				slot = i;
			continue;
		}
		used++;
		if (c->clients[i]->uid == uid)
			mine++;
	}
	*ret_why = "too many connections to skrflashd; try again later";
	if (slot == MAX_CLIENTS)
		return MAX_CLIENTS;
	if (privileged)
		return slot;
	if (used >= MAX_CLIENTS - RESERVED_CLIENTS)
		return MAX_CLIENTS;
	if (mine >= MAX_PER_UID) {
		*ret_why = "too many connections from this user to skrflashd; close some "
			   "(skrflashctl watch keeps one open)";
		return MAX_CLIENTS;
	}
	return slot;
}

static int
on_accept(sd_event_source *s, int fd, uint32_t revents, void *userdata)
{
	struct control *c = userdata;
	struct client *cl;
	struct ucred cred = {0};
	const char *why = NULL;
	bool privileged;
	size_t slot;
	int cfd, r;

	(void)s;
	(void)revents;
	cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
	if (cfd < 0)
		return 0;
	if (!peer_allowed(c, cfd, &cred)) {
		refuse(cfd, "permission denied: not root and not in the control group");
		return 0;
	}
	privileged = cred.uid == 0 || cred.uid == geteuid();
	slot = find_slot(c, cred.uid, privileged, &why);
	if (slot == MAX_CLIENTS) {
		log_warn("control socket: refusing a connection of uid %u: %s", (unsigned)cred.uid,
			 why);
		refuse(cfd, why);
		return 0;
	}
	cl = xnew(struct client);
	cl->owner = c;
	cl->fd = cfd;
	cl->uid = cred.uid;
	cl->privileged = privileged;
	r = sd_event_add_io(c->loop, &cl->source, cfd, EPOLLIN, on_client, cl);
	if (r >= 0)
		r = sd_event_add_defer(c->loop, &cl->more, on_client_more, cl);
	if (r >= 0)
		r = sd_event_source_set_enabled(cl->more, SD_EVENT_OFF);
	if (r >= 0 && c->idle_usec)
		r = sd_event_add_time_relative(c->loop, &cl->idle, CLOCK_MONOTONIC, c->idle_usec, 0,
					       on_client_idle, cl);
	if (r < 0) {
		sd_event_source_disable_unref(cl->source);
		close_fd(cfd);
		client_release(cl);
		return 0;
	}
	c->clients[slot] = cl;
	return 0;
}

int
control_start(sd_event *loop, const char *path, bool has_gid, gid_t gid, control_handler h,
	      void *userdata, struct control **ret)
{
	struct control *c = xnew(struct control);
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	char *dir = xstrdup(path), *slash;
	int r;

	c->loop = sd_event_ref(loop);
	c->path = xstrdup(path);
	c->fd = -1;
	c->handler = h;
	c->userdata = userdata;
	c->has_gid = has_gid;
	c->gid = gid;
	c->idle_usec = 30 * 1000000ULL;
	if (strlen(path) >= sizeof(sa.sun_path)) {
		r = -ENAMETOOLONG;
		goto fail;
	}
	memcpy(sa.sun_path, path, strlen(path) + 1);
	slash = strrchr(dir, '/');
	if (slash && slash != dir) {
		*slash = 0;
		r = mkdir_p(dir, 0755);
		if (r < 0)
			goto fail;
	}
	c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (c->fd < 0) {
		r = -errno;
		goto fail;
	}
	/* a socket that still answers belongs to a running daemon: leave it alone */
	if (connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
		r = -EADDRINUSE;
		goto fail;
	}
	close_fd(c->fd);
	c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (c->fd < 0) {
		r = -errno;
		goto fail;
	}
	(void)unlink(path); /* a stale socket of a previous run */
	if (bind(c->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		r = -errno;
		goto fail;
	}
	c->bound = true;
	if (chmod(path, 0660) < 0 ||
	    (has_gid && getegid() != gid && chown(path, (uid_t)-1, gid) < 0)) {
		/* running as the group already (the packaged unit) needs no chown at all */
		r = -errno;
		goto fail;
	}
	if (listen(c->fd, 16) < 0) {
		r = -errno;
		goto fail;
	}
	r = sd_event_add_io(loop, &c->source, c->fd, EPOLLIN, on_accept, c);
	if (r < 0)
		goto fail;
	(void)sd_event_source_set_description(c->source, "control-socket");
	free(dir);
	*ret = c;
	return 0;
fail:
	free(dir);
	control_free(c);
	return r;
}

struct control *
control_free(struct control *c)
{
	if (!c)
		return NULL;
	for (size_t i = 0; i < MAX_CLIENTS; i++)
		if (c->clients[i])
			client_drop(c->clients[i]);
	sd_event_source_disable_unref(c->source);
	if (c->fd >= 0)
		close_fd(c->fd);
	if (c->bound)
		(void)unlink(c->path);
	sd_event_unref(c->loop);
	free(c->path);
	free(c);
	return NULL;
}

void
control_set_idle_timeout(struct control *c, uint64_t usec)
{
	c->idle_usec = usec;
}

void
control_set_group(struct control *c, bool has_gid, gid_t gid)
{
	c->has_gid = has_gid;
	c->gid = gid;
	if (has_gid && getegid() != gid && chown(c->path, (uid_t)-1, gid) < 0)
		log_warn_errno(-errno, "cannot give the control socket to group %u", (unsigned)gid);
}

void
control_broadcast(struct control *c, json_object *ev)
{
	for (size_t i = 0; i < MAX_CLIENTS; i++) {
		struct client *cl = c->clients[i];

		if (cl && cl->watching && client_send(cl, ev, true) < 0)
			client_drop(cl);
	}
	json_object_put(ev);
}
