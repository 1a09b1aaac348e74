/*
 * kawarimi BTL: the verbs path (RC QPs through librdmacm), see
 * btl_kawarimi_verbs.c and docs/btl.md "Verbs path".
 *
 * The path ops are kw_verbs_path (btl_kawarimi_path.h). These are the
 * extra hooks the component calls; all with kw.lock held except
 * kw_verbs_register (MCA registration).
 */
#ifndef BTL_KAWARIMI_VERBS_H
#define BTL_KAWARIMI_VERBS_H

#include <json-c/json.h>

#include "btl_kawarimi_ctl.h"
#include "btl_kawarimi_proc.h"

/* MCA parameters btl_kawarimi_verbs*. */
void kw_verbs_register(void);
/* At init: find an RDMA device with an ACTIVE port, listen on tcp_port in
 * rdma_cm's own port space. Never fails the BTL: without a device the
 * path stays off (logged at verbose level 1). */
void kw_verbs_init(uint16_t tcp_port);
/* At resume, before the addresses are re-read: takes the fabric hints,
 * waits for an ACTIVE port (up to the hint's link timeout, capped by
 * btl_kawarimi_verbs_port_wait_ms), then listens again. */
void kw_verbs_resume_hints(const struct kw_ctl_msg *m, uint16_t tcp_port);
/* Prepends a "verbs" entry for every local address whose interface
 * belongs to an RDMA device with an ACTIVE port (none when the path is
 * off). */
void kw_verbs_add_addrs(struct kw_addrs *local);
/* The path's own listener (rdma_cm event channel) or -1, and its events. */
int kw_verbs_listen_fd(void);
/* Is the path usable now (for the register message)? */
int kw_verbs_active(void);
/* {"state": "up"|"off", "device": S, "port-wait-ms": N, ...} for replies. */
json_object *kw_verbs_json(void);

#endif
