/* SPDX-License-Identifier: MIT */
/*
 * Cluster file parser.  The whole document is loaded with libyaml's
 * document API and walked with a "path" (vms[1].source.qmp) so that every
 * complaint says where, what was found, and what to write instead.
 *
 * One file of ~1000 lines on purpose: the whole grammar of the cluster
 * file (docs/cluster-file.md) in the order the document gives it, with
 * the helpers every key shares; split, a key's rule and its message would
 * live apart.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "cluster.h"
#include "conn.h"

#define KWM_MAX_FILE (4u << 20)

struct walker {
	const char *file;
	yaml_document_t *doc;
	char *err;
	size_t errlen;
	struct kwm_cluster *c;
};

#define KWM_PH_INFO(id, name, key, ms, limited, colour, ...) \
	[KWM_PH_##id] = { name, key, ms, limited, colour },
const struct kwm_phase_info kwm_phase_info[KWM_PH__COUNT] = { KWM_PHASES(KWM_PH_INFO) };
#undef KWM_PH_INFO

const char *kwm_phase_name(enum kwm_phase p)
{
	return p < KWM_PH__COUNT ? kwm_phase_info[p].name : "?";
}

static const char *const storage_names[] = { "incremental", "full", "shared" };

const char *kwm_storage_name(enum kwm_storage s)
{
	return (unsigned)s < 3 ? storage_names[s] : "?";
}

int kwm_storage_parse(const char *name, enum kwm_storage *out)
{
	for (int i = 0; i < 3; i++)
		if (!strcmp(name, storage_names[i])) {
			*out = (enum kwm_storage)i;
			return 0;
		}
	return -1;
}

/* ---- units ------------------------------------------------------------ */

/* Splits "920Mbit/s" into 920.0 and "Mbit/s". */
static int split_number(const char *s, double *num, const char **unit)
{
	char *end;

	if (!isdigit((unsigned char)*s))
		return -1;
	errno = 0;
	*num = strtod(s, &end);
	if (errno || end == s || *num < 0 || *num > 1e15)
		return -1;
	while (*end == ' ')
		end++;
	*unit = end;
	return 0;
}

int kwm_parse_duration_ms(const char *s, int64_t *out)
{
	static const struct { const char *u; double ms; } units[] = {
		{ "ms", 1 }, { "s", 1000 }, { "m", 60000 }, { "h", 3600000 },
	};
	const char *unit;
	double n;

	if (split_number(s, &n, &unit))
		return -1;
	for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++)
		if (!strcmp(unit, units[i].u)) {
			*out = (int64_t)(n * units[i].ms);
			return 0;
		}
	return -1;
}

int kwm_parse_rate(const char *s, uint64_t *out)
{
	static const struct { const char *u; double bytes; } units[] = {
		{ "bit", 1.0 / 8 }, { "kbit", 1e3 / 8 }, { "Mbit", 1e6 / 8 },
		{ "Gbit", 1e9 / 8 }, { "B", 1 }, { "kB", 1e3 }, { "MB", 1e6 },
		{ "GB", 1e9 }, { "KiB", 1024.0 }, { "MiB", 1048576.0 },
		{ "GiB", 1073741824.0 },
	};
	char unit[16];
	const char *u;
	size_t ul;
	double n;

	if (!strcmp(s, "unlimited") || !strcmp(s, "0")) {
		*out = 0;
		return 0;
	}
	if (split_number(s, &n, &u))
		return -1;
	ul = strlen(u);
	if (ul >= 2 && !strcmp(u + ul - 2, "/s"))
		ul -= 2;
	if (ul == 0 || ul >= sizeof(unit))
		return -1;
	memcpy(unit, u, ul);
	unit[ul] = 0;
	for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++)
		if (!strcmp(unit, units[i].u)) {
			double v = n * units[i].bytes;

			if (v < 1 || v > 1e15)
				return -1;
			*out = (uint64_t)v;
			return 0;
		}
	return -1;
}

/* ---- endpoints -------------------------------------------------------- */

/* "tcp:HOST:PORT" (HOST may be [v6]) -> host, port; 0 or -1. */
static int split_tcp(const char *rest, char *host, size_t hl, char *port, size_t pl)
{
	const char *colon = strrchr(rest, ':');
	size_t n;
	char *end;
	long p;

	if (!colon || colon == rest)
		return -1;
	n = (size_t)(colon - rest);
	if (rest[0] == '[' && n >= 2 && rest[n - 1] == ']') {
		rest++;
		n -= 2;
	}
	if (n == 0 || n >= hl || strlen(colon + 1) >= pl)
		return -1;
	p = strtol(colon + 1, &end, 10);
	if (*end || p <= 0 || p > 65535)
		return -1;
	memcpy(host, rest, n);
	host[n] = 0;
	snprintf(port, pl, "%ld", p);
	return 0;
}

