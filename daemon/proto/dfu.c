/* SPDX-License-Identifier: GPL-2.0-or-later */
/* proto/dfu: pure DFU 1.1 / DfuSe codec (protocols.md §3).
 *
 * libusb moves control transfers but knows nothing of DFU, and no packaged library exposes
 * DfuSe: dfu-util is a program, not a library. The daemon needs only these few formats, and
 * keeping them here, without I/O, lets them be unit-tested and fuzzed. */
#include <errno.h>
#include <string.h>

#include "proto/dfu.h"

static uint16_t
le16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

int
dfu_status_decode(const uint8_t *buf, size_t len, struct dfu_status_reply *ret)
{
	if (len < DFU_STATUS_LEN)
		return -EBADMSG;
	/* §3.2: bStatus, bwPollTimeout (24-bit little-endian), bState, iString */
	ret->status = buf[0];
	ret->poll_timeout_ms = (uint32_t)buf[1] | (uint32_t)buf[2] << 8 | (uint32_t)buf[3] << 16;
	ret->state = buf[4];
	ret->istring = buf[5];
	return 0;
}

void
dfu_status_encode(const struct dfu_status_reply *s, uint8_t out[DFU_STATUS_LEN])
{
	uint32_t t = s->poll_timeout_ms > 0xffffff ? 0xffffff : s->poll_timeout_ms;

	out[0] = s->status;
	out[1] = (uint8_t)t;
	out[2] = (uint8_t)(t >> 8);
	out[3] = (uint8_t)(t >> 16);
	out[4] = s->state;
	out[5] = s->istring;
}

static const char *const state_names[] = {
    [DFU_STATE_APP_IDLE] = "appIDLE",
    [DFU_STATE_APP_DETACH] = "appDETACH",
    [DFU_STATE_IDLE] = "dfuIDLE",
    [DFU_STATE_DNLOAD_SYNC] = "dfuDNLOAD-SYNC",
    [DFU_STATE_DNBUSY] = "dfuDNBUSY",
    [DFU_STATE_DNLOAD_IDLE] = "dfuDNLOAD-IDLE",
    [DFU_STATE_MANIFEST_SYNC] = "dfuMANIFEST-SYNC",
    [DFU_STATE_MANIFEST] = "dfuMANIFEST",
    [DFU_STATE_MANIFEST_WAIT_RESET] = "dfuMANIFEST-WAIT-RESET",
    [DFU_STATE_UPLOAD_IDLE] = "dfuUPLOAD-IDLE",
    [DFU_STATE_ERROR] = "dfuERROR",
};

static const char *const status_names[] = {
    [DFU_STATUS_OK] = "OK",
    [DFU_STATUS_ERR_TARGET] = "errTARGET",
    [DFU_STATUS_ERR_FILE] = "errFILE",
    [DFU_STATUS_ERR_WRITE] = "errWRITE",
    [DFU_STATUS_ERR_ERASE] = "errERASE",
    [DFU_STATUS_ERR_CHECK_ERASED] = "errCHECK_ERASED",
    [DFU_STATUS_ERR_PROG] = "errPROG",
    [DFU_STATUS_ERR_VERIFY] = "errVERIFY",
    [DFU_STATUS_ERR_ADDRESS] = "errADDRESS",
    [DFU_STATUS_ERR_NOTDONE] = "errNOTDONE",
    [DFU_STATUS_ERR_FIRMWARE] = "errFIRMWARE",
    [DFU_STATUS_ERR_VENDOR] = "errVENDOR",
    [DFU_STATUS_ERR_USBR] = "errUSBR",
    [DFU_STATUS_ERR_POR] = "errPOR",
    [DFU_STATUS_ERR_UNKNOWN] = "errUNKNOWN",
    [DFU_STATUS_ERR_STALLEDPKT] = "errSTALLEDPKT",
};

const char *
dfu_state_to_string(unsigned state)
{
	if (state >= sizeof(state_names) / sizeof(state_names[0]))
		return "unknown";
	return state_names[state];
}

const char *
dfu_status_to_string(unsigned status)
{
	if (status >= sizeof(status_names) / sizeof(status_names[0]))
		return "unknown";
	return status_names[status];
}

