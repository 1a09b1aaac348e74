/* SPDX-License-Identifier: MIT */
/*
 * kawarimi-agent internals, shared by its files and by nothing else: one
 * poll() loop over the host channel (a virtio-serial character device, or
 * a unix socket for tests), the rank socket and its connections, and at
 * most one task: a quiesce, resume or peers command at work until it
 * answers (what the coordinator calls an operation is one command it
 * sends; docs/architecture.md, "Names").
 *
 * Who calls whom: agent.c (the loop, all I/O) hands each message to
 * commands.c (the command table, the ranks' side) and ticks task.c and
 * lease.c; commands.c starts tasks in quiesce.c and resume.c, task.c
 * steps them, lease.c ends them when a lease runs out; inventory.c and
 * proto.c serve them all, and every file sends through agent.c's
 * agent_to_host() / agent_to_rank().  The sections below follow the files.
 */
#ifndef KAWARIMI_AGENT_PRIV_H
#define KAWARIMI_AGENT_PRIV_H

#include <sys/types.h>
#include <json-c/json.h>

#include "agent.h"
#include "proto.h"

/* Defaults of the commands' optional arguments (docs/symvirt-protocol.md). */
#define DEFAULT_DEADLINE_MS 30000
#define DEFAULT_LINK_TIMEOUT_MS 30000

/* Output kept for a peer that does not read (a virtio port with no host
 * connected, a stuck rank) before it is dropped. */
#define AGENT_OUT_MAX (4u << 20)
/* More rank connections than any VM has cores: the rest are refused. */
#define AGENT_MAX_RANKS 4096

struct outq {
	char *buf;
	size_t len, cap;
};

enum chan_kind { CHAN_DEVICE, CHAN_CONNECT, CHAN_LISTEN };

struct channel {
	enum chan_kind kind;
	const char *path;
	int fd;			/* -1 while closed */
	int listen_fd;		/* CHAN_LISTEN */
	bool paused;		/* device: no host connected; poll again at retry_at */
	int64_t retry_at;	/* reopen / re-poll time (ms), 0: none */
	int backoff_ms;
	bool open_warned;	/* "cannot open" logged for this outage */
	struct agent_framer *framer;
	struct outq out;
	/* Bumped whenever a socket host goes: a reply to a command of an
	 * earlier host is not sent to the next one. */
	unsigned generation;
};

enum rank_state { RS_RUNNING, RS_QUIESCING, RS_QUIESCED, RS_RESUMING };

#define RANK_MAX_PENDING 8

struct rank_pending {
	uint64_t id;
	char command[16];	/* "quiesce", "resume", "status" */
};

struct rank {
	int fd;
	struct agent_framer *framer;
	struct outq out;
	bool registered;
	int64_t pid, rank;
	char jobid[129];
	json_object *paths_offered;	/* register's "paths" */
	json_object *paths_chosen;	/* last resume's "paths", or NULL */
	enum rank_state state;
	struct rank_pending pending[RANK_MAX_PENDING];
	size_t npending;
	/* outcome of the current task for this rank */
	bool task_member;	/* was sent the task's command */
	bool task_answered;
	json_object *task_ret;	/* its return, or NULL */
	struct schema_err task_err;	/* its error when task_answered && !task_ret */
	/* a live `status` of the ranks */
	bool live_wait;		/* asked, no answer yet */
	json_object *live;	/* its status return, or {"error": S} */
	struct rank *next;
};

enum agent_state { AS_RUNNING, AS_QUIESCING, AS_QUIESCED, AS_RESUMING };

enum task_kind { TASK_NONE, TASK_QUIESCE, TASK_RESUME, TASK_PEERS };
enum task_stage { STAGE_HOOK, STAGE_LINK, STAGE_RANKS, STAGE_ROLLBACK };

struct task {
	enum task_kind kind;
	enum task_stage stage;
	json_object *id;	/* the coordinator's id (a reference) or NULL */
	unsigned generation;	/* the channel's, when the command came */
	json_object *args;	/* a reference */
	int64_t start, deadline;
	json_object *gone;	/* ranks that went away during the task */
	/* quiesce rollback: the error to report once the ranks are resumed */
	struct schema_err fail;
	/* resume */
	pid_t hook_pid;
	int hook_fd;
	char hook_out[2048];
	size_t hook_len;
	int64_t hook_deadline;
	json_object *hook_result;
	json_object *rescan_result;
	int64_t link_start, link_deadline, next_link_poll;
	bool want_verbs, verbs_ready;
	bool again;		/* quiesce while already quiesced */
	bool by_lease;		/* a resume the agent started itself: no one to answer */
	int64_t link_wait_ms;
	json_object *fabrics;
};

