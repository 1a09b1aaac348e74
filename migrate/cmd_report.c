/* SPDX-License-Identifier: MIT */
/*
 * `kawarimi report FILE [--plot OUT.png] [--format table|json|markdown]`:
 * a migration's report read back from a --report file or a saved --json
 * stream, printed, and drawn with gnuplot (docs/report.md).
 */
#include <getopt.h>
#include <stdlib.h>

#include "report.h"
#include "subcommands.h"

static void usage(FILE *out)
{
	fprintf(out,
		"Usage: %s report FILE [--plot OUT.png] [--format table|json|markdown]\n"
		"Prints the report of a migration: FILE is what `%s migrate --report FILE`\n"
		"wrote, or the saved output of `%s migrate --json`.\n\n"
		"  --format F     table (default, as `migrate` prints it), markdown or json\n"
		"  --plot OUT.png draw per VM the phase timeline (blackouts in red) and the\n"
		"                 storage and memory copied over time, with gnuplot; the data\n"
		"                 (OUT-*.dat) and the script (OUT.gp) stay beside it\n",
		prog, prog, prog);
}

int cmd_report(int argc, char *argv[])
{
	static const struct option longopts[] = {
		{ "plot", required_argument, NULL, 'p' },
		{ "format", required_argument, NULL, 'f' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	enum kwm_report_format fmt = KWM_FMT_TABLE;
	const char *plot = NULL;
	json_object *rep;
	char err[1024], base[4096];
	int c;

	optind = 1;
	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (c) {
		case 'p':
			if (kwm_plot_base(optarg, base, sizeof(base))) {
				fprintf(stderr, "%s report: --plot '%s': name a .png file\n", prog, optarg);
				return 2;
			}
			plot = optarg;
			break;
		case 'f':
			if (kwm_report_format_parse(optarg, &fmt)) {
				fprintf(stderr, "%s report: --format '%s': write table, json or markdown\n",
					prog, optarg);
				return 2;
			}
			break;
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
	rep = kwm_report_load(argv[optind], err, sizeof(err));
	if (!rep) {
		fprintf(stderr, "%s report: %s\n", prog, err);
		return 2;
	}
	kwm_report_print(rep, fmt, stdout);
	if (plot && kwm_plot_report(rep, plot, err, sizeof(err))) {
		fprintf(stderr, "%s report: %s\n", prog, err);
		json_object_put(rep);
		return 1;
	}
	if (plot)
		fprintf(stderr, "%s report: wrote %s (script %s.gp, data %s-*.dat)\n", prog, plot,
			base, base);
	json_object_put(rep);
	return 0;
}
