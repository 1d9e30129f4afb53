/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Simulator self-test: USB identities per mode against protocols.md §1.4-1.5, read back
 * through libudev like the daemon does; tty allocation; several boards at once. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <libudev.h>

#include "harness.h"
#include "sim.h"

struct expect {
	enum sim_mode mode;
	const char *vid, *pid, *manufacturer, *product;
	size_t serial_len; /* 0: no serial */
	bool tty;
	const char *by_id_prefix;
};

static struct udev *udev;

static void
check_usb_device(struct sim_board *b, const struct expect *e, struct udev_device *d)
{
	char path[256];

	CHECK_STREQ(udev_device_get_sysattr_value(d, "idVendor"), e->vid);
	CHECK_STREQ(udev_device_get_sysattr_value(d, "idProduct"), e->pid);
	CHECK_STREQ(udev_device_get_sysattr_value(d, "manufacturer"), e->manufacturer);
	CHECK_STREQ(udev_device_get_sysattr_value(d, "product"), e->product);
	CHECK_STREQ(udev_device_get_sysattr_value(d, "devpath"), "3");
	CHECK_STREQ(udev_device_get_sysattr_value(d, "busnum"), "1");
	CHECK_STREQ(udev_device_get_sysattr_value(d, "speed"), "12");
	CHECK_STREQ(udev_device_get_sysattr_value(d, "bConfigurationValue"), "1");
	CHECK(udev_device_get_sysattr_value(d, "descriptors") != NULL);
	CHECK_STREQ(udev_device_get_property_value(d, "ID_VENDOR_ID"), e->vid);
	CHECK_STREQ(udev_device_get_property_value(d, "ID_MODEL_ID"), e->pid);
	CHECK_STREQ(udev_device_get_property_value(d, "ID_BUS"), "usb");
	CHECK_STREQ(udev_device_get_property_value(d, "ID_PATH"), "pci-0000:00:14.0-usb-0:3");
	CHECK_STREQ(udev_device_get_property_value(d, "DEVTYPE"), "usb_device");
	CHECK_STREQ(udev_device_get_devnode(d), sim_board_devnode(b));
	CHECK_STREQ(udev_device_get_driver(d), "usb");
	snprintf(path, sizeof(path), "%d", atoi(udev_device_get_sysattr_value(d, "devnum")));
	CHECK(strstr(sim_board_devnode(b), "/dev/bus/usb/001/") == sim_board_devnode(b));
	CHECK(access(sim_board_devnode(b), F_OK) == 0);
}

static void
check_serial(struct sim_board *b, const struct expect *e, struct udev_device *d)
{
	const char *v = udev_device_get_sysattr_value(d, "serial");

	if (e->serial_len) {
		CHECK(v != NULL);
		CHECK_EQ_INT(v ? strlen(v) : 0, e->serial_len);
		CHECK_STREQ(v, sim_board_serial(b));
		CHECK_STREQ(udev_device_get_property_value(d, "ID_SERIAL_SHORT"), v);
	} else {
		CHECK(v == NULL);
	}
}

/* the ttyACM device of interface 0, as udev describes it */
static void
check_tty_device(struct sim_board *b, const struct expect *e)
{
	struct udev_device *t, *parent;
	const char *v;
	char path[256];

	snprintf(path, sizeof(path), "%s/1-3:1.0/tty/%s", sim_board_syspath(b),
		 sim_board_tty(b) ? sim_board_tty(b) + 5 : "");
	t = udev_device_new_from_syspath(udev, path);
	CHECK(t != NULL);
	if (!t)
		return;
	parent = udev_device_get_parent_with_subsystem_devtype(t, "usb", "usb_device");
	CHECK_STREQ(udev_device_get_devnode(t), sim_board_tty(b));
	CHECK_STREQ(udev_device_get_property_value(t, "ID_USB_INTERFACE_NUM"), "00");
	CHECK_STREQ(udev_device_get_property_value(t, "ID_VENDOR_ID"), e->vid);
	CHECK_STREQ(udev_device_get_property_value(t, "ID_MODEL_ID"), e->pid);
	CHECK_STREQ(udev_device_get_property_value(t, "ID_SERIAL_SHORT"), sim_board_serial(b));
	CHECK_STREQ(udev_device_get_property_value(t, "ID_PATH"), "pci-0000:00:14.0-usb-0:3:1.0");
	CHECK(parent != NULL);
	if (parent)
		CHECK_STREQ(udev_device_get_sysattr_value(parent, "idProduct"), e->pid);
	/* devices made from a syspath carry links only as the DEVLINKS property: the testbed
	 * has no udev database (events do fill the devlinks list) */
	v = udev_device_get_property_value(t, "DEVLINKS");
	CHECK(v && strstr(v, sim_board_by_id(b)) && strstr(v, "/dev/serial/by-path/"));
	udev_device_unref(t);
}

