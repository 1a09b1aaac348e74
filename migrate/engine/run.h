/* SPDX-License-Identifier: MIT */
/*
 * The coordinator's run-time state: one struct kwm_run for the cluster,
 * one struct kwm_vm per node VM.  Each VM executes a small program of
 * steps (struct kwm_op) per phase: a QMP command to its source or
 * destination, a symvirt command, or a wait until a condition on what the
 * VM's events have told us.  Everything is driven from one epoll loop
 * (loop.c); nothing blocks and there is no thread per VM.
 */
#ifndef KWM_RUN_H
#define KWM_RUN_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <json-c/json.h>

#include "cluster.h"
#include "journal.h"
#include "kawarimi-qmp.h"
#include "symvirt_client.h"

enum kwm_side_id { KWM_SRC, KWM_DST };

struct kwm_vm;

/* ---- steps ------------------------------------------------------------ */

enum kwm_op_kind {
	KWM_OP_QMP,		/* send cmd to side, wait for the reply */
	KWM_OP_AGENT,		/* send cmd to side's symvirt agent */
	KWM_OP_WAIT,		/* until until(vm) is true */
	KWM_OP_CALL,		/* run fn(vm) now */
};

/* What a step may have changed, recorded before it is sent, so that a
 * rollback knows what to undo. */
enum kwm_fact {
	KWM_F_NBD_SERVER = 1 << 0,
	KWM_F_NBD_NODES = 1 << 1,
	KWM_F_MIRRORS = 1 << 2,
	KWM_F_INCOMING = 1 << 3,
	KWM_F_MIGRATE = 1 << 4,
	KWM_F_UNPLUG = 1 << 5,
	KWM_F_QUIESCED = 1 << 6,	/* the source agent was told to quiesce */
	KWM_F_SWITCHED = 1 << 7,	/* cont sent to the destination */
	KWM_F_DST_HCA = 1 << 8,
	KWM_F_TLS = 1 << 9,		/* TLS objects were added at either end */
};

/* The QOM ids of the TLS objects kawarimi adds to each QEMU (one VM per
 * QEMU, so fixed names; a leftover of an earlier run is deleted first). */
#define KWM_TLS_CREDS "kwm-tls"
#define KWM_TLS_AUTHZ "kwm-tls-authz"

struct kwm_op;
typedef void (*kwm_reply_fn)(struct kwm_vm *vm, struct kwm_op *op, json_object *ret);
typedef bool (*kwm_pred_fn)(struct kwm_vm *vm);
typedef bool (*kwm_cond_fn)(struct kwm_vm *vm, struct kwm_op *op);
typedef int (*kwm_call_fn)(struct kwm_vm *vm);

struct kwm_op {
	enum kwm_op_kind kind;
	enum kwm_side_id side;
	char *cmd;
	json_object *args;	/* owned until sent */
	kwm_reply_fn on_reply;	/* may set vm->fail via kwm_vm_fail() */
	kwm_pred_fn until;	/* KWM_OP_WAIT */
	kwm_cond_fn cond;	/* skip the step when false (checked when due) */
	kwm_call_fn fn;		/* KWM_OP_CALL; nonzero = failed */
	unsigned fact;
	bool tolerant;		/* errors and timeouts are noted, not fatal */
	bool essential;		/* (rollback) a failure leaves it incomplete */
	bool error_ok;		/* an error answer is the expected outcome */
	int disk;		/* index into vm->disks, for per-disk steps */
	int64_t timeout_ms;	/* 0: the phase's */
	char *what;		/* for messages: "waiting for BLOCK_JOB_READY" */
};

/* ---- one VM ------------------------------------------------------------ */

enum kwm_where {
	KWM_AT_SOURCE,		/* where it started (also after a rollback) */
	KWM_AT_DEST,		/* cont answered at the destination */
	KWM_AT_LOST,		/* neither side runs it: see lost_note */
};

enum kwm_vm_state {
	KWM_VM_IDLE,		/* between phases, waiting for the scheduler */
	KWM_VM_BUSY,		/* running a phase's steps */
	KWM_VM_FAILED,		/* a phase failed; the run rolls back */
	KWM_VM_DONE,		/* migrated or rolled back, nothing more */
};

