/* SPDX-License-Identifier: GPL-2.0-or-later */
/* moonraker: query print_stats over HTTP (libcurl), parse it (json-c), decide. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <json-c/json.h>

#include "log.h"
#include "service/http.h"
#include "service/moonraker.h"
#include "util.h"

static const char *const print_names[_MOONRAKER_PRINT_MAX] = {
    [MOONRAKER_PRINT_STANDBY] = "standby",     [MOONRAKER_PRINT_PRINTING] = "printing",
    [MOONRAKER_PRINT_PAUSED] = "paused",       [MOONRAKER_PRINT_COMPLETE] = "complete",
    [MOONRAKER_PRINT_CANCELLED] = "cancelled", [MOONRAKER_PRINT_ERROR] = "error",
    [MOONRAKER_PRINT_UNKNOWN] = "unknown",
};

const char *
moonraker_print_to_string(enum moonraker_print p)
{
	if ((unsigned)p >= _MOONRAKER_PRINT_MAX)
		return "unknown";
	return print_names[p];
}

int
moonraker_parse(const char *buf, size_t len, enum moonraker_print *ret_print, char *ret_state,
		size_t state_size)
{
	struct json_object *root, *state;
	const char *s;
	int r = -EBADMSG;

	root = http_json_parse(buf, len, &r);
	if (!root)
		return r;
	/* {"result": {"eventtime": .., "status": {"print_stats": {"state": "printing", ..}}}}
	 * (Moonraker API, "Query printer object status") */
	state = http_json_member(root, "result", json_type_object);
	state = http_json_member(state, "status", json_type_object);
	state = http_json_member(state, "print_stats", json_type_object);
	state = http_json_member(state, "state", json_type_string);
	if (!state)
		goto out;
	s = json_object_get_string(state);
	*ret_print = MOONRAKER_PRINT_UNKNOWN;
	for (size_t i = 0; i < MOONRAKER_PRINT_UNKNOWN; i++)
		if (strcmp(s, print_names[i]) == 0)
			*ret_print = (enum moonraker_print)i;
	if (state_size > 0)
		escape_name(s, ret_state, state_size);
	r = 0;
out:
	json_object_put(root);
	return r;
}

int
moonraker_key_parse(const char *buf, size_t len, char *ret, size_t size)
{
	size_t a = 0, b;

	while (a < len && (buf[a] == ' ' || buf[a] == '\t'))
		a++;
	b = a;
	while (b < len && buf[b] != '\n')
		b++;
	while (b > a && (buf[b - 1] == ' ' || buf[b - 1] == '\t' || buf[b - 1] == '\r'))
		b--;
	if (b == a || b - a >= size)
		return -EINVAL;
	for (size_t i = a; i < b; i++)
		if ((unsigned char)buf[i] <= ' ' || buf[i] == 0x7f)
			return -EINVAL;
	memcpy(ret, buf + a, b - a);
	ret[b - a] = '\0';
	return 0;
}

int
moonraker_read_key(const char *path, char *ret, size_t size)
{
	uint8_t *data = NULL;
	size_t len = 0;
	int r = read_file(path, 4096, &data, &len);

	if (r < 0)
		return r;
	r = moonraker_key_parse((const char *)data, len, ret, size);
	free(data);
	return r;
}

/* One request to <url><path> (GET, or POST with an empty body): fills ret->error,
 * http_status and detail as moonraker_query() documents them, and the reply in *body. */
static int
http_call(const char *url, const char *path, bool post, const char *api_key, unsigned timeout_ms,
	  struct moonraker_state *ret, char **body, size_t *len)
{
	struct http_result h;

	memset(ret, 0, sizeof(*ret));
	ret->print = MOONRAKER_PRINT_UNKNOWN;
	if (timeout_ms == 0 || timeout_ms > MOONRAKER_TIMEOUT_MAX_MS)
		timeout_ms = MOONRAKER_TIMEOUT_MAX_MS;
	ret->error = http_request(url, path, api_key, post ? "" : NULL, timeout_ms, &h, body, len);
	ret->http_status = h.status;
	str_copy(ret->detail, sizeof(ret->detail), h.detail);
	if (ret->error == -EPROTO && (h.status == 401 || h.status == 403))
		snprintf(ret->detail, sizeof(ret->detail), "HTTP status %ld%s", h.status,
			 api_key ? ", not authorized: Moonraker refused the API key"
				 : ", not authorized: trust this host in Moonraker or give an API "
				   "key (moonraker_api_key_file)");
	return ret->error;
}

