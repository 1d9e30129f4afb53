/* SPDX-License-Identifier: GPL-2.0-or-later */
/* proto/fat: FAT12/16/32 on a blockdev, written by hand from Microsoft's "FAT: General
 * Overview of On-Disk Format" (the FAT spec; section numbers below are of its 1.03 text).
 *
 * Why by hand: the card is not always a block device the kernel can mount. On the SD path
 * every sector travels through Klipper's SPI commands, and on Marlin's and the RP2040's USB
 * drives the daemon must not mount (no root, no udisks, no race with the automounter). What
 * Debian packages was considered and does not fit:
 *  - mtools (mcopy, mdel, mren): command-line tools on a file or device path, no library;
 *    the SPI card is no path, and they neither report nor clean orphaned long names.
 *  - libparted (libparted-fs-resize): FAT code only to resize, no file API.
 *  - libblkid: probes the type (read only).
 *  - dosfstools: mkfs/fsck programs, no library.
 *  - fusefat, libguestfs: need FUSE or a kernel appliance.
 *  - FatFs (ChaN), the embedded library Klipper's flash-sdcard.sh builds: not packaged.
 * The tests check every write with the real dosfstools and mtools.
 *
 * Crash rule: a sector write is the unit of atomicity. New data goes to free clusters, then
 * the FAT entries (every copy), then the directory entry; a deletion marks the entry deleted
 * before its clusters are freed. An interrupted write so leaves lost clusters at worst, never
 * an entry pointing at clusters that are free or shared. */
#include "proto/fat.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define DIRENT_SIZE 32u
#define SLOTS_PER_SECTOR (BLOCKDEV_SECTOR / DIRENT_SIZE)
/* FAT spec 6: a directory has at most 65536 entries (2 MiB); bounds every directory walk. */
#define DIR_MAX_SLOTS 65536u
#define LFN_CHARS 13u
#define LFN_MAX_SLOTS 20u /* 20 * 13 = 260 >= 255 characters */
#define LFN_LAST 0x40u
#define SLOT_DELETED 0xe5u
#define NT_LOWER_BASE 0x08u
#define NT_LOWER_EXT 0x10u
#define NO_SECTOR UINT32_MAX
#define FAT32_MASK 0x0fffffffu
/* FAT spec 3.5: the largest FAT32 cluster count that keeps clear of the reserved values */
#define FAT32_MAX_CLUSTERS 0x0ffffff5u

static uint16_t
le16(const uint8_t *p)
{
	return (uint16_t)(p[0] | (p[1] << 8));
}

static uint32_t
le32(const uint8_t *p)
{
	return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
	       ((uint32_t)p[3] << 24);
}