json_object *kwm_socket_address(const char *uri, int flat)
{
	json_object *a = json_object_new_object(), *data = a;
	char host[256], port[16];

	if (!strncmp(uri, "unix:", 5) && uri[5]) {
		if (!flat) {
			json_object_object_add(a, "type", json_object_new_string("unix"));
			data = json_object_new_object();
			json_object_object_add(a, "data", data);
		} else {
			json_object_object_add(a, "type", json_object_new_string("unix"));
		}
		json_object_object_add(data, "path", json_object_new_string(uri + 5));
		return a;
	}
	if (!strncmp(uri, "tcp:", 4) &&
	    !split_tcp(uri + 4, host, sizeof(host), port, sizeof(port))) {
		json_object_object_add(a, "type", json_object_new_string("inet"));
		if (!flat) {
			data = json_object_new_object();
			json_object_object_add(a, "data", data);
		}
		json_object_object_add(data, "host", json_object_new_string(host));
		json_object_object_add(data, "port", json_object_new_string(port));
		return a;
	}
	json_object_put(a);
	return NULL;
}

/* The host of a "tcp:HOST:PORT" URI; -1 for anything else. */
static int uri_host(const char *uri, char *host, size_t len)
{
	char port[16];

	if (!uri || strncmp(uri, "tcp:", 4))
		return -1;
	return split_tcp(uri + 4, host, len, port, sizeof(port));
}

static bool is_loopback(const char *host)
{
	struct in6_addr a6;
	struct in_addr a4;

	if (!strcmp(host, "localhost"))
		return true;
	if (inet_pton(AF_INET, host, &a4) == 1)
		return (ntohl(a4.s_addr) >> 24) == 127;
	return inet_pton(AF_INET6, host, &a6) == 1 && IN6_IS_ADDR_LOOPBACK(&a6);
}

/* 0.0.0.0, ::, and what getaddrinfo() also reads as them ("0", "::0"). */
static bool is_wildcard(const char *host)
{
	struct in6_addr a6;
	struct in_addr a4;

	if (inet_aton(host, &a4) == 1)
		return a4.s_addr == 0;
	return inet_pton(AF_INET6, host, &a6) == 1 && IN6_IS_ADDR_UNSPECIFIED(&a6);
}

/* vm's streams, with the keys that name them in messages. */
static const char *stream_uri(const struct kwm_vm_conf *vm, int i, const char **key)
{
	static const char *const keys[] = {
		"destination.migration.listen", "destination.migration.connect",
		"destination.nbd.listen", "destination.nbd.connect",
	};
	const char *uris[] = { vm->mig_listen, vm->mig_connect, vm->nbd_listen,
			       vm->nbd_connect };

	*key = keys[i];
	return uris[i];
}

static const char *remote_stream(const struct kwm_vm_conf *vm, const char **key)
{
	char host[256];

	for (int i = 0; i < 4; i++) {
		const char *uri = stream_uri(vm, i, key);

		if (!uri_host(uri, host, sizeof(host)) && !is_loopback(host))
			return uri;
	}
	return NULL;
}

const char *kwm_vm_remote_uri(const struct kwm_vm_conf *vm)
{
	const char *key;

	return remote_stream(vm, &key);
}

const char *kwm_tls_hostname(const struct kwm_vm_conf *vm, const char *uri,
			     char *buf, size_t len)
{
	if (vm->tls.hostname)
		return vm->tls.hostname;
	return uri_host(uri, buf, len) ? NULL : buf;
}

/* ---- walking ---------------------------------------------------------- */

/* Paths in messages ("vms[1].source.qmp"); a long one is cut, never wrong. */
__attribute__((format(printf, 3, 4)))
static void mkpath(char *dst, size_t size, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(dst, size, fmt, ap);
	va_end(ap);
}

static int fail(struct walker *w, yaml_node_t *n, const char *path,
		const char *fmt, ...)
{
	size_t off;
	va_list ap;

	off = (size_t)snprintf(w->err, w->errlen, "%s:%zu:%zu: %s: ", w->file,
			       n ? n->start_mark.line + 1 : 1,
			       n ? n->start_mark.column + 1 : 1, path);
	if (off < w->errlen) {
		va_start(ap, fmt);
		vsnprintf(w->err + off, w->errlen - off, fmt, ap);
		va_end(ap);
	}
	return -1;
}

static const char *node_kind(yaml_node_t *n)
{
	switch (n->type) {
	case YAML_SCALAR_NODE: return "a scalar";
	case YAML_SEQUENCE_NODE: return "a list";
	case YAML_MAPPING_NODE: return "a map";
	default: return "nothing";
	}
}

static yaml_node_t *node(struct walker *w, int idx)
{
	return yaml_document_get_node(w->doc, idx);
}

