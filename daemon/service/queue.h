/* SPDX-License-Identifier: GPL-2.0-or-later */
/* queue: firmware that users and fleet tools drop into the queue directory.
 *
 * Contract: a producer writes the file elsewhere (or under a dot-name) and renames it into
 * queue/<profile>/ or queue/<profile>.<ext>. Only IN_MOVED_TO and IN_CLOSE_WRITE of
 * non-temporary names count, and the directory is scanned at start with the watch already
 * armed. A picked-up file is stored content-addressed and recorded before it leaves the
 * queue, and a refused one is moved to rejected/ next to a .reason file: a crash at any point
 * leaves each file queued (picked up again) or stored and recorded, never lost. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include <systemd/sd-event.h>

#include "config.h"
#include "service/store.h"

struct queue;

struct queue_callbacks {
	/* Check an image for a profile before it is accepted. Return 0 to accept (optionally
	 * setting *ret_format to a static string), or -EINVAL with *ret_reason (malloc'd). */
	int (*validate)(void *userdata, const struct config_profile *p, const char *name,
			const uint8_t *data, size_t size, const char **ret_format,
			char **ret_reason);
	/* A new desired firmware was recorded for p. */
	void (*accepted)(void *userdata, const struct config_profile *p, const char *sha,
			 const char *name);
	/* A file was moved to rejected/ (name as dropped, reason as written). */
	void (*rejected)(void *userdata, const char *name, const char *reason);
};

int queue_start(sd_event *loop, const struct config *cfg, struct store *store,
		const struct queue_callbacks *cb, void *userdata, struct queue **ret);
struct queue *queue_free(struct queue *q); /* accepts NULL, returns NULL */
/* New config snapshot: watch the new queue directories and scan them. */
void queue_set_config(struct queue *q, const struct config *cfg);
/* Files seen but still being written (picked up when the writer closes them). */
size_t queue_waiting(const struct queue *q);
/* Where refused files go for a config. */
char *queue_rejected_dir(const struct config *cfg);
