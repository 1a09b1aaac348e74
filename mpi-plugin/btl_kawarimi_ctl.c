/*
 * kawarimi BTL: the agent control socket and the quiesce/resume state
 * machine (rank side of docs/symvirt-protocol.md, "Agent <-> ranks").
 *
 * Framing, validation and the messages themselves are the protocol's
 * table's (symvirt/schema.h, json-c only): the component keeps to
 * libopen-pal, json-c and pthread rather than pulling libkawarimi-qmp
 * into every MPI process.
 * Everything here runs in the network thread with kw.lock held, except
 * kw_ctl_open/close (application thread, before the thread starts / after
 * it stopped).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "btl_kawarimi_ctl.h"
#include "btl_kawarimi_endpoint.h"

#define KW_CTL_RETRY_MS 1000

struct kw_ctl {
	int fd;
	int enabled;			/* an agent socket is configured */
	int missing_logged;
	unsigned int gen;		/* agent connections so far */
	unsigned int pending_gen;	/* connection the pending command came on */
	uint64_t retry_ms;
	char jobid[64];
	struct schema_lines in;		/* what the agent sent, by lines */
	int next_id;
	/* the command in progress (quiesce, resume, or peers while running) */
	json_object *pending_id;
	uint64_t start_ms, deadline_ms;
	int peers_pending;		/* the pending command is a `peers` */
};

static struct kw_ctl ctl = { .fd = -1 };

static const char *state_name(enum kw_state s)
{
	switch (s) {
	case KW_RUNNING: return "running";
	case KW_QUIESCING: return "quiescing";
	case KW_QUIESCED: return "quiesced";
	case KW_RESUMING: return "resuming";
	}
	return "?";
}

static void ctl_drop(const char *why)
{
	if (ctl.fd < 0)
		return;
	kw_log(1, "agent connection closed (%s); continuing as a plain transport, "
	       "reconnecting every %d ms", why, KW_CTL_RETRY_MS);
	close(ctl.fd);
	ctl.fd = -1;
	ctl.retry_ms = kw_now_ms() + KW_CTL_RETRY_MS;
}

static void ctl_write(char *line)
{
	size_t off = 0, n;

	if (!line)
		return;
	n = strlen(line);
	kw_log(5, "to agent: %.*s", (int)n - 1, line);
	while (ctl.fd >= 0 && off < n) {
		ssize_t w = send(ctl.fd, line + off, n - off, MSG_NOSIGNAL);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			ctl_drop(strerror(errno));
			break;
		}
		off += w;
	}
	free(line);
}

/* One of our commands to the agent, numbered in sending order. */
static char *command_line(const char *name, json_object *args)
{
	return schema_line_of(schema_command_msg(name, args, json_object_new_int(ctl.next_id++)));
}

/* Connects and registers; on failure retries from the network thread
 * every KW_CTL_RETRY_MS, so an agent that starts late or restarts gets
 * every rank back. */
static void ctl_try(uint64_t now)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct timeval tv = { .tv_sec = 2 };
	json_object *args, *paths;
	int i;

	ctl.retry_ms = now + KW_CTL_RETRY_MS;
	/* Open MPI may release the MCA string while this thread is still
	 * retrying during finalize: no path, no attempt. */
	if (!kw.agent_socket || !*kw.agent_socket)
		return;
	strcpy(sa.sun_path, kw.agent_socket);
	ctl.fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (ctl.fd < 0 || connect(ctl.fd, (struct sockaddr *)&sa, sizeof(sa))) {
		if (!ctl.missing_logged)
			kw_log(1, "no agent at %s (%s): running as a plain transport, "
			       "retrying every %d ms", kw.agent_socket, strerror(errno),
			       KW_CTL_RETRY_MS);
		ctl.missing_logged = 1;
		if (ctl.fd >= 0)
			close(ctl.fd);
		ctl.fd = -1;
		return;
	}
	ctl.missing_logged = 0;
	ctl.gen++;
	/* A stuck agent must not stall the network thread for long. */
	setsockopt(ctl.fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	schema_lines_reset(&ctl.in);
	args = json_object_new_object();
	json_object_object_add(args, "pid", json_object_new_int(getpid()));
	json_object_object_add(args, "jobid", json_object_new_string(ctl.jobid));
	json_object_object_add(args, "rank", json_object_new_int64(kw.me.vpid));
	paths = json_object_new_array();
	for (i = KW_NPATHS; i-- > 0;)	/* best first */
		if (!kw_paths[i]->active || kw_paths[i]->active())
			json_object_array_add(paths, json_object_new_string(kw_paths[i]->name));
	json_object_object_add(args, "paths", paths);
	/* An agent that restarted while we were quiesced learns it here: it
	 * adopts the quiesce, so its `resume` (or its lease) reaches us. */
	json_object_object_add(args, "state", json_object_new_string(
		kw.state == KW_QUIESCED ? "quiesced" : "running"));
	ctl_write(command_line("register", args));
	if (ctl.fd >= 0)
		kw_log(1, "registered with the agent at %s", kw.agent_socket);
}

