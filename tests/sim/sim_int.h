/* SPDX-License-Identifier: GPL-2.0-or-later */
/* sim_int: state shared by the simulator's files (sim.c, sim_katapult.c, sim_proc.c).
 *
 * Threads: the service thread owns every board's pty and scheduled actions and runs with
 * sim->lock held while it works; public calls take the same lock. umockdev's ioctl worker
 * thread never takes it: it only sets atomics and wakes the service thread. */
#pragma once

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <umockdev.h>

#include "catalog.h"
#include "flash.h"
#include "sim.h"

#define SIM_MAX_BOARDS 64
#define SIM_MAX_TTYS 64
#define SIM_BLOCK_SIZE 64 /* Katapult CONFIG_BLOCK_SIZE on stm32/lpc176x/rp2040 (§2.2) */

enum sim_action {
	SIM_ACT_NONE,
	SIM_ACT_RESET,	      /* disconnect, then boot after the re-enumeration delay */
	SIM_ACT_BOOT,	      /* run the boot model now (board is unplugged) */
	SIM_ACT_FLICKER_DOWN, /* boot loop: the app crashed, drop off the bus */
};

/* Where the next boot goes regardless of the application (a request left in RAM/registers). */
enum sim_boot_request {
	SIM_REQ_NONE,
	SIM_REQ_KATAPULT, /* Klipper wrote Katapult's request code (§2.1) */
	SIM_REQ_ROM_DFU,  /* Klipper dfu_reboot flag */
	SIM_REQ_LPC_DFU,  /* WDTOF set: smoothie-style bootloader enters DFU */
	SIM_REQ_BOOTSEL,  /* RP2040 reset_usb_boot */
	SIM_REQ_APP,	  /* Katapult REQUEST_START_APP after COMPLETE */
};

struct sim_board {
	struct sim *sim;
	size_t index;
	const struct catalog_board *model;
	struct flash *flash;
	char *port; /* "1-1.3" */
	int bus;
	char *port_path; /* "1.3" */
	char uid[40];
	enum sim_bootloader bootloader;
	uint32_t app_start;
	double speed;
	enum sim_bootloop bootloop;
	unsigned bootloop_cycles;

	/* current enumeration (valid while mode != OFF) */
	enum sim_mode mode;
	int devnum;
	int tty_index; /* -1: no tty */
	int master_fd;
	char *syspath; /* "/sys/devices/..." */
	char *devnode; /* "/dev/bus/usb/BBB/DDD" */
	char *tty;     /* "/dev/ttyACMn" */
	char *by_id;   /* "/dev/serial/by-id/..." */
	char *by_path;
	char serial[64];
	unsigned n_ifaces;
	bool iface_has_driver[4];
	UMockdevIoctlBase *tty_handler;
	void *dfuse; /* struct dfuse_dev * while in ROM DFU with the DfuSe simulator */
	char app_version[128];
	unsigned enumerations;

	/* tty line state: written by the umockdev worker thread */
	atomic_uint open_events;
	atomic_int modem_bits;
	atomic_uint leave_requests; /* DfuSe leave from the ioctl thread */
	unsigned open_seen;
	bool tty_open;

	/* scheduled action (service thread) */
	enum sim_action action;
	uint64_t action_at_us;
	enum sim_boot_request request;
	unsigned flicker_left;
	bool never_back;
	unsigned boot_fail_left; /* SIM_FAULT_BOOT_FAIL: app start-ups still to crash */
	char crash_version[64];	 /* spec->crash_version, "" = none */
	char dfu_layout[256];	 /* spec->dfu_layout, "" = the catalog's */

	/* Katapult device state */
	uint8_t rx[1100];
	size_t rx_len;
	bool kat_silent;     /* one NACK sent after a bad frame: quiet until a valid one */
	bool kat_drop_first; /* USBFS prime quirk: next reply after open is lost */
	uint32_t kat_pages;  /* pages erased since CONNECT (SEND_EOF reply) */
	uint8_t tx[2200];    /* reply waiting for the device busy time */
	size_t tx_len;
	uint64_t tx_at_us; /* the reply's due time; kept after it is written: the device is free
			    * again from then */
	uint64_t stall_until_us;
	uint64_t probe_fast_until_us; /* look for the tty's open often until then */
	bool plain_katapult_tty;      /* spec.plain_katapult_tty */
	/* the device's own clock, kept apart from the simulator thread's wake-up latency: a
	 * frame already received when the previous reply fell due starts then, not when the
	 * thread got round to it */
	size_t rx_early;	   /* leading rx bytes that were there before the latest read */
	uint64_t rx_seen_us;	   /* when a read last brought bytes */
	uint64_t rx_early_seen_us; /* rx_seen_us before the latest read: rx_early arrived by then */
	uint64_t kat_start_us;	   /* modelled start of the frame being handled, 0 = now */
	struct sim_katapult_stats stats;
	struct sim_fault fault;
	unsigned fault_frames;	/* frames received since the fault was set */
	unsigned fault_replies; /* replies produced since the fault was set */
	bool fault_dfu_pending;
};

struct sim {
	UMockdevTestbed *tb;
	char *root;
	pthread_mutex_t lock;
	pthread_cond_t cond; /* broadcast on every mode change */
	pthread_t thread;
	bool thread_started;
	bool stop;
	int wake_fd; /* eventfd */
	struct sim_board *boards[SIM_MAX_BOARDS];
	size_t n_boards;
	int next_devnum[128];
	bool tty_used[SIM_MAX_TTYS];
	unsigned proc_seq;
	/* DfuSe devices of past enumerations: umockdev may still be delivering an ioctl to one
	 * on its own thread after detach, so they are freed only with the whole simulator */
	void *dead_dfuse[256];
	size_t n_dead_dfuse;
};

uint64_t sim_now_us(void);
void sim_wake(struct sim *s);
/* Called with sim->lock held, from the service thread or a public call. */
int sim_board_plug_locked(struct sim_board *b, enum sim_mode mode);
int sim_board_unplug_locked(struct sim_board *b);
void sim_board_schedule(struct sim_board *b, enum sim_action action, uint32_t delay_us);
/* Scaled device delay: base_us * speed, at least min_us. */
uint32_t sim_board_delay_us(const struct sim_board *b, uint32_t base_us, uint32_t min_us);

/* Katapult device (sim_katapult.c), service thread with sim->lock held. */
void sim_katapult_reset(struct sim_board *b);
void sim_katapult_opened(struct sim_board *b);
/* Consume b->rx; may queue a reply in b->tx or schedule a reset. */
void sim_katapult_process(struct sim_board *b);
/* Fault bookkeeping for a reply about to be written; returns how many copies to send (0..2)
 * and may corrupt the buffer. */
unsigned sim_katapult_reply_fault(struct sim_board *b, uint8_t *buf, size_t len);
