/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer harness for the cluster-file parser.  Under clang with
 * -Dfuzz=true it links libFuzzer; otherwise tests/fuzz_replay.c replays the
 * files (or directories of files) named on the command line, so the test
 * suite runs the seed corpus through the parser in every build.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct kwm_cluster *c = NULL;
	char err[512];

	if (kwm_cluster_parse("fuzz.yaml", (const char *)data, size, &c, err,
			      sizeof(err)) == 0) {
		/* A parsed file must be whole: every VM named, every QMP set. */
		for (size_t i = 0; i < c->nvms; i++)
			if (!c->vms[i].name || !c->vms[i].src.qmp || !c->vms[i].dst.qmp)
				abort();
		kwm_cluster_free(c);
	} else if (!strstr(err, "fuzz.yaml")) {
		abort();	/* every error names the file */
	}
	return 0;
}