int kw_ctl_open(void)
{
	struct sockaddr_un sa;

	if (!kw.agent_socket || !*kw.agent_socket) {
		kw_log(1, "btl_kawarimi_agent_socket is empty: no quiesce/resume control");
		return 0;
	}
	if (strlen(kw.agent_socket) >= sizeof(sa.sun_path)) {
		kw_err("btl_kawarimi_agent_socket \"%s\" is longer than %zu bytes; no agent control",
		       kw.agent_socket, sizeof(sa.sun_path) - 1);
		return 0;
	}
	if (schema_lines_init(&ctl.in, SYMVIRT_MAX_MSG))
		return -1;
	/* Printed once here: opal's name printing is not for other threads. */
	snprintf(ctl.jobid, sizeof(ctl.jobid), "%s", OPAL_JOBID_PRINT(kw.me.jobid));
	ctl.next_id = 1;
	ctl.enabled = 1;
	ctl_try(kw_now_ms());
	return 0;
}

void kw_ctl_close(void)
{
	ctl.enabled = 0;
	if (ctl.fd >= 0)
		ctl_write(command_line("unregister", NULL));
	if (ctl.fd >= 0)
		close(ctl.fd);
	ctl.fd = -1;
	schema_lines_free(&ctl.in);
	json_object_put(ctl.pending_id);
	ctl.pending_id = NULL;
}

int kw_ctl_fd(void)
{
	return ctl.fd;
}

static json_object *paths_json(void)
{
	json_object *arr = json_object_new_array();
	uint32_t i;

	for (i = 0; i < kw.neps; i++) {
		struct mca_btl_base_endpoint_t *ep = kw.eps[i];
		json_object *p;
		char l[24], r[24];

		if (!ep || !ep->conn || ep->conn->state != KW_CONN_UP)
			continue;
		kw_ip_str(ep->conn->cand.local.ip, l, sizeof(l));
		kw_ip_str(ep->conn->cand.remote.ip, r, sizeof(r));
		p = json_object_new_object();
		json_object_object_add(p, "peer", json_object_new_int64(ep->vpid));
		json_object_object_add(p, "path", json_object_new_string(ep->conn->ops->name));
		json_object_object_add(p, "local", json_object_new_string(l));
		json_object_object_add(p, "remote", json_object_new_string(r));
		json_object_array_add(arr, p);
	}
	return arr;
}

/* Our address list as the coordinator passes it to the other ranks. */
static void add_addrs(json_object *ret)
{
	char hex[KW_ADDRS_HEX_MAX];

	if (!kw_ctl_parse_addrs_hex(&kw.local, hex, sizeof(hex)))
		json_object_object_add(ret, "addrs", json_object_new_string(hex));
}

static void reply_error(json_object *id, const char *cls, const char *desc)
{
	kw_log(1, "agent command failed: %s: %s", cls, desc);
	ctl_write(schema_line_of(schema_reply_error(cls, desc, id)));
}

/* ---- quiesce ----------------------------------------------------------- */

static void quiesce_start(struct kw_ctl_msg *m, uint64_t now)
{
	uint32_t i;

	kw.state = KW_QUIESCING;
	ctl.pending_id = json_object_get(m->id);
	ctl.pending_gen = ctl.gen;
	ctl.start_ms = now;
	ctl.deadline_ms = now + (m->deadline_ms >= 0 ? m->deadline_ms : kw.quiesce_timeout_ms);
	kw_log(1, "quiesce: draining (deadline %llu ms)",
	       (unsigned long long)(ctl.deadline_ms - now));
	for (i = 0; i < kw.neps; i++)
		if (kw.eps[i])
			kw_ep_start_drain(kw.eps[i]);
}

