/* SPDX-License-Identifier: GPL-2.0-or-later */
/* boards: physical board registry keyed by port path (see boards.h). */
#include "service/boards.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "paths.h"
#include "match.h"
#include "util.h"

struct boards {
	sd_event *loop;
	struct store *store;
	const struct config *cfg;
	boards_handler handler;
	void *userdata;
	struct board **items;
	size_t n_items;
};

/* Modes whose USB serial is not the chip UID that Klipper and Katapult report: those that
 * show the identity of a ROM or a shared bootloader, and a device in no known mode. */
static bool
mode_hides_serial(enum device_mode m)
{
	return m == DEVICE_MODE_NONE || match_mode_hides_identity(m);
}

static bool
mode_shows_mcu(enum device_mode m)
{
	return m == DEVICE_MODE_KLIPPER_APP || m == DEVICE_MODE_KATAPULT;
}

const char *
board_display_name(const struct board *b)
{
	static char buf[192];

	if (b->catalog)
		return b->catalog->name;
	if (b->candidates[0])
		(void)snprintf(buf, sizeof(buf), "%.40s board (%.140s)",
			       mode_shows_mcu(b->dev.mode) ? b->dev.product : "unknown",
			       b->candidates);
	else if (mode_shows_mcu(b->dev.mode) && b->dev.product[0])
		(void)snprintf(buf, sizeof(buf), "unknown %.100s board", b->dev.product);
	else
		(void)snprintf(buf, sizeof(buf), "unknown board");
	return buf;
}

static void
fields_of(const struct board *b, const char *mid, struct log_fields *f)
{
	memset(f, 0, sizeof(*f));
	f->message_id = mid;
	f->board = b->catalog ? b->catalog->name : NULL;
	f->port = b->dev.port;
	f->serial = b->serial[0] ? b->serial : NULL;
	f->mode = device_mode_to_string(b->dev.mode);
	f->profile = b->profile[0] ? b->profile : NULL;
	f->sha256 = b->installed_sha[0] ? b->installed_sha : NULL;
}

static void
emit(struct boards *r, enum boards_event ev, struct board *b)
{
	if (r->handler)
		r->handler(r->userdata, ev, b);
}

static bool
only_catalog_profiles(const struct config *cfg)
{
	return cfg && cfg->n_profiles && cfg->profiles[0].implicit;
}

static bool
has_candidate(const struct board *b, const char *name)
{
	size_t len = strlen(name);

	for (const char *c = b->candidates; (c = strstr(c, name)); c += len)
		if ((c == b->candidates || c[-1] == ' ') && (c[len] == ',' || c[len] == 0))
			return true;
	return false;
}

/* Present boards that would take firmware queued for `profile`: those it matched, and
 * those of an ambiguous MCU for which the name is a candidate. */
static size_t
takers(const struct boards *r, const char *profile, const struct board *skip,
       const struct board **ret_first)
{
	size_t n = 0;

	for (size_t i = 0; i < r->n_items; i++) {
		const struct board *b = r->items[i];

		if (b == skip || !b->present)
			continue;
		if (strcmp(b->profile, profile) != 0 &&
		    (b->profile[0] || !has_candidate(b, profile)))
			continue;
		if (!n && ret_first)
			*ret_first = b;
		n++;
	}
	return n;
}

/* No config file, and a board whose MCU several catalog boards carry (an Octopus and an
 * Octopus Pro both report stm32f446xx): the queue name says which board it is. Firmware
 * queued under exactly one of the candidates' names picks that candidate's profile, unless
 * another board took that name already (then it is ambiguous: boards_ambiguity says so). */
static const struct config_profile *
pick_by_queue(struct boards *r, struct board *b, const struct catalog_board *const *cands, size_t n)
{
	const struct config_profile *found = NULL;
	struct store_desired d;

	if (!only_catalog_profiles(r->cfg))
		return NULL;
	for (size_t i = 0; i < n; i++) {
		const struct config_profile *p = config_find_profile(r->cfg, cands[i]->name);

		if (!p || store_desired_get(r->store, p->name, &d) < 0)
			continue;
		if (found)
			return NULL;
		found = p;
	}
	if (found && takers(r, found->name, b, NULL) > 0)
		return NULL;
	return found;
}

