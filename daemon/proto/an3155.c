/* SPDX-License-Identifier: GPL-2.0-or-later */
/* proto/an3155: STM32 USART bootloader codec (ST AN3155). See an3155.h. */
#include "proto/an3155.h"

#include <errno.h>
#include <string.h>

static uint8_t
xor_bytes(const uint8_t *p, size_t n, uint8_t seed)
{
	for (size_t i = 0; i < n; i++)
		seed ^= p[i];
	return seed;
}

void
an3155_cmd(uint8_t code, uint8_t out[2])
{
	out[0] = code;
	out[1] = (uint8_t)~code;
}

bool
an3155_cmd_check(const uint8_t in[2])
{
	return (uint8_t)(in[0] ^ in[1]) == 0xff;
}

void
an3155_addr(uint32_t addr, uint8_t out[5])
{
	for (size_t i = 0; i < 4; i++)
		out[i] = (uint8_t)(addr >> (24 - 8 * i));
	out[4] = xor_bytes(out, 4, 0);
}

int
an3155_parse_addr(const uint8_t in[5], uint32_t *ret_addr)
{
	if (xor_bytes(in, 4, 0) != in[4])
		return -EBADMSG;
	*ret_addr = (uint32_t)in[0] << 24 | (uint32_t)in[1] << 16 | (uint32_t)in[2] << 8 | in[3];
	return 0;
}

int
an3155_read_len(size_t n, uint8_t out[2])
{
	if (n == 0 || n > AN3155_BLOCK_MAX)
		return -EINVAL;
	out[0] = (uint8_t)(n - 1);
	out[1] = (uint8_t)~out[0];
	return 0;
}

int
an3155_parse_read_len(const uint8_t in[2], size_t *ret_n)
{
	if (!an3155_cmd_check(in))
		return -EBADMSG;
	*ret_n = (size_t)in[0] + 1;
	return 0;
}

int
an3155_write_frame(const uint8_t *data, size_t n, uint8_t *out, size_t outlen)
{
	if (n == 0 || n > AN3155_BLOCK_MAX || n % 4)
		return -EINVAL;
	if (outlen < n + 2)
		return -ENOBUFS;
	out[0] = (uint8_t)(n - 1);
	memcpy(out + 1, data, n);
	out[n + 1] = xor_bytes(data, n, out[0]);
	return (int)(n + 2);
}

int
an3155_parse_write_frame(const uint8_t *in, size_t len, const uint8_t **ret_data, size_t *ret_n)
{
	size_t n;

	if (len < 1)
		return 0;
	n = (size_t)in[0] + 1;
	if (len < n + 2)
		return 0;
	if (xor_bytes(in + 1, n, in[0]) != in[n + 1])
		return -EBADMSG;
	*ret_data = in + 1;
	*ret_n = n;
	return (int)(n + 2);
}

int
an3155_ext_erase_frame(const uint16_t *pages, size_t n, uint8_t *out, size_t outlen)
{
	size_t o = 0;

	if (n == 0 || n > AN3155_EXT_ERASE_MAX_PAGES)
		return -EINVAL;
	if (outlen < 2 + 2 * n + 1)
		return -ENOBUFS;
	out[o++] = (uint8_t)((n - 1) >> 8);
	out[o++] = (uint8_t)(n - 1);
	for (size_t i = 0; i < n; i++) {
		if (pages[i] >= 0xfff0u)
			return -EINVAL;
		out[o++] = (uint8_t)(pages[i] >> 8);
		out[o++] = (uint8_t)pages[i];
	}
	out[o] = xor_bytes(out, o, 0);
	return (int)(o + 1);
}

void
an3155_ext_erase_special(uint16_t code, uint8_t out[3])
{
	/* the special code comes directly after the first ACK; AN3155 Rev 15 Figure 15 draws a
	 * count before it, which is wrong (research ST-AN3155-ERR) */
	out[0] = (uint8_t)(code >> 8);
	out[1] = (uint8_t)code;
	out[2] = (uint8_t)(out[0] ^ out[1]);
}

