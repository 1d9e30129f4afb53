/* SPDX-License-Identifier: GPL-2.0-or-later */
/* fuzz_image: image_parse() on arbitrary bytes, then the whole validation against boards of
 * different families (different flash bases, RAM maps and the RP2040 boot2 layout). */
#include <stddef.h>
#include <stdint.h>

#include "catalog.h"
#include "image/image.h"
#include "image/validate.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const boards[] = {"skr-pro", "skr-pico", "skr-1.4", "skr-3-h743"};
	struct image img;
	const char *err = NULL;

	if (image_parse(data, size, &img, &err) == 0) {
		/* the normalised image must be readable end to end */
		volatile uint8_t sink = 0;

		for (size_t i = 0; i < img.size; i += 4096)
			sink ^= img.data[i];
		(void)sink;
		image_done(&img);
	}
	for (size_t i = 0; i < sizeof(boards) / sizeof(boards[0]); i++) {
		struct validate_target t = {.board = catalog_find(boards[i]),
					    .interface = CONFIG_INTERFACE_USB,
					    .reported_mcu = i == 0 ? "stm32f407xx" : NULL,
					    .file_name = "fuzz.bin"};
		struct verdict v;
		struct image flash;

		if (validate_image_for_flash(data, size, &t, &v, &flash) == 1)
			image_done(&flash);
		verdict_done(&v);
	}
	return 0;
}
