/* SPDX-License-Identifier: MIT */
/*
 * libkawarimi-symvirt client tests (suite 'symvirt').
 *
 * Usage: test-symvirt-client KAWARIMI-AGENT
 *
 * 1-3: a scripted fake agent on a socketpair: the first hello is "lost" (as
 *      bytes sent while no guest reader has the port open are), a stale
 *      reply and an event arrive before the answer, replies come out of
 *      order and in pieces, an error reply, a wrong protocol version, an
 *      agent that never answers, the agent going away.
 * 4:   the real kawarimi-agent: sync, commands, events from a rank, a
 *      lease that runs out (its event among replies).
 * 5:   a flooding guest: one dispatch reads at most 64 KiB, and the event
 *      queue stays within SYMVIRT_MAX_EVENTS / SYMVIRT_MAX_EVENT_BYTES,
 *      counting what it dropped.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "symvirt_client.h"

static int failures;

#define CHECK(cond, ...)                                                         \
	do {                                                                     \
		if (!(cond)) {                                                   \
			fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);     \
			fprintf(stderr, __VA_ARGS__);                            \
			fputc('\n', stderr);                                     \
			failures++;                                              \
		}                                                                \
	} while (0)

/* ---- the fake agent (child side) -------------------------------------------- */

static FILE *fake_in;
static int fake_fd;

static json_object *fake_read(void)
{
	static char line[70000];

	if (!fgets(line, sizeof(line), fake_in))
		return NULL;
	return json_tokener_parse(line);
}

static void fake_write(const char *s)
{
	size_t len = strlen(s);

	while (len) {
		ssize_t n = write(fake_fd, s, len);

		if (n <= 0)
			_exit(90);
		s += n;
		len -= (size_t)n;
	}
}

static int64_t msg_id(json_object *m)
{
	json_object *v;

	return json_object_object_get_ex(m, "id", &v) ? json_object_get_int64(v) : -1;
}

static const char *msg_cmd(json_object *m)
{
	json_object *v;

	return json_object_object_get_ex(m, "execute", &v) ? json_object_get_string(v) : "";
}

static void fake_reply(int64_t id, const char *ret)
{
	char buf[512];

	snprintf(buf, sizeof(buf), "{\"return\": %s, \"id\": %lld}\n", ret, (long long)id);
	fake_write(buf);
}

/* Script 1: lost hello, stale reply, event, error, out of order, pieces. */
static int fake_main(void)
{
	json_object *m = fake_read(), *a, *b;
	int hellos = 1;
	char buf[256];

	json_object_put(m);	/* the first hello is lost */
	m = fake_read();
	if (!m || strcmp(msg_cmd(m), "hello"))
		return 91;
	hellos++;
	fake_write("{\"return\": {}, \"id\": 5}\n");
	fake_write("{\"event\": \"RANK_REGISTERED\", \"data\": {\"rank\": 3}, "
		   "\"timestamp\": {\"seconds\": 7, \"microseconds\": 8}}\n");
	fake_reply(msg_id(m), "{\"protocol\": 1, \"agent\": \"fake\"}");
	json_object_put(m);
	m = fake_read();	/* status -> error */
	snprintf(buf, sizeof(buf), "{\"error\": {\"class\": \"InvalidState\", \"desc\": \"fake says no\"}, \"id\": %lld}\n",
		 (long long)msg_id(m));
	fake_write(buf);
	json_object_put(m);
	a = fake_read();
	b = fake_read();
	fake_reply(msg_id(b), "{\"n\": 2}");
	fake_reply(msg_id(a), "{\"n\": 1}");
	json_object_put(a);
	json_object_put(b);
	m = fake_read();	/* quiesce: the reply in two pieces */
	snprintf(buf, sizeof(buf), "{\"return\": {\"ranks\": [], \"elapsed-ms\": 1}, \"id\": %lld}\n",
		 (long long)msg_id(m));
	fake_write("");
	{
		size_t half = strlen(buf) / 2;
		char first[256];

		memcpy(first, buf, half);
		first[half] = '\0';
		fake_write(first);
		usleep(50000);
		fake_write(buf + half);
	}
	json_object_put(m);
	m = fake_read();	/* the next command: hang up instead */
	json_object_put(m);
	return hellos;
}

