/* SPDX-License-Identifier: GPL-2.0-or-later */
/* fake_systemd: a stand-in for PID 1's D-Bus Manager on a private bus, for the units tests.
 *
 * Owns org.freedesktop.systemd1 on the bus of $DBUS_SYSTEM_BUS_ADDRESS and implements what
 * skrflash uses: Subscribe, GetUnit, StopUnit and StartUnit, each returning a job path and
 * later emitting JobRemoved(id, job, unit, result). Every call and signal is appended to
 * LOG as one line ("StopUnit klipper.service replace", "JobRemoved 3 klipper.service done").
 * The unit name chooses the behaviour:
 *   missing-*  no such unit (org.freedesktop.systemd1.NoSuchUnit)
 *   fail-*     the stop job ends "failed" (start works)
 *   hang-*     the stop job never ends (start works)
 *   race-*     JobRemoved is sent before the method reply
 *   others     the job ends "done" on the next loop iteration after the reply
 * Usage: fake_systemd LOG READY_FIFO (writes "ready" to the fifo once the name is owned). */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>

#define SD_PATH "/org/freedesktop/systemd1"
#define SD_MANAGER "org.freedesktop.systemd1.Manager"

static FILE *log_file;
static uint32_t last_job;

static void log_line(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void
log_line(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vfprintf(log_file, fmt, ap);
	va_end(ap);
	fputc('\n', log_file);
	fflush(log_file);
}

struct pending {
	sd_bus *bus;
	sd_event_source *source;
	uint32_t id;
	char job[64];
	char unit[256];
	char result[16];
};

static int
emit_job_removed(sd_bus *bus, uint32_t id, const char *job, const char *unit, const char *result)
{
	log_line("JobRemoved %u %s %s", id, unit, result);
	return sd_bus_emit_signal(bus, SD_PATH, SD_MANAGER, "JobRemoved", "uoss", id, job, unit,
				  result);
}

static int
on_pending(sd_event_source *s, void *userdata)
{
	struct pending *p = userdata;

	(void)s;
	emit_job_removed(p->bus, p->id, p->job, p->unit, p->result);
	sd_event_source_unref(p->source);
	sd_bus_unref(p->bus);
	free(p);
	return 0;
}

static bool
has_prefix(const char *s, const char *prefix)
{
	return strncmp(s, prefix, strlen(prefix)) == 0;
}

/* StopUnit ends the unit's processes, as systemd does (KillMode=control-group), when the
 * test says where its units' cgroups are (FAKE_SYSTEMD_CGROUPS/<unit>/cgroup.procs); the job
 * completes once they are gone. */
static void
kill_unit(const char *name)
{
	const char *root = getenv("FAKE_SYSTEMD_CGROUPS");
	char path[4096];

	if (!root || !*root)
		return;
	snprintf(path, sizeof(path), "%s/%s/cgroup.procs", root, name);
	for (int round = 0; round < 200; round++) {
		FILE *f = fopen(path, "re");
		int pid, n = 0;

		if (!f)
			return;
		while (fscanf(f, "%d", &pid) == 1) {
			n++;
			if (round == 0)
				(void)kill(pid, SIGTERM);
		}
		fclose(f);
		if (n == 0)
			return;
		usleep(10000);
	}
}

static int
method_job(sd_bus_message *m, void *userdata, sd_bus_error *ret_error)
{
	const char *member = sd_bus_message_get_member(m);
	bool stop = strcmp(member, "StopUnit") == 0;
	const char *name, *mode, *result = "done";
	sd_bus *bus = sd_bus_message_get_bus(m);
	struct pending *p;
	char job[64];
	uint32_t id;
	int r;

	(void)userdata;
	r = sd_bus_message_read(m, "ss", &name, &mode);
	if (r < 0)
		return r;
	log_line("%s %s %s", member, name, mode);
	if (has_prefix(name, "missing-"))
		return sd_bus_error_setf(ret_error, "org.freedesktop.systemd1.NoSuchUnit",
					 "Unit %s not found.", name);
	if (strlen(name) >= sizeof(p->unit))
		return sd_bus_error_set(ret_error, SD_BUS_ERROR_INVALID_ARGS, "name too long");
	id = ++last_job;
	snprintf(job, sizeof(job), SD_PATH "/job/%u", id);
	if (stop && has_prefix(name, "fail-"))
		result = "failed";
	if (stop && has_prefix(name, "hang-"))
		return sd_bus_reply_method_return(m, "o", job);
	if (stop)
		kill_unit(name);
	if (has_prefix(name, "race-")) {
		r = emit_job_removed(bus, id, job, name, result);
		if (r < 0)
			return r;
		return sd_bus_reply_method_return(m, "o", job);
	}
	r = sd_bus_reply_method_return(m, "o", job);
	if (r < 0)
		return r;
	/* like PID 1: the job runs after the reply went out */
	p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	p->bus = sd_bus_ref(bus);
	p->id = id;
	snprintf(p->job, sizeof(p->job), "%s", job);
	snprintf(p->unit, sizeof(p->unit), "%s", name);
	snprintf(p->result, sizeof(p->result), "%s", result);
	r = sd_event_add_defer(sd_bus_get_event(bus), &p->source, on_pending, p);
	if (r < 0) {
		sd_bus_unref(p->bus);
		free(p);
	}
	return r < 0 ? r : 1;
}

static int
method_get_unit(sd_bus_message *m, void *userdata, sd_bus_error *ret_error)
{
	const char *name;
	int r;

	(void)userdata;
	r = sd_bus_message_read(m, "s", &name);
	if (r < 0)
		return r;
	log_line("GetUnit %s", name);
	if (has_prefix(name, "missing-"))
		return sd_bus_error_setf(ret_error, "org.freedesktop.systemd1.NoSuchUnit",
					 "Unit %s not loaded.", name);
	return sd_bus_reply_method_return(m, "o", SD_PATH "/unit/fake");
}

static int
method_subscribe(sd_bus_message *m, void *userdata, sd_bus_error *ret_error)
{
	(void)userdata;
	(void)ret_error;
	log_line("Subscribe");
	return sd_bus_reply_method_return(m, "");
}

static const sd_bus_vtable manager_vtable[] = {
    SD_BUS_VTABLE_START(0),
    SD_BUS_METHOD("StopUnit", "ss", "o", method_job, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD("StartUnit", "ss", "o", method_job, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD("GetUnit", "s", "o", method_get_unit, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD("Subscribe", "", "", method_subscribe, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_SIGNAL("JobRemoved", "uoss", 0),
    SD_BUS_VTABLE_END,
};

int
main(int argc, char **argv)
{
	sd_event *loop = NULL;
	sd_bus *bus = NULL;
	sigset_t mask;
	int r, fd;

	if (argc != 3) {
		fprintf(stderr, "usage: fake_systemd LOG READY_FIFO\n");
		return 2;
	}
	log_file = fopen(argv[1], "ae");
	if (!log_file) {
		perror(argv[1]);
		return 1;
	}
	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	r = sd_event_default(&loop);
	if (r >= 0)
		r = sd_event_add_signal(loop, NULL, SIGTERM, NULL, NULL);
	if (r >= 0)
		r = sd_event_add_signal(loop, NULL, SIGINT, NULL, NULL);
	if (r >= 0)
		r = sd_bus_open_system(&bus);
	if (r >= 0)
		r = sd_bus_add_object_vtable(bus, NULL, SD_PATH, SD_MANAGER, manager_vtable, NULL);
	if (r >= 0)
		r = sd_bus_request_name(bus, "org.freedesktop.systemd1", 0);
	if (r >= 0)
		r = sd_bus_attach_event(bus, loop, 0);
	if (r >= 0)
		r = sd_bus_set_exit_on_disconnect(bus, 1);
	if (r < 0) {
		fprintf(stderr, "fake_systemd: setup failed: %s\n", strerror(-r));
		return 1;
	}
	fd = open(argv[2], O_WRONLY | O_CLOEXEC);
	if (fd < 0 || write(fd, "ready\n", 6) != 6) {
		perror(argv[2]);
		return 1;
	}
	close(fd);
	r = sd_event_loop(loop);
	sd_bus_flush_close_unref(bus);
	sd_event_unref(loop);
	fclose(log_file);
	return r < 0 ? 1 : 0;
}
