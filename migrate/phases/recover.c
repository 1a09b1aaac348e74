/* SPDX-License-Identifier: MIT */
/*
 * `kawarimi recover`: finishes the run a journal left unfinished (the
 * coordinator was killed, its host rebooted, the operator's session
 * dropped).  For each VM it asks the QEMUs and the agent that are still
 * there what is true now, then goes forward where the destination holds
 * all of the VM (memory complete there, or cont sent) and back otherwise,
 * with the same tolerant steps as a rollback.  Everything the run started
 * is stopped: block jobs, NBD clients and servers, migrations; a job that
 * was quiesced is resumed.  Twice is harmless: the second finds the
 * journal's end line and has nothing to do.
 */
#include <stdlib.h>
#include <string.h>

#include "run.h"
#include "subcommands.h"

static const char *header_str(json_object *h, const char *key)
{
	json_object *v;

	return h && json_object_object_get_ex(h, key, &v) &&
	       json_object_is_type(v, json_type_string) ? json_object_get_string(v) : "?";
}

/* What the journal says each VM had done, as if this run had done it. */
static void adopt(struct kwm_run *r)
{
	json_object *v;

	if (json_object_object_get_ex(r->jr->header, "keep-source", &v))
		r->opt.keep_source = json_object_get_boolean(v);
	kwm_storage_parse(header_str(r->jr->header, "storage"), &r->storage);
	for (size_t i = 0; i < r->nvms; i++) {
		struct kwm_vm *vm = &r->vms[i];
		const struct kwm_jvm *j = kwm_journal_vm(r->jr, vm->conf->name);

		if (!j)
			continue;
		vm->facts = j->facts;
		vm->quiesce_sent[KWM_SRC] = j->quiesce_sent[0];
		vm->quiesce_sent[KWM_DST] = j->quiesce_sent[1];
		/* A quiesce not followed by an answered resume; the agent's
		 * status settles what it is now. */
		vm->lease_held = j->lease_open;
		vm->dst_complete = j->memory_complete;
		vm->src_was_running = j->src_was_running;
	}
}

static int open_for_append(struct kwm_run *r)
{
	r->journal = fopen(r->journal_path, "a");
	if (!r->journal) {
		fprintf(stderr, "%s: cannot append to the journal %s: %m\n", prog, r->journal_path);
		return -1;
	}
	kwm_journal_header(r, "recover");
	return 0;
}

/* A run that ended with something left to finish: what could not be
 * undone or resumed then may be now (an agent back, a link up again). */
static bool unfinished_result(const char *result)
{
	return !strcmp(result, "rollback-incomplete") || !strcmp(result, "vm-lost") ||
	       !strcmp(result, "failed-after-switchover");
}

/* -1: go on and recover; else the exit status. */
int kwm_recover_prepare(struct kwm_run *r)
{
	char err[1024];
	const char *cl;

	if (r->opt.journal_file)
		snprintf(r->journal_path, sizeof(r->journal_path), "%s", r->opt.journal_file);
	else if (kwm_journal_default(r->c->name, r->journal_path, sizeof(r->journal_path)))
		return fprintf(stderr, "%s: no state directory (set KAWARIMI_STATE_DIR or HOME)\n",
			       prog), 2;
	r->jr = calloc(1, sizeof(*r->jr));
	if (!r->jr)
		return 2;
	if (kwm_journal_read(r->journal_path, r->jr, err, sizeof(err))) {
		fprintf(stderr, "%s: nothing to recover for cluster '%s': no journal (%s)\n",
			prog, r->c->name, err);
		return 0;
	}
	if (!r->jr->header) {
		fprintf(stderr, "%s: %s is not a kawarimi journal (no header line)\n", prog,
			r->journal_path);
		return 2;
	}
	cl = header_str(r->jr->header, "cluster");
	if (strcmp(cl, r->c->name)) {
		fprintf(stderr, "%s: the journal %s is of cluster '%s', not '%s'; give the "
			"matching cluster file or --journal\n", prog, r->journal_path, cl, r->c->name);
		return 2;
	}
	if (r->jr->ended && !unfinished_result(r->jr->result)) {
		fprintf(stderr, "%s: nothing to do: the last run of cluster '%s' ended (%s); "
			"journal %s\n", prog, r->c->name, r->jr->result, r->journal_path);
		return 0;
	}
	for (size_t i = 0; i < r->jr->nvms; i++) {
		bool known = false;

		for (size_t k = 0; k < r->nvms; k++)
			known |= !strcmp(r->vms[k].conf->name, r->jr->vms[i].name);
		if (!known) {
			fprintf(stderr, "%s: the journal names VM '%s', which %s does not; recover "
				"with the cluster file the run used (%s)\n", prog,
				r->jr->vms[i].name, r->c->file, header_str(r->jr->header, "file"));
			return 2;
		}
	}
	adopt(r);
	r->rolling_back = true;
	return open_for_append(r) ? 2 : -1;
}

