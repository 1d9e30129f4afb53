/* SPDX-License-Identifier: GPL-2.0-or-later */
/* dfu_util: dfu-util against a simulated DFU device, for its fidelity tests (see dfu_util.h). */
#include "dfu_util.h"

#include <fcntl.h>
#include <link.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "util.h"

static int
find_asan(struct dl_phdr_info *info, size_t size, void *data)
{
	char **ret = data;

	(void)size;
	if (info->dlpi_name && strstr(info->dlpi_name, "libasan.so")) {
		*ret = xstrdup(info->dlpi_name);
		return 1;
	}
	return 0;
}

void
dfu_util_preload(char **argv)
{
	const char *p = getenv("LD_PRELOAD");
	char *asan = NULL, *np;

	if (p && strstr(p, "libumockdev-preload"))
		return;
	dl_iterate_phdr(find_asan, &asan);
	np = xasprintf("%s%slibumockdev-preload.so.0%s%s", asan ? asan : "", asan ? ":" : "",
		       p && *p ? ":" : "", p ? p : "");
	setenv("LD_PRELOAD", np, 1);
	if (asan)
		setenv("ASAN_OPTIONS", "detect_leaks=0:verify_asan_link_order=0", 0);
	execv("/proc/self/exe", argv);
	perror("re-exec under libumockdev-preload");
	exit(99);
}

int
dfu_util_run(const char *log, const char *timeout_s, const char *const args[])
{
	const char *const prefix[] = {"timeout", "-k", "5", timeout_s, "dfu-util"};
	char *argv[24] = {NULL};
	size_t n = 0;
	pid_t pid;
	int st, fd, r = -1;

	/* argv is built before fork(): the harness is multi-threaded (umockdev worker) */
	for (size_t i = 0; i < ELEMENTSOF(prefix); i++)
		argv[n++] = xstrdup(prefix[i]);
	for (size_t i = 0; args[i] && n < 23; i++)
		argv[n++] = xstrdup(args[i]);
	fd = open(log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		goto out;
	pid = fork();
	if (pid == 0) {
		dup2(fd, 1);
		dup2(fd, 2);
		execvp(argv[0], argv);
		_exit(127);
	}
	close(fd);
	if (pid > 0 && waitpid(pid, &st, 0) == pid)
		r = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
out:
	for (size_t i = 0; i < n; i++)
		free(argv[i]);
	return r;
}

void
dfu_util_show_log(const char *log)
{
	uint8_t *data = NULL;
	size_t size = 0;

	if (read_file(log, 1 << 20, &data, &size) == 0) {
		fprintf(stderr, "---- %s ----\n%.*s\n----\n", log, (int)size, (const char *)data);
		free(data);
	}
}

static void
put_le32(uint8_t *p, uint32_t v)
{
	for (unsigned i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

void
dfu_util_image(uint8_t *img, uint32_t len, uint32_t sp, uint32_t app_start, uint32_t vectors)
{
	for (uint32_t i = 0; i < len; i++)
		img[i] = (uint8_t)(i * 7 + i / 251);
	put_le32(img, sp);
	for (uint32_t i = 1; i < vectors; i++)
		put_le32(img + 4 * (size_t)i, app_start + 0x201 + 8 * i);
}
