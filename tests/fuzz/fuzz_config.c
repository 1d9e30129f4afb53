/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Fuzz target: arbitrary text through the config loader, and every accepted config through
 * dump -> load again. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct config *cfg = NULL, *again = NULL;
	char *text, *errors = NULL, *dump = NULL;
	size_t dump_len = 0;
	FILE *f;

	if (size > 64 * 1024)
		return 0;
	text = malloc(size + 1);
	if (!text)
		return 0;
	memcpy(text, data, size);
	text[size] = '\0';
	if (config_load_string(text, "fuzz", NULL, &cfg, &errors) == 0) {
		f = open_memstream(&dump, &dump_len);
		if (f) {
			config_dump(cfg, f);
			fclose(f);
			/* a dump that does not load back is a bug */
			if (config_load_string(dump, "dump", NULL, &again, NULL) < 0)
				abort();
			config_free(again);
			free(dump);
		}
	}
	config_free(cfg);
	free(errors);
	free(text);
	return 0;
}
