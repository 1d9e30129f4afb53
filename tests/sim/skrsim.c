/* SPDX-License-Identifier: GPL-2.0-or-later */
/* skrsim: start simulated boards in a umockdev testbed and run a command inside it.
 *
 *   skrsim [--board MODEL@PORT[:STATE][,KEY=VALUE...]]... [--scenario FILE] [-- CMD ARGS...]
 *
 * The demo and the benchmarks use it to run the real daemon against a farm of boards. */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "flash.h"
#include "sim.h"
#include "sim_power.h"
#include "util.h"

#define MAX_SPECS 64

struct board_arg {
	struct sim_board_spec spec;
	char *text;	     /* owns the strings spec points into */
	uint64_t sd_bytes;   /* sdcard=SIZE: a card made by mkfs in the slot; 0 = none */
	const char *sd_fs;   /* sdfs=fat12|fat16|fat32|exfat|none; NULL = mkfs.fat's choice */
	const char *uart;    /* uart=PATH: a link to the ROM's UART, and PATH.pins */
	struct sim_board *b; /* once added */
};

static void
usage(FILE *f)
{
	fprintf(
	    f, "usage: skrsim [--board MODEL@PORT[:STATE][,KEY=VALUE...]]... [--scenario FILE]\n"
	       "              [--speed X] [--quiet] [-- CMD [ARGS...]]\n"
	       "STATE: klipper-app (default), katapult-installed (Katapult bootloader, app up),\n"
	       "       katapult, stm32-rom-dfu, lpc-dfu, bootsel, marlin-lpc, marlin-stm32, off\n"
	       "KEY:   version=V  uid=HEX  speed=X  bootloader=stock|katapult|none  empty\n"
	       "       bootloop=flicker|silent|recover  cycles=N\n"
	       "       crash=TEXT  (an app whose version contains TEXT crashes at start-up)\n"
	       "       sd-only  (LPC176x: BTT's stock SD-only bootloader, no LPC DFU)\n"
	       "       sdcard=SIZE[K|M|G]  (a FAT card made by mkfs.fat in the SD slot; with a\n"
	       "       stock bootloader it flashes firmware.bin from it on reset)\n"
	       "       sdfs=fat12|fat16|fat32|exfat|none  (the card's filesystem)\n"
	       "       uart=PATH  (LPC176x: its ROM on a UART linked at PATH; the FIFO PATH.pins\n"
	       "                  takes \"isp\", \"reset\" and \"dump FILE\")\n"
	       "       skrsim bootloader MODEL stock|katapult OUT [APP_START]: a bootloader image\n"
	       "Without CMD, skrsim keeps the boards up until SIGINT/SIGTERM.\n"
	       "CMD switches boards off and on by appending 'PORT off|on|cycle' lines to the\n"
	       "file $SKRSIM_POWER.\n"
	       "A scenario file holds one board description per line ('#' comments).\n");
}

/* "64M", "8G", "1048576": bytes, a whole number of 512 KiB units (what a CSD expresses) */
static int
parse_size(const char *v, uint64_t *ret)
{
	char *end;
	unsigned long long n = strtoull(v, &end, 10);
	unsigned shift = *end == 'K' ? 10 : *end == 'M' ? 20 : *end == 'G' ? 30 : 0;

	if (end == v || (shift && end[1]) || (!shift && *end) || n == 0 || n > (64ull << 30))
		return -EINVAL;
	*ret = ((uint64_t)n << shift) & ~(uint64_t)(512 * 1024 - 1);
	return *ret ? 0 : -EINVAL;
}

static int
parse_board_state(struct sim_board_spec *sp, const char *state)
{
	if (strcmp(state, "katapult-installed") == 0) {
		sp->bootloader = SIM_BL_KATAPULT;
		sp->mode = SIM_MODE_KLIPPER_APP;
	} else if (sim_mode_from_string(state, &sp->mode) < 0) {
		fprintf(stderr, "skrsim: unknown state '%s'\n", state);
		return -EINVAL;
	} else if (sp->mode == SIM_MODE_KATAPULT) {
		sp->bootloader = SIM_BL_KATAPULT;
	}
	return 0;
}

