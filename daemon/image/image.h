/* SPDX-License-Identifier: GPL-2.0-or-later */
/* image: firmware files (raw .bin, Intel HEX, ELF, UF2) normalised to (load address, bytes).
 *
 * The format is detected by content, never by file name: people rename klipper.bin to
 * firmware.bin for the SD bootloader, and a browser may save any of them as "download". */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Normalised images larger than this are refused (-EFBIG): no supported MCU has more flash. */
#define IMAGE_MAX_SIZE (16u << 20)

enum image_format {
	IMAGE_FORMAT_BIN,
	IMAGE_FORMAT_HEX,
	IMAGE_FORMAT_ELF,
	IMAGE_FORMAT_UF2,
	_IMAGE_FORMAT_MAX,
};

struct image {
	enum image_format format;
	bool has_load_address; /* false for .bin: it goes wherever the target's app starts */
	uint32_t load_address; /* address of data[0] when has_load_address */
	uint8_t *data; /* owned; gaps between HEX records/ELF segments/UF2 blocks are 0xFF */
	size_t size;
};

/* Pure. Detect the format of buf and normalise it into *ret (which the caller releases with
 * image_done()). An empty buffer is a valid empty .bin. Errors: -EINVAL malformed, with
 * *ret_error (if not NULL) set to a static reason; -EFBIG when the result exceeds
 * IMAGE_MAX_SIZE. *ret is untouched on error. */
int image_parse(const uint8_t *buf, size_t len, struct image *ret, const char **ret_error);
/* Frees the data and clears *img; accepts NULL and an already released image. */
void image_done(struct image *img);
/* "bin", "hex", "elf", "uf2". */
const char *image_format_to_string(enum image_format f);
