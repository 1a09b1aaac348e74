/* SPDX-License-Identifier: MIT */
/*
 * Message validation and framing for the symvirt protocol; see proto.h.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "qmp/kawarimi-qmp.h"
#include "proto.h"

void sv_err_set(struct sv_err *e, const char *cls, const char *fmt, ...)
{
	va_list ap;

	snprintf(e->cls, sizeof(e->cls), "%s", cls);
	va_start(ap, fmt);
	vsnprintf(e->desc, sizeof(e->desc), fmt, ap);
	va_end(ap);
}

/* A short, printable rendering of a value for error messages. */
static const char *quote(json_object *v, char *buf, size_t n)
{
	snprintf(buf, n, "%.80s", v ? json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN) : "null");
	return buf;
}

static bool is_name(json_object *v)
{
	const char *s;
	size_t len;

	if (!json_object_is_type(v, json_type_string))
		return false;
	s = json_object_get_string(v);
	len = (size_t)json_object_get_string_len(v);
	if (len == 0 || len >= SV_NAME_MAX || strlen(s) != len)
		return false;
	for (size_t i = 0; i < len; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
		      (s[i] >= '0' && s[i] <= '9') || s[i] == '-' || s[i] == '_'))
			return false;
	return true;
}

static bool is_id(json_object *v)
{
	if (json_object_is_type(v, json_type_int))
		return true;
	return json_object_is_type(v, json_type_string) &&
	       json_object_get_string_len(v) <= SV_ID_MAX;
}

static bool only_members(json_object *o, const char *const *allowed, const char **bad)
{
	json_object_object_foreach(o, key, val) {
		bool ok = false;

		(void)val;
		for (size_t i = 0; allowed[i]; i++)
			if (!strcmp(key, allowed[i]))
				ok = true;
		if (!ok) {
			*bad = key;
			return false;
		}
	}
	return true;
}

static int check_command(json_object *msg, struct sv_err *e)
{
	static const char *const members[] = { "execute", "arguments", "id", NULL };
	json_object *v;
	const char *bad;
	char q[100];

	if (!only_members(msg, members, &bad)) {
		sv_err_set(e, "InvalidParameter", "unknown member \"%.64s\" in a command; allowed: execute, arguments, id", bad);
		return -1;
	}
	json_object_object_get_ex(msg, "execute", &v);
	if (!is_name(v)) {
		sv_err_set(e, "InvalidParameter", "\"execute\" must be a command name (letters, digits, - and _; below %d bytes), not %s",
			   SV_NAME_MAX, quote(v, q, sizeof(q)));
		return -1;
	}
	if (json_object_object_get_ex(msg, "arguments", &v) &&
	    !json_object_is_type(v, json_type_object)) {
		sv_err_set(e, "InvalidParameter", "\"arguments\" must be an object, not %s",
			   quote(v, q, sizeof(q)));
		return -1;
	}
	return 0;
}

static int check_reply(json_object *msg, struct sv_err *e)
{
	static const char *const members[] = { "return", "error", "id", NULL };
	static const char *const err_members[] = { "class", "desc", NULL };
	json_object *ret = NULL, *err = NULL, *v;
	const char *bad;
	char q[100];

	if (!only_members(msg, members, &bad)) {
		sv_err_set(e, "ProtocolError", "unknown member \"%.64s\" in a reply; allowed: return, error, id", bad);
		return -1;
	}
	json_object_object_get_ex(msg, "return", &ret);
	json_object_object_get_ex(msg, "error", &err);
	if (!json_object_object_get_ex(msg, "id", &v)) {
		sv_err_set(e, "ProtocolError", "a reply without \"id\"");
		return -1;
	}
	if (ret && err) {
		sv_err_set(e, "ProtocolError", "a reply with both \"return\" and \"error\"");
		return -1;
	}
	if (ret && !json_object_is_type(ret, json_type_object)) {
		sv_err_set(e, "ProtocolError", "\"return\" must be an object, not %s", quote(ret, q, sizeof(q)));
		return -1;
	}
	if (err) {
		json_object *cls = NULL, *desc = NULL;

		if (!json_object_is_type(err, json_type_object) || !only_members(err, err_members, &bad)) {
			sv_err_set(e, "ProtocolError", "\"error\" must be {\"class\": NAME, \"desc\": TEXT}, not %s",
				   quote(err, q, sizeof(q)));
			return -1;
		}
		json_object_object_get_ex(err, "class", &cls);
		json_object_object_get_ex(err, "desc", &desc);
		if (!is_name(cls) || !json_object_is_type(desc, json_type_string) ||
		    json_object_get_string_len(desc) >= SV_DESC_MAX) {
			sv_err_set(e, "ProtocolError", "\"error\" needs a \"class\" name and a \"desc\" string below %d bytes, not %s",
				   SV_DESC_MAX, quote(err, q, sizeof(q)));
			return -1;
		}
	}
	return 0;
}

