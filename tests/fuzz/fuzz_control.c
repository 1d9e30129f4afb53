/* SPDX-License-Identifier: GPL-2.0-or-later */
/* fuzz_control: the control-socket request parser on arbitrary bytes. */
#include <stddef.h>
#include <stdint.h>

#include "service/control.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct control_request req;
	const char *err = NULL;

	(void)control_parse_request((const char *)data, size, &req, &err);
	return 0;
}
