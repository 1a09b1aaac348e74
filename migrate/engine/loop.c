/* SPDX-License-Identifier: MIT */
/*
 * The one event loop: epoll over every QMP and symvirt connection of every
 * VM, dispatch what is readable or writable, route QMP events to their VM,
 * advance every VM's steps, check deadlines, poll progress and redraw.
 */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <unistd.h>
#include <time.h>

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

void kwm_io_dirty(struct kwm_vm *vm)
{
	struct kwm_run *r = vm->run;

	if (vm->io_dirty || !r->io_list)
		return;		/* (before the loop: its first turn looks at all) */
	vm->io_dirty = true;
	r->io_list[r->nio++] = vm->idx;
}

static void lost(struct kwm_vm *vm, enum kwm_side_id side, bool agent, const char *why)
{
	const struct kwm_side *s = side == KWM_SRC ? &vm->conf->src : &vm->conf->dst;

	kwm_io_dirty(vm);
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
		struct kqmp_error serr = { 0 };

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
	kwm_io_dirty(vm);
	kwm_vm_note(vm, "connecting again to the %s's QMP %s", kwm_side_name(side), ep);
}

/* A warning every VM of a large cluster shares is said once, with the
 * count, rather than a thousand times. */
#define KWM_SAY_EACH 8

int kwm_run_connect(struct kwm_run *r)
{
	size_t no_agent = 0, no_agent_hca = 0;
	char msg[256];

	for (size_t i = 0; i < r->nvms; i++) {
		no_agent += !r->vms[i].conf->src.symvirt && !r->vms[i].conf->src.hca;
		no_agent_hca += !r->vms[i].conf->src.symvirt && r->vms[i].conf->src.hca;
	}
	for (size_t i = 0; i < r->nvms; i++) {
		struct kwm_vm *vm = &r->vms[i];

		setup_disks(vm);
		if (!vm->conf->src.symvirt && vm->conf->src.hca && no_agent_hca <= KWM_SAY_EACH)
			kwm_progress_message(r, vm, "warning", "no symvirt agent: the HCA is "
					     "unplugged without quiescing the job first");
		else if (!vm->conf->src.symvirt && !vm->conf->src.hca && no_agent <= KWM_SAY_EACH)
			kwm_progress_message(r, vm, "warning", "no symvirt agent: quiesce and "
					     "resume are skipped");
		/* Preflight owns the connection: its failures are preflight's. */
		vm->phase = r->opt.recover ? KWM_PH_ROLLBACK : KWM_PH_PREFLIGHT;
		vm->phases[KWM_PH_PREFLIGHT].start = kwm_wall();
		connect_vm(vm);
	}
	if (no_agent_hca > KWM_SAY_EACH) {
		snprintf(msg, sizeof(msg), "%zu VMs have no symvirt agent: their HCAs are "
			 "unplugged without quiescing their jobs first", no_agent_hca);
		kwm_progress_message(r, NULL, "warning", msg);
	}
	if (no_agent > KWM_SAY_EACH) {
		snprintf(msg, sizeof(msg), "%zu VMs have no symvirt agent: quiesce and resume "
			 "are skipped for them", no_agent);
		kwm_progress_message(r, NULL, "warning", msg);
	}
	return r->first_failure ? -1 : 0;
}

/*
 * The connections are watched with epoll: poll() over every QMP and
 * symvirt socket costs the kernel a look at each of them on every turn
 * (at 1000 VMs, 2000 to 4000 sockets, most of the coordinator's CPU was
 * there), epoll only at the ready ones.  Each connection has a slot,
 * (re)registered when its descriptor changes (a reconnect, a loss) and
 * modified when it starts or stops having bytes to write.
 */
struct fd_slot {
	struct kwm_vm *vm;
	int side;
	bool agent;
	int fd;			/* registered, or -1 */
	uint32_t events;
};

static int want_fd(const struct fd_slot *sl, uint32_t *events)
{
	struct kwm_vm *vm = sl->vm;
	int s = sl->side;

	if (sl->agent) {
		if (!vm->agent[s] || vm->agent_lost[s])
			return -1;
		*events = EPOLLIN | (symvirt_want_write(vm->agent[s]) ? EPOLLOUT : 0);
		return symvirt_fd(vm->agent[s]);
	}
	if (!vm->qmp[s] || vm->qmp_lost[s])
		return -1;
	*events = EPOLLIN | (kqmp_want_write(vm->qmp[s]) ? EPOLLOUT : 0);
	return kqmp_fd(vm->qmp[s]);
}

