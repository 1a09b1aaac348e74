/* SPDX-License-Identifier: MIT */
/*
 * The QMP connection: a non-blocking state machine driven by
 * kqmp_dispatch(), plus blocking helpers built on poll().
 *
 * Ownership: a struct kqmp owns its fd (closed by kqmp_close), the reader,
 * the output buffer, one kq_cmd per command awaiting its reply (in send
 * order, so in-order replies match at the head) and the event queue.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "kqmp-internal.h"

#define KQ_DEFAULT_MAX_MSG	(16u << 20)	/* query-qmp-schema is ~200 KiB */
#define KQ_READ_CHUNK		(64u << 10)
#define KQ_MAX_EVENTS		4096		/* beyond: drop the oldest, log */

struct kq_cmd {
	struct kq_cmd *next, *prev;
	uint64_t id;
	kqmp_reply_fn fn;	/* NULL once cancelled: the reply is dropped */
	void *arg;
	char *held;		/* text, while the handshake is not done */
	bool oob;
	char name[];
};

struct kq_ev {
	struct kq_ev *next;
	struct kqmp_event ev;
};

struct kqmp {
	int fd;
	unsigned flags;
	enum kqmp_state state;
	bool greeted;
	bool oob_enabled;
	bool not_socket;	/* adopted fd is a pipe/tty: write(), not send() */
	bool close_requested;	/* kqmp_close() from inside a callback */
	int depth;		/* > 0 while dispatch runs callbacks */
	uint64_t next_id;
	uint64_t caps_id;	/* our qmp_capabilities */
	char *name;
	struct kqmp_error error;
	struct kjson_reader *rd;
	json_object *version;

	char *obuf;
	size_t opos, olen, ocap;

	struct kq_cmd *head, *tail;
	size_t npending;

	struct kq_ev *ev_head, *ev_tail;
	size_t nevents;

	kqmp_log_fn log_fn;
	void *log_arg;
};

/* ---- small helpers ----------------------------------------------------- */

static void kq_log(struct kqmp *q, const char *fmt, ...) KQ_PRINTF(2, 3);

static void kq_log(struct kqmp *q, const char *fmt, ...)
{
	char msg[640];
	va_list ap;

	if (!q->log_fn)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	q->log_fn(q, kq_one_line(msg), q->log_arg);
}

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void cmd_unlink(struct kqmp *q, struct kq_cmd *c)
{
	if (c->prev)
		c->prev->next = c->next;
	else
		q->head = c->next;
	if (c->next)
		c->next->prev = c->prev;
	else
		q->tail = c->prev;
	c->next = c->prev = NULL;
	q->npending--;
}

static void cmd_free(struct kq_cmd *c)
{
	free(c->held);
	free(c);
}

/* Fails a detached list of commands with err, in send order.  The list is
 * detached first so callbacks may send (which then fails) or cancel. */
static void fail_list(struct kqmp *q, struct kq_cmd *list,
		      const struct kqmp_error *err)
{
	while (list) {
		struct kq_cmd *c = list;

		list = c->next;
		if (c->fn)
			c->fn(q, NULL, err, c->arg);
		cmd_free(c);
	}
}

/* The connection is unusable from here on: remember why and fail every
 * command still waiting.  Events already queued stay poppable. */
static void kq_fail(struct kqmp *q, enum kqmp_err_kind kind,
		    const char *fmt, ...) KQ_PRINTF(3, 4);

static void kq_fail(struct kqmp *q, enum kqmp_err_kind kind,
		    const char *fmt, ...)
{
	struct kq_cmd *list = q->head;
	va_list ap;

	if (q->state == KQMP_FAILED)
		return;
	q->state = KQMP_FAILED;
	q->error.kind = kind;
	q->error.cls[0] = '\0';
	va_start(ap, fmt);
	vsnprintf(q->error.desc, sizeof(q->error.desc), fmt, ap);
	va_end(ap);
	kq_one_line(q->error.desc);
	q->head = q->tail = NULL;
	q->npending = 0;
	q->opos = q->olen = 0;
	fail_list(q, list, &q->error);
}

