/* SPDX-License-Identifier: GPL-2.0-or-later */
/* fuzz_picoboot: command blocks and status replies as a device or host would receive them. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "proto/picoboot.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct picoboot_cmd c;
	struct picoboot_status_reply s;
	uint8_t again[PICOBOOT_CMD_SIZE];

	if (picoboot_decode_cmd(data, size, &c) == PICOBOOT_OK) {
		int r = picoboot_check_range(&c);

		/* an accepted range command re-encodes to the same block */
		if (r == PICOBOOT_OK && (c.id == PICOBOOT_READ || c.id == PICOBOOT_WRITE ||
					 c.id == PICOBOOT_FLASH_ERASE)) {
			if (picoboot_encode_range(again, c.token, (enum picoboot_cmd_id)c.id,
						  c.addr, c.size) != 0)
				__builtin_trap();
			/* bytes 10-11 are reserved: the device ignores them */
			if (memcmp(again, data, 10) != 0 || memcmp(again + 12, data + 12, 12) != 0)
				__builtin_trap();
		}
	}
	if (picoboot_decode_status(data, size, &s) == 0)
		(void)picoboot_status_to_string(s.status);
	if (size >= 256)
		(void)picoboot_boot2_valid(data);
	return 0;
}
