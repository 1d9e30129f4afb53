/* SPDX-License-Identifier: GPL-2.0-or-later */
/* config: strict loader of skrflash.conf into an immutable snapshot (see config.h).
 *
 * libconfig does the parsing; everything above the syntax is checked here, and every
 * problem is collected as one "FILE:LINE: key: what is wrong" line so that a single
 * --check-config run shows all of them. Keys are dotted libconfig paths ("profiles.[1].name"),
 * which config_lookup() understands, so a line can be traced back mechanically. */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <grp.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <syslog.h>
#include <unistd.h>

#include <libconfig.h>

#include "match.h"
#include "util.h"

#define CONFIG_MAX_FILE ((size_t)1024 * 1024)
#define CONFIG_NAME_MAX 64
#define CONFIG_STR_MAX 127 /* longest USB string a struct device can hold */
#define CONFIG_PATH_MAX 4096
#define KEY_MAX 256

#define DEFAULT_STATE_DIR "/var/lib/skrflash"
#define DEFAULT_RUNTIME_DIR "/run/skrflash"

struct error_line {
	unsigned line;
	unsigned seq; /* keeps the order of discovery within one line */
	char *text;
};

struct loader {
	const char *name; /* file name in messages */
	struct error_line *errors;
	unsigned n_errors;
	bool queue_dir_set;
};

/* one method per line, as added */
/* clang-format off */
static const char *const method_names[_CONFIG_METHOD_MAX] = {
    [CONFIG_METHOD_KATAPULT] = "katapult",
    [CONFIG_METHOD_DFU] = "dfu",
    [CONFIG_METHOD_SD] = "sd",
    [CONFIG_METHOD_UF2] = "uf2",
    [CONFIG_METHOD_LPC_DFU] = "lpc-dfu",
    [CONFIG_METHOD_MSC] = "msc", /* Marlin's SD card over USB (flash/msc.c) */
};
/* clang-format on */

static const char *const interface_names[_CONFIG_INTERFACE_MAX] = {
    [CONFIG_INTERFACE_USB] = "usb",
    [CONFIG_INTERFACE_SERIAL] = "serial",
    [CONFIG_INTERFACE_CAN] = "can",
};

static const char *const auto_names[] = {"hotplug", "queue"}; /* bit i = 1 << i */

static const struct {
	const char *name;
	int level;
} log_levels[] = {
    {"error", LOG_ERR}, {"warning", LOG_WARNING}, {"notice", LOG_NOTICE},
    {"info", LOG_INFO}, {"debug", LOG_DEBUG},
};

static const char *const root_keys[] = {
    "state_dir",  "queue_dir",	   "runtime_dir", "log_level", "max_jobs", "timeouts",
    "drop_group", "control_group", "profiles",	  "rescue",    "rejected", NULL,
};
static const char *const rescue_keys[] = {"device",    "baud",	"reset_line",
					  "boot_line", "board", NULL};
static const char *const timeout_keys[] = {"bootloader",  "boot",	 "step",
					   "leave_grace", "client_idle", NULL};
static const char *const rejected_keys[] = {"max_days", "max_mib", NULL};
static const char *const profile_keys[] = {
    "name",
    "match",
    "queue",
    "methods",
    "auto_flash",
    "stop_units",
    "moonraker",
    "moonraker_fail_open",
    "moonraker_api_key_file",
    "app_start",
    "interface",
    "power",
    "host",
    "octoprint",
    "allow_migration",
    NULL,
};
static const char *const power_keys[] = {"moonraker_device", "command", "off_seconds", "timeout",
					 NULL};
static const char *const host_names[_CONFIG_HOST_MAX] = {
    [CONFIG_HOST_KLIPPER] = "klipper",
    [CONFIG_HOST_OCTOPRINT] = "octoprint",
};
static const char *const octoprint_keys[] = {"url", "api_key_file", NULL};
static const char *const match_keys[] = {"board", "usb_id",  "serial", "port",
					 "mcu",	  "product", NULL};

