/* SPDX-License-Identifier: GPL-2.0-or-later */
/* device: USB identities of the modes an SKR-family board can show up in (see device.h). */
#include "device.h"

#include <errno.h>
#include <string.h>

#include "util.h"

/* USB identities per mode: protocols.md §1.4. */
static const struct {
	uint16_t vid;
	uint16_t pid;
	enum device_mode mode;
} ids[] = {
    {0x1d50, 0x614e, DEVICE_MODE_KLIPPER_APP},
    /* Katapult, whatever its manufacturer string ("katapult", or "CanBoot" before 2023) */
    {0x1d50, 0x6177, DEVICE_MODE_KATAPULT},
    {0x0483, 0xdf11, DEVICE_MODE_STM32_ROM_DFU},
    {0x1d50, 0x6015, DEVICE_MODE_LPC_DFU},
    {0x2e8a, 0x0003, DEVICE_MODE_RP2040_BOOTSEL},
    {0x1d50, 0x6029, DEVICE_MODE_MARLIN_LPC},
    {0x0483, 0x5740, DEVICE_MODE_MARLIN_STM32},
};

static const char *const mode_names[_DEVICE_MODE_MAX] = {
    [DEVICE_MODE_NONE] = "none",
    [DEVICE_MODE_KLIPPER_APP] = "klipper-app",
    [DEVICE_MODE_KATAPULT] = "katapult",
    [DEVICE_MODE_STM32_ROM_DFU] = "stm32-rom-dfu",
    [DEVICE_MODE_LPC_DFU] = "lpc-dfu",
    [DEVICE_MODE_RP2040_BOOTSEL] = "rp2040-bootsel",
    [DEVICE_MODE_MARLIN_LPC] = "marlin-lpc",
    [DEVICE_MODE_MARLIN_STM32] = "marlin-stm32",
};

enum device_mode
device_mode_from_ids(uint16_t vid, uint16_t pid, const char *manufacturer)
{
	/* The VID:PID alone decides; the manufacturer string is not needed by any mode. */
	(void)manufacturer;
	for (size_t i = 0; i < ELEMENTSOF(ids); i++)
		if (ids[i].vid == vid && ids[i].pid == pid)
			return ids[i].mode;
	return DEVICE_MODE_NONE;
}

const char *
device_mode_to_string(enum device_mode mode)
{
	if ((unsigned)mode >= _DEVICE_MODE_MAX)
		return "unknown";
	return mode_names[mode];
}

int
device_mode_from_string(const char *s, enum device_mode *ret)
{
	if (!s)
		return -EINVAL;
	for (size_t i = 0; i < _DEVICE_MODE_MAX; i++)
		if (strcmp(mode_names[i], s) == 0) {
			if (ret)
				*ret = (enum device_mode)i;
			return 0;
		}
	return -EINVAL;
}

bool
device_mode_is_bootloader(enum device_mode mode)
{
	switch (mode) {
	case DEVICE_MODE_KATAPULT:
	case DEVICE_MODE_STM32_ROM_DFU:
	case DEVICE_MODE_LPC_DFU:
	case DEVICE_MODE_RP2040_BOOTSEL:
		return true;
	case DEVICE_MODE_NONE:
	case DEVICE_MODE_KLIPPER_APP:
	case DEVICE_MODE_MARLIN_LPC:
	case DEVICE_MODE_MARLIN_STM32:
	case _DEVICE_MODE_MAX:
	default:
		return false;
	}
}

int
device_set_field(char *field, size_t size, const char *src)
{
	size_t n;

	if (!field || !size)
		return -EINVAL;
	if (!src)
		src = "";
	n = strlen(src);
	if (n >= size) {
		memcpy(field, src, size - 1);
		field[size - 1] = '\0';
		return -ENAMETOOLONG;
	}
	memcpy(field, src, n + 1);
	return 0;
}
