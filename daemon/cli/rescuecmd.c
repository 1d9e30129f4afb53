/* SPDX-License-Identifier: GPL-2.0-or-later */
/* rescuecmd: skrflashctl rescue. See rescuecmd.h. */
#include "cli/rescuecmd.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "catalog.h"
#include "config.h"
#include "paths.h"
#include "flash/gpio.h"
#include "flash/rescue.h"
#include "flash/rescue_wiring.h"
#include "image/image.h"
#include "util.h"

enum { EXIT_OK = 0, EXIT_FAIL = 1, EXIT_USAGE = 2 };

struct args {
	const char *board, *device, *reset_line, *boot_line, *save_old, *file, *config;
	unsigned baud, crystal;
	bool baud_set, dry_run;
};

static void
usage(void)
{
	fprintf(
	    stderr,
	    "Usage: skrflashctl rescue [--board NAME] [--device TTY] [--baud N] [--crystal KHZ]\n"
	    "                          [--reset-line NAME] [--boot-line NAME]\n"
	    "                          [--save-old FILE] [--config FILE] [--dry-run]\n"
	    "                          BOOTLOADER.bin\n"
	    "Installs a USB bootloader (Katapult) over a UART through the MCU's ROM and keeps\n"
	    "the application. Lines are GPIO line names (gpioinfo); without them you are told\n"
	    "when to set the jumper and press RESET. Device, baud, lines and board default to\n"
	    "the rescue section of skrflash.conf. See docs/rescue.md.\n");
}

static int
parse(int argc, char **argv, struct args *a)
{
	static const struct option opts[] = {
	    {"board", required_argument, NULL, 'b'},
	    {"device", required_argument, NULL, 'd'},
	    {"baud", required_argument, NULL, 'B'},
	    {"crystal", required_argument, NULL, 'x'},
	    {"reset-line", required_argument, NULL, 'r'},
	    {"boot-line", required_argument, NULL, 'i'},
	    {"save-old", required_argument, NULL, 's'},
	    {"dry-run", no_argument, NULL, 'n'},
	    {"config", required_argument, NULL, 'c'},
	    {NULL, 0, NULL, 0},
	};
	uint32_t v;
	int opt;

	*a = (struct args){.baud = 115200, .crystal = 12000};
	optind = 0; /* glibc: 0 re-initialises getopt after main's own parse */
	while ((opt = getopt_long(argc, argv, "+", opts, NULL)) != -1) {
		switch (opt) {
		case 'b':
			a->board = optarg;
			break;
		case 'd':
			a->device = optarg;
			break;
		case 'B':
		case 'x':
			if (parse_u32(optarg, &v) < 0 || v == 0) {
				fprintf(stderr, "skrflashctl rescue: --%s wants a number\n",
					opt == 'B' ? "baud" : "crystal");
				return -EINVAL;
			}
			*(opt == 'B' ? &a->baud : &a->crystal) = v;
			a->baud_set |= opt == 'B';
			break;
		case 'r':
			a->reset_line = optarg;
			break;
		case 'i':
			a->boot_line = optarg;
			break;
		case 's':
			a->save_old = optarg;
			break;
		case 'n':
			a->dry_run = true;
			break;
		case 'c':
			a->config = optarg;
			break;
		default:
			return -EINVAL;
		}
	}
	if (optind + 1 != argc)
		return -EINVAL;
	a->file = argv[optind];
	return 0;
}

static void
print_wiring(const struct rescue_wiring *w, const struct args *a, enum rescue_rom rom)
{
	printf("Wiring (3.3 V logic, TX to RX crossed, GND shared):\n");
	printf("  UART   %s <-> %s\n", a->device, w->uart);
	printf("  %-6s %s%s%s\n", rom == RESCUE_ROM_LPCISP ? "ISP" : "BOOT0", w->boot,
	       a->boot_line ? " <- GPIO line " : " (by hand: you will be told when)",
	       a->boot_line ? a->boot_line : "");
	printf("  RESET  %s%s%s\n", w->reset, a->reset_line ? " <- GPIO line " : " (by hand)",
	       a->reset_line ? a->reset_line : "");
	printf("  GPIO lines are driven %s, and let go when the rescue ends.\n",
	       rom == RESCUE_ROM_LPCISP ? "open-drain, active-low (the board's pull-ups win)"
					: "RESET open-drain active-low, BOOT0 push-pull high");
	if (w->notes)
		printf("  Note: %s\n", w->notes);
}