static void loader_add(struct loader *l, unsigned line, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void
loader_add(struct loader *l, unsigned line, const char *key, const char *fmt, ...)
{
	char msg[512];
	struct error_line *e;
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	l->errors = xreallocarray(l->errors, l->n_errors + 1, sizeof(*l->errors));
	e = &l->errors[l->n_errors];
	e->line = line;
	e->seq = l->n_errors++;
	if (key)
		e->text = xasprintf("%s:%u: %s: %s\n", l->name, line, key, msg);
	else
		e->text = xasprintf("%s:%u: %s\n", l->name, line, msg);
}

static int
error_line_cmp(const void *a, const void *b)
{
	const struct error_line *x = a, *y = b;

	if (x->line != y->line)
		return x->line < y->line ? -1 : 1;
	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* All error lines in file order, as one malloc'd text; frees the list. */
static char *
loader_take_errors(struct loader *l)
{
	size_t len = 0, pos = 0;
	char *text;

	qsort(l->errors, l->n_errors, sizeof(*l->errors), error_line_cmp);
	for (unsigned i = 0; i < l->n_errors; i++)
		len += strlen(l->errors[i].text);
	text = xmalloc(len + 1);
	for (unsigned i = 0; i < l->n_errors; i++) {
		size_t n = strlen(l->errors[i].text);

		memcpy(text + pos, l->errors[i].text, n);
		pos += n;
		free(l->errors[i].text);
	}
	text[pos] = '\0';
	free(l->errors);
	l->errors = NULL;
	l->n_errors = 0;
	return text;
}

static void
append(char *buf, size_t len, size_t *pos, const char *s)
{
	size_t n = strlen(s);

	if (*pos + 1 >= len)
		return;
	if (n > len - 1 - *pos)
		n = len - 1 - *pos;
	memcpy(buf + *pos, s, n);
	*pos += n;
	buf[*pos] = '\0';
}

/* Dotted libconfig path of a setting: "profiles.[1].match.board". */
static void
setting_path(const config_setting_t *s, char *buf, size_t len)
{
	const config_setting_t *chain[32];
	size_t depth = 0, pos = 0;

	buf[0] = '\0';
	for (; s && !config_setting_is_root(s) && depth < ELEMENTSOF(chain);
	     s = config_setting_parent(s))
		chain[depth++] = s;
	while (depth > 0) {
		const config_setting_t *e = chain[--depth];

		if (pos > 0)
			append(buf, len, &pos, ".");
		if (config_setting_name(e)) {
			append(buf, len, &pos, config_setting_name(e));
		} else {
			char idx[16];

			snprintf(idx, sizeof(idx), "[%d]", config_setting_index(e));
			append(buf, len, &pos, idx);
		}
	}
}

static void err_at(struct loader *l, const config_setting_t *s, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
err_at(struct loader *l, const config_setting_t *s, const char *fmt, ...)
{
	char key[KEY_MAX];
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	setting_path(s, key, sizeof(key));
	loader_add(l, config_setting_source_line(s), key, "%s", msg);
}

/* A problem with key `name` of group `grp` that is absent: reported at the group. */
static void
err_missing(struct loader *l, const config_setting_t *grp, const char *name, const char *what)
{
	char key[KEY_MAX];

	setting_path(grp, key, sizeof(key));
	loader_add(l, config_setting_source_line(grp), NULL, "%s.%s: %s", key, name, what);
}

static void
check_keys(struct loader *l, const config_setting_t *grp, const char *const *known)
{
	for (int i = 0; i < config_setting_length(grp); i++) {
		const config_setting_t *s = config_setting_get_elem(grp, (unsigned)i);
		const char *name = config_setting_name(s);
		bool ok = false;

		for (size_t k = 0; known[k]; k++)
			if (name && strcmp(known[k], name) == 0)
				ok = true;
		if (!ok)
			err_at(l, s, "unknown key");
	}
}

static bool
has_control(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			return true;
	return false;
}

/* A non-empty string without control characters of at most `max` bytes, or NULL. */
static const char *
get_string(struct loader *l, const config_setting_t *s, size_t max)
{
	const char *v;

	if (config_setting_type(s) != CONFIG_TYPE_STRING) {
		err_at(l, s, "expected a string");
		return NULL;
	}
	v = config_setting_get_string(s);
	if (!v || !*v) {
		err_at(l, s, "must not be empty");
		return NULL;
	}
	if (has_control(v)) {
		err_at(l, s, "contains a control character");
		return NULL;
	}
	if (strlen(v) > max) {
		err_at(l, s, "longer than %zu characters", max);
		return NULL;
	}
	return v;
}

static bool
get_int(struct loader *l, const config_setting_t *s, long long *ret)
{
	int type = config_setting_type(s);

	if (type == CONFIG_TYPE_INT64) {
		*ret = config_setting_get_int64(s);
		return true;
	}
	if (type != CONFIG_TYPE_INT) {
		err_at(l, s, "expected an integer");
		return false;
	}
	/* libconfig 1.5 stores 0x80000000..0xffffffff as a negative int: hex means unsigned. */
	if (config_setting_get_format(s) == CONFIG_FORMAT_HEX)
		*ret = (long long)(uint32_t)config_setting_get_int(s);
	else
		*ret = config_setting_get_int(s);
	return true;
}

static bool
get_number(struct loader *l, const config_setting_t *s, double *ret)
{
	long long v;

	if (config_setting_type(s) == CONFIG_TYPE_FLOAT) {
		*ret = config_setting_get_float(s);
		return true;
	}
	if (config_setting_type(s) != CONFIG_TYPE_INT &&
	    config_setting_type(s) != CONFIG_TYPE_INT64) {
		err_at(l, s, "expected a number");
		return false;
	}
	if (!get_int(l, s, &v))
		return false;
	*ret = (double)v;
	return true;
}

static bool
is_group(struct loader *l, const config_setting_t *s)
{
	if (config_setting_is_group(s))
		return true;
	err_at(l, s, "expected a group { ... }");
	return false;
}

static bool
is_string_vector(struct loader *l, const config_setting_t *s)
{
	if (config_setting_is_array(s) || config_setting_is_list(s))
		return true;
	err_at(l, s, "expected an array of strings [ ... ]");
	return false;
}

static bool
valid_name(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > CONFIG_NAME_MAX)
		return false;
	if (!islower((unsigned char)s[0]) && !isdigit((unsigned char)s[0]))
		return false;
	for (size_t i = 1; i < n; i++) {
		unsigned char c = (unsigned char)s[i];

		if (!(islower(c) || isdigit(c) || c == '.' || c == '_' || c == '-'))
			return false;
	}
	return true;
}

static int
parse_hex4(const char *s, uint16_t *ret)
{
	unsigned v = 0;

	for (int i = 0; i < 4; i++) {
		char c = s[i];

		if (!isxdigit((unsigned char)c))
			return -EINVAL;
		v = v * 16 + (unsigned)(isdigit((unsigned char)c)
					    ? c - '0'
					    : tolower((unsigned char)c) - 'a' + 10);
	}
	*ret = (uint16_t)v;
	return 0;
}

static int
parse_usb_id(const char *s, uint16_t *ret_vid, uint16_t *ret_pid)
{
	if (strlen(s) != 9 || s[4] != ':')
		return -EINVAL;
	if (parse_hex4(s, ret_vid) < 0 || parse_hex4(s + 5, ret_pid) < 0)
		return -EINVAL;
	return 0;
}

/* fnmatch(3) has no compile step: catch what it would silently treat as never matching. */
static const char *
glob_problem(const char *g)
{
	for (const char *p = g; *p; p++) {
		if (*p == '\\') {
			if (!p[1])
				return "ends in a lone backslash";
			p++;
		} else if (*p == '[') {
			const char *q = p + 1;

			if (*q == '!' || *q == '^')
				q++;
			if (*q == ']')
				q++;
			while (*q && *q != ']')
				q++;
			if (!*q)
				return "has an unterminated '['";
			p = q;
		}
	}
	return NULL;
}

static bool
valid_unit(const char *s)
{
	size_t n = strlen(s);
	const char *suffix = ".service";

	if (n <= strlen(suffix) || strcmp(s + n - strlen(suffix), suffix) != 0)
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];

		/* fnmatch(3) globs too: "klipper*.service" stops whichever Klipper holds the tty */
		if (!(isalnum(c) || strchr(":-_.@\\*?[]", c)))
			return false;
	}
	return true;
}

static bool
valid_mcu(const char *s)
{
	for (; *s; s++)
		if (!isalnum((unsigned char)*s) && *s != '_')
			return false;
	return true;
}

static int
lookup_group(const char *name, gid_t *ret)
{
	struct group grp, *res = NULL;
	char buf[4096];

	if (getgrnam_r(name, &grp, buf, sizeof(buf), &res) != 0 || !res)
		return -ENOENT;
	*ret = res->gr_gid;
	return 0;
}

static void
load_path(struct loader *l, const config_setting_t *s, char **ret)
{
	const char *v = get_string(l, s, CONFIG_PATH_MAX);

	if (!v)
		return;
	if (v[0] != '/') {
		err_at(l, s, "must be an absolute path");
		return;
	}
	free(*ret);
	*ret = xstrdup(v);
}

static void
load_group(struct loader *l, const config_setting_t *s, char **ret_name, bool *ret_has,
	   gid_t *ret_gid)
{
	const char *v = get_string(l, s, CONFIG_NAME_MAX);
	gid_t gid;

	if (!v)
		return;
	if (lookup_group(v, &gid) < 0) {
		char *end = NULL;
		unsigned long g = strtoul(v, &end, 10);

		/* a numeric gid needs no group database (containers, tests) */
		if (!isdigit((unsigned char)v[0]) || *end || g >= 0xffffffffUL) {
			err_at(l, s, "unknown group '%s'", v);
			return;
		}
		gid = (gid_t)g;
	}
	*ret_name = xstrdup(v);
	*ret_has = true;
	*ret_gid = gid;
}

static void
load_timeouts(struct loader *l, const config_setting_t *grp, struct config *cfg)
{
	unsigned *slots[] = {&cfg->bootloader_timeout_ms, &cfg->boot_timeout_ms,
			     &cfg->step_timeout_ms, &cfg->leave_grace_ms, &cfg->client_idle_ms};

	if (!is_group(l, grp))
		return;
	check_keys(l, grp, timeout_keys);
	for (size_t i = 0; timeout_keys[i]; i++) {
		const config_setting_t *s = config_setting_get_member(grp, timeout_keys[i]);
		double v;

		if (!s || !get_number(l, s, &v))
			continue;
		if (!(v >= 0.1 && v <= 600.0)) {
			err_at(l, s, "must be between 0.1 and 600 seconds");
			continue;
		}
		*slots[i] = (unsigned)(v * 1000.0 + 0.5);
	}
}

/* rejected = { max_days = 30; max_mib = 64; }: the bound of the rejected/ folder */
static void
load_rejected(struct loader *l, const config_setting_t *grp, struct config *cfg)
{
	const config_setting_t *s;
	long long n;

	if (!is_group(l, grp))
		return;
	check_keys(l, grp, rejected_keys);
	if ((s = config_setting_get_member(grp, "max_days")) && get_int(l, s, &n)) {
		if (n < 1 || n > 3650)
			err_at(l, s, "must be between 1 and 3650 days");
		else
			cfg->rejected_max_days = (unsigned)n;
	}
	if ((s = config_setting_get_member(grp, "max_mib")) && get_int(l, s, &n)) {
		if (n < 1 || n > 65536)
			err_at(l, s, "must be between 1 and 65536 MiB");
		else
			cfg->rejected_max_mib = (unsigned)n;
	}
}

