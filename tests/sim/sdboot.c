/* SPDX-License-Identifier: GPL-2.0-or-later */
/* sdboot (simulator): the stock SD bootloaders (see sdboot.h for what the real ones do).
 *
 * The directory lookup follows FatFs's dir_find() with long names enabled, with one
 * difference that matches what users of BTT's closed loaders report (BIGTREETECH-SKR-PRO
 * issue 106, "orphaned long names re-flash old firmware"; peers.md pain point 4): a run of
 * long-name entries spelling "firmware.bin" selects the 8.3 entry right after it without
 * checking the run's checksum against that entry. The rename then rewrites the 8.3 name in
 * place and leaves any long-name entries in front of it, so a card that got its firmware.bin
 * from a desktop with a long name ("Firmware.bin") keeps an orphaned "firmware.bin" run in
 * front of FIRMWARE.CUR: from then on every boot re-flashes FIRMWARE.CUR, and a new
 * firmware.bin further down the directory is never reached. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "flash.h"
#include "sdboot.h"
#include "sdcard.h"
#include "sim_int.h"
#include "util.h"

#define SEC 512u
#define DIRENT 32u
#define SLOT_DELETED 0xe5u
#define ATTR_LFN 0x0fu
#define ATTR_VOLUME 0x08u
#define ATTR_DIR 0x10u

struct vol {
	struct sim_sdcard *card;
	uint64_t base; /* first sector of the volume */
	int type;      /* 12, 16, 32 */
	uint32_t spc, n_fats, fat_start, fat_size, root_start, root_entries, root_clus;
	uint32_t data_start, clusters, fsinfo;
};

static uint32_t
le16(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8;
}

static uint32_t
le32(const uint8_t *p)
{
	return le16(p) | le16(p + 2) << 16;
}

static void
put_le32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

/* FatFs check_fs(): 0 = a FAT boot sector, 1 = a valid sector of something else (an MBR,
 * exFAT: FF_FS_EXFAT is off in these loaders), 2 = no 0xAA55 signature */
static int
check_fs(const uint8_t *s)
{
	if (s[510] != 0x55 || s[511] != 0xaa)
		return 2;
	if (memcmp(s + 3, "EXFAT   ", 8) == 0)
		return 1;
	if ((s[0] == 0xeb || s[0] == 0xe9 || s[0] == 0xe8) &&
	    (memcmp(s + 54, "FAT", 3) == 0 || memcmp(s + 82, "FAT32", 5) == 0))
		return 0;
	return 1;
}

/* FatFs find_volume(): the whole card, else the first MBR partition */
static int
mount(struct vol *v, struct sim_sdcard *card)
{
	uint8_t s[SEC];
	uint32_t bps, res, total, fatsz, root_secs, data_secs;
	int fmt;

	memset(v, 0, sizeof(*v));
	v->card = card;
	if (sim_sdcard_read_sectors(card, 0, s, 1) < 0)
		return -EIO;
	fmt = check_fs(s);
	if (fmt == 1 && s[0x1c2] != 0 && le32(s + 0x1c6) != 0) {
		v->base = le32(s + 0x1c6);
		if (sim_sdcard_read_sectors(card, v->base, s, 1) < 0)
			return -EIO;
		fmt = check_fs(s);
	}
	if (fmt != 0)
		return -EMEDIUMTYPE;
	bps = le16(s + 11);
	v->spc = s[13];
	res = le16(s + 14);
	v->n_fats = s[16];
	v->root_entries = le16(s + 17);
	total = le16(s + 19) ? le16(s + 19) : le32(s + 32);
	fatsz = le16(s + 22) ? le16(s + 22) : le32(s + 36);
	if (bps != SEC || v->spc == 0 || (v->spc & (v->spc - 1)) || res == 0 || v->n_fats == 0 ||
	    fatsz == 0 || (v->root_entries * DIRENT) % SEC)
		return -EMEDIUMTYPE;
	root_secs = v->root_entries * DIRENT / SEC;
	v->fat_start = res;
	v->fat_size = fatsz;
	v->data_start = res + v->n_fats * fatsz + root_secs;
	if (total <= v->data_start)
		return -EMEDIUMTYPE;
	data_secs = total - v->data_start;
	v->clusters = data_secs / v->spc;
	/* the FAT type comes from the cluster count alone (FatFs, Microsoft's rule) */
	v->type = v->clusters <= 0xff5 ? 12 : v->clusters <= 0xfff5 ? 16 : 32;
	if (v->type == 32) {
		if (v->root_entries != 0)
			return -EMEDIUMTYPE;
		v->root_clus = le32(s + 44);
		v->fsinfo = le16(s + 48);
	} else {
		if (v->root_entries == 0)
			return -EMEDIUMTYPE;
		v->root_start = res + v->n_fats * fatsz;
	}
	return 0;
}