static int out_append(struct kqmp *q, const char *s, size_t len)
{
	if (q->opos == q->olen)
		q->opos = q->olen = 0;
	if (q->ocap - q->olen < len && q->opos) {
		memmove(q->obuf, q->obuf + q->opos, q->olen - q->opos);
		q->olen -= q->opos;
		q->opos = 0;
	}
	if (q->ocap - q->olen < len) {
		size_t cap = q->ocap ? q->ocap : 4096;

		while (cap - q->olen < len)
			cap *= 2;
		char *b = realloc(q->obuf, cap);

		if (!b)
			return -1;
		q->obuf = b;
		q->ocap = cap;
	}
	memcpy(q->obuf + q->olen, s, len);
	q->olen += len;
	return 0;
}

/* ---- construction ------------------------------------------------------ */

struct kqmp *kqmp_new_fd(int fd, unsigned flags)
{
	struct kqmp *q = calloc(1, sizeof(*q));
	char name[32];
	int fl;

	if (!q)
		return NULL;
	snprintf(name, sizeof(name), "fd %d", fd);
	q->name = strdup(name);
	q->rd = kjson_reader_new(KQ_DEFAULT_MAX_MSG);
	if (!q->name || !q->rd) {
		kjson_reader_free(q->rd);
		free(q->name);
		free(q);
		return NULL;
	}
	q->fd = fd;
	q->flags = flags;
	q->state = KQMP_HANDSHAKE;
	q->next_id = 1;
	fl = fcntl(fd, F_GETFL);
	if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
		kq_fail(q, KQMP_E_INVAL, "fd %d: cannot make it non-blocking: %s",
			fd, strerror(errno));
	return q;
}

struct kqmp *kqmp_connect_unix(const char *path, unsigned flags,
			       struct kqmp_error *err)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct kqmp *q;
	int fd;

	if (!path || !*path) {
		kq_seterr(err, KQMP_E_INVAL, "no QMP socket path given");
		return NULL;
	}
	if (strlen(path) >= sizeof(sa.sun_path)) {
		kq_seterr(err, KQMP_E_INVAL,
			  "QMP socket path '%s' is %zu bytes; unix sockets allow at most %zu",
			  path, strlen(path), sizeof(sa.sun_path) - 1);
		return NULL;
	}
	memcpy(sa.sun_path, path, strlen(path) + 1);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0) {
		kq_seterr(err, KQMP_E_CONNECT, "socket(AF_UNIX): %s", strerror(errno));
		return NULL;
	}
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		int e = errno;
		const char *hint = "";

		if (e == ECONNREFUSED)
			hint = " (the socket file exists but nothing listens on it: is QEMU still running?)";
		else if (e == ENOENT)
			hint = " (is QEMU running with -qmp unix:PATH,server=on?)";
		else if (e == EAGAIN)
			hint = " (the monitor's listen backlog is full)";
		kq_seterr(err, KQMP_E_CONNECT, "cannot connect to QMP socket '%s': %s%s",
			  path, strerror(e), hint);
		close(fd);
		errno = e;	/* for kqmp_open's KQMP_F_WAIT */
		return NULL;
	}
	q = kqmp_new_fd(fd, flags);
	if (!q || kqmp_set_name(q, path) < 0) {
		kqmp_close(q);
		if (!q)
			close(fd);
		kq_seterr(err, KQMP_E_NOMEM, "out of memory connecting to '%s'", path);
		return NULL;
	}
	return q;
}

static void fail_pending_closed(struct kqmp *q)
{
	struct kqmp_error e;
	struct kq_cmd *list = q->head;

	kq_seterr(&e, KQMP_E_CLOSED, "%s: connection closed by the caller", q->name);
	q->head = q->tail = NULL;
	q->npending = 0;
	fail_list(q, list, &e);
}

void kqmp_close(struct kqmp *q)
{
	if (!q)
		return;
	if (q->depth > 0) {
		/* Inside a callback: dispatch finishes the job on its way out. */
		q->close_requested = true;
		return;
	}
	/* From here callbacks can neither send (refused) nor re-close. */
	q->close_requested = true;
	q->depth++;
	fail_pending_closed(q);
	while (q->ev_head) {
		struct kq_ev *n = q->ev_head;

		q->ev_head = n->next;
		kqmp_event_clear(&n->ev);
		free(n);
	}
	if (q->fd >= 0)
		close(q->fd);
	kjson_reader_free(q->rd);
	json_object_put(q->version);
	free(q->obuf);
	free(q->name);
	free(q);
}

/* ---- accessors --------------------------------------------------------- */

int kqmp_fd(const struct kqmp *q)
{
	return q->fd;
}

