/* SPDX-License-Identifier: MIT */
/*
 * The connection core under kqmp and symvirt; see conn.h.
 *
 * Ownership: a struct kqmp_conn owns its fd, the reader, the output buffer,
 * one kqmp_conn_cmd per command awaiting its reply (in send order, so
 * in-order replies match at the head) and the event queue.
 */
#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "conn.h"
#include "kqmp_internal.h"

#define KJ_READ_CHUNK	(64u << 10)
_Static_assert(KJ_READ_CHUNK <= KQMP_CONN_READ_BUDGET, "one read must fit the budget");

int kqmp_conn_init(struct kqmp_conn *c, int fd, const char *name, size_t max_msg,
		uint64_t first_id, const struct kqmp_conn_ops *ops)
{
	memset(c, 0, sizeof(*c));
	c->fd = fd;
	c->ops = ops;
	c->next_id = first_id;
	c->name = strdup(name);
	c->rd = kqmp_reader_new(max_msg);
	if (!c->name || !c->rd) {
		kqmp_reader_free(c->rd);
		free(c->name);
		c->rd = NULL;
		c->name = NULL;
		return -1;
	}
	return 0;
}

int kqmp_conn_set_name(struct kqmp_conn *c, const char *name)
{
	char *n = strdup(name);

	if (!n)
		return -1;
	free(c->name);
	c->name = n;
	return 0;
}

static void cmd_free(struct kqmp_conn_cmd *cmd)
{
	free(cmd->held);
	free(cmd);
}

void kqmp_conn_finish(struct kqmp_conn *c, struct kqmp_conn_cmd *cmd, json_object *ret,
		   const struct kqmp_error *err)
{
	if (cmd->wait)
		kqmp_conn_wait_done(cmd->wait, ret, err);
	else if (cmd->fn)
		c->ops->deliver(c, cmd, ret, err);
	cmd_free(cmd);
}

/* Fails every pending command with err, in send order.  The list is
 * detached first so callbacks may send (which then fails) or cancel. */
static void fail_pending(struct kqmp_conn *c, const struct kqmp_error *err)
{
	struct kqmp_conn_cmd *list = c->head;

	c->head = c->tail = NULL;
	c->npending = 0;
	while (list) {
		struct kqmp_conn_cmd *cmd = list;

		list = cmd->next;
		kqmp_conn_finish(c, cmd, NULL, err);
	}
}

void kqmp_conn_fail(struct kqmp_conn *c, enum kqmp_err_kind kind, const char *fmt, ...)
{
	va_list ap;

	if (c->failed)
		return;
	c->failed = true;
	va_start(ap, fmt);
	kqmp_conn_vseterr(&c->error, kind, fmt, ap);
	va_end(ap);
	if (c->ssh)
		kqmp_conn_ssh_explain(c->ssh, c->error.desc, sizeof(c->error.desc));
	c->opos = c->olen = 0;
	if (c->ops->failed)
		c->ops->failed(c);
	fail_pending(c, &c->error);
}

void kqmp_conn_destroy(struct kqmp_conn *c, const struct kqmp_error *err)
{
	/* From here callbacks can neither send (refused) nor re-close. */
	c->close_requested = true;
	c->depth++;
	fail_pending(c, err);
	while (c->ev_head) {
		struct kqmp_conn_ev *n = c->ev_head;

		c->ev_head = n->next;
		kqmp_event_clear(&n->ev);
		free(n);
	}
	c->ev_tail = NULL;
	c->nevents = c->ev_bytes = 0;
	if (c->fd >= 0)
		close(c->fd);
	kqmp_conn_ssh_close(c->ssh);
	kqmp_reader_free(c->rd);
	free(c->obuf);
	free(c->name);
}

bool kqmp_conn_close(struct kqmp_conn *c, const char *fmt, ...)
{
	struct kqmp_error e;
	va_list ap;

	if (c->depth > 0) {
		/* Inside a callback: dispatch finishes the job on its way out. */
		c->close_requested = true;
		return false;
	}
	va_start(ap, fmt);
	kqmp_conn_vseterr(&e, KQMP_E_CLOSED, fmt, ap);
	va_end(ap);
	kqmp_conn_destroy(c, &e);
	return true;
}

void kqmp_conn_log(struct kqmp_conn *c, const char *fmt, ...)
{
	char msg[640];
	va_list ap;

	if (!c->log_fn)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	c->ops->log(c, kqmp_one_line(msg));
}

