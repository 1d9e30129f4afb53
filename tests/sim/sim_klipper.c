/* SPDX-License-Identifier: GPL-2.0-or-later */
/* sim_klipper: the Klipper application of a simulated board, on its tty.
 *
 * Written from Klipper's MCU side (src/command.c, src/spicmds.c, src/basecmd.c), not from
 * the daemon's codec: its own block finder (command_find_block: NAK a block with an
 * unexpected seq, ack every accepted one), its own VLQ and CRC, and the command ids of the
 * dictionary the application in flash serves (identify). It knows how its SD slot is wired
 * (its own copy of scripts/spi_flash/board_defs.py): the card answers only when the host
 * configured the right CS pin and bus; otherwise MISO floats high (0xFF), like a wrong pin.
 *
 * Dictionary style: an application whose version starts with "v0.10." has the older
 * command formats ("config_spi oid=%c pin=%u", "spi_set_software_bus ... rate=%u"). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <json-c/json.h>
#include <zlib.h>

#include "sdcard.h"
#include "sim_int.h"
#include "util.h"

enum kl_handler {
	KL_NONE,
	KL_IDENTIFY,
	KL_GET_CONFIG,
	KL_FINALIZE,
	KL_ALLOCATE,
	KL_RESET,
	KL_CONFIG_SPI,
	KL_CONFIG_SPI_NOCS,
	KL_SET_BUS,
	KL_SET_SW_BUS,
	KL_TRANSFER,
	KL_SEND,
};

static const struct {
	const char *format;
	enum kl_handler h;
	bool in_shutdown; /* HF_IN_SHUTDOWN */
} handlers[] = {
    {"identify offset=%u count=%c", KL_IDENTIFY, true},
    {"get_config", KL_GET_CONFIG, true},
    {"finalize_config crc=%u", KL_FINALIZE, false},
    {"allocate_oids count=%c", KL_ALLOCATE, false},
    {"reset", KL_RESET, true},
    {"config_spi oid=%c pin=%u cs_active_high=%c", KL_CONFIG_SPI, false},
    {"config_spi oid=%c pin=%u", KL_CONFIG_SPI, false},
    {"config_spi_without_cs oid=%c", KL_CONFIG_SPI_NOCS, false},
    {"spi_set_bus oid=%c spi_bus=%u mode=%u rate=%u", KL_SET_BUS, false},
    {"spi_set_sw_bus oid=%c miso_pin=%u mosi_pin=%u sclk_pin=%u mode=%u pulse_ticks=%u",
     KL_SET_SW_BUS, false},
    {"spi_set_software_bus oid=%c miso_pin=%u mosi_pin=%u sclk_pin=%u mode=%u rate=%u",
     KL_SET_SW_BUS, false},
    {"spi_transfer oid=%c data=%*s", KL_TRANSFER, false},
    {"spi_send oid=%c data=%*s", KL_SEND, false},
};

#define RSP_IDENTIFY "identify_response offset=%u data=%.*s"
#define RSP_CONFIG "config is_config=%c crc=%u is_shutdown=%c move_count=%hu"
#define RSP_TRANSFER "spi_transfer_response oid=%c response=%*s"
#define RSP_SHUTDOWN "shutdown clock=%u static_string_id=%hu"
#define RSP_IS_SHUTDOWN "is_shutdown static_string_id=%hu"

/* ---- pins and buses, as this simulated firmware numbers them ---- */

static const char *const stm32_buses[] = {"spi2",  "spi1", "spi1a", "spi2a", "spi3",
					  "spi3a", "spi4", "spi5",  "spi6",  NULL};
static const char *const lpc_buses[] = {"ssp0", "ssp1", NULL};
static const char *const rp_buses[] = {"spi0a", "spi0b", "spi1a", "spi1b", NULL};

static const char *const *
buses(enum catalog_family f)
{
	return f == CATALOG_FAMILY_LPC176X  ? lpc_buses
	       : f == CATALOG_FAMILY_RP2040 ? rp_buses
					    : stm32_buses;
}

