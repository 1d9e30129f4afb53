/* SPDX-License-Identifier: GPL-2.0-or-later */
/* util: allocation that aborts on OOM, file helpers, hashing. Keep it small. */
#pragma once

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ELEMENTSOF(a) (sizeof(a) / sizeof((a)[0]))
#define SHA256_HEX_LEN 64

/* OOM aborts here, in one place; external input must be size-limited before allocating. */
void *xmalloc(size_t size);
void *xcalloc(size_t n, size_t size);
void *xreallocarray(void *p, size_t n, size_t size);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);
char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
#define xnew(T) ((T *)xcalloc(1, sizeof(T)))
#define xnew_array(T, n) ((T *)xcalloc((n), sizeof(T)))

/* Frees every string of a NULL-terminated vector and the vector; returns NULL. */
char **strv_free(char **v);
size_t strv_length(char *const *v);
/* A NULL-terminated vector of copies of the arguments up to NULL (strv_free() it). */
char **strv_new(const char *first, ...);
/* Append copies of first and the va_list strings up to NULL to v (NULL = empty). */
char **strv_append_va(char **v, const char *first, va_list ap);

/* close() that keeps errno and accepts -1; returns -1 for `fd = close_fd(fd);`. */
int close_fd(int fd);

/* Read a whole regular file of at most max bytes. 0 or -errno (-EFBIG when larger). */
int read_file(const char *path, size_t max, uint8_t **ret_data, size_t *ret_size);
/* Write atomically: tmp file in the same directory, fsync, rename, fsync the directory. */
int write_file_atomic(const char *path, const void *data, size_t size, unsigned mode);
/* mkdir -p with mode for the created components. */
int mkdir_p(const char *path, unsigned mode);
int fsync_dir_of(const char *path);

/* SHA-256 of a buffer as 64 lowercase hex characters plus NUL. */
void sha256_hex(const void *data, size_t size, char ret[SHA256_HEX_LEN + 1]);
bool sha256_hex_valid(const char *s);

/* Monotonic and wall clocks. */
uint64_t now_monotonic_usec(void);
int64_t now_realtime_sec(void);
/* ISO 8601 UTC "2026-11-24T05:04:04Z" of a UNIX time. */
void format_time_iso(int64_t t, char *buf, size_t len);

/* Copy src into dst of size bytes, always NUL-terminated; true if it fit. */
bool str_copy(char *dst, size_t size, const char *src);

/* "Did you mean": the candidate closest to a mistyped word, or NULL when none is close
 * (edit distance at most a third of the word, at least 2; case-insensitive). Feed every
 * candidate through str_closest_add, then read closest->best. */
struct str_closest {
	const char *word;
	const char *best;
	size_t dist;
};
void str_closest_add(struct str_closest *c, const char *candidate);

/* Escape a string for one-line output, JSON and the journal: control characters, backslash
 * and bytes that are not UTF-8 as \xNN. */
void escape_name(const char *s, char *buf, size_t len);
/* Parse an unsigned number in C syntax (0x.. hex or decimal) with range check. */
int parse_u32(const char *s, uint32_t *ret);
/* Parse decimal digits at s that end at the character `stop` (e.g. '/' or '\0'), at most max;
 * returns the position of `stop`, or NULL if s does not hold such a number there. */
const char *parse_decimal_to(const char *s, char stop, unsigned long long max,
			     unsigned long long *ret);
