/* kawarimi BTL: the component (parameters, init, progress). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "opal/mca/base/mca_base_var.h"
#include "opal/runtime/opal.h"

#include "btl_kawarimi_compat.h"
#include "btl_kawarimi_endpoint.h"

static int kw_register(void);
static int kw_open(void);
static int kw_close(void);
static mca_btl_base_module_t **kw_init(int *num, bool progress_threads, bool mpi_threads);
static int kw_progress(void);

struct kw_component mca_btl_kawarimi_component = {
	.super = {
		.btl_version = {
			MCA_BTL_DEFAULT_VERSION("kawarimi"),
			.mca_open_component = kw_open,
			.mca_close_component = kw_close,
			.mca_register_component_params = kw_register,
		},
		.btl_data = {
			.param_field = MCA_BASE_METADATA_PARAM_CHECKPOINT,
		},
		.btl_init = kw_init,
		.btl_progress = kw_progress,
	},
	.lock = PTHREAD_MUTEX_INITIALIZER,
	.wake_fd = -1,
	.app_epfd = -1,
};

static char *agent_socket_default = "/run/kawarimi/agent.sock";
static char *if_include_default = "";

static void reg_int(const char *name, const char *help, int *storage, int def)
{
	*storage = def;
	(void)mca_base_component_var_register(&kw.super.btl_version, name, help,
					      MCA_BASE_VAR_TYPE_INT, NULL, 0, 0,
					      OPAL_INFO_LVL_5, MCA_BASE_VAR_SCOPE_READONLY,
					      storage);
}

static void reg_str(const char *name, const char *help, char **storage, char *def)
{
	*storage = def;
	(void)mca_base_component_var_register(&kw.super.btl_version, name, help,
					      MCA_BASE_VAR_TYPE_STRING, NULL, 0, 0,
					      OPAL_INFO_LVL_4, MCA_BASE_VAR_SCOPE_READONLY,
					      storage);
}

static int kw_register(void)
{
	mca_btl_base_module_t *m = &mca_btl_kawarimi_module;
	int i;

	reg_int("verbose", "Verbosity of the kawarimi BTL on stderr: 0 errors only, "
		"1 connections, paths and quiesce/resume, 5 connection attempts, 10 frames",
		&kw.verbose, 0);
	reg_str("agent_socket", "Unix socket of the kawarimi guest agent the BTL registers "
		"with to take quiesce/resume commands; empty disables it. If nothing listens "
		"there, the BTL works as a plain transport (says so at verbose level 1)",
		&kw.agent_socket, agent_socket_default);
	reg_str("if_include", "Ordered, comma-separated list of interfaces (name, or name "
		"prefix ending in *) or IPv4 subnets (a.b.c.d/n) to use, most preferred fabric "
		"first (e.g. \"ib0,eth0\" or \"10.1.0.0/16,10.2.0.0/16\"); connections use the "
		"best entry both peers still have. Empty: every non-loopback IPv4 interface "
		"(loopback only when there is no other). The TCP listeners are bound to "
		"these addresses only, never the wildcard, and move with them at a resume",
		&kw.if_include, if_include_default);
	reg_int("port", "TCP port to listen on for connections and address exchange, the "
		"same on every address listened on (0: any port free on all of them, published "
		"through the modex)", &kw.port, 0);
	reg_int("connect_timeout_ms", "Time allowed for one connection attempt including "
		"the HELLO handshake before the next address pair is tried",
		&kw.connect_timeout_ms, 2000);
	reg_int("reconnect_timeout_ms", "After a connection breaks (not by quiesce), how long "
		"the BTL keeps reconnecting while it holds unacknowledged frames before it gives "
		"up with an error naming the peer", &kw.reconnect_timeout_ms, 60000);
	reg_int("resume_timeout_ms", "How long a resume waits for every peer connected "
		"before the quiesce to be reconnected before it answers (used when the agent's "
		"resume gives no link-timeout-ms)", &kw.resume_timeout_ms, 30000);
	reg_int("quiesce_timeout_ms", "Drain deadline of a quiesce when the agent gives "
		"no deadline-ms", &kw.quiesce_timeout_ms, 10000);
	reg_int("finalize_timeout_ms", "At MPI_Finalize, how long to wait for outstanding "
		"acknowledgments before closing", &kw.finalize_timeout_ms, 5000);
	reg_int("tcp_user_timeout_ms", "TCP_USER_TIMEOUT of every connection: data "
		"unacknowledged by the peer's kernel for this long breaks the connection, "
		"which is then rebuilt over the best path left (0: the kernel's default, "
		"about 15 minutes)", &kw.tcp_user_timeout_ms, 10000);
	reg_int("app_poll", "1: while the application calls MPI, its thread reads ready "
		"connections itself (lowest latency, like the tcp BTL); 0: only the network "
		"thread reads and hands frames over", &kw.app_poll, 1);
	reg_int("free_list_num", "Initial number of send fragments per pool",
		&kw.free_list_num, 8);
	reg_int("free_list_max", "Maximum number of send fragments per pool (-1: unlimited)",
		&kw.free_list_max, -1);
	reg_int("free_list_inc", "Send fragments added to a pool when it runs empty",
		&kw.free_list_inc, 32);

	for (i = 0; i < KW_NPATHS; i++)
		if (kw_paths[i]->register_params)
			kw_paths[i]->register_params();

	/* Module defaults; mca_btl_base_param_register makes them
	 * btl_kawarimi_<name> parameters. tcp is LOW+100: we rank above it. */
	m->btl_exclusivity = MCA_BTL_EXCLUSIVITY_LOW + 200;
	m->btl_eager_limit = 64 * 1024;
	m->btl_rndv_eager_limit = 64 * 1024;
	m->btl_max_send_size = 256 * 1024;
	m->btl_rdma_pipeline_send_length = 0;
	m->btl_rdma_pipeline_frag_size = 0;
	m->btl_min_rdma_pipeline_size = 0;
	/* GET: ob1's RGET protocol for large contiguous messages, which
	 * the paths receive straight into the user's buffer
	 * (btl_kawarimi_rdma.c). --mca btl_kawarimi_flags send turns it off. */
	m->btl_flags = MCA_BTL_FLAGS_SEND | MCA_BTL_FLAGS_GET;
	m->btl_get_limit = 4 * 1024 * 1024;
	m->btl_get_alignment = 0;
	kw_rdma_module_init(m);
	m->btl_latency = 100;
	m->btl_bandwidth = 1000;
	return mca_btl_base_param_register(&kw.super.btl_version, m);
}

