/*
 * kawarimi BTL: the reliability layer above the paths, and connection
 * management (who connects, over which address pair, what happens when a
 * connection breaks, the FIN drain, the HELLO handshake).
 *
 * Connection rules:
 * - Either side may connect when it has frames for the peer (or, after a
 *   resume, the lower vpid reconnects every peer it was connected to).
 * - If both connect at once, the connection started by the lower vpid
 *   wins: the higher side abandons its own attempt, the lower side refuses
 *   the other one (HELLO_ACK status RACE).
 * - A HELLO from a peer we think we are connected to replaces the old
 *   connection: the peer saw it break before we did.
 * - HELLO and HELLO_ACK carry the sender's rx_next, so each side retires
 *   what the other already holds and resends exactly the rest, and the
 *   sender's current address list, so a reconnect after a resume always
 *   uses fresh addresses (the initiator switches to a better pair when
 *   the answer shows one).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "btl_kawarimi_endpoint.h"

enum kw_hello_status {
	KW_HELLO_OK = 0,
	KW_HELLO_QUIESCED,	/* the acceptor is quiesced: retry later */
	KW_HELLO_RACE,		/* both connected; the lower vpid's wins */
	KW_HELLO_UNKNOWN,	/* not meant for this process */
	KW_HELLO_GONE,		/* the acceptor is finalizing */
};


static const char *hello_status_str(uint32_t s)
{
	static const char *names[] = { "ok", "quiesced", "race", "unknown", "gone" };

	return s < sizeof(names) / sizeof(names[0]) ? names[s] : "invalid";
}

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
	if (ep->probe_fd >= 0)
		close(ep->probe_fd);
	free(ep);
}

static void conn_str(const struct kw_conn *c, char *buf, size_t len)
{
	char l[24], r[24];

	kw_ip_str(c->cand.local.ip, l, sizeof(l));
	kw_ip_str(c->cand.remote.ip, r, sizeof(r));
	snprintf(buf, len, "%s %s%s%s -> %s:%u", c->ops->name, l,
		 c->cand.local.ifname[0] ? "@" : "", c->cand.local.ifname, r, c->cand.port);
}

/* ---- completion hand-over to the application thread ---------------- */

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
static int ep_ack(struct mca_btl_base_endpoint_t *ep, uint64_t ack)
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

/* ---- connection detach ------------------------------------------------ */

static void ep_detach(struct mca_btl_base_endpoint_t *ep)
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

	conn_str(c, s, sizeof(s));
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
	ep_detach(ep);
	ep->reconnects++;
	if (!ep->broken_since_ms)
		ep->broken_since_ms = kw_now_ms();
	ep->next_attempt_ms = kw_now_ms();
}

/* ---- sending ---------------------------------------------------------- */

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

static int send_ctl(struct kw_conn *c, uint8_t type, uint64_t ack, const void *payload,
		    uint32_t len)
{
	return send_ctl_flags(c, type, 0, ack, payload, len);
}

static void acked_now(struct mca_btl_base_endpoint_t *ep)
{
	ep->ack_sent = ep->rx_next;
	ep->ack_urgent = 0;
	ep->rx_unacked = 0;
	ep->ack_due_ms = 0;
}

/* Standalone ACK due? Data going back carries the ack for free. */
static void ep_push(struct mca_btl_base_endpoint_t *ep);

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

static int build_hello(struct kw_hello *h, uint32_t dst, uint32_t status, uint64_t rx_next,
		       unsigned char *buf, size_t len)
{
	int n;

	h->magic = KW_HELLO_MAGIC;
	h->version = KW_PROTO_VERSION;
	h->jobid = kw.me.jobid;
	h->src_vpid = kw.me.vpid;
	h->dst_vpid = dst;
	h->status = status;
	h->rx_next = rx_next;
	memcpy(buf, h, sizeof(*h));
	n = kw_addrs_encode(&kw.local, buf + sizeof(*h), len - sizeof(*h));
	return n < 0 ? -1 : (int)sizeof(*h) + n;
}

