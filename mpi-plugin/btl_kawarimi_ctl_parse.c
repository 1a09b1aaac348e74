/*
 * kawarimi BTL: agent <-> rank messages.  The protocol's table
 * (symvirt/schema.h) parses the line and checks envelope and arguments,
 * bounds included; what is left here is reading the checked message into
 * a struct kw_ctl_msg and decoding the peers' address lists, which only
 * the BTL understands.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "btl_kawarimi_ctl.h"

/* The class as a string that outlives the error: the table's own. */
static const char *class_of(const struct schema_err *e)
{
	for (size_t i = 0; schema_classes[i]; i++)
		if (!strcmp(schema_classes[i], e->cls))
			return schema_classes[i];
	return "GenericError";
}

static int fail(const struct schema_err *e, const char **eclass, char *err, size_t errlen)
{
	*eclass = class_of(e);
	snprintf(err, errlen, "%s", e->desc);
	return -1;
}

static json_object *member(json_object *o, const char *name)
{
	json_object *v = NULL;

	if (o)
		json_object_object_get_ex(o, name, &v);
	return v;
}

/* Present, even as null (what is present decides what a message is). */
static int has(json_object *o, const char *name)
{
	return json_object_object_get_ex(o, name, NULL);
}

static int64_t ms_or_absent(json_object *args, const char *name)
{
	json_object *v = member(args, name);

	return v ? json_object_get_int64(v) : -1;
}

static int bool_or_absent(json_object *args, const char *name)
{
	json_object *v = member(args, name);

	return v ? json_object_get_boolean(v) : -1;
}

/* Checked by the table: at most SCHEMA_FABRICS_MAX entries whose strings
 * fit the hint's buffers. */
static void read_fabrics(json_object *args, struct kw_ctl_msg *m)
{
	json_object *arr = member(args, "fabrics");

	for (size_t i = 0; arr && i < json_object_array_length(arr); i++) {
		json_object *f = json_object_array_get_idx(arr, i);
		struct kw_fabric_hint *h = &m->fabrics[m->nfabrics++];

		snprintf(h->name, sizeof(h->name), "%s", json_object_get_string(member(f, "name")));
		snprintf(h->ifname, sizeof(h->ifname), "%s", json_object_get_string(member(f, "ifname")));
		snprintf(h->addr, sizeof(h->addr), "%s", json_object_get_string(member(f, "addr")));
	}
}

static int hexval(char c)
{
	return c >= '0' && c <= '9' ? c - '0' : c - 'a' + 10;
}

/* One `peers` entry, {"rank", "addrs"} with lowercase hex the table
 * checked: the address list must also decode. */
static int read_peer(json_object *e, struct kw_peer_addrs *p, struct schema_err *err)
{
	unsigned char blob[KW_ADDRS_HEX_MAX / 2];
	json_object *a = member(e, "addrs");
	const char *hex = json_object_get_string(a);
	size_t n = (size_t)json_object_get_string_len(a) / 2;
	char why[200];

	for (size_t i = 0; i < n; i++)
		blob[i] = (unsigned char)(hexval(hex[2 * i]) << 4 | hexval(hex[2 * i + 1]));
	p->rank = (uint32_t)json_object_get_int64(member(e, "rank"));
	if (kw_addrs_decode(blob, n, &p->addrs, why, sizeof(why))) {
		schema_err_set(err, "InvalidParameter", "peers entry %u: %s", p->rank, why);
		return -1;
	}
	return 0;
}

static int read_peers(json_object *args, struct kw_ctl_msg *m, struct schema_err *err)
{
	json_object *arr = member(args, "ranks");
	size_t n = json_object_array_length(arr);

	m->peers = calloc(n ? n : 1, sizeof(*m->peers));
	if (!m->peers) {
		schema_err_set(err, "GenericError", "out of memory");
		return -1;
	}
	for (size_t i = 0; i < n; i++) {
		if (read_peer(json_object_array_get_idx(arr, i), &m->peers[i], err))
			return -1;
		m->npeers++;
	}
	return 0;
}

