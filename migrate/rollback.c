/* SPDX-License-Identifier: MIT */
/*
 * Rollback: after any failure before switchover, undo what the facts say
 * was started, in the reverse order of the migration, and leave the VM
 * running at the source with its HCA and its job as before.  Every step is
 * tolerant: a destination that died cannot answer, and a rollback that
 * stopped at its first error would leave more behind.
 */
#include <string.h>

#include "run.h"

static struct kwm_op *undo(struct kwm_vm *vm, enum kwm_side_id side, const char *cmd,
			   json_object *args)
{
	struct kwm_op *op = kwm_op_add(vm, KWM_OP_QMP, side, cmd, args);

	op->tolerant = true;
	return op;
}

static struct kwm_op *settle(struct kwm_vm *vm, kwm_pred_fn until, const char *what)
{
	struct kwm_op *op = kwm_op_add(vm, KWM_OP_WAIT, KWM_SRC, NULL, NULL);

	op->until = until;
	op->tolerant = true;
	op->timeout_ms = 15000;
	op->what = strdup(what);
	return op;
}

static bool migration_over(struct kwm_vm *vm)
{
	const char *s = vm->mig_status[KWM_SRC];

	return vm->qmp_lost[KWM_SRC] || !strcmp(s, "cancelled") || !strcmp(s, "failed") ||
	       !strcmp(s, "completed") || !*s;
}

static bool mirrors_gone(struct kwm_vm *vm)
{
	if (vm->qmp_lost[KWM_SRC])
		return true;
	for (size_t d = 0; d < vm->conf->ndisks; d++)
		if (vm->disks[d].job_running)
			return false;
	return true;
}

static bool job_alive(struct kwm_vm *vm, struct kwm_op *op)
{
	return vm->disks[op->disk].job_running;
}

static bool dst_reachable(struct kwm_vm *vm, struct kwm_op *op)
{
	(void)op;
	return !vm->qmp_lost[KWM_DST];
}

/* A destination that holds the whole VM (memory migration completed) must
 * never run: quit it, or two copies of the node would share one IP. */
static bool dst_holds_vm(struct kwm_vm *vm, struct kwm_op *op)
{
	(void)op;
	return !vm->qmp_lost[KWM_DST] && !strcmp(vm->mig_status[KWM_DST], "completed");
}

static int mark_dst_quit(struct kwm_vm *vm)
{
	vm->quit_sent[KWM_DST] = true;
	return 0;
}

static void got_status(struct kwm_vm *vm, struct kwm_op *op, json_object *ret)
{
	json_object *st;

	(void)op;
	if (json_object_object_get_ex(ret, "status", &st))
		snprintf(vm->src_status, sizeof(vm->src_status), "%s", json_object_get_string(st));
}

/* The last word on the source's state must come from the source itself. */
static int forget_status(struct kwm_vm *vm)
{
	snprintf(vm->src_status, sizeof(vm->src_status), "unknown");
	return 0;
}

static bool needs_cont(struct kwm_vm *vm, struct kwm_op *op)
{
	(void)op;
	return vm->src_was_running && strcmp(vm->src_status, "running");
}

static int check_running(struct kwm_vm *vm)
{
	if (vm->src_was_running && strcmp(vm->src_status, "running")) {
		vm->rollback_incomplete = true;
		kwm_vm_note(vm, "the source is '%s' after the rollback, not running",
			    vm->src_status);
	}
	return 0;
}

static int forget_hca(struct kwm_vm *vm)
{
	vm->hca_present = false;
	return 0;
}

static void hca_still_there(struct kwm_vm *vm, struct kwm_op *op, json_object *ret)
{
	(void)op;
	(void)ret;
	vm->hca_present = true;
	if (!vm->hca_deleted)
		kwm_vm_note(vm, "the guest never released '%s' (its unplug request may still "
			    "be pending in the guest); the device stays in place",
			    vm->conf->src.hca_id);
}

static bool hca_missing(struct kwm_vm *vm, struct kwm_op *op)
{
	(void)op;
	return !vm->hca_present && !vm->qmp_lost[KWM_SRC];
}

static void hca_back(struct kwm_vm *vm, struct kwm_op *op, json_object *ret)
{
	(void)op;
	(void)ret;
	vm->hca_readded = true;
}

/* With the HCA back, a quiesce/resume pair moves the job onto it; a job
 * still quiesced only needs the resume. */
