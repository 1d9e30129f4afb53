/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The UART rescue clients (flash/rescue*) against the ROM simulators on a pty: Katapult-sized
 * bootloaders go into the bootloader sectors, the application above stays byte-identical,
 * the old bootloader comes back to the caller, and every failure mode ends in a clear
 * message and a board that can be tried again. GPIO runs through the fake, which drives
 * the simulated RESET/ISP/BOOT0 pins. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "an3155_sim.h"
#include "flash/gpio.h"
#include "flash/rescue.h"
#include "harness.h"
#include "lpcisp_sim.h"
#include "sim.h"
#include "uart_pty.h"
#include "util.h"

#define APP_LEN (64u * 1024)

static uint32_t seed = 15;

static uint8_t
rnd(void)
{
	seed = seed * 1103515245u + 12345u;
	return (uint8_t)(seed >> 16);
}

static void
put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

/* A Katapult-shaped image: SP at the top of RAM, reset handler inside the area. */
static uint8_t *
make_boot(size_t len, uint32_t sp, uint32_t base, bool lpc)
{
	uint8_t *b = xmalloc(len);
	uint32_t sum = 0;

	for (size_t i = 0; i < len; i++)
		b[i] = rnd();
	put32(b, sp);
	put32(b + 4, base + 0x101);
	if (lpc) {
		put32(b + 0x2fc, 0);
		for (size_t i = 0; i < 7; i++)
			sum += (uint32_t)b[i * 4] | (uint32_t)b[i * 4 + 1] << 8 |
			       (uint32_t)b[i * 4 + 2] << 16 | (uint32_t)b[i * 4 + 3] << 24;
		put32(b + 0x1c, 0u - sum);
	}
	return b;
}

struct rig {
	struct uart_pty pty;
	struct lpcisp_sim *lpc;
	struct an3155_sim *stm;
	struct gpio *gpio;
	uint8_t app[APP_LEN];
	uint8_t old[0x20000];
	uint32_t boot_size;
	struct rescue_opts o;
	struct rescue_result res;
	int fd;
};

static void
lpc_pins(void *ud, enum gpio_role role, bool asserted)
{
	struct lpcisp_sim *s = ud;

	if (role == GPIO_ROLE_RESET)
		lpcisp_sim_set_reset(s, asserted);
	else
		lpcisp_sim_set_isp(s, asserted);
}

static void
stm_pins(void *ud, enum gpio_role role, bool asserted)
{
	struct an3155_sim *s = ud;

	if (role == GPIO_ROLE_RESET)
		an3155_sim_set_reset(s, asserted);
	else
		an3155_sim_set_boot0(s, asserted);
}

/* A board running its stock bootloader + application, wired to a pty and fake GPIO. */
static void
rig_lpc(struct rig *r, const char *mcu)
{
	const struct catalog_mcu *m = catalog_mcu_find(mcu);
	uint8_t *stock;

	memset(r, 0, sizeof(*r));
	CHECK(uart_pty_open(&r->pty) == 0);
	r->lpc = lpcisp_sim_new(catalog_mcu_find("lpc1769"), 0, r->pty.master);
	r->boot_size = 0x4000;
	stock = make_boot(r->boot_size, 0x10008000, 0, true);
	memcpy(r->old, stock, r->boot_size);
	free(stock);
	for (size_t i = 0; i < APP_LEN; i++)
		r->app[i] = rnd();
	flash_load(r->lpc->flash, 0, r->old, r->boot_size);
	flash_load(r->lpc->flash, r->boot_size, r->app, APP_LEN);
	r->lpc->isp_low = false;
	lpcisp_sim_power_cycle(r->lpc); /* valid user code: the stock bootloader runs */
	CHECK_EQ_INT(lpcisp_sim_state(r->lpc), LPC_SIM_OFF);
	CHECK(uart_pty_start(&r->pty, lpcisp_sim_feed, r->lpc) == 0);
	r->gpio = gpio_fake_new(true, true, lpc_pins, r->lpc);
	r->o = (struct rescue_opts){.rom = RESCUE_ROM_LPCISP,
				    .tty = r->pty.path,
				    .mcu = m,
				    .boot_size = r->boot_size,
				    .crystal_khz = 12000,
				    .sync_tries = 4,
				    .timeout_ms = 2000,
				    .gpio = r->gpio};
	r->fd = rescue_serial_open(r->pty.path, 115200, &r->o, r->res.error, sizeof(r->res.error));
	CHECK(r->fd >= 0);
}

