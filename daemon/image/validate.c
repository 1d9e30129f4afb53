/* SPDX-License-Identifier: GPL-2.0-or-later */
/* validate: check a firmware file against a board before it is written (see validate.h).
 *
 * The checks follow protocols.md §7: the Cortex-M vector table at the app start must hold an
 * initial stack pointer inside the MCU's RAM and a Thumb reset vector inside the image; a
 * .bin's link base is inferred from all of its handler addresses (§7.3) because the reset
 * vector alone cannot catch an image linked above the app start; ELF, HEX and UF2 carry
 * their load address; a Klipper build names its MCU and transport in its dictionary. Every
 * failed check adds one reason that says what to do, so the user fixes everything at once. */
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

/* What Klipper's menuconfig calls the layout whose vector table sits at `addr`. */
static void
offset_name(const struct catalog_mcu *mcu, uint32_t addr, char *buf, size_t len)
{
	uint32_t off = addr - mcu->flash_base;
	char tmp[32];

	if (addr < mcu->flash_base || off == 0 ||
	    (mcu->family == CATALOG_FAMILY_RP2040 && off == RP2040_BOOT2_SIZE)) {
		snprintf(buf, len, "\"No bootloader\"");
		return;
	}
	catalog_format_offset(off, tmp, sizeof(tmp));
	snprintf(buf, len, "\"%s bootloader\"", tmp);
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

/* CRC-32/MPEG-2 (poly 0x04C11DB7, init ~0, not reflected, no final XOR) over boot2's
 * first 252 bytes, stored little-endian in the last 4 (§5.2). */
static bool
rp2040_boot2_valid(const uint8_t *p)
{
	uint32_t crc = 0xFFFFFFFFu;

	for (size_t i = 0; i < RP2040_BOOT2_SIZE - 4; i++) {
		crc ^= (uint32_t)p[i] << 24;
		for (int b = 0; b < 8; b++)
			crc = crc & 0x80000000u ? crc << 1 ^ 0x04C11DB7u : crc << 1;
	}
	return crc == get_le32(p + RP2040_BOOT2_SIZE - 4);
}

/*
 * §7.3: the largest candidate base B (the family's bootloader offsets and the expected app
 * start) such that every handler entry lies in [B, B + span). `span` is the number of image
 * bytes from the vector table on. Entries are read until the first word that is neither 0
 * nor an odd address inside flash: past that is code, not the table. Returns false when no
 * candidate holds every handler.
 */
static bool
infer_link_base(const struct catalog_mcu *mcu, uint32_t app_start, const uint8_t *vt, size_t span,
		uint32_t *ret_base)
{
	uint64_t flash_end = (uint64_t)mcu->flash_base + mcu->flash_size;
	uint32_t handlers[VT_MAX_ENTRIES];
	size_t n = 0, n_entries = span / 4;
	const uint32_t *offsets;
	size_t n_offsets = catalog_family_offsets(mcu->family, &offsets);
	uint64_t best = UINT64_MAX;

	if (n_entries > VT_MAX_ENTRIES)
		n_entries = VT_MAX_ENTRIES;
	for (size_t i = 1; i < n_entries; i++) {
		uint32_t e = get_le32(vt + 4 * i);

		if (e == 0)
			continue;
		if (!(e & 1) || e < mcu->flash_base || e >= flash_end)
			break;
		handlers[n++] = e & ~1u;
	}
	if (n == 0)
		return false;
	for (size_t c = 0; c <= n_offsets; c++) {
		uint64_t base = c < n_offsets ? (uint64_t)mcu->flash_base + offsets[c] : app_start;
		bool all = true;

		for (size_t i = 0; i < n && all; i++)
			all = handlers[i] >= base && handlers[i] < base + span;
		if (all && (best == UINT64_MAX || base > best))
			best = base;
	}
	if (best == UINT64_MAX)
		return false;
	*ret_base = (uint32_t)best;
	return true;
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

static void
check_klipper(const struct image *img, const struct validate_target *t, const char *name,
	      struct verdict *v)
{
	const struct catalog_board *board = t->board;
	enum kdict_interface want = expected_interface(t->interface);
	struct kdict d;
	int r = kdict_find(img->data, img->size, &d);

	if (r < 0) {
		add_reason(v,
			   "%s has a damaged Klipper data dictionary (no config.MCU): rebuild it "
			   "from a clean Klipper tree",
			   name);
		return;
	}
	if (r == 0)
		return; /* not Klipper (Marlin, Katapult...): nothing names the MCU */
	snprintf(v->mcu, sizeof(v->mcu), "%s", d.mcu);
	snprintf(v->version, sizeof(v->version), "%s", d.version);
	if (d.interface != KDICT_INTERFACE_UNKNOWN)
		snprintf(v->interface, sizeof(v->interface), "%s",
			 kdict_interface_to_string(d.interface));

	if (strcasecmp(d.mcu, board->mcu->name) != 0)
		add_reason(v,
			   "%s was built for %s, but %s is %s: rebuild with the processor "
			   "model set to %s",
			   name, d.mcu, board->title, board->mcu->name, board->mcu->name);
	else if (t->reported_mcu && *t->reported_mcu && strcasecmp(d.mcu, t->reported_mcu) != 0)
		add_reason(v,
			   "%s was built for %s, but the board's bootloader reports %s: check "
			   "the board variant in the profile (match.board) and rebuild for %s",
			   name, d.mcu, t->reported_mcu, t->reported_mcu);
	if (d.interface != KDICT_INTERFACE_UNKNOWN && want != KDICT_INTERFACE_UNKNOWN &&
	    d.interface != want)
		add_reason(v,
			   "%s is a %s build, but the board is expected to talk %s: rebuild "
			   "with the communication interface set to %s, or set interface = \"%s\" "
			   "in the profile",
			   name, interface_title(d.interface), interface_title(want),
			   interface_title(want), kdict_interface_to_string(d.interface));
}

/* The vector table `vt_off` bytes into the image, at `vt_addr` once written: §7.1 checks
 * 1-3 plus the §7.3 link-base inference. With `link_reported` the image is already known to
 * be linked elsewhere; only its own consistency (SP, Thumb bit) is still worth reporting. */
static void
check_vectors(const struct image *img, const struct validate_target *t, const char *name,
	      size_t vt_off, uint32_t vt_addr, bool link_reported, struct verdict *v)
{
	const struct catalog_board *board = t->board;
	const struct catalog_mcu *mcu = board->mcu;
	char want[48];
	uint32_t sp, reset, base;
	const uint8_t *vt;
	size_t span;

	if (vt_off >= img->size || img->size - vt_off < 8) {
		add_reason(v,
			   "%s is too small to hold a Cortex-M vector table at 0x%08" PRIx32
			   ": it is not a firmware build",
			   name, vt_addr);
		return;
	}
	vt = img->data + vt_off;
	span = img->size - vt_off;
	sp = get_le32(vt);
	reset = get_le32(vt + 4);
	if (!sp_in_ram(mcu, sp)) {
		char ram[160];

		format_ram(mcu, ram, sizeof(ram));
		add_reason(v,
			   "%s's initial stack pointer 0x%08" PRIx32 " is not in the RAM of the "
			   "%s (%s): it is not a firmware for %s, or the file is damaged",
			   name, sp, mcu->name, ram, board->title);
	}
	if (!(reset & 1))
		add_reason(v,
			   "%s's reset vector 0x%08" PRIx32 " is not a Thumb address (bit 0 "
			   "clear): it is not a Cortex-M firmware image",
			   name, reset);
	if (link_reported)
		return;
	offset_name(mcu, vt_addr, want, sizeof(want));
	if (!img->has_load_address && infer_link_base(mcu, vt_addr, vt, span, &base) &&
	    base != vt_addr) {
		char got[48];

		offset_name(mcu, base, got, sizeof(got));
		add_reason(v,
			   "%s is linked for 0x%08" PRIx32 " (%s) but the app on %s starts at "
			   "0x%08" PRIx32 ": rebuild with Bootloader offset %s",
			   name, base, got, board->title, vt_addr, want);
		return;
	}
	if ((reset & 1) && ((reset & ~1u) < vt_addr || (reset & ~1u) - vt_addr >= span))
		add_reason(v,
			   "%s's reset vector 0x%08" PRIx32 " lies outside the image as written "
			   "at 0x%08" PRIx32 "-0x%08" PRIx32 ": it was linked for another "
			   "address; rebuild with Bootloader offset %s",
			   name, reset, vt_addr, (uint32_t)(vt_addr + span - 1), want);
}

static int
check(const uint8_t *buf, size_t len, const struct validate_target *t, struct verdict *v,
      struct image *ret_image)
{
	const struct catalog_board *board;
	const struct catalog_mcu *mcu;
	const char *name, *err = NULL;
	struct image img = {0};
	uint32_t app_start, expected_base, place = 0;
	uint64_t flash_end, end;
	bool boot2, has_boot2, link_reported = false;
	size_t vt_off;
	char want[48];
	int r;

	*v = (struct verdict){0};
	if (!t || !t->board || !t->board->mcu)
		return -EINVAL;
	board = t->board;
	mcu = board->mcu;
	name = t->file_name && *t->file_name ? t->file_name : "the image";
	app_start = t->app_start ? t->app_start : board->app_start;
	flash_end = (uint64_t)mcu->flash_base + mcu->flash_size;
	boot2 = mcu->family == CATALOG_FAMILY_RP2040 &&
		app_start == mcu->flash_base + RP2040_BOOT2_SIZE;
	expected_base = boot2 ? mcu->flash_base : app_start;

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
	place = img.has_load_address ? img.load_address : expected_base;
	v->load_address = place;
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

	if (img.format == IMAGE_FORMAT_UF2 && mcu->family != CATALOG_FAMILY_RP2040)
		add_reason(v,
			   "%s is a UF2 file, which only RP2040 boards take: %s needs the .bin "
			   "of the build",
			   name, board->title);
	offset_name(mcu, app_start, want, sizeof(want));
	if (img.has_load_address && place != expected_base) {
		add_reason(v,
			   "%s is linked for 0x%08" PRIx32 " but %s needs it at 0x%08" PRIx32
			   ": rebuild with Bootloader offset %s",
			   name, place, board->title, expected_base, want);
		link_reported = true;
	}

	end = (uint64_t)place + img.size;
	if (place >= mcu->flash_base && place < flash_end && end > flash_end)
		add_reason(v,
			   "%s is %zu bytes but only %" PRIu64 " bytes of flash follow 0x%08" PRIx32
			   " on %s: it cannot fit; disable features in the build or check the "
			   "board variant",
			   name, img.size, flash_end - place, place, board->title);
	else if (!link_reported && (place < mcu->flash_base || place >= flash_end))
		add_reason(v,
			   "%s loads at 0x%08" PRIx32 ", outside the flash of %s (0x%08" PRIx32
			   "-0x%08" PRIx32 ")",
			   name, place, board->title, mcu->flash_base, (uint32_t)(flash_end - 1));

	/* Where the vector table is inside the image: after boot2 in the RP2040 "No
	 * bootloader" layout, else at the start. */
	has_boot2 = img.size >= RP2040_BOOT2_SIZE && rp2040_boot2_valid(img.data);
	vt_off = boot2 && (link_reported || place == mcu->flash_base) ? RP2040_BOOT2_SIZE : 0;
	if (boot2 && !link_reported && place == mcu->flash_base && !has_boot2) {
		uint32_t base;

		/* a .bin with its vector table at offset 0 was built for another layout: name it */
		if (!img.has_load_address && img.size >= 8 && sp_in_ram(mcu, get_le32(img.data)) &&
		    infer_link_base(mcu, app_start, img.data, img.size, &base) &&
		    base != mcu->flash_base + RP2040_BOOT2_SIZE) {
			char got[48];

			offset_name(mcu, base, got, sizeof(got));
			add_reason(v,
				   "%s is linked for 0x%08" PRIx32 " (%s) but %s needs a "
				   "\"No bootloader\" build (boot2 at 0x%08" PRIx32
				   "): rebuild with "
				   "Bootloader offset %s, or set app_start = 0x%08" PRIx32
				   " in the profile if the board runs Katapult",
				   name, base, got, board->title, mcu->flash_base, want, base);
			link_reported = true;
		} else {
			add_reason(v,
				   "%s has no valid RP2040 boot2 stage at 0x%08" PRIx32 " (CRC "
				   "mismatch): the bootrom will not start it; rebuild with "
				   "Bootloader offset %s",
				   name, mcu->flash_base, want);
		}
		vt_off = link_reported ? 0 : RP2040_BOOT2_SIZE;
	} else if (link_reported && boot2 && !has_boot2) {
		vt_off = 0;
	}
	check_vectors(&img, t, name, vt_off, (uint32_t)(place + vt_off), link_reported, v);
	check_klipper(&img, t, name, v);
done:
	v->accepted = v->n_reasons == 0;
	if (v->accepted && ret_image) {
		img.has_load_address = true;
		img.load_address = place;
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

int
validate_command(int argc, char **argv)
{
	static const struct option options[] = {
	    {"board", required_argument, NULL, 'b'},  {"profile", required_argument, NULL, 'p'},
	    {"config", required_argument, NULL, 'c'}, {"json", no_argument, NULL, 'j'},
	    {"help", no_argument, NULL, 'h'},	      {0},
	};
	const char *board_name = NULL, *profile_name = NULL, *config_path = NULL, *path, *base;
	struct validate_target t = {.interface = CONFIG_INTERFACE_USB};
	struct config *cfg = NULL;
	struct verdict v;
	uint8_t *data = NULL;
	size_t size = 0;
	bool json = false;
	int c, r, code = 2;

	optind = 0; /* glibc: full re-initialisation, the command may run more than once */
	opterr = 0;
	while ((c = getopt_long(argc, argv, "+b:p:c:jh", options, NULL)) >= 0) {
		switch (c) {
		case 'b':
			board_name = optarg;
			break;
		case 'p':
			profile_name = optarg;
			break;
		case 'c':
			config_path = optarg;
			break;
		case 'j':
			json = true;
			break;
		case 'h':
			return usage(stdout, 0);
		default:
			fprintf(stderr, "validate: unknown or incomplete option\n");
			return usage(stderr, 2);
		}
	}
	if (optind != argc - 1 || !!board_name == !!profile_name)
		return usage(stderr, 2);
	path = argv[optind];

	if (board_name) {
		t.board = catalog_find(board_name);
		if (!t.board) {
			fprintf(stderr, "validate: unknown board '%s'\n", board_name);
			return 2;
		}
	} else {
		const struct config_profile *p;
		char *errors = NULL;

		if (!config_path && access(DEFAULT_CONFIG, F_OK) == 0)
			config_path = DEFAULT_CONFIG;
		r = config_load(config_path, NULL, &cfg, &errors);
		if (r < 0) {
			fprintf(stderr, "validate: cannot load %s: %s\n",
				config_path ? config_path : "the built-in configuration",
				errors ? errors : strerror(-r));
			free(errors);
			return 2;
		}
		p = config_find_profile(cfg, profile_name);
		if (!p) {
			fprintf(stderr, "validate: no profile '%s' in %s\n", profile_name,
				config_path ? config_path : "the built-in configuration");
			goto out;
		}
		if (!p->match.board) {
			fprintf(stderr,
				"validate: profile '%s' names no board (match.board): use "
				"--board\n",
				profile_name);
			goto out;
		}
		t.board = p->match.board;
		t.interface = p->interface;
		t.app_start = p->has_app_start ? p->app_start : 0;
	}

	r = read_file(path, IMAGE_MAX_SIZE + 1, &data, &size);
	if (r == -EFBIG) {
		fprintf(stderr, "validate: %s is larger than 16 MiB\n", path);
		goto out;
	}
	if (r < 0) {
		fprintf(stderr, "validate: cannot read %s: %s\n", path, strerror(-r));
		goto out;
	}
	base = strrchr(path, '/');
	t.file_name = base ? base + 1 : path;
	r = validate_image(data, size, &t, &v);
	if (r < 0) {
		fprintf(stderr, "validate: %s\n", strerror(-r));
		goto out;
	}
	if (json) {
		char *s = verdict_to_json(&v);

		printf("%s\n", s);
		free(s);
	} else {
		print_verdict(&v, t.file_name, t.board);
	}
	fflush(stdout);
	code = v.accepted ? 0 : 1;
	verdict_done(&v);
out:
	free(data);
	config_free(cfg);
	return code;
}
