/* SPDX-License-Identifier: MIT */
/*
 * kawarimi-agent: the command table (it mirrors docs/symvirt-protocol.md;
 * tests/symvirt/doc_commands.py checks both ways), the commands that
 * answer at once, and the ranks' side: register, unregister, replies.
 * quiesce, resume and peers start a task (task.c).
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

#include "agent_priv.h"

#define DEFAULT_STATUS_DEADLINE_MS 2000

static json_object *cmd_hello(struct agent *a, struct rank *from, json_object *args, json_object *id);
static json_object *cmd_query_commands(struct agent *a, struct rank *from, json_object *args, json_object *id);
static json_object *cmd_inventory(struct agent *a, struct rank *from, json_object *args, json_object *id);
static json_object *cmd_status(struct agent *a, struct rank *from, json_object *args, json_object *id);
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
	{ "quiesce", SCHEMA_HOST, agent_cmd_quiesce },
	{ "resume", SCHEMA_HOST, agent_cmd_resume },
	{ "peers", SCHEMA_HOST, agent_cmd_peers },
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
		return agent_reply_error(&e, id);
	if (kind != SCHEMA_MSG_COMMAND) {
		schema_err_set(&e, "ProtocolError", "only commands are accepted here, not a %s",
			   kind == SCHEMA_MSG_REPLY ? "reply" : "event");
		return agent_reply_error(&e, id);
	}
	json_object_object_get_ex(msg, "execute", &name);
	json_object_object_get_ex(msg, "arguments", &args);
	c = agent_find_command(json_object_get_string(name), leg);
	spec = schema_find(json_object_get_string(name), leg);
	if (!c || !spec) {
		schema_err_set(&e, "CommandNotFound", "the agent has no %s command \"%s\"; `query-commands` lists them",
			   schema_leg_name(leg), json_object_get_string(name));
		return agent_reply_error(&e, id);
	}
	if (schema_check_args(args, spec->args, &e) < 0) {
		char desc[AGENT_DESC_MAX];

		snprintf(desc, sizeof(desc), "%s: %.900s", c->name, e.desc);
		snprintf(e.desc, sizeof(e.desc), "%s", desc);
		return agent_reply_error(&e, id);
	}
	return c->fn(a, from, args, id);
}

/* ---- simple commands ------------------------------------------------------ */

json_object *agent_errorf(json_object *id, const char *cls, const char *fmt, const char *arg)
{
	struct schema_err e;

	schema_err_set(&e, cls, fmt, arg);
	return agent_reply_error(&e, id);
}

static json_object *cmd_hello(struct agent *a, struct rank *from, json_object *args, json_object *id)
{
	json_object *r = json_object_new_object();
	char host[256] = "";

	(void)from;
	if (agent_arg(args, "client"))
		agent_log(a, LOG_INFO, "hello from %s", agent_arg_str(args, "client", ""));
	gethostname(host, sizeof(host) - 1);
	json_object_object_add(r, "protocol", json_object_new_int(SYMVIRT_PROTOCOL_VERSION));
	json_object_object_add(r, "agent", json_object_new_string(KAWARIMI_VERSION));
	json_object_object_add(r, "hostname", json_object_new_string(host));
	json_object_object_add(r, "pid", json_object_new_int(getpid()));
	json_object_object_add(r, "state", json_object_new_string(agent_state_name(a->state)));
	return agent_reply_return(r, id);
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
	return agent_reply_return(r, id);
}