char *
boards_ambiguity(const struct boards *r, const char *profile)
{
	const struct board *first = NULL;
	size_t n = takers(r, profile, NULL, &first);
	const struct config_profile *p = config_find_profile(r->cfg, profile);
	const char *board = p && p->match.board ? p->match.board->name : profile;

	if (n < 2 || !first || (p && !p->implicit))
		return NULL;
	return xasprintf("%zu connected boards could take firmware for '%s'; name the one you "
			 "mean in " SKRFLASH_CONFIG_FILE " (by port, or serial = \"%s\"):\n"
			 "profiles = (\n"
			 "  { name = \"%s\"; match = { board = \"%s\"; port = \"%s\"; }; }\n"
			 ");",
			 n, profile, first->serial, profile, board, first->dev.port);
}

/* Which catalog board this is: the profile's board wins, then the MCU string, then what
 * the store remembers for this identity (ROM DFU hides the MCU). */
static void
identify(struct boards *r, struct board *b, const char *stored_board)
{
	const struct catalog_board *cands[8];
	const struct config_profile *p;
	size_t n = 0;

	b->candidates[0] = 0;
	if (mode_shows_mcu(b->dev.mode) || b->dev.mode == DEVICE_MODE_MARLIN_STM32) {
		n = match_catalog(&b->dev, cands, ELEMENTSOF(cands));
		if (n == 1)
			b->catalog = cands[0];
		else if (b->catalog) {
			bool still = false;

			for (size_t i = 0; i < n && i < ELEMENTSOF(cands); i++)
				still = still || cands[i] == b->catalog;
			if (!still)
				b->catalog = NULL;
		}
	}
	if (!b->catalog && stored_board && *stored_board) {
		const struct catalog_board *sb = catalog_find(stored_board);
		bool fits = n == 0;

		for (size_t i = 0; i < n && i < ELEMENTSOF(cands); i++)
			fits = fits || cands[i] == sb;
		if (fits)
			b->catalog = sb;
	}
	p = match_profile(r->cfg, &b->dev, b->catalog);
	if (!p && !b->catalog && n > 1)
		p = pick_by_queue(r, b, cands, n < ELEMENTSOF(cands) ? n : ELEMENTSOF(cands));
	if (p && p->match.board)
		b->catalog = p->match.board;
	if (!p && !b->catalog && n > 1) {
		/* ambiguous MCU: keep the candidates for messages, match on known board only */
		size_t len = 0;

		for (size_t i = 0; i < n && i < ELEMENTSOF(cands); i++) {
			int w = snprintf(b->candidates + len, sizeof(b->candidates) - len, "%s%s",
					 i ? ", " : "", cands[i]->name);
			if (w < 0 || (size_t)w >= sizeof(b->candidates) - len)
				break;
			len += (size_t)w;
		}
	}
	(void)str_copy(b->profile, sizeof(b->profile), p ? p->name : "");
}

static void
record(struct boards *r, struct board *b)
{
	struct store_board sb;
	int k;

	memset(&sb, 0, sizeof(sb));
	(void)str_copy(sb.port, sizeof(sb.port), b->dev.port);
	(void)str_copy(sb.serial, sizeof(sb.serial), b->serial);
	(void)str_copy(sb.board, sizeof(sb.board), b->catalog ? b->catalog->name : "");
	if (mode_shows_mcu(b->dev.mode))
		(void)str_copy(sb.mcu, sizeof(sb.mcu), b->dev.product);
	(void)snprintf(sb.last_mode, sizeof(sb.last_mode), "%s",
		       device_mode_to_string(b->dev.mode));
	k = store_board_upsert(r->store, &sb);
	if (k < 0) {
		log_warn_errno(k, "cannot record board on port %s in the state database",
			       b->dev.port);
		return;
	}
	b->id = sb.id;
	b->first_seen = sb.first_seen;
	(void)str_copy(b->installed_sha, sizeof(b->installed_sha), sb.installed_sha);
	(void)str_copy(b->known_good_sha, sizeof(b->known_good_sha), sb.known_good_sha);
	(void)snprintf(b->installed_version, sizeof(b->installed_version), "%s",
		       sb.installed_version);
}