/* STM32 GPIO('A', n) = n, 'B' = 16 + n ...; LPC176x P<port>.<n> = port * 32 + n. */
static int
pin_number(enum catalog_family f, const char *s)
{
	char *end;
	long n;

	if (f == CATALOG_FAMILY_LPC176X) {
		long port;

		if (s[0] != 'P' || s[1] < '0' || s[1] > '4' || s[2] != '.')
			return -1;
		port = s[1] - '0';
		n = strtol(s + 3, &end, 10);
		return *end || n < 0 || n > 31 ? -1 : (int)(port * 32 + n);
	}
	if (s[0] != 'P' || s[1] < 'A' || s[1] > 'K')
		return -1;
	n = strtol(s + 2, &end, 10);
	return *end || n < 0 || n > 15 ? -1 : (int)((s[1] - 'A') * 16 + n);
}

static int
bus_number(enum catalog_family f, const char *s)
{
	const char *const *b = buses(f);

	for (int i = 0; b[i]; i++)
		if (strcmp(b[i], s) == 0)
			return i;
	return -1;
}

/* The SD slot wiring per board (board_defs.py facts, kept apart from the daemon's catalog). */
static const struct {
	const char *prefix;
	const char *bus; /* NULL: software SPI on pins */
	const char *pins[3];
	const char *cs;
} wiring[] = {
    {"skr-1.", "ssp1", {NULL}, "P0.6"},
    {"skr-pro", NULL, {"PA6", "PB5", "PA5"}, "PA4"},
    {"skr-mini-e3-v3.0.1", NULL, {NULL}, NULL}, /* no definition upstream */
    {"skr-mini-e3", "spi1", {NULL}, "PA4"},
    {"skr-2-", NULL, {"PC8", "PD2", "PC12"}, "PC11"},
    {"skr-3-", NULL, {"PC8", "PD2", "PC12"}, "PC11"},
    {"octopus", NULL, {"PC8", "PD2", "PC12"}, "PC11"},
};

static bool
wired(const struct sim_board *b)
{
	const struct sim_klipper *k = &b->kl;
	enum catalog_family f = b->model->mcu->family;

	for (size_t i = 0; i < ELEMENTSOF(wiring); i++) {
		if (strncmp(b->model->name, wiring[i].prefix, strlen(wiring[i].prefix)) != 0)
			continue;
		if (!wiring[i].cs || !k->spi_has_cs ||
		    (int)k->spi_cs != pin_number(f, wiring[i].cs))
			return false;
		if (wiring[i].bus)
			return !k->spi_sw && (int)k->spi_bus == bus_number(f, wiring[i].bus);
		return k->spi_sw && (int)k->spi_pins[0] == pin_number(f, wiring[i].pins[0]) &&
		       (int)k->spi_pins[1] == pin_number(f, wiring[i].pins[1]) &&
		       (int)k->spi_pins[2] == pin_number(f, wiring[i].pins[2]);
	}
	return false;
}

/* ---- the dictionary ---- */

