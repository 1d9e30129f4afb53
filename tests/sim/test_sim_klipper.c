/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The SD-card path's foundation end to end: the worker-side Klipper client (flash/klipper)
 * and SD blockdev (flash/sdcard) against the simulated Klipper application and its SD card
 * (sim_klipper.c, sdcard.c), proven with the real tools: mkfs.fat makes the card, mtools
 * put a file on it that the blockdev must read back byte for byte, and sectors of another
 * FAT image written through the blockdev must give a volume fsck.fat finds clean and from
 * which mcopy reads the file back identical. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "catalog.h"
#include "flash/klipper.h"
#include "flash/sdcard.h"
#include "harness.h"
#include "proto/blockdev.h"
#include "sim.h"
#include "util.h"

static char tmpdir[] = "/tmp/skrsim-klipper-XXXXXX";

static char *
path(const char *name)
{
	return xasprintf("%s/%s", tmpdir, name);
}

/* A FAT image of `kib` KiB with one file of `len` pseudo-random bytes (seed) as NAME. */
static int
make_fat(struct sim *s, const char *img, unsigned kib, const char *fat, const char *name,
	 size_t len, unsigned seed, uint8_t **ret_data)
{
	char *src = path("src.bin"), *cmd;
	uint8_t *d = xmalloc(len);
	int r;

	for (size_t i = 0; i < len; i++) {
		seed = seed * 1103515245u + 12345u;
		d[i] = (uint8_t)(seed >> 16);
	}
	r = write_file_atomic(src, d, len, 0644);
	cmd = xasprintf("rm -f %s && mkfs.fat -C %s %s %u >/dev/null && mcopy -i %s %s ::%s", img,
			fat, img, kib, img, src, name);
	if (r == 0)
		r = sim_sh(s, "%s", cmd);
	free(cmd);
	free(src);
	*ret_data = d;
	return r;
}

static struct sim_board *
add_board(struct sim *s, const char *model, const char *port, const char *version)
{
	struct sim_board_spec spec = {
	    .model = model, .port = port, .mode = SIM_MODE_KLIPPER_APP, .app_version = version};
	struct sim_board *b = sim_board_add(s, &spec);

	CHECK(b != NULL);
	if (b)
		CHECK_EQ_INT(sim_board_wait_mode(b, SIM_MODE_KLIPPER_APP, 5000), 0);
	return b;
}

static struct klipper_spi_bus
bus_of(const char *model)
{
	const struct catalog_sd_bus *sd = catalog_sd_bus(catalog_find(model));
	struct klipper_spi_bus bus = {0};

	CHECK(sd != NULL);
	if (sd) {
		bus.spi_bus = sd->spi_bus;
		memcpy(bus.sw_pins, sd->sw_pins, sizeof(bus.sw_pins));
		bus.cs_pin = sd->cs_pin;
	}
	bus.rate = 4000000;
	return bus;
}

/* Connect, configure, open the card: 0 or the first error. */
static int
connect_card(struct sim_board *b, const char *model, struct klipper_client **kc, struct sdcard **sd)
{
	char err[512] = "";
	struct klipper_spi_bus bus = bus_of(model);
	int r = klipper_client_open(sim_board_tty(b), NULL, kc, err, sizeof(err));

	*sd = NULL;
	if (r < 0) {
		fprintf(stderr, "open: %s\n", err);
		return r;
	}
	r = klipper_client_spi_setup(*kc, &bus);
	if (r < 0) {
		fprintf(stderr, "spi setup: %s\n", klipper_client_error(*kc));
		return r;
	}
	r = sdcard_open(*kc, sd);
	if (r < 0)
		fprintf(stderr, "sdcard: %s\n", sdcard_error(*sd));
	return r;
}

static void
disconnect(struct klipper_client *kc, struct sdcard *sd)
{
	if (sd)
		sdcard_close(sd);
	klipper_client_close(kc);
}

/* mtools put a file on the card; the blockdev reads every sector byte-exact and the file's
 * bytes are in what it read. */
