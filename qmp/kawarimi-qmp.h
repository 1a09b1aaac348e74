/* SPDX-License-Identifier: MIT */
/*
 * libkawarimi-qmp: a QMP client that does not own the event loop.
 *
 * Like libpq or hiredis: the caller gets a file descriptor, polls it
 * (readable always, writable while kqmp_want_write() says so) and calls
 * kqmp_dispatch().  Replies are matched to commands by "id" and handed to
 * the command's callback; events are queued with their timestamps.
 * kqmp_execute() and kqmp_wait_event() are blocking helpers built on that.
 *
 * The library never exits and never prints to stdout; failures come back
 * as struct kqmp_error values.  The same incremental JSON reader that frames
 * QMP is exported (kqmp_reader_*) so the symvirt channel shares it.
 */
#ifndef KAWARIMI_QMP_H
#define KAWARIMI_QMP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <json-c/json.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- errors ---------------------------------------------------------- */

enum kqmp_err_kind {
	KQMP_OK = 0,
	KQMP_E_QMP,		/* QEMU answered {"error": ...}: see class */
	KQMP_E_CONNECT,		/* could not connect to the socket */
	KQMP_E_IO,		/* read/write failed, EOF, broken pipe */
	KQMP_E_PROTOCOL,	/* malformed JSON, not QMP, oversize message */
	KQMP_E_TIMEOUT,		/* a blocking helper ran out of time */
	KQMP_E_CLOSED,		/* the connection had already failed */
	KQMP_E_NOMEM,
	KQMP_E_INVAL,		/* bad argument from the caller */
};

struct kqmp_error {
	enum kqmp_err_kind kind;
	char cls[64];		/* QMP class ("DeviceNotFound") when kind == KQMP_E_QMP */
	char desc[512];		/* one line for a human */
};

const char *kqmp_err_kind_name(enum kqmp_err_kind kind);

/*
 * Text a peer sent (a guest's error description, a device name), made safe
 * for a terminal: copies src into dst (size bytes, always terminated; dst
 * may be src) with every control character -- C0 including ESC and CR,
 * DEL, C1 (U+0080..U+009F) -- and every byte that is not well-formed
 * UTF-8 replaced by '?'.  Stops early at a character that does not fit.
 * Returns the length written.
 */
size_t kqmp_printable(char *dst, size_t size, const char *src);

/* ---- the incremental JSON message reader ------------------------------ */

/*
 * Feeds arbitrary chunks of a byte stream and yields one top-level JSON
 * object at a time.  Whitespace (including newlines) between messages is
 * skipped, so it frames both QMP and line-delimited JSON.  A message longer
 * than max_msg bytes, a top-level value that is not an object, or bytes that
 * are not JSON put the reader in a failed state.
 */
struct kqmp_reader;

/* NULL on ENOMEM.  max_msg counts a message's bytes from its '{'. */
struct kqmp_reader *kqmp_reader_new(size_t max_msg);
void kqmp_reader_free(struct kqmp_reader *r);
/* Changes the limit (applies from the message being read). */
void kqmp_reader_set_max_msg(struct kqmp_reader *r, size_t max_msg);
/* Buffers len bytes. Returns 0, or -1 with err set (reader failed). */
int kqmp_reader_feed(struct kqmp_reader *r, const char *buf, size_t len,
		      struct kqmp_error *err);
/* 1: *out is a new object (caller puts it); 0: need more bytes; -1: error. */
int kqmp_reader_next(struct kqmp_reader *r, json_object **out,
		      struct kqmp_error *err);

/* ---- connections ------------------------------------------------------ */

struct kqmp;

enum kqmp_state {
	KQMP_HANDSHAKE,		/* waiting for greeting / qmp_capabilities reply */
	KQMP_READY,
	KQMP_FAILED,		/* see kqmp_last_error(); every pending command failed */
};

enum kqmp_flags {
	KQMP_F_OOB = 1 << 0,	/* enable the "oob" capability when offered */
	/* kqmp_open() only: a QEMU that is starting creates its socket file
	 * before it listens, so retry "no such file" and "connection refused"
	 * until the timeout instead of failing at once. */
	KQMP_F_WAIT = 1 << 1,
};

/* Adopts an already connected stream fd (made non-blocking; kqmp_close()
 * closes it). Never fails except on ENOMEM (NULL); the handshake proceeds
 * from kqmp_dispatch(). */
struct kqmp *kqmp_new_fd(int fd, unsigned flags);
/* Connects a unix socket; the handshake still proceeds from dispatch. */
struct kqmp *kqmp_connect_unix(const char *path, unsigned flags,
			       struct kqmp_error *err);
/* Connects an endpoint: a socket path ("PATH" or "unix:PATH") as
 * kqmp_connect_unix(), or "ssh://[USER@]HOST[:PORT]/PATH", a socket on
 * another host reached through the operator's ssh (docs/cluster-file.md):
 * the fd is then one end of an ssh child's stdio, returned at once; ssh's
 * failures (authentication, host key, no such remote socket) come back
 * from kqmp_dispatch() like a peer that closed, quoting ssh's reason.
 * kqmp_close() ends and reaps the child.  KQMP_E_INVAL for a malformed uri. */
struct kqmp *kqmp_connect_uri(const char *uri, unsigned flags,
			      struct kqmp_error *err);
/* Blocking: connect (kqmp_connect_uri) + wait for KQMP_READY, at most
 * timeout_ms.  KQMP_F_WAIT retries only a local socket: over ssh a QEMU
 * not listening yet is known only as a closed connection. */
struct kqmp *kqmp_open(const char *uri, unsigned flags, int timeout_ms,
		       struct kqmp_error *err);