static void
put16(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static void
put32(uint8_t *p, uint32_t v)
{
	put16(p, v);
	put16(p + 2, v >> 16);
}

/* Records the first failure of a public call: the lowest level knows the most. */
__attribute__((format(printf, 3, 4))) static int
fail(struct fat_vol *v, int err, const char *fmt, ...)
{
	if (v->msg[0] == '\0') {
		va_list ap;

		va_start(ap, fmt);
		vsnprintf(v->msg, sizeof(v->msg), fmt, ap);
		va_end(ap);
	}
	return err;
}

const char *
fat_error(const struct fat_vol *v)
{
	return v->msg;
}

const char *
fat_type_name(enum fat_type type)
{
	switch (type) {
	case FAT_TYPE_12:
		return "FAT12";
	case FAT_TYPE_16:
		return "FAT16";
	case FAT_TYPE_32:
		return "FAT32";
	}
	return "FAT";
}

void
fat_set_clock(struct fat_vol *v, int year, int month, int day, int hour, int min, int sec)
{
	if (year < 1980 || year > 2107 || month < 1 || month > 12 || day < 1 || day > 31 ||
	    hour < 0 || hour > 23 || min < 0 || min > 59 || sec < 0 || sec > 59)
		return;
	v->dos_date = (uint16_t)(((year - 1980) << 9) | (month << 5) | day);
	v->dos_time = (uint16_t)((hour << 11) | (min << 5) | (sec / 2));
}

/* ---- sectors ---------------------------------------------------------------------- */

/* Bounds first: a damaged BPB or chain must never reach past the volume or the device. */
static int
io_check(struct fat_vol *v, uint32_t sec, uint32_t count)
{
	if ((uint64_t)sec + count > v->total_sectors || v->part_lba + sec + count > v->dev->sectors)
		return fail(v, -EIO, "sector %u is outside the volume (damaged file system?)", sec);
	return 0;
}

static int
io_failed(struct fat_vol *v, int r, const char *what, uint32_t sec)
{
	return fail(v, r < 0 ? r : -EIO, "cannot %s sector %llu of the card (error %d)", what,
		    (unsigned long long)v->part_lba + sec, r < 0 ? -r : r);
}

static int
vol_read(struct fat_vol *v, uint32_t sec, uint32_t count, uint8_t *buf)
{
	int r = io_check(v, sec, count);

	if (r < 0)
		return r;
	r = v->dev->read(v->dev->ctx, v->part_lba + sec, count, buf);
	return r == 0 ? 0 : io_failed(v, r, "read", sec);
}

static int
vol_write(struct fat_vol *v, uint32_t sec, uint32_t count, const uint8_t *buf)
{
	int r = io_check(v, sec, count);

	if (r < 0)
		return r;
	r = v->dev->write(v->dev->ctx, v->part_lba + sec, count, buf);
	return r == 0 ? 0 : io_failed(v, r, "write", sec);
}

/* The directory sector cache: loading another sector writes a dirty one back first, so the
 * slots of one operation reach the card in slot order. */
static int
sector_sync(struct fat_vol *v)
{
	int r;

	if (!v->sector_dirty)
		return 0;
	r = vol_write(v, v->sector_no, 1, v->sector);
	if (r == 0)
		v->sector_dirty = false;
	return r;
}

static int
sector_load(struct fat_vol *v, uint32_t sec)
{
	int r;

	if (v->sector_no == sec)
		return 0;
	r = sector_sync(v);
	if (r < 0)
		return r;
	v->sector_no = NO_SECTOR;
	r = vol_read(v, sec, 1, v->sector);
	if (r < 0)
		return r;
	v->sector_no = sec;
	return 0;
}

/* ---- the FAT ---------------------------------------------------------------------- */

static int
fat_slot_sync(struct fat_vol *v, unsigned slot)
{
	if (!v->fat_cache_dirty[slot])
		return 0;
	/* FAT spec 3.1 (BPB_ExtFlags): mirrored at runtime into every FAT, or only the active */
	for (uint32_t i = 0; i < v->n_fats; i++) {
		int r;

		if (!v->mirror && i != v->active_fat)
			continue;
		r = vol_write(v, v->fat_start + i * v->fat_sectors + v->fat_cache_sector[slot], 1,
			      v->fat_cache[slot]);
		if (r < 0)
			return r;
	}
	v->fat_cache_dirty[slot] = false;
	return 0;
}

static int
fat_cache_sync(struct fat_vol *v)
{
	unsigned lo = v->fat_cache_sector[0] < v->fat_cache_sector[1] ? 0 : 1;
	int r = fat_slot_sync(v, lo);

	return r < 0 ? r : fat_slot_sync(v, 1 - lo);
}

/* The byte at OFF of the FAT through the two-sector cache; v->fat_cache_cur is its slot. */
static int
fat_byte(struct fat_vol *v, uint32_t off, uint8_t **p)
{
	uint32_t sec = off / BLOCKDEV_SECTOR;
	unsigned slot;

	*p = v->fat_cache[0];
	if (sec >= v->fat_sectors)
		return fail(v, -EIO, "FAT entry past the end of the FAT");
	if (v->fat_cache_sector[0] == sec || v->fat_cache_sector[1] == sec) {
		slot = v->fat_cache_sector[0] == sec ? 0 : 1;
	} else {
		int r;

		slot = 1 - v->fat_cache_cur;
		r = fat_slot_sync(v, slot);
		if (r < 0)
			return r;
		v->fat_cache_sector[slot] = NO_SECTOR;
		r = vol_read(v, v->fat_start + v->active_fat * v->fat_sectors + sec, 1,
			     v->fat_cache[slot]);
		if (r < 0)
			return r;
		v->fat_cache_sector[slot] = sec;
	}
	v->fat_cache_cur = slot;
	*p = &v->fat_cache[slot][off % BLOCKDEV_SECTOR];
	return 0;
}

static void
fat_dirty(struct fat_vol *v)
{
	v->fat_cache_dirty[v->fat_cache_cur] = true;
}

/* FAT spec 4.1: a FAT12 entry is 12 bits at byte offset n + n/2 and may straddle sectors. */
static int
fat12_get(struct fat_vol *v, uint32_t clus, uint32_t *val)
{
	uint32_t off = clus + clus / 2;
	uint8_t *p;
	uint32_t lo;
	int r = fat_byte(v, off, &p);

	if (r < 0)
		return r;
	lo = *p;
	r = fat_byte(v, off + 1, &p);
	if (r < 0)
		return r;
	lo |= (uint32_t)*p << 8;
	*val = (clus & 1) ? lo >> 4 : lo & 0xfff;
	return 0;
}

static int
fat12_set(struct fat_vol *v, uint32_t clus, uint32_t val)
{
	uint32_t off = clus + clus / 2;
	uint8_t *p;
	int r = fat_byte(v, off, &p);

	if (r < 0)
		return r;
	*p = (clus & 1) ? (uint8_t)((*p & 0x0f) | ((val << 4) & 0xf0)) : (uint8_t)val;
	fat_dirty(v);
	r = fat_byte(v, off + 1, &p);
	if (r < 0)
		return r;
	*p = (clus & 1) ? (uint8_t)(val >> 4) : (uint8_t)((*p & 0xf0) | ((val >> 8) & 0x0f));
	fat_dirty(v);
	return 0;
}

static int
fat_get(struct fat_vol *v, uint32_t clus, uint32_t *val)
{
	uint8_t *p;
	int r;

	switch (v->type) {
	case FAT_TYPE_12:
		return fat12_get(v, clus, val);
	case FAT_TYPE_16:
		r = fat_byte(v, clus * 2, &p);
		if (r == 0)
			*val = le16(p);
		return r;
	case FAT_TYPE_32:
		r = fat_byte(v, clus * 4, &p);
		if (r == 0)
			*val = le32(p) & FAT32_MASK; /* the top 4 bits are reserved (4.1) */
		return r;
	}
	return -EINVAL;
}

static int
fat_set(struct fat_vol *v, uint32_t clus, uint32_t val)
{
	uint8_t *p;
	int r;

	switch (v->type) {
	case FAT_TYPE_12:
		return fat12_set(v, clus, val);
	case FAT_TYPE_16:
		r = fat_byte(v, clus * 2, &p);
		if (r == 0)
			put16(p, val);
		break;
	case FAT_TYPE_32:
		r = fat_byte(v, clus * 4, &p);
		if (r == 0)
			put32(p, (le32(p) & ~FAT32_MASK) | (val & FAT32_MASK));
		break;
	default:
		return -EINVAL;
	}
	if (r == 0)
		fat_dirty(v);
	return r;
}

static uint32_t
fat_eoc(const struct fat_vol *v)
{
	return v->type == FAT_TYPE_12 ? 0xfffu : v->type == FAT_TYPE_16 ? 0xffffu : FAT32_MASK;
}

/* 1 with the next cluster in *next, 0 at the end of the chain, -EIO on a damaged chain. */
static int
chain_next(struct fat_vol *v, uint32_t clus, uint32_t *next)
{
	uint32_t val = 0;
	int r = fat_get(v, clus, &val);

	if (r < 0)
		return r;
	if (val >= fat_eoc(v) - 7) /* 0x?FF8..0x?FFF end a chain (4.1) */
		return 0;
	if (val < 2 || val > v->clusters + 1)
		return fail(v, -EIO,
			    "damaged FAT: cluster %u points to %u (run fsck.fat on the card)", clus,
			    val);
	*next = val;
	return 1;
}

static uint32_t
clus_sector(const struct fat_vol *v, uint32_t clus)
{
	return v->data_start + (clus - 2) * v->sec_per_clus;
}

static uint32_t
clus_bytes(const struct fat_vol *v)
{
	return v->sec_per_clus * BLOCKDEV_SECTOR;
}

/* ---- mount ------------------------------------------------------------------------ */

/* What a boot sector that is not FAT says it is, for the refusal (exFAT spec 3.1.2). */
static int
refuse_foreign(struct fat_vol *v, const uint8_t *bs, const char *where)
{
	if (memcmp(bs + 3, "EXFAT   ", 8) == 0)
		return fail(v, -EMEDIUMTYPE,
			    "%s is exFAT, which the board's bootloader cannot read: format the "
			    "card FAT32 (mkfs.fat -F 32, or \"FAT32\" in the SD Card Formatter)",
			    where);
	if (memcmp(bs + 3, "NTFS    ", 8) == 0)
		return fail(v, -EMEDIUMTYPE, "%s is NTFS: format the card FAT32", where);
	return 0;
}

static bool
is_power_of_two(uint32_t x)
{
	return x != 0 && (x & (x - 1)) == 0;
}

/* FAT spec 3.1-3.3: the fields every FAT type has, checked before any arithmetic. The
 * 0x55AA signature at 510 is not required: the RP2040 boot ROM's RPI-RP2 volume has none
 * (pico-bootrom usb_device/virtual_disk.c builds a 64-byte boot sector and zeros), and
 * Linux's vfat mounts it the same way. */
static int
bpb_check(struct fat_vol *v, const uint8_t *bs, const char *where)
{
	uint32_t bps = le16(bs + 11), spc = bs[13], rsvd = le16(bs + 14), nfats = bs[16];
	uint32_t media = bs[21];

	if (!(bs[0] == 0xeb && bs[2] == 0x90) && bs[0] != 0xe9)
		return fail(v, -EMEDIUMTYPE, "%s has no FAT boot sector (jump instruction %02x)",
			    where, bs[0]);
	if (bps != BLOCKDEV_SECTOR)
		return fail(v,
			    bps >= 512 && bps <= 4096 && is_power_of_two(bps) ? -ENOTSUP : -EINVAL,
			    "%s: %u-byte logical sectors are not supported (format with "
			    "512-byte sectors)",
			    where, bps);
	if (!is_power_of_two(spc) || spc > 128)
		return fail(v, -EINVAL, "%s: invalid sectors per cluster %u", where, spc);
	if (rsvd == 0 || nfats == 0 || nfats > 16)
		return fail(v, -EINVAL, "%s: invalid BPB (%u reserved sectors, %u FATs)", where,
			    rsvd, nfats);
	if (media != 0xf0 && media < 0xf8)
		return fail(v, -EINVAL, "%s: invalid media byte 0x%02x", where, media);
	return 0;
}

/* FAT spec 3.5: the type follows from the cluster count alone. */
static int
bpb_geometry(struct fat_vol *v, const uint8_t *bs, uint64_t avail, const char *where)
{
	uint32_t rsvd = le16(bs + 14), nfats = bs[16], root_ent = le16(bs + 17);
	uint32_t tot = le16(bs + 19) ? le16(bs + 19) : le32(bs + 32);
	uint32_t fatsz = le16(bs + 22) ? le16(bs + 22) : le32(bs + 36);
	uint32_t root_secs = (root_ent * DIRENT_SIZE + BLOCKDEV_SECTOR - 1) / BLOCKDEV_SECTOR;
	uint64_t meta = rsvd + (uint64_t)nfats * fatsz + root_secs;
	uint64_t fat_bits;

	if (tot == 0 || fatsz == 0 || meta >= tot)
		return fail(v, -EINVAL, "%s: invalid BPB (%u sectors, FAT of %u sectors)", where,
			    tot, fatsz);
	if (tot > avail)
		return fail(v, -EIO,
			    "%s: the file system claims %u sectors but only %llu exist (wrong "
			    "partition table or a fake-capacity card)",
			    where, tot, (unsigned long long)avail);
	v->total_sectors = tot;
	v->sec_per_clus = bs[13];
	v->fat_start = rsvd;
	v->fat_sectors = fatsz;
	v->n_fats = nfats;
	v->root_start = (uint32_t)(rsvd + nfats * fatsz);
	v->root_entries = root_ent;
	v->data_start = (uint32_t)meta;
	v->clusters = (uint32_t)((tot - meta) / v->sec_per_clus);
	if (v->clusters < 4085)
		v->type = FAT_TYPE_12;
	else if (v->clusters < 65525)
		v->type = FAT_TYPE_16;
	else
		v->type = FAT_TYPE_32;
	if (v->clusters == 0 || v->clusters > FAT32_MAX_CLUSTERS)
		return fail(v, -EINVAL, "%s: invalid cluster count %u", where, v->clusters);
	fat_bits = (uint64_t)(v->clusters + 2) * (unsigned)v->type;
	if (fat_bits > (uint64_t)fatsz * BLOCKDEV_SECTOR * 8)
		return fail(v, -EINVAL, "%s: the FAT (%u sectors) is too small for %u clusters",
			    where, fatsz, v->clusters);
	return 0;
}

static void
read_label(struct fat_vol *v, const uint8_t *bs, unsigned off)
{
	size_t n = 11;

	v->label[0] = '\0';
	if (bs[off - 5] != 0x29) /* BS_BootSig: the serial and label fields are present */
		return;
	memcpy(v->label, bs + off, 11);
	while (n > 0 && v->label[n - 1] == ' ')
		n--;
	v->label[n] = '\0';
	for (size_t i = 0; i < n; i++)
		if ((uint8_t)v->label[i] < 0x20 || (uint8_t)v->label[i] > 0x7e)
			v->label[i] = '?';
}

/* FAT spec 3.3 (FAT32 BPB) and 5 (FSInfo): the root cluster, the FAT mirroring flags and
 * the free-space hints. An FSInfo that fails its signatures is ignored, never trusted. */
static int
bpb_fat32(struct fat_vol *v, const uint8_t *bs, const char *where)
{
	uint32_t ext = le16(bs + 40), fsinfo = le16(bs + 48), free_count, next;
	int r;

	if (le16(bs + 22) != 0 || v->root_entries != 0 || le16(bs + 42) != 0)
		return fail(v, -EINVAL, "%s: FAT32 by its size, but its BPB is not FAT32's", where);
	v->root_cluster = le32(bs + 44);
	v->walk_index = 0;
	v->walk_cluster = v->root_cluster;
	if (v->root_cluster < 2 || v->root_cluster > v->clusters + 1)
		return fail(v, -EINVAL, "%s: invalid root directory cluster %u", where,
			    v->root_cluster);
	v->mirror = (ext & 0x80) == 0;
	v->active_fat = v->mirror ? 0 : ext & 0x0f;
	if (v->active_fat >= v->n_fats)
		return fail(v, -EINVAL, "%s: active FAT %u of %u", where, v->active_fat, v->n_fats);
	read_label(v, bs, 71);
	if (fsinfo == 0 || fsinfo >= v->fat_start)
		return 0;
	r = sector_load(v, fsinfo);
	if (r < 0)
		return r;
	if (le32(v->sector) != 0x41615252 || le32(v->sector + 484) != 0x61417272 ||
	    le32(v->sector + 508) != 0xaa550000)
		return 0;
	v->fsinfo_sector = fsinfo;
	free_count = le32(v->sector + 488);
	next = le32(v->sector + 492);
	v->free_count = free_count <= v->clusters ? free_count : UINT32_MAX;
	v->next_free = next >= 2 && next <= v->clusters + 1 ? next : 2;
	return 0;
}

static int
bpb_parse(struct fat_vol *v, const uint8_t *bs, uint64_t avail, const char *where)
{
	int r = refuse_foreign(v, bs, where);

	if (r == 0)
		r = bpb_check(v, bs, where);
	if (r == 0)
		r = bpb_geometry(v, bs, avail, where);
	if (r < 0)
		return r;
	v->mirror = true;
	v->active_fat = 0;
	if (v->type == FAT_TYPE_32)
		return bpb_fat32(v, bs, where);
	if (le16(bs + 22) == 0 || v->root_entries == 0)
		return fail(v, -EINVAL, "%s: %s by its size, but its BPB has no %s", where,
			    fat_type_name(v->type),
			    v->root_entries ? "16-bit FAT size" : "root directory");
	read_label(v, bs, 43);
	return 0;
}

/* A boot sector starts with a jump and gives a plausible sector size; an MBR starts with
 * boot code or zeros. Linux's msdos partition code asks the same question. */
static bool
looks_like_boot_sector(const uint8_t *s)
{
	uint32_t bps = le16(s + 11);

	return ((s[0] == 0xeb && s[2] == 0x90) || s[0] == 0xe9) && bps >= 128 && bps <= 4096 &&
	       is_power_of_two(bps);
}

static bool
is_fat_partition(uint8_t type)
{
	/* FAT12, FAT16 <32M, FAT16, FAT32 CHS, FAT32 LBA, FAT16 LBA */
	return type == 0x01 || type == 0x04 || type == 0x06 || type == 0x0b || type == 0x0c ||
	       type == 0x0e;
}

static int
read_raw(struct fat_vol *v, uint64_t lba, uint8_t *buf)
{
	int r;

	if (lba >= v->dev->sectors)
		return fail(v, -EIO, "sector %llu is past the end of the card",
			    (unsigned long long)lba);
	r = v->dev->read(v->dev->ctx, lba, 1, buf);
	if (r < 0)
		return fail(v, r, "cannot read sector %llu of the card (error %d)",
			    (unsigned long long)lba, -r);
	return 0;
}

/* The first primary partition of a FAT type; extended partitions are not followed (cards
 * are formatted with one primary partition by every tool the users have). */
static int
mount_mbr(struct fat_vol *v)
{
	uint8_t mbr[64];
	char types[4 * 6] = "", where[16];
	int r;

	memcpy(mbr, v->io + 446, sizeof(mbr));
	for (unsigned i = 0; i < 4; i++) {
		if (mbr[(size_t)i * 16] != 0x00 && mbr[(size_t)i * 16] != 0x80)
			return fail(v, -EMEDIUMTYPE,
				    "the card has neither a FAT file system nor a valid partition "
				    "table: format it FAT32");
		if (mbr[(size_t)i * 16 + 4] == 0xee)
			return fail(v, -EMEDIUMTYPE,
				    "the card has a GPT partition table: repartition it with an "
				    "MBR (dos) table and one FAT32 partition");
	}
	for (unsigned i = 0; i < 4; i++) {
		const uint8_t *e = mbr + (size_t)i * 16;
		uint32_t lba = le32(e + 8), count = le32(e + 12);

		if (e[4] == 0 || count == 0 || lba == 0)
			continue;
		snprintf(where, sizeof(where), "partition %u", i + 1);
		if ((uint64_t)lba + count > v->dev->sectors)
			return fail(v, -EIO, "%s ends past the end of the card (%llu sectors)",
				    where, (unsigned long long)v->dev->sectors);
		if (is_fat_partition(e[4])) {
			r = read_raw(v, lba, v->io);
			if (r < 0)
				return r;
			v->part_lba = lba;
			return bpb_parse(v, v->io, count, where);
		}
		snprintf(types + strlen(types), sizeof(types) - strlen(types), " 0x%02x", e[4]);
		if (e[4] == 0x07) { /* exFAT and NTFS share the type: the boot sector tells */
			r = read_raw(v, lba, v->io);
			if (r == 0)
				r = refuse_foreign(v, v->io, where);
			if (r < 0)
				return r;
		}
	}
	if (types[0] == '\0')
		return fail(v, -EMEDIUMTYPE,
			    "the card's partition table is empty: create one FAT32 partition");
	return fail(v, -EMEDIUMTYPE,
		    "the card has no FAT partition (partition types:%s): "
		    "format it FAT32",
		    types);
}

static bool
all_zero(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i] != 0)
			return false;
	return true;
}

