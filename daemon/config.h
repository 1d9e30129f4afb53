/* SPDX-License-Identifier: GPL-2.0-or-later */
/* config: the libconfig file turned into an immutable, validated snapshot.
 *
 * Loading is strict: unknown keys and groups, wrong types and out-of-range values are
 * errors reported as "FILE:LINE: key: what is wrong". A loaded snapshot is never modified;
 * SIGHUP builds a new one and swaps it in only if it loaded cleanly. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include "catalog.h"

/* Flash methods a profile allows, tried in the profile's order of preference. */
enum config_method {
	CONFIG_METHOD_KATAPULT,
	CONFIG_METHOD_DFU,     /* STM32 ROM DfuSe */
	CONFIG_METHOD_SD,      /* firmware.bin on the SD card through the running Klipper */
	CONFIG_METHOD_UF2,     /* RP2040 BOOTSEL (PICOBOOT, or the RPI-RP2 drive) */
	CONFIG_METHOD_LPC_DFU, /* LPC176x community DFU 1.1 bootloader (1d50:6015) */
	CONFIG_METHOD_MSC,     /* firmware.bin over a Marlin board's SD card drive (flash/msc.c) */
	_CONFIG_METHOD_MAX,
};

/* When the daemon flashes without being asked (bit mask; 0 = only on request). */
enum {
	CONFIG_AUTO_HOTPLUG = 1u << 0, /* a board appears whose installed sha differs */
	CONFIG_AUTO_QUEUE = 1u << 1,   /* new firmware arrives while the board is connected */
};

enum config_interface {
	CONFIG_INTERFACE_USB,
	CONFIG_INTERFACE_SERIAL,
	CONFIG_INTERFACE_CAN,
	_CONFIG_INTERFACE_MAX,
};

/* The host software that drives a profile's board: what the print-state gate asks and how
 * the serial port is freed before a flash. Mixed hosts on one Pi are per profile. */
enum config_host {
	CONFIG_HOST_KLIPPER,   /* Klipper + Moonraker: stop_units, moonraker (the default) */
	CONFIG_HOST_OCTOPRINT, /* OctoPrint's REST API: job state, disconnect and reconnect */
	_CONFIG_HOST_MAX,
};

struct config_match {
	const struct catalog_board *board; /* catalog board, NULL = any */
	bool has_usb_id;
	uint16_t vid;
	uint16_t pid;
	char *serial;  /* exact USB serial, NULL = any */
	char *port;    /* fnmatch glob over the USB port path ("1-1.2") or ID_PATH, NULL = any */
	char *mcu;     /* Klipper MCU string (product of app/Katapult), NULL = any */
	char *product; /* exact USB product string, NULL = any */
};

/* How skrflash removes and restores a board's power (boards whose SD bootloader reads the card
 * over SDIO need it after the SD-card path, docs/sd-card.md): a Moonraker power device or a
 * command. Exactly one of moonraker_device and command is set. */
struct config_power {
	char *moonraker_device; /* [power NAME] of the profile's Moonraker */
	char **command;		/* argv, NULL-terminated; run without a shell */
	size_t n_command;
	unsigned off_ms;     /* how long the power stays off (default 3000) */
	unsigned timeout_ms; /* the whole cycle's limit (default 30000) */
};

struct config_profile {
	char *name;
	unsigned line; /* where it was defined, for messages */
	struct config_match match;
	char *queue; /* queue name; defaults to the profile name */
	enum config_method methods[_CONFIG_METHOD_MAX];
	size_t n_methods;    /* >= 1 */
	unsigned auto_flash; /* CONFIG_AUTO_* */
	char **stop_units;   /* systemd units to stop while flashing */
	size_t n_stop_units;
	char *moonraker_url;	      /* NULL = no print-state check */
	bool moonraker_fail_open;     /* flash even when Moonraker does not answer */
	char *moonraker_api_key_file; /* NULL = no X-Api-Key sent */
	enum config_host host;
	char *octoprint_url;	      /* host = "octoprint": octoprint.url, else NULL */
	char *octoprint_api_key_file; /* host = "octoprint": octoprint.api_key_file */
	bool has_app_start;
	uint32_t app_start;		 /* override of the catalog's app start */
	enum config_interface interface; /* what the image must talk (default USB) */
	/* the board may change firmware family with this profile's images (Marlin <-> Klipper);
	 * without it such an image is refused before anything is touched */
	bool allow_migration;
	bool implicit; /* made from the catalog because the file has no profiles */
	bool has_power;
	struct config_power power;
};

