/* SPDX-License-Identifier: GPL-2.0-or-later */
/* sim_prod: the processes under test as they run in production (see sim.h, and the shared
 * helper tests/integration/as-user that does the work). */
#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sim.h"
#include "util.h"

bool
sim_production(void)
{
	const char *e = getenv("SKRTEST_AS_ROOT");

	return geteuid() == 0 && !(e && strcmp(e, "1") == 0);
}

static unsigned
id_of(const char *env, unsigned def)
{
	const char *v = getenv(env);

	return v && *v ? (unsigned)strtoul(v, NULL, 10) : def;
}

/* the defaults of tests/integration/as-user */
unsigned
sim_daemon_uid(void)
{
	return id_of("SKRTEST_DAEMON_UID", 61000);
}

unsigned
sim_ops_gid(void)
{
	return id_of("SKRTEST_OPS_GID", 61001);
}

unsigned
sim_role_uid(const char *role)
{
	if (strcmp(role, "member") == 0)
		return id_of("SKRTEST_MEMBER_UID", 61002);
	if (strcmp(role, "klipper") == 0)
		return id_of("SKRTEST_KLIPPER_UID", 61003);
	if (strcmp(role, "outsider") == 0)
		return id_of("SKRTEST_OUTSIDER_UID", 61004);
	return sim_daemon_uid();
}

static char **
strv_copy_prefixed(const char *const prefix[], size_t np, char *const argv[])
{
	size_t n = strv_length(argv), k = 0;
	char **v = xnew_array(char *, np + n + 1);

	for (size_t i = 0; i < np; i++)
		v[k++] = xstrdup(prefix[i]);
	for (size_t i = 0; i < n; i++)
		v[k++] = xstrdup(argv[i]);
	v[k] = NULL;
	return v;
}

char **
sim_as(const char *role, const char *dir, char *const argv[])
{
	const char *helper = getenv("SKRTEST_AS_USER");
	char path[PATH_MAX];

	if (!sim_production())
		return strv_copy_prefixed(NULL, 0, argv);
	if (!helper || !*helper)
		helper = "tests/integration/as-user";
	if (!realpath(helper, path)) {
		fprintf(stderr, "sim: cannot find %s: %s\n", helper, strerror(errno));
		abort();
	}
	{
		const char *prefix[] = {path, role, dir};

		return strv_copy_prefixed(prefix, 3, argv);
	}
}

int
sim_prepare_production(const char *dir, const char *state, const char *run)
{
	const char *const own[] = {state, run};

	if (!sim_production())
		return 0;
	/* the test's tree is root's; the daemon's directories are its own, mode 0750, as
	 * StateDirectory= and RuntimeDirectory= make them */
	if (chmod(dir, 0755) < 0)
		return -errno;
	for (size_t i = 0; i < 2; i++) {
		if (mkdir(own[i], 0750) < 0 && errno != EEXIST)
			return -errno;
		if (chown(own[i], sim_daemon_uid(), sim_ops_gid()) < 0 || chmod(own[i], 0750) < 0)
			return -errno;
	}
	return 0;
}

static int
share_one(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
	(void)ftw;
	if (type == FTW_SL)
		return 0;
	(void)chmod(path, S_ISDIR(st->st_mode) ? 0777 : (st->st_mode & 07777) | 0666);
	return 0;
}

void
sim_share_tree(const char *root)
{
	/* the testbed is root's; the daemon under test runs as its own user and must reach
	 * the emulated sysfs, device nodes and umockdev's sockets (a test-only tree) */
	if (sim_production())
		(void)nftw(root, share_one, 16, FTW_PHYS);
}
