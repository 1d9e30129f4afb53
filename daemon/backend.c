/* SPDX-License-Identifier: GPL-2.0-or-later */
/* backend: the registry of flash backends (see backend.h). */
#include "backend.h"

#include <string.h>

#include "util.h"

/* Defined in backend_katapult.c and backend_dfu.c. */
extern const struct flash_backend backend_katapult;
extern const struct flash_backend backend_dfu;

static const struct flash_backend *const backends[] = {
    &backend_katapult,
    &backend_dfu,
};

const struct flash_backend *
backend_find(const char *name)
{
	if (!name)
		return NULL;
	for (size_t i = 0; i < ELEMENTSOF(backends); i++)
		if (strcmp(backends[i]->name, name) == 0)
			return backends[i];
	return NULL;
}

const struct flash_backend *
backend_for_mode(enum device_mode mode)
{
	for (size_t i = 0; i < ELEMENTSOF(backends); i++)
		if (backends[i]->mode == mode)
			return backends[i];
	return NULL;
}
