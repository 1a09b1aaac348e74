/* SPDX-License-Identifier: MIT */
/*
 * The host side of the symvirt channel; see symvirt_client.h.
 *
 * The connection itself (write queue, pending commands by id, events,
 * failure of everything pending, poll steps) is the core shared with the
 * QMP client, qmp/conn.h.  What is symvirt's lives here: random first ids,
 * the hello handshake resent until answered, lenient reply shapes, the
 * 1 MiB reply limit, and the symvirt_* types and wording.  Errors are the
 * QMP client's struct kqmp_error.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "qmp/conn.h"
#include "symvirt_client.h"

struct symvirt {
	struct kqmp_conn c;
	struct kqmp_error last;	/* c.error when it failed */
};

#define SV(c)	kqmp_conn_owner(c, struct symvirt, c)

static const char *const kind_names[] = {
	[KQMP_OK] = "ok",
	[KQMP_E_QMP] = "agent error",
	[KQMP_E_CONNECT] = "connect error",
	[KQMP_E_IO] = "I/O error",
	[KQMP_E_PROTOCOL] = "protocol error",
	[KQMP_E_TIMEOUT] = "timeout",
	[KQMP_E_CLOSED] = "connection closed",
	[KQMP_E_NOMEM] = "out of memory",
	[KQMP_E_INVAL] = "invalid argument",
};

const char *symvirt_err_kind_name(enum kqmp_err_kind kind)
{
	if ((unsigned)kind < sizeof(kind_names) / sizeof(kind_names[0]))
		return kind_names[kind];
	return "unknown error";
}

static void copy_err(struct kqmp_error *out, const struct kqmp_error *in)
{
	if (out)
		*out = *in;
}

__attribute__((format(printf, 3, 4)))
static void set_err(struct kqmp_error *err, enum kqmp_err_kind kind,
		    const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	kqmp_conn_vseterr(err, kind, fmt, ap);
	va_end(ap);
}

/* ---- the core's hooks ---------------------------------------------------- */

static void on_message(struct kqmp_conn *c, json_object *msg);

static void deliver(struct kqmp_conn *c, struct kqmp_conn_cmd *cmd, json_object *ret,
		    const struct kqmp_error *err)
{
	((symvirt_reply_fn)cmd->fn)(SV(c), ret, err, cmd->arg);
}

static void io_failed(struct kqmp_conn *c, enum kqmp_conn_io what, int errnum,
		      const struct kqmp_error *rerr)
{
	switch (what) {
	case KQMP_CONN_WRITE:
		kqmp_conn_fail(c, KQMP_E_IO, "write to %s: %s", c->name, strerror(errnum));
		break;
	case KQMP_CONN_READ:
		kqmp_conn_fail(c, KQMP_E_IO, "read from %s: %s", c->name, strerror(errnum));
		break;
	case KQMP_CONN_EOF:
		kqmp_conn_fail(c, KQMP_E_IO, "%s closed the connection", c->name);
		break;
	case KQMP_CONN_BAD_INPUT:
		kqmp_conn_fail(c, KQMP_E_PROTOCOL, "from %s: %s", c->name, rerr->desc);
		break;
	}
}

static void failed(struct kqmp_conn *c)
{
	copy_err(&SV(c)->last, &c->error);
}

static void log_line(struct kqmp_conn *c, const char *msg)
{
	((symvirt_log_fn)c->log_fn)(SV(c), msg, c->log_arg);
}

static void destroy(struct kqmp_conn *c)
{
	symvirt_close(SV(c));
}

static const struct kqmp_conn_ops symvirt_ops = {
	.message = on_message,
	.deliver = deliver,
	.io_failed = io_failed,
	.failed = failed,
	.log = log_line,
	.destroy = destroy,
	.dispatch_fn = "symvirt_dispatch()",
};

/* ---- connection setup ---------------------------------------------------- */

/* Ids start at a random point so a reply to an earlier connection's command,
 * still queued in the guest, never matches one of ours. */
static uint64_t first_id(void)
{
	uint32_t r = 0;

	if (getrandom(&r, sizeof(r), GRND_NONBLOCK) != sizeof(r))
		r = (uint32_t)getpid() ^ (uint32_t)time(NULL);
	return ((uint64_t)(r & 0x3fffff) << 20) + 1;
}

