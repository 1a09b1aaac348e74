/* Unit tests of what a GET_REQ from the network may read: the frame
 * checks of the GET frames, the request's parser, and the registration
 * table (keys, ranges, stale keys). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "btl_kawarimi_reg.h"
#include "btl_kawarimi_wire.h"
#include "../check.h"

#define MAX_GET (4u << 20)

static struct kw_get_req req(uint64_t key, const void *p, uint64_t len)
{
	return (struct kw_get_req){ .key = key, .addr = (uintptr_t)p, .len = len };
}

static void test_hdr(void)
{
	struct kw_hdr h = { .type = KW_FRAME_GET_REQ, .len = sizeof(struct kw_get_req) };

	CHECK(!kw_hdr_check(&h, 1024, MAX_GET), "a good GET_REQ header refused");
	h.len = 23;
	CHECK(kw_hdr_check(&h, 1024, MAX_GET), "a GET_REQ of 23 bytes accepted");
	h = (struct kw_hdr){ .type = KW_FRAME_GET_REPLY, .tag = 40, .len = 40 + MAX_GET };
	CHECK(!kw_hdr_check(&h, 1024, MAX_GET), "the largest GET_REPLY with a pad refused");
	h.len++;
	CHECK(kw_hdr_check(&h, 1024, MAX_GET), "a GET_REPLY over the limit accepted");
	h = (struct kw_hdr){ .type = KW_FRAME_GET_REPLY, .tag = KW_GET_PAD_MAX, .len = 100 };
	CHECK(kw_hdr_check(&h, 1024, MAX_GET), "a pad of %u accepted", KW_GET_PAD_MAX);
	h = (struct kw_hdr){ .type = KW_FRAME_GET_REPLY, .tag = 8, .len = 8 };
	CHECK(kw_hdr_check(&h, 1024, MAX_GET), "a GET_REPLY that is all pad accepted");
	h = (struct kw_hdr){ .type = KW_FRAME_GET_REPLY, .flags = KW_FLAG_GET_ERR };
	CHECK(!kw_hdr_check(&h, 1024, MAX_GET), "a refusal refused");
	h.len = 1;
	CHECK(kw_hdr_check(&h, 1024, MAX_GET), "a refusal with payload accepted");
	h = (struct kw_hdr){ .type = KW_FRAME_DATA, .flags = KW_FLAG_GET_ERR };
	CHECK(kw_hdr_check(&h, 1024, MAX_GET), "GET_ERR on a DATA frame accepted");
}

static void test_parse(void)
{
	struct kw_get_req q = req(1, (void *)0x1000, 10), out;
	char err[200];

	CHECK(!kw_get_req_parse(&q, sizeof(q), &out, MAX_GET, err, sizeof(err)), "%s", err);
	CHECK(out.addr == 0x1000 && out.len == 10 && out.key == 1, "fields not copied");
	CHECK(kw_get_req_parse(&q, sizeof(q) - 1, &out, MAX_GET, err, sizeof(err)),
	      "a short request accepted");
	q.len = 0;
	CHECK(kw_get_req_parse(&q, sizeof(q), &out, MAX_GET, err, sizeof(err)),
	      "a request for 0 bytes accepted");
	q.len = MAX_GET + 1;
	CHECK(kw_get_req_parse(&q, sizeof(q), &out, MAX_GET, err, sizeof(err)),
	      "a request over the limit accepted");
	CHECK(strstr(err, "4194305"), "the error does not quote the length: %s", err);
	q = req(1, (void *)UINTPTR_MAX, 16);
	CHECK(kw_get_req_parse(&q, sizeof(q), &out, MAX_GET, err, sizeof(err)),
	      "a range that wraps accepted");
}

static void test_table(void)
{
	static char buf[4096], other[64];
	struct kw_reg *r = kw_reg_add(buf, sizeof(buf), 1), *local, *again;
	struct kw_get_req q;
	char err[200];

	CHECK(r && r->key, "no key for a remote registration");
	if (!r)
		return;
	q = req(r->key, buf + 100, 200);
	CHECK(kw_reg_find(&q, err, sizeof(err)) == buf + 100, "an inside range refused: %s", err);
	q = req(r->key, buf, sizeof(buf));
	CHECK(kw_reg_find(&q, err, sizeof(err)) == buf, "the whole registration refused: %s", err);
	q = req(r->key, buf + 1, sizeof(buf));
	CHECK(!kw_reg_find(&q, err, sizeof(err)), "one byte past the end accepted");
	CHECK(strstr(err, "outside"), "the error does not say outside: %s", err);
	q = (struct kw_get_req){ .key = r->key, .addr = (uintptr_t)buf - 1, .len = 2 };
	CHECK(!kw_reg_find(&q, err, sizeof(err)), "one byte before the start accepted");
	q = req(r->key, other, 8);
	CHECK(!kw_reg_find(&q, err, sizeof(err)), "other memory accepted under a valid key");
	q = req(r->key ^ (1ull << 40), buf, 8);
	CHECK(!kw_reg_find(&q, err, sizeof(err)), "a key with another tag accepted");
	CHECK(strstr(err, "not registered"), "the error does not say why: %s", err);

	local = kw_reg_add(other, sizeof(other), 0);
	CHECK(local && !local->key, "a local registration got a key a peer could use");
	q = req(0, other, 8);
	CHECK(!kw_reg_find(&q, err, sizeof(err)), "key 0 (local only) accepted");

	q = req(r->key, buf, 8);
	kw_reg_del(r);
	CHECK(!kw_reg_find(&q, err, sizeof(err)), "a dropped registration still readable");
	again = kw_reg_add(buf, sizeof(buf), 1);
	CHECK(again && again->key != q.key, "the slot's next registration has the old key");
	CHECK(!kw_reg_find(&q, err, sizeof(err)), "a stale key reads the slot's new registration");
	if (local)
		kw_reg_del(local);
	if (again)
		kw_reg_del(again);
}

static void test_many(void)
{
	enum { N = 1000 };
	static char mem[N];
	struct kw_reg *r[N];
	char err[200];
	int i, ok = 1;

	for (i = 0; i < N; i++)
		r[i] = kw_reg_add(mem + i, 1, 1);
	for (i = 0; i < N; i++) {
		struct kw_get_req q = req(r[i] ? r[i]->key : 0, mem + i, 1);

		ok &= r[i] && kw_reg_find(&q, err, sizeof(err)) == mem + i;
	}
	CHECK(ok, "1000 registrations at once: one not found");
	for (i = 0; i < N; i += 2)
		kw_reg_del(r[i]);
	for (i = 1; i < N; i += 2) {
		struct kw_get_req q = req(r[i]->key, mem + i, 1);

		ok &= kw_reg_find(&q, err, sizeof(err)) == mem + i;
	}
	CHECK(ok, "dropping half lost one of the others");
	kw_reg_fini();
}

int main(void)
{
	static const struct check_case cases[] = {
		{ "frame checks of GET_REQ / GET_REPLY", test_hdr },
		{ "GET_REQ parser", test_parse },
		{ "registration table: ranges, keys, stale keys", test_table },
		{ "registration table: 1000 at once", test_many },
	};

	check_run(cases, sizeof(cases) / sizeof(cases[0]));
	return failures ? 1 : 0;
}
