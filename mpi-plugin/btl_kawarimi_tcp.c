/*
 * kawarimi BTL: the TCP path.
 *
 * One stream per endpoint, frames back to back. Small frames are read in
 * bulk into a staging buffer (one recv for many frames); a large frame's
 * payload is read straight into its receive fragment, and the answer to
 * our GET straight into the user's buffer, so a large message costs one
 * kernel copy on each side, like the stock tcp BTL's put. Output is one sendmsg
 * of header + payload segments (no copy of the payload); a partial write
 * is finished from progress() on POLLOUT.
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "btl_kawarimi.h"
#include "btl_kawarimi_tcp.h"

#define STAGE_SIZE (64 * 1024)
#define MAX_OUT_IOV 4

struct kw_tcp_conn {
	struct kw_conn c;
	int fd;
	struct iovec out[MAX_OUT_IOV];	/* rest of a partly written frame */
	int out_cnt, out_idx;
	unsigned char *stage;
	size_t stage_len, stage_off;
	struct kw_rfrag *cur;		/* large frame being read in place */
};

/*
 * The listeners: one socket per local TCP address, all on one port (the
 * address list carries a single port), never the wildcard address, so a
 * rank is reachable only over the interfaces btl_kawarimi_if_include lets
 * it use. The network thread polls one descriptor for all of them: an
 * epoll set, readable while any listener has a connection waiting.
 */
static struct {
	int fd;
	uint32_t ip;		/* network byte order */
} lis[KW_MAX_ADDRS];
static int nlis;
static int lis_epfd = -1;
static uint16_t lis_port;

/* Tries with a fresh port (0) before the BTL gives up at init. */
#define PORT_TRIES 16

static struct kw_tcp_conn *tc(struct kw_conn *c)
{
	return (struct kw_tcp_conn *)c;
}

/* A listening socket on ip:port (port 0: any; *port gets the one bound).
 * Returns the descriptor, or -1 with errno set. */
static int listen_on(uint32_t ip, uint16_t *port)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(*port),
				  .sin_addr.s_addr = ip };
	socklen_t len = sizeof(sa);
	int one = 1, fd, e;

	fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	/* Our own connections of the last epoch may be in TIME_WAIT on it. */
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) || listen(fd, 128) ||
	    getsockname(fd, (struct sockaddr *)&sa, &len)) {
		e = errno;
		close(fd);
		errno = e;
		return -1;
	}
	*port = ntohs(sa.sin_port);
	return fd;
}

static int lis_find(uint32_t ip)
{
	int i;

	for (i = 0; i < nlis; i++)
		if (lis[i].ip == ip)
			return i;
	return -1;
}

static void lis_close(int i)
{
	char a[24];

	kw_ip_str(lis[i].ip, a, sizeof(a));
	kw_log(1, "no longer listening on %s:%u", a, lis_port);
	if (lis_epfd >= 0)
		epoll_ctl(lis_epfd, EPOLL_CTL_DEL, lis[i].fd, NULL);
	close(lis[i].fd);
	lis[i] = lis[--nlis];
}

static int lis_add(int fd, uint32_t ip)
{
	struct epoll_event ev = { .events = EPOLLIN };

	ev.data.fd = fd;
	if (epoll_ctl(lis_epfd, EPOLL_CTL_ADD, fd, &ev))
		return -1;
	lis[nlis].fd = fd;
	lis[nlis].ip = ip;
	nlis++;
	return 0;
}

/* Whether the TCP address at index i is the first entry with its IP (the
 * verbs entries repeat the IPs of their interfaces). */
static int first_tcp(const struct kw_addrs *local, int i)
{
	int j;

	if (local->a[i].fabric != KW_FABRIC_TCP)
		return 0;
	for (j = 0; j < i; j++)
		if (local->a[j].fabric == KW_FABRIC_TCP && local->a[j].ip == local->a[i].ip)
			return 0;
	return 1;
}

