/* SPDX-License-Identifier: GPL-2.0-or-later */
/* validate: check a firmware file against a board before it is written (see validate.h).
 *
 * The checks follow protocols.md §7, in the order a user has to fix things, and a refusal
 * names the one real cause: a build for another MCU is refused for that alone (its layout is
 * judged against the wrong chip); then where the image is linked (ELF, HEX and UF2 carry
 * their load address; a .bin's link address is pinned by the absolute addresses it holds,
 * below); then the Cortex-M vector table at the app start (initial SP inside the MCU's RAM,
 * Thumb reset vector inside the image). A build for another interface is a reason of its own.
 * Messages speak `make menuconfig` and offer only the choices it offers for that MCU. */
#include "image/validate.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "proto/picoboot.h"
#include "image/kdict.h"
#include "util.h"

#define DEFAULT_CONFIG "/etc/skrflash/skrflash.conf"
/* RP2040 "No bootloader" layout: 256-byte boot2 stage, vector table right after it (§5.2). */
#define RP2040_BOOT2_SIZE 0x100u
/* Longest vector table examined: 16 system entries plus the largest IRQ count of the
 * catalog's MCUs (H7: about 150) with room to spare. */
#define VT_MAX_ENTRIES 256u

static uint32_t
get_le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void add_reason(struct verdict *v, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
add_reason(struct verdict *v, const char *fmt, ...)
{
	va_list ap;
	char *s;

	if (v->n_reasons >= VALIDATE_MAX_REASONS)
		return;
	va_start(ap, fmt);
	if (vasprintf(&s, fmt, ap) < 0)
		abort(); /* OOM, as everywhere else (util.h) */
	va_end(ap);
	v->reasons[v->n_reasons++] = s;
}

/*
 * Link addresses. A .bin does not say where it was linked, and the position of its handlers
 * is no evidence: a real Klipper build has its reset handler 24-30 KiB into the image, so
 * every menuconfig offset below that "fits" the vector table. What pins the link address is
 * an absolute address the code holds:
 *   - Klipper's identify handler reads the data dictionary through its absolute address
 *     (src/command.c, command_identify_data in the generated compile_time_request.c), so
 *     (link base + the dictionary's file offset) is an aligned 32-bit literal in the image;
 *   - armcm_main() writes the vector table's address to SCB->VTOR (src/stm32/stm32f4.c and
 *     the other families; CMSIS SystemInit() in other firmware does the same);
 *   - every vector entry must point inside [base, base + size).
 * Candidates are the bases of the menuconfig choices for the MCU (catalog_mcu_offsets) and
 * the target's own app start. Evidence that fits no candidate or several is reported as such.
 */

/* Where a .bin built for menuconfig offset `off` starts: the RP2040 "No bootloader" layout
 * (app at 0x10000100) begins with its 256-byte boot2 stage at the flash base. */
static uint32_t
bin_base(const struct catalog_mcu *mcu, uint32_t off)
{
	if (mcu->family == CATALOG_FAMILY_RP2040 && off == RP2040_BOOT2_SIZE)
		return mcu->flash_base;
	return mcu->flash_base + off;
}

/* Where the vector table sits in an image that starts at `base`. */
static size_t
vt_offset(const struct catalog_mcu *mcu, uint32_t base)
{
	return mcu->family == CATALOG_FAMILY_RP2040 && base == mcu->flash_base ? RP2040_BOOT2_SIZE
									       : 0;
}

/* menuconfig's name of the layout of an image that starts at `base`, NULL if none. */
static const char *
base_name(const struct catalog_mcu *mcu, uint32_t base)
{
	if (base < mcu->flash_base)
		return NULL;
	return catalog_offset_name(mcu, (uint32_t)(base + vt_offset(mcu, base) - mcu->flash_base));
}

/* "0x08008000 (\"32KiB bootloader\")" or "0x08003000 (no menuconfig Bootloader offset)" */
static void
describe_base(const struct catalog_mcu *mcu, uint32_t base, char *buf, size_t len)
{
	const char *name = base_name(mcu, base);

	if (name)
		snprintf(buf, len, "0x%08" PRIx32 " (\"%s\")", base, name);
	else
		snprintf(buf, len, "0x%08" PRIx32 " (no Bootloader offset menuconfig offers)",
			 base);
}

static bool
has_word(const uint8_t *data, size_t size, uint64_t w)
{
	if (w > UINT32_MAX)
		return false;
	for (size_t i = 0; i + 4 <= size; i += 4)
		if (get_le32(data + i) == w)
			return true;
	return false;
}

/* Every handler of the vector table lies in [base, base + size) once the image starts at
 * `base`. Entries are read until the first word that is neither 0 nor an odd address inside
 * flash: past that is code, not the table. The reset vector must be a handler. */
static bool
handlers_fit(const struct catalog_mcu *mcu, const uint8_t *data, size_t size, uint32_t base)
{
	uint64_t flash_end = (uint64_t)mcu->flash_base + mcu->flash_size;
	size_t vt = vt_offset(mcu, base), n_entries;

	if (size < vt + 8)
		return false;
	n_entries = (size - vt) / 4;
	if (n_entries > VT_MAX_ENTRIES)
		n_entries = VT_MAX_ENTRIES;
	for (size_t i = 1; i < n_entries; i++) {
		uint32_t e = get_le32(data + vt + 4 * i);

		if (e == 0 && i > 1)
			continue;
		if (!(e & 1) || e < mcu->flash_base || e >= flash_end) {
			if (i == 1)
				return false;
			break;
		}
		if ((e & ~1u) < base || (e & ~1u) - base >= size)
			return false;
	}
	return true;
}

enum link_kind { LINK_KNOWN, LINK_AMBIGUOUS, LINK_UNKNOWN };

#define LINK_MAX (CATALOG_MAX_OFFSETS + 1)
/* Bases a menuconfig offset cannot give, found by the dictionary literal alone: at most. */
#define LINK_OTHER_MAX 4
#define LINK_OTHER_TRIES 1024

struct link {
	enum link_kind kind;
	uint32_t base[LINK_MAX]; /* [0] when KNOWN; every candidate left when AMBIGUOUS */
	size_t n;
};

static size_t
candidates(const struct catalog_mcu *mcu, uint32_t expected, uint32_t *out)
{
	const struct catalog_offset *o;
	size_t n = catalog_mcu_offsets(mcu, &o), k = 0;
	bool have_expected = false;

	for (size_t i = 0; i < n; i++) {
		out[k] = bin_base(mcu, o[i].offset);
		have_expected |= out[k] == expected;
		k++;
	}
	if (!have_expected)
		out[k++] = expected;
	return k;
}

static void
link_settle(struct link *l)
{
	l->kind = l->n == 1 ? LINK_KNOWN : l->n ? LINK_AMBIGUOUS : LINK_UNKNOWN;
}

/* Klipper build: the base B for which B + dict_off is a literal of the image and the vector
 * table fits. */
static void
link_from_dict(const struct catalog_mcu *mcu, const uint8_t *data, size_t size, size_t dict_off,
	       uint32_t expected, struct link *l)
{
	uint32_t c[LINK_MAX];
	size_t n = candidates(mcu, expected, c);
	bool found;

	l->n = 0;
	for (size_t i = 0; i < n; i++)
		if (has_word(data, size, (uint64_t)c[i] + dict_off) &&
		    handlers_fit(mcu, data, size, c[i]))
			l->base[l->n++] = c[i];
	found = l->n > 0;
	/* none: maybe a hand-edited FLASH_APPLICATION_ADDRESS; any 256-aligned base the literal
	 * and the vector table agree on (a bounded number of tries: crafted input must not make
	 * this quadratic) */
	for (size_t i = 0, tries = 0; !found && i + 4 <= size && tries < LINK_OTHER_TRIES; i += 4) {
		uint32_t w = get_le32(data + i), b;
		bool dup = false;

		if (w < dict_off)
			continue;
		b = (uint32_t)(w - dict_off);
		if (b % 0x100 || b < mcu->flash_base || b - mcu->flash_base >= mcu->flash_size)
			continue;
		for (size_t k = 0; k < l->n; k++)
			dup |= l->base[k] == b;
		if (dup)
			continue;
		tries++;
		if (l->n < LINK_OTHER_MAX && handlers_fit(mcu, data, size, b))
			l->base[l->n++] = b;
	}
	link_settle(l);
}

/* Anything else (Marlin, Katapult, ...): the candidates the vector table fits, narrowed to
 * the one whose vector table address the code holds (SCB->VTOR) when several fit. */
static void
link_from_vectors(const struct catalog_mcu *mcu, const uint8_t *data, size_t size,
		  uint32_t expected, struct link *l)
{
	uint32_t c[LINK_MAX], vtor = 0;
	size_t n = candidates(mcu, expected, c), n_vtor = 0;

	l->n = 0;
	for (size_t i = 0; i < n; i++)
		if (handlers_fit(mcu, data, size, c[i]))
			l->base[l->n++] = c[i];
	for (size_t i = 0; l->n > 1 && i < l->n; i++)
		if (has_word(data, size, (uint64_t)l->base[i] + vt_offset(mcu, l->base[i]))) {
			vtor = l->base[i];
			n_vtor++;
		}
	if (n_vtor == 1) {
		l->base[0] = vtor;
		l->n = 1;
	}
	link_settle(l);
}

static void
format_bases(const struct catalog_mcu *mcu, const struct link *l, char *buf, size_t len)
{
	size_t pos = 0;

	buf[0] = '\0';
	for (size_t i = 0; i < l->n && pos < len; i++) {
		char d[96];
		int k;

		describe_base(mcu, l->base[i], d, sizeof(d));
		k = snprintf(buf + pos, len - pos, "%s%s", i ? ", " : "", d);
		if (k < 0)
			break;
		pos += (size_t)k;
	}
}

/* "make menuconfig -> Bootloader offset \"32KiB bootloader\"", or what to check when the
 * target's app start is none of menuconfig's choices (a profile's app_start). */
static void
what_to_build(const struct catalog_mcu *mcu, uint32_t expected, char *buf, size_t len)
{
	const char *want = base_name(mcu, expected);

	if (want)
		snprintf(buf, len, "rebuild with make menuconfig -> Bootloader offset \"%s\"",
			 want);
	else
		snprintf(buf, len,
			 "0x%08" PRIx32 " is no Bootloader offset menuconfig offers for the %s: "
			 "check app_start in the profile",
			 expected, mcu->name);
}

static bool check_vectors(const struct image *img, const struct validate_target *t,
			  const char *name, size_t vt_off, uint32_t vt_addr, struct verdict *v);

/* A .bin: where it is linked must be where it will be written. Returns false (with one
 * reason) when it is not, or when the evidence does not tell. */
static bool
check_bin_link(const struct image *img, const struct validate_target *t, const char *name,
	       const struct kdict *d, uint32_t expected, struct verdict *v)
{
	const struct catalog_mcu *mcu = t->board->mcu;
	char got[96], todo[160], list[512];
	struct link l;

	if (d)
		link_from_dict(mcu, img->data, img->size, d->offset, expected, &l);
	else
		link_from_vectors(mcu, img->data, img->size, expected, &l);
	what_to_build(mcu, expected, todo, sizeof(todo));
	switch (l.kind) {
	case LINK_KNOWN:
		if (l.base[0] == expected)
			return true;
		describe_base(mcu, l.base[0], got, sizeof(got));
		snprintf(list, sizeof(list),
			 ", or set app_start = 0x%08" PRIx32 " in the profile if the board runs "
			 "Katapult",
			 (uint32_t)(l.base[0] + vt_offset(mcu, l.base[0])));
		add_reason(
		    v, "%s is linked for %s but the app on %s starts at 0x%08" PRIx32 ": %s%s",
		    name, got, t->board->title, (uint32_t)(expected + vt_offset(mcu, expected)),
		    todo,
		    mcu->family == CATALOG_FAMILY_RP2040 && base_name(mcu, l.base[0]) ? list : "");
		return false;
	case LINK_AMBIGUOUS:
		format_bases(mcu, &l, list, sizeof(list));
		if (d)
			add_reason(v,
				   "%s refers to its data dictionary as if linked at each of %s: "
				   "cannot tell which it was built for; flash out/klipper.elf "
				   "instead, or %s",
				   name, list, todo);
		else
			add_reason(
			    v,
			    "%s's vector table fits a build for each of %s, and the file "
			    "has no Klipper data dictionary to tell them apart: use the .elf "
			    "or .hex of the build (they record the address), or check it was "
			    "built for the app start 0x%08" PRIx32 " of %s",
			    name, list, expected, t->board->title);
		return false;
	case LINK_UNKNOWN:
	default:
		/* a table that fits nowhere: its own flaw (SP, Thumb bit, reset vector) first */
		if (!check_vectors(img, t, name, vt_offset(mcu, expected),
				   (uint32_t)(expected + vt_offset(mcu, expected)), v))
			return false;
		if (d)
			add_reason(
			    v,
			    "%s holds a Klipper data dictionary but no absolute reference to "
			    "it that fits its vector table at any address the %s starts an "
			    "app from: cannot tell where it is linked; check that it is a "
			    "complete out/klipper.bin, or flash out/klipper.elf",
			    name, mcu->name);
		else
			add_reason(
			    v,
			    "%s's vector table points outside the image at every address the "
			    "%s starts an app from: it is not a firmware for %s, or the file is "
			    "damaged",
			    name, mcu->name, t->board->title);
		return false;
	}
}

static bool
sp_in_ram(const struct catalog_mcu *mcu, uint32_t sp)
{
	if (sp & 3)
		return false;
	for (size_t i = 0; i < CATALOG_MAX_RAM && mcu->ram[i].size; i++) {
		uint64_t base = mcu->ram[i].base, end = base + mcu->ram[i].size;

		/* full-descending stack: SP == end is the normal initial value (§7.1) */
		if (sp > base && sp <= end)
			return true;
	}
	return false;
}

static void
format_ram(const struct catalog_mcu *mcu, char *buf, size_t len)
{
	size_t pos = 0;

	buf[0] = '\0';
	for (size_t i = 0; i < CATALOG_MAX_RAM && mcu->ram[i].size && pos < len; i++) {
		int n = snprintf(buf + pos, len - pos, "%s0x%08" PRIx32 "-0x%08" PRIx32,
				 i ? ", " : "", mcu->ram[i].base,
				 (uint32_t)((uint64_t)mcu->ram[i].base + mcu->ram[i].size - 1));
		if (n < 0)
			break;
		pos += (size_t)n;
	}
}

static enum kdict_interface
expected_interface(enum config_interface i)
{
	switch (i) {
	case CONFIG_INTERFACE_USB:
		return KDICT_INTERFACE_USB;
	case CONFIG_INTERFACE_SERIAL:
		return KDICT_INTERFACE_SERIAL;
	case CONFIG_INTERFACE_CAN:
		return KDICT_INTERFACE_CAN;
	case _CONFIG_INTERFACE_MAX:
	default:
		return KDICT_INTERFACE_UNKNOWN;
	}
}

static const char *
interface_title(enum kdict_interface i)
{
	switch (i) {
	case KDICT_INTERFACE_USB:
		return "USB";
	case KDICT_INTERFACE_SERIAL:
		return "serial";
	case KDICT_INTERFACE_CAN:
		return "CAN";
	case KDICT_INTERFACE_UNKNOWN:
	case _KDICT_INTERFACE_MAX:
	default:
		return "an unknown interface";
	}
}

/* The Klipper dictionary, if any. Returns -1 when the image is refused for what it says (one
 * reason: a build for another MCU is wrong whatever else its layout says), 0 without a
 * dictionary, 1 with one in *d; a wrong interface adds its reason and returns 1. */
static int
check_klipper(const struct image *img, const struct validate_target *t, const char *name,
	      struct kdict *d, struct verdict *v)
{
	const struct catalog_board *board = t->board;
	enum kdict_interface want = expected_interface(t->interface);
	int r = kdict_find(img->data, img->size, d);

	if (r < 0) {
		add_reason(v,
			   "%s has a damaged Klipper data dictionary (no config.MCU): rebuild it "
			   "from a clean Klipper tree",
			   name);
		return -1;
	}
	if (r == 0)
		return 0; /* not Klipper (Marlin, Katapult...): nothing names the MCU */
	snprintf(v->mcu, sizeof(v->mcu), "%s", d->mcu);
	snprintf(v->version, sizeof(v->version), "%s", d->version);
	if (d->interface != KDICT_INTERFACE_UNKNOWN)
		snprintf(v->interface, sizeof(v->interface), "%s",
			 kdict_interface_to_string(d->interface));

	if (strcasecmp(d->mcu, board->mcu->name) != 0) {
		add_reason(v,
			   "%s was built for %s, but %s is %s: rebuild with make menuconfig -> "
			   "Processor model set to %s",
			   name, d->mcu, board->title, board->mcu->name, board->mcu->name);
		return -1;
	}
	if (t->reported_mcu && *t->reported_mcu && strcasecmp(d->mcu, t->reported_mcu) != 0) {
		add_reason(v,
			   "%s was built for %s, but the board's bootloader reports %s: check "
			   "the board variant in the profile (match.board) and rebuild for %s",
			   name, d->mcu, t->reported_mcu, t->reported_mcu);
		return -1;
	}
	if (d->interface != KDICT_INTERFACE_UNKNOWN && want != KDICT_INTERFACE_UNKNOWN &&
	    d->interface != want)
		add_reason(v,
			   "%s is a %s build, but the board is expected to talk %s: rebuild "
			   "with make menuconfig -> Communication interface set to %s, or set "
			   "interface = \"%s\" in the profile",
			   name,
			   d->can_bridge ? "USB to CAN bus bridge" : interface_title(d->interface),
			   interface_title(want), interface_title(want),
			   kdict_interface_to_string(d->interface));
	return 1;
}

/* §7.1 on the vector table `vt_off` bytes in, at `vt_addr` once written. Adds one reason at
 * most and returns false when it did. */
static bool
check_vectors(const struct image *img, const struct validate_target *t, const char *name,
	      size_t vt_off, uint32_t vt_addr, struct verdict *v)
{
	const struct catalog_board *board = t->board;
	const struct catalog_mcu *mcu = board->mcu;
	uint32_t sp, reset;
	size_t span;

	if (vt_off >= img->size || img->size - vt_off < 8) {
		add_reason(v,
			   "%s is too small to hold a Cortex-M vector table at 0x%08" PRIx32
			   ": it is not a firmware build",
			   name, vt_addr);
		return false;
	}
	span = img->size - vt_off;
	sp = get_le32(img->data + vt_off);
	reset = get_le32(img->data + vt_off + 4);
	if (!sp_in_ram(mcu, sp)) {
		char ram[160];

		format_ram(mcu, ram, sizeof(ram));
		add_reason(v,
			   "%s's initial stack pointer 0x%08" PRIx32 " is not in the RAM of the "
			   "%s (%s): it is not a firmware for %s, or the file is damaged",
			   name, sp, mcu->name, ram, board->title);
		return false;
	}
	if (!(reset & 1)) {
		add_reason(v,
			   "%s's reset vector 0x%08" PRIx32 " is not a Thumb address (bit 0 "
			   "clear): it is not a Cortex-M firmware image",
			   name, reset);
		return false;
	}
	if ((reset & ~1u) < vt_addr || (reset & ~1u) - vt_addr >= span) {
		char todo[160];

		what_to_build(mcu, vt_addr - (uint32_t)vt_off, todo, sizeof(todo));
		add_reason(v,
			   "%s's reset vector 0x%08" PRIx32 " lies outside the image as written "
			   "at 0x%08" PRIx32 "-0x%08" PRIx32 ": it was linked for another "
			   "address; %s",
			   name, reset, vt_addr, (uint32_t)(vt_addr + span - 1), todo);
		return false;
	}
	return true;
}

/* ELF, HEX and UF2 say where they load; .bin files are placed at the app start and their
 * link address inferred. Returns false after adding the one reason. */
static bool
check_placement(const struct image *img, const struct validate_target *t, const char *name,
		const struct kdict *d, uint32_t expected, struct verdict *v)
{
	const struct catalog_mcu *mcu = t->board->mcu;
	uint64_t flash_end = (uint64_t)mcu->flash_base + mcu->flash_size;
	uint32_t place = img->has_load_address ? img->load_address : expected;
	uint64_t end = (uint64_t)place + img->size;

	if (img->has_load_address && place != expected) {
		char got[96], todo[160];

		describe_base(mcu, place, got, sizeof(got));
		what_to_build(mcu, expected, todo, sizeof(todo));
		add_reason(v, "%s is linked for %s but %s needs it at 0x%08" PRIx32 ": %s", name,
			   got, t->board->title, expected, todo);
		return false;
	}
	if (place >= mcu->flash_base && place < flash_end && end > flash_end) {
		add_reason(v,
			   "%s is %zu bytes but only %" PRIu64 " bytes of flash follow 0x%08" PRIx32
			   " on %s: it cannot fit; disable features in the build or check the "
			   "board variant",
			   name, img->size, flash_end - place, place, t->board->title);
		return false;
	}
	if (place < mcu->flash_base || place >= flash_end) {
		add_reason(v,
			   "%s loads at 0x%08" PRIx32 ", outside the flash of %s (0x%08" PRIx32
			   "-0x%08" PRIx32 ")",
			   name, place, t->board->title, mcu->flash_base,
			   (uint32_t)(flash_end - 1));
		return false;
	}
	if (!img->has_load_address && !check_bin_link(img, t, name, d, expected, v))
		return false;
	if (vt_offset(mcu, place) && !picoboot_boot2_valid(img->data)) {
		add_reason(v,
			   "%s has no valid RP2040 boot2 stage at 0x%08" PRIx32 " (CRC mismatch): "
			   "the bootrom will not start it; rebuild with make menuconfig -> "
			   "Bootloader offset \"No bootloader\"",
			   name, mcu->flash_base);
		return false;
	}
	return true;
}

static int
check(const uint8_t *buf, size_t len, const struct validate_target *t, struct verdict *v,
      struct image *ret_image)
{
	const struct catalog_board *board;
	const struct catalog_mcu *mcu;
	const char *name, *err = NULL;
	struct image img = {0};
	struct kdict d;
	uint32_t app_start, expected;
	int r, k;

	*v = (struct verdict){0};
	if (!t || !t->board || !t->board->mcu)
		return -EINVAL;
	board = t->board;
	mcu = board->mcu;
	name = t->file_name && *t->file_name ? t->file_name : "the image";
	app_start = t->app_start ? t->app_start : board->app_start;
	/* where the file's first byte goes: boot2 first in the RP2040 "No bootloader" layout */
	expected =
	    mcu->family == CATALOG_FAMILY_RP2040 && app_start == mcu->flash_base + RP2040_BOOT2_SIZE
		? mcu->flash_base
		: app_start;

	r = image_parse(buf, len, &img, &err);
	if (r == -EFBIG) {
		add_reason(v, "%s is larger than 16 MiB: no supported board has that much flash",
			   name);
		goto done;
	}
	if (r < 0) {
		add_reason(v, "%s is not a valid firmware file: %s", name, err ? err : "malformed");
		goto done;
	}
	v->format = img.format;
	v->size = img.size;
	v->load_address = img.has_load_address ? img.load_address : expected;
	if (img.size == 0) {
		add_reason(v, "%s is empty: the build or the download did not produce a firmware",
			   name);
		goto done;
	}
	if (img.data[0] == 0xFF && memcmp(img.data, img.data + 1, img.size - 1) == 0) {
		add_reason(v,
			   "%s contains only 0xFF bytes (erased flash): it is not a firmware "
			   "build",
			   name);
		goto done;
	}
	if (img.format == IMAGE_FORMAT_UF2 && mcu->family != CATALOG_FAMILY_RP2040) {
		add_reason(v,
			   "%s is a UF2 file, which only RP2040 boards take: %s needs the .bin "
			   "of the build",
			   name, board->title);
		goto done;
	}
	k = check_klipper(&img, t, name, &d, v);
	if (k < 0)
		goto done;
	if (!check_placement(&img, t, name, k > 0 ? &d : NULL, expected, v))
		goto done;
	(void)check_vectors(&img, t, name, vt_offset(mcu, v->load_address),
			    (uint32_t)(v->load_address + vt_offset(mcu, v->load_address)), v);
done:
	v->accepted = v->n_reasons == 0;
	if (v->accepted && ret_image) {
		img.has_load_address = true;
		img.load_address = v->load_address;
		*ret_image = img;
	} else {
		image_done(&img);
	}
	return 0;
}

int
validate_image(const uint8_t *buf, size_t len, const struct validate_target *t, struct verdict *ret)
{
	return check(buf, len, t, ret, NULL);
}

int
validate_image_for_flash(const uint8_t *buf, size_t len, const struct validate_target *t,
			 struct verdict *ret_verdict, struct image *ret_image)
{
	int r;

	*ret_image = (struct image){0};
	r = check(buf, len, t, ret_verdict, ret_image);
	if (r < 0)
		return r;
	return ret_verdict->accepted ? 1 : 0;
}

void
verdict_done(struct verdict *v)
{
	if (!v)
		return;
	for (size_t i = 0; i < v->n_reasons; i++)
		free(v->reasons[i]);
	*v = (struct verdict){0};
}

char *
verdict_to_json(const struct verdict *v)
{
	struct json_object *o = json_object_new_object(), *reasons = json_object_new_array();
	char addr[16];
	char *s;

	snprintf(addr, sizeof(addr), "0x%08" PRIx32, v->load_address);
	json_object_object_add(o, "accepted", json_object_new_boolean(v->accepted));
	json_object_object_add(o, "format",
			       json_object_new_string(image_format_to_string(v->format)));
	json_object_object_add(o, "load_address", json_object_new_string(addr));
	json_object_object_add(o, "size", json_object_new_int64((int64_t)v->size));
	json_object_object_add(o, "mcu", json_object_new_string(v->mcu));
	json_object_object_add(o, "interface", json_object_new_string(v->interface));
	json_object_object_add(o, "version", json_object_new_string(v->version));
	for (size_t i = 0; i < v->n_reasons; i++)
		json_object_array_add(reasons, json_object_new_string(v->reasons[i]));
	json_object_object_add(o, "reasons", reasons);
	s = xstrdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN |
							  JSON_C_TO_STRING_NOSLASHESCAPE));
	json_object_put(o);
	return s;
}

