/*
 * kawarimi BTL: per-process addressing.
 *
 * A rank advertises a list of addresses, one per usable interface, each
 * with a preference (0 = best fabric, e.g. the HCA's IPoIB or the lab's
 * RDMA NIC; 1 = the Ethernet fallback; ...), taken from the position of the
 * matching entry in btl_kawarimi_if_include. The list goes through the
 * modex at init and through HELLO frames on every (re)connect, because
 * interfaces come and go with the hardware while the IPs stay.
 *
 * This file has no Open MPI dependency so unit tests and the fuzz replay
 * can link it alone.
 */
#ifndef BTL_KAWARIMI_PROC_H
#define BTL_KAWARIMI_PROC_H

#include <stddef.h>
#include <stdint.h>

#define KW_MAX_ADDRS 16
#define KW_IFNAME_LEN 16
#define KW_ADDRS_MAGIC 0x4b574231u	/* "KWB1" */
#define KW_ADDRS_VERSION 1

struct kw_addr {
	uint8_t pref;		/* 0 = most preferred */
	uint8_t prefixlen;
	uint8_t fabric;		/* enum kw_fabric */
	uint8_t pad;
	uint32_t ip;		/* IPv4, network byte order */
	char ifname[KW_IFNAME_LEN];
};

enum kw_fabric {
	KW_FABRIC_TCP = 0,
	KW_FABRIC_VERBS = 1,	/* RC QP through librdmacm to this IP (btl_kawarimi_verbs.c) */
};

struct kw_addrs {
	uint16_t port;		/* TCP listener (bootstrap and data) */
	uint16_t n;
	struct kw_addr a[KW_MAX_ADDRS];
};

/* One connection candidate: our source address and the peer's target. */
struct kw_cand {
	struct kw_addr local;	/* local.ip == 0: let routing choose */
	struct kw_addr remote;
	uint16_t port;
};

#define KW_MAX_CAND (KW_MAX_ADDRS * 2)

/*
 * Reads the local IPv4 interfaces that are up and match spec (ordered
 * comma list of interface names, "name*" prefixes or a.b.c.d/n subnets;
 * empty: every non-loopback interface, loopback only if nothing else).
 * Returns 0, or -1 with err filled (a bad spec entry is quoted).
 */
int kw_addrs_local(const char *spec, struct kw_addrs *out, char *err, size_t errlen);

/* Validates a spec without reading interfaces. */
int kw_addrs_spec_check(const char *spec, char *err, size_t errlen);

/* Wire encoding (also the modex blob). Returns bytes written or -1. */
int kw_addrs_encode(const struct kw_addrs *in, void *buf, size_t len);
/* Returns 0, or -1 with err saying what is wrong with the blob. */
int kw_addrs_decode(const void *buf, size_t len, struct kw_addrs *out,
		    char *err, size_t errlen);

/*
 * Candidate pairs in order of preference: for each local address (best
 * first), every peer address of the same fabric in the same subnet; then,
 * as a last resort, the peer's TCP addresses without a bound source
 * (routed). Returns count.
 */
int kw_addrs_candidates(const struct kw_addrs *local, const struct kw_addrs *peer,
			struct kw_cand *out, int max);

/* "10.1.2.3" */
void kw_ip_str(uint32_t ip, char *buf, size_t len);

#endif