static void
load_match(struct loader *l, const config_setting_t *grp, struct config_match *m)
{
	const config_setting_t *s;
	const char *v;
	bool any = false;

	if (!is_group(l, grp))
		return;
	check_keys(l, grp, match_keys);
	for (size_t i = 0; match_keys[i]; i++)
		if (config_setting_get_member(grp, match_keys[i]))
			any = true;
	if (!any) {
		err_at(l, grp, "needs at least one rule (%s)",
		       "board, usb_id, serial, port, mcu, product");
		return;
	}
	s = config_setting_get_member(grp, "board");
	if (s && (v = get_string(l, s, CONFIG_NAME_MAX))) {
		m->board = catalog_find(v);
		if (!m->board) {
			struct str_closest c = {.word = v};
			size_t n;
			const struct catalog_board *all = catalog_boards(&n);

			for (size_t i = 0; i < n; i++)
				str_closest_add(&c, all[i].name);
			err_at(l, s, "unknown board '%s'%s%s%s (`skrflashctl catalog` lists them)",
			       v, c.best ? "; did you mean '" : "", c.best ? c.best : "",
			       c.best ? "'?" : "");
		}
	}
	s = config_setting_get_member(grp, "usb_id");
	if (s && (v = get_string(l, s, CONFIG_STR_MAX))) {
		if (parse_usb_id(v, &m->vid, &m->pid) < 0)
			err_at(l, s, "invalid USB id '%s' (expected vvvv:pppp in hex)", v);
		else
			m->has_usb_id = true;
	}
	s = config_setting_get_member(grp, "serial");
	if (s && (v = get_string(l, s, CONFIG_STR_MAX)))
		m->serial = xstrdup(v);
	s = config_setting_get_member(grp, "port");
	if (s && (v = get_string(l, s, CONFIG_STR_MAX))) {
		const char *why = glob_problem(v);

		if (why)
			err_at(l, s, "invalid glob '%s': %s", v, why);
		else
			m->port = xstrdup(v);
	}
	s = config_setting_get_member(grp, "mcu");
	if (s && (v = get_string(l, s, CONFIG_NAME_MAX))) {
		if (!valid_mcu(v))
			err_at(l, s, "invalid MCU name '%s' (Klipper CONFIG_MCU, e.g. stm32f446xx)",
			       v);
		else if (m->board && strcasecmp(m->board->mcu->name, v) != 0)
			err_at(l, s, "'%s' contradicts board '%s' (%s)", v, m->board->name,
			       m->board->mcu->name);
		else {
			m->mcu = xstrdup(v);
			for (char *c = m->mcu; *c; c++)
				*c = (char)tolower((unsigned char)*c);
		}
	}
	s = config_setting_get_member(grp, "product");
	if (s && (v = get_string(l, s, CONFIG_STR_MAX)))
		m->product = xstrdup(v);
}

static bool
board_has_method(const struct catalog_board *b, enum config_method m)
{
	switch (m) {
	case CONFIG_METHOD_KATAPULT:
		return b->paths & CATALOG_PATH_KATAPULT;
	case CONFIG_METHOD_DFU:
		return b->paths & (CATALOG_PATH_ROM_DFU_SOFT | CATALOG_PATH_ROM_DFU_BUTTON);
	case CONFIG_METHOD_SD:
		return b->paths & CATALOG_PATH_SD;
	case CONFIG_METHOD_UF2:
		return b->paths & CATALOG_PATH_BOOTSEL;
	case CONFIG_METHOD_LPC_DFU:
		return b->paths & CATALOG_PATH_LPC_DFU;
	case CONFIG_METHOD_MSC:
		/* Marlin shows the card; the stock SD bootloader flashes what is put on it */
		return b->paths & CATALOG_PATH_SD;
	case _CONFIG_METHOD_MAX:
	default:
		return false;
	}
}

/* Methods a board supports, in the order they are worth trying; Katapult and DFU without a
 * board, since those are the USB paths of the common boards. */
static void
default_methods(struct config_profile *p)
{
	p->n_methods = 0;
	for (unsigned m = 0; m < _CONFIG_METHOD_MAX; m++) {
		/* msc writes the user's SD card while Marlin runs: only when a profile names it */
		if (m == CONFIG_METHOD_MSC)
			continue;
		if (p->match.board ? board_has_method(p->match.board, (enum config_method)m)
				   : (m == CONFIG_METHOD_KATAPULT || m == CONFIG_METHOD_DFU))
			p->methods[p->n_methods++] = (enum config_method)m;
	}
}

static void
load_methods(struct loader *l, const config_setting_t *arr, struct config_profile *p)
{
	if (!is_string_vector(l, arr))
		return;
	if (config_setting_length(arr) == 0) {
		err_at(l, arr, "must name at least one method (katapult|dfu|sd|uf2|lpc-dfu|msc)");
		return;
	}
	p->n_methods = 0;
	for (int i = 0; i < config_setting_length(arr); i++) {
		const config_setting_t *s = config_setting_get_elem(arr, (unsigned)i);
		const char *v = get_string(l, s, CONFIG_NAME_MAX);
		unsigned m;
		bool dup = false;

		if (!v)
			continue;
		for (m = 0; m < _CONFIG_METHOD_MAX; m++)
			if (strcmp(method_names[m], v) == 0)
				break;
		if (m == _CONFIG_METHOD_MAX) {
			err_at(l, s, "unknown method '%s' (katapult|dfu|sd|uf2|lpc-dfu|msc)", v);
			continue;
		}
		for (size_t j = 0; j < p->n_methods; j++)
			if (p->methods[j] == (enum config_method)m)
				dup = true;
		if (dup) {
			err_at(l, s, "duplicate method '%s'", v);
			continue;
		}
		if (p->match.board && !board_has_method(p->match.board, (enum config_method)m)) {
			err_at(l, s, "board '%s' has no %s path", p->match.board->name, v);
			continue;
		}
		p->methods[p->n_methods++] = (enum config_method)m;
	}
}

static void
load_auto_flash(struct loader *l, const config_setting_t *arr, struct config_profile *p)
{
	if (!is_string_vector(l, arr))
		return;
	p->auto_flash = 0;
	for (int i = 0; i < config_setting_length(arr); i++) {
		const config_setting_t *s = config_setting_get_elem(arr, (unsigned)i);
		const char *v = get_string(l, s, CONFIG_NAME_MAX);
		size_t k;

		if (!v)
			continue;
		for (k = 0; k < ELEMENTSOF(auto_names); k++)
			if (strcmp(auto_names[k], v) == 0)
				break;
		if (k == ELEMENTSOF(auto_names))
			err_at(l, s, "unknown trigger '%s' (hotplug|queue)", v);
		else if (p->auto_flash & (1u << k))
			err_at(l, s, "duplicate trigger '%s'", v);
		else
			p->auto_flash |= 1u << k;
	}
}

static void
load_stop_units(struct loader *l, const config_setting_t *arr, struct config_profile *p)
{
	int n;

	if (!is_string_vector(l, arr))
		return;
	n = config_setting_length(arr);
	p->stop_units = xnew_array(char *, (size_t)n + 1);
	for (int i = 0; i < n; i++) {
		const config_setting_t *s = config_setting_get_elem(arr, (unsigned)i);
		const char *v = get_string(l, s, 255);

		if (!v)
			continue;
		if (!valid_unit(v)) {
			err_at(l, s, "invalid unit name '%s' (must end in .service)", v);
			continue;
		}
		p->stop_units[p->n_stop_units++] = xstrdup(v);
	}
}

