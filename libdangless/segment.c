/* SPDX-License-Identifier: MIT */
/*
 * Alias segments and the map from an alias address to its metadata.
 *
 * The map is one flat array over the 48-bit canonical address space (both
 * halves: see _dl_segmap_index), one word per DL_SEG_SIZE segment,
 * reserved without backing: only the parts that cover alias space we used
 * ever get pages.  Lookups are a load, without
 * locks, from free(), realloc() and the fault handler.
 */
#include <string.h>

#include "internal.h"

_Atomic uintptr_t *_dl_segmap;

/*
 * A small segment's metadata ends with its chunks, a large one's with its
 * objects: each kind comes from a pool of blocks just long enough, so the
 * metadata that retired segments keep for reports (I4) costs half as much
 * for small ones.
 */
static struct dl_pool dl_small_segment_pool = {
	.block = offsetof(struct dl_segment, chunks[DL_CHUNKS_PER_SEG]),
	.name = "small segments",
};
static struct dl_pool dl_large_segment_pool =
	DL_POOL(struct dl_segment, "large segments");

static struct dl_pool *dl_segment_pool(uint8_t kind)
{
	return kind == DL_SEG_SMALL ? &dl_small_segment_pool
				    : &dl_large_segment_pool;
}

/*
 * Retired segments keep their metadata for a while so that a late
 * dangling access is still reported with the allocation's size; the
 * oldest are dropped to dead markers.
 */
#define DL_DEAD_KEEP 1024
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

int _dl_segmap_init(void)
{
	_dl_segmap = _dl_meta_pages(DL_SEGMAP_ENTRIES * sizeof(uintptr_t));
	return _dl_segmap ? 0 : -12;
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

static void dl_live_remove(struct dl_segment *seg)
{
	_dl_lock(&dl_live.lock);
	for (size_t i = dl_live.n; i-- > 0;) {
		if (dl_live.v[i] == seg) {
			dl_live.v[i] = dl_live.v[--dl_live.n];
			break;
		}
	}
	_dl_unlock(&dl_live.lock);
}

static void dl_segmap_set(uintptr_t base, size_t len, uintptr_t value)
{
	for (uintptr_t a = base; a < base + len; a += DL_SEG_SIZE)
		atomic_store_explicit(&_dl_segmap[_dl_segmap_index(a)], value,
				      memory_order_release);
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

struct dl_segment *_dl_segment_new(uint8_t kind, uint8_t cls, size_t len,
				   size_t align, struct dl_failure *fail)
{
	len = DL_ALIGN_UP(len, DL_SEG_SIZE);
	if (align < DL_SEG_SIZE)
		align = DL_SEG_SIZE;
	void *base = kind == DL_SEG_SMALL ? dl_stream_carve(cls, len)
					  : _dl_be->alias_reserve(len, align);
	if (!base) {
		*fail = (struct dl_failure){12, "alias address space"};
		return NULL;
	}
	struct dl_segment *seg = _dl_pool_alloc(dl_segment_pool(kind));
	if (!seg || !dl_live_add(seg)) {
		*fail = (struct dl_failure){12, "metadata memory"};
		return NULL;
	}
	dl_assert(!_dl_segmap[_dl_segmap_index((uintptr_t)base)]); /* I1 */
	seg->base = (uintptr_t)base;
	seg->len = len;
	seg->kind = kind;
	seg->cls = cls;
	seg->bump = seg->base;
	if (kind == DL_SEG_SMALL)
		seg->cap = _dl_classes[cls].chunks_per_seg;
	else
		seg->cap = DL_LARGE_PER_SEG;
	dl_segmap_set(seg->base, len, (uintptr_t)seg);
	DL_STAT_ADD(alias_bytes_used, len);
	return seg;
}

void _dl_segment_retire(struct dl_segment *seg)
{
	/* I3: nothing in it is live or cached any more. */
	dl_assert(seg->closed && atomic_load(&seg->dead) == seg->used);
	dl_live_remove(seg);
	/* Whatever is still mapped goes; dead ranges keep faulting. */
	_dl_be->alias_release((void *)seg->base, seg->len);
	struct dl_segment *drop = NULL;
	_dl_lock(&dl_dead.lock);
	seg->next_dead = NULL;
	if (dl_dead.tail)
		dl_dead.tail->next_dead = seg;
	else
		dl_dead.head = seg;
	dl_dead.tail = seg;
	if (++dl_dead.n > DL_DEAD_KEEP) {
		drop = dl_dead.head;
		dl_dead.head = drop->next_dead;
		dl_dead.n--;
	}
	_dl_unlock(&dl_dead.lock);
	if (drop) {
		uint8_t cls = drop->kind == DL_SEG_SMALL ? drop->cls
							 : DL_DEAD_LARGE;
		dl_segmap_set(drop->base, drop->len, DL_DEAD_MARK(cls));
		_dl_pool_free(dl_segment_pool(drop->kind), drop);
	}
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
		  strerror(-err), explained ? ": " : "", why);
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
}

void _dl_segment_unlock_all(bool reset)
{
	void (*op)(dl_lock_t *) = reset ? _dl_lock_reset : _dl_unlock;
	op(&dl_dead.lock);
	op(&dl_live.lock);
	for (unsigned c = 0; c < DL_NCLASSES_MAX; c++)
		op(&dl_stream[c].lock);
}
