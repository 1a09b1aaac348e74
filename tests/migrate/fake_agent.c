/* SPDX-License-Identifier: MIT */
/*
 * A stand-in for kawarimi-agent behind a QEMU chardev, for the coordinator
 * tests that have no guest OS: listens on the given unix sockets (a VM's
 * source and destination ends of the symvirt channel), answers the
 * coordinator's commands as docs/symvirt-protocol.md says, and logs each
 * command with the wall-clock time so a test can check the barriers.
 *
 *   fake-agent LOG SOCKET... [--refuse COMMAND | --refuse-once COMMAND]
 *              [--rank N] [--delay COMMAND[@SOCKET-INDEX]:MS]...
 *              [--hang-on COMMAND[@SOCKET-INDEX]] [--die-on COMMAND[@SOCKET-INDEX]]
 *
 * Log lines: "TIME SOCKET-INDEX COMMAND ARGS-JSON", and "TIME - lease-expired
 * {"state": S}" when a lease ran out.  The job's state (running, quiescing,
 * quiesced, resuming) is also kept in LOG.state, rewritten at each change,
 * so that a test can tell whether the job was left quiesced even after the
 * agent died.  It keeps that state across its sockets like the one agent in
 * the guest would, and answers `resume` while running with InvalidState, as
 * the agent does.
 *
 * Faults, for the fault matrix (tests/migrate/fault.sh):
 *   --delay CMD[@N]:MS  CMD (on socket N only, if given) is answered MS
 *                       later; meanwhile the job is quiescing or resuming
 *                       and other commands are answered as usual;
 *   --hang-on CMD[@N]   from that command on nothing is answered (the
 *                       command is not carried out; an earlier quiesce's
 *                       lease still runs out: it is a timer in the agent);
 *   --die-on CMD[@N]    exit (status 3) on that command, without answering.
 *
 * Leases as the real agent holds them: a quiesce's `lease-ms` (1000 to
 * 3600000) runs from the command's arrival; `renew` starts it over; when it
 * runs out while quiescing or quiesced, the agent resumes the job by itself
 * (a pending quiesce is answered Timeout), logs it and sends the
 * `lease-expired` event.
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include <json-c/json.h>

#define MAX_FDS 32
#define MAX_DELAYS 8
#define LEASE_MIN 1000
#define LEASE_MAX 3600000

struct conn {
	int fd, sock_idx;
	unsigned serial;	/* pending answers find their connection by it */
	bool listener;
	char buf[65536];
	size_t len;
};

/* COMMAND[@SOCKET-INDEX]: which commands a fault applies to. */
struct match {
	const char *cmd;	/* NULL: none */
	int sock;		/* -1: any socket */
};

struct delay {
	struct match m;
	int ms;
};

/* The one command whose answer is delayed (quiesce or resume hold the
 * agent; others are answered meanwhile). */
struct pending {
	bool active;
	unsigned serial;
	int sock_idx;
	char cmd[32];
	json_object *id, *args;
	double due;
};

static struct conn conns[MAX_FDS];
static int nconns;
static unsigned next_serial = 1;
static FILE *logfile;
static char *state_path;
static const char *refuse;
static bool refuse_once;
static int my_rank = -1;	/* --rank N: one rank of job [7,1] is registered */
static struct delay delays[MAX_DELAYS];
static int ndelays;
static struct match hang_on = { NULL, -1 }, die_on = { NULL, -1 };
static bool hung;
static struct pending pend;
static double started;

static const char *state = "running";
static bool lease_held;
static int lease_len;		/* ms */
static double lease_end;	/* wall clock */

/* The ranks the agent reports: ours with an address list (made up: the
 * coordinator only passes it on), and one with a malformed list, which
 * the coordinator must not pass on. */
static json_object *ranks_json(void)
{
	json_object *a = json_object_new_array(), *r;
	char addrs[32];

	if (my_rank < 0)
		return a;
	snprintf(addrs, sizeof(addrs), "3142574b01%02x", my_rank);
	r = json_object_new_object();
	json_object_object_add(r, "rank", json_object_new_int(my_rank));
	json_object_object_add(r, "pid", json_object_new_int(1000 + my_rank));
	json_object_object_add(r, "jobid", json_object_new_string("[7,1]"));
	json_object_object_add(r, "addrs", json_object_new_string(addrs));
	json_object_array_add(a, r);
	r = json_object_new_object();
	json_object_object_add(r, "rank", json_object_new_int(99));
	json_object_object_add(r, "pid", json_object_new_int(1099));
	json_object_object_add(r, "jobid", json_object_new_string("[7,1]"));
	json_object_object_add(r, "addrs", json_object_new_string("not hex\x1b[2J"));
	json_object_array_add(a, r);
	return a;
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void set_state(const char *s)
{
	char tmp[4200];
	FILE *f;

	state = s;
	snprintf(tmp, sizeof(tmp), "%s.tmp", state_path);
	f = fopen(tmp, "w");
	if (!f || fprintf(f, "%s\n", s) < 0 || fclose(f) || rename(tmp, state_path))
		perror("fake-agent: state file");
}

static void log_line(const char *who, const char *cmd, json_object *args)
{
	fprintf(logfile, "%.6f %s %s %s\n", now(), who, cmd,
		args ? json_object_to_json_string_ext(args, JSON_C_TO_STRING_PLAIN) : "{}");
	fflush(logfile);
}

static int listen_on(const char *path)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);

	if (fd < 0 || strlen(path) >= sizeof(a.sun_path))
		return -1;
	strcpy(a.sun_path, path);
	unlink(path);
	if (bind(fd, (struct sockaddr *)&a, sizeof(a)) || listen(fd, 4)) {
		close(fd);
		return -1;
	}
	return fd;
}