/* one KEY=VALUE of a board argument; false for an unknown one */
static bool
parse_board_option(struct board_arg *ret, const char *kv, const char *v)
{
	struct sim_board_spec *sp = &ret->spec;

	if (strcmp(kv, "version") == 0)
		sp->app_version = v;
	else if (strcmp(kv, "uid") == 0)
		sp->uid = v;
	else if (strcmp(kv, "speed") == 0)
		sp->speed = strtod(v, NULL);
	else if (strcmp(kv, "empty") == 0)
		sp->empty = true;
	else if (strcmp(kv, "crash") == 0)
		sp->crash_version = v;
	else if (strcmp(kv, "sd-only") == 0)
		sp->lpc_sd_only = true;
	else if (strcmp(kv, "sdcard") == 0 && parse_size(v, &ret->sd_bytes) == 0)
		;
	else if (strcmp(kv, "sdfs") == 0)
		ret->sd_fs = v;
	else if (strcmp(kv, "cycles") == 0)
		sp->bootloop_cycles = (unsigned)strtoul(v, NULL, 10);
	else if (strcmp(kv, "bootloop") == 0 && strcmp(v, "silent") == 0)
		sp->bootloop = SIM_BOOTLOOP_SILENT;
	else if (strcmp(kv, "bootloop") == 0 && strcmp(v, "flicker") == 0)
		sp->bootloop = SIM_BOOTLOOP_FLICKER;
	else if (strcmp(kv, "bootloop") == 0 && strcmp(v, "recover") == 0)
		sp->bootloop = SIM_BOOTLOOP_RECOVER;
	else if (strcmp(kv, "bootloader") == 0 && strcmp(v, "stock") == 0)
		sp->bootloader = SIM_BL_STOCK;
	else if (strcmp(kv, "bootloader") == 0 && strcmp(v, "katapult") == 0)
		sp->bootloader = SIM_BL_KATAPULT;
	else if (strcmp(kv, "bootloader") == 0 && strcmp(v, "none") == 0)
		sp->bootloader = SIM_BL_NONE;
	else if (strcmp(kv, "uart") == 0 && *v) {
		sp->uart = true;
		ret->uart = v;
	} else {
		return false;
	}
	return true;
}

static int
parse_board(const char *arg, double speed, struct board_arg *ret)
{
	char *text = xstrdup(arg), *at, *opts, *state, *save = NULL;
	struct sim_board_spec *sp = &ret->spec;

	memset(ret, 0, sizeof(*ret));
	ret->text = text;
	sp->speed = speed;
	sp->mode = SIM_MODE_KLIPPER_APP;
	opts = strchr(text, ',');
	if (opts)
		*opts++ = '\0';
	at = strchr(text, '@');
	if (!at)
		goto bad;
	*at = '\0';
	sp->model = text;
	sp->port = at + 1;
	state = strchr(sp->port, ':');
	/* the port itself never has ':', the state follows the first one */
	if (state) {
		*state++ = '\0';
		if (parse_board_state(sp, state) < 0)
			goto bad;
	}
	for (char *kv = opts ? strtok_r(opts, ",", &save) : NULL; kv;
	     kv = strtok_r(NULL, ",", &save)) {
		char *eq = strchr(kv, '=');

		if (eq)
			*eq = '\0';
		if (!parse_board_option(ret, kv, eq ? eq + 1 : "")) {
			fprintf(stderr, "skrsim: unknown option '%s' in '%s'\n", kv, arg);
			goto bad;
		}
	}
	return 0;
bad:
	fprintf(stderr, "skrsim: bad board '%s' (want MODEL@PORT[:STATE][,KEY=VALUE...])\n", arg);
	free(text);
	ret->text = NULL;
	return -EINVAL;
}

static int
parse_scenario(const char *path, double speed, struct board_arg *args, size_t *n)
{
	FILE *f = fopen(path, "re");
	char line[512];
	int r = 0;

	if (!f) {
		fprintf(stderr, "skrsim: %s: %s\n", path, strerror(errno));
		return -errno;
	}
	while (fgets(line, sizeof(line), f)) {
		char *p = line + strspn(line, " \t");

		p[strcspn(p, "#\r\n")] = '\0';
		for (size_t l = strlen(p); l && (p[l - 1] == ' ' || p[l - 1] == '\t'); l--)
			p[l - 1] = '\0';
		if (strncmp(p, "board ", 6) == 0)
			p += 6 + strspn(p + 6, " \t");
		if (!*p)
			continue;
		if (*n >= MAX_SPECS || parse_board(p, speed, &args[*n]) < 0) {
			r = -EINVAL;
			break;
		}
		(*n)++;
	}
	fclose(f);
	return r;
}