static void
load_app_start(struct loader *l, const config_setting_t *s, struct config_profile *p)
{
	const struct catalog_board *b = p->match.board;
	long long v;

	if (!get_int(l, s, &v))
		return;
	if (v < 0 || v > (long long)UINT32_MAX) {
		err_at(l, s, "must be a 32-bit address");
		return;
	}
	if (b && ((uint64_t)v < b->mcu->flash_base ||
		  (uint64_t)v >= (uint64_t)b->mcu->flash_base + b->mcu->flash_size)) {
		err_at(l, s,
		       "0x%08llx is outside the flash of board '%s' (0x%08" PRIx32 "..0x%08" PRIx32
		       ")",
		       v, b->name, b->mcu->flash_base, b->mcu->flash_base + b->mcu->flash_size - 1);
		return;
	}
	p->has_app_start = true;
	p->app_start = (uint32_t)v;
}

static bool
power_seconds(struct loader *l, const config_setting_t *grp, const char *key, double lo, double hi,
	      unsigned *ret)
{
	const config_setting_t *s = config_setting_get_member(grp, key);
	double v;

	if (!s)
		return true;
	if (!get_number(l, s, &v))
		return false;
	if (!(v >= lo && v <= hi)) {
		err_at(l, s, "must be between %g and %g seconds", lo, hi);
		return false;
	}
	*ret = (unsigned)(v * 1000.0 + 0.5);
	return true;
}

/* power = { moonraker_device = "printer_psu"; } or { command = [ ... ]; off_seconds = 3.0; } */
static void
load_power(struct loader *l, const config_setting_t *grp, struct config_profile *p)
{
	const struct catalog_sd_bus *bus = catalog_sd_bus(p->match.board);
	struct config_power *pw = &p->power;
	const config_setting_t *dev, *cmd;
	unsigned before = l->n_errors;
	const char *v;

	if (!is_group(l, grp))
		return;
	check_keys(l, grp, power_keys);
	pw->off_ms = 3000;
	pw->timeout_ms = 30000;
	dev = config_setting_get_member(grp, "moonraker_device");
	cmd = config_setting_get_member(grp, "command");
	if (dev && cmd)
		err_at(l, grp, "set moonraker_device or command, not both");
	else if (!dev && !cmd)
		err_at(
		    l, grp,
		    "needs moonraker_device (a [power NAME] device of Moonraker) or command "
		    "(a program and its arguments, e.g. [ \"uhubctl\", \"-a\", \"cycle\", ... ])");
	if (dev && (v = get_string(l, dev, CONFIG_NAME_MAX)))
		pw->moonraker_device = xstrdup(v);
	if (cmd && is_string_vector(l, cmd)) {
		int n = config_setting_length(cmd);

		if (n == 0)
			err_at(l, cmd, "must name the program to run");
		pw->command = xnew_array(char *, (size_t)n + 1);
		for (int i = 0; i < n; i++) {
			const config_setting_t *s = config_setting_get_elem(cmd, (unsigned)i);

			if ((v = get_string(l, s, CONFIG_PATH_MAX)))
				pw->command[pw->n_command++] = xstrdup(v);
		}
	}
	(void)power_seconds(l, grp, "off_seconds", 0.1, 60.0, &pw->off_ms);
	(void)power_seconds(l, grp, "timeout", 1.0, 600.0, &pw->timeout_ms);
	if (pw->timeout_ms <= pw->off_ms)
		err_at(l, grp, "timeout (%u.%03u s) must be longer than off_seconds (%u.%03u s)",
		       pw->timeout_ms / 1000, pw->timeout_ms % 1000, pw->off_ms / 1000,
		       pw->off_ms % 1000);
	/* only the SDIO bootloaders need it: elsewhere a power cycle would be a surprise */
	if (bus && !bus->sdio)
		err_at(l, grp,
		       "board '%s' reads its SD card over SPI and never needs a power cycle "
		       "after flashing; remove the power group",
		       p->match.board->name);
	p->has_power = l->n_errors == before;
}

static void
free_profile(struct config_profile *p)
{
	free(p->name);
	free(p->match.serial);
	free(p->match.port);
	free(p->match.mcu);
	free(p->match.product);
	free(p->queue);
	if (p->stop_units)
		for (size_t i = 0; i < p->n_stop_units; i++)
			free(p->stop_units[i]);
	free(p->stop_units);
	free(p->moonraker_url);
	free(p->moonraker_api_key_file);
	free(p->power.moonraker_device);
	strv_free(p->power.command);
	free(p->octoprint_url);
	free(p->octoprint_api_key_file);
}

/* An http:// or https:// URL into *ret; anything else is an error. */
static void
load_url(struct loader *l, const config_setting_t *s, size_t max, char **ret)
{
	const char *v = get_string(l, s, max);

	if (!v)
		return;
	if (strncmp(v, "http://", 7) != 0 && strncmp(v, "https://", 8) != 0)
		err_at(l, s, "expected an http:// or https:// URL, not '%s'", v);
	else
		*ret = xstrdup(v);
}

/* The file holding an API key: read at each check, not here, so the key may be provisioned or
 * rotated after the config is loaded. */
static void
load_key_file(struct loader *l, const config_setting_t *s, char **ret)
{
	const char *v = get_string(l, s, 255);

	if (!v)
		return;
	if (v[0] != '/')
		err_at(l, s, "expected an absolute path to a file holding the API key, not '%s'",
		       v);
	else
		*ret = xstrdup(v);
}

static void
load_bool(struct loader *l, const config_setting_t *s, bool *ret)
{
	if (config_setting_type(s) != CONFIG_TYPE_BOOL)
		err_at(l, s, "expected true or false");
	else
		*ret = config_setting_get_bool(s);
}

/* octoprint = { url = "http://127.0.0.1:5000"; api_key_file = "/etc/skrflash/octoprint.key"; } */
static void
load_octoprint(struct loader *l, const config_setting_t *grp, struct config_profile *p)
{
	const config_setting_t *s;

	if (!is_group(l, grp))
		return;
	check_keys(l, grp, octoprint_keys);
	s = config_setting_get_member(grp, "url");
	if (!s)
		err_missing(l, grp, "url",
			    "required (OctoPrint's address, e.g. \"http://127.0.0.1:5000\")");
	else
		load_url(l, s, 255, &p->octoprint_url);
	/* OctoPrint answers its API only with a key (Settings > Application Keys) */
	s = config_setting_get_member(grp, "api_key_file");
	if (!s)
		err_missing(l, grp, "api_key_file",
			    "required (a file holding an OctoPrint application key)");
	else
		load_key_file(l, s, &p->octoprint_api_key_file);
}

/* host = "klipper" (default) | "octoprint", with the settings of that host only */
static void
load_host(struct loader *l, const config_setting_t *grp, struct config_profile *p)
{
	static const char *const moonraker_keys[] = {"moonraker", "moonraker_api_key_file",
						     "moonraker_fail_open", NULL};
	const config_setting_t *s = config_setting_get_member(grp, "host");
	const config_setting_t *op = config_setting_get_member(grp, "octoprint");
	const char *v = NULL;

	if (s && (v = get_string(l, s, CONFIG_NAME_MAX))) {
		unsigned i;

		for (i = 0; i < _CONFIG_HOST_MAX; i++)
			if (strcmp(host_names[i], v) == 0)
				break;
		if (i == _CONFIG_HOST_MAX) {
			err_at(l, s, "unknown host '%s' (klipper|octoprint)", v);
			return;
		}
		p->host = (enum config_host)i;
	} else if (s) {
		return; /* said already */
	}
	if (p->host != CONFIG_HOST_OCTOPRINT) {
		if (op)
			err_at(l, op,
			       "OctoPrint settings need host = \"octoprint\" in this profile");
		return;
	}
	if (!op)
		err_at(l, s,
		       "host \"octoprint\" needs octoprint = { url = \"http://127.0.0.1:5000\"; "
		       "api_key_file = \"/etc/skrflash/octoprint.key\"; }");
	else
		load_octoprint(l, op, p);
	/* one host per board: a Moonraker gate on an OctoPrint board would ask the wrong
	 * server (or none) about this printer */
	for (size_t k = 0; moonraker_keys[k]; k++)
		if ((s = config_setting_get_member(grp, moonraker_keys[k])))
			err_at(l, s,
			       "a Moonraker setting, but this board is driven by OctoPrint (host = "
			       "\"octoprint\"); remove it");
}

