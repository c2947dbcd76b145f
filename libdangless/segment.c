/* SPDX-License-Identifier: MIT */
/*
 * Alias segments and the map from an alias address to its metadata.
 *
 * The map (internal.h) has a top table of leaf pointers and leaves of one
 * word per DL_SEG_SIZE segment, both metadata pages reserved without
 * backing: only the parts that cover alias space we used ever get pages.
 * Lookups are two loads, without locks, from free(), realloc() and the
 * fault handler.
 */
#include <string.h>

#include "internal.h"

_Atomic(_Atomic uintptr_t *) *_dl_segmap;
unsigned _dl_addr_bits = DL_ADDR_BITS;

/*
 * A small segment's metadata ends with its chunks, a large one's with its
 * objects: each kind comes from a pool of blocks just long enough, and a
 * small segment's from the pool for its class's chunk count (most classes
 * take 16 chunks, the array room for 20), so the metadata that live and
 * retired segments keep (I4) costs no more than they use.  A block never
 * changes pools, so whatever segment it holds has the same cap and
 * wideness (I6): a reader without the lock that checks k < seg->used stays
 * inside the block even while the block is being reused (I4).
 */
#define DL_SEG_MIN_CHUNKS (DL_SEG_PAGES / DL_RUN_PAGES)
#define DL_SEG_CAPS (DL_CHUNKS_PER_SEG - DL_SEG_MIN_CHUNKS + 1)
/* A wide class's block also holds its requested sizes (I6). */
#define DL_SMALL_SEGMENT_POOL(n, wide)                                         \
	[wide][(n) - DL_SEG_MIN_CHUNKS] = {                                    \
		.block = offsetof(struct dl_segment, chunks[n]) +              \
			 (wide) * (n) * DL_MAX_COLS * sizeof(uint16_t),        \
		.name = (wide) ? "small segments, wide" : "small segments",    \
	}
#define DL_SMALL_SEGMENT_POOLS(wide)                                           \
	DL_SMALL_SEGMENT_POOL(16, wide), DL_SMALL_SEGMENT_POOL(17, wide),      \
		DL_SMALL_SEGMENT_POOL(18, wide),                               \
		DL_SMALL_SEGMENT_POOL(19, wide),                               \
		DL_SMALL_SEGMENT_POOL(20, wide)
static struct dl_pool dl_small_segment_pools[2][DL_SEG_CAPS] = {
	DL_SMALL_SEGMENT_POOLS(0),
	DL_SMALL_SEGMENT_POOLS(1),
};
_Static_assert(DL_SEG_MIN_CHUNKS == 16 && DL_CHUNKS_PER_SEG == 20,
	       "one small-segment pool per chunk count");
static struct dl_pool dl_large_segment_pool =
	DL_POOL(struct dl_segment, "large segments");

static struct dl_pool *dl_segment_pool(uint8_t kind, uint8_t cls,
				       uint16_t cap)
{
	return kind == DL_SEG_SMALL
		       ? &dl_small_segment_pools[_dl_classes[cls].wide]
						[cap - DL_SEG_MIN_CHUNKS]
		       : &dl_large_segment_pool;
}

/* A small segment's chunks' stacks (stacks=1) go with its metadata: the
 * pool zeroes the block for its next segment, which would lose them. */
static struct dl_pool dl_stacks_pool =
	DL_POOL(struct dl_slot_stacks, "stacks");

struct dl_slot_stacks *_dl_slot_stacks_alloc(void)
{
	return _dl_pool_alloc(&dl_stacks_pool);
}

static void dl_segment_free(struct dl_segment *seg)
{
	if (seg->kind == DL_SEG_SMALL)
		for (unsigned k = 0; k < seg->used; k++)
			if (seg->chunks[k].stacks)
				_dl_pool_free(&dl_stacks_pool,
					      seg->chunks[k].stacks);
	_dl_pool_free(dl_segment_pool(seg->kind, seg->cls, seg->cap), seg);
}

