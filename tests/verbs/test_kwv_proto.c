/*
 * tests/verbs: the verbs path's pure logic without a device. Credits are
 * checked by simulating two peers whose messages sit in flight for random
 * times: a receive buffer must exist for every message that arrives (no
 * RNR) and traffic must never stall (no credit deadlock). Private data:
 * round trip of identity and the 64-bit resume sequence number, and every
 * kind of bad input refused with a message that quotes it. Zero-copy:
 * the immediate data's fields, the descriptor's round trip and every bad
 * descriptor refused naming its field, and in the simulation every READ
 * completion reported back to the sender (its registrations dropped)
 * without stalls or credit-only ping-pong.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "btl_kawarimi_verbs_proto.h"
#include "../check.h"

/* ---- credit simulation ---------------------------------------------------- */

#define MAXQ 100000

struct msg {
	uint32_t imm;
	int data;
	int zc;		/* a zero-copy descriptor: the receiver READs */
};

struct peer {
	struct kwv_credit k;
	uint32_t posted;	/* receive buffers this peer keeps posted */
	uint32_t free_bufs;	/* posted and not yet consumed */
	long to_send;		/* data messages the application still has */
	long got;		/* data messages received */
	long sent;		/* data messages sent */
	long zc_out;		/* zero-copy frames sent, not reported read */
	long zc_sent;
	uint32_t rd_owed;	/* READs done, not reported yet */
	struct msg q[MAXQ];	/* in flight towards the other peer */
	int qh, qt;
};

static unsigned rnd_state = 12345;

static unsigned rnd(void)
{
	rnd_state = rnd_state * 1103515245u + 12345u;
	return (rnd_state >> 16) & 0x7fff;
}

static uint32_t take(struct peer *p, int credit_only, int zc)
{
	uint32_t done = p->rd_owed, c = kwv_credit_take(&p->k, credit_only);

	p->rd_owed = 0;
	return kwv_imm_encode(c, done, zc);
}

/* zc_every: every Nth data message is a zero-copy descriptor (0: none). */
static int zc_every;

static void push(struct peer *p)
{
	while (p->to_send > 0 && kwv_credit_can_data(&p->k)) {
		int zc = zc_every && p->sent % zc_every == 0;

		p->q[p->qt].imm = take(p, 0, zc);
		p->q[p->qt].zc = zc;
		p->q[p->qt++].data = 1;
		p->zc_out += zc;
		p->zc_sent += zc;
		p->sent++;
		p->to_send--;
	}
	if (kwv_credit_want_report(&p->k, p->rd_owed)) {
		p->q[p->qt].imm = take(p, 1, 0);
		p->q[p->qt].zc = 0;
		p->q[p->qt++].data = 0;
	}
}

/* The oldest message from src arrives at dst (RC keeps order). */
static int deliver(struct peer *src, struct peer *dst)
{
	struct msg m;

	if (src->qh == src->qt)
		return 0;
	m = src->q[src->qh++];
	CHECK(dst->free_bufs > 0, "RNR: a message arrived with no receive buffer posted");
	if (!dst->free_bufs)
		return -1;
	dst->free_bufs--;
	/* processed, buffer re-posted, then the returns it carries */
	dst->free_bufs++;
	CHECK(!!(m.imm & KWV_IMM_DESC) == m.zc, "descriptor flag lost in the immediate data");
	CHECK(kwv_imm_done(m.imm) <= dst->zc_out, "%u READs reported, %ld outstanding",
	      kwv_imm_done(m.imm), dst->zc_out);
	dst->zc_out -= kwv_imm_done(m.imm);
	CHECK(!kwv_credit_received(&dst->k, kwv_imm_credits(m.imm), src->posted),
	      "credit return %u rejected (credits %u, posted %u)", kwv_imm_credits(m.imm),
	      dst->k.credits, src->posted);
	dst->got += m.data;
	dst->rd_owed += m.zc;	/* the READ completes at once here */
	push(dst);
	return 1;
}

