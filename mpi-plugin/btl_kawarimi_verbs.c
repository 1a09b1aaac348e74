/*
 * kawarimi BTL: the verbs path. One RC QP per connection, set up with
 * librdmacm; frames move as SENDs with immediate data (the credits handed
 * back) into receive buffers pre-posted from a registered pool; a frame
 * larger than one buffer is pipelined through the registered send ring in
 * buffer-sized chunks and reassembled in order by the receiver (RC keeps
 * order). Credits (btl_kawarimi_verbs_proto.h) keep every SEND matched by a
 * posted receive, so the QP never sees RNR.
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
 * process for good (fixed in rdma-core PR #1314). The BTL therefore does
 * not link libibverbs/librdmacm at all and loads on machines without them.
 *
 * Everything is fd-driven: one epoll fd per connection holds its CM event
 * channel and its CQ completion channel, and is what the network thread
 * polls. All functions run with kw.lock held (path contract).
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <net/if_arp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <infiniband/verbs.h>
#include <rdma/rdma_cma.h>

#include "opal/mca/base/mca_base_var.h"

#include "btl_kawarimi.h"
#include "btl_kawarimi_verbs.h"
#include "btl_kawarimi_verbs_proto.h"

#define KWV_MAX_CTX 8
#define KWV_MAX_NETDEVS 16
#define KWV_WRID_CREDIT UINT64_MAX
#define KWV_WRID_READ (UINT64_MAX - 1)
/* Zero-copy frames a sender may have registered and not yet reported read. */
#define KWV_ZC_OUT_MAX 32
/* A receiver READs a frame in pieces of one buffer, at most this many in
 * flight: rxe paces its own SENDs (64 packets in flight per QP) but sends a
 * READ response in one burst, which the lab's L2 loses the tail of, and a
 * lost tail waits for the ACK timer (docs/btl.md, "Verbs path"). */
#define KWV_ZC_READS_INFLIGHT 4

/* ---- the library, loaded per epoch ------------------------------------ */

struct kwv_lib {
	void *h_cm, *h_v;
	struct rdma_event_channel *(*create_event_channel)(void);
	void (*destroy_event_channel)(struct rdma_event_channel *);
	int (*create_id)(struct rdma_event_channel *, struct rdma_cm_id **, void *,
			 enum rdma_port_space);
	int (*destroy_id)(struct rdma_cm_id *);
	int (*bind_addr)(struct rdma_cm_id *, struct sockaddr *);
	int (*listen)(struct rdma_cm_id *, int);
	int (*resolve_addr)(struct rdma_cm_id *, struct sockaddr *, struct sockaddr *, int);
	int (*resolve_route)(struct rdma_cm_id *, int);
	int (*connect)(struct rdma_cm_id *, struct rdma_conn_param *);
	int (*accept)(struct rdma_cm_id *, struct rdma_conn_param *);
	int (*reject)(struct rdma_cm_id *, const void *, uint8_t);
	int (*disconnect)(struct rdma_cm_id *);
	int (*get_cm_event)(struct rdma_event_channel *, struct rdma_cm_event **);
	int (*ack_cm_event)(struct rdma_cm_event *);
	int (*create_qp)(struct rdma_cm_id *, struct ibv_pd *, struct ibv_qp_init_attr *);
	void (*destroy_qp)(struct rdma_cm_id *);
	int (*migrate_id)(struct rdma_cm_id *, struct rdma_event_channel *);
	const char *(*event_str)(enum rdma_cm_event_type);
	int (*set_option)(struct rdma_cm_id *, int, int, void *, size_t);

	struct ibv_device **(*get_device_list)(int *);
	void (*free_device_list)(struct ibv_device **);
	const char *(*get_device_name)(struct ibv_device *);
	struct ibv_context *(*open_device)(struct ibv_device *);
	int (*close_device)(struct ibv_context *);
	int (*query_device)(struct ibv_context *, struct ibv_device_attr *);
	int (*query_port)(struct ibv_context *, uint8_t, struct ibv_port_attr *);
	struct ibv_comp_channel *(*create_comp_channel)(struct ibv_context *);
	int (*destroy_comp_channel)(struct ibv_comp_channel *);
	struct ibv_cq *(*create_cq)(struct ibv_context *, int, void *,
				    struct ibv_comp_channel *, int);
	int (*destroy_cq)(struct ibv_cq *);
	int (*get_cq_event)(struct ibv_comp_channel *, struct ibv_cq **, void **);
	void (*ack_cq_events)(struct ibv_cq *, unsigned int);
	struct ibv_mr *(*reg_mr)(struct ibv_pd *, void *, size_t, int);
	int (*dereg_mr)(struct ibv_mr *);
	const char *(*wc_status_str)(enum ibv_wc_status);
};

static struct kwv_lib L;

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

/* ---- path state --------------------------------------------------------- */