static void
rig_stm(struct rig *r, const char *sim_mcu, const char *mcu, uint32_t boot_size)
{
	const struct catalog_mcu *sm = catalog_mcu_find(sim_mcu);
	uint8_t *stock;

	memset(r, 0, sizeof(*r));
	CHECK(uart_pty_open(&r->pty) == 0);
	r->stm = an3155_sim_new(sm, 0, r->pty.master);
	r->boot_size = boot_size;
	stock = make_boot(boot_size, 0x20010000, sm->flash_base, false);
	memcpy(r->old, stock, boot_size);
	free(stock);
	for (size_t i = 0; i < APP_LEN; i++)
		r->app[i] = rnd();
	flash_load(r->stm->flash, sm->flash_base, r->old, boot_size);
	flash_load(r->stm->flash, sm->flash_base + boot_size, r->app, APP_LEN);
	an3155_sim_set_boot0(r->stm, false);
	an3155_sim_set_reset(r->stm, true);
	an3155_sim_set_reset(r->stm, false); /* the stock bootloader runs */
	CHECK_EQ_INT(an3155_sim_phase(r->stm), STM_SIM_OFF);
	CHECK(uart_pty_start(&r->pty, an3155_sim_feed, r->stm) == 0);
	r->gpio = gpio_fake_new(true, true, stm_pins, r->stm);
	r->o = (struct rescue_opts){.rom = RESCUE_ROM_AN3155,
				    .tty = r->pty.path,
				    .mcu = catalog_mcu_find(mcu),
				    .boot_size = boot_size,
				    .sync_tries = 4,
				    .timeout_ms = 2000,
				    .gpio = r->gpio,
				    .no_parity_ok = true}; /* a pty refuses parity */
	r->fd = rescue_serial_open(r->pty.path, 115200, &r->o, r->res.error, sizeof(r->res.error));
	CHECK(r->fd >= 0);
}

static struct flash *
rig_flash(struct rig *r)
{
	return r->lpc ? r->lpc->flash : r->stm->flash;
}

static bool
app_intact(struct rig *r)
{
	struct flash *f = rig_flash(r);

	return flash_equals(f, f->base + r->boot_size, r->app, APP_LEN) &&
	       flash_erase_count(f, f->base + r->boot_size) == 0;
}

static bool
old_intact(struct rig *r)
{
	struct flash *f = rig_flash(r);

	return flash_equals(f, f->base, r->old, r->boot_size);
}

static void
rig_free(struct rig *r)
{
	if (r->fd >= 0)
		close(r->fd);
	uart_pty_stop(&r->pty);
	rescue_result_free(&r->res);
	gpio_close(r->gpio);
	lpcisp_sim_free(r->lpc);
	an3155_sim_free(r->stm);
	uart_pty_close(&r->pty);
}

