/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Simulator self-test: the Katapult device against the protocols.md §2.2 vectors byte for
 * byte, a full flash + readback driven by daemon/proto/katapult, the flash-write rules, the
 * USBFS prime quirk and reply faults. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include "flash.h"
#include "harness.h"
#include "proto/katapult.h"
#include "sim.h"

/* how long a command waits for its reply; shortened where silence is the expected outcome */
static int reply_timeout_ms = 3000;

struct host {
	int fd;
	uint8_t buf[2048];
	size_t len;
	uint8_t last[KATAPULT_FRAME_MAX]; /* raw bytes of the last frame */
	size_t last_len;
};

static int
host_open(struct host *h, struct sim_board *b)
{
	struct termios t;

	memset(h, 0, sizeof(*h));
	h->fd = open(sim_board_tty(b), O_RDWR | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);
	if (h->fd < 0)
		return -errno;
	if (tcgetattr(h->fd, &t) == 0) {
		cfmakeraw(&t);
		cfsetspeed(&t, B115200);
		tcsetattr(h->fd, TCSANOW, &t);
	}
	return 0;
}

/* A board of `model` in Katapult on `port`, its tty opened as a host would: NULL (and a
 * failed check when the board could not be made) when either fails. */
static struct sim_board *
katapult_board(struct sim *s, const char *model, const char *port, struct host *h)
{
	struct sim_board_spec spec = {
	    .model = model, .port = port, .bootloader = SIM_BL_KATAPULT, .mode = SIM_MODE_KATAPULT};
	struct sim_board *b = sim_board_add(s, &spec);

	CHECK(b != NULL);
	if (!b || host_open(h, b) < 0)
		return NULL;
	return b;
}

static void
host_close(struct host *h)
{
	if (h->fd >= 0)
		close(h->fd);
	h->fd = -1;
}

static void
host_send_raw(struct host *h, const uint8_t *d, size_t n)
{
	CHECK_EQ_INT(write(h->fd, d, n), (long long)n);
}

/* Next frame from the device within timeout_ms: 0 and *f, -ETIMEDOUT when silent. */
static int
host_recv(struct host *h, struct katapult_frame *f, int timeout_ms)
{
	for (;;) {
		int r = katapult_frame_find(h->buf, h->len, KATAPULT_FRAME_MAX, f, NULL);
		struct pollfd p = {.fd = h->fd, .events = POLLIN};
		ssize_t n;

		if (r > 0) {
			memcpy(h->last, h->buf, (size_t)r);
			h->last_len = (size_t)r;
			memmove(h->buf, h->buf + r, h->len - (size_t)r);
			h->len -= (size_t)r;
			f->payload = h->last + 4;
			return 0;
		}
		if (r < 0) {
			memmove(h->buf, h->buf + (size_t)-r, h->len - (size_t)-r);
			h->len -= (size_t)-r;
			continue;
		}
		if (poll(&p, 1, timeout_ms) <= 0)
			return -ETIMEDOUT;
		n = read(h->fd, h->buf + h->len, sizeof(h->buf) - h->len);
		if (n <= 0)
			return -EIO;
		h->len += (size_t)n;
	}
}

static int
host_cmd(struct host *h, uint8_t cmd, uint32_t w0, bool with_w0, const uint8_t *data,
	 size_t data_len, struct katapult_frame *f)
{
	uint8_t frame[KATAPULT_FRAME_MAX];
	int n = with_w0 ? katapult_frame_encode_word_bytes(cmd, w0, data, data_len, frame,
							   sizeof(frame))
			: katapult_frame_encode(cmd, NULL, 0, frame, sizeof(frame));

	if (n < 0)
		return n;
	host_send_raw(h, frame, (size_t)n);
	return host_recv(h, f, reply_timeout_ms);
}

