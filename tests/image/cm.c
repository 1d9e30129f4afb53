/* SPDX-License-Identifier: GPL-2.0-or-later */
/* cm: a Cortex-M program laid out like a real Klipper build, built by build.sh for every MCU
 * of the catalog and every "Bootloader offset" menuconfig offers for it, so that the validator
 * and the simulator see genuine toolchain output. The layout follows Klipper v0.13 builds
 * (arm-none-eabi-gcc 12, src/generic/armcm_link.lds.S): the vector table at the start, ~26 KiB
 * of code before the handlers (the reset handler about +0x6000..+0x7000), read-only data with
 * the zlib data dictionary about 34-39 KiB in, which the code reads through its absolute
 * address (command_identify_data), 40-46 KiB in all. The code also writes the vector table's
 * address to SCB->VTOR as armcm_main() does (src/stm32/stm32f4.c). It is never run.
 *
 * Sizes come from build.sh: CODE_SIZE (code before the handlers), RO_FILL (read-only data
 * before the dictionary), TAIL_SIZE (read-only data after it). */
#include <stdint.h>

extern uint32_t _stack_end, _data_start, _data_end, _data_flash, _bss_start, _bss_end;

#ifdef WITH_DICT
#include "klipper_dict.inc" /* const unsigned char klipper_dict[], from mkdict */
#define DICT_MASK 63	    /* no divide on Cortex-M0+: index within the first 64 bytes */
#else
#define DICT_MASK 3
static const unsigned char klipper_dict[4] = {1, 2, 3, 4};
#endif

#ifndef CODE_SIZE
#define CODE_SIZE 2
#endif
#ifndef RO_FILL
#define RO_FILL 4
#endif
#ifndef TAIL_SIZE
#define TAIL_SIZE 4
#endif
/* Thumb "nop" (0xbf00): code-like bytes where a real build has its drivers and scheduler. */
__attribute__((section(".text.aa_code"), used))
const uint16_t code[CODE_SIZE / 2] = {[0 ... CODE_SIZE / 2 - 1] = 0xbf00};
__attribute__((section(".rodata.aa_fill"), used))
const uint8_t ro_fill[RO_FILL] = {[0 ... RO_FILL - 1] = 0x5a};
__attribute__((section(".rodata.zz_tail"), used))
const uint8_t tail[TAIL_SIZE] = {[0 ... TAIL_SIZE - 1] = 0x3c};

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

extern const uint32_t vectors[];
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

/* command_identify: reads the dictionary through its absolute address (a literal) */
static void
irq0_handler(void)
{
	counter += ticks + klipper_dict[ticks & DICT_MASK] + code[ticks & 7] + ro_fill[ticks & 3] +
		   tail[ticks & 3];
}

static void
reset_handler(void)
{
	uint32_t *src = &_data_flash, *dst = &_data_start;

	*(volatile uint32_t *)0xe000ed08u = (uint32_t)(uintptr_t)vectors; /* SCB->VTOR */
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
#define D H(default_handler)
/* ARMv7-M ARM B1.5.3: SP, Reset, NMI, HardFault, MemManage, BusFault, UsageFault, 4 x
 * reserved (0, as CMSIS startup files write them), SVCall, DebugMon, reserved, PendSV,
 * SysTick, then the IRQs: Klipper fills every IRQ slot (DefaultHandler when unused). */
__attribute__((section(".vectors"), used)) const uint32_t vectors[16 + 64] = {
    H(&_stack_end),  H(reset_handler), D, D, D, D, D, 0, 0, 0, 0, D, D, 0, D, H(systick_handler),
    H(irq0_handler), [17 ... 79] = D,
};
