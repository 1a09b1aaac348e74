/* SPDX-License-Identifier: MIT */
/*
 * The steps of each phase after preflight, as in the map ("One migration,
 * phase by phase"), and what QMP events tell us along the way.  The QMP
 * sequence for storage is the one measured to work on QEMU 7.2 (lab
 * feasibility §7): NBD export on the destination, blockdev-mirror on the
 * source, pause-before-switchover, block-job-cancel of the READY mirror
 * (a consistent copy without pivot), migrate-continue.
 *
 * One file of ~1200 lines on purpose: every phase's steps, in the order
 * they run, so that a migration reads top to bottom in one place; the
 * parts that stand alone are apart (preflight.c, rollback.c, recover.c).
 */
#include <stdlib.h>
#include <string.h>

#include "run.h"

/* QEMU takes max-bandwidth in bytes/s; "unlimited" is a large number
 * because 0 would stop the migration (7.2's default is 128 MiB/s). */
#define KWM_NO_CAP (100ull << 30)

/* A string member of an event or reply, or NULL (QEMU sends "device":
 * null for a device without an id). */
static const char *str_of(json_object *o, const char *key)
{
	json_object *v;

	if (!o || !json_object_object_get_ex(o, key, &v) ||
	    !json_object_is_type(v, json_type_string))
		return NULL;
	return json_object_get_string(v);
}

static bool side_has_agent(struct kwm_vm *vm, enum kwm_side_id s)
{
	return s == KWM_SRC ? vm->conf->src.symvirt != NULL : vm->conf->dst.symvirt != NULL;
}

static bool storage_moves(struct kwm_vm *vm)
{
	return vm->run->storage != KWM_STORAGE_SHARED;
}

static struct kwm_op *step(struct kwm_vm *vm, enum kwm_side_id side, const char *cmd,
			   json_object *args, unsigned fact)
{
	struct kwm_op *op = kwm_op_add(vm, KWM_OP_QMP, side, cmd, args);

	op->fact = fact;
	return op;
}

static struct kwm_op *wait_for(struct kwm_vm *vm, kwm_pred_fn until, const char *what)
{
	struct kwm_op *op = kwm_op_add(vm, KWM_OP_WAIT, KWM_SRC, NULL, NULL);

	op->until = until;
	op->what = strdup(what);
	return op;
}

static struct kwm_op *call(struct kwm_vm *vm, kwm_call_fn fn, const char *what)
{
	struct kwm_op *op = kwm_op_add(vm, KWM_OP_CALL, KWM_SRC, NULL, NULL);

	op->fn = fn;
	op->what = strdup(what);
	return op;
}

static struct kwm_op *agent(struct kwm_vm *vm, enum kwm_side_id side, const char *cmd,
			    json_object *args)
{
	return kwm_op_add(vm, KWM_OP_AGENT, side, cmd, args);
}

/* ---- bandwidth -------------------------------------------------------- */

bool kwm_vm_inflight(const struct kwm_vm *vm)
{
	return vm->state == KWM_VM_BUSY &&
	       (vm->phase == KWM_PH_STORAGE || vm->phase == KWM_PH_MEMORY);
}

/*
 * One migration's part of the WAN cap in phase p: the cap divided by the
 * migrations that will share the link now, i.e. those in flight plus those
 * about to start, at most limits.parallel.  Counting the ones about to
 * start matters: the first VM of a phase would otherwise get the whole cap
 * for a moment, and its mirror cannot be slowed down before it exists.
 */
uint64_t kwm_share(struct kwm_run *r, enum kwm_phase p)
{
	size_t n = 0;

	if (!r->c->bandwidth)
		return 0;
	for (size_t i = 0; i < r->nvms; i++) {
		struct kwm_vm *vm = &r->vms[i];

		if (vm->state == KWM_VM_BUSY && vm->phase == p)
			n++;
		else if (vm->state == KWM_VM_IDLE && !vm->phase_ran[p] && !vm->skipped[p] &&
			 kwm_phase_applies(vm, p))
			n++;
	}
	if (n > (size_t)r->c->parallel)
		n = (size_t)r->c->parallel;
	return r->c->bandwidth / (n ? n : 1);
}

/* Gives every migration in flight its equal part of the WAN cap again. */
void kwm_reshare(struct kwm_run *r)
{
	if (!r->c->bandwidth)
		return;
	for (size_t i = 0; i < r->nvms; i++) {
		struct kwm_vm *vm = &r->vms[i];
		int64_t share;

		if (!kwm_vm_inflight(vm))
			continue;
		share = (int64_t)kwm_share(r, vm->phase);
		if (vm->phase == KWM_PH_STORAGE) {
			for (size_t d = 0; d < vm->conf->ndisks; d++)
				if (vm->disks[d].job_running && !vm->disks[d].ready)
					kwm_qmp_async(vm, KWM_SRC, "block-job-set-speed",
						      kwm_obj("device=s speed=i", vm->disks[d].job,
							      share), NULL);
		} else if (vm->facts & KWM_F_MIGRATE) {
			kwm_qmp_async(vm, KWM_SRC, "migrate-set-parameters",
				      kwm_obj("max-bandwidth=i", share), NULL);
		}
	}
}

/* ---- blackout spans ------------------------------------------------------ */

static void blackout_start(struct kwm_vm *vm, const char *why)
{
	if (vm->nblackout && !vm->blackout[vm->nblackout - 1].end)
		return;		/* already quiesced */
	if (vm->nblackout == 4)
		return;
	vm->blackout[vm->nblackout].start = kwm_wall();
	vm->blackout[vm->nblackout].end = 0;
	vm->blackout_why[vm->nblackout] = why;
	vm->nblackout++;
}

static void blackout_end(struct kwm_vm *vm)
{
	if (vm->nblackout && !vm->blackout[vm->nblackout - 1].end)
		vm->blackout[vm->nblackout - 1].end = kwm_wall();
}

static void quiesced(struct kwm_vm *vm, struct kwm_op *op, json_object *ret)
{
	(void)ret;
	vm->agent_quiesced = true;
	kwm_journal_fact(vm, "quiesced", kwm_obj("side=s", kwm_side_name(op->side)));
}