struct kwm_disk_state {
	char job[64], nbd_node[64], export_id[64];
	bool job_running;	/* created and not yet COMPLETED/CANCELLED */
	bool ready;
	bool failed;
	uint64_t offset, len;	/* from query-block-jobs / the final event */
};

struct kwm_span {
	double start, end;	/* wall clock, seconds since the epoch; 0 = not yet */
};

#define KWM_MAX_SAMPLES 4096

/* One point of a VM's transfer curves (the report's "samples"). */
struct kwm_sample {
	double t;			/* wall clock */
	uint64_t disk, mem, mem_remaining;
};

struct kwm_vm {
	struct kwm_run *run;
	const struct kwm_vm_conf *conf;
	size_t idx;

	struct kqmp *qmp[2];
	struct symvirt *agent[2];
	bool qmp_lost[2], agent_lost[2];

	enum kwm_vm_state state;
	enum kwm_phase phase;		/* the phase running or last finished */
	struct kwm_op *ops;
	size_t nops, cap, pc;
	bool op_pending;		/* a reply is awaited for ops[pc] */
	uint64_t op_gen;		/* the generation of that reply */
	int64_t op_deadline, phase_deadline;	/* monotonic ms */
	unsigned facts;

	struct kwm_span phases[KWM_PH__COUNT];
	bool phase_ran[KWM_PH__COUNT];

	/* What events and replies told us. */
	struct kwm_disk_state *disks;
	char mig_status[2][32];		/* MIGRATION events, per side */
	bool hca_deleted;		/* DEVICE_DELETED for the source HCA */
	bool hca_present;		/* learned by rollback's qom-get */
	bool agent_quiesced;		/* the job is quiesced right now */
	bool src_was_running;
	char src_status[32], dst_status[32];
	json_object *src_version, *dst_version;
	/* The source's accelerator and RAM, for the TCG warning (preflight.c). */
	bool src_tcg;
	int64_t src_ram_bytes;
	bool poll_pending;		/* a progress query in flight */
	bool mirror_cancel_sent;	/* COMPLETED is expected from now on */
	bool switch_ready;		/* at the cont barrier */
	bool addrs_in;			/* the resume barrier: our ranks' addresses are in */
	bool hello[2];			/* the agent answered hello, per side */
	bool hca_readded;		/* rollback put the HCA back */
	bool quit_sent[2];		/* EOF on that QMP is expected */
	bool reconnected[2];		/* kwm_reconnect() was tried */
	json_object *nodes[2];		/* query-named-block-nodes, per side */
	bool skipped[KWM_PH__COUNT];	/* the phase does not apply to this VM */

	uint64_t expect_bytes;		/* preflight's estimate of the disk copy */
	bool io_dirty;			/* on run->io_list: its connections to look at */

	/* For the report. */
	uint64_t storage_bytes, storage_total;
	uint64_t mem_bytes, mem_total, mem_remaining;
	double mem_rate;		/* bytes/s, from query-migrate mbps */
	uint64_t dirty_rate, page_size;	/* pages/s, bytes: ram.dirty-pages-rate */
	uint64_t last_storage;		/* for the storage rate on the TTY */
	double last_storage_t, storage_rate;
	int64_t downtime_ms, mem_total_ms, setup_ms;
	struct kwm_span blackout[4];	/* the job could not communicate */
	const char *blackout_why[4];
	int nblackout;
	struct kwm_sample *samples;	/* progress.c, at most KWM_MAX_SAMPLES */
	size_t nsamples, samples_cap;
	bool rolled_back, rollback_incomplete;
	char rollback_notes[512];
	char error[768];
	enum kwm_phase error_phase;
	bool has_error;
	char warning[256];

	/* Where the VM runs, and what the fault handling learned. */
	enum kwm_where where;
	bool dst_complete;		/* MIGRATION completed at the destination */
	bool src_gone;			/* the source died after dst_complete: go forward */
	bool dst_hca_added, dst_hca_failed;	/* device_add at the destination */
	bool rolled_forward;
	bool quiesce_sent[2];		/* answered or not, per side */
	bool lease_held;		/* quiesced (or asked to) and not resumed since */
	bool rb_requiesce;		/* rollback moves the running job onto its HCA */
	bool rb_resumed;		/* rollback's own resume was answered */
	char agent_state[16];		/* from rollback's `status` */
	int64_t wait_until;		/* monotonic ms, a rollback's pause */
	int64_t presw_since;		/* monotonic ms: paused at pre-switchover */
	uint64_t stall_bytes;
	int64_t stall_since;
	char lost_note[768];		/* where the disks are when the VM is lost */
};

