/* SPDX-License-Identifier: MIT */
/*
 * kawarimi-agent internals: one poll() loop over the host channel (a
 * virtio-serial character device, or a unix socket for tests), the rank
 * socket and its connections, and at most one quiesce/resume operation.
 */
#ifndef KAWARIMI_SYMVIRT_AGENT_H
#define KAWARIMI_SYMVIRT_AGENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <json-c/json.h>

#include "proto.h"

#define AGENT_DEFAULT_CHANNEL "/dev/virtio-ports/org.kawarimi.symvirt.0"
#define AGENT_DEFAULT_SOCKET "/run/kawarimi/agent.sock"
/* Output kept for a peer that does not read (a virtio port with no host
 * connected, a stuck rank) before it is dropped. */
#define AGENT_OUT_MAX (4u << 20)
/* More rank connections than any VM has cores: the rest are refused. */
#define AGENT_MAX_RANKS 4096
/* Bounds of a lease (quiesce's and renew's lease-ms, --adopt-lease-ms). */
#define AGENT_LEASE_MIN_MS SCHEMA_LEASE_MIN_MS
#define AGENT_LEASE_MAX_MS SCHEMA_LEASE_MAX_MS
#define AGENT_DEFAULT_ADOPT_LEASE_MS 60000

struct agent_opts {
	const char *channel;	/* PATH, unix:PATH or listen:PATH */
	const char *socket;	/* the ranks' unix socket */
	const char *group;	/* group owning the socket, or NULL */
	const char *proc_root;	/* "/proc": where holders are looked for */
	const char *dev_root;	/* "/dev": uverbs nodes are DEV/infiniband/uverbs* */
	const char *sys_root;	/* "/sys": PCI rescan, netdev and verbs links */
	const char *pci_dump;	/* read PCI devices from an `lspci -x` dump */
	int64_t adopt_lease_ms;	/* lease held for ranks that register quiesced */
	bool foreground;
	bool syslog;
	int verbose;
};

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
	struct sv_framer *framer;
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
	struct sv_framer *framer;
	struct outq out;
	bool registered;
	int64_t pid, rank;
	char jobid[129];
	json_object *paths_offered;	/* register's "paths" */
	json_object *paths_chosen;	/* last resume's "paths", or NULL */
	enum rank_state state;
	struct rank_pending pending[RANK_MAX_PENDING];
	size_t npending;
	/* outcome of the current operation for this rank */
	bool op_member;		/* was sent the operation's command */
	bool op_answered;
	json_object *op_ret;	/* its return, or NULL */
	struct schema_err op_err;	/* its error when op_answered && !op_ret */
	/* a live `status` of the ranks */
	bool live_wait;		/* asked, no answer yet */
	json_object *live;	/* its status return, or {"error": S} */
	struct rank *next;
};

enum agent_state { AS_RUNNING, AS_QUIESCING, AS_QUIESCED, AS_RESUMING };

enum op_kind { OP_NONE, OP_QUIESCE, OP_RESUME, OP_PEERS };
enum op_phase { PH_HOOK, PH_LINK, PH_RANKS, PH_ROLLBACK };

struct op {
	enum op_kind kind;
	enum op_phase phase;
	json_object *id;	/* the coordinator's id (a reference) or NULL */
	unsigned generation;	/* the channel's, when the command came */
	json_object *args;	/* a reference */
	int64_t start, deadline;
	json_object *gone;	/* ranks that went away during the op */
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
	struct op op;
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

/* agent.c */
int64_t agent_now_ms(void);
void agent_log(struct agent *a, int prio, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
int agent_init(struct agent *a, const struct agent_opts *o);
int agent_run(struct agent *a);
void agent_fini(struct agent *a);
/* Queues a message to the coordinator (consumes msg). */
void agent_to_host(struct agent *a, json_object *msg);
/* Queues a command to a rank and remembers it; 0 or -1 (rank dropped). */
int agent_to_rank(struct agent *a, struct rank *r, const char *command, json_object *args);
/* Queues any message to a rank (consumes msg); 0 or -1. */
int agent_rank_send(struct agent *a, struct rank *r, json_object *msg);
void agent_rank_reply(struct agent *a, struct rank *r, json_object *msg);
const char *agent_state_name(enum agent_state s);
const char *rank_state_name(enum rank_state s);

/* agent-commands.c: what the agent does for each command of its two legs
 * (SCHEMA_HOST, SCHEMA_RANK) in the protocol's table (schema.h). */
struct agent_command {
	const char *name;
	enum schema_leg leg;
	/* Answers now (returns the reply) or later (returns NULL, op pending). */
	json_object *(*fn)(struct agent *a, struct rank *from, json_object *args,
			   json_object *id);
};

extern const struct agent_command agent_commands[];
const struct agent_command *agent_find_command(const char *name, enum schema_leg leg);
/* Validates and runs one command message; returns the reply to send, or
 * NULL when the reply comes later from an operation. */
json_object *agent_dispatch_command(struct agent *a, struct rank *from, json_object *msg,
				    json_object *id);
/* A rank answered, went away or registered: let the operation advance. */
void agent_op_step(struct agent *a);
void agent_rank_gone(struct agent *a, struct rank *r, const char *reason);
void agent_rank_registered(struct agent *a, struct rank *r);
/* Next time (ms) the operation wants a tick, or 0. */
int64_t agent_op_timer(struct agent *a);
int agent_op_fd(struct agent *a);
void agent_op_fd_ready(struct agent *a);
void agent_op_fini(struct agent *a);
/* The lease ran out while quiescing: the quiesce fails, the ranks resume. */
void agent_quiesce_abort(struct agent *a, const struct schema_err *why);
/* The lease ran out while quiesced: a resume with both fabrics, answered
 * to nobody; link_timeout_ms bounds the wait for a verbs port. */
void agent_lease_resume(struct agent *a, int64_t link_timeout_ms);

/* agent-lease.c */
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
json_object *inv_pci(const struct agent_opts *o, struct schema_err *e);
/* Verbs devices and ports; with open_devices false only sysfs is read, so
 * the agent holds no uverbs descriptor even for a moment. */
json_object *inv_verbs(const struct agent_opts *o, bool open_devices, bool *any_active);
json_object *inv_netdevs(const struct agent_opts *o);
/* Fabrics for the ranks: [{"name","ifname","addr"}] from verbs + netdevs. */
json_object *inv_fabrics(json_object *verbs, json_object *netdevs);
/* Quick check for a verbs device with an ACTIVE port. */
bool inv_verbs_active(const struct agent_opts *o);
/* Writes 1 to SYS/bus/pci/rescan; 0 or -1 with e. */
int inv_pci_rescan(const struct agent_opts *o, struct schema_err *e);
/* Processes holding DEV/infiniband/uverbs* open: [{"pid","comm","path"}]. */
json_object *inv_uverbs_holders(const struct agent_opts *o, int *unreadable);

#endif
