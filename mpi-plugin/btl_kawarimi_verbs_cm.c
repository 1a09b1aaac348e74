/*
 * kawarimi BTL, verbs path: connection management through rdma_cm. The
 * listener (rdma_cm's TCP port space, the rank's TCP port number), the
 * initiator's address and route resolution and connect, the acceptor's
 * checks, a connection's resources (CQ, QP, registered buffers, posted
 * receives), its events after ESTABLISHED, and closing it. The private
 * data exchanged on connect is btl_kawarimi_verbs_proto.c's.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "btl_kawarimi_verbs_priv.h"

static int set_nonblock(int fd)
{
	int fl = fcntl(fd, F_GETFL);

	return fl < 0 ? -1 : fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

static int epoll_add(int epfd, int fd)
{
	struct epoll_event ev = { .events = EPOLLIN, .data.fd = fd };

	return epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev);
}

int kw_verbs_cm_listen(uint16_t port, char *err, size_t errlen)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(port) };

	kwv.lch = kwv_lib.create_event_channel();
	if (!kwv.lch) {
		snprintf(err, errlen, "rdma_create_event_channel: %s", strerror(errno));
		return -1;
	}
	if (set_nonblock(kwv.lch->fd) ||
	    kwv_lib.create_id(kwv.lch, &kwv.lid, NULL, RDMA_PS_TCP)) {
		snprintf(err, errlen, "rdma_create_id: %s", strerror(errno));
		return -1;
	}
	/* rdma_cm's TCP port space is its own on IB and RoCE: the rank's TCP
	 * port number is free there, and peers need no second port.
	 * The wildcard address, unlike the TCP listeners: at resume this runs
	 * before the interfaces are re-read, and on RoCE a bind to an IP can fail
	 * until the kernel has made that IP's GID (docs/btl.md, "Verbs path"). */
	sa.sin_addr.s_addr = htonl(INADDR_ANY);
	if (kwv_lib.bind_addr(kwv.lid, (struct sockaddr *)&sa) || kwv_lib.listen(kwv.lid, 64)) {
		snprintf(err, errlen, "rdma_cm listen on port %u: %s", port, strerror(errno));
		return -1;
	}
	kwv.port = port;
	return 0;
}

int kw_verbs_cm_post_recv(struct kwv_conn *v, uint32_t slot)
{
	struct ibv_sge sge = {
		.addr = (uintptr_t)(v->rbuf + (size_t)slot * v->bufsize),
		.length = v->bufsize,
		.lkey = v->rmr->lkey,
	};
	struct ibv_recv_wr wr = { .wr_id = slot, .sg_list = &sge, .num_sge = 1 }, *bad;

	return ibv_post_recv(v->id->qp, &wr, &bad);
}

