/* SPDX-License-Identifier: MIT */
/*
 * libkawarimi-symvirt client: the host side of the symvirt channel
 * (docs/symvirt-protocol.md, "Coordinator <-> agent").
 *
 * Event-loop agnostic like libkawarimi-qmp: the caller gets a file
 * descriptor, polls it (readable always, writable while
 * symvirt_want_write() says so) and calls symvirt_dispatch().  Replies are
 * matched to commands by "id" and handed to the command's callback; events
 * are queued.  symvirt_execute(), symvirt_sync() and symvirt_wait_event()
 * are blocking helpers built on that.
 *
 * The channel is a virtio-serial port behind a QEMU chardev socket.  Bytes
 * the host sends while no guest reader has the port open are lost, so a
 * client must not assume its first command arrives: symvirt_sync() sends
 * "hello" again every retry_ms until the agent answers.  Replies to commands
 * of an earlier connection may still be queued in the guest; ids start at a
 * random value per connection so such replies are recognised and dropped.
 *
 * The library never exits and never prints to stdout; failures come back as
 * struct kqmp_error values.  Framing is the kqmp_reader of
 * qmp/kawarimi-qmp.h.
 */
#ifndef KAWARIMI_SYMVIRT_CLIENT_H
#define KAWARIMI_SYMVIRT_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <json-c/json.h>

#include "kawarimi-qmp.h"	/* struct kqmp_error, kqmp_reader */
#include "schema.h"	/* SYMVIRT_PROTOCOL_VERSION, SYMVIRT_MAX_MSG, _MAX_REPLY, ADDRS */

