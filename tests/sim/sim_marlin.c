/* SPDX-License-Identifier: GPL-2.0-or-later */
/* sim_marlin: Marlin 2.x as the application of a simulated SKR board (issue 16).
 *
 * Written from Marlin's sources, apart from the daemon's proto/marlin:
 * - Every command is acknowledged with "ok" once it was processed (gcode/queue.cpp
 *   ok_to_send()); messages before it start with "echo:" (SERIAL_ECHO_START) or are plain.
 * - M115 (gcode/host/M115.cpp): one line "FIRMWARE_NAME:Marlin <DETAILED_BUILD_VERSION>
 *   (<__DATE__> <__TIME__>) SOURCE_CODE_URL:... PROTOCOL_VERSION:... MACHINE_TYPE:...
 *   EXTRUDER_COUNT:... UUID:...", a compile-time literal in flash, then "Cap:NAME:0|1" lines
 *   when EXTENDED_CAPABILITIES_REPORT is on.
 * - M21 (gcode/sd/M21_M22.cpp): card.mount(), which says "echo:SD card ok" or
 *   "echo:SD init fail" (sd/cardreader.cpp).
 * - M22: `if (!IS_SD_PRINTING()) card.release();` - nothing is printed, and while an SD
 *   print runs the card silently stays mounted: only M27 tells.
 * - M27 (gcode/sd/M27.cpp -> CardReader::report_status): "SD printing byte <pos>/<size>" or
 *   "Not SD printing".
 * - M997 (gcode/control/M997.cpp -> flashFirmware(), HAL/LPC1768/HAL.cpp): delay(500),
 *   delay(1000), then NVIC_SystemReset: no "ok"; the stock bootloader runs next and flashes
 *   firmware.bin from the card.
 * - The card and the USB drive (HAL/LPC1768/main.cpp HAL_idletask): while Marlin has the card
 *   mounted it takes the MSC lock (MSC_Aquire_Lock), and the host's SCSI commands fail as
 *   "medium not present"; once released (MSC_Release_Lock) the host sees the medium again
 *   (UNIT_ATTENTION, MEDIA CHANGED). Marlin mounts the card at start-up.
 * - Unknown commands: "echo:Unknown command: \"<cmd>\"" then "ok" (gcode/gcode.cpp). */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sim.h"
#include "sim_int.h"
#include "util.h"

#define M115_KEY "FIRMWARE_NAME:Marlin "
#define APP_SCAN (512u * 1024u)

uint8_t *
sim_image_marlin(const struct catalog_mcu *mcu, uint32_t app_start, const char *version,
		 const char *machine, size_t size, size_t *ret_len)
{
	const struct catalog_range *ram = &mcu->ram[0];
	uint32_t seed = 0x4d41524cu;
	char lit[320];
	size_t n;
	uint8_t *img;

	if (!version)
		version = "2.1.2.1";
	if (!machine)
		machine = "3D Printer";
	n = (size_t)snprintf(lit, sizeof(lit),
			     M115_KEY "%s (Dec  5 2026 06:00:00) SOURCE_CODE_URL:"
				      "github.com/MarlinFirmware/Marlin PROTOCOL_VERSION:1.0 "
				      "MACHINE_TYPE:%s EXTRUDER_COUNT:1 "
				      "UUID:cede2a2f-41a2-4748-9b12-c55c62f367ff",
			     version, machine);
	if (size < 4096)
		size = 4096;
	size = (size + 3) & ~(size_t)3;
	img = xmalloc(size);
	for (const char *c = version; *c; c++)
		seed = (seed ^ (uint8_t)*c) * 16777619u;
	for (size_t i = 0; i < size; i++) {
		seed = seed * 1103515245u + 12345u;
		img[i] = (uint8_t)(seed >> 16);
		if (img[i] == 0xff || img[i] == 0)
			img[i] = 0x46;
	}
	/* a Cortex-M vector table as the framework's startup file lays it out: SP at the top of
	 * the first RAM range (LPC176x: 0x10008000), Thumb handlers inside the image */
	sim_image_put_le32(img, ram->base + ram->size);
	sim_image_put_le32(img + 4, app_start + 0x1c1);
	for (size_t i = 2; i < 64; i++)
		sim_image_put_le32(img + 4 * i, app_start + 0x201 + (uint32_t)(i % 8) * 4);
	/* the startup code's literal pool: SCB->VTOR = the vector table's address (the
	 * framework's SystemInit relocates the table to the application's start) */
	sim_image_put_le32(img + 0x400, app_start);
	/* the M115 literal in .rodata, NUL-terminated, and GcodeSuite::M115's reference to it
	 * in the literal pool: what the simulated CPU "runs" is decided by the code at the app
	 * start, never by a stale string further up in flash */
	memcpy(img + size / 2, lit, n + 1);
	sim_image_put_le32(img + 0x404, app_start + (uint32_t)(size / 2));
	*ret_len = size;
	return img;
}

bool
sim_marlin_app(struct sim_board *b)
{
	struct flash *f = b->flash;
	uint32_t end = f->base + f->size;
	uint32_t len = end - b->app_start > APP_SCAN ? APP_SCAN : end - b->app_start;
	uint8_t *buf = xmalloc(len);
	bool found = false;

	if (flash_read(f, b->app_start, buf, len) == 0 && len > 0x408) {
		/* the literal the code at the app start refers to (see sim_image_marlin) */
		uint32_t at = (uint32_t)buf[0x404] | (uint32_t)buf[0x405] << 8 |
			      (uint32_t)buf[0x406] << 16 | (uint32_t)buf[0x407] << 24;
		const uint8_t *p = at >= b->app_start && at - b->app_start < len
				       ? buf + (at - b->app_start)
				       : NULL;

		if (p && memcmp(p, M115_KEY, strlen(M115_KEY)) != 0)
			p = NULL;
		if (p) {
			size_t max = len - (size_t)(p - buf), l = strnlen((const char *)p, max);

			if (l < max && l < sizeof(b->mr.m115)) {
				memcpy(b->mr.m115, p, l + 1);
				found = true;
			}
		}
	}
	free(buf);
	return found;
}