static bool
last_is(const struct host *h, const char *hex)
{
	char got[2 * KATAPULT_FRAME_MAX + 1];

	for (size_t i = 0; i < h->last_len; i++)
		snprintf(got + 2 * i, 3, "%02x", h->last[i]);
	got[2 * h->last_len] = '\0';
	if (strcmp(got, hex) != 0)
		fprintf(stderr, "frame %s, expected %s\n", got, hex);
	return strcmp(got, hex) == 0;
}

static void
test_vectors_and_rules(struct sim *s)
{
	struct host h;
	struct sim_board *b = katapult_board(s, "octopus-f446", "1-1", &h);
	struct katapult_connect_info ci;
	struct katapult_frame f;
	uint8_t block[64], junk[8] = {0x01, 0x88, 0x11, 0x00, 0xde, 0xad, 0x99, 0x03};
	struct sim_katapult_stats st;

	if (!b)
		return;
	/* CONNECT (§2.2 vector 01 88 11 00 f1 7c 99 03) */
	CHECK_EQ_INT(host_cmd(&h, KATAPULT_CMD_CONNECT, 0, false, NULL, 0, &f), 0);
	CHECK_EQ_INT(katapult_parse_connect(&f, &ci), 0);
	CHECK_EQ_INT(ci.proto_version, 0x00010100);
	CHECK_EQ_INT(ci.app_start, 0x08008000);
	CHECK_EQ_INT(ci.block_size, 64);
	CHECK_STREQ(ci.mcu, "stm32f446xx");
	CHECK(ci.software_version[0] != '\0');
	/* a bad frame: exactly one NACK, then silence until a valid frame */
	host_send_raw(&h, junk, sizeof(junk));
	CHECK_EQ_INT(host_recv(&h, &f, 2000), 0);
	CHECK(last_is(&h, "0188f10068959903"));
	host_send_raw(&h, junk, sizeof(junk));
	CHECK_EQ_INT(host_recv(&h, &f, 200), -ETIMEDOUT);
	/* unknown command and the prime dummy: COMMAND_ERROR (01 88 f2 00 00 bf 99 03) */
	CHECK_EQ_INT(host_cmd(&h, KATAPULT_CMD_PRIME, 0, false, NULL, 0, &f), 0);
	CHECK(last_is(&h, "0188f20000bf9903"));
	CHECK_EQ_INT(host_cmd(&h, KATAPULT_CMD_GET_CANBUS_ID, 0, false, NULL, 0, &f), 0);
	CHECK_EQ_INT(f.code, KATAPULT_RSP_COMMAND_ERROR);
	/* mid-page block over the factory app: out of order (-2) */
	memset(block, 0x11, sizeof(block));
	CHECK_EQ_INT(host_cmd(&h, KATAPULT_CMD_SEND_BLOCK, 0x08008040, true, block, 64, &f), 0);
	CHECK_EQ_INT(f.code, KATAPULT_RSP_COMMAND_ERROR);
	/* below the app start: refused */
	CHECK_EQ_INT(host_cmd(&h, KATAPULT_CMD_SEND_BLOCK, 0x08000000, true, block, 64, &f), 0);
	CHECK_EQ_INT(f.code, KATAPULT_RSP_COMMAND_ERROR);
	/* wrong block length */
	CHECK_EQ_INT(host_cmd(&h, KATAPULT_CMD_SEND_BLOCK, 0x08008000, true, block, 32, &f), 0);
	CHECK_EQ_INT(f.code, KATAPULT_RSP_COMMAND_ERROR);
	/* page start: erases the 16 KiB sector; ACK vector of SEND_BLOCK @0x08008000 */
	CHECK_EQ_INT(host_cmd(&h, KATAPULT_CMD_SEND_BLOCK, 0x08008000, true, block, 64, &f), 0);
	CHECK(last_is(&h, "0188a00212000000008000088dd99903"));
	CHECK(flash_is_erased(sim_board_flash(b), 0x08008040, 0x4000 - 0x40));
	/* the next block is erased now; an identical resend is acknowledged, not rewritten */
	CHECK_EQ_INT(host_cmd(&h, KATAPULT_CMD_SEND_BLOCK, 0x08008040, true, block, 64, &f), 0);
	CHECK_EQ_INT(katapult_check_ack(&f, KATAPULT_CMD_SEND_BLOCK, NULL, NULL), 0);
	CHECK_EQ_INT(host_cmd(&h, KATAPULT_CMD_SEND_BLOCK, 0x08008040, true, block, 64, &f), 0);
	CHECK_EQ_INT(katapult_check_ack(&f, KATAPULT_CMD_SEND_BLOCK, NULL, NULL), 0);
	block[0] ^= 1;
	CHECK_EQ_INT(host_cmd(&h, KATAPULT_CMD_SEND_BLOCK, 0x08008040, true, block, 64, &f), 0);
	CHECK_EQ_INT(f.code, KATAPULT_RSP_COMMAND_ERROR);
	/* REQUEST_BLOCK reads back what was written */
	CHECK_EQ_INT(host_cmd(&h, KATAPULT_CMD_REQUEST_BLOCK, 0x08008000, true, NULL, 0, &f), 0);
	CHECK_EQ_INT(f.payload_len, 8 + 64);
	CHECK_EQ_INT(katapult_get_le32(f.payload + 4), 0x08008000);
	CHECK(f.payload_len == 72 && f.payload[8] == 0x11 && f.payload[71] == 0x11);
	sim_board_katapult_stats(b, &st);
	CHECK_EQ_INT(st.erases, 1);
	CHECK_EQ_INT(st.resends, 1);
	CHECK_EQ_INT(st.nacks, 1);
	/* COMPLETE: ACK vector, then the board reboots; the app is invalid now -> boot loop */
	CHECK_EQ_INT(host_cmd(&h, KATAPULT_CMD_COMPLETE, 0, false, NULL, 0, &f), 0);
	CHECK(last_is(&h, "0188a00115000000002e9903"));
	host_close(&h);
	CHECK_EQ_INT(sim_board_wait_mode(b, SIM_MODE_OFF, 2000), 0);
	sim_board_unplug(b);
}

