/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Config loader: defaults, overrides, implicit profiles, every error kind with its exact
 * "FILE:LINE: key: what" line, and dump -> load -> dump stability. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

#include "config.h"
#include "harness.h"
#include "util.h"

static void check_ok_stop_glob(void);

static void
check_error(const char *text, const char *expected)
{
	struct config *cfg = NULL;
	char *errors = NULL;
	int r = config_load_string(text, "c.conf", NULL, &cfg, &errors);

	CHECK_EQ_INT(r, -EINVAL);
	CHECK(cfg == NULL);
	CHECK_STREQ(errors, expected);
	free(errors);
}

static void
test_errors(void)
{
	/* syntax, libconfig's own line and text */
	check_error("a = 1;\nb = ;\n", "c.conf:2: syntax error\n");
	check_error("max_jobs = 1;\nmax_jobs = 2;\n", "c.conf:2: duplicate setting name\n");
	/* strings where libconfig 1.5 would leak them: caught before parsing */
	check_error("a = 1;\nb = { c = 1, \"x\" };\n", "c.conf:2: syntax error\n");
	check_error("\"\"", "c.conf:1: syntax error\n");
	check_error("\n @include \"x\"\n", "c.conf:2: @include: not supported: keep the "
					   "configuration in one file\n");
	/* unknown keys at each level */
	check_error("colour = 1;\n", "c.conf:1: colour: unknown key\n");
	check_error("timeouts = {\nboot = 1; rebot = 2; };\n",
		    "c.conf:2: timeouts.rebot: unknown key\n");
	check_error(
	    "profiles = ( { name = \"a\";\n match = { board = \"skr-pico\"; vid = 1; }; } );",
	    "c.conf:2: profiles.[0].match.vid: unknown key\n");
	check_error("profiles = ( { name = \"a\"; x = 1;\n match = { board = \"skr-pico\"; }; } );",
		    "c.conf:1: profiles.[0].x: unknown key\n");
	/* types */
	check_error("state_dir = 1;", "c.conf:1: state_dir: expected a string\n");
	check_error("max_jobs = \"4\";", "c.conf:1: max_jobs: expected an integer\n");
	check_error("timeouts = { boot = \"1\"; };",
		    "c.conf:1: timeouts.boot: expected a number\n");
	check_error("timeouts = 1;", "c.conf:1: timeouts: expected a group { ... }\n");
	check_error("profiles = { };",
		    "c.conf:1: profiles: expected a list of groups ( { ... }, ... )\n");
	check_error("profiles = ( 1 );", "c.conf:1: profiles.[0]: expected a group { ... }\n");
	check_error("profiles = ( { name = \"a\"; match = { board = \"skr-pico\"; };\n"
		    "moonraker_fail_open = 1; } );",
		    "c.conf:2: profiles.[0].moonraker_fail_open: expected true or false\n");
	check_error("profiles = ( { name = \"a\"; match = { board = \"skr-pico\"; };\n"
		    "moonraker_api_key_file = \"moonraker.key\"; } );",
		    "c.conf:2: profiles.[0].moonraker_api_key_file: expected an absolute path to a "
		    "file holding the API key, not 'moonraker.key'\n");
	check_error("profiles = ( { name = \"a\"; match = { board = \"skr-pico\"; };\n"
		    "methods = \"katapult\"; } );",
		    "c.conf:2: profiles.[0].methods: expected an array of strings [ ... ]\n");
	/* values and ranges */
	check_error("state_dir = \"var\";", "c.conf:1: state_dir: must be an absolute path\n");
	check_error("runtime_dir = \"\";", "c.conf:1: runtime_dir: must not be empty\n");
	check_error(
	    "log_level = \"verbose\";",
	    "c.conf:1: log_level: unknown level 'verbose' (error|warning|notice|info|debug)\n");
	check_error("max_jobs = 65;", "c.conf:1: max_jobs: must be between 1 and 64\n");
	check_error("max_jobs = 0;", "c.conf:1: max_jobs: must be between 1 and 64\n");
	check_error("timeouts = { step = 0.09; };",
		    "c.conf:1: timeouts.step: must be between 0.1 and 600 seconds\n");
	check_error("drop_group = \"no-such-group-h1\";",
		    "c.conf:1: drop_group: unknown group 'no-such-group-h1'\n");
	/* profiles */
	check_error("profiles = ( { match = { board = \"skr-pico\"; }; } );",
		    "c.conf:1: profiles.[0].name: missing\n");
	check_error("profiles = ( { name = \"A\"; match = { board = \"skr-pico\"; }; } );",
		    "c.conf:1: profiles.[0].name: invalid name 'A' ([a-z0-9][a-z0-9._-]*, at most "
		    "64 characters)\n");
	check_error("profiles = ( { name = \"a\"; } );",
		    "c.conf:1: profiles.[0].match: missing (a profile needs at least one rule)\n");
	check_error("profiles = ( { name = \"a\"; match = { }; } );",
		    "c.conf:1: profiles.[0].match: needs at least one rule (board, usb_id, serial, "
		    "port, mcu, product)\n");
	check_error(
	    "profiles = ( { name = \"a\"; match = { board = \"skr-pico\"; }; },\n"
	    "{ name = \"a\"; match = { serial = \"1\"; }; } );",
	    "c.conf:2: profiles.[1].name: duplicate profile name 'a' (first defined at line "
	    "1)\n");
	check_error("profiles = ( { name = \"a\"; match = { board = \"skr-pico\"; }; },\n"
		    "{ name = \"b\"; match = { serial = \"1\"; }; queue = \"a\"; } );",
		    "c.conf:2: profiles.[1].queue: queue 'a' is already used by profile 'a'\n");
	check_error(
	    "profiles = ( { name = \"a\"; match = { board = \"skr-9\"; }; } );",
	    "c.conf:1: profiles.[0].match.board: unknown board 'skr-9' (`skrflashctl catalog` "
	    "lists them)\n");
	check_error("profiles = ( { name = \"a\"; match = { usb_id = \"1d50614e\"; }; } );",
		    "c.conf:1: profiles.[0].match.usb_id: invalid USB id '1d50614e' (expected "
		    "vvvv:pppp in hex)\n");
	check_error("profiles = ( { name = \"a\"; match = { port = \"1-[1\"; }; } );",
		    "c.conf:1: profiles.[0].match.port: invalid glob '1-[1': has an unterminated "
		    "'['\n");
	check_error("profiles = ( { name = \"a\";\nmatch = { board = \"skr-pico\";\n"
		    "mcu = \"stm32f446xx\"; }; } );",
		    "c.conf:3: profiles.[0].match.mcu: 'stm32f446xx' contradicts board 'skr-pico' "
		    "(rp2040)\n");
	check_error("profiles = ( { name = \"a\"; match = { board = \"skr-2-f429\"; };\n"
		    "methods = [ \"dfu\" ]; } );",
		    "c.conf:2: profiles.[0].methods.[0]: board 'skr-2-f429' has no dfu path\n");
	check_error("profiles = ( { name = \"a\"; match = { serial = \"1\"; };\n"
		    "methods = [ \"dfu\", \"sd\", \"dfu\" ]; } );",
		    "c.conf:2: profiles.[0].methods.[2]: duplicate method 'dfu'\n");
	check_error(
	    "profiles = ( { name = \"a\"; match = { serial = \"1\"; };\n"
	    "auto_flash = [ \"boot\" ]; } );",
	    "c.conf:2: profiles.[0].auto_flash.[0]: unknown trigger 'boot' (hotplug|queue)\n");
	check_error(
	    "profiles = ( { name = \"a\"; match = { serial = \"1\"; };\n"
	    "stop_units = [ \"klipper\" ]; } );",
	    "c.conf:2: profiles.[0].stop_units.[0]: invalid unit name 'klipper' (must end in "
	    ".service)\n");
	/* a glob, as docs/safety.md shows: the engine stops the matching unit holding the tty */
	check_ok_stop_glob();
	check_error("profiles = ( { name = \"a\"; match = { board = \"skr-1.3\"; };\n"
		    "app_start = 0x80000; } );",
		    "c.conf:2: profiles.[0].app_start: 0x00080000 is outside the flash of board "
		    "'skr-1.3' (0x00000000..0x0007ffff)\n");
	check_error("profiles = ( { name = \"a\"; match = { serial = \"1\"; };\n"
		    "interface = \"i2c\"; } );",
		    "c.conf:2: profiles.[0].interface: unknown interface 'i2c' (usb|serial|can)\n");
	/* every problem is reported, in file order */
	check_error(
	    "max_jobs = 0;\nprofiles = ( { name = \"a\";\nmatch = { board = \"x\"; }; } );\n"
	    "log_level = 3;\n",
	    "c.conf:1: max_jobs: must be between 1 and 64\n"
	    "c.conf:3: profiles.[0].match.board: unknown board 'x' (`skrflashctl catalog` lists "
	    "them)\n"
	    "c.conf:4: log_level: expected a string\n");
}

