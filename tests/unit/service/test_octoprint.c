/* SPDX-License-Identifier: GPL-2.0-or-later */
/* octoprint: the reply and record parsers, the state table, the connect body, port matching
 * through links, and the gate and the reconnect against tests/integration/fake_octoprint.py
 * (printing, idle + release, another board's connection, unreachable, refused key, missing
 * key file, HTTP 500, a server slower than the timeout, the port given back and its record
 * removed). */
#include <errno.h>
#include <fcntl.h>
#include <pty.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "integration/hostproc.h"
#include "service/octoprint.h"
#include "util.h"

#define KEY "OCTOPRINTKEY0123456789ABCDEF0000"

static int
conn(const char *json, struct octoprint_conn *c)
{
	return octoprint_parse_connection(json, strlen(json), c);
}

static int
job(const char *json, char *state, size_t size)
{
	return octoprint_parse_job(json, strlen(json), state, size);
}

static int
record(const char *json, struct octoprint_record *r)
{
	return octoprint_record_parse(json, strlen(json), r);
}

static void
test_parse(void)
{
	struct octoprint_conn c;
	struct octoprint_record rec;
	char state[16], *body;
	const char *bad[] = {
	    "",
	    "{}",
	    "{\"current\": {}}",
	    "{\"current\": {\"state\": 1}}",
	    "{\"current\": {\"state\": \"Operational\", \"port\": 5}}",
	    "{\"current\": {\"state\": \"Operational\", \"baudrate\": \"fast\"}}",
	    "{\"current\": {\"state\": \"Operational\", \"baudrate\": -1}}",
	    "{\"current\": {\"state\": \"Operational\"}} junk",
	    "[\"current\"]",
	};

	CHECK_EQ_INT(conn("{\"current\": {\"state\": \"Operational\", \"port\": \"/dev/ttyACM0\", "
			  "\"baudrate\": 250000, \"printerProfile\": \"_default\"}, \"options\": "
			  "{\"ports\": [\"/dev/ttyACM0\", \"VIRTUAL\"]}}\n",
			  &c),
		     0);
	CHECK_STREQ(c.state, "Operational");
	CHECK_STREQ(c.port, "/dev/ttyACM0");
	CHECK_EQ_INT(c.baudrate, 250000);
	CHECK_STREQ(c.profile, "_default");
	/* not connected: printer/standard.py get_current_connection */
	CHECK_EQ_INT(
	    conn("{\"current\": {\"state\": \"Closed\", \"port\": null, \"baudrate\": null, "
		 "\"printerProfile\": null}}",
		 &c),
	    0);
	CHECK_STREQ(c.state, "Closed");
	CHECK_STREQ(c.port, "");
	CHECK_EQ_INT(c.baudrate, 0);
	for (size_t i = 0; i < ELEMENTSOF(bad); i++)
		CHECK_EQ_INT(conn(bad[i], &c), -EBADMSG);
	CHECK_EQ_INT(octoprint_parse_connection("{\"current\":{\"state\":\"a\"}}\0x", 28, &c),
		     -EBADMSG);

	CHECK_EQ_INT(
	    job("{\"job\": {}, \"progress\": {}, \"state\": \"Printing\"}", state, sizeof(state)),
	    0);
	CHECK_STREQ(state, "Printing");
	/* truncated and escaped, never overflowing */
	CHECK_EQ_INT(job("{\"state\": \"Printing from SD\\n and more\"}", state, sizeof(state)), 0);
	CHECK(strlen(state) < sizeof(state) && !strchr(state, '\n'));
	CHECK_EQ_INT(job("{\"state\": 3}", state, sizeof(state)), -EBADMSG);
	CHECK_EQ_INT(job("{\"job\": {}}", state, sizeof(state)), -EBADMSG);

	body = octoprint_connect_body(
	    &(struct octoprint_conn){.baudrate = 115200, .profile = "skr"}, "/dev/serial/by-id/x");
	CHECK_STREQ(body, "{\"command\":\"connect\",\"port\":\"\\/dev\\/serial\\/by-id\\/x\","
			  "\"baudrate\":115200,\"printerProfile\":\"skr\"}");
	free(body);
	/* no baudrate (auto) and no profile: OctoPrint's preferences */
	body = octoprint_connect_body(&(struct octoprint_conn){0}, "/dev/ttyACM0");
	CHECK_STREQ(body, "{\"command\":\"connect\",\"port\":\"\\/dev\\/ttyACM0\"}");
	free(body);

	CHECK_EQ_INT(record("{\"url\":\"http://h:5000\",\"api_key_file\":\"/k\","
			    "\"board\":\"skr-pro\",\"port\":\"/dev/ttyACM0\","
			    "\"baudrate\":250000,\"printerProfile\":\"p\"}",
			    &rec),
		     0);
	CHECK_STREQ(rec.url, "http://h:5000");
	CHECK_STREQ(rec.conn.port, "/dev/ttyACM0");
	CHECK_EQ_INT(rec.conn.baudrate, 250000);
	CHECK_EQ_INT(record("{\"url\":\"http://h\"}", &rec), -EBADMSG);
	CHECK_EQ_INT(record("{\"url\":\"\",\"port\":\"/dev/x\"}", &rec), -EBADMSG);
}

