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

static bool src_dead(struct kwm_vm *vm, struct kwm_op *op)
{
	(void)op;
	return vm->qmp_lost[KWM_SRC] && !vm->quit_sent[KWM_SRC];
}

static bool src_up(struct kwm_vm *vm, struct kwm_op *op)
{
	return !src_dead(vm, op);
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
	return vm->src_was_running && strcmp(vm->src_status, "running") &&
	       !vm->qmp_lost[KWM_SRC];
}

static int check_running(struct kwm_vm *vm)
{
	if (vm->where == KWM_AT_LOST)
		return 0;
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

/* With the HCA back, a quiesce/resume pair moves a running job onto it;
 * a job that was asked to quiesce (answered or not) only needs the resume. */
static bool requiesce(struct kwm_vm *vm, struct kwm_op *op)
{
	(void)op;
	return vm->hca_readded && (!vm->lease_held || vm->rb_requiesce) && !vm->rb_resumed &&
	       !vm->agent_lost[KWM_SRC] && strcmp(vm->agent_state, "-");
}

/* A resume of the rollback's own: the job is where it belongs now. */
static void rb_resumed(struct kwm_vm *vm, struct kwm_op *op, json_object *ret)
{
	vm->rb_resumed = true;
	kwm_on_resumed(vm, op, ret);
}

static bool lease_out(struct kwm_vm *vm, struct kwm_op *op)
{
	(void)op;
	return vm->lease_held && !vm->agent_lost[KWM_SRC];
}

static bool agent_quiesced_now(struct kwm_vm *vm, struct kwm_op *op)
{
	return lease_out(vm, op) && !strcmp(vm->agent_state, "quiesced");
}

/* "?" while a status is asked; "-" once one went unanswered: an agent
 * that does not answer (hung, gone) is not asked again, and its lease
 * will resume the job. */
static int mark_asking(struct kwm_vm *vm)
{
	snprintf(vm->agent_state, sizeof(vm->agent_state), "%s",
		 !strcmp(vm->agent_state, "?") || !strcmp(vm->agent_state, "-") ? "-" : "?");
	return 0;
}

static bool asking(struct kwm_vm *vm, struct kwm_op *op)
{
	return lease_out(vm, op) && !strcmp(vm->agent_state, "?");
}

static bool agent_answers(struct kwm_vm *vm, struct kwm_op *op)
{
	return lease_out(vm, op) && strcmp(vm->agent_state, "?") && strcmp(vm->agent_state, "-");
}

static void got_agent_state(struct kwm_vm *vm, struct kwm_op *op, json_object *ret)
{
	json_object *st;

	(void)op;
	if (!json_object_object_get_ex(ret, "state", &st) ||
	    !json_object_is_type(st, json_type_string))
		return;
	snprintf(vm->agent_state, sizeof(vm->agent_state), "%s", json_object_get_string(st));
	/* Our quiesce never took hold (or the lease already ran out). */
	if (!strcmp(vm->agent_state, "running"))
		vm->lease_held = vm->agent_quiesced = false;
}

static int start_pause(struct kwm_vm *vm)
{
	vm->wait_until = kwm_now_ms() + 2000;
	return 0;
}

static bool pause_over(struct kwm_vm *vm)
{
	return kwm_now_ms() >= vm->wait_until;
}

static int check_resumed(struct kwm_vm *vm)
{
	if (!vm->lease_held)
		return 0;
	vm->rollback_incomplete = true;
	kwm_vm_note(vm, "the job was not resumed (its agent is %s); the agent resumes it by "
		    "itself when the quiesce's lease runs out, within %lld s",
		    vm->agent_lost[KWM_SRC] ? "unreachable" : vm->agent_state,
		    (long long)vm->run->c->lease_ms / 1000);
	return 0;
}

/*
 * The job is resumed wherever a quiesce was sent, answered or not: ask
 * the agent where it stands, resume once it is quiesced, and while it is
 * still quiescing look again a little later.
 */
/* Ask where the agent stands; resume once it is quiesced (onto the HCA
 * when it is there); while it is still quiescing, look again later. */
static void add_status_loop(struct kwm_vm *vm, bool verbs)
{
	struct kwm_op *op;

	for (int i = 0; i < 6; i++) {
		op = kwm_op_add(vm, KWM_OP_CALL, KWM_SRC, NULL, NULL);
		op->fn = mark_asking;
		op->cond = lease_out;
		op = kwm_op_add(vm, KWM_OP_AGENT, KWM_SRC, "status", NULL);
		op->cond = asking;
		op->on_reply = got_agent_state;
		op->tolerant = true;
		op->timeout_ms = 5000;
		op = kwm_op_add(vm, KWM_OP_AGENT, KWM_SRC, "resume", kwm_resume_args(vm, verbs));
		op->cond = agent_quiesced_now;
		op->on_reply = rb_resumed;
		op->tolerant = true;
		op->timeout_ms = vm->run->c->timeout_ms[KWM_PH_RESUME];
		op = kwm_op_add(vm, KWM_OP_CALL, KWM_SRC, NULL, NULL);
		op->fn = start_pause;
		op->cond = agent_answers;
		op = settle(vm, pause_over, "waiting for the agent to finish its quiesce");
		op->cond = agent_answers;
	}
}

/*
 * The job is resumed wherever a quiesce was sent, answered or not; then a
 * job that runs on TCP (resumed before the failure, or by its lease) is
 * moved onto the HCA put back with a quiesce and a second round.  What the
 * agent says decides, not what we sent: a coordinator that died between
 * sending a resume and journaling its answer cannot know.
 */
static void add_agent_steps(struct kwm_vm *vm)
{
	bool verbs = vm->conf->src.hca != NULL;
	struct kwm_op *op;

	add_status_loop(vm, verbs);
	op = kwm_op_add(vm, KWM_OP_CALL, KWM_SRC, NULL, NULL);
	op->fn = kwm_mark_rb_quiesce;
	op->cond = requiesce;
	op = kwm_op_add(vm, KWM_OP_AGENT, KWM_SRC, "quiesce", kwm_quiesce_args(vm));
	op->cond = requiesce;
	op->on_reply = kwm_on_quiesced;
	op->tolerant = op->essential = true;
	op->timeout_ms = vm->run->c->timeout_ms[KWM_PH_QUIESCE];
	add_status_loop(vm, verbs);
	kwm_op_add(vm, KWM_OP_CALL, KWM_SRC, NULL, NULL)->fn = check_resumed;
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
	op->cond = src_up;
	op = undo(vm, KWM_SRC, "device_add", json_object_get(vm->conf->src.hca));
	op->cond = hca_missing;
	op->on_reply = hca_back;
	op->essential = true;
}

static int reconnect_src(struct kwm_vm *vm)
{
	kwm_reconnect(vm, KWM_SRC);
	return 0;
}

/* Neither side can run the VM: say why and where its disks are (dst_ran:
 * the destination ran it after the switchover, so its images are the
 * newest). */
static void note_lost(struct kwm_vm *vm, const char *why, bool dst_ran)
{
	size_t off = 0;

	vm->where = KWM_AT_LOST;
	vm->rollback_incomplete = true;
	off += (size_t)snprintf(vm->lost_note, sizeof(vm->lost_note), "%s", why);
	for (size_t d = 0; d < vm->conf->ndisks && off < sizeof(vm->lost_note); d++) {
		const char *df = kwm_disk_file(vm, KWM_DST, d), *sf = kwm_disk_file(vm, KWM_SRC, d);

		if (dst_ran)
			off += (size_t)snprintf(vm->lost_note + off, sizeof(vm->lost_note) - off,
						"; disk '%s': the destination's image %s holds it "
						"as the VM last ran, the source's %s as of the "
						"switchover", vm->conf->disks[d].src_node,
						df ? df : "?", sf ? sf : "?");
		else
			off += (size_t)snprintf(vm->lost_note + off, sizeof(vm->lost_note) - off,
						"; disk '%s': the source's image %s holds it as the "
						"source left it, the destination's %s a crash-"
						"consistent copy as of the mirror's last write%s",
						vm->conf->disks[d].src_node, sf ? sf : "?",
						df ? df : "?", vm->disks[d].ready ? "" :
						" (the mirror had not caught up: incomplete)");
	}
	kwm_progress_message(vm->run, vm, "error", vm->lost_note);
	kwm_journal_fact(vm, "lost", kwm_obj("note=s", vm->lost_note));
}

static int mark_lost(struct kwm_vm *vm)
{
	note_lost(vm, "the source QEMU died before the destination had the VM's memory", false);
	return 0;
}

/* The destination died after it was told to run the VM: the source is
 * quit, or (--keep-source) a copy paused at the switchover that the
 * destination has since run past. */
void kwm_mark_dst_lost(struct kwm_vm *vm)
{
	note_lost(vm, vm->quit_sent[KWM_SRC] || vm->qmp_lost[KWM_SRC] ?
		  "the destination QEMU died after the switchover, and the source was quit" :
		  "the destination QEMU died after the switchover; the source is a stale copy "
		  "paused at the switchover (do not cont it while the destination's disks may "
		  "be in use)", true);
}

static bool lost_and_dst_up(struct kwm_vm *vm, struct kwm_op *op)
{
	return src_dead(vm, op) && !vm->dst_complete && !vm->qmp_lost[KWM_DST];
}

static json_object *yank_nbd(const char *node)
{
	json_object *a = json_object_new_array();

	json_object_array_add(a, kwm_obj("type=s node-name=s", "block-node", node));
	return kwm_obj("instances=o", a);
}

/* ---- each phase's undo (phase.h's undo column), latest phase first ----- */

/* Stop the migration (the source resumes by itself); a destination that
 * got all of the VM is quit, or two copies of the node could run; the
 * source runs again. */
void kwm_undo_memory(struct kwm_vm *vm)
{
	unsigned f = vm->facts;
	struct kwm_op *op;

	if (f & KWM_F_MIGRATE) {
		undo(vm, KWM_SRC, "migrate_cancel", NULL)->cond = src_up;
		settle(vm, migration_over, "waiting for the migration to stop");
	}
	if (f & KWM_F_INCOMING) {
		op = kwm_op_add(vm, KWM_OP_CALL, KWM_SRC, NULL, NULL);
		op->fn = mark_dst_quit;
		op->cond = dst_holds_vm;
		undo(vm, KWM_DST, "quit", NULL)->cond = dst_holds_vm;
	}
	op = undo(vm, KWM_SRC, "query-status", NULL);
	op->on_reply = got_status;
	op->cond = src_up;
	op = undo(vm, KWM_SRC, "cont", NULL);
	op->cond = needs_cont;
	op->essential = true;
}

void kwm_undo_unplug(struct kwm_vm *vm)
{
	if (vm->facts & KWM_F_UNPLUG)
		add_hca_steps(vm);
}

void kwm_undo_quiesce(struct kwm_vm *vm)
{
	if (vm->facts & KWM_F_QUIESCED)
		add_agent_steps(vm);
}

/* The mirrors, the source's NBD clients, the destination's NBD server. */
void kwm_undo_storage(struct kwm_vm *vm)
{
	unsigned f = vm->facts;
	struct kwm_op *op;

	/* A link that went black answers nothing and resets nothing: the
	 * mirror's writes to the NBD client would never end, nor would a
	 * blockdev-del of it, which waits for them with the source's main
	 * loop (its monitor, its guest's I/O) stuck.  yank cuts the client's
	 * connection: what is in flight fails at once. */
	if (f & KWM_F_NBD_NODES)
		for (size_t d = 0; d < vm->conf->ndisks; d++)
			undo(vm, KWM_SRC, "yank", yank_nbd(vm->disks[d].nbd_node));
	if (f & KWM_F_MIRRORS) {
		for (size_t d = 0; d < vm->conf->ndisks; d++) {
			op = undo(vm, KWM_SRC, "block-job-cancel",
				  kwm_obj("device=s force=b", vm->disks[d].job, 1));
			op->disk = (int)d;
			op->cond = job_alive;
		}
		/* A mirror that will not stop (its writes stuck on a black
		 * link even after the yank) is left behind: say so. */
		settle(vm, mirrors_gone, "waiting for the mirrors to stop")->essential = true;
	}
	if (f & KWM_F_NBD_NODES)
		for (size_t d = 0; d < vm->conf->ndisks; d++)
			undo(vm, KWM_SRC, "blockdev-del",
			     kwm_obj("node-name=s", vm->disks[d].nbd_node))->error_ok = true;
	if (f & KWM_F_NBD_SERVER)
		undo(vm, KWM_DST, "nbd-server-stop", NULL)->cond = dst_reachable;
}

/*
 * A rollback: a source whose QMP connection dropped is tried once more,
 * every phase undoes its part, latest first; then, if the source died
 * with the only whole copy, what is left is the disks: the destination is
 * quit (its memory is partial) so that its image is closed and unlocked
 * for the operator to boot.  Last, the source must be running.
 */
void kwm_build_rollback(struct kwm_vm *vm)
{
	struct kwm_op *op;

	kwm_op_add(vm, KWM_OP_CALL, KWM_SRC, NULL, NULL)->fn = reconnect_src;
	kwm_undo_phases(vm);
	/* After the NBD server and the migration that use them. */
	if (vm->facts & KWM_F_TLS) {
		kwm_add_tls_cleanup(vm, KWM_SRC, src_up);
		kwm_add_tls_cleanup(vm, KWM_DST, dst_reachable);
	}
	op = kwm_op_add(vm, KWM_OP_CALL, KWM_SRC, NULL, NULL);
	op->fn = mark_lost;
	op->cond = src_dead;
	if (vm->facts & KWM_F_INCOMING) {
		op = kwm_op_add(vm, KWM_OP_CALL, KWM_SRC, NULL, NULL);
		op->fn = mark_dst_quit;
		op->cond = lost_and_dst_up;
		undo(vm, KWM_DST, "quit", NULL)->cond = lost_and_dst_up;
	}
	kwm_op_add(vm, KWM_OP_CALL, KWM_SRC, NULL, NULL)->fn = forget_status;
	op = undo(vm, KWM_SRC, "query-status", NULL);
	op->on_reply = got_status;
	op->cond = src_up;
	kwm_op_add(vm, KWM_OP_CALL, KWM_SRC, NULL, NULL)->fn = check_running;
}

/* ---- forward: the destination has all of the VM ------------------------- */

static bool dst_hca_missing(struct kwm_vm *vm, struct kwm_op *op)
{
	(void)op;
	return vm->conf->dst.hca && !vm->dst_hca_added && !vm->qmp_lost[KWM_DST];
}

static bool not_switched(struct kwm_vm *vm, struct kwm_op *op)
{
	(void)op;
	return !(vm->facts & KWM_F_SWITCHED);
}

static bool src_to_quit(struct kwm_vm *vm, struct kwm_op *op)
{
	return src_up(vm, op) && !vm->run->opt.keep_source;
}

static int mark_src_quit(struct kwm_vm *vm)
{
	vm->quit_sent[KWM_SRC] = true;
	return 0;
}

static int mark_forward(struct kwm_vm *vm)
{
	vm->rolled_forward = true;
	kwm_vm_note(vm, "the destination has all of the VM: finishing there");
	return 0;
}

/*
 * The VM finishes at its destination: what the source was still doing
 * for it is stopped, the destination's NBD server goes, its HCA is
 * plugged if it can be, it runs, the source (a stale copy now) is quit,
 * and the job is resumed there.  Every step is tolerant, as in a rollback.
 */
void kwm_build_rollforward(struct kwm_vm *vm)
{
	unsigned f = vm->facts;
	struct kwm_op *op;

	kwm_op_add(vm, KWM_OP_CALL, KWM_SRC, NULL, NULL)->fn = mark_forward;
	kwm_op_add(vm, KWM_OP_CALL, KWM_SRC, NULL, NULL)->fn = reconnect_src;
	for (size_t d = 0; d < vm->conf->ndisks && (f & KWM_F_MIRRORS); d++) {
		op = undo(vm, KWM_SRC, "block-job-cancel",
			  kwm_obj("device=s force=b", vm->disks[d].job, 1));
		op->disk = (int)d;
		op->cond = job_alive;
		op->error_ok = true;
	}
	if (f & KWM_F_NBD_SERVER)
		undo(vm, KWM_DST, "nbd-server-stop", NULL)->error_ok = true;
	op = undo(vm, KWM_DST, "device_add", vm->conf->dst.hca ?
		  json_object_get(vm->conf->dst.hca) : NULL);
	op->cond = dst_hca_missing;
	op->on_reply = kwm_on_dst_hca_added;
	op->fact = KWM_F_DST_HCA;
	op = undo(vm, KWM_DST, "cont", NULL);
	op->cond = not_switched;
	op->fact = KWM_F_SWITCHED;
	op->essential = true;
	undo(vm, KWM_DST, "query-status", NULL)->on_reply = kwm_on_dst_status;
	if (f & KWM_F_TLS) {
		kwm_add_tls_cleanup(vm, KWM_DST, dst_reachable);
		kwm_add_tls_cleanup(vm, KWM_SRC, src_up);
	}
	op = kwm_op_add(vm, KWM_OP_CALL, KWM_SRC, NULL, NULL);
	op->fn = mark_src_quit;
	op->cond = src_to_quit;
	undo(vm, KWM_SRC, "quit", NULL)->cond = src_to_quit;
	if (vm->conf->dst.symvirt)
		kwm_add_resume_dst(vm);
}