/* Flash a whole image the way flashtool does (§2.4) and read it back. */
static void
flash_image(struct host *h, uint32_t start, const uint8_t *img, size_t len, uint32_t *ret_pages)
{
	struct katapult_frame f;
	const uint8_t *d;
	size_t dl;

	for (size_t off = 0; off < len; off += 64) {
		uint8_t blk[64];
		size_t n = len - off < 64 ? len - off : 64;

		memset(blk, 0xff, sizeof(blk));
		memcpy(blk, img + off, n);
		CHECK_EQ_INT(
		    host_cmd(h, KATAPULT_CMD_SEND_BLOCK, start + (uint32_t)off, true, blk, 64, &f),
		    0);
		CHECK_EQ_INT(katapult_check_ack(&f, KATAPULT_CMD_SEND_BLOCK, &d, &dl), 0);
	}
	CHECK_EQ_INT(host_cmd(h, KATAPULT_CMD_SEND_EOF, 0, false, NULL, 0, &f), 0);
	CHECK_EQ_INT(katapult_check_ack(&f, KATAPULT_CMD_SEND_EOF, &d, &dl), 0);
	*ret_pages = dl >= 4 ? katapult_get_le32(d) : 0;
	for (size_t off = 0; off < len; off += 64) {
		size_t n = len - off < 64 ? len - off : 64;

		CHECK_EQ_INT(host_cmd(h, KATAPULT_CMD_REQUEST_BLOCK, start + (uint32_t)off, true,
				      NULL, 0, &f),
			     0);
		CHECK_EQ_INT(katapult_check_ack(&f, KATAPULT_CMD_REQUEST_BLOCK, &d, &dl), 0);
		CHECK(dl == 68 && katapult_get_le32(d) == start + off &&
		      memcmp(d + 4, img + off, n) == 0);
	}
}

