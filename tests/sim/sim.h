/* SPDX-License-Identifier: GPL-2.0-or-later */
/* sim: simulated SKR-family boards on a umockdev testbed, for tests, the demo and benchmarks.
 *
 * Each board owns a struct flash and changes USB identity like the real thing: Klipper app,
 * Katapult, STM32 ROM DFU, LPC DFU, RP2040 BOOTSEL, Marlin. The daemon under test runs as an
 * unmodified subprocess that sees kernel-like udev events, sysfs attributes, ttyACM nodes and
 * /dev/serial/by-id links. The harness must run under libumockdev-preload (sim_init). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "catalog.h"

struct flash;

enum sim_mode {
	SIM_MODE_OFF,
	SIM_MODE_KLIPPER_APP,
	SIM_MODE_KATAPULT,
	SIM_MODE_ROM_DFU,
	SIM_MODE_LPC_DFU,
	SIM_MODE_BOOTSEL,
	SIM_MODE_MARLIN_LPC,
	SIM_MODE_MARLIN_STM32,
	_SIM_MODE_MAX,
};

enum sim_bootloader {
	SIM_BL_STOCK,	 /* the vendor bootloader of the catalog entry */
	SIM_BL_KATAPULT, /* Katapult replaced it (app start may move, protocols.md §2.3) */
	SIM_BL_NONE,	 /* nothing at flash_base (RP2040 ROM-only boards) */
};

/* What a board with an invalid (or crashing, SIM_FAULT_BOOT_FAIL) application does after
 * reset (protocols.md §7.4).
 *
 * RECOVER models the boot loops that end somewhere reachable: Katapult's double-reset entry
 * on builds whose app crashes within the entry window (§2.1), and the smoothie-style LPC
 * bootloader's watchdog + WDTOF -> DFU (§7.4). After bootloop_cycles flickers the board
 * stays up in its bootloader: Katapult when installed, else STM32 ROM DFU when the board
 * has a ROM DFU path (CATALOG_PATH_ROM_DFU_BUTTON/_SOFT; the operator's BOOT0 press), else
 * LPC DFU on an LPC176x with CATALOG_PATH_LPC_DFU; a board with none of these goes silent
 * like SIM_BOOTLOOP_FLICKER. */
enum sim_bootloop {
	SIM_BOOTLOOP_FLICKER, /* enumerates as klipper-app briefly, vanishes, bootloop_cycles times
			       */
	SIM_BOOTLOOP_SILENT,  /* HardFault lockup: never shows up on USB */
	SIM_BOOTLOOP_RECOVER, /* flickers bootloop_cycles times, then stays in its bootloader */
};

struct sim_board_spec {
	const char *model; /* catalog board name, e.g. "octopus-f446" */
	const char *port;  /* USB port path "1-1", "1-1.3"; bus = leading number */
	const char *uid;   /* chip UID hex; NULL = derived from model+port, stable */
	enum sim_bootloader bootloader;
	enum sim_mode mode;	 /* initial mode */
	const char *app_version; /* version of the factory app image; NULL = "v0.12.0-sim" */
	double speed;		 /* timing multiplier: 0 = instant (default), 1 = datasheet */
	enum sim_bootloop bootloop;
	unsigned bootloop_cycles; /* FLICKER/RECOVER klipper-app appearances; 0 = 3 */
	bool empty;		  /* no factory app image (erased application area) */
	/* An application whose embedded version contains this text crashes at every start-up,
	 * like SIM_FAULT_BOOT_FAIL: a build the host cannot tell is broken (e.g. made for the
	 * wrong crystal). NULL = none. */
	const char *crash_version;
	/* The Katapult tty without the modem-line (TIOCM*) emulation that a real cdc_acm tty
	 * has: with an ioctl handler attached, umockdev's preload sends every read() and write()
	 * on the tty through the handler's socket first, two round trips per frame that no real
	 * link has. For benchmarks of the host side only; the open is then seen by polling. */
	bool plain_katapult_tty;
	/* The same for the Klipper application's tty (the SD-card path's benchmark): no modem
	 * lines, so no 1200-baud touch; the open is seen by polling. */
	bool plain_klipper_tty;
	/* The ROM DfuSe flash alternate's layout string instead of the catalog's: crafted
	 * layouts for the backend's parser and searches. NULL = the real one. */
	const char *dfu_layout;
	/* LPC176x with the stock bootloader: BTT's SD-only build, which does not enter DFU on
	 * the watchdog flag (Klipper's request), a boot loop or an empty application
	 * (protocols.md §1.2). false = the community SD+DFU bootloader of the catalog's
	 * opportunistic CATALOG_PATH_LPC_DFU (tests/sim/lpcdfu.c). */
	bool lpc_sd_only;
	/* The MCU's ROM bootloader answers on a UART (a pty) over this board's flash: LPC176x
	 * ISP (sim_uart.c). Entering it takes the board off USB; leaving it boots whatever the
	 * bootloader area now holds. */
	bool uart;
};

