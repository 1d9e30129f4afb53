/* SPDX-License-Identifier: GPL-2.0-or-later */
/* holder: cgroup parsing, a fake /proc tree with two Klipper instances, and the real /proc
 * with a child process holding a pty open. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "service/holder.h"
#include "util.h"

static int
unit_of(const char *text, char **unit, bool *user)
{
	*unit = NULL;
	*user = false;
	return holder_unit_from_cgroup(text, strlen(text), unit, user);
}

static void
test_cgroup(void)
{
	char *unit;
	bool user;

	CHECK_EQ_INT(unit_of("0::/system.slice/klipper-2.service\n", &unit, &user), 1);
	CHECK_STREQ(unit, "klipper-2.service");
	CHECK(!user);
	free(unit);

	/* a sub-cgroup inside the service still names the service */
	CHECK_EQ_INT(unit_of("0::/system.slice/moonraker.service/worker\n", &unit, &user), 1);
	CHECK_STREQ(unit, "moonraker.service");
	free(unit);

	/* Klipper run by a user's systemd: the inner unit, flagged as not PID 1's */
	CHECK_EQ_INT(unit_of("0::/user.slice/user-1000.slice/user@1000.service/app.slice/"
			     "klipper.service\n",
			     &unit, &user),
		     1);
	CHECK_STREQ(unit, "klipper.service");
	CHECK(user);
	free(unit);

	/* cgroup v1: the name=systemd hierarchy */
	CHECK_EQ_INT(unit_of("12:cpuset:/\n11:memory:/system.slice/klipper.service\n"
			     "1:name=systemd:/system.slice/klipper-1.service\n",
			     &unit, &user),
		     1);
	CHECK_STREQ(unit, "klipper-1.service");
	free(unit);

	/* hybrid with a unified root: fall back to name=systemd */
	CHECK_EQ_INT(unit_of("1:name=systemd:/system.slice/a.service\n0::/\n", &unit, &user), 1);
	CHECK_STREQ(unit, "a.service");
	free(unit);

	/* systemd escapes names that clash with kernel files with a leading '_' */
	CHECK_EQ_INT(unit_of("0::/system.slice/_cgroup.service\n", &unit, &user), 1);
	CHECK_STREQ(unit, "cgroup.service");
	free(unit);

	/* an SSH session, a container, no trailing newline */
	CHECK_EQ_INT(unit_of("0::/user.slice/user-1000.slice/session-4.scope\n", &unit, &user), 0);
	CHECK(unit == NULL);
	CHECK_EQ_INT(unit_of("0::/docker/4f3a", &unit, &user), 0);
	CHECK_EQ_INT(unit_of("0::/system.slice/.service\n", &unit, &user), 0);

	CHECK_EQ_INT(unit_of("", &unit, &user), -EINVAL);
	CHECK_EQ_INT(unit_of("garbage\n", &unit, &user), -EINVAL);
	CHECK_EQ_INT(unit_of("0:relative\n", &unit, &user), -EINVAL);
	CHECK_EQ_INT(unit_of("0::\n", &unit, &user), -EINVAL);
	CHECK(unit == NULL);
}

static void
put(const char *root, const char *rel, const char *text)
{
	char *p = xasprintf("%s/%s", root, rel);
	char *dir = xstrdup(p);

	*strrchr(dir, '/') = '\0';
	CHECK_EQ_INT(mkdir_p(dir, 0755), 0);
	CHECK_EQ_INT(write_file_atomic(p, text, strlen(text), 0644), 0);
	free(dir);
	free(p);
}

static void
link_fd(const char *root, const char *rel, const char *target)
{
	char *p = xasprintf("%s/%s", root, rel);
	char *dir = xstrdup(p);

	*strrchr(dir, '/') = '\0';
	CHECK_EQ_INT(mkdir_p(dir, 0755), 0);
	CHECK_EQ_INT(symlink(target, p), 0);
	free(dir);
	free(p);
}

