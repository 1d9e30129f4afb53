/* SPDX-License-Identifier: GPL-2.0-or-later */
/* test_sim_drive: the RPI-RP2 drive of a simulated RP2040 in BOOTSEL, judged by the real
 * tools: udev sees the block device under the BOOTSEL USB device, mtools lists the ROM's
 * two files and fsck.fat finds the volume clean; `mcopy` of a .uf2 onto the drive programs
 * the simulated flash and the chip reboots into the new application; a UF2 for another
 * family, or an incomplete one, changes nothing. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "flash.h"
#include "harness.h"
#include "proto/uf2.h"
#include "sim.h"
#include "util.h"

static char tmpdir[] = "/tmp/skrflash-drive-XXXXXX";

/* boot2 + an app at 0x10000100 as a .uf2 for `family`; returns the path. */
static char *
pico_uf2(struct sim_board *b, const char *version, uint32_t family, size_t drop_blocks,
	 uint8_t **ret_img, size_t *ret_len)
{
	size_t len, ulen;
	/* an incomplete file is a larger build cut short: it has another numBlocks */
	uint8_t *img = sim_image_rp2040(sim_board_model(b)->mcu, version,
					drop_blocks ? 20480 : 16384, true, &len);
	uint8_t *uf2;
	char *path = xasprintf("%s/%s.uf2", tmpdir, version);

	ulen = uf2_encoded_size(len);
	uf2 = xmalloc(ulen);
	CHECK(uf2_encode(0x10000000u, img, len, family, uf2) > 0);
	CHECK_EQ_INT(write_file_atomic(path, uf2, ulen - drop_blocks * UF2_BLOCK_SIZE, 0644), 0);
	free(uf2);
	*ret_img = img;
	*ret_len = len;
	return path;
}

/* fsck.fat -n on the partition of the drive image (it starts at sector 1, after the MBR):
 * fsck.fat's exit status, 0 = clean. */
static int
fsck_volume(struct sim *s, const char *image)
{
	char *part = xasprintf("%s/volume.img", tmpdir);
	int r = sim_fsck_fat(s, image, 512, part);

	free(part);
	return r;
}

int
main(int argc, char **argv)
{
	struct sim *s;
	struct sim_board *b;
	struct sim_board_spec spec = {.model = "skr-pico", .port = "1-1", .mode = SIM_MODE_BOOTSEL};
	uint8_t *img, *other;
	size_t len, olen;
	char *uf2, *wrong, *partial, *out = NULL, *at = NULL;
	const char *node;

	sim_init(argc, argv);
	sim_run_ignore_leaks();
	if (!mkdtemp(tmpdir))
		return 1;
	s = sim_new();
	b = sim_board_add(s, &spec);
	CHECK(b != NULL);
	if (!b)
		return 1;
	node = sim_board_drive(b);
	CHECK(node != NULL && strncmp(node, "/dev/sd", 7) == 0);
	at = xasprintf("%s@@512", node ? node : "");

	/* what the ROM shows: a clean FAT16 volume RPI-RP2 with its two files */
	CHECK_EQ_INT(sim_run_args(s, 20000, &out, "mdir", "-i", at, "::/", NULL), 0);
	CHECK(out && strstr(out, "RPI-RP2") && strstr(out, "INFO_UF2 TXT") &&
	      strstr(out, "INDEX    HTM"));
	free(out);
	CHECK_EQ_INT(fsck_volume(s, sim_board_drive_image(b)), 0);

	uf2 = pico_uf2(b, "v-drive-ok", UF2_FAMILY_RP2040, 0, &img, &len);
	wrong = pico_uf2(b, "v-drive-wrong", 0xE48BFF59u /* RP2350 */, 0, &other, &olen);
	free(other);
	partial = pico_uf2(b, "v-drive-partial", UF2_FAMILY_RP2040, 3, &other, &olen);

	/* another family's file: ignored, no reboot */
	CHECK_EQ_INT(sim_run_args(s, 20000, &out, "mcopy", "-i", at, wrong, "::/WRONG.UF2", NULL),
		     0);
	free(out);
	usleep(300000);
	CHECK_EQ_INT(sim_board_mode(b), SIM_MODE_BOOTSEL);
	CHECK(!flash_equals(sim_board_flash(b), 0x10000000u, img, len));
	/* a file missing its last blocks: programmed so far, but no reboot */
	CHECK_EQ_INT(sim_run_args(s, 20000, &out, "mcopy", "-i", at, partial, "::/PART.UF2", NULL),
		     0);
	free(out);
	usleep(300000);
	CHECK_EQ_INT(sim_board_mode(b), SIM_MODE_BOOTSEL);

	CHECK_EQ_INT(fsck_volume(s, sim_board_drive_image(b)), 0);
	/* the whole file: the ROM programs it and reboots into the application */
	CHECK_EQ_INT(sim_run_args(s, 20000, &out, "mcopy", "-i", at, uf2, "::/NEW.UF2", NULL), 0);
	free(out);
	CHECK_EQ_INT(sim_board_wait_mode(b, SIM_MODE_KLIPPER_APP, 5000), 0);
	CHECK(flash_equals(sim_board_flash(b), 0x10000000u, img, len));
	CHECK_STREQ(sim_board_app_version(b), "v-drive-ok");
	/* the drive left with the chip */
	CHECK(sim_board_drive(b) == NULL);

	free(img);
	free(other);
	free(uf2);
	free(wrong);
	free(partial);
	free(at);
	sim_free(s);
	{
		char *cmd = xasprintf("rm -rf %s", tmpdir);

		(void)!system(cmd);
		free(cmd);
	}
	TEST_DONE();
}
