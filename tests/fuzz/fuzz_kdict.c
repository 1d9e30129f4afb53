/* SPDX-License-Identifier: GPL-2.0-or-later */
/* fuzz_kdict: the dictionary scan (zlib header search, inflate, JSON) on arbitrary bytes. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "image/kdict.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct kdict d;

	if (kdict_find(data, size, &d) == 1) {
		/* the strings must be terminated inside their arrays */
		if (strlen(d.mcu) >= sizeof(d.mcu) || strlen(d.version) >= sizeof(d.version))
			__builtin_trap();
		(void)kdict_interface_to_string(d.interface);
	}
	return 0;
}
