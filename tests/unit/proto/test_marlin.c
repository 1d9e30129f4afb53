/* SPDX-License-Identifier: GPL-2.0-or-later */
/* test_marlin: proto/marlin against the lines Marlin prints (gcode/host/M115.cpp, gcode/sd/
 * M27.cpp, gcode/queue.cpp) and the M115 literal inside a build. */
#include <errno.h>
#include <string.h>

#include "harness.h"
#include "proto/marlin.h"

static void
test_m115(void)
{
	struct marlin_info i;

	/* Marlin 2.1.2.1 on an SKR 1.3 as M115.cpp prints it */
	CHECK_EQ_INT(marlin_parse_m115("FIRMWARE_NAME:Marlin 2.1.2.1 (Jun 20 2023 12:34:56) "
				       "SOURCE_CODE_URL:github.com/MarlinFirmware/Marlin "
				       "PROTOCOL_VERSION:1.0 MACHINE_TYPE:Ender-3 SKR 1.3 "
				       "EXTRUDER_COUNT:1 UUID:cede2a2f-41a2-4748-9b12-c55c62f367ff",
				       &i),
		     0);
	CHECK_STREQ(i.firmware, "Marlin 2.1.2.1");
	CHECK_STREQ(i.version, "2.1.2.1");
	CHECK_STREQ(i.build, "Jun 20 2023 12:34:56");
	CHECK_STREQ(i.url, "github.com/MarlinFirmware/Marlin");
	CHECK_STREQ(i.protocol, "1.0");
	CHECK_STREQ(i.machine, "Ender-3 SKR 1.3"); /* blanks in a value */
	CHECK_EQ_INT((int)i.extruders, 1);
	CHECK_STREQ(i.uuid, "cede2a2f-41a2-4748-9b12-c55c62f367ff");
	/* a bugfix build without UUID (MACHINE_UUID unset), trailing blank and CR */
	CHECK_EQ_INT(marlin_parse_m115("FIRMWARE_NAME:Marlin bugfix-2.1.x (Dec  1 2026 10:00:00) "
				       "SOURCE_CODE_URL:github.com/MarlinFirmware/Marlin "
				       "PROTOCOL_VERSION:1.0 MACHINE_TYPE:3D Printer "
				       "EXTRUDER_COUNT:2 \r",
				       &i),
		     0);
	CHECK_STREQ(i.version, "bugfix-2.1.x");
	CHECK_STREQ(i.machine, "3D Printer");
	CHECK_EQ_INT((int)i.extruders, 2);
	CHECK_STREQ(i.uuid, "");
	/* a value that contains a key name without the blank before it is not a key */
	CHECK_EQ_INT(marlin_parse_m115("FIRMWARE_NAME:Marlin 2.0.9 (x) MACHINE_TYPE:MY_UUID:x", &i),
		     0);
	CHECK_STREQ(i.machine, "MY_UUID:x");
	/* not Marlin, not M115 */
	CHECK_EQ_INT(marlin_parse_m115("FIRMWARE_NAME:Prusa-Firmware 3.13.0 ", &i),
		     -EPROTONOSUPPORT);
	CHECK_EQ_INT(marlin_parse_m115("Cap:SDCARD:1", &i), -EINVAL);
	CHECK_EQ_INT(marlin_parse_m115("", &i), -EINVAL);
}

static void
test_lines(void)
{
	bool printing = true;
	uint64_t pos = 1, size = 1;

	CHECK_EQ_INT(marlin_line_kind("ok"), MARLIN_LINE_OK);
	CHECK_EQ_INT(marlin_line_kind("ok T:21.50 /0.00 B:21.20 /0.00 @:0 B@:0"), MARLIN_LINE_OK);
	CHECK_EQ_INT(marlin_line_kind("okay"), MARLIN_LINE_OTHER);
	CHECK_EQ_INT(marlin_line_kind("echo:busy: processing"), MARLIN_LINE_BUSY);
	CHECK_EQ_INT(marlin_line_kind("Error:Line Number is not Last Line Number+1, Last Line: 0"),
		     MARLIN_LINE_ERROR);
	CHECK_EQ_INT(marlin_line_kind("Resend: 1"), MARLIN_LINE_RESEND);
	CHECK_EQ_INT(marlin_line_kind("echo:SD card ok"), MARLIN_LINE_OTHER);

	CHECK_EQ_INT(marlin_parse_sd_status("Not SD printing", &printing, &pos, &size), 0);
	CHECK(!printing);
	CHECK(pos == 0 && size == 0);
	CHECK_EQ_INT(
	    marlin_parse_sd_status("SD printing byte 123456/4567890", &printing, &pos, &size), 0);
	CHECK(printing);
	CHECK(pos == 123456 && size == 4567890);
	CHECK_EQ_INT(marlin_parse_sd_status("SD printing byte 12/", &printing, &pos, &size),
		     -ENOMSG);
	CHECK_EQ_INT(marlin_parse_sd_status("SD printing byte 99999999999999999999999/1", &printing,
					    &pos, &size),
		     -ENOMSG);
	CHECK_EQ_INT(marlin_parse_sd_status("ok", &printing, &pos, &size), -ENOMSG);
}

static void
test_image(void)
{
	static const char lit[] = "FIRMWARE_NAME:Marlin 2.1.2.1 (Dec  5 2026 06:00:00) "
				  "SOURCE_CODE_URL:github.com/MarlinFirmware/Marlin "
				  "PROTOCOL_VERSION:1.0 MACHINE_TYPE:Ender EXTRUDER_COUNT:1";
	uint8_t img[4096];
	struct marlin_info i;

	memset(img, 0x46, sizeof(img));
	CHECK_EQ_INT(marlin_image_info(img, sizeof(img), &i), -ENOENT);
	/* a literal with no NUL before the end of the image is no string */
	memcpy(img + sizeof(img) - 40, lit, 40);
	CHECK_EQ_INT(marlin_image_info(img, sizeof(img), &i), -ENOENT);
	memcpy(img + 1000, lit, sizeof(lit));
	CHECK_EQ_INT(marlin_image_info(img, sizeof(img), &i), 0);
	CHECK_STREQ(i.firmware, "Marlin 2.1.2.1");
	CHECK_STREQ(i.machine, "Ender");
}

int
main(void)
{
	test_m115();
	test_lines();
	test_image();
	TEST_DONE();
}