/* ---- the cluster ------------------------------------------------------- */

enum kwm_output { KWM_OUT_PLAIN, KWM_OUT_TTY, KWM_OUT_JSON };

struct kwm_options {
	bool plan_only;		/* `kawarimi plan`: preflight, change nothing */
	bool hold_job;
	bool keep_source;
	bool storage_set;
	enum kwm_storage storage;
	const char *report_file;
	const char *journal_file;
	enum kwm_output output;
	bool quiet;
	bool allow_partial;	/* --allow-partial or limits.allow-partial */
	bool recover;		/* `kawarimi recover`: finish a journal's run */
};

/* What one run of the loop cost (loop.c), for the report's
 * "coordinator": how long each turn took and how late the progress tick
 * fired, as log-linear histograms in microseconds (8 buckets per power
 * of two: within 12.5 %). */
#define KWM_HIST_BUCKETS 320
struct kwm_loop_stats {
	uint64_t turns;
	uint32_t turn_hist[KWM_HIST_BUCKETS];
	uint32_t late_hist[KWM_HIST_BUCKETS];
	uint64_t ticks;
	int64_t turn_max_us, late_max_us;
	uint64_t journal_syncs;		/* fsyncs of the journal */
	uint32_t sync_hist[KWM_HIST_BUCKETS];	/* each fsync's duration */
	int64_t sync_max_us;
	int64_t sync_us;		/* fsync time so far */
	uint32_t work_hist[KWM_HIST_BUCKETS];	/* a turn less its fsyncs */
	int64_t work_max_us;
	uint64_t journal_lines;
	int fds_max;			/* connections polled at once, at most */
	long nofile;			/* RLIMIT_NOFILE (soft) the run had */
	int64_t cpu_us, rss_kb;		/* getrusage when the loop ended */
};

struct kwm_run {
	struct kwm_cluster *c;
	struct kwm_options opt;
	struct kwm_vm *vms;
	size_t nvms;
	enum kwm_storage storage;

	double started, ended;
	bool rolling_back;
	bool failed_after_switchover;
	const struct kwm_vm *first_failure;
	FILE *journal;
	char journal_path[4096];
	int journal_error;		/* errno of the first failed write */
	int lock_fd;
	/* Inside the loop, the journal's fsyncs are grouped: a line is
	 * written at once but synced before the next byte goes to any QEMU
	 * or agent (before poll and before each dispatch), so one fsync
	 * covers every step a loop turn took.  Replies handled inside a
	 * dispatch that send at once sync at once, as before. */
	bool journal_batch;
	bool journal_dirty;
	struct kwm_loop_stats stats;
	/* stats as the loop ended: what the report says, the same in the
	 * --json stream and the --report file written after it. */
	struct kwm_loop_stats stats_end;
	bool stats_ended;
	bool redraw_due;		/* progress.c: a phase changed since the last draw */
	uint64_t turn;			/* the loop turn now (barrier predicates' memo) */
	size_t *io_list, nio;		/* VMs whose connections may want writing or
					 * changed since the last turn (loop.c) */
	struct kwm_jrun *jr;		/* recover: what the journal says */
	int64_t next_tick;
	int64_t last_draw;
	int drawn_lines;
	int *drawn_len;			/* columns of each line drawn (progress.c) */
	int max_inflight_seen;		/* for the report and the tests */
	/* Every rank's address list from the agents' resume replies, keyed
	 * "JOBID/RANK": handed to every agent with `peers`, so a pair need
	 * not reach the other end over a network the move took away to
	 * learn where it is now. */
	json_object *rank_addrs;
};

/* ---- loop.c ------------------------------------------------------------ */

/* Set by the CLI's SIGINT/SIGTERM handler; the loop turns it into a
 * failure (and so a rollback). */
