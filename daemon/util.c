/* SPDX-License-Identifier: GPL-2.0-or-later */
/* util: small helpers shared by every module (see util.h). */
#include "util.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

static void
oom(void)
{
	static const char msg[] = "<2>out of memory\n";

	(void)!write(STDERR_FILENO, msg, sizeof(msg) - 1);
	abort();
}

void *
xmalloc(size_t size)
{
	void *p = malloc(size ? size : 1);

	if (!p)
		oom();
	return p;
}

void *
xcalloc(size_t n, size_t size)
{
	void *p = calloc(n ? n : 1, size ? size : 1);

	if (!p)
		oom();
	return p;
}

void *
xreallocarray(void *p, size_t n, size_t size)
{
	void *q;

	if (size && n > SIZE_MAX / size)
		oom();
	q = realloc(p, n && size ? n * size : 1);
	if (!q)
		oom();
	return q;
}

char *
xstrdup(const char *s)
{
	char *p = strdup(s);

	if (!p)
		oom();
	return p;
}

char *
xstrndup(const char *s, size_t n)
{
	char *p = strndup(s, n);

	if (!p)
		oom();
	return p;
}

char *
xasprintf(const char *fmt, ...)
{
	va_list ap;
	char *p;
	int r;

	va_start(ap, fmt);
	r = vasprintf(&p, fmt, ap);
	va_end(ap);
	if (r < 0)
		oom();
	return p;
}

char **
strv_free(char **v)
{
	if (!v)
		return NULL;
	for (char **p = v; *p; p++)
		free(*p);
	free(v);
	return NULL;
}

size_t
strv_length(char *const *v)
{
	size_t n = 0;

	while (v && v[n])
		n++;
	return n;
}

char **
strv_append_va(char **v, const char *first, va_list ap)
{
	size_t n = strv_length(v);

	if (!v)
		v = xnew_array(char *, 1);
	for (const char *a = first; a; a = va_arg(ap, const char *)) {
		v = xreallocarray(v, n + 2, sizeof(char *));
		v[n++] = xstrdup(a);
	}
	v[n] = NULL;
	return v;
}

char **
strv_new(const char *first, ...)
{
	va_list ap;
	char **v;

	va_start(ap, first);
	v = strv_append_va(NULL, first, ap);
	va_end(ap);
	return v;
}

int
close_fd(int fd)
{
	int saved = errno;

	if (fd >= 0)
		(void)close(fd);
	errno = saved;
	return -1;
}

int
read_file(const char *path, size_t max, uint8_t **ret_data, size_t *ret_size)
{
	uint8_t *buf = NULL;
	struct stat st;
	size_t got = 0;
	int fd, r;

	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0) {
		r = -errno;
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		r = S_ISDIR(st.st_mode) ? -EISDIR : -EINVAL;
		goto out;
	}
	if ((uint64_t)st.st_size > max) {
		r = -EFBIG;
		goto out;
	}
	buf = xmalloc((size_t)st.st_size + 1);
	while (got < (size_t)st.st_size) {
		ssize_t n = read(fd, buf + got, (size_t)st.st_size - got);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			r = -errno;
			goto out;
		}
		if (n == 0)
			break;
		got += (size_t)n;
	}
	buf[got] = 0;
	*ret_data = buf;
	*ret_size = got;
	buf = NULL;
	r = 0;
out:
	free(buf);
	close_fd(fd);
	return r;
}

int
fsync_dir_of(const char *path)
{
	char *copy = xstrdup(path);
	int fd, r = 0;

	fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0 || fsync(fd) < 0)
		r = -errno;
	close_fd(fd);
	free(copy);
	return r;
}

int
write_file_atomic(const char *path, const void *data, size_t size, unsigned mode)
{
	char *tmp = xasprintf("%s.%ld.tmp", path, (long)getpid());
	const uint8_t *p = data;
	size_t done = 0;
	int fd, r;

	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, (mode_t)mode);
	if (fd < 0) {
		r = -errno;
		goto out;
	}
	while (done < size) {
		ssize_t n = write(fd, p + done, size - done);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			r = -errno;
			goto fail;
		}
		done += (size_t)n;
	}
	if (fsync(fd) < 0 || close(fd) < 0) {
		r = -errno;
		fd = -1;
		goto fail;
	}
	fd = -1;
	if (rename(tmp, path) < 0) {
		r = -errno;
		goto fail;
	}
	r = fsync_dir_of(path);
	goto out;
fail:
	close_fd(fd);
	(void)unlink(tmp);
out:
	free(tmp);
	return r;
}

int
mkdir_p(const char *path, unsigned mode)
{
	char *p = xstrdup(path);
	int r = 0;

	for (char *s = p + 1; *s; s++) {
		if (*s != '/')
			continue;
		*s = 0;
		if (mkdir(p, (mode_t)mode) < 0 && errno != EEXIST) {
			r = -errno;
			goto out;
		}
		*s = '/';
	}
	if (mkdir(p, (mode_t)mode) < 0 && errno != EEXIST)
		r = -errno;
out:
	free(p);
	return r;
}

