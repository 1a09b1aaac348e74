/* SPDX-License-Identifier: MIT */
/*
 * symvirt protocol helpers shared by the agent and its fuzz harness:
 * validation of incoming messages against argument specs, line framing
 * around the shared kjson_reader, and reply/event builders.
 * docs/symvirt-protocol.md is the reference.
 */
#ifndef KAWARIMI_SYMVIRT_PROTO_H
#define KAWARIMI_SYMVIRT_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <json-c/json.h>

#include "symvirt-client.h"	/* SYMVIRT_PROTOCOL_VERSION, SYMVIRT_MAX_MSG */

#define SV_NAME_MAX 64		/* command, event, error class names */
#define SV_ID_MAX 128		/* string ids */
#define SV_DESC_MAX 1024	/* error descriptions */

enum sv_argtype {
	SV_INT,			/* min..max */
	SV_STR,			/* length 1..max */
	SV_BOOL,
	SV_STRLIST,		/* at most max items, each a string of 1..64 bytes */
	SV_OBJLIST,		/* at most max items, each an object (the command checks them) */
};

struct sv_argspec {
	const char *name;
	enum sv_argtype type;
	bool required;
	int64_t min, max;
};

/* An error to send back: class and one-line description. */
struct sv_err {
	char cls[SV_NAME_MAX];
	char desc[SV_DESC_MAX];
};

void sv_err_set(struct sv_err *e, const char *cls, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* What a top-level message is. */
enum sv_kind { SV_MSG_COMMAND, SV_MSG_REPLY, SV_MSG_EVENT };

/*
 * Checks the envelope of a message: a command has only execute (a name),
 * arguments (an object) and id (an integer or a string); a reply has id and
 * exactly one of return (object) / error ({class, desc}); an event has
 * event, data (object) and timestamp.  On success *kind says which.
 * On failure e is set and, if the message carried a usable id, *id gets
 * it (not a new reference) so the error reply can echo it.
 */
int sv_check_envelope(json_object *msg, enum sv_kind *kind, json_object **id,
		      struct sv_err *e);

/* Validates arguments (may be NULL) against a spec ending in {NULL}:
 * types, ranges, sizes, required members, no unknown members. */
int sv_check_args(json_object *args, const struct sv_argspec *spec, struct sv_err *e);

/* Getters for validated arguments, with a default when absent. */
int64_t sv_arg_int(json_object *args, const char *name, int64_t dflt);
const char *sv_arg_str(json_object *args, const char *name, const char *dflt);
bool sv_arg_bool(json_object *args, const char *name, bool dflt);
json_object *sv_arg(json_object *args, const char *name);

/* Checks a rank's successful return for a command the agent sent it
 * ("quiesce", "resume", "status"); members not in the protocol are
 * ignored (forward compatibility, as in QMP). */
int sv_check_rank_return(const char *command, json_object *ret, struct sv_err *e);

/* Builders: each returns a new object (caller puts). id may be NULL. */
json_object *sv_reply_return(json_object *ret, json_object *id);	/* consumes ret */
json_object *sv_reply_error(const struct sv_err *e, json_object *id);
json_object *sv_event(const char *name, json_object *data);		/* consumes data */
json_object *sv_command(const char *name, json_object *args, uint64_t id); /* consumes args */

/*
 * Line framing around kjson_reader: bytes are fed one line at a time, so a
 * bad line costs only that line and the stream resynchronises at the next
 * newline.  A line longer than max bytes is reported once and skipped.  For each complete message or error, fn is called; it returns 0
 * to go on or -1 to stop feeding (the connection went away).
 */
struct sv_framer;
typedef int (*sv_frame_fn)(void *arg, json_object *msg, const struct sv_err *e);

struct sv_framer *sv_framer_new(size_t max);
void sv_framer_free(struct sv_framer *f);
int sv_framer_feed(struct sv_framer *f, const char *buf, size_t len, sv_frame_fn fn,
		   void *arg);
void sv_framer_reset(struct sv_framer *f);

#endif
