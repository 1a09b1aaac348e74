/* SPDX-License-Identifier: MIT */
/*
 * Validation against the table of schema.c, the line framing of readers
 * without kqmp_reader, and the message builders: schema.h.  json-c and
 * libc only (the BTL links this into every MPI process).
 */
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "schema.h"

#define LABEL_MAX 160

void schema_err_set(struct schema_err *e, const char *cls, const char *fmt, ...)
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
	if (len == 0 || len >= SCHEMA_NAME_MAX || strlen(s) != len)
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
	       json_object_get_string_len(v) <= SCHEMA_ID_MAX;
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

/* ---- the envelope ------------------------------------------------------------ */

static int check_command(json_object *msg, struct schema_err *e)
{
	static const char *const members[] = { "execute", "arguments", "id", NULL };
	json_object *v;
	const char *bad;
	char q[100];

	if (!only_members(msg, members, &bad)) {
		schema_err_set(e, "InvalidParameter", "unknown member \"%.64s\" in a command; allowed: execute, arguments, id", bad);
		return -1;
	}
	json_object_object_get_ex(msg, "execute", &v);
	if (!is_name(v)) {
		schema_err_set(e, "InvalidParameter", "\"execute\" must be a command name (letters, digits, - and _; below %d bytes), not %s",
			       SCHEMA_NAME_MAX, quote(v, q, sizeof(q)));
		return -1;
	}
	if (json_object_object_get_ex(msg, "arguments", &v) &&
	    !json_object_is_type(v, json_type_object)) {
		schema_err_set(e, "InvalidParameter", "\"arguments\" must be an object, not %s",
			       quote(v, q, sizeof(q)));
		return -1;
	}
	return 0;
}

static int check_error_member(json_object *err, struct schema_err *e)
{
	static const char *const err_members[] = { "class", "desc", NULL };
	json_object *cls = NULL, *desc = NULL;
	const char *bad;
	char q[100];

	if (!json_object_is_type(err, json_type_object) || !only_members(err, err_members, &bad)) {
		schema_err_set(e, "ProtocolError", "\"error\" must be {\"class\": NAME, \"desc\": TEXT}, not %s",
			       quote(err, q, sizeof(q)));
		return -1;
	}
	json_object_object_get_ex(err, "class", &cls);
	json_object_object_get_ex(err, "desc", &desc);
	if (!is_name(cls) || !json_object_is_type(desc, json_type_string) ||
	    json_object_get_string_len(desc) >= SCHEMA_DESC_MAX) {
		schema_err_set(e, "ProtocolError", "\"error\" needs a \"class\" name and a \"desc\" string below %d bytes, not %s",
			       SCHEMA_DESC_MAX, quote(err, q, sizeof(q)));
		return -1;
	}
	return 0;
}

static int check_reply(json_object *msg, struct schema_err *e)
{
	static const char *const members[] = { "return", "error", "id", NULL };
	json_object *ret = NULL, *err = NULL;
	const char *bad;
	char q[100];

	if (!only_members(msg, members, &bad)) {
		schema_err_set(e, "ProtocolError", "unknown member \"%.64s\" in a reply; allowed: return, error, id", bad);
		return -1;
	}
	json_object_object_get_ex(msg, "return", &ret);
	json_object_object_get_ex(msg, "error", &err);
	if (!json_object_object_get_ex(msg, "id", NULL)) {
		schema_err_set(e, "ProtocolError", "a reply without \"id\"");
		return -1;
	}
	if (ret && err) {
		schema_err_set(e, "ProtocolError", "a reply with both \"return\" and \"error\"");
		return -1;
	}
	if (ret && !json_object_is_type(ret, json_type_object)) {
		schema_err_set(e, "ProtocolError", "\"return\" must be an object, not %s", quote(ret, q, sizeof(q)));
		return -1;
	}
	return err ? check_error_member(err, e) : 0;
}

static int check_event(json_object *msg, struct schema_err *e)
{
	static const char *const members[] = { "event", "data", "timestamp", NULL };
	json_object *v;
	const char *bad;
	char q[100];

	if (!only_members(msg, members, &bad)) {
		schema_err_set(e, "ProtocolError", "unknown member \"%.64s\" in an event", bad);
		return -1;
	}
	json_object_object_get_ex(msg, "event", &v);
	if (!is_name(v)) {
		schema_err_set(e, "ProtocolError", "\"event\" must be a name, not %s", quote(v, q, sizeof(q)));
		return -1;
	}
	if (json_object_object_get_ex(msg, "data", &v) && !json_object_is_type(v, json_type_object)) {
		schema_err_set(e, "ProtocolError", "event \"data\" must be an object, not %s", quote(v, q, sizeof(q)));
		return -1;
	}
	return 0;
}

