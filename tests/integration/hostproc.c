/* SPDX-License-Identifier: GPL-2.0-or-later */
/* hostproc: host programs outside the testbed's preload (see hostproc.h). */
#include "hostproc.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

pid_t
hostproc_spawn(char *const argv[], int *ret_in, int *ret_out)
{
	int in[2], out[2];
	pid_t pid;

	if (pipe2(in, O_CLOEXEC) < 0 || pipe2(out, O_CLOEXEC) < 0)
		return -errno;
	pid = fork();
	if (pid < 0)
		return -errno;
	if (pid == 0) {
		(void)dup2(in[0], STDIN_FILENO);
		(void)dup2(out[1], STDOUT_FILENO);
		(void)unsetenv("LD_PRELOAD");
		execvp(argv[0], argv);
		_exit(127);
	}
	close(in[0]);
	close(out[1]);
	if (ret_in)
		*ret_in = in[1];
	else
		close(in[1]);
	if (ret_out)
		*ret_out = out[0];
	else
		close(out[0]);
	return pid;
}

int
hostproc_read_line(int fd, char *buf, size_t size)
{
	size_t n = 0;

	while (n + 1 < size) {
		if (read(fd, buf + n, 1) <= 0) {
			buf[n] = 0;
			return -EIO;
		}
		if (buf[n] == '\n')
			break;
		n++;
	}
	buf[n] = 0;
	return 0;
}

pid_t
hostproc_fake(char *const argv[], int *ret_in, char *port, size_t size)
{
	int out = -1;
	pid_t pid = hostproc_spawn(argv, ret_in, &out);

	port[0] = 0;
	if (pid > 0 && hostproc_read_line(out, port, size) < 0) {
		fprintf(stderr, "%s %s did not say its port\n", argv[0], argv[1] ? argv[1] : "");
		(void)kill(pid, SIGKILL);
		(void)waitpid(pid, NULL, 0);
		pid = -EIO;
	}
	if (out >= 0)
		close(out);
	return pid;
}