static void
print_verdict(const struct verdict *v, const char *name, const struct catalog_board *board)
{
	printf("%s: %s for %s\n", name, v->accepted ? "accepted" : "refused", board->title);
	if (v->size)
		printf("  %s, %zu bytes at 0x%08" PRIx32 "%s%s%s%s%s%s\n",
		       image_format_to_string(v->format), v->size, v->load_address,
		       *v->mcu ? ", klipper " : "", v->mcu, *v->interface ? ", " : "", v->interface,
		       *v->version ? ", " : "", v->version);
	for (size_t i = 0; i < v->n_reasons; i++)
		printf("  - %s\n", v->reasons[i]);
}

static int
usage(FILE *f, int code)
{
	fprintf(f, "usage: skrflashctl validate (--board NAME | --profile NAME) [--config FILE] "
		   "[--json] FILE\n");
	return code;
}

/* The command line of `skrflashctl validate`. */
struct validate_args {
	const char *board, *profile, *config, *path;
	bool json;
	bool done; /* --help answered */
};

/* 0 (with a->done after --help), or the usage exit code 2 (usage printed). */
static int
validate_parse(int argc, char **argv, struct validate_args *a)
{
	static const struct option options[] = {
	    {"board", required_argument, NULL, 'b'},  {"profile", required_argument, NULL, 'p'},
	    {"config", required_argument, NULL, 'c'}, {"json", no_argument, NULL, 'j'},
	    {"help", no_argument, NULL, 'h'},	      {0},
	};
	int c;

	*a = (struct validate_args){0};
	optind = 0; /* glibc: full re-initialisation, the command may run more than once */
	opterr = 0;
	while ((c = getopt_long(argc, argv, "+b:p:c:jh", options, NULL)) >= 0) {
		switch (c) {
		case 'b':
			a->board = optarg;
			break;
		case 'p':
			a->profile = optarg;
			break;
		case 'c':
			a->config = optarg;
			break;
		case 'j':
			a->json = true;
			break;
		case 'h':
			a->done = true;
			return usage(stdout, 0);
		default:
			fprintf(stderr, "validate: unknown or incomplete option\n");
			return usage(stderr, 2);
		}
	}
	if (optind != argc - 1 || !!a->board == !!a->profile)
		return usage(stderr, 2);
	a->path = argv[optind];
	return 0;
}

