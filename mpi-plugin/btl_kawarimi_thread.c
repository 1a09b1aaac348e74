/*
 * kawarimi BTL: the network thread. It blocks in poll() on every path's listener,
 * every connection, the agent socket and a wake-up eventfd, so the
 * application thread never polls sockets and a quiesce proceeds while the
 * application computes without calling MPI.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "btl_kawarimi_endpoint.h"

static uint64_t stop_deadline_ms;

static void reap_conns(void)
{
	struct kw_conn **pp = &kw.conns;

	while (*pp) {
		struct kw_conn *c = *pp;

		if (c->close_me) {
			*pp = c->next;
			if (c->ep && c->ep->conn == c)
				c->ep->conn = NULL;
			c->ops->close(c);
		} else {
			pp = &c->next;
		}
	}
}

static int any_data(void)
{
	uint32_t i;

	for (i = 0; i < kw.neps; i++)
		if (kw.eps[i] && kw_ep_has_data(kw.eps[i]) && !kw.eps[i]->failed &&
		    !kw.eps[i]->peer_gone)
			return 1;
	return 0;
}

/* Finalize: let outstanding frames be acknowledged, then say BYE. */
static void stop_service(uint64_t now)
{
	struct kw_conn *c;
	uint32_t i;

	if (any_data() && now < stop_deadline_ms)
		return;
	for (i = 0; i < kw.neps; i++)
		if (kw.eps[i])
			kw_ep_send_bye(kw.eps[i]);
	for (c = kw.conns; c; c = c->next)
		c->close_me = 1;
	kw.stopped = 1;
}

static void service(uint64_t now)
{
	struct kw_conn *c;
	uint32_t i;

	for (c = kw.conns; c; c = c->next)
		kw_conn_service(c, now);
	for (i = 0; i < kw.neps; i++)
		if (kw.eps[i])
			kw_conn_service_ep(kw.eps[i], now);
	kw_ctl_service(now);
	if (kw.stop)
		stop_service(now);
	reap_conns();
}

static int next_timeout(uint64_t now)
{
	uint64_t t = now + 500;
	struct kw_conn *c;
	uint32_t i;

	for (c = kw.conns; c; c = c->next)
		if (c->deadline_ms && c->deadline_ms < t)
			t = c->deadline_ms;
		else if (c->state == KW_CONN_CONNECTING && now + 10 < t)
			t = now + 10;	/* connect completion is also polled */
	for (i = 0; i < kw.neps; i++)
		if (kw.eps[i]) {
			uint64_t e = kw_ep_next_timer(kw.eps[i]);

			if (e < t)
				t = e;
		}
	if (kw_ctl_next_timer() < t)
		t = kw_ctl_next_timer();
	if (kw.stop && now + 10 < t)
		t = now + 10;
	return t <= now ? 0 : (int)(t - now);
}

static void net_lock(void)
{
	if (!pthread_mutex_trylock(&kw.lock))
		return;
	atomic_store_explicit(&kw.net_waiting, 1, memory_order_relaxed);
	pthread_mutex_lock(&kw.lock);
	atomic_store_explicit(&kw.net_waiting, 0, memory_order_relaxed);
}

/* Descriptors polled ahead of the connections: the wake eventfd, the
 * agent socket, one listener per path. */
#define POLL_FIXED (2 + KW_NPATHS)

static void *thread_main(void *arg)
{
	struct pollfd *pfd = NULL;
	struct kw_conn **pc = NULL;
	size_t cap = 0;

	(void)arg;
	pthread_mutex_lock(&kw.lock);
	while (!kw.stopped) {
		uint64_t now = kw_now_ms();
		size_t n = 0, nconn = 0, i;
		struct kw_conn *c;
		int timeout, lfd[KW_NPATHS], cfd, app, p;

		service(now);
		if (kw.stopped)
			break;
		for (c = kw.conns; c; c = c->next)
			nconn++;
		if (nconn + POLL_FIXED > cap) {
			cap = (nconn + POLL_FIXED) * 2;
			pfd = realloc(pfd, cap * sizeof(*pfd));
			pc = realloc(pc, cap * sizeof(*pc));
			if (!pfd || !pc)
				abort();	/* cannot run the transport at all */
		}
		pfd[n].fd = kw.wake_fd;
		pfd[n++].events = POLLIN;
		cfd = kw_ctl_fd();
		pfd[n].fd = cfd;
		pfd[n++].events = POLLIN;
		for (p = 0; p < KW_NPATHS; p++) {	/* incoming connections */
			lfd[p] = kw_paths[p]->listen_fd();
			pfd[n].fd = lfd[p];
			pfd[n++].events = POLLIN;
		}
		app = kw_app_active(now);
		for (c = kw.conns; c; c = c->next) {
			pc[n] = c;
			c->ops->poll_events(c, &pfd[n]);
			if (app && c->state == KW_CONN_UP)
				pfd[n].events = 0;	/* the application does the I/O */
			n++;
		}
		timeout = next_timeout(now);
		if (app && timeout > KW_APP_IDLE_MS)
			timeout = KW_APP_IDLE_MS;
		pthread_mutex_unlock(&kw.lock);
		if (poll(pfd, n, timeout) < 0 && errno != EINTR)
			usleep(1000);
		net_lock();
		if (pfd[0].revents) {
			uint64_t v;

			if (read(kw.wake_fd, &v, sizeof(v)) < 0)
				v = 0;
		}
		if (cfd >= 0 && pfd[1].revents)
			kw_ctl_readable();
		for (p = 0; p < KW_NPATHS; p++) {
			struct kw_conn *a;

			if (lfd[p] < 0 || !pfd[2 + p].revents)
				continue;
			while ((a = kw_paths[p]->accept()))
				kw_conn_accept(a, kw_now_ms());
		}
		for (i = POLL_FIXED; i < n; i++) {
			c = pc[i];
			if (!pfd[i].revents || c->close_me || c->state == KW_CONN_CONNECTING)
				continue;
			kw_conn_progress(c, pfd[i].revents);
		}
	}
	reap_conns();
	pthread_mutex_unlock(&kw.lock);
	free(pfd);
	free(pc);
	return NULL;
}

int kw_thread_start(void)
{
	kw.wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (kw.wake_fd < 0)
		return -1;
	kw.stop = kw.stopped = 0;
	if (pthread_create(&kw.thread, NULL, thread_main, NULL)) {
		close(kw.wake_fd);
		kw.wake_fd = -1;
		return -1;
	}
	kw.thread_running = 1;
	return 0;
}

void kw_thread_stop(void)
{
	if (!kw.thread_running)
		return;
	pthread_mutex_lock(&kw.lock);
	kw.stop = 1;
	stop_deadline_ms = kw_now_ms() + kw.finalize_timeout_ms;
	pthread_mutex_unlock(&kw.lock);
	kw_wake();
	pthread_join(kw.thread, NULL);
	kw.thread_running = 0;
	close(kw.wake_fd);
	kw.wake_fd = -1;
}
