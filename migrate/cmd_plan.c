/* SPDX-License-Identifier: MIT */
/*
 * `kawarimi plan CLUSTER.yaml`: preflight only (nothing changes), then what
 * the migration would do (plan.c).
 */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "run.h"
#include "subcommands.h"

static void usage(FILE *out)
{
	fprintf(out, "Usage: %s plan CLUSTER.yaml [--storage MODE] [--json]\n"
		"Connects to every QEMU (and agent) named in the cluster file, runs the\n"
		"preflight checks and prints what `migrate` would do. Changes nothing.\n", prog);
}

int cmd_plan(int argc, char *argv[])
{
	static const struct option longopts[] = {
		{ "storage", required_argument, NULL, 's' },
		{ "json", no_argument, NULL, 'J' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct kwm_options o = { .plan_only = true };
	int c;

	o.output = isatty(STDOUT_FILENO) ? KWM_OUT_TTY : KWM_OUT_PLAIN;
	optind = 1;
	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (c) {
		case 's':
			if (kwm_storage_parse(optarg, &o.storage)) {
				fprintf(stderr, "%s: --storage '%s': write incremental, full or shared\n",
					prog, optarg);
				return 2;
			}
			o.storage_set = true;
			break;
		case 'J': o.output = KWM_OUT_JSON; break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			fprintf(stderr, "%s plan: takes only --storage and --json\n", prog);
			return 2;
		}
	}
	if (optind != argc - 1) {
		usage(stderr);
		return 2;
	}
	return kwm_main(argv[optind], &o);
}