void
sha256_hex(const void *data, size_t size, char ret[SHA256_HEX_LEN + 1])
{
	static const char hex[] = "0123456789abcdef";
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int n = 0;

	if (!EVP_Digest(data, size, md, &n, EVP_sha256(), NULL) || n != 32)
		abort(); /* libcrypto without SHA-256 cannot happen on a supported system */
	for (size_t i = 0; i < n; i++) {
		ret[2 * i] = hex[md[i] >> 4];
		ret[2 * i + 1] = hex[md[i] & 15];
	}
	ret[SHA256_HEX_LEN] = 0;
}

bool
sha256_hex_valid(const char *s)
{
	size_t i;

	for (i = 0; s[i]; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return false;
	return i == SHA256_HEX_LEN;
}

uint64_t
now_monotonic_usec(void)
{
	struct timespec ts;

	(void)clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

int64_t
now_realtime_sec(void)
{
	return (int64_t)time(NULL);
}

void
format_time_iso(int64_t t, char *buf, size_t len)
{
	time_t tt = (time_t)t;
	struct tm tm;

	if (!gmtime_r(&tt, &tm) || !strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm))
		(void)snprintf(buf, len, "-");
}

bool
str_copy(char *dst, size_t size, const char *src)
{
	size_t n = strlen(src);

	if (!size)
		return false;
	if (n >= size) {
		memcpy(dst, src, size - 1);
		dst[size - 1] = 0;
		return false;
	}
	memcpy(dst, src, n + 1);
	return true;
}

/* Levenshtein distance with a single row; names are short (<= 64 characters considered). */
static size_t
edit_distance(const char *a, const char *b)
{
	size_t la = strnlen(a, 64), lb = strnlen(b, 64), row[65];

	for (size_t j = 0; j <= lb; j++)
		row[j] = j;
	for (size_t i = 1; i <= la; i++) {
		size_t diag = row[0];

		row[0] = i;
		for (size_t j = 1; j <= lb; j++) {
			size_t up = row[j];
			size_t cost =
			    tolower((unsigned char)a[i - 1]) != tolower((unsigned char)b[j - 1]);
			size_t best = diag + cost;

			if (up + 1 < best)
				best = up + 1;
			if (row[j - 1] + 1 < best)
				best = row[j - 1] + 1;
			row[j] = best;
			diag = up;
		}
	}
	return row[lb];
}

void
str_closest_add(struct str_closest *c, const char *candidate)
{
	size_t len = strlen(c->word), limit = len / 3 > 2 ? len / 3 : 2, d;

	if (!candidate || !*candidate || strcasecmp(candidate, c->word) == 0)
		return;
	d = edit_distance(c->word, candidate);
	/* "octopus" for "octopus-f446": a unique prefix is as good as a small typo */
	if (len >= 3 && strncasecmp(candidate, c->word, len) == 0 && d > limit)
		d = limit;
	if (d > limit || (c->best && d >= c->dist))
		return;
	c->best = candidate;
	c->dist = d;
}

/* Length of the well-formed UTF-8 sequence at s (RFC 3629: no overlongs, no surrogates,
 * nothing above U+10FFFF), 0 if it is not one. */
static size_t
utf8_sequence(const char *s)
{
	const unsigned char *u = (const unsigned char *)s;
	size_t n;
	uint32_t cp;

	if (u[0] < 0x80)
		return 1;
	if (u[0] >= 0xc2 && u[0] <= 0xdf) {
		n = 2;
		cp = u[0] & 0x1fu;
	} else if (u[0] >= 0xe0 && u[0] <= 0xef) {
		n = 3;
		cp = u[0] & 0x0fu;
	} else if (u[0] >= 0xf0 && u[0] <= 0xf4) {
		n = 4;
		cp = u[0] & 0x07u;
	} else {
		return 0;
	}
	for (size_t i = 1; i < n; i++) {
		if ((u[i] & 0xc0) != 0x80)
			return 0;
		cp = cp << 6 | (u[i] & 0x3fu);
	}
	if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
	    (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return n;
}

void
escape_name(const char *s, char *buf, size_t len)
{
	size_t o = 0;

	if (!len)
		return;
	for (; *s && o + 5 < len; s++) {
		unsigned char c = (unsigned char)*s;
		size_t n = c >= 0x80 ? utf8_sequence(s) : 1;

		if (c < 0x20 || c == 0x7f || c == '\\' || n == 0) {
			/* control characters, and bytes that are not UTF-8 (the text goes into
			 * JSON and the journal, which must be UTF-8) */
			o += (size_t)snprintf(buf + o, len - o, "\\x%02x", c);
		} else if (o + n + 5 < len) {
			memcpy(buf + o, s, n);
			o += n;
			s += n - 1;
		} else {
			break;
		}
	}
	buf[o] = 0;
}

int
parse_u32(const char *s, uint32_t *ret)
{
	unsigned long long v;
	char *end;

	if (!s || !*s || *s == '-' || *s == '+')
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 0);
	if (errno || *end || v > UINT32_MAX)
		return -ERANGE;
	*ret = (uint32_t)v;
	return 0;
}

const char *
parse_decimal_to(const char *s, char stop, unsigned long long max, unsigned long long *ret)
{
	unsigned long long v;
	char *end;

	if (*s < '0' || *s > '9') /* strtoull would accept a sign and spaces */
		return NULL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || *end != stop || v > max)
		return NULL;
	*ret = v;
	return end;
}