static int send_hello(struct kw_conn *c, uint8_t type, uint32_t dst, uint32_t status,
		      uint64_t rx_next)
{
	unsigned char buf[KW_CTRL_MAX_PAYLOAD];
	struct kw_hello h;
	int n = build_hello(&h, dst, status, rx_next, buf, sizeof(buf));

	if (n < 0)
		return -EINVAL;
	return send_ctl(c, type, rx_next, buf, (uint32_t)n);
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
		acked_now(ep);
		ep->tx_cursor = f->next;
	}
	if (!c->ops->idle(c))
		return;
	if (ep->draining && !ep->fin_sent && ep->tx_head == ep->tx_cursor) {
		/* Every frame we put on this connection is acknowledged. */
		rc = send_ctl(c, KW_FRAME_FIN, ep->rx_next, NULL, 0);
		if (rc < 0 && rc != -EAGAIN) {
			kw_ep_conn_broken(c, strerror(-rc));
			return;
		}
		if (!rc) {
			ep->fin_sent = 1;
			acked_now(ep);
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
			acked_now(ep);
			ep->ack_req = 0;
		}
	}
	if (ep->fin_sent && ep->fin_rcvd && c->ops->idle(c) && ep->tx_head == ep->tx_cursor) {
		char s[128];

		conn_str(c, s, sizeof(s));
		kw_log(2, "drained connection to peer rank %u (%s)", ep->vpid, s);
		ep->was_up = 1;
		ep_detach(ep);
	}
}

void kw_ep_send_locked(struct mca_btl_base_endpoint_t *ep, kw_frag_t *f)
{
	f->next = NULL;
	f->ep = ep;
	f->hdr.type = KW_FRAME_DATA;
	f->hdr.flags = !f->internal && f->base.des_cbfunc ? KW_FLAG_ACK_NOW : 0;
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
	ep_push(ep);
	/* The network thread connects and retries; it finishes partial
	 * writes only while the application is not calling progress. */
	if (!ep->conn || ep->conn->state != KW_CONN_UP)
		kw_wake();
	else if ((ep->tx_cursor || !ep->conn->ops->idle(ep->conn)) && !kw_app_active(kw_now_ms()))
		kw_wake();
}

/* ---- receiving -------------------------------------------------------- */

static int hdr_bad(struct kw_conn *c, const struct kw_hdr *h)
{
	const char *why = kw_hdr_check(h, mca_btl_kawarimi_module.btl_max_send_size +
					  KW_CTRL_MAX_PAYLOAD);
	char s[128];

	if (!why)
		return 0;
	conn_str(c, s, sizeof(s));
	kw_err("bad frame from %s (type %u, length %u): %s; dropping the connection",
	       s, h->type, h->len, why);
	return -1;
}

uint32_t kw_conn_peer_vpid(const struct kw_conn *c)
{
	return c->ep ? c->ep->vpid : UINT32_MAX;
}

uint64_t kw_conn_rx_next(const struct kw_conn *c)
{
	return c->ep ? c->ep->rx_next : 0;
}

struct kw_rfrag *kw_conn_rx_alloc(struct kw_conn *c, const struct kw_hdr *h)
{
	struct kw_rfrag *r;

	if (hdr_bad(c, h))
		return NULL;
	r = kw_rfrag_alloc(h->len);
	if (r)
		r->hdr = *h;
	return r;
}

int kw_conn_hdr_ok(struct kw_conn *c, const struct kw_hdr *h)
{
	return hdr_bad(c, h);
}

static int check_hello(struct kw_hello *h, const struct kw_rfrag *r, struct kw_addrs *addrs,
		       char *err, size_t errlen)
{
	return kw_hello_parse(r->data, r->hdr.len, h, addrs, err, errlen);
}

