/* SPDX-License-Identifier: GPL-2.0-or-later */
/* lpcdfu: the community LPC176x SD+DFU bootloader's USB side, 1d50:6015, plain DFU 1.1,
 * simulated on the shared usbdevfs handler (usbdevfs.c). Written from its source, dfu.c,
 * main.c and sbl_iap.c of triffid/LPC17xx-DFU-Bootloader and of the SKR fork
 * ardiehl/BTT_SKR_13_14_14T_SD-DFU-Bootloader (protocols.md §3.7); lpcdfu.c says what the
 * firmware does, quirks included. dfu-util drives it unmodified. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <umockdev.h>

#include "flash.h"

#define LPCDFU_VID 0x1d50
#define LPCDFU_PID 0x6015
#define LPCDFU_BCD_DEVICE 0x0040
#define LPCDFU_BLOCK 512	    /* DFU_BLOCK_SIZE = wTransferSize */
#define LPCDFU_USER_START 0x4000u   /* _user_flash_start */
#define LPCDFU_USER_SIZE 0x7c000u   /* _user_flash_size */
#define LPCDFU_POLL_TIMEOUT_MS 500u /* DFU_status.bwPollTimeout, never changed */
#define LPCDFU_MAX_DESCRIPTORS (18 + 9 + 9 + 9)

enum {
	LPCDFU_STR_MANUFACTURER = 1,
	LPCDFU_STR_PRODUCT = 2,
	LPCDFU_STR_INTERFACE = 3,
};

struct lpcdfu_stats {
	uint64_t control;    /* every control transfer */
	uint64_t request[7]; /* DFU class requests by bRequest */
	uint64_t stalls;
	uint64_t blocks;       /* data DNLOADs programmed */
	uint64_t out_of_order; /* blocks that did not follow the previous one (flash_p) */
	uint64_t not_erased;   /* blocks programmed over flash that was not erased (ANDed) */
	uint64_t erases;       /* sectors erased (a block at a sector's first address) */
	uint64_t uploads;
	uint64_t bytes_written;
	uint64_t bytes_read;
	unsigned state;	 /* current_state */
	unsigned status; /* DFU_status.bStatus */
	bool manifested; /* the zero-length DNLOAD and its GETSTATUS: USB disconnected */
};

struct lpcdfu_dev;

/* The bootloader in DFU mode over `flash` (borrowed; must outlive it). */
struct lpcdfu_dev *lpcdfu_new(struct flash *flash);
struct lpcdfu_dev *lpcdfu_free(struct lpcdfu_dev *d);
/* Device + configuration descriptors (sysfs "descriptors"); the full length, copies <= len. */
size_t lpcdfu_descriptors(const struct lpcdfu_dev *d, uint8_t *buf, size_t len);
const char *lpcdfu_string(const struct lpcdfu_dev *d, unsigned index);
int lpcdfu_attach(struct lpcdfu_dev *d, UMockdevTestbed *tb, const char *devnode);
void lpcdfu_detach(struct lpcdfu_dev *d, UMockdevTestbed *tb, const char *devnode);
/* One control transfer (setup + data stage): byte count, -EPIPE stall, -ENODEV gone. */
int lpcdfu_control(struct lpcdfu_dev *d, const uint8_t setup[8], uint8_t *data);
/* Power lost: later requests fail with ENODEV. True when a download was cut short (blocks
 * programmed and no manifest since): the application area holds part of an image. */
bool lpcdfu_power_off(struct lpcdfu_dev *d);
/* Called once after the manifest GETSTATUS (the bootloader disconnects and jumps to the
 * application), from the thread that handled it, without locks held. */
void lpcdfu_set_manifest_cb(struct lpcdfu_dev *d, void (*cb)(void *ctx), void *ctx);
/* Called when a block at or above address `at` arrives, instead of programming it: the
 * cable is pulled mid-download (the callee unplugs the board). */
void lpcdfu_set_unplug_at(struct lpcdfu_dev *d, uint32_t at, void (*cb)(void *ctx), void *ctx);
/* Fault: the nth (from 1) block's IAP write fails; write_flash() returns the IAP error and
 * the bootloader answers errPROG / dfuERROR. 0 clears. */
void lpcdfu_fail_write_at(struct lpcdfu_dev *d, unsigned nth);
void lpcdfu_get_stats(struct lpcdfu_dev *d, struct lpcdfu_stats *ret);