/* A rank's entry of a resume reply has what a `peers` entry needs, as the
 * protocol's table bounds it (the entry has other members too). */
static bool peer_entry_ok(json_object *e)
{
	struct schema_err err;

	for (const struct schema_arg *m = schema_peer_entry.members; m->name; m++) {
		json_object *v;

		if (!json_object_object_get_ex(e, m->name, &v) ||
		    schema_check_value(m, v, m->name, &err) < 0)
			return false;
	}
	return true;
}

/* Keeps each rank's address list from a resume reply (the guest is not
 * trusted: an entry that is not as documented is left out, and a rank
 * with a bad list just does not get its peers' help). */
static void record_addrs(struct kwm_vm *vm, json_object *ret)
{
	struct kwm_run *r = vm->run;
	json_object *ranks;

	if (!json_object_object_get_ex(ret, "ranks", &ranks) ||
	    !json_object_is_type(ranks, json_type_array))
		return;
	if (!r->rank_addrs)
		r->rank_addrs = json_object_new_object();
	for (size_t i = 0; i < json_object_array_length(ranks); i++) {
		json_object *e = json_object_array_get_idx(ranks, i), *j, *n, *a;
		char key[160];

		if (!peer_entry_ok(e))
			continue;
		json_object_object_get_ex(e, "jobid", &j);
		json_object_object_get_ex(e, "rank", &n);
		json_object_object_get_ex(e, "addrs", &a);
		snprintf(key, sizeof(key), "%s/%lld", json_object_get_string(j),
			 (long long)json_object_get_int64(n));
		json_object_object_add(r->rank_addrs, key,
				       kwm_obj("jobid=o rank=o addrs=o", json_object_get(j),
					       json_object_get(n), json_object_get(a)));
	}
}

static void resumed(struct kwm_vm *vm, struct kwm_op *op, json_object *ret)
{
	vm->agent_quiesced = vm->lease_held = false;
	kwm_journal_fact(vm, "resumed", kwm_obj("side=s", kwm_side_name(op->side)));
	record_addrs(vm, ret);
	blackout_end(vm);
}

/* The ranks run again but may not be connected yet: the blackout ends
 * when `peers` says the pairs are back. */
static void resumed_nowait(struct kwm_vm *vm, struct kwm_op *op, json_object *ret)
{
	vm->agent_quiesced = vm->lease_held = false;
	kwm_journal_fact(vm, "resumed", kwm_obj("side=s", kwm_side_name(op->side)));
	record_addrs(vm, ret);
}

/* The agent is told how long it may take; it answers before we give up.
 * The lease makes the agent resume the job by itself if we stop renewing
 * it (we died, or lost the link): no job stays quiesced for ever. */
static json_object *quiesce_args(struct kwm_vm *vm)
{
	return kwm_obj("deadline-ms=i lease-ms=i",
		       vm->run->c->timeout_ms[KWM_PH_QUIESCE] * 9 / 10, vm->run->c->lease_ms);
}

static int mark_quiesce_sent_src(struct kwm_vm *vm)
{
	vm->quiesce_sent[KWM_SRC] = vm->lease_held = true;
	return 0;
}

static int mark_quiesce_sent_dst(struct kwm_vm *vm)
{
	vm->quiesce_sent[KWM_DST] = vm->lease_held = true;
	return 0;
}

static int mark_quiesce(struct kwm_vm *vm)
{
	blackout_start(vm, vm->run->opt.hold_job ? "held" : "unplug");
	return 0;
}

static int mark_dst_quiesce(struct kwm_vm *vm)
{
	blackout_start(vm, "replug");
	return 0;
}

/* The rollback's quiesce holds the job like any other: answered or not,
 * it is resumed afterwards. */
int kwm_mark_rb_quiesce(struct kwm_vm *vm)
{
	blackout_start(vm, "rollback");
	vm->rb_requiesce = vm->quiesce_sent[KWM_SRC] = vm->lease_held = true;
	return 0;
}

/* The blackout starts when the quiesce is asked for, not when it is done. */
static void add_quiesce(struct kwm_vm *vm, enum kwm_side_id side, kwm_call_fn mark)
{
	struct kwm_op *op;

	call(vm, mark, "marking the start of the blackout");
	call(vm, side == KWM_SRC ? mark_quiesce_sent_src : mark_quiesce_sent_dst,
	     "noting the quiesce");
	op = agent(vm, side, "quiesce", quiesce_args(vm));
	op->on_reply = quiesced;
	op->fact = side == KWM_SRC ? KWM_F_QUIESCED : 0;
}

void kwm_on_quiesced(struct kwm_vm *vm, struct kwm_op *op, json_object *ret)
{
	quiesced(vm, op, ret);
}

void kwm_on_resumed(struct kwm_vm *vm, struct kwm_op *op, json_object *ret)
{
	resumed(vm, op, ret);
}

json_object *kwm_quiesce_args(struct kwm_vm *vm)
{
	return quiesce_args(vm);
}

/* ---- peers: the ranks' new addresses over the control plane -------------- */

/* One `peers` line stays well under the 64 KiB a symvirt line may have. */
#define PEERS_PER_COMMAND 160

/* A barrier's answer for one loop turn (see all_addrs_in()). */
struct barrier_memo {
	uint64_t turn;
	bool valid, open;
};

static struct barrier_memo addrs_memo[KWM_PH__COUNT];

static int mark_addrs_in(struct kwm_vm *vm)
{
	vm->addrs_in = true;
	addrs_memo[vm->phase].valid = false;
	return 0;
}

/*
 * A barrier's answer is the same for every VM waiting at it in one loop
 * turn: it is worked out once per turn (1000 VMs waiting would otherwise
 * look at each other a million times a turn).  It is computed afresh when
 * a VM arrives at the barrier, so the last one in opens it at once.
 */
static bool memo_get(struct barrier_memo *m, struct kwm_run *r, bool *open)
{
	if (!m->valid || m->turn != r->turn)
		return false;
	*open = m->open;
	return true;
}

