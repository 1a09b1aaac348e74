/* SPDX-License-Identifier: MIT */
/*
 * What keeps a run from waiting for ever on the day a site goes down:
 * a transfer whose bytes stop moving (a link that blackholes sends no
 * RST, so nothing else would notice before the phase's hour is up), a
 * source left paused at pre-switchover, and the leases that make each
 * guest agent resume its job by itself once we stop renewing them.
 */
#include <string.h>

#include "run.h"

static bool mirrors_all_ready(const struct kwm_vm *vm)
{
	for (size_t d = 0; d < vm->conf->ndisks; d++)
		if (!vm->disks[d].ready)
			return false;
	return true;
}

/* The byte count that must keep moving now, or -1 when none must. */
static int64_t moving_bytes(const struct kwm_vm *vm)
{
	const char *s = vm->mig_status[KWM_SRC];

	if (vm->phase == KWM_PH_STORAGE && (vm->facts & KWM_F_MIRRORS) &&
	    !mirrors_all_ready(vm))
		return (int64_t)vm->storage_bytes;
	if (vm->phase == KWM_PH_MEMORY && (vm->facts & KWM_F_MIGRATE) &&
	    (!strcmp(s, "active") || !strcmp(s, "setup")))
		return (int64_t)vm->mem_bytes;
	return -1;
}

static void check_paused_source(struct kwm_vm *vm, int64_t now)
{
	int64_t limit = vm->run->c->timeout_ms[KWM_PH_SWITCHOVER];

	if (!vm->presw_since || vm->phase != KWM_PH_MEMORY || now - vm->presw_since < limit)
		return;
	kwm_vm_fail(vm, "the source has been paused at pre-switchover for %lld ms without "
		    "the migration completing (limits.timeouts.switchover); is the link to "
		    "the destination up?", (long long)(now - vm->presw_since));
}

void kwm_vm_check_stall(struct kwm_vm *vm, int64_t now)
{
	int64_t b;

	if (vm->state != KWM_VM_BUSY)
		return;
	check_paused_source(vm, now);
	if (vm->state != KWM_VM_BUSY)
		return;
	b = moving_bytes(vm);
	if (b < 0) {
		vm->stall_since = 0;
		return;
	}
	if (!vm->stall_since || (uint64_t)b != vm->stall_bytes) {
		vm->stall_bytes = (uint64_t)b;
		vm->stall_since = now;
		return;
	}
	if (now - vm->stall_since < vm->run->c->stall_ms)
		return;
	kwm_vm_fail(vm, "the %s copy has not moved a byte for %lld ms (at %llu bytes; "
		    "limits.timeouts.stall); is the link to the destination up?",
		    vm->phase == KWM_PH_STORAGE ? "disk" : "memory",
		    (long long)(now - vm->stall_since), (unsigned long long)b);
}

/* Renewed at a third of the lease: two renewals may be lost in a row. */
void kwm_renew_leases(struct kwm_run *r)
{
	static int64_t next;
	int64_t now = kwm_now_ms();

	if (now < next)
		return;
	next = now + r->c->lease_ms / 3;
	for (size_t i = 0; i < r->nvms; i++) {
		struct kwm_vm *vm = &r->vms[i];

		/* The guest's agent answers at whichever end it runs now. */
		enum kwm_side_id s = vm->facts & KWM_F_SWITCHED ? KWM_DST : KWM_SRC;

		if (vm->lease_held && vm->agent[s] && !vm->agent_lost[s])
			kwm_agent_async(vm, s, "renew", kwm_obj("lease-ms=i", r->c->lease_ms));
	}
}

const char *kwm_vm_where(const struct kwm_vm *vm)
{
	switch (vm->where) {
	case KWM_AT_DEST: return "destination";
	case KWM_AT_LOST: return "lost";
	default: return "source";
	}
}

const char *kwm_disk_file(struct kwm_vm *vm, enum kwm_side_id side, size_t d)
{
	const char *want = side == KWM_SRC ? vm->conf->disks[d].src_node :
			   vm->conf->disks[d].dst_node;
	json_object *nodes = vm->nodes[side];

	for (size_t i = 0; nodes && i < json_object_array_length(nodes); i++) {
		json_object *n = json_object_array_get_idx(nodes, i), *v;

		if (json_object_object_get_ex(n, "node-name", &v) &&
		    json_object_is_type(v, json_type_string) &&
		    !strcmp(json_object_get_string(v), want) &&
		    json_object_object_get_ex(n, "file", &v) &&
		    json_object_is_type(v, json_type_string))
			return json_object_get_string(v);
	}
	return NULL;
}
