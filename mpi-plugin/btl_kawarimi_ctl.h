/*
 * kawarimi BTL: messages of the agent <-> rank leg of the symvirt protocol
 * (docs/symvirt-protocol.md, "Agent <-> ranks"). The protocol's table
 * (symvirt/schema.h) frames and validates them; this turns a valid one
 * into what the rank acts on. No Open MPI dependency, so the fuzz harness
 * links it alone.
 */
#ifndef BTL_KAWARIMI_CTL_H
#define BTL_KAWARIMI_CTL_H

#include <stddef.h>
#include <stdint.h>

#include <json-c/json.h>

#include "btl_kawarimi_proc.h"
#include "symvirt/schema.h"

/* An address list as hex: twice the bytes of its encoding, and a NUL. */
#define KW_ADDRS_HEX_MAX (2 * (12 + KW_MAX_ADDRS * 24) + 1)
_Static_assert(KW_ADDRS_HEX_MAX == SYMVIRT_ADDRS_MAX + 1,
	       "the protocol's ADDRS bound is this encoding's length");

enum kw_ctl_kind {
	KW_CTL_QUIESCE = 1,
	KW_CTL_RESUME,
	KW_CTL_STATUS,
	KW_CTL_PEERS,
	KW_CTL_REPLY,		/* return/error for one of our commands */
	KW_CTL_EVENT,		/* ignored */
};

struct kw_fabric_hint {
	char name[16];		/* "verbs" or "tcp" */
	char ifname[32];
	char addr[64];
};

/* One peer's current address list, from the coordinator (`peers`). */
struct kw_peer_addrs {
	uint32_t rank;
	struct kw_addrs addrs;
};

struct kw_ctl_msg {
	enum kw_ctl_kind kind;
	json_object *id;		/* reference held; NULL if absent */
	int64_t deadline_ms;		/* quiesce; -1 when absent */
	int64_t link_timeout_ms;	/* resume; -1 when absent */
	int wait;			/* resume, peers: -1 when absent, else 0/1 */
	int npeers;			/* peers */
	struct kw_peer_addrs *peers;	/* malloc'd; kw_ctl_parse_clear frees */
	int nfabrics;
	struct kw_fabric_hint fabrics[SCHEMA_FABRICS_MAX];
	int is_error;			/* reply */
	char desc[256];			/* reply error text */
	int64_t version;		/* reply to register; -1 when absent */
};

/*
 * Parses one line. Returns 0, or -1 with eclass set to the error class to
 * answer with (one of schema_classes[]: "InvalidParameter",
 * "CommandNotFound", ...) and err naming the bad member and value. m->id
 * is set whenever the line had a usable id, so the error can be answered.
 * Call kw_ctl_parse_clear() in both cases.
 */
int kw_ctl_parse_msg(const char *line, size_t len, struct kw_ctl_msg *m,
		 const char **eclass, char *err, size_t errlen);
void kw_ctl_parse_clear(struct kw_ctl_msg *m);

/* An address list as the hex string of its wire encoding (the modex blob),
 * as `resume` and `status` replies carry it: out has KW_ADDRS_HEX_MAX
 * bytes. Returns 0 or -1. */
int kw_ctl_parse_addrs_hex(const struct kw_addrs *a, char *out, size_t len);

#endif
