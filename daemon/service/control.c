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

#define MAX_CLIENTS 64
#define MAX_OUTPUT (8u << 20) /* a watcher that stops reading is dropped, not buffered forever */

static const char *const command_names[_CONTROL_COMMAND_MAX] = {
    [CONTROL_STATUS] = "status",   [CONTROL_BOARDS] = "boards",	  [CONTROL_QUEUED] = "queued",
    [CONTROL_HISTORY] = "history", [CONTROL_WATCH] = "watch",	  [CONTROL_FLASH] = "flash",
    [CONTROL_RETRY] = "retry",	   [CONTROL_PROFILE] = "profile",
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

int
control_parse_request(const char *line, size_t len, struct control_request *ret,
		      const char **ret_error)
{
	struct control_request req;
	struct json_tokener *tok;
	json_object *o = NULL, *v;
	const char *name;
	int r = -EINVAL;

	memset(&req, 0, sizeof(req));
	*ret_error = "request is not a JSON object";
	if (len == 0 || len > CONTROL_MAX_LINE || memchr(line, 0, len))
		return -EINVAL;
	tok = json_tokener_new_ex(16);
	if (!tok)
		return -ENOMEM;
	o = json_tokener_parse_ex(tok, line, (int)len);
	/* trailing garbage after the object is an error too */
	if (!o || json_tokener_get_error(tok) != json_tokener_success ||
	    json_tokener_get_parse_end(tok) != len || !json_object_is_type(o, json_type_object))
		goto out;
	json_object_object_foreach(o, key, val) {
		(void)val;
		if (strcmp(key, "command") != 0 && strcmp(key, "board") != 0 &&
		    strcmp(key, "limit") != 0 && strcmp(key, "all") != 0 &&
		    strcmp(key, "force") != 0 && strcmp(key, "dry_run") != 0 &&
		    strcmp(key, "profile") != 0) {
			*ret_error = "unknown key in request";
			goto out;
		}
	}
	if (!json_object_object_get_ex(o, "command", &v) ||
	    !json_object_is_type(v, json_type_string)) {
		*ret_error = "request has no \"command\" string";
		goto out;
	}
	name = json_object_get_string(v);
	req.command = _CONTROL_COMMAND_MAX;
	for (int i = 0; i < _CONTROL_COMMAND_MAX; i++)
		if (strcmp(name, command_names[i]) == 0)
			req.command = (enum control_command)i;
	if (req.command == _CONTROL_COMMAND_MAX) {
		*ret_error = "unknown command";
		goto out;
	}
	if (get_string(o, "board", req.board, sizeof(req.board),
		       req.command == CONTROL_FLASH || req.command == CONTROL_RETRY, ret_error) < 0)
		goto out;
	if (json_object_object_get_ex(o, "limit", &v)) {
		int64_t l;

		if (!json_object_is_type(v, json_type_int)) {
			*ret_error = "\"limit\" must be an integer";
			goto out;
		}
		l = json_object_get_int64(v);
		if (l < 1 || l > 10000) {
			*ret_error = "\"limit\" must be 1..10000";
			goto out;
		}
		req.limit = (unsigned)l;
	}
	if (get_string(o, "profile", req.profile, sizeof(req.profile),
		       req.command == CONTROL_PROFILE, ret_error) < 0 ||
	    get_bool(o, "all", &req.all, ret_error) < 0 ||
	    get_bool(o, "force", &req.force, ret_error) < 0 ||
	    get_bool(o, "dry_run", &req.dry_run, ret_error) < 0)
		goto out;
	*ret = req;
	*ret_error = NULL;
	r = 0;
out:
	json_object_put(o);
	json_tokener_free(tok);
	return r;
}

struct client {
	struct control *owner;
	int fd;
	sd_event_source *source;
	char in[CONTROL_MAX_LINE + 1];
	size_t in_len;
	char *out;
	size_t out_len;
	bool watching;
	bool closing;
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
	struct client *clients[MAX_CLIENTS];
};

static void
client_free(struct client *cl)
{
	struct control *c = cl->owner;

	for (size_t i = 0; i < MAX_CLIENTS; i++)
		if (c->clients[i] == cl)
			c->clients[i] = NULL;
	sd_event_source_disable_unref(cl->source);
	close_fd(cl->fd);
	free(cl->out);
	free(cl);
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
	(void)sd_event_source_set_io_events(cl->source, cl->out_len ? EPOLLIN | EPOLLOUT : EPOLLIN);
	return cl->out_len == 0 && cl->closing ? -ECONNRESET : 0;
}

static int
client_send(struct client *cl, json_object *o)
{
	const char *s = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);
	size_t len = strlen(s);

	if (cl->out_len + len + 1 > MAX_OUTPUT)
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
	r = client_send(cl, resp);
	json_object_put(resp);
	return r;
}

