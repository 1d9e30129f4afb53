/* SPDX-License-Identifier: GPL-2.0-or-later */
/* proto/klipper: Klipper message blocks, VLQ, format strings and the dictionary (see
 * klipper.h for what upstream does). Pure functions, no I/O. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/klipper.h"

uint16_t
klipper_crc16(const uint8_t *data, size_t len)
{
	uint16_t crc = 0xffff;

	/* msgproto.py crc16_ccitt: data ^= crc & 0xff; data ^= (data & 0x0f) << 4;
	 * crc = ((data << 8) | (crc >> 8)) ^ (data >> 4) ^ (data << 3) */
	for (size_t i = 0; i < len; i++) {
		uint8_t b = (uint8_t)(data[i] ^ (crc & 0xff));

		b = (uint8_t)(b ^ (b << 4));
		crc = (uint16_t)(((unsigned)b << 8 | crc >> 8) ^ (unsigned)(b >> 4) ^
				 ((unsigned)b << 3));
	}
	return crc;
}

int
klipper_vlq_encode(uint32_t v, uint8_t *buf, size_t len)
{
	int32_t sv = (int32_t)v;
	int n;

	/* src/command.c encode_int: the byte count from the signed value's range */
	if (sv < (3L << 5) && sv >= -(1L << 5))
		n = 1;
	else if (sv < (3L << 12) && sv >= -(1L << 12))
		n = 2;
	else if (sv < (3L << 19) && sv >= -(1L << 19))
		n = 3;
	else if (sv < (3L << 26) && sv >= -(1L << 26))
		n = 4;
	else
		n = 5;
	if (len < (size_t)n)
		return -ENOBUFS;
	for (int i = 0; i < n; i++) {
		unsigned shift = (unsigned)(7 * (n - 1 - i));
		uint8_t b = (uint8_t)((v >> shift) & 0x7f);

		/* msgproto.py shifts the signed value: a negative number's top group is
		 * all ones (0xff), where src/command.c would send 0x8f; both decode the same */
		if (shift == 28 && sv < 0)
			b |= 0x70;

		buf[i] = i == n - 1 ? b : (uint8_t)(b | 0x80);
	}
	return n;
}

int
klipper_vlq_decode(const uint8_t *buf, size_t len, uint32_t *ret)
{
	size_t i = 0;
	uint8_t c;
	uint32_t v;

	if (len == 0)
		return -EBADMSG;
	c = buf[i++];
	v = c & 0x7fu;
	/* parse_int: a first byte 0x60..0x7f (or with bit 7) carries a negative number */
	if ((c & 0x60) == 0x60)
		v |= (uint32_t)-0x20;
	while (c & 0x80) {
		if (i >= len || i >= KLIPPER_VLQ_MAX)
			return -EBADMSG;
		c = buf[i++];
		v = (v << 7) | (c & 0x7fu);
	}
	*ret = v;
	return (int)i;
}

int
klipper_block_encode(uint8_t seq, const uint8_t *payload, size_t payload_len, uint8_t *buf,
		     size_t len)
{
	size_t total = payload_len + KLIPPER_MESSAGE_MIN;
	uint16_t crc;

	if (payload_len > KLIPPER_PAYLOAD_MAX)
		return -EMSGSIZE;
	if (len < total)
		return -ENOBUFS;
	buf[0] = (uint8_t)total;
	buf[1] = (uint8_t)(KLIPPER_DEST | (seq & KLIPPER_SEQ_MASK));
	if (payload_len)
		memmove(buf + 2, payload, payload_len);
	crc = klipper_crc16(buf, total - 3);
	buf[total - 3] = (uint8_t)(crc >> 8);
	buf[total - 2] = (uint8_t)crc;
	buf[total - 1] = KLIPPER_SYNC;
	return (int)total;
}

/* Discard up to and including the next sync byte (command_find_block's need_sync). */
static int
skip_to_sync(const uint8_t *buf, size_t len)
{
	const uint8_t *s;

	if (buf[0] == KLIPPER_SYNC)
		return -1;
	s = memchr(buf, KLIPPER_SYNC, len);
	return s ? -(int)(s - buf + 1) : -(int)(len > INT32_MAX ? INT32_MAX : len);
}

