/* SPDX-License-Identifier: MIT */
/*
 * kawarimi-agent: the command table (it mirrors docs/symvirt-protocol.md;
 * tests/symvirt/doc-commands.sh checks both ways) and the quiesce/resume
 * operations.
 *
 * At most one operation runs at a time.  It never blocks the loop: rank
 * replies, rank deaths, the hook's exit and timers all come back through
 * agent_op_step(), which advances the operation as far as it can.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <syslog.h>
#include <unistd.h>

#include "agent.h"

#define DEFAULT_DEADLINE_MS 30000
#define DEFAULT_LINK_TIMEOUT_MS 30000
#define DEFAULT_HOOK_TIMEOUT_MS 60000
#define ROLLBACK_WAIT_MS 10000
#define LINK_POLL_MS 200
#define DEFAULT_STATUS_DEADLINE_MS 2000
#define HOOK_POLL_MS 50

static json_object *cmd_hello(struct agent *a, struct rank *from, json_object *args, json_object *id);
static json_object *cmd_query_commands(struct agent *a, struct rank *from, json_object *args, json_object *id);
static json_object *cmd_inventory(struct agent *a, struct rank *from, json_object *args, json_object *id);
static json_object *cmd_status(struct agent *a, struct rank *from, json_object *args, json_object *id);
static json_object *cmd_quiesce(struct agent *a, struct rank *from, json_object *args, json_object *id);
static json_object *cmd_resume(struct agent *a, struct rank *from, json_object *args, json_object *id);
static json_object *cmd_peers(struct agent *a, struct rank *from, json_object *args, json_object *id);
static json_object *cmd_renew(struct agent *a, struct rank *from, json_object *args, json_object *id);
static json_object *cmd_register(struct agent *a, struct rank *from, json_object *args, json_object *id);
static json_object *cmd_unregister(struct agent *a, struct rank *from, json_object *args, json_object *id);

/* What the agent does for each command of the table (schema.c), which
 * has their arguments; `query-commands` lists these rows. */
const struct agent_command agent_commands[] = {
	{ "hello", SCHEMA_HOST, cmd_hello },
	{ "query-commands", SCHEMA_HOST, cmd_query_commands },
	{ "inventory", SCHEMA_HOST, cmd_inventory },
	{ "status", SCHEMA_HOST, cmd_status },
	{ "quiesce", SCHEMA_HOST, cmd_quiesce },
	{ "resume", SCHEMA_HOST, cmd_resume },
	{ "peers", SCHEMA_HOST, cmd_peers },
	{ "renew", SCHEMA_HOST, cmd_renew },
	{ "register", SCHEMA_RANK, cmd_register },
	{ "unregister", SCHEMA_RANK, cmd_unregister },
	{ .name = NULL }
};

const struct agent_command *agent_find_command(const char *name, enum schema_leg leg)
{
	for (const struct agent_command *c = agent_commands; c->name; c++)
		if (c->leg == leg && !strcmp(c->name, name))
			return c;
	return NULL;
}

json_object *agent_dispatch_command(struct agent *a, struct rank *from, json_object *msg,
				    json_object *id)
{
	enum schema_leg leg = from ? SCHEMA_RANK : SCHEMA_HOST;
	const struct schema_command *spec;
	const struct agent_command *c;
	json_object *name, *args = NULL;
	enum schema_kind kind;
	struct schema_err e;

	if (schema_check_envelope(msg, &kind, &id, &e) < 0)
		return sv_reply_error(&e, id);
	if (kind != SCHEMA_MSG_COMMAND) {
		schema_err_set(&e, "ProtocolError", "only commands are accepted here, not a %s",
			   kind == SCHEMA_MSG_REPLY ? "reply" : "event");
		return sv_reply_error(&e, id);
	}
	json_object_object_get_ex(msg, "execute", &name);
	json_object_object_get_ex(msg, "arguments", &args);
	c = agent_find_command(json_object_get_string(name), leg);
	spec = schema_find(json_object_get_string(name), leg);
	if (!c || !spec) {
		schema_err_set(&e, "CommandNotFound", "the agent has no %s command \"%s\"; `query-commands` lists them",
			   schema_leg_name(leg), json_object_get_string(name));
		return sv_reply_error(&e, id);
	}
	if (schema_check_args(args, spec->args, &e) < 0) {
		char desc[SV_DESC_MAX];

		snprintf(desc, sizeof(desc), "%s: %.900s", c->name, e.desc);
		snprintf(e.desc, sizeof(e.desc), "%s", desc);
		return sv_reply_error(&e, id);
	}
	return c->fn(a, from, args, id);
}

/* ---- simple commands ------------------------------------------------------ */

static json_object *errorf(json_object *id, const char *cls, const char *fmt, const char *arg)
{
	struct schema_err e;

	schema_err_set(&e, cls, fmt, arg);
	return sv_reply_error(&e, id);
}

static json_object *cmd_hello(struct agent *a, struct rank *from, json_object *args, json_object *id)
{
	json_object *r = json_object_new_object();
	char host[256] = "";

	(void)from;
	if (sv_arg(args, "client"))
		agent_log(a, LOG_INFO, "hello from %s", sv_arg_str(args, "client", ""));
	gethostname(host, sizeof(host) - 1);
	json_object_object_add(r, "protocol", json_object_new_int(SYMVIRT_PROTOCOL_VERSION));
	json_object_object_add(r, "agent", json_object_new_string(KAWARIMI_VERSION));
	json_object_object_add(r, "hostname", json_object_new_string(host));
	json_object_object_add(r, "pid", json_object_new_int(getpid()));
	json_object_object_add(r, "state", json_object_new_string(agent_state_name(a->state)));
	return sv_reply_return(r, id);
}

static json_object *cmd_query_commands(struct agent *a, struct rank *from, json_object *args,
				       json_object *id)
{
	json_object *list = json_object_new_array(), *r = json_object_new_object();

	(void)a;
	(void)from;
	(void)args;
	for (const struct agent_command *c = agent_commands; c->name; c++) {
		json_object *o = json_object_new_object();

		json_object_object_add(o, "name", json_object_new_string(c->name));
		json_object_object_add(o, "leg", json_object_new_string(schema_leg_name(c->leg)));
		json_object_array_add(list, o);
	}
	json_object_object_add(r, "commands", list);
	return sv_reply_return(r, id);
}

