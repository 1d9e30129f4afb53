/* SPDX-License-Identifier: GPL-2.0-or-later */
/* replay: a plain main() that feeds corpus files to a fuzz target, so every corpus and
 * regression input runs in `make check` (under ASan in `make asan`) without libFuzzer. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
main(int argc, char **argv)
{
	int n = 0;

	for (int i = 1; i < argc; i++) {
		uint8_t *data = NULL;
		uint8_t *exact;
		size_t size = 0;
		int r = read_file(argv[i], 16u << 20, &data, &size);

		if (r < 0) {
			fprintf(stderr, "%s: cannot read\n", argv[i]);
			return 1;
		}
		/* exact-size copy so that ASan sees any over-read past the input */
		exact = xmalloc(size);
		for (size_t j = 0; j < size; j++)
			exact[j] = data[j];
		free(data);
		(void)LLVMFuzzerTestOneInput(exact, size);
		free(exact);
		n++;
	}
	fprintf(stderr, "replayed %d inputs\n", n);
	return n > 0 ? 0 : 1;
}
