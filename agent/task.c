/* SPDX-License-Identifier: MIT */
/*
 * kawarimi-agent: the task in progress, at most one at a time (a quiesce,
 * a resume or a peers).  It never blocks the loop: rank replies, rank
 * deaths, the hook's exit and timers all come back through
 * agent_task_step(), which advances the task as far as it can.  Here: what
 * every task does (begin, answer, which ranks still owe an answer), the
 * messages to the ranks, and the timers.
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

#define HOOK_POLL_MS 50

int64_t agent_rank_deadline_ms(struct agent *a)
{
	int64_t left = a->task.deadline - agent_now_ms();

	/* A little less than ours, so the rank's own Timeout arrives first. */
	left -= left / 10;
	return left < 1 ? 1 : left;
}

void agent_send_quiesce(struct agent *a, struct rank *r, int64_t deadline_ms)
{
	json_object *args = json_object_new_object();

	json_object_object_add(args, "deadline-ms", json_object_new_int64(deadline_ms));
	r->state = RS_QUIESCING;
	agent_to_rank(a, r, "quiesce", args);
}

/* ---- every task ---------------------------------------------------------------- */

void agent_task_begin(struct agent *a, enum task_kind kind, json_object *id, json_object *args,
		     int64_t deadline_ms)
{
	struct task *task = &a->task;

	memset(task, 0, sizeof(*task));
	task->kind = kind;
	task->id = id ? json_object_get(id) : NULL;
	task->args = args ? json_object_get(args) : NULL;
	task->start = agent_now_ms();
	task->generation = a->ch.generation;
	task->deadline = task->start + deadline_ms;
	task->gone = json_object_new_array();
	task->hook_fd = -1;
	task->hook_pid = -1;
	for (struct rank *r = a->ranks; r; r = r->next) {
		r->task_member = false;
		r->task_answered = false;
		json_object_put(r->task_ret);
		r->task_ret = NULL;
	}
}

void agent_task_fini(struct agent *a)
{
	struct task *task = &a->task;


	if (task->hook_pid > 0) {
		kill(-task->hook_pid, SIGKILL);
		waitpid(task->hook_pid, NULL, 0);
	}
	if (task->hook_fd >= 0)
		close(task->hook_fd);
	json_object_put(task->id);
	json_object_put(task->args);
	json_object_put(task->gone);
	json_object_put(task->hook_result);
	json_object_put(task->rescan_result);
	json_object_put(task->fabrics);
	memset(task, 0, sizeof(*task));
	task->hook_fd = -1;
	task->hook_pid = -1;
}

void agent_task_reply(struct agent *a, json_object *reply)
{
	if (a->task.by_lease) {
		agent_log(a, LOG_NOTICE, "resume after the lease ran out: %.300s",
			  json_object_to_json_string(reply));
		json_object_put(reply);
	} else if (a->task.generation == a->ch.generation) {
		agent_to_host(a, reply);
	} else {
		agent_log(a, LOG_INFO, "the host that asked has gone; reply dropped: %.200s",
			  json_object_to_json_string(reply));
		json_object_put(reply);
	}
	agent_task_fini(a);
}

/* Members still owing an answer (ranks gone are no longer members). */
size_t agent_task_waiting(struct agent *a)
{
	size_t n = 0;

	for (struct rank *r = a->ranks; r; r = r->next)
		if (r->registered && r->task_member && !r->task_answered)
			n++;
	return n;
}

void agent_describe_rank(struct rank *r, char *buf, size_t n)
{
	snprintf(buf, n, "rank %" PRId64 " of job %s (pid %" PRId64 ")", r->rank, r->jobid, r->pid);
}

json_object *agent_current_fabrics(struct agent *a, bool *verbs_ready)
{
	bool active = false;
	json_object *verbs = agent_inv_verbs(&a->o, true, &active), *net = agent_inv_netdevs(&a->o);
	json_object *f = agent_inv_fabrics(verbs, net);

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
json_object *agent_task_returns(struct agent *a, const char *cmd, const char *failed,
				   struct schema_err *fail)
{
	json_object *ranks = json_object_new_array();
	char who[200];

	for (struct rank *r = a->ranks; r; r = r->next) {
		json_object *o;

		if (!r->registered || !r->task_member)
			continue;
		o = agent_rank_event_data(r);
		if (r->task_ret) {
			json_object_object_foreach(r->task_ret, k, v)
				if (strcmp(k, "state"))
					json_object_object_add(o, k, json_object_get(v));
		} else if (!fail->cls[0]) {
			agent_describe_rank(r, who, sizeof(who));
			if (r->task_answered)
				schema_err_set(fail, "RankError", "%s %s: %s: %s",
					   who, failed, r->task_err.cls, r->task_err.desc);
			else
				schema_err_set(fail, "Timeout", "%s did not answer %s within %" PRId64 " ms",
					   who, cmd, agent_arg_int(a->task.args, "deadline-ms", DEFAULT_DEADLINE_MS));
		}
		json_object_array_add(ranks, o);
	}
	return ranks;
}

void agent_send_resume(struct agent *a, struct rank *r, json_object *fabrics, int64_t link_ms)
{
	json_object *args = json_object_new_object();

	json_object_object_add(args, "fabrics", json_object_get(fabrics));
	json_object_object_add(args, "link-timeout-ms", json_object_new_int64(link_ms));
	/* The rank answers with what it has before we give up on it. */
	json_object_object_add(args, "deadline-ms", json_object_new_int64(agent_rank_deadline_ms(a)));
	if (agent_arg(a->task.args, "wait"))
		json_object_object_add(args, "wait", json_object_get(agent_arg(a->task.args, "wait")));
	r->state = RS_RESUMING;
	agent_to_rank(a, r, "resume", args);
}

/* ---- driving ---------------------------------------------------------------------- */

void agent_task_step(struct agent *a)
{
	agent_live_step(a);
	if (a->task.kind == TASK_QUIESCE)
		agent_quiesce_step(a);
	else if (a->task.kind == TASK_RESUME)
		agent_resume_step(a);
	else if (a->task.kind == TASK_PEERS)
		agent_peers_step(a);
}

static int64_t task_timer(struct agent *a)
{
	struct task *task = &a->task;
	int64_t now = agent_now_ms();

	switch (task->kind) {
	case TASK_NONE:
		return 0;
	case TASK_QUIESCE:
	case TASK_PEERS:
		return task->deadline;
	case TASK_RESUME:
		break;
	}
	if (task->stage == STAGE_HOOK)
		return task->hook_pid > 0 ? now + HOOK_POLL_MS : now;
	if (task->stage == STAGE_LINK)
		return task->next_link_poll < task->link_deadline ? task->next_link_poll : task->link_deadline;
	return task->deadline;
}

int64_t agent_task_timer(struct agent *a)
{
	int64_t t = task_timer(a);

	if (a->live.active && (!t || a->live.deadline < t))
		t = a->live.deadline;
	return t;
}
