/* SPDX-License-Identifier: GPL-2.0-or-later */
/* kdict: find and read the Klipper data dictionary inside a firmware image (see kdict.h).
 *
 * Klipper's build compresses the dictionary with zlib at level 9 and links the result as a
 * byte array, so the image holds a complete zlib stream (RFC 1950 header, usually 78 DA)
 * somewhere in its read-only data. There is no marker around it: we try every position
 * that carries a valid zlib header, inflate with a size cap and keep the first stream that
 * parses as a Klipper dictionary. */
#include "image/kdict.h"

#include <errno.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#define ZLIB_CONST /* next_in is const: the image is never written */
#include <zlib.h>

#include "util.h"

/* Real dictionaries are tens of KiB; the cap bounds the work a hostile stream can cause. */
#define KDICT_MAX_INFLATED (2u << 20)
#define KDICT_MAX_ATTEMPTS 4096
/* Total inflated bytes over all attempts: many small zlib bombs must not cost seconds. */
#define KDICT_BUDGET (32u << 20)

/* RFC 1950 §2.2: CM = 8 (deflate), CINFO <= 7, no preset dictionary, FCHECK multiple of 31. */
static bool
zlib_header_at(const uint8_t *p)
{
	return (p[0] & 0x0F) == 8 && (p[0] >> 4) <= 7 && !(p[1] & 0x20) &&
	       ((unsigned)p[0] << 8 | p[1]) % 31 == 0;
}

/* Inflate one complete zlib stream; NULL unless it ends cleanly (checksum included). */
static char *
inflate_at(const uint8_t *p, size_t avail, size_t *ret_len, size_t *ret_used)
{
	size_t cap = 16384, out = 0;
	char *buf = xmalloc(cap + 1);
	z_stream zs = {0};
	int z = Z_OK;

	if (inflateInit(&zs) != Z_OK) {
		free(buf);
		return NULL;
	}
	zs.next_in = p;
	zs.avail_in = avail > UINT32_MAX ? UINT32_MAX : (uInt)avail;
	while (z == Z_OK) {
		if (out == cap) {
			if (cap >= KDICT_MAX_INFLATED)
				break;
			cap *= 2;
			buf = xreallocarray(buf, cap + 1, 1);
		}
		zs.next_out = (Bytef *)buf + out;
		zs.avail_out = (uInt)(cap - out);
		z = inflate(&zs, Z_NO_FLUSH);
		out = cap - zs.avail_out;
		/* Klipper writes the JSON without leading whitespace: stop at once otherwise */
		if (out > 0 && buf[0] != '{')
			break;
	}
	*ret_used = out;
	inflateEnd(&zs);
	if (z != Z_STREAM_END) {
		free(buf);
		return NULL;
	}
	buf[out] = '\0';
	*ret_len = out;
	return buf;
}

static bool
has_prefix_ci(const char *s, const char *prefix)
{
	return strncasecmp(s, prefix, strlen(prefix)) == 0;
}

/*
 * The transport a build talks over, from the constants its transport code declares (the
 * same rule is in docs/validation.md):
 *   CAN    - CANBUS_FREQUENCY, CANBUS_BRIDGE or RESERVE_PINS_CAN* (a USB-to-CAN bridge build
 *            is CAN: the host reaches the MCU through the CAN bus, not a USB serial port)
 *   serial - SERIAL_BAUD or RESERVE_PINS_serial*
 *   USB    - RESERVE_PINS_USB*
 * A build that declares both serial and USB markers, or none, is unknown.
 */
static enum kdict_interface
interface_from_config(struct json_object *config)
{
	bool can = false, serial = false, usb = false;

	json_object_object_foreach(config, key, val) {
		(void)val;
		if (strcasecmp(key, "CANBUS_FREQUENCY") == 0 ||
		    strcasecmp(key, "CANBUS_BRIDGE") == 0 || has_prefix_ci(key, "RESERVE_PINS_CAN"))
			can = true;
		else if (strcasecmp(key, "SERIAL_BAUD") == 0 ||
			 has_prefix_ci(key, "RESERVE_PINS_serial"))
			serial = true;
		else if (has_prefix_ci(key, "RESERVE_PINS_USB"))
			usb = true;
	}
	if (can)
		return KDICT_INTERFACE_CAN;
	if (serial && !usb)
		return KDICT_INTERFACE_SERIAL;
	if (usb && !serial)
		return KDICT_INTERFACE_USB;
	return KDICT_INTERFACE_UNKNOWN;
}

