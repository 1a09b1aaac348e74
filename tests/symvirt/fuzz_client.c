/*
 * Fuzz harness for the host side of the symvirt channel: the bytes a guest
 * writes, as symvirt_dispatch() reads them (JSON framing, reply matching,
 * error and event parsing, the event queue's bounds, the 64 KiB read
 * budget).  Two commands are pending; every "@@" in the input becomes the
 * id of one of them in turn, so replies can match although ids start at a
 * random value.  libFuzzer under clang -Dfuzz=true; otherwise
 * tests/fuzz_replay.c replays the files or directories named on the
 * command line.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "symvirt_client.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Bigger than one read budget, small enough for the socket to hold. */
#define FUZZ_MAX_INPUT (96u << 10)

static void on_reply(struct symvirt *s, json_object *ret, const struct kqmp_error *err,
		     void *arg)
{
	(void)s;
	(void)arg;
	/* What a caller does with them: print the texts, walk the return. */
	if (err && (strlen(err->cls) >= sizeof(err->cls) || strlen(err->desc) >= sizeof(err->desc)))
		abort();
	if (ret)
		json_object_to_json_string(ret);
}

static void on_log(struct symvirt *s, const char *msg, void *arg)
{
	(void)s;
	(void)arg;
	if (strchr(msg, '\n'))
		abort();	/* log lines are one line */
}

/* The input with each "@@" replaced by ids[0], ids[1], ids[0], ... */
static char *with_ids(const uint8_t *data, size_t size, const uint64_t ids[2], size_t *len)
{
	char *out = malloc(size * 10 + 1);
	size_t o = 0;
	int k = 0;

	if (!out)
		return NULL;
	for (size_t i = 0; i < size; i++) {
		if (data[i] == '@' && i + 1 < size && data[i + 1] == '@') {
			o += (size_t)sprintf(out + o, "%llu", (unsigned long long)ids[k]);
			k ^= 1;
			i++;
		} else {
			out[o++] = (char)data[i];
		}
	}
	*len = o;
	return out;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct symvirt_event ev;
	struct symvirt *s;
	uint64_t ids[2];
	size_t len, off = 0;
	char *buf;
	int sv[2];

	if (size > FUZZ_MAX_INPUT / 10 * 9 || socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0)
		return 0;
	s = symvirt_new_fd(sv[0], "fuzz");
	if (!s) {
		close(sv[0]);
		close(sv[1]);
		return 0;
	}
	symvirt_set_log(s, on_log, NULL);
	ids[0] = symvirt_send(s, "status", NULL, on_reply, NULL);
	ids[1] = symvirt_send(s, "quiesce", json_object_new_object(), on_reply, NULL);
	buf = with_ids(data, size, ids, &len);
	/* The guest writes, then hangs up; dispatch until the EOF is seen. */
	while (buf && off < len) {
		ssize_t w = send(sv[1], buf + off, len - off, MSG_DONTWAIT);

		if (w <= 0) {
			if (symvirt_dispatch(s, NULL) < 0)
				break;
			continue;
		}
		off += (size_t)w;
	}
	free(buf);
	shutdown(sv[1], SHUT_WR);
	for (int i = 0; i < 1000 && symvirt_dispatch(s, NULL) == 0; i++)
		;
	if (symvirt_is_open(s))
		abort();	/* EOF was not reached: a read budget that stalls */
	while (symvirt_event_pop(s, &ev) == 1)
		symvirt_event_clear(&ev);
	symvirt_close(s);
	close(sv[1]);
	return 0;
}