bool kqmp_want_write(const struct kqmp *q)
{
	return q->state != KQMP_FAILED && q->opos < q->olen;
}

enum kqmp_state kqmp_get_state(const struct kqmp *q)
{
	return q->state;
}

const struct kqmp_error *kqmp_last_error(const struct kqmp *q)
{
	return &q->error;
}

json_object *kqmp_version(const struct kqmp *q)
{
	return q->version;
}

const char *kqmp_name(const struct kqmp *q)
{
	return q->name;
}

int kqmp_set_name(struct kqmp *q, const char *name)
{
	char *n = strdup(name);

	if (!n)
		return -1;
	free(q->name);
	q->name = n;
	return 0;
}

bool kqmp_oob_enabled(const struct kqmp *q)
{
	return q->oob_enabled;
}

size_t kqmp_pending(const struct kqmp *q)
{
	return q->npending;
}

void kqmp_set_log(struct kqmp *q, kqmp_log_fn fn, void *arg)
{
	q->log_fn = fn;
	q->log_arg = arg;
}

void kqmp_set_max_msg(struct kqmp *q, size_t bytes)
{
	kjson_reader_set_max_msg(q->rd, bytes);
}

/* ---- sending ----------------------------------------------------------- */

/* Serializes {"execute": command, "arguments": args, "id": id}; the
 * returned text lives as long as *holder. */
static const char *cmd_text(const char *command, json_object *args, uint64_t id,
			    bool oob, json_object **holder, size_t *len)
{
	json_object *o = json_object_new_object();
	const char *s;

	*holder = o;
	if (!o)
		return NULL;
	if (json_object_object_add(o, oob ? "exec-oob" : "execute",
				   json_object_new_string(command)) ||
	    (args && json_object_object_add(o, "arguments", json_object_get(args))) ||
	    json_object_object_add(o, "id", json_object_new_int64((int64_t)id)))
		return NULL;
	s = json_object_to_json_string_length(o, JSON_C_TO_STRING_PLAIN |
					      JSON_C_TO_STRING_NOSLASHESCAPE, len);
	return s;
}

static uint64_t send_common(struct kqmp *q, const char *command, json_object *args,
			    kqmp_reply_fn fn, void *arg, bool oob)
{
	struct kq_cmd *c = NULL;
	json_object *holder = NULL;
	const char *text;
	size_t len, nlen;
	uint64_t id;

	if (q->state == KQMP_FAILED || q->close_requested || !command || !*command ||
	    (args && !json_object_is_type(args, json_type_object)) ||
	    (oob && (!(q->flags & KQMP_F_OOB) ||
		     (q->state == KQMP_READY && !q->oob_enabled))))
		goto fail;
	id = q->next_id++;
	text = cmd_text(command, args, id, oob, &holder, &len);
	nlen = strlen(command) + 1;
	c = text ? calloc(1, sizeof(*c) + nlen) : NULL;
	if (!c)
		goto fail;
	c->id = id;
	c->fn = fn;
	c->arg = arg;
	c->oob = oob;
	memcpy(c->name, command, nlen);
	if (q->state == KQMP_READY) {
		/* The newline is not needed by QMP but keeps traces readable. */
		if (out_append(q, text, len) < 0 || out_append(q, "\n", 1) < 0)
			goto fail;
	} else {
		c->held = strndup(text, len);
		if (!c->held)
			goto fail;
	}
	c->prev = q->tail;
	if (q->tail)
		q->tail->next = c;
	else
		q->head = c;
	q->tail = c;
	q->npending++;
	json_object_put(holder);
	json_object_put(args);
	return id;
fail:
	if (c)
		cmd_free(c);
	json_object_put(holder);
	json_object_put(args);
	return 0;
}

uint64_t kqmp_send(struct kqmp *q, const char *command, json_object *args,
		   kqmp_reply_fn fn, void *arg)
{
	return send_common(q, command, args, fn, arg, false);
}

uint64_t kqmp_send_oob(struct kqmp *q, const char *command, json_object *args,
		       kqmp_reply_fn fn, void *arg)
{
	return send_common(q, command, args, fn, arg, true);
}

bool kqmp_cancel(struct kqmp *q, uint64_t id)
{
	for (struct kq_cmd *c = q->head; c; c = c->next) {
		if (c->id == id) {
			c->fn = NULL;
			return true;
		}
	}
	return false;
}