int
klipper_block_find(const uint8_t *buf, size_t len, struct klipper_block *ret)
{
	size_t msglen;
	uint16_t crc;

	if (len < KLIPPER_MESSAGE_MIN)
		return 0;
	msglen = buf[0];
	if (msglen < KLIPPER_MESSAGE_MIN || msglen > KLIPPER_MESSAGE_MAX ||
	    (buf[1] & ~KLIPPER_SEQ_MASK) != KLIPPER_DEST)
		return skip_to_sync(buf, len);
	if (len < msglen)
		return 0;
	crc = klipper_crc16(buf, msglen - 3);
	if (buf[msglen - 1] != KLIPPER_SYNC || buf[msglen - 3] != (uint8_t)(crc >> 8) ||
	    buf[msglen - 2] != (uint8_t)crc)
		return skip_to_sync(buf, len);
	ret->seq = buf[1] & KLIPPER_SEQ_MASK;
	ret->payload = buf + 2;
	ret->payload_len = msglen - KLIPPER_MESSAGE_MIN;
	return (int)msglen;
}

static const struct {
	const char *text;
	enum klipper_ptype type;
} type_names[] = {
    {"%u", KLIPPER_PT_UINT32},		 {"%i", KLIPPER_PT_INT32},   {"%hu", KLIPPER_PT_UINT16},
    {"%hi", KLIPPER_PT_INT16},		 {"%c", KLIPPER_PT_BYTE},    {"%s", KLIPPER_PT_STRING},
    {"%.*s", KLIPPER_PT_PROGMEM_BUFFER}, {"%*s", KLIPPER_PT_BUFFER},
};

/* Copy the word [s, e) into out (size KLIPPER_NAME_MAX): 0 or -EINVAL when empty/too long. */
static int
copy_word(const char *s, const char *e, char *out)
{
	size_t n = (size_t)(e - s);

	if (n == 0 || n >= KLIPPER_NAME_MAX)
		return -EINVAL;
	memcpy(out, s, n);
	out[n] = '\0';
	return 0;
}

static int
parse_type(const char *s, const char *e, enum klipper_ptype *ret)
{
	for (size_t i = 0; i < sizeof(type_names) / sizeof(type_names[0]); i++)
		if (strlen(type_names[i].text) == (size_t)(e - s) &&
		    memcmp(type_names[i].text, s, (size_t)(e - s)) == 0) {
			*ret = type_names[i].type;
			return 0;
		}
	return -EINVAL;
}

/* msgproto.py lookup_output_params: an output() format is printf-like ("hello %u"); each
 * '%' that is not "%%" starts the shortest type name that matches. */
static int
output_parse(const char *format, struct klipper_msgfmt *ret)
{
	snprintf(ret->name, sizeof(ret->name), "#output");
	ret->n_params = 0;
	for (const char *p = strchr(format, '%'); p; p = strchr(p + 1, '%')) {
		size_t k;

		if (p[1] == '%') {
			p++;
			continue;
		}
		if (ret->n_params >= KLIPPER_MAX_PARAMS)
			return -EINVAL;
		for (k = 2; k <= 5; k++)
			if (strnlen(p, k) == k &&
			    parse_type(p, p + k, &ret->params[ret->n_params].type) == 0)
				break;
		if (k > 5)
			return -EINVAL;
		snprintf(ret->params[ret->n_params].name, KLIPPER_NAME_MAX, "%u", ret->n_params);
		ret->n_params++;
	}
	return 0;
}

int
klipper_format_parse(const char *format, struct klipper_msgfmt *ret)
{
	const char *p = format;

	ret->n_params = 0;
	/* msgproto.py lookup_params: msgformat.split(), then each "name=fmt" */
	while (*p == ' ')
		p++;
	{
		const char *e = p;

		while (*e && *e != ' ')
			e++;
		if (copy_word(p, e, ret->name) < 0)
			return -EINVAL;
		p = e;
	}
	for (;;) {
		const char *w, *eq, *e;
		struct klipper_param *par;

		while (*p == ' ')
			p++;
		if (!*p)
			return 0;
		w = p;
		while (*p && *p != ' ')
			p++;
		e = p;
		eq = memchr(w, '=', (size_t)(e - w));
		if (!eq || ret->n_params >= KLIPPER_MAX_PARAMS)
			return -EINVAL;
		par = &ret->params[ret->n_params];
		if (copy_word(w, eq, par->name) < 0 || parse_type(eq + 1, e, &par->type) < 0)
			return -EINVAL;
		ret->n_params++;
	}
}

static bool
is_int_type(enum klipper_ptype t)
{
	return t == KLIPPER_PT_UINT32 || t == KLIPPER_PT_INT32 || t == KLIPPER_PT_UINT16 ||
	       t == KLIPPER_PT_INT16 || t == KLIPPER_PT_BYTE;
}

