/* SPDX-License-Identifier: GPL-2.0-or-later */
/* test_engine_rescue: the UART rescue as a daemon job, end to end on a simulated SKR 1.4 Turbo
 * whose LPC1769 ROM answers on a UART (a pty) over the same flash as its USB side. Without
 * GPIO lines the daemon guides the user; the test is the user's hands (ISP + RESET).
 *
 * - the ROM never answers (not put into ISP): a clear message, nothing written, the board
 *   still up on USB and the job in the history as failed;
 * - the rescue: Katapult in sectors 0-3, the application kept byte for byte, the old stock
 *   bootloader in the store (content-addressed) and in the history row, the board back on
 *   USB as Katapult's application; a new Klipper then goes over USB through Katapult;
 * - restore: the stock bootloader back over the same UART, the new application kept;
 * - a write error: a clear message, the old bootloader kept anyway, the application kept,
 *   and the board (in ISP by itself now) rescued by simply running the rescue again. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "flash.h"
#include "harness.h"
#include "lpcisp_sim.h"
#include "test_engine_lib.h"
#include "util.h"

#define PORT "10-1"
#define BOOT 0x4000u
#define KAT_LEN (14u * 1024u)

static char *uart;	/* the symlink the config names */
static char *uart_port; /* "uart:" + it: the history's port of rescue jobs */

static const char profiles[] = "  { name = \"turbo\"; match = { board = \"skr-1.4-turbo\"; port = "
			       "\"" PORT "\"; };\n    auto_flash = [\"queue\"]; }";

static json_object *
newest_row(const char *port)
{
	json_object *hist = eng_history(), *row = eng_newest_on(hist, port);

	row = row ? json_object_get(row) : NULL;
	json_object_put(hist);
	return row;
}

/* skrflashctl ARGS... running; the user acts while it waits. */
static struct sim_proc *
ctl_spawn(char *a1, char *a2)
{
	char *ctl = xasprintf("%s/skrflashctl", eng_build());
	char *sock = xasprintf("%s/run/control.sock", eng_dir());
	char *conf = xasprintf("%s/skrflash.conf", eng_dir());
	char *argv[] = {ctl, (char[]){"--socket"}, sock, (char[]){"--config"}, conf, a1, a2, NULL};
	struct sim_proc *p = sim_proc_spawn(eng_sim(), argv, NULL);

	free(ctl);
	free(sock);
	free(conf);
	return p;
}

/* The ROM stays silent (nobody set ISP): the job fails with what to check; nothing written. */
static void
test_no_answer(struct sim_board *b, const uint8_t *stock, const char *kat_path)
{
	char *out = NULL;
	json_object *row;

	CHECK_EQ_INT(eng_ctl(&out, "rescue", kat_path, NULL), 1);
	CHECK(out && strstr(out, "no answer from the LPC176x ROM after 8 tries: hold ISP (P2.10) "
				 "low, press and release RESET"));
	free(out);
	CHECK(flash_equals(sim_board_flash(b), 0, stock, BOOT));
	CHECK_EQ_INT(sim_board_mode(b), SIM_MODE_KLIPPER_APP);
	row = newest_row(uart_port);
	CHECK(row != NULL);
	CHECK_STREQ(eng_str(row, "method"), "rescue-lpc");
	CHECK_STREQ(eng_str(row, "result"), "failed");
	json_object_put(row);
}

/* One guided run: wait for the daemon to ask, then ISP + RESET; after the write, RESET. */
static int
guided(struct sim_board *b, struct sim_proc *cli, size_t nth)
{
	int code;

	CHECK_EQ_INT(eng_wait_count("now, on skr-1.4-turbo: hold ISP (P2.10) low", nth, 20000), 0);
	CHECK_EQ_INT(sim_board_uart_enter_rom(b), 0);
	CHECK_EQ_INT(sim_board_wait_mode(b, SIM_MODE_OFF, 5000), 0);
	CHECK_EQ_INT(
	    eng_wait_count("installed and verified: now press and release RESET", nth - 1, 60000),
	    0);
	CHECK_EQ_INT(sim_board_uart_reset(b), 0);
	code = sim_proc_wait_exit(cli, 30000);
	fprintf(stderr, "skrflashctl: %s\n", sim_proc_output(cli));
	return code;
}

