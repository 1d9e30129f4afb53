/* SPDX-License-Identifier: GPL-2.0-or-later */
/* blockfile: a proto/blockdev over a file descriptor: an image file in tests, or the raw
 * block device of a USB drive (Marlin's SD card, the RP2040's RPI-RP2) that the worker
 * writes without mounting it. Blocking pread/pwrite and fsync; worker side only. */
#pragma once

#include <stdbool.h>

#include "proto/blockdev.h"

struct blockfile {
	struct blockdev dev;
	int fd;
	bool own_fd; /* close the fd in blockfile_close */
};

/* Opens PATH (read-only unless WRITABLE) and sizes it: a regular file by its length (which
 * must be a whole number of 512-byte sectors), a block device by BLKGETSIZE64. 0 or -errno. */
int blockfile_open(struct blockfile *bf, const char *path, bool writable);

/* Uses an fd the caller opened and keeps; sized as in blockfile_open. */
int blockfile_from_fd(struct blockfile *bf, int fd);

/* fsync, then closes an fd opened by blockfile_open. 0 or the fsync's -errno. */
int blockfile_close(struct blockfile *bf);