static void
board_free(struct board *b)
{
	if (!b)
		return;
	sd_event_source_disable_unref(b->leave_timer);
	sd_event_source_disable_unref(b->settle_timer);
	free(b);
}

static void
remove_item(struct boards *r, struct board *b)
{
	for (size_t i = 0; i < r->n_items; i++) {
		if (r->items[i] != b)
			continue;
		memmove(&r->items[i], &r->items[i + 1],
			(r->n_items - i - 1) * sizeof(struct board *));
		r->n_items--;
		break;
	}
	board_free(b);
}

static void
declare_left(struct boards *r, struct board *b)
{
	struct log_fields f;

	/* a board that never finished appearing never "left" either */
	if (b->pending != BOARDS_APPEARED) {
		fields_of(b, LOG_MID_BOARD_LEFT, &f);
		log_full(LOG_NOTICE, 0, &f, "board left: %s on port %s", board_display_name(b),
			 b->dev.port);
		emit(r, BOARDS_LEFT, b);
	}
	remove_item(r, b);
}

static int
on_leave_timer(sd_event_source *s, uint64_t usec, void *userdata)
{
	struct board *b = userdata;

	(void)s;
	(void)usec;
	declare_left(b->owner, b);
	return 0;
}

static struct board *
find_syspath(struct boards *r, const char *syspath)
{
	for (size_t i = 0; i < r->n_items; i++)
		if (strcmp(r->items[i]->dev.syspath, syspath) == 0)
			return r->items[i];
	return NULL;
}

static struct board *
find_port_any(struct boards *r, const char *port)
{
	for (size_t i = 0; i < r->n_items; i++)
		if (strcmp(r->items[i]->dev.port, port) == 0)
			return r->items[i];
	return NULL;
}

struct board *
boards_find_port(struct boards *r, const char *port)
{
	struct board *b = find_port_any(r, port);

	return b && b->present ? b : NULL;
}

/* Adopt a chip serial for an identity first recorded without one (seen in ROM DFU). */
static void
adopt_serial(struct boards *r, struct board *b, const char *serial)
{
	struct store_board existing;

	(void)str_copy(b->serial, sizeof(b->serial), serial);
	if (store_board_find(r->store, b->dev.port, serial, &existing) == 0)
		b->id = existing.id;
	else if (b->id > 0)
		(void)store_board_set_serial(r->store, b->id, serial);
}

/* Modes whose backend talks through a tty: announce them once the tty exists, so that
 * whoever reacts to "appeared" can use the board at once. */
static bool
needs_tty(enum device_mode m)
{
	return m == DEVICE_MODE_KLIPPER_APP || m == DEVICE_MODE_KATAPULT ||
	       m == DEVICE_MODE_MARLIN_LPC || m == DEVICE_MODE_MARLIN_STM32;
}

static void
announce(struct boards *r, struct board *b)
{
	struct log_fields f;
	int ev = b->pending;

	b->settle_timer = sd_event_source_disable_unref(b->settle_timer);
	b->pending = -1;
	if (ev == BOARDS_APPEARED) {
		fields_of(b, LOG_MID_BOARD_APPEARED, &f);
		log_full(LOG_NOTICE, 0, &f, "board appeared: %s in %s mode on port %s%s%s%s",
			 board_display_name(b), device_mode_to_string(b->dev.mode), b->dev.port,
			 b->profile[0] ? ", profile '" : "", b->profile,
			 b->profile[0] ? "'" : ", no profile");
	} else if (ev == BOARDS_MODE_CHANGED) {
		fields_of(b, NULL, &f);
		if (b->old_mode == b->dev.mode)
			log_full(LOG_DEBUG, 0, &f, "board %s on port %s re-enumerated in %s mode",
				 board_display_name(b), b->dev.port,
				 device_mode_to_string(b->dev.mode));
		else
			log_full(LOG_INFO, 0, &f, "board %s on port %s: %s -> %s",
				 board_display_name(b), b->dev.port,
				 device_mode_to_string(b->old_mode),
				 device_mode_to_string(b->dev.mode));
	} else {
		return;
	}
	emit(r, (enum boards_event)ev, b);
}

