/*
 * kawarimi BTL: RDMA read (btl_get), emulated over the frame stream, so
 * that ob1 runs its RGET protocol and a large message is received straight
 * into the user's buffer (one kernel copy on each side, as the stock tcp
 * BTL's put does) instead of into a receive fragment and then ob1's copy.
 *
 * The sender's ob1 registers its buffer (btl_register_mem, REMOTE_READ)
 * and names the handle in its RGET; the receiver's btl_get sends a
 * sequenced GET_REQ {key, addr, len}; the sender's BTL checks the range
 * against its registration table and answers with a sequenced GET_REPLY
 * whose payload is the user's buffer, sent in place. Both frames ride the
 * reliability layer like DATA: kept until acknowledged, sent again after
 * a reconnect, delivered once and in order, held back during a quiesce.
 * The sender's buffer stays registered, and unchanged, until ob1's FIN
 * comes back, which the receiver sends only after the whole reply: a
 * resent reply still reads the right bytes.
 *
 * Registrations are only a table (no pinning: the paths copy,
 * btl_kawarimi_reg.c); the table is what makes a GET_REQ from the network
 * safe: a forged or stale key reads nothing, and the range must lie inside
 * the registered one.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stddef.h>

#include "btl_kawarimi_compat.h"
#include "btl_kawarimi_endpoint.h"
#include "btl_kawarimi_reg.h"

/* ob1 holds a pointer to this; it is the first member of struct kw_reg,
 * and the key is what goes into the RGET for the peer. */
struct mca_btl_base_registration_handle_t {
	uint64_t key;
};

_Static_assert(offsetof(struct kw_reg, key) == 0, "the handle is the registration's key");

/* Requests not answered yet for want of a fragment, oldest first
 * (application thread only). kw_rdma_get_req(NULL) tries them again. */
static struct kw_rfrag *waiting, *waiting_tail;

/* For the finalize log line (lock held when counted). */
static struct {
	uint64_t read, read_bytes, in_place, answered, refused;
} st;

static mca_btl_base_registration_handle_t *kw_register_mem(struct mca_btl_base_module_t *btl,
							   struct mca_btl_base_endpoint_t *ep,
							   void *base, size_t size, uint32_t flags)
{
	struct kw_reg *r;

	(void)btl;
	(void)ep;
	/* Only memory a peer may read goes into the table; the reader's own
	 * destination (LOCAL_WRITE) needs a handle, not an entry. */
	pthread_mutex_lock(&kw.lock);
	r = kw_reg_add(base, size, !!(flags & MCA_BTL_REG_FLAG_REMOTE_READ));
	pthread_mutex_unlock(&kw.lock);
	return (mca_btl_base_registration_handle_t *)r;
}

static int kw_deregister_mem(struct mca_btl_base_module_t *btl,
			     mca_btl_base_registration_handle_t *handle)
{
	(void)btl;
	pthread_mutex_lock(&kw.lock);
	kw_reg_del((struct kw_reg *)handle);
	pthread_mutex_unlock(&kw.lock);
	return OPAL_SUCCESS;
}

void kw_rdma_fini(void)
{
	kw_log(1, "GET: %llu reads done (%llu bytes, %llu of them received straight into the "
	       "destination), %llu answered for peers, %llu refused",
	       (unsigned long long)st.read, (unsigned long long)st.read_bytes,
	       (unsigned long long)st.in_place, (unsigned long long)st.answered,
	       (unsigned long long)st.refused);
	memset(&st, 0, sizeof(st));
	while (waiting) {
		struct kw_rfrag *r = waiting;

		waiting = r->next;
		kw_rfrag_free(r);
	}
	waiting_tail = NULL;
	kw_reg_fini();
}

