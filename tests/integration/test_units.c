/* SPDX-License-Identifier: GPL-2.0-or-later */
/* units against fake_systemd on a private bus (run by tests/integration/units.sh, which sets
 * DBUS_SYSTEM_BUS_ADDRESS and FAKE_SYSTEMD_LOG): stop/start with JobRemoved, reference
 * counts, errors, timeouts, a signal that overtakes its reply, restore at shutdown; and the
 * pure stop plan over holders. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <systemd/sd-event.h>

#include "harness.h"
#include "service/units.h"
#include "util.h"

struct done {
	int calls;
	int r;
	char unit[64];
	char result[32];
};

static void
on_done(void *userdata, const char *unit, int r, const char *result)
{
	struct done *d = userdata;

	d->calls++;
	d->r = r;
	str_copy(d->unit, sizeof(d->unit), unit);
	str_copy(d->result, sizeof(d->result), result ? result : "(none)");
}

static sd_event *loop;
static struct units *u;
static const char *log_path;

/* Run the loop until the callback came; the bound only ends a broken test. */
static bool
wait_done(struct done *d)
{
	uint64_t deadline = now_monotonic_usec() + 10 * 1000000ull;

	while (d->calls == 0 && now_monotonic_usec() < deadline)
		if (sd_event_run(loop, 1000000) < 0)
			return false;
	return d->calls > 0;
}

static int
stop(const char *unit, struct done *d)
{
	memset(d, 0, sizeof(*d));
	if (units_stop(u, unit, on_done, d) < 0)
		return -999;
	if (!wait_done(d))
		return -998;
	return d->r;
}

static int
start(const char *unit, struct done *d)
{
	memset(d, 0, sizeof(*d));
	if (units_start(u, unit, on_done, d) < 0)
		return -999;
	if (!wait_done(d))
		return -998;
	return d->r;
}

/* Requests on one connection reach the fake in order: once a later call completed, the
 * fake has seen every earlier one. */
static void
barrier(void)
{
	struct done d;

	CHECK_EQ_INT(start("barrier.service", &d), 0);
}

static size_t
log_count(const char *line)
{
	uint8_t *data = NULL;
	size_t size = 0, n = 0, len = strlen(line);
	char *text, *p;

	if (read_file(log_path, 1u << 20, &data, &size) < 0)
		return 0;
	text = xstrndup((const char *)data, size);
	for (p = text; (p = strstr(p, line)); p += len)
		if ((p == text || p[-1] == '\n') && (p[len] == '\n' || p[len] == '\0'))
			n++;
	free(text);
	free(data);
	return n;
}

static void
test_stop_start(void)
{
	struct done d, d2;

	CHECK_EQ_INT(stop("klipper-2.service", &d), 0);
	/* sent at connect, before the first StopUnit */
	CHECK_EQ_INT(log_count("Subscribe"), 1);
	CHECK_STREQ(d.result, "done");
	CHECK_STREQ(d.unit, "klipper-2.service");
	CHECK_EQ_INT(d.calls, 1);
	CHECK_EQ_INT(log_count("StopUnit klipper-2.service replace"), 1);
	CHECK(units_is_held(u, "klipper-2.service"));
	CHECK(!units_is_held(u, "klipper-1.service"));

	/* a second board of the same printer: a second reference, the unit stays stopped
	 * until both are released */
	CHECK_EQ_INT(stop("klipper-2.service", &d), 0);
	CHECK_EQ_INT(start("klipper-2.service", &d), 0);
	CHECK_STREQ(d.result, "held");
	CHECK(units_is_held(u, "klipper-2.service"));
	barrier();
	CHECK_EQ_INT(log_count("StartUnit klipper-2.service replace"), 0);
	CHECK_EQ_INT(start("klipper-2.service", &d), 0);
	CHECK_STREQ(d.result, "done");
	CHECK_EQ_INT(log_count("StartUnit klipper-2.service replace"), 1);
	CHECK(!units_is_held(u, "klipper-2.service"));

	/* two parallel stops of different instances complete independently */
	memset(&d, 0, sizeof(d));
	memset(&d2, 0, sizeof(d2));
	CHECK_EQ_INT(units_stop(u, "klipper-1.service", on_done, &d), 0);
	CHECK_EQ_INT(units_stop(u, "klipper-3.service", on_done, &d2), 0);
	CHECK_EQ_INT(d.calls + d2.calls, 0); /* never called from inside units_stop */
	CHECK(wait_done(&d) && wait_done(&d2));
	CHECK_EQ_INT(d.r, 0);
	CHECK_EQ_INT(d2.r, 0);
	CHECK_STREQ(d2.unit, "klipper-3.service");
	CHECK_EQ_INT(start("klipper-1.service", &d), 0);
	CHECK_EQ_INT(start("klipper-3.service", &d), 0);

	/* a unit this module never stopped is simply started */
	CHECK_EQ_INT(start("moonraker.service", &d), 0);
	CHECK_EQ_INT(log_count("StartUnit moonraker.service replace"), 1);
}