static void
print_boards(struct sim *s, FILE *out)
{
	fprintf(out, "SKRSIM_ROOT=%s\n", sim_root(s));
	for (size_t i = 0; i < sim_board_count(s); i++) {
		struct sim_board *b = sim_board_get(s, i);
		const char *tty = sim_board_tty(b);

		const char *card = sim_board_sdcard_path(b);

		fprintf(out, "board %s %s mode=%s uid=%s serial=%s tty=%s by-id=%s dev=%s%s%s\n",
			sim_board_port(b), sim_board_model(b)->name,
			sim_mode_to_string(sim_board_mode(b)), sim_board_uid(b),
			*sim_board_serial(b) ? sim_board_serial(b) : "-", tty ? tty : "-",
			sim_board_by_id(b) ? sim_board_by_id(b) : "-",
			sim_board_devnode(b) ? sim_board_devnode(b) : "-", card ? " sdcard=" : "",
			card ? card : "");
	}
	fflush(out);
}

/* SIGINT and SIGTERM are blocked in every thread (main blocks them before the simulator
 * starts its threads) and taken with sigtimedwait; `old` is the mask for children. */
static int
run_command(struct sim *s, char **argv, const sigset_t *mask, const sigset_t *old)
{
	char *power_path = xasprintf("%s/power", sim_root(s));
	struct sim_power power = {.path = power_path};
	pid_t pid;
	int st;

	setenv("SKRSIM_ROOT", sim_root(s), 1);
	/* the command switches boards off and on through this file (sim_power.h) */
	setenv("SKRSIM_POWER", power_path, 1);
	fflush(stdout);
	fflush(stderr);
	pid = fork();
	if (pid == 0) {
		const char *asan = getenv("SKRSIM_ASAN_OPTIONS");

		pthread_sigmask(SIG_SETMASK, old, NULL);
		if (asan)
			setenv("ASAN_OPTIONS", asan, 1);
		execvp(argv[0], argv);
		fprintf(stderr, "skrsim: %s: %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	if (pid < 0) {
		free(power_path);
		return 127;
	}
	/* forward SIGINT/SIGTERM to the command and keep the boards up until it exits */
	for (;;) {
		struct timespec ts = {.tv_sec = 0, .tv_nsec = 50000000};
		int sig = sigtimedwait(mask, NULL, &ts);

		if (sig > 0)
			kill(pid, sig);
		(void)sim_power_poll(s, &power);
		if (waitpid(pid, &st, WNOHANG) == pid)
			break;
	}
	free(power_path);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* uart=PATH boards: PATH links to the ROM's UART (a pty the daemon's user may open), and
 * the FIFO PATH.pins takes the operator's hands, one line each: "isp" (hold ISP low, press
 * and release RESET, let ISP go), "reset" (press RESET), "dump FILE" (the whole flash into
 * FILE, for checking bytes). */
static void *
pins_thread(void *userdata)
{
	struct board_arg *a = userdata;
	char *fifo = xasprintf("%s.pins", a->uart), line[4200];
	FILE *f = fopen(fifo, "r+"); /* also a writer: no EOF between the operator's lines */

	free(fifo);
	while (f && fgets(line, sizeof(line), f)) {
		line[strcspn(line, "\r\n")] = '\0';
		if (strcmp(line, "isp") == 0) {
			(void)sim_board_uart_enter_rom(a->b);
		} else if (strcmp(line, "reset") == 0) {
			(void)sim_board_uart_reset(a->b);
		} else if (strncmp(line, "dump ", 5) == 0) {
			struct flash *fl = sim_board_flash(a->b);
			uint8_t *buf = xmalloc(fl->size);

			if (flash_read(fl, fl->base, buf, fl->size) < 0 ||
			    write_file_atomic(line + 5, buf, fl->size, 0644) < 0)
				fprintf(stderr, "skrsim: cannot dump the flash to %s\n", line + 5);
			free(buf);
		}
	}
	if (f)
		fclose(f);
	return NULL;
}

