/* SPDX-License-Identifier: GPL-2.0-or-later */
/* test_lpcdfu: the simulated LPC176x community DFU bootloader (1d50:6015). First its state
 * machine through lpcdfu_control, quirks and faults included; then the proof with the real
 * tool: dfu-util downloads an image into it and uploads it back inside a umockdev testbed,
 * and skrflash's own backend (flash/lpcdfu.c, over libusb) writes the identical bytes. */
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "flash/backend.h"
#include "image/image.h"
#include "proto/dfu.h"
#include "dfu_util.h"
#include "harness.h"
#include "lpcdfu.h"
#include "util.h"

#define NODE "/dev/bus/usb/001/007"

static int
ctl(struct lpcdfu_dev *d, uint8_t type, uint8_t req, uint16_t value, uint16_t len, uint8_t *data)
{
	uint8_t setup[8] = {type, req, (uint8_t)value, (uint8_t)(value >> 8),
			    0,	  0,   (uint8_t)len,   (uint8_t)(len >> 8)};
	static uint8_t scratch[4096];

	return lpcdfu_control(d, setup, data ? data : scratch);
}

static struct dfu_status_reply
getstatus(struct lpcdfu_dev *d)
{
	uint8_t b[6] = {0};
	struct dfu_status_reply s = {0xff, 0, 0xff, 0};

	if (ctl(d, DFU_REQTYPE_IN, DFU_REQ_GETSTATUS, 0, 6, b) == 6)
		(void)dfu_status_decode(b, 6, &s);
	return s;
}

static int
dnload(struct lpcdfu_dev *d, uint16_t block, const uint8_t *data, uint16_t len)
{
	uint8_t buf[LPCDFU_BLOCK];

	if (len)
		memcpy(buf, data, len);
	return ctl(d, DFU_REQTYPE_OUT, DFU_REQ_DNLOAD, block, len, buf);
}

static struct flash *
lpc_flash(double speed)
{
	return flash_new(catalog_mcu_find("lpc1769"), speed);
}

struct calls {
	atomic_uint n;
};

static void
on_event(void *ctx)
{
	struct calls *c = ctx;

	atomic_fetch_add(&c->n, 1);
}

static void
test_descriptors(void)
{
	struct flash *f = lpc_flash(0);
	struct lpcdfu_dev *d = lpcdfu_new(f);
	uint8_t desc[LPCDFU_MAX_DESCRIPTORS];
	struct dfu_func_desc fd;
	size_t n = lpcdfu_descriptors(d, desc, sizeof(desc));

	CHECK_EQ_INT(n, 18 + 27);
	CHECK_EQ_INT(desc[8] | desc[9] << 8, 0x1d50);
	CHECK_EQ_INT(desc[10] | desc[11] << 8, 0x6015);
	CHECK_EQ_INT(desc[16], 0); /* no serial number string */
	CHECK_EQ_INT(dfu_func_desc_parse(desc + 18, n - 18, &fd), 0);
	/* dfu.c: WILLDETACH|CANDOWNLOAD|CANUPLOAD, 500 ms, 512, DFU 1.1 */
	CHECK_EQ_INT(fd.attributes, 0x0b);
	CHECK_EQ_INT(fd.detach_timeout, 500);
	CHECK_EQ_INT(fd.transfer_size, 512);
	CHECK_EQ_INT(fd.bcd_dfu, 0x0101);
	CHECK_STREQ(lpcdfu_string(d, LPCDFU_STR_INTERFACE), "Smoothie DFU");
	lpcdfu_free(d);
	flash_free(f);
}