static bool memo_put(struct barrier_memo *m, struct kwm_run *r, bool open)
{
	m->turn = r->turn;
	m->valid = true;
	m->open = open;
	return open;
}

static struct barrier_memo switch_memo;

/* ‖ inside the phase: every VM resuming in it has its ranks' addresses. */
static bool all_addrs_in(struct kwm_vm *vm)
{
	struct kwm_run *r = vm->run;
	struct barrier_memo *m = &addrs_memo[vm->phase];
	bool open;

	if (memo_get(m, r, &open))
		return open;
	for (size_t i = 0; i < r->nvms; i++)
		if (r->vms[i].state == KWM_VM_BUSY && r->vms[i].phase == vm->phase &&
		    !r->vms[i].addrs_in)
			return memo_put(m, r, false);
	return memo_put(m, r, true);
}

static int end_blackout(struct kwm_vm *vm)
{
	blackout_end(vm);
	return 0;
}

/*
 * Every rank's new address list, gathered from all the agents' resume
 * replies, goes to this VM's agent, which hands each local rank its job's:
 * a pair reconnects over whatever both ends have now (verbs over a
 * replugged HCA even if the old Ethernet is gone), and nobody waits on a
 * dead path.  Built when the barrier opens, since only then are the lists
 * in; a large cluster's lists go in several commands, the last one
 * waiting for the pairs.
 */
static int add_peers(struct kwm_vm *vm, enum kwm_side_id side)
{
	struct kwm_run *r = vm->run;
	json_object *chunk = NULL;
	size_t n = 0, total = r->rank_addrs ? (size_t)json_object_object_length(r->rank_addrs) : 0;
	int64_t deadline = r->c->timeout_ms[KWM_PH_RESUME] * 9 / 10;

	if (!total) {
		blackout_end(vm);	/* no rank told us where it is */
		return 0;
	}
	json_object_object_foreach(r->rank_addrs, k, e) {
		(void)k;
		if (!chunk)
			chunk = json_object_new_array();
		json_object_array_add(chunk, json_object_get(e));
		if (++n % PEERS_PER_COMMAND && n < total)
			continue;
		agent(vm, side, "peers", kwm_obj("ranks=o deadline-ms=i wait=b", chunk, deadline,
						 n == total))->tolerant = true;
		chunk = NULL;
	}
	call(vm, end_blackout, "marking the end of the blackout");
	return 0;
}

static int add_peers_src(struct kwm_vm *vm)
{
	return add_peers(vm, KWM_SRC);
}

static int add_peers_dst(struct kwm_vm *vm)
{
	return add_peers(vm, KWM_DST);
}

/* After the agent's resume (or none): wait for the others, then peers. */
static void add_reconnect(struct kwm_vm *vm, enum kwm_side_id side)
{
	vm->addrs_in = false;
	memset(addrs_memo, 0, sizeof(addrs_memo));	/* (vm->phase is not set yet) */
	call(vm, mark_addrs_in, "at the resume barrier");
	wait_for(vm, all_addrs_in, "waiting for every VM's ranks to resume");
	call(vm, side == KWM_SRC ? add_peers_src : add_peers_dst,
	     "handing every rank its peers' addresses");
}

/* "fabrics" tells the agent what to wait for: with an HCA (re)plugged it
 * rescans PCI and waits for an ACTIVE verbs port, up to the link timeout;
 * without one the job goes on over TCP at once.  The link wait gets 3/8
 * of the phase (45 s of the default 120 s; a ConnectX link takes ~20 s):
 * the same phase also holds the quiesce before it and the ranks' replies
 * after it (30 s at most), and a link that never comes up must end in a
 * job resumed over TCP with a warning, not in the phase's timeout. */
json_object *kwm_resume_args(struct kwm_vm *vm, bool verbs)
{
	json_object *f = json_object_new_array();

	if (verbs)
		json_object_array_add(f, json_object_new_string("verbs"));
	json_object_array_add(f, json_object_new_string("tcp"));
	if (!verbs)
		return kwm_obj("fabrics=o rescan=b", f, 0);
	return kwm_obj("fabrics=o link-timeout-ms=i", f,
		       vm->run->c->timeout_ms[KWM_PH_RESUME] * 3 / 8);
}

/* ---- TLS (docs/security.md) ------------------------------------------- */

bool kwm_tls_on(const struct kwm_vm *vm)
{
	return vm->conf->tls.mode == KWM_TLS_X509;
}

static json_object *x509_creds(const struct kwm_vm *vm, const char *endpoint)
{
	return kwm_obj("qom-type=s id=s dir=s endpoint=s verify-peer=b", "tls-creds-x509",
		       KWM_TLS_CREDS, vm->conf->tls.dir, endpoint, 1);
}

static struct kwm_op *tls_undo(struct kwm_vm *vm, enum kwm_side_id side, const char *cmd,
			       json_object *args, kwm_cond_fn cond)
{
	struct kwm_op *op = step(vm, side, cmd, args, 0);

	op->tolerant = op->error_ok = true;
	op->cond = cond;
	return op;
}

/*
 * Both ends forget the TLS objects: the migration parameters that name
 * them first (QEMU looks the ids up at the next migration), then the
 * objects.  An end that never had them answers errors, which are fine.
 */
void kwm_add_tls_cleanup(struct kwm_vm *vm, enum kwm_side_id side, kwm_cond_fn cond)
{
	json_object *reset = side == KWM_SRC ?
		kwm_obj("tls-creds=s tls-hostname=s", "", "") :
		kwm_obj("tls-creds=s tls-authz=s", "", "");

	tls_undo(vm, side, "migrate-set-parameters", reset, cond);
	if (side == KWM_DST)
		tls_undo(vm, side, "object-del", kwm_obj("id=s", KWM_TLS_AUTHZ), cond);
	tls_undo(vm, side, "object-del", kwm_obj("id=s", KWM_TLS_CREDS), cond);
}

/*
 * The destination is the TLS server and checks the source's client
 * certificate twice: signed by the CA in tls.dir (verify-peer), and its
 * DN is tls.source-dn (authz-simple).  The source checks the
 * destination's certificate against the CA and tls-hostname.  Leftovers
 * of an earlier run that could not clean up are removed first.
 */
