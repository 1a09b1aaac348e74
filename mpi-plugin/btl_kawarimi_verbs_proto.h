/*
 * kawarimi BTL, verbs path: the pure logic (no libibverbs, no Open MPI),
 * so tests/verbs can check it without a device.
 *
 * Credits. Every message on a verbs connection (a chunk of a frame, or a
 * credit-only message) consumes one receive buffer the peer has posted for
 * us. The peer tells us how many it posted (private data of the connect /
 * accept) and gives buffers back, once it has re-posted them, in the
 * immediate data of its own messages. So a sender never sends into a
 * missing receive buffer (no RNR, which the QP treats as fatal: it is
 * created with rnr_retry_count 0).
 *
 * Deadlock freedom: data may only use a credit while at least one more is
 * left (KWV_RESERVE); that last one is kept for a credit-only message. A
 * credit-only message is sent when the returns owed reach the threshold.
 * If a sender is stuck (one credit left), its peer has received at least
 * (posted - 1) messages it has not returned, which is >= the threshold,
 * so the peer sends a credit-only message with its reserved credit; and a
 * credit-only message makes the receiver owe only one return (below the
 * threshold, which is at least 2), so two idle peers never ping-pong them.
 * Both need at least KWV_MIN_POSTED receive buffers per connection.
 */
#ifndef BTL_KAWARIMI_VERBS_PROTO_H
#define BTL_KAWARIMI_VERBS_PROTO_H

#include <stddef.h>
#include <stdint.h>

#define KWV_RESERVE 1
#define KWV_MIN_POSTED 3

struct kwv_credit {
	uint32_t credits;	/* peer receive buffers we may consume */
	uint32_t owed;		/* buffers we re-posted and not yet returned */
	uint32_t threshold;	/* owed at which a credit-only message goes */
	uint64_t data_msgs, credit_msgs;
};

/* posted: receive buffers the peer posted (its private data). */
void kwv_credit_init(struct kwv_credit *k, uint32_t posted, uint32_t my_posted);
/* May a data chunk go now? */
int kwv_credit_can_data(const struct kwv_credit *k);
/* Is a credit-only message due (and possible)? */
int kwv_credit_want_update(const struct kwv_credit *k);
/* Is a credit-only message due, counting READ completions to report
 * (rd_owed)? Those go like data, never with the reserved credit: the
 * deadlock argument above stays as it is, and the message makes its
 * receiver owe one return only (no ping-pong). */
int kwv_credit_want_report(const struct kwv_credit *k, uint32_t rd_owed);
/* Account one message being posted; returns the immediate value to put in
 * it (the returns it carries). */
uint32_t kwv_credit_take(struct kwv_credit *k, int credit_only);
/* A message from the peer arrived carrying imm returned credits; its
 * receive buffer has been re-posted. Returns -1 when the peer returns more
 * than could be outstanding (protocol error). */
int kwv_credit_received(struct kwv_credit *k, uint32_t imm, uint32_t peer_posted);

/* Number of chunks a frame of len bytes takes with chunk size bufsize. */
static inline uint32_t kwv_chunks(size_t len, size_t bufsize)
{
	return len ? (uint32_t)((len + bufsize - 1) / bufsize) : 1;
}

/*
 * Private data of rdma_connect / rdma_accept (at most 56 bytes: the IB CM
 * REQ carries 92 of which rdma_cm's header takes 36). Identity of the
 * connection and the receiver's resume point, checked before a QP is
 * accepted, plus the receive buffers posted (the initial credits).
 */
#define KWV_PDATA_MAGIC 0x4b575631u	/* "KWV1" */
/* 2: the immediate data is split (kwv_imm_*), zero-copy descriptors,
 * rd_depth in the private data. */
#define KWV_PDATA_VERSION 2
/* Most RDMA READs one side asks to have in flight (rd_depth). */
#define KWV_RD_DEPTH_MAX 16

enum kwv_pdata_kind {
	KWV_PD_CONNECT = 1,	/* initiator -> acceptor */
	KWV_PD_ACCEPT,		/* acceptor -> initiator */
	KWV_PD_REJECT,		/* acceptor -> initiator, with a reason */
};