int
dfu_func_desc_parse(const uint8_t *extra, size_t len, struct dfu_func_desc *ret)
{
	size_t off = 0;

	while (off < len) {
		size_t bl;

		if (len - off < 2)
			return -EBADMSG;
		bl = extra[off];
		if (bl < 2 || bl > len - off)
			return -EBADMSG;
		if (extra[off + 1] == DFU_DESC_FUNCTIONAL) {
			/* DFU 1.0 devices send the 7-byte form without bcdDFUVersion */
			if (bl < 7)
				return -EBADMSG;
			ret->attributes = extra[off + 2];
			ret->detach_timeout = le16(extra + off + 3);
			ret->transfer_size = le16(extra + off + 5);
			ret->bcd_dfu = bl >= 9 ? le16(extra + off + 7) : 0x0100;
			return 0;
		}
		off += bl;
	}
	return -ENOENT;
}

/* Decimal with leading zeros ("016" = 16); at least one digit, no overflow. */
static int
parse_dec(const char **p, uint32_t *ret)
{
	const char *s = *p;
	uint64_t v = 0;

	if (*s < '0' || *s > '9')
		return -EINVAL;
	for (; *s >= '0' && *s <= '9'; s++) {
		v = v * 10 + (uint64_t)(*s - '0');
		if (v > UINT32_MAX)
			return -EINVAL;
	}
	*p = s;
	*ret = (uint32_t)v;
	return 0;
}