/* the tty's links, and a real terminal behind them the daemon can configure */
static void
check_tty_links(struct sim_board *b, const struct expect *e)
{
	int fd;

	CHECK(strncmp(sim_board_by_id(b), e->by_id_prefix, strlen(e->by_id_prefix)) == 0);
	CHECK(access(sim_board_by_id(b), F_OK) == 0);
	CHECK(access("/dev/serial/by-path/pci-0000:00:14.0-usb-0:3:1.0", F_OK) == 0);
	fd = open(sim_board_by_id(b), O_RDWR | O_NOCTTY | O_NONBLOCK);
	CHECK(fd >= 0);
	if (fd >= 0) {
		CHECK(isatty(fd));
		close(fd);
	}
}

static void
check_mode(struct sim_board *b, const struct expect *e)
{
	struct udev_device *d;

	CHECK_EQ_INT(sim_board_plug(b, e->mode), 0);
	CHECK_EQ_INT(sim_board_mode(b), e->mode);
	d = udev_device_new_from_syspath(udev, sim_board_syspath(b));
	CHECK(d != NULL);
	if (!d)
		return;
	fprintf(stderr, "mode %s: %s\n", sim_mode_to_string(e->mode), sim_board_syspath(b));
	check_usb_device(b, e, d);
	check_serial(b, e, d);
	if (!e->tty) {
		CHECK(sim_board_tty(b) == NULL);
		udev_device_unref(d);
		return;
	}
	CHECK(sim_board_tty(b) != NULL);
	check_tty_device(b, e);
	check_tty_links(b, e);
	udev_device_unref(d);
}

