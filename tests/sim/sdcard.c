/* SPDX-License-Identifier: GPL-2.0-or-later */
/* sdcard (simulator): SPI-mode SD card state machine over an image file (see sdcard.h).
 *
 * Timing on the wire, in bytes: one byte (Ncr) before every R1, two (Nac) before a read's
 * start token, four busy bytes after a write's data response. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sdcard.h"

#define BLOCK 512u
#define ACMD41_BUSY 2 /* ACMD41 answers "idle" this many times before "ready" */
#define OUT_MAX 1024

enum card_state {
	CARD_SD_MODE, /* native mode after power-up: SPI traffic is not answered */
	CARD_IDLE,    /* SPI mode, not initialised (R1 idle bit set) */
	CARD_READY,   /* initialised: data commands allowed */
};

struct sim_sdcard {
	int fd;
	bool sdhc;
	uint64_t sectors;
	enum card_state state;
	bool crc_on;
	bool app_cmd; /* last command was CMD55 */
	bool cmd8_seen;
	unsigned acmd41_count;
	/* command frame being received */
	uint8_t cmd[6];
	size_t cmd_len;
	/* bytes queued for MISO */
	uint8_t out[OUT_MAX];
	size_t out_head, out_len;
	/* write data phase */
	bool want_token;
	uint64_t write_lba;
	uint8_t data[BLOCK + 2];
	size_t data_len;
	bool receiving;
	struct sim_sdcard_stats stats;
};

/* CRC7 x^7 + x^3 + 1, bit by bit as the spec's figure 4-7 describes */
static uint8_t
crc7(const uint8_t *d, size_t n)
{
	uint8_t crc = 0;

	for (size_t i = 0; i < n; i++)
		for (int b = 7; b >= 0; b--) {
			unsigned in = ((unsigned)d[i] >> b) & 1u;
			unsigned fb = ((crc >> 6) & 1u) ^ in;

			crc = (uint8_t)((crc << 1) & 0x7f);
			if (fb)
				crc ^= 0x09;
		}
	return crc;
}

/* CRC16 CCITT x^16 + x^12 + x^5 + 1, init 0, bit by bit */
static uint16_t
crc16(const uint8_t *d, size_t n)
{
	uint16_t crc = 0;

	for (size_t i = 0; i < n; i++)
		for (int b = 7; b >= 0; b--) {
			unsigned fb = ((crc >> 15) & 1u) ^ (((unsigned)d[i] >> b) & 1u);

			crc = (uint16_t)(crc << 1);
			if (fb)
				crc ^= 0x1021;
		}
	return crc;
}

struct sim_sdcard *
sim_sdcard_new(const char *path, bool sdhc)
{
	struct sim_sdcard *c = calloc(1, sizeof(*c));
	struct stat st;
	uint64_t n;

	if (!c)
		return NULL;
	c->fd = open(path, O_RDWR | O_CLOEXEC);
	if (c->fd < 0 || fstat(c->fd, &st) < 0) {
		int e = errno;

		if (c->fd >= 0)
			close(c->fd);
		free(c);
		errno = e;
		return NULL;
	}
	n = (uint64_t)st.st_size / BLOCK;
	c->sdhc = sdhc;
	if (sdhc) {
		n &= ~(uint64_t)1023; /* C_SIZE counts 512 KiB units */
	} else {
		unsigned mult = 0;

		/* (C_SIZE + 1) << (MULT + 2) sectors with C_SIZE < 4096, MULT <= 7 */
		if (n > 4096ull << 9)
			n = 4096ull << 9;
		while (mult < 7 && n > (4096ull << (mult + 2)))
			mult++;
		n = (n >> (mult + 2)) << (mult + 2);
	}
	c->sectors = n;
	c->state = CARD_SD_MODE;
	return c;
}

void
sim_sdcard_free(struct sim_sdcard *c)
{
	if (!c)
		return;
	close(c->fd);
	free(c);
}

void
sim_sdcard_power_cycle(struct sim_sdcard *c)
{
	int fd = c->fd;
	bool sdhc = c->sdhc;
	uint64_t n = c->sectors;
	struct sim_sdcard_stats st = c->stats;

	memset(c, 0, sizeof(*c));
	c->fd = fd;
	c->sdhc = sdhc;
	c->sectors = n;
	c->stats = st;
	c->state = CARD_SD_MODE;
}

bool
sim_sdcard_spi_mode(const struct sim_sdcard *c)
{
	return c->state != CARD_SD_MODE;
}

uint64_t
sim_sdcard_sectors(const struct sim_sdcard *c)
{
	return c->sectors;
}

void
sim_sdcard_get_stats(const struct sim_sdcard *c, struct sim_sdcard_stats *ret)
{
	*ret = c->stats;
}

