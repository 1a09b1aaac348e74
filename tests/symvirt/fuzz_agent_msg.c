/* SPDX-License-Identifier: MIT */
/*
 * Fuzz harness for what kawarimi-agent reads from the host and the ranks:
 * the line framer (around the shared kqmp_reader), the envelope check,
 * the argument checks of every command in the agent's table and the checks
 * of rank replies.  libFuzzer under clang -Dfuzz=true; with gcc, linked with
 * tests/fuzz_replay.c, a program that replays the files of the seed
 * corpus directories or files given as arguments.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto.h"

static int on_frame(void *arg, json_object *msg, const struct schema_err *e)
{
	enum schema_kind kind;
	json_object *id, *v;
	struct schema_err err;
	size_t *n = arg;

	(*n)++;
	if (!msg) {
		/* every framing error names a class the protocol documents */
		if (strcmp(e->cls, "ProtocolError"))
			abort();
		return 0;
	}
	if (schema_check_envelope(msg, &kind, &id, &err) < 0)
		return 0;
	if (kind == SCHEMA_MSG_COMMAND) {
		json_object *args = NULL;

		json_object_object_get_ex(msg, "execute", &v);
		json_object_object_get_ex(msg, "arguments", &args);
		for (int leg = SCHEMA_HOST; leg <= SCHEMA_TO_RANK; leg++) {
			const struct schema_command *c = schema_find(json_object_get_string(v), leg);

			if (c && schema_check_args(args, c->args, &err) == 0) {
				/* what the handlers then read must be there */
				for (const struct schema_arg *s = c->args; s->name; s++)
					if (s->required && !agent_arg(args, s->name))
						abort();
			}
		}
	} else if (kind == SCHEMA_MSG_REPLY && json_object_object_get_ex(msg, "return", &v)) {
		schema_check_return("quiesce", v, &err);
		schema_check_return("resume", v, &err);
		schema_check_return("status", v, &err);
		schema_check_return("peers", v, &err);
	}
	json_object_put(agent_reply_error(&err, id));
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct agent_framer *f = agent_framer_new(SYMVIRT_MAX_MSG);
	size_t n = 0, half = size / 2;

	if (!f)
		return 0;
	/* in two reads, as a stream arrives */
	agent_framer_feed(f, (const char *)data, half, on_frame, &n);
	agent_framer_feed(f, (const char *)data + half, size - half, on_frame, &n);
	agent_framer_feed(f, "\n", 1, on_frame, &n);
	agent_framer_free(f);
	return 0;
}
