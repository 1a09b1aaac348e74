/* SPDX-License-Identifier: MIT */
/*
 * The QMP front-end of the connection core (conn.h): the greeting and
 * qmp_capabilities handshake, QMP's message shapes and wording, oob, and
 * the public kqmp_* API.
 *
 * Ownership: a struct kqmp owns its kqmp_conn (fd, buffers, pending commands,
 * events) and the greeting's version object.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "conn.h"
#include "kqmp_internal.h"

#define KQMP_DEFAULT_MAX_MSG	(16u << 20)	/* query-qmp-schema is ~200 KiB */
/* The event queue's bounds (conn.h): QEMU's events are small and few,
 * but a caller that never pops them must not grow without end. */
#define KQMP_MAX_EVENTS		4096
#define KQMP_MAX_EVENT_BYTES	(16u << 20)

struct kqmp {
	struct kqmp_conn c;
	unsigned flags;
	bool ready;		/* handshake done */
	bool greeted;
	bool oob_enabled;
	uint64_t caps_id;	/* our qmp_capabilities */
	json_object *version;
};

#define KQ(c)	kqmp_conn_owner(c, struct kqmp, c)

/* ---- small helpers ----------------------------------------------------- */

/* Fails a detached list of commands with err, in send order. */
static void fail_list(struct kqmp *q, struct kqmp_conn_cmd *list,
		      const struct kqmp_error *err)
{
	while (list) {
		struct kqmp_conn_cmd *c = list;

		list = c->next;
		kqmp_conn_finish(&q->c, c, NULL, err);
	}
}

/* ---- the core's hooks ------------------------------------------------- */

static void on_message(struct kqmp_conn *c, json_object *msg);

static void deliver(struct kqmp_conn *c, struct kqmp_conn_cmd *cmd, json_object *ret,
		    const struct kqmp_error *err)
{
	((kqmp_reply_fn)cmd->fn)(KQ(c), ret, err, cmd->arg);
}

static void io_failed(struct kqmp_conn *c, enum kqmp_conn_io what, int e,
		      const struct kqmp_error *rerr)
{
	struct kqmp *q = KQ(c);

	switch (what) {
	case KQMP_CONN_WRITE:
		kqmp_conn_fail(c, KQMP_E_IO, "%s: write failed: %s%s", c->name,
			    strerror(e), e == EPIPE || e == ECONNRESET ?
			    " (the peer closed the connection: did QEMU exit?)" : "");
		break;
	case KQMP_CONN_READ:
		if (e == ECONNRESET)
			kqmp_conn_fail(c, KQMP_E_IO, "%s: connection reset by the peer%s",
				    c->name, q->greeted ? " (did QEMU exit?)" : "");
		else
			kqmp_conn_fail(c, KQMP_E_IO, "%s: read failed: %s", c->name,
				    strerror(e));
		break;
	case KQMP_CONN_EOF:
		kqmp_conn_fail(c, KQMP_E_IO, "%s: connection closed by the peer%s%s",
			    c->name,
			    kqmp_reader_mid_message(c->rd) ? " in the middle of a message" : "",
			    q->greeted ? " (did QEMU exit?)" : " before its QMP greeting");
		break;
	case KQMP_CONN_BAD_INPUT:
		if (!q->greeted)
			kqmp_conn_fail(c, rerr->kind, "%s: not a QMP server: %s", c->name,
				    rerr->desc);
		else
			kqmp_conn_fail(c, rerr->kind, "%s: %s", c->name, rerr->desc);
		break;
	}
}

static void log_line(struct kqmp_conn *c, const char *msg)
{
	((kqmp_log_fn)c->log_fn)(KQ(c), msg, c->log_arg);
}

static void destroy(struct kqmp_conn *c)
{
	kqmp_close(KQ(c));
}

static const struct kqmp_conn_ops kqmp_ops = {
	.message = on_message,
	.deliver = deliver,
	.io_failed = io_failed,
	.log = log_line,
	.destroy = destroy,
	.dispatch_fn = "kqmp_dispatch()",
};

