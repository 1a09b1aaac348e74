/* SPDX-License-Identifier: MIT */
/*
 * symvirt protocol helpers of the agent and its fuzz harness: getters for
 * arguments the table (schema.h) has validated, line framing around the
 * kqmp_reader the agent shares with the host client, and reply/event
 * builders.
 * docs/symvirt-protocol.md is the reference.
 */
#ifndef KAWARIMI_AGENT_PROTO_H
#define KAWARIMI_AGENT_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <json-c/json.h>

#include "schema.h"

/* Validation is the table's (schema.h); the agent's names for it. */
#define AGENT_DESC_MAX SCHEMA_DESC_MAX

/* Getters for validated arguments, with a default when absent. */
int64_t agent_arg_int(json_object *args, const char *name, int64_t dflt);
const char *agent_arg_str(json_object *args, const char *name, const char *dflt);
bool agent_arg_bool(json_object *args, const char *name, bool dflt);
json_object *agent_arg(json_object *args, const char *name);

/* Builders: each returns a new object (caller puts). id may be NULL. */
json_object *agent_reply_return(json_object *ret, json_object *id);	/* consumes ret */
json_object *agent_reply_error(const struct schema_err *e, json_object *id);
json_object *agent_event(const char *name, json_object *data);		/* consumes data */
json_object *agent_command_msg(const char *name, json_object *args, uint64_t id); /* consumes args */

/*
 * Line framing around kqmp_reader: bytes are fed one line at a time, so a
 * bad line costs only that line and the stream resynchronises at the next
 * newline.  A line longer than max bytes is reported once and skipped.  For each complete message or error, fn is called; it returns 0
 * to go on or -1 to stop feeding (the connection went away).
 */
struct agent_framer;
typedef int (*agent_frame_fn)(void *arg, json_object *msg, const struct schema_err *e);

struct agent_framer *agent_framer_new(size_t max);
void agent_framer_free(struct agent_framer *f);
int agent_framer_feed(struct agent_framer *f, const char *buf, size_t len, agent_frame_fn fn,
		   void *arg);
void agent_framer_reset(struct agent_framer *f);

#endif
