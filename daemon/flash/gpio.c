/* SPDX-License-Identifier: GPL-2.0-or-later */
/* gpio: RESET and boot-mode lines through libgpiod v1, and a recording fake. See gpio.h. */
#include "flash/gpio.h"

#include <errno.h>
#include <gpiod.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "util.h"

static void
sleep_real(void *ctx, unsigned ms)
{
	struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};

	(void)ctx;
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/* --- libgpiod v1 ---------------------------------------------------------------------- */

struct chardev {
	struct gpiod_line *line[_GPIO_ROLE_MAX];
};

static int
chardev_set(void *ctx, enum gpio_role role, bool asserted)
{
	struct chardev *c = ctx;

	if (!c->line[role])
		return -ENODEV;
	/* ACTIVE_LOW was requested where configured: 1 = asserted */
	return gpiod_line_set_value(c->line[role], asserted ? 1 : 0) < 0 ? -errno : 0;
}

static void
chardev_release(void *ctx)
{
	struct chardev *c = ctx;

	for (size_t i = 0; i < _GPIO_ROLE_MAX; i++) {
		if (!c->line[i])
			continue;
		gpiod_line_release(c->line[i]);
		gpiod_line_close_chip(c->line[i]);
		c->line[i] = NULL;
	}
}

static void
chardev_free(void *ctx)
{
	chardev_release(ctx);
	free(ctx);
}

static const struct gpio_ops chardev_ops = {
    .set = chardev_set,
    .release = chardev_release,
    .sleep_ms = sleep_real,
    .free = chardev_free,
};

static int
request_line(struct chardev *c, enum gpio_role role, const struct gpio_line_config *lc,
	     const char *consumer, char *err, size_t errlen)
{
	int flags = 0;

	c->line[role] = gpiod_line_find(lc->name);
	if (!c->line[role]) {
		int r = errno ? -errno : -ENOENT;

		snprintf(err, errlen,
			 "GPIO line \"%s\" not found on any /dev/gpiochip*: check the name with "
			 "gpioinfo and the rescue section of skrflash.conf",
			 lc->name);
		return r;
	}
	if (lc->open_drain)
		flags |= GPIOD_LINE_REQUEST_FLAG_OPEN_DRAIN;
	if (lc->active_low)
		flags |= GPIOD_LINE_REQUEST_FLAG_ACTIVE_LOW;
	if (gpiod_line_request_output_flags(c->line[role], consumer, flags, 0) < 0) {
		int r = -errno;

		snprintf(err, errlen,
			 "cannot request GPIO line \"%s\" (%s): is another program holding it, "
			 "and may this user open /dev/gpiochip*?",
			 lc->name, strerror(-r));
		gpiod_line_close_chip(c->line[role]);
		c->line[role] = NULL;
		return r;
	}
	return 0;
}

int
gpio_open(const struct gpio_config *cfg, struct gpio **ret, char *err, size_t errlen)
{
	struct chardev *c = xnew(struct chardev);
	struct gpio *g = xnew(struct gpio);
	const char *consumer = cfg->consumer ? cfg->consumer : "skrflash";

	for (size_t i = 0; i < _GPIO_ROLE_MAX; i++) {
		const struct gpio_line_config *lc = &cfg->lines[i];
		int r;

		if (!lc->name || !lc->name[0])
			continue;
		r = request_line(c, (enum gpio_role)i, lc, consumer, err, errlen);
		if (r < 0) {
			chardev_free(c);
			free(g);
			return r;
		}
		g->wired[i] = true;
	}
	g->ops = &chardev_ops;
	g->ctx = c;
	*ret = g;
	return 0;
}

void
gpio_close(struct gpio *g)
{
	if (!g)
		return;
	g->ops->free(g->ctx);
	free(g);
}

int
gpio_set(struct gpio *g, enum gpio_role role, bool asserted)
{
	if (!g->wired[role])
		return -ENODEV;
	return g->ops->set(g->ctx, role, asserted);
}

