/*
 * kawarimi BTL: the reliability layer above the paths (see
 * btl_kawarimi_endpoint.h): every DATA frame stays queued until the peer
 * acknowledges it, goes out again after a reconnect, and arrives exactly
 * once and in order; delayed and piggybacked acks; the FIN drain of a
 * quiesce; completions and received frames handed to the application
 * thread. Which connection an endpoint uses, and when it connects, is
 * btl_kawarimi_conn.c's.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "btl_kawarimi_endpoint.h"

struct mca_btl_base_endpoint_t *kw_ep_get(uint32_t vpid, int create)
{
	struct mca_btl_base_endpoint_t *ep;

	if (vpid < kw.neps && kw.eps[vpid])
		return kw.eps[vpid];
	/* Only ranks of our job: the table is indexed by rank, and a rank
	 * near 2^32 made the doubling below wrap to 0 and spin for ever. */
	if (!create || vpid >= kw.job_size)
		return NULL;
	if (vpid >= kw.neps) {
		uint64_t n = kw.neps ? kw.neps : 16;
		void *p;

		while (n <= vpid)
			n *= 2;
		p = realloc(kw.eps, n * sizeof(*kw.eps));
		if (!p)
			return NULL;
		kw.eps = p;
		memset(kw.eps + kw.neps, 0, (n - kw.neps) * sizeof(*kw.eps));
		kw.neps = (uint32_t)n;
	}
	ep = calloc(1, sizeof(*ep));
	if (!ep)
		return NULL;
	ep->vpid = vpid;
	ep->backoff_ms = 20;
	ep->probe_fd = -1;
	ep->probe_backoff_ms = KW_PROBE_MIN_MS;
	kw.eps[vpid] = ep;
	return ep;
}

void kw_ep_free(struct mca_btl_base_endpoint_t *ep)
{
	kw_rdma_ep_free(ep);
	if (ep->probe_fd >= 0)
		close(ep->probe_fd);
	free(ep);
}

static void complete_frag(kw_frag_t *f, int status)
{
	f->status = status;
	f->next = NULL;
	if (kw.done_tail)
		kw.done_tail->next = f;
	else
		kw.done_head = f;
	kw.done_tail = f;
	kw_app_notify();
}

/* Cumulative ack: the peer holds every frame below ack. */
int kw_ep_ack(struct mca_btl_base_endpoint_t *ep, uint64_t ack)
{
	if (ack > ep->tx_seq) {
		kw_err("peer rank %u acknowledged frame %llu but only %llu were sent; "
		       "dropping the connection", ep->vpid, (unsigned long long)ack,
		       (unsigned long long)ep->tx_seq);
		return -EPROTO;
	}
	while (ep->tx_head && ep->tx_head->hdr.seq < ack) {
		kw_frag_t *f = ep->tx_head;

		ep->tx_head = f->next;
		if (!ep->tx_head)
			ep->tx_tail = NULL;
		if (ep->tx_cursor == f)
			ep->tx_cursor = f->next;
		ep->tx_bytes_queued -= kw_frag_len(f);
		if (kw.state == KW_QUIESCING)
			ep->drained_frames++;
		complete_frag(f, OPAL_SUCCESS);
	}
	return 0;
}

void kw_ep_detach(struct mca_btl_base_endpoint_t *ep)
{
	struct kw_conn *c = ep->conn;

	if (c) {
		c->close_me = 1;
		c->ep = NULL;
	}
	ep->conn = NULL;
	/* Everything not acknowledged goes out again on the next connection. */
	ep->tx_cursor = ep->tx_head;
	ep->draining = ep->fin_sent = ep->fin_rcvd = 0;
	ep->ack_sent = 0;
	ep->ack_req = ep->ack_urgent = 0;
	ep->ack_due_ms = 0;
	kw_wake();
}

