/* SPDX-License-Identifier: MIT */
/*
 * The host side of the symvirt channel; see symvirt-client.h.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "qmp/kawarimi-qmp.h"
#include "symvirt-client.h"

struct sv_pending {
	uint64_t id;
	symvirt_reply_fn fn;
	void *arg;
	struct sv_pending *next;
};

struct sv_evnode {
	struct symvirt_event ev;
	struct sv_evnode *next;
};

struct symvirt {
	int fd;
	char name[256];
	struct kjson_reader *reader;
	char *out;		/* queued output */
	size_t out_len, out_cap;
	uint64_t next_id;
	struct sv_pending *pending;
	struct sv_evnode *ev_head, *ev_tail;
	bool failed;
	struct symvirt_error last;
	symvirt_log_fn log_fn;
	void *log_arg;
};

static const char *const kind_names[] = {
	[SYMVIRT_OK] = "ok",
	[SYMVIRT_E_AGENT] = "agent error",
	[SYMVIRT_E_CONNECT] = "connect error",
	[SYMVIRT_E_IO] = "I/O error",
	[SYMVIRT_E_PROTOCOL] = "protocol error",
	[SYMVIRT_E_TIMEOUT] = "timeout",
	[SYMVIRT_E_CLOSED] = "connection closed",
	[SYMVIRT_E_NOMEM] = "out of memory",
	[SYMVIRT_E_INVAL] = "invalid argument",
};

const char *symvirt_err_kind_name(enum symvirt_err_kind kind)
{
	if ((unsigned)kind < sizeof(kind_names) / sizeof(kind_names[0]))
		return kind_names[kind];
	return "unknown error";
}

__attribute__((format(printf, 3, 4)))
static void set_err(struct symvirt_error *err, enum symvirt_err_kind kind,
		    const char *fmt, ...)
{
	va_list ap;

	if (!err)
		return;
	err->kind = kind;
	err->cls[0] = '\0';
	va_start(ap, fmt);
	vsnprintf(err->desc, sizeof(err->desc), fmt, ap);
	va_end(ap);
}

__attribute__((format(printf, 2, 3)))
static void sv_log(struct symvirt *s, const char *fmt, ...)
{
	char msg[600];
	va_list ap;

	if (!s->log_fn)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	s->log_fn(s, msg, s->log_arg);
}

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

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
	int fl;

	if (!s)
		return NULL;
	s->reader = kjson_reader_new(SYMVIRT_MAX_REPLY);
	if (!s->reader) {
		free(s);
		return NULL;
	}
	s->fd = fd;
	fl = fcntl(fd, F_GETFL);
	if (fl >= 0)
		fcntl(fd, F_SETFL, fl | O_NONBLOCK);
	if (name)
		snprintf(s->name, sizeof(s->name), "%s", name);
	else
		snprintf(s->name, sizeof(s->name), "fd %d", fd);
	s->next_id = first_id();
	return s;
}

struct symvirt *symvirt_connect_unix(const char *path, struct symvirt_error *err)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct symvirt *s;
	int fd;

	if (!path || !*path) {
		set_err(err, SYMVIRT_E_INVAL, "no socket path given");
		return NULL;
	}
	if (strlen(path) >= sizeof(sa.sun_path)) {
		set_err(err, SYMVIRT_E_INVAL, "socket path '%s' is longer than %zu bytes",
			path, sizeof(sa.sun_path) - 1);
		return NULL;
	}
	memcpy(sa.sun_path, path, strlen(path) + 1);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		set_err(err, SYMVIRT_E_CONNECT, "socket: %s", strerror(errno));
		return NULL;
	}
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		set_err(err, SYMVIRT_E_CONNECT, "cannot connect to '%s': %s", path,
			strerror(errno));
		close(fd);
		return NULL;
	}
	s = symvirt_new_fd(fd, path);
	if (!s) {
		close(fd);
		set_err(err, SYMVIRT_E_NOMEM, "out of memory");
	}
	return s;
}

struct symvirt *symvirt_open(const char *path, int timeout_ms, json_object **hello,
			     struct symvirt_error *err)
{
	struct symvirt *s = symvirt_connect_unix(path, err);

	if (!s)
		return NULL;
	if (symvirt_sync(s, timeout_ms, 0, hello, err) < 0) {
		symvirt_close(s);
		return NULL;
	}
	return s;
}