/*
 * Retired segments keep their metadata for a while so that a late
 * dangling access is still reported with the allocation's size and
 * stacks; the oldest are dropped to dead markers (the report then names
 * the class only).  A small segment's metadata is ~1.2 KiB (16 chunks;
 * ~2.2 KiB for a wide class's, I6).
 * The number kept is 1/32 of the live bytes' worth, between
 * DL_DEAD_KEEP_MIN and DL_DEAD_KEEP_MAX segments.  The floor is the
 * history every program gets whatever its heap: the last 1 GiB of alias
 * space, ~250,000 small allocations, for ~0.6 MiB.  64 (128 MiB, ~30,000
 * allocations) lost the details of a dangling read after a
 * 100,000-allocation churn, which the descriptors suite does; a fixed
 * 1024 (2.2 MiB then) was more than a small program's whole heap
 * (issue 23).
 */
#define DL_DEAD_KEEP_MIN 512
#define DL_DEAD_KEEP_MAX 1024
/* The most dropped by one retirement: a shrinking heap sheds the surplus
 * over the next few, none pays for all. */
#define DL_DEAD_DROP 4
static struct {
	dl_lock_t lock;
	struct dl_segment *head, *tail;
	unsigned n;
} dl_dead;

/* Live segments, for the walk after fork. */
static struct {
	dl_lock_t lock;
	struct dl_segment **v;
	size_t n, cap;
} dl_live;

/*
 * Alias space taken, retired and reusable (R1-R3 in internal.h).  The
 * retired array and the kept list are under dl_dead.lock; the reuse list
 * under dl_space.lock, a leaf taken on every new segment.
 */
static struct {
	dl_lock_t lock;
	struct dl_extents reuse;  /* free list only: bump == end == 0 */
	struct dl_retired *v;     /* retired ranges (dl_dead.lock) */
	size_t n, cap;
	struct dl_segment *kept;  /* pinned, metadata kept (dl_dead.lock) */
	uint64_t limit;
	uint64_t mark;            /* used past this: a sweep is wanted */
} dl_space;
static _Atomic uint64_t dl_fresh;    /* alias bytes ever taken fresh */
static _Atomic uint64_t dl_reusable; /* bytes in the reuse list */
static _Atomic uint64_t dl_retired_bytes;
static _Atomic uint64_t dl_pinned_bytes;
static _Atomic uint64_t dl_live_peak;
atomic_bool _dl_reclaim_wanted;

int _dl_segmap_init(void)
{
	/* 4 MiB reserved, of which a 48-bit backend touches two pages */
	_dl_segmap = _dl_meta_pages(DL_SEGMAP_TOP_ENTRIES * sizeof(*_dl_segmap));
	return _dl_segmap ? 0 : -12;
}

/*
 * Makes the leaves that [base, base+len) needs, before its words are set:
 * false when metadata memory ran out.  Two threads may race for a leaf;
 * the loser gives its copy back.  Leaves are never freed (I4).
 */
static bool dl_segmap_reserve(uintptr_t base, size_t len)
{
	const size_t leaf_span = (size_t)1 << DL_SEGMAP_LEAF_SHIFT;
	const size_t leaf_bytes = DL_SEGMAP_LEAF_ENTRIES * sizeof(uintptr_t);
	for (uintptr_t a = DL_ALIGN_DOWN(base, leaf_span); a < base + len;
	     a += leaf_span) {
		_Atomic(_Atomic uintptr_t *) *top =
			&_dl_segmap[(a >> DL_SEGMAP_LEAF_SHIFT) &
				    (DL_SEGMAP_TOP_ENTRIES - 1)];
		if (atomic_load_explicit(top, memory_order_acquire))
			continue;
		_Atomic uintptr_t *leaf = _dl_meta_pages(leaf_bytes);
		if (!leaf)
			return false;
		_Atomic uintptr_t *none = NULL;
		if (!atomic_compare_exchange_strong_explicit(
			    top, &none, leaf, memory_order_release,
			    memory_order_acquire))
			_dl_meta_unpages(leaf, leaf_bytes);
		if (a + leaf_span < a)
			break; /* the top of the address space */
	}
	return true;
}

