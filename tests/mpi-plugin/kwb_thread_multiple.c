/* MPI_THREAD_MULTIPLE job: the kawarimi BTL declines it, the job must
 * still run (over tcp here) and compute the right sum. */
#include <mpi.h>
#include <stdio.h>

int main(int argc, char **argv)
{
	int provided, rank, size, sum = 0;

	MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
	MPI_Comm_rank(MPI_COMM_WORLD, &rank);
	MPI_Comm_size(MPI_COMM_WORLD, &size);
	MPI_Allreduce(&rank, &sum, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
	if (rank == 0)
		printf("kwb-thread-multiple: provided %s, sum %s\n",
		       provided == MPI_THREAD_MULTIPLE ? "MULTIPLE" : "less",
		       sum == size * (size - 1) / 2 ? "OK" : "WRONG");
	MPI_Finalize();
	return sum == size * (size - 1) / 2 ? 0 : 1;
}