static void
test_errors(void)
{
	struct done d;

	CHECK_EQ_INT(stop("missing-klipper.service", &d), -ENOENT);
	CHECK_STREQ(d.result, "(none)");
	CHECK(!units_is_held(u, "missing-klipper.service"));

	/* a failed stop job is reverted: the unit is started again, nothing is held */
	CHECK_EQ_INT(stop("fail-klipper.service", &d), -EIO);
	CHECK_STREQ(d.result, "failed");
	CHECK(!units_is_held(u, "fail-klipper.service"));
	barrier();
	CHECK_EQ_INT(log_count("StartUnit fail-klipper.service replace"), 1);

	/* a stop job that never ends times out and is reverted the same way */
	units_set_timeout(u, 200 * 1000);
	CHECK_EQ_INT(stop("hang-klipper.service", &d), -ETIMEDOUT);
	units_set_timeout(u, 0);
	CHECK(!units_is_held(u, "hang-klipper.service"));
	barrier();
	CHECK_EQ_INT(log_count("StartUnit hang-klipper.service replace"), 1);

	/* JobRemoved before the method reply still completes the job */
	CHECK_EQ_INT(stop("race-klipper.service", &d), 0);
	CHECK_STREQ(d.result, "done");
	CHECK_EQ_INT(start("race-klipper.service", &d), 0);
	CHECK_STREQ(d.result, "done");

	CHECK_EQ_INT(units_stop(u, "", on_done, &d), -EINVAL);
	CHECK_EQ_INT(units_stop(u, "../x.service", on_done, &d), -EINVAL);
	CHECK_EQ_INT(units_start(u, NULL, on_done, &d), -EINVAL);
}

static void
test_forget(void)
{
	struct done d;

	memset(&d, 0, sizeof(d));
	CHECK_EQ_INT(units_stop(u, "klipper-4.service", on_done, &d), 0);
	units_forget(u, &d);
	barrier();
	CHECK_EQ_INT(d.calls, 0);
	/* the reference survives: a forgotten job's unit is still restored at shutdown */
	CHECK(units_is_held(u, "klipper-4.service"));
}

static void
test_restore_all(void)
{
	struct done d;

	CHECK_EQ_INT(stop("klipper-5.service", &d), 0);
	CHECK_EQ_INT(stop("klipper-5.service", &d), 0);
	CHECK_EQ_INT(stop("klipper-6.service", &d), 0);
	/* a stop still in flight at shutdown is reverted too, its callback dropped */
	memset(&d, 0, sizeof(d));
	CHECK_EQ_INT(units_stop(u, "klipper-7.service", on_done, &d), 0);

	CHECK_EQ_INT(units_restore_all(u, 5 * 1000000ull), 0);
	CHECK_EQ_INT(log_count("StartUnit klipper-4.service replace"), 1);
	CHECK_EQ_INT(log_count("StartUnit klipper-5.service replace"), 1);
	CHECK_EQ_INT(log_count("StartUnit klipper-6.service replace"), 1);
	CHECK_EQ_INT(log_count("StartUnit klipper-7.service replace"), 1);
	CHECK_EQ_INT(d.calls, 0);
	CHECK(!units_is_held(u, "klipper-5.service"));
	CHECK(!units_is_held(u, "klipper-7.service"));
	/* nothing left: a second call has nothing to do */
	CHECK_EQ_INT(units_restore_all(u, 1000000), 0);
	CHECK_EQ_INT(log_count("StartUnit klipper-5.service replace"), 1);
}