/* ---- construction ------------------------------------------------------ */

struct kqmp *kqmp_new_fd(int fd, unsigned flags)
{
	struct kqmp *q = calloc(1, sizeof(*q));
	char name[32];
	int fl;

	if (!q)
		return NULL;
	snprintf(name, sizeof(name), "fd %d", fd);
	if (kqmp_conn_init(&q->c, fd, name, KQMP_DEFAULT_MAX_MSG, 1, &kqmp_ops) < 0) {
		free(q);
		return NULL;
	}
	q->flags = flags;
	q->c.max_events = KQMP_MAX_EVENTS;
	q->c.max_event_bytes = KQMP_MAX_EVENT_BYTES;
	fl = fcntl(fd, F_GETFL);
	if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
		kqmp_conn_fail(&q->c, KQMP_E_INVAL, "fd %d: cannot make it non-blocking: %s",
			    fd, strerror(errno));
	return q;
}

struct kqmp *kqmp_connect_unix(const char *path, unsigned flags,
			       struct kqmp_error *err)
{
	enum kqmp_conn_connect_step step;
	struct kqmp *q;
	size_t max;
	int fd = kqmp_conn_connect_unix(path, SOCK_NONBLOCK, &step, &max);
	int e = errno;

	if (fd < 0) {
		const char *hint = "";

		switch (step) {
		case KQMP_CONN_NO_PATH:
			kqmp_seterr(err, KQMP_E_INVAL, "no QMP socket path given");
			return NULL;
		case KQMP_CONN_PATH_TOO_LONG:
			kqmp_seterr(err, KQMP_E_INVAL,
				  "QMP socket path '%s' is %zu bytes; unix sockets allow at most %zu",
				  path, strlen(path), max);
			return NULL;
		case KQMP_CONN_SOCKET:
			kqmp_seterr(err, KQMP_E_CONNECT, "socket(AF_UNIX): %s", strerror(e));
			return NULL;
		case KQMP_CONN_CONNECT:
			break;
		}
		if (e == ECONNREFUSED)
			hint = " (the socket file exists but nothing listens on it: is QEMU still running?)";
		else if (e == ENOENT)
			hint = " (is QEMU running with -qmp unix:PATH,server=on?)";
		else if (e == EAGAIN)
			hint = " (the monitor's listen backlog is full)";
		kqmp_seterr(err, KQMP_E_CONNECT, "cannot connect to QMP socket '%s': %s%s",
			  path, strerror(e), hint);
		errno = e;	/* for kqmp_open's KQMP_F_WAIT */
		return NULL;
	}
	q = kqmp_new_fd(fd, flags);
	if (!q || kqmp_set_name(q, path) < 0) {
		kqmp_close(q);
		if (!q)
			close(fd);
		kqmp_seterr(err, KQMP_E_NOMEM, "out of memory connecting to '%s'", path);
		return NULL;
	}
	return q;
}

struct kqmp *kqmp_connect_uri(const char *uri, unsigned flags, struct kqmp_error *err)
{
	struct kqmp_conn_endpoint ep;
	struct kqmp_conn_ssh *t;
	struct kqmp *q;
	int fd;

	if (kqmp_conn_open_endpoint(uri, &ep, &t, &fd, err) < 0) {
		errno = 0;	/* not one for KQMP_F_WAIT to retry */
		return NULL;
	}
	if (!t)
		return kqmp_connect_unix(ep.path, flags, err);
	q = kqmp_new_fd(fd, flags);
	if (!q) {
		close(fd);
		kqmp_conn_ssh_close(t);
		kqmp_seterr(err, KQMP_E_NOMEM, "out of memory connecting to '%s'", uri);
		return NULL;
	}
	q->c.ssh = t;
	if (kqmp_set_name(q, uri) < 0) {
		kqmp_close(q);
		kqmp_seterr(err, KQMP_E_NOMEM, "out of memory connecting to '%s'", uri);
		return NULL;
	}
	return q;
}

