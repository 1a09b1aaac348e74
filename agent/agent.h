/* SPDX-License-Identifier: MIT */
/*
 * kawarimi-agent, the guest daemon of the symvirt channel: what starting
 * one takes (main.c).  Its parts share agent_priv.h.
 */
#ifndef KAWARIMI_AGENT_H
#define KAWARIMI_AGENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "schema.h"	/* the lease bounds */

#define AGENT_DEFAULT_CHANNEL "/dev/virtio-ports/org.kawarimi.symvirt.0"
#define AGENT_DEFAULT_SOCKET "/run/kawarimi/agent.sock"
/* Bounds of a lease (quiesce's and renew's lease-ms, --adopt-lease-ms). */
#define AGENT_LEASE_MIN_MS SCHEMA_LEASE_MIN_MS
#define AGENT_LEASE_MAX_MS SCHEMA_LEASE_MAX_MS
#define AGENT_DEFAULT_ADOPT_LEASE_MS 60000

struct agent_opts {
	const char *channel;	/* PATH, unix:PATH or listen:PATH */
	const char *socket;	/* the ranks' unix socket */
	const char *group;	/* group owning the socket, or NULL */
	const char *proc_root;	/* "/proc": where holders are looked for */
	const char *dev_root;	/* "/dev": uverbs nodes are DEV/infiniband/uverbs* */
	const char *sys_root;	/* "/sys": PCI rescan, netdev and verbs links */
	const char *pci_dump;	/* read PCI devices from an `lspci -x` dump */
	int64_t adopt_lease_ms;	/* lease held for ranks that register quiesced */
	bool foreground;
	bool syslog;
	int verbose;
};

struct agent;

/* A running agent: the channel opened (or listening), the rank socket
 * listening.  NULL when it cannot start; the reason is logged. */
struct agent *agent_new(const struct agent_opts *o);
/* Runs the loop until SIGTERM/SIGINT: 0, or -1 on a fatal error. */
int agent_run(struct agent *a);
/* Stops the task in progress, closes everything and frees a. */
void agent_free(struct agent *a);
void agent_log(struct agent *a, int prio, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

#endif