static void
test_lpc_install(void)
{
	struct rig r;
	uint8_t *kat = make_boot(14 * 1024, 0x10008000, 0, true);
	int ret;

	rig_lpc(&r, "lpc1769");
	ret = rescue_install(r.fd, &r.o, kat, 14 * 1024, &r.res);
	fprintf(stderr, "lpc install: %d %s | gpio: %s\n", ret, r.res.error, gpio_fake_log(r.gpio));
	CHECK_EQ_INT(ret, 0);
	CHECK(flash_equals(r.lpc->flash, 0, kat, 14 * 1024));
	CHECK(flash_is_erased(r.lpc->flash, 14 * 1024, 2 * 1024)); /* padded with 0xFF */
	CHECK(app_intact(&r));
	for (uint32_t s = 0; s < 4; s++)
		CHECK_EQ_INT(flash_erase_count(r.lpc->flash, s * 4096), 1);
	CHECK_EQ_INT(r.res.part_id, 0x26113f37);
	CHECK_EQ_INT(r.res.serial[0], 0x1a2b3c4d);
	CHECK_EQ_INT(r.res.erased_sectors, 0xf);
	CHECK(r.res.old_boot_len == r.boot_size && r.res.old_boot &&
	      memcmp(r.res.old_boot, r.old, r.boot_size) == 0);
	CHECK(!r.res.old_vectors_unreadable);
	CHECK_EQ_INT(r.res.bytes_verified, 16384 - 64);
	/* the ISP line went low before RESET was released; at the end RESET pulsed and the ROM
	 * found valid user code: the new bootloader runs */
	CHECK(strstr(gpio_fake_log(r.gpio), "boot=1 reset=1 sleep=20 reset=0 sleep=100 boot=0") ==
	      gpio_fake_log(r.gpio));
	CHECK(strstr(gpio_fake_log(r.gpio), "boot=0 reset=1 sleep=20 reset=0 release") != NULL);
	CHECK_EQ_INT(lpcisp_sim_state(r.lpc), LPC_SIM_OFF);
	CHECK_EQ_INT(r.lpc->boots_app, 2);
	CHECK(!r.lpc->went); /* left by RESET, not by G */
	rig_free(&r);
	free(kat);
}

/* Real-ROM quirks: echo line ends vary, one RESEND, flash 0-63 remapped while in ISP. */
static void
test_lpc_quirks(void)
{
	struct rig r;
	uint8_t *kat = make_boot(16 * 1024, 0x10008000, 0, true);

	rig_lpc(&r, "lpc1769");
	r.lpc->faults = LPC_SIM_ECHO_QUIRKS | LPC_SIM_RESEND_ONCE | LPC_SIM_VECTOR_REMAP;
	r.lpc->sync_ignore = 2;
	r.o.gpio = NULL; /* manual mode: the user held ISP and pressed RESET */
	lpcisp_sim_set_isp(r.lpc, true);
	lpcisp_sim_power_cycle(r.lpc);
	CHECK_EQ_INT(rescue_install(r.fd, &r.o, kat, 16 * 1024, &r.res), 0);
	fprintf(stderr, "lpc quirks: %s\n", r.res.error);
	CHECK(flash_equals(r.lpc->flash, 0, kat, 16 * 1024));
	CHECK(app_intact(&r));
	CHECK(r.res.old_vectors_unreadable);
	CHECK(r.res.sync_attempts >= 3);
	CHECK(r.lpc->resent);
	rig_free(&r);
	free(kat);
}

/* A failure before the erase: clear message, nothing touched. */
static void
lpc_fails_clean(unsigned faults, void (*prep)(struct rig *), const char *opts_mcu, int want,
		const char *msg)
{
	struct rig r;
	uint8_t *kat = make_boot(12 * 1024, 0x10008000, 0, true);
	int ret;

	rig_lpc(&r, "lpc1769");
	r.lpc->faults = faults;
	if (opts_mcu)
		r.o.mcu = catalog_mcu_find(opts_mcu);
	if (prep)
		prep(&r);
	ret = rescue_install(r.fd, &r.o, kat, 12 * 1024, &r.res);
	fprintf(stderr, "lpc fault %#x: %d %s\n", faults, ret, r.res.error);
	CHECK_EQ_INT(ret, want);
	CHECK(strstr(r.res.error, msg) != NULL);
	CHECK(strstr(r.res.error, r.pty.path) == r.res.error);
	CHECK(old_intact(&r));
	CHECK(app_intact(&r));
	CHECK_EQ_INT(r.res.erased_sectors, 0);
	rig_free(&r);
	free(kat);
}

static void
no_reset_wire(struct rig *r)
{
	r->lpc->reset_wired = false;
}

static void
watchdog(struct rig *r)
{
	lpcisp_sim_watchdog_reset(r->lpc); /* Klipper's bootloader request set WDTOF */
}

