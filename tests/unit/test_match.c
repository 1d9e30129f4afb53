/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Profile matching: rule scores, ambiguity between catalog boards, DFU devices via the
 * board known for their port, and the load-time tie check. */
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "harness.h"
#include "match.h"
#include "util.h"

static struct device
mkdev(uint16_t vid, uint16_t pid, const char *product, const char *serial, const char *port)
{
	struct device d;

	memset(&d, 0, sizeof(d));
	d.vid = vid;
	d.pid = pid;
	d.mode = device_mode_from_ids(vid, pid, NULL);
	DEVICE_SET(&d, product, product);
	DEVICE_SET(&d, serial, serial);
	DEVICE_SET(&d, port, port);
	DEVICE_SET(&d, id_path, "pci-0000:00:14.0-usb-0:1.2");
	return d;
}

static struct config *
load(const char *text)
{
	struct config *cfg = NULL;
	char *errors = NULL;

	if (config_load_string(text, "test.conf", NULL, &cfg, &errors) < 0) {
		fprintf(stderr, "unexpected errors:\n%s", errors);
		free(errors);
		return NULL;
	}
	return cfg;
}

static void
test_scores(void)
{
	struct device app = mkdev(0x1d50, 0x614e, "stm32f446xx", "ABC", "1-1.2");
	struct device kat = mkdev(0x1d50, 0x6177, "stm32f446xx", "ABC", "1-1.2");
	struct device dfu = mkdev(0x0483, 0xdf11, "STM32  BOOTLOADER", "3771", "1-1.2");
	struct device marlin =
	    mkdev(0x0483, 0x5740, "MARLIN_STM32F446ZE CDC in FS Mode", "1", "1-3");
	struct device none = mkdev(0x1234, 0x5678, "stm32f446xx", "ABC", "1-1.2");
	const struct catalog_board *octo = catalog_find("octopus-f446");
	const struct catalog_board *pro = catalog_find("octopus-pro-f446");
	struct config_match m;

	memset(&m, 0, sizeof(m));
	m.board = octo;
	CHECK_EQ_INT(match_score(&m, &app, NULL), 8);
	CHECK_EQ_INT(match_score(&m, &kat, NULL), 8);
	CHECK_EQ_INT(match_score(&m, &marlin, NULL), 8);
	CHECK_EQ_INT(match_score(&m, &none, NULL), -1);
	/* ROM DFU hides the MCU: only the board known for the port decides */
	CHECK_EQ_INT(match_score(&m, &dfu, NULL), -1);
	CHECK_EQ_INT(match_score(&m, &dfu, octo), 8);
	CHECK_EQ_INT(match_score(&m, &dfu, pro), -1);
	m.board = catalog_find("skr-pro");
	CHECK_EQ_INT(match_score(&m, &app, NULL), -1);
	CHECK_EQ_INT(match_score(&m, &marlin, NULL), -1);

	m.board = octo;
	m.serial = (char[]){"ABC"};
	m.port = (char[]){"1-1.*"};
	m.mcu = (char[]){"stm32f446xx"};
	m.has_usb_id = true;
	m.vid = 0x1d50;
	m.pid = 0x614e;
	m.product = (char[]){"stm32f446xx"};
	CHECK_EQ_INT(match_score(&m, &app, NULL), 32 + 16 + 8 + 4 + 2 + 1);
	CHECK_EQ_INT(match_score(&m, &kat, NULL), -1); /* usb_id pins the app mode */
	m.has_usb_id = false;
	CHECK_EQ_INT(match_score(&m, &kat, NULL), 32 + 16 + 8 + 4 + 1);
	m.serial = (char[]){"abc"}; /* serials are exact */
	CHECK_EQ_INT(match_score(&m, &app, NULL), -1);

	memset(&m, 0, sizeof(m));
	m.port = (char[]){"pci-0000:00:14.0-usb-0:1.*"}; /* ID_PATH glob */
	CHECK_EQ_INT(match_score(&m, &app, NULL), 16);
	m.port = (char[]){"1-1.3"};
	CHECK_EQ_INT(match_score(&m, &app, NULL), -1);
	memset(&m, 0, sizeof(m));
	m.mcu = (char[]){"STM32F446XX"};
	CHECK_EQ_INT(match_score(&m, &app, NULL), 4);
	CHECK_EQ_INT(match_score(&m, &dfu, octo), 4);
	CHECK_EQ_INT(match_score(&m, &dfu, NULL), -1);
	m.mcu = (char[]){"stm32f407xx"};
	CHECK_EQ_INT(match_score(&m, &app, NULL), -1);
}

