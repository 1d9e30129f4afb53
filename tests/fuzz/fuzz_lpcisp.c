/* SPDX-License-Identifier: GPL-2.0-or-later */
/* fuzz_lpcisp: the LPC ISP line splitter, return-code/number parsers and the UU reader on
 * arbitrary byte streams (what a ROM at the wrong baud rate, or a hostile peer, sends). */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "proto/lpcisp.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t out[300];
	struct lpcisp_uu_reader rd;
	size_t pos = 0;
	/* the first byte picks the size of the R transfer the reader expects */
	size_t want = size ? (size_t)(data[0] % sizeof(out)) : 0;

	lpcisp_uu_reader_init(&rd, out, want);
	while (pos < size) {
		char line[LPCISP_LINE_MAX];
		uint8_t raw[LPCISP_UU_LINE_BYTES];
		uint32_t v;
		size_t skip;
		int r = lpcisp_line_next(data + pos, size - pos, line, sizeof(line), &skip);

		if (r == 0)
			break;
		if (r < 0) {
			if (skip == 0 || skip > size - pos)
				__builtin_trap();
			pos += skip;
			continue;
		}
		if ((size_t)r > size - pos || strlen(line) >= sizeof(line))
			__builtin_trap();
		pos += (size_t)r;
		r = lpcisp_parse_rc(line);
		if (r > 255)
			__builtin_trap();
		(void)lpcisp_rc_name(r);
		(void)lpcisp_parse_u32(line, &v);
		r = lpcisp_uu_decode_line(line, raw, sizeof(raw));
		if (r > LPCISP_UU_LINE_BYTES)
			__builtin_trap();
		(void)lpcisp_uu_reader_feed(&rd, line);
		if (rd.pos > rd.len || rd.block_start > rd.pos)
			__builtin_trap();
	}
	(void)lpcisp_vector_valid(data, size);
	(void)lpcisp_crp_word(data, size, NULL);
	return 0;
}
