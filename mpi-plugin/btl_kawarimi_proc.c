/* kawarimi BTL: address discovery, encoding and path candidates. */
#include "btl_kawarimi_proc.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fnmatch.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct spec_entry {
	int is_subnet;
	uint32_t net;		/* host order */
	uint32_t mask;		/* host order */
	char name[KW_IFNAME_LEN + 2];
};

#define MAX_SPEC 16

static int parse_entry(const char *tok, struct spec_entry *e, char *err, size_t errlen)
{
	const char *slash = strchr(tok, '/');

	memset(e, 0, sizeof(*e));
	if (slash) {
		char ip[32];
		char *end;
		long bits;
		struct in_addr a;

		if ((size_t)(slash - tok) >= sizeof(ip))
			goto bad;
		memcpy(ip, tok, slash - tok);
		ip[slash - tok] = '\0';
		bits = strtol(slash + 1, &end, 10);
		if (*end || end == slash + 1 || bits < 0 || bits > 32 ||
		    inet_pton(AF_INET, ip, &a) != 1)
			goto bad;
		e->is_subnet = 1;
		e->mask = bits ? 0xffffffffu << (32 - bits) : 0;
		e->net = ntohl(a.s_addr) & e->mask;
		return 0;
	}
	if (!*tok || strlen(tok) > KW_IFNAME_LEN)
		goto bad;
	strcpy(e->name, tok);
	return 0;
bad:
	snprintf(err, errlen,
		 "btl_kawarimi_if_include entry \"%s\" is neither an interface name "
		 "(optionally ending in *) nor an IPv4 subnet like 10.0.0.0/24", tok);
	return -1;
}

static int parse_spec(const char *spec, struct spec_entry *ents, int *n,
		      char *err, size_t errlen)
{
	char buf[1024];
	char *save = NULL, *tok;

	*n = 0;
	if (!spec || !*spec)
		return 0;
	if (strlen(spec) >= sizeof(buf)) {
		snprintf(err, errlen, "btl_kawarimi_if_include is too long (%zu bytes, at most %zu)",
			 strlen(spec), sizeof(buf) - 1);
		return -1;
	}
	strcpy(buf, spec);
	for (tok = strtok_r(buf, ", ", &save); tok; tok = strtok_r(NULL, ", ", &save)) {
		if (*n == MAX_SPEC) {
			snprintf(err, errlen, "btl_kawarimi_if_include has more than %d entries",
				 MAX_SPEC);
			return -1;
		}
		if (parse_entry(tok, &ents[*n], err, errlen))
			return -1;
		(*n)++;
	}
	return 0;
}

int kw_addrs_spec_check(const char *spec, char *err, size_t errlen)
{
	struct spec_entry ents[MAX_SPEC];
	int n;

	return parse_spec(spec, ents, &n, err, errlen);
}

static int entry_match(const struct spec_entry *e, const char *ifname, uint32_t ip_host)
{
	if (e->is_subnet)
		return (ip_host & e->mask) == e->net;
	return fnmatch(e->name, ifname, 0) == 0;
}

static int mask_bits(uint32_t mask_host)
{
	int bits = 0;

	while (mask_host & 0x80000000u) {
		bits++;
		mask_host <<= 1;
	}
	return bits;
}

static void add_addr(struct kw_addrs *out, const struct ifaddrs *ifa, int pref)
{
	const struct sockaddr_in *sin = (const struct sockaddr_in *)ifa->ifa_addr;
	const struct sockaddr_in *msk = (const struct sockaddr_in *)ifa->ifa_netmask;
	struct kw_addr *a;

	if (out->n == KW_MAX_ADDRS)
		return;
	a = &out->a[out->n++];
	memset(a, 0, sizeof(*a));
	a->pref = (uint8_t)pref;
	a->prefixlen = msk ? (uint8_t)mask_bits(ntohl(msk->sin_addr.s_addr)) : 32;
	a->fabric = KW_FABRIC_TCP;
	a->ip = sin->sin_addr.s_addr;
	snprintf(a->ifname, sizeof(a->ifname), "%s", ifa->ifa_name);
}

static int usable(const struct ifaddrs *ifa)
{
	/* IFF_RUNNING lags behind a fresh link by up to a second (linkwatch);
	 * a link without carrier just fails to connect and the next address
	 * pair is tried. */
	return ifa->ifa_addr && ifa->ifa_addr->sa_family == AF_INET &&
	       (ifa->ifa_flags & IFF_UP);
}

