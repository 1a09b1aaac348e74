/* SPDX-License-Identifier: MIT */
/*
 * The one event loop: poll() over every QMP and symvirt connection of every
 * VM, dispatch what is readable or writable, route QMP events to their VM,
 * advance every VM's steps, check deadlines, poll progress and redraw.
 */
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "run.h"

#define KWM_TICK_MS 500

volatile sig_atomic_t kwm_interrupted;

/*
 * The operator's Ctrl-C (or a SIGTERM) is a failure like any other: before
 * switchover everything rolls back; later, the VMs finish where they are.
 * It is charged to the first VM still at work.
 */
static void handle_interrupt(struct kwm_run *r)
{
	static bool said;
	struct kwm_vm *vm = NULL;

	if (r->rolling_back || r->failed_after_switchover || r->first_failure) {
		if (!said)
			kwm_progress_message(r, NULL, "warning", "interrupted: finishing the "
					     "rollback first (kill -9 would leave it half done)");
		said = true;
		return;
	}
	for (size_t i = 0; i < r->nvms && !vm; i++)
		if (r->vms[i].state == KWM_VM_BUSY)
			vm = &r->vms[i];
	if (!vm)
		vm = &r->vms[0];
	kwm_vm_fail(vm, "interrupted by signal (the operator stopped the migration)");
}

static void lost(struct kwm_vm *vm, enum kwm_side_id side, bool agent, const char *why)
{
	const struct kwm_side *s = side == KWM_SRC ? &vm->conf->src : &vm->conf->dst;

	if (agent) {
		if (vm->agent_lost[side])
			return;
		vm->agent_lost[side] = true;
		if (vm->quit_sent[side])
			return;		/* its QEMU was asked to quit */
		kwm_vm_note(vm, "the %s's symvirt connection (%s) closed: %s",
			    kwm_side_name(side), s->symvirt, why);
		return;
	}
	if (vm->qmp_lost[side])
		return;
	vm->qmp_lost[side] = true;
	if (vm->quit_sent[side])
		return;		/* we asked it to quit */
	if (side == KWM_SRC && (vm->dst_complete || (vm->facts & KWM_F_SWITCHED))) {
		/* The destination holds all of the VM: it goes forward, and a
		 * dead source is only a stale copy gone. */
		vm->src_gone = true;
		kwm_journal_fact(vm, "source-gone", NULL);
		kwm_progress_message(vm->run, vm, "warning", "the source QEMU died after the "
				     "destination had all of the VM's memory; the VM goes forward");
		return;
	}
	if (side == KWM_DST && (vm->facts & KWM_F_SWITCHED))
		kwm_mark_dst_lost(vm);
	if (vm->phase == KWM_PH_ROLLBACK) {
		kwm_vm_note(vm, "the %s QEMU's QMP connection (%s) closed: %s",
			    kwm_side_name(side), s->qmp, why);
		return;
	}
	kwm_vm_fail(vm, "the %s QEMU's QMP connection (%s) closed: %s",
		    kwm_side_name(side), s->qmp, why);
}

static void drain_events(struct kwm_vm *vm)
{
	for (int s = 0; s < 2; s++) {
		struct kqmp_event ev;
		struct symvirt_event sev;

		while (vm->qmp[s] && kqmp_event_pop(vm->qmp[s], &ev) == 1) {
			kwm_vm_event(vm, (enum kwm_side_id)s, &ev);
			kqmp_event_clear(&ev);
		}
		while (vm->agent[s] && symvirt_event_pop(vm->agent[s], &sev) == 1)
			symvirt_event_clear(&sev);
	}
}

static void setup_disks(struct kwm_vm *vm)
{
	vm->disks = calloc(vm->conf->ndisks ? vm->conf->ndisks : 1, sizeof(*vm->disks));
	if (!vm->disks)
		abort();
	for (size_t d = 0; d < vm->conf->ndisks; d++) {
		snprintf(vm->disks[d].job, sizeof(vm->disks[d].job), "kwm-mirror-%zu", d);
		snprintf(vm->disks[d].nbd_node, sizeof(vm->disks[d].nbd_node), "kwm-nbd-%zu", d);
		snprintf(vm->disks[d].export_id, sizeof(vm->disks[d].export_id), "kwm-exp-%zu", d);
	}
}

