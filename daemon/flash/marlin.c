/* SPDX-License-Identifier: GPL-2.0-or-later */
/* flash/marlin: G-code client for Marlin (see marlin.h). */
#include "flash/marlin.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>

#include "log.h"
#include "util.h"

static void mc_error(struct marlin_client *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
mc_error(struct marlin_client *c, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	(void)vsnprintf(c->error, sizeof(c->error), fmt, ap);
	va_end(ap);
}

int
marlin_client_open(struct marlin_client *c, const char *tty)
{
	struct termios t;

	memset(c, 0, sizeof(*c));
	(void)str_copy(c->tty, sizeof(c->tty), tty);
	/* TIOCEXCL of another skrflash worker (a short M115 question): it is gone in moments */
	for (int i = 0; i < 30; i++) {
		c->fd = open(tty, O_RDWR | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);
		if (c->fd >= 0 || errno != EBUSY)
			break;
		(void)poll(NULL, 0, 100);
	}
	if (c->fd < 0) {
		int e = -errno;

		mc_error(c, "cannot open %s: %s", tty, strerror(-e));
		return e;
	}
	if (ioctl(c->fd, TIOCEXCL) < 0 && errno != ENOTTY)
		log_debug_errno(-errno, "marlin: TIOCEXCL on %s", tty);
	if (tcgetattr(c->fd, &t) == 0) {
		cfmakeraw(&t);
		t.c_cflag |= CLOCAL | CREAD;
		(void)cfsetspeed(&t, B115200);
		if (tcsetattr(c->fd, TCSANOW, &t) < 0)
			log_debug_errno(-errno, "marlin: raw mode on %s", tty);
	}
	(void)tcflush(c->fd, TCIOFLUSH);
	return 0;
}

void
marlin_client_close(struct marlin_client *c)
{
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
}

int
marlin_client_send(struct marlin_client *c, const char *cmd)
{
	char line[128];
	int n = snprintf(line, sizeof(line), "%s\n", cmd);
	size_t done = 0;

	if (n < 0 || (size_t)n >= sizeof(line))
		return -EINVAL;
	while (done < (size_t)n) {
		ssize_t w = write(c->fd, line + done, (size_t)n - done);

		if (w < 0 && errno == EAGAIN) {
			struct pollfd p = {.fd = c->fd, .events = POLLOUT};

			if (poll(&p, 1, 1000) <= 0) {
				mc_error(c, "%s: cannot send %s: the port does not take data",
					 c->tty, cmd);
				return -ETIMEDOUT;
			}
			continue;
		}
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0) {
			int e = -errno;

			mc_error(c, "%s: cannot send %s: %s", c->tty, cmd, strerror(-e));
			return e == -EIO ? -ENODEV : e;
		}
		done += (size_t)w;
	}
	return 0;
}

/* The next whole line (without "\r\n") into LINE, waiting until DEADLINE (monotonic us).
 * 1 with a line, 0 at the deadline, -ENODEV when the port is gone. */
static int
read_line(struct marlin_client *c, char *line, size_t size, uint64_t deadline)
{
	for (;;) {
		char *nl = memchr(c->in, '\n', c->in_len);
		uint64_t now;
		struct pollfd p = {.fd = c->fd, .events = POLLIN};
		ssize_t n;

		if (nl) {
			size_t l = (size_t)(nl - c->in), k = l < size - 1 ? l : size - 1;

			memcpy(line, c->in, k);
			line[k] = 0;
			if (k && line[k - 1] == '\r')
				line[k - 1] = 0;
			memmove(c->in, nl + 1, c->in_len - l - 1);
			c->in_len -= l + 1;
			return 1;
		}
		if (c->in_len == sizeof(c->in))
			c->in_len = 0; /* a line longer than any Marlin prints: noise */
		now = now_monotonic_usec();
		if (now >= deadline)
			return 0;
		if (poll(&p, 1, (int)((deadline - now) / 1000 + 1)) < 0 && errno != EINTR)
			return -errno;
		if (p.revents & (POLLHUP | POLLERR | POLLNVAL))
			return -ENODEV;
		if (!(p.revents & POLLIN))
			continue;
		n = read(c->fd, c->in + c->in_len, sizeof(c->in) - c->in_len);
		if (n == 0 || (n < 0 && errno == EIO))
			return -ENODEV;
		if (n > 0)
			c->in_len += (size_t)n;
	}
}

int
marlin_client_command(struct marlin_client *c, const char *cmd, unsigned timeout_ms, char *reply,
		      size_t replylen)
{
	uint64_t span = (uint64_t)(timeout_ms ? timeout_ms : MARLIN_TIMEOUT_MS) * 1000u;
	uint64_t deadline = now_monotonic_usec() + span;
	size_t used = 0;
	int r;

	if (reply && replylen)
		reply[0] = 0;
	/* the start-up banner, an earlier command's late lines: not this command's */
	for (;;) {
		char junk[512];
		ssize_t n = read(c->fd, junk, sizeof(junk));

		if (n <= 0)
			break;
	}
	c->in_len = 0;
	r = marlin_client_send(c, cmd);
	if (r < 0)
		return r;
	for (;;) {
		char line[512];

		r = read_line(c, line, sizeof(line), deadline);
		if (r == 0) {
			mc_error(c, "%s: no \"ok\" from Marlin to %s within %u ms", c->tty, cmd,
				 (unsigned)(span / 1000));
			return -ETIMEDOUT;
		}
		if (r < 0) {
			mc_error(c, "%s went away while waiting for the answer to %s", c->tty, cmd);
			return -ENODEV;
		}
		switch (marlin_line_kind(line)) {
		case MARLIN_LINE_OK:
			return 0;
		case MARLIN_LINE_BUSY:
			deadline = now_monotonic_usec() + span; /* host_keepalive: still working */
			continue;
		case MARLIN_LINE_ERROR:
		case MARLIN_LINE_RESEND:
			mc_error(c, "%s: Marlin answered %s with \"%s\"", c->tty, cmd, line);
			return -EIO;
		case MARLIN_LINE_OTHER:
		default:
			break;
		}
		if (reply && used + strlen(line) + 2 <= replylen) {
			memcpy(reply + used, line, strlen(line));
			used += strlen(line);
			reply[used++] = '\n';
			reply[used] = 0;
		}
	}
}

int
marlin_client_identify(struct marlin_client *c, struct marlin_info *info)
{
	char reply[2048];
	int r = marlin_client_command(c, "M115", 0, reply, sizeof(reply));

	if (r < 0)
		return r;
	for (char *save = NULL, *l = strtok_r(reply, "\n", &save); l;
	     l = strtok_r(NULL, "\n", &save))
		if (marlin_parse_m115(l, info) == 0)
			return 0;
	mc_error(c, "%s answers M115 without a Marlin FIRMWARE_NAME line", c->tty);
	return -EPROTONOSUPPORT;
}

int
marlin_client_sd_status(struct marlin_client *c, bool *printing, uint64_t *pos, uint64_t *size)
{
	char reply[1024];
	int r = marlin_client_command(c, "M27", 0, reply, sizeof(reply));

	if (r < 0)
		return r;
	for (char *save = NULL, *l = strtok_r(reply, "\n", &save); l;
	     l = strtok_r(NULL, "\n", &save))
		if (marlin_parse_sd_status(l, printing, pos, size) == 0)
			return 0;
	mc_error(c, "%s: Marlin answers M27 without an SD status: built without SDSUPPORT?",
		 c->tty);
	return -EPROTONOSUPPORT;
}