static void
test_read_fat16_sdsc(struct sim *s)
{
	char *img = path("card16.img");
	uint8_t *file = NULL, *got, *want;
	struct sim_board *b;
	struct klipper_client *kc = NULL;
	struct sdcard *sd = NULL;
	struct sdcard_info info;
	struct blockdev bd;
	const size_t n = 2048, flen = 100 * 1024;
	int fd;

	CHECK_EQ_INT(make_fat(s, img, 16384, "-F 16", "HELLO.BIN", flen, 7, &file), 0);
	b = add_board(s, "skr-pro", "1-1", NULL);
	if (!b)
		goto out;
	CHECK(!sim_board_sdcard_spi_mode(b));
	CHECK_EQ_INT(sim_board_set_sdcard(b, img, false), 0);
	CHECK_EQ_INT(connect_card(b, "skr-pro", &kc, &sd), 0);
	if (!sd || !kc)
		goto out;
	CHECK_STREQ(klipper_client_mcu(kc), "stm32f407xx");
	CHECK(strstr(klipper_client_raw_dict(kc, NULL), "\"app\": \"Klipper\"") != NULL);
	CHECK(sim_board_sdcard_spi_mode(b));
	sdcard_get_info(sd, &info);
	CHECK_EQ_INT(info.sectors, 32768);
	CHECK(!info.sdhc);
	CHECK_EQ_INT(info.version, 2);
	sdcard_blockdev(sd, &bd);
	CHECK_EQ_INT(bd.sectors, 32768);
	got = xmalloc(n * 512);
	want = xmalloc(n * 512);
	{
		struct klipper_client_stats a, z;
		uint64_t t0 = now_monotonic_usec();

		klipper_client_stats(kc, &a);
		CHECK_EQ_INT(bd.read(bd.ctx, 0, (uint32_t)n, got), 0);
		klipper_client_stats(kc, &z);
		/* one spi_transfer per block, a whole sector in 11 of them (Klipper's
		 * spi_flash.py needs about 20 transfers, each waited for) */
		fprintf(stderr,
			"read %zu sectors: %.2f blocks per sector, %.1f ms (no device time)\n", n,
			(double)(z.blocks_sent - a.blocks_sent) / (double)n,
			(double)(now_monotonic_usec() - t0) / 1000.0);
		/* (a loaded machine may add timer retransmissions: not counted here; the
		 * sector after the last is read ahead) */
		CHECK(z.blocks_sent - a.blocks_sent <= 11 * (n + 1));
	}
	fd = open(img, O_RDONLY);
	CHECK_EQ_INT(pread(fd, want, n * 512, 0), (long long)(n * 512));
	close(fd);
	CHECK(memcmp(got, want, n * 512) == 0);
	CHECK(memmem(got, n * 512, file, flen) != NULL);
	/* the last sector, and past the end */
	CHECK_EQ_INT(bd.read(bd.ctx, 32767, 1, got), 0);
	CHECK(bd.read(bd.ctx, 32767, 2, got) < 0);
	free(got);
	free(want);
out:
	disconnect(kc, sd);
	free(file);
	free(img);
}

/* Sectors of a FAT32 image written through the blockdev onto a blank card: fsck.fat finds
 * the volume clean and mcopy reads the file back identical. */