struct kwv_conn {
	struct kw_conn c;
	struct kwv_conn *next_live;
	struct rdma_event_channel *ch;
	struct rdma_cm_id *id;
	struct ibv_comp_channel *cc;
	struct ibv_cq *cq;
	struct ibv_mr *rmr, *smr;
	unsigned char *rbuf, *sbuf;
	int epfd;
	int established;
	int released;
	uint32_t bufsize, nrecv, nsend, sq_depth, max_inline;
	uint32_t peer_posted;
	struct kwv_credit cr;
	uint32_t s_head, slots_used, sq_out;
	/* the frame being chunked out */
	struct iovec out[4];
	int out_cnt, out_idx;
	size_t out_off, out_left;
	/* the frame being reassembled */
	struct kw_rfrag *cur;
	struct kw_hdr cur_hdr;
	/* zero-copy (docs/btl.md "Verbs path"): negotiated READ depth (0:
	 * off on this connection), the descriptor being sent, and as sender
	 * the registrations of frames the peer has not reported read yet
	 * (FIFO: the peer reads them in order) */
	uint32_t rd_depth;
	int zc;
	int out_desc;
	unsigned char zdesc[sizeof(struct kw_hdr) + KWV_ZC_MAX_LEN];
	struct {
		struct ibv_mr *mr[KWV_ZC_MAX_SEGS];
		int n;
	} zo[KWV_ZC_OUT_MAX];
	uint32_t zo_head, zo_n;
	/* as receiver: the frame whose READs are in flight, its registration,
	 * READs outstanding; messages that arrive meanwhile wait in held[]
	 * (frames reach the reliability layer in order); READ completions
	 * not reported to the sender yet */
	struct kw_rfrag *zr;
	struct ibv_mr *zr_mr;
	uint32_t zr_reads;		/* READs posted, not completed */
	struct kwv_zc zr_desc;		/* what is left to READ */
	uint32_t zr_seg;
	uint64_t zr_seg_off, zr_off;
	struct kwv_held {
		uint32_t slot, len, imm;
	} *held;
	uint32_t held_head, held_n;
	uint32_t rd_owed;
};

static struct {
	/* MCA parameters */
	int enable;
	int bufsize;
	int nrecv;
	int nsend;
	int port_wait_ms;
	int addr_timeout_ms;
	int ack_timeout;
	int rdma_min;
	int fault_read;

	int loaded;
	struct rdma_event_channel *lch;
	struct rdma_cm_id *lid;
	uint16_t port;
	char device[64];
	int devport;
	char netdevs[KWV_MAX_NETDEVS][KW_IFNAME_LEN];
	int nnetdevs;
	struct ibv_context *ctx[KWV_MAX_CTX];	/* contexts librdmacm opened */
	int nctx;
	struct kwv_conn *live;
	int nlive;
	/* timings and counts for the replies */
	int64_t waited_ms, setup_ms;
	int uverbs_after_quiesce;
	char why_off[300];
	uint64_t epochs;
	/* zero-copy counts over the process's life */
	uint64_t zc_sent, zc_rcvd, zc_bytes_rcvd, zc_fallbacks, piped_sent, zc_started;
} V = {
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

static struct kwv_conn *vc(struct kw_conn *c)
{
	return (struct kwv_conn *)c;
}

/* ---- loading --------------------------------------------------------------- */

static int lib_load(char *err, size_t errlen)
{
	Lmid_t lm;
	size_t i;

	if (L.h_cm)
		return 0;
	/* The namespace gets its own libc, which finds the dynamic loader by
	 * soname in the library directories (as on any Debian system; an
	 * image with it only under /lib64 makes this fail, said in the log). */
	L.h_cm = dlmopen(LM_ID_NEWLM, "librdmacm.so.1", RTLD_NOW | RTLD_LOCAL);
	if (!L.h_cm) {
		snprintf(err, errlen, "cannot load librdmacm.so.1 (install librdmacm1): %s",
			 dlerror());
		return -1;
	}
	if (dlinfo(L.h_cm, RTLD_DI_LMID, &lm) ||
	    !(L.h_v = dlmopen(lm, "libibverbs.so.1", RTLD_NOW | RTLD_LOCAL))) {
		snprintf(err, errlen, "cannot load libibverbs.so.1 next to librdmacm: %s",
			 dlerror());
		dlclose(L.h_cm);
		L.h_cm = NULL;
		return -1;
	}
	for (i = 0; i < sizeof(syms) / sizeof(syms[0]); i++) {
		void *p = dlsym(syms[i].cm ? L.h_cm : L.h_v, syms[i].name);

		if (!p) {
			snprintf(err, errlen, "symbol %s missing from %s (rdma-core too old?)",
				 syms[i].name, syms[i].cm ? "librdmacm" : "libibverbs");
			dlclose(L.h_v);
			dlclose(L.h_cm);
			memset(&L, 0, sizeof(L));
			return -1;
		}
		memcpy((char *)&L + syms[i].off, &p, sizeof(p));
	}
	V.epochs++;
	return 0;
}

/* Counts this process's open /dev/infiniband/uverbs* descriptors. */
static int count_uverbs_fds(void)
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

static void note_ctx(struct ibv_context *ctx)
{
	int i;

	if (!ctx)
		return;
	for (i = 0; i < V.nctx; i++)
		if (V.ctx[i] == ctx)
			return;
	if (V.nctx < KWV_MAX_CTX)
		V.ctx[V.nctx++] = ctx;
}

static void conn_release(struct kwv_conn *v);

/* Drops everything: contexts librdmacm opened for our ids, then the
 * namespace itself (never entered again, so its stale pointers to the
 * closed contexts cannot be used). */
static void lib_unload(void)
{
	struct kwv_conn *v;
	int i;

	for (v = V.live; v; v = v->next_live)
		conn_release(v);
	if (V.lid)
		L.destroy_id(V.lid);
	V.lid = NULL;
	if (V.lch)
		L.destroy_event_channel(V.lch);
	V.lch = NULL;
	if (!L.h_cm)
		return;
	for (i = 0; i < V.nctx; i++)
		L.close_device(V.ctx[i]);
	V.nctx = 0;
	dlclose(L.h_v);
	dlclose(L.h_cm);
	memset(&L, 0, sizeof(L));
	V.nnetdevs = 0;
}

/* ---- device discovery ------------------------------------------------------ */

static int read_line(const char *path, char *buf, size_t len)
{
	FILE *f = fopen(path, "re");
	int ok;

	if (!f)
		return -1;
	ok = fgets(buf, (int)len, f) != NULL;
	fclose(f);
	if (!ok)
		return -1;
	buf[strcspn(buf, "\n")] = '\0';
	return 0;
}

static void add_netdev(const char *name)
{
	int i;

	if (!*name || strlen(name) >= KW_IFNAME_LEN)
		return;
	for (i = 0; i < V.nnetdevs; i++)
		if (!strcmp(V.netdevs[i], name))
			return;
	if (V.nnetdevs < KWV_MAX_NETDEVS)
		strcpy(V.netdevs[V.nnetdevs++], name);
}

/*
 * The IP interfaces of an RDMA device port, from sysfs: rxe/siw name their
 * netdev in "parent"; RoCE ports list theirs per GID (gid_attrs/ndevs);
 * IPoIB interfaces (type 32) share the HCA's PCI device.
 */
static void find_netdevs(const char *dev, int port)
{
	char p[PATH_MAX], v[64], devpath[PATH_MAX], np[PATH_MAX];
	struct dirent *e;
	DIR *d;
	int i;

	snprintf(p, sizeof(p), "/sys/class/infiniband/%s/parent", dev);
	if (!read_line(p, v, sizeof(v)))
		add_netdev(v);
	for (i = 0; i < 16; i++) {
		snprintf(p, sizeof(p), "/sys/class/infiniband/%s/ports/%d/gid_attrs/ndevs/%d",
			 dev, port, i);
		if (!read_line(p, v, sizeof(v)))
			add_netdev(v);
	}
	snprintf(p, sizeof(p), "/sys/class/infiniband/%s/device", dev);
	if (!realpath(p, devpath) || !(d = opendir("/sys/class/net")))
		return;
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		snprintf(p, sizeof(p), "/sys/class/net/%s/type", e->d_name);
		if (read_line(p, v, sizeof(v)) || atoi(v) != ARPHRD_INFINIBAND)
			continue;
		snprintf(p, sizeof(p), "/sys/class/net/%s/device", e->d_name);
		if (realpath(p, np) && !strcmp(np, devpath))
			add_netdev(e->d_name);
	}
	closedir(d);
}

