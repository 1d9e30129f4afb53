/* SPDX-License-Identifier: GPL-2.0-or-later */
/* test_engine_marlin: the unmodified daemon (as its own user under tests/integration/as-user
 * when run as root) flashes simulated SKR 1.3 boards that run Marlin (issue 16) over the
 * USB drive of their SD card, method "msc": M27 and M22 on the tty, firmware.bin written
 * with proto/fat on the raw block device, M997, the stock SD bootloader (sdboot.c) takes
 * it, and the daemon checks FIRMWARE.CUR and M115 once Marlin is back. The card stays
 * clean for fsck.fat and readable by mtools. A Klipper build for a Marlin board is refused
 * until the profile allows the migration, then done with the board's identity kept. Each
 * failure ends with a message that says what happened, and loses nothing: an SD print, an
 * M22 that does not release the card, a bootloader that cannot rename firmware.bin, one that
 * does not read the card (the old firmware comes back), a host holding the port. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "flash.h"
#include "harness.h"
#include "test_engine_lib.h"
#include "util.h"

#define PROFILE(n, port, extra)                                                                    \
	"  { name = \"" n "\"; match = { board = \"skr-1.3\"; port = \"" port "\"; };\n"           \
	"    methods = [ \"msc\" ]; auto_flash = [ \"queue\" ];" extra " }"

#define OTHERS                                                                                     \
	PROFILE("ender", "12-1", "")                                                               \
	",\n" PROFILE("printing", "12-3", "") ",\n" PROFILE(                                       \
	    "keeps-card", "12-4",                                                                  \
	    "") ",\n" PROFILE("norename", "12-5",                                                  \
			      "") ",\n" PROFILE("oldfw", "12-6", "") ",\n" PROFILE("held", "12-7", \
										   "") ",\n"

static const char profiles_base[] = OTHERS PROFILE("convert", "12-2", "");
static const char profiles_allowing[] =
    OTHERS PROFILE("convert", "12-2", " allow_migration = true;");

static char *fmt(const char *f, ...) __attribute__((format(printf, 1, 2)));

static char *
fmt(const char *f, ...)
{
	va_list ap;
	char *s;

	va_start(ap, f);
	if (vasprintf(&s, f, ap) < 0)
		abort();
	va_end(ap);
	return s;
}

/* A Marlin board on `port` with a 64 MiB FAT32 card, running `version`. */
static struct sim_board *
marlin_board(const char *port, const char *version)
{
	struct sim_board_spec spec = {
	    .model = "skr-1.3", .port = port, .mode = SIM_MODE_OFF, .app_version = version};
	struct sim_board *b = sim_board_add(eng_sim(), &spec);
	size_t len;
	uint8_t *img;

	if (!b)
		return NULL;
	CHECK_EQ_INT(sim_board_new_sdcard(b, 64ull << 20, "fat32"), 0);
	img = sim_image_marlin(sim_board_model(b)->mcu, 0x4000, version, "Ender-3 SKR13", 64 * 1024,
			       &len);
	CHECK_EQ_INT(flash_load(sim_board_flash(b), 0x4000, img, len), 0);
	free(img);
	CHECK_EQ_INT(sim_board_power_on(b), 0);
	CHECK_EQ_INT(sim_board_wait_mode(b, SIM_MODE_MARLIN_LPC, 5000), 0);
	return b;
}

static char *
marlin_bin(struct sim_board *b, const char *version, uint8_t **ret_img, size_t *ret_len,
	   char sha[65])
{
	char *path = fmt("%s/marlin-%s-%s.bin", eng_dir(), version, sim_board_port(b));

	*ret_img = sim_image_marlin(sim_board_model(b)->mcu, 0x4000, version, "Ender-3 SKR13",
				    180 * 1024, ret_len);
	if (write_file_atomic(path, *ret_img, *ret_len, 0644) < 0)
		exit(1);
	sha256_hex(*ret_img, *ret_len, sha);
	return path;
}

/* The card's FAT volume for mtools: whole card or the first partition (mkfs via sdboot.c). */
static char *
mtools_at(struct sim_board *b)
{
	const char *img = sim_board_sdcard_path(b);
	char *out = NULL, *at = fmt("%s", img);

	if (sim_run_args(eng_sim(), 20000, &out, "mdir", "-i", at, "::/", NULL) != 0) {
		free(at);
		at = fmt("%s@@%u", img, 2048u * 512u);
	}
	free(out);
	return at;
}