static void
test_full_flash_f103(struct sim *s)
{
	/* F103: 2 KiB pages, Katapult moves the app start to 8 KiB, USBFS prime quirk */
	struct sim_board_spec spec = {.model = "skr-mini-e3-v2-f103rc",
				      .port = "1-2",
				      .bootloader = SIM_BL_KATAPULT,
				      .mode = SIM_MODE_KLIPPER_APP,
				      .app_version = "v0.11.0-old"};
	struct sim_board *b = sim_board_add(s, &spec);
	const struct catalog_board *m;
	struct katapult_connect_info ci;
	struct katapult_frame f;
	struct host h;
	uint8_t *img;
	size_t len;
	uint32_t pages = 0;

	CHECK(b != NULL);
	if (!b)
		return;
	m = sim_board_model(b);
	CHECK_EQ_INT(sim_board_app_start(b), 0x08002000);
	CHECK_STREQ(sim_board_app_version(b), "v0.11.0-old");
	CHECK_EQ_INT(sim_board_plug(b, SIM_MODE_KATAPULT), 0);
	CHECK_EQ_INT(host_open(&h, b), 0);
	/* USBFS: the first IN packet of the enumeration is held until a second is queued */
	reply_timeout_ms = 300;
	CHECK_EQ_INT(host_cmd(&h, KATAPULT_CMD_PRIME, 0, false, NULL, 0, &f), -ETIMEDOUT);
	reply_timeout_ms = 3000;
	/* delayed, not lost: it comes out in front of CONNECT's reply */
	CHECK_EQ_INT(host_cmd(&h, KATAPULT_CMD_CONNECT, 0, false, NULL, 0, &f), 0);
	CHECK_EQ_INT(f.code, KATAPULT_RSP_COMMAND_ERROR);
	CHECK_EQ_INT(host_recv(&h, &f, reply_timeout_ms), 0);
	CHECK_EQ_INT(katapult_parse_connect(&f, &ci), 0);
	CHECK_EQ_INT(ci.app_start, 0x08002000);
	CHECK_STREQ(ci.mcu, "stm32f103xe");
	/* 10 KiB = 5 pages of 2 KiB: the EOF ACK is the §2.2 vector */
	img = sim_image_klipper(m->mcu, ci.app_start, "v0.12.0-new", 10240, &len);
	CHECK_EQ_INT(len, 10240);
	flash_image(&h, ci.app_start, img, len, &pages);
	CHECK_EQ_INT(pages, 5);
	{
		/* re-send EOF to compare its bytes with the vector */
		CHECK_EQ_INT(host_cmd(&h, KATAPULT_CMD_SEND_EOF, 0, false, NULL, 0, &f), 0);
		CHECK(last_is(&h, "0188a0021300000005000000c1b69903"));
	}
	CHECK_EQ_INT(host_cmd(&h, KATAPULT_CMD_COMPLETE, 0, false, NULL, 0, &f), 0);
	CHECK_EQ_INT(katapult_check_ack(&f, KATAPULT_CMD_COMPLETE, NULL, NULL), 0);
	host_close(&h);
	/* reboot into the new app, same USB serial as in Katapult */
	CHECK_EQ_INT(sim_board_wait_mode(b, SIM_MODE_KLIPPER_APP, 3000), 0);
	CHECK_STREQ(sim_board_app_version(b), "v0.12.0-new");
	CHECK_STREQ(sim_board_serial(b), sim_board_uid(b));
	CHECK(flash_app_valid(sim_board_flash(b), 0x08002000));
	free(img);
	sim_board_unplug(b);
}