static void
test_lpc_failures(void)
{
	lpc_fails_clean(LPC_SIM_NO_SYNC, NULL, NULL, -ETIMEDOUT, "no answer from the LPC176x ROM");
	lpc_fails_clean(LPC_SIM_GARBAGE, NULL, NULL, -ETIMEDOUT, "garbled");
	lpc_fails_clean(LPC_SIM_CRP, NULL, NULL, -EACCES, "code read protection");
	lpc_fails_clean(0, no_reset_wire, NULL, -ETIMEDOUT, "RESET is wired");
	lpc_fails_clean(0, watchdog, NULL, -ETIMEDOUT, "power cycle");
	lpc_fails_clean(0, NULL, "lpc1768", -ENODEV, "reports LPC1769");
}

/* After the watchdog case the user power-cycles with ISP held: the rescue then works. */
static void
test_lpc_power_cycle_retry(void)
{
	struct rig r;
	uint8_t *kat = make_boot(8 * 1024, 0x10008000, 0, true);

	rig_lpc(&r, "lpc1769");
	lpcisp_sim_watchdog_reset(r.lpc);
	CHECK_EQ_INT(rescue_install(r.fd, &r.o, kat, 8 * 1024, &r.res), -ETIMEDOUT);
	rescue_result_free(&r.res);
	lpcisp_sim_power_cycle(r.lpc); /* clears WDTOF */
	CHECK_EQ_INT(rescue_install(r.fd, &r.o, kat, 8 * 1024, &r.res), 0);
	CHECK(flash_equals(r.lpc->flash, 0, kat, 8 * 1024));
	CHECK(app_intact(&r));
	rig_free(&r);
	free(kat);
}

/* A write that does not take: verify fails before sector 0 is written, so the ROM finds no
 * valid user code, enters ISP by itself, and a second run succeeds. */
static void
test_lpc_write_error_retry(void)
{
	struct rig r;
	uint8_t *kat = make_boot(16 * 1024, 0x10008000, 0, true);
	int ret;

	rig_lpc(&r, "lpc1769");
	r.lpc->faults = LPC_SIM_WRITE_ERROR;
	r.lpc->write_error_sector = 2;
	ret = rescue_install(r.fd, &r.o, kat, 16 * 1024, &r.res);
	fprintf(stderr, "lpc write error: %d %s\n", ret, r.res.error);
	CHECK_EQ_INT(ret, -EIO);
	CHECK(strstr(r.res.error, "verify failed at 0x02") != NULL);
	CHECK(flash_is_erased(r.lpc->flash, 0, 4096));
	CHECK(app_intact(&r));
	CHECK(r.res.old_boot && memcmp(r.res.old_boot, r.old, r.boot_size) == 0);
	rescue_result_free(&r.res);
	r.lpc->faults = 0;
	r.lpc->isp_low = false;
	lpcisp_sim_power_cycle(r.lpc);
	CHECK_EQ_INT(lpcisp_sim_state(r.lpc), LPC_SIM_WAIT_SYNC); /* invalid code: ISP */
	CHECK_EQ_INT(rescue_install(r.fd, &r.o, kat, 16 * 1024, &r.res), 0);
	CHECK(flash_equals(r.lpc->flash, 0, kat, 16 * 1024));
	CHECK(app_intact(&r));
	rig_free(&r);
	free(kat);
}