enum kwv_reject {
	KWV_REJ_NONE = 0,
	KWV_REJ_NOT_ME,		/* wrong job or rank: stale address */
	KWV_REJ_QUIESCED,	/* the acceptor is quiesced */
	KWV_REJ_RESOURCES,	/* could not set up the QP */
	KWV_REJ_BAD,		/* private data unreadable */
};

struct kwv_pdata {
	uint32_t magic;
	uint16_t version;
	uint8_t kind;
	uint8_t reason;		/* enum kwv_reject */
	uint32_t jobid;
	uint32_t src_vpid;
	uint32_t dst_vpid;
	uint32_t bufsize;	/* bytes per receive buffer */
	uint32_t posted;	/* receive buffers posted: initial credits */
	uint64_t rx_next;	/* sender's next expected sequence number */
	uint32_t rd_depth;	/* RDMA READs it serves and issues; 0: no zero-copy */
};

#define KWV_PDATA_LEN 40
_Static_assert(KWV_PDATA_LEN <= 56, "private data must fit an IB CM REQ");

int kwv_pdata_encode(const struct kwv_pdata *p, void *buf, size_t len);
/* Returns 0, or -1 with err saying what is wrong (quoting values). */
int kwv_pdata_decode(const void *buf, size_t len, enum kwv_pdata_kind want,
		     struct kwv_pdata *p, char *err, size_t errlen);
const char *kwv_reject_str(unsigned reason);

/*
 * Immediate data (protocol 2): the credits handed back (bits 0..16, at most
 * 65536 buffers are posted), the zero-copy frames whose READs completed
 * since the last message (bits 17..30: the sender may drop their
 * registrations), and bit 31: this message is a zero-copy descriptor.
 */
#define KWV_IMM_CREDIT_BITS 17
#define KWV_IMM_DONE_MAX ((1u << 14) - 1)
#define KWV_IMM_DESC (1u << 31)

static inline uint32_t kwv_imm_encode(uint32_t credits, uint32_t done, int desc)
{
	return (credits & ((1u << KWV_IMM_CREDIT_BITS) - 1)) |
	       (done & KWV_IMM_DONE_MAX) << KWV_IMM_CREDIT_BITS | (desc ? KWV_IMM_DESC : 0);
}

static inline uint32_t kwv_imm_credits(uint32_t imm)
{
	return imm & ((1u << KWV_IMM_CREDIT_BITS) - 1);
}

static inline uint32_t kwv_imm_done(uint32_t imm)
{
	return (imm >> KWV_IMM_CREDIT_BITS) & KWV_IMM_DONE_MAX;
}

/*
 * Zero-copy descriptor: a message with KWV_IMM_DESC carries the frame's
 * 24-byte header, then this: the first inline_len payload bytes follow the
 * segment list, the rest of the payload is in nseg pieces of the sender's
 * registered memory, in order, which the receiver RDMA-READs.
 */
#define KWV_ZC_MAGIC 0x4b575a43u	/* "KWZC" */
#define KWV_ZC_MAX_SEGS 3
#define KWV_ZC_INLINE_MAX 256

struct kwv_zc_seg {
	uint64_t addr;
	uint32_t rkey;
	uint32_t len;
};

struct kwv_zc {
	uint32_t nseg;
	uint32_t inline_len;
	const unsigned char *inline_data;	/* decode: points into the buffer */
	struct kwv_zc_seg seg[KWV_ZC_MAX_SEGS];
};

#define KWV_ZC_FIXED 8
#define KWV_ZC_SEG_LEN 16
#define KWV_ZC_MAX_LEN (KWV_ZC_FIXED + KWV_ZC_MAX_SEGS * KWV_ZC_SEG_LEN + KWV_ZC_INLINE_MAX)

/* Writes the descriptor (after the frame header) into buf; returns its
 * length, or -1 when it does not fit or is malformed. */
int kwv_zc_encode(const struct kwv_zc *z, void *buf, size_t len);
/* Parses what follows the frame header in a descriptor message of len
 * bytes, for a frame of frame_len payload bytes. Returns 0, or -1 with err
 * naming the field and quoting its value (network input). */
int kwv_zc_decode(const void *buf, size_t len, uint32_t frame_len, struct kwv_zc *z,
		  char *err, size_t errlen);

#endif