static int
on_settle_timer(sd_event_source *s, uint64_t usec, void *userdata)
{
	struct board *b = userdata;

	(void)s;
	(void)usec;
	/* no tty after all (a driver problem on the host): announce what there is */
	announce(b->owner, b);
	return 0;
}

static void
announce_when_ready(struct boards *r, struct board *b, enum boards_event ev)
{
	b->pending = (int)ev;
	if (!needs_tty(b->dev.mode) || b->dev.tty[0]) {
		announce(r, b);
		return;
	}
	b->settle_timer = sd_event_source_disable_unref(b->settle_timer);
	if (sd_event_add_time_relative(r->loop, &b->settle_timer, CLOCK_MONOTONIC, 2000000u, 0,
				       on_settle_timer, b) < 0)
		announce(r, b);
}

static void
appear(struct boards *r, const struct device *dev)
{
	struct board *b = xnew(struct board);
	struct store_board prev;
	const char *stored = NULL;

	b->owner = r;
	b->pending = -1;
	b->dev = *dev;
	b->present = true;
	memset(&prev, 0, sizeof(prev));
	if (!mode_hides_serial(dev->mode)) {
		(void)str_copy(b->serial, sizeof(b->serial), dev->serial);
		if (store_board_find(r->store, dev->port, dev->serial, &prev) == 0)
			stored = prev.board;
	} else if (store_board_last_on_port(r->store, dev->port, &prev) == 0) {
		/* ROM DFU and BOOTSEL hide the chip serial: the port says who this is */
		(void)str_copy(b->serial, sizeof(b->serial), prev.serial);
		stored = prev.board;
	}
	identify(r, b, stored);
	record(r, b);
	r->items = xreallocarray(r->items, r->n_items + 1, sizeof(struct board *));
	r->items[r->n_items++] = b;
	announce_when_ready(r, b, BOARDS_APPEARED);
}

static void
reappear(struct boards *r, struct board *b, const struct device *dev)
{
	enum device_mode old = b->dev.mode;

	b->leave_timer = sd_event_source_disable_unref(b->leave_timer);
	/* what M115 said holds for that enumeration only (ident.c asks the next one) */
	if (dev->mode != old) {
		b->firmware[0] = 0;
		b->machine[0] = 0;
	}
	b->dev = *dev;
	b->present = true;
	if (!mode_hides_serial(dev->mode) && strcmp(b->serial, dev->serial) != 0)
		adopt_serial(r, b, dev->serial);
	identify(r, b, b->catalog ? b->catalog->name : NULL);
	record(r, b);
	/* an announcement still pending (it left before its tty came) keeps its kind */
	if (b->pending != BOARDS_APPEARED) {
		b->old_mode = old;
		b->pending = BOARDS_MODE_CHANGED;
	}
	announce_when_ready(r, b, (enum boards_event)b->pending);
}

static bool
same_identity(const struct board *b, const struct device *dev)
{
	if (mode_hides_serial(dev->mode) || mode_hides_serial(b->dev.mode) || !b->serial[0])
		return true;
	return strcmp(b->serial, dev->serial) == 0;
}

