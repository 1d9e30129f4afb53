/* SPDX-License-Identifier: GPL-2.0-or-later */
/* proto/fat: a FAT12/16/32 reader and writer for the root directory of an SD card or a USB
 * drive, on the sector interface of proto/blockdev.h. One writer serves every path that
 * drops a file on a card without mounting it: firmware.bin on a stock BTT SD bootloader's
 * card (through Klipper's SPI commands or Marlin's USB drive) and NEW.UF2 on the RP2040's
 * RPI-RP2 drive.
 *
 * Scope: the root directory only (every bootloader looks there and nowhere else), files up
 * to 4 GiB - 1, 512-byte logical sectors (what SD cards, Marlin's MSC and the RP2040 boot ROM
 * expose). The volume is a whole-card FAT ("superfloppy") or the first FAT partition of an
 * MBR. Every call returns 0 (or a count) or -errno, and on failure leaves a message for the
 * user in fat_error(). Memory is the struct fat_vol itself: no allocation. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto/blockdev.h"

/* A long name holds up to 255 UTF-16 units; as UTF-8 that is at most 3 bytes each. */
#define FAT_NAME_MAX (255u * 3u + 1u)
#define FAT_MSG_MAX 200u
/* Sectors read per blockdev call when a file is streamed (the read buffer of fat_vol). */
#define FAT_IO_SECTORS 8u

enum fat_type {
	FAT_TYPE_12 = 12,
	FAT_TYPE_16 = 16,
	FAT_TYPE_32 = 32,
};

/* One file of the root directory, as fat_find and fat_list report it. */
struct fat_dirent {
	char name[FAT_NAME_MAX]; /* the long name if it has a valid one, else the 8.3 name */
	char short_name[13];	 /* "FIRMWARE.CUR": the 8.3 name as stored (upper case) */
	uint8_t attr;		 /* FAT_ATTR_* */
	uint32_t size;		 /* bytes */
	uint32_t first_cluster;	 /* 0 for an empty file */
	uint32_t index;		 /* slot of the short entry in the root directory */
	uint32_t lfn_slots;	 /* long-name slots in front of it (0: a plain 8.3 entry) */
};

#define FAT_ATTR_READ_ONLY 0x01u
#define FAT_ATTR_HIDDEN 0x02u
#define FAT_ATTR_SYSTEM 0x04u
#define FAT_ATTR_VOLUME_ID 0x08u
#define FAT_ATTR_DIRECTORY 0x10u
#define FAT_ATTR_ARCHIVE 0x20u
#define FAT_ATTR_LFN 0x0fu

struct fat_vol {
	const struct blockdev *dev;
	enum fat_type type;
	uint64_t part_lba;	/* first sector of the volume on the device */
	uint32_t total_sectors; /* of the volume */
	uint32_t sec_per_clus;
	uint32_t fat_start;   /* volume-relative sector of the first FAT */
	uint32_t fat_sectors; /* of one FAT */
	uint32_t n_fats;
	uint32_t active_fat;		   /* FAT32 with mirroring off: the only FAT in use */
	bool mirror;			   /* write every FAT copy */
	uint32_t root_start;		   /* FAT12/16: volume-relative sector of the fixed root */
	uint32_t root_entries;		   /* FAT12/16: slots in the fixed root */
	uint32_t root_cluster;		   /* FAT32 */
	uint32_t data_start;		   /* volume-relative sector of cluster 2 */
	uint32_t clusters;		   /* data clusters: valid numbers are 2 .. clusters + 1 */
	uint32_t fsinfo_sector;		   /* FAT32: 0 when there is none or it is invalid */
	uint32_t free_count;		   /* FAT32 FSInfo hint; 0xffffffff when unknown */
	uint32_t next_free;		   /* where the next allocation starts looking */
	uint16_t dos_date, dos_time;	   /* time stamp for new entries (fat_set_clock) */
	uint32_t walk_index, walk_cluster; /* FAT32: the root's cluster number walk_index */
	char label[12];	   /* volume label from the boot sector, trailing blanks cut */
	bool data_written; /* every data write of the last fat_write succeeded (maybe unflushed) */
	/* two cached FAT sectors (a chain that crosses a sector boundary, a FAT12 entry that
	 * straddles one), written back to every FAT copy before the directory changes */
	uint32_t fat_cache_sector[2]; /* FAT-relative; UINT32_MAX when empty */
	bool fat_cache_dirty[2];
	unsigned fat_cache_cur; /* the slot used last; the other one is evicted next */
	uint8_t fat_cache[2][BLOCKDEV_SECTOR];
	/* one cached directory sector (also the boot sector and FSInfo at mount) */
	uint32_t sector_no; /* volume-relative; UINT32_MAX when empty */
	bool sector_dirty;
	uint8_t sector[BLOCKDEV_SECTOR];
	uint8_t io[FAT_IO_SECTORS * BLOCKDEV_SECTOR];
	char msg[FAT_MSG_MAX];
};