extern volatile sig_atomic_t kwm_interrupted;
int64_t kwm_now_ms(void);		/* monotonic */
int64_t kwm_now_us(void);
/* Adds a duration to one of struct kwm_loop_stats' histograms. */
void kwm_hist_add(uint32_t *hist, int64_t *max, int64_t us);
double kwm_wall(void);			/* seconds since the epoch */
/* Connects every VM's QMP (and agents); 0 or -1 with the VM failed. */
int kwm_run_connect(struct kwm_run *r);
/* Drives everything until no VM is busy; returns 0, or -1 when a VM failed. */
int kwm_run_loop(struct kwm_run *r);
void kwm_run_close(struct kwm_run *r);
/* vm queued bytes or its connections changed: the loop looks at them. */
void kwm_io_dirty(struct kwm_vm *vm);
/* Tries once more to reach a side whose QMP connection dropped. */
void kwm_reconnect(struct kwm_vm *vm, enum kwm_side_id side);
/* Raises RLIMIT_NOFILE's soft limit to the hard one; -1 with err when
 * even that is too low for the cluster's connections. */
int kwm_fd_limit(struct kwm_run *r, char *err, size_t errlen);
/* The report's "coordinator": CPU, memory, loop turns, journal syncs. */
json_object *kwm_coordinator_json(const struct kwm_run *r);

/* ---- ops.c --------------------------------------------------------------- */

struct kwm_op *kwm_op_add(struct kwm_vm *vm, enum kwm_op_kind kind,
			  enum kwm_side_id side, const char *cmd, json_object *args);
