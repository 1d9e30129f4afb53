/* SPDX-License-Identifier: GPL-2.0-or-later */
/* test_uf2drive: NEW.UF2 on a drive laid out like the RP2040 boot ROM's RPI-RP2 volume
 * (pico-bootrom usb_device/virtual_disk.c: an MBR with one FAT16 LBA partition at sector 1,
 * 128 MiB, 4 KiB clusters, 2 FATs, 512 root entries, a 64-byte boot sector without the
 * 0x55AA signature, the label, INDEX.HTM in cluster 2 and INFO_UF2.TXT in cluster 3). The
 * device model here sees what the boot ROM sees: 512-byte sector writes; it counts the UF2
 * blocks among them. fsck.fat and mtools then check the volume and read the file back. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <sys/wait.h>
#include <unistd.h>

#include "flash/blockfile.h"
#include "flash/uf2drive.h"
#include "harness.h"
#include "util.h"

#define VOL_SECTORS 262143u /* 128 MiB less the MBR */
#define FAT_SECTORS 129u    /* 2 * (32768 + 511) / 512, as the boot ROM computes it */

static char tmp[128];

__attribute__((format(printf, 1, 2))) static int
sh(const char *fmt, ...)
{
	char cmd[1024];
	va_list ap;
	int st;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	st = system(cmd);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void
put16(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static void
put32(uint8_t *p, uint32_t v)
{
	put16(p, v);
	put16(p + 2, v >> 16);
}

static const char index_htm[] = "<html><head><meta http-equiv=\"refresh\" content=\"0;URL="
				"'https://raspberrypi.com/device/RP2?version=E0C9125B0D9B'\"/>"
				"</head><body>Redirecting</body></html>\n";
static const char info_txt[] = "UF2 Bootloader v1.0\nModel: Raspberry Pi RP2\n"
			       "Board-ID: RPI-RP2\n";

static void
dirent(uint8_t *e, const char *name, uint8_t attr, uint32_t clus, uint32_t size)
{
	memcpy(e, name, 11);
	e[11] = attr;
	put16(e + 22, (16u << 11) | (20u << 5) | 25u); /* 2008-09-05 16:20:50 */
	put16(e + 24, (28u << 9) | (9u << 5) | 5u);
	put16(e + 26, clus);
	put32(e + 28, size);
}

/* The volume the boot ROM shows, as sectors in a sparse file. */
static int
make_rpi_rp2(const char *path)
{
	uint8_t s[512];
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
	uint32_t root = 1 + 1 + 2 * FAT_SECTORS, data = root + 32;
	int ok = fd >= 0 && ftruncate(fd, (off_t)(VOL_SECTORS + 1) * 512) == 0;

#define PUT(lba) (ok = ok && pwrite(fd, s, 512, (off_t)(lba)*512) == 512)
	memset(s, 0, sizeof(s)); /* MBR: one FAT16 LBA partition from sector 1 */
	s[446 + 4] = 0x0e;
	put32(s + 446 + 8, 1);
	put32(s + 446 + 12, VOL_SECTORS);
	s[510] = 0x55;
	s[511] = 0xaa;
	PUT(0);
	memset(s, 0, sizeof(s)); /* boot sector: 64 bytes, then zeros (no signature) */
	memcpy(s, "\xeb\x3c\x90MSWIN4.1", 11);
	put16(s + 11, 512);
	s[13] = 8;
	put16(s + 14, 1);
	s[16] = 2;
	put16(s + 17, 512);
	s[21] = 0xf8;
	put16(s + 22, FAT_SECTORS);
	put16(s + 24, 1);
	put16(s + 26, 1);
	put32(s + 28, 1);
	put32(s + 32, VOL_SECTORS);
	s[38] = 0x29;
	memcpy(s + 43, "RPI-RP2    FAT16   \xeb\xfe", 21);
	PUT(1);
	memset(s, 0, sizeof(s)); /* both FATs: media, EOC, INDEX.HTM, INFO_UF2.TXT */
	memcpy(s, "\xf8\xff\xff\xff\xff\xff\xff\xff", 8);
	PUT(2);
	PUT(2 + FAT_SECTORS);
	memset(s, 0, sizeof(s));
	dirent(s, "RPI-RP2    ", 0x28, 0, 0);
	dirent(s + 32, "INDEX   HTM", 0x21, 2, (uint32_t)strlen(index_htm));
	dirent(s + 64, "INFO_UF2TXT", 0x21, 3, (uint32_t)strlen(info_txt));
	PUT(root);
	memset(s, 0, sizeof(s));
	memcpy(s, index_htm, strlen(index_htm));
	PUT(data);
	memset(s, 0, sizeof(s));
	memcpy(s, info_txt, strlen(info_txt));
	PUT(data + 8);
#undef PUT
	if (fd >= 0)
		close(fd);
	return ok ? 0 : -1;
}

/* The boot ROM's side: it looks at every written sector and programs UF2 blocks; after
 * the last one it reboots (GONE_AFTER_LAST: every later write fails). */
struct rom {
	struct blockdev dev;
	struct blockfile file;
	uint8_t seen[64];
	uint32_t blocks, num_blocks, writes_after_last;
	bool gone_after_last, gone;
};

static uint32_t
le32(const uint8_t *p)
{
	return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
	       ((uint32_t)p[3] << 24);
}

static int
rom_read(void *ctx, uint64_t lba, uint32_t count, uint8_t *buf)
{
	struct rom *r = ctx;

	return r->file.dev.read(r->file.dev.ctx, lba, count, buf);
}

static int
rom_write(void *ctx, uint64_t lba, uint32_t count, const uint8_t *buf)
{
	struct rom *r = ctx;

	if (r->gone)
		return -ENODEV;
	if (r->num_blocks && r->blocks == r->num_blocks)
		r->writes_after_last++;
	for (uint32_t i = 0; i < count; i++) {
		const uint8_t *b = buf + (size_t)i * 512;
		uint32_t no = le32(b + 20);

		if (le32(b) != 0x0a324655u || le32(b + 4) != 0x9e5d5157u ||
		    le32(b + 508) != 0x0ab16f30u || no >= 512)
			continue;
		r->num_blocks = le32(b + 24);
		if (!(r->seen[no / 8] & (1u << (no % 8)))) {
			r->seen[no / 8] |= (uint8_t)(1u << (no % 8));
			r->blocks++;
		}
	}
	if (r->gone_after_last && r->blocks == r->num_blocks && r->num_blocks) {
		int rc = r->file.dev.write(r->file.dev.ctx, lba, count, buf);

		r->gone = true;
		return rc;
	}
	return r->file.dev.write(r->file.dev.ctx, lba, count, buf);
}

static int
rom_flush(void *ctx)
{
	struct rom *r = ctx;

	return r->gone ? -ENODEV : 0;
}

static int
rom_open(struct rom *r, const char *path)
{
	memset(r, 0, sizeof(*r));
	if (blockfile_open(&r->file, path, true) < 0)
		return -1;
	r->dev = (struct blockdev){.ctx = r,
				   .sectors = r->file.dev.sectors,
				   .read = rom_read,
				   .write = rom_write,
				   .flush = rom_flush};
	return 0;
}

/* A Klipper-like UF2: N blocks of 256 bytes for the RP2040 family at 0x10000000. */
static uint8_t *
make_uf2(uint32_t n)
{
	uint8_t *u = calloc(n, 512);

	for (uint32_t i = 0; u && i < n; i++) {
		uint8_t *b = u + (size_t)i * 512;

		put32(b, 0x0a324655u);
		put32(b + 4, 0x9e5d5157u);
		put32(b + 8, 0x2000);
		put32(b + 12, 0x10000000u + i * 256);
		put32(b + 16, 256);
		put32(b + 20, i);
		put32(b + 24, n);
		put32(b + 28, 0xe48bff56u);
		for (unsigned j = 0; j < 256; j++)
			b[32 + j] = (uint8_t)(i * 7 + j);
		put32(b + 508, 0x0ab16f30u);
	}
	return u;
}

static bool
mtools_reads(const char *img, const uint8_t *want, size_t n)
{
	char out[200];
	uint8_t *d = NULL;
	size_t size = 0;
	bool ok;

	snprintf(out, sizeof(out), "%s/out.uf2", tmp);
	unlink(out);
	if (sh("MTOOLS_SKIP_CHECK=1 mcopy -n -i '%s@@512' ::NEW.UF2 %s", img, out) != 0)
		return false;
	if (read_file(out, 16u << 20, &d, &size) < 0)
		return false;
	ok = size == n && memcmp(d, want, n) == 0;
	free(d);
	return ok;
}

int
main(void)
{
	const char *t = getenv("TMPDIR");
	char img[200], msg[256];
	uint8_t *uf2 = make_uf2(300), junk[1024] = {0};
	struct rom r;

	snprintf(tmp, sizeof(tmp), "%s/test_uf2drive.XXXXXX", t && *t ? t : "/tmp");
	if (!mkdtemp(tmp) || !uf2)
		return 1;
	snprintf(img, sizeof(img), "%s/rpi-rp2.img", tmp);
	CHECK_EQ_INT(make_rpi_rp2(img), 0);
	/* the model volume is what the tools call FAT16 and clean */
	CHECK_EQ_INT(sh("dd if=%s of=%s/part.img bs=512 skip=1 conv=sparse status=none && "
			"fsck.fat -n %s/part.img",
			img, tmp, tmp),
		     0);
	CHECK_EQ_INT(sh("MTOOLS_SKIP_CHECK=1 mdir -i '%s@@512' :: | grep -q INFO_UF2", img), 0);

	/* the whole file: every block reaches the ROM, the volume stays clean */
	CHECK_EQ_INT(rom_open(&r, img), 0);
	CHECK_EQ_INT(uf2drive_write(&r.dev, uf2, 300 * 512, msg, sizeof(msg)), 0);
	fprintf(stderr, "uf2: %s\n", msg);
	CHECK_EQ_INT(r.blocks, 300);
	CHECK_EQ_INT(r.num_blocks, 300);
	CHECK_EQ_INT(blockfile_close(&r.file), 0);
	CHECK_EQ_INT(sh("dd if=%s of=%s/part.img bs=512 skip=1 conv=sparse status=none && "
			"fsck.fat -n %s/part.img",
			img, tmp, tmp),
		     0);
	CHECK(mtools_reads(img, uf2, 300 * 512));

	/* the board reboots after the last block: the FAT and directory writes fail, the
	 * flash still succeeded (1) */
	CHECK_EQ_INT(make_rpi_rp2(img), 0);
	CHECK_EQ_INT(rom_open(&r, img), 0);
	r.gone_after_last = true;
	CHECK_EQ_INT(uf2drive_write(&r.dev, uf2, 300 * 512, msg, sizeof(msg)), 1);
	fprintf(stderr, "uf2, board rebooted: %s\n", msg);
	CHECK_EQ_INT(r.blocks, 300);
	CHECK(strstr(msg, "went away") != NULL);
	CHECK_EQ_INT(blockfile_close(&r.file), 0);

	/* refusals: not UF2, no INFO_UF2.TXT, and a drive that vanishes before the data */
	CHECK_EQ_INT(make_rpi_rp2(img), 0);
	CHECK_EQ_INT(uf2drive_write_path(img, junk, sizeof(junk), msg, sizeof(msg)), -EINVAL);
	CHECK(strstr(msg, "block 0") != NULL);
	CHECK_EQ_INT(uf2drive_write_path(img, uf2, 100, msg, sizeof(msg)), -EINVAL);
	CHECK_EQ_INT(uf2drive_write_path(img, uf2, 300 * 512, msg, sizeof(msg)), 0);
	CHECK(mtools_reads(img, uf2, 300 * 512));
	CHECK_EQ_INT(uf2drive_write_path(img, uf2, 10 * 512, msg, sizeof(msg)), 0);
	CHECK(mtools_reads(img, uf2, 10 * 512)); /* an older NEW.UF2 is replaced */
	CHECK_EQ_INT(
	    sh("truncate -s 8M %s/plain.img && mkfs.fat %s/plain.img >/dev/null", tmp, tmp), 0);
	snprintf(img, sizeof(img), "%s/plain.img", tmp);
	CHECK_EQ_INT(uf2drive_write_path(img, uf2, 300 * 512, msg, sizeof(msg)), -EMEDIUMTYPE);
	fprintf(stderr, "plain FAT drive: %s\n", msg);
	CHECK_EQ_INT(uf2drive_write_path("/nonexistent/drive", uf2, 512, msg, sizeof(msg)),
		     -ENOENT);
	free(uf2);
	sh("rm -rf %s", tmp);
	TEST_DONE();
}
