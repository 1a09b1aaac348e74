/* SPDX-License-Identifier: MIT */
/*
 * Internal to libkawarimi-qmp: helpers shared by its files and by the fuzz
 * harness, which compiles the sources itself.  The kq_ prefix keeps these
 * out of the shared library's exported symbols (see libkawarimi-qmp.map).
 */
#ifndef KAWARIMI_QMP_INTERNAL_H
#define KAWARIMI_QMP_INTERNAL_H

#include "kawarimi-qmp.h"

#define KQ_PRINTF(a, b) __attribute__((format(printf, a, b)))

/* Sets *err (if err is not NULL): kind, empty class, formatted desc. */
void kq_seterr(struct kqmp_error *err, enum kqmp_err_kind kind,
	       const char *fmt, ...) KQ_PRINTF(3, 4);

/* Error texts are one line: control characters (a peer's "\n" in a class
 * or desc; C1 ones and bytes that are not UTF-8 too, as kqmp_printable())
 * become spaces.  Returns s. */
char *kq_one_line(char *s);

/* Writes src[0..len) as a quoted, escaped, printable string into dst,
 * shortened with "..." when it does not fit.  Returns dst. */
const char *kq_quote(char *dst, size_t size, const char *src, size_t len);

/* Same for a JSON value (compact form); NULL prints as "null". */
const char *kq_quote_json(char *dst, size_t size, json_object *obj);

/* Zero-copy input for the connection: room for at least want bytes at the
 * end of the reader's buffer (NULL on ENOMEM), then commit what was read. */
char *kq_reader_reserve(struct kjson_reader *r, size_t want);
void kq_reader_commit(struct kjson_reader *r, size_t n);
/* Bytes of the message kjson_reader_next() returned last. */
size_t kq_reader_last_len(const struct kjson_reader *r);
/* True while part of a message has been consumed but not completed. */
bool kq_reader_mid_message(const struct kjson_reader *r);

/* ---- message classification ------------------------------------------ */

enum kq_msg_type {
	KQ_MSG_GREETING,	/* {"QMP": {"version": ..., "capabilities": [...]}} */
	KQ_MSG_RETURN,		/* {"return": ..., "id": ...} */
	KQ_MSG_ERROR,		/* {"error": {"class", "desc"}, "id": ...} */
	KQ_MSG_EVENT,		/* {"event": NAME, "data": ..., "timestamp": ...} */
	KQ_MSG_UNKNOWN,		/* none of those: logged and dropped */
};

/* Every pointer borrows from the classified message. */
struct kq_msg {
	enum kq_msg_type type;
	json_object *id;	/* RETURN/ERROR; NULL when absent */
	json_object *ret;	/* RETURN */
	const char *cls;	/* ERROR */
	const char *desc;	/* ERROR */
	const char *event;	/* EVENT */
	json_object *data;	/* EVENT; NULL when absent */
	int64_t sec, usec;	/* EVENT; -1 when QEMU sent no timestamp */
	json_object *version;	/* GREETING */
	json_object *caps;	/* GREETING: array of strings */
};

/* 0 and *m filled, or -1 with err (KQMP_E_PROTOCOL) for a message that has
 * a known kind but the wrong shape ({"error": 5}, an event without name). */
int kq_classify(json_object *msg, struct kq_msg *m, struct kqmp_error *err);

/* Our command ids are positive integers; 0 for anything else. */
uint64_t kq_msg_id(const struct kq_msg *m);

#endif
