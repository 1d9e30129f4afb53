/* SPDX-License-Identifier: GPL-2.0-or-later */
/* log: the one logging API of skrflash.
 *
 * When stderr is connected to the journal ($JOURNAL_STREAM matches it) and journald's socket
 * exists, messages go through sd_journal_send with structured SKRFLASH_* fields and a fixed
 * MESSAGE_ID per event kind. Otherwise (run by hand, tests, CI) they go to stderr with
 * sd-daemon "<N>" priority prefixes and the fields appended, so nothing is lost when no
 * journald runs: sd_journal_send would drop them silently. errno is preserved. */
#pragma once

#include <syslog.h>

/* MESSAGE_IDs (sd-id128, stable forever: journal catalog entries refer to them). */
#define LOG_MID_BOARD_APPEARED "3b0f5f0ec4b84a52a0f2a7e4a1c1d101"
#define LOG_MID_BOARD_LEFT "3b0f5f0ec4b84a52a0f2a7e4a1c1d102"
#define LOG_MID_FIRMWARE_QUEUED "3b0f5f0ec4b84a52a0f2a7e4a1c1d103"
#define LOG_MID_FIRMWARE_REJECTED "3b0f5f0ec4b84a52a0f2a7e4a1c1d104"
#define LOG_MID_FLASH_STARTED "3b0f5f0ec4b84a52a0f2a7e4a1c1d105"
#define LOG_MID_FLASH_SUCCEEDED "3b0f5f0ec4b84a52a0f2a7e4a1c1d106"
#define LOG_MID_FLASH_FAILED "3b0f5f0ec4b84a52a0f2a7e4a1c1d107"
#define LOG_MID_ROLLED_BACK "3b0f5f0ec4b84a52a0f2a7e4a1c1d108"
/* firmware.bin is on the card of an SDIO board; the bootloader reads it after a power cycle */
#define LOG_MID_NEEDS_POWER_CYCLE "3b0f5f0ec4b84a52a0f2a7e4a1c1d1c1"
/* a power cycle of a board (Moonraker power device or command) succeeded or failed */
#define LOG_MID_POWER_CYCLE "3b0f5f0ec4b84a52a0f2a7e4a1c1d1c2"

/* Structured context of a message; every member may be NULL. */
struct log_fields {
	const char *message_id; /* LOG_MID_* */
	const char *board;	/* SKRFLASH_BOARD: catalog board name */
	const char *port;	/* SKRFLASH_PORT: USB port path */
	const char *serial;	/* SKRFLASH_SERIAL */
	const char *mode;	/* SKRFLASH_MODE */
	const char *profile;	/* SKRFLASH_PROFILE */
	const char *sha256;	/* SKRFLASH_SHA256 */
	const char *job;	/* SKRFLASH_JOB */
	const char *step;	/* SKRFLASH_STEP */
	const char *state;	/* SKRFLASH_STATE: what the board waits for ("needs-power-cycle") */
};

enum log_target {
	LOG_TARGET_AUTO, /* journal if stderr is the journal, else stderr */
	LOG_TARGET_STDERR,
	LOG_TARGET_JOURNAL,
};

/* Set up once from main(); `ident` names the program in stderr lines when not NULL. */
void log_open(enum log_target target, int max_priority, const char *ident);
void log_set_max_priority(int max_priority);
int log_get_max_priority(void);

/* err is 0 or a negative errno whose text is appended as ": <strerror>". Returns err. */
int log_full(int priority, int err, const struct log_fields *f, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#define log_error(...) log_full(LOG_ERR, 0, NULL, __VA_ARGS__)
#define log_warn(...) log_full(LOG_WARNING, 0, NULL, __VA_ARGS__)
#define log_notice(...) log_full(LOG_NOTICE, 0, NULL, __VA_ARGS__)
#define log_info(...) log_full(LOG_INFO, 0, NULL, __VA_ARGS__)
#define log_debug(...) log_full(LOG_DEBUG, 0, NULL, __VA_ARGS__)
#define log_error_errno(r, ...) log_full(LOG_ERR, (r), NULL, __VA_ARGS__)
#define log_warn_errno(r, ...) log_full(LOG_WARNING, (r), NULL, __VA_ARGS__)
#define log_notice_errno(r, ...) log_full(LOG_NOTICE, (r), NULL, __VA_ARGS__)
#define log_info_errno(r, ...) log_full(LOG_INFO, (r), NULL, __VA_ARGS__)
#define log_debug_errno(r, ...) log_full(LOG_DEBUG, (r), NULL, __VA_ARGS__)
