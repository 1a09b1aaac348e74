/*
 * kawarimi BTL: the frame format every path carries, and its checks.
 *
 * Every frame on a path connection starts with struct kw_hdr. DATA frames
 * carry a per-endpoint sequence number; every frame carries the sender's
 * cumulative acknowledgment (the next sequence number it expects), so acks
 * ride on data in both directions. No Open MPI dependency: the fuzz
 * harness links this alone.
 */
#ifndef BTL_KAWARIMI_WIRE_H
#define BTL_KAWARIMI_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include "btl_kawarimi_proc.h"

/* Largest control payload (HELLO with a full address list). */
#define KW_CTRL_MAX_PAYLOAD 1024

enum kw_frame_type {
	KW_FRAME_DATA = 1,	/* sequenced payload for ob1 (tag = ob1 tag) */
	KW_FRAME_ACK,		/* only the cumulative ack */
	KW_FRAME_FIN,		/* drain: no more DATA until reconnect */
	KW_FRAME_BYE,		/* the sender finalizes: do not reconnect */
	KW_FRAME_HELLO,		/* first frame of a connection (initiator) */
	KW_FRAME_HELLO_ACK,	/* answer to HELLO (acceptor) */
	KW_FRAME_GET_REQ,	/* sequenced: read this registered memory of yours */
	KW_FRAME_GET_REPLY,	/* sequenced: the bytes of our oldest GET_REQ */
	KW_FRAME_TYPE_MAX
};

/* flags: on DATA, the sender waits for this frame's ack (ob1 has a
 * completion callback pending), so it is acknowledged at once; other
 * frames are acknowledged on the next frame going back, or after
 * KW_ACK_DELAY_MS / KW_ACK_EVERY frames. On ACK: "acknowledge everything
 * now" (the sender drains for a quiesce). */
#define KW_FLAG_ACK_NOW 0x1
/* On GET_REPLY: the request was refused (no payload); the reader falls
 * back to send/receive for that region. */
#define KW_FLAG_GET_ERR 0x2

/*
 * A GET_REPLY's tag is a pad: that many zero bytes open the payload, before
 * the data. The sender picks it so that the data starts as far into its
 * sendmsg, modulo 64, as the user's buffer lies from a 64-byte boundary:
 * on loopback TCP the kernel's copies of a large message ran 2-3x slower
 * at some buffer offsets than at others, for the stock tcp BTL's frames as
 * for ours, and with the pad at none (docs/performance.md).
 */
#define KW_GET_PAD_MAX 64
#define KW_ACK_DELAY_MS 2
#define KW_ACK_EVERY 32

struct kw_hdr {
	uint8_t type;
	uint8_t tag;		/* DATA: ob1's tag; GET_REPLY: pad bytes */
	uint16_t flags;
	uint32_t len;		/* payload bytes after the header */
	uint64_t seq;		/* DATA only */
	uint64_t ack;		/* next sequence number the sender expects */
};

_Static_assert(sizeof(struct kw_hdr) == 24, "wire header must be 24 bytes");

/* HELLO / HELLO_ACK payload: this, then the sender's address list
 * (kw_addrs_encode). */
#define KW_HELLO_MAGIC 0x4b57484cu	/* "KWHL" */
#define KW_PROTO_VERSION 2	/* 2: GET_REQ / GET_REPLY */

/*
 * GET_REQ payload: "send me len bytes at addr, inside the memory you
 * registered under key" (ob1's RDMA-read protocol, emulated: the reply
 * comes back as one GET_REPLY frame that the reader's path receives
 * straight into the destination buffer). Replies go back in the order of
 * the requests, so a GET_REPLY needs no id: it answers the reader's
 * oldest outstanding GET_REQ to that peer.
 */
struct kw_get_req {
	uint64_t key;
	uint64_t addr;
	uint64_t len;
};

struct kw_hello {
	uint32_t magic;
	uint32_t version;
	uint32_t jobid;
	uint32_t src_vpid;
	uint32_t dst_vpid;
	uint32_t status;
	uint64_t rx_next;
};

/* Checks a received header; returns NULL or a static text saying what is
 * wrong with it (for the error message). max_data: largest DATA payload;
 * max_get: largest GET_REPLY payload. */
const char *kw_hdr_check(const struct kw_hdr *h, size_t max_data, size_t max_get);

/* Parses a GET_REQ payload. Returns 0, or -1 with err saying what is
 * wrong (values quoted). Whether the memory may be read is the caller's
 * question (the registration table). */
int kw_get_req_parse(const void *buf, size_t len, struct kw_get_req *q, size_t max_get,
		     char *err, size_t errlen);

/* Parses a HELLO/HELLO_ACK payload. Returns 0, or -1 with err saying what
 * is wrong (values quoted). */
int kw_hello_parse(const void *buf, size_t len, struct kw_hello *h, struct kw_addrs *addrs,
		   char *err, size_t errlen);

/* Checks the sender's rank of a parsed HELLO/HELLO_ACK from our own job
 * against the job's size: the rank indexes the endpoint table, so a
 * forged one must not get that far. Returns 0, or -1 with err quoting
 * the rank and the size. */
int kw_hello_src_check(const struct kw_hello *h, uint32_t job_size, char *err, size_t errlen);

#endif