/* Listens on every TCP address of local on *port (0: the first listener
 * picks one and the others follow it). Returns 0, or -1 with errno set
 * and *bad the address that failed; nothing stays open then. */
static int listen_all(const struct kw_addrs *local, uint16_t *port, uint32_t *bad)
{
	int i, fd;

	for (i = 0; i < local->n; i++) {
		if (!first_tcp(local, i))
			continue;
		fd = listen_on(local->a[i].ip, port);
		if (fd < 0 || lis_add(fd, local->a[i].ip)) {
			int e = errno;

			if (fd >= 0)
				close(fd);
			*bad = local->a[i].ip;
			while (nlis)
				close(lis[--nlis].fd);
			errno = e;
			return -1;
		}
	}
	return 0;
}

static void log_listeners(const char *when)
{
	char a[24];
	int i;

	for (i = 0; i < nlis; i++) {
		kw_ip_str(lis[i].ip, a, sizeof(a));
		kw_log(1, "%s: listening on %s:%u", when, a, lis_port);
	}
}

static int tcp_listen(struct kw_addrs *local, uint16_t port, char *err, size_t errlen)
{
	uint32_t bad = 0;
	uint16_t p = port;
	char a[24];
	int tries, e;

	lis_epfd = epoll_create1(EPOLL_CLOEXEC);
	if (lis_epfd < 0) {
		snprintf(err, errlen, "epoll_create1: %s", strerror(errno));
		return -1;
	}
	/* With any port allowed, a port free on the first address may be
	 * taken on another one: try a fresh one then. */
	for (tries = 0; tries < PORT_TRIES; tries++) {
		p = port;
		if (!listen_all(local, &p, &bad)) {
			lis_port = local->port = p;
			log_listeners("init");
			return 0;
		}
		if (port || errno != EADDRINUSE)
			break;
	}
	e = errno;
	kw_ip_str(bad, a, sizeof(a));
	snprintf(err, errlen, "listening on %s port %u (the address from "
		 "btl_kawarimi_if_include, the port from btl_kawarimi_port%s): %s", a, p,
		 port ? "" : " = 0, the port the first address got", strerror(e));
	close(lis_epfd);
	lis_epfd = -1;
	return -1;
}

static void tcp_release(void)
{
	while (nlis)
		close(lis[--nlis].fd);
	if (lis_epfd >= 0)
		close(lis_epfd);
	lis_epfd = -1;
}

static void tcp_quiesce(void)
{
}

/*
 * The addresses may have changed (a move to another network): listen on
 * the new ones, on the same port, and close the listeners of addresses
 * that are gone, before the new list is published. A listener whose
 * address stays is kept. An address whose port is taken cannot be
 * listened on: it is dropped from the list (peers would dial it in vain)
 * and the error names it.
 */
static int tcp_resume(struct kw_addrs *local, char *err, size_t errlen)
{
	uint32_t want[KW_MAX_ADDRS];
	int nwant = 0, i, j, rc = 0;
	char a[24];

	err[0] = '\0';
	if (lis_epfd < 0) {
		snprintf(err, errlen, "no listener since init");
		return -1;
	}
	for (i = 0; i < local->n; i++)
		if (first_tcp(local, i))
			want[nwant++] = local->a[i].ip;
	for (i = nlis - 1; i >= 0; i--) {
		for (j = 0; j < nwant && want[j] != lis[i].ip; j++)
			;
		if (j == nwant)
			lis_close(i);
	}
	for (i = 0; i < nwant; i++) {
		uint16_t p = lis_port;
		int fd;

		if (lis_find(want[i]) >= 0)
			continue;
		kw_ip_str(want[i], a, sizeof(a));
		fd = listen_on(want[i], &p);
		if (fd < 0 || lis_add(fd, want[i])) {
			size_t l = strlen(err);

			snprintf(err + l, errlen - l, "%scannot listen on %s port %u (%s), the "
				 "port of the published address list: address left out of it "
				 "(free the port, or set btl_kawarimi_port to one that is free "
				 "on every network)", l ? "; " : "", a, lis_port,
				 strerror(errno));
			if (fd >= 0)
				close(fd);
			rc = -1;
			continue;
		}
		kw_log(1, "resume: listening on %s:%u", a, lis_port);
	}
	/* Publish only what is listened on. */
	for (i = 0, j = 0; i < local->n; i++)
		if (local->a[i].fabric != KW_FABRIC_TCP || lis_find(local->a[i].ip) >= 0)
			local->a[j++] = local->a[i];
	local->n = (uint16_t)j;
	local->port = lis_port;
	return rc;
}