static const char *scalar(yaml_node_t *n)
{
	return (const char *)n->data.scalar.value;
}

static bool is_plain(yaml_node_t *n)
{
	return n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
}

static int want_type(struct walker *w, yaml_node_t *n, const char *path,
		     yaml_node_type_t t, const char *what)
{
	if (n->type == t)
		return 0;
	return fail(w, n, path, "found %s; write %s here", node_kind(n), what);
}

/*
 * Checks a mapping's keys against `allowed` (NULL-terminated) and for
 * duplicates; fills vals[i] with the value node of allowed[i] or NULL.
 */
static int map_keys(struct walker *w, yaml_node_t *m, const char *path,
		    const char *const *allowed, yaml_node_t **vals)
{
	char list[256] = "";
	size_t na = 0;

	if (want_type(w, m, path, YAML_MAPPING_NODE, "a map"))
		return -1;
	while (allowed[na]) {
		vals[na] = NULL;
		if (strlen(list) + strlen(allowed[na]) + 3 < sizeof(list)) {
			if (na)
				strcat(list, ", ");
			strcat(list, allowed[na]);
		}
		na++;
	}
	for (yaml_node_pair_t *p = m->data.mapping.pairs.start;
	     p < m->data.mapping.pairs.top; p++) {
		yaml_node_t *k = node(w, p->key), *v = node(w, p->value);
		size_t i;

		if (!k || !v)
			return fail(w, m, path, "damaged map");
		if (k->type != YAML_SCALAR_NODE)
			return fail(w, k, path, "a key must be a plain word; expected one of %s", list);
		for (i = 0; i < na; i++)
			if (!strcmp(scalar(k), allowed[i]))
				break;
		if (i == na)
			return fail(w, k, path, "unknown key '%s'; expected one of %s",
				    scalar(k), list);
		if (vals[i])
			return fail(w, k, path, "key '%s' given twice; keep one", scalar(k));
		vals[i] = v;
	}
	return 0;
}

static int need(struct walker *w, yaml_node_t *parent, const char *path,
		yaml_node_t *v, const char *key)
{
	if (v)
		return 0;
	return fail(w, parent, path, "missing key '%s'; see docs/cluster-file.md", key);
}

/* A non-empty string scalar, copied. */
static int get_str(struct walker *w, yaml_node_t *n, const char *path, char **out)
{
	if (want_type(w, n, path, YAML_SCALAR_NODE, "a string"))
		return -1;
	if (!*scalar(n))
		return fail(w, n, path, "empty value; write a value or leave the key out");
	*out = strdup(scalar(n));
	return *out ? 0 : fail(w, n, path, "out of memory");
}

static bool is_none(yaml_node_t *n)
{
	return n->type == YAML_SCALAR_NODE && is_plain(n) &&
	       (!strcmp(scalar(n), "none") || !strcmp(scalar(n), "null") ||
		!strcmp(scalar(n), "~") || !*scalar(n));
}

/* A unix socket here ("PATH", "unix:PATH") or on another host
 * ("ssh://[USER@]HOST[:PORT]/PATH"), checked as the connection will read it. */
static int get_endpoint(struct walker *w, yaml_node_t *n, const char *path,
			bool allow_none, char **out)
{
	struct kqmp_conn_endpoint ep;
	char msg[400];

	*out = NULL;
	if (allow_none && is_none(n))
		return 0;
	if (get_str(w, n, path, out))
		return -1;
	if (kqmp_conn_parse_endpoint(*out, &ep, msg, sizeof(msg)) < 0)
		return fail(w, n, path, "%s%s", msg, allow_none ? " (or none)" : "");
	return 0;
}

static int get_uri(struct walker *w, yaml_node_t *n, const char *path, char **out)
{
	json_object *a;

	if (get_str(w, n, path, out))
		return -1;
	a = kwm_socket_address(*out, 0);
	if (!a)
		return fail(w, n, path, "'%s' is not an address; write tcp:HOST:PORT or unix:PATH", *out);
	json_object_put(a);
	return 0;
}

/* {listen: URI, connect: URI} */
static int get_listen_connect(struct walker *w, yaml_node_t *n, const char *path,
			      char **listen, char **connect)
{
	static const char *const keys[] = { "listen", "connect", NULL };
	yaml_node_t *v[2];
	char p[160];

	char host[256];

	if (map_keys(w, n, path, keys, v) || need(w, n, path, v[0], "listen"))
		return -1;
	mkpath(p, sizeof(p), "%s.listen", path);
	if (get_uri(w, v[0], p, listen))
		return -1;
	if (!uri_host(*listen, host, sizeof(host)) && is_wildcard(host))
		return fail(w, v[0], p, "'%s' listens on every address of the host; write "
			    "the destination's own address on the WAN (e.g. tcp:10.77.0.2:4444), "
			    "so that the stream is taken from there only", *listen);
	mkpath(p, sizeof(p), "%s.connect", path);
	if (v[1] && get_uri(w, v[1], p, connect))
		return -1;
	return 0;
}