static void
card_lock(struct sim_board *b, bool mounted)
{
	b->mr.mounted = mounted;
	if (b->drive)
		sim_drive_set_medium(b->drive, !mounted);
}

void
sim_marlin_boot(struct sim_board *b)
{
	b->mr.len = 0;
	b->mr.overflow = false;
	/* setup() mounts the card when one is inserted (CardReader::manage_media) */
	card_lock(b, b->sdcard_path != NULL);
	if (b->mr.faults & SIM_MARLIN_PRINTING) {
		b->mr.print_pos = 123456;
		b->mr.print_size = 4567890;
	}
}

static void say(struct sim_board *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void
say(struct sim_board *b, const char *fmt, ...)
{
	char buf[512];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (n > 0 && b->master_fd >= 0)
		(void)!write(b->master_fd, buf,
			     (size_t)n < sizeof(buf) ? (size_t)n : sizeof(buf) - 1);
}

/* One received line: "N<n> " line numbers and "*<checksum>" are the host's framing, ";" a
 * comment (gcode/queue.cpp); the command word is what the parser dispatches on. */
static void
command(struct sim_board *b, char *line)
{
	char *c = line, *e;

	if ((e = strchr(c, ';')))
		*e = 0;
	if ((e = strchr(c, '*')))
		*e = 0;
	while (*c == ' ')
		c++;
	if (*c == 'N') {
		while (*c && *c != ' ')
			c++;
		while (*c == ' ')
			c++;
	}
	while (strlen(c) && (c[strlen(c) - 1] == ' ' || c[strlen(c) - 1] == '\r'))
		c[strlen(c) - 1] = 0;
	if (!*c)
		return;
	if (b->mr.overflow) {
		say(b, "echo:Unknown command: \"%.40s\"\nok\n", c);
	} else if (strcmp(c, "M115") == 0) {
		say(b,
		    "%s\nCap:SERIAL_XON_XOFF:0\nCap:EEPROM:1\nCap:SDCARD:1\nCap:PRINT_JOB:1\n"
		    "Cap:AUTOREPORT_SD_STATUS:0\nok\n",
		    b->mr.m115);
	} else if (strcmp(c, "M21") == 0) {
		card_lock(b, b->sdcard_path != NULL);
		say(b, "%s\nok\n", b->sdcard_path ? "echo:SD card ok" : "echo:SD init fail");
	} else if (strcmp(c, "M22") == 0) {
		if (!(b->mr.faults & (SIM_MARLIN_PRINTING | SIM_MARLIN_M22_IGNORED)))
			card_lock(b, false);
		say(b, "ok\n");
	} else if (strcmp(c, "M27") == 0) {
		if (b->mr.faults & SIM_MARLIN_PRINTING)
			say(b, "SD printing byte %u/%u\nok\n", b->mr.print_pos, b->mr.print_size);
		else
			say(b, "Not SD printing\nok\n");
	} else if (strcmp(c, "M997") == 0) {
		/* flashFirmware(): 1.5 s of delay, then the reset; the bootloader runs */
		b->request = SIM_REQ_NONE;
		sim_board_schedule(b, SIM_ACT_RESET, sim_board_delay_us(b, 1500000, 20000));
	} else if (strcmp(c, "M105") == 0) {
		say(b, "ok T:21.50 /0.00 B:21.20 /0.00 @:0 B@:0\n");
	} else {
		say(b, "echo:Unknown command: \"%.40s\"\nok\n", c);
	}
}

void
sim_marlin_received(struct sim_board *b, const uint8_t *data, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		char ch = (char)data[i];

		if (ch == '\n' || ch == '\r') {
			if (b->mr.len == 0 && !b->mr.overflow)
				continue;
			b->mr.line[b->mr.len] = 0;
			command(b, b->mr.line);
			b->mr.len = 0;
			b->mr.overflow = false;
		} else if (b->mr.len + 1 < sizeof(b->mr.line)) {
			b->mr.line[b->mr.len++] = ch;
		} else {
			b->mr.overflow = true; /* MAX_CMD_SIZE: the rest of the line is lost */
		}
	}
}

int
sim_board_set_marlin(struct sim_board *b, unsigned faults)
{
	pthread_mutex_lock(&b->sim->lock);
	b->mr.faults = faults;
	if (faults & SIM_MARLIN_PRINTING) {
		b->mr.print_pos = 123456;
		b->mr.print_size = 4567890;
		if (b->mode == SIM_MODE_MARLIN_LPC || b->mode == SIM_MODE_MARLIN_STM32)
			card_lock(b, b->sdcard_path != NULL);
	}
	pthread_mutex_unlock(&b->sim->lock);
	return 0;
}

bool
sim_board_marlin_card_held(struct sim_board *b)
{
	bool r;

	pthread_mutex_lock(&b->sim->lock);
	r = (b->mode == SIM_MODE_MARLIN_LPC || b->mode == SIM_MODE_MARLIN_STM32) && b->mr.mounted;
	pthread_mutex_unlock(&b->sim->lock);
	return r;
}
