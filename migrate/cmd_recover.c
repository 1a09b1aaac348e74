/* SPDX-License-Identifier: MIT */
/*
 * `kawarimi recover JOURNAL`: rolling a migration back or forward after the
 * coordinator itself died.  `kawarimi migrate --journal FILE` writes every
 * step before it is taken; reading it back and finishing the job is not
 * built yet, and says so.
 */
#include <stdio.h>

#include "subcommands.h"

int cmd_recover(int argc, char *argv[])
{
	(void)argc;
	(void)argv;
	fprintf(stderr, "%s recover: not supported yet; the journal written by `%s migrate "
		"--journal FILE` lists every step taken (one JSON line each), for a manual "
		"rollback (docs/migrate.md)\n", prog, prog);
	return 2;
}
