/* SPDX-License-Identifier: GPL-2.0-or-later */
/* moonraker: query print_stats over HTTP (libcurl), parse it (json-c), decide. */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <json-c/json.h>

#include "log.h"
#include "service/moonraker.h"
#include "util.h"

/* A print_stats reply is a few hundred bytes; anything far larger is not Moonraker. */
#define REPLY_MAX ((size_t)64 * 1024)
/* result.status.print_stats.state is four levels deep; nothing legitimate nests deeper */
#define JSON_DEPTH 16

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

static struct json_object *
member(struct json_object *o, const char *key, enum json_type type)
{
	struct json_object *v;

	if (!o || !json_object_is_type(o, json_type_object))
		return NULL;
	if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, type))
		return NULL;
	return v;
}

int
moonraker_parse(const char *buf, size_t len, enum moonraker_print *ret_print, char *ret_state,
		size_t state_size)
{
	struct json_tokener *tok;
	struct json_object *root, *state;
	const char *s;
	size_t end;
	int r = -EBADMSG;

	/* json-c stops at a NUL byte, which would hide what follows it */
	if (len == 0 || len > INT_MAX || memchr(buf, '\0', len))
		return -EBADMSG;
	tok = json_tokener_new_ex(JSON_DEPTH);
	if (!tok)
		return -ENOMEM;
	root = json_tokener_parse_ex(tok, buf, (int)len);
	if (!root || json_tokener_get_error(tok) != json_tokener_success)
		goto out;
	for (end = json_tokener_get_parse_end(tok); end < len; end++)
		if (!strchr(" \t\r\n", buf[end]))
			goto out;
	/* {"result": {"eventtime": .., "status": {"print_stats": {"state": "printing", ..}}}}
	 * (Moonraker API, "Query printer object status") */
	state = member(
	    member(member(member(root, "result", json_type_object), "status", json_type_object),
		   "print_stats", json_type_object),
	    "state", json_type_string);
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
	json_tokener_free(tok);
	return r;
}

struct reply {
	char *data;
	size_t len;
	bool too_big;
};

static size_t
on_data(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	struct reply *b = userdata;
	size_t n = size * nmemb;

	if (n > REPLY_MAX - b->len) {
		b->too_big = true;
		return 0; /* aborts the transfer with CURLE_WRITE_ERROR */
	}
	b->data = xreallocarray(b->data, b->len + n + 1, 1);
	memcpy(b->data + b->len, ptr, n);
	b->len += n;
	return n;
}

/* if-chain, not switch: -Wswitch-enum would demand all ~100 CURLcode values */
static int
curl_to_errno(CURLcode c)
{
	if (c == CURLE_COULDNT_CONNECT)
		return -ECONNREFUSED;
	if (c == CURLE_OPERATION_TIMEDOUT)
		return -ETIMEDOUT;
	if (c == CURLE_COULDNT_RESOLVE_HOST || c == CURLE_COULDNT_RESOLVE_PROXY)
		return -EHOSTUNREACH;
	if (c == CURLE_URL_MALFORMAT || c == CURLE_UNSUPPORTED_PROTOCOL)
		return -EINVAL;
	if (c == CURLE_OUT_OF_MEMORY)
		return -ENOMEM;
	return -EIO;
}

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_result;

static void
init_curl(void)
{
	curl_init_result = curl_global_init(CURL_GLOBAL_DEFAULT);
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
	  struct moonraker_state *ret, struct reply *body)
{
	struct curl_slist *headers = NULL;
	char errbuf[CURL_ERROR_SIZE] = "";
	size_t url_len;
	char *full = NULL;
	CURLcode c;
	CURL *h = NULL;

