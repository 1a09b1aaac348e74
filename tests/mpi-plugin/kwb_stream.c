/*
 * Continuous, verified ping-pong between rank pairs (0-1, 2-3, ...) for the
 * quiesce/resume tests. Every CHECK_EVERY rounds all ranks agree through an
 * MPI_Allreduce (so every pair of ranks talks, and all stop or compute at
 * the same round) on rank 0's reading of the control files. Every payload,
 * round number and collective result is checked: a lost, duplicated or
 * corrupted message is an error.
 *
 *   kwb-stream DIR   (DIR/stop ends the run; DIR/compute makes each pair
 *                     compute once without any MPI call for 3 s, announced
 *                     by DIR/computing.RANK and removed when done)
 *
 * With KWB_WINDOW=1 in the environment each rank also exposes an MPI window
 * and, at every check round, puts the round number into its pair peer's
 * window (fence epoch) and checks what its peer put: one-sided MPI through
 * whatever osc component the job selects (ompi5-recipe-guest.sh: the MCA
 * recipe's, or osc ucx).
 */
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define FLAG_STOP 1
#define FLAG_COMPUTE 2
#define MAXMSG (1 << 20)
#define CHECK_EVERY 20

struct head {
	uint64_t round;
	uint32_t flags;
	uint32_t len;
};

static int rank, errors;
static const char *dir;

static unsigned char pat(uint64_t round, size_t i)
{
	return (unsigned char)(round * 2654435761u + i * 13 + (i >> 11));
}