static void quiesce_finish(uint64_t now, int timed_out)
{
	uint64_t frames = 0, bytes = 0;
	int peers = 0;
	json_object *ret;
	char late[200] = "";
	uint32_t i;

	for (i = 0; i < kw.neps; i++) {
		struct mca_btl_base_endpoint_t *ep = kw.eps[i];

		if (!ep)
			continue;
		if (ep->conn) {
			size_t l = strlen(late);

			snprintf(late + l, sizeof(late) - l, "%s%u", l ? "," : "", ep->vpid);
			kw_ep_force_close(ep, "quiesce deadline passed");
			ep->was_up = 1;
		}
		peers += ep->was_up;
		frames += ep->drained_frames;
		bytes += ep->tx_bytes_queued;
	}
	for (i = 0; i < KW_NPATHS; i++)
		kw_paths[i]->quiesce();
	kw.state = KW_QUIESCED;
	if (timed_out) {
		char desc[sizeof(late) + 128];	/* the text below never truncates */

		snprintf(desc, sizeof(desc), "drain not finished within %llu ms; peers %s were "
			 "cut, their unacknowledged frames will be resent after resume",
			 (unsigned long long)(ctl.deadline_ms - ctl.start_ms), late);
		if (ctl.pending_gen == ctl.gen)
			reply_error(ctl.pending_id, "Timeout", desc);
	} else {
		ret = json_object_new_object();
		json_object_object_add(ret, "state", json_object_new_string("quiesced"));
		json_object_object_add(ret, "peers", json_object_new_int(peers));
		json_object_object_add(ret, "frames-drained", json_object_new_int64(frames));
		json_object_object_add(ret, "bytes-queued", json_object_new_int64(bytes));
		json_object_object_add(ret, "elapsed-ms",
				       json_object_new_int64(now - ctl.start_ms));
		kw_log(1, "quiesced: %d peers, %llu frames drained, %llu bytes queued, %llu ms",
		       peers, (unsigned long long)frames, (unsigned long long)bytes,
		       (unsigned long long)(now - ctl.start_ms));
		/* The answer belongs to the connection the command came on. */
		if (ctl.pending_gen == ctl.gen)
			ctl_write(schema_line_of(schema_reply_return(ret, ctl.pending_id)));
		else
			json_object_put(ret);
	}
	json_object_put(ctl.pending_id);
	ctl.pending_id = NULL;
}

static int all_closed(void)
{
	uint32_t i;

	for (i = 0; i < kw.neps; i++)
		if (kw.eps[i] && kw.eps[i]->conn)
			return 0;
	return 1;
}

/* ---- resume ------------------------------------------------------------ */

static void resume_finish(uint64_t now, int keep);

/* Connection attempts start over, now, from the first address pair: after
 * a resume (our addresses changed) or a `peers` (the peer's did). */
static void attempts_restart(struct mca_btl_base_endpoint_t *ep, uint64_t now)
{
	ep->ncand = ep->cand_idx = 0;
	ep->next_attempt_ms = now;
	ep->backoff_ms = 20;
	ep->broken_since_ms = 0;
}

/* Each path learns whether the agent reports its fabric. */
static void paths_prepare(const struct kw_ctl_msg *m)
{
	struct kw_path_hint hint = { .link_timeout_ms = m->link_timeout_ms };
	int i, j;

	for (i = 0; i < KW_NPATHS; i++) {
		if (!kw_paths[i]->prepare)
			continue;
		hint.reported = 0;
		for (j = 0; j < m->nfabrics; j++)
			hint.reported |= !strcmp(m->fabrics[j].name, kw_paths[i]->name);
		kw_paths[i]->prepare(&hint, kw.local.port);
	}
}