static void slot_del(int ep, struct fd_slot *sl)
{
	uint32_t ev = 0;

	if (sl->fd >= 0 && want_fd(sl, &ev) != sl->fd) {
		epoll_ctl(ep, EPOLL_CTL_DEL, sl->fd, NULL);
		sl->fd = -1;
	}
}

static bool slot_add(int ep, struct fd_slot *sl)
{
	struct epoll_event e = { .data.ptr = sl };
	uint32_t ev = 0;
	int fd = want_fd(sl, &ev);

	if (fd < 0)
		return false;
	e.events = ev;
	if (sl->fd < 0) {
		if (!epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e)) {
			sl->fd = fd;
			sl->events = ev;
		}
	} else if (sl->events != ev && !epoll_ctl(ep, EPOLL_CTL_MOD, fd, &e)) {
		sl->events = ev;
	}
	return true;
}

/*
 * Brings the epoll set in line with the connections of the VMs that
 * sent, were dispatched or lost a connection since the last turn (all of
 * them when `all`, as at every progress tick, for good measure); returns
 * the number of connections when `all`.  Looking at every connection on
 * every turn cost more than anything else at 1000 VMs.  A descriptor
 * closed since the last turn left the set by itself and its number may be
 * taken by a new connection already: every removal is done before any
 * addition.
 */
static size_t sync_fds(struct kwm_run *r, int ep, struct fd_slot *slots, bool all)
{
	size_t n = 0, nv = all ? r->nvms : r->nio;

	for (size_t k = 0; k < nv; k++) {
		size_t i = all ? k : r->io_list[k];

		for (int j = 0; j < 4; j++)
			slot_del(ep, &slots[i * 4 + j]);
	}
	for (size_t k = 0; k < nv; k++) {
		size_t i = all ? k : r->io_list[k];

		for (int j = 0; j < 4; j++)
			n += slot_add(ep, &slots[i * 4 + j]);
	}
	for (size_t k = 0; k < r->nio; k++)
		r->vms[r->io_list[k]].io_dirty = false;
	r->nio = 0;
	return n;
}

static void dispatch_ready(struct kwm_run *r, struct epoll_event *evs, int n)
{
	for (int k = 0; k < n; k++) {
		struct fd_slot *sl = evs[k].data.ptr;
		struct kwm_vm *vm = sl->vm;
		int s = sl->side;

		/* A dispatch writes what was queued: the journal first.  What
		 * its callbacks journal is synced at once (they may send
		 * within this same dispatch). */
		kwm_journal_sync(r);
		r->journal_batch = false;
		if (sl->agent) {
			struct kqmp_error err = { 0 };

			if (vm->agent[s] && !vm->agent_lost[s] &&
			    symvirt_fd(vm->agent[s]) == sl->fd &&
			    symvirt_dispatch(vm->agent[s], &err) < 0)
				lost(vm, (enum kwm_side_id)s, true, err.desc);
		} else {
			struct kqmp_error err = { 0 };

			if (vm->qmp[s] && !vm->qmp_lost[s] && kqmp_fd(vm->qmp[s]) == sl->fd &&
			    kqmp_dispatch(vm->qmp[s], &err) < 0)
				lost(vm, (enum kwm_side_id)s, false, err.desc);
		}
		r->journal_batch = true;
		kwm_io_dirty(vm);	/* what its callbacks queued, or its loss */
	}
	/* Events arrive only in a dispatch: only those VMs have any. */
	for (int k = 0; k < n; k++)
		drain_events(((struct fd_slot *)evs[k].data.ptr)->vm);
}

static void advance_all(struct kwm_run *r, int64_t now)
{
	for (size_t i = 0; i < r->nvms; i++) {
		kwm_vm_step(&r->vms[i]);
		kwm_vm_check_timeouts(&r->vms[i], now);
		kwm_vm_check_stall(&r->vms[i], now);
	}
}

/* ---- what the loop costs --------------------------------------------------- */

int64_t kwm_now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Log-linear: values below 16 us exactly, then 8 buckets per power of 2. */
static int hist_bucket(int64_t us)
{
	int e = 0;

	if (us < 16)
		return us < 0 ? 0 : (int)us;
	for (int64_t v = us; v > 1; v >>= 1)
		e++;
	e = 16 + (e - 4) * 8 + (int)((us >> (e - 3)) & 7);
	return e < KWM_HIST_BUCKETS ? e : KWM_HIST_BUCKETS - 1;
}

