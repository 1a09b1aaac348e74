/* SPDX-License-Identifier: MIT */
/*
 * The incremental JSON message reader.
 *
 * Bytes land in one flat buffer; kqmp_reader_next() hands everything it
 * holds to json-c's incremental tokener, which keeps the partial message in
 * its own state.  So the buffer only ever holds bytes not yet tokenized
 * (usually nothing between reads), each byte is looked at once, and a
 * message split across any number of reads costs no re-parsing.
 */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "kqmp_internal.h"

/* json-c's default of 32 is tight for query-qom-tree style replies. */
#define KQMP_MAX_DEPTH	64
#define KQMP_MIN_BUF	4096

struct kqmp_reader {
	struct json_tokener *tok;
	char *buf;
	size_t pos;		/* first byte not yet given to the tokener */
	size_t len;		/* end of buffered bytes */
	size_t cap;
	size_t max_msg;
	size_t msg_len;		/* bytes of the current message tokenized so far */
	bool in_msg;
	bool failed;
	unsigned char u8_need, u8_lo, u8_hi;	/* utf8_check() state */
	struct kqmp_error err;	/* why it failed */
};

struct kqmp_reader *kqmp_reader_new(size_t max_msg)
{
	struct kqmp_reader *r = calloc(1, sizeof(*r));

	if (!r)
		return NULL;
	r->tok = json_tokener_new_ex(KQMP_MAX_DEPTH);
	if (!r->tok) {
		free(r);
		return NULL;
	}
	/* QEMU and our agents emit strict JSON; anything looser means the
	 * peer is not who we think it is.  UTF-8 is checked by utf8_check(). */
	json_tokener_set_flags(r->tok, JSON_TOKENER_STRICT |
			       JSON_TOKENER_ALLOW_TRAILING_CHARS);
	r->max_msg = max_msg ? max_msg : 1;
	return r;
}

void kqmp_reader_free(struct kqmp_reader *r)
{
	if (!r)
		return;
	json_tokener_free(r->tok);
	free(r->buf);
	free(r);
}

void kqmp_reader_set_max_msg(struct kqmp_reader *r, size_t max_msg)
{
	r->max_msg = max_msg ? max_msg : 1;
}

static int reader_fail(struct kqmp_reader *r, struct kqmp_error *err)
{
	r->failed = true;
	if (err)
		*err = r->err;
	return -1;
}

char *kqmp_reader_reserve(struct kqmp_reader *r, size_t want)
{
	if (r->pos == r->len) {
		r->pos = 0;
		r->len = 0;
	}
	if (r->cap - r->len >= want)
		return r->buf + r->len;
	/* Slide unconsumed bytes to the front before growing: they are at
	 * most one read's worth, since next() drains the buffer. */
	if (r->pos) {
		memmove(r->buf, r->buf + r->pos, r->len - r->pos);
		r->len -= r->pos;
		r->pos = 0;
		if (r->cap - r->len >= want)
			return r->buf + r->len;
	}
	size_t cap = r->cap ? r->cap : KQMP_MIN_BUF;

	while (cap - r->len < want) {
		if (cap > SIZE_MAX / 2)
			return NULL;
		cap *= 2;
	}
	char *b = realloc(r->buf, cap);

	if (!b)
		return NULL;
	r->buf = b;
	r->cap = cap;
	return r->buf + r->len;
}

void kqmp_reader_commit(struct kqmp_reader *r, size_t n)
{
	r->len += n;
}

size_t kqmp_reader_last_len(const struct kqmp_reader *r)
{
	return r->in_msg ? 0 : r->msg_len;
}

bool kqmp_reader_mid_message(const struct kqmp_reader *r)
{
	return r->in_msg;
}

int kqmp_reader_feed(struct kqmp_reader *r, const char *buf, size_t len,
		      struct kqmp_error *err)
{
	if (r->failed)
		return reader_fail(r, err);
	if (!len)
		return 0;

	char *p = kqmp_reader_reserve(r, len);

	if (!p) {
		kqmp_seterr(&r->err, KQMP_E_NOMEM,
			  "out of memory buffering %zu bytes of JSON", len);
		return reader_fail(r, err);
	}
	memcpy(p, buf, len);
	kqmp_reader_commit(r, len);
	return 0;
}

static bool is_ws(char c)
{
	return c == ' ' || c == '\n' || c == '\r' || c == '\t';
}

/*
 * UTF-8 validation, done here rather than by json-c: 0.16's
 * JSON_TOKENER_VALIDATE_UTF8 checks every byte handed to a parse call, even
 * those after the object's end, and rejects a character split across two
 * calls, so framing depended on how reads were split (found by fuzz-qmp).
 * This DFA keeps its state across calls and sees only a message's own
 * bytes.  Returns the offset of the first invalid byte, or n.
 */