static int
vread(struct vol *v, uint32_t sec, uint8_t *buf)
{
	return sim_sdcard_read_sectors(v->card, v->base + sec, buf, 1);
}

static int
vwrite(struct vol *v, uint32_t sec, const uint8_t *buf)
{
	return sim_sdcard_write_sectors(v->card, v->base + sec, buf, 1);
}

/* FAT entry of cluster cl, or 0xffffffff when it cannot be read */
static uint32_t
fat_get(struct vol *v, uint32_t cl)
{
	uint8_t s[2 * SEC];
	uint32_t off = v->type == 12 ? cl + cl / 2 : v->type == 16 ? cl * 2 : cl * 4;
	uint32_t sec = v->fat_start + off / SEC, val;

	off %= SEC;
	if (vread(v, sec, s) < 0 || (off + 4 > SEC && vread(v, sec + 1, s + SEC) < 0))
		return 0xffffffffu;
	if (v->type == 12) {
		val = le16(s + off);
		return cl & 1 ? val >> 4 : val & 0xfff;
	}
	return v->type == 16 ? le16(s + off) : le32(s + off) & 0x0fffffffu;
}

/* Sets the FAT entry of cl in every copy of the FAT. */
static int
fat_set(struct vol *v, uint32_t cl, uint32_t val)
{
	uint32_t off0 = v->type == 12 ? cl + cl / 2 : v->type == 16 ? cl * 2 : cl * 4;

	for (uint32_t f = 0; f < v->n_fats; f++) {
		uint8_t s[2 * SEC];
		uint32_t sec = v->fat_start + f * v->fat_size + off0 / SEC, off = off0 % SEC;
		bool two = off + 4 > SEC && v->type == 12;

		if (vread(v, sec, s) < 0 || (two && vread(v, sec + 1, s + SEC) < 0))
			return -EIO;
		if (v->type == 12) {
			uint32_t w = le16(s + off);

			w = cl & 1 ? (w & 0x000f) | (val << 4) : (w & 0xf000) | (val & 0xfff);
			s[off] = (uint8_t)w;
			s[off + 1] = (uint8_t)(w >> 8);
		} else if (v->type == 16) {
			s[off] = (uint8_t)val;
			s[off + 1] = (uint8_t)(val >> 8);
		} else {
			put_le32(s + off, (le32(s + off) & 0xf0000000u) | (val & 0x0fffffffu));
		}
		if (vwrite(v, sec, s) < 0 || (two && vwrite(v, sec + 1, s + SEC) < 0))
			return -EIO;
	}
	return 0;
}

static bool
valid_cluster(const struct vol *v, uint32_t cl)
{
	return cl >= 2 && cl < v->clusters + 2;
}

/* Volume-relative sector holding root slot i; 0 past the end of the root. */
static uint32_t
slot_sector(struct vol *v, uint32_t i)
{
	uint32_t per_clus, cl;

	if (v->type != 32)
		return i < v->root_entries ? v->root_start + i * DIRENT / SEC : 0;
	per_clus = v->spc * SEC / DIRENT;
	cl = v->root_clus;
	for (uint32_t k = i / per_clus; k > 0; k--) {
		cl = fat_get(v, cl);
		if (!valid_cluster(v, cl))
			return 0;
	}
	if (!valid_cluster(v, cl))
		return 0;
	return v->data_start + (cl - 2) * v->spc + (i % per_clus) * DIRENT / SEC;
}

static int
slot_io(struct vol *v, uint32_t i, uint8_t ent[DIRENT], bool write)
{
	uint8_t s[SEC];
	uint32_t sec = slot_sector(v, i);

	if (sec == 0)
		return -ENOENT;
	if (vread(v, sec, s) < 0)
		return -EIO;
	if (!write) {
		memcpy(ent, s + (i * DIRENT) % SEC, DIRENT);
		return 0;
	}
	memcpy(s + (i * DIRENT) % SEC, ent, DIRENT);
	return vwrite(v, sec, s);
}

