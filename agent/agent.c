/* SPDX-License-Identifier: MIT */
/*
 * kawarimi-agent: the event loop, the output queues and the rank sockets;
 * the host channel is channel.c.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "agent_priv.h"

int64_t agent_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void agent_log(struct agent *a, int prio, const char *fmt, ...)
{
	static const char *const names[] = { "emerg", "alert", "crit", "error",
					     "warning", "notice", "info", "debug" };
	char msg[1200];
	va_list ap;

	if (prio >= LOG_INFO && a->o.verbose < (prio == LOG_DEBUG ? 2 : 1))
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (a->o.syslog)
		syslog(prio, "%s", msg);
	else
		fprintf(stderr, "kawarimi-agent: %s: %s\n", names[prio & 7], msg);
}

const char *agent_state_name(enum agent_state s)
{
	static const char *const n[] = { "running", "quiescing", "quiesced", "resuming" };

	return n[s];
}

const char *agent_rank_state_name(enum rank_state s)
{
	static const char *const n[] = { "running", "quiescing", "quiesced", "resuming" };

	return n[s];
}

/* ---- output queues ------------------------------------------------------- */

int agent_outq_add(struct outq *q, json_object *msg)
{
	const char *text = json_object_to_json_string_ext(msg, JSON_C_TO_STRING_PLAIN);
	size_t len = strlen(text);

	if (q->len + len + 1 > AGENT_OUT_MAX)
		return -1;
	if (q->len + len + 1 > q->cap) {
		size_t cap = q->cap ? q->cap : 4096;
		char *n;

		while (cap < q->len + len + 1)
			cap *= 2;
		n = realloc(q->buf, cap);
		if (!n)
			return -1;
		q->buf = n;
		q->cap = cap;
	}
	memcpy(q->buf + q->len, text, len);
	q->buf[q->len + len] = '\n';
	q->len += len + 1;
	return 0;
}

void agent_outq_clear(struct outq *q)
{
	free(q->buf);
	memset(q, 0, sizeof(*q));
}

/* Writes what the peer takes now; 0, or -1 on a hard error (errno). */
int agent_outq_flush(struct outq *q, int fd)
{
	while (q->len > 0) {
		ssize_t n = send(fd, q->buf, q->len, MSG_NOSIGNAL | MSG_DONTWAIT);

		if (n < 0 && errno == ENOTSOCK)
			n = write(fd, q->buf, q->len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return 0;
			return -1;
		}
		memmove(q->buf, q->buf + n, q->len - (size_t)n);
		q->len -= (size_t)n;
	}
	return 0;
}

/* ---- ranks ------------------------------------------------------------------- */

static void rank_free(struct rank *r)
{
	if (r->fd >= 0)
		close(r->fd);
	agent_framer_free(r->framer);
	agent_outq_clear(&r->out);
	json_object_put(r->paths_offered);
	json_object_put(r->paths_chosen);
	json_object_put(r->task_ret);
	json_object_put(r->live);
	free(r);
}

static void rank_drop(struct agent *a, struct rank *r, const char *reason)
{
	for (struct rank **pp = &a->ranks; *pp; pp = &(*pp)->next) {
		if (*pp == r) {
			*pp = r->next;
			break;
		}
	}
	agent_rank_gone(a, r, reason);
	rank_free(r);
	agent_task_step(a);
}

int agent_rank_send(struct agent *a, struct rank *r, json_object *msg)
{
	int rc = agent_outq_add(&r->out, msg);

	json_object_put(msg);
	if (rc < 0) {
		agent_log(a, LOG_WARNING, "rank pid %" PRId64 " reads nothing: dropped", r->pid);
		return -1;
	}
	return 0;
}

int agent_to_rank(struct agent *a, struct rank *r, const char *command, json_object *args)
{
	uint64_t id = a->next_id++;

	if (r->npending == RANK_MAX_PENDING) {
		/* Forget the oldest: its reply will be dropped as unknown. */
		memmove(r->pending, r->pending + 1, sizeof(r->pending[0]) * (RANK_MAX_PENDING - 1));
		r->npending--;
	}
	r->pending[r->npending].id = id;
	snprintf(r->pending[r->npending].command, sizeof(r->pending[0].command), "%s", command);
	r->npending++;
	return agent_rank_send(a, r, agent_command_msg(command, args, id));
}

