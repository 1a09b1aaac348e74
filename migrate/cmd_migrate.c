/* SPDX-License-Identifier: MIT */
/*
 * `kawarimi migrate CLUSTER.yaml`: its options; the run itself is run.c's.
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
		"Usage: %s migrate CLUSTER.yaml [OPTIONS]\n"
		"Moves every node VM of the cluster file (docs/cluster-file.md) to its\n"
		"destination, phase by phase (docs/migrate.md), rolling back on failure.\n\n"
		"  --storage MODE    incremental | full | shared (overrides the file)\n"
		"  --hold-job        keep the job quiesced for the whole memory migration\n"
		"                    (the original design; default: resume it on what is left)\n"
		"  --keep-source     do not quit the source QEMUs at the end\n"
		"  --report FILE     write the JSON report there\n"
		"  --journal FILE    the journal (default: in the state directory, named\n"
		"                    after the cluster; docs/reliability.md)\n"
		"  --allow-partial   VMs that fail before switchover go back, the others go\n"
		"  --json            stream one JSON event per line instead of the display\n"
		"  --quiet           no per-phase lines (errors and the table still print)\n\n"
		"Exit status: 0 migrated; 1 refused or rolled back (every VM at the source);\n"
		"2 bad usage or cluster file; 3 failed after switchover, rollback incomplete\n"
		"or a VM lost; 4 partial (--allow-partial: some VMs moved, the others not).\n",
		prog);
}

static int parse_args(int argc, char *argv[], struct kwm_options *o, const char **file)
{
	static const struct option longopts[] = {
		{ "storage", required_argument, NULL, 's' },
		{ "hold-job", no_argument, NULL, 'H' },
		{ "keep-source", no_argument, NULL, 'k' },
		{ "report", required_argument, NULL, 'r' },
		{ "journal", required_argument, NULL, 'j' },
		{ "json", no_argument, NULL, 'J' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "allow-partial", no_argument, NULL, 'P' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int c;

	memset(o, 0, sizeof(*o));
	o->output = isatty(STDOUT_FILENO) ? KWM_OUT_TTY : KWM_OUT_PLAIN;
	optind = 1;
	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (c) {
		case 's':
			if (kwm_storage_parse(optarg, &o->storage)) {
				fprintf(stderr, "%s: --storage '%s': write incremental, full or shared\n",
					prog, optarg);
				return -1;
			}
			o->storage_set = true;
			break;
		case 'H': o->hold_job = true; break;
		case 'k': o->keep_source = true; break;
		case 'r': o->report_file = optarg; break;
		case 'j': o->journal_file = optarg; break;
		case 'J': o->output = KWM_OUT_JSON; break;
		case 'q': o->quiet = true; break;
		case 'P': o->allow_partial = true; break;
		case 'h':
			usage(stdout);
			exit(0);
		default:
			usage(stderr);
			return -1;
		}
	}
	if (optind != argc - 1) {
		usage(stderr);
		return -1;
	}
	*file = argv[optind];
	return 0;
}

int cmd_migrate(int argc, char *argv[])
{
	struct kwm_options o;
	const char *file;

	if (parse_args(argc, argv, &o, &file))
		return 2;
	return kwm_main(file, &o);
}
