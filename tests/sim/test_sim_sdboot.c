/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The stock SD bootloaders of the simulator (sdboot.c): cards made and read by the real
 * tools (mkfs.fat, mkfs.exfat, mtools, fsck.fat), the loader's run on its own (FAT12/16/32,
 * MBR, case-insensitive names, an old FIRMWARE.CUR, the failure modes) and on a board's
 * reset and power cycle (SPI and SDIO loaders, faults). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "catalog.h"
#include "flash.h"
#include "flash/klipper.h"
#include "flash/sdcard.h"
#include "harness.h"
#include "sdboot.h"
#include "sdcard.h"
#include "sim.h"
#include "util.h"

static char tmpdir[] = "/tmp/skrsim-sdboot-XXXXXX";
static struct sim *sim;

static char *
tpath(const char *name)
{
	return xasprintf("%s/%s", tmpdir, name);
}

/* An application image for the board, written to a file; returns the bytes. */
static uint8_t *
app_file(const struct catalog_board *m, const char *version, size_t size, const char *file,
	 size_t *ret_len)
{
	uint8_t *img = sim_image_klipper(m->mcu, m->app_start, version, size, ret_len);
	FILE *f = fopen(file, "wb");

	CHECK(f && fwrite(img, 1, *ret_len, f) == *ret_len);
	if (f)
		fclose(f);
	return img;
}

/* Replaces the first occurrence of 11 bytes in a file (a directory entry's 8.3 name). */
static int
patch_file(const char *file, const char *from, const char *to)
{
	uint8_t *d = NULL, *hit;
	size_t len = 0;
	int r = read_file(file, 64 << 20, &d, &len);

	if (r < 0)
		return r;
	hit = memmem(d, len, from, 11);
	if (hit) {
		memcpy(hit, to, 11);
		r = write_file_atomic(file, d, len, 0644);
	}
	free(d);
	return hit ? r : -ENOENT;
}

struct rig {
	const struct catalog_board *m;
	struct flash *flash;
	struct sim_sdcard *card;
	char *img;
};

static void
rig_open(struct rig *r, const char *model, const char *img)
{
	r->m = catalog_find(model);
	r->flash = flash_new(r->m->mcu, 0.0);
	r->card = sim_sdcard_new(img, false);
	r->img = xstrdup(img);
	CHECK(r->card != NULL);
}

static void
rig_close(struct rig *r)
{
	sim_sdcard_free(r->card);
	flash_free(r->flash);
	free(r->img);
}

static struct sdboot_result
rig_run(struct rig *r, bool rename_fails, uint32_t cut_at)
{
	struct sdboot_env env = {.card = r->card,
				 .flash = r->flash,
				 .app_start = r->m->app_start,
				 .rename_fails = rename_fails,
				 .cut_at = cut_at};
	struct sdboot_result res;

	CHECK_EQ_INT(sdboot_run(&env, &res), 0);
	return res;
}