int kqmp_conn_connect_unix(const char *path, int type_flags,
			enum kqmp_conn_connect_step *step, size_t *max)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd, e;

	*max = sizeof(sa.sun_path) - 1;
	if (!path || !*path) {
		*step = KQMP_CONN_NO_PATH;
		return -1;
	}
	if (strlen(path) > *max) {
		*step = KQMP_CONN_PATH_TOO_LONG;
		return -1;
	}
	memcpy(sa.sun_path, path, strlen(path) + 1);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | type_flags, 0);
	if (fd < 0) {
		*step = KQMP_CONN_SOCKET;
		return -1;
	}
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		e = errno;
		close(fd);
		errno = e;
		*step = KQMP_CONN_CONNECT;
		return -1;
	}
	return fd;
}

/* ---- commands ---------------------------------------------------------- */

int kqmp_conn_out_append(struct kqmp_conn *c, const char *s, size_t len)
{
	if (c->opos == c->olen)
		c->opos = c->olen = 0;
	if (c->ocap - c->olen < len && c->opos) {
		memmove(c->obuf, c->obuf + c->opos, c->olen - c->opos);
		c->olen -= c->opos;
		c->opos = 0;
	}
	if (c->ocap - c->olen < len) {
		size_t cap = c->ocap ? c->ocap : 4096;

		while (cap - c->olen < len)
			cap *= 2;
		char *b = realloc(c->obuf, cap);

		if (!b)
			return -1;
		c->obuf = b;
		c->ocap = cap;
	}
	memcpy(c->obuf + c->olen, s, len);
	c->olen += len;
	return 0;
}

bool kqmp_conn_want_write(const struct kqmp_conn *c)
{
	return !c->failed && c->opos < c->olen;
}

/* Serializes the command; the text lives as long as *holder. */
static const char *cmd_text(const char *command, json_object *args, uint64_t id,
			    bool oob, json_object **holder, size_t *len)
{
	json_object *o = json_object_new_object();

	*holder = o;
	if (!o)
		return NULL;
	if (json_object_object_add(o, oob ? "exec-oob" : "execute",
				   json_object_new_string(command)) ||
	    (args && json_object_object_add(o, "arguments", json_object_get(args))) ||
	    json_object_object_add(o, "id", json_object_new_int64((int64_t)id)))
		return NULL;
	return json_object_to_json_string_length(o, JSON_C_TO_STRING_PLAIN |
						 JSON_C_TO_STRING_NOSLASHESCAPE, len);
}

uint64_t kqmp_conn_send(struct kqmp_conn *c, const char *command, json_object *args,
		     bool oob, bool hold, void (*fn)(void), void *arg,
		     struct kqmp_conn_wait *wait)
{
	struct kqmp_conn_cmd *cmd = NULL;
	json_object *holder = NULL;
	size_t len, nlen = strlen(command) + 1;
	uint64_t id = c->next_id++;
	const char *text = cmd_text(command, args, id, oob, &holder, &len);

	cmd = text ? calloc(1, sizeof(*cmd) + nlen) : NULL;
	if (!cmd)
		goto fail;
	cmd->id = id;
	cmd->fn = fn;
	cmd->arg = arg;
	cmd->wait = wait;
	cmd->oob = oob;
	memcpy(cmd->name, command, nlen);
	if (hold) {
		cmd->held = strndup(text, len);
		if (!cmd->held)
			goto fail;
	} else if (kqmp_conn_out_append(c, text, len) < 0 ||
		   kqmp_conn_out_append(c, "\n", 1) < 0) {
		/* The newline is not needed by the peers but keeps traces readable. */
		goto fail;
	}
	cmd->prev = c->tail;
	if (c->tail)
		c->tail->next = cmd;
	else
		c->head = cmd;
	c->tail = cmd;
	c->npending++;
	json_object_put(holder);
	json_object_put(args);
	return id;
fail:
	if (cmd)
		cmd_free(cmd);
	json_object_put(holder);
	json_object_put(args);
	return 0;
}

uint64_t kqmp_conn_send_untracked(struct kqmp_conn *c, const char *command,
			       json_object *args)
{
	json_object *holder = NULL;
	uint64_t id = c->next_id++;
	size_t len;
	const char *text = cmd_text(command, args, id, false, &holder, &len);

	if (!text || kqmp_conn_out_append(c, text, len) < 0 ||
	    kqmp_conn_out_append(c, "\n", 1) < 0)
		id = 0;
	json_object_put(holder);
	json_object_put(args);
	return id;
}

struct kqmp_conn_cmd *kqmp_conn_find(struct kqmp_conn *c, uint64_t id)
{
	for (struct kqmp_conn_cmd *cmd = c->head; cmd; cmd = cmd->next)
		if (cmd->id == id)
			return cmd;
	return NULL;
}

