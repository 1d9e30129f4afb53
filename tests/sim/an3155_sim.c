/* SPDX-License-Identifier: GPL-2.0-or-later */
/* an3155_sim: STM32 USART bootloader model on a pty. See an3155_sim.h. */
#include "an3155_sim.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "proto/an3155.h"
#include "uart_pty.h"
#include "util.h"

/* Commands of an F4 bootloader v3.1 (research §2.3, the Get reply). */
static const uint8_t commands[] = {0x00, 0x01, 0x02, 0x11, 0x21, 0x31,
				   0x44, 0x63, 0x73, 0x82, 0x92};

static void
out(struct an3155_sim *s, const uint8_t *b, size_t n)
{
	uint8_t g[300];

	if (!(s->faults & STM_SIM_GARBAGE)) {
		uart_pty_write(s->fd, b, n);
		return;
	}
	for (size_t i = 0; i < n && i < sizeof(g); i++)
		g[i] = (uint8_t)(b[i] ^ 0xa6);
	uart_pty_write(s->fd, g, n < sizeof(g) ? n : sizeof(g));
}

static void
byte(struct an3155_sim *s, uint8_t b)
{
	if (b == AN3155_NACK)
		s->nacks++;
	out(s, &b, 1);
}

static uint16_t
pid_of(const struct catalog_mcu *mcu)
{
	/* AN2606 product IDs */
	if (strncmp(mcu->name, "stm32f407", 9) == 0)
		return 0x413;
	if (strncmp(mcu->name, "stm32f429", 9) == 0)
		return 0x419;
	if (strncmp(mcu->name, "stm32f446", 9) == 0)
		return 0x421;
	if (strncmp(mcu->name, "stm32h723", 9) == 0)
		return 0x483;
	if (strncmp(mcu->name, "stm32g0b1", 9) == 0)
		return 0x467;
	return 0x410;
}

static void
boot(struct an3155_sim *s)
{
	s->in_len = 0;
	if (s->boot0_wired && s->boot0_high) {
		s->phase = STM_SIM_WAIT_SYNC;
		s->boots_rom++;
	} else {
		s->phase = STM_SIM_OFF;
		s->boots_app++;
	}
}

struct an3155_sim *
an3155_sim_new(const struct catalog_mcu *mcu, double speed, int fd)
{
	struct an3155_sim *s = xnew(struct an3155_sim);

	pthread_mutex_init(&s->lock, NULL);
	s->flash = flash_new(mcu, speed);
	s->fd = fd;
	s->pid = pid_of(mcu);
	s->write_error_sector = -1;
	s->boot0_wired = s->reset_wired = true;
	s->boot0_high = true;
	boot(s);
	return s;
}

void
an3155_sim_free(struct an3155_sim *s)
{
	if (!s)
		return;
	flash_free(s->flash);
	pthread_mutex_destroy(&s->lock);
	free(s);
}

void
an3155_sim_set_boot0(struct an3155_sim *s, bool high)
{
	pthread_mutex_lock(&s->lock);
	s->boot0_high = high;
	pthread_mutex_unlock(&s->lock);
}

void
an3155_sim_set_reset(struct an3155_sim *s, bool low)
{
	pthread_mutex_lock(&s->lock);
	if (s->reset_wired) {
		if (low)
			s->phase = STM_SIM_OFF;
		else if (s->reset_low)
			boot(s); /* BOOT0 is latched on the 4th SYSCLK edge after reset */
		s->reset_low = low;
	}
	pthread_mutex_unlock(&s->lock);
}

enum stm_sim_phase
an3155_sim_phase(struct an3155_sim *s)
{
	enum stm_sim_phase p;

	pthread_mutex_lock(&s->lock);
	p = s->phase;
	pthread_mutex_unlock(&s->lock);
	return p;
}

static void
consume(struct an3155_sim *s, size_t n)
{
	memmove(s->in, s->in + n, s->in_len - n);
	s->in_len -= n;
}

