/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "flash/blockfile.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <stdint.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

/* An I/O error on a block device that has no size any more: the disk went away (the kernel
 * drops a removed disk's capacity to 0, and its ioctls fail). */
static int
io_errno(const struct blockfile *bf, int err)
{
	struct stat st;
	uint64_t bytes = 0;

	if (fstat(bf->fd, &st) == 0 && S_ISBLK(st.st_mode) &&
	    (ioctl(bf->fd, BLKGETSIZE64, &bytes) < 0 || bytes == 0))
		return -ENODEV;
	return err;
}

/* pread/pwrite move fewer bytes than asked only on signals or at the end of the device.
 * Exactly one of rbuf (a read) and wbuf (a write) is set. */
static int
bf_io(struct blockfile *bf, uint64_t lba, uint32_t count, uint8_t *rbuf, const uint8_t *wbuf)
{
	size_t len = (size_t)count * BLOCKDEV_SECTOR, done = 0;
	off_t off = (off_t)(lba * BLOCKDEV_SECTOR);

	if (lba + count > bf->dev.sectors)
		return -EINVAL;
	while (done < len) {
		ssize_t n = rbuf ? pread(bf->fd, rbuf + done, len - done, off + (off_t)done)
				 : pwrite(bf->fd, wbuf + done, len - done, off + (off_t)done);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) /* 0: the device shrank under us */
			return io_errno(bf, n < 0 ? -errno : -EIO);
		done += (size_t)n;
	}
	return 0;
}

static int
bf_read(void *ctx, uint64_t lba, uint32_t count, uint8_t *buf)
{
	return bf_io(ctx, lba, count, buf, NULL);
}

static int
bf_write(void *ctx, uint64_t lba, uint32_t count, const uint8_t *buf)
{
	return bf_io(ctx, lba, count, NULL, buf);
}

static int
bf_flush(void *ctx)
{
	struct blockfile *bf = ctx;

	return fsync(bf->fd) < 0 ? io_errno(bf, -errno) : 0;
}

int
blockfile_from_fd(struct blockfile *bf, int fd)
{
	struct stat st;
	uint64_t bytes;

	memset(bf, 0, sizeof(*bf));
	bf->fd = -1;
	if (fstat(fd, &st) < 0)
		return -errno;
	if (S_ISBLK(st.st_mode)) {
		if (ioctl(fd, BLKGETSIZE64, &bytes) < 0)
			return -errno;
	} else if (S_ISREG(st.st_mode)) {
		bytes = (uint64_t)st.st_size;
	} else {
		return -ENOTBLK;
	}
	/* a removable disk without its medium (a card reader, a board's drive whose firmware
	 * holds the card) has 0 bytes (/sys/block/sdX/size 0) */
	if (bytes == 0)
		return -ENOMEDIUM;
	if (bytes % BLOCKDEV_SECTOR != 0)
		return -EINVAL;
	bf->fd = fd;
	bf->dev = (struct blockdev){
	    .ctx = bf,
	    .sectors = bytes / BLOCKDEV_SECTOR,
	    .read = bf_read,
	    .write = bf_write,
	    .flush = bf_flush,
	};
	return 0;
}

int
blockfile_open(struct blockfile *bf, const char *path, bool writable)
{
	int fd = open(path, (writable ? O_RDWR : O_RDONLY) | O_CLOEXEC);
	int r;

	if (fd < 0) {
		memset(bf, 0, sizeof(*bf));
		bf->fd = -1;
		return -errno;
	}
	r = blockfile_from_fd(bf, fd);
	if (r < 0) {
		close(fd);
		return r;
	}
	bf->own_fd = true;
	return 0;
}

int
blockfile_close(struct blockfile *bf)
{
	int r = 0;

	if (bf->fd < 0)
		return 0;
	if (fsync(bf->fd) < 0 && errno != EINVAL && errno != EROFS)
		r = io_errno(bf, -errno);
	if (bf->own_fd)
		close(bf->fd);
	bf->fd = -1;
	return r;
}
