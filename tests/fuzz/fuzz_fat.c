/* SPDX-License-Identifier: GPL-2.0-or-later */
/* fuzz_fat: proto/fat on an untrusted card. The input is a sparse disk image (so that small
 * seeds describe FAT32 volumes): u32 sector count, then records of u32 LBA, u16 sector
 * count and that many 512-byte sectors; what no record covers reads as zeros, and a short
 * last record is zero-padded. The harness mounts, lists, finds and reads, then cleans,
 * deletes, writes and renames as the SD path does: nothing may crash, hang or touch memory
 * outside the device. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proto/fat.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* 64 MiB: room for a FAT32 volume of 512-byte clusters; calloc maps it lazily. */
#define MAX_SECTORS (1u << 17)

struct fdev {
	struct blockdev dev;
	uint8_t *img;
};

static int
fdev_read(void *ctx, uint64_t lba, uint32_t count, uint8_t *buf)
{
	struct fdev *f = ctx;

	if (lba + count > f->dev.sectors)
		abort(); /* proto/fat must never ask past the device */
	memcpy(buf, f->img + lba * BLOCKDEV_SECTOR, (size_t)count * BLOCKDEV_SECTOR);
	return 0;
}

static int
fdev_write(void *ctx, uint64_t lba, uint32_t count, const uint8_t *buf)
{
	struct fdev *f = ctx;

	if (lba + count > f->dev.sectors)
		abort();
	memcpy(f->img + lba * BLOCKDEV_SECTOR, buf, (size_t)count * BLOCKDEV_SECTOR);
	return 0;
}

static uint32_t
rd32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void
unpack(struct fdev *f, const uint8_t *data, size_t size)
{
	size_t at = 4;

	while (at + 6 <= size) {
		uint64_t lba = rd32(data + at);
		size_t count = (size_t)(data[at + 4] | data[at + 5] << 8);
		size_t bytes = count * BLOCKDEV_SECTOR;

		at += 6;
		if (bytes > size - at)
			bytes = size - at;
		if (lba < f->dev.sectors) {
			size_t room = (size_t)(f->dev.sectors - lba) * BLOCKDEV_SECTOR;

			memcpy(f->img + lba * BLOCKDEV_SECTOR, data + at,
			       bytes < room ? bytes : room);
		}
		at += bytes;
	}
}

struct sink {
	size_t total;
};

static int
sink_cb(void *ctx, const uint8_t *d, size_t n)
{
	struct sink *s = ctx;

	(void)d;
	if (n == 0 || n > FAT_IO_SECTORS * BLOCKDEV_SECTOR)
		abort();
	s->total += n;
	return s->total > (256u << 10) ? 1 : 0; /* enough: a looping chain must not hold us */
}

struct lister {
	struct fat_vol *v;
	int n;
};

static int
list_cb(void *ctx, const struct fat_dirent *e)
{
	struct lister *l = ctx;
	struct sink s = {0};
	struct fat_dirent copy = *e;

	if (strlen(e->name) >= sizeof(e->name) || strlen(e->short_name) > 12)
		abort();
	/* reading from inside the walk is what a caller may do too */
	if (l->n < 8 && !(e->attr & FAT_ATTR_DIRECTORY))
		(void)fat_read(l->v, &copy, sink_cb, &s);
	return ++l->n > 4096;
}

static void
exercise(struct fat_vol *v)
{
	static uint8_t fw[3000];
	struct lister l = {.v = v};
	struct fat_dirent e;
	struct sink s = {0};
	uint64_t free_bytes;

	(void)fat_list(v, list_cb, &l);
	if (fat_find(v, "firmware.bin", &e) == 0)
		(void)fat_read(v, &e, sink_cb, &s);
	(void)fat_find(v, "Long File Name With Spaces.gcode", &e);
	(void)fat_clean_orphans(v);
	(void)fat_delete(v, "firmware.bin");
	memset(fw, 0x5a, sizeof(fw));
	if (fat_write(v, "firmware.bin", fw, sizeof(fw)) == 0 &&
	    fat_find(v, "firmware.bin", &e) == 0)
		(void)fat_read(v, &e, sink_cb, &s);
	(void)fat_rename(v, "firmware.bin", "FIRMWARE.CUR");
	(void)fat_write(v, "a long name for the uf2 writer.uf2", fw, 100);
	(void)fat_free_bytes(v, &free_bytes);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fdev f;
	struct fat_vol v;
	uint32_t sectors;

	if (size < 4)
		return 0;
	sectors = rd32(data);
	if (sectors == 0 || sectors > MAX_SECTORS)
		return 0;
	f.img = calloc(sectors, BLOCKDEV_SECTOR);
	if (!f.img)
		return 0;
	f.dev = (struct blockdev){
	    .ctx = &f, .sectors = sectors, .read = fdev_read, .write = fdev_write};
	unpack(&f, data, size);
	if (fat_mount(&v, &f.dev) == 0)
		exercise(&v);
	else if (fat_error(&v)[0] == '\0')
		abort(); /* every refusal says why */
	free(f.img);
	return 0;
}