void kw_ep_conn_broken(struct kw_conn *c, const char *why)
{
	struct mca_btl_base_endpoint_t *ep = c->ep;
	char s[128];

	kw_path_conn_str(c, s, sizeof(s));
	if (!ep) {
		kw_log(10, "connection %s closed: %s", s, why);
		c->close_me = 1;
		return;
	}
	kw_log(1, "connection to peer rank %u (%s) broken: %s; %llu frames to resend",
	       ep->vpid, s, why,
	       (unsigned long long)(ep->tx_seq - (ep->tx_head ? ep->tx_head->hdr.seq : ep->tx_seq)));
	/* The peer may hold frames our lost ACK was for: its kernel has
	 * them acknowledged, so with nothing else to send it never sees the
	 * break and waits for that ACK forever (ob1 holds back the next
	 * pipeline fragments until their completion). Reconnect even with
	 * nothing to resend: the HELLO carries our rx_next and settles it.
	 * (A quiesce drains first; resume decides who reconnects then.) */
	if (c->state == KW_CONN_UP && !ep->peer_gone && !ep->draining && kw.state == KW_RUNNING)
		ep->heal = 1;
	kw_ep_detach(ep);
	ep->reconnects++;
	if (!ep->broken_since_ms)
		ep->broken_since_ms = kw_now_ms();
	ep->next_attempt_ms = kw_now_ms();
}

static int send_ctl_flags(struct kw_conn *c, uint8_t type, uint16_t flags, uint64_t ack,
			  const void *payload, uint32_t len)
{
	struct kw_hdr h = { .type = type, .flags = flags, .len = len, .ack = ack };
	struct iovec iov = { c->ctl, sizeof(h) + len };

	memcpy(c->ctl, &h, sizeof(h));
	if (len)
		memcpy(c->ctl + sizeof(h), payload, len);
	return c->ops->send(c, &iov, 1);
}

int kw_ep_send_ctl(struct kw_conn *c, uint8_t type, uint64_t ack, const void *payload,
		    uint32_t len)
{
	return send_ctl_flags(c, type, 0, ack, payload, len);
}

void kw_ep_acked_now(struct mca_btl_base_endpoint_t *ep)
{
	ep->ack_sent = ep->rx_next;
	ep->ack_urgent = 0;
	ep->rx_unacked = 0;
	ep->ack_due_ms = 0;
}

static void ep_push(struct mca_btl_base_endpoint_t *ep);

/* Standalone ACK due? Data going back carries the ack for free. */
static int ack_due(struct mca_btl_base_endpoint_t *ep)
{
	if (ep->rx_next == ep->ack_sent)
		return 0;
	if (kw.defer_acks && !ep->draining) {
		/* Reading in the application thread: ob1's callbacks run next
		 * and usually answer (rendezvous ACK, reply), which carries
		 * the ack for free; what is still due then goes out at the
		 * end of the progress call (kw_ep_flush_acks). */
		if (!ep->ack_listed) {
			ep->ack_listed = 1;
			ep->ack_next = kw.ack_list;
			kw.ack_list = ep;
		}
		return 0;
	}
	return ep->ack_urgent || ep->draining || ep->rx_unacked >= KW_ACK_EVERY ||
	       (ep->ack_due_ms && kw_now_ms() >= ep->ack_due_ms);
}

void kw_ep_flush_acks(void)
{
	while (kw.ack_list) {
		struct mca_btl_base_endpoint_t *ep = kw.ack_list;

		kw.ack_list = ep->ack_next;
		ep->ack_listed = 0;
		ep->ack_next = NULL;
		ep_push(ep);
	}
}

/* Hands frames to the path while it takes them; sends FIN/ACK when due. */
static void ep_push(struct mca_btl_base_endpoint_t *ep)
{
	struct kw_conn *c = ep->conn;
	int rc;

	if (!c || c->state != KW_CONN_UP || c->close_me)
		return;
	while (ep->tx_cursor && !ep->draining) {
		kw_frag_t *f = ep->tx_cursor;
		struct iovec iov[3];
		size_t i;

		f->hdr.ack = ep->rx_next;
		iov[0].iov_base = &f->hdr;
		iov[0].iov_len = sizeof(f->hdr);
		for (i = 0; i < f->base.des_segment_count; i++) {
			iov[i + 1].iov_base = f->segments[i].seg_addr.pval;
			iov[i + 1].iov_len = f->segments[i].seg_len;
		}
		rc = c->ops->send(c, iov, (int)f->base.des_segment_count + 1);
		if (rc == -EAGAIN)
			return;
		if (rc < 0) {
			kw_ep_conn_broken(c, strerror(-rc));
			return;
		}
		kw_ep_acked_now(ep);
		ep->tx_cursor = f->next;
	}
	if (!c->ops->idle(c))
		return;
	if (ep->draining && !ep->fin_sent && ep->tx_head == ep->tx_cursor) {
		/* Every frame we put on this connection is acknowledged. */
		rc = kw_ep_send_ctl(c, KW_FRAME_FIN, ep->rx_next, NULL, 0);
		if (rc < 0 && rc != -EAGAIN) {
			kw_ep_conn_broken(c, strerror(-rc));
			return;
		}
		if (!rc) {
			ep->fin_sent = 1;
			kw_ep_acked_now(ep);
		}
		return;
	}
	if (ack_due(ep) || (ep->ack_req && ep->tx_head != ep->tx_cursor)) {
		rc = send_ctl_flags(c, KW_FRAME_ACK, ep->ack_req ? KW_FLAG_ACK_NOW : 0,
				    ep->rx_next, NULL, 0);
		if (rc < 0 && rc != -EAGAIN) {
			kw_ep_conn_broken(c, strerror(-rc));
			return;
		}
		if (!rc) {
			kw_ep_acked_now(ep);
			ep->ack_req = 0;
		}
	}
	if (ep->fin_sent && ep->fin_rcvd && c->ops->idle(c) && ep->tx_head == ep->tx_cursor) {
		char s[128];

		kw_path_conn_str(c, s, sizeof(s));
		kw_log(2, "drained connection to peer rank %u (%s)", ep->vpid, s);
		ep->was_up = 1;
		kw_ep_detach(ep);
	}
}

