/* SPDX-License-Identifier: MIT */
/*
 * kwsim-qemu: many simulated QEMUs in one process, for measuring the
 * coordinator at scale (bench/scale/README.md).
 *
 *   kwsim-qemu --dir DIR --vms N [--ram BYTES] [--disk BYTES] [--wan BYTES/s]
 *              [--dirty BYTES/s] [--tick-ms MS]
 *
 * For VM i (1..N) it listens on DIR/s<i>.qmp (a running source) and
 * DIR/d<i>.qmp (a destination started -incoming defer -S) and answers
 * the QMP commands `kawarimi migrate` sends for `storage: incremental`
 * or `shared` without agents or HCAs: the greeting, qmp_capabilities,
 * query-status, query-named-block-nodes, nbd-server-start/stop,
 * block-export-add/del, blockdev-add/del, blockdev-mirror,
 * block-job-set-speed, query-block-jobs, block-job-cancel,
 * migrate-set-capabilities/-parameters, migrate-incoming, migrate,
 * migrate-continue, query-migrate, cont, quit.  Anything else gets
 * CommandNotFound, as from a QEMU that lacks it.
 *
 * Nothing is copied: a mirror's offset and a migration's transferred
 * bytes advance on the real clock, every --tick-ms, at a rate that is the
 * job's own limit (the mirror's speed, the migration's max-bandwidth, as
 * the coordinator set them) and a max-min fair share of the modelled WAN
 * cap (--wan) among all transfers moving at that moment.  The events
 * follow what QEMU 7.2 does: BLOCK_JOB_READY when a mirror has caught up,
 * BLOCK_JOB_COMPLETED after block-job-cancel of a ready mirror, MIGRATION
 * setup/active/pre-switchover (with pause-before-switchover)/device/
 * completed at the source and active/completed at the destination (with
 * the events capability).  --dirty is the guest's dirty rate while memory
 * migrates: the migration converges when what is left fits its
 * downtime-limit at the rate it gets.
 *
 * One epoll loop; a QMP socket serves one client at a time, like QEMU's.
 * The process needs about 4 descriptors per VM and raises its own
 * RLIMIT_NOFILE soft limit to the hard one.
 *
 * One file (~900 lines) on purpose: a stand-alone benchmark tool, its
 * command table, model and loop read together.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include <json-c/json.h>

#define MAX_LINE (1 << 20)

enum side { SRC, DST };

enum mig {
	MIG_NONE, MIG_SETUP, MIG_ACTIVE, MIG_PRESW, MIG_DEVICE, MIG_COMPLETED,
	MIG_CANCELLED,
};

static const char *mig_name[] = {
	"none", "setup", "active", "pre-switchover", "device", "completed", "cancelled",
};

struct conn;

/* One simulated QEMU: a VM's source or its destination. */
struct qemu {
	struct vm *vm;
	enum side side;
	char path[108];
	int lfd;
	struct conn *client;
	bool gone;		/* quit */
	const char *status;	/* query-status */
	bool events_cap, pause_cap;
	double max_bw;		/* migrate-set-parameters max-bandwidth, 0: QEMU's 128 MiB/s */
	int64_t downtime_ms;
	bool nbd_server, export, nbd_client;
};

/* A mirror job (one disk per VM). */
struct mirror {
	bool exists, ready, cancelled;
	char id[64];
	double speed;		/* 0: unlimited */
	double offset, len;
};

struct vm {
	int idx;
	struct qemu q[2];
	struct mirror job;
	enum mig mig, dst_mig;
	double ram_sent, ram_left, rate;	/* memory migration */
	double mig_start, mig_end;
	double stopped;		/* when the guest was stopped (pre-switchover) */
	int64_t downtime;
	bool continue_pending;
};

struct conn {
	struct qemu *q;
	int fd;
	char *in;
	size_t inlen, incap;
	char *out;
	size_t outlen, outpos, outcap;
	bool want_out;
	bool dead;		/* closed; freed after this epoll batch */
	struct conn *next_dead;
};

/* What epoll hands back: a listening socket, a client, or the timer. */
struct ptr {
	int kind;		/* 0 listen, 1 conn, 2 timer */
	void *p;
};

static int ep;
static struct conn *graveyard;
static struct vm *vms;
static int nvms;
static double ram_bytes = 512.0 * 1048576, disk_bytes = 64.0 * 1048576;
static double wan, dirty;
static int tick_ms = 10;

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(const char *what)
{
	fprintf(stderr, "kwsim-qemu: %s: %s\n", what, strerror(errno));
	exit(1);
}