static json_object *cmd_inventory(struct agent *a, struct rank *from, json_object *args,
				  json_object *id)
{
	json_object *r = json_object_new_object(), *pci, *verbs, *net;
	struct schema_err e;
	bool active;

	(void)from;
	(void)args;
	pci = inv_pci(&a->o, &e);
	if (!pci && a->o.pci_dump) {
		json_object_put(r);
		return sv_reply_error(&e, id);
	}
	if (!pci) {
		/* No PCI access at all (a container, a guest without sysfs):
		 * as `lspci` sees it, no devices; the rest still counts. */
		agent_log(a, LOG_WARNING, "%s", e.desc);
		pci = json_object_new_array();
		json_object_object_add(r, "pci-error", json_object_new_string(e.desc));
	}
	/* Between quiesce and resume the agent itself must not open a uverbs
	 * device: the HCA may be on its way out (an open holder hangs the
	 * unplug), so verbs devices are then listed from sysfs only. */
	verbs = inv_verbs(&a->o, a->state == AS_RUNNING || a->state == AS_RESUMING, &active);
	net = inv_netdevs(&a->o);
	json_object_object_add(r, "pci", pci);
	json_object_object_add(r, "verbs", json_object_get(verbs));
	json_object_object_add(r, "netdevs", json_object_get(net));
	json_object_object_add(r, "fabrics", inv_fabrics(verbs, net));
	json_object_put(verbs);
	json_object_put(net);
	return sv_reply_return(r, id);
}

static const char *op_name(enum op_kind k)
{
	static const char *const names[] = { NULL, "quiesce", "resume", "peers" };

	return names[k];
}

/* Another operation is under way; none answers a resume the lease started. */
static json_object *busy_error(struct agent *a, json_object *id)
{
	if (a->op.by_lease)
		return errorf(id, "InvalidState", "%s", "the lease ran out and the agent is resuming the ranks "
			      "by itself (event lease-expired); renew the lease sooner");
	return errorf(id, "InvalidState", "a %s is in progress; wait for its reply", op_name(a->op.kind));
}

static json_object *lease_left_json(struct agent *a)
{
	int64_t left = agent_lease_left(a);

	return left < 0 ? NULL : json_object_new_int64(left);
}

static json_object *rank_json(struct rank *r)
{
	json_object *o = json_object_new_object();

	json_object_object_add(o, "rank", json_object_new_int64(r->rank));
	json_object_object_add(o, "pid", json_object_new_int64(r->pid));
	json_object_object_add(o, "jobid", json_object_new_string(r->jobid));
	json_object_object_add(o, "state", json_object_new_string(rank_state_name(r->state)));
	json_object_object_add(o, "offered", json_object_get(r->paths_offered));
	json_object_object_add(o, "paths", r->paths_chosen ? json_object_get(r->paths_chosen)
							   : json_object_new_array());
	if (r->live)
		json_object_object_add(o, "live", json_object_get(r->live));
	return o;
}

static json_object *status_json(struct agent *a)
{
	json_object *r = json_object_new_object(), *ranks = json_object_new_array();
	for (struct rank *x = a->ranks; x; x = x->next)
		if (x->registered)
			json_object_array_add(ranks, rank_json(x));
	json_object_object_add(r, "state", json_object_new_string(agent_state_name(a->state)));
	json_object_object_add(r, "operation", a->op.kind ? json_object_new_string(op_name(a->op.kind)) : NULL);
	json_object_object_add(r, "ranks", ranks);
	json_object_object_add(r, "uptime-ms", json_object_new_int64(agent_now_ms() - a->started));
	json_object_object_add(r, "lease-ms-left", lease_left_json(a));
	return r;
}

/* With "ranks": true every rank is asked for its own status; the reply
 * waits for all of them or deadline-ms, whichever comes first. */
static json_object *cmd_status(struct agent *a, struct rank *from, json_object *args, json_object *id)
{
	(void)from;
	if (!sv_arg_bool(args, "ranks", false))
		return sv_reply_return(status_json(a), id);
	if (a->live.active)
		return errorf(id, "InvalidState", "%s", "a status of the ranks is in progress; wait for its reply");
	a->live.active = true;
	a->live.id = id ? json_object_get(id) : NULL;
	a->live.deadline = agent_now_ms() + sv_arg_int(args, "deadline-ms", DEFAULT_STATUS_DEADLINE_MS);
	a->live.generation = a->ch.generation;
	for (struct rank *r = a->ranks; r; r = r->next) {
		json_object_put(r->live);
		r->live = NULL;
		r->live_wait = r->registered;
		if (r->registered)
			agent_to_rank(a, r, "status", NULL);
	}
	return NULL;
}

static void live_error(struct rank *r, const char *fmt, const char *a, const char *b)
{
	char text[SV_DESC_MAX + 80];

	snprintf(text, sizeof(text), fmt, a, b);
	json_object_put(r->live);
	r->live = json_object_new_object();
	json_object_object_add(r->live, "error", json_object_new_string(text));
}

static void live_step(struct agent *a)
{
	bool waiting = false;

	if (!a->live.active)
		return;
	for (struct rank *r = a->ranks; r; r = r->next)
		waiting = waiting || (r->registered && r->live_wait);
	if (waiting && agent_now_ms() < a->live.deadline)
		return;
	for (struct rank *r = a->ranks; r; r = r->next) {
		if (r->registered && r->live_wait)
			live_error(r, "%s%s", "no answer within deadline-ms", "");
		r->live_wait = false;
	}
	if (a->live.generation == a->ch.generation)
		agent_to_host(a, sv_reply_return(status_json(a), a->live.id));
	json_object_put(a->live.id);
	a->live.id = NULL;
	a->live.active = false;
	/* the live answers belong to that reply only */
	for (struct rank *r = a->ranks; r; r = r->next) {
		json_object_put(r->live);
		r->live = NULL;
	}
}

/* ---- ranks --------------------------------------------------------------- */

