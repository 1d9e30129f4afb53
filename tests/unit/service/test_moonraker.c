/* SPDX-License-Identifier: GPL-2.0-or-later */
/* moonraker: the reply parser, the gate decision, and moonraker_query() against
 * tests/integration/fake_moonraker.py (every refusal path, fail-open, timeouts). */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "integration/hostproc.h"
#include "service/moonraker.h"
#include "util.h"

static int
parse(const char *json, enum moonraker_print *p, char *state, size_t size)
{
	return moonraker_parse(json, strlen(json), p, state, size);
}

static void
test_parse(void)
{
	enum moonraker_print p = _MOONRAKER_PRINT_MAX;
	char state[32];
	char tiny[4];

	CHECK_EQ_INT(parse("{\"result\":{\"eventtime\":1.5,\"status\":{\"print_stats\":"
			   "{\"filename\":\"\",\"state\":\"printing\"}}}}\n",
			   &p, state, sizeof(state)),
		     0);
	CHECK_EQ_INT(p, MOONRAKER_PRINT_PRINTING);
	CHECK_STREQ(state, "printing");

	static const struct {
		const char *name;
		enum moonraker_print p;
	} states[] = {
	    {"standby", MOONRAKER_PRINT_STANDBY},   {"paused", MOONRAKER_PRINT_PAUSED},
	    {"complete", MOONRAKER_PRINT_COMPLETE}, {"cancelled", MOONRAKER_PRINT_CANCELLED},
	    {"error", MOONRAKER_PRINT_ERROR},	    {"startup", MOONRAKER_PRINT_UNKNOWN},
	    {"Printing", MOONRAKER_PRINT_UNKNOWN},  {"", MOONRAKER_PRINT_UNKNOWN},
	};
	for (size_t i = 0; i < ELEMENTSOF(states); i++) {
		char *j =
		    xasprintf("{\"result\":{\"status\":{\"print_stats\":{\"state\":\"%s\"}}}}",
			      states[i].name);

		CHECK_EQ_INT(parse(j, &p, state, sizeof(state)), 0);
		CHECK_EQ_INT(p, states[i].p);
		CHECK_STREQ(state, states[i].name);
		free(j);
	}

	/* control characters are escaped, long states truncated, never overflowing */
	CHECK_EQ_INT(parse("{\"result\":{\"status\":{\"print_stats\":{\"state\":\"a\\nb\"}}}}", &p,
			   state, sizeof(state)),
		     0);
	CHECK_EQ_INT(p, MOONRAKER_PRINT_UNKNOWN);
	CHECK(strchr(state, '\n') == NULL);
	CHECK_EQ_INT(parse("{\"result\":{\"status\":{\"print_stats\":{\"state\":\"printing\"}}}}",
			   &p, tiny, sizeof(tiny)),
		     0);
	CHECK_EQ_INT(p, MOONRAKER_PRINT_PRINTING);
	CHECK(strlen(tiny) < sizeof(tiny));

	static const char *const bad[] = {
	    "",
	    "   ",
	    "null",
	    "[]",
	    "{\"result\":{\"status\":{\"print_stats\":{\"state\":\"stan",
	    "{\"result\":{\"status\":{}}}",
	    "{\"result\":{\"status\":{\"print_stats\":{}}}}",
	    "{\"result\":{\"status\":{\"print_stats\":{\"state\":1}}}}",
	    "{\"result\":{\"status\":{\"print_stats\":[\"printing\"]}}}",
	    "{\"result\":[],\"status\":{\"print_stats\":{\"state\":\"standby\"}}}",
	    "{\"error\":{\"code\":503,\"message\":\"Klippy Host not connected\"}}",
	    "{\"result\":{\"status\":{\"print_stats\":{\"state\":\"standby\"}}}} trailing",
	    "{\"result\":{\"status\":{\"print_stats\":{\"state\":\"standby\"}}}}{}",
	    "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]",
	};
	for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
		p = MOONRAKER_PRINT_STANDBY;
		CHECK_EQ_INT(parse(bad[i], &p, state, sizeof(state)), -EBADMSG);
	}
	/* an embedded NUL must not hide the rest of the reply */
	CHECK_EQ_INT(moonraker_parse("{\"result\":{}}\0xx", 16, &p, state, sizeof(state)),
		     -EBADMSG);
}

