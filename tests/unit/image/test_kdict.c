/* SPDX-License-Identifier: GPL-2.0-or-later */
/* test_kdict: finding the Klipper dictionary in an image and classifying its interface. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "harness.h"
#include "image/kdict.h"

/* `json` compressed at level 9 (header 78 DA), placed at `at` in a buffer of `size` bytes
 * whose other bytes look like code and include decoy zlib headers. */
static uint8_t *
embed(const char *json, size_t at, size_t size, size_t *ret_len)
{
	uint8_t z[8192];
	uLongf zlen = sizeof(z);
	uint8_t *buf = malloc(size);

	if (!buf || compress2(z, &zlen, (const Bytef *)json, (uLong)strlen(json), 9) != Z_OK)
		abort();
	for (size_t i = 0; i < size; i++)
		buf[i] = (uint8_t)(i * 37 + 11);
	buf[3] = 0x78; /* decoys: valid zlib headers that do not start a stream */
	buf[4] = 0xDA;
	buf[9] = 0x78;
	buf[10] = 0x9C;
	if (at + zlen > size)
		abort();
	memcpy(buf + at, z, zlen);
	*ret_len = size;
	return buf;
}

static int
find(const char *json, struct kdict *d)
{
	size_t len;
	uint8_t *buf = embed(json, 100, 12000, &len);
	int r = kdict_find(buf, len, d);

	free(buf);
	return r;
}

static void
test_found(void)
{
	struct kdict d;

	CHECK_EQ_INT(find("{\"app\": \"Klipper\", \"commands\": {}, \"config\": {\"MCU\": "
			  "\"stm32f407xx\", \"CLOCK_FREQ\": 168000000, \"RESERVE_PINS_USB\": "
			  "\"PA11,PA12\"}, \"version\": \"v0.12.0-42-gabc\"}",
			  &d),
		     1);
	CHECK_STREQ(d.mcu, "stm32f407xx");
	CHECK_STREQ(d.version, "v0.12.0-42-gabc");
	CHECK_EQ_INT(d.clock_freq, 168000000);
	CHECK_EQ_INT(d.interface, KDICT_INTERFACE_USB);
	CHECK_STREQ(kdict_interface_to_string(d.interface), "usb");

	/* no "app" (older builds): commands + config is enough; no version, no clock */
	CHECK_EQ_INT(find("{\"commands\": {\"x\": 1}, \"config\": {\"MCU\": \"rp2040\"}}", &d), 1);
	CHECK_STREQ(d.mcu, "rp2040");
	CHECK_STREQ(d.version, "");
	CHECK_EQ_INT(d.clock_freq, 0);
	CHECK_EQ_INT(d.interface, KDICT_INTERFACE_UNKNOWN);
}

static void
test_interfaces(void)
{
	static const struct {
		const char *constants;
		enum kdict_interface want;
	} cases[] = {
	    {"\"RESERVE_PINS_USB\": \"PA11,PA12\"", KDICT_INTERFACE_USB},
	    {"\"RESERVE_PINS_USB1\": \"PB14,PB15\"", KDICT_INTERFACE_USB},
	    {"\"SERIAL_BAUD\": 250000, \"RESERVE_PINS_serial\": \"PA10,PA9\"",
	     KDICT_INTERFACE_SERIAL},
	    {"\"SERIAL_BAUD\": 250000", KDICT_INTERFACE_SERIAL},
	    {"\"CANBUS_FREQUENCY\": 1000000, \"RESERVE_PINS_CAN\": \"PB8,PB9\"",
	     KDICT_INTERFACE_CAN},
	    {"\"CANBUS_BRIDGE\": 1, \"CANBUS_FREQUENCY\": 1000000, \"RESERVE_PINS_USB\": \"x\"",
	     KDICT_INTERFACE_CAN},
	    {"\"SERIAL_BAUD\": 250000, \"RESERVE_PINS_USB\": \"x\"", KDICT_INTERFACE_UNKNOWN},
	    {"\"ADC_MAX\": 4095", KDICT_INTERFACE_UNKNOWN},
	};
	char json[512];
	struct kdict d;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		snprintf(json, sizeof(json),
			 "{\"app\": \"Klipper\", \"config\": {\"MCU\": \"lpc1768\", %s}}",
			 cases[i].constants);
		d.interface = _KDICT_INTERFACE_MAX;
		CHECK_EQ_INT(find(json, &d), 1);
		CHECK_EQ_INT(d.interface, cases[i].want);
	}
	CHECK_STREQ(kdict_interface_to_string(KDICT_INTERFACE_CAN), "can");
	CHECK_STREQ(kdict_interface_to_string(KDICT_INTERFACE_SERIAL), "serial");
	CHECK_STREQ(kdict_interface_to_string(_KDICT_INTERFACE_MAX), "unknown");
}