static int kw_open(void)
{
	return OPAL_SUCCESS;
}

static int kw_close(void)
{
	return OPAL_SUCCESS;
}

/* Every path listens on the port number the first one got, each in its
 * own port space (peers learn one port); then they add their addresses. */
static int paths_listen(char *err, size_t errlen)
{
	uint16_t port = (uint16_t)kw.port;
	int i;

	for (i = 0; i < KW_NPATHS; i++) {
		if (kw_paths[i]->listen(&kw.local, port, err, errlen)) {
			while (i-- > 0)
				kw_paths[i]->release();
			return -1;
		}
		port = kw.local.port;
	}
	for (i = 0; i < KW_NPATHS; i++)
		if (kw_paths[i]->add_addrs)
			kw_paths[i]->add_addrs(&kw.local);
	return 0;
}

static mca_btl_base_module_t **kw_init(int *num, bool progress_threads, bool mpi_threads)
{
	mca_btl_base_module_t **modules = NULL;
	unsigned char blob[512];
	char err[256];
	int rc, len;

	(void)progress_threads;
	*num = 0;
	gethostname(kw.hostname, sizeof(kw.hostname) - 1);
	kw.me = opal_proc_local_get()->proc_name;
	kw.job_size = kw_compat_job_size(kw.me);
	if (!kw.job_size || kw.job_size > KW_VPID_CEILING) {
		kw_log(1, "the runtime gives job size %u; ranks up to %u are accepted from peers",
		       kw.job_size, KW_VPID_CEILING - 1);
		kw.job_size = KW_VPID_CEILING;
	}
	if (mpi_threads) {
		/* ob1 would call us from several threads at once, and our
		 * callbacks assume the single application thread. */
		kw_log(1, "MPI_THREAD_MULTIPLE is not supported; declining (another BTL "
		       "such as tcp must reach the peers)");
		return NULL;
	}
	if (kw_addrs_local(kw.if_include, &kw.local, err, sizeof(err))) {
		opal_output(0, "btl:kawarimi: %s; the BTL is disabled", err);
		return NULL;
	}
	if (!kw.local.n) {
		kw_log(1, "no usable interface matches btl_kawarimi_if_include=\"%s\"; disabled",
		       kw.if_include);
		return NULL;
	}
	if (paths_listen(err, sizeof(err))) {
		opal_output(0, "btl:kawarimi: %s; the BTL is disabled", err);
		return NULL;
	}
	len = kw_addrs_encode(&kw.local, blob, sizeof(blob));
	OPAL_MODEX_SEND(rc, KW_MODEX_SCOPE, &kw.super.btl_version, blob, (size_t)len);
	if (rc != OPAL_SUCCESS)
		goto fail;
	if (mca_btl_kawarimi_module.btl_get_limit > KW_GET_LIMIT_MAX ||
	    !mca_btl_kawarimi_module.btl_get_limit) {
		kw_log(0, "btl_kawarimi_get_limit=%zu is outside 1..%u (one frame per get); "
		       "using %u", mca_btl_kawarimi_module.btl_get_limit, KW_GET_LIMIT_MAX,
		       KW_GET_LIMIT_MAX);
		mca_btl_kawarimi_module.btl_get_limit = KW_GET_LIMIT_MAX;
	}
	rc = kw_frag_lists_init(mca_btl_kawarimi_module.btl_eager_limit,
				mca_btl_kawarimi_module.btl_max_send_size);
	if (rc != OPAL_SUCCESS)
		goto fail;
	/* mca_btl_base_select frees the array. */
	modules = malloc(sizeof(*modules));
	if (!modules)
		goto fail;
	kw.state = KW_RUNNING;
	kw.app_epfd = -1;
	if (kw.app_poll) {
		kw.app_epfd = epoll_create1(EPOLL_CLOEXEC);
		if (kw.app_epfd < 0)
			kw.app_poll = 0;
	}
	if (kw_ctl_open() || kw_thread_start())
		goto fail;
	kw_log(1, "listening on port %u, %u local addresses, first %s", kw.local.port,
	       kw.local.n, kw.local.a[0].ifname);
	modules[0] = &mca_btl_kawarimi_module;
	*num = 1;
	return modules;
fail:
	free(modules);
	kw_ctl_close();
	kw_path_release_all();
	kw_frag_lists_fini();
	return NULL;
}

