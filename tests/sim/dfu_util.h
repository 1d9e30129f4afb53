/* SPDX-License-Identifier: GPL-2.0-or-later */
/* dfu_util: what the fidelity tests of the DFU device models (test_dfuse, test_lpcdfu) share
 * to run the real dfu-util against a model inside a umockdev testbed: the test program
 * re-executed under the umockdev preload, dfu-util run with its output in a log, and a test
 * application image. */
#pragma once

#include <stdint.h>

/* The test program itself must run under libumockdev-preload: re-exec once through
 * /proc/self/exe (libasan first when the program was built with it; exits 99 when the
 * re-exec fails). Returns at once when the preload is in place. */
void dfu_util_preload(char **argv);
/* Runs `dfu-util args...` under `timeout -k 5 timeout_s`, stdout and stderr to the file
 * `log`; returns its exit status (128+signal when killed), -1 when it could not run. */
int dfu_util_run(const char *log, const char *timeout_s, const char *const args[]);
/* The log on stderr, for a failed check. */
void dfu_util_show_log(const char *log);
/* A test application of len bytes linked at app_start: the initial stack pointer sp, then
 * vectors-1 Thumb handler addresses inside it, then "code" (a byte pattern). */
void dfu_util_image(uint8_t *img, uint32_t len, uint32_t sp, uint32_t app_start, uint32_t vectors);