static void
on_add(struct boards *r, const struct device *dev, bool change)
{
	struct board *b = find_syspath(r, dev->syspath);

	if (b && b->present) {
		bool child_changed =
		    strcmp(b->dev.tty, dev->tty) != 0 || strcmp(b->dev.block, dev->block) != 0;
		bool mode_changed = b->dev.mode != dev->mode;

		if (mode_changed && !same_identity(b, dev)) {
			declare_left(r, b);
			appear(r, dev);
			return;
		}
		if (mode_changed)
			b->old_mode = b->dev.mode;
		b->dev = *dev;
		if (mode_changed) {
			identify(r, b, b->catalog ? b->catalog->name : NULL);
			record(r, b);
			announce_when_ready(r, b,
					    b->pending == BOARDS_APPEARED ? BOARDS_APPEARED
									  : BOARDS_MODE_CHANGED);
		} else if (b->pending >= 0) {
			if (child_changed && b->dev.tty[0])
				announce(r, b);
		} else if (child_changed) {
			log_debug("board %s on port %s: tty '%s' block '%s'", board_display_name(b),
				  dev->port, dev->tty, dev->block);
			emit(r, BOARDS_UPDATED, b);
		}
		return;
	}
	(void)change;
	b = find_port_any(r, dev->port);
	if (b && !b->present && same_identity(b, dev)) {
		reappear(r, b, dev);
		return;
	}
	if (b)
		declare_left(r, b);
	appear(r, dev);
}

static void
on_remove(struct boards *r, const struct device *dev)
{
	struct board *b = find_syspath(r, dev->syspath);
	int k;

	if (!b || !b->present)
		return;
	b->present = false;
	b->settle_timer = sd_event_source_disable_unref(b->settle_timer);
	b->dev.tty[0] = 0;
	b->dev.by_id[0] = 0;
	b->dev.block[0] = 0;
	b->dev.usb_node[0] = 0;
	k = sd_event_add_time_relative(r->loop, &b->leave_timer, CLOCK_MONOTONIC,
				       (uint64_t)r->cfg->leave_grace_ms * 1000u, 0, on_leave_timer,
				       b);
	if (k < 0) {
		declare_left(r, b);
		return;
	}
	log_debug("board %s gone from port %s, waiting for it to come back", board_display_name(b),
		  b->dev.port);
	if (b->pending != BOARDS_APPEARED)
		emit(r, BOARDS_GONE, b);
}

void
boards_on_device(void *userdata, enum udevwatch_action action, const struct device *dev)
{
	struct boards *r = userdata;

	switch (action) {
	case UDEVWATCH_ADD:
		on_add(r, dev, false);
		break;
	case UDEVWATCH_CHANGE:
		on_add(r, dev, true);
		break;
	case UDEVWATCH_REMOVE:
		on_remove(r, dev);
		break;
	default:
		break;
	}
}

int
boards_new(sd_event *loop, struct store *store, const struct config *cfg, boards_handler h,
	   void *userdata, struct boards **ret)
{
	struct boards *r = xnew(struct boards);

	r->loop = sd_event_ref(loop);
	r->store = store;
	r->cfg = cfg;
	r->handler = h;
	r->userdata = userdata;
	*ret = r;
	return 0;
}

struct boards *
boards_free(struct boards *r)
{
	if (!r)
		return NULL;
	for (size_t i = 0; i < r->n_items; i++)
		board_free(r->items[i]);
	free(r->items);
	sd_event_unref(r->loop);
	free(r);
	return NULL;
}

void
boards_set_config(struct boards *r, const struct config *cfg)
{
	r->cfg = cfg;
	for (size_t i = 0; i < r->n_items; i++) {
		struct board *b = r->items[i];
		char old[sizeof(b->profile)];

		memcpy(old, b->profile, sizeof(old));
		identify(r, b, b->catalog ? b->catalog->name : NULL);
		if (strcmp(old, b->profile) != 0)
			log_info("board %s on port %s: profile '%s' -> '%s'", board_display_name(b),
				 b->dev.port, old, b->profile);
	}
}

size_t
boards_count_present(const struct boards *r)
{
	size_t n = 0;

	for (size_t i = 0; i < r->n_items; i++)
		n += r->items[i]->present;
	return n;
}

struct board *
boards_next(struct boards *r, const struct board *prev)
{
	size_t i = 0;

	if (prev) {
		while (i < r->n_items && r->items[i] != prev)
			i++;
		i++;
	}
	return i < r->n_items ? r->items[i] : NULL;
}