static struct moonraker_state
answered(enum moonraker_print p, const char *text)
{
	struct moonraker_state st;

	memset(&st, 0, sizeof(st));
	st.http_status = 200;
	st.print = p;
	str_copy(st.state, sizeof(st.state), text);
	return st;
}

static void
test_gate(void)
{
	const char *url = "http://127.0.0.1:7125";
	struct moonraker_state st;
	char *msg = NULL;

	st = answered(MOONRAKER_PRINT_PRINTING, "printing");
	CHECK(!moonraker_gate(&st, url, false, "octopus-f446", &msg));
	CHECK_STREQ(msg, "printer at http://127.0.0.1:7125 is printing; not flashing octopus-f446 "
			 "now (it will be flashed when the print ends: `skrflashctl flash "
			 "octopus-f446`)");
	free(msg);
	/* fail_open is about Moonraker being down, never about a running print */
	CHECK(!moonraker_gate(&st, url, true, "octopus-f446", &msg));
	free(msg);

	st = answered(MOONRAKER_PRINT_PAUSED, "paused");
	CHECK(!moonraker_gate(&st, url, true, "b", &msg));
	CHECK(strstr(msg, "is paused") != NULL);
	free(msg);

	static const enum moonraker_print ok[] = {MOONRAKER_PRINT_STANDBY, MOONRAKER_PRINT_COMPLETE,
						  MOONRAKER_PRINT_CANCELLED, MOONRAKER_PRINT_ERROR};
	for (size_t i = 0; i < ELEMENTSOF(ok); i++) {
		st = answered(ok[i], moonraker_print_to_string(ok[i]));
		CHECK(moonraker_gate(&st, url, false, "b", &msg));
		CHECK(strstr(msg, url) != NULL);
		CHECK(strstr(msg, moonraker_print_to_string(ok[i])) != NULL);
		free(msg);
	}

	st = answered(MOONRAKER_PRINT_UNKNOWN, "startup");
	CHECK(!moonraker_gate(&st, url, true, "b", &msg));
	CHECK(strstr(msg, "\"startup\"") != NULL);
	free(msg);

	memset(&st, 0, sizeof(st));
	st.error = -ECONNREFUSED;
	st.print = MOONRAKER_PRINT_UNKNOWN;
	str_copy(st.detail, sizeof(st.detail), "Failed to connect");
	CHECK(!moonraker_gate(&st, url, false, "b", &msg));
	CHECK(strstr(msg, url) != NULL && strstr(msg, "Failed to connect") != NULL);
	free(msg);
	CHECK(moonraker_gate(&st, url, true, "b", &msg));
	CHECK(strstr(msg, "moonraker_fail_open") != NULL);
	free(msg);

	/* no detail: the errno text stands in */
	st.detail[0] = '\0';
	st.error = -ETIMEDOUT;
	CHECK(!moonraker_gate(&st, NULL, false, NULL, &msg));
	CHECK(strstr(msg, strerror(ETIMEDOUT)) != NULL);
	free(msg);
}

/* The fake server, its port, and the pipe whose closing makes it exit. */
static pid_t server_pid;
static int server_stdin = -1;
static unsigned server_port;

static bool
start_server(void)
{
	char *a[] = {(char[]){"python3"}, (char[]){"tests/integration/fake_moonraker.py"}, NULL};
	char port[32];

	server_pid = hostproc_fake(a, &server_stdin, port, sizeof(port));
	server_port = server_pid > 0 ? (unsigned)strtoul(port, NULL, 10) : 0;
	return server_port > 0;
}

static void
stop_server(void)
{
	int status;

	close(server_stdin);
	CHECK_EQ_INT(waitpid(server_pid, &status, 0), server_pid);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

/* A port that nobody listens on: bound, never listened, so connect() is refused. */
static int
closed_port(unsigned *ret_port)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t alen = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 ||
	    getsockname(fd, (struct sockaddr *)&a, &alen) < 0)
		return -1;
	*ret_port = ntohs(a.sin_port);
	return fd;
}

