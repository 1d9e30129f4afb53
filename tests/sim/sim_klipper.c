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
 * command formats ("config_spi oid=%c pin=%u", "spi_set_software_bus ... rate=%u").
 *
 * Timing (a board with speed > 0; bench/README.md lists facts and assumptions). What the
 * real firmware does, read in Klipper3d/klipper @5d55c5e6:
 * - src/generic/usb_cdc.c: console_sendf encodes a response into transmit_buf[192] and
 *   drops it ("Not enough space for message") when transmit_pos plus the message's
 *   max_size exceeds 192. max_size is the most the message can encode to (buildcommands.py):
 *   MESSAGE_MAX 64 for one with a buffer such as spi_transfer_response, MESSAGE_MIN 5 for an
 *   ack. usb_bulk_in_task moves at most 64 bytes (63 when exactly 64 are queued: no
 *   zero-length packet) into the bulk IN endpoint once the host has read the previous
 *   packet. usb_bulk_out_task takes a 64-byte OUT packet into receive_buf[128] when there is
 *   room (the host is NAKed otherwise: nothing is lost) and dispatches one block per run;
 *   nothing there looks at the transmit space.
 * - src/command.c: command_find_and_dispatch runs every command of a block in order and
 *   then sends the ack (an empty block); a block with an unexpected seq is NAKed.
 * - src/spicmds.c: spi_transfer clocks its bytes with CS asserted (spidev_transfer), then
 *   sends spi_transfer_response with what it read; spi_send clocks and answers nothing. The
 *   MCU waits for every byte meanwhile (src/stm32/spi.c, src/lpc176x/spi.c spi_transfer);
 *   src/spi_software.c (spi_set_sw_bus) spends pulse_ticks CPU ticks per bit.
 * The model: host bytes reach the MCU at the full-speed wire rate (19 packets of 64 bytes
 * per 1 ms frame); a block is dispatched when its last byte has arrived and the MCU has
 * finished the one before, on the MCU's own clock (not when this thread got round to it).
 * Commands cost no CPU time besides SPI: 8 bits per byte at the bus rate (spi_set_bus rate,
 * or CLOCK_FREQ / pulse_ticks), and the card's busy and access times (sdcard.c), both scaled
 * by the speed factor. Responses go through the 192-byte transmit buffer as above; the host
 * reads an endpoint packet one wire slot after the previous one, or one frame later (scaled)
 * when the block it answers was alone on the bus: no more host bytes waiting and none in the
 * frame before it (the Katapult model's assumption; "alone" also looks back a frame here: a
 * host that keeps commands going keeps the bulk IN endpoint polled). Not modelled: receive_buf's
 * 128 bytes (a block waits in the host's buffers instead, with the same dispatch time; the
 * simulator stops reading the tty while its own buffer is full). */
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
	KL_SET_SW_BUS_RATE, /* the older spi_set_software_bus: rate=, not pulse_ticks= */
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
     KL_SET_SW_BUS_RATE, false},
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
	    "\"config\": {\"MCU\": \"%s\", \"CLOCK_FREQ\": %u, \"STATS_SUMPSQ_BASE\": 256}, "
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
		json_object *root, *cmds, *rsps, *cfg, *clk;
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
		if (root && json_object_object_get_ex(root, "config", &cfg) &&
		    json_object_object_get_ex(cfg, "CLOCK_FREQ", &clk))
			k->clock_freq = (uint32_t)json_object_get_int64(clk);
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

/* ---- the timing model (see the top of the file) ---- */

#define KL_TX_BUF 192		     /* usb_cdc.c transmit_buf */
#define KL_EP_SIZE 64		     /* USB_CDC_EP_BULK_IN_SIZE */
#define KL_WIRE_BYTES_PER_FRAME 1216 /* 19 bulk packets of 64 bytes per 1 ms frame */
#define KL_DEFAULT_SPI_RATE 400000u  /* before spi_set_bus: never used for a card */

static bool
timed(const struct sim_board *b)
{
	return b->speed > 0;
}

static uint64_t
wire_us(const struct sim_board *b, size_t n)
{
	return ((uint64_t)n * b->flash->timing.usb_frame_us + KL_WIRE_BYTES_PER_FRAME - 1) /
	       KL_WIRE_BYTES_PER_FRAME;
}