static int tcp_listen_fd(void)
{
	return lis_epfd;
}

/* The user timeout only runs while data waits for the peer's kernel.  A
 * rank whose frames that kernel already acknowledged, but whose peer's
 * BTL acknowledgment was lost with the link, has nothing in flight and
 * would wait on a dead connection for ever: keepalive probes make such an
 * idle connection fail too, a user timeout after they go unanswered. */
static void tcp_keepalive(int fd, int user_timeout_ms)
{
	int one = 1, idle = user_timeout_ms / 1000, intvl = 1, cnt = 3;

	if (idle < 1)
		idle = 1;
	setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
	setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
	setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof(intvl));
	setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt));
}

static struct kw_tcp_conn *conn_new(int fd)
{
	struct kw_tcp_conn *t = calloc(1, sizeof(*t));
	int one = 1;

	if (!t)
		return NULL;
	t->stage = malloc(STAGE_SIZE);
	if (!t->stage) {
		free(t);
		return NULL;
	}
	t->fd = fd;
	t->c.ops = &kw_tcp_path;
	/* Small frames (ob1 headers, acks) must not wait for Nagle. */
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	/* A vanished link never resets the stream: without this, data
	 * would wait for TCP's own give-up (about 15 minutes) before the
	 * reconnect logic could move it to another path. */
	if (kw.tcp_user_timeout_ms > 0) {
		unsigned int ut = (unsigned int)kw.tcp_user_timeout_ms;

		setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &ut, sizeof(ut));
		tcp_keepalive(fd, kw.tcp_user_timeout_ms);
	}
	return t;
}

static void fill_addr(struct kw_addr *a, const struct sockaddr_in *sa)
{
	memset(a, 0, sizeof(*a));
	a->ip = sa->sin_addr.s_addr;
	a->prefixlen = 32;
}

static struct kw_conn *tcp_accept(void)
{
	struct sockaddr_in peer, self;
	socklen_t plen = sizeof(peer), slen = sizeof(self);
	struct kw_tcp_conn *t;
	int fd, i;

	for (i = 0, fd = -1; i < nlis && fd < 0; i++) {
		plen = sizeof(peer);
		fd = accept4(lis[i].fd, (struct sockaddr *)&peer, &plen,
			     SOCK_NONBLOCK | SOCK_CLOEXEC);
	}
	if (fd < 0) {
		struct epoll_event ev[KW_MAX_ADDRS];

		/* All drained: clear the set's ready list, so the next poll
		 * of it waits for a new connection. */
		if (lis_epfd >= 0)
			(void)epoll_wait(lis_epfd, ev, KW_MAX_ADDRS, 0);
		return NULL;
	}
	t = conn_new(fd);
	if (!t) {
		close(fd);
		return NULL;
	}
	getsockname(fd, (struct sockaddr *)&self, &slen);
	fill_addr(&t->c.cand.local, &self);
	fill_addr(&t->c.cand.remote, &peer);
	t->c.state = KW_CONN_HELLO_WAIT;
	return &t->c;
}

static int tcp_dial(uint32_t local_ip, uint32_t remote_ip, uint16_t port, int *err)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	int fd;

	fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		*err = errno;
		return -1;
	}
	if (local_ip) {
		/* Bind the source so the stream leaves over the chosen fabric
		 * even when routing would prefer another interface. */
		sa.sin_addr.s_addr = local_ip;
		if (bind(fd, (struct sockaddr *)&sa, sizeof(sa))) {
			*err = errno;
			close(fd);
			return -1;
		}
	}
	sa.sin_addr.s_addr = remote_ip;
	sa.sin_port = htons(port);
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) && errno != EINPROGRESS) {
		*err = errno;
		close(fd);
		return -1;
	}
	return fd;
}

