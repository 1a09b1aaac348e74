/* SPDX-License-Identifier: MIT */
/*
 * kwl-relay: a TCP relay that adds a one-way delay (and optionally a rate
 * limit) in each direction: the lab's WAN delay, since this kernel has no
 * netem.  Test equipment, not part of kawarimi proper.
 *
 *   kwl-relay [--delay-ms MS] [--rate RATE] [--queue BYTES] \
 *             LISTEN-IP:PORT=TARGET-IP:PORT ...
 *
 * Every byte read on one side is held until MS milliseconds after it
 * arrived, then written to the other side, so a request/response sees
 * 2 x MS more round-trip time and a bulk stream keeps its throughput as long
 * as the queue (default 8 MiB per direction, > bandwidth x delay) does not
 * fill.  When it fills, the relay stops reading: TCP backpressure, bounded
 * memory.  RATE (e.g. 920mbit, 100mbit, 10mbit) caps each direction with a
 * token bucket; the lab shapes the rate with tbf on its veth instead and
 * leaves this off.  A single thread, poll(), a handful of connections.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_RULES 32
#define MAX_CONNS 64
#define CHUNK 65536

struct chunk {
	struct chunk *next;
	uint64_t due_ns;	/* when it may leave */
	size_t len, off;
	char data[];
};

/* One direction of a connection: bytes read from src, queued, sent to dst. */
struct flow {
	int src, dst;
	struct chunk *head, *tail;
	size_t queued;
	bool eof;		/* src said EOF; shut dst down once drained */
	bool done;
	double tokens;		/* rate limit, bytes */
	uint64_t refill_ns;
};

struct conn {
	bool used, connected;
	int client, server;
	struct flow up, down;	/* client->server, server->client */
};

struct rule {
	int fd;
	struct sockaddr_in target;
};

static struct rule rules[MAX_RULES];
static int nrules;
static struct conn conns[MAX_CONNS];
static uint64_t delay_ns;
static double rate_bps;		/* bytes per second, 0 = unlimited */
static size_t queue_cap = 8u << 20;
static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
	(void)sig;
	stop = 1;
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int parse_addr(const char *s, struct sockaddr_in *sa)
{
	char host[64];
	const char *colon = strrchr(s, ':');
	char *end;
	long port;

	if (!colon || (size_t)(colon - s) >= sizeof(host))
		return -1;
	memcpy(host, s, (size_t)(colon - s));
	host[colon - s] = '\0';
	port = strtol(colon + 1, &end, 10);
	if (*end || port <= 0 || port > 65535)
		return -1;
	memset(sa, 0, sizeof(*sa));
	sa->sin_family = AF_INET;
	sa->sin_port = htons((uint16_t)port);
	return inet_pton(AF_INET, host, &sa->sin_addr) == 1 ? 0 : -1;
}

/* "920mbit", "100kbit", "1gbit", "5000000" (bits per second) -> bytes/s. */
static int parse_rate(const char *s, double *out)
{
	char *end;
	double v = strtod(s, &end);

	if (end == s || v < 0)
		return -1;
	if (!strcmp(end, "gbit"))
		v *= 1e9;
	else if (!strcmp(end, "mbit"))
		v *= 1e6;
	else if (!strcmp(end, "kbit"))
		v *= 1e3;
	else if (*end && strcmp(end, "bit"))
		return -1;
	*out = v / 8;
	return 0;
}

static int add_rule(const char *spec)
{
	const char *eq = strchr(spec, '=');
	char listen_s[80];
	struct sockaddr_in la;
	int one = 1, fd;

	if (!eq || (size_t)(eq - spec) >= sizeof(listen_s) || nrules == MAX_RULES)
		return -1;
	memcpy(listen_s, spec, (size_t)(eq - spec));
	listen_s[eq - spec] = '\0';
	if (parse_addr(listen_s, &la) || parse_addr(eq + 1, &rules[nrules].target))
		return -1;
	fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -2;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&la, sizeof(la)) || listen(fd, 16)) {
		fprintf(stderr, "kwl-relay: cannot listen on '%s': %s\n", listen_s, strerror(errno));
		close(fd);
		return -2;
	}
	rules[nrules++].fd = fd;
	return 0;
}

static void flow_init(struct flow *f, int src, int dst)
{
	memset(f, 0, sizeof(*f));
	f->src = src;
	f->dst = dst;
	f->refill_ns = now_ns();
}

static void flow_free(struct flow *f)
{
	while (f->head) {
		struct chunk *c = f->head;

		f->head = c->next;
		free(c);
	}
	f->tail = NULL;
	f->queued = 0;
}