static void add_tls_objects(struct kwm_vm *vm)
{
	const char *what = "creating the TLS credentials from tls.dir (QEMU's x509 layout: "
			   "ca-cert.pem, server-cert.pem, server-key.pem, client-cert.pem, "
			   "client-key.pem)";

	kwm_add_tls_cleanup(vm, KWM_SRC, NULL);
	kwm_add_tls_cleanup(vm, KWM_DST, NULL);
	step(vm, KWM_DST, "object-add", x509_creds(vm, "server"), KWM_F_TLS)->what = strdup(what);
	step(vm, KWM_DST, "object-add", kwm_obj("qom-type=s id=s identity=s", "authz-simple",
						KWM_TLS_AUTHZ, vm->conf->tls.source_dn), KWM_F_TLS);
	step(vm, KWM_SRC, "object-add", x509_creds(vm, "client"), KWM_F_TLS)->what = strdup(what);
}

/* tls-creds and tls-hostname for a client (the source) dialling `uri`. */
static void add_tls_client(struct kwm_vm *vm, json_object *args, const char *uri)
{
	char host[256];
	const char *name = kwm_tls_hostname(vm->conf, uri, host, sizeof(host));

	json_object_object_add(args, "tls-creds", json_object_new_string(KWM_TLS_CREDS));
	if (name)	/* the parser made sure there is one */
		json_object_object_add(args, "tls-hostname", json_object_new_string(name));
}

/* ---- storage pre-copy ---------------------------------------------------- */

static void mirror_started(struct kwm_vm *vm, struct kwm_op *op, json_object *ret)
{
	(void)ret;
	vm->disks[op->disk].job_running = true;
}

static bool mirrors_ready(struct kwm_vm *vm)
{
	for (size_t d = 0; d < vm->conf->ndisks; d++)
		if (!vm->disks[d].ready)
			return false;
	return true;
}

void kwm_build_storage(struct kwm_vm *vm)
{
	const struct kwm_vm_conf *c = vm->conf;
	const char *sync = vm->run->storage == KWM_STORAGE_FULL ? "full" : "top";
	const char *connect = c->nbd_connect ? c->nbd_connect : c->nbd_listen;
	int64_t share = (int64_t)kwm_share(vm->run, KWM_PH_STORAGE);
	json_object *srv;

	/* One connection per disk: nobody else gets in while the mirrors run
	 * (max-connections: QEMU 5.2 and later). */
	srv = kwm_obj("addr=o max-connections=i", kwm_socket_address(c->nbd_listen, 0),
		      (int64_t)c->ndisks);
	if (kwm_tls_on(vm)) {
		add_tls_objects(vm);
		json_object_object_add(srv, "tls-creds", json_object_new_string(KWM_TLS_CREDS));
		json_object_object_add(srv, "tls-authz", json_object_new_string(KWM_TLS_AUTHZ));
	}
	step(vm, KWM_DST, "nbd-server-start", srv, KWM_F_NBD_SERVER);
	for (size_t d = 0; d < c->ndisks; d++)
		step(vm, KWM_DST, "block-export-add",
		     kwm_obj("type=s id=s node-name=s name=s writable=b", "nbd",
			     vm->disks[d].export_id, c->disks[d].dst_node,
			     c->disks[d].dst_node, 1), KWM_F_NBD_SERVER);
	for (size_t d = 0; d < c->ndisks; d++) {
		json_object *a = kwm_obj("driver=s node-name=s server=o export=s", "nbd",
					 vm->disks[d].nbd_node, kwm_socket_address(connect, 1),
					 c->disks[d].dst_node);
		struct kwm_op *op;

		if (kwm_tls_on(vm))	/* tls-hostname: QEMU 7.0 and later */
			add_tls_client(vm, a, connect);
		op = step(vm, KWM_SRC, "blockdev-add", a, KWM_F_NBD_NODES);
		op->disk = (int)d;
		if (kwm_tls_on(vm))
			op->what = strdup("connecting the source's NBD client over TLS (a refused "
					  "handshake: check the CA in tls.dir, tls.source-dn and "
					  "tls.hostname; the destination's QEMU log names the DN "
					  "it saw)");
	}
	for (size_t d = 0; d < c->ndisks; d++) {
		json_object *a = kwm_obj("job-id=s device=s target=s sync=s",
					 vm->disks[d].job, c->disks[d].src_node,
					 vm->disks[d].nbd_node, sync);
		struct kwm_op *op;

		if (share)
			json_object_object_add(a, "speed", json_object_new_int64(share));
		op = step(vm, KWM_SRC, "blockdev-mirror", a, KWM_F_MIRRORS);
		op->disk = (int)d;
		op->on_reply = mirror_started;
	}
	wait_for(vm, mirrors_ready, "waiting for BLOCK_JOB_READY (the disk copy to catch up)");
}

/* ---- quiesce, unplug, resume on what is left ----------------------------- */

/* ---- which phases run for a VM (phase.h's applies column) ------------ */

static bool swaps_src_hca(struct kwm_vm *vm)
{
	return vm->conf->src.hca != NULL;
}

bool kwm_applies_storage(struct kwm_vm *vm)
{
	return storage_moves(vm);
}

/* Nothing to swap at the source: the job keeps running over TCP through
 * the migration, unless asked to hold it. */
bool kwm_applies_quiesce(struct kwm_vm *vm)
{
	return side_has_agent(vm, KWM_SRC) && (swaps_src_hca(vm) || vm->run->opt.hold_job);
}

bool kwm_applies_unplug(struct kwm_vm *vm)
{
	return swaps_src_hca(vm);
}

bool kwm_applies_resume_src(struct kwm_vm *vm)
{
	return side_has_agent(vm, KWM_SRC) && swaps_src_hca(vm) && !vm->run->opt.hold_job;
}

bool kwm_applies_resume(struct kwm_vm *vm)
{
	return side_has_agent(vm, KWM_DST);
}

