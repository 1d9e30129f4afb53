/* SPDX-License-Identifier: GPL-2.0-or-later */
/* fuzz_klipper: the Klipper block finder, message decoder and dictionary reader on arbitrary
 * bytes. Input: first byte selects the mode; 0-127 treats the rest as a byte stream from the
 * MCU decoded against a small fixed dictionary, 128-255 as dictionary JSON text. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "image/kdict.h"
#include "proto/klipper.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const formats[] = {
    "spi_transfer_response oid=%c response=%*s",
    "config is_config=%c crc=%u is_shutdown=%c move_count=%hu",
    "shutdown clock=%u static_string_id=%hu",
    "stats count=%u sum=%u sumsq=%u",
};

static void
stream(const uint8_t *data, size_t size)
{
	struct klipper_dict d;
	size_t pos = 0;

	klipper_dict_init(&d);
	for (size_t i = 0; i < sizeof(formats) / sizeof(formats[0]); i++)
		(void)klipper_dict_add_message(&d, (int32_t)(80 + i), KLIPPER_KIND_RESPONSE,
					       formats[i]);
	while (pos < size) {
		struct klipper_block b;
		int r = klipper_block_find(data + pos, size - pos, &b);
		size_t p = 0;

		if (r == 0)
			break;
		if (r < 0) {
			if ((size_t)-r > size - pos)
				__builtin_trap();
			pos += (size_t)-r;
			continue;
		}
		if ((size_t)r > size - pos || b.payload_len + KLIPPER_MESSAGE_MIN != (size_t)r)
			__builtin_trap();
		while (p < b.payload_len) {
			struct klipper_value v[KLIPPER_MAX_PARAMS];
			const struct klipper_msgfmt *f;
			int32_t id;
			int n = klipper_decode_id(b.payload + p, b.payload_len - p, &id);

			if (n < 0)
				break;
			p += (size_t)n;
			f = klipper_dict_by_id(&d, id, KLIPPER_KIND_RESPONSE);
			if (!f)
				break;
			n = klipper_decode(f, b.payload + p, b.payload_len - p, v);
			if (n < 0)
				break;
			for (unsigned i = 0; i < f->n_params; i++)
				if (v[i].len && (v[i].data < b.payload ||
						 v[i].data + v[i].len > b.payload + b.payload_len))
					__builtin_trap();
			p += (size_t)n;
		}
		pos += (size_t)r;
	}
	klipper_dict_free(&d);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct klipper_dict d;
	uint32_t v;

	if (size == 0)
		return 0;
	if (data[0] < 128) {
		stream(data + 1, size - 1);
		return 0;
	}
	klipper_dict_init(&d);
	if (kdict_to_klipper((const char *)data + 1, size - 1, &d) == 0) {
		(void)klipper_dict_by_name(&d, "spi_transfer");
		(void)klipper_dict_enum_value(&d, "cs_pin", "PA4", &v);
		(void)klipper_dict_constant(&d, "MCU");
	}
	klipper_dict_free(&d);
	return 0;
}