void kwm_ops_clear(struct kwm_vm *vm);
/* Starts phase p with the steps already added. */
void kwm_phase_begin(struct kwm_vm *vm, enum kwm_phase p);
/* Advances vm's program as far as it can without waiting. */
void kwm_vm_step(struct kwm_vm *vm);
/* Called when a deadline may have passed. */
void kwm_vm_check_timeouts(struct kwm_vm *vm, int64_t now);
void kwm_vm_fail(struct kwm_vm *vm, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
void kwm_vm_note(struct kwm_vm *vm, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
const char *kwm_side_name(enum kwm_side_id s);
/* Fire-and-forget command (bandwidth changes, progress polls). */
void kwm_qmp_async(struct kwm_vm *vm, enum kwm_side_id side, const char *cmd,
		   json_object *args, kwm_reply_fn on_reply);
void kwm_ignore_reply(struct kwm_vm *vm, struct kwm_op *op, json_object *ret);
void kwm_poll_progress_done(struct kwm_vm *vm, struct kwm_op *op, json_object *ret);
/* Builds {"k": v, ...} from "k1=s k2=i k3=b k4=o" (string, int64, bool,
 * json_object consumed). */
json_object *kwm_obj(const char *spec, ...);
/* QEMU's version from its QMP greeting ({"qemu": {"major", "minor",
 * "micro"}}, as kqmp_version() gives it): 0, or -1 when absent. */
int kwm_qemu_version(json_object *greeting_version, int *major, int *minor, int *micro);
void kwm_ctx_free_all(void);
extern bool kwm_closing;

/* ---- phases.c / preflight.c / rollback.c -------------------------------- */

/* The functions phase.h's table names, per phase. */
void kwm_build_preflight(struct kwm_vm *vm);
bool kwm_applies_storage(struct kwm_vm *vm);
void kwm_build_storage(struct kwm_vm *vm);
void kwm_undo_storage(struct kwm_vm *vm);
bool kwm_applies_quiesce(struct kwm_vm *vm);
void kwm_build_quiesce(struct kwm_vm *vm);
void kwm_undo_quiesce(struct kwm_vm *vm);
bool kwm_applies_unplug(struct kwm_vm *vm);
void kwm_build_unplug(struct kwm_vm *vm);
void kwm_undo_unplug(struct kwm_vm *vm);
bool kwm_applies_resume_src(struct kwm_vm *vm);
void kwm_build_resume_src(struct kwm_vm *vm);
void kwm_build_memory(struct kwm_vm *vm);
void kwm_undo_memory(struct kwm_vm *vm);
void kwm_build_switchover(struct kwm_vm *vm);
bool kwm_applies_finish(struct kwm_vm *vm);
void kwm_build_finish(struct kwm_vm *vm);
bool kwm_applies_resume(struct kwm_vm *vm);
void kwm_build_resume(struct kwm_vm *vm);
/* Every phase's undo, latest first (sched.c, from the table). */
void kwm_undo_phases(struct kwm_vm *vm);
void kwm_build_rollback(struct kwm_vm *vm);
/* A VM whose destination holds all of it: finish there, whatever else
 * failed (the source is gone or stale). */
void kwm_build_rollforward(struct kwm_vm *vm);
void kwm_build_recover(struct kwm_vm *vm);
/* The destination QEMU died after the switchover: the VM is lost. */
void kwm_mark_dst_lost(struct kwm_vm *vm);
void kwm_on_dst_hca_added(struct kwm_vm *vm, struct kwm_op *op, json_object *ret);
void kwm_on_dst_status(struct kwm_vm *vm, struct kwm_op *op, json_object *ret);
void kwm_add_resume_dst(struct kwm_vm *vm);
const char *kwm_vm_where(const struct kwm_vm *vm);
/* Fire-and-forget symvirt command (lease renewals). */
void kwm_agent_async(struct kwm_vm *vm, enum kwm_side_id side, const char *cmd,
		     json_object *args);
void kwm_renew_leases(struct kwm_run *r);
void kwm_vm_check_stall(struct kwm_vm *vm, int64_t now);
/* The name of a disk's image file at that side (preflight's node list). */
const char *kwm_disk_file(struct kwm_vm *vm, enum kwm_side_id side, size_t d);
bool kwm_phase_applies(struct kwm_vm *vm, enum kwm_phase p);
void kwm_add_hello(struct kwm_vm *vm, enum kwm_side_id side);
/* Removes the TLS objects and the migration parameters naming them at
 * one end, tolerantly (success, rollback, roll forward). */
void kwm_add_tls_cleanup(struct kwm_vm *vm, enum kwm_side_id side, kwm_cond_fn cond);
bool kwm_tls_on(const struct kwm_vm *vm);
int kwm_mark_rb_quiesce(struct kwm_vm *vm);
void kwm_on_quiesced(struct kwm_vm *vm, struct kwm_op *op, json_object *ret);
void kwm_on_resumed(struct kwm_vm *vm, struct kwm_op *op, json_object *ret);
json_object *kwm_quiesce_args(struct kwm_vm *vm);
json_object *kwm_resume_args(struct kwm_vm *vm, bool verbs);
/* Routes one QMP event of vm's side into what the VM knows. */
void kwm_vm_event(struct kwm_vm *vm, enum kwm_side_id side, const struct kqmp_event *ev);
/* The bandwidth share for one migration now, bytes/s (0: unlimited). */
uint64_t kwm_share(struct kwm_run *r, enum kwm_phase p);
void kwm_reshare(struct kwm_run *r);
void kwm_poll_progress(struct kwm_vm *vm);
bool kwm_vm_inflight(const struct kwm_vm *vm);

/* ---- run.c / recover.c / plan.c ------------------------------------------- */

/* The whole of plan, migrate and recover after their options: the exit
 * status (run.c's comment lists them). */
int kwm_main(const char *file, struct kwm_options *o);
/* recover: reads the journal into r; -1 to go on, else the exit status. */
int kwm_recover_prepare(struct kwm_run *r);
const char *kwm_run_result(const struct kwm_run *r);
void kwm_plan_print(struct kwm_run *r);

/* ---- sched.c --------------------------------------------------------------- */

/* Starts the next phases that the barriers and limits allow.  Returns true
 * while there is anything left to do. */
bool kwm_schedule(struct kwm_run *r);

/* ---- progress.c / report.c ----------------------------------------------- */

void kwm_progress_phase(struct kwm_run *r, const struct kwm_vm *vm, enum kwm_phase p,
			bool end);
void kwm_progress_tick(struct kwm_run *r, bool force);
void kwm_progress_message(struct kwm_run *r, const struct kwm_vm *vm, const char *level,
			  const char *msg);
void kwm_progress_done(struct kwm_run *r);
/* Redraws the live display if something changed, at most every 100 ms. */
void kwm_progress_redraw(struct kwm_run *r);
/* Adds vm's job statistics under libvirt's names (disk_total, ...). */
void kwm_job_stats(json_object *o, const struct kwm_vm *vm);
json_object *kwm_report_json(struct kwm_run *r);
void kwm_report_table(struct kwm_run *r, FILE *out);
int kwm_report_write(struct kwm_run *r, const char *path, char *err, size_t errlen);

#endif