/* Every FAT type, whole card and MBR: programmed, renamed, the volume stays clean. */
static void
test_types(void)
{
	static const struct {
		const char *mkfs; /* mkfs.fat options and size in KiB */
		unsigned kib;
		bool mbr;
		const char *name; /* as copied by mtools */
	} cases[] = {
	    {"-F 12", 4096, false, "firmware.bin"},
	    {"-F 16", 32768, false, "FIRMWARE.BIN"},
	    {"-F 32 -s 1", 34816, false, "FIRMWARE.BIN"},
	    {"-F 32 -s 1", 65536, true, "firmware.bin"},
	    {"-F 16", 20480, true, "firmware.BIN"},
	};
	char *img = tpath("t.img"), *fw = tpath("fw.bin"), *out = tpath("out.bin");

	for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
		struct rig r;
		size_t len;
		uint8_t *app;
		struct sdboot_result res;
		const char *mt = cases[i].mbr ? "@@1M" : "";

		app = app_file(catalog_find("skr-pro"), "v-types", 20000 + 4096 * i, fw, &len);
		if (cases[i].mbr)
			CHECK_EQ_INT(
			    sim_sh(sim,
				   "rm -f %s && truncate -s %uK %s && echo 'start=2048, type=c' | "
				   "sfdisk -q %s && mkfs.fat %s --offset 2048 %s %u >/dev/null",
				   img, cases[i].kib + 1024, img, img, cases[i].mkfs, img,
				   cases[i].kib),
			    0);
		else
			CHECK_EQ_INT(sim_sh(sim, "rm -f %s && mkfs.fat %s -C %s %u >/dev/null", img,
					    cases[i].mkfs, img, cases[i].kib),
				     0);
		/* an old FIRMWARE.CUR that the loader must replace */
		CHECK_EQ_INT(sim_sh(sim, "mcopy -i %s%s %s ::FIRMWARE.CUR && mcopy -i %s%s %s ::%s",
				    img, mt, fw, img, mt, fw, cases[i].name),
			     0);
		rig_open(&r, "skr-pro", img);
		res = rig_run(&r, false, 0);
		CHECK_EQ_INT(res.outcome, SDBOOT_FLASHED);
		CHECK(res.renamed);
		CHECK_EQ_INT(res.len, len);
		CHECK(flash_equals(r.flash, r.m->app_start, app, len));
		CHECK(flash_app_valid(r.flash, r.m->app_start));
		/* once renamed, the next boot finds nothing */
		CHECK_EQ_INT(rig_run(&r, false, 0).outcome, SDBOOT_NO_FILE);
		rig_close(&r);
		/* fsck.fat checks the partition cut out of the card */
		CHECK_EQ_INT(
		    sim_sh(sim,
			   "dd if=%s of=%s.part bs=1M skip=%d status=none && fsck.fat -n "
			   "%s.part >/dev/null && test \"$(mdir -b -i %s%s ::)\" = "
			   "'::/FIRMWARE.CUR' && rm -f %s && mcopy -i %s%s ::FIRMWARE.CUR %s && "
			   "cmp %s %s",
			   img, img, cases[i].mbr ? 1 : 0, img, img, mt, out, img, mt, out, out,
			   fw),
		    0);
		free(app);
	}
	free(img);
	free(fw);
	free(out);
}

/* The card image, two firmware files and their bytes (v1 and v2) for the failure cases. */
struct fw_case {
	const struct catalog_board *m;
	char *img, *fw, *fw2;
	uint8_t *v1, *v2;
	size_t len, len2;
};

/* exFAT and an unformatted card: FatFs in the loaders mounts neither */
static void
failure_no_fs(const struct fw_case *c)
{
	const char *img = c->img;
	struct rig r;

	CHECK_EQ_INT(sim_sh(sim, "rm -f %s && truncate -s 64M %s && mkfs.exfat %s >/dev/null", img,
			    img, img),
		     0);
	rig_open(&r, "skr-1.4-turbo", img);
	CHECK_EQ_INT(rig_run(&r, false, 0).outcome, SDBOOT_NO_FS);
	CHECK(flash_is_erased(r.flash, c->m->app_start, 4096));
	rig_close(&r);
	CHECK_EQ_INT(sim_sh(sim, "rm -f %s && truncate -s 8M %s", img, img), 0);
	rig_open(&r, "skr-1.4-turbo", img);
	CHECK_EQ_INT(rig_run(&r, false, 0).outcome, SDBOOT_NO_FS);
	rig_close(&r);
}

/* the rename fails: every boot programs the file again */
static void
failure_rename(const struct fw_case *c)
{
	const char *img = c->img;
	struct sdboot_result res;
	struct rig r;

	CHECK_EQ_INT(sim_sh(sim,
			    "rm -f %s && mkfs.fat -C %s 8192 >/dev/null && mcopy -i %s %s "
			    "::firmware.bin",
			    img, img, img, c->fw),
		     0);
	rig_open(&r, "skr-1.4-turbo", img);
	for (int i = 0; i < 3; i++) {
		res = rig_run(&r, true, 0);
		CHECK_EQ_INT(res.outcome, SDBOOT_FLASHED);
		CHECK(!res.renamed);
	}
	CHECK(flash_equals(r.flash, c->m->app_start, c->v1, c->len));
	rig_close(&r);
	CHECK_EQ_INT(sim_sh(sim,
			    "mdir -i %s ::firmware.bin >/dev/null && ! mdir -i %s ::FIRMWARE.CUR "
			    ">/dev/null 2>&1",
			    img, img),
		     0);
}

/* power lost after 8 KiB: the application is torn; the file is still there, so the next
 * boot programs it whole */