/* Call first in main(): re-exec under libumockdev-preload.so.0 if not already (libasan first
 * when the binary is ASan-built). */
void sim_init(int argc, char **argv);

struct sim;
struct sim_board;

/* Testbed + service thread; sets UMOCKDEV_DIR. Aborts if the testbed cannot be made.
 * $SKRSIM_TTY_BASE: the first ttyACM number boards get (default 0). */
struct sim *sim_new(void);
/* Unplugs every board, stops the service thread, removes the testbed; returns NULL. */
struct sim *sim_free(struct sim *s);
const char *sim_root(struct sim *s); /* testbed dir */
/* Board count and lookup by index (in sim_board_add order) or by port. */
size_t sim_board_count(struct sim *s);
struct sim_board *sim_board_get(struct sim *s, size_t i);
struct sim_board *sim_board_by_port(struct sim *s, const char *port);

/* Creates the board with its factory flash and plugs it in spec->mode (SIM_MODE_OFF: not
 * plugged). Returns NULL (and logs why) on an unknown model or a port already in use. */
struct sim_board *sim_board_add(struct sim *s, const struct sim_board_spec *spec);
/* (Re-)enumerate on the same port in `mode` (unplugging first if needed). 0 or -errno. */
int sim_board_plug(struct sim_board *b, enum sim_mode mode);
/* Kernel-like unplug: remove uevents children-first, nodes and links gone. */
int sim_board_unplug(struct sim_board *b);
/* Press reset: the boot model decides what comes up (valid app -> klipper-app, else boot loop;
 * a pending Katapult request -> Katapult). Asynchronous like a real reboot. */
int sim_board_reset(struct sim_board *b);
/* Power off (the cable pulled): gone from the bus, whatever it was doing ends - an open
 * DfuSe session dies, a bootloader request kept in RAM is lost. 0 or -errno. */
int sim_board_power_off(struct sim_board *b);
/* Power on again: the boot model decides what comes up, as after a cold start. */
int sim_board_power_on(struct sim_board *b);
enum sim_mode sim_board_mode(struct sim_board *b);
/* Waits until the board is up in `mode` (SIM_MODE_OFF: unplugged); 0 or -ETIMEDOUT. */
int sim_board_wait_mode(struct sim_board *b, enum sim_mode mode, int timeout_ms);
/* Waits until the board enumerated at least n times in total; 0 or -ETIMEDOUT. */
int sim_board_wait_enumerations(struct sim_board *b, unsigned n, int timeout_ms);
struct flash *sim_board_flash(struct sim_board *b);
const struct catalog_board *sim_board_model(struct sim_board *b);
const char *sim_board_port(struct sim_board *b);
const char *sim_board_uid(struct sim_board *b);
/* Where the bootloader in flash starts the application (Katapult may move it). */
uint32_t sim_board_app_start(struct sim_board *b);
/* Version from the dictionary of the running app ("" when not in klipper-app mode). The
 * returned string stays valid until the next mode change; copy it. */
const char *sim_board_app_version(struct sim_board *b);
/* RP2040 BOOTSEL: the RPI-RP2 drive's node ("/dev/sdX") and the image file behind it. */
const char *sim_board_drive(struct sim_board *b);
const char *sim_board_drive_image(struct sim_board *b);
const char *sim_board_tty(struct sim_board *b);	      /* "/dev/ttyACMn" while a CDC mode is up */
const char *sim_board_serial(struct sim_board *b);    /* USB serial in the current mode */
const char *sim_board_syspath(struct sim_board *b);   /* "/sys/devices/..." while plugged */
const char *sim_board_devnode(struct sim_board *b);   /* "/dev/bus/usb/BBB/DDD" while plugged */
const char *sim_board_by_id(struct sim_board *b);     /* "/dev/serial/by-id/..." or NULL */
unsigned sim_board_enumerations(struct sim_board *b); /* how often it enumerated (boot loops) */
/* Katapult statistics since the board was added. */
struct sim_katapult_stats {
	unsigned frames_rx;  /* valid frames received */
	unsigned nacks;	     /* NACKs sent */
	unsigned blocks;     /* SEND_BLOCK accepted (including idempotent resends) */
	unsigned resends;    /* identical resends acknowledged without rewriting */
	unsigned erases;     /* pages erased */
	unsigned errors;     /* COMMAND_ERROR sent */
	unsigned completes;  /* COMPLETE received */
	unsigned replies;    /* replies that went into the device's transmit buffer */
	unsigned tx_dropped; /* replies dropped: the 192-byte transmit buffer was full */
};
void sim_board_katapult_stats(struct sim_board *b, struct sim_katapult_stats *ret);

