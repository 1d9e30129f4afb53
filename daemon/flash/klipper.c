/* SPDX-License-Identifier: GPL-2.0-or-later */
/* flash/klipper: blocking Klipper host client over a tty (see klipper.h).
 *
 * Transport rules, from klippy/chelper/serialqueue.c:
 * - Blocks carry send_seq; every block from the MCU carries the seq it expects next, which
 *   acknowledges every earlier block (update_receive_seq).
 * - At most MAX_PENDING_BLOCKS (12) blocks and RECEIVE_WINDOW bytes (a dictionary constant,
 *   the MCU's receive buffer) are unacknowledged at a time. Firmware without the constant
 *   has no byte limit (check_send_command skips it when receive_window is 0): Klipper's
 *   USB builds declare none (src/generic/usb_cdc.c; the bulk OUT endpoint NAKs what
 *   receive_buf cannot take, nothing is lost), the UART ones declare their buffer
 *   (src/generic/serial_irq.c RX_BUFFER_SIZE 192).
 * - The retransmit timer (rto, RFC 6298 from round-trip samples of blocks not retransmitted,
 *   25 ms .. 5 s) resends every unacknowledged block behind a sync byte and doubles rto
 *   (retransmit_event). An empty block whose seq does not advance is a NAK (the MCU dropped
 *   a block with an unexpected seq, src/command.c command_find_block): resend at once, but
 *   not twice for the same loss (ignore_nak_seq).
 * - Messages are packed into blocks of up to 59 payload bytes in queue order
 *   (build_and_send_command).
 * One rule serialqueue.c does not have (klippy never has many queries in flight): the
 * MCU's USB transmit buffer. src/generic/usb_cdc.c console_sendf drops a response when
 * transmit_pos + the response's max_size exceeds transmit_buf[192], and the MCU dispatches
 * every block as it comes without looking at that space. A query response with a buffer
 * (spi_transfer_response, identify_response) has max_size MESSAGE_MAX (64), so at most
 * 192 / 64 = 3 of them may be owed at a time: blocks carrying more wait. A command counts
 * as a query when the dictionary has "<name>_response" (Klipper's naming). That is not a
 * guarantee (a small packet, an ack, can sit in the bulk IN endpoint while the MCU fills the
 * buffer behind it), so lost responses are detected: the MCU answers block n with blocks of
 * seq n + 1 (command_find_block advances next_sequence before command_dispatch), its ack
 * comes after them, so a block acknowledged with fewer responses than it asked for lost the
 * rest. Each loss takes its place in the response queue as -ENOMSG. A block carries one
 * query at most, so which answer was lost is never in doubt.
 * The MCU keeps its next expected seq across host connections (static next_sequence), so
 * open() first sends an empty block: the MCU answers it (ack or NAK) with the seq it
 * expects, and numbering continues from there. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>
#include <zlib.h>

#include "flash/klipper.h"
#include "image/kdict.h"
#include "log.h"
#include "util.h"

#define KC_DEFAULT_WINDOW 12 /* serialqueue.c MAX_PENDING_BLOCKS */
#define KC_MAX_WINDOW 32
#define KC_DEFAULT_TIMEOUT_MS 5000
#define KC_MIN_RTO_US 25000u   /* MIN_RTO */
#define KC_MAX_RTO_US 5000000u /* MAX_RTO */
#define KC_QUEUE_MSGS 512
#define KC_INQ 512
#define KC_IDENTIFY_CHUNK 40 /* serialhdl.py _get_identify_data */
#define KC_DICT_MAX (1u << 20)
#define KC_MAX_REPLIES 3 /* usb_cdc.c transmit_buf 192 / MESSAGE_MAX 64 */
#define KC_OWED 64

struct kc_sent {
	uint8_t buf[KLIPPER_MESSAGE_MAX];
	size_t len;
	uint64_t seq;
	uint64_t sent_us;
	bool retransmitted;
	unsigned replies; /* query responses the block asks for */
};

/* A block that asked for query responses. */
struct kc_owed {
	uint64_t seq;
	unsigned expect, got;
};

