/* SPDX-License-Identifier: MIT */
/*
 * The scheduler: which VM starts which phase when.  Every phase is a
 * cluster-wide barrier (no VM starts phase N+1 before every VM has ended
 * phase N), which gives the map's ‖ points and also keeps preflight ahead
 * of any change.  Storage pre-copy and memory migration run at most
 * `limits.parallel` VMs at a time, sharing the WAN cap.  Any failure before
 * switchover turns every VM to rollback.
 */
#include <string.h>

#include "run.h"

/* The phases' functions, from the table in phase.h.  finish (quit the
 * sources) comes right after the switchover, before the resume: once every
 * destination runs, a source can only be a stale copy, and a paused QEMU
 * left around holds whatever it was connected to (on the lab, the L2 hub
 * it no longer reads).  --keep-source skips it. */
struct phase_fns {
	bool (*applies)(struct kwm_vm *vm);
	void (*build)(struct kwm_vm *vm);
	void (*undo)(struct kwm_vm *vm);
};

#define KWM_PH_FNS(id, name, key, ms, limited, colour, applies, build, undo) \
	[KWM_PH_##id] = { applies, build, undo },
static const struct phase_fns fns[KWM_PH__COUNT] = { KWM_PHASES(KWM_PH_FNS) };
#undef KWM_PH_FNS

/* The migration's phases run in the table's order, every row but
 * rollback's. */
#define NORDER ((size_t)KWM_PH_ROLLBACK)
#define order(k) ((enum kwm_phase)(k))

bool kwm_phase_applies(struct kwm_vm *vm, enum kwm_phase p)
{
	return !fns[p].applies || fns[p].applies(vm);
}

/* Each phase's part of a rollback, latest phase first. */
void kwm_undo_phases(struct kwm_vm *vm)
{
	for (int p = KWM_PH__COUNT - 1; p >= 0; p--)
		if (fns[p].undo)
			fns[p].undo(vm);
}

/* Where the cluster is: the first phase that some VM has not
 * ended (ran and went idle, or skipped).  A VM busy in a later phase has
 * ended this one: counting it as "not ended" here held phase k+1's
 * waiting VMs back until every VM in it was done, so freed slots were
 * refilled a whole batch at a time (docs/performance.md, "Scale, real
 * VMs").  One busy rolling back (allow-partial) still holds the others,
 * as before. */
static size_t current(struct kwm_run *r)
{
	for (size_t k = 0; k < NORDER; k++)
		for (size_t i = 0; i < r->nvms; i++) {
			struct kwm_vm *vm = &r->vms[i];
			bool busy_here = vm->state == KWM_VM_BUSY &&
					 (vm->phase == order(k) || vm->phase == KWM_PH_ROLLBACK);

			if (vm->skipped[order(k)])
				continue;
			if (!vm->phase_ran[order(k)] || busy_here)
				return k;
		}
	return NORDER;
}

static bool limited(enum kwm_phase p)
{
	return kwm_phase_info[p].limited;
}

static int inflight(struct kwm_run *r)
{
	int n = 0;

	for (size_t i = 0; i < r->nvms; i++)
		n += kwm_vm_inflight(&r->vms[i]);
	return n;
}

static void start_phase(struct kwm_vm *vm, enum kwm_phase p)
{
	kwm_ops_clear(vm);
	fns[p].build(vm);
	kwm_phase_begin(vm, p);
}

/* Undoes what vm started, or finishes it at the destination when that
 * holds all of the VM and the source is gone. */
static void undo_vm(struct kwm_vm *vm)
{
	if (vm->state == KWM_VM_BUSY) {
		/* Abandon the phase: its pending reply will be dropped. */
		vm->phases[vm->phase].end = kwm_wall();
		vm->op_gen = 0;
	}
	kwm_ops_clear(vm);
	vm->state = KWM_VM_IDLE;
	/* Preflight changed nothing; a VM that never got further has
	 * nothing to undo. */
	if (!vm->facts) {
		vm->state = KWM_VM_DONE;
		return;
	}
	if (vm->src_gone) {
		kwm_build_rollforward(vm);
	} else {
		vm->rolled_back = true;
		kwm_build_rollback(vm);
	}
	kwm_phase_begin(vm, KWM_PH_ROLLBACK);
}

static void start_rollback(struct kwm_run *r)
{
	r->rolling_back = true;
	for (size_t i = 0; i < r->nvms; i++)
		undo_vm(&r->vms[i]);
}

/* What a failed VM does next: undo (allow-partial) or stop where it is
 * (past the switchover).  Its phases not run are skipped, so the barriers
 * no longer wait for it. */
static void settle_failed(struct kwm_run *r, bool undo)
{
	for (size_t i = 0; i < r->nvms; i++) {
		struct kwm_vm *vm = &r->vms[i];

		if (vm->state != KWM_VM_FAILED)
			continue;
		for (size_t k = 0; k < NORDER; k++)
			if (!vm->phase_ran[order(k)])
				vm->skipped[order(k)] = true;
		if (undo) {
			undo_vm(vm);
			continue;
		}
		kwm_ops_clear(vm);
		vm->state = KWM_VM_DONE;
	}
}

static bool any_busy(struct kwm_run *r)
{
	for (size_t i = 0; i < r->nvms; i++)
		if (r->vms[i].state == KWM_VM_BUSY)
			return true;
	return false;
}

static bool any_failed(struct kwm_run *r)
{
	for (size_t i = 0; i < r->nvms; i++)
		if (r->vms[i].state == KWM_VM_FAILED)
			return true;
	return false;
}

/*
 * The next VM to start phase p.  Storage pre-copies go longest first (by
 * the bytes preflight expects to move): with fewer slots than VMs, that
 * keeps one big disk from starting last and finishing the cluster late.
 * Otherwise the file's order.
 */
static struct kwm_vm *next_vm(struct kwm_run *r, enum kwm_phase p)
{
	struct kwm_vm *best = NULL;

	for (size_t i = 0; i < r->nvms; i++) {
		struct kwm_vm *vm = &r->vms[i];

		if (vm->phase_ran[p] || vm->skipped[p] || vm->state != KWM_VM_IDLE)
			continue;
		if (!kwm_phase_applies(vm, p)) {
			vm->skipped[p] = true;
			continue;
		}
		if (!best)
			best = vm;
		else if (p == KWM_PH_STORAGE && vm->expect_bytes > best->expect_bytes)
			best = vm;
		if (p != KWM_PH_STORAGE)
			break;
	}
	return best;
}

/* recover: every VM runs its own program (recover.c), no barrier. */
static bool start_recover(struct kwm_run *r)
{
	for (size_t i = 0; i < r->nvms; i++) {
		struct kwm_vm *vm = &r->vms[i];

		if (vm->state != KWM_VM_IDLE || vm->phase_ran[KWM_PH_ROLLBACK])
			continue;
		kwm_ops_clear(vm);
		kwm_build_recover(vm);
		kwm_phase_begin(vm, KWM_PH_ROLLBACK);
	}
	return any_busy(r);
}

bool kwm_schedule(struct kwm_run *r)
{
	size_t k;
	enum kwm_phase p;
	bool started = false;

	if (r->opt.recover)
		return start_recover(r);
	if (r->rolling_back)
		return any_busy(r);
	if (r->opt.plan_only && any_failed(r))
		return any_busy(r);
	if (r->failed_after_switchover) {
		/* Past the point of no return: the failed VMs stop where they
		 * are, the others go on to the end. */
		settle_failed(r, false);
	} else if (any_failed(r) && r->opt.allow_partial && !r->opt.plan_only) {
		settle_failed(r, true);
	} else if (any_failed(r)) {
		start_rollback(r);
		return any_busy(r);
	}
	/* A phase that applies to no VM is passed in the same turn, not one
	 * 50 ms poll timeout per skipped phase. */
	for (size_t was = NORDER + 1;;) {
		k = current(r);
		if (k == NORDER || (r->opt.plan_only && k > 0))
			return any_busy(r);
		if (k == was)
			break;
		was = k;
		p = order(k);
		started = false;
		for (int n = inflight(r);;) {
			struct kwm_vm *vm = next_vm(r, p);

			if (!vm)
				break;
			if (limited(p) && n >= r->c->parallel)
				break;
			start_phase(vm, p);
			started = true;
			n = inflight(r);
			if (n > r->max_inflight_seen)
				r->max_inflight_seen = n;
			if (r->first_failure)
				break;
		}
		if (started && limited(p))
			kwm_reshare(r);
		if (started || r->first_failure)
			break;
	}
	return true;
}