void kqmp_close(struct kqmp *q)
{
	if (!q || !kqmp_conn_close(&q->c, "%s: connection closed by the caller", q->c.name))
		return;
	json_object_put(q->version);
	free(q);
}

/* ---- accessors --------------------------------------------------------- */

int kqmp_fd(const struct kqmp *q)
{
	return q->c.fd;
}

bool kqmp_want_write(const struct kqmp *q)
{
	return kqmp_conn_want_write(&q->c);
}

enum kqmp_state kqmp_get_state(const struct kqmp *q)
{
	if (q->c.failed)
		return KQMP_FAILED;
	return q->ready ? KQMP_READY : KQMP_HANDSHAKE;
}

const struct kqmp_error *kqmp_last_error(const struct kqmp *q)
{
	return &q->c.error;
}

json_object *kqmp_version(const struct kqmp *q)
{
	return q->version;
}

const char *kqmp_name(const struct kqmp *q)
{
	return q->c.name;
}

int kqmp_set_name(struct kqmp *q, const char *name)
{
	return kqmp_conn_set_name(&q->c, name);
}

bool kqmp_oob_enabled(const struct kqmp *q)
{
	return q->oob_enabled;
}

size_t kqmp_pending(const struct kqmp *q)
{
	return q->c.npending;
}

void kqmp_set_log(struct kqmp *q, kqmp_log_fn fn, void *arg)
{
	q->c.log_fn = (void (*)(void))fn;
	q->c.log_arg = arg;
}

void kqmp_set_max_msg(struct kqmp *q, size_t bytes)
{
	kqmp_reader_set_max_msg(q->c.rd, bytes);
}

/* ---- sending ----------------------------------------------------------- */

/* Commands sent during the handshake are held until it completes. */
static uint64_t send_common(struct kqmp *q, const char *command, json_object *args,
			    kqmp_reply_fn fn, void *arg, bool oob,
			    struct kqmp_conn_wait *wait)
{
	if (q->c.failed || q->c.close_requested || !command || !*command ||
	    (args && !json_object_is_type(args, json_type_object)) ||
	    (oob && (!(q->flags & KQMP_F_OOB) || (q->ready && !q->oob_enabled)))) {
		json_object_put(args);
		return 0;
	}
	return kqmp_conn_send(&q->c, command, args, oob, !q->ready, (void (*)(void))fn,
			   arg, wait);
}

uint64_t kqmp_send(struct kqmp *q, const char *command, json_object *args,
		   kqmp_reply_fn fn, void *arg)
{
	return send_common(q, command, args, fn, arg, false, NULL);
}

uint64_t kqmp_send_oob(struct kqmp *q, const char *command, json_object *args,
		       kqmp_reply_fn fn, void *arg)
{
	return send_common(q, command, args, fn, arg, true, NULL);
}

bool kqmp_cancel(struct kqmp *q, uint64_t id)
{
	return kqmp_conn_cancel(&q->c, id);
}

/* ---- receiving --------------------------------------------------------- */

/* The handshake is over: release commands queued during it. */
static void become_ready(struct kqmp *q)
{
	struct kqmp_conn_cmd *refused = NULL, **rtail = &refused;
	struct kqmp_error e;

	q->ready = true;
	for (struct kqmp_conn_cmd *c = q->c.head, *next; c; c = next) {
		next = c->next;
		if (!c->held)
			continue;
		if (c->oob && !q->oob_enabled) {
			kqmp_conn_unlink(&q->c, c);
			*rtail = c;
			rtail = &c->next;
			continue;
		}
		if (kqmp_conn_out_append(&q->c, c->held, strlen(c->held)) < 0 ||
		    kqmp_conn_out_append(&q->c, "\n", 1) < 0) {
			kqmp_conn_fail(&q->c, KQMP_E_NOMEM, "%s: out of memory queueing commands",
				    q->c.name);
			fail_list(q, refused, &q->c.error);
			return;
		}
		free(c->held);
		c->held = NULL;
	}
	kqmp_seterr(&e, KQMP_E_INVAL,
		  "%s: out-of-band command refused: the server did not offer the 'oob' capability",
		  q->c.name);
	fail_list(q, refused, &e);
}

