/*
 * kawarimi BTL for Open MPI 4.1 and 5.0 (BTL API 3.1 and 3.3; the
 * differences are in btl_kawarimi_compat.h): a reliable, suspendable
 * transport. See docs/btl.md for the design.
 *
 * Threads: one network thread per process (btl_kawarimi_thread.c) owns all
 * sockets, the agent control socket and every timer. The application
 * thread enters through the module functions (send/alloc/...) and the
 * component progress function, which is the only place ob1 callbacks run.
 * One mutex (kw.lock) protects all shared state; neither thread holds it
 * while blocking or while calling into ob1.
 */
#ifndef BTL_KAWARIMI_H
#define BTL_KAWARIMI_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "opal_config.h"
#include "opal/mca/btl/btl.h"
#include "opal/mca/btl/base/base.h"
#include "opal/util/proc.h"

#include "btl_kawarimi_frag.h"
#include "btl_kawarimi_path.h"
#include "btl_kawarimi_proc.h"

enum kw_state {
	KW_RUNNING,
	KW_QUIESCING,
	KW_QUIESCED,
	KW_RESUMING,
};

struct kw_ctl;

struct kw_component {
	mca_btl_base_component_3_0_0_t super;

	/* MCA parameters */
	int verbose;
	char *agent_socket;
	char *if_include;
	int port;
	int connect_timeout_ms;
	int reconnect_timeout_ms;
	int resume_timeout_ms;
	int quiesce_timeout_ms;
	int finalize_timeout_ms;
	int tcp_user_timeout_ms;
	int free_list_num;
	int free_list_max;
	int free_list_inc;

	/* runtime */
	pthread_mutex_t lock;
	pthread_t thread;
	int thread_running;
	int wake_fd;			/* eventfd: app thread -> network thread */
	int stop;			/* network thread: finalize */
	int stopped;			/* network thread has flushed and closed */
	opal_process_name_t me;
	struct kw_addrs local;		/* current local addresses */
	struct mca_btl_base_endpoint_t **eps;	/* by vpid */
	uint32_t neps;
	/* Ranks in our job (PMIx's job size, or KW_VPID_CEILING when the
	 * runtime does not say): every rank a peer names must be below it. */
	uint32_t job_size;
	struct kw_conn *conns;		/* every live connection */
	enum kw_state state;

	/* hand-over to the application thread */
	struct kw_rfrag *rx_head, *rx_tail;
	kw_frag_t *done_head, *done_tail;
	struct kw_get *get_done_head, *get_done_tail;
	atomic_int app_work;		/* non-zero: progress has work */
	/* The network thread waits for the lock: the application's progress
	 * loop stays off it until then. glibc mutexes are not fair, and a
	 * progress loop taking the lock thousands of times a second kept the
	 * thread (agent replies, reconnects) waiting for seconds on a loaded
	 * 2-core machine. */
	atomic_int net_waiting;
	/* Application-thread receive: while the application keeps calling
	 * progress, it reads ready connections itself (one epoll_wait per
	 * call, like the tcp BTL's event loop) and the network thread leaves
	 * their input alone; when progress stops being called (the
	 * application computes), the thread takes over within
	 * KW_APP_IDLE_MS. */
	int app_poll;
	int app_epfd;
	atomic_uint_fast64_t app_last_ms;
	/* Acks found due while the application thread read: sent after ob1's
	 * callbacks had the chance to carry them (see ack_due()). */
	int defer_acks;
	struct mca_btl_base_endpoint_t *ack_list;
	int error_pending;

	mca_btl_base_module_error_cb_fn_t error_cb;
	struct kw_ctl *ctl;
	char hostname[64];
};

extern struct kw_component mca_btl_kawarimi_component;
extern mca_btl_base_module_t mca_btl_kawarimi_module;
#define kw mca_btl_kawarimi_component

/* Bound on the rank numbers the endpoint table takes when the runtime
 * does not give the job size: far above any real job, low enough that
 * the table's doubling cannot wrap. */
#define KW_VPID_CEILING (1u << 24)

/* endpoint.c: the reliability layer */
struct mca_btl_base_endpoint_t *kw_ep_get(uint32_t vpid, int create);
void kw_ep_send_locked(struct mca_btl_base_endpoint_t *ep, kw_frag_t *f);
/* A sequenced frame of any type: queued and pushed; queued only (the
 * caller's path pushes after its read). */
void kw_ep_send_frame_locked(struct mca_btl_base_endpoint_t *ep, kw_frag_t *f, uint8_t type,
			     uint16_t flags);