static void resume_start(struct kw_ctl_msg *m, uint64_t now)
{
	struct kw_addrs fresh;
	char err[512];
	int i;
	uint32_t v;

	for (i = 0; i < m->nfabrics; i++)
		kw_log(1, "resume: agent reports fabric %s on %s (%s)", m->fabrics[i].name,
		       m->fabrics[i].ifname, m->fabrics[i].addr);
	/* A path may wait for its device first (verbs: an ACTIVE port). */
	paths_prepare(m);
	if (kw_addrs_local(kw.if_include, &fresh, err, sizeof(err))) {
		kw_err("resume: %s; keeping the previous address list", err);
	} else {
		fresh.port = kw.local.port;
		kw.local = fresh;
	}
	/* The listeners move to the new addresses before anyone learns
	 * them (the reply to this resume, HELLOs). */
	for (i = 0; i < KW_NPATHS; i++)
		if (kw_paths[i]->resume(&kw.local, err, sizeof(err)))
			kw_err("resume: %s path: %s", kw_paths[i]->name, err);
	for (i = 0; i < KW_NPATHS; i++)
		if (kw_paths[i]->add_addrs)
			kw_paths[i]->add_addrs(&kw.local);
	for (i = 0; i < kw.local.n; i++) {
		char a[24];

		kw_ip_str(kw.local.a[i].ip, a, sizeof(a));
		kw_log(1, "resume: local address %s on %s, preference %u", a,
		       kw.local.a[i].ifname, kw.local.a[i].pref);
	}
	kw.state = KW_RESUMING;
	ctl.pending_id = json_object_get(m->id);
	ctl.pending_gen = ctl.gen;
	ctl.start_ms = now;
	ctl.deadline_ms = now + (m->link_timeout_ms > 0 ? m->link_timeout_ms :
				 kw.resume_timeout_ms);
	/* The agent gives up on us at its own deadline: answer before it,
	 * with whatever is connected by then. */
	if (m->deadline_ms >= 0 && now + m->deadline_ms < ctl.deadline_ms)
		ctl.deadline_ms = now + m->deadline_ms;
	for (v = 0; v < kw.neps; v++) {
		struct mca_btl_base_endpoint_t *ep = kw.eps[v];

		if (!ep)
			continue;
		ep->upgraded = 0;
		attempts_restart(ep, now);
		/* The lower rank of each formerly connected pair reconnects. */
		ep->want_up = ep->was_up && !ep->peer_gone && kw.me.vpid < ep->vpid;
	}
	kw_wake();
	/* "wait": false: the coordinator hands every rank its peers' new
	 * addresses next (`peers`) and waits for the connections there; this
	 * answer only has to carry our own addresses, at once. */
	if (m->wait == 0)
		resume_finish(now, 1);
}

static int resume_settled(uint64_t now)
{
	uint32_t i;

	for (i = 0; i < kw.neps; i++) {
		struct mca_btl_base_endpoint_t *ep = kw.eps[i];

		if (!ep || !ep->was_up || ep->peer_gone || ep->failed)
			continue;
		if (!ep->conn || ep->conn->state != KW_CONN_UP)
			return 0;
		/* The initiator may still move to a better pair it just
		 * learned about; give it a moment before reporting. */
		if (!kw_ep_on_best_path(ep) && !ep->upgraded && now - ep->conn->up_ms < 1000)
			return 0;
	}
	return 1;
}

/* The pairs that were up at the quiesce are settled: forget which they
 * were.  Unless `peers` still comes (keep), in which case the lower rank
 * of each goes on reconnecting and `peers` waits for them. */
static void reconnect_done(int keep)
{
	uint32_t i;

	for (i = 0; i < kw.neps; i++)
		if (kw.eps[i] && !keep) {
			if (kw.eps[i]->was_up && (!kw.eps[i]->conn ||
						  kw.eps[i]->conn->state != KW_CONN_UP))
				kw_log(1, "peer rank %u not reconnected yet; it will "
				       "reconnect when traffic needs it", i);
			kw.eps[i]->want_up = 0;
			kw.eps[i]->was_up = 0;
		}
}

/* Answers the command in progress (ret consumed), on the agent connection
 * it came on only, and logs the paths it reports. */
static void answer_pending(json_object *ret, const char *what, uint64_t now)
{
	kw_log(1, "%s after %llu ms: %s", what, (unsigned long long)(now - ctl.start_ms),
	       json_object_to_json_string_ext(json_object_object_get(ret, "paths"),
					      JSON_C_TO_STRING_PLAIN));
	if (ctl.pending_gen == ctl.gen)
		ctl_write(schema_line_of(schema_reply_return(ret, ctl.pending_id)));
	else
		json_object_put(ret);
	json_object_put(ctl.pending_id);
	ctl.pending_id = NULL;
}