/* Host bytes b->rx[rx_seen, rx_len) were just read: they arrive at the wire rate. */
static void
note_arrival(struct sim_board *b)
{
	struct sim_klipper *k = &b->kl;
	uint64_t now = sim_now_us(), start;
	size_t n;

	if (k->rx_seen > b->rx_len) { /* the simulator dropped rx (tty closed) */
		k->rx_seen = 0;
		k->n_marks = 0;
	}
	n = b->rx_len - k->rx_seen;
	if (!n)
		return;
	start = k->out_clock > now ? k->out_clock : now;
	k->out_clock = start + wire_us(b, n);
	k->rx_total += n;
	k->rx_seen = b->rx_len;
	if (k->n_marks == ELEMENTSOF(k->marks)) { /* merge the oldest: later, never earlier */
		memmove(k->marks, k->marks + 1, (k->n_marks - 1) * sizeof(k->marks[0]));
		k->n_marks--;
	}
	k->marks[k->n_marks].end = k->rx_total;
	k->marks[k->n_marks].at = k->out_clock;
	k->n_marks++;
}

/* When the byte before b->rx[pos] reached the MCU, in ns. */
static uint64_t
arrival_ns(const struct sim_board *b, size_t pos)
{
	const struct sim_klipper *k = &b->kl;
	uint64_t end = k->rx_total - k->rx_seen + pos;

	for (unsigned i = 0; i < k->n_marks; i++) {
		uint64_t back;

		if (k->marks[i].end < end)
			continue;
		back = wire_us(b, (size_t)(k->marks[i].end - end));
		return (k->marks[i].at > back ? k->marks[i].at - back : 0) * 1000;
	}
	return k->out_clock * 1000;
}

static void
consumed(struct sim_board *b, size_t pos)
{
	struct sim_klipper *k = &b->kl;
	uint64_t gone = k->rx_total - k->rx_seen + pos;
	unsigned i = 0;

	k->rx_seen = pos > k->rx_seen ? 0 : k->rx_seen - pos;
	while (i < k->n_marks && k->marks[i].end <= gone)
		i++;
	memmove(k->marks, k->marks + i, (k->n_marks - i) * sizeof(k->marks[0]));
	k->n_marks -= i;
}

static void
write_host(struct sim_board *b, const uint8_t *buf, size_t len)
{
	size_t off = 0;

	while (off < len && b->master_fd >= 0) {
		ssize_t w = write(b->master_fd, buf + off, len - off);

		if (w <= 0)
			return;
		off += (size_t)w;
	}
}

/* usb_bulk_in_task: a free endpoint takes the next packet at t (us). */
static void
load_endpoint(struct sim_board *b, uint64_t t, bool lone)
{
	struct sim_klipper *k = &b->kl;
	size_t q = k->tx_len;

	if (k->ep || !q)
		return;
	k->ep = q > KL_EP_SIZE ? KL_EP_SIZE : q == KL_EP_SIZE ? KL_EP_SIZE - 1 : q;
	k->ep_read_us = t + (lone ? (uint64_t)((double)b->flash->timing.usb_frame_us * b->speed)
				  : wire_us(b, KL_EP_SIZE));
	if (k->ep_read_us < k->in_hold_until)
		k->ep_read_us = k->in_hold_until;
}

/* The host reads every endpoint packet due by t. */
static void
in_advance(struct sim_board *b, uint64_t t)
{
	struct sim_klipper *k = &b->kl;

	if (t < k->in_clock)
		t = k->in_clock;
	while (k->ep && k->ep_read_us <= t) {
		uint64_t at = k->ep_read_us;

		write_host(b, k->tx, k->ep);
		memmove(k->tx, k->tx + k->ep, k->tx_len - k->ep);
		k->tx_len -= k->ep;
		k->ep = 0;
		load_endpoint(b, at, false);
	}
	k->in_clock = t;
}

/* console_sendf at the MCU's time: into transmit_buf, or dropped when max_size does not fit. */
static void
transmit(struct sim_board *b, const uint8_t *buf, size_t len, size_t max_size, bool lone)
{
	struct sim_klipper *k = &b->kl;
	uint64_t t = k->t_ns / 1000;

	if (b->fault.kind == SIM_FAULT_STALL && len > 5 && b->fault_replies++ == b->fault.at) {
		/* the host stops reading IN packets for a while (a busy hub, a slow host) */
		k->in_hold_until = t + (uint64_t)b->fault.count * 1000u;
		if (k->ep && k->ep_read_us < k->in_hold_until)
			k->ep_read_us = k->in_hold_until;
	}
	in_advance(b, t);
	if (k->tx_len - k->ep + max_size > KL_TX_BUF || k->tx_len + len > sizeof(k->tx)) {
		k->stats.tx_dropped++;
		return;
	}
	memcpy(k->tx + k->tx_len, buf, len);
	k->tx_len += len;
	load_endpoint(b, t, lone && k->tx_len == len);
}