static void
test_write_fat_image(struct sim *s)
{
	char *src = path("src32.img"), *card = path("card-w.img"), *out = path("out.bin"), *cmd;
	uint8_t *file = NULL, *sec = NULL, *back = NULL;
	struct sim_board *b;
	struct klipper_client *kc = NULL;
	struct sdcard *sd = NULL;
	struct blockdev bd;
	size_t blen = 0, flen = 64 * 1024;
	uint64_t used = 0;
	int fd;

	/* FAT32 needs 65525 clusters: 33 MiB with 512-byte clusters */
	CHECK_EQ_INT(make_fat(s, src, 33 * 1024, "-F 32 -s 1", "FIRMWARE.BIN", flen, 99, &file), 0);
	/* a blank (zeroed, sparse) card of the same size; mkfs.fat images are sparse too */
	cmd = xasprintf("rm -f %s && truncate -s 33M %s", card, card);
	CHECK_EQ_INT(sim_sh(s, "%s", cmd), 0);
	free(cmd);
	b = add_board(s, "skr-1.4-turbo", "1-2", NULL);
	if (!b)
		goto out;
	CHECK_EQ_INT(sim_board_set_sdcard(b, card, true), 0);
	CHECK_EQ_INT(connect_card(b, "skr-1.4-turbo", &kc, &sd), 0);
	if (!sd || !kc)
		goto out;
	sdcard_blockdev(sd, &bd);
	CHECK_EQ_INT(bd.sectors, 33 * 2048);
	fd = open(src, O_RDONLY);
	sec = xmalloc(64 * 512);
	/* write every run of 64 sectors that holds data (the rest of a fresh card is zero) */
	for (uint64_t lba = 0; lba < bd.sectors; lba += 64) {
		bool nonzero = false;

		CHECK_EQ_INT(pread(fd, sec, 64 * 512, (off_t)(lba * 512)), 64 * 512);
		for (size_t i = 0; i < 64 * 512 && !nonzero; i++)
			nonzero = sec[i] != 0;
		if (!nonzero)
			continue;
		CHECK_EQ_INT(bd.write(bd.ctx, lba, 64, sec), 0);
		used += 64;
	}
	close(fd);
	CHECK(used > 0);
	cmd = xasprintf("fsck.fat -n %s && mdir -i %s ::FIRMWARE.BIN && rm -f %s && "
			"mcopy -i %s ::FIRMWARE.BIN %s",
			card, card, out, card, out);
	CHECK_EQ_INT(sim_sh(s, "%s", cmd), 0);
	free(cmd);
	CHECK_EQ_INT(read_file(out, 1 << 20, &back, &blen), 0);
	CHECK_EQ_INT(blen, flen);
	CHECK(back && memcmp(back, file, flen) == 0);
	/* and the card reads back what was written, through the same path */
	{
		uint8_t one[512], want[512];

		fd = open(src, O_RDONLY);
		CHECK_EQ_INT(pread(fd, want, 512, 0), 512);
		close(fd);
		CHECK_EQ_INT(bd.read(bd.ctx, 0, 1, one), 0);
		CHECK(memcmp(one, want, 512) == 0);
	}
out:
	disconnect(kc, sd);
	free(file);
	free(sec);
	free(back);
	free(src);
	free(card);
	free(out);
}

/* Lost blocks (host -> MCU) are retransmitted: on NAK and on timeout. */
static void
test_retransmit(struct sim *s)
{
	char *img = path("card-rt.img");
	uint8_t *file = NULL, *got = xmalloc(64 * 512), *want = xmalloc(64 * 512);
	struct sim_board *b = add_board(s, "octopus-f446", "1-3", NULL);
	struct klipper_client *kc = NULL;
	struct sdcard *sd = NULL;
	struct klipper_client_stats st;
	struct sim_klipper_stats ks;
	struct sim_fault fault = {.kind = SIM_FAULT_DROP_FRAME, .at = 40, .count = 1};
	struct blockdev bd;
	int fd;

	CHECK_EQ_INT(make_fat(s, img, 8192, "-F 12", "A.BIN", 4096, 3, &file), 0);
	if (!b)
		goto out;
	CHECK_EQ_INT(sim_board_set_sdcard(b, img, false), 0);
	CHECK_EQ_INT(connect_card(b, "octopus-f446", &kc, &sd), 0);
	if (!sd || !kc)
		goto out;
	sdcard_blockdev(sd, &bd);
	sim_board_set_fault(b, &fault);
	CHECK_EQ_INT(bd.read(bd.ctx, 0, 64, got), 0);
	fd = open(img, O_RDONLY);
	CHECK_EQ_INT(pread(fd, want, 64 * 512, 0), 64 * 512);
	close(fd);
	CHECK(memcmp(got, want, 64 * 512) == 0);
	klipper_client_stats(kc, &st);
	sim_board_klipper_stats(b, &ks);
	/* one lost block: the blocks behind it (up to 12 in flight: a USB build declares no
	 * RECEIVE_WINDOW) are NAKed and the client resends at once */
	CHECK_EQ_INT(ks.dropped, 1);
	CHECK(ks.naks > 0);
	CHECK(st.retransmits >= 1);
	CHECK(st.naks > 0);
	/* every block in flight lost: nothing comes back, only the timer resends */
	fault.at = 10;
	fault.count = 3;
	sim_board_set_fault(b, &fault);
	{
		uint64_t before = st.retransmits;

		CHECK_EQ_INT(bd.read(bd.ctx, 100, 4, got), 0);
		fd = open(img, O_RDONLY);
		CHECK_EQ_INT(pread(fd, want, 4 * 512, 100 * 512), 4 * 512);
		close(fd);
		CHECK(memcmp(got, want, 4 * 512) == 0);
		klipper_client_stats(kc, &st);
		sim_board_klipper_stats(b, &ks);
		CHECK_EQ_INT(ks.dropped, 4);
		CHECK(st.retransmits >= before + 3);
	}
out:
	disconnect(kc, sd);
	free(file);
	free(got);
	free(want);
	free(img);
}