static int tcp_dial_result(int fd)
{
	int e = 0;
	socklen_t len = sizeof(e);

	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &len))
		return -errno;
	if (e == EINPROGRESS)
		return -EINPROGRESS;
	return -e;
}

static struct kw_conn *tcp_connect(const struct kw_cand *cand, int *err)
{
	struct kw_tcp_conn *t;
	int fd;

	fd = tcp_dial(cand->local.ip, cand->remote.ip, cand->port, err);
	if (fd < 0)
		return NULL;
	t = conn_new(fd);
	if (!t) {
		*err = ENOMEM;
		close(fd);
		return NULL;
	}
	t->c.cand = *cand;
	t->c.state = KW_CONN_CONNECTING;
	t->c.initiator = 1;
	return &t->c;
}

static int tcp_connect_done(struct kw_conn *c)
{
	return tcp_dial_result(tc(c)->fd);
}

static int flush_out(struct kw_tcp_conn *t)
{
	while (t->out_idx < t->out_cnt) {
		struct msghdr m = { .msg_iov = t->out + t->out_idx,
				    .msg_iovlen = t->out_cnt - t->out_idx };
		ssize_t n = sendmsg(t->fd, &m, MSG_NOSIGNAL | MSG_DONTWAIT);

		if (n < 0) {
			if (errno == EAGAIN || errno == EINTR)
				return 0;
			return -errno;
		}
		while (n > 0) {
			struct iovec *v = &t->out[t->out_idx];

			if ((size_t)n >= v->iov_len) {
				n -= v->iov_len;
				t->out_idx++;
			} else {
				v->iov_base = (char *)v->iov_base + n;
				v->iov_len -= n;
				n = 0;
			}
		}
	}
	t->out_cnt = t->out_idx = 0;
	return 0;
}

static int tcp_send(struct kw_conn *c, const struct iovec *iov, int cnt)
{
	struct kw_tcp_conn *t = tc(c);
	int i, j;

	if (t->out_cnt)
		return -EAGAIN;
	if (cnt > MAX_OUT_IOV)
		return -EINVAL;
	for (i = 0, j = 0; i < cnt; i++)
		if (iov[i].iov_len)
			t->out[j++] = iov[i];
	t->out_cnt = j;
	t->out_idx = 0;
	c->frames_out++;
	return flush_out(t);
}

static int tcp_idle(const struct kw_conn *c)
{
	return ((const struct kw_tcp_conn *)c)->out_cnt == 0;
}

static void tcp_poll_events(const struct kw_conn *c, struct pollfd *p)
{
	const struct kw_tcp_conn *t = (const struct kw_tcp_conn *)c;

	p->fd = t->fd;
	p->events = c->state == KW_CONN_CONNECTING ? POLLOUT :
		    POLLIN | (t->out_cnt ? POLLOUT : 0);
}

/* Parses complete frames out of the staging buffer. Returns 0, 1 when a
 * large frame switched to in-place reading, or negative to break. */