/* ---- output -------------------------------------------------------------- */

static void ep_mod(struct conn *c, bool out)
{
	struct epoll_event ev = { .events = EPOLLIN | (out ? EPOLLOUT : 0) };

	if (c->want_out == out)
		return;
	c->want_out = out;
	ev.data.ptr = (void *)((uintptr_t)c | 1);
	epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
}

static void conn_close(struct conn *c);

static void flush(struct conn *c)
{
	while (!c->dead && c->outpos < c->outlen) {
		ssize_t w = send(c->fd, c->out + c->outpos, c->outlen - c->outpos,
				 MSG_NOSIGNAL | MSG_DONTWAIT);

		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			ep_mod(c, true);
			return;
		}
		if (w < 0) {
			conn_close(c);
			return;
		}
		c->outpos += (size_t)w;
	}
	if (c->dead)
		return;
	c->outpos = c->outlen = 0;
	ep_mod(c, false);
}

static void put(struct conn *c, json_object *o)
{
	size_t len;
	const char *s = json_object_to_json_string_length(o, JSON_C_TO_STRING_PLAIN, &len);

	if (c->outlen + len + 2 > c->outcap) {
		size_t cap = c->outcap ? c->outcap : 4096;

		while (cap < c->outlen + len + 2)
			cap *= 2;
		c->out = realloc(c->out, cap);
		if (!c->out)
			abort();
		c->outcap = cap;
	}
	memcpy(c->out + c->outlen, s, len);
	c->outlen += len;
	c->out[c->outlen++] = '\r';
	c->out[c->outlen++] = '\n';
	json_object_put(o);
}

static void event(struct qemu *q, const char *name, json_object *data)
{
	struct timespec ts;
	json_object *o, *t;

	if (!q->client || q->gone) {
		json_object_put(data);
		return;
	}
	clock_gettime(CLOCK_REALTIME, &ts);
	o = json_object_new_object();
	t = json_object_new_object();
	json_object_object_add(t, "seconds", json_object_new_int64(ts.tv_sec));
	json_object_object_add(t, "microseconds", json_object_new_int64(ts.tv_nsec / 1000));
	json_object_object_add(o, "timestamp", t);
	json_object_object_add(o, "event", json_object_new_string(name));
	json_object_object_add(o, "data", data ? data : json_object_new_object());
	put(q->client, o);
	flush(q->client);
}

static void mig_event(struct qemu *q, enum mig m)
{
	json_object *d;

	if (!q->events_cap)
		return;
	d = json_object_new_object();
	json_object_object_add(d, "status", json_object_new_string(mig_name[m]));
	event(q, "MIGRATION", d);
}

static json_object *job_obj(struct mirror *j)
{
	json_object *d = json_object_new_object();

	json_object_object_add(d, "type", json_object_new_string("mirror"));
	json_object_object_add(d, "device", json_object_new_string(j->id));
	json_object_object_add(d, "len", json_object_new_int64((int64_t)j->len));
	json_object_object_add(d, "offset", json_object_new_int64((int64_t)j->offset));
	json_object_object_add(d, "speed", json_object_new_int64((int64_t)j->speed));
	return d;
}

/* ---- commands ------------------------------------------------------------ */

static json_object *ok(void)
{
	return json_object_new_object();
}

static json_object *err(const char *cls, const char *fmt, const char *arg)
{
	char desc[256];
	json_object *e = json_object_new_object();

	snprintf(desc, sizeof(desc), fmt, arg);
	json_object_object_add(e, "class", json_object_new_string(cls));
	json_object_object_add(e, "desc", json_object_new_string(desc));
	return e;
}

static const char *arg_str(json_object *a, const char *k)
{
	json_object *v;

	return a && json_object_object_get_ex(a, k, &v) ? json_object_get_string(v) : NULL;
}

static bool arg_int(json_object *a, const char *k, int64_t *out)
{
	json_object *v;

	if (!a || !json_object_object_get_ex(a, k, &v))
		return false;
	*out = json_object_get_int64(v);
	return true;
}

