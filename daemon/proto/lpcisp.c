/* SPDX-License-Identifier: GPL-2.0-or-later */
/* proto/lpcisp: LPC176x ROM ISP codec (UM10360 chapter 32). See lpcisp.h. */
#include "proto/lpcisp.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

static int
fmt(size_t len, int n)
{
	if (n < 0)
		return -EINVAL;
	if ((size_t)n >= len)
		return -ENOBUFS;
	return n;
}

static bool
copy_count_ok(uint32_t count)
{
	/* UM10360 Table 580 (Copy RAM to flash): 256, 512, 1024 or 4096 bytes */
	return count == 256 || count == 512 || count == 1024 || count == 4096;
}

static bool
cmd_valid(const struct lpcisp_cmd *c)
{
	switch (c->op) {
	case LPCISP_OP_UNLOCK:
	case LPCISP_OP_PART_ID:
	case LPCISP_OP_BOOT_VERSION:
	case LPCISP_OP_SERIAL:
	case LPCISP_OP_GO:
		return true;
	case LPCISP_OP_ECHO:
		return c->a <= 1;
	case LPCISP_OP_BAUD:
		return c->a > 0 && (c->b == 1 || c->b == 2);
	case LPCISP_OP_WRITE:
	case LPCISP_OP_READ:
		/* Table 575/576: word boundary, count a multiple of 4 */
		return c->a % 4 == 0 && c->b % 4 == 0 && c->b > 0;
	case LPCISP_OP_PREPARE:
	case LPCISP_OP_ERASE:
	case LPCISP_OP_BLANK:
		return c->b >= c->a && c->b < LPCISP_SECTORS;
	case LPCISP_OP_COPY:
		return c->a % 256 == 0 && c->b % 4 == 0 && copy_count_ok(c->c);
	case LPCISP_OP_COMPARE:
		return c->a % 4 == 0 && c->b % 4 == 0 && c->c % 4 == 0 && c->c > 0;
	}
	return false;
}

int
lpcisp_format(const struct lpcisp_cmd *c, char *buf, size_t len)
{
	int n = -1;

	if (!cmd_valid(c))
		return -EINVAL;
	switch (c->op) {
	case LPCISP_OP_UNLOCK:
		n = snprintf(buf, len, "U %u\r\n", LPCISP_UNLOCK_CODE);
		break;
	case LPCISP_OP_ECHO:
		n = snprintf(buf, len, "A %u\r\n", c->a);
		break;
	case LPCISP_OP_BAUD:
		n = snprintf(buf, len, "B %u %u\r\n", c->a, c->b);
		break;
	case LPCISP_OP_WRITE:
		n = snprintf(buf, len, "W %u %u\r\n", c->a, c->b);
		break;
	case LPCISP_OP_READ:
		n = snprintf(buf, len, "R %u %u\r\n", c->a, c->b);
		break;
	case LPCISP_OP_PREPARE:
		n = snprintf(buf, len, "P %u %u\r\n", c->a, c->b);
		break;
	case LPCISP_OP_ERASE:
		n = snprintf(buf, len, "E %u %u\r\n", c->a, c->b);
		break;
	case LPCISP_OP_BLANK:
		n = snprintf(buf, len, "I %u %u\r\n", c->a, c->b);
		break;
	case LPCISP_OP_COPY:
		n = snprintf(buf, len, "C %u %u %u\r\n", c->a, c->b, c->c);
		break;
	case LPCISP_OP_GO:
		n = snprintf(buf, len, "G %u T\r\n", c->a);
		break;
	case LPCISP_OP_PART_ID:
		n = snprintf(buf, len, "J\r\n");
		break;
	case LPCISP_OP_BOOT_VERSION:
		n = snprintf(buf, len, "K\r\n");
		break;
	case LPCISP_OP_SERIAL:
		n = snprintf(buf, len, "N\r\n");
		break;
	case LPCISP_OP_COMPARE:
		n = snprintf(buf, len, "M %u %u %u\r\n", c->a, c->b, c->c);
		break;
	}
	return fmt(len, n);
}

int
lpcisp_format_crystal(unsigned khz, char *buf, size_t len)
{
	if (khz == 0 || khz > 100000)
		return -EINVAL;
	return fmt(len, snprintf(buf, len, "%u\r\n", khz));
}