static void sim(const char *name, uint32_t ra, uint32_t rb, long na, long nb, int lag)
{
	static struct peer a, b;
	long steps = 0;

	memset(&a, 0, sizeof(a));
	memset(&b, 0, sizeof(b));
	a.posted = a.free_bufs = ra;
	b.posted = b.free_bufs = rb;
	kwv_credit_init(&a.k, rb, ra);
	kwv_credit_init(&b.k, ra, rb);
	a.to_send = na;
	b.to_send = nb;
	push(&a);
	push(&b);
	while ((a.to_send || b.to_send || a.qh != a.qt || b.qh != b.qt) && steps < 10 * MAXQ) {
		int r = (int)(rnd() % (unsigned)lag);

		/* lag > 1: messages pile up in flight in one direction */
		if (r == 0 || b.qh == b.qt) {
			if (deliver(&a, &b) < 0)
				return;
		} else if (deliver(&b, &a) < 0) {
			return;
		}
		steps++;
		if (a.qt >= MAXQ - 100 || b.qt >= MAXQ - 100)
			break;
	}
	CHECK(b.got == na && a.got == nb, "%s: stalled: A->B %ld of %ld, B->A %ld of %ld "
	      "(credits A %u B %u, owed A %u B %u)", name, b.got, na, a.got, nb, a.k.credits,
	      b.k.credits, a.k.owed, b.k.owed);
	CHECK(!a.zc_out && !b.zc_out && !a.rd_owed && !b.rd_owed,
	      "%s: zero-copy frames never reported read: A %ld B %ld (owed A %u B %u)", name,
	      a.zc_out, b.zc_out, a.rd_owed, b.rd_owed);
	/* At most one report per zero-copy frame on top: a report never
	 * causes another (no ping-pong). */
	CHECK(a.k.credit_msgs + b.k.credit_msgs <= (uint64_t)(na + nb + a.zc_sent + b.zc_sent),
	      "%s: %llu + %llu credit-only messages for %ld data messages, %ld zero-copy "
	      "(ping-pong?)", name, (unsigned long long)a.k.credit_msgs,
	      (unsigned long long)b.k.credit_msgs, na + nb, a.zc_sent + b.zc_sent);
	printf("ok %s: %ld + %ld data messages, %llu + %llu credit-only\n", name, na, nb,
	       (unsigned long long)a.k.credit_msgs, (unsigned long long)b.k.credit_msgs);
}

static void test_credit_basics(void)
{
	struct kwv_credit k;

	kwv_credit_init(&k, 4, 32);
	CHECK(k.credits == 4 && k.threshold == 8, "init: credits %u threshold %u", k.credits,
	      k.threshold);
	CHECK(kwv_credit_can_data(&k), "4 credits: data allowed");
	kwv_credit_take(&k, 0);
	kwv_credit_take(&k, 0);
	kwv_credit_take(&k, 0);
	CHECK(!kwv_credit_can_data(&k), "the last credit is kept for credit updates");
	CHECK(!kwv_credit_want_update(&k), "nothing owed: no credit-only message");
	k.owed = 8;
	CHECK(kwv_credit_want_update(&k), "owed 8 of threshold 8 with one credit: update due");
	CHECK(kwv_credit_take(&k, 1) == 8 && k.owed == 0 && k.credits == 0,
	      "a credit-only message carries what is owed");
	CHECK(!kwv_credit_want_update(&k), "no credit left: nothing can be sent");
	CHECK(!kwv_credit_received(&k, 3, 4) && k.credits == 3 && k.owed == 1,
	      "returns add credits, the message itself is owed back");
	CHECK(kwv_credit_received(&k, 2, 4), "more credits than the peer posted: refused");
	CHECK(kwv_credit_received(&k, 5, 4), "a return above the peer's posted count: refused");
	kwv_credit_init(&k, 3, 3);
	CHECK(k.threshold == 2, "smallest pool: threshold 2 (got %u)", k.threshold);
	kwv_credit_init(&k, 4, 1000);
	CHECK(k.threshold == 250, "threshold a quarter of what we posted (got %u)", k.threshold);
	CHECK(kwv_chunks(0, 100) == 1 && kwv_chunks(100, 100) == 1 && kwv_chunks(101, 100) == 2,
	      "chunk counts");
}

/* ---- private data ---------------------------------------------------------- */