struct symvirt *symvirt_new_fd(int fd, const char *name)
{
	struct symvirt *s = calloc(1, sizeof(*s));
	char fdname[32];
	int fl;

	if (!s)
		return NULL;
	snprintf(fdname, sizeof(fdname), "fd %d", fd);
	if (kqmp_conn_init(&s->c, fd, name ? name : fdname, SYMVIRT_MAX_REPLY, first_id(),
			&symvirt_ops) < 0) {
		free(s);
		return NULL;
	}
	s->c.max_events = SYMVIRT_MAX_EVENTS;
	s->c.max_event_bytes = SYMVIRT_MAX_EVENT_BYTES;
	fl = fcntl(fd, F_GETFL);
	if (fl >= 0)
		fcntl(fd, F_SETFL, fl | O_NONBLOCK);
	return s;
}

struct symvirt *symvirt_connect_unix(const char *path, struct kqmp_error *err)
{
	enum kqmp_conn_connect_step step;
	struct symvirt *s;
	size_t max;
	int fd = kqmp_conn_connect_unix(path, 0, &step, &max);

	if (fd < 0) {
		switch (step) {
		case KQMP_CONN_NO_PATH:
			set_err(err, KQMP_E_INVAL, "no socket path given");
			break;
		case KQMP_CONN_PATH_TOO_LONG:
			set_err(err, KQMP_E_INVAL, "socket path '%s' is longer than %zu bytes",
				path, max);
			break;
		case KQMP_CONN_SOCKET:
			set_err(err, KQMP_E_CONNECT, "socket: %s", strerror(errno));
			break;
		case KQMP_CONN_CONNECT:
			set_err(err, KQMP_E_CONNECT, "cannot connect to '%s': %s", path,
				strerror(errno));
			break;
		}
		return NULL;
	}
	s = symvirt_new_fd(fd, path);
	if (!s) {
		close(fd);
		set_err(err, KQMP_E_NOMEM, "out of memory");
	}
	return s;
}

struct symvirt *symvirt_connect_uri(const char *uri, struct kqmp_error *err)
{
	struct kqmp_conn_endpoint ep;
	struct kqmp_error e;
	struct kqmp_conn_ssh *t;
	struct symvirt *s;
	int fd;

	if (kqmp_conn_open_endpoint(uri, &ep, &t, &fd, &e) < 0) {
		copy_err(err, &e);
		return NULL;
	}
	if (!t)
		return symvirt_connect_unix(ep.path, err);
	s = symvirt_new_fd(fd, uri);
	if (!s) {
		close(fd);
		kqmp_conn_ssh_close(t);
		set_err(err, KQMP_E_NOMEM, "out of memory");
		return NULL;
	}
	s->c.ssh = t;
	return s;
}

struct symvirt *symvirt_open(const char *path, int timeout_ms, json_object **hello,
			     struct kqmp_error *err)
{
	struct symvirt *s = symvirt_connect_uri(path, err);

	if (!s)
		return NULL;
	if (symvirt_sync(s, timeout_ms, 0, hello, err) < 0) {
		symvirt_close(s);
		return NULL;
	}
	return s;
}

void symvirt_close(struct symvirt *s)
{
	if (s && kqmp_conn_close(&s->c, "connection to %s closed by the caller", s->c.name))
		free(s);
}

int symvirt_fd(const struct symvirt *s)
{
	return s->c.fd;
}

bool symvirt_want_write(const struct symvirt *s)
{
	return kqmp_conn_want_write(&s->c);
}

bool symvirt_is_open(const struct symvirt *s)
{
	return !s->c.failed;
}

const struct kqmp_error *symvirt_last_error(const struct symvirt *s)
{
	return &s->last;
}

const char *symvirt_name(const struct symvirt *s)
{
	return s->c.name;
}

void symvirt_set_log(struct symvirt *s, symvirt_log_fn fn, void *arg)
{
	s->c.log_fn = (void (*)(void))fn;
	s->c.log_arg = arg;
}

/* ---- messages ------------------------------------------------------------ */