static int same_pair(const struct kw_cand *a, const struct kw_conn *c)
{
	return a->remote.ip == c->cand.remote.ip && a->remote.fabric == c->cand.remote.fabric &&
	       (!a->local.ip || a->local.ip == c->cand.local.ip);
}

/* Is the connection over the best pair both ends have now? */
static int on_best_path(struct mca_btl_base_endpoint_t *ep)
{
	struct kw_cand cand[KW_MAX_CAND];
	int n = kw_addrs_candidates(&kw.local, &ep->peer_addrs, cand, KW_MAX_CAND);

	return !n || !ep->conn || same_pair(&cand[0], ep->conn);
}

static void conn_up(struct mca_btl_base_endpoint_t *ep, struct kw_conn *c)
{
	char s[128];

	c->state = KW_CONN_UP;
	c->up_ms = kw_now_ms();
	if (kw.app_epfd >= 0) {
		struct epoll_event ev = { .events = EPOLLIN, .data.ptr = c };
		struct pollfd p;

		c->ops->poll_events(c, &p);
		/* Removed again by close(): the descriptor is never shared. */
		epoll_ctl(kw.app_epfd, EPOLL_CTL_ADD, p.fd, &ev);
	}
	c->deadline_ms = 0;
	ep->conn = c;
	c->ep = ep;
	ep->tx_cursor = ep->tx_head;
	ep->draining = ep->fin_sent = ep->fin_rcvd = 0;
	ep->peer_quiesced = 0;
	ep->heal = 0;
	ep->broken_since_ms = 0;
	ep->backoff_ms = 20;
	ep->ncand = ep->cand_idx = 0;
	/* Back on the best pair: the next flap starts probing afresh. A
	 * slower pair keeps the backoff, so a best pair that answers probes
	 * but not connections is not retried every second. */
	if (on_best_path(ep))
		ep->probe_backoff_ms = KW_PROBE_MIN_MS;
	ep->probe_next_ms = c->up_ms + ep->probe_backoff_ms;
	conn_str(c, s, sizeof(s));
	kw_log(1, "peer rank %u: connected over %s (%s)", ep->vpid, s,
	       c->initiator ? "we connected" : "peer connected");
}

static int hello_in(struct kw_conn *c, struct kw_rfrag *r)
{
	struct mca_btl_base_endpoint_t *ep;
	struct kw_addrs addrs;
	struct kw_hello h;
	char err[256], peer[24];
	int status = KW_HELLO_OK;

	if (r->hdr.type != KW_FRAME_HELLO || c->state != KW_CONN_HELLO_WAIT) {
		kw_err("connection from %s sent frame type %u before HELLO; closing it",
		       "peer", r->hdr.type);
		return -EPROTO;
	}
	if (check_hello(&h, r, &addrs, err, sizeof(err))) {
		kw_err("bad HELLO on an incoming connection: %s; closing it", err);
		return -EPROTO;
	}
	if (h.jobid != kw.me.jobid || h.dst_vpid != kw.me.vpid) {
		kw_err("HELLO for job %u rank %u reached job %u rank %u (stale address?); refusing it",
		       h.jobid, h.dst_vpid, kw.me.jobid, kw.me.vpid);
		status = KW_HELLO_UNKNOWN;
	} else if (kw_hello_src_check(&h, kw.job_size, err, sizeof(err))) {
		kw_ip_str(c->cand.remote.ip, peer, sizeof(peer));
		kw_err("HELLO from %s: %s; closing the connection", peer, err);
		return -EPROTO;
	} else if (kw.stop) {
		status = KW_HELLO_GONE;
	} else if (kw.state == KW_QUIESCING || kw.state == KW_QUIESCED) {
		status = KW_HELLO_QUIESCED;
	}
	ep = status == KW_HELLO_OK ? kw_ep_get(h.src_vpid, 1) : NULL;
	if (status == KW_HELLO_OK && !ep)
		status = KW_HELLO_GONE;
	if (ep && ep->conn) {
		struct kw_conn *mine = ep->conn;

		if (mine->state != KW_CONN_UP && kw.me.vpid < h.src_vpid) {
			status = KW_HELLO_RACE;
		} else {
			kw_ep_conn_broken(mine, mine->state == KW_CONN_UP ?
					  "the peer opened a new connection" :
					  "the peer's simultaneous connection wins");
		}
	}
	if (status != KW_HELLO_OK) {
		kw_log(5, "refusing connection from rank %u: %s", h.src_vpid,
		       hello_status_str(status));
		c->state = KW_CONN_REJECTING;
		c->deadline_ms = kw_now_ms() + kw.connect_timeout_ms;
		if (send_hello(c, KW_FRAME_HELLO_ACK, h.src_vpid, status, 0) < 0)
			c->close_me = 1;
		return 0;
	}
	ep->peer_addrs = addrs;
	ep->have_addrs = 1;
	ep->peer_gone = 0;
	if (ep_ack(ep, h.rx_next))
		return -EPROTO;
	conn_up(ep, c);
	if (send_hello(c, KW_FRAME_HELLO_ACK, ep->vpid, KW_HELLO_OK, ep->rx_next) < 0)
		return -EIO;
	acked_now(ep);
	return 0;
}

