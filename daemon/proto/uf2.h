/* SPDX-License-Identifier: GPL-2.0-or-later */
/* proto/uf2: the UF2 block format (protocols.md §5.2; Microsoft's UF2 specification), as the
 * RP2040 boot ROM takes it on its RPI-RP2 drive. Pure: encode an image into blocks, decode
 * one block. */
#ifndef SKRFLASH_PROTO_UF2_H
#define SKRFLASH_PROTO_UF2_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define UF2_BLOCK_SIZE 512u
#define UF2_MAGIC_START0 0x0A324655u
#define UF2_MAGIC_START1 0x9E5D5157u
#define UF2_MAGIC_END 0x0AB16F30u
#define UF2_FLAG_NOT_MAIN_FLASH 0x00000001u
#define UF2_FLAG_FAMILY_ID 0x00002000u
#define UF2_FAMILY_RP2040 0xE48BFF56u
/* Klipper's elf2uf2 and the RP2040 ROM: 256 payload bytes per block, a flash page. */
#define UF2_PAYLOAD 256u

struct uf2_block {
	uint32_t flags;
	uint32_t target_addr;
	uint32_t payload_size;
	uint32_t block_no;
	uint32_t num_blocks;
	uint32_t family; /* fileSize when UF2_FLAG_FAMILY_ID is clear */
	const uint8_t *data;
};

/* Bytes of the UF2 file for an image of len bytes. */
size_t uf2_encoded_size(size_t len);
/* The image [addr, addr + len) as UF2 blocks of 256 bytes for `family`, the last payload
 * padded with 0xFF (erased flash); out holds uf2_encoded_size(len) bytes. -EINVAL when addr
 * is not 256-aligned or the image is empty. Returns the number of blocks. */
long uf2_encode(uint32_t addr, const uint8_t *data, size_t len, uint32_t family, uint8_t *out);
/* One 512-byte block: 0 with *ret filled (data points into blk), -EINVAL when a magic
 * number is wrong or the payload does not fit the block. */
int uf2_decode(const uint8_t blk[UF2_BLOCK_SIZE], struct uf2_block *ret);

#endif