int
klipper_encode(const struct klipper_msgfmt *f, const struct klipper_value *vals, uint8_t *buf,
	       size_t len)
{
	size_t pos = 0;
	int r = klipper_vlq_encode((uint32_t)f->id, buf, len);

	if (r < 0)
		return r;
	pos = (size_t)r;
	for (unsigned i = 0; i < f->n_params; i++) {
		const struct klipper_value *v = &vals[i];

		if (is_int_type(f->params[i].type)) {
			r = klipper_vlq_encode(v->u, buf + pos, len - pos);
			if (r < 0)
				return r;
			pos += (size_t)r;
			continue;
		}
		if (v->len > 255)
			return -EINVAL;
		if (len - pos < 1 + v->len)
			return -ENOBUFS;
		buf[pos++] = (uint8_t)v->len;
		if (v->len)
			memcpy(buf + pos, v->data, v->len);
		pos += v->len;
	}
	return (int)pos;
}

int
klipper_param_index(const struct klipper_msgfmt *f, const char *name)
{
	for (unsigned i = 0; i < f->n_params; i++)
		if (strcmp(f->params[i].name, name) == 0)
			return (int)i;
	return -ENOENT;
}

int
klipper_encode_named(const struct klipper_msgfmt *f, const struct klipper_arg *args, size_t n_args,
		     uint8_t *buf, size_t len)
{
	struct klipper_value vals[KLIPPER_MAX_PARAMS] = {{0}};
	bool have[KLIPPER_MAX_PARAMS] = {false};

	for (size_t a = 0; a < n_args; a++) {
		int i = klipper_param_index(f, args[a].name);

		if (i < 0)
			return -EINVAL;
		vals[i] = args[a].v;
		have[i] = true;
	}
	for (unsigned i = 0; i < f->n_params; i++)
		if (!have[i])
			return -ENOENT;
	return klipper_encode(f, vals, buf, len);
}

int
klipper_decode_id(const uint8_t *buf, size_t len, int32_t *ret_id)
{
	uint32_t v;
	int r = klipper_vlq_decode(buf, len, &v);

	if (r > 0)
		*ret_id = (int32_t)v;
	return r;
}

int
klipper_decode(const struct klipper_msgfmt *f, const uint8_t *buf, size_t len,
	       struct klipper_value *vals)
{
	size_t pos = 0;

	for (unsigned i = 0; i < f->n_params; i++) {
		enum klipper_ptype t = f->params[i].type;

		vals[i] = (struct klipper_value){0};
		if (is_int_type(t)) {
			int r = klipper_vlq_decode(buf + pos, len - pos, &vals[i].u);

			if (r < 0)
				return r;
			pos += (size_t)r;
			/* PT_uint16/PT_byte carry fewer bits: keep what the type holds, like
			 * the MCU does when it stores the parsed value */
			if (t == KLIPPER_PT_UINT16)
				vals[i].u &= 0xffffu;
			else if (t == KLIPPER_PT_BYTE)
				vals[i].u &= 0xffu;
			else if (t == KLIPPER_PT_INT16)
				vals[i].u = (uint32_t)(int32_t)(int16_t)(vals[i].u & 0xffffu);
			continue;
		}
		if (pos >= len || buf[pos] > len - pos - 1)
			return -EBADMSG;
		vals[i].len = buf[pos];
		vals[i].data = buf + pos + 1;
		pos += 1 + vals[i].len;
	}
	return (int)pos;
}

/* ---- dictionary ---- */

void
klipper_dict_init(struct klipper_dict *d)
{
	*d = (struct klipper_dict){0};
	/* msgproto.py DefaultMessages */
	(void)klipper_dict_add_message(d, KLIPPER_ID_IDENTIFY_RESPONSE, KLIPPER_KIND_RESPONSE,
				       "identify_response offset=%u data=%.*s");
	(void)klipper_dict_add_message(d, KLIPPER_ID_IDENTIFY, KLIPPER_KIND_COMMAND,
				       "identify offset=%u count=%c");
}

void
klipper_dict_free(struct klipper_dict *d)
{
	for (size_t i = 0; i < d->n_msgs; i++)
		free(d->msgs[i].format);
	for (size_t i = 0; i < d->n_enums; i++) {
		free(d->enums[i].enumeration);
		free(d->enums[i].name);
	}
	for (size_t i = 0; i < d->n_constants; i++) {
		free(d->constants[i].name);
		free(d->constants[i].value);
	}
	free(d->msgs);
	free(d->enums);
	free(d->constants);
	free(d->version);
	*d = (struct klipper_dict){0};
}