static bool
gate_at(const char *mode, unsigned timeout_ms, bool fail_open, struct moonraker_state *st,
	char **msg)
{
	char *url =
	    xasprintf("http://127.0.0.1:%u%s%s", server_port, mode ? "/" : "", mode ? mode : "");
	bool ok;

	moonraker_query(url, NULL, timeout_ms, st);
	ok = moonraker_gate(st, url, fail_open, "octopus-f446", msg);
	free(url);
	return ok;
}

/* What the print state allows, and the server's default state at the plain URL. */
static void
live_states(void)
{
	struct moonraker_state st;
	char *msg = NULL;

	CHECK(!gate_at("printing", 1000, false, &st, &msg));
	CHECK_EQ_INT(st.error, 0);
	CHECK_EQ_INT(st.http_status, 200);
	CHECK_EQ_INT(st.print, MOONRAKER_PRINT_PRINTING);
	CHECK(strstr(msg, "/printing is printing; not flashing octopus-f446") != NULL);
	free(msg);

	CHECK(!gate_at("paused", 1000, true, &st, &msg));
	CHECK_EQ_INT(st.print, MOONRAKER_PRINT_PAUSED);
	free(msg);

	CHECK(gate_at("standby", 1000, false, &st, &msg));
	CHECK_EQ_INT(st.error, 0);
	CHECK_STREQ(st.state, "standby");
	free(msg);

	CHECK(gate_at("complete", 1000, false, &st, &msg));
	free(msg);

	/* the plain URL (trailing slash tolerated) gets the server's default state */
	{
		char *url = xasprintf("http://127.0.0.1:%u/", server_port);

		CHECK_EQ_INT(moonraker_query(url, NULL, 1000, &st), 0);
		CHECK_EQ_INT(st.print, MOONRAKER_PRINT_STANDBY);
		free(url);
	}

	CHECK(!gate_at("startup", 1000, true, &st, &msg));
	CHECK_EQ_INT(st.error, 0);
	CHECK_EQ_INT(st.print, MOONRAKER_PRINT_UNKNOWN);
	free(msg);
}

/* Answers that are not a print state: refused, unless fail-open. */
static void
live_bad_answers(void)
{
	struct moonraker_state st;
	char *msg = NULL;

	CHECK(!gate_at("malformed", 1000, false, &st, &msg));
	CHECK_EQ_INT(st.error, -EBADMSG);
	free(msg);
	CHECK(gate_at("malformed", 1000, true, &st, &msg));
	free(msg);

	CHECK(!gate_at("noresult", 1000, false, &st, &msg));
	CHECK_EQ_INT(st.error, -EBADMSG);
	free(msg);

	CHECK(!gate_at("http500", 1000, false, &st, &msg));
	CHECK_EQ_INT(st.error, -EPROTO);
	CHECK_EQ_INT(st.http_status, 500);
	CHECK(strstr(msg, "HTTP status 500") != NULL);
	free(msg);
	CHECK(gate_at("http500", 1000, true, &st, &msg));
	free(msg);

	/* an unknown path on Moonraker is a 404: refused like any HTTP error */
	CHECK(!gate_at("a/b", 1000, false, &st, &msg));
	CHECK_EQ_INT(st.error, -EPROTO);
	CHECK_EQ_INT(st.http_status, 404);
	free(msg);
}

/* A Moonraker that does not trust this host: refused with a hint, accepted with a key. */
static void
live_auth(void)
{
	struct moonraker_state st;
	char *msg = NULL, *url;

	CHECK(!gate_at("auth", 1000, false, &st, &msg));
	CHECK_EQ_INT(st.error, -EPROTO);
	CHECK_EQ_INT(st.http_status, 401);
	CHECK(strstr(msg, "API key") != NULL);
	free(msg);
	url = xasprintf("http://127.0.0.1:%u/auth", server_port);
	CHECK_EQ_INT(moonraker_query(url, "0123456789abcdef", 1000, &st), 0);
	CHECK_EQ_INT(st.print, MOONRAKER_PRINT_STANDBY);
	CHECK_EQ_INT(moonraker_query(url, "wrong", 1000, &st), -EPROTO);
	CHECK_EQ_INT(moonraker_query(url, "a\r\nHost: x", 1000, &st), -EINVAL);
	free(url);
}

/* A reply over the cap, and a server that answers after 5 s: the query gives up at its
 * timeout. */
