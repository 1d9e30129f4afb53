/* SPDX-License-Identifier: GPL-2.0-or-later */
/* cm: a small Cortex-M program laid out like a real firmware (vector table, handlers, code,
 * initialised data, optional Klipper-style dictionary and padding), built by build.sh for
 * every link address the catalog knows so that the validator sees genuine toolchain output.
 * It is never run. */
#include <stdint.h>

extern uint32_t _stack_end, _data_start, _data_end, _data_flash, _bss_start, _bss_end;

#ifdef WITH_DICT
#include "klipper_dict.inc" /* const unsigned char klipper_dict[], from mkdict */
#else
static const unsigned char klipper_dict[1];
#endif

#ifndef PAD_SIZE
#define PAD_SIZE 1
#endif
/* Makes the image as large as a real build, which matters for the link-base heuristic. */
const uint8_t pad[PAD_SIZE] __attribute__((used)) = {0x5a};

#ifdef WITH_BOOT2
/* Stand-in for the RP2040 second-stage loader: bytes 0..251 then their CRC-32/MPEG-2. */
#define B4(n) (n), (n) + 1, (n) + 2, (n) + 3
#define B16(n) B4(n), B4((n) + 4), B4((n) + 8), B4((n) + 12)
#define B64(n) B16(n), B16((n) + 16), B16((n) + 32), B16((n) + 48)
__attribute__((section(".boot2"), used)) const uint8_t boot2[256] = {
    B64(0),  B64(64), B64(128), B16(192), B16(208), B16(224), B4(240),
    B4(244), B4(248), 0xa8,	0xe2,	  0x54,	    0xb4,
};
#endif

static volatile uint32_t ticks;
uint32_t counter = 0x12345678; /* .data: its initial value lives in flash */
uint32_t scratch[8];	       /* .bss */

static void
default_handler(void)
{
	for (;;)
		ticks++;
}

static void
systick_handler(void)
{
	ticks++;
}

static void
irq0_handler(void)
{
	counter += ticks + klipper_dict[0] + pad[0];
}

static void
reset_handler(void)
{
	uint32_t *src = &_data_flash, *dst = &_data_start;

	while (dst < &_data_end)
		*dst++ = *src++;
	for (dst = &_bss_start; dst < &_bss_end; dst++)
		*dst = 0;
	for (;;) {
		scratch[ticks & 7] = counter;
		irq0_handler();
	}
}

#define H(f) ((uint32_t)(uintptr_t)(f))
/* ARMv7-M ARM B1.5.3: SP, Reset, NMI, HardFault, MemManage, BusFault, UsageFault, 4 x
 * reserved (0, as CMSIS startup files write them), SVCall, DebugMon, reserved, PendSV,
 * SysTick, then the IRQs. */
__attribute__((section(".vectors"), used)) const uint32_t vectors[16 + 8] = {
    H(&_stack_end),
    H(reset_handler),
    H(default_handler),
    H(default_handler),
    H(default_handler),
    H(default_handler),
    H(default_handler),
    0,
    0,
    0,
    0,
    H(default_handler),
    H(default_handler),
    0,
    H(default_handler),
    H(systick_handler),
    H(irq0_handler),
    H(default_handler),
    H(default_handler),
    H(default_handler),
    H(default_handler),
    H(default_handler),
    H(default_handler),
    H(default_handler),
};
