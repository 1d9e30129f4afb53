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
#include "proto/katapult.h"
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

struct sim_sdcard;
struct lpcdfu_dev;

/* Marlin as the application (sim_marlin.c): the tty's G-code state and the card's owner. */
struct sim_marlin {
	char line[160]; /* the command being received */
	size_t len;
	bool overflow;	    /* the line is too long: answered as unknown */
	bool mounted;	    /* Marlin has the card mounted: the USB drive shows no medium */
	unsigned faults;    /* SIM_MARLIN_* of sim_board_set_marlin() */
	uint32_t print_pos; /* SIM_MARLIN_PRINTING: "SD printing byte pos/size" */
	uint32_t print_size;
	char m115[320]; /* the FIRMWARE_NAME line of the build in flash */
};

/* The Klipper application's state (sim_klipper.c): reset at every boot, except the card. */
struct sim_klipper {
	uint8_t *dict_z; /* the zlib dictionary identify serves */
	size_t dict_zlen;
	int cmd_id[16], cmd_h[16]; /* command id -> handler index */
	size_t n_cmds;
	int rsp_identify, rsp_config, rsp_transfer, rsp_shutdown, rsp_is_shutdown;
	uint8_t next_seq;
	bool need_valid;
	bool shutdown;
	uint32_t is_config, crc, oids;
	bool spi_configured, spi_has_cs, spi_bus_set, spi_sw;
	uint32_t spi_cs, spi_bus, spi_pins[3];
	struct sim_sdcard *card;
	struct sim_klipper_stats stats;
	/* the timing model (speed > 0, sim_klipper.c): the MCU's clock, its USB transmit
	 * buffer and bulk IN endpoint, and when the host's bytes arrived */
	uint32_t clock_freq, spi_rate;
	uint64_t t_ns;	      /* the MCU's modelled time while it runs a block */
	uint64_t cpu_free_ns; /* the MCU finished its last block */
	size_t rx_seen;	      /* bytes of b->rx already given an arrival time */
	uint64_t rx_total, out_clock;
	struct {
		uint64_t end, at; /* stream position, arrival (us) */
	} marks[32];
	unsigned n_marks;
	uint8_t tx[1024]; /* [0, ep): the endpoint packet; [ep, tx_len): transmit_buf */
	size_t tx_len, ep;
	uint64_t ep_read_us; /* when the host reads the endpoint packet */
	uint64_t in_clock;
	bool lone;		/* the block being run was alone on the bus */
	uint64_t last_block_us; /* when the block before it arrived */
	uint64_t in_hold_until; /* SIM_FAULT_STALL: no IN packet is read before then (us) */
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
	unsigned links_handled; /* bit 1: tty_handler serves by_id, bit 2: by_path (another
				 * board may own the same link) */
	void *dfuse;		/* struct dfuse_dev * while in ROM DFU with the DfuSe simulator */
	void *picoboot;		/* struct picoboot_sim * while in RP2040 BOOTSEL */
	struct lpcdfu_dev *lpcdfu; /* while in LPC DFU (the community bootloader) */
	struct sim_drive *drive;   /* the RPI-RP2 drive while in RP2040 BOOTSEL */
	struct sim_marlin mr;	   /* Marlin as the application (sim_marlin.c) */
	char app_version[128];
	unsigned enumerations;

	/* tty line state: written by the umockdev worker thread */
	atomic_uint open_events;
	atomic_int modem_bits;
	atomic_uint leave_requests; /* DfuSe leave or PICOBOOT reboot from the ioctl thread */
	atomic_uint power_cuts;	    /* PICOBOOT unplug fault from the ioctl thread */
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
	/* a DfuSe download lost power before its leave: the application area holds part of an
	 * image, whose code crashes at start-up (a real board executes erased flash); cleared
	 * by the next download that completes */
	bool app_torn;
	char dfu_layout[256]; /* spec->dfu_layout, "" = the catalog's */
	bool lpc_dfu;	      /* its bootloader enters LPC DFU (not spec->lpc_sd_only) */

	/* the MCU's ROM bootloader on a UART (sim_uart.c): NULL unless spec->uart */
	struct sim_uart *uart;

	/* Katapult device state (sim_katapult.c says what real firmware does, with sources) */
	uint8_t rx[1100];
	size_t rx_len;
	bool kat_silent;    /* one NACK sent after a bad frame: quiet until a valid one */
	bool kat_hold_next; /* USBFS prime quirk: the next IN packet loaded waits for another */
	uint32_t kat_pages; /* flash_complete()'s page_write_count: per boot, not per CONNECT */
	/* LPC176x iap_buf / RP2040 page buffer: 256 bytes collected before a flash write */
	uint8_t kat_wbuf[256];
	uint32_t kat_wbuf_addr; /* flash address of kat_wbuf[0] */
	bool kat_wbuf_used;	/* RP2040 buffer_not_empty */
	uint32_t kat_next_addr; /* LPC176x next_address (0 at boot) */
	/* the device's transmit path: tx[0, kat_ep) is the bulk IN endpoint packet the host has
	 * not read yet, tx[kat_ep, tx_len) is usb_cdc.c transmit_buf (192 bytes) */
	uint8_t tx[2200];
	size_t tx_len;
	size_t kat_ep;
	uint64_t kat_ep_read_us; /* when the host reads the endpoint packet; UINT64_MAX: held */
	uint64_t kat_in_clock;	 /* modelled time the IN side was advanced to */
	/* the device's CPU: inside a command handler until kat_busy_until, then its reply goes
	 * into transmit_buf (or is dropped when it does not fit) */
	uint64_t kat_busy_until;
	uint8_t kat_pend[KATAPULT_DEVICE_FRAME_MAX];
	size_t kat_pend_len;
	bool kat_pend_lone; /* the request was alone on the bus: its reply waits for a frame */
	/* OUT side: when the bytes in rx arrived (the wire clock and up to 32 read marks) */
	uint64_t kat_out_clock;
	uint64_t kat_rx_total; /* bytes ever read into rx; rx[0] is byte kat_rx_total - rx_len */
	struct {
		uint64_t end; /* stream position after the read */
		uint64_t at;  /* when its last byte arrived */
	} kat_marks[32];
	unsigned kat_n_marks;
	uint64_t stall_until_us;
	uint64_t probe_fast_until_us; /* look for the tty's open often until then */
	bool plain_katapult_tty;      /* spec.plain_katapult_tty */
	bool plain_klipper_tty;	      /* spec.plain_klipper_tty */
	struct sim_katapult_stats stats;
	struct sim_klipper kl;
	char *sdcard_path;		      /* the image behind kl.card */
	bool sdboot_skip;		      /* the SD loader ran: the next boot starts the app */
	struct sim_sdboot_stats sdboot_stats; /* sdboot.c */
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
	void *dead_picoboot[256];	     /* the same for PICOBOOT devices */
	struct lpcdfu_dev *dead_lpcdfu[256]; /* and for LPC DFU devices */
	size_t n_dead_lpcdfu;
	unsigned next_drive; /* RPI-RP2 drives made so far: each gets a new /dev/sdX */
	size_t n_dead_picoboot;
};