static void
print_plan(const struct catalog_board *b, const struct rescue_opts *o, const struct args *a,
	   size_t len, uint32_t mask)
{
	uint32_t base = b->mcu->flash_base, end = base + o->boot_size - 1;
	unsigned n = 0, last = 0;

	for (unsigned i = 0; i < 32; i++) {
		if (mask & (1u << i)) {
			n++;
			last = i;
		}
	}
	printf("Plan:\n");
	if (a->boot_line && a->reset_line)
		printf("  1. assert %s, pulse RESET, %s\n",
		       o->rom == RESCUE_ROM_LPCISP ? "ISP (P2.10 low)" : "BOOT0 (high)",
		       o->rom == RESCUE_ROM_LPCISP ? "release ISP 100 ms later"
						   : "keep BOOT0 high until the end");
	else
		printf("  1. you set the boot jumper/pad and press RESET when asked\n");
	if (o->rom == RESCUE_ROM_LPCISP) {
		printf("  2. synchronise (\"?\", \"Synchronized\", crystal %u kHz), unlock, check "
		       "the part ID is %s\n",
		       o->crystal_khz, b->mcu->name);
		printf("  3. read and keep the current bootloader 0x%08x-0x%08x\n", base, end);
		printf("  4. erase sector 0 first (the old code becomes invalid), then sectors "
		       "1-%u\n",
		       last);
		printf("  5. write sectors 1-%u, verify them, write sector 0 last (its vector "
		       "checksum makes the new code valid), verify\n",
		       last);
	} else {
		printf("  2. synchronise (0x7F), Get, Get ID: check the product is %s\n",
		       b->mcu->name);
		printf("  3. read and keep the current bootloader 0x%08x-0x%08x\n", base, end);
		printf("  4. Extended Erase of sector%s 0%s%u\n", n > 1 ? "s" : "",
		       n > 1 ? "-" : "", n > 1 ? last : 0);
		printf("  5. write %zu bytes in 256-byte blocks, read every block back\n", len);
	}
	printf("  6. release %s, pulse RESET: the new bootloader starts the application at "
	       "0x%08x\n",
	       o->rom == RESCUE_ROM_LPCISP ? "ISP" : "BOOT0", b->app_start);
	printf("Will erase: %u sector%s, 0x%08x-0x%08x; nothing at or above 0x%08x is touched.\n",
	       n, n == 1 ? "" : "s", base, end, b->app_start);
}

static void
progress(void *userdata, const char *step, uint64_t done, uint64_t total)
{
	(void)userdata;
	if (strcmp(step, "sync") == 0 && done > 0)
		return;
	fprintf(stderr, "  %-6s %llu/%llu\n", step, (unsigned long long)done,
		(unsigned long long)total);
}

static int
open_lines(const struct args *a, enum rescue_rom rom, struct gpio **ret)
{
	char err[512];
	int r = rescue_open_lines(a->reset_line, a->boot_line, rom, ret, err, sizeof(err));

	if (r < 0)
		fprintf(stderr, "skrflashctl rescue: %s\n", err);
	return r;
}

static void
save_old(const struct args *a, const struct rescue_result *res)
{
	char sha[SHA256_HEX_LEN + 1], *path;

	if (!res->old_boot_len)
		return;
	sha256_hex(res->old_boot, res->old_boot_len, sha);
	path = a->save_old ? xstrdup(a->save_old)
			   : xasprintf("%s-old-bootloader-%.12s.bin", a->board, sha);
	if (write_file_atomic(path, res->old_boot, res->old_boot_len, 0644) < 0)
		fprintf(stderr, "skrflashctl rescue: cannot save the old bootloader to %s\n", path);
	else
		printf("Old bootloader saved: %s (sha256 %s)%s\n", path, sha,
		       res->old_vectors_unreadable ? "; its first 64 bytes read as the boot ROM's"
						   : "");
	free(path);
}

static int
run(const struct args *a, struct rescue_opts *o, const struct image *img)
{
	struct rescue_result res;
	struct gpio *g = NULL;
	int fd, r;

	if (open_lines(a, o->rom, &g) < 0)
		return EXIT_FAIL;
	o->gpio = g;
	o->progress = progress;
	fd = rescue_serial_open(a->device, a->baud, o, res.error, sizeof(res.error));
	if (fd < 0) {
		fprintf(stderr, "skrflashctl rescue: %s\n", res.error);
		gpio_close(g);
		return EXIT_FAIL;
	}
	if (!g || !gpio_wired(g, GPIO_ROLE_RESET)) {
		o->sync_tries = 120; /* 30 s for the user */
		printf(
		    "Now: %s, press and release RESET%s. Waiting 30 s for the ROM to answer...\n",
		    o->rom == RESCUE_ROM_LPCISP ? "hold ISP (P2.10) low" : "set BOOT0 high",
		    o->rom == RESCUE_ROM_LPCISP ? ", then release ISP" : "");
		fflush(stdout);
	}
	r = rescue_install(fd, o, img->data, img->size, &res);
	close(fd);
	save_old(a, &res);
	if (r < 0)
		fprintf(stderr, "skrflashctl rescue: %s\n", res.error);
	else
		printf("Bootloader installed and verified (%llu bytes); %s\n",
		       (unsigned long long)res.bytes_written,
		       g && gpio_wired(g, GPIO_ROLE_RESET)
			   ? "the board was reset into it"
			   : "now remove the boot jumper and press RESET");
	rescue_result_free(&res);
	gpio_close(g);
	return r < 0 ? EXIT_FAIL : EXIT_OK;
}