static void queue_event(struct symvirt *s, json_object *msg)
{
	json_object *v = NULL, *data = NULL, *ts;
	int64_t sec = 0, usec = 0;

	json_object_object_get_ex(msg, "event", &v);
	json_object_object_get_ex(msg, "data", &data);
	if (json_object_object_get_ex(msg, "timestamp", &ts) &&
	    json_object_is_type(ts, json_type_object)) {
		json_object *t;

		if (json_object_object_get_ex(ts, "seconds", &t))
			sec = json_object_get_int64(t);
		if (json_object_object_get_ex(ts, "microseconds", &t))
			usec = json_object_get_int64(t);
	}
	/* Out of memory: the event is dropped, the connection goes on. */
	kqmp_conn_event_push(&s->c, json_object_get_string(v), data, sec, usec);
}

/* An error reply: {"class": S, "desc": S}; anything else is a protocol error
 * the caller still hears about, as an agent error of class "GenericError". */
static void error_from_reply(json_object *e, struct kqmp_error *out)
{
	json_object *cls = NULL, *desc = NULL;

	json_object_object_get_ex(e, "class", &cls);
	json_object_object_get_ex(e, "desc", &desc);
	out->kind = KQMP_E_QMP;
	snprintf(out->cls, sizeof(out->cls), "%s",
		 json_object_is_type(cls, json_type_string) ?
		 json_object_get_string(cls) : "GenericError");
	snprintf(out->desc, sizeof(out->desc), "%s",
		 json_object_is_type(desc, json_type_string) ?
		 json_object_get_string(desc) : "(the agent's error reply had no desc)");
	/* The guest is untrusted and these end up on the operator's
	 * terminal: no escape sequences in them from here on. */
	kqmp_printable(out->cls, sizeof(out->cls), out->cls);
	kqmp_printable(out->desc, sizeof(out->desc), out->desc);
}

static void handle_reply(struct symvirt *s, json_object *msg)
{
	json_object *idv = NULL, *ret = NULL, *errv = NULL;
	struct kqmp_conn_cmd *p;
	struct kqmp_error e;

	json_object_object_get_ex(msg, "id", &idv);
	json_object_object_get_ex(msg, "return", &ret);
	json_object_object_get_ex(msg, "error", &errv);
	if (!idv || !json_object_is_type(idv, json_type_int)) {
		/* The agent answers unparsable input without an id. */
		if (errv && json_object_is_type(errv, json_type_object)) {
			error_from_reply(errv, &e);
			kqmp_conn_log(&s->c, "%s: error without id: %s: %s", s->c.name, e.cls, e.desc);
		} else {
			kqmp_conn_log(&s->c, "%s: reply without a usable id dropped", s->c.name);
		}
		return;
	}
	p = kqmp_conn_find(&s->c, (uint64_t)json_object_get_int64(idv));
	if (!p) {
		kqmp_conn_log(&s->c, "%s: reply with unknown id %s dropped (an earlier connection's?)",
		       s->c.name, json_object_get_string(idv));
		return;
	}
	kqmp_conn_unlink(&s->c, p);
	if (!errv) {
		kqmp_conn_finish(&s->c, p, ret, NULL);
		return;
	}
	if (!json_object_is_type(errv, json_type_object)) {
		e.kind = KQMP_E_PROTOCOL;
		e.cls[0] = '\0';
		snprintf(e.desc, sizeof(e.desc), "%s: \"error\" is not an object", s->c.name);
	} else {
		error_from_reply(errv, &e);
	}
	kqmp_conn_finish(&s->c, p, NULL, &e);
}

static void on_message(struct kqmp_conn *c, json_object *msg)
{
	struct symvirt *s = SV(c);
	json_object *v;

	if (json_object_object_get_ex(msg, "event", &v)) {
		if (json_object_is_type(v, json_type_string))
			queue_event(s, msg);
		else
			kqmp_conn_log(&s->c, "%s: event whose name is not a string dropped", c->name);
		return;
	}
	if (json_object_object_get_ex(msg, "return", &v) ||
	    json_object_object_get_ex(msg, "error", &v)) {
		handle_reply(s, msg);
		return;
	}
	kqmp_conn_log(&s->c, "%s: message that is neither reply nor event dropped: %.200s", c->name,
	       json_object_to_json_string_ext(msg, JSON_C_TO_STRING_PLAIN));
}

/* ---- commands -------------------------------------------------------------- */