static void report_errors(void)
{
	uint32_t i;

	for (i = 0; i < kw.neps; i++) {
		struct mca_btl_base_endpoint_t *ep = kw.eps[i];
		char msg[256];

		if (!ep || ep->failed != 1)
			continue;
		ep->failed = 2;
		snprintf(msg, sizeof(msg), "kawarimi: peer rank %u unreachable for more than "
			 "btl_kawarimi_reconnect_timeout_ms=%d ms", ep->vpid,
			 kw.reconnect_timeout_ms);
		pthread_mutex_unlock(&kw.lock);
		if (kw.error_cb && ep->proc)
			kw.error_cb(&mca_btl_kawarimi_module, MCA_BTL_ERROR_FLAGS_FATAL, ep->proc, msg);
		else
			opal_output(0, "btl:%s", msg);
		pthread_mutex_lock(&kw.lock);
	}
}

/* Reads whatever the ready connections hold, if the network thread is not
 * busy with them right now. Returns how many connections moved bytes, so
 * opal_progress does not yield the CPU while a transfer is under way. */
static int app_receive(void)
{
	struct epoll_event ev[8];
	struct kw_conn *c;
	int n, i;

	int moved = 0;

	if (atomic_load_explicit(&kw.net_waiting, memory_order_relaxed) ||
	    pthread_mutex_trylock(&kw.lock))
		return 0;
	n = epoll_wait(kw.app_epfd, ev, 8, 0);
	kw.defer_acks = 1;
	for (i = 0; i < n; i++) {
		c = ev[i].data.ptr;
		if (!c->close_me && c->state == KW_CONN_UP) {
			kw_conn_progress(c, POLLIN);
			moved++;
		}
	}
	kw.defer_acks = 0;
	/* Finish partly written frames here too: waking the network thread
	 * for every socket-buffer's worth of a large message costs more. */
	for (c = kw.conns; c; c = c->next)
		if (!c->close_me && c->state == KW_CONN_UP && !c->ops->idle(c)) {
			kw_conn_progress(c, POLLOUT);
			moved++;
		}
	pthread_mutex_unlock(&kw.lock);
	return moved;
}

