/* SPDX-License-Identifier: MIT */
/*
 * A stand-in for kawarimi-agent behind a QEMU chardev, for the coordinator
 * tests that have no guest OS: listens on the given unix sockets (a VM's
 * source and destination ends of the symvirt channel), answers the
 * coordinator's commands as docs/symvirt-protocol.md says, and logs each
 * command with the wall-clock time so a test can check the barriers.
 *
 *   fake-agent LOG SOCKET... [--refuse COMMAND | --refuse-once COMMAND]
 *
 * Log lines: "TIME SOCKET-INDEX COMMAND ARGS-JSON".  It keeps the quiesced
 * state across its sockets like the one agent in the guest would, and
 * answers `resume` while running with InvalidState, as the agent does.
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

struct conn {
	int fd, sock_idx;
	bool listener;
	char buf[65536];
	size_t len;
};

static struct conn conns[MAX_FDS];
static int nconns;
static FILE *logfile;
static const char *refuse;
static bool refuse_once;
static bool quiesced;
static int my_rank = -1;	/* --rank N: one rank of job [7,1] is registered */

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

static void reply(int fd, json_object *id, json_object *ret, const char *cls, const char *desc)
{
	json_object *m = json_object_new_object();
	const char *s;

	if (ret) {
		json_object_object_add(m, "return", ret);
	} else {
		json_object *e = json_object_new_object();

		json_object_object_add(e, "class", json_object_new_string(cls));
		json_object_object_add(e, "desc", json_object_new_string(desc));
		json_object_object_add(m, "error", e);
	}
	json_object_object_add(m, "id", json_object_get(id));
	s = json_object_to_json_string_ext(m, JSON_C_TO_STRING_PLAIN);
	if (write(fd, s, strlen(s)) < 0 || write(fd, "\n", 1) < 0)
		perror("fake-agent: write");
	json_object_put(m);
}

static json_object *answer(const char *cmd, const char **cls, const char **desc)
{
	json_object *r = json_object_new_object();

	if (refuse && !strcmp(cmd, refuse)) {
		if (refuse_once)
			refuse = NULL;
		json_object_put(r);
		*cls = "DeviceBusy";
		*desc = "refused by the test";
		return NULL;
	}
	if (!strcmp(cmd, "hello")) {
		json_object_object_add(r, "protocol", json_object_new_int(1));
		json_object_object_add(r, "agent", json_object_new_string("fake-agent"));
	} else if (!strcmp(cmd, "quiesce")) {
		quiesced = true;
		json_object_object_add(r, "state", json_object_new_string("quiesced"));
		json_object_object_add(r, "ranks", json_object_new_array());
	} else if (!strcmp(cmd, "resume")) {
		if (!quiesced) {
			json_object_put(r);
			*cls = "InvalidState";
			*desc = "resume needs a quiesced agent; the agent is running";
			return NULL;
		}
		quiesced = false;
		json_object_object_add(r, "state", json_object_new_string("resumed"));
		json_object_object_add(r, "ranks", ranks_json());
	} else if (!strcmp(cmd, "status")) {
		json_object_object_add(r, "state",
				       json_object_new_string(quiesced ? "quiesced" : "running"));
	}
	return r;
}

static void handle_line(struct conn *c, const char *line)
{
	json_object *m = json_tokener_parse(line), *cmd, *id = NULL, *args = NULL, *ret;
	const char *cls = "", *desc = "";

	if (!m || !json_object_object_get_ex(m, "execute", &cmd)) {
		fprintf(stderr, "fake-agent: not a command: %s\n", line);
		json_object_put(m);
		return;
	}
	json_object_object_get_ex(m, "id", &id);
	json_object_object_get_ex(m, "arguments", &args);
	fprintf(logfile, "%.6f %d %s %s\n", now(), c->sock_idx, json_object_get_string(cmd),
		args ? json_object_to_json_string_ext(args, JSON_C_TO_STRING_PLAIN) : "{}");
	fflush(logfile);
	ret = answer(json_object_get_string(cmd), &cls, &desc);
	reply(c->fd, id, ret, cls, desc);
	json_object_put(m);
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
			conns[nconns++] = (struct conn){ .fd = fd, .sock_idx = c->sock_idx };
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

int main(int argc, char *argv[])
{
	struct pollfd p[MAX_FDS];

	signal(SIGPIPE, SIG_IGN);
	if (argc < 3) {
		fprintf(stderr, "usage: fake-agent LOG SOCKET... [--refuse[-once] COMMAND] [--rank N]\n");
		return 2;
	}
	logfile = fopen(argv[1], "a");
	if (!logfile) {
		perror(argv[1]);
		return 1;
	}
	for (int i = 2; i < argc; i++) {
		if (!strcmp(argv[i], "--rank") && i + 1 < argc) {
			my_rank = atoi(argv[++i]);
			continue;
		}
		if ((!strcmp(argv[i], "--refuse") || !strcmp(argv[i], "--refuse-once")) &&
		    i + 1 < argc) {
			refuse_once = !strcmp(argv[i], "--refuse-once");
			refuse = argv[++i];
			continue;
		}
		conns[nconns].fd = listen_on(argv[i]);
		if (conns[nconns].fd < 0) {
			fprintf(stderr, "fake-agent: cannot listen on %s: %s\n", argv[i], strerror(errno));
			return 1;
		}
		conns[nconns].listener = true;
		conns[nconns].sock_idx = i - 2;
		nconns++;
	}
	for (;;) {
		int n = nconns;

		for (int i = 0; i < n; i++)
			p[i] = (struct pollfd){ .fd = conns[i].fd, .events = POLLIN };
		if (poll(p, (nfds_t)n, -1) < 0 && errno != EINTR)
			return 1;
		for (int i = n - 1; i >= 0; i--)
			if (p[i].revents)
				readable(i);
	}
}