/* Connect with client options (connect_card uses the defaults). */
static int
connect_opts(struct sim_board *b, const char *model, const struct klipper_client_opts *o,
	     struct klipper_client **kc, struct sdcard **sd)
{
	char err[512] = "";
	struct klipper_spi_bus bus = bus_of(model);
	int r = klipper_client_open(sim_board_tty(b), o, kc, err, sizeof(err));

	*sd = NULL;
	if (r < 0) {
		fprintf(stderr, "open: %s\n", err);
		return r;
	}
	r = klipper_client_spi_setup(*kc, &bus);
	if (r == 0)
		r = sdcard_open(*kc, sd);
	if (r < 0)
		fprintf(stderr, "setup: %s %s\n", klipper_client_error(*kc),
			*sd ? sdcard_error(*sd) : "");
	return r;
}

/* Read n sectors at lba through bd and compare them with the image file. */
static void
check_read(const struct blockdev *bd, const char *img, uint64_t lba, uint32_t n)
{
	uint8_t *got = xmalloc((size_t)n * 512), *want = xmalloc((size_t)n * 512);
	int fd = open(img, O_RDONLY);

	CHECK_EQ_INT(bd->read(bd->ctx, lba, n, got), 0);
	CHECK_EQ_INT(pread(fd, want, (size_t)n * 512, (off_t)(lba * 512)), (long long)n * 512);
	close(fd);
	CHECK(memcmp(got, want, (size_t)n * 512) == 0);
	free(got);
	free(want);
}

/* Write n pattern sectors at lba through bd; the image file holds them afterwards. */
static void
check_write(const struct blockdev *bd, const char *img, uint64_t lba, uint32_t n, unsigned seed)
{
	uint8_t *d = xmalloc((size_t)n * 512), *back = xmalloc((size_t)n * 512);
	int fd;

	for (size_t i = 0; i < (size_t)n * 512; i++)
		d[i] = (uint8_t)((i * 131u + seed) >> 3);
	CHECK_EQ_INT(bd->write(bd->ctx, lba, n, d), 0);
	fd = open(img, O_RDONLY);
	CHECK_EQ_INT(pread(fd, back, (size_t)n * 512, (off_t)(lba * 512)), (long long)n * 512);
	close(fd);
	CHECK(memcmp(back, d, (size_t)n * 512) == 0);
	free(d);
	free(back);
}

/* Answers lost on a board at its modelled speed: each one noticed, its sector redone.
 * -1 when the board or its card could not be reached (checked). */
static int
timed_lost_answers(struct sim *s, struct sim_board_spec *spec, const char *img)
{
	struct sim_board *b = sim_board_add(s, spec);
	struct klipper_client *kc = NULL;
	struct sdcard *sd = NULL;
	struct klipper_client_stats st;
	struct sim_klipper_stats ks;
	struct sdcard_stats ss;
	struct sim_fault lose = {.kind = SIM_FAULT_CORRUPT_FRAME, .at = 30, .count = 3};
	struct blockdev bd;
	uint64_t lost0;

	CHECK(b != NULL);
	if (!b)
		return -1;
	CHECK_EQ_INT(sim_board_wait_mode(b, SIM_MODE_KLIPPER_APP, 5000), 0);
	CHECK_EQ_INT(sim_board_set_sdcard(b, img, false), 0);
	CHECK_EQ_INT(connect_card(b, "skr-1.4-turbo", &kc, &sd), 0);
	if (!sd || !kc) {
		disconnect(kc, sd);
		return -1;
	}
	sdcard_blockdev(sd, &bd);
	check_read(&bd, img, 0, 96);
	check_write(&bd, img, 20000, 24, 1);
	check_read(&bd, img, 19990, 40);
	klipper_client_stats(kc, &st);
	sim_board_klipper_stats(b, &ks);
	/* at most three answers owed: the MCU drops one only in the model's worst case (an
	 * ack held a frame in the endpoint while answers pile up behind it), and then the
	 * client noticed (acks can be dropped too: they are not counted as lost answers) */
	CHECK(st.responses_lost <= ks.tx_dropped);
	fprintf(stderr, "timed: %u dropped by the MCU, %llu noticed\n", ks.tx_dropped,
		(unsigned long long)st.responses_lost);
	lost0 = st.responses_lost;
	/* three data answers lost: each one noticed, its sector read again */
	sim_board_set_fault(b, &lose);
	check_read(&bd, img, 100, 32);
	klipper_client_stats(kc, &st);
	sdcard_stats(sd, &ss);
	CHECK(st.responses_lost >= lost0 + 3);
	CHECK(ss.retries >= 1);
	/* and during writes (the data response, a poll or an R1): the sector is written again */
	lose.at = 40;
	lose.count = 2;
	sim_board_set_fault(b, &lose);
	check_write(&bd, img, 20100, 16, 3);
	klipper_client_stats(kc, &st);
	CHECK(st.responses_lost >= lost0 + 5);
	disconnect(kc, sd);
	return 0;
}

