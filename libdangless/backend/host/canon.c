/* SPDX-License-Identifier: MIT */
/*
 * Canonical memory: extents of the one memfd, punched when freed, with a
 * free list and the most recently freed ones kept for reuse by size.
 */
#include <fcntl.h>
#include <linux/falloc.h>
#include <string.h>

#include "host.h"

static struct dl_pool host_extent_pool =
	DL_POOL(struct host_extent, "host extents");

/* ---- canonical extents ---- */

static void host_punch(uintptr_t off, size_t len)
{
	/* Reads after this see zeros; the memory goes back to the kernel. */
	if (fallocate(host.fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
		      (off_t)off, (off_t)len) == 0)
		DL_STAT_ADD(canonical_bytes_released, len);
}

static uintptr_t host_take_extent(size_t len)
{
	struct host_extent **link = &host.free_extents;
	for (struct host_extent *e = *link; e; link = &e->next, e = *link) {
		if (e->len < len)
			continue;
		uintptr_t off = e->off;
		e->off += len;
		e->len -= len;
		if (e->len == 0) {
			*link = e->next;
			_dl_pool_free(&host_extent_pool, e);
		}
		return off;
	}
	if (len > HOST_CANON_SIZE - host.canon_bump)
		return UINTPTR_MAX;
	uintptr_t off = host.canon_bump;
	host.canon_bump += len;
	return off;
}

static void host_give_extent(uintptr_t off, size_t len)
{
	struct host_extent **link = &host.free_extents, *prev = NULL;
	while (*link && (*link)->off < off) {
		prev = *link;
		link = &(*link)->next;
	}
	struct host_extent *next = *link;
	if (prev && prev->off + prev->len == off) {
		prev->len += len;
		if (next && prev->off + prev->len == next->off) {
			prev->len += next->len;
			prev->next = next->next;
			_dl_pool_free(&host_extent_pool, next);
		}
		return;
	}
	if (next && off + len == next->off) {
		next->off = off;
		next->len += len;
		return;
	}
	struct host_extent *e = _dl_pool_alloc(&host_extent_pool);
	if (!e)
		return; /* leaks the range: it stays punched and unused */
	*e = (struct host_extent){off, len, next};
	*link = e;
}

/*
 * Programs free and allocate the same sizes in waves: an extent of the
 * size just freed is taken from the recent ones before the free list is
 * searched.
 */
static bool host_take_recent(size_t len, uintptr_t *off)
{
	for (unsigned i = host.nrecent; i-- > 0;) {
		if (host.recent[i].len != len)
			continue;
		*off = host.recent[i].off;
		host.recent[i] = host.recent[--host.nrecent];
		return true;
	}
	return false;
}

void *host_canon_alloc(size_t len)
{
	uintptr_t off;
	_dl_lock(&host.canon_lock);
	if (!host_take_recent(len, &off))
		off = host_take_extent(len);
	_dl_unlock(&host.canon_lock);
	if (off == UINTPTR_MAX)
		return NULL;
	return host.canon + off;
}

void host_canon_discard(void *canon, size_t len)
{
	host_punch((uintptr_t)((char *)canon - host.canon), len);
}

void host_canon_free(void *canon, size_t len)
{
	const unsigned keep = sizeof(host.recent) / sizeof(host.recent[0]);
	uintptr_t off = (uintptr_t)((char *)canon - host.canon);
	host_punch(off, len);
	_dl_lock(&host.canon_lock);
	if (host.nrecent == keep) {
		/* The oldest goes to the free list. */
		host_give_extent(host.recent[0].off, host.recent[0].len);
		memmove(host.recent, host.recent + 1,
			(keep - 1) * sizeof(host.recent[0]));
		host.nrecent--;
	}
	host.recent[host.nrecent++] = (struct host_recent){off, len};
	_dl_unlock(&host.canon_lock);
}
