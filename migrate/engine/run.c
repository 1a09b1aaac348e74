/* SPDX-License-Identifier: MIT */
/*
 * One run of the coordinator, from the cluster file to the exit status,
 * for `plan`, `migrate` and `recover` alike: the lock and the journal,
 * the loop, the table or the JSON report, and the closing words.
 *
 * Exit status: 0 migrated (or plan OK, or nothing to recover); 1 refused
 * or rolled back (every VM at the source); 2 bad usage or cluster file;
 * 3 failed after switchover, a rollback that could not finish, or a VM
 * lost; 4 partial (--allow-partial: some VMs moved, the others went back).
 */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "run.h"
#include "subcommands.h"

static int setup(struct kwm_run *r, struct kwm_cluster *c, const struct kwm_options *o)
{
	memset(r, 0, sizeof(*r));
	r->c = c;
	r->opt = *o;
	r->lock_fd = -1;
	r->opt.allow_partial |= c->allow_partial;
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
	return 0;
}

/* migrate and recover hold the cluster's lock; migrate journals. */
static int take_cluster(struct kwm_run *r)
{
	char err[8192];

	if (r->opt.plan_only)
		return 0;
	if (kwm_lock_cluster(r->c->name, &r->lock_fd, err, sizeof(err)) ||
	    (!r->opt.recover && kwm_journal_open(r, err, sizeof(err)))) {
		fprintf(stderr, "%s: %s\n", prog, err);
		return -1;
	}
	return 0;
}

static void print_where(const struct kwm_run *r)
{
	for (size_t i = 0; i < r->nvms; i++) {
		const struct kwm_vm *vm = &r->vms[i];

		if (vm->where == KWM_AT_LOST)
			fprintf(stderr, "%s: VM %s is LOST: %s\n", prog, vm->conf->name,
				vm->lost_note);
		else
			fprintf(stderr, "%s: VM %s runs at the %s\n", prog, vm->conf->name,
				kwm_vm_where(vm));
	}
}

static int recover_words(struct kwm_run *r, const char *res)
{
	print_where(r);
	fprintf(stderr, "%s: cluster %s: recovered: %s\n", prog, r->c->name, res);
	if (!strcmp(res, "rolled-forward"))
		return 0;
	if (!strcmp(res, "rolled-back"))
		return 1;
	return !strcmp(res, "partial") ? 4 : 3;
}

/* The last word: what happened, to whom, in which phase, what state the
 * cluster is left in. */
static int closing_words(struct kwm_run *r)
{
	const struct kwm_vm *f = r->first_failure;
	const char *res = kwm_run_result(r);

	if (r->opt.recover)
		return recover_words(r, res);
	if (!f) {
		if (!r->opt.plan_only)
			fprintf(stderr, "%s: cluster %s: %s %zu VM(s) in %.3f s\n", prog,
				r->c->name, r->opt.recover ? "recovered" : "migrated", r->nvms,
				r->ended - r->started);
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
	if (!strcmp(res, "partial") || !strcmp(res, "rolled-forward")) {
		print_where(r);
		return !strcmp(res, "partial") ? 4 : 0;
	}
	if (!strcmp(res, "rollback-incomplete") || !strcmp(res, "vm-lost")) {
		for (size_t i = 0; i < r->nvms; i++)
			if (r->vms[i].rollback_incomplete && *r->vms[i].rollback_notes)
				fprintf(stderr, "%s: VM %s: %s\n", prog, r->vms[i].conf->name,
					r->vms[i].rollback_notes);
		print_where(r);
		fprintf(stderr, "%s: run `%s recover %s` to finish what can be finished "
			"(journal %s)\n", prog, prog, r->c->file, r->journal_path);
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

static void print_outcome(struct kwm_run *r)
{
	if (r->opt.plan_only)
		kwm_plan_print(r);
	else if (r->opt.output != KWM_OUT_JSON)
		kwm_report_table(r, stdout);
	if (r->opt.output == KWM_OUT_JSON) {
		json_object *rep = kwm_report_json(r), *ev = json_object_new_object();

		json_object_object_add(ev, "event", json_object_new_string("report"));
		json_object_object_add(ev, "report", rep);
		printf("%s\n", json_object_to_json_string_ext(ev, JSON_C_TO_STRING_PLAIN));
		json_object_put(ev);
	}
}

static void teardown(struct kwm_run *r)
{
	kwm_run_close(r);
	if (r->jr) {
		kwm_journal_read_free(r->jr);
		free(r->jr);
	}
	if (r->lock_fd >= 0)
		close(r->lock_fd);	/* releases the lock */
}

int kwm_main(const char *file, struct kwm_options *o)
{
	struct kwm_cluster *c;
	struct kwm_run r;
	char err[1024];
	int rc;

	if (kwm_cluster_load(file, &c, err, sizeof(err))) {
		fprintf(stderr, "%s: %s\n", prog, err);
		return 2;
	}
	/* Too few descriptors is found before the lock and the journal:
	 * nothing was touched, nothing to recover. */
	if (!setup(&r, c, o) && kwm_fd_limit(&r, err, sizeof(err))) {
		fprintf(stderr, "%s: %s\n", prog, err);
		teardown(&r);
		kwm_cluster_free(c);
		return o->recover ? 2 : 1;
	}
	if (!r.vms || take_cluster(&r)) {
		teardown(&r);
		kwm_cluster_free(c);
		return o->recover ? 2 : 1;
	}
	if (o->recover && (rc = kwm_recover_prepare(&r)) >= 0) {
		teardown(&r);
		kwm_cluster_free(c);
		return rc;
	}
	catch_signals();
	r.started = kwm_wall();
	kwm_run_connect(&r);
	kwm_run_loop(&r);
	kwm_progress_done(&r);
	print_outcome(&r);
	rc = closing_words(&r);
	if (!o->plan_only)
		kwm_journal_end(&r, kwm_run_result(&r));
	if (r.journal_error)
		fprintf(stderr, "%s: warning: writing the journal %s failed: %s\n", prog,
			r.journal_path, strerror(r.journal_error));
	if (o->report_file && kwm_report_write(&r, o->report_file, err, sizeof(err))) {
		fprintf(stderr, "%s: %s\n", prog, err);
		if (!rc)
			rc = 1;
	}
	teardown(&r);
	kwm_cluster_free(c);
	return rc;
}
