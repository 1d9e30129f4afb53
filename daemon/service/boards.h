/* SPDX-License-Identifier: GPL-2.0-or-later */
/* boards: the registry of physical boards, built from udev sightings.
 *
 * A board is a physical identity: USB port path + chip serial. It keeps that identity while
 * it re-enumerates on the same port in another mode (Klipper -> Katapult -> Klipper, or
 * ROM DFU, which changes the serial), so "appeared" and "left" are logged once per real
 * change: a board that vanishes is only declared gone after a grace period without it
 * coming back on its port. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include <json-c/json.h>
#include <systemd/sd-event.h>

#include "catalog.h"
#include "config.h"
#include "device.h"
#include "service/store.h"
#include "udevwatch.h"
#include "util.h"

struct boards;

struct board {
	int64_t id;			     /* store row */
	char serial[DEVICE_STR];	     /* chip serial (app/Katapult); "" until seen */
	const struct catalog_board *catalog; /* NULL when unknown or ambiguous */
	char candidates[192];		     /* catalog names when ambiguous, comma-separated */
	char profile[72];		     /* matched profile, "" for none */
	struct device dev;		     /* the current (or last) enumeration */
	bool present;			     /* false while inside the leave grace period */
	char installed_sha[65];
	char installed_version[128];
	char known_good_sha[65]; /* the last image that booted on it, kept while writing */
	char firmware[96];	 /* what M115 names ("Marlin 2.1.2.1"): Marlin boards, else "" */
	char machine[64];	 /* Marlin's MACHINE_TYPE */
	int64_t first_seen;
	struct boards *owner;
	sd_event_source *leave_timer;
	sd_event_source *settle_timer; /* waiting for the tty before announcing */
	int pending;		       /* event to announce once settled, -1 none */
	enum device_mode old_mode;     /* for the mode-change message */
};

enum boards_event {
	BOARDS_APPEARED,
	BOARDS_MODE_CHANGED, /* same board, new enumeration on the same port */
	BOARDS_UPDATED,	     /* tty/block child came or went */
	BOARDS_GONE,	     /* unplugged (grace started) */
	BOARDS_LEFT,	     /* grace over: freed right after the handler returns */
};

typedef void (*boards_handler)(void *userdata, enum boards_event ev, struct board *b);

int boards_new(sd_event *loop, struct store *store, const struct config *cfg, boards_handler h,
	       void *userdata, struct boards **ret);
struct boards *boards_free(struct boards *r); /* accepts NULL, returns NULL */
/* A new config snapshot: profiles are matched again. */
void boards_set_config(struct boards *r, const struct config *cfg);
/* Feed of udevwatch (its handler signature). */
void boards_on_device(void *userdata, enum udevwatch_action action, const struct device *dev);

size_t boards_count_present(const struct boards *r);
/* Present board on a port, NULL if none. */
struct board *boards_find_port(struct boards *r, const char *port);
/* By id, serial, port or unique catalog name; -ENOENT none, -ENOTUNIQ ambiguous. */
int boards_lookup(struct boards *r, const char *key, struct board **ret);
/* With only the catalog's profiles (no config file): when more than one connected board
 * would take firmware queued for `profile`, a malloc'd message that says so and shows the
 * profile that resolves it; NULL when it is clear. */
char *boards_ambiguity(const struct boards *r, const char *profile);
/* Feed every name a board answers to into a "did you mean". */
void boards_suggest(struct boards *r, struct str_closest *cl);
/* Iterate: NULL starts, returns NULL at the end. */
struct board *boards_next(struct boards *r, const struct board *prev);
/* "octopus-f446" or "unknown stm32f446xx board" for messages. */
const char *board_display_name(const struct board *b);
json_object *board_to_json(const struct board *b);
