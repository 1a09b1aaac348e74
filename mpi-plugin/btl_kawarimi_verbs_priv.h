/*
 * kawarimi BTL: the verbs path's private header, shared by its files only
 * (the rest of the BTL sees struct kw_path_ops, btl_kawarimi_path.h):
 *
 *   btl_kawarimi_verbs.c         the path: parameters, bring-up per epoch,
 *                                addresses, state for the replies, ops table
 *   btl_kawarimi_verbs_lib.c     librdmacm/libibverbs loaded per epoch
 *   btl_kawarimi_verbs_device.c  RDMA devices, ACTIVE ports, their netdevs
 *   btl_kawarimi_verbs_cm.c      rdma_cm: listener, connect, accept, a
 *                                connection's resources, close
 *   btl_kawarimi_verbs_data.c    SEND/RECV: pipelined frames, credits,
 *                                completions, progress
 *   btl_kawarimi_verbs_rdma.c    zero-copy: registered payloads, READs
 *
 * Calls go down that list, never up: verbs -> cm, data, device, lib;
 * data -> cm, rdma; cm -> rdma, lib; rdma and device -> lib. All run with
 * kw.lock held (path contract).
 */
#ifndef BTL_KAWARIMI_VERBS_PRIV_H
#define BTL_KAWARIMI_VERBS_PRIV_H

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include <infiniband/verbs.h>
#include <rdma/rdma_cma.h>

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

/* The library's entry points, resolved per epoch (btl_kawarimi_verbs_lib.c);
 * all NULL while it is not loaded. */
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

extern struct kwv_lib kwv_lib;

/* One connection: struct kw_conn first, so the path ops can cast. */
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

/* The path's state: parameters, the epoch's device and listener, the
 * live connections, counts for the replies (btl_kawarimi_verbs.c). */
struct kwv_state {
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
};

extern struct kwv_state kwv;

static inline struct kwv_conn *vc(struct kw_conn *c)
{
	return (struct kwv_conn *)c;
}

static inline uint32_t kwv_peer_vpid(const struct kwv_conn *v)
{
	return kw_conn_peer_vpid(&v->c);
}

/* btl_kawarimi_verbs_lib.c: 0, or -1 with err set (nothing loaded). */
int kw_verbs_lib_load(char *err, size_t errlen);
void kw_verbs_lib_unload(void);
/* Records a context librdmacm opened, to close it at unload. */
void kw_verbs_lib_note_ctx(struct ibv_context *ctx);
/* This process's open /dev/infiniband/uverbs* descriptors (-1: unknown). */
int kw_verbs_lib_count_uverbs_fds(void);

/* btl_kawarimi_verbs_device.c: any device in sysfs (no library needed)?
 * Waits up to wait_ms for an ACTIVE port: 1 (kwv.device, .devport and
 * .netdevs set) or 0; kwv.waited_ms either way. */
int kw_verbs_device_any(void);
int kw_verbs_device_wait_active(int wait_ms);

/* btl_kawarimi_verbs_cm.c */
int kw_verbs_cm_listen(uint16_t port, char *err, size_t errlen);
void kw_verbs_cm_unlisten(void);
int kw_verbs_cm_listen_fd(void);
struct kw_conn *kw_verbs_cm_accept(void);
struct kw_conn *kw_verbs_cm_connect(const struct kw_cand *cand, int *err);
int kw_verbs_cm_connect_done(struct kw_conn *c);
/* Connection events after ESTABLISHED: 0, or negative when broken. */
int kw_verbs_cm_events(struct kwv_conn *v);
int kw_verbs_cm_post_recv(struct kwv_conn *v, uint32_t slot);
/* Drops the connection's fabric resources (QP, CQ, MRs, id); the rest
 * goes in kw_verbs_cm_close. */
void kw_verbs_cm_release(struct kwv_conn *v);
void kw_verbs_cm_close(struct kw_conn *c);

/* btl_kawarimi_verbs_data.c: the path ops of a connection's data. */
int kw_verbs_data_send(struct kw_conn *c, const struct iovec *iov, int cnt);
int kw_verbs_data_idle(const struct kw_conn *c);
void kw_verbs_data_poll_events(const struct kw_conn *c, struct pollfd *p);
int kw_verbs_data_progress(struct kw_conn *c, short revents);

/* btl_kawarimi_verbs_rdma.c */
int kw_verbs_rdma_prepare(struct kwv_conn *v, const struct iovec *iov, int cnt, size_t payload);
int kw_verbs_rdma_start(struct kwv_conn *v, const unsigned char *data, uint32_t len);
/* A READ completed: the next ones posted, or the frame delivered. */
int kw_verbs_rdma_read_done(struct kwv_conn *v);
void kw_verbs_rdma_out_release(struct kwv_conn *v, uint32_t n);

#endif
