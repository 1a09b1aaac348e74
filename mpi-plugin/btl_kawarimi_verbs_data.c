/*
 * kawarimi BTL, verbs path: moving frames. SENDs with immediate data
 * (credits handed back, READs reported done) from the registered send
 * ring, a frame larger than one buffer pipelined in buffer-sized chunks;
 * the receiver reassembles chunks in order and hands frames to the
 * reliability layer. Completions drive it all (progress).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <string.h>

#include "btl_kawarimi_verbs_priv.h"

static int post_send(struct kwv_conn *v, void *buf, uint32_t len, uint64_t wr_id, int credit_only,
		     int desc)
{
	struct ibv_sge sge = { .addr = (uintptr_t)buf, .length = len, .lkey = v->smr->lkey };
	struct ibv_send_wr wr, *bad;
	uint32_t done = v->rd_owed < KWV_IMM_DONE_MAX ? v->rd_owed : KWV_IMM_DONE_MAX;
	int rc;

	memset(&wr, 0, sizeof(wr));
	wr.wr_id = wr_id;
	wr.opcode = IBV_WR_SEND_WITH_IMM;
	wr.send_flags = IBV_SEND_SIGNALED | (len && len <= v->max_inline ? IBV_SEND_INLINE : 0);
	wr.sg_list = len ? &sge : NULL;
	wr.num_sge = len ? 1 : 0;
	wr.imm_data = htonl(kwv_imm_encode(kwv_credit_take(&v->cr, credit_only), done, desc));
	rc = ibv_post_send(v->id->qp, &wr, &bad);
	if (rc)
		return -rc;
	v->rd_owed -= done;
	v->sq_out++;
	return 0;
}

/* Copies the next chunk of the pending frame into a send slot. */
static uint32_t fill_chunk(struct kwv_conn *v, unsigned char *dst)
{
	uint32_t n = 0;

	while (n < v->bufsize && v->out_idx < v->out_cnt) {
		struct iovec *io = &v->out[v->out_idx];
		size_t k = io->iov_len - v->out_off;

		if (k > v->bufsize - n)
			k = v->bufsize - n;
		memcpy(dst + n, (char *)io->iov_base + v->out_off, k);
		n += (uint32_t)k;
		v->out_off += k;
		if (v->out_off == io->iov_len) {
			v->out_idx++;
			v->out_off = 0;
		}
	}
	v->out_left -= n;
	return n;
}

/* SENDs leave room in the send queue for the READs in flight (one frame
 * is read at a time), so zc_post_reads never finds it full. */
static int sq_room(const struct kwv_conn *v)
{
	return v->sq_out + KWV_ZC_READS_INFLIGHT < v->sq_depth;
}

static int push(struct kwv_conn *v)
{
	int rc;

	if (v->released || !v->id || !v->id->qp)
		return 0;
	while (v->out_left && kwv_credit_can_data(&v->cr) && v->slots_used < v->nsend &&
	       sq_room(v)) {
		uint32_t slot = v->s_head;
		unsigned char *buf = v->sbuf + (size_t)slot * v->bufsize;
		uint32_t n = fill_chunk(v, buf);

		rc = post_send(v, buf, n, slot, 0, v->out_desc);
		if (rc)
			return rc;
		v->out_desc = 0;
		v->s_head = (slot + 1) % v->nsend;
		v->slots_used++;
	}
	/* A credit update when returns are due, or READ completions to
	 * report (btl_kawarimi_verbs_proto.h). */
	if (kwv_credit_want_report(&v->cr, v->rd_owed) && sq_room(v))
		return post_send(v, NULL, 0, KWV_WRID_CREDIT, 1, 0);
	return 0;
}