static int check_event(json_object *msg, struct sv_err *e)
{
	static const char *const members[] = { "event", "data", "timestamp", NULL };
	json_object *v;
	const char *bad;
	char q[100];

	if (!only_members(msg, members, &bad)) {
		sv_err_set(e, "ProtocolError", "unknown member \"%.64s\" in an event", bad);
		return -1;
	}
	json_object_object_get_ex(msg, "event", &v);
	if (!is_name(v)) {
		sv_err_set(e, "ProtocolError", "\"event\" must be a name, not %s", quote(v, q, sizeof(q)));
		return -1;
	}
	if (json_object_object_get_ex(msg, "data", &v) && !json_object_is_type(v, json_type_object)) {
		sv_err_set(e, "ProtocolError", "event \"data\" must be an object, not %s", quote(v, q, sizeof(q)));
		return -1;
	}
	return 0;
}

int sv_check_envelope(json_object *msg, enum sv_kind *kind, json_object **id,
		      struct sv_err *e)
{
	json_object *v = NULL;
	char q[100];

	*id = NULL;
	if (!json_object_is_type(msg, json_type_object)) {
		sv_err_set(e, "ProtocolError", "a message must be a JSON object, not %s", quote(msg, q, sizeof(q)));
		return -1;
	}
	if (json_object_object_get_ex(msg, "id", &v)) {
		if (!is_id(v)) {
			sv_err_set(e, "InvalidParameter", "\"id\" must be an integer or a string of at most %d bytes, not %s",
				   SV_ID_MAX, quote(v, q, sizeof(q)));
			return -1;
		}
		*id = v;
	}
	if (json_object_object_get_ex(msg, "execute", NULL)) {
		*kind = SV_MSG_COMMAND;
		return check_command(msg, e);
	}
	if (json_object_object_get_ex(msg, "return", NULL) ||
	    json_object_object_get_ex(msg, "error", NULL)) {
		*kind = SV_MSG_REPLY;
		return check_reply(msg, e);
	}
	if (json_object_object_get_ex(msg, "event", NULL)) {
		*kind = SV_MSG_EVENT;
		return check_event(msg, e);
	}
	sv_err_set(e, "ProtocolError", "a message needs \"execute\", \"return\", \"error\" or \"event\"; got %s",
		   quote(msg, q, sizeof(q)));
	return -1;
}

static int check_strlist(const struct sv_argspec *s, json_object *v, struct sv_err *e)
{
	char q[100];
	size_t n;

	if (!json_object_is_type(v, json_type_array)) {
		sv_err_set(e, "InvalidParameter", "\"%s\" must be an array of strings, not %s",
			   s->name, quote(v, q, sizeof(q)));
		return -1;
	}
	n = json_object_array_length(v);
	if ((int64_t)n > s->max) {
		sv_err_set(e, "InvalidParameter", "\"%s\" has %zu items; at most %" PRId64 " allowed",
			   s->name, n, s->max);
		return -1;
	}
	for (size_t i = 0; i < n; i++) {
		json_object *it = json_object_array_get_idx(v, i);

		if (!json_object_is_type(it, json_type_string) ||
		    json_object_get_string_len(it) < 1 || json_object_get_string_len(it) > 64) {
			sv_err_set(e, "InvalidParameter", "\"%s\" item %zu must be a string of 1 to 64 bytes, not %s",
				   s->name, i, quote(it, q, sizeof(q)));
			return -1;
		}
	}
	return 0;
}