/* Reads the partition table and the boot sector, checks the BPB and finds the FAT type by
 * its cluster count (Microsoft's rule). Refuses exFAT, NTFS, GPT, unformatted and damaged
 * volumes and logical sectors other than 512 bytes: -EMEDIUMTYPE, -ENOTSUP, -EINVAL, -EIO. */
int fat_mount(struct fat_vol *v, const struct blockdev *dev);

/* Writes back the cached FAT sector and asks the device to make everything durable. */
int fat_flush(struct fat_vol *v);

/* The message of the last failure ("" after success). */
const char *fat_error(const struct fat_vol *v);

/* "FAT32": for messages. */
const char *fat_type_name(enum fat_type type);

/* Time stamp given to entries written from now on (the module reads no clock). */
void fat_set_clock(struct fat_vol *v, int year, int month, int day, int hour, int min, int sec);

/* Calls CB for every file and subdirectory of the root (not the label, not "." entries).
 * CB returns 0 to go on, anything else stops the walk and is returned. */
int fat_list(struct fat_vol *v, int (*cb)(void *ctx, const struct fat_dirent *e), void *ctx);

/* Finds NAME in the root, case-insensitively, by its long or its 8.3 name: 0 or -ENOENT. */
int fat_find(struct fat_vol *v, const char *name, struct fat_dirent *out);

/* Streams the file to SINK in chunks of up to sizeof(v->io) bytes. SINK returns 0 or a
 * negative value that stops the read and is returned. */
int fat_read(struct fat_vol *v, const struct fat_dirent *e,
	     int (*sink)(void *ctx, const uint8_t *data, size_t len), void *ctx);

/* Creates NAME in the root with DATA. -EEXIST when a file of that name exists, -ENOSPC when
 * the volume or the root directory is full, -EINVAL for a name FAT cannot store. Order of
 * writes: data clusters, FAT entries (every copy), the directory entry last, FSInfo, flush:
 * a crash leaves at worst lost clusters. A name that fits 8.3 in one case per part gets no
 * long-name entries (lower case through the NT case bits, as Windows and FatFs do). */
int fat_write(struct fat_vol *v, const char *name, const uint8_t *data, size_t len);

/* Deletes the file NAME (its long-name entries first, then the 8.3 entry, then its
 * clusters): 0 or -ENOENT. Refuses directories and the volume label (-EISDIR). */
int fat_delete(struct fat_vol *v, const char *name);

/* Renames OLD to NEW in the root (as the BTT bootloader turns firmware.bin into
 * FIRMWARE.CUR): -ENOENT, -EEXIST when NEW exists. A new 8.3 name is written in place in
 * the one 8.3 entry after the old long-name entries are gone; a new long name gets new
 * slots, found before anything changes and written after the old entries are deleted, so
 * a crash leaves lost clusters and never two entries sharing one chain. */
int fat_rename(struct fat_vol *v, const char *old_name, const char *new_name);

/* Marks deleted every long-name entry of the root that belongs to no file: its run is
 * broken, or the 8.3 entry after it is gone or has another checksum. Returns the number of
 * slots removed. */
int fat_clean_orphans(struct fat_vol *v);

/* Free space in bytes (scans the FAT; on FAT32 the whole FAT is read). */
int fat_free_bytes(struct fat_vol *v, uint64_t *bytes);

/* The 8.3 checksum stored in each long-name entry (Microsoft's FAT spec, section 7.2). */
uint8_t fat_lfn_checksum(const uint8_t short_name[11]);
