/* SPDX-License-Identifier: MIT */
/*
 * kawarimi-agent: the resume task (the hook, PCI rescan, the wait for a
 * verbs port, then the ranks), the resume the agent starts by itself when
 * a lease runs out, and the peers task (each rank gets where its peers
 * are now).
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

#define DEFAULT_HOOK_TIMEOUT_MS 60000
#define LINK_POLL_MS 200

/* ---- resume --------------------------------------------------------------------- */

static void hook_start(struct agent *a, const char *cmd)
{
	struct task *task = &a->task;
	int p[2];
	pid_t pid;

	if (pipe2(p, O_CLOEXEC) < 0) {
		task->hook_result = json_object_new_object();
		json_object_object_add(task->hook_result, "error", json_object_new_string(strerror(errno)));
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
		task->hook_result = json_object_new_object();
		json_object_object_add(task->hook_result, "error", json_object_new_string(strerror(errno)));
		return;
	}
	fcntl(p[0], F_SETFL, O_NONBLOCK);
	task->hook_pid = pid;
	task->hook_fd = p[0];
	task->hook_len = 0;
	task->hook_deadline = agent_now_ms() + agent_arg_int(task->args, "hook-timeout-ms", DEFAULT_HOOK_TIMEOUT_MS);
	agent_log(a, LOG_INFO, "resume hook started (pid %d): %s", (int)pid, cmd);
}

int agent_task_fd(struct agent *a)
{
	return a->task.hook_fd;
}

void agent_task_fd_ready(struct agent *a)
{
	struct task *task = &a->task;
	char buf[1024];
	ssize_t n;

	while ((n = read(task->hook_fd, buf, sizeof(buf))) > 0) {
		size_t room = sizeof(task->hook_out) - 1 - task->hook_len;
		size_t take = (size_t)n < room ? (size_t)n : room;

		memcpy(task->hook_out + task->hook_len, buf, take);
		task->hook_len += take;
	}
	if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
		close(task->hook_fd);
		task->hook_fd = -1;
	}
}

/* 1 when the hook has finished (or was never run), 0 while it runs. */
static int hook_poll(struct agent *a)
{
	struct task *task = &a->task;
	bool timed_out = false;
	int status;
	pid_t w;

	if (task->hook_pid <= 0)
		return 1;
	w = waitpid(task->hook_pid, &status, WNOHANG);
	if (w == 0) {
		if (agent_now_ms() < task->hook_deadline)
			return 0;
		kill(-task->hook_pid, SIGKILL);
		w = waitpid(task->hook_pid, &status, 0);
		timed_out = true;
	}
	if (task->hook_fd >= 0) {
		agent_task_fd_ready(a);
		if (task->hook_fd >= 0) {
			close(task->hook_fd);
			task->hook_fd = -1;
		}
	}
	task->hook_pid = -1;
	task->hook_out[task->hook_len] = '\0';
	task->hook_result = json_object_new_object();
	json_object_object_add(task->hook_result, "command",
			       json_object_new_string(agent_arg_str(task->args, "hook", "")));
	if (timed_out)
		json_object_object_add(task->hook_result, "timeout", json_object_new_boolean(1));
	if (w > 0 && WIFEXITED(status))
		json_object_object_add(task->hook_result, "exit-status", json_object_new_int(WEXITSTATUS(status)));
	else if (w > 0 && WIFSIGNALED(status))
		json_object_object_add(task->hook_result, "signal", json_object_new_int(WTERMSIG(status)));
	json_object_object_add(task->hook_result, "output", json_object_new_string(task->hook_out));
	json_object_object_add(task->hook_result, "elapsed-ms", json_object_new_int64(agent_now_ms() - task->start));
	agent_log(a, LOG_INFO, "resume hook: %s", json_object_to_json_string(task->hook_result));
	return 1;
}

static void resume_rescan_and_wait(struct agent *a)
{
	struct task *task = &a->task;
	struct schema_err e;

	if (!agent_arg_bool(task->args, "rescan", true)) {
		task->rescan_result = json_object_new_string("skipped");
	} else if (agent_inv_pci_rescan(&a->o, &e) < 0) {
		agent_log(a, LOG_WARNING, "%s", e.desc);
		task->rescan_result = json_object_new_string(e.desc);
	} else {
		task->rescan_result = json_object_new_string("done");
	}
	task->stage = STAGE_LINK;
	task->link_start = agent_now_ms();
	task->link_deadline = task->link_start + agent_arg_int(task->args, "link-timeout-ms", DEFAULT_LINK_TIMEOUT_MS);
	task->next_link_poll = task->link_start;
}

static void resume_ranks(struct agent *a)
{
	struct task *task = &a->task;
	bool ready = false;

	task->fabrics = agent_current_fabrics(a, &ready);
	task->verbs_ready = task->verbs_ready || ready;
	task->stage = STAGE_RANKS;
	task->deadline = agent_now_ms() + agent_arg_int(task->args, "deadline-ms", DEFAULT_DEADLINE_MS);
	for (struct rank *r = a->ranks; r; r = r->next) {
		if (!r->registered || r->state == RS_RUNNING)
			continue;
		r->task_member = true;
		agent_send_resume(a, r, task->fabrics,
			    agent_arg_int(task->args, "link-timeout-ms", DEFAULT_LINK_TIMEOUT_MS));
	}
	agent_log(a, LOG_NOTICE, "resume: %zu rank(s) on %s", agent_task_waiting(a),
		  json_object_to_json_string(task->fabrics));
}

