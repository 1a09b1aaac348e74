/* SPDX-License-Identifier: MIT */
/*
 * kawarimi-agent: the host channel.
 *
 * The host channel is normally a virtio-serial port, a character device
 * with three quirks (docs/symvirt-protocol.md, "Transport"):
 *  - with no host connected, read() returns EOF at once and poll() reports
 *    POLLHUP for ever: the agent stops polling the port and looks again
 *    after a back-off, keeping the port open so nothing the host sends
 *    later is lost;
 *  - a write with no host connected would block: the port is non-blocking
 *    and output stays queued (bounded) until the host reads;
 *  - the host connects and disconnects at any time, and lines may arrive in
 *    pieces: the framer (proto.c) reassembles them.
 * `unix:PATH` and `listen:PATH` channels exist for tests and behave like a
 * host that connects and disconnects.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "agent_priv.h"

#define BACKOFF_MIN_MS 50
#define BACKOFF_MAX_MS 1000

static void chan_close(struct agent *a)
{
	struct channel *c = &a->ch;

	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	c->paused = false;
	agent_framer_reset(c->framer);
	/* A socket peer that left will not read old replies; a virtio port
	 * keeps them (the same host may just be reconnecting). */
	if (c->kind != CHAN_DEVICE) {
		c->out.len = 0;
		c->generation++;
	}
}

static void chan_backoff(struct agent *a)
{
	struct channel *c = &a->ch;

	c->backoff_ms = c->backoff_ms ? c->backoff_ms * 2 : BACKOFF_MIN_MS;
	if (c->backoff_ms > BACKOFF_MAX_MS)
		c->backoff_ms = BACKOFF_MAX_MS;
	c->retry_at = agent_now_ms() + c->backoff_ms;
}

