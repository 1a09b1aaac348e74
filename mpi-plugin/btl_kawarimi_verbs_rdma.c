/*
 * kawarimi BTL, verbs path: zero-copy frames (btl_kawarimi_verbs_rdma_min).
 * The sender registers the payload and sends a descriptor through the data
 * path; the receiver registers the frame's receive fragment and RDMA-READs
 * the payload into it, then reports the READs done so the sender drops its
 * registrations before the frame is acknowledged.
 */
#include <errno.h>
#include <string.h>

#include "btl_kawarimi_verbs_priv.h"

/* Drops the registrations of the oldest n zero-copy frames sent. */
void kw_verbs_rdma_out_release(struct kwv_conn *v, uint32_t n)
{
	while (n-- && v->zo_n) {
		int i;

		for (i = 0; i < v->zo[v->zo_head].n; i++)
			kwv_lib.dereg_mr(v->zo[v->zo_head].mr[i]);
		v->zo[v->zo_head].n = 0;
		v->zo_head = (v->zo_head + 1) % KWV_ZC_OUT_MAX;
		v->zo_n--;
	}
}

/*
 * Zero-copy send: registers the payload after the header (small leading
 * pieces, such as ob1's header, go inline in the descriptor) and queues
 * the descriptor as the connection's next message. The memory stays valid
 * until the frame is acknowledged (path contract), and the peer reports
 * the READs done before it acknowledges the frame, so the registrations
 * are dropped in time (kw_verbs_rdma_out_release). Returns 0, or -1 to send the frame
 * by pipelined copy instead.
 */
int kw_verbs_rdma_prepare(struct kwv_conn *v, const struct iovec *iov, int cnt, size_t payload)
{
	unsigned char inl[KWV_ZC_INLINE_MAX];
	struct kwv_zc z;
	struct kw_hdr h;
	int i, n, slot;

	if (!v->zc || !kwv.rdma_min || payload < (size_t)kwv.rdma_min ||
	    v->zo_n >= KWV_ZC_OUT_MAX || cnt < 2 || iov[0].iov_len != sizeof(h))
		return -1;
	memcpy(&h, iov[0].iov_base, sizeof(h));
	/* A GET_REPLY's pad (under 64 bytes) goes inline, the user's buffer
	 * by READ. */
	if ((h.type != KW_FRAME_DATA && h.type != KW_FRAME_GET_REPLY) || h.len != payload)
		return -1;
	memset(&z, 0, sizeof(z));
	slot = (int)((v->zo_head + v->zo_n) % KWV_ZC_OUT_MAX);
	v->zo[slot].n = 0;
	for (i = 1; i < cnt; i++) {
		if (!iov[i].iov_len)
			continue;
		if (!z.nseg && z.inline_len + iov[i].iov_len <= KWV_ZC_INLINE_MAX) {
			memcpy(inl + z.inline_len, iov[i].iov_base, iov[i].iov_len);
			z.inline_len += (uint32_t)iov[i].iov_len;
			continue;
		}
		if (z.nseg == KWV_ZC_MAX_SEGS || iov[i].iov_len > UINT32_MAX)
			goto fallback;
		{
			struct ibv_mr *mr = kwv_lib.reg_mr(v->id->pd, iov[i].iov_base, iov[i].iov_len,
						     IBV_ACCESS_REMOTE_READ);

			if (!mr) {
				if (!kwv.zc_fallbacks)
					kw_log(1, "verbs: cannot register %zu bytes for a "
					       "zero-copy send (%s); such frames go by pipelined "
					       "copy", iov[i].iov_len, strerror(errno));
				goto fallback;
			}
			v->zo[slot].mr[v->zo[slot].n++] = mr;
			z.seg[z.nseg].addr = (uintptr_t)iov[i].iov_base;
			z.seg[z.nseg].rkey = mr->rkey;
			z.seg[z.nseg].len = (uint32_t)iov[i].iov_len;
			z.nseg++;
		}
	}
	if (!z.nseg)
		goto fallback;
	z.inline_data = inl;
	memcpy(v->zdesc, &h, sizeof(h));
	n = kwv_zc_encode(&z, v->zdesc + sizeof(h), sizeof(v->zdesc) - sizeof(h));
	if (n < 0 || sizeof(h) + (size_t)n > v->bufsize)
		goto fallback;
	v->zo_n++;
	v->out[0].iov_base = v->zdesc;
	v->out[0].iov_len = sizeof(h) + (size_t)n;
	v->out_cnt = 1;
	v->out_left = v->out[0].iov_len;
	v->out_desc = 1;
	kwv.zc_sent++;
	return 0;
fallback:
	kwv.zc_fallbacks++;
	for (i = 0; i < v->zo[slot].n; i++)
		kwv_lib.dereg_mr(v->zo[slot].mr[i]);
	v->zo[slot].n = 0;
	return -1;
}

/* Posts the next pieces of the frame being read (up to
 * KWV_ZC_READS_INFLIGHT in flight). */
