/* SPDX-License-Identifier: GPL-2.0-or-later */
/* an3155_sim: the STM32 system-memory bootloader's USART protocol (ST AN3155), on a pty.
 *
 * Bootloader v3.1 as an F4 answers it (research round2-uart-rescue.md §2.3): 0x7F autobaud
 * (ACK, then NACK to a repeated 0x7F), Get/Get Version/Get ID, Read/Write Memory, Extended
 * Erase by sector number or mass erase, Go. Flash has the catalog's sector map and NOR rules
 * (tests/sim/flash.c): a Write into cells that are not erased is NACKed. BOOT0 high at the
 * release of NRST starts the bootloader; BOOT0 low runs the application (UART silent). */
#pragma once

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "catalog.h"
#include "flash.h"

enum {
	STM_SIM_NO_SYNC = 1u << 0,     /* never answers 0x7F */
	STM_SIM_GARBAGE = 1u << 1,     /* answers garbled: a baud mismatch */
	STM_SIM_WRITE_ERROR = 1u << 2, /* Write into write_error_sector is NACKed */
	STM_SIM_RDP = 1u << 3,	       /* read protection level 1: Read/Write/Erase/Go NACKed */
};

enum stm_sim_phase {
	STM_SIM_OFF,
	STM_SIM_WAIT_SYNC,
	STM_SIM_CMD,
	STM_SIM_READ_ADDR,
	STM_SIM_READ_LEN,
	STM_SIM_WRITE_ADDR,
	STM_SIM_WRITE_DATA,
	STM_SIM_GO_ADDR,
	STM_SIM_EXT_ERASE,
};

struct an3155_sim {
	pthread_mutex_t lock;
	struct flash *flash;
	int fd;
	uint16_t pid;
	unsigned faults;
	int write_error_sector;
	bool boot0_wired, reset_wired;
	bool boot0_high, reset_low;
	enum stm_sim_phase phase;
	uint32_t addr;
	uint8_t in[1024];
	size_t in_len;
	/* what happened, for tests */
	unsigned boots_rom, boots_app, syncs, erases, writes, nacks;
	uint32_t go_addr;
	bool went;
};

/* A ROM model on fd for an STM32 of the catalog, started in the bootloader (BOOT0 high). */
struct an3155_sim *an3155_sim_new(const struct catalog_mcu *mcu, double speed, int fd);
void an3155_sim_free(struct an3155_sim *s);
void an3155_sim_feed(void *ctx, const uint8_t *data, size_t len);
void an3155_sim_set_boot0(struct an3155_sim *s, bool high);
void an3155_sim_set_reset(struct an3155_sim *s, bool low);
enum stm_sim_phase an3155_sim_phase(struct an3155_sim *s);