/* ---- the program of one VM ------------------------------------------------- */

static bool alive(struct kwm_vm *vm, struct kwm_op *op)
{
	return !vm->qmp_lost[op->side];
}

static struct kwm_op *probe(struct kwm_vm *vm, enum kwm_side_id side, const char *cmd,
			    json_object *args, kwm_reply_fn fn)
{
	struct kwm_op *op = kwm_op_add(vm, KWM_OP_QMP, side, cmd, args);

	op->on_reply = fn;
	op->cond = alive;
	op->tolerant = true;
	op->timeout_ms = 10000;
	return op;
}

static void status_of(struct kwm_vm *vm, struct kwm_op *op, json_object *ret)
{
	json_object *st;
	char *dst = op->side == KWM_SRC ? vm->src_status : vm->dst_status;

	if (json_object_object_get_ex(ret, "status", &st) &&
	    json_object_is_type(st, json_type_string))
		snprintf(dst, sizeof(vm->src_status), "%s", json_object_get_string(st));
}

static void migration_of(struct kwm_vm *vm, struct kwm_op *op, json_object *ret)
{
	json_object *st;

	if (json_object_object_get_ex(ret, "status", &st) &&
	    json_object_is_type(st, json_type_string))
		snprintf(vm->mig_status[op->side], sizeof(vm->mig_status[0]), "%s",
			 json_object_get_string(st));
}

static void jobs_of(struct kwm_vm *vm, struct kwm_op *op, json_object *ret)
{
	(void)op;
	for (size_t i = 0; json_object_is_type(ret, json_type_array) &&
	     i < json_object_array_length(ret); i++) {
		json_object *j = json_object_array_get_idx(ret, i), *dev, *rdy;

		if (!json_object_object_get_ex(j, "device", &dev) ||
		    !json_object_is_type(dev, json_type_string))
			continue;
		for (size_t d = 0; d < vm->conf->ndisks; d++)
			if (!strcmp(json_object_get_string(dev), vm->disks[d].job)) {
				vm->disks[d].job_running = true;
				vm->disks[d].ready = json_object_object_get_ex(j, "ready", &rdy) &&
						     json_object_get_boolean(rdy);
			}
	}
}

static void nodes_of(struct kwm_vm *vm, struct kwm_op *op, json_object *ret)
{
	if (vm->nodes[op->side])
		json_object_put(vm->nodes[op->side]);
	vm->nodes[op->side] = json_object_get(ret);
}

static void dst_hca_there(struct kwm_vm *vm, struct kwm_op *op, json_object *ret)
{
	(void)op;
	(void)ret;
	vm->dst_hca_added = true;
}

/* Does the destination hold all of the VM? */
static bool dst_whole(struct kwm_vm *vm)
{
	if (vm->qmp_lost[KWM_DST])
		return false;
	return !strcmp(vm->dst_status, "running") || !strcmp(vm->mig_status[KWM_DST], "completed") ||
	       ((vm->dst_complete || (vm->facts & KWM_F_SWITCHED)) &&
		strcmp(vm->dst_status, "inmigrate"));
}

static int decide(struct kwm_vm *vm)
{
	if (!strcmp(vm->dst_status, "running"))
		vm->facts |= KWM_F_SWITCHED;
	if (!vm->facts) {
		kwm_vm_note(vm, "the run had not changed this VM: nothing to do");
		return 0;
	}
	if (dst_whole(vm)) {
		vm->dst_complete = true;
		vm->src_gone = vm->qmp_lost[KWM_SRC];
		kwm_journal_fact(vm, "recover-forward", NULL);
		kwm_build_rollforward(vm);
		return 0;
	}
	kwm_journal_fact(vm, "recover-back", NULL);
	vm->rolled_back = true;
	kwm_build_rollback(vm);
	return 0;
}

void kwm_build_recover(struct kwm_vm *vm)
{
	struct kwm_op *op;

	probe(vm, KWM_SRC, "query-status", NULL, status_of);
	probe(vm, KWM_DST, "query-status", NULL, status_of);
	probe(vm, KWM_SRC, "query-migrate", NULL, migration_of);
	probe(vm, KWM_DST, "query-migrate", NULL, migration_of);
	probe(vm, KWM_SRC, "query-block-jobs", NULL, jobs_of);
	probe(vm, KWM_SRC, "query-named-block-nodes", NULL, nodes_of);
	probe(vm, KWM_DST, "query-named-block-nodes", NULL, nodes_of);
	if (vm->conf->dst.hca) {
		char path[200];

		snprintf(path, sizeof(path), "/machine/peripheral/%s", vm->conf->dst.hca_id);
		op = probe(vm, KWM_DST, "qom-get", kwm_obj("path=s property=s", path, "type"),
			   dst_hca_there);
		op->error_ok = true;
	}
	op = kwm_op_add(vm, KWM_OP_CALL, KWM_SRC, NULL, NULL);
	op->fn = decide;
	op->what = strdup("deciding forward or back");
}