static void on_greeting(struct kqmp *q, const struct kqmp_msg *m)
{
	json_object *args = NULL;
	bool offered = false;

	for (size_t i = 0; i < json_object_array_length(m->caps); i++) {
		const char *cap = json_object_get_string(json_object_array_get_idx(m->caps, i));

		if (cap && !strcmp(cap, "oob"))
			offered = true;
	}
	q->greeted = true;
	q->version = json_object_get(m->version);
	if ((q->flags & KQMP_F_OOB) && offered) {
		json_object *list = json_object_new_array();

		args = json_object_new_object();
		json_object_array_add(list, json_object_new_string("oob"));
		json_object_object_add(args, "enable", list);
		q->oob_enabled = true;
	}
	q->caps_id = kqmp_conn_send_untracked(&q->c, "qmp_capabilities", args);
	if (!q->caps_id)
		kqmp_conn_fail(&q->c, KQMP_E_NOMEM, "%s: out of memory", q->c.name);
}

static void on_caps_reply(struct kqmp *q, const struct kqmp_msg *m)
{
	if (m->type == KQMP_MSG_ERROR) {
		kqmp_conn_fail(&q->c, KQMP_E_PROTOCOL, "%s: qmp_capabilities refused: %s: %s",
			    q->c.name, m->cls, m->desc);
		return;
	}
	become_ready(q);
}

static void on_event(struct kqmp *q, const struct kqmp_msg *m)
{
	if (!kqmp_conn_event_push(&q->c, m->event, m->data, m->sec, m->usec))
		kqmp_conn_fail(&q->c, KQMP_E_NOMEM, "%s: out of memory queueing an event",
			    q->c.name);
}

/* With oob on, QEMU may drop an in-band command when its queue is full;
 * it says so with an event naming the id, and that is the reply. */
static bool on_command_dropped(struct kqmp *q, const struct kqmp_msg *m)
{
	struct kqmp_msg fake = { .id = NULL };
	json_object *reason = NULL;
	struct kqmp_error e;
	struct kqmp_conn_cmd *c;

	if (strcmp(m->event, "COMMAND_DROPPED") ||
	    !json_object_object_get_ex(m->data, "id", &fake.id))
		return false;
	c = kqmp_conn_find(&q->c, kqmp_msg_id(&fake));
	if (!c)
		return false;
	json_object_object_get_ex(m->data, "reason", &reason);
	e.kind = KQMP_E_QMP;
	snprintf(e.cls, sizeof(e.cls), "CommandDropped");
	snprintf(e.desc, sizeof(e.desc), "QEMU dropped '%s': %s", c->name,
		 reason ? json_object_get_string(reason) : "no reason given");
	kqmp_one_line(e.desc);
	kqmp_conn_unlink(&q->c, c);
	kqmp_conn_finish(&q->c, c, NULL, &e);
	return true;
}

static void on_reply(struct kqmp *q, const struct kqmp_msg *m, json_object *msg)
{
	uint64_t id = kqmp_msg_id(m);
	struct kqmp_conn_cmd *c = id ? kqmp_conn_find(&q->c, id) : NULL;
	struct kqmp_error e = { .kind = KQMP_E_QMP };
	char quoted[200];

	if (!q->ready && id && id == q->caps_id) {
		on_caps_reply(q, m);
		return;
	}
	if (!c) {
		kqmp_conn_log(&q->c, "%s: dropped a reply with an unknown id: %s", q->c.name,
		       kqmp_quote_json(quoted, sizeof(quoted), msg));
		return;
	}
	kqmp_conn_unlink(&q->c, c);
	if (m->type == KQMP_MSG_RETURN && m->ret) {
		kqmp_conn_finish(&q->c, c, m->ret, NULL);
		return;
	}
	if (m->type == KQMP_MSG_RETURN) {
		/* Keeps "exactly one of ret/err"; QEMU never does this. */
		kqmp_seterr(&e, KQMP_E_PROTOCOL, "%s: '%s' returned null",
			  q->c.name, c->name);
	} else {
		snprintf(e.cls, sizeof(e.cls), "%s", m->cls);
		snprintf(e.desc, sizeof(e.desc), "%s", m->desc);
		kqmp_one_line(e.cls);
		kqmp_one_line(e.desc);
	}
	kqmp_conn_finish(&q->c, c, NULL, &e);
}