static json_object *image(int64_t vsize, int64_t actual, const char *file, json_object *backing)
{
	json_object *i = json_object_new_object();

	json_object_object_add(i, "virtual-size", json_object_new_int64(vsize));
	json_object_object_add(i, "filename", json_object_new_string(file));
	json_object_object_add(i, "format", json_object_new_string("qcow2"));
	json_object_object_add(i, "actual-size", json_object_new_int64(actual));
	if (backing)
		json_object_object_add(i, "backing-image", backing);
	return i;
}

/* disk0: a qcow2 overlay holding --disk bytes on a 2 GiB base, 8 GiB virtual. */
static json_object *named_nodes(struct qemu *q)
{
	char file[160];
	int64_t vs = 8ll << 30;
	json_object *n = json_object_new_object(), *arr = json_object_new_array();

	snprintf(file, sizeof(file), "/sim/%c%d.qcow2", q->side == SRC ? 's' : 'd', q->vm->idx);
	json_object_object_add(n, "node-name", json_object_new_string("disk0"));
	json_object_object_add(n, "file", json_object_new_string(file));
	json_object_object_add(n, "drv", json_object_new_string("qcow2"));
	json_object_object_add(n, "image", image(vs, q->side == SRC ? (int64_t)disk_bytes : 196608,
						 file, image(vs, 2ll << 30, "/sim/base.qcow2", NULL)));
	json_object_array_add(arr, n);
	return arr;
}

static json_object *query_migrate(struct vm *vm)
{
	json_object *r = json_object_new_object(), *ram;
	double end = vm->mig_end ? vm->mig_end : now_s();

	json_object_object_add(r, "status", json_object_new_string(mig_name[vm->mig]));
	if (vm->mig == MIG_NONE)
		return r;
	ram = json_object_new_object();
	json_object_object_add(ram, "transferred", json_object_new_int64(llround(vm->ram_sent)));
	json_object_object_add(ram, "remaining", json_object_new_int64(llround(vm->ram_left)));
	json_object_object_add(ram, "total", json_object_new_int64((int64_t)ram_bytes));
	json_object_object_add(ram, "mbps", json_object_new_double(vm->rate * 8 / 1e6));
	json_object_object_add(ram, "dirty-pages-rate", json_object_new_int64((int64_t)(dirty / 4096)));
	json_object_object_add(ram, "page-size", json_object_new_int64(4096));
	json_object_object_add(r, "ram", ram);
	json_object_object_add(r, "total-time",
			       json_object_new_int64((int64_t)((end - vm->mig_start) * 1000)));
	json_object_object_add(r, "setup-time", json_object_new_int64(0));
	if (vm->mig == MIG_COMPLETED)
		json_object_object_add(r, "downtime", json_object_new_int64(vm->downtime));
	return r;
}

