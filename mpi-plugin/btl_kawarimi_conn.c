/*
 * kawarimi BTL: connection management (who connects, over which address
 * pair, what happens when a connection breaks, the HELLO handshake, the
 * return to the best pair), below the reliability layer's view
 * (btl_kawarimi_endpoint.c) and above the paths.
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
	return kw_ep_send_ctl(c, type, rx_next, buf, (uint32_t)n);
}

static int hdr_bad(struct kw_conn *c, const struct kw_hdr *h)
{
	const char *why = kw_hdr_check(h, mca_btl_kawarimi_module.btl_max_send_size +
					  KW_CTRL_MAX_PAYLOAD, mca_btl_kawarimi_module.btl_get_limit);
	char s[128];

	if (!why)
		return 0;
	kw_path_conn_str(c, s, sizeof(s));
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

struct kw_rfrag *kw_conn_rx_alloc_whole(struct kw_conn *c, const struct kw_hdr *h)
{
	struct kw_rfrag *r;

	if (hdr_bad(c, h))
		return NULL;
	r = kw_rfrag_alloc(h->len);
	if (r)
		r->hdr = *h;
	return r;
}

struct kw_rfrag *kw_conn_rx_alloc(struct kw_conn *c, const struct kw_hdr *h)
{
	/* The answer to our oldest GET goes straight to its buffer. */
	unsigned char *dst = c->ep ? kw_rdma_reply_dst(c->ep, h) : NULL;
	struct kw_rfrag *r;

	if (!dst)
		return kw_conn_rx_alloc_whole(c, h);
	if (hdr_bad(c, h) || !(r = kw_rfrag_alloc(0)))
		return NULL;
	r->hdr = *h;
	r->dst = dst;
	r->skip = h->tag;
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
	if (kw_ep_on_best_path(ep))
		ep->probe_backoff_ms = KW_PROBE_MIN_MS;
	ep->probe_next_ms = c->up_ms + ep->probe_backoff_ms;
	kw_path_conn_str(c, s, sizeof(s));
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
	if (kw_ep_ack(ep, h.rx_next))
		return -EPROTO;
	conn_up(ep, c);
	if (send_hello(c, KW_FRAME_HELLO_ACK, ep->vpid, KW_HELLO_OK, ep->rx_next) < 0)
		return -EIO;
	kw_ep_acked_now(ep);
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
		kw_ep_detach(ep);
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
	if (kw_ep_ack(ep, h.rx_next))
		return -EPROTO;
	conn_up(ep, c);
	if (!ep->upgraded && !kw_ep_on_best_path(ep)) {
		/* The answer shows a better pair than the one we knew about
		 * (the peer regained its fast fabric): move there now. */
		ep->upgraded = 1;
		kw_log(1, "peer rank %u: a better path is available, switching", ep->vpid);
		kw_ep_detach(ep);
		ep->next_attempt_ms = kw_now_ms();
	}
	return 0;
}

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

	kw_path_conn_str(c, s, sizeof(s));
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

/* Frames before and during the handshake are ours; the rest go to the
 * reliability layer. */
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
	if (h->type != KW_FRAME_HELLO_ACK)
		return kw_ep_frame_in(ep, c, h, r);
	if (!r)
		return -EPROTO;
	rc = hello_ack_in(ep, c, r);
drop:
	if (r)
		kw_rfrag_free(r);
	return rc;
}

/* The path's I/O on one connection, then what the endpoint does next. */
void kw_conn_progress(struct kw_conn *c, short revents)
{
	int rc = c->ops->progress(c, revents);

	/* A peer closes right after the FIN exchange: finish our side of the
	 * drain before looking at the EOF. */
	if (rc < 0 && c->ep && c->ep->fin_rcvd)
		kw_ep_push_locked(c->ep);
	if (rc < 0 && c->close_me)
		return;
	if (rc < 0)
		kw_ep_conn_broken(c, rc == -ECONNRESET ? "closed by the peer" : strerror(-rc));
	else if (c->ep && c->ep->conn == c)
		kw_ep_push_locked(c->ep);
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

void kw_conn_accept(struct kw_conn *c, uint64_t now)
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
	    ep->conn->state != KW_CONN_UP || kw_ep_on_best_path(ep)) {
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
	kw_ep_detach(ep);
	ep->ncand = ep->cand_idx = 0;
	ep->next_attempt_ms = now;
}

void kw_conn_service_ep(struct mca_btl_base_endpoint_t *ep, uint64_t now)
{
	if (ep->failed)
		return;
	if (ep->conn) {
		kw_ep_push_locked(ep);
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
