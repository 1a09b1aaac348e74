/*
 * kawarimi BTL: the verbs path. One RC QP per connection, set up with
 * librdmacm; frames move as SENDs with immediate data (the credits handed
 * back) into receive buffers pre-posted from a registered pool; a frame
 * larger than one buffer is pipelined through the registered send ring in
 * buffer-sized chunks and reassembled in order by the receiver (RC keeps
 * order). Credits (btl_kawarimi_verbs_proto.h) keep every SEND matched by a
 * posted receive, so the QP never sees RNR. Large frames may go zero-copy
 * instead (btl_kawarimi_verbs_rdma.c).
 *
 * This file: the MCA parameters, bringing the path up per fabric epoch
 * (init, resume) and down (quiesce, finalize), the addresses it
 * advertises, its state for the agent's replies, and the ops table. The
 * other files are listed in btl_kawarimi_verbs_priv.h.
 *
 * Everything is fd-driven: one epoll fd per connection holds its CM event
 * channel and its CQ completion channel, and is what the network thread
 * polls. All functions run with kw.lock held (path contract).
 */
#include <string.h>

#include "opal/mca/base/mca_base_var.h"

#include "btl_kawarimi_verbs_priv.h"

struct kwv_state kwv = {
	.enable = 1,
	.bufsize = 32768,
	.nrecv = 32,
	.nsend = 32,
	.port_wait_ms = 10000,
	.addr_timeout_ms = 2000,
	.ack_timeout = 14,
	.rdma_min = 0,	/* measured: the pipelined copy is faster on the lab */
	.uverbs_after_quiesce = -1,
};

/* Drops everything this epoch holds: connections, the listener, then the
 * library namespace (btl_kawarimi_verbs_lib.c says why). */
static void epoch_end(void)
{
	struct kwv_conn *v;

	for (v = kwv.live; v; v = v->next_live)
		kw_verbs_cm_release(v);
	kw_verbs_cm_unlisten();
	kw_verbs_lib_unload();
}

/* Loads the library, finds an ACTIVE port (waiting up to wait_ms) and
 * listens. Leaves the path off (and nothing open) on any failure. */
static void bring_up(uint16_t port, int wait_ms, const char *when)
{
	uint64_t t0 = kw_now_ms();
	char err[256];

	kwv.loaded = 0;
	kwv.waited_ms = 0;
	kwv.device[0] = '\0';
	if (!kwv.enable) {
		snprintf(kwv.why_off, sizeof(kwv.why_off), "disabled (btl_kawarimi_verbs=0)");
		return;
	}
	if (!kw_verbs_device_any() && wait_ms <= 0) {
		snprintf(kwv.why_off, sizeof(kwv.why_off), "no RDMA device in /sys/class/infiniband");
		kw_log(1, "%s: verbs path off: %s", when, kwv.why_off);
		return;
	}
	if (kw_verbs_lib_load(err, sizeof(err))) {
		snprintf(kwv.why_off, sizeof(kwv.why_off), "%.250s", err);
		kw_log(1, "%s: verbs path off: %s", when, err);
		return;
	}
	/* The first librdmacm call comes only after libibverbs shows an
	 * ACTIVE port (see btl_kawarimi_verbs_lib.c). */
	if (!kw_verbs_device_wait_active(wait_ms)) {
		snprintf(kwv.why_off, sizeof(kwv.why_off), "no RDMA port ACTIVE after %lld ms",
			 (long long)kwv.waited_ms);
		kw_log(1, "%s: verbs path off: %s", when, kwv.why_off);
		epoch_end();
		return;
	}
	if (kw_verbs_cm_listen(port, err, sizeof(err))) {
		snprintf(kwv.why_off, sizeof(kwv.why_off), "%.250s", err);
		kw_log(0, "%s: verbs path off: %s", when, err);
		epoch_end();
		return;
	}
	kwv.loaded = 1;
	kwv.why_off[0] = '\0';
	kwv.setup_ms = (int64_t)(kw_now_ms() - t0);
	kw_log(1, "%s: verbs path up on %s port %d (%d netdevs, first %s), rdma_cm port %u, "
	       "port wait %lld ms, setup %lld ms", when, kwv.device, kwv.devport, kwv.nnetdevs,
	       kwv.nnetdevs ? kwv.netdevs[0] : "-", port, (long long)kwv.waited_ms,
	       (long long)kwv.setup_ms);
}

static void reg(const char *name, const char *help, int *storage)
{
	(void)mca_base_component_var_register(&kw.super.btl_version, name, help,
					      MCA_BASE_VAR_TYPE_INT, NULL, 0, 0,
					      OPAL_INFO_LVL_5, MCA_BASE_VAR_SCOPE_READONLY,
					      storage);
}

