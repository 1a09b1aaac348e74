/* kawarimi BTL: the module (what ob1 calls). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "opal/datatype/opal_convertor.h"
#include "opal/class/opal_bitmap.h"

#include "btl_kawarimi_compat.h"
#include "btl_kawarimi_endpoint.h"

static int kw_add_procs(struct mca_btl_base_module_t *btl, size_t nprocs,
			struct opal_proc_t **procs, struct mca_btl_base_endpoint_t **peers,
			opal_bitmap_t *reachable)
{
	opal_proc_t *self = opal_proc_local_get();
	size_t i;

	(void)btl;
	for (i = 0; i < nprocs; i++) {
		struct mca_btl_base_endpoint_t *ep;
		struct kw_addrs addrs;
		uint8_t *blob = NULL;
		size_t size = 0;
		char err[256];
		int rc;

		peers[i] = NULL;
		if (procs[i] == self || 0 == opal_compare_proc(procs[i]->proc_name, self->proc_name))
			continue;
		if (procs[i]->proc_name.jobid != kw.me.jobid) {
			/* MPI_Comm_spawn/connect peers: not supported yet. */
			opal_output_verbose(5, 0, "btl:kawarimi: %s is in another job; "
					    "not supported yet, another BTL must reach it",
					    OPAL_NAME_PRINT(procs[i]->proc_name));
			continue;
		}
		OPAL_MODEX_RECV(rc, &mca_btl_kawarimi_component.super.btl_version,
				&procs[i]->proc_name, &blob, &size);
		if (rc != OPAL_SUCCESS || !blob)
			continue;	/* the peer did not load kawarimi */
		rc = kw_addrs_decode(blob, size, &addrs, err, sizeof(err));
		free(blob);
		if (rc) {
			opal_output(0, "btl:kawarimi: modex data of %s is unusable: %s",
				    OPAL_NAME_PRINT(procs[i]->proc_name), err);
			continue;
		}
		pthread_mutex_lock(&kw.lock);
		ep = kw_ep_get(procs[i]->proc_name.vpid, 1);
		if (ep) {
			ep->proc = procs[i];
			if (!ep->have_addrs) {
				ep->peer_addrs = addrs;
				ep->have_addrs = 1;
			}
		}
		pthread_mutex_unlock(&kw.lock);
		if (!ep)
			return OPAL_ERR_OUT_OF_RESOURCE;
		peers[i] = ep;
		if (reachable)
			opal_bitmap_set_bit(reachable, (int)i);
		opal_output_verbose(10, 0, "btl:kawarimi: add_procs: %s has %u addresses, port %u",
				    OPAL_NAME_PRINT(procs[i]->proc_name), addrs.n, addrs.port);
	}
	return OPAL_SUCCESS;
}

static int kw_del_procs(struct mca_btl_base_module_t *btl, size_t nprocs,
			struct opal_proc_t **procs, struct mca_btl_base_endpoint_t **peers)
{
	/* Endpoints hold sequence state that a later add_procs of the same
	 * peer must find again; they are freed at finalize. */
	(void)btl;
	(void)nprocs;
	(void)procs;
	(void)peers;
	return OPAL_SUCCESS;
}

static int kw_finalize(struct mca_btl_base_module_t *btl)
{
	uint32_t i;

	(void)btl;
	kw_thread_stop();
	kw_ctl_close();
	for (i = 0; i < kw.neps; i++)
		if (kw.eps[i]) {
			kw_ep_free(kw.eps[i]);
			kw.eps[i] = NULL;
		}
	free(kw.eps);
	kw.eps = NULL;
	kw.ack_list = NULL;
	kw.neps = 0;
	kw_path_release_all();
	if (kw.app_epfd >= 0)
		close(kw.app_epfd);
	kw.app_epfd = -1;
	kw_frag_lists_fini();
	kw_rdma_fini();
	return OPAL_SUCCESS;
}

static mca_btl_base_descriptor_t *kw_alloc(struct mca_btl_base_module_t *btl,
					   struct mca_btl_base_endpoint_t *ep, uint8_t order,
					   size_t size, uint32_t flags)
{
	kw_frag_t *f = kw_frag_get(size);

	(void)btl;
	(void)order;
	if (!f)
		return NULL;
	f->ep = ep;
	f->segments[0].seg_len = size;
	f->base.des_flags = flags;
	return &f->base;
}

static int kw_free(struct mca_btl_base_module_t *btl, mca_btl_base_descriptor_t *des)
{
	(void)btl;
	kw_frag_return((kw_frag_t *)des);
	return OPAL_SUCCESS;
}

/*
 * Contiguous data is sent in place (segment 1 points at the user buffer):
 * ob1 keeps that buffer untouched until our completion callback, which only
 * comes with the peer's ack, so a resend after a reconnect can still read
 * it. Non-contiguous data is packed into the fragment.
 */
