/* SPDX-License-Identifier: GPL-2.0-or-later */
/* sim_drive: the RPI-RP2 drive of a simulated RP2040 in BOOTSEL (protocols.md §5.2).
 *
 * The real boot ROM serves a virtual 128 MiB disk (pico-bootrom virtual_disk.c): an MBR with
 * one FAT16 partition from sector 1, 4 KiB clusters, 512 root entries, the volume label
 * RPI-RP2, INDEX.HTM and INFO_UF2.TXT. It keeps nothing that is written to it: it looks at
 * every written 512-byte sector, programs those that are UF2 blocks for the RP2040 family
 * into flash (erasing each 4 KiB sector the first time a block touches it), ignores the
 * rest (FAT and directory writes included), and reboots once all numBlocks blocks of a file
 * have arrived. Blocks for another family are ignored and do not count.
 *
 * Here the drive is a sparse image file that umockdev serves as /dev/sdX (a plain file with
 * the sticky bit stands for a block device: research umockdev.md §4), made with mkfs.fat and
 * mtools like a card. The simulator cannot see single writes, so the service thread looks at
 * the file whenever it changed and takes the UF2 blocks that are new, in file order. The UF2
 * rules here are written from the sources above, apart from the daemon's proto/uf2. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sim_int.h"
#include "util.h"

#define DRIVE_MIB 128u
#define SECTOR 512u
#define FAMILY_RP2040 0xE48BFF56u

struct sim_drive {
	char *file;		   /* the image, a real path inside the testbed root */
	char *node;		   /* "/dev/sdX" */
	int64_t seen_ns;	   /* mtime of the last look */
	uint32_t total;		   /* numBlocks of the file being received, 0 = none yet */
	uint32_t count;		   /* distinct blocks of it received */
	uint8_t *got;		   /* per blockNo */
	uint8_t erased[512];	   /* per 4 KiB flash sector: erased during this session */
	uint32_t *seen;		   /* per drive sector: checksum of the content already taken */
	UMockdevIoctlBase *ioctls; /* what a block device answers that a plain file cannot */
	UMockdevTestbed *tb;
	/* Marlin's SD card (sim_drive_create_card): the node is a link to the card image, which
	 * stays when the drive goes; no UF2 handling; the medium comes and goes with Marlin */
	bool card;
	char *card_path;
	uint64_t bytes;
	unsigned host; /* SCSI host number: 0 for the RPI-RP2, one per card drive (several
			* Marlin boards are plugged at once; each scsi_device name is unique) */
};

static char *node_name(unsigned letter);

static uint32_t
le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static int
run(const char *cmd)
{
	int r = system(cmd);

	if (r != 0)
		fprintf(stderr, "sim: '%s' failed (%d)\n", cmd, r);
	return r == 0 ? 0 : -EIO;
}

/* MBR with one FAT16 (LBA) partition from sector 1 to the end, as the ROM's disk has. */
static int
write_mbr(int fd, uint32_t sectors)
{
	uint8_t mbr[SECTOR] = {0};
	uint8_t *e = mbr + 0x1be;
	uint32_t n = sectors - 1;

	e[4] = 0x0e;
	e[8] = 1;
	for (int i = 0; i < 4; i++)
		e[12 + i] = (uint8_t)(n >> (8 * i));
	mbr[510] = 0x55;
	mbr[511] = 0xaa;
	return pwrite(fd, mbr, sizeof(mbr), 0) == (ssize_t)sizeof(mbr) ? 0 : -errno;
}

/* The ROM's two files (pico-bootrom: INFO_UF2.TXT and the INDEX.HTM redirect). */
static const char info_txt[] = "UF2 Bootloader v1.0\nModel: Raspberry Pi RP2\nBoard-ID: RPI-RP2\n";
static const char index_htm[] =
    "<html><head><meta http-equiv=\"refresh\" content=\"0;URL='https://raspberrypi.com/"
    "device/RP2?version=E0C9125B0D9B'\"/></head><body>Redirecting to raspberrypi.com"
    "</body></html>\n";