static void
test_image_checks(void)
{
	struct rescue_opts o = {.rom = RESCUE_ROM_LPCISP,
				.tty = "x",
				.mcu = catalog_mcu_find("lpc1769"),
				.boot_size = 0x4000};
	uint8_t *b = make_boot(0x4000, 0x10008000, 0, true);
	char err[512];
	uint32_t mask = 0;

	CHECK_EQ_INT(rescue_check_image(&o, b, 0x4000, err, sizeof(err)), 0);
	CHECK_EQ_INT(rescue_check_image(&o, b, 0x4004, err, sizeof(err)), -EINVAL);
	CHECK(strstr(err, "holds 16384") != NULL);
	put32(b + 0x2fc, 0x43218765);
	CHECK_EQ_INT(rescue_check_image(&o, b, 0x4000, err, sizeof(err)), -EINVAL);
	CHECK(strstr(err, "CRP3") != NULL);
	put32(b + 0x2fc, 0);
	put32(b + 4, 0x4101); /* linked for 0x4000: an application, not a bootloader */
	CHECK_EQ_INT(rescue_check_image(&o, b, 0x4000, err, sizeof(err)), -EINVAL);
	CHECK(strstr(err, "reset handler") != NULL);
	put32(b, 0x20010000); /* an STM32 stack */
	CHECK_EQ_INT(rescue_check_image(&o, b, 0x4000, err, sizeof(err)), -EINVAL);
	CHECK(strstr(err, "stack pointer") != NULL);
	CHECK_EQ_INT(rescue_boot_sectors(&o, &mask), 0);
	CHECK_EQ_INT(mask, 0xf);
	o.mcu = catalog_mcu_find("stm32f407xx");
	o.boot_size = 0x8000;
	CHECK_EQ_INT(rescue_boot_sectors(&o, &mask), 0);
	CHECK_EQ_INT(mask, 0x3);
	o.boot_size = 0x6000; /* ends inside sector 1 */
	CHECK_EQ_INT(rescue_boot_sectors(&o, &mask), -ERANGE);
	free(b);
}

/* Katapult builds: the MCU they name and the application start they use must be the board's
 * (the sim makes them as real builds look: signature, CONFIG_MCU string, app-start literal). */
static void
test_katapult_checks(void)
{
	const struct catalog_mcu *lpc = catalog_mcu_find("lpc1769");
	const struct catalog_mcu *f407 = catalog_mcu_find("stm32f407xx");
	struct rescue_opts o = {
	    .rom = RESCUE_ROM_LPCISP, .tty = "x", .mcu = lpc, .boot_size = 0x4000};
	uint8_t *k = sim_image_bootloader(lpc, true, 0x4000, 0x4000);
	uint8_t *stock = sim_image_bootloader(lpc, false, 0, 0x4000);
	uint8_t *k768 = sim_image_bootloader(catalog_mcu_find("lpc1768"), true, 0x4000, 0x4000);
	uint8_t *k8000 = sim_image_bootloader(lpc, true, 0x8000, 0x4000);
	char err[512] = "";

	CHECK(rescue_image_is_katapult(lpc, k, 0x4000));
	CHECK(!rescue_image_is_katapult(lpc, stock, 0x4000));
	CHECK_EQ_INT(rescue_check_image(&o, k, 0x4000, err, sizeof(err)), 0);
	CHECK_EQ_INT(rescue_check_image(&o, stock, 0x4000, err, sizeof(err)), 0);
	CHECK_EQ_INT(rescue_check_image(&o, k768, 0x4000, err, sizeof(err)), -EINVAL);
	CHECK(strstr(err, "Katapult build is for lpc1768, not lpc1769") != NULL);
	CHECK_EQ_INT(rescue_check_image(&o, k8000, 0x4000, err, sizeof(err)), -EINVAL);
	CHECK(strstr(err, "starts the application at 0x00008000, but the installed application is "
			  "at 0x00004000") != NULL);
	/* no application start at all in it */
	memset(k8000 + 0x280, 0x5a, 4);
	memset(k8000 + SIM_KATAPULT_RECORD + 8, 0x5a, 4);
	CHECK_EQ_INT(rescue_check_image(&o, k8000, 0x4000, err, sizeof(err)), -EINVAL);
	CHECK(strstr(err, "cannot find the application start 0x00004000") != NULL);
	free(k);
	free(k768);
	free(k8000);
	free(stock);
	/* STM32F407 with a 16 KiB Katapult where the board's application is at 32 KiB */
	o = (struct rescue_opts){
	    .rom = RESCUE_ROM_AN3155, .tty = "x", .mcu = f407, .boot_size = 0x8000};
	k = sim_image_bootloader(f407, true, 0x08004000, 0x4000);
	CHECK_EQ_INT(rescue_check_image(&o, k, 0x4000, err, sizeof(err)), -EINVAL);
	CHECK(strstr(err, "starts the application at 0x08004000") != NULL);
	free(k);
	k = sim_image_bootloader(f407, true, 0x08008000, 0x4000);
	CHECK_EQ_INT(rescue_check_image(&o, k, 0x4000, err, sizeof(err)), 0);
	free(k);
}