unsigned
lpcisp_reply_lines(enum lpcisp_op op)
{
	switch (op) {
	case LPCISP_OP_PART_ID:
		return 1;
	case LPCISP_OP_BOOT_VERSION:
		return 2;
	case LPCISP_OP_SERIAL:
		return 4;
	case LPCISP_OP_UNLOCK:
	case LPCISP_OP_ECHO:
	case LPCISP_OP_BAUD:
	case LPCISP_OP_WRITE:
	case LPCISP_OP_READ:
	case LPCISP_OP_PREPARE:
	case LPCISP_OP_ERASE:
	case LPCISP_OP_BLANK:
	case LPCISP_OP_COPY:
	case LPCISP_OP_GO:
	case LPCISP_OP_COMPARE:
		break;
	}
	return 0;
}

static bool
is_skip(uint8_t c)
{
	return c == '\r' || c == '\n' || c == LPCISP_XON || c == LPCISP_XOFF;
}

int
lpcisp_line_next(const uint8_t *buf, size_t len, char *out, size_t outlen, size_t *ret_skip)
{
	size_t i = 0, n = 0;

	*ret_skip = 0;
	if (outlen == 0)
		return -EINVAL;
	while (i < len && is_skip(buf[i]))
		i++;
	*ret_skip = i;
	for (; i < len; i++) {
		if (buf[i] == '\r' || buf[i] == '\n') {
			out[n] = '\0';
			return (int)(i + 1);
		}
		if (buf[i] == LPCISP_XON || buf[i] == LPCISP_XOFF)
			continue;
		if (n + 1 >= outlen) {
			/* longer than any ISP line (noise at a wrong baud rate): drop it */
			*ret_skip = i + 1;
			return -EMSGSIZE;
		}
		out[n++] = (char)buf[i];
	}
	return 0;
}

int
lpcisp_parse_u32(const char *line, uint32_t *ret)
{
	uint64_t v = 0;
	size_t i;

	if (!line[0])
		return -EINVAL;
	for (i = 0; line[i]; i++) {
		if (line[i] < '0' || line[i] > '9' || i >= 10)
			return -EINVAL;
		v = v * 10 + (uint64_t)(line[i] - '0');
	}
	if (v > UINT32_MAX)
		return -EINVAL;
	*ret = (uint32_t)v;
	return 0;
}

int
lpcisp_parse_rc(const char *line)
{
	uint32_t v;

	if (strlen(line) > 3 || lpcisp_parse_u32(line, &v) < 0 || v > 255)
		return -EINVAL;
	return (int)v;
}

const char *
lpcisp_rc_name(int rc)
{
	static const char *const names[] = {
	    "CMD_SUCCESS",	   "INVALID_COMMAND",
	    "SRC_ADDR_ERROR",	   "DST_ADDR_ERROR",
	    "SRC_ADDR_NOT_MAPPED", "DST_ADDR_NOT_MAPPED",
	    "COUNT_ERROR",	   "INVALID_SECTOR",
	    "SECTOR_NOT_BLANK",	   "SECTOR_NOT_PREPARED_FOR_WRITE_OPERATION",
	    "COMPARE_ERROR",	   "BUSY",
	    "PARAM_ERROR",	   "ADDR_ERROR",
	    "ADDR_NOT_MAPPED",	   "CMD_LOCKED",
	    "INVALID_CODE",	   "INVALID_BAUD_RATE",
	    "INVALID_STOP_BIT",	   "CODE_READ_PROTECTION_ENABLED",
	};

	if (rc < 0 || (size_t)rc >= sizeof(names) / sizeof(names[0]))
		return "unknown return code";
	return names[rc];
}

const char *
lpcisp_part_name(uint32_t id)
{
	/* lpc21isp lpcprog.c LPCtypes (LPC17xx rows) */
	static const struct {
		uint32_t id;
		const char *name;
	} parts[] = {
	    {LPCISP_PART_LPC1769, "LPC1769"}, {LPCISP_PART_LPC1768, "LPC1768"},
	    {0x26012837u, "LPC1767"},	      {0x26013f33u, "LPC1766"},
	    {0x26013733u, "LPC1765"},	      {0x26011922u, "LPC1764"},
	};

	for (size_t i = 0; i < sizeof(parts) / sizeof(parts[0]); i++)
		if (parts[i].id == id)
			return parts[i].name;
	return NULL;
}