/* 1 = a Klipper dictionary, 0 = some other JSON or not JSON, -EBADMSG = Klipper but broken. */
static int
parse_dict(const char *text, size_t len, struct kdict *ret)
{
	struct json_tokener *tok;
	struct json_object *root, *app = NULL, *config = NULL, *commands = NULL, *v;
	struct kdict d = {0};
	bool klipper;
	int r = 0;

	while (len && (*text == ' ' || *text == '\n' || *text == '\r' || *text == '\t')) {
		text++;
		len--;
	}
	if (!len || *text != '{' || len > INT32_MAX)
		return 0;
	tok = json_tokener_new();
	root = json_tokener_parse_ex(tok, text, (int)len);
	json_tokener_free(tok);
	if (!root)
		return 0;
	if (!json_object_is_type(root, json_type_object))
		goto out;
	json_object_object_get_ex(root, "app", &app);
	json_object_object_get_ex(root, "config", &config);
	json_object_object_get_ex(root, "commands", &commands);
	/* older builds have no "app"; every build has "commands" and "config" */
	klipper = (app && json_object_is_type(app, json_type_string)) ||
		  (commands && json_object_is_type(commands, json_type_object) && config);
	if (!klipper)
		goto out;
	r = -EBADMSG;
	if (!config || !json_object_is_type(config, json_type_object) ||
	    !json_object_object_get_ex(config, "MCU", &v) ||
	    !json_object_is_type(v, json_type_string))
		goto out;
	snprintf(d.mcu, sizeof(d.mcu), "%s", json_object_get_string(v));
	if (json_object_object_get_ex(config, "CLOCK_FREQ", &v)) {
		int64_t f = json_object_get_int64(v);

		if (!json_object_is_type(v, json_type_int) || f < 0 || f > UINT32_MAX)
			goto out;
		d.clock_freq = (uint32_t)f;
	}
	if (json_object_object_get_ex(root, "version", &v)) {
		if (!json_object_is_type(v, json_type_string))
			goto out;
		snprintf(d.version, sizeof(d.version), "%s", json_object_get_string(v));
	}
	d.interface = interface_from_config(config);
	/* src/generic/usb_canbus.c: DECL_CONSTANT("CANBUS_BRIDGE", 1) */
	d.can_bridge = json_object_object_get_ex(config, "CANBUS_BRIDGE", NULL);
	*ret = d;
	r = 1;
out:
	json_object_put(root);
	return r;
}

int
kdict_find(const uint8_t *buf, size_t len, struct kdict *ret)
{
	unsigned attempts = 0;
	size_t used_total = 0;

	if (!buf || len < 2)
		return 0;
	for (size_t i = 0;
	     i + 2 <= len && attempts < KDICT_MAX_ATTEMPTS && used_total < KDICT_BUDGET; i++) {
		size_t n, used = 0;
		char *text;
		int r;

		if (!zlib_header_at(buf + i))
			continue;
		attempts++;
		text = inflate_at(buf + i, len - i, &n, &used);
		used_total += used;
		if (!text)
			continue;
		r = parse_dict(text, n, ret);
		free(text);
		if (r > 0)
			ret->offset = i;
		if (r != 0)
			return r;
	}
	return 0;
}

const char *
kdict_interface_to_string(enum kdict_interface i)
{
	static const char *const names[_KDICT_INTERFACE_MAX] = {
	    [KDICT_INTERFACE_UNKNOWN] = "unknown",
	    [KDICT_INTERFACE_USB] = "usb",
	    [KDICT_INTERFACE_SERIAL] = "serial",
	    [KDICT_INTERFACE_CAN] = "can",
	};

	if ((unsigned)i >= _KDICT_INTERFACE_MAX)
		return "unknown";
	return names[i];
}

int
kdict_inflate(const uint8_t *z, size_t len, char **ret, size_t *ret_len)
{
	size_t used = 0;

	if (!z || len < 2 || !zlib_header_at(z))
		return -EBADMSG;
	*ret = inflate_at(z, len, ret_len, &used);
	return *ret ? 0 : -EBADMSG;
}

