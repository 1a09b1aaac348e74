/* SPDX-License-Identifier: MIT */
/*
 * kws-ranks DIR: MPI ranks exchanging verified messages around a ring until
 * DIR/stop exists, for the agent-with-real-ranks test.  Rank 0 decides when
 * to stop and broadcasts it every round, so every rank ends after the same
 * round.  A lost, duplicated or corrupted message counts as
 * an error; rank 0 prints "kws-ranks: N ranks, R rounds, E errors".
 */
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define LEN 4096

struct msg {
	uint64_t round;
	uint32_t from;
	unsigned char data[LEN];
};

static unsigned char pat(uint64_t round, uint32_t from, size_t i)
{
	return (unsigned char)(round * 31 + from * 7 + i);
}

int main(int argc, char *argv[])
{
	static struct msg out, in;
	char stopfile[512];
	int rank, size;
	uint64_t errors = 0, round = 0, total = 0;
	uint32_t stop = 0;

	MPI_Init(&argc, &argv);
	MPI_Comm_rank(MPI_COMM_WORLD, &rank);
	MPI_Comm_size(MPI_COMM_WORLD, &size);
	snprintf(stopfile, sizeof(stopfile), "%s/stop", argc > 1 ? argv[1] : ".");
	while (!stop) {
		int right = (rank + 1) % size, left = (rank + size - 1) % size;

		out.round = round;
		out.from = (uint32_t)rank;
		for (size_t i = 0; i < LEN; i++)
			out.data[i] = pat(round, (uint32_t)rank, i);
		MPI_Sendrecv(&out, sizeof(out), MPI_BYTE, right, 7, &in, sizeof(in), MPI_BYTE, left, 7,
			     MPI_COMM_WORLD, MPI_STATUS_IGNORE);
		if (in.round != round || in.from != (uint32_t)left)
			errors++;
		for (size_t i = 0; i < LEN; i++)
			if (in.data[i] != pat(round, (uint32_t)left, i)) {
				errors++;
				break;
			}
		if (rank == 0)
			stop = access(stopfile, F_OK) == 0;
		MPI_Bcast(&stop, 1, MPI_UINT32_T, 0, MPI_COMM_WORLD);
		round++;
		usleep(2000);
	}
	MPI_Reduce(&errors, &total, 1, MPI_UINT64_T, MPI_SUM, 0, MPI_COMM_WORLD);
	if (rank == 0)
		printf("kws-ranks: %d ranks, %llu rounds, %llu errors\n", size,
		       (unsigned long long)round, (unsigned long long)total);
	MPI_Finalize();
	return total ? 1 : 0;
}
