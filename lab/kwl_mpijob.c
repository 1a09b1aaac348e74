/* SPDX-License-Identifier: MIT */
/*
 * kwl-mpijob: the lab's self-checking MPI job (test equipment).
 *
 *   mpirun ... kwl-mpijob [--seconds S] [--stop-file PATH] [--data DIR]
 *                         [--msg-kb N] [--write-kb N] [--interval-ms N]
 *
 * Every iteration each rank sends a message to the next rank in a ring and
 * receives one from the previous, both filled with a pattern derived from
 * (iteration, sender), and checks what it got; it also appends a block
 * with its own pattern to DIR/kwl-mpijob.RANK on the node's disk, so a
 * migration has overlay data to move.  It runs until S seconds passed or
 * PATH exists (rank 0 decides; everyone learns it in the same iteration),
 * then reads its file back and checks every block.  Rank 0 prints one line:
 *
 *   KWL_MPIJOB OK|FAIL ranks=N iterations=N msg_errors=N disk_errors=N
 *              disk_bytes=N max_gap_ms=N
 *
 * max_gap_ms is the longest time rank 0 spent in one iteration: the pause
 * the application saw (a migration's quiesce shows up there).  Exit 0 only
 * with OK.
 */
#include <errno.h>
#include <fcntl.h>
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

struct opts {
	double seconds;
	const char *stop_file;
	const char *data_dir;
	size_t msg_bytes, write_bytes;
	long interval_ms;
};

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The pattern: a 64-bit word per position, from a seed, cheap to check. */
static uint64_t word(uint64_t seed, size_t i)
{
	uint64_t x = seed * 0x9e3779b97f4a7c15ull + i;

	x ^= x >> 31;
	x *= 0xbf58476d1ce4e5b9ull;
	return x ^ (x >> 29);
}

static void fill(uint64_t *buf, size_t words, uint64_t seed)
{
	for (size_t i = 0; i < words; i++)
		buf[i] = word(seed, i);
}

static int check(const uint64_t *buf, size_t words, uint64_t seed)
{
	for (size_t i = 0; i < words; i++)
		if (buf[i] != word(seed, i))
			return 1;
	return 0;
}

static uint64_t seed_of(long iter, int rank, int disk)
{
	return ((uint64_t)iter << 20) ^ ((uint64_t)rank << 1) ^ (uint64_t)disk;
}

static int parse(int argc, char *argv[], struct opts *o)
{
	*o = (struct opts){ .seconds = 30, .data_dir = "/data", .msg_bytes = 64 << 10,
			    .write_bytes = 64 << 10, .interval_ms = 20 };
	for (int i = 1; i < argc; i++) {
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;

		if (!v)
			return -1;
		if (!strcmp(argv[i], "--seconds"))
			o->seconds = atof(v);
		else if (!strcmp(argv[i], "--stop-file"))
			o->stop_file = v;
		else if (!strcmp(argv[i], "--data"))
			o->data_dir = v;
		else if (!strcmp(argv[i], "--msg-kb"))
			o->msg_bytes = (size_t)atol(v) << 10;
		else if (!strcmp(argv[i], "--write-kb"))
			o->write_bytes = (size_t)atol(v) << 10;
		else if (!strcmp(argv[i], "--interval-ms"))
			o->interval_ms = atol(v);
		else
			return -1;
		i++;
	}
	return o->msg_bytes && o->write_bytes ? 0 : -1;
}