static void
test_activity(void)
{
	const char *idle[] = {"Operational", "Offline", "Closed", "Error", "Offline after error"};
	const char *busy[] = {"Printing",
			      "Paused",
			      "Pausing",
			      "Resuming",
			      "Cancelling",
			      "Finishing",
			      "Starting",
			      "Printing from SD",
			      "Sending file to SD",
			      "Starting print from SD",
			      "Transferring file to SD"};
	const char *unknown[] = {"Connecting",
				 "Opening serial connection",
				 "Detecting serial connection",
				 "Unknown State (42)",
				 "",
				 "operational"};

	for (size_t i = 0; i < ELEMENTSOF(idle); i++)
		CHECK_EQ_INT(octoprint_activity(idle[i]), OCTOPRINT_IDLE);
	for (size_t i = 0; i < ELEMENTSOF(busy); i++)
		CHECK_EQ_INT(octoprint_activity(busy[i]), OCTOPRINT_BUSY);
	for (size_t i = 0; i < ELEMENTSOF(unknown); i++)
		CHECK_EQ_INT(octoprint_activity(unknown[i]), OCTOPRINT_UNKNOWN);
}

/* by-id and by-path links are relative, as udev makes them; another tty is not the board */
static void
test_port_match(const char *dir)
{
	char *tty = xasprintf("%s/dev/ttyACM0", dir), *other = xasprintf("%s/dev/ttyACM1", dir);
	char *byid = xasprintf("%s/dev/serial/by-id/usb-Klipper-if00", dir);
	char *bypath = xasprintf("%s/dev/serial/by-path/pci-usb-0:1.2:1.0", dir);
	char *sub = xasprintf("%s/dev/serial/by-id", dir),
	     *sub2 = xasprintf("%s/dev/serial/by-path", dir);

	CHECK_EQ_INT(mkdir_p(sub, 0755), 0);
	CHECK_EQ_INT(mkdir_p(sub2, 0755), 0);
	CHECK_EQ_INT(write_file_atomic(tty, "", 0, 0600), 0);
	CHECK_EQ_INT(write_file_atomic(other, "", 0, 0600), 0);
	CHECK_EQ_INT(symlink("../../ttyACM0", byid), 0);
	CHECK_EQ_INT(symlink("../../ttyACM0", bypath), 0);
	CHECK(octoprint_port_is_board(tty, tty, ""));
	CHECK(octoprint_port_is_board(byid, tty, ""));
	CHECK(octoprint_port_is_board(bypath, tty, byid));
	CHECK(octoprint_port_is_board("/dev/serial/by-id/whatever", tty,
				      "/dev/serial/by-id/whatever"));
	CHECK(!octoprint_port_is_board(other, tty, byid));
	CHECK(!octoprint_port_is_board(byid, other, ""));
	CHECK(!octoprint_port_is_board("VIRTUAL", tty, byid));
	CHECK(!octoprint_port_is_board("", tty, byid));
	CHECK(!octoprint_port_is_board(byid, "", ""));
	free(tty);
	free(other);
	free(byid);
	free(bypath);
	free(sub);
	free(sub2);
}

/* ---- live, against fake_octoprint.py ------------------------------------------------------ */

static pid_t server_pid;
static int server_in = -1;
static char url[64], calls[256];

static void
start_server(const char *root)
{
	char *copy = xstrdup(root);
	char *a[] = {(char[]){"python3"}, (char[]){"tests/integration/fake_octoprint.py"}, copy,
		     calls, NULL};
	char port[16] = "";

	server_pid = hostproc_fake(a, &server_in, port, sizeof(port));
	CHECK(server_pid > 0);
	CHECK(port[0] != 0);
	snprintf(url, sizeof(url), "http://127.0.0.1:%s", port);
	free(copy);
}

