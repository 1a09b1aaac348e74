/* SPDX-License-Identifier: MIT */
/*
 * libkawarimi-qmp against a real QEMU (TCG, no devices), one fresh QEMU per
 * case.  QEMU dies with us: PR_SET_PDEATHSIG, and every exit path (normal,
 * failed check, SIGTERM from meson's timeout, SIGALRM bound) kills it.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "kawarimi-qmp.h"
#include "../check.h"

static pid_t qemu_pid = -1;
static char dir[64], sock[128];


static void stop_qemu(void)
{
	if (qemu_pid > 0) {
		kill(qemu_pid, SIGKILL);
		waitpid(qemu_pid, NULL, 0);
		qemu_pid = -1;
	}
	unlink(sock);
}

static void cleanup(void)
{
	stop_qemu();
	if (dir[0])
		rmdir(dir);
}

static void on_signal(int sig)
{
	/* async-signal-safe enough: kill + waitpid + unlink + rmdir */
	cleanup();
	signal(sig, SIG_DFL);
	raise(sig);
}

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Starts QEMU; paused adds -S.  Returns at once, the socket not there yet. */
static int spawn_qemu(bool paused)
{
	stop_qemu();
	qemu_pid = fork();
	if (qemu_pid < 0)
		return -1;
	if (qemu_pid == 0) {
		char qmp[200];
		int devnull = open("/dev/null", O_RDWR);

		prctl(PR_SET_PDEATHSIG, SIGKILL);
		dup2(devnull, 0);
		dup2(devnull, 1);
		snprintf(qmp, sizeof(qmp), "unix:%s,server=on,wait=off", sock);
		execlp("qemu-system-x86_64", "qemu-system-x86_64", "-machine", "q35",
		       "-accel", "tcg", "-nodefaults", "-display", "none", "-m", "64",
		       "-qmp", qmp, paused ? "-S" : NULL, (char *)NULL);
		_exit(127);
	}
	return 0;
}

/* Starts QEMU and returns once its socket file exists (kqmp_open still
 * needs KQMP_F_WAIT: the file appears before QEMU listens). */
static int start_qemu(bool paused)
{
	if (spawn_qemu(paused) < 0)
		return -1;
	for (int64_t end = now_ms() + 20000; now_ms() < end; usleep(20000)) {
		struct stat st;

		if (stat(sock, &st) == 0)
			return 0;
		if (waitpid(qemu_pid, NULL, WNOHANG) == qemu_pid) {
			qemu_pid = -1;
			fprintf(stderr, "QEMU exited before creating %s\n", sock);
			return -1;
		}
	}
	fprintf(stderr, "QEMU did not create %s within 20 s\n", sock);
	return -1;
}

/* KQMP_F_WAIT: QEMU creates the socket file before it listens. */
static struct kqmp *open_qmp(unsigned flags)
{
	struct kqmp_error err;
	struct kqmp *q = kqmp_open(sock, flags | KQMP_F_WAIT, 10000, &err);

	CHECK(q, "kqmp_open: %s", err.desc);
	return q;
}

static const char *status_of(json_object *ret)
{
	json_object *s;

	return json_object_object_get_ex(ret, "status", &s) ? json_object_get_string(s) : "(none)";
}

static const char *query_status(struct kqmp *q)
{
	static char buf[600];
	struct kqmp_error err;
	json_object *ret;

	if (kqmp_execute(q, "query-status", NULL, 10000, &ret, &err) < 0) {
		snprintf(buf, sizeof(buf), "error: %s", err.desc);
		return buf;
	}
	snprintf(buf, sizeof(buf), "%s", status_of(ret));
	json_object_put(ret);
	return buf;
}