static void
test_defaults(void)
{
	struct config *cfg = NULL;
	size_t n;

	CHECK_EQ_INT(config_load(NULL, NULL, &cfg, NULL), 0);
	if (!cfg)
		return;
	CHECK(cfg->path == NULL);
	CHECK_STREQ(cfg->state_dir, "/var/lib/skrflash");
	CHECK_STREQ(cfg->queue_dir, "/var/lib/skrflash/queue");
	CHECK_STREQ(cfg->runtime_dir, "/run/skrflash");
	CHECK_EQ_INT(cfg->log_level, LOG_INFO);
	CHECK_EQ_INT(cfg->max_jobs, 4);
	CHECK_EQ_INT(cfg->bootloader_timeout_ms, 10000);
	CHECK_EQ_INT(cfg->boot_timeout_ms, 15000);
	CHECK_EQ_INT(cfg->step_timeout_ms, 120000);
	CHECK_EQ_INT(cfg->leave_grace_ms, 3000);
	CHECK(!cfg->has_drop_gid && !cfg->has_control_gid);
	catalog_boards(&n);
	CHECK_EQ_INT(cfg->n_profiles, n);
	for (size_t i = 0; i < cfg->n_profiles; i++) {
		const struct config_profile *p = &cfg->profiles[i];

		CHECK(p->implicit);
		CHECK_STREQ(p->name, p->match.board->name);
		CHECK_STREQ(p->queue, p->name);
		CHECK(p->n_methods >= 1);
		CHECK_EQ_INT(p->methods[0], CONFIG_METHOD_KATAPULT);
		CHECK_EQ_INT(p->auto_flash, CONFIG_AUTO_HOTPLUG);
		CHECK_EQ_INT(config_profile_app_start(p), p->match.board->app_start);
	}
	{
		const struct config_profile *p = config_find_profile(cfg, "skr-pro");

		CHECK(p && p->n_methods == 2 && p->methods[1] == CONFIG_METHOD_SD);
		p = config_find_queue(cfg, "octopus-f446");
		CHECK(p && p->n_methods == 3 && p->methods[1] == CONFIG_METHOD_DFU);
		p = config_find_profile(cfg, "skr-pico");
		CHECK(p && p->n_methods == 2 && p->methods[1] == CONFIG_METHOD_UF2);
		CHECK(config_find_profile(cfg, "nope") == NULL);
	}
	cfg = config_free(cfg);
	CHECK(cfg == NULL);
}