static int
grow(void **arr, size_t n, size_t elem)
{
	void *p;

	/* grow in powers of two: n is the count before the append */
	if (n != 0 && (n & (n - 1)) != 0)
		return 0;
	p = realloc(*arr, (n ? 2 * n : 1) * elem);
	if (!p)
		return -ENOMEM;
	*arr = p;
	return 0;
}

int
klipper_dict_add_message(struct klipper_dict *d, int32_t id, enum klipper_kind kind,
			 const char *format)
{
	struct klipper_msgfmt f = {0};

	/* a 2-byte VLQ id covers -0x1000..0x2fff; real dictionaries use 0..~150 */
	if (id < -0x1000 || id >= 0x3000 ||
	    (kind == KLIPPER_KIND_OUTPUT ? output_parse(format, &f)
					 : klipper_format_parse(format, &f)) < 0)
		return -EINVAL;
	f.id = id;
	f.kind = kind;
	f.format = strdup(format);
	if (!f.format || grow((void **)&d->msgs, d->n_msgs, sizeof(*d->msgs)) < 0) {
		free(f.format);
		return -ENOMEM;
	}
	d->msgs[d->n_msgs++] = f;
	return 0;
}

int
klipper_dict_add_enum(struct klipper_dict *d, const char *enumeration, const char *name,
		      int32_t value)
{
	struct klipper_enum e = {strdup(enumeration), strdup(name), value};

	if (!e.enumeration || !e.name ||
	    grow((void **)&d->enums, d->n_enums, sizeof(*d->enums)) < 0) {
		free(e.enumeration);
		free(e.name);
		return -ENOMEM;
	}
	d->enums[d->n_enums++] = e;
	return 0;
}

int
klipper_dict_add_constant(struct klipper_dict *d, const char *name, const char *value)
{
	struct klipper_constant c = {strdup(name), strdup(value)};

	if (!c.name || !c.value ||
	    grow((void **)&d->constants, d->n_constants, sizeof(*d->constants)) < 0) {
		free(c.name);
		free(c.value);
		return -ENOMEM;
	}
	d->constants[d->n_constants++] = c;
	return 0;
}

int
klipper_dict_set_version(struct klipper_dict *d, const char *version)
{
	char *v = strdup(version);

	if (!v)
		return -ENOMEM;
	free(d->version);
	d->version = v;
	return 0;
}

const struct klipper_msgfmt *
klipper_dict_by_name(const struct klipper_dict *d, const char *name)
{
	/* later entries win, like msgproto's messages_by_name dict update */
	for (size_t i = d->n_msgs; i-- > 0;)
		if (strcmp(d->msgs[i].name, name) == 0)
			return &d->msgs[i];
	return NULL;
}

const struct klipper_msgfmt *
klipper_dict_by_id(const struct klipper_dict *d, int32_t id, enum klipper_kind kind)
{
	/* responses and output() formats share the MCU -> host id space */
	bool to_host = kind != KLIPPER_KIND_COMMAND;

	for (size_t i = d->n_msgs; i-- > 0;)
		if (d->msgs[i].id == id && (d->msgs[i].kind != KLIPPER_KIND_COMMAND) == to_host)
			return &d->msgs[i];
	return NULL;
}

const char *
klipper_dict_constant(const struct klipper_dict *d, const char *name)
{
	for (size_t i = 0; i < d->n_constants; i++)
		if (strcmp(d->constants[i].name, name) == 0)
			return d->constants[i].value;
	return NULL;
}

/* lookup_params: name == enum_name or name.endswith('_' + enum_name) */
static bool
param_uses_enum(const char *param, const char *enumeration)
{
	size_t pl = strlen(param), el = strlen(enumeration);

	if (strcmp(param, enumeration) == 0)
		return true;
	return pl > el + 1 && param[pl - el - 1] == '_' &&
	       strcmp(param + pl - el, enumeration) == 0;
}

int
klipper_dict_enum_value(const struct klipper_dict *d, const char *param, const char *sym,
			uint32_t *ret)
{
	for (size_t i = 0; i < d->n_enums; i++)
		if (param_uses_enum(param, d->enums[i].enumeration) &&
		    strcmp(d->enums[i].name, sym) == 0) {
			*ret = (uint32_t)d->enums[i].value;
			return 0;
		}
	return -ENOENT;
}