static int sysfs_has_devices(void)
{
	DIR *d = opendir("/sys/class/infiniband");
	struct dirent *e;
	int n = 0;

	if (!d)
		return 0;
	while ((e = readdir(d)))
		n += e->d_name[0] != '.';
	closedir(d);
	return n;
}

/*
 * One look through libibverbs (a fresh device list each time, freed):
 * records every device with an ACTIVE port and its netdevs. Each context
 * is closed again at once.
 */
static int scan_active(void)
{
	struct ibv_device **list;
	int n, i, found = 0;

	V.nnetdevs = 0;
	list = L.get_device_list(&n);
	if (!list)
		return 0;
	for (i = 0; i < n; i++) {
		struct ibv_context *ctx = L.open_device(list[i]);
		struct ibv_device_attr da;
		int p;

		if (!ctx)
			continue;
		if (!L.query_device(ctx, &da))
			for (p = 1; p <= da.phys_port_cnt; p++) {
				struct ibv_port_attr pa;

				memset(&pa, 0, sizeof(pa));
				if (L.query_port(ctx, (uint8_t)p, &pa) || pa.state != IBV_PORT_ACTIVE)
					continue;
				if (!found++) {
					snprintf(V.device, sizeof(V.device), "%s",
						 L.get_device_name(list[i]));
					V.devport = p;
				}
				find_netdevs(L.get_device_name(list[i]), p);
			}
		L.close_device(ctx);
	}
	L.free_device_list(list);
	return found;
}

static int wait_active(int wait_ms)
{
	uint64_t start = kw_now_ms();

	for (;;) {
		if (scan_active())
			break;
		if (kw_now_ms() - start >= (uint64_t)wait_ms) {
			V.waited_ms = (int64_t)(kw_now_ms() - start);
			return 0;
		}
		usleep(100000);
	}
	V.waited_ms = (int64_t)(kw_now_ms() - start);
	return 1;
}

static int set_nonblock(int fd)
{
	int fl = fcntl(fd, F_GETFL);

	return fl < 0 ? -1 : fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

static int start_listener(uint16_t port, char *err, size_t errlen)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(port) };

	V.lch = L.create_event_channel();
	if (!V.lch) {
		snprintf(err, errlen, "rdma_create_event_channel: %s", strerror(errno));
		return -1;
	}
	if (set_nonblock(V.lch->fd) ||
	    L.create_id(V.lch, &V.lid, NULL, RDMA_PS_TCP)) {
		snprintf(err, errlen, "rdma_create_id: %s", strerror(errno));
		return -1;
	}
	/* rdma_cm's TCP port space is its own on IB and RoCE: the rank's TCP
	 * port number is free there, and peers need no second port.
	 * The wildcard address, unlike the TCP listeners: at resume this runs
	 * before the interfaces are re-read, and on RoCE a bind to an IP can fail
	 * until the kernel has made that IP's GID (docs/btl.md, "Verbs path"). */
	sa.sin_addr.s_addr = htonl(INADDR_ANY);
	if (L.bind_addr(V.lid, (struct sockaddr *)&sa) || L.listen(V.lid, 64)) {
		snprintf(err, errlen, "rdma_cm listen on port %u: %s", port, strerror(errno));
		return -1;
	}
	V.port = port;
	return 0;
}