static uint64_t send_cmd(struct symvirt *s, const char *command, json_object *args,
			 symvirt_reply_fn fn, void *arg, struct kqmp_conn_wait *w)
{
	if (s->c.failed || s->c.close_requested || !command) {
		json_object_put(args);
		return 0;
	}
	return kqmp_conn_send(&s->c, command, args, false, false, (void (*)(void))fn, arg, w);
}

uint64_t symvirt_send(struct symvirt *s, const char *command, json_object *args,
		      symvirt_reply_fn fn, void *arg)
{
	return send_cmd(s, command, args, fn, arg, NULL);
}

int symvirt_cancel(struct symvirt *s, uint64_t id)
{
	return kqmp_conn_cancel(&s->c, id) ? 0 : -1;
}

size_t symvirt_pending(const struct symvirt *s)
{
	size_t n = 0;

	for (const struct kqmp_conn_cmd *p = s->c.head; p; p = p->next)
		if (p->fn || p->wait)
			n++;
	return n;
}

int symvirt_dispatch(struct symvirt *s, struct kqmp_error *err)
{
	struct kqmp_error e;
	bool freed;

	if (s->c.failed) {
		if (err)
			*err = s->last;
		return -1;
	}
	if (kqmp_conn_dispatch(&s->c, &e, &freed) < 0) {
		copy_err(err, &e);
		return -1;
	}
	return 0;
}

/* ---- blocking helpers ------------------------------------------------------ */

static int64_t deadline_of(int timeout_ms)
{
	return kqmp_conn_now_ms() + (timeout_ms < 0 ? 0 : timeout_ms);
}

int symvirt_execute(struct symvirt *s, const char *command, json_object *args,
		    int timeout_ms, json_object **ret, struct kqmp_error *err)
{
	struct kqmp_conn_wait w = { 0 };
	int64_t deadline = deadline_of(timeout_ms);
	struct kqmp_error e;
	uint64_t id;
	int r;

	if (!command) {
		json_object_put(args);
		set_err(err, KQMP_E_INVAL, "no command given");
		return -1;
	}
	if (s->c.failed) {
		json_object_put(args);
		if (err)
			*err = s->last;
		return -1;
	}
	id = send_cmd(s, command, args, NULL, NULL, &w);
	if (!id) {
		set_err(err, KQMP_E_NOMEM, "cannot queue '%s' for %s", command, s->c.name);
		return -1;
	}
	r = kqmp_conn_wait(&s->c, &w, deadline, &e);
	if (r == 1) {
		symvirt_cancel(s, id);
		set_err(err, KQMP_E_TIMEOUT, "no reply to '%s' from %s within %d ms",
			command, s->c.name, timeout_ms);
		return -1;
	}
	if (r != 0) {
		copy_err(err, &e);
		return -1;
	}
	if (!w.ret && w.err.kind != KQMP_OK) {
		copy_err(err, &w.err);
		return -1;
	}
	if (ret)
		*ret = w.ret;
	else
		json_object_put(w.ret);
	return 0;
}

static int check_hello(struct symvirt *s, json_object *ret, struct kqmp_error *err)
{
	json_object *v = NULL;

	if (!json_object_is_type(ret, json_type_object) ||
	    !json_object_object_get_ex(ret, "protocol", &v) ||
	    !json_object_is_type(v, json_type_int)) {
		set_err(err, KQMP_E_PROTOCOL, "%s: hello's reply has no integer \"protocol\"",
			s->c.name);
		return -1;
	}
	if (json_object_get_int64(v) != SYMVIRT_PROTOCOL_VERSION) {
		set_err(err, KQMP_E_PROTOCOL,
			"%s speaks symvirt protocol %" PRId64 ", this client %d; install matching versions",
			s->c.name, json_object_get_int64(v), SYMVIRT_PROTOCOL_VERSION);
		return -1;
	}
	return 0;
}

#define MAX_HELLOS 64

/* Sends hellos until one is answered: 0 (w done), 1 (timed out), -1 (err
 * set), or KQMP_CONN_STEP_FREED when a callback closed s. */
