/* SPDX-License-Identifier: GPL-2.0-or-later */
/* rescue_wiring: where the UART, boot-mode and RESET signals of each catalog board are, for
 * the rescue plan and the guided manual mode. Facts from research round2-uart-rescue.md
 * §1.12 (SKR 1.3/1.4/1.4 Turbo) and §2.4 (STM32 boards); "[unconfirmed]" marks what the
 * research could not check. Pure data. */
#pragma once

#include <stdbool.h>

#include "flash/rescue.h"

struct rescue_wiring {
	const char *prefix; /* catalog board names starting with this */
	bool possible;	    /* false: no UART ROM path on this board (why = notes) */
	enum rescue_rom rom;
	const char *uart;  /* where TX/RX/GND are on the board */
	const char *boot;  /* how the boot-mode pin is reached */
	const char *reset; /* where RESET is */
	const char *notes; /* advice, may be NULL */
};

/* Wiring of a catalog board; NULL when skrflash has no facts for it. */
const struct rescue_wiring *rescue_wiring_find(const char *board);
