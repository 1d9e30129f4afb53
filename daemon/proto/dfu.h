/* SPDX-License-Identifier: GPL-2.0-or-later */
/* proto/dfu: pure codec for USB DFU 1.1 and ST's DfuSe extensions (protocols.md §3).
 *
 * Request numbers, GETSTATUS replies, the DFU functional descriptor, the DfuSe memory-layout
 * string of each alternate setting and the DfuSe command blocks. No I/O: the DFU backend
 * moves the bytes, and the simulator in tests/sim speaks the same codec from the device side. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* bmRequestType of class requests to the interface (§3.2). */
#define DFU_REQTYPE_OUT 0x21
#define DFU_REQTYPE_IN 0xa1

enum dfu_request {
	DFU_REQ_DETACH = 0,
	DFU_REQ_DNLOAD = 1,
	DFU_REQ_UPLOAD = 2,
	DFU_REQ_GETSTATUS = 3,
	DFU_REQ_CLRSTATUS = 4,
	DFU_REQ_GETSTATE = 5,
	DFU_REQ_ABORT = 6,
};

enum dfu_state {
	DFU_STATE_APP_IDLE = 0,
	DFU_STATE_APP_DETACH = 1,
	DFU_STATE_IDLE = 2,
	DFU_STATE_DNLOAD_SYNC = 3,
	DFU_STATE_DNBUSY = 4,
	DFU_STATE_DNLOAD_IDLE = 5,
	DFU_STATE_MANIFEST_SYNC = 6,
	DFU_STATE_MANIFEST = 7,
	DFU_STATE_MANIFEST_WAIT_RESET = 8,
	DFU_STATE_UPLOAD_IDLE = 9,
	DFU_STATE_ERROR = 10,
};

enum dfu_status {
	DFU_STATUS_OK = 0x00,
	DFU_STATUS_ERR_TARGET = 0x01,
	DFU_STATUS_ERR_FILE = 0x02,
	DFU_STATUS_ERR_WRITE = 0x03,
	DFU_STATUS_ERR_ERASE = 0x04,
	DFU_STATUS_ERR_CHECK_ERASED = 0x05,
	DFU_STATUS_ERR_PROG = 0x06,
	DFU_STATUS_ERR_VERIFY = 0x07,
	DFU_STATUS_ERR_ADDRESS = 0x08,
	DFU_STATUS_ERR_NOTDONE = 0x09,
	DFU_STATUS_ERR_FIRMWARE = 0x0a,
	DFU_STATUS_ERR_VENDOR = 0x0b,
	DFU_STATUS_ERR_USBR = 0x0c,
	DFU_STATUS_ERR_POR = 0x0d,
	DFU_STATUS_ERR_UNKNOWN = 0x0e,
	DFU_STATUS_ERR_STALLEDPKT = 0x0f,
};

/* DFU functional descriptor (§3.1). */
#define DFU_DESC_FUNCTIONAL 0x21
#define DFU_ATTR_CAN_DNLOAD 0x01
#define DFU_ATTR_CAN_UPLOAD 0x02
#define DFU_ATTR_MANIFEST_TOLERANT 0x04
#define DFU_ATTR_WILL_DETACH 0x08
#define DFU_BCD_DFUSE 0x011a

/* DfuSe commands: DNLOAD with wBlockNum 0, first byte (§3.4). */
#define DFUSE_CMD_GET_COMMANDS 0x00
#define DFUSE_CMD_SET_ADDRESS 0x21
#define DFUSE_CMD_ERASE 0x41
#define DFUSE_CMD_READ_UNPROTECT 0x92
#define DFUSE_CMD_LEN 5

#define DFU_STATUS_LEN 6

struct dfu_status_reply {
	uint8_t status;		  /* enum dfu_status */
	uint32_t poll_timeout_ms; /* bwPollTimeout, 24 bits */
	uint8_t state;		  /* enum dfu_state */
	uint8_t istring;
};

/* Decode a GETSTATUS reply; -EBADMSG when shorter than 6 bytes. */
int dfu_status_decode(const uint8_t *buf, size_t len, struct dfu_status_reply *ret);
/* Encode a GETSTATUS reply (poll timeout clamped to 24 bits). */
void dfu_status_encode(const struct dfu_status_reply *s, uint8_t out[DFU_STATUS_LEN]);
/* Names as in the DFU 1.1 spec ("dfuDNLOAD-IDLE", "errTARGET"); "unknown" outside range. */
const char *dfu_state_to_string(unsigned state);
const char *dfu_status_to_string(unsigned status);

struct dfu_func_desc {
	uint8_t attributes;	 /* DFU_ATTR_* */
	uint16_t detach_timeout; /* ms */
	uint16_t transfer_size;	 /* bytes per DNLOAD/UPLOAD */
	uint16_t bcd_dfu;	 /* 0x0100 when the 7-byte DFU 1.0 form omits it */
};

/* Find the functional descriptor in an interface's or configuration's extra descriptor
 * bytes. -ENOENT if absent, -EBADMSG for a malformed descriptor chain. */
int dfu_func_desc_parse(const uint8_t *extra, size_t len, struct dfu_func_desc *ret);

/* Memory-layout segment type bits: the layout letter 'a'..'g' & 7 (§3.5). */
#define DFU_MEM_READABLE 0x1
#define DFU_MEM_ERASABLE 0x2
#define DFU_MEM_WRITABLE 0x4

#define DFU_LAYOUT_MAX_SEGMENTS 32
#define DFU_LAYOUT_NAME_MAX 48

/* `count` pages of `page_size` bytes from `start`. */
struct dfu_segment {
	uint32_t start;
	uint32_t page_size;
	uint32_t count;
	unsigned flags; /* DFU_MEM_* */
};

struct dfu_layout {
	char name[DFU_LAYOUT_NAME_MAX]; /* trimmed, e.g. "Internal Flash" */
	size_t n_segments;
	struct dfu_segment segments[DFU_LAYOUT_MAX_SEGMENTS];
};

/* Parse a DfuSe layout string "@Name/0xADDR/NN*SSSMT,.../0xADDR/...". -EINVAL on a syntax
 * error, -ERANGE when a region wraps the 32-bit space, -E2BIG for too many segments. */
int dfu_layout_parse(const char *s, struct dfu_layout *ret);
/* The segment whose pages contain addr: its index, and the page's start and size (may be
 * NULL); -ENOENT when no segment does. */
int dfu_layout_find(const struct dfu_layout *l, uint32_t addr, uint32_t *ret_page_start,
		    uint32_t *ret_page_size);
/* Bytes covered by all segments. */
uint64_t dfu_layout_size(const struct dfu_layout *l);

/* DfuSe command blocks (§3.4); return the block length. */
size_t dfu_cmd_set_address(uint8_t out[DFUSE_CMD_LEN], uint32_t addr);
size_t dfu_cmd_erase_page(uint8_t out[DFUSE_CMD_LEN], uint32_t addr);
size_t dfu_cmd_mass_erase(uint8_t out[DFUSE_CMD_LEN]);
/* Address of a DfuSe data block: (wBlockNum - 2) * transfer_size + pointer; -EINVAL for
 * wBlockNum < 2 (0 is a command, 1 is not valid), -ERANGE when it overflows 32 bits. */
int dfu_block_address(uint16_t block, uint16_t transfer_size, uint32_t pointer, uint32_t *ret_addr);