int kw_addrs_local(const char *spec, struct kw_addrs *out, char *err, size_t errlen)
{
	struct spec_entry ents[MAX_SPEC];
	struct ifaddrs *ifs, *ifa;
	int n, i;

	out->n = 0;
	if (parse_spec(spec, ents, &n, err, errlen))
		return -1;
	if (getifaddrs(&ifs)) {
		snprintf(err, errlen, "getifaddrs: %s", strerror(errno));
		return -1;
	}
	if (n) {
		/* Preference follows the order of the spec entries. */
		for (i = 0; i < n; i++)
			for (ifa = ifs; ifa; ifa = ifa->ifa_next) {
				const struct sockaddr_in *sin = (const void *)ifa->ifa_addr;
				int j, dup = 0;

				if (!usable(ifa) || !entry_match(&ents[i], ifa->ifa_name,
								 ntohl(sin->sin_addr.s_addr)))
					continue;
				for (j = 0; j < out->n; j++)
					dup |= out->a[j].ip == sin->sin_addr.s_addr;
				if (!dup)
					add_addr(out, ifa, i);
			}
	} else {
		for (ifa = ifs; ifa; ifa = ifa->ifa_next)
			if (usable(ifa) && !(ifa->ifa_flags & IFF_LOOPBACK))
				add_addr(out, ifa, 0);
		if (!out->n)
			for (ifa = ifs; ifa; ifa = ifa->ifa_next)
				if (usable(ifa))
					add_addr(out, ifa, 0);
	}
	freeifaddrs(ifs);
	return 0;
}

/* Wire layout: u32 magic, u16 version, u16 port, u16 n, u16 pad, n entries
 * of struct kw_addr (24 bytes, ip in network order). */
struct blob_head {
	uint32_t magic;
	uint16_t version;
	uint16_t port;
	uint16_t n;
	uint16_t pad;
};

int kw_addrs_encode(const struct kw_addrs *in, void *buf, size_t len)
{
	struct blob_head h = { KW_ADDRS_MAGIC, KW_ADDRS_VERSION, in->port, in->n, 0 };
	size_t need = sizeof(h) + in->n * sizeof(struct kw_addr);

	if (need > len || in->n > KW_MAX_ADDRS)
		return -1;
	memcpy(buf, &h, sizeof(h));
	memcpy((char *)buf + sizeof(h), in->a, in->n * sizeof(struct kw_addr));
	return (int)need;
}

int kw_addrs_decode(const void *buf, size_t len, struct kw_addrs *out,
		    char *err, size_t errlen)
{
	struct blob_head h;
	int i;

	if (len < sizeof(h)) {
		snprintf(err, errlen, "address list of %zu bytes is shorter than its %zu-byte header",
			 len, sizeof(h));
		return -1;
	}
	memcpy(&h, buf, sizeof(h));
	if (h.magic != KW_ADDRS_MAGIC || h.version != KW_ADDRS_VERSION) {
		snprintf(err, errlen,
			 "address list has magic 0x%08x version %u, expected 0x%08x version %u "
			 "(a rank built from another kawarimi version?)",
			 h.magic, h.version, KW_ADDRS_MAGIC, KW_ADDRS_VERSION);
		return -1;
	}
	if (h.n > KW_MAX_ADDRS || len != sizeof(h) + h.n * sizeof(struct kw_addr)) {
		snprintf(err, errlen, "address list claims %u entries but has %zu bytes",
			 h.n, len);
		return -1;
	}
	out->port = h.port;
	out->n = h.n;
	memcpy(out->a, (const char *)buf + sizeof(h), h.n * sizeof(struct kw_addr));
	for (i = 0; i < out->n; i++) {
		out->a[i].ifname[KW_IFNAME_LEN - 1] = '\0';
		if (out->a[i].prefixlen > 32 || out->a[i].fabric > KW_FABRIC_VERBS) {
			snprintf(err, errlen, "address entry %d has prefix /%u fabric %u "
				 "(expected /0../32 and fabric tcp or verbs)", i,
				 out->a[i].prefixlen, out->a[i].fabric);
			return -1;
		}
	}
	if (!h.port) {
		snprintf(err, errlen, "address list has port 0");
		return -1;
	}
	return 0;
}

static int same_subnet(const struct kw_addr *l, const struct kw_addr *r)
{
	uint32_t mask = l->prefixlen ? 0xffffffffu << (32 - l->prefixlen) : 0;

	return (ntohl(l->ip) & mask) == (ntohl(r->ip) & mask);
}

int kw_addrs_candidates(const struct kw_addrs *local, const struct kw_addrs *peer,
			struct kw_cand *out, int max)
{
	int n = 0, i, j, p;

	/* Local addresses are stored in preference order already; walk the
	 * preference levels so equal-preference entries keep their order. */
	for (p = 0; p < 256 && n < max; p++)
		for (i = 0; i < local->n && n < max; i++) {
			if (local->a[i].pref != p)
				continue;
			for (j = 0; j < peer->n && n < max; j++) {
				if (!same_subnet(&local->a[i], &peer->a[j]) ||
				    local->a[i].fabric != peer->a[j].fabric)
					continue;
				out[n].local = local->a[i];
				out[n].remote = peer->a[j];
				out[n].port = peer->port;
				n++;
			}
		}
	if (n)
		return n;
	for (j = 0; j < peer->n && n < max; j++) {
		if (peer->a[j].fabric != KW_FABRIC_TCP)
			continue;	/* routed: TCP only */
		memset(&out[n].local, 0, sizeof(out[n].local));
		out[n].remote = peer->a[j];
		out[n].port = peer->port;
		n++;
	}
	return n;
}

void kw_ip_str(uint32_t ip, char *buf, size_t len)
{
	struct in_addr a = { ip };

	if (!inet_ntop(AF_INET, &a, buf, (socklen_t)len))
		snprintf(buf, len, "?");
}
