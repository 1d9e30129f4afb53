/* SPDX-License-Identifier: GPL-2.0-or-later */
/* sim_power: power switches for simulated boards, driven by a file of requests.
 *
 * A line "PORT off", "PORT on" or "PORT cycle" appended to the file switches the board on
 * that USB port: off = its supply goes (gone from USB; the SD card loses power too), on =
 * back (the card powers up in SD mode, the board boots), cycle = both. The fake Moonraker's
 * power devices (tests/integration/fake_moonraker.py, device named after the port) and the
 * test power commands append to it; skrsim (the demo) and the integration tests poll it. */
#pragma once

#include <stddef.h>

#include "sim.h"

struct sim_power {
	const char *path;
	long offset;	/* bytes of the file already applied */
	char part[256]; /* an incomplete last line */
	size_t part_len;
	unsigned applied; /* requests applied so far */
};

/* Applies the requests appended since the last call; the number applied, or -errno. A line
 * naming no board or no action is reported on stderr and skipped. */
int sim_power_poll(struct sim *s, struct sim_power *p);