static int
make_image(const char *file, const char *dir)
{
	uint32_t sectors = DRIVE_MIB * 1024u * 1024u / SECTOR;
	char *cmd, *info = xasprintf("%s/INFO_UF2.TXT", dir),
		   *index = xasprintf("%s/INDEX.HTM", dir);
	int fd, r;

	(void)mkdir(dir, 0755);
	fd = open(file, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

	if (fd < 0 || ftruncate(fd, (off_t)sectors * SECTOR) < 0 || write_mbr(fd, sectors) < 0) {
		fprintf(stderr, "sim: %s: %s\n", file, strerror(errno));
		if (fd >= 0)
			close(fd);
		free(info);
		free(index);
		return -EIO;
	}
	close(fd);
	r = write_file_atomic(info, info_txt, strlen(info_txt), 0644);
	if (r == 0)
		r = write_file_atomic(index, index_htm, strlen(index_htm), 0644);
	cmd = xasprintf("/sbin/mkfs.fat -F 16 -s 8 -r 512 -n RPI-RP2 --offset 1 '%s' %u "
			">/dev/null && mcopy -i '%s@@512' '%s' '%s' ::/",
			file, (sectors - 1) / 2, file, index, info);
	if (r == 0)
		r = run(cmd);
	free(cmd);
	unlink(info);
	unlink(index);
	free(info);
	free(index);
	/* the sticky bit makes umockdev's stat() report a block device */
	return r == 0 && chmod(file, 01644) == 0 ? 0 : -EIO;
}

/* The block-device ioctls a writer sends (size, sector size, flush); the rest falls back to
 * umockdev's default. Runs on umockdev's worker thread. */
static gboolean
on_ioctl(UMockdevIoctlBase *h, UMockdevIoctlClient *c, gpointer user)
{
	unsigned long req = umockdev_ioctl_client_get_request(c);
	UMockdevIoctlData *arg = umockdev_ioctl_client_get_arg(c), *x;

	(void)h;
	(void)user;
	if (req == BLKGETSIZE64 || req == BLKSSZGET) {
		x = umockdev_ioctl_data_resolve(arg, 0, req == BLKGETSIZE64 ? 8 : 4, NULL);
		if (!x)
			return FALSE;
		if (req == BLKGETSIZE64)
			*(uint64_t *)(void *)x->data = (uint64_t)DRIVE_MIB << 20;
		else
			*(int *)(void *)x->data = SECTOR;
		g_object_unref(x);
		umockdev_ioctl_client_complete(c, 0, 0);
		return TRUE;
	}
	if (req == BLKFLSBUF) {
		umockdev_ioctl_client_complete(c, 0, 0);
		return TRUE;
	}
	return FALSE;
}

int
sim_drive_create(struct sim_board *b, const char *root, unsigned letter, char **ret_udev,
		 const char *usb_iface_path)
{
	struct sim_drive *d = xnew(struct sim_drive);
	char *dir = xasprintf("%s/dev", root);
	size_t sectors = (size_t)DRIVE_MIB * 1024u * 1024u / SECTOR;

	d->node = node_name(letter);
	d->file = xasprintf("%s%s", root, d->node);
	d->seen = xcalloc(sectors, sizeof(uint32_t));
	if (make_image(d->file, dir) < 0) {
		free(dir);
		sim_drive_free(d);
		return -EIO;
	}
	free(dir);
	d->tb = b->sim->tb;
	d->ioctls = umockdev_ioctl_base_new();
	g_signal_connect(d->ioctls, "handle-ioctl", G_CALLBACK(on_ioctl), d);
	if (!umockdev_testbed_attach_ioctl(d->tb, d->node, d->ioctls, NULL)) {
		g_object_unref(d->ioctls);
		d->ioctls = NULL;
	}
	*ret_udev = xasprintf(
	    "P: %s/host0/target0:0:0/0:0:0:0\nE: DEVTYPE=scsi_device\nE: SUBSYSTEM=scsi\n"
	    "A: vendor=RPI\nA: model=RP2\n\n"
	    "P: %s/host0/target0:0:0/0:0:0:0/block/%s\nE: DEVNAME=%s\nE: DEVTYPE=disk\n"
	    "E: SUBSYSTEM=block\nE: ID_BUS=usb\nE: ID_VENDOR_ID=2e8a\nE: ID_MODEL_ID=0003\n"
	    "E: ID_PART_TABLE_TYPE=dos\nE: DEVLINKS=/dev/disk/by-label/RPI-RP2\n"
	    "A: dev=%u:%u\nA: size=%zu\nA: removable=1\nA: ro=0\n\n",
	    usb_iface_path, usb_iface_path, d->node + 5, d->node,
	    letter < 15 ? 8u : 65u + (letter + 1) / 16 - 1, (letter + 1) % 16 * 16, sectors);
	b->drive = d;
	return 0;
}

void *
sim_drive_free(struct sim_drive *d)
{
	if (!d)
		return NULL;
	if (d->ioctls) {
		(void)umockdev_testbed_detach_ioctl(d->tb, d->node, NULL);
		g_object_unref(d->ioctls);
	}
	if (d->file)
		unlink(d->file); /* the card's link; the RPI-RP2 image */
	free(d->file);
	free(d->card_path);
	free(d->node);
	free(d->got);
	free(d->seen);
	free(d);
	return NULL;
}

unsigned
sim_drive_host(const struct sim_drive *d)
{
	return d ? d->host : 0;
}

const char *
sim_drive_node(const struct sim_drive *d)
{
	return d ? d->node : NULL;
}

const char *
sim_drive_file(const struct sim_drive *d)
{
	return d ? d->file : NULL;
}

/* FNV-1a of a sector, never 0 (0 marks a sector not looked at yet). */
static uint32_t
checksum(const uint8_t *p)
{
	uint32_t h = 2166136261u;

	for (size_t i = 0; i < SECTOR; i++)
		h = (h ^ p[i]) * 16777619u;
	return h ? h : 1;
}

/* One sector of the drive: a UF2 block for the RP2040's flash is programmed (its 4 KiB
 * sector erased the first time), anything else ignored. */
static void
take_block(struct sim_board *b, struct sim_drive *d, const uint8_t *blk)
{
	struct flash *f = b->flash;
	uint32_t flags = le32(blk + 8), addr = le32(blk + 12), size = le32(blk + 16);
	uint32_t no = le32(blk + 20), total = le32(blk + 24), family = le32(blk + 28), sector;

	if (le32(blk) != 0x0A324655u || le32(blk + 4) != 0x9E5D5157u ||
	    le32(blk + 508) != 0x0AB16F30u)
		return;
	if ((flags & 0x1u) || !(flags & 0x2000u) || family != FAMILY_RP2040 || size != 256 ||
	    addr % 256 || addr < f->base || addr - f->base > f->size - 256 || no >= total ||
	    total > f->size / 256)
		return;
	if (total != d->total) { /* another file: start counting (and erasing) again */
		free(d->got);
		d->got = xcalloc(total, 1);
		d->total = total;
		d->count = 0;
		memset(d->erased, 0, sizeof(d->erased));
	}
	if (d->got[no])
		return;
	sector = (addr - f->base) / 4096;
	if (!d->erased[sector]) {
		(void)flash_erase(f, f->base + sector * 4096, NULL);
		d->erased[sector] = 1;
	}
	if (!flash_equals(f, addr, blk + 32, 256))
		(void)flash_program(f, addr, blk + 32, 256, NULL);
	d->got[no] = 1;
	d->count++;
}

/* The node name of the n-th drive: sdb, sdc, ... sdz, sdaa, ...: a new name for every
 * enumeration, as the kernel gives (umockdev keeps /sys/block links of removed devices). */
static char *
node_name(unsigned letter)
{
	if (letter < 25)
		return xasprintf("/dev/sd%c", 'b' + (char)letter);
	return xasprintf("/dev/sd%c%c", 'a' + (char)((letter - 25) / 26 % 26),
			 'a' + (char)((letter - 25) % 26));
}

int
sim_drive_create_card(struct sim_board *b, unsigned letter, char **ret_udev,
		      const char *usb_iface_path)
{
	struct sim_drive *d = xnew(struct sim_drive);
	const char *root = b->sim->root;
	char *dir = xasprintf("%s/dev", root);
	struct stat st;

	d->card = true;
	d->host = letter + 1;
	d->node = node_name(letter);
	d->file = xasprintf("%s%s", root, d->node);
	d->card_path = xstrdup(b->sdcard_path);
	(void)mkdir(dir, 0755);
	free(dir);
	unlink(d->file);
	/* the sticky bit on the image makes umockdev's stat() of the link report a block device
	 * (research umockdev.md §4) */
	if (stat(b->sdcard_path, &st) == 0)
		d->bytes = (uint64_t)st.st_size;
	if (stat(b->sdcard_path, &st) < 0 || chmod(b->sdcard_path, st.st_mode | S_ISVTX) < 0 ||
	    symlink(b->sdcard_path, d->file) < 0) {
		fprintf(stderr, "sim: card drive %s: %s\n", d->node, strerror(errno));
		sim_drive_free(d);
		return -EIO;
	}
	/* no ioctl handler: a reader sizes the image (and so the medium) by fstat(), which
	 * umockdev passes through; and umockdev keys handlers by the link's target */
	d->tb = b->sim->tb;
	/* framework-arduino-lpc176x's SCSI INQUIRY: "NXP", "LPC17xx" (protocols.md §5.1) */
	*ret_udev = xasprintf(
	    "P: %s/host%u/target%u:0:0/%u:0:0:0\nE: DEVTYPE=scsi_device\nE: SUBSYSTEM=scsi\n"
	    "A: vendor=NXP\nA: model=LPC17xx\n\n"
	    "P: %s/host%u/target%u:0:0/%u:0:0:0/block/%s\nE: DEVNAME=%s\nE: DEVTYPE=disk\n"
	    "E: SUBSYSTEM=block\nE: ID_BUS=usb\nE: ID_VENDOR_ID=1d50\nE: ID_MODEL_ID=6029\n"
	    "A: dev=%u:%u\nA: size=%llu\nA: removable=1\nA: ro=0\n\n",
	    usb_iface_path, d->host, d->host, d->host, usb_iface_path, d->host, d->host, d->host,
	    d->node + 5, d->node, letter < 15 ? 8u : 65u + (letter + 1) / 16 - 1,
	    (letter + 1) % 16 * 16, (unsigned long long)(d->bytes / SECTOR));
	b->drive = d;
	return 0;
}

/* The node points at the card image, or at an empty file while Marlin holds the card: what a
 * reader then finds is a device of 0 bytes, as the kernel reports a removable disk without
 * its medium (/sys/block/sdX/size 0). The link is swapped atomically. */
void
sim_drive_set_medium(struct sim_drive *d, bool present)
{
	char *tmp, *empty, *dir;
	int fd;

	if (!d || !d->card)
		return;
	dir = xasprintf("%s", d->file);
	*strrchr(dir, '/') = 0;
	empty = xasprintf("%s/.no-medium", dir);
	tmp = xasprintf("%s.new", d->file);
	fd = open(empty, O_WRONLY | O_CREAT | O_CLOEXEC, 01666);
	if (fd >= 0) {
		(void)fchmod(fd, 01666);
		close(fd);
	}
	unlink(tmp);
	if (symlink(present ? d->card_path : empty, tmp) < 0 || rename(tmp, d->file) < 0)
		fprintf(stderr, "sim: %s: %s\n", d->file, strerror(errno));
	free(tmp);
	free(empty);
	free(dir);
}

bool
sim_drive_poll(struct sim_board *b)
{
	struct sim_drive *d = b->drive;
	uint8_t blk[SECTOR];
	struct stat st;
	int64_t ns;
	off_t pos = 0, end;
	int fd;

	if (!d || d->card || stat(d->file, &st) < 0)
		return false;
	ns = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
	if (ns == d->seen_ns)
		return false;
	d->seen_ns = ns;
	fd = open(d->file, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return false;
	/* only the parts of the sparse image that hold data */
	while ((pos = lseek(fd, pos, SEEK_DATA)) >= 0) {
		end = lseek(fd, pos, SEEK_HOLE);
		if (end < 0)
			break;
		for (pos -= pos % SECTOR; pos < end; pos += SECTOR) {
			size_t i = (size_t)pos / SECTOR;
			uint32_t sum;

			if (pread(fd, blk, SECTOR, pos) != SECTOR)
				continue;
			/* the ROM sees each sector write once: take only what changed */
			sum = checksum(blk);
			if (sum == d->seen[i])
				continue;
			d->seen[i] = sum;
			take_block(b, d, blk);
		}
	}
	close(fd);
	return d->total && d->count == d->total;
}