bool kwm_applies_finish(struct kwm_vm *vm)
{
	return !vm->run->opt.keep_source;
}

void kwm_build_quiesce(struct kwm_vm *vm)
{
	add_quiesce(vm, KWM_SRC, mark_quiesce);
}

static bool hca_gone(struct kwm_vm *vm)
{
	return vm->hca_deleted;
}

void kwm_build_unplug(struct kwm_vm *vm)
{
	char what[160];

	step(vm, KWM_SRC, "device_del", kwm_obj("id=s", vm->conf->src.hca_id), KWM_F_UNPLUG);
	snprintf(what, sizeof(what), "waiting for DEVICE_DELETED of '%s' (the guest must "
		 "release the device)", vm->conf->src.hca_id);
	wait_for(vm, hca_gone, what)->timeout_ms = vm->run->c->timeout_ms[KWM_PH_UNPLUG];
}

/* The ranks answer at once with their addresses ("wait": false); the
 * pairs are waited for in `peers`. */
static struct kwm_op *resume_nowait(struct kwm_vm *vm, enum kwm_side_id side, bool verbs)
{
	json_object *args = kwm_resume_args(vm, verbs);
	struct kwm_op *op;

	json_object_object_add(args, "wait", json_object_new_boolean(0));
	op = agent(vm, side, "resume", args);
	op->on_reply = resumed_nowait;
	return op;
}

void kwm_build_resume_src(struct kwm_vm *vm)
{
	resume_nowait(vm, KWM_SRC, false);
	add_reconnect(vm, KWM_SRC);
}

/* ---- memory --------------------------------------------------------------- */

static json_object *caps(bool pause)
{
	json_object *a = json_object_new_array();

	if (pause)
		json_object_array_add(a, kwm_obj("capability=s state=b",
						 "pause-before-switchover", 1));
	json_object_array_add(a, kwm_obj("capability=s state=b", "events", 1));
	return kwm_obj("capabilities=o", a);
}

static bool at_pre_switchover(struct kwm_vm *vm)
{
	return !strcmp(vm->mig_status[KWM_SRC], "pre-switchover");
}

static bool mirrors_done(struct kwm_vm *vm)
{
	for (size_t d = 0; d < vm->conf->ndisks; d++)
		if (vm->disks[d].job_running)
			return false;
	return true;
}

/* A source that died after the destination had everything is not waited
 * for: the VM goes forward (src_gone). */
static bool memory_completed(struct kwm_vm *vm)
{
	return (vm->src_gone || !strcmp(vm->mig_status[KWM_SRC], "completed")) &&
	       !strcmp(vm->mig_status[KWM_DST], "completed");
}

static bool src_alive(struct kwm_vm *vm, struct kwm_op *op)
{
	(void)op;
	return !vm->qmp_lost[KWM_SRC];
}

/* A destination started without -S runs as soon as its memory is in:
 * QMP cannot tell beforehand, so it is seen here and taken for the
 * switchover it is. */
static void dst_autostarted(struct kwm_vm *vm, struct kwm_op *op, json_object *ret)
{
	const char *st = str_of(ret, "status");

	(void)op;
	if (!st || strcmp(st, "running"))
		return;
	vm->facts |= KWM_F_SWITCHED;
	vm->where = KWM_AT_DEST;
	snprintf(vm->dst_status, sizeof(vm->dst_status), "running");
	kwm_journal_fact(vm, "cont-answered", kwm_obj("status=s", "running"));
	kwm_progress_message(vm->run, vm, "warning", "the destination started running by "
			     "itself when its memory was in (started without -S?): it no longer "
			     "waits for the switchover barrier; start destinations with -S");
}

static int mark_cancel(struct kwm_vm *vm)
{
	vm->mirror_cancel_sent = true;
	return 0;
}

static bool if_storage(struct kwm_vm *vm, struct kwm_op *op)
{
	(void)op;
	return storage_moves(vm);
}

static void migrate_stats(struct kwm_vm *vm, struct kwm_op *op, json_object *ret)
{
	json_object *ram, *v;

	(void)op;
	if (json_object_object_get_ex(ret, "downtime", &v))
		vm->downtime_ms = json_object_get_int64(v);
	if (json_object_object_get_ex(ret, "total-time", &v))
		vm->mem_total_ms = json_object_get_int64(v);
	if (json_object_object_get_ex(ret, "setup-time", &v))
		vm->setup_ms = json_object_get_int64(v);
	if (json_object_object_get_ex(ret, "ram", &ram)) {
		if (json_object_object_get_ex(ram, "transferred", &v))
			vm->mem_bytes = (uint64_t)json_object_get_int64(v);
		if (json_object_object_get_ex(ram, "total", &v))
			vm->mem_total = (uint64_t)json_object_get_int64(v);
		if (json_object_object_get_ex(ram, "remaining", &v))
			vm->mem_remaining = (uint64_t)json_object_get_int64(v);
		if (json_object_object_get_ex(ram, "mbps", &v))
			vm->mem_rate = json_object_get_double(v) * 1e6 / 8;
		if (json_object_object_get_ex(ram, "dirty-pages-rate", &v))
			vm->dirty_rate = (uint64_t)json_object_get_int64(v);
		if (json_object_object_get_ex(ram, "page-size", &v))
			vm->page_size = (uint64_t)json_object_get_int64(v);
	}
}

