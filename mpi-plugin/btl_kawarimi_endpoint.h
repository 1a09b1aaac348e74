/*
 * kawarimi BTL: endpoint = one peer process, with the reliability state
 * that outlives any single connection.
 *
 * tx queue: every DATA frame ob1 gave us, in sequence order, until the
 * peer acknowledges it. tx_cursor is the first frame not yet handed to the
 * current connection; after a reconnect it goes back to the head, so
 * exactly the unacknowledged frames are sent again. The receiver keeps
 * rx_next (next sequence expected) and drops anything below it.
 */
#ifndef BTL_KAWARIMI_ENDPOINT_H
#define BTL_KAWARIMI_ENDPOINT_H

#include "btl_kawarimi.h"

struct mca_btl_base_endpoint_t {
	uint32_t vpid;
	opal_proc_t *proc;		/* NULL until ob1 adds the peer */
	struct kw_addrs peer_addrs;	/* last known (modex, then HELLO) */
	int have_addrs;

	kw_frag_t *tx_head, *tx_tail, *tx_cursor;
	uint64_t tx_seq;		/* next sequence number to assign */
	uint64_t rx_next;		/* next sequence number expected */
	uint64_t ack_sent;		/* last ack value put on the wire */
	int ack_urgent;			/* the peer waits for our ack */
	int ack_req;			/* ask the peer to ack at once (drain) */
	uint32_t rx_unacked;		/* frames received since our last ack */
	uint64_t ack_due_ms;		/* delayed ack deadline, 0: none */
	int ack_listed;			/* on kw.ack_list */
	struct mca_btl_base_endpoint_t *ack_next;
	uint64_t tx_frames, tx_bytes_queued;

	struct kw_conn *conn;		/* current connection or NULL */

	int draining;			/* no new DATA on the wire */
	int fin_sent, fin_rcvd;
	int peer_quiesced;		/* peer drained us (its FIN) or refused us */
	int peer_gone;			/* peer sent BYE (finalized) */
	int was_up;			/* connected at the last quiesce */
	int want_up;			/* resume: reconnect even without data */
	int heal;			/* broke while up: reconnect even without data */
	int upgraded;			/* resume cycle: tried the best pair */

	/* Off the best pair while running (an unannounced fabric flap put
	 * us on a slower one): a bare TCP connect to the best pair tells when
	 * it is back, without touching the connection in use. */
	int probe_fd;			/* -1: no probe in flight */
	uint64_t probe_deadline_ms;
	uint64_t probe_next_ms;
	int probe_backoff_ms;

	struct kw_cand cand[KW_MAX_CAND];
	int ncand, cand_idx;
	uint64_t next_attempt_ms;
	uint64_t broken_since_ms;	/* 0: not waiting to reconnect */
	int backoff_ms;
	int failed;			/* gave up: error reported */

	/* GET_REQs sent and not answered yet, oldest first: each GET_REPLY
	 * answers the head (btl_kawarimi_rdma.c). */
	struct kw_get *get_head, *get_tail;

	uint64_t drained_frames;	/* frames acked during the last quiesce */
	uint64_t dup_frames;
	uint64_t reconnects;
};

/* Does the endpoint hold frames the peer has not acknowledged? */
static inline int kw_ep_has_data(const struct mca_btl_base_endpoint_t *ep)
{
	return ep->tx_head != NULL;
}

#endif