/* Download in order, the short last block's stale tail, upload, abort, manifest. */
static void
test_download_upload(void)
{
	struct flash *f = lpc_flash(0);
	struct lpcdfu_dev *d = lpcdfu_new(f);
	struct calls man = {0};
	struct dfu_status_reply s;
	struct lpcdfu_stats st;
	uint8_t a[LPCDFU_BLOCK], b[LPCDFU_BLOCK], back[LPCDFU_BLOCK], old[64];

	memset(old, 0x5a, sizeof(old));
	CHECK_EQ_INT(flash_load(f, 0x3f00, old, sizeof(old)), 0); /* the bootloader's last bytes */
	lpcdfu_set_manifest_cb(d, on_event, &man);
	s = getstatus(d);
	CHECK_EQ_INT(s.status, DFU_STATUS_OK);
	CHECK_EQ_INT(s.state, DFU_STATE_IDLE);
	CHECK_EQ_INT(s.poll_timeout_ms, 500);
	memset(a, 0xa1, sizeof(a));
	memset(b, 0xb2, sizeof(b));
	CHECK_EQ_INT(dnload(d, 0, a, sizeof(a)), 512);
	s = getstatus(d); /* programmed in the data stage: idle at once */
	CHECK_EQ_INT(s.state, DFU_STATE_DNLOAD_IDLE);
	CHECK_EQ_INT(s.status, DFU_STATUS_OK);
	CHECK_EQ_INT(dnload(d, 1, b, 100), 100); /* a short last block */
	s = getstatus(d);
	CHECK_EQ_INT(s.state, DFU_STATE_DNLOAD_IDLE);
	CHECK(flash_equals(f, 0x4000, a, 512));
	CHECK(flash_equals(f, 0x4200, b, 100));
	/* write_flash() always programs 512 bytes: the rest is block 0's data */
	CHECK(flash_equals(f, 0x4200 + 100, a + 100, 412));
	CHECK(flash_equals(f, 0x3f00, old, sizeof(old)));
	lpcdfu_get_stats(d, &st);
	CHECK_EQ_INT(st.erases, 1); /* sector 4 (0x4000) once, on its first block */
	CHECK_EQ_INT(st.blocks, 2);
	CHECK_EQ_INT(st.out_of_order, 0);

	CHECK_EQ_INT(ctl(d, DFU_REQTYPE_OUT, DFU_REQ_ABORT, 0, 0, NULL), 0);
	CHECK_EQ_INT(getstatus(d).state, DFU_STATE_IDLE);
	CHECK_EQ_INT(ctl(d, DFU_REQTYPE_IN, DFU_REQ_UPLOAD, 1, 512, back), 512);
	CHECK(memcmp(back, b, 100) == 0);
	CHECK_EQ_INT(getstatus(d).state, DFU_STATE_UPLOAD_IDLE);
	/* past the user flash: a zero-length reply ends dfu-util's upload */
	CHECK_EQ_INT(ctl(d, DFU_REQTYPE_IN, DFU_REQ_UPLOAD, 0x7c000 / 512, 512, back), 0);
	CHECK_EQ_INT(ctl(d, DFU_REQTYPE_IN, DFU_REQ_UPLOAD, 0x7c000 / 512 - 1, 512, back), 512);

	/* zero-length DNLOAD from any state: manifest on the next GETSTATUS, then gone */
	CHECK_EQ_INT(dnload(d, 2, NULL, 0), 0);
	CHECK_EQ_INT(atomic_load(&man.n), 0);
	s = getstatus(d);
	CHECK_EQ_INT(s.state, DFU_STATE_MANIFEST_WAIT_RESET);
	CHECK_EQ_INT(atomic_load(&man.n), 1);
	CHECK_EQ_INT(ctl(d, DFU_REQTYPE_IN, DFU_REQ_GETSTATUS, 0, 6, NULL), -ENODEV);
	CHECK(!lpcdfu_power_off(d)); /* a finished download is not torn */
	lpcdfu_free(d);
	flash_free(f);
}

/* A block whose sector start was skipped lands on flash nobody erased: the IAP programs the
 * AND of old and new, and only a read-back can tell. */
