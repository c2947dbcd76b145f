/* SPDX-License-Identifier: MIT */
/*
 * Metadata memory (pages and pools), the lock and the counters: the core
 * services that hold state (services.h).
 */
#include <sched.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/mman.h>

#include "services.h"

#define DL_POOL_GROW ((size_t)1 << 20)

struct dl_stats_atomic _dl_stats;

/*
 * Holders keep a lock for a few hundred instructions and make no system
 * call meanwhile, so a short spin usually wins.  But with more threads
 * than cores the holder may have been preempted: spinning on then burns
 * the waiter's whole time slice while the holder waits for a core, so
 * after a while the waiter gives its core away.
 */
#define DL_LOCK_SPINS 128
void _dl_lock(dl_lock_t *l)
{
	for (;;) {
		if (!atomic_exchange_explicit(&l->v, 1, memory_order_acquire))
			return;
		for (unsigned spins = 0;
		     atomic_load_explicit(&l->v, memory_order_relaxed);
		     spins++) {
			if (spins < DL_LOCK_SPINS)
				__builtin_ia32_pause();
			else
				sched_yield();
		}
	}
}

/*
 * Metadata lives in a region of its own, reserved PROT_NONE once, whose
 * first and last 2 MiB are never handed out: left to the kernel, our pages
 * landed next to alias space (p[-1] of the first object read them) or the
 * program's own mappings, where an overflow of either reaches them.
 * Ranges are made readable and writable as they are handed out and go
 * back to PROT_NONE (pages dropped) when given back, for reuse by size.
 * Past the region (64 GiB of metadata) pages come from anywhere.
 *
 * dl_meta.lock is a leaf, held across no system call (the reservation is
 * made first and installed after).
 */
#define DL_META_REGION ((size_t)64 << 30)
#define DL_META_GAP ((size_t)2 << 20)
#define DL_META_FREE 256

static struct {
	dl_lock_t lock;
	char *base;       /* the region, gaps included */
	size_t next;      /* carved: [DL_META_GAP, next) */
	struct {
		size_t off, len;
	} free[DL_META_FREE]; /* given back, address-ordered, coalesced */
	unsigned nfree;
} dl_meta;