/* Script 2: answers every hello with protocol 2. */
static int fake_version(void)
{
	json_object *m;

	while ((m = fake_read())) {
		fake_reply(msg_id(m), "{\"protocol\": 2}");
		json_object_put(m);
	}
	return 0;
}

/* Script 4: as a virtio port that queued hellos while no agent read it:
 * three hellos arrive, all three are answered at once. */
static int fake_burst(void)
{
	json_object *m[3];
	char buf[256];

	for (int i = 0; i < 3; i++)
		if (!(m[i] = fake_read()))
			return 91;
	for (int i = 0; i < 3; i++) {
		snprintf(buf, sizeof(buf), "{\"return\": {\"protocol\": 1, \"n\": %d}, \"id\": %lld}\n",
			 i, (long long)msg_id(m[i]));
		fake_write(buf);
		json_object_put(m[i]);
	}
	json_object_put(fake_read());
	return 0;
}

/* Script 3: reads and never answers; exits with the number of hellos. */
static int fake_silent(void)
{
	json_object *m;
	int n = 0;

	while ((m = fake_read())) {
		n += !strcmp(msg_cmd(m), "hello");
		json_object_put(m);
	}
	return n;
}

static pid_t spawn_fake(int (*fn)(void), int *fd)
{
	int sv[2];
	pid_t pid;

	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0)
		return -1;
	pid = fork();
	if (pid == 0) {
		close(sv[0]);
		fake_fd = sv[1];
		fake_in = fdopen(dup(sv[1]), "r");
		_exit(fn());
	}
	close(sv[1]);
	*fd = sv[0];
	return pid;
}

static int reap(pid_t pid)
{
	int st;

	if (waitpid(pid, &st, 0) < 0 || !WIFEXITED(st))
		return -1;
	return WEXITSTATUS(st);
}

/* ---- client-side checks -------------------------------------------------------- */

struct got {
	int calls;
	int64_t n;
	int order;
	struct kqmp_error err;
};

static int order_counter;

static void got_cb(struct symvirt *s, json_object *ret, const struct kqmp_error *err, void *arg)
{
	struct got *g = arg;
	json_object *v;

	(void)s;
	g->calls++;
	g->order = ++order_counter;
	if (err)
		g->err = *err;
	else if (json_object_object_get_ex(ret, "n", &v))
		g->n = json_object_get_int64(v);
}

static void pump(struct symvirt *s, struct got *g, int want, int ms)
{
	for (int i = 0; i < ms / 10 && g->calls < want; i++) {
		symvirt_dispatch(s, NULL);
		usleep(10000);
	}
}

