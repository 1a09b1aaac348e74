/*
 * kawarimi BTL: the path abstraction.
 *
 * A path is how one endpoint moves frames to one peer over one fabric.
 * Everything that makes the transport reliable and suspendable (sequence
 * numbers, cumulative acks, resend after reconnect, duplicate drop, the FIN
 * drain) lives above this interface in btl_kawarimi_endpoint.c, so the
 * verbs path (issue 7) only has to move frames: TCP today
 * (btl_kawarimi_tcp.c), an RC QP through librdmacm later.
 *
 * Contract:
 * - All calls happen with the component lock held.
 * - send() takes one whole frame as an iovec (header first). It returns 0
 *   once the path owns the frame (written, or partly written and finished
 *   later by progress()), -EAGAIN if the path cannot take a frame now
 *   (retry after the next progress()), or a negative errno when the
 *   connection is broken. The frame's memory stays valid until the frame is
 *   acknowledged or the connection is closed, so a path may reference it.
 * - progress() is called with the poll events of the connection; it
 *   completes pending output and delivers every complete incoming frame
 *   through kw_conn_frame_in(). A negative return means the connection is
 *   broken (the caller closes it).
 * - close() tears the connection down at once and frees it.
 * - quiesce() drops every fabric resource the path holds outside
 *   connections once all of them are closed (verbs: PD, CQs, the device);
 *   resume() takes them again. TCP holds no fabric resource and keeps its
 *   listeners through the quiesce (a quiesced rank refuses connections at
 *   the HELLO step instead).
 * - listen() at init binds the path's listeners to the addresses of local
 *   (never the wildcard) on port (0: any) and sets local->port; resume()
 *   gets the re-read list, moves the listeners to its addresses before the
 *   list is published and drops from it any address it cannot listen on.
 *   release() at finalize.
 */
#ifndef BTL_KAWARIMI_PATH_H
#define BTL_KAWARIMI_PATH_H

#include <poll.h>
#include <stdint.h>
#include <sys/uio.h>

#include "btl_kawarimi_proc.h"
#include "btl_kawarimi_wire.h"


struct kw_conn;
struct kw_rfrag;
struct kw_hdr;

enum kw_conn_state {
	KW_CONN_CONNECTING,	/* transport connect in progress */
	KW_CONN_HELLO_SENT,	/* initiator: waiting for HELLO_ACK */
	KW_CONN_HELLO_WAIT,	/* acceptor: waiting for HELLO */
	KW_CONN_UP,
	KW_CONN_REJECTING,	/* acceptor: sent a refusal, closing once flushed */
};

struct kw_path_ops {
	const char *name;
	int (*listen)(struct kw_addrs *local, uint16_t port, char *err, size_t errlen);
	void (*release)(void);
	void (*quiesce)(void);
	int (*resume)(struct kw_addrs *local, char *err, size_t errlen);
	int (*listen_fd)(void);
	struct kw_conn *(*accept)(void);
	struct kw_conn *(*connect)(const struct kw_cand *cand, int *err);
	int (*connect_done)(struct kw_conn *c);	/* 0, -EINPROGRESS or -errno */
	int (*send)(struct kw_conn *c, const struct iovec *iov, int cnt);
	int (*idle)(const struct kw_conn *c);
	void (*poll_events)(const struct kw_conn *c, struct pollfd *p);
	int (*progress)(struct kw_conn *c, short revents);
	void (*close)(struct kw_conn *c);
};

struct kw_conn {
	const struct kw_path_ops *ops;
	struct mca_btl_base_endpoint_t *ep;	/* NULL until HELLO */
	struct kw_conn *next;			/* component list */
	enum kw_conn_state state;
	int initiator;
	struct kw_cand cand;			/* addresses used */
	uint64_t deadline_ms;			/* connect/handshake deadline */
	uint64_t up_ms;				/* when it became UP */
	uint64_t frames_in, frames_out;
	/* Set instead of freeing while a path call may be on the stack; the
	 * network thread destroys the connection at the end of its round. */
	int close_me;
	/* Header and payload of the one control frame (ACK, FIN, BYE, HELLO,
	 * HELLO_ACK) the path may be holding; reused once the path is idle. */
	_Alignas(8) unsigned char ctl[24 + KW_CTRL_MAX_PAYLOAD];
};

extern const struct kw_path_ops kw_tcp_path;
/* A non-blocking TCP connect from local_ip (0: any) to remote_ip:port;
 * the descriptor, or -1 with *err set. Then kw_tcp_dial_result: 0 when
 * connected, -EINPROGRESS or -errno. Also used by the best-pair probe. */
int kw_tcp_dial(uint32_t local_ip, uint32_t remote_ip, uint16_t port, int *err);
int kw_tcp_dial_result(int fd);
extern const struct kw_path_ops kw_verbs_path;	/* btl_kawarimi_verbs.c */

/* Upper-layer hooks the paths call. rx_alloc checks the header and
 * returns the buffer for a frame with payload (NULL: bad header, break the
 * connection; the reason has been logged). frame_in gets every complete
 * frame, r == NULL for control frames without payload; it returns 0, or
 * negative to break the connection. */
struct kw_rfrag *kw_conn_rx_alloc(struct kw_conn *c, const struct kw_hdr *h);
int kw_conn_frame_in(struct kw_conn *c, const struct kw_hdr *h, struct kw_rfrag *r);
/* Header check for frames without payload; 0 or -1 (logged). */
int kw_conn_hdr_ok(struct kw_conn *c, const struct kw_hdr *h);

#endif