static void
failure_power_cut(const struct fw_case *c)
{
	uint32_t app = c->m->app_start;
	struct sdboot_result res;
	struct rig r;

	rig_open(&r, "skr-1.4-turbo", c->img);
	res = rig_run(&r, false, app + 8192);
	CHECK_EQ_INT(res.outcome, SDBOOT_POWER_CUT);
	CHECK(!flash_equals(r.flash, app, c->v1, c->len));
	res = rig_run(&r, false, 0);
	CHECK_EQ_INT(res.outcome, SDBOOT_FLASHED);
	CHECK(res.renamed);
	CHECK(flash_equals(r.flash, app, c->v1, c->len));
	rig_close(&r);
}

/* orphaned long name: a desktop copied "Firmware.bin" (long name + FIRMWARE.BIN); the loader
 * renamed the 8.3 entry in place and left the long name in front of it. A new firmware.bin
 * further down is never reached: the old firmware is flashed again. */
static void
failure_orphan_name(const struct fw_case *c)
{
	const char *img = c->img;
	struct sdboot_result res;
	struct rig r;

	CHECK_EQ_INT(sim_sh(sim,
			    "rm -f %s && mkfs.fat -C %s 8192 >/dev/null && mcopy -i %s %s "
			    "::Firmware.bin && mcopy -i %s %s ::NEXT.BIN",
			    img, img, img, c->fw, img, c->fw2),
		     0);
	rig_open(&r, "skr-1.4-turbo", img);
	res = rig_run(&r, false, 0);
	CHECK_EQ_INT(res.outcome, SDBOOT_FLASHED);
	CHECK(res.renamed);
	rig_close(&r);
	/* the new firmware.bin lands behind the orphan (mtools would reuse its slots, as a
	 * desktop may not: rename NEXT.BIN's 8.3 entry where it is) */
	CHECK_EQ_INT(patch_file(img, "NEXT    BIN", "FIRMWAREBIN"), 0);
	rig_open(&r, "skr-1.4-turbo", img);
	for (int i = 0; i < 2; i++) {
		res = rig_run(&r, false, 0);
		CHECK_EQ_INT(res.outcome, SDBOOT_FLASHED);
		CHECK_EQ_INT(res.len, c->len); /* v1 again, from FIRMWARE.CUR */
	}
	CHECK(flash_equals(r.flash, c->m->app_start, c->v1, c->len));
	rig_close(&r);
	/* fsck.fat reports the orphan but exits 0 and will not remove it */
	CHECK_EQ_INT(
	    sim_sh(sim, "fsck.fat -n %s | grep -q 'Wrong checksum for long file name'", img), 0);
	/* without the orphan (its slot deleted) the new file is found */
	CHECK_EQ_INT(patch_file(img,
				"\x41"
				"F\0i\0r\0m\0w\0",
				"\xe5"
				"F\0i\0r\0m\0w\0"),
		     0);
	rig_open(&r, "skr-1.4-turbo", img);
	res = rig_run(&r, false, 0);
	CHECK_EQ_INT(res.outcome, SDBOOT_FLASHED);
	CHECK(flash_equals(r.flash, c->m->app_start, c->v2, c->len2));
	rig_close(&r);
	CHECK_EQ_INT(sim_sh(sim,
			    "fsck.fat -n %s >%s.fsck && ! grep -q Wrong %s.fsck && "
			    "test \"$(mdir -b -i %s ::)\" = '::/FIRMWARE.CUR'",
			    img, img, img, img),
		     0);
}

/* What makes a loader skip the card or flash the wrong thing. */
static void
test_failures(void)
{
	struct fw_case c = {.m = catalog_find("skr-1.4-turbo")};

	c.img = tpath("f.img");
	c.fw = tpath("fw1.bin");
	c.fw2 = tpath("fw2.bin");
	c.v1 = app_file(c.m, "v-one", 24000, c.fw, &c.len);
	c.v2 = app_file(c.m, "v-two", 30000, c.fw2, &c.len2);
	failure_no_fs(&c);
	failure_rename(&c);
	failure_power_cut(&c);
	failure_orphan_name(&c);
	free(c.v1);
	free(c.v2);
	free(c.img);
	free(c.fw);
	free(c.fw2);
}