struct klipper_client {
	int fd;
	char tty[256];
	char error[512];
	struct klipper_dict dict;
	char *raw;
	size_t raw_len;
	unsigned window, timeout_ms, receive_window;
	/* queued messages, not yet in a block */
	uint8_t q[KC_QUEUE_MSGS][KLIPPER_PAYLOAD_MAX];
	uint8_t q_len[KC_QUEUE_MSGS];
	bool q_reply[KC_QUEUE_MSGS];
	size_t q_head, q_n;
	unsigned replies_owed; /* query responses of unacknowledged blocks */
	unsigned max_replies;
	struct kc_owed owed[KC_OWED]; /* blocks with queries not all answered, oldest first */
	size_t n_owed;
	/* blocks sent and not yet acknowledged, oldest first */
	struct kc_sent sent[KC_MAX_WINDOW];
	size_t n_sent;
	size_t need_ack_bytes;
	uint64_t send_seq, receive_seq, last_ack_seq, ignore_nak_seq, retransmit_seq;
	uint64_t rto_us, srtt_us, rttvar_us, rtx_at_us;
	/* received */
	uint8_t rx[4096];
	size_t rx_len;
	struct klipper_response *inq;
	size_t inq_head, inq_n;
	bool shutdown;
	struct klipper_client_stats stats;
};

static void kc_error(struct klipper_client *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
kc_error(struct klipper_client *c, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(c->error, sizeof(c->error), fmt, ap);
	va_end(ap);
}

static int
kc_write(struct klipper_client *c, const uint8_t *buf, size_t len)
{
	size_t done = 0;

	while (done < len) {
		ssize_t n = write(c->fd, buf + done, len - done);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN) {
			struct pollfd p = {.fd = c->fd, .events = POLLOUT};

			if (poll(&p, 1, (int)c->timeout_ms) <= 0 ||
			    (p.revents & (POLLHUP | POLLERR)))
				return -ENODEV;
			continue;
		}
		if (n <= 0)
			return -ENODEV;
		done += (size_t)n;
	}
	return 0;
}

/* Pack queued messages into one block and send it, if the window allows. 1 sent, 0 not. */
static int
send_block(struct klipper_client *c)
{
	uint8_t payload[KLIPPER_PAYLOAD_MAX];
	size_t plen = 0;
	struct kc_sent *s;
	int r;

	unsigned replies = 0;

	if (!c->q_n || c->n_sent >= c->window)
		return 0;
	while (c->q_n && plen + c->q_len[c->q_head] <= sizeof(payload)) {
		/* one query per block: a loss is then always that block's one answer */
		if (c->q_reply[c->q_head] && (replies || c->replies_owed + 1 > c->max_replies))
			break;
		replies += c->q_reply[c->q_head];
		memcpy(payload + plen, c->q[c->q_head], c->q_len[c->q_head]);
		plen += c->q_len[c->q_head];
		c->q_head = (c->q_head + 1) % KC_QUEUE_MSGS;
		c->q_n--;
	}
	if (!plen)
		return 0; /* the next message waits for transmit space */
	s = &c->sent[c->n_sent];
	r = klipper_block_encode((uint8_t)c->send_seq, payload, plen, s->buf, sizeof(s->buf));
	if (r < 0)
		return r;
	s->replies = replies;
	c->replies_owed += replies;
	if (replies && c->n_owed < KC_OWED)
		c->owed[c->n_owed++] = (struct kc_owed){.seq = c->send_seq, .expect = replies};
	s->len = (size_t)r;
	s->seq = c->send_seq++;
	s->sent_us = now_monotonic_usec();
	s->retransmitted = false;
	c->n_sent++;
	c->need_ack_bytes += s->len;
	if (c->n_sent == 1)
		c->rtx_at_us = s->sent_us + c->rto_us;
	c->stats.blocks_sent++;
	r = kc_write(c, s->buf, s->len);
	return r < 0 ? r : 1;
}

/* The MCU's receive buffer: never more unacknowledged bytes than it holds (a full block is
 * assumed, the block is built only after this check). */
static bool
window_has_room(const struct klipper_client *c)
{
	return c->n_sent < c->window &&
	       (c->n_sent == 0 || !c->receive_window ||
		c->need_ack_bytes + KLIPPER_MESSAGE_MAX <= c->receive_window) &&
	       (!c->q_n || !c->q_reply[c->q_head] || c->replies_owed < c->max_replies);
}

/* serialqueue.c retransmit_event: resend every unacknowledged block behind a sync byte. */
static int
retransmit(struct klipper_client *c, bool nak)
{
	uint8_t buf[1 + KC_MAX_WINDOW * KLIPPER_MESSAGE_MAX];
	size_t len = 0;
	uint64_t now = now_monotonic_usec();

	buf[len++] = KLIPPER_SYNC;
	for (size_t i = 0; i < c->n_sent; i++) {
		memcpy(buf + len, c->sent[i].buf, c->sent[i].len);
		len += c->sent[i].len;
		c->sent[i].retransmitted = true;
		c->stats.retransmits++;
	}
	if (nak) {
		c->ignore_nak_seq = c->receive_seq;
		if (c->receive_seq < c->retransmit_seq)
			c->ignore_nak_seq = c->retransmit_seq;
	} else {
		c->rto_us = c->rto_us * 2 > KC_MAX_RTO_US ? KC_MAX_RTO_US : c->rto_us * 2;
		c->ignore_nak_seq = c->send_seq;
	}
	c->retransmit_seq = c->send_seq;
	c->rtx_at_us = now + c->rto_us;
	return kc_write(c, buf, len);
}