/* Loads the library, finds an ACTIVE port (waiting up to wait_ms) and
 * listens. Leaves the path off (and nothing open) on any failure. */
static void bring_up(uint16_t port, int wait_ms, const char *when)
{
	uint64_t t0 = kw_now_ms();
	char err[256];

	V.loaded = 0;
	V.waited_ms = 0;
	V.device[0] = '\0';
	if (!V.enable) {
		snprintf(V.why_off, sizeof(V.why_off), "disabled (btl_kawarimi_verbs=0)");
		return;
	}
	if (!sysfs_has_devices() && wait_ms <= 0) {
		snprintf(V.why_off, sizeof(V.why_off), "no RDMA device in /sys/class/infiniband");
		kw_log(1, "%s: verbs path off: %s", when, V.why_off);
		return;
	}
	if (lib_load(err, sizeof(err))) {
		snprintf(V.why_off, sizeof(V.why_off), "%.250s", err);
		kw_log(1, "%s: verbs path off: %s", when, err);
		return;
	}
	/* The first librdmacm call comes only after libibverbs shows an
	 * ACTIVE port (see the top of this file). */
	if (!wait_active(wait_ms)) {
		snprintf(V.why_off, sizeof(V.why_off), "no RDMA port ACTIVE after %lld ms",
			 (long long)V.waited_ms);
		kw_log(1, "%s: verbs path off: %s", when, V.why_off);
		lib_unload();
		return;
	}
	if (start_listener(port, err, sizeof(err))) {
		snprintf(V.why_off, sizeof(V.why_off), "%.250s", err);
		kw_log(0, "%s: verbs path off: %s", when, err);
		lib_unload();
		return;
	}
	V.loaded = 1;
	V.why_off[0] = '\0';
	V.setup_ms = (int64_t)(kw_now_ms() - t0);
	kw_log(1, "%s: verbs path up on %s port %d (%d netdevs, first %s), rdma_cm port %u, "
	       "port wait %lld ms, setup %lld ms", when, V.device, V.devport, V.nnetdevs,
	       V.nnetdevs ? V.netdevs[0] : "-", port, (long long)V.waited_ms,
	       (long long)V.setup_ms);
}

/* ---- public hooks ---------------------------------------------------------------- */

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
	    "address both ends can reach; 0: TCP only", &V.enable);
	reg("verbs_buf_size", "Bytes per registered receive/send buffer of the verbs path; "
	    "larger frames are pipelined in chunks of this size", &V.bufsize);
	reg("verbs_recv_bufs", "Receive buffers pre-posted per verbs connection (the peer's "
	    "initial credits)", &V.nrecv);
	reg("verbs_send_bufs", "Registered send buffers per verbs connection", &V.nsend);
	reg("verbs_port_wait_ms", "Longest wait at resume for an RDMA port to become ACTIVE "
	    "before the verbs path is given up for this epoch (the agent's link-timeout-ms is "
	    "used when shorter)", &V.port_wait_ms);
	reg("verbs_addr_timeout_ms", "rdma_resolve_addr/rdma_resolve_route timeout",
	    &V.addr_timeout_ms);
	reg("verbs_ack_timeout", "RC local ACK timeout exponent (4.096 us * 2^N) before a "
	    "packet is sent again; rdma_cm's default (about 1 s and more) turns every lost "
	    "packet on a lossy RoCE link into a stall. 0: keep rdma_cm's", &V.ack_timeout);
	reg("verbs_rdma_min", "Frames whose payload is at least this many bytes go zero-copy "
	    "over the verbs path: the sender registers the payload memory and sends a "
	    "descriptor, the receiver RDMA-READs it into the receive fragment. Smaller "
	    "frames are copied through the registered send ring (pipelined copy). 0: never "
	    "zero-copy", &V.rdma_min);
	(void)mca_base_component_var_register(&kw.super.btl_version, "verbs_fault_read",
					      "Testing only: break the connection right after "
					      "posting the READs of the Nth zero-copy frame this "
					      "process receives, once (tests/verbs/lab-verbs.sh); "
					      "0: never",
					      MCA_BASE_VAR_TYPE_INT, NULL, 0, 0, OPAL_INFO_LVL_9,
					      MCA_BASE_VAR_SCOPE_READONLY, &V.fault_read);
}

