/* SPDX-License-Identifier: MIT */
#include <stdio.h>

#include "subcommands.h"

/* Placeholder until its issue lands: says so at run time. */
int cmd_agent(int argc, char *argv[])
{
	(void)argc;
	(void)argv;
	fprintf(stderr, "%s agent: not supported yet\n", prog);
	return 2;
}