static void
test_rescue(struct sim_board *b, const uint8_t *stock, const uint8_t *kat, char *kat_path)
{
	struct flash *f = sim_board_flash(b);
	uint8_t *app = eng_flash_copy(b, BOOT, f->size);
	char kat_sha[65], stock_sha[65], *path;
	struct sim_proc *cli = ctl_spawn((char[]){"rescue"}, kat_path);
	uint8_t *kept = NULL;
	size_t kept_len = 0;
	json_object *row;

	CHECK_EQ_INT(guided(b, cli, 2), 0);
	CHECK(strstr(sim_proc_output(cli), "is back on USB port " PORT " as klipper-app"));
	sim_proc_free(cli);
	/* Katapult in sectors 0-3 (padded with 0xFF), the application untouched */
	CHECK(flash_equals(f, 0, kat, KAT_LEN));
	CHECK(flash_is_erased(f, KAT_LEN, BOOT - KAT_LEN));
	CHECK(flash_equals(f, BOOT, app, f->size - BOOT));
	CHECK_EQ_INT(flash_erase_count(f, BOOT), 0);
	CHECK_EQ_INT(sim_board_wait_mode(b, SIM_MODE_KLIPPER_APP, 5000), 0);
	/* history: old -> new bootloader, the old one kept content-addressed */
	sha256_hex(kat, KAT_LEN, kat_sha);
	sha256_hex(stock, BOOT, stock_sha);
	row = newest_row(uart_port);
	CHECK(row != NULL);
	CHECK_STREQ(eng_str(row, "method"), "rescue-lpc");
	CHECK_STREQ(eng_str(row, "result"), "succeeded");
	CHECK_STREQ(eng_str(row, "sha256"), kat_sha);
	CHECK_STREQ(eng_str(row, "old_sha256"), stock_sha);
	CHECK_STREQ(eng_str(row, "board"), "skr-1.4-turbo");
	json_object_put(row);
	path = xasprintf("%s/state/firmware/%s", eng_dir(), stock_sha);
	CHECK_EQ_INT(read_file(path, 1u << 20, &kept, &kept_len), 0);
	CHECK(kept_len == BOOT && kept && memcmp(kept, stock, BOOT) == 0);
	free(kept);
	free(path);
	CHECK(eng_wait("rescuing skr-1.4-turbo over", 1000) == 0);
	free(app);
}

/* From now on an ordinary board: a new Klipper over USB, through Katapult. */
static void
test_klipper_over_usb(struct sim_board *b)
{
	uint8_t *img;
	size_t len;
	char sha[65], *out = NULL, *needle;
	char *path = eng_image(b, BOOT, "v0.13.0-rescued", 20 * 1024, &img, &len, sha);
	json_object *row;

	CHECK_EQ_INT(eng_ctl(&out, "queue", "turbo", path, NULL), 0);
	free(out);
	needle = xasprintf("flashed skr-1.4-turbo on port " PORT " with %.12s", sha);
	CHECK_EQ_INT(eng_wait(needle, 30000), 0);
	free(needle);
	CHECK(flash_equals(sim_board_flash(b), BOOT, img, len));
	row = newest_row(PORT);
	CHECK(row != NULL);
	CHECK_STREQ(eng_str(row, "method"), "katapult");
	CHECK_STREQ(eng_str(row, "result"), "succeeded");
	json_object_put(row);
	CHECK_EQ_INT(sim_proc_wait_notify(eng_daemon(), "0 jobs running", 10000), 0);
	free(path);
	free(img);
}

static void
test_restore(struct sim_board *b, const uint8_t *stock)
{
	struct flash *f = sim_board_flash(b);
	uint8_t *app = eng_flash_copy(b, BOOT, f->size);
	struct sim_proc *cli = ctl_spawn((char[]){"restore"}, (char[]){"skr-1.4-turbo"});
	char stock_sha[65];
	json_object *row;

	CHECK_EQ_INT(guided(b, cli, 3), 0);
	sim_proc_free(cli);
	CHECK(flash_equals(f, 0, stock, BOOT));
	CHECK(flash_equals(f, BOOT, app, f->size - BOOT));
	CHECK_EQ_INT(sim_board_wait_mode(b, SIM_MODE_KLIPPER_APP, 5000), 0);
	sha256_hex(stock, BOOT, stock_sha);
	row = newest_row(uart_port);
	CHECK(row != NULL);
	CHECK_STREQ(eng_str(row, "method"), "restore-lpc");
	CHECK_STREQ(eng_str(row, "result"), "succeeded");
	CHECK_STREQ(eng_str(row, "sha256"), stock_sha);
	json_object_put(row);
	free(app);
}

/* A write error: the job fails with what happened and what to do, the stock bootloader it
 * read is kept all the same, the application is untouched, and sector 0 stays erased so the
 * ROM comes up in ISP by itself: the rescue is simply run again, and then works. */
