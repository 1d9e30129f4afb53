/* SPDX-License-Identifier: GPL-2.0-or-later */
/* match: which profile a device belongs to. Pure: no I/O. */
#pragma once

#include "catalog.h"
#include "config.h"
#include "device.h"

/* Catalog boards a device could be (by the MCU string it reports); fills up to `max`
 * entries of ret_boards and returns how many matched in total. */
size_t match_catalog(const struct device *dev, const struct catalog_board **ret_boards, size_t max);

/* Whether the device's USB identity in this mode comes from a ROM or a bootloader that many
 * boards share rather than from the board's firmware: its product string names no MCU and its
 * serial is not the chip UID that Klipper and Katapult report (ROM DFU, LPC DFU, BOOTSEL,
 * Marlin on LPC176x). */
bool match_mode_hides_identity(enum device_mode mode);

/* Specificity of a profile's rules against a device: -1 if they do not match, otherwise a
 * score where a more specific rule set scores higher (serial > port > board/mcu/usb id >
 * product). A rule on the board matches the device's MCU string or, for modes that hide
 * it (ROM DFU, BOOTSEL), the board recorded for that port in `known_board` (may be NULL). */
int match_score(const struct config_match *m, const struct device *dev,
		const struct catalog_board *known_board);

/* The most specific matching profile, or NULL. `known_board` as for match_score. */
const struct config_profile *match_profile(const struct config *cfg, const struct device *dev,
					   const struct catalog_board *known_board);

/* Load-time check: 0 if no two profiles could match the same device with the same score;
 * otherwise -EINVAL and ret_a, ret_b name the first clashing pair. */
int match_check_ties(const struct config *cfg, const struct config_profile **ret_a,
		     const struct config_profile **ret_b);