static struct sim_board *
add_board(const char *model, const char *port)
{
	struct sim_board_spec spec = {
	    .model = model, .port = port, .mode = SIM_MODE_KLIPPER_APP, .app_version = "v-old"};
	struct sim_board *b = sim_board_add(sim, &spec);

	CHECK(b != NULL);
	return b;
}

static int
reset_and_wait(struct sim_board *b)
{
	unsigned n = sim_board_enumerations(b);
	int r;

	sim_board_reset(b);
	r = sim_board_wait_enumerations(b, n + 1, 10000);
	return r < 0 ? r : sim_board_wait_mode(b, SIM_MODE_KLIPPER_APP, 10000);
}

static bool
version_is(struct sim_board *b, const char *v)
{
	return strstr(sim_board_app_version(b), v) != NULL;
}

/* Latch the card in SPI mode the way the host's SD path does: through the running app. */
static int
use_card_over_spi(struct sim_board *b)
{
	const struct catalog_sd_bus *sd = catalog_sd_bus(sim_board_model(b));
	struct klipper_spi_bus bus = {
	    .spi_bus = sd->spi_bus, .cs_pin = sd->cs_pin, .rate = 4000000};
	struct klipper_client *kc = NULL;
	struct sdcard *card = NULL;
	char err[256];
	int r;

	memcpy(bus.sw_pins, sd->sw_pins, sizeof(bus.sw_pins));
	r = klipper_client_open(sim_board_tty(b), NULL, &kc, err, sizeof(err));
	if (r == 0)
		r = klipper_client_spi_setup(kc, &bus);
	if (r == 0)
		r = sdcard_open(kc, &card);
	sdcard_close(card);
	klipper_client_close(kc);
	return r;
}

/* LPC176x stock loader on a running board: flashed and renamed; a card that does not
 * initialise; power lost while programming; a rename that fails */
static void
boards_lpc(struct sim_board *lpc)
{
	struct sim_sdboot_stats st;
	struct sim_fault f = {.kind = SIM_FAULT_NONE};
	char *fw = tpath("b1.bin"), *fw2 = tpath("b2.bin");
	size_t len, len2;
	uint8_t *v1 = app_file(sim_board_model(lpc), "v-new1", 16384, fw, &len);
	uint8_t *v2 = app_file(sim_board_model(lpc), "v-new2", 20480, fw2, &len2);

	CHECK_EQ_INT(sim_board_wait_mode(lpc, SIM_MODE_KLIPPER_APP, 5000), 0);
	CHECK_EQ_INT(sim_board_new_sdcard(lpc, 64ull << 20, "fat"), 0);
	CHECK(sim_board_sdcard_path(lpc) != NULL);
	CHECK_EQ_INT(sim_sh(sim, "mcopy -i %s %s ::firmware.bin", sim_board_sdcard_path(lpc), fw),
		     0);
	CHECK_EQ_INT(reset_and_wait(lpc), 0);
	CHECK(version_is(lpc, "v-new1"));
	CHECK(flash_equals(sim_board_flash(lpc), sim_board_app_start(lpc), v1, len));
	sim_board_sdboot_stats(lpc, &st);
	CHECK_EQ_INT(st.flashes, 1);
	CHECK_EQ_INT(st.renames, 1);
	CHECK_EQ_INT(st.last_len, len);
	CHECK_EQ_INT(sim_sh(sim,
			    "fsck.fat -n %s >/dev/null && mdir -i %s ::FIRMWARE.CUR >/dev/null",
			    sim_board_sdcard_path(lpc), sim_board_sdcard_path(lpc)),
		     0);

	/* the card does not initialise for the loader: the old app boots */
	CHECK_EQ_INT(sim_sh(sim, "mcopy -i %s %s ::firmware.bin", sim_board_sdcard_path(lpc), fw2),
		     0);
	f.kind = SIM_FAULT_SD_NO_INIT;
	f.count = 1;
	sim_board_set_fault(lpc, &f);
	CHECK_EQ_INT(reset_and_wait(lpc), 0);
	CHECK(version_is(lpc, "v-new1"));
	sim_board_sdboot_stats(lpc, &st);
	CHECK_EQ_INT(st.flashes, 1);
	CHECK_EQ_INT(st.last, SDBOOT_UNREADABLE);

	/* power lost while programming, back after 50 ms: the file is programmed again */
	f.kind = SIM_FAULT_UNPLUG_AT_BYTE;
	f.at = 4096;
	f.count = 50;
	sim_board_set_fault(lpc, &f);
	CHECK_EQ_INT(reset_and_wait(lpc), 0);
	CHECK(version_is(lpc, "v-new2"));
	sim_board_sdboot_stats(lpc, &st);
	CHECK_EQ_INT(st.power_cuts, 1);
	CHECK_EQ_INT(st.flashes, 2);
	CHECK(flash_equals(sim_board_flash(lpc), sim_board_app_start(lpc), v2, len2));

	/* the rename fails: each reset programs again */
	CHECK_EQ_INT(sim_sh(sim, "mcopy -i %s %s ::firmware.bin", sim_board_sdcard_path(lpc), fw),
		     0);
	f.kind = SIM_FAULT_SD_RENAME_FAIL;
	sim_board_set_fault(lpc, &f);
	CHECK_EQ_INT(reset_and_wait(lpc), 0);
	CHECK_EQ_INT(reset_and_wait(lpc), 0);
	sim_board_sdboot_stats(lpc, &st);
	CHECK_EQ_INT(st.flashes, 4);
	CHECK_EQ_INT(st.renames, 2);
	CHECK(version_is(lpc, "v-new1"));
	f.kind = SIM_FAULT_NONE;
	sim_board_set_fault(lpc, &f);
	free(v1);
	free(v2);
	free(fw);
	free(fw2);
}

