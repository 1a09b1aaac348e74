/* SPDX-License-Identifier: MIT */
/*
 * The symvirt protocol written once: every command of both legs with its
 * arguments (types and bounds), what ranks answer, the events and the
 * error classes (docs/symvirt-protocol.md mirrors this table; the test
 * symvirt-doc-commands checks both ways, bounds included).
 *
 * json-c and libc only, so that every party links it: the guest agent,
 * the host client and the coordinator, and the kawarimi BTL, a shared
 * object inside every MPI process that must not pull in the rest of
 * kawarimi.  Validation is here too, with the framing of one JSON object
 * per line for readers that have no kqmp_reader (the BTL).
 */
#ifndef KAWARIMI_SYMVIRT_SCHEMA_H
#define KAWARIMI_SYMVIRT_SCHEMA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <json-c/json.h>

/* The protocol version (hello's "protocol", register's "version"). */
#define SYMVIRT_PROTOCOL_VERSION 1
/* The longest command or event either side accepts (a line). */
#define SYMVIRT_MAX_MSG 65536
/* Replies may be longer (an inventory, a resume of many ranks). */
#define SYMVIRT_MAX_REPLY (1 << 20)
/* A rank's address list (ADDRS) as lowercase hex: twice the bytes of the
 * BTL's modex encoding of at most 16 addresses (12 + 16 * 24 bytes). */
#define SYMVIRT_ADDRS_MAX 792

/* A lease (quiesce, renew, and the agent's --adopt-lease-ms). */
#define SCHEMA_LEASE_MIN_MS 1000
#define SCHEMA_LEASE_MAX_MS 3600000

/* Entries of one `peers` (either leg; a 64 KiB line holds about 250) and
 * fabrics of the agent's `resume` to a rank: receivers size arrays by
 * these. */
#define SCHEMA_PEERS_MAX 1024
#define SCHEMA_FABRICS_MAX 8

#define SCHEMA_NAME_MAX 64	/* command, event, error class names */
#define SCHEMA_ID_MAX 128	/* string ids */
#define SCHEMA_DESC_MAX 1024	/* error descriptions */

enum schema_type {
	SCHEMA_INT,		/* an integer in min..max */
	SCHEMA_STR,		/* a string of min..max bytes, no NUL */
	SCHEMA_BOOL,
	SCHEMA_ENUM,		/* one of the strings in values */
	SCHEMA_ADDRS,		/* ADDRS: lowercase hex, even, 2..SYMVIRT_ADDRS_MAX */
	SCHEMA_ARRAY,		/* min..max items, each as item says */
	SCHEMA_OBJECT,		/* the members listed (and, if open, others) */
};

/* One argument, array item, object member or member of a return. */
struct schema_arg {
	const char *name;		/* NULL ends a list */
	enum schema_type type;
	bool required;
	int64_t min, max;
	const struct schema_arg *item;	/* SCHEMA_ARRAY: what each item is */
	const struct schema_arg *members; /* SCHEMA_OBJECT: its members, NULL-ended */
	const char *const *values;	/* SCHEMA_ENUM: NULL-ended */
	bool open;			/* SCHEMA_OBJECT: other members are ignored
					 * (what a rank reports, as in QMP) */
};

/* Who sends a command to whom. */
enum schema_leg {
	SCHEMA_HOST,		/* coordinator -> agent */
	SCHEMA_RANK,		/* rank -> agent */
	SCHEMA_TO_RANK,		/* agent -> rank */
};

struct schema_command {
	const char *name;		/* NULL ends the table */
	enum schema_leg leg;
	const struct schema_arg *args;	/* NULL-ended; a command takes no others */
	const struct schema_arg *ret;	/* what a return must have (agent -> rank
					 * only; other members are ignored) */
};

struct schema_event {
	const char *name;
	const struct schema_arg *data;	/* its members (receivers ignore others) */
};

extern const struct schema_command schema_commands[];
extern const struct schema_event schema_events[];
/* Every error class either leg answers with, NULL-ended. */
extern const char *const schema_classes[];
/* One entry of the coordinator's `peers` list: {"jobid", "rank", "addrs"}. */
extern const struct schema_arg schema_peer_entry;

