/* SPDX-License-Identifier: GPL-2.0-or-later */
/* progress: bar on a terminal, quarter lines elsewhere (see progress.h). */
#include "cli/progress.h"

#include <string.h>

#include "util.h"

#define BAR_WIDTH 30

void
progress_init(struct progress *p, FILE *out, bool tty, const char *label)
{
	memset(p, 0, sizeof(*p));
	p->out = out;
	p->tty = tty;
	p->last = -1;
	(void)str_copy(p->label, sizeof(p->label), label ? label : "");
}

void
progress_break(struct progress *p)
{
	if (p->open)
		fputc('\n', p->out);
	p->open = false;
	fflush(p->out);
}

/* "123.4 KiB/s  0:07 left", or "" before there is a rate to speak of */
static void
rate_text(const struct progress *p, uint64_t done, uint64_t total, char *buf, size_t len)
{
	double secs = (double)(now_monotonic_usec() - p->t0) / 1e6;
	double rate = secs > 0 ? (double)done / secs : 0;

	buf[0] = 0;
	if (rate <= 0 || (done < total && secs < 0.2))
		return; /* too early for a rate worth reading */
	if (done < total) {
		unsigned left = (unsigned)((double)(total - done) / rate + 0.5);

		(void)snprintf(buf, len, "%7.1f KiB/s  %u:%02u left", rate / 1024.0, left / 60,
			       left % 60);
	} else {
		(void)snprintf(buf, len, "%7.1f KiB/s  %.1f s", rate / 1024.0, secs);
	}
}

void
progress_update(struct progress *p, const char *phase, uint64_t done, uint64_t total)
{
	int pct = total ? (int)(done * 100 / total) : 100;
	char rate[64];

	if (pct > 100)
		pct = 100;
	if (strcmp(p->phase, phase) != 0) {
		progress_break(p);
		(void)str_copy(p->phase, sizeof(p->phase), phase);
		p->t0 = now_monotonic_usec();
		p->last = -1;
	}
	if (p->tty) {
		char bar[BAR_WIDTH + 1];
		int fill = pct * BAR_WIDTH / 100;

		if (pct == p->last && done != total)
			return;
		for (int i = 0; i < BAR_WIDTH; i++)
			bar[i] = i < fill ? '#' : '.';
		bar[BAR_WIDTH] = 0;
		rate_text(p, done, total, rate, sizeof(rate));
		fprintf(p->out, "\r%s%s%-7s [%s] %3d%%  %s\033[K", p->label,
			p->label[0] ? ": " : "", phase, bar, pct, rate);
		p->open = true;
		p->last = pct;
		if (done >= total)
			progress_break(p);
	} else {
		int quarter = pct / 25;

		if (quarter == p->last)
			return;
		p->last = quarter;
		rate_text(p, done, total, rate, sizeof(rate));
		fprintf(p->out, "%s%s%s %d%% (%llu/%llu KiB)%s%s\n", p->label,
			p->label[0] ? ": " : "", phase, pct, (unsigned long long)(done / 1024),
			(unsigned long long)(total / 1024), rate[0] ? "  " : "", rate);
	}
	fflush(p->out);
}
