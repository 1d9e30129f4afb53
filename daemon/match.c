/* SPDX-License-Identifier: GPL-2.0-or-later */
/* match: which profile a device belongs to, and load-time detection of ambiguous profiles.
 *
 * Rule weights are distinct powers of two, so a score names exactly the set of rules that
 * matched: two profiles can only tie on a device when they use the same kinds of rules, which
 * is what match_check_ties() looks for. */
#include "match.h"

#include <ctype.h>
#include <errno.h>
#include <fnmatch.h>
#include <string.h>
#include <strings.h>

enum {
	SCORE_SERIAL = 32,
	SCORE_PORT = 16,
	SCORE_BOARD = 8,
	SCORE_MCU = 4,
	SCORE_USB_ID = 2,
	SCORE_PRODUCT = 1,
};

/* Length of the part of a Klipper MCU name that names the chip line: "stm32g0b1" of
 * "stm32g0b1xx", "stm32f103" of "stm32f103xe" (the 'x' after "stm32" starts the size code). */
static size_t
mcu_prefix_len(const char *name)
{
	const char *x;

	if (strncasecmp(name, "stm32", 5) != 0)
		return strlen(name);
	x = strpbrk(name + 5, "xX");
	return x ? (size_t)(x - name) : strlen(name);
}

/* Marlin on the STM32duino core reports "<USB_PRODUCT> CDC in FS Mode", where USB_PRODUCT is
 * "MARLIN_" plus the chip, e.g. "MARLIN_STM32G0B1RE CDC in FS Mode" (protocols.md §1.4). */
static bool
marlin_product_is(const char *product, const char *mcu_name)
{
	static const char prefix[] = "MARLIN_";
	size_t n = mcu_prefix_len(mcu_name);

	if (strncasecmp(product, prefix, sizeof(prefix) - 1) != 0)
		return false;
	product += sizeof(prefix) - 1;
	return n >= 5 && strncasecmp(product, mcu_name, n) == 0;
}

bool
match_mode_hides_identity(enum device_mode mode)
{
	switch (mode) {
	case DEVICE_MODE_STM32_ROM_DFU:
	case DEVICE_MODE_LPC_DFU:
	case DEVICE_MODE_RP2040_BOOTSEL:
	case DEVICE_MODE_MARLIN_LPC: /* the same constant product and serial on every board */
		return true;
	case DEVICE_MODE_NONE:
	case DEVICE_MODE_KLIPPER_APP:
	case DEVICE_MODE_KATAPULT:
	case DEVICE_MODE_MARLIN_STM32:
	case _DEVICE_MODE_MAX:
	default:
		return false;
	}
}

/* Whether the device reports (or, hidden, is known to carry) the MCU `name`. */
static bool
device_has_mcu(const struct device *dev, const char *name, const struct catalog_board *known_board)
{
	switch (dev->mode) {
	case DEVICE_MODE_KLIPPER_APP:
	case DEVICE_MODE_KATAPULT:
		return strcasecmp(dev->product, name) == 0;
	case DEVICE_MODE_MARLIN_STM32:
		return marlin_product_is(dev->product, name);
	case DEVICE_MODE_STM32_ROM_DFU:
	case DEVICE_MODE_LPC_DFU:
	case DEVICE_MODE_RP2040_BOOTSEL:
	case DEVICE_MODE_MARLIN_LPC:
		return known_board && strcasecmp(known_board->mcu->name, name) == 0;
	case DEVICE_MODE_NONE:
	case _DEVICE_MODE_MAX:
	default:
		return false;
	}
}

/* Could this board enumerate in this mode at all? */
static bool
mode_fits_board(enum device_mode mode, const struct catalog_board *board)
{
	switch (mode) {
	case DEVICE_MODE_STM32_ROM_DFU:
		return board->mcu->dfu_layout != NULL;
	case DEVICE_MODE_LPC_DFU:
	case DEVICE_MODE_MARLIN_LPC:
		return board->mcu->family == CATALOG_FAMILY_LPC176X;
	case DEVICE_MODE_RP2040_BOOTSEL:
		return board->mcu->family == CATALOG_FAMILY_RP2040;
	case DEVICE_MODE_NONE:
	case DEVICE_MODE_KLIPPER_APP:
	case DEVICE_MODE_KATAPULT:
	case DEVICE_MODE_MARLIN_STM32:
	case _DEVICE_MODE_MAX:
	default:
		return true;
	}
}

static bool
device_is_board(const struct device *dev, const struct catalog_board *board,
		const struct catalog_board *known_board)
{
	if (match_mode_hides_identity(dev->mode))
		return known_board == board;
	return device_has_mcu(dev, board->mcu->name, NULL);
}

size_t
match_catalog(const struct device *dev, const struct catalog_board **ret_boards, size_t max)
{
	const struct catalog_board *boards;
	size_t n, found = 0;

	if (!dev || match_mode_hides_identity(dev->mode))
		return 0;
	boards = catalog_boards(&n);
	for (size_t i = 0; i < n; i++) {
		if (!device_has_mcu(dev, boards[i].mcu->name, NULL))
			continue;
		if (ret_boards && found < max)
			ret_boards[found] = &boards[i];
		found++;
	}
	return found;
}

