/* SPDX-License-Identifier: GPL-2.0-or-later */
/* fuzz_katapult: the Katapult frame finder and reply parsers on arbitrary byte streams. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "proto/katapult.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	size_t pos = 0;
	/* the first byte picks the length limit, so both device and host limits get exercised */
	size_t max = size && (data[0] & 1) ? KATAPULT_DEVICE_FRAME_MAX : KATAPULT_FRAME_MAX;

	while (pos < size) {
		struct katapult_frame f;
		struct katapult_connect_info ci;
		const uint8_t *d;
		size_t dl;
		bool bad;
		int r = katapult_frame_find(data + pos, size - pos, max, &f, &bad);

		if (r == 0)
			break;
		if (r < 0) {
			if ((size_t)-r > size - pos)
				__builtin_trap();
			pos += (size_t)-r;
			continue;
		}
		if ((size_t)r > size - pos || f.payload_len != (size_t)f.n_words * 4)
			__builtin_trap();
		(void)katapult_check_ack(&f, f.n_words ? f.payload[0] : 0, &d, &dl);
		if (katapult_parse_connect(&f, &ci) == 0 &&
		    (strlen(ci.mcu) >= sizeof(ci.mcu) ||
		     strlen(ci.software_version) >= sizeof(ci.software_version)))
			__builtin_trap();
		(void)katapult_code_name(f.code);
		pos += (size_t)r;
	}
	return 0;
}