/* The Klipper application's statistics since the board was added. */
struct sim_klipper_stats {
	unsigned blocks;    /* valid blocks received */
	unsigned naks;	    /* NAKs sent (unexpected seq, or a corrupt block) */
	unsigned dropped;   /* blocks dropped by SIM_FAULT_DROP_FRAME */
	uint64_t spi_bytes; /* bytes clocked on the SPI bus */
	/* timing model: responses dropped because the 192-byte transmit buffer was full */
	unsigned tx_dropped;
};
void sim_board_klipper_stats(struct sim_board *b, struct sim_klipper_stats *ret);
/* Put an SD card backed by an image file into the board's slot (its size is the card's;
 * sdhc: block addressing, else SDSC <= 2 GiB); NULL removes it. 0 or -errno. */
int sim_board_set_sdcard(struct sim_board *b, const char *path, bool sdhc);
/* The card is latched in SPI mode (a CMD0 with CS asserted since it was powered). */
bool sim_board_sdcard_spi_mode(struct sim_board *b);
/* Remove and restore the board's power: it drops off USB, the card returns to SD mode, and
 * the board boots again after the usual re-enumeration delay. */
int sim_board_power_cycle(struct sim_board *b);

/* The stock SD bootloader's runs (sdboot.c) since the board was added. */
struct sim_sdboot_stats {
	unsigned runs;	     /* boots on which it looked at the card */
	unsigned flashes;    /* firmware.bin programmed */
	unsigned renames;    /* ... and renamed to FIRMWARE.CUR */
	unsigned power_cuts; /* power lost while programming (SIM_FAULT_UNPLUG_AT_BYTE) */
	unsigned errors;     /* the card image could not be read or written */
	uint32_t last_len;   /* bytes of the last image programmed */
	int last;	     /* enum sdboot_outcome of the last run */
};
void sim_board_sdboot_stats(struct sim_board *b, struct sim_sdboot_stats *ret);
/* A new card image of `bytes` in the testbed, formatted by mkfs (fs: "fat12", "fat16",
 * "fat32", "fat" = mkfs.fat's choice, "exfat", "none" = zeroed), put in the board's slot
 * (SDHC above 2 GiB). 0 or -errno. */
int sim_board_new_sdcard(struct sim_board *b, uint64_t bytes, const char *fs);
/* The image file behind the board's card (NULL: no card); valid until the card changes. */
const char *sim_board_sdcard_path(struct sim_board *b);

/* fault injection (extend as needed) */
/* UNPLUG_AT_BYTE: Katapult SEND_BLOCK at address >= at (at below the app start counts from
 * it) unplugs the board; power returns after `count` ms (0: stays off). The stock SD
 * bootloader loses power the same way while it programs firmware.bin. DFU_ERR_*: the
 * at-th (from 1) write or erase of the DfuSe simulator fails with that DFU status.
 * BOOT_FAIL: a firmware bug the host cannot see - an application that passes every image
 * check crashes at start-up and the board boot-loops as spec.bootloop says; it applies to
 * the next `count` boots that would have started the application (a bootloader request
 * boots the bootloader and does not use one up), whatever is written in between. */