static bool dl_live_add(struct dl_segment *seg)
{
	_dl_lock(&dl_live.lock);
	while (dl_live.n == dl_live.cap) {
		/* The array grows with the lock dropped across the mmap: a
		 * fork or a retirement meanwhile sees the old one, whole. */
		size_t cap = dl_live.cap ? dl_live.cap * 2 : 4096;
		_dl_unlock(&dl_live.lock);
		struct dl_segment **v = _dl_meta_pages(cap * sizeof(*v));
		if (!v)
			return false;
		_dl_lock(&dl_live.lock);
		struct dl_segment **old = NULL;
		size_t old_cap = 0;
		if (dl_live.n == dl_live.cap && cap > dl_live.cap) {
			if (dl_live.v)
				memcpy(v, dl_live.v, dl_live.n * sizeof(*v));
			old = dl_live.v;
			old_cap = dl_live.cap;
			dl_live.v = v;
			dl_live.cap = cap;
		} else {
			old = v; /* someone else grew it first */
			old_cap = cap;
		}
		_dl_unlock(&dl_live.lock);
		if (old)
			_dl_meta_unpages(old, old_cap * sizeof(*v));
		_dl_lock(&dl_live.lock);
	}
	dl_live.v[dl_live.n++] = seg;
	_dl_unlock(&dl_live.lock);
	return true;
}

/* Appends r to the retired array (under dl_dead.lock, which is held on
 * entry and on return; dropped while the array grows).  False when no
 * metadata memory is left: the range then stays retired for good. */
static bool dl_retired_add(struct dl_retired r)
{
	while (dl_space.n == dl_space.cap) {
		size_t cap = dl_space.cap ? dl_space.cap * 2 : 4096;
		_dl_unlock(&dl_dead.lock);
		struct dl_retired *v = _dl_meta_pages(cap * sizeof(*v));
		_dl_lock(&dl_dead.lock);
		if (!v)
			return false;
		if (dl_space.n == dl_space.cap && cap > dl_space.cap) {
			struct dl_retired *old = dl_space.v;
			size_t old_cap = dl_space.cap;
			if (old)
				memcpy(v, old, dl_space.n * sizeof(*v));
			dl_space.v = v;
			dl_space.cap = cap;
			v = old;
			cap = old_cap;
		}
		if (v) {
			/* a retirement may drop metadata meanwhile: no lock
			 * of ours is held across the unmapping */
			_dl_unlock(&dl_dead.lock);
			_dl_meta_unpages(v, cap * sizeof(*v));
			_dl_lock(&dl_dead.lock);
		}
	}
	dl_space.v[dl_space.n++] = r;
	atomic_fetch_add(&dl_retired_bytes, r.len);
	return true;
}

static bool dl_live_remove(struct dl_segment *seg)
{
	bool found = false;
	_dl_lock(&dl_live.lock);
	for (size_t i = dl_live.n; i-- > 0;) {
		if (dl_live.v[i] == seg) {
			dl_live.v[i] = dl_live.v[--dl_live.n];
			found = true;
			break;
		}
	}
	_dl_unlock(&dl_live.lock);
	return found;
}

/* The words of [base, base+len), whose leaves dl_segmap_reserve made. */
static void dl_segmap_set(uintptr_t base, size_t len, uintptr_t value)
{
	for (uintptr_t a = base; a < base + len; a += DL_SEG_SIZE) {
		_Atomic uintptr_t *slot = _dl_segmap_slot(a);
		dl_assert(slot);
		atomic_store_explicit(slot, value, memory_order_release);
	}
}

/*
 * Each class carves its segments from a stream of its own, so that its
 * chunks are neighbours in alias space (mappings can merge).  A stream has
 * a lock of its own, never held across the backend's alias_reserve (which
 * may make a system call): a thread that finds the stream used up reserves
 * the next block unlocked, and if another thread refilled the stream
 * meanwhile, carves from its own block this once (the rest of that block
 * is never used; alias space is never reused anyway).
 */
