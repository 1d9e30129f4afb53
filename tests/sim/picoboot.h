/* SPDX-License-Identifier: GPL-2.0-or-later */
/* picoboot: the RP2040 bootrom's PICOBOOT interface in BOOTSEL mode (2e8a:0003, interface 1,
 * bulk OUT 0x03 / IN 0x84), simulated on the shared usbdevfs handler (usbdevfs.c) like dfuse.c.
 *
 * Behaviour modelled from the RP2040 datasheet §2.8.5 and from what the host tools that work
 * on real boards expect (Klipper lib/rp2040_flash, picotool's picoboot_connection.c):
 * - a 32-byte command, then its data phase, then an acknowledgement in the opposite
 *   direction; the command executes before the acknowledgement completes (erase and
 *   program take the QSPI flash's datasheet time: W25Q16JV, 45 ms per 4 KiB sector, 0.4 ms
 *   per 256-byte page);
 * - a refused command halts both bulk endpoints; CMD_STATUS says why; the host clears the
 *   halts and sends IF_RESET before the next command;
 * - FLASH_ERASE needs 4 KiB alignment, WRITE to flash 256 bytes; WRITE does no erase: the
 *   flash ANDs new data into what is there, silently, as NOR flash does;
 * - REBOOT acknowledges, then the chip leaves the bus after dDelayMS and boots.
 * The checks here are written from those sources, not shared with daemon/proto/picoboot.c,
 * so that the simulator can disagree with the code under test. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <umockdev.h>

#include "flash.h"

#define PICOBOOT_SIM_EP_OUT 0x03
#define PICOBOOT_SIM_EP_IN 0x84
#define PICOBOOT_SIM_IFACE 1

struct picoboot_sim_stats {
	uint64_t commands;   /* command blocks received, valid or not */
	uint64_t refused;    /* commands answered with a halt */
	uint64_t erases;     /* 4 KiB sectors erased */
	uint64_t writes;     /* WRITE commands executed */
	uint64_t reads;	     /* READ commands executed */
	uint64_t bytes_read; /* data phase IN */
	uint64_t bytes_written;
	uint64_t and_writes; /* WRITEs onto flash that was not erased (bits could not rise) */
	bool exclusive;
	bool xip_exited;
	bool left;
	uint32_t reboot_pc, reboot_delay_ms;
	uint32_t last_status;
};

enum picoboot_sim_fault {
	PICOBOOT_SIM_FAULT_NONE,
	PICOBOOT_SIM_FAULT_UNPLUG, /* the WRITE whose data reaches byte `at` (counted over every
				    * WRITE) never completes: the board loses power */
	PICOBOOT_SIM_FAULT_STATUS, /* the `at`th WRITE is refused with a status */
};

struct picoboot_sim;

/* A BOOTSEL device over `flash` (borrowed, RP2040 geometry). */
struct picoboot_sim *picoboot_sim_new(struct flash *flash);
struct picoboot_sim *picoboot_sim_free(struct picoboot_sim *d);
int picoboot_sim_attach(struct picoboot_sim *d, UMockdevTestbed *tb, const char *devnode);
void picoboot_sim_detach(struct picoboot_sim *d, UMockdevTestbed *tb, const char *devnode);
/* Called once when a REBOOT was acknowledged, from the ioctl thread, no locks held: the
 * callee must not block (the chip leaves the bus dDelayMS later). */
void picoboot_sim_set_reboot_cb(struct picoboot_sim *d,
				void (*cb)(void *ctx, uint32_t pc, uint32_t delay_ms), void *ctx);
/* Called when an injected unplug fault fires, from the ioctl thread, no locks held. */
void picoboot_sim_set_unplug_cb(struct picoboot_sim *d, void (*cb)(void *ctx), void *ctx);
/* Another program holds the vendor interface: claiming it fails with EBUSY. */
void picoboot_sim_set_busy(struct picoboot_sim *d, bool busy);
void picoboot_sim_fault(struct picoboot_sim *d, enum picoboot_sim_fault kind, uint32_t at,
			uint32_t status);

/* The bus side, for unit tests and the ioctl handler. Bulk: bytes transferred, -EPIPE
 * when the endpoint is halted, -ENODEV after the reboot. Control: as dfuse_control. */
int picoboot_sim_bulk(struct picoboot_sim *d, uint8_t ep, uint8_t *buf, size_t len);
int picoboot_sim_control(struct picoboot_sim *d, const uint8_t setup[8], uint8_t *data);
void picoboot_sim_clear_halt(struct picoboot_sim *d, uint8_t ep);
void picoboot_sim_get_stats(struct picoboot_sim *d, struct picoboot_sim_stats *ret);