static void
test_reply_faults(struct sim *s)
{
	struct host h;
	struct sim_board *b = katapult_board(s, "octopus-pro-h723", "1-5", &h);
	struct sim_fault fault = {.kind = SIM_FAULT_DROP_FRAME, .at = 1, .count = 1};
	struct katapult_frame f;

	if (!b)
		return;
	/* reply #1 is dropped */
	sim_board_set_fault(b, &fault);
	CHECK_EQ_INT(host_cmd(&h, KATAPULT_CMD_CONNECT, 0, false, NULL, 0, &f), 0);
	reply_timeout_ms = 300;
	CHECK_EQ_INT(host_cmd(&h, KATAPULT_CMD_CONNECT, 0, false, NULL, 0, &f), -ETIMEDOUT);
	reply_timeout_ms = 3000;
	CHECK_EQ_INT(host_cmd(&h, KATAPULT_CMD_CONNECT, 0, false, NULL, 0, &f), 0);
	/* a corrupted reply fails its CRC on the host */
	fault.kind = SIM_FAULT_CORRUPT_FRAME;
	fault.at = 0;
	sim_board_set_fault(b, &fault);
	reply_timeout_ms = 300;
	CHECK_EQ_INT(host_cmd(&h, KATAPULT_CMD_CONNECT, 0, false, NULL, 0, &f), -ETIMEDOUT);
	reply_timeout_ms = 3000;
	CHECK_EQ_INT(host_cmd(&h, KATAPULT_CMD_CONNECT, 0, false, NULL, 0, &f), 0);
	/* duplicated reply: the host sees the same frame twice */
	fault.kind = SIM_FAULT_DUP_FRAME;
	sim_board_set_fault(b, &fault);
	CHECK_EQ_INT(host_cmd(&h, KATAPULT_CMD_SEND_EOF, 0, false, NULL, 0, &f), 0);
	CHECK_EQ_INT(host_recv(&h, &f, 2000), 0);
	CHECK_EQ_INT(katapult_check_ack(&f, KATAPULT_CMD_SEND_EOF, NULL, NULL), 0);
	/* NACK storm over two frames */
	fault.kind = SIM_FAULT_NACK_STORM;
	fault.count = 2;
	sim_board_set_fault(b, &fault);
	CHECK_EQ_INT(host_cmd(&h, KATAPULT_CMD_CONNECT, 0, false, NULL, 0, &f), 0);
	CHECK_EQ_INT(f.code, KATAPULT_RSP_NACK);
	CHECK_EQ_INT(host_cmd(&h, KATAPULT_CMD_CONNECT, 0, false, NULL, 0, &f), 0);
	CHECK_EQ_INT(f.code, KATAPULT_RSP_NACK);
	CHECK_EQ_INT(host_cmd(&h, KATAPULT_CMD_CONNECT, 0, false, NULL, 0, &f), 0);
	CHECK_EQ_INT(f.code, KATAPULT_RSP_ACK);
	/* stall: 300 ms without an answer, then the reply comes */
	fault.kind = SIM_FAULT_STALL;
	fault.count = 300;
	sim_board_set_fault(b, &fault);
	CHECK_EQ_INT(host_cmd(&h, KATAPULT_CMD_CONNECT, 0, false, NULL, 0, &f), 0);
	/* unplug when the block at app start + 128 arrives */
	fault.kind = SIM_FAULT_UNPLUG_AT_BYTE;
	fault.at = 128;
	fault.count = 0;
	sim_board_set_fault(b, &fault);
	{
		uint8_t blk[64];

		memset(blk, 0x22, sizeof(blk));
		CHECK_EQ_INT(host_cmd(&h, KATAPULT_CMD_SEND_BLOCK, 0x08020000, true, blk, 64, &f),
			     0);
		CHECK_EQ_INT(host_cmd(&h, KATAPULT_CMD_SEND_BLOCK, 0x08020040, true, blk, 64, &f),
			     0);
		int r;

		reply_timeout_ms = 1000;
		/* the device vanished: the pty hangs up (EIO), as a real ttyACM does */
		r = host_cmd(&h, KATAPULT_CMD_SEND_BLOCK, 0x08020080, true, blk, 64, &f);
		CHECK(r == -EIO || r == -ETIMEDOUT);
		reply_timeout_ms = 3000;
	}
	CHECK_EQ_INT(sim_board_mode(b), SIM_MODE_OFF);
	host_close(&h);
}