static bool requiesce(struct kwm_vm *vm, struct kwm_op *op)
{
	(void)op;
	return vm->hca_readded && !vm->agent_quiesced && !vm->agent_lost[KWM_SRC];
}

static bool quiesced_now(struct kwm_vm *vm, struct kwm_op *op)
{
	(void)op;
	return vm->agent_quiesced && !vm->agent_lost[KWM_SRC];
}

static void add_agent_steps(struct kwm_vm *vm)
{
	struct kwm_op *op;

	op = kwm_op_add(vm, KWM_OP_CALL, KWM_SRC, NULL, NULL);
	op->fn = kwm_mark_rb_quiesce;
	op->cond = requiesce;
	op = kwm_op_add(vm, KWM_OP_AGENT, KWM_SRC, "quiesce", kwm_quiesce_args(vm));
	op->cond = requiesce;
	op->on_reply = kwm_on_quiesced;
	op->tolerant = op->essential = true;
	op->timeout_ms = vm->run->c->timeout_ms[KWM_PH_QUIESCE];
	op = kwm_op_add(vm, KWM_OP_AGENT, KWM_SRC, "resume",
			kwm_resume_args(vm, vm->conf->src.hca != NULL));
	op->cond = quiesced_now;
	op->on_reply = kwm_on_resumed;
	op->tolerant = op->essential = true;
	op->timeout_ms = vm->run->c->timeout_ms[KWM_PH_RESUME];
}

static void add_hca_steps(struct kwm_vm *vm)
{
	char path[200];
	struct kwm_op *op;

	op = kwm_op_add(vm, KWM_OP_CALL, KWM_SRC, NULL, NULL);
	op->fn = forget_hca;
	snprintf(path, sizeof(path), "/machine/peripheral/%s", vm->conf->src.hca_id);
	op = undo(vm, KWM_SRC, "qom-get", kwm_obj("path=s property=s", path, "type"));
	op->on_reply = hca_still_there;
	op->error_ok = true;
	op = undo(vm, KWM_SRC, "device_add", json_object_get(vm->conf->src.hca));
	op->cond = hca_missing;
	op->on_reply = hca_back;
	op->essential = true;
}

void kwm_build_rollback(struct kwm_vm *vm)
{
	unsigned f = vm->facts;
	struct kwm_op *op;

	if (f & KWM_F_MIGRATE) {
		undo(vm, KWM_SRC, "migrate_cancel", NULL);
		settle(vm, migration_over, "waiting for the migration to stop");
	}
	if (f & KWM_F_MIRRORS) {
		for (size_t d = 0; d < vm->conf->ndisks; d++) {
			op = undo(vm, KWM_SRC, "block-job-cancel",
				  kwm_obj("device=s force=b", vm->disks[d].job, 1));
			op->disk = (int)d;
			op->cond = job_alive;
		}
		settle(vm, mirrors_gone, "waiting for the mirrors to stop");
	}
	if (f & KWM_F_NBD_NODES)
		for (size_t d = 0; d < vm->conf->ndisks; d++)
			undo(vm, KWM_SRC, "blockdev-del",
			     kwm_obj("node-name=s", vm->disks[d].nbd_node))->error_ok = true;
	if (f & KWM_F_NBD_SERVER)
		undo(vm, KWM_DST, "nbd-server-stop", NULL)->cond = dst_reachable;
	if (f & KWM_F_INCOMING) {
		op = kwm_op_add(vm, KWM_OP_CALL, KWM_SRC, NULL, NULL);
		op->fn = mark_dst_quit;
		op->cond = dst_holds_vm;
		undo(vm, KWM_DST, "quit", NULL)->cond = dst_holds_vm;
	}
	undo(vm, KWM_SRC, "query-status", NULL)->on_reply = got_status;
	op = undo(vm, KWM_SRC, "cont", NULL);
	op->cond = needs_cont;
	op->essential = true;
	if (f & KWM_F_UNPLUG)
		add_hca_steps(vm);
	if (f & KWM_F_QUIESCED)
		add_agent_steps(vm);
	op = kwm_op_add(vm, KWM_OP_CALL, KWM_SRC, NULL, NULL);
	op->fn = forget_status;
	undo(vm, KWM_SRC, "query-status", NULL)->on_reply = got_status;
	op = kwm_op_add(vm, KWM_OP_CALL, KWM_SRC, NULL, NULL);
	op->fn = check_running;
}