static int
uart_setup(struct board_arg *a)
{
	const char *pty = sim_board_uart(a->b);
	char *fifo = xasprintf("%s.pins", a->uart);
	pthread_t t;
	int r = 0;

	(void)unlink(a->uart);
	(void)unlink(fifo);
	if (!pty || chmod(pty, 0666) < 0 || symlink(pty, a->uart) < 0 || mkfifo(fifo, 0600) < 0 ||
	    pthread_create(&t, NULL, pins_thread, a) != 0) {
		fprintf(stderr, "skrsim: cannot set up the UART of %s at %s\n", a->spec.port,
			a->uart);
		r = -EIO;
	} else {
		(void)pthread_detach(t);
	}
	free(fifo);
	return r;
}

/* skrsim bootloader MODEL stock|katapult OUT [APP_START]: the simulator's bootloader image
 * for a board's bootloader area (Katapult starting the application at APP_START, default
 * the board's), to install over a simulated UART. */
static int
make_bootloader(int argc, char **argv)
{
	const struct catalog_board *b = argc >= 5 ? catalog_find(argv[2]) : NULL;
	bool kat = argc >= 5 && strcmp(argv[3], "katapult") == 0;
	uint32_t start, size;
	uint8_t *img;
	int r;

	if (!b || b->app_start - b->mcu->flash_base < 1024) {
		fprintf(stderr, "usage: skrsim bootloader MODEL stock|katapult OUT [APP_START]\n");
		return 2;
	}
	start = argc > 5 ? (uint32_t)strtoul(argv[5], NULL, 0) : b->app_start;
	size = b->app_start - b->mcu->flash_base;
	/* a Katapult build is smaller than the area: 14 KiB of 16 on LPC176x */
	if (kat)
		size -= size / 8;
	img = sim_image_bootloader(b->mcu, kat, start, size);
	r = write_file_atomic(argv[4], img, size, 0644);
	free(img);
	if (r < 0)
		fprintf(stderr, "skrsim: cannot write %s\n", argv[4]);
	return r < 0 ? 1 : 0;
}

/* img (freed here) into the file path: the exit code */
static int
write_out(const char *path, uint8_t *img, size_t len)
{
	FILE *f = img ? fopen(path, "wb") : NULL;
	int r = 0;

	if (!f || fwrite(img, 1, len, f) != len || fclose(f) != 0) {
		fprintf(stderr, "skrsim: cannot write %s\n", path);
		r = 1;
	}
	free(img);
	return r;
}

/* skrsim image MODEL VERSION OUT [LINK]: a Klipper-like image for a catalog board, linked
 * at LINK (default: the board's app start; for the SKR Pico a "No bootloader" build with
 * boot2), for the demo and benchmarks. */
static int
make_image(int argc, char **argv)
{
	const struct catalog_board *b = argc >= 5 ? catalog_find(argv[2]) : NULL;
	uint32_t link;
	uint8_t *img;
	size_t len = 0;

	if (!b) {
		fprintf(stderr, "usage: skrsim image MODEL VERSION OUT [LINK]\n");
		return 2;
	}
	link = argc > 5 ? (uint32_t)strtoul(argv[5], NULL, 0) : b->app_start;
	/* an RP2040 "No bootloader" build starts with boot2, its app right after it */
	if (b->mcu->family == CATALOG_FAMILY_RP2040 && link == b->mcu->flash_base + 256)
		img = sim_image_rp2040(b->mcu, argv[3], 24 * 1024, true, &len);
	else
		img = sim_image_klipper(b->mcu, link, argv[3], 24 * 1024, &len);
	return write_out(argv[4], img, len);
}

/* skrsim marlin-image MODEL VERSION OUT [MACHINE]: a Marlin build for a catalog board, linked
 * at its stock bootloader's app start (LPC176x: 0x4000), with the M115 literal of VERSION. */