static int parse_stage(struct kw_tcp_conn *t)
{
	while (t->stage_len - t->stage_off >= sizeof(struct kw_hdr)) {
		unsigned char *p = t->stage + t->stage_off;
		size_t avail = t->stage_len - t->stage_off - sizeof(struct kw_hdr);
		struct kw_rfrag *r;
		struct kw_hdr h;
		int rc;

		memcpy(&h, p, sizeof(h));
		if (!h.len && h.type != KW_FRAME_DATA) {
			if (kw_conn_hdr_ok(&t->c, &h))
				return -EPROTO;
			t->stage_off += sizeof(h);
			t->c.frames_in++;
			rc = kw_conn_frame_in(&t->c, &h, NULL);
			if (rc)
				return rc;
			continue;
		}
		if (avail < h.len && h.len <= STAGE_SIZE / 2)
			break;	/* small frame: wait for the rest */
		r = kw_conn_rx_alloc(&t->c, &h);
		if (!r)
			return -EPROTO;
		kw_rfrag_fill(r, p + sizeof(h), avail < h.len ? avail : h.len);
		t->stage_off += sizeof(h) + r->filled;
		if (r->filled < h.len) {
			t->cur = r;
			return 1;
		}
		t->c.frames_in++;
		rc = kw_conn_frame_in(&t->c, &r->hdr, r);
		if (rc)
			return rc;
	}
	return 0;
}

static int read_in(struct kw_tcp_conn *t)
{
	int rounds;

	for (rounds = 0; rounds < 64; rounds++) {
		ssize_t n;

		if (t->cur) {
			struct kw_rfrag *r = t->cur;

			size_t want = r->hdr.len - r->filled;

			if (r->filled < r->skip) {
				unsigned char pad[KW_GET_PAD_MAX];

				want = r->skip - r->filled;
				n = recv(t->fd, pad, want, MSG_DONTWAIT);
			} else {
				n = recv(t->fd, r->dst + (r->filled - r->skip), want, MSG_DONTWAIT);
			}
			if (n > 0) {
				r->filled += n;
				if (r->filled == r->hdr.len) {
					int rc;

					t->cur = NULL;
					t->c.frames_in++;
					rc = kw_conn_frame_in(&t->c, &r->hdr, r);
					if (rc)
						return rc;
				}
				/* A short read emptied the socket: poll says when
				 * there is more (level-triggered), so spare the
				 * EAGAIN round trip. */
				if ((size_t)n < want)
					return 0;
				continue;
			}
		} else {
			int rc;

			if (t->stage_off) {
				memmove(t->stage, t->stage + t->stage_off, t->stage_len - t->stage_off);
				t->stage_len -= t->stage_off;
				t->stage_off = 0;
			}
			size_t want = STAGE_SIZE - t->stage_len;

			n = recv(t->fd, t->stage + t->stage_len, want, MSG_DONTWAIT);
			if (n > 0) {
				t->stage_len += n;
				rc = parse_stage(t);
				if (rc < 0)
					return rc;
				if ((size_t)n < want && !t->cur)
					return 0;
				continue;
			}
		}
		if (n == 0)
			return -ECONNRESET;	/* EOF without BYE/FIN handshake */
		if (errno == EAGAIN || errno == EINTR)
			return 0;
		return -errno;
	}
	return 0;
}

static int tcp_progress(struct kw_conn *c, short revents)
{
	struct kw_tcp_conn *t = tc(c);
	int rc;

	if (t->out_cnt && (revents & (POLLOUT | POLLERR | POLLHUP))) {
		rc = flush_out(t);
		if (rc)
			return rc;
	}
	if (revents & (POLLIN | POLLERR | POLLHUP))
		return read_in(t);
	return 0;
}

static void tcp_close(struct kw_conn *c)
{
	struct kw_tcp_conn *t = tc(c);

	close(t->fd);
	if (t->cur)
		kw_rfrag_free(t->cur);
	free(t->stage);
	free(t);
}

const struct kw_path_ops kw_tcp_path = {
	.name = "tcp",
	.fabric = KW_FABRIC_TCP,
	.listen = tcp_listen,
	.release = tcp_release,
	.quiesce = tcp_quiesce,
	.resume = tcp_resume,
	.listen_fd = tcp_listen_fd,
	.accept = tcp_accept,
	.connect = tcp_connect,
	.connect_done = tcp_connect_done,
	.send = tcp_send,
	.idle = tcp_idle,
	.poll_events = tcp_poll_events,
	.progress = tcp_progress,
	.close = tcp_close,
	.probe = tcp_dial,
	.probe_result = tcp_dial_result,
};
