/* SPDX-License-Identifier: MIT */
/*
 * Fuzz harness for what kawarimi-agent reads from the host and the ranks:
 * the line framer (around the shared kjson_reader), the envelope check,
 * the argument checks of every command in the agent's table and the checks
 * of rank replies.  libFuzzer under clang -Dfuzz=true; with gcc (built with
 * -DKWS_FUZZ_REPLAY) a program that replays the files of the seed corpus
 * directories or files given as arguments.
 */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent.h"

static int on_frame(void *arg, json_object *msg, const struct sv_err *e)
{
	enum sv_kind kind;
	json_object *id, *v;
	struct sv_err err;
	size_t *n = arg;

	(*n)++;
	if (!msg) {
		/* every framing error names a class the protocol documents */
		if (strcmp(e->cls, "ProtocolError"))
			abort();
		return 0;
	}
	if (sv_check_envelope(msg, &kind, &id, &err) < 0)
		return 0;
	if (kind == SV_MSG_COMMAND) {
		json_object *args = NULL;

		json_object_object_get_ex(msg, "execute", &v);
		json_object_object_get_ex(msg, "arguments", &args);
		for (int leg = LEG_HOST; leg <= LEG_RANK; leg++) {
			const struct agent_command *c = agent_find_command(json_object_get_string(v), leg);

			if (c && sv_check_args(args, c->args, &err) == 0) {
				/* what the handlers then read must be there */
				for (const struct sv_argspec *s = c->args; s->name; s++)
					if (s->required && !sv_arg(args, s->name))
						abort();
			}
		}
	} else if (kind == SV_MSG_REPLY && json_object_object_get_ex(msg, "return", &v)) {
		sv_check_rank_return("quiesce", v, &err);
		sv_check_rank_return("resume", v, &err);
		sv_check_rank_return("status", v, &err);
	}
	json_object_put(sv_reply_error(&err, id));
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct sv_framer *f = sv_framer_new(SYMVIRT_MAX_MSG);
	size_t n = 0, half = size / 2;

	if (!f)
		return 0;
	/* in two reads, as a stream arrives */
	sv_framer_feed(f, (const char *)data, half, on_frame, &n);
	sv_framer_feed(f, (const char *)data + half, size - half, on_frame, &n);
	sv_framer_feed(f, "\n", 1, on_frame, &n);
	sv_framer_free(f);
	return 0;
}

#ifdef KWS_FUZZ_REPLAY
static int replay_file(const char *path)
{
	FILE *f = fopen(path, "rb");
	char *buf;
	long len;

	if (!f)
		return -1;
	fseek(f, 0, SEEK_END);
	len = ftell(f);
	rewind(f);
	buf = malloc(len > 0 ? (size_t)len : 1);
	if (!buf || fread(buf, 1, (size_t)len, f) != (size_t)len) {
		free(buf);
		fclose(f);
		return -1;
	}
	fclose(f);
	LLVMFuzzerTestOneInput((const uint8_t *)buf, (size_t)len);
	free(buf);
	return 0;
}

int main(int argc, char *argv[])
{
	int files = 0;

	for (int i = 1; i < argc; i++) {
		DIR *d = opendir(argv[i]);
		struct dirent *de;

		if (!d) {
			if (replay_file(argv[i]) < 0) {
				fprintf(stderr, "cannot read %s\n", argv[i]);
				return 1;
			}
			files++;
			continue;
		}
		while ((de = readdir(d))) {
			char path[4096];

			if (de->d_name[0] == '.')
				continue;
			snprintf(path, sizeof(path), "%s/%s", argv[i], de->d_name);
			if (replay_file(path) < 0) {
				fprintf(stderr, "cannot read %s\n", path);
				closedir(d);
				return 1;
			}
			files++;
		}
		closedir(d);
	}
	if (!files) {
		fprintf(stderr, "no corpus files replayed\n");
		return 1;
	}
	printf("replayed %d corpus files\n", files);
	return 0;
}
#endif
