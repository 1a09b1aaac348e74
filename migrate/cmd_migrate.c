/* SPDX-License-Identifier: MIT */
/*
 * `kawarimi migrate CLUSTER.yaml` and, with plan_only, `kawarimi plan`:
 * options, the run, the closing message, the report and the exit status.
 *
 * Exit status: 0 migrated (or plan OK); 1 refused in preflight or rolled
 * back (every VM at the source); 2 bad usage or cluster file; 3 failed
 * after switchover or a rollback that could not finish.
 */
#include <getopt.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "run.h"
#include "subcommands.h"

int kwm_cli(int argc, char *argv[], bool plan_only);
const char *kwm_run_result(const struct kwm_run *r);
void kwm_plan_print(struct kwm_run *r);

static void usage(FILE *out, bool plan_only)
{
	if (plan_only) {
		fprintf(out, "Usage: %s plan CLUSTER.yaml [--storage MODE] [--json]\n"
			"Connects to every QEMU (and agent) named in the cluster file, runs the\n"
			"preflight checks and prints what `migrate` would do. Changes nothing.\n", prog);
		return;
	}
	fprintf(out,
		"Usage: %s migrate CLUSTER.yaml [OPTIONS]\n"
		"Moves every node VM of the cluster file (docs/cluster-file.md) to its\n"
		"destination, phase by phase (docs/migrate.md), rolling back on failure.\n\n"
		"  --storage MODE    incremental | full | shared (overrides the file)\n"
		"  --hold-job        keep the job quiesced for the whole memory migration\n"
		"                    (the original design; default: resume it on what is left)\n"
		"  --keep-source     do not quit the source QEMUs at the end\n"
		"  --report FILE     write the JSON report there\n"
		"  --journal FILE    record every step before it is taken (JSON lines)\n"
		"  --json            stream one JSON event per line instead of the display\n"
		"  --quiet           no per-phase lines (errors and the table still print)\n\n"
		"Exit status: 0 migrated; 1 refused or rolled back (every VM at the source);\n"
		"2 bad usage or cluster file; 3 failed after switchover or rollback incomplete.\n",
		prog);
}

static int parse_args(int argc, char *argv[], bool plan_only, struct kwm_options *o,
		      const char **file)
{
	static const struct option longopts[] = {
		{ "storage", required_argument, NULL, 's' },
		{ "hold-job", no_argument, NULL, 'H' },
		{ "keep-source", no_argument, NULL, 'k' },
		{ "report", required_argument, NULL, 'r' },
		{ "journal", required_argument, NULL, 'j' },
		{ "json", no_argument, NULL, 'J' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int c;

	memset(o, 0, sizeof(*o));
	o->plan_only = plan_only;
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
		case 'h':
			usage(stdout, plan_only);
			exit(0);
		default:
			usage(stderr, plan_only);
			return -1;
		}
	}
	if (plan_only && (o->hold_job || o->keep_source || o->report_file || o->journal_file)) {
		fprintf(stderr, "%s plan: takes only --storage and --json\n", prog);
		return -1;
	}
	if (optind != argc - 1) {
		usage(stderr, plan_only);
		return -1;
	}
	*file = argv[optind];
	return 0;
}

static int setup(struct kwm_run *r, struct kwm_cluster *c, const struct kwm_options *o)
{
	memset(r, 0, sizeof(*r));
	r->c = c;
	r->opt = *o;
	r->storage = o->storage_set ? o->storage : c->storage;
	r->nvms = c->nvms;
	r->vms = calloc(c->nvms, sizeof(*r->vms));
	if (!r->vms)
		return -1;
	for (size_t i = 0; i < c->nvms; i++) {
		r->vms[i].run = r;
		r->vms[i].conf = &c->vms[i];
		r->vms[i].idx = i;
	}
	if (o->journal_file) {
		r->journal = fopen(o->journal_file, "a");
		if (!r->journal) {
			fprintf(stderr, "%s: cannot open the journal %s: %m\n", prog, o->journal_file);
			return -1;
		}
	}
	return 0;
}

/* The last word: what happened, to whom, in which phase, what state the
 * cluster is left in. */
static int closing_words(struct kwm_run *r)
{
	const struct kwm_vm *f = r->first_failure;
	const char *res = kwm_run_result(r);

	if (!f) {
		if (!r->opt.plan_only)
			fprintf(stderr, "%s: cluster %s: migrated %zu VM(s) in %.3f s\n", prog,
				r->c->name, r->nvms, r->ended - r->started);
		return 0;
	}
	fprintf(stderr, "%s: cluster %s: VM %s failed in phase %s: %s\n", prog, r->c->name,
		f->conf->name, kwm_phase_name(f->error_phase), f->error);
	if (!strcmp(res, "refused")) {
		fprintf(stderr, "%s: refused before any change; every VM runs at the source as before\n",
			prog);
		return 1;
	}
	if (!strcmp(res, "rolled-back")) {
		fprintf(stderr, "%s: rolled back: every VM runs at the source\n", prog);
		return 1;
	}
	if (!strcmp(res, "rollback-incomplete")) {
		for (size_t i = 0; i < r->nvms; i++)
			if (r->vms[i].rollback_incomplete)
				fprintf(stderr, "%s: VM %s: rollback incomplete: %s\n", prog,
					r->vms[i].conf->name, r->vms[i].rollback_notes);
		fprintf(stderr, "%s: `%s recover` is not supported yet; finish by hand from the "
			"notes above%s\n", prog, prog, r->journal ? " and the journal" : "");
		return 3;
	}
	fprintf(stderr, "%s: the failure came after switchover; no rollback (the VMs run at "
		"the destination)\n", prog);
	return 3;
}

static void on_signal(int sig)
{
	(void)sig;
	kwm_interrupted = 1;
}

/* Ctrl-C must not leave a half-migrated cluster: it becomes a rollback. */
static void catch_signals(void)
{
	struct sigaction sa = { .sa_handler = on_signal };

	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
}

int kwm_cli(int argc, char *argv[], bool plan_only)
{
	struct kwm_options o;
	struct kwm_cluster *c;
	struct kwm_run r;
	const char *file;
	char err[1024];
	int rc;

	if (parse_args(argc, argv, plan_only, &o, &file))
		return 2;
	if (kwm_cluster_load(file, &c, err, sizeof(err))) {
		fprintf(stderr, "%s: %s\n", prog, err);
		return 2;
	}
	if (setup(&r, c, &o)) {
		kwm_cluster_free(c);
		return 2;
	}
	catch_signals();
	r.started = kwm_wall();
	kwm_run_connect(&r);
	kwm_run_loop(&r);
	kwm_progress_done(&r);
	if (plan_only)
		kwm_plan_print(&r);
	else if (o.output != KWM_OUT_JSON)
		kwm_report_table(&r, stdout);
	if (o.output == KWM_OUT_JSON) {
		json_object *rep = kwm_report_json(&r), *ev = json_object_new_object();

		json_object_object_add(ev, "event", json_object_new_string("report"));
		json_object_object_add(ev, "report", rep);
		printf("%s\n", json_object_to_json_string_ext(ev, JSON_C_TO_STRING_PLAIN));
		json_object_put(ev);
	}
	rc = closing_words(&r);
	if (o.report_file && kwm_report_write(&r, o.report_file, err, sizeof(err))) {
		fprintf(stderr, "%s: %s\n", prog, err);
		if (!rc)
			rc = 1;
	}
	kwm_run_close(&r);
	kwm_cluster_free(c);
	return rc;
}

int cmd_migrate(int argc, char *argv[])
{
	return kwm_cli(argc, argv, false);
}