int schema_check_envelope(json_object *msg, enum schema_kind *kind, json_object **id,
			  struct schema_err *e)
{
	json_object *v = NULL;
	char q[100];

	*id = NULL;
	if (!json_object_is_type(msg, json_type_object)) {
		schema_err_set(e, "ProtocolError", "a message must be a JSON object, not %s", quote(msg, q, sizeof(q)));
		return -1;
	}
	if (json_object_object_get_ex(msg, "id", &v)) {
		if (!is_id(v)) {
			schema_err_set(e, "InvalidParameter", "\"id\" must be an integer or a string of at most %d bytes, not %s",
				       SCHEMA_ID_MAX, quote(v, q, sizeof(q)));
			return -1;
		}
		*id = v;
	}
	if (json_object_object_get_ex(msg, "execute", NULL)) {
		*kind = SCHEMA_MSG_COMMAND;
		return check_command(msg, e);
	}
	if (json_object_object_get_ex(msg, "return", NULL) ||
	    json_object_object_get_ex(msg, "error", NULL)) {
		*kind = SCHEMA_MSG_REPLY;
		return check_reply(msg, e);
	}
	if (json_object_object_get_ex(msg, "event", NULL)) {
		*kind = SCHEMA_MSG_EVENT;
		return check_event(msg, e);
	}
	schema_err_set(e, "ProtocolError", "a message needs \"execute\", \"return\", \"error\" or \"event\"; got %s",
		       quote(msg, q, sizeof(q)));
	return -1;
}

/* ---- values ---------------------------------------------------------------------- */

static int check_int(const struct schema_arg *s, json_object *v, const char *what,
		     struct schema_err *e)
{
	char q[100];
	int64_t i;

	if (!json_object_is_type(v, json_type_int)) {
		schema_err_set(e, "InvalidParameter", "%s must be an integer, not %s", what, quote(v, q, sizeof(q)));
		return -1;
	}
	i = json_object_get_int64(v);
	/* json-c saturates a larger unsigned value to INT64_MAX. */
	if (i < s->min || i > s->max ||
	    (i == INT64_MAX && json_object_get_uint64(v) != (uint64_t)INT64_MAX)) {
		schema_err_set(e, "InvalidParameter", "%s must be between %" PRId64 " and %" PRId64 ", not %s",
			       what, s->min, s->max, quote(v, q, sizeof(q)));
		return -1;
	}
	return 0;
}

static int check_str(const struct schema_arg *s, json_object *v, const char *what,
		     struct schema_err *e)
{
	char q[100];
	int len;

	if (!json_object_is_type(v, json_type_string)) {
		schema_err_set(e, "InvalidParameter", "%s must be a string, not %s", what, quote(v, q, sizeof(q)));
		return -1;
	}
	len = json_object_get_string_len(v);
	if (len < s->min || len > s->max || strlen(json_object_get_string(v)) != (size_t)len) {
		schema_err_set(e, "InvalidParameter", "%s must be %" PRId64 " to %" PRId64 " bytes without NUL, not %d bytes",
			       what, s->min, s->max, len);
		return -1;
	}
	return 0;
}

static int check_enum(const struct schema_arg *s, json_object *v, const char *what,
		      struct schema_err *e)
{
	char q[100], names[200] = "";
	size_t off = 0;

	if (json_object_is_type(v, json_type_string))
		for (size_t i = 0; s->values[i]; i++)
			if (!strcmp(json_object_get_string(v), s->values[i]) &&
			    strlen(s->values[i]) == (size_t)json_object_get_string_len(v))
				return 0;
	for (size_t i = 0; s->values[i] && off < sizeof(names); i++)
		off += (size_t)snprintf(names + off, sizeof(names) - off, "%s\"%s\"",
					!i ? "" : s->values[i + 1] ? ", " : " or ", s->values[i]);
	schema_err_set(e, "InvalidParameter", "%s must be %s, not %s", what, names, quote(v, q, sizeof(q)));
	return -1;
}

static int check_array(const struct schema_arg *s, json_object *v, const char *what,
		       struct schema_err *e)
{
	char q[100], label[LABEL_MAX];
	size_t n;

	if (!json_object_is_type(v, json_type_array)) {
		schema_err_set(e, "InvalidParameter", "%s must be an array, not %s", what, quote(v, q, sizeof(q)));
		return -1;
	}
	n = json_object_array_length(v);
	if ((int64_t)n < s->min || (int64_t)n > s->max) {
		schema_err_set(e, "InvalidParameter", "%s has %zu items; at most %" PRId64 " allowed",
			       what, n, s->max);
		return -1;
	}
	for (size_t i = 0; i < n; i++) {
		snprintf(label, sizeof(label), "%s[%zu]", what, i);
		if (schema_check_value(s->item, json_object_array_get_idx(v, i), label, e) < 0)
			return -1;
	}
	return 0;
}

