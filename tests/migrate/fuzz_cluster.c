/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer harness for the cluster-file parser.  Under clang with
 * -Dfuzz=true it links libFuzzer; otherwise main() below replays the files
 * (or directories of files) named on the command line, so the test suite
 * runs the seed corpus through the parser in every build.
 */
#include <dirent.h>
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

#ifdef KWM_FUZZ_REPLAY
static int replay_file(const char *path)
{
	FILE *f = fopen(path, "rb");
	static char buf[1 << 20];
	size_t n;

	if (!f) {
		perror(path);
		return 1;
	}
	n = fread(buf, 1, sizeof(buf), f);
	fclose(f);
	LLVMFuzzerTestOneInput((const uint8_t *)buf, n);
	return 0;
}

int main(int argc, char *argv[])
{
	int files = 0, rc = 0;

	for (int i = 1; i < argc; i++) {
		DIR *d = opendir(argv[i]);
		struct dirent *e;

		if (!d) {
			rc |= replay_file(argv[i]);
			files++;
			continue;
		}
		while ((e = readdir(d))) {
			char p[4096];

			if (e->d_name[0] == '.')
				continue;
			snprintf(p, sizeof(p), "%s/%s", argv[i], e->d_name);
			rc |= replay_file(p);
			files++;
		}
		closedir(d);
	}
	printf("replayed %d inputs\n", files);
	return rc || files == 0;
}
#endif
