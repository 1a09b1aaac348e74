/* kawarimi BTL: fragment pools (the frame header and its checks: btl_kawarimi_wire.c). */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "btl_kawarimi.h"

/*
 * Large receive buffers are recycled: malloc/free of a few hundred KiB per
 * frame made glibc grow and trim the heap every time, and the fresh pages
 * cost a page fault each (measured: 2.6k brk calls per second and half the
 * bandwidth for messages of two rendezvous fragments).
 */
#define RCACHE_MAX 16
#define RFRAG_SMALL (16 * 1024)

static pthread_mutex_t rcache_lock = PTHREAD_MUTEX_INITIALIZER;
static struct kw_rfrag *rcache;
static int rcache_n;
static size_t rcache_cap;

static void rcache_fini(void)
{
	pthread_mutex_lock(&rcache_lock);
	while (rcache) {
		struct kw_rfrag *r = rcache;

		rcache = r->next;
		free(r);
	}
	rcache_n = 0;
	pthread_mutex_unlock(&rcache_lock);
}

static opal_free_list_t eager_list, max_list;
static size_t eager_cap, max_cap;
static int lists_ready;

static void frag_construct(kw_frag_t *f)
{
	f->payload = (unsigned char *)(f + 1);
	f->next = NULL;
	f->internal = 0;
}

OBJ_CLASS_INSTANCE(kw_frag_t, mca_btl_base_descriptor_t, frag_construct, NULL);

static int frag_init(opal_free_list_item_t *item, void *ctx)
{
	kw_frag_t *f = (kw_frag_t *)item;

	f->list = ctx;
	f->capacity = ctx == &eager_list ? eager_cap : max_cap;
	f->payload = (unsigned char *)(f + 1);
	return OPAL_SUCCESS;
}

int kw_frag_lists_init(size_t eager_size, size_t max_size)
{
	int rc;

	eager_cap = eager_size;
	max_cap = max_size;
	rcache_cap = max_size + KW_CTRL_MAX_PAYLOAD;
	OBJ_CONSTRUCT(&eager_list, opal_free_list_t);
	OBJ_CONSTRUCT(&max_list, opal_free_list_t);
	rc = opal_free_list_init(&eager_list, sizeof(kw_frag_t) + eager_cap, opal_cache_line_size,
				 OBJ_CLASS(kw_frag_t), 0, 0, kw.free_list_num, kw.free_list_max,
				 kw.free_list_inc, NULL, 0, NULL, frag_init, &eager_list);
	if (rc == OPAL_SUCCESS)
		rc = opal_free_list_init(&max_list, sizeof(kw_frag_t) + max_cap,
					 opal_cache_line_size, OBJ_CLASS(kw_frag_t), 0, 0,
					 kw.free_list_num, kw.free_list_max, kw.free_list_inc,
					 NULL, 0, NULL, frag_init, &max_list);
	lists_ready = rc == OPAL_SUCCESS;
	return rc;
}

void kw_frag_lists_fini(void)
{
	rcache_fini();
	if (!lists_ready)
		return;
	OBJ_DESTRUCT(&eager_list);
	OBJ_DESTRUCT(&max_list);
	lists_ready = 0;
}

kw_frag_t *kw_frag_get(size_t size)
{
	opal_free_list_t *l = size <= eager_cap ? &eager_list : &max_list;
	kw_frag_t *f;

	if (size > max_cap)
		return NULL;
	f = (kw_frag_t *)opal_free_list_get(l);
	if (!f)
		return NULL;
	f->next = NULL;
	f->internal = 0;
	f->status = OPAL_SUCCESS;
	f->base.des_segments = f->segments;
	f->base.des_segment_count = 1;
	f->base.des_cbfunc = NULL;
	f->base.des_cbdata = NULL;
	f->base.des_context = NULL;
	f->base.order = MCA_BTL_NO_ORDER;
	f->segments[0].seg_addr.pval = f->payload;
	f->segments[0].seg_len = 0;
	return f;
}

void kw_frag_return(kw_frag_t *f)
{
	opal_free_list_return(f->list, &f->base.super);
}

size_t kw_frag_len(const kw_frag_t *f)
{
	size_t len = 0, i;

	for (i = 0; i < f->base.des_segment_count; i++)
		len += f->segments[i].seg_len;
	return len;
}

struct kw_rfrag *kw_rfrag_alloc(size_t len)
{
	struct kw_rfrag *r = NULL;
	size_t cap = len;

	if (len > RFRAG_SMALL && len <= rcache_cap) {
		cap = rcache_cap;
		pthread_mutex_lock(&rcache_lock);
		r = rcache;
		if (r) {
			rcache = r->next;
			rcache_n--;
		}
		pthread_mutex_unlock(&rcache_lock);
	}
	if (!r) {
		r = malloc(sizeof(*r) + cap);
		if (!r)
			return NULL;
		r->cap = cap;
	}
	r->ep = NULL;
	r->next = NULL;
	r->filled = 0;
	r->dst = r->data;
	r->skip = 0;
	return r;
}

void kw_rfrag_free(struct kw_rfrag *r)
{
	if (rcache_cap && r->cap == rcache_cap) {
		pthread_mutex_lock(&rcache_lock);
		if (rcache_n < RCACHE_MAX) {
			r->next = rcache;
			rcache = r;
			rcache_n++;
			r = NULL;
		}
		pthread_mutex_unlock(&rcache_lock);
	}
	free(r);
}