char *
sim_klipper_dict_json(const struct catalog_mcu *mcu, const char *version, uint32_t clock_freq)
{
	bool legacy = strncmp(version, "v0.10.", 6) == 0;
	enum catalog_family f = mcu->family;
	const char *const *b = buses(f);
	char pins[512], bus[256];
	size_t pl = 0, bl = 0;

	if (f == CATALOG_FAMILY_LPC176X)
		pl = (size_t)snprintf(pins, sizeof(pins),
				      "\"P0.0\": [0, 32], \"P1.0\": [32, 32], \"P2.0\": [64, 32], "
				      "\"P3.0\": [96, 32], \"P4.0\": [128, 32]");
	else
		for (char port = 'A'; port <= 'K'; port++)
			pl += (size_t)snprintf(pins + pl, sizeof(pins) - pl, "%s\"P%c0\": [%d, 16]",
					       port == 'A' ? "" : ", ", port, (port - 'A') * 16);
	for (int i = 0; b[i]; i++)
		bl += (size_t)snprintf(bus + bl, sizeof(bus) - bl, "%s\"%s\": %d", i ? ", " : "",
				       b[i], i);
	return xasprintf(
	    "{\"app\": \"Klipper\", \"license\": \"GNU GPLv3\", \"version\": \"%s\", "
	    "\"build_versions\": \"gcc: (sim) 12.2.0 binutils: (sim) 2.40\", "
	    "\"config\": {\"MCU\": \"%s\", \"CLOCK_FREQ\": %u, \"STATS_SUMPSQ_BASE\": 256, "
	    "\"RECEIVE_WINDOW\": 192}, "
	    "\"commands\": {\"identify offset=%%u count=%%c\": 1, \"get_config\": 10, "
	    "\"finalize_config crc=%%u\": 11, \"allocate_oids count=%%c\": 12, \"reset\": 13, "
	    "\"%s\": 20, \"config_spi_without_cs oid=%%c\": 21, "
	    "\"spi_set_bus oid=%%c spi_bus=%%u mode=%%u rate=%%u\": 22, "
	    "\"%s oid=%%c miso_pin=%%u mosi_pin=%%u sclk_pin=%%u mode=%%u %s=%%u\": 23, "
	    "\"spi_transfer oid=%%c data=%%*s\": 24, \"spi_send oid=%%c data=%%*s\": 25}, "
	    "\"responses\": {\"%s\": 0, \"%s\": 80, \"%s\": 81, \"%s\": 82, \"%s\": 83}, "
	    "\"enumerations\": {\"pin\": {%s}, \"spi_bus\": {%s}}}",
	    version, mcu->name, clock_freq,
	    legacy ? "config_spi oid=%c pin=%u" : "config_spi oid=%c pin=%u cs_active_high=%c",
	    legacy ? "spi_set_software_bus" : "spi_set_sw_bus", legacy ? "rate" : "pulse_ticks",
	    RSP_IDENTIFY, RSP_CONFIG, RSP_TRANSFER, RSP_SHUTDOWN, RSP_IS_SHUTDOWN, pins, bus);
}

/* The application's dictionary: the first zlib stream in its flash that inflates to JSON
 * with "commands" (what the firmware itself would answer identify with). */
static void
load_dict(struct sim_board *b)
{
	struct sim_klipper *k = &b->kl;
	uint32_t len = 0x4000;
	uint8_t *img = xmalloc(len);
	char *out = xmalloc(65536);

	if (flash_read(b->flash, b->app_start, img, len) != 0)
		len = 0;
	for (uint32_t i = 0; i + 2 < len && !k->dict_z; i++) {
		z_stream zs = {0};
		json_object *root, *cmds, *rsps;
		int r;

		if (img[i] != 0x78 || img[i + 1] != 0xda || inflateInit(&zs) != Z_OK)
			continue;
		zs.next_in = img + i;
		zs.avail_in = len - i;
		zs.next_out = (Bytef *)out;
		zs.avail_out = 65535;
		r = inflate(&zs, Z_FINISH);
		inflateEnd(&zs);
		if (r != Z_STREAM_END)
			continue;
		out[zs.total_out] = '\0';
		root = json_tokener_parse(out);
		if (root && json_object_object_get_ex(root, "commands", &cmds) &&
		    json_object_object_get_ex(root, "responses", &rsps)) {
			k->dict_z = xmalloc(zs.total_in);
			memcpy(k->dict_z, img + i, zs.total_in);
			k->dict_zlen = zs.total_in;
			k->n_cmds = 0;
			json_object_object_foreach(cmds, fmt, id) {
				for (size_t h = 0; h < ELEMENTSOF(handlers); h++)
					if (strcmp(handlers[h].format, fmt) == 0 &&
					    k->n_cmds < ELEMENTSOF(k->cmd_id)) {
						k->cmd_id[k->n_cmds] = json_object_get_int(id);
						k->cmd_h[k->n_cmds++] = (int)h;
					}
			}
			json_object_object_foreach(rsps, rfmt, rid) {
				int v = json_object_get_int(rid);

				if (strcmp(rfmt, RSP_IDENTIFY) == 0)
					k->rsp_identify = v;
				else if (strcmp(rfmt, RSP_CONFIG) == 0)
					k->rsp_config = v;
				else if (strcmp(rfmt, RSP_TRANSFER) == 0)
					k->rsp_transfer = v;
				else if (strcmp(rfmt, RSP_SHUTDOWN) == 0)
					k->rsp_shutdown = v;
				else if (strcmp(rfmt, RSP_IS_SHUTDOWN) == 0)
					k->rsp_is_shutdown = v;
			}
		}
		json_object_put(root);
	}
	free(out);
	free(img);
}