/* Fill what the command line left open from the config's rescue section. */
static int
apply_config(struct args *a, struct config **ret_cfg)
{
	const char *path = a->config;
	const struct config_rescue *pick = NULL;
	char *errors = NULL;
	int r;

	if (a->board && a->device)
		return 0;
	if (!path && access(SKRFLASH_CONFIG_FILE, R_OK) == 0)
		path = SKRFLASH_CONFIG_FILE;
	if (!path) {
		fprintf(stderr,
			"skrflashctl rescue: give --board and --device, or a rescue section "
			"in " SKRFLASH_CONFIG_FILE "\n");
		return -EINVAL;
	}
	r = config_load(path, NULL, ret_cfg, &errors);
	if (r < 0) {
		fprintf(stderr, "skrflashctl rescue: cannot load %s:\n%s", path,
			errors ? errors : strerror(-r));
		free(errors);
		return r;
	}
	for (size_t i = 0; i < (*ret_cfg)->n_rescues; i++) {
		const struct config_rescue *e = &(*ret_cfg)->rescues[i];

		if ((a->device && strcmp(a->device, e->device) == 0) ||
		    (!a->device && a->board && e->board && strcmp(a->board, e->board->name) == 0) ||
		    (!a->device && !a->board && (*ret_cfg)->n_rescues == 1))
			pick = e;
	}
	if (!pick) {
		fprintf(stderr,
			"skrflashctl rescue: %s has no rescue entry for %s: give --board and "
			"--device\n",
			path,
			a->device  ? a->device
			: a->board ? a->board
				   : "this (several are set)");
		return -ENOENT;
	}
	a->device = pick->device;
	a->board = a->board ? a->board : pick->board ? pick->board->name : NULL;
	a->baud = a->baud_set ? a->baud : pick->baud;
	a->reset_line = a->reset_line ? a->reset_line : pick->reset_line;
	a->boot_line = a->boot_line ? a->boot_line : pick->boot_line;
	if (!a->board) {
		fprintf(stderr, "skrflashctl rescue: which board is on %s? give --board\n",
			a->device);
		return -EINVAL;
	}
	return 0;
}

static int
rescue_board(struct args *a)
{
	const struct catalog_board *b;
	const struct rescue_wiring *w;
	struct rescue_opts o;
	struct image img;
	char err[512];
	uint32_t mask = 0;
	int code;

	if (!(b = catalog_find(a->board))) {
		fprintf(stderr,
			"skrflashctl rescue: unknown board '%s' (see skrflashctl catalog)\n",
			a->board);
		return EXIT_USAGE;
	}
	w = rescue_wiring_find(b->name);
	if (!w || !w->possible) {
		fprintf(stderr, "skrflashctl rescue: %s: %s\n", b->title,
			w ? w->notes : "no UART rescue facts for this board");
		return EXIT_FAIL;
	}
	if (rescue_load_image(a->file, b->mcu, &img, err, sizeof(err)) < 0) {
		fprintf(stderr, "skrflashctl rescue: %s\n", err);
		return EXIT_FAIL;
	}
	o = (struct rescue_opts){.rom = w->rom,
				 .tty = a->device,
				 .mcu = b->mcu,
				 .boot_size = b->app_start - b->mcu->flash_base,
				 .crystal_khz = a->crystal};
	code = EXIT_FAIL;
	if (rescue_check_image(&o, img.data, img.size, err, sizeof(err)) < 0)
		fprintf(stderr, "skrflashctl rescue: %s: %s\n", a->file, err);
	else if (rescue_boot_sectors(&o, &mask) < 0)
		fprintf(stderr,
			"skrflashctl rescue: %s: the bootloader area does not end on a sector "
			"boundary\n",
			b->name);
	else
		code = EXIT_OK;
	if (code == EXIT_OK) {
		printf("Rescue of %s (%s) over %s at %u baud, %s\n", b->name, b->title, a->device,
		       a->baud,
		       w->rom == RESCUE_ROM_LPCISP ? "NXP LPC176x UART ISP, 8N1 + XON/XOFF"
						   : "STM32 USART bootloader (AN3155), 8E1");
		printf("Bootloader: %s, %zu bytes, fits the %u-byte bootloader area\n", a->file,
		       img.size, o.boot_size);
		print_wiring(w, a, w->rom);
		print_plan(b, &o, a, img.size, mask);
		if (!a->dry_run)
			code = run(a, &o, &img);
	}
	image_done(&img);
	return code;
}

int
rescue_command(int argc, char **argv)
{
	struct config *cfg = NULL;
	struct args a;
	int code;

	if (parse(argc, argv, &a) < 0) {
		usage();
		return EXIT_USAGE;
	}
	if (apply_config(&a, &cfg) < 0) {
		config_free(cfg);
		return EXIT_USAGE;
	}
	code = rescue_board(&a);
	config_free(cfg);
	return code;
}