static char
uu_char(unsigned v)
{
	/* zero goes out as '`', not ' ' (lpc21isp builds its table the same way) */
	return v ? (char)(0x20 + v) : '`';
}

int
lpcisp_uu_encode_line(const uint8_t *data, size_t n, char *out, size_t outlen)
{
	size_t groups = (n + 2) / 3, o = 0;

	if (n == 0 || n > LPCISP_UU_LINE_BYTES)
		return -EINVAL;
	if (outlen < 1 + groups * 4 + 3)
		return -ENOBUFS;
	out[o++] = (char)(0x20 + n);
	for (size_t g = 0; g < groups; g++) {
		uint8_t b[3] = {0, 0, 0};

		for (size_t k = 0; k < 3 && g * 3 + k < n; k++)
			b[k] = data[g * 3 + k];
		out[o++] = uu_char(b[0] >> 2);
		out[o++] = uu_char((unsigned)((b[0] & 3) << 4 | b[1] >> 4));
		out[o++] = uu_char((unsigned)((b[1] & 15) << 2 | b[2] >> 6));
		out[o++] = uu_char(b[2] & 63u);
	}
	out[o++] = '\r';
	out[o++] = '\n';
	out[o] = '\0';
	return (int)o;
}

static int
uu_value(char c)
{
	if (c == '`')
		return 0;
	if (c < 0x20 || c > 0x5f)
		return -1;
	return c - 0x20;
}

int
lpcisp_uu_decode_line(const char *line, uint8_t *out, size_t outlen)
{
	int n = line[0] ? uu_value(line[0]) : -1;
	size_t groups, chars = strlen(line);

	if (n <= 0 || n > LPCISP_UU_LINE_BYTES)
		return -EINVAL;
	groups = ((size_t)n + 2) / 3;
	if (chars != 1 + groups * 4)
		return -EINVAL;
	if (outlen < (size_t)n)
		return -ENOBUFS;
	for (size_t g = 0; g < groups; g++) {
		int v[4];
		uint8_t b[3];

		for (size_t k = 0; k < 4; k++) {
			v[k] = uu_value(line[1 + g * 4 + k]);
			if (v[k] < 0)
				return -EINVAL;
		}
		b[0] = (uint8_t)(v[0] << 2 | v[1] >> 4);
		b[1] = (uint8_t)((v[1] & 15) << 4 | v[2] >> 2);
		b[2] = (uint8_t)((v[2] & 3) << 6 | v[3]);
		for (size_t k = 0; k < 3 && g * 3 + k < (size_t)n; k++)
			out[g * 3 + k] = b[k];
	}
	return n;
}

void
lpcisp_uu_writer_init(struct lpcisp_uu_writer *w, const uint8_t *data, size_t len)
{
	*w = (struct lpcisp_uu_writer){.data = data, .len = len};
}

int
lpcisp_uu_writer_next(struct lpcisp_uu_writer *w, char *out, size_t outlen, bool *ret_checksum)
{
	size_t n;
	int r;

	if (ret_checksum)
		*ret_checksum = false;
	if (w->await_ack)
		return -EAGAIN;
	if (w->lines == LPCISP_UU_BLOCK_LINES || (w->pos == w->len && w->lines > 0)) {
		/* UM10360 §32.8.2: the checksum is the sum of the raw bytes of the block */
		r = fmt(outlen, snprintf(out, outlen, "%u\r\n", w->sum));
		if (r < 0)
			return r;
		w->await_ack = true;
		if (ret_checksum)
			*ret_checksum = true;
		return r;
	}
	n = w->len - w->pos;
	if (n == 0)
		return 0;
	if (n > LPCISP_UU_LINE_BYTES)
		n = LPCISP_UU_LINE_BYTES;
	r = lpcisp_uu_encode_line(w->data + w->pos, n, out, outlen);
	if (r < 0)
		return r;
	for (size_t i = 0; i < n; i++)
		w->sum += w->data[w->pos + i];
	w->pos += n;
	w->lines++;
	return r;
}