static void resume_finish(uint64_t now, int keep)
{
	json_object *ret = json_object_new_object();
	int i;

	reconnect_done(keep);
	kw.state = KW_RUNNING;
	json_object_object_add(ret, "state", json_object_new_string("resumed"));
	json_object_object_add(ret, "paths", paths_json());
	add_addrs(ret);
	json_object_object_add(ret, "elapsed-ms", json_object_new_int64(now - ctl.start_ms));
	for (i = 0; i < KW_NPATHS; i++)
		if (kw_paths[i]->json)
			json_object_object_add(ret, kw_paths[i]->name, kw_paths[i]->json());
	answer_pending(ret, "resumed", now);
}

/* ---- dispatch ---------------------------------------------------------- */

static void status_reply(json_object *id)
{
	json_object *ret = json_object_new_object();

	json_object_object_add(ret, "state", json_object_new_string(state_name(kw.state)));
	json_object_object_add(ret, "paths", paths_json());
	add_addrs(ret);
	ctl_write(schema_line_of(schema_reply_return(ret, id)));
}

/* ---- peers ------------------------------------------------------------- */

/*
 * The coordinator's list of where the other ranks are now, gathered from
 * their `resume` replies.  A pair need not reach the other end over the
 * network the move took away to learn its new addresses: they come
 * through the agents (the control plane), and each pair reconnects over
 * whatever both ends have now.  Only peers this rank has an endpoint for
 * are touched; a rank number is never used to allocate.
 */
static int peers_apply(const struct kw_ctl_msg *m, uint64_t now)
{
	int updated = 0, i;

	for (i = 0; i < m->npeers; i++) {
		const struct kw_peer_addrs *p = &m->peers[i];
		struct mca_btl_base_endpoint_t *ep;

		if (p->rank == kw.me.vpid || !(ep = kw_ep_get(p->rank, 0)))
			continue;
		if (ep->have_addrs && ep->peer_addrs.port == p->addrs.port &&
		    ep->peer_addrs.n == p->addrs.n &&
		    !memcmp(ep->peer_addrs.a, p->addrs.a, p->addrs.n * sizeof(p->addrs.a[0])))
			continue;
		ep->peer_addrs = p->addrs;
		ep->have_addrs = 1;
		updated++;
		kw_log(2, "peer rank %u: %u address(es) from the coordinator", p->rank, p->addrs.n);
		/* An attempt towards an address the peer no longer has would
		 * only time out: start over on the new list now. */
		if (ep->conn && ep->conn->state != KW_CONN_UP && ep->conn->initiator) {
			ep->conn->close_me = 1;
			ep->conn->ep = NULL;
			ep->conn = NULL;
		}
		attempts_restart(ep, now);
		/* Up, but maybe not on the best pair the new list offers. */
		ep->probe_next_ms = now;
		ep->probe_backoff_ms = KW_PROBE_MIN_MS;
	}
	return updated;
}

static void peers_finish(uint64_t now)
{
	json_object *ret = json_object_new_object();

	reconnect_done(0);
	ctl.peers_pending = 0;
	json_object_object_add(ret, "state", json_object_new_string(state_name(kw.state)));
	json_object_object_add(ret, "paths", paths_json());
	json_object_object_add(ret, "elapsed-ms", json_object_new_int64(now - ctl.start_ms));
	answer_pending(ret, "peers: settled", now);
}

static void peers_start(struct kw_ctl_msg *m, uint64_t now)
{
	int updated = peers_apply(m, now);

	kw_log(1, "peers: %d of %d address lists changed", updated, m->npeers);
	kw_wake();
	/* Not running (a quiesce or resume is under way), or more lists to
	 * come: nothing to wait for here. */
	if (kw.state != KW_RUNNING || m->wait == 0) {
		json_object *ret = json_object_new_object();

		json_object_object_add(ret, "state", json_object_new_string(state_name(kw.state)));
		json_object_object_add(ret, "paths", paths_json());
		json_object_object_add(ret, "updated", json_object_new_int(updated));
		ctl_write(schema_line_of(schema_reply_return(ret, m->id)));
		return;
	}
	ctl.pending_id = json_object_get(m->id);
	ctl.pending_gen = ctl.gen;
	ctl.start_ms = now;
	ctl.deadline_ms = now + (m->deadline_ms >= 0 ? m->deadline_ms : kw.resume_timeout_ms);
	ctl.peers_pending = 1;
}