static void on_message(struct kqmp_conn *c, json_object *msg)
{
	struct kqmp *q = KQ(c);
	struct kqmp_error e;
	struct kqmp_msg m;
	char quoted[240];

	if (kqmp_classify(msg, &m, &e) < 0) {
		kqmp_conn_fail(c, KQMP_E_PROTOCOL, "%s: %s", c->name, e.desc);
		return;
	}
	if (!q->greeted) {
		if (m.type != KQMP_MSG_GREETING) {
			kqmp_conn_fail(c, KQMP_E_PROTOCOL,
				    "%s: not a QMP server: its first message was %s",
				    c->name, kqmp_quote_json(quoted, sizeof(quoted), msg));
			return;
		}
		on_greeting(q, &m);
		return;
	}
	switch (m.type) {
	case KQMP_MSG_RETURN:
	case KQMP_MSG_ERROR:
		on_reply(q, &m, msg);
		break;
	case KQMP_MSG_EVENT:
		if (!on_command_dropped(q, &m))
			on_event(q, &m);
		break;
	case KQMP_MSG_GREETING:
	case KQMP_MSG_UNKNOWN:
		kqmp_conn_log(&q->c, "%s: dropped an unexpected message: %s", c->name,
		       kqmp_quote_json(quoted, sizeof(quoted), msg));
		break;
	}
}

int kqmp_dispatch(struct kqmp *q, struct kqmp_error *err)
{
	bool freed;

	return kqmp_conn_dispatch(&q->c, err, &freed);
}

/* ---- events ------------------------------------------------------------ */

int kqmp_event_pop(struct kqmp *q, struct kqmp_event *ev)
{
	return kqmp_conn_event_pop(&q->c, ev);
}

uint64_t kqmp_events_dropped(const struct kqmp *q)
{
	return q->c.events_dropped;
}

void kqmp_event_clear(struct kqmp_event *ev)
{
	free(ev->name);
	json_object_put(ev->data);
	ev->name = NULL;
	ev->data = NULL;
}

/* ---- blocking helpers -------------------------------------------------- */

static int64_t deadline_of(int timeout_ms)
{
	return timeout_ms < 0 ? -1 : kqmp_conn_now_ms() + timeout_ms;
}

static int refuse_in_callback(struct kqmp *q, struct kqmp_error *err)
{
	if (q->c.depth == 0)
		return 0;
	kqmp_seterr(err, KQMP_E_INVAL,
		  "%s: a blocking kqmp call was made from inside a reply callback",
		  q->c.name);
	return -1;
}

/* Connects, retrying ENOENT/ECONNREFUSED until the deadline with
 * KQMP_F_WAIT. */
static struct kqmp *connect_maybe_wait(const char *path, unsigned flags,
				       int64_t deadline, int timeout_ms,
				       struct kqmp_error *err)
{
	struct kqmp_error e;

	for (;;) {
		struct kqmp *q = kqmp_connect_uri(path, flags, &e);
		bool starting = !q && e.kind == KQMP_E_CONNECT &&
				(errno == ENOENT || errno == ECONNREFUSED);

		if (q || !starting || !(flags & KQMP_F_WAIT)) {
			if (!q && err)
				*err = e;
			return q;
		}
		if (deadline >= 0 && kqmp_conn_now_ms() + 20 > deadline) {
			kqmp_seterr(err, KQMP_E_CONNECT, "%s (still, after waiting %d ms)",
				  e.desc, timeout_ms);
			return NULL;
		}
		usleep(20 * 1000);
	}
}