static void test_scripted(void)
{
	struct kqmp_error err;
	struct symvirt_event ev;
	struct got g1 = { 0 }, g2 = { 0 }, gdead = { 0 };
	json_object *hello = NULL, *ret = NULL, *v;
	int fd, rc;
	pid_t pid = spawn_fake(fake_main, &fd);
	struct symvirt *s = symvirt_new_fd(fd, "fake agent");

	rc = symvirt_sync(s, 5000, 100, &hello, &err);
	CHECK(rc == 0, "sync: %s", err.desc);
	CHECK(hello && json_object_object_get_ex(hello, "agent", &v) && !strcmp(json_object_get_string(v), "fake"),
	      "hello return");
	json_object_put(hello);
	CHECK(symvirt_pending(s) == 0, "cancelled hellos still count as pending: %zu", symvirt_pending(s));
	CHECK(symvirt_event_pop(s, &ev) == 1 && !strcmp(ev.name, "RANK_REGISTERED") && ev.sec == 7 && ev.usec == 8,
	      "event before the hello reply");
	symvirt_event_clear(&ev);
	CHECK(symvirt_event_pop(s, &ev) == 0, "one event only");

	rc = symvirt_execute(s, "status", NULL, 5000, &ret, &err);
	CHECK(rc == -1 && err.kind == KQMP_E_QMP && !strcmp(err.cls, "InvalidState") &&
	      !strcmp(err.desc, "fake says no"), "error reply: kind %d cls %s", err.kind, err.cls);

	CHECK(symvirt_send(s, "one", NULL, got_cb, &g1) && symvirt_send(s, "two", NULL, got_cb, &g2),
	      "send");
	CHECK(symvirt_pending(s) == 2, "two pending");
	pump(s, &g1, 1, 3000);
	pump(s, &g2, 1, 3000);
	CHECK(g1.calls == 1 && g1.n == 1 && g2.calls == 1 && g2.n == 2 && g2.order < g1.order,
	      "out-of-order replies matched by id");

	rc = symvirt_execute(s, "quiesce", json_object_new_object(), 5000, &ret, &err);
	CHECK(rc == 0 && json_object_object_get_ex(ret, "elapsed-ms", &v), "reply in pieces: %s", err.desc);
	json_object_put(ret);

	symvirt_send(s, "status", NULL, got_cb, &gdead);
	rc = symvirt_execute(s, "status", NULL, 5000, NULL, &err);
	CHECK(rc == -1 && err.kind == KQMP_E_IO, "agent gone: kind %s", symvirt_err_kind_name(err.kind));
	CHECK(gdead.calls == 1 && gdead.err.kind == KQMP_E_IO, "pending callback told of the failure");
	CHECK(!symvirt_is_open(s) && symvirt_last_error(s)->kind == KQMP_E_IO, "closed state");
	CHECK(symvirt_send(s, "x", NULL, NULL, NULL) == 0, "send after failure");
	symvirt_close(s);
	rc = reap(pid);
	CHECK(rc == 2, "fake agent saw %d hellos; want 2 (one lost, one answered)", rc);
}

static void test_version_and_silence(void)
{
	struct kqmp_error err;
	struct symvirt *s;
	int fd, rc;
	pid_t pid;

	pid = spawn_fake(fake_version, &fd);
	s = symvirt_new_fd(fd, NULL);
	rc = symvirt_sync(s, 3000, 100, NULL, &err);
	CHECK(rc == -1 && err.kind == KQMP_E_PROTOCOL && strstr(err.desc, "protocol 2"),
	      "version mismatch: %s", err.desc);
	symvirt_close(s);
	reap(pid);

	pid = spawn_fake(fake_burst, &fd);
	s = symvirt_new_fd(fd, "burst");
	{
		json_object *hello = NULL, *v;

		rc = symvirt_sync(s, 5000, 50, &hello, &err);
		CHECK(rc == 0 && json_object_object_get_ex(hello, "n", &v) && json_object_get_int(v) == 0,
		      "three hellos answered at once: the first counts (%s)", err.desc);
		json_object_put(hello);
	}
	rc = symvirt_execute(s, "status", NULL, 300, NULL, &err);
	CHECK(rc == -1 && err.kind == KQMP_E_IO, "after the burst the fake hangs up: %s", err.desc);
	symvirt_close(s);
	reap(pid);

	pid = spawn_fake(fake_silent, &fd);
	s = symvirt_new_fd(fd, "silent");
	rc = symvirt_sync(s, 700, 100, NULL, &err);
	CHECK(rc == -1 && err.kind == KQMP_E_TIMEOUT && strstr(err.desc, "silent"), "silence: %s", err.desc);
	CHECK(symvirt_pending(s) == 0, "hellos left pending after a failed sync");
	symvirt_close(s);
	rc = reap(pid);
	CHECK(rc >= 5, "only %d hellos in 700 ms at a 100 ms retry", rc);
}