static size_t utf8_check(struct kqmp_reader *r, const char *s, size_t n)
{
	const unsigned char *p = (const unsigned char *)s;
	unsigned need = r->u8_need;
	unsigned char lo = r->u8_lo, hi = r->u8_hi;

	for (size_t i = 0; i < n; i++) {
		unsigned char c = p[i];

		if (need) {
			if (c < lo || c > hi)
				return i;
			need--;
			lo = 0x80;
			hi = 0xbf;
			continue;
		}
		if (c < 0x80)
			continue;
		lo = 0x80;
		hi = 0xbf;
		if (c >= 0xc2 && c <= 0xdf)
			need = 1;
		else if (c == 0xe0)
			need = 2, lo = 0xa0;		/* no overlong forms */
		else if (c == 0xed)
			need = 2, hi = 0x9f;		/* no surrogates */
		else if (c >= 0xe1 && c <= 0xef)
			need = 2;
		else if (c == 0xf0)
			need = 3, lo = 0x90;
		else if (c >= 0xf1 && c <= 0xf3)
			need = 3;
		else if (c == 0xf4)
			need = 3, hi = 0x8f;		/* nothing past U+10FFFF */
		else
			return i;
	}
	r->u8_need = (unsigned char)need;
	r->u8_lo = lo;
	r->u8_hi = hi;
	return n;
}

static int bad_utf8(struct kqmp_reader *r, const char *at, size_t bad, size_t n)
{
	size_t from = bad > 24 ? bad - 24 : 0;
	char q[128];

	kqmp_quote(q, sizeof(q), at + from, (n < bad + 8 ? n : bad + 8) - from);
	kqmp_seterr(&r->err, KQMP_E_PROTOCOL,
		  "invalid UTF-8 at byte %zu of a JSON message, near %s",
		  r->msg_len + bad, q);
	return -1;
}

/* Skips whitespace between messages; 1 when a message starts at r->pos. */
static int start_message(struct kqmp_reader *r)
{
	while (r->pos < r->len && is_ws(r->buf[r->pos]))
		r->pos++;
	if (r->pos == r->len)
		return 0;
	if (r->buf[r->pos] != '{') {
		char q[96];

		kqmp_quote(q, sizeof(q), r->buf + r->pos, r->len - r->pos);
		kqmp_seterr(&r->err, KQMP_E_PROTOCOL,
			  "expected a JSON object, got %s", q);
		return -1;
	}
	r->in_msg = true;
	r->msg_len = 0;
	r->u8_need = 0;
	return 1;
}

int kqmp_reader_next(struct kqmp_reader *r, json_object **out,
		      struct kqmp_error *err)
{
	*out = NULL;
	if (r->failed)
		return reader_fail(r, err);

	while (r->pos < r->len) {
		if (!r->in_msg) {
			int s = start_message(r);

			if (s < 0)
				return reader_fail(r, err);
			if (s == 0)
				break;
		}
		if (r->msg_len >= r->max_msg) {
			kqmp_seterr(&r->err, KQMP_E_PROTOCOL,
				  "JSON message longer than the limit of %zu bytes",
				  r->max_msg);
			return reader_fail(r, err);
		}

		/* Never let the tokener see more than the limit allows, so an
		 * endless string cannot grow its buffer past max_msg. */
		size_t n = r->len - r->pos;

		if (n > r->max_msg - r->msg_len)
			n = r->max_msg - r->msg_len;
		if (n > INT_MAX)
			n = INT_MAX;

		const char *at = r->buf + r->pos;

		json_object *obj = json_tokener_parse_ex(r->tok, at, (int)n);
		enum json_tokener_error jerr = json_tokener_get_error(r->tok);
		size_t used = json_tokener_get_parse_end(r->tok);

		if (obj || jerr == json_tokener_continue) {
			size_t mine = obj ? used : n;
			size_t bad = utf8_check(r, at, mine);

			if (bad < mine) {
				json_object_put(obj);
				bad_utf8(r, at, bad, n);
				return reader_fail(r, err);
			}
		}
		if (obj) {
			r->pos += used;
			r->msg_len += used;
			r->in_msg = false;
			json_tokener_reset(r->tok);
			*out = obj;
			return 1;
		}
		if (jerr == json_tokener_continue) {
			r->pos += n;
			r->msg_len += n;
			continue;
		}

		/* Quote a little context before the offending byte. */
		size_t from = used > 24 ? used - 24 : 0;
		char q[128];

		kqmp_quote(q, sizeof(q), at + from, n - from);
		kqmp_seterr(&r->err, KQMP_E_PROTOCOL,
			  "malformed JSON (%s) at byte %zu of a message, near %s",
			  json_tokener_error_desc(jerr), r->msg_len + used, q);
		return reader_fail(r, err);
	}
	/* Buffer drained: release a large one a huge read left behind. */
	if (r->cap > (1u << 20) && r->pos == r->len) {
		free(r->buf);
		r->buf = NULL;
		r->cap = r->pos = r->len = 0;
	}
	return 0;
}