static void test_greeting_version(void)
{
	struct kqmp *q;
	json_object *ret = NULL, *qemu, *major;
	struct kqmp_error err;

	if (start_qemu(true) < 0 || !(q = open_qmp(0))) {
		failures++;
		return;
	}
	CHECK(kqmp_get_state(q) == KQMP_READY, "state %d", kqmp_get_state(q));
	CHECK(json_object_object_get_ex(kqmp_version(q), "qemu", &qemu) &&
	      json_object_object_get_ex(qemu, "major", &major) &&
	      json_object_get_int(major) >= 7, "greeting version %s",
	      json_object_to_json_string(kqmp_version(q)));
	/* The greeting says what query-version says. */
	CHECK(kqmp_execute(q, "query-version", NULL, 10000, &ret, &err) == 0, "%s", err.desc);
	CHECK(ret && json_object_equal(ret, kqmp_version(q)), "query-version %s vs greeting %s",
	      json_object_to_json_string(ret), json_object_to_json_string(kqmp_version(q)));
	CHECK(!strcmp(kqmp_name(q), sock), "name %s", kqmp_name(q));
	json_object_put(ret);
	kqmp_close(q);
}

static void test_status(void)
{
	struct kqmp_error err;
	struct kqmp *q;

	if (start_qemu(true) < 0 || !(q = open_qmp(0))) {
		failures++;
		return;
	}
	CHECK(!strcmp(query_status(q), "prelaunch"), "-S: %s", query_status(q));
	CHECK(kqmp_execute(q, "cont", NULL, 10000, NULL, &err) == 0, "cont: %s", err.desc);
	CHECK(!strcmp(query_status(q), "running"), "after cont: %s", query_status(q));
	kqmp_close(q);

	if (start_qemu(false) < 0 || !(q = open_qmp(0))) {
		failures++;
		return;
	}
	CHECK(!strcmp(query_status(q), "running"), "no -S: %s", query_status(q));
	kqmp_close(q);
}

struct reply_log {
	int n;
	char status[8][520];
	bool error[8];
};

static void log_status(struct kqmp *q, json_object *ret, const struct kqmp_error *err,
		       void *arg)
{
	struct reply_log *l = arg;

	(void)q;
	if (l->n < 8) {
		l->error[l->n] = err != NULL;
		snprintf(l->status[l->n], sizeof(l->status[0]), "%s",
			 ret ? (json_object_is_type(ret, json_type_object) &&
				json_object_object_length(ret) == 0 ? "{}" : status_of(ret))
			     : err->desc);
	}
	l->n++;
}

/* stop/cont with STOP/RESUME events arriving while commands are in flight. */
static void test_stop_cont_events(void)
{
	struct reply_log l = { 0 };
	struct kqmp_event ev;
	struct kqmp_error err;
	struct kqmp *q;

	if (start_qemu(false) < 0 || !(q = open_qmp(0))) {
		failures++;
		return;
	}
	/* Five commands out before any reply comes back. */
	kqmp_send(q, "stop", NULL, log_status, &l);
	kqmp_send(q, "query-status", NULL, log_status, &l);
	kqmp_send(q, "cont", NULL, log_status, &l);
	kqmp_send(q, "query-status", NULL, log_status, &l);
	uint64_t last = kqmp_send(q, "query-pci", NULL, log_status, &l);

	CHECK(last > 0 && kqmp_pending(q) == 5, "pending %zu", kqmp_pending(q));
	/* Waiting for RESUME dispatches, so the replies are handled too. */
	CHECK(kqmp_wait_event(q, "STOP", NULL, NULL, 10000, &ev, &err) == 0, "STOP: %s", err.desc);
	CHECK(ev.sec > 1600000000 && ev.usec >= 0 && ev.usec < 1000000,
	      "STOP timestamp %lld.%06lld", (long long)ev.sec, (long long)ev.usec);
	kqmp_event_clear(&ev);
	CHECK(kqmp_wait_event(q, "RESUME", NULL, NULL, 10000, &ev, &err) == 0, "RESUME: %s", err.desc);
	kqmp_event_clear(&ev);
	CHECK(!strcmp(query_status(q), "running"), "%s", query_status(q));
	CHECK(l.n == 5 && kqmp_pending(q) == 0, "%d replies, %zu pending", l.n, kqmp_pending(q));
	CHECK(!strcmp(l.status[0], "{}") && !strcmp(l.status[1], "paused") &&
	      !strcmp(l.status[2], "{}") && !strcmp(l.status[3], "running") && !l.error[4],
	      "replies: %s %s %s %s", l.status[0], l.status[1], l.status[2], l.status[3]);

	/* An event wait that times out leaves the connection usable. */
	int64_t t0 = now_ms();

	CHECK(kqmp_wait_event(q, "SHUTDOWN", NULL, NULL, 300, &ev, &err) == -1 &&
	      err.kind == KQMP_E_TIMEOUT, "kind %s", kqmp_err_kind_name(err.kind));
	CHECK(now_ms() - t0 < 5000, "timeout took %lld ms", (long long)(now_ms() - t0));
	CHECK(!strcmp(query_status(q), "running"), "%s", query_status(q));
	kqmp_close(q);
}