static void
test_plan(void)
{
	char g_klipper[] = "klipper*.service", g_moonraker[] = "moonraker.service";
	char u_k2[] = "klipper-2.service", u_m[] = "moonraker.service";
	char u_o[] = "octoprint.service", u_k[] = "klipper.service";
	char *globs[] = {g_klipper, g_moonraker, NULL};
	struct holder h[4];
	char **list = NULL;
	char *reason = NULL;

	CHECK(units_match(globs, 2, "klipper-2.service"));
	CHECK(units_match(globs, 2, "moonraker.service"));
	CHECK(!units_match(globs, 2, "moonraker-obico.service"));
	CHECK(!units_match(globs, 0, "klipper.service"));

	memset(h, 0, sizeof(h));
	h[0].pid = 10;
	h[0].unit = u_k2;
	str_copy(h[0].comm, sizeof(h[0].comm), "klippy");
	h[1] = h[0];
	h[1].pid = 11;
	h[2] = h[0];
	h[2].pid = 12;
	h[2].unit = u_m;

	CHECK_EQ_INT(units_plan(h, 3, globs, 2, "/dev/ttyACM0", &list, &reason), 0);
	CHECK(reason == NULL);
	CHECK_EQ_INT(strv_length(list), 2);
	if (strv_length(list) == 2) {
		CHECK_STREQ(list[0], "klipper-2.service");
		CHECK_STREQ(list[1], "moonraker.service");
	}
	list = strv_free(list);

	CHECK_EQ_INT(units_plan(h, 0, globs, 2, "/dev/ttyACM0", &list, &reason), 0);
	CHECK_EQ_INT(strv_length(list), 0);
	list = strv_free(list);

	/* a unit not in stop_units: refused, the tty is busy */
	h[3] = h[0];
	h[3].pid = 13;
	h[3].unit = u_o;
	CHECK_EQ_INT(units_plan(h, 4, globs, 2, "/dev/ttyACM0", &list, &reason), -EBUSY);
	CHECK(reason && strstr(reason, "octoprint.service") && strstr(reason, "/dev/ttyACM0"));
	free(reason);

	/* a terminal program in an SSH session, and a user-manager unit */
	h[3].unit = NULL;
	str_copy(h[3].comm, sizeof(h[3].comm), "screen");
	CHECK_EQ_INT(units_plan(h, 4, globs, 2, "/dev/ttyACM0", &list, &reason), -EBUSY);
	CHECK(reason && strstr(reason, "pid 13 (screen)"));
	free(reason);
	h[3].unit = u_k;
	h[3].user_manager = true;
	CHECK_EQ_INT(units_plan(h, 4, globs, 2, "/dev/ttyACM0", &list, &reason), -EBUSY);
	free(reason);
}

int
main(void)
{
	int r;

	test_plan();
	log_path = getenv("FAKE_SYSTEMD_LOG");
	if (!log_path) {
		fprintf(stderr, "run through tests/integration/units.sh\n");
		return 1;
	}
	CHECK_EQ_INT(sd_event_new(&loop), 0);
	r = units_new(loop, NULL, &u);
	CHECK_EQ_INT(r, 0);
	if (r == 0) {
		test_stop_start();
		test_errors();
		test_forget();
		test_restore_all();
		u = units_free(u);
	}
	sd_event_unref(loop);
	TEST_DONE();
}