uint64_t sim_now_us(void);
void sim_wake(struct sim *s);
/* Called with sim->lock held, from the service thread or a public call. */
int sim_board_plug_locked(struct sim_board *b, enum sim_mode mode);
int sim_board_unplug_locked(struct sim_board *b);
void sim_board_schedule(struct sim_board *b, enum sim_action action, uint32_t delay_us);
/* Scaled device delay: base_us * speed, at least min_us. */
uint32_t sim_board_delay_us(const struct sim_board *b, uint32_t base_us, uint32_t min_us);

/* RPI-RP2 drive (sim_drive.c), with sim->lock held. create: the image under root/dev and
 * the udev records of its scsi and block devices below usb_iface_path (caller frees).
 * poll: takes the UF2 blocks written since the last look; true once a whole file arrived. */
struct sim_drive;
int sim_drive_create(struct sim_board *b, const char *root, unsigned letter, char **ret_udev,
		     const char *usb_iface_path);
void *sim_drive_free(struct sim_drive *d);
bool sim_drive_poll(struct sim_board *b);
const char *sim_drive_node(const struct sim_drive *d);
const char *sim_drive_file(const struct sim_drive *d);

/* The Marlin card's drive: the same sim_drive over the board's SD card image, in place of
 * the RPI-RP2 image; medium() says whether Marlin lets the host see it. */
int sim_drive_create_card(struct sim_board *b, unsigned letter, char **ret_udev,
			  const char *usb_iface_path);
void sim_drive_set_medium(struct sim_drive *d, bool present);
unsigned sim_drive_host(const struct sim_drive *d); /* its SCSI host number */

/* Marlin application (sim_marlin.c), service thread with sim->lock held. */
bool sim_marlin_app(struct sim_board *b); /* the app in flash is Marlin: fills mr.m115 */
void sim_marlin_boot(struct sim_board *b);
void sim_marlin_received(struct sim_board *b, const uint8_t *data, size_t n);

/* Katapult device (sim_katapult.c), service thread with sim->lock held. */
void sim_katapult_reset(struct sim_board *b);  /* a new enumeration (the device booted) */
void sim_katapult_opened(struct sim_board *b); /* the host opened the tty */
void sim_katapult_closed(struct sim_board *b); /* the host closed it */
void sim_katapult_received(struct sim_board *b, size_t n); /* n bytes were read into rx */
/* Run the device up to now: take frames from rx, write what the host has read to the tty. */
void sim_katapult_run(struct sim_board *b);
/* The next modelled moment the device has something to do; UINT64_MAX: nothing. */
uint64_t sim_katapult_next_us(const struct sim_board *b);

/* Klipper application (sim_klipper.c), service thread with sim->lock held. */
void sim_klipper_boot(struct sim_board *b);
/* Consume b->rx (bytes from the host); answers are written to the pty at once, or, with
 * the timing model (speed > 0), when the modelled USB link delivers them. */
void sim_klipper_process(struct sim_board *b);
/* Timing model: run the MCU and its IN endpoint up to now; the next modelled moment it has
 * something to do (UINT64_MAX: nothing); whether b->rx may take more bytes now (a full
 * receive buffer leaves them with the host, as a NAKed bulk OUT endpoint does). */
void sim_klipper_run(struct sim_board *b);
uint64_t sim_klipper_next_us(const struct sim_board *b);
bool sim_klipper_wants_input(const struct sim_board *b);
/* The dictionary JSON of a simulated build (sim_image.c compresses it into the image). */
char *sim_klipper_dict_json(const struct catalog_mcu *mcu, const char *version,
			    uint32_t clock_freq);

/* sim_image.c: a little-endian word into a simulated image (vector tables, records). */
void sim_image_put_le32(uint8_t *p, uint32_t v);

/* sim_uart.c: the ROM bootloader of a board's MCU on a pty, over the board's own flash. */
struct sim_uart;
int sim_uart_attach(struct sim_board *b);
void sim_uart_free(struct sim_board *b);
/* Which bootloader the board's flash holds now (a rescue may have replaced it): sets
 * b->bootloader and b->app_start. Called with the lock held, before every boot. */
void sim_uart_bootloader_from_flash(struct sim_board *b);
