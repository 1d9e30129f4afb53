/* SPDX-License-Identifier: GPL-2.0-or-later */
/* flash/klipper: a blocking client of the running Klipper firmware over its tty (worker side).
 *
 * It does what klippy/serialhdl.py + klippy/chelper/serialqueue.c do for a host, reduced to
 * what the SD-card path needs: find the MCU's sequence number, download and parse the data
 * dictionary (identify), then send commands with several blocks in flight and retransmit
 * them on timeout or NAK, and hand back responses in the order they arrive. On top of that
 * it configures an SPI device the way scripts/spi_flash/spi_flash.py does (allocate_oids,
 * config_spi / config_spi_without_cs, spi_set_bus / spi_set_sw_bus / spi_set_software_bus,
 * finalize_config, get_config), with whichever command names the firmware's dictionary has.
 *
 * Engine use: klipper_client_open (connect + identify) -> klipper_client_dict and
 * klipper_client_mcu (check the MCU against the profile) -> klipper_client_spi_setup ->
 * flash/sdcard on top -> klipper_client_reset. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto/klipper.h"

struct klipper_client;

struct klipper_client_opts {
	unsigned window;     /* blocks in flight; 0 = 12 (serialqueue MAX_PENDING_BLOCKS) */
	unsigned timeout_ms; /* give up a request after this long; 0 = 5000 */
	/* query responses owed at a time (the MCU's transmit buffer, see klipper.c); 0 = 3.
	 * Tests raise it to make the MCU drop responses. */
	unsigned max_replies;
};

/* A decoded message from the MCU; value data points into raw. */
struct klipper_response {
	const struct klipper_msgfmt *fmt;
	struct klipper_value vals[KLIPPER_MAX_PARAMS];
	uint8_t raw[KLIPPER_MESSAGE_MAX];
	uint64_t received_us;
};

/* Statistics for tests and benchmarks. */
struct klipper_client_stats {
	uint64_t blocks_sent;
	uint64_t retransmits; /* blocks sent again (timeout or NAK) */
	uint64_t naks;
	uint64_t blocks_received;
	uint64_t bytes_invalid;
	uint64_t responses_lost; /* query responses the MCU dropped (transmit buffer full) */
};

/* Open the tty, synchronise sequence numbers and download the dictionary. 0 or -errno; on
 * failure err (if not NULL) holds one sentence naming the tty and the problem. */
int klipper_client_open(const char *tty, const struct klipper_client_opts *opts,
			struct klipper_client **ret, char *err, size_t errlen);
void klipper_client_close(struct klipper_client *c);
/* The last error sentence ("" if none). */
const char *klipper_client_error(const struct klipper_client *c);
const struct klipper_dict *klipper_client_dict(const struct klipper_client *c);
/* The inflated dictionary JSON as the MCU sent it (msgproto get_raw_data_dictionary): the
 * engine compares it with the image's embedded dictionary. */
const char *klipper_client_raw_dict(const struct klipper_client *c, size_t *ret_len);
/* config.MCU, e.g. "stm32f407xx" ("" if absent). */
const char *klipper_client_mcu(const struct klipper_client *c);
void klipper_client_stats(const struct klipper_client *c, struct klipper_client_stats *ret);
/* Blocks in flight from now on (0 = the default); 1 is Klipper's spi_flash.py behaviour: one
 * command, then its answer. Queued and unacknowledged blocks are not affected. */
void klipper_client_set_window(struct klipper_client *c, unsigned window);

/* Queue a command by name with named arguments (klipper_encode_named); it goes out with the
 * next blocks the window allows. 0, -ENOENT (the dictionary lacks it or an argument) or
 * -EINVAL. */
int klipper_client_queue(struct klipper_client *c, const char *name, const struct klipper_arg *args,
			 size_t n_args);
/* Send what is queued and wait until the MCU acknowledged all of it. 0 or -errno. */
int klipper_client_flush(struct klipper_client *c);
/* The next message named `name` from the MCU (messages of other names before it are
 * dropped), sending queued commands meanwhile. 0, -ETIMEDOUT, -ENODEV (tty gone), -EPROTO
 * (the MCU reported a shutdown), -ENOMSG (the MCU dropped the next query response: its
 * block was acknowledged without it; the caller redoes what it was for). */
int klipper_client_response(struct klipper_client *c, const char *name,
			    struct klipper_response *ret);
/* queue + response. */
int klipper_client_query(struct klipper_client *c, const char *name, const struct klipper_arg *args,
			 size_t n_args, const char *response, struct klipper_response *ret);
/* Value of parameter `name` of a response, or NULL. */
const struct klipper_value *klipper_response_get(const struct klipper_response *r,
						 const char *name);

/* How the SD card is wired (from the catalog: a hardware bus, or software SPI pins). */
struct klipper_spi_bus {
	const char *spi_bus;	/* "spi1", "ssp1"; NULL for software SPI */
	const char *sw_pins[3]; /* MISO, MOSI, SCLK for software SPI */
	const char *cs_pin;	/* "PA4"; NULL = config_spi_without_cs */
	uint32_t rate;		/* SPI clock in Hz */
};
/* get_config, configure oid 0 as an SPI device on that bus, finalize_config, and check
 * get_config reports is_config=1 and no shutdown. -EALREADY when the MCU is already
 * configured (Klipper's host had it: the caller resets the MCU and reconnects, like
 * spi_flash.py check_need_restart), -ENOENT when the dictionary lacks a command or a pin /
 * bus symbol (the message names it). */
int klipper_client_spi_setup(struct klipper_client *c, const struct klipper_spi_bus *bus);
/* Max data bytes of one spi_transfer such that both the command and its response fit in a
 * block. */
size_t klipper_client_spi_chunk(const struct klipper_client *c);
/* Send "reset" and wait until it left the host; the MCU drops off USB. 0 or -errno. */
int klipper_client_reset(struct klipper_client *c);