/* Answers one command of q's client; NULL for an error already in *e. */
static json_object *command(struct qemu *q, const char *cmd, json_object *a, json_object **e)
{
	struct vm *vm = q->vm;
	struct qemu *src = &vm->q[SRC], *dst = &vm->q[DST];
	int64_t n;

	if (!strcmp(cmd, "qmp_capabilities"))
		return ok();
	if (!strcmp(cmd, "query-status")) {
		json_object *r = json_object_new_object();

		json_object_object_add(r, "status", json_object_new_string(q->status));
		json_object_object_add(r, "running", json_object_new_boolean(!strcmp(q->status, "running")));
		return r;
	}
	if (!strcmp(cmd, "query-named-block-nodes"))
		return named_nodes(q);
	if (!strcmp(cmd, "nbd-server-start") && q->side == DST) {
		q->nbd_server = true;
		return ok();
	}
	if (!strcmp(cmd, "nbd-server-stop")) {
		q->nbd_server = q->export = false;
		return ok();
	}
	if (!strcmp(cmd, "block-export-add") && q->nbd_server) {
		q->export = true;
		return ok();
	}
	if (!strcmp(cmd, "block-export-del")) {
		q->export = false;
		return ok();
	}
	if (!strcmp(cmd, "blockdev-add") && q->side == SRC) {
		if (!dst->export) {
			*e = err("GenericError", "Failed to connect: %s", "no NBD export");
			return NULL;
		}
		q->nbd_client = true;
		return ok();
	}
	if (!strcmp(cmd, "blockdev-del")) {
		q->nbd_client = false;
		return ok();
	}
	if (!strcmp(cmd, "blockdev-mirror") && q->nbd_client) {
		const char *id = arg_str(a, "job-id");

		memset(&vm->job, 0, sizeof(vm->job));
		vm->job.exists = true;
		snprintf(vm->job.id, sizeof(vm->job.id), "%s", id ? id : "disk0");
		vm->job.len = disk_bytes;
		if (arg_int(a, "speed", &n))
			vm->job.speed = (double)n;
		return ok();
	}
	if (!strcmp(cmd, "block-job-set-speed") && vm->job.exists) {
		if (arg_int(a, "speed", &n))
			vm->job.speed = (double)n;
		return ok();
	}
	if (!strcmp(cmd, "query-block-jobs")) {
		json_object *arr = json_object_new_array();

		if (vm->job.exists && q->side == SRC) {
			json_object *j = job_obj(&vm->job);

			json_object_object_add(j, "ready", json_object_new_boolean(vm->job.ready));
			json_object_object_add(j, "busy", json_object_new_boolean(!vm->job.ready));
			json_object_object_add(j, "paused", json_object_new_boolean(0));
			json_object_object_add(j, "io-status", json_object_new_string("ok"));
			json_object_object_add(j, "status", json_object_new_string(
						       vm->job.ready ? "ready" : "running"));
			json_object_array_add(arr, j);
		}
		return arr;
	}
	if (!strcmp(cmd, "block-job-cancel") && vm->job.exists) {
		/* A ready mirror completes (without pivot) at its next tick. */
		vm->job.cancelled = true;
		return ok();
	}
	if (!strcmp(cmd, "migrate-set-capabilities")) {
		json_object *caps;

		if (a && json_object_object_get_ex(a, "capabilities", &caps))
			for (size_t i = 0; i < json_object_array_length(caps); i++) {
				json_object *c = json_object_array_get_idx(caps, i), *st;
				const char *name = arg_str(c, "capability");
				bool on = json_object_object_get_ex(c, "state", &st) &&
					  json_object_get_boolean(st);

				if (name && !strcmp(name, "events"))
					q->events_cap = on;
				if (name && !strcmp(name, "pause-before-switchover"))
					q->pause_cap = on;
			}
		return ok();
	}
	if (!strcmp(cmd, "migrate-set-parameters")) {
		if (arg_int(a, "max-bandwidth", &n))
			q->max_bw = (double)n;
		if (arg_int(a, "downtime-limit", &n))
			q->downtime_ms = n;
		return ok();
	}
	if (!strcmp(cmd, "migrate-incoming") && q->side == DST && !strcmp(q->status, "inmigrate"))
		return ok();
	if (!strcmp(cmd, "migrate") && q->side == SRC && vm->mig == MIG_NONE) {
		vm->mig = MIG_SETUP;
		vm->ram_sent = 0;
		vm->ram_left = ram_bytes;
		vm->mig_start = now_s();
		mig_event(src, MIG_SETUP);
		vm->mig = MIG_ACTIVE;
		mig_event(src, MIG_ACTIVE);
		vm->dst_mig = MIG_ACTIVE;
		mig_event(dst, MIG_ACTIVE);
		return ok();
	}
	if (!strcmp(cmd, "migrate-continue") && vm->mig == MIG_PRESW) {
		vm->continue_pending = true;
		return ok();
	}
	if (!strcmp(cmd, "query-migrate"))
		return q->side == SRC ? query_migrate(vm) : json_object_new_object();
	if (!strcmp(cmd, "cont") && q->side == DST) {
		q->status = "running";
		return ok();
	}
	if (!strcmp(cmd, "quit")) {
		q->gone = true;
		return ok();
	}
	*e = err("CommandNotFound", "The command %s has not been found (or is not "
		 "simulated in this state)", cmd);
	return NULL;
}

static void on_line(struct conn *c, const char *line)
{
	json_object *msg = json_tokener_parse(line), *id = NULL, *a = NULL, *ret, *e = NULL, *o;
	const char *cmd;

	if (!msg)
		return;
	cmd = arg_str(msg, "execute");
	json_object_object_get_ex(msg, "id", &id);
	json_object_object_get_ex(msg, "arguments", &a);
	if (!cmd) {
		json_object_put(msg);
		return;
	}
	ret = command(c->q, cmd, a, &e);
	o = json_object_new_object();
	if (ret)
		json_object_object_add(o, "return", ret);
	else
		json_object_object_add(o, "error", e);
	if (id)
		json_object_object_add(o, "id", json_object_get(id));
	put(c, o);
	json_object_put(msg);
}

/* ---- connections --------------------------------------------------------- */