static void
test_values_and_overrides(void)
{
	struct config_overrides ov = {
	    .state_dir = "/tmp/s", .runtime_dir = "/tmp/r", .log_level = LOG_DEBUG};
	struct config *cfg = NULL;
	char *errors = NULL;
	const char *text =
	    "state_dir = \"/srv/a\";\nlog_level = \"warning\";\nmax_jobs = 2;\n"
	    "timeouts = { boot = 1.5; leave_grace = 2; };\ncontrol_group = \"root\";\n"
	    "profiles = ( { name = \"x\"; match = { board = \"skr-3-h743\";\n"
	    " usb_id = \"1D50:614E\"; mcu = \"STM32H743XX\"; };\n"
	    " methods = [ \"sd\", \"katapult\" ]; auto_flash = [];\n"
	    " stop_units = [ \"klipper.service\", \"moonraker.service\" ];\n"
	    " moonraker = \"http://localhost:7125\"; moonraker_fail_open = true;\n"
	    " moonraker_api_key_file = \"/etc/skrflash/moonraker.key\";\n"
	    " app_start = 0x08040000; interface = \"can\"; } );\n";
	const struct config_profile *p;

	CHECK_EQ_INT(config_load_string(text, "v.conf", NULL, &cfg, &errors), 0);
	if (!cfg) {
		fprintf(stderr, "%s", errors);
		free(errors);
		return;
	}
	CHECK_STREQ(cfg->state_dir, "/srv/a");
	CHECK_STREQ(cfg->queue_dir, "/srv/a/queue");
	CHECK_EQ_INT(cfg->log_level, LOG_WARNING);
	CHECK_EQ_INT(cfg->max_jobs, 2);
	CHECK_EQ_INT(cfg->boot_timeout_ms, 1500);
	CHECK_EQ_INT(cfg->leave_grace_ms, 2000);
	CHECK_EQ_INT(cfg->step_timeout_ms, 120000);
	CHECK(cfg->has_control_gid && cfg->control_gid == 0);
	CHECK_STREQ(cfg->control_group, "root");
	CHECK_EQ_INT(cfg->n_profiles, 1);
	p = &cfg->profiles[0];
	CHECK(!p->implicit);
	CHECK_EQ_INT(p->line, 6);
	CHECK_STREQ(p->queue, "x");
	CHECK(p->match.has_usb_id && p->match.vid == 0x1d50 && p->match.pid == 0x614e);
	CHECK_STREQ(p->match.mcu, "stm32h743xx");
	CHECK_EQ_INT(p->n_methods, 2);
	CHECK_EQ_INT(p->methods[0], CONFIG_METHOD_SD);
	CHECK_EQ_INT(p->auto_flash, 0);
	CHECK_EQ_INT(p->n_stop_units, 2);
	CHECK_STREQ(p->stop_units[1], "moonraker.service");
	CHECK(p->stop_units[2] == NULL);
	CHECK_STREQ(p->moonraker_url, "http://localhost:7125");
	CHECK(p->moonraker_fail_open);
	CHECK_STREQ(p->moonraker_api_key_file, "/etc/skrflash/moonraker.key");
	CHECK_EQ_INT(config_profile_app_start(p), 0x08040000);
	CHECK_EQ_INT(p->interface, CONFIG_INTERFACE_CAN);
	CHECK_STREQ(config_interface_to_string(p->interface), "can");
	CHECK_STREQ(config_method_to_string(CONFIG_METHOD_UF2), "uf2");
	config_free(cfg);

	/* overrides replace; the default queue_dir follows the overridden state_dir */
	CHECK_EQ_INT(config_load_string(text, "v.conf", &ov, &cfg, NULL), 0);
	if (cfg) {
		CHECK_STREQ(cfg->state_dir, "/tmp/s");
		CHECK_STREQ(cfg->queue_dir, "/tmp/s/queue");
		CHECK_STREQ(cfg->runtime_dir, "/tmp/r");
		CHECK_EQ_INT(cfg->log_level, LOG_DEBUG);
		cfg = config_free(cfg);
	}
	/* an explicit queue_dir stays */
	CHECK_EQ_INT(config_load_string("queue_dir = \"/q\";", "v.conf", &ov, &cfg, NULL), 0);
	if (cfg) {
		CHECK_STREQ(cfg->queue_dir, "/q");
		cfg = config_free(cfg);
	}
	/* an empty profile list means the catalog profiles */
	CHECK_EQ_INT(config_load_string("profiles = ( );", "v.conf", NULL, &cfg, NULL), 0);
	if (cfg) {
		CHECK(cfg->n_profiles > 1 && cfg->profiles[0].implicit);
		cfg = config_free(cfg);
	}
}

