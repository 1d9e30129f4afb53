/* SPDX-License-Identifier: GPL-2.0-or-later */
/* holder: find the processes holding a tty open by scanning /proc/PID/fd. */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "service/holder.h"
#include "log.h"
#include "util.h"

/* /proc/PID/cgroup is a few lines; a v1 system with every controller stays far below this */
#define CGROUP_MAX 16384
#define CGROUP_FS "/sys/fs/cgroup"
#define CGROUP_WALK_MAX 8192 /* directories: a Pi has a few hundred */

static bool
parse_pid(const char *s, pid_t *ret)
{
	long v = 0;

	if (!*s)
		return false;
	for (; *s; s++) {
		if (!isdigit((unsigned char)*s))
			return false;
		v = v * 10 + (*s - '0');
		if (v > 0x7fffffffL)
			return false;
	}
	if (v == 0)
		return false;
	*ret = (pid_t)v;
	return true;
}

/* One fd entry of a process: does it refer to the device? */
static bool
fd_matches(int fd_dir, const char *name, const char *dev_path, dev_t rdev)
{
	struct stat st;

	/* fstatat follows the magic link to the open file itself, so a tty opened through a
	 * /dev/serial/by-id symlink or a bind mount still compares by device number */
	if (rdev != 0 && fstatat(fd_dir, name, &st, 0) == 0 && S_ISCHR(st.st_mode) &&
	    st.st_rdev == rdev)
		return true;
	if (dev_path) {
		char buf[4096];
		ssize_t n = readlinkat(fd_dir, name, buf, sizeof(buf) - 1);

		if (n > 0) {
			buf[n] = '\0';
			if (strcmp(buf, dev_path) == 0)
				return true;
		}
	}
	return false;
}

static int
process_holds(int proc_dir, pid_t pid, const char *dev_path, dev_t rdev)
{
	char path[64];
	struct dirent *de;
	DIR *d;
	int fd_dir;
	int found = 0;

	snprintf(path, sizeof(path), "%d/fd", (int)pid);
	fd_dir = openat(proc_dir, path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd_dir < 0)
		return -errno; /* exited, or not ours to look at */
	d = fdopendir(fd_dir);
	if (!d) {
		int r = -errno;

		close(fd_dir);
		return r;
	}
	while ((de = readdir(d))) {
		if (de->d_name[0] == '.')
			continue;
		if (fd_matches(fd_dir, de->d_name, dev_path, rdev)) {
			found = 1;
			break;
		}
	}
	closedir(d);
	return found;
}