static int unix_addr(const char *path, struct sockaddr_un *sa)
{
	memset(sa, 0, sizeof(*sa));
	sa->sun_family = AF_UNIX;
	if (strlen(path) >= sizeof(sa->sun_path)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	memcpy(sa->sun_path, path, strlen(path) + 1);
	return 0;
}

/* Opens the device or connects the socket; on failure retries later. */
static void chan_open(struct agent *a)
{
	struct channel *c = &a->ch;
	struct sockaddr_un sa;
	int fd;

	c->retry_at = 0;
	if (c->kind == CHAN_DEVICE) {
		fd = open(c->path, O_RDWR | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
		if (fd < 0) {
			if (!c->open_warned)
				agent_log(a, LOG_INFO, "cannot open channel %s: %s (retrying)",
					  c->path, strerror(errno));
			c->open_warned = true;
			chan_backoff(a);
			return;
		}
	} else {
		fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
		if (fd < 0 || unix_addr(c->path, &sa) < 0 ||
		    connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
			if (!c->open_warned)
				agent_log(a, LOG_INFO, "cannot connect channel unix:%s: %s (retrying)",
					  c->path, strerror(errno));
			c->open_warned = true;
			if (fd >= 0)
				close(fd);
			chan_backoff(a);
			return;
		}
	}
	c->fd = fd;
	c->open_warned = false;
	agent_log(a, LOG_INFO, "channel %s open", c->path);
}

int agent_listen_unix(struct agent *a, const char *path, mode_t mode, const char *group)
{
	struct sockaddr_un sa;
	int fd;

	if (!path || unix_addr(path, &sa) < 0) {
		agent_log(a, LOG_ERR, "socket path '%s' is too long", path ? path : "");
		return -1;
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -1;
	unlink(path);	/* a stale socket of an earlier agent */
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 64) < 0) {
		agent_log(a, LOG_ERR, "cannot listen on '%s': %s", path, strerror(errno));
		close(fd);
		return -1;
	}
	if (chmod(path, mode) < 0) {
		agent_log(a, LOG_ERR, "chmod '%s': %s", path, strerror(errno));
		close(fd);
		unlink(path);
		return -1;
	}
	if (group) {
		struct group *g = getgrnam(group);

		if (!g || chown(path, (uid_t)-1, g->gr_gid) < 0) {
			agent_log(a, LOG_ERR, "cannot give '%s' to group '%s': %s; create the group or drop --group",
				  path, group, g ? strerror(errno) : "no such group");
			close(fd);
			unlink(path);
			return -1;
		}
	}
	return fd;
}

/* A reply listing many ranks with many peers each can pass the limit: each
 * rank's "paths" then becomes "path-counts" ({"verbs": N, "tcp": M}). */
static void summarize_paths(json_object *msg)
{
	json_object *ret, *ranks;

	if (!json_object_object_get_ex(msg, "return", &ret) ||
	    !json_object_object_get_ex(ret, "ranks", &ranks) ||
	    !json_object_is_type(ranks, json_type_array))
		return;
	for (size_t i = 0; i < json_object_array_length(ranks); i++) {
		json_object *r = json_object_array_get_idx(ranks, i), *paths, *counts;

		if (!json_object_object_get_ex(r, "paths", &paths) ||
		    !json_object_is_type(paths, json_type_array))
			continue;
		counts = json_object_new_object();
		for (size_t k = 0; k < json_object_array_length(paths); k++) {
			json_object *p = json_object_array_get_idx(paths, k), *kind, *n;
			const char *name;

			if (!json_object_object_get_ex(p, "path", &kind))
				continue;
			name = json_object_get_string(kind);
			n = NULL;
			json_object_object_get_ex(counts, name, &n);
			json_object_object_add(counts, name,
					       json_object_new_int64(n ? json_object_get_int64(n) + 1 : 1));
		}
		json_object_object_del(r, "paths");
		json_object_object_add(r, "path-counts", counts);
	}
}

/* Keeps a reply within SYMVIRT_MAX_REPLY; returns the message to send. */
static json_object *fit_reply(struct agent *a, json_object *msg)
{
	size_t len = strlen(json_object_to_json_string_ext(msg, JSON_C_TO_STRING_PLAIN));
	json_object *id = NULL, *err;
	struct schema_err e;

	if (len < SYMVIRT_MAX_REPLY)
		return msg;
	summarize_paths(msg);
	len = strlen(json_object_to_json_string_ext(msg, JSON_C_TO_STRING_PLAIN));
	if (len < SYMVIRT_MAX_REPLY)
		return msg;
	json_object_object_get_ex(msg, "id", &id);
	schema_err_set(&e, "GenericError", "the reply would be %zu bytes, over the limit of %d", len,
		   SYMVIRT_MAX_REPLY);
	agent_log(a, LOG_WARNING, "%s", e.desc);
	err = agent_reply_error(&e, id);	/* takes its own reference to id */
	json_object_put(msg);
	return err;
}

void agent_to_host(struct agent *a, json_object *msg)
{
	msg = fit_reply(a, msg);
	if (agent_outq_add(&a->ch.out, msg) < 0) {
		/* Nobody has read for a long time: start afresh rather than grow. */
		agent_log(a, LOG_WARNING, "host channel backlog over %u bytes dropped (no host reading)",
			  AGENT_OUT_MAX);
		a->ch.out.len = 0;
		agent_outq_add(&a->ch.out, msg);
	}
	json_object_put(msg);
}

static int host_frame(void *arg, json_object *msg, const struct schema_err *e)
{
	struct agent *a = arg;
	json_object *reply;

	if (!msg) {
		agent_log(a, LOG_WARNING, "from host: %s: %s", e->cls, e->desc);
		agent_to_host(a, agent_reply_error(e, NULL));
		return 0;
	}
	agent_log(a, LOG_DEBUG, "host: %.300s", json_object_to_json_string(msg));
	reply = agent_dispatch_command(a, NULL, msg, NULL);
	if (reply)
		agent_to_host(a, reply);
	return 0;
}

static void chan_read(struct agent *a)
{
	struct channel *c = &a->ch;
	char buf[16384];

	for (;;) {
		ssize_t n = read(c->fd, buf, sizeof(buf));

		if (n > 0) {
			c->backoff_ms = 0;
			agent_framer_feed(c->framer, buf, (size_t)n, host_frame, a);
			if (c->fd < 0)
				return;
			continue;
		}
		if (n < 0 && (errno == EINTR))
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return;
		if (n == 0 && c->kind == CHAN_DEVICE) {
			/* No host on the other end: look again later, keep the port. */
			c->paused = true;
			chan_backoff(a);
			agent_log(a, LOG_DEBUG, "channel: EOF (no host); looking again in %d ms",
				  c->backoff_ms);
			return;
		}
		agent_log(a, n == 0 ? LOG_INFO : LOG_WARNING, "channel %s: %s", c->path,
			  n == 0 ? "host disconnected" : strerror(errno));
		chan_close(a);
		if (c->kind != CHAN_LISTEN)
			chan_backoff(a);
		return;
	}
}

void agent_chan_accept(struct agent *a)
{
	int fd = accept4(a->ch.listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);

	if (fd < 0)
		return;
	/* The newest host wins, as with a chardev that a new client takes over. */
	if (a->ch.fd >= 0)
		chan_close(a);
	a->ch.fd = fd;
	agent_log(a, LOG_INFO, "host connected on listen:%s", a->ch.path);
}


/* Parses --channel: 0, or -1 (logged). */
int agent_chan_setup(struct agent *a)
{
	struct channel *c = &a->ch;
	struct sockaddr_un sa;

	c->fd = -1;
	c->listen_fd = -1;
	c->framer = agent_framer_new(SYMVIRT_MAX_MSG);
	if (!c->framer)
		return -1;
	if (!strncmp(a->o.channel, "unix:", 5)) {
		c->kind = CHAN_CONNECT;
		c->path = a->o.channel + 5;
	} else if (!strncmp(a->o.channel, "listen:", 7)) {
		c->kind = CHAN_LISTEN;
		c->path = a->o.channel + 7;
	} else {
		c->kind = CHAN_DEVICE;
		c->path = a->o.channel;
	}
	if (!*c->path || unix_addr(c->path, &sa) < 0) {
		agent_log(a, LOG_ERR, "bad --channel '%s': give a device path, unix:PATH or listen:PATH",
			  a->o.channel);
		return -1;
	}
	return 0;
}

int agent_chan_start(struct agent *a)
{
	struct channel *c = &a->ch;

	if (c->kind == CHAN_LISTEN) {
		c->listen_fd = agent_listen_unix(a, c->path, 0600, NULL);
		if (c->listen_fd < 0)
			return -1;
	} else {
		chan_open(a);
	}
	return 0;
}

void agent_chan_fini(struct agent *a)
{
	chan_close(a);
	agent_outq_clear(&a->ch.out);
	agent_framer_free(a->ch.framer);
	if (a->ch.listen_fd >= 0) {
		close(a->ch.listen_fd);
		unlink(a->ch.path);
	}
}

/* Writes what is queued; a write error closes the channel. */
void agent_chan_flush(struct agent *a)
{
	struct channel *c = &a->ch;

	if (c->fd >= 0 && !c->paused && agent_outq_flush(&c->out, c->fd) < 0) {
		agent_log(a, LOG_WARNING, "channel %s: write: %s", c->path, strerror(errno));
		chan_close(a);
		if (c->kind != CHAN_LISTEN)
			chan_backoff(a);
	}
}

void agent_chan_timers(struct agent *a)
{
	struct channel *c = &a->ch;

	if (!c->retry_at || agent_now_ms() < c->retry_at)
		return;
	c->retry_at = 0;
	if (c->paused)
		c->paused = false;	/* poll the port again */
	else if (c->fd < 0 && c->kind != CHAN_LISTEN)
		chan_open(a);
}


void agent_chan_handle(struct agent *a, short re)
{
	struct channel *c = &a->ch;

	if (re & POLLIN)
		chan_read(a);
	else if (re & (POLLHUP | POLLERR)) {
		if (c->kind == CHAN_DEVICE) {
			c->paused = true;
			chan_backoff(a);
			agent_log(a, LOG_DEBUG, "channel: POLLHUP (no host); looking again in %d ms",
				  c->backoff_ms);
		} else {
			chan_close(a);
			if (c->kind == CHAN_CONNECT)
				chan_backoff(a);
		}
		return;
	}
	agent_chan_flush(a);
}