static int
post(const char *path, const char *body)
{
	struct octoprint_reply rep;

	return octoprint_request(url, KEY, path, body, 5000, NULL, &rep);
}

static char *
gate(struct octoprint_target *t, bool *ok)
{
	char *msg = NULL;

	*ok = octoprint_gate_run(t, &msg);
	return msg;
}

static bool
log_has(const char *needle)
{
	uint8_t *data = NULL;
	size_t n = 0;
	bool found = false;

	if (read_file(calls, 1 << 20, &data, &n) == 0) {
		data = xreallocarray(data, n + 1, 1);
		data[n] = 0;
		found = strstr((char *)data, needle) != NULL;
	}
	free(data);
	return found;
}

static void
on_done(void *userdata, const char *usb_port)
{
	(void)usb_port;
	(*(int *)userdata)++;
}

/* What the live steps share: the target and the files. */
struct live {
	struct octoprint_target t;
	char *key, *bad, *rec;
};

/* OctoPrint's connection as it says now. */
static void
connection(struct octoprint_conn *c)
{
	struct octoprint_reply rep;
	char *body = NULL;

	CHECK_EQ_INT(octoprint_request(url, KEY, "/api/connection", NULL, 5000, &body, &rep), 0);
	CHECK_EQ_INT(octoprint_parse_connection(body ? body : "", body ? strlen(body) : 0, c), 0);
	free(body);
}

/* Printing, paused, a refused or missing key, HTTP 500, a slow server: refused, nothing
 * released; another board: left alone. */
static void
live_refusals(struct live *l)
{
	struct octoprint_target *t = &l->t;
	struct timespec a, b;
	char *msg;
	bool ok;

	/* printing, paused: refused, nothing released */
	CHECK_EQ_INT(post("/_fake/state", "{\"state\":\"Printing\"}"), 0);
	msg = gate(t, &ok);
	CHECK(!ok && strstr(msg, "is Printing; not flashing skr-pro now"));
	free(msg);
	CHECK_EQ_INT(post("/_fake/state", "{\"state\":\"Cancelling\"}"), 0);
	msg = gate(t, &ok);
	CHECK(!ok && strstr(msg, "is Cancelling"));
	free(msg);
	CHECK(!log_has("POST disconnect"));
	CHECK(access(l->rec, F_OK) < 0);

	/* another board: left alone */
	CHECK_EQ_INT(post("/_fake/state", "{\"state\":\"Printing\"}"), 0);
	t->tty = "/dev/ttyACM1";
	msg = gate(t, &ok);
	CHECK(ok && strstr(msg, "its connection is left alone"));
	free(msg);
	t->tty = "/dev/ttyACM0";

	/* refused key, missing key file */
	t->key_file = l->bad;
	msg = gate(t, &ok);
	CHECK(!ok && strstr(msg, "refused the API key from") && strstr(msg, "403"));
	free(msg);
	t->key_file = "/nonexistent/octoprint.key";
	msg = gate(t, &ok);
	CHECK(!ok && strstr(msg, "does not exist") && strstr(msg, "skr-pro"));
	free(msg);
	t->key_file = l->key;

	/* HTTP 500, a slow server (refused within the bound) */
	CHECK_EQ_INT(post("/_fake/mode", "{\"mode\":\"http500\"}"), 0);
	msg = gate(t, &ok);
	CHECK(!ok && strstr(msg, "HTTP status 500") && strstr(msg, url));
	free(msg);
	CHECK_EQ_INT(post("/_fake/mode", "{\"mode\":\"slow\"}"), 0);
	clock_gettime(CLOCK_MONOTONIC, &a);
	msg = gate(t, &ok);
	clock_gettime(CLOCK_MONOTONIC, &b);
	CHECK(!ok && strstr(msg, "did not answer"));
	CHECK(b.tv_sec - a.tv_sec <= 4);
	free(msg);
	CHECK_EQ_INT(post("/_fake/mode", "{\"mode\":\"normal\"}"), 0);
}