static void
emit(struct sim_sdcard *c, const uint8_t *b, size_t n)
{
	for (size_t i = 0; i < n && c->out_len < OUT_MAX; i++)
		c->out[(c->out_head + c->out_len++) % OUT_MAX] = b[i];
}

static void
emit1(struct sim_sdcard *c, uint8_t b)
{
	emit(c, &b, 1);
}

static uint8_t
r1_idle(const struct sim_sdcard *c)
{
	return c->state == CARD_IDLE ? 0x01 : 0x00;
}

static void
make_csd(const struct sim_sdcard *c, uint8_t csd[16])
{
	memset(csd, 0, 16);
	if (c->sdhc) {
		uint32_t cs = (uint32_t)(c->sectors / 1024 - 1);

		csd[0] = 0x40;
		csd[5] = 0x59; /* READ_BL_LEN 9 */
		csd[7] = (uint8_t)((cs >> 16) & 0x3f);
		csd[8] = (uint8_t)(cs >> 8);
		csd[9] = (uint8_t)cs;
	} else {
		unsigned mult = 0;
		uint32_t cs;

		while (mult < 7 && c->sectors > (4096ull << (mult + 2)))
			mult++;
		cs = (uint32_t)(c->sectors >> (mult + 2)) - 1;
		csd[5] = 0x59;
		csd[6] = (uint8_t)((cs >> 10) & 0x03);
		csd[7] = (uint8_t)(cs >> 2);
		csd[8] = (uint8_t)((cs & 3) << 6);
		csd[9] = (uint8_t)((mult >> 1) & 0x03);
		csd[10] = (uint8_t)((mult & 1) << 7);
	}
	csd[15] = (uint8_t)(crc7(csd, 15) << 1 | 1);
}

static void
emit_block(struct sim_sdcard *c, const uint8_t *d, size_t n)
{
	uint16_t crc = crc16(d, n);

	emit1(c, 0xff);
	emit1(c, 0xff); /* Nac */
	emit1(c, 0xfe);
	emit(c, d, n);
	emit1(c, (uint8_t)(crc >> 8));
	emit1(c, (uint8_t)crc);
}

/* Address check for CMD17/CMD24: 0 and the sector, or an R1 error bit. */
static uint8_t
address(const struct sim_sdcard *c, uint32_t arg, uint64_t *lba)
{
	if (!c->sdhc && arg % BLOCK)
		return 0x20; /* address error: misaligned */
	*lba = c->sdhc ? arg : arg / BLOCK;
	return *lba < c->sectors ? 0 : 0x40; /* parameter error: out of range */
}

static void
cmd_data(struct sim_sdcard *c, uint8_t idx, uint32_t arg)
{
	uint8_t buf[BLOCK], err;
	uint64_t lba = 0;

	if (c->state != CARD_READY) {
		emit1(c, 0x05); /* idle + illegal command */
		return;
	}
	switch (idx) {
	case 9: {
		uint8_t csd[16];

		make_csd(c, csd);
		emit1(c, 0x00);
		emit_block(c, csd, 16);
		return;
	}
	case 13:
		emit1(c, 0x00);
		emit1(c, 0x00);
		return;
	case 16:
		emit1(c, arg == BLOCK ? 0x00 : 0x40);
		return;
	case 17:
		err = address(c, arg, &lba);
		emit1(c, err);
		if (err)
			return;
		if (pread(c->fd, buf, BLOCK, (off_t)(lba * BLOCK)) != (ssize_t)BLOCK)
			memset(buf, 0, BLOCK);
		c->stats.blocks_read++;
		emit_block(c, buf, BLOCK);
		return;
	case 24:
		err = address(c, arg, &lba);
		emit1(c, err);
		if (!err) {
			c->want_token = true;
			c->write_lba = lba;
		}
		return;
	default:
		emit1(c, 0x04);
		return;
	}
}