void
lpcisp_uu_writer_ack(struct lpcisp_uu_writer *w)
{
	w->block_start = w->pos;
	w->lines = 0;
	w->sum = 0;
	w->await_ack = false;
}

void
lpcisp_uu_writer_resend(struct lpcisp_uu_writer *w)
{
	w->pos = w->block_start;
	w->lines = 0;
	w->sum = 0;
	w->await_ack = false;
}

void
lpcisp_uu_reader_init(struct lpcisp_uu_reader *r, uint8_t *out, size_t len)
{
	*r = (struct lpcisp_uu_reader){.out = out, .len = len};
}

bool
lpcisp_uu_reader_want_checksum(const struct lpcisp_uu_reader *r)
{
	return r->lines == LPCISP_UU_BLOCK_LINES || (r->pos == r->len && r->lines > 0);
}

int
lpcisp_uu_reader_feed(struct lpcisp_uu_reader *r, const char *line)
{
	uint8_t raw[LPCISP_UU_LINE_BYTES] = {0};
	uint32_t sum;
	int n;

	if (lpcisp_uu_reader_want_checksum(r)) {
		if (lpcisp_parse_u32(line, &sum) < 0)
			return -EINVAL;
		r->lines = 0;
		if (sum != r->sum) {
			r->pos = r->block_start;
			r->sum = 0;
			return LPCISP_UU_BLOCK_BAD;
		}
		r->sum = 0;
		r->block_start = r->pos;
		return r->pos == r->len ? LPCISP_UU_DONE : LPCISP_UU_BLOCK_OK;
	}
	n = lpcisp_uu_decode_line(line, raw, sizeof(raw));
	if (n < 0 || (size_t)n > r->len - r->pos)
		return -EINVAL;
	memcpy(r->out + r->pos, raw, (size_t)n);
	for (int i = 0; i < n; i++)
		r->sum += raw[i];
	r->pos += (size_t)n;
	r->lines++;
	return LPCISP_UU_DATA;
}

static uint32_t
le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

uint32_t
lpcisp_vector_checksum(const uint8_t *image, size_t len)
{
	uint32_t sum = 0;

	for (size_t i = 0; i < 7 && i * 4 + 4 <= len; i++)
		sum += le32(image + i * 4);
	return 0u - sum;
}

int
lpcisp_vector_patch(uint8_t *image, size_t len)
{
	uint32_t v;

	if (len < 32)
		return -EINVAL;
	v = lpcisp_vector_checksum(image, len);
	for (size_t i = 0; i < 4; i++)
		image[LPCISP_VECTOR_CHECKSUM_OFFSET + i] = (uint8_t)(v >> (8 * i));
	return 0;
}

bool
lpcisp_vector_valid(const uint8_t *image, size_t len)
{
	return len >= 32 &&
	       le32(image + LPCISP_VECTOR_CHECKSUM_OFFSET) == lpcisp_vector_checksum(image, len);
}

uint32_t
lpcisp_crp_word(const uint8_t *image, size_t len, const char **ret_name)
{
	uint32_t w = 0;
	const char *name = NULL;

	if (len >= LPCISP_CRP_OFFSET + 4) {
		w = le32(image + LPCISP_CRP_OFFSET);
		if (w == LPCISP_CRP1)
			name = "CRP1";
		else if (w == LPCISP_CRP2)
			name = "CRP2";
		else if (w == LPCISP_CRP3)
			name = "CRP3";
		else if (w == LPCISP_NO_ISP)
			name = "NO_ISP";
	}
	if (ret_name)
		*ret_name = name;
	return name ? w : 0;
}

int
lpcisp_sector_of(uint32_t addr)
{
	if (addr < 0x10000u)
		return (int)(addr / 0x1000u);
	if (addr < 0x80000u)
		return (int)(16 + (addr - 0x10000u) / 0x8000u);
	return -ERANGE;
}

int
lpcisp_sector_range(unsigned sector, uint32_t *ret_start, uint32_t *ret_size)
{
	if (sector >= LPCISP_SECTORS)
		return -ERANGE;
	if (sector < 16) {
		*ret_start = sector * 0x1000u;
		*ret_size = 0x1000u;
	} else {
		*ret_start = 0x10000u + (sector - 16) * 0x8000u;
		*ret_size = 0x8000u;
	}
	return 0;
}