#define DL_STREAM_SIZE ((size_t)16 << 20)
static struct {
	dl_lock_t lock;
	uintptr_t next, end;
	unsigned generation;      /* bumped when dedicated space arrives */
} dl_stream[DL_NCLASSES_MAX];

static void *dl_stream_carve(uint8_t cls, size_t len)
{
	_dl_lock(&dl_stream[cls].lock);
	while (!dl_stream[cls].next ||
	       dl_stream[cls].next + len > dl_stream[cls].end) {
		unsigned generation = dl_stream[cls].generation;
		_dl_unlock(&dl_stream[cls].lock);
		void *block = _dl_be->alias_reserve(DL_STREAM_SIZE, DL_SEG_SIZE);
		if (!block)
			return NULL;
		_dl_lock(&dl_stream[cls].lock);
		if (generation != dl_stream[cls].generation)
			continue; /* reserved before a dedication: unused */
		if (dl_stream[cls].next &&
		    dl_stream[cls].next + len <= dl_stream[cls].end) {
			_dl_unlock(&dl_stream[cls].lock);
			return block;
		}
		dl_stream[cls].next = (uintptr_t)block;
		dl_stream[cls].end = (uintptr_t)block + DL_STREAM_SIZE;
	}
	uintptr_t base = dl_stream[cls].next;
	dl_stream[cls].next += len;
	dl_assert(dl_stream[cls].next <= dl_stream[cls].end); /* I1 */
	_dl_unlock(&dl_stream[cls].lock);
	return (void *)base;
}

/* The stream cursors point into alias space (a segment's end is the next
 * one's start): a sweep must not take them for the program's pointers. */
void _dl_segment_own(void (*fn)(uintptr_t start, size_t len, void *ctx),
		     void *ctx)
{
	fn((uintptr_t)&dl_stream, sizeof(dl_stream), ctx);
}

/* New alias space was dedicated: streams start over from it. */
void _dl_segment_streams_reset(void)
{
	for (unsigned c = 0; c < DL_NCLASSES_MAX; c++) {
		_dl_lock(&dl_stream[c].lock);
		dl_stream[c].next = dl_stream[c].end = 0;
		dl_stream[c].generation++;
		_dl_unlock(&dl_stream[c].lock);
	}
}

/* A reclaimed range of len bytes (first fit), or NULL (R3: first). */
static void *dl_reuse_take(size_t len)
{
	if (!atomic_load_explicit(&dl_reusable, memory_order_relaxed))
		return NULL;
	uintptr_t at = 0;
	_dl_lock(&dl_space.lock);
	bool got = _dl_extents_take(&dl_space.reuse, len, &at);
	_dl_unlock(&dl_space.lock);
	if (!got)
		return NULL;
	atomic_fetch_sub(&dl_reusable, len);
	DL_STAT_ADD(alias_bytes_reused, len);
	/* C1: whatever the backend must do before mapping it again */
	if (_dl_be->alias_reuse && _dl_be->alias_reuse((void *)at, len))
		return NULL; /* lost for good: counted as used from now on */
	return (void *)at;
}

/* Counts len fresh bytes against the cap (R3); false when over it.  Asks
 * for a sweep when used space passes the mark. */
static bool dl_fresh_admit(size_t len)
{
	uint64_t fresh = atomic_fetch_add(&dl_fresh, len) + len;
	if (fresh > dl_space.limit) {
		atomic_fetch_sub(&dl_fresh, len);
		return false;
	}
	uint64_t used = fresh - atomic_load(&dl_reusable);
	if (used > dl_space.mark &&
	    !atomic_load_explicit(&_dl_reclaim_wanted, memory_order_relaxed))
		atomic_store(&_dl_reclaim_wanted, true);
	return true;
}

/* R3: taken fresh less reusable (two loads, not one snapshot). */
static uint64_t dl_space_used(void)
{
	uint64_t fresh = atomic_load(&dl_fresh);
	uint64_t reusable = atomic_load(&dl_reusable);
	return fresh > reusable ? fresh - reusable : 0;
}