/* Writes what the socket takes now.  0, or -1 once the connection failed. */
static int flush_out(struct kqmp *q)
{
	while (q->opos < q->olen) {
		const char *p = q->obuf + q->opos;
		size_t n = q->olen - q->opos;
		ssize_t w;

		if (!q->not_socket) {
			/* MSG_NOSIGNAL: a dead peer is an error value, not SIGPIPE. */
			w = send(q->fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
			if (w < 0 && errno == ENOTSOCK) {
				q->not_socket = true;
				continue;
			}
		} else {
			w = write(q->fd, p, n);
		}
		if (w < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return 0;
			kq_fail(q, KQMP_E_IO, "%s: write failed: %s%s", q->name,
				strerror(errno), errno == EPIPE || errno == ECONNRESET ?
				" (the peer closed the connection: did QEMU exit?)" : "");
			return -1;
		}
		q->opos += (size_t)w;
	}
	q->opos = q->olen = 0;
	return 0;
}

/* ---- receiving --------------------------------------------------------- */

/* The handshake is over: release commands queued during it. */
static void become_ready(struct kqmp *q)
{
	struct kq_cmd *refused = NULL, **rtail = &refused;
	struct kqmp_error e;

	q->state = KQMP_READY;
	for (struct kq_cmd *c = q->head, *next; c; c = next) {
		next = c->next;
		if (!c->held)
			continue;
		if (c->oob && !q->oob_enabled) {
			cmd_unlink(q, c);
			*rtail = c;
			rtail = &c->next;
			continue;
		}
		if (out_append(q, c->held, strlen(c->held)) < 0 ||
		    out_append(q, "\n", 1) < 0) {
			kq_fail(q, KQMP_E_NOMEM, "%s: out of memory queueing commands", q->name);
			fail_list(q, refused, &q->error);
			return;
		}
		free(c->held);
		c->held = NULL;
	}
	kq_seterr(&e, KQMP_E_INVAL,
		  "%s: out-of-band command refused: the server did not offer the 'oob' capability",
		  q->name);
	fail_list(q, refused, &e);
}

static void on_greeting(struct kqmp *q, const struct kq_msg *m)
{
	json_object *args = NULL;
	json_object *holder = NULL;
	const char *text;
	size_t len;
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
	q->caps_id = q->next_id++;
	text = cmd_text("qmp_capabilities", args, q->caps_id, false, &holder, &len);
	if (!text || out_append(q, text, len) < 0 || out_append(q, "\n", 1) < 0)
		kq_fail(q, KQMP_E_NOMEM, "%s: out of memory", q->name);
	json_object_put(holder);
	json_object_put(args);
}

static void on_caps_reply(struct kqmp *q, const struct kq_msg *m)
{
	if (m->type == KQ_MSG_ERROR) {
		kq_fail(q, KQMP_E_PROTOCOL, "%s: qmp_capabilities refused: %s: %s",
			q->name, m->cls, m->desc);
		return;
	}
	become_ready(q);
}

static void on_event(struct kqmp *q, const struct kq_msg *m)
{
	struct kq_ev *n = calloc(1, sizeof(*n));

	if (!n || !(n->ev.name = strdup(m->event))) {
		free(n);
		kq_fail(q, KQMP_E_NOMEM, "%s: out of memory queueing an event", q->name);
		return;
	}
	n->ev.data = json_object_get(m->data);
	n->ev.sec = m->sec;
	n->ev.usec = m->usec;
	if (q->ev_tail)
		q->ev_tail->next = n;
	else
		q->ev_head = n;
	q->ev_tail = n;
	if (++q->nevents > KQ_MAX_EVENTS) {
		struct kq_ev *old = q->ev_head;

		q->ev_head = old->next;
		q->nevents--;
		kq_log(q, "%s: event queue full (%d): dropped the oldest, %s",
		       q->name, KQ_MAX_EVENTS, old->ev.name);
		kqmp_event_clear(&old->ev);
		free(old);
	}
}

static struct kq_cmd *find_cmd(struct kqmp *q, uint64_t id)
{
	for (struct kq_cmd *c = q->head; c; c = c->next)
		if (c->id == id)
			return c;
	return NULL;
}

/* With oob on, QEMU may drop an in-band command when its queue is full;
 * it says so with an event naming the id, and that is the reply. */
static bool on_command_dropped(struct kqmp *q, const struct kq_msg *m)
{
	struct kq_msg fake = { .id = NULL };
	json_object *reason = NULL;
	struct kqmp_error e;
	struct kq_cmd *c;

	if (strcmp(m->event, "COMMAND_DROPPED") ||
	    !json_object_object_get_ex(m->data, "id", &fake.id))
		return false;
	c = find_cmd(q, kq_msg_id(&fake));
	if (!c)
		return false;
	json_object_object_get_ex(m->data, "reason", &reason);
	e.kind = KQMP_E_QMP;
	snprintf(e.cls, sizeof(e.cls), "CommandDropped");
	snprintf(e.desc, sizeof(e.desc), "QEMU dropped '%s': %s", c->name,
		 reason ? json_object_get_string(reason) : "no reason given");
	kq_one_line(e.desc);
	cmd_unlink(q, c);
	if (c->fn)
		c->fn(q, NULL, &e, c->arg);
	cmd_free(c);
	return true;
}

static void on_reply(struct kqmp *q, const struct kq_msg *m, json_object *msg)
{
	uint64_t id = kq_msg_id(m);
	struct kq_cmd *c = id ? find_cmd(q, id) : NULL;
	char quoted[200];

	if (q->state == KQMP_HANDSHAKE && id && id == q->caps_id) {
		on_caps_reply(q, m);
		return;
	}
	if (!c) {
		kq_log(q, "%s: dropped a reply with an unknown id: %s", q->name,
		       kq_quote_json(quoted, sizeof(quoted), msg));
		return;
	}
	cmd_unlink(q, c);
	if (c->fn) {
		if (m->type == KQ_MSG_RETURN && m->ret) {
			c->fn(q, m->ret, NULL, c->arg);
		} else if (m->type == KQ_MSG_RETURN) {
			/* Keeps "exactly one of ret/err"; QEMU never does this. */
			struct kqmp_error e;

			kq_seterr(&e, KQMP_E_PROTOCOL, "%s: '%s' returned null",
				  q->name, c->name);
			c->fn(q, NULL, &e, c->arg);
		} else {
			struct kqmp_error e = { .kind = KQMP_E_QMP };

			snprintf(e.cls, sizeof(e.cls), "%s", m->cls);
			snprintf(e.desc, sizeof(e.desc), "%s", m->desc);
			kq_one_line(e.cls);
			kq_one_line(e.desc);
			c->fn(q, NULL, &e, c->arg);
		}
	}
	cmd_free(c);
}

static void handle_msg(struct kqmp *q, json_object *msg)
{
	struct kqmp_error e;
	struct kq_msg m;
	char quoted[240];

	if (kq_classify(msg, &m, &e) < 0) {
		kq_fail(q, KQMP_E_PROTOCOL, "%s: %s", q->name, e.desc);
		return;
	}
	if (!q->greeted) {
		if (m.type != KQ_MSG_GREETING) {
			kq_fail(q, KQMP_E_PROTOCOL,
				"%s: not a QMP server: its first message was %s",
				q->name, kq_quote_json(quoted, sizeof(quoted), msg));
			return;
		}
		on_greeting(q, &m);
		return;
	}
	switch (m.type) {
	case KQ_MSG_RETURN:
	case KQ_MSG_ERROR:
		on_reply(q, &m, msg);
		break;
	case KQ_MSG_EVENT:
		if (!on_command_dropped(q, &m))
			on_event(q, &m);
		break;
	case KQ_MSG_GREETING:
	case KQ_MSG_UNKNOWN:
		kq_log(q, "%s: dropped an unexpected message: %s", q->name,
		       kq_quote_json(quoted, sizeof(quoted), msg));
		break;
	}
}

/* Turns buffered bytes into messages and handles them. */
static void drain_reader(struct kqmp *q)
{
	struct kqmp_error e;
	json_object *msg;
	int k;

	while (q->state != KQMP_FAILED && !q->close_requested &&
	       (k = kjson_reader_next(q->rd, &msg, &e)) != 0) {
		if (k < 0) {
			if (!q->greeted)
				kq_fail(q, e.kind, "%s: not a QMP server: %s", q->name, e.desc);
			else
				kq_fail(q, e.kind, "%s: %s", q->name, e.desc);
			return;
		}
		handle_msg(q, msg);
		json_object_put(msg);
	}
}

/* Reads until the socket is empty (so edge-triggered polling works too). */
static void read_in(struct kqmp *q)
{
	while (q->state != KQMP_FAILED && !q->close_requested) {
		char *p = kq_reader_reserve(q->rd, KQ_READ_CHUNK);
		ssize_t n;

		if (!p) {
			kq_fail(q, KQMP_E_NOMEM, "%s: out of memory reading", q->name);
			return;
		}
		n = read(q->fd, p, KQ_READ_CHUNK);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == ECONNRESET)
				kq_fail(q, KQMP_E_IO, "%s: connection reset by the peer%s",
					q->name, q->greeted ? " (did QEMU exit?)" : "");
			else if (errno != EAGAIN && errno != EWOULDBLOCK)
				kq_fail(q, KQMP_E_IO, "%s: read failed: %s", q->name,
					strerror(errno));
			return;
		}
		if (n == 0) {
			kq_fail(q, KQMP_E_IO, "%s: connection closed by the peer%s%s",
				q->name,
				kq_reader_mid_message(q->rd) ? " in the middle of a message" : "",
				q->greeted ? " (did QEMU exit?)" : " before its QMP greeting");
			return;
		}
		kq_reader_commit(q->rd, (size_t)n);
		drain_reader(q);
	}
}

