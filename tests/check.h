/* SPDX-License-Identifier: MIT */
/*
 * The C unit tests' check and case runner: a failed CHECK prints where and
 * what and counts; the test exits non-zero when any failed.
 */
#ifndef KAWARIMI_TESTS_CHECK_H
#define KAWARIMI_TESTS_CHECK_H

#include <stddef.h>
#include <stdio.h>

static int failures;

#define CHECK(cond, ...) do { \
	if (!(cond)) { \
		fprintf(stderr, "%s:%d: FAIL %s: ", __FILE__, __LINE__, #cond); \
		fprintf(stderr, __VA_ARGS__); \
		fputc('\n', stderr); \
		failures++; \
	} \
} while (0)

struct check_case {
	const char *name;
	void (*fn)(void);
};

/* Runs each case and says "ok" or "FAIL" with its name. */
static inline void check_run(const struct check_case *cases, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		int before = failures;

		cases[i].fn();
		printf("%s %s\n", failures == before ? "ok  " : "FAIL", cases[i].name);
		fflush(stdout);
	}
}

#endif
