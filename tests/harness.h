/* SPDX-License-Identifier: GPL-2.0-or-later */
/* harness: the three-macro unit-test harness. A failed check prints file:line and the
 * values, and the test program exits 1 at the end (TEST_DONE) so every failure shows. */
#pragma once

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int harness_failed;
static int harness_checks;

#define CHECK(cond)                                                                                \
	do {                                                                                       \
		harness_checks++;                                                                  \
		if (!(cond)) {                                                                     \
			fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);   \
			harness_failed++;                                                          \
		}                                                                                  \
	} while (0)

#define CHECK_EQ_INT(a, b)                                                                         \
	do {                                                                                       \
		long long ha_ = (long long)(a), hb_ = (long long)(b);                              \
		harness_checks++;                                                                  \
		if (ha_ != hb_) {                                                                  \
			fprintf(stderr, "%s:%d: %s == %s failed: %lld != %lld\n", __FILE__,        \
				__LINE__, #a, #b, ha_, hb_);                                       \
			harness_failed++;                                                          \
		}                                                                                  \
	} while (0)

#define CHECK_STREQ(a, b)                                                                          \
	do {                                                                                       \
		const char *ha_ = (a), *hb_ = (b);                                                 \
		harness_checks++;                                                                  \
		if (!ha_ || !hb_ || strcmp(ha_, hb_) != 0) {                                       \
			fprintf(stderr, "%s:%d: %s == %s failed: '%s' != '%s'\n", __FILE__,        \
				__LINE__, #a, #b, ha_ ? ha_ : "(null)", hb_ ? hb_ : "(null)");     \
			harness_failed++;                                                          \
		}                                                                                  \
	} while (0)

#define TEST_DONE()                                                                                \
	do {                                                                                       \
		fprintf(stderr, "%s: %d checks, %d failed\n", __FILE__, harness_checks,            \
			harness_failed);                                                           \
		return harness_failed ? 1 : 0;                                                     \
	} while (0)
