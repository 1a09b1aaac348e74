/* SPDX-License-Identifier: MIT */
/*
 * `kawarimi recover CLUSTER.yaml`: finish, forward or back, the run that
 * the cluster's journal left unfinished (recover.c).
 */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "run.h"
#include "subcommands.h"

static void usage(FILE *out)
{
	fprintf(out,
		"Usage: %s recover CLUSTER.yaml [--journal FILE] [--report FILE] [--json]\n"
		"Finishes the migration that the cluster's journal left unfinished (the\n"
		"coordinator died): each VM goes forward where its destination holds all\n"
		"of it, back otherwise; everything the run started is cleaned up and a\n"
		"quiesced job is resumed. Harmless to run twice (docs/reliability.md).\n\n"
		"Exit status as for migrate; 0 also when there is nothing to recover.\n", prog);
}

int cmd_recover(int argc, char *argv[])
{
	static const struct option longopts[] = {
		{ "journal", required_argument, NULL, 'j' },
		{ "report", required_argument, NULL, 'r' },
		{ "json", no_argument, NULL, 'J' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct kwm_options o = { .recover = true };
	int c;

	o.output = isatty(STDOUT_FILENO) ? KWM_OUT_TTY : KWM_OUT_PLAIN;
	optind = 1;
	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (c) {
		case 'j': o.journal_file = optarg; break;
		case 'r': o.report_file = optarg; break;
		case 'J': o.output = KWM_OUT_JSON; break;
		case 'q': o.quiet = true; break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind != argc - 1) {
		usage(stderr);
		return 2;
	}
	return kwm_main(argv[optind], &o);
}