/* A scalar for device_add: plain numbers and booleans keep their type. */
static json_object *typed_scalar(yaml_node_t *n)
{
	const char *s = scalar(n);
	char *end;
	long long v;

	if (is_plain(n)) {
		if (!strcmp(s, "true"))
			return json_object_new_boolean(1);
		if (!strcmp(s, "false"))
			return json_object_new_boolean(0);
		if (*s && (isdigit((unsigned char)*s) || *s == '-')) {
			errno = 0;
			v = strtoll(s, &end, 0);
			if (!*end && !errno)
				return json_object_new_int64(v);
		}
	}
	return json_object_new_string(s);
}

static int get_device(struct walker *w, yaml_node_t *n, const char *path,
		      struct kwm_side *side)
{
	json_object *o, *id, *drv;

	if (is_none(n))
		return 0;
	if (want_type(w, n, path, YAML_MAPPING_NODE,
		      "a device_add argument map ({driver: e1000e, id: hca0, ...}) or none"))
		return -1;
	o = json_object_new_object();
	side->hca = o;
	for (yaml_node_pair_t *p = n->data.mapping.pairs.start;
	     p < n->data.mapping.pairs.top; p++) {
		yaml_node_t *k = node(w, p->key), *v = node(w, p->value);

		if (!k || !v || k->type != YAML_SCALAR_NODE)
			return fail(w, n, path, "keys must be device property names");
		if (v->type != YAML_SCALAR_NODE)
			return fail(w, v, path, "property '%s' is %s; device_add takes "
				    "only numbers, booleans and strings", scalar(k), node_kind(v));
		if (json_object_object_get_ex(o, scalar(k), NULL))
			return fail(w, k, path, "key '%s' given twice; keep one", scalar(k));
		json_object_object_add(o, scalar(k), typed_scalar(v));
	}
	if (!json_object_object_get_ex(o, "driver", &drv) ||
	    !json_object_is_type(drv, json_type_string))
		return fail(w, n, path, "missing 'driver' (e.g. driver: vfio-pci)");
	if (!json_object_object_get_ex(o, "id", &id) ||
	    !json_object_is_type(id, json_type_string) || !*json_object_get_string(id))
		return fail(w, n, path, "missing 'id' (the qdev id device_del uses, e.g. id: hca0)");
	side->hca_id = json_object_get_string(id);
	return 0;
}

static int get_side(struct walker *w, yaml_node_t *n, const char *path,
		    struct kwm_side *side, bool dst, struct kwm_vm_conf *vm)
{
	static const char *const src_keys[] = { "qmp", "symvirt", "hca", NULL };
	static const char *const dst_keys[] = { "qmp", "symvirt", "hca", "migration",
						"nbd", NULL };
	yaml_node_t *v[5];
	char p[160];

	if (map_keys(w, n, path, dst ? dst_keys : src_keys, v) ||
	    need(w, n, path, v[0], "qmp") || need(w, n, path, v[1], "symvirt"))
		return -1;
	mkpath(p, sizeof(p), "%s.qmp", path);
	if (get_endpoint(w, v[0], p, false, &side->qmp))
		return -1;
	mkpath(p, sizeof(p), "%s.symvirt", path);
	if (get_endpoint(w, v[1], p, true, &side->symvirt))
		return -1;
	mkpath(p, sizeof(p), "%s.hca", path);
	if (v[2] && get_device(w, v[2], p, side))
		return -1;
	if (!dst)
		return 0;
	if (need(w, n, path, v[3], "migration"))
		return -1;
	mkpath(p, sizeof(p), "%s.migration", path);
	if (get_listen_connect(w, v[3], p, &vm->mig_listen, &vm->mig_connect))
		return -1;
	mkpath(p, sizeof(p), "%s.nbd", path);
	if (v[4] && get_listen_connect(w, v[4], p, &vm->nbd_listen, &vm->nbd_connect))
		return -1;
	return 0;
}

static int get_disks(struct walker *w, yaml_node_t *n, const char *path,
		     struct kwm_vm_conf *vm)
{
	static const char *const keys[] = { "source", "destination", NULL };
	size_t count;

