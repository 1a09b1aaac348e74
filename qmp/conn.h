/* SPDX-License-Identifier: MIT */
/*
 * kqmp_conn: the connection core shared by the QMP client (kqmp.c) and the
 * symvirt host client (symvirt/symvirt_client.c).
 *
 * Both speak "QMP-style" JSON over a stream fd: {"execute", "arguments",
 * "id"} out, {"return"|"error", "id"} and {"event"} back.  The core owns
 * what they have in common: the fd, the non-blocking write queue, the
 * reader, the commands awaiting replies (in send order, matched by id),
 * the event queue, failing every pending command when the connection dies,
 * deferred close from callbacks, and one poll step towards a deadline.
 *
 * What differs stays in the front-end, reached through struct kqmp_conn_ops:
 * what a message means (the QMP greeting and qmp_capabilities handshake,
 * symvirt's lenient replies), how a reply reaches the caller's typed
 * callback, and the wording of I/O errors.  Front-ends embed struct kqmp_conn
 * and get back to themselves with kqmp_conn_owner().
 *
 * For in-tree front-ends only: neither installed nor exported from
 * libkawarimi-qmp; they link the static kawarimi-qmp-core (meson.build).
 */
#ifndef KAWARIMI_QMP_CONN_H
#define KAWARIMI_QMP_CONN_H

#include <stdarg.h>
#include <stddef.h>
#include "kawarimi-qmp.h"

#define kqmp_conn_owner(c, type, member) \
	((type *)(void *)((char *)(c) - offsetof(type, member)))

struct kqmp_conn;

/* A command awaiting its reply. */
struct kqmp_conn_cmd {
	struct kqmp_conn_cmd *next, *prev;
	uint64_t id;
	void (*fn)(void);	/* the front-end's callback; NULL once cancelled */
	void *arg;
	struct kqmp_conn_wait *wait;	/* set: a blocking helper waits on it */
	char *held;		/* text not yet queued (kqmp_conn_send with hold) */
	bool oob;
	char name[];
};

/* What a blocking helper waits for; the first answer counts. */
struct kqmp_conn_wait {
	bool done;
	json_object *ret;	/* reference held */
	struct kqmp_error err;
};

/* Why the core could not go on reading or writing. */
enum kqmp_conn_io {
	KQMP_CONN_WRITE,		/* write/send failed: errnum */
	KQMP_CONN_READ,		/* read failed: errnum */
	KQMP_CONN_EOF,		/* the peer closed the stream */
	KQMP_CONN_BAD_INPUT,	/* the reader failed: rerr */
};

struct kqmp_conn_ops {
	/* One message from the peer (borrowed). */
	void (*message)(struct kqmp_conn *c, json_object *msg);
	/* Hands cmd's reply to its callback (cmd->fn is not NULL); exactly
	 * one of ret / err is not NULL.  The core frees cmd afterwards. */
	void (*deliver)(struct kqmp_conn *c, struct kqmp_conn_cmd *cmd, json_object *ret,
			const struct kqmp_error *err);
	/* Must call kqmp_conn_fail() with the front-end's wording. */
	void (*io_failed)(struct kqmp_conn *c, enum kqmp_conn_io what, int errnum,
			  const struct kqmp_error *rerr);
	/* Optional: told once the connection failed (c->error set), before
	 * the pending commands hear of it. */
	void (*failed)(struct kqmp_conn *c);
	/* Calls the caller's typed log function (c->log_fn) with msg. */
	void (*log)(struct kqmp_conn *c, const char *msg);
	/* Frees the front-end (its close function): a close requested from a
	 * callback runs when dispatch unwinds. */
	void (*destroy)(struct kqmp_conn *c);
	const char *dispatch_fn;	/* "kqmp_dispatch()", for messages */
};

struct kqmp_conn_ev {
	struct kqmp_conn_ev *next;
	size_t bytes;		/* the message's size on the wire */
	struct kqmp_event ev;
};

struct kqmp_conn_ssh;

/*
 * Bounds against a peer that floods (a hostile guest on symvirt, a broken
 * QEMU): one dispatch reads at most KQMP_CONN_READ_BUDGET bytes, so one
 * connection cannot keep the caller's loop from every other one, and the
 * event queue holds at most max_events events and max_event_bytes bytes
 * of them (the newest one always stays): beyond, the oldest are dropped,
 * counted in events_dropped, and the first drop is logged.
 */
#define KQMP_CONN_READ_BUDGET	(64u << 10)

