/* SPDX-License-Identifier: GPL-2.0-or-later */
/* http: see http.h. */
#include "service/http.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "util.h"

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

	if (n > HTTP_REPLY_MAX - b->len) {
		b->too_big = true;
		return 0; /* aborts the transfer with CURLE_WRITE_ERROR */
	}
	b->data = xreallocarray(b->data, b->len + n + 1, 1);
	memcpy(b->data + b->len, ptr, n);
	b->len += n;
	b->data[b->len] = '\0';
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

static void
set_options(CURL *h, const char *full, unsigned timeout_ms, char *errbuf, struct reply *body)
{
	curl_easy_setopt(h, CURLOPT_URL, full);
	curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
	/* the host program runs on the Pi or its LAN; an http_proxy meant for downloads must
	 * not see (or answer for) the printer's state */
	curl_easy_setopt(h, CURLOPT_NOPROXY, "*");
	/* no SIGALRM: the daemon owns its signals, and workers may be threads */
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)timeout_ms);
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)timeout_ms);
	curl_easy_setopt(h, CURLOPT_USERAGENT, "skrflash/" SKRFLASH_VERSION);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_data);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, body);
}

static void
classify(CURL *h, CURLcode c, const struct reply *body, const char *errbuf, struct http_result *ret)
{
	(void)curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &ret->status);
	if (c != CURLE_OK) {
		ret->error = body->too_big ? -EFBIG : curl_to_errno(c);
		if (body->too_big)
			snprintf(ret->detail, sizeof(ret->detail), "reply larger than %zu bytes",
				 HTTP_REPLY_MAX);
		else
			escape_name(errbuf[0] ? errbuf : curl_easy_strerror(c), ret->detail,
				    sizeof(ret->detail));
	} else if (ret->status < 200 || ret->status >= 300) {
		ret->error = -EPROTO;
		snprintf(ret->detail, sizeof(ret->detail), "HTTP status %ld", ret->status);
	}
}

/* the API key and, for a body, its type; NULL with ret->error set when it cannot be */
static struct curl_slist *
headers_for(const char *api_key, const char *body, struct http_result *ret)
{
	struct curl_slist *headers = NULL;

	if (api_key) {
		char *hdr = xasprintf("X-Api-Key: %s", api_key);

		headers = curl_slist_append(NULL, hdr);
		free(hdr);
		if (!headers) {
			ret->error = -ENOMEM;
			return NULL;
		}
	}
	if (body && body[0]) {
		struct curl_slist *h = curl_slist_append(headers, "Content-Type: application/json");

		if (!h) {
			curl_slist_free_all(headers);
			ret->error = -ENOMEM;
			return NULL;
		}
		headers = h;
	}
	return headers;
}

int
http_request(const char *url, const char *path, const char *api_key, const char *body,
	     unsigned timeout_ms, struct http_result *ret, char **ret_body, size_t *ret_len)
{
	struct curl_slist *headers;
	char errbuf[CURL_ERROR_SIZE] = "";
	struct reply rb = {0};
	size_t url_len;
	char *full;
	CURL *h;

	memset(ret, 0, sizeof(*ret));
	*ret_body = NULL;
	if (ret_len)
		*ret_len = 0;
	url_len = url ? strlen(url) : 0;
	while (url_len > 0 && url[url_len - 1] == '/')
		url_len--;
	if (url_len == 0) {
		ret->error = -EINVAL;
		str_copy(ret->detail, sizeof(ret->detail), "no URL");
		return ret->error;
	}
	/* a header injection through the key would be a config error; refuse it */
	if (api_key && strpbrk(api_key, "\r\n")) {
		ret->error = -EINVAL;
		str_copy(ret->detail, sizeof(ret->detail), "API key contains a line break");
		return ret->error;
	}
	(void)pthread_once(&curl_once, init_curl);
	if (curl_init_result != CURLE_OK || !(h = curl_easy_init())) {
		ret->error = -ENOMEM;
		str_copy(ret->detail, sizeof(ret->detail), "libcurl initialisation failed");
		return ret->error;
	}
	headers = headers_for(api_key, body, ret);
	if (ret->error) {
		curl_easy_cleanup(h);
		return ret->error;
	}
	full = xasprintf("%.*s%s", (int)url_len, url, path);
	set_options(h, full, timeout_ms, errbuf, &rb);
	if (headers)
		curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
	if (body)
		curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
	classify(h, curl_easy_perform(h), &rb, errbuf, ret);
	if (ret->error == 0) {
		*ret_body = rb.data ? rb.data : xstrdup("");
		if (ret_len)
			*ret_len = rb.len;
		rb.data = NULL;
	}
	curl_slist_free_all(headers);
	curl_easy_cleanup(h);
	free(rb.data);
	free(full);
	return ret->error;
}

struct json_object *
http_json_parse(const char *buf, size_t len, int *ret_error)
{
	struct json_tokener *tok;
	struct json_object *root;
	int r = -EBADMSG;

	/* json-c stops at a NUL byte, which would hide what follows it */
	if (len == 0 || len > INT_MAX || memchr(buf, '\0', len))
		goto fail;
	tok = json_tokener_new_ex(HTTP_JSON_DEPTH);
	if (!tok) {
		r = -ENOMEM;
		goto fail;
	}
	root = json_tokener_parse_ex(tok, buf, (int)len);
	if (root && json_tokener_get_error(tok) == json_tokener_success) {
		size_t end;

		for (end = json_tokener_get_parse_end(tok); end < len; end++)
			if (!strchr(" \t\r\n", buf[end]))
				break;
		if (end == len) {
			json_tokener_free(tok);
			return root;
		}
	}
	json_object_put(root);
	json_tokener_free(tok);
fail:
	if (ret_error)
		*ret_error = r;
	return NULL;
}

struct json_object *
http_json_member(struct json_object *o, const char *key, enum json_type type)
{
	struct json_object *v;

	if (!o || !json_object_is_type(o, json_type_object))
		return NULL;
	if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, type))
		return NULL;
	return v;
}