static void rank_reply_in(struct agent *a, struct rank *r, json_object *msg, json_object *id)
{
	if (!json_object_is_type(id, json_type_int)) {
		agent_log(a, LOG_WARNING, "rank pid %" PRId64 ": reply with a non-integer id dropped", r->pid);
		return;
	}
	agent_rank_reply(a, r, msg);
}

struct rank_ctx {
	struct agent *a;
	struct rank *r;
	bool dropped;
};

static int rank_frame(void *arg, json_object *msg, const struct schema_err *e)
{
	struct rank_ctx *ctx = arg;
	struct agent *a = ctx->a;
	struct rank *r = ctx->r;
	enum schema_kind kind;
	json_object *id, *reply;
	struct schema_err ee;

	if (!msg) {
		agent_log(a, LOG_WARNING, "from rank pid %" PRId64 ": %s", r->pid, e->desc);
		agent_rank_send(a, r, agent_reply_error(e, NULL));
		return 0;
	}
	if (schema_check_envelope(msg, &kind, &id, &ee) < 0) {
		agent_log(a, LOG_WARNING, "from rank pid %" PRId64 ": %s", r->pid, ee.desc);
		/* A broken reply cannot be answered; a broken command can. */
		if (!json_object_object_get_ex(msg, "return", NULL) &&
		    !json_object_object_get_ex(msg, "error", NULL))
			agent_rank_send(a, r, agent_reply_error(&ee, id));
		else if (id && json_object_is_type(id, json_type_int))
			agent_rank_reply(a, r, NULL);	/* counts as a failed answer */
		return 0;
	}
	switch (kind) {
	case SCHEMA_MSG_COMMAND:
		reply = agent_dispatch_command(a, r, msg, id);
		if (reply)
			agent_rank_send(a, r, reply);
		break;
	case SCHEMA_MSG_REPLY:
		rank_reply_in(a, r, msg, id);
		break;
	case SCHEMA_MSG_EVENT:
		agent_log(a, LOG_DEBUG, "rank pid %" PRId64 " event ignored", r->pid);
		break;
	}
	return ctx->dropped ? -1 : 0;
}

static void rank_read(struct agent *a, struct rank *r)
{
	struct rank_ctx ctx = { a, r, false };
	char buf[16384];
	ssize_t n;

	for (;;) {
		n = read(r->fd, buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		break;
	}
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
		return;
	if (n <= 0) {
		/* A rank that exits with our reply unread resets the connection:
		 * that is an ordinary end too. */
		if (n < 0 && errno != ECONNRESET)
			agent_log(a, LOG_WARNING, "rank pid %" PRId64 ": read: %s", r->pid, strerror(errno));
		rank_drop(a, r, n == 0 || errno == ECONNRESET ? "eof" : "error");
		return;
	}
	agent_framer_feed(r->framer, buf, (size_t)n, rank_frame, &ctx);
}

static size_t count_ranks(struct agent *a)
{
	size_t n = 0;

	for (struct rank *r = a->ranks; r; r = r->next)
		n++;
	return n;
}

static void rank_accept(struct agent *a)
{
	struct rank *r;
	int fd = accept4(a->rank_listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);

	if (fd < 0) {
		/* Out of descriptors the socket stays readable: stop polling it
		 * for a second rather than spin. */
		if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
			agent_log(a, LOG_WARNING, "cannot accept a rank: %s; pausing accepts for 1 s",
				  strerror(errno));
			a->accept_again = agent_now_ms() + 1000;
		}
		return;
	}
	if (count_ranks(a) >= AGENT_MAX_RANKS) {
		agent_log(a, LOG_WARNING, "more than %d rank connections: one refused", AGENT_MAX_RANKS);
		close(fd);
		return;
	}
	r = calloc(1, sizeof(*r));
	/* Ranks' replies may be long (a path per peer); their commands are
	 * held to SYMVIRT_MAX_MSG by the protocol, not by the framer. */
	if (!r || !(r->framer = agent_framer_new(SYMVIRT_MAX_REPLY))) {
		free(r);
		close(fd);
		return;
	}
	r->fd = fd;
	r->pid = -1;
	r->rank = -1;
	r->next = a->ranks;
	a->ranks = r;
	agent_log(a, LOG_DEBUG, "rank connection accepted");
}

