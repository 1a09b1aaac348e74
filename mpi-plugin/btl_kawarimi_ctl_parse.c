/* kawarimi BTL: agent <-> rank message parsing and formatting. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "btl_kawarimi_ctl.h"

#define INVALID "InvalidParameter"

static int fail(const char **eclass, const char *cls, char *err, size_t errlen,
		const char *fmt, const char *a, const char *b)
{
	*eclass = cls;
	snprintf(err, errlen, fmt, a, b);
	return -1;
}

static const char *jstr(json_object *o)
{
	const char *s = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);

	return s ? s : "?";
}

static int only_members(json_object *obj, const char *const *allowed, const char *where,
			const char **eclass, char *err, size_t errlen)
{
	json_object_object_foreach(obj, key, val) {
		const char *const *a;
		int ok = 0;

		(void)val;
		for (a = allowed; *a; a++)
			ok |= !strcmp(*a, key);
		if (!ok)
			return fail(eclass, INVALID, err, errlen,
				    "unknown member \"%s\" in %s", key, where);
	}
	return 0;
}

static int get_ms(json_object *args, const char *name, int64_t *out,
		  const char **eclass, char *err, size_t errlen)
{
	json_object *v;

	*out = -1;
	if (!args || !json_object_object_get_ex(args, name, &v))
		return 0;
	if (!json_object_is_type(v, json_type_int) || json_object_get_int64(v) < 0 ||
	    json_object_get_int64(v) > 86400000)
		return fail(eclass, INVALID, err, errlen,
			    "\"%s\" must be an integer number of milliseconds between 0 and "
			    "86400000, got %s", name, jstr(v));
	*out = json_object_get_int64(v);
	return 0;
}

static int copy_str(json_object *o, const char *name, char *dst, size_t len,
		    const char **eclass, char *err, size_t errlen)
{
	json_object *v;

	if (!json_object_object_get_ex(o, name, &v))
		return fail(eclass, INVALID, err, errlen, "fabric entry %s lacks \"%s\"",
			    jstr(o), name);
	if (!json_object_is_type(v, json_type_string) ||
	    (size_t)json_object_get_string_len(v) >= len)
		return fail(eclass, INVALID, err, errlen,
			    "fabric member \"%s\" must be a short string, got %s", name, jstr(v));
	strcpy(dst, json_object_get_string(v));
	return 0;
}

static int parse_fabrics(json_object *args, struct kw_ctl_msg *m,
			 const char **eclass, char *err, size_t errlen)
{
	static const char *const fab_members[] = { "name", "ifname", "addr", NULL };
	json_object *arr;
	size_t i, n;

	if (!args || !json_object_object_get_ex(args, "fabrics", &arr))
		return 0;
	if (!json_object_is_type(arr, json_type_array))
		return fail(eclass, INVALID, err, errlen,
			    "\"%s\" must be an array, got %s", "fabrics", jstr(arr));
	n = json_object_array_length(arr);
	if (n > KW_CTL_MAX_FABRICS)
		return fail(eclass, INVALID, err, errlen, "\"%s\" has more than 8 entries: %s",
			    "fabrics", jstr(arr));
	for (i = 0; i < n; i++) {
		json_object *f = json_object_array_get_idx(arr, i);
		struct kw_fabric_hint *h = &m->fabrics[i];

		if (!json_object_is_type(f, json_type_object))
			return fail(eclass, INVALID, err, errlen,
				    "fabric entries must be objects, got %s%s", jstr(f), "");
		if (only_members(f, fab_members, "a fabric entry", eclass, err, errlen) ||
		    copy_str(f, "name", h->name, sizeof(h->name), eclass, err, errlen) ||
		    copy_str(f, "ifname", h->ifname, sizeof(h->ifname), eclass, err, errlen) ||
		    copy_str(f, "addr", h->addr, sizeof(h->addr), eclass, err, errlen))
			return -1;
		if (strcmp(h->name, "verbs") && strcmp(h->name, "tcp"))
			return fail(eclass, INVALID, err, errlen,
				    "fabric name must be \"verbs\" or \"tcp\", got \"%s\"%s",
				    h->name, "");
		m->nfabrics++;
	}
	return 0;
}

static int get_bool(json_object *args, const char *name, int *out,
		    const char **eclass, char *err, size_t errlen)
{
	json_object *v;

	*out = -1;
	if (!args || !json_object_object_get_ex(args, name, &v))
		return 0;
	if (!json_object_is_type(v, json_type_boolean))
		return fail(eclass, INVALID, err, errlen, "\"%s\" must be true or false, got %s",
			    name, jstr(v));
	*out = json_object_get_boolean(v);
	return 0;
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* One `peers` entry: {"rank": N, "addrs": HEX}. */
static int parse_peer(json_object *e, struct kw_peer_addrs *p,
		      const char **eclass, char *err, size_t errlen)
{
	static const char *const members[] = { "rank", "addrs", NULL };
	unsigned char blob[KW_ADDRS_HEX_MAX / 2];
	char why[200];
	json_object *r, *a;
	const char *hex;
	size_t n, i;

	if (!json_object_is_type(e, json_type_object))
		return fail(eclass, INVALID, err, errlen,
			    "peers entries must be objects {\"rank\", \"addrs\"}, got %s%s", jstr(e), "");
	if (only_members(e, members, "a peers entry", eclass, err, errlen))
		return -1;
	if (!json_object_object_get_ex(e, "rank", &r) || !json_object_is_type(r, json_type_int) ||
	    json_object_get_int64(r) < 0 || json_object_get_int64(r) > INT32_MAX)
		return fail(eclass, INVALID, err, errlen,
			    "peers entry %s needs \"rank\", an integer 0..2147483647%s", jstr(e), "");
	if (!json_object_object_get_ex(e, "addrs", &a) || !json_object_is_type(a, json_type_string))
		return fail(eclass, INVALID, err, errlen,
			    "peers entry %s needs \"addrs\", a hex string%s", jstr(e), "");
	hex = json_object_get_string(a);
	n = (size_t)json_object_get_string_len(a);
	if (n % 2 || n / 2 > sizeof(blob))
		return fail(eclass, INVALID, err, errlen,
			    "peers entry %s: \"addrs\" must be an even number of hex digits, "
			    "at most %s", jstr(e), "792");
	for (i = 0; i < n / 2; i++) {
		int hi = hexval(hex[2 * i]), lo = hexval(hex[2 * i + 1]);

		if (hi < 0 || lo < 0)
			return fail(eclass, INVALID, err, errlen,
				    "peers entry %s: \"addrs\" has a character that is not a "
				    "lowercase hex digit%s", jstr(e), "");
		blob[i] = (unsigned char)(hi << 4 | lo);
	}
	if (kw_addrs_decode(blob, n / 2, &p->addrs, why, sizeof(why)))
		return fail(eclass, INVALID, err, errlen, "peers entry %s: %s", jstr(r), why);
	p->rank = (uint32_t)json_object_get_int64(r);
	return 0;
}

