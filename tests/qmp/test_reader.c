/* SPDX-License-Identifier: MIT */
/* kqmp_reader: framing of a JSON object stream fed in arbitrary chunks. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kawarimi-qmp.h"
#include "../check.h"


/* Feeds s in chunks of step bytes; collects the compact form of every
 * object into out (one per line).  Returns 0, or -1 at the first error. */
static int run(size_t max, const char *s, size_t len, size_t step,
	       char *out, size_t outsz, struct kqmp_error *err)
{
	struct kqmp_reader *r = kqmp_reader_new(max);
	size_t o = 0;
	int rc = 0;

	out[0] = '\0';
	for (size_t off = 0; off < len && rc == 0; off += step) {
		size_t n = len - off < step ? len - off : step;
		json_object *obj;
		int k;

		if (kqmp_reader_feed(r, s + off, n, err) < 0) {
			rc = -1;
			break;
		}
		while ((k = kqmp_reader_next(r, &obj, err)) == 1) {
			o += snprintf(out + o, outsz - o, "%s\n",
				      json_object_to_json_string_ext(obj, JSON_C_TO_STRING_PLAIN));
			json_object_put(obj);
		}
		if (k < 0)
			rc = -1;
	}
	kqmp_reader_free(r);
	return rc;
}

static void test_chunking(void)
{
	const char *in = "  {\"return\": {}, \"id\": 1}\r\n\n"
			 "{\"event\":\"STOP\",\"data\":{\"s\":\"a}b{\\\"c\"}}{\"x\":[1,{\"y\":null}]}\n"
			 "{\"u\":\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\"}";
	const char *want = "{\"return\":{},\"id\":1}\n"
			   "{\"event\":\"STOP\",\"data\":{\"s\":\"a}b{\\\"c\"}}\n"
			   "{\"x\":[1,{\"y\":null}]}\n"
			   "{\"u\":\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\"}\n";
	size_t len = strlen(in);
	char out[1024];
	struct kqmp_error err;

	/* Every chunk size, byte-by-byte included, gives the same objects. */
	for (size_t step = 1; step <= len; step++) {
		int rc = run(4096, in, len, step, out, sizeof(out), &err);

		CHECK(rc == 0, "step %zu: %s", step, err.desc);
		CHECK(!strcmp(out, want), "step %zu: got\n%s", step, out);
	}
}

static void test_hundred_in_one(void)
{
	char in[8192], out[8192], want[8192];
	size_t o = 0, w = 0;
	struct kqmp_error err;

	for (int i = 1; i <= 100; i++) {
		o += snprintf(in + o, sizeof(in) - o, "{\"return\": %d, \"id\": %d}%s", i, i, i % 3 ? "" : "\n");
		w += snprintf(want + w, sizeof(want) - w, "{\"return\":%d,\"id\":%d}\n", i, i);
	}
	CHECK(run(4096, in, o, o, out, sizeof(out), &err) == 0, "%s", err.desc);
	CHECK(!strcmp(out, want), "got %s", out);
}

static void expect_error(size_t max, const char *in, size_t step, const char *needle)
{
	char out[4096];
	struct kqmp_error err = { 0 };
	int rc = run(max, in, strlen(in), step, out, sizeof(out), &err);

	CHECK(rc == -1, "'%s' was accepted: %s", in, out);
	CHECK(err.kind == KQMP_E_PROTOCOL, "'%s': kind %s", in, kqmp_err_kind_name(err.kind));
	CHECK(strstr(err.desc, needle), "'%s': desc '%s' lacks '%s'", in, err.desc, needle);
}

