/* SPDX-License-Identifier: GPL-2.0-or-later */
/* rescue_wiring: per-board rescue wiring facts. See rescue_wiring.h. */
#include "flash/rescue_wiring.h"

#include <string.h>

/* Longer prefixes first: the first match wins. */
static const struct rescue_wiring wirings[] = {
    {"skr-1.3", true, RESCUE_ROM_LPCISP,
     "UART0 (TXD0 P0.2, RXD0 P0.3) on the TFT header, or on AUX-1: pin 4 GND, pin 6 TX, "
     "pin 8 RX (labels on the underside of the board)",
     "the 2-pin BOOT jumper under the ZUART pins (closing it pulls P2.10 to GND)",
     "the RESET button, or EXP2 pin 3", NULL},
    {"skr-1.4", true, RESCUE_ROM_LPCISP,
     "UART0 (TXD0 P0.2, RXD0 P0.3) on the 5-pin TFT header: GND, TX0, RX0 (read the pin "
     "order from the silkscreen)",
     "no header: bridge the P2.10 side of R28 (the 10 kOhm pull-up marked 103, next to C14) to "
     "GND, by a soldered wire to the ISP line or by hand",
     "EXP2 pin 3 (the TFT header also carries RESET), or the RESET button",
     "an SKR 1.4 Turbo whose SD slot died is the case this rescue exists for"},
    {"skr-pro", true, RESCUE_ROM_AN3155,
     "USART1 (PA9 TX, PA10 RX) on the TFT connector (TX1/RX1); a user found the separate "
     "UART header did not work",
     "the BOOT0 pin jumpered to 3.3 V (the BOOT0 line drives it high)", "the RESET button (NRST)",
     "needs a PL011 UART on the Pi: 8E1"},
    {"skr-2-", true, RESCUE_ROM_AN3155,
     "USART1 on the TFT connector: 2nd pin GND, middle pin PA9 (TX), 4th pin PA10 (RX)",
     "BOOT0 [unconfirmed]: find it on the schematic", "the RESET button (NRST)",
     "needs a PL011 UART on the Pi: 8E1"},
    {"octopus-pro-h723", true, RESCUE_ROM_AN3155, "USART1 PA9/PA10 [unconfirmed]",
     "the BOOT0 jumper next to the USB-power jumper", "the RESET button (NRST)",
     "prefer ROM DFU over USB (BOOT0 jumper + USB cable): it needs no UART wiring"},
    {"octopus", true, RESCUE_ROM_AN3155,
     "USART1 PA9/PA10 [unconfirmed]; the F446 ROM also listens on USART3 (PB10/PB11, "
     "PC10/PC11)",
     "the BOOT0 jumper next to the USB-power jumper", "the RESET button (NRST)",
     "prefer ROM DFU over USB (BOOT0 jumper + USB cable): it needs no UART wiring"},
    {"skr-3", true, RESCUE_ROM_AN3155, "USART1 PA9/PA10 [unconfirmed]",
     "the BOOT button/jumper (BOOT0)", "the RESET button (NRST)",
     "prefer ROM DFU over USB: it needs no UART wiring"},
    {"manta-m8p", true, RESCUE_ROM_AN3155, "[unconfirmed]", "the BOOT0 button",
     "the RESET button (NRST)", "prefer ROM DFU over USB: it needs no UART wiring"},
    {"skr-mini-e3-v1", false, RESCUE_ROM_AN3155, NULL, NULL, NULL,
     "BOOT0 is tied to GND and not broken out: the ROM bootloader cannot be entered; use "
     "SWD (ST-Link, or OpenOCD on Pi GPIO) instead"},
    {"skr-mini-e3-v2", false, RESCUE_ROM_AN3155, NULL, NULL, NULL,
     "BOOT0 is tied to GND and not broken out: the ROM bootloader cannot be entered; use "
     "SWD (ST-Link, or OpenOCD on Pi GPIO) instead"},
    {"skr-pico", false, RESCUE_ROM_AN3155, NULL, NULL, NULL,
     "an RP2040 has no UART ROM bootloader: hold BOOTSEL while plugging USB in instead"},
};

const struct rescue_wiring *
rescue_wiring_find(const char *board)
{
	for (size_t i = 0; i < sizeof(wirings) / sizeof(wirings[0]); i++)
		if (strncmp(board, wirings[i].prefix, strlen(wirings[i].prefix)) == 0)
			return &wirings[i];
	return NULL;
}