static void
test_fake_proc(void)
{
	char tmpl[] = "/tmp/skrflash-holder.XXXXXX";
	char *root = mkdtemp(tmpl);
	struct holder *h = NULL;
	struct stat null_st;
	size_t n = 99;
	int r;

	CHECK(root != NULL);
	if (!root)
		return;
	/* two Klipper instances, each with its own board */
	put(root, "812/comm", "klippy\n");
	put(root, "812/cgroup", "0::/system.slice/klipper-1.service\n");
	link_fd(root, "812/fd/0", "/dev/null");
	link_fd(root, "812/fd/7", "/dev/serial/by-id/usb-Klipper_stm32f446xx_A-if00");
	put(root, "1204/comm", "klippy\n");
	put(root, "1204/cgroup", "0::/system.slice/klipper-2.service\n");
	link_fd(root, "1204/fd/7", "/dev/serial/by-id/usb-Klipper_stm32f446xx_B-if00");
	link_fd(root, "1204/fd/9", "/dev/serial/by-id/usb-Klipper_stm32f446xx_B-if00");
	/* a terminal program started over SSH holding board B too */
	put(root, "95/comm", "screen\n");
	put(root, "95/cgroup", "0::/user.slice/user-1000.slice/session-3.scope\n");
	link_fd(root, "95/fd/3", "/dev/serial/by-id/usb-Klipper_stm32f446xx_B-if00");
	/* entries that are not processes, and a process that is gone (no fd dir) */
	put(root, "self/comm", "x\n");
	put(root, "sys/fd/1", "");
	put(root, "77/comm", "zombie\n");

	r = holder_find(root, "/dev/serial/by-id/usb-Klipper_stm32f446xx_B-if00", 0, &h, &n);
	CHECK_EQ_INT(r, 2);
	CHECK_EQ_INT(n, 2);
	if (r == 2) {
		CHECK_EQ_INT(h[0].pid, 95);
		CHECK_STREQ(h[0].comm, "screen");
		CHECK(h[0].unit == NULL);
		CHECK_EQ_INT(h[1].pid, 1204);
		CHECK_STREQ(h[1].comm, "klippy");
		CHECK_STREQ(h[1].unit, "klipper-2.service");
		CHECK(!h[1].user_manager);
	}
	h = holder_free(h, n);

	/* by device number: fd 0 of 812 points at /dev/null, found without a path */
	CHECK_EQ_INT(stat("/dev/null", &null_st), 0);
	r = holder_find(root, NULL, null_st.st_rdev, &h, &n);
	CHECK_EQ_INT(r, 1);
	if (r == 1) {
		CHECK_EQ_INT(h[0].pid, 812);
		CHECK_STREQ(h[0].unit, "klipper-1.service");
	}
	h = holder_free(h, n);

	r = holder_find(root, "/dev/ttyACM5", 0, &h, &n);
	CHECK_EQ_INT(r, 0);
	CHECK_EQ_INT(n, 0);
	CHECK(h == NULL);

	CHECK_EQ_INT(holder_find(root, NULL, 0, &h, &n), -EINVAL);
	CHECK_EQ_INT(holder_find("/nonexistent-proc", "/dev/x", 0, &h, &n), -ENOENT);

	{
		char *cmd = xasprintf("rm -rf '%s'", root);

		CHECK_EQ_INT(system(cmd), 0);
		free(cmd);
	}
}

static void
test_real_proc(void)
{
	struct holder *h = NULL;
	struct stat st;
	size_t n = 0;
	int ready[2], hold[2];
	const char *slave;
	char byte;
	pid_t child;
	int master, r;
	bool found_child = false, found_self = false;

	master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
	CHECK(master >= 0);
	if (master < 0)
		return;
	CHECK_EQ_INT(grantpt(master), 0);
	CHECK_EQ_INT(unlockpt(master), 0);
	slave = ptsname(master);
	CHECK(slave != NULL);
	CHECK_EQ_INT(stat(slave, &st), 0);
	CHECK_EQ_INT(pipe2(ready, O_CLOEXEC), 0);
	CHECK_EQ_INT(pipe2(hold, O_CLOEXEC), 0);

	child = fork();
	if (child == 0) {
		int fd = open(slave, O_RDWR | O_NOCTTY | O_CLOEXEC);

		prctl(PR_SET_NAME, "fakeklippy", 0, 0, 0);
		if (fd < 0 || write(ready[1], "r", 1) != 1)
			_exit(1);
		/* hold the tty until the parent closes its end of the pipe */
		close(hold[1]);
		while (read(hold[0], &byte, 1) > 0)
			;
		_exit(0);
	}
	CHECK(child > 0);
	close(ready[1]);
	close(hold[0]);
	CHECK_EQ_INT(read(ready[0], &byte, 1), 1);

	r = holder_find(NULL, slave, st.st_rdev, &h, &n);
	CHECK(r >= 1);
	for (size_t i = 0; i < n; i++) {
		if (h[i].pid == child) {
			found_child = true;
			CHECK_STREQ(h[i].comm, "fakeklippy");
		}
		if (h[i].pid == getpid())
			found_self = true; /* only the master is open here: must not match */
	}
	CHECK(found_child);
	CHECK(!found_self);
	h = holder_free(h, n);

	/* the same tty found by device number alone (link text ignored) */
	r = holder_find("/proc", NULL, st.st_rdev, &h, &n);
	found_child = false;
	for (size_t i = 0; i < n; i++)
		found_child |= h[i].pid == child;
	CHECK(found_child);
	h = holder_free(h, n);

	close(hold[1]);
	CHECK_EQ_INT(waitpid(child, &r, 0), child);
	CHECK(WIFEXITED(r) && WEXITSTATUS(r) == 0);
	close(ready[0]);

	/* the child is gone: nobody holds the tty */
	r = holder_find(NULL, slave, st.st_rdev, &h, &n);
	CHECK_EQ_INT(r, 0);
	h = holder_free(h, n);
	close(master);
}

int
main(void)
{
	test_cgroup();
	test_fake_proc();
	test_real_proc();
	TEST_DONE();
}