int
boards_lookup(struct boards *r, const char *key, struct board **ret)
{
	struct board *found = NULL;
	char *end;
	long long id = strtoll(key, &end, 10);
	size_t hits = 0;

	for (size_t i = 0; i < r->n_items; i++) {
		struct board *b = r->items[i];
		bool hit = (!*end && id > 0 && b->id == id) || strcmp(b->dev.port, key) == 0 ||
			   (b->serial[0] && strcmp(b->serial, key) == 0) ||
			   (b->catalog && strcmp(b->catalog->name, key) == 0) ||
			   (b->profile[0] && strcmp(b->profile, key) == 0) ||
			   (!b->catalog && has_candidate(b, key));

		if (hit && found != b) {
			found = b;
			hits++;
		}
	}
	if (!hits)
		return -ENOENT;
	if (hits > 1)
		return -ENOTUNIQ;
	*ret = found;
	return 0;
}

void
boards_suggest(struct boards *r, struct str_closest *cl)
{
	for (size_t i = 0; i < r->n_items; i++) {
		const struct board *b = r->items[i];

		str_closest_add(cl, b->catalog ? b->catalog->name : NULL);
		str_closest_add(cl, b->profile);
		str_closest_add(cl, b->dev.port);
		if (!b->catalog && b->candidates[0]) {
			char names[sizeof(b->candidates)], *save = NULL;

			memcpy(names, b->candidates, sizeof(names));
			for (char *t = strtok_r(names, ", ", &save); t;
			     t = strtok_r(NULL, ", ", &save))
				if (strcmp(t, cl->word) != 0)
					str_closest_add(cl, catalog_find(t) ? catalog_find(t)->name
									    : NULL);
		}
	}
}

json_object *
board_to_json(const struct board *b)
{
	json_object *o = json_object_new_object();
	char usb_id[16];

	(void)snprintf(usb_id, sizeof(usb_id), "%04x:%04x", b->dev.vid, b->dev.pid);
	json_object_object_add(o, "id", json_object_new_int64(b->id));
	json_object_object_add(o, "board",
			       json_object_new_string(b->catalog ? b->catalog->name : ""));
	json_object_object_add(o, "title",
			       json_object_new_string(b->catalog ? b->catalog->title : ""));
	json_object_object_add(o, "candidates", json_object_new_string(b->candidates));
	json_object_object_add(
	    o, "mcu",
	    json_object_new_string(b->catalog
				       ? b->catalog->mcu->name
				       : (mode_shows_mcu(b->dev.mode) ? b->dev.product : "")));
	json_object_object_add(o, "port", json_object_new_string(b->dev.port));
	json_object_object_add(o, "id_path", json_object_new_string(b->dev.id_path));
	json_object_object_add(o, "serial", json_object_new_string(b->serial));
	json_object_object_add(o, "usb_serial", json_object_new_string(b->dev.serial));
	json_object_object_add(o, "mode",
			       json_object_new_string(device_mode_to_string(b->dev.mode)));
	json_object_object_add(o, "usb_id", json_object_new_string(usb_id));
	json_object_object_add(o, "manufacturer", json_object_new_string(b->dev.manufacturer));
	json_object_object_add(o, "product", json_object_new_string(b->dev.product));
	json_object_object_add(o, "profile", json_object_new_string(b->profile));
	json_object_object_add(o, "present", json_object_new_boolean(b->present));
	json_object_object_add(o, "tty", json_object_new_string(b->dev.tty));
	json_object_object_add(o, "by_id", json_object_new_string(b->dev.by_id));
	json_object_object_add(o, "block", json_object_new_string(b->dev.block));
	json_object_object_add(o, "usb_node", json_object_new_string(b->dev.usb_node));
	json_object_object_add(o, "installed_sha256", json_object_new_string(b->installed_sha));
	json_object_object_add(o, "firmware", json_object_new_string(b->firmware));
	json_object_object_add(o, "machine", json_object_new_string(b->machine));
	json_object_object_add(o, "installed_version",
			       json_object_new_string(b->installed_version));
	json_object_object_add(o, "known_good_sha256", json_object_new_string(b->known_good_sha));
	return o;
}