int
fat_mount(struct fat_vol *v, const struct blockdev *dev)
{
	int r;

	memset(v, 0, sizeof(*v));
	v->dev = dev;
	v->sector_no = NO_SECTOR;
	v->fat_cache_sector[0] = v->fat_cache_sector[1] = NO_SECTOR;
	v->free_count = UINT32_MAX;
	v->next_free = 2;
	fat_set_clock(v, 1980, 1, 1, 0, 0, 0);
	if (dev->sectors == 0)
		return fail(v, -EIO, "the card reports a size of 0 sectors (no card inserted?)");
	r = read_raw(v, 0, v->io);
	if (r < 0)
		return r;
	if (looks_like_boot_sector(v->io) || memcmp(v->io + 3, "EXFAT   ", 8) == 0 ||
	    memcmp(v->io + 3, "NTFS    ", 8) == 0)
		r = bpb_parse(v, v->io, dev->sectors, "the card");
	else if (v->io[510] != 0x55 || v->io[511] != 0xaa)
		r = fail(v, -EMEDIUMTYPE,
			 all_zero(v->io, BLOCKDEV_SECTOR)
			     ? "the card is not formatted (its first sector is blank): format "
			       "it FAT32"
			     : "the card has neither a partition table nor a FAT file system: "
			       "format it FAT32");
	else
		r = mount_mbr(v);
	if (r < 0) {
		v->dev = NULL;
		return r;
	}
	return 0;
}

