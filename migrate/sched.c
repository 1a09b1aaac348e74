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

/*
 * finish (quit the sources) comes right after the switchover, before the
 * resume: once every destination runs, a source can only be a stale copy
 * (rollback past cont is not possible anyway), and a paused QEMU left
 * around holds whatever it was connected to (on the lab, the L2 hub it no
 * longer reads).  --keep-source skips it.
 */
static const enum kwm_phase order[] = {
	KWM_PH_PREFLIGHT, KWM_PH_STORAGE, KWM_PH_QUIESCE, KWM_PH_UNPLUG,
	KWM_PH_RESUME_SRC, KWM_PH_MEMORY, KWM_PH_SWITCHOVER, KWM_PH_FINISH,
	KWM_PH_RESUME,
};
#define NORDER (sizeof(order) / sizeof(order[0]))

typedef void (*builder_fn)(struct kwm_vm *vm);

static builder_fn builder(enum kwm_phase p)
{
	switch (p) {
	case KWM_PH_PREFLIGHT: return kwm_build_preflight;
	case KWM_PH_STORAGE: return kwm_build_storage;
	case KWM_PH_QUIESCE: return kwm_build_quiesce;
	case KWM_PH_UNPLUG: return kwm_build_unplug;
	case KWM_PH_RESUME_SRC: return kwm_build_resume_src;
	case KWM_PH_MEMORY: return kwm_build_memory;
	case KWM_PH_SWITCHOVER: return kwm_build_switchover;
	case KWM_PH_RESUME: return kwm_build_resume;
	case KWM_PH_FINISH: return kwm_build_finish;
	default: return NULL;
	}
}

/* Where the cluster is: the first phase in `order` that some VM has not
 * ended (ran and went idle, or skipped). */
static size_t current(struct kwm_run *r)
{
	for (size_t k = 0; k < NORDER; k++)
		for (size_t i = 0; i < r->nvms; i++) {
			struct kwm_vm *vm = &r->vms[i];

			if (vm->skipped[order[k]])
				continue;
			if (!vm->phase_ran[order[k]] || vm->state == KWM_VM_BUSY)
				return k;
		}
	return NORDER;
}

static bool limited(enum kwm_phase p)
{
	return p == KWM_PH_STORAGE || p == KWM_PH_MEMORY;
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
	builder(p)(vm);
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

/* --allow-partial: only the VMs that failed go back; the others go on
 * (their barriers no longer wait for those). */
static void rollback_failed(struct kwm_run *r)
{
	for (size_t i = 0; i < r->nvms; i++) {
		struct kwm_vm *vm = &r->vms[i];

		if (vm->state != KWM_VM_FAILED)
			continue;
		for (size_t k = 0; k < NORDER; k++)
			if (!vm->phase_ran[order[k]])
				vm->skipped[order[k]] = true;
		undo_vm(vm);
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

static void retire_failed(struct kwm_run *r)
{
	for (size_t i = 0; i < r->nvms; i++) {
		struct kwm_vm *vm = &r->vms[i];

		if (vm->state != KWM_VM_FAILED)
			continue;
		for (size_t k = 0; k < NORDER; k++)
			if (!vm->phase_ran[order[k]])
				vm->skipped[order[k]] = true;
		kwm_ops_clear(vm);
		vm->state = KWM_VM_DONE;
	}
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
		retire_failed(r);
	} else if (any_failed(r) && r->opt.allow_partial && !r->opt.plan_only) {
		rollback_failed(r);
	} else if (any_failed(r)) {
		start_rollback(r);
		return any_busy(r);
	}
	k = current(r);
	if (k == NORDER || (r->opt.plan_only && k > 0))
		return any_busy(r);
	p = order[k];
	for (;;) {
		struct kwm_vm *vm = next_vm(r, p);

		if (!vm)
			break;
		if (limited(p) && inflight(r) >= r->c->parallel)
			break;
		start_phase(vm, p);
		started = true;
		if (inflight(r) > r->max_inflight_seen)
			r->max_inflight_seen = inflight(r);
		if (r->first_failure)
			break;
	}
	if (started && limited(p))
		kwm_reshare(r);
	return true;
}