/* fsck.fat -n on the card (the partition copied out when there is an MBR): 0 = clean. */
static int
fsck_card(struct sim_board *b)
{
	char *at = mtools_at(b), *sep = strstr(at, "@@"), *part, *out = NULL;
	int r;

	if (!sep) {
		r = sim_run_args(eng_sim(), 20000, &out, "/sbin/fsck.fat", "-n", at, NULL);
	} else {
		uint8_t *buf = NULL;
		size_t len = 0;

		/* copied out here, not by dd (which make asan's preload would carry ASan into) */
		*sep = 0;
		part = fmt("%s/fsck.img", eng_dir());
		CHECK_EQ_INT(read_file(at, 128u << 20, &buf, &len), 0);
		CHECK(len > 2048u * 512u);
		if (len > 2048u * 512u)
			CHECK_EQ_INT(
			    write_file_atomic(part, buf + 2048u * 512u, len - 2048u * 512u, 0644),
			    0);
		free(buf);
		r = sim_run_args(eng_sim(), 20000, &out, "/sbin/fsck.fat", "-n", part, NULL);
		unlink(part);
		free(part);
	}
	if (r != 0)
		fprintf(stderr, "fsck.fat:\n%s\n", out ? out : "");
	free(out);
	free(at);
	return r;
}

/* The file NAME on the card equals IMG (mtools reads it back); -ENOENT when absent. */
static int
card_file_is(struct sim_board *b, const char *name, const uint8_t *img, size_t len)
{
	char *at = mtools_at(b), *src = fmt("::/%s", name), *dst = fmt("%s/back.bin", eng_dir());
	char *out = NULL;
	uint8_t *got = NULL;
	size_t glen = 0;
	int r;

	unlink(dst);
	r = sim_run_args(eng_sim(), 20000, &out, "mcopy", "-n", "-i", at, src, dst, NULL);
	free(out);
	if (r != 0)
		r = -ENOENT;
	else if (read_file(dst, 1u << 22, &got, &glen) < 0 || glen != len ||
		 memcmp(got, img, len) != 0)
		r = -EIO;
	free(got);
	free(at);
	free(src);
	free(dst);
	return r;
}

static void
check_history(const char *port, const char *sha, const char *result)
{
	json_object *hist = eng_history(), *row = eng_newest_on(hist, port);

	CHECK(row != NULL);
	CHECK_STREQ(eng_str(row, "result"), result);
	CHECK_STREQ(eng_str(row, "method"), "msc");
	CHECK_STREQ(eng_str(row, "sha256"), sha);
	json_object_put(hist);
}

/* Marlin 2.1.2 -> 2.1.2.1 over the card's drive */
static void
test_update(void)
{
	struct sim_board *b = marlin_board("12-1", "2.1.2");
	uint8_t *img;
	size_t len;
	char sha[65], buf[128], *path, *out = NULL, *needle;

	CHECK(b != NULL);
	if (!b)
		return;
	CHECK_EQ_INT(eng_wait("board appeared: skr-1.3 in marlin-lpc mode on port 12-1", 10000), 0);
	/* identified by a worker's M115, shown in `boards` */
	CHECK_EQ_INT(eng_wait("board skr-1.3 on port 12-1 runs Marlin 2.1.2 (machine "
			      "\"Ender-3 SKR13\")",
			      10000),
		     0);
	CHECK_STREQ(eng_board_field("12-1", "firmware", buf, sizeof(buf)), "Marlin 2.1.2");
	CHECK_STREQ(eng_board_field("12-1", "machine", buf, sizeof(buf)), "Ender-3 SKR13");
	path = marlin_bin(b, "2.1.2.1", &img, &len, sha);
	needle = fmt("flashed skr-1.3 on port 12-1 with %.12s", sha);
	CHECK_EQ_INT(eng_ctl(&out, "queue", "ender", path, NULL), 0);
	free(out);
	CHECK_EQ_INT(eng_wait(needle, 30000), 0);
	/* the bytes in flash, the card as the bootloader left it, the build Marlin reports */
	CHECK(flash_equals(sim_board_flash(b), 0x4000, img, len));
	CHECK_EQ_INT(card_file_is(b, "FIRMWARE.CUR", img, len), 0);
	CHECK_EQ_INT(card_file_is(b, "firmware.bin", img, len), -ENOENT);
	CHECK_EQ_INT(fsck_card(b), 0);
	CHECK_EQ_INT(sim_board_mode(b), SIM_MODE_MARLIN_LPC);
	CHECK(sim_board_marlin_card_held(b)); /* given back to Marlin (M21) */
	check_history("12-1", sha, "succeeded");
	CHECK_STREQ(eng_board_field("12-1", "installed_sha256", buf, sizeof(buf)), sha);
	CHECK_STREQ(eng_board_field("12-1", "firmware", buf, sizeof(buf)), "Marlin 2.1.2.1");
	free(needle);
	free(path);
	free(img);
}