int
match_score(const struct config_match *m, const struct device *dev,
	    const struct catalog_board *known_board)
{
	int score = 0;

	if (!m || !dev || dev->mode == DEVICE_MODE_NONE)
		return -1;
	if (m->serial) {
		if (strcmp(dev->serial, m->serial) != 0)
			return -1;
		score += SCORE_SERIAL;
	}
	if (m->port) {
		if (fnmatch(m->port, dev->port, 0) != 0 &&
		    !(dev->id_path[0] && fnmatch(m->port, dev->id_path, 0) == 0))
			return -1;
		score += SCORE_PORT;
	}
	/* A board first seen in a mode that hides its MCU (ROM DFU, BOOTSEL) is unknown; a
	 * profile that pins its port may still claim it, if the mode fits the board, without
	 * scoring for a board rule nobody could check. */
	if (m->board) {
		if (device_is_board(dev, m->board, known_board))
			score += SCORE_BOARD;
		else if (!(match_mode_hides_identity(dev->mode) && !known_board && m->port &&
			   mode_fits_board(dev->mode, m->board)))
			return -1;
	}
	if (m->mcu) {
		if (device_has_mcu(dev, m->mcu, known_board))
			score += SCORE_MCU;
		else if (!(match_mode_hides_identity(dev->mode) && !known_board && m->port))
			return -1;
	}
	if (m->has_usb_id) {
		if (dev->vid != m->vid || dev->pid != m->pid)
			return -1;
		score += SCORE_USB_ID;
	}
	if (m->product) {
		if (strcmp(dev->product, m->product) != 0)
			return -1;
		score += SCORE_PRODUCT;
	}
	return score;
}

const struct config_profile *
match_profile(const struct config *cfg, const struct device *dev,
	      const struct catalog_board *known_board)
{
	const struct config_profile *best = NULL;
	int best_score = -1;
	size_t n_best = 0;

	if (!cfg || !dev)
		return NULL;
	for (size_t i = 0; i < cfg->n_profiles; i++) {
		int s = match_score(&cfg->profiles[i].match, dev, known_board);

		if (s < 0 || s < best_score)
			continue;
		if (s > best_score) {
			best_score = s;
			best = &cfg->profiles[i];
			n_best = 1;
		} else {
			n_best++;
		}
	}
	if (n_best <= 1)
		return best;

	/* Several catalog boards share an MCU (octopus-f446 and octopus-pro-f446): only the
	 * board already known for the port can pick one; otherwise it is ambiguous. */
	best = NULL;
	n_best = 0;
	if (!known_board)
		return NULL;
	for (size_t i = 0; i < cfg->n_profiles; i++) {
		const struct config_profile *p = &cfg->profiles[i];

		if (p->match.board == known_board &&
		    match_score(&p->match, dev, known_board) == best_score) {
			best = p;
			n_best++;
		}
	}
	return n_best == 1 ? best : NULL;
}

/* ']' counts too, so that heads and tails are pure literals even after a bracket expression;
 * treating an escaped character as special only makes the check more cautious. */
static bool
is_glob_meta(char c)
{
	return c == '*' || c == '?' || c == '[' || c == ']' || c == '\\';
}

/* Two port globs are provably disjoint when they address the same namespace (a port path
 * starts with a digit, an ID_PATH with a letter) and their literal heads or tails differ. */
static bool
ports_disjoint(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b), ha = 0, hb = 0, ta = 0, tb = 0, n;

	if (!isalnum((unsigned char)a[0]) || !isalnum((unsigned char)b[0]) ||
	    !isdigit((unsigned char)a[0]) != !isdigit((unsigned char)b[0]))
		return false;
	while (ha < la && !is_glob_meta(a[ha]))
		ha++;
	while (hb < lb && !is_glob_meta(b[hb]))
		hb++;
	if (ha == la && hb == lb)
		return strcmp(a, b) != 0;
	n = ha < hb ? ha : hb;
	if (strncmp(a, b, n) != 0)
		return true;
	while (ta < la && !is_glob_meta(a[la - 1 - ta]))
		ta++;
	while (tb < lb && !is_glob_meta(b[lb - 1 - tb]))
		tb++;
	n = ta < tb ? ta : tb;
	return strncmp(a + la - n, b + lb - n, n) != 0;
}

static bool
same_shape(const struct config_match *a, const struct config_match *b)
{
	return !a->serial == !b->serial && !a->port == !b->port && !a->board == !b->board &&
	       !a->mcu == !b->mcu && a->has_usb_id == b->has_usb_id && !a->product == !b->product;
}

static bool
disjoint(const struct config_match *a, const struct config_match *b)
{
	if (a->serial && strcmp(a->serial, b->serial) != 0)
		return true;
	if (a->port && ports_disjoint(a->port, b->port))
		return true;
	if (a->board && strcasecmp(a->board->mcu->name, b->board->mcu->name) != 0)
		return true;
	if (a->mcu && strcasecmp(a->mcu, b->mcu) != 0)
		return true;
	if (a->has_usb_id && (a->vid != b->vid || a->pid != b->pid))
		return true;
	if (a->product && strcmp(a->product, b->product) != 0)
		return true;
	return false;
}

int
match_check_ties(const struct config *cfg, const struct config_profile **ret_a,
		 const struct config_profile **ret_b)
{
	if (!cfg)
		return 0;
	for (size_t i = 0; i < cfg->n_profiles; i++) {
		const struct config_profile *a = &cfg->profiles[i];

		if (a->implicit)
			continue;
		for (size_t j = i + 1; j < cfg->n_profiles; j++) {
			const struct config_profile *b = &cfg->profiles[j];

			if (b->implicit || !same_shape(&a->match, &b->match) ||
			    disjoint(&a->match, &b->match))
				continue;
			if (ret_a)
				*ret_a = a;
			if (ret_b)
				*ret_b = b;
			return -EINVAL;
		}
	}
	return 0;
}