static int
hex_digit(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

static int
parse_hex_address(const char **p, uint32_t *ret)
{
	const char *s = *p;
	uint64_t v = 0;
	int n = 0, d;

	if (s[0] != '0' || (s[1] != 'x' && s[1] != 'X'))
		return -EINVAL;
	for (s += 2; (d = hex_digit(*s)) >= 0; s++, n++) {
		v = v << 4 | (uint64_t)d;
		if (v > UINT32_MAX)
			return -EINVAL;
	}
	if (n == 0)
		return -EINVAL;
	*p = s;
	*ret = (uint32_t)v;
	return 0;
}

/* <count> "*" <size> [multiplier] [type]; §3.5. The multiplier is 'B', 'K', 'M' or a space
 * (bytes, as in "01*016 g"); the type is a letter 'a'..'g' whose low 3 bits are the flags. */
static int
parse_segment(const char **p, struct dfu_segment *seg)
{
	const char *s = *p;
	uint32_t count, size, mult = 1;
	uint64_t bytes;

	if (parse_dec(&s, &count) < 0 || *s++ != '*' || parse_dec(&s, &size) < 0)
		return -EINVAL;
	switch (*s) {
	case 'B':
	case ' ':
		s++;
		break;
	case 'K':
		mult = 1024;
		s++;
		break;
	case 'M':
		mult = 1024 * 1024;
		s++;
		break;
	default:
		break;
	}
	seg->flags = 0;
	if (*s >= 'a' && *s <= 'g') {
		seg->flags = (unsigned)(*s - 'a' + 1) & 7;
		s++;
	}
	bytes = (uint64_t)size * mult;
	if (count == 0 || bytes == 0 || bytes > UINT32_MAX)
		return -EINVAL;
	seg->count = count;
	seg->page_size = (uint32_t)bytes;
	*p = s;
	return 0;
}

int
dfu_layout_parse(const char *s, struct dfu_layout *ret)
{
	const char *name, *end;
	size_t n = 0, nl;

	memset(ret, 0, sizeof(*ret));
	if (*s++ != '@')
		return -EINVAL;
	name = s;
	end = strchr(s, '/');
	if (!end)
		return -EINVAL;
	s = end;
	while (name < end && *name == ' ')
		name++;
	while (end > name && end[-1] == ' ')
		end--;
	nl = (size_t)(end - name);
	if (nl >= sizeof(ret->name))
		nl = sizeof(ret->name) - 1;
	memcpy(ret->name, name, nl);

	/* one or more regions: "/0xADDR/" then segments separated by ',' */
	while (*s == '/') {
		uint32_t start;
		uint64_t addr;
		bool any = false;
		int r;

		s++;
		r = parse_hex_address(&s, &start);
		if (r < 0)
			return r;
		if (*s++ != '/')
			return -EINVAL;
		addr = start;
		while (*s && *s != '/') {
			struct dfu_segment seg;

			if (n == DFU_LAYOUT_MAX_SEGMENTS)
				return -E2BIG;
			r = parse_segment(&s, &seg);
			if (r < 0)
				return r;
			seg.start = (uint32_t)addr;
			addr += (uint64_t)seg.count * seg.page_size;
			if (addr > (uint64_t)UINT32_MAX + 1)
				return -ERANGE;
			ret->segments[n++] = seg;
			any = true;
			/* a trailing ',' before the end or the next region is tolerated */
			if (*s == ',')
				s++;
			else if (*s && *s != '/')
				break;
		}
		if (!any)
			return -EINVAL;
	}
	while (*s == ' ' || *s == '\t' || *s == '\r' || *s == '\n')
		s++;
	if (*s != '\0' || n == 0)
		return -EINVAL;
	/* dfu-util's quirk: the ROM marks its Device Feature region unusable; treat it as
	 * readable and writable ('e') like dfu-util does */
	if (strcmp(ret->name, "Device Feature") == 0)
		for (size_t i = 0; i < n; i++)
			ret->segments[i].flags = DFU_MEM_READABLE | DFU_MEM_WRITABLE;
	ret->n_segments = n;
	return 0;
}

int
dfu_layout_find(const struct dfu_layout *l, uint32_t addr, uint32_t *ret_page_start,
		uint32_t *ret_page_size)
{
	for (size_t i = 0; i < l->n_segments && i < DFU_LAYOUT_MAX_SEGMENTS; i++) {
		const struct dfu_segment *g = &l->segments[i];
		uint64_t len = (uint64_t)g->count * g->page_size;

		if (g->page_size == 0 || addr < g->start || addr - g->start >= len)
			continue;
		if (ret_page_start)
			*ret_page_start =
			    g->start + (addr - g->start) / g->page_size * g->page_size;
		if (ret_page_size)
			*ret_page_size = g->page_size;
		return (int)i;
	}
	return -ENOENT;
}

uint64_t
dfu_layout_size(const struct dfu_layout *l)
{
	uint64_t total = 0;

	for (size_t i = 0; i < l->n_segments && i < DFU_LAYOUT_MAX_SEGMENTS; i++)
		total += (uint64_t)l->segments[i].count * l->segments[i].page_size;
	return total;
}

static size_t
cmd_with_address(uint8_t out[DFUSE_CMD_LEN], uint8_t cmd, uint32_t addr)
{
	/* §3.4: command byte, then the address LSB first */
	out[0] = cmd;
	out[1] = (uint8_t)addr;
	out[2] = (uint8_t)(addr >> 8);
	out[3] = (uint8_t)(addr >> 16);
	out[4] = (uint8_t)(addr >> 24);
	return DFUSE_CMD_LEN;
}

size_t
dfu_cmd_set_address(uint8_t out[DFUSE_CMD_LEN], uint32_t addr)
{
	return cmd_with_address(out, DFUSE_CMD_SET_ADDRESS, addr);
}

size_t
dfu_cmd_erase_page(uint8_t out[DFUSE_CMD_LEN], uint32_t addr)
{
	return cmd_with_address(out, DFUSE_CMD_ERASE, addr);
}

size_t
dfu_cmd_mass_erase(uint8_t out[DFUSE_CMD_LEN])
{
	out[0] = DFUSE_CMD_ERASE;
	return 1;
}

int
dfu_block_address(uint16_t block, uint16_t transfer_size, uint32_t pointer, uint32_t *ret_addr)
{
	uint64_t a;

	if (block < 2)
		return -EINVAL;
	/* AN2662 §4.4/§4.5 */
	a = (uint64_t)(block - 2) * transfer_size + pointer;
	if (a > UINT32_MAX)
		return -ERANGE;
	*ret_addr = (uint32_t)a;
	return 0;
}
