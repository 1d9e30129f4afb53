/* SPDX-License-Identifier: GPL-2.0-or-later */
/* fuzz_an3155: the AN3155 reply parsers (host side) and frame parsers (simulator side) on
 * arbitrary bytes. */
#include <stddef.h>
#include <stdint.h>

#include "proto/an3155.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct an3155_info info;
	uint16_t pages[AN3155_EXT_ERASE_MAX_PAGES], special, pid;
	const uint8_t *d;
	size_t n;
	uint8_t v;
	uint32_t addr;
	int r;

	r = an3155_parse_get(data, size, &info);
	if (r > (int)size || (r > 0 && info.n_cmds > sizeof(info.cmds)))
		__builtin_trap();
	if (r > 0)
		(void)an3155_has_cmd(&info, 0x44);
	if (an3155_parse_get_version(data, size, &v) > (int)size)
		__builtin_trap();
	if (an3155_parse_get_id(data, size, &pid) > (int)size)
		__builtin_trap();
	r = an3155_parse_write_frame(data, size, &d, &n);
	if (r > 0 && (r > (int)size || n == 0 || n > 256 || d + n > data + size))
		__builtin_trap();
	/* the first byte picks how many pages the device accepts */
	r = an3155_parse_ext_erase(data, size, pages, size ? data[0] % 64 + 1 : 1, &n, &special);
	if (r > (int)size || n > 64)
		__builtin_trap();
	if (size >= 5)
		(void)an3155_parse_addr(data, &addr);
	if (size >= 2)
		(void)an3155_parse_read_len(data, &n);
	return 0;
}
