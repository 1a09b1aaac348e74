/* SPDX-License-Identifier: MIT */
/*
 * symvirt protocol helpers of the agent and its fuzz harness: getters for
 * arguments the table (schema.h) has validated, line framing around the
 * kqmp_reader the agent shares with the host client, and reply/event
 * builders.
 * docs/symvirt-protocol.md is the reference.
 */
#ifndef KAWARIMI_SYMVIRT_PROTO_H
#define KAWARIMI_SYMVIRT_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <json-c/json.h>

#include "schema.h"

/* Validation is the table's (schema.h); the agent's names for it. */
#define SV_DESC_MAX SCHEMA_DESC_MAX

/* Getters for validated arguments, with a default when absent. */
int64_t sv_arg_int(json_object *args, const char *name, int64_t dflt);
const char *sv_arg_str(json_object *args, const char *name, const char *dflt);
bool sv_arg_bool(json_object *args, const char *name, bool dflt);
json_object *sv_arg(json_object *args, const char *name);

/* Builders: each returns a new object (caller puts). id may be NULL. */
json_object *sv_reply_return(json_object *ret, json_object *id);	/* consumes ret */
json_object *sv_reply_error(const struct schema_err *e, json_object *id);
json_object *sv_event(const char *name, json_object *data);		/* consumes data */
json_object *sv_command(const char *name, json_object *args, uint64_t id); /* consumes args */

/*
 * Line framing around kqmp_reader: bytes are fed one line at a time, so a
 * bad line costs only that line and the stream resynchronises at the next
 * newline.  A line longer than max bytes is reported once and skipped.  For each complete message or error, fn is called; it returns 0
 * to go on or -1 to stop feeding (the connection went away).
 */
struct sv_framer;
typedef int (*sv_frame_fn)(void *arg, json_object *msg, const struct schema_err *e);

struct sv_framer *sv_framer_new(size_t max);
void sv_framer_free(struct sv_framer *f);
int sv_framer_feed(struct sv_framer *f, const char *buf, size_t len, sv_frame_fn fn,
		   void *arg);
void sv_framer_reset(struct sv_framer *f);

#endif