/* The characters of one long-name slot (UCS-2; only ASCII matters here), at its place. */
static void
lfn_chars(const uint8_t *e, char *name, size_t max)
{
	static const uint8_t pos[13] = {1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30};
	size_t at = ((size_t)(e[0] & 0x1f) - 1) * 13;

	for (size_t k = 0; k < 13 && at + k + 1 < max; k++) {
		uint32_t c = le16(e + pos[k]);

		if (c == 0 || c == 0xffff)
			break;
		name[at + k] = c < 0x80 ? (char)c : '?';
	}
}

struct found {
	uint32_t slot;	     /* the 8.3 entry */
	uint32_t lfn_start;  /* first long-name slot in front of it (== slot: none) */
	uint8_t ent[DIRENT]; /* the 8.3 entry */
};

/* dir_find(): the first 8.3 entry named sfn11 ("FIRMWAREBIN"), or the 8.3 entry after a
 * long-name run spelling lname (case-insensitively; see the top of this file). */
static int
find(struct vol *v, const char *sfn11, const char *lname, struct found *ret)
{
	char name[256] = "";
	uint32_t run_start = UINT32_MAX;
	uint8_t e[DIRENT];

	for (uint32_t i = 0;; i++) {
		int r = slot_io(v, i, e, false);

		if (r == -ENOENT || (r == 0 && e[0] == 0))
			return -ENOENT; /* end of the root */
		if (r < 0)
			return r;
		if (e[0] == SLOT_DELETED) {
			run_start = UINT32_MAX;
			continue;
		}
		if (e[11] == ATTR_LFN) {
			if (e[0] & 0x40) { /* the last part comes first and opens a run */
				memset(name, 0, sizeof(name));
				run_start = i;
			}
			if (run_start != UINT32_MAX)
				lfn_chars(e, name, sizeof(name));
			continue;
		}
		if (!(e[11] & (ATTR_VOLUME | ATTR_DIR)) &&
		    ((run_start != UINT32_MAX && strcasecmp(name, lname) == 0) ||
		     memcmp(e, sfn11, 11) == 0)) {
			ret->slot = i;
			ret->lfn_start = run_start != UINT32_MAX ? run_start : i;
			memcpy(ret->ent, e, DIRENT);
			return 0;
		}
		run_start = UINT32_MAX;
	}
}

static uint32_t
first_cluster(const struct vol *v, const uint8_t *e)
{
	return le16(e + 26) | (v->type == 32 ? le16(e + 20) << 16 : 0);
}

/* f_unlink(): the entries become deleted slots, then the chain is freed. */
static int
unlink_found(struct vol *v, const struct found *f)
{
	uint32_t cl = first_cluster(v, f->ent);
	uint8_t e[DIRENT];

	for (uint32_t i = f->lfn_start; i <= f->slot; i++) {
		if (slot_io(v, i, e, false) < 0)
			return -EIO;
		e[0] = SLOT_DELETED;
		if (slot_io(v, i, e, true) < 0)
			return -EIO;
	}
	for (uint32_t n = 0; valid_cluster(v, cl) && n < v->clusters; n++) {
		uint32_t next = fat_get(v, cl);

		if (fat_set(v, cl, 0) < 0)
			return -EIO;
		cl = next;
	}
	if (v->type == 32 && v->fsinfo) {
		uint8_t s[SEC];

		/* the free count is no longer known: 0xFFFFFFFF is the FSInfo value for that */
		if (vread(v, v->fsinfo, s) == 0 && le32(s) == 0x41615252u) {
			put_le32(s + 488, 0xffffffffu);
			(void)vwrite(v, v->fsinfo, s);
		}
	}
	return 0;
}

/* Programs the file at the application start, erasing each unit when the write reaches it
 * (the loaders erase as they go: a cut leaves the new head, erased flash and old tail). */
static int
program(struct vol *v, const struct sdboot_env *env, const struct found *f,
	struct sdboot_result *ret)
{
	uint32_t size = le32(f->ent + 28), cl = first_cluster(v, f->ent), done = 0;
	uint32_t addr = env->app_start, erased_to = env->app_start;
	uint8_t s[SEC];