static void
read_comm(int proc_dir, pid_t pid, char comm[16])
{
	char path[64];
	ssize_t n;
	int fd;

	comm[0] = '\0';
	snprintf(path, sizeof(path), "%d/comm", (int)pid);
	fd = openat(proc_dir, path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return;
	n = read(fd, comm, 15);
	close(fd);
	if (n <= 0)
		return;
	comm[n] = '\0';
	comm[strcspn(comm, "\n")] = '\0';
}

static void
read_unit(int proc_dir, pid_t pid, struct holder *h)
{
	char path[64];
	char *buf;
	size_t len = 0;
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "%d/cgroup", (int)pid);
	fd = openat(proc_dir, path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return;
	buf = xmalloc(CGROUP_MAX);
	/* procfs files report size 0, so read until EOF */
	while (len < CGROUP_MAX && (n = read(fd, buf + len, CGROUP_MAX - len)) > 0)
		len += (size_t)n;
	close(fd);
	if (holder_unit_from_cgroup(buf, len, &h->unit, &h->user_manager) < 0)
		log_debug("%d/cgroup: not a cgroup file", (int)pid);
	free(buf);
}

static int
cmp_holder(const void *a, const void *b)
{
	const struct holder *x = a, *y = b;

	return (x->pid > y->pid) - (x->pid < y->pid);
}

static int unit_of_path(const char *p, size_t len, char **ret_unit, bool *ret_user);

/* Is this /proc mounted with hidepid (ProtectProc=invisible or noaccess)? Then the processes
 * of other users are missing from the scan, not merely unreadable. */
static bool
proc_hides_pids(int proc_dir)
{
	char line[4096];
	struct stat self;
	bool hidden = false;
	FILE *f;

	if (geteuid() == 0 || fstat(proc_dir, &self) < 0)
		return false;
	f = fopen("/proc/self/mountinfo", "re");
	if (!f)
		return true; /* cannot tell: assume the worst */
	while (!hidden && fgets(line, sizeof(line), f)) {
		/* "ID PARENT MAJ:MIN ROOT MOUNTPOINT ... - proc SOURCE OPTIONS" (proc(5)) */
		char *sep = strstr(line, " - proc "), *p = line, *end;
		unsigned long maj, min;

		for (int field = 0; field < 2 && p; field++)
			p = strchr(p, ' ') ? strchr(p, ' ') + 1 : NULL;
		if (!sep || !p)
			continue;
		maj = strtoul(p, &end, 10);
		if (*end != ':')
			continue;
		min = strtoul(end + 1, &end, 10);
		if (*end != ' ' || makedev((unsigned)maj, (unsigned)min) != self.st_dev)
			continue;
		hidden = strstr(sep, "hidepid=") && !strstr(sep, "hidepid=0") &&
			 !strstr(sep, "hidepid=off");
	}
	fclose(f);
	return hidden;
}

/* The unit of a pid from the cgroup tree, which every user may read even when /proc/PID is
 * invisible: the directory whose cgroup.procs lists the pid. */
static void
unit_from_cgroupfs(int dirfd, const char *rel, pid_t pid, struct holder *h, unsigned *budget,
		   unsigned depth)
{
	char buf[65536];
	struct dirent *de;
	DIR *d;
	int fd;

	if (h->unit || depth > 12 || (*budget)-- == 0)
		return;
	fd = openat(dirfd, "cgroup.procs", O_RDONLY | O_CLOEXEC);
	if (fd >= 0) {
		ssize_t n;

		n = read(fd, buf, sizeof(buf) - 1);
		close(fd);
		if (n > 0) {
			char *end;

			buf[n] = 0;
			for (char *p = buf; *p; p = end) {
				long v = strtol(p, &end, 10);

				if (end == p)
					break;
				if (v == pid) {
					(void)unit_of_path(rel, strlen(rel), &h->unit,
							   &h->user_manager);
					if (!h->unit)
						h->unit =
						    xstrdup(""); /* in no service: stop looking */
					return;
				}
			}
		}
	}
	fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	d = fd >= 0 ? fdopendir(fd) : NULL;
	if (!d) {
		close_fd(fd);
		return;
	}
	while (!h->unit && (de = readdir(d))) {
		char *sub;
		int sfd;

		if (de->d_type != DT_DIR || de->d_name[0] == '.')
			continue;
		sfd = openat(dirfd, de->d_name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (sfd < 0)
			continue;
		sub = xasprintf("%s/%s", rel, de->d_name);
		unit_from_cgroupfs(sfd, sub, pid, h, budget, depth + 1);
		free(sub);
		close(sfd);
	}
	closedir(d);
}

/* Holders that took a lock on the device (Klipper opens its serial port exclusively:
 * klippy/serialhdl.py connect_uart, serial.Serial(exclusive=True), which pyserial implements
 * with flock(LOCK_EX | LOCK_NB)). /proc/locks lists every lock with its pid and
 * "MAJ:MIN:INODE" of the locked file, and is readable by all users. */
static int
lock_holders(int proc_dir, const char *dev_path, struct holder **list, size_t *n, size_t *cap)
{
	char line[512];
	struct stat st;
	FILE *f;
	int fd;

	if (!dev_path || stat(dev_path, &st) < 0)
		return -errno;
	fd = openat(proc_dir, "locks", O_RDONLY | O_CLOEXEC);
	f = fd >= 0 ? fdopen(fd, "re") : NULL;
	if (!f) {
		close_fd(fd);
		return -EACCES;
	}
	while (fgets(line, sizeof(line), f)) {
		unsigned long maj, min;
		unsigned long long ino;
		long pid;
		struct holder *h;
		char *save = NULL, *tok, *end;
		bool dup = false;

		/* "1: FLOCK  ADVISORY  WRITE 1234 00:19:5 0 EOF" (fs/locks.c lock_get_status:
		 * pid, then MAJ:MIN:INODE with MAJ and MIN in hex); blocked waiters have "->" */
		if (strstr(line, "->"))
			continue;
		tok = strtok_r(line, " \t", &save);
		for (int field = 0; tok && field < 4; field++)
			tok = strtok_r(NULL, " \t", &save);
		if (!tok)
			continue;
		pid = strtol(tok, &end, 10);
		tok = strtok_r(NULL, " \t", &save);
		if (*end || !tok)
			continue;
		maj = strtoul(tok, &end, 16);
		if (*end != ':')
			continue;
		min = strtoul(end + 1, &end, 16);
		if (*end != ':')
			continue;
		ino = strtoull(end + 1, &end, 10);
		if (*end)
			continue;
		if (pid <= 0 || makedev((unsigned)maj, (unsigned)min) != st.st_dev ||
		    ino != (unsigned long long)st.st_ino)
			continue;
		for (size_t i = 0; i < *n; i++)
			dup = dup || (*list)[i].pid == (pid_t)pid;
		if (dup)
			continue;
		if (*n == *cap) {
			*cap = *cap ? *cap * 2 : 4;
			*list = xreallocarray(*list, *cap, sizeof(**list));
		}
		h = &(*list)[(*n)++];
		memset(h, 0, sizeof(*h));
		h->pid = (pid_t)pid;
		read_comm(proc_dir, h->pid, h->comm);
		read_unit(proc_dir, h->pid, h);
		if (!h->unit) {
			/* injectable for tests, whose umockdev preload redirects /sys */
			const char *root = secure_getenv("SKRFLASHD_CGROUP_ROOT");
			int cg = open(root && *root ? root : CGROUP_FS,
				      O_RDONLY | O_DIRECTORY | O_CLOEXEC);
			unsigned budget = CGROUP_WALK_MAX;

			if (cg >= 0) {
				unit_from_cgroupfs(cg, "", h->pid, h, &budget, 0);
				close(cg);
			}
			if (h->unit && !h->unit[0]) {
				free(h->unit);
				h->unit = NULL;
			}
		}
	}
	fclose(f);
	return 0;
}

int
holder_find(const char *proc_root, const char *dev_path, dev_t rdev, struct holder **ret,
	    size_t *ret_n)
{
	struct holder *list = NULL;
	size_t n = 0, cap = 0;
	struct dirent *de;
	DIR *d;
	int proc_dir, r;
	bool restricted;

	if (!proc_root)
		proc_root = "/proc";
	if (rdev == 0 && !dev_path)
		return -EINVAL;
	proc_dir = open(proc_root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (proc_dir < 0)
		return log_error_errno(-errno, "cannot open %s", proc_root);
	restricted = proc_hides_pids(proc_dir);
	d = fdopendir(dup(proc_dir));
	if (!d) {
		r = -errno;
		close(proc_dir);
		return r;
	}
	while ((de = readdir(d))) {
		pid_t pid;
		struct holder *h;

		if (!parse_pid(de->d_name, &pid))
			continue;
		r = process_holds(proc_dir, pid, dev_path, rdev);
		if (r == -EACCES || r == -EPERM)
			restricted = true; /* another user's process: its fds are not ours */
		if (r <= 0)
			continue;
		if (n == cap) {
			cap = cap ? cap * 2 : 4;
			list = xreallocarray(list, cap, sizeof(*list));
		}
		h = &list[n++];
		memset(h, 0, sizeof(*h));
		h->pid = pid;
		read_comm(proc_dir, pid, h->comm);
		read_unit(proc_dir, pid, h);
	}
	closedir(d);
	if (restricted && n == 0) {
		/* what the scan could not see, the locks and the cgroup tree still tell; with
		 * neither, nobody can say the tty is free */
		r = lock_holders(proc_dir, dev_path, &list, &n, &cap);
		if (r < 0) {
			close(proc_dir);
			free(list);
			*ret = NULL;
			*ret_n = 0;
			return -EACCES;
		}
	}
	close(proc_dir);
	if (n > 1)
		qsort(list, n, sizeof(*list), cmp_holder);
	*ret = list;
	*ret_n = n;
	return n > 0x7fffffff ? 0x7fffffff : (int)n;
}

struct holder *
holder_free(struct holder *h, size_t n)
{
	if (!h)
		return NULL;
	for (size_t i = 0; i < n; i++)
		free(h[i].unit);
	free(h);
	return NULL;
}

/* The unit in one cgroup path: last component ending in ".service". systemd escapes a
 * component that could clash with kernel names by prefixing '_' (cg_escape), undone here. */
static int
unit_of_path(const char *p, size_t len, char **ret_unit, bool *ret_user)
{
	const char *best = NULL;
	size_t best_len = 0;
	bool user = false, best_user = false;
	size_t i = 0;

	while (i < len) {
		size_t start, clen;

		while (i < len && p[i] == '/')
			i++;
		start = i;
		while (i < len && p[i] != '/')
			i++;
		clen = i - start;
		if (clen > 0 && p[start] == '_') {
			start++;
			clen--;
		}
		if (clen > 8 && memcmp(p + start + clen - 8, ".service", 8) == 0) {
			best = p + start;
			best_len = clen;
			best_user = user;
			if (memcmp(p + start, "user@", 5) == 0)
				user = true;
		}
	}
	if (!best)
		return 0;
	*ret_unit = xstrndup(best, best_len);
	*ret_user = best_user;
	return 1;
}

int
holder_unit_from_cgroup(const char *text, size_t len, char **ret_unit, bool *ret_user)
{
	const char *unified = NULL, *named = NULL;
	size_t unified_len = 0, named_len = 0;
	size_t pos = 0;
	bool any = false;

	while (pos < len) {
		const char *line = text + pos;
		const char *nl = memchr(line, '\n', len - pos);
		size_t llen = nl ? (size_t)(nl - line) : len - pos;
		const char *c1, *c2;

		pos += llen + (nl ? 1 : 0);
		/* cppcheck-suppress knownConditionTrueFalse ; nl == line on an empty line */
		if (llen == 0)
			continue;
		/* "hierarchy-ID:controller-list:cgroup-path" (cgroups(7)) */
		c1 = memchr(line, ':', llen);
		if (!c1)
			return -EINVAL;
		c2 = memchr(c1 + 1, ':', llen - (size_t)(c1 + 1 - line));
		if (!c2 || c2 + 1 >= line + llen || c2[1] != '/')
			return -EINVAL;
		any = true;
		if (c1 - line == 1 && line[0] == '0' && c2 == c1 + 1) {
			unified = c2 + 1;
			unified_len = llen - (size_t)(c2 + 1 - line);
		} else if ((size_t)(c2 - c1 - 1) == strlen("name=systemd") &&
			   memcmp(c1 + 1, "name=systemd", strlen("name=systemd")) == 0) {
			named = c2 + 1;
			named_len = llen - (size_t)(c2 + 1 - line);
		}
	}
	if (!any)
		return -EINVAL;
	*ret_user = false;
	/* hybrid hierarchies have both lines; a unified root ("0::/") then says nothing */
	if (unified && unit_of_path(unified, unified_len, ret_unit, ret_user) > 0)
		return 1;
	if (named)
		return unit_of_path(named, named_len, ret_unit, ret_user);
	return 0;
}
