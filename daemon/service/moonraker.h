/* SPDX-License-Identifier: GPL-2.0-or-later */
/* moonraker: the print-state gate. A board is not flashed while its printer prints.
 *
 * The state comes from Moonraker's object query (GET <url>/printer/objects/query?print_stats)
 * and the decision is fail-closed: a printer whose Moonraker does not answer, answers an HTTP
 * error or sends something unparsable is treated as printing, unless the profile sets
 * moonraker_fail_open. moonraker_query() blocks for at most timeout_ms (libcurl easy API with
 * a hard total timeout), so the engine calls it from a worker, or from the loop with a short
 * timeout (<= 2 s). Parsing and the decision are pure functions. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

/* print_stats.state as Klipper reports it */
enum moonraker_print {
	MOONRAKER_PRINT_STANDBY,
	MOONRAKER_PRINT_PRINTING,
	MOONRAKER_PRINT_PAUSED,
	MOONRAKER_PRINT_COMPLETE,
	MOONRAKER_PRINT_CANCELLED,
	MOONRAKER_PRINT_ERROR,
	MOONRAKER_PRINT_UNKNOWN, /* a string this version does not know */
	_MOONRAKER_PRINT_MAX,
};

#define MOONRAKER_TIMEOUT_MAX_MS 2000u

struct moonraker_state {
	/* 0 = Moonraker answered with a print state; otherwise why not: -ECONNREFUSED,
	 * -ETIMEDOUT, -EHOSTUNREACH, -EPROTO (HTTP status >= 300, see http_status), -EBADMSG
	 * (not the expected JSON), -EFBIG (reply too large), -EINVAL (bad URL) or -EIO */
	int error;
	long http_status; /* 0 when no HTTP reply was received */
	enum moonraker_print print;
	char state[32];	  /* print_stats.state as sent (escaped), "" on error */
	char detail[160]; /* libcurl's or the parser's reason when error != 0 */
};

/* Pure: extract result.status.print_stats.state from a reply body. 0 and *ret filled, or
 * -EBADMSG when the body is not that JSON shape. The state text is truncated to fit. */
int moonraker_parse(const char *buf, size_t len, enum moonraker_print *ret_print, char *ret_state,
		    size_t state_size);

/* Query the print state at url (e.g. "http://127.0.0.1:7125"; http and https only, no
 * redirects, no proxy), with api_key sent as X-Api-Key (NULL = none) for a Moonraker that
 * does not trust the host skrflash runs on ([authorization] trusted_clients, force_logins).
 * Blocks for at most timeout_ms (capped at MOONRAKER_TIMEOUT_MAX_MS). Always fills *ret;
 * returns ret->error. */
int moonraker_query(const char *url, const char *api_key, unsigned timeout_ms,
		    struct moonraker_state *ret);

/* Moonraker API keys are 32 hex digits; room for longer ones, not for a file of junk. */
#define MOONRAKER_KEY_MAX 128

/* Pure: the key in a key file's contents: its first line without surrounding blanks. 0, or
 * -EINVAL when that is empty, holds a blank or control character, or does not fit in size. */
int moonraker_key_parse(const char *buf, size_t len, char *ret, size_t size);
/* Read a key file (moonraker_api_key_file) into ret: 0, -errno, or -EINVAL as above. */
int moonraker_read_key(const char *path, char *ret, size_t size);

/* Pure gate decision: true when flashing `board` may go ahead. Refuses while printing or
 * paused, for an unknown state, and when Moonraker did not answer unless fail_open.
 * *ret_message (malloc'd, always set) names the printer URL and the state for the log. */
bool moonraker_gate(const struct moonraker_state *st, const char *url, bool fail_open,
		    const char *board, char **ret_message);

const char *moonraker_print_to_string(enum moonraker_print p);

/* Pure: the state of `device` in a power device reply ({"result": {"NAME": "off"}}). 0 and
 * ret_state filled (escaped, truncated), or -EBADMSG. */
int moonraker_power_parse(const char *buf, size_t len, const char *device, char *ret_state,
			  size_t state_size);
/* Switch a Moonraker power device ([power NAME] in moonraker.conf) on or off and check that
 * the reply says it is. Blocks like moonraker_query(); ret->state holds the reported state.
 * Returns ret->error: 0, the errors of moonraker_query(), or -EIO (another state reported:
 * the device is locked while printing, or failed). */
int moonraker_power(const char *url, const char *api_key, const char *device, bool on,
		    unsigned timeout_ms, struct moonraker_state *ret);
