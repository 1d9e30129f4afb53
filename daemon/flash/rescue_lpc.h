/* SPDX-License-Identifier: GPL-2.0-or-later */
/* rescue_lpc: the LPC176x UART ISP client of the rescue (UM10360 chapter 32 through
 * proto/lpcisp). Called by rescue_install; see flash/rescue.h. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "flash/rescue.h"

/* Sync, identify, read the old area, erase only the sectors in sector_mask (sector 0 first
 * to invalidate), write the others, verify them, then sector 0 last to validate. */
int rescue_lpc_install(int fd, const struct rescue_opts *o, const uint8_t *img, size_t len,
		       uint32_t sector_mask, struct rescue_result *res);
