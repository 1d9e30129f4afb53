/* SPDX-License-Identifier: GPL-2.0-or-later */
/* fuzz_dfu: the DFU codec's decoders on untrusted device data. The first byte selects the
 * decoder (layout string, functional descriptor chain, GETSTATUS reply); the rest is input. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proto/dfu.h"
#include "util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
fuzz_layout(const uint8_t *data, size_t size)
{
	/* a USB string descriptor holds at most 126 characters; allow more to probe limits */
	char *s = xmalloc(size + 1);
	struct dfu_layout l;
	uint32_t start, page;

	memcpy(s, data, size);
	s[size] = '\0';
	if (dfu_layout_parse(s, &l) == 0) {
		uint64_t total = dfu_layout_size(&l);

		for (size_t i = 0; i < l.n_segments; i++) {
			const struct dfu_segment *g = &l.segments[i];
			uint64_t last = g->start + (uint64_t)g->count * g->page_size - 1;

			if (dfu_layout_find(&l, g->start, &start, &page) < 0 || page == 0)
				abort();
			if (dfu_layout_find(&l, (uint32_t)last, &start, &page) < 0 || start > last)
				abort();
		}
		/* regions may overlap, so only emptiness is impossible */
		if (total == 0)
			abort();
	}
	free(s);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct dfu_func_desc d;
	struct dfu_status_reply st;
	uint8_t again[DFU_STATUS_LEN];

	if (size < 1)
		return 0;
	switch (data[0] % 3) {
	case 0:
		fuzz_layout(data + 1, size - 1);
		break;
	case 1:
		(void)dfu_func_desc_parse(data + 1, size - 1, &d);
		break;
	default:
		if (dfu_status_decode(data + 1, size - 1, &st) == 0) {
			dfu_status_encode(&st, again);
			if (memcmp(again, data + 1, DFU_STATUS_LEN) != 0)
				abort();
			(void)dfu_state_to_string(st.state);
			(void)dfu_status_to_string(st.status);
		}
		break;
	}
	return 0;
}
