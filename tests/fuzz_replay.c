/*
 * Replays a libFuzzer harness's corpus without libFuzzer: linked with a
 * harness (its LLVMFuzzerTestOneInput) when the build is not -Dfuzz=true,
 * so gcc builds run every seed input as a plain test, under ASan/UBSan in
 * the sanitizer run.
 *
 *   <harness> FILE|DIR...   (a DIR: every file in it not starting with '.')
 * Exits 1 when an input cannot be read or there was none at all.
 */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int replay_file(const char *path)
{
	FILE *f = fopen(path, "rb");
	uint8_t *buf = NULL;
	size_t len = 0, cap = 0, n;

	if (!f) {
		perror(path);
		return -1;
	}
	do {
		if (len == cap) {
			uint8_t *p = realloc(buf, cap ? cap * 2 : 65536);

			if (!p) {
				fprintf(stderr, "%s: out of memory\n", path);
				free(buf);
				fclose(f);
				return -1;
			}
			buf = p;
			cap = cap ? cap * 2 : 65536;
		}
		n = fread(buf + len, 1, cap - len, f);
		len += n;
	} while (n);
	fclose(f);
	LLVMFuzzerTestOneInput(buf, len);
	free(buf);
	return 0;
}

int main(int argc, char *argv[])
{
	int files = 0, rc = 0;

	for (int i = 1; i < argc; i++) {
		DIR *d = opendir(argv[i]);
		struct dirent *e;

		if (!d) {
			rc |= replay_file(argv[i]) < 0;
			files++;
			continue;
		}
		while ((e = readdir(d))) {
			char path[4096];

			if (e->d_name[0] == '.')
				continue;
			snprintf(path, sizeof(path), "%s/%s", argv[i], e->d_name);
			rc |= replay_file(path) < 0;
			files++;
		}
		closedir(d);
	}
	printf("replayed %d inputs\n", files);
	return rc || !files;
}