static void fail_pending(struct symvirt *s, const struct symvirt_error *e)
{
	while (s->pending) {
		struct sv_pending *p = s->pending;

		s->pending = p->next;
		if (p->fn)
			p->fn(s, NULL, e, p->arg);
		free(p);
	}
}

static void fail(struct symvirt *s, const struct symvirt_error *e)
{
	if (s->failed)
		return;
	s->failed = true;
	s->last = *e;
	fail_pending(s, e);
}

void symvirt_close(struct symvirt *s)
{
	struct symvirt_error e;

	if (!s)
		return;
	set_err(&e, SYMVIRT_E_CLOSED, "connection to %s closed by the caller", s->name);
	s->failed = true;
	fail_pending(s, &e);
	while (s->ev_head) {
		struct sv_evnode *n = s->ev_head;

		s->ev_head = n->next;
		symvirt_event_clear(&n->ev);
		free(n);
	}
	kjson_reader_free(s->reader);
	if (s->fd >= 0)
		close(s->fd);
	free(s->out);
	free(s);
}

int symvirt_fd(const struct symvirt *s)
{
	return s->fd;
}

bool symvirt_want_write(const struct symvirt *s)
{
	return !s->failed && s->out_len > 0;
}

bool symvirt_is_open(const struct symvirt *s)
{
	return !s->failed;
}

const struct symvirt_error *symvirt_last_error(const struct symvirt *s)
{
	return &s->last;
}

const char *symvirt_name(const struct symvirt *s)
{
	return s->name;
}

void symvirt_set_log(struct symvirt *s, symvirt_log_fn fn, void *arg)
{
	s->log_fn = fn;
	s->log_arg = arg;
}

/* ---- messages ------------------------------------------------------------ */

static struct sv_pending *take_pending(struct symvirt *s, uint64_t id)
{
	for (struct sv_pending **pp = &s->pending; *pp; pp = &(*pp)->next) {
		if ((*pp)->id == id) {
			struct sv_pending *p = *pp;

			*pp = p->next;
			return p;
		}
	}
	return NULL;
}

static void queue_event(struct symvirt *s, json_object *msg)
{
	struct sv_evnode *n = calloc(1, sizeof(*n));
	json_object *v, *ts;

	if (!n)
		return;
	json_object_object_get_ex(msg, "event", &v);
	n->ev.name = strdup(json_object_get_string(v));
	if (!n->ev.name) {
		free(n);
		return;
	}
	if (json_object_object_get_ex(msg, "data", &v) && v)
		n->ev.data = json_object_get(v);
	if (json_object_object_get_ex(msg, "timestamp", &ts) &&
	    json_object_is_type(ts, json_type_object)) {
		if (json_object_object_get_ex(ts, "seconds", &v))
			n->ev.sec = json_object_get_int64(v);
		if (json_object_object_get_ex(ts, "microseconds", &v))
			n->ev.usec = json_object_get_int64(v);
	}
	if (s->ev_tail)
		s->ev_tail->next = n;
	else
		s->ev_head = n;
	s->ev_tail = n;
}

/* An error reply: {"class": S, "desc": S}; anything else is a protocol error
 * the caller still hears about, as an agent error of class "GenericError". */
static void error_from_reply(struct symvirt *s, json_object *e, struct symvirt_error *out)
{
	json_object *cls = NULL, *desc = NULL;

	json_object_object_get_ex(e, "class", &cls);
	json_object_object_get_ex(e, "desc", &desc);
	out->kind = SYMVIRT_E_AGENT;
	snprintf(out->cls, sizeof(out->cls), "%s",
		 json_object_is_type(cls, json_type_string) ?
		 json_object_get_string(cls) : "GenericError");
	snprintf(out->desc, sizeof(out->desc), "%s",
		 json_object_is_type(desc, json_type_string) ?
		 json_object_get_string(desc) : "(the agent's error reply had no desc)");
	(void)s;
}

