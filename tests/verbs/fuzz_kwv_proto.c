/*
 * libFuzzer harness for the verbs path's network input parsers: the
 * zero-copy descriptor (kwv_zc_decode) and the rdma_cm private data
 * (kwv_pdata_decode). Under clang with -Dfuzz=true it links libFuzzer;
 * otherwise tests/fuzz_replay.c replays the seed corpus as a test.
 *
 * Input: byte 0 picks the parser (even: descriptor, odd: private data of
 * kind 1 + (byte 0 / 2) % 3), bytes 1..4 the frame length the descriptor
 * must cover (little endian), the rest is the message.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "btl_kawarimi_verbs_proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_zc(const uint8_t *msg, size_t len, uint32_t frame_len)
{
	unsigned char again[KWV_ZC_MAX_LEN];
	struct kwv_zc z;
	uint64_t total;
	char err[256];
	uint32_t i;
	int n;

	if (kwv_zc_decode(msg, len, frame_len, &z, err, sizeof(err))) {
		if (!strstr(err, "zero-copy descriptor"))
			abort();	/* every error says what it is about */
		return;
	}
	if (!z.nseg || z.nseg > KWV_ZC_MAX_SEGS || z.inline_len > KWV_ZC_INLINE_MAX ||
	    z.inline_data < msg || z.inline_data + z.inline_len > msg + len)
		abort();
	total = z.inline_len;
	for (i = 0; i < z.nseg; i++) {
		if (!z.seg[i].len || z.seg[i].addr + z.seg[i].len < z.seg[i].addr)
			abort();
		total += z.seg[i].len;
	}
	if (total != frame_len)
		abort();
	/* what was accepted encodes back to the same bytes */
	n = kwv_zc_encode(&z, again, sizeof(again));
	if (n < 0 || (size_t)n != len || memcmp(again, msg, len))
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint32_t frame_len;

	if (size < 5)
		return 0;
	memcpy(&frame_len, data + 1, 4);
	if (!(data[0] & 1)) {
		check_zc(data + 5, size - 5, frame_len);
	} else {
		enum kwv_pdata_kind want = (enum kwv_pdata_kind)(1 + (data[0] / 2) % 3);
		struct kwv_pdata p;
		char err[256];

		if (!kwv_pdata_decode(data + 5, size - 5, want, &p, err, sizeof(err))) {
			if (p.kind != KWV_PD_REJECT &&
			    (!p.posted || p.bufsize < 64 || p.rd_depth > KWV_RD_DEPTH_MAX))
				abort();
		} else if (!strstr(err, "private data")) {
			abort();
		}
	}
	return 0;
}
