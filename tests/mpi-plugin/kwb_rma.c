/*
 * kwb-rma: MPI one-sided communication, every byte checked. Run over
 * `--mca btl self,kawarimi` with an osc component that goes through the
 * BTL (Open MPI 4.1: osc/pt2pt over ob1; 5.0: osc/rdma, which emulates
 * put/get/atomics with active messages over a send-only BTL and answers
 * each request through the receive descriptor's endpoint).
 *
 *   kwb-rma [MAX_BYTES]
 *
 * For every size from 8 B to MAX_BYTES (default 4 MiB), times 4:
 *   - fence epoch: each rank puts a pattern into its right neighbour's
 *     window and gets its left neighbour's exposed block;
 *   - passive target: each rank locks its right neighbour exclusively,
 *     puts a second pattern, unlocks; after a barrier every window holds
 *     it;
 *   - accumulate: every rank adds its rank + 1 to every element of rank
 *     0's counter block (MPI_SUM, shared lock), fetch_and_op and
 *     compare_and_swap on one counter.
 * Rank 0 prints "kwb-rma: N ranks, max M B: OK (0 errors)" when every
 * check on every rank passed.
 */
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int rank, size;
static long errors;

static uint8_t pat(int who, int round, size_t i)
{
	return (uint8_t)(who * 31 + round * 7 + i * 13 + (i >> 8));
}

static void check(const uint8_t *buf, size_t n, int who, int round, const char *what)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (buf[i] != pat(who, round, i)) {
			if (errors < 5)
				fprintf(stderr, "kwb-rma rank %d: %s, %zu B: byte %zu is %u, expected %u\n",
					rank, what, n, i, buf[i], pat(who, round, i));
			errors++;
			return;
		}
}

static void fill(uint8_t *buf, size_t n, int who, int round)
{
	size_t i;

	for (i = 0; i < n; i++)
		buf[i] = pat(who, round, i);
}