static void handle_reply(struct symvirt *s, json_object *msg)
{
	json_object *idv = NULL, *ret = NULL, *errv = NULL;
	struct sv_pending *p;
	struct symvirt_error e;

	json_object_object_get_ex(msg, "id", &idv);
	json_object_object_get_ex(msg, "return", &ret);
	json_object_object_get_ex(msg, "error", &errv);
	if (!idv || !json_object_is_type(idv, json_type_int)) {
		/* The agent answers unparsable input without an id. */
		if (errv && json_object_is_type(errv, json_type_object)) {
			error_from_reply(s, errv, &e);
			sv_log(s, "%s: error without id: %s: %s", s->name, e.cls, e.desc);
		} else {
			sv_log(s, "%s: reply without a usable id dropped", s->name);
		}
		return;
	}
	p = take_pending(s, (uint64_t)json_object_get_int64(idv));
	if (!p) {
		sv_log(s, "%s: reply with unknown id %s dropped (an earlier connection's?)",
		       s->name, json_object_get_string(idv));
		return;
	}
	if (errv) {
		if (!json_object_is_type(errv, json_type_object)) {
			set_err(&e, SYMVIRT_E_PROTOCOL, "%s: \"error\" is not an object", s->name);
		} else {
			error_from_reply(s, errv, &e);
		}
		if (p->fn)
			p->fn(s, NULL, &e, p->arg);
	} else if (p->fn) {
		p->fn(s, ret, NULL, p->arg);
	}
	free(p);
}

static void handle_message(struct symvirt *s, json_object *msg)
{
	json_object *v;

	if (json_object_object_get_ex(msg, "event", &v)) {
		if (json_object_is_type(v, json_type_string))
			queue_event(s, msg);
		else
			sv_log(s, "%s: event whose name is not a string dropped", s->name);
		return;
	}
	if (json_object_object_get_ex(msg, "return", &v) ||
	    json_object_object_get_ex(msg, "error", &v)) {
		handle_reply(s, msg);
		return;
	}
	sv_log(s, "%s: message that is neither reply nor event dropped: %.200s", s->name,
	       json_object_to_json_string_ext(msg, JSON_C_TO_STRING_PLAIN));
}

static int append_out(struct symvirt *s, const char *buf, size_t len)
{
	if (s->out_len + len > s->out_cap) {
		size_t cap = s->out_cap ? s->out_cap : 4096;
		char *n;

		while (cap < s->out_len + len)
			cap *= 2;
		n = realloc(s->out, cap);
		if (!n)
			return -1;
		s->out = n;
		s->out_cap = cap;
	}
	memcpy(s->out + s->out_len, buf, len);
	s->out_len += len;
	return 0;
}

uint64_t symvirt_send(struct symvirt *s, const char *command, json_object *args,
		      symvirt_reply_fn fn, void *arg)
{
	json_object *msg;
	struct sv_pending *p;
	const char *text;
	uint64_t id;

	if (s->failed || !command) {
		json_object_put(args);
		return 0;
	}
	p = calloc(1, sizeof(*p));
	msg = json_object_new_object();
	if (!p || !msg) {
		free(p);
		json_object_put(msg);
		json_object_put(args);
		return 0;
	}
	id = s->next_id++;
	json_object_object_add(msg, "execute", json_object_new_string(command));
	if (args)
		json_object_object_add(msg, "arguments", args);
	json_object_object_add(msg, "id", json_object_new_int64((int64_t)id));
	text = json_object_to_json_string_ext(msg, JSON_C_TO_STRING_PLAIN);
	if (append_out(s, text, strlen(text)) < 0 || append_out(s, "\n", 1) < 0) {
		json_object_put(msg);
		free(p);
		return 0;
	}
	json_object_put(msg);
	p->id = id;
	p->fn = fn;
	p->arg = arg;
	p->next = s->pending;
	s->pending = p;
	return id;
}

int symvirt_cancel(struct symvirt *s, uint64_t id)
{
	struct sv_pending *p = take_pending(s, id);

	if (!p)
		return -1;
	/* Keep a callback-less entry so the late reply is dropped quietly. */
	p->fn = NULL;
	p->arg = NULL;
	p->next = s->pending;
	s->pending = p;
	return 0;
}

size_t symvirt_pending(const struct symvirt *s)
{
	size_t n = 0;

	for (const struct sv_pending *p = s->pending; p; p = p->next)
		if (p->fn)
			n++;
	return n;
}