static json_object *rank_event_data(struct rank *r)
{
	json_object *d = json_object_new_object();

	json_object_object_add(d, "rank", json_object_new_int64(r->rank));
	json_object_object_add(d, "pid", json_object_new_int64(r->pid));
	json_object_object_add(d, "jobid", json_object_new_string(r->jobid));
	return d;
}

static int64_t rank_deadline_ms(struct agent *a)
{
	int64_t left = a->op.deadline - agent_now_ms();

	/* A little less than ours, so the rank's own Timeout arrives first. */
	left -= left / 10;
	return left < 1 ? 1 : left;
}

static void send_quiesce(struct agent *a, struct rank *r, int64_t deadline_ms)
{
	json_object *args = json_object_new_object();

	json_object_object_add(args, "deadline-ms", json_object_new_int64(deadline_ms));
	r->state = RS_QUIESCING;
	agent_to_rank(a, r, "quiesce", args);
}

static void send_resume(struct agent *a, struct rank *r, json_object *fabrics, int64_t link_ms);
static json_object *current_fabrics(struct agent *a, bool *verbs_ready);

/* What a rank says it is (the table allows only these two): an agent
 * that (re)starts learns so of a quiesce it never saw.  Absent (an older
 * BTL): running. */
static enum rank_state register_state(json_object *args)
{
	return strcmp(sv_arg_str(args, "state", "running"), "quiesced") ? RS_RUNNING : RS_QUIESCED;
}

static json_object *cmd_register(struct agent *a, struct rank *r, json_object *args, json_object *id)
{
	json_object *ret;

	if (r->registered)
		return errorf(id, "InvalidState", "this connection already registered rank %s; one rank per connection",
			      r->jobid);
	r->registered = true;
	r->state = register_state(args);
	r->pid = sv_arg_int(args, "pid", 0);
	r->rank = sv_arg_int(args, "rank", 0);
	snprintf(r->jobid, sizeof(r->jobid), "%s", sv_arg_str(args, "jobid", ""));
	r->paths_offered = json_object_get(sv_arg(args, "paths"));
	agent_log(a, LOG_INFO, "rank %" PRId64 " of job %s (pid %" PRId64 ") registered %s",
		  r->rank, r->jobid, r->pid, rank_state_name(r->state));
	ret = json_object_new_object();
	json_object_object_add(ret, "version", json_object_new_int(SYMVIRT_PROTOCOL_VERSION));
	/* The reply goes first: a quiesce may follow at once. */
	agent_rank_send(a, r, sv_reply_return(ret, id));
	agent_rank_registered(a, r);
	return NULL;
}

static json_object *cmd_unregister(struct agent *a, struct rank *r, json_object *args, json_object *id)
{
	(void)args;
	if (!r->registered)
		return errorf(id, "InvalidState", "%s", "unregister before register");
	agent_rank_gone(a, r, "unregister");
	r->registered = false;
	r->npending = 0;
	agent_op_step(a);
	return sv_reply_return(NULL, id);
}

/* A rank that registers quiesced during a resume missed it: it gets one
 * now, or it would stay quiesced with the agent running. */
static void resume_late_rank(struct agent *a, struct rank *r)
{
	struct op *op = &a->op;
	json_object *fabrics = op->fabrics ? json_object_get(op->fabrics) : current_fabrics(a, NULL);

	r->op_member = op->kind == OP_RESUME;
	r->op_answered = false;
	send_resume(a, r, fabrics, op->kind == OP_RESUME ?
		    sv_arg_int(op->args, "link-timeout-ms", DEFAULT_LINK_TIMEOUT_MS) : 0);
	json_object_put(fabrics);
}

/*
 * A rank registered quiesced: the agent that quiesced it is gone (this one
 * restarted) or its connection dropped meanwhile.  A running agent adopts
 * the quiesce, so that a `resume` is accepted and reaches the rank, and
 * holds a lease for it, since nobody may be left to renew one.  The ranks
 * that say running are quiesced too, as any rank registering while the
 * agent is quiesced: `quiesced` keeps meaning that no rank here holds the
 * HCA, and the job resumes together.
 */
static void adopt_quiesced(struct agent *a, struct rank *r)
{
	struct op *op = &a->op;

	if (a->state == AS_RUNNING) {
		agent_log(a, LOG_NOTICE, "rank %" PRId64 " of job %s (pid %" PRId64 ") registered quiesced: "
			  "adopting its quiesce with a lease of %" PRId64 " ms", r->rank, r->jobid, r->pid,
			  a->o.adopt_lease_ms);
		a->state = AS_QUIESCED;
		agent_lease_hold(a, a->o.adopt_lease_ms, agent_now_ms(), true);
		for (struct rank *x = a->ranks; x; x = x->next)
			if (x != r && x->registered && x->state == RS_RUNNING)
				send_quiesce(a, x, DEFAULT_DEADLINE_MS);
	} else if (op->kind == OP_QUIESCE && op->phase == PH_RANKS) {
		/* A member like the others; it answers at once. */
		r->op_member = true;
		r->op_answered = false;
		send_quiesce(a, r, rank_deadline_ms(a));
	} else if ((op->kind == OP_RESUME && op->phase == PH_RANKS) ||
		   (op->kind == OP_QUIESCE && op->phase == PH_ROLLBACK)) {
		resume_late_rank(a, r);
	}
	/* Else quiesced already, or a resume before its ranks phase, which
	 * finds the rank by its state. */
}

void agent_rank_registered(struct agent *a, struct rank *r)
{
	json_object *d = rank_event_data(r);

	json_object_object_add(d, "paths", json_object_get(r->paths_offered));
	agent_to_host(a, sv_event("RANK_REGISTERED", d));
	if (r->state == RS_QUIESCED) {
		adopt_quiesced(a, r);
		return;
	}
	/* A rank that starts while the others are quiesced must not open
	 * the HCA either. */
	if (a->state == AS_QUIESCING && a->op.kind == OP_QUIESCE && a->op.phase == PH_RANKS) {
		r->op_member = true;
		r->op_answered = false;
		send_quiesce(a, r, rank_deadline_ms(a));
	} else if (a->state == AS_QUIESCED) {
		send_quiesce(a, r, DEFAULT_DEADLINE_MS);
	}
}