static void
test_out_of_sequence(void)
{
	struct flash *f = lpc_flash(0);
	struct lpcdfu_dev *d = lpcdfu_new(f);
	uint8_t old[LPCDFU_BLOCK], neu[LPCDFU_BLOCK], back[LPCDFU_BLOCK];
	struct lpcdfu_stats st;

	memset(old, 0x0f, sizeof(old));
	memset(neu, 0xf3, sizeof(neu));
	CHECK_EQ_INT(flash_load(f, 0x5200, old, sizeof(old)), 0); /* an older app's bytes */
	/* block 9 = 0x5200: sector 5 starts at 0x5000 (block 8), which never came */
	CHECK_EQ_INT(dnload(d, 9, neu, sizeof(neu)), 512);
	CHECK_EQ_INT(getstatus(d).state, DFU_STATE_DNLOAD_IDLE); /* no error reported */
	CHECK_EQ_INT(flash_read(f, 0x5200, back, sizeof(back)), 0);
	CHECK_EQ_INT(back[0], 0x03);
	CHECK(!flash_equals(f, 0x5200, neu, sizeof(neu)));
	lpcdfu_get_stats(d, &st);
	CHECK_EQ_INT(st.out_of_order, 1);
	CHECK_EQ_INT(st.not_erased, 1);
	CHECK_EQ_INT(st.erases, 0);
	/* beyond the user flash: errADDRESS, then the IAP write fails: errPROG */
	CHECK_EQ_INT(dnload(d, 0x7c000 / 512, neu, sizeof(neu)), 512);
	CHECK_EQ_INT(getstatus(d).status, DFU_STATUS_ERR_PROG);
	lpcdfu_free(d);
	flash_free(f);
}

static void
test_faults(void)
{
	struct flash *f = lpc_flash(0);
	struct lpcdfu_dev *d = lpcdfu_new(f);
	struct calls unplug = {0};
	uint8_t a[LPCDFU_BLOCK];
	struct dfu_status_reply s;

	memset(a, 0x21, sizeof(a));
	lpcdfu_fail_write_at(d, 2);
	CHECK_EQ_INT(dnload(d, 0, a, sizeof(a)), 512);
	CHECK_EQ_INT(getstatus(d).state, DFU_STATE_DNLOAD_IDLE);
	CHECK_EQ_INT(dnload(d, 1, a, sizeof(a)), 512);
	s = getstatus(d);
	CHECK_EQ_INT(s.state, DFU_STATE_ERROR);
	CHECK_EQ_INT(s.status, DFU_STATUS_ERR_PROG);
	CHECK(flash_is_erased(f, 0x4200, 512));
	CHECK_EQ_INT(ctl(d, DFU_REQTYPE_OUT, DFU_REQ_CLRSTATUS, 0, 0, NULL), 0);
	s = getstatus(d);
	CHECK_EQ_INT(s.state, DFU_STATE_IDLE);
	CHECK_EQ_INT(s.status, DFU_STATUS_OK);

	/* the cable pulled at block 3: blocks 0-2 are in flash, the download is torn */
	lpcdfu_fail_write_at(d, 0);
	lpcdfu_set_unplug_at(d, 0x4600, on_event, &unplug);
	for (uint16_t blk = 0; blk < 3; blk++) {
		CHECK_EQ_INT(dnload(d, blk, a, sizeof(a)), 512);
		CHECK_EQ_INT(getstatus(d).state, DFU_STATE_DNLOAD_IDLE);
	}
	CHECK_EQ_INT(dnload(d, 3, a, sizeof(a)), -ENODEV);
	CHECK_EQ_INT(atomic_load(&unplug.n), 1);
	CHECK(flash_is_erased(f, 0x4600, 512));
	CHECK(lpcdfu_power_off(d));
	lpcdfu_free(d);
	flash_free(f);
}

/* ---- dfu-util and the backend under umockdev ---- */

static void
add_device(UMockdevTestbed *tb, struct lpcdfu_dev *d)
{
	uint8_t desc[LPCDFU_MAX_DESCRIPTORS];
	size_t n = lpcdfu_descriptors(d, desc, sizeof desc);
	char h[2 * LPCDFU_MAX_DESCRIPTORS + 1];
	GError *err = NULL;
	char *rec;

	for (size_t i = 0; i < n; i++)
		snprintf(h + 2 * i, 3, "%02x", desc[i]);
	rec = xasprintf(
	    "P: /devices/pci0000:00/0000:00:14.0/usb1/1-3\n"
	    "N: bus/usb/001/007\n"
	    "E: DEVNAME=" NODE "\nE: DEVTYPE=usb_device\nE: SUBSYSTEM=usb\n"
	    "E: DRIVER=usb\nE: BUSNUM=001\nE: DEVNUM=007\nE: ID_VENDOR_ID=1d50\n"
	    "E: ID_MODEL_ID=6015\nE: ID_PATH=pci-0000:00:14.0-usb-0:3\n"
	    "A: idVendor=1d50\nA: idProduct=6015\nA: bcdDevice=0040\n"
	    "A: manufacturer=SmoothieWare\nA: product=Smoothie\n"
	    "A: busnum=1\nA: devnum=7\nA: devpath=3\nA: speed=12\nA: bConfigurationValue=1\n"
	    "A: bNumConfigurations=1\nA: dev=189:6\n"
	    "L: driver=../../../../../bus/usb/drivers/usb\n"
	    "H: descriptors=%s\n",
	    h);
	if (!umockdev_testbed_add_from_string(tb, rec, &err)) {
		fprintf(stderr, "add_from_string: %s\n", err->message);
		exit(1);
	}
	free(rec);
}

