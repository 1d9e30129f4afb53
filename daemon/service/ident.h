/* SPDX-License-Identifier: GPL-2.0-or-later */
/* ident: which firmware a board runs when its USB identity does not say (issue 16: Marlin).
 *
 * Marlin's USB descriptors name the framework, not the build; M115 names the build. The
 * question goes to a worker (`skrflashd --worker`, action "identify"): opening a tty and
 * waiting for an answer never happens in the event loop. One question per enumeration,
 * never while a program on the host holds the tty (OctoPrint would read Marlin's answer). */
#pragma once

#include <systemd/sd-event.h>

#include "service/boards.h"

struct ident_table;

int ident_table_new(sd_event *loop, struct boards *boards, const char *worker_exe,
		    struct ident_table **ret);
struct ident_table *ident_table_free(struct ident_table *t);
/* A board appeared or changed: ask it when it runs Marlin and has not been asked in this
 * enumeration. */
void ident_board(struct ident_table *t, const struct board *b);