void agent_rank_gone(struct agent *a, struct rank *r, const char *reason)
{
	json_object *d;

	if (!r->registered)
		return;
	agent_log(a, LOG_INFO, "rank %" PRId64 " (pid %" PRId64 ") gone: %s", r->rank, r->pid, reason);
	d = rank_event_data(r);
	json_object_object_add(d, "reason", json_object_new_string(reason));
	agent_to_host(a, sv_event("RANK_UNREGISTERED", d));
	if (a->op.kind != OP_NONE && r->op_member) {
		json_object *g = rank_event_data(r);

		json_object_object_add(g, "reason", json_object_new_string(reason));
		json_object_array_add(a->op.gone, g);
		r->op_member = false;
	}
}

/* Which command did this reply answer?  Removes it from the pending list. */
static bool take_pending(struct rank *r, uint64_t id, char *cmd, size_t n)
{
	for (size_t i = 0; i < r->npending; i++) {
		if (r->pending[i].id != id)
			continue;
		snprintf(cmd, n, "%s", r->pending[i].command);
		memmove(r->pending + i, r->pending + i + 1, sizeof(r->pending[0]) * (r->npending - i - 1));
		r->npending--;
		return true;
	}
	return false;
}

static void note_rank_answer(struct agent *a, struct rank *r, const char *cmd,
			     json_object *ret, const struct schema_err *e)
{
	bool for_op = r->op_member && !r->op_answered &&
		      ((a->op.kind == OP_QUIESCE && a->op.phase == PH_RANKS && !strcmp(cmd, "quiesce")) ||
		       ((a->op.phase == PH_ROLLBACK ||
			 (a->op.kind == OP_RESUME && a->op.phase == PH_RANKS)) && !strcmp(cmd, "resume")) ||
		       (a->op.kind == OP_PEERS && !strcmp(cmd, "peers")));

	if (!strcmp(cmd, "quiesce") && ret)
		r->state = RS_QUIESCED;
	if (!strcmp(cmd, "peers") && ret) {
		json_object *paths = NULL;

		if (json_object_object_get_ex(ret, "paths", &paths)) {
			json_object_put(r->paths_chosen);
			r->paths_chosen = json_object_get(paths);
		}
	}
	if (!strcmp(cmd, "resume")) {
		if (ret) {
			json_object *paths = NULL;

			r->state = RS_RUNNING;
			json_object_object_get_ex(ret, "paths", &paths);
			json_object_put(r->paths_chosen);
			r->paths_chosen = json_object_get(paths);
		} else if (!strcmp(e->cls, "InvalidState")) {
			r->state = RS_RUNNING;	/* it was not quiesced */
		}
	}
	if (!ret)
		agent_log(a, LOG_WARNING, "rank %" PRId64 " (pid %" PRId64 ") %s: %s: %s",
			  r->rank, r->pid, cmd, e->cls, e->desc);
	if (!strcmp(cmd, "status") && r->live_wait) {
		r->live_wait = false;
		if (ret) {
			json_object_put(r->live);
			r->live = json_object_get(ret);
		} else {
			live_error(r, "%s: %s", e->cls, e->desc);
		}
	}
	if (!for_op)
		return;
	r->op_answered = true;
	json_object_put(r->op_ret);
	r->op_ret = ret ? json_object_get(ret) : NULL;
	if (!ret)
		r->op_err = *e;
}

void agent_rank_reply(struct agent *a, struct rank *r, json_object *msg)
{
	json_object *idv = NULL, *ret = NULL, *err = NULL;
	struct schema_err e;
	char cmd[16];

	if (msg)
		json_object_object_get_ex(msg, "id", &idv);
	if (!idv || !take_pending(r, (uint64_t)json_object_get_int64(idv), cmd, sizeof(cmd))) {
		agent_log(a, LOG_WARNING, "rank pid %" PRId64 ": reply to no pending command dropped", r->pid);
		return;
	}
	if (!msg) {
		schema_err_set(&e, "ProtocolError", "malformed reply");
	} else if (json_object_object_get_ex(msg, "return", &ret)) {
		if (schema_check_return(cmd, ret, &e) < 0)
			ret = NULL;
	} else {
		json_object *cls, *desc;

		json_object_object_get_ex(msg, "error", &err);
		json_object_object_get_ex(err, "class", &cls);
		json_object_object_get_ex(err, "desc", &desc);
		schema_err_set(&e, json_object_get_string(cls), "%s", json_object_get_string(desc));
	}
	note_rank_answer(a, r, cmd, ret, &e);
	agent_op_step(a);
}

/* ---- operations: common ----------------------------------------------------- */

static void op_begin(struct agent *a, enum op_kind kind, json_object *id, json_object *args,
		     int64_t deadline_ms)
{
	struct op *op = &a->op;

	memset(op, 0, sizeof(*op));
	op->kind = kind;
	op->id = id ? json_object_get(id) : NULL;
	op->args = args ? json_object_get(args) : NULL;
	op->start = agent_now_ms();
	op->generation = a->ch.generation;
	op->deadline = op->start + deadline_ms;
	op->gone = json_object_new_array();
	op->hook_fd = -1;
	op->hook_pid = -1;
	for (struct rank *r = a->ranks; r; r = r->next) {
		r->op_member = false;
		r->op_answered = false;
		json_object_put(r->op_ret);
		r->op_ret = NULL;
	}
}

void agent_op_fini(struct agent *a)
{
	struct op *op = &a->op;


	if (op->hook_pid > 0) {
		kill(-op->hook_pid, SIGKILL);
		waitpid(op->hook_pid, NULL, 0);
	}
	if (op->hook_fd >= 0)
		close(op->hook_fd);
	json_object_put(op->id);
	json_object_put(op->args);
	json_object_put(op->gone);
	json_object_put(op->hook_result);
	json_object_put(op->rescan_result);
	json_object_put(op->fabrics);
	memset(op, 0, sizeof(*op));
	op->hook_fd = -1;
	op->hook_pid = -1;
}

static void op_reply(struct agent *a, json_object *reply)
{
	if (a->op.by_lease) {
		agent_log(a, LOG_NOTICE, "resume after the lease ran out: %.300s",
			  json_object_to_json_string(reply));
		json_object_put(reply);
	} else if (a->op.generation == a->ch.generation) {
		agent_to_host(a, reply);
	} else {
		agent_log(a, LOG_INFO, "the host that asked has gone; reply dropped: %.200s",
			  json_object_to_json_string(reply));
		json_object_put(reply);
	}
	agent_op_fini(a);
}