static json_object *cmd_inventory(struct agent *a, struct rank *from, json_object *args,
				  json_object *id)
{
	json_object *r = json_object_new_object(), *pci, *verbs, *net;
	struct schema_err e;
	bool active;

	(void)from;
	(void)args;
	pci = agent_inv_pci(&a->o, &e);
	if (!pci && a->o.pci_dump) {
		json_object_put(r);
		return agent_reply_error(&e, id);
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
	verbs = agent_inv_verbs(&a->o, a->state == AS_RUNNING || a->state == AS_RESUMING, &active);
	net = agent_inv_netdevs(&a->o);
	json_object_object_add(r, "pci", pci);
	json_object_object_add(r, "verbs", json_object_get(verbs));
	json_object_object_add(r, "netdevs", json_object_get(net));
	json_object_object_add(r, "fabrics", agent_inv_fabrics(verbs, net));
	json_object_put(verbs);
	json_object_put(net);
	return agent_reply_return(r, id);
}

static const char *task_name(enum task_kind k)
{
	static const char *const names[] = { NULL, "quiesce", "resume", "peers" };

	return names[k];
}

/* Another task is under way; none answers a resume the lease started. */
json_object *agent_busy_error(struct agent *a, json_object *id)
{
	if (a->task.by_lease)
		return agent_errorf(id, "InvalidState", "%s", "the lease ran out and the agent is resuming the ranks "
			      "by itself (event lease-expired); renew the lease sooner");
	return agent_errorf(id, "InvalidState", "a %s is in progress; wait for its reply", task_name(a->task.kind));
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
	json_object_object_add(o, "state", json_object_new_string(agent_rank_state_name(r->state)));
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
	json_object_object_add(r, "operation", a->task.kind ? json_object_new_string(task_name(a->task.kind)) : NULL);
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
	if (!agent_arg_bool(args, "ranks", false))
		return agent_reply_return(status_json(a), id);
	if (a->live.active)
		return agent_errorf(id, "InvalidState", "%s", "a status of the ranks is in progress; wait for its reply");
	a->live.active = true;
	a->live.id = id ? json_object_get(id) : NULL;
	a->live.deadline = agent_now_ms() + agent_arg_int(args, "deadline-ms", DEFAULT_STATUS_DEADLINE_MS);
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
	char text[AGENT_DESC_MAX + 80];

	snprintf(text, sizeof(text), fmt, a, b);
	json_object_put(r->live);
	r->live = json_object_new_object();
	json_object_object_add(r->live, "error", json_object_new_string(text));
}

void agent_live_step(struct agent *a)
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
		agent_to_host(a, agent_reply_return(status_json(a), a->live.id));
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

json_object *agent_rank_event_data(struct rank *r)
{
	json_object *d = json_object_new_object();

	json_object_object_add(d, "rank", json_object_new_int64(r->rank));
	json_object_object_add(d, "pid", json_object_new_int64(r->pid));
	json_object_object_add(d, "jobid", json_object_new_string(r->jobid));
	return d;
}


/* What a rank says it is (the table allows only these two): an agent
 * that (re)starts learns so of a quiesce it never saw.  Absent (an older
 * BTL): running. */
static enum rank_state register_state(json_object *args)
{
	return strcmp(agent_arg_str(args, "state", "running"), "quiesced") ? RS_RUNNING : RS_QUIESCED;
}

static json_object *cmd_register(struct agent *a, struct rank *r, json_object *args, json_object *id)
{
	json_object *ret;

	if (r->registered)
		return agent_errorf(id, "InvalidState", "this connection already registered rank %s; one rank per connection",
			      r->jobid);
	r->registered = true;
	r->state = register_state(args);
	r->pid = agent_arg_int(args, "pid", 0);
	r->rank = agent_arg_int(args, "rank", 0);
	snprintf(r->jobid, sizeof(r->jobid), "%s", agent_arg_str(args, "jobid", ""));
	r->paths_offered = json_object_get(agent_arg(args, "paths"));
	agent_log(a, LOG_INFO, "rank %" PRId64 " of job %s (pid %" PRId64 ") registered %s",
		  r->rank, r->jobid, r->pid, agent_rank_state_name(r->state));
	ret = json_object_new_object();
	json_object_object_add(ret, "version", json_object_new_int(SYMVIRT_PROTOCOL_VERSION));
	/* The reply goes first: a quiesce may follow at once. */
	agent_rank_send(a, r, agent_reply_return(ret, id));
	agent_rank_registered(a, r);
	return NULL;
}

static json_object *cmd_unregister(struct agent *a, struct rank *r, json_object *args, json_object *id)
{
	(void)args;
	if (!r->registered)
		return agent_errorf(id, "InvalidState", "%s", "unregister before register");
	agent_rank_gone(a, r, "unregister");
	r->registered = false;
	r->npending = 0;
	agent_task_step(a);
	return agent_reply_return(NULL, id);
}

/* A rank that registers quiesced during a resume missed it: it gets one
 * now, or it would stay quiesced with the agent running. */
static void resume_late_rank(struct agent *a, struct rank *r)
{
	struct task *task = &a->task;
	json_object *fabrics = task->fabrics ? json_object_get(task->fabrics) : agent_current_fabrics(a, NULL);

	r->task_member = task->kind == TASK_RESUME;
	r->task_answered = false;
	agent_send_resume(a, r, fabrics, task->kind == TASK_RESUME ?
		    agent_arg_int(task->args, "link-timeout-ms", DEFAULT_LINK_TIMEOUT_MS) : 0);
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
	struct task *task = &a->task;

	if (a->state == AS_RUNNING) {
		agent_log(a, LOG_NOTICE, "rank %" PRId64 " of job %s (pid %" PRId64 ") registered quiesced: "
			  "adopting its quiesce with a lease of %" PRId64 " ms", r->rank, r->jobid, r->pid,
			  a->o.adopt_lease_ms);
		a->state = AS_QUIESCED;
		agent_lease_hold(a, a->o.adopt_lease_ms, agent_now_ms(), true);
		for (struct rank *x = a->ranks; x; x = x->next)
			if (x != r && x->registered && x->state == RS_RUNNING)
				agent_send_quiesce(a, x, DEFAULT_DEADLINE_MS);
	} else if (task->kind == TASK_QUIESCE && task->stage == STAGE_RANKS) {
		/* A member like the others; it answers at once. */
		r->task_member = true;
		r->task_answered = false;
		agent_send_quiesce(a, r, agent_rank_deadline_ms(a));
	} else if ((task->kind == TASK_RESUME && task->stage == STAGE_RANKS) ||
		   (task->kind == TASK_QUIESCE && task->stage == STAGE_ROLLBACK)) {
		resume_late_rank(a, r);
	}
	/* Else quiesced already, or a resume before its ranks phase, which
	 * finds the rank by its state. */
}

void agent_rank_registered(struct agent *a, struct rank *r)
{
	json_object *d = agent_rank_event_data(r);

	json_object_object_add(d, "paths", json_object_get(r->paths_offered));
	agent_to_host(a, agent_event("RANK_REGISTERED", d));
	if (r->state == RS_QUIESCED) {
		adopt_quiesced(a, r);
		return;
	}
	/* A rank that starts while the others are quiesced must not open
	 * the HCA either. */
	if (a->state == AS_QUIESCING && a->task.kind == TASK_QUIESCE && a->task.stage == STAGE_RANKS) {
		r->task_member = true;
		r->task_answered = false;
		agent_send_quiesce(a, r, agent_rank_deadline_ms(a));
	} else if (a->state == AS_QUIESCED) {
		agent_send_quiesce(a, r, DEFAULT_DEADLINE_MS);
	}
}

void agent_rank_gone(struct agent *a, struct rank *r, const char *reason)
{
	json_object *d;

	if (!r->registered)
		return;
	agent_log(a, LOG_INFO, "rank %" PRId64 " (pid %" PRId64 ") gone: %s", r->rank, r->pid, reason);
	d = agent_rank_event_data(r);
	json_object_object_add(d, "reason", json_object_new_string(reason));
	agent_to_host(a, agent_event("RANK_UNREGISTERED", d));
	if (a->task.kind != TASK_NONE && r->task_member) {
		json_object *g = agent_rank_event_data(r);

		json_object_object_add(g, "reason", json_object_new_string(reason));
		json_object_array_add(a->task.gone, g);
		r->task_member = false;
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
	bool for_op = r->task_member && !r->task_answered &&
		      ((a->task.kind == TASK_QUIESCE && a->task.stage == STAGE_RANKS && !strcmp(cmd, "quiesce")) ||
		       ((a->task.stage == STAGE_ROLLBACK ||
			 (a->task.kind == TASK_RESUME && a->task.stage == STAGE_RANKS)) && !strcmp(cmd, "resume")) ||
		       (a->task.kind == TASK_PEERS && !strcmp(cmd, "peers")));

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
	r->task_answered = true;
	json_object_put(r->task_ret);
	r->task_ret = ret ? json_object_get(ret) : NULL;
	if (!ret)
		r->task_err = *e;
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
	agent_task_step(a);
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
	if (agent_lease_holdable(a) && (a->lease.held || agent_arg(args, "lease-ms")))
		agent_lease_hold(a, agent_arg_int(args, "lease-ms", a->lease.length_ms), agent_now_ms(), false);
	json_object_object_add(r, "state", json_object_new_string(agent_state_name(a->state)));
	json_object_object_add(r, "lease-ms-left", lease_left_json(a));
	return agent_reply_return(r, id);
}
