/* SPDX-License-Identifier: GPL-2.0-or-later */
/* control: the daemon's control socket, one JSON request and one JSON response per line.
 *
 * Requests are parsed by a pure function (fuzzed) into struct control_request; the daemon's
 * handler turns each into a response object. Clients that ask to "watch" stay connected and
 * receive every event the daemon broadcasts, one JSON object per line. Access is checked
 * with SO_PEERCRED and SO_PEERGROUPS: root, the daemon's own user, or members of the control
 * group (primary or supplementary).
 *
 * No client can stall the loop or the others: a few requests per wake-up, no new answer
 * before the last was read, a watcher that falls behind is dropped, idle clients time out,
 * each user has a few connections and root keeps slots of its own. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include <json-c/json.h>
#include <systemd/sd-event.h>

#define CONTROL_MAX_LINE 4096

enum control_command {
	CONTROL_STATUS,
	CONTROL_BOARDS,
	CONTROL_QUEUED,
	CONTROL_HISTORY,
	CONTROL_WATCH,
	CONTROL_FLASH,
	CONTROL_RETRY,
	CONTROL_PROFILE, /* what the daemon's config says about a queue name, before a drop */
	CONTROL_RESCUE,	 /* a bootloader over a UART, or the stored old one back (restore) */
	_CONTROL_COMMAND_MAX,
};

struct control_request {
	enum control_command command;
	char board[128];   /* flash, retry, history (optional) */
	unsigned limit;	   /* history: 0 = default */
	bool all;	   /* boards: include known boards that are not present */
	bool force;	   /* flash: also an image marked bad on this board */
	bool dry_run;	   /* flash: run the gates and answer the plan, touch nothing */
	char profile[128]; /* profile: a profile or queue name */
	/* rescue: the UART (else the config's rescue entry of `board`), the bootloader file
	 * (the daemon reads it), or restore with the stored sha (else the newest kept one) */
	char device[256];
	char file[1024];
	char sha[65];
	bool restore;
};

/* Parse one request line (without the newline). Pure. 0, or -EINVAL with *ret_error set
 * to a static message. */
int control_parse_request(const char *line, size_t len, struct control_request *ret,
			  const char **ret_error);
const char *control_command_to_string(enum control_command c);

/* Returns the response (ownership passes to control); must contain "ok". */
typedef json_object *(*control_handler)(void *userdata, const struct control_request *req);

struct control;

/* Listen on `path` (mode 0660, group gid when has_gid). */
int control_start(sd_event *loop, const char *path, bool has_gid, gid_t gid, control_handler h,
		  void *userdata, struct control **ret);
struct control *control_free(struct control *c); /* accepts NULL, returns NULL; unlinks */
void control_set_group(struct control *c, bool has_gid, gid_t gid);
/* Drop clients that send no request for usec (watchers excepted); 0 = never. Applies to
 * clients that connect from now on. */
void control_set_idle_timeout(struct control *c, uint64_t usec);
/* Send an event to every watching client; takes ownership of ev. */
void control_broadcast(struct control *c, json_object *ev);
