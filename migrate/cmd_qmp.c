/* SPDX-License-Identifier: MIT */
/*
 * kawarimi qmp SOCKET COMMAND [ARGS-JSON]
 * kawarimi qmp SOCKET --events SECONDS
 *
 * SOCKET is any endpoint kqmp_connect_uri() takes: a path or ssh://.
 * One QMP command from the shell, or a window onto the event stream.
 * Exit status: 0 done, 1 QEMU answered with an error, 2 anything else
 * (usage, bad ARGS-JSON, cannot connect, connection lost, timeout).
 */
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kawarimi-qmp.h"
#include "subcommands.h"

#define QMP_DEFAULT_TIMEOUT_S	30

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: %s qmp [--timeout SECONDS] SOCKET COMMAND [ARGS-JSON]\n"
		"       %s qmp SOCKET --events SECONDS\n"
		"\n"
		"Runs one QMP command against the QEMU monitor at the unix socket\n"
		"SOCKET and prints its \"return\" value as pretty JSON on stdout.\n"
		"SOCKET is a path, or ssh://[USER@]HOST[:PORT]/PATH for a socket on\n"
		"another host, through your ssh (BatchMode=yes, one master per host).\n"
		"ARGS-JSON is the command's arguments as one JSON object, e.g.\n"
		"  %s qmp /run/vm1.qmp device_del '{\"id\": \"hca0\"}'\n"
		"\n"
		"With --events, prints every QMP event as one JSON line for SECONDS\n"
		"seconds, then exits 0.\n"
		"\n"
		"Options:\n"
		"  --timeout SECONDS  give up connecting or waiting for the reply after\n"
		"                     this long (default %d)\n"
		"\n"
		"Exit status:\n"
		"  0  the command succeeded (or the event window ended)\n"
		"  1  QEMU answered with an error; \"CLASS: description\" is on stderr\n"
		"  2  usage error, ARGS-JSON that is not a JSON object (the message\n"
		"     quotes it), cannot connect (the message names SOCKET and why),\n"
		"     connection lost, or timeout\n",
		prog, prog, prog, QMP_DEFAULT_TIMEOUT_S);
}

static void log_to_stderr(struct kqmp *q, const char *msg, void *arg)
{
	(void)q;
	(void)arg;
	fprintf(stderr, "%s qmp: %s\n", prog, msg);
}

static int parse_seconds(const char *s, const char *what, int *out)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || end == s || *end || v < 0 || v > INT_MAX / 1000) {
		fprintf(stderr, "%s qmp: %s wants a whole number of seconds, not '%s'\n",
			prog, what, s);
		return -1;
	}
	*out = (int)v;
	return 0;
}

static json_object *parse_args(const char *text)
{
	enum json_tokener_error jerr;
	json_object *args = json_tokener_parse_verbose(text, &jerr);

	if (!args && jerr != json_tokener_success) {
		fprintf(stderr, "%s qmp: ARGS-JSON '%s' is not valid JSON (%s); "
			"give one object, e.g. '{\"id\": \"hca0\"}'\n",
			prog, text, json_tokener_error_desc(jerr));
		return NULL;
	}
	if (!json_object_is_type(args, json_type_object)) {
		fprintf(stderr, "%s qmp: ARGS-JSON '%s' is not a JSON object; "
			"give one object, e.g. '{\"id\": \"hca0\"}'\n", prog, text);
		json_object_put(args);
		return NULL;
	}
	return args;
}

static void print_pretty(json_object *v)
{
	/* json-c spreads an empty object over two lines; "{}" reads better. */
	if ((json_object_is_type(v, json_type_object) && !json_object_object_length(v)) ||
	    (json_object_is_type(v, json_type_array) && !json_object_array_length(v))) {
		puts(json_object_is_type(v, json_type_object) ? "{}" : "[]");
		return;
	}
	printf("%s\n", json_object_to_json_string_ext(v, JSON_C_TO_STRING_PRETTY |
			JSON_C_TO_STRING_SPACED | JSON_C_TO_STRING_NOSLASHESCAPE));
}

