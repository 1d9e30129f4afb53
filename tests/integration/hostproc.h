/* SPDX-License-Identifier: GPL-2.0-or-later */
/* hostproc: host programs the tests start outside the testbed's umockdev preload (they must
 * see the real /sys, /proc and ptys): the fake Moonraker and OctoPrint, dbus-daemon,
 * fake_systemd, tty holders. Plain libc, so that unit tests link it as well. */
#pragma once

#include <stddef.h>
#include <sys/types.h>

/* argv with stdin and stdout on pipes returned in *ret_in / *ret_out (either may be NULL:
 * that end is closed); its pid or -errno. */
pid_t hostproc_spawn(char *const argv[], int *ret_in, int *ret_out);
/* One line from fd, without its newline; 0 or -EIO. */
int hostproc_read_line(int fd, char *buf, size_t size);
/* A fake service (python3 tests/integration/fake_*.py ...) that prints its TCP port on its
 * first line: its pid and that port, or -errno (one that said no port is reaped); closing
 * *ret_in ends it. */
pid_t hostproc_fake(char *const argv[], int *ret_in, char *port, size_t size);