static void
test_not_found(void)
{
	uint8_t plain[4096];
	struct kdict d;
	size_t len;
	uint8_t *buf;

	for (size_t i = 0; i < sizeof(plain); i++)
		plain[i] = (uint8_t)(i * 13);
	CHECK_EQ_INT(kdict_find(plain, sizeof(plain), &d), 0);
	CHECK_EQ_INT(kdict_find(plain, 0, &d), 0);
	CHECK_EQ_INT(kdict_find(NULL, 0, &d), 0);
	/* JSON that is not a Klipper dictionary, and a non-JSON stream */
	CHECK_EQ_INT(find("{\"name\": \"something else\", \"config\": {}}", &d), 0);
	CHECK_EQ_INT(find("[1, 2, 3]", &d), 0);
	CHECK_EQ_INT(find("hello world", &d), 0);
	/* a dictionary whose stream is cut short */
	buf = embed("{\"app\": \"Klipper\", \"config\": {\"MCU\": \"stm32f446xx\"}}", 100, 4096,
		    &len);
	CHECK_EQ_INT(kdict_find(buf, 130, &d), 0);
	CHECK_EQ_INT(kdict_find(buf, len, &d), 1);
	buf[110] ^= 0x55; /* corrupt the deflate data: adler32 or the stream fails */
	CHECK_EQ_INT(kdict_find(buf, len, &d), 0);
	free(buf);
}

static void
test_malformed(void)
{
	struct kdict d;

	CHECK_EQ_INT(find("{\"app\": \"Klipper\", \"config\": {\"CLOCK_FREQ\": 1}}", &d), -EBADMSG);
	CHECK_EQ_INT(find("{\"app\": \"Klipper\", \"config\": {\"MCU\": 7}}", &d), -EBADMSG);
	CHECK_EQ_INT(find("{\"app\": \"Klipper\"}", &d), -EBADMSG);
	CHECK_EQ_INT(find("{\"app\": \"Klipper\", \"config\": {\"MCU\": \"x\", \"CLOCK_FREQ\": "
			  "\"fast\"}}",
			  &d),
		     -EBADMSG);
	CHECK_EQ_INT(find("{\"app\": \"Klipper\", \"config\": {\"MCU\": \"x\", \"CLOCK_FREQ\": "
			  "-5}}",
			  &d),
		     -EBADMSG);
	CHECK_EQ_INT(
	    find("{\"app\": \"Klipper\", \"config\": {\"MCU\": \"x\"}, \"version\": 3}", &d),
	    -EBADMSG);
	/* over-long strings are cut, not overflowed */
	CHECK_EQ_INT(find("{\"app\": \"Klipper\", \"config\": {\"MCU\": "
			  "\"0123456789012345678901234567890123456789\"}}",
			  &d),
		     1);
	CHECK_EQ_INT(strlen(d.mcu), sizeof(d.mcu) - 1);
}

int
main(void)
{
	test_found();
	test_interfaces();
	test_not_found();
	test_malformed();
	TEST_DONE();
}