void
sim_klipper_boot(struct sim_board *b)
{
	struct sim_klipper *k = &b->kl;
	struct sim_sdcard *card = k->card;
	struct sim_klipper_stats st = k->stats;

	free(k->dict_z);
	memset(k, 0, sizeof(*k));
	k->card = card; /* the card keeps power (and its mode) over an MCU reset */
	k->stats = st;
	k->next_seq = 0;
	load_dict(b);
}

/* ---- wire: src/command.c rules, written again here ---- */

static uint16_t
crc16_ccitt(const uint8_t *buf, size_t len)
{
	uint16_t crc = 0xffff;

	/* src/generic/crc16_ccitt.c */
	for (size_t i = 0; i < len; i++) {
		uint8_t data = buf[i];

		data ^= (uint8_t)(crc & 0xff);
		data ^= (uint8_t)(data << 4);
		crc = (uint16_t)((((uint16_t)data << 8) | (crc >> 8)) ^ (uint8_t)(data >> 4) ^
				 ((uint16_t)data << 3));
	}
	return crc;
}

static uint8_t *
encode_int(uint8_t *p, uint32_t v)
{
	int32_t sv = (int32_t)v;

	if (sv < (3L << 5) && sv >= -(1L << 5))
		goto f4;
	if (sv < (3L << 12) && sv >= -(1L << 12))
		goto f3;
	if (sv < (3L << 19) && sv >= -(1L << 19))
		goto f2;
	if (sv < (3L << 26) && sv >= -(1L << 26))
		goto f1;
	*p++ = (uint8_t)((v >> 28) | 0x80);
f1:
	*p++ = (uint8_t)(((v >> 21) & 0x7f) | 0x80);
f2:
	*p++ = (uint8_t)(((v >> 14) & 0x7f) | 0x80);
f3:
	*p++ = (uint8_t)(((v >> 7) & 0x7f) | 0x80);
f4:
	*p++ = (uint8_t)(v & 0x7f);
	return p;
}

/* parse_int, bounded: false when it runs past end */
static bool
parse_int(const uint8_t **pp, const uint8_t *end, uint32_t *ret)
{
	const uint8_t *p = *pp;
	uint8_t c;
	uint32_t v;

	if (p >= end)
		return false;
	c = *p++;
	v = c & 0x7fu;
	if ((c & 0x60) == 0x60)
		v |= (uint32_t)-0x20;
	while (c & 0x80) {
		if (p >= end)
			return false;
		c = *p++;
		v = (v << 7) | (c & 0x7fu);
	}
	*pp = p;
	*ret = v;
	return true;
}

static void
send_block(struct sim_board *b, const uint8_t *payload, size_t n)
{
	uint8_t buf[64];
	uint16_t crc;
	size_t len = n + 5, off = 0;

	if (len > sizeof(buf) || b->master_fd < 0)
		return;
	if (b->fault.kind == SIM_FAULT_CORRUPT_FRAME && n && b->fault_replies++ >= b->fault.at &&
	    b->fault_replies <= b->fault.at + b->fault.count)
		return; /* modelled as lost on the wire */
	buf[0] = (uint8_t)len;
	buf[1] = (uint8_t)(0x10 | (b->kl.next_seq & 0x0f));
	if (n)
		memcpy(buf + 2, payload, n);
	crc = crc16_ccitt(buf, len - 3);
	buf[len - 3] = (uint8_t)(crc >> 8);
	buf[len - 2] = (uint8_t)crc;
	buf[len - 1] = 0x7e;
	while (off < len) {
		ssize_t w = write(b->master_fd, buf + off, len - off);

		if (w <= 0)
			return;
		off += (size_t)w;
	}
}

