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
#include <sys/types.h>

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

/* ---- host programs outside the umockdev preload (they see the real /sys, /proc, ptys) -- */
/* hostproc.h starts them; what the engine tests build on it: */

/* sh -c script: its exit status, -1 if it did not run or exit. */
int eng_sh_plain(const char *script);
/* DIR/skrflash-<tag>-<pid> below our own cgroup in the cgroup2 hierarchy (not made here), or
 * NULL when there is no cgroup2 hierarchy; caller frees. */
char *eng_cgroup_dir(const char *tag, pid_t pid);
/* A fake host service (python3 script args..., NULL-terminated argv) run as `role` (sim_as;
 * NULL: as the caller) that prints its TCP port on a line: its pid (-errno) and that port;
 * closing *ret_in ends it. */
pid_t eng_fake_start(const char *role, char *const argv[], int *ret_in, char *port, size_t size);

/* A private D-Bus bus in `dir` (any user may connect, dbus-daemon runs as the "system"
 * role) with fake_systemd on it logging its calls to dir/calls.log; DBUS_SYSTEM_BUS_ADDRESS
 * names it. `cgroups` (may be NULL) is where StopUnit ends a unit's processes. */
struct eng_bus {
	pid_t bus, fake;
	char addr[512];
	char *calls; /* the fake's call log */
};
int eng_bus_start(struct eng_bus *bus, const char *dir, const char *cgroups);
void eng_bus_stop(struct eng_bus *bus);

/* A character node DIR/<name> with the device number the daemon sees for the board's tty
 * (umockdev's ttyACM has one of its own, not the pty's): a holder holding it with O_PATH is
 * found by holder_find as with a real ttyACM. The path, or NULL (errno set); caller frees. */
char *eng_tty_node(struct sim_board *b, const char *name);
/* A host program holding the board's tty through `node` (eng_tty_node), as `role` (sim_as;
 * NULL: as the caller); with lock also pyserial's exclusive flock on the pty behind it, as
 * Klipper and OctoPrint take it. Its pid once it holds (-errno); closing *ret_in ends it. */
pid_t eng_hold_tty(struct sim_board *b, const char *node, const char *role, bool lock, int *ret_in);