/* ---- a flooding guest ---------------------------------------------------------------- */

struct flood_log {
	int lines, full;
};

static void flood_log_fn(struct symvirt *s, const char *msg, void *arg)
{
	struct flood_log *l = arg;

	(void)s;
	l->lines++;
	l->full += strstr(msg, "event queue full") != NULL;
}

/* An event line of exactly len bytes (newline included), numbered i. */
static size_t event_line(char *buf, size_t len, int i)
{
	int n = snprintf(buf, len, "{\"event\": \"FLOOD\", \"data\": {\"i\": %d, \"pad\": \"", i);

	memset(buf + n, 'x', len - (size_t)n - 4);
	memcpy(buf + len - 4, "\"}}\n", 4);
	return len;
}

static size_t drain_events(struct symvirt *s)
{
	struct symvirt_event ev;
	size_t n = 0;

	while (symvirt_event_pop(s, &ev) == 1) {
		n++;
		symvirt_event_clear(&ev);
	}
	return n;
}

/* Writes count events of len bytes to peer, dispatching s whenever the
 * socket is full (nobody pops); returns the events written. */
static int flood(struct symvirt *s, int peer, int count, size_t len)
{
	static char line[16384];
	int i;

	for (i = 0; i < count; i++) {
		size_t off = 0;

		event_line(line, len, i);
		while (off < len) {
			ssize_t w = send(peer, line + off, len - off, MSG_DONTWAIT);

			if (w > 0) {
				off += (size_t)w;
			} else if (errno == EAGAIN && symvirt_dispatch(s, NULL) == 0) {
				continue;
			} else {
				CHECK(0, "flood write %d: %s", i, strerror(errno));
				return i;
			}
		}
	}
	for (int k = 0; k < 100 && symvirt_dispatch(s, NULL) == 0; k++)
		;	/* the rest, 64 KiB a call */
	return i;
}

static void test_flood(void)
{
	static char batch[500 * 100];
	struct flood_log log = { 0 };
	struct symvirt *s;
	size_t first, rest;
	int sv[2];

	CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0, "socketpair");
	s = symvirt_new_fd(sv[0], "flood");
	symvirt_set_log(s, flood_log_fn, &log);

	/* 1000 events of 100 bytes in the socket (two writes: a unix socket
	 * holds few small ones): one dispatch takes at most 64 KiB of them,
	 * the next ones the rest. */
	for (int w = 0; w < 2; w++) {
		for (int i = 0; i < 500; i++)
			event_line(batch + i * 100, 100, w * 500 + i);
		CHECK(send(sv[1], batch, sizeof(batch), MSG_DONTWAIT) == (ssize_t)sizeof(batch),
		      "write: %s", strerror(errno));
	}
	CHECK(symvirt_dispatch(s, NULL) == 0, "dispatch");
	first = drain_events(s);
	CHECK(first > 0 && first <= 65536 / 100, "one dispatch read %zu events of 100 bytes, "
	      "more than 64 KiB", first);
	for (int k = 0; k < 10; k++)
		symvirt_dispatch(s, NULL);
	rest = drain_events(s);
	CHECK(first + rest == 1000, "%zu + %zu events arrived, not 1000", first, rest);

	/* 3000 small events, never popped: the newest SYMVIRT_MAX_EVENTS stay. */
	CHECK(flood(s, sv[1], 3000, 100) == 3000, "flood by count");
	CHECK(symvirt_events_dropped(s) == 3000 - SYMVIRT_MAX_EVENTS,
	      "dropped %llu events, expected %d", (unsigned long long)symvirt_events_dropped(s),
	      3000 - SYMVIRT_MAX_EVENTS);
	{
		struct symvirt_event ev;
		json_object *v;

		CHECK(symvirt_event_pop(s, &ev) == 1 && json_object_object_get_ex(ev.data, "i", &v) &&
		      json_object_get_int(v) == 3000 - SYMVIRT_MAX_EVENTS,
		      "the oldest kept is not event %d", 3000 - SYMVIRT_MAX_EVENTS);
		symvirt_event_clear(&ev);
	}
	CHECK(drain_events(s) == SYMVIRT_MAX_EVENTS - 1, "queue length");

	/* 1000 events of 16 KiB, 16 MiB in all: the byte bound holds first. */
	CHECK(flood(s, sv[1], 1000, 16384) == 1000, "flood by size");
	rest = drain_events(s);
	CHECK(rest >= 1 && rest * 16384 <= SYMVIRT_MAX_EVENT_BYTES,
	      "%zu events of 16 KiB queued, over %u bytes", rest, SYMVIRT_MAX_EVENT_BYTES);
	CHECK(symvirt_events_dropped(s) == 3000 - SYMVIRT_MAX_EVENTS + 1000 - rest,
	      "dropped %llu in all", (unsigned long long)symvirt_events_dropped(s));
	CHECK(log.full == 1, "\"event queue full\" logged %d times, want once", log.full);
	CHECK(symvirt_is_open(s), "a flood of well-formed events is not a failure");
	symvirt_close(s);
	close(sv[1]);
}