bool
gpio_wired(const struct gpio *g, enum gpio_role role)
{
	return g && g->wired[role];
}

void
gpio_sleep_ms(struct gpio *g, unsigned ms)
{
	g->ops->sleep_ms(g->ctx, ms);
}

int
gpio_enter_rom(struct gpio *g, unsigned hold_ms, bool release_boot)
{
	int r;

	if (!g->wired[GPIO_ROLE_RESET])
		return -ENODEV;
	if (g->wired[GPIO_ROLE_BOOT] && (r = gpio_set(g, GPIO_ROLE_BOOT, true)) < 0)
		return r;
	if ((r = gpio_set(g, GPIO_ROLE_RESET, true)) < 0)
		return r;
	gpio_sleep_ms(g, 20);
	if ((r = gpio_set(g, GPIO_ROLE_RESET, false)) < 0)
		return r;
	/* UM10360 §32.3.1: P2.10 is sampled up to 3 ms after RESET rises */
	gpio_sleep_ms(g, hold_ms);
	if (release_boot && g->wired[GPIO_ROLE_BOOT])
		return gpio_set(g, GPIO_ROLE_BOOT, false);
	return 0;
}

int
gpio_run(struct gpio *g)
{
	int r;

	if (g->wired[GPIO_ROLE_BOOT] && (r = gpio_set(g, GPIO_ROLE_BOOT, false)) < 0)
		return r;
	if (!g->wired[GPIO_ROLE_RESET])
		return -ENODEV;
	if ((r = gpio_set(g, GPIO_ROLE_RESET, true)) < 0)
		return r;
	gpio_sleep_ms(g, 20);
	r = gpio_set(g, GPIO_ROLE_RESET, false);
	g->ops->release(g->ctx);
	return r;
}

/* --- fake ------------------------------------------------------------------------------ */

struct fake {
	void (*on_set)(void *userdata, enum gpio_role role, bool asserted);
	void *userdata;
	char log[2048];
};

/* One event: "what=v " (v >= 0) or "what ". */
static void
fake_log(struct fake *f, const char *what, long v)
{
	size_t n = strlen(f->log);

	if (n + 40 >= sizeof(f->log))
		return;
	if (v >= 0)
		snprintf(f->log + n, sizeof(f->log) - n, "%s=%ld ", what, v);
	else
		snprintf(f->log + n, sizeof(f->log) - n, "%s ", what);
}

static int
fake_set(void *ctx, enum gpio_role role, bool asserted)
{
	struct fake *f = ctx;

	fake_log(f, role == GPIO_ROLE_RESET ? "reset" : "boot", asserted);
	if (f->on_set)
		f->on_set(f->userdata, role, asserted);
	return 0;
}

static void
fake_release(void *ctx)
{
	fake_log(ctx, "release", -1);
}

static void
fake_sleep(void *ctx, unsigned ms)
{
	fake_log(ctx, "sleep", ms);
}

static const struct gpio_ops fake_ops = {
    .set = fake_set,
    .release = fake_release,
    .sleep_ms = fake_sleep,
    .free = free,
};

struct gpio *
gpio_fake_new(bool reset_wired, bool boot_wired,
	      void (*on_set)(void *userdata, enum gpio_role role, bool asserted), void *userdata)
{
	struct gpio *g = xnew(struct gpio);
	struct fake *f = xnew(struct fake);

	f->on_set = on_set;
	f->userdata = userdata;
	g->ops = &fake_ops;
	g->ctx = f;
	g->wired[GPIO_ROLE_RESET] = reset_wired;
	g->wired[GPIO_ROLE_BOOT] = boot_wired;
	return g;
}

const char *
gpio_fake_log(const struct gpio *g)
{
	return g->ops == &fake_ops ? ((const struct fake *)g->ctx)->log : "";
}