static void conn_close(struct conn *c)
{
	flow_free(&c->up);
	flow_free(&c->down);
	close(c->client);
	close(c->server);
	c->used = false;
}

static void accept_one(struct rule *r)
{
	int one = 1, client, server;
	struct conn *c = NULL;

	client = accept4(r->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
	if (client < 0)
		return;
	for (int i = 0; i < MAX_CONNS; i++)
		if (!conns[i].used) {
			c = &conns[i];
			break;
		}
	server = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (!c || server < 0 ||
	    (connect(server, (struct sockaddr *)&r->target, sizeof(r->target)) &&
	     errno != EINPROGRESS)) {
		fprintf(stderr, "kwl-relay: dropping a connection: %s\n",
			c ? strerror(errno) : "too many connections");
		close(client);
		if (server >= 0)
			close(server);
		return;
	}
	setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	setsockopt(server, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	memset(c, 0, sizeof(*c));
	c->used = true;
	c->client = client;
	c->server = server;
	flow_init(&c->up, client, server);
	flow_init(&c->down, server, client);
}

/* Reads what src has into a new chunk, due delay_ns from now. */
static int flow_read(struct flow *f)
{
	struct chunk *c = malloc(sizeof(*c) + CHUNK);
	ssize_t n;

	if (!c)
		return -1;
	n = read(f->src, c->data, CHUNK);
	if (n <= 0) {
		free(c);
		if (n == 0) {
			f->eof = true;
			return 0;
		}
		return errno == EAGAIN || errno == EINTR ? 0 : -1;
	}
	c->next = NULL;
	c->len = (size_t)n;
	c->off = 0;
	c->due_ns = now_ns() + delay_ns;
	if (f->tail)
		f->tail->next = c;
	else
		f->head = c;
	f->tail = c;
	f->queued += (size_t)n;
	return 0;
}

static void refill(struct flow *f, uint64_t now)
{
	double burst = rate_bps / 1000 > CHUNK ? rate_bps / 1000 : CHUNK;

	f->tokens += rate_bps * (double)(now - f->refill_ns) / 1e9;
	if (f->tokens > burst)
		f->tokens = burst;
	f->refill_ns = now;
}

/* Writes every due byte the rate allows; 0 ok, -1 connection broken. */
static int flow_write(struct flow *f, uint64_t now)
{
	while (f->head && f->head->due_ns <= now) {
		struct chunk *c = f->head;
		size_t want = c->len - c->off;
		ssize_t n;

		if (rate_bps > 0) {
			refill(f, now);
			if (f->tokens < 1)
				return 0;
			if ((double)want > f->tokens)
				want = (size_t)f->tokens;
		}
		n = write(f->dst, c->data + c->off, want);
		if (n < 0)
			return errno == EAGAIN || errno == EINTR ? 0 : -1;
		if (rate_bps > 0)
			f->tokens -= (double)n;
		c->off += (size_t)n;
		f->queued -= (size_t)n;
		if (c->off < c->len)
			return 0;
		f->head = c->next;
		if (!f->head)
			f->tail = NULL;
		free(c);
	}
	if (f->eof && !f->head && !f->done) {
		shutdown(f->dst, SHUT_WR);
		f->done = true;
	}
	return 0;
}

/* When this flow next needs the loop without any fd event (ns, 0 = never). */
static uint64_t flow_wakeup(const struct flow *f, uint64_t now)
{
	uint64_t t;

	if (!f->head)
		return 0;
	t = f->head->due_ns;
	if (rate_bps > 0 && f->tokens < 1) {
		uint64_t refill_at = now + (uint64_t)(1e9 / rate_bps * 1024);

		if (refill_at > t)
			t = refill_at;
	}
	return t;
}

static void usage(const char *prog)
{
	fprintf(stderr,
		"usage: %s [--delay-ms MS] [--rate RATE] [--queue BYTES] LISTEN-IP:PORT=TARGET-IP:PORT ...\n"
		"  e.g. %s --delay-ms 3.75 127.0.0.1:4401=10.77.0.2:4401\n", prog, prog);
}

static int parse_args(int argc, char *argv[])
{
	for (int i = 1; i < argc; i++) {
		char *end;
		int rc;

		if (!strcmp(argv[i], "--delay-ms") && i + 1 < argc) {
			double ms = strtod(argv[++i], &end);

			if (*end || ms < 0 || ms > 10000) {
				fprintf(stderr, "kwl-relay: bad --delay-ms '%s'; give milliseconds, 0 to 10000\n", argv[i]);
				return -1;
			}
			delay_ns = (uint64_t)(ms * 1e6);
		} else if (!strcmp(argv[i], "--rate") && i + 1 < argc) {
			if (parse_rate(argv[++i], &rate_bps)) {
				fprintf(stderr, "kwl-relay: bad --rate '%s'; use e.g. 920mbit, 100kbit, 1gbit\n", argv[i]);
				return -1;
			}
		} else if (!strcmp(argv[i], "--queue") && i + 1 < argc) {
			queue_cap = strtoul(argv[++i], &end, 10);
			if (*end || queue_cap < CHUNK) {
				fprintf(stderr, "kwl-relay: bad --queue '%s'; give bytes, at least %d\n", argv[i], CHUNK);
				return -1;
			}
		} else if ((rc = add_rule(argv[i])) != 0) {
			if (rc == -1)
				fprintf(stderr, "kwl-relay: bad rule '%s'; expected LISTEN-IP:PORT=TARGET-IP:PORT\n", argv[i]);
			return -1;
		}
	}
	if (!nrules) {
		usage(argv[0]);
		return -1;
	}
	return 0;
}

/* pollfd slots: one per rule, then four per connection. */
static int build_poll(struct pollfd *p, uint64_t now, uint64_t *wake)
{
	int n = 0;

	for (int i = 0; i < nrules; i++)
		p[n++] = (struct pollfd){ .fd = rules[i].fd, .events = POLLIN };
	for (int i = 0; i < MAX_CONNS; i++) {
		struct conn *c = &conns[i];
		struct flow *fl[2] = { &c->up, &c->down };

		if (!c->used)
			continue;
		for (int k = 0; k < 2; k++) {
			struct flow *f = fl[k];
			uint64_t t = flow_wakeup(f, now);
			short rd = (!f->eof && f->queued < queue_cap) ? POLLIN : 0;
			short wr = (f->head && f->head->due_ns <= now) ? POLLOUT : 0;

			if (f->src == c->server && !c->connected)
				rd = 0;
			if (f->dst == c->server && !c->connected)
				wr = POLLOUT; /* learn when the connect finishes */
			p[n++] = (struct pollfd){ .fd = f->src, .events = rd };
			p[n++] = (struct pollfd){ .fd = f->dst, .events = wr };
			if (t && (!*wake || t < *wake))
				*wake = t;
		}
	}
	return n;
}

static int conn_step(struct conn *c, const struct pollfd *p, uint64_t now)
{
	struct flow *fl[2] = { &c->up, &c->down };

	if (!c->connected && (p[1].revents & (POLLOUT | POLLERR | POLLHUP))) {
		int err = 0;
		socklen_t len = sizeof(err);

		getsockopt(c->server, SOL_SOCKET, SO_ERROR, &err, &len);
		if (err) {
			fprintf(stderr, "kwl-relay: connect to target: %s\n", strerror(err));
			return -1;
		}
		c->connected = true;
	}
	for (int k = 0; k < 2; k++) {
		const struct pollfd *src = &p[2 * k];

		if ((src->revents & (POLLIN | POLLHUP | POLLERR)) && src->events & POLLIN)
			if (flow_read(fl[k]))
				return -1;
		if (c->connected && flow_write(fl[k], now))
			return -1;
	}
	return c->up.done && c->down.done ? -1 : 0;
}

int main(int argc, char *argv[])
{
	static struct pollfd p[MAX_RULES + 4 * MAX_CONNS];

	signal(SIGPIPE, SIG_IGN);
	signal(SIGTERM, on_signal);
	signal(SIGINT, on_signal);
	if (parse_args(argc, argv))
		return 2;
	while (!stop) {
		uint64_t now = now_ns(), wake = 0;
		struct timespec ts, *tsp = NULL;
		int n = build_poll(p, now, &wake), k;

		if (wake) {
			uint64_t d = wake > now ? wake - now : 0;

			ts.tv_sec = (time_t)(d / 1000000000u);
			ts.tv_nsec = (long)(d % 1000000000u);
			tsp = &ts;
		}
		if (ppoll(p, (nfds_t)n, tsp, NULL) < 0 && errno != EINTR)
			break;
		now = now_ns();
		/* Walk the connections in the order build_poll() listed them,
		 * before accepting new ones, which may take a free slot. */
		k = nrules;
		for (int i = 0; i < MAX_CONNS && k < n; i++) {
			if (!conns[i].used)
				continue;
			if (conn_step(&conns[i], &p[k], now))
				conn_close(&conns[i]);
			k += 4;
		}
		for (k = 0; k < nrules; k++)
			if (p[k].revents & POLLIN)
				accept_one(&rules[k]);
	}
	return 0;
}