static void listen_on(struct qemu *q)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct epoll_event ev = { .events = EPOLLIN };
	struct ptr *p = malloc(sizeof(*p));

	unlink(q->path);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", q->path);
	q->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (q->lfd < 0)
		die("socket");
	if (bind(q->lfd, (struct sockaddr *)&sa, sizeof(sa)) || listen(q->lfd, 16))
		die(q->path);
	p->kind = 0;
	p->p = q;
	ev.data.ptr = p;
	if (epoll_ctl(ep, EPOLL_CTL_ADD, q->lfd, &ev))
		die("epoll_ctl");
}

static void greet(struct conn *c)
{
	json_object *g = json_object_new_object(), *qmp = json_object_new_object();
	json_object *ver = json_object_new_object(), *qv = json_object_new_object();

	json_object_object_add(qv, "major", json_object_new_int(7));
	json_object_object_add(qv, "minor", json_object_new_int(2));
	json_object_object_add(qv, "micro", json_object_new_int(0));
	json_object_object_add(ver, "qemu", qv);
	json_object_object_add(ver, "package", json_object_new_string("kwsim-qemu"));
	json_object_object_add(qmp, "version", ver);
	json_object_object_add(qmp, "capabilities", json_object_new_array());
	json_object_object_add(g, "QMP", qmp);
	put(c, g);
	flush(c);
}

static void on_accept(struct qemu *q)
{
	struct epoll_event ev = { .events = EPOLLIN };
	struct conn *c;
	int fd = accept4(q->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

	if (fd < 0)
		return;
	if (q->client || q->gone) {	/* one client at a time, as QEMU */
		close(fd);
		return;
	}
	c = calloc(1, sizeof(*c));
	if (!c)
		abort();
	c->q = q;
	c->fd = fd;
	q->client = c;
	ev.data.ptr = (void *)((uintptr_t)c | 1);
	if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev))
		die("epoll_ctl");
	greet(c);
}

/* Freed after the epoll batch: a later event of the batch may name it. */
static void conn_close(struct conn *c)
{
	if (c->dead)
		return;
	c->dead = true;
	epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
	close(c->fd);
	if (c->q)
		c->q->client = NULL;
	c->next_dead = graveyard;
	graveyard = c;
}

static void bury(void)
{
	while (graveyard) {
		struct conn *c = graveyard;

		graveyard = c->next_dead;
		free(c->in);
		free(c->out);
		free(c);
	}
}

/* A QEMU told to quit closes its monitor and its socket. */
static void vanish(struct qemu *q)
{
	if (q->client) {
		flush(q->client);
		if (q->client)
			conn_close(q->client);
	}
	q->client = NULL;
	if (q->lfd >= 0) {
		epoll_ctl(ep, EPOLL_CTL_DEL, q->lfd, NULL);
		close(q->lfd);
		unlink(q->path);
		q->lfd = -1;
	}
}

