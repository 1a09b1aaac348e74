/* SPDX-License-Identifier: MIT */
/*
 * kawarimi agent [--timeout SECONDS] SOCKET COMMAND [ARGS-JSON]
 *
 * One symvirt command against a guest agent, through the host end of its
 * virtio-serial port (the QEMU chardev socket) or a test agent's socket.
 * Exit status as `kawarimi qmp`: 0 done, 1 the agent answered with an
 * error, 2 anything else (usage, bad ARGS-JSON, cannot connect, no agent
 * answering, connection lost, timeout).
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "symvirt_client.h"
#include "subcommands.h"

#define AGENT_DEFAULT_TIMEOUT_S 120
/* How long the agent gets to answer the first hello: the port may have no
 * guest reader for a moment (the agent restarting, the guest booting). */
#define AGENT_SYNC_TIMEOUT_S 10

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: %s agent [--timeout SECONDS] SOCKET COMMAND [ARGS-JSON]\n"
		"\n"
		"Runs one symvirt command (docs/symvirt-protocol.md) against the\n"
		"kawarimi-agent behind SOCKET (the unix socket of the VM's\n"
		"org.kawarimi.symvirt.0 chardev; a path, or ssh://[USER@]HOST[:PORT]/PATH\n"
		"on another host) and prints its \"return\" value as\n"
		"pretty JSON on stdout.  Commands: hello, query-commands, inventory,\n"
		"status, quiesce, resume.  E.g.\n"
		"  %s agent /run/vm1.symvirt quiesce '{\"deadline-ms\": 20000}'\n"
		"\n"
		"Options:\n"
		"  --timeout SECONDS  give up waiting for the agent to answer hello, and\n"
		"                     then for the reply, after this long (default %d s\n"
		"                     for hello, %d for the reply: resume may wait\n"
		"                     for a link)\n"
		"\n"
		"Exit status:\n"
		"  0  the command succeeded\n"
		"  1  the agent answered with an error; \"CLASS: description\" is on stderr\n"
		"  2  usage error, ARGS-JSON that is not a JSON object, cannot connect\n"
		"     (the message names SOCKET and why), no agent answering, connection\n"
		"     lost, or timeout\n",
		prog, prog, AGENT_SYNC_TIMEOUT_S, AGENT_DEFAULT_TIMEOUT_S);
}

static json_object *parse_args(const char *text)
{
	enum json_tokener_error jerr;
	json_object *args = json_tokener_parse_verbose(text, &jerr);

	if (!args && jerr != json_tokener_success) {
		fprintf(stderr, "%s agent: ARGS-JSON '%s' is not valid JSON (%s); "
			"give one object, e.g. '{\"deadline-ms\": 20000}'\n",
			prog, text, json_tokener_error_desc(jerr));
		return NULL;
	}
	if (!json_object_is_type(args, json_type_object)) {
		fprintf(stderr, "%s agent: ARGS-JSON '%s' is not a JSON object; "
			"give one object, e.g. '{\"deadline-ms\": 20000}'\n", prog, text);
		json_object_put(args);
		return NULL;
	}
	return args;
}

static void log_to_stderr(struct symvirt *s, const char *msg, void *arg)
{
	(void)s;
	(void)arg;
	fprintf(stderr, "%s agent: %s\n", prog, msg);
}

int cmd_agent(int argc, char *argv[])
{
	int timeout_s = AGENT_DEFAULT_TIMEOUT_S, sync_s = AGENT_SYNC_TIMEOUT_S, i = 1, rc;
	struct kqmp_error err;
	json_object *args = NULL, *ret = NULL;
	struct symvirt *s;
	const char *sock, *command;

	if (argc > 1 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
		usage(stdout);
		return 0;
	}
	if (argc > 2 && !strcmp(argv[1], "--timeout")) {
		char *end;
		long v;

		errno = 0;
		v = strtol(argv[2], &end, 10);
		if (errno || end == argv[2] || *end || v <= 0 || v > INT_MAX / 1000) {
			fprintf(stderr, "%s agent: --timeout wants a whole number of seconds, not '%s'\n",
				prog, argv[2]);
			return 2;
		}
		timeout_s = (int)v;
		sync_s = timeout_s;	/* a slow guest may take as long to answer */
		i = 3;
	}
	if (argc - i < 2 || argc - i > 3) {
		usage(stderr);
		return 2;
	}
	sock = argv[i];
	command = argv[i + 1];
	if (argc - i == 3 && !(args = parse_args(argv[i + 2])))
		return 2;

	s = symvirt_connect_uri(sock, &err);
	if (!s) {
		fprintf(stderr, "%s agent: %s\n", prog, err.desc);
		json_object_put(args);
		return 2;
	}
	symvirt_set_log(s, log_to_stderr, NULL);
	if (symvirt_sync(s, sync_s * 1000, 0, NULL, &err) < 0) {
		fprintf(stderr, "%s agent: %s: %s\n", prog, sock, err.desc);
		json_object_put(args);
		symvirt_close(s);
		return 2;
	}
	if (symvirt_execute(s, command, args, timeout_s * 1000, &ret, &err) < 0) {
		if (err.kind == KQMP_E_QMP) {
			fprintf(stderr, "%s: %s\n", err.cls, err.desc);
			rc = 1;
		} else {
			fprintf(stderr, "%s agent: %s: %s\n", prog, sock, err.desc);
			rc = 2;
		}
		symvirt_close(s);
		return rc;
	}
	printf("%s\n", json_object_to_json_string_ext(ret, JSON_C_TO_STRING_PRETTY |
							JSON_C_TO_STRING_SPACED |
							JSON_C_TO_STRING_NOSLASHESCAPE));
	json_object_put(ret);
	symvirt_close(s);
	return 0;
}
