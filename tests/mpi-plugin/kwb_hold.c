/*
 * Keeps checked traffic going between rank 0 and every other rank until
 * the file named by argv[1] exists (rank 0 looks, everyone follows), so a
 * test can poke the ranks from outside while the job runs. Prints
 * "kwb-hold: N rounds: OK" from rank 0 when every byte arrived intact.
 */
#include <mpi.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	int rank, size, stop = 0, errors = 0;
	long rounds = 0;
	unsigned char buf[4096];

	MPI_Init(&argc, &argv);
	MPI_Comm_rank(MPI_COMM_WORLD, &rank);
	MPI_Comm_size(MPI_COMM_WORLD, &size);
	if (argc < 2) {
		if (!rank)
			fprintf(stderr, "usage: kwb-hold STOPFILE\n");
		MPI_Abort(MPI_COMM_WORLD, 2);
	}
	while (!stop) {
		for (int peer = 1; peer < size; peer++) {
			unsigned char fill = (unsigned char)(rounds * 31 + peer);

			if (rank == 0) {
				memset(buf, fill, sizeof(buf));
				MPI_Send(buf, sizeof(buf), MPI_BYTE, peer, 0, MPI_COMM_WORLD);
				MPI_Recv(buf, sizeof(buf), MPI_BYTE, peer, 0, MPI_COMM_WORLD,
					 MPI_STATUS_IGNORE);
			} else if (rank == peer) {
				MPI_Recv(buf, sizeof(buf), MPI_BYTE, 0, 0, MPI_COMM_WORLD,
					 MPI_STATUS_IGNORE);
				MPI_Send(buf, sizeof(buf), MPI_BYTE, 0, 0, MPI_COMM_WORLD);
			} else {
				continue;
			}
			for (size_t i = 0; i < sizeof(buf); i++)
				if (buf[i] != fill) {
					errors++;
					break;
				}
		}
		rounds++;
		if (rank == 0)
			stop = access(argv[1], F_OK) == 0;
		MPI_Bcast(&stop, 1, MPI_INT, 0, MPI_COMM_WORLD);
		usleep(2000);
	}
	MPI_Allreduce(MPI_IN_PLACE, &errors, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
	if (rank == 0)
		printf("kwb-hold: %ld rounds: %s (%d errors)\n", rounds, errors ? "FAILED" : "OK",
		       errors);
	MPI_Finalize();
	return errors != 0;
}