/* ---- the loop ---------------------------------------------------------------- */

static int setup_signals(struct agent *a)
{
	sigset_t set;

	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	if (sigprocmask(SIG_BLOCK, &set, NULL) < 0)
		return -1;
	a->sig_fd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
	return a->sig_fd < 0 ? -1 : 0;
}

static int agent_init(struct agent *a, const struct agent_opts *o)
{
	memset(a, 0, sizeof(*a));
	a->o = *o;
	a->rank_listen_fd = -1;
	a->sig_fd = -1;
	a->task.hook_fd = -1;
	a->next_id = 1;
	a->started = agent_now_ms();
	if (agent_chan_setup(a) < 0)
		return -1;
	if (setup_signals(a) < 0) {
		agent_log(a, LOG_ERR, "signals: %s", strerror(errno));
		return -1;
	}
	a->rank_listen_fd = agent_listen_unix(a, o->socket, 0660, o->group);
	if (a->rank_listen_fd < 0)
		return -1;
	if (agent_chan_start(a) < 0)
		return -1;
	agent_log(a, LOG_NOTICE, "kawarimi-agent %s: channel %s, ranks on %s", KAWARIMI_VERSION,
		  o->channel, o->socket);
	return 0;
}

static void agent_fini(struct agent *a)
{
	agent_task_fini(a);
	json_object_put(a->live.id);
	a->live.id = NULL;
	while (a->ranks) {
		struct rank *r = a->ranks;

		a->ranks = r->next;
		rank_free(r);
	}
	agent_chan_fini(a);
	if (a->rank_listen_fd >= 0) {
		close(a->rank_listen_fd);
		unlink(a->o.socket);
	}
	if (a->sig_fd >= 0)
		close(a->sig_fd);
}

struct agent *agent_new(const struct agent_opts *o)
{
	struct agent *a = malloc(sizeof(*a));

	if (!a)
		return NULL;
	if (agent_init(a, o) < 0) {
		agent_fini(a);
		free(a);
		return NULL;
	}
	return a;
}

void agent_free(struct agent *a)
{
	agent_fini(a);
	free(a);
}

enum { SLOT_SIG, SLOT_RANKLISTEN, SLOT_CHLISTEN, SLOT_CHAN, SLOT_TASK, SLOT_RANKS };

static int poll_timeout(struct agent *a)
{
	int64_t now = agent_now_ms(), t = 0, task = agent_task_timer(a), lease = agent_lease_timer(a);

	if (a->ch.retry_at)
		t = a->ch.retry_at;
	if (a->accept_again > now && (!t || a->accept_again < t))
		t = a->accept_again;
	if (task && (!t || task < t))
		t = task;
	if (lease && (!t || lease < t))
		t = lease;
	if (!t)
		return -1;
	return t <= now ? 0 : (int)(t - now);
}

static void handle_signal(struct agent *a)
{
	struct signalfd_siginfo si;

	while (read(a->sig_fd, &si, sizeof(si)) == sizeof(si)) {
		if (si.ssi_signo == SIGHUP) {
			/* the daemon's habit: reload; there is nothing to reload */
			agent_log(a, LOG_NOTICE, "SIGHUP: nothing to reload");
			continue;
		}
		agent_log(a, LOG_NOTICE, "signal %u: exiting", si.ssi_signo);
		a->stop = true;
	}
}

static void rank_flush(struct agent *a, struct rank *r);

