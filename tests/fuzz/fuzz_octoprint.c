/* SPDX-License-Identifier: GPL-2.0-or-later */
/* fuzz_octoprint: OctoPrint's /api/connection and /api/job replies, the record of a released
 * connection, and the state table on arbitrary bytes. Traps if a state the table does not
 * know as idle ever lets a flash go on, if a parsed string overflows or carries a control
 * character, or if a parsed record does not come back through the connect body. */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "service/octoprint.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
check_text(const char *s, size_t size)
{
	size_t n = strnlen(s, size);

	if (n >= size)
		__builtin_trap();
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
			__builtin_trap();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *buf = (const char *)data;
	struct octoprint_conn c;
	struct octoprint_record rec;
	char state[64];

	if (octoprint_parse_connection(buf, size, &c) == 0) {
		check_text(c.state, sizeof(c.state));
		check_text(c.port, sizeof(c.port));
		check_text(c.profile, sizeof(c.profile));
		if (c.baudrate < 0)
			__builtin_trap();
	}
	if (octoprint_parse_job(buf, size, state, sizeof(state)) == 0) {
		check_text(state, sizeof(state));
		/* only the five idle words may allow a flash */
		if (octoprint_activity(state) == OCTOPRINT_IDLE &&
		    strcmp(state, "Operational") != 0 && strcmp(state, "Offline") != 0 &&
		    strcmp(state, "Closed") != 0 && strcmp(state, "Error") != 0 &&
		    strcmp(state, "Offline after error") != 0)
			__builtin_trap();
	}
	if (octoprint_record_parse(buf, size, &rec) == 0) {
		char *body;
		struct json_object *o, *v;

		if (!rec.url[0] || !rec.conn.port[0] || rec.conn.baudrate < 0)
			__builtin_trap();
		check_text(rec.url, sizeof(rec.url));
		check_text(rec.conn.port, sizeof(rec.conn.port));
		/* the connect command carries the recorded port unchanged */
		body = octoprint_connect_body(&rec.conn, rec.conn.port);
		o = json_tokener_parse(body);
		if (!o || !json_object_object_get_ex(o, "port", &v) ||
		    strcmp(json_object_get_string(v), rec.conn.port) != 0)
			__builtin_trap();
		json_object_put(o);
		free(body);
	}
	return 0;
}
