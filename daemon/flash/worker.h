/* SPDX-License-Identifier: GPL-2.0-or-later */
/* worker: one flash job, run by `skrflashd --worker` in its own process (or in-process by
 * `skrflashctl flash --device`).
 *
 * The daemon hands the worker one plan as JSON on stdin and reads one JSON object per line
 * back: {"type":"progress",...}, {"type":"reported",...} and finally {"type":"result",...}.
 * The worker blocks, sleeps for DFU poll timeouts and may be killed; the daemon's event loop
 * never does any of that. It never touches the database or the journal. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "device.h"

/* The boot check, shared by the daemon's jobs and the one-shot flash: an application that
 * stays enumerated this long after it appeared has booted; one that leaves before has
 * boot-looped. */
#define WORKER_APP_STABLE_MS 1000u

struct worker_plan {
	/* action "confirm": an app-mode method (sd) after the restart, does it run the image */
	char action[16];   /* "enter" (1200-baud touch of dev.tty), "flash" or "reboot" (leave the
			    * bootloader for the app already in flash); Marlin: "identify" (M115)
			    * or "msc-check" (did the SD bootloader take image_path) */
	char method[16];   /* backend name for "flash"; "" = by dev.mode */
	struct device dev; /* the device to talk to */
	char board[64];	   /* catalog name, may be "" */
	char image_path[4096]; /* stored firmware file */
	uint32_t app_start;    /* expected (profile/catalog); 0 = accept the bootloader's */
	enum config_interface interface;
	unsigned window, timeout_ms; /* 0 = backend defaults */
	bool force; /* write an image the validator refuses (its reasons become a warning) */
};

/* How a job ended. step is where it stopped ("enter", "open", "check", "write", "verify",
 * "leave"); on success the last step done. */
struct worker_report {
	bool ok;
	char step[16];
	char error[512];
	uint64_t bytes;
	uint32_t erases;
	uint32_t transfers;
	char mcu[32]; /* as the bootloader reported it */
	uint32_t app_start;
	char version[64];
	char machine[64]; /* Marlin's MACHINE_TYPE (action "identify"), "" otherwise */
	char note[256];	  /* a warning from a run that succeeded ("" none) */
	bool reset;	  /* the board was restarted on purpose (flash_session.reset) */
	int err;	  /* the failing step's -errno, 0 on success; -ENODEV: the device left
			   * the bus under the worker (the result line's "gone": true) */
};

/* Callbacks of an in-process run; each may be NULL. */
struct worker_events {
	void (*progress)(void *userdata, const char *step, uint64_t done, uint64_t total);
	void (*reported)(void *userdata, const char *mcu, uint32_t app_start, const char *version);
	void *userdata;
};

/* A UART rescue (docs/rescue.md), run by the same `skrflashd --worker`: through the MCU's ROM
 * bootloader, write a bootloader into the bootloader area of `board` and nothing else
 * (flash/rescue.c). "restore" is the same with the board's stored old bootloader. The worker
 * writes the area as it read it before writing to old_path, and answers with one result line
 * whose "old_partial" says that its first 64 bytes read as the LPC boot ROM's. */
struct worker_rescue_plan {
	char action[16]; /* "rescue" or "restore" */
	char board[64];	 /* catalog name */
	char tty[256];
	unsigned baud, crystal_khz;	    /* 0 = 115200, 12000 */
	char reset_line[64], boot_line[64]; /* GPIO line names; "" = the user's hands */
	char image_path[4096];		    /* the bootloader to write */
	char old_path[4096];		    /* where the old area goes; "" = nowhere */
	unsigned sync_tries, timeout_ms;    /* 0 = defaults (by hand: 30 s of tries) */
	bool no_parity_ok;		    /* a pty (tests, simulator) refuses parity */
};

/* Rescue plan as JSON (malloc'd in *ret), and back; -EINVAL with a static reason. */
int worker_rescue_plan_to_json(const struct worker_rescue_plan *p, char **ret);
int worker_rescue_plan_from_json(const char *s, struct worker_rescue_plan *ret,
				 const char **ret_error);

/* Plan as a JSON object string (malloc'd in *ret). 0 or -errno. */
int worker_plan_to_json(const struct worker_plan *p, char **ret);
/* Parse a plan; -EINVAL with a static reason in *ret_error (may be NULL) when malformed.
 * *ret is untouched on error. */
int worker_plan_from_json(const char *s, struct worker_plan *ret, const char **ret_error);
/* The fixed sequence (enter, or read -> parse -> open -> check -> write -> verify -> leave ->
 * close), in this process. Returns 0 when the job succeeded, else -errno; *ret says how. */
int worker_execute(const struct worker_plan *p, const struct worker_events *ev,
		   struct worker_report *ret);
/* worker_execute writing the JSON event lines to out_fd. 0 ok, -errno failed. */
int worker_run(const struct worker_plan *p, int out_fd);
/* The flash method (a config method name) that drives a board in this bootloader mode, or
 * NULL when no backend does: what the engine may plan for a board it finds in that mode. */
const char *worker_method_for_mode(enum device_mode mode);
/* `skrflashd --worker`: plan from stdin, events on stdout; the exit code (0 ok, 1 failed). */
int worker_main(void);
/* The result line's JSON for a report (malloc'd), shared with tests and the daemon. */
char *worker_report_to_json(const struct worker_report *r);