/* A profile or queue name ("what" says which in the message). */
static void
load_name(struct loader *l, const config_setting_t *s, const char *what, char **ret)
{
	const char *v = get_string(l, s, 255);

	if (!v)
		return;
	if (!valid_name(v))
		err_at(l, s, "invalid %s '%s' ([a-z0-9][a-z0-9._-]*, at most %d characters)", what,
		       v, CONFIG_NAME_MAX);
	else
		*ret = xstrdup(v);
}

/* name, match and queue: which boards the profile takes and where their firmware waits */
static void
load_profile_identity(struct loader *l, const config_setting_t *grp, struct config_profile *p)
{
	const config_setting_t *s = config_setting_get_member(grp, "name");

	if (!s)
		err_missing(l, grp, "name", "missing");
	else
		load_name(l, s, "name", &p->name);
	s = config_setting_get_member(grp, "match");
	if (!s)
		err_missing(l, grp, "match", "missing (a profile needs at least one rule)");
	else
		load_match(l, s, &p->match);
	s = config_setting_get_member(grp, "queue");
	if (s)
		load_name(l, s, "queue", &p->queue);
	if (!p->queue && p->name && !s)
		p->queue = xstrdup(p->name);
}

/* methods, auto_flash and stop_units: how and when the board is flashed */
static void
load_profile_flashing(struct loader *l, const config_setting_t *grp, struct config_profile *p)
{
	const config_setting_t *s;

	default_methods(p);
	s = config_setting_get_member(grp, "methods");
	if (s)
		load_methods(l, s, p);
	s = config_setting_get_member(grp, "auto_flash");
	if (s)
		load_auto_flash(l, s, p);
	s = config_setting_get_member(grp, "stop_units");
	if (s)
		load_stop_units(l, s, p);
	if (!p->stop_units)
		p->stop_units = xnew_array(char *, 1);
}

/* the print-state gate of a Klipper host (load_host refuses these keys for OctoPrint) */
static void
load_moonraker(struct loader *l, const config_setting_t *grp, struct config_profile *p)
{
	const config_setting_t *s = config_setting_get_member(grp, "moonraker");

	if (s)
		load_url(l, s, 1024, &p->moonraker_url);
	s = config_setting_get_member(grp, "moonraker_api_key_file");
	if (s)
		load_key_file(l, s, &p->moonraker_api_key_file);
	s = config_setting_get_member(grp, "moonraker_fail_open");
	if (s)
		load_bool(l, s, &p->moonraker_fail_open);
}

static void
load_interface(struct loader *l, const config_setting_t *s, struct config_profile *p)
{
	const char *v = get_string(l, s, CONFIG_NAME_MAX);
	unsigned i;

	if (!v)
		return;
	for (i = 0; i < _CONFIG_INTERFACE_MAX; i++)
		if (strcmp(interface_names[i], v) == 0)
			break;
	if (i == _CONFIG_INTERFACE_MAX)
		err_at(l, s, "unknown interface '%s' (usb|serial|can)", v);
	else
		p->interface = (enum config_interface)i;
}

/* Fills *p from one profiles element; returns false if anything in it was wrong. */
static bool
load_profile(struct loader *l, const config_setting_t *grp, struct config_profile *p)
{
	unsigned before = l->n_errors;
	const config_setting_t *s;

	memset(p, 0, sizeof(*p));
	p->line = config_setting_source_line(grp);
	p->auto_flash = CONFIG_AUTO_HOTPLUG;
	p->interface = CONFIG_INTERFACE_USB;
	if (!is_group(l, grp))
		return false;
	check_keys(l, grp, profile_keys);

	load_profile_identity(l, grp, p);
	load_profile_flashing(l, grp, p);
	load_moonraker(l, grp, p);
	load_host(l, grp, p);
	s = config_setting_get_member(grp, "allow_migration");
	if (s)
		load_bool(l, s, &p->allow_migration);
	s = config_setting_get_member(grp, "app_start");
	if (s)
		load_app_start(l, s, p);
	s = config_setting_get_member(grp, "interface");
	if (s)
		load_interface(l, s, p);
	s = config_setting_get_member(grp, "power");
	if (s)
		load_power(l, s, p);
	return l->n_errors == before;
}

static void
load_profiles(struct loader *l, const config_setting_t *list, struct config *cfg)
{
	int n;

	if (!config_setting_is_list(list)) {
		err_at(l, list, "expected a list of groups ( { ... }, ... )");
		return;
	}
	n = config_setting_length(list);
	cfg->profiles = xnew_array(struct config_profile, (size_t)n);
	for (int i = 0; i < n; i++) {
		const config_setting_t *grp = config_setting_get_elem(list, (unsigned)i);
		struct config_profile p;
		bool ok = load_profile(l, grp, &p);

		/* Clashes are checked even against profiles with other errors, so that one run
		 * reports as much as possible; such profiles are then dropped. */
		for (size_t j = 0; j < cfg->n_profiles; j++) {
			const struct config_profile *q = &cfg->profiles[j];

			if (p.name && q->name && strcmp(p.name, q->name) == 0) {
				err_at(l, config_setting_get_member(grp, "name"),
				       "duplicate profile name '%s' (first defined at line %u)",
				       p.name, q->line);
				ok = false;
			}
			if (p.queue && q->queue && strcmp(p.queue, q->queue) == 0) {
				const config_setting_t *qs =
				    config_setting_get_member(grp, "queue");

				/* a name clash already said it all when the queue is the name */
				if (!qs && p.name && q->name && strcmp(p.name, q->name) == 0) {
					ok = false;
					continue;
				}
				if (!qs)
					qs = config_setting_get_member(grp, "name");
				err_at(l, qs, "queue '%s' is already used by profile '%s'", p.queue,
				       q->name);
				ok = false;
			}
		}
		if (ok)
			cfg->profiles[cfg->n_profiles++] = p;
		else
			free_profile(&p);
	}
}

static void
free_rescue(struct config_rescue *r)
{
	free(r->device);
	free(r->reset_line);
	free(r->boot_line);
	memset(r, 0, sizeof(*r));
}

static void
load_rescue_line(struct loader *l, const config_setting_t *grp, const char *key, char **ret)
{
	const config_setting_t *s = config_setting_get_member(grp, key);
	const char *v;

	if (s && (v = get_string(l, s, 63)))
		*ret = xstrdup(v);
}