static int params_ok(void)
{
	if (V.bufsize < 1024 || V.bufsize > (1 << 22) || V.nrecv < 4 || V.nrecv > 4096 ||
	    V.nsend < 2 || V.nsend > 4096 || V.rdma_min < 0) {
		snprintf(V.why_off, sizeof(V.why_off),
			 "btl_kawarimi_verbs_buf_size=%d (1024..4194304), verbs_recv_bufs=%d "
			 "(4..4096), verbs_send_bufs=%d (2..4096), verbs_rdma_min=%d (>= 0) "
			 "out of range", V.bufsize, V.nrecv, V.nsend, V.rdma_min);
		kw_err("verbs path off: %s", V.why_off);
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
		wait = hint->link_timeout_ms > 0 && hint->link_timeout_ms < V.port_wait_ms ?
		       (int)hint->link_timeout_ms : V.port_wait_ms;
	}
	if (V.loaded || L.h_cm)
		lib_unload();	/* a resume without a quiesce: start afresh */
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
	if (!V.loaded)
		return;
	for (i = 0; i < local->n; i++)
		for (j = 0; j < V.nnetdevs; j++)
			if (local->a[i].fabric == KW_FABRIC_TCP &&
			    !strcmp(local->a[i].ifname, V.netdevs[j]) && n < KW_MAX_ADDRS) {
				add[n] = local->a[i];
				add[n].fabric = KW_FABRIC_VERBS;
				add[n].pref = 0;	/* verbs wherever both ends have it */
				n++;
			}
	if (!n) {
		kw_log(1, "verbs device %s is ACTIVE but none of its interfaces has an address "
		       "in btl_kawarimi_if_include: not advertised", V.device);
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
	return V.loaded;
}

static json_object *v_json(void)
{
	json_object *o = json_object_new_object();

	json_object_object_add(o, "state", json_object_new_string(V.loaded ? "up" : "off"));
	if (V.loaded) {
		json_object_object_add(o, "device", json_object_new_string(V.device));
		json_object_object_add(o, "port", json_object_new_int(V.devport));
		json_object_object_add(o, "setup-ms", json_object_new_int64(V.setup_ms));
	} else {
		json_object_object_add(o, "reason", json_object_new_string(V.why_off));
	}
	json_object_object_add(o, "port-wait-ms", json_object_new_int64(V.waited_ms));
	json_object_object_add(o, "uverbs-fds-after-quiesce",
			       json_object_new_int(V.uverbs_after_quiesce));
	json_object_object_add(o, "rdma-min", json_object_new_int(V.rdma_min));
	json_object_object_add(o, "zero-copy-frames-sent", json_object_new_int64((int64_t)V.zc_sent));
	json_object_object_add(o, "zero-copy-frames-received",
			       json_object_new_int64((int64_t)V.zc_rcvd));
	json_object_object_add(o, "zero-copy-bytes-received",
			       json_object_new_int64((int64_t)V.zc_bytes_rcvd));
	json_object_object_add(o, "zero-copy-fallbacks",
			       json_object_new_int64((int64_t)V.zc_fallbacks));
	json_object_object_add(o, "pipelined-frames-sent",
			       json_object_new_int64((int64_t)V.piped_sent));
	return o;
}

/* ---- connection resources --------------------------------------------------------- */

static int post_recv(struct kwv_conn *v, uint32_t slot)
{
	struct ibv_sge sge = {
		.addr = (uintptr_t)(v->rbuf + (size_t)slot * v->bufsize),
		.length = v->bufsize,
		.lkey = v->rmr->lkey,
	};
	struct ibv_recv_wr wr = { .wr_id = slot, .sg_list = &sge, .num_sge = 1 }, *bad;

	return ibv_post_recv(v->id->qp, &wr, &bad);
}

static int epoll_add(int epfd, int fd)
{
	struct epoll_event ev = { .events = EPOLLIN, .data.fd = fd };

	return epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev);
}

/* CQ, QP, buffers and posted receives on v->id (bound to a device now). */
static int conn_setup(struct kwv_conn *v, char *err, size_t errlen)
{
	struct ibv_qp_init_attr qa;
	size_t rlen = (size_t)v->nrecv * v->bufsize, slen = (size_t)v->nsend * v->bufsize;
	uint32_t i;

	struct ibv_device_attr da;

	note_ctx(v->id->verbs);
	/* RDMA READs this side issues (zero-copy receive) and serves (zero-copy
	 * send); the device's limits cap it, 0 turns zero-copy off here. */
	v->rd_depth = 0;
	if (!L.query_device(v->id->verbs, &da) && da.max_qp_rd_atom > 0 &&
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
	v->cc = L.create_comp_channel(v->id->verbs);
	if (!v->cc || set_nonblock(v->cc->fd) || epoll_add(v->epfd, v->cc->fd)) {
		snprintf(err, errlen, "completion channel: %s", strerror(errno));
		return -1;
	}
	/* + the READs in flight */
	v->sq_depth = v->nsend + 8 + KWV_ZC_READS_INFLIGHT;
	v->cq = L.create_cq(v->id->verbs, (int)(v->nrecv + v->sq_depth), v, v->cc, 0);
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
	v->rmr = L.reg_mr(v->id->pd, v->rbuf, rlen, IBV_ACCESS_LOCAL_WRITE);
	v->smr = L.reg_mr(v->id->pd, v->sbuf, slen, IBV_ACCESS_LOCAL_WRITE);
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
		if (!L.create_qp(v->id, v->id->pd, &qa))
			break;
		if (i) {
			snprintf(err, errlen, "rdma_create_qp: %s", strerror(errno));
			return -1;
		}
	}
	v->max_inline = qa.cap.max_inline_data;
	for (i = 0; i < v->nrecv; i++)
		if (post_recv(v, i)) {
			snprintf(err, errlen, "ibv_post_recv: %s", strerror(errno));
			return -1;
		}
	return 0;
}

/* Drops the registrations of the oldest n zero-copy frames sent. */
static void zc_out_release(struct kwv_conn *v, uint32_t n)
{
	while (n-- && v->zo_n) {
		int i;

		for (i = 0; i < v->zo[v->zo_head].n; i++)
			L.dereg_mr(v->zo[v->zo_head].mr[i]);
		v->zo[v->zo_head].n = 0;
		v->zo_head = (v->zo_head + 1) % KWV_ZC_OUT_MAX;
		v->zo_n--;
	}
}