static void handle_ranks(struct agent *a, struct pollfd *pfds, struct rank **rs, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		struct rank *r = rs[i];
		bool alive = false;

		/* An earlier rank's handling may have dropped this one. */
		for (struct rank *x = a->ranks; x; x = x->next)
			if (x == r)
				alive = true;
		if (!alive || !pfds[i].revents)
			continue;
		if (pfds[i].revents & (POLLIN | POLLHUP | POLLERR)) {
			rank_read(a, r);
			continue;
		}
		rank_flush(a, r);
	}
}

/* Writes a rank's queued output; a rank that has gone is dropped. */
static void rank_flush(struct agent *a, struct rank *r)
{
	bool gone;

	if (!r->out.len || agent_outq_flush(&r->out, r->fd) == 0)
		return;
	gone = errno == EPIPE || errno == ECONNRESET;
	agent_log(a, gone ? LOG_INFO : LOG_WARNING, "rank pid %" PRId64 ": write: %s", r->pid,
		  strerror(errno));
	rank_drop(a, r, gone ? "eof" : "error");
}

static int loop_once(struct agent *a)
{
	size_t nr = count_ranks(a), i = 0;
	struct pollfd *pfds = calloc(SLOT_RANKS + nr, sizeof(*pfds));
	struct rank **rs = calloc(nr + 1, sizeof(*rs));
	struct channel *c = &a->ch;
	int n;

	if (!pfds || !rs) {
		free(pfds);
		free(rs);
		return -1;
	}
	pfds[SLOT_SIG] = (struct pollfd){ .fd = a->sig_fd, .events = POLLIN };
	pfds[SLOT_RANKLISTEN] = (struct pollfd){
		.fd = agent_now_ms() < a->accept_again ? -1 : a->rank_listen_fd, .events = POLLIN };
	pfds[SLOT_CHLISTEN] = (struct pollfd){ .fd = c->listen_fd, .events = POLLIN };
	pfds[SLOT_CHAN] = (struct pollfd){ .fd = (c->paused ? -1 : c->fd), .events = POLLIN };
	if (c->out.len)
		pfds[SLOT_CHAN].events |= POLLOUT;
	pfds[SLOT_TASK] = (struct pollfd){ .fd = agent_task_fd(a), .events = POLLIN };
	for (struct rank *r = a->ranks; r; r = r->next, i++) {
		rs[i] = r;
		pfds[SLOT_RANKS + i] = (struct pollfd){ .fd = r->fd, .events = POLLIN };
		if (r->out.len)
			pfds[SLOT_RANKS + i].events |= POLLOUT;
	}
	n = poll(pfds, SLOT_RANKS + nr, poll_timeout(a));
	if (n < 0 && errno != EINTR) {
		agent_log(a, LOG_ERR, "poll: %s", strerror(errno));
		free(pfds);
		free(rs);
		return -1;
	}
	if (n > 0) {
		if (pfds[SLOT_SIG].revents)
			handle_signal(a);
		if (pfds[SLOT_CHLISTEN].revents)
			agent_chan_accept(a);
		if (pfds[SLOT_CHAN].revents && c->fd == pfds[SLOT_CHAN].fd)
			agent_chan_handle(a, pfds[SLOT_CHAN].revents);
		if (pfds[SLOT_TASK].revents)
			agent_task_fd_ready(a);
		handle_ranks(a, pfds + SLOT_RANKS, rs, nr);
		if (pfds[SLOT_RANKLISTEN].revents)
			rank_accept(a);
	}
	agent_chan_timers(a);
	agent_task_step(a);
	agent_lease_step(a);
	/* Replies produced above go out now rather than after the next poll. */
	for (struct rank *r = a->ranks, *next; r; r = next) {
		next = r->next;
		rank_flush(a, r);
	}
	if (c->out.len)
		agent_chan_flush(a);
	free(pfds);
	free(rs);
	return 0;
}

int agent_run(struct agent *a)
{
	while (!a->stop)
		if (loop_once(a) < 0)
			return -1;
	return 0;
}
