/* SPDX-License-Identifier: MIT */
/*
 * THE table of the symvirt protocol (schema.h); docs/symvirt-protocol.md
 * is its prose, and its bounds tables are checked against this file.
 * Every bound is here once: the agent, the host side and the BTL all
 * validate with these rows, so a bound changed here changes for all.
 */
#include <string.h>

#include "schema.h"

#define MS_DAY 86400000		/* the ranks' bound on any time in ms */
#define MS_HOUR 3600000

static const char *const fabric_names[] = { "verbs", "tcp", NULL };
static const char *const register_states[] = { "running", "quiesced", NULL };
static const char *const state_quiesced[] = { "quiesced", NULL };
static const char *const state_resumed[] = { "resumed", NULL };
static const char *const rank_states[] = { "running", "quiescing", "quiesced", "resuming", NULL };
static const char *const lease_states[] = { "quiescing", "quiesced", NULL };
static const char *const gone_reasons[] = { "unregister", "eof", "error", NULL };

#define ARG_INT(n, req, lo, hi) { .name = n, .type = SCHEMA_INT, .required = req, .min = lo, .max = hi }
#define ARG_STR(n, req, lo, hi) { .name = n, .type = SCHEMA_STR, .required = req, .min = lo, .max = hi }
#define ARG_BOOL(n) { .name = n, .type = SCHEMA_BOOL }
#define ARG_ENUM(n, req, v) { .name = n, .type = SCHEMA_ENUM, .required = req, .values = v }
#define ARG_ADDRS(n, req) { .name = n, .type = SCHEMA_ADDRS, .required = req, .min = 2, \
			    .max = SYMVIRT_ADDRS_MAX }
#define ARG_ARRAY(n, req, hi, it) { .name = n, .type = SCHEMA_ARRAY, .required = req, .max = hi, \
				    .item = it }
#define ARG_END { .name = NULL }
/* A count or duration a rank reports. */
#define RET_COUNT(n) ARG_INT(n, false, 0, INT64_MAX)

static const struct schema_arg args_none[] = { ARG_END };

/* ---- coordinator -> agent --------------------------------------------------- */

static const struct schema_arg args_hello[] = {
	ARG_STR("client", false, 1, 128),
	ARG_END
};

static const struct schema_arg args_status[] = {
	ARG_BOOL("ranks"),
	ARG_INT("deadline-ms", false, 1, 60000),
	ARG_END
};

static const struct schema_arg args_quiesce[] = {
	ARG_INT("deadline-ms", false, 1, MS_HOUR),
	ARG_INT("lease-ms", false, SCHEMA_LEASE_MIN_MS, SCHEMA_LEASE_MAX_MS),
	ARG_END
};

static const struct schema_arg args_renew[] = {
	ARG_INT("lease-ms", false, SCHEMA_LEASE_MIN_MS, SCHEMA_LEASE_MAX_MS),
	ARG_END
};

static const struct schema_arg host_fabric = ARG_ENUM("fabric", false, fabric_names);

static const struct schema_arg args_resume[] = {
	ARG_ARRAY("fabrics", false, 4, &host_fabric),
	ARG_INT("link-timeout-ms", false, 0, 600000),
	ARG_STR("hook", false, 1, 4096),
	ARG_INT("hook-timeout-ms", false, 1, 600000),
	ARG_BOOL("rescan"),
	ARG_INT("deadline-ms", false, 1, MS_HOUR),
	ARG_BOOL("wait"),
	ARG_END
};

static const struct schema_arg peer_entry_members[] = {
	ARG_STR("jobid", true, 1, 128),
	ARG_INT("rank", true, 0, INT32_MAX),
	ARG_ADDRS("addrs", true),
	ARG_END
};

const struct schema_arg schema_peer_entry = {
	.name = "entry", .type = SCHEMA_OBJECT, .members = peer_entry_members
};

static const struct schema_arg args_peers[] = {
	ARG_ARRAY("ranks", true, SCHEMA_PEERS_MAX, &schema_peer_entry),
	ARG_INT("deadline-ms", false, 1, MS_HOUR),
	ARG_BOOL("wait"),
	ARG_END
};

/* ---- rank -> agent ------------------------------------------------------------ */

static const struct schema_arg path_name = ARG_STR("path", false, 1, 64);

static const struct schema_arg args_register[] = {
	ARG_INT("pid", true, 1, INT32_MAX),
	ARG_STR("jobid", true, 1, 128),
	ARG_INT("rank", true, 0, INT32_MAX),
	ARG_ARRAY("paths", true, 8, &path_name),
	ARG_ENUM("state", false, register_states),
	ARG_END
};

/* ---- agent -> rank ------------------------------------------------------------ */

static const struct schema_arg fabric_members[] = {
	ARG_ENUM("name", true, fabric_names),
	ARG_STR("ifname", true, 0, 31),
	ARG_STR("addr", true, 0, 63),
	ARG_END
};

static const struct schema_arg rank_fabric = {
	.name = "fabric", .type = SCHEMA_OBJECT, .members = fabric_members
};

static const struct schema_arg rank_peer_members[] = {
	ARG_INT("rank", true, 0, INT32_MAX),
	ARG_ADDRS("addrs", true),
	ARG_END
};

static const struct schema_arg rank_peer = {
	.name = "entry", .type = SCHEMA_OBJECT, .members = rank_peer_members
};

static const struct schema_arg to_rank_quiesce[] = {
	ARG_INT("deadline-ms", false, 0, MS_DAY),
	ARG_END
};