static struct conn *conn_by_serial(unsigned serial)
{
	for (int i = 0; i < nconns; i++)
		if (!conns[i].listener && conns[i].serial == serial)
			return &conns[i];
	return NULL;
}

static void send_msg(int fd, json_object *m)
{
	const char *s = json_object_to_json_string_ext(m, JSON_C_TO_STRING_PLAIN);

	/* A host that went away (EPIPE) is a fault the tests make. */
	if ((write(fd, s, strlen(s)) < 0 || write(fd, "\n", 1) < 0) && errno != EPIPE)
		perror("fake-agent: write");
}

/* To a connection that may be gone by now (a delayed answer). */
static void reply(unsigned serial, json_object *id, json_object *ret, const char *cls,
		  const char *desc)
{
	json_object *m = json_object_new_object();
	struct conn *c = conn_by_serial(serial);

	if (ret) {
		json_object_object_add(m, "return", ret);
	} else {
		json_object *e = json_object_new_object();

		json_object_object_add(e, "class", json_object_new_string(cls));
		json_object_object_add(e, "desc", json_object_new_string(desc));
		json_object_object_add(m, "error", e);
	}
	json_object_object_add(m, "id", json_object_get(id));
	if (c && !hung)
		send_msg(c->fd, m);
	json_object_put(m);
}

static bool matches(const struct match *m, const char *cmd, int sock)
{
	return m->cmd && !strcmp(m->cmd, cmd) && (m->sock < 0 || m->sock == sock);
}

/* COMMAND[@N] */
static struct match parse_match(char *s)
{
	struct match m = { s, -1 };
	char *at = strchr(s, '@');

	if (at) {
		*at = 0;
		m.sock = atoi(at + 1);
	}
	return m;
}

static json_object *lease_left(void)
{
	double left = (lease_end - now()) * 1000;

	if (!lease_held)
		return NULL;
	return json_object_new_int64(left > 0 ? (int64_t)left : 0);
}

/* lease-ms, if given, must be an int from 1 s to 1 h: 0 absent, 1 good,
 * -1 bad. */
static int lease_arg(json_object *args, int *ms)
{
	json_object *v;

	if (!args || !json_object_object_get_ex(args, "lease-ms", &v))
		return 0;
	if (!json_object_is_type(v, json_type_int) || json_object_get_int64(v) < LEASE_MIN ||
	    json_object_get_int64(v) > LEASE_MAX)
		return -1;
	*ms = (int)json_object_get_int64(v);
	return 1;
}

static void lease_start(int ms)
{
	lease_held = true;
	lease_len = ms;
	lease_end = now() + ms / 1000.0;
}

static bool busy(void)
{
	return !strcmp(state, "quiescing") || !strcmp(state, "resuming");
}

/* What quiesce and resume do once they are carried out (at once, or when
 * their delay is over). */
static json_object *finish(const char *cmd)
{
	json_object *r = json_object_new_object();

	if (!strcmp(cmd, "quiesce")) {
		set_state("quiesced");
		json_object_object_add(r, "state", json_object_new_string("quiesced"));
		json_object_object_add(r, "ranks", json_object_new_array());
	} else {
		set_state("running");
		json_object_object_add(r, "state", json_object_new_string("resumed"));
		json_object_object_add(r, "ranks", ranks_json());
	}
	return r;
}

#define ERR(c, d) do { json_object_put(r); *cls = (c); *desc = (d); return NULL; } while (0)