#ifdef __cplusplus
extern "C" {
#endif

/* ---- errors ---------------------------------------------------------- */

/* Errors are struct kqmp_error, the QMP client's (qmp/kawarimi-qmp.h):
 * one type for both clients.  KQMP_E_QMP here means the agent answered
 * {"error": ...}; its texts arrive with control characters (ESC, CR, C1,
 * bad UTF-8) replaced by '?' (kqmp_printable): safe to print.  The kind
 * names in symvirt's wording ("agent error", "I/O error"): */
const char *symvirt_err_kind_name(enum kqmp_err_kind kind);

/* ---- connections ------------------------------------------------------ */

struct symvirt;

/* Adopts an already connected stream fd (made non-blocking); name is for
 * messages (NULL: "fd N").  NULL only on ENOMEM. */
struct symvirt *symvirt_new_fd(int fd, const char *name);
/* Connects a unix socket (the QEMU chardev of the port).  No command is
 * sent; call symvirt_sync() before trusting the channel. */
struct symvirt *symvirt_connect_unix(const char *path, struct kqmp_error *err);
/* Connects an endpoint: a socket path ("PATH" or "unix:PATH") as
 * symvirt_connect_unix(), or "ssh://[USER@]HOST[:PORT]/PATH" through the
 * operator's ssh, as kqmp_connect_uri() (qmp/kawarimi-qmp.h): ssh's
 * failures come back from symvirt_dispatch() as a closed connection that
 * quotes ssh's reason.  KQMP_E_INVAL for a malformed uri. */
struct symvirt *symvirt_connect_uri(const char *uri, struct kqmp_error *err);
/* Blocking: connect (symvirt_connect_uri) + symvirt_sync(), at most
 * timeout_ms in all.  *hello
 * (may be NULL) receives hello's return (caller puts). */
struct symvirt *symvirt_open(const char *path, int timeout_ms, json_object **hello,
			     struct kqmp_error *err);
void symvirt_close(struct symvirt *s);

int symvirt_fd(const struct symvirt *s);
bool symvirt_want_write(const struct symvirt *s);
/* false once the connection failed; see symvirt_last_error(). */
bool symvirt_is_open(const struct symvirt *s);
const struct kqmp_error *symvirt_last_error(const struct symvirt *s);
const char *symvirt_name(const struct symvirt *s);

/*
 * Reads (at most 64 KiB: poll again for the rest) and writes what it can
 * without blocking, then runs reply callbacks.  Returns 0, or -1 once the connection has failed (err says why; every
 * pending command's callback has then been called with that error).
 */
int symvirt_dispatch(struct symvirt *s, struct kqmp_error *err);

/* ---- commands ---------------------------------------------------------- */

/* ret is owned by the library for the duration of the callback; take a
 * json_object_get() to keep it.  Exactly one of ret / err is non-NULL. */
typedef void (*symvirt_reply_fn)(struct symvirt *s, json_object *ret,
				 const struct kqmp_error *err, void *arg);

/*
 * Queues a command; args (may be NULL) is consumed.  Returns the command id
 * (never 0), or 0 if the connection has failed or command is NULL (fn is
 * not called then).  fn may be NULL: the reply is then dropped.
 */
uint64_t symvirt_send(struct symvirt *s, const char *command, json_object *args,
		      symvirt_reply_fn fn, void *arg);
/* Forgets a pending command: its callback will not be called; a late
 * reply is dropped silently.  Returns 0, or -1 if id is not pending. */
int symvirt_cancel(struct symvirt *s, uint64_t id);
size_t symvirt_pending(const struct symvirt *s);

/* Blocking helper: send and dispatch until the reply or timeout_ms.
 * Returns 0 with *ret (caller puts; may pass NULL) or -1 with err. */
int symvirt_execute(struct symvirt *s, const char *command, json_object *args,
		    int timeout_ms, json_object **ret, struct kqmp_error *err);

/*
 * Blocking helper for the virtio-serial quirk: sends "hello" every retry_ms
 * (<= 0: 500) until one is answered or timeout_ms passes; the unanswered
 * ones are cancelled.  Checks the agent's protocol version.  0 with *hello
 * (caller puts; may pass NULL) or -1 with err.
 */
int symvirt_sync(struct symvirt *s, int timeout_ms, int retry_ms,
		 json_object **hello, struct kqmp_error *err);

/* ---- events ------------------------------------------------------------ */

struct symvirt_event {
	char *name;		/* "RANK_REGISTERED", ... */
	json_object *data;	/* may be NULL */
	int64_t sec, usec;	/* the agent's timestamp */
};

/* 1: *ev filled (release with symvirt_event_clear); 0: queue empty. */
int symvirt_event_pop(struct symvirt *s, struct symvirt_event *ev);
void symvirt_event_clear(struct symvirt_event *ev);

/* The guest is untrusted: its queued events are bounded to
 * SYMVIRT_MAX_EVENTS events and SYMVIRT_MAX_EVENT_BYTES bytes as they came
 * over the wire (the newest one always stays).  Beyond, the oldest are
 * dropped and counted (the first drop is logged).  A real agent sends a
 * few events per rank and migration.  symvirt_dispatch() reads at most
 * 64 KiB per call, so a flooding guest cannot starve the loop that drives
 * every other VM: poll level-triggered and call it again. */
#define SYMVIRT_MAX_EVENTS 1024
#define SYMVIRT_MAX_EVENT_BYTES (4u << 20)
uint64_t symvirt_events_dropped(const struct symvirt *s);

/* Blocking helper: waits for an event named name (and, if match is not
 * NULL, for which match(data, arg) is true) or timeout_ms.  Events that do
 * not match stay queued in order.  0 or -1 with err. */
typedef bool (*symvirt_event_match_fn)(json_object *data, void *arg);
int symvirt_wait_event(struct symvirt *s, const char *name,
		       symvirt_event_match_fn match, void *arg, int timeout_ms,
		       struct symvirt_event *ev, struct kqmp_error *err);

/* ---- diagnostics ------------------------------------------------------- */

/* Called for things worth a log line (a reply with an unknown id dropped,
 * ...). Default: none. */
typedef void (*symvirt_log_fn)(struct symvirt *s, const char *msg, void *arg);
void symvirt_set_log(struct symvirt *s, symvirt_log_fn fn, void *arg);

#ifdef __cplusplus
}
#endif
#endif