/* Members still owing an answer (ranks gone are no longer members). */
static size_t op_waiting(struct agent *a)
{
	size_t n = 0;

	for (struct rank *r = a->ranks; r; r = r->next)
		if (r->registered && r->op_member && !r->op_answered)
			n++;
	return n;
}

static void describe_rank(struct rank *r, char *buf, size_t n)
{
	snprintf(buf, n, "rank %" PRId64 " of job %s (pid %" PRId64 ")", r->rank, r->jobid, r->pid);
}

static json_object *current_fabrics(struct agent *a, bool *verbs_ready)
{
	bool active = false;
	json_object *verbs = inv_verbs(&a->o, true, &active), *net = inv_netdevs(&a->o);
	json_object *f = inv_fabrics(verbs, net);

	if (verbs_ready)
		*verbs_ready = active;
	json_object_put(verbs);
	json_object_put(net);
	return f;
}

/*
 * Each member rank's return (less its "state"), for the reply to the
 * host; the first rank that failed or did not answer sets fail.
 */
static json_object *member_returns(struct agent *a, const char *cmd, const char *failed,
				   struct schema_err *fail)
{
	json_object *ranks = json_object_new_array();
	char who[200];

	for (struct rank *r = a->ranks; r; r = r->next) {
		json_object *o;

		if (!r->registered || !r->op_member)
			continue;
		o = rank_event_data(r);
		if (r->op_ret) {
			json_object_object_foreach(r->op_ret, k, v)
				if (strcmp(k, "state"))
					json_object_object_add(o, k, json_object_get(v));
		} else if (!fail->cls[0]) {
			describe_rank(r, who, sizeof(who));
			if (r->op_answered)
				schema_err_set(fail, "RankError", "%s %s: %s: %s",
					   who, failed, r->op_err.cls, r->op_err.desc);
			else
				schema_err_set(fail, "Timeout", "%s did not answer %s within %" PRId64 " ms",
					   who, cmd, sv_arg_int(a->op.args, "deadline-ms", DEFAULT_DEADLINE_MS));
		}
		json_object_array_add(ranks, o);
	}
	return ranks;
}

static void send_resume(struct agent *a, struct rank *r, json_object *fabrics, int64_t link_ms)
{
	json_object *args = json_object_new_object();

	json_object_object_add(args, "fabrics", json_object_get(fabrics));
	json_object_object_add(args, "link-timeout-ms", json_object_new_int64(link_ms));
	/* The rank answers with what it has before we give up on it. */
	json_object_object_add(args, "deadline-ms", json_object_new_int64(rank_deadline_ms(a)));
	if (sv_arg(a->op.args, "wait"))
		json_object_object_add(args, "wait", json_object_get(sv_arg(a->op.args, "wait")));
	r->state = RS_RESUMING;
	agent_to_rank(a, r, "resume", args);
}

/* ---- quiesce ------------------------------------------------------------------ */

static json_object *holders_error(struct agent *a, json_object *holders, struct schema_err *e)
{
	json_object *h = json_object_array_get_idx(holders, 0), *pid, *comm, *path;
	const char *who = "";

	json_object_object_get_ex(h, "pid", &pid);
	json_object_object_get_ex(h, "comm", &comm);
	json_object_object_get_ex(h, "path", &path);
	for (struct rank *r = a->ranks; r; r = r->next)
		if (r->registered && r->pid == json_object_get_int64(pid))
			who = ", an MPI rank that reported quiesced";
	schema_err_set(e, "DeviceBusy",
		   "process %" PRId64 " (%s%s) holds %s open%s; the HCA cannot be unplugged while it does: stop it or make it close the device",
		   json_object_get_int64(pid), json_object_get_string(comm), who,
		   json_object_get_string(path),
		   json_object_array_length(holders) > 1 ? " (and other processes; see the agent log)" : "");
	return NULL;
}

static void quiesce_rollback(struct agent *a)
{
	json_object *fabrics = current_fabrics(a, NULL);

	agent_log(a, LOG_WARNING, "quiesce failed (%s: %s); resuming the ranks", a->op.fail.cls,
		  a->op.fail.desc);
	agent_lease_drop(a, "the quiesce failed");
	a->op.phase = PH_ROLLBACK;
	a->op.deadline = agent_now_ms() + ROLLBACK_WAIT_MS;
	for (struct rank *r = a->ranks; r; r = r->next) {
		if (!r->registered || r->state == RS_RUNNING)
			continue;
		/* A rank that never answered gets its resume queued behind the
		 * quiesce, but nobody waits for it. */
		r->op_member = r->op_answered;
		r->op_answered = false;
		send_resume(a, r, fabrics, 0);
	}
	json_object_put(fabrics);
}

static void quiesce_done(struct agent *a)
{
	json_object *ret = json_object_new_object(), *ranks = json_object_new_array();
	json_object *holders;
	int unreadable = 0;
	struct schema_err e;

	holders = inv_uverbs_holders(&a->o, &unreadable);
	if (holders && json_object_array_length(holders) > 0) {
		for (size_t i = 0; i < json_object_array_length(holders); i++)
			agent_log(a, LOG_WARNING, "uverbs holder: %s",
				  json_object_to_json_string(json_object_array_get_idx(holders, i)));
		holders_error(a, holders, &e);
		json_object_put(holders);
		json_object_put(ret);
		json_object_put(ranks);
		if (a->op.again) {
			/* The ranks were quiesced before this command: they stay so. */
			op_reply(a, sv_reply_error(&e, a->op.id));
			return;
		}
		a->op.fail = e;
		quiesce_rollback(a);
		return;
	}
	json_object_put(holders);
	for (struct rank *r = a->ranks; r; r = r->next) {
		json_object *o;

		if (!r->registered || !r->op_member)
			continue;
		o = rank_event_data(r);
		json_object_object_foreach(r->op_ret, k, v)
			if (strcmp(k, "state"))
				json_object_object_add(o, k, json_object_get(v));
		json_object_array_add(ranks, o);
	}
	json_object_object_add(ret, "ranks", ranks);
	json_object_object_add(ret, "gone", json_object_get(a->op.gone));
	json_object_object_add(ret, "holders-unreadable", json_object_new_int(unreadable));
	json_object_object_add(ret, "elapsed-ms", json_object_new_int64(agent_now_ms() - a->op.start));
	a->state = AS_QUIESCED;
	agent_log(a, LOG_NOTICE, "quiesced %zu rank(s) in %" PRId64 " ms",
		  json_object_array_length(ranks), agent_now_ms() - a->op.start);
	op_reply(a, sv_reply_return(ret, a->op.id));
}

