/* SPDX-License-Identifier: MIT */
/*
 * kawarimi-agent: the quiesce task.  Every rank is told to quiesce; once
 * all have answered, no process may hold a uverbs device (the holder
 * check); a rank that fails, does not answer in time or a holder rolls
 * the quiesce back: the ranks are resumed and the command fails.
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

#define ROLLBACK_WAIT_MS 10000

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
	json_object *fabrics = agent_current_fabrics(a, NULL);

	agent_log(a, LOG_WARNING, "quiesce failed (%s: %s); resuming the ranks", a->task.fail.cls,
		  a->task.fail.desc);
	agent_lease_drop(a, "the quiesce failed");
	a->task.stage = STAGE_ROLLBACK;
	a->task.deadline = agent_now_ms() + ROLLBACK_WAIT_MS;
	for (struct rank *r = a->ranks; r; r = r->next) {
		if (!r->registered || r->state == RS_RUNNING)
			continue;
		/* A rank that never answered gets its resume queued behind the
		 * quiesce, but nobody waits for it. */
		r->task_member = r->task_answered;
		r->task_answered = false;
		agent_send_resume(a, r, fabrics, 0);
	}
	json_object_put(fabrics);
}

static void quiesce_done(struct agent *a)
{
	json_object *ret = json_object_new_object(), *ranks = json_object_new_array();
	json_object *holders;
	int unreadable = 0;
	struct schema_err e;

	holders = agent_inv_uverbs_holders(&a->o, &unreadable);
	if (holders && json_object_array_length(holders) > 0) {
		for (size_t i = 0; i < json_object_array_length(holders); i++)
			agent_log(a, LOG_WARNING, "uverbs holder: %s",
				  json_object_to_json_string(json_object_array_get_idx(holders, i)));
		holders_error(a, holders, &e);
		json_object_put(holders);
		json_object_put(ret);
		json_object_put(ranks);
		if (a->task.again) {
			/* The ranks were quiesced before this command: they stay so. */
			agent_task_reply(a, agent_reply_error(&e, a->task.id));
			return;
		}
		a->task.fail = e;
		quiesce_rollback(a);
		return;
	}
	json_object_put(holders);
	for (struct rank *r = a->ranks; r; r = r->next) {
		json_object *o;

		if (!r->registered || !r->task_member)
			continue;
		o = agent_rank_event_data(r);
		json_object_object_foreach(r->task_ret, k, v)
			if (strcmp(k, "state"))
				json_object_object_add(o, k, json_object_get(v));
		json_object_array_add(ranks, o);
	}
	json_object_object_add(ret, "ranks", ranks);
	json_object_object_add(ret, "gone", json_object_get(a->task.gone));
	json_object_object_add(ret, "holders-unreadable", json_object_new_int(unreadable));
	json_object_object_add(ret, "elapsed-ms", json_object_new_int64(agent_now_ms() - a->task.start));
	a->state = AS_QUIESCED;
	agent_log(a, LOG_NOTICE, "quiesced %zu rank(s) in %" PRId64 " ms",
		  json_object_array_length(ranks), agent_now_ms() - a->task.start);
	agent_task_reply(a, agent_reply_return(ret, a->task.id));
}

void agent_quiesce_step(struct agent *a)
{
	struct task *task = &a->task;
	char who[200];

	if (task->stage == STAGE_ROLLBACK) {
		if (agent_task_waiting(a) && agent_now_ms() < task->deadline)
			return;
		for (struct rank *r = a->ranks; r; r = r->next)
			if (r->registered && r->task_member && !r->task_answered)
				agent_log(a, LOG_WARNING, "rank %" PRId64 " did not confirm its resume", r->rank);
		a->state = AS_RUNNING;
		agent_task_reply(a, agent_reply_error(&task->fail, task->id));
		return;
	}
	if (agent_task_waiting(a)) {
		if (agent_now_ms() < task->deadline)
			return;
		for (struct rank *r = a->ranks; r; r = r->next) {
			if (r->registered && r->task_member && !r->task_answered) {
				agent_describe_rank(r, who, sizeof(who));
				schema_err_set(&task->fail, "Timeout",
					   "%s did not answer quiesce within %" PRId64 " ms; the other ranks were resumed",
					   who, agent_arg_int(task->args, "deadline-ms", DEFAULT_DEADLINE_MS));
				break;
			}
		}
		quiesce_rollback(a);
		return;
	}
	for (struct rank *r = a->ranks; r; r = r->next) {
		if (r->registered && r->task_member && !r->task_ret) {
			agent_describe_rank(r, who, sizeof(who));
			schema_err_set(&task->fail, "RankError", "%s could not quiesce: %s: %s; the ranks were resumed",
				   who, r->task_err.cls, r->task_err.desc);
			quiesce_rollback(a);
			return;
		}
	}
	quiesce_done(a);
}

json_object *agent_cmd_quiesce(struct agent *a, struct rank *from, json_object *args, json_object *id)
{
	(void)from;
	if (a->task.kind != TASK_NONE)
		return agent_busy_error(a, id);
	agent_task_begin(a, TASK_QUIESCE, id, args, agent_arg_int(args, "deadline-ms", DEFAULT_DEADLINE_MS));
	a->task.stage = STAGE_RANKS;
	/* Every quiesce says what lease it wants, none included (an older
	 * coordinator, which resumes by itself). */
	if (agent_arg(args, "lease-ms"))
		agent_lease_hold(a, agent_arg_int(args, "lease-ms", 0), a->task.start, false);
	else
		agent_lease_drop(a, "a quiesce without lease-ms");
	if (a->state == AS_QUIESCED) {
		/* Again: only the holder check can have changed. */
		a->task.again = true;
		quiesce_done(a);
		return NULL;
	}
	a->state = AS_QUIESCING;
	for (struct rank *r = a->ranks; r; r = r->next) {
		if (!r->registered)
			continue;
		r->task_member = true;
		agent_send_quiesce(a, r, agent_rank_deadline_ms(a));
	}
	agent_log(a, LOG_NOTICE, "quiesce: %zu rank(s)", agent_task_waiting(a));
	return NULL;
}

void agent_quiesce_abort(struct agent *a, const struct schema_err *why)
{
	a->task.fail = *why;
	quiesce_rollback(a);
}