static void conn_release(struct kwv_conn *v)
{
	if (v->released)
		return;
	v->released = 1;
	if (v->id && v->id->qp) {
		if (v->established)
			L.disconnect(v->id);
		L.destroy_qp(v->id);
	}
	if (v->cq)
		L.destroy_cq(v->cq);
	if (v->cc)
		L.destroy_comp_channel(v->cc);
	if (v->rmr)
		L.dereg_mr(v->rmr);
	if (v->smr)
		L.dereg_mr(v->smr);
	/* The QP is gone: no READ can touch these any more. */
	zc_out_release(v, v->zo_n);
	if (v->zr_mr)
		L.dereg_mr(v->zr_mr);
	v->zr_mr = NULL;
	if (v->id)
		L.destroy_id(v->id);
	if (v->ch)
		L.destroy_event_channel(v->ch);
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
	v->bufsize = (uint32_t)V.bufsize;
	v->nrecv = (uint32_t)V.nrecv;
	v->nsend = (uint32_t)V.nsend;
	v->next_live = V.live;
	V.live = v;
	V.nlive++;
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
	uint8_t t = (uint8_t)V.ack_timeout;

	if (V.ack_timeout > 0 && V.ack_timeout < 32 &&
	    L.set_option(id, RDMA_OPTION_ID, RDMA_OPTION_ID_ACK_TIMEOUT, &t, sizeof(t)))
		kw_log(1, "verbs: cannot set the ACK timeout %d: %s", V.ack_timeout,
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

/* ---- listen / accept ------------------------------------------------------------- */

static void log_zc(const char *when)
{
	kw_log(1, "%s: verbs zero-copy frames sent %llu, received %llu (%llu bytes), fallbacks "
	       "%llu; pipelined frames sent %llu (rdma_min %d)", when,
	       (unsigned long long)V.zc_sent, (unsigned long long)V.zc_rcvd,
	       (unsigned long long)V.zc_bytes_rcvd, (unsigned long long)V.zc_fallbacks,
	       (unsigned long long)V.piped_sent, V.rdma_min);
}

static void v_release(void)
{
	lib_unload();
	V.loaded = 0;
	if (V.epochs)
		log_zc("finalize");
}

static void v_quiesce(void)
{
	if (V.nlive)
		kw_log(1, "quiesce: releasing %d verbs connections still present", V.nlive);
	lib_unload();
	V.loaded = 0;
	V.uverbs_after_quiesce = count_uverbs_fds();
	kw_log(1, "quiesce: verbs resources released; %d /dev/infiniband/uverbs* descriptors "
	       "left in this process", V.uverbs_after_quiesce);
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

static int v_listen_fd(void)
{
	return V.lch ? V.lch->fd : -1;
}

static void reject(struct rdma_cm_id *id, uint32_t src, unsigned reason)
{
	unsigned char pd[KWV_PDATA_LEN];

	make_pdata(NULL, KWV_PD_REJECT, src, reason, pd);
	L.reject(id, pd, KWV_PDATA_LEN);
	L.destroy_id(id);
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
	v->ch = L.create_event_channel();
	if (!v->ch || set_nonblock(v->ch->fd) || epoll_add(v->epfd, v->ch->fd) ||
	    L.migrate_id(id, v->ch)) {
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
	if (L.accept(id, &cp)) {
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
		L.reject(v->id, rp, KWV_PDATA_LEN);
	} else {
		L.reject(id, NULL, 0);
		L.destroy_id(id);
	}
	v->c.ops->close(&v->c);
	return NULL;
}

static struct kw_conn *v_accept(void)
{
	struct rdma_cm_event *ev;

	if (!V.lch)
		return NULL;
	while (!L.get_cm_event(V.lch, &ev)) {
		struct rdma_cm_id *id = ev->id;
		enum rdma_cm_event_type type = ev->event;
		struct kwv_pdata p;
		uint8_t req_init, req_resp;
		char err[256];
		int bad;

		if (type != RDMA_CM_EVENT_CONNECT_REQUEST) {
			kw_log(5, "verbs listener: %s", L.event_str(type));
			L.ack_cm_event(ev);
			continue;
		}
		bad = kwv_pdata_decode(ev->param.conn.private_data, ev->param.conn.private_data_len,
				       KWV_PD_CONNECT, &p, err, sizeof(err));
		req_init = ev->param.conn.initiator_depth;
		req_resp = ev->param.conn.responder_resources;
		L.ack_cm_event(ev);
		if (bad) {
			kw_err("verbs: connect request refused: %s", err);
			reject(id, 0, KWV_REJ_BAD);
			continue;
		}
		return accept_one(id, &p, req_init, req_resp);
	}
	return NULL;
}

/* ---- connect ------------------------------------------------------------------------ */

static struct kw_conn *v_connect(const struct kw_cand *cand, int *err)
{
	struct sockaddr_in src = { .sin_family = AF_INET }, dst = { .sin_family = AF_INET };
	struct kwv_conn *v;

	if (!V.loaded) {
		*err = ENETDOWN;
		return NULL;
	}
	v = conn_new();
	if (!v) {
		*err = ENOMEM;
		return NULL;
	}
	v->ch = L.create_event_channel();
	if (!v->ch || set_nonblock(v->ch->fd) || epoll_add(v->epfd, v->ch->fd) ||
	    L.create_id(v->ch, &v->id, v, RDMA_PS_TCP)) {
		*err = errno ? errno : EIO;
		v->c.ops->close(&v->c);
		return NULL;
	}
	/* Bind the source: the connection must leave over the chosen device. */
	src.sin_addr.s_addr = cand->local.ip;
	dst.sin_addr.s_addr = cand->remote.ip;
	dst.sin_port = htons(cand->port);
	if (L.resolve_addr(v->id, cand->local.ip ? (struct sockaddr *)&src : NULL,
			   (struct sockaddr *)&dst, V.addr_timeout_ms)) {
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
		return L.resolve_route(v->id, V.addr_timeout_ms) ? -errno : -EINPROGRESS;
	case RDMA_CM_EVENT_ROUTE_RESOLVED:
		if (conn_setup(v, err, sizeof(err))) {
			kw_err("verbs: connection to rank %u: %s", v->c.ep ? kw_conn_peer_vpid(&v->c) : 0, err);
			return -ENOMEM;
		}
		make_pdata(v, KWV_PD_CONNECT, kw_conn_peer_vpid(&v->c), 0, pd);
		set_ack_timeout(v->id);
		conn_param(&cp, pd);
		cp.responder_resources = cp.initiator_depth = (uint8_t)v->rd_depth;
		return L.connect(v->id, &cp) ? -errno : -EINPROGRESS;
	case RDMA_CM_EVENT_ESTABLISHED:
		if (kwv_pdata_decode(ev->param.conn.private_data, ev->param.conn.private_data_len,
				     KWV_PD_ACCEPT, &p, err, sizeof(err))) {
			kw_err("verbs: accept from rank %u: %s", v->c.ep ? kw_conn_peer_vpid(&v->c) : 0, err);
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
		kw_log(5, "verbs: connect: %s (status %d)", L.event_str(ev->event), ev->status);
		return cm_error(ev->event, ev->status);
	}
}

static int v_connect_done(struct kw_conn *c)
{
	struct kwv_conn *v = vc(c);
	struct rdma_cm_event *ev;
	int rc = -EINPROGRESS;

	if (v->released)
		return -ENODEV;
	while (rc == -EINPROGRESS && !L.get_cm_event(v->ch, &ev)) {
		rc = connect_event(v, ev);
		L.ack_cm_event(ev);
	}
	return rc;
}

/* ---- data ------------------------------------------------------------------------------ */

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

/*
 * Zero-copy send: registers the payload after the header (small leading
 * pieces, such as ob1's header, go inline in the descriptor) and queues
 * the descriptor as the connection's next message. The memory stays valid
 * until the frame is acknowledged (path contract), and the peer reports
 * the READs done before it acknowledges the frame, so the registrations
 * are dropped in time (zc_out_release). Returns 0, or -1 to send the frame
 * by pipelined copy instead.
 */
static int zc_prepare(struct kwv_conn *v, const struct iovec *iov, int cnt, size_t payload)
{
	unsigned char inl[KWV_ZC_INLINE_MAX];
	struct kwv_zc z;
	struct kw_hdr h;
	int i, n, slot;

	if (!v->zc || !V.rdma_min || payload < (size_t)V.rdma_min ||
	    v->zo_n >= KWV_ZC_OUT_MAX || cnt < 2 || iov[0].iov_len != sizeof(h))
		return -1;
	memcpy(&h, iov[0].iov_base, sizeof(h));
	if (h.type != KW_FRAME_DATA || h.len != payload)
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
			struct ibv_mr *mr = L.reg_mr(v->id->pd, iov[i].iov_base, iov[i].iov_len,
						     IBV_ACCESS_REMOTE_READ);

			if (!mr) {
				if (!V.zc_fallbacks)
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
	V.zc_sent++;
	return 0;
fallback:
	V.zc_fallbacks++;
	for (i = 0; i < v->zo[slot].n; i++)
		L.dereg_mr(v->zo[slot].mr[i]);
	v->zo[slot].n = 0;
	return -1;
}

static int v_send(struct kw_conn *c, const struct iovec *iov, int cnt)
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
	if (payload && !zc_prepare(v, iov, cnt, payload))
		return push(v);
	v->out_left = 0;
	for (i = 0, j = 0; i < cnt; i++)
		if (iov[i].iov_len) {
			v->out[j++] = iov[i];
			v->out_left += iov[i].iov_len;
		}
	v->out_cnt = j;
	if (payload > v->bufsize)
		V.piped_sent++;
	return push(v);
}

static int v_idle(const struct kw_conn *c)
{
	const struct kwv_conn *v = (const struct kwv_conn *)c;

	/* Posted but not completed is not idle: an RC send completes once the
	 * peer's HCA has the data, and the drain must not close the QP (and
	 * drop a FIN) before that. */
	return v->out_left == 0 && v->sq_out == 0;
}

static void v_poll_events(const struct kw_conn *c, struct pollfd *p)
{
	p->fd = ((const struct kwv_conn *)c)->epfd;
	p->events = POLLIN;
}

static uint32_t peer_vpid(const struct kwv_conn *v)
{
	return kw_conn_peer_vpid(&v->c);
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
	memcpy(r->data + r->filled, data, len);
	r->filled += len;
	if (r->filled == r->hdr.len) {
		*done = r;
		*h = r->hdr;
		v->cur = NULL;
	}
	return 0;
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
			       (unsigned long long)n, peer_vpid(v), strerror(rc));
			return -rc;	/* v_close frees zr, conn_release its MR */
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
 * when the READs complete (zc_read_done), and until then later messages
 * of this connection wait (held[]).
 */
static int zc_start(struct kwv_conn *v, const unsigned char *data, uint32_t len)
{
	struct kw_rfrag *r;
	struct kwv_zc z;
	struct kw_hdr h;
	char err[256];
	int rc;

	if (v->cur || !v->zc || len < sizeof(h)) {
		kw_err("verbs: unexpected zero-copy descriptor from rank %u (%s); dropping the "
		       "connection", peer_vpid(v), v->cur ? "in the middle of a frame" :
		       !v->zc ? "zero-copy was not negotiated" : "shorter than a frame header");
		return -EPROTO;
	}
	memcpy(&h, data, sizeof(h));
	if (kwv_zc_decode(data + sizeof(h), len - (uint32_t)sizeof(h), h.len, &z, err,
			  sizeof(err))) {
		kw_err("verbs: bad message from rank %u: %s; dropping the connection",
		       peer_vpid(v), err);
		return -EPROTO;
	}
	if (h.type != KW_FRAME_DATA) {
		kw_err("verbs: zero-copy descriptor from rank %u for a frame of type %u (only "
		       "DATA frames go zero-copy); dropping the connection", peer_vpid(v), h.type);
		return -EPROTO;
	}
	r = kw_conn_rx_alloc(&v->c, &h);
	if (!r)
		return -EPROTO;
	memcpy(r->data, z.inline_data, z.inline_len);
	r->filled = h.len;
	v->zr_mr = L.reg_mr(v->id->pd, r->data, h.len, IBV_ACCESS_LOCAL_WRITE);
	if (!v->zr_mr) {
		kw_err("verbs: cannot register %u bytes to READ a frame from rank %u: %s",
		       h.len, peer_vpid(v), strerror(errno));
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
	if (!rc && V.fault_read > 0 && ++V.zc_started == (uint64_t)V.fault_read) {
		kw_log(1, "verbs: fault injection (btl_kawarimi_verbs_fault_read): breaking the "
		       "connection to rank %u with a READ in flight", peer_vpid(v));
		return -ECONNABORTED;
	}
	return rc;
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
		       "dropping the connection", peer_vpid(v), done, v->zo_n);
		return -EPROTO;
	}
	zc_out_release(v, done);
	if (imm & KWV_IMM_DESC)
		rc = zc_start(v, v->rbuf + (size_t)slot * v->bufsize, byte_len);
	else if (byte_len)
		rc = rx_chunk(v, v->rbuf + (size_t)slot * v->bufsize, byte_len, &r, &h, &ctl);
	if (rc)
		return rc;
	if (post_recv(v, slot)) {
		if (r)
			kw_rfrag_free(r);
		return -EIO;
	}
	if (kwv_credit_received(&v->cr, kwv_imm_credits(imm), v->peer_posted)) {
		kw_err("verbs: rank %u returned %u credits with %u already held of %u posted; "
		       "dropping the connection", peer_vpid(v), kwv_imm_credits(imm),
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

static int zc_read_done(struct kwv_conn *v)
{
	struct kw_rfrag *r = v->zr;
	struct kw_hdr h;
	int rc;

	if (!r || !v->zr_reads)
		return -EPROTO;
	v->zr_reads--;
	if (v->zr_seg < v->zr_desc.nseg)
		return zc_post_reads(v);
	if (v->zr_reads)
		return 0;
	L.dereg_mr(v->zr_mr);
	v->zr_mr = NULL;
	v->zr = NULL;
	/* Reported before anything this frame causes goes back (the ack
	 * included), so the sender drops its registration first. */
	v->rd_owed++;
	V.zc_rcvd++;
	V.zc_bytes_rcvd += r->hdr.len;
	h = r->hdr;
	v->c.frames_in++;
	rc = kw_conn_frame_in(&v->c, &h, r);
	if (rc)
		return rc;
	return rx_held(v);
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
				       L.wc_status_str(wc[i].status), wc[i].vendor_err);
				return -EIO;
			}
			if (wc[i].opcode & IBV_WC_RECV) {
				rc = on_recv(v, &wc[i]);
			} else {
				v->sq_out--;
				rc = 0;
				if (wc[i].wr_id == KWV_WRID_READ)
					rc = zc_read_done(v);
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

static int cm_events(struct kwv_conn *v)
{
	struct rdma_cm_event *ev;

	while (v->ch && !L.get_cm_event(v->ch, &ev)) {
		enum rdma_cm_event_type t = ev->event;
		int st = ev->status;

		L.ack_cm_event(ev);
		if (t == RDMA_CM_EVENT_ESTABLISHED) {
			v->established = 1;
			continue;
		}
		if (t == RDMA_CM_EVENT_TIMEWAIT_EXIT)
			continue;
		kw_log(5, "verbs: connection event %s (status %d)", L.event_str(t), st);
		return cm_error(t, st);
	}
	return 0;
}

static int v_progress(struct kw_conn *c, short revents)
{
	struct kwv_conn *v = vc(c);
	struct ibv_cq *cq;
	void *ctx;
	int rc;

	(void)revents;
	if (v->released)
		return -ENODEV;
	if (!L.get_cq_event(v->cc, &cq, &ctx)) {
		L.ack_cq_events(cq, 1);
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
	return cm_events(v);
}

static void v_close(struct kw_conn *c)
{
	struct kwv_conn *v = vc(c), **pp;

	for (pp = &V.live; *pp; pp = &(*pp)->next_live)
		if (*pp == v) {
			*pp = v->next_live;
			V.nlive--;
			break;
		}
	if (v->zr || v->zo_n)
		kw_log(1, "verbs: connection to rank %u closed with zero-copy frames in flight "
		       "(%s%u sent, not reported read); the reliability layer resends them",
		       peer_vpid(v), v->zr ? "one being read, " : "", v->zo_n);
	if (L.h_cm)
		conn_release(v);
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
	.listen_fd = v_listen_fd,
	.accept = v_accept,
	.connect = v_connect,
	.connect_done = v_connect_done,
	.send = v_send,
	.idle = v_idle,
	.poll_events = v_poll_events,
	.progress = v_progress,
	.close = v_close,
};