/* kqmp_dispatch(); *freed says whether a callback's kqmp_close() freed q. */
static int dispatch(struct kqmp *q, struct kqmp_error *err, bool *freed)
{
	*freed = false;
	if (q->depth > 0 && !q->close_requested) {
		kq_seterr(err, KQMP_E_INVAL, "%s: kqmp_dispatch() called from a callback",
			  q->name);
		return -1;
	}
	if (q->state != KQMP_FAILED && !q->close_requested) {
		q->depth++;
		if (flush_out(q) == 0)
			read_in(q);
		/* Replies and the greeting may have queued more to send. */
		if (q->state != KQMP_FAILED && !q->close_requested)
			flush_out(q);
		q->depth--;
	}
	if (q->close_requested && q->depth == 0) {
		kq_seterr(err, KQMP_E_CLOSED, "%s: closed from a callback", q->name);
		kqmp_close(q);
		*freed = true;
		return -1;
	}
	if (q->state == KQMP_FAILED) {
		if (err)
			*err = q->error;
		return -1;
	}
	return 0;
}

int kqmp_dispatch(struct kqmp *q, struct kqmp_error *err)
{
	bool freed;

	return dispatch(q, err, &freed);
}

/* ---- events ------------------------------------------------------------ */

int kqmp_event_pop(struct kqmp *q, struct kqmp_event *ev)
{
	struct kq_ev *n = q->ev_head;

	if (!n)
		return 0;
	q->ev_head = n->next;
	if (!q->ev_head)
		q->ev_tail = NULL;
	q->nevents--;
	*ev = n->ev;
	free(n);
	return 1;
}

