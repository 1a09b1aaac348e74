/* kawarimi BTL, verbs path: credits and private data (pure logic). */
#include "btl_kawarimi_verbs_proto.h"

#include <stdio.h>
#include <string.h>

void kwv_credit_init(struct kwv_credit *k, uint32_t posted, uint32_t my_posted)
{
	memset(k, 0, sizeof(*k));
	k->credits = posted;
	/* A quarter of what we posted: few credit-only messages. At least 2,
	 * so that the one return a credit-only message causes never triggers
	 * another (no ping-pong of them), and at most my_posted - KWV_RESERVE,
	 * which the deadlock argument needs: hence at least 3 buffers. */
	k->threshold = my_posted / 4;
	if (k->threshold < 2)
		k->threshold = 2;
	if (my_posted > KWV_RESERVE && k->threshold > my_posted - KWV_RESERVE)
		k->threshold = my_posted - KWV_RESERVE;
}

int kwv_credit_can_data(const struct kwv_credit *k)
{
	return k->credits > KWV_RESERVE;
}

int kwv_credit_want_update(const struct kwv_credit *k)
{
	return k->owed >= k->threshold && k->credits > 0;
}

int kwv_credit_want_report(const struct kwv_credit *k, uint32_t rd_owed)
{
	return kwv_credit_want_update(k) || (rd_owed && kwv_credit_can_data(k));
}

uint32_t kwv_credit_take(struct kwv_credit *k, int credit_only)
{
	uint32_t imm = k->owed;

	k->credits--;
	k->owed = 0;
	if (credit_only)
		k->credit_msgs++;
	else
		k->data_msgs++;
	return imm;
}

int kwv_credit_received(struct kwv_credit *k, uint32_t imm, uint32_t peer_posted)
{
	if (imm > peer_posted || k->credits + imm > peer_posted)
		return -1;
	k->credits += imm;
	k->owed++;
	return 0;
}

struct wire {
	uint32_t magic;
	uint16_t version;
	uint8_t kind;
	uint8_t reason;
	uint32_t jobid, src_vpid, dst_vpid, bufsize, posted;
	uint32_t rx_lo, rx_hi;	/* 4-byte aligned: the struct has no padding */
	uint32_t rd_depth;
};

_Static_assert(sizeof(struct wire) == KWV_PDATA_LEN, "private data layout");

int kwv_pdata_encode(const struct kwv_pdata *p, void *buf, size_t len)
{
	struct wire w = {
		.magic = KWV_PDATA_MAGIC, .version = KWV_PDATA_VERSION,
		.kind = p->kind, .reason = p->reason, .jobid = p->jobid,
		.src_vpid = p->src_vpid, .dst_vpid = p->dst_vpid,
		.bufsize = p->bufsize, .posted = p->posted,
		.rx_lo = (uint32_t)p->rx_next, .rx_hi = (uint32_t)(p->rx_next >> 32),
		.rd_depth = p->rd_depth,
	};

	if (len < sizeof(w))
		return -1;
	memcpy(buf, &w, sizeof(w));
	return (int)sizeof(w);
}

static const char *kind_str(unsigned k)
{
	switch (k) {
	case KWV_PD_CONNECT: return "connect";
	case KWV_PD_ACCEPT: return "accept";
	case KWV_PD_REJECT: return "reject";
	}
	return "unknown";
}

int kwv_pdata_decode(const void *buf, size_t len, enum kwv_pdata_kind want,
		     struct kwv_pdata *p, char *err, size_t errlen)
{
	struct wire w;

	/* Transports may pad private data with zeros: only a short one is bad. */
	if (!buf || len < sizeof(w)) {
		snprintf(err, errlen, "verbs private data of %zu bytes, expected at least %zu "
			 "(a peer that is not a kawarimi rank?)", buf ? len : 0, sizeof(w));
		return -1;
	}
	memcpy(&w, buf, sizeof(w));
	if (w.magic != KWV_PDATA_MAGIC || w.version != KWV_PDATA_VERSION) {
		snprintf(err, errlen, "verbs private data magic 0x%08x version %u, expected "
			 "0x%08x version %u", w.magic, w.version, KWV_PDATA_MAGIC,
			 KWV_PDATA_VERSION);
		return -1;
	}
	if (w.kind != want && !(want == KWV_PD_ACCEPT && w.kind == KWV_PD_REJECT)) {
		snprintf(err, errlen, "verbs private data of kind %u (%s) where %s was expected",
			 w.kind, kind_str(w.kind), kind_str(want));
		return -1;
	}
	if (w.kind != KWV_PD_REJECT &&
	    (w.bufsize < 64 || w.bufsize > (1u << 24) || !w.posted || w.posted > 65536)) {
		snprintf(err, errlen, "verbs private data announces %u receive buffers of %u "
			 "bytes (expected 1..65536 of 64 B..16 MiB)", w.posted, w.bufsize);
		return -1;
	}
	if (w.kind != KWV_PD_REJECT && w.rd_depth > KWV_RD_DEPTH_MAX) {
		snprintf(err, errlen, "verbs private data field rd_depth is %u (expected "
			 "0..%u)", w.rd_depth, KWV_RD_DEPTH_MAX);
		return -1;
	}
	memset(p, 0, sizeof(*p));
	p->rd_depth = w.rd_depth;
	p->magic = w.magic;
	p->version = w.version;
	p->kind = w.kind;
	p->reason = w.reason;
	p->jobid = w.jobid;
	p->src_vpid = w.src_vpid;
	p->dst_vpid = w.dst_vpid;
	p->bufsize = w.bufsize;
	p->posted = w.posted;
	p->rx_next = (uint64_t)w.rx_hi << 32 | w.rx_lo;
	return 0;
}

