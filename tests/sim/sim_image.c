/* SPDX-License-Identifier: GPL-2.0-or-later */
/* sim_image: Klipper-like application images for the simulated boards' factory flash and for
 * tests, and the boot-time version lookup in an image's embedded dictionary (§7.1). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>
#include <zlib.h>

#include "sim.h"
#include "sim_int.h"
#include "util.h"

#define VECTOR_WORDS 96 /* 16 system + 80 IRQ slots: every entry a valid handler (§7.1 4.) */
#define DICT_OFFSET 0x400

static uint32_t
clock_freq(const struct catalog_mcu *mcu)
{
	switch (mcu->family) {
	case CATALOG_FAMILY_LPC176X:
		return strstr(mcu->name, "1769") ? 120000000u : 100000000u;
	case CATALOG_FAMILY_STM32F1:
		return 72000000u;
	case CATALOG_FAMILY_STM32F4:
		return strstr(mcu->name, "f401") ? 84000000u : 180000000u;
	case CATALOG_FAMILY_STM32G0:
		return 64000000u;
	case CATALOG_FAMILY_STM32H7:
		return 400000000u;
	case CATALOG_FAMILY_RP2040:
		return 12000000u;
	case _CATALOG_FAMILY_MAX:
	default:
		return 0;
	}
}

void
sim_image_put_le32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
	p[2] = (uint8_t)(v >> 16);
	p[3] = (uint8_t)(v >> 24);
}

uint8_t *
sim_image_klipper(const struct catalog_mcu *mcu, uint32_t app_start, const char *version,
		  size_t size, size_t *ret_len)
{
	const struct catalog_range *ram = &mcu->ram[0];
	char *json;
	uint8_t *img, *z;
	uLongf zlen;
	uint32_t seed = 2166136261u;

	if (!version)
		version = "v0.12.0-sim";
	if (size < 1024)
		size = 1024;
	size = (size + 3) & ~(size_t)3;
	json = sim_klipper_dict_json(mcu, version, clock_freq(mcu));
	zlen = compressBound((uLong)strlen(json));
	z = xmalloc(zlen);
	if (compress2(z, &zlen, (const Bytef *)json, (uLong)strlen(json), 9) != Z_OK)
		abort();
	if (size < DICT_OFFSET + zlen + 64)
		size = (DICT_OFFSET + zlen + 64 + 3) & ~(size_t)3;
	img = xmalloc(size);
	/* code-like filler that differs between versions, never all 0xFF */
	for (const char *c = version; *c; c++)
		seed = (seed ^ (uint8_t)*c) * 16777619u;
	for (size_t i = 0; i < size; i++) {
		seed = seed * 1103515245u + 12345u;
		img[i] = (uint8_t)(seed >> 16);
		if (img[i] == 0xff)
			img[i] = 0x46;
	}
	/* §7.1: SP = top of the first RAM range, Thumb handlers inside the image */
	sim_image_put_le32(img, ram->base + ram->size);
	sim_image_put_le32(img + 4, app_start + 0x101);
	for (size_t i = 2; i < VECTOR_WORDS; i++)
		sim_image_put_le32(img + 4 * i, app_start + 0x141 + (uint32_t)(i % 8) * 4);
	memcpy(img + DICT_OFFSET, z, zlen);
	/* what the code holds, as a real build's literal pool does: the dictionary's absolute
	 * address (command_identify) and the vector table's (SCB->VTOR in armcm_main) */
	sim_image_put_le32(img + DICT_OFFSET - 8, app_start + DICT_OFFSET);
	sim_image_put_le32(img + DICT_OFFSET - 4, app_start);
	free(z);
	free(json);
	*ret_len = size;
	return img;
}

char *
sim_image_version(const uint8_t *img, size_t len)
{
	/* Klipper's dictionary is a zlib stream at best compression (78 DA) */
	for (size_t i = 0; i + 2 < len; i++) {
		z_stream zs;
		uint8_t out[8192];
		char *version = NULL;
		json_object *root, *v, *app;
		int r;

		if (img[i] != 0x78 || img[i + 1] != 0xda)
			continue;
		memset(&zs, 0, sizeof(zs));
		if (inflateInit(&zs) != Z_OK)
			return NULL;
		zs.next_in = (Bytef *)(uintptr_t)(img + i);
		zs.avail_in = (uInt)(len - i > 65536 ? 65536 : len - i);
		zs.next_out = out;
		zs.avail_out = sizeof(out) - 1;
		r = inflate(&zs, Z_FINISH);
		inflateEnd(&zs);
		if (r != Z_STREAM_END)
			continue;
		out[zs.total_out] = 0;
		root = json_tokener_parse((const char *)out);
		if (!root)
			continue;
		if (json_object_object_get_ex(root, "app", &app) &&
		    strcmp(json_object_get_string(app), "Klipper") == 0 &&
		    json_object_object_get_ex(root, "version", &v))
			version = xstrdup(json_object_get_string(v));
		json_object_put(root);
		if (version)
			return version;
	}
	return NULL;
}