/* Fails every pending command with KQMP_E_CLOSED, closes the fd, frees q
 * and its queued events.  From inside a callback it is deferred to the end
 * of that dispatch.  NULL is fine. */
void kqmp_close(struct kqmp *q);

int kqmp_fd(const struct kqmp *q);
bool kqmp_want_write(const struct kqmp *q);
enum kqmp_state kqmp_get_state(const struct kqmp *q);
const struct kqmp_error *kqmp_last_error(const struct kqmp *q);
/* Greeting's {"qemu": {"major","minor","micro"}, "package"}; NULL before it. */
json_object *kqmp_version(const struct kqmp *q);
/* Human name for messages ("socket path" or "fd N"). */
const char *kqmp_name(const struct kqmp *q);
/* Renames it for messages (an fd adopted from an ssh transport, say
 * "ssh://host/path").  0, or -1 on ENOMEM. */
int kqmp_set_name(struct kqmp *q, const char *name);
/* True once the server accepted the "oob" capability. */
bool kqmp_oob_enabled(const struct kqmp *q);
/* Largest message accepted from the peer (default 16 MiB); a longer one
 * fails the connection with KQMP_E_PROTOCOL. */
void kqmp_set_max_msg(struct kqmp *q, size_t bytes);

/*
 * Reads and writes what it can without blocking, then runs reply callbacks.
 * Returns 0, or -1 once the connection has failed (err says why; every
 * pending command's callback has then been called with that error).
 * It reads at most 64 KiB per call, so a QEMU that floods cannot hold the
 * caller's loop: poll level-triggered (what is left keeps the fd readable).
 * Not to be called from a callback (-1, KQMP_E_INVAL, state unchanged).
 * If a callback called kqmp_close(), q is freed on the way out and -1 is
 * returned with KQMP_E_CLOSED.
 */
int kqmp_dispatch(struct kqmp *q, struct kqmp_error *err);

/* ---- commands ---------------------------------------------------------- */

/* ret is owned by the library for the duration of the callback; take a
 * json_object_get() to keep it.  Exactly one of ret / err is non-NULL. */
typedef void (*kqmp_reply_fn)(struct kqmp *q, json_object *ret,
			      const struct kqmp_error *err, void *arg);

/*
 * Queues a command; args (may be NULL, else a JSON object) is consumed.
 * Returns the command id (>0), or 0 if it cannot be sent (fn is not called
 * then): the connection has failed or is closing, command is empty, args is
 * not an object, or out of memory.  Commands sent during the handshake go
 * out once it completes.  Nothing is written before the next dispatch.
 */
uint64_t kqmp_send(struct kqmp *q, const char *command, json_object *args,
		   kqmp_reply_fn fn, void *arg);
/* Same, as an out-of-band command ("exec-oob"); needs KQMP_F_OOB (else 0).
 * After the handshake it returns 0 unless kqmp_oob_enabled(); queued during
 * the handshake, it fails with KQMP_E_INVAL if the server did not offer
 * oob. */
uint64_t kqmp_send_oob(struct kqmp *q, const char *command, json_object *args,
		       kqmp_reply_fn fn, void *arg);
/* Commands sent and not yet answered. */
size_t kqmp_pending(const struct kqmp *q);
/* Forgets a pending command's callback: its reply, when it comes, is
 * dropped and fn is never called.  false if id is not pending. */
bool kqmp_cancel(struct kqmp *q, uint64_t id);

/* Blocking helper: send and dispatch until the reply or timeout_ms (< 0:
 * no limit).  Returns 0 with *ret (caller puts; may pass NULL) or -1 with
 * err: KQMP_E_QMP (QEMU's class and desc), KQMP_E_TIMEOUT (the command is
 * cancelled; the connection stays usable), or the connection's failure.
 * Other commands' callbacks and events are handled meanwhile.  Not from a
 * callback (KQMP_E_INVAL). */
int kqmp_execute(struct kqmp *q, const char *command, json_object *args,
		 int timeout_ms, json_object **ret, struct kqmp_error *err);

/* ---- events ------------------------------------------------------------ */

struct kqmp_event {
	char *name;		/* "STOP", "DEVICE_DELETED", ... */
	json_object *data;	/* may be NULL */
	int64_t sec, usec;	/* QEMU's timestamp */
};

/* 1: *ev filled (release with kqmp_event_clear); 0: queue empty. */
int kqmp_event_pop(struct kqmp *q, struct kqmp_event *ev);
void kqmp_event_clear(struct kqmp_event *ev);
/* The queue keeps at most 4096 events and 16 MiB of them (the newest one
 * always): beyond, the oldest are dropped (the first drop is logged).
 * How many were dropped on this connection. */
uint64_t kqmp_events_dropped(const struct kqmp *q);

/* Blocking helper: pops events until one named name (and, if match is not
 * NULL, for which match(data, arg) is true) arrives, or timeout_ms (< 0: no
 * limit).  Events that do not match stay queued in order; events queued
 * before the connection failed still count.  0 or -1 with err
 * (KQMP_E_TIMEOUT leaves the connection usable).  match is a predicate:
 * it must not call into the library.  Not from a callback. */
typedef bool (*kqmp_event_match_fn)(json_object *data, void *arg);
int kqmp_wait_event(struct kqmp *q, const char *name, kqmp_event_match_fn match,
		    void *arg, int timeout_ms, struct kqmp_event *ev,
		    struct kqmp_error *err);

/* ---- diagnostics ------------------------------------------------------- */

/* Called for things worth a log line (a reply with an unknown id dropped,
 * ...). Default: none. */
typedef void (*kqmp_log_fn)(struct kqmp *q, const char *msg, void *arg);
void kqmp_set_log(struct kqmp *q, kqmp_log_fn fn, void *arg);

#ifdef __cplusplus
}
#endif
#endif