/* A greedy host (12 answers owed) and a stalled IN pipe: the MCU drops answers, the client
 * notices, and a read is redone or given up, never another sector's bytes. */
static void
timed_greedy_stall(struct sim *s, struct sim_board_spec *spec, const char *img)
{
	uint8_t *got = xmalloc(64 * 512), *want = xmalloc(64 * 512);
	struct sim_board *o;
	struct klipper_client *kc = NULL;
	struct sdcard *sd = NULL;
	struct klipper_client_opts greedy = {.max_replies = 12};
	struct klipper_client_stats st;
	struct sim_klipper_stats ks;
	struct sim_fault stall = {.kind = SIM_FAULT_STALL, .at = 30, .count = 20};
	struct blockdev bd;
	int fd, r;

	spec->port = "8-7"; /* by-path has no bus number: not 1-1..1-5 */
	o = sim_board_add(s, spec);
	CHECK(o != NULL);
	if (!o)
		goto out;
	CHECK_EQ_INT(sim_board_wait_mode(o, SIM_MODE_KLIPPER_APP, 5000), 0);
	CHECK_EQ_INT(sim_board_set_sdcard(o, img, false), 0);
	CHECK_EQ_INT(connect_opts(o, "skr-1.4-turbo", &greedy, &kc, &sd), 0);
	if (!sd || !kc)
		goto out;
	sdcard_blockdev(sd, &bd);
	sim_board_set_fault(o, &stall);
	r = bd.read(bd.ctx, 0, 64, got);
	fd = open(img, O_RDONLY);
	CHECK_EQ_INT(pread(fd, want, 64 * 512, 0), 64 * 512);
	close(fd);
	/* redone until it worked, or given up: never another sector's bytes */
	CHECK(r == 0 || r == -ENOMSG);
	CHECK(r != 0 || memcmp(got, want, 64 * 512) == 0);
	klipper_client_stats(kc, &st);
	sim_board_klipper_stats(o, &ks);
	fprintf(stderr,
		"greedy host, stalled IN pipe: read %d, %u responses dropped by the MCU, "
		"%llu noticed\n",
		r, ks.tx_dropped, (unsigned long long)st.responses_lost);
	CHECK(ks.tx_dropped > 0);
	CHECK(st.responses_lost > 0);
	CHECK(st.responses_lost <= ks.tx_dropped);
out:
	disconnect(kc, sd);
	free(got);
	free(want);
}

/* With the timing model (speed 1: USB frames, the MCU's 192-byte transmit buffer, SPI at the
 * configured clock, the card's busy and access times) reads and writes are exact. Responses
 * lost on the way are noticed (the block's ack comes without them) and the sector is redone.
 * A host that owes the MCU more answers than its transmit buffer holds, while the USB host
 * stops reading for 20 ms, makes the MCU drop responses as Klipper's usb_cdc.c does: the
 * client notices them and never takes one answer for another. */
static void
test_timed(struct sim *s)
{
	char *img = path("card-t.img");
	uint8_t *file = NULL;
	struct sim_board_spec spec = {
	    .model = "skr-1.4-turbo", .port = "8-6", .mode = SIM_MODE_KLIPPER_APP, .speed = 1.0};

	CHECK_EQ_INT(make_fat(s, img, 16384, "-F 16", "T.BIN", 40000, 11, &file), 0);
	if (timed_lost_answers(s, &spec, img) == 0)
		timed_greedy_stall(s, &spec, img);
	free(file);
	free(img);
}