/* Connects one VM; a failure is a preflight failure naming the socket. */
static void connect_vm(struct kwm_vm *vm)
{
	const struct kwm_side *sides[2] = { &vm->conf->src, &vm->conf->dst };

	for (int s = 0; s < 2; s++) {
		struct kqmp_error err = { 0 };
		struct symvirt_error serr = { 0 };

		vm->qmp[s] = kqmp_connect_uri(sides[s]->qmp, 0, &err);
		if (!vm->qmp[s] && vm->run->opt.recover) {
			/* recover works with what is left. */
			vm->qmp_lost[s] = true;
			kwm_vm_note(vm, "the %s QMP socket %s does not answer (%s): taken for a "
				    "QEMU that is gone", kwm_side_name((enum kwm_side_id)s),
				    sides[s]->qmp, err.desc);
			continue;
		}
		if (!vm->qmp[s]) {
			vm->qmp_lost[s] = true;
			kwm_vm_fail(vm, "cannot connect to the %s QMP socket %s: %s; is QEMU "
				    "running with -qmp unix:%s,server=on,wait=off?",
				    kwm_side_name((enum kwm_side_id)s), sides[s]->qmp,
				    err.desc, sides[s]->qmp);
			return;
		}
		if (!sides[s]->symvirt)
			continue;
		/* Connect both ends now: the guest blocks writing to a port
		 * that has no host connected, and it will write after the
		 * switchover. */
		vm->agent[s] = symvirt_connect_uri(sides[s]->symvirt, &serr);
		if (!vm->agent[s] && vm->run->opt.recover) {
			vm->agent_lost[s] = true;
			continue;
		}
		if (!vm->agent[s]) {
			vm->agent_lost[s] = true;
			kwm_vm_fail(vm, "cannot connect to the %s symvirt socket %s: %s",
				    kwm_side_name((enum kwm_side_id)s), sides[s]->symvirt,
				    serr.desc);
			return;
		}
	}
}

/*
 * A QMP connection that dropped is not yet a dead QEMU (an ssh link, a
 * restarted monitor): one new connection is tried.  Over ssh the connect
 * itself always succeeds and a link still broken shows as a second loss,
 * which is final: this is tried once per side.
 */
void kwm_reconnect(struct kwm_vm *vm, enum kwm_side_id side)
{
	const char *ep = side == KWM_SRC ? vm->conf->src.qmp : vm->conf->dst.qmp;
	struct kqmp_error err = { 0 };
	struct kqmp *q;

	if (!vm->qmp_lost[side] || vm->quit_sent[side] || vm->reconnected[side])
		return;
	vm->reconnected[side] = true;
	q = kqmp_connect_uri(ep, 0, &err);
	if (!q)
		return;
	if (vm->qmp[side])
		kqmp_close(vm->qmp[side]);
	vm->qmp[side] = q;
	vm->qmp_lost[side] = false;
	kwm_vm_note(vm, "connecting again to the %s's QMP %s", kwm_side_name(side), ep);
}

int kwm_run_connect(struct kwm_run *r)
{
	for (size_t i = 0; i < r->nvms; i++) {
		struct kwm_vm *vm = &r->vms[i];

		setup_disks(vm);
		if (!vm->conf->src.symvirt && vm->conf->src.hca)
			kwm_progress_message(r, vm, "warning", "no symvirt agent: the HCA is "
					     "unplugged without quiescing the job first");
		else if (!vm->conf->src.symvirt)
			kwm_progress_message(r, vm, "warning", "no symvirt agent: quiesce and "
					     "resume are skipped");
		/* Preflight owns the connection: its failures are preflight's. */
		vm->phase = r->opt.recover ? KWM_PH_ROLLBACK : KWM_PH_PREFLIGHT;
		vm->phases[KWM_PH_PREFLIGHT].start = kwm_wall();
		connect_vm(vm);
	}
	return r->first_failure ? -1 : 0;
}

struct fd_owner {
	struct kwm_vm *vm;
	int side;
	bool agent;
};

static void dispatch_all(struct kwm_run *r, struct pollfd *pfd, struct fd_owner *own,
			 size_t n)
{
	for (size_t k = 0; k < n; k++) {
		struct kwm_vm *vm = own[k].vm;
		int s = own[k].side;

		if (!pfd[k].revents)
			continue;
		if (own[k].agent) {
			struct symvirt_error err = { 0 };

			if (!vm->agent_lost[s] && symvirt_dispatch(vm->agent[s], &err) < 0)
				lost(vm, (enum kwm_side_id)s, true, err.desc);
		} else {
			struct kqmp_error err = { 0 };

			if (!vm->qmp_lost[s] && kqmp_dispatch(vm->qmp[s], &err) < 0)
				lost(vm, (enum kwm_side_id)s, false, err.desc);
		}
	}
	for (size_t i = 0; i < r->nvms; i++)
		drain_events(&r->vms[i]);
}

