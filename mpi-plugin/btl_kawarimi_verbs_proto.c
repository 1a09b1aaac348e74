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
	memset(p, 0, sizeof(*p));
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