static void resume_done(struct agent *a)
{
	struct task *task = &a->task;
	json_object *ret = json_object_new_object();
	struct schema_err fail = { .cls = "" };
	json_object *ranks = agent_task_returns(a, "resume", "could not resume", &fail);

	a->state = AS_RUNNING;
	if (fail.cls[0]) {
		json_object_put(ret);
		json_object_put(ranks);
		agent_task_reply(a, agent_reply_error(&fail, task->id));
		return;
	}
	json_object_object_add(ret, "fabrics", json_object_get(task->fabrics));
	json_object_object_add(ret, "verbs-ready", json_object_new_boolean(task->verbs_ready));
	json_object_object_add(ret, "link-wait-ms", json_object_new_int64(task->link_wait_ms));
	json_object_object_add(ret, "rescan", json_object_get(task->rescan_result));
	if (task->hook_result)
		json_object_object_add(ret, "hook", json_object_get(task->hook_result));
	json_object_object_add(ret, "ranks", ranks);
	json_object_object_add(ret, "gone", json_object_get(task->gone));
	json_object_object_add(ret, "elapsed-ms", json_object_new_int64(agent_now_ms() - task->start));
	agent_task_reply(a, agent_reply_return(ret, task->id));
}

void agent_resume_step(struct agent *a)
{
	struct task *task = &a->task;
	int64_t now = agent_now_ms();

	if (task->stage == STAGE_HOOK) {
		if (!hook_poll(a))
			return;
		resume_rescan_and_wait(a);
	}
	if (task->stage == STAGE_LINK) {
		if (task->want_verbs && now >= task->next_link_poll) {
			task->verbs_ready = agent_inv_verbs_active(&a->o);
			task->next_link_poll = now + LINK_POLL_MS;
		}
		if (task->want_verbs && !task->verbs_ready && now < task->link_deadline)
			return;
		task->link_wait_ms = task->want_verbs ? agent_now_ms() - task->link_start : 0;
		if (task->want_verbs && !task->verbs_ready)
			agent_log(a, LOG_WARNING, "no verbs device with an ACTIVE port after %" PRId64 " ms; resuming on what there is",
				  task->link_wait_ms);
		resume_ranks(a);
	}
	if (task->stage == STAGE_RANKS && (!agent_task_waiting(a) || agent_now_ms() >= task->deadline))
		resume_done(a);
}

static void resume_begin(struct agent *a, json_object *id, json_object *args, bool want_verbs)
{
	/* The host resumes: nothing left for a lease to guard. */
	agent_lease_drop(a, "resume");
	agent_task_begin(a, TASK_RESUME, id, args, 0);
	a->state = AS_RESUMING;
	a->task.want_verbs = want_verbs;
	a->task.stage = STAGE_HOOK;
	if (agent_arg(args, "hook"))
		hook_start(a, agent_arg_str(args, "hook", ""));
}

json_object *agent_cmd_resume(struct agent *a, struct rank *from, json_object *args, json_object *id)
{
	json_object *f = agent_arg(args, "fabrics");
	bool want_verbs = false;

	(void)from;
	for (size_t i = 0; f && i < json_object_array_length(f); i++) {
		const char *n = json_object_get_string(json_object_array_get_idx(f, i));

		/* "verbs" or "tcp": the table checked. */
		if (!strcmp(n, "verbs"))
			want_verbs = true;
	}
	if (a->task.kind != TASK_NONE)
		return agent_busy_error(a, id);
	if (a->state != AS_QUIESCED)
		return agent_errorf(id, "InvalidState", "resume needs a quiesced agent; the agent is %s",
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
	a->task.by_lease = true;
	json_object_put(args);
	agent_task_step(a);
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
	struct task *task = &a->task;
	json_object *ret = json_object_new_object();
	struct schema_err fail = { .cls = "" };
	json_object *ranks = agent_task_returns(a, "peers", "could not take the peers' addresses", &fail);

	if (fail.cls[0]) {
		json_object_put(ret);
		json_object_put(ranks);
		agent_task_reply(a, agent_reply_error(&fail, task->id));
		return;
	}
	json_object_object_add(ret, "ranks", ranks);
	json_object_object_add(ret, "gone", json_object_get(task->gone));
	json_object_object_add(ret, "elapsed-ms", json_object_new_int64(agent_now_ms() - task->start));
	agent_task_reply(a, agent_reply_return(ret, task->id));
}

void agent_peers_step(struct agent *a)
{
	if (!agent_task_waiting(a) || agent_now_ms() >= a->task.deadline)
		peers_done(a);
}

json_object *agent_cmd_peers(struct agent *a, struct rank *from, json_object *args, json_object *id)
{
	json_object *all = agent_arg(args, "ranks");

	(void)from;
	if (a->task.kind != TASK_NONE)
		return agent_busy_error(a, id);
	agent_task_begin(a, TASK_PEERS, id, args, agent_arg_int(args, "deadline-ms", DEFAULT_DEADLINE_MS));
	for (struct rank *r = a->ranks; r; r = r->next) {
		json_object *rargs;

		if (!r->registered)
			continue;
		rargs = json_object_new_object();
		json_object_object_add(rargs, "ranks", peers_for(all, r));
		json_object_object_add(rargs, "deadline-ms", json_object_new_int64(agent_rank_deadline_ms(a)));
		if (agent_arg(args, "wait"))
			json_object_object_add(rargs, "wait", json_object_get(agent_arg(args, "wait")));
		r->task_member = true;
		agent_to_rank(a, r, "peers", rargs);
	}
	agent_log(a, LOG_NOTICE, "peers: %zu address list(s) to %zu rank(s)",
		  json_object_array_length(all), agent_task_waiting(a));
	agent_peers_step(a);
	return NULL;
}
