/* SPDX-License-Identifier: GPL-2.0-or-later */
/* holder: which processes hold a tty open, and the systemd unit each one runs in.
 *
 * Before a serial flash the engine must know whether Klipper (or anything else) has the
 * board's tty open, and which unit to stop. A Pi often runs several Klipper instances
 * (klipper-1.service, klipper-2.service, ...), so the answer is per device node: only the
 * processes holding THIS tty are reported. There is no library for this (fuser and lsof are
 * programs), and the scan is a few readdir() calls over /proc. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

struct holder {
	pid_t pid;
	char comm[16];	   /* /proc/PID/comm (the kernel keeps 15 characters), "" if unreadable */
	char *unit;	   /* systemd unit ("klipper-2.service"), NULL if not in a service */
	bool user_manager; /* the unit belongs to a user's systemd (user@UID.service), not PID 1 */
};

/* Scan <proc_root>/<pid>/fd (proc_root NULL = "/proc") for descriptors open on the device:
 * the fd target is a character device with st_rdev == rdev (rdev 0 = do not compare), or the
 * link text equals dev_path (NULL = do not compare). Each process is reported once, in
 * ascending pid order. Processes that exit or deny access during the scan are skipped.
 * Returns the number of holders (also in *ret_n) or -errno; *ret is NULL when none. */
int holder_find(const char *proc_root, const char *dev_path, dev_t rdev, struct holder **ret,
		size_t *ret_n);

/* Frees an array from holder_find(); accepts NULL, returns NULL. */
struct holder *holder_free(struct holder *h, size_t n);

/* Pure: the service unit of a /proc/PID/cgroup text: the last path component ending in
 * ".service" of the unified ("0::") line, else of the "name=systemd" line. 1 and a malloc'd
 * *ret_unit when found (*ret_user set if it lies under a user@UID.service), 0 when the
 * process is in no service (a scope, a container), -EINVAL for text that is not a cgroup file. */
int holder_unit_from_cgroup(const char *text, size_t len, char **ret_unit, bool *ret_user);