/* ---- the real agent ---------------------------------------------------------------- */

static int connect_unix(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);

	snprintf(sa.sun_path, sizeof(sa.sun_path), "%.100s", path);
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

static bool rank_is_5(json_object *data, void *arg)
{
	json_object *v;

	(void)arg;
	return json_object_object_get_ex(data, "rank", &v) && json_object_get_int(v) == 5;
}

static int64_t lease_left(json_object *ret)
{
	json_object *v;

	if (!json_object_object_get_ex(ret, "lease-ms-left", &v) || !json_object_is_type(v, json_type_int))
		return -1;
	return json_object_get_int64(v);
}

/* A lease nobody renews runs out; its event comes through the client
 * like any other, and the connection carries on. */
static void test_lease(struct symvirt *s)
{
	struct kqmp_error err;
	struct symvirt_event ev;
	json_object *ret = NULL, *args = json_object_new_object(), *v;
	int rc;

	json_object_object_add(args, "lease-ms", json_object_new_int(1000));
	rc = symvirt_execute(s, "quiesce", args, 10000, NULL, &err);
	CHECK(rc == 0, "quiesce with a lease: %s", err.desc);
	rc = symvirt_execute(s, "renew", NULL, 5000, &ret, &err);
	CHECK(rc == 0 && lease_left(ret) > 0 && lease_left(ret) <= 1000, "renew: %s %s", err.desc,
	      rc ? "" : json_object_to_json_string(ret));
	json_object_put(ret);
	rc = symvirt_wait_event(s, "lease-expired", NULL, NULL, 5000, &ev, &err);
	CHECK(rc == 0 && json_object_object_get_ex(ev.data, "state", &v) &&
	      !strcmp(json_object_get_string(v), "quiesced"), "lease-expired: rc %d %s", rc, rc ? err.desc : "");
	if (rc == 0)
		symvirt_event_clear(&ev);
	rc = symvirt_execute(s, "renew", NULL, 5000, &ret, &err);
	CHECK(rc == 0 && lease_left(ret) == -1 && json_object_object_get_ex(ret, "state", &v),
	      "renew once the lease ran out: %s", err.desc);
	json_object_put(ret);
}