/* CQ, QP, buffers and posted receives on v->id (bound to a device now). */
static int conn_setup(struct kwv_conn *v, char *err, size_t errlen)
{
	struct ibv_qp_init_attr qa;
	size_t rlen = (size_t)v->nrecv * v->bufsize, slen = (size_t)v->nsend * v->bufsize;
	uint32_t i;

	struct ibv_device_attr da;

	kw_verbs_lib_note_ctx(v->id->verbs);
	/* RDMA READs this side issues (zero-copy receive) and serves (zero-copy
	 * send); the device's limits cap it, 0 turns zero-copy off here. */
	v->rd_depth = 0;
	if (!kwv_lib.query_device(v->id->verbs, &da) && da.max_qp_rd_atom > 0 &&
	    da.max_qp_init_rd_atom > 0) {
		v->rd_depth = KWV_RD_DEPTH_MAX;
		if ((uint32_t)da.max_qp_rd_atom < v->rd_depth)
			v->rd_depth = (uint32_t)da.max_qp_rd_atom;
		if ((uint32_t)da.max_qp_init_rd_atom < v->rd_depth)
			v->rd_depth = (uint32_t)da.max_qp_init_rd_atom;
	}
	v->held = calloc(v->nrecv, sizeof(*v->held));
	if (!v->held) {
		snprintf(err, errlen, "no memory for %u receive records", v->nrecv);
		return -1;
	}
	v->cc = kwv_lib.create_comp_channel(v->id->verbs);
	if (!v->cc || set_nonblock(v->cc->fd) || epoll_add(v->epfd, v->cc->fd)) {
		snprintf(err, errlen, "completion channel: %s", strerror(errno));
		return -1;
	}
	/* + the READs in flight */
	v->sq_depth = v->nsend + 8 + KWV_ZC_READS_INFLIGHT;
	v->cq = kwv_lib.create_cq(v->id->verbs, (int)(v->nrecv + v->sq_depth), v, v->cc, 0);
	if (!v->cq || ibv_req_notify_cq(v->cq, 0)) {
		snprintf(err, errlen, "ibv_create_cq(%u): %s", v->nrecv + v->sq_depth,
			 strerror(errno));
		return -1;
	}
	v->rbuf = aligned_alloc(4096, rlen);
	v->sbuf = aligned_alloc(4096, slen);
	if (!v->rbuf || !v->sbuf) {
		snprintf(err, errlen, "no memory for %zu + %zu bytes of buffers", rlen, slen);
		return -1;
	}
	v->rmr = kwv_lib.reg_mr(v->id->pd, v->rbuf, rlen, IBV_ACCESS_LOCAL_WRITE);
	v->smr = kwv_lib.reg_mr(v->id->pd, v->sbuf, slen, IBV_ACCESS_LOCAL_WRITE);
	if (!v->rmr || !v->smr) {
		snprintf(err, errlen, "ibv_reg_mr of %zu bytes: %s", rlen, strerror(errno));
		return -1;
	}
	for (i = 0; i < 2; i++) {
		memset(&qa, 0, sizeof(qa));
		qa.send_cq = qa.recv_cq = v->cq;
		qa.qp_type = IBV_QPT_RC;
		qa.cap.max_send_wr = v->sq_depth;
		qa.cap.max_recv_wr = v->nrecv;
		qa.cap.max_send_sge = qa.cap.max_recv_sge = 1;
		/* Inline sends save a DMA read for headers and acks; not every
		 * device offers them, so retry without. */
		qa.cap.max_inline_data = i ? 0 : 64;
		if (!kwv_lib.create_qp(v->id, v->id->pd, &qa))
			break;
		if (i) {
			snprintf(err, errlen, "rdma_create_qp: %s", strerror(errno));
			return -1;
		}
	}
	v->max_inline = qa.cap.max_inline_data;
	for (i = 0; i < v->nrecv; i++)
		if (kw_verbs_cm_post_recv(v, i)) {
			snprintf(err, errlen, "ibv_post_recv: %s", strerror(errno));
			return -1;
		}
	return 0;
}

void kw_verbs_cm_release(struct kwv_conn *v)
{
	if (v->released)
		return;
	v->released = 1;
	if (v->id && v->id->qp) {
		if (v->established)
			kwv_lib.disconnect(v->id);
		kwv_lib.destroy_qp(v->id);
	}
	if (v->cq)
		kwv_lib.destroy_cq(v->cq);
	if (v->cc)
		kwv_lib.destroy_comp_channel(v->cc);
	if (v->rmr)
		kwv_lib.dereg_mr(v->rmr);
	if (v->smr)
		kwv_lib.dereg_mr(v->smr);
	/* The QP is gone: no READ can touch these any more. */
	kw_verbs_rdma_out_release(v, v->zo_n);
	if (v->zr_mr)
		kwv_lib.dereg_mr(v->zr_mr);
	v->zr_mr = NULL;
	if (v->id)
		kwv_lib.destroy_id(v->id);
	if (v->ch)
		kwv_lib.destroy_event_channel(v->ch);
	v->cq = NULL;
	v->cc = NULL;
	v->rmr = v->smr = NULL;
	v->id = NULL;
	v->ch = NULL;
}

