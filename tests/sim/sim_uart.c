/* SPDX-License-Identifier: GPL-2.0-or-later */
/* sim_uart: a simulated board whose MCU's ROM bootloader also answers on a UART (a pty), over
 * the same flash as its USB side - the board a UART rescue works on (docs/rescue.md).
 *
 * The ROM model (lpcisp_sim.c, LPC176x ISP) decides from the pins and the flash whether the
 * core runs the ROM or user code; this file only moves the board on USB accordingly: off the
 * bus while in reset or in ISP, and through the usual boot model (sim.c boot()) when user
 * code runs. Which bootloader that user code is comes from the bootloader area itself, read
 * here by the simulator's own mark (SIM_KATAPULT_RECORD), never by the daemon's checks. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "lpcisp_sim.h"
#include "sim_int.h"
#include "uart_pty.h"
#include "util.h"

struct sim_uart {
	struct uart_pty pty;
	struct lpcisp_sim *lpc;
};

/* Called by the ROM model with its lock held; takes the simulator's (never the reverse). */
static void
on_run(void *userdata, enum lpc_sim_state st)
{
	struct sim_board *b = userdata;

	pthread_mutex_lock(&b->sim->lock);
	b->action = SIM_ACT_NONE;
	b->flicker_left = 0;
	b->request = SIM_REQ_NONE;
	if (b->mode != SIM_MODE_OFF)
		(void)sim_board_unplug_locked(b);
	if (st == LPC_SIM_CMD) /* user code: the bootloader in flash starts */
		sim_board_schedule(b, SIM_ACT_BOOT, sim_board_delay_us(b, 100000, 3000));
	pthread_mutex_unlock(&b->sim->lock);
}

int
sim_uart_attach(struct sim_board *b)
{
	struct sim_uart *u;

	if (b->model->mcu->family != CATALOG_FAMILY_LPC176X)
		return -EOPNOTSUPP;
	u = xnew(struct sim_uart);
	if (uart_pty_open(&u->pty) < 0) {
		free(u);
		return -EIO;
	}
	u->lpc = lpcisp_sim_attach(b->model->mcu, b->flash, u->pty.master, on_run, b);
	if (uart_pty_start(&u->pty, lpcisp_sim_feed, u->lpc) < 0) {
		lpcisp_sim_free(u->lpc);
		uart_pty_close(&u->pty);
		free(u);
		return -EIO;
	}
	b->uart = u;
	return 0;
}

void
sim_uart_free(struct sim_board *b)
{
	if (!b->uart)
		return;
	uart_pty_stop(&b->uart->pty);
	lpcisp_sim_free(b->uart->lpc);
	uart_pty_close(&b->uart->pty);
	free(b->uart);
	b->uart = NULL;
}

void
sim_uart_bootloader_from_flash(struct sim_board *b)
{
	uint8_t rec[12];

	if (!b->uart || b->bootloader == SIM_BL_NONE)
		return;
	if (flash_read(b->flash, b->flash->base + SIM_KATAPULT_RECORD, rec, sizeof(rec)) == 0 &&
	    memcmp(rec, "KATSIMv1", 8) == 0) {
		b->bootloader = SIM_BL_KATAPULT;
		b->app_start = (uint32_t)rec[8] | (uint32_t)rec[9] << 8 | (uint32_t)rec[10] << 16 |
			       (uint32_t)rec[11] << 24;
	} else {
		b->bootloader = SIM_BL_STOCK;
		b->app_start = b->model->app_start;
	}
}

const char *
sim_board_uart(struct sim_board *b)
{
	return b->uart ? b->uart->pty.path : NULL;
}

int
sim_board_uart_enter_rom(struct sim_board *b)
{
	if (!b->uart)
		return -ENODEV;
	lpcisp_sim_set_isp(b->uart->lpc, true);
	lpcisp_sim_set_reset(b->uart->lpc, true);
	lpcisp_sim_set_reset(b->uart->lpc, false);
	lpcisp_sim_set_isp(b->uart->lpc, false);
	return 0;
}

int
sim_board_uart_reset(struct sim_board *b)
{
	if (!b->uart)
		return -ENODEV;
	lpcisp_sim_set_reset(b->uart->lpc, true);
	lpcisp_sim_set_reset(b->uart->lpc, false);
	return 0;
}

int
sim_board_uart_faults(struct sim_board *b, unsigned faults)
{
	if (!b->uart)
		return -ENODEV;
	pthread_mutex_lock(&b->uart->lpc->lock);
	b->uart->lpc->faults = faults;
	b->uart->lpc->write_error_sector = 2;
	pthread_mutex_unlock(&b->uart->lpc->lock);
	return 0;
}

int
sim_board_uart_state(struct sim_board *b)
{
	return b->uart ? (int)lpcisp_sim_state(b->uart->lpc) : -ENODEV;
}