static int write_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;

	while (len) {
		ssize_t n = write(fd, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Reads the file back: one block per iteration, each with its pattern. */
static long verify_file(const char *path, long iters, size_t bytes, int rank, uint64_t *buf)
{
	long errors = 0;
	int fd = open(path, O_RDONLY);

	if (fd < 0)
		return iters ? iters : 1;
	for (long it = 0; it < iters; it++) {
		if (read(fd, buf, bytes) != (ssize_t)bytes ||
		    check(buf, bytes / 8, seed_of(it, rank, 1)))
			errors++;
	}
	close(fd);
	return errors;
}

int main(int argc, char *argv[])
{
	struct opts o;
	int rank, size, fd, stop = 0;
	long iters = 0, msg_err = 0, disk_err = 0, tot[3], loc[3];
	double start, last, max_gap = 0;
	uint64_t *sbuf, *rbuf, *wbuf;
	char path[512];

	MPI_Init(&argc, &argv);
	MPI_Comm_rank(MPI_COMM_WORLD, &rank);
	MPI_Comm_size(MPI_COMM_WORLD, &size);
	if (parse(argc, argv, &o)) {
		if (!rank)
			fprintf(stderr, "usage: kwl-mpijob [--seconds S] [--stop-file PATH] [--data DIR] "
				"[--msg-kb N] [--write-kb N] [--interval-ms N]\n");
		MPI_Finalize();
		return 2;
	}
	o.msg_bytes &= ~(size_t)7;
	o.write_bytes &= ~(size_t)7;
	sbuf = malloc(o.msg_bytes);
	rbuf = malloc(o.msg_bytes > o.write_bytes ? o.msg_bytes : o.write_bytes);
	wbuf = malloc(o.write_bytes);
	snprintf(path, sizeof(path), "%s/kwl-mpijob.%d", o.data_dir, rank);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (!sbuf || !rbuf || !wbuf || fd < 0) {
		fprintf(stderr, "kwl-mpijob: rank %d: cannot open '%s': %s\n", rank, path, strerror(errno));
		MPI_Abort(MPI_COMM_WORLD, 1);
	}
	start = last = now_s();
	while (!stop) {
		int next = (rank + 1) % size, prev = (rank + size - 1) % size;
		double t;

		fill(sbuf, o.msg_bytes / 8, seed_of(iters, rank, 0));
		MPI_Sendrecv(sbuf, (int)o.msg_bytes, MPI_BYTE, next, 1,
			     rbuf, (int)o.msg_bytes, MPI_BYTE, prev, 1,
			     MPI_COMM_WORLD, MPI_STATUS_IGNORE);
		msg_err += check(rbuf, o.msg_bytes / 8, seed_of(iters, prev, 0));
		fill(wbuf, o.write_bytes / 8, seed_of(iters, rank, 1));
		if (write_all(fd, wbuf, o.write_bytes))
			disk_err++;
		if (iters % 50 == 49)
			fdatasync(fd);
		iters++;
		if (!rank) {
			t = now_s();
			if (t - last > max_gap)
				max_gap = t - last;
			last = t;
			stop = t - start >= o.seconds ||
			       (o.stop_file && access(o.stop_file, F_OK) == 0);
		}
		MPI_Bcast(&stop, 1, MPI_INT, 0, MPI_COMM_WORLD);
		if (o.interval_ms > 0)
			usleep((useconds_t)o.interval_ms * 1000);
	}
	fsync(fd);
	close(fd);
	disk_err += verify_file(path, iters, o.write_bytes, rank, rbuf);
	loc[0] = msg_err;
	loc[1] = disk_err;
	loc[2] = iters;
	MPI_Reduce(loc, tot, 3, MPI_LONG, MPI_SUM, 0, MPI_COMM_WORLD);
	if (!rank) {
		int ok = tot[0] == 0 && tot[1] == 0 && tot[2] == iters * size && iters > 0;

		printf("KWL_MPIJOB %s ranks=%d iterations=%ld msg_errors=%ld disk_errors=%ld "
		       "disk_bytes=%ld max_gap_ms=%.0f\n", ok ? "OK" : "FAIL", size, iters,
		       tot[0], tot[1], (long)(iters * size * (long)o.write_bytes), max_gap * 1000);
		fflush(stdout);
		stop = ok ? 0 : 1;
	}
	MPI_Bcast(&stop, 1, MPI_INT, 0, MPI_COMM_WORLD);
	free(sbuf);
	free(rbuf);
	free(wbuf);
	MPI_Finalize();
	return stop;
}