/* The upper edge of a bucket, in us. */
static int64_t hist_value(int b)
{
	int e;

	if (b < 16)
		return b;
	e = (b - 16) / 8 + 4;
	return ((int64_t)1 << e) + ((int64_t)((b - 16) % 8 + 1) << (e - 3));
}

static int64_t hist_quantile(const uint32_t *h, uint64_t n, double q)
{
	uint64_t want = (uint64_t)(q * (double)n), seen = 0;

	for (int b = 0; b < KWM_HIST_BUCKETS; b++) {
		seen += h[b];
		if (seen > want)
			return hist_value(b);
	}
	return n ? hist_value(KWM_HIST_BUCKETS - 1) : 0;
}

void kwm_hist_add(uint32_t *h, int64_t *max, int64_t us)
{
	h[hist_bucket(us)]++;
	if (us > *max)
		*max = us;
}

/* A quantile is its bucket's upper edge, never above the largest seen. */
static json_object *hist_json(const uint32_t *h, uint64_t n, int64_t max)
{
	int64_t q[3] = { hist_quantile(h, n, 0.5), hist_quantile(h, n, 0.9),
			 hist_quantile(h, n, 0.99) };

	for (int i = 0; i < 3; i++)
		if (q[i] > max)
			q[i] = max;
	return kwm_obj("p50=i p90=i p99=i max=i", q[0], q[1], q[2], max);
}

json_object *kwm_coordinator_json(const struct kwm_run *r)
{
	const struct kwm_loop_stats *st = r->stats_ended ? &r->stats_end : &r->stats;
	int64_t cpu_us = st->cpu_us, rss = st->rss_kb;

	return kwm_obj("cpu-ms=i max-rss-kb=i nofile=i fds=i journal-lines=i journal-syncs=i loop=o",
		       cpu_us / 1000, (int64_t)rss, (int64_t)st->nofile, (int64_t)st->fds_max,
		       (int64_t)st->journal_lines, (int64_t)st->journal_syncs,
		       kwm_obj("turns=i ticks=i turn-us=o turn-work-us=o fsync-us=o tick-late-us=o",
			       (int64_t)st->turns, (int64_t)st->ticks,
			       hist_json(st->turn_hist, st->turns, st->turn_max_us),
			       hist_json(st->work_hist, st->turns, st->work_max_us),
			       hist_json(st->sync_hist, st->journal_syncs, st->sync_max_us),
			       hist_json(st->late_hist, st->ticks, st->late_max_us)));
}

/* What the report says: the loop's numbers and CPU and memory as it ended. */
static void stats_end(struct kwm_run *r)
{
	struct kwm_loop_stats *st = &r->stats;
	struct rusage ru;

	if (!getrusage(RUSAGE_SELF, &ru)) {
		st->cpu_us = (int64_t)ru.ru_utime.tv_sec * 1000000 + ru.ru_utime.tv_usec +
			     (int64_t)ru.ru_stime.tv_sec * 1000000 + ru.ru_stime.tv_usec;
		st->rss_kb = ru.ru_maxrss;
	}
	r->stats_end = *st;
	r->stats_ended = true;
}

/* The connections a cluster needs open at once: QMP and symvirt at both
 * ends, and over ssh a pipe to each session's stderr as well; then the
 * journal, the lock, the report, the ssh masters' and the C library's own. */
static rlim_t fds_needed(const struct kwm_run *r)
{
	rlim_t n = 64;

	for (size_t i = 0; i < r->nvms; i++) {
		const struct kwm_side *sides[2] = { &r->vms[i].conf->src, &r->vms[i].conf->dst };

		for (int s = 0; s < 2; s++) {
			n += strncmp(sides[s]->qmp, "ssh://", 6) ? 1 : 2;
			if (sides[s]->symvirt)
				n += strncmp(sides[s]->symvirt, "ssh://", 6) ? 1 : 2;
		}
	}
	return n;
}

/*
 * A login shell's soft RLIMIT_NOFILE is often 1024, which 500 VMs' QMP
 * sockets alone use up (two per VM, four with agents); the hard limit is
 * usually far higher.  epoll has no FD_SETSIZE ceiling, so the soft limit
 * is raised to the hard one, and a cluster that needs more than even that
 * is refused before anything is touched, rather than failing half-way
 * through preflight with EMFILE.
 */
