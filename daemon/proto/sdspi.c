/* SPDX-License-Identifier: GPL-2.0-or-later */
/* proto/sdspi: SD SPI-mode frames, responses, CRCs and the init sequence (see sdspi.h). */
#include <errno.h>
#include <string.h>

#include "proto/sdspi.h"

#define TRIES_CMD0 15	 /* spi_flash.py _check_command default tries */
#define TRIES_ACMD41 200 /* with ~10 ms pauses: the spec's 1 s initialisation timeout */
#define TRIES_DEFAULT 5

uint8_t
sdspi_crc7(const uint8_t *data, size_t len)
{
	uint8_t crc = 0;

	/* G(x) = x^7 + x^3 + 1, computed in the top 7 bits of a byte (calc_crc7) */
	for (size_t i = 0; i < len; i++) {
		crc ^= data[i];
		for (int b = 0; b < 8; b++)
			crc = (uint8_t)(crc & 0x80 ? (crc << 1) ^ (0x89 << 1) : crc << 1);
	}
	return crc >> 1;
}

uint16_t
sdspi_crc16(const uint8_t *data, size_t len)
{
	uint16_t crc = 0;

	for (size_t i = 0; i < len; i++) {
		crc ^= (uint16_t)(data[i] << 8);
		for (int b = 0; b < 8; b++)
			crc = (uint16_t)(crc & 0x8000 ? (crc << 1) ^ 0x1021 : crc << 1);
	}
	return crc;
}

void
sdspi_command(uint8_t index, uint32_t arg, uint8_t out[SDSPI_CMD_LEN])
{
	out[0] = (uint8_t)(0x40 | (index & 0x3f));
	out[1] = (uint8_t)(arg >> 24);
	out[2] = (uint8_t)(arg >> 16);
	out[3] = (uint8_t)(arg >> 8);
	out[4] = (uint8_t)arg;
	out[5] = (uint8_t)(sdspi_crc7(out, 5) << 1 | 1);
}

int
sdspi_find_r1(const uint8_t *buf, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (!(buf[i] & 0x80))
			return (int)i;
	return -ENOENT;
}

int
sdspi_parse_r37(const uint8_t *buf, size_t len, uint8_t *r1, uint32_t *value)
{
	int i = sdspi_find_r1(buf, len);

	if (i < 0)
		return i;
	*r1 = buf[i];
	*value = 0;
	if (buf[i] & SDSPI_R1_ILLEGAL)
		return 0;
	if ((size_t)i + 5 > len)
		return -EBADMSG;
	*value = (uint32_t)buf[i + 1] << 24 | (uint32_t)buf[i + 2] << 16 |
		 (uint32_t)buf[i + 3] << 8 | buf[i + 4];
	return 0;
}

int
sdspi_data_response(uint8_t token)
{
	/* xxx0sss1: 010 accepted, 101 CRC error, 110 write error */
	if ((token & 0x11) != 0x01)
		return -EBADMSG;
	switch ((token >> 1) & 0x07) {
	case 0x02:
		return 0;
	case 0x05:
		return -EILSEQ;
	case 0x06:
		return -EIO;
	default:
		return -EBADMSG;
	}
}

int
sdspi_address(bool block_addressed, uint64_t lba, uint32_t *ret)
{
	if (block_addressed) {
		if (lba > UINT32_MAX)
			return -ERANGE;
		*ret = (uint32_t)lba;
		return 0;
	}
	if (lba * SDSPI_BLOCK > UINT32_MAX)
		return -ERANGE;
	*ret = (uint32_t)(lba * SDSPI_BLOCK);
	return 0;
}