void kqmp_conn_unlink(struct kqmp_conn *c, struct kqmp_conn_cmd *cmd)
{
	if (cmd->prev)
		cmd->prev->next = cmd->next;
	else
		c->head = cmd->next;
	if (cmd->next)
		cmd->next->prev = cmd->prev;
	else
		c->tail = cmd->prev;
	cmd->next = cmd->prev = NULL;
	c->npending--;
}

bool kqmp_conn_cancel(struct kqmp_conn *c, uint64_t id)
{
	struct kqmp_conn_cmd *cmd = kqmp_conn_find(c, id);

	if (!cmd)
		return false;
	cmd->fn = NULL;
	cmd->wait = NULL;
	return true;
}

/* ---- events ------------------------------------------------------------ */

static struct kqmp_conn_ev *ev_unlink_head(struct kqmp_conn *c)
{
	struct kqmp_conn_ev *n = c->ev_head;

	c->ev_head = n->next;
	if (!c->ev_head)
		c->ev_tail = NULL;
	c->nevents--;
	c->ev_bytes -= n->bytes;
	return n;
}

/* A peer sending events faster than the caller takes them costs the
 * oldest ones, never unbounded memory. */
static void ev_trim(struct kqmp_conn *c)
{
	while ((c->max_events && c->nevents > c->max_events) ||
	       (c->max_event_bytes && c->ev_bytes > c->max_event_bytes && c->nevents > 1)) {
		struct kqmp_conn_ev *n = ev_unlink_head(c);

		if (!c->events_dropped++)
			kqmp_conn_log(c, "%s: event queue full (%zu events, %zu bytes at most): "
				   "dropping the oldest from here on, first %s", c->name,
				   c->max_events, c->max_event_bytes, n->ev.name);
		kqmp_event_clear(&n->ev);
		free(n);
	}
}

size_t kqmp_conn_event_push(struct kqmp_conn *c, const char *name, json_object *data,
			 int64_t sec, int64_t usec)
{
	struct kqmp_conn_ev *n = calloc(1, sizeof(*n));

	if (!n || !(n->ev.name = strdup(name))) {
		free(n);
		return 0;
	}
	n->ev.data = json_object_get(data);
	n->ev.sec = sec;
	n->ev.usec = usec;
	/* At least the struct: a zero-length message still costs memory. */
	n->bytes = c->last_msg_len + sizeof(*n);
	if (c->ev_tail)
		c->ev_tail->next = n;
	else
		c->ev_head = n;
	c->ev_tail = n;
	c->nevents++;
	c->ev_bytes += n->bytes;
	ev_trim(c);
	return c->nevents;
}

int kqmp_conn_event_pop(struct kqmp_conn *c, struct kqmp_event *ev)
{
	struct kqmp_conn_ev *n;

	if (!c->ev_head)
		return 0;
	n = ev_unlink_head(c);
	*ev = n->ev;
	free(n);
	return 1;
}

bool kqmp_conn_event_take(struct kqmp_conn *c, const char *name,
		       kqmp_event_match_fn match, void *arg, struct kqmp_event *ev)
{
	struct kqmp_conn_ev *prev = NULL;

	for (struct kqmp_conn_ev *n = c->ev_head; n; prev = n, n = n->next) {
		if (strcmp(n->ev.name, name) || (match && !match(n->ev.data, arg)))
			continue;
		if (prev)
			prev->next = n->next;
		else
			c->ev_head = n->next;
		if (c->ev_tail == n)
			c->ev_tail = prev;
		c->nevents--;
		c->ev_bytes -= n->bytes;
		*ev = n->ev;
		free(n);
		return true;
	}
	return false;
}

/* ---- I/O --------------------------------------------------------------- */

