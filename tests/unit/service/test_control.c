/* SPDX-License-Identifier: GPL-2.0-or-later */
/* test_control: the control-socket request parser accepts exactly the documented requests. */
#include <errno.h>
#include <string.h>

#include "service/control.h"
#include "harness.h"

static int
parse(const char *s, struct control_request *req)
{
	const char *err = NULL;
	int r = control_parse_request(s, strlen(s), req, &err);

	if (r < 0)
		CHECK(err != NULL);
	return r;
}

int
main(void)
{
	struct control_request req;

	CHECK_EQ_INT(parse("{\"command\":\"status\"}", &req), 0);
	CHECK_EQ_INT(req.command, CONTROL_STATUS);
	CHECK_EQ_INT(parse("{\"command\":\"boards\",\"all\":true}", &req), 0);
	CHECK_EQ_INT(req.command, CONTROL_BOARDS);
	CHECK(req.all);
	CHECK_EQ_INT(parse("{\"command\":\"history\",\"board\":\"1-1\",\"limit\":5}", &req), 0);
	CHECK_STREQ(req.board, "1-1");
	CHECK_EQ_INT(req.limit, 5);
	CHECK_EQ_INT(parse("{\"command\":\"flash\",\"board\":\"octopus-f446\"}", &req), 0);
	CHECK_EQ_INT(req.command, CONTROL_FLASH);
	CHECK_EQ_INT(parse("  {\"command\":\"watch\"}  ", &req), 0);
	CHECK_EQ_INT(parse("{\"command\":\"rescue\",\"board\":\"skr-1.4-turbo\",\"device\":"
			   "\"/dev/ttyAMA0\",\"file\":\"/tmp/katapult.bin\"}",
			   &req),
		     0);
	CHECK_EQ_INT(req.command, CONTROL_RESCUE);
	CHECK_STREQ(req.device, "/dev/ttyAMA0");
	CHECK_STREQ(req.file, "/tmp/katapult.bin");
	CHECK(!req.restore);
	CHECK_EQ_INT(parse("{\"command\":\"rescue\",\"board\":\"1-9\",\"restore\":true,\"sha\":"
			   "\"ab\"}",
			   &req),
		     0);
	CHECK(req.restore);
	CHECK_STREQ(req.sha, "ab");
	/* a rescue writes something: a file, or the kept bootloader (restore) */
	CHECK_EQ_INT(parse("{\"command\":\"rescue\",\"board\":\"skr-1.4-turbo\"}", &req), -EINVAL);
	CHECK_EQ_INT(parse("{\"command\":\"rescue\",\"restore\":\"yes\"}", &req), -EINVAL);

	/* refused */
	CHECK_EQ_INT(parse("", &req), -EINVAL);
	CHECK_EQ_INT(parse("[]", &req), -EINVAL);
	CHECK_EQ_INT(parse("{}", &req), -EINVAL);
	CHECK_EQ_INT(parse("{\"command\":\"reboot\"}", &req), -EINVAL);
	CHECK_EQ_INT(parse("{\"command\":5}", &req), -EINVAL);
	CHECK_EQ_INT(parse("{\"command\":\"flash\"}", &req), -EINVAL); /* needs a board */
	CHECK_EQ_INT(parse("{\"command\":\"flash\",\"board\":\"\"}", &req), -EINVAL);
	CHECK_EQ_INT(parse("{\"command\":\"status\",\"x\":1}", &req), -EINVAL); /* unknown key */
	CHECK_EQ_INT(parse("{\"command\":\"history\",\"limit\":0}", &req), -EINVAL);
	CHECK_EQ_INT(parse("{\"command\":\"history\",\"limit\":\"5\"}", &req), -EINVAL);
	CHECK_EQ_INT(parse("{\"command\":\"boards\",\"all\":1}", &req), -EINVAL);
	CHECK_EQ_INT(parse("{\"command\":\"status\"} {}", &req), -EINVAL); /* trailing data */
	CHECK_EQ_INT(parse("{\"command\":\"status\"", &req), -EINVAL);	   /* truncated */
	/* a board name that is not UTF-8 would be echoed into answers and the journal */
	CHECK_EQ_INT(parse("{\"command\":\"flash\",\"board\":\"caf\xe9\"}", &req), -EINVAL);
	CHECK_EQ_INT(parse("{\"command\":\"flash\",\"board\":\"caf\xc3\xa9\"}", &req), 0);
	{
		static const char nul[] = "{\"command\":\"status\"}\0";

		CHECK_EQ_INT(control_parse_request(nul, sizeof(nul) - 1, &req, &(const char *){0}),
			     -EINVAL);
	}
	{
		char big[CONTROL_MAX_LINE + 16];

		memset(big, ' ', sizeof(big));
		memcpy(big, "{\"command\":\"status\"}", 20);
		CHECK_EQ_INT(control_parse_request(big, sizeof(big), &req, &(const char *){0}),
			     -EINVAL);
	}
	CHECK_STREQ(control_command_to_string(CONTROL_HISTORY), "history");
	TEST_DONE();
}