int kwm_fd_limit(struct kwm_run *r, char *err, size_t errlen)
{
	struct rlimit rl;
	rlim_t need = fds_needed(r);

	if (getrlimit(RLIMIT_NOFILE, &rl))
		return 0;
	if (rl.rlim_cur != RLIM_INFINITY && (rl.rlim_max == RLIM_INFINITY ||
					     rl.rlim_cur < rl.rlim_max)) {
		struct rlimit up = { rl.rlim_max, rl.rlim_max };

		/* An unlimited hard limit is still capped by fs.nr_open: then
		 * at least what the cluster needs is asked for. */
		if (!setrlimit(RLIMIT_NOFILE, &up)) {
			rl = up;
		} else if (rl.rlim_cur < need) {
			up.rlim_cur = need;
			if (!setrlimit(RLIMIT_NOFILE, &up))
				rl = up;
		}
	}
	r->stats.nofile = rl.rlim_cur == RLIM_INFINITY ? -1 : (long)rl.rlim_cur;
	if (rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur >= need)
		return 0;
	snprintf(err, errlen, "%zu VMs need about %llu file descriptors (one per QMP and "
		 "symvirt socket, two over ssh), but RLIMIT_NOFILE allows %llu (hard limit); "
		 "raise it: `ulimit -n %llu` in a root shell, LimitNOFILE=%llu in a systemd "
		 "unit, or nofile in /etc/security/limits.conf", r->nvms,
		 (unsigned long long)need, (unsigned long long)rl.rlim_cur,
		 (unsigned long long)need, (unsigned long long)need);
	return -1;
}

int kwm_run_loop(struct kwm_run *r)
{
	struct fd_slot *slots = calloc(r->nvms * 4, sizeof(*slots));
	struct epoll_event evs[256];
	struct kwm_loop_stats *st = &r->stats;
	int last_inflight = 0, ep = epoll_create1(EPOLL_CLOEXEC);

	r->io_list = calloc(r->nvms, sizeof(*r->io_list));
	if (!slots || !r->io_list || ep < 0) {
		free(slots);
		free(r->io_list);
		r->io_list = NULL;
		if (ep >= 0)
			close(ep);
		return -1;
	}
	for (size_t i = 0; i < r->nvms; i++)
		for (int k = 0; k < 4; k++)
			slots[i * 4 + k] = (struct fd_slot){ &r->vms[i], k & 1, k >= 2, -1, 0 };
	r->next_tick = kwm_now_ms();
	r->journal_batch = true;
	/* A turn is all the loop does between two polls: its latency. */
	for (int64_t t0 = -1, sync0 = 0; kwm_schedule(r);) {
		bool all = t0 < 0 || kwm_now_ms() >= r->next_tick;
		size_t n = sync_fds(r, ep, slots, all);
		int64_t now;
		int inflight = 0, ready;

		if (all && (int)n > st->fds_max)
			st->fds_max = (int)n;
		/* What this turn queued goes out in the next dispatch. */
		kwm_journal_sync(r);
		if (t0 >= 0) {
			int64_t d = kwm_now_us() - t0;

			st->turns++;
			kwm_hist_add(st->turn_hist, &st->turn_max_us, d);
			kwm_hist_add(st->work_hist, &st->work_max_us, d - (st->sync_us - sync0));
		}
		/* A short timeout keeps deadlines and waits (which depend on
		 * other VMs) prompt without a timer wheel. */
		ready = epoll_wait(ep, evs, (int)(sizeof(evs) / sizeof(evs[0])), 50);
		t0 = kwm_now_us();
		sync0 = st->sync_us;
		r->turn++;
		if (kwm_interrupted) {
			kwm_interrupted = 0;
			handle_interrupt(r);
		}
		dispatch_ready(r, evs, ready > 0 ? ready : 0);
		now = kwm_now_ms();
		advance_all(r, now);
		for (size_t i = 0; i < r->nvms; i++)
			inflight += kwm_vm_inflight(&r->vms[i]);
		if (inflight < last_inflight && !r->rolling_back)
			kwm_reshare(r);
		last_inflight = inflight;
		if (now >= r->next_tick) {
			st->ticks++;
			kwm_hist_add(st->late_hist, &st->late_max_us, kwm_now_us() - r->next_tick * 1000);
			r->next_tick = now + KWM_TICK_MS;
			for (size_t i = 0; i < r->nvms; i++) {
				drain_events(&r->vms[i]);	/* (none are expected) */
				kwm_poll_progress(&r->vms[i]);
			}
			kwm_renew_leases(r);
			kwm_progress_tick(r, false);
		} else if (r->redraw_due) {
			kwm_progress_redraw(r);
		}
	}
	r->journal_batch = false;
	kwm_journal_sync(r);
	stats_end(r);
	free(slots);
	free(r->io_list);
	r->io_list = NULL;
	r->nio = 0;
	close(ep);
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