/* The board (and, with --profile, app start and interface) to validate against; *cfg holds
 * the loaded configuration. 0, or exit code 2 (said why). */
static int
validate_target_of(const struct validate_args *a, struct validate_target *t, struct config **cfg)
{
	const char *path = a->config;
	const struct config_profile *p;
	char *errors = NULL;
	int r;

	if (a->board) {
		t->board = catalog_find(a->board);
		if (!t->board) {
			fprintf(stderr, "validate: unknown board '%s'\n", a->board);
			return 2;
		}
		return 0;
	}
	if (!path && access(DEFAULT_CONFIG, F_OK) == 0)
		path = DEFAULT_CONFIG;
	r = config_load(path, NULL, cfg, &errors);
	if (r < 0) {
		fprintf(stderr, "validate: cannot load %s: %s\n",
			path ? path : "the built-in configuration", errors ? errors : strerror(-r));
		free(errors);
		return 2;
	}
	p = config_find_profile(*cfg, a->profile);
	if (!p) {
		fprintf(stderr, "validate: no profile '%s' in %s\n", a->profile,
			path ? path : "the built-in configuration");
		return 2;
	}
	if (!p->match.board) {
		fprintf(stderr,
			"validate: profile '%s' names no board (match.board): use --board\n",
			a->profile);
		return 2;
	}
	t->board = p->match.board;
	t->interface = p->interface;
	t->app_start = p->has_app_start ? p->app_start : 0;
	return 0;
}