/* Largest encoding of a response (buildcommands.py max_size): a buffer takes the rest of a
 * block; integers at most 5 bytes each (approximated from the encoded length). */
static size_t
max_size(const struct sim_board *b, const uint8_t *payload, size_t n)
{
	const struct sim_klipper *k = &b->kl;

	if (!n)
		return 5;
	if (payload[0] == (uint8_t)k->rsp_transfer || payload[0] == (uint8_t)k->rsp_identify)
		return 64;
	return n + 5 + 8 > 64 ? 64 : n + 5 + 8;
}

static void
send_block(struct sim_board *b, const uint8_t *payload, size_t n)
{
	uint8_t buf[64];
	uint16_t crc;
	size_t len = n + 5;

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
	if (timed(b)) {
		transmit(b, buf, len, max_size(b, payload, n), b->kl.lone);
		return;
	}
	write_host(b, buf, len);
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
	if (timed(b)) {
		/* 8 bits per byte at the bus clock, scaled like every device time */
		uint32_t rate = k->spi_rate ? k->spi_rate : KL_DEFAULT_SPI_RATE;
		uint32_t byte_ns = (uint32_t)(8e9 / rate * b->speed) + 1;

		if (k->card && k->spi_bus_set && wired(b))
			sim_sdcard_transfer_at(k->card, data, out, len, k->t_ns, byte_ns, b->speed);
		k->t_ns += (uint64_t)byte_ns * len;
	} else if (k->card && k->spi_bus_set && wired(b)) {
		sim_sdcard_transfer(k->card, data, out, len);
	}
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
		k->spi_rate = a[3];
		break;
	case KL_SET_SW_BUS:
	case KL_SET_SW_BUS_RATE:
		k->spi_bus_set = true;
		k->spi_sw = true;
		memcpy(k->spi_pins, a + 1, sizeof(k->spi_pins));
		/* spi_software.c: pulse_ticks CPU ticks per bit (the older command: rate=) */
		k->spi_rate = h == KL_SET_SW_BUS_RATE ? a[5]
			      : a[5] && k->clock_freq ? k->clock_freq / a[5]
						      : 0;
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
	uint64_t now_ns = sim_now_us() * 1000;
	size_t pos = 0;

	if (timed(b))
		note_arrival(b);
	while (b->rx_len - pos >= 5) {
		uint8_t *m = b->rx + pos;
		size_t len = m[0];
		uint16_t crc;

		if (len < 5 || len > 64 || (m[1] & ~0x0f) != 0x10)
			goto error;
		if (b->rx_len - pos < len)
			break;
		if (timed(b)) {
			/* the MCU takes the block when it has arrived and the MCU is free */
			uint64_t at = arrival_ns(b, pos + len);

			k->t_ns = at > k->cpu_free_ns ? at : k->cpu_free_ns;
			if (k->t_ns > now_ns)
				break;
			/* alone on the bus: nothing behind it, nothing in the frame before it */
			k->lone = b->rx_len == pos + len &&
				  at / 1000 > k->last_block_us + b->flash->timing.usb_frame_us;
			k->last_block_us = at / 1000;
		}
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
		k->cpu_free_ns = k->t_ns;
		continue;
	error:
		if (timed(b) && k->t_ns < k->cpu_free_ns)
			k->t_ns = k->cpu_free_ns;
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
	if (timed(b)) {
		consumed(b, pos);
		in_advance(b, now_ns / 1000);
	}
}

void
sim_klipper_run(struct sim_board *b)
{
	if (timed(b) && b->mode == SIM_MODE_KLIPPER_APP && b->tty_open)
		sim_klipper_process(b);
}

uint64_t
sim_klipper_next_us(const struct sim_board *b)
{
	const struct sim_klipper *k = &b->kl;
	uint64_t next = UINT64_MAX;

	if (!timed(b) || b->mode != SIM_MODE_KLIPPER_APP || !b->tty_open)
		return next;
	if (k->ep)
		next = k->ep_read_us;
	if (b->rx_len >= 5 && b->rx[0] >= 5 && b->rx[0] <= 64 && b->rx_len >= b->rx[0]) {
		uint64_t at = arrival_ns(b, b->rx[0]);
		uint64_t t = (at > k->cpu_free_ns ? at : k->cpu_free_ns) / 1000 + 1;

		if (t < next)
			next = t;
	}
	return next;
}

bool
sim_klipper_wants_input(const struct sim_board *b)
{
	return !timed(b) || b->rx_len < sizeof(b->rx);
}