static void on_readable(struct conn *c)
{
	struct qemu *q = c->q;
	size_t start = 0;
	bool eof = false;

	for (;;) {
		ssize_t n;

		if (c->incap - c->inlen < 4096) {
			c->incap = c->incap ? c->incap * 2 : 8192;
			if (c->incap > MAX_LINE * 2) {
				conn_close(c);
				return;
			}
			c->in = realloc(c->in, c->incap);
			if (!c->in)
				abort();
		}
		n = read(c->fd, c->in + c->inlen, c->incap - c->inlen - 1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			break;
		if (n <= 0) {
			/* A client may send its commands and close its end at
			 * once (socat): they are answered first. */
			eof = true;
			break;
		}
		c->inlen += (size_t)n;
	}
	/* The coordinator ends every command with a newline. */
	c->in[c->inlen] = 0;

	for (size_t i = 0; i < c->inlen; i++) {
		if (c->in[i] != '\n')
			continue;
		c->in[i] = 0;
		on_line(c, c->in + start);
		start = i + 1;
		if (q->gone || c->dead)
			break;
	}
	if (c->dead)
		return;
	memmove(c->in, c->in + start, c->inlen - start);
	c->inlen -= start;
	flush(c);
	if (q->gone)
		vanish(q);
	else if (eof && !c->dead)
		conn_close(c);
}

/* ---- the modelled link ---------------------------------------------------- */

/* The transfers moving now, each with its own limit (0: none). */
struct flow {
	struct vm *vm;
	bool mem;
	double limit, rate;
};

static int cmp_limit(const void *a, const void *b)
{
	double x = ((const struct flow *)a)->limit, y = ((const struct flow *)b)->limit;

	if (!x)
		x = 1e300;
	if (!y)
		y = 1e300;
	return x < y ? -1 : x > y;
}

/* Max-min fair shares of the WAN cap: the flows limited below an equal
 * share keep their limit, the rest split what is left. */
static void share(struct flow *f, int n)
{
	double left = wan;

	qsort(f, (size_t)n, sizeof(*f), cmp_limit);
	for (int i = 0; i < n; i++) {
		double fair = wan ? left / (n - i) : 1e300;
		double lim = f[i].limit ? f[i].limit : 1e300;

		f[i].rate = lim < fair ? lim : fair;
		if (wan)
			left -= f[i].rate;
	}
}

/* migrate-continue: the guest stays stopped while the last bytes go
 * (over the link like the others), then both ends say completed. */
static void switch_over(struct vm *vm)
{
	vm->continue_pending = false;
	vm->mig = MIG_DEVICE;
	mig_event(&vm->q[SRC], MIG_DEVICE);
}

static void finish_migration(struct vm *vm)
{
	vm->mig = MIG_COMPLETED;
	vm->mig_end = now_s();
	vm->downtime = (int64_t)((vm->mig_end - vm->stopped) * 1000);
	vm->q[SRC].status = "postmigrate";
	mig_event(&vm->q[SRC], MIG_COMPLETED);
	vm->dst_mig = MIG_COMPLETED;
	vm->q[DST].status = "paused";
	mig_event(&vm->q[DST], MIG_COMPLETED);
}

static void tick(double dt)
{
	static struct flow *f;
	int n = 0;

	if (!f)
		f = calloc((size_t)nvms * 2, sizeof(*f));
	for (int i = 0; i < nvms; i++) {
		struct vm *vm = &vms[i];
		struct mirror *j = &vm->job;

		if (j->exists && j->cancelled) {
			j->exists = false;
			event(&vm->q[SRC], "BLOCK_JOB_COMPLETED", job_obj(j));
		} else if (j->exists && !j->ready) {
			f[n++] = (struct flow){ vm, false, j->speed, 0 };
		}
		if (vm->mig == MIG_PRESW && vm->continue_pending)
			switch_over(vm);
		if (vm->mig == MIG_ACTIVE || vm->mig == MIG_DEVICE)
			f[n++] = (struct flow){ vm, true,
				vm->q[SRC].max_bw ? vm->q[SRC].max_bw : 128.0 * 1048576, 0 };
	}
	share(f, n);
	for (int k = 0; k < n; k++) {
		struct vm *vm = f[k].vm;
		double moved = f[k].rate * dt;

		if (!f[k].mem) {
			struct mirror *j = &vm->job;

			j->offset = j->offset + moved < j->len ? j->offset + moved : j->len;
			if (j->offset >= j->len) {
				j->ready = true;
				event(&vm->q[SRC], "BLOCK_JOB_READY", job_obj(j));
			}
			continue;
		}
		vm->rate = f[k].rate;
		vm->ram_sent += moved < vm->ram_left ? moved : vm->ram_left;
		vm->ram_left = vm->ram_left > moved ? vm->ram_left - moved : 0;
		if (vm->mig == MIG_DEVICE) {
			if (!vm->ram_left)
				finish_migration(vm);
			continue;
		}
		vm->ram_left += dirty * dt;
		if (vm->ram_left > ram_bytes)
			vm->ram_left = ram_bytes;
		/* Converged: what is left fits the downtime limit. */
		if (vm->ram_left <= f[k].rate * vm->q[SRC].downtime_ms / 1000.0) {
			vm->stopped = now_s();
			if (vm->q[SRC].pause_cap) {
				vm->mig = MIG_PRESW;
				vm->q[SRC].status = "paused";
				mig_event(&vm->q[SRC], MIG_PRESW);
			} else {
				switch_over(vm);
			}
		}
	}
}

/* ---- main ------------------------------------------------------------------ */

static double num(const char *s, const char *what)
{
	char *end;
	double v = strtod(s, &end);

	if (end == s || *end || v < 0) {
		fprintf(stderr, "kwsim-qemu: %s: '%s' is not a number of bytes (or bytes/s)\n",
			what, s);
		exit(2);
	}
	return v;
}

static void raise_nofile(int need)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl))
		return;
	rl.rlim_cur = rl.rlim_max;
	setrlimit(RLIMIT_NOFILE, &rl);
	if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < (rlim_t)need) {
		fprintf(stderr, "kwsim-qemu: %d VMs need about %d descriptors; the hard limit is "
			"%llu (raise it: ulimit -Hn, or LimitNOFILE=)\n", nvms, need,
			(unsigned long long)rl.rlim_max);
		exit(1);
	}
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "dir", 1, 0, 'D' }, { "vms", 1, 0, 'n' }, { "ram", 1, 0, 'r' },
		{ "disk", 1, 0, 'd' }, { "wan", 1, 0, 'w' }, { "dirty", 1, 0, 'y' },
		{ "tick-ms", 1, 0, 't' }, { 0, 0, 0, 0 },
	};
	const char *dir = NULL;
	struct itimerspec its = { 0 };
	struct epoll_event ev = { .events = EPOLLIN }, evs[256];
	struct ptr tp = { 2, NULL };
	int o, tfd;
	double last;

	while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (o) {
		case 'D': dir = optarg; break;
		case 'n': nvms = atoi(optarg); break;
		case 'r': ram_bytes = num(optarg, "--ram"); break;
		case 'd': disk_bytes = num(optarg, "--disk"); break;
		case 'w': wan = num(optarg, "--wan"); break;
		case 'y': dirty = num(optarg, "--dirty"); break;
		case 't': tick_ms = atoi(optarg); break;
		default:
			fprintf(stderr, "usage: kwsim-qemu --dir DIR --vms N [--ram BYTES] "
				"[--disk BYTES] [--wan BYTES/s] [--dirty BYTES/s] [--tick-ms MS]\n");
			return 2;
		}
	}
	if (!dir || nvms < 1 || tick_ms < 1) {
		fprintf(stderr, "kwsim-qemu: --dir and --vms (at least 1) are required\n");
		return 2;
	}
	raise_nofile(nvms * 4 + 32);
	signal(SIGPIPE, SIG_IGN);
	ep = epoll_create1(EPOLL_CLOEXEC);
	if (ep < 0)
		die("epoll_create1");
	vms = calloc((size_t)nvms, sizeof(*vms));
	if (!vms)
		abort();
	for (int i = 0; i < nvms; i++) {
		struct vm *vm = &vms[i];

		vm->idx = i + 1;
		for (int s = 0; s < 2; s++) {
			struct qemu *q = &vm->q[s];

			q->vm = vm;
			q->side = (enum side)s;
			q->status = s == SRC ? "running" : "inmigrate";
			q->downtime_ms = 300;
			if ((size_t)snprintf(q->path, sizeof(q->path), "%s/%c%d.qmp", dir,
					     s == SRC ? 's' : 'd', vm->idx) >= sizeof(q->path)) {
				fprintf(stderr, "kwsim-qemu: %s: path too long for a unix socket\n", dir);
				return 2;
			}
			listen_on(q);
		}
	}
	tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	its.it_interval.tv_sec = its.it_value.tv_sec = tick_ms / 1000;
	its.it_interval.tv_nsec = its.it_value.tv_nsec = (long)(tick_ms % 1000) * 1000000;
	if (tfd < 0 || timerfd_settime(tfd, 0, &its, NULL))
		die("timerfd");
	ev.data.ptr = &tp;
	epoll_ctl(ep, EPOLL_CTL_ADD, tfd, &ev);
	fprintf(stderr, "kwsim-qemu: %d VMs listening in %s\n", nvms, dir);
	last = now_s();
	for (;;) {
		int n = epoll_wait(ep, evs, 256, -1);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			die("epoll_wait");
		for (int k = 0; k < n; k++) {
			void *p = evs[k].data.ptr;

			if ((uintptr_t)p & 1) {
				struct conn *c = (struct conn *)((uintptr_t)p & ~(uintptr_t)1);

				if (!c->dead && (evs[k].events & EPOLLOUT))
					flush(c);
				if (!c->dead && (evs[k].events & ~(uint32_t)EPOLLOUT))
					on_readable(c);
				continue;
			}
			if (((struct ptr *)p)->kind == 2) {
				uint64_t x;
				double t = now_s();

				if (read(tfd, &x, sizeof(x)) < 0 && errno != EAGAIN)
					die("timerfd read");
				tick(t - last);
				last = t;
				continue;
			}
			on_accept(((struct ptr *)p)->p);
		}
		bury();
	}
}