	memset(ret, 0, sizeof(*ret));
	ret->print = MOONRAKER_PRINT_UNKNOWN;
	if (timeout_ms == 0 || timeout_ms > MOONRAKER_TIMEOUT_MAX_MS)
		timeout_ms = MOONRAKER_TIMEOUT_MAX_MS;
	url_len = url ? strlen(url) : 0;
	while (url_len > 0 && url[url_len - 1] == '/')
		url_len--;
	if (url_len == 0) {
		ret->error = -EINVAL;
		str_copy(ret->detail, sizeof(ret->detail), "no URL");
		return ret->error;
	}
	(void)pthread_once(&curl_once, init_curl);
	if (curl_init_result != CURLE_OK || !(h = curl_easy_init())) {
		ret->error = -ENOMEM;
		str_copy(ret->detail, sizeof(ret->detail), "libcurl initialisation failed");
		return ret->error;
	}
	full = xasprintf("%.*s%s", (int)url_len, url, path);
	curl_easy_setopt(h, CURLOPT_URL, full);
	curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
	/* Moonraker runs on the printer's host or LAN; an http_proxy meant for downloads must
	 * not see (or answer for) the print state */
	curl_easy_setopt(h, CURLOPT_NOPROXY, "*");
	/* no SIGALRM: the daemon owns its signals, and workers may be threads */
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)timeout_ms);
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)timeout_ms);
	curl_easy_setopt(h, CURLOPT_USERAGENT, "skrflash/" SKRFLASH_VERSION);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_data);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, body);
	if (post)
		curl_easy_setopt(h, CURLOPT_POSTFIELDS, "");
	if (api_key) {
		char *hdr;

		/* a header injection through the key would be a config error; refuse it */
		if (strpbrk(api_key, "\r\n")) {
			ret->error = -EINVAL;
			str_copy(ret->detail, sizeof(ret->detail), "API key contains a line break");
			goto out;
		}
		hdr = xasprintf("X-Api-Key: %s", api_key);
		headers = curl_slist_append(NULL, hdr);
		free(hdr);
		if (!headers) {
			ret->error = -ENOMEM;
			goto out;
		}
		curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
	}

	c = curl_easy_perform(h);
	(void)curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &ret->http_status);
	if (c != CURLE_OK) {
		ret->error = body->too_big ? -EFBIG : curl_to_errno(c);
		if (body->too_big)
			snprintf(ret->detail, sizeof(ret->detail), "reply larger than %zu bytes",
				 REPLY_MAX);
		else
			escape_name(errbuf[0] ? errbuf : curl_easy_strerror(c), ret->detail,
				    sizeof(ret->detail));
	} else if (ret->http_status < 200 || ret->http_status >= 300) {
		ret->error = -EPROTO;
		snprintf(ret->detail, sizeof(ret->detail), "HTTP status %ld%s", ret->http_status,
			 ret->http_status != 401 && ret->http_status != 403 ? ""
			 : api_key
			     ? ", not authorized: Moonraker refused the API key"
			     : ", not authorized: trust this host in Moonraker or give an API key "
			       "(moonraker_api_key_file)");
	}
out:
	curl_slist_free_all(headers);
	curl_easy_cleanup(h);
	free(full);
	return ret->error;
}

int
moonraker_query(const char *url, const char *api_key, unsigned timeout_ms,
		struct moonraker_state *ret)
{
	struct reply body = {0};

	if (http_call(url, "/printer/objects/query?print_stats", false, api_key, timeout_ms, ret,
		      &body) == 0 &&
	    moonraker_parse(body.data ? body.data : "", body.len, &ret->print, ret->state,
			    sizeof(ret->state)) < 0) {
		ret->error = -EBADMSG;
		ret->print = MOONRAKER_PRINT_UNKNOWN;
		ret->state[0] = '\0';
		str_copy(ret->detail, sizeof(ret->detail),
			 "reply has no result.status.print_stats.state");
	}
	free(body.data);
	return ret->error;
}

int
moonraker_power_parse(const char *buf, size_t len, const char *device, char *ret_state,
		      size_t state_size)
{
	struct json_tokener *tok;
	struct json_object *root, *state;
	size_t end;
	int r = -EBADMSG;

	if (len == 0 || len > INT_MAX || memchr(buf, '\0', len))
		return -EBADMSG;
	tok = json_tokener_new_ex(JSON_DEPTH);
	if (!tok)
		return -ENOMEM;
	root = json_tokener_parse_ex(tok, buf, (int)len);
	if (!root || json_tokener_get_error(tok) != json_tokener_success)
		goto out;
	for (end = json_tokener_get_parse_end(tok); end < len; end++)
		if (!strchr(" \t\r\n", buf[end]))
			goto out;
	/* {"result": {"printer_psu": "off"}} (Moonraker docs/web_api.md, "Set Device State":
	 * the reply names the device with its state: on, off, init or error) */
	state = member(member(root, "result", json_type_object), device, json_type_string);
	if (!state)
		goto out;
	if (state_size > 0)
		escape_name(json_object_get_string(state), ret_state, state_size);
	r = 0;
out:
	json_object_put(root);
	json_tokener_free(tok);
	return r;
}

int
moonraker_power(const char *url, const char *api_key, const char *device, bool on,
		unsigned timeout_ms, struct moonraker_state *ret)
{
	struct reply body = {0};
	const char *want = on ? "on" : "off";
	char *path, *dev;

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
	if (http_call(url, path, true, api_key, timeout_ms, ret, &body) == 0) {
		if (moonraker_power_parse(body.data ? body.data : "", body.len, device, ret->state,
					  sizeof(ret->state)) < 0) {
			ret->error = -EBADMSG;
			(void)snprintf(ret->detail, sizeof(ret->detail),
				       "reply has no result.%.100s", device);
		} else if (strcmp(ret->state, want) != 0) {
			ret->error = -EIO;
			(void)snprintf(ret->detail, sizeof(ret->detail),
				       "the device reports \"%s\", not \"%s\"", ret->state, want);
		}
	}
	free(body.data);
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
