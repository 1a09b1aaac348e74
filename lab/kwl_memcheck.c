/* SPDX-License-Identifier: MIT */
/*
 * kwl-memcheck: detects guest memory that a live migration got wrong
 * (test equipment for the lab).
 *
 *   kwl-memcheck [--mb N] [--seconds S] [--stop-file PATH]
 *
 * Sweeps over N MiB (default 64) again and again; in sweep k every page
 * must still hold k-1 (what the previous sweep wrote) before it gets k.  A
 * write lost by a migration (the destination got an older copy of a page)
 * shows up as a page holding k-2 or older.  Prints one line at the end:
 *
 *   KWL_MEMCHECK OK|FAIL sweeps=N pages=N mismatches=N [first: page P had X, expected Y]
 *
 * Exit 0 only with OK.
 */
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
	(void)sig;
	stop = 1;
}

int main(int argc, char *argv[])
{
	long mb = 64, mismatches = 0, first_page = -1;
	uint64_t sweep, first_had = 0, first_want = 0;
	double seconds = 60;
	const char *stop_file = NULL;
	size_t pages, bytes;
	time_t start = time(NULL);
	unsigned char *mem;

	for (int i = 1; i + 1 < argc; i += 2) {
		if (!strcmp(argv[i], "--mb"))
			mb = atol(argv[i + 1]);
		else if (!strcmp(argv[i], "--seconds"))
			seconds = atof(argv[i + 1]);
		else if (!strcmp(argv[i], "--stop-file"))
			stop_file = argv[i + 1];
		else
			mb = 0;
	}
	if (mb <= 0 || argc % 2 == 0) {
		fprintf(stderr, "usage: kwl-memcheck [--mb N] [--seconds S] [--stop-file PATH]\n");
		return 2;
	}
	bytes = (size_t)mb << 20;
	pages = bytes / PAGE;
	mem = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (mem == MAP_FAILED) {
		perror("kwl-memcheck: mmap");
		return 1;
	}
	signal(SIGTERM, on_signal);
	signal(SIGINT, on_signal);
	for (sweep = 1; !stop; sweep++) {
		for (size_t p = 0; p < pages; p++) {
			uint64_t *w = (uint64_t *)(mem + p * PAGE);

			if (*w != sweep - 1) {
				if (first_page < 0) {
					first_page = (long)p;
					first_had = *w;
					first_want = sweep - 1;
				}
				mismatches++;
			}
			*w = sweep;
		}
		if (difftime(time(NULL), start) >= seconds ||
		    (stop_file && access(stop_file, F_OK) == 0))
			break;
	}
	printf("KWL_MEMCHECK %s sweeps=%llu pages=%zu mismatches=%ld", mismatches ? "FAIL" : "OK",
	       (unsigned long long)sweep, pages, mismatches);
	if (first_page >= 0)
		printf(" first: page %ld had %llu, expected %llu", first_page,
		       (unsigned long long)first_had, (unsigned long long)first_want);
	printf("\n");
	return mismatches ? 1 : 0;
}