static void
test_identities(struct sim *s)
{
	struct sim_board_spec spec = {.model = "octopus-f446",
				      .port = "1-3",
				      .uid = "1a0038000851323235363831",
				      .mode = SIM_MODE_OFF};
	struct sim_board *b = sim_board_add(s, &spec);
	const struct expect table[] = {
	    {SIM_MODE_KLIPPER_APP, "1d50", "614e", "Klipper", "stm32f446xx", 24, true,
	     "/dev/serial/by-id/usb-Klipper_stm32f446xx_1A0038000851323235363831-if00"},
	    {SIM_MODE_KATAPULT, "1d50", "6177", "katapult", "stm32f446xx", 24, true,
	     "/dev/serial/by-id/usb-katapult_stm32f446xx_1A0038000851323235363831-if00"},
	    {SIM_MODE_ROM_DFU, "0483", "df11", "STMicroelectronics", NULL, 12, false, NULL},
	    {SIM_MODE_LPC_DFU, "1d50", "6015", NULL, NULL, 0, false, NULL},
	    {SIM_MODE_BOOTSEL, "2e8a", "0003", "Raspberry Pi", "RP2 Boot", 12, false, NULL},
	    {SIM_MODE_MARLIN_LPC, "1d50", "6029", "marlinfw.org", "Marlin USB Device", 13, true,
	     "/dev/serial/by-id/usb-marlinfw.org_Marlin_USB_Device_1.00000000000-if00"},
	    {SIM_MODE_MARLIN_STM32, "0483", "5740", "STMicroelectronics",
	     "MARLIN_STM32F446ZE CDC in FS Mode", 12, true,
	     "/dev/serial/by-id/usb-STMicroelectronics_MARLIN_STM32F446ZE_CDC_in_FS_Mode_"},
	};
	unsigned enums;
	char dfu_serial[32];

	CHECK(b != NULL);
	if (!b)
		return;
	CHECK_EQ_INT(sim_board_mode(b), SIM_MODE_OFF);
	CHECK_STREQ(sim_board_uid(b), "1A0038000851323235363831");
	for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++) {
		struct expect e = table[i];
		struct udev_device *d;

		if (e.mode == SIM_MODE_ROM_DFU || e.mode == SIM_MODE_LPC_DFU) {
			/* product strings of ROMs are unconfirmed: take what the board reports */
			CHECK_EQ_INT(sim_board_plug(b, e.mode), 0);
			d = udev_device_new_from_syspath(udev, sim_board_syspath(b));
			CHECK(d != NULL);
			e.product = d ? udev_device_get_sysattr_value(d, "product") : "";
			if (!e.manufacturer)
				e.manufacturer =
				    d ? udev_device_get_sysattr_value(d, "manufacturer") : "";
			check_mode(b, &e);
			if (d)
				udev_device_unref(d);
			continue;
		}
		check_mode(b, &e);
	}
	/* ROM DFU serial: 12 hex chars from the UID, different from Klipper's */
	CHECK_EQ_INT(sim_board_plug(b, SIM_MODE_ROM_DFU), 0);
	snprintf(dfu_serial, sizeof(dfu_serial), "%s", sim_board_serial(b));
	CHECK_EQ_INT(strlen(dfu_serial), 12);
	CHECK(strcmp(dfu_serial, sim_board_uid(b)) != 0);
	CHECK_EQ_INT(strspn(dfu_serial, "0123456789ABCDEF"), 12);
	/* w0 + w2 = 0x0038001a + 0x31383635, then the top half of w1 = 0x3232 */
	CHECK_STREQ(dfu_serial, "3170364F3232");
	/* devnum changes on each enumeration, the port path does not */
	{
		char n1[64];

		snprintf(n1, sizeof(n1), "%s", sim_board_devnode(b));
		enums = sim_board_enumerations(b);
		CHECK_EQ_INT(sim_board_plug(b, SIM_MODE_ROM_DFU), 0);
		CHECK(strcmp(n1, sim_board_devnode(b)) != 0);
		CHECK(access(n1, F_OK) != 0);
		CHECK_EQ_INT(sim_board_enumerations(b), enums + 1);
	}
	CHECK_EQ_INT(sim_board_unplug(b), 0);
	CHECK(access("/dev/serial/by-path/pci-0000:00:14.0-usb-0:3:1.0", F_OK) != 0);
	CHECK(sim_board_syspath(b) == NULL);
}

static void
test_events(struct sim *s)
{
	struct sim_board_spec spec = {
	    .model = "skr-mini-e3-v3", .port = "1-4", .mode = SIM_MODE_OFF};
	struct sim_board *b = sim_board_add(s, &spec);
	struct udev_monitor *mon = udev_monitor_new_from_netlink(udev, "udev");
	char seen[1024] = "";
	int fd, tty_links = 0;

	CHECK(b && mon);
	if (!b || !mon)
		return;
	udev_monitor_filter_add_match_subsystem_devtype(mon, "usb", "usb_device");
	udev_monitor_filter_add_match_subsystem_devtype(mon, "tty", NULL);
	udev_monitor_enable_receiving(mon);
	fd = udev_monitor_get_fd(mon);
	CHECK_EQ_INT(sim_board_plug(b, SIM_MODE_KLIPPER_APP), 0);
	CHECK_EQ_INT(sim_board_plug(b, SIM_MODE_KATAPULT), 0);
	for (;;) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		struct udev_device *d;
		size_t l = strlen(seen);

		if (poll(&p, 1, 1000) <= 0)
			break;
		d = udev_monitor_receive_device(mon);
		if (!d)
			continue;
		snprintf(seen + l, sizeof(seen) - l, "%s:%s:%s ", udev_device_get_action(d),
			 udev_device_get_subsystem(d),
			 udev_device_get_property_value(d, "ID_MODEL_ID") &&
				 strcmp(udev_device_get_subsystem(d), "usb") == 0
			     ? udev_device_get_property_value(d, "ID_MODEL_ID")
			     : "-");
		if (strcmp(udev_device_get_subsystem(d), "tty") == 0 &&
		    strcmp(udev_device_get_action(d), "add") == 0) {
			struct udev_list_entry *le;

			udev_list_entry_foreach(le, udev_device_get_devlinks_list_entry(d)) {
				if (strstr(udev_list_entry_get_name(le), "/dev/serial/by-id/usb-"))
					tty_links++;
			}
		}
		udev_device_unref(d);
		if (strstr(seen, "add:tty:-") && strstr(seen, "bind:usb:6177"))
			break;
	}
	fprintf(stderr, "events: %s\n", seen);
	/* plug app, then the kernel-like unplug (children first) and the Katapult plug */
	CHECK(strstr(seen, "add:usb:614e add:tty:- bind:usb:614e remove:tty:- unbind:usb") == seen);
	CHECK(strstr(seen, "remove:usb:") != NULL);
	CHECK(strstr(seen, "add:usb:6177 add:tty:- bind:usb:6177") != NULL);
	/* both tty add events name their by-id link */
	CHECK_EQ_INT(tty_links, 2);
	udev_monitor_unref(mon);
	sim_board_unplug(b);
}