static void test_real_agent(const char *agent)
{
	char dir[] = "/tmp/kws-client-XXXXXX", ch[128], ranks[128];
	struct kqmp_error err;
	struct symvirt_event ev;
	struct symvirt *s = NULL;
	json_object *ret = NULL, *v;
	pid_t pid;
	int rfd, rc;

	if (!mkdtemp(dir)) {
		CHECK(0, "mkdtemp: %s", strerror(errno));
		return;
	}
	snprintf(ch, sizeof(ch), "%s/ch.sock", dir);
	snprintf(ranks, sizeof(ranks), "%s/ranks.sock", dir);
	pid = fork();
	if (pid == 0) {
		char chan[140];

		snprintf(chan, sizeof(chan), "listen:%s", ch);
		execl(agent, agent, "--foreground", "--channel", chan, "--socket", ranks, (char *)NULL);
		_exit(127);
	}
	for (int i = 0; i < 500 && !s; i++) {
		s = symvirt_open(ch, 5000, &ret, &err);
		if (!s)
			usleep(10000);
	}
	CHECK(s, "symvirt_open: %s", err.desc);
	if (!s)
		goto out;
	CHECK(json_object_object_get_ex(ret, "protocol", &v) && json_object_get_int(v) == 1, "hello");
	json_object_put(ret);

	rfd = connect_unix(ranks);
	CHECK(rfd >= 0, "rank connect");
	dprintf(rfd, "{\"execute\": \"register\", \"id\": 1, \"arguments\": "
		     "{\"pid\": %d, \"jobid\": \"kws\", \"rank\": 5, \"paths\": [\"tcp\"]}}\n", (int)getpid());
	rc = symvirt_wait_event(s, "RANK_REGISTERED", rank_is_5, NULL, 5000, &ev, &err);
	CHECK(rc == 0 && json_object_object_get_ex(ev.data, "jobid", &v) && !strcmp(json_object_get_string(v), "kws"),
	      "RANK_REGISTERED: %s", err.desc);
	symvirt_event_clear(&ev);
	rc = symvirt_execute(s, "status", NULL, 5000, &ret, &err);
	CHECK(rc == 0 && json_object_object_get_ex(ret, "ranks", &v) && json_object_array_length(v) == 1,
	      "status lists the rank: %s", err.desc);
	json_object_put(ret);
	close(rfd);
	rc = symvirt_wait_event(s, "RANK_UNREGISTERED", NULL, NULL, 5000, &ev, &err);
	CHECK(rc == 0 && json_object_object_get_ex(ev.data, "reason", &v) && !strcmp(json_object_get_string(v), "eof"),
	      "RANK_UNREGISTERED: rc %d %s %s", rc, rc ? err.desc : "", rc ? "" : json_object_to_json_string(ev.data));
	symvirt_event_clear(&ev);
	rc = symvirt_execute(s, "quiesce", NULL, 10000, NULL, &err);
	CHECK(rc == 0, "quiesce: %s", err.desc);
	rc = symvirt_execute(s, "quiesce", json_object_new_string("x"), 10000, NULL, &err);
	CHECK(rc == -1 && err.kind == KQMP_E_QMP && !strcmp(err.cls, "InvalidParameter"),
	      "arguments not an object: %s %s", err.cls, err.desc);
	rc = symvirt_execute(s, "nope", NULL, 10000, NULL, &err);
	CHECK(rc == -1 && !strcmp(err.cls, "CommandNotFound"), "unknown command: %s", err.cls);
	rc = symvirt_execute(s, "resume", NULL, 10000, &ret, &err);
	CHECK(rc == 0 && json_object_object_get_ex(ret, "fabrics", &v), "resume: %s", err.desc);
	json_object_put(ret);
	test_lease(s);
	symvirt_close(s);
out:
	kill(pid, SIGTERM);
	rc = reap(pid);
	CHECK(rc == 0, "agent exit status %d after SIGTERM", rc);
	rmdir(dir);
}

int main(int argc, char *argv[])
{
	if (argc != 2) {
		fprintf(stderr, "usage: %s KAWARIMI-AGENT\n", argv[0]);
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	test_scripted();
	test_version_and_silence();
	test_flood();
	test_real_agent(argv[1]);
	if (failures) {
		fprintf(stderr, "%d check(s) failed\n", failures);
		return 1;
	}
	printf("symvirt client: all checks passed\n");
	return 0;
}