static void
stm_install(const char *mcu, uint32_t boot_size, size_t kat_len, uint32_t want_mask)
{
	struct rig r;
	const struct catalog_mcu *m = catalog_mcu_find(mcu);
	uint8_t *kat = make_boot(kat_len, 0x20010000, m->flash_base, false);
	int ret;

	rig_stm(&r, mcu, mcu, boot_size);
	ret = rescue_install(r.fd, &r.o, kat, kat_len, &r.res);
	fprintf(stderr, "stm32 %s: %d %s | gpio: %s\n", mcu, ret, r.res.error,
		gpio_fake_log(r.gpio));
	CHECK_EQ_INT(ret, 0);
	CHECK(flash_equals(r.stm->flash, m->flash_base, kat, kat_len));
	CHECK(
	    flash_is_erased(r.stm->flash, m->flash_base + (uint32_t)kat_len, boot_size - kat_len));
	CHECK(app_intact(&r));
	CHECK_EQ_INT(r.res.erased_sectors, want_mask);
	CHECK_EQ_INT(r.res.rom_version, 0x31);
	CHECK(r.res.old_boot_len == boot_size && memcmp(r.res.old_boot, r.old, boot_size) == 0);
	CHECK_EQ_INT(r.res.bytes_verified, boot_size);
	/* BOOT0 held through the whole job (the ROM latches it at reset), released only for
	 * the final reset into the new bootloader */
	CHECK_STREQ(gpio_fake_log(r.gpio), "boot=1 reset=1 sleep=20 reset=0 sleep=100 boot=0 "
					   "reset=1 sleep=20 reset=0 release ");
	CHECK_EQ_INT(an3155_sim_phase(r.stm), STM_SIM_OFF);
	CHECK(!r.stm->went);
	rig_free(&r);
	free(kat);
}

static void
stm_fails_clean(const char *mcu, const char *opts_mcu, unsigned faults, bool boot0_wired, int want,
		const char *msg)
{
	struct rig r;
	uint8_t *kat = make_boot(0x4000, 0x20010000, 0x08000000, false);
	int ret;

	rig_stm(&r, mcu, opts_mcu, 0x8000);
	r.stm->faults = faults;
	r.stm->boot0_wired = boot0_wired;
	ret = rescue_install(r.fd, &r.o, kat, 0x4000, &r.res);
	fprintf(stderr, "stm32 fault %#x: %d %s\n", faults, ret, r.res.error);
	CHECK_EQ_INT(ret, want);
	CHECK(strstr(r.res.error, msg) != NULL);
	CHECK(old_intact(&r));
	CHECK(app_intact(&r));
	rig_free(&r);
	free(kat);
}

static void
test_stm32(void)
{
	/* Katapult offsets (research §4.1): F4 32 KiB = sectors 0-1, H7 128 KiB = sector 0 */
	stm_install("stm32f407xx", 0x8000, 0x5000, 0x3);
	stm_install("stm32f446xx", 0x8000, 0x8000, 0x3);
	stm_install("stm32f429xx", 0x8000, 0x4400, 0x3);
	stm_install("stm32h723xx", 0x20000, 0x4000, 0x1);
	stm_fails_clean("stm32f407xx", "stm32f407xx", STM_SIM_RDP, true, -EACCES,
			"read protection (RDP)");
	stm_fails_clean("stm32f407xx", "stm32f407xx", STM_SIM_NO_SYNC, true, -ETIMEDOUT,
			"no answer from the STM32 ROM");
	stm_fails_clean("stm32f407xx", "stm32f407xx", 0, false, -ETIMEDOUT, "BOOT0 line wired");
	stm_fails_clean("stm32f407xx", "stm32f407xx", STM_SIM_GARBAGE, true, -ETIMEDOUT, "garbled");
	stm_fails_clean("stm32f407xx", "stm32f446xx", 0, true, -ENODEV, "0x413");
}