	if (want_type(w, n, path, YAML_SEQUENCE_NODE, "a list of {source: NODE}"))
		return -1;
	count = (size_t)(n->data.sequence.items.top - n->data.sequence.items.start);
	vm->disks = calloc(count ? count : 1, sizeof(*vm->disks));
	if (!vm->disks)
		return fail(w, n, path, "out of memory");
	for (size_t i = 0; i < count; i++) {
		yaml_node_t *d = node(w, n->data.sequence.items.start[i]), *v[2];
		struct kwm_disk *disk = &vm->disks[i];
		char p[160];

		mkpath(p, sizeof(p), "%s[%zu]", path, i);
		if (!d || map_keys(w, d, p, keys, v) || need(w, d, p, v[0], "source"))
			return -1;
		vm->ndisks = i + 1;
		mkpath(p, sizeof(p), "%s[%zu].source", path, i);
		if (get_str(w, v[0], p, &disk->src_node))
			return -1;
		mkpath(p, sizeof(p), "%s[%zu].destination", path, i);
		if (v[1] ? get_str(w, v[1], p, &disk->dst_node) :
		    !(disk->dst_node = strdup(disk->src_node)))
			return -1;
		mkpath(p, sizeof(p), "%s[%zu].source", path, i);
		for (size_t j = 0; j < i; j++)
			if (!strcmp(vm->disks[j].src_node, disk->src_node))
				return fail(w, v[0], p, "disk '%s' listed twice", disk->src_node);
	}
	return 0;
}

#define DN_HINT "take it from `openssl x509 -noout -subject -nameopt " \
	"esc_2253,sep_comma_plus -in client-cert.pem` (e.g. \"O=site-a,CN=node1\")"

/* tls: none | {dir: PATH, source-dn: DN, hostname: NAME} */
static int get_tls(struct walker *w, yaml_node_t *n, const char *path, struct kwm_tls *t)
{
	static const char *const keys[] = { "dir", "source-dn", "hostname", NULL };
	yaml_node_t *v[3];
	char p[160];

	if (n->type == YAML_SCALAR_NODE && is_plain(n) && !strcmp(scalar(n), "none")) {
		t->mode = KWM_TLS_NONE;
		return 0;
	}
	if (n->type != YAML_MAPPING_NODE)
		return fail(w, n, path, "'%s' is not a TLS setting; write {dir: /etc/pki/qemu, "
			    "source-dn: \"O=...,CN=...\"} or none",
			    n->type == YAML_SCALAR_NODE ? scalar(n) : node_kind(n));
	if (map_keys(w, n, path, keys, v) || need(w, n, path, v[0], "dir"))
		return -1;
	t->mode = KWM_TLS_X509;
	mkpath(p, sizeof(p), "%s.dir", path);
	if (get_str(w, v[0], p, &t->dir))
		return -1;
	if (t->dir[0] != '/')
		return fail(w, v[0], p, "'%s' is not an absolute path; write the directory "
			    "holding ca-cert.pem, server-cert.pem, ... on every QEMU host, e.g. "
			    "/etc/pki/qemu", t->dir);
	if (!v[1])
		return fail(w, n, path, "missing key 'source-dn': the destination accepts only "
			    "the source's client certificate; " DN_HINT);
	mkpath(p, sizeof(p), "%s.source-dn", path);
	if (get_str(w, v[1], p, &t->source_dn))
		return -1;
	if (!strchr(t->source_dn, '='))
		return fail(w, v[1], p, "'%s' is not a distinguished name; %s", t->source_dn,
			    DN_HINT);
	mkpath(p, sizeof(p), "%s.hostname", path);
	return v[2] ? get_str(w, v[2], p, &t->hostname) : 0;
}

static int copy_tls(struct kwm_tls *dst, const struct kwm_tls *src)
{
	dst->mode = src->mode;
	dst->dir = src->dir ? strdup(src->dir) : NULL;
	dst->source_dn = src->source_dn ? strdup(src->source_dn) : NULL;
	dst->hostname = src->hostname ? strdup(src->hostname) : NULL;
	return (src->dir && !dst->dir) || (src->source_dn && !dst->source_dn) ||
	       (src->hostname && !dst->hostname) ? -1 : 0;
}

/* Clear text over the network only when asked for; a TLS stream over a
 * unix socket needs a name to check the destination's certificate. */
static int check_tls(struct walker *w, yaml_node_t *n, const char *path,
		     const struct kwm_vm_conf *vm)
{
	const char *key, *uri = remote_stream(vm, &key);
	char host[256];

	if (vm->tls.mode == KWM_TLS_UNSET && uri)
		return fail(w, n, path, "%s '%s' crosses the network in clear text; add "
			    "tls: {dir: /etc/pki/qemu, source-dn: \"O=...,CN=...\"} (top level "
			    "or this VM) to encrypt the migration and NBD streams, or write "
			    "tls: none to send them in clear", key, uri);
	if (vm->tls.mode != KWM_TLS_X509 || vm->tls.hostname)
		return 0;
	for (int i = 1; i < 4; i += 2) {
		const char *dial = stream_uri(vm, i, &key);

		dial = dial ? dial : stream_uri(vm, i - 1, &key);
		if (dial && uri_host(dial, host, sizeof(host)))
			return fail(w, n, path, "tls: %s '%s' names no host to check the "
				    "destination's certificate against; add hostname: NAME "
				    "(a name in server-cert.pem) under tls", key, dial);
	}
	return 0;
}