static int
on_client(sd_event_source *s, int fd, uint32_t revents, void *userdata)
{
	struct client *cl = userdata;
	int r = 0;

	(void)s;
	if (revents & EPOLLOUT) {
		r = client_flush(cl);
		if (r < 0)
			goto drop;
	}
	if (!(revents & (EPOLLIN | EPOLLHUP | EPOLLERR)))
		return 0;
	for (;;) {
		ssize_t n =
		    recv(fd, cl->in + cl->in_len, CONTROL_MAX_LINE + 1 - cl->in_len, MSG_DONTWAIT);
		char *nl;

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return 0;
		if (n <= 0) {
			/* peer closed: finish sending what is queued, then go */
			if (cl->out_len == 0 || n < 0)
				goto drop;
			cl->closing = true;
			(void)sd_event_source_set_io_events(cl->source, EPOLLOUT);
			return 0;
		}
		cl->in_len += (size_t)n;
		while ((nl = memchr(cl->in, '\n', cl->in_len))) {
			size_t len = (size_t)(nl - cl->in);

			r = client_line(cl, cl->in, len);
			memmove(cl->in, nl + 1, cl->in_len - len - 1);
			cl->in_len -= len + 1;
			if (r < 0)
				goto drop;
		}
		if (cl->in_len > CONTROL_MAX_LINE) {
			json_object *e = error_response("request line too long");

			(void)client_send(cl, e);
			json_object_put(e);
			goto drop;
		}
	}
drop:
	client_free(cl);
	return 0;
}

static bool
in_group_list(pid_t pid, gid_t gid)
{
	char path[64], line[1024];
	bool found = false;
	FILE *f;

	(void)snprintf(path, sizeof(path), "/proc/%ld/status", (long)pid);
	f = fopen(path, "re");
	if (!f)
		return false;
	while (!found && fgets(line, sizeof(line), f)) {
		char *p, *end;

		if (strncmp(line, "Groups:", 7) != 0)
			continue;
		for (p = line + 7;; p = end) {
			unsigned long g = strtoul(p, &end, 10);

			if (end == p)
				break;
			if ((gid_t)g == gid)
				found = true;
		}
	}
	fclose(f);
	return found;
}

static bool
peer_allowed(const struct control *c, int fd)
{
	struct ucred cred;
	socklen_t len = sizeof(cred);

	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
		return false;
	if (cred.uid == 0 || cred.uid == geteuid())
		return true;
	if (!c->has_gid)
		return false;
	return cred.gid == c->gid || in_group_list(cred.pid, c->gid);
}

static int
on_accept(sd_event_source *s, int fd, uint32_t revents, void *userdata)
{
	struct control *c = userdata;
	struct client *cl;
	size_t slot;
	int cfd, r;

	(void)s;
	(void)revents;
	cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
	if (cfd < 0)
		return 0;
	if (!peer_allowed(c, cfd)) {
		static const char msg[] = "{\"ok\":false,\"error\":\"permission denied: not root "
					  "and not in the control group\"}\n";
		(void)!send(cfd, msg, sizeof(msg) - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
		close_fd(cfd);
		return 0;
	}
	for (slot = 0; slot < MAX_CLIENTS && c->clients[slot]; slot++)
		;
	if (slot == MAX_CLIENTS) {
		log_warn("control socket: too many clients, refusing one");
		close_fd(cfd);
		return 0;
	}
	cl = xnew(struct client);
	cl->owner = c;
	cl->fd = cfd;
	r = sd_event_add_io(c->loop, &cl->source, cfd, EPOLLIN, on_client, cl);
	if (r < 0) {
		close_fd(cfd);
		free(cl);
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
			client_free(c->clients[i]);
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

		if (cl && cl->watching && client_send(cl, ev) < 0)
			client_free(cl);
	}
	json_object_put(ev);
}