/*
 * The coordinator's hold on a quiesce (docs/symvirt-protocol.md, "Leases"):
 * unless renewed, the agent resumes the ranks itself when it runs out, so
 * a coordinator that dies never leaves a job quiesced for ever.
 */
struct lease {
	bool held;
	bool adopted;		/* taken for ranks that registered quiesced */
	int64_t length_ms;
	int64_t expires;	/* agent_now_ms() */
};

struct agent {
	struct agent_opts o;
	struct channel ch;
	int rank_listen_fd;
	int64_t accept_again;	/* out of descriptors: accept ranks from then */
	int sig_fd;
	struct rank *ranks;
	enum agent_state state;
	struct task task;
	struct lease lease;
	struct {		/* `status` with "ranks": true, one at a time */
		bool active;
		json_object *id;
		int64_t deadline;
		unsigned generation;
	} live;
	uint64_t next_id;
	int64_t started;
	bool stop;
};

/* agent.c: the loop */
int64_t agent_now_ms(void);
/* Output queues: 0, or -1 when full (AGENT_OUT_MAX) or on ENOMEM. */
int agent_outq_add(struct outq *q, json_object *msg);
void agent_outq_clear(struct outq *q);
/* Writes what the peer takes now; 0, or -1 on a hard error (errno). */
int agent_outq_flush(struct outq *q, int fd);
/* Queues a message to the coordinator (consumes msg). */
void agent_to_host(struct agent *a, json_object *msg);
/* Queues a command to a rank and remembers it; 0 or -1 (rank dropped). */
int agent_to_rank(struct agent *a, struct rank *r, const char *command, json_object *args);
/* Queues any message to a rank (consumes msg); 0 or -1. */
int agent_rank_send(struct agent *a, struct rank *r, json_object *msg);
const char *agent_state_name(enum agent_state s);
const char *agent_rank_state_name(enum rank_state s);

/* channel.c: the host channel */
/* Parses --channel (0, or -1 logged), then opens or listens on it. */
int agent_chan_setup(struct agent *a);
int agent_chan_start(struct agent *a);
void agent_chan_fini(struct agent *a);
/* A listening unix socket (mode, group): the fd, or -1 (logged). */
int agent_listen_unix(struct agent *a, const char *path, mode_t mode, const char *group);
/* The loop's calls: a host connecting, the channel's poll events, its
 * reopen / re-poll timers, and writing what is queued. */
void agent_chan_accept(struct agent *a);
void agent_chan_handle(struct agent *a, short re);
void agent_chan_timers(struct agent *a);
void agent_chan_flush(struct agent *a);

/* commands.c: what the agent does for each command of its two legs
 * (SCHEMA_HOST, SCHEMA_RANK) in the protocol's table (schema.h). */
struct agent_command {
	const char *name;
	enum schema_leg leg;
	/* Answers now (returns the reply) or later (returns NULL, task pending). */
	json_object *(*fn)(struct agent *a, struct rank *from, json_object *args,
			   json_object *id);
};

extern const struct agent_command agent_commands[];
const struct agent_command *agent_find_command(const char *name, enum schema_leg leg);
/* Validates and runs one command message; returns the reply to send, or
 * NULL when the reply comes later from a task. */
json_object *agent_dispatch_command(struct agent *a, struct rank *from, json_object *msg,
				    json_object *id);
/* A rank answered, went away or registered: let the task advance. */
void agent_rank_reply(struct agent *a, struct rank *r, json_object *msg);
void agent_rank_gone(struct agent *a, struct rank *r, const char *reason);
void agent_rank_registered(struct agent *a, struct rank *r);
/* An error reply of class cls: fmt has one %s, arg. */
json_object *agent_errorf(json_object *id, const char *cls, const char *fmt, const char *arg);
/* Another task is under way: the error reply that says which. */
json_object *agent_busy_error(struct agent *a, json_object *id);
/* {"rank", "pid", "jobid"}: a rank in events and replies. */
json_object *agent_rank_event_data(struct rank *r);
/* Answers a `status` of the ranks once all did or its deadline passed. */
void agent_live_step(struct agent *a);