	while (done < size && valid_cluster(v, cl)) {
		for (uint32_t k = 0; k < v->spc && done < size; k++) {
			uint32_t n = size - done < SEC ? size - done : SEC, busy = 0, start, len;

			if (vread(v, v->data_start + (cl - 2) * v->spc + k, s) < 0)
				return -EIO;
			while (erased_to < addr + n) {
				if (flash_sector(env->flash, erased_to, NULL, &start, &len) < 0)
					return 0; /* the flash ends: the rest is not written */
				(void)flash_erase(env->flash, erased_to, &busy);
				ret->busy_us += busy;
				erased_to = start + len;
			}
			if (env->cut_at && addr + n > env->cut_at)
				return 1; /* erased, not yet written: the application is torn */
			if (flash_program(env->flash, addr, s, n, &busy) < 0)
				return 0;
			ret->busy_us += busy;
			ret->len += n;
			addr += n;
			done += n;
		}
		cl = fat_get(v, cl);
	}
	return 0;
}

/* Removes FIRMWARE.CUR (unless it is the entry just flashed) and renames the 8.3 name of
 * the flashed entry in place. */
static int
rename_cur(struct vol *v, const struct found *flashed)
{
	struct found cur;
	uint8_t e[DIRENT];
	int r = find(v, "FIRMWARECUR", "firmware.cur", &cur);

	if (r == 0 && cur.slot != flashed->slot && unlink_found(v, &cur) < 0)
		return -EIO;
	if (slot_io(v, flashed->slot, e, false) < 0)
		return -EIO;
	memcpy(e, "FIRMWARECUR", 11);
	e[12] = 0; /* the NT case bits: the on-card name is upper case */
	return slot_io(v, flashed->slot, e, true);
}

int
sdboot_run(const struct sdboot_env *env, struct sdboot_result *ret)
{
	struct vol v;
	struct found f;
	int r;

	memset(ret, 0, sizeof(*ret));
	if (!env->card) {
		ret->outcome = SDBOOT_NO_CARD;
		return 0;
	}
	if (env->card_unreadable) {
		ret->outcome = SDBOOT_UNREADABLE;
		return 0;
	}
	r = mount(&v, env->card);
	if (r == -EMEDIUMTYPE) {
		ret->outcome = SDBOOT_NO_FS;
		return 0;
	}
	ret->outcome = SDBOOT_UNREADABLE;
	if (r < 0)
		return r;
	r = find(&v, "FIRMWAREBIN", "firmware.bin", &f);
	if (r == -ENOENT) {
		ret->outcome = SDBOOT_NO_FILE;
		return 0;
	}
	if (r < 0)
		return r;
	ret->slot = f.slot;
	r = program(&v, env, &f, ret);
	if (r < 0)
		return r;
	if (r == 1) {
		ret->outcome = SDBOOT_POWER_CUT;
		return 0;
	}
	ret->outcome = SDBOOT_FLASHED;
	if (env->rename_fails)
		return 0;
	r = rename_cur(&v, &f);
	ret->renamed = r == 0;
	return r;
}

const char *
sdboot_outcome_name(enum sdboot_outcome o)
{
	switch (o) {
	case SDBOOT_NO_CARD:
		return "no-card";
	case SDBOOT_UNREADABLE:
		return "unreadable";
	case SDBOOT_NO_FS:
		return "no-fs";
	case SDBOOT_NO_FILE:
		return "no-file";
	case SDBOOT_FLASHED:
		return "flashed";
	case SDBOOT_POWER_CUT:
		return "power-cut";
	}
	return "?";
}

/* ---- the board model's hook --------------------------------------------------------- */

static bool
has_sd_loader(const struct sim_board *b)
{
	return b->bootloader == SIM_BL_STOCK && (b->model->paths & CATALOG_PATH_SD);
}