static int parse_peers(json_object *args, struct kw_ctl_msg *m,
		       const char **eclass, char *err, size_t errlen)
{
	json_object *arr;
	size_t i, n;

	if (!args || !json_object_object_get_ex(args, "ranks", &arr) ||
	    !json_object_is_type(arr, json_type_array))
		return fail(eclass, INVALID, err, errlen,
			    "peers needs \"ranks\", an array of {\"rank\", \"addrs\"}%s%s", "", "");
	n = json_object_array_length(arr);
	if (n > KW_CTL_MAX_PEERS)
		return fail(eclass, INVALID, err, errlen,
			    "\"ranks\" has more than %s entries; send them in several peers "
			    "commands%s", "1024", "");
	m->peers = calloc(n ? n : 1, sizeof(*m->peers));
	if (!m->peers)
		return fail(eclass, "GenericError", err, errlen, "out of memory%s%s", "", "");
	for (i = 0; i < n; i++) {
		if (parse_peer(json_object_array_get_idx(arr, i), &m->peers[i], eclass, err, errlen))
			return -1;
		m->npeers++;
	}
	return 0;
}

static int parse_command(json_object *o, struct kw_ctl_msg *m,
			 const char **eclass, char *err, size_t errlen)
{
	static const char *const top[] = { "execute", "arguments", "id", NULL };
	static const char *const q_args[] = { "deadline-ms", NULL };
	static const char *const r_args[] = { "fabrics", "link-timeout-ms", "deadline-ms",
					      "wait", NULL };
	static const char *const p_args[] = { "ranks", "deadline-ms", "wait", NULL };
	static const char *const none[] = { NULL };
	json_object *ex, *args = NULL;
	const char *name;

	if (only_members(o, top, "a command", eclass, err, errlen))
		return -1;
	json_object_object_get_ex(o, "execute", &ex);
	if (!json_object_is_type(ex, json_type_string))
		return fail(eclass, INVALID, err, errlen, "\"execute\" must be a string, got %s%s",
			    jstr(ex), "");
	name = json_object_get_string(ex);
	if (json_object_object_get_ex(o, "arguments", &args) &&
	    !json_object_is_type(args, json_type_object))
		return fail(eclass, INVALID, err, errlen,
			    "\"arguments\" must be an object, got %s%s", jstr(args), "");
	if (!strcmp(name, "quiesce")) {
		m->kind = KW_CTL_QUIESCE;
		if (args && only_members(args, q_args, "quiesce arguments", eclass, err, errlen))
			return -1;
		return get_ms(args, "deadline-ms", &m->deadline_ms, eclass, err, errlen);
	}
	if (!strcmp(name, "resume")) {
		m->kind = KW_CTL_RESUME;
		if (args && only_members(args, r_args, "resume arguments", eclass, err, errlen))
			return -1;
		if (get_ms(args, "link-timeout-ms", &m->link_timeout_ms, eclass, err, errlen) ||
		    get_ms(args, "deadline-ms", &m->deadline_ms, eclass, err, errlen) ||
		    get_bool(args, "wait", &m->wait, eclass, err, errlen))
			return -1;
		return parse_fabrics(args, m, eclass, err, errlen);
	}
	if (!strcmp(name, "peers")) {
		m->kind = KW_CTL_PEERS;
		if (args && only_members(args, p_args, "peers arguments", eclass, err, errlen))
			return -1;
		if (get_ms(args, "deadline-ms", &m->deadline_ms, eclass, err, errlen) ||
		    get_bool(args, "wait", &m->wait, eclass, err, errlen))
			return -1;
		return parse_peers(args, m, eclass, err, errlen);
	}
	if (!strcmp(name, "status")) {
		m->kind = KW_CTL_STATUS;
		if (args && only_members(args, none, "status arguments", eclass, err, errlen))
			return -1;
		return 0;
	}
	return fail(eclass, "CommandNotFound", err, errlen,
		    "command \"%s\" is not served by an MPI rank%s", name, "");
}

