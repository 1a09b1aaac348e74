/*
 * kawarimi BTL: the table of memory a peer may read with a GET_REQ (see
 * btl_kawarimi_rdma.c). No Open MPI dependency: the unit test and the fuzz
 * harness link it alone. Not locked: the caller holds kw.lock.
 */
#ifndef BTL_KAWARIMI_REG_H
#define BTL_KAWARIMI_REG_H

#include <stddef.h>
#include <stdint.h>

#include "btl_kawarimi_wire.h"

struct kw_reg {
	uint64_t key;		/* first: ob1's registration handle; 0: local only */
	uintptr_t base;
	size_t len;
	struct kw_reg *next;	/* free list */
};

/* A registration of len bytes at base; readable by peers (a key in the
 * table) when remote. NULL when out of memory. */
struct kw_reg *kw_reg_add(const void *base, size_t len, int remote);
void kw_reg_del(struct kw_reg *r);
/* The memory a GET_REQ names, or NULL with err saying why (the key
 * unknown or stale, the range outside the registration). */
const void *kw_reg_find(const struct kw_get_req *q, char *err, size_t errlen);
/* Frees everything (finalize). */
void kw_reg_fini(void);

#endif