void kwm_build_memory(struct kwm_vm *vm)
{
	const struct kwm_vm_conf *c = vm->conf;
	uint64_t share = kwm_share(vm->run, KWM_PH_MEMORY);
	const char *connect = c->mig_connect ? c->mig_connect : c->mig_listen;
	json_object *src_par, *dst_par;
	struct kwm_op *op;

	/* Without TLS the parameters say so: an earlier run may have set them. */
	src_par = kwm_obj("max-bandwidth=i downtime-limit=i tls-creds=s tls-hostname=s",
			  (int64_t)(share ? share : KWM_NO_CAP), vm->run->c->downtime_ms,
			  "", "");
	dst_par = kwm_obj("tls-creds=s tls-authz=s", "", "");
	if (kwm_tls_on(vm)) {
		if (!storage_moves(vm))
			add_tls_objects(vm);
		add_tls_client(vm, src_par, connect);
		json_object_object_add(dst_par, "tls-creds", json_object_new_string(KWM_TLS_CREDS));
		json_object_object_add(dst_par, "tls-authz", json_object_new_string(KWM_TLS_AUTHZ));
	}
	step(vm, KWM_SRC, "migrate-set-capabilities", caps(true), 0);
	step(vm, KWM_DST, "migrate-set-capabilities", caps(false), 0);
	step(vm, KWM_SRC, "migrate-set-parameters", src_par, 0);
	step(vm, KWM_DST, "migrate-set-parameters", dst_par, 0);
	step(vm, KWM_DST, "migrate-incoming", kwm_obj("uri=s", c->mig_listen), KWM_F_INCOMING);
	step(vm, KWM_SRC, "migrate", kwm_obj("uri=s", connect), KWM_F_MIGRATE);
	wait_for(vm, at_pre_switchover, "waiting for the memory copy to converge (pre-switchover)");
	call(vm, mark_cancel, "completing the mirrors");
	for (size_t d = 0; d < c->ndisks && storage_moves(vm); d++) {
		op = step(vm, KWM_SRC, "block-job-cancel", kwm_obj("device=s", vm->disks[d].job), 0);
		op->disk = (int)d;
	}
	wait_for(vm, mirrors_done, "waiting for BLOCK_JOB_COMPLETED (the last dirty blocks)");
	for (size_t d = 0; d < c->ndisks && storage_moves(vm); d++) {
		op = step(vm, KWM_SRC, "blockdev-del", kwm_obj("node-name=s", vm->disks[d].nbd_node), 0);
		op->cond = if_storage;
		/* The copy is whole and its client gone: the export goes at once
		 * ("hard": the server may not have seen the client leave yet). */
		op = step(vm, KWM_DST, "block-export-del",
			  kwm_obj("id=s mode=s", vm->disks[d].export_id, "hard"), 0);
		op->cond = if_storage;
	}
	step(vm, KWM_SRC, "migrate-continue", kwm_obj("state=s", "pre-switchover"), 0);
	wait_for(vm, memory_completed, "waiting for the migration to complete at both ends");
	op = step(vm, KWM_SRC, "query-migrate", NULL, 0);
	op->on_reply = migrate_stats;
	op->cond = src_alive;
	step(vm, KWM_DST, "query-status", NULL, 0)->on_reply = dst_autostarted;
	if (kwm_tls_on(vm))
		kwm_add_tls_cleanup(vm, KWM_SRC, src_alive);
}

/* ---- switchover, resume, finish ------------------------------------------- */

static int mark_switch_ready(struct kwm_vm *vm)
{
	vm->switch_ready = true;
	switch_memo.valid = false;
	return 0;
}

/* ‖ every destination is started in the same loop turn (a VM that went
 * back under allow-partial is not waited for). */
static bool all_switch_ready(struct kwm_vm *vm)
{
	struct kwm_run *r = vm->run;
	bool open;

	if (memo_get(&switch_memo, r, &open))
		return open;
	for (size_t i = 0; i < r->nvms; i++)
		if (!r->vms[i].switch_ready && !r->vms[i].has_error)
			return memo_put(&switch_memo, r, false);
	return memo_put(&switch_memo, r, true);
}

static void dst_running(struct kwm_vm *vm, struct kwm_op *op, json_object *ret)
{
	const char *st = str_of(ret, "status");

	(void)op;
	snprintf(vm->dst_status, sizeof(vm->dst_status), "%s", st ? st : "?");
	kwm_journal_fact(vm, "cont-answered", kwm_obj("status=s", vm->dst_status));
	if (strcmp(vm->dst_status, "running")) {
		kwm_vm_fail(vm, "the destination is '%s' after cont, not running", vm->dst_status);
		return;
	}
	vm->where = KWM_AT_DEST;
}

static void dst_hca_added(struct kwm_vm *vm, struct kwm_op *op, json_object *ret)
{
	(void)op;
	(void)ret;
	vm->dst_hca_added = true;
	kwm_journal_fact(vm, "hca-added", NULL);
}

/* An HCA that cannot be plugged at the destination does not stop the VM:
 * its job goes on over TCP, as at a site without one. */
static int check_dst_hca(struct kwm_vm *vm)
{
	char msg[300];

	if (vm->dst_hca_added)
		return 0;
	vm->dst_hca_failed = true;
	snprintf(msg, sizeof(msg), "the destination's HCA '%s' could not be plugged; the "
		 "job goes on over TCP there", vm->conf->dst.hca_id);
	snprintf(vm->warning, sizeof(vm->warning), "%s", msg);
	kwm_progress_message(vm->run, vm, "warning", msg);
	return 0;
}

void kwm_on_dst_hca_added(struct kwm_vm *vm, struct kwm_op *op, json_object *ret)
{
	dst_hca_added(vm, op, ret);
}

void kwm_on_dst_status(struct kwm_vm *vm, struct kwm_op *op, json_object *ret)
{
	dst_running(vm, op, ret);
}

/* Is the destination's HCA there for the job to use? */
static bool dst_verbs(struct kwm_vm *vm)
{
	return vm->conf->dst.hca && !vm->dst_hca_failed;
}

void kwm_build_switchover(struct kwm_vm *vm)
{
	if (storage_moves(vm))
		step(vm, KWM_DST, "nbd-server-stop", NULL, 0);
	if (kwm_tls_on(vm))
		kwm_add_tls_cleanup(vm, KWM_DST, NULL);
	if (vm->conf->dst.hca) {
		struct kwm_op *op = step(vm, KWM_DST, "device_add",
					 json_object_get(vm->conf->dst.hca), KWM_F_DST_HCA);

		op->tolerant = true;
		op->on_reply = dst_hca_added;
		call(vm, check_dst_hca, "checking the destination's HCA");
	}
	call(vm, mark_switch_ready, "at the switchover barrier");
	wait_for(vm, all_switch_ready, "waiting for every VM to reach the switchover");
	step(vm, KWM_DST, "cont", NULL, KWM_F_SWITCHED);
	step(vm, KWM_DST, "query-status", NULL, 0)->on_reply = dst_running;
}

