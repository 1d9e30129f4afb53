/* SPDX-License-Identifier: GPL-2.0-or-later */
/* flash: simulated MCU flash with the catalog's erase geometry, NOR rules and datasheet timing.
 *
 * The simulators of every bootloader (Katapult, STM32 ROM DfuSe) write into one of these, so
 * tests can assert what really ended up in flash, how often each sector was erased and
 * whether the bootloader region survived; the boot model decides whether a board would run
 * the application it was given (protocols.md §7). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zlib.h>

#include "flash.h"
#include "util.h"

/* Typical datasheet figures, per family. The erase time of one unit is
 * erase_us_base + erase_us_per_kib * KiB; programming is linear in bytes.
 *
 * STM32F4 (DS8626 STM32F405/407 and DS10693 STM32F446, "Flash memory programming", x32
 * parallelism): word program 16 us typ; sector erase 16 KiB 250 ms, 64 KiB 550 ms, 128 KiB
 * 1 s typ. A base of 143 ms plus 6.7 ms/KiB fits all three within 4 %.
 * STM32H7 (DS12110 STM32H743, DS13313 STM32H723): 256-bit flash word program ~16 us typ,
 * 128 KiB sector erase ~1 s typ (x64), i.e. 32 words/KiB and ~7.8 ms/KiB.
 * STM32G0 (DS13560 STM32G0B1): double-word (64-bit) program 85 us typ, 2 KiB page erase
 * 22 ms typ.
 * STM32F1 (DS5792 STM32F103xC/D/E): half-word program 52.5 us typ (40-70), 2 KiB page erase
 * 20 ms (20-40).
 * LPC176x (LPC1769/68/67/66/65/64/63 datasheet, "Flash memory" characteristics): sector
 * erase 100 ms typ whatever the sector size, 256-byte program 1 ms typ.
 * RP2040 external QSPI flash (W25Q16JV datasheet): 4 KiB sector erase 45 ms typ, 256-byte
 * page program 0.4 ms typ. */
static const struct flash_timing family_timing[_CATALOG_FAMILY_MAX] = {
    [CATALOG_FAMILY_LPC176X] = {100000, 0, 4000, 1000},
    [CATALOG_FAMILY_STM32F1] = {0, 10000, 512 * 105 / 2, 1000},
    [CATALOG_FAMILY_STM32F4] = {142857, 6696, 256 * 16, 1000},
    [CATALOG_FAMILY_STM32G0] = {0, 11000, 128 * 85, 1000},
    [CATALOG_FAMILY_STM32H7] = {0, 7813, 32 * 16, 1000},
    [CATALOG_FAMILY_RP2040] = {45000, 0, 1600, 1000},
};

struct flash_timing
flash_family_timing(enum catalog_family family)
{
	struct flash_timing none = {0, 0, 0, 1000};

	if ((unsigned)family >= _CATALOG_FAMILY_MAX)
		return none;
	return family_timing[family];
}

static uint32_t
scale_us(const struct flash *f, uint64_t us)
{
	double d = (double)us * f->speed;

	if (d <= 0.0)
		return 0;
	if (d >= 4.0e9)
		return UINT32_MAX;
	return (uint32_t)(d + 0.5);
}

struct flash *
flash_new(const struct catalog_mcu *mcu, double speed)
{
	struct flash *f = xnew(struct flash);
	uint32_t addr, end, start, size, n = 0, cap = 16;

	pthread_mutex_init(&f->lock, NULL);
	f->mcu = mcu;
	f->base = mcu->flash_base;
	f->size = mcu->flash_size;
	f->speed = speed < 0.0 ? 0.0 : speed;
	f->timing = flash_family_timing(mcu->family);
	f->bytes = xmalloc(f->size);
	memset(f->bytes, 0xff, f->size);

	/* The catalog is the one source of the erase geometry: walk it unit by unit. */
	f->sector_start = xnew_array(uint32_t, cap);
	f->sector_size = xnew_array(uint32_t, cap);
	end = f->base + f->size;
	for (addr = f->base; addr < end && addr >= f->base; addr = start + size) {
		if (catalog_mcu_sector(mcu, addr, &start, &size) < 0 || size == 0 ||
		    start != addr) {
			/* geometry gap: the rest is one unit, so every address still erases */
			start = addr;
			size = end - addr;
		}
		if (size > end - start)
			size = end - start;
		if (n == cap) {
			cap *= 2;
			f->sector_start = xreallocarray(f->sector_start, cap, sizeof(uint32_t));
			f->sector_size = xreallocarray(f->sector_size, cap, sizeof(uint32_t));
		}
		f->sector_start[n] = start;
		f->sector_size[n] = size;
		n++;
	}
	f->n_sectors = n;
	f->erase_count = xnew_array(uint32_t, n ? n : 1);
	return f;
}

struct flash *
flash_free(struct flash *f)
{
	if (!f)
		return NULL;
	pthread_mutex_destroy(&f->lock);
	free(f->bytes);
	free(f->erase_count);
	free(f->sector_start);
	free(f->sector_size);
	free(f);
	return NULL;
}