static void test_query_pci(void)
{
	json_object *ret = NULL, *bus0, *devs, *dev, *id, *vendor;
	struct kqmp_error err;
	bool host_bridge = false;
	struct kqmp *q;

	if (start_qemu(true) < 0 || !(q = open_qmp(0))) {
		failures++;
		return;
	}
	CHECK(kqmp_execute(q, "query-pci", NULL, 10000, &ret, &err) == 0, "%s", err.desc);
	CHECK(json_object_is_type(ret, json_type_array) && json_object_array_length(ret) >= 1,
	      "%s", json_object_to_json_string(ret));
	bus0 = ret ? json_object_array_get_idx(ret, 0) : NULL;
	if (bus0 && json_object_object_get_ex(bus0, "devices", &devs)) {
		/* q35's host bridge: 8086:29c0 */
		for (size_t i = 0; i < json_object_array_length(devs); i++) {
			dev = json_object_array_get_idx(devs, i);
			if (json_object_object_get_ex(dev, "id", &id) &&
			    json_object_object_get_ex(id, "vendor", &vendor) &&
			    json_object_get_int(vendor) == 0x8086 &&
			    json_object_object_get_ex(id, "device", &vendor) &&
			    json_object_get_int(vendor) == 0x29c0)
				host_bridge = true;
		}
	}
	CHECK(host_bridge, "no 8086:29c0 in %.300s", json_object_to_json_string(ret));
	json_object_put(ret);
	kqmp_close(q);
}

static void test_device_not_found(void)
{
	struct kqmp_error err;
	json_object *ret = (json_object *)1, *args;
	struct kqmp *q;

	if (start_qemu(true) < 0 || !(q = open_qmp(0))) {
		failures++;
		return;
	}
	args = json_object_new_object();
	json_object_object_add(args, "id", json_object_new_string("nope"));
	CHECK(kqmp_execute(q, "device_del", args, 10000, &ret, &err) == -1, "succeeded");
	CHECK(err.kind == KQMP_E_QMP && !strcmp(err.cls, "DeviceNotFound") &&
	      strstr(err.desc, "nope"), "%s %s: %s", kqmp_err_kind_name(err.kind), err.cls, err.desc);
	CHECK(ret == NULL, "ret set on error");
	/* A QMP error is not a connection error. */
	CHECK(kqmp_get_state(q) == KQMP_READY && !strcmp(query_status(q), "prelaunch"), "after error");
	CHECK(kqmp_execute(q, "no-such-command", NULL, 10000, NULL, &err) == -1 &&
	      !strcmp(err.cls, "CommandNotFound"), "%s: %s", err.cls, err.desc);
	kqmp_close(q);
}

static void *kill_later(void *arg)
{
	(void)arg;
	usleep(300 * 1000);
	kill(qemu_pid, SIGKILL);
	return NULL;
}

