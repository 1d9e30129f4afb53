/* SPDX-License-Identifier: GPL-2.0-or-later */
/* sim_power: apply power requests from a file to simulated boards (see sim_power.h). */
#include "sim_power.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

static int
apply(struct sim *s, char *line)
{
	char *action = strrchr(line, ' ');
	struct sim_board *b;

	if (!action) {
		fprintf(stderr, "sim_power: ignoring '%s' (expected 'PORT off|on|cycle')\n", line);
		return 0;
	}
	*action++ = '\0';
	b = sim_board_by_port(s, line);
	if (!b) {
		fprintf(stderr, "sim_power: no board on port '%s'\n", line);
		return 0;
	}
	/* the supply goes: gone from USB; when it comes back the card powers up in SD mode,
	 * which sim_board_power_cycle models (on a board that is off it only boots) */
	if (strcmp(action, "off") == 0)
		return sim_board_power_off(b) < 0 ? 0 : 1;
	if (strcmp(action, "on") == 0 || strcmp(action, "cycle") == 0)
		return sim_board_power_cycle(b) < 0 ? 0 : 1;
	fprintf(stderr, "sim_power: unknown action '%s' for port %s\n", action, line);
	return 0;
}

int
sim_power_poll(struct sim *s, struct sim_power *p)
{
	FILE *f = fopen(p->path, "re");
	int n = 0, c;

	if (!f)
		return errno == ENOENT ? 0 : -errno;
	if (fseek(f, p->offset, SEEK_SET) < 0) {
		fclose(f);
		return -errno;
	}
	while ((c = fgetc(f)) != EOF) {
		p->offset++;
		if (c != '\n') {
			if (p->part_len < sizeof(p->part) - 1)
				p->part[p->part_len++] = (char)c;
			continue;
		}
		p->part[p->part_len] = '\0';
		p->part_len = 0;
		if (p->part[0]) {
			n += apply(s, p->part);
			p->applied++;
		}
	}
	fclose(f);
	return n;
}