const struct schema_command *schema_find(const char *name, enum schema_leg leg);
const char *schema_leg_name(enum schema_leg leg);
const char *schema_type_name(enum schema_type t);

/* An error to send back: class and one-line description. */
struct schema_err {
	char cls[SCHEMA_NAME_MAX];
	char desc[SCHEMA_DESC_MAX];
};

void schema_err_set(struct schema_err *e, const char *cls, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* What a top-level message is. */
enum schema_kind { SCHEMA_MSG_COMMAND, SCHEMA_MSG_REPLY, SCHEMA_MSG_EVENT };

/*
 * Checks the envelope of a message: a command has only execute (a name),
 * arguments (an object) and id (an integer or a string); a reply has id and
 * exactly one of return (object) / error ({class, desc}); an event has
 * event, data (object) and timestamp.  On success *kind says which.
 * On failure e is set and, if the message carried a usable id, *id gets
 * it (not a new reference) so the error reply can echo it.
 */
int schema_check_envelope(json_object *msg, enum schema_kind *kind, json_object **id,
			  struct schema_err *e);

/* Validates arguments (may be NULL) against a list ending in {NULL}:
 * types, ranges, sizes, required members, no unknown members.  Errors are
 * InvalidParameter, quoting the argument and the bad value. */
int schema_check_args(json_object *args, const struct schema_arg *spec, struct schema_err *e);

/* Validates one value against one spec; what names it in messages. */
int schema_check_value(const struct schema_arg *s, json_object *v, const char *what,
		       struct schema_err *e);

/* Checks a rank's successful return for a command the agent sent it
 * against the command's ret list; members not listed are ignored
 * (forward compatibility, as in QMP).  Errors are ProtocolError. */
int schema_check_return(const char *command, json_object *ret, struct schema_err *e);

/* A rank's address list as ranks put it in `resume`/`status` replies and
 * the coordinator hands it back in `peers` (ADDRS).  Opaque to everyone
 * but the BTL. */
static inline bool schema_valid_addrs(json_object *v)
{
	int n;

	if (!json_object_is_type(v, json_type_string))
		return false;
	n = json_object_get_string_len(v);
	return n >= 2 && n % 2 == 0 && n <= SYMVIRT_ADDRS_MAX &&
	       strspn(json_object_get_string(v), "0123456789abcdef") == (size_t)n;
}

/* ---- one JSON object per line, for readers without kqmp_reader ---------- */

/*
 * A line buffer of at most max bytes: recv() into schema_lines_space(),
 * commit what came, then take complete lines with schema_lines_next()
 * until it returns 0.  -1 means a line longer than max: the stream cannot
 * be trusted to resynchronise, the caller drops the connection.
 */
struct schema_lines {
	char *buf;
	size_t len, max, skip;
};

int schema_lines_init(struct schema_lines *l, size_t max);
void schema_lines_free(struct schema_lines *l);
void schema_lines_reset(struct schema_lines *l);
char *schema_lines_space(struct schema_lines *l, size_t *room);
void schema_lines_commit(struct schema_lines *l, size_t n);
/* 1: *line (not NUL-terminated) and *len are the next line, valid until
 * the next call; 0: none complete yet; -1: overlong. */
int schema_lines_next(struct schema_lines *l, const char **line, size_t *len);

/* Parses one line as exactly one JSON object (blanks around it allowed).
 * Returns the object (new reference) or NULL with e set (InvalidParameter,
 * as a rank answers it). */
json_object *schema_parse_line(const char *line, size_t len, struct schema_err *e);

/* A message as one line: malloc'd, '\n'-terminated; msg is consumed. */
char *schema_line_of(json_object *msg);

/* Builders: each returns a new object (caller puts). id may be NULL. */
json_object *schema_reply_return(json_object *ret, json_object *id);	/* consumes ret */
json_object *schema_reply_error(const char *cls, const char *desc, json_object *id);
json_object *schema_command_msg(const char *name, json_object *args, json_object *id);	/* consumes args and id */

#endif