static int kw_get(struct mca_btl_base_module_t *btl, struct mca_btl_base_endpoint_t *ep,
		  void *local_address, uint64_t remote_address,
		  struct mca_btl_base_registration_handle_t *local_handle,
		  struct mca_btl_base_registration_handle_t *remote_handle, size_t size, int flags,
		  int order, mca_btl_base_rdma_completion_fn_t cbfunc, void *cbcontext, void *cbdata)
{
	struct kw_get_req q = { .key = remote_handle ? remote_handle->key : 0,
				.addr = remote_address, .len = size };
	struct kw_get *g;
	kw_frag_t *f;

	(void)flags;
	(void)order;
	if (!size || size > btl->btl_get_limit)
		return OPAL_ERR_BAD_PARAM;
	g = malloc(sizeof(*g));
	f = kw_frag_get(sizeof(q));
	if (!g || !f) {
		free(g);
		if (f)
			kw_frag_return(f);
		return OPAL_ERR_OUT_OF_RESOURCE;
	}
	*g = (struct kw_get){ .ep = ep, .local = local_address, .len = size,
			      .local_handle = local_handle, .cb = cbfunc,
			      .cbcontext = cbcontext, .cbdata = cbdata };
	memcpy(f->payload, &q, sizeof(q));
	f->segments[0].seg_len = sizeof(q);
	f->internal = 1;
	f->base.des_flags = MCA_BTL_DES_FLAGS_BTL_OWNERSHIP;
	pthread_mutex_lock(&kw.lock);
	if (ep->failed) {
		pthread_mutex_unlock(&kw.lock);
		free(g);
		kw_frag_return(f);
		return OPAL_ERR_UNREACH;
	}
	if (ep->get_tail)
		ep->get_tail->next = g;
	else
		ep->get_head = g;
	ep->get_tail = g;
	kw_ep_send_frame_locked(ep, f, KW_FRAME_GET_REQ, 0);
	pthread_mutex_unlock(&kw.lock);
	return OPAL_SUCCESS;
}

/*
 * A GET_REQ, in sequence, handed over like DATA: answered here in the
 * application thread, which owns the fragment pools (Open MPI's free
 * lists are not thread-safe in a single-threaded job; the network thread
 * taking a fragment at the same time crashed a 4-rank job). The reply is
 * sent in place from the registered buffer; a refused request still gets
 * a reply (flagged, empty), so the reader's queue of requests stays in
 * step and its ob1 falls back to send/receive for that region. Returns
 * -1 when no fragment could be had (kept, tried again: the replies must
 * go out in the order of the requests).
 */
static int answer(struct kw_rfrag *r)
{
	struct mca_btl_base_endpoint_t *ep = r->ep;
	kw_frag_t *f = kw_frag_get(KW_GET_PAD_MAX);
	const void *src = NULL;
	struct kw_get_req q;
	char err[200];

	if (!f)
		return -1;
	f->internal = 1;
	f->base.des_flags = MCA_BTL_DES_FLAGS_BTL_OWNERSHIP;
	f->hdr.tag = 0;
	pthread_mutex_lock(&kw.lock);
	if (kw_get_req_parse(r->data, r->hdr.len, &q, mca_btl_kawarimi_module.btl_get_limit, err,
			     sizeof(err)) == 0)
		src = kw_reg_find(&q, err, sizeof(err));
	if (!src) {
		kw_err("peer rank %u asked to read memory it may not: %s; refused", ep->vpid, err);
		st.refused++;
	} else {
		/* header + pad = the buffer's offset from a 64-byte
		 * boundary, modulo 64 (KW_GET_PAD_MAX, wire.h says why) */
		uint8_t pad = (uint8_t)(((uintptr_t)src - sizeof(struct kw_hdr)) &
					(KW_GET_PAD_MAX - 1));

		memset(f->payload, 0, pad);
		f->segments[0].seg_len = pad;
		f->hdr.tag = pad;
		f->segments[1].seg_addr.pval = (void *)src;
		f->segments[1].seg_len = q.len;
		f->base.des_segment_count = 2;
		st.answered++;
	}
	kw_ep_send_frame_locked(ep, f, KW_FRAME_GET_REPLY, src ? 0 : KW_FLAG_GET_ERR);
	pthread_mutex_unlock(&kw.lock);
	kw_rfrag_free(r);
	return 0;
}