/* fill_enumerations: "PA0": [0, 16] names PA0..PA15 = 0..15 (the root is the symbol without
 * its trailing digits, numbering continues from them); "spi1": 3 is one symbol. */
static int
add_enum_entry(struct klipper_dict *d, const char *enumeration, const char *sym,
	       struct json_object *val)
{
	char root[KLIPPER_NAME_MAX];
	size_t rl = strlen(sym);
	int64_t start, count, first = 0;

	if (json_object_is_type(val, json_type_int))
		return klipper_dict_add_enum(d, enumeration, sym,
					     (int32_t)json_object_get_int64(val));
	if (!json_object_is_type(val, json_type_array) || json_object_array_length(val) != 2 ||
	    rl >= sizeof(root))
		return -EBADMSG;
	start = json_object_get_int64(json_object_array_get_idx(val, 0));
	count = json_object_get_int64(json_object_array_get_idx(val, 1));
	if (count < 0 || count > 4096 || start < INT32_MIN || start > INT32_MAX - count)
		return -EBADMSG;
	while (rl && sym[rl - 1] >= '0' && sym[rl - 1] <= '9')
		rl--;
	memcpy(root, sym, rl);
	root[rl] = '\0';
	if (sym[rl])
		first = strtoll(sym + rl, NULL, 10);
	for (int64_t i = 0; i < count; i++) {
		char name[KLIPPER_NAME_MAX + 24];
		int r;

		int64_t num = first + i;

		snprintf(name, sizeof(name), "%s%" PRId64, root, num);
		r = klipper_dict_add_enum(d, enumeration, name, (int32_t)(start + i));
		if (r < 0)
			return r;
	}
	return 0;
}

static int
add_messages(struct klipper_dict *d, struct json_object *root, const char *key,
	     enum klipper_kind kind)
{
	struct json_object *obj;

	if (!json_object_object_get_ex(root, key, &obj))
		return 0;
	if (!json_object_is_type(obj, json_type_object))
		return -EBADMSG;
	json_object_object_foreach(obj, fmt, id) {
		int r;

		if (!json_object_is_type(id, json_type_int))
			return -EBADMSG;
		r = klipper_dict_add_message(d, (int32_t)json_object_get_int64(id), kind, fmt);
		if (r < 0)
			return r == -EINVAL ? -EBADMSG : r;
	}
	return 0;
}

static int
add_enums_and_config(struct klipper_dict *d, struct json_object *root)
{
	struct json_object *obj;
	int r;

	if (json_object_object_get_ex(root, "enumerations", &obj)) {
		if (!json_object_is_type(obj, json_type_object))
			return -EBADMSG;
		json_object_object_foreach(obj, ename, syms) {
			if (!json_object_is_type(syms, json_type_object))
				return -EBADMSG;
			json_object_object_foreach(syms, sym, val) {
				r = add_enum_entry(d, ename, sym, val);
				if (r < 0)
					return r;
			}
		}
	}
	if (json_object_object_get_ex(root, "config", &obj) &&
	    json_object_is_type(obj, json_type_object)) {
		json_object_object_foreach(obj, cname, cval) {
			r = klipper_dict_add_constant(d, cname, json_object_get_string(cval));
			if (r < 0)
				return r;
		}
	}
	if (json_object_object_get_ex(root, "version", &obj) &&
	    json_object_is_type(obj, json_type_string))
		return klipper_dict_set_version(d, json_object_get_string(obj));
	return 0;
}

int
kdict_to_klipper(const char *text, size_t len, struct klipper_dict *ret)
{
	struct json_tokener *tok;
	struct json_object *root;
	int r = -EBADMSG;

	if (!text || len > INT32_MAX)
		return -EBADMSG;
	tok = json_tokener_new();
	root = json_tokener_parse_ex(tok, text, (int)len);
	json_tokener_free(tok);
	if (!root)
		return -EBADMSG;
	if (json_object_is_type(root, json_type_object)) {
		r = add_messages(ret, root, "commands", KLIPPER_KIND_COMMAND);
		if (r == 0)
			r = add_messages(ret, root, "responses", KLIPPER_KIND_RESPONSE);
		if (r == 0)
			r = add_messages(ret, root, "output", KLIPPER_KIND_OUTPUT);
		if (r == 0)
			r = add_enums_and_config(ret, root);
	}
	json_object_put(root);
	return r;
}