/* RFC 6298 as serialqueue.c update_receive_seq does it (srtt starts high: 10x the sample). */
static void
rtt_sample(struct klipper_client *c, uint64_t delta)
{
	uint64_t var4;

	if (!c->srtt_us) {
		c->rttvar_us = delta / 2;
		c->srtt_us = delta * 10;
	} else {
		uint64_t diff = c->srtt_us > delta ? c->srtt_us - delta : delta - c->srtt_us;

		c->rttvar_us = (3 * c->rttvar_us + diff) / 4;
		c->srtt_us = (7 * c->srtt_us + delta) / 8;
	}
	var4 = c->rttvar_us * 4 < 1000 ? 1000 : c->rttvar_us * 4;
	c->rto_us = c->srtt_us + var4;
	if (c->rto_us < KC_MIN_RTO_US)
		c->rto_us = KC_MIN_RTO_US;
	if (c->rto_us > KC_MAX_RTO_US)
		c->rto_us = KC_MAX_RTO_US;
}

static void
ack_to(struct klipper_client *c, uint64_t rseq)
{
	uint64_t now = now_monotonic_usec();
	size_t k = 0;

	while (k < c->n_sent && c->sent[k].seq < rseq) {
		if (c->sent[k].seq + 1 == rseq && !c->sent[k].retransmitted)
			rtt_sample(c, now - c->sent[k].sent_us);
		c->need_ack_bytes -= c->sent[k].len;
		c->replies_owed -= c->sent[k].replies;
		k++;
	}
	memmove(c->sent, c->sent + k, (c->n_sent - k) * sizeof(c->sent[0]));
	c->n_sent -= k;
	c->receive_seq = rseq;
	c->rtx_at_us = c->n_sent ? now + c->rto_us : 0;
}

/* A slot at the tail of the response queue (the oldest is dropped when nobody reads). */
static struct klipper_response *
inq_tail(struct klipper_client *c)
{
	if (c->inq_n == KC_INQ) {
		c->inq_head = (c->inq_head + 1) % KC_INQ;
		c->inq_n--;
	}
	return &c->inq[(c->inq_head + c->inq_n) % KC_INQ];
}

/* Blocks before seq got every answer they will get: what is missing was dropped. */
static void
owed_complete(struct klipper_client *c, uint64_t seq)
{
	size_t k = 0;

	while (k < c->n_owed && c->owed[k].seq < seq) {
		for (unsigned i = c->owed[k].got; i < c->owed[k].expect; i++) {
			struct klipper_response *r = inq_tail(c);

			memset(r, 0, sizeof(*r)); /* fmt NULL: lost */
			r->received_us = now_monotonic_usec();
			c->inq_n++;
			c->stats.responses_lost++;
		}
		k++;
	}
	memmove(c->owed, c->owed + k, (c->n_owed - k) * sizeof(c->owed[0]));
	c->n_owed -= k;
}

/* A query response in a block of seq rseq answers the host's block rseq - 1. */
static void
owed_got(struct klipper_client *c, uint64_t rseq, const struct klipper_msgfmt *f)
{
	size_t n = strlen(f->name);

	if (n < 9 || strcmp(f->name + n - 9, "_response") != 0)
		return;
	for (size_t k = 0; k < c->n_owed; k++)
		if (c->owed[k].seq + 1 == rseq && c->owed[k].got < c->owed[k].expect) {
			c->owed[k].got++;
			return;
		}
}

static void
push_messages(struct klipper_client *c, const struct klipper_block *b, uint64_t rseq)
{
	size_t p = 0;

	while (p < b->payload_len) {
		struct klipper_response *r;
		int32_t id;
		int n = klipper_decode_id(b->payload + p, b->payload_len - p, &id);
		const struct klipper_msgfmt *f;

		f = n > 0 ? klipper_dict_by_id(&c->dict, id, KLIPPER_KIND_RESPONSE) : NULL;
		if (!f) {
			c->stats.bytes_invalid += b->payload_len - p;
			return;
		}
		r = inq_tail(c);
		memcpy(r->raw, b->payload, b->payload_len);
		n = klipper_decode(f, r->raw + p + (size_t)n, b->payload_len - p - (size_t)n,
				   r->vals) +
		    n;
		if (n <= 0 || (size_t)n > b->payload_len - p) {
			c->stats.bytes_invalid += b->payload_len - p;
			return;
		}
		r->fmt = f;
		r->received_us = now_monotonic_usec();
		if (strcmp(f->name, "shutdown") == 0 || strcmp(f->name, "is_shutdown") == 0)
			c->shutdown = true;
		owed_got(c, rseq, f);
		c->inq_n++;
		p += (size_t)n;
	}
}

