/* SPDX-License-Identifier: GPL-2.0-or-later */
/* fuzz_moonraker: the print_stats reply parser and the gate decision on arbitrary bytes. */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "moonraker.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct moonraker_state st;
	char *msg = NULL;
	bool allowed;

	memset(&st, 0, sizeof(st));
	if (moonraker_parse((const char *)data, size, &st.print, st.state, sizeof(st.state)) < 0) {
		st.error = -EBADMSG;
		st.print = MOONRAKER_PRINT_UNKNOWN;
	}
	if (strlen(st.state) >= sizeof(st.state))
		__builtin_trap();
	allowed = moonraker_gate(&st, "http://127.0.0.1:7125", false, "board", &msg);
	/* fail-closed: only an understood, idle state may allow a flash */
	if (allowed && (st.error != 0 || st.print == MOONRAKER_PRINT_PRINTING ||
			st.print == MOONRAKER_PRINT_PAUSED || st.print == MOONRAKER_PRINT_UNKNOWN))
		__builtin_trap();
	free(msg);
	return 0;
}
