/* SPDX-License-Identifier: GPL-2.0-or-later */
/* http: one blocking request to a host program's REST API (Moonraker, OctoPrint), made by
 * libcurl in the daemon's gate and power children, never in the event loop. The callers
 * read their own meaning (print state, power device, connection) into the reply. */
#pragma once

#include <stddef.h>

#include <json-c/json.h>

/* A print_stats reply is a few hundred bytes, OctoPrint's /api/connection a few KiB: far
 * more is not the program we asked */
#define HTTP_REPLY_MAX ((size_t)64 * 1024)
/* Moonraker's result.status.print_stats.state is four levels deep, OctoPrint's replies less;
 * nothing legitimate nests deeper */
#define HTTP_JSON_DEPTH 16

struct http_result {
	/* 0, or -EINVAL (no URL, a line break in the key), -ENOMEM, -ECONNREFUSED, -ETIMEDOUT,
	 * -EHOSTUNREACH, -EFBIG (reply larger than HTTP_REPLY_MAX), -EIO (any other transfer
	 * error), -EPROTO (an HTTP status outside 2xx: see status) */
	int error;
	long status;	  /* 0 when no HTTP reply was received */
	char detail[160]; /* libcurl's reason or "HTTP status N" when error != 0 */
};

/* GET <url><path> when body is NULL, else POST body ("" = empty; anything else is sent as
 * application/json), with "X-Api-Key: api_key" when api_key is not NULL; a trailing '/' of
 * url is dropped. On success the reply, NUL-terminated, in *ret_body (malloc'd, never NULL)
 * and its length in *ret_len (may be NULL); on failure *ret_body is NULL. Returns
 * ret->error. */
int http_request(const char *url, const char *path, const char *api_key, const char *body,
		 unsigned timeout_ms, struct http_result *ret, char **ret_body, size_t *ret_len);

/* A reply that must be exactly one JSON value (white space may follow it), nested at most
 * HTTP_JSON_DEPTH deep: the value (json_object_put() it), or NULL with *ret_error (when not
 * NULL) set to -EBADMSG (not such a value, or a NUL byte in it) or -ENOMEM. */
struct json_object *http_json_parse(const char *buf, size_t len, int *ret_error);
/* The member `key` of the object o when it has the type `type`; NULL when o is not an object
 * (or NULL), has no such member or one of another type. */
struct json_object *http_json_member(struct json_object *o, const char *key, enum json_type type);