static void
test_stm32_write_error(void)
{
	struct rig r;
	uint8_t *kat = make_boot(0x8000, 0x20010000, 0x08000000, false);
	int ret;

	rig_stm(&r, "stm32f407xx", "stm32f407xx", 0x8000);
	r.stm->faults = STM_SIM_WRITE_ERROR;
	r.stm->write_error_sector = 1;
	ret = rescue_install(r.fd, &r.o, kat, 0x8000, &r.res);
	fprintf(stderr, "stm32 write error: %d %s\n", ret, r.res.error);
	CHECK_EQ_INT(ret, -EPERM);
	CHECK(strstr(r.res.error, "writing 0x08004000 failed (NACK)") != NULL);
	CHECK(app_intact(&r));
	rescue_result_free(&r.res);
	/* BOOT0 still set: run again */
	r.stm->faults = 0;
	CHECK_EQ_INT(rescue_install(r.fd, &r.o, kat, 0x8000, &r.res), 0);
	CHECK(flash_equals(r.stm->flash, 0x08000000, kat, 0x8000));
	CHECK(app_intact(&r));
	rig_free(&r);
	free(kat);
}

static void
test_mini_uart(void)
{
	char dir[] = "/tmp/rescue-sysXXXXXX", path[512], tty[512];
	struct rescue_opts o = {.rom = RESCUE_ROM_AN3155, .mcu = catalog_mcu_find("stm32f407xx")};
	char err[512] = "";
	int fd;

	CHECK(mkdtemp(dir) != NULL);
	snprintf(path, sizeof(path), "%s/class/tty/ttyS0/device", dir);
	CHECK(mkdir_p(path, 0755) == 0);
	strcat(path, "/driver");
	CHECK(symlink("../../../bus/platform/drivers/bcm2835-aux-uart", path) == 0);
	snprintf(tty, sizeof(tty), "%s/ttyS0", dir);
	fd = open(tty, O_CREAT | O_WRONLY, 0600);
	CHECK(fd >= 0);
	close(fd);
	o.sysfs = dir;
	o.tty = tty;
	CHECK_EQ_INT(rescue_uart_kind(tty, dir), RESCUE_UART_MINI_UART);
	CHECK_EQ_INT(rescue_uart_kind("/dev/null", dir), RESCUE_UART_OTHER);
	CHECK_EQ_INT(rescue_serial_open(tty, 115200, &o, err, sizeof(err)), -EOPNOTSUPP);
	CHECK(strstr(err, "mini UART") && strstr(err, "dtoverlay=disable-bt"));
	/* LPC ISP is 8N1: the mini UART is fine for it (here the file is no tty at all) */
	o.rom = RESCUE_ROM_LPCISP;
	CHECK_EQ_INT(rescue_serial_open(tty, 115200, &o, err, sizeof(err)), -ENOTTY);
	CHECK(strstr(err, "not a serial port") != NULL);
	CHECK_EQ_INT(rescue_serial_open(tty, 12345, &o, err, sizeof(err)), -EINVAL);
	/* an STM32 on a pty: parity does not stick, and that is said */
	{
		struct uart_pty p;

		CHECK(uart_pty_open(&p) == 0);
		o.rom = RESCUE_ROM_AN3155;
		fd = rescue_serial_open(p.path, 115200, &o, err, sizeof(err));
		if (fd >= 0)
			close(fd);
		CHECK_EQ_INT(fd, -EOPNOTSUPP);
		CHECK(strstr(err, "did not take even parity") != NULL);
		uart_pty_close(&p);
	}
	unlink(path);
	unlink(tty);
	snprintf(path, sizeof(path), "rm -rf '%s'", dir);
	CHECK(system(path) == 0);
}

int
main(void)
{
	test_image_checks();
	test_katapult_checks();
	test_mini_uart();
	test_lpc_install();
	test_lpc_quirks();
	test_lpc_failures();
	test_lpc_power_cycle_retry();
	test_lpc_write_error_retry();
	test_stm32();
	test_stm32_write_error();
	TEST_DONE();
}