static void flush_acks(void)
{
	if (!kw.ack_list)	/* read without the lock: only a hint */
		return;
	pthread_mutex_lock(&kw.lock);
	kw_ep_flush_acks();
	pthread_mutex_unlock(&kw.lock);
}

/* The only place ob1 callbacks run: in the application thread, with the
 * lock released. */
static int kw_progress(void)
{
	struct kw_rfrag *rx;
	struct kw_get *gets;
	kw_frag_t *done;
	int count = 0;

	if (kw.app_poll) {
		atomic_store_explicit(&kw.app_last_ms, kw_now_ms(), memory_order_relaxed);
		if (!atomic_load_explicit(&kw.app_work, memory_order_acquire))
			count = app_receive();
	}
	if (!atomic_load_explicit(&kw.app_work, memory_order_acquire)) {
		flush_acks();
		return count;
	}
	pthread_mutex_lock(&kw.lock);
	atomic_store_explicit(&kw.app_work, 0, memory_order_relaxed);
	rx = kw.rx_head;
	kw.rx_head = kw.rx_tail = NULL;
	done = kw.done_head;
	kw.done_head = kw.done_tail = NULL;
	gets = kw.get_done_head;
	kw.get_done_head = kw.get_done_tail = NULL;
	if (kw.error_pending) {
		kw.error_pending = 0;
		report_errors();
	}
	pthread_mutex_unlock(&kw.lock);

	while (done) {
		kw_frag_t *f = done;
		int own = f->base.des_flags & MCA_BTL_DES_FLAGS_BTL_OWNERSHIP;

		done = f->next;
		if (!f->internal && f->base.des_cbfunc)
			f->base.des_cbfunc(&mca_btl_kawarimi_module, f->ep, &f->base, f->status);
		if (own || f->internal)
			kw_frag_return(f);
		count++;
	}
	count += kw_rdma_complete(gets);
	kw_rdma_get_req(NULL);	/* requests still waiting for a fragment */
	while (rx) {
		struct kw_rfrag *r = rx;
		mca_btl_base_segment_t seg = {
			.seg_addr.pval = r->data,
			.seg_len = r->hdr.len,
		};

		rx = r->next;
		count++;
		if (r->hdr.type == KW_FRAME_GET_REQ) {
			kw_rdma_get_req(r);	/* takes r */
			continue;
		}
		kw_compat_recv(&mca_btl_kawarimi_module, r->ep, r->hdr.tag, &seg);
		kw_rfrag_free(r);
	}
	flush_acks();
	return count;
}