void kqmp_event_clear(struct kqmp_event *ev)
{
	free(ev->name);
	json_object_put(ev->data);
	ev->name = NULL;
	ev->data = NULL;
}

/* Takes the first queued event that matches out of the queue. */
static bool take_event(struct kqmp *q, const char *name, kqmp_event_match_fn match,
		       void *arg, struct kqmp_event *ev)
{
	struct kq_ev *prev = NULL;

	for (struct kq_ev *n = q->ev_head; n; prev = n, n = n->next) {
		if (strcmp(n->ev.name, name) || (match && !match(n->ev.data, arg)))
			continue;
		if (prev)
			prev->next = n->next;
		else
			q->ev_head = n->next;
		if (q->ev_tail == n)
			q->ev_tail = prev;
		q->nevents--;
		*ev = n->ev;
		free(n);
		return true;
	}
	return false;
}

/* ---- blocking helpers -------------------------------------------------- */

#define KQ_STEP_FREED	(-2)

/* One poll + dispatch.  0: progress (or nothing yet), 1: deadline passed,
 * -1: the connection failed (err set), KQ_STEP_FREED: a callback closed q,
 * which is gone. */
static int step(struct kqmp *q, int64_t deadline, struct kqmp_error *err)
{
	struct pollfd p = { .fd = q->fd, .events = POLLIN };
	bool freed;
	int wait = -1;
	int n;

	if (q->state == KQMP_FAILED) {
		kq_seterr(err, KQMP_E_CLOSED, "%s", q->error.desc);
		return -1;
	}
	if (deadline >= 0) {
		int64_t left = deadline - now_ms();

		if (left <= 0)
			return 1;
		wait = left > 1000000 ? 1000000 : (int)left;
	}
	if (kqmp_want_write(q))
		p.events |= POLLOUT;
	n = poll(&p, 1, wait);
	if (n < 0) {
		if (errno == EINTR)
			return 0;
		kq_seterr(err, KQMP_E_IO, "%s: poll failed: %s", q->name, strerror(errno));
		return -1;
	}
	if (n == 0)
		return 0;	/* the next call sees the deadline */
	if (dispatch(q, err, &freed) == 0)
		return 0;
	return freed ? KQ_STEP_FREED : -1;
}