/* A board in LPC DFU with an old app; returns its flash. */
static struct flash *
board_flash(uint8_t *bl, uint32_t bl_len)
{
	struct flash *f = lpc_flash(0.02);
	uint8_t old[8192];

	for (uint32_t i = 0; i < bl_len; i++)
		bl[i] = (uint8_t)(i * 13 + 1);
	CHECK_EQ_INT(flash_load(f, 0, bl, bl_len), 0);
	memset(old, 0x11, sizeof(old));
	CHECK_EQ_INT(flash_load(f, 0x4000, old, sizeof(old)), 0);
	return f;
}

/* The backend's open, write, verify and leave on the device at NODE; an image with an
 * address when load is not 0. */
static int
backend_flash(const uint8_t *img, size_t len, uint32_t load, char *err, size_t errlen)
{
	const struct flash_backend *be = backend_for_mode(DEVICE_MODE_LPC_DFU);
	struct image im = {.format = IMAGE_FORMAT_BIN,
			   .has_load_address = load != 0,
			   .load_address = load,
			   .data = (uint8_t *)(uintptr_t)img,
			   .size = len};
	struct device dev = {.busnum = 1, .devnum = 7, .mode = DEVICE_MODE_LPC_DFU};
	struct flash_session s = {.dev = &dev, .img = &im};
	int r;

	snprintf(dev.usb_node, sizeof(dev.usb_node), NODE);
	snprintf(dev.port, sizeof(dev.port), "1-3");
	CHECK(be != NULL);
	CHECK_STREQ(be->name, "lpc-dfu");
	r = be->open(&s);
	if (r >= 0) {
		CHECK_EQ_INT(s.reported_app_start, 0x4000);
		r = be->write(&s);
	}
	if (r >= 0)
		r = be->verify(&s);
	if (r >= 0)
		r = be->leave(&s);
	snprintf(err, errlen, "%s", s.error);
	be->close(&s);
	return r;
}

/* The fidelity run: one image, a board for dfu-util (f) and one for the backend (g). */
struct fid {
	UMockdevTestbed *tb;
	uint8_t bl[0x4000];
	struct flash *f, *g;
	uint8_t *img;
	uint32_t img_len;
	char *img_path, *up_path, *log;
};

/* A device in LPC DFU on `flash` at NODE, its manifests counted in man (if not NULL). */
static struct lpcdfu_dev *
fid_device(const struct fid *x, struct flash *flash, struct calls *man)
{
	struct lpcdfu_dev *d = lpcdfu_new(flash);

	CHECK_EQ_INT(lpcdfu_attach(d, x->tb, NODE), 0);
	if (man)
		lpcdfu_set_manifest_cb(d, on_event, man);
	return d;
}

static void
fid_device_gone(const struct fid *x, struct lpcdfu_dev *d)
{
	lpcdfu_detach(d, x->tb, NODE);
	(void)lpcdfu_free(d);
}