bool
sim_sdboot_boot(struct sim_board *b)
{
	const struct catalog_sd_bus *bus = catalog_sd_bus(b->model);
	struct sdboot_env env = {.card = b->kl.card, .flash = b->flash, .app_start = b->app_start};
	struct sdboot_result res;
	uint32_t threshold;

	if (!has_sd_loader(b))
		return false;
	if (b->sdboot_skip) { /* the loader ran already: this is the start after programming */
		b->sdboot_skip = false;
		return false;
	}
	b->sdboot_stats.runs++;
	/* an SDIO loader cannot talk to a card latched in SPI mode (protocols.md §4.4) */
	env.card_unreadable = env.card && bus && bus->sdio && sim_sdcard_spi_mode(env.card);
	if (b->fault.kind == SIM_FAULT_SD_NO_INIT && env.card) {
		env.card_unreadable = true;
		if (b->fault.count && --b->fault.count == 0)
			b->fault.kind = SIM_FAULT_NONE;
	}
	env.rename_fails = b->fault.kind == SIM_FAULT_SD_RENAME_FAIL;
	if (b->fault.kind == SIM_FAULT_UNPLUG_AT_BYTE) {
		/* `at` below the app start counts from it, as for Katapult's SEND_BLOCK */
		threshold = b->fault.at < b->app_start ? b->app_start + b->fault.at : b->fault.at;
		env.cut_at = threshold > b->app_start ? threshold : b->app_start + 1;
	}
	if (sdboot_run(&env, &res) < 0)
		b->sdboot_stats.errors++;
	b->sdboot_stats.last = res.outcome;
	switch (res.outcome) {
	case SDBOOT_FLASHED:
		b->sdboot_stats.flashes++;
		b->sdboot_stats.last_len = res.len;
		b->sdboot_stats.renames += res.renamed;
		b->app_torn = false;
		b->flicker_left = 0;
		/* the application starts once the flash is written */
		b->sdboot_skip = true;
		sim_board_schedule(b, SIM_ACT_BOOT, res.busy_us);
		return true;
	case SDBOOT_POWER_CUT:
		b->sdboot_stats.power_cuts++;
		b->app_torn = true;
		b->fault.kind = SIM_FAULT_NONE;
		/* power comes back after `count` ms (0: stays off) */
		if (b->fault.count)
			sim_board_schedule(b, SIM_ACT_BOOT, b->fault.count * 1000u);
		return true;
	case SDBOOT_NO_CARD:
	case SDBOOT_UNREADABLE:
	case SDBOOT_NO_FS:
	case SDBOOT_NO_FILE:
		break;
	}
	return false;
}

void
sim_board_sdboot_stats(struct sim_board *b, struct sim_sdboot_stats *ret)
{
	pthread_mutex_lock(&b->sim->lock);
	*ret = b->sdboot_stats;
	pthread_mutex_unlock(&b->sim->lock);
}

const char *
sim_board_sdcard_path(struct sim_board *b)
{
	const char *p;

	pthread_mutex_lock(&b->sim->lock);
	p = b->sdcard_path;
	pthread_mutex_unlock(&b->sim->lock);
	return p;
}

/* mkfs on the image, without the testbed's preload (the tools work on a plain file); its
 * report on stdout is dropped, errors stay on stderr */
static int
format(struct sim *s, const char *img, const char *fs)
{
	const char *type = strcmp(fs, "fat12") == 0   ? "-F 12"
			   : strcmp(fs, "fat16") == 0 ? "-F 16"
			   : strcmp(fs, "fat32") == 0 ? "-F 32"
						      : "";
	int r = strcmp(fs, "exfat") == 0
		    ? sim_sh(s, "exec >/dev/null; mkfs.exfat -L SD '%s'", img)
		    : sim_sh(s, "exec >/dev/null; mkfs.fat %s -n SD '%s'", type, img);

	if (r != 0)
		fprintf(stderr, "sim: formatting %s as %s failed (%d)\n", img, fs, r);
	return r == 0 ? 0 : -EIO;
}

int
sim_board_new_sdcard(struct sim_board *b, uint64_t bytes, const char *fs)
{
	char *img = xasprintf("%s/sdcard-%s.img", sim_root(b->sim), b->port);
	int fd = open(img, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644), r = 0;

	if (fd < 0 || ftruncate(fd, (off_t)bytes) < 0)
		r = -errno;
	if (fd >= 0)
		close(fd);
	if (r == 0 && strcmp(fs, "none") != 0)
		r = format(b->sim, img, fs);
	if (r == 0)
		r = sim_board_set_sdcard(b, img, bytes > (2ull << 30));
	free(img);
	return r;
}