static int64_t deadline_of(int timeout_ms)
{
	return timeout_ms < 0 ? -1 : now_ms() + timeout_ms;
}

static int refuse_in_callback(struct kqmp *q, struct kqmp_error *err)
{
	if (q->depth == 0)
		return 0;
	kq_seterr(err, KQMP_E_INVAL,
		  "%s: a blocking kqmp call was made from inside a reply callback", q->name);
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
		struct kqmp *q = kqmp_connect_unix(path, flags, &e);
		bool starting = !q && e.kind == KQMP_E_CONNECT &&
				(errno == ENOENT || errno == ECONNREFUSED);

		if (q || !starting || !(flags & KQMP_F_WAIT)) {
			if (!q && err)
				*err = e;
			return q;
		}
		if (deadline >= 0 && now_ms() + 20 > deadline) {
			kq_seterr(err, KQMP_E_CONNECT, "%s (still, after waiting %d ms)",
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

	while (q && q->state == KQMP_HANDSHAKE) {
		int r = step(q, deadline, err);

		if (r == KQ_STEP_FREED)
			return NULL;	/* cannot happen: no callbacks yet */
		if (r == 1)
			kq_seterr(err, KQMP_E_TIMEOUT, q->greeted ?
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

struct exec_wait {
	bool done;
	json_object *ret;
	struct kqmp_error err;
};

static void exec_done(struct kqmp *q, json_object *ret, const struct kqmp_error *err,
		      void *arg)
{
	struct exec_wait *w = arg;

	(void)q;
	w->done = true;
	if (ret)
		w->ret = json_object_get(ret);
	else
		w->err = *err;
}

int kqmp_execute(struct kqmp *q, const char *command, json_object *args,
		 int timeout_ms, json_object **ret, struct kqmp_error *err)
{
	struct exec_wait w = { .done = false };
	int64_t deadline = deadline_of(timeout_ms);
	uint64_t id;

	if (ret)
		*ret = NULL;
	if (refuse_in_callback(q, err) < 0) {
		json_object_put(args);
		return -1;
	}
	if (q->state == KQMP_FAILED) {
		json_object_put(args);
		kq_seterr(err, KQMP_E_CLOSED, "%s", q->error.desc);
		return -1;
	}
	id = kqmp_send(q, command, args, exec_done, &w);
	if (!id) {
		kq_seterr(err, KQMP_E_INVAL, "%s: cannot send command %s%s%s", q->name,
			  command ? "'" : "", command ? command : "(null)", command ? "'" : "");
		return -1;
	}
	while (!w.done) {
		int r = step(q, deadline, err);

		if (w.done || r == KQ_STEP_FREED)
			break;	/* freed: exec_done() heard KQMP_E_CLOSED */
		if (r != 0) {
			/* Still pending: its late reply must not touch our stack. */
			kqmp_cancel(q, id);
			if (r == 1 && !q->greeted)
				kq_seterr(err, KQMP_E_TIMEOUT,
					  "%s: no QMP greeting within %d ms (is another "
					  "client already connected to this monitor?)",
					  q->name, timeout_ms);
			else if (r == 1)
				kq_seterr(err, KQMP_E_TIMEOUT,
					  "%s: no reply to '%s' within %d ms",
					  q->name, command, timeout_ms);
			return -1;
		}
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
		if (take_event(q, name, match, arg, ev))
			return 0;

		int r = step(q, deadline, err);

		if (r == 1) {
			kq_seterr(err, KQMP_E_TIMEOUT, "%s: no '%s' event within %d ms",
				  q->name, name, timeout_ms);
			return -1;
		}
		if (r == KQ_STEP_FREED)
			return -1;
		if (r < 0) {
			/* It may have come with the bytes read just before EOF. */
			if (take_event(q, name, match, arg, ev))
				return 0;
			return -1;
		}
	}
}
