/* SPDX-License-Identifier: GPL-2.0-or-later */
/* fuzz_moonraker: the print_stats reply parser, the gate decision, the API key file parser
 * and the power device reply parser on arbitrary bytes. */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "service/moonraker.h"

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
	{
		/* a key never carries a blank, a control character or a line break into the
		 * X-Api-Key header */
		char key[MOONRAKER_KEY_MAX];

		if (moonraker_key_parse((const char *)data, size, key, sizeof(key)) == 0) {
			size_t n = strlen(key);

			if (n == 0 || n >= sizeof(key))
				__builtin_trap();
			for (size_t i = 0; i < n; i++)
				if ((unsigned char)key[i] <= ' ' || key[i] == 0x7f)
					__builtin_trap();
		}
	}
	{
		/* a power device reply: the state is bounded and printable (escaped) */
		char state[16];

		if (moonraker_power_parse((const char *)data, size, "printer_psu", state,
					  sizeof(state)) == 0) {
			if (strlen(state) >= sizeof(state))
				__builtin_trap();
			for (size_t i = 0; state[i]; i++)
				if ((unsigned char)state[i] < ' ')
					__builtin_trap();
		}
	}
	return 0;
}
