/* SPDX-License-Identifier: MIT */
/*
 * libkawarimi-qmp against a scripted fake QMP peer on a socketpair, for the
 * framing and failure cases a real QEMU will not produce on demand.  Most
 * cases drive both ends from one thread (write bytes, dispatch, look); the
 * blocking helpers get a peer thread.
 *
 * Long (~800 lines) because it is a list of cases, each small and alone.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "kawarimi-qmp.h"
#include "../check.h"


#define GREETING "{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 0, \"minor\": 2, " \
		 "\"major\": 7}, \"package\": \"fake\"}, \"capabilities\": [%s]}}\r\n"

struct pair {
	struct kqmp *q;
	int peer;
	struct kqmp_reader *rd;
	char log[2048];
};

static void collect_log(struct kqmp *q, const char *msg, void *arg)
{
	struct pair *p = arg;
	size_t n = strlen(p->log);

	(void)q;
	snprintf(p->log + n, sizeof(p->log) - n, "%s\n", msg);
}

static void pair_open(struct pair *p, unsigned flags)
{
	struct timeval tv = { .tv_sec = 5 };
	int sv[2];

	memset(p, 0, sizeof(*p));
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
		perror("socketpair");
		exit(1);
	}
	/* A peer read or write that would hang is a failed test, not a stuck
	 * one. */
	setsockopt(sv[1], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(sv[1], SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	p->q = kqmp_new_fd(sv[0], flags);
	p->peer = sv[1];
	p->rd = kqmp_reader_new(1 << 20);
	kqmp_set_log(p->q, collect_log, p);
}

static void pair_close(struct pair *p)
{
	kqmp_close(p->q);
	if (p->peer >= 0)
		close(p->peer);
	kqmp_reader_free(p->rd);
}

static void peer_write(struct pair *p, const char *s, size_t len)
{
	while (len) {
		ssize_t n = write(p->peer, s, len);

		if (n <= 0) {
			CHECK(n > 0, "peer write: %s", strerror(errno));
			return;
		}
		s += n;
		len -= (size_t)n;
	}
}

static void peer_say(struct pair *p, const char *s)
{
	peer_write(p, s, strlen(s));
}

static int dispatch(struct pair *p)
{
	struct kqmp_error err;

	return kqmp_dispatch(p->q, &err);
}

/* The next command the client wrote (NULL after 5 s of nothing). */
static json_object *peer_recv(struct pair *p)
{
	struct kqmp_error err;
	json_object *o;
	char buf[4096];

	for (;;) {
		int k = kqmp_reader_next(p->rd, &o, &err);
		ssize_t n;

		if (k == 1)
			return o;
		if (k < 0)
			return NULL;
		n = read(p->peer, buf, sizeof(buf));
		if (n <= 0)
			return NULL;
		kqmp_reader_feed(p->rd, buf, (size_t)n, &err);
	}
}

static const char *str_of(json_object *o, const char *key)
{
	json_object *v;

	return json_object_object_get_ex(o, key, &v) ? json_object_get_string(v) : "";
}

static long long id_of(json_object *cmd)
{
	json_object *v;

	return json_object_object_get_ex(cmd, "id", &v) ? json_object_get_int64(v) : -1;
}

static void peer_greet(struct pair *p, const char *caps)
{
	char buf[512];

	snprintf(buf, sizeof(buf), GREETING, caps);
	peer_say(p, buf);
}

/* The peer's half of the handshake after the greeting. */
static void peer_ack_caps(struct pair *p, const char *want_args)
{
	char buf[512];
	json_object *cmd = peer_recv(p);

	CHECK(cmd && !strcmp(str_of(cmd, "execute"), "qmp_capabilities"), "got %s",
	      json_object_to_json_string(cmd));
	CHECK(!strcmp(str_of(cmd, "arguments"), want_args), "caps args %s",
	      str_of(cmd, "arguments"));
	snprintf(buf, sizeof(buf), "{\"return\": {}, \"id\": %lld}\n", id_of(cmd));
	json_object_put(cmd);
	peer_say(p, buf);
}

/* Greeting out, qmp_capabilities in (checked), its reply out: READY. */
static void handshake(struct pair *p, const char *caps, const char *want_args)
{
	peer_greet(p, caps);
	CHECK(dispatch(p) == 0, "greeting: %s", kqmp_last_error(p->q)->desc);
	peer_ack_caps(p, want_args);
	CHECK(dispatch(p) == 0, "caps reply: %s", kqmp_last_error(p->q)->desc);
	CHECK(kqmp_get_state(p->q) == KQMP_READY, "state %d", kqmp_get_state(p->q));
}

/* Records the outcome of one command. */
struct outcome {
	int calls;
	json_object *ret;
	struct kqmp_error err;
};

static void record(struct kqmp *q, json_object *ret, const struct kqmp_error *err, void *arg)
{
	struct outcome *o = arg;

	(void)q;
	o->calls++;
	CHECK((ret == NULL) != (err == NULL), "exactly one of ret/err");
	if (ret)
		o->ret = json_object_get(ret);
	else
		o->err = *err;
}

static void outcome_clear(struct outcome *o)
{
	json_object_put(o->ret);
	memset(o, 0, sizeof(*o));
}

/* ---- cases -------------------------------------------------------------- */

static void test_byte_by_byte(void)
{
	struct outcome a = { 0 };
	struct kqmp_event ev;
	struct pair p;
	char buf[1024];
	json_object *cmd;
	int n;

	pair_open(&p, 0);
	/* Queued before the greeting: must go out after qmp_capabilities. */
	kqmp_send(p.q, "query-status", NULL, record, &a);
	n = snprintf(buf, sizeof(buf), GREETING, "\"oob\"");
	for (int i = 0; i < n; i++) {
		peer_write(&p, buf + i, 1);
		CHECK(dispatch(&p) == 0, "byte %d: %s", i, kqmp_last_error(p.q)->desc);
		/* Complete at its closing brace, before the trailing \r\n. */
		CHECK(i >= n - 3 || !kqmp_version(p.q), "greeting taken early at byte %d", i);
	}
	CHECK(kqmp_version(p.q) && !strcmp(str_of(kqmp_version(p.q), "package"), "fake"),
	      "version %s", json_object_to_json_string(kqmp_version(p.q)));
	cmd = peer_recv(&p);
	CHECK(cmd && !strcmp(str_of(cmd, "execute"), "qmp_capabilities"), "first out");
	n = snprintf(buf, sizeof(buf), "{\"return\": {}, \"id\": %lld}", id_of(cmd));
	json_object_put(cmd);
	for (int i = 0; i < n; i++) {
		peer_write(&p, buf + i, 1);
		dispatch(&p);
	}
	CHECK(kqmp_get_state(p.q) == KQMP_READY, "ready");
	cmd = peer_recv(&p);
	CHECK(cmd && !strcmp(str_of(cmd, "execute"), "query-status"), "second out");
	n = snprintf(buf, sizeof(buf),
		     "{\"timestamp\": {\"seconds\": 1700000000, \"microseconds\": 42}, "
		     "\"event\": \"STOP\"}\n{\"return\": {\"status\": \"paused\"}, \"id\": %lld}",
		     id_of(cmd));
	json_object_put(cmd);
	for (int i = 0; i < n; i++) {
		CHECK(a.calls == 0, "reply before its last byte");
		peer_write(&p, buf + i, 1);
		dispatch(&p);
	}
	CHECK(a.calls == 1 && a.ret && !strcmp(str_of(a.ret, "status"), "paused"), "reply");
	CHECK(kqmp_event_pop(p.q, &ev) == 1 && !strcmp(ev.name, "STOP") &&
	      ev.sec == 1700000000 && ev.usec == 42 && !ev.data, "event");
	kqmp_event_clear(&ev);
	CHECK(kqmp_event_pop(p.q, &ev) == 0, "one event only");
	outcome_clear(&a);
	pair_close(&p);
}

/* 100 replies in reverse order plus events, in one write and one dispatch. */
static void test_hundred_in_one_write(void)
{
	static struct outcome o[100];
	static char big[100 * 128];
	long long ids[100];
	struct kqmp_event ev;
	struct pair p;
	size_t n = 0;

	memset(o, 0, sizeof(o));
	pair_open(&p, 0);
	handshake(&p, "", "");
	for (int i = 0; i < 100; i++) {
		json_object *args = json_object_new_object();

		json_object_object_add(args, "i", json_object_new_int(i));
		kqmp_send(p.q, "echo", args, record, &o[i]);
	}
	CHECK(kqmp_pending(p.q) == 100, "pending %zu", kqmp_pending(p.q));
	dispatch(&p);
	for (int i = 0; i < 100; i++) {
		json_object *cmd = peer_recv(&p), *args, *v;

		CHECK(cmd && json_object_object_get_ex(cmd, "arguments", &args) &&
		      json_object_object_get_ex(args, "i", &v) && json_object_get_int(v) == i,
		      "command %d: %s", i, json_object_to_json_string(cmd));
		ids[i] = id_of(cmd);
		json_object_put(cmd);
	}
	for (int i = 99; i >= 0; i--) {
		n += snprintf(big + n, sizeof(big) - n, "{\"return\": {\"n\": %d}, \"id\": %lld}", i, ids[i]);
		if (i % 10 == 0)
			n += snprintf(big + n, sizeof(big) - n,
				      "\r\n{\"event\": \"E\", \"data\": {\"i\": %d}, \"timestamp\": "
				      "{\"seconds\": 1, \"microseconds\": 2}}\n", i);
	}
	peer_write(&p, big, n);
	CHECK(dispatch(&p) == 0, "%s", kqmp_last_error(p.q)->desc);
	for (int i = 0; i < 100; i++) {
		json_object *v;

		CHECK(o[i].calls == 1 && json_object_object_get_ex(o[i].ret, "n", &v) &&
		      json_object_get_int(v) == i, "reply %d", i);
		outcome_clear(&o[i]);
	}
	CHECK(kqmp_pending(p.q) == 0, "pending %zu", kqmp_pending(p.q));
	for (int i = 90; i >= 0; i -= 10) {
		json_object *v;

		CHECK(kqmp_event_pop(p.q, &ev) == 1 && json_object_object_get_ex(ev.data, "i", &v) &&
		      json_object_get_int(v) == i, "event %d", i);
		kqmp_event_clear(&ev);
	}
	pair_close(&p);
}

static void test_garbage(void)
{
	struct outcome a = { 0 }, b = { 0 };
	struct pair p;
	char buf[256];
	json_object *cmd;

	pair_open(&p, 0);
	handshake(&p, "", "");
	kqmp_send(p.q, "one", NULL, record, &a);
	kqmp_send(p.q, "two", NULL, record, &b);
	dispatch(&p);
	cmd = peer_recv(&p);
	snprintf(buf, sizeof(buf), "{\"return\": {}, \"id\": %lld}\nHTTP/1.1 400 Bad Request\r\n",
		 id_of(cmd));
	json_object_put(cmd);
	peer_say(&p, buf);
	CHECK(dispatch(&p) == -1, "garbage accepted");
	CHECK(a.calls == 1 && a.ret, "the good reply before the garbage is delivered");
	CHECK(b.calls == 1 && b.err.kind == KQMP_E_PROTOCOL && strstr(b.err.desc, "'HTTP/1.1 400"),
	      "%s: %s", kqmp_err_kind_name(b.err.kind), b.err.desc);
	CHECK(kqmp_get_state(p.q) == KQMP_FAILED && kqmp_pending(p.q) == 0, "state");
	CHECK(kqmp_send(p.q, "three", NULL, record, &a) == 0 && a.calls == 1, "send after failure");
	CHECK(!kqmp_want_write(p.q), "want_write after failure");
	outcome_clear(&a);
	outcome_clear(&b);
	pair_close(&p);

	/* Valid JSON with a known kind in the wrong shape is malformed too. */
	pair_open(&p, 0);
	handshake(&p, "", "");
	kqmp_send(p.q, "one", NULL, record, &a);
	dispatch(&p);
	peer_say(&p, "{\"error\": \"just a string\", \"id\": 2}");
	CHECK(dispatch(&p) == -1 && a.err.kind == KQMP_E_PROTOCOL &&
	      strstr(a.err.desc, "malformed QMP error"), "%s", a.err.desc);
	outcome_clear(&a);
	pair_close(&p);
}

static void test_oversize(void)
{
	struct outcome a = { 0 };
	static char buf[4096];
	struct pair p;
	size_t n;

	pair_open(&p, 0);
	handshake(&p, "", "");
	kqmp_set_max_msg(p.q, 1024);
	kqmp_send(p.q, "big", NULL, record, &a);
	dispatch(&p);
	n = (size_t)snprintf(buf, sizeof(buf), "{\"return\": {\"s\": \"");
	memset(buf + n, 'x', 2000);
	n += 2000;
	n += (size_t)snprintf(buf + n, sizeof(buf) - n, "\"}, \"id\": 2}");
	peer_write(&p, buf, n);
	CHECK(dispatch(&p) == -1, "oversize accepted");
	CHECK(a.calls == 1 && a.err.kind == KQMP_E_PROTOCOL && strstr(a.err.desc, "limit of 1024"),
	      "%s", a.err.desc);
	outcome_clear(&a);
	pair_close(&p);
}

static void test_not_qmp(void)
{
	static const struct {
		const char *says;
		const char *want;
	} peers[] = {
		{ "SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n", "not a QMP server: expected a JSON object, got 'SSH-2.0-OpenSSH_9.2p1" },
		{ "{\"hello\": \"world\"}\n", "not a QMP server: its first message was '{\"hello\":\"world\"}'" },
		{ "{\"QMP\": {\"version\": 7}}", "malformed QMP greeting" },
	};

	for (size_t i = 0; i < sizeof(peers) / sizeof(peers[0]); i++) {
		struct outcome a = { 0 };
		struct kqmp_error err;
		struct pair p;

		pair_open(&p, 0);
		kqmp_send(p.q, "query-status", NULL, record, &a);
		peer_say(&p, peers[i].says);
		CHECK(kqmp_dispatch(p.q, &err) == -1 && err.kind == KQMP_E_PROTOCOL &&
		      strstr(err.desc, peers[i].want), "peer %zu: %s", i, err.desc);
		CHECK(strstr(err.desc, "fd "), "names the connection: %s", err.desc);
		CHECK(a.calls == 1 && a.err.kind == KQMP_E_PROTOCOL, "queued command failed");
		pair_close(&p);
	}
}

static void test_unknown_id(void)
{
	struct outcome a = { 0 };
	struct pair p;
	char buf[256];
	json_object *cmd;

	pair_open(&p, 0);
	handshake(&p, "", "");
	kqmp_send(p.q, "mine", NULL, record, &a);
	dispatch(&p);
	cmd = peer_recv(&p);
	snprintf(buf, sizeof(buf), "{\"return\": {}, \"id\": 999}{\"return\": 1, \"id\": \"theirs\"}"
		 "{\"return\": 2}{\"whatever\": 3}{\"return\": {\"ok\": true}, \"id\": %lld}",
		 id_of(cmd));
	json_object_put(cmd);
	peer_say(&p, buf);
	CHECK(dispatch(&p) == 0, "%s", kqmp_last_error(p.q)->desc);
	CHECK(a.calls == 1 && a.ret, "own reply");
	CHECK(strstr(p.log, "unknown id: '{\"return\":{},\"id\":999}'") &&
	      strstr(p.log, "\"theirs\"") && strstr(p.log, "'{\"return\":2}'") &&
	      strstr(p.log, "unexpected message: '{\"whatever\":3}'"), "log: %s", p.log);
	outcome_clear(&a);
	pair_close(&p);
}

static void test_eof_mid_message(void)
{
	struct outcome a = { 0 };
	struct kqmp_error err;
	struct pair p;

	pair_open(&p, 0);
	handshake(&p, "", "");
	kqmp_send(p.q, "query-status", NULL, record, &a);
	dispatch(&p);
	/* Read it: closing with unread bytes would be a reset, not an EOF. */
	json_object_put(peer_recv(&p));
	peer_say(&p, "{\"return\": {\"status\": \"runn");
	CHECK(dispatch(&p) == 0, "partial");
	close(p.peer);
	p.peer = -1;
	CHECK(kqmp_dispatch(p.q, &err) == -1 && err.kind == KQMP_E_IO &&
	      strstr(err.desc, "closed by the peer in the middle of a message"), "%s", err.desc);
	CHECK(a.calls == 1 && a.err.kind == KQMP_E_IO, "pending failed");
	outcome_clear(&a);
	pair_close(&p);

	/* EOF before any greeting. */
	pair_open(&p, 0);
	close(p.peer);
	p.peer = -1;
	CHECK(kqmp_dispatch(p.q, &err) == -1 && strstr(err.desc, "before its QMP greeting"),
	      "%s", err.desc);
	pair_close(&p);
}

static void test_broken_pipe(void)
{
	struct outcome a = { 0 };
	struct kqmp_error err;
	struct pair p;

	/* If the library let SIGPIPE through, this process would die here. */
	signal(SIGPIPE, SIG_DFL);
	pair_open(&p, 0);
	handshake(&p, "", "");
	shutdown(p.peer, SHUT_RD);
	kqmp_send(p.q, "query-status", NULL, record, &a);
	CHECK(kqmp_dispatch(p.q, &err) == -1 && err.kind == KQMP_E_IO &&
	      strstr(err.desc, "Broken pipe"), "%s", err.desc);
	CHECK(a.calls == 1 && a.err.kind == KQMP_E_IO, "pending failed");
	pair_close(&p);
}

static void test_qmp_error_and_dropped(void)
{
	struct outcome a = { 0 }, b = { 0 };
	struct pair p;
	char buf[512];
	json_object *c1, *c2;

	pair_open(&p, KQMP_F_OOB);
	handshake(&p, "\"oob\"", "{ \"enable\": [ \"oob\" ] }");
	CHECK(kqmp_oob_enabled(p.q), "oob");
	kqmp_send(p.q, "device_del", NULL, record, &a);
	kqmp_send_oob(p.q, "migrate-pause", NULL, record, &b);
	dispatch(&p);
	c1 = peer_recv(&p);
	c2 = peer_recv(&p);
	CHECK(!strcmp(str_of(c2, "exec-oob"), "migrate-pause"), "%s", json_object_to_json_string(c2));
	snprintf(buf, sizeof(buf),
		 "{\"event\": \"COMMAND_DROPPED\", \"data\": {\"id\": %lld, \"reason\": \"queue-full\"}, "
		 "\"timestamp\": {\"seconds\": 1, \"microseconds\": 0}}"
		 "{\"error\": {\"class\": \"DeviceNotFound\", \"desc\": \"Device 'x' not found\"}, \"id\": %lld}",
		 id_of(c1), id_of(c2));
	json_object_put(c1);
	json_object_put(c2);
	peer_say(&p, buf);
	CHECK(dispatch(&p) == 0, "%s", kqmp_last_error(p.q)->desc);
	CHECK(a.calls == 1 && a.err.kind == KQMP_E_QMP && !strcmp(a.err.cls, "CommandDropped") &&
	      strstr(a.err.desc, "queue-full"), "%s: %s", a.err.cls, a.err.desc);
	CHECK(b.calls == 1 && b.err.kind == KQMP_E_QMP && !strcmp(b.err.cls, "DeviceNotFound") &&
	      !strcmp(b.err.desc, "Device 'x' not found"), "%s: %s", b.err.cls, b.err.desc);
	pair_close(&p);

	/* oob asked for but not offered: an oob command queued meanwhile fails. */
	memset(&b, 0, sizeof(b));
	pair_open(&p, KQMP_F_OOB);
	kqmp_send_oob(p.q, "migrate-pause", NULL, record, &b);
	handshake(&p, "", "");
	CHECK(!kqmp_oob_enabled(p.q), "oob not offered");
	CHECK(b.calls == 1 && b.err.kind == KQMP_E_INVAL && strstr(b.err.desc, "'oob'"),
	      "%s", b.err.desc);
	CHECK(kqmp_send_oob(p.q, "migrate-pause", NULL, record, &b) == 0, "oob after handshake");
	pair_close(&p);
}

static void close_in_callback(struct kqmp *q, json_object *ret, const struct kqmp_error *err,
			      void *arg)
{
	(void)ret;
	(void)err;
	(void)arg;
	kqmp_close(q);
}

static void test_close_and_cancel(void)
{
	struct outcome a = { 0 }, b = { 0 };
	struct kqmp_error err;
	struct pair p;
	uint64_t id;

	/* kqmp_close with commands pending: each hears KQMP_E_CLOSED. */
	pair_open(&p, 0);
	handshake(&p, "", "");
	kqmp_send(p.q, "one", NULL, record, &a);
	kqmp_close(p.q);
	p.q = NULL;
	CHECK(a.calls == 1 && a.err.kind == KQMP_E_CLOSED, "%s", kqmp_err_kind_name(a.err.kind));
	pair_close(&p);

	/* kqmp_close from a callback: dispatch frees it on the way out. */
	memset(&a, 0, sizeof(a));
	pair_open(&p, 0);
	handshake(&p, "", "");
	kqmp_send(p.q, "one", NULL, close_in_callback, NULL);
	kqmp_send(p.q, "two", NULL, record, &a);
	dispatch(&p);
	peer_say(&p, "{\"return\": {}, \"id\": 2}{\"return\": {}, \"id\": 3}");
	CHECK(kqmp_dispatch(p.q, &err) == -1 && err.kind == KQMP_E_CLOSED, "%s", err.desc);
	p.q = NULL;
	CHECK(a.calls == 1 && a.err.kind == KQMP_E_CLOSED, "second saw the close");
	pair_close(&p);

	/* The same while a blocking helper waits: it returns, q is gone. */
	for (int helper = 0; helper < 2; helper++) {
		struct kqmp_event ev;

		pair_open(&p, 0);
		handshake(&p, "", "");
		kqmp_send(p.q, "one", NULL, close_in_callback, NULL);
		peer_say(&p, "{\"return\": {}, \"id\": 2}");
		if (helper == 0)
			CHECK(kqmp_wait_event(p.q, "NEVER", NULL, NULL, 5000, &ev, &err) == -1 &&
			      err.kind == KQMP_E_CLOSED, "wait_event: %s", err.desc);
		else
			CHECK(kqmp_execute(p.q, "two", NULL, 5000, NULL, &err) == -1 &&
			      err.kind == KQMP_E_CLOSED, "execute: %s", err.desc);
		p.q = NULL;
		pair_close(&p);
	}

	/* A cancelled command's reply is dropped silently. */
	memset(&a, 0, sizeof(a));
	pair_open(&p, 0);
	handshake(&p, "", "");
	id = kqmp_send(p.q, "one", NULL, record, &a);
	kqmp_send(p.q, "two", NULL, record, &b);
	CHECK(kqmp_cancel(p.q, id) && !kqmp_cancel(p.q, 12345), "cancel");
	dispatch(&p);
	peer_say(&p, "{\"return\": {}, \"id\": 2}{\"return\": {}, \"id\": 3}");
	CHECK(dispatch(&p) == 0 && a.calls == 0 && b.calls == 1 && kqmp_pending(p.q) == 0,
	      "a %d b %d", a.calls, b.calls);
	CHECK(p.log[0] == '\0', "log: %s", p.log);
	outcome_clear(&b);
	pair_close(&p);
}

/* A 1 MiB command through a socket that takes ~200 KiB at a time. */
static void test_partial_writes(void)
{
	size_t big = 1u << 20;
	char *blob = malloc(big + 1);
	struct outcome a = { 0 };
	json_object *args = json_object_new_object(), *cmd, *got;
	struct pair p;
	int rounds = 0;

	memset(blob, 'q', big);
	blob[big] = '\0';
	json_object_object_add(args, "blob", json_object_new_string(blob));
	pair_open(&p, 0);
	kqmp_reader_set_max_msg(p.rd, 2u << 20);
	handshake(&p, "", "");
	kqmp_send(p.q, "big", args, record, &a);
	dispatch(&p);
	CHECK(kqmp_want_write(p.q), "1 MiB fit in the socket at once?");
	/* Read a little, dispatch a little, until the whole command is out. */
	while (kqmp_want_write(p.q) && rounds++ < 1000) {
		char buf[65536];
		ssize_t n = read(p.peer, buf, sizeof(buf));
		struct kqmp_error err;

		if (n <= 0)
			break;
		kqmp_reader_feed(p.rd, buf, (size_t)n, &err);
		dispatch(&p);
	}
	cmd = peer_recv(&p);
	CHECK(cmd && json_object_object_get_ex(cmd, "arguments", &got) &&
	      !strcmp(str_of(got, "blob"), blob), "the command arrived intact");
	CHECK(rounds > 1, "took %d rounds", rounds);
	json_object_put(cmd);
	free(blob);
	pair_close(&p);
}

/* Nobody pops: the queue keeps the newest 4096, counts what it dropped
 * and says so once. */
static void test_event_queue_cap(void)
{
	struct kqmp_event ev;
	static char batch[100 * 32];
	struct pair p;
	size_t len = 0;
	int n = 0;

	pair_open(&p, 0);
	handshake(&p, "", "");
	/* 100 events a write: a unix socket holds only ~280 small writes. */
	for (int i = 0; i < 4100; i++) {
		len += snprintf(batch + len, sizeof(batch) - len, "{\"event\": \"E%d\"}\n", i);
		if (i % 100 == 99 || i == 4099) {
			peer_write(&p, batch, len);
			dispatch(&p);
			len = 0;
		}
	}
	CHECK(kqmp_event_pop(p.q, &ev) == 1 && !strcmp(ev.name, "E4"), "oldest kept: %s", ev.name);
	kqmp_event_clear(&ev);
	while (kqmp_event_pop(p.q, &ev) == 1) {
		n++;
		kqmp_event_clear(&ev);
	}
	CHECK(n == 4095, "%d more queued", n);
	CHECK(kqmp_events_dropped(p.q) == 4, "%llu dropped, not 4",
	      (unsigned long long)kqmp_events_dropped(p.q));
	CHECK(strstr(p.log, "event queue full (4096 events, 16777216 bytes at most): "
		     "dropping the oldest from here on, first E0") &&
	      !strstr(strstr(p.log, "event queue full") + 1, "event queue full"),
	      "log: %.300s", p.log);
	pair_close(&p);
}

/* A QEMU that writes faster than we read: one dispatch takes at most
 * 64 KiB, so the caller's loop gets back to its other connections; the
 * rest comes with the next calls. */
static void test_read_budget(void)
{
	static char batch[500 * 100];
	struct kqmp_event ev;
	struct pair p;
	int first = 0, all;

	pair_open(&p, 0);
	handshake(&p, "", "");
	for (int w = 0; w < 2; w++) {
		for (int i = 0; i < 500; i++) {
			char *e = batch + i * 100;
			int n = snprintf(e, 100, "{\"event\": \"E%d\", \"data\": {\"pad\": \"",
					 w * 500 + i);

			memset(e + n, 'x', 100 - (size_t)n - 4);
			memcpy(e + 96, "\"}}\n", 4);
		}
		peer_write(&p, batch, sizeof(batch));
	}
	CHECK(dispatch(&p) == 0, "dispatch");
	while (kqmp_event_pop(p.q, &ev) == 1) {
		first++;
		kqmp_event_clear(&ev);
	}
	CHECK(first > 0 && first <= 65536 / 100, "one dispatch took %d events of 100 bytes, "
	      "over 64 KiB", first);
	for (int k = 0; k < 10; k++)
		dispatch(&p);
	all = first;
	while (kqmp_event_pop(p.q, &ev) == 1) {
		all++;
		kqmp_event_clear(&ev);
	}
	CHECK(all == 1000, "%d events of 1000 arrived", all);
	pair_close(&p);
}

static void test_connect_errors(void)
{
	struct kqmp_error err;
	char path[300];

	memset(path, 'x', sizeof(path) - 1);
	path[0] = '/';
	path[sizeof(path) - 1] = '\0';
	CHECK(!kqmp_connect_unix(path, 0, &err) && err.kind == KQMP_E_INVAL &&
	      strstr(err.desc, "at most 107"), "%s", err.desc);
	CHECK(!kqmp_open("/nonexistent/kwq.sock", 0, 1000, &err) && err.kind == KQMP_E_CONNECT &&
	      strstr(err.desc, "'/nonexistent/kwq.sock'") && strstr(err.desc, "No such file"),
	      "%s", err.desc);
	CHECK(!kqmp_open("", 0, 1000, &err) && err.kind == KQMP_E_INVAL, "%s", err.desc);
	/* KQMP_F_WAIT keeps trying a missing socket until the timeout. */
	CHECK(!kqmp_open("/nonexistent/kwq.sock", KQMP_F_WAIT, 200, &err) &&
	      err.kind == KQMP_E_CONNECT && strstr(err.desc, "after waiting 200 ms"), "%s", err.desc);
	CHECK(!kqmp_open(path, KQMP_F_WAIT, 60000, &err) && err.kind == KQMP_E_INVAL,
	      "a bad path is not waited for: %s", err.desc);
}

/* ---- blocking helpers, with a peer thread -------------------------------- */

static void *answering_peer(void *arg)
{
	struct pair *p = arg;
	char buf[1024];
	json_object *cmd;
	long long slow_id;

	/* The handshake, a late reply to the command that timed out, events,
	 * then the answer to the second command. */
	peer_greet(p, "");
	peer_ack_caps(p, "");
	cmd = peer_recv(p);
	slow_id = id_of(cmd);
	json_object_put(cmd);
	cmd = peer_recv(p);
	usleep(50 * 1000);
	snprintf(buf, sizeof(buf),
		 "{\"return\": {\"late\": true}, \"id\": %lld}"
		 "{\"event\": \"DEVICE_DELETED\", \"data\": {\"device\": \"a\"}}"
		 "{\"event\": \"DEVICE_DELETED\", \"data\": {\"device\": \"hca0\"}}"
		 "{\"event\": \"DEVICE_DELETED\", \"data\": {\"device\": \"c\"}}"
		 "{\"return\": {\"status\": \"running\"}, \"id\": %lld}", slow_id, id_of(cmd));
	json_object_put(cmd);
	peer_say(p, buf);
	return NULL;
}

static bool is_hca0(json_object *data, void *arg)
{
	return !strcmp(str_of(data, "device"), arg);
}

static void test_blocking(void)
{
	struct kqmp_event ev;
	struct kqmp_error err;
	json_object *ret = NULL;
	pthread_t th;
	struct pair p;

	pair_open(&p, 0);
	/* kqmp_execute drives the handshake of a kqmp_new_fd() connection. */
	pthread_create(&th, NULL, answering_peer, &p);
	CHECK(kqmp_execute(p.q, "slow", NULL, 100, &ret, &err) == -1 &&
	      err.kind == KQMP_E_TIMEOUT && strstr(err.desc, "'slow' within 100 ms"),
	      "%s", err.desc);
	CHECK(kqmp_execute(p.q, "query-status", NULL, 5000, &ret, &err) == 0 &&
	      !strcmp(str_of(ret, "status"), "running"), "%s", err.desc);
	json_object_put(ret);
	pthread_join(th, NULL);
	CHECK(p.log[0] == '\0', "late reply to a timed-out command logged: %s", p.log);

	/* The match function picks the middle event; the others stay, in order. */
	CHECK(kqmp_wait_event(p.q, "DEVICE_DELETED", is_hca0, "hca0", 1000, &ev, &err) == 0 &&
	      !strcmp(str_of(ev.data, "device"), "hca0") && ev.sec == -1, "%s", err.desc);
	kqmp_event_clear(&ev);
	CHECK(kqmp_event_pop(p.q, &ev) == 1 && !strcmp(str_of(ev.data, "device"), "a"), "a");
	kqmp_event_clear(&ev);
	CHECK(kqmp_event_pop(p.q, &ev) == 1 && !strcmp(str_of(ev.data, "device"), "c"), "c");
	kqmp_event_clear(&ev);

	CHECK(kqmp_wait_event(p.q, "NEVER", NULL, NULL, 50, &ev, &err) == -1 &&
	      err.kind == KQMP_E_TIMEOUT, "%s", err.desc);
	pair_close(&p);
}

int main(void)
{
	static const struct check_case tests[] = {
		{ "byte-by-byte", test_byte_by_byte },
		{ "hundred-in-one-write", test_hundred_in_one_write },
		{ "garbage", test_garbage },
		{ "oversize", test_oversize },
		{ "not-qmp", test_not_qmp },
		{ "unknown-id", test_unknown_id },
		{ "eof-mid-message", test_eof_mid_message },
		{ "broken-pipe", test_broken_pipe },
		{ "qmp-error-and-dropped", test_qmp_error_and_dropped },
		{ "close-and-cancel", test_close_and_cancel },
		{ "blocking", test_blocking },
		{ "partial-writes", test_partial_writes },
		{ "event-queue-cap", test_event_queue_cap },
		{ "read-budget", test_read_budget },
		{ "connect-errors", test_connect_errors },
	};

	alarm(60);	/* a wedged case fails instead of hanging the suite */
	check_run(tests, sizeof(tests) / sizeof(tests[0]));
	if (failures) {
		fprintf(stderr, "%d check(s) failed\n", failures);
		return 1;
	}
	return 0;
}