int
fat_flush(struct fat_vol *v)
{
	int r;

	if (!v->dev)
		return -EINVAL;
	r = sector_sync(v);

	if (r == 0)
		r = fat_cache_sync(v);
	if (r == 0 && v->dev->flush) {
		r = v->dev->flush(v->dev->ctx);
		if (r < 0)
			return fail(v, r, "cannot flush the card (error %d)", -r);
	}
	return r;
}

/* ---- the root directory ----------------------------------------------------------- */

/* 1 with the volume sector of directory slot SLOT, 0 past the end of the root, -errno. The
 * FAT32 root is a chain: the walk resumes from the last cluster reached, so reading the
 * slots in order costs one FAT lookup per cluster. */
static int
slot_sector(struct fat_vol *v, uint32_t slot, uint32_t *sec)
{
	uint32_t per_clus = v->sec_per_clus * SLOTS_PER_SECTOR, k;

	if (slot >= DIR_MAX_SLOTS)
		return 0;
	if (v->type != FAT_TYPE_32) {
		if (slot >= v->root_entries)
			return 0;
		*sec = v->root_start + slot / SLOTS_PER_SECTOR;
		return 1;
	}
	k = slot / per_clus;
	if (k < v->walk_index) {
		v->walk_index = 0;
		v->walk_cluster = v->root_cluster;
	}
	while (v->walk_index < k) {
		uint32_t next = 0;
		int r = chain_next(v, v->walk_cluster, &next);

		if (r <= 0)
			return r;
		v->walk_cluster = next;
		v->walk_index++;
	}
	*sec = clus_sector(v, v->walk_cluster) + (slot % per_clus) / SLOTS_PER_SECTOR;
	return 1;
}

/* 1 with *ent pointing at the slot in the sector cache (valid until the next load), 0 past
 * the end of the root, -errno. */
static int
slot_get(struct fat_vol *v, uint32_t slot, uint8_t **ent)
{
	uint32_t sec;
	int r = slot_sector(v, slot, &sec);

	if (r <= 0)
		return r;
	r = sector_load(v, sec);
	if (r < 0)
		return r;
	*ent = v->sector + (size_t)(slot % SLOTS_PER_SECTOR) * DIRENT_SIZE;
	return 1;
}

/* Writes ENT into SLOT through the cache: slots reach the card in the order written. */
static int
slot_put(struct fat_vol *v, uint32_t slot, const uint8_t *ent)
{
	uint8_t *p;
	int r = slot_get(v, slot, &p);

	if (r == 0)
		return fail(v, -EIO, "directory slot %u is past the end of the root", slot);
	if (r < 0)
		return r;
	memcpy(p, ent, DIRENT_SIZE);
	v->sector_dirty = true;
	return 0;
}

static int
slot_delete(struct fat_vol *v, uint32_t slot)
{
	uint8_t *p;
	int r = slot_get(v, slot, &p);

	if (r <= 0)
		return r < 0 ? r : fail(v, -EIO, "directory slot %u is past the end", slot);
	p[0] = SLOT_DELETED;
	v->sector_dirty = true;
	return 0;
}

uint8_t
fat_lfn_checksum(const uint8_t short_name[11])
{
	uint8_t sum = 0;

	/* FAT spec 7.2: rotate right by one, add the next byte */
	for (unsigned i = 0; i < 11; i++)
		sum = (uint8_t)(((sum & 1) << 7) + (sum >> 1) + short_name[i]);
	return sum;
}

/* A run of long-name slots being collected in front of its 8.3 entry (FAT spec 7). */
struct lfn_run {
	uint32_t start, n;
	uint32_t next; /* ordinal expected next; 0 once the run is complete */
	uint8_t sum;
	uint16_t units[LFN_MAX_SLOTS * LFN_CHARS];
};

struct walk {
	int (*on_file)(struct fat_vol *v, struct walk *w);
	bool clean; /* mark orphaned long-name slots deleted */
	uint32_t orphans;
	const char *want;
	int (*cb)(void *ctx, const struct fat_dirent *e);
	void *ctx;
	struct fat_dirent *found;
	const uint8_t *raw;	 /* the 8.3 entry on_file is called for */
	const uint8_t *want_raw; /* short name searched by short_taken */
	struct lfn_run run;
	struct fat_dirent e;
};

static int
run_orphan(struct fat_vol *v, struct walk *w, uint32_t slot, uint32_t n)
{
	w->orphans += n;
	for (uint32_t i = 0; w->clean && i < n; i++) {
		int r = slot_delete(v, slot + i);

		if (r < 0)
			return r;
	}
	return 0;
}

static int
run_drop(struct fat_vol *v, struct walk *w)
{
	uint32_t n = w->run.n;

	w->run.n = 0;
	return n ? run_orphan(v, w, w->run.start, n) : 0;
}

static const uint8_t lfn_offsets[LFN_CHARS] = {1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30};

static void
run_store(struct walk *w, uint32_t seq, const uint8_t *ent)
{
	for (unsigned i = 0; i < LFN_CHARS; i++)
		w->run.units[(seq - 1) * LFN_CHARS + i] = le16(ent + lfn_offsets[i]);
}

static int
lfn_slot(struct fat_vol *v, struct walk *w, uint32_t slot, const uint8_t *ent)
{
	uint32_t seq = ent[0] & 0x1fu;
	int r;

	if (ent[0] & LFN_LAST) {
		r = run_drop(v, w);
		if (r < 0)
			return r;
		if (seq == 0 || seq > LFN_MAX_SLOTS || (ent[0] & 0xa0))
			return run_orphan(v, w, slot, 1);
		w->run.start = slot;
		w->run.n = 1;
		w->run.next = seq - 1;
		w->run.sum = ent[13];
		run_store(w, seq, ent);
		return 0;
	}
	if (w->run.n > 0 && w->run.next > 0 && seq == w->run.next && ent[13] == w->run.sum &&
	    (ent[0] & 0xe0) == 0) {
		run_store(w, seq, ent);
		w->run.n++;
		w->run.next--;
		return 0;
	}
	r = run_drop(v, w);
	return r < 0 ? r : run_orphan(v, w, slot, 1);
}

static size_t
utf8_put(char *out, size_t at, uint32_t cp)
{
	if (cp < 0x80) {
		out[at++] = (char)cp;
	} else if (cp < 0x800) {
		out[at++] = (char)(0xc0 | (cp >> 6));
		out[at++] = (char)(0x80 | (cp & 0x3f));
	} else if (cp < 0x10000) {
		out[at++] = (char)(0xe0 | (cp >> 12));
		out[at++] = (char)(0x80 | ((cp >> 6) & 0x3f));
		out[at++] = (char)(0x80 | (cp & 0x3f));
	} else {
		out[at++] = (char)(0xf0 | (cp >> 18));
		out[at++] = (char)(0x80 | ((cp >> 12) & 0x3f));
		out[at++] = (char)(0x80 | ((cp >> 6) & 0x3f));
		out[at++] = (char)(0x80 | (cp & 0x3f));
	}
	return at;
}