static const struct schema_arg to_rank_resume[] = {
	ARG_ARRAY("fabrics", false, SCHEMA_FABRICS_MAX, &rank_fabric),
	ARG_INT("link-timeout-ms", false, 0, MS_DAY),
	ARG_INT("deadline-ms", false, 0, MS_DAY),
	ARG_BOOL("wait"),
	ARG_END
};

static const struct schema_arg to_rank_peers[] = {
	ARG_ARRAY("ranks", true, SCHEMA_PEERS_MAX, &rank_peer),
	ARG_INT("deadline-ms", false, 0, MS_DAY),
	ARG_BOOL("wait"),
	ARG_END
};

/* A path a rank reports: receivers ignore members they do not know. */
static const struct schema_arg path_members[] = {
	ARG_INT("peer", true, INT64_MIN, INT64_MAX),
	ARG_STR("path", false, 0, 256),
	ARG_STR("local", false, 0, 256),
	ARG_STR("remote", false, 0, 256),
	ARG_END
};

static const struct schema_arg path_entry = {
	.name = "path", .type = SCHEMA_OBJECT, .members = path_members, .open = true
};

#define RET_PATHS ARG_ARRAY("paths", false, 65536, &path_entry)

static const struct schema_arg ret_quiesce[] = {
	ARG_ENUM("state", true, state_quiesced),
	RET_COUNT("peers"),
	RET_COUNT("frames-drained"),
	RET_COUNT("bytes-queued"),
	RET_COUNT("elapsed-ms"),
	ARG_END
};

static const struct schema_arg ret_resume[] = {
	ARG_ENUM("state", true, state_resumed),
	RET_PATHS,
	ARG_ADDRS("addrs", false),
	RET_COUNT("elapsed-ms"),
	ARG_END
};

static const struct schema_arg ret_status[] = {
	ARG_ENUM("state", true, rank_states),
	RET_PATHS,
	ARG_ADDRS("addrs", false),
	ARG_END
};

static const struct schema_arg ret_peers[] = {
	ARG_ENUM("state", true, rank_states),
	RET_PATHS,
	ARG_END
};

static const struct schema_arg ret_register[] = {
	ARG_INT("version", false, INT64_MIN, INT64_MAX),
	ARG_END
};

/* THE command table.  Every row is a row of docs/symvirt-protocol.md. */
const struct schema_command schema_commands[] = {
	{ "hello", SCHEMA_HOST, args_hello, NULL },
	{ "query-commands", SCHEMA_HOST, args_none, NULL },
	{ "inventory", SCHEMA_HOST, args_none, NULL },
	{ "status", SCHEMA_HOST, args_status, NULL },
	{ "quiesce", SCHEMA_HOST, args_quiesce, NULL },
	{ "resume", SCHEMA_HOST, args_resume, NULL },
	{ "peers", SCHEMA_HOST, args_peers, NULL },
	{ "renew", SCHEMA_HOST, args_renew, NULL },
	{ "register", SCHEMA_RANK, args_register, ret_register },
	{ "unregister", SCHEMA_RANK, args_none, NULL },
	{ "quiesce", SCHEMA_TO_RANK, to_rank_quiesce, ret_quiesce },
	{ "resume", SCHEMA_TO_RANK, to_rank_resume, ret_resume },
	{ "peers", SCHEMA_TO_RANK, to_rank_peers, ret_peers },
	{ "status", SCHEMA_TO_RANK, args_none, ret_status },
	{ .name = NULL }
};

/* ---- events and error classes ----------------------------------------------- */

static const struct schema_arg data_registered[] = {
	ARG_INT("rank", true, 0, INT32_MAX),
	ARG_INT("pid", true, 1, INT32_MAX),
	ARG_STR("jobid", true, 1, 128),
	ARG_ARRAY("paths", true, 8, &path_name),
	ARG_END
};

static const struct schema_arg data_unregistered[] = {
	ARG_INT("rank", true, 0, INT32_MAX),
	ARG_INT("pid", true, 1, INT32_MAX),
	ARG_STR("jobid", true, 1, 128),
	ARG_ENUM("reason", true, gone_reasons),
	ARG_END
};

static const struct schema_arg data_lease_expired[] = {
	ARG_ENUM("state", true, lease_states),
	ARG_INT("ranks", true, 0, INT64_MAX),
	ARG_END
};

const struct schema_event schema_events[] = {
	{ "RANK_REGISTERED", data_registered },
	{ "RANK_UNREGISTERED", data_unregistered },
	{ "lease-expired", data_lease_expired },
	{ .name = NULL }
};

const char *const schema_classes[] = {
	"ProtocolError", "CommandNotFound", "InvalidParameter", "InvalidState",
	"Timeout", "RankError", "DeviceBusy", "GenericError", NULL
};

const struct schema_command *schema_find(const char *name, enum schema_leg leg)
{
	for (const struct schema_command *c = schema_commands; c->name; c++)
		if (c->leg == leg && !strcmp(c->name, name))
			return c;
	return NULL;
}

const char *schema_leg_name(enum schema_leg leg)
{
	switch (leg) {
	case SCHEMA_HOST: return "host";
	case SCHEMA_RANK: return "rank";
	case SCHEMA_TO_RANK: return "to-rank";
	}
	return "?";
}

const char *schema_type_name(enum schema_type t)
{
	switch (t) {
	case SCHEMA_INT: return "int";
	case SCHEMA_STR: return "string";
	case SCHEMA_BOOL: return "bool";
	case SCHEMA_ENUM: return "enum";
	case SCHEMA_ADDRS: return "ADDRS";
	case SCHEMA_ARRAY: return "array";
	case SCHEMA_OBJECT: return "object";
	}
	return "?";
}