static int get_vm(struct walker *w, yaml_node_t *n, size_t idx)
{
	static const char *const keys[] = { "name", "source", "destination", "disks", "tls",
					    NULL };
	struct kwm_vm_conf *vm = &w->c->vms[idx];
	yaml_node_t *v[5];
	char path[64], p[160];

	mkpath(path, sizeof(path), "vms[%zu]", idx);
	if (map_keys(w, n, path, keys, v) || need(w, n, path, v[0], "name") ||
	    need(w, n, path, v[1], "source") || need(w, n, path, v[2], "destination"))
		return -1;
	mkpath(p, sizeof(p), "%s.name", path);
	if (get_str(w, v[0], p, &vm->name))
		return -1;
	for (size_t j = 0; j < idx; j++)
		if (!strcmp(w->c->vms[j].name, vm->name))
			return fail(w, v[0], p, "name '%s' used twice; VM names must be unique",
				    vm->name);
	mkpath(p, sizeof(p), "%s.source", path);
	if (get_side(w, v[1], p, &vm->src, false, vm))
		return -1;
	mkpath(p, sizeof(p), "%s.destination", path);
	if (get_side(w, v[2], p, &vm->dst, true, vm))
		return -1;
	if (vm->src.symvirt && !vm->dst.symvirt)
		return fail(w, v[2], p, "the source has a symvirt agent but 'symvirt' is none "
			    "here; give the destination's end of the guest channel");
	if (!strcmp(vm->src.qmp, vm->dst.qmp))
		return fail(w, v[2], p, "source and destination QMP are the same socket '%s'",
			    vm->src.qmp);
	mkpath(p, sizeof(p), "%s.disks", path);
	if (v[3] && get_disks(w, v[3], p, vm))
		return -1;
	mkpath(p, sizeof(p), "%s.tls", path);
	if (v[4] ? get_tls(w, v[4], p, &vm->tls) : copy_tls(&vm->tls, &w->c->tls))
		return v[4] ? -1 : fail(w, n, p, "out of memory");
	return check_tls(w, n, path, vm);
}

/* limits.timeouts' keys: the phases' (phase.h; two phases may share
 * one), then two that are not a phase's. */
#define TKEY_MAX (KWM_PH__COUNT + 3)

static size_t timeout_keys(const char **keys)
{
	size_t n = 0;

	for (int p = 0; p < KWM_PH__COUNT; p++) {
		size_t k;

		for (k = 0; k < n && strcmp(keys[k], kwm_phase_info[p].timeout_key); k++)
			;
		if (k == n)
			keys[n++] = kwm_phase_info[p].timeout_key;
	}
	keys[n++] = "stall";
	keys[n++] = "lease";
	keys[n] = NULL;
	return n;
}

static int set_timeout(struct walker *w, yaml_node_t *t, const char *key)
{
	struct kwm_cluster *c = w->c;
	char p[64];
	int64_t ms;

	mkpath(p, sizeof(p), "limits.timeouts.%s", key);
	if (t->type != YAML_SCALAR_NODE || kwm_parse_duration_ms(scalar(t), &ms) || ms < 1)
		return fail(w, t, p, "'%s' is not a duration; write e.g. 30s, 500ms or 1h",
			    t->type == YAML_SCALAR_NODE ? scalar(t) : "");
	if (!strcmp(key, "stall")) {
		c->stall_ms = ms;
	} else if (!strcmp(key, "lease")) {
		if (ms < 1000 || ms > 3600000)
			return fail(w, t, p, "'%s' is out of range; a lease lasts from 1s to 1h",
				    scalar(t));
		c->lease_ms = ms;
	} else {
		for (int ph = 0; ph < KWM_PH__COUNT; ph++)
			if (!strcmp(kwm_phase_info[ph].timeout_key, key))
				c->timeout_ms[ph] = ms;
	}
	return 0;
}

static int get_timeouts(struct walker *w, yaml_node_t *n)
{
	const char *keys[TKEY_MAX + 1];
	yaml_node_t *t[TKEY_MAX + 1];
	size_t nk = timeout_keys(keys);

	if (map_keys(w, n, "limits.timeouts", keys, t))
		return -1;
	for (size_t i = 0; i < nk; i++)
		if (t[i] && set_timeout(w, t[i], keys[i]))
			return -1;
	return 0;
}