/* Marlin -> Klipper: refused until the profile allows it, then done; the identity stays */
static void
test_migration(void)
{
	struct sim_board *b = marlin_board("12-2", "2.1.2");
	uint8_t *img, *before;
	size_t len;
	char sha[65], id[32], id2[32], *path, *out = NULL, *needle;

	CHECK(b != NULL);
	if (!b)
		return;
	CHECK_EQ_INT(eng_wait("board appeared: skr-1.3 in marlin-lpc mode on port 12-2", 10000), 0);
	(void)eng_board_field("12-2", "id", id, sizeof(id));
	CHECK(id[0] != 0);
	before = eng_flash_copy(b, 0x4000, 0x4000 + 64 * 1024);
	path = eng_image(b, 0, "klipper-convert", 48 * 1024, &img, &len, sha);
	CHECK_EQ_INT(eng_ctl(&out, "queue", "convert", path, NULL), 0);
	free(out);
	CHECK_EQ_INT(eng_wait("refusing to flash skr-1.3 on port 12-2: it runs Marlin and "
			      "klipper-convert.bin is a Klipper build",
			      10000),
		     0);
	CHECK(eng_ctl(&out, "flash", "12-2", NULL) != 0);
	CHECK(out && strstr(out, "allow_migration = true; in profile 'convert'"));
	free(out);
	{
		uint8_t *after = eng_flash_copy(b, 0x4000, 0x4000 + 64 * 1024);

		CHECK(memcmp(before, after, 64 * 1024) == 0);
		free(after);
	}
	CHECK_EQ_INT(sim_board_mode(b), SIM_MODE_MARLIN_LPC);

	/* the profile allows it: reload, queue again */
	eng_write_conf("", profiles_allowing);
	CHECK_EQ_INT(sim_proc_kill(eng_daemon(), SIGHUP), 0);
	CHECK_EQ_INT(eng_wait("configuration reloaded from", 10000), 0);
	needle = fmt("flashed skr-1.3 on port 12-2 with %.12s", sha);
	CHECK_EQ_INT(eng_ctl(&out, "flash", "12-2", NULL), 0);
	free(out);
	CHECK_EQ_INT(eng_wait(needle, 30000), 0);
	CHECK(flash_equals(sim_board_flash(b), 0x4000, img, len));
	CHECK_EQ_INT(sim_board_wait_mode(b, SIM_MODE_KLIPPER_APP, 5000), 0);
	CHECK_STREQ(sim_board_app_version(b), "klipper-convert");
	CHECK_EQ_INT(eng_wait_board_mode("12-2", "klipper-app", 5000), 0);
	(void)eng_board_field("12-2", "id", id2, sizeof(id2));
	CHECK_STREQ(id2, id);
	CHECK_STREQ(eng_board_field("12-2", "firmware", id2, sizeof(id2)), "");
	CHECK_EQ_INT(fsck_card(b), 0);
	check_history("12-2", sha, "succeeded");
	free(needle);
	free(before);
	free(path);
	free(img);
}

/* A failure on a Marlin board: the job ends with `expect`, the board still runs Marlin, and
 * the stored firmware stays for a retry. */
static void
expect_failure(struct sim_board *b, const char *profile, const char *version, const char *expect,
	       bool card_untouched)
{
	uint8_t *img, *before = eng_flash_copy(b, 0x4000, 0x4000 + 64 * 1024);
	size_t len;
	char sha[65], *path, *out = NULL, *line;
	const char *port = sim_board_port(b);
	char *appeared = fmt("board appeared: skr-1.3 in marlin-lpc mode on port %s", port);
	char *store;

	CHECK_EQ_INT(eng_wait(appeared, 10000), 0);
	path = marlin_bin(b, version, &img, &len, sha);
	(void)eng_ctl(&out, "queue", "--no-wait", profile, path, NULL);
	free(out);
	CHECK_EQ_INT(eng_wait(expect, 40000), 0);
	line = eng_line(expect);
	fprintf(stderr, "%s: %s\n", port, line ? line : "(none)");
	free(line);
	CHECK_EQ_INT(sim_proc_wait_notify(eng_daemon(), "0 jobs running", 20000), 0);
	CHECK_EQ_INT(sim_board_wait_mode(b, SIM_MODE_MARLIN_LPC, 5000), 0);
	{
		json_object *hist = eng_history(), *row = eng_newest_on(hist, port);

		CHECK(row != NULL);
		CHECK_STREQ(eng_str(row, "result"), "failed");
		CHECK_STREQ(eng_str(row, "sha256"), sha);
		json_object_put(hist);
	}
	/* nothing lost: the image stays stored for the next try */
	store = fmt("%s/state/firmware/%s", eng_dir(), sha);
	CHECK(access(store, R_OK) == 0);
	free(store);
	if (card_untouched) {
		uint8_t *after = eng_flash_copy(b, 0x4000, 0x4000 + 64 * 1024);

		CHECK(memcmp(before, after, 64 * 1024) == 0);
		CHECK_EQ_INT(card_file_is(b, "firmware.bin", img, len), -ENOENT);
		free(after);
	}
	CHECK_EQ_INT(fsck_card(b), 0);
	free(appeared);
	free(before);
	free(path);
	free(img);
}