static bool is_quiesced(struct kwm_vm *vm, struct kwm_op *op)
{
	(void)op;
	return vm->agent_quiesced;
}

static void agent_alive(struct kwm_vm *vm, struct kwm_op *op, json_object *ret)
{
	(void)ret;
	vm->hello[op->side] = true;
}

static bool no_hello_yet(struct kwm_vm *vm, struct kwm_op *op)
{
	return !vm->hello[op->side];
}

static int check_hello_src(struct kwm_vm *vm)
{
	if (vm->hello[KWM_SRC])
		return 0;
	kwm_vm_fail(vm, "the source's symvirt agent (%s) does not answer hello; is "
		    "kawarimi-agent running in the guest? (or set symvirt: none)",
		    vm->conf->src.symvirt);
	return -1;
}

static int check_hello_dst(struct kwm_vm *vm)
{
	if (vm->hello[KWM_DST])
		return 0;
	kwm_vm_fail(vm, "the guest's symvirt agent does not answer at the destination's "
		    "end (%s)", vm->conf->dst.symvirt);
	return -1;
}

/*
 * hello opens every conversation with an agent.  Bytes sent while the
 * guest has the port closed are lost, so it is asked up to four times
 * (symvirt_sync() does the same, blocking) before the agent is called
 * absent.
 */
void kwm_add_hello(struct kwm_vm *vm, enum kwm_side_id side)
{
	struct kwm_op *op;

	for (int i = 0; i < 4; i++) {
		op = agent(vm, side, "hello", kwm_obj("client=s", "kawarimi " KAWARIMI_VERSION));
		op->on_reply = agent_alive;
		op->cond = no_hello_yet;
		op->tolerant = true;
		op->error_ok = i < 3;
		op->timeout_ms = 1500;
	}
	call(vm, side == KWM_SRC ? check_hello_src : check_hello_dst, "checking the agent");
}

void kwm_build_resume(struct kwm_vm *vm)
{
	/* The guest's agent now answers on the destination's end. */
	kwm_add_hello(vm, KWM_DST);
	if (dst_verbs(vm) && !vm->agent_quiesced) {
		/* Move the job onto the HCA that was just plugged. */
		add_quiesce(vm, KWM_DST, mark_dst_quiesce);
		resume_nowait(vm, KWM_DST, true);
	} else if (vm->agent_quiesced) {	/* --hold-job: the job waited all along */
		resume_nowait(vm, KWM_DST, dst_verbs(vm))->cond = is_quiesced;
	}
	add_reconnect(vm, KWM_DST);
}

static bool lease_out_dst(struct kwm_vm *vm, struct kwm_op *op)
{
	(void)op;
	return vm->lease_held;
}

/* A running job needs no resume: it was resumed before (recover knows
 * only that a quiesce was sent), or its lease ran out. */
static void dst_agent_state(struct kwm_vm *vm, struct kwm_op *op, json_object *ret)
{
	const char *st = str_of(ret, "state");

	(void)op;
	if (!st)
		return;
	snprintf(vm->agent_state, sizeof(vm->agent_state), "%s", st);
	if (!strcmp(st, "running"))
		vm->lease_held = vm->agent_quiesced = false;
}

/* A job that runs (on TCP) where an HCA is there now is moved onto it. */
static bool wants_dst_hca(struct kwm_vm *vm, struct kwm_op *op)
{
	(void)op;
	return dst_verbs(vm) && !strcmp(vm->agent_state, "running") && !vm->rb_requiesce &&
	       !vm->agent_lost[KWM_DST];
}

static bool requiescing(struct kwm_vm *vm, struct kwm_op *op)
{
	(void)op;
	return vm->rb_requiesce && vm->lease_held;
}

static int mark_dst_requiesce(struct kwm_vm *vm)
{
	vm->rb_requiesce = true;
	return mark_quiesce_sent_dst(vm);
}

/*
 * Rolling forward: the job resumes where the VM now runs (its ranks
 * reconnect by themselves: wait is left at true).  The agent is asked
 * first: a job already running (resumed before, or by its lease) needs no
 * resume, but is moved onto the destination's HCA if there is one.
 */
void kwm_add_resume_dst(struct kwm_vm *vm)
{
	struct kwm_op *op;

	kwm_add_hello(vm, KWM_DST);
	op = agent(vm, KWM_DST, "status", NULL);
	op->on_reply = dst_agent_state;
	op->tolerant = true;
	op->timeout_ms = 5000;
	op = call(vm, mark_dst_requiesce, "moving the job onto the destination's HCA");
	op->cond = wants_dst_hca;
	op = agent(vm, KWM_DST, "quiesce", quiesce_args(vm));
	op->cond = requiescing;
	op->on_reply = quiesced;
	op->tolerant = true;
	op = agent(vm, KWM_DST, "resume", kwm_resume_args(vm, dst_verbs(vm)));
	op->cond = lease_out_dst;
	op->on_reply = resumed;
	op->tolerant = op->essential = true;
}

static int reconnect_src(struct kwm_vm *vm)
{
	kwm_reconnect(vm, KWM_SRC);
	return 0;
}

static int mark_quit(struct kwm_vm *vm)
{
	vm->quit_sent[KWM_SRC] = true;
	return 0;
}

void kwm_build_finish(struct kwm_vm *vm)
{
	struct kwm_op *op;

	/* A source whose link dropped after its memory arrived may still
	 * run (paused): it is reached once more to be quit. */
	call(vm, reconnect_src, "reaching the source again");
	call(vm, mark_quit, "quitting the source");
	op = step(vm, KWM_SRC, "quit", NULL, 0);
	op->tolerant = true;
	op->cond = src_alive;
}

/* ---- events ---------------------------------------------------------------- */

static struct kwm_disk_state *disk_by_job(struct kwm_vm *vm, json_object *data)
{
	const char *name = str_of(data, "device");

