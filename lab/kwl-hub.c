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
 * self-announce after switchover) makes it known.  A peer that cannot take
 * a frame now (a paused VM) misses it, as on a real hub; a peer whose
 * socket is gone (QEMU quit) is forgotten.
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

/* Returns the index of the sender, adding it when new (-1: unnamed or full). */
static int learn(const struct sockaddr_un *from, socklen_t len)
{
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
	peers[npeers].addr = *from;
	peers[npeers].len = len;
	return npeers++;
}

static void forget(int i)
{
	peers[i] = peers[--npeers];
}

static void repeat(int fd, const char *frame, size_t n, int from)
{
	for (int i = 0; i < npeers; i++) {
		if (i == from)
			continue;
		if (sendto(fd, frame, n, MSG_DONTWAIT,
			   (struct sockaddr *)&peers[i].addr, peers[i].len) >= 0)
			continue;
		/* Gone for good: QEMU quit and its socket went with it. */
		if (errno == ECONNREFUSED || errno == ENOENT) {
			if (from == npeers - 1)
				from = i; /* forget() moves the last entry to i */
			forget(i);
			i--;
		}
		/* EAGAIN (a paused VM's queue is full): the frame is lost. */
	}
}

int main(int argc, char *argv[])
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
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
	signal(SIGTERM, on_signal);
	signal(SIGINT, on_signal);
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
		repeat(fd, frame, (size_t)n, learn(&from, len));
	}
	unlink(argv[1]);
	return 0;
}