static int run_command(const char *sock, const char *command, const char *args_text,
		       int timeout_ms)
{
	json_object *args = NULL, *ret = NULL;
	struct kqmp_error err;
	struct kqmp *q;

	if (args_text && !(args = parse_args(args_text)))
		return 2;
	q = kqmp_open(sock, 0, timeout_ms, &err);
	if (!q) {
		json_object_put(args);
		fprintf(stderr, "%s qmp: %s\n", prog, err.desc);
		return 2;
	}
	kqmp_set_log(q, log_to_stderr, NULL);
	if (kqmp_execute(q, command, args, timeout_ms, &ret, &err) < 0) {
		kqmp_close(q);
		if (err.kind == KQMP_E_QMP) {
			fprintf(stderr, "%s: %s\n", err.cls, err.desc);
			return 1;
		}
		fprintf(stderr, "%s qmp: %s: %s\n", prog, command, err.desc);
		return 2;
	}
	print_pretty(ret);
	json_object_put(ret);
	kqmp_close(q);
	return fflush(stdout) == 0 ? 0 : 2;
}

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void print_event(const struct kqmp_event *ev)
{
	json_object *o = json_object_new_object();
	json_object *ts = json_object_new_object();

	json_object_object_add(o, "event", json_object_new_string(ev->name));
	if (ev->data)
		json_object_object_add(o, "data", json_object_get(ev->data));
	json_object_object_add(ts, "seconds", json_object_new_int64(ev->sec));
	json_object_object_add(ts, "microseconds", json_object_new_int64(ev->usec));
	json_object_object_add(o, "timestamp", ts);
	printf("%s\n", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN |
			JSON_C_TO_STRING_NOSLASHESCAPE));
	json_object_put(o);
}

static int run_events(const char *sock, int seconds, int timeout_ms)
{
	struct kqmp_error err;
	struct kqmp_event ev;
	struct kqmp *q = kqmp_open(sock, 0, timeout_ms, &err);
	int64_t end = now_ms() + (int64_t)seconds * 1000;
	int rc = 0;

	if (!q) {
		fprintf(stderr, "%s qmp: %s\n", prog, err.desc);
		return 2;
	}
	kqmp_set_log(q, log_to_stderr, NULL);
	for (;;) {
		while (kqmp_event_pop(q, &ev) == 1) {
			print_event(&ev);
			kqmp_event_clear(&ev);
		}
		/* Line by line, so a pipe reader sees each event as it comes. */
		fflush(stdout);

		int64_t left = end - now_ms();
		struct pollfd p = { .fd = kqmp_fd(q), .events = POLLIN };

		if (left <= 0)
			break;
		if (kqmp_want_write(q))
			p.events |= POLLOUT;
		if (poll(&p, 1, (int)left) < 0 && errno != EINTR) {
			fprintf(stderr, "%s qmp: poll: %s\n", prog, strerror(errno));
			rc = 2;
			break;
		}
		if (kqmp_dispatch(q, &err) < 0) {
			while (kqmp_event_pop(q, &ev) == 1) {
				print_event(&ev);
				kqmp_event_clear(&ev);
			}
			fprintf(stderr, "%s qmp: %s\n", prog, err.desc);
			rc = 2;
			break;
		}
	}
	kqmp_close(q);
	return fflush(stdout) == 0 ? rc : 2;
}

int cmd_qmp(int argc, char *argv[])
{
	int timeout_s = QMP_DEFAULT_TIMEOUT_S;
	int i = 1;

	if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
		usage(stdout);
		return 0;
	}
	if (argc >= 3 && !strcmp(argv[1], "--timeout")) {
		if (parse_seconds(argv[2], "--timeout", &timeout_s) < 0)
			return 2;
		i = 3;
	}
	if (argc - i == 2 || argc - i == 3) {
		const char *sock = argv[i];

		if (!strcmp(argv[i + 1], "--events")) {
			int seconds;

			if (argc - i != 3) {
				fprintf(stderr, "%s qmp: --events wants SECONDS\n", prog);
				return 2;
			}
			if (parse_seconds(argv[i + 2], "--events", &seconds) < 0)
				return 2;
			return run_events(sock, seconds, timeout_s * 1000);
		}
		return run_command(sock, argv[i + 1], argc - i == 3 ? argv[i + 2] : NULL,
				   timeout_s * 1000);
	}
	usage(stderr);
	return 2;
}
