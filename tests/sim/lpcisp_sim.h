/* SPDX-License-Identifier: GPL-2.0-or-later */
/* lpcisp_sim: the LPC176x boot ROM's UART0 ISP command handler, on a pty.
 *
 * Models UM10360 chapter 32 as research round2-uart-rescue.md §1.13 describes it: autobaud
 * ("?" / "Synchronized" / crystal), echo, unlock, prepare/erase/copy with the ROM's checks,
 * W and R with UU lines and 20-line checksum blocks, J/K/N/M/I/G, flash with the LPC1769
 * sector map and NOR rules (tests/sim/flash.c). The pin model decides what a reset does:
 * ISP pin (P2.10) low at reset and WDTOF clear -> ISP; else valid user code -> the
 * application runs (the UART stays silent); invalid user code -> ISP anyway. The
 * valid-user-code sum is computed here on its own, not with the codec the client uses. */
#pragma once

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "catalog.h"
#include "flash.h"
#include "proto/lpcisp.h"

enum {
	LPC_SIM_NO_SYNC = 1u << 0,	/* never answers "?" (not in ISP, wrong wiring) */
	LPC_SIM_GARBAGE = 1u << 1,	/* every answer garbled: a baud/crystal mismatch */
	LPC_SIM_WRITE_ERROR = 1u << 2,	/* C into write_error_sector programs nothing */
	LPC_SIM_CRP = 1u << 3,		/* CRP1 set: R and M answer CODE_READ_PROTECTION */
	LPC_SIM_ECHO_QUIRKS = 1u << 4,	/* echoes end in CR CR LF LF (real ROMs vary) */
	LPC_SIM_RESEND_ONCE = 1u << 5,	/* the first W checksum is answered RESEND */
	LPC_SIM_VECTOR_REMAP = 1u << 6, /* flash 0x00-0x3F reads as boot ROM vectors */
};

enum lpc_sim_state {
	LPC_SIM_OFF,	       /* in reset, or the application runs: UART silent */
	LPC_SIM_WAIT_SYNC,     /* autobaud: waiting for "?" */
	LPC_SIM_WAIT_SYNC_STR, /* waiting for "Synchronized" */
	LPC_SIM_WAIT_FREQ,     /* waiting for the crystal in kHz */
	LPC_SIM_CMD,
	LPC_SIM_DATA_W,
	LPC_SIM_DATA_R,
};

struct lpcisp_sim {
	pthread_mutex_t lock;
	struct flash *flash;
	int fd; /* the pty master */
	uint32_t part_id;
	uint32_t serial[4];
	unsigned faults;
	unsigned sync_ignore;	/* "?" answered only after this many */
	int write_error_sector; /* with LPC_SIM_WRITE_ERROR */
	/* pins and reset reasons */
	bool isp_wired, reset_wired;
	bool isp_low, reset_low;
	bool wdtof; /* watchdog time-out flag: the ROM ignores P2.10 (UM10360 §32.3.1) */
	/* ISP state */
	enum lpc_sim_state state;
	bool echo, unlocked, resent;
	int prep_lo, prep_hi; /* prepared sectors, -1 none */
	uint32_t crystal_khz;
	uint8_t ram[0x8000]; /* local SRAM 0x10000000 */
	struct lpcisp_uu_reader rd;
	uint8_t rbuf[0x8000]; /* R data being sent */
	struct lpcisp_uu_writer wr;
	uint8_t in[1024];
	size_t in_len;
	/* a board model around the ROM (sim.c): told whenever the core stops (in reset), enters
	 * ISP or runs user code; called with the lock held. NULL: a bare ROM (uartsim, tests) */
	void (*on_run)(void *userdata, enum lpc_sim_state st);
	void *userdata;
	/* what happened, for tests */
	unsigned boots_isp, boots_app, syncs, erases, copies;
	uint32_t go_addr;
	bool went;
};

/* A ROM model on fd, starting in ISP (as at power-on with P2.10 held low). mcu: lpc1768 or
 * lpc1769; speed scales flash timing (0 = instant). */
struct lpcisp_sim *lpcisp_sim_new(const struct catalog_mcu *mcu, double speed, int fd);
/* The same ROM on a board's flash (not owned), not running (in reset) until a pin or power
 * event boots it; on_run as in struct lpcisp_sim. */
struct lpcisp_sim *lpcisp_sim_attach(const struct catalog_mcu *mcu, struct flash *flash, int fd,
				     void (*on_run)(void *userdata, enum lpc_sim_state st),
				     void *userdata);
void lpcisp_sim_free(struct lpcisp_sim *s);
/* uart_pty_feed_fn */
void lpcisp_sim_feed(void *ctx, const uint8_t *data, size_t len);
/* Pin levels driven by the host (through the fake GPIO). Releasing RESET boots. */
void lpcisp_sim_set_isp(struct lpcisp_sim *s, bool low);
void lpcisp_sim_set_reset(struct lpcisp_sim *s, bool low);
/* Power-on reset: clears WDTOF, then boots. */
void lpcisp_sim_power_cycle(struct lpcisp_sim *s);
/* Klipper's bootloader request: WDTOF set, then a watchdog reset. */
void lpcisp_sim_watchdog_reset(struct lpcisp_sim *s);
enum lpc_sim_state lpcisp_sim_state(struct lpcisp_sim *s);
