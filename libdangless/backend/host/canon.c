/* SPDX-License-Identifier: MIT */
/*
 * Canonical memory: extents of the one memfd, punched when freed, with a
 * free list and the most recently freed ones kept for reuse by size.
 */
#include <string.h>
#include <sys/mman.h>

#include "host.h"

/* ---- canonical extents ---- */

static void host_punch(uintptr_t off, size_t len)
{
	/* Reads after this see zeros; the memory goes back to the kernel.
	 * MADV_REMOVE on a shared mapping of the memfd is its hole punch,
	 * without a descriptor (H2). */
	if (madvise(host.canon + off, len, MADV_REMOVE) == 0)
		DL_STAT_ADD(canonical_bytes_released, len);
}

void *host_canon_dup(size_t off, size_t len)
{
	return mremap(host.canon + off, 0, len, MREMAP_MAYMOVE);
}

void host_canon_for_each_live(void (*fn)(uintptr_t off, size_t len, void *ctx),
			      void *ctx)
{
	/* The recent extents are punched like the free ones: the caller
	 * (a fork child) sees them as free from now on. */
	for (unsigned i = 0; i < host.nrecent; i++)
		_dl_extents_give(&host.extents, host.recent[i].off,
				 host.recent[i].len);
	host.nrecent = 0;
	_dl_extents_for_each_carved(&host.extents, DL_PAGE, fn, ctx);
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

void *host_canon_alloc(size_t len, bool filled)
{
	(void)filled;
	uintptr_t off;
	_dl_lock(&host.canon_lock);
	bool ok = host_take_recent(len, &off) ||
		  _dl_extents_take(&host.extents, len, &off);
	_dl_unlock(&host.canon_lock);
	if (!ok)
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
		_dl_extents_give(&host.extents, host.recent[0].off,
				 host.recent[0].len);
		memmove(host.recent, host.recent + 1,
			(keep - 1) * sizeof(host.recent[0]));
		host.nrecent--;
	}
	host.recent[host.nrecent++] = (struct host_recent){off, len};
	_dl_unlock(&host.canon_lock);
}