static void
reply_get(struct an3155_sim *s, uint8_t code)
{
	uint8_t b[32];
	size_t n = 0;

	b[n++] = AN3155_ACK;
	if (code == AN3155_CMD_GET) {
		b[n++] = (uint8_t)sizeof(commands);
		b[n++] = 0x31;
		memcpy(b + n, commands, sizeof(commands));
		n += sizeof(commands);
	} else if (code == AN3155_CMD_GET_VERSION) {
		b[n++] = 0x31;
		b[n++] = 0;
		b[n++] = 0;
	} else {
		b[n++] = 1;
		b[n++] = (uint8_t)(s->pid >> 8);
		b[n++] = (uint8_t)s->pid;
	}
	b[n++] = AN3155_ACK;
	out(s, b, n);
}

/* A command frame arrived: ACK it and pick the next phase. */
static void
command(struct an3155_sim *s, uint8_t code)
{
	bool rdp = s->faults & STM_SIM_RDP;

	switch (code) {
	case AN3155_CMD_GET:
	case AN3155_CMD_GET_VERSION:
	case AN3155_CMD_GET_ID:
		reply_get(s, code);
		return;
	case AN3155_CMD_READ:
	case AN3155_CMD_WRITE:
	case AN3155_CMD_GO:
	case AN3155_CMD_EXT_ERASE:
		if (rdp) {
			byte(s, AN3155_NACK); /* AN3155: refused while readout protection is on */
			return;
		}
		byte(s, AN3155_ACK);
		s->phase = code == AN3155_CMD_READ    ? STM_SIM_READ_ADDR
			   : code == AN3155_CMD_WRITE ? STM_SIM_WRITE_ADDR
			   : code == AN3155_CMD_GO    ? STM_SIM_GO_ADDR
						      : STM_SIM_EXT_ERASE;
		return;
	default:
		byte(s, AN3155_NACK);
		return;
	}
}

static bool
in_flash(struct an3155_sim *s, uint32_t addr, size_t n)
{
	return addr >= s->flash->base && n <= s->flash->size &&
	       addr - s->flash->base <= s->flash->size - n;
}

static void
do_write(struct an3155_sim *s, const uint8_t *data, size_t n)
{
	uint32_t busy = 0, idx = 0;

	if (!in_flash(s, s->addr, n) || s->addr % 4) {
		byte(s, AN3155_NACK);
		return;
	}
	(void)flash_sector(s->flash, s->addr, &idx, NULL, NULL);
	if ((s->faults & STM_SIM_WRITE_ERROR) && (int)idx == s->write_error_sector) {
		byte(s, AN3155_NACK);
		return;
	}
	if (flash_program(s->flash, s->addr, data, n, &busy) < 0) {
		byte(s, AN3155_NACK); /* programming error: cells not erased */
		return;
	}
	flash_busy_wait(busy);
	s->writes++;
	byte(s, AN3155_ACK);
}

static void
do_erase(struct an3155_sim *s, const uint16_t *pages, size_t n, uint16_t special)
{
	uint32_t busy = 0;

	if (n == 0) {
		if (special != AN3155_EXT_ERASE_MASS) {
			byte(s, AN3155_NACK); /* one bank only */
			return;
		}
		(void)flash_erase_all(s->flash, &busy);
		flash_busy_wait(busy);
		s->erases += s->flash->n_sectors;
		byte(s, AN3155_ACK);
		return;
	}
	for (size_t i = 0; i < n; i++) {
		if (pages[i] >= s->flash->n_sectors) {
			byte(s, AN3155_NACK);
			return;
		}
	}
	for (size_t i = 0; i < n; i++) {
		(void)flash_erase(s->flash, s->flash->sector_start[pages[i]], &busy);
		flash_busy_wait(busy);
		s->erases++;
	}
	byte(s, AN3155_ACK);
}

/* Each phase's step: false while the phase waits for more bytes, true once it took some. */
static bool
step_sync(struct an3155_sim *s)
{
	if (!s->in_len)
		return false;
	if (s->in[0] == AN3155_SYNC && !(s->faults & STM_SIM_NO_SYNC)) {
		byte(s, AN3155_ACK);
		s->phase = STM_SIM_CMD;
		s->syncs++;
	}
	consume(s, 1);
	return true;
}