static void count_reply(struct kqmp *q, json_object *ret, const struct kqmp_error *err,
			void *arg)
{
	struct kqmp_error *out = arg;

	(void)q;
	if (ret)
		out->kind = KQMP_OK;
	else
		*out = *err;
}

/* QEMU dies while a command waits: an error, quickly, for every command. */
static void test_qemu_killed(void)
{
	struct kqmp_error err, other = { .kind = KQMP_E_INVAL };
	pthread_t th;
	struct kqmp *q;

	if (start_qemu(true) < 0 || !(q = open_qmp(0))) {
		failures++;
		return;
	}
	/* Frozen, QEMU cannot answer: both commands are really waiting. */
	kill(qemu_pid, SIGSTOP);
	kqmp_send(q, "query-pci", NULL, count_reply, &other);
	pthread_create(&th, NULL, kill_later, NULL);

	int64_t t0 = now_ms();
	int rc = kqmp_execute(q, "query-status", NULL, 20000, NULL, &err);

	pthread_join(th, NULL);
	CHECK(rc == -1 && err.kind == KQMP_E_IO, "rc %d kind %s: %s", rc,
	      kqmp_err_kind_name(err.kind), err.desc);
	CHECK(strstr(err.desc, sock) && strstr(err.desc, "by the peer"), "desc: %s", err.desc);
	CHECK(now_ms() - t0 < 10000, "took %lld ms", (long long)(now_ms() - t0));
	CHECK(other.kind == KQMP_E_IO, "the other command: %s", kqmp_err_kind_name(other.kind));
	CHECK(kqmp_get_state(q) == KQMP_FAILED && kqmp_pending(q) == 0, "state");
	CHECK(kqmp_send(q, "query-status", NULL, NULL, NULL) == 0, "send after failure");
	CHECK(kqmp_execute(q, "query-status", NULL, 1000, NULL, &err) == -1 &&
	      err.kind == KQMP_E_CLOSED, "execute after failure: %s", kqmp_err_kind_name(err.kind));
	waitpid(qemu_pid, NULL, 0);
	qemu_pid = -1;
	kqmp_close(q);
}

struct pipeline {
	int n;
	int bad;
	const char *want[300];
};

static void check_in_order(struct kqmp *q, json_object *ret, const struct kqmp_error *err,
			   void *arg)
{
	struct pipeline *p = arg;
	json_object *v;
	const char *got = "(error)";

	(void)q;
	if (ret && json_object_object_get_ex(ret, "status", &v))
		got = json_object_get_string(v);
	else if (ret && json_object_object_get_ex(ret, "qemu", &v))
		got = "version";
	else if (ret)
		got = "other";
	else if (err && err->kind == KQMP_E_QMP)
		got = err->cls;
	if (strcmp(got, p->want[p->n])) {
		if (p->bad++ < 5)
			fprintf(stderr, "reply %d: got %s, want %s\n", p->n, got, p->want[p->n]);
	}
	p->n++;
}

/* Hundreds of commands written before the first reply is read. */
static void test_pipelined(void)
{
	static struct pipeline p;
	struct kqmp_error err;
	struct kqmp *q;
	int n = 300;

	if (start_qemu(true) < 0 || !(q = open_qmp(0))) {
		failures++;
		return;
	}
	memset(&p, 0, sizeof(p));
	for (int i = 0; i < n; i++) {
		const char *cmd = i % 3 == 0 ? "query-status" : i % 3 == 1 ? "query-version" : "nope";

		p.want[i] = i % 3 == 0 ? "prelaunch" : i % 3 == 1 ? "version" : "CommandNotFound";
		CHECK(kqmp_send(q, cmd, NULL, check_in_order, &p) > 0, "send %d", i);
	}
	CHECK(kqmp_want_write(q), "nothing to write");
	CHECK(kqmp_pending(q) == (size_t)n, "pending %zu", kqmp_pending(q));
	/* The blocking helper drives the whole pipeline to its reply. */
	CHECK(!strcmp(query_status(q), "prelaunch"), "status");
	CHECK(p.n == n && p.bad == 0, "%d replies, %d wrong", p.n, p.bad);
	CHECK(kqmp_dispatch(q, &err) == 0, "%s", err.desc);
	kqmp_close(q);
}

