/*
 * kawarimi BTL: registrations readable by peers. A key is a slot index
 * (low 32 bits) and a random tag (high 32 bits, never 0), so a forged key
 * or one whose registration ob1 already dropped finds nothing, and a slot
 * reused later gets a new tag.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "btl_kawarimi_reg.h"

static struct {
	struct kw_reg **slot;
	uint32_t nslot;
	uint32_t *free_slots;
	uint32_t nfree;
	struct kw_reg *spare;	/* recycled records */
	uint64_t rng;
} regs;

static uint32_t tag_next(void)
{
	uint64_t x = regs.rng;

	/* xorshift64, seeded from getrandom: a key must not be guessable
	 * from the ones a peer saw, not be a secret. */
	if (!x && (getrandom(&x, sizeof(x), 0) != sizeof(x) || !x))
		x = 0x9e3779b97f4a7c15ull ^ (uint64_t)(uintptr_t)&regs;
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	regs.rng = x;
	return (uint32_t)(x >> 32) | 1;
}

static int slot_get(uint32_t *idx)
{
	if (!regs.nfree) {
		uint32_t n = regs.nslot ? regs.nslot * 2 : 64, i;
		struct kw_reg **s;
		uint32_t *f;

		if (n <= regs.nslot)
			return -1;
		s = realloc(regs.slot, n * sizeof(*s));
		if (!s)
			return -1;
		regs.slot = s;
		f = realloc(regs.free_slots, n * sizeof(*f));
		if (!f)
			return -1;
		regs.free_slots = f;
		for (i = n; i > regs.nslot; i--) {
			regs.slot[i - 1] = NULL;
			regs.free_slots[regs.nfree++] = i - 1;
		}
		regs.nslot = n;
	}
	*idx = regs.free_slots[--regs.nfree];
	return 0;
}

struct kw_reg *kw_reg_add(const void *base, size_t len, int remote)
{
	struct kw_reg *r = regs.spare;
	uint32_t idx;

	if (r)
		regs.spare = r->next;
	else if (!(r = malloc(sizeof(*r))))
		return NULL;
	r->base = (uintptr_t)base;
	r->len = len;
	r->key = 0;
	if (remote) {
		if (slot_get(&idx)) {
			r->next = regs.spare;
			regs.spare = r;
			return NULL;
		}
		r->key = (uint64_t)tag_next() << 32 | idx;
		regs.slot[idx] = r;
	}
	return r;
}

void kw_reg_del(struct kw_reg *r)
{
	if (r->key) {
		uint32_t idx = (uint32_t)r->key;

		regs.slot[idx] = NULL;
		regs.free_slots[regs.nfree++] = idx;
		r->key = 0;
	}
	r->next = regs.spare;
	regs.spare = r;
}

const void *kw_reg_find(const struct kw_get_req *q, char *err, size_t errlen)
{
	uint32_t idx = (uint32_t)q->key;
	struct kw_reg *r = idx < regs.nslot ? regs.slot[idx] : NULL;
	uint64_t off;

	if (!q->key || !r || r->key != q->key) {
		snprintf(err, errlen, "key 0x%016llx is not registered (stale or forged)",
			 (unsigned long long)q->key);
		return NULL;
	}
	off = q->addr - r->base;
	if (q->addr < r->base || off > r->len || q->len > r->len - off) {
		snprintf(err, errlen, "%llu bytes at 0x%llx lie outside the %zu bytes registered "
			 "at 0x%llx under key 0x%016llx", (unsigned long long)q->len,
			 (unsigned long long)q->addr, r->len, (unsigned long long)r->base,
			 (unsigned long long)q->key);
		return NULL;
	}
	return (const void *)(uintptr_t)q->addr;
}

void kw_reg_fini(void)
{
	uint32_t i;

	for (i = 0; i < regs.nslot; i++)
		free(regs.slot[i]);
	while (regs.spare) {
		struct kw_reg *r = regs.spare;

		regs.spare = r->next;
		free(r);
	}
	free(regs.slot);
	free(regs.free_slots);
	memset(&regs, 0, sizeof(regs));
}