/* The run's UTF-16 name as UTF-8; false when it is empty or longer than 255 units. A lone
 * surrogate becomes '?'. */
static bool
run_name(const struct lfn_run *run, char *out)
{
	size_t at = 0, n = 0, max = (size_t)run->n * LFN_CHARS;

	while (n < max && run->units[n] != 0)
		n++;
	if (n == 0 || n > 255)
		return false;
	for (size_t i = 0; i < n; i++) {
		uint32_t u = run->units[i];

		if (u >= 0xd800 && u < 0xdc00 && i + 1 < n && run->units[i + 1] >= 0xdc00 &&
		    run->units[i + 1] < 0xe000) {
			u = 0x10000 + ((u - 0xd800) << 10) + (run->units[++i] - 0xdc00u);
		} else if (u >= 0xd800 && u < 0xe000) {
			u = '?';
		}
		at = utf8_put(out, at, u);
	}
	out[at] = '\0';
	return true;
}

static char
short_char(const uint8_t *ent, unsigned i, bool lower)
{
	uint8_t c = (i == 0 && ent[0] == 0x05) ? 0xe5 : ent[i]; /* 0x05 stands for 0xe5 */

	if (c < 0x20 || c > 0x7e)
		return '?';
	if (lower && c >= 'A' && c <= 'Z' && (ent[12] & (i < 8 ? NT_LOWER_BASE : NT_LOWER_EXT)))
		c = (uint8_t)(c + 'a' - 'A');
	return (char)c;
}

/* "FIRMWARE.CUR" from the 11 bytes, trailing blanks of each part cut; LOWER applies the NT
 * case bits of byte 12 (how Windows and FatFs store "firmware.bin" without a long name). */
static void
short_name(const uint8_t *ent, bool lower, char *out)
{
	unsigned base = 8, ext = 3;
	size_t at = 0;

	while (base > 0 && ent[base - 1] == ' ')
		base--;
	while (ext > 0 && ent[8 + ext - 1] == ' ')
		ext--;
	for (unsigned i = 0; i < base; i++)
		out[at++] = short_char(ent, i, lower);
	if (ext > 0)
		out[at++] = '.';
	for (unsigned i = 0; i < ext; i++)
		out[at++] = short_char(ent, 8 + i, lower);
	out[at] = '\0';
}

static int
short_slot(struct fat_vol *v, struct walk *w, uint32_t slot, const uint8_t *ent)
{
	struct fat_dirent *e = &w->e;
	bool valid = w->run.n > 0 && w->run.next == 0 && w->run.sum == fat_lfn_checksum(ent);
	int r;

	if (!valid || (ent[11] & FAT_ATTR_VOLUME_ID)) {
		r = run_drop(v, w);
		if (r < 0)
			return r;
		valid = false;
	}
	if (ent[11] & FAT_ATTR_VOLUME_ID)
		return 0;
	memset(e, 0, sizeof(*e));
	short_name(ent, false, e->short_name);
	if (!valid || !run_name(&w->run, e->name))
		short_name(ent, true, e->name);
	e->attr = ent[11];
	e->size = le32(ent + 28);
	e->first_cluster = ((uint32_t)le16(ent + 20) << 16) | le16(ent + 26);
	if (v->type != FAT_TYPE_32)
		e->first_cluster &= 0xffff; /* FstClusHI is reserved (0) on FAT12/16 */
	e->index = slot;
	e->lfn_slots = valid ? w->run.n : 0;
	w->run.n = 0;
	if (ent[0] == '.' && (ent[11] & FAT_ATTR_DIRECTORY))
		return 0;
	w->raw = ent;
	r = w->on_file ? w->on_file(v, w) : 0;
	w->raw = NULL;
	return r;
}

/* Walks the root: files go to w->on_file, orphaned long-name slots are counted (and
 * deleted when w->clean). Stops at the end marker, the end of the root, or when on_file
 * returns non-zero, which is returned. */
static int
dir_walk(struct fat_vol *v, struct walk *w)
{
	uint8_t ent[DIRENT_SIZE], *p;
	int r;

	for (uint32_t slot = 0;; slot++) {
		r = slot_get(v, slot, &p);
		if (r <= 0)
			break;
		memcpy(ent, p, sizeof(ent));
		if (ent[0] == 0x00)
			break;
		if (ent[0] == SLOT_DELETED)
			r = run_drop(v, w);
		else if ((ent[11] & 0x3f) == FAT_ATTR_LFN)
			r = lfn_slot(v, w, slot, ent);
		else
			r = short_slot(v, w, slot, ent);
		if (r != 0)
			return r;
	}
	if (r < 0)
		return r;
	return run_drop(v, w);
}

static int
ascii_casecmp(const char *a, const char *b)
{
	for (;; a++, b++) {
		int ca = (unsigned char)*a, cb = (unsigned char)*b;

		if (ca >= 'A' && ca <= 'Z')
			ca += 'a' - 'A';
		if (cb >= 'A' && cb <= 'Z')
			cb += 'a' - 'A';
		if (ca != cb || ca == 0)
			return ca - cb;
	}
}

static int
begin(struct fat_vol *v)
{
	v->msg[0] = '\0';
	return v->dev ? 0 : fail(v, -EINVAL, "no FAT volume mounted");
}

static int
list_file(struct fat_vol *v, struct walk *w)
{
	(void)v;
	return w->cb(w->ctx, &w->e);
}

int
fat_list(struct fat_vol *v, int (*cb)(void *ctx, const struct fat_dirent *e), void *ctx)
{
	struct walk w = {.on_file = list_file, .cb = cb, .ctx = ctx};
	int r = begin(v);

	return r < 0 ? r : dir_walk(v, &w);
}

static int
find_file(struct fat_vol *v, struct walk *w)
{
	(void)v;
	if (ascii_casecmp(w->e.name, w->want) != 0 && ascii_casecmp(w->e.short_name, w->want) != 0)
		return 0;
	*w->found = w->e;
	return 1;
}

/* 1 and *out when found, 0 when not, -errno */
static int
lookup(struct fat_vol *v, const char *name, struct fat_dirent *out)
{
	struct walk w = {.on_file = find_file, .want = name, .found = out};

	return dir_walk(v, &w);
}

int
fat_find(struct fat_vol *v, const char *name, struct fat_dirent *out)
{
	int r = begin(v);

	if (r == 0)
		r = lookup(v, name, out);
	if (r == 0)
		return fail(v, -ENOENT, "%s is not in the card's root directory", name);
	return r < 0 ? r : 0;
}

static int
read_run(struct fat_vol *v, uint32_t sec, uint32_t count, uint32_t *left,
	 int (*sink)(void *ctx, const uint8_t *data, size_t len), void *ctx)
{
	while (count > 0 && *left > 0) {
		uint32_t n = count < FAT_IO_SECTORS ? count : FAT_IO_SECTORS;
		uint32_t bytes = n * BLOCKDEV_SECTOR < *left ? n * BLOCKDEV_SECTOR : *left;
		int r;

		n = (bytes + BLOCKDEV_SECTOR - 1) / BLOCKDEV_SECTOR;
		r = vol_read(v, sec, n, v->io);
		if (r < 0)
			return r;
		r = sink(ctx, v->io, bytes);
		if (r != 0)
			return r;
		*left -= bytes;
		sec += n;
		count -= n;
	}
	return 0;
}