/* A UART wired for rescues (skrflashctl rescue, docs/rescue.md): the Pi's serial device and
 * the GPIO lines (by name) on the board's RESET and boot-mode pins. */
struct config_rescue {
	unsigned line;	  /* where it was defined, for messages */
	char *device;	  /* "/dev/ttyAMA0" */
	unsigned baud;	  /* default 115200 */
	char *reset_line; /* GPIO line name on RESET, NULL = pressed by hand */
	char *boot_line;  /* on P2.10 (LPC ISP) or BOOT0, NULL = jumper by hand */
	const struct catalog_board
	    *board; /* the board on this UART, NULL = say on the command line */
};

struct config {
	char *path;			/* file it came from, NULL = built-in defaults only */
	char *state_dir;		/* /var/lib/skrflash */
	char *queue_dir;		/* default: <state_dir>/queue */
	char *runtime_dir;		/* /run/skrflash */
	int log_level;			/* syslog priority: LOG_ERR .. LOG_DEBUG */
	unsigned max_jobs;		/* parallel flash jobs, 1..64 */
	unsigned bootloader_timeout_ms; /* wait for the bootloader to enumerate (default 10000) */
	unsigned boot_timeout_ms;	/* wait for the new app to enumerate (default 15000) */
	unsigned step_timeout_ms;	/* kill a worker whose step takes longer (default 120000) */
	unsigned leave_grace_ms;	/* a board gone this long has left (default 3000) */
	unsigned client_idle_ms;	/* drop a control client that asks nothing (30000) */
	unsigned rejected_max_days;	/* rejected/ entries older than this are removed (30) */
	unsigned rejected_max_mib;	/* and the oldest beyond this total size (64) */
	char *drop_group;		/* group whose members may drop firmware, NULL = none */
	bool has_drop_gid;
	gid_t drop_gid;	     /* resolved at load */
	char *control_group; /* group allowed on the control socket, NULL = root only */
	bool has_control_gid;
	gid_t control_gid;
	struct config_profile *profiles;
	size_t n_profiles;
	struct config_rescue *rescues;
	size_t n_rescues;
};

/* Overrides from the command line; NULL members keep the file's or built-in value. */
struct config_overrides {
	const char *state_dir;
	const char *queue_dir;
	const char *runtime_dir;
	int log_level; /* -1 = keep */
};

/* Load `path` (NULL = no file: built-in defaults and catalog profiles). On error returns
 * -EINVAL (invalid) or -errno (unreadable) and, when ret_errors is not NULL, sets it to a
 * malloc'd text of one "FILE:LINE: key: what is wrong" line per problem. */
int config_load(const char *path, const struct config_overrides *ov, struct config **ret,
		char **ret_errors);
/* Same, from text in memory; `name` stands in for the file name in messages. */
int config_load_string(const char *text, const char *name, const struct config_overrides *ov,
		       struct config **ret, char **ret_errors);
struct config *config_free(struct config *cfg); /* accepts NULL, returns NULL */
/* The normalized config, in libconfig syntax that loads back to the same snapshot. */
void config_dump(const struct config *cfg, FILE *f);

const struct config_profile *config_find_profile(const struct config *cfg, const char *name);
/* Profile whose queue name is `queue`; NULL if none. */
const struct config_profile *config_find_queue(const struct config *cfg, const char *queue);
/* App start for a profile: its override, else the catalog board's, else 0 (unknown). */
uint32_t config_profile_app_start(const struct config_profile *p);

const char *config_method_to_string(enum config_method m);
const char *config_interface_to_string(enum config_interface i);
const char *config_host_to_string(enum config_host h);