static struct kwv_conn *conn_new(void)
{
	struct kwv_conn *v = calloc(1, sizeof(*v));

	if (!v)
		return NULL;
	v->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (v->epfd < 0) {
		free(v);
		return NULL;
	}
	v->c.ops = &kw_verbs_path;
	v->bufsize = (uint32_t)kwv.bufsize;
	v->nrecv = (uint32_t)kwv.nrecv;
	v->nsend = (uint32_t)kwv.nsend;
	v->next_live = kwv.live;
	kwv.live = v;
	kwv.nlive++;
	return v;
}

static void fill_cand_addr(struct kw_addr *a, const struct sockaddr *sa)
{
	memset(a, 0, sizeof(*a));
	if (sa && sa->sa_family == AF_INET)
		a->ip = ((const struct sockaddr_in *)sa)->sin_addr.s_addr;
	a->prefixlen = 32;
	a->fabric = KW_FABRIC_VERBS;
}

static void make_pdata(struct kwv_conn *v, enum kwv_pdata_kind kind, uint32_t dst,
		       unsigned reason, unsigned char *buf)
{
	struct kwv_pdata p = {
		.kind = (uint8_t)kind,
		.reason = (uint8_t)reason,
		.jobid = kw.me.jobid,
		.src_vpid = kw.me.vpid,
		.dst_vpid = dst,
		.bufsize = v ? v->bufsize : 0,
		.posted = v ? v->nrecv : 0,
		.rx_next = v ? kw_conn_rx_next(&v->c) : 0,
		.rd_depth = v ? v->rd_depth : 0,
	};

	kwv_pdata_encode(&p, buf, KWV_PDATA_LEN);
}

/* Before the QP reaches RTS (rdma_connect / rdma_accept). */
static void set_ack_timeout(struct rdma_cm_id *id)
{
	uint8_t t = (uint8_t)kwv.ack_timeout;

	if (kwv.ack_timeout > 0 && kwv.ack_timeout < 32 &&
	    kwv_lib.set_option(id, RDMA_OPTION_ID, RDMA_OPTION_ID_ACK_TIMEOUT, &t, sizeof(t)))
		kw_log(1, "verbs: cannot set the ACK timeout %d: %s", kwv.ack_timeout,
		       strerror(errno));
}

static void conn_param(struct rdma_conn_param *cp, const unsigned char *pd)
{
	memset(cp, 0, sizeof(*cp));
	cp->private_data = pd;
	cp->private_data_len = KWV_PDATA_LEN;
	cp->retry_count = 7;
	/* Credits guarantee a posted receive: an RNR would be a bug, and
	 * breaking the connection (resend over a new one) shows it. */
	cp->rnr_retry_count = 0;
}

void kw_verbs_cm_unlisten(void)
{
	if (kwv.lid)
		kwv_lib.destroy_id(kwv.lid);
	kwv.lid = NULL;
	if (kwv.lch)
		kwv_lib.destroy_event_channel(kwv.lch);
	kwv.lch = NULL;
}

int kw_verbs_cm_listen_fd(void)
{
	return kwv.lch ? kwv.lch->fd : -1;
}

static void reject(struct rdma_cm_id *id, uint32_t src, unsigned reason)
{
	unsigned char pd[KWV_PDATA_LEN];

	make_pdata(NULL, KWV_PD_REJECT, src, reason, pd);
	kwv_lib.reject(id, pd, KWV_PDATA_LEN);
	kwv_lib.destroy_id(id);
}

