/* SPDX-License-Identifier: GPL-2.0-or-later */
/* skrbench: the measurements behind `make bench`, on simulated boards.
 *
 * The build machines are shared and noisy, so nothing here is a single absolute time: every
 * figure is a median over several runs, and every ratio compares runs taken side by side
 * (A B A B ...) in this one process. The board simulator (tests/sim) supplies the devices
 * and their datasheet timing model; the device bound - what a perfect host would need under
 * that model - is computed here from the same flash timing tables. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>

#include <json-c/json.h>

#include "catalog.h"
#include "flash/klipper.h"
#include "flash/sdcard.h"
#include "proto/dfu.h"
#include "proto/fat.h"
#include "dfuse.h"
#include "flash.h"
#include "proto/katapult.h"
#include "picoboot.h"
#include "sdcard.h"
#include "sim.h"
#include "sim_int.h"
#include "util.h"

#define MAX_RUNS 16
#define FRAME_MS 1.0
#define WIRE_BYTES_PER_MS 1216.0 /* full-speed bulk: 19 packets of 64 bytes per frame */
#define PICOBOOT_SECTOR_SIM 4096u

struct opts {
	const char *build;
	const char *out;
	const char *tmp;
	bool quick;
	unsigned reps;
};

static struct opts O;
static json_object *results;
static FILE *table;

/* ---- small helpers ---------------------------------------------------------------- */

static double
now_ms(void)
{
	return (double)now_monotonic_usec() / 1000.0;
}