uint32_t
sim_katapult_app_start(const struct catalog_mcu *mcu)
{
	/* §2.3 Katapult application start addresses */
	switch (mcu->family) {
	case CATALOG_FAMILY_STM32F4:
		return 0x08008000u;
	case CATALOG_FAMILY_STM32F1:
	case CATALOG_FAMILY_STM32G0:
		return 0x08002000u;
	case CATALOG_FAMILY_STM32H7:
		return 0x08020000u;
	case CATALOG_FAMILY_LPC176X:
		return 0x4000u;
	case CATALOG_FAMILY_RP2040:
		return 0x10004000u;
	case _CATALOG_FAMILY_MAX:
	default:
		return mcu->flash_base;
	}
}

/* The bootrom's boot2 check (RP2040 datasheet §2.8.1.3): CRC-32 with polynomial 0x04C11DB7,
 * initial value all ones, MSB first, no final inversion, over bytes 0-251, stored
 * little-endian in bytes 252-255. Written here from the datasheet, apart from the daemon's
 * proto/picoboot. */
uint32_t
sim_boot2_crc(const uint8_t *b2)
{
	uint32_t crc = 0xffffffffu;

	for (size_t i = 0; i < 252; i++)
		for (int bit = 7; bit >= 0; bit--) {
			uint32_t in = (uint32_t)(b2[i] >> bit) & 1u;

			crc = (crc >> 31 ^ in) ? crc << 1 ^ 0x04c11db7u : crc << 1;
		}
	return crc;
}

uint8_t *
sim_image_rp2040(const struct catalog_mcu *mcu, const char *version, size_t app_size,
		 bool good_boot2, size_t *ret_len)
{
	size_t alen = 0;
	uint8_t *app = sim_image_klipper(mcu, mcu->flash_base + 256, version, app_size, &alen);
	uint8_t *img = xmalloc(256 + alen);
	uint32_t crc;

	for (unsigned i = 0; i < 252; i++)
		img[i] = (uint8_t)(i * 37u + 11u);
	crc = sim_boot2_crc(img) ^ (good_boot2 ? 0u : 0x10u);
	for (unsigned i = 0; i < 4; i++)
		img[252 + i] = (uint8_t)(crc >> (8 * i));
	memcpy(img + 256, app, alen);
	free(app);
	*ret_len = 256 + alen;
	return img;
}

/* A bootloader for the area [flash_base, flash_base + size): a vector table (SP at the top of
 * RAM, reset handler inside the area), code-like filler, and on LPC176x the valid-user-code
 * checksum in word 7 (UM10360 §32.3.1.1) and no CRP word at 0x2FC.
 *
 * A Katapult build carries what real ones do (Arksine/katapult src/generic/armcm_canboot.c,
 * src/flashcmd.c): the "CanBoot!" signature right before the reset handler, CONFIG_MCU as a C
 * string, the application start as a literal; and, for the simulator only, a record the
 * board model reads to know where this build starts the application (SIM_KATAPULT_RECORD). */
uint8_t *
sim_image_bootloader(const struct catalog_mcu *mcu, bool katapult, uint32_t app_start, size_t size)
{
	const struct catalog_range *ram = &mcu->ram[0];
	uint32_t base = mcu->flash_base, seed = katapult ? 0x4b415450u : 0x42545453u;
	uint8_t *img = xmalloc(size);

	for (size_t i = 0; i < size; i++) {
		seed = seed * 1664525u + 1013904223u;
		img[i] = (uint8_t)(seed >> 24);
		if (img[i] == 0xff)
			img[i] = 0x5a;
	}
	sim_image_put_le32(img, ram->base + ram->size);
	sim_image_put_le32(img + 4, base + 0x109);
	for (size_t i = 2; i < 16; i++)
		sim_image_put_le32(img + 4 * i, base + 0x111);
	if (katapult) {
		memcpy(img + 0x100, "CanBoot!", 8);
		memcpy(img + SIM_KATAPULT_RECORD, "KATSIMv1", 8);
		sim_image_put_le32(img + SIM_KATAPULT_RECORD + 8, app_start);
		memcpy(img + 0x200, mcu->name, strlen(mcu->name) + 1);
		sim_image_put_le32(img + 0x280, app_start);
	}
	if (mcu->family == CATALOG_FAMILY_LPC176X) {
		uint32_t sum = 0;

		sim_image_put_le32(img + 0x2fc, 0);
		for (size_t i = 0; i < 7; i++)
			sum += (uint32_t)img[4 * i] | (uint32_t)img[4 * i + 1] << 8 |
			       (uint32_t)img[4 * i + 2] << 16 | (uint32_t)img[4 * i + 3] << 24;
		sim_image_put_le32(img + 0x1c, 0u - sum);
	}
	return img;
}