/* Klipper's flash_usb.py: `dfu-util -p <port> -D klipper.bin` */
static void
fid_dfu_util_download(const struct fid *x)
{
	const char *dn_args[] = {"-d", "1d50:6015", "-D", x->img_path, NULL};
	struct lpcdfu_dev *d = lpcdfu_new(x->f);
	struct calls man = {0};
	struct lpcdfu_stats st;
	int rc;

	add_device(x->tb, d);
	CHECK_EQ_INT(lpcdfu_attach(d, x->tb, NODE), 0);
	lpcdfu_set_manifest_cb(d, on_event, &man);
	rc = dfu_util_run(x->log, "120", dn_args);
	if (rc != 0 || getenv("TEST_LPCDFU_VERBOSE"))
		dfu_util_show_log(x->log);
	CHECK_EQ_INT(rc, 0);
	CHECK_EQ_INT(atomic_load(&man.n), 1);
	CHECK(flash_equals(x->f, 0x4000, x->img, x->img_len));
	CHECK(flash_equals(x->f, 0, x->bl, sizeof(x->bl))); /* the bootloader stays */
	lpcdfu_get_stats(d, &st);
	CHECK_EQ_INT(st.blocks, (x->img_len + 511) / 512);
	CHECK_EQ_INT(st.out_of_order, 0);
	CHECK_EQ_INT(st.not_erased, 0);
	CHECK(st.manifested);
	fprintf(stderr, "  dfu-util -D: %llu control transfers (%llu GETSTATUS), %llu erases\n",
		(unsigned long long)st.control, (unsigned long long)st.request[DFU_REQ_GETSTATUS],
		(unsigned long long)st.erases);
	fid_device_gone(x, d);
}

/* back in DFU (button): dfu-util reads everything up to the zero-length reply */
static void
fid_dfu_util_upload(const struct fid *x)
{
	const char *up_args[] = {"-d", "1d50:6015", "-U", x->up_path, NULL};
	struct lpcdfu_dev *d = fid_device(x, x->f, NULL);
	uint8_t *data = NULL;
	size_t size = 0;
	int rc = dfu_util_run(x->log, "120", up_args);

	if (rc != 0)
		dfu_util_show_log(x->log);
	CHECK_EQ_INT(rc, 0);
	CHECK_EQ_INT(read_file(x->up_path, 1u << 20, &data, &size), 0);
	CHECK_EQ_INT(size, 0x7c000);
	CHECK(data && size >= x->img_len && memcmp(data, x->img, x->img_len) == 0);
	free(data);
	fid_device_gone(x, d);
}

/* skrflash's backend on a second board: the very same bytes where the image goes */
static void
fid_backend_write(const struct fid *x)
{
	struct calls man = {0};
	struct lpcdfu_dev *d = fid_device(x, x->g, &man);
	uint8_t *back = xmalloc(0x80000);
	struct lpcdfu_stats st;
	char err[512];
	int rc = backend_flash(x->img, x->img_len, 0, err, sizeof(err));

	if (rc < 0)
		fprintf(stderr, "backend: %s\n", err);
	CHECK_EQ_INT(rc, 0);
	CHECK_EQ_INT(atomic_load(&man.n), 1);
	CHECK_EQ_INT(flash_read(x->f, 0, back, 0x4000 + x->img_len), 0);
	CHECK(flash_equals(x->g, 0, back, 0x4000 + x->img_len));
	/* past the image it pads with erased flash, dfu-util leaves stale buffer bytes */
	CHECK(x->img_len % 512 == 0 ||
	      flash_is_erased(x->g, 0x4000 + x->img_len, 512 - x->img_len % 512));
	lpcdfu_get_stats(d, &st);
	CHECK_EQ_INT(st.bytes_read, x->img_len); /* verified by upload */
	CHECK_EQ_INT(st.out_of_order, 0);
	fprintf(stderr,
		"  lpc-dfu backend, write + verify + leave: %llu control transfers (%llu "
		"GETSTATUS, %llu UPLOAD), %llu erases\n",
		(unsigned long long)st.control, (unsigned long long)st.request[DFU_REQ_GETSTATUS],
		(unsigned long long)st.uploads, (unsigned long long)st.erases);
	free(back);
	fid_device_gone(x, d);
}

