/* SPDX-License-Identifier: GPL-2.0-or-later */
/* gpio: the two lines a UART rescue needs (the MCU's RESET, and its boot-mode line: P2.10 ISP
 * on an LPC176x, BOOT0 on an STM32), behind one small interface.
 *
 * The real backend uses the GPIO character device through libgpiod as Debian 12 and
 * Raspberry Pi OS bookworm ship it (1.6, the v1 API): lines are found by name ("GPIO17"),
 * never by chip number (the Pi 5 moved them between kernels), and requested open-drain and
 * active-low as configured, so the board's own pull-ups win whenever skrflash lets go
 * (research round2-uart-rescue.md §3). Lines are held only during a rescue. The fake backend
 * records every step and can drive a simulated board; gpio-sim is not available on CI. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

enum gpio_role {
	GPIO_ROLE_RESET, /* low resets the MCU */
	GPIO_ROLE_BOOT,	 /* LPC ISP (P2.10, asserted = low) or STM32 BOOT0 (asserted = high) */
	_GPIO_ROLE_MAX,
};

struct gpio_line_config {
	const char *name; /* line name as the kernel reports it; NULL or "" = not wired */
	bool active_low;  /* asserted = electrically low */
	bool open_drain;  /* drive low or let go; never drive high */
};

struct gpio_config {
	const char *consumer; /* shown by gpioinfo while held, e.g. "skrflash-rescue" */
	struct gpio_line_config lines[_GPIO_ROLE_MAX];
};

struct gpio_ops {
	/* assert (true) or deassert a line; -ENODEV when the role is not wired */
	int (*set)(void *ctx, enum gpio_role role, bool asserted);
	/* let go of every line: inputs again, the board's pulls decide */
	void (*release)(void *ctx);
	void (*sleep_ms)(void *ctx, unsigned ms);
	void (*free)(void *ctx);
};

struct gpio {
	const struct gpio_ops *ops;
	void *ctx;
	bool wired[_GPIO_ROLE_MAX];
};

/* Request the configured lines through libgpiod (found by name across all chips), all
 * deasserted. 0, or -errno with err naming the line and what to check. */
int gpio_open(const struct gpio_config *cfg, struct gpio **ret, char *err, size_t errlen);
/* Release the lines and free. NULL is fine. */
void gpio_close(struct gpio *g);
int gpio_set(struct gpio *g, enum gpio_role role, bool asserted);
bool gpio_wired(const struct gpio *g, enum gpio_role role);
void gpio_sleep_ms(struct gpio *g, unsigned ms);

/* Into the ROM bootloader: BOOT asserted, RESET asserted 20 ms, RESET released, BOOT held
 * hold_ms more (the LPC ROM samples P2.10 within 3 ms, an STM32 latches BOOT0 at reset), then
 * released for LPC (release_boot) or kept for STM32 until gpio_run. -ENODEV without RESET. */
int gpio_enter_rom(struct gpio *g, unsigned hold_ms, bool release_boot);
/* Out of the ROM: BOOT released, RESET pulsed, every line let go. */
int gpio_run(struct gpio *g);

/* A fake for tests and the demo: each set calls on_set(userdata, role, asserted) (to drive a
 * simulated board) and is appended to a log ("boot=1 reset=1 sleep=20 reset=0 ..."). */
struct gpio *gpio_fake_new(bool reset_wired, bool boot_wired,
			   void (*on_set)(void *userdata, enum gpio_role role, bool asserted),
			   void *userdata);
/* The fake's log so far (NUL-terminated). */
const char *gpio_fake_log(const struct gpio *g);