static int check_one(const struct sv_argspec *s, json_object *v, struct sv_err *e)
{
	char q[100];
	int64_t i;
	int len;

	switch (s->type) {
	case SV_INT:
		if (!json_object_is_type(v, json_type_int)) {
			sv_err_set(e, "InvalidParameter", "\"%s\" must be an integer, not %s",
				   s->name, quote(v, q, sizeof(q)));
			return -1;
		}
		i = json_object_get_int64(v);
		if (i < s->min || i > s->max ||
		    (i == INT64_MAX && json_object_get_uint64(v) != (uint64_t)INT64_MAX)) {
			sv_err_set(e, "InvalidParameter", "\"%s\" must be between %" PRId64 " and %" PRId64 ", not %s",
				   s->name, s->min, s->max, quote(v, q, sizeof(q)));
			return -1;
		}
		return 0;
	case SV_STR:
		if (!json_object_is_type(v, json_type_string)) {
			sv_err_set(e, "InvalidParameter", "\"%s\" must be a string, not %s",
				   s->name, quote(v, q, sizeof(q)));
			return -1;
		}
		len = json_object_get_string_len(v);
		if (len < 1 || len > s->max || strlen(json_object_get_string(v)) != (size_t)len) {
			sv_err_set(e, "InvalidParameter", "\"%s\" must be 1 to %" PRId64 " bytes without NUL, not %d bytes",
				   s->name, s->max, len);
			return -1;
		}
		return 0;
	case SV_BOOL:
		if (!json_object_is_type(v, json_type_boolean)) {
			sv_err_set(e, "InvalidParameter", "\"%s\" must be true or false, not %s",
				   s->name, quote(v, q, sizeof(q)));
			return -1;
		}
		return 0;
	case SV_STRLIST:
		return check_strlist(s, v, e);
	case SV_OBJLIST:
		if (!json_object_is_type(v, json_type_array) ||
		    json_object_array_length(v) > (size_t)s->max) {
			sv_err_set(e, "InvalidParameter", "\"%s\" must be an array of at most %" PRId64
				   " objects, not %s", s->name, s->max, quote(v, q, sizeof(q)));
			return -1;
		}
		for (size_t k = 0; k < json_object_array_length(v); k++)
			if (!json_object_is_type(json_object_array_get_idx(v, k), json_type_object)) {
				sv_err_set(e, "InvalidParameter", "\"%s\"[%zu] must be an object, not %s",
					   s->name, k, quote(json_object_array_get_idx(v, k), q, sizeof(q)));
				return -1;
			}
		return 0;
	}
	return -1;
}

static int want_addrs(json_object *ret, struct sv_err *e)
{
	json_object *v;
	char q[100];

	if (!json_object_object_get_ex(ret, "addrs", &v) || symvirt_valid_addrs(v))
		return 0;
	sv_err_set(e, "ProtocolError", "the rank's \"addrs\" must be lowercase hex of at most %d "
		   "characters, not %s", SYMVIRT_ADDRS_MAX, quote(v, q, sizeof(q)));
	return -1;
}

int sv_check_args(json_object *args, const struct sv_argspec *spec, struct sv_err *e)
{
	if (args) {
		json_object_object_foreach(args, key, val) {
			const struct sv_argspec *s = spec;

			while (s->name && strcmp(s->name, key))
				s++;
			if (!s->name) {
				char names[400] = "";
				size_t off = 0;

				for (s = spec; s->name && off < sizeof(names); s++)
					off += (size_t)snprintf(names + off, sizeof(names) - off, "%s%s",
								off ? ", " : "", s->name);
				sv_err_set(e, "InvalidParameter", "unknown argument \"%.64s\"; this command takes: %s",
					   key, off ? names : "no arguments");
				return -1;
			}
			if (check_one(s, val, e) < 0)
				return -1;
		}
	}
	for (const struct sv_argspec *s = spec; s->name; s++) {
		if (s->required && !(args && json_object_object_get_ex(args, s->name, NULL))) {
			sv_err_set(e, "InvalidParameter", "missing argument \"%s\"", s->name);
			return -1;
		}
	}
	return 0;
}