/* an injected IAP failure: the backend stops, says where, and does not leave */
static void
fid_backend_errprog(const struct fid *x)
{
	struct calls man = {0};
	struct lpcdfu_dev *d = fid_device(x, x->g, &man);
	struct lpcdfu_stats st;
	char err[512];
	int rc;

	lpcdfu_fail_write_at(d, 5);
	rc = backend_flash(x->img, x->img_len, 0, err, sizeof(err));
	fprintf(stderr, "backend with errPROG: %s\n", err);
	CHECK_EQ_INT(rc, -EIO);
	CHECK(strstr(err, "block 4 (0x04800)") != NULL);
	CHECK(strstr(err, "errPROG") != NULL);
	CHECK_EQ_INT(atomic_load(&man.n), 0);
	lpcdfu_get_stats(d, &st);
	CHECK_EQ_INT(st.state, DFU_STATE_IDLE); /* cleared for the next attempt */
	fid_device_gone(x, d);
}

/* `skrflashctl reboot`: open and leave, nothing written, the application starts */
static void
fid_backend_reboot(const struct fid *x)
{
	struct calls man = {0};
	struct lpcdfu_dev *d = fid_device(x, x->g, &man);
	const struct flash_backend *be = backend_for_mode(DEVICE_MODE_LPC_DFU);
	struct device dev = {.busnum = 1, .devnum = 7, .mode = DEVICE_MODE_LPC_DFU};
	struct flash_session s = {.dev = &dev};
	struct lpcdfu_stats st;

	snprintf(dev.usb_node, sizeof(dev.usb_node), NODE);
	CHECK_EQ_INT(be->open(&s), 0);
	CHECK_EQ_INT(be->leave(&s), 0);
	be->close(&s);
	CHECK_EQ_INT(atomic_load(&man.n), 1);
	lpcdfu_get_stats(d, &st);
	CHECK_EQ_INT(st.blocks, 0);
	CHECK_EQ_INT(st.erases, 0);
	fid_device_gone(x, d);
}

/* an image linked for another address is refused before the first block */
static void
fid_backend_wrong_address(const struct fid *x)
{
	struct lpcdfu_dev *d = fid_device(x, x->g, NULL);
	struct lpcdfu_stats st;
	char err[512];

	CHECK_EQ_INT(backend_flash(x->img, x->img_len, 0x8000, err, sizeof(err)), -EINVAL);
	CHECK(strstr(err, "16KiB bootloader offset") != NULL);
	lpcdfu_get_stats(d, &st);
	CHECK_EQ_INT(st.blocks, 0);
	fid_device_gone(x, d);
}

static void
fidelity(const char *dir, uint32_t img_len)
{
	struct fid x = {.tb = umockdev_testbed_new(), .img_len = img_len};

	x.f = board_flash(x.bl, sizeof(x.bl));
	x.g = board_flash(x.bl, sizeof(x.bl));
	x.img = xmalloc(img_len);
	x.img_path = xasprintf("%s/klipper.bin", dir);
	x.up_path = xasprintf("%s/up.bin", dir);
	x.log = xasprintf("%s/dfu-util.log", dir);
	fprintf(stderr, "fidelity: %u bytes\n", img_len);
	dfu_util_image(x.img, img_len, 0x10007fe0, 0x4000, 48);
	CHECK_EQ_INT(write_file_atomic(x.img_path, x.img, img_len, 0644), 0);
	fid_dfu_util_download(&x);
	fid_dfu_util_upload(&x);
	fid_backend_write(&x);
	fid_backend_errprog(&x);
	fid_backend_reboot(&x);
	fid_backend_wrong_address(&x);
	g_object_unref(x.tb);
	unlink(x.img_path);
	unlink(x.up_path);
	unlink(x.log);
	free(x.img);
	free(x.img_path);
	free(x.up_path);
	free(x.log);
	flash_free(x.f);
	flash_free(x.g);
}

int
main(int argc, char **argv)
{
	const char *tmp = getenv("TMPDIR");
	char *dir = xasprintf("%s/test_lpcdfu.XXXXXX", tmp && *tmp ? tmp : "/tmp");

	(void)argc;
	dfu_util_preload(argv);
	test_descriptors();
	test_download_upload();
	test_out_of_sequence();
	test_faults();
	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return 1;
	}
	fidelity(dir, 30001);
	fidelity(dir, 8192);
	rmdir(dir);
	free(dir);
	TEST_DONE();
}