static void
live_limits(void)
{
	struct moonraker_state st;
	char *msg = NULL;
	uint64_t t0;

	CHECK(!gate_at("huge", 1000, false, &st, &msg));
	CHECK_EQ_INT(st.error, -EFBIG);
	free(msg);

	t0 = now_monotonic_usec();
	CHECK(!gate_at("slow", 300, false, &st, &msg));
	CHECK_EQ_INT(st.error, -ETIMEDOUT);
	CHECK(now_monotonic_usec() - t0 < 1500000);
	free(msg);
	CHECK(gate_at("slow", 300, true, &st, &msg));
	free(msg);
}

/* Server down, and URLs that are not Moonraker's. */
static void
live_unreachable(void)
{
	struct moonraker_state st;
	char *msg = NULL;
	unsigned port;
	int fd = closed_port(&port);

	CHECK(fd >= 0);
	if (fd >= 0) {
		char *url = xasprintf("http://127.0.0.1:%u", port);

		CHECK_EQ_INT(moonraker_query(url, NULL, 1000, &st), -ECONNREFUSED);
		CHECK(!moonraker_gate(&st, url, false, "octopus-f446", &msg));
		CHECK(strstr(msg, url) != NULL);
		free(msg);
		CHECK(moonraker_gate(&st, url, true, "octopus-f446", &msg));
		free(msg);
		free(url);
		close(fd);
	}

	CHECK_EQ_INT(moonraker_query("ftp://127.0.0.1/", NULL, 500, &st), -EINVAL);
	CHECK_EQ_INT(moonraker_query("", NULL, 500, &st), -EINVAL);
	CHECK_EQ_INT(moonraker_query(NULL, NULL, 500, &st), -EINVAL);
	CHECK(!moonraker_gate(&st, NULL, false, "b", &msg));
	free(msg);
}

static void
test_live(void)
{
	CHECK(start_server());
	if (server_port == 0)
		return;
	live_states();
	live_bad_answers();
	live_auth();
	live_limits();
	live_unreachable();
	stop_server();
}

/* the key file: first line, blanks around it dropped; anything odd refused, nothing sent */
static void
test_key(void)
{
	static const struct {
		const char *in;
		const char *key; /* NULL: -EINVAL */
	} cases[] = {
	    {"0123456789abcdef0123456789abcdef\n", "0123456789abcdef0123456789abcdef"},
	    {"  abc\t\r\nsecond line\n", "abc"},
	    {"abc", "abc"},
	    {"", NULL},
	    {"\n", NULL},
	    {"   \nabc\n", NULL},
	    {"ab c\n", NULL},
	    {"ab\x01c\n", NULL},
	    {"ab\x7f\n", NULL},
	};
	char key[MOONRAKER_KEY_MAX], path[] = "/tmp/test_moonraker_key.XXXXXX", big[300];
	int fd;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int r = moonraker_key_parse(cases[i].in, strlen(cases[i].in), key, sizeof(key));

		CHECK_EQ_INT(r, cases[i].key ? 0 : -EINVAL);
		if (cases[i].key && r == 0)
			CHECK_STREQ(key, cases[i].key);
	}
	/* NUL inside, and a key that does not fit */
	CHECK_EQ_INT(moonraker_key_parse("ab\0cd", 5, key, sizeof(key)), -EINVAL);
	memset(big, 'a', sizeof(big));
	CHECK_EQ_INT(moonraker_key_parse(big, sizeof(big), key, sizeof(key)), -EINVAL);
	CHECK_EQ_INT(moonraker_key_parse(big, MOONRAKER_KEY_MAX - 1, key, sizeof(key)), 0);

	fd = mkstemp(path);
	CHECK(fd >= 0);
	if (fd < 0)
		return;
	CHECK_EQ_INT(write(fd, " 0123456789abcdef \n", 19), 19);
	close(fd);
	CHECK_EQ_INT(moonraker_read_key(path, key, sizeof(key)), 0);
	CHECK_STREQ(key, "0123456789abcdef");
	unlink(path);
	CHECK_EQ_INT(moonraker_read_key(path, key, sizeof(key)), -ENOENT);
	CHECK_EQ_INT(moonraker_read_key("/", key, sizeof(key)), -EISDIR);
}

int
main(void)
{
	test_key();
	test_parse();
	test_gate();
	test_live();
	TEST_DONE();
}
