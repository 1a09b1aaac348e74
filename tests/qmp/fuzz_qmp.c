/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer harness for what libkawarimi-qmp reads from a peer: the JSON
 * message reader, the message classification, and the connection state
 * machine fed through a socketpair.
 *
 * Input: byte 0 picks the chunk size and flags, byte 1 the message size
 * limit, the rest is the byte stream from the "server".
 *
 * Built with clang -Dfuzz=true it links libFuzzer (the qmp sources are
 * compiled into it, so they carry the coverage instrumentation); otherwise
 * tests/fuzz_replay.c replays the files or directories named on the command line,
 * so every test run pushes the seed corpus through the same checks.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "kqmp_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Every error a user sees is one terminated line. */
static void check_desc(const char *s, size_t cap)
{
	if (!memchr(s, '\0', cap) || strchr(s, '\n'))
		abort();
}

static uint64_t fnv1a(uint64_t h, const char *s)
{
	while (*s)
		h = (h ^ (unsigned char)*s++) * 0x100000001b3ull;
	return h;
}

/* Reads the stream in chunks of step; returns how many objects came out
 * before the end or the first error (*failed says which), and a hash of
 * their text in *hash. */
static size_t read_all(const uint8_t *data, size_t size, size_t step, size_t max,
		       bool *failed, uint64_t *hash)
{
	struct kqmp_reader *r = kqmp_reader_new(max);
	struct kqmp_error err;
	size_t count = 0;

	*failed = false;
	*hash = 0xcbf29ce484222325ull;
	for (size_t off = 0; off < size && !*failed; off += step) {
		size_t n = size - off < step ? size - off : step;
		json_object *obj;
		int k;

		if (kqmp_reader_feed(r, (const char *)data + off, n, &err) < 0)
			break;
		while ((k = kqmp_reader_next(r, &obj, &err)) == 1) {
			struct kqmp_msg m;
			char q[64];

			if (!json_object_is_type(obj, json_type_object))
				abort();
			if (kqmp_classify(obj, &m, &err) == 0) {
				if (m.type == KQMP_MSG_ERROR && (!m.cls || !m.desc))
					abort();
				if (m.type == KQMP_MSG_EVENT && !m.event)
					abort();
				(void)kqmp_msg_id(&m);
			} else {
				check_desc(err.desc, sizeof(err.desc));
			}
			*hash = fnv1a(*hash, json_object_to_json_string(obj));
			kqmp_quote_json(q, sizeof(q), obj);
			if (strlen(q) >= sizeof(q))
				abort();
			json_object_put(obj);
			count++;
		}
		if (k < 0) {
			check_desc(err.desc, sizeof(err.desc));
			*failed = true;
		}
	}
	kqmp_reader_free(r);
	return count;
}

struct calls {
	int n[3];
};

static void reply(struct kqmp *q, json_object *ret, const struct kqmp_error *err, void *arg)
{
	int *n = arg;

	(void)q;
	if ((ret == NULL) == (err == NULL))
		abort();
	if (err)
		check_desc(err->desc, sizeof(err->desc));
	(*n)++;
}

static void log_line(struct kqmp *q, const char *msg, void *arg)
{
	(void)q;
	(void)arg;
	if (strchr(msg, '\n'))
		abort();
}

/* The connection: three commands wait while the stream arrives; whatever
 * it holds, each callback runs exactly once by the time it is closed. */
static void drive_connection(const uint8_t *data, size_t size, size_t step, size_t max,
			     unsigned flags)
{
	struct calls c = { { 0 } };
	struct kqmp_error err;
	struct kqmp_event ev;
	struct kqmp *q;
	int sv[2];

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		return;
	q = kqmp_new_fd(sv[0], flags);
	if (!q) {
		close(sv[0]);
		close(sv[1]);
		return;
	}
	kqmp_set_log(q, log_line, NULL);
	kqmp_set_max_msg(q, max);
	kqmp_send(q, "query-status", NULL, reply, &c.n[0]);
	kqmp_send(q, "query-pci", NULL, reply, &c.n[1]);
	if (!kqmp_send_oob(q, "migrate-pause", NULL, reply, &c.n[2]))
		c.n[2] = 1;	/* no oob flag: refused up front */
	for (size_t off = 0; off < size; off += step) {
		size_t n = size - off < step ? size - off : step;

		if (write(sv[1], data + off, n) != (ssize_t)n ||
		    kqmp_dispatch(q, &err) < 0)
			break;
	}
	close(sv[1]);
	if (kqmp_dispatch(q, &err) == 0)
		abort();	/* EOF must fail the connection */
	check_desc(err.desc, sizeof(err.desc));
	if (kqmp_get_state(q) != KQMP_FAILED || kqmp_pending(q) != 0)
		abort();
	while (kqmp_event_pop(q, &ev) == 1)
		kqmp_event_clear(&ev);
	kqmp_close(q);
	for (int i = 0; i < 3; i++)
		if (c.n[i] != 1)
			abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	size_t step, max;
	bool failed_whole, failed_chunked;

	if (size < 2 || size > (1u << 16))
		return 0;
	step = (data[0] & 0x3f) + 1;
	max = 16 + (size_t)data[1] * 16;
	unsigned flags = data[0] & 0x80 ? KQMP_F_OOB : 0;

	data += 2;
	size -= 2;

	/*
	 * Framing must not depend on how the bytes were split: a stream read
	 * whole without error gives the same objects read in chunks.  (The
	 * converse does not hold: json-c 0.16 lets some malformed numbers such
	 * as 1-----2 through when they arrive over several reads.)
	 */
	uint64_t hash_whole, hash_chunked;
	size_t whole = read_all(data, size, size ? size : 1, max, &failed_whole, &hash_whole);
	size_t chunked = read_all(data, size, step, max, &failed_chunked, &hash_chunked);

	if (!failed_whole && (failed_chunked || whole != chunked || hash_whole != hash_chunked))
		abort();
	drive_connection(data, size, step, max, flags);
	return 0;
}