void kw_ep_queue_locked(struct mca_btl_base_endpoint_t *ep, kw_frag_t *f, uint8_t type,
			uint16_t flags)
{
	f->next = NULL;
	f->ep = ep;
	f->hdr.type = type;
	f->hdr.flags = flags;
	f->hdr.seq = ep->tx_seq++;
	f->hdr.len = (uint32_t)kw_frag_len(f);
	ep->tx_bytes_queued += f->hdr.len;
	ep->tx_frames++;
	if (ep->tx_tail)
		ep->tx_tail->next = f;
	else
		ep->tx_head = f;
	ep->tx_tail = f;
	if (!ep->tx_cursor)
		ep->tx_cursor = f;
}

void kw_ep_send_frame_locked(struct mca_btl_base_endpoint_t *ep, kw_frag_t *f, uint8_t type,
			     uint16_t flags)
{
	kw_ep_queue_locked(ep, f, type, flags);
	ep_push(ep);
	/* The network thread connects and retries; it finishes partial
	 * writes only while the application is not calling progress. */
	if (!ep->conn || ep->conn->state != KW_CONN_UP)
		kw_wake();
	else if ((ep->tx_cursor || !ep->conn->ops->idle(ep->conn)) && !kw_app_active(kw_now_ms()))
		kw_wake();
}

void kw_ep_send_locked(struct mca_btl_base_endpoint_t *ep, kw_frag_t *f)
{
	kw_ep_send_frame_locked(ep, f, KW_FRAME_DATA,
				!f->internal && f->base.des_cbfunc ? KW_FLAG_ACK_NOW : 0);
}

static int same_pair(const struct kw_cand *a, const struct kw_conn *c)
{
	return a->remote.ip == c->cand.remote.ip && a->remote.fabric == c->cand.remote.fabric &&
	       (!a->local.ip || a->local.ip == c->cand.local.ip);
}

/* Is the connection over the best pair both ends have now? */
int kw_ep_on_best_path(struct mca_btl_base_endpoint_t *ep)
{
	struct kw_cand cand[KW_MAX_CAND];
	int n = kw_addrs_candidates(&kw.local, &ep->peer_addrs, cand, KW_MAX_CAND);

	return !n || !ep->conn || same_pair(&cand[0], ep->conn);
}

static void rx_deliver(struct kw_rfrag *r)
{
	r->next = NULL;
	if (kw.rx_tail)
		kw.rx_tail->next = r;
	else
		kw.rx_head = r;
	kw.rx_tail = r;
	kw_app_notify();
}

/* A frame on an established connection (HELLO_ACK aside): acks, data in
 * order, FIN, BYE. Takes r. */
int kw_ep_frame_in(struct mca_btl_base_endpoint_t *ep, struct kw_conn *c, const struct kw_hdr *h,
		   struct kw_rfrag *r)
{
	int rc = 0;