/* Writes what the fd takes now.  0, or -1 once the connection failed. */
static int flush_out(struct kqmp_conn *c)
{
	while (c->opos < c->olen) {
		const char *p = c->obuf + c->opos;
		size_t n = c->olen - c->opos;
		ssize_t w;

		if (!c->not_socket) {
			/* MSG_NOSIGNAL: a dead peer is an error value, not SIGPIPE. */
			w = send(c->fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
			if (w < 0 && errno == ENOTSOCK) {
				c->not_socket = true;
				continue;
			}
		} else {
			w = write(c->fd, p, n);
		}
		if (w < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return 0;
			c->ops->io_failed(c, KQMP_CONN_WRITE, errno, NULL);
			return -1;
		}
		c->opos += (size_t)w;
	}
	c->opos = c->olen = 0;
	return 0;
}

/* Turns buffered bytes into messages and hands them to the front-end. */
static void drain_reader(struct kqmp_conn *c)
{
	struct kqmp_error e;
	json_object *msg;
	int k;

	while (!c->failed && !c->close_requested &&
	       (k = kqmp_reader_next(c->rd, &msg, &e)) != 0) {
		if (k < 0) {
			c->ops->io_failed(c, KQMP_CONN_BAD_INPUT, 0, &e);
			return;
		}
		c->last_msg_len = kqmp_reader_last_len(c->rd);
		c->ops->message(c, msg);
		json_object_put(msg);
	}
}

/* Reads until the fd is empty or the budget is spent: a peer that writes
 * as fast as we read must not keep the caller's loop here.  What is left
 * keeps the fd readable, so level-triggered polling comes back for it. */
static void read_in(struct kqmp_conn *c)
{
	size_t budget = KQMP_CONN_READ_BUDGET;

	while (!c->failed && !c->close_requested && budget) {
		char *p = kqmp_reader_reserve(c->rd, KJ_READ_CHUNK);
		ssize_t n;

		if (!p) {
			kqmp_conn_fail(c, KQMP_E_NOMEM, "%s: out of memory reading", c->name);
			return;
		}
		n = read(c->fd, p, KJ_READ_CHUNK < budget ? KJ_READ_CHUNK : budget);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN && errno != EWOULDBLOCK)
				c->ops->io_failed(c, KQMP_CONN_READ, errno, NULL);
			return;
		}
		if (n == 0) {
			c->ops->io_failed(c, KQMP_CONN_EOF, 0, NULL);
			return;
		}
		kqmp_reader_commit(c->rd, (size_t)n);
		budget -= (size_t)n;
		drain_reader(c);
	}
}

int kqmp_conn_dispatch(struct kqmp_conn *c, struct kqmp_error *err, bool *freed)
{
	*freed = false;
	if (c->depth > 0 && !c->close_requested) {
		kqmp_seterr(err, KQMP_E_INVAL, "%s: %s called from a callback",
			  c->name, c->ops->dispatch_fn);
		return -1;
	}
	if (c->ssh)
		kqmp_conn_ssh_drain(c->ssh);
	if (!c->failed && !c->close_requested) {
		c->depth++;
		if (flush_out(c) == 0)
			read_in(c);
		/* Replies (and a handshake) may have queued more to send. */
		if (!c->failed && !c->close_requested)
			flush_out(c);
		c->depth--;
	}
	if (c->close_requested && c->depth == 0) {
		kqmp_seterr(err, KQMP_E_CLOSED, "%s: closed from a callback", c->name);
		c->ops->destroy(c);
		*freed = true;
		return -1;
	}
	if (c->failed) {
		if (err)
			*err = c->error;
		return -1;
	}
	return 0;
}

/* ---- blocking ---------------------------------------------------------- */

int64_t kqmp_conn_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int kqmp_conn_step(struct kqmp_conn *c, int64_t deadline, struct kqmp_error *err)
{
	struct pollfd p = { .fd = c->fd, .events = POLLIN };
	bool freed;
	int wait = -1;
	int n;

	if (c->failed) {
		kqmp_seterr(err, KQMP_E_CLOSED, "%s", c->error.desc);
		return -1;
	}
	if (deadline >= 0) {
		int64_t left = deadline - kqmp_conn_now_ms();

		if (left <= 0)
			return 1;
		wait = left > 1000000 ? 1000000 : (int)left;
	}
	if (kqmp_conn_want_write(c))
		p.events |= POLLOUT;
	n = poll(&p, 1, wait);
	if (n < 0) {
		if (errno == EINTR)
			return 0;
		kqmp_seterr(err, KQMP_E_IO, "%s: poll failed: %s", c->name, strerror(errno));
		return -1;
	}
	if (n == 0)
		return 0;	/* the next call sees the deadline */
	if (kqmp_conn_dispatch(c, err, &freed) == 0)
		return 0;
	return freed ? KQMP_CONN_STEP_FREED : -1;
}

void kqmp_conn_wait_done(struct kqmp_conn_wait *w, json_object *ret,
		      const struct kqmp_error *err)
{
	if (w->done)
		return;
	w->done = true;
	if (err)
		w->err = *err;
	else
		w->ret = json_object_get(ret);
}

int kqmp_conn_wait(struct kqmp_conn *c, struct kqmp_conn_wait *w, int64_t deadline,
		struct kqmp_error *err)
{
	while (!w->done) {
		int r = kqmp_conn_step(c, deadline, err);

		if (w->done)
			break;
		if (r != 0)
			return r;
	}
	return 0;
}
