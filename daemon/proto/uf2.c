/* SPDX-License-Identifier: GPL-2.0-or-later */
/* proto/uf2: UF2 blocks (see uf2.h). */
#include "proto/uf2.h"

#include <errno.h>
#include <string.h>

static void
put32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
	p[2] = (uint8_t)(v >> 16);
	p[3] = (uint8_t)(v >> 24);
}

static uint32_t
get32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

size_t
uf2_encoded_size(size_t len)
{
	return (len + UF2_PAYLOAD - 1) / UF2_PAYLOAD * UF2_BLOCK_SIZE;
}

long
uf2_encode(uint32_t addr, const uint8_t *data, size_t len, uint32_t family, uint8_t *out)
{
	size_t n = (len + UF2_PAYLOAD - 1) / UF2_PAYLOAD;

	if (len == 0 || addr % UF2_PAYLOAD != 0 || len > UINT32_MAX - addr)
		return -EINVAL;
	for (size_t i = 0; i < n; i++) {
		uint8_t *b = out + i * UF2_BLOCK_SIZE;
		size_t off = i * UF2_PAYLOAD, k = len - off < UF2_PAYLOAD ? len - off : UF2_PAYLOAD;

		memset(b, 0, UF2_BLOCK_SIZE);
		put32(b, UF2_MAGIC_START0);
		put32(b + 4, UF2_MAGIC_START1);
		put32(b + 8, UF2_FLAG_FAMILY_ID);
		put32(b + 12, addr + (uint32_t)off);
		put32(b + 16, UF2_PAYLOAD);
		put32(b + 20, (uint32_t)i);
		put32(b + 24, (uint32_t)n);
		put32(b + 28, family);
		memcpy(b + 32, data + off, k);
		memset(b + 32 + k, 0xff, UF2_PAYLOAD - k);
		put32(b + 508, UF2_MAGIC_END);
	}
	return (long)n;
}

int
uf2_decode(const uint8_t blk[UF2_BLOCK_SIZE], struct uf2_block *ret)
{
	if (get32(blk) != UF2_MAGIC_START0 || get32(blk + 4) != UF2_MAGIC_START1 ||
	    get32(blk + 508) != UF2_MAGIC_END)
		return -EINVAL;
	ret->flags = get32(blk + 8);
	ret->target_addr = get32(blk + 12);
	ret->payload_size = get32(blk + 16);
	ret->block_no = get32(blk + 20);
	ret->num_blocks = get32(blk + 24);
	ret->family = get32(blk + 28);
	ret->data = blk + 32;
	/* the data area is 476 bytes */
	if (ret->payload_size > 476 || ret->block_no >= ret->num_blocks)
		return -EINVAL;
	return 0;
}