static void handle(struct kw_ctl_msg *m, uint64_t now)
{
	char desc[128];

	/* A quiesce or resume overtakes a `peers` still waiting for its
	 * connections: that one answers with what is up now. */
	if (ctl.peers_pending && m->kind != KW_CTL_STATUS && m->kind != KW_CTL_REPLY &&
	    m->kind != KW_CTL_EVENT)
		peers_finish(now);
	switch (m->kind) {
	case KW_CTL_PEERS:
		peers_start(m, now);
		return;
	case KW_CTL_QUIESCE:
		if (kw.state == KW_QUIESCED) {
			/* Already there: answer again, nothing to drain. */
			ctl.pending_id = json_object_get(m->id);
	ctl.pending_gen = ctl.gen;
			ctl.start_ms = now;
			quiesce_finish(now, 0);
			return;
		}
		if (kw.state != KW_RUNNING) {
			snprintf(desc, sizeof(desc), "quiesce while %s", state_name(kw.state));
			reply_error(m->id, "InvalidState", desc);
			return;
		}
		quiesce_start(m, now);
		return;
	case KW_CTL_RESUME:
		if (kw.state != KW_QUIESCED) {
			snprintf(desc, sizeof(desc), "resume while %s (resume needs quiesced)",
				 state_name(kw.state));
			reply_error(m->id, "InvalidState", desc);
			return;
		}
		resume_start(m, now);
		return;
	case KW_CTL_STATUS:
		status_reply(m->id);
		return;
	case KW_CTL_REPLY:
		if (m->is_error)
			kw_err("the agent refused our registration: %s", m->desc);
		else if (m->version >= 0 && m->version != 1)
			kw_err("the agent speaks protocol version %lld, this BTL version 1",
			       (long long)m->version);
		return;
	case KW_CTL_EVENT:
		return;
	}
}

static void handle_line(const char *line, size_t len)
{
	struct kw_ctl_msg m;
	const char *eclass;
	char err[300];

	kw_log(5, "from agent: %.*s", (int)len, line);
	if (kw_ctl_parse_msg(line, len, &m, &eclass, err, sizeof(err)))
		reply_error(m.id, eclass, err);
	else
		handle(&m, kw_now_ms());
	kw_ctl_parse_clear(&m);
}

void kw_ctl_readable(void)
{
	const char *line;
	size_t room, len;
	ssize_t n;
	char *at;
	int r = 0;

	if (ctl.fd < 0)
		return;
	at = schema_lines_space(&ctl.in, &room);
	n = recv(ctl.fd, at, room, MSG_DONTWAIT);
	if (n == 0) {
		ctl_drop("the agent closed it");
		return;
	}
	if (n < 0) {
		if (errno != EAGAIN && errno != EINTR)
			ctl_drop(strerror(errno));
		return;
	}
	schema_lines_commit(&ctl.in, (size_t)n);
	while (ctl.fd >= 0 && (r = schema_lines_next(&ctl.in, &line, &len)) > 0)
		handle_line(line, len);
	/* Nothing resynchronises a stream cut mid-line: start afresh. */
	if (ctl.fd >= 0 && r < 0) {
		kw_err("the agent sent a line longer than %d bytes; closing the agent connection",
		       SYMVIRT_MAX_MSG);
		ctl_drop("line too long");
	}
}

/* Register again only in a state that lasts (running or quiesced): a
 * quiescing rank that said "running" would be resumed by nobody, one that
 * said "quiesced" would refuse the resume it gets.  A drain or a resume
 * ends by its deadline. */
static int ctl_may_register(void)
{
	return ctl.enabled && ctl.fd < 0 && kw.state != KW_QUIESCING && kw.state != KW_RESUMING;
}

void kw_ctl_service(uint64_t now)
{
	if (ctl_may_register() && now >= ctl.retry_ms)
		ctl_try(now);
	if (kw.state == KW_QUIESCING) {
		if (all_closed())
			quiesce_finish(now, 0);
		else if (now >= ctl.deadline_ms)
			quiesce_finish(now, 1);
	} else if (kw.state == KW_RESUMING) {
		if (resume_settled(now) || now >= ctl.deadline_ms)
			resume_finish(now, 0);
	} else if (ctl.peers_pending) {
		if (resume_settled(now) || now >= ctl.deadline_ms)
			peers_finish(now);
	}
}

uint64_t kw_ctl_next_timer(void)
{
	if (ctl_may_register())
		return ctl.retry_ms;
	if (kw.state == KW_QUIESCING || kw.state == KW_RESUMING || ctl.peers_pending)
		return ctl.deadline_ms;
	return UINT64_MAX;
}