static bool
step_cmd(struct an3155_sim *s)
{
	if (s->in_len && s->in[0] == AN3155_SYNC) {
		/* a second 0x7F (no command has that code): already synchronised, and a host
		 * that lost track expects NACK (stm32flash stm32_send_init_seq) */
		byte(s, AN3155_NACK);
		consume(s, 1);
		return true;
	}
	if (s->in_len < 2)
		return false;
	if (!an3155_cmd_check(s->in))
		byte(s, AN3155_NACK);
	else
		command(s, s->in[0]);
	consume(s, 2);
	return true;
}

/* the address of READ, WRITE or GO */
static bool
step_addr(struct an3155_sim *s)
{
	if (s->in_len < 5)
		return false;
	if (an3155_parse_addr(s->in, &s->addr) < 0) {
		byte(s, AN3155_NACK);
		s->phase = STM_SIM_CMD;
	} else if (s->phase == STM_SIM_GO_ADDR) {
		byte(s, AN3155_ACK);
		s->go_addr = s->addr;
		s->went = true;
		s->phase = STM_SIM_OFF;
	} else {
		byte(s, AN3155_ACK);
		s->phase = s->phase == STM_SIM_READ_ADDR ? STM_SIM_READ_LEN : STM_SIM_WRITE_DATA;
	}
	consume(s, 5);
	return true;
}

static bool
step_read_len(struct an3155_sim *s)
{
	size_t n;

	if (s->in_len < 2)
		return false;
	s->phase = STM_SIM_CMD;
	if (an3155_parse_read_len(s->in, &n) < 0 || !in_flash(s, s->addr, n)) {
		byte(s, AN3155_NACK);
	} else {
		uint8_t b[1 + AN3155_BLOCK_MAX];

		b[0] = AN3155_ACK;
		(void)flash_read(s->flash, s->addr, b + 1, n);
		out(s, b, n + 1);
	}
	consume(s, 2);
	return true;
}

static bool
step_write_data(struct an3155_sim *s)
{
	const uint8_t *data;
	size_t n;
	int r = an3155_parse_write_frame(s->in, s->in_len, &data, &n);

	if (r == 0)
		return false;
	s->phase = STM_SIM_CMD;
	if (r < 0) {
		byte(s, AN3155_NACK);
		consume(s, s->in_len < (size_t)s->in[0] + 3 ? s->in_len : (size_t)s->in[0] + 3);
		return true;
	}
	do_write(s, data, n);
	consume(s, (size_t)r);
	return true;
}

static bool
step_ext_erase(struct an3155_sim *s)
{
	uint16_t pages[AN3155_EXT_ERASE_MAX_PAGES], special;
	size_t n;
	int r = an3155_parse_ext_erase(s->in, s->in_len, pages, s->flash->n_sectors, &n, &special);

	if (r == 0)
		return false;
	s->phase = STM_SIM_CMD;
	if (r < 0) {
		byte(s, AN3155_NACK);
		s->in_len = 0;
		return true;
	}
	do_erase(s, pages, n, special);
	consume(s, (size_t)r);
	return true;
}

/* One step of the byte-level state machine; false when more bytes are needed. */
static bool
step(struct an3155_sim *s)
{
	switch (s->phase) {
	case STM_SIM_OFF:
		s->in_len = 0;
		return false;
	case STM_SIM_WAIT_SYNC:
		return step_sync(s);
	case STM_SIM_CMD:
		return step_cmd(s);
	case STM_SIM_READ_ADDR:
	case STM_SIM_WRITE_ADDR:
	case STM_SIM_GO_ADDR:
		return step_addr(s);
	case STM_SIM_READ_LEN:
		return step_read_len(s);
	case STM_SIM_WRITE_DATA:
		return step_write_data(s);
	case STM_SIM_EXT_ERASE:
		return step_ext_erase(s);
	}
	return false;
}

/* every step the bytes so far allow */
static void
run_steps(void *ctx)
{
	while (step(ctx))
		;
}

void
an3155_sim_feed(void *ctx, const uint8_t *data, size_t len)
{
	struct an3155_sim *s = ctx;

	pthread_mutex_lock(&s->lock);
	uart_pty_take(s->in, sizeof(s->in), &s->in_len, data, len, run_steps, s);
	pthread_mutex_unlock(&s->lock);
}