	if (c->state != KW_CONN_UP) {
		kw_err("peer rank %u sent frame type %u before the handshake ended", ep->vpid,
		       h->type);
		rc = -EPROTO;
		goto drop;
	}
	if (kw_ep_ack(ep, h->ack)) {
		rc = -EPROTO;
		goto drop;
	}
	switch (h->type) {
	case KW_FRAME_DATA:
	case KW_FRAME_GET_REQ:
	case KW_FRAME_GET_REPLY:
		if (h->seq < ep->rx_next) {
			ep->dup_frames++;
			kw_log(10, "peer rank %u: duplicate frame %llu dropped", ep->vpid,
			       (unsigned long long)h->seq);
			goto drop;
		}
		if (h->seq > ep->rx_next) {
			kw_err("peer rank %u sent frame %llu, expected %llu; dropping the connection",
			       ep->vpid, (unsigned long long)h->seq,
			       (unsigned long long)ep->rx_next);
			rc = -EPROTO;
			goto drop;
		}
		/* A reply this side cannot take is not acknowledged: the
		 * connection drops and the peer has it on record. */
		if (h->type == KW_FRAME_GET_REPLY) {
			rc = kw_rdma_reply_in(ep, h, r);
			if (rc)
				goto drop;
		}
		ep->rx_next++;
		ep->rx_unacked++;
		if (h->flags & KW_FLAG_ACK_NOW)
			ep->ack_urgent = 1;
		else if (!ep->ack_due_ms)
			ep->ack_due_ms = kw_now_ms() + KW_ACK_DELAY_MS;
		if (h->type == KW_FRAME_GET_REPLY)
			goto drop;
		/* DATA for ob1, and GET_REQs: answered in the application
		 * thread too, which owns the fragment pools. */
		r->ep = ep;
		rx_deliver(r);
		return 0;
	case KW_FRAME_ACK:
		if (h->flags & KW_FLAG_ACK_NOW)
			ep->ack_urgent = 1;
		break;
	case KW_FRAME_FIN:
		ep->fin_rcvd = 1;
		if (!ep->draining) {
			/* The peer quiesces: stop sending to it, let it finish. */
			ep->draining = 1;
			ep->peer_quiesced = 1;
			ep->ack_req = 1;
		}
		break;
	case KW_FRAME_BYE:
		kw_log(2, "peer rank %u finalized", ep->vpid);
		ep->peer_gone = 1;
		kw_ep_detach(ep);
		break;
	default:
		break;
	}
drop:
	if (r)
		kw_rfrag_free(r);
	return rc;
}

uint64_t kw_ep_next_timer(struct mca_btl_base_endpoint_t *ep)
{
	if (ep->conn && ep->ack_due_ms && ep->rx_next != ep->ack_sent)
		return ep->ack_due_ms;
	if (ep->failed || ep->conn || ep->peer_gone)
		return UINT64_MAX;
	if (!kw_ep_has_data(ep) && !ep->want_up && !ep->heal)
		return UINT64_MAX;
	return ep->next_attempt_ms;
}

void kw_ep_start_drain(struct mca_btl_base_endpoint_t *ep)
{
	ep->drained_frames = 0;
	/* A peer that quiesced first drained this connection already and
	 * set was_up then: keep it, or this rank would not reconnect. */
	if (ep->conn && ep->conn->state == KW_CONN_UP)
		ep->was_up = 1;
	/* Broken and healing when the quiesce came (a flap, a cut): the pair
	 * was in use and must be reconnected at resume like one that was up,
	 * or the resumed reply shows no path until traffic needs one. */
	if (ep->heal || (ep->conn && ep->conn->state != KW_CONN_UP))
		ep->was_up = 1;
	if (ep->conn && ep->conn->state != KW_CONN_UP) {
		/* An attempt in progress: abandon it, resume starts afresh. */
		ep->conn->close_me = 1;
		ep->conn->ep = NULL;
		ep->conn = NULL;
	}
	if (ep->conn) {
		ep->draining = 1;
		ep->ack_req = 1;	/* frames the peer holds: have them acked now */
	}
	ep_push(ep);
}

void kw_ep_force_close(struct mca_btl_base_endpoint_t *ep, const char *why)
{
	if (ep->conn)
		kw_ep_conn_broken(ep->conn, why);
	ep->broken_since_ms = 0;
	ep->heal = 0;	/* quiesced: resume decides who reconnects */
}

void kw_ep_push_locked(struct mca_btl_base_endpoint_t *ep)
{
	ep_push(ep);
}

void kw_ep_send_bye(struct mca_btl_base_endpoint_t *ep)
{
	struct kw_conn *c = ep->conn;

	if (!c || c->state != KW_CONN_UP || c->close_me || !c->ops->idle(c))
		return;
	kw_ep_send_ctl(c, KW_FRAME_BYE, ep->rx_next, NULL, 0);
}