static int do_write(struct symvirt *s, struct symvirt_error *err)
{
	while (s->out_len > 0) {
		ssize_t n = send(s->fd, s->out, s->out_len, MSG_NOSIGNAL);

		if (n < 0 && errno == ENOTSOCK)
			n = write(s->fd, s->out, s->out_len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return 0;
			set_err(err, SYMVIRT_E_IO, "write to %s: %s", s->name, strerror(errno));
			return -1;
		}
		memmove(s->out, s->out + n, s->out_len - (size_t)n);
		s->out_len -= (size_t)n;
	}
	return 0;
}

static int do_read(struct symvirt *s, struct symvirt_error *err)
{
	char buf[16384];
	struct kqmp_error ke;

	for (;;) {
		ssize_t n = read(s->fd, buf, sizeof(buf));

		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return 0;
			set_err(err, SYMVIRT_E_IO, "read from %s: %s", s->name, strerror(errno));
			return -1;
		}
		if (n == 0) {
			set_err(err, SYMVIRT_E_IO, "%s closed the connection", s->name);
			return -1;
		}
		if (kjson_reader_feed(s->reader, buf, (size_t)n, &ke) < 0) {
			set_err(err, SYMVIRT_E_PROTOCOL, "from %s: %s", s->name, ke.desc);
			return -1;
		}
		for (;;) {
			json_object *msg = NULL;
			int r = kjson_reader_next(s->reader, &msg, &ke);

			if (r < 0) {
				set_err(err, SYMVIRT_E_PROTOCOL, "from %s: %s", s->name, ke.desc);
				return -1;
			}
			if (r == 0)
				break;
			handle_message(s, msg);
			json_object_put(msg);
		}
	}
}

int symvirt_dispatch(struct symvirt *s, struct symvirt_error *err)
{
	struct symvirt_error e;

	if (s->failed) {
		if (err)
			*err = s->last;
		return -1;
	}
	if (do_write(s, &e) < 0 || do_read(s, &e) < 0 || do_write(s, &e) < 0) {
		fail(s, &e);
		if (err)
			*err = e;
		return -1;
	}
	return 0;
}

/* Polls and dispatches once, waiting at most until deadline (ms, monotonic). */
static int wait_once(struct symvirt *s, int64_t deadline, struct symvirt_error *err)
{
	struct pollfd pfd = { .fd = s->fd, .events = POLLIN };
	int64_t left = deadline - now_ms();
	int r;

	if (left < 0)
		left = 0;
	if (symvirt_want_write(s))
		pfd.events |= POLLOUT;
	r = poll(&pfd, 1, (int)left);
	if (r < 0 && errno != EINTR) {
		set_err(err, SYMVIRT_E_IO, "poll on %s: %s", s->name, strerror(errno));
		return -1;
	}
	return symvirt_dispatch(s, err);
}

struct sv_wait {
	bool done;
	json_object *ret;
	struct symvirt_error err;
};

static void wait_cb(struct symvirt *s, json_object *ret, const struct symvirt_error *err,
		    void *arg)
{
	struct sv_wait *w = arg;

	(void)s;
	/* symvirt_sync() may have several hellos answered in one read: the
	 * first answer counts. */
	if (w->done)
		return;
	w->done = true;
	if (err)
		w->err = *err;
	else
		w->ret = json_object_get(ret);
}

