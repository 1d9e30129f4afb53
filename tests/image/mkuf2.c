/* SPDX-License-Identifier: GPL-2.0-or-later */
/* mkuf2: convert a raw binary into an RP2040 UF2 file (256-byte payloads, familyID present),
 * the layout Klipper's elf2uf2 writes; no Debian package does this conversion. Options
 * produce the broken files the validator must refuse.
 *
 * usage: mkuf2 [-f FAMILY] [-s N] [-d N] ADDRESS IN.bin OUT.uf2
 *   -f FAMILY  familyID to write (default 0xe48bff56, RP2040)
 *   -s N       leave block N out (numBlocks still counts it)
 *   -d N       give block N the blockNo of block N-1 (a duplicate and a gap) */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void
put_le32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
	p[2] = (uint8_t)(v >> 16);
	p[3] = (uint8_t)(v >> 24);
}

int
main(int argc, char **argv)
{
	uint32_t family = 0xE48BFF56u, addr;
	long skip = -1, dup = -1;
	uint8_t data[256], block[512];
	FILE *in, *out;
	long size, n_blocks;
	int c;

	while ((c = getopt(argc, argv, "f:s:d:")) != -1) {
		switch (c) {
		case 'f':
			family = (uint32_t)strtoul(optarg, NULL, 0);
			break;
		case 's':
			skip = strtol(optarg, NULL, 0);
			break;
		case 'd':
			dup = strtol(optarg, NULL, 0);
			break;
		default:
			return 2;
		}
	}
	if (argc - optind != 3) {
		fprintf(stderr, "usage: mkuf2 [-f FAMILY] [-s N] [-d N] ADDRESS IN.bin OUT.uf2\n");
		return 2;
	}
	addr = (uint32_t)strtoul(argv[optind], NULL, 0);
	in = fopen(argv[optind + 1], "rb");
	out = fopen(argv[optind + 2], "wb");
	if (!in || !out || fseek(in, 0, SEEK_END) != 0 || (size = ftell(in)) < 0)
		return 1;
	rewind(in);
	n_blocks = (size + 255) / 256;
	for (long i = 0; i < n_blocks; i++) {
		size_t got;

		memset(data, 0, sizeof(data));
		got = fread(data, 1, sizeof(data), in);
		if (got == 0)
			return 1;
		if (i == skip)
			continue;
		memset(block, 0, sizeof(block));
		put_le32(block, 0x0A324655u);
		put_le32(block + 4, 0x9E5D5157u);
		put_le32(block + 8, 0x00002000u); /* familyID present */
		put_le32(block + 12, addr + (uint32_t)i * 256u);
		put_le32(block + 16, 256);
		put_le32(block + 20, (uint32_t)(i == dup ? i - 1 : i));
		put_le32(block + 24, (uint32_t)n_blocks);
		put_le32(block + 28, family);
		memcpy(block + 32, data, sizeof(data));
		put_le32(block + 508, 0x0AB16F30u);
		if (fwrite(block, 1, sizeof(block), out) != sizeof(block))
			return 1;
	}
	fclose(in);
	return fclose(out) == 0 ? 0 : 1;
}
