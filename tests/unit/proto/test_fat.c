/* SPDX-License-Identifier: GPL-2.0-or-later */
/* test_fat: proto/fat against the real tools. Volumes are made by mkfs.fat (FAT12, FAT16,
 * FAT32 up to 32 GiB, sparse), with and without an MBR (sfdisk's, or one written here in
 * front of a partition file), and filled by mtools first (long names, a subdirectory, a
 * leftover firmware.bin, orphaned long-name entries). Every write is then proven by
 * `fsck.fat -n` (clean) and by mcopy reading the file back identical; refusals (exFAT, GPT,
 * unformatted, full, damaged BPB) are checked on the tools' images and on crafted sectors,
 * and a write interrupted after every single sector write must leave fsck.fat nothing worse
 * than lost clusters. */
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "flash/blockfile.h"
#include "harness.h"
#include "proto/fat.h"
#include "util.h"

static char tmp[128];
static char cmdout[8192]; /* output of the last sh() */

/* Runs a shell command, keeps its output in cmdout; returns the exit status. */
__attribute__((format(printf, 1, 2))) static int
sh(const char *fmt, ...)
{
	char cmd[1024], full[1200];
	FILE *f;
	size_t n;
	int st;
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	snprintf(full, sizeof(full), "(%s) >%s/out 2>&1", cmd, tmp);
	st = system(full);
	snprintf(full, sizeof(full), "%s/out", tmp);
	f = fopen(full, "r");
	n = f ? fread(cmdout, 1, sizeof(cmdout) - 1, f) : 0;
	cmdout[n] = '\0';
	if (f)
		fclose(f);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void
sha256(const uint8_t *d, size_t n, uint8_t out[32])
{
	unsigned int len = 32;

	EVP_Digest(d, n, out, &len, EVP_sha256(), NULL);
}

static void
fill(uint8_t *p, size_t n, uint32_t seed)
{
	for (size_t i = 0; i < n; i++) {
		seed ^= seed << 13;
		seed ^= seed >> 17;
		seed ^= seed << 5;
		p[i] = (uint8_t)seed;
	}
}

static int
write_bytes(const char *path, const uint8_t *d, size_t n)
{
	FILE *f = fopen(path, "wb");
	size_t w = f && n ? fwrite(d, 1, n, f) : 0;

	if (f)
		fclose(f);
	return w == n ? 0 : -1;
}

/* ---- devices ------------------------------------------------------------------------ */

/* A disk of an in-memory MBR area (START sectors) followed by a partition file: the tools
 * work on the partition file, proto/fat sees the whole disk. */
struct splitdev {
	struct blockdev dev;
	uint8_t mbr[512];
	uint64_t start;
	struct blockfile part;
	int fail_after; /* writes allowed before every write fails; -1: never */
	int writes;
	int flushes;
	uint64_t read_sectors, written_sectors; /* I/O cost, printed for the SD path */
	uint32_t read_calls;
};

static int
split_read(void *ctx, uint64_t lba, uint32_t count, uint8_t *buf)
{
	struct splitdev *s = ctx;

	s->read_calls++;
	s->read_sectors += count;
	for (uint32_t i = 0; i < count; i++, lba++, buf += 512) {
		if (lba >= s->start) {
			int r = s->part.dev.read(s->part.dev.ctx, lba - s->start, 1, buf);

			if (r < 0)
				return r;
		} else {
			memset(buf, 0, 512);
			if (lba == 0)
				memcpy(buf, s->mbr, 512);
		}
	}
	return 0;
}

static int
split_write(void *ctx, uint64_t lba, uint32_t count, const uint8_t *buf)
{
	struct splitdev *s = ctx;

	if (s->fail_after >= 0 && s->writes >= s->fail_after)
		return -EIO;
	s->writes++;
	s->written_sectors += count;
	if (lba < s->start)
		return -EPERM; /* nothing may write outside the partition */
	return s->part.dev.write(s->part.dev.ctx, lba - s->start, count, buf);
}

/* Counted, not passed on: the tools read the image through the same page cache, and an
 * fsync per barrier would only slow the test down on a busy disk. */
static int
split_flush(void *ctx)
{
	struct splitdev *s = ctx;

	s->flushes++;
	return 0;
}

static void
mbr_entry(uint8_t *mbr, unsigned i, uint8_t type, uint32_t lba, uint32_t count)
{
	uint8_t *e = mbr + 446 + i * 16;

	e[0] = i == 1 ? 0x80 : 0x00;
	e[4] = type;
	for (unsigned b = 0; b < 4; b++) {
		e[8 + b] = (uint8_t)(lba >> (8 * b));
		e[12 + b] = (uint8_t)(count >> (8 * b));
	}
	mbr[510] = 0x55;
	mbr[511] = 0xaa;
}

/* START 0: the partition file is the whole disk (superfloppy). Otherwise an MBR whose first
 * entry is a Linux partition and whose second is the FAT one of TYPE. */
static int
split_open(struct splitdev *s, const char *part, uint64_t start, uint8_t type)
{
	int r;

	memset(s, 0, sizeof(*s));
	s->fail_after = -1;
	r = blockfile_open(&s->part, part, true);
	if (r < 0)
		return r;
	s->start = start;
	if (start) {
		mbr_entry(s->mbr, 0, 0x83, 64, (uint32_t)start - 64);
		mbr_entry(s->mbr, 1, type, (uint32_t)start, (uint32_t)s->part.dev.sectors);
	}
	s->dev = (struct blockdev){.ctx = s,
				   .sectors = start + s->part.dev.sectors,
				   .read = split_read,
				   .write = split_write,
				   .flush = split_flush};
	return 0;
}

static void
split_close(struct splitdev *s)
{
	CHECK_EQ_INT(blockfile_close(&s->part), 0);
}

/* In-memory sectors for crafted images. */
struct memdev {
	struct blockdev dev;
	uint8_t *data;
	bool fail_reads;
};

static int
mem_read(void *ctx, uint64_t lba, uint32_t count, uint8_t *buf)
{
	struct memdev *m = ctx;

	if (m->fail_reads)
		return -EIO;
	memcpy(buf, m->data + lba * 512, (size_t)count * 512);
	return 0;
}

static int
mem_write(void *ctx, uint64_t lba, uint32_t count, const uint8_t *buf)
{
	struct memdev *m = ctx;

	memcpy(m->data + lba * 512, buf, (size_t)count * 512);
	return 0;
}

static void
mem_init(struct memdev *m, uint8_t *data, size_t size)
{
	*m = (struct memdev){
	    .dev = {.ctx = m, .sectors = size / 512, .read = mem_read, .write = mem_write},
	    .data = data};
}

/* ---- checks through proto/fat and through the tools --------------------------------- */

struct buf {
	uint8_t *p;
	size_t n, cap;
};

static int
collect(void *ctx, const uint8_t *d, size_t n)
{
	struct buf *b = ctx;

	if (b->n + n > b->cap) {
		b->cap = (b->n + n) * 2;
		b->p = realloc(b->p, b->cap);
		if (!b->p)
			abort();
	}
	memcpy(b->p + b->n, d, n);
	b->n += n;
	return 0;
}

static bool
same(const uint8_t *a, size_t na, const uint8_t *b, size_t nb)
{
	uint8_t ha[32], hb[32];

	sha256(a, na, ha);
	sha256(b, nb, hb);
	return na == nb && memcmp(ha, hb, 32) == 0;
}

/* NAME read through proto/fat has the SHA-256 of WANT. */
static bool
fat_reads(struct fat_vol *v, const char *name, const uint8_t *want, size_t n)
{
	struct fat_dirent e;
	struct buf b = {0};
	bool ok;

	if (fat_find(v, name, &e) < 0 || fat_read(v, &e, collect, &b) < 0) {
		fprintf(stderr, "reading %s: %s\n", name, fat_error(v));
		free(b.p);
		return false;
	}
	ok = same(b.p, b.n, want, n);
	free(b.p);
	return ok;
}

enum layout { SUPER, SPLIT_MBR, SFDISK_MBR };

struct cfg {
	const char *name;
	int fat;
	const char *size;
	const char *mkfs;
	enum layout layout;
	uint8_t ptype;
};

struct vol {
	const struct cfg *c;
	char path[256];
	char mt[300]; /* mtools image spec */
	struct splitdev s;
	struct fat_vol v;
};

static int
vol_mount(struct vol *x)
{
	int r = split_open(&x->s, x->path, x->c->layout == SPLIT_MBR ? 2048 : 0, x->c->ptype);

	if (r < 0)
		return r;
	r = fat_mount(&x->v, &x->s.dev);
	if (r < 0)
		fprintf(stderr, "%s: mount: %s\n", x->c->name, fat_error(&x->v));
	return r;
}

static void
vol_umount(struct vol *x)
{
	split_close(&x->s);
}

/* fsck.fat -n: no complaint at all. fsck.fat has no offset option: sfdisk's layout is
 * checked on a copy of the partition. */
static bool
fsck_clean(const struct vol *x)
{
	int rc;

	if (x->c->layout == SFDISK_MBR)
		rc = sh("dd if=%s of=%s/part.img bs=1M skip=1 conv=sparse status=none && "
			"fsck.fat -n %s/part.img",
			x->path, tmp, tmp);
	else
		rc = sh("fsck.fat -n %s", x->path);
	if (rc != 0)
		fprintf(stderr, "%s: fsck.fat -n (exit %d):\n%s\n", x->c->name, rc, cmdout);
	return rc == 0;
}

/* mcopy reads NAME back with the bytes of WANT. */
static bool
mtools_reads(const struct vol *x, const char *name, const uint8_t *want, size_t n)
{
	char out[200];
	uint8_t *data = NULL;
	size_t size = 0;
	bool ok;

	snprintf(out, sizeof(out), "%s/mout", tmp);
	unlink(out);
	if (sh("mcopy -n -i '%s' '::%s' %s", x->mt, name, out) != 0) {
		fprintf(stderr, "%s: mcopy %s: %s\n", x->c->name, name, cmdout);
		return false;
	}
	if (read_file(out, 64u << 20, &data, &size) < 0)
		return false;
	ok = same(data, size, want, n);
	free(data);
	return ok;
}

/* mdir's listing of the root contains NEEDLE (case-insensitive). */
static bool
mdir_has(const struct vol *x, const char *needle)
{
	if (sh("mdir -i '%s' ::", x->mt) != 0)
		return false;
	return strcasestr(cmdout, needle) != NULL;
}

/* Offset of the 32-byte directory slot whose 8.3 name is SNAME, searched in the first
 * 64 MiB of the image (where every root directory of these volumes lies). */
static long long
find_slot(const char *path, const char *sname)
{
	static uint8_t chunk[1 << 20];
	int fd = open(path, O_RDONLY);
	long long found = -1;

	for (off_t off = 0; fd >= 0 && found < 0 && off < (64 << 20); off += (off_t)sizeof(chunk)) {
		ssize_t n = pread(fd, chunk, sizeof(chunk), off);

		if (n <= 0)
			break;
		for (ssize_t i = 0; i + 32 <= n; i += 32)
			if (memcmp(chunk + i, sname, 11) == 0 && chunk[i + 11] != 0x0f) {
				found = off + i;
				break;
			}
	}
	if (fd >= 0)
		close(fd);
	return found;
}

static void
poke(const char *path, long long off, uint8_t byte)
{
	int fd = open(path, O_WRONLY);

	CHECK(fd >= 0 && pwrite(fd, &byte, 1, off) == 1);
	if (fd >= 0)
		close(fd);
}

/* Files mtools puts on every volume first. */
static uint8_t readme[1000], gcode[70 * 1024], nested[3000], leftover[40 * 1024];
static uint8_t fw[300 * 1024 + 123];

static bool
make_volume(struct vol *x, const struct cfg *c)
{
	char f[256];
	int rc;

	memset(x, 0, sizeof(*x));
	x->c = c;
	snprintf(x->path, sizeof(x->path), "%s/%s.img", tmp, c->name);
	snprintf(x->mt, sizeof(x->mt), "%s%s", x->path, c->layout == SFDISK_MBR ? "@@1048576" : "");
	if (c->layout == SFDISK_MBR)
		rc =
		    sh("rm -f %s && truncate -s %s %s && echo 'start=2048, type=%x' | sfdisk -q %s "
		       "&& mkfs.fat -F %d %s --offset 2048 %s",
		       x->path, c->size, x->path, c->ptype, x->path, c->fat, c->mkfs, x->path);
	else
		rc = sh("rm -f %s && truncate -s %s %s && mkfs.fat -F %d %s %s", x->path, c->size,
			x->path, c->fat, c->mkfs, x->path);
	if (rc != 0) {
		fprintf(stderr, "%s: mkfs: %s\n", c->name, cmdout);
		return false;
	}
	snprintf(f, sizeof(f), "%s/empty", tmp);
	rc = sh("cd %s && mcopy -i '%s' readme ::README.TXT && mcopy -i '%s' gcode "
		"'::Long File Name With Spaces.gcode' && mmd -i '%s' ::SUBDIR && "
		"mcopy -i '%s' nested '::SUBDIR/nested long name.cfg' && "
		"mcopy -i '%s' leftover ::firmware.bin && mcopy -i '%s' empty "
		"'::orphan long name.bin' && mcopy -i '%s' empty '::mismatch long name.txt'",
		tmp, x->mt, x->mt, x->mt, x->mt, x->mt, x->mt, x->mt);
	if (rc != 0) {
		fprintf(stderr, "%s: mtools: %s\n", c->name, cmdout);
		return false;
	}
	return true;
}

/* Orphans as the field makes them: a short entry deleted by a tool that ignores long names
 * (its long-name slots stay), and a short entry renamed in place as a bootloader renames
 * firmware.bin (the long name's checksum no longer matches). fsck.fat must see both. */
static void
make_orphans(struct vol *x)
{
	long long a = find_slot(x->path, "ORPHAN~1BIN"), b = find_slot(x->path, "MISMAT~1TXT");

	CHECK(a > 0 && b > 0);
	if (a <= 0 || b <= 0)
		return;
	poke(x->path, a, 0xe5);
	poke(x->path, b + 7, '2');
	CHECK(!fsck_clean(x)); /* (its complaint above is expected) */
}

struct names {
	int n;
	bool long_seen, lower_seen, dir_seen;
};

static int
list_cb(void *ctx, const struct fat_dirent *e)
{
	struct names *nm = ctx;

	nm->n++;
	nm->long_seen |= strcmp(e->name, "Long File Name With Spaces.gcode") == 0;
	nm->lower_seen |=
	    strcmp(e->name, "firmware.bin") == 0 && strcmp(e->short_name, "FIRMWARE.BIN") == 0;
	nm->dir_seen |= strcmp(e->name, "SUBDIR") == 0 && (e->attr & FAT_ATTR_DIRECTORY);
	return 0;
}

/* What mtools put there reads back through proto/fat, by long and by 8.3 name. */
static void
check_mtools_files(struct vol *x)
{
	struct names nm = {0};
	struct fat_dirent e;

	CHECK_EQ_INT(fat_list(&x->v, list_cb, &nm), 0);
	CHECK_EQ_INT(nm.n, 5); /* README, the gcode, SUBDIR, firmware.bin, MISMAT~2.TXT */
	CHECK(nm.long_seen && nm.lower_seen && nm.dir_seen);
	CHECK(fat_reads(&x->v, "long file name with spaces.GCODE", gcode, sizeof(gcode)));
	CHECK(fat_reads(&x->v, "LONGFI~1.GCO", gcode, sizeof(gcode)));
	CHECK(fat_reads(&x->v, "readme.txt", readme, sizeof(readme)));
	CHECK(fat_reads(&x->v, "FIRMWARE.BIN", leftover, sizeof(leftover)));
	CHECK_EQ_INT(fat_find(&x->v, "orphan long name.bin", &e), -ENOENT);
	CHECK_EQ_INT(fat_find(&x->v, "SUBDIR", &e), 0);
	CHECK_EQ_INT(fat_read(&x->v, &e, collect, NULL), -EISDIR);
	CHECK_EQ_INT(fat_delete(&x->v, "SUBDIR"), -EISDIR);
}

/* The other files survive every write. */
static void
check_untouched(struct vol *x)
{
	CHECK(mtools_reads(x, "Long File Name With Spaces.gcode", gcode, sizeof(gcode)));
	CHECK(mtools_reads(x, "SUBDIR/nested long name.cfg", nested, sizeof(nested)));
	CHECK(mtools_reads(x, "README.TXT", readme, sizeof(readme)));
}

/* FAT32: the FSInfo free count proto/fat keeps equals the free clusters of the FAT. */
static void
check_fsinfo(struct vol *x)
{
	uint64_t bytes = 0;

	if (x->v.type != FAT_TYPE_32)
		return;
	CHECK(x->v.fsinfo_sector != 0);
	CHECK_EQ_INT(fat_free_bytes(&x->v, &bytes), 0);
	CHECK_EQ_INT(bytes, (uint64_t)x->v.free_count * x->v.sec_per_clus * 512);
}

static void
remount(struct vol *x)
{
	vol_umount(x);
	CHECK_EQ_INT(vol_mount(x), 0);
}

/* A long-named file: written (long-name slots + a ~N 8.3 name), renamed to another long
 * name, deleted; each step proven by the tools. */
static void
long_name_cycle(struct vol *x)
{
	static uint8_t uf2[10 * 1024 + 7];
	const char *a = "klipper for skr pico (v0.12).uf2", *b = "Another Long Name, renamed.UF2";

	fill(uf2, sizeof(uf2), 99);
	CHECK_EQ_INT(fat_write(&x->v, a, uf2, sizeof(uf2)), 0);
	CHECK(fsck_clean(x));
	CHECK(mtools_reads(x, a, uf2, sizeof(uf2)));
	CHECK_EQ_INT(fat_rename(&x->v, a, b), 0);
	CHECK(fsck_clean(x));
	CHECK(mtools_reads(x, b, uf2, sizeof(uf2)));
	CHECK(fat_reads(&x->v, b, uf2, sizeof(uf2)));
	CHECK(!mdir_has(x, a));
	CHECK_EQ_INT(fat_delete(&x->v, b), 0);
	CHECK(fsck_clean(x));
	CHECK(!mdir_has(x, "renamed"));
	/* an empty file has no clusters */
	CHECK_EQ_INT(fat_write(&x->v, "empty.txt", NULL, 0), 0);
	CHECK(fsck_clean(x));
	CHECK(mtools_reads(x, "empty.txt", NULL, 0));
	CHECK_EQ_INT(fat_delete(&x->v, "empty.txt"), 0);
}

/* Many long names: the FAT32 root grows by clusters (the 512-byte-cluster volume), the
 * fixed FAT12/16 root just fills. */
static void
many_files(struct vol *x)
{
	uint8_t d[100];
	char name[64];
	int n = 0;

	for (int i = 0; i < 40; i++) {
		snprintf(name, sizeof(name), "a long file name number %02d.bin", i);
		fill(d, sizeof(d), (uint32_t)i + 1);
		if (fat_write(&x->v, name, d, sizeof(d)) == 0)
			n++;
	}
	CHECK_EQ_INT(n, 40);
	CHECK(fsck_clean(x));
	CHECK(mdir_has(x, "a long file name number 39.bin"));
	fill(d, sizeof(d), 40);
	CHECK(mtools_reads(x, "a long file name number 39.bin", d, sizeof(d)));
	for (int i = 0; i < 40; i++) {
		snprintf(name, sizeof(name), "A LONG FILE NAME NUMBER %02d.BIN", i);
		CHECK_EQ_INT(fat_delete(&x->v, name), 0);
	}
	CHECK(fsck_clean(x));
}

/* The SD path end to end: clean up, write firmware.bin, verify, rename as the bootloader
 * does, verify again. */
static void
scenario(const struct cfg *c)
{
	struct vol x;
	struct fat_dirent e;

	fprintf(stderr, "== %s (FAT%d, %s)\n", c->name, c->fat, c->size);
	if (!make_volume(&x, c)) {
		CHECK(0);
		return;
	}
	make_orphans(&x);
	if (vol_mount(&x) < 0) {
		CHECK(0);
		return;
	}
	CHECK_EQ_INT(x.v.type, c->fat);
	check_mtools_files(&x);
	CHECK_EQ_INT(fat_clean_orphans(&x.v), 4); /* 2 + 2 long-name slots */
	CHECK_EQ_INT(fat_clean_orphans(&x.v), 0);
	CHECK(fsck_clean(&x));

	CHECK_EQ_INT(fat_delete(&x.v, "firmware.bin"), 0);
	CHECK_EQ_INT(fat_find(&x.v, "firmware.bin", &e), -ENOENT);
	CHECK(fsck_clean(&x));
	CHECK(!mdir_has(&x, "firmware"));

	fat_set_clock(&x.v, 2024, 5, 17, 13, 45, 30);
	x.s.flushes = x.s.writes = 0;
	x.s.read_calls = 0;
	x.s.read_sectors = x.s.written_sectors = 0;
	CHECK_EQ_INT(fat_write(&x.v, "firmware.bin", fw, sizeof(fw)), 0);
	CHECK(x.s.flushes >= 3); /* data, FAT, directory: each durable before the next */
	fprintf(stderr,
		"%s: writing %zu bytes cost %llu sectors read in %u calls, %llu written in %d "
		"calls\n",
		c->name, sizeof(fw), (unsigned long long)x.s.read_sectors, x.s.read_calls,
		(unsigned long long)x.s.written_sectors, x.s.writes);
	/* the data itself, plus a few FAT and directory sectors: no full-FAT scans */
	CHECK(x.s.written_sectors <= sizeof(fw) / 512 + 1 + 2 * 8 + 2);
	CHECK(x.s.read_sectors <= 64);
	CHECK(fat_reads(&x.v, "firmware.bin", fw, sizeof(fw)));
	remount(&x);
	CHECK(fat_reads(&x.v, "firmware.bin", fw, sizeof(fw)));
	CHECK(fsck_clean(&x));
	CHECK(mtools_reads(&x, "firmware.bin", fw, sizeof(fw)));
	CHECK(mdir_has(&x, "2024-05-17"));
	CHECK_EQ_INT(fat_write(&x.v, "FIRMWARE.BIN", fw, 10), -EEXIST);
	check_untouched(&x);
	check_fsinfo(&x);

	CHECK_EQ_INT(fat_rename(&x.v, "firmware.bin", "FIRMWARE.CUR"), 0);
	CHECK_EQ_INT(fat_find(&x.v, "firmware.bin", &e), -ENOENT);
	CHECK(fat_reads(&x.v, "firmware.cur", fw, sizeof(fw)));
	CHECK(fsck_clean(&x));
	CHECK(mtools_reads(&x, "FIRMWARE.CUR", fw, sizeof(fw)));
	CHECK(mdir_has(&x, "FIRMWARE CUR"));
	CHECK_EQ_INT(fat_rename(&x.v, "readme.txt", "FIRMWARE.CUR"), -EEXIST);

	long_name_cycle(&x);
	if (c->fat == 32 && strstr(c->mkfs, "-s 1"))
		many_files(&x);
	remount(&x);
	check_fsinfo(&x);
	check_untouched(&x);
	CHECK(fsck_clean(&x));
	vol_umount(&x);
	unlink(x.path);
}

/* ---- refusals ------------------------------------------------------------------------ */

static void
expect_refusal(const struct blockdev *dev, int err, const char *needle, const char *what)
{
	struct fat_vol v;
	int r = fat_mount(&v, dev);

	fprintf(stderr, "%-28s -> %d: %s\n", what, r, fat_error(&v));
	CHECK_EQ_INT(r, err);
	CHECK(strcasestr(fat_error(&v), needle) != NULL);
}

static uint8_t *
load(const char *path, size_t *size)
{
	uint8_t *d = NULL;

	CHECK_EQ_INT(read_file(path, 128u << 20, &d, size), 0);
	return d;
}

/* Blank, foreign, GPT and partition-table cases. */
static void
test_not_fat(void)
{
	static uint8_t disk[2 << 20];
	char p[200];
	struct memdev m;
	struct splitdev s;
	size_t n = 0;
	uint8_t *img;

	mem_init(&m, disk, sizeof(disk));
	expect_refusal(&m.dev, -EMEDIUMTYPE, "not formatted", "blank card");
	fill(disk, 512, 11);
	expect_refusal(&m.dev, -EMEDIUMTYPE, "neither", "random first sector");
	memset(disk, 0, 512);
	disk[510] = 0x55;
	disk[511] = 0xaa;
	expect_refusal(&m.dev, -EMEDIUMTYPE, "empty", "empty partition table");
	mbr_entry(disk, 0, 0x83, 2048, 2048);
	expect_refusal(&m.dev, -EMEDIUMTYPE, "types: 0x83", "Linux partition only");
	mbr_entry(disk, 1, 0x0c, 4096, 8192);
	expect_refusal(&m.dev, -EIO, "past the end", "partition past the end");
	memset(disk, 0, 512);
	memcpy(disk, "\xeb\x52\x90NTFS    \x00\x02\x08", 14);
	disk[510] = 0x55;
	disk[511] = 0xaa;
	expect_refusal(&m.dev, -EMEDIUMTYPE, "NTFS", "NTFS card");
	m.fail_reads = true;
	expect_refusal(&m.dev, -EIO, "cannot read", "read error");

	/* exFAT as exfatprogs makes it, whole card and as partition 2 (type 0x07) */
	snprintf(p, sizeof(p), "%s/exfat.img", tmp);
	CHECK_EQ_INT(sh("truncate -s 8M %s && mkfs.exfat %s", p, p), 0);
	img = load(p, &n);
	if (img && n >= 1024) {
		mem_init(&m, img, n);
		expect_refusal(&m.dev, -EMEDIUMTYPE, "exFAT", "exFAT card");
	}
	free(img);
	CHECK_EQ_INT(split_open(&s, p, 2048, 0x07), 0);
	expect_refusal(&s.dev, -EMEDIUMTYPE, "partition 2 is exFAT", "exFAT partition");
	split_close(&s);

	snprintf(p, sizeof(p), "%s/gpt.img", tmp);
	CHECK_EQ_INT(sh("truncate -s 8M %s && echo 'start=2048, type=EBD0A0A2-B9E5-4433-87C0-"
			"68B6B72699C7' | sfdisk -q --label gpt %s",
			p, p),
		     0);
	CHECK_EQ_INT(split_open(&s, p, 0, 0), 0);
	expect_refusal(&s.dev, -EMEDIUMTYPE, "GPT", "GPT card");
	split_close(&s);
}

struct poke16 {
	unsigned off;
	unsigned len;
	uint32_t val;
	int err;
	const char *needle;
};

/* One damaged BPB field at a time on mkfs.fat's volumes. */
static void
test_bad_bpb(const char *mkfs, const struct poke16 *cases, size_t n_cases)
{
	char p[200], what[64];
	struct memdev m;
	struct fat_vol v;
	size_t n = 0;
	uint8_t *img, save[512];

	snprintf(p, sizeof(p), "%s/bpb.img", tmp);
	CHECK_EQ_INT(sh("rm -f %s && truncate -s 40M %s && mkfs.fat %s %s", p, p, mkfs, p), 0);
	img = load(p, &n);
	if (!img)
		return;
	mem_init(&m, img, n);
	CHECK_EQ_INT(fat_mount(&v, &m.dev), 0);
	memcpy(save, img, 512);
	for (size_t i = 0; i < n_cases; i++) {
		const struct poke16 *c = &cases[i];

		for (unsigned b = 0; b < c->len; b++)
			img[c->off + b] = (uint8_t)(c->val >> (8 * b));
		snprintf(what, sizeof(what), "BPB byte %u = 0x%x", c->off, c->val);
		expect_refusal(&m.dev, c->err, c->needle, what);
		memcpy(img, save, 512);
	}
	/* no 0x55AA at 510, as on the RP2040's RPI-RP2 drive: still FAT */
	img[510] = img[511] = 0;
	CHECK_EQ_INT(fat_mount(&v, &m.dev), 0);
	free(img);
}

static const struct poke16 bad16[] = {
    {13, 1, 3, -EINVAL, "sectors per cluster"},
    {11, 2, 4096, -ENOTSUP, "4096-byte"},
    {14, 2, 0, -EINVAL, "reserved"},
    {16, 1, 0, -EINVAL, "FATs"},
    {21, 1, 0x12, -EINVAL, "media"},
    {32, 4, 0, -EINVAL, "invalid BPB"}, /* TotSec16 = 0 and TotSec32 = 0 */
    {22, 2, 1, -EINVAL, "too small"},
    {17, 2, 0, -EINVAL, "root directory"},
    {32, 4, 0x7fffffff, -EIO, "claims"}, /* more sectors than the image has */
};

static const struct poke16 bad32[] = {
    {44, 4, 0, -EINVAL, "root directory cluster"},
    {44, 4, 0x7fffffff, -EINVAL, "root directory cluster"},
    {32, 4, 0x7fffffff, -EIO, "claims"},
    {42, 2, 1, -EINVAL, "not FAT32"}, /* BPB_FSVer 0.1 */
    {40, 2, 0x8f, -EINVAL, "active FAT"},
};

/* Damaged chains fail the read with a message, never loop or read past the FAT. */
static void
test_bad_chain(void)
{
	char p[200];
	struct memdev m;
	struct fat_vol v;
	struct fat_dirent e;
	struct buf b = {0};
	size_t n = 0;
	uint8_t *img, *fat;

	snprintf(p, sizeof(p), "%s/chain.img", tmp);
	CHECK_EQ_INT(sh("rm -f %s && truncate -s 16M %s && mkfs.fat -F 16 %s && cd %s && "
			"mcopy -i %s gcode ::G.BIN",
			p, p, p, tmp, p),
		     0);
	img = load(p, &n);
	if (!img)
		return;
	mem_init(&m, img, n);
	CHECK_EQ_INT(fat_mount(&v, &m.dev), 0);
	CHECK_EQ_INT(fat_find(&v, "g.bin", &e), 0);
	fat = img + (size_t)v.fat_start * 512;
	fat[e.first_cluster * 2 + 2] = (uint8_t)(e.first_cluster + 1); /* 2nd links to 2nd */
	fat[e.first_cluster * 2 + 3] = (uint8_t)((e.first_cluster + 1) >> 8);
	CHECK_EQ_INT(fat_mount(&v, &m.dev), 0);
	CHECK_EQ_INT(fat_read(&v, &e, collect, &b), -EIO);
	CHECK(strstr(fat_error(&v), "loop") != NULL);
	free(b.p);
	b = (struct buf){0};
	fat[e.first_cluster * 2] = 0; /* the first cluster is marked free */
	fat[e.first_cluster * 2 + 1] = 0;
	CHECK_EQ_INT(fat_mount(&v, &m.dev), 0);
	CHECK_EQ_INT(fat_read(&v, &e, collect, &b), -EIO);
	CHECK(strstr(fat_error(&v), "damaged") != NULL);
	free(b.p);
	fprintf(stderr, "damaged chain -> %s\n", fat_error(&v));
	free(img);
}

/* ---- full volumes and interrupted writes ----------------------------------------------- */

static const struct cfg small12 = {"full-fat12", 12, "1440K", "-r 16", SUPER, 0};

static bool
image_sha(const char *path, uint8_t out[32])
{
	size_t n = 0;
	uint8_t *d = NULL;

	if (read_file(path, 64u << 20, &d, &n) < 0)
		return false;
	sha256(d, n, out);
	free(d);
	return true;
}

/* A write that does not fit changes nothing; a root that is full says so. */
static void
test_full(void)
{
	static uint8_t big[1100 * 1024];
	uint8_t before[32], after[32];
	struct vol x;
	char name[32];

	memset(&x, 0, sizeof(x));
	x.c = &small12;
	snprintf(x.path, sizeof(x.path), "%s/full.img", tmp);
	snprintf(x.mt, sizeof(x.mt), "%s", x.path);
	CHECK_EQ_INT(sh("rm -f %s && mkfs.fat -F 12 -r 16 -C %s 1440", x.path, x.path), 0);
	fill(big, sizeof(big), 77);
	CHECK_EQ_INT(vol_mount(&x), 0);
	CHECK_EQ_INT(fat_write(&x.v, "firmware.bin", big, sizeof(big)), 0);
	CHECK(image_sha(x.path, before));
	CHECK_EQ_INT(fat_write(&x.v, "second.bin", big, sizeof(big)), -ENOSPC);
	fprintf(stderr, "full card -> %s\n", fat_error(&x.v));
	CHECK(strstr(fat_error(&x.v), "full") != NULL);
	CHECK(image_sha(x.path, after));
	CHECK(memcmp(before, after, 32) == 0);
	CHECK(fsck_clean(&x));
	CHECK(mtools_reads(&x, "firmware.bin", big, sizeof(big)));
	CHECK_EQ_INT(fat_delete(&x.v, "firmware.bin"), 0);
	/* the fixed root fills up: one 8.3 entry per file */
	CHECK(x.v.root_entries >= 16 && x.v.root_entries <= 512);
	for (uint32_t i = 0; i < x.v.root_entries; i++) {
		snprintf(name, sizeof(name), "F%u.TXT", i);
		CHECK_EQ_INT(fat_write(&x.v, name, big, 100), 0);
	}
	CHECK_EQ_INT(fat_write(&x.v, "one-more.txt", big, 100), -ENOSPC);
	fprintf(stderr, "full root -> %s\n", fat_error(&x.v));
	CHECK(strstr(fat_error(&x.v), "root directory is full") != NULL);
	CHECK(fsck_clean(&x));
	vol_umount(&x);
}

/* fsck.fat's complaints after an interrupted write: lost clusters (and what follows from
 * them: FSInfo's count, FAT copies that differ) are allowed, nothing else. */
static bool
fsck_only_lost(const struct vol *x)
{
	static const char *const ok[] = {"fsck.fat ",
					 "Leaving filesystem unchanged",
					 " files, ",
					 "Reclaimed ",
					 "unused cluster",
					 "Free cluster summary",
					 "FATs differ",
					 "Using first FAT",
					 "Setting free cluster",
					 "  Auto-correcting",
					 "  Correcting"};
	char *line, *save = NULL;
	bool good = true;

	if (sh("fsck.fat -n %s", x->path) == 0)
		return true;
	fprintf(stderr, "%s", cmdout);
	for (line = strtok_r(cmdout, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		bool allowed = line[0] == '\0';

		for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
			allowed |= strstr(line, ok[i]) != NULL;
		if (!allowed) {
			fprintf(stderr, "%s: fsck.fat after a crash: %s\n", x->c->name, line);
			good = false;
		}
	}
	return good;
}

/* The write stops after its Nth sector write, for every N: the card never holds a
 * directory entry that points at unwritten or free clusters. */
static void
test_crash(const struct cfg *c, const char *what)
{
	static uint8_t data[200 * 1024 + 5];
	char base[300];
	struct vol x;
	int n;

	fill(data, sizeof(data), 1234);
	if (!make_volume(&x, c)) {
		CHECK(0);
		return;
	}
	snprintf(base, sizeof(base), "%s.base", x.path);
	CHECK_EQ_INT(sh("cp --sparse=always %s %s", x.path, base), 0);
	for (n = 0; n < 200; n++) {
		struct fat_dirent e;
		int r;

		CHECK_EQ_INT(sh("cp --sparse=always %s %s", base, x.path), 0);
		CHECK_EQ_INT(vol_mount(&x), 0);
		x.s.fail_after = n;
		if (strcmp(what, "write") == 0)
			r = fat_write(&x.v, "new firmware image.bin", data, sizeof(data));
		else
			r = fat_delete(&x.v, "Long File Name With Spaces.gcode");
		vol_umount(&x);
		CHECK(fsck_only_lost(&x));
		CHECK_EQ_INT(vol_mount(&x), 0);
		if (strcmp(what, "write") == 0 && fat_find(&x.v, "new firmware image.bin", &e) == 0)
			CHECK(fat_reads(&x.v, "new firmware image.bin", data, sizeof(data)));
		if (strcmp(what, "delete") == 0 &&
		    fat_find(&x.v, "Long File Name With Spaces.gcode", &e) == 0)
			CHECK(fat_reads(&x.v, e.name, gcode, sizeof(gcode)));
		vol_umount(&x);
		if (r == 0)
			break;
		CHECK_EQ_INT(r, -EIO);
	}
	fprintf(stderr, "%s %s: interrupted after each of %d sector writes\n", c->name, what, n);
	CHECK(n >= 3 && n < 200);
	unlink(base);
	unlink(x.path);
}

static const struct cfg cfgs[] = {
    {"fat12-floppy", 12, "1440K", "", SUPER, 0},
    {"fat12-mbr", 12, "8M", "", SPLIT_MBR, 0x01},
    {"fat16-sfdisk", 16, "64M", "", SFDISK_MBR, 0x0e},
    {"fat16-one-fat", 16, "128M", "-f 1", SUPER, 0},
    {"fat16-2g-mbr", 16, "2G", "", SPLIT_MBR, 0x06},
    {"fat32-256m", 32, "256M", "", SUPER, 0},
    {"fat32-sfdisk", 32, "300M", "", SFDISK_MBR, 0x0c},
    {"fat32-512b-clusters", 32, "64M", "-s 1", SUPER, 0},
    {"fat32-32g", 32, "32G", "", SUPER, 0},
    {"fat32-32g-mbr", 32, "32G", "", SPLIT_MBR, 0x0b},
};

static void
write_inputs(void)
{
	char p[200];

	fill(readme, sizeof(readme), 1);
	fill(gcode, sizeof(gcode), 2);
	fill(nested, sizeof(nested), 3);
	fill(leftover, sizeof(leftover), 4);
	fill(fw, sizeof(fw), 5);
	snprintf(p, sizeof(p), "%s/readme", tmp);
	CHECK_EQ_INT(write_bytes(p, readme, sizeof(readme)), 0);
	snprintf(p, sizeof(p), "%s/gcode", tmp);
	CHECK_EQ_INT(write_bytes(p, gcode, sizeof(gcode)), 0);
	snprintf(p, sizeof(p), "%s/nested", tmp);
	CHECK_EQ_INT(write_bytes(p, nested, sizeof(nested)), 0);
	snprintf(p, sizeof(p), "%s/leftover", tmp);
	CHECK_EQ_INT(write_bytes(p, leftover, sizeof(leftover)), 0);
	snprintf(p, sizeof(p), "%s/empty", tmp);
	CHECK_EQ_INT(write_bytes(p, NULL, 0), 0);
}

int
main(void)
{
	const char *t = getenv("TMPDIR");

	snprintf(tmp, sizeof(tmp), "%s/test_fat.XXXXXX", t && *t ? t : "/tmp");
	if (!mkdtemp(tmp)) {
		perror("mkdtemp");
		return 1;
	}
	setenv("MTOOLS_SKIP_CHECK", "1", 1);
	setenv("TZ", "UTC", 1);
	write_inputs();
	test_not_fat();
	test_bad_bpb("-F 16", bad16, sizeof(bad16) / sizeof(bad16[0]));
	test_bad_bpb("-F 32 -s 1", bad32, sizeof(bad32) / sizeof(bad32[0]));
	test_bad_chain();
	test_full();
	test_crash(&cfgs[3], "write");
	test_crash(&cfgs[7], "write");
	test_crash(&cfgs[0], "delete");
	for (size_t i = 0; i < sizeof(cfgs) / sizeof(cfgs[0]); i++)
		scenario(&cfgs[i]);
	sh("rm -rf %s", tmp);
	TEST_DONE();
}
