/*
 * kawarimi BTL: the path abstraction.
 *
 * A path is how one endpoint moves frames to one peer over one fabric.
 * Everything that makes the transport reliable and suspendable (sequence
 * numbers, cumulative acks, resend after reconnect, duplicate drop, the FIN
 * drain) lives above this interface in btl_kawarimi_endpoint.c, so a
 * path only has to move frames: TCP (btl_kawarimi_tcp.c) or RC QPs
 * through librdmacm (btl_kawarimi_verbs*.c). Nothing outside the path
 * files names a path: the rest of the BTL loops over kw_paths[].
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

#include <json-c/json.h>

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

/* What the agent's resume tells a path before the addresses are re-read. */
struct kw_path_hint {
	int reported;			/* the agent lists this path's fabric */
	int64_t link_timeout_ms;	/* <= 0: none given */
};

/*
 * Optional hooks are NULL in a path that has nothing to do there; the
 * callers loop over kw_paths[] (btl_kawarimi_path.c) and skip them.
 */
struct kw_path_ops {
	const char *name;
	uint8_t fabric;			/* KW_FABRIC_* of the addresses it connects */
	void (*register_params)(void);	/* optional: MCA parameters */
	int (*listen)(struct kw_addrs *local, uint16_t port, char *err, size_t errlen);
	/* optional: adds the path's own entries to the local address list
	 * (after listen and resume; drops stale ones first) */
	void (*add_addrs)(struct kw_addrs *local);
	void (*release)(void);
	void (*quiesce)(void);
	/* optional: at resume, before the addresses are re-read */
	void (*prepare)(const struct kw_path_hint *hint, uint16_t port);
	int (*resume)(struct kw_addrs *local, char *err, size_t errlen);
	int (*active)(void);		/* optional: usable now? (NULL: always) */
	json_object *(*json)(void);	/* optional: state for the agent's replies */
	int (*listen_fd)(void);
	struct kw_conn *(*accept)(void);
	struct kw_conn *(*connect)(const struct kw_cand *cand, int *err);
	int (*connect_done)(struct kw_conn *c);	/* 0, -EINPROGRESS or -errno */
	int (*send)(struct kw_conn *c, const struct iovec *iov, int cnt);
	int (*idle)(const struct kw_conn *c);
	void (*poll_events)(const struct kw_conn *c, struct pollfd *p);
	int (*progress)(struct kw_conn *c, short revents);
	void (*close)(struct kw_conn *c);
	/* optional: a bare non-blocking connect from local_ip (0: any) to
	 * remote_ip:port, no connection made of it; the descriptor, or -1
	 * with *err set. Then probe_result: 0 when connected, -EINPROGRESS
	 * or -errno. */
	int (*probe)(uint32_t local_ip, uint32_t remote_ip, uint16_t port, int *err);
	int (*probe_result)(int fd);
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

/*
 * Every path, in the order they are opened: TCP first, since it picks the
 * port number every later path listens on in its own port space, and it
 * is the fall-back every rank has. Addresses and the register message
 * list them the other way round, best first.
 */
#define KW_NPATHS 2
extern const struct kw_path_ops *const kw_paths[KW_NPATHS];
/* "tcp 10.0.0.1@eth0 -> 10.0.0.2:port", for the log. */
void kw_path_conn_str(const struct kw_conn *c, char *buf, size_t len);
/* release() of every path (init failed, finalize). */
void kw_path_release_all(void);
/* The path that connects addresses of this fabric (TCP when none other). */
const struct kw_path_ops *kw_path_for_fabric(uint8_t fabric);
/* The best-pair probe (a bare connect to a peer's listener), through the
 * first path that has one; the descriptor or -1 with *err set. */
int kw_path_probe(uint32_t local_ip, uint32_t remote_ip, uint16_t port, int *err);
int kw_path_probe_result(int fd);

/* Upper-layer hooks the paths call. rx_alloc checks the header and
 * returns the buffer for a frame with payload (NULL: bad header, break the
 * connection; the reason has been logged). frame_in gets every complete
 * frame, r == NULL for control frames without payload; it returns 0, or
 * negative to break the connection. */
struct kw_rfrag *kw_conn_rx_alloc(struct kw_conn *c, const struct kw_hdr *h);
/* The same, but the payload always goes into the fragment (a zero-copy
 * READ lands there whole, a GET_REPLY's pad included). */
struct kw_rfrag *kw_conn_rx_alloc_whole(struct kw_conn *c, const struct kw_hdr *h);
int kw_conn_frame_in(struct kw_conn *c, const struct kw_hdr *h, struct kw_rfrag *r);
/* Header check for frames without payload; 0 or -1 (logged). */
int kw_conn_hdr_ok(struct kw_conn *c, const struct kw_hdr *h);
/* The peer's rank (UINT32_MAX before HELLO) and the next sequence number
 * we expect from it (0 before HELLO), for the paths' own handshakes. */
uint32_t kw_conn_peer_vpid(const struct kw_conn *c);
uint64_t kw_conn_rx_next(const struct kw_conn *c);

#endif