static void
handle_block(struct klipper_client *c, const struct klipper_block *b)
{
	uint64_t rseq = c->receive_seq + ((b->seq - c->receive_seq) & KLIPPER_SEQ_MASK);

	c->stats.blocks_received++;
	if (rseq != c->receive_seq) {
		if (rseq > c->send_seq) { /* an ack for a block never sent */
			c->stats.bytes_invalid += b->payload_len + KLIPPER_MESSAGE_MIN;
			return;
		}
		ack_to(c, rseq);
	}
	if (b->payload_len == 0) {
		owed_complete(c, rseq); /* the ack comes after the block's responses */
		if (c->last_ack_seq < rseq) {
			c->last_ack_seq = rseq;
		} else if (rseq > c->ignore_nak_seq && c->n_sent) {
			c->stats.naks++;
			(void)retransmit(c, true);
		}
		return;
	}
	owed_complete(c, rseq - 1); /* earlier blocks whose acks were lost */
	push_messages(c, b, rseq);
}

static void
parse_rx(struct klipper_client *c)
{
	size_t pos = 0;

	for (;;) {
		struct klipper_block b;
		int r = klipper_block_find(c->rx + pos, c->rx_len - pos, &b);

		if (r == 0)
			break;
		if (r < 0) {
			c->stats.bytes_invalid += (size_t)-r;
			pos += (size_t)-r;
			continue;
		}
		handle_block(c, &b);
		pos += (size_t)r;
	}
	memmove(c->rx, c->rx + pos, c->rx_len - pos);
	c->rx_len -= pos;
}

/* One round: fill the window, wait for input or the retransmit timer (up to deadline),
 * process what came. 0, -ETIMEDOUT at the deadline, -ENODEV. */
static int
pump(struct klipper_client *c, uint64_t deadline)
{
	uint64_t now, wake;
	struct pollfd p = {.fd = c->fd, .events = POLLIN};
	int r;

	while (c->q_n && window_has_room(c)) {
		r = send_block(c);
		if (r < 0)
			return r;
	}
	now = now_monotonic_usec();
	if (now >= deadline)
		return -ETIMEDOUT;
	if (c->n_sent && c->rtx_at_us && now >= c->rtx_at_us)
		return retransmit(c, false);
	wake = deadline;
	if (c->n_sent && c->rtx_at_us && c->rtx_at_us < wake)
		wake = c->rtx_at_us;
	r = poll(&p, 1, (int)((wake - now + 999) / 1000));
	if (r < 0)
		return errno == EINTR ? 0 : -errno;
	if (r == 0)
		return 0;
	if (p.revents & POLLIN) {
		ssize_t n = read(c->fd, c->rx + c->rx_len, sizeof(c->rx) - c->rx_len);

		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return 0;
		if (n <= 0)
			return -ENODEV;
		c->rx_len += (size_t)n;
		parse_rx(c);
		if (c->rx_len == sizeof(c->rx)) /* cannot hold a block: junk */
			c->rx_len = 0;
		return 0;
	}
	return (p.revents & (POLLHUP | POLLERR)) ? -ENODEV : 0;
}

static uint64_t
deadline_after(const struct klipper_client *c, unsigned ms)
{
	return now_monotonic_usec() + (uint64_t)(ms ? ms : c->timeout_ms) * 1000;
}

/* A command the MCU answers with "<name>_response" (spi_transfer, identify, i2c_read...). */
static bool
is_query(const struct klipper_client *c, const struct klipper_msgfmt *f)
{
	char rn[128];
	const struct klipper_msgfmt *r;

	if ((size_t)snprintf(rn, sizeof(rn), "%s_response", f->name) >= sizeof(rn))
		return false;
	r = klipper_dict_by_name(&c->dict, rn);
	return r && r->kind == KLIPPER_KIND_RESPONSE;
}

int
klipper_client_queue(struct klipper_client *c, const char *name, const struct klipper_arg *args,
		     size_t n_args)
{
	const struct klipper_msgfmt *f = klipper_dict_by_name(&c->dict, name);
	size_t slot;
	int r;

	if (!f || f->kind != KLIPPER_KIND_COMMAND) {
		kc_error(c, "the Klipper firmware on %s has no command \"%s\"", c->tty, name);
		return -ENOENT;
	}
	while (c->q_n == KC_QUEUE_MSGS) {
		r = pump(c, deadline_after(c, 0));
		if (r < 0)
			return r;
	}
	slot = (c->q_head + c->q_n) % KC_QUEUE_MSGS;
	r = klipper_encode_named(f, args, n_args, c->q[slot], sizeof(c->q[slot]));
	if (r < 0) {
		kc_error(c, "cannot encode \"%s\" for the firmware on %s", f->format, c->tty);
		return r == -ENOBUFS ? -EINVAL : r;
	}
	c->q_len[slot] = (uint8_t)r;
	c->q_reply[slot] = is_query(c, f);
	c->q_n++;
	return 0;
}