static void test_pdata(void)
{
	struct kwv_pdata in = {
		.kind = KWV_PD_CONNECT, .jobid = 0x12340001, .src_vpid = 3, .dst_vpid = 7,
		.bufsize = 32768, .posted = 32, .rx_next = 0x100000005ull,
	}, out;
	unsigned char buf[64];
	char err[256];
	int n;

	n = kwv_pdata_encode(&in, buf, sizeof(buf));
	CHECK(n == KWV_PDATA_LEN, "encoded %d bytes", n);
	CHECK(kwv_pdata_encode(&in, buf, 10) == -1, "short buffer refused");
	CHECK(!kwv_pdata_decode(buf, n, KWV_PD_CONNECT, &out, err, sizeof(err)), "decode: %s", err);
	CHECK(out.jobid == in.jobid && out.src_vpid == 3 && out.dst_vpid == 7 &&
	      out.rx_next == 0x100000005ull && out.posted == 32 && out.bufsize == 32768,
	      "round trip keeps identity and the 64-bit resume point (rx_next %llx)",
	      (unsigned long long)out.rx_next);
	/* IB pads private data to the CM message size: trailing zeros are fine. */
	memset(buf + n, 0, sizeof(buf) - n);
	CHECK(!kwv_pdata_decode(buf, 56, KWV_PD_CONNECT, &out, err, sizeof(err)),
	      "padded private data accepted: %s", err);
	CHECK(kwv_pdata_decode(buf, 20, KWV_PD_CONNECT, &out, err, sizeof(err)) &&
	      strstr(err, "20 bytes"), "short: %s", err);
	CHECK(kwv_pdata_decode(NULL, 0, KWV_PD_CONNECT, &out, err, sizeof(err)) &&
	      strstr(err, "0 bytes"), "none: %s", err);
	CHECK(kwv_pdata_decode(buf, n, KWV_PD_ACCEPT, &out, err, sizeof(err)) &&
	      strstr(err, "kind 1 (connect)"), "wrong kind: %s", err);
	buf[0] ^= 1;
	CHECK(kwv_pdata_decode(buf, n, KWV_PD_CONNECT, &out, err, sizeof(err)) &&
	      strstr(err, "magic 0x4b575630"), "bad magic: %s", err);
	buf[0] ^= 1;
	in.posted = 0;
	kwv_pdata_encode(&in, buf, sizeof(buf));
	CHECK(kwv_pdata_decode(buf, n, KWV_PD_CONNECT, &out, err, sizeof(err)) &&
	      strstr(err, "0 receive buffers"), "no buffers: %s", err);
	memset(&in, 0, sizeof(in));
	in.kind = KWV_PD_REJECT;
	in.reason = KWV_REJ_QUIESCED;
	kwv_pdata_encode(&in, buf, sizeof(buf));
	CHECK(!kwv_pdata_decode(buf, n, KWV_PD_ACCEPT, &out, err, sizeof(err)) &&
	      out.kind == KWV_PD_REJECT && out.reason == KWV_REJ_QUIESCED,
	      "a reject answers a connect: %s", err);
	CHECK(!strcmp(kwv_reject_str(KWV_REJ_QUIESCED), "quiesced") &&
	      !strcmp(kwv_reject_str(99), "unknown reason"), "reject reasons");
}

/* ---- zero-copy ---------------------------------------------------------------- */

static void test_imm(void)
{
	uint32_t imm = kwv_imm_encode(65536, 5, 1);

	CHECK(kwv_imm_credits(imm) == 65536 && kwv_imm_done(imm) == 5 && (imm & KWV_IMM_DESC),
	      "immediate data round trip: %08x", imm);
	imm = kwv_imm_encode(0, KWV_IMM_DONE_MAX, 0);
	CHECK(kwv_imm_credits(imm) == 0 && kwv_imm_done(imm) == KWV_IMM_DONE_MAX &&
	      !(imm & KWV_IMM_DESC), "largest done count: %08x", imm);
}

static void test_zc(void)
{
	static const unsigned char inl[40] = "ob1 match header and so on";
	struct kwv_zc in = { .nseg = 2, .inline_len = sizeof(inl), .inline_data = inl,
			     .seg = { { 0x7f0000001000ull, 0x1234, 262144 },
				      { 0x7f0000100000ull, 0x99, 7 } } }, out;
	unsigned char buf[KWV_ZC_MAX_LEN + 16];
	uint32_t total = sizeof(inl) + 262144 + 7;
	char err[256];
	int n;

	n = kwv_zc_encode(&in, buf, sizeof(buf));
	CHECK(n == KWV_ZC_FIXED + 2 * KWV_ZC_SEG_LEN + (int)sizeof(inl), "encoded %d bytes", n);
	CHECK(kwv_zc_encode(&in, buf, (size_t)n - 1) == -1, "short buffer refused");
	CHECK(!kwv_zc_decode(buf, (size_t)n, total, &out, err, sizeof(err)), "decode: %s", err);
	CHECK(out.nseg == 2 && out.inline_len == sizeof(inl) &&
	      !memcmp(out.inline_data, inl, sizeof(inl)) && out.seg[0].addr == in.seg[0].addr &&
	      out.seg[0].rkey == 0x1234 && out.seg[0].len == 262144 && out.seg[1].len == 7 &&
	      out.seg[1].addr == in.seg[1].addr && out.seg[1].rkey == 0x99,
	      "descriptor round trip");
	CHECK(kwv_zc_decode(buf, (size_t)n, total + 1, &out, err, sizeof(err)) &&
	      strstr(err, "frame header's len is"), "length mismatch: %s", err);
	CHECK(kwv_zc_decode(buf, (size_t)n - 1, total, &out, err, sizeof(err)) &&
	      strstr(err, "nseg 2 and inline_len 40"), "truncated: %s", err);
	CHECK(kwv_zc_decode(buf, 5, total, &out, err, sizeof(err)) && strstr(err, "5 bytes"),
	      "shorter than the fixed part: %s", err);
	CHECK(kwv_zc_decode(NULL, 0, total, &out, err, sizeof(err)) && strstr(err, "0 bytes"),
	      "none: %s", err);
	buf[0] ^= 1;
	CHECK(kwv_zc_decode(buf, (size_t)n, total, &out, err, sizeof(err)) &&
	      strstr(err, "field magic is 0x4b575a42"), "bad magic: %s", err);
	buf[0] ^= 1;
	buf[4] = 4;
	CHECK(kwv_zc_decode(buf, (size_t)n, total, &out, err, sizeof(err)) &&
	      strstr(err, "field nseg is 4"), "too many segments: %s", err);
	buf[4] = 0;
	CHECK(kwv_zc_decode(buf, (size_t)n, total, &out, err, sizeof(err)) &&
	      strstr(err, "field nseg is 0"), "no segment: %s", err);
	buf[4] = 2;
	buf[6] = 0x01;
	buf[7] = 0x01;
	CHECK(kwv_zc_decode(buf, (size_t)n, total, &out, err, sizeof(err)) &&
	      strstr(err, "field inline_len is 257"), "inline too long: %s", err);
	in.seg[1].len = 0;
	n = kwv_zc_encode(&in, buf, sizeof(buf));
	CHECK(kwv_zc_decode(buf, (size_t)n, total - 7, &out, err, sizeof(err)) &&
	      strstr(err, "segment 1: field len is 0"), "empty segment: %s", err);
	in.seg[1].len = 7;
	in.seg[1].addr = UINT64_MAX - 3;
	n = kwv_zc_encode(&in, buf, sizeof(buf));
	CHECK(kwv_zc_decode(buf, (size_t)n, total, &out, err, sizeof(err)) &&
	      strstr(err, "wrapping"), "address wraps: %s", err);
	in.nseg = 4;
	CHECK(kwv_zc_encode(&in, buf, sizeof(buf)) == -1, "encode refuses 4 segments");
}