const char *kwv_reject_str(unsigned reason)
{
	static const char *names[] = { "none", "not this job or rank (stale address)",
				       "quiesced", "no resources for a QP",
				       "unreadable private data" };

	return reason < sizeof(names) / sizeof(names[0]) ? names[reason] : "unknown reason";
}

struct zc_wire {
	uint32_t magic;
	uint16_t nseg;
	uint16_t inline_len;
};

_Static_assert(sizeof(struct zc_wire) == KWV_ZC_FIXED, "descriptor layout");

int kwv_zc_encode(const struct kwv_zc *z, void *buf, size_t len)
{
	struct zc_wire w = { .magic = KWV_ZC_MAGIC, .nseg = (uint16_t)z->nseg,
			     .inline_len = (uint16_t)z->inline_len };
	unsigned char *o = buf;
	size_t need = KWV_ZC_FIXED + (size_t)z->nseg * KWV_ZC_SEG_LEN + z->inline_len;
	uint32_t i;

	if (!z->nseg || z->nseg > KWV_ZC_MAX_SEGS || z->inline_len > KWV_ZC_INLINE_MAX ||
	    len < need)
		return -1;
	memcpy(o, &w, sizeof(w));
	o += sizeof(w);
	for (i = 0; i < z->nseg; i++) {
		memcpy(o, &z->seg[i].addr, 8);
		memcpy(o + 8, &z->seg[i].rkey, 4);
		memcpy(o + 12, &z->seg[i].len, 4);
		o += KWV_ZC_SEG_LEN;
	}
	if (z->inline_len)
		memcpy(o, z->inline_data, z->inline_len);
	return (int)need;
}

int kwv_zc_decode(const void *buf, size_t len, uint32_t frame_len, struct kwv_zc *z,
		  char *err, size_t errlen)
{
	const unsigned char *in = buf;
	struct zc_wire w;
	uint64_t total;
	uint32_t i;

	if (!buf || len < sizeof(w)) {
		snprintf(err, errlen, "zero-copy descriptor of %zu bytes, expected at least %d",
			 buf ? len : 0, KWV_ZC_FIXED);
		return -1;
	}
	memcpy(&w, in, sizeof(w));
	if (w.magic != KWV_ZC_MAGIC) {
		snprintf(err, errlen, "zero-copy descriptor field magic is 0x%08x, expected "
			 "0x%08x", w.magic, KWV_ZC_MAGIC);
		return -1;
	}
	if (!w.nseg || w.nseg > KWV_ZC_MAX_SEGS) {
		snprintf(err, errlen, "zero-copy descriptor field nseg is %u, expected 1..%d",
			 w.nseg, KWV_ZC_MAX_SEGS);
		return -1;
	}
	if (w.inline_len > KWV_ZC_INLINE_MAX) {
		snprintf(err, errlen, "zero-copy descriptor field inline_len is %u, expected "
			 "0..%d", w.inline_len, KWV_ZC_INLINE_MAX);
		return -1;
	}
	if (len != KWV_ZC_FIXED + (size_t)w.nseg * KWV_ZC_SEG_LEN + w.inline_len) {
		snprintf(err, errlen, "zero-copy descriptor is %zu bytes, but its nseg %u and "
			 "inline_len %u make %zu", len, w.nseg, w.inline_len,
			 KWV_ZC_FIXED + (size_t)w.nseg * KWV_ZC_SEG_LEN + w.inline_len);
		return -1;
	}
	memset(z, 0, sizeof(*z));
	z->nseg = w.nseg;
	z->inline_len = w.inline_len;
	total = w.inline_len;
	in += sizeof(w);
	for (i = 0; i < w.nseg; i++, in += KWV_ZC_SEG_LEN) {
		struct kwv_zc_seg *s = &z->seg[i];

		memcpy(&s->addr, in, 8);
		memcpy(&s->rkey, in + 8, 4);
		memcpy(&s->len, in + 12, 4);
		if (!s->len || s->addr + s->len < s->addr) {
			snprintf(err, errlen, "zero-copy descriptor segment %u: field len is %u "
				 "at addr 0x%llx (empty or wrapping around)", i, s->len,
				 (unsigned long long)s->addr);
			return -1;
		}
		total += s->len;
	}
	z->inline_data = in;
	if (total != frame_len) {
		snprintf(err, errlen, "zero-copy descriptor covers %llu bytes (inline_len %u + "
			 "segments), but the frame header's len is %u",
			 (unsigned long long)total, w.inline_len, frame_len);
		return -1;
	}
	return 0;
}