static char *
dump_to_string(const struct config *cfg)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);

	if (!f)
		abort();
	config_dump(cfg, f);
	fclose(f);
	return buf;
}

static void
test_dump_roundtrip(void)
{
	const char *text =
	    "timeouts = { bootloader = 0.25; boot = 600; };\n"
	    "profiles = ( { name = \"a\"; match = { board = \"octopus-f446\";\n"
	    " serial = \"q\\\"b\\\\s\"; port = \"1-1.*\"; product = \"x y\"; };\n"
	    " app_start = 0x08010000; },\n"
	    " { name = \"b\"; match = { usb_id = \"0483:df11\"; }; queue = \"bq\"; } );\n";
	struct config *cfg = NULL, *again = NULL;
	char *d1, *d2, *errors = NULL;

	CHECK_EQ_INT(config_load_string(text, "d.conf", NULL, &cfg, &errors), 0);
	if (!cfg) {
		fprintf(stderr, "%s", errors);
		free(errors);
		return;
	}
	d1 = dump_to_string(cfg);
	CHECK(strstr(d1, "app_start = 0x08010000;") != NULL);
	CHECK(strstr(d1, "bootloader = 0.25;") != NULL);
	CHECK(strstr(d1, "serial = \"q\\\"b\\\\s\";") != NULL);
	CHECK_EQ_INT(config_load_string(d1, "dump", NULL, &again, &errors), 0);
	if (again) {
		d2 = dump_to_string(again);
		CHECK_STREQ(d1, d2);
		CHECK_STREQ(again->profiles[0].match.serial, "q\"b\\s");
		free(d2);
		config_free(again);
	} else {
		fprintf(stderr, "%s", errors);
		free(errors);
	}
	free(d1);
	config_free(cfg);

	/* implicit profiles are summarized, not dumped */
	CHECK_EQ_INT(config_load(NULL, NULL, &cfg, NULL), 0);
	d1 = dump_to_string(cfg);
	CHECK(strstr(d1, "profiles =") == NULL);
	CHECK(strstr(d1, "# 22 implicit catalog profiles\n") != NULL);
	free(d1);
	config_free(cfg);
}

