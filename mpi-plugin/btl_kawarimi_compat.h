/*
 * kawarimi BTL: every difference between the Open MPI versions we build
 * against, in one place. One source tree serves
 *   - Open MPI 4.1 (Debian 12: 4.1.4), BTL API 3.1.0, BTL_VERSION 310;
 *   - Open MPI 5.0 (Debian 13: 5.0.7), BTL API 3.3.0, BTL_VERSION 330.
 * The rest of the component includes this header instead of the modex
 * headers and delivers received frames through kw_compat_recv().
 *
 * What changed from 3.1 to 3.3, as far as this component is concerned:
 *   - the receive callback takes (btl, const mca_btl_base_receive_descriptor_t *)
 *     carrying endpoint, segments, count, tag and cbdata, instead of
 *     (btl, tag, descriptor, cbdata). The endpoint must be filled in:
 *     osc/rdma's active-message RDMA emulation (btl_base_am_rdma.c, what
 *     one-sided MPI runs on over a send-only BTL in 5.x, where osc/pt2pt
 *     is gone) answers a request through it;
 *   - the opal pmix layer is gone: the modex macros live in
 *     opal/mca/pmix/pmix-internal.h and take PMIx's own scope constants
 *     (PMIX_GLOBAL instead of OPAL_PMIX_GLOBAL); the build needs
 *     libpmix's headers and -lpmix (mpi-plugin/meson.build);
 *   - btl_ft_event is gone and btl_cuda_* became btl_accelerator_*: this
 *     component sets neither, so nothing here;
 *   - new btl_flags (PUT_AM, GET_AM, ...): set by the AM RDMA emulation
 *     itself on a send-only BTL like this one, so nothing here either.
 */
#ifndef BTL_KAWARIMI_COMPAT_H
#define BTL_KAWARIMI_COMPAT_H

#include "opal_config.h"
#include "opal/mca/btl/btl.h"

#if !defined(BTL_VERSION) || (BTL_VERSION != 310 && BTL_VERSION != 330)
#error "kawarimi builds against BTL API 3.1.0 (Open MPI 4.1) or 3.3.0 (Open MPI 5.0) only"
#endif

#if BTL_VERSION >= 330
#include "opal/mca/pmix/pmix-internal.h"
#define KW_MODEX_SCOPE PMIX_GLOBAL
#else
#include "opal/mca/pmix/pmix.h"
#define KW_MODEX_SCOPE OPAL_PMIX_GLOBAL
#endif

/* The number of ranks in our job, as PMIx gives it to every process
 * (the key ompi_rte_init reads for MPI_COMM_WORLD's size); 0 when the
 * runtime does not say. */
static inline uint32_t kw_compat_job_size(opal_process_name_t me)
{
	opal_process_name_t job = { .jobid = me.jobid, .vpid = OPAL_VPID_WILDCARD };
	uint32_t size = 0, *p = &size;
	int rc;

#if BTL_VERSION >= 330
	OPAL_MODEX_RECV_VALUE_OPTIONAL(rc, PMIX_JOB_SIZE, &job, &p, PMIX_UINT32);
#else
	OPAL_MODEX_RECV_VALUE_OPTIONAL(rc, OPAL_PMIX_JOB_SIZE, &job, &p, OPAL_UINT32);
#endif
	return rc == OPAL_SUCCESS ? size : 0;
}

/* Hands one received segment to the callback ob1 (or the AM RDMA
 * emulation) registered for its tag. The descriptor lives on the stack:
 * under both APIs it is valid only during the callback. */
static inline void kw_compat_recv(mca_btl_base_module_t *btl,
				  struct mca_btl_base_endpoint_t *ep, mca_btl_base_tag_t tag,
				  const mca_btl_base_segment_t *seg)
{
	const mca_btl_active_message_callback_t *reg =
		mca_btl_base_active_message_trigger + tag;

	if (!reg->cbfunc)
		return;
#if BTL_VERSION >= 330
	{
		const mca_btl_base_receive_descriptor_t des = {
			.endpoint = ep,
			.des_segments = seg,
			.des_segment_count = 1,
			.tag = tag,
			.cbdata = reg->cbdata,
		};

		reg->cbfunc(btl, &des);
	}
#else
	{
		/* 4.1's descriptor is an opal object; its callbacks read only
		 * the segments (a zeroed, unconstructed one is what the
		 * component passed before). */
		mca_btl_base_descriptor_t des = {
			.des_segments = (mca_btl_base_segment_t *)seg,
			.des_segment_count = 1,
		};

		(void)ep;
		reg->cbfunc(btl, tag, &des, reg->cbdata);
	}
#endif
}

#endif