static bool
load_rescue(struct loader *l, const config_setting_t *grp, struct config_rescue *r)
{
	static const unsigned bauds[] = {9600, 19200, 38400, 57600, 115200, 230400};
	const config_setting_t *s;
	const char *v;
	long long n;
	unsigned errs = l->n_errors;

	memset(r, 0, sizeof(*r));
	r->line = config_setting_source_line(grp);
	r->baud = 115200;
	if (!config_setting_is_group(grp)) {
		err_at(l, grp, "expected a group { device = ...; }");
		return false;
	}
	check_keys(l, grp, rescue_keys);
	if (!(s = config_setting_get_member(grp, "device")))
		err_missing(l, grp, "device", "required (the UART, e.g. \"/dev/ttyAMA0\")");
	else if ((v = get_string(l, s, 255)) && v[0] != '/')
		err_at(l, s, "must be an absolute path");
	else if (v)
		r->device = xstrdup(v);
	if ((s = config_setting_get_member(grp, "baud")) && get_int(l, s, &n)) {
		size_t i;

		for (i = 0; i < ELEMENTSOF(bauds) && bauds[i] != n; i++)
			;
		if (i == ELEMENTSOF(bauds))
			err_at(l, s, "must be 9600, 19200, 38400, 57600, 115200 or 230400");
		else
			r->baud = bauds[i];
	}
	load_rescue_line(l, grp, "reset_line", &r->reset_line);
	load_rescue_line(l, grp, "boot_line", &r->boot_line);
	if ((s = config_setting_get_member(grp, "board")) && (v = get_string(l, s, 63)) &&
	    !(r->board = catalog_find(v)))
		err_at(l, s, "unknown board '%s' (see skrflashctl catalog)", v);
	return l->n_errors == errs;
}

static void
load_rescues(struct loader *l, const config_setting_t *list, struct config *cfg)
{
	int n;

	if (!config_setting_is_list(list)) {
		err_at(l, list, "expected a list of groups ( { ... }, ... )");
		return;
	}
	n = config_setting_length(list);
	cfg->rescues = xnew_array(struct config_rescue, (size_t)n);
	for (int i = 0; i < n; i++) {
		const config_setting_t *grp = config_setting_get_elem(list, (unsigned)i);
		struct config_rescue r;
		bool ok = load_rescue(l, grp, &r);

		for (size_t j = 0; ok && j < cfg->n_rescues; j++) {
			if (strcmp(cfg->rescues[j].device, r.device) == 0) {
				err_at(l, config_setting_get_member(grp, "device"),
				       "device '%s' already has a rescue entry (line %u)", r.device,
				       cfg->rescues[j].line);
				ok = false;
			}
		}
		if (ok)
			cfg->rescues[cfg->n_rescues++] = r;
		else
			free_rescue(&r);
	}
}

static void
load_root(struct loader *l, const config_setting_t *root, struct config *cfg)
{
	const config_setting_t *s;
	const char *v;
	long long n;

	check_keys(l, root, root_keys);
	if ((s = config_setting_get_member(root, "state_dir")))
		load_path(l, s, &cfg->state_dir);
	if ((s = config_setting_get_member(root, "queue_dir"))) {
		load_path(l, s, &cfg->queue_dir);
		l->queue_dir_set = true;
	}
	if ((s = config_setting_get_member(root, "runtime_dir")))
		load_path(l, s, &cfg->runtime_dir);
	if ((s = config_setting_get_member(root, "log_level")) &&
	    (v = get_string(l, s, CONFIG_NAME_MAX))) {
		size_t i;

		for (i = 0; i < ELEMENTSOF(log_levels); i++)
			if (strcmp(log_levels[i].name, v) == 0)
				break;
		if (i == ELEMENTSOF(log_levels))
			err_at(l, s, "unknown level '%s' (error|warning|notice|info|debug)", v);
		else
			cfg->log_level = log_levels[i].level;
	}
	if ((s = config_setting_get_member(root, "max_jobs")) && get_int(l, s, &n)) {
		if (n < 1 || n > 64)
			err_at(l, s, "must be between 1 and 64");
		else
			cfg->max_jobs = (unsigned)n;
	}
	if ((s = config_setting_get_member(root, "timeouts")))
		load_timeouts(l, s, cfg);
	if ((s = config_setting_get_member(root, "rejected")))
		load_rejected(l, s, cfg);
	if ((s = config_setting_get_member(root, "drop_group")))
		load_group(l, s, &cfg->drop_group, &cfg->has_drop_gid, &cfg->drop_gid);
	if ((s = config_setting_get_member(root, "control_group")))
		load_group(l, s, &cfg->control_group, &cfg->has_control_gid, &cfg->control_gid);
	if ((s = config_setting_get_member(root, "profiles")))
		load_profiles(l, s, cfg);
	if ((s = config_setting_get_member(root, "rescue")))
		load_rescues(l, s, cfg);
}

static void
add_implicit_profiles(struct config *cfg)
{
	const struct catalog_board *boards;
	size_t n;

	boards = catalog_boards(&n);
	free(cfg->profiles);
	cfg->profiles = xnew_array(struct config_profile, n);
	cfg->n_profiles = n;
	for (size_t i = 0; i < n; i++) {
		struct config_profile *p = &cfg->profiles[i];

		p->name = xstrdup(boards[i].name);
		p->queue = xstrdup(boards[i].name);
		p->match.board = &boards[i];
		default_methods(p);
		p->auto_flash = CONFIG_AUTO_HOTPLUG;
		p->stop_units = xnew_array(char *, 1);
		p->interface = CONFIG_INTERFACE_USB;
		p->implicit = true;
	}
}

static void
check_ties(struct loader *l, const struct config *cfg)
{
	const struct config_profile *a, *b, *second;

	if (match_check_ties(cfg, &a, &b) == 0)
		return;
	second = a->line > b->line ? a : b;
	if (second == b)
		loader_add(l, second->line, "profiles",
			   "profiles '%s' and '%s' match the same boards equally; make one more "
			   "specific",
			   a->name, b->name);
	else
		loader_add(l, second->line, "profiles",
			   "profiles '%s' and '%s' match the same boards equally; make one more "
			   "specific",
			   b->name, a->name);
}

/* libconfig would open any file an @include names, relative to the daemon's cwd: refuse. */
static void
check_includes(struct loader *l, const char *text)
{
	unsigned line = 1;

	for (const char *p = text; *p; line++) {
		const char *q = p + strspn(p, " \t");
		const char *eol = strchr(p, '\n');

		if (strncmp(q, "@include", 8) == 0)
			loader_add(l, line, "@include",
				   "not supported: keep the configuration in one file");
		if (!eol)
			break;
		p = eol + 1;
	}
}

/*
 * libconfig 1.5 leaks the text of a string token that its parser rejects (the grammar has no
 * %destructor), and a configuration is reloaded on every SIGHUP. A string is only valid as a
 * value: after '=' or ':', after '(' or '[', after ',' inside a list or array, or after another
 * string (concatenation). Any other string is a syntax error, reported here exactly as
 * libconfig would, without handing the text to it. Returns false if one was found.
 */
static bool
check_strings(struct loader *l, const char *text)
{
	char stack[64]; /* '{' group or '(' list/array, innermost last */
	size_t depth = 0;
	unsigned line = 1;
	char prev = ';'; /* the start of the file is like the start of a setting */
	const char *p = text;

	while (*p) {
		char c = *p;

		if (c == '\n') {
			line++;
			p++;
		} else if (c == ' ' || c == '\t' || c == '\r' || c == '\f') {
			p++;
		} else if (c == '#' || (c == '/' && p[1] == '/')) {
			p += strcspn(p, "\n");
		} else if (c == '/' && p[1] == '*') {
			const char *end = strstr(p + 2, "*/");

			for (const char *q = p; *q && (!end || q < end); q++)
				line += *q == '\n';
			p = end ? end + 2 : p + strlen(p);
		} else if (c == '"') {
			bool in_list = depth > 0 && stack[depth - 1] == '(';

			if (!(prev == '=' || prev == '(' || prev == '"' ||
			      (prev == ',' && in_list))) {
				loader_add(l, line, NULL, "syntax error");
				return false;
			}
			for (p++; *p && *p != '"'; p++) {
				if (*p == '\\' && p[1])
					p++;
				line += *p == '\n';
			}
			if (*p)
				p++;
			prev = '"';
		} else {
			switch (c) {
			case '{':
			case '(':
			case '[':
				if (depth < sizeof(stack))
					stack[depth] = c == '{' ? '{' : '(';
				depth++;
				prev = c == '{' ? ';' : '(';
				break;
			case '}':
			case ')':
			case ']':
				if (depth > 0)
					depth--;
				prev = ')';
				break;
			case '=':
			case ':':
				prev = '=';
				break;
			case ',':
			case ';':
				prev = c;
				break;
			default:
				prev = 'x';
				break;
			}
			if (depth > sizeof(stack)) {
				/* deeper than any real configuration: let libconfig judge, at
				 * worst leaking one string */
				return true;
			}
			p++;
		}
	}
	return true;
}