struct sim_fault {
	enum {
		SIM_FAULT_NONE,
		SIM_FAULT_UNPLUG_AT_BYTE,
		SIM_FAULT_CORRUPT_FRAME, /* corrupt `count` reply frames starting with reply `at`
					  * (Klipper app: data replies lost) */
		SIM_FAULT_DROP_FRAME,	 /* drop `count` reply frames starting with reply `at`
					  * (Klipper app: `count` received blocks from `at` lost) */
		SIM_FAULT_DUP_FRAME,	 /* send `count` replies starting with reply `at` twice */
		SIM_FAULT_NACK_STORM,	 /* answer `count` frames from frame `at` with NACK */
		SIM_FAULT_STALL,	 /* from frame `at`, stop answering for `count` ms
					  * (Klipper app with timing: the host reads no bulk
					  * IN packet for `count` ms from reply `at` on) */
		SIM_FAULT_NEVER_BACK,	 /* the next reset never comes back on USB */
		SIM_FAULT_BOOT_FAIL,	 /* the next `count` (0: 1) application start-ups crash */
		SIM_FAULT_DFU_ERR_WRITE, /* forwarded to the DfuSe simulator */
		SIM_FAULT_DFU_ERR_VERIFY,
		SIM_FAULT_DFU_ERR_ERASE,
		/* the `at`th PICOBOOT WRITE is refused with status `count` */
		SIM_FAULT_PICOBOOT_REFUSE,
		/* PICOBOOT cannot be claimed (another program holds it): only the drive is left */
		SIM_FAULT_PICOBOOT_BUSY,
		/* stock SD bootloader (sdboot.c): it programs firmware.bin but f_rename fails
		 * ("Rename fail"), so it re-flashes the file on every boot; until cleared */
		SIM_FAULT_SD_RENAME_FAIL,
		/* stock SD bootloader: the card does not initialise for it (the app keeps
		 * working with it): the next `count` boots (0: every boot) skip the card */
		SIM_FAULT_SD_NO_INIT,
	} kind;
	uint32_t at;
	uint32_t count;
};
int sim_board_set_fault(struct sim_board *b, const struct sim_fault *f);

/* Marlin on the board (sim_marlin.c): faults of its card handling, bit mask. */
enum {
	SIM_MARLIN_M22_IGNORED = 1 << 0, /* M22 answers ok but keeps the card (old builds) */
	SIM_MARLIN_PRINTING = 1 << 1,	 /* an SD print runs: M27 says so, M22 does nothing */
};
int sim_board_set_marlin(struct sim_board *b, unsigned faults);
/* Marlin holds the card now (the host sees no medium on its drive). */
bool sim_board_marlin_card_held(struct sim_board *b);
/* A Marlin build for `mcu` linked at app_start (the LPC176x stock bootloader's 0x4000): a
 * vector table, code-like filler and the M115 literal "FIRMWARE_NAME:Marlin VERSION (...)
 * ... MACHINE_TYPE:machine ..." as the real build holds it. Caller frees. */
uint8_t *sim_image_marlin(const struct catalog_mcu *mcu, uint32_t app_start, const char *version,
			  const char *machine, size_t size, size_t *ret_len);

/* A process under test (the daemon or skrflashctl), spawned with the testbed environment
 * (LD_PRELOAD, UMOCKDEV_DIR inherited) and a private NOTIFY_SOCKET. Its stdout+stderr are
 * collected and echoed to our stderr prefixed with "[name] ". */
/* Production roles, done by the shared helper tests/integration/as-user: argv prefixed to
 * run as `role` ("daemon": the unit's uid, umask, hidepid /proc; "member": an operator
 * whose group is supplementary; "klipper", "outsider": other users) with `dir` for the test's
 * user database. As the caller (a plain copy) when not root or SKRTEST_AS_ROOT=1. */
bool sim_production(void);
char **sim_as(const char *role, const char *dir, char *const argv[]);
/* dir 0755, state and run the daemon's (0750); 0 or -errno; nothing when not production. */
int sim_prepare_production(const char *dir, const char *state, const char *run);
/* Let the production users reach a root-made tree (the testbed, a pty). */
void sim_share_tree(const char *root);
unsigned sim_daemon_uid(void);
unsigned sim_ops_gid(void);
unsigned sim_role_uid(const char *role);

struct sim_proc;
struct sim_proc *sim_proc_spawn(struct sim *s, char *const argv[], char *const extra_env[]);
int sim_proc_wait_ready(struct sim_proc *p, int timeout_ms); /* READY=1 received */
const char *sim_proc_status(struct sim_proc *p);	     /* last STATUS= value */
/* any notify message containing needle; 0 or -ETIMEDOUT */
int sim_proc_wait_notify(struct sim_proc *p, const char *needle, int timeout_ms);
/* stdout+stderr contains needle; 0, -ETIMEDOUT, or -EPIPE when the process exited without */
int sim_proc_wait_output(struct sim_proc *p, const char *needle, int timeout_ms);
const char *sim_proc_output(struct sim_proc *p); /* everything so far; valid until next call */
int sim_proc_pid(struct sim_proc *p);
/* Longest time between two WATCHDOG=1 of the process (start it with WATCHDOG_USEC=...), in
 * microseconds; reset starts a new measurement. */