static void
sleep_ms(double ms)
{
	struct timespec ts = {(time_t)(ms / 1000), (long)(fmod(ms, 1000.0) * 1e6)};

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static int
cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static double
median(const double *v, size_t n)
{
	double s[MAX_RUNS * 4];

	if (n == 0)
		return NAN;
	memcpy(s, v, n * sizeof(*v));
	qsort(s, n, sizeof(*s), cmp_double);
	return n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
}

/* Median of the per-pair ratios a[i] / b[i]: each pair ran back to back. */
static double
median_ratio(const double *a, const double *b, size_t n)
{
	double r[MAX_RUNS];

	for (size_t i = 0; i < n; i++)
		r[i] = a[i] / b[i];
	return median(r, n);
}

static void
put_num(json_object *o, const char *key, double v)
{
	json_object_object_add(o, key,
			       isfinite(v) ? json_object_new_double(round(v * 1000) / 1000) : NULL);
}

static json_object *
json_array_of(const double *v, size_t n)
{
	json_object *a = json_object_new_array();

	for (size_t i = 0; i < n; i++)
		json_object_array_add(a, json_object_new_double(round(v[i] * 1000) / 1000));
	return a;
}

static void
row(const char *what, const char *value, const char *target)
{
	fprintf(table, "  %-58s %18s  %s\n", what, value, target);
	fflush(table);
}

static void
rowf(const char *what, const char *target, const char *fmt, ...)
{
	char buf[64];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	row(what, buf, target);
}

static const char *
verdict(double v, double limit)
{
	return !isfinite(v) ? "(no data)" : v <= limit ? "met" : "MISSED";
}

static char *
write_tmp(const char *name, const uint8_t *data, size_t len)
{
	char *path = xasprintf("%s/%s", O.tmp, name);

	if (write_file_atomic(path, data, len, 0644) < 0) {
		fprintf(stderr, "skrbench: cannot write %s\n", path);
		exit(1);
	}
	return path;
}

/* The board's flash gets `data` at `addr`, the rest of the range it covers stays. */
static void
load_flash(struct sim_board *b, uint32_t addr, const uint8_t *data, size_t len)
{
	if (flash_load(sim_board_flash(b), addr, data, len) < 0) {
		fprintf(stderr, "skrbench: image does not fit the flash\n");
		exit(1);
	}
}

static struct dfuse_dev *
board_dfuse(struct sim_board *b)
{
	struct dfuse_dev *d;

	pthread_mutex_lock(&b->sim->lock);
	d = b->dfuse;
	pthread_mutex_unlock(&b->sim->lock);
	return d;
}

static void
plug_and_wait(struct sim_board *b, enum sim_mode mode)
{
	if (sim_board_plug(b, mode) < 0 || sim_board_wait_mode(b, mode, 5000) < 0) {
		fprintf(stderr, "skrbench: board %s did not come up as %s\n", sim_board_port(b),
			sim_mode_to_string(mode));
		exit(1);
	}
}

/* ---- a sampler thread: when did the device see the event we wait for --------------- */

enum watch_kind {
	WATCH_DFU_LEFT,	       /* DfuSe leave executed */
	WATCH_KAT_COMPLETE,    /* Katapult COMPLETE received */
	WATCH_KAT_FIRST_BLOCK, /* first SEND_BLOCK received, and the Katapult enumeration */
	WATCH_PICO_LEFT	       /* PICOBOOT REBOOT acknowledged */
};

struct watch {
	enum watch_kind kind;
	struct sim_board *b;
	struct dfuse_dev *d;
	struct picoboot_sim *pico;
	unsigned base;
	atomic_bool stop;
	double t_event;	   /* ms, 0 = not seen */
	double t_katapult; /* WATCH_KAT_FIRST_BLOCK: board seen in Katapult mode */
	pthread_t thread;
};

static void *
watch_thread(void *arg)
{
	struct watch *w = arg;

	while (!atomic_load(&w->stop) && w->t_event == 0) {
		struct dfuse_stats ds;
		struct sim_katapult_stats ks;
		struct picoboot_sim_stats ps;

		switch (w->kind) {
		case WATCH_DFU_LEFT:
			dfuse_get_stats(w->d, &ds);
			if (ds.left)
				w->t_event = now_ms();
			break;
		case WATCH_KAT_COMPLETE:
			sim_board_katapult_stats(w->b, &ks);
			if (ks.completes > w->base)
				w->t_event = now_ms();
			break;
		case WATCH_KAT_FIRST_BLOCK:
			if (w->t_katapult == 0 && sim_board_mode(w->b) == SIM_MODE_KATAPULT)
				w->t_katapult = now_ms();
			sim_board_katapult_stats(w->b, &ks);
			if (ks.blocks > w->base)
				w->t_event = now_ms();
			break;
		case WATCH_PICO_LEFT:
			picoboot_sim_get_stats(w->pico, &ps);
			if (ps.left)
				w->t_event = now_ms();
			break;
		}
		sleep_ms(0.2);
	}
	return NULL;
}

static void
watch_start(struct watch *w)
{
	atomic_store(&w->stop, false);
	w->t_event = 0;
	w->t_katapult = 0;
	if (pthread_create(&w->thread, NULL, watch_thread, w) != 0)
		abort();
}

static void
watch_stop(struct watch *w)
{
	atomic_store(&w->stop, true);
	pthread_join(w->thread, NULL);
}

/* ---- device bounds (the timing model of tests/sim, evaluated for a perfect host) ----- */

static double
ceil_ms(uint32_t us)
{
	return (double)((us + 999) / 1000);
}

/* Sectors of [addr, addr+len) and their erase time in ms (the device's bwPollTimeout). */
static void
erase_cost(const struct catalog_mcu *mcu, uint32_t addr, size_t len, unsigned *ret_n,
	   double *ret_dfu_ms, double *ret_us)
{
	struct flash *f = flash_new(mcu, 1.0);
	uint32_t a = addr, end = addr + (uint32_t)len, start, size, busy;

	*ret_n = 0;
	*ret_dfu_ms = 0;
	*ret_us = 0;
	while (a < end && flash_sector(f, a, NULL, &start, &size) == 0) {
		(void)flash_erase(f, a, &busy);
		(*ret_n)++;
		*ret_dfu_ms += ceil_ms(busy);
		*ret_us += busy;
		a = start + size;
	}
	flash_free(f);
}

/* DfuSe flash+verify of len bytes at addr by a perfect host: each control transfer takes a
 * frame, each DNLOAD waits the bwPollTimeout the ROM reports (whole ms). Clear the ROM's
 * initial error (2), set the address once (3), per sector erase command + status (2 +
 * busy), per block DNLOAD + status (2 + busy), ABORT + one UPLOAD per block to verify,
 * leave (2). */
static double
dfuse_bound_ms(const struct catalog_mcu *mcu, uint32_t addr, size_t len)
{
	struct flash *f = flash_new(mcu, 1.0);
	size_t blocks = (len + DFUSE_TRANSFER_SIZE - 1) / DFUSE_TRANSFER_SIZE;
	double ms = 2 + 3, erase_ms, erase_us;
	unsigned n_erase;

	erase_cost(mcu, addr, len, &n_erase, &erase_ms, &erase_us);
	ms += 2.0 * n_erase + erase_ms;
	for (size_t i = 0; i < blocks; i++) {
		size_t n = i + 1 < blocks ? DFUSE_TRANSFER_SIZE : len - i * DFUSE_TRANSFER_SIZE;

		ms += 2 + ceil_ms(flash_program_time(f, n));
	}
	ms += 1 + (double)blocks + 2;
	flash_free(f);
	return ms * FRAME_MS;
}

static size_t
frame_len(uint8_t code, size_t payload)
{
	uint8_t buf[KATAPULT_DEVICE_FRAME_MAX * 2];

	return (size_t)katapult_frame_encode_bytes(code, NULL, 0, buf, sizeof(buf)) + payload;
}

/* Katapult flash+verify by a perfect host under the simulator's model (sim_katapult.c):
 * blocks stream back to back, so each costs the slower of its flash time (page erase on a
 * page's first block, then programming) and its wire time, in whichever direction is the
 * slower (each carries 19 x 64 bytes per frame). The verify reads cost the wire time of
 * their replies: 2 reads in flight (160 of the device's 192 transmit bytes) keep the IN pipe
 * busy when the host answers within a reply's wire time. CONNECT, SEND_EOF and COMPLETE are
 * lone round trips of one frame each. */
static double
katapult_bound_ms(const struct catalog_mcu *mcu, size_t len)
{
	struct flash *f = flash_new(mcu, 1.0);
	size_t blocks = (len + SIM_BLOCK_SIZE - 1) / SIM_BLOCK_SIZE;
	double send_out = (double)frame_len(KATAPULT_CMD_SEND_BLOCK, 4 + SIM_BLOCK_SIZE);
	double send_in = (double)frame_len(KATAPULT_RSP_ACK, 8);
	double req_out = (double)frame_len(KATAPULT_CMD_REQUEST_BLOCK, 4);
	double req_in = (double)frame_len(KATAPULT_RSP_ACK, 8 + SIM_BLOCK_SIZE);
	double wire_send = (send_out > send_in ? send_out : send_in) / WIRE_BYTES_PER_MS;
	double wire_req = (req_out > req_in ? req_out : req_in) / WIRE_BYTES_PER_MS;
	double prog = flash_program_time(f, SIM_BLOCK_SIZE) / 1000.0;
	double ms;

	flash_free(f);
	ms = 3 * FRAME_MS;
	ms += (double)blocks * (prog > wire_send ? prog : wire_send);
	ms += (double)blocks * wire_req;
	return ms;
}

static double
katapult_erase_ms(const struct catalog_mcu *mcu, uint32_t addr, size_t len)
{
	double erase_ms, erase_us;
	unsigned n;

	erase_cost(mcu, addr, len, &n, &erase_ms, &erase_us);
	return erase_us / 1000.0;
}

/* ---- one DfuSe run: skrflash one-shot or dfu-util against a board in ROM DFU -------- */

enum tool { TOOL_SKRFLASH, TOOL_DFU_UTIL };

struct dfu_run {
	double leave_ms; /* command start -> the device executed the leave */
	double wall_ms;	 /* command start -> exit */
	uint64_t control, uploads, dnload_data, erases;
};

static int
dfu_run(struct sim *s, struct sim_board *b, const uint8_t *old, size_t len, const char *file,
	enum tool tool, struct dfu_run *ret)
{
	uint32_t addr = sim_board_app_start(b);
	struct flash *f = sim_board_flash(b);
	struct watch w = {.kind = WATCH_DFU_LEFT, .b = b};
	struct dfuse_stats st;
	char dev[64], spec[64], *out = NULL;
	uint64_t erases0;
	double t0;
	int r;

	load_flash(b, addr, old, len);
	plug_and_wait(b, SIM_MODE_ROM_DFU);
	snprintf(dev, sizeof(dev), "%s", sim_board_devnode(b));
	snprintf(spec, sizeof(spec), "0x%08x:leave", addr);
	w.d = board_dfuse(b);
	erases0 = f->total_erases;
	{
		char *skr = xasprintf("%s/skrflashctl", O.build);
		char **argv =
		    tool == TOOL_SKRFLASH
			? strv_new(skr, "flash", "--device", dev, "--board",
				   sim_board_model(b)->name, "--method", "dfu", file, NULL)
			: strv_new("dfu-util", "-a", "0", "-s", spec, "-D", file, NULL);

		watch_start(&w);
		t0 = now_ms();
		r = sim_run(s, argv, 600000, &out);
		ret->wall_ms = now_ms() - t0;
		sleep_ms(1);
		watch_stop(&w);
		free(skr);
		strv_free(argv);
	}
	dfuse_get_stats(w.d, &st);
	ret->leave_ms = w.t_event ? w.t_event - t0 : NAN;
	ret->control = st.control;
	ret->uploads = st.upload;
	ret->dnload_data = st.dnload_data;
	ret->erases = f->total_erases - erases0;
	if (r != 0 || !w.t_event) {
		fprintf(stderr, "skrbench: %s failed (%d):\n%s\n",
			tool == TOOL_SKRFLASH ? "skrflashctl flash" : "dfu-util", r,
			out ? out : "");
		free(out);
		return -EIO;
	}
	free(out);
	/* the application boots before the next run re-plugs the board */
	(void)sim_board_wait_mode(b, SIM_MODE_KLIPPER_APP, 10000);
	return 0;
}

static uint8_t *
image(const struct sim_board *bc, const char *version, size_t size, size_t *ret_len)
{
	struct sim_board *b = (struct sim_board *)(uintptr_t)bc;

	return sim_image_klipper(sim_board_model(b)->mcu, sim_board_app_start(b), version, size,
				 ret_len);
}

/* ---- section: the simulator's own per-transfer cost ----------------------------------- */

static int
probe_katapult(const char *tty, unsigned n)
{
	uint8_t frame[64], rx[512];
	int fd = open(tty, O_RDWR | O_NOCTTY | O_CLOEXEC);
	struct termios t;
	int len;
	double t0;

	if (fd < 0 || tcgetattr(fd, &t) < 0)
		return 1;
	cfmakeraw(&t);
	(void)tcsetattr(fd, TCSANOW, &t);
	len = katapult_frame_encode(KATAPULT_CMD_CONNECT, NULL, 0, frame, sizeof(frame));
	t0 = now_ms();
	for (unsigned i = 0; i < n; i++) {
		size_t got = 0;
		struct katapult_frame kf;
		bool bad;

		if (write(fd, frame, (size_t)len) != len)
			return 1;
		for (;;) {
			struct pollfd p = {.fd = fd, .events = POLLIN};
			ssize_t m;

			if (poll(&p, 1, 2000) <= 0)
				return 1;
			m = read(fd, rx + got, sizeof(rx) - got);
			if (m <= 0)
				return 1;
			got += (size_t)m;
			if (katapult_frame_find(rx, got, sizeof(rx), &kf, &bad) > 0)
				break;
		}
	}
	printf("%.4f\n", (now_ms() - t0) / n);
	close(fd);
	return 0;
}

static void
section_overhead(void)
{
	json_object *o = json_object_new_object();
	double dfu[MAX_RUNS], kat[MAX_RUNS];
	unsigned reps = O.reps, n_rt = O.quick ? 50 : 400;
	struct sim *s = sim_new();
	struct sim_board_spec sd = {.model = "octopus-f446", .port = "1-1", .mode = SIM_MODE_OFF};
	struct sim_board_spec sk = {.model = "octopus-f446",
				    .port = "1-2",
				    .bootloader = SIM_BL_KATAPULT,
				    .mode = SIM_MODE_KATAPULT,
				    .plain_katapult_tty = true};
	struct sim_board *bd = sim_board_add(s, &sd), *bk = sim_board_add(s, &sk);
	size_t up_len = O.quick ? 64 * 1024 : 256 * 1024;

	fprintf(table, "\nSimulator overhead (device time zero; what the sim itself costs)\n");
	for (unsigned i = 0; i < reps; i++) {
		char *upath = xasprintf("%s/upload-%u.bin", O.tmp, i), spec[64], *out = NULL;
		char *self = xasprintf("%s/bench/skrbench", O.build), cnt[16];
		char **a_up, **a_k;
		struct dfuse_stats st;
		double t0;

		snprintf(spec, sizeof(spec), "0x08000000:%zu", up_len);
		snprintf(cnt, sizeof(cnt), "%u", n_rt);
		a_up = strv_new("dfu-util", "-a", "0", "-s", spec, "-U", upath, NULL);
		a_k = strv_new(self, "--probe-katapult", sim_board_tty(bk), cnt, NULL);
		unlink(upath);
		plug_and_wait(bd, SIM_MODE_ROM_DFU);
		t0 = now_ms();
		if (sim_run(s, a_up, 60000, NULL) != 0)
			fprintf(stderr, "skrbench: dfu-util upload failed\n");
		dfu[i] = now_ms() - t0;
		dfuse_get_stats(board_dfuse(bd), &st);
		dfu[i] /= (double)(st.control ? st.control : 1);
		unlink(upath);
		free(upath);
		kat[i] = NAN;
		if (sim_run(s, a_k, 60000, &out) == 0 && out)
			kat[i] = strtod(out, NULL);
		free(out);
		free(self);
		strv_free(a_up);
		strv_free(a_k);
	}
	put_num(o, "dfuse_ms_per_control_transfer", median(dfu, reps));
	put_num(o, "katapult_ms_per_round_trip", median(kat, reps));
	json_object_object_add(o, "dfuse_runs", json_array_of(dfu, reps));
	json_object_object_add(o, "katapult_runs", json_array_of(kat, reps));
	json_object_object_add(results, "sim_overhead", o);
	rowf("DfuSe control transfer (dfu-util 256 KiB upload), ms", "(model: 1 frame = 1 ms)",
	     "%.3f", median(dfu, reps));
	rowf("Katapult lone round trip (CONNECT), ms", "(model: 1 frame = 1 ms)", "%.3f",
	     median(kat, reps));
	sim_free(s);
}

/* ---- section: DfuSe against dfu-util ------------------------------------------------- */

struct dfu_case {
	const char *model;
	size_t size;
	double speed;
	const char *note;
};

/* skrflash and dfu-util alternately on one board; returns the per-pair ratio medians. */
static json_object *
dfu_compare(const struct dfu_case *c, unsigned reps, double *ret_time_ratio, double *ret_xfer_ratio,
	    double *ret_bound_ratio)
{
	struct sim *s = sim_new();
	struct sim_board_spec spec = {
	    .model = c->model, .port = "1-1", .speed = c->speed, .mode = SIM_MODE_KLIPPER_APP};
	struct sim_board *b = sim_board_add(s, &spec);
	double ts[MAX_RUNS], td[MAX_RUNS], xs[MAX_RUNS], xd[MAX_RUNS], ws[MAX_RUNS];
	size_t old_len, new_len;
	uint8_t *old = image(b, "v0.12.0-old", c->size, &old_len);
	uint8_t *img = image(b, "v0.13.0-new", c->size, &new_len);
	char *file = write_tmp("dfu-new.bin", img, new_len);
	json_object *o = json_object_new_object();
	double bound =
	    c->speed > 0 ? dfuse_bound_ms(sim_board_model(b)->mcu, sim_board_app_start(b), new_len)
			 : NAN;
	unsigned n = 0;

	for (unsigned i = 0; i < reps; i++) {
		struct dfu_run rs, rd;

		if (dfu_run(s, b, old, old_len, file, TOOL_SKRFLASH, &rs) < 0 ||
		    dfu_run(s, b, old, old_len, file, TOOL_DFU_UTIL, &rd) < 0)
			continue;
		ts[n] = rs.leave_ms;
		ws[n] = rs.wall_ms;
		td[n] = rd.leave_ms;
		xs[n] = (double)rs.control;
		xd[n] = (double)rd.control;
		n++;
	}
	json_object_object_add(o, "board", json_object_new_string(c->model));
	json_object_object_add(o, "mcu", json_object_new_string(sim_board_model(b)->mcu->name));
	json_object_object_add(o, "image_kib", json_object_new_int((int)(new_len / 1024)));
	json_object_object_add(o, "speed", json_object_new_double(c->speed));
	if (c->note)
		json_object_object_add(o, "note", json_object_new_string(c->note));
	put_num(o, "skrflash_ms_median", median(ts, n));
	put_num(o, "skrflash_process_ms_median", median(ws, n));
	put_num(o, "dfu_util_ms_median", median(td, n));
	put_num(o, "skrflash_transfers", median(xs, n));
	put_num(o, "dfu_util_transfers", median(xd, n));
	put_num(o, "skrflash_transfers_per_kib", median(xs, n) / ((double)new_len / 1024));
	put_num(o, "dfu_util_transfers_per_kib", median(xd, n) / ((double)new_len / 1024));
	put_num(o, "device_bound_ms", bound);
	json_object_object_add(o, "skrflash_runs_ms", json_array_of(ts, n));
	json_object_object_add(o, "dfu_util_runs_ms", json_array_of(td, n));
	*ret_time_ratio = n ? median_ratio(ts, td, n) : NAN;
	*ret_xfer_ratio = n ? median_ratio(xs, xd, n) : NAN;
	*ret_bound_ratio = n ? median(ts, n) / bound : NAN;
	put_num(o, "skrflash_vs_dfu_util", *ret_time_ratio);
	put_num(o, "transfers_vs_dfu_util", *ret_xfer_ratio);
	put_num(o, "skrflash_vs_bound", *ret_bound_ratio);
	put_num(o, "dfu_util_vs_bound", n ? median(td, n) / bound : NAN);
	json_object_object_add(o, "runs", json_object_new_int((int)n));
	free(file);
	free(img);
	free(old);
	sim_free(s);
	return o;
}

static void
section_dfuse_zero(void)
{
	struct dfu_case c = {"octopus-f446", O.quick ? 32 * 1024 : 256 * 1024, 0.0, NULL};
	double t, x, bnd;
	json_object *o = dfu_compare(&c, O.reps + (O.quick ? 0 : 2), &t, &x, &bnd);

	fprintf(table, "\nDfuSe protocol efficiency: STM32F446, %zu KiB, device time zero\n",
		c.size / 1024);
	rowf("control transfers/KiB, skrflash flash+verify", "", "%.2f",
	     json_object_get_double(json_object_object_get(o, "skrflash_transfers_per_kib")));
	rowf("control transfers/KiB, dfu-util download only", "", "%.2f",
	     json_object_get_double(json_object_object_get(o, "dfu_util_transfers_per_kib")));
	rowf("transfers: skrflash / dfu-util", verdict(x, 0.7), "%.2fx  (<= 0.7x)", x);
	rowf("wall time: skrflash / dfu-util (median of pairs)", verdict(t, 0.7),
	     "%.2fx  (<= 0.7x)", t);
	json_object_object_add(results, "dfuse_zero_time", o);
	put_num(results, "dfuse_transfers_vs_dfu_util", x);
	put_num(results, "dfuse_zero_time_vs_dfu_util", t);
}

static void
section_dfuse_time(void)
{
	static const struct dfu_case full[] = {
	    {"octopus-f446", 256 * 1024, 1.0, "F446 has 512 KiB: 256 KiB only"},
	    {"skr-3-h723", 256 * 1024, 1.0, NULL},
	    {"skr-3-h723", 896 * 1024, 1.0,
	     "H723VG is 1 MiB with the application at 0x08020000: 896 KiB is all that fits"},
	    {"octopus-f429", 992 * 1024, 1.0,
	     "F429 1 MiB with the application at 0x08008000: 992 KiB is all that fits"},
	};
	static const struct dfu_case quick[] = {
	    {"octopus-f446", 32 * 1024, 0.0, "quick run: device time zero"},
	};
	const struct dfu_case *cases = O.quick ? quick : full;
	size_t n = O.quick ? ELEMENTSOF(quick) : ELEMENTSOF(full);
	json_object *arr = json_object_new_array();
	double worst_d = 0, worst_b = 0;

	fprintf(table, "\nDfuSe at datasheet timing: skrflash flash+verify vs dfu-util download "
		       "only and vs the device bound\n");
	for (size_t i = 0; i < n; i++) {
		double t, x, bnd;
		json_object *o = dfu_compare(&cases[i], O.reps, &t, &x, &bnd);
		char what[96];

		snprintf(what, sizeof(what), "%s %zu KiB: skrflash / dfu-util", cases[i].model,
			 cases[i].size / 1024);
		rowf(what, verdict(t, 1.0), "%.2fx  (<= 1.0x)", t);
		snprintf(what, sizeof(what), "%s %zu KiB: skrflash / device bound", cases[i].model,
			 cases[i].size / 1024);
		rowf(what, verdict(bnd, 1.1), "%.2fx  (<= 1.1x)", bnd);
		if (!(t <= worst_d))
			worst_d = t;
		if (!(bnd <= worst_b))
			worst_b = bnd;
		json_object_array_add(arr, o);
	}
	json_object_object_add(results, "dfuse_cases", arr);
	put_num(results, "dfuse_vs_dfu_util", worst_d);
	put_num(results, "dfuse_vs_bound", worst_b);
}

/* ---- section: changed-sector flashing ------------------------------------------------ */

/* Four images: `old` with 0, 1, half and all of the erase units it covers changed (one byte
 * past the vector table and dictionary in each); their files and k in files[] and ks[]. The
 * number of erase units. */
static unsigned
changed_files(struct sim_board *b, const uint8_t *old, size_t old_len, unsigned ks[4],
	      char *files[4])
{
	uint32_t addr = sim_board_app_start(b), sec_start[64], start, size_s;
	unsigned n_sec = 0;

	for (uint32_t a = addr; a < addr + old_len && n_sec < ELEMENTSOF(sec_start);
	     a = start + size_s) {
		if (flash_sector(sim_board_flash(b), a, NULL, &start, &size_s) < 0)
			break;
		sec_start[n_sec++] = a;
	}
	ks[0] = 0;
	ks[1] = 1;
	ks[2] = n_sec / 2;
	ks[3] = n_sec;
	for (unsigned k = 0; k < 4; k++) {
		uint8_t *img = xmalloc(old_len);
		char name[32];

		memcpy(img, old, old_len);
		for (unsigned j = 0; j < ks[k]; j++) {
			size_t off = sec_start[j] - addr + 0x1000;

			if (off < old_len)
				img[off] ^= 0x5a;
		}
		snprintf(name, sizeof(name), "changed-k%u.bin", ks[k]);
		files[k] = write_tmp(name, img, old_len);
		free(img);
	}
	return n_sec;
}

static void
section_changed(void)
{
	const char *model = "octopus-f446";
	size_t size = O.quick ? 40 * 1024 : 256 * 1024, old_len;
	struct sim *s = sim_new();
	struct sim_board_spec spec = {.model = model,
				      .port = "1-1",
				      .speed = O.quick ? 0.0 : 1.0,
				      .mode = SIM_MODE_KLIPPER_APP};
	struct sim_board *b = sim_board_add(s, &spec);
	uint8_t *old = image(b, "v0.12.0-old", size, &old_len);
	unsigned n_sec, ks[4];
	double t[4][MAX_RUNS], er[4][MAX_RUNS];
	json_object *o = json_object_new_object(), *arr = json_object_new_array();
	char *files[4];
	unsigned runs = 0;

	n_sec = changed_files(b, old, old_len, ks, files);
	fprintf(table, "\nChanged-sector flashing: %s, %zu KiB over %u sectors, skrflash (DfuSe)\n",
		model, old_len / 1024, n_sec);
	for (unsigned i = 0; i < O.reps; i++) {
		bool ok = true;

		for (unsigned k = 0; k < 4 && ok; k++) {
			struct dfu_run r;

			ok = dfu_run(s, b, old, old_len, files[k], TOOL_SKRFLASH, &r) == 0;
			t[k][runs] = r.leave_ms;
			er[k][runs] = (double)r.erases;
		}
		if (ok)
			runs++;
	}
	for (unsigned k = 0; k < 4; k++) {
		json_object *c = json_object_new_object();
		char what[96];
		double tk = median(t[k], runs), full = median(t[3], runs);

		json_object_object_add(c, "k", json_object_new_int((int)ks[k]));
		json_object_object_add(c, "n", json_object_new_int((int)n_sec));
		put_num(c, "ms_median", tk);
		put_num(c, "erases_median", median(er[k], runs));
		put_num(c, "time_vs_full", runs ? median_ratio(t[k], t[3], runs) : NAN);
		json_object_object_add(c, "runs_ms", json_array_of(t[k], runs));
		json_object_array_add(arr, c);
		snprintf(what, sizeof(what), "k=%u of %u sectors changed: time vs full, erases",
			 ks[k], n_sec);
		rowf(what, "", "%.2fx, %.0f", tk / full, median(er[k], runs));
		free(files[k]);
	}
	json_object_object_add(o, "board", json_object_new_string(model));
	json_object_object_add(o, "image_kib", json_object_new_int((int)(old_len / 1024)));
	json_object_object_add(o, "cases", arr);
	json_object_object_add(results, "changed_sectors", o);
	{
		double sp = runs ? median_ratio(t[3], t[1], runs) : NAN;

		put_num(results, "changed_sector_speedup_k1", sp);
		rowf("speed-up for k=1 over a full flash (median of pairs)", "", "%.2fx", sp);
	}
	free(old);
	sim_free(s);
}

/* ---- section: Katapult ------------------------------------------------------------- */

struct kat_run {
	double complete_ms;
	double frames;
};

static int
kat_run(struct sim *s, struct sim_board *b, const uint8_t *old, size_t len, const char *file,
	unsigned window, struct kat_run *ret)
{
	struct sim_katapult_stats ks0, ks1;
	struct watch w = {.kind = WATCH_KAT_COMPLETE, .b = b};
	char tty[64], win[16], *out = NULL;
	char *skr = xasprintf("%s/skrflashctl", O.build);
	char **argv;
	double t0;
	int r;

	load_flash(b, sim_board_app_start(b), old, len);
	plug_and_wait(b, SIM_MODE_KATAPULT);
	snprintf(tty, sizeof(tty), "%s", sim_board_tty(b));
	snprintf(win, sizeof(win), "%u", window);
	argv = strv_new(skr, "flash", "--device", tty, "--board", sim_board_model(b)->name,
			"--method", "katapult", "--window", win, file, NULL);
	sim_board_katapult_stats(b, &ks0);
	w.base = ks0.completes;
	watch_start(&w);
	t0 = now_ms();
	r = sim_run(s, argv, 600000, &out);
	sleep_ms(1);
	watch_stop(&w);
	sim_board_katapult_stats(b, &ks1);
	free(skr);
	strv_free(argv);
	if (r != 0 || !w.t_event) {
		fprintf(stderr, "skrbench: katapult flash failed (%d):\n%s\n", r, out ? out : "");
		free(out);
		return -EIO;
	}
	free(out);
	ret->complete_ms = w.t_event - t0;
	ret->frames = (double)(ks1.frames_rx - ks0.frames_rx);
	(void)sim_board_wait_mode(b, SIM_MODE_KLIPPER_APP, 10000);
	return 0;
}

static void
section_katapult(void)
{
	static const char *const models[] = {"octopus-f446", "skr-mini-e3-v3"};
	size_t size = O.quick ? 16 * 1024 : 128 * 1024;
	json_object *arr = json_object_new_array();
	double worst = 0;

	fprintf(table,
		"\nKatapult at datasheet timing: %zu KiB, flash+verify, window 1 vs "
		"default window (8)\n",
		size / 1024);
	for (size_t m = 0; m < ELEMENTSOF(models); m++) {
		struct sim *s = sim_new();
		struct sim_board_spec spec = {.model = models[m],
					      .port = "1-1",
					      .bootloader = SIM_BL_KATAPULT,
					      .speed = O.quick ? 0.0 : 1.0,
					      .mode = SIM_MODE_KLIPPER_APP,
					      .plain_katapult_tty = true};
		struct sim_board *b = sim_board_add(s, &spec);
		size_t old_len, len;
		uint8_t *old = image(b, "v0.12.0-old", size, &old_len);
		uint8_t *img = image(b, "v0.13.0-new", size, &len);
		char *file = write_tmp("kat-new.bin", img, len);
		double t1[MAX_RUNS], t8[MAX_RUNS], f1[MAX_RUNS], f8[MAX_RUNS];
		const struct catalog_mcu *mcu = sim_board_model(b)->mcu;
		double bound = katapult_bound_ms(mcu, len) +
			       katapult_erase_ms(mcu, sim_board_app_start(b), len);
		json_object *o = json_object_new_object();
		unsigned n = 0;
		char what[96];
		double r8, r1;

		for (unsigned i = 0; i < O.reps; i++) {
			struct kat_run a, c;

			if (kat_run(s, b, old, old_len, file, 1, &a) < 0 ||
			    kat_run(s, b, old, old_len, file, 8, &c) < 0)
				continue;
			t1[n] = a.complete_ms;
			f1[n] = a.frames;
			t8[n] = c.complete_ms;
			f8[n] = c.frames;
			n++;
		}
		r8 = n && !O.quick ? median(t8, n) / bound : NAN;
		r1 = n && !O.quick ? median(t1, n) / bound : NAN;
		json_object_object_add(o, "board", json_object_new_string(models[m]));
		json_object_object_add(o, "mcu", json_object_new_string(mcu->name));
		json_object_object_add(o, "image_kib", json_object_new_int((int)(len / 1024)));
		put_num(o, "device_bound_ms", O.quick ? NAN : bound);
		put_num(o, "window1_ms_median", median(t1, n));
		put_num(o, "window8_ms_median", median(t8, n));
		put_num(o, "window1_vs_bound", r1);
		put_num(o, "window8_vs_bound", r8);
		put_num(o, "window8_vs_window1", n ? median_ratio(t8, t1, n) : NAN);
		put_num(o, "round_trips_per_kib_window1", median(f1, n) / ((double)len / 1024));
		put_num(o, "round_trips_per_kib_window8", median(f8, n) / ((double)len / 1024));
		json_object_object_add(o, "window1_runs_ms", json_array_of(t1, n));
		json_object_object_add(o, "window8_runs_ms", json_array_of(t8, n));
		json_object_array_add(arr, o);
		snprintf(what, sizeof(what), "%s window 8: skrflash / device bound", models[m]);
		rowf(what, verdict(r8, 1.3), "%.2fx  (<= 1.3x)", r8);
		snprintf(what, sizeof(what), "%s window 1: skrflash / device bound", models[m]);
		rowf(what, "(one block at a time)", "%.2fx", r1);
		snprintf(what, sizeof(what), "%s round trips per KiB", models[m]);
		rowf(what, "", "%.1f", median(f8, n) / ((double)len / 1024));
		if (!(r8 <= worst))
			worst = r8;
		free(file);
		free(img);
		free(old);
		sim_free(s);
	}
	json_object_object_add(results, "katapult_cases", arr);
	put_num(results, "katapult_vs_bound", worst);
}

/* ---- section: the daemon: parallel jobs, memory, idle wake-ups, latency -------------- */

#define FARM_MAX 16
#define LAT_PORT "1-17"
/* Drops into the boards' queues are this far apart: umockdev aborts the whole simulator when
 * more than net.unix.max_dgram_qlen (10) uevents wait unread at one listener, and 16 boards
 * re-enumerating in the same millisecond get there. The stagger is part of wall(N). */
#define DROP_STAGGER_MS 10.0
static double drop_stagger_ms = DROP_STAGGER_MS;

static unsigned
count_str(const char *hay, const char *needle)
{
	unsigned n = 0;

	for (const char *p = hay; (p = strstr(p, needle)); p += strlen(needle))
		n++;
	return n;
}

/* /proc as the kernel has it: this process runs under the umockdev preload, which redirects
 * /proc into the testbed, so a shell without the preload reads it. Sums `key` over files. */
static long
proc_sum(const char *files, const char *key)
{
	char *cmd = xasprintf("env -u LD_PRELOAD sh -c 'cat %s 2>/dev/null'", files), line[256];
	FILE *f = popen(cmd, "re");
	long v = 0;
	bool any = false;

	free(cmd);
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (strncmp(line, key, strlen(key)) == 0) {
			v += strtol(line + strlen(key), NULL, 10);
			any = true;
		}
	pclose(f);
	return any ? v : -1;
}

static long
rss_kib(int pid)
{
	char files[64];

	snprintf(files, sizeof(files), "/proc/%d/status", pid);
	return proc_sum(files, "VmRSS:");
}

/* Context switches of every thread of pid: each one is a wake-up or a preemption. */
static long
ctxt_switches(int pid)
{
	char files[64];

	snprintf(files, sizeof(files), "/proc/%d/task/*/status", pid);
	return proc_sum(files, "voluntary_ctxt_switches:") +
	       proc_sum(files, "nonvoluntary_ctxt_switches:");
}

struct farm {
	struct sim *s;
	struct sim_proc *d;
	struct sim_board *boards[FARM_MAX];
	struct sim_board *lat;
	unsigned n;
	char *dir;
	unsigned drops;
	unsigned done; /* "and it booted" seen so far */
};

static void
drop(struct farm *fm, const char *queue, const uint8_t *img, size_t len)
{
	char *tmp = xasprintf("%s/drop-%u.tmp", fm->dir, fm->drops);
	char *dst = xasprintf("%s/state/queue/%s/fw-%u.bin", fm->dir, queue, fm->drops);

	fm->drops++;
	if (write_file_atomic(tmp, img, len, 0644) < 0 || rename(tmp, dst) < 0) {
		fprintf(stderr, "skrbench: cannot drop %s: %s\n", dst, strerror(errno));
		exit(1);
	}
	free(tmp);
	free(dst);
}

/* Wait until `more` further flashes succeeded; the time of the last one (ms) or NAN. */
static double
wait_booted(struct farm *fm, unsigned more, double timeout_ms)
{
	double t0 = now_ms();
	unsigned want = fm->done + more;

	while (now_ms() - t0 < timeout_ms) {
		unsigned n = count_str(sim_proc_output(fm->d), "and it booted");

		if (n >= want) {
			fm->done = n;
			return now_ms();
		}
		sleep_ms(2);
	}
	fm->done = count_str(sim_proc_output(fm->d), "and it booted");
	fprintf(stderr, "skrbench: %u of %u flashes done after %.0f ms\n", fm->done, want,
		timeout_ms);
	return NAN;
}

static void
farm_start(struct farm *fm, unsigned n, double speed)
{
	char *conf, *path, *daemon;
	FILE *f;

	memset(fm, 0, sizeof(*fm));
	fm->n = n;
	fm->dir = xasprintf("%s/farm", O.tmp);
	fm->s = sim_new();
	path = xasprintf("%s/state/queue", fm->dir);
	(void)mkdir_p(path, 0755);
	free(path);
	conf = xasprintf("%s/skrflash.conf", fm->dir);
	f = fopen(conf, "we");
	if (!f)
		exit(1);
	fprintf(f, "max_jobs = 16;\nlog_level = \"info\";\n"
		   "timeouts = { bootloader = 10.0; boot = 15.0; leave_grace = 0.5; };\n"
		   "profiles = (\n");
	for (unsigned i = 0; i < n; i++) {
		char port[16];
		struct sim_board_spec spec = {.model = "octopus-f446",
					      .port = port,
					      .bootloader = SIM_BL_KATAPULT,
					      .speed = speed,
					      .mode = SIM_MODE_KLIPPER_APP,
					      .plain_katapult_tty = true};

		snprintf(port, sizeof(port), "1-%u", i + 1);
		fm->boards[i] = sim_board_add(fm->s, &spec);
		fprintf(f,
			"  { name = \"b%u\"; match = { board = \"octopus-f446\"; port = \"%s\"; };"
			" auto_flash = [ \"queue\" ]; },\n",
			i + 1, port);
		path = xasprintf("%s/state/queue/b%u", fm->dir, i + 1);
		(void)mkdir_p(path, 0755);
		free(path);
	}
	{
		struct sim_board_spec spec = {.model = "octopus-f446",
					      .port = LAT_PORT,
					      .bootloader = SIM_BL_KATAPULT,
					      .mode = SIM_MODE_OFF};

		fm->lat = sim_board_add(fm->s, &spec);
		fprintf(f,
			"  { name = \"lat\"; match = { board = \"octopus-f446\"; port = \"%s\"; };"
			" auto_flash = [ \"hotplug\" ]; }\n);\n",
			LAT_PORT);
		path = xasprintf("%s/state/queue/lat", fm->dir);
		(void)mkdir_p(path, 0755);
		free(path);
	}
	fclose(f);
	daemon = xasprintf("%s/skrflashd", O.build);
	{
		char *sd = xasprintf("%s/state", fm->dir), *rd = xasprintf("%s/run", fm->dir);
		char **argv = strv_new(daemon, "-c", conf, "--state-dir", sd, "--runtime-dir", rd,
				       "--log-target", "stderr", NULL);
		/* as under systemd: skrflashd.service has WatchdogSec=30s */
		char **env = strv_new("WATCHDOG_USEC=30000000", NULL);

		fm->d = sim_proc_spawn(fm->s, argv, env);
		strv_free(argv);
		strv_free(env);
		free(sd);
		free(rd);
	}
	if (sim_proc_wait_ready(fm->d, 10000) < 0) {
		fprintf(stderr, "skrbench: the daemon did not get ready:\n%s\n",
			sim_proc_output(fm->d));
		exit(1);
	}
	free(daemon);
	free(conf);
}

static void
farm_stop(struct farm *fm)
{
	fm->d = sim_proc_free(fm->d);
	fm->s = sim_free(fm->s);
	free(fm->dir);
}

/* The daemon section's state: the farm, its JSON object and what the steps hand on. */
struct daemon_run {
	struct farm fm;
	json_object *o;
	unsigned sizes[3];
	unsigned version, flashes;
	size_t size;
	double settle_ms;
	long rss0, rss_warm;
};

/* Let coldplug identification finish, then count the quiet daemon's wake-ups. */
static void
daemon_idle(struct daemon_run *d)
{
	double idle_s = O.quick ? 1.0 : 12.0, t0, t1, per_min;
	long cs0, cs1;

	sleep_ms(d->settle_ms);
	d->rss0 = rss_kib(sim_proc_pid(d->fm.d));
	cs0 = ctxt_switches(sim_proc_pid(d->fm.d));
	t0 = now_ms();
	sleep_ms(idle_s * 1000);
	cs1 = ctxt_switches(sim_proc_pid(d->fm.d));
	t1 = now_ms();
	per_min = (double)(cs1 - cs0) * 60000.0 / (t1 - t0);
	put_num(d->o, "idle_window_s", (t1 - t0) / 1000);
	put_num(d->o, "idle_context_switches", (double)(cs1 - cs0));
	put_num(d->o, "idle_context_switches_before", (double)cs0);
	put_num(d->o, "drop_stagger_ms", drop_stagger_ms);
	json_object_object_add(
	    d->o, "watchdog_ping_seen",
	    json_object_new_boolean(sim_proc_wait_notify(d->fm.d, "WATCHDOG=1", 0) == 0));
	put_num(results, "idle_wakeups_per_min", per_min);
	rowf("idle wake-ups per minute (all threads, scaled)", "(watchdog 30 s: 2-4)", "%.1f",
	     per_min);
}

/* A new build dropped into the queues of boards b1..bN; the ms until the last one booted. */
static double
daemon_round(struct daemon_run *d, unsigned boards)
{
	char v[32];
	uint8_t *img;
	size_t len;
	double start, end;

	snprintf(v, sizeof(v), "v0.13.%u-farm", ++d->version);
	img = image(d->fm.boards[0], v, d->size, &len);
	start = now_ms();
	for (unsigned j = 0; j < boards; j++) {
		char q[16];

		snprintf(q, sizeof(q), "b%u", j + 1);
		if (j)
			sleep_ms(drop_stagger_ms);
		drop(&d->fm, q, img, len);
	}
	end = wait_booted(&d->fm, boards, 120000);
	d->flashes += boards;
	free(img);
	return end - start;
}

/* Rounds of 1, 4 and 16 boards at once, interleaved. */
static void
daemon_parallel(struct daemon_run *d)
{
	double wall[3][MAX_RUNS], r;
	unsigned reps = O.reps;

	for (unsigned i = 0; i < reps; i++) {
		for (unsigned k = 0; k < 3; k++)
			wall[k][i] = daemon_round(d, d->sizes[k]);
		if (i == 0)
			d->rss_warm = rss_kib(sim_proc_pid(d->fm.d));
	}
	for (unsigned k = 0; k < 3; k++) {
		char key[32], what[96];

		snprintf(key, sizeof(key), "parallel%u_ms_median", d->sizes[k]);
		put_num(d->o, key, median(wall[k], reps));
		snprintf(key, sizeof(key), "parallel%u_runs_ms", d->sizes[k]);
		json_object_object_add(d->o, key, json_array_of(wall[k], reps));
		snprintf(what, sizeof(what), "%u board(s) at once, queue drop -> last success, ms",
			 d->sizes[k]);
		rowf(what, "", "%.0f", median(wall[k], reps));
	}
	r = median_ratio(wall[2], wall[0], reps);
	put_num(results, "parallel16_vs_1", r);
	put_num(d->o, "parallel4_vs_1", median_ratio(wall[1], wall[0], reps));
	rowf(O.quick ? "wall(4) / wall(1) (quick run)" : "wall(16) / wall(1)", verdict(r, 1.3),
	     "%.2fx  (<= 1.3x)", r);
}

/* More flashes, all boards at once, up to `target` in total; then the RSS against start. */
static void
daemon_rss(struct daemon_run *d)
{
	unsigned target = O.quick ? 7 : 100;
	char what[96];
	long rss100;

	while (d->flashes < target)
		(void)daemon_round(d, d->sizes[2]);
	sleep_ms(d->settle_ms);
	rss100 = rss_kib(sim_proc_pid(d->fm.d));
	put_num(d->o, "flashes", d->flashes);
	put_num(results, "idle_rss_kib", (double)d->rss0);
	put_num(d->o, "rss_kib_after_first_round", (double)d->rss_warm);
	put_num(d->o, "rss_kib_after_flashes", (double)rss100);
	put_num(results, "rss_growth_kib_after_100", (double)(rss100 - d->rss0));
	put_num(d->o, "rss_growth_kib_after_warm_up", (double)(rss100 - d->rss_warm));
	rowf("daemon RSS after start, KiB", "", "%ld", d->rss0);
	snprintf(what, sizeof(what), "RSS growth after %u flashes, KiB (vs start / vs warm)",
		 d->flashes);
	rowf(what, "(no growth)", "%ld / %ld", rss100 - d->rss0, rss100 - d->rss_warm);
}

/* Latency: a board with firmware waiting in its queue is plugged in. */
static void
daemon_latency(struct daemon_run *d)
{
	double lat_k[MAX_RUNS], lat_app[MAX_RUNS];
	unsigned n_lat = 0;

	for (unsigned i = 0; i < (O.quick ? 1 : O.reps + 2); i++) {
		struct watch w = {.kind = WATCH_KAT_FIRST_BLOCK, .b = d->fm.lat};
		struct sim_katapult_stats ks;
		char v[32];
		uint8_t *img;
		size_t len;
		double tp;

		snprintf(v, sizeof(v), "v0.14.%u-lat", i);
		img = image(d->fm.lat, v, 16 * 1024, &len);
		drop(&d->fm, "lat", img, len);
		free(img);
		sleep_ms(200);
		sim_board_katapult_stats(d->fm.lat, &ks);
		w.base = ks.blocks;
		watch_start(&w);
		tp = now_ms();
		(void)sim_board_plug(d->fm.lat, SIM_MODE_KLIPPER_APP);
		(void)wait_booted(&d->fm, 1, 30000);
		watch_stop(&w);
		if (w.t_event && w.t_katapult) {
			lat_k[n_lat] = w.t_event - w.t_katapult;
			lat_app[n_lat] = w.t_event - tp;
			n_lat++;
		}
		(void)sim_board_unplug(d->fm.lat);
		sleep_ms(600); /* longer than leave_grace: the daemon sees it gone */
	}
	put_num(results, "uevent_to_first_byte_ms", median(lat_k, n_lat));
	put_num(d->o, "app_uevent_to_first_byte_ms", median(lat_app, n_lat));
	json_object_object_add(d->o, "uevent_to_first_byte_runs_ms", json_array_of(lat_k, n_lat));
	rowf("Katapult add uevent -> first SEND_BLOCK, ms", "", "%.1f", median(lat_k, n_lat));
	rowf("Klipper app add uevent -> first SEND_BLOCK (incl. reboot), ms", "", "%.1f",
	     median(lat_app, n_lat));
}

static void
section_daemon(void)
{
	struct daemon_run d = {.sizes = {1, 4, 16},
			       .size = O.quick ? 16 * 1024 : 64 * 1024,
			       .settle_ms = O.quick ? 300 : 1500,
			       .o = json_object_new_object()};

	if (O.quick) {
		d.sizes[1] = 2;
		d.sizes[2] = 4;
	}
	farm_start(&d.fm, d.sizes[2], O.quick ? 0.0 : 1.0);
	fprintf(table,
		"\nThe daemon: %u simulated Octopus boards (Katapult) on ports 1-1..1-%u, "
		"max_jobs 16\n",
		d.sizes[2], d.sizes[2]);
	daemon_idle(&d);
	daemon_parallel(&d);
	daemon_rss(&d);
	daemon_latency(&d);
	json_object_object_add(results, "daemon", d.o);
	farm_stop(&d.fm);
}

/* ---- main ------------------------------------------------------------------------- */

/* umockdev delivers uevents as unix datagrams and aborts when a listener's queue is full
 * (net.unix.max_dgram_qlen, 10 by default). That limit belongs to the network namespace: as
 * root, give the benchmark a namespace of its own with room for a farm's burst, and leave
 * the machine's setting alone. Otherwise, stagger the queue drops. */
static bool
private_netns(void)
{
	int fd;
	bool ok;

	if (geteuid() != 0 || getenv("SKRBENCH_NETNS") || unshare(CLONE_NEWNET) < 0)
		return getenv("SKRBENCH_NETNS") != NULL;
	fd = open("/proc/sys/net/unix/max_dgram_qlen", O_WRONLY | O_CLOEXEC);
	ok = fd >= 0 && write(fd, "1024", 4) == 4;
	if (fd >= 0)
		close(fd);
	if (ok)
		setenv("SKRBENCH_NETNS", "1", 1); /* survives sim_init's re-exec */
	return ok;
}

/* ---- section: RP2040 PICOBOOT --------------------------------------------------------- */

/* Full-speed bulk time of one transfer in ms: 64-byte packets, a short or zero-length one
 * ends it, 19 packets per 1 ms frame at best. */
static double
bulk_ms(size_t len)
{
	return (double)(len / 64 + 1) / 19.0 * FRAME_MS;
}

/* PICOBOOT flash+verify of len bytes from the flash base by a perfect host: per 4 KiB sector
 * a READ to compare, FLASH_ERASE (the QSPI sector erase), WRITE (16 page programs) and a READ
 * to verify, each a 32-byte command, its data and a one-packet acknowledgement; plus the
 * exclusive-access, exit-XIP and reboot commands. The erase and program times are the
 * flash model's (W25Q16JV datasheet). */
static double
picoboot_bound_ms(const struct catalog_mcu *mcu, size_t len)
{
	struct flash *f = flash_new(mcu, 1.0);
	size_t sectors = (len + PICOBOOT_SECTOR_SIM - 1) / PICOBOOT_SECTOR_SIM;
	double cmd = bulk_ms(32) + bulk_ms(0), data = bulk_ms(PICOBOOT_SECTOR_SIM), ms = 3 * cmd;
	uint32_t busy = 0;

	(void)flash_erase(f, f->base, &busy);
	for (size_t i = 0; i < sectors; i++)
		ms += 4 * cmd + 3 * data + busy / 1000.0 +
		      flash_program_time(f, PICOBOOT_SECTOR_SIM) / 1000.0;
	flash_free(f);
	return ms;
}

static int
pico_run(struct sim *s, struct sim_board *b, const uint8_t *old, size_t len, const char *file,
	 double *ret_ms)
{
	struct watch w = {.kind = WATCH_PICO_LEFT, .b = b};
	char dev[64], *out = NULL, *skr = xasprintf("%s/skrflashctl", O.build);
	char **argv;
	double t0;
	int r;

	load_flash(b, sim_board_flash(b)->base, old, len);
	plug_and_wait(b, SIM_MODE_BOOTSEL);
	snprintf(dev, sizeof(dev), "%s", sim_board_devnode(b));
	w.pico = b->picoboot; /* kept alive by the simulator until sim_free */
	argv = strv_new(skr, "flash", "--device", dev, "--board", "skr-pico", "--method", "uf2",
			file, NULL);
	watch_start(&w);
	t0 = now_ms();
	r = sim_run(s, argv, 600000, &out);
	sleep_ms(1);
	watch_stop(&w);
	free(skr);
	strv_free(argv);
	if (r != 0 || !w.t_event) {
		fprintf(stderr, "skrbench: picoboot flash failed (%d):\n%s\n", r, out ? out : "");
		free(out);
		return -EIO;
	}
	free(out);
	*ret_ms = w.t_event - t0;
	(void)sim_board_wait_mode(b, SIM_MODE_KLIPPER_APP, 10000);
	return 0;
}

static void
section_picoboot(void)
{
	size_t app = O.quick ? 8 * 1024 : 44 * 1024, len, old_len;
	struct sim *s = sim_new();
	struct sim_board_spec spec = {.model = "skr-pico",
				      .port = "1-1",
				      .speed = O.quick ? 0.0 : 1.0,
				      .mode = SIM_MODE_BOOTSEL};
	struct sim_board *b = sim_board_add(s, &spec);
	const struct catalog_mcu *mcu = sim_board_model(b)->mcu;
	uint8_t *old = sim_image_rp2040(mcu, "v0.12.0-old", app, true, &old_len);
	uint8_t *img = sim_image_rp2040(mcu, "v0.13.0-new", app, true, &len);
	char *file = write_tmp("pico-new.bin", img, len);
	double t[MAX_RUNS], bound = picoboot_bound_ms(sim_board_model(b)->mcu, len), ratio;
	json_object *o = json_object_new_object();
	unsigned n = 0;

	fprintf(table, "\nRP2040 PICOBOOT at datasheet timing: %zu KiB, flash+verify\n",
		len / 1024);
	for (unsigned i = 0; i < O.reps; i++)
		if (pico_run(s, b, old, old_len, file, &t[n]) == 0)
			n++;
	ratio = n && !O.quick ? median(t, n) / bound : NAN;
	json_object_object_add(o, "board", json_object_new_string("skr-pico"));
	json_object_object_add(o, "image_kib", json_object_new_int((int)(len / 1024)));
	put_num(o, "device_bound_ms", O.quick ? NAN : bound);
	put_num(o, "skrflash_ms_median", n ? median(t, n) : NAN);
	json_object_object_add(o, "skrflash_runs_ms", json_array_of(t, n));
	put_num(o, "skrflash_vs_bound", ratio);
	json_object_object_add(results, "picoboot", o);
	put_num(results, "picoboot_vs_bound", ratio);
	rowf("skr-pico: skrflash / device bound", verdict(ratio, 1.2), "%.2fx  (<= 1.2x)", ratio);
	free(file);
	free(img);
	free(old);
	sim_free(s);
}

/* ---- section: the SD-card path through the running Klipper firmware ------------------ */

#define SD_RATE 4000000u /* spi_flash.py -s (its default is 400 kHz) */
#define SD_CARD_KIB (64u * 1024u)
/* Bytes on the SPI bus a sector needs at least (SD spec 7.3): a write is CMD24 (6), Ncr (1),
 * R1 (1), the start token (1), 512 bytes, CRC (2) and the data response (1), then the busy
 * time; a read is CMD17, Ncr, R1, the access time, the token, 512 bytes and CRC. */
#define SD_WRITE_SPI_BYTES 524.0
#define SD_READ_SPI_BYTES 523.0

struct sd_run {
	double ms, write_ms;
	uint64_t wr, rd;       /* sectors written and read during the run */
	uint64_t retries, rtx; /* sdcard retries, client retransmissions */
	unsigned tx_dropped;   /* responses the MCU dropped (transmit buffer full) */
};

/* The device bound of a run: every sector's SPI bytes at the bus clock plus the card's
 * busy (write) or access (read) time, plus the wire time of one command block before the
 * first SPI byte and one response block after the last. The rest of the USB traffic (under
 * 900 bytes each way per sector, 0.7 ms at 19 packets per frame, against at least 1.35 ms
 * of SPI and card time) overlaps with it in a pipelined host, so it adds nothing. */
static double
sd_bound_ms(uint64_t wr, uint64_t rd, double speed)
{
	double busy = SIM_SDCARD_WRITE_BUSY_US, access = SIM_SDCARD_READ_ACCESS_US;
	double byte_ms = 8.0 / SD_RATE * 1000.0 * speed;

	return (double)wr * (SD_WRITE_SPI_BYTES * byte_ms + busy / 1000.0 * speed) +
	       (double)rd * (SD_READ_SPI_BYTES * byte_ms + access / 1000.0 * speed) +
	       2 * 64.0 / WIRE_BYTES_PER_MS;
}

/* The issue's formula: the same plus the wire time of every command and response byte, as
 * if USB and SPI took turns. Per sector at least: the SPI bytes go out in spi_send /
 * spi_transfer blocks of 56 data bytes (64 on the wire); a read's access time is clocked too
 * and every clocked byte comes back in 64-byte response blocks; each block is acked (5). A
 * write needs a few answers (R1, data response, ready): two small blocks. Not a lower bound
 * (a pipelined host overlaps the two): reported beside the real one. */
static double
sd_issue_bound_ms(uint64_t wr, uint64_t rd, double speed)
{
	double access_bytes = SIM_SDCARD_READ_ACCESS_US * (SD_RATE / 8.0) / 1e6;
	double wblocks = ceil(SD_WRITE_SPI_BYTES / 56.0);
	double rblocks = ceil((SD_READ_SPI_BYTES + access_bytes) / 56.0);
	double wire =
	    (double)wr * (wblocks * (64 + 5) + 2 * 16) + (double)rd * rblocks * (64 + 64 + 5);

	return sd_bound_ms(wr, rd, speed) + wire / WIRE_BYTES_PER_MS;
}

struct sd_cmp {
	const uint8_t *want;
	size_t len, off;
};

static int
sd_cmp_sink(void *ctx, const uint8_t *data, size_t len)
{
	struct sd_cmp *c = ctx;

	if (c->off + len > c->len || memcmp(c->want + c->off, data, len) != 0)
		return -EIO;
	c->off += len;
	return 0;
}

/* Write firmware.bin and read it back through the FAT layer, as the engine does; the
 * timed part starts after the mount and the removal of the previous copy. */
static int
sd_once(struct klipper_client *kc, struct sdcard *sd, const uint8_t *data, size_t len,
	unsigned window, struct sim_board *b, struct sd_run *out)
{
	struct fat_vol *v = xcalloc(1, sizeof(*v));
	struct blockdev bd;
	struct fat_dirent e;
	struct sdcard_stats a, z;
	struct klipper_client_stats ka, kz;
	struct sim_klipper_stats sa, sz;
	struct sd_cmp cmp = {.want = data, .len = len};
	double t0;
	int r;

	sdcard_blockdev(sd, &bd);
	klipper_client_set_window(kc, window);
	r = fat_mount(v, &bd);
	if (r == 0 && fat_delete(v, "firmware.bin") == 0)
		r = fat_flush(v);
	sdcard_stats(sd, &a);
	klipper_client_stats(kc, &ka);
	sim_board_klipper_stats(b, &sa);
	t0 = now_ms();
	if (r == 0)
		r = fat_write(v, "firmware.bin", data, len);
	if (r == 0)
		r = fat_flush(v);
	out->write_ms = now_ms() - t0;
	if (r == 0)
		r = fat_find(v, "firmware.bin", &e);
	if (r == 0)
		r = fat_read(v, &e, sd_cmp_sink, &cmp);
	out->ms = now_ms() - t0;
	if (r == 0 && cmp.off != len)
		r = -EIO;
	if (r < 0)
		fprintf(stderr, "skrbench: sd run failed (%d): %s / %s\n", r, fat_error(v),
			sdcard_error(sd));
	sdcard_stats(sd, &z);
	klipper_client_stats(kc, &kz);
	sim_board_klipper_stats(b, &sz);
	out->wr = z.sectors_written - a.sectors_written;
	out->rd = z.sectors_read - a.sectors_read;
	out->retries = z.retries - a.retries;
	out->rtx = kz.retransmits - ka.retransmits;
	out->tx_dropped = sz.tx_dropped - sa.tx_dropped;
	fprintf(stderr,
		"skrbench: sd window %u: %.0f ms (write %.0f, read %.0f), %" PRIu64
		" written, %" PRIu64 " read, %" PRIu64 " blocks, %" PRIu64
		" retransmits, %u dropped, %" PRIu64 " lost, %" PRIu64 " sector retries\n",
		window, out->ms, out->write_ms, out->ms - out->write_ms, out->wr, out->rd,
		kz.blocks_sent - ka.blocks_sent, out->rtx, out->tx_dropped,
		kz.responses_lost - ka.responses_lost, out->retries);
	free(v);
	return r;
}

static int
sd_connect(struct sim_board *b, const char *model, struct klipper_client **kc, struct sdcard **sd)
{
	const struct catalog_sd_bus *def = catalog_sd_bus(catalog_find(model));
	struct klipper_spi_bus bus = {.rate = SD_RATE};
	char err[512] = "";
	int r;

	*sd = NULL;
	if (!def)
		return -ENOENT;
	bus.spi_bus = def->spi_bus;
	memcpy(bus.sw_pins, def->sw_pins, sizeof(bus.sw_pins));
	bus.cs_pin = def->cs_pin;
	r = klipper_client_open(sim_board_tty(b), NULL, kc, err, sizeof(err));
	if (r < 0) {
		fprintf(stderr, "skrbench: %s\n", err);
		return r;
	}
	r = klipper_client_spi_setup(*kc, &bus);
	if (r == 0)
		r = sdcard_open(*kc, sd);
	if (r < 0)
		fprintf(stderr, "skrbench: sd setup: %s %s\n", klipper_client_error(*kc),
			*sd ? sdcard_error(*sd) : "");
	return r;
}

static json_object *
sd_case(struct sim *s, const char *model, const char *port, size_t len, double *ret_ratio)
{
	char *img = xasprintf("%s/card-%s-%zu.img", O.tmp, model, len), *cmd;
	struct sim_board_spec spec = {.model = model,
				      .port = port,
				      .speed = O.quick ? 0.0 : 1.0,
				      .mode = SIM_MODE_KLIPPER_APP,
				      .plain_klipper_tty = true};
	struct sim_board *b = sim_board_add(s, &spec);
	struct klipper_client *kc = NULL;
	struct sdcard *sd = NULL;
	uint8_t *data = xmalloc(len);
	double fast[MAX_RUNS], slow[MAX_RUNS], bound = NAN, issue = NAN;
	struct sd_run run = {0}, last = {0};
	unsigned n = 0, tx_dropped = 0;
	uint64_t retries = 0, rtx = 0;
	json_object *o = json_object_new_object();

	for (size_t i = 0; i < len; i++)
		data[i] = (uint8_t)(i * 2654435761u >> 13);
	cmd = xasprintf("env -u LD_PRELOAD sh -c 'rm -f %s && mkfs.fat -F 32 -s 1 -C %s %u "
			">/dev/null'",
			img, img, SD_CARD_KIB);
	if (!b || system(cmd) != 0 || sim_board_set_sdcard(b, img, true) < 0 ||
	    sim_board_wait_mode(b, SIM_MODE_KLIPPER_APP, 10000) < 0 ||
	    sd_connect(b, model, &kc, &sd) < 0)
		goto out;
	/* pairs, A B A B: skrflash's window, then Klipper's one command at a time */
	for (unsigned i = 0; i < O.reps; i++) {
		if (sd_once(kc, sd, data, len, 0, b, &run) < 0)
			break;
		fast[n] = run.ms;
		last = run;
		retries += run.retries;
		rtx += run.rtx;
		tx_dropped += run.tx_dropped;
		if (sd_once(kc, sd, data, len, 1, b, &run) < 0)
			break;
		slow[n++] = run.ms;
	}
	bound = sd_bound_ms(last.wr, last.rd, O.quick ? 0.0 : 1.0);
	issue = sd_issue_bound_ms(last.wr, last.rd, O.quick ? 0.0 : 1.0);
out:
	json_object_object_add(o, "board", json_object_new_string(model));
	json_object_object_add(o, "image_kib", json_object_new_int((int)(len / 1024)));
	json_object_object_add(o, "sectors_written", json_object_new_int64((int64_t)last.wr));
	json_object_object_add(o, "sectors_read", json_object_new_int64((int64_t)last.rd));
	put_num(o, "device_bound_ms", O.quick ? NAN : bound);
	put_num(o, "skrflash_ms_median", n ? median(fast, n) : NAN);
	json_object_object_add(o, "skrflash_runs_ms", json_array_of(fast, n));
	put_num(o, "window1_ms_median", n ? median(slow, n) : NAN);
	json_object_object_add(o, "window1_runs_ms", json_array_of(slow, n));
	put_num(o, "skrflash_vs_bound", n && !O.quick ? median(fast, n) / bound : NAN);
	put_num(o, "window1_vs_bound", n && !O.quick ? median(slow, n) / bound : NAN);
	put_num(o, "issue_formula_bound_ms", O.quick ? NAN : issue);
	put_num(o, "skrflash_vs_issue_formula", n && !O.quick ? median(fast, n) / issue : NAN);
	put_num(o, "window1_vs_skrflash", n ? median_ratio(slow, fast, n) : NAN);
	json_object_object_add(o, "sd_retries", json_object_new_int64((int64_t)retries));
	json_object_object_add(o, "retransmits", json_object_new_int64((int64_t)rtx));
	json_object_object_add(o, "mcu_responses_dropped", json_object_new_int((int)tx_dropped));
	*ret_ratio = n && !O.quick ? median(fast, n) / bound : NAN;
	if (sd)
		sdcard_close(sd);
	klipper_client_close(kc);
	free(data);
	free(cmd);
	free(img);
	return o;
}

/* The simulator's own cost: a lone get_config round trip on an instant (speed 0) board,
 * the host, the pty and the simulator's service thread only. */
static double
sd_sim_round_trip_ms(struct sim *s)
{
	struct sim_board_spec spec = {.model = "skr-1.4-turbo",
				      .port = "8-9",
				      .mode = SIM_MODE_KLIPPER_APP,
				      .plain_klipper_tty = true};
	struct sim_board *b = sim_board_add(s, &spec);
	struct klipper_client *kc = NULL;
	double t[MAX_RUNS], t0;
	char err[256];
	unsigned n = 0;

	if (!b || sim_board_wait_mode(b, SIM_MODE_KLIPPER_APP, 10000) < 0 ||
	    klipper_client_open(sim_board_tty(b), NULL, &kc, err, sizeof(err)) < 0)
		return NAN;
	for (unsigned r = 0; r < O.reps; r++) {
		struct klipper_response resp;
		int i;

		t0 = now_ms();
		for (i = 0; i < 200; i++)
			if (klipper_client_query(kc, "get_config", NULL, 0, "config", &resp) < 0)
				break;
		if (i == 200)
			t[n++] = (now_ms() - t0) / 200;
	}
	klipper_client_close(kc);
	return n ? median(t, n) : NAN;
}

static void
section_sd(void)
{
	static const struct {
		const char *model, *port;
	} boards[] = {{"skr-1.4-turbo", "8-1"}, {"skr-pro", "8-2"}};
	size_t sizes[] = {100 * 1024, 400 * 1024};
	struct sim *s = sim_new();
	json_object *cases = json_object_new_array();
	double worst = NAN;

	double rt;

	if (O.quick)
		sizes[0] = sizes[1] = 8 * 1024;
	fprintf(table,
		"\nSD card through the Klipper app at datasheet timing (%u MHz SPI, card busy "
		"%u us per write, access %u us per read): write + read back firmware.bin\n",
		SD_RATE / 1000000, SIM_SDCARD_WRITE_BUSY_US, SIM_SDCARD_READ_ACCESS_US);
	for (size_t i = 0; i < ELEMENTSOF(boards); i++)
		for (size_t j = 0; j < (O.quick ? 1u : ELEMENTSOF(sizes)); j++) {
			char port[16], what[96];
			double ratio = NAN;
			json_object *o;

			snprintf(port, sizeof(port), "%s.%zu", boards[i].port, j + 1);
			o = sd_case(s, boards[i].model, port, sizes[j], &ratio);
			json_object_array_add(cases, o);
			snprintf(what, sizeof(what), "%s %zu KiB: skrflash / device bound",
				 boards[i].model, sizes[j] / 1024);
			rowf(what, verdict(ratio, 1.3), "%.2fx  (<= 1.3x)", ratio);
			if (isfinite(ratio) && !(ratio <= worst))
				worst = ratio;
		}
	rt = sd_sim_round_trip_ms(s);
	rowf("simulator: a lone Klipper round trip, device time 0", "", "%.3f ms", rt);
	json_object_object_add(results, "sd_cases", cases);
	put_num(results, "sd_vs_bound", worst);
	put_num(results, "sd_sim_round_trip_ms", rt);
	sim_free(s);
}

static void
usage(FILE *f)
{
	fprintf(f, "usage: skrbench [--quick] [--reps N] [--out FILE] [--build DIR] [--log FILE]\n"
		   "                [--only overhead,dfuse,changed,katapult,picoboot,sd,daemon]\n");
}

/* The command line into O; -1 to go on, else the exit code (0 after --help). */
static int
parse_args(int argc, char **argv, const char **ret_log, const char **ret_only)
{
	static const struct option lo[] = {
	    {"quick", no_argument, NULL, 'q'},
	    {"reps", required_argument, NULL, 'r'},
	    {"out", required_argument, NULL, 'o'},
	    {"build", required_argument, NULL, 'b'},
	    {"log", required_argument, NULL, 'l'},
	    {"only", required_argument, NULL, 'O'},
	    {"probe-katapult", no_argument, NULL, 'P'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	int c;

	O.build = "build";
	O.out = "bench/results.json";
	while ((c = getopt_long(argc, argv, "qr:o:b:l:O:h", lo, NULL)) != -1) {
		switch (c) {
		case 'q':
			O.quick = true;
			break;
		case 'r':
			O.reps = (unsigned)strtoul(optarg, NULL, 10);
			break;
		case 'o':
			O.out = optarg;
			break;
		case 'b':
			O.build = optarg;
			break;
		case 'l':
			*ret_log = optarg;
			break;
		case 'O':
			*ret_only = optarg;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (O.reps == 0)
		O.reps = O.quick ? 1 : 3;
	if (O.reps > MAX_RUNS)
		O.reps = MAX_RUNS;
	return -1;
}

/* The sections `--only` names (all without it), in the order of the table. */
static void
run_sections(const char *only)
{
#define WANT(name) (!only || strstr(only, name))
	if (WANT("overhead"))
		section_overhead();
	if (WANT("dfuse")) {
		section_dfuse_zero();
		section_dfuse_time();
	}
	if (WANT("changed"))
		section_changed();
	if (WANT("katapult"))
		section_katapult();
	if (WANT("picoboot"))
		section_picoboot();
	if (WANT("sd"))
		section_sd();
	if (WANT("daemon"))
		section_daemon();
#undef WANT
}

static int
write_results(double t_start)
{
	char *cmd;

	json_object_object_add(results, "quick", json_object_new_boolean(O.quick));
	json_object_object_add(results, "reps", json_object_new_int((int)O.reps));
	put_num(results, "bench_seconds", (now_ms() - t_start) / 1000);
	if (json_object_to_file_ext(O.out, results,
				    JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED) < 0) {
		fprintf(stdout, "skrbench: cannot write %s\n", O.out);
		return 1;
	}
	fprintf(table, "\nwrote %s (%.0f s)\n", O.out, (now_ms() - t_start) / 1000);
	json_object_put(results);
	cmd = xasprintf("rm -rf '%s'", O.tmp);
	(void)!system(cmd);
	free(cmd);
	return 0;
}

int
main(int argc, char **argv)
{
	const char *log = NULL, *only = NULL;
	char tmpl[] = "/tmp/skrbench.XXXXXX";
	double t_start;
	int r;

	if (argc == 4 && strcmp(argv[1], "--probe-katapult") == 0)
		return probe_katapult(argv[2], (unsigned)strtoul(argv[3], NULL, 10));
	if (private_netns())
		drop_stagger_ms = 0;
	sim_init(argc, argv);
	r = parse_args(argc, argv, &log, &only);
	if (r >= 0)
		return r;
	table = stdout;
	/* the programs under test talk a lot: their output goes to the log */
	if (log && !freopen(log, "w", stderr)) {
		fprintf(stdout, "skrbench: cannot write %s\n", log);
		return 1;
	}
	O.tmp = mkdtemp(tmpl);
	if (!O.tmp)
		return 1;
	results = json_object_new_object();
	t_start = now_ms();
	fprintf(table,
		"skrflash benchmarks%s: medians of %u runs, ratios from side-by-side "
		"pairs\n",
		O.quick ? " (quick smoke run: tiny images, device time zero)" : "", O.reps);
	run_sections(only);
	return write_results(t_start);
}