/* NULL with cls and desc set for an error; *later set when the answer is delayed. */
static json_object *answer(const char *cmd, json_object *args, int sock, int *later,
			   const char **cls, const char **desc)
{
	json_object *r = json_object_new_object();
	int ms = 0, has = 0;

	if (refuse && !strcmp(cmd, refuse)) {
		if (refuse_once)
			refuse = NULL;
		ERR("DeviceBusy", "refused by the test");
	}
	if (!strcmp(cmd, "hello")) {
		json_object_object_add(r, "protocol", json_object_new_int(1));
		json_object_object_add(r, "agent", json_object_new_string("fake-agent"));
	} else if (!strcmp(cmd, "quiesce") || !strcmp(cmd, "resume")) {
		bool q = !strcmp(cmd, "quiesce");

		if (busy())
			ERR("InvalidState", "a quiesce or resume is in progress");
		if (!q && strcmp(state, "quiesced"))
			ERR("InvalidState", "resume needs a quiesced agent; the agent is running");
		if (q && (has = lease_arg(args, &ms)) < 0)
			ERR("InvalidParameter", "'lease-ms' must be an integer from 1000 to 3600000");
		/* A quiesce without a lease drops one; a resume ends it. */
		lease_held = false;
		if (q && has)
			lease_start(ms);
		for (int i = 0; i < ndelays; i++)
			if (matches(&delays[i].m, cmd, sock))
				*later = delays[i].ms;
		if (*later) {
			set_state(q ? "quiescing" : "resuming");
			json_object_put(r);
			return NULL;
		}
		json_object_put(r);
		return finish(cmd);
	} else if (!strcmp(cmd, "renew")) {
		if ((has = lease_arg(args, &ms)) < 0)
			ERR("InvalidParameter", "'lease-ms' must be an integer from 1000 to 3600000");
		if (!strcmp(state, "quiescing") || !strcmp(state, "quiesced")) {
			if (has)
				lease_start(ms);
			else if (lease_held)
				lease_start(lease_len);
		}
		json_object_object_add(r, "state", json_object_new_string(state));
		json_object_object_add(r, "lease-ms-left", lease_left());
	} else if (!strcmp(cmd, "status")) {
		json_object_object_add(r, "state", json_object_new_string(state));
		json_object_object_add(r, "operation", pend.active ?
				       json_object_new_string(pend.cmd) : NULL);
		json_object_object_add(r, "ranks", json_object_new_array());
		json_object_object_add(r, "uptime-ms",
				       json_object_new_int64((int64_t)((now() - started) * 1000)));
		json_object_object_add(r, "lease-ms-left", lease_left());
	}
	return r;
}

static void handle_line(struct conn *c, const char *line)
{
	json_object *m = json_tokener_parse(line), *cmdv, *id = NULL, *args = NULL, *ret;
	const char *cls = "", *desc = "", *cmd;
	char who[16];
	int later = 0;

	if (!m || !json_object_object_get_ex(m, "execute", &cmdv)) {
		fprintf(stderr, "fake-agent: not a command: %s\n", line);
		json_object_put(m);
		return;
	}
	cmd = json_object_get_string(cmdv);
	json_object_object_get_ex(m, "id", &id);
	json_object_object_get_ex(m, "arguments", &args);
	snprintf(who, sizeof(who), "%d", c->sock_idx);
	log_line(who, cmd, args);
	if (matches(&die_on, cmd, c->sock_idx))
		_exit(3);
	if (matches(&hang_on, cmd, c->sock_idx))
		hung = true;
	if (hung) {
		json_object_put(m);
		return;
	}
	ret = answer(cmd, args, c->sock_idx, &later, &cls, &desc);
	if (later) {
		pend = (struct pending){ .active = true, .serial = c->serial,
					 .sock_idx = c->sock_idx, .id = json_object_get(id),
					 .args = json_object_get(args), .due = now() + later / 1000.0 };
		snprintf(pend.cmd, sizeof(pend.cmd), "%s", cmd);
	} else {
		reply(c->serial, id, ret, cls, desc);
	}
	json_object_put(m);
}

static void pending_done(json_object *ret, const char *cls, const char *desc)
{
	reply(pend.serial, pend.id, ret, cls, desc);
	json_object_put(pend.id);
	json_object_put(pend.args);
	pend.active = false;
}

/* Nobody renewed the lease: the job goes on by itself. */
static void lease_expired(void)
{
	json_object *ev = json_object_new_object(), *d = json_object_new_object();

	json_object_object_add(d, "state", json_object_new_string(state));
	json_object_object_add(d, "ranks", json_object_new_int(0));
	log_line("-", "lease-expired", d);
	lease_held = false;
	if (pend.active && !strcmp(pend.cmd, "quiesce"))
		pending_done(NULL, "Timeout", "the quiesce's lease ran out before every rank "
			     "had quiesced");
	set_state("running");
	json_object_object_add(ev, "event", json_object_new_string("lease-expired"));
	json_object_object_add(ev, "data", d);
	for (int i = 0; i < nconns && !hung; i++)
		if (!conns[i].listener)
			send_msg(conns[i].fd, ev);
	json_object_put(ev);
}

