/* SPDX-License-Identifier: GPL-2.0-or-later */
/* log: journal with structured fields, or stderr with "<N>" prefixes (see log.h). */
#include "log.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <systemd/sd-journal.h>

#include "util.h"

/* journald's native socket; libsystemd hard-codes it and drops messages when it is absent */
#define JOURNAL_SOCKET "/run/systemd/journal/socket"

static int max_prio = LOG_INFO;
static bool to_journal;
static const char *prog_ident;

static bool
stderr_is_journal(void)
{
	const char *e = getenv("JOURNAL_STREAM");
	unsigned long long dev, ino;
	struct stat st;

	/* "DEV:INODE" (systemd.exec(5)) */
	if (!e || !(e = parse_decimal_to(e, ':', ULLONG_MAX, &dev)) ||
	    !parse_decimal_to(e + 1, '\0', ULLONG_MAX, &ino))
		return false;
	if (fstat(STDERR_FILENO, &st) < 0)
		return false;
	return (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

void
log_open(enum log_target target, int max_priority, const char *ident)
{
	max_prio = max_priority;
	prog_ident = ident;
	switch (target) {
	case LOG_TARGET_JOURNAL:
		to_journal = access(JOURNAL_SOCKET, W_OK) == 0;
		break;
	case LOG_TARGET_AUTO:
		to_journal = stderr_is_journal() && access(JOURNAL_SOCKET, W_OK) == 0;
		break;
	case LOG_TARGET_STDERR:
	default:
		to_journal = false;
		break;
	}
}

void
log_set_max_priority(int max_priority)
{
	max_prio = max_priority;
}

int
log_get_max_priority(void)
{
	return max_prio;
}

static void
append_field(char *buf, size_t size, size_t *len, const char *key, const char *val)
{
	int n;

	if (!val || !*val || *len >= size)
		return;
	n = snprintf(buf + *len, size - *len, "%s%s=%s", *len ? " " : "", key, val);
	if (n > 0)
		*len += (size_t)n < size - *len ? (size_t)n : size - *len - 1;
}

static void
to_stderr(int priority, const char *msg, const struct log_fields *f)
{
	char fields[768] = "";
	size_t len = 0;

	if (f) {
		append_field(fields, sizeof(fields), &len, "board", f->board);
		append_field(fields, sizeof(fields), &len, "port", f->port);
		append_field(fields, sizeof(fields), &len, "serial", f->serial);
		append_field(fields, sizeof(fields), &len, "mode", f->mode);
		append_field(fields, sizeof(fields), &len, "profile", f->profile);
		append_field(fields, sizeof(fields), &len, "sha256", f->sha256);
		append_field(fields, sizeof(fields), &len, "job", f->job);
		append_field(fields, sizeof(fields), &len, "step", f->step);
		append_field(fields, sizeof(fields), &len, "state", f->state);
	}
	/* one write per line keeps lines whole when workers share the stream */
	if (len)
		dprintf(STDERR_FILENO, "<%d>%s%s%s [%s]\n", priority, prog_ident ? prog_ident : "",
			prog_ident ? ": " : "", msg, fields);
	else
		dprintf(STDERR_FILENO, "<%d>%s%s%s\n", priority, prog_ident ? prog_ident : "",
			prog_ident ? ": " : "", msg);
}

static void
add_iov(struct iovec *iov, char bufs[][320], size_t *n, const char *key, const char *val)
{
	int len;

	if (!val || !*val)
		return;
	len = snprintf(bufs[*n], sizeof(bufs[0]), "%s=%s", key, val);
	if (len < 0)
		return;
	iov[*n].iov_base = bufs[*n];
	iov[*n].iov_len = (size_t)len < sizeof(bufs[0]) ? (size_t)len : sizeof(bufs[0]) - 1;
	(*n)++;
}

static int
to_journald(int priority, const char *msg, const struct log_fields *f)
{
	struct iovec iov[12];
	/* cppcheck-suppress variableScope ; iov points into bufs until sd_journal_sendv */
	char bufs[12][320];
	char head[2100];
	char prio[16];
	size_t n = 0;
	int len;

	len = snprintf(head, sizeof(head), "MESSAGE=%s", msg);
	iov[n].iov_base = head;
	iov[n++].iov_len = (size_t)len < sizeof(head) ? (size_t)len : sizeof(head) - 1;
	len = snprintf(prio, sizeof(prio), "PRIORITY=%d", priority);
	iov[n].iov_base = prio;
	iov[n++].iov_len = (size_t)len;
	if (f) {
		/* only present fields: an empty SKRFLASH_X= would match every journalctl filter */
		add_iov(iov, bufs, &n, "MESSAGE_ID", f->message_id);
		add_iov(iov, bufs, &n, "SKRFLASH_BOARD", f->board);
		add_iov(iov, bufs, &n, "SKRFLASH_PORT", f->port);
		add_iov(iov, bufs, &n, "SKRFLASH_SERIAL", f->serial);
		add_iov(iov, bufs, &n, "SKRFLASH_MODE", f->mode);
		add_iov(iov, bufs, &n, "SKRFLASH_PROFILE", f->profile);
		add_iov(iov, bufs, &n, "SKRFLASH_SHA256", f->sha256);
		add_iov(iov, bufs, &n, "SKRFLASH_JOB", f->job);
		add_iov(iov, bufs, &n, "SKRFLASH_STEP", f->step);
		add_iov(iov, bufs, &n, "SKRFLASH_STATE", f->state);
	}
	return sd_journal_sendv(iov, (int)n);
}

int
log_full(int priority, int err, const struct log_fields *f, const char *fmt, ...)
{
	int saved = errno;
	char msg[2048];
	va_list ap;
	size_t len;

	if (priority > max_prio)
		goto out;
	va_start(ap, fmt);
	(void)vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	len = strlen(msg);
	if (err < 0 && len < sizeof(msg))
		(void)snprintf(msg + len, sizeof(msg) - len, ": %s", strerror(-err));
	if (!to_journal || to_journald(priority, msg, f) < 0)
		to_stderr(priority, msg, f);
out:
	errno = saved;
	return err;
}