	if (!name)
		return NULL;
	for (size_t d = 0; d < vm->conf->ndisks; d++)
		if (!strcmp(vm->disks[d].job, name))
			return &vm->disks[d];
	return NULL;
}

static void job_numbers(struct kwm_disk_state *d, json_object *data)
{
	json_object *v;

	if (json_object_object_get_ex(data, "offset", &v))
		d->offset = (uint64_t)json_object_get_int64(v);
	if (json_object_object_get_ex(data, "len", &v))
		d->len = (uint64_t)json_object_get_int64(v);
}

static void sum_storage(struct kwm_vm *vm)
{
	vm->storage_bytes = vm->storage_total = 0;
	for (size_t d = 0; d < vm->conf->ndisks; d++) {
		vm->storage_bytes += vm->disks[d].offset;
		vm->storage_total += vm->disks[d].len;
	}
}

/* Failures seen in events count only while the migration is under way. */
static bool watching(struct kwm_vm *vm)
{
	return vm->phase != KWM_PH_ROLLBACK &&
	       (vm->state == KWM_VM_BUSY || vm->state == KWM_VM_IDLE);
}

static void block_job_event(struct kwm_vm *vm, const struct kqmp_event *ev)
{
	struct kwm_disk_state *d = disk_by_job(vm, ev->data);
	json_object *e;
	size_t idx;

	if (!d)
		return;
	idx = (size_t)(d - vm->disks);
	job_numbers(d, ev->data);
	sum_storage(vm);
	if (!strcmp(ev->name, "BLOCK_JOB_READY")) {
		if (!d->ready)
			kwm_journal_fact(vm, "mirror-ready", kwm_obj("disk=i", (int64_t)idx));
		d->ready = true;
		return;
	}
	if (!strcmp(ev->name, "BLOCK_JOB_ERROR")) {
		if (watching(vm))
			kwm_vm_fail(vm, "the mirror of disk '%s' hit an I/O error (%s); is the "
				    "destination's NBD server still there?",
				    vm->conf->disks[idx].src_node,
				    json_object_object_get_ex(ev->data, "operation", &e) ?
				    json_object_get_string(e) : "?");
		return;
	}
	/* COMPLETED or CANCELLED: the job is gone. */
	d->job_running = false;
	if (json_object_object_get_ex(ev->data, "error", &e)) {
		d->failed = true;
		if (watching(vm))
			kwm_vm_fail(vm, "the mirror of disk '%s' failed: %s",
				    vm->conf->disks[idx].src_node, json_object_get_string(e));
		return;
	}
	if (!vm->mirror_cancel_sent && watching(vm))
		kwm_vm_fail(vm, "the mirror of disk '%s' ended by itself (%s) before it was completed",
			    vm->conf->disks[idx].src_node, ev->name);
}

static void migration_event(struct kwm_vm *vm, enum kwm_side_id side,
			    const struct kqmp_event *ev)
{
	const char *s = str_of(ev->data, "status");

	if (!s)
		return;
	snprintf(vm->mig_status[side], sizeof(vm->mig_status[side]), "%s", s);
	if (side == KWM_SRC)
		vm->presw_since = !strcmp(s, "pre-switchover") || !strcmp(s, "device") ?
				  (vm->presw_since ? vm->presw_since : kwm_now_ms()) : 0;
	if (side == KWM_DST && !strcmp(s, "completed") && !vm->dst_complete) {
		vm->dst_complete = true;
		kwm_journal_fact(vm, "memory-complete", NULL);
	}
	if ((!strcmp(s, "failed") || !strcmp(s, "cancelled")) && watching(vm))
		kwm_vm_fail(vm, "the migration %s at the %s%s", s, kwm_side_name(side),
			    kwm_tls_on(vm) && !strcmp(s, "failed") ? " (over TLS: check the CA "
			    "in tls.dir, tls.source-dn and tls.hostname; the destination's "
			    "QEMU log says what it refused)" : "");
}

void kwm_vm_event(struct kwm_vm *vm, enum kwm_side_id side, const struct kqmp_event *ev)
{
	const char *dev;

	if (!strncmp(ev->name, "BLOCK_JOB_", 10) && side == KWM_SRC) {
		block_job_event(vm, ev);
	} else if (!strcmp(ev->name, "MIGRATION")) {
		migration_event(vm, side, ev);
	} else if (!strcmp(ev->name, "DEVICE_DELETED") && side == KWM_SRC &&
		   vm->conf->src.hca_id && (dev = str_of(ev->data, "device")) &&
		   !strcmp(dev, vm->conf->src.hca_id)) {
		if (!vm->hca_deleted)
			kwm_journal_fact(vm, "hca-removed", NULL);
		vm->hca_deleted = true;
	}
}

/* ---- progress --------------------------------------------------------------- */

void kwm_poll_progress_done(struct kwm_vm *vm, struct kwm_op *op, json_object *ret)
{
	(void)op;
	if (json_object_is_type(ret, json_type_array)) {
		for (size_t i = 0; i < json_object_array_length(ret); i++) {
			json_object *job = json_object_array_get_idx(ret, i);
			struct kwm_disk_state *d = disk_by_job(vm, job);

			if (d)
				job_numbers(d, job);
		}
		sum_storage(vm);
	} else if (json_object_is_type(ret, json_type_object)) {
		int64_t keep = vm->downtime_ms;

		migrate_stats(vm, NULL, ret);
		vm->downtime_ms = keep;		/* only final once completed */
	}
}

void kwm_poll_progress(struct kwm_vm *vm)
{
	if (vm->poll_pending || vm->state != KWM_VM_BUSY)
		return;
	if (vm->phase == KWM_PH_STORAGE && (vm->facts & KWM_F_MIRRORS)) {
		vm->poll_pending = true;
		kwm_qmp_async(vm, KWM_SRC, "query-block-jobs", NULL, kwm_poll_progress_done);
	} else if (vm->phase == KWM_PH_MEMORY && (vm->facts & KWM_F_MIGRATE)) {
		vm->poll_pending = true;
		kwm_qmp_async(vm, KWM_SRC, "query-migrate", NULL, kwm_poll_progress_done);
	}
}