struct kqmp *kqmp_open(const char *path, unsigned flags, int timeout_ms,
		       struct kqmp_error *err)
{
	int64_t deadline = deadline_of(timeout_ms);
	struct kqmp *q = connect_maybe_wait(path, flags, deadline, timeout_ms, err);

	while (q && kqmp_get_state(q) == KQMP_HANDSHAKE) {
		int r = kqmp_conn_step(&q->c, deadline, err);

		if (r == KQMP_CONN_STEP_FREED)
			return NULL;	/* cannot happen: no callbacks yet */
		if (r == 1)
			kqmp_seterr(err, KQMP_E_TIMEOUT, q->greeted ?
				  "%s: no reply to qmp_capabilities within %d ms" :
				  "%s: no QMP greeting within %d ms (is another client "
				  "already connected to this monitor?)", path, timeout_ms);
		if (r != 0) {
			kqmp_close(q);
			return NULL;
		}
	}
	return q;
}

int kqmp_execute(struct kqmp *q, const char *command, json_object *args,
		 int timeout_ms, json_object **ret, struct kqmp_error *err)
{
	struct kqmp_conn_wait w = { .done = false };
	int64_t deadline = deadline_of(timeout_ms);
	uint64_t id;
	int r;

	if (ret)
		*ret = NULL;
	if (refuse_in_callback(q, err) < 0) {
		json_object_put(args);
		return -1;
	}
	if (q->c.failed) {
		json_object_put(args);
		kqmp_seterr(err, KQMP_E_CLOSED, "%s", q->c.error.desc);
		return -1;
	}
	id = send_common(q, command, args, NULL, NULL, false, &w);
	if (!id) {
		kqmp_seterr(err, KQMP_E_INVAL, "%s: cannot send command %s%s%s", q->c.name,
			  command ? "'" : "", command ? command : "(null)", command ? "'" : "");
		return -1;
	}
	r = kqmp_conn_wait(&q->c, &w, deadline, err);
	if (r == KQMP_CONN_STEP_FREED)
		return -1;	/* err says a callback closed q */
	if (r != 0) {
		/* Still pending: its late reply must not touch our stack. */
		kqmp_cancel(q, id);
		if (r == 1 && !q->greeted)
			kqmp_seterr(err, KQMP_E_TIMEOUT,
				  "%s: no QMP greeting within %d ms (is another "
				  "client already connected to this monitor?)",
				  q->c.name, timeout_ms);
		else if (r == 1)
			kqmp_seterr(err, KQMP_E_TIMEOUT, "%s: no reply to '%s' within %d ms",
				  q->c.name, command, timeout_ms);
		return -1;
	}
	if (!w.ret && w.err.kind != KQMP_OK) {
		if (err)
			*err = w.err;
		return -1;
	}
	if (ret)
		*ret = w.ret;
	else
		json_object_put(w.ret);
	return 0;
}

int kqmp_wait_event(struct kqmp *q, const char *name, kqmp_event_match_fn match,
		    void *arg, int timeout_ms, struct kqmp_event *ev,
		    struct kqmp_error *err)
{
	int64_t deadline = deadline_of(timeout_ms);

	if (refuse_in_callback(q, err) < 0)
		return -1;
	for (;;) {
		if (kqmp_conn_event_take(&q->c, name, match, arg, ev))
			return 0;

		int r = kqmp_conn_step(&q->c, deadline, err);

		if (r == 1) {
			kqmp_seterr(err, KQMP_E_TIMEOUT, "%s: no '%s' event within %d ms",
				  q->c.name, name, timeout_ms);
			return -1;
		}
		if (r == KQMP_CONN_STEP_FREED)
			return -1;
		if (r < 0) {
			/* It may have come with the bytes read just before EOF. */
			if (kqmp_conn_event_take(&q->c, name, match, arg, ev))
				return 0;
			return -1;
		}
	}
}
