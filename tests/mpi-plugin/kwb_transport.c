/*
 * End-to-end data check of an MPI transport (run with --mca btl self,kawarimi
 * so nothing else can carry the bytes): every byte received is compared
 * with what was sent. Exit 0 only if every check passed.
 */
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int rank, size, errors;

static unsigned char pat(uint64_t seed, size_t i)
{
	return (unsigned char)(seed * 131 + i * 7 + (i >> 9) + (i >> 17));
}

static void fill(unsigned char *b, size_t n, uint64_t seed)
{
	for (size_t i = 0; i < n; i++)
		b[i] = pat(seed, i);
}

static void check(const unsigned char *b, size_t n, uint64_t seed, const char *what)
{
	for (size_t i = 0; i < n; i++)
		if (b[i] != pat(seed, i)) {
			fprintf(stderr, "rank %d: %s: byte %zu of %zu is 0x%02x, expected 0x%02x\n",
				rank, what, i, n, b[i], pat(seed, i));
			errors++;
			return;
		}
}

/* Ping-pong every size with every other rank in turn. */
static void pingpong(size_t max)
{
	unsigned char *s = malloc(max + 1), *r = malloc(max + 1);
	size_t sizes[64];
	int ns = 0;

	sizes[ns++] = 0;
	for (size_t n = 1; n <= max; n *= 2) {
		sizes[ns++] = n;
		if (n > 4 && n * 2 <= max)
			sizes[ns++] = n + n / 2 + 3;	/* odd sizes too */
	}
	/* Every rank walks all pairs in the same order and acts in its own:
	 * deadlock-free for any number of ranks. */
	for (int pair = 0; pair < size * size; pair++) {
		int a = pair / size, b = pair % size;
		int peer = rank == a ? b : a;

		if (a >= b || (rank != a && rank != b))
			continue;
		for (int k = 0; k < ns; k++) {
			size_t n = sizes[k];
			uint64_t seed = (uint64_t)k * 1000 + (rank < peer ? rank : peer);
			char what[64];

			snprintf(what, sizeof(what), "pingpong %zu B with %d", n, peer);
			if (rank < peer) {
				fill(s, n, seed);
				MPI_Send(s, (int)n, MPI_BYTE, peer, k, MPI_COMM_WORLD);
				memset(r, 0, n);
				MPI_Recv(r, (int)n, MPI_BYTE, peer, k, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
				check(r, n, seed + 1, what);
			} else {
				memset(r, 0, n);
				MPI_Recv(r, (int)n, MPI_BYTE, peer, k, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
				check(r, n, seed, what);
				fill(s, n, seed + 1);
				MPI_Send(s, (int)n, MPI_BYTE, peer, k, MPI_COMM_WORLD);
			}
		}
	}
	MPI_Barrier(MPI_COMM_WORLD);
	free(s);
	free(r);
}

/* Strided (vector) datatype on the send side, contiguous on the receive
 * side, and the other way round. */
static void noncontig(void)
{
	const int count = 20000, blk = 3, stride = 7;
	int *strided = malloc(sizeof(int) * count * stride);
	int *packed = malloc(sizeof(int) * count * blk);
	int to = (rank + 1) % size, from = (rank + size - 1) % size;
	MPI_Datatype vec;

	MPI_Type_vector(count, blk, stride, MPI_INT, &vec);
	MPI_Type_commit(&vec);
	for (int i = 0; i < count * stride; i++)
		strided[i] = (i % stride < blk) ? rank * 1000003 + i : -1;
	MPI_Sendrecv(strided, 1, vec, to, 77, packed, count * blk, MPI_INT, from, 77,
		     MPI_COMM_WORLD, MPI_STATUS_IGNORE);
	for (int c = 0; c < count && errors < 10; c++)
		for (int b = 0; b < blk; b++)
			if (packed[c * blk + b] != from * 1000003 + c * stride + b) {
				fprintf(stderr, "rank %d: vector send: element %d.%d wrong\n", rank, c, b);
				errors++;
			}
	for (int i = 0; i < count * blk; i++)
		packed[i] = rank * 7 + i;
	memset(strided, 0xff, sizeof(int) * count * stride);
	MPI_Sendrecv(packed, count * blk, MPI_INT, to, 78, strided, 1, vec, from, 78,
		     MPI_COMM_WORLD, MPI_STATUS_IGNORE);
	for (int c = 0; c < count && errors < 10; c++)
		for (int b = 0; b < blk; b++)
			if (strided[c * stride + b] != from * 7 + c * blk + b) {
				fprintf(stderr, "rank %d: vector recv: element %d.%d wrong\n", rank, c, b);
				errors++;
			}
	MPI_Type_free(&vec);
	free(strided);
	free(packed);
}

/* Hundreds of outstanding nonblocking operations to and from every peer,
 * mixed sizes (eager and rendezvous). */
static void many_outstanding(void)
{
	const int per_peer = 300;
	int nreq = 2 * per_peer * (size - 1), q = 0;
	MPI_Request *req = malloc(sizeof(*req) * nreq);
	unsigned char **sb = malloc(sizeof(*sb) * nreq), **rb = malloc(sizeof(*rb) * nreq);
	size_t *len = malloc(sizeof(*len) * nreq);
	int *srcs = malloc(sizeof(int) * nreq), *tags = malloc(sizeof(int) * nreq);

	for (int peer = 0; peer < size; peer++) {
		if (peer == rank)
			continue;
		for (int t = 0; t < per_peer; t++) {
			size_t n = (t % 10 == 9) ? (size_t)(200000 + t) : (size_t)(t * 37 % 5000);

			rb[q] = malloc(n + 1);
			len[q] = n;
			srcs[q] = peer;
			tags[q] = t;
			MPI_Irecv(rb[q], (int)n, MPI_BYTE, peer, t, MPI_COMM_WORLD, &req[q]);
			q++;
		}
	}
	for (int peer = 0; peer < size; peer++) {
		if (peer == rank)
			continue;
		for (int t = 0; t < per_peer; t++) {
			size_t n = (t % 10 == 9) ? (size_t)(200000 + t) : (size_t)(t * 37 % 5000);

			sb[q] = malloc(n + 1);
			len[q] = n;
			fill(sb[q], n, (uint64_t)rank * 100000 + peer * 1000 + t);
			MPI_Isend(sb[q], (int)n, MPI_BYTE, peer, t, MPI_COMM_WORLD, &req[q]);
			q++;
		}
	}
	MPI_Waitall(q, req, MPI_STATUSES_IGNORE);
	for (int i = 0; i < q; i++) {
		if (i < q / 2)
			check(rb[i], len[i], (uint64_t)srcs[i] * 100000 + rank * 1000 + tags[i],
			      "nonblocking");
		free(i < q / 2 ? rb[i] : sb[i]);
	}
	free(req);
	free(sb);
	free(rb);
	free(len);
	free(srcs);
	free(tags);
}

/* Both directions at once, large: each rank sends to the next and receives
 * from the previous simultaneously. */
static void two_way(size_t n)
{
	unsigned char *s = malloc(n), *r = malloc(n);
	int to = (rank + 1) % size, from = (rank + size - 1) % size;

	fill(s, n, 4242 + rank);
	MPI_Sendrecv(s, (int)n, MPI_BYTE, to, 5, r, (int)n, MPI_BYTE, from, 5,
		     MPI_COMM_WORLD, MPI_STATUS_IGNORE);
	check(r, n, 4242 + from, "two-way sendrecv");
	free(s);
	free(r);
}

static void collectives(void)
{
	int n = 100000;
	long *in = malloc(sizeof(long) * n), *out = malloc(sizeof(long) * n);
	int *a2a_s = malloc(sizeof(int) * 1000 * size), *a2a_r = malloc(sizeof(int) * 1000 * size);
	double *bc = malloc(sizeof(double) * n);

	for (int i = 0; i < n; i++)
		in[i] = (long)i * (rank + 1);
	MPI_Allreduce(in, out, n, MPI_LONG, MPI_SUM, MPI_COMM_WORLD);
	for (int i = 0; i < n; i++)
		if (out[i] != (long)i * size * (size + 1) / 2) {
			fprintf(stderr, "rank %d: allreduce element %d wrong\n", rank, i);
			errors++;
			break;
		}
	for (int p = 0; p < size; p++)
		for (int i = 0; i < 1000; i++)
			a2a_s[p * 1000 + i] = rank * 1000000 + p * 1000 + i;
	MPI_Alltoall(a2a_s, 1000, MPI_INT, a2a_r, 1000, MPI_INT, MPI_COMM_WORLD);
	for (int p = 0; p < size; p++)
		for (int i = 0; i < 1000; i++)
			if (a2a_r[p * 1000 + i] != p * 1000000 + rank * 1000 + i) {
				fprintf(stderr, "rank %d: alltoall from %d wrong\n", rank, p);
				errors++;
				p = size;
				break;
			}
	for (int i = 0; i < n; i++)
		bc[i] = rank == size - 1 ? i * 0.5 : -1;
	MPI_Bcast(bc, n, MPI_DOUBLE, size - 1, MPI_COMM_WORLD);
	for (int i = 0; i < n; i++)
		if (bc[i] != i * 0.5) {
			fprintf(stderr, "rank %d: bcast element %d wrong\n", rank, i);
			errors++;
			break;
		}
	free(in);
	free(out);
	free(a2a_s);
	free(a2a_r);
	free(bc);
}

int main(int argc, char **argv)
{
	size_t max = 64u << 20;
	int total;

	MPI_Init(&argc, &argv);
	MPI_Comm_rank(MPI_COMM_WORLD, &rank);
	MPI_Comm_size(MPI_COMM_WORLD, &size);
	if (argc > 1)
		max = strtoull(argv[1], NULL, 0);
	if (size < 2) {
		fprintf(stderr, "needs at least 2 ranks\n");
		MPI_Abort(MPI_COMM_WORLD, 2);
	}
	pingpong(max);
	noncontig();
	many_outstanding();
	two_way(size > 2 ? 16u << 20 : 64u << 20);
	collectives();
	MPI_Allreduce(&errors, &total, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
	if (rank == 0)
		printf("kwb-transport: %d ranks, max %zu B: %s (%d errors)\n", size, max,
		       total ? "FAILED" : "OK", total);
	MPI_Finalize();
	return total ? 1 : 0;
}