static struct kw_conn *accept_one(struct rdma_cm_id *id, const struct kwv_pdata *p,
				  uint8_t req_init, uint8_t req_resp)
{
	unsigned char pd[KWV_PDATA_LEN];
	struct rdma_conn_param cp;
	struct kwv_conn *v;
	char err[256];

	if (p->jobid != kw.me.jobid || p->dst_vpid != kw.me.vpid) {
		kw_err("verbs connect request for job %u rank %u reached job %u rank %u (stale "
		       "address?); rejecting it", p->jobid, p->dst_vpid, kw.me.jobid, kw.me.vpid);
		reject(id, p->src_vpid, KWV_REJ_NOT_ME);
		return NULL;
	}
	if (kw.state == KW_QUIESCING || kw.state == KW_QUIESCED) {
		reject(id, p->src_vpid, KWV_REJ_QUIESCED);
		return NULL;
	}
	v = conn_new();
	if (!v) {
		reject(id, p->src_vpid, KWV_REJ_RESOURCES);
		return NULL;
	}
	v->ch = kwv_lib.create_event_channel();
	if (!v->ch || set_nonblock(v->ch->fd) || epoll_add(v->epfd, v->ch->fd) ||
	    kwv_lib.migrate_id(id, v->ch)) {
		snprintf(err, sizeof(err), "event channel: %s", strerror(errno));
		goto fail;
	}
	v->id = id;
	id->context = v;
	v->peer_posted = p->posted;
	if (p->bufsize != v->bufsize) {
		/* Chunks are sized by the sender's buffers: ours must be as big. */
		snprintf(err, sizeof(err), "peer rank %u uses %u-byte verbs buffers, we use %u "
			 "(set btl_kawarimi_verbs_buf_size alike on every rank)", p->src_vpid,
			 p->bufsize, v->bufsize);
		goto fail;
	}
	if (conn_setup(v, err, sizeof(err)))
		goto fail;
	kwv_credit_init(&v->cr, p->posted, v->nrecv);
	make_pdata(v, KWV_PD_ACCEPT, p->src_vpid, 0, pd);
	set_ack_timeout(id);
	conn_param(&cp, pd);
	/* READs: we serve at most what the initiator issues and issue at most
	 * what it serves. */
	cp.responder_resources = (uint8_t)(v->rd_depth < req_init ? v->rd_depth : req_init);
	cp.initiator_depth = (uint8_t)(v->rd_depth < req_resp ? v->rd_depth : req_resp);
	v->zc = p->rd_depth && cp.responder_resources && cp.initiator_depth;
	if (kwv_lib.accept(id, &cp)) {
		snprintf(err, sizeof(err), "rdma_accept: %s", strerror(errno));
		goto fail;
	}
	fill_cand_addr(&v->c.cand.local, rdma_get_local_addr(id));
	fill_cand_addr(&v->c.cand.remote, rdma_get_peer_addr(id));
	v->c.state = KW_CONN_HELLO_WAIT;
	kw_log(5, "verbs: accepted a connection from rank %u (peer rx_next %llu, %u credits)",
	       p->src_vpid, (unsigned long long)p->rx_next, p->posted);
	return &v->c;
fail:
	kw_err("verbs: cannot accept the connection from rank %u: %s", p->src_vpid, err);
	if (v->id) {
		unsigned char rp[KWV_PDATA_LEN];

		make_pdata(NULL, KWV_PD_REJECT, p->src_vpid, KWV_REJ_RESOURCES, rp);
		kwv_lib.reject(v->id, rp, KWV_PDATA_LEN);
	} else {
		kwv_lib.reject(id, NULL, 0);
		kwv_lib.destroy_id(id);
	}
	v->c.ops->close(&v->c);
	return NULL;
}

struct kw_conn *kw_verbs_cm_accept(void)
{
	struct rdma_cm_event *ev;

	if (!kwv.lch)
		return NULL;
	while (!kwv_lib.get_cm_event(kwv.lch, &ev)) {
		struct rdma_cm_id *id = ev->id;
		enum rdma_cm_event_type type = ev->event;
		struct kwv_pdata p;
		uint8_t req_init, req_resp;
		char err[256];
		int bad;

		if (type != RDMA_CM_EVENT_CONNECT_REQUEST) {
			kw_log(5, "verbs listener: %s", kwv_lib.event_str(type));
			kwv_lib.ack_cm_event(ev);
			continue;
		}
		bad = kwv_pdata_decode(ev->param.conn.private_data, ev->param.conn.private_data_len,
				       KWV_PD_CONNECT, &p, err, sizeof(err));
		req_init = ev->param.conn.initiator_depth;
		req_resp = ev->param.conn.responder_resources;
		kwv_lib.ack_cm_event(ev);
		if (bad) {
			kw_err("verbs: connect request refused: %s", err);
			reject(id, 0, KWV_REJ_BAD);
			continue;
		}
		return accept_one(id, &p, req_init, req_resp);
	}
	return NULL;
}