/* SDIO loader: after the app used the card over SPI it cannot read it until the power is
 * cycled */
static void
boards_sdio(struct sim_board *oct)
{
	struct sim_sdboot_stats st;
	char *fw3 = tpath("b3.bin");
	size_t len3;
	uint8_t *v3 = app_file(sim_board_model(oct), "v-oct", 16384, fw3, &len3);
	unsigned n;

	CHECK_EQ_INT(sim_board_wait_mode(oct, SIM_MODE_KLIPPER_APP, 5000), 0);
	CHECK_EQ_INT(sim_board_new_sdcard(oct, 64ull << 20, "fat32"), 0);
	CHECK_EQ_INT(sim_sh(sim, "mcopy -i %s %s ::firmware.bin", sim_board_sdcard_path(oct), fw3),
		     0);
	CHECK_EQ_INT(use_card_over_spi(oct), 0);
	CHECK(sim_board_sdcard_spi_mode(oct));
	CHECK_EQ_INT(reset_and_wait(oct), 0);
	CHECK(version_is(oct, "v-old"));
	sim_board_sdboot_stats(oct, &st);
	CHECK_EQ_INT(st.last, SDBOOT_UNREADABLE);
	n = sim_board_enumerations(oct);
	CHECK_EQ_INT(sim_board_power_cycle(oct), 0);
	CHECK_EQ_INT(sim_board_wait_enumerations(oct, n + 1, 10000), 0);
	CHECK_EQ_INT(sim_board_wait_mode(oct, SIM_MODE_KLIPPER_APP, 10000), 0);
	CHECK(version_is(oct, "v-oct"));
	CHECK(flash_equals(sim_board_flash(oct), sim_board_app_start(oct), v3, len3));
	CHECK_EQ_INT(sim_sh(sim,
			    "fsck.fat -n %s >/dev/null && mdir -i %s ::FIRMWARE.CUR >/dev/null",
			    sim_board_sdcard_path(oct), sim_board_sdcard_path(oct)),
		     0);
	free(v3);
	free(fw3);
}

/* On a board: reset, power cycle, SDIO latch and the faults. */
static void
test_boards(void)
{
	struct sim_board *lpc = add_board("skr-1.4-turbo", "7-1");
	struct sim_board *oct = add_board("octopus-f446", "7-2");

	if (!lpc || !oct)
		return;
	boards_lpc(lpc);
	boards_sdio(oct);
}

int
main(int argc, char **argv)
{
	sim_init(argc, argv);
	if (!mkdtemp(tmpdir)) {
		perror("mkdtemp");
		return 1;
	}
	sim = sim_new();
	test_types();
	test_failures();
	test_boards();
	sim = sim_free(sim);
	if (harness_failed == 0) {
		char *cmd = xasprintf("rm -rf %s", tmpdir);

		if (system(cmd) != 0)
			fprintf(stderr, "cannot remove %s\n", tmpdir);
		free(cmd);
	}
	TEST_DONE();
}
