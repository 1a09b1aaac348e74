/* SPDX-License-Identifier: MIT */
/*
 * kawarimi-agent: the lease on a quiesce (docs/symvirt-protocol.md,
 * "Leases").
 *
 * The coordinator that quiesced the ranks is the only one who resumes
 * them; if it dies, or loses its connection for good, the job would stay
 * quiesced for ever.  So a quiesce may hold a lease that the coordinator
 * renews while it works; when the lease runs out the agent resumes the
 * ranks on whatever fabric there is now, by itself.  The lease lives in
 * the agent, not in the connection: a host that disconnects does not
 * stop it, since that host may never come back.
 */
#include <inttypes.h>
#include <syslog.h>

#include "agent_priv.h"

bool agent_lease_holdable(const struct agent *a)
{
	if (a->state == AS_QUIESCED)
		return true;
	/* Quiescing, but not in a failed quiesce's rollback: the ranks are
	 * already being resumed there. */
	return a->state == AS_QUIESCING && a->task.kind == TASK_QUIESCE && a->task.stage == STAGE_RANKS;
}

void agent_lease_hold(struct agent *a, int64_t length_ms, int64_t from, bool adopted)
{
	a->lease.held = true;
	a->lease.adopted = adopted;
	a->lease.length_ms = length_ms;
	a->lease.expires = from + length_ms;
	agent_log(a, LOG_DEBUG, "lease of %" PRId64 " ms%s, %" PRId64 " ms left", length_ms,
		  adopted ? " (adopted)" : "", agent_lease_left(a));
}

void agent_lease_drop(struct agent *a, const char *why)
{
	if (!a->lease.held)
		return;
	agent_log(a, LOG_DEBUG, "lease dropped: %s", why);
	a->lease.held = false;
	a->lease.adopted = false;
}

int64_t agent_lease_left(const struct agent *a)
{
	int64_t left;

	if (!a->lease.held)
		return -1;
	left = a->lease.expires - agent_now_ms();
	return left > 0 ? left : 0;
}

/* The lease can be acted on now: no task that must finish first. */
static bool lease_actionable(const struct agent *a)
{
	if (a->state == AS_QUIESCING)
		return true;	/* holdable: a quiesce waiting for its ranks */
	return a->task.kind == TASK_NONE;
}

int64_t agent_lease_timer(const struct agent *a)
{
	/* An expired lease waiting for a `peers` to end needs no timer: the
	 * loop runs again when that task ends. */
	if (!a->lease.held || !lease_actionable(a))
		return 0;
	return a->lease.expires;
}

/*
 * Once the verbs device (if any) is present after the rescan, wait for its
 * port as a `resume` with "verbs" does (a ConnectX HCA takes ~20 s to link
 * up); with no verbs device at all nobody is going to plug one: no wait.
 */
static int64_t lease_link_timeout(struct agent *a)
{
	bool active = false;
	json_object *verbs = agent_inv_verbs(&a->o, false, &active);
	int64_t ms = json_object_array_length(verbs) > 0 ? 30000 : 0;

	json_object_put(verbs);
	return ms;
}

static size_t ranks_not_running(struct agent *a)
{
	size_t n = 0;

	for (struct rank *r = a->ranks; r; r = r->next)
		if (r->registered && r->state != RS_RUNNING)
			n++;
	return n;
}

static void lease_expired(struct agent *a)
{
	json_object *d = json_object_new_object();
	const char *state = agent_state_name(a->state);
	size_t n = ranks_not_running(a);
	int64_t length = a->lease.length_ms;
	bool adopted = a->lease.adopted;
	struct schema_err why;

	agent_lease_drop(a, "ran out");
	agent_log(a, LOG_WARNING, "the %slease of %" PRId64 " ms ran out while %s, nobody renewed it: "
		  "resuming %zu rank(s) on the fabrics there are now", adopted ? "adopted " : "",
		  length, state, n);
	json_object_object_add(d, "state", json_object_new_string(state));
	json_object_object_add(d, "ranks", json_object_new_int64((int64_t)n));
	agent_to_host(a, agent_event("lease-expired", d));
	if (a->state == AS_QUIESCING) {
		schema_err_set(&why, "Timeout", "the lease of %" PRId64 " ms ran out before every rank had "
			   "quiesced; the ranks were resumed", length);
		agent_quiesce_abort(a, &why);
		return;
	}
	agent_lease_resume(a, lease_link_timeout(a));
}

void agent_lease_step(struct agent *a)
{
	if (!a->lease.held)
		return;
	if (!agent_lease_holdable(a)) {
		/* Resumed (by the host, by a rollback) or resuming: nothing
		 * left to hold. */
		agent_lease_drop(a, agent_state_name(a->state));
		return;
	}
	if (agent_now_ms() < a->lease.expires || !lease_actionable(a))
		return;
	lease_expired(a);
}