/* The prime quirk is per enumeration: a second open answers at once, a replug holds again. */
static void
test_prime_per_enumeration(struct sim *s)
{
	struct host h;
	struct sim_board *b = katapult_board(s, "skr-mini-e3-v3", "1-6", &h);
	struct katapult_frame f;

	if (!b)
		return;
	/* CONNECT alone: held (its reply is shorter than one packet) */
	reply_timeout_ms = 300;
	CHECK_EQ_INT(host_cmd(&h, KATAPULT_CMD_CONNECT, 0, false, NULL, 0, &f), -ETIMEDOUT);
	reply_timeout_ms = 3000;
	CHECK_EQ_INT(host_cmd(&h, KATAPULT_CMD_CONNECT, 0, false, NULL, 0, &f), 0);
	CHECK_EQ_INT(katapult_check_ack(&f, KATAPULT_CMD_CONNECT, NULL, NULL), 0);
	CHECK_EQ_INT(host_recv(&h, &f, reply_timeout_ms), 0);
	CHECK_EQ_INT(katapult_check_ack(&f, KATAPULT_CMD_CONNECT, NULL, NULL), 0);
	host_close(&h);
	/* the same enumeration, opened again: no hold */
	CHECK_EQ_INT(host_open(&h, b), 0);
	reply_timeout_ms = 1000;
	CHECK_EQ_INT(host_cmd(&h, KATAPULT_CMD_CONNECT, 0, false, NULL, 0, &f), 0);
	CHECK_EQ_INT(katapult_check_ack(&f, KATAPULT_CMD_CONNECT, NULL, NULL), 0);
	host_close(&h);
	/* a new enumeration holds its first packet again */
	sim_board_unplug(b);
	CHECK_EQ_INT(sim_board_plug(b, SIM_MODE_KATAPULT), 0);
	CHECK_EQ_INT(host_open(&h, b), 0);
	reply_timeout_ms = 300;
	CHECK_EQ_INT(host_cmd(&h, KATAPULT_CMD_CONNECT, 0, false, NULL, 0, &f), -ETIMEDOUT);
	reply_timeout_ms = 3000;
	host_close(&h);
	sim_board_unplug(b);
}

static int
count_replies(struct host *h, uint8_t cmd, int quiet_ms)
{
	struct katapult_frame f;
	int n = 0;

	while (host_recv(h, &f, quiet_ms) == 0)
		if (katapult_check_ack(&f, cmd, NULL, NULL) == 0)
			n++;
	return n;
}

/* usb_cdc.c: replies that do not fit the 192-byte transmit buffer are dropped, and frames
 * are dispatched whatever the space: 8 reads at once lose replies, 2 (160 bytes) never do. */
static void
test_transmit_buffer(struct sim *s)
{
	struct host h;
	struct sim_board *b = katapult_board(s, "octopus-f446", "1-7", &h);
	struct sim_katapult_stats st;
	uint8_t burst[8 * 12], blk[64];
	size_t n = 0;
	int got;

	if (!b)
		return;
	for (uint32_t i = 0; i < 8; i++) {
		uint32_t addr = 0x08008000 + 64 * i;

		n += (size_t)katapult_frame_encode(KATAPULT_CMD_REQUEST_BLOCK, &addr, 1, burst + n,
						   sizeof(burst) - n);
	}
	CHECK_EQ_INT(n, sizeof(burst));
	host_send_raw(&h, burst, n);
	got = count_replies(&h, KATAPULT_CMD_REQUEST_BLOCK, 300);
	sim_board_katapult_stats(b, &st);
	CHECK(got < 8);
	CHECK(got >= 2);
	CHECK_EQ_INT(st.tx_dropped, 8 - (unsigned)got);
	/* two at a time: 160 bytes fit */
	for (unsigned round = 0; round < 16; round++) {
		host_send_raw(&h, burst + (round % 4) * 24, 24);
		CHECK_EQ_INT(count_replies(&h, KATAPULT_CMD_REQUEST_BLOCK, 100), 2);
	}
	/* SEND_BLOCK replies are 16 bytes: 12 fit */
	n = 0;
	memset(blk, 0x5a, sizeof(blk));
	for (uint32_t i = 0; i < 12; i++) {
		uint8_t frame[KATAPULT_FRAME_MAX];
		int len =
		    katapult_frame_encode_word_bytes(KATAPULT_CMD_SEND_BLOCK, 0x08008000 + 64 * i,
						     blk, sizeof(blk), frame, sizeof(frame));

		host_send_raw(&h, frame, (size_t)len);
	}
	CHECK_EQ_INT(count_replies(&h, KATAPULT_CMD_SEND_BLOCK, 500), 12);
	sim_board_katapult_stats(b, &st);
	CHECK_EQ_INT(st.tx_dropped, 8 - (unsigned)got);
	host_close(&h);
	sim_board_unplug(b);
}