static const char *
reason(int r)
{
	switch (r) {
	case -ETIMEDOUT:
		return "no answer";
	case -ENODEV:
		return "the tty went away";
	case -EPROTO:
		return "the MCU reported a shutdown";
	default:
		return strerror(-r);
	}
}

int
klipper_client_flush(struct klipper_client *c)
{
	uint64_t deadline = deadline_after(c, 0);

	while (c->q_n || c->n_sent) {
		int r = pump(c, deadline);

		if (r < 0) {
			kc_error(c, "Klipper firmware on %s: %s", c->tty, reason(r));
			return r;
		}
		if (c->shutdown)
			return -EPROTO;
	}
	return 0;
}

int
klipper_client_response(struct klipper_client *c, const char *name, struct klipper_response *ret)
{
	uint64_t deadline = deadline_after(c, 0);

	for (;;) {
		int r;

		while (c->inq_n) {
			struct klipper_response *m = &c->inq[c->inq_head];

			c->inq_head = (c->inq_head + 1) % KC_INQ;
			c->inq_n--;
			if (!m->fmt) {
				kc_error(c,
					 "the Klipper firmware on %s dropped a response (its USB "
					 "transmit buffer was full)",
					 c->tty);
				return -ENOMSG;
			}
			if (strcmp(m->fmt->name, name) != 0)
				continue;
			*ret = *m;
			/* the values point into the queue slot's raw copy: move them along */
			for (unsigned i = 0; i < ret->fmt->n_params; i++)
				if (ret->vals[i].data)
					ret->vals[i].data = ret->raw + (ret->vals[i].data - m->raw);
			return 0;
		}
		if (c->shutdown) {
			kc_error(c, "the Klipper firmware on %s reported a shutdown", c->tty);
			return -EPROTO;
		}
		r = pump(c, deadline);
		if (r < 0) {
			kc_error(c, "Klipper firmware on %s, waiting for %s: %s", c->tty, name,
				 reason(r));
			return r;
		}
	}
}

int
klipper_client_query(struct klipper_client *c, const char *name, const struct klipper_arg *args,
		     size_t n_args, const char *response, struct klipper_response *ret)
{
	int r = klipper_client_queue(c, name, args, n_args);

	return r < 0 ? r : klipper_client_response(c, response, ret);
}

const struct klipper_value *
klipper_response_get(const struct klipper_response *r, const char *name)
{
	int i = klipper_param_index(r->fmt, name);

	return i < 0 ? NULL : &r->vals[i];
}

/* Drain stale input, then learn the MCU's expected seq from its answer to an empty block. */
static int
sync_seq(struct klipper_client *c)
{
	uint8_t probe[1 + KLIPPER_MESSAGE_MIN] = {KLIPPER_SYNC};

	(void)klipper_block_encode(0, NULL, 0, probe + 1, KLIPPER_MESSAGE_MIN);
	for (int attempt = 0; attempt < 5; attempt++) {
		uint64_t deadline = now_monotonic_usec() + 500000;
		int r = kc_write(c, probe, sizeof(probe));

		if (r < 0)
			return r;
		while (now_monotonic_usec() < deadline) {
			struct pollfd p = {.fd = c->fd, .events = POLLIN};
			ssize_t n;
			size_t pos = 0;

			if (poll(&p, 1, 50) <= 0)
				continue;
			n = read(c->fd, c->rx + c->rx_len, sizeof(c->rx) - c->rx_len);
			if (n <= 0 && !(n < 0 && (errno == EAGAIN || errno == EINTR)))
				return -ENODEV;
			c->rx_len += n > 0 ? (size_t)n : 0;
			for (;;) {
				struct klipper_block b;
				int f = klipper_block_find(c->rx + pos, c->rx_len - pos, &b);

				if (f == 0)
					break;
				if (f > 0 && b.payload_len == 0) {
					c->send_seq = c->receive_seq = c->last_ack_seq =
					    16u + b.seq; /* counters never go below 16 */
					c->rx_len = 0;
					return 0;
				}
				pos += (size_t)(f < 0 ? -f : f);
			}
			memmove(c->rx, c->rx + pos, c->rx_len - pos);
			c->rx_len -= pos;
			if (c->rx_len == sizeof(c->rx))
				c->rx_len = 0;
		}
	}
	return -ETIMEDOUT;
}