/* After a segment is taken: live segments' alias space (neither retired
 * nor reusable) is what no sweep can give back, so its peak is the least
 * cap the program runs under.  The loads are not one snapshot; a sweep
 * moving bytes from retired to reusable meanwhile only lowers it. */
static void dl_live_peak_note(void)
{
	uint64_t held = dl_space_used();
	uint64_t retired = atomic_load(&dl_retired_bytes);
	uint64_t live = held > retired ? held - retired : 0;
	uint64_t peak = atomic_load_explicit(&dl_live_peak, memory_order_relaxed);
	while (live > peak &&
	       !atomic_compare_exchange_weak(&dl_live_peak, &peak, live))
		;
}

void _dl_space_init(uint64_t limit)
{
	dl_space.limit = limit;
	dl_space.mark = limit / 4 * 3;
}

void _dl_space_info(struct dl_space_info *si)
{
	si->limit = dl_space.limit;
	si->used = dl_space_used();
	si->reusable = atomic_load(&dl_reusable);
	si->retired = atomic_load(&dl_retired_bytes);
	si->pinned = atomic_load(&dl_pinned_bytes);
	si->live_peak = atomic_load(&dl_live_peak);
}

struct dl_segment *_dl_segment_new(uint8_t kind, uint8_t cls, size_t len,
				   size_t align, struct dl_failure *fail)
{
	len = DL_ALIGN_UP(len, DL_SEG_SIZE);
	if (align < DL_SEG_SIZE)
		align = DL_SEG_SIZE;
	void *base = align == DL_SEG_SIZE ? dl_reuse_take(len) : NULL;
	if (!base) {
		if (!dl_fresh_admit(len)) {
			*fail = (struct dl_failure){12, "alias_space"};
			return NULL;
		}
		base = kind == DL_SEG_SMALL ? dl_stream_carve(cls, len)
					    : _dl_be->alias_reserve(len, align);
		if (!base) {
			atomic_fetch_sub(&dl_fresh, len);
			*fail = (struct dl_failure){12, "alias address space"};
			return NULL;
		}
	}
	uint16_t cap = kind == DL_SEG_SMALL ? _dl_classes[cls].chunks_per_seg
					    : DL_LARGE_PER_SEG;
	struct dl_segment *seg =
		_dl_pool_alloc(dl_segment_pool(kind, cls, cap));
	if (!seg || !dl_segmap_reserve((uintptr_t)base, len) ||
	    !dl_live_add(seg)) {
		*fail = (struct dl_failure){12, "metadata memory"};
		return NULL;
	}
	dl_assert(!_dl_segmap_get((uintptr_t)base)); /* I1 */
	seg->base = (uintptr_t)base;
	seg->len = len;
	seg->kind = kind;
	seg->cls = cls;
	seg->bump = seg->base;
	seg->cap = cap;
	dl_segmap_set(seg->base, len, (uintptr_t)seg);
	DL_STAT_ADD(alias_bytes_used, len);
	dl_live_peak_note();
	return seg;
}

static unsigned dl_dead_keep(void)
{
	size_t live = atomic_load_explicit(&_dl_stats.live_bytes,
					   memory_order_relaxed);
	size_t n = live / 32 / dl_small_segment_pools[0][0].block;
	return n < DL_DEAD_KEEP_MIN   ? DL_DEAD_KEEP_MIN
	       : n > DL_DEAD_KEEP_MAX ? DL_DEAD_KEEP_MAX
				      : (unsigned)n;
}

