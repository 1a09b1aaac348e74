/* SPDX-License-Identifier: MIT */
#include <stdio.h>

#include "subcommands.h"

/* Placeholder until its issue lands: says so at run time. */
int cmd_plan(int argc, char *argv[])
{
	(void)argc;
	(void)argv;
	fprintf(stderr, "%s plan: not supported yet\n", prog);
	return 2;
}