static void
test_files(void)
{
	char path[] = "/tmp/test_config.XXXXXX";
	struct config *cfg = NULL;
	char *errors = NULL;
	int fd = mkstemp(path);
	const char text[] = "max_jobs = 3;\nlog_level = \"x\";\n";

	CHECK(fd >= 0);
	if (fd < 0)
		return;
	CHECK_EQ_INT(write(fd, text, sizeof(text) - 1), (long long)sizeof(text) - 1);
	close(fd);
	CHECK_EQ_INT(config_load(path, NULL, &cfg, &errors), -EINVAL);
	{
		char *expected = xasprintf("%s:2: log_level: unknown level 'x' "
					   "(error|warning|notice|info|debug)\n",
					   path);

		CHECK_STREQ(errors, expected);
		free(expected);
	}
	free(errors);
	errors = NULL;
	unlink(path);
	CHECK_EQ_INT(config_load(path, NULL, &cfg, &errors), -ENOENT);
	CHECK(errors && strstr(errors, "No such file") != NULL);
	free(errors);
	CHECK(cfg == NULL);
}

int
main(void)
{
	test_errors();
	test_defaults();
	test_values_and_overrides();
	test_dump_roundtrip();
	test_files();
	TEST_DONE();
}

static void
check_ok_stop_glob(void)
{
	struct config *cfg = NULL;
	char *errors = NULL;
	int r = config_load_string("profiles = ( { name = \"a\"; match = { serial = \"1\"; };\n"
				   "stop_units = [ \"klipper*.service\" ]; } );",
				   "c.conf", NULL, &cfg, &errors);

	CHECK_EQ_INT(r, 0);
	if (r == 0)
		CHECK_STREQ(cfg->profiles[0].stop_units[0], "klipper*.service");
	free(errors);
	config_free(cfg);
}
