/* kawarimi BTL: frame header and HELLO checks (outside input from peers). */
#include <stdio.h>
#include <string.h>

#include "btl_kawarimi_wire.h"

const char *kw_hdr_check(const struct kw_hdr *h, size_t max_data, size_t max_get)
{
	if (h->type == 0 || h->type >= KW_FRAME_TYPE_MAX)
		return "unknown frame type";
	if (h->flags & ~(KW_FLAG_ACK_NOW | (h->type == KW_FRAME_GET_REPLY ? KW_FLAG_GET_ERR : 0)))
		return "reserved flags set";
	switch (h->type) {
	case KW_FRAME_DATA:
		return h->len > max_data ? "payload larger than btl_kawarimi_max_send_size" : NULL;
	case KW_FRAME_GET_REQ:
		return h->len != sizeof(struct kw_get_req) ? "GET_REQ payload of wrong size" : NULL;
	case KW_FRAME_GET_REPLY:
		if ((h->flags & KW_FLAG_GET_ERR) && (h->len || h->tag))
			return "refused GET_REPLY with payload";
		if (h->tag >= KW_GET_PAD_MAX || (h->len && h->len <= h->tag))
			return "GET_REPLY pad out of range";
		return h->len - h->tag > max_get ? "GET_REPLY larger than btl_kawarimi_get_limit" :
		       NULL;
	case KW_FRAME_HELLO:
	case KW_FRAME_HELLO_ACK:
		return h->len > KW_CTRL_MAX_PAYLOAD || h->len < 32 ?
		       "HELLO payload of impossible size" : NULL;
	default:
		return h->len ? "control frame with payload" : NULL;
	}
}

int kw_hello_parse(const void *buf, size_t len, struct kw_hello *h, struct kw_addrs *addrs,
		   char *err, size_t errlen)
{
	if (len < sizeof(*h)) {
		snprintf(err, errlen, "HELLO of %zu bytes is shorter than %zu", len, sizeof(*h));
		return -1;
	}
	memcpy(h, buf, sizeof(*h));
	if (h->magic != KW_HELLO_MAGIC || h->version != KW_PROTO_VERSION) {
		snprintf(err, errlen, "HELLO magic 0x%08x version %u, expected 0x%08x version %u",
			 h->magic, h->version, KW_HELLO_MAGIC, KW_PROTO_VERSION);
		return -1;
	}
	return kw_addrs_decode((const char *)buf + sizeof(*h), len - sizeof(*h), addrs, err,
			       errlen);
}

int kw_hello_src_check(const struct kw_hello *h, uint32_t job_size, char *err, size_t errlen)
{
	if (h->src_vpid < job_size)
		return 0;
	snprintf(err, errlen, "HELLO names sender rank %u but the job has %u ranks (0..%u)",
		 h->src_vpid, job_size, job_size ? job_size - 1 : 0);
	return -1;
}

int kw_get_req_parse(const void *buf, size_t len, struct kw_get_req *q, size_t max_get,
		     char *err, size_t errlen)
{
	if (len != sizeof(*q)) {
		snprintf(err, errlen, "GET_REQ of %zu bytes, expected %zu", len, sizeof(*q));
		return -1;
	}
	memcpy(q, buf, sizeof(*q));
	if (!q->len || q->len > max_get) {
		snprintf(err, errlen, "GET_REQ for %llu bytes (1..%zu, btl_kawarimi_get_limit)",
			 (unsigned long long)q->len, max_get);
		return -1;
	}
	if (q->addr + q->len < q->addr) {
		snprintf(err, errlen, "GET_REQ for %llu bytes at 0x%llx wraps around",
			 (unsigned long long)q->len, (unsigned long long)q->addr);
		return -1;
	}
	return 0;
}
