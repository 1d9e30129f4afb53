/* SPDX-License-Identifier: GPL-2.0-or-later */
/* test_util: the number parsers of util.h, which read untrusted text (environment variables,
 * device node names, config values). */
#include <stdarg.h>
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <string.h>

#include "harness.h"
#include "util.h"

static void
test_parse_decimal_to(void)
{
	const char *node = "/dev/bus/usb/003/017";
	unsigned long long v = 7;
	const char *p;

	/* the usbfs node form: a component up to '/', the last one up to the end */
	p = parse_decimal_to(node + 13, '/', 255, &v);
	CHECK(p == node + 16);
	CHECK_EQ_INT(v, 3);
	p = parse_decimal_to(p + 1, '\0', 255, &v);
	CHECK(p && *p == '\0');
	CHECK_EQ_INT(v, 17);

	/* JOURNAL_STREAM's "DEV:INODE" */
	p = parse_decimal_to("2049:18446744073709551615", ':', ULLONG_MAX, &v);
	CHECK(p && *p == ':');
	CHECK_EQ_INT(v, 2049);
	CHECK(parse_decimal_to(p + 1, '\0', ULLONG_MAX, &v) != NULL);
	CHECK(v == ULLONG_MAX);

	/* rejected: not at the stop character, out of range, overflow, no digits, a sign or a
	 * space (strtoull alone would take those), and *ret stays untouched */
	v = 42;
	CHECK(parse_decimal_to("12x", '\0', 255, &v) == NULL);
	CHECK(parse_decimal_to("12", '/', 255, &v) == NULL);
	CHECK(parse_decimal_to("256", '\0', 255, &v) == NULL);
	CHECK(parse_decimal_to("18446744073709551616", '\0', ULLONG_MAX, &v) == NULL);
	CHECK(parse_decimal_to("", '\0', 255, &v) == NULL);
	CHECK(parse_decimal_to("/1", '/', 255, &v) == NULL);
	CHECK(parse_decimal_to("-1", '\0', ULLONG_MAX, &v) == NULL);
	CHECK(parse_decimal_to("+1", '\0', 255, &v) == NULL);
	CHECK(parse_decimal_to(" 1", '\0', 255, &v) == NULL);
	CHECK_EQ_INT(v, 42);

	/* decimal, not C syntax: a leading zero is no octal prefix, 0x is no hex */
	CHECK(parse_decimal_to("010", '\0', 255, &v) != NULL);
	CHECK_EQ_INT(v, 10);
	CHECK(parse_decimal_to("0x10", '\0', 255, &v) == NULL);
}

static void
test_parse_u32(void)
{
	uint32_t v = 0;

	CHECK_EQ_INT(parse_u32("0x08008000", &v), 0);
	CHECK_EQ_INT(v, 0x08008000);
	CHECK_EQ_INT(parse_u32("4096", &v), 0);
	CHECK_EQ_INT(v, 4096);
	CHECK_EQ_INT(parse_u32("4294967296", &v), -ERANGE);
	CHECK_EQ_INT(parse_u32("-1", &v), -EINVAL);
	CHECK_EQ_INT(parse_u32("12k", &v), -ERANGE);
	CHECK_EQ_INT(v, 4096);
}

static char **
append(char **v, const char *first, ...)
{
	va_list ap;

	va_start(ap, first);
	v = strv_append_va(v, first, ap);
	va_end(ap);
	return v;
}

static void
test_strv(void)
{
	char **v = strv_new("a", "bb", NULL);

	CHECK_EQ_INT(strv_length(v), 2);
	CHECK_STREQ(v[0], "a");
	CHECK_STREQ(v[1], "bb");
	CHECK(v[2] == NULL);
	v = append(v, "c", NULL);
	CHECK_EQ_INT(strv_length(v), 3);
	CHECK_STREQ(v[2], "c");
	v = strv_free(v);
	v = strv_new(NULL);
	CHECK(v && v[0] == NULL);
	strv_free(v);
}

/* "did you mean": the closest candidate within reach, or none */
static const char *
closest(const char *word, const char *const *cands)
{
	struct str_closest c = {.word = word};

	for (size_t i = 0; cands[i]; i++)
		str_closest_add(&c, cands[i]);
	return c.best;
}

static void
test_closest(void)
{
	static const char *const boards[] = {"octopus-f446", "octopus-pro-f446", "skr-pico",
					     "manta-m8p", NULL};
	static const char *const cmds[] = {"status", "boards", "queue", "queued", NULL};

	CHECK_STREQ(closest("octopus-f447", boards), "octopus-f446");
	CHECK_STREQ(closest("OCTOPUS-F446X", boards), "octopus-f446");
	CHECK_STREQ(closest("skr-pcio", boards), "skr-pico");
	CHECK_STREQ(closest("stauts", cmds), "status");
	CHECK_STREQ(closest("queu", cmds), "queue");
	CHECK(closest("xyz", cmds) == NULL);
	CHECK(closest("history", cmds) == NULL);
	/* the word itself is no suggestion */
	CHECK(closest("queue", (const char *const[]){"queue", NULL}) == NULL);
}

/* names go into JSON and the journal: anything that is not UTF-8 is escaped */
static void
test_escape_name(void)
{
	char buf[64];

	escape_name("caf\xc3\xa9.bin", buf, sizeof(buf));
	CHECK_STREQ(buf, "caf\xc3\xa9.bin");
	escape_name("caf\xe9.bin", buf, sizeof(buf));
	CHECK_STREQ(buf, "caf\\xe9.bin");
	escape_name("a\nb\\", buf, sizeof(buf));
	CHECK_STREQ(buf, "a\\x0ab\\x5c");
	escape_name("\xc0\xaf \xed\xa0\x80 \xf4\x90\x80\x80", buf,
		    sizeof(buf)); /* overlong, surrogate */
	CHECK_STREQ(buf, "\\xc0\\xaf \\xed\\xa0\\x80 \\xf4\\x90\\x80\\x80");
}

int
main(void)
{
	test_closest();
	test_escape_name();
	test_strv();
	test_parse_decimal_to();
	test_parse_u32();
	TEST_DONE();
}