static int
identify(struct klipper_client *c)
{
	uint8_t *z = NULL;
	size_t zlen = 0;
	unsigned stale = 0;
	int r;

	/* serialhdl.py _get_identify_data: chunks of 40 until an empty one */
	for (;;) {
		struct klipper_response resp;
		struct klipper_arg a[] = {{"offset", {.u = (uint32_t)zlen}},
					  {"count", {.u = KC_IDENTIFY_CHUNK}}};
		const struct klipper_value *off, *data;

		r = klipper_client_query(c, "identify", a, 2, "identify_response", &resp);
		if (r < 0)
			goto out;
		off = klipper_response_get(&resp, "offset");
		data = klipper_response_get(&resp, "data");
		if (!off || !data || off->u != zlen) {
			if (++stale > 16) { /* a late answer to an earlier request, not forever */
				r = -EPROTO;
				goto out;
			}
			continue;
		}
		if (!data->len)
			break;
		if (zlen + data->len > KC_DICT_MAX) {
			r = -EFBIG;
			goto out;
		}
		z = xreallocarray(z, zlen + data->len, 1);
		memcpy(z + zlen, data->data, data->len);
		zlen += data->len;
	}
	r = kdict_inflate(z, zlen, &c->raw, &c->raw_len);
	if (r == 0)
		r = kdict_to_klipper(c->raw, c->raw_len, &c->dict);
	if (r < 0)
		kc_error(c, "the data dictionary from %s is not a Klipper dictionary", c->tty);
out:
	free(z);
	return r;
}

static int
open_tty(struct klipper_client *c)
{
	struct termios t;

	c->fd = open(c->tty, O_RDWR | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);
	if (c->fd < 0)
		return -errno;
	/* exclusive like serialhdl's pyserial exclusive=True; ptys in tests say ENOTTY */
	if (ioctl(c->fd, TIOCEXCL) < 0 && errno != ENOTTY)
		log_debug_errno(-errno, "klipper: TIOCEXCL on %s", c->tty);
	if (tcgetattr(c->fd, &t) == 0) {
		cfmakeraw(&t);
		t.c_cflag |= CLOCAL | CREAD;
		(void)cfsetspeed(&t, B115200); /* USB CDC ignores the rate */
		if (tcsetattr(c->fd, TCSANOW, &t) < 0)
			log_debug_errno(-errno, "klipper: raw mode on %s", c->tty);
	}
	(void)tcflush(c->fd, TCIOFLUSH);
	return 0;
}

int
klipper_client_open(const char *tty, const struct klipper_client_opts *opts,
		    struct klipper_client **ret, char *err, size_t errlen)
{
	struct klipper_client *c = xcalloc(1, sizeof(*c));
	const char *rw;
	int r;

	c->fd = -1;
	snprintf(c->tty, sizeof(c->tty), "%s", tty);
	c->window = opts && opts->window ? opts->window : KC_DEFAULT_WINDOW;
	if (c->window > KC_MAX_WINDOW)
		c->window = KC_MAX_WINDOW;
	c->timeout_ms = opts && opts->timeout_ms ? opts->timeout_ms : KC_DEFAULT_TIMEOUT_MS;
	c->max_replies = opts && opts->max_replies ? opts->max_replies : KC_MAX_REPLIES;
	c->receive_window = 0; /* no RECEIVE_WINDOW: no byte limit (serialqueue.c) */
	c->rto_us = (uint64_t)KC_MIN_RTO_US * 4;
	c->inq = xcalloc(KC_INQ, sizeof(*c->inq));
	klipper_dict_init(&c->dict);
	r = open_tty(c);
	if (r < 0) {
		kc_error(c, "cannot open %s: %s", tty, strerror(-r));
		goto fail;
	}
	r = sync_seq(c);
	if (r < 0) {
		kc_error(c, "no Klipper firmware answers on %s (%s)", tty, reason(r));
		goto fail;
	}
	r = identify(c);
	if (r < 0) {
		if (!c->error[0])
			kc_error(c, "identify failed on %s: %s", tty, reason(r));
		goto fail;
	}
	rw = klipper_dict_constant(&c->dict, "RECEIVE_WINDOW");
	if (rw) {
		unsigned long v = strtoul(rw, NULL, 10);

		if (v >= KLIPPER_MESSAGE_MAX && v <= 65536)
			c->receive_window = (unsigned)v;
	}
	*ret = c;
	return 0;
fail:
	if (err)
		snprintf(err, errlen, "%s", c->error);
	klipper_client_close(c);
	return r;
}

