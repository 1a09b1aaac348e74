/*
 * Fuzz harness for the kawarimi BTL's parsers of outside input: agent
 * control lines (kw_ctl_parse_msg), peer address lists from the modex
 * (kw_addrs_decode, then candidate selection), and frame streams from peers
 * (kw_hdr_check, kw_hello_parse, kw_get_req_parse and the registration
 * table's kw_reg_find). The first byte modulo 3 picks the parser.
 * libFuzzer under clang -Dfuzz=true; otherwise
 * tests/fuzz_replay.c replays the files or directories named on the command
 * line.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "btl_kawarimi_ctl.h"
#include "btl_kawarimi_proc.h"
#include "btl_kawarimi_reg.h"
#include "btl_kawarimi_wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A byte stream as a path delivers it: headers, payloads, HELLOs, and
 * GET_REQs against a table holding one registration (the bytes of a
 * static buffer, whose key the input cannot know: keys are random). */
static void frames(const uint8_t *p, size_t n)
{
	static unsigned char mem[4096];
	static struct kw_reg *reg;

	if (!reg)
		reg = kw_reg_add(mem, sizeof(mem), 1);
	while (n >= sizeof(struct kw_hdr)) {
		struct kw_hello hello;
		struct kw_addrs addrs;
		struct kw_hdr h;
		char err[300];

		memcpy(&h, p, sizeof(h));
		p += sizeof(h);
		n -= sizeof(h);
		if (kw_hdr_check(&h, 256 * 1024 + KW_CTRL_MAX_PAYLOAD, 4u << 20) || h.len > n)
			return;
		if (h.type == KW_FRAME_GET_REQ) {
			struct kw_get_req q;

			if (!kw_get_req_parse(p, h.len, &q, 4u << 20, err, sizeof(err))) {
				/* A known key with the input's range: checks the bounds. */
				if (reg && (q.key & 1))
					q.key = reg->key;
				if (kw_reg_find(&q, err, sizeof(err)) &&
				    (q.addr < (uintptr_t)mem || q.addr + q.len > (uintptr_t)mem + sizeof(mem)))
					__builtin_trap();	/* readable outside the registration */
			}
		}
		if (h.type == KW_FRAME_HELLO || h.type == KW_FRAME_HELLO_ACK)
			if (!kw_hello_parse(p, h.len, &hello, &addrs, err, sizeof(err)))
				kw_hello_src_check(&hello, 4, err, sizeof(err));
		p += h.len;
		n -= h.len;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char err[300];

	if (size < 1)
		return 0;
	if (data[0] % 3 == 2) {
		frames(data + 1, size - 1);
	} else if (data[0] % 3 == 1) {
		struct kw_ctl_msg m;
		const char *eclass;
		char *line;

		kw_ctl_parse_msg((const char *)data + 1, size - 1, &m, &eclass, err, sizeof(err));
		/* An error answer must be formattable with whatever id was kept. */
		line = schema_line_of(schema_reply_error(eclass, err, m.id));
		free(line);
		kw_ctl_parse_clear(&m);
	} else {
		struct kw_addrs peer, local = { .port = 1, .n = 1 };
		struct kw_cand cand[KW_MAX_CAND];

		local.a[0].ip = 0x0100000a;	/* 10.0.0.1 */
		local.a[0].prefixlen = 8;
		if (!kw_addrs_decode(data + 1, size - 1, &peer, err, sizeof(err)))
			kw_addrs_candidates(&local, &peer, cand, KW_MAX_CAND);
	}
	return 0;
}