/* Older firmware (v0.10 command names), a wrong bus, no card, reset and the SPI latch. */
static void
test_variants(struct sim *s)
{
	char *img = path("card-v.img");
	uint8_t *file = NULL, sec[512];
	struct sim_board *b = add_board(s, "skr-mini-e3-v2-f103rc", "1-4", "v0.10.0-old");
	struct sim_board *o = add_board(s, "octopus-pro-f429", "1-5", NULL);
	struct klipper_client *kc = NULL;
	struct sdcard *sd = NULL;
	unsigned enums;

	CHECK_EQ_INT(make_fat(s, img, 8192, "-F 12", "B.BIN", 1000, 5, &file), 0);
	if (!b || !o)
		goto out;
	CHECK_EQ_INT(sim_board_set_sdcard(b, img, false), 0);
	CHECK_EQ_INT(connect_card(b, "skr-mini-e3-v2-f103rc", &kc, &sd), 0);
	CHECK(kc && klipper_dict_by_name(klipper_client_dict(kc), "spi_set_sw_bus") == NULL);
	if (sd) {
		struct blockdev bd;

		sdcard_blockdev(sd, &bd);
		CHECK_EQ_INT(bd.read(bd.ctx, 0, 1, sec), 0);
		CHECK(sec[510] == 0x55 && sec[511] == 0xaa);
	}
	/* reset: the MCU drops off and comes back (it enumerates again; it may be back before
	 * we look); the card stays in SPI mode */
	enums = sim_board_enumerations(b);
	CHECK(kc && klipper_client_reset(kc) == 0);
	disconnect(kc, sd);
	kc = NULL;
	sd = NULL;
	CHECK_EQ_INT(sim_board_wait_enumerations(b, enums + 1, 10000), 0);
	CHECK_EQ_INT(sim_board_wait_mode(b, SIM_MODE_KLIPPER_APP, 10000), 0);
	CHECK(sim_board_sdcard_spi_mode(b));
	enums = sim_board_enumerations(b);
	CHECK_EQ_INT(sim_board_power_cycle(b), 0);
	CHECK_EQ_INT(sim_board_wait_enumerations(b, enums + 1, 10000), 0);
	CHECK_EQ_INT(sim_board_wait_mode(b, SIM_MODE_KLIPPER_APP, 10000), 0);
	CHECK(!sim_board_sdcard_spi_mode(b));

	/* the same card in an Octopus configured with the SKR Pro's pins: no card answers */
	CHECK_EQ_INT(sim_board_set_sdcard(o, img, false), 0);
	CHECK_EQ_INT(connect_card(o, "skr-pro", &kc, &sd), -ENOMEDIUM);
	CHECK(sd && strstr(sdcard_error(sd), "card inserted") != NULL);
	CHECK(!sim_board_sdcard_spi_mode(o));
	disconnect(kc, sd);
	kc = NULL;
	sd = NULL;
	/* configured once already: spi_setup asks for a reset */
	{
		char err[256];
		struct klipper_spi_bus bus = bus_of("octopus-pro-f429");

		CHECK_EQ_INT(klipper_client_open(sim_board_tty(o), NULL, &kc, err, sizeof(err)), 0);
		if (kc)
			CHECK_EQ_INT(klipper_client_spi_setup(kc, &bus), -EALREADY);
		klipper_client_close(kc);
		kc = NULL;
	}
	/* no card at all */
	CHECK_EQ_INT(sim_board_set_sdcard(o, NULL, false), 0);
	enums = sim_board_enumerations(o);
	sim_board_reset(o);
	CHECK_EQ_INT(sim_board_wait_enumerations(o, enums + 1, 10000), 0);
	CHECK_EQ_INT(sim_board_wait_mode(o, SIM_MODE_KLIPPER_APP, 10000), 0);
	CHECK_EQ_INT(connect_card(o, "octopus-pro-f429", &kc, &sd), -ENOMEDIUM);
out:
	disconnect(kc, sd);
	free(file);
	free(img);
}

int
main(int argc, char **argv)
{
	struct sim *s;
	char *cmd;

	sim_init(argc, argv);
	if (!mkdtemp(tmpdir)) {
		perror("mkdtemp");
		return 1;
	}
	s = sim_new();
	test_read_fat16_sdsc(s);
	test_write_fat_image(s);
	test_retransmit(s);
	test_variants(s);
	test_timed(s);
	sim_free(s);
	cmd = xasprintf("rm -rf %s", tmpdir);
	if (system(cmd) != 0)
		fprintf(stderr, "cannot remove %s\n", tmpdir);
	free(cmd);
	TEST_DONE();
}