static bool dl_meta_region(void)
{
	if (atomic_load_explicit((_Atomic(char *) *)&dl_meta.base,
				 memory_order_acquire))
		return true;
	char *r = mmap(NULL, DL_META_REGION, PROT_NONE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (r == MAP_FAILED)
		return false;
	_dl_lock(&dl_meta.lock);
	bool mine = !dl_meta.base;
	if (mine) {
		dl_meta.next = DL_META_GAP;
		atomic_store_explicit((_Atomic(char *) *)&dl_meta.base, r,
				      memory_order_release);
	}
	_dl_unlock(&dl_meta.lock);
	if (!mine)
		munmap(r, DL_META_REGION);
	return true;
}

/* An offset in the region for len bytes (first fit), or 0. */
static size_t dl_meta_take(size_t len)
{
	size_t off = 0;
	_dl_lock(&dl_meta.lock);
	for (unsigned i = 0; i < dl_meta.nfree; i++) {
		if (dl_meta.free[i].len < len)
			continue;
		off = dl_meta.free[i].off;
		dl_meta.free[i].off += len;
		dl_meta.free[i].len -= len;
		if (!dl_meta.free[i].len)
			memmove(&dl_meta.free[i], &dl_meta.free[i + 1],
				(--dl_meta.nfree - i) * sizeof(dl_meta.free[0]));
		break;
	}
	if (!off && dl_meta.next + len + DL_META_GAP <= DL_META_REGION) {
		off = dl_meta.next;
		dl_meta.next += len;
	}
	_dl_unlock(&dl_meta.lock);
	return off;
}

static void dl_meta_give(size_t off, size_t len)
{
	_dl_lock(&dl_meta.lock);
	unsigned i = 0;
	while (i < dl_meta.nfree && dl_meta.free[i].off < off)
		i++;
	bool after_prev = i > 0 && dl_meta.free[i - 1].off +
						   dl_meta.free[i - 1].len == off;
	bool before_next = i < dl_meta.nfree && off + len == dl_meta.free[i].off;
	if (after_prev) {
		dl_meta.free[i - 1].len += len;
		if (before_next) {
			dl_meta.free[i - 1].len += dl_meta.free[i].len;
			memmove(&dl_meta.free[i], &dl_meta.free[i + 1],
				(--dl_meta.nfree - i) * sizeof(dl_meta.free[0]));
		}
	} else if (before_next) {
		dl_meta.free[i].off = off;
		dl_meta.free[i].len += len;
	} else if (dl_meta.nfree < DL_META_FREE) {
		memmove(&dl_meta.free[i + 1], &dl_meta.free[i],
			(dl_meta.nfree++ - i) * sizeof(dl_meta.free[0]));
		dl_meta.free[i].off = off;
		dl_meta.free[i].len = len;
	} /* else the range stays PROT_NONE, never handed out again */
	_dl_unlock(&dl_meta.lock);
}

/*
 * Metadata is written sparsely: the segment map's top table and leaves
 * (4 and 2 MiB, a word per 512 GiB or 2 MiB of alias space), the kvm
 * backend's chunk maps, pools that grow by 1 MiB.  Where transparent huge
 * pages are "always" (Debian's default), the kernel backs such a range
 * with 2 MiB pages on first touch or by khugepaged: measured in the rig,
 * 2-5 MB per process for a few KiB of words.  So no metadata mapping
 * takes huge pages; each is a fresh mapping (MAP_FIXED over the
 * reservation), which does not inherit the region's advice.
 */
static void *dl_meta_no_huge_pages(void *p, size_t len)
{
	if (p != MAP_FAILED)
		madvise(p, len, MADV_NOHUGEPAGE);
	return p;
}

void *_dl_meta_pages(size_t len)
{
	len = DL_ALIGN_UP(len, DL_PAGE);
	size_t off = dl_meta_region() ? dl_meta_take(len) : 0;
	if (off) {
		void *p = mmap(dl_meta.base + off, len, PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE |
				       MAP_FIXED,
			       -1, 0);
		if (p != MAP_FAILED)
			return dl_meta_no_huge_pages(p, len);
		dl_meta_give(off, len);
	}
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	return p == MAP_FAILED ? NULL : dl_meta_no_huge_pages(p, len);
}

void _dl_meta_unpages(void *p, size_t len)
{
	len = DL_ALIGN_UP(len, DL_PAGE);
	char *c = p, *base = dl_meta.base;
	if (!base || c < base || c >= base + DL_META_REGION) {
		munmap(p, len);
		return;
	}
	/* The pages go; the range stays ours and inaccessible. */
	if (mmap(c, len, PROT_NONE,
		 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED, -1,
		 0) != MAP_FAILED)
		dl_meta_give((size_t)(c - base), len);
}

/* Every pool that has handed out a block, for fork's lock order. */
static struct {
	dl_lock_t lock;
	struct dl_pool *head;
} dl_pools;

static void dl_pool_list(struct dl_pool *pool)
{
	_dl_lock(&dl_pools.lock);
	if (!pool->listed) {
		pool->next_pool = dl_pools.head;
		dl_pools.head = pool;
		pool->listed = true;
	}
	_dl_unlock(&dl_pools.lock);
}

void *_dl_pool_alloc(struct dl_pool *pool)
{
	if (unlikely(!pool->listed))
		dl_pool_list(pool);
	_dl_lock(&pool->lock);
	void *p = pool->free_list;
	if (p) {
		pool->free_list = *(void **)p;
	} else {
		size_t block = DL_ALIGN_UP(pool->block, 16);
		while (!pool->cur || pool->cur + block > pool->end) {
			/* The mmap happens with the pool unlocked; another
			 * thread may have grown the pool meanwhile, and then
			 * these pages, never handed out, go back. */
			size_t grow = block * 64 > DL_POOL_GROW ? block * 64
								 : DL_POOL_GROW;
			_dl_unlock(&pool->lock);
			char *m = _dl_meta_pages(grow);
			if (!m)
				return NULL;
			_dl_lock(&pool->lock);
			if (!pool->cur || pool->cur + block > pool->end) {
				pool->cur = m;
				pool->end = m + grow;
			} else {
				_dl_unlock(&pool->lock);
				_dl_meta_unpages(m, grow);
				_dl_lock(&pool->lock);
			}
		}
		p = pool->cur;
		pool->cur += block;
	}
	_dl_unlock(&pool->lock);
	__builtin_memset(p, 0, pool->block);
	return p;
}

void _dl_pool_free(struct dl_pool *pool, void *p)
{
	_dl_lock(&pool->lock);
	*(void **)p = pool->free_list;
	pool->free_list = p;
	_dl_unlock(&pool->lock);
}

/* Pools are leaves of the lock order: nothing is locked while one is held. */
void _dl_pools_lock_all(void)
{
	_dl_lock(&dl_pools.lock);
	for (struct dl_pool *p = dl_pools.head; p; p = p->next_pool)
		_dl_lock(&p->lock);
	_dl_lock(&dl_meta.lock);
}

void _dl_pools_unlock_all(bool reset)
{
	void (*op)(dl_lock_t *) = reset ? _dl_lock_reset : _dl_unlock;
	op(&dl_meta.lock);
	for (struct dl_pool *p = dl_pools.head; p; p = p->next_pool)
		op(&p->lock);
	op(&dl_pools.lock);
}

void _dl_meta_region(uintptr_t *start, size_t *len)
{
	*start = (uintptr_t)atomic_load_explicit(
		(_Atomic(char *) *)&dl_meta.base, memory_order_acquire);
	*len = *start ? DL_META_REGION : 0;
}

bool _dl_meta_resident(uint64_t *bytes)
{
	_dl_lock(&dl_meta.lock);
	char *base = dl_meta.base;
	size_t next = dl_meta.next;
	_dl_unlock(&dl_meta.lock);
	*bytes = 0;
	return !base || _dl_resident_bytes((uintptr_t)base + DL_META_GAP,
					   next - DL_META_GAP, bytes);
}