struct kqmp_conn {
	int fd;
	char *name;		/* for messages */
	struct kqmp_conn_ssh *ssh;	/* set: fd is the stdio of this ssh (ssh.c) */
	const struct kqmp_conn_ops *ops;
	bool failed;
	bool close_requested;	/* close from a callback, or closing now */
	bool not_socket;	/* a pipe/tty: write(), not send() */
	int depth;		/* > 0 while dispatch runs callbacks */
	uint64_t next_id;
	struct kqmp_error error;	/* why it failed */
	struct kqmp_reader *rd;

	char *obuf;
	size_t opos, olen, ocap;

	struct kqmp_conn_cmd *head, *tail;
	size_t npending;	/* cancelled ones included */

	struct kqmp_conn_ev *ev_head, *ev_tail;
	size_t nevents;
	size_t ev_bytes;
	size_t max_events, max_event_bytes;	/* the front-end sets them */
	uint64_t events_dropped;
	size_t last_msg_len;	/* of the message ops->message has */

	void (*log_fn)(void);	/* the front-end's log callback type; NULL: none */
	void *log_arg;
};

/* 0, or -1 on ENOMEM.  Adopts fd (closed by kqmp_conn_destroy) but does not
 * change its flags. */
int kqmp_conn_init(struct kqmp_conn *c, int fd, const char *name, size_t max_msg,
		uint64_t first_id, const struct kqmp_conn_ops *ops);
/* Fails the pending commands with err (if any remain), drops the events,
 * closes the fd and frees what c holds (not c). */
void kqmp_conn_destroy(struct kqmp_conn *c, const struct kqmp_error *err);
/* The front-end's close: false while a callback runs (the close is then
 * done when dispatch unwinds), else fails the pending commands with
 * KQMP_E_CLOSED and fmt, destroys c and returns true: free the owner. */
