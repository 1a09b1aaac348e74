/*
 * kawarimi BTL: wire frames and fragment descriptors.
 *
 * Every frame on a path connection starts with struct kw_hdr. DATA frames
 * carry a per-endpoint sequence number; every frame carries the sender's
 * cumulative acknowledgment (the next sequence number it expects), so acks
 * ride on data in both directions and a standalone ACK is only sent when
 * nothing else is going out.
 */
#ifndef BTL_KAWARIMI_FRAG_H
#define BTL_KAWARIMI_FRAG_H

#include <stdint.h>
#include <stddef.h>
#include <string.h>

#include "opal_config.h"
#include "opal/class/opal_free_list.h"
#include "opal/mca/btl/btl.h"

#include "btl_kawarimi_wire.h"


/* Send fragment: what ob1 gets from alloc/prepare_src. */
typedef struct kw_frag {
	mca_btl_base_descriptor_t base;
	mca_btl_base_segment_t segments[2];
	struct kw_frag *next;		/* endpoint tx queue / completion queue */
	struct mca_btl_base_endpoint_t *ep;
	opal_free_list_t *list;		/* where it returns */
	struct kw_hdr hdr;
	size_t capacity;		/* bytes available at payload */
	int internal;			/* from sendi: no ob1 callback */
	int status;			/* completion status for ob1 */
	unsigned char *payload;		/* inline buffer behind the struct */
} kw_frag_t;

OBJ_CLASS_DECLARATION(kw_frag_t);

/* Receive fragment: allocated by the network thread, handed to ob1 in the
 * application thread, then freed. */
struct kw_rfrag {
	struct mca_btl_base_endpoint_t *ep;	/* sender, for the receive descriptor */
	struct kw_rfrag *next;
	struct kw_hdr hdr;
	size_t filled;			/* payload bytes read so far */
	unsigned char *dst;		/* where they go: data, or a GET's buffer */
	size_t skip;			/* leading bytes dropped (a GET_REPLY's pad) */
	size_t cap;			/* bytes allocated at data */
	_Alignas(16) unsigned char data[];
};

struct kw_rfrag *kw_rfrag_alloc(size_t len);

/* Appends n payload bytes: the first skip of the frame are dropped, the
 * rest go to dst in order. */
static inline void kw_rfrag_fill(struct kw_rfrag *r, const unsigned char *p, size_t n)
{
	if (r->filled < r->skip) {
		size_t s = r->skip - r->filled < n ? r->skip - r->filled : n;

		r->filled += s;
		p += s;
		n -= s;
	}
	if (n)
		memcpy(r->dst + (r->filled - r->skip), p, n);
	r->filled += n;
}
void kw_rfrag_free(struct kw_rfrag *r);

int kw_frag_lists_init(size_t eager_size, size_t max_size);
void kw_frag_lists_fini(void);
kw_frag_t *kw_frag_get(size_t size);
void kw_frag_return(kw_frag_t *f);

/* Bytes of a send fragment's payload (all segments). */
size_t kw_frag_len(const kw_frag_t *f);


#endif
