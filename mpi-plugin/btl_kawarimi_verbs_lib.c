/*
 * kawarimi BTL, verbs path: librdmacm and libibverbs, loaded per fabric
 * epoch.
 *
 * Quiesce must leave no /dev/infiniband/uverbs* descriptor in the process,
 * or the HCA unplug never completes. librdmacm keeps a verbs context open
 * for every device an id was ever bound to, for as long as the library is
 * loaded (rdma_get_devices(3)), and has no call to drop it. So the path
 * loads librdmacm and libibverbs into a private link-map namespace
 * (dlmopen LM_ID_NEWLM) for each fabric epoch: quiesce destroys every QP,
 * CQ, MR, CM id and event channel, closes the contexts librdmacm opened
 * (the ids' verbs pointers, recorded as they appear) and unloads the
 * namespace; resume loads a fresh one. That also gives every resume a
 * librdmacm with a fresh device list, which rdma-core 44 needs: a device
 * that failed its first initialisation could stay invisible to that
 * process for good (fixed in later rdma-core). The BTL therefore does
 * not link libibverbs/librdmacm at all and loads on machines without them.
 */
#include <dirent.h>
#include <dlfcn.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "btl_kawarimi_verbs_priv.h"

struct kwv_lib kwv_lib;

struct kwv_sym {
	int cm;
	const char *name;
	size_t off;
};

#define S_CM(f, n) { 1, n, offsetof(struct kwv_lib, f) }
#define S_V(f, n) { 0, n, offsetof(struct kwv_lib, f) }
static const struct kwv_sym syms[] = {
	S_CM(create_event_channel, "rdma_create_event_channel"),
	S_CM(destroy_event_channel, "rdma_destroy_event_channel"),
	S_CM(create_id, "rdma_create_id"),
	S_CM(destroy_id, "rdma_destroy_id"),
	S_CM(bind_addr, "rdma_bind_addr"),
	S_CM(listen, "rdma_listen"),
	S_CM(resolve_addr, "rdma_resolve_addr"),
	S_CM(resolve_route, "rdma_resolve_route"),
	S_CM(connect, "rdma_connect"),
	S_CM(accept, "rdma_accept"),
	S_CM(reject, "rdma_reject"),
	S_CM(disconnect, "rdma_disconnect"),
	S_CM(get_cm_event, "rdma_get_cm_event"),
	S_CM(ack_cm_event, "rdma_ack_cm_event"),
	S_CM(create_qp, "rdma_create_qp"),
	S_CM(destroy_qp, "rdma_destroy_qp"),
	S_CM(migrate_id, "rdma_migrate_id"),
	S_CM(event_str, "rdma_event_str"),
	S_CM(set_option, "rdma_set_option"),
	S_V(get_device_list, "ibv_get_device_list"),
	S_V(free_device_list, "ibv_free_device_list"),
	S_V(get_device_name, "ibv_get_device_name"),
	S_V(open_device, "ibv_open_device"),
	S_V(close_device, "ibv_close_device"),
	S_V(query_device, "ibv_query_device"),
	/* The exported symbol fills the (prefix-compatible) old layout. */
	S_V(query_port, "ibv_query_port"),
	S_V(create_comp_channel, "ibv_create_comp_channel"),
	S_V(destroy_comp_channel, "ibv_destroy_comp_channel"),
	S_V(create_cq, "ibv_create_cq"),
	S_V(destroy_cq, "ibv_destroy_cq"),
	S_V(get_cq_event, "ibv_get_cq_event"),
	S_V(ack_cq_events, "ibv_ack_cq_events"),
	S_V(reg_mr, "ibv_reg_mr"),
	S_V(dereg_mr, "ibv_dereg_mr"),
	S_V(wc_status_str, "ibv_wc_status_str"),
};

int kw_verbs_lib_load(char *err, size_t errlen)
{
	Lmid_t lm;
	size_t i;

	if (kwv_lib.h_cm)
		return 0;
	/* The namespace gets its own libc, which finds the dynamic loader by
	 * soname in the library directories (as on any Debian system; an
	 * image with it only under /lib64 makes this fail, said in the log). */
	kwv_lib.h_cm = dlmopen(LM_ID_NEWLM, "librdmacm.so.1", RTLD_NOW | RTLD_LOCAL);
	if (!kwv_lib.h_cm) {
		snprintf(err, errlen, "cannot load librdmacm.so.1 (install librdmacm1): %s",
			 dlerror());
		return -1;
	}
	if (dlinfo(kwv_lib.h_cm, RTLD_DI_LMID, &lm) ||
	    !(kwv_lib.h_v = dlmopen(lm, "libibverbs.so.1", RTLD_NOW | RTLD_LOCAL))) {
		snprintf(err, errlen, "cannot load libibverbs.so.1 next to librdmacm: %s",
			 dlerror());
		dlclose(kwv_lib.h_cm);
		kwv_lib.h_cm = NULL;
		return -1;
	}
	for (i = 0; i < sizeof(syms) / sizeof(syms[0]); i++) {
		void *p = dlsym(syms[i].cm ? kwv_lib.h_cm : kwv_lib.h_v, syms[i].name);

		if (!p) {
			snprintf(err, errlen, "symbol %s missing from %s (rdma-core too old?)",
				 syms[i].name, syms[i].cm ? "librdmacm" : "libibverbs");
			dlclose(kwv_lib.h_v);
			dlclose(kwv_lib.h_cm);
			memset(&kwv_lib, 0, sizeof(kwv_lib));
			return -1;
		}
		memcpy((char *)&kwv_lib + syms[i].off, &p, sizeof(p));
	}
	kwv.epochs++;
	return 0;
}

/* Counts this process's open /dev/infiniband/uverbs* descriptors. */
int kw_verbs_lib_count_uverbs_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	int n = 0;

	if (!d)
		return -1;
	while ((e = readdir(d))) {
		char p[300], t[PATH_MAX];
		ssize_t l;

		snprintf(p, sizeof(p), "/proc/self/fd/%s", e->d_name);
		l = readlink(p, t, sizeof(t) - 1);
		if (l <= 0)
			continue;
		t[l] = '\0';
		n += !strncmp(t, "/dev/infiniband/uverbs", 22);
	}
	closedir(d);
	return n;
}

void kw_verbs_lib_note_ctx(struct ibv_context *ctx)
{
	int i;

	if (!ctx)
		return;
	for (i = 0; i < kwv.nctx; i++)
		if (kwv.ctx[i] == ctx)
			return;
	if (kwv.nctx < KWV_MAX_CTX)
		kwv.ctx[kwv.nctx++] = ctx;
}

/* The contexts librdmacm opened for our ids, then the namespace itself
 * (never entered again, so its stale pointers to the closed contexts
 * cannot be used). Every id, QP and channel is gone by now. */
void kw_verbs_lib_unload(void)
{
	int i;

	if (!kwv_lib.h_cm)
		return;
	for (i = 0; i < kwv.nctx; i++)
		kwv_lib.close_device(kwv.ctx[i]);
	kwv.nctx = 0;
	dlclose(kwv_lib.h_v);
	dlclose(kwv_lib.h_cm);
	memset(&kwv_lib, 0, sizeof(kwv_lib));
	kwv.nnetdevs = 0;
}