bool kqmp_conn_close(struct kqmp_conn *c, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/* 0, or -1 on ENOMEM. */
int kqmp_conn_set_name(struct kqmp_conn *c, const char *name);

/* Sets *err (if err is not NULL): kind, empty class, one-line desc. */
void kqmp_conn_vseterr(struct kqmp_error *err, enum kqmp_err_kind kind,
		    const char *fmt, va_list ap);

/* The connection is unusable from here on: records why (one line) and
 * fails every pending command, in send order.  Queued events stay. */
void kqmp_conn_fail(struct kqmp_conn *c, enum kqmp_err_kind kind, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* A log line (one line; nothing when c->log_fn is NULL). */
void kqmp_conn_log(struct kqmp_conn *c, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* Where connecting a unix socket failed. */
enum kqmp_conn_connect_step {
	KQMP_CONN_NO_PATH,		/* path NULL or empty */
	KQMP_CONN_PATH_TOO_LONG,	/* longer than sun_path allows (see max) */
	KQMP_CONN_SOCKET,		/* socket(): errno */
	KQMP_CONN_CONNECT,		/* connect(): errno */
};
/* A connected SOCK_STREAM | SOCK_CLOEXEC | type_flags unix socket, or -1
 * with *step (and errno) saying where it failed.  *max: the longest path. */
int kqmp_conn_connect_unix(const char *path, int type_flags,
			enum kqmp_conn_connect_step *step, size_t *max);

/* ---- endpoints (ssh.c) ------------------------------------------------- */

/* A socket here, or on another host through ssh. */
struct kqmp_conn_endpoint {
	bool ssh;
	char user[33];		/* "": ssh's choice (config, login name) */
	char host[256];		/* without an IPv6 address's brackets */
	int port;		/* 0: ssh's choice */
	char path[108];		/* the unix socket, here or there */
};

/* Parses "PATH", "unix:PATH" or "ssh://[USER@]HOST[:PORT]/PATH".  0, or -1
 * with a one-line message in err that quotes uri and shows the form. */
int kqmp_conn_parse_endpoint(const char *uri, struct kqmp_conn_endpoint *ep,
			  char *err, size_t len);
/* Starts the ssh child for an ssh endpoint and returns it with *fd, our
 * end of its stdio (blocking, close-on-exec), at once: whatever blocks
 * runs in the child, and a failure shows as EOF on *fd.  NULL with err
 * when not even the child could start. */
struct kqmp_conn_ssh *kqmp_conn_ssh_open(const struct kqmp_conn_endpoint *ep, int *fd,
				   struct kqmp_error *err);
/* A front-end's connect-by-uri: parses uri into *ep; for an ssh endpoint
 * also starts its ssh (*t, *fd), else *t is NULL and the caller connects
 * ep->path itself, in its own words.  0, or -1 with err (KQMP_E_INVAL for
 * a malformed uri). */
int kqmp_conn_open_endpoint(const char *uri, struct kqmp_conn_endpoint *ep,
			 struct kqmp_conn_ssh **t, int *fd, struct kqmp_error *err);
/* Keeps ssh's stderr from filling its pipe (the last 1 KiB is kept). */
void kqmp_conn_ssh_drain(struct kqmp_conn_ssh *t);
/* Appends ssh's reason and its fix to a failure's desc, if ssh said one. */
void kqmp_conn_ssh_explain(struct kqmp_conn_ssh *t, char *desc, size_t len);
/* Ends the child (TERM, then KILL after 1 s) and reaps it.  NULL is fine. */
void kqmp_conn_ssh_close(struct kqmp_conn_ssh *t);

/* ---- commands ---------------------------------------------------------- */

/* Queues {"execute" (or "exec-oob"): command, "arguments": args, "id"}
 * plus a newline; with hold the text waits in cmd->held instead.  args
 * (NULL or an object) is consumed.  The id, or 0 on ENOMEM.  The caller
 * checks that it may send at all. */
uint64_t kqmp_conn_send(struct kqmp_conn *c, const char *command, json_object *args,
		     bool oob, bool hold, void (*fn)(void), void *arg,
		     struct kqmp_conn_wait *wait);
/* Queues a command that no pending entry tracks (a handshake's, whose
 * reply the front-end recognises by the id).  The id, or 0 on ENOMEM. */
uint64_t kqmp_conn_send_untracked(struct kqmp_conn *c, const char *command,
			       json_object *args);
/* Appends raw bytes to the output queue.  0, or -1 on ENOMEM. */
int kqmp_conn_out_append(struct kqmp_conn *c, const char *s, size_t len);
bool kqmp_conn_want_write(const struct kqmp_conn *c);

struct kqmp_conn_cmd *kqmp_conn_find(struct kqmp_conn *c, uint64_t id);
void kqmp_conn_unlink(struct kqmp_conn *c, struct kqmp_conn_cmd *cmd);
/* Delivers to an unlinked cmd (unless cancelled) and frees it. */
void kqmp_conn_finish(struct kqmp_conn *c, struct kqmp_conn_cmd *cmd, json_object *ret,
		   const struct kqmp_error *err);
/* Forgets id's callback; the late reply is dropped.  false: not pending. */
bool kqmp_conn_cancel(struct kqmp_conn *c, uint64_t id);

/* ---- events ------------------------------------------------------------ */

/* Queues a copy of name and a reference to data, the size of the message
 * being handled (c->last_msg_len) counted against the bounds; drops the
 * oldest events beyond them.  The queue length, or 0 on ENOMEM (nothing
 * queued). */
size_t kqmp_conn_event_push(struct kqmp_conn *c, const char *name, json_object *data,
			 int64_t sec, int64_t usec);
/* 1: *ev filled (the caller owns it); 0: queue empty. */
int kqmp_conn_event_pop(struct kqmp_conn *c, struct kqmp_event *ev);
/* Takes the first queued event named name for which match (if not NULL)
 * is true.  true: *ev filled. */
bool kqmp_conn_event_take(struct kqmp_conn *c, const char *name,
		       kqmp_event_match_fn match, void *arg, struct kqmp_event *ev);

/* ---- driving it -------------------------------------------------------- */

/* Writes, reads until the fd would block or KQMP_CONN_READ_BUDGET bytes
 * came in (ops->message per message), writes again.  0, or -1 with err: the connection failed (c->error),
 * kind KQMP_E_INVAL when called from a callback, or KQMP_E_CLOSED when a
 * callback closed the front-end, which *freed says is gone. */
int kqmp_conn_dispatch(struct kqmp_conn *c, struct kqmp_error *err, bool *freed);

#define KQMP_CONN_STEP_FREED	(-2)
int64_t kqmp_conn_now_ms(void);
/* One poll (until deadline, ms on kqmp_conn_now_ms()'s clock; < 0: none) and
 * dispatch.  0: progress or nothing yet; 1: the deadline has passed (no
 * poll); -1: failed (err; KQMP_E_CLOSED with c->error's text when it had
 * failed before); KQMP_CONN_STEP_FREED: a callback closed it and it is gone. */
int kqmp_conn_step(struct kqmp_conn *c, int64_t deadline, struct kqmp_error *err);
/* Records a reply in w (the first one counts); with neither ret nor err
 * (a symvirt "return": null) w->ret stays NULL and w->err.kind KQMP_OK. */
void kqmp_conn_wait_done(struct kqmp_conn_wait *w, json_object *ret,
		      const struct kqmp_error *err);
/* Steps until w is done: 0 (w filled), 1 deadline passed, else like
 * kqmp_conn_step(). */
int kqmp_conn_wait(struct kqmp_conn *c, struct kqmp_conn_wait *w, int64_t deadline,
		struct kqmp_error *err);

#endif
