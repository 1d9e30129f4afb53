/* SPDX-License-Identifier: GPL-2.0-or-later */
/* vcli: `vcli validate ARGS...` runs validate_command() exactly as skrflashctl does, so the
 * command-line checks of verdicts.sh do not depend on the rest of skrflashctl. */
#include "image/validate.h"

int
main(int argc, char **argv)
{
	if (argc < 2)
		return 2;
	return validate_command(argc - 1, argv + 1);
}