static void quiesce_step(struct agent *a)
{
	struct op *op = &a->op;
	char who[200];

	if (op->phase == PH_ROLLBACK) {
		if (op_waiting(a) && agent_now_ms() < op->deadline)
			return;
		for (struct rank *r = a->ranks; r; r = r->next)
			if (r->registered && r->op_member && !r->op_answered)
				agent_log(a, LOG_WARNING, "rank %" PRId64 " did not confirm its resume", r->rank);
		a->state = AS_RUNNING;
		op_reply(a, sv_reply_error(&op->fail, op->id));
		return;
	}
	if (op_waiting(a)) {
		if (agent_now_ms() < op->deadline)
			return;
		for (struct rank *r = a->ranks; r; r = r->next) {
			if (r->registered && r->op_member && !r->op_answered) {
				describe_rank(r, who, sizeof(who));
				schema_err_set(&op->fail, "Timeout",
					   "%s did not answer quiesce within %" PRId64 " ms; the other ranks were resumed",
					   who, sv_arg_int(op->args, "deadline-ms", DEFAULT_DEADLINE_MS));
				break;
			}
		}
		quiesce_rollback(a);
		return;
	}
	for (struct rank *r = a->ranks; r; r = r->next) {
		if (r->registered && r->op_member && !r->op_ret) {
			describe_rank(r, who, sizeof(who));
			schema_err_set(&op->fail, "RankError", "%s could not quiesce: %s: %s; the ranks were resumed",
				   who, r->op_err.cls, r->op_err.desc);
			quiesce_rollback(a);
			return;
		}
	}
	quiesce_done(a);
}

static json_object *cmd_quiesce(struct agent *a, struct rank *from, json_object *args, json_object *id)
{
	(void)from;
	if (a->op.kind != OP_NONE)
		return busy_error(a, id);
	op_begin(a, OP_QUIESCE, id, args, sv_arg_int(args, "deadline-ms", DEFAULT_DEADLINE_MS));
	a->op.phase = PH_RANKS;
	/* Every quiesce says what lease it wants, none included (an older
	 * coordinator, which resumes by itself). */
	if (sv_arg(args, "lease-ms"))
		agent_lease_hold(a, sv_arg_int(args, "lease-ms", 0), a->op.start, false);
	else
		agent_lease_drop(a, "a quiesce without lease-ms");
	if (a->state == AS_QUIESCED) {
		/* Again: only the holder check can have changed. */
		a->op.again = true;
		quiesce_done(a);
		return NULL;
	}
	a->state = AS_QUIESCING;
	for (struct rank *r = a->ranks; r; r = r->next) {
		if (!r->registered)
			continue;
		r->op_member = true;
		send_quiesce(a, r, rank_deadline_ms(a));
	}
	agent_log(a, LOG_NOTICE, "quiesce: %zu rank(s)", op_waiting(a));
	return NULL;
}

/* ---- resume --------------------------------------------------------------------- */

static void hook_start(struct agent *a, const char *cmd)
{
	struct op *op = &a->op;
	int p[2];
	pid_t pid;

	if (pipe2(p, O_CLOEXEC) < 0) {
		op->hook_result = json_object_new_object();
		json_object_object_add(op->hook_result, "error", json_object_new_string(strerror(errno)));
		return;
	}
	pid = fork();
	if (pid == 0) {
		sigset_t none;
		int null = open("/dev/null", O_RDONLY);

		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		signal(SIGPIPE, SIG_DFL);
		setpgid(0, 0);
		dup2(null, 0);
		dup2(p[1], 1);
		dup2(p[1], 2);
		execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
		_exit(127);
	}
	close(p[1]);
	if (pid < 0) {
		close(p[0]);
		op->hook_result = json_object_new_object();
		json_object_object_add(op->hook_result, "error", json_object_new_string(strerror(errno)));
		return;
	}
	fcntl(p[0], F_SETFL, O_NONBLOCK);
	op->hook_pid = pid;
	op->hook_fd = p[0];
	op->hook_len = 0;
	op->hook_deadline = agent_now_ms() + sv_arg_int(op->args, "hook-timeout-ms", DEFAULT_HOOK_TIMEOUT_MS);
	agent_log(a, LOG_INFO, "resume hook started (pid %d): %s", (int)pid, cmd);
}

int agent_op_fd(struct agent *a)
{
	return a->op.hook_fd;
}

void agent_op_fd_ready(struct agent *a)
{
	struct op *op = &a->op;
	char buf[1024];
	ssize_t n;

	while ((n = read(op->hook_fd, buf, sizeof(buf))) > 0) {
		size_t room = sizeof(op->hook_out) - 1 - op->hook_len;
		size_t take = (size_t)n < room ? (size_t)n : room;

		memcpy(op->hook_out + op->hook_len, buf, take);
		op->hook_len += take;
	}
	if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
		close(op->hook_fd);
		op->hook_fd = -1;
	}
}