void
klipper_client_close(struct klipper_client *c)
{
	if (!c)
		return;
	if (c->fd >= 0)
		close(c->fd);
	klipper_dict_free(&c->dict);
	free(c->raw);
	free(c->inq);
	free(c);
}

const char *
klipper_client_error(const struct klipper_client *c)
{
	return c->error;
}

const struct klipper_dict *
klipper_client_dict(const struct klipper_client *c)
{
	return &c->dict;
}

const char *
klipper_client_raw_dict(const struct klipper_client *c, size_t *ret_len)
{
	if (ret_len)
		*ret_len = c->raw_len;
	return c->raw;
}

const char *
klipper_client_mcu(const struct klipper_client *c)
{
	const char *m = klipper_dict_constant(&c->dict, "MCU");

	return m ? m : "";
}

void
klipper_client_stats(const struct klipper_client *c, struct klipper_client_stats *ret)
{
	*ret = c->stats;
}

void
klipper_client_set_window(struct klipper_client *c, unsigned window)
{
	c->window = window ? window : KC_DEFAULT_WINDOW;
	if (c->window > KC_MAX_WINDOW)
		c->window = KC_MAX_WINDOW;
}

/* ---- SPI device setup (scripts/spi_flash/spi_flash.py _configure_mcu_spibus) ---- */

/* Every parameter the config commands of any firmware generation take, with our values:
 * a format takes the ones it names. Symbolic ones (pins, bus) are looked up in the
 * dictionary's enumerations. */
struct kc_param {
	const char *name;
	const char *sym; /* enumeration symbol, or NULL for the number */
	uint32_t u;
};

static int
queue_from(struct klipper_client *c, const char *name, const struct kc_param *ps, size_t n,
	   char *text, size_t textlen)
{
	const struct klipper_msgfmt *f = klipper_dict_by_name(&c->dict, name);
	struct klipper_arg args[KLIPPER_MAX_PARAMS];
	size_t tl;

	if (!f || f->kind != KLIPPER_KIND_COMMAND) {
		kc_error(c, "the Klipper firmware on %s has no command \"%s\"", c->tty, name);
		return -ENOENT;
	}
	tl = (size_t)snprintf(text, textlen, "%s", f->name);
	for (unsigned i = 0; i < f->n_params; i++) {
		const struct kc_param *p = NULL;

		for (size_t k = 0; k < n; k++)
			if (strcmp(ps[k].name, f->params[i].name) == 0)
				p = &ps[k];
		if (!p) {
			kc_error(c, "\"%s\" on %s takes a parameter %s that skrflash cannot fill",
				 f->format, c->tty, f->params[i].name);
			return -ENOENT;
		}
		args[i] = (struct klipper_arg){.name = p->name, .v = {.u = p->u}};
		if (p->sym &&
		    klipper_dict_enum_value(&c->dict, p->name, p->sym, &args[i].v.u) < 0) {
			kc_error(c, "the firmware on %s does not know %s=%s (wrong board profile?)",
				 c->tty, p->name, p->sym);
			return -ENOENT;
		}
		if (f->params[i].type == KLIPPER_PT_BUFFER ||
		    f->params[i].type == KLIPPER_PT_STRING)
			args[i].v = (struct klipper_value){.data = (const uint8_t *)"", .len = 0};
		if (tl < textlen) {
			if (p->sym)
				tl += (size_t)snprintf(text + tl, textlen - tl, " %s=%s", p->name,
						       p->sym);
			else
				tl += (size_t)snprintf(text + tl, textlen - tl, " %s=%u", p->name,
						       p->u);
		}
	}
	return klipper_client_queue(c, name, args, f->n_params);
}

/* get_config: "config is_config=%c crc=%u is_shutdown=%c move_count=%hu" (both orders of
 * the last two exist, spi_flash.py GET_CFG_RESPONSES); the names are what matter. */
static int
get_config(struct klipper_client *c, bool *is_config, bool *is_shutdown)
{
	struct klipper_response resp;
	const struct klipper_value *a, *b;
	int r = klipper_client_query(c, "get_config", NULL, 0, "config", &resp);

	if (r < 0)
		return r;
	a = klipper_response_get(&resp, "is_config");
	b = klipper_response_get(&resp, "is_shutdown");
	*is_config = a && a->u;
	*is_shutdown = b && b->u;
	return 0;
}

/* The command that binds oid 0 to its bus, by what the firmware has:
 * current Klipper: spi_set_bus / spi_set_sw_bus (pulse_ticks = CLOCK_FREQ / rate, as
 * spi_flash.py computes it); older: spi_set_software_bus (rate=); oldest: config_spi itself
 * carried spi_bus/mode/rate. */