static int get_limits(struct walker *w, yaml_node_t *n)
{
	static const char *const keys[] = { "bandwidth", "parallel", "downtime",
					    "timeouts", "allow-partial", NULL };
	struct kwm_cluster *c = w->c;
	yaml_node_t *v[5];

	if (map_keys(w, n, "limits", keys, v))
		return -1;
	if (v[0] && (want_type(w, v[0], "limits.bandwidth", YAML_SCALAR_NODE, "a rate") ||
		     kwm_parse_rate(scalar(v[0]), &c->bandwidth)))
		return fail(w, v[0], "limits.bandwidth", "'%s' is not a rate; write e.g. "
			    "920Mbit/s, 100MB/s or unlimited",
			    v[0]->type == YAML_SCALAR_NODE ? scalar(v[0]) : "");
	if (v[1]) {
		char *end = NULL;
		long par = 0;

		if (v[1]->type == YAML_SCALAR_NODE)
			par = strtol(scalar(v[1]), &end, 10);
		if (!end || *end || par < 1 || par > 1024)
			return fail(w, v[1], "limits.parallel", "'%s' is not a count of VMs; "
				    "write a whole number from 1 to 1024",
				    v[1]->type == YAML_SCALAR_NODE ? scalar(v[1]) : "");
		c->parallel = (int)par;
	}
	if (v[2] && (v[2]->type != YAML_SCALAR_NODE ||
		     kwm_parse_duration_ms(scalar(v[2]), &c->downtime_ms) || c->downtime_ms < 1))
		return fail(w, v[2], "limits.downtime", "'%s' is not a duration; write e.g. 300ms",
			    v[2]->type == YAML_SCALAR_NODE ? scalar(v[2]) : "");
	if (v[4]) {
		const char *b = v[4]->type == YAML_SCALAR_NODE ? scalar(v[4]) : "";

		if (strcmp(b, "true") && strcmp(b, "false"))
			return fail(w, v[4], "limits.allow-partial", "'%s' is not a boolean; write "
				    "true (VMs that fail go back, the others go) or false", b);
		c->allow_partial = !strcmp(b, "true");
	}
	return v[3] ? get_timeouts(w, v[3]) : 0;
}

static void set_defaults(struct kwm_cluster *c)
{
	for (int p = 0; p < KWM_PH__COUNT; p++)
		c->timeout_ms[p] = kwm_phase_info[p].default_ms;
	c->storage = KWM_STORAGE_INCREMENTAL;
	/* 4: with 8 bare VMs under one cap, 8 at once was no better than 4
	 * within the noise, overshot the cap in storage, and leaves a busy
	 * guest a smaller share than its dirty rate sooner
	 * (docs/performance.md, "Scale, real VMs"). */
	c->parallel = 4;
	c->downtime_ms = 300;
	c->stall_ms = 60000;
	c->lease_ms = 30000;
}

/* Checks that need the whole file: storage mode vs. per-VM disks. */
static int check_storage(struct walker *w, yaml_node_t *vms)
{
	struct kwm_cluster *c = w->c;

	if (c->storage == KWM_STORAGE_SHARED)
		return 0;
	for (size_t i = 0; i < c->nvms; i++) {
		yaml_node_t *n = node(w, vms->data.sequence.items.start[i]);
		char p[64];

		mkpath(p, sizeof(p), "vms[%zu]", i);
		if (!c->vms[i].ndisks)
			return fail(w, n, p, "storage is %s but VM '%s' lists no disks; add "
				    "disks: [{source: NODE}] or set storage: shared",
				    kwm_storage_name(c->storage), c->vms[i].name);
		if (!c->vms[i].nbd_listen)
			return fail(w, n, p, "storage is %s but VM '%s' has no destination.nbd; "
				    "add nbd: {listen: tcp:HOST:PORT}",
				    kwm_storage_name(c->storage), c->vms[i].name);
	}
	return 0;
}