static void
test_catalog_candidates(void)
{
	struct device app = mkdev(0x1d50, 0x614e, "stm32f446xx", "ABC", "1-1.2");
	struct device f103 = mkdev(0x1d50, 0x614e, "stm32f103xe", "ABC", "1-1.2");
	struct device dfu = mkdev(0x0483, 0xdf11, "x", "3771", "1-1.2");
	const struct catalog_board *b[8];

	CHECK_EQ_INT(match_catalog(&app, b, 8), 2);
	CHECK_STREQ(b[0]->name, "octopus-f446");
	CHECK_STREQ(b[1]->name, "octopus-pro-f446");
	CHECK_EQ_INT(match_catalog(&app, b, 1), 2); /* total even when truncated */
	CHECK_EQ_INT(match_catalog(&f103, b, 8), 3);
	CHECK_EQ_INT(match_catalog(&dfu, b, 8), 0);
}

static void
test_implicit(void)
{
	struct config *cfg = load("");
	struct device pico = mkdev(0x1d50, 0x614e, "rp2040", "E661", "1-4");
	struct device bootsel = mkdev(0x2e8a, 0x0003, "RP2 Boot", "E0C9125B0D9B", "1-4");
	struct device octo = mkdev(0x1d50, 0x614e, "stm32f446xx", "ABC", "1-1.2");
	struct device dfu = mkdev(0x0483, 0xdf11, "x", "3771", "1-1.2");
	const struct config_profile *p;

	if (!cfg) {
		CHECK(cfg != NULL);
		return;
	}
	p = match_profile(cfg, &pico, NULL);
	CHECK(p && strcmp(p->name, "skr-pico") == 0);
	CHECK(match_profile(cfg, &bootsel, NULL) == NULL);
	p = match_profile(cfg, &bootsel, catalog_find("skr-pico"));
	CHECK(p && strcmp(p->name, "skr-pico") == 0);
	/* two catalog boards carry the F446: ambiguous unless the port's board is known */
	CHECK(match_profile(cfg, &octo, NULL) == NULL);
	p = match_profile(cfg, &octo, catalog_find("octopus-pro-f446"));
	CHECK(p && strcmp(p->name, "octopus-pro-f446") == 0);
	p = match_profile(cfg, &dfu, catalog_find("octopus-f446"));
	CHECK(p && strcmp(p->name, "octopus-f446") == 0);
	CHECK_EQ_INT(match_check_ties(cfg, NULL, NULL), 0);
	config_free(cfg);
}

static void
test_explicit(void)
{
	struct config *cfg =
	    load("profiles = (\n"
		 "{ name = \"any-octopus\"; match = { board = \"octopus-f446\"; }; },\n"
		 "{ name = \"left\"; match = { board = \"octopus-f446\"; serial = \"L\"; }; },\n"
		 "{ name = \"hub\"; match = { port = \"1-1.*\"; }; }\n"
		 ");\n");
	struct device left = mkdev(0x1d50, 0x614e, "stm32f446xx", "L", "1-1.2");
	struct device right = mkdev(0x1d50, 0x614e, "stm32f446xx", "R", "1-2");
	struct device hubbed = mkdev(0x1d50, 0x614e, "stm32f446xx", "R", "1-1.3");
	struct device other = mkdev(0x1d50, 0x614e, "stm32h723xx", "Q", "2-1");
	const struct config_profile *p;

	if (!cfg) {
		CHECK(cfg != NULL);
		return;
	}
	p = match_profile(cfg, &left, NULL);
	CHECK(p && strcmp(p->name, "left") == 0);
	p = match_profile(cfg, &right, NULL);
	CHECK(p && strcmp(p->name, "any-octopus") == 0);
	p = match_profile(cfg, &hubbed, NULL); /* port (16) beats board (8) */
	CHECK(p && strcmp(p->name, "hub") == 0);
	CHECK(match_profile(cfg, &other, NULL) == NULL);
	config_free(cfg);
}