static void
send_ack(struct sim_board *b)
{
	send_block(b, NULL, 0);
}

static void
enter_shutdown(struct sim_board *b, uint16_t why)
{
	uint8_t m[16], *p = m;

	if (b->kl.shutdown)
		return;
	b->kl.shutdown = true;
	p = encode_int(p, (uint32_t)b->kl.rsp_shutdown);
	p = encode_int(p, 0);
	p = encode_int(p, why);
	send_block(b, m, (size_t)(p - m));
}

static void
send_transfer(struct sim_board *b, uint32_t oid, const uint8_t *data, size_t len)
{
	uint8_t m[64], *p = m;

	p = encode_int(p, (uint32_t)b->kl.rsp_transfer);
	p = encode_int(p, oid);
	*p++ = (uint8_t)len;
	memcpy(p, data, len);
	send_block(b, m, (size_t)(p - m) + len);
}

static void
spi(struct sim_board *b, uint32_t oid, const uint8_t *data, size_t len, bool reply)
{
	struct sim_klipper *k = &b->kl;
	uint8_t out[256];

	if (!k->oids || oid != 0 || !k->spi_configured) {
		enter_shutdown(b, 1); /* "Invalid oid" */
		return;
	}
	memset(out, 0xff, len);
	if (k->card && k->spi_bus_set && wired(b))
		sim_sdcard_transfer(k->card, data, out, len);
	k->stats.spi_bytes += len;
	if (reply)
		send_transfer(b, oid, out, len);
}

static void
send_config(struct sim_board *b)
{
	uint8_t m[32], *p = m;

	p = encode_int(p, (uint32_t)b->kl.rsp_config);
	p = encode_int(p, b->kl.is_config);
	p = encode_int(p, b->kl.crc);
	p = encode_int(p, b->kl.shutdown);
	p = encode_int(p, 0);
	send_block(b, m, (size_t)(p - m));
}

static void
send_identify(struct sim_board *b, uint32_t off, uint32_t count)
{
	uint8_t m[64], *p = m;
	size_t n = 0;

	if (off < b->kl.dict_zlen)
		n = b->kl.dict_zlen - off;
	if (n > count)
		n = count;
	if (n > 40)
		n = 40;
	p = encode_int(p, (uint32_t)b->kl.rsp_identify);
	p = encode_int(p, off);
	*p++ = (uint8_t)n;
	if (n)
		memcpy(p, b->kl.dict_z + off, n);
	send_block(b, m, (size_t)(p - m) + n);
}

/* Run one command; args are ints and buffers in format order. */
static void
run(struct sim_board *b, enum kl_handler h, const uint32_t *a, const uint8_t *buf, size_t blen)
{
	struct sim_klipper *k = &b->kl;

	switch (h) {
	case KL_IDENTIFY:
		send_identify(b, a[0], a[1]);
		break;
	case KL_GET_CONFIG:
		send_config(b);
		break;
	case KL_FINALIZE:
		k->is_config = 1;
		k->crc = a[0];
		break;
	case KL_ALLOCATE:
		if (k->oids)
			enter_shutdown(b, 2); /* "oids already allocated" */
		k->oids = a[0];
		break;
	case KL_RESET:
		sim_board_schedule(b, SIM_ACT_RESET, sim_board_delay_us(b, 15000, 1000));
		break;
	case KL_CONFIG_SPI:
	case KL_CONFIG_SPI_NOCS:
		if (!k->oids || a[0] >= k->oids) {
			enter_shutdown(b, 1);
			break;
		}
		k->spi_configured = true;
		k->spi_has_cs = h == KL_CONFIG_SPI;
		k->spi_cs = h == KL_CONFIG_SPI ? a[1] : 0;
		break;
	case KL_SET_BUS:
		k->spi_bus_set = true;
		k->spi_sw = false;
		k->spi_bus = a[1];
		break;
	case KL_SET_SW_BUS:
		k->spi_bus_set = true;
		k->spi_sw = true;
		memcpy(k->spi_pins, a + 1, sizeof(k->spi_pins));
		break;
	case KL_TRANSFER:
	case KL_SEND:
		spi(b, a[0], buf, blen, h == KL_TRANSFER);
		break;
	case KL_NONE:
	default:
		break;
	}
}