static int zc_post_reads(struct kwv_conn *v)
{
	while (v->zr_reads < KWV_ZC_READS_INFLIGHT && v->zr_seg < v->zr_desc.nseg) {
		const struct kwv_zc_seg *zs = &v->zr_desc.seg[v->zr_seg];
		uint64_t n = zs->len - v->zr_seg_off;
		struct ibv_sge sge;
		struct ibv_send_wr wr, *bad;
		int rc;

		if (n > v->bufsize)
			n = v->bufsize;
		sge.addr = (uintptr_t)(v->zr->data + v->zr_off);
		sge.length = (uint32_t)n;
		sge.lkey = v->zr_mr->lkey;
		memset(&wr, 0, sizeof(wr));
		wr.wr_id = KWV_WRID_READ;
		wr.opcode = IBV_WR_RDMA_READ;
		wr.send_flags = IBV_SEND_SIGNALED;
		wr.sg_list = &sge;
		wr.num_sge = 1;
		wr.wr.rdma.remote_addr = zs->addr + v->zr_seg_off;
		wr.wr.rdma.rkey = zs->rkey;
		rc = ibv_post_send(v->id->qp, &wr, &bad);
		if (rc) {
			kw_err("verbs: posting a READ of %llu bytes from rank %u: %s",
			       (unsigned long long)n, kwv_peer_vpid(v), strerror(rc));
			/* kw_verbs_cm_close frees zr, kw_verbs_cm_release its MR */
			return -rc;
		}
		v->sq_out++;
		v->zr_reads++;
		v->zr_off += n;
		v->zr_seg_off += n;
		if (v->zr_seg_off == zs->len) {
			v->zr_seg++;
			v->zr_seg_off = 0;
		}
	}
	return 0;
}

/*
 * A zero-copy descriptor arrived: the frame's receive fragment is
 * registered and READ from the sender's memory; the frame is delivered
 * when the READs complete (kw_verbs_rdma_read_done), and until then later messages
 * of this connection wait (held[]).
 */
int kw_verbs_rdma_start(struct kwv_conn *v, const unsigned char *data, uint32_t len)
{
	struct kw_rfrag *r;
	struct kwv_zc z;
	struct kw_hdr h;
	char err[256];
	int rc;

	if (v->cur || !v->zc || len < sizeof(h)) {
		kw_err("verbs: unexpected zero-copy descriptor from rank %u (%s); dropping the "
		       "connection", kwv_peer_vpid(v), v->cur ? "in the middle of a frame" :
		       !v->zc ? "zero-copy was not negotiated" : "shorter than a frame header");
		return -EPROTO;
	}
	memcpy(&h, data, sizeof(h));
	if (kwv_zc_decode(data + sizeof(h), len - (uint32_t)sizeof(h), h.len, &z, err,
			  sizeof(err))) {
		kw_err("verbs: bad message from rank %u: %s; dropping the connection",
		       kwv_peer_vpid(v), err);
		return -EPROTO;
	}
	if (h.type != KW_FRAME_DATA && h.type != KW_FRAME_GET_REPLY) {
		kw_err("verbs: zero-copy descriptor from rank %u for a frame of type %u (only "
		       "DATA and GET_REPLY frames go zero-copy); dropping the connection",
		       kwv_peer_vpid(v), h.type);
		return -EPROTO;
	}
	/* Read whole into a fragment: a GET_REPLY is then copied to its
	 * destination past the pad (kw_rdma_reply_in). */
	r = kw_conn_rx_alloc_whole(&v->c, &h);
	if (!r)
		return -EPROTO;
	memcpy(r->data, z.inline_data, z.inline_len);
	r->filled = h.len;
	v->zr_mr = kwv_lib.reg_mr(v->id->pd, r->data, h.len, IBV_ACCESS_LOCAL_WRITE);
	if (!v->zr_mr) {
		kw_err("verbs: cannot register %u bytes to READ a frame from rank %u: %s",
		       h.len, kwv_peer_vpid(v), strerror(errno));
		kw_rfrag_free(r);
		return -ENOMEM;
	}
	v->zr = r;
	v->zr_desc = z;
	v->zr_desc.inline_data = NULL;	/* its receive buffer is posted again */
	v->zr_seg = 0;
	v->zr_seg_off = 0;
	v->zr_off = z.inline_len;
	rc = zc_post_reads(v);
	if (!rc && kwv.fault_read > 0 && ++kwv.zc_started == (uint64_t)kwv.fault_read) {
		kw_log(1, "verbs: fault injection (btl_kawarimi_verbs_fault_read): breaking the "
		       "connection to rank %u with a READ in flight", kwv_peer_vpid(v));
		return -ECONNABORTED;
	}
	return rc;
}

int kw_verbs_rdma_read_done(struct kwv_conn *v)
{
	struct kw_rfrag *r = v->zr;
	struct kw_hdr h;

	if (!r || !v->zr_reads)
		return -EPROTO;
	v->zr_reads--;
	if (v->zr_seg < v->zr_desc.nseg)
		return zc_post_reads(v);
	if (v->zr_reads)
		return 0;
	kwv_lib.dereg_mr(v->zr_mr);
	v->zr_mr = NULL;
	v->zr = NULL;
	/* Reported before anything this frame causes goes back (the ack
	 * included), so the sender drops its registration first. */
	v->rd_owed++;
	kwv.zc_rcvd++;
	kwv.zc_bytes_rcvd += r->hdr.len;
	h = r->hdr;
	v->c.frames_in++;
	return kw_conn_frame_in(&v->c, &h, r);
}