int symvirt_execute(struct symvirt *s, const char *command, json_object *args,
		    int timeout_ms, json_object **ret, struct symvirt_error *err)
{
	struct sv_wait w = { 0 };
	int64_t deadline = now_ms() + (timeout_ms < 0 ? 0 : timeout_ms);
	uint64_t id;

	if (!command) {
		json_object_put(args);
		set_err(err, SYMVIRT_E_INVAL, "no command given");
		return -1;
	}
	if (s->failed) {
		json_object_put(args);
		if (err)
			*err = s->last;
		return -1;
	}
	id = symvirt_send(s, command, args, wait_cb, &w);
	if (!id) {
		set_err(err, SYMVIRT_E_NOMEM, "cannot queue '%s' for %s", command, s->name);
		return -1;
	}
	while (!w.done) {
		if (now_ms() >= deadline) {
			symvirt_cancel(s, id);
			set_err(err, SYMVIRT_E_TIMEOUT, "no reply to '%s' from %s within %d ms",
				command, s->name, timeout_ms);
			return -1;
		}
		if (wait_once(s, deadline, err) < 0 && !w.done)
			return -1;
	}
	if (!w.ret && w.err.kind != SYMVIRT_OK) {
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

static int check_hello(struct symvirt *s, json_object *ret, struct symvirt_error *err)
{
	json_object *v = NULL;

	if (!json_object_is_type(ret, json_type_object) ||
	    !json_object_object_get_ex(ret, "protocol", &v) ||
	    !json_object_is_type(v, json_type_int)) {
		set_err(err, SYMVIRT_E_PROTOCOL, "%s: hello's reply has no integer \"protocol\"",
			s->name);
		return -1;
	}
	if (json_object_get_int64(v) != SYMVIRT_PROTOCOL_VERSION) {
		set_err(err, SYMVIRT_E_PROTOCOL,
			"%s speaks symvirt protocol %" PRId64 ", this client %d; install matching versions",
			s->name, json_object_get_int64(v), SYMVIRT_PROTOCOL_VERSION);
		return -1;
	}
	return 0;
}

#define MAX_HELLOS 64

int symvirt_sync(struct symvirt *s, int timeout_ms, int retry_ms,
		 json_object **hello, struct symvirt_error *err)
{
	struct sv_wait w = { 0 };
	uint64_t ids[MAX_HELLOS];
	size_t nids = 0;
	int64_t start = now_ms(), deadline = start + (timeout_ms < 0 ? 0 : timeout_ms);
	int64_t next_send = start;
	int rc = -1;

	if (retry_ms <= 0)
		retry_ms = 500;
	while (!w.done) {
		int64_t t = now_ms();

		if (t >= deadline) {
			set_err(err, SYMVIRT_E_TIMEOUT,
				"no agent answered on %s within %d ms (%zu hello sent); is kawarimi-agent running in the guest?",
				s->name, timeout_ms, nids);
			goto out;
		}
		if (t >= next_send && nids < MAX_HELLOS) {
			uint64_t id = symvirt_send(s, "hello", NULL, wait_cb, &w);

			if (!id) {
				if (err)
					*err = s->failed ? s->last : (struct symvirt_error){
						.kind = SYMVIRT_E_NOMEM, .desc = "out of memory" };
				goto out;
			}
			ids[nids++] = id;
			next_send = t + retry_ms;
		}
		if (wait_once(s, next_send < deadline ? next_send : deadline, err) < 0 && !w.done)
			goto out;
	}
	if (!w.ret) {
		if (err)
			*err = w.err;
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

int symvirt_event_pop(struct symvirt *s, struct symvirt_event *ev)
{
	struct sv_evnode *n = s->ev_head;

	if (!n)
		return 0;
	s->ev_head = n->next;
	if (!s->ev_head)
		s->ev_tail = NULL;
	*ev = n->ev;
	free(n);
	return 1;
}

void symvirt_event_clear(struct symvirt_event *ev)
{
	free(ev->name);
	json_object_put(ev->data);
	memset(ev, 0, sizeof(*ev));
}

/* Removes and returns the first queued event that matches, or NULL. */
static struct sv_evnode *find_event(struct symvirt *s, const char *name,
				    symvirt_event_match_fn match, void *arg)
{
	struct sv_evnode *prev = NULL;

	for (struct sv_evnode *n = s->ev_head; n; prev = n, n = n->next) {
		if (strcmp(n->ev.name, name) || (match && !match(n->ev.data, arg)))
			continue;
		if (prev)
			prev->next = n->next;
		else
			s->ev_head = n->next;
		if (s->ev_tail == n)
			s->ev_tail = prev;
		return n;
	}
	return NULL;
}

int symvirt_wait_event(struct symvirt *s, const char *name,
		       symvirt_event_match_fn match, void *arg, int timeout_ms,
		       struct symvirt_event *ev, struct symvirt_error *err)
{
	int64_t deadline = now_ms() + (timeout_ms < 0 ? 0 : timeout_ms);

	if (!name || !ev) {
		set_err(err, SYMVIRT_E_INVAL, "no event name or result given");
		return -1;
	}
	for (;;) {
		struct sv_evnode *n = find_event(s, name, match, arg);

		if (n) {
			*ev = n->ev;
			free(n);
			return 0;
		}
		if (now_ms() >= deadline) {
			set_err(err, SYMVIRT_E_TIMEOUT, "no %s event from %s within %d ms", name,
				s->name, timeout_ms);
			return -1;
		}
		if (wait_once(s, deadline, err) < 0)
			return -1;
	}
}