json_object *sv_arg(json_object *args, const char *name)
{
	json_object *v = NULL;

	if (args)
		json_object_object_get_ex(args, name, &v);
	return v;
}

int64_t sv_arg_int(json_object *args, const char *name, int64_t dflt)
{
	json_object *v = sv_arg(args, name);

	return v ? json_object_get_int64(v) : dflt;
}

const char *sv_arg_str(json_object *args, const char *name, const char *dflt)
{
	json_object *v = sv_arg(args, name);

	return v ? json_object_get_string(v) : dflt;
}

bool sv_arg_bool(json_object *args, const char *name, bool dflt)
{
	json_object *v = sv_arg(args, name);

	return v ? json_object_get_boolean(v) : dflt;
}

/* ---- what ranks answer ------------------------------------------------------ */

static int want_int(json_object *ret, const char *name, bool required, struct sv_err *e)
{
	json_object *v = NULL;
	char q[100];

	if (!json_object_object_get_ex(ret, name, &v)) {
		if (!required)
			return 0;
		sv_err_set(e, "ProtocolError", "the rank's return lacks \"%s\"", name);
		return -1;
	}
	if (!json_object_is_type(v, json_type_int) || json_object_get_int64(v) < 0) {
		sv_err_set(e, "ProtocolError", "the rank's \"%s\" must be an integer >= 0, not %s",
			   name, quote(v, q, sizeof(q)));
		return -1;
	}
	return 0;
}

static int want_state(json_object *ret, const char *const *states, struct sv_err *e)
{
	json_object *v = NULL;
	char q[100];

	json_object_object_get_ex(ret, "state", &v);
	if (json_object_is_type(v, json_type_string))
		for (size_t i = 0; states[i]; i++)
			if (!strcmp(json_object_get_string(v), states[i]))
				return 0;
	sv_err_set(e, "ProtocolError", "the rank's \"state\" is %s; expected \"%s\"",
		   quote(v, q, sizeof(q)), states[0]);
	return -1;
}

static int want_paths(json_object *ret, struct sv_err *e)
{
	static const char *const strs[] = { "path", "local", "remote", NULL };
	json_object *paths = NULL;
	char q[100];

	if (!json_object_object_get_ex(ret, "paths", &paths))
		return 0;
	if (!json_object_is_type(paths, json_type_array) || json_object_array_length(paths) > 65536) {
		sv_err_set(e, "ProtocolError", "the rank's \"paths\" must be an array, not %s",
			   quote(paths, q, sizeof(q)));
		return -1;
	}
	for (size_t i = 0; i < json_object_array_length(paths); i++) {
		json_object *p = json_object_array_get_idx(paths, i), *v;

		if (!json_object_is_type(p, json_type_object) ||
		    !json_object_object_get_ex(p, "peer", &v) || !json_object_is_type(v, json_type_int)) {
			sv_err_set(e, "ProtocolError", "the rank's paths[%zu] needs an integer \"peer\": %s",
				   i, quote(p, q, sizeof(q)));
			return -1;
		}
		for (size_t k = 0; strs[k]; k++) {
			if (json_object_object_get_ex(p, strs[k], &v) &&
			    (!json_object_is_type(v, json_type_string) ||
			     json_object_get_string_len(v) > 256)) {
				sv_err_set(e, "ProtocolError", "the rank's paths[%zu].%s must be a short string: %s",
					   i, strs[k], quote(p, q, sizeof(q)));
				return -1;
			}
		}
	}
	return 0;
}

