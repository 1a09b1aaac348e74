/* SPDX-License-Identifier: MIT */
/*
 * The cluster file (docs/cluster-file.md): which node VMs move, where their
 * QEMUs and agents are, how the disks move, and the limits.  Parsed with
 * libyaml's document API so that every error can name file:line:column.
 */
#ifndef KWM_CLUSTER_H
#define KWM_CLUSTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <json-c/json.h>

#include "phase.h"

enum kwm_storage {
	KWM_STORAGE_INCREMENTAL,
	KWM_STORAGE_FULL,
	KWM_STORAGE_SHARED,
};

const char *kwm_storage_name(enum kwm_storage s);
/* 0 and *out set, or -1 for an unknown name. */
int kwm_storage_parse(const char *name, enum kwm_storage *out);

struct kwm_side {
	char *qmp;		/* unix socket path, or ssh://[USER@]HOST[:PORT]/PATH */
	char *symvirt;		/* NULL: "none" */
	json_object *hca;	/* device_add arguments, NULL: none */
	const char *hca_id;	/* points into hca */
};

struct kwm_disk {
	char *src_node;
	char *dst_node;
};

/*
 * How a VM's migration and NBD streams cross the network (docs/security.md):
 * x509 TLS with QEMU's own credentials, or explicitly in clear text.
 */
enum kwm_tls_mode {
	KWM_TLS_UNSET,		/* no tls key: only local endpoints are allowed */
	KWM_TLS_NONE,		/* tls: none, written on purpose */
	KWM_TLS_X509,
};

struct kwm_tls {
	enum kwm_tls_mode mode;
	char *dir;		/* QEMU's x509 directory, on every QEMU host */
	char *source_dn;	/* the source's client certificate DN (tls-authz) */
	char *hostname;		/* NULL: each stream's connect host */
};

struct kwm_vm_conf {
	char *name;
	struct kwm_side src, dst;
	char *mig_listen, *mig_connect;		/* "tcp:H:P" | "unix:PATH" */
	char *nbd_listen, *nbd_connect;		/* NULL with storage: shared */
	struct kwm_disk *disks;
	size_t ndisks;
	struct kwm_tls tls;			/* vms[].tls, else the top level's */
};

struct kwm_cluster {
	char *file;
	char *name;
	enum kwm_storage storage;
	uint64_t bandwidth;	/* bytes/s for the whole cluster, 0: unlimited */
	int parallel;
	int64_t downtime_ms;
	int64_t timeout_ms[KWM_PH__COUNT];
	int64_t stall_ms;	/* a transfer that moves no byte this long fails */
	int64_t lease_ms;	/* a quiesce's lease, renewed while we live */
	bool allow_partial;
	struct kwm_tls tls;
	struct kwm_vm_conf *vms;
	size_t nvms;
};

/*
 * Parses a cluster file held in memory; `name` is what messages call it.
 * Returns 0 with *out, or -1 with a "name:line:col: what; fix" message in
 * err.  Never prints.
 */
int kwm_cluster_parse(const char *name, const char *buf, size_t len,
		      struct kwm_cluster **out, char *err, size_t errlen);
int kwm_cluster_load(const char *path, struct kwm_cluster **out,
		     char *err, size_t errlen);
void kwm_cluster_free(struct kwm_cluster *c);

/* Helpers shared with the CLI: "30s" -> ms, "920Mbit/s" -> bytes/s. */
int kwm_parse_duration_ms(const char *s, int64_t *out);
int kwm_parse_rate(const char *s, uint64_t *out);

/* Splits "tcp:HOST:PORT" / "unix:PATH" into the JSON that QMP wants for a
 * SocketAddress (flat = the blockdev-add NBD form). NULL if malformed. */
json_object *kwm_socket_address(const char *uri, int flat);

/* The first of vm's streams (migration, NBD; listen and connect) that is
 * TCP to a host other than loopback, or NULL. */
const char *kwm_vm_remote_uri(const struct kwm_vm_conf *vm);
/* The name the destination's certificate is checked against for a
 * stream whose source dials `uri`: tls.hostname, else the URI's host.
 * Writes into buf; NULL when there is none (a unix socket). */
const char *kwm_tls_hostname(const struct kwm_vm_conf *vm, const char *uri,
			     char *buf, size_t len);

#endif