int
fat_read(struct fat_vol *v, const struct fat_dirent *e,
	 int (*sink)(void *ctx, const uint8_t *data, size_t len), void *ctx)
{
	/* Brent's cycle check: a chain that loops back is damage, never data */
	uint32_t left = e->size, clus = e->first_cluster, mark = clus, power = 1, lam = 0;
	int r = begin(v);

	if (r < 0)
		return r;
	if (e->attr & (FAT_ATTR_DIRECTORY | FAT_ATTR_VOLUME_ID))
		return fail(v, -EISDIR, "%s is a directory", e->name);
	if (left > 0 && (clus < 2 || clus > v->clusters + 1))
		return fail(v, -EIO, "damaged entry: %s starts at cluster %u (run fsck.fat)",
			    e->name, clus);
	while (left > 0) {
		r = read_run(v, clus_sector(v, clus), v->sec_per_clus, &left, sink, ctx);
		if (r != 0 || left == 0)
			return r;
		r = chain_next(v, clus, &clus);
		if (r < 0)
			return r;
		if (r == 1 && clus == mark)
			r = 2;
		if (r == 1 && ++lam == power) {
			mark = clus;
			power *= 2;
			lam = 0;
		}
		if (r != 1)
			return fail(v, -EIO,
				    "damaged file: the clusters of %s %s (run fsck.fat on the "
				    "card)",
				    e->name, r == 0 ? "end before its size" : "form a loop");
	}
	return 0;
}

/* ---- names ------------------------------------------------------------------------ */

/* A name as it will be written: the 8.3 entry, and the long name when one is needed. */
struct newname {
	uint8_t sname[11];
	uint8_t ntres;
	uint32_t lfn_slots;
	uint32_t n_units;
	uint16_t units[255];
};

/* FAT spec 6.1: the characters an 8.3 name may hold (besides letters and digits). */
static bool
short_ok(char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
	       (c != '\0' && strchr("!#$%&'()-@^_`{}~", c) != NULL);
}

static bool
part_case(const char *s, size_t n, bool *lower)
{
	bool lo = false, up = false;

	for (size_t i = 0; i < n; i++) {
		if (!short_ok(s[i]))
			return false;
		lo |= s[i] >= 'a' && s[i] <= 'z';
		up |= s[i] >= 'A' && s[i] <= 'Z';
	}
	*lower = lo;
	return !(lo && up);
}

static char
upper(char c)
{
	return c >= 'a' && c <= 'z' ? (char)(c - 'a' + 'A') : c;
}

/* True when NAME is a valid 8.3 name with each part in one case: then the 8.3 entry holds
 * it exactly (with the NT case bits for lower case) and no long name is written. With
 * ANY_CASE, mixed case is accepted too (the long name then keeps the case). */
static bool
fits_83(const char *name, bool any_case, struct newname *nn)
{
	const char *dot = strchr(name, '.');
	size_t len = strlen(name), base = dot ? (size_t)(dot - name) : len;
	size_t ext = dot ? len - base - 1 : 0;
	bool lb = false, le = false;

	if (base == 0 || base > 8 || ext > 3 || (dot && (ext == 0 || strchr(dot + 1, '.'))))
		return false;
	if (!part_case(name, base, &lb) && !any_case)
		return false;
	if (!part_case(name + base + 1, ext, &le) && !any_case)
		return false;
	for (size_t i = 0; i < len; i++)
		if (!short_ok(name[i]) && name[i] != '.')
			return false;
	memset(nn->sname, ' ', sizeof(nn->sname));
	for (size_t i = 0; i < base; i++)
		nn->sname[i] = (uint8_t)upper(name[i]);
	for (size_t i = 0; i < ext; i++)
		nn->sname[8 + i] = (uint8_t)upper(name[base + 1 + i]);
	nn->ntres = (uint8_t)((lb ? NT_LOWER_BASE : 0) | (le ? NT_LOWER_EXT : 0));
	return true;
}

/* FAT spec 6.2 (basis-name generation): upper case, blanks and extra periods dropped,
 * characters an 8.3 name cannot hold become '_'; base up to 8, extension up to 3. */
static void
basis_name(const char *name, uint8_t *sname)
{
	const char *dot = strrchr(name, '.');
	size_t b = 0, e = 0;

	while (*name == '.')
		name++;
	if (dot && dot < name)
		dot = NULL;
	memset(sname, ' ', 11);
	for (const char *p = name; *p && p != dot && b < 8; p++)
		if (*p != ' ' && *p != '.')
			sname[b++] = (uint8_t)(short_ok(*p) ? upper(*p) : '_');
	for (const char *p = dot ? dot + 1 : ""; *p && e < 3; p++)
		if (*p != ' ' && *p != '.')
			sname[8 + e++] = (uint8_t)(short_ok(*p) ? upper(*p) : '_');
	if (b == 0)
		sname[0] = '_';
}

static bool
name_valid(const char *name)
{
	size_t len = strlen(name);

	if (len == 0 || len > 255 || strcmp(name, ".") == 0 || strcmp(name, "..") == 0 ||
	    name[len - 1] == '.' || name[len - 1] == ' ')
		return false;
	for (size_t i = 0; i < len; i++)
		if (name[i] < 0x20 || name[i] > 0x7e || strchr("\"*/:<>?\\|", name[i]))
			return false;
	return true;
}

static int
short_taken_cb(struct fat_vol *v, struct walk *w)
{
	(void)v;
	return memcmp(w->raw, w->want_raw, 11) == 0;
}

/* 1 when another entry of the root has the 8.3 name SNAME */
static int
short_taken(struct fat_vol *v, const uint8_t *sname)
{
	struct walk w = {.on_file = short_taken_cb, .want_raw = sname};

	return dir_walk(v, &w);
}

/* FAT spec 6.3 (numeric tail): NAME~N with the first N that no other entry has. */
static int
numeric_tail(struct fat_vol *v, struct newname *nn)
{
	uint8_t basis[11];
	size_t b = 0;

	memcpy(basis, nn->sname, sizeof(basis));
	while (b < 8 && basis[b] != ' ')
		b++;
	for (uint32_t n = 1; n < 1000000; n++) {
		char tail[8];
		int t = snprintf(tail, sizeof(tail), "~%u", n), r;
		size_t keep = b + (size_t)t > 8 ? 8 - (size_t)t : b;

		memcpy(nn->sname, basis, 8);
		memset(nn->sname + keep, ' ', 8 - keep);
		memcpy(nn->sname + keep, tail, (size_t)t);
		r = short_taken(v, nn->sname);
		if (r <= 0)
			return r;
	}
	return fail(v, -ENOSPC, "no free 8.3 name for this long name");
}

/* The entries for NAME: its 8.3 name (unique in the root) and its long name if needed. */
static int
name_build(struct fat_vol *v, const char *name, struct newname *nn)
{
	memset(nn, 0, sizeof(*nn));
	if (!name_valid(name))
		return fail(v, -EINVAL,
			    "\"%s\" cannot be a FAT file name (ASCII only, no \\/:*?\"<>|)", name);
	if (fits_83(name, false, nn))
		return 0;
	nn->n_units = (uint32_t)strlen(name);
	for (uint32_t i = 0; i < nn->n_units; i++)
		nn->units[i] = (uint8_t)name[i];
	nn->lfn_slots = (nn->n_units + LFN_CHARS - 1) / LFN_CHARS;
	nn->ntres = 0;
	if (fits_83(name, true, nn)) { /* mixed case: the upper-case 8.3 name, if free */
		int r = short_taken(v, nn->sname);

		nn->ntres = 0;
		if (r <= 0)
			return r;
	}
	basis_name(name, nn->sname);
	return numeric_tail(v, nn);
}

static void
make_lfn(const struct newname *nn, uint32_t seq, uint8_t sum, uint8_t *ent)
{
	memset(ent, 0, DIRENT_SIZE);
	ent[0] = (uint8_t)(seq | (seq == nn->lfn_slots ? LFN_LAST : 0));
	ent[11] = FAT_ATTR_LFN;
	ent[13] = sum;
	/* FAT spec 7.1: the name ends with 0x0000, the rest of the last slot is 0xffff */
	for (unsigned i = 0; i < LFN_CHARS; i++) {
		uint32_t at = (seq - 1) * LFN_CHARS + i;
		uint32_t u = at < nn->n_units ? nn->units[at] : at == nn->n_units ? 0 : 0xffff;

		put16(ent + lfn_offsets[i], u);
	}
}