static int walk(struct walker *w)
{
	static const char *const keys[] = { "format", "cluster", "storage", "limits",
					    "vms", "tls", NULL };
	yaml_node_t *root = yaml_document_get_root_node(w->doc), *v[6];
	struct kwm_cluster *c = w->c;
	size_t count;

	if (!root)
		return fail(w, NULL, "file", "empty; see docs/cluster-file.md for an example");
	if (map_keys(w, root, "top level", keys, v) ||
	    need(w, root, "top level", v[0], "format") ||
	    need(w, root, "top level", v[1], "cluster") ||
	    need(w, root, "top level", v[4], "vms"))
		return -1;
	if (v[0]->type != YAML_SCALAR_NODE || strcmp(scalar(v[0]), "1"))
		return fail(w, v[0], "format", "'%s' is not a format this kawarimi reads; write 1",
			    v[0]->type == YAML_SCALAR_NODE ? scalar(v[0]) : "");
	if (get_str(w, v[1], "cluster", &c->name))
		return -1;
	if (v[2] && (want_type(w, v[2], "storage", YAML_SCALAR_NODE, "a mode") ||
		     kwm_storage_parse(scalar(v[2]), &c->storage)))
		return fail(w, v[2], "storage", "'%s' is not a storage mode; write incremental, "
			    "full or shared", v[2]->type == YAML_SCALAR_NODE ? scalar(v[2]) : "");
	if (v[3] && get_limits(w, v[3]))
		return -1;
	if (v[5] && get_tls(w, v[5], "tls", &c->tls))
		return -1;
	if (want_type(w, v[4], "vms", YAML_SEQUENCE_NODE, "a list of node VMs"))
		return -1;
	count = (size_t)(v[4]->data.sequence.items.top - v[4]->data.sequence.items.start);
	if (!count)
		return fail(w, v[4], "vms", "empty; list at least one node VM");
	c->vms = calloc(count, sizeof(*c->vms));
	if (!c->vms)
		return fail(w, v[4], "vms", "out of memory");
	for (size_t i = 0; i < count; i++) {
		yaml_node_t *n = node(w, v[4]->data.sequence.items.start[i]);

		c->nvms = i + 1;
		if (!n || get_vm(w, n, i))
			return -1;
	}
	return check_storage(w, v[4]);
}

int kwm_cluster_parse(const char *name, const char *buf, size_t len,
		      struct kwm_cluster **out, char *err, size_t errlen)
{
	struct walker w = { .file = name, .err = err, .errlen = errlen };
	yaml_parser_t parser;
	yaml_document_t doc;
	int rc;

	*out = NULL;
	w.c = calloc(1, sizeof(*w.c));
	if (!w.c) {
		snprintf(err, errlen, "%s: out of memory", name);
		return -1;
	}
	set_defaults(w.c);
	w.c->file = strdup(name);
	if (!yaml_parser_initialize(&parser)) {
		kwm_cluster_free(w.c);
		snprintf(err, errlen, "%s: out of memory", name);
		return -1;
	}
	yaml_parser_set_input_string(&parser, (const unsigned char *)buf, len);
	if (!yaml_parser_load(&parser, &doc)) {
		snprintf(err, errlen, "%s:%zu:%zu: not valid YAML: %s%s%s", name,
			 parser.problem_mark.line + 1, parser.problem_mark.column + 1,
			 parser.problem ? parser.problem : "parse error",
			 parser.context ? " " : "", parser.context ? parser.context : "");
		yaml_parser_delete(&parser);
		kwm_cluster_free(w.c);
		return -1;
	}
	w.doc = &doc;
	rc = walk(&w);
	yaml_document_delete(&doc);
	yaml_parser_delete(&parser);
	if (rc) {
		kwm_cluster_free(w.c);
		return -1;
	}
	*out = w.c;
	return 0;
}

int kwm_cluster_load(const char *path, struct kwm_cluster **out, char *err, size_t errlen)
{
	FILE *f = fopen(path, "rb");
	char *buf;
	size_t len;
	int rc;

	*out = NULL;
	if (!f) {
		snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
		return -1;
	}
	buf = malloc(KWM_MAX_FILE + 1);
	if (!buf) {
		fclose(f);
		snprintf(err, errlen, "%s: out of memory", path);
		return -1;
	}
	len = fread(buf, 1, KWM_MAX_FILE + 1, f);
	fclose(f);
	if (len > KWM_MAX_FILE) {
		free(buf);
		snprintf(err, errlen, "%s: larger than %u bytes; is it a cluster file?",
			 path, KWM_MAX_FILE);
		return -1;
	}
	rc = kwm_cluster_parse(path, buf, len, out, err, errlen);
	free(buf);
	return rc;
}

static void free_tls(struct kwm_tls *t)
{
	free(t->dir);
	free(t->source_dn);
	free(t->hostname);
}

static void free_side(struct kwm_side *s)
{
	free(s->qmp);
	free(s->symvirt);
	if (s->hca)
		json_object_put(s->hca);
}

void kwm_cluster_free(struct kwm_cluster *c)
{
	if (!c)
		return;
	for (size_t i = 0; i < c->nvms; i++) {
		struct kwm_vm_conf *vm = &c->vms[i];

		free(vm->name);
		free_side(&vm->src);
		free_side(&vm->dst);
		free(vm->mig_listen);
		free(vm->mig_connect);
		free(vm->nbd_listen);
		free(vm->nbd_connect);
		for (size_t j = 0; j < vm->ndisks; j++) {
			free(vm->disks[j].src_node);
			free(vm->disks[j].dst_node);
		}
		free(vm->disks);
		free_tls(&vm->tls);
	}
	free_tls(&c->tls);
	free(c->vms);
	free(c->name);
	free(c->file);
	free(c);
}