void _dl_segment_retire(struct dl_segment *seg)
{
	/* I3: nothing in it is live or cached any more. */
	dl_assert(seg->closed && atomic_load(&seg->dead) == seg->used);
	bool was_live = dl_live_remove(seg);
	dl_assert(was_live); /* retired once */
	/* Whatever is still mapped goes; dead ranges keep faulting. */
	_dl_be->alias_release((void *)seg->base, seg->len);
	struct dl_segment *drop[DL_DEAD_DROP];
	unsigned ndrop = 0, keep = dl_dead_keep();
	seg->swept = DL_SWEPT_NOT;
	_dl_lock(&dl_dead.lock);
	dl_retired_add((struct dl_retired){.base = seg->base, .len = seg->len});
	seg->next_dead = NULL;
	if (dl_dead.tail)
		dl_dead.tail->next_dead = seg;
	else
		dl_dead.head = seg;
	dl_dead.tail = seg;
	for (dl_dead.n++; dl_dead.n > keep && ndrop < DL_DEAD_DROP; dl_dead.n--) {
		drop[ndrop++] = dl_dead.head;
		dl_dead.head = dl_dead.head->next_dead;
	}
	/* Still under dl_dead.lock, which a sweep holds throughout: a sweep
	 * between taking d off the ring and marking its range would find the
	 * range's entry still pointing at d, may make it reusable and see it
	 * taken by a new segment, whose entry the late mark would then
	 * overwrite. */
	for (unsigned i = 0; i < ndrop; i++) {
		struct dl_segment *d = drop[i];
		uint8_t cls = d->kind == DL_SEG_SMALL ? d->cls : DL_DEAD_LARGE;
		dl_segmap_set(d->base, d->len, DL_DEAD_MARK(cls));
		dl_segment_free(d);
	}
	_dl_unlock(&dl_dead.lock);
}

/* ---- sweeps (reclaim.c holds every lock; R2) ---- */

struct dl_retired *_dl_space_sweep_begin(size_t *n, uintptr_t *lo,
					 uintptr_t *hi)
{
	uintptr_t min = UINTPTR_MAX, max = 0;
	for (size_t i = 0; i < dl_space.n; i++) {
		struct dl_retired *r = &dl_space.v[i];
		r->was = _dl_segmap_get(r->base);
		r->pinned = false;
		r->pinned_at = 0;
		dl_assert(r->was && !DL_SEGMAP_IS_CAND(r->was));
		/* R1: a retired range's entry names a dead segment at it */
		const struct dl_segment *was = (const void *)r->was;
		dl_assert((r->was & 1) || (was->base == r->base && was->closed));
		dl_segmap_set(r->base, r->len, DL_SEGMAP_CAND(i));
		if (r->base < min)
			min = r->base;
		if (r->base + r->len > max)
			max = r->base + r->len;
	}
	*n = dl_space.n;
	*lo = min;
	*hi = max;
	return dl_space.v;
}

void _dl_space_sweep_decide(void)
{
	uint64_t pinned = 0;
	for (size_t i = 0; i < dl_space.n; i++) {
		struct dl_retired *r = &dl_space.v[i];
		struct dl_segment *seg =
			r->was & 1 ? NULL : (struct dl_segment *)r->was;
		if (seg)
			seg->swept = r->pinned ? DL_SWEPT_PINNED
					       : DL_SWEPT_REUSABLE;
		if (r->pinned)
			pinned += r->len;
		/* R1: a reusable range is nobody's; reports of it stop. */
		dl_segmap_set(r->base, r->len, r->pinned ? r->was : 0);
	}
	atomic_store(&dl_pinned_bytes, pinned);
}