static void
make_short(const struct fat_vol *v, const struct newname *nn, uint32_t clus, uint32_t size,
	   uint8_t *ent)
{
	memset(ent, 0, DIRENT_SIZE);
	memcpy(ent, nn->sname, 11);
	ent[11] = FAT_ATTR_ARCHIVE;
	ent[12] = nn->ntres;
	put16(ent + 14, v->dos_time);
	put16(ent + 16, v->dos_date);
	put16(ent + 18, v->dos_date);
	put16(ent + 20, clus >> 16);
	put16(ent + 22, v->dos_time);
	put16(ent + 24, v->dos_date);
	put16(ent + 26, clus & 0xffff);
	put32(ent + 28, size);
}

/* Writes so far reach the medium before any later one: a page-cached block device (or a
 * card's controller) may otherwise reorder them and undo the crash rule. */
static int
barrier(struct fat_vol *v)
{
	int r = v->dev->flush ? v->dev->flush(v->dev->ctx) : 0;

	return r < 0 ? fail(v, r, "cannot flush the card (error %d)", -r) : 0;
}

/* ---- allocation ------------------------------------------------------------------- */

/* Scans the FAT for NEED free clusters from next_free on, wrapping once; *have is the
 * number found (all free clusters when fewer than NEED exist). */
static int
count_free(struct fat_vol *v, uint32_t need, uint32_t *have)
{
	uint32_t clus = v->next_free, val = 0;

	*have = 0;
	for (uint32_t i = 0; i < v->clusters && *have < need; i++, clus++) {
		int r;

		if (clus > v->clusters + 1)
			clus = 2;
		r = fat_get(v, clus, &val);
		if (r < 0)
			return r;
		if (val == 0)
			(*have)++;
	}
	return 0;
}

int
fat_free_bytes(struct fat_vol *v, uint64_t *bytes)
{
	uint32_t have;
	int r = begin(v);

	if (r == 0)
		r = count_free(v, UINT32_MAX, &have);
	if (r == 0)
		*bytes = (uint64_t)have * clus_bytes(v);
	return r;
}

static int
need_space(struct fat_vol *v, const char *name, uint32_t need)
{
	uint32_t have;
	int r = count_free(v, need, &have);

	if (r < 0 || have >= need)
		return r;
	return fail(v, -ENOSPC,
		    "the card is full: %s needs %llu KiB, %llu KiB are free; delete files from "
		    "the card",
		    name, (unsigned long long)need * clus_bytes(v) / 1024,
		    (unsigned long long)have * clus_bytes(v) / 1024);
}

/* The next free cluster from *clus on (wrapping); the caller checked that enough exist. */
static int
take_free(struct fat_vol *v, uint32_t *clus)
{
	uint32_t c = *clus, val = 0;

	for (uint32_t i = 0; i < v->clusters; i++, c++) {
		int r;

		if (c < 2 || c > v->clusters + 1)
			c = 2;
		r = fat_get(v, c, &val);
		if (r < 0)
			return r;
		if (val == 0) {
			*clus = c;
			r = fat_set(v, c, fat_eoc(v));
			if (r == 0 && v->free_count != UINT32_MAX && v->free_count > 0)
				v->free_count--;
			v->next_free = c + 1 > v->clusters + 1 ? 2 : c + 1;
			return r;
		}
	}
	return fail(v, -ENOSPC, "the card is full");
}

static int
zero_cluster(struct fat_vol *v, uint32_t clus)
{
	uint32_t sec = clus_sector(v, clus);

	memset(v->io, 0, sizeof(v->io));
	for (uint32_t s = 0; s < v->sec_per_clus; s += FAT_IO_SECTORS) {
		uint32_t n =
		    v->sec_per_clus - s < FAT_IO_SECTORS ? v->sec_per_clus - s : FAT_IO_SECTORS;
		int r = vol_write(v, sec + s, n, v->io);

		if (r < 0)
			return r;
	}
	return 0;
}

/* FAT32: one more cluster for the root, zeroed before the FAT links it in. */
static int
root_extend(struct fat_vol *v)
{
	uint32_t last = v->root_cluster, next = 0, clus = v->next_free, n = 1;
	uint32_t max = DIR_MAX_SLOTS / (v->sec_per_clus * SLOTS_PER_SECTOR);
	int r;

	while ((r = chain_next(v, last, &next)) == 1) {
		last = next;
		if (++n >= max)
			return fail(v, -ENOSPC, "the root directory is full");
	}
	if (r < 0)
		return r;
	r = take_free(v, &clus);
	if (r == 0)
		r = zero_cluster(v, clus);
	if (r == 0)
		r = barrier(v);
	if (r == 0)
		r = fat_set(v, last, clus);
	if (r == 0)
		r = fat_cache_sync(v);
	return r;
}

/* 1 with N consecutive free slots at *first, 0 when the root has no such run; *tail is the
 * number of free slots at the end of the root (what an extension adds to). */
static int
find_slots(struct fat_vol *v, uint32_t n, uint32_t *first, uint32_t *tail)
{
	uint32_t run = 0, start = 0;
	uint8_t *p;

	for (uint32_t slot = 0;; slot++) {
		int r = slot_get(v, slot, &p);

		if (r < 0)
			return r;
		if (r == 0)
			break;
		if (p[0] == 0x00 || p[0] == SLOT_DELETED) {
			if (run++ == 0)
				start = slot;
			if (run == n) {
				*first = start;
				return 1;
			}
		} else {
			run = 0;
		}
	}
	*tail = run;
	return 0;
}

/* N free slots, extending a FAT32 root when needed: 0 with *first, or -ENOSPC. EXTRA is how
 * many clusters the caller will allocate after this (checked before the root grows). */
static int
get_slots(struct fat_vol *v, const char *name, uint32_t n, uint32_t extra, uint32_t *first)
{
	uint32_t tail = 0, per = v->sec_per_clus * SLOTS_PER_SECTOR, grow;
	int r = find_slots(v, n, first, &tail);

	if (r < 0)
		return r;
	if (r == 1)
		return need_space(v, name, extra);
	if (v->type != FAT_TYPE_32)
		return fail(v, -ENOSPC,
			    "the card's root directory is full (%u entries): delete files from "
			    "the card",
			    v->root_entries);
	grow = (n - tail + per - 1) / per;
	r = need_space(v, name, extra + grow);
	for (uint32_t i = 0; r == 0 && i < grow; i++)
		r = root_extend(v);
	if (r < 0)
		return r;
	r = find_slots(v, n, first, &tail);
	return r == 1 ? 0 : r < 0 ? r : fail(v, -EIO, "the root directory did not grow");
}

/* Data of clusters FIRST .. FIRST+COUNT-1 (contiguous) from DATA; a last partial sector
 * goes through the io buffer, zero-padded. Slack sectors of the last cluster stay as they
 * are: nothing reads past the size. */
static int
write_run(struct fat_vol *v, uint32_t first, uint32_t count, const uint8_t *data, size_t len)
{
	uint32_t sec = clus_sector(v, first);
	size_t full = len / BLOCKDEV_SECTOR, max = (size_t)count * v->sec_per_clus;

	if (full > max)
		full = max;
	for (size_t done = 0; done < full;) {
		uint32_t n = full - done > 128 ? 128 : (uint32_t)(full - done);
		int r = vol_write(v, sec + (uint32_t)done, n, data + done * BLOCKDEV_SECTOR);
		if (r < 0)
			return r;
		done += n;
	}
	if (full == max || len % BLOCKDEV_SECTOR == 0)
		return 0;
	memset(v->io, 0, BLOCKDEV_SECTOR);
	memcpy(v->io, data + full * BLOCKDEV_SECTOR, len % BLOCKDEV_SECTOR);
	return vol_write(v, sec + (uint32_t)full, 1, v->io);
}

