/* SPDX-License-Identifier: MIT */
/*
 * kawarimi-pingpong: IMB-MPI1 PingPong, same method and output format
 * (sizes 0 and 2^0..2^22, repetitions min(1000, max(1, 40 MiB / size)),
 * t[usec] = half the round trip, Mbytes/sec = bytes / t with 10^6 bytes
 * per MB; 2 untimed warm-up exchanges per size), so numbers compare
 * directly with IMB's. Extras:
 *   --check         verify every payload (pattern per repetition)
 *   --continuous    one timestamped line per round (--round-ms of
 *                   ping-pongs at --size bytes), so a pause shows up;
 *                   runs for --duration seconds or --rounds rounds
 *                   (or until --stop-file F exists: the lab demo ends it so)
 *                   (neither: until killed)
 *   --max-log N     largest size 2^N (default 22)
 *   --offset N      both buffers start N bytes after a page boundary
 *                   (0..4095; default: wherever malloc puts them): the
 *                   kernel's copies are sensitive to it (docs/performance.md)
 *   --plot OUT.png  draw it with gnuplot: bandwidth against size, or
 *                   against time with --continuous (rank 0 also writes
 *                   its output to OUT.txt, the data and script beside)
 *   --report R.json mark a migration's phases and blackouts on the
 *                   --continuous picture (docs/report.md)
 *   --from SAVED    no MPI: draw --plot from a saved output
 * Ranks 0 and 1 ping-pong; further ranks wait in the barrier.
 */
#include <mpi.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <time.h>

#include "report.h"

#define OVERALL_VOL (40 * 1048576L)
#define WARMUP 2

static int rank, nprocs, check, continuous, max_log = 22;
static long csize = 4096, round_ms = 100;
static double duration;
static long offset = -1;	/* --offset; -1: malloc's */
static const char *stop_file;	/* --stop-file: end after the round it appears */
static long max_rounds;
static long errors;
static const char *plot, *report_file, *from;
static FILE *tee;		/* OUT.txt with --plot */

/* Rank 0's output, on stdout and, with --plot, in OUT.txt. */
static void say(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	if (tee) {
		va_start(ap, fmt);
		vfprintf(tee, fmt, ap);
		va_end(ap);
	}
}

static void say_flush(void)
{
	fflush(stdout);
	if (tee)
		fflush(tee);
}

static unsigned char pat(long rep, size_t i)
{
	return (unsigned char)(rep * 7 + i * 31 + (i >> 8));
}

static void fill(unsigned char *b, size_t n, long rep)
{
	for (size_t i = 0; i < n; i++)
		b[i] = pat(rep, i);
}

static void verify(const unsigned char *b, size_t n, long rep)
{
	for (size_t i = 0; i < n; i++)
		if (b[i] != pat(rep, i)) {
			if (errors < 10)
				fprintf(stderr, "kawarimi-pingpong: rank %d: %zu B message %ld: "
					"byte %zu is 0x%02x, expected 0x%02x\n", rank, n, rep, i,
					b[i], pat(rep, i));
			errors++;
			return;
		}
}