/* A host program (OctoPrint on a real Pi) holds Marlin's tty, as test_engine_safety's
 * stand-in holds Klipper's: an O_PATH node with the device number the daemon sees for the
 * tty, and pyserial's exclusive flock on the pty behind it, as another user (OctoPrint's).
 * Returns its pid (stdin: in). */
static pid_t
hold_tty(struct sim_board *b, int *in, char **ret_node)
{
	char *node = eng_tty_node(b, "octoprint-tty");

	*ret_node = node;
	if (!node)
		return -errno;
	return eng_hold_tty(b, node, "klipper", true, in);
}

static void
test_failures(void)
{
	struct sim_board *printing = marlin_board("12-3", "2.1.2");
	struct sim_board *keeps = marlin_board("12-4", "2.1.2");
	struct sim_board *norename = marlin_board("12-5", "2.1.2");
	struct sim_board *oldfw = marlin_board("12-6", "2.1.2");
	struct sim_board *held = marlin_board("12-7", "2.1.2");
	struct sim_fault rename = {.kind = SIM_FAULT_SD_RENAME_FAIL};
	struct sim_fault noinit = {.kind = SIM_FAULT_SD_NO_INIT};
	char *node = NULL;
	pid_t holder;
	int in = -1;

	CHECK(printing && keeps && norename && oldfw && held);
	if (!printing || !keeps || !norename || !oldfw || !held)
		return;
	CHECK_EQ_INT(sim_board_set_marlin(printing, SIM_MARLIN_PRINTING), 0);
	expect_failure(printing, "printing", "2.1.3",
		       "on port 12-3 is printing from its SD card (byte 123456 of 4567890)", true);
	CHECK(sim_board_marlin_card_held(printing));

	CHECK_EQ_INT(sim_board_set_marlin(keeps, SIM_MARLIN_M22_IGNORED), 0);
	expect_failure(keeps, "keeps-card", "2.1.3", "on port 12-4 kept its SD card after M22",
		       true);

	/* the loader programs firmware.bin but cannot rename it: the new build runs, the card
	 * says what happened (it would be flashed again on every reset) */
	CHECK_EQ_INT(sim_board_set_fault(norename, &rename), 0);
	expect_failure(norename, "norename", "2.1.3",
		       "firmware.bin is still on the card: the bootloader did not take it, or "
		       "could not rename it",
		       false);

	/* the loader does not read the card: the old firmware comes back */
	CHECK_EQ_INT(sim_board_set_fault(oldfw, &noinit), 0);
	expect_failure(oldfw, "oldfw", "2.1.3",
		       "reports Marlin 2.1.2 (built Dec  5 2026 06:00:00), the image is Marlin "
		       "2.1.3",
		       false);

	/* a host holds the tty (OctoPrint would): refused before any G-code */
	holder = hold_tty(held, &in, &node);
	CHECK(holder > 0);
	expect_failure(held, "held", "2.1.3", "<3>skr-1.3 on port 12-7: ", true);
	CHECK(eng_count("kept its SD card after M22") == 1);
	if (holder > 0) {
		close(in);
		(void)waitpid(holder, NULL, 0);
	}
	if (node)
		(void)unlink(node);
	free(node);
}

int
main(int argc, char **argv)
{
	eng_init(argc, argv, "marlin");
	/* under make asan the preload chain carries ASan into mtools and fsck.fat too: their
	 * own leaks at exit are not what this test checks */
	if (getenv("SKRSIM_ASAN_OPTIONS")) {
		const char *o = getenv("SKRSIM_ASAN_OPTIONS");
		char *opts = fmt("%s%sdetect_leaks=0", o, *o ? ":" : "");

		(void)setenv("SKRSIM_ASAN_OPTIONS", opts, 1);
		free(opts);
	}
	eng_write_conf("", profiles_base);
	CHECK_EQ_INT(eng_start(NULL), 0);
	test_update();
	test_migration();
	test_failures();
	CHECK_EQ_INT(eng_stop(), 0);
	eng_done();
	TEST_DONE();
}