/* 1 when the hook has finished (or was never run), 0 while it runs. */
static int hook_poll(struct agent *a)
{
	struct op *op = &a->op;
	bool timed_out = false;
	int status;
	pid_t w;

	if (op->hook_pid <= 0)
		return 1;
	w = waitpid(op->hook_pid, &status, WNOHANG);
	if (w == 0) {
		if (agent_now_ms() < op->hook_deadline)
			return 0;
		kill(-op->hook_pid, SIGKILL);
		w = waitpid(op->hook_pid, &status, 0);
		timed_out = true;
	}
	if (op->hook_fd >= 0) {
		agent_op_fd_ready(a);
		if (op->hook_fd >= 0) {
			close(op->hook_fd);
			op->hook_fd = -1;
		}
	}
	op->hook_pid = -1;
	op->hook_out[op->hook_len] = '\0';
	op->hook_result = json_object_new_object();
	json_object_object_add(op->hook_result, "command",
			       json_object_new_string(sv_arg_str(op->args, "hook", "")));
	if (timed_out)
		json_object_object_add(op->hook_result, "timeout", json_object_new_boolean(1));
	if (w > 0 && WIFEXITED(status))
		json_object_object_add(op->hook_result, "exit-status", json_object_new_int(WEXITSTATUS(status)));
	else if (w > 0 && WIFSIGNALED(status))
		json_object_object_add(op->hook_result, "signal", json_object_new_int(WTERMSIG(status)));
	json_object_object_add(op->hook_result, "output", json_object_new_string(op->hook_out));
	json_object_object_add(op->hook_result, "elapsed-ms", json_object_new_int64(agent_now_ms() - op->start));
	agent_log(a, LOG_INFO, "resume hook: %s", json_object_to_json_string(op->hook_result));
	return 1;
}

static void resume_rescan_and_wait(struct agent *a)
{
	struct op *op = &a->op;
	struct schema_err e;

	if (!sv_arg_bool(op->args, "rescan", true)) {
		op->rescan_result = json_object_new_string("skipped");
	} else if (inv_pci_rescan(&a->o, &e) < 0) {
		agent_log(a, LOG_WARNING, "%s", e.desc);
		op->rescan_result = json_object_new_string(e.desc);
	} else {
		op->rescan_result = json_object_new_string("done");
	}
	op->phase = PH_LINK;
	op->link_start = agent_now_ms();
	op->link_deadline = op->link_start + sv_arg_int(op->args, "link-timeout-ms", DEFAULT_LINK_TIMEOUT_MS);
	op->next_link_poll = op->link_start;
}

static void resume_ranks(struct agent *a)
{
	struct op *op = &a->op;
	bool ready = false;

	op->fabrics = current_fabrics(a, &ready);
	op->verbs_ready = op->verbs_ready || ready;
	op->phase = PH_RANKS;
	op->deadline = agent_now_ms() + sv_arg_int(op->args, "deadline-ms", DEFAULT_DEADLINE_MS);
	for (struct rank *r = a->ranks; r; r = r->next) {
		if (!r->registered || r->state == RS_RUNNING)
			continue;
		r->op_member = true;
		send_resume(a, r, op->fabrics,
			    sv_arg_int(op->args, "link-timeout-ms", DEFAULT_LINK_TIMEOUT_MS));
	}
	agent_log(a, LOG_NOTICE, "resume: %zu rank(s) on %s", op_waiting(a),
		  json_object_to_json_string(op->fabrics));
}

static void resume_done(struct agent *a)
{
	struct op *op = &a->op;
	json_object *ret = json_object_new_object();
	struct schema_err fail = { .cls = "" };
	json_object *ranks = member_returns(a, "resume", "could not resume", &fail);

	a->state = AS_RUNNING;
	if (fail.cls[0]) {
		json_object_put(ret);
		json_object_put(ranks);
		op_reply(a, sv_reply_error(&fail, op->id));
		return;
	}
	json_object_object_add(ret, "fabrics", json_object_get(op->fabrics));
	json_object_object_add(ret, "verbs-ready", json_object_new_boolean(op->verbs_ready));
	json_object_object_add(ret, "link-wait-ms", json_object_new_int64(op->link_wait_ms));
	json_object_object_add(ret, "rescan", json_object_get(op->rescan_result));
	if (op->hook_result)
		json_object_object_add(ret, "hook", json_object_get(op->hook_result));
	json_object_object_add(ret, "ranks", ranks);
	json_object_object_add(ret, "gone", json_object_get(op->gone));
	json_object_object_add(ret, "elapsed-ms", json_object_new_int64(agent_now_ms() - op->start));
	op_reply(a, sv_reply_return(ret, op->id));
}

static void resume_step(struct agent *a)
{
	struct op *op = &a->op;
	int64_t now = agent_now_ms();

	if (op->phase == PH_HOOK) {
		if (!hook_poll(a))
			return;
		resume_rescan_and_wait(a);
	}
	if (op->phase == PH_LINK) {
		if (op->want_verbs && now >= op->next_link_poll) {
			op->verbs_ready = inv_verbs_active(&a->o);
			op->next_link_poll = now + LINK_POLL_MS;
		}
		if (op->want_verbs && !op->verbs_ready && now < op->link_deadline)
			return;
		op->link_wait_ms = op->want_verbs ? agent_now_ms() - op->link_start : 0;
		if (op->want_verbs && !op->verbs_ready)
			agent_log(a, LOG_WARNING, "no verbs device with an ACTIVE port after %" PRId64 " ms; resuming on what there is",
				  op->link_wait_ms);
		resume_ranks(a);
	}
	if (op->phase == PH_RANKS && (!op_waiting(a) || agent_now_ms() >= op->deadline))
		resume_done(a);
}

static void resume_begin(struct agent *a, json_object *id, json_object *args, bool want_verbs)
{
	/* The host resumes: nothing left for a lease to guard. */
	agent_lease_drop(a, "resume");
	op_begin(a, OP_RESUME, id, args, 0);
	a->state = AS_RESUMING;
	a->op.want_verbs = want_verbs;
	a->op.phase = PH_HOOK;
	if (sv_arg(args, "hook"))
		hook_start(a, sv_arg_str(args, "hook", ""));
}

static json_object *cmd_resume(struct agent *a, struct rank *from, json_object *args, json_object *id)
{
	json_object *f = sv_arg(args, "fabrics");
	bool want_verbs = false;

	(void)from;
	for (size_t i = 0; f && i < json_object_array_length(f); i++) {
		const char *n = json_object_get_string(json_object_array_get_idx(f, i));

		/* "verbs" or "tcp": the table checked. */
		if (!strcmp(n, "verbs"))
			want_verbs = true;
	}
	if (a->op.kind != OP_NONE)
		return busy_error(a, id);
	if (a->state != AS_QUIESCED)
		return errorf(id, "InvalidState", "resume needs a quiesced agent; the agent is %s",
			      agent_state_name(a->state));
	resume_begin(a, id, args, want_verbs);
	return NULL;
}

