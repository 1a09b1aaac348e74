/* SPDX-License-Identifier: MIT */
/*
 * Internal to libkawarimi-qmp: helpers shared by its files and by the fuzz
 * harness, which compiles the sources itself.  Not exported from the
 * shared library, which names its public functions (libkawarimi-qmp.map).
 */
#ifndef KAWARIMI_QMP_INTERNAL_H
#define KAWARIMI_QMP_INTERNAL_H

#include "kawarimi-qmp.h"

#define KQMP_PRINTF(a, b) __attribute__((format(printf, a, b)))

/* Sets *err (if err is not NULL): kind, empty class, formatted desc. */
void kqmp_seterr(struct kqmp_error *err, enum kqmp_err_kind kind,
	       const char *fmt, ...) KQMP_PRINTF(3, 4);

/* Error texts are one line: control characters (a peer's "\n" in a class
 * or desc; C1 ones and bytes that are not UTF-8 too, as kqmp_printable())
 * become spaces.  Returns s. */
char *kqmp_one_line(char *s);

/* Writes src[0..len) as a quoted, escaped, printable string into dst,
 * shortened with "..." when it does not fit.  Returns dst. */
const char *kqmp_quote(char *dst, size_t size, const char *src, size_t len);

/* Same for a JSON value (compact form); NULL prints as "null". */
const char *kqmp_quote_json(char *dst, size_t size, json_object *obj);

/* Zero-copy input for the connection: room for at least want bytes at the
 * end of the reader's buffer (NULL on ENOMEM), then commit what was read. */
char *kqmp_reader_reserve(struct kqmp_reader *r, size_t want);
void kqmp_reader_commit(struct kqmp_reader *r, size_t n);
/* Bytes of the message kqmp_reader_next() returned last. */
size_t kqmp_reader_last_len(const struct kqmp_reader *r);
/* True while part of a message has been consumed but not completed. */
bool kqmp_reader_mid_message(const struct kqmp_reader *r);

/* ---- message classification ------------------------------------------ */

enum kqmp_msg_type {
	KQMP_MSG_GREETING,	/* {"QMP": {"version": ..., "capabilities": [...]}} */
	KQMP_MSG_RETURN,		/* {"return": ..., "id": ...} */
	KQMP_MSG_ERROR,		/* {"error": {"class", "desc"}, "id": ...} */
	KQMP_MSG_EVENT,		/* {"event": NAME, "data": ..., "timestamp": ...} */
	KQMP_MSG_UNKNOWN,		/* none of those: logged and dropped */
};

/* Every pointer borrows from the classified message. */
struct kqmp_msg {
	enum kqmp_msg_type type;
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
int kqmp_classify(json_object *msg, struct kqmp_msg *m, struct kqmp_error *err);

/* Our command ids are positive integers; 0 for anything else. */
uint64_t kqmp_msg_id(const struct kqmp_msg *m);

#endif