static void member_names(const struct schema_arg *m, char *buf, size_t n)
{
	size_t off = 0;

	buf[0] = '\0';
	for (; m->name && off < n; m++)
		off += (size_t)snprintf(buf + off, n - off, "%s%s", off ? ", " : "", m->name);
	if (!off)
		snprintf(buf, n, "none");
}

/* Members of an object, or the arguments of a command: what names the
 * object in messages ("" for arguments, which keep their old wording). */
static int check_members(const struct schema_arg *spec, bool open, json_object *o,
			 const char *what, struct schema_err *e)
{
	char label[LABEL_MAX], names[400];

	json_object_object_foreach(o, key, val) {
		const struct schema_arg *s = spec;

		while (s->name && strcmp(s->name, key))
			s++;
		if (!s->name && open)
			continue;
		if (!s->name) {
			member_names(spec, names, sizeof(names));
			if (*what)
				schema_err_set(e, "InvalidParameter", "%s has an unknown member \"%.64s\"; members: %s",
					       what, key, names);
			else
				schema_err_set(e, "InvalidParameter", "unknown argument \"%.64s\"; this command takes: %s",
					       key, strcmp(names, "none") ? names : "no arguments");
			return -1;
		}
		snprintf(label, sizeof(label), "%s%s\"%s\"", what, *what ? "." : "", key);
		if (schema_check_value(s, val, label, e) < 0)
			return -1;
	}
	for (const struct schema_arg *s = spec; s->name; s++) {
		if (s->required && !(o && json_object_object_get_ex(o, s->name, NULL))) {
			if (*what)
				schema_err_set(e, "InvalidParameter", "%s lacks \"%s\"", what, s->name);
			else
				schema_err_set(e, "InvalidParameter", "missing argument \"%s\"", s->name);
			return -1;
		}
	}
	return 0;
}

int schema_check_value(const struct schema_arg *s, json_object *v, const char *what,
		       struct schema_err *e)
{
	char q[100];

	switch (s->type) {
	case SCHEMA_INT:
		return check_int(s, v, what, e);
	case SCHEMA_STR:
		return check_str(s, v, what, e);
	case SCHEMA_BOOL:
		if (json_object_is_type(v, json_type_boolean))
			return 0;
		schema_err_set(e, "InvalidParameter", "%s must be true or false, not %s", what, quote(v, q, sizeof(q)));
		return -1;
	case SCHEMA_ENUM:
		return check_enum(s, v, what, e);
	case SCHEMA_ADDRS:
		if (schema_valid_addrs(v))
			return 0;
		schema_err_set(e, "InvalidParameter", "%s must be a rank's address list as its resume reply gave it "
			       "(lowercase hex, an even number of 2 to %d characters), not %s",
			       what, SYMVIRT_ADDRS_MAX, quote(v, q, sizeof(q)));
		return -1;
	case SCHEMA_ARRAY:
		return check_array(s, v, what, e);
	case SCHEMA_OBJECT:
		if (json_object_is_type(v, json_type_object))
			return check_members(s->members, s->open, v, what, e);
		schema_err_set(e, "InvalidParameter", "%s must be an object, not %s", what, quote(v, q, sizeof(q)));
		return -1;
	}
	return -1;
}

int schema_check_args(json_object *args, const struct schema_arg *spec, struct schema_err *e)
{
	if (!args) {
		json_object *none = json_object_new_object();
		int r = none ? check_members(spec, false, none, "", e) : -1;

		json_object_put(none);
		if (!none)
			schema_err_set(e, "GenericError", "out of memory");
		return r;
	}
	return check_members(spec, false, args, "", e);
}

int schema_check_return(const char *command, json_object *ret, struct schema_err *e)
{
	const struct schema_command *c = schema_find(command, SCHEMA_TO_RANK);
	char label[LABEL_MAX];

	if (!c || !c->ret)
		return 0;
	for (const struct schema_arg *s = c->ret; s->name; s++) {
		json_object *v;

		if (!json_object_object_get_ex(ret, s->name, &v)) {
			if (!s->required)
				continue;
			schema_err_set(e, "ProtocolError", "the rank's return lacks \"%s\"", s->name);
			return -1;
		}
		snprintf(label, sizeof(label), "the rank's \"%s\"", s->name);
		if (schema_check_value(s, v, label, e) < 0) {
			snprintf(e->cls, sizeof(e->cls), "ProtocolError");
			return -1;
		}
	}
	return 0;
}

