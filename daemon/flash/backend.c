/* SPDX-License-Identifier: GPL-2.0-or-later */
/* backend: the registry of flash backends (see backend.h). */
#include "flash/backend.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "log.h"
#include "util.h"

/* Defined in flash/katapult.c, flash/dfuse.c, flash/picoboot.c and flash/lpcdfu.c. */
extern const struct flash_backend backend_katapult;
extern const struct flash_backend backend_dfu;
extern const struct flash_backend backend_picoboot;
extern const struct flash_backend backend_lpcdfu;
extern const struct flash_backend backend_sd;  /* flash/sdpath.c */
extern const struct flash_backend backend_msc; /* flash/msc.c */

static const struct flash_backend *const backends[] = {
    &backend_katapult, &backend_dfu, &backend_picoboot, &backend_lpcdfu, &backend_sd, &backend_msc,
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
		if (backends[i]->mode == mode && !backends[i]->app_mode)
			return backends[i];
	return NULL;
}

void
backend_error(struct flash_session *s, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	(void)vsnprintf(s->error, sizeof(s->error), fmt, ap);
	va_end(ap);
	/* the worker reports it once, with context; this is for --log-level debug */
	log_debug("%s: %s", device_mode_to_string(s->dev ? s->dev->mode : DEVICE_MODE_NONE),
		  s->error);
}