static void v_register(void)
{
	reg("verbs", "Use the verbs path (RC QPs through librdmacm) to peers that have an RDMA "
	    "address both ends can reach; 0: TCP only", &kwv.enable);
	reg("verbs_buf_size", "Bytes per registered receive/send buffer of the verbs path; "
	    "larger frames are pipelined in chunks of this size", &kwv.bufsize);
	reg("verbs_recv_bufs", "Receive buffers pre-posted per verbs connection (the peer's "
	    "initial credits)", &kwv.nrecv);
	reg("verbs_send_bufs", "Registered send buffers per verbs connection", &kwv.nsend);
	reg("verbs_port_wait_ms", "Longest wait at resume for an RDMA port to become ACTIVE "
	    "before the verbs path is given up for this epoch (the agent's link-timeout-ms is "
	    "used when shorter)", &kwv.port_wait_ms);
	reg("verbs_addr_timeout_ms", "rdma_resolve_addr/rdma_resolve_route timeout",
	    &kwv.addr_timeout_ms);
	reg("verbs_ack_timeout", "RC local ACK timeout exponent (4.096 us * 2^N) before a "
	    "packet is sent again; rdma_cm's default (about 1 s and more) turns every lost "
	    "packet on a lossy RoCE link into a stall. 0: keep rdma_cm's", &kwv.ack_timeout);
	reg("verbs_rdma_min", "Frames whose payload is at least this many bytes go zero-copy "
	    "over the verbs path: the sender registers the payload memory and sends a "
	    "descriptor, the receiver RDMA-READs it into the receive fragment. Smaller "
	    "frames are copied through the registered send ring (pipelined copy). 0: never "
	    "zero-copy", &kwv.rdma_min);
	(void)mca_base_component_var_register(&kw.super.btl_version, "verbs_fault_read",
					      "Testing only: break the connection right after "
					      "posting the READs of the Nth zero-copy frame this "
					      "process receives, once (tests/verbs/lab-verbs.sh); "
					      "0: never",
					      MCA_BASE_VAR_TYPE_INT, NULL, 0, 0, OPAL_INFO_LVL_9,
					      MCA_BASE_VAR_SCOPE_READONLY, &kwv.fault_read);
}

static int params_ok(void)
{
	if (kwv.bufsize < 1024 || kwv.bufsize > (1 << 22) || kwv.nrecv < 4 || kwv.nrecv > 4096 ||
	    kwv.nsend < 2 || kwv.nsend > 4096 || kwv.rdma_min < 0) {
		snprintf(kwv.why_off, sizeof(kwv.why_off),
			 "btl_kawarimi_verbs_buf_size=%d (1024..4194304), verbs_recv_bufs=%d "
			 "(4..4096), verbs_send_bufs=%d (2..4096), verbs_rdma_min=%d (>= 0) "
			 "out of range", kwv.bufsize, kwv.nrecv, kwv.nsend, kwv.rdma_min);
		kw_err("verbs path off: %s", kwv.why_off);
		return 0;
	}
	return 1;
}

/* Never fails the BTL: without a device the path stays off (logged at
 * verbose level 1). port is the TCP path's: rdma_cm's port space is its
 * own. */
static int v_listen(struct kw_addrs *local, uint16_t port, char *err, size_t errlen)
{
	(void)local;
	(void)err;
	(void)errlen;
	if (params_ok())
		bring_up(port, 0, "init");
	return 0;
}

/* Waits for an ACTIVE port (up to the agent's link timeout when it
 * reports verbs, capped by btl_kawarimi_verbs_port_wait_ms), then listens
 * again; the addresses are re-read after this. */
static void v_prepare(const struct kw_path_hint *hint, uint16_t tcp_port)
{
	int wait = 0;

	if (hint->reported) {
		wait = hint->link_timeout_ms > 0 && hint->link_timeout_ms < kwv.port_wait_ms ?
		       (int)hint->link_timeout_ms : kwv.port_wait_ms;
	}
	if (kwv.loaded || kwv_lib.h_cm)
		epoch_end();	/* a resume without a quiesce: start afresh */
	if (!params_ok())
		return;
	bring_up(tcp_port, wait, "resume");
}

/* A "verbs" entry for every local address whose interface belongs to an
 * RDMA device with an ACTIVE port, ahead of the TCP ones. */