static void test_errors(void)
{
	/* Not an object, quoted in the error. */
	expect_error(4096, "[1,2]", 64, "expected a JSON object, got '[1,2]'");
	expect_error(4096, "[1,2]", 1, "got '['");
	expect_error(4096, "42\n", 5, "got '42\\n'");
	expect_error(4096, "SSH-2.0-OpenSSH_9.2\r\n", 64, "'SSH-2.0-OpenSSH_9.2\\r\\n'");
	/* A good message, then garbage: the first is delivered, then error. */
	expect_error(4096, "{\"a\":1} {\"a\": x}", 3, "malformed JSON");
	expect_error(4096, "{\"a\":'x'}", 7, "malformed JSON");
	expect_error(4096, "{\"a\":1,}", 64, "near '{\"a\":1,}'");
	expect_error(4096, "{\"a\":\"\xff\"}", 2, "invalid UTF-8 at byte 6");
	/* Overlong '/', a UTF-16 surrogate, past U+10FFFF, a lone continuation. */
	expect_error(4096, "{\"a\":\"\xc0\xaf\"}", 64, "\\xc0\\xaf");
	expect_error(4096, "{\"a\":\"\xed\xa0\x80\"}", 3, "invalid UTF-8");
	expect_error(4096, "{\"a\":\"\xf4\x90\x80\x80\"}", 64, "invalid UTF-8");
	expect_error(4096, "{\"a\":\"x\x80\"}", 1, "invalid UTF-8 at byte 7");
	/* Bytes after a good message are not the message's problem. */
	expect_error(4096, "{\"a\":1}\xc3\xbf", 64, "expected a JSON object, got '\\xc3\\xbf'");
	/* Oversize: exactly the limit passes, one byte more fails. */
	expect_error(10, "{\"a\":\"123\"}", 1, "limit of 10 bytes");
	expect_error(10, "{\"a\":\"1234567890123\"", 100, "limit of 10 bytes");

	char out[64];
	struct kqmp_error err;

	CHECK(run(11, "{\"a\":\"123\"}", 11, 1, out, sizeof(out), &err) == 0, "%s", err.desc);

	/* Too deep. */
	char deep[1024];
	size_t d = 0;

	for (int i = 0; i < 100; i++)
		d += snprintf(deep + d, sizeof(deep) - d, "{\"a\":");
	expect_error(4096, deep, 7, "nesting too deep");
}

static void test_sticky_failure(void)
{
	struct kqmp_reader *r = kqmp_reader_new(100);
	struct kqmp_error err;
	json_object *obj;

	CHECK(kqmp_reader_feed(r, "nope", 4, &err) == 0, "feed");
	CHECK(kqmp_reader_next(r, &obj, &err) == -1 && !obj, "garbage accepted");
	CHECK(kqmp_reader_feed(r, "{}", 2, &err) == -1, "feed after failure");
	CHECK(kqmp_reader_next(r, &obj, &err) == -1, "next after failure");
	CHECK(strstr(err.desc, "'nope'"), "%s", err.desc);
	kqmp_reader_free(r);
}

static void test_big_message(void)
{
	/* 3 MiB string split in 7-byte chunks: linear time, and the buffer
	 * never holds more than a chunk. */
	size_t n = 3u << 20;
	char *in = malloc(n + 16);
	struct kqmp_reader *r = kqmp_reader_new(4u << 20);
	struct kqmp_error err;
	json_object *obj = NULL;
	int k = 0;

	memcpy(in, "{\"s\":\"", 6);
	memset(in + 6, 'x', n);
	memcpy(in + 6 + n, "\"}", 2);
	for (size_t off = 0; off < n + 8 && k == 0; off += 7) {
		size_t c = n + 8 - off < 7 ? n + 8 - off : 7;

		kqmp_reader_feed(r, in + off, c, &err);
		k = kqmp_reader_next(r, &obj, &err);
	}
	CHECK(k == 1 && obj, "big message: %d %s", k, err.desc);
	if (obj) {
		json_object *s;

		CHECK(json_object_object_get_ex(obj, "s", &s) &&
		      json_object_get_string_len(s) == (int)n, "length");
	}
	json_object_put(obj);
	kqmp_reader_free(r);
	free(in);
}

int main(void)
{
	test_chunking();
	test_hundred_in_one();
	test_errors();
	test_sticky_failure();
	test_big_message();
	if (failures) {
		fprintf(stderr, "%d check(s) failed\n", failures);
		return 1;
	}
	printf("ok\n");
	return 0;
}