uint64_t sim_proc_watchdog_gap_us(struct sim_proc *p, bool reset);
int sim_proc_kill(struct sim_proc *p, int sig);
int sim_proc_wait_exit(struct sim_proc *p,
		       int timeout_ms);		    /* exit status, or 128+sig; -ETIMEDOUT */
struct sim_proc *sim_proc_free(struct sim_proc *p); /* kills if still running */
/* Run a command to completion with the testbed env; returns the exit status (or -ETIMEDOUT,
 * after killing it); the output (stdout+stderr) in *ret_out if not NULL (free()). */
int sim_run(struct sim *s, char *const argv[], int timeout_ms, char **ret_out);
/* sim_run with the command as its words, then NULL. */
int sim_run_args(struct sim *s, int timeout_ms, char **ret_out, const char *first, ...)
    __attribute__((sentinel));
/* A shell command on plain files (images, scratch files), without the testbed's preload:
 * its exit status; the command and its output go to stderr when it fails. */
int sim_sh(struct sim *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* fsck.fat -n of the FAT volume at byte `offset` of `image`, copied out to the scratch file
 * `part` first (not by dd: under make asan the preload would carry ASan into dd too); what
 * fsck.fat reports goes to stderr when it is not clean. Its exit status (0 = clean), or
 * -errno when the volume could not be copied out. */
int sim_fsck_fat(struct sim *s, const char *image, size_t offset, const char *part);
/* Under make asan the preload chain carries ASan into the tools sim_run starts (mtools,
 * fsck.fat): their own leaks at exit are not what a test checks. After sim_init, this turns
 * leak detection off for every child (they take their options from SKRSIM_ASAN_OPTIONS). */
void sim_run_ignore_leaks(void);

/* A Klipper-like application image for `mcu` linked at app_start: a valid Cortex-M vector
 * table, code-like filler and a zlib-compressed Klipper dictionary carrying version and MCU
 * (protocols.md §7.1). `size` = total length (>= 1 KiB, multiple of 4). Caller frees. */
uint8_t *sim_image_klipper(const struct catalog_mcu *mcu, uint32_t app_start, const char *version,
			   size_t size, size_t *ret_len);
/* An RP2040 "No bootloader" build: boot2 (256 bytes ending in its CRC-32, or a wrong one
 * when good_boot2 is false) at the flash base, then sim_image_klipper's app of app_size
 * bytes at 0x10000100. */
uint8_t *sim_image_rp2040(const struct catalog_mcu *mcu, const char *version, size_t app_size,
			  bool good_boot2, size_t *ret_len);
/* The RP2040 ROM's boot2 checksum (CRC-32/MPEG-2 over bytes 0-251). */
uint32_t sim_boot2_crc(const uint8_t *boot2);
/* The version string in an image's embedded dictionary, or NULL; caller frees. */
char *sim_image_version(const uint8_t *img, size_t len);
/* A bootloader image of `size` bytes (>= 1 KiB) for the MCU's bootloader area: the vendor's
 * stock one, or a Katapult build that starts the application at app_start (sim_image.c).
 * Caller frees. */
uint8_t *sim_image_bootloader(const struct catalog_mcu *mcu, bool katapult, uint32_t app_start,
			      size_t size);
/* Where a simulated Katapult build keeps "KATSIMv1" + its application start (the board model
 * reads it there; the daemon has to find the start the way it does in real builds). */
#define SIM_KATAPULT_RECORD 0x180
/* Katapult application start for an MCU family (protocols.md §2.3). */
uint32_t sim_katapult_app_start(const struct catalog_mcu *mcu);

/* spec.uart boards: the UART's device path (a pty), or NULL. */
const char *sim_board_uart(struct sim_board *b);
/* The user's hands on a spec.uart board: hold ISP (P2.10) low, press and release RESET, let
 * ISP go (the ROM enters ISP unless WDTOF is set); or just press RESET. 0 or -errno. */
int sim_board_uart_enter_rom(struct sim_board *b);
int sim_board_uart_reset(struct sim_board *b);
/* LPC_SIM_* faults of the ROM model (lpcisp_sim.h); a write error hits sector 2. */
int sim_board_uart_faults(struct sim_board *b, unsigned faults);
/* The ROM's state (enum lpc_sim_state), -ENODEV without a UART. */
int sim_board_uart_state(struct sim_board *b);

const char *sim_mode_to_string(enum sim_mode mode);
/* Parses sim_mode_to_string() names and the aliases "klipper", "app", "rom-dfu", "dfu". */
int sim_mode_from_string(const char *s, enum sim_mode *ret);