static void
check_tie(const char *a, const char *b, bool tie)
{
	char *text = xasprintf("profiles = ( { name = \"a\"; match = { %s }; },\n"
			       "{ name = \"b\"; match = { %s }; } );\n",
			       a, b);
	struct config *cfg = NULL;
	char *errors = NULL;
	int r = config_load_string(text, "t.conf", NULL, &cfg, &errors);

	CHECK_EQ_INT(r, tie ? -22 : 0);
	if ((r < 0) != tie)
		fprintf(stderr, "  for: %s / %s: %s", a, b, errors ? errors : "(no error)\n");
	if (tie)
		CHECK_STREQ(errors, "t.conf:2: profiles: profiles 'a' and 'b' match the same "
				    "boards equally; make one more specific\n");
	free(errors);
	config_free(cfg);
	free(text);
}

static void
test_ties(void)
{
	check_tie("board = \"skr-pico\";", "board = \"skr-pico\";", true);
	check_tie("board = \"octopus-f446\";", "board = \"octopus-pro-f446\";", true);
	check_tie("board = \"octopus-f446\";", "board = \"octopus-f429\";", false);
	check_tie("board = \"skr-mini-e3-v2-f103rc\";", "board = \"skr-mini-e3-v1.2\";", true);
	check_tie("serial = \"1\";", "serial = \"2\";", false);
	check_tie("serial = \"1\";", "port = \"1-1\";", false); /* different shapes */
	check_tie("port = \"1-1.*\";", "port = \"1-2.*\";", false);
	check_tie("port = \"1-1.*\";", "port = \"1-1.2\";", true);
	check_tie("port = \"1-*.1\";", "port = \"1-*.2\";", false);
	check_tie("port = \"*.1\";", "port = \"pci-*\";", true);
	check_tie("port = \"1-1\";", "port = \"pci-0000:00:14.0-usb-0:1\";", true);
	check_tie("usb_id = \"1d50:614e\";", "usb_id = \"1d50:6177\";", false);
	check_tie("mcu = \"rp2040\";", "mcu = \"RP2040\";", true);
	check_tie("product = \"x\";", "product = \"X\";", false);
	check_tie("board = \"skr-pico\"; serial = \"1\";", "board = \"skr-pico\"; serial = \"2\";",
		  false);
}

/* A board first seen in ROM DFU (MCU hidden, nothing known about its port) is claimed by a
 * profile that pins its port, if the mode fits the board - never by a board rule alone. */
static void
test_unknown_dfu_by_port(void)
{
	struct device dfu = mkdev(0x0483, 0xdf11, "DFU in FS Mode", "3771", "1-2");
	struct device lpc = mkdev(0x1d50, 0x6015, "", "", "1-2");
	struct config_match m;

	memset(&m, 0, sizeof(m));
	m.board = catalog_find("skr-3-h723");
	CHECK_EQ_INT(match_score(&m, &dfu, NULL), -1);
	m.port = (char[]){"1-2"};
	CHECK_EQ_INT(match_score(&m, &dfu, NULL), 16); /* port only, board unchecked */
	CHECK_EQ_INT(match_score(&m, &dfu, catalog_find("skr-3-h723")), 24);   /* known: both */
	CHECK_EQ_INT(match_score(&m, &dfu, catalog_find("octopus-f446")), -1); /* known other */
	CHECK_EQ_INT(match_score(&m, &lpc, NULL), -1); /* an LPC DFU is no H723 */
	m.board = catalog_find("skr-1.4-turbo");
	CHECK_EQ_INT(match_score(&m, &lpc, NULL), 16);
	CHECK_EQ_INT(match_score(&m, &dfu, NULL), -1); /* no STM32 ROM on an LPC */
}

int
main(void)
{
	test_scores();
	test_unknown_dfu_by_port();
	test_catalog_candidates();
	test_implicit();
	test_explicit();
	test_ties();
	TEST_DONE();
}
