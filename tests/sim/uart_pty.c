/* SPDX-License-Identifier: GPL-2.0-or-later */
/* uart_pty: pty pair and feed loop for the UART ROM simulators. See uart_pty.h. */
#include "uart_pty.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

int
uart_pty_open(struct uart_pty *p)
{
	struct termios t;
	const char *name;

	memset(p, 0, sizeof(*p));
	p->master = p->slave = p->stop[0] = p->stop[1] = -1;
	p->master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
	if (p->master < 0 || grantpt(p->master) < 0 || unlockpt(p->master) < 0)
		goto fail;
	name = ptsname(p->master);
	if (!name || strlen(name) >= sizeof(p->path))
		goto fail;
	strcpy(p->path, name);
	p->slave = open(p->path, O_RDWR | O_NOCTTY | O_CLOEXEC);
	if (p->slave < 0 || tcgetattr(p->slave, &t) < 0)
		goto fail;
	/* raw 8N1 until the host sets its own mode: no echo of the device's answers */
	cfmakeraw(&t);
	if (tcsetattr(p->slave, TCSANOW, &t) < 0 || pipe2(p->stop, O_CLOEXEC) < 0)
		goto fail;
	return 0;
fail : {
	int r = -errno;

	uart_pty_close(p);
	return r ? r : -EIO;
}
}

int
uart_pty_run(struct uart_pty *p, int stop_fd, uart_pty_feed_fn feed, void *ctx)
{
	for (;;) {
		struct pollfd pf[2] = {{p->master, POLLIN, 0}, {stop_fd, POLLIN, 0}};
		uint8_t buf[4096];
		ssize_t n;

		if (poll(pf, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (pf[1].revents)
			return 0;
		if (!(pf[0].revents & POLLIN))
			continue;
		n = read(p->master, buf, sizeof(buf));
		if (n < 0 && (errno == EINTR || errno == EAGAIN || errno == EIO))
			continue;
		if (n <= 0)
			return n < 0 ? -errno : 0;
		feed(ctx, buf, (size_t)n);
	}
}

static void *
thread_main(void *arg)
{
	struct uart_pty *p = arg;

	(void)uart_pty_run(p, p->stop[0], p->feed, p->ctx);
	return NULL;
}

int
uart_pty_start(struct uart_pty *p, uart_pty_feed_fn feed, void *ctx)
{
	p->feed = feed;
	p->ctx = ctx;
	if (pthread_create(&p->thread, NULL, thread_main, p) != 0)
		return -EAGAIN;
	p->running = true;
	return 0;
}

void
uart_pty_stop(struct uart_pty *p)
{
	if (!p->running)
		return;
	if (write(p->stop[1], "x", 1) < 0)
		perror("uart_pty_stop");
	pthread_join(p->thread, NULL);
	p->running = false;
}

void
uart_pty_close(struct uart_pty *p)
{
	int *fds[] = {&p->master, &p->slave, &p->stop[0], &p->stop[1]};

	uart_pty_stop(p);
	for (size_t i = 0; i < sizeof(fds) / sizeof(fds[0]); i++)
		if (*fds[i] >= 0)
			close(*fds[i]);
	p->master = p->slave = p->stop[0] = p->stop[1] = -1;
}

void
uart_pty_write(int fd, const void *buf, size_t len)
{
	const uint8_t *b = buf;

	while (len) {
		ssize_t n = write(fd, b, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN) {
			struct pollfd pf = {fd, POLLOUT, 0};

			(void)poll(&pf, 1, 100);
			continue;
		}
		if (n <= 0)
			return;
		b += n;
		len -= (size_t)n;
	}
}

void
uart_pty_take(uint8_t *in, size_t cap, size_t *in_len, const uint8_t *data, size_t len,
	      void (*run)(void *ctx), void *ctx)
{
	while (len) {
		size_t n = cap - *in_len;

		if (n > len)
			n = len;
		memcpy(in + *in_len, data, n);
		*in_len += n;
		data += n;
		len -= n;
		run(ctx);
		if (*in_len == cap)
			*in_len = 0;
	}
}
