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
	KW_FRAME_TYPE_MAX
};

/* flags: on DATA, the sender waits for this frame's ack (ob1 has a
 * completion callback pending), so it is acknowledged at once; other
 * frames are acknowledged on the next frame going back, or after
 * KW_ACK_DELAY_MS / KW_ACK_EVERY frames. On ACK: "acknowledge everything
 * now" (the sender drains for a quiesce). */
#define KW_FLAG_ACK_NOW 0x1
#define KW_ACK_DELAY_MS 2
#define KW_ACK_EVERY 32

struct kw_hdr {
	uint8_t type;
	uint8_t tag;
	uint16_t flags;
	uint32_t len;		/* payload bytes after the header */
	uint64_t seq;		/* DATA only */
	uint64_t ack;		/* next sequence number the sender expects */
};

_Static_assert(sizeof(struct kw_hdr) == 24, "wire header must be 24 bytes");

/* HELLO / HELLO_ACK payload: this, then the sender's address list
 * (kw_addrs_encode). */
#define KW_HELLO_MAGIC 0x4b57484cu	/* "KWHL" */
#define KW_PROTO_VERSION 1

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
 * wrong with it (for the error message). max_data: largest DATA payload. */
const char *kw_hdr_check(const struct kw_hdr *h, size_t max_data);

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