static void
test_many(struct sim *s)
{
	struct sim_board_spec spec = {.model = "manta-m8p", .mode = SIM_MODE_KLIPPER_APP};
	struct sim_board *a, *c, *d;
	char tty_a[32];

	spec.port = "1-1.1";
	a = sim_board_add(s, &spec);
	spec.port = "1-1.2";
	c = sim_board_add(s, &spec);
	spec.port = "2-1";
	spec.model = "skr-pico";
	d = sim_board_add(s, &spec);
	CHECK(a && c && d);
	if (!a || !c || !d)
		return;
	/* identical models on two ports are distinct boards */
	CHECK(strcmp(sim_board_uid(a), sim_board_uid(c)) != 0);
	CHECK(strcmp(sim_board_tty(a), sim_board_tty(c)) != 0);
	CHECK(strcmp(sim_board_by_id(a), sim_board_by_id(c)) != 0);
	CHECK_STREQ(sim_board_tty(a), "/dev/ttyACM0");
	CHECK_STREQ(sim_board_tty(c), "/dev/ttyACM1");
	CHECK_STREQ(sim_board_tty(d), "/dev/ttyACM2");
	CHECK_EQ_INT(strlen(sim_board_uid(d)), 16);
	CHECK(strstr(sim_board_devnode(d), "/dev/bus/usb/002/") != NULL);
	CHECK(strstr(sim_board_syspath(c), "/usb1/1-1.2") != NULL);
	/* a stable derived UID: same model and port give the same UID */
	CHECK(sim_board_add(s, &spec) == NULL); /* port in use */
	/* lowest free tty name, reused after an unplug */
	snprintf(tty_a, sizeof(tty_a), "%s", sim_board_tty(a));
	CHECK_EQ_INT(sim_board_unplug(a), 0);
	CHECK_EQ_INT(sim_board_plug(c, SIM_MODE_KATAPULT), 0);
	CHECK_STREQ(sim_board_tty(c), "/dev/ttyACM0");
	CHECK_EQ_INT(sim_board_plug(a, SIM_MODE_KLIPPER_APP), 0);
	CHECK_STREQ(sim_board_tty(a), "/dev/ttyACM1");
	CHECK(access(sim_board_by_id(a), F_OK) == 0);
	CHECK(access(sim_board_by_id(c), F_OK) == 0);
	CHECK_STREQ(sim_board_app_version(a), "v0.12.0-sim");
	sim_board_unplug(a);
	sim_board_unplug(c);
	sim_board_unplug(d);
}

int
main(int argc, char **argv)
{
	struct sim *s;

	sim_init(argc, argv);
	s = sim_new();
	udev = udev_new();
	test_identities(s);
	test_events(s);
	test_many(s);
	udev_unref(udev);
	sim_free(s);
	TEST_DONE();
}