static void retry_later(struct mca_btl_base_endpoint_t *ep, int ms)
{
	ep->next_attempt_ms = kw_now_ms() + ms;
}

static int backoff(struct mca_btl_base_endpoint_t *ep)
{
	int ms = ep->backoff_ms;

	ep->backoff_ms = ep->backoff_ms * 2 > 1000 ? 1000 : ep->backoff_ms * 2;
	return ms;
}

static int hello_ack_in(struct mca_btl_base_endpoint_t *ep, struct kw_conn *c, struct kw_rfrag *r)
{
	struct kw_addrs addrs;
	struct kw_hello h;
	char err[256];

	if (c->state != KW_CONN_HELLO_SENT) {
		kw_err("peer rank %u sent HELLO_ACK on an established connection; dropping it",
		       ep->vpid);
		return -EPROTO;
	}
	if (check_hello(&h, r, &addrs, err, sizeof(err))) {
		kw_err("bad HELLO_ACK from peer rank %u: %s; dropping the connection", ep->vpid, err);
		return -EPROTO;
	}
	if (h.status != KW_HELLO_OK) {
		kw_log(5, "peer rank %u refused the connection: %s", ep->vpid,
		       hello_status_str(h.status));
		ep_detach(ep);
		switch (h.status) {
		case KW_HELLO_QUIESCED:
			/* Alive but suspended: the wait does not count as an outage. */
			ep->peer_quiesced = 1;
			ep->broken_since_ms = 0;
			retry_later(ep, backoff(ep));
			break;
		case KW_HELLO_RACE:
			retry_later(ep, 200);
			break;
		case KW_HELLO_GONE:
			ep->peer_gone = 1;
			break;
		default:
			if (!ep->broken_since_ms)
				ep->broken_since_ms = kw_now_ms();
			retry_later(ep, backoff(ep));
		}
		return 0;
	}
	if (h.src_vpid != ep->vpid || h.jobid != kw.me.jobid) {
		kw_err("connection meant for rank %u reached job %u rank %u; dropping it",
		       ep->vpid, h.jobid, h.src_vpid);
		return -EPROTO;
	}
	ep->peer_addrs = addrs;
	ep->have_addrs = 1;
	if (ep_ack(ep, h.rx_next))
		return -EPROTO;
	conn_up(ep, c);
	if (!ep->upgraded && !on_best_path(ep)) {
		/* The answer shows a better pair than the one we knew about
		 * (the peer regained its fast fabric): move there now. */
		ep->upgraded = 1;
		kw_log(1, "peer rank %u: a better path is available, switching", ep->vpid);
		ep_detach(ep);
		ep->next_attempt_ms = kw_now_ms();
	}
	return 0;
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

int kw_conn_frame_in(struct kw_conn *c, const struct kw_hdr *h, struct kw_rfrag *r)
{
	struct mca_btl_base_endpoint_t *ep = c->ep;
	int rc = 0;

	if (c->close_me)
		goto drop;
	if (!ep) {
		if (c->state == KW_CONN_REJECTING)
			goto drop;
		if (!r) {
			kw_err("incoming connection sent frame type %u before HELLO; closing it",
			       h->type);
			return -EPROTO;
		}
		rc = hello_in(c, r);
		goto drop;
	}
	if (h->type == KW_FRAME_HELLO_ACK) {
		if (!r)
			return -EPROTO;
		rc = hello_ack_in(ep, c, r);
		goto drop;
	}
	if (c->state != KW_CONN_UP) {
		kw_err("peer rank %u sent frame type %u before the handshake ended", ep->vpid,
		       h->type);
		rc = -EPROTO;
		goto drop;
	}
	if (ep_ack(ep, h->ack)) {
		rc = -EPROTO;
		goto drop;
	}
	switch (h->type) {
	case KW_FRAME_DATA:
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
		ep->rx_next++;
		ep->rx_unacked++;
		if (h->flags & KW_FLAG_ACK_NOW)
			ep->ack_urgent = 1;
		else if (!ep->ack_due_ms)
			ep->ack_due_ms = kw_now_ms() + KW_ACK_DELAY_MS;
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
		ep_detach(ep);
		break;
	default:
		break;
	}
drop:
	if (r)
		kw_rfrag_free(r);
	return rc;
}

/* ---- connection attempts and timers --------------------------------- */

static void attempt(struct mca_btl_base_endpoint_t *ep, uint64_t now)
{
	struct kw_conn *c;
	char l[24], rs[24];
	int err = 0;

	if (ep->cand_idx >= ep->ncand) {
		ep->ncand = kw_addrs_candidates(&kw.local, &ep->peer_addrs, ep->cand, KW_MAX_CAND);
		ep->cand_idx = 0;
		if (!ep->ncand) {
			kw_log(1, "peer rank %u: no local address can reach it (peer has %u "
			       "addresses, we have %u); retrying", ep->vpid,
			       ep->peer_addrs.n, kw.local.n);
			if (!ep->broken_since_ms)
				ep->broken_since_ms = now;
			retry_later(ep, backoff(ep));
			return;
		}
	}
	kw_ip_str(ep->cand[ep->cand_idx].local.ip, l, sizeof(l));
	kw_ip_str(ep->cand[ep->cand_idx].remote.ip, rs, sizeof(rs));
	c = kw_path_for_fabric(ep->cand[ep->cand_idx].remote.fabric)->connect(
		&ep->cand[ep->cand_idx], &err);
	if (!c) {
		kw_log(5, "peer rank %u: connect %s -> %s failed: %s", ep->vpid, l, rs,
		       strerror(err));
		ep->cand_idx++;
		if (!ep->broken_since_ms)
			ep->broken_since_ms = now;
		if (ep->cand_idx >= ep->ncand)
			retry_later(ep, backoff(ep));
		return;
	}
	kw_log(5, "peer rank %u: connecting %s -> %s", ep->vpid, l, rs);
	c->ep = ep;
	c->deadline_ms = now + kw.connect_timeout_ms;
	c->next = kw.conns;
	kw.conns = c;
	ep->conn = c;
}

/* A connection attempt of ours failed: try the next address pair. */
static void attempt_failed(struct kw_conn *c, const char *why)
{
	struct mca_btl_base_endpoint_t *ep = c->ep;
	char s[128];

	conn_str(c, s, sizeof(s));
	kw_log(5, "peer rank %u: connection %s failed: %s", ep->vpid, s, why);
	ep->conn = NULL;
	c->ep = NULL;
	c->close_me = 1;
	ep->cand_idx++;
	if (!ep->broken_since_ms)
		ep->broken_since_ms = kw_now_ms();
	if (ep->cand_idx >= ep->ncand)
		retry_later(ep, backoff(ep));
	else
		ep->next_attempt_ms = kw_now_ms();
}

void kw_conn_service(struct kw_conn *c, uint64_t now)
{
	if (c->close_me)
		return;
	if (c->state == KW_CONN_CONNECTING) {
		int rc = c->ops->connect_done(c);

		if (rc == -EINPROGRESS) {
			if (now >= c->deadline_ms)
				attempt_failed(c, "connect timed out (btl_kawarimi_connect_timeout_ms)");
			return;
		}
		if (rc) {
			attempt_failed(c, strerror(-rc));
			return;
		}
		c->state = KW_CONN_HELLO_SENT;
		rc = send_hello(c, KW_FRAME_HELLO, c->ep->vpid, KW_HELLO_OK, c->ep->rx_next);
		if (rc < 0 && rc != -EAGAIN)
			attempt_failed(c, strerror(-rc));
		return;
	}
	if (c->state == KW_CONN_REJECTING && c->ops->idle(c)) {
		c->close_me = 1;
		return;
	}
	if (c->state != KW_CONN_UP && c->deadline_ms && now >= c->deadline_ms) {
		if (c->ep && c->initiator)
			attempt_failed(c, "no HELLO_ACK in time (btl_kawarimi_connect_timeout_ms)");
		else
			kw_ep_conn_broken(c, "no HELLO in time");
	}
}

void kw_accept_conn(struct kw_conn *c, uint64_t now)
{
	c->deadline_ms = now + kw.connect_timeout_ms;
	c->next = kw.conns;
	kw.conns = c;
}

/* How long the peer has been unreachable.  Callers pass the time their
 * round started, and a break found later in that round stamps
 * broken_since_ms with a fresher clock: count that as no time at all
 * instead of letting the unsigned difference wrap to "forever". */
static uint64_t outage_ms(const struct mca_btl_base_endpoint_t *ep, uint64_t now)
{
	if (!ep->broken_since_ms || now <= ep->broken_since_ms)
		return 0;
	return now - ep->broken_since_ms;
}

static void give_up(struct mca_btl_base_endpoint_t *ep, uint64_t now)
{
	char r[24] = "?";

	if (ep->peer_addrs.n)
		kw_ip_str(ep->peer_addrs.a[0].ip, r, sizeof(r));
	ep->failed = 1;
	kw.error_pending = 1;
	kw_err("giving up on peer rank %u (address %s, port %u): no connection for %llu ms "
	       "with %llu frames unacknowledged (btl_kawarimi_reconnect_timeout_ms=%d)",
	       ep->vpid, r, ep->peer_addrs.port,
	       (unsigned long long)outage_ms(ep, now),
	       (unsigned long long)(ep->tx_seq - ep->tx_head->hdr.seq), kw.reconnect_timeout_ms);
	kw_app_notify();
}

/* ---- returning to the best pair ------------------------------------- */

static void probe_stop(struct mca_btl_base_endpoint_t *ep)
{
	if (ep->probe_fd >= 0)
		close(ep->probe_fd);
	ep->probe_fd = -1;
}

static void probe_start(struct mca_btl_base_endpoint_t *ep, uint64_t now)
{
	struct kw_cand cand[KW_MAX_CAND];
	int err;

	if (!kw_addrs_candidates(&kw.local, &ep->peer_addrs, cand, KW_MAX_CAND))
		return;
	/* Always TCP to the peer's listener (the one path with a probe),
	 * whatever the pair's fabric: a verbs pair's addresses are IP
	 * addresses on the HCA (IPoIB, RoCE), so this also tells when the
	 * HCA's network is back. */
	ep->probe_fd = kw_path_probe(cand[0].local.ip, cand[0].remote.ip, ep->peer_addrs.port,
				     &err);
	ep->probe_deadline_ms = now + kw.connect_timeout_ms;
}

/* 1: connected, 0: still trying, -1: failed. */
static int probe_result(struct mca_btl_base_endpoint_t *ep, uint64_t now)
{
	struct pollfd p = { .fd = ep->probe_fd, .events = POLLOUT };

	if (poll(&p, 1, 0) <= 0)
		return now < ep->probe_deadline_ms ? 0 : -1;
	return kw_path_probe_result(ep->probe_fd) ? -1 : 1;
}

/*
 * A running connection off the best pair (the fast fabric flapped and the
 * reconnect found only the slow one) probes the best pair with backoff and
 * moves back once it answers. Only the lower rank of a pair probes, so the
 * two ends do not race each other's switch. Quiesce and resume choose
 * paths themselves.
 */
static void probe_service(struct mca_btl_base_endpoint_t *ep, uint64_t now)
{
	char l[24], r[24];
	int rc;

	if (kw.state != KW_RUNNING || ep->draining || kw.me.vpid > ep->vpid ||
	    ep->conn->state != KW_CONN_UP || on_best_path(ep)) {
		probe_stop(ep);
		return;
	}
	if (ep->probe_fd < 0) {
		if (now < ep->probe_next_ms)
			return;
		probe_start(ep, now);
		/* Could not even start (the local address is gone): a failed
		 * probe like any other. */
		rc = ep->probe_fd < 0 ? -1 : 0;
	} else {
		rc = probe_result(ep, now);
	}
	if (!rc)
		return;
	probe_stop(ep);
	ep->probe_backoff_ms = ep->probe_backoff_ms * 2 > KW_PROBE_MAX_MS ?
			       KW_PROBE_MAX_MS : ep->probe_backoff_ms * 2;
	ep->probe_next_ms = now + ep->probe_backoff_ms;
	if (rc < 0)
		return;
	kw_ip_str(ep->conn->cand.local.ip, l, sizeof(l));
	kw_ip_str(ep->conn->cand.remote.ip, r, sizeof(r));
	kw_log(1, "peer rank %u: the best pair answers again; moving there from %s -> %s",
	       ep->vpid, l, r);
	ep_detach(ep);
	ep->ncand = ep->cand_idx = 0;
	ep->next_attempt_ms = now;
}

void kw_ep_service(struct mca_btl_base_endpoint_t *ep, uint64_t now)
{
	if (ep->failed)
		return;
	if (ep->conn) {
		ep_push(ep);
		if (ep->conn)
			probe_service(ep, now);
		return;
	}
	probe_stop(ep);
	if (kw.state == KW_QUIESCING || kw.state == KW_QUIESCED || ep->peer_gone)
		return;
	if (!kw_ep_has_data(ep) && !ep->want_up && !ep->heal)
		return;
	if (outage_ms(ep, now) > (uint64_t)kw.reconnect_timeout_ms) {
		if (kw_ep_has_data(ep)) {
			give_up(ep, now);
			return;
		}
		if (ep->heal && !ep->want_up) {
			/* Nothing of ours is lost: the next send tries again. */
			kw_log(1, "peer rank %u: no reconnection for %d ms; nothing to resend, "
			       "waiting for traffic", ep->vpid, kw.reconnect_timeout_ms);
			ep->heal = 0;
			ep->broken_since_ms = 0;
			return;
		}
	}
	if (now < ep->next_attempt_ms || !ep->have_addrs)
		return;
	attempt(ep, now);
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

/* Used by quiesce/resume/status (btl_kawarimi_ctl.c). */
int kw_ep_on_best_path(struct mca_btl_base_endpoint_t *ep)
{
	return on_best_path(ep);
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
	send_ctl(c, KW_FRAME_BYE, ep->rx_next, NULL, 0);
}