static void
apply_defaults(struct config *cfg, const struct config_overrides *ov, bool queue_dir_set)
{
	if (ov && ov->state_dir) {
		free(cfg->state_dir);
		cfg->state_dir = xstrdup(ov->state_dir);
	}
	if (ov && ov->queue_dir) {
		free(cfg->queue_dir);
		cfg->queue_dir = xstrdup(ov->queue_dir);
		queue_dir_set = true;
	}
	if (ov && ov->runtime_dir) {
		free(cfg->runtime_dir);
		cfg->runtime_dir = xstrdup(ov->runtime_dir);
	}
	if (ov && ov->log_level >= 0)
		cfg->log_level = ov->log_level;
	if (!cfg->state_dir)
		cfg->state_dir = xstrdup(DEFAULT_STATE_DIR);
	if (!queue_dir_set) {
		free(cfg->queue_dir);
		cfg->queue_dir = xasprintf("%s/queue", cfg->state_dir);
	}
	if (!cfg->runtime_dir)
		cfg->runtime_dir = xstrdup(DEFAULT_RUNTIME_DIR);
	if (cfg->n_profiles == 0)
		add_implicit_profiles(cfg);
}

static struct config *
config_new(const char *path)
{
	struct config *cfg = xnew(struct config);

	cfg->path = path ? xstrdup(path) : NULL;
	cfg->log_level = LOG_INFO;
	cfg->max_jobs = 4;
	cfg->bootloader_timeout_ms = 10000;
	cfg->boot_timeout_ms = 15000;
	cfg->step_timeout_ms = 120000;
	cfg->leave_grace_ms = 3000;
	cfg->client_idle_ms = 30000;
	cfg->rejected_max_days = 30;
	cfg->rejected_max_mib = 64;
	return cfg;
}

static int
load_text(const char *text, const char *name, const char *path, const struct config_overrides *ov,
	  struct config **ret, char **ret_errors)
{
	struct loader l = {.name = name ? name : "<config>"};
	struct config *cfg = config_new(path);
	config_t lc;

	config_init(&lc);
	check_includes(&l, text ? text : "");
	if (l.n_errors == 0 && text && check_strings(&l, text)) {
		if (config_read_string(&lc, text) != CONFIG_TRUE)
			loader_add(&l, (unsigned)config_error_line(&lc), NULL, "%s",
				   config_error_text(&lc) ? config_error_text(&lc)
							  : "syntax error");
		else
			load_root(&l, config_root_setting(&lc), cfg);
	}
	config_destroy(&lc);
	if (cfg->n_profiles > 0)
		check_ties(&l, cfg);
	if (l.n_errors > 0) {
		char *errors = loader_take_errors(&l);

		config_free(cfg);
		if (ret_errors)
			*ret_errors = errors;
		else
			free(errors);
		return -EINVAL;
	}
	apply_defaults(cfg, ov, l.queue_dir_set);
	*ret = cfg;
	return 0;
}

int
config_load_string(const char *text, const char *name, const struct config_overrides *ov,
		   struct config **ret, char **ret_errors)
{
	return load_text(text, name, NULL, ov, ret, ret_errors);
}

int
config_load(const char *path, const struct config_overrides *ov, struct config **ret,
	    char **ret_errors)
{
	uint8_t *data = NULL;
	size_t size = 0;
	char *text;
	int r;

	if (!path)
		return load_text(NULL, NULL, NULL, ov, ret, ret_errors);
	r = read_file(path, CONFIG_MAX_FILE, &data, &size);
	if (r < 0) {
		if (ret_errors)
			*ret_errors = xasprintf("%s: cannot read: %s\n", path, strerror(-r));
		return r;
	}
	text = xmalloc(size + 1);
	memcpy(text, data, size);
	text[size] = '\0';
	free(data);
	r = load_text(text, path, path, ov, ret, ret_errors);
	free(text);
	return r;
}

struct config *
config_free(struct config *cfg)
{
	if (!cfg)
		return NULL;
	for (size_t i = 0; i < cfg->n_profiles; i++)
		free_profile(&cfg->profiles[i]);
	free(cfg->profiles);
	for (size_t i = 0; i < cfg->n_rescues; i++)
		free_rescue(&cfg->rescues[i]);
	free(cfg->rescues);
	free(cfg->path);
	free(cfg->state_dir);
	free(cfg->queue_dir);
	free(cfg->runtime_dir);
	free(cfg->drop_group);
	free(cfg->control_group);
	free(cfg);
	return NULL;
}

/* Loaded strings have no control characters, so only quote and backslash need escaping. */
static void
dump_string(FILE *f, const char *s)
{
	fputc('"', f);
	for (; *s; s++) {
		if (*s == '"' || *s == '\\')
			fputc('\\', f);
		fputc(*s, f);
	}
	fputc('"', f);
}

static void
dump_seconds(FILE *f, const char *key, unsigned ms)
{
	char frac[8];
	size_t n;

	snprintf(frac, sizeof(frac), "%03u", ms % 1000);
	n = strlen(frac);
	while (n > 1 && frac[n - 1] == '0')
		frac[--n] = '\0';
	fprintf(f, " %s = %u.%s;", key, ms / 1000, frac);
}

static void
dump_kv(FILE *f, const char *indent, const char *key, const char *value)
{
	fprintf(f, "%s%s = ", indent, key);
	dump_string(f, value);
	fputs(";\n", f);
}

static const char *
level_name(int level)
{
	for (size_t i = 0; i < ELEMENTSOF(log_levels); i++)
		if (log_levels[i].level == level)
			return log_levels[i].name;
	return "info";
}

/* ` key = "value";` inside a group written on one line */
static void
dump_member(FILE *f, const char *key, const char *value)
{
	fprintf(f, " %s = ", key);
	dump_string(f, value);
	fputc(';', f);
}

/* the elements of a list of strings: ` "a", "b"` */
static void
dump_strings(FILE *f, char *const *v, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		fputs(i ? ", " : " ", f);
		dump_string(f, v[i]);
	}
}

static void
dump_match(FILE *f, const char *in, const struct config_match *m)
{
	fprintf(f, "%smatch = {", in);
	if (m->board)
		dump_member(f, "board", m->board->name);
	if (m->has_usb_id)
		fprintf(f, " usb_id = \"%04x:%04x\";", m->vid, m->pid);
	if (m->serial)
		dump_member(f, "serial", m->serial);
	if (m->port)
		dump_member(f, "port", m->port);
	if (m->mcu)
		dump_member(f, "mcu", m->mcu);
	if (m->product)
		dump_member(f, "product", m->product);
	fputs(" };\n", f);
}