int sv_check_rank_return(const char *command, json_object *ret, struct sv_err *e)
{
	static const char *const quiesced[] = { "quiesced", NULL };
	static const char *const resumed[] = { "resumed", NULL };
	static const char *const any[] = { "running", "quiescing", "quiesced", "resuming", NULL };

	if (!strcmp(command, "quiesce"))
		return want_state(ret, quiesced, e) < 0 || want_int(ret, "peers", false, e) < 0 ||
		       want_int(ret, "frames-drained", false, e) < 0 ||
		       want_int(ret, "bytes-queued", false, e) < 0 ||
		       want_int(ret, "elapsed-ms", false, e) < 0 ? -1 : 0;
	if (!strcmp(command, "resume"))
		return want_state(ret, resumed, e) < 0 || want_paths(ret, e) < 0 ||
		       want_addrs(ret, e) < 0 ||
		       want_int(ret, "elapsed-ms", false, e) < 0 ? -1 : 0;
	if (!strcmp(command, "status"))
		return want_state(ret, any, e) < 0 || want_paths(ret, e) < 0 ||
		       want_addrs(ret, e) < 0 ? -1 : 0;
	if (!strcmp(command, "peers"))
		return want_state(ret, any, e) < 0 || want_paths(ret, e) < 0 ? -1 : 0;
	return 0;
}

/* ---- builders ---------------------------------------------------------------- */

json_object *sv_reply_return(json_object *ret, json_object *id)
{
	json_object *m = json_object_new_object();

	json_object_object_add(m, "return", ret ? ret : json_object_new_object());
	if (id)
		json_object_object_add(m, "id", json_object_get(id));
	return m;
}

json_object *sv_reply_error(const struct sv_err *e, json_object *id)
{
	json_object *m = json_object_new_object(), *err = json_object_new_object();

	json_object_object_add(err, "class", json_object_new_string(e->cls));
	json_object_object_add(err, "desc", json_object_new_string(e->desc));
	json_object_object_add(m, "error", err);
	if (id)
		json_object_object_add(m, "id", json_object_get(id));
	return m;
}

json_object *sv_event(const char *name, json_object *data)
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

json_object *sv_command(const char *name, json_object *args, uint64_t id)
{
	json_object *m = json_object_new_object();

	json_object_object_add(m, "execute", json_object_new_string(name));
	if (args)
		json_object_object_add(m, "arguments", args);
	json_object_object_add(m, "id", json_object_new_int64((int64_t)id));
	return m;
}

/* ---- line framing -------------------------------------------------------------- */

struct sv_framer {
	struct kjson_reader *r;
	size_t max;		/* longest line */
	size_t line_len;	/* bytes of the current line fed so far */
	bool skipping;		/* dropping the rest of a bad line */
};

struct sv_framer *sv_framer_new(size_t max)
{
	struct sv_framer *f = calloc(1, sizeof(*f));

	if (!f)
		return NULL;
	f->max = max;
	f->r = kjson_reader_new(max);
	if (!f->r) {
		free(f);
		return NULL;
	}
	return f;
}

void sv_framer_free(struct sv_framer *f)
{
	if (!f)
		return;
	kjson_reader_free(f->r);
	free(f);
}

void sv_framer_reset(struct sv_framer *f)
{
	struct kjson_reader *r = kjson_reader_new(f->max);

	/* Without memory for a fresh reader keep the old one: it stays failed
	 * and every line is reported, which is still no crash. */
	if (r) {
		kjson_reader_free(f->r);
		f->r = r;
	}
	f->line_len = 0;
	f->skipping = false;
}

static int bad_line(struct sv_framer *f, bool line_done, const char *cls, const char *desc,
		    sv_frame_fn fn, void *arg)
{
	struct sv_err e;

	sv_framer_reset(f);
	f->skipping = !line_done;
	sv_err_set(&e, cls, "%s", desc);
	return fn(arg, NULL, &e);
}

/* Feeds one segment (a line or its start) and hands out what it completes. */
static int feed_segment(struct sv_framer *f, const char *seg, size_t len, bool line_done,
			sv_frame_fn fn, void *arg)
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
	if (kjson_reader_feed(f->r, seg, len, &ke) < 0)
		return bad_line(f, line_done, "ProtocolError", ke.desc, fn, arg);
	f->line_len = line_done ? 0 : f->line_len + len;
	while ((r = kjson_reader_next(f->r, &msg, &ke)) != 0) {
		if (r < 0)
			return bad_line(f, line_done, "ProtocolError", ke.desc, fn, arg);
		r = fn(arg, msg, NULL);
		json_object_put(msg);
		if (r < 0)
			return -1;
	}
	return 0;
}

int sv_framer_feed(struct sv_framer *f, const char *buf, size_t len, sv_frame_fn fn,
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