static int exists(const char *name)
{
	char p[512];

	snprintf(p, sizeof(p), "%s/%s", dir, name);
	return access(p, F_OK) == 0;
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Long computation without MPI calls; the BTL thread must answer a
 * quiesce meanwhile. */
static void compute(void)
{
	char p[512];
	volatile double x = 0;
	double end;
	FILE *f;

	snprintf(p, sizeof(p), "%s/computing.%d", dir, rank);
	f = fopen(p, "w");
	if (f)
		fclose(f);
	end = now_s() + 3.0;
	while (now_s() < end)
		for (int i = 0; i < 100000; i++)
			x += i * 0.5;
	unlink(p);
	printf("rank %d: computed 3 s without MPI calls\n", rank);
	fflush(stdout);
}

static void fill(unsigned char *b, struct head *h, uint64_t round, uint32_t len, uint32_t flags)
{
	h->round = round;
	h->flags = flags;
	h->len = len;
	memcpy(b, h, sizeof(*h));
	for (uint32_t i = 0; i < len; i++)
		b[sizeof(*h) + i] = pat(round, i);
}

static int verify(const unsigned char *b, int got, uint64_t round, struct head *h)
{
	memcpy(h, b, sizeof(*h));
	if (h->round != round) {
		fprintf(stderr, "rank %d: expected round %llu, got %llu (lost or duplicated message)\n",
			rank, (unsigned long long)round, (unsigned long long)h->round);
		return -1;
	}
	if ((size_t)got != sizeof(*h) + h->len) {
		fprintf(stderr, "rank %d: round %llu: %d bytes, header says %u\n", rank,
			(unsigned long long)round, got, h->len);
		return -1;
	}
	for (uint32_t i = 0; i < h->len; i++)
		if (b[sizeof(*h) + i] != pat(round, i)) {
			fprintf(stderr, "rank %d: round %llu: byte %u corrupt\n", rank,
				(unsigned long long)round, i);
			return -1;
		}
	return 0;
}

int main(int argc, char **argv)
{
	static const uint32_t sizes[] = { 0, 1, 100, 4096, 65000, 70000, 300000, MAXMSG };
	unsigned char *sb, *rb;
	uint64_t round, bytes = 0;
	int computed = 0, g[2], mine[2];
	int size, peer, leader, got, total;
	const char *w = getenv("KWB_WINDOW");
	uint64_t *wbuf = NULL;
	MPI_Win win = MPI_WIN_NULL;
	MPI_Status st;
	struct head h;

	MPI_Init(&argc, &argv);
	MPI_Comm_rank(MPI_COMM_WORLD, &rank);
	MPI_Comm_size(MPI_COMM_WORLD, &size);
	if (argc != 2 || size % 2) {
		fprintf(stderr, "usage: kwb-stream DIR (even number of ranks)\n");
		MPI_Abort(MPI_COMM_WORLD, 2);
	}
	dir = argv[1];
	peer = rank ^ 1;
	leader = !(rank & 1);
	sb = malloc(MAXMSG + sizeof(h));
	rb = malloc(MAXMSG + sizeof(h));
	if (w && !strcmp(w, "1"))
		MPI_Win_allocate(sizeof(uint64_t), sizeof(uint64_t), MPI_INFO_NULL,
				 MPI_COMM_WORLD, &wbuf, &win);
	for (round = 0;; round++) {
		uint32_t len = sizes[round % (sizeof(sizes) / sizeof(sizes[0]))];
		uint32_t flags = 0;

		if (round % CHECK_EVERY == 0) {
			mine[0] = 0;
			if (rank == 0) {
				if (exists("stop"))
					mine[0] = FLAG_STOP;
				else if (!computed && exists("compute"))
					mine[0] = FLAG_COMPUTE;
			}
			mine[1] = rank + 1;
			MPI_Allreduce(mine, g, 2, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
			if (g[1] != size) {
				fprintf(stderr, "rank %d: allreduce gave %d, expected %d\n", rank, g[1],
					size);
				errors++;
			}
			flags = (uint32_t)g[0];
			if (win != MPI_WIN_NULL) {
				MPI_Win_fence(0, win);
				MPI_Put(&round, 1, MPI_UINT64_T, peer, 0, 1, MPI_UINT64_T, win);
				MPI_Win_fence(0, win);
				if (*wbuf != round) {
					fprintf(stderr, "rank %d: round %llu: window holds %llu\n", rank,
						(unsigned long long)round,
						(unsigned long long)*wbuf);
					errors++;
				}
			}
		}
		if (leader) {
			fill(sb, &h, round, len, flags);
			MPI_Send(sb, (int)(sizeof(h) + len), MPI_BYTE, peer, 1, MPI_COMM_WORLD);
			MPI_Recv(rb, MAXMSG + sizeof(h), MPI_BYTE, peer, 2, MPI_COMM_WORLD, &st);
			MPI_Get_count(&st, MPI_BYTE, &got);
			if (verify(rb, got, round, &h))
				errors++;
		} else {
			MPI_Recv(rb, MAXMSG + sizeof(h), MPI_BYTE, peer, 1, MPI_COMM_WORLD, &st);
			MPI_Get_count(&st, MPI_BYTE, &got);
			if (verify(rb, got, round, &h))
				errors++;
			if (h.flags != flags) {
				fprintf(stderr, "rank %d: round %llu: flags %u, expected %u\n", rank,
					(unsigned long long)round, h.flags, flags);
				errors++;
			}
			fill(sb, &h, round, len, flags);
			MPI_Send(sb, (int)(sizeof(h) + len), MPI_BYTE, peer, 2, MPI_COMM_WORLD);
		}
		bytes += 2 * (uint64_t)len;
		if (errors > 10 || (flags & FLAG_STOP))
			break;
		if (flags & FLAG_COMPUTE) {
			computed = 1;
			compute();
		}
	}
	printf("kwb-stream rank %d: %llu rounds, %llu bytes verified, %d errors\n", rank,
	       (unsigned long long)round + 1, (unsigned long long)bytes, errors);
	fflush(stdout);
	MPI_Allreduce(&errors, &total, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
	if (win != MPI_WIN_NULL)
		MPI_Win_free(&win);
	MPI_Finalize();
	free(sb);
	free(rb);
	return total ? 1 : 0;
}