static void
test_write_error_then_again(struct sim_board *b, const uint8_t *kat, char *kat_path)
{
	struct flash *f = sim_board_flash(b);
	uint8_t *app = eng_flash_copy(b, BOOT, f->size), *boot = eng_flash_copy(b, 0, BOOT);
	char boot_sha[65];
	struct sim_proc *cli;
	json_object *row;

	sha256_hex(boot, BOOT, boot_sha);
	CHECK_EQ_INT(sim_board_uart_faults(b, LPC_SIM_WRITE_ERROR), 0);
	cli = ctl_spawn((char[]){"rescue"}, kat_path);
	CHECK_EQ_INT(eng_wait_count("now, on skr-1.4-turbo: hold ISP (P2.10) low", 4, 20000), 0);
	CHECK_EQ_INT(sim_board_uart_enter_rom(b), 0);
	CHECK_EQ_INT(sim_proc_wait_exit(cli, 60000), 1);
	CHECK(strstr(sim_proc_output(cli), "verify failed at 0x02000") &&
	      strstr(sim_proc_output(cli), "the rescue can be run again"));
	sim_proc_free(cli);
	CHECK(flash_is_erased(f, 0, 4096));
	CHECK(flash_equals(f, BOOT, app, f->size - BOOT));
	row = newest_row(uart_port);
	CHECK(row != NULL);
	CHECK_STREQ(eng_str(row, "result"), "failed");
	CHECK_STREQ(eng_str(row, "old_sha256"), boot_sha); /* kept although the write failed */
	json_object_put(row);
	/* RESET: no valid user code, so the ROM stays in ISP and the board off USB */
	CHECK_EQ_INT(sim_board_uart_reset(b), 0);
	CHECK_EQ_INT(sim_board_uart_state(b), LPC_SIM_WAIT_SYNC);
	CHECK_EQ_INT(sim_board_mode(b), SIM_MODE_OFF);

	CHECK_EQ_INT(sim_board_uart_faults(b, 0), 0);
	cli = ctl_spawn((char[]){"rescue"}, kat_path);
	CHECK_EQ_INT(
	    eng_wait_count("installed and verified: now press and release RESET", 3, 60000), 0);
	CHECK_EQ_INT(sim_proc_wait_exit(cli, 30000), 0);
	CHECK(strstr(sim_proc_output(cli), "was not on USB before"));
	sim_proc_free(cli);
	CHECK(flash_equals(f, 0, kat, KAT_LEN));
	CHECK(flash_equals(f, BOOT, app, f->size - BOOT));
	CHECK_EQ_INT(sim_board_uart_reset(b), 0);
	CHECK_EQ_INT(sim_board_wait_mode(b, SIM_MODE_KLIPPER_APP, 5000), 0);
	CHECK_EQ_INT(eng_wait_board_mode(PORT, "klipper-app", 10000), 0);
	free(app);
	free(boot);
}

int
main(int argc, char **argv)
{
	struct sim_board_spec spec = {.model = "skr-1.4-turbo",
				      .port = PORT,
				      .mode = SIM_MODE_KLIPPER_APP,
				      .bootloader = SIM_BL_STOCK,
				      .uart = true};
	char *env[] = {(char[]){"SKRFLASHD_RESCUE_SYNC_TRIES=8"}, NULL};
	struct sim_board *b;
	uint8_t *stock, *kat;
	char *conf, *kat_path;

	eng_init(argc, argv, "rescue");
	b = sim_board_add(eng_sim(), &spec);
	if (!b || !sim_board_uart(b)) {
		fprintf(stderr, "cannot add the board with its UART\n");
		return 1;
	}
	/* the daemon runs as its own user in production mode: let it open the pty */
	(void)chmod(sim_board_uart(b), 0666);
	uart = xasprintf("%s/uart-" PORT, eng_dir());
	uart_port = xasprintf("uart:%s", uart);
	CHECK_EQ_INT(symlink(sim_board_uart(b), uart), 0);
	stock = eng_flash_copy(b, 0, BOOT);
	kat = sim_image_bootloader(sim_board_model(b)->mcu, true, BOOT, KAT_LEN);
	kat_path = xasprintf("%s/katapult.bin", eng_dir());
	CHECK_EQ_INT(write_file_atomic(kat_path, kat, KAT_LEN, 0644), 0);
	conf = xasprintf("rescue = ( { device = \"%s\"; baud = 115200; board = \"skr-1.4-turbo\"; "
			 "} );",
			 uart);
	eng_write_conf(conf, profiles);
	CHECK_EQ_INT(eng_start(env), 0);
	CHECK_EQ_INT(
	    eng_wait("board appeared: skr-1.4-turbo in klipper-app mode on port " PORT, 10000), 0);
	test_no_answer(b, stock, kat_path);
	test_rescue(b, stock, kat, kat_path);
	test_klipper_over_usb(b);
	test_restore(b, stock);
	test_write_error_then_again(b, kat, kat_path);
	CHECK_EQ_INT(eng_stop(), 0);
	eng_done();
	free(conf);
	free(kat_path);
	free(kat);
	free(stock);
	free(uart);
	free(uart_port);
	TEST_DONE();
}