int
sdspi_csd_sectors(const uint8_t csd[16], uint64_t *ret)
{
	if ((csd[15] >> 1) != sdspi_crc7(csd, 15))
		return -EILSEQ;
	switch (csd[0] >> 6) {
	case 0: {
		uint32_t bl_len = csd[5] & 0x0f;
		uint32_t c_size =
		    (uint32_t)(csd[6] & 0x03) << 10 | (uint32_t)csd[7] << 2 | (uint32_t)csd[8] >> 6;
		uint32_t mult = (uint32_t)(csd[9] & 0x03) << 1 | (uint32_t)csd[10] >> 7;
		uint64_t bytes = (uint64_t)(c_size + 1) << (mult + 2 + bl_len);

		*ret = bytes / SDSPI_BLOCK;
		return 0;
	}
	case 1: {
		uint32_t c_size =
		    (uint32_t)(csd[7] & 0x3f) << 16 | (uint32_t)csd[8] << 8 | (uint32_t)csd[9];

		*ret = (uint64_t)(c_size + 1) * 1024;
		return 0;
	}
	default:
		return -EOPNOTSUPP;
	}
}

int
sdspi_find_block(const uint8_t *buf, size_t n, size_t len)
{
	size_t i = 0;
	uint16_t crc;

	while (i < n && buf[i] == 0xff)
		i++;
	if (i == n)
		return -EAGAIN;
	if (buf[i] != SDSPI_TOKEN_START)
		return (buf[i] & 0xf0) == 0 ? -EIO : -EBADMSG;
	i++;
	if (n - i < len + 2)
		return -EBADMSG;
	crc = sdspi_crc16(buf + i, len);
	if (buf[i + len] != (uint8_t)(crc >> 8) || buf[i + len + 1] != (uint8_t)crc)
		return -EILSEQ;
	return (int)i;
}

void
sdspi_init_start(struct sdspi_init *s)
{
	*s = (struct sdspi_init){.step = SDSPI_INIT_CMD0};
}

void
sdspi_init_command(const struct sdspi_init *s, uint8_t out[SDSPI_CMD_LEN])
{
	switch (s->step) {
	case SDSPI_INIT_CMD0:
		sdspi_command(SDSPI_CMD0_GO_IDLE, 0, out);
		break;
	case SDSPI_INIT_CMD8:
		sdspi_command(SDSPI_CMD8_SEND_IF_COND, 0x100 | SDSPI_CHECK_PATTERN, out);
		break;
	case SDSPI_INIT_CMD59:
		sdspi_command(SDSPI_CMD59_CRC_ON_OFF, 1, out);
		break;
	case SDSPI_INIT_CMD55:
		sdspi_command(SDSPI_CMD55_APP_CMD, 0, out);
		break;
	case SDSPI_INIT_ACMD41:
		sdspi_command(SDSPI_ACMD41_SEND_OP_COND, s->version == 2 ? 1u << 30 : 0, out);
		break;
	case SDSPI_INIT_CMD58:
		sdspi_command(SDSPI_CMD58_READ_OCR, 0, out);
		break;
	case SDSPI_INIT_CMD16:
	case SDSPI_INIT_DONE:
	default:
		sdspi_command(SDSPI_CMD16_SET_BLOCKLEN, SDSPI_BLOCK, out);
		break;
	}
}

static int
go(struct sdspi_init *s, enum sdspi_init_step step)
{
	s->step = step;
	s->tries = 0;
	s->wait = false;
	return step == SDSPI_INIT_DONE ? 1 : 0;
}

/* Retry the current step, up to max tries; then fail with err. */
static int
again(struct sdspi_init *s, unsigned max, int err)
{
	if (++s->tries >= max)
		return err;
	s->wait = true;
	return 0;
}

static int
feed_cmd8(struct sdspi_init *s, const uint8_t *resp, size_t len)
{
	uint8_t r1;
	uint32_t v;
	int r = sdspi_parse_r37(resp, len, &r1, &v);

	if (r == -ENOENT)
		return again(s, TRIES_DEFAULT, -EIO);
	if (r < 0)
		return -EIO;
	if (r1 & SDSPI_R1_ILLEGAL) {
		s->version = 1;
		return go(s, SDSPI_INIT_CMD59);
	}
	if (r1 != SDSPI_R1_IDLE)
		return -EIO;
	if ((v & 0xfff) != (0x100 | SDSPI_CHECK_PATTERN))
		return -EOPNOTSUPP; /* not 2.7-3.6 V or a broken echo */
	s->version = 2;
	return go(s, SDSPI_INIT_CMD59);
}