static const char *
bus_command(const struct klipper_client *c, const struct klipper_spi_bus *bus)
{
	const struct klipper_msgfmt *cfg = klipper_dict_by_name(&c->dict, "config_spi");

	if (bus->spi_bus)
		return cfg && klipper_param_index(cfg, "spi_bus") >= 0 ? NULL : "spi_set_bus";
	if (klipper_dict_by_name(&c->dict, "spi_set_sw_bus"))
		return "spi_set_sw_bus";
	return "spi_set_software_bus";
}

int
klipper_client_spi_setup(struct klipper_client *c, const struct klipper_spi_bus *bus)
{
	const char *cf = klipper_dict_constant(&c->dict, "CLOCK_FREQ");
	uint32_t clock = cf ? (uint32_t)strtoul(cf, NULL, 10) : 0, rate = bus->rate;
	const struct kc_param ps[] = {
	    {"oid", NULL, 0},
	    {"count", NULL, 1},
	    {"pin", bus->cs_pin, 0},
	    {"cs_active_high", NULL, 0},
	    {"spi_bus", bus->spi_bus, 0},
	    {"mode", NULL, 0},
	    {"rate", NULL, rate},
	    {"shutdown_msg", NULL, 0},
	    {"miso_pin", bus->sw_pins[0], 0},
	    {"mosi_pin", bus->sw_pins[1], 0},
	    {"sclk_pin", bus->sw_pins[2], 0},
	    {"pulse_ticks", NULL, rate && clock ? clock / rate : 1},
	};
	char text[4][256];
	const char *bc = bus_command(c, bus);
	bool is_config, is_shutdown;
	uLong crc;
	int r;

	r = get_config(c, &is_config, &is_shutdown);
	if (r < 0)
		return r;
	if (is_config || is_shutdown) {
		kc_error(c, "the Klipper firmware on %s is already configured%s: it needs a reset",
			 c->tty, is_shutdown ? " and shut down" : "");
		return -EALREADY;
	}
	r = queue_from(c, "allocate_oids", ps, ELEMENTSOF(ps), text[0], sizeof(text[0]));
	if (r == 0)
		r = queue_from(c, bus->cs_pin ? "config_spi" : "config_spi_without_cs", ps,
			       ELEMENTSOF(ps), text[1], sizeof(text[1]));
	text[2][0] = '\0';
	if (r == 0 && bc)
		r = queue_from(c, bc, ps, ELEMENTSOF(ps), text[2], sizeof(text[2]));
	if (r < 0)
		return r;
	/* finalize_config crc = crc32 of the command lines joined by '\n' */
	crc = crc32(0L, Z_NULL, 0);
	for (int i = 0; i < 3 && text[i][0]; i++) {
		if (i)
			crc = crc32(crc, (const Bytef *)"\n", 1);
		crc = crc32(crc, (const Bytef *)text[i], (uInt)strlen(text[i]));
	}
	{
		const struct kc_param fin[] = {{"crc", NULL, (uint32_t)crc}};

		r = queue_from(c, "finalize_config", fin, 1, text[3], sizeof(text[3]));
	}
	if (r == 0)
		r = get_config(c, &is_config, &is_shutdown);
	if (r < 0)
		return r;
	if (!is_config || is_shutdown) {
		kc_error(c, "the Klipper firmware on %s refused the SPI configuration", c->tty);
		return -EPROTO;
	}
	return 0;
}

size_t
klipper_client_spi_chunk(const struct klipper_client *c)
{
	const struct klipper_msgfmt *a = klipper_dict_by_name(&c->dict, "spi_transfer");
	const struct klipper_msgfmt *b = klipper_dict_by_name(&c->dict, "spi_transfer_response");
	uint8_t tmp[KLIPPER_VLQ_MAX];
	int la = a ? klipper_vlq_encode((uint32_t)a->id, tmp, sizeof(tmp)) : 2;
	int lb = b ? klipper_vlq_encode((uint32_t)b->id, tmp, sizeof(tmp)) : 2;

	/* id + oid (1 byte VLQ for oid 0) + length byte + data, in both directions */
	return KLIPPER_PAYLOAD_MAX - 2 - (size_t)(la > lb ? la : lb);
}

int
klipper_client_reset(struct klipper_client *c)
{
	int r = klipper_client_flush(c);

	/* the MCU resets as it runs the command: there is no ack to wait for (spi_flash.py
	 * MCUConnection.reset sends it and waits 15 ms) */
	if (r == 0)
		r = klipper_client_queue(c, "reset", NULL, 0);
	if (r == 0)
		r = send_block(c) < 0 ? -ENODEV : 0;
	if (r == 0)
		(void)tcdrain(c->fd);
	return r;
}
