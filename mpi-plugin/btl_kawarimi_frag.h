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

#include "opal_config.h"
#include "opal/class/opal_free_list.h"
#include "opal/mca/btl/btl.h"

enum kw_frame_type {
	KW_FRAME_DATA = 1,	/* sequenced payload for ob1 (tag = ob1 tag) */
	KW_FRAME_ACK,		/* only the cumulative ack */
	KW_FRAME_FIN,		/* drain: no more DATA until reconnect */
	KW_FRAME_BYE,		/* the sender finalizes: do not reconnect */
	KW_FRAME_HELLO,		/* first frame of a connection (initiator) */
	KW_FRAME_HELLO_ACK,	/* answer to HELLO (acceptor) */
	KW_FRAME_TYPE_MAX
};

/* flags: on DATA, the sender waits for this frame's ack (ob1 has a
 * completion callback pending), so it is acknowledged at once; other
 * frames are acknowledged on the next frame going back, or after
 * KW_ACK_DELAY_MS / KW_ACK_EVERY frames. On ACK: "acknowledge everything
 * now" (the sender drains for a quiesce). */
#define KW_FLAG_ACK_NOW 0x1
#define KW_ACK_DELAY_MS 2
#define KW_ACK_EVERY 32

struct kw_hdr {
	uint8_t type;
	uint8_t tag;
	uint16_t flags;
	uint32_t len;		/* payload bytes after the header */
	uint64_t seq;		/* DATA only */
	uint64_t ack;		/* next sequence number the sender expects */
};

_Static_assert(sizeof(struct kw_hdr) == 24, "wire header must be 24 bytes");

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
	mca_btl_base_descriptor_t des;
	mca_btl_base_segment_t seg;
	struct kw_rfrag *next;
	struct kw_hdr hdr;
	size_t filled;			/* payload bytes read so far */
	size_t cap;			/* bytes allocated at data */
	_Alignas(16) unsigned char data[];
};

struct kw_rfrag *kw_rfrag_alloc(size_t len);
void kw_rfrag_free(struct kw_rfrag *r);

int kw_frag_lists_init(size_t eager_size, size_t max_size);
void kw_frag_lists_fini(void);
kw_frag_t *kw_frag_get(size_t size);
void kw_frag_return(kw_frag_t *f);

/* Bytes of a send fragment's payload (all segments). */
size_t kw_frag_len(const kw_frag_t *f);

/* Checks a received header; returns NULL or a static text saying what is
 * wrong with it (for the error message). */
const char *kw_hdr_check(const struct kw_hdr *h, size_t max_data);

#endif