static int read_command(json_object *o, struct kw_ctl_msg *m, struct schema_err *err)
{
	const char *name = json_object_get_string(member(o, "execute"));
	json_object *args = member(o, "arguments");
	const struct schema_command *c = schema_find(name, SCHEMA_TO_RANK);

	if (!c) {
		schema_err_set(err, "CommandNotFound", "command \"%s\" is not served by an MPI rank", name);
		return -1;
	}
	if (schema_check_args(args, c->args, err)) {
		char desc[SCHEMA_DESC_MAX];

		snprintf(desc, sizeof(desc), "%s: %.900s", name, err->desc);
		snprintf(err->desc, sizeof(err->desc), "%s", desc);
		return -1;
	}
	m->deadline_ms = ms_or_absent(args, "deadline-ms");
	m->link_timeout_ms = ms_or_absent(args, "link-timeout-ms");
	m->wait = bool_or_absent(args, "wait");
	if (!strcmp(name, "quiesce"))
		m->kind = KW_CTL_QUIESCE;
	else if (!strcmp(name, "status"))
		m->kind = KW_CTL_STATUS;
	else if (!strcmp(name, "resume"))
		m->kind = KW_CTL_RESUME, read_fabrics(args, m);
	else
		m->kind = KW_CTL_PEERS;
	return m->kind == KW_CTL_PEERS ? read_peers(args, m, err) : 0;
}

/* A reply to our `register` (the only command we send that has one),
 * read leniently: a reply without an id (the agent's answer to a line it
 * could not read) is taken, not answered, or each side would answer the
 * other's error for ever. */
static void read_reply(json_object *o, struct kw_ctl_msg *m)
{
	json_object *e = member(o, "error"), *ver = member(member(o, "return"), "version");
	json_object *desc = member(e, "desc");

	m->kind = KW_CTL_REPLY;
	if (e) {
		m->is_error = 1;
		snprintf(m->desc, sizeof(m->desc), "%s", json_object_get_string(desc ? desc : e));
	} else if (json_object_is_type(ver, json_type_int)) {
		m->version = json_object_get_int64(ver);
	}
}

/* Replies and events: their id and a reply's members are checked (a rank
 * answers a bad one, as any bad line, with InvalidParameter). */
static int read_other(json_object *o, struct kw_ctl_msg *m, struct schema_err *err)
{
	json_object *id = member(o, "id");

	if (id && !json_object_is_type(id, json_type_int) && !json_object_is_type(id, json_type_string)) {
		schema_err_set(err, "InvalidParameter", "\"id\" must be an integer or a string, got %.80s",
			       json_object_to_json_string_ext(id, JSON_C_TO_STRING_PLAIN));
		return -1;
	}
	m->id = json_object_get(id);
	if (has(o, "return") || has(o, "error")) {
		json_object_object_foreach(o, key, val) {
			(void)val;
			if (strcmp(key, "return") && strcmp(key, "error") && strcmp(key, "id")) {
				schema_err_set(err, "InvalidParameter", "unknown member \"%.64s\" in a reply", key);
				return -1;
			}
		}
		read_reply(o, m);
	} else if (has(o, "event")) {
		m->kind = KW_CTL_EVENT;
	} else {
		schema_err_set(err, "InvalidParameter", "message %.80s is neither a command, a reply nor an event",
			       json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
		return -1;
	}
	return 0;
}

int kw_ctl_parse_msg(const char *line, size_t len, struct kw_ctl_msg *m,
		 const char **eclass, char *err, size_t errlen)
{
	struct schema_err e;
	enum schema_kind kind;
	json_object *o, *id;
	int rc = 0;

	memset(m, 0, sizeof(*m));
	m->deadline_ms = m->link_timeout_ms = m->version = -1;
	m->wait = -1;
	/* Set on success too: callers may format them whatever the outcome. */
	*eclass = "InvalidParameter";
	if (errlen)
		err[0] = '\0';
	o = schema_parse_line(line, len, &e);
	if (!o)
		return fail(&e, eclass, err, errlen);
	if (!has(o, "execute")) {
		rc = read_other(o, m, &e);
	} else {
		rc = schema_check_envelope(o, &kind, &id, &e);
		m->id = json_object_get(id);
		if (!rc)
			rc = read_command(o, m, &e);
	}
	json_object_put(o);
	return rc ? fail(&e, eclass, err, errlen) : 0;
}

void kw_ctl_parse_clear(struct kw_ctl_msg *m)
{
	json_object_put(m->id);
	m->id = NULL;
	free(m->peers);
	m->peers = NULL;
	m->npeers = 0;
}

int kw_ctl_parse_addrs_hex(const struct kw_addrs *a, char *out, size_t len)
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
