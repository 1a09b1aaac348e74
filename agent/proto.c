/* SPDX-License-Identifier: MIT */
/*
 * The agent's argument getters, builders and framing; see proto.h.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "qmp/kawarimi-qmp.h"
#include "proto.h"

json_object *agent_arg(json_object *args, const char *name)
{
	json_object *v = NULL;

	if (args)
		json_object_object_get_ex(args, name, &v);
	return v;
}

int64_t agent_arg_int(json_object *args, const char *name, int64_t dflt)
{
	json_object *v = agent_arg(args, name);

	return v ? json_object_get_int64(v) : dflt;
}

const char *agent_arg_str(json_object *args, const char *name, const char *dflt)
{
	json_object *v = agent_arg(args, name);

	return v ? json_object_get_string(v) : dflt;
}

bool agent_arg_bool(json_object *args, const char *name, bool dflt)
{
	json_object *v = agent_arg(args, name);

	return v ? json_object_get_boolean(v) : dflt;
}

/* ---- builders ---------------------------------------------------------------- */

json_object *agent_reply_return(json_object *ret, json_object *id)
{
	return schema_reply_return(ret, id);
}

json_object *agent_reply_error(const struct schema_err *e, json_object *id)
{
	return schema_reply_error(e->cls, e->desc, id);
}

json_object *agent_event(const char *name, json_object *data)
{
	json_object *m = json_object_new_object(), *ts = json_object_new_object();
	struct timeval tv;

	gettimeofday(&tv, NULL);
	json_object_object_add(m, "event", json_object_new_string(name));
	json_object_object_add(m, "data", data ? data : json_object_new_object());
	json_object_object_add(ts, "seconds", json_object_new_int64(tv.tv_sec));
	json_object_object_add(ts, "microseconds", json_object_new_int64(tv.tv_usec));
	json_object_object_add(m, "timestamp", ts);
	return m;
}

json_object *agent_command_msg(const char *name, json_object *args, uint64_t id)
{
	return schema_command_msg(name, args, json_object_new_int64((int64_t)id));
}

/* ---- line framing -------------------------------------------------------------- */

struct agent_framer {
	struct kqmp_reader *r;
	size_t max;		/* longest line */
	size_t line_len;	/* bytes of the current line fed so far */
	bool skipping;		/* dropping the rest of a bad line */
};

struct agent_framer *agent_framer_new(size_t max)
{
	struct agent_framer *f = calloc(1, sizeof(*f));

	if (!f)
		return NULL;
	f->max = max;
	f->r = kqmp_reader_new(max);
	if (!f->r) {
		free(f);
		return NULL;
	}
	return f;
}

void agent_framer_free(struct agent_framer *f)
{
	if (!f)
		return;
	kqmp_reader_free(f->r);
	free(f);
}

void agent_framer_reset(struct agent_framer *f)
{
	struct kqmp_reader *r = kqmp_reader_new(f->max);

	/* Without memory for a fresh reader keep the old one: it stays failed
	 * and every line is reported, which is still no crash. */
	if (r) {
		kqmp_reader_free(f->r);
		f->r = r;
	}
	f->line_len = 0;
	f->skipping = false;
}

static int bad_line(struct agent_framer *f, bool line_done, const char *cls, const char *desc,
		    agent_frame_fn fn, void *arg)
{
	struct schema_err e;

	agent_framer_reset(f);
	f->skipping = !line_done;
	schema_err_set(&e, cls, "%s", desc);
	return fn(arg, NULL, &e);
}

/* Feeds one segment (a line or its start) and hands out what it completes. */
static int feed_segment(struct agent_framer *f, const char *seg, size_t len, bool line_done,
			agent_frame_fn fn, void *arg)
{
	struct kqmp_error ke;
	json_object *msg;
	char desc[200];
	int r;

	if (f->line_len + len > f->max) {
		snprintf(desc, sizeof(desc), "a line longer than %zu bytes was dropped; send one JSON object per line",
			 f->max);
		return bad_line(f, line_done, "ProtocolError", desc, fn, arg);
	}
	if (kqmp_reader_feed(f->r, seg, len, &ke) < 0)
		return bad_line(f, line_done, "ProtocolError", ke.desc, fn, arg);
	f->line_len = line_done ? 0 : f->line_len + len;
	while ((r = kqmp_reader_next(f->r, &msg, &ke)) != 0) {
		if (r < 0)
			return bad_line(f, line_done, "ProtocolError", ke.desc, fn, arg);
		r = fn(arg, msg, NULL);
		json_object_put(msg);
		if (r < 0)
			return -1;
	}
	return 0;
}

int agent_framer_feed(struct agent_framer *f, const char *buf, size_t len, agent_frame_fn fn,
		   void *arg)
{
	while (len > 0) {
		const char *nl = memchr(buf, '\n', len);
		size_t seg = nl ? (size_t)(nl - buf) + 1 : len;

		if (f->skipping) {
			f->skipping = !nl;
		} else if (feed_segment(f, buf, seg, nl != NULL, fn, arg) < 0) {
			return -1;
		}
		buf += seg;
		len -= seg;
	}
	return 0;
}