static uint32_t
eof_pages(struct host *h)
{
	struct katapult_frame f;
	const uint8_t *d = NULL;
	size_t dl = 0;

	CHECK_EQ_INT(host_cmd(h, KATAPULT_CMD_SEND_EOF, 0, false, NULL, 0, &f), 0);
	CHECK_EQ_INT(katapult_check_ack(&f, KATAPULT_CMD_SEND_EOF, &d, &dl), 0);
	return d && dl >= 4 ? katapult_get_le32(d) : 0;
}

static uint8_t
send_block(struct host *h, uint32_t addr, uint8_t fill)
{
	struct katapult_frame f;
	uint8_t blk[64];

	memset(blk, fill, sizeof(blk));
	if (host_cmd(h, KATAPULT_CMD_SEND_BLOCK, addr, true, blk, sizeof(blk), &f) < 0)
		return 0;
	return f.code;
}

/* stm32/flash.c: a resent first block of a page that matches while the rest of the page is
 * erased is ignored: no second erase, not counted again. */
static void
test_stm32_resend_first_block(struct sim *s)
{
	struct host h;
	struct sim_board *b = katapult_board(s, "octopus-pro-h723", "1-8", &h);
	uint32_t app = b ? sim_board_app_start(b) : 0;
	struct sim_katapult_stats st;

	if (!b)
		return;
	CHECK_EQ_INT(send_block(&h, app, 0x31), KATAPULT_RSP_ACK);
	CHECK_EQ_INT(send_block(&h, app, 0x31), KATAPULT_RSP_ACK);
	sim_board_katapult_stats(b, &st);
	CHECK_EQ_INT(st.erases, 1);
	CHECK_EQ_INT(st.resends, 1);
	CHECK_EQ_INT(eof_pages(&h), 1);
	/* once the page holds more, the same first block erases it again and counts */
	CHECK_EQ_INT(send_block(&h, app + 64, 0x32), KATAPULT_RSP_ACK);
	CHECK_EQ_INT(send_block(&h, app, 0x31), KATAPULT_RSP_ACK);
	sim_board_katapult_stats(b, &st);
	CHECK_EQ_INT(st.erases, 2);
	CHECK(flash_is_erased(sim_board_flash(b), app + 64, 64));
	CHECK_EQ_INT(eof_pages(&h), 2);
	host_close(&h);
	sim_board_unplug(b);
}

/* lpc176x/flash.c: 256-byte chunks written when full or at EOF, in-order addresses only
 * unless both are chunk-aligned; EOF counts sectors. */