static void test_pdata_rd(void)
{
	struct kwv_pdata in = {
		.kind = KWV_PD_ACCEPT, .bufsize = 32768, .posted = 32, .rd_depth = 16,
	}, out;
	unsigned char buf[64];
	char err[256];

	kwv_pdata_encode(&in, buf, sizeof(buf));
	CHECK(!kwv_pdata_decode(buf, KWV_PDATA_LEN, KWV_PD_ACCEPT, &out, err, sizeof(err)) &&
	      out.rd_depth == 16, "rd_depth round trip: %s", err);
	in.rd_depth = KWV_RD_DEPTH_MAX + 1;
	kwv_pdata_encode(&in, buf, sizeof(buf));
	CHECK(kwv_pdata_decode(buf, KWV_PDATA_LEN, KWV_PD_ACCEPT, &out, err, sizeof(err)) &&
	      strstr(err, "field rd_depth is 17"), "rd_depth too large: %s", err);
	/* a version 1 peer (36 bytes, no rd_depth) is refused by version */
	buf[4] = 1;
	CHECK(kwv_pdata_decode(buf, KWV_PDATA_LEN, KWV_PD_ACCEPT, &out, err, sizeof(err)) &&
	      strstr(err, "version 1, expected"), "old version: %s", err);
}

int main(void)
{
	test_credit_basics();
	test_pdata();
	test_imm();
	test_zc();
	test_pdata_rd();
	sim("one-way, 32/32 buffers", 32, 32, 20000, 0, 2);
	sim("one-way, tiny pools 3/3", 3, 3, 20000, 0, 2);
	sim("two-way, 32/16 buffers", 32, 16, 15000, 15000, 2);
	sim("one-way, replies lag (4:1)", 32, 32, 20000, 0, 5);
	sim("two-way, tiny pools 3/5, lag", 3, 5, 10000, 7000, 3);
	sim("two-way, 4/4, replies lag (6:1)", 4, 4, 5000, 5000, 7);
	/* zero-copy: READ completions reported back with the credits */
	zc_every = 1;
	sim("zero-copy only, one-way, 32/32", 32, 32, 20000, 0, 2);
	sim("zero-copy only, one-way, tiny pools 3/3, lag", 3, 3, 20000, 0, 5);
	sim("zero-copy only, two-way, 3/5, lag", 3, 5, 10000, 7000, 3);
	zc_every = 3;
	sim("every 3rd zero-copy, two-way, 32/16", 32, 16, 15000, 15000, 2);
	sim("every 3rd zero-copy, two-way, 4/4, lag (6:1)", 4, 4, 5000, 5000, 7);
	if (failures) {
		printf("%d check(s) failed\n", failures);
		return 1;
	}
	printf("all checks passed\n");
	return 0;
}