/* ---- lines ------------------------------------------------------------------------ */

int schema_lines_init(struct schema_lines *l, size_t max)
{
	memset(l, 0, sizeof(*l));
	l->buf = malloc(max + 1);
	l->max = max;
	return l->buf ? 0 : -1;
}

void schema_lines_free(struct schema_lines *l)
{
	free(l->buf);
	memset(l, 0, sizeof(*l));
}

void schema_lines_reset(struct schema_lines *l)
{
	l->len = l->skip = 0;
}

/* Drops the line handed out last. */
static void lines_compact(struct schema_lines *l)
{
	if (!l->skip)
		return;
	memmove(l->buf, l->buf + l->skip, l->len - l->skip);
	l->len -= l->skip;
	l->skip = 0;
}

/* One byte more than a line may have: a buffer that fills without a
 * newline is an overlong line, told apart from one that just fits. */
char *schema_lines_space(struct schema_lines *l, size_t *room)
{
	lines_compact(l);
	*room = l->max + 1 - l->len;
	return l->buf + l->len;
}

void schema_lines_commit(struct schema_lines *l, size_t n)
{
	l->len += n;
}

int schema_lines_next(struct schema_lines *l, const char **line, size_t *len)
{
	char *nl;

	lines_compact(l);
	nl = memchr(l->buf, '\n', l->len);
	if (nl) {
		*line = l->buf;
		*len = (size_t)(nl - l->buf);
		l->skip = *len + 1;
		return 1;
	}
	return l->len > l->max ? -1 : 0;
}

json_object *schema_parse_line(const char *line, size_t len, struct schema_err *e)
{
	struct json_tokener *tok;
	json_object *o;
	size_t used;
	char q[100];
	int rc;

	if (len > INT_MAX) {
		schema_err_set(e, "InvalidParameter", "a line of %zu bytes is too long", len);
		return NULL;
	}
	tok = json_tokener_new();
	if (!tok) {
		schema_err_set(e, "GenericError", "out of memory");
		return NULL;
	}
	o = json_tokener_parse_ex(tok, line, (int)len);
	used = json_tokener_get_parse_end(tok);
	rc = json_tokener_get_error(tok);
	json_tokener_free(tok);
	if (!o || rc != json_tokener_success) {
		json_object_put(o);
		schema_err_set(e, "InvalidParameter", "line is not one JSON object: %s (expected {\"execute\": ...})",
			       json_tokener_error_desc(rc));
		return NULL;
	}
	for (; used < len; used++)
		if (line[used] != ' ' && line[used] != '\t' && line[used] != '\r') {
			json_object_put(o);
			schema_err_set(e, "InvalidParameter", "trailing bytes after the JSON object");
			return NULL;
		}
	if (!json_object_is_type(o, json_type_object)) {
		schema_err_set(e, "InvalidParameter", "message must be a JSON object, got %s", quote(o, q, sizeof(q)));
		json_object_put(o);
		return NULL;
	}
	return o;
}

char *schema_line_of(json_object *msg)
{
	const char *s = msg ? json_object_to_json_string_ext(msg, JSON_C_TO_STRING_PLAIN) : NULL;
	size_t n = s ? strlen(s) : 0;
	char *out = s ? malloc(n + 2) : NULL;

	if (out) {
		memcpy(out, s, n);
		out[n] = '\n';
		out[n + 1] = '\0';
	}
	json_object_put(msg);
	return out;
}

/* ---- builders ---------------------------------------------------------------------- */

json_object *schema_reply_return(json_object *ret, json_object *id)
{
	json_object *m = json_object_new_object();

	json_object_object_add(m, "return", ret ? ret : json_object_new_object());
	if (id)
		json_object_object_add(m, "id", json_object_get(id));
	return m;
}

json_object *schema_reply_error(const char *cls, const char *desc, json_object *id)
{
	json_object *m = json_object_new_object(), *err = json_object_new_object();

	json_object_object_add(err, "class", json_object_new_string(cls));
	json_object_object_add(err, "desc", json_object_new_string(desc));
	json_object_object_add(m, "error", err);
	if (id)
		json_object_object_add(m, "id", json_object_get(id));
	return m;
}

json_object *schema_command_msg(const char *name, json_object *args, json_object *id)
{
	json_object *m = json_object_new_object();

	json_object_object_add(m, "execute", json_object_new_string(name));
	if (args)
		json_object_object_add(m, "arguments", args);
	if (id)
		json_object_object_add(m, "id", id);
	return m;
}