static int parse_reply(json_object *o, struct kw_ctl_msg *m,
		       const char **eclass, char *err, size_t errlen)
{
	static const char *const top[] = { "return", "error", "id", NULL };
	json_object *v;

	m->kind = KW_CTL_REPLY;
	if (only_members(o, top, "a reply", eclass, err, errlen))
		return -1;
	if (json_object_object_get_ex(o, "error", &v)) {
		json_object *d;

		m->is_error = 1;
		if (json_object_is_type(v, json_type_object) &&
		    json_object_object_get_ex(v, "desc", &d))
			snprintf(m->desc, sizeof(m->desc), "%s", json_object_get_string(d));
		else
			snprintf(m->desc, sizeof(m->desc), "%s", jstr(v));
		return 0;
	}
	if (json_object_object_get_ex(o, "return", &v) && json_object_is_type(v, json_type_object)) {
		json_object *ver;

		if (json_object_object_get_ex(v, "version", &ver) &&
		    json_object_is_type(ver, json_type_int))
			m->version = json_object_get_int64(ver);
	}
	return 0;
}

int kw_ctl_parse(const char *line, size_t len, struct kw_ctl_msg *m,
		 const char **eclass, char *err, size_t errlen)
{
	struct json_tokener *tok;
	json_object *o, *id;
	size_t used;
	int rc;

	memset(m, 0, sizeof(*m));
	m->deadline_ms = m->link_timeout_ms = m->version = -1;
	m->wait = -1;
	*eclass = INVALID;
	if (len > KW_CTL_MAX_LINE)
		return fail(eclass, INVALID, err, errlen, "line of %s bytes exceeds %s",
			    "more than 65536", "the limit");
	tok = json_tokener_new();
	if (!tok)
		return fail(eclass, "GenericError", err, errlen, "out of memory%s%s", "", "");
	o = json_tokener_parse_ex(tok, line, (int)len);
	used = tok->char_offset;
	rc = json_tokener_get_error(tok);
	json_tokener_free(tok);
	if (!o || rc != json_tokener_success) {
		json_object_put(o);
		return fail(eclass, INVALID, err, errlen, "line is not one JSON object: %s (%s)",
			    json_tokener_error_desc(rc), "expected {\"execute\": ...}");
	}
	for (; used < len; used++)
		if (line[used] != ' ' && line[used] != '\t' && line[used] != '\r') {
			json_object_put(o);
			return fail(eclass, INVALID, err, errlen,
				    "trailing bytes after the JSON object%s%s", "", "");
		}
	if (!json_object_is_type(o, json_type_object)) {
		rc = fail(eclass, INVALID, err, errlen, "message must be a JSON object, got %s%s",
			  jstr(o), "");
		json_object_put(o);
		return rc;
	}
	if (json_object_object_get_ex(o, "id", &id)) {
		if (json_object_is_type(id, json_type_int) ||
		    json_object_is_type(id, json_type_string))
			m->id = json_object_get(id);
		else {
			rc = fail(eclass, INVALID, err, errlen,
				  "\"id\" must be an integer or a string, got %s%s", jstr(id), "");
			json_object_put(o);
			return rc;
		}
	}
	if (json_object_object_get_ex(o, "execute", NULL))
		rc = parse_command(o, m, eclass, err, errlen);
	else if (json_object_object_get_ex(o, "return", NULL) ||
		 json_object_object_get_ex(o, "error", NULL))
		rc = parse_reply(o, m, eclass, err, errlen);
	else if (json_object_object_get_ex(o, "event", NULL))
		m->kind = KW_CTL_EVENT, rc = 0;
	else
		rc = fail(eclass, INVALID, err, errlen,
			  "message %s is neither a command, a reply nor an event%s", jstr(o), "");
	json_object_put(o);
	return rc;
}