/* command_dispatch: every message of a block. */
static void
dispatch(struct sim_board *b, const uint8_t *p, const uint8_t *end)
{
	struct sim_klipper *k = &b->kl;

	while (p < end) {
		uint32_t id, args[8] = {0};
		const uint8_t *buf = NULL;
		size_t blen = 0, h = ELEMENTSOF(handlers), na = 0;
		const char *fmt;

		if (!parse_int(&p, end, &id))
			return;
		for (size_t i = 0; i < k->n_cmds; i++)
			if ((uint32_t)k->cmd_id[i] == id)
				h = (size_t)k->cmd_h[i];
		if (h == ELEMENTSOF(handlers)) {
			enter_shutdown(b, 3); /* "Invalid command" */
			return;
		}
		/* parameter types from the format: "%*s" is a buffer, the rest integers */
		for (fmt = strchr(handlers[h].format, '='); fmt; fmt = strchr(fmt + 1, '=')) {
			if (strncmp(fmt + 1, "%*s", 3) == 0) {
				if (p >= end || (size_t)(end - p) < 1u + *p) {
					enter_shutdown(b, 4); /* "Command parser error" */
					return;
				}
				blen = *p;
				buf = p + 1;
				p += 1 + blen;
			} else if (na < ELEMENTSOF(args) && !parse_int(&p, end, &args[na++])) {
				enter_shutdown(b, 4);
				return;
			}
		}
		if (k->shutdown && !handlers[h].in_shutdown) {
			uint8_t m[8], *q = encode_int(m, (uint32_t)k->rsp_is_shutdown);

			q = encode_int(q, 0);
			send_block(b, m, (size_t)(q - m));
			continue;
		}
		run(b, handlers[h].h, args, buf, blen);
	}
}

/* command_find_block + command_find_and_dispatch on what the host wrote. */
void
sim_klipper_process(struct sim_board *b)
{
	struct sim_klipper *k = &b->kl;
	size_t pos = 0;

	while (b->rx_len - pos >= 5) {
		uint8_t *m = b->rx + pos;
		size_t len = m[0];
		uint16_t crc;

		if (len < 5 || len > 64 || (m[1] & ~0x0f) != 0x10)
			goto error;
		if (b->rx_len - pos < len)
			break;
		crc = crc16_ccitt(m, len - 3);
		if (m[len - 1] != 0x7e || m[len - 3] != (uint8_t)(crc >> 8) ||
		    m[len - 2] != (uint8_t)crc)
			goto error;
		k->need_valid = false;
		pos += len;
		k->stats.blocks++;
		if (b->fault.kind == SIM_FAULT_DROP_FRAME && b->fault_frames++ >= b->fault.at &&
		    b->fault_frames <= b->fault.at + b->fault.count) {
			k->stats.dropped++;
			continue; /* lost on the wire: the host will retransmit */
		}
		if ((m[1] & 0x0f) != k->next_seq) {
			k->stats.naks++;
			send_ack(b); /* NAK: the seq this MCU expects */
			continue;
		}
		k->next_seq = (uint8_t)((k->next_seq + 1) & 0x0f);
		dispatch(b, m + 2, m + len - 3);
		send_ack(b);
		continue;
	error:
		if (m[0] == 0x7e) {
			pos++;
			continue;
		}
		{
			uint8_t *s = memchr(m, 0x7e, b->rx_len - pos);

			pos = s ? (size_t)(s - b->rx) + 1 : b->rx_len;
		}
		if (!k->need_valid) {
			k->need_valid = true;
			k->stats.naks++;
			send_ack(b);
		}
	}
	memmove(b->rx, b->rx + pos, b->rx_len - pos);
	b->rx_len -= pos;
}