int main(int argc, char **argv)
{
	size_t max = argc > 1 ? strtoull(argv[1], NULL, 0) : 4u << 20;
	int right, left, round = 0;
	uint8_t *win_buf, *src, *dst;
	int64_t *counters;
	MPI_Win win, cwin;
	long total;
	size_t n;
	int it;

	MPI_Init(&argc, &argv);
	MPI_Comm_rank(MPI_COMM_WORLD, &rank);
	MPI_Comm_size(MPI_COMM_WORLD, &size);
	right = (rank + 1) % size;
	left = (rank + size - 1) % size;

	/* The window: [0, max) is written by the left neighbour, [max, 2max)
	 * is this rank's exposed block that the right neighbour reads. */
	win_buf = malloc(2 * max);
	src = malloc(max);
	dst = malloc(max);
	if (!win_buf || !src || !dst) {
		fprintf(stderr, "kwb-rma: out of memory\n");
		MPI_Abort(MPI_COMM_WORLD, 2);
	}
	MPI_Win_create(win_buf, 2 * max, 1, MPI_INFO_NULL, MPI_COMM_WORLD, &win);
	MPI_Alloc_mem(64 * sizeof(int64_t), MPI_INFO_NULL, &counters);
	MPI_Win_create(counters, 64 * sizeof(int64_t), sizeof(int64_t), MPI_INFO_NULL,
		       MPI_COMM_WORLD, &cwin);

	for (n = 8; n <= max; n *= 4) {
		for (it = 0; it < 4; it++, round++) {
			/* fence: put right, get left's exposed block */
			memset(win_buf, 0, max);
			fill(win_buf + max, n, rank, round + 1000);
			fill(src, n, rank, round);
			memset(dst, 0, n);
			MPI_Win_fence(0, win);
			MPI_Put(src, (int)n, MPI_BYTE, right, 0, (int)n, MPI_BYTE, win);
			MPI_Get(dst, (int)n, MPI_BYTE, left, (MPI_Aint)max, (int)n, MPI_BYTE, win);
			MPI_Win_fence(0, win);
			check(win_buf, n, left, round, "fence put");
			check(dst, n, left, round + 1000, "fence get");
			/* osc/rdma is truly one-sided: without this barrier the
			 * left neighbour's exclusive put below can land while
			 * this rank still checks the fence epoch's data. */
			MPI_Barrier(MPI_COMM_WORLD);

			/* passive target: exclusive lock of the right neighbour */
			fill(src, n, rank, round + 2000);
			MPI_Win_lock(MPI_LOCK_EXCLUSIVE, right, 0, win);
			MPI_Put(src, (int)n, MPI_BYTE, right, 0, (int)n, MPI_BYTE, win);
			MPI_Win_unlock(right, win);
			MPI_Barrier(MPI_COMM_WORLD);
			MPI_Win_lock(MPI_LOCK_SHARED, rank, 0, win);
			check(win_buf, n, left, round + 2000, "lock put");
			MPI_Win_unlock(rank, win);
			MPI_Barrier(MPI_COMM_WORLD);
		}
	}

	/* accumulate and atomics on rank 0's counters */
	MPI_Win_lock(MPI_LOCK_EXCLUSIVE, rank, 0, cwin);
	memset(counters, 0, 64 * sizeof(int64_t));
	MPI_Win_unlock(rank, cwin);
	MPI_Barrier(MPI_COMM_WORLD);
	{
		int64_t add[64], one = 1, old = -1, expect, mine = rank + 1, got;
		int i;

		for (i = 0; i < 64; i++)
			add[i] = rank + 1;
		for (it = 0; it < 10; it++) {
			MPI_Win_lock(MPI_LOCK_SHARED, 0, 0, cwin);
			MPI_Accumulate(add, 63, MPI_INT64_T, 0, 0, 63, MPI_INT64_T, MPI_SUM, cwin);
			MPI_Fetch_and_op(&one, &old, MPI_INT64_T, 0, 63, MPI_SUM, cwin);
			MPI_Win_unlock(0, cwin);
			if (old < 0) {
				fprintf(stderr, "kwb-rma rank %d: fetch_and_op returned %lld\n", rank,
					(long long)old);
				errors++;
			}
		}
		MPI_Barrier(MPI_COMM_WORLD);
		if (rank == 0) {
			int64_t want = 10LL * size * (size + 1) / 2;

			MPI_Win_lock(MPI_LOCK_EXCLUSIVE, 0, 0, cwin);
			for (i = 0; i < 63; i++)
				if (counters[i] != want) {
					if (errors < 5)
						fprintf(stderr, "kwb-rma: counter %d is %lld, expected %lld\n",
							i, (long long)counters[i], (long long)want);
					errors++;
				}
			if (counters[63] != 10LL * size) {
				fprintf(stderr, "kwb-rma: fetch_and_op counter is %lld, expected %lld\n",
					(long long)counters[63], 10LL * size);
				errors++;
			}
			counters[62] = 0;
			MPI_Win_unlock(0, cwin);
		}
		MPI_Barrier(MPI_COMM_WORLD);
		/* compare_and_swap: ranks take turns replacing their predecessor's
		 * value; each must see exactly rank (what rank - 1 wrote). */
		for (i = 0; i < size; i++) {
			if (i == rank) {
				expect = rank;
				MPI_Win_lock(MPI_LOCK_EXCLUSIVE, 0, 0, cwin);
				MPI_Compare_and_swap(&mine, &expect, &got, MPI_INT64_T, 0, 62, cwin);
				MPI_Win_unlock(0, cwin);
				if (got != rank) {
					fprintf(stderr, "kwb-rma rank %d: compare_and_swap saw %lld, expected %d\n",
						rank, (long long)got, rank);
					errors++;
				}
			}
			MPI_Barrier(MPI_COMM_WORLD);
		}
	}

	MPI_Win_free(&cwin);
	MPI_Win_free(&win);
	MPI_Free_mem(counters);
	MPI_Allreduce(&errors, &total, 1, MPI_LONG, MPI_SUM, MPI_COMM_WORLD);
	if (rank == 0)
		printf("kwb-rma: %d ranks, max %zu B: %s (%ld errors)\n", size, max,
		       total ? "FAILED" : "OK", total);
	free(win_buf);
	free(src);
	free(dst);
	MPI_Finalize();
	return total ? 1 : 0;
}