void kw_ctl_msg_clear(struct kw_ctl_msg *m)
{
	json_object_put(m->id);
	m->id = NULL;
	free(m->peers);
	m->peers = NULL;
	m->npeers = 0;
}

int kw_addrs_hex(const struct kw_addrs *a, char *out, size_t len)
{
	unsigned char blob[KW_ADDRS_HEX_MAX / 2];
	int n = kw_addrs_encode(a, blob, sizeof(blob)), i;

	if (n < 0 || (size_t)n * 2 + 1 > len)
		return -1;
	for (i = 0; i < n; i++)
		snprintf(out + 2 * i, 3, "%02x", blob[i]);
	out[2 * n] = '\0';
	return 0;
}

static char *line_of(json_object *o)
{
	const char *s = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);
	size_t n = s ? strlen(s) : 0;
	char *out = s ? malloc(n + 2) : NULL;

	if (out) {
		memcpy(out, s, n);
		out[n] = '\n';
		out[n + 1] = '\0';
	}
	json_object_put(o);
	return out;
}

char *kw_ctl_fmt_return(json_object *id, json_object *ret)
{
	json_object *o = json_object_new_object();

	json_object_object_add(o, "return", ret);
	if (id)
		json_object_object_add(o, "id", json_object_get(id));
	return line_of(o);
}

char *kw_ctl_fmt_error(json_object *id, const char *eclass, const char *desc)
{
	json_object *o = json_object_new_object();
	json_object *e = json_object_new_object();

	json_object_object_add(e, "class", json_object_new_string(eclass));
	json_object_object_add(e, "desc", json_object_new_string(desc));
	json_object_object_add(o, "error", e);
	if (id)
		json_object_object_add(o, "id", json_object_get(id));
	return line_of(o);
}

char *kw_ctl_fmt_command(const char *name, json_object *args, int id)
{
	json_object *o = json_object_new_object();

	json_object_object_add(o, "execute", json_object_new_string(name));
	if (args)
		json_object_object_add(o, "arguments", args);
	json_object_object_add(o, "id", json_object_new_int(id));
	return line_of(o);
}