static size_t collect_fds(struct kwm_run *r, struct pollfd *pfd, struct fd_owner *own)
{
	size_t n = 0;

	for (size_t i = 0; i < r->nvms; i++) {
		struct kwm_vm *vm = &r->vms[i];

		for (int s = 0; s < 2; s++) {
			if (vm->qmp[s] && !vm->qmp_lost[s]) {
				pfd[n].fd = kqmp_fd(vm->qmp[s]);
				pfd[n].events = POLLIN | (kqmp_want_write(vm->qmp[s]) ? POLLOUT : 0);
				pfd[n].revents = 0;
				own[n++] = (struct fd_owner){ vm, s, false };
			}
			if (vm->agent[s] && !vm->agent_lost[s]) {
				pfd[n].fd = symvirt_fd(vm->agent[s]);
				pfd[n].events = POLLIN |
						(symvirt_want_write(vm->agent[s]) ? POLLOUT : 0);
				pfd[n].revents = 0;
				own[n++] = (struct fd_owner){ vm, s, true };
			}
		}
	}
	return n;
}

static void advance_all(struct kwm_run *r, int64_t now)
{
	for (size_t i = 0; i < r->nvms; i++) {
		kwm_vm_step(&r->vms[i]);
		kwm_vm_check_timeouts(&r->vms[i], now);
		kwm_vm_check_stall(&r->vms[i], now);
	}
}

int kwm_run_loop(struct kwm_run *r)
{
	struct pollfd *pfd = calloc(r->nvms * 4 + 1, sizeof(*pfd));
	struct fd_owner *own = calloc(r->nvms * 4 + 1, sizeof(*own));
	int last_inflight = 0;

	if (!pfd || !own) {
		free(pfd);
		free(own);
		return -1;
	}
	r->next_tick = kwm_now_ms();
	while (kwm_schedule(r)) {
		size_t n = collect_fds(r, pfd, own);
		int64_t now = kwm_now_ms();
		int inflight = 0;

		/* A short timeout keeps deadlines and waits (which depend on
		 * other VMs) prompt without a timer wheel. */
		poll(pfd, n, 50);
		if (kwm_interrupted) {
			kwm_interrupted = 0;
			handle_interrupt(r);
		}
		dispatch_all(r, pfd, own, n);
		now = kwm_now_ms();
		advance_all(r, now);
		for (size_t i = 0; i < r->nvms; i++)
			inflight += kwm_vm_inflight(&r->vms[i]);
		if (inflight < last_inflight && !r->rolling_back)
			kwm_reshare(r);
		last_inflight = inflight;
		if (now >= r->next_tick) {
			r->next_tick = now + KWM_TICK_MS;
			for (size_t i = 0; i < r->nvms; i++)
				kwm_poll_progress(&r->vms[i]);
			kwm_renew_leases(r);
			kwm_progress_tick(r, false);
		}
	}
	free(pfd);
	free(own);
	r->ended = kwm_wall();
	kwm_progress_tick(r, true);
	return r->first_failure ? -1 : 0;
}

void kwm_run_close(struct kwm_run *r)
{
	kwm_closing = true;
	for (size_t i = 0; i < r->nvms; i++) {
		struct kwm_vm *vm = &r->vms[i];

		for (int s = 0; s < 2; s++) {
			if (vm->qmp[s])
				kqmp_close(vm->qmp[s]);
			if (vm->agent[s])
				symvirt_close(vm->agent[s]);
			if (vm->nodes[s])
				json_object_put(vm->nodes[s]);
		}
		if (vm->src_version)
			json_object_put(vm->src_version);
		if (vm->dst_version)
			json_object_put(vm->dst_version);
		kwm_ops_clear(vm);
		free(vm->ops);
		free(vm->disks);
		free(vm->samples);
	}
	kwm_ctx_free_all();
	json_object_put(r->rank_addrs);
	free(r->vms);
	if (r->journal)
		fclose(r->journal);
}
