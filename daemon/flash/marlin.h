/* SPDX-License-Identifier: GPL-2.0-or-later */
/* flash/marlin: a blocking G-code client for Marlin's USB serial port (worker side).
 *
 * One command at a time, as OctoPrint talks to Marlin without line numbers: send the line,
 * collect what Marlin prints until its "ok" (proto/marlin), waiting longer while it says
 * "busy". Lines before the first command (the start-up banner) are discarded. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto/marlin.h"

#define MARLIN_TIMEOUT_MS 3000u

struct marlin_client {
	int fd;
	char tty[256];
	char in[2048]; /* bytes received, not yet a whole line */
	size_t in_len;
	char error[256];
};

/* Opens the tty raw (USB CDC ignores the rate; never 1200 baud, which is Klipper's
 * bootloader request on some builds) and drops what is waiting. 0 or -errno (c->error). */
int marlin_client_open(struct marlin_client *c, const char *tty);
void marlin_client_close(struct marlin_client *c);

/* Sends CMD and collects the message lines before "ok" into REPLY ('\n'-separated, may be
 * NULL). 0, -ETIMEDOUT (no "ok" within timeout_ms, 0 = MARLIN_TIMEOUT_MS), -EIO when Marlin
 * reported an error, -ENODEV when the port went away; c->error says which. */
int marlin_client_command(struct marlin_client *c, const char *cmd, unsigned timeout_ms,
			  char *reply, size_t replylen);
/* Sends CMD without waiting for anything (M997: Marlin resets instead of answering). */
int marlin_client_send(struct marlin_client *c, const char *cmd);

/* M115 -> *info. 0, -EPROTONOSUPPORT when the port answers but is not Marlin. */
int marlin_client_identify(struct marlin_client *c, struct marlin_info *info);
/* M27 -> *printing (and the byte position/size). 0 or -errno. */
int marlin_client_sd_status(struct marlin_client *c, bool *printing, uint64_t *pos, uint64_t *size);
