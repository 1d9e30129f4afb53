/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The USB identity table of device modes and the fixed-field helpers. */
#include <errno.h>
#include <string.h>

#include "device.h"
#include "harness.h"

int
main(void)
{
	static const struct {
		uint16_t vid, pid;
		const char *manufacturer;
		const char *mode;
		bool bootloader;
	} cases[] = {
	    {0x1d50, 0x614e, "Klipper", "klipper-app", false},
	    {0x1d50, 0x6177, "katapult", "katapult", true},
	    {0x1d50, 0x6177, "CanBoot", "katapult", true},
	    {0x1d50, 0x6177, NULL, "katapult", true},
	    {0x0483, 0xdf11, "STMicroelectronics", "stm32-rom-dfu", true},
	    {0x1d50, 0x6015, NULL, "lpc-dfu", true},
	    {0x2e8a, 0x0003, "Raspberry Pi", "rp2040-bootsel", true},
	    {0x1d50, 0x6029, "marlinfw.org", "marlin-lpc", false},
	    {0x0483, 0x5740, "STMicroelectronics", "marlin-stm32", false},
	    {0x1d50, 0x606f, "Klipper", "none", false}, /* USB-to-CAN bridge */
	    {0x2e8a, 0x000f, NULL, "none", false},
	    {0x0000, 0x0000, NULL, "none", false},
	};
	enum device_mode m;
	struct device dev;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		m = device_mode_from_ids(cases[i].vid, cases[i].pid, cases[i].manufacturer);
		CHECK_STREQ(device_mode_to_string(m), cases[i].mode);
		CHECK_EQ_INT(device_mode_is_bootloader(m), cases[i].bootloader);
	}
	for (int i = 0; i < _DEVICE_MODE_MAX; i++) {
		enum device_mode back = DEVICE_MODE_NONE;

		CHECK_EQ_INT(
		    device_mode_from_string(device_mode_to_string((enum device_mode)i), &back), 0);
		CHECK_EQ_INT(back, i);
	}
	CHECK_EQ_INT(device_mode_from_string("Katapult", &m), -EINVAL);
	CHECK_EQ_INT(device_mode_from_string(NULL, &m), -EINVAL);
	CHECK_STREQ(device_mode_to_string(_DEVICE_MODE_MAX), "unknown");

	memset(&dev, 'x', sizeof(dev));
	CHECK_EQ_INT(DEVICE_SET(&dev, port, "1-1.2"), 0);
	CHECK_STREQ(dev.port, "1-1.2");
	{
		char big[200];

		memset(big, 'a', sizeof(big) - 1);
		big[sizeof(big) - 1] = '\0';
		CHECK_EQ_INT(DEVICE_SET(&dev, port, big), -ENAMETOOLONG);
		CHECK_EQ_INT(strlen(dev.port), sizeof(dev.port) - 1);
	}
	CHECK_EQ_INT(DEVICE_SET(&dev, serial, NULL), 0);
	CHECK_STREQ(dev.serial, "");
	TEST_DONE();
}
