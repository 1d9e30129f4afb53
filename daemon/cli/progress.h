/* SPDX-License-Identifier: GPL-2.0-or-later */
/* progress: the one way skrflashctl shows a flash going on, for `flash BOARD`, `watch` and
 * `flash --device`. On a terminal, one bar redrawn in place with the rate and the time left;
 * elsewhere (a log, a pipe, CI), one line per quarter of each phase, so a flash is a handful
 * of lines instead of one per percent. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

struct progress {
	FILE *out;
	bool tty;	/* redraw a bar in place; otherwise quarter lines */
	char label[64]; /* what is being flashed, e.g. "octopus-f446 (job 3)" */
	char phase[16]; /* erase, write, verify, ... */
	uint64_t t0;	/* monotonic usec at the phase's first report */
	int last;	/* last percentage (bar) or quarter (lines) shown, -1 none */
	bool open;	/* a bar is drawn without its newline */
};

/* out: where to draw; tty: whether out is a terminal. */
void progress_init(struct progress *p, FILE *out, bool tty, const char *label);
void progress_update(struct progress *p, const char *phase, uint64_t done, uint64_t total);
/* Ends an open bar line, so that other output starts on a fresh line. */
void progress_break(struct progress *p);