/* methods, auto_flash and stop_units */
static void
dump_flashing(FILE *f, const char *in, const struct config_profile *p)
{
	bool first = true;

	fprintf(f, "%smethods = [", in);
	for (size_t i = 0; i < p->n_methods; i++)
		fprintf(f, "%s \"%s\"", i ? "," : "", config_method_to_string(p->methods[i]));
	fputs(" ];\n", f);
	fprintf(f, "%sauto_flash = [", in);
	for (size_t k = 0; k < ELEMENTSOF(auto_names); k++)
		if (p->auto_flash & (1u << k)) {
			fprintf(f, "%s \"%s\"", first ? "" : ",", auto_names[k]);
			first = false;
		}
	fputs(" ];\n", f);
	fprintf(f, "%sstop_units = [", in);
	dump_strings(f, p->stop_units, p->n_stop_units);
	fputs(" ];\n", f);
}

/* OctoPrint's settings, or Moonraker's for a Klipper host */
static void
dump_host(FILE *f, const char *in, const struct config_profile *p)
{
	if (p->host == CONFIG_HOST_OCTOPRINT) {
		dump_kv(f, in, "host", config_host_to_string(p->host));
		fprintf(f, "%soctoprint = { url = ", in);
		dump_string(f, p->octoprint_url);
		fputs("; api_key_file = ", f);
		dump_string(f, p->octoprint_api_key_file);
		fputs("; };\n", f);
		return;
	}
	if (p->moonraker_url)
		dump_kv(f, in, "moonraker", p->moonraker_url);
	else
		fprintf(f, "%s# moonraker: not checked\n", in);
	if (p->moonraker_api_key_file)
		dump_kv(f, in, "moonraker_api_key_file", p->moonraker_api_key_file);
	fprintf(f, "%smoonraker_fail_open = %s;\n", in, p->moonraker_fail_open ? "true" : "false");
}

static void
dump_app_start(FILE *f, const char *in, const struct config_profile *p)
{
	if (p->has_app_start)
		fprintf(f, "%sapp_start = 0x%08" PRIx32 ";\n", in, p->app_start);
	else if (config_profile_app_start(p))
		fprintf(f, "%s# app_start: 0x%08" PRIx32 " from the catalog\n", in,
			config_profile_app_start(p));
	else
		fprintf(f, "%s# app_start: from the bootloader\n", in);
}

static void
dump_power(FILE *f, const char *in, const struct config_power *pw)
{
	fprintf(f, "%spower = {", in);
	if (pw->moonraker_device) {
		dump_member(f, "moonraker_device", pw->moonraker_device);
	} else {
		fputs(" command = [", f);
		dump_strings(f, pw->command, pw->n_command);
		fputs(" ];", f);
	}
	dump_seconds(f, "off_seconds", pw->off_ms);
	dump_seconds(f, "timeout", pw->timeout_ms);
	fputs(" };\n", f);
}

static void
dump_profile(FILE *f, const struct config_profile *p)
{
	const char *in = "\t\t";

	fputs("\t{\n", f);
	dump_kv(f, in, "name", p->name);
	dump_match(f, in, &p->match);
	dump_kv(f, in, "queue", p->queue);
	dump_flashing(f, in, p);
	dump_host(f, in, p);
	/* shown only when set: the default (no change of firmware family) is the safe one */
	if (p->allow_migration)
		fprintf(f, "%sallow_migration = true;\n", in);
	dump_app_start(f, in, p);
	dump_kv(f, in, "interface", config_interface_to_string(p->interface));
	if (p->has_power)
		dump_power(f, in, &p->power);
	fputs("\t}", f);
}

void
config_dump(const struct config *cfg, FILE *f)
{
	size_t n_implicit = 0;
	bool first = true;

	fputs("# skrflash configuration, normalized\n", f);
	dump_kv(f, "", "state_dir", cfg->state_dir);
	dump_kv(f, "", "queue_dir", cfg->queue_dir);
	dump_kv(f, "", "runtime_dir", cfg->runtime_dir);
	dump_kv(f, "", "log_level", level_name(cfg->log_level));
	fprintf(f, "max_jobs = %u;\n", cfg->max_jobs);
	fputs("timeouts = {", f);
	dump_seconds(f, "bootloader", cfg->bootloader_timeout_ms);
	dump_seconds(f, "boot", cfg->boot_timeout_ms);
	dump_seconds(f, "step", cfg->step_timeout_ms);
	dump_seconds(f, "leave_grace", cfg->leave_grace_ms);
	dump_seconds(f, "client_idle", cfg->client_idle_ms);
	fputs(" };\n", f);
	fprintf(f, "rejected = { max_days = %u; max_mib = %u; };\n", cfg->rejected_max_days,
		cfg->rejected_max_mib);
	if (cfg->drop_group) {
		fputs("drop_group = ", f);
		dump_string(f, cfg->drop_group);
		fprintf(f, "; # gid %lu\n", (unsigned long)cfg->drop_gid);
	} else {
		fputs("# drop_group: none\n", f);
	}
	if (cfg->control_group) {
		fputs("control_group = ", f);
		dump_string(f, cfg->control_group);
		fprintf(f, "; # gid %lu\n", (unsigned long)cfg->control_gid);
	} else {
		fputs("# control_group: none (root only)\n", f);
	}
	for (size_t i = 0; i < cfg->n_profiles; i++) {
		if (cfg->profiles[i].implicit) {
			n_implicit++;
			continue;
		}
		fputs(first ? "profiles = (\n" : ",\n", f);
		first = false;
		dump_profile(f, &cfg->profiles[i]);
	}
	if (!first)
		fputs("\n);\n", f);
	if (n_implicit)
		fprintf(f, "# %zu implicit catalog profiles\n", n_implicit);
	for (size_t i = 0; i < cfg->n_rescues; i++) {
		const struct config_rescue *r = &cfg->rescues[i];

		fputs(i ? ",\n\t{\n" : "rescue = (\n\t{\n", f);
		dump_kv(f, "\t\t", "device", r->device);
		fprintf(f, "\t\tbaud = %u;\n", r->baud);
		if (r->reset_line)
			dump_kv(f, "\t\t", "reset_line", r->reset_line);
		if (r->boot_line)
			dump_kv(f, "\t\t", "boot_line", r->boot_line);
		if (r->board)
			dump_kv(f, "\t\t", "board", r->board->name);
		fputs("\t}", f);
	}
	if (cfg->n_rescues)
		fputs("\n);\n", f);
}

const struct config_profile *
config_find_profile(const struct config *cfg, const char *name)
{
	if (!cfg || !name)
		return NULL;
	for (size_t i = 0; i < cfg->n_profiles; i++)
		if (strcmp(cfg->profiles[i].name, name) == 0)
			return &cfg->profiles[i];
	return NULL;
}

const struct config_profile *
config_find_queue(const struct config *cfg, const char *queue)
{
	if (!cfg || !queue)
		return NULL;
	for (size_t i = 0; i < cfg->n_profiles; i++)
		if (strcmp(cfg->profiles[i].queue, queue) == 0)
			return &cfg->profiles[i];
	return NULL;
}

uint32_t
config_profile_app_start(const struct config_profile *p)
{
	if (!p)
		return 0;
	if (p->has_app_start)
		return p->app_start;
	if (p->match.board)
		return p->match.board->app_start;
	return 0;
}

const char *
config_method_to_string(enum config_method m)
{
	if ((unsigned)m >= _CONFIG_METHOD_MAX)
		return "unknown";
	return method_names[m];
}

const char *
config_interface_to_string(enum config_interface i)
{
	if ((unsigned)i >= _CONFIG_INTERFACE_MAX)
		return "unknown";
	return interface_names[i];
}

const char *
config_host_to_string(enum config_host h)
{
	if ((unsigned)h >= _CONFIG_HOST_MAX)
		return "unknown";
	return host_names[h];
}