int
an3155_parse_ext_erase(const uint8_t *in, size_t len, uint16_t *pages, size_t max_pages,
		       size_t *ret_n, uint16_t *ret_special)
{
	uint16_t first;
	size_t n, total;

	*ret_n = 0;
	*ret_special = 0;
	if (len < 3)
		return 0;
	first = (uint16_t)(in[0] << 8 | in[1]);
	if (first >= 0xfff0u) {
		if ((uint8_t)(in[0] ^ in[1]) != in[2])
			return -EBADMSG;
		*ret_special = first;
		return 3;
	}
	n = (size_t)first + 1;
	if (n > max_pages)
		return -E2BIG;
	total = 2 + 2 * n + 1;
	if (len < total)
		return 0;
	if (xor_bytes(in, total - 1, 0) != in[total - 1])
		return -EBADMSG;
	for (size_t i = 0; i < n; i++)
		pages[i] = (uint16_t)(in[2 + 2 * i] << 8 | in[3 + 2 * i]);
	*ret_n = n;
	return (int)total;
}

int
an3155_erase_frame(const uint8_t *pages, size_t n, uint8_t *out, size_t outlen)
{
	if (n == 0 || n > 255)
		return -EINVAL;
	if (outlen < n + 2)
		return -ENOBUFS;
	out[0] = (uint8_t)(n - 1);
	memcpy(out + 1, pages, n);
	out[n + 1] = xor_bytes(pages, n, out[0]);
	return (int)(n + 2);
}

/* "N, then N+1 bytes, then ACK" replies (Get, Get ID). */
static int
counted_reply(const uint8_t *in, size_t len, size_t *ret_n)
{
	size_t n;

	if (len < 1)
		return 0;
	n = (size_t)in[0] + 1;
	if (len < 1 + n + 1)
		return 0;
	if (in[1 + n] != AN3155_ACK)
		return -EPROTO;
	*ret_n = n;
	return (int)(n + 2);
}

int
an3155_parse_get(const uint8_t *in, size_t len, struct an3155_info *ret)
{
	size_t n = 0;
	int r = counted_reply(in, len, &n);

	if (r <= 0)
		return r;
	/* n = version + the command codes */
	if (n - 1 > sizeof(ret->cmds))
		return -EPROTO;
	ret->version = in[1];
	ret->n_cmds = (uint8_t)(n - 1);
	memcpy(ret->cmds, in + 2, n - 1);
	return r;
}

int
an3155_parse_get_version(const uint8_t *in, size_t len, uint8_t *ret_version)
{
	/* version, two option bytes (USART always sends them), ACK */
	if (len < 4)
		return 0;
	if (in[3] != AN3155_ACK)
		return -EPROTO;
	*ret_version = in[0];
	return 4;
}

int
an3155_parse_get_id(const uint8_t *in, size_t len, uint16_t *ret_pid)
{
	size_t n = 0;
	int r = counted_reply(in, len, &n);

	if (r <= 0)
		return r;
	if (n != 2) /* every STM32 answers a two-byte PID */
		return -EPROTO;
	*ret_pid = (uint16_t)(in[1] << 8 | in[2]);
	return r;
}

bool
an3155_has_cmd(const struct an3155_info *info, uint8_t code)
{
	return memchr(info->cmds, code, info->n_cmds) != NULL;
}

const char *
an3155_pid_name(uint16_t pid)
{
	/* AN2606 "device-dependent bootloader parameters"; stm32flash dev_table.c */
	switch (pid) {
	case 0x410:
		return "STM32F10xxx medium-density";
	case 0x414:
		return "STM32F10xxx high-density";
	case 0x413:
		return "STM32F405/407/415/417";
	case 0x419:
		return "STM32F42x/43x";
	case 0x421:
		return "STM32F446";
	case 0x423:
		return "STM32F401xB/C";
	case 0x433:
		return "STM32F401xD/E";
	case 0x467:
		return "STM32G0Bx/G0Cx";
	case 0x483:
		return "STM32H72x/73x";
	case 0x450:
		return "STM32H74x/75x";
	default:
		return NULL;
	}
}
