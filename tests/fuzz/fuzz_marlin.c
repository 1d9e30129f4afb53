/* SPDX-License-Identifier: GPL-2.0-or-later */
/* fuzz_marlin: Marlin's reply lines (what a board, or anything on its tty, sends) through
 * proto/marlin's line, M115 and M27 parsers, and a firmware image through the M115 search. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "proto/marlin.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct marlin_info info;
	char line[600];
	size_t n = size < sizeof(line) - 1 ? size : sizeof(line) - 1;
	bool printing;
	uint64_t pos, total;

	memcpy(line, data, n);
	line[n] = 0;
	(void)marlin_line_kind(line);
	if (marlin_parse_m115(line, &info) == 0 &&
	    (strlen(info.firmware) >= sizeof(info.firmware) ||
	     strlen(info.machine) >= sizeof(info.machine) || strncmp(info.firmware, "Marlin", 6)))
		__builtin_trap();
	if (marlin_parse_sd_status(line, &printing, &pos, &total) == 0 && !printing &&
	    (pos || total))
		__builtin_trap();
	(void)marlin_image_info(data, size, &info);
	return 0;
}