static bool
in_flash(const struct flash *f, uint32_t addr, size_t len)
{
	return addr >= f->base && addr - f->base <= f->size && len <= f->size - (addr - f->base);
}

/* Index of the unit containing addr, or -ERANGE; caller holds the lock. */
static int
sector_index(const struct flash *f, uint32_t addr)
{
	uint32_t lo = 0, hi = f->n_sectors;

	if (!in_flash(f, addr, 1))
		return -ERANGE;
	while (hi - lo > 1) {
		uint32_t mid = lo + (hi - lo) / 2;

		if (f->sector_start[mid] <= addr)
			lo = mid;
		else
			hi = mid;
	}
	return (int)lo;
}

int
flash_sector(struct flash *f, uint32_t addr, uint32_t *ret_index, uint32_t *ret_start,
	     uint32_t *ret_size)
{
	int i;

	pthread_mutex_lock(&f->lock);
	i = sector_index(f, addr);
	if (i >= 0) {
		if (ret_index)
			*ret_index = (uint32_t)i;
		if (ret_start)
			*ret_start = f->sector_start[i];
		if (ret_size)
			*ret_size = f->sector_size[i];
	}
	pthread_mutex_unlock(&f->lock);
	return i < 0 ? i : 0;
}

uint32_t
flash_erase_count(struct flash *f, uint32_t addr)
{
	uint32_t n = 0;
	int i;

	pthread_mutex_lock(&f->lock);
	i = sector_index(f, addr);
	if (i >= 0)
		n = f->erase_count[i];
	pthread_mutex_unlock(&f->lock);
	return n;
}

static uint32_t
erase_time(const struct flash *f, uint32_t size)
{
	uint64_t us = f->timing.erase_us_base + (uint64_t)f->timing.erase_us_per_kib * size / 1024;

	return scale_us(f, us);
}

int
flash_erase(struct flash *f, uint32_t addr, uint32_t *ret_busy_us)
{
	int i;

	pthread_mutex_lock(&f->lock);
	i = sector_index(f, addr);
	if (i >= 0) {
		memset(f->bytes + (f->sector_start[i] - f->base), 0xff, f->sector_size[i]);
		f->erase_count[i]++;
		f->total_erases++;
		if (ret_busy_us)
			*ret_busy_us = erase_time(f, f->sector_size[i]);
	}
	pthread_mutex_unlock(&f->lock);
	return i < 0 ? i : 0;
}

int
flash_erase_all(struct flash *f, uint32_t *ret_busy_us)
{
	uint64_t us = 0;

	pthread_mutex_lock(&f->lock);
	memset(f->bytes, 0xff, f->size);
	for (uint32_t i = 0; i < f->n_sectors; i++) {
		f->erase_count[i]++;
		f->total_erases++;
		us += erase_time(f, f->sector_size[i]);
	}
	pthread_mutex_unlock(&f->lock);
	if (ret_busy_us)
		*ret_busy_us = us > UINT32_MAX ? UINT32_MAX : (uint32_t)us;
	return 0;
}

uint32_t
flash_program_time(const struct flash *f, size_t len)
{
	uint64_t us = ((uint64_t)f->timing.program_us_per_kib * len + 1023) / 1024;

	return scale_us(f, us);
}

int
flash_program(struct flash *f, uint32_t addr, const uint8_t *data, size_t len,
	      uint32_t *ret_busy_us)
{
	int r = 0;

	pthread_mutex_lock(&f->lock);
	if (!in_flash(f, addr, len)) {
		r = -ERANGE;
		goto out;
	}
	/* NOR: programming only clears bits. Refuse the whole write, as the ECC parts (G0, H7)
	 * refuse a non-erased flash word, rather than leave a silently ANDed mix. */
	for (size_t i = 0; i < len; i++) {
		uint8_t old = f->bytes[addr - f->base + i];

		if ((old & data[i]) != data[i]) {
			r = -EIO;
			goto out;
		}
	}
	memcpy(f->bytes + (addr - f->base), data, len);
	f->total_programmed += len;
	if (ret_busy_us)
		*ret_busy_us = flash_program_time(f, len);
out:
	pthread_mutex_unlock(&f->lock);
	return r;
}

int
flash_read(struct flash *f, uint32_t addr, uint8_t *buf, size_t len)
{
	int r = 0;

	pthread_mutex_lock(&f->lock);
	if (in_flash(f, addr, len))
		memcpy(buf, f->bytes + (addr - f->base), len);
	else
		r = -ERANGE;
	pthread_mutex_unlock(&f->lock);
	return r;
}

int
flash_load(struct flash *f, uint32_t addr, const uint8_t *data, size_t len)
{
	int r = 0;

	pthread_mutex_lock(&f->lock);
	if (in_flash(f, addr, len))
		memcpy(f->bytes + (addr - f->base), data, len);
	else
		r = -ERANGE;
	pthread_mutex_unlock(&f->lock);
	return r;
}