/* One ping-pong of n bytes; rep selects the check pattern. */
static void exchange(unsigned char *s, unsigned char *r, size_t n, long rep)
{
	if (rank == 0) {
		if (check)
			fill(s, n, rep);
		MPI_Send(s, (int)n, MPI_BYTE, 1, 1, MPI_COMM_WORLD);
		MPI_Recv(r, (int)n, MPI_BYTE, 1, 1, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
		if (check)
			verify(r, n, rep + 1);
	} else if (rank == 1) {
		MPI_Recv(r, (int)n, MPI_BYTE, 0, 1, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
		if (check) {
			verify(r, n, rep);
			fill(s, n, rep + 1);
		}
		MPI_Send(s, (int)n, MPI_BYTE, 0, 1, MPI_COMM_WORLD);
	}
}

static void header(void)
{
	say("#---------------------------------------------------\n");
	say("# kawarimi-pingpong (IMB-MPI1 PingPong method and format)\n");
	say("#---------------------------------------------------\n");
	say("#---------------------------------------------------\n");
	say("# Benchmarking PingPong \n");
	say("# #processes = 2 \n");
	if (nprocs > 2)
		say("# ( %d additional processes waiting in MPI_Barrier)\n", nprocs - 2);
	say("#---------------------------------------------------\n");
	say("       #bytes #repetitions      t[usec]   Mbytes/sec\n");
}

static void imb(unsigned char *s, unsigned char *r)
{
	if (rank == 0)
		header();
	for (int k = -1; k <= max_log; k++) {
		size_t n = k < 0 ? 0 : (size_t)1 << k;
		long reps = n ? OVERALL_VOL / (long)n : 1000;
		double t0, t;

		if (reps > 1000)
			reps = 1000;
		if (reps < 1)
			reps = 1;
		/* Untimed warm-up exchanges, as IMB does: the first message to
		 * a peer also pays for connection setup (both BTLs connect
		 * lazily), which is not what the table measures. */
		for (long i = 0; i < WARMUP; i++)
			exchange(s, r, n, 2 * i);
		MPI_Barrier(MPI_COMM_WORLD);
		t0 = MPI_Wtime();
		for (long i = 0; i < reps; i++)
			exchange(s, r, n, 2 * i);
		t = (MPI_Wtime() - t0) / (2.0 * reps) * 1e6;
		if (rank == 0)
			say(" %12zu %12ld %12.2f %12.2f\n", n, reps, t, n ? n / t : 0.0);
		say_flush();
	}
}

static void timestamp(char *buf, size_t len)
{
	struct timespec ts;
	struct tm tm;
	size_t n;

	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	n = strftime(buf, len, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(buf + n, len - n, ".%06ldZ", ts.tv_nsec / 1000);
}

/* Rounds of round_ms; rank 0 tells rank 1 whether to go on (broadcast),
 * so both stop together. The slowest single exchange of the round is the
 * pause a migration causes. */
static void run_continuous(unsigned char *s, unsigned char *r)
{
	double start = MPI_Wtime();
	long rep = 0;

	if (rank == 0)
		say("# continuous PingPong, %ld bytes, rounds of %ld ms\n"
		       "# timestamp                   round  exchanges  t_avg[usec]  t_max[usec]"
		       "   Mbytes/sec\n", csize, round_ms);
	for (long round = 0;; round++) {
		double r0 = MPI_Wtime(), tmax = 0, elapsed;
		long cnt = 0;
		int go;

		do {
			double e0 = MPI_Wtime(), e;

			exchange(s, r, (size_t)csize, rep);
			rep += 2;
			cnt++;
			e = (MPI_Wtime() - e0) / 2 * 1e6;
			if (e > tmax)
				tmax = e;
			go = (MPI_Wtime() - r0) * 1000 < round_ms;
			MPI_Bcast(&go, 1, MPI_INT, 0, MPI_COMM_WORLD);
		} while (go);
		elapsed = (MPI_Wtime() - r0) / (2.0 * cnt) * 1e6;
		if (rank == 0) {
			char ts[40];

			timestamp(ts, sizeof(ts));
			say("%s %7ld %10ld %12.2f %12.2f %12.2f\n", ts, round, cnt, elapsed, tmax,
			       csize / elapsed);
			say_flush();
		}
		go = !(duration > 0 && MPI_Wtime() - start >= duration) &&
		     !(max_rounds > 0 && round + 1 >= max_rounds) &&
		     !(stop_file && rank == 0 && access(stop_file, F_OK) == 0);
		MPI_Bcast(&go, 1, MPI_INT, 0, MPI_COMM_WORLD);
		if (!go)
			break;
	}
}

static void usage(void)
{
	fprintf(stderr, "usage: kawarimi-pingpong [--check] [--max-log N] [--offset N] "
		"[--continuous [--size BYTES] [--round-ms MS] [--duration S] [--rounds N]\n"
		"                         [--stop-file F]]\n"
		"                         [--plot OUT.png [--report R.json]]\n"
		"       kawarimi-pingpong --from SAVED --plot OUT.png [--report R.json]   (no MPI)\n");
}

/* --plot: the picture from OUT.txt (or --from), with --report's phases. */
static int draw(const char *saved)
{
	json_object *rep = NULL;
	char err[1024], base[4096];
	int rc = 0;

	if (report_file && !(rep = kwm_report_load(report_file, err, sizeof(err)))) {
		fprintf(stderr, "kawarimi-pingpong: --report: %s\n", err);
		return 1;
	}
	if (kwm_plot_pingpong(saved, rep, plot, err, sizeof(err))) {
		fprintf(stderr, "kawarimi-pingpong: %s\n", err);
		rc = 1;
	} else {
		kwm_plot_base(plot, base, sizeof(base));
		fprintf(stderr, "kawarimi-pingpong: wrote %s (script %s.gp, data %s-*.dat)\n",
			plot, base, base);
	}
	json_object_put(rep);
	return rc;
}

/* Options that need no MPI: checked before MPI_Init so that --from runs
 * without mpirun. Returns -1 on a bad one. */
static int plot_options(int argc, char **argv)
{
	char base[4096];

	for (int i = 1; i + 1 < argc; i++) {
		if (!strcmp(argv[i], "--plot"))
			plot = argv[++i];
		else if (!strcmp(argv[i], "--report"))
			report_file = argv[++i];
		else if (!strcmp(argv[i], "--from"))
			from = argv[++i];
	}
	if (plot && kwm_plot_base(plot, base, sizeof(base))) {
		fprintf(stderr, "kawarimi-pingpong: --plot '%s': name a .png file\n", plot);
		return -1;
	}
	if ((report_file || from) && !plot) {
		fprintf(stderr, "kawarimi-pingpong: --report and --from go with --plot OUT.png\n");
		return -1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	unsigned char *s, *r, *sbase, *rbase;
	size_t bufsize;
	long total = 0;

	if (plot_options(argc, argv)) {
		usage();
		return 2;
	}
	if (from)
		return draw(from);
	MPI_Init(&argc, &argv);
	MPI_Comm_rank(MPI_COMM_WORLD, &rank);
	MPI_Comm_size(MPI_COMM_WORLD, &nprocs);
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;

		if (!strcmp(a, "--check")) {
			check = 1;
		} else if (!strcmp(a, "--continuous")) {
			continuous = 1;
		} else if (v && !strcmp(a, "--max-log")) {
			max_log = atoi(v), i++;
		} else if (v && !strcmp(a, "--size")) {
			csize = atol(v), i++;
		} else if (v && !strcmp(a, "--round-ms")) {
			round_ms = atol(v), i++;
		} else if (v && !strcmp(a, "--duration")) {
			duration = atof(v), i++;
		} else if (v && !strcmp(a, "--rounds")) {
			max_rounds = atol(v), i++;
		} else if (v && !strcmp(a, "--stop-file")) {
			stop_file = v, i++;
		} else if (v && !strcmp(a, "--offset")) {
			offset = atol(v), i++;
		} else if (v && (!strcmp(a, "--plot") || !strcmp(a, "--report"))) {
			i++;	/* plot_options() */
		} else {
			if (rank == 0) {
				fprintf(stderr, "kawarimi-pingpong: bad argument \"%s\"\n", a);
				usage();
			}
			MPI_Finalize();
			return 2;
		}
	}
	if (nprocs < 2 || max_log < 0 || max_log > 30 || csize < 0 || csize > (1L << 30) ||
	    round_ms < 1 || offset < -1 || offset > 4095) {
		if (rank == 0) {
			fprintf(stderr, "kawarimi-pingpong: needs 2 or more ranks, --max-log 0..30, "
				"--size 0..2^30, --round-ms >= 1, --offset 0..4095\n");
			usage();
		}
		MPI_Finalize();
		return 2;
	}
	if (plot && rank == 0) {
		char base[4096], txt[4200];

		kwm_plot_base(plot, base, sizeof(base));
		snprintf(txt, sizeof(txt), "%s.txt", base);
		tee = fopen(txt, "w");
		if (!tee)
			fprintf(stderr, "kawarimi-pingpong: cannot write %s: %m; no picture\n", txt);
	}
	bufsize = continuous ? (size_t)csize : (size_t)1 << max_log;
	if (offset < 0) {
		s = sbase = malloc(bufsize + 1);
		r = rbase = malloc(bufsize + 1);
	} else {
		size_t len = (bufsize + 1 + 4096 + 4095) & ~(size_t)4095;

		sbase = aligned_alloc(4096, len);
		rbase = aligned_alloc(4096, len);
		s = sbase ? sbase + offset : NULL;
		r = rbase ? rbase + offset : NULL;
	}
	if (!s || !r) {
		fprintf(stderr, "kawarimi-pingpong: no memory for two buffers of %zu bytes\n",
			bufsize + 1);
		MPI_Abort(MPI_COMM_WORLD, 1);
	}
	memset(s, 0, bufsize + 1);
	if (continuous)
		run_continuous(s, r);
	else
		imb(s, r);
	MPI_Reduce(&errors, &total, 1, MPI_LONG, MPI_SUM, 0, MPI_COMM_WORLD);
	if (rank == 0 && check)
		say("# check: %s (%ld payload errors)\n", total ? "FAILED" : "all payloads verified",
		    total);
	free(sbase);
	free(rbase);
	MPI_Finalize();
	if (tee) {
		char base[4096], txt[4200];

		fclose(tee);
		kwm_plot_base(plot, base, sizeof(base));
		snprintf(txt, sizeof(txt), "%s.txt", base);
		if (draw(txt))
			return 1;
	}
	return total ? 1 : 0;
}