/* Allocates and fills the chain of LEN bytes; the FAT reaches every copy before return. */
static int
write_chain(struct fat_vol *v, const uint8_t *data, size_t len, uint32_t *first)
{
	size_t cb = clus_bytes(v), need = (len + cb - 1) / cb, run_off = 0;
	uint32_t prev = 0, clus = v->next_free, run_start = 0, run_len = 0;
	int r = 0;

	*first = 0;
	for (size_t i = 0; i < need && r == 0; i++) {
		r = take_free(v, &clus);
		if (r == 0 && prev)
			r = fat_set(v, prev, clus);
		if (r < 0)
			break;
		if (!prev)
			*first = clus;
		if (run_len > 0 && clus != run_start + run_len) {
			r = write_run(v, run_start, run_len, data + run_off, len - run_off);
			run_off += (size_t)run_len * cb;
			run_len = 0;
		}
		if (run_len++ == 0)
			run_start = clus;
		prev = clus;
	}
	if (r == 0 && run_len > 0)
		r = write_run(v, run_start, run_len, data + run_off, len - run_off);
	v->data_written = r == 0;
	if (r == 0)
		r = barrier(v);
	if (r == 0)
		r = fat_cache_sync(v);
	if (r == 0)
		r = barrier(v);
	return r;
}

static int
write_entries(struct fat_vol *v, uint32_t first, const struct newname *nn, const uint8_t *sent)
{
	uint8_t ent[DIRENT_SIZE], sum = fat_lfn_checksum(sent);
	int r = 0;

	/* the long-name slots in order (highest ordinal first), the 8.3 entry last */
	for (uint32_t i = 0; i < nn->lfn_slots && r == 0; i++) {
		make_lfn(nn, nn->lfn_slots - i, sum, ent);
		r = slot_put(v, first + i, ent);
	}
	if (r == 0)
		r = slot_put(v, first + nn->lfn_slots, sent);
	if (r == 0)
		r = sector_sync(v);
	return r;
}

/* FAT spec 5: the FSInfo hints, rewritten after every change of the FAT. */
static int
fsinfo_update(struct fat_vol *v)
{
	int r;

	if (!v->fsinfo_sector)
		return 0;
	r = sector_load(v, v->fsinfo_sector);
	if (r < 0)
		return r;
	put32(v->sector + 488, v->free_count);
	put32(v->sector + 492, v->next_free);
	v->sector_dirty = true;
	return sector_sync(v);
}

static int
finish(struct fat_vol *v, int r)
{
	if (r == 0)
		r = fsinfo_update(v);
	if (r == 0)
		r = fat_flush(v);
	return r;
}

int
fat_write(struct fat_vol *v, const char *name, const uint8_t *data, size_t len)
{
	struct newname nn;
	struct fat_dirent old;
	uint32_t first_slot, first_clus;
	int r = begin(v);

	v->data_written = false;
	if (r < 0)
		return r;
	if (len > UINT32_MAX)
		return fail(v, -EFBIG, "%s is larger than FAT allows (4 GiB - 1)", name);
	r = name_build(v, name, &nn);
	if (r == 0)
		r = lookup(v, name, &old);
	if (r > 0)
		return fail(v, -EEXIST, "%s already exists on the card", name);
	if (r == 0)
		r = get_slots(v, name, nn.lfn_slots + 1,
			      (uint32_t)((len + clus_bytes(v) - 1) / clus_bytes(v)), &first_slot);
	if (r == 0)
		r = write_chain(v, data, len, &first_clus);
	if (r == 0) {
		uint8_t sent[DIRENT_SIZE];

		make_short(v, &nn, first_clus, (uint32_t)len, sent);
		r = write_entries(v, first_slot, &nn, sent);
	}
	return finish(v, r);
}

/* Frees the chain from CLUS. A damaged link stops the walk: the rest stays allocated (lost
 * clusters for fsck), never freed while something else may use it. */
static int
free_chain(struct fat_vol *v, uint32_t clus)
{
	for (uint32_t steps = 0; clus >= 2 && clus <= v->clusters + 1; steps++) {
		uint32_t next = 0;
		int r = chain_next(v, clus, &next);

		if (r < 0 || steps > v->clusters)
			return 0;
		r = fat_set(v, clus, 0);
		if (r < 0)
			return r;
		if (v->free_count != UINT32_MAX)
			v->free_count++;
		if (r == 0 && next == 0)
			break;
		clus = next;
	}
	return fat_cache_sync(v);
}

static int
delete_slots(struct fat_vol *v, uint32_t first, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++) {
		int r = slot_delete(v, first + i);

		if (r < 0)
			return r;
	}
	return sector_sync(v);
}

static int
find_regular(struct fat_vol *v, const char *name, struct fat_dirent *e)
{
	int r = lookup(v, name, e);

	if (r == 0)
		return fail(v, -ENOENT, "%s is not in the card's root directory", name);
	if (r > 0 && (e->attr & FAT_ATTR_DIRECTORY))
		return fail(v, -EISDIR, "%s is a directory", name);
	return r < 0 ? r : 0;
}

int
fat_delete(struct fat_vol *v, const char *name)
{
	struct fat_dirent e;
	int r = begin(v);

	if (r == 0)
		r = find_regular(v, name, &e);
	if (r == 0)
		r = delete_slots(v, e.index - e.lfn_slots, e.lfn_slots + 1);
	if (r == 0)
		r = barrier(v);
	if (r == 0)
		r = free_chain(v, e.first_cluster);
	return finish(v, r);
}

static int
rename_in_place(struct fat_vol *v, const struct fat_dirent *e, const struct newname *nn)
{
	uint8_t *p = NULL;
	int r = delete_slots(v, e->index - e->lfn_slots, e->lfn_slots);

	if (r == 0 && e->lfn_slots > 0)
		r = barrier(v);
	if (r < 0)
		return r;
	r = slot_get(v, e->index, &p);
	if (r <= 0 || !p)
		return r < 0 ? r : fail(v, -EIO, "the entry of %s moved", e->name);
	memcpy(p, nn->sname, 11);
	p[12] = (uint8_t)((p[12] & ~(NT_LOWER_BASE | NT_LOWER_EXT)) | nn->ntres);
	v->sector_dirty = true;
	return sector_sync(v);
}

static int
rename_moved(struct fat_vol *v, const struct fat_dirent *e, const struct newname *nn,
	     const char *name)
{
	uint8_t sent[DIRENT_SIZE], *p = NULL;
	uint32_t first = 0;
	int r = get_slots(v, name, nn->lfn_slots + 1, 0, &first);

	if (r < 0)
		return r;
	r = slot_get(v, e->index, &p);
	if (r <= 0 || !p)
		return r < 0 ? r : fail(v, -EIO, "the entry of %s moved", e->name);
	memcpy(sent, p, sizeof(sent));
	memcpy(sent, nn->sname, 11);
	sent[12] = (uint8_t)((sent[12] & ~(NT_LOWER_BASE | NT_LOWER_EXT)) | nn->ntres);
	/* the old entries go first: a crash in between loses the file's clusters to fsck, it
	 * never leaves two entries owning one chain */
	r = delete_slots(v, e->index - e->lfn_slots, e->lfn_slots + 1);
	if (r == 0)
		r = barrier(v);
	if (r == 0)
		r = write_entries(v, first, nn, sent);
	return r;
}

int
fat_rename(struct fat_vol *v, const char *old_name, const char *new_name)
{
	struct fat_dirent e = {0}, other = {0};
	struct newname nn = {0};
	int r = begin(v);

	if (r == 0)
		r = find_regular(v, old_name, &e);
	if (r == 0)
		r = lookup(v, new_name, &other);
	if (r > 0 && other.index != e.index)
		return fail(v, -EEXIST, "cannot rename %s: %s already exists", old_name, new_name);
	if (r >= 0)
		r = name_build(v, new_name, &nn);
	if (r == 0)
		r = nn.lfn_slots == 0 ? rename_in_place(v, &e, &nn)
				      : rename_moved(v, &e, &nn, new_name);
	return finish(v, r);
}

int
fat_clean_orphans(struct fat_vol *v)
{
	struct walk w = {.clean = true};
	int r = begin(v);

	if (r == 0)
		r = dir_walk(v, &w);
	if (r == 0)
		r = fat_flush(v);
	return r < 0 ? r : (int)w.orphans;
}