static int hello_until_answered(struct symvirt *s, struct kqmp_conn_wait *w,
				int timeout_ms, int retry_ms, uint64_t *ids,
				size_t *nids, struct kqmp_error *err)
{
	int64_t start = kqmp_conn_now_ms(), deadline = deadline_of(timeout_ms);
	int64_t next_send = start;
	struct kqmp_error e;

	while (!w->done) {
		int64_t t = kqmp_conn_now_ms();
		int r;

		if (t >= deadline)
			return 1;
		if (t >= next_send && *nids < MAX_HELLOS) {
			uint64_t id = send_cmd(s, "hello", NULL, NULL, NULL, w);

			if (!id) {
				if (s->c.failed && err)
					*err = s->last;
				else if (!s->c.failed)
					set_err(err, KQMP_E_NOMEM, "out of memory");
				return -1;
			}
			ids[(*nids)++] = id;
			next_send = t + retry_ms;
		}
		r = kqmp_conn_step(&s->c, *nids < MAX_HELLOS && next_send < deadline ?
				next_send : deadline, &e);
		if (r == KQMP_CONN_STEP_FREED) {
			copy_err(err, &e);
			return r;
		}
		if (r < 0 && !w->done) {
			copy_err(err, &e);
			return -1;
		}
	}
	return 0;
}

int symvirt_sync(struct symvirt *s, int timeout_ms, int retry_ms,
		 json_object **hello, struct kqmp_error *err)
{
	struct kqmp_conn_wait w = { 0 };
	uint64_t ids[MAX_HELLOS];
	size_t nids = 0;
	int r, rc = -1;

	if (retry_ms <= 0)
		retry_ms = 500;
	r = hello_until_answered(s, &w, timeout_ms, retry_ms, ids, &nids, err);
	if (r == KQMP_CONN_STEP_FREED)
		return -1;
	if (r == 1)
		set_err(err, KQMP_E_TIMEOUT,
			"no agent answered on %s within %d ms (%zu hello sent); is kawarimi-agent running in the guest?",
			s->c.name, timeout_ms, nids);
	if (r != 0)
		goto out;
	if (!w.ret) {
		copy_err(err, &w.err);
		goto out;
	}
	if (check_hello(s, w.ret, err) < 0) {
		json_object_put(w.ret);
		goto out;
	}
	if (hello)
		*hello = w.ret;
	else
		json_object_put(w.ret);
	rc = 0;
out:
	/* The other hellos may still be answered: drop those replies quietly. */
	for (size_t i = 0; i < nids; i++)
		symvirt_cancel(s, ids[i]);
	return rc;
}

/* ---- events ---------------------------------------------------------------- */

static void sv_event(struct symvirt_event *out, const struct kqmp_event *in)
{
	out->name = in->name;
	out->data = in->data;
	out->sec = in->sec;
	out->usec = in->usec;
}

uint64_t symvirt_events_dropped(const struct symvirt *s)
{
	return s->c.events_dropped;
}

int symvirt_event_pop(struct symvirt *s, struct symvirt_event *ev)
{
	struct kqmp_event e;

	if (!kqmp_conn_event_pop(&s->c, &e))
		return 0;
	sv_event(ev, &e);
	return 1;
}

void symvirt_event_clear(struct symvirt_event *ev)
{
	free(ev->name);
	json_object_put(ev->data);
	memset(ev, 0, sizeof(*ev));
}

int symvirt_wait_event(struct symvirt *s, const char *name,
		       symvirt_event_match_fn match, void *arg, int timeout_ms,
		       struct symvirt_event *ev, struct kqmp_error *err)
{
	int64_t deadline = deadline_of(timeout_ms);
	struct kqmp_event e;
	struct kqmp_error ke;

	if (!name || !ev) {
		set_err(err, KQMP_E_INVAL, "no event name or result given");
		return -1;
	}
	for (;;) {
		if (kqmp_conn_event_take(&s->c, name, match, arg, &e)) {
			sv_event(ev, &e);
			return 0;
		}
		if (kqmp_conn_now_ms() >= deadline) {
			set_err(err, KQMP_E_TIMEOUT, "no %s event from %s within %d ms", name,
				s->c.name, timeout_ms);
			return -1;
		}
		if (s->c.failed) {
			if (err)
				*err = s->last;
			return -1;
		}
		if (kqmp_conn_step(&s->c, deadline, &ke) < 0) {
			copy_err(err, &ke);
			return -1;
		}
	}
}