static void test_oob(void)
{
	struct kqmp_error err = { 0 };
	struct kqmp *q;

	if (start_qemu(true) < 0 || !(q = open_qmp(KQMP_F_OOB))) {
		failures++;
		return;
	}
	CHECK(kqmp_oob_enabled(q), "QEMU 7.2 offers oob");
	/* migrate-pause is allowed out of band; outside postcopy it fails. */
	kqmp_send_oob(q, "migrate-pause", NULL, count_reply, &err);
	CHECK(!strcmp(query_status(q), "prelaunch"), "status");
	for (int i = 0; i < 100 && kqmp_pending(q); i++)
		query_status(q);
	CHECK(err.kind == KQMP_E_QMP && !strcmp(err.cls, "GenericError"), "%s %s: %s",
	      kqmp_err_kind_name(err.kind), err.cls, err.desc);
	kqmp_close(q);

	q = open_qmp(0);
	if (q) {
		CHECK(!kqmp_oob_enabled(q), "oob without the flag");
		CHECK(kqmp_send_oob(q, "migrate-pause", NULL, NULL, NULL) == 0, "oob sent");
		kqmp_close(q);
	}
}

/* KQMP_F_WAIT rides out a QEMU that is still starting. */
static void test_wait_for_start(void)
{
	struct kqmp_error err;
	struct kqmp *q;

	stop_qemu();
	q = kqmp_open(sock, 0, 5000, &err);
	CHECK(!q && err.kind == KQMP_E_CONNECT && strstr(err.desc, sock) &&
	      strstr(err.desc, "No such file"), "without QEMU: %s", err.desc);
	if (spawn_qemu(true) < 0) {
		failures++;
		return;
	}
	q = kqmp_open(sock, KQMP_F_WAIT, 20000, &err);
	CHECK(q && !strcmp(query_status(q), "prelaunch"), "%s", q ? "" : err.desc);
	kqmp_close(q);
}

/* A QMP monitor serves one client; a second one never gets a greeting. */
static void test_second_client(void)
{
	struct kqmp_error err;
	struct kqmp *q, *q2;

	if (start_qemu(true) < 0 || !(q = open_qmp(0))) {
		failures++;
		return;
	}
	q2 = kqmp_open(sock, KQMP_F_WAIT, 500, &err);
	CHECK(!q2 && err.kind == KQMP_E_TIMEOUT && strstr(err.desc, "another client"),
	      "%s: %s", kqmp_err_kind_name(err.kind), err.desc);
	kqmp_close(q2);
	kqmp_close(q);
}

int main(void)
{
	static const struct check_case tests[] = {
		{ "greeting-version", test_greeting_version },
		{ "status", test_status },
		{ "stop-cont-events", test_stop_cont_events },
		{ "query-pci", test_query_pci },
		{ "device-not-found", test_device_not_found },
		{ "qemu-killed", test_qemu_killed },
		{ "pipelined", test_pipelined },
		{ "oob", test_oob },
		{ "second-client", test_second_client },
		{ "wait-for-start", test_wait_for_start },
	};

	snprintf(dir, sizeof(dir), "/tmp/kwq-XXXXXX");
	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return 1;
	}
	snprintf(sock, sizeof(sock), "%s/qmp.sock", dir);
	atexit(cleanup);
	signal(SIGTERM, on_signal);
	signal(SIGINT, on_signal);
	signal(SIGALRM, on_signal);
	alarm(240);	/* a hard bound below meson's timeout */

	check_run(tests, sizeof(tests) / sizeof(tests[0]));
	stop_qemu();
	if (failures) {
		fprintf(stderr, "%d check(s) failed\n", failures);
		return 1;
	}
	return 0;
}