static void
test_lpc176x_rules(struct sim *s)
{
	struct host h;
	struct sim_board *b = katapult_board(s, "skr-1.4-turbo", "1-9", &h);
	uint32_t app = b ? sim_board_app_start(b) : 0;
	struct flash *fl = b ? sim_board_flash(b) : NULL;
	uint8_t want[64];

	if (!b)
		return;
	CHECK_EQ_INT(app, 0x4000);
	CHECK_EQ_INT(send_block(&h, app, 0x41), KATAPULT_RSP_ACK);
	CHECK_EQ_INT(send_block(&h, app + 64, 0x42), KATAPULT_RSP_ACK);
	/* buffered: the flash still holds the factory application */
	memset(want, 0x41, sizeof(want));
	CHECK(!flash_equals(fl, app, want, 64));
	/* resending a block it took: COMMAND_ERROR */
	CHECK_EQ_INT(send_block(&h, app + 64, 0x42), KATAPULT_RSP_COMMAND_ERROR);
	CHECK_EQ_INT(send_block(&h, app + 128, 0x43), KATAPULT_RSP_ACK);
	CHECK_EQ_INT(send_block(&h, app + 192, 0x44), KATAPULT_RSP_ACK);
	/* the chunk is full: written */
	CHECK(flash_equals(fl, app, want, 64));
	CHECK(flash_is_erased(fl, app + 256, 4096 - 256));
	/* both chunk-aligned: a chunk may start again */
	CHECK_EQ_INT(send_block(&h, app + 256, 0x45), KATAPULT_RSP_ACK);
	CHECK_EQ_INT(send_block(&h, app + 256, 0x45), KATAPULT_RSP_COMMAND_ERROR);
	CHECK_EQ_INT(send_block(&h, app, 0x41), KATAPULT_RSP_COMMAND_ERROR);
	CHECK(flash_is_erased(fl, app + 256, 64));
	/* EOF writes the partial chunk, padded; one 4 KiB sector */
	CHECK_EQ_INT(eof_pages(&h), 1);
	memset(want, 0x45, sizeof(want));
	CHECK(flash_equals(fl, app + 256, want, 64));
	CHECK(flash_is_erased(fl, app + 320, 192));
	host_close(&h);
	sim_board_unplug(b);
}

/* rp2040/flash.c: a 256-byte page buffer flushed on leaving it or at EOF; EOF counts pages. */
static void
test_rp2040_rules(struct sim *s)
{
	struct host h;
	struct sim_board *b = katapult_board(s, "skr-pico", "1-10", &h);
	uint32_t app = b ? sim_board_app_start(b) : 0;
	struct flash *fl = b ? sim_board_flash(b) : NULL;
	uint8_t want[64];

	if (!b)
		return;
	CHECK_EQ_INT(app, 0x10004000);
	memset(want, 0x51, sizeof(want));
	for (uint32_t i = 0; i < 4; i++)
		CHECK_EQ_INT(send_block(&h, app + 64 * i, (uint8_t)(0x51 + i)), KATAPULT_RSP_ACK);
	/* the page is full but still buffered until a block outside it */
	CHECK(!flash_equals(fl, app, want, 64));
	CHECK_EQ_INT(send_block(&h, app + 256, 0x55), KATAPULT_RSP_ACK);
	CHECK(flash_equals(fl, app, want, 64));
	/* a resend inside the buffered page just replaces the block */
	CHECK_EQ_INT(send_block(&h, app + 256, 0x55), KATAPULT_RSP_ACK);
	CHECK_EQ_INT(eof_pages(&h), 2);
	memset(want, 0x55, sizeof(want));
	CHECK(flash_equals(fl, app + 256, want, 64));
	CHECK(flash_is_erased(fl, app + 320, 192));
	host_close(&h);
	sim_board_unplug(b);
}

int
main(int argc, char **argv)
{
	struct sim *s;

	sim_init(argc, argv);
	s = sim_new();
	test_vectors_and_rules(s);
	test_full_flash_f103(s);
	test_reply_faults(s);
	test_prime_per_enumeration(s);
	test_transmit_buffer(s);
	test_stm32_resend_first_block(s);
	test_lpc176x_rules(s);
	test_rp2040_rules(s);
	sim_free(s);
	TEST_DONE();
}