/* Idle: recorded and released; then nothing left to release; unreachable: refused. */
static void
live_release(struct live *l)
{
	struct octoprint_target *t = &l->t;
	struct octoprint_conn c;
	char *msg;
	bool ok;

	CHECK_EQ_INT(post("/_fake/state", "{\"state\":\"Operational\"}"), 0);
	msg = gate(t, &ok);
	CHECK(ok && strstr(msg, "released /dev/ttyACM0 (250000 baud, profile skr)"));
	free(msg);
	CHECK(log_has("POST disconnect"));
	connection(&c);
	CHECK_STREQ(c.state, "Closed");
	CHECK(access(l->rec, F_OK) == 0);
	/* not connected any more: nothing to release, the record stays as it was */
	msg = gate(t, &ok);
	CHECK(ok && strstr(msg, "has no printer connected"));
	free(msg);

	/* unreachable */
	t->url = "http://127.0.0.1:1";
	msg = gate(t, &ok);
	CHECK(!ok && strstr(msg, "OctoPrint at http://127.0.0.1:1 did not answer"));
	free(msg);
	t->url = url;
}

/* Given back from the loop: connect with what it had, record removed. */
static void
live_give_back(struct live *l)
{
	struct octoprint_conn c;
	sd_event *loop = NULL;
	struct octoprint *o = NULL;
	int done = 0;

	CHECK(sd_event_new(&loop) >= 0);
	{
		sigset_t ss;

		sigemptyset(&ss);
		sigaddset(&ss, SIGCHLD);
		sigprocmask(SIG_BLOCK, &ss, NULL);
	}
	CHECK_EQ_INT(octoprint_new(loop, l->t.dir, on_done, &done, &o), 0);
	octoprint_board_ready(o, "1-2", "/dev/ttyACM0", "");
	CHECK(octoprint_busy(o, "1-2"));
	for (int i = 0; i < 200 && !done; i++)
		(void)sd_event_run(loop, 100000);
	CHECK_EQ_INT(done, 1);
	CHECK(!octoprint_busy(o, "1-2"));
	CHECK(log_has("POST connect port=/dev/ttyACM0 baudrate=250000 profile=skr"));
	CHECK(access(l->rec, F_OK) < 0);
	connection(&c);
	CHECK_STREQ(c.state, "Operational");
	CHECK_STREQ(c.port, "/dev/ttyACM0");
	/* nothing recorded: nothing to do */
	octoprint_board_ready(o, "1-2", "/dev/ttyACM0", "");
	CHECK(!octoprint_busy(o, "1-2"));
	o = octoprint_free(o);
	sd_event_unref(loop);
}

static void
test_live(const char *dir)
{
	char *recdir = xasprintf("%s/records", dir);
	struct live l = {.t = {.url = url,
			       .board = "skr-pro",
			       .usb_port = "1-2",
			       .tty = "/dev/ttyACM0",
			       .by_id = "",
			       .dir = recdir},
			 .key = xasprintf("%s/key", dir),
			 .bad = xasprintf("%s/bad.key", dir),
			 .rec = xasprintf("%s/records/1-2.json", dir)};
	int master, slave;
	char pts[64], *link, *devdir = xasprintf("%s/dev", dir);

	l.t.key_file = l.key;
	/* a tty for the fake to hold: dev/ttyACM0 in its root -> a pty */
	CHECK_EQ_INT(openpty(&master, &slave, pts, NULL, NULL), 0);
	link = xasprintf("%s/ttyACM0", devdir);
	CHECK_EQ_INT(mkdir_p(devdir, 0755), 0);
	(void)unlink(link);
	CHECK_EQ_INT(symlink(pts, link), 0);
	CHECK_EQ_INT(write_file_atomic(l.key, KEY "\n", strlen(KEY) + 1, 0600), 0);
	CHECK_EQ_INT(write_file_atomic(l.bad, "nope\n", 5, 0600), 0);
	CHECK_EQ_INT(post("/api/connection", "{\"command\":\"connect\",\"port\":\"/dev/ttyACM0\","
					     "\"baudrate\":250000,\"printerProfile\":\"skr\"}"),
		     0);
	live_refusals(&l);
	live_release(&l);
	live_give_back(&l);
	close(master);
	close(slave);
	free(link);
	free(devdir);
	free(l.key);
	free(l.bad);
	free(recdir);
	free(l.rec);
}

int
main(void)
{
	char tmpl[] = "/tmp/skrflash-octoprint-XXXXXX";
	char *dir = mkdtemp(tmpl), *cmd;

	test_parse();
	test_activity();
	if (!dir) {
		perror("mkdtemp");
		return 1;
	}
	test_port_match(dir);
	snprintf(calls, sizeof(calls), "%s/calls.log", dir);
	start_server(dir);
	test_live(dir);
	close(server_in); /* the fake exits on EOF */
	(void)waitpid(server_pid, NULL, 0);
	cmd = xasprintf("rm -rf '%s'", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "cannot remove %s\n", dir);
	free(cmd);
	TEST_DONE();
}