/* The lease ran out while quiesced: what a `resume` with "fabrics":
 * ["verbs", "tcp"] does (hook aside: only the coordinator knows one),
 * with nobody to answer. */
void agent_lease_resume(struct agent *a, int64_t link_timeout_ms)
{
	json_object *args = json_object_new_object(), *f = json_object_new_array();

	json_object_array_add(f, json_object_new_string("verbs"));
	json_object_array_add(f, json_object_new_string("tcp"));
	json_object_object_add(args, "fabrics", f);
	json_object_object_add(args, "link-timeout-ms", json_object_new_int64(link_timeout_ms));
	resume_begin(a, NULL, args, true);
	a->op.by_lease = true;
	json_object_put(args);
	agent_op_step(a);
}

void agent_quiesce_abort(struct agent *a, const struct schema_err *why)
{
	a->op.fail = *why;
	quiesce_rollback(a);
}

/* ---- renew ------------------------------------------------------------------------ */

/*
 * The coordinator is still there: the lease starts over (with lease-ms, a
 * new length; also a new lease on a quiesce that had none).  Never an
 * error for want of a quiesce: a renew that crosses a resume, or the
 * lease running out, must be harmless; the reply says what is held.
 */
static json_object *cmd_renew(struct agent *a, struct rank *from, json_object *args, json_object *id)
{
	json_object *r = json_object_new_object();

	(void)from;
	if (agent_lease_holdable(a) && (a->lease.held || sv_arg(args, "lease-ms")))
		agent_lease_hold(a, sv_arg_int(args, "lease-ms", a->lease.length_ms), agent_now_ms(), false);
	json_object_object_add(r, "state", json_object_new_string(agent_state_name(a->state)));
	json_object_object_add(r, "lease-ms-left", lease_left_json(a));
	return sv_reply_return(r, id);
}

/* ---- peers ------------------------------------------------------------------------ */

/*
 * Where every rank of the cluster is now, gathered by the coordinator
 * from the `resume` replies of all agents: each local rank gets the
 * entries of its own job, so a pair reconnects over whatever both ends
 * have now, even when the network the move took away was the only one
 * they knew each other by.
 */
static json_object *peers_for(json_object *all, struct rank *r)
{
	json_object *mine = json_object_new_array();

	for (size_t i = 0; i < json_object_array_length(all); i++) {
		json_object *e = json_object_array_get_idx(all, i), *j, *n, *ad, *o;

		json_object_object_get_ex(e, "jobid", &j);
		json_object_object_get_ex(e, "rank", &n);
		json_object_object_get_ex(e, "addrs", &ad);
		if (strcmp(json_object_get_string(j), r->jobid) || json_object_get_int64(n) == r->rank)
			continue;
		o = json_object_new_object();
		json_object_object_add(o, "rank", json_object_get(n));
		json_object_object_add(o, "addrs", json_object_get(ad));
		json_object_array_add(mine, o);
	}
	return mine;
}

static void peers_done(struct agent *a)
{
	struct op *op = &a->op;
	json_object *ret = json_object_new_object();
	struct schema_err fail = { .cls = "" };
	json_object *ranks = member_returns(a, "peers", "could not take the peers' addresses", &fail);

	if (fail.cls[0]) {
		json_object_put(ret);
		json_object_put(ranks);
		op_reply(a, sv_reply_error(&fail, op->id));
		return;
	}
	json_object_object_add(ret, "ranks", ranks);
	json_object_object_add(ret, "gone", json_object_get(op->gone));
	json_object_object_add(ret, "elapsed-ms", json_object_new_int64(agent_now_ms() - op->start));
	op_reply(a, sv_reply_return(ret, op->id));
}

static void peers_step(struct agent *a)
{
	if (!op_waiting(a) || agent_now_ms() >= a->op.deadline)
		peers_done(a);
}

static json_object *cmd_peers(struct agent *a, struct rank *from, json_object *args, json_object *id)
{
	json_object *all = sv_arg(args, "ranks");

	(void)from;
	if (a->op.kind != OP_NONE)
		return busy_error(a, id);
	op_begin(a, OP_PEERS, id, args, sv_arg_int(args, "deadline-ms", DEFAULT_DEADLINE_MS));
	for (struct rank *r = a->ranks; r; r = r->next) {
		json_object *rargs;

		if (!r->registered)
			continue;
		rargs = json_object_new_object();
		json_object_object_add(rargs, "ranks", peers_for(all, r));
		json_object_object_add(rargs, "deadline-ms", json_object_new_int64(rank_deadline_ms(a)));
		if (sv_arg(args, "wait"))
			json_object_object_add(rargs, "wait", json_object_get(sv_arg(args, "wait")));
		r->op_member = true;
		agent_to_rank(a, r, "peers", rargs);
	}
	agent_log(a, LOG_NOTICE, "peers: %zu address list(s) to %zu rank(s)",
		  json_object_array_length(all), op_waiting(a));
	peers_step(a);
	return NULL;
}

/* ---- driving ---------------------------------------------------------------------- */

void agent_op_step(struct agent *a)
{
	live_step(a);
	if (a->op.kind == OP_QUIESCE)
		quiesce_step(a);
	else if (a->op.kind == OP_RESUME)
		resume_step(a);
	else if (a->op.kind == OP_PEERS)
		peers_step(a);
}

static int64_t op_timer(struct agent *a)
{
	struct op *op = &a->op;
	int64_t now = agent_now_ms();

	switch (op->kind) {
	case OP_NONE:
		return 0;
	case OP_QUIESCE:
	case OP_PEERS:
		return op->deadline;
	case OP_RESUME:
		break;
	}
	if (op->phase == PH_HOOK)
		return op->hook_pid > 0 ? now + HOOK_POLL_MS : now;
	if (op->phase == PH_LINK)
		return op->next_link_poll < op->link_deadline ? op->next_link_poll : op->link_deadline;
	return op->deadline;
}

int64_t agent_op_timer(struct agent *a)
{
	int64_t t = op_timer(a);

	if (a->live.active && (!t || a->live.deadline < t))
		t = a->live.deadline;
	return t;
}