bool
flash_equals(struct flash *f, uint32_t addr, const uint8_t *data, size_t len)
{
	bool same;

	pthread_mutex_lock(&f->lock);
	same = in_flash(f, addr, len) && memcmp(f->bytes + (addr - f->base), data, len) == 0;
	pthread_mutex_unlock(&f->lock);
	return same;
}

bool
flash_is_erased(struct flash *f, uint32_t addr, size_t len)
{
	bool erased = true;

	pthread_mutex_lock(&f->lock);
	if (!in_flash(f, addr, len))
		erased = false;
	for (size_t i = 0; erased && i < len; i++)
		erased = f->bytes[addr - f->base + i] == 0xff;
	pthread_mutex_unlock(&f->lock);
	return erased;
}

static uint32_t
word_at(const struct flash *f, uint32_t addr)
{
	const uint8_t *p = f->bytes + (addr - f->base);

	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/*
 * The boot model: what a Cortex-M does when a bootloader jumps to app_start (load SP and PC
 * from the vector table there, ARMv7-M ARM B1.5.5). Written from the core's point of view
 * and independent of daemon/image, so that it can disagree with the validator:
 *   1. the initial SP must lie in the MCU's RAM (the first push would fault otherwise, and a
 *      fault with a bad SP locks the core up);
 *   2. the reset vector must be a Thumb address inside the programmed application (flash
 *      from app_start up to the last byte that is not erased), and hold code, not erased
 *      0xFFFF (which faults at once);
 *   3. the code must be linked for where it runs: the firmware reads its data dictionary
 *      (a zlib stream, 78 DA) through an absolute pointer, so some aligned word of the
 *      application must be the dictionary's real address in this flash. A build linked
 *      for another address holds a pointer to where the dictionary would have been, and
 *      Klipper reads garbage there (its identify and constants fail: it never stays up).
 * An application without a dictionary (not Klipper) is judged by 1 and 2 alone.
 */
static bool
sp_valid(const struct flash *f, uint32_t sp)
{
	if (sp & 3)
		return false;
	/* §7.1: full-descending stack, so SP == end of RAM is the normal initial value */
	for (size_t i = 0; i < CATALOG_MAX_RAM && f->mcu->ram[i].size; i++) {
		const struct catalog_range *r = &f->mcu->ram[i];

		if (sp > r->base && sp - r->base <= r->size)
			return true;
	}
	return false;
}

/* One past the last programmed (not 0xFF) byte at or after start. */
static uint32_t
programmed_end(const struct flash *f, uint32_t start)
{
	size_t end = f->size;

	while (end > start - f->base && f->bytes[end - 1] == 0xff)
		end--;
	return f->base + (uint32_t)end;
}

/* Does a zlib stream start at off whose first bytes inflate to a JSON object? */
static bool
dict_at(const struct flash *f, size_t off)
{
	uint8_t out[16];
	z_stream zs;
	int r;

	if (off + 2 > f->size || f->bytes[off] != 0x78 || f->bytes[off + 1] != 0xda)
		return false;
	memset(&zs, 0, sizeof(zs));
	if (inflateInit(&zs) != Z_OK)
		return false;
	zs.next_in = f->bytes + off;
	zs.avail_in = (uInt)(f->size - off > 4096 ? 4096 : f->size - off);
	zs.next_out = out;
	zs.avail_out = sizeof(out);
	r = inflate(&zs, Z_SYNC_FLUSH);
	inflateEnd(&zs);
	return (r == Z_OK || r == Z_STREAM_END) && zs.total_out >= 2 && out[0] == '{';
}

static bool
app_runs_locked(const struct flash *f, uint32_t app_start)
{
	uint32_t sp, reset, end, dict = 0;
	bool have_dict = false;

	if (!in_flash(f, app_start, 8))
		return false;
	sp = word_at(f, app_start);
	reset = word_at(f, app_start + 4);
	end = programmed_end(f, app_start);
	if (!sp_valid(f, sp) || !(reset & 1))
		return false;
	reset &= ~1u;
	if (reset < app_start || reset + 2 > end || word_at(f, reset & ~3u) == 0xffffffffu)
		return false;
	for (uint32_t a = app_start; a + 2 <= end && !have_dict; a++)
		if (dict_at(f, a - f->base)) {
			dict = a;
			have_dict = true;
		}
	if (!have_dict)
		return true;
	for (uint32_t a = (app_start + 3) & ~3u; a + 4 <= end; a += 4)
		if (word_at(f, a) == dict)
			return true;
	return false;
}

bool
flash_app_valid(struct flash *f, uint32_t app_start)
{
	bool ok;

	pthread_mutex_lock(&f->lock);
	ok = app_runs_locked(f, app_start);
	pthread_mutex_unlock(&f->lock);
	return ok;
}

void
flash_busy_wait(uint32_t busy_us)
{
	struct timespec ts = {
	    .tv_sec = (time_t)(busy_us / 1000000),
	    .tv_nsec = (long)(busy_us % 1000000) * 1000,
	};

	while (busy_us && nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}
