/* SPDX-License-Identifier: GPL-2.0-or-later */
/* power: removes and restores a board's power, through what the farm already has.
 *
 * Boards whose stock bootloader reads the SD card over SDIO (Octopus, Octopus Pro, SKR 2,
 * SKR 3) cannot read it after Klipper drove the card in SPI mode: the card stays in SPI mode
 * until it loses power (Klipper's scripts/spi_flash/board_defs.py marks them "skip_verify";
 * docs/SDCard_Updates.md: "A power-cycle of the board and SD card will be necessary").
 * A profile's `power` group says how skrflash does that power cycle:
 *
 * - moonraker_device: a [power NAME] device of the printer's Moonraker. A child process asks
 *   for the print state first (fail-closed: never while printing, paused, or unknown), then
 *   POSTs action=off, waits off_seconds, POSTs action=on, and checks each reply.
 * - command: a program run without a shell (argv as configured, found on PATH when it has
 *   no slash), in its own process group, with SKRFLASH_BOARD, SKRFLASH_PORT and
 *   SKRFLASH_OFF_SECONDS in its environment. Exit status 0 means the board was cycled.
 *
 * Either way the child runs on the daemon's event loop (an sd-event child source), its
 * output goes to the journal line by line, and the whole cycle is killed after `timeout`.
 * Nothing here blocks. */
#pragma once

#include <stdbool.h>

#include <systemd/sd-event.h>

#include "config.h"

struct power_cycle;

/* r: 0 cycled, -ETIMEDOUT, -EPERM (refused: printing or unknown print state), -EIO (the
 * command failed or Moonraker refused), or another -errno (could not start). message:
 * one line for the journal and the job's history, naming the board and what to do. */
typedef void (*power_done_fn)(void *userdata, int r, const char *message);

struct power_request {
	const struct config_power *power;
	const char *board;		/* catalog name, for messages and the environment */
	const char *port;		/* USB port path */
	const char *job;		/* for the journal fields, may be NULL */
	const char *moonraker_url;	/* for moonraker_device; NULL = http://127.0.0.1:7125 */
	const char *moonraker_key_file; /* NULL or "" = no X-Api-Key */
	/* skrflash stopped the printer's Klipper for this job: a Moonraker that answers HTTP 5xx
	 * (Klippy not connected) then does not block the cycle */
	bool klipper_stopped;
};

/* Starts the cycle; done is called once, from the loop, unless the cycle is freed first.
 * 0 or -errno (then done is never called). */
int power_cycle_start(sd_event *loop, const struct power_request *req, power_done_fn done,
		      void *userdata, struct power_cycle **ret);
/* Kills a running child (its process group) and forgets it. Accepts NULL, returns NULL. */
struct power_cycle *power_cycle_free(struct power_cycle *pc);
/* "Moonraker power device 'printer_psu'" or "command '/usr/sbin/uhubctl'", for messages */
void power_describe(const struct config_power *power, char *buf, size_t size);
