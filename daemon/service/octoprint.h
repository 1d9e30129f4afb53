/* SPDX-License-Identifier: GPL-2.0-or-later */
/* octoprint: boards driven by OctoPrint (profile host = "octoprint"). Before a flash the
 * print state is asked through OctoPrint's REST API and, when OctoPrint holds this board's
 * serial port, the port is released (POST /api/connection {"command":"disconnect"}); after
 * the job OctoPrint is connected again with what it used (port, baudrate, printer profile).
 *
 * Fail-closed as the Moonraker gate: no answer, an HTTP error, a refused or missing API key
 * or a state this version does not know refuses the flash. What a job released is written
 * to a record file (<state_dir>/octoprint/<usb port>.json) before the disconnect, so a
 * daemon killed mid-job still gives the port back when the board is up again.
 *
 * The HTTP calls block (libcurl easy API, each bounded); the daemon makes them in forked
 * children only: octoprint_gate_run() in the job's gate child, and struct octoprint
 * (octoprint_new) forks one child per reconnect and reaps it on the event loop. Parsing and
 * the decisions are pure functions. API: docs.octoprint.org api/job.html, api/connection.html;
 * states: OctoPrint src/octoprint/util/comm.py getStateString, printer/standard.py
 * get_current_connection ("Closed" when no connection exists). */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include <systemd/sd-event.h>

/* one request: GETs answer at once; a disconnect may wait in OctoPrint for its send queue
 * (comm.py close(): up to 10 s) */
#define OCTOPRINT_TIMEOUT_MS 2000u
#define OCTOPRINT_DISCONNECT_TIMEOUT_MS 12000u
/* how long the port may take to be closed, or to be opened again, after the command */
#define OCTOPRINT_SETTLE_MS 10000u

/* What a state string says about the printer behind it. */
enum octoprint_activity {
	OCTOPRINT_IDLE,	   /* "Operational", "Offline", "Closed", "Error", "Offline after error" */
	OCTOPRINT_BUSY,	   /* printing, paused, or on its way into or out of either */
	OCTOPRINT_UNKNOWN, /* connecting, or a string this version does not know */
};

/* GET /api/connection "current" */
struct octoprint_conn {
	char state[64];	  /* "Closed", "Operational", ... (escaped) */
	char port[256];	  /* "" when null */
	long baudrate;	  /* 0 when null (OctoPrint: auto) */
	char profile[64]; /* printerProfile, "" when null */
};

struct octoprint_reply {
	/* 0, or -ECONNREFUSED, -ETIMEDOUT, -EHOSTUNREACH, -EPROTO (HTTP status >= 300),
	 * -EACCES (401/403: the key was refused), -EBADMSG, -EFBIG, -EINVAL, -EIO */
	int error;
	long http_status;
	char detail[200];
};

/* Pure parsers of OctoPrint's replies: 0, or -EBADMSG when not that JSON shape. */
int octoprint_parse_connection(const char *buf, size_t len, struct octoprint_conn *ret);
/* GET /api/job: its "state" */
int octoprint_parse_job(const char *buf, size_t len, char *ret_state, size_t size);
enum octoprint_activity octoprint_activity(const char *state);

/* The body of POST /api/connection to connect c's baudrate and profile to `port` (malloc'd
 * JSON). */
char *octoprint_connect_body(const struct octoprint_conn *c, const char *port);

/* One request to url + path ("GET" or "POST" with a JSON body), X-Api-Key: key. Blocks for
 * at most timeout_ms. Always fills *ret; the reply body in *ret_body (malloc'd, NUL
 * terminated) when the request was answered with 2xx. Returns ret->error. */
int octoprint_request(const char *url, const char *key, const char *path, const char *body,
		      unsigned timeout_ms, char **ret_body, struct octoprint_reply *ret);

/* The board a job is about to flash, as the gate and the reconnect see it. */
struct octoprint_target {
	const char *url;
	const char *key_file;
	const char *board;    /* the catalog name, for messages */
	const char *usb_port; /* "1-1.2": names the record file */
	const char *tty;      /* /dev/ttyACMn, may be "" */
	const char *by_id;    /* /dev/serial/by-id/..., may be "" */
	const char *dir;      /* where the record files live */
};

/* Pure: does OctoPrint's port string name this board's tty? Same string as the tty or its
 * by-id link, same real path, or the same character device. */
bool octoprint_port_is_board(const char *port, const char *tty, const char *by_id);

/* The gate, blocking (a forked child): reads the key, asks the connection and the job
 * state, and when OctoPrint holds this board's port and is idle, records the connection
 * and disconnects, waiting until the port is closed. true = the flash may go on;
 * *ret_message (malloc'd, always set) says what was found and done, naming the board and
 * the URL. */
bool octoprint_gate_run(const struct octoprint_target *t, char **ret_message);

/* The record file of a USB port (malloc'd path), and its contents: what OctoPrint had. */
char *octoprint_record_path(const char *dir, const char *usb_port);
struct octoprint_record {
	char url[256];
	char key_file[256];
	char board[64];
	struct octoprint_conn conn; /* port, baudrate and profile; state unused */
};
/* Pure: 0, or -EBADMSG when buf is not a record (url and port are required). */
int octoprint_record_parse(const char *buf, size_t len, struct octoprint_record *ret);

/* The reconnects this daemon owes OctoPrint, on its event loop. */
struct octoprint;

/* done (may be NULL) is called on the loop when a reconnect child for usb_port ended. */
typedef void (*octoprint_done_fn)(void *userdata, const char *usb_port);
int octoprint_new(sd_event *loop, const char *dir, octoprint_done_fn done, void *userdata,
		  struct octoprint **ret);
/* Children still running are killed; their records stay for the next daemon. */
struct octoprint *octoprint_free(struct octoprint *o);
/* The board on usb_port runs its application on tty (by_id may be ""), and no job uses it:
 * if a job released OctoPrint's connection to it, connect OctoPrint again - on the port
 * string it used when that still names this board, else on the board's by-id link or tty
 * (the tty name may have changed when the board re-enumerated). Non-blocking; a failure
 * is retried a few times, then given up with a message. */
void octoprint_board_ready(struct octoprint *o, const char *usb_port, const char *tty,
			   const char *by_id);
/* A reconnect for usb_port is running now. */
bool octoprint_busy(const struct octoprint *o, const char *usb_port);