void kw_rdma_get_req(struct kw_rfrag *r)
{
	if (r) {
		r->next = NULL;
		if (waiting_tail)
			waiting_tail->next = r;
		else
			waiting = r;
		waiting_tail = r;
	}
	while (waiting) {
		struct kw_rfrag *next = waiting->next;

		if (answer(waiting))
			break;
		waiting = next;
	}
	if (!waiting) {
		waiting_tail = NULL;
		return;
	}
	if (r)
		kw_err("no send fragment to answer a GET_REQ from peer rank %u; trying again "
		       "at the next progress call", waiting->ep->vpid);
	kw_app_notify();	/* so that the next progress call tries again */
}

/*
 * Where a GET_REPLY that is next in sequence goes (lock held, at its
 * header): the destination of the oldest outstanding request, when the
 * lengths agree. NULL: no destination (a duplicate, a refusal, or a
 * protocol error that kw_rdma_reply_in reports).
 */
unsigned char *kw_rdma_reply_dst(const struct mca_btl_base_endpoint_t *ep, const struct kw_hdr *h)
{
	const struct kw_get *g = ep->get_head;

	if (h->type != KW_FRAME_GET_REPLY || h->seq != ep->rx_next || !g ||
	    g->len != (uint64_t)h->len - h->tag || (h->flags & KW_FLAG_GET_ERR))
		return NULL;
	return g->local;
}

/* A GET_REPLY in sequence (lock held; r NULL for a refusal): complete the
 * oldest request. The payload is already in place when the path read it
 * to kw_rdma_reply_dst's address, else it is copied there now. */
int kw_rdma_reply_in(struct mca_btl_base_endpoint_t *ep, const struct kw_hdr *h,
		     const struct kw_rfrag *r)
{
	struct kw_get *g = ep->get_head;
	int refused = h->flags & KW_FLAG_GET_ERR;

	if (!g || (!refused && g->len != (uint64_t)h->len - h->tag)) {
		kw_err("peer rank %u sent a GET_REPLY of %u bytes after a pad of %u, %s; dropping "
		       "the connection", ep->vpid, h->len - h->tag, h->tag,
		       g ? "not the length asked for" : "but nothing was asked");
		return -EPROTO;
	}
	ep->get_head = g->next;
	if (!ep->get_head)
		ep->get_tail = NULL;
	if (refused) {
		kw_err("peer rank %u refused to let us read %llu bytes; that region goes by "
		       "send/receive", ep->vpid, (unsigned long long)g->len);
		g->status = OPAL_ERROR;
	} else {
		if (r && r->dst != (unsigned char *)g->local)
			memcpy(g->local, r->data + h->tag, g->len);
		else
			st.in_place += g->len;
		st.read++;
		st.read_bytes += g->len;
		g->status = OPAL_SUCCESS;
	}
	g->next = NULL;
	if (kw.get_done_tail)
		kw.get_done_tail->next = g;
	else
		kw.get_done_head = g;
	kw.get_done_tail = g;
	kw_app_notify();
	return 0;
}

/* Application thread, lock not held: ob1's completion callbacks. */
int kw_rdma_complete(struct kw_get *g)
{
	int n = 0;

	while (g) {
		struct kw_get *next = g->next;

		g->cb(&mca_btl_kawarimi_module, g->ep, g->local, g->local_handle, g->cbcontext,
		      g->cbdata, g->status);
		free(g);
		g = next;
		n++;
	}
	return n;
}

/* Finalize: requests never answered. */
void kw_rdma_ep_free(struct mca_btl_base_endpoint_t *ep)
{
	while (ep->get_head) {
		struct kw_get *g = ep->get_head;

		ep->get_head = g->next;
		free(g);
	}
	ep->get_tail = NULL;
}

void kw_rdma_module_init(mca_btl_base_module_t *m)
{
	m->btl_get = kw_get;
	m->btl_register_mem = kw_register_mem;
	m->btl_deregister_mem = kw_deregister_mem;
	m->btl_registration_handle_size = sizeof(struct mca_btl_base_registration_handle_t);
}
