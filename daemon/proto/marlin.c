/* SPDX-License-Identifier: GPL-2.0-or-later */
/* proto/marlin: Marlin's serial replies (see marlin.h). */
#include "proto/marlin.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#define KEY_FIRMWARE "FIRMWARE_NAME:"

/* The keys of the M115 line in the order M115.cpp prints them. */
static const char *const m115_keys[] = {
    "SOURCE_CODE_URL:", "PROTOCOL_VERSION:", "MACHINE_TYPE:", "EXTRUDER_COUNT:", "UUID:",
};

static bool
starts(const char *s, const char *prefix)
{
	return strncmp(s, prefix, strlen(prefix)) == 0;
}

enum marlin_line
marlin_line_kind(const char *line)
{
	while (*line == ' ')
		line++;
	if (strcmp(line, "ok") == 0 || starts(line, "ok ") || starts(line, "ok\r"))
		return MARLIN_LINE_OK;
	if (starts(line, "echo:busy:") || starts(line, "busy:"))
		return MARLIN_LINE_BUSY;
	if (starts(line, "Error:") || starts(line, "!!"))
		return MARLIN_LINE_ERROR;
	if (starts(line, "Resend:") || starts(line, "rs "))
		return MARLIN_LINE_RESEND;
	return MARLIN_LINE_OTHER;
}

/* " KEY:" of a known key at or after `from`, the earliest one; NULL when none follows. */
static const char *
next_key(const char *from)
{
	const char *best = NULL;

	for (size_t i = 0; i < sizeof(m115_keys) / sizeof(m115_keys[0]); i++) {
		const char *p = from;

		while ((p = strstr(p, m115_keys[i]))) {
			if (p > from && p[-1] == ' ')
				break;
			p++;
		}
		if (p && (!best || p < best))
			best = p;
	}
	return best;
}

/* Copies [from, to) without the blanks around it; truncates to the field. */
static void
put(char *dst, size_t size, const char *from, const char *to)
{
	size_t n;

	while (from < to && (*from == ' ' || *from == '\t'))
		from++;
	while (to > from && (to[-1] == ' ' || to[-1] == '\t' || to[-1] == '\r'))
		to--;
	n = (size_t)(to - from);
	if (n >= size)
		n = size - 1;
	memcpy(dst, from, n);
	dst[n] = 0;
}

/* "Marlin 2.1.2.1 (Dec  5 2026 06:00:00)": name, version and build date. */
static int
firmware_field(struct marlin_info *r, const char *v, const char *end)
{
	const char *sp, *paren = memchr(v, '(', (size_t)(end - v));
	const char *name_end = paren ? paren : end;

	if (end - v < 6 || strncmp(v, "Marlin", 6) != 0)
		return -EPROTONOSUPPORT;
	put(r->firmware, sizeof(r->firmware), v, name_end);
	sp = memchr(r->firmware, ' ', strlen(r->firmware));
	if (sp)
		put(r->version, sizeof(r->version), sp + 1, r->firmware + strlen(r->firmware));
	if (paren) {
		const char *close = memchr(paren, ')', (size_t)(end - paren));

		if (close)
			put(r->build, sizeof(r->build), paren + 1, close);
	}
	return 0;
}

int
marlin_parse_m115(const char *line, struct marlin_info *ret)
{
	struct marlin_info r;
	const char *p = line, *end;
	int e;

	while (*p == ' ')
		p++;
	if (starts(p, "echo:"))
		p += 5;
	if (!starts(p, KEY_FIRMWARE))
		return -EINVAL;
	memset(&r, 0, sizeof(r));
	p += strlen(KEY_FIRMWARE);
	end = next_key(p);
	e = firmware_field(&r, p, end ? end : p + strlen(p));
	if (e < 0)
		return e;
	while (end) {
		const char *key = end, *v = strchr(key, ':') + 1;
		const char *next = next_key(v);
		const char *vend = next ? next : v + strlen(v);

		if (starts(key, "SOURCE_CODE_URL:"))
			put(r.url, sizeof(r.url), v, vend);
		else if (starts(key, "PROTOCOL_VERSION:"))
			put(r.protocol, sizeof(r.protocol), v, vend);
		else if (starts(key, "MACHINE_TYPE:"))
			put(r.machine, sizeof(r.machine), v, vend);
		else if (starts(key, "UUID:"))
			put(r.uuid, sizeof(r.uuid), v, vend);
		else if (starts(key, "EXTRUDER_COUNT:")) {
			unsigned n = 0;

			for (const char *c = v; c < vend && *c >= '0' && *c <= '9' && n < 1000; c++)
				n = n * 10 + (unsigned)(*c - '0');
			r.extruders = n;
		}
		end = next;
	}
	*ret = r;
	return 0;
}

static bool
parse_u64(const char **p, uint64_t *ret)
{
	uint64_t v = 0;
	const char *s = *p;

	if (*s < '0' || *s > '9')
		return false;
	for (; *s >= '0' && *s <= '9'; s++) {
		if (v > (UINT64_MAX - 9) / 10)
			return false;
		v = v * 10 + (uint64_t)(*s - '0');
	}
	*p = s;
	*ret = v;
	return true;
}

int
marlin_parse_sd_status(const char *line, bool *printing, uint64_t *pos, uint64_t *size)
{
	const char *p = line;
	uint64_t a, b;

	while (*p == ' ')
		p++;
	if (starts(p, "echo:"))
		p += 5;
	if (starts(p, "Not SD printing")) {
		*printing = false;
		*pos = *size = 0;
		return 0;
	}
	if (!starts(p, "SD printing byte "))
		return -ENOMSG;
	p += strlen("SD printing byte ");
	if (!parse_u64(&p, &a) || *p++ != '/' || !parse_u64(&p, &b))
		return -ENOMSG;
	*printing = true;
	*pos = a;
	*size = b;
	return 0;
}

int
marlin_image_info(const uint8_t *img, size_t len, struct marlin_info *ret)
{
	static const char key[] = KEY_FIRMWARE "Marlin ";
	const uint8_t *p = img, *end = img + len;

	while (p < end) {
		const uint8_t *hit = memmem(p, (size_t)(end - p), key, sizeof(key) - 1);
		char line[512];
		size_t n;

		if (!hit)
			break;
		/* the literal ends at its NUL; one that does not within the buffer is no string */
		n = strnlen((const char *)hit, (size_t)(end - hit));
		if (n < (size_t)(end - hit) && n < sizeof(line)) {
			memcpy(line, hit, n + 1);
			if (marlin_parse_m115(line, ret) == 0)
				return 0;
		}
		p = hit + 1;
	}
	return -ENOENT;
}