void kw_ep_queue_locked(struct mca_btl_base_endpoint_t *ep, kw_frag_t *f, uint8_t type,
			uint16_t flags);
void kw_ep_conn_broken(struct kw_conn *c, const char *why);
void kw_ep_free(struct mca_btl_base_endpoint_t *ep);
uint64_t kw_ep_next_timer(struct mca_btl_base_endpoint_t *ep);
/* Is the connection over the best pair both ends have now? */
int kw_ep_on_best_path(struct mca_btl_base_endpoint_t *ep);
void kw_ep_start_drain(struct mca_btl_base_endpoint_t *ep);
void kw_ep_force_close(struct mca_btl_base_endpoint_t *ep, const char *why);
void kw_ep_push_locked(struct mca_btl_base_endpoint_t *ep);
void kw_ep_send_bye(struct mca_btl_base_endpoint_t *ep);
void kw_ep_flush_acks(void);
/* For connection management: the connection is gone (everything not
 * acknowledged goes out again on the next one); the peer holds every
 * frame below ack (0, or -EPROTO when ack is beyond what was sent); an
 * ack went out; a control frame on c; a frame after the handshake. */
void kw_ep_detach(struct mca_btl_base_endpoint_t *ep);
int kw_ep_ack(struct mca_btl_base_endpoint_t *ep, uint64_t ack);
void kw_ep_acked_now(struct mca_btl_base_endpoint_t *ep);
int kw_ep_send_ctl(struct kw_conn *c, uint8_t type, uint64_t ack, const void *payload,
		   uint32_t len);
int kw_ep_frame_in(struct mca_btl_base_endpoint_t *ep, struct kw_conn *c, const struct kw_hdr *h,
		   struct kw_rfrag *r);

/* conn.c: connection management (and the kw_conn_* hooks of
 * btl_kawarimi_path.h) */
void kw_conn_accept(struct kw_conn *c, uint64_t now);
void kw_conn_service(struct kw_conn *c, uint64_t now);
void kw_conn_progress(struct kw_conn *c, short revents);
/* Connects, reconnects, probes the best pair, gives up: the endpoint's
 * connection timers. */
void kw_conn_service_ep(struct mca_btl_base_endpoint_t *ep, uint64_t now);

/* rdma.c: btl_get emulated with GET_REQ / GET_REPLY frames */
struct kw_get {
	struct kw_get *next;
	struct mca_btl_base_endpoint_t *ep;
	void *local;
	uint64_t len;
	struct mca_btl_base_registration_handle_t *local_handle;
	mca_btl_base_rdma_completion_fn_t cb;
	void *cbcontext, *cbdata;
	int status;
};
void kw_rdma_module_init(mca_btl_base_module_t *m);
void kw_rdma_fini(void);
void kw_rdma_ep_free(struct mca_btl_base_endpoint_t *ep);
void kw_rdma_get_req(struct kw_rfrag *r);
unsigned char *kw_rdma_reply_dst(const struct mca_btl_base_endpoint_t *ep, const struct kw_hdr *h);
int kw_rdma_reply_in(struct mca_btl_base_endpoint_t *ep, const struct kw_hdr *h,
		     const struct kw_rfrag *r);
int kw_rdma_complete(struct kw_get *g);
/* Largest GET_REPLY: one frame per ob1 get fragment. */
#define KW_GET_LIMIT_MAX (1u << 30)

/* thread.c */
int kw_thread_start(void);
void kw_thread_stop(void);
#define KW_APP_IDLE_MS 5
/* Probing the best pair after an unannounced fall-back to a slower one:
 * first after 1 s, then with doubling waits up to 10 s. */
#define KW_PROBE_MIN_MS 1000
#define KW_PROBE_MAX_MS 10000

/* ctl.c: agent control socket and the quiesce/resume state machine */
int kw_ctl_open(void);
void kw_ctl_close(void);
int kw_ctl_fd(void);
void kw_ctl_readable(void);
void kw_ctl_service(uint64_t now);
uint64_t kw_ctl_next_timer(void);

/* util.c: called from every layer, calls none. Logging usable from any
 * thread (opal_output is not safe off the application thread when Open
 * MPI runs without thread support); the monotonic clock; waking the
 * network thread; telling the application thread it has work; is the
 * application thread in MPI (it reads its connections itself then)? */
void kw_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define kw_err(...) kw_log(0, __VA_ARGS__)
uint64_t kw_now_ms(void);
void kw_wake(void);
void kw_app_notify(void);
int kw_app_active(uint64_t now);

#endif
