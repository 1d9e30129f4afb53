/* SPDX-License-Identifier: GPL-2.0-or-later */
/* test_engine_lib: the common bench of the flash engine tests - one testbed with simulated
 * boards, one unmodified skrflashd at a time in a temporary directory, skrflashctl calls and
 * the helpers that read their answers, images and flash contents.
 *
 * Helpers do not count checks: they return what they found (NULL, -errno) and print why, so
 * that each test program asserts with its own harness. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <json-c/json.h>

#include "sim.h"

/* sim_init + a temporary directory + the testbed; `name` tags the directory. */
void eng_init(int argc, char **argv, const char *name);
/* Stops the daemon if running, removes the testbed and the directory. */
void eng_done(void);
struct sim *eng_sim(void);
const char *eng_dir(void);
const char *eng_build(void);

/* Writes the config: short timeouts, `globals` (may be ""), then profiles = ( profiles ). */
void eng_write_conf(const char *globals, const char *profiles);
/* Starts skrflashd (debug log level) with extra_env (NULL-terminated, may be NULL); waits
 * for READY=1. 0 or -errno. */
int eng_start(char *const extra_env[]);
struct sim_proc *eng_daemon(void);
/* SIGTERM and wait: the exit status, or -errno. */
int eng_stop(void);
/* SIGKILL and wait (the daemon's workers die with it); 128 + 9 on success. */
int eng_kill(void);
/* Waits until the daemon output holds needle; 0, -ETIMEDOUT or -EPIPE. */
int eng_wait(const char *needle, int timeout_ms);
/* Occurrences of needle in a process's output, and waiting (polled: sim_proc only waits
 * for a first occurrence) until there are n; 0 or -ETIMEDOUT. */
size_t eng_proc_count(struct sim_proc *p, const char *needle);
int eng_proc_wait_count(struct sim_proc *p, const char *needle, size_t n, int timeout_ms);
/* Waits until the daemon output holds needle at least n times; 0 or -ETIMEDOUT. */
int eng_wait_count(const char *needle, size_t n, int timeout_ms);
/* Occurrences of needle in the daemon output so far. */
size_t eng_count(const char *needle);
/* The daemon output line (without newline) holding needle, or NULL; caller frees. */
char *eng_line(const char *needle);

/* Runs skrflashctl --socket --config ARGS... (NULL-terminated): its exit status; the output
 * in *ret_out if not NULL (caller frees). */
int eng_ctl(char **ret_out, const char *arg, ...) __attribute__((sentinel));
/* skrflashctl --json ARGS...: the parsed answer when it exits 0, else NULL. */
json_object *eng_ctl_json(const char *arg, ...) __attribute__((sentinel));
/* skrflashctl --json watch, running: daemon events in its output once it subscribed. */
struct sim_proc *eng_watch(void);
/* Returns once watcher w is subscribed, proven by drops into profile's queue that the
 * daemon rejects (firmware-rejected events); 0 or -errno. */
int eng_watch_ready(struct sim_proc *w, const char *profile);
/* The `boards` entry on a port (a new reference), or NULL. */
json_object *eng_board(const char *port);
/* Field of a board on a port as a string ("" when absent); copies into buf. */
const char *eng_board_field(const char *port, const char *key, char *buf, size_t size);
/* Waits until `boards` shows the board on port present in mode; 0 or -ETIMEDOUT. */
int eng_wait_board_mode(const char *port, const char *mode, int timeout_ms);
/* `history` (newest first), and one row of it by job id or by position (0 = newest). */
json_object *eng_history(void);
json_object *eng_history_job(json_object *history, long long id);
const char *eng_str(json_object *o, const char *key); /* "" when absent */
/* The newest history row of a port (history is newest first), NULL if none. */
json_object *eng_newest_on(json_object *hist, const char *port);
long long eng_int(json_object *o, const char *key); /* -1 when absent */

/* A Klipper image for board b linked at app_start (0: the board's app start) written to
 * DIR/<name>.bin; returns the path, the bytes in *ret_img and its sha256 in ret_sha. */
char *eng_image(struct sim_board *b, uint32_t app_start, const char *name, size_t size,
		uint8_t **ret_img, size_t *ret_len, char ret_sha[65]);
/* Copy of the board's flash [from, to); caller frees. */
uint8_t *eng_flash_copy(struct sim_board *b, uint32_t from, uint32_t to);
/* Sum of the erase counters of every sector of the board's flash. */
uint64_t eng_erases(struct sim_board *b);

/* A board on the testbed, plugged in `mode`; Katapult installed when katapult is set. */
struct sim_board *eng_add(const char *model, const char *port, enum sim_mode mode, bool katapult);
