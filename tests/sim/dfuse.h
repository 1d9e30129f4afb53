/* SPDX-License-Identifier: GPL-2.0-or-later */
/* dfuse: the STM32 system-memory (ROM) DFU bootloader, 0483:df11, simulated on a umockdev
 * usbdevfs ioctl handler (protocols.md §3, ST AN2662/AN3156).
 *
 * It writes into a struct flash, executes each DNLOAD on the following GETSTATUS with the
 * flash timing model's busy time as bwPollTimeout, and enforces that time: a GETSTATUS that
 * comes early answers dfuDNBUSY again, like a busy device. dfu-util drives it unmodified. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <umockdev.h>

#include "flash.h"

#define DFUSE_VID 0x0483
#define DFUSE_PID 0xdf11
#define DFUSE_BCD_DEVICE 0x2200
#define DFUSE_TRANSFER_SIZE 2048
#define DFUSE_MAX_ALTS 4
#define DFUSE_MAX_DESCRIPTORS (18 + 9 + DFUSE_MAX_ALTS * 9 + 9)

/* String descriptor indexes (iInterface of alt n is DFUSE_STR_ALT0 + n). */
enum {
	DFUSE_STR_MANUFACTURER = 1,
	DFUSE_STR_PRODUCT = 2,
	DFUSE_STR_SERIAL = 3,
	DFUSE_STR_ALT0 = 4,
};

/* Operations that fault injection can make fail. */
enum dfuse_op {
	DFUSE_OP_WRITE,	      /* a data DNLOAD (wBlockNum >= 2) */
	DFUSE_OP_ERASE,	      /* an erase command (page or mass) */
	DFUSE_OP_SET_ADDRESS, /* a set-address command */
	_DFUSE_OP_MAX,
};

struct dfuse_stats {
	uint64_t control;	 /* every control transfer, standard ones included */
	uint64_t request[7];	 /* DFU class requests by bRequest (enum dfu_request) */
	uint64_t get_descriptor; /* standard GET_DESCRIPTOR */
	uint64_t set_interface;	 /* alt setting selections (ioctl) */
	uint64_t stalls;
	uint64_t dnload_data;  /* data blocks (wBlockNum >= 2, wLength > 0) */
	uint64_t dnload_cmd;   /* DfuSe commands (wBlockNum 0) */
	uint64_t upload;       /* UPLOAD requests */
	uint64_t getstatus;    /* = request[DFU_REQ_GETSTATUS] */
	uint64_t busy_replies; /* GETSTATUS answered dfuDNBUSY */
	uint64_t early_polls;  /* GETSTATUS before the previous bwPollTimeout elapsed */
	uint64_t erases;       /* page erase commands executed */
	uint64_t mass_erases;
	uint64_t bytes_written;
	uint64_t bytes_read;
	uint64_t unhandled_ioctls;
	uint64_t paced_us;  /* time transfers waited for their USB frame (timing model) */
	unsigned state;	    /* current enum dfu_state */
	unsigned status;    /* current enum dfu_status */
	uint32_t pointer;   /* address pointer */
	bool left;	    /* leave executed: the device is gone from the bus */
	uint32_t jump_addr; /* where it jumped */
};

struct dfuse_dev;

/* A ROM DFU device over `flash` (borrowed; must outlive it) reporting `serial`. */
struct dfuse_dev *dfuse_new(struct flash *flash, const char *serial);
/* Detaches nothing: call dfuse_detach first if attached. Returns NULL. */
struct dfuse_dev *dfuse_free(struct dfuse_dev *d);
/* Device + configuration descriptors (sysfs "descriptors" attribute); returns the full
 * length, copies at most len bytes. */
size_t dfuse_descriptors(const struct dfuse_dev *d, uint8_t *buf, size_t len);
/* String descriptor text by index (1..3, alt strings from DFUSE_STR_ALT0); NULL if none. */
const char *dfuse_string(const struct dfuse_dev *d, unsigned index);
size_t dfuse_alt_count(const struct dfuse_dev *d);
/* Serve the usbdevfs node `devnode` ("/dev/bus/usb/001/007") of a device already added to
 * the testbed. Attach before the program under test opens it. 0 or -errno. */
int dfuse_attach(struct dfuse_dev *d, UMockdevTestbed *tb, const char *devnode);
void dfuse_detach(struct dfuse_dev *d, UMockdevTestbed *tb, const char *devnode);
/* The device lost power (unplug): every later request of a client that still has the node
 * open fails with ENODEV, as on a real bus. Whether a download was cut in the middle: the
 * flash changed and was not read back since, and no leave (the application is then torn;
 * a host reads back what it wrote before it leaves). */
bool dfuse_power_off(struct dfuse_dev *d);
/* Called once after the leave GETSTATUS, from the thread that handled it, without locks held:
 * the callee must not block nor call dfuse_detach there (hand it to another thread). */
void dfuse_set_leave_cb(struct dfuse_dev *d, void (*cb)(void *ctx, uint32_t jump_addr), void *ctx);

/* One control transfer as the bus would deliver it: setup packet, data stage of wLength
 * bytes (in or out). Returns the IN/OUT byte count, -EPIPE for a stall, -ENODEV after
 * the leave. Thread-safe; the ioctl handler calls this, unit tests may call it directly. */
int dfuse_control(struct dfuse_dev *d, const uint8_t setup[8], uint8_t *data);
/* Select the alternate setting (USBDEVFS_SETINTERFACE). -EINVAL if out of range. */
int dfuse_set_alt(struct dfuse_dev *d, unsigned alt);
/* Replace the flash alternate's (alt 0) layout string, before the device is attached. */
void dfuse_set_layout(struct dfuse_dev *d, const char *layout);

/* Fault injection: the nth (from 1, counted since dfuse_new) operation of kind op fails with
 * DFU status `status` on its execution (its GETSTATUS pair); 0 clears. */
void dfuse_fail_at(struct dfuse_dev *d, enum dfuse_op op, unsigned nth, uint8_t status);
/* The nth DFU class request with this bRequest stalls (USB STALL, like a hung ROM). */
void dfuse_stall_at(struct dfuse_dev *d, uint8_t request, unsigned nth);
/* Replace the monotonic clock (microseconds), for deterministic poll-timeout tests. */
void dfuse_set_clock(struct dfuse_dev *d, uint64_t (*now_us)(void *ctx), void *ctx);
void dfuse_get_stats(struct dfuse_dev *d, struct dfuse_stats *ret);