static void v_add_addrs(struct kw_addrs *local)
{
	struct kw_addr add[KW_MAX_ADDRS];
	int n = 0, i, j;

	/* A list kept from before (its re-read failed) has old entries. */
	for (i = 0, j = 0; i < local->n; i++)
		if (local->a[i].fabric != KW_FABRIC_VERBS)
			local->a[j++] = local->a[i];
	local->n = (uint16_t)j;
	if (!kwv.loaded)
		return;
	for (i = 0; i < local->n; i++)
		for (j = 0; j < kwv.nnetdevs; j++)
			if (local->a[i].fabric == KW_FABRIC_TCP &&
			    !strcmp(local->a[i].ifname, kwv.netdevs[j]) && n < KW_MAX_ADDRS) {
				add[n] = local->a[i];
				add[n].fabric = KW_FABRIC_VERBS;
				add[n].pref = 0;	/* verbs wherever both ends have it */
				n++;
			}
	if (!n) {
		kw_log(1, "verbs device %s is ACTIVE but none of its interfaces has an address "
		       "in btl_kawarimi_if_include: not advertised", kwv.device);
		return;
	}
	if (local->n + n > KW_MAX_ADDRS)
		local->n = (uint16_t)(KW_MAX_ADDRS - n);
	memmove(local->a + n, local->a, local->n * sizeof(local->a[0]));
	memcpy(local->a, add, n * sizeof(add[0]));
	local->n = (uint16_t)(local->n + n);
}

static int v_active(void)
{
	return kwv.loaded;
}

static json_object *v_json(void)
{
	json_object *o = json_object_new_object();

	json_object_object_add(o, "state", json_object_new_string(kwv.loaded ? "up" : "off"));
	if (kwv.loaded) {
		json_object_object_add(o, "device", json_object_new_string(kwv.device));
		json_object_object_add(o, "port", json_object_new_int(kwv.devport));
		json_object_object_add(o, "setup-ms", json_object_new_int64(kwv.setup_ms));
	} else {
		json_object_object_add(o, "reason", json_object_new_string(kwv.why_off));
	}
	json_object_object_add(o, "port-wait-ms", json_object_new_int64(kwv.waited_ms));
	json_object_object_add(o, "uverbs-fds-after-quiesce",
			       json_object_new_int(kwv.uverbs_after_quiesce));
	json_object_object_add(o, "rdma-min", json_object_new_int(kwv.rdma_min));
	json_object_object_add(o, "zero-copy-frames-sent", json_object_new_int64((int64_t)kwv.zc_sent));
	json_object_object_add(o, "zero-copy-frames-received",
			       json_object_new_int64((int64_t)kwv.zc_rcvd));
	json_object_object_add(o, "zero-copy-bytes-received",
			       json_object_new_int64((int64_t)kwv.zc_bytes_rcvd));
	json_object_object_add(o, "zero-copy-fallbacks",
			       json_object_new_int64((int64_t)kwv.zc_fallbacks));
	json_object_object_add(o, "pipelined-frames-sent",
			       json_object_new_int64((int64_t)kwv.piped_sent));
	return o;
}

static void log_zc(const char *when)
{
	kw_log(1, "%s: verbs zero-copy frames sent %llu, received %llu (%llu bytes), fallbacks "
	       "%llu; pipelined frames sent %llu (rdma_min %d)", when,
	       (unsigned long long)kwv.zc_sent, (unsigned long long)kwv.zc_rcvd,
	       (unsigned long long)kwv.zc_bytes_rcvd, (unsigned long long)kwv.zc_fallbacks,
	       (unsigned long long)kwv.piped_sent, kwv.rdma_min);
}

static void v_release(void)
{
	epoch_end();
	kwv.loaded = 0;
	if (kwv.epochs)
		log_zc("finalize");
}

static void v_quiesce(void)
{
	if (kwv.nlive)
		kw_log(1, "quiesce: releasing %d verbs connections still present", kwv.nlive);
	epoch_end();
	kwv.loaded = 0;
	kwv.uverbs_after_quiesce = kw_verbs_lib_count_uverbs_fds();
	kw_log(1, "quiesce: verbs resources released; %d /dev/infiniband/uverbs* descriptors "
	       "left in this process", kwv.uverbs_after_quiesce);
	log_zc("quiesce");
}

static int v_resume(struct kw_addrs *local, char *err, size_t errlen)
{
	/* v_prepare did the work (it needs the agent's hints, before the
	 * addresses are re-read); v_add_addrs publishes the result. */
	(void)local;
	(void)err;
	(void)errlen;
	return 0;
}

const struct kw_path_ops kw_verbs_path = {
	.name = "verbs",
	.fabric = KW_FABRIC_VERBS,
	.register_params = v_register,
	.listen = v_listen,
	.add_addrs = v_add_addrs,
	.release = v_release,
	.quiesce = v_quiesce,
	.prepare = v_prepare,
	.resume = v_resume,
	.active = v_active,
	.json = v_json,
	.listen_fd = kw_verbs_cm_listen_fd,
	.accept = kw_verbs_cm_accept,
	.connect = kw_verbs_cm_connect,
	.connect_done = kw_verbs_cm_connect_done,
	.send = kw_verbs_data_send,
	.idle = kw_verbs_data_idle,
	.poll_events = kw_verbs_data_poll_events,
	.progress = kw_verbs_data_progress,
	.close = kw_verbs_cm_close,
};
