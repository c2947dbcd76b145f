/* SPDX-License-Identifier: MIT */
/*
 * Free ranges of a bump-carved address range (a backend's canonical
 * memory): an address-ordered, coalesced list, first fit, the bump pointer
 * past everything ever carved.  The caller holds its own lock.
 */
#include "services.h"

struct dl_extent {
	uintptr_t off, len;
	struct dl_extent *next;
};

static struct dl_pool dl_extent_pool = DL_POOL(struct dl_extent, "extents");

bool _dl_extents_take(struct dl_extents *x, size_t len, uintptr_t *off)
{
	struct dl_extent **link = &x->free;
	for (struct dl_extent *e = *link; e; link = &e->next, e = *link) {
		if (e->len < len)
			continue;
		*off = e->off;
		e->off += len;
		e->len -= len;
		if (e->len == 0) {
			*link = e->next;
			_dl_pool_free(&dl_extent_pool, e);
		}
		return true;
	}
	if (len > x->end - x->bump)
		return false;
	*off = x->bump;
	x->bump += len;
	return true;
}

void _dl_extents_give(struct dl_extents *x, uintptr_t off, size_t len)
{
	struct dl_extent **link = &x->free, *prev = NULL;
	while (*link && (*link)->off < off) {
		prev = *link;
		link = &(*link)->next;
	}
	struct dl_extent *next = *link;
	if (prev && prev->off + prev->len == off) {
		prev->len += len;
		if (next && prev->off + prev->len == next->off) {
			prev->len += next->len;
			prev->next = next->next;
			_dl_pool_free(&dl_extent_pool, next);
		}
		return;
	}
	if (next && off + len == next->off) {
		next->off = off;
		next->len += len;
		return;
	}
	struct dl_extent *e = _dl_pool_alloc(&dl_extent_pool);
	if (!e)
		return; /* the range stays unused, never handed out again */
	*e = (struct dl_extent){off, len, next};
	*link = e;
}

void _dl_extents_for_each_carved(const struct dl_extents *x, uintptr_t from,
				 void (*fn)(uintptr_t off, size_t len,
					    void *ctx),
				 void *ctx)
{
	uintptr_t at = from;
	for (const struct dl_extent *e = x->free; e; e = e->next) {
		if (e->off > at)
			fn(at, e->off - at, ctx);
		if (e->off + e->len > at)
			at = e->off + e->len;
	}
	if (x->bump > at)
		fn(at, x->bump - at, ctx);
}
