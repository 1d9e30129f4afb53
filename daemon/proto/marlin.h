/* SPDX-License-Identifier: GPL-2.0-or-later */
/* proto/marlin: Marlin's serial replies as a pure codec (no I/O).
 *
 * Marlin answers every G-code line with zero or more message lines and then "ok"
 * (gcode/queue.cpp ok_to_send()); "echo:busy: processing" keeps a host waiting for a long
 * command (gcode/gcode.cpp host_keepalive), "Error:" and "Resend:" report a bad line.
 * M115 (gcode/host/M115.cpp) prints one line of KEY:value fields whose values may contain
 * blanks, so a value runs to the next known key:
 *   FIRMWARE_NAME:Marlin <DETAILED_BUILD_VERSION> (<__DATE__> <__TIME__>)
 *   SOURCE_CODE_URL:... PROTOCOL_VERSION:... MACHINE_TYPE:... EXTRUDER_COUNT:... UUID:...
 * That line is a compile-time literal, so a Marlin .bin carries it verbatim: the same parser
 * tells a Marlin build from others. M27 (gcode/sd/M27.cpp, CardReader::report_status) says
 * "SD printing byte <pos>/<size>" or "Not SD printing". */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum marlin_line {
	MARLIN_LINE_OK,	    /* "ok" (maybe with " T:..." temperatures or "ok N<n>") */
	MARLIN_LINE_BUSY,   /* "echo:busy: ..." keep-alive: the command still runs */
	MARLIN_LINE_ERROR,  /* "Error:..." / "!!" */
	MARLIN_LINE_RESEND, /* "Resend: <n>" */
	MARLIN_LINE_OTHER,  /* anything else: a message of the command or unsolicited */
};

struct marlin_info {
	char firmware[96]; /* "Marlin 2.1.2.1": name and build version, without the date */
	char version[64];  /* "2.1.2.1" (DETAILED_BUILD_VERSION) */
	char build[40];	   /* "Dec  5 2026 06:00:00", "" when absent */
	char machine[64];  /* MACHINE_TYPE */
	char url[128];	   /* SOURCE_CODE_URL */
	char protocol[16]; /* PROTOCOL_VERSION */
	char uuid[40];	   /* UUID, "" when absent */
	unsigned extruders;
};

enum marlin_line marlin_line_kind(const char *line);

/* Parses an M115 FIRMWARE_NAME line (leading blanks and "echo:" allowed). 0, or -EINVAL
 * when the line is not one, or names a firmware other than Marlin (-EPROTONOSUPPORT). */
int marlin_parse_m115(const char *line, struct marlin_info *ret);

/* M27's answer: 0 with *printing (and pos/size when printing, else 0), -ENOMSG when LINE is
 * not an SD status line. */
int marlin_parse_sd_status(const char *line, bool *printing, uint64_t *pos, uint64_t *size);

/* The M115 literal of a Marlin build inside a firmware image: 0 with *ret, -ENOENT when the
 * image holds none (not Marlin). */
int marlin_image_info(const uint8_t *img, size_t len, struct marlin_info *ret);