/* task.c: the task in progress */
void agent_task_begin(struct agent *a, enum task_kind kind, json_object *id, json_object *args,
		      int64_t deadline_ms);
/* Sends the task's reply (consumes it) and ends the task. */
void agent_task_reply(struct agent *a, json_object *reply);
/* Stops the task (its hook killed) and forgets it. */
void agent_task_fini(struct agent *a);
/* Members still owing an answer (ranks gone are no longer members). */
size_t agent_task_waiting(struct agent *a);
/* Each member rank's return, less its "state"; the first rank that
 * failed or did not answer sets fail. */
json_object *agent_task_returns(struct agent *a, const char *cmd, const char *failed,
				struct schema_err *fail);
/* Lets the task advance as far as it can. */
void agent_task_step(struct agent *a);
/* Next time (ms) the task wants a tick, or 0. */
int64_t agent_task_timer(struct agent *a);
/* The deadline a rank gets: a little less than what the task has left. */
int64_t agent_rank_deadline_ms(struct agent *a);
void agent_send_quiesce(struct agent *a, struct rank *r, int64_t deadline_ms);
void agent_send_resume(struct agent *a, struct rank *r, json_object *fabrics, int64_t link_ms);
void agent_describe_rank(struct rank *r, char *buf, size_t n);
/* The fabrics the ranks get now, from the verbs devices and netdevs. */
json_object *agent_current_fabrics(struct agent *a, bool *verbs_ready);

/* quiesce.c */
json_object *agent_cmd_quiesce(struct agent *a, struct rank *from, json_object *args, json_object *id);
void agent_quiesce_step(struct agent *a);
/* The lease ran out while quiescing: the quiesce fails, the ranks resume. */
void agent_quiesce_abort(struct agent *a, const struct schema_err *why);

/* resume.c */
json_object *agent_cmd_resume(struct agent *a, struct rank *from, json_object *args, json_object *id);
json_object *agent_cmd_peers(struct agent *a, struct rank *from, json_object *args, json_object *id);
void agent_resume_step(struct agent *a);
void agent_peers_step(struct agent *a);
/* The resume hook's output pipe, -1 when none; read it when readable. */
int agent_task_fd(struct agent *a);
void agent_task_fd_ready(struct agent *a);
/* The lease ran out while quiesced: a resume with both fabrics, answered
 * to nobody; link_timeout_ms bounds the wait for a verbs port. */
void agent_lease_resume(struct agent *a, int64_t link_timeout_ms);

/* lease.c */
/* Quiescing (before the ranks answered) or quiesced: a lease means something. */
bool agent_lease_holdable(const struct agent *a);
void agent_lease_hold(struct agent *a, int64_t length_ms, int64_t from, bool adopted);
void agent_lease_drop(struct agent *a, const char *why);
/* ms until the lease runs out (0 once it has), or -1 when none is held. */
int64_t agent_lease_left(const struct agent *a);
/* Acts on an expired lease; called once per loop. */
void agent_lease_step(struct agent *a);
/* When agent_lease_step() next has something to do (ms), or 0. */
int64_t agent_lease_timer(const struct agent *a);

/* inventory.c */
json_object *agent_inv_pci(const struct agent_opts *o, struct schema_err *e);
/* Verbs devices and ports; with open_devices false only sysfs is read, so
 * the agent holds no uverbs descriptor even for a moment. */
json_object *agent_inv_verbs(const struct agent_opts *o, bool open_devices, bool *any_active);
json_object *agent_inv_netdevs(const struct agent_opts *o);
/* Fabrics for the ranks: [{"name","ifname","addr"}] from verbs + netdevs. */
json_object *agent_inv_fabrics(json_object *verbs, json_object *netdevs);
/* Quick check for a verbs device with an ACTIVE port. */
bool agent_inv_verbs_active(const struct agent_opts *o);
/* Writes 1 to SYS/bus/pci/rescan; 0 or -1 with e. */
int agent_inv_pci_rescan(const struct agent_opts *o, struct schema_err *e);
/* Processes holding DEV/infiniband/uverbs* open: [{"pid","comm","path"}]. */
json_object *agent_inv_uverbs_holders(const struct agent_opts *o, int *unreadable);

#endif