struct kw_conn *kw_verbs_cm_connect(const struct kw_cand *cand, int *err)
{
	struct sockaddr_in src = { .sin_family = AF_INET }, dst = { .sin_family = AF_INET };
	struct kwv_conn *v;

	if (!kwv.loaded) {
		*err = ENETDOWN;
		return NULL;
	}
	v = conn_new();
	if (!v) {
		*err = ENOMEM;
		return NULL;
	}
	v->ch = kwv_lib.create_event_channel();
	if (!v->ch || set_nonblock(v->ch->fd) || epoll_add(v->epfd, v->ch->fd) ||
	    kwv_lib.create_id(v->ch, &v->id, v, RDMA_PS_TCP)) {
		*err = errno ? errno : EIO;
		v->c.ops->close(&v->c);
		return NULL;
	}
	/* Bind the source: the connection must leave over the chosen device. */
	src.sin_addr.s_addr = cand->local.ip;
	dst.sin_addr.s_addr = cand->remote.ip;
	dst.sin_port = htons(cand->port);
	if (kwv_lib.resolve_addr(v->id, cand->local.ip ? (struct sockaddr *)&src : NULL,
			   (struct sockaddr *)&dst, kwv.addr_timeout_ms)) {
		*err = errno ? errno : EIO;
		v->c.ops->close(&v->c);
		return NULL;
	}
	v->c.cand = *cand;
	v->c.state = KW_CONN_CONNECTING;
	v->c.initiator = 1;
	return &v->c;
}

static int cm_error(enum rdma_cm_event_type t, int status)
{
	switch (t) {
	case RDMA_CM_EVENT_REJECTED: return -ECONNREFUSED;
	case RDMA_CM_EVENT_UNREACHABLE: return -EHOSTUNREACH;
	case RDMA_CM_EVENT_ADDR_ERROR:
	case RDMA_CM_EVENT_ROUTE_ERROR: return -EADDRNOTAVAIL;
	case RDMA_CM_EVENT_DEVICE_REMOVAL: return -ENODEV;
	case RDMA_CM_EVENT_DISCONNECTED: return -ECONNRESET;
	default: return status < 0 ? status : -EIO;
	}
}

