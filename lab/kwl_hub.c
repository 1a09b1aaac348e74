/* SPDX-License-Identifier: MIT */
/*
 * kwl-hub SOCKET: an Ethernet hub for QEMU's `-netdev dgram` over unix
 * datagram sockets (test equipment for the lab).
 *
 * Every QEMU binds its own datagram socket and sends each frame to SOCKET;
 * the hub learns each sender's address and repeats every frame to every
 * other sender it knows.  Unix socket paths cross network namespaces, so
 * node VMs at both "sites" (each site a namespace) share this L2, and a VM
 * keeps its IP after migration: the destination QEMU's first frame (QEMU's
 * self-announce after switchover) makes it known.
 *
 * One receiver must never stall the others.  A unix datagram that its
 * receiver has not read yet stays charged to the *sending* socket, so a
 * hub sending everything from one socket is stopped by one paused QEMU
 * (a migration source sitting in postmigrate stops reading its netdev):
 * once that peer's unread frames fill the shared send buffer, every send
 * fails with EAGAIN, to the running VMs too.  So the hub sends to each
 * peer from a socket of that peer's own, connected to it: a peer that does
 * not read fills only its own buffer and loses only its own frames, as on
 * a real switch port.  A peer whose socket is gone (QEMU quit, or a new
 * QEMU bound the same path) is forgotten and learned again from its next
 * frame.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define MAX_PEERS 64
#define MAX_FRAME 65536

struct peer {
	struct sockaddr_un addr;
	socklen_t len;
	int fd;			/* connected to addr; carries only its frames */
	unsigned long dropped;	/* frames lost because it did not read */
};

static struct peer peers[MAX_PEERS];
static int npeers;
static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
	(void)sig;
	stop = 1;
}

static int same_addr(const struct sockaddr_un *a, socklen_t alen,
		     const struct sockaddr_un *b, socklen_t blen)
{
	return alen == blen && !memcmp(a, b, alen);
}

static int peer_socket(const struct sockaddr_un *to, socklen_t len)
{
	int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);

	if (fd < 0)
		return -1;
	if (connect(fd, (const struct sockaddr *)to, len) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

/* Returns the index of the sender, adding it when new (-1: unnamed, full,
 * or its socket cannot be reached). */
static int learn(const struct sockaddr_un *from, socklen_t len)
{
	int fd;

	if (len <= sizeof(sa_family_t))
		return -1; /* an unbound sender cannot be answered */
	for (int i = 0; i < npeers; i++)
		if (same_addr(&peers[i].addr, peers[i].len, from, len))
			return i;
	if (npeers == MAX_PEERS) {
		fprintf(stderr, "kwl-hub: more than %d peers; ignoring '%s'\n",
			MAX_PEERS, from->sun_path);
		return -1;
	}
	fd = peer_socket(from, len);
	if (fd < 0) {
		fprintf(stderr, "kwl-hub: cannot reach '%s': %s\n", from->sun_path,
			strerror(errno));
		return -1;
	}
	peers[npeers] = (struct peer){ .addr = *from, .len = len, .fd = fd };
	return npeers++;
}

static void forget(int i)
{
	if (peers[i].dropped)
		fprintf(stderr, "kwl-hub: '%s' gone after %lu frame(s) it did not read\n",
			peers[i].addr.sun_path, peers[i].dropped);
	close(peers[i].fd);
	peers[i] = peers[--npeers];
}

static void repeat(const char *frame, size_t n, int from)
{
	for (int i = 0; i < npeers; i++) {
		if (i == from)
			continue;
		if (send(peers[i].fd, frame, n, MSG_DONTWAIT) >= 0)
			continue;
		if (errno == EAGAIN || errno == ENOBUFS) {
			/* This peer does not read (paused VM): its frame is
			 * lost, nobody else's. */
			peers[i].dropped++;
			continue;
		}
		/* Gone for good: QEMU quit and its socket went with it
		 * (ECONNREFUSED), or the path was bound anew. */
		if (from == npeers - 1)
			from = i; /* forget() moves the last entry to i */
		forget(i);
		i--;
	}
}

int main(int argc, char *argv[])
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	struct sigaction sa = { .sa_handler = on_signal };
	static char frame[MAX_FRAME];
	int fd;

	if (argc != 2) {
		fprintf(stderr, "usage: %s SOCKET-PATH\n", argv[0]);
		return 2;
	}
	if (strlen(argv[1]) >= sizeof(addr.sun_path)) {
		fprintf(stderr, "kwl-hub: socket path '%s' is longer than %zu bytes; use a shorter state dir\n",
			argv[1], sizeof(addr.sun_path) - 1);
		return 2;
	}
	strcpy(addr.sun_path, argv[1]);
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || bind(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
		fprintf(stderr, "kwl-hub: cannot bind '%s': %s\n", argv[1], strerror(errno));
		return 1;
	}
	/* No SA_RESTART: a signal must end the blocking recvfrom(). */
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	while (!stop) {
		struct sockaddr_un from;
		socklen_t len = sizeof(from);
		ssize_t n = recvfrom(fd, frame, sizeof(frame), 0,
				     (struct sockaddr *)&from, &len);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			fprintf(stderr, "kwl-hub: recvfrom: %s\n", strerror(errno));
			break;
		}
		repeat(frame, (size_t)n, learn(&from, len));
	}
	while (npeers)
		forget(npeers - 1);
	unlink(argv[1]);
	return 0;
}