static mca_btl_base_descriptor_t *kw_prepare_src(struct mca_btl_base_module_t *btl,
						 struct mca_btl_base_endpoint_t *ep,
						 struct opal_convertor_t *conv, uint8_t order,
						 size_t reserve, size_t *size, uint32_t flags)
{
	int inplace = !opal_convertor_need_buffers(conv);
	size_t max_data = *size;
	struct iovec iov;
	uint32_t cnt = 1;
	kw_frag_t *f;

	(void)order;
	if (max_data + reserve > btl->btl_max_send_size)
		max_data = btl->btl_max_send_size - reserve;
	f = kw_frag_get(inplace ? reserve : reserve + max_data);
	if (!f)
		return NULL;
	f->ep = ep;
	f->segments[0].seg_len = reserve;
	if (inplace) {
		iov.iov_base = NULL;
		iov.iov_len = max_data;
		if (opal_convertor_pack(conv, &iov, &cnt, &max_data) < 0)
			goto fail;
		f->segments[1].seg_addr.pval = iov.iov_base;
		f->segments[1].seg_len = max_data;
		f->base.des_segment_count = 2;
	} else {
		iov.iov_base = f->payload + reserve;
		iov.iov_len = max_data;
		if (opal_convertor_pack(conv, &iov, &cnt, &max_data) < 0)
			goto fail;
		f->segments[0].seg_len += max_data;
	}
	f->base.des_flags = flags;
	*size = max_data;
	return &f->base;
fail:
	kw_frag_return(f);
	return NULL;
}

static int kw_send(struct mca_btl_base_module_t *btl, struct mca_btl_base_endpoint_t *ep,
		   struct mca_btl_base_descriptor_t *des, mca_btl_base_tag_t tag)
{
	kw_frag_t *f = (kw_frag_t *)des;

	(void)btl;
	f->hdr.tag = tag;
	pthread_mutex_lock(&kw.lock);
	if (ep->failed) {
		pthread_mutex_unlock(&kw.lock);
		return OPAL_ERR_UNREACH;
	}
	kw_ep_send_locked(ep, f);
	pthread_mutex_unlock(&kw.lock);
	/* Completion (the peer's ack) is reported from progress. */
	return OPAL_SUCCESS;
}

/*
 * Immediate send of a small message: the data is copied into a fragment
 * the BTL keeps until the peer acknowledges it, so ob1 may complete the
 * request now without losing anything across a reconnect.
 */
static int kw_sendi(struct mca_btl_base_module_t *btl, struct mca_btl_base_endpoint_t *ep,
		    struct opal_convertor_t *conv, void *header, size_t header_size,
		    size_t payload_size, uint8_t order, uint32_t flags, mca_btl_base_tag_t tag,
		    mca_btl_base_descriptor_t **descriptor)
{
	size_t total = header_size + payload_size;
	kw_frag_t *f;

	(void)order;
	(void)flags;
	if (descriptor)
		*descriptor = NULL;
	if (total > btl->btl_eager_limit || ep->failed)
		return OPAL_ERR_OUT_OF_RESOURCE;
	f = kw_frag_get(total);
	if (!f)
		return OPAL_ERR_OUT_OF_RESOURCE;
	memcpy(f->payload, header, header_size);
	if (payload_size) {
		struct iovec iov = { f->payload + header_size, payload_size };
		uint32_t cnt = 1;
		size_t max = payload_size;

		if (opal_convertor_pack(conv, &iov, &cnt, &max) < 0 || max != payload_size) {
			kw_frag_return(f);
			return OPAL_ERR_OUT_OF_RESOURCE;
		}
	}
	f->segments[0].seg_len = total;
	f->internal = 1;
	f->base.des_flags = MCA_BTL_DES_FLAGS_BTL_OWNERSHIP;
	f->hdr.tag = tag;
	pthread_mutex_lock(&kw.lock);
	kw_ep_send_locked(ep, f);
	pthread_mutex_unlock(&kw.lock);
	return OPAL_SUCCESS;
}

static int kw_register_error(struct mca_btl_base_module_t *btl,
			     mca_btl_base_module_error_cb_fn_t cb)
{
	(void)btl;
	kw.error_cb = cb;
	return OPAL_SUCCESS;
}

static void kw_dump(struct mca_btl_base_module_t *btl, struct mca_btl_base_endpoint_t *ep,
		    int verbose)
{
	uint32_t i;

	(void)btl;
	(void)verbose;
	pthread_mutex_lock(&kw.lock);
	for (i = 0; i < kw.neps; i++) {
		struct mca_btl_base_endpoint_t *e = kw.eps[i];

		if (!e || (ep && e != ep))
			continue;
		opal_output(0, "btl:kawarimi rank %u -> %u: conn %s, tx_seq %llu, rx_next %llu, "
			    "queued %llu B, dups %llu, reconnects %llu", kw.me.vpid, e->vpid,
			    e->conn ? (e->conn->state == KW_CONN_UP ? "up" : "connecting") : "none",
			    (unsigned long long)e->tx_seq, (unsigned long long)e->rx_next,
			    (unsigned long long)e->tx_bytes_queued,
			    (unsigned long long)e->dup_frames, (unsigned long long)e->reconnects);
	}
	pthread_mutex_unlock(&kw.lock);
}

mca_btl_base_module_t mca_btl_kawarimi_module = {
	.btl_component = &mca_btl_kawarimi_component.super,
	.btl_add_procs = kw_add_procs,
	.btl_del_procs = kw_del_procs,
	.btl_finalize = kw_finalize,
	.btl_alloc = kw_alloc,
	.btl_free = kw_free,
	.btl_prepare_src = kw_prepare_src,
	.btl_send = kw_send,
	.btl_sendi = kw_sendi,
	.btl_register_error = kw_register_error,
	.btl_dump = kw_dump,
};