/* Initiator events up to ESTABLISHED. */
static int connect_event(struct kwv_conn *v, struct rdma_cm_event *ev)
{
	unsigned char pd[KWV_PDATA_LEN];
	struct rdma_conn_param cp;
	struct kwv_pdata p;
	char err[256];

	switch (ev->event) {
	case RDMA_CM_EVENT_ADDR_RESOLVED:
		return kwv_lib.resolve_route(v->id, kwv.addr_timeout_ms) ? -errno : -EINPROGRESS;
	case RDMA_CM_EVENT_ROUTE_RESOLVED:
		if (conn_setup(v, err, sizeof(err))) {
			kw_err("verbs: connection to rank %u: %s",
			       v->c.ep ? kw_conn_peer_vpid(&v->c) : 0, err);
			return -ENOMEM;
		}
		make_pdata(v, KWV_PD_CONNECT, kw_conn_peer_vpid(&v->c), 0, pd);
		set_ack_timeout(v->id);
		conn_param(&cp, pd);
		cp.responder_resources = cp.initiator_depth = (uint8_t)v->rd_depth;
		return kwv_lib.connect(v->id, &cp) ? -errno : -EINPROGRESS;
	case RDMA_CM_EVENT_ESTABLISHED:
		if (kwv_pdata_decode(ev->param.conn.private_data, ev->param.conn.private_data_len,
				     KWV_PD_ACCEPT, &p, err, sizeof(err))) {
			kw_err("verbs: accept from rank %u: %s",
			       v->c.ep ? kw_conn_peer_vpid(&v->c) : 0, err);
			return -EPROTO;
		}
		if (p.bufsize != v->bufsize) {
			kw_err("verbs: peer rank %u uses %u-byte buffers, we use %u (set "
			       "btl_kawarimi_verbs_buf_size alike on every rank)", p.src_vpid,
			       p.bufsize, v->bufsize);
			return -EPROTO;
		}
		v->peer_posted = p.posted;
		kwv_credit_init(&v->cr, p.posted, v->nrecv);
		v->established = 1;
		/* The acceptor answered with min(its, ours) both ways. */
		v->zc = v->rd_depth && p.rd_depth;
		kw_log(5, "verbs: connected to rank %u (its rx_next %llu, %u credits, inline %u, "
		       "zero-copy %s)", p.src_vpid, (unsigned long long)p.rx_next, p.posted,
		       v->max_inline, v->zc ? "on" : "off");
		return 0;
	case RDMA_CM_EVENT_REJECTED:
		if (ev->param.conn.private_data_len &&
		    !kwv_pdata_decode(ev->param.conn.private_data, ev->param.conn.private_data_len,
				      KWV_PD_ACCEPT, &p, err, sizeof(err)) &&
		    p.kind == KWV_PD_REJECT)
			kw_log(5, "verbs: rank %u rejected the connection: %s", p.src_vpid,
			       kwv_reject_str(p.reason));
		return -ECONNREFUSED;
	default:
		kw_log(5, "verbs: connect: %s (status %d)", kwv_lib.event_str(ev->event), ev->status);
		return cm_error(ev->event, ev->status);
	}
}

int kw_verbs_cm_connect_done(struct kw_conn *c)
{
	struct kwv_conn *v = vc(c);
	struct rdma_cm_event *ev;
	int rc = -EINPROGRESS;

	if (v->released)
		return -ENODEV;
	while (rc == -EINPROGRESS && !kwv_lib.get_cm_event(v->ch, &ev)) {
		rc = connect_event(v, ev);
		kwv_lib.ack_cm_event(ev);
	}
	return rc;
}

int kw_verbs_cm_events(struct kwv_conn *v)
{
	struct rdma_cm_event *ev;

	while (v->ch && !kwv_lib.get_cm_event(v->ch, &ev)) {
		enum rdma_cm_event_type t = ev->event;
		int st = ev->status;

		kwv_lib.ack_cm_event(ev);
		if (t == RDMA_CM_EVENT_ESTABLISHED) {
			v->established = 1;
			continue;
		}
		if (t == RDMA_CM_EVENT_TIMEWAIT_EXIT)
			continue;
		kw_log(5, "verbs: connection event %s (status %d)", kwv_lib.event_str(t), st);
		return cm_error(t, st);
	}
	return 0;
}

void kw_verbs_cm_close(struct kw_conn *c)
{
	struct kwv_conn *v = vc(c), **pp;

	for (pp = &kwv.live; *pp; pp = &(*pp)->next_live)
		if (*pp == v) {
			*pp = v->next_live;
			kwv.nlive--;
			break;
		}
	if (v->zr || v->zo_n)
		kw_log(1, "verbs: connection to rank %u closed with zero-copy frames in flight "
		       "(%s%u sent, not reported read); the reliability layer resends them",
		       kwv_peer_vpid(v), v->zr ? "one being read, " : "", v->zo_n);
	if (kwv_lib.h_cm)
		kw_verbs_cm_release(v);
	if (v->epfd >= 0)
		close(v->epfd);
	if (v->cur)
		kw_rfrag_free(v->cur);
	if (v->zr)
		kw_rfrag_free(v->zr);	/* its READs died with the QP */
	free(v->held);
	free(v->rbuf);
	free(v->sbuf);
	free(v);
}