int kw_verbs_data_send(struct kw_conn *c, const struct iovec *iov, int cnt)
{
	struct kwv_conn *v = vc(c);
	size_t payload = 0;
	int i, j;

	if (v->released)
		return -ENODEV;
	if (v->out_left)
		return -EAGAIN;
	if (cnt > 4)
		return -EINVAL;
	for (i = 1; i < cnt; i++)
		payload += iov[i].iov_len;
	v->out_idx = 0;
	v->out_off = 0;
	c->frames_out++;
	if (payload && !kw_verbs_rdma_prepare(v, iov, cnt, payload))
		return push(v);
	v->out_left = 0;
	for (i = 0, j = 0; i < cnt; i++)
		if (iov[i].iov_len) {
			v->out[j++] = iov[i];
			v->out_left += iov[i].iov_len;
		}
	v->out_cnt = j;
	if (payload > v->bufsize)
		kwv.piped_sent++;
	return push(v);
}

int kw_verbs_data_idle(const struct kw_conn *c)
{
	const struct kwv_conn *v = (const struct kwv_conn *)c;

	/* Posted but not completed is not idle: an RC send completes once the
	 * peer's HCA has the data, and the drain must not close the QP (and
	 * drop a FIN) before that. */
	return v->out_left == 0 && v->sq_out == 0;
}

void kw_verbs_data_poll_events(const struct kw_conn *c, struct pollfd *p)
{
	p->fd = ((const struct kwv_conn *)c)->epfd;
	p->events = POLLIN;
}

/* One received chunk: the start of a frame (header first) or the next
 * piece of the frame being reassembled. *done gets a complete frame. */
static int rx_chunk(struct kwv_conn *v, const unsigned char *data, uint32_t len,
		    struct kw_rfrag **done, struct kw_hdr *h, int *ctl)
{
	struct kw_rfrag *r = v->cur;

	*done = NULL;
	*ctl = 0;
	if (!r) {
		if (len < sizeof(*h))
			return -EPROTO;
		memcpy(h, data, sizeof(*h));
		if (!h->len && h->type != KW_FRAME_DATA) {
			/* control frame (a zero-length DATA frame still needs
			 * a fragment for ob1) */
			if (len != sizeof(*h) || kw_conn_hdr_ok(&v->c, h))
				return -EPROTO;
			*ctl = 1;
			return 0;
		}
		r = kw_conn_rx_alloc(&v->c, h);
		if (!r)
			return -EPROTO;
		data += sizeof(*h);
		len -= sizeof(*h);
		r->filled = 0;
		v->cur = r;
	}
	if (r->filled + len > r->hdr.len)
		return -EPROTO;
	kw_rfrag_fill(r, data, len);
	if (r->filled == r->hdr.len) {
		*done = r;
		*h = r->hdr;
		v->cur = NULL;
	}
	return 0;
}

/* A message that arrived in receive buffer slot: credits and READ
 * reports first, then the frame data. */
static int rx_msg(struct kwv_conn *v, uint32_t slot, uint32_t byte_len, uint32_t imm)
{
	uint32_t done = kwv_imm_done(imm);
	struct kw_rfrag *r = NULL;
	struct kw_hdr h;
	int rc = 0, ctl = 0;

	if (done > v->zo_n) {
		kw_err("verbs: rank %u reports %u zero-copy frames read, %u were outstanding; "
		       "dropping the connection", kwv_peer_vpid(v), done, v->zo_n);
		return -EPROTO;
	}
	kw_verbs_rdma_out_release(v, done);
	if (imm & KWV_IMM_DESC)
		rc = kw_verbs_rdma_start(v, v->rbuf + (size_t)slot * v->bufsize, byte_len);
	else if (byte_len)
		rc = rx_chunk(v, v->rbuf + (size_t)slot * v->bufsize, byte_len, &r, &h, &ctl);
	if (rc)
		return rc;
	if (kw_verbs_cm_post_recv(v, slot)) {
		if (r)
			kw_rfrag_free(r);
		return -EIO;
	}
	if (kwv_credit_received(&v->cr, kwv_imm_credits(imm), v->peer_posted)) {
		kw_err("verbs: rank %u returned %u credits with %u already held of %u posted; "
		       "dropping the connection", kwv_peer_vpid(v), kwv_imm_credits(imm),
		       v->cr.credits, v->peer_posted);
		if (r)
			kw_rfrag_free(r);
		return -EPROTO;
	}
	if (r || ctl) {
		v->c.frames_in++;
		return kw_conn_frame_in(&v->c, &h, r);
	}
	return 0;
}

