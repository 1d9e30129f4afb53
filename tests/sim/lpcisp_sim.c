/* SPDX-License-Identifier: GPL-2.0-or-later */
/* lpcisp_sim: LPC176x ROM ISP model on a pty. See lpcisp_sim.h. */
#include "lpcisp_sim.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "uart_pty.h"
#include "util.h"

#define RAM_BASE 0x10000000u
#define RAM_SIZE 0x8000u
#define ISP_RAM_END 0x10000200u /* ISP variables below (UM10360 §32.3.2.8) */

static void
out(struct lpcisp_sim *s, const char *text, size_t len)
{
	char buf[256];

	if (!(s->faults & LPC_SIM_GARBAGE)) {
		uart_pty_write(s->fd, text, len);
		return;
	}
	/* what a receiver at the wrong bit rate makes of the answer */
	for (size_t i = 0; i < len && i < sizeof(buf); i++)
		buf[i] = (char)(((uint8_t)text[i] ^ 0x5a) | 0x80);
	uart_pty_write(s->fd, buf, len < sizeof(buf) ? len : sizeof(buf));
}

static void outf(struct lpcisp_sim *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void
outf(struct lpcisp_sim *s, const char *fmt, ...)
{
	char buf[128];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (n > 0)
		out(s, buf, (size_t)n < sizeof(buf) ? (size_t)n : sizeof(buf) - 1);
}

static void
rc(struct lpcisp_sim *s, int code)
{
	outf(s, "%d\r\n", code);
}

static void
echo_line(struct lpcisp_sim *s, const char *line)
{
	if (!s->echo)
		return;
	out(s, line, strlen(line));
	if (s->faults & LPC_SIM_ECHO_QUIRKS)
		out(s, "\r\r\n\n", 4);
	else
		out(s, "\r\n", 2);
}

/* The ROM's own check (UM10360 §32.3.1.1), independent of the client's codec. */
static bool
user_code_valid(struct lpcisp_sim *s)
{
	uint8_t v[32];
	uint32_t sum = 0;

	if (flash_read(s->flash, 0, v, sizeof(v)) < 0)
		return false;
	for (size_t i = 0; i < 32; i += 4)
		sum += (uint32_t)v[i] | (uint32_t)v[i + 1] << 8 | (uint32_t)v[i + 2] << 16 |
		       (uint32_t)v[i + 3] << 24;
	return sum == 0;
}

static void
boot(struct lpcisp_sim *s)
{
	bool isp = s->isp_wired && s->isp_low && !s->wdtof;

	s->echo = true;
	s->unlocked = false;
	s->prep_lo = s->prep_hi = -1;
	s->in_len = 0;
	if (!isp && user_code_valid(s)) {
		s->state = LPC_SIM_OFF;
		s->boots_app++;
		if (s->on_run)
			s->on_run(s->userdata, LPC_SIM_CMD); /* user code runs */
		return;
	}
	s->state = LPC_SIM_WAIT_SYNC;
	s->boots_isp++;
	if (s->on_run)
		s->on_run(s->userdata, LPC_SIM_WAIT_SYNC);
}

struct lpcisp_sim *
lpcisp_sim_new(const struct catalog_mcu *mcu, double speed, int fd)
{
	struct lpcisp_sim *s = xnew(struct lpcisp_sim);

	pthread_mutex_init(&s->lock, NULL);
	s->flash = flash_new(mcu, speed);
	s->fd = fd;
	s->part_id = strcmp(mcu->name, "lpc1768") == 0 ? LPCISP_PART_LPC1768 : LPCISP_PART_LPC1769;
	s->serial[0] = 0x1a2b3c4d;
	s->serial[1] = 0x00112233;
	s->serial[2] = 0x44556677;
	s->serial[3] = 0x8899aabb;
	s->write_error_sector = -1;
	s->isp_wired = s->reset_wired = true;
	s->isp_low = true;
	boot(s);
	return s;
}

struct lpcisp_sim *
lpcisp_sim_attach(const struct catalog_mcu *mcu, struct flash *flash, int fd,
		  void (*on_run)(void *userdata, enum lpc_sim_state st), void *userdata)
{
	struct lpcisp_sim *s = lpcisp_sim_new(mcu, 0, fd);

	flash_free(s->flash);
	s->flash = flash;
	s->isp_low = false;
	s->state = LPC_SIM_OFF;
	s->on_run = on_run;
	s->userdata = userdata;
	return s;
}

void
lpcisp_sim_free(struct lpcisp_sim *s)
{
	if (!s)
		return;
	if (!s->on_run)
		flash_free(s->flash);
	pthread_mutex_destroy(&s->lock);
	free(s);
}

void
lpcisp_sim_set_isp(struct lpcisp_sim *s, bool low)
{
	pthread_mutex_lock(&s->lock);
	s->isp_low = low;
	pthread_mutex_unlock(&s->lock);
}

void
lpcisp_sim_set_reset(struct lpcisp_sim *s, bool low)
{
	pthread_mutex_lock(&s->lock);
	if (s->reset_wired) {
		if (low) {
			s->state = LPC_SIM_OFF;
			if (s->on_run && !s->reset_low)
				s->on_run(s->userdata, LPC_SIM_OFF);
		} else if (s->reset_low)
			boot(s); /* the ROM samples P2.10 within 3 ms of RESET rising */
		s->reset_low = low;
	}
	pthread_mutex_unlock(&s->lock);
}

void
lpcisp_sim_power_cycle(struct lpcisp_sim *s)
{
	pthread_mutex_lock(&s->lock);
	s->wdtof = false;
	boot(s);
	pthread_mutex_unlock(&s->lock);
}

void
lpcisp_sim_watchdog_reset(struct lpcisp_sim *s)
{
	pthread_mutex_lock(&s->lock);
	s->wdtof = true;
	boot(s);
	pthread_mutex_unlock(&s->lock);
}

enum lpc_sim_state
lpcisp_sim_state(struct lpcisp_sim *s)
{
	enum lpc_sim_state st;

	pthread_mutex_lock(&s->lock);
	st = s->state;
	pthread_mutex_unlock(&s->lock);
	return st;
}

/* Memory as the ISP handler sees it: flash (first 64 bytes remapped if so modelled), RAM. */
static int
mem_read(struct lpcisp_sim *s, uint32_t addr, uint8_t *buf, uint32_t n)
{
	if (addr >= RAM_BASE && n <= RAM_SIZE && addr - RAM_BASE <= RAM_SIZE - n) {
		memcpy(buf, s->ram + (addr - RAM_BASE), n);
		return 0;
	}
	if (flash_read(s->flash, addr, buf, n) < 0)
		return -ERANGE;
	if (s->faults & LPC_SIM_VECTOR_REMAP)
		for (uint32_t i = 0; i < n && addr + i < 64; i++)
			buf[i] =
			    (uint8_t)(0xa5 ^ (addr + i)); /* boot ROM vectors, not the user's */
	return 0;
}

static bool
ram_range(uint32_t addr, uint32_t n)
{
	return addr >= RAM_BASE && n <= RAM_SIZE && addr - RAM_BASE <= RAM_SIZE - n;
}

static bool
prepared(struct lpcisp_sim *s, int lo, int hi)
{
	return s->prep_lo >= 0 && lo >= s->prep_lo && hi <= s->prep_hi;
}

static int
sector_of(struct lpcisp_sim *s, uint32_t addr)
{
	uint32_t idx;

	return flash_sector(s->flash, addr, &idx, NULL, NULL) < 0 ? -1 : (int)idx;
}

static int
cmd_erase(struct lpcisp_sim *s, uint32_t a, uint32_t b)
{
	if (!s->unlocked)
		return LPCISP_CMD_LOCKED;
	if (b < a || b >= s->flash->n_sectors)
		return LPCISP_INVALID_SECTOR;
	if (!prepared(s, (int)a, (int)b))
		return LPCISP_SECTOR_NOT_PREPARED;
	for (uint32_t i = a; i <= b; i++) {
		uint32_t busy = 0;

		(void)flash_erase(s->flash, s->flash->sector_start[i], &busy);
		flash_busy_wait(busy);
		s->erases++;
	}
	s->prep_lo = s->prep_hi = -1; /* sectors relock after a successful E */
	return LPCISP_CMD_SUCCESS;
}

static int
cmd_copy(struct lpcisp_sim *s, uint32_t dst, uint32_t src, uint32_t n)
{
	uint8_t cur[4096];
	int lo, hi;
	uint32_t busy;

	if (!s->unlocked)
		return LPCISP_CMD_LOCKED;
	if (dst % 256)
		return LPCISP_DST_ADDR_ERROR;
	if (src % 4)
		return LPCISP_SRC_ADDR_ERROR;
	if (n != 256 && n != 512 && n != 1024 && n != 4096)
		return LPCISP_COUNT_ERROR;
	if (!ram_range(src, n))
		return LPCISP_SRC_ADDR_NOT_MAPPED;
	lo = sector_of(s, dst);
	hi = sector_of(s, dst + n - 1);
	if (lo < 0 || hi < 0)
		return LPCISP_DST_ADDR_NOT_MAPPED;
	if (!prepared(s, lo, hi))
		return LPCISP_SECTOR_NOT_PREPARED;
	s->prep_lo = s->prep_hi = -1;
	s->copies++;
	if ((s->faults & LPC_SIM_WRITE_ERROR) && lo == s->write_error_sector)
		return LPCISP_CMD_SUCCESS; /* the IAP reported success, the cells kept their value
					    */
	/* NOR: programming only clears bits, whatever was there */
	(void)flash_read(s->flash, dst, cur, n);
	for (uint32_t i = 0; i < n; i++)
		cur[i] &= s->ram[src - RAM_BASE + i];
	busy = flash_program_time(s->flash, n);
	(void)flash_load(s->flash, dst, cur, n);
	flash_busy_wait(busy);
	return LPCISP_CMD_SUCCESS;
}

static void
cmd_read(struct lpcisp_sim *s, uint32_t addr, uint32_t n)
{
	if (s->faults & LPC_SIM_CRP) {
		rc(s, LPCISP_CODE_READ_PROTECTION);
		return;
	}
	if (addr % 4 || n % 4 || n == 0 || n > sizeof(s->rbuf)) {
		rc(s, addr % 4 ? LPCISP_ADDR_ERROR : LPCISP_COUNT_ERROR);
		return;
	}
	if (mem_read(s, addr, s->rbuf, n) < 0) {
		rc(s, LPCISP_ADDR_NOT_MAPPED);
		return;
	}
	rc(s, LPCISP_CMD_SUCCESS);
	lpcisp_uu_writer_init(&s->wr, s->rbuf, n);
	s->state = LPC_SIM_DATA_R;
}

/* Send R lines up to the next checksum line (the host answers OK or RESEND). */
static void
read_pump(struct lpcisp_sim *s)
{
	char line[LPCISP_UU_LINE_MAX];
	int n;

	while ((n = lpcisp_uu_writer_next(&s->wr, line, sizeof(line), NULL)) > 0)
		out(s, line, (size_t)n);
	if (n == 0)
		s->state = LPC_SIM_CMD;
}

static void
cmd_compare(struct lpcisp_sim *s, uint32_t a, uint32_t b, uint32_t n)
{
	uint8_t x[4096], y[4096];

	if (s->faults & LPC_SIM_CRP) {
		rc(s, LPCISP_CODE_READ_PROTECTION);
		return;
	}
	if (a % 4 || b % 4 || n % 4 || n == 0 || n > sizeof(x)) {
		rc(s, n % 4 || n == 0 || n > sizeof(x) ? LPCISP_COUNT_ERROR : LPCISP_ADDR_ERROR);
		return;
	}
	if (mem_read(s, a, x, n) < 0 || mem_read(s, b, y, n) < 0) {
		rc(s, LPCISP_ADDR_NOT_MAPPED);
		return;
	}
	for (uint32_t i = 0; i < n; i++) {
		if (x[i] != y[i]) {
			rc(s, LPCISP_COMPARE_ERROR);
			outf(s, "%u\r\n", i & ~3u);
			return;
		}
	}
	rc(s, LPCISP_CMD_SUCCESS);
}

static void
cmd_blank(struct lpcisp_sim *s, uint32_t a, uint32_t b)
{
	if (b < a || b >= s->flash->n_sectors) {
		rc(s, LPCISP_INVALID_SECTOR);
		return;
	}
	for (uint32_t i = a; i <= b; i++) {
		uint32_t start = s->flash->sector_start[i], size = s->flash->sector_size[i];

		for (uint32_t off = 0; off < size; off += 4) {
			uint8_t w[4];

			(void)flash_read(s->flash, start + off, w, 4);
			if (w[0] & w[1] & w[2] & w[3]) {
				if (w[0] == 0xff && w[1] == 0xff && w[2] == 0xff && w[3] == 0xff)
					continue;
			}
			rc(s, LPCISP_SECTOR_NOT_BLANK);
			outf(s, "%u\r\n%u\r\n", start + off,
			     (uint32_t)w[0] | (uint32_t)w[1] << 8 | (uint32_t)w[2] << 16 |
				 (uint32_t)w[3] << 24);
			return;
		}
	}
	rc(s, LPCISP_CMD_SUCCESS);
}

static int
parse_args(const char *p, uint32_t *v, int max)
{
	int n = 0;

	while (*p) {
		char *end;
		unsigned long x;

		while (*p == ' ')
			p++;
		if (!*p)
			break;
		if (*p < '0' || *p > '9' || n == max)
			return -1;
		errno = 0;
		x = strtoul(p, &end, 10);
		if (errno || x > UINT32_MAX || (*end && *end != ' '))
			return -1;
		v[n++] = (uint32_t)x;
		p = end;
	}
	return n;
}

static void
cmd_write(struct lpcisp_sim *s, uint32_t addr, uint32_t n)
{
	if (addr % 4 || n % 4 || n == 0) {
		rc(s, addr % 4 ? LPCISP_ADDR_ERROR : LPCISP_COUNT_ERROR);
		return;
	}
	if (!ram_range(addr, n) || addr < ISP_RAM_END) {
		rc(s, LPCISP_ADDR_NOT_MAPPED);
		return;
	}
	rc(s, LPCISP_CMD_SUCCESS);
	lpcisp_uu_reader_init(&s->rd, s->ram + (addr - RAM_BASE), n);
	s->state = LPC_SIM_DATA_W;
}

/* "G <addr> T" (Thumb): the core jumps; the UART goes quiet. */
static void
cmd_go(struct lpcisp_sim *s, const char *line)
{
	uint32_t v[1];
	char num[16];
	const char *t = strrchr(line, ' ');

	if (!t || strcmp(t, " T") != 0 || (size_t)(t - line) >= sizeof(num)) {
		rc(s, LPCISP_PARAM_ERROR);
		return;
	}
	memcpy(num, line + 1, (size_t)(t - line - 1));
	num[t - line - 1] = '\0';
	if (parse_args(num, v, 1) != 1) {
		rc(s, LPCISP_PARAM_ERROR);
		return;
	}
	if (!s->unlocked) {
		rc(s, LPCISP_CMD_LOCKED);
		return;
	}
	rc(s, LPCISP_CMD_SUCCESS);
	s->go_addr = v[0];
	s->went = true;
	s->state = LPC_SIM_OFF;
}

static void
command(struct lpcisp_sim *s, const char *line)
{
	uint32_t v[3] = {0, 0, 0};
	int n = parse_args(line + 1, v, 3);
	char c = line[0];

	echo_line(s, line);
	if (c == 'G') {
		cmd_go(s, line);
		return;
	}
	if (n < 0 || (line[1] && line[1] != ' ')) {
		rc(s, LPCISP_INVALID_COMMAND);
		return;
	}
	if (c == 'U' && n == 1) {
		s->unlocked = v[0] == LPCISP_UNLOCK_CODE;
		rc(s, s->unlocked ? LPCISP_CMD_SUCCESS : LPCISP_INVALID_CODE);
	} else if (c == 'A' && n == 1) {
		rc(s, v[0] <= 1 ? LPCISP_CMD_SUCCESS : LPCISP_PARAM_ERROR);
		s->echo = v[0] <= 1 ? v[0] == 1 : s->echo;
	} else if (c == 'B' && n == 2) {
		rc(s, v[1] == 1 || v[1] == 2 ? LPCISP_CMD_SUCCESS : LPCISP_INVALID_STOP_BIT);
	} else if (c == 'J' && n == 0) {
		rc(s, LPCISP_CMD_SUCCESS);
		outf(s, "%u\r\n", s->part_id);
	} else if (c == 'K' && n == 0) {
		rc(s, LPCISP_CMD_SUCCESS);
		outf(s, "4\r\n1\r\n");
	} else if (c == 'N' && n == 0) {
		rc(s, LPCISP_CMD_SUCCESS);
		outf(s, "%u\r\n%u\r\n%u\r\n%u\r\n", s->serial[0], s->serial[1], s->serial[2],
		     s->serial[3]);
	} else if (c == 'W' && n == 2) {
		cmd_write(s, v[0], v[1]);
	} else if (c == 'R' && n == 2) {
		cmd_read(s, v[0], v[1]);
		read_pump(s);
	} else if (c == 'P' && n == 2) {
		bool ok = v[1] >= v[0] && v[1] < s->flash->n_sectors;

		s->prep_lo = ok ? (int)v[0] : -1;
		s->prep_hi = ok ? (int)v[1] : -1;
		rc(s, ok ? LPCISP_CMD_SUCCESS : LPCISP_INVALID_SECTOR);
	} else if (c == 'E' && n == 2) {
		rc(s, cmd_erase(s, v[0], v[1]));
	} else if (c == 'I' && n == 2) {
		cmd_blank(s, v[0], v[1]);
	} else if (c == 'C' && n == 3) {
		rc(s, cmd_copy(s, v[0], v[1], v[2]));
	} else if (c == 'M' && n == 3) {
		cmd_compare(s, v[0], v[1], v[2]);
	} else {
		rc(s, LPCISP_INVALID_COMMAND);
	}
}

static void
data_line(struct lpcisp_sim *s, const char *line)
{
	bool sum = lpcisp_uu_reader_want_checksum(&s->rd);
	int ev;

	echo_line(s, line);
	if (sum && (s->faults & LPC_SIM_RESEND_ONCE) && !s->resent) {
		s->resent = true;
		s->rd.pos = s->rd.block_start;
		s->rd.lines = 0;
		s->rd.sum = 0;
		out(s, "RESEND\r\n", 8);
		return;
	}
	ev = lpcisp_uu_reader_feed(&s->rd, line);
	if (ev == LPCISP_UU_BLOCK_OK || ev == LPCISP_UU_DONE)
		out(s, "OK\r\n", 4);
	else if (ev == LPCISP_UU_BLOCK_BAD)
		out(s, "RESEND\r\n", 8);
	if (ev == LPCISP_UU_DONE || ev < 0)
		s->state = LPC_SIM_CMD; /* a malformed line ends the transfer */
}

static void
line_in(struct lpcisp_sim *s, const char *line)
{
	uint32_t khz;

	switch (s->state) {
	case LPC_SIM_WAIT_SYNC_STR:
		echo_line(s, line);
		if (strcmp(line, LPCISP_SYNC_STRING) == 0) {
			out(s, "OK\r\n", 4);
			s->state = LPC_SIM_WAIT_FREQ;
		} else {
			s->state = LPC_SIM_WAIT_SYNC;
		}
		break;
	case LPC_SIM_WAIT_FREQ:
		echo_line(s, line);
		if (lpcisp_parse_u32(line, &khz) == 0 && khz >= 10 && khz <= 25000) {
			s->crystal_khz = khz;
			out(s, "OK\r\n", 4);
			s->state = LPC_SIM_CMD;
			s->syncs++;
		}
		break;
	case LPC_SIM_CMD:
		command(s, line);
		break;
	case LPC_SIM_DATA_W:
		data_line(s, line);
		break;
	case LPC_SIM_DATA_R:
		if (strcmp(line, LPCISP_OK_STRING) == 0)
			lpcisp_uu_writer_ack(&s->wr);
		else if (strcmp(line, LPCISP_RESEND_STRING) == 0)
			lpcisp_uu_writer_resend(&s->wr);
		else
			s->state = LPC_SIM_CMD;
		if (s->state == LPC_SIM_DATA_R)
			read_pump(s);
		break;
	case LPC_SIM_OFF:
	case LPC_SIM_WAIT_SYNC:
		break;
	}
}

/* Autobaud: everything up to a "?" is noise to the ROM. */
static void
wait_sync(struct lpcisp_sim *s)
{
	uint8_t *q = memchr(s->in, LPCISP_SYNC_CHAR, s->in_len);
	size_t used = q ? (size_t)(q - s->in) + 1 : s->in_len;

	memmove(s->in, s->in + used, s->in_len - used);
	s->in_len -= used;
	if (!q || (s->faults & LPC_SIM_NO_SYNC))
		return;
	if (s->sync_ignore) {
		s->sync_ignore--;
		return;
	}
	out(s, LPCISP_SYNC_STRING "\r\n", sizeof(LPCISP_SYNC_STRING) + 1);
	s->state = LPC_SIM_WAIT_SYNC_STR;
}

static void
process(struct lpcisp_sim *s)
{
	for (;;) {
		char line[LPCISP_LINE_MAX];
		size_t skip;
		int r;

		if (s->state == LPC_SIM_OFF) {
			s->in_len = 0;
			return;
		}
		if (s->state == LPC_SIM_WAIT_SYNC) {
			wait_sync(s);
			if (s->state == LPC_SIM_WAIT_SYNC)
				return;
			continue;
		}
		/* the host repeats "?" when it missed our "Synchronized" */
		if (s->state == LPC_SIM_WAIT_SYNC_STR && s->in_len && s->in[0] == '?') {
			memmove(s->in, s->in + 1, --s->in_len);
			out(s, LPCISP_SYNC_STRING "\r\n", sizeof(LPCISP_SYNC_STRING) + 1);
			continue;
		}
		r = lpcisp_line_next(s->in, s->in_len, line, sizeof(line), &skip);
		if (r == 0) {
			memmove(s->in, s->in + skip, s->in_len - skip);
			s->in_len -= skip;
			return;
		}
		if (r < 0) {
			memmove(s->in, s->in + skip, s->in_len - skip);
			s->in_len -= skip;
			continue;
		}
		memmove(s->in, s->in + r, s->in_len - (size_t)r);
		s->in_len -= (size_t)r;
		line_in(s, line);
	}
}

static void
run_process(void *ctx)
{
	process(ctx);
}

/* a line longer than any ISP line is noise: uart_pty_take drops a full buffer */
void
lpcisp_sim_feed(void *ctx, const uint8_t *data, size_t len)
{
	struct lpcisp_sim *s = ctx;

	pthread_mutex_lock(&s->lock);
	uart_pty_take(s->in, sizeof(s->in), &s->in_len, data, len, run_process, s);
	pthread_mutex_unlock(&s->lock);
}