int
moonraker_query(const char *url, const char *api_key, unsigned timeout_ms,
		struct moonraker_state *ret)
{
	char *body = NULL;
	size_t len = 0;

	if (http_call(url, "/printer/objects/query?print_stats", false, api_key, timeout_ms, ret,
		      &body, &len) == 0 &&
	    moonraker_parse(body, len, &ret->print, ret->state, sizeof(ret->state)) < 0) {
		ret->error = -EBADMSG;
		ret->print = MOONRAKER_PRINT_UNKNOWN;
		ret->state[0] = '\0';
		str_copy(ret->detail, sizeof(ret->detail),
			 "reply has no result.status.print_stats.state");
	}
	free(body);
	return ret->error;
}

int
moonraker_power_parse(const char *buf, size_t len, const char *device, char *ret_state,
		      size_t state_size)
{
	struct json_object *root, *state;
	int r = -EBADMSG;

	root = http_json_parse(buf, len, &r);
	if (!root)
		return r;
	/* {"result": {"printer_psu": "off"}} (Moonraker docs/web_api.md, "Set Device State":
	 * the reply names the device with its state: on, off, init or error) */
	state = http_json_member(http_json_member(root, "result", json_type_object), device,
				 json_type_string);
	if (state) {
		if (state_size > 0)
			escape_name(json_object_get_string(state), ret_state, state_size);
		r = 0;
	}
	json_object_put(root);
	return r;
}

int
moonraker_power(const char *url, const char *api_key, const char *device, bool on,
		unsigned timeout_ms, struct moonraker_state *ret)
{
	const char *want = on ? "on" : "off";
	char *path, *dev, *body = NULL;
	size_t len = 0;

	/* POST /machine/device_power/device?device=NAME&action=on|off (Moonraker
	 * docs/web_api.md, "Set Device State"; query arguments stand for the JSON body) */
	dev = curl_easy_escape(NULL, device, 0);
	if (!dev) {
		memset(ret, 0, sizeof(*ret));
		ret->error = -ENOMEM;
		return ret->error;
	}
	path = xasprintf("/machine/device_power/device?device=%s&action=%s", dev, want);
	curl_free(dev);
	if (http_call(url, path, true, api_key, timeout_ms, ret, &body, &len) == 0) {
		if (moonraker_power_parse(body, len, device, ret->state, sizeof(ret->state)) < 0) {
			ret->error = -EBADMSG;
			(void)snprintf(ret->detail, sizeof(ret->detail),
				       "reply has no result.%.100s", device);
		} else if (strcmp(ret->state, want) != 0) {
			ret->error = -EIO;
			(void)snprintf(ret->detail, sizeof(ret->detail),
				       "the device reports \"%s\", not \"%s\"", ret->state, want);
		}
	}
	free(body);
	free(path);
	return ret->error;
}

bool
moonraker_gate(const struct moonraker_state *st, const char *url, bool fail_open, const char *board,
	       char **ret_message)
{
	if (!url)
		url = "(no URL)";
	if (!board)
		board = "the board";
	if (st->error != 0) {
		const char *why = st->detail[0] ? st->detail : strerror(-st->error);

		if (fail_open) {
			*ret_message = xasprintf("Moonraker at %s did not answer (%s); flashing %s "
						 "anyway (moonraker_fail_open)",
						 url, why, board);
			return true;
		}
		*ret_message = xasprintf("Moonraker at %s did not answer (%s); not flashing %s "
					 "while the print state is unknown (moonraker_fail_open "
					 "is off)",
					 url, why, board);
		return false;
	}
	switch (st->print) {
	case MOONRAKER_PRINT_PRINTING:
	case MOONRAKER_PRINT_PAUSED:
		*ret_message = xasprintf("printer at %s is %s; not flashing %s now (it will be "
					 "flashed when the print ends: `skrflashctl flash %s`)",
					 url, moonraker_print_to_string(st->print), board, board);
		return false;
	case MOONRAKER_PRINT_STANDBY:
	case MOONRAKER_PRINT_COMPLETE:
	case MOONRAKER_PRINT_CANCELLED:
	case MOONRAKER_PRINT_ERROR:
		*ret_message = xasprintf("printer at %s is %s; flashing %s", url,
					 moonraker_print_to_string(st->print), board);
		return true;
	case MOONRAKER_PRINT_UNKNOWN:
	case _MOONRAKER_PRINT_MAX:
		break;
	}
	/* Moonraker answered, so fail_open does not apply: a state this version does not
	 * know may well be a print in progress */
	*ret_message = xasprintf("printer at %s reports print state \"%s\", unknown to skrflash; "
				 "not flashing %s",
				 url, st->state, board);
	return false;
}
