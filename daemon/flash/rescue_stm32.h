/* SPDX-License-Identifier: GPL-2.0-or-later */
/* rescue_stm32: the STM32 USART bootloader client of the rescue (ST AN3155 through
 * proto/an3155). Called by rescue_install; see flash/rescue.h. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "flash/rescue.h"

/* Sync, identify, read the old area, Extended-Erase only the sectors in sector_mask, write,
 * verify by readback. */
int rescue_stm32_install(int fd, const struct rescue_opts *o, const uint8_t *img, size_t len,
			 uint32_t sector_mask, struct rescue_result *res);