/* Read the file, validate it against t and print the verdict (text or JSON): 0 accepted,
 * 1 refused, 2 not read or not validated. */
static int
validate_file(const char *path, struct validate_target *t, bool json)
{
	const char *base = strrchr(path, '/');
	struct verdict v;
	uint8_t *data = NULL;
	size_t size = 0;
	int r, code = 2;

	r = read_file(path, IMAGE_MAX_SIZE + 1, &data, &size);
	if (r == -EFBIG) {
		fprintf(stderr, "validate: %s is larger than 16 MiB\n", path);
		goto out;
	}
	if (r < 0) {
		fprintf(stderr, "validate: cannot read %s: %s\n", path, strerror(-r));
		goto out;
	}
	t->file_name = base ? base + 1 : path;
	r = validate_image(data, size, t, &v);
	if (r < 0) {
		fprintf(stderr, "validate: %s\n", strerror(-r));
		goto out;
	}
	if (json) {
		char *s = verdict_to_json(&v);

		printf("%s\n", s);
		free(s);
	} else {
		print_verdict(&v, t->file_name, t->board);
	}
	fflush(stdout);
	code = v.accepted ? 0 : 1;
	verdict_done(&v);
out:
	free(data);
	return code;
}

int
validate_command(int argc, char **argv)
{
	struct validate_args a;
	struct validate_target t = {.interface = CONFIG_INTERFACE_USB};
	struct config *cfg = NULL;
	int code = validate_parse(argc, argv, &a);

	if (code || a.done)
		return code;
	code = validate_target_of(&a, &t, &cfg);
	if (!code)
		code = validate_file(a.path, &t, a.json);
	config_free(cfg);
	return code;
}
