/* SPDX-License-Identifier: GPL-2.0-or-later */
/* uart_pty: a pseudo-terminal pair standing in for a Pi UART wired to a board's ROM
 * bootloader, and the loop that feeds what the host writes into a ROM model.
 *
 * A pty carries bytes only: it has no baud rate and refuses parity (research round2 §2.3:
 * stm32flash's 8e1 fails on a pty), so every simulated link is 8N1. The simulator keeps its
 * own slave descriptor open so the master never sees a hang-up between host sessions. */
#pragma once

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A ROM model: consumes host bytes, writes its answers to fd. */
typedef void (*uart_pty_feed_fn)(void *ctx, const uint8_t *data, size_t len);

struct uart_pty {
	int master;
	int slave;     /* kept open; raw 8N1 */
	char path[64]; /* the slave, for the host side */
	int stop[2];   /* pipe: a byte stops the thread */
	pthread_t thread;
	bool running;
	uart_pty_feed_fn feed;
	void *ctx;
};

/* Open a pty pair; the slave is set raw. 0 or -errno. */
int uart_pty_open(struct uart_pty *p);
/* Run feed(ctx, ...) on everything the host writes, in a thread, until uart_pty_stop. */
int uart_pty_start(struct uart_pty *p, uart_pty_feed_fn feed, void *ctx);
/* The same loop in the calling thread until stop_fd becomes readable. */
int uart_pty_run(struct uart_pty *p, int stop_fd, uart_pty_feed_fn feed, void *ctx);
void uart_pty_stop(struct uart_pty *p);
void uart_pty_close(struct uart_pty *p);
/* Write all of buf to the master (the device's answer). */
void uart_pty_write(int fd, const void *buf, size_t len);
/* A ROM model's receive buffer `in` of cap bytes, *in_len used: appends what fits of the
 * host's bytes, lets run(ctx) take what it can, and so on until all of data went in. A
 * buffer still full after run holds nothing the ROM takes (noise): it is emptied. */
void uart_pty_take(uint8_t *in, size_t cap, size_t *in_len, const uint8_t *data, size_t len,
		   void (*run)(void *ctx), void *ctx);
