/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "flash/uf2drive.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "flash/blockfile.h"
#include "proto/fat.h"

/* UF2 spec (microsoft/uf2 README), protocols.md §5.2: the magics that make a sector a block */
#define UF2_MAGIC0 0x0a324655u
#define UF2_MAGIC1 0x9e5d5157u
#define UF2_MAGIC_END 0x0ab16f30u
#define UF2_BLOCK 512u

static uint32_t
le32(const uint8_t *p)
{
	return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
	       ((uint32_t)p[3] << 24);
}

static long
first_bad_block(const uint8_t *uf2, size_t len)
{
	for (size_t i = 0; i < len / UF2_BLOCK; i++) {
		const uint8_t *b = uf2 + i * UF2_BLOCK;

		if (le32(b) != UF2_MAGIC0 || le32(b + 4) != UF2_MAGIC1 ||
		    le32(b + 508) != UF2_MAGIC_END)
			return (long)i;
	}
	return -1;
}

int
uf2drive_write(const struct blockdev *dev, const uint8_t *uf2, size_t len, char *msg, size_t msglen)
{
	struct fat_vol v;
	struct fat_dirent e;
	long bad;
	int r;

	if (len == 0 || len % UF2_BLOCK != 0) {
		snprintf(msg, msglen, "not a UF2 file: %zu bytes is not a whole number of blocks",
			 len);
		return -EINVAL;
	}
	bad = first_bad_block(uf2, len);
	if (bad >= 0) {
		snprintf(msg, msglen, "not a UF2 file: block %ld has no UF2 magic", bad);
		return -EINVAL;
	}
	r = fat_mount(&v, dev);
	if (r < 0) {
		snprintf(msg, msglen, "UF2 drive: %s", fat_error(&v));
		return r;
	}
	if (fat_find(&v, "INFO_UF2.TXT", &e) < 0) {
		/* the UF2 spec's marker of a UF2 bootloader: any other drive is left alone */
		snprintf(msg, msglen, "the drive has no INFO_UF2.TXT: not a UF2 bootloader");
		return -EMEDIUMTYPE; /* not -ENODEV: that is a drive that left the bus */
	}
	/* the boot ROM's drive forgets writes; a real FAT drive may keep an older NEW.UF2 */
	r = fat_find(&v, UF2DRIVE_NAME, &e) == 0 ? fat_delete(&v, UF2DRIVE_NAME) : 0;
	if (r == 0)
		r = fat_write(&v, UF2DRIVE_NAME, uf2, len);
	if (r < 0 && v.data_written) {
		snprintf(msg, msglen,
			 "all %zu UF2 blocks written; the drive went away after them (%s), as "
			 "the board does when it reboots: check that it comes back as the "
			 "application",
			 len / UF2_BLOCK, fat_error(&v));
		return 1;
	}
	if (r < 0)
		snprintf(msg, msglen, "writing %s: %s", UF2DRIVE_NAME, fat_error(&v));
	else
		snprintf(msg, msglen, "%zu UF2 blocks written as %s", len / UF2_BLOCK,
			 UF2DRIVE_NAME);
	return r;
}

int
uf2drive_write_path(const char *path, const uint8_t *uf2, size_t len, char *msg, size_t msglen)
{
	struct blockfile bf;
	int r = blockfile_open(&bf, path, true);
	int c;

	if (r < 0) {
		snprintf(msg, msglen, "cannot open %s: %s", path, strerror(-r));
		return r;
	}
	r = uf2drive_write(&bf.dev, uf2, len, msg, msglen);
	c = blockfile_close(&bf);
	/* after 1 the drive is gone: its flush fails and says nothing new */
	if (r == 0 && c < 0) {
		snprintf(msg, msglen, "%s: cannot flush: %s", path, strerror(-c));
		r = c;
	}
	return r;
}