static void
command(struct sim_sdcard *c)
{
	uint8_t idx = c->cmd[0] & 0x3f;
	uint32_t arg = (uint32_t)c->cmd[1] << 24 | (uint32_t)c->cmd[2] << 16 |
		       (uint32_t)c->cmd[3] << 8 | c->cmd[4];
	bool app = c->app_cmd;
	bool crc_ok = (c->cmd[5] >> 1) == crc7(c->cmd, 5) && (c->cmd[5] & 1);

	c->app_cmd = false;
	emit1(c, 0xff); /* Ncr */
	/* CMD0 and CMD8 are always CRC-checked; the rest after CMD59 turned checking on */
	if (!crc_ok && (idx == 0 || idx == 8 || c->crc_on)) {
		c->stats.crc_errors++;
		if (c->state != CARD_SD_MODE)
			emit1(c, (uint8_t)(r1_idle(c) | 0x08));
		return;
	}
	if (c->state == CARD_SD_MODE) {
		if (idx != 0)
			return; /* in SD mode nothing is said on the SPI lines */
		c->state = CARD_IDLE;
	}
	c->stats.commands++;
	switch (idx) {
	case 0:
		c->state = CARD_IDLE;
		c->crc_on = false;
		c->acmd41_count = 0;
		emit1(c, 0x01);
		return;
	case 8:
		c->cmd8_seen = true;
		emit1(c, r1_idle(c));
		emit1(c, 0);
		emit1(c, 0);
		emit1(c, (uint8_t)((arg >> 8) & 0x0f)); /* voltage accepted: echo */
		emit1(c, (uint8_t)arg);			/* check pattern echo */
		return;
	case 55:
		c->app_cmd = true;
		emit1(c, r1_idle(c));
		return;
	case 59:
		c->crc_on = arg & 1;
		emit1(c, r1_idle(c));
		return;
	case 58: {
		uint32_t ocr = 0x00ff8000u; /* 2.7-3.6 V */

		if (c->state == CARD_READY)
			ocr |= 1u << 31 | (c->sdhc ? 1u << 30 : 0);
		emit1(c, r1_idle(c));
		emit1(c, (uint8_t)(ocr >> 24));
		emit1(c, (uint8_t)(ocr >> 16));
		emit1(c, (uint8_t)(ocr >> 8));
		emit1(c, (uint8_t)ocr);
		return;
	}
	case 41:
		if (!app) {
			emit1(c, (uint8_t)(r1_idle(c) | 0x04));
			return;
		}
		/* an SDHC card stays busy unless the host says it supports high capacity */
		if (c->state == CARD_IDLE && ++c->acmd41_count > ACMD41_BUSY &&
		    (!c->sdhc || (arg & (1u << 30))))
			c->state = CARD_READY;
		emit1(c, r1_idle(c));
		return;
	default:
		cmd_data(c, idx, arg);
		return;
	}
}

/* A byte of a write's data phase: the token, then the block and its CRC. */
static void
data_byte(struct sim_sdcard *c, uint8_t b)
{
	if (!c->receiving) {
		if (b == 0xfe) {
			c->receiving = true;
			c->data_len = 0;
		}
		return;
	}
	c->data[c->data_len++] = b;
	if (c->data_len < sizeof(c->data))
		return;
	c->receiving = false;
	c->want_token = false;
	if (c->crc_on &&
	    crc16(c->data, BLOCK) != ((uint16_t)c->data[BLOCK] << 8 | c->data[BLOCK + 1])) {
		c->stats.crc_errors++;
		emit1(c, 0x0b); /* data rejected: CRC */
		return;
	}
	if (pwrite(c->fd, c->data, BLOCK, (off_t)(c->write_lba * BLOCK)) != (ssize_t)BLOCK) {
		emit1(c, 0x0d); /* write error */
		return;
	}
	c->stats.blocks_written++;
	emit1(c, 0x05);
	for (int i = 0; i < 4; i++)
		emit1(c, 0x00); /* busy */
}

void
sim_sdcard_transfer(struct sim_sdcard *c, const uint8_t *in, uint8_t *out, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		uint8_t b = in[i];
		bool talking = c->out_len > 0;

		if (talking) {
			out[i] = c->out[c->out_head];
			c->out_head = (c->out_head + 1) % OUT_MAX;
			c->out_len--;
		} else {
			out[i] = 0xff;
		}
		if (c->want_token) {
			/* while a response or busy is still going out, input is not data */
			if (!talking || c->receiving)
				data_byte(c, b);
			continue;
		}
		if (talking)
			continue; /* a card sending a response or block does not listen */
		if (c->cmd_len == 0 && (b & 0xc0) != 0x40)
			continue; /* not a start bit: idle clocking */
		c->cmd[c->cmd_len++] = b;
		if (c->cmd_len == sizeof(c->cmd)) {
			c->cmd_len = 0;
			command(c);
		}
	}
}

int
sim_sdcard_read_sectors(struct sim_sdcard *c, uint64_t lba, uint8_t *buf, size_t count)
{
	size_t len = count * BLOCK;

	if (lba > c->sectors || count > c->sectors - lba)
		return -ERANGE;
	return pread(c->fd, buf, len, (off_t)(lba * BLOCK)) == (ssize_t)len ? 0 : -EIO;
}

int
sim_sdcard_write_sectors(struct sim_sdcard *c, uint64_t lba, const uint8_t *buf, size_t count)
{
	size_t len = count * BLOCK;

	if (lba > c->sectors || count > c->sectors - lba)
		return -ERANGE;
	return pwrite(c->fd, buf, len, (off_t)(lba * BLOCK)) == (ssize_t)len ? 0 : -EIO;
}