/* Messages held back while a READ was in flight, in arrival order, until
 * the next descriptor starts READs again. */
static int rx_held(struct kwv_conn *v)
{
	while (v->held_n && !v->zr && !v->released && !v->c.close_me) {
		struct kwv_held m = v->held[v->held_head];
		int rc;

		v->held_head = (v->held_head + 1) % v->nrecv;
		v->held_n--;
		rc = rx_msg(v, m.slot, m.len, m.imm);
		if (rc)
			return rc;
	}
	return 0;
}

static int on_recv(struct kwv_conn *v, const struct ibv_wc *wc)
{
	uint32_t slot = (uint32_t)wc->wr_id;

	if (!(wc->wc_flags & IBV_WC_WITH_IMM) || slot >= v->nrecv)
		return -EPROTO;
	if (v->zr || v->held_n) {
		/* at most nrecv receives can be outstanding */
		if (v->held_n >= v->nrecv)
			return -EPROTO;
		v->held[(v->held_head + v->held_n) % v->nrecv] = (struct kwv_held) {
			.slot = slot, .len = wc->byte_len, .imm = ntohl(wc->imm_data),
		};
		v->held_n++;
		return 0;
	}
	return rx_msg(v, slot, wc->byte_len, ntohl(wc->imm_data));
}

/* A READ completed; once its frame is delivered, the messages held back
 * while the READs ran go next (rx_held does nothing while they still run). */
static int read_done(struct kwv_conn *v)
{
	int rc = kw_verbs_rdma_read_done(v);

	return rc ? rc : rx_held(v);
}

static int drain_cq(struct kwv_conn *v)
{
	struct ibv_wc wc[16];
	int n, i, rc;

	while ((n = ibv_poll_cq(v->cq, 16, wc)) > 0) {
		for (i = 0; i < n; i++) {
			if (wc[i].status != IBV_WC_SUCCESS) {
				kw_log(wc[i].status == IBV_WC_WR_FLUSH_ERR ? 5 : 0,
				       "verbs: work request failed: %s (vendor error 0x%x)",
				       kwv_lib.wc_status_str(wc[i].status), wc[i].vendor_err);
				return -EIO;
			}
			if (wc[i].opcode & IBV_WC_RECV) {
				rc = on_recv(v, &wc[i]);
			} else {
				v->sq_out--;
				rc = 0;
				if (wc[i].wr_id == KWV_WRID_READ)
					rc = read_done(v);
				else if (wc[i].wr_id != KWV_WRID_CREDIT)
					v->slots_used--;
			}
			if (rc)
				return rc;
			if (v->released || v->c.close_me)
				return 0;
		}
	}
	return n < 0 ? -EIO : 0;
}

int kw_verbs_data_progress(struct kw_conn *c, short revents)
{
	struct kwv_conn *v = vc(c);
	struct ibv_cq *cq;
	void *ctx;
	int rc;

	(void)revents;
	if (v->released)
		return -ENODEV;
	if (!kwv_lib.get_cq_event(v->cc, &cq, &ctx)) {
		kwv_lib.ack_cq_events(cq, 1);
		if (ibv_req_notify_cq(v->cq, 0))
			return -EIO;
	}
	/* Completions first: data that arrived before a disconnect counts. */
	rc = drain_cq(v);
	if (rc || v->released || c->close_me)
		return rc;
	rc = push(v);
	if (rc)
		return rc;
	return kw_verbs_cm_events(v);
}