static int
make_marlin_image(int argc, char **argv)
{
	const struct catalog_board *b = argc >= 5 ? catalog_find(argv[2]) : NULL;
	uint8_t *img;
	size_t len = 0;

	if (!b) {
		fprintf(stderr, "usage: skrsim marlin-image MODEL VERSION OUT [MACHINE]\n");
		return 2;
	}
	img = sim_image_marlin(b->mcu, b->app_start, argv[3], argc > 5 ? argv[5] : NULL, 180 * 1024,
			       &len);
	return write_out(argv[4], img, len);
}

/* What the command line asks for. */
struct cmdline {
	struct board_arg args[MAX_SPECS];
	size_t n;
	const char *scenarios[8];
	size_t n_scen;
	double speed;
	bool quiet;
};

/* The options, then the scenario files: 0 to go on, else the exit code + 1 (--help: 1). */
static int
parse_cmdline(int argc, char **argv, struct cmdline *cl)
{
	static const struct option opts[] = {
	    {"board", required_argument, NULL, 'b'}, {"scenario", required_argument, NULL, 's'},
	    {"speed", required_argument, NULL, 'S'}, {"quiet", no_argument, NULL, 'q'},
	    {"help", no_argument, NULL, 'h'},	     {NULL, 0, NULL, 0},
	};
	int c;

	while ((c = getopt_long(argc, argv, "+b:s:S:qh", opts, NULL)) != -1) {
		switch (c) {
		case 'b':
			if (cl->n >= MAX_SPECS ||
			    parse_board(optarg, cl->speed, &cl->args[cl->n]) < 0)
				return 3;
			cl->n++;
			break;
		case 's':
			if (cl->n_scen < ELEMENTSOF(cl->scenarios))
				cl->scenarios[cl->n_scen++] = optarg;
			break;
		case 'S':
			cl->speed = strtod(optarg, NULL);
			for (size_t i = 0; i < cl->n; i++)
				if (cl->args[i].spec.speed == 0.0)
					cl->args[i].spec.speed = cl->speed;
			break;
		case 'q':
			cl->quiet = true;
			break;
		case 'h':
			usage(stdout);
			return 1;
		default:
			usage(stderr);
			return 3;
		}
	}
	for (size_t i = 0; i < cl->n_scen; i++)
		if (parse_scenario(cl->scenarios[i], cl->speed, cl->args, &cl->n) < 0)
			return 3;
	return 0;
}

/* every board with its SD card and UART: 0 or -1 */
static int
add_boards(struct sim *s, struct cmdline *cl)
{
	for (size_t i = 0; i < cl->n; i++) {
		struct board_arg *a = &cl->args[i];

		a->b = sim_board_add(s, &a->spec);
		if (!a->b ||
		    (a->sd_bytes &&
		     sim_board_new_sdcard(a->b, a->sd_bytes, a->sd_fs ? a->sd_fs : "fat") < 0) ||
		    (a->uart && uart_setup(a) < 0))
			return -1;
	}
	return 0;
}

int
main(int argc, char **argv)
{
	struct cmdline cl = {.n = 0};
	struct sim *s;
	sigset_t mask, old;
	int r = 0;

	if (argc > 1 && strcmp(argv[1], "image") == 0)
		return make_image(argc, argv);
	if (argc > 1 && strcmp(argv[1], "bootloader") == 0)
		return make_bootloader(argc, argv);
	if (argc > 1 && strcmp(argv[1], "marlin-image") == 0)
		return make_marlin_image(argc, argv);
	sim_init(argc, argv);
	sigemptyset(&mask);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &mask, &old);
	r = parse_cmdline(argc, argv, &cl);
	if (r > 0)
		return r - 1;
	s = sim_new();
	if (add_boards(s, &cl) < 0) {
		r = 2;
		goto out;
	}
	if (!cl.quiet)
		print_boards(s, stderr);
	if (optind < argc) {
		r = run_command(s, argv + optind, &mask, &old);
	} else {
		int sig;

		printf("SKRSIM_ROOT=%s\n", sim_root(s));
		fflush(stdout);
		(void)sigwait(&mask, &sig);
	}
out:
	sim_free(s);
	for (size_t i = 0; i < cl.n; i++)
		free(cl.args[i].text);
	return r;
}