static int
feed_cmd58(struct sdspi_init *s, const uint8_t *resp, size_t len)
{
	uint8_t r1;
	uint32_t ocr;
	int r = sdspi_parse_r37(resp, len, &r1, &ocr);

	if (r < 0 || (r1 & SDSPI_R1_ILLEGAL))
		return -EOPNOTSUPP; /* MMC: spi_flash.py does not support it either */
	if (r1 & ~SDSPI_R1_IDLE)
		return -EIO;
	s->ocr_read = true;
	if (s->version == 1) {
		/* 3.2-3.4 V window bits (OCR 20, 21) must be set */
		if (!(ocr & (3u << 20)))
			return -EOPNOTSUPP;
		return go(s, SDSPI_INIT_CMD55);
	}
	s->sdhc = (ocr >> 30) & 1;
	return go(s, SDSPI_INIT_CMD16);
}

int
sdspi_init_feed(struct sdspi_init *s, const uint8_t *resp, size_t len)
{
	int i = sdspi_find_r1(resp, len);
	uint8_t r1 = i >= 0 ? resp[i] : 0xff;

	switch (s->step) {
	case SDSPI_INIT_CMD0:
		if (r1 == SDSPI_R1_IDLE)
			return go(s, SDSPI_INIT_CMD8);
		return again(s, TRIES_CMD0, -ENODEV);
	case SDSPI_INIT_CMD8:
		return feed_cmd8(s, resp, len);
	case SDSPI_INIT_CMD59:
		/* spi_flash.py only logs a failure here; so do we (the card keeps CRC off) */
		return go(s, s->version == 2 ? SDSPI_INIT_CMD55 : SDSPI_INIT_CMD58);
	case SDSPI_INIT_CMD55:
		if (i < 0 || (r1 & ~SDSPI_R1_IDLE))
			return again(s, TRIES_ACMD41, -EIO);
		s->step = SDSPI_INIT_ACMD41;
		s->wait = false;
		return 0;
	case SDSPI_INIT_ACMD41:
		if (r1 == 0)
			return go(s, s->version == 2 || !s->ocr_read ? SDSPI_INIT_CMD58
								     : SDSPI_INIT_CMD16);
		if (i < 0 || r1 == SDSPI_R1_IDLE) {
			s->step = SDSPI_INIT_CMD55;
			return again(s, TRIES_ACMD41, -ETIMEDOUT);
		}
		return -EIO;
	case SDSPI_INIT_CMD58:
		return feed_cmd58(s, resp, len);
	case SDSPI_INIT_CMD16:
		if (r1 == 0)
			return go(s, SDSPI_INIT_DONE);
		return again(s, TRIES_DEFAULT, -EIO);
	case SDSPI_INIT_DONE:
	default:
		return 1;
	}
}

const char *
sdspi_init_step_name(enum sdspi_init_step step)
{
	switch (step) {
	case SDSPI_INIT_CMD0:
		return "CMD0 GO_IDLE_STATE";
	case SDSPI_INIT_CMD8:
		return "CMD8 SEND_IF_COND";
	case SDSPI_INIT_CMD59:
		return "CMD59 CRC_ON_OFF";
	case SDSPI_INIT_CMD55:
		return "CMD55 APP_CMD";
	case SDSPI_INIT_ACMD41:
		return "ACMD41 SD_SEND_OP_COND";
	case SDSPI_INIT_CMD58:
		return "CMD58 READ_OCR";
	case SDSPI_INIT_CMD16:
		return "CMD16 SET_BLOCKLEN";
	case SDSPI_INIT_DONE:
	default:
		return "done";
	}
}