/* The timers: a delayed answer, the lease; -1 for none. */
static int next_timeout(void)
{
	double t = 0, n = now();

	if (pend.active && !hung)
		t = pend.due;
	if (lease_held && (!t || lease_end < t))
		t = lease_end;
	if (!t)
		return -1;
	return t <= n ? 0 : (int)((t - n) * 1000) + 1;
}

static void run_timers(void)
{
	double n = now();

	if (lease_held && n >= lease_end && (!strcmp(state, "quiesced") ||
					     !strcmp(state, "quiescing")))
		lease_expired();
	if (pend.active && !hung && n >= pend.due)
		pending_done(finish(pend.cmd), NULL, NULL);
}

static void drop(int i)
{
	close(conns[i].fd);
	conns[i] = conns[--nconns];
}

static void readable(int i)
{
	struct conn *c = &conns[i];
	ssize_t n;
	char *nl;

	if (c->listener) {
		int fd = accept(c->fd, NULL, NULL);

		if (fd >= 0 && nconns < MAX_FDS)
			conns[nconns++] = (struct conn){ .fd = fd, .sock_idx = c->sock_idx,
							 .serial = next_serial++ };
		else if (fd >= 0)
			close(fd);
		return;
	}
	n = read(c->fd, c->buf + c->len, sizeof(c->buf) - 1 - c->len);
	if (n <= 0) {
		drop(i);
		return;
	}
	c->len += (size_t)n;
	c->buf[c->len] = 0;
	while ((nl = strchr(c->buf, '\n'))) {
		*nl = 0;
		if (nl > c->buf)
			handle_line(c, c->buf);
		c->len -= (size_t)(nl + 1 - c->buf);
		memmove(c->buf, nl + 1, c->len + 1);
	}
	if (c->len == sizeof(c->buf) - 1)
		drop(i);
}

static int usage(void)
{
	fprintf(stderr, "usage: fake-agent LOG SOCKET... [--refuse[-once] COMMAND] [--rank N] "
		"[--delay COMMAND[@N]:MS]... [--hang-on COMMAND[@N]] [--die-on COMMAND[@N]]\n");
	return 2;
}

static int add_delay(char *spec)
{
	char *colon = strrchr(spec, ':');

	if (!colon || ndelays == MAX_DELAYS || atoi(colon + 1) <= 0) {
		fprintf(stderr, "fake-agent: --delay '%s': write COMMAND[@SOCKET-INDEX]:MS, "
			"e.g. quiesce@0:1500\n", spec);
		return -1;
	}
	*colon = 0;
	delays[ndelays].ms = atoi(colon + 1);
	delays[ndelays++].m = parse_match(spec);
	return 0;
}

int main(int argc, char *argv[])
{
	struct pollfd p[MAX_FDS];
	int nsock = 0;

	signal(SIGPIPE, SIG_IGN);
	if (argc < 3)
		return usage();
	logfile = fopen(argv[1], "a");
	state_path = malloc(strlen(argv[1]) + 8);
	if (!logfile || !state_path) {
		perror(argv[1]);
		return 1;
	}
	sprintf(state_path, "%s.state", argv[1]);
	started = now();
	set_state("running");
	for (int i = 2; i < argc; i++) {
		bool more = i + 1 < argc;

		if (!strcmp(argv[i], "--rank") && more) {
			my_rank = atoi(argv[++i]);
		} else if ((!strcmp(argv[i], "--refuse") || !strcmp(argv[i], "--refuse-once")) &&
			   more) {
			refuse_once = !strcmp(argv[i], "--refuse-once");
			refuse = argv[++i];
		} else if (!strcmp(argv[i], "--delay") && more) {
			if (add_delay(argv[++i]))
				return 2;
		} else if (!strcmp(argv[i], "--hang-on") && more) {
			hang_on = parse_match(argv[++i]);
		} else if (!strcmp(argv[i], "--die-on") && more) {
			die_on = parse_match(argv[++i]);
		} else if (!strncmp(argv[i], "--", 2)) {
			return usage();
		} else {
			conns[nconns].fd = listen_on(argv[i]);
			if (conns[nconns].fd < 0) {
				fprintf(stderr, "fake-agent: cannot listen on %s: %s\n", argv[i],
					strerror(errno));
				return 1;
			}
			conns[nconns].listener = true;
			conns[nconns].sock_idx = nsock++;
			nconns++;
		}
	}
	for (;;) {
		int n = nconns;

		for (int i = 0; i < n; i++)
			p[i] = (struct pollfd){ .fd = conns[i].fd, .events = POLLIN };
		if (poll(p, (nfds_t)n, next_timeout()) < 0 && errno != EINTR)
			return 1;
		run_timers();
		for (int i = n - 1; i >= 0; i--)
			if (p[i].revents)
				readable(i);
	}
}