uint64_t _dl_space_sweep_finish(void)
{
	/* Metadata: reusable segments' goes back, pinned ones' is kept. */
	struct dl_segment *ring = dl_dead.head, *kept = dl_space.kept;
	dl_dead.head = dl_dead.tail = NULL;
	dl_dead.n = 0;
	dl_space.kept = NULL;
	for (int pass = 0; pass < 2; pass++) {
		struct dl_segment *seg = pass ? kept : ring;
		while (seg) {
			struct dl_segment *next = seg->next_dead;
			if (seg->swept == DL_SWEPT_PINNED) {
				seg->next_dead = dl_space.kept;
				dl_space.kept = seg;
			} else if (seg->swept == DL_SWEPT_REUSABLE) {
				dl_segment_free(seg);
			} else { /* retired after the sweep began */
				seg->next_dead = NULL;
				if (dl_dead.tail)
					dl_dead.tail->next_dead = seg;
				else
					dl_dead.head = seg;
				dl_dead.tail = seg;
				dl_dead.n++;
			}
			seg = next;
		}
	}
	/* Ranges: reusable ones to the reuse list, the others stay. */
	uint64_t reclaimed = 0;
	size_t keep = 0;
	for (size_t i = 0; i < dl_space.n; i++) {
		struct dl_retired r = dl_space.v[i];
		if (r.pinned) {
			dl_space.v[keep++] = r;
			continue;
		}
		_dl_extents_give(&dl_space.reuse, r.base, r.len);
		reclaimed += r.len;
	}
	dl_space.n = keep;
	atomic_fetch_add(&dl_reusable, reclaimed);
	atomic_fetch_sub(&dl_retired_bytes, reclaimed);
	/* The next sweep when half of what is left is used again. */
	uint64_t used = dl_space_used();
	dl_space.mark = used + (dl_space.limit - used) / 2;
	atomic_store(&_dl_reclaim_wanted, false);
	DL_STAT_ADD(reclaimed_bytes, reclaimed);
	return reclaimed;
}

void _dl_space_sweep_abandoned(void)
{
	uint64_t used = dl_space_used();
	dl_space.mark = used + (dl_space.limit - used) / 2;
	atomic_store(&_dl_reclaim_wanted, false);
}

void _dl_segment_for_each_live(void (*fn)(struct dl_segment *))
{
	for (size_t i = 0; i < dl_live.n; i++)
		fn(dl_live.v[i]);
}

/* A revocation the backend could not make: a dangling pointer must never
 * stay usable, so the process stops, saying why and what to do. */
static __attribute__((noreturn)) void dl_revoke_failed(int err,
						       uintptr_t start,
						       unsigned ranges)
{
	char why[512] = "";
	bool explained = err == -12 && _dl_be->explain_enomem &&
			 _dl_be->explain_enomem(why, sizeof(why));
	_dl_fatal("could not revoke %u alias range%s from %p (%s)%s%s; "
		  "stopping rather than leave a dangling pointer usable",
		  ranges, ranges == 1 ? "" : "s", (void *)start,
		  _dl_strerror(-err), explained ? ": " : "", why);
}

void _dl_alias_revoke(uintptr_t start, size_t len)
{
	int err = _dl_be->alias_revoke((void *)start, len);
	if (err)
		dl_revoke_failed(err, start, 1);
	DL_STAT_ADD(revokes, 1);
	DL_STAT_ADD(revoked_pages, len / DL_PAGE);
}

void _dl_alias_revoke_many(const struct dl_range *ranges, unsigned n)
{
	if (!_dl_be->alias_revoke_many) {
		for (unsigned i = 0; i < n; i++)
			_dl_alias_revoke(ranges[i].start, ranges[i].len);
		return;
	}
	int err = _dl_be->alias_revoke_many(ranges, n);
	if (err)
		dl_revoke_failed(err, ranges[0].start, n);
	size_t pages = 0;
	for (unsigned i = 0; i < n; i++)
		pages += ranges[i].len / DL_PAGE;
	DL_STAT_ADD(revokes, 1);
	DL_STAT_ADD(revoked_pages, pages);
}

void _dl_segment_lock_all(void)
{
	for (unsigned c = 0; c < DL_NCLASSES_MAX; c++)
		_dl_lock(&dl_stream[c].lock);
	_dl_lock(&dl_live.lock);
	_dl_lock(&dl_dead.lock);
	_dl_lock(&dl_space.lock);
}

void _dl_segment_unlock_all(bool reset)
{
	void (*op)(dl_lock_t *) = reset ? _dl_lock_reset : _dl_unlock;
	op(&dl_space.lock);
	op(&dl_dead.lock);
	op(&dl_live.lock);
	for (unsigned c = 0; c < DL_NCLASSES_MAX; c++)
		op(&dl_stream[c].lock);
}
