/* SPDX-License-Identifier: MIT */
/*
 * Large objects (over DL_SMALL_MAX, or aligned beyond a page): each has a
 * canonical extent and an alias range of its own, carved in address order
 * from a shared large segment (up to DL_LARGE_PACK_MAX) or from segments of
 * its own.  free() releases the range (which revokes it); the extent goes
 * to a small warm cache, or back to the backend beyond the cache's bound.
 */
#include <string.h>

#include "internal.h"

/*
 * Freed extents kept with their pages, for the next large allocation of
 * about the same size: reusing one costs a populated mapping instead of a
 * punch now and a fresh zeroed page per page later.  An extent enters only
 * after its alias range is released (revoked), so the new object's alias
 * is the only live view of it.
 *
 * Bound: DL_LARGE_CACHE_SLOTS extents and at most the larger of
 * DL_LARGE_CACHE_FLOOR and a quarter of the live heap's bytes, small
 * objects' and large ones' alike (the bound of run.c's warm runs, kept
 * apart from them).  The floor covers a program that allocates and frees a
 * buffer of up to 2 MiB in turn; the quarter lets a program with a big
 * heap keep its waves of large objects warm while its footprint grows by
 * at most a quarter.  A small program keeps at most the floor.  (It was
 * 4 MiB, and a quarter of the large objects alone: sqlite3's footprint at
 * its peak was 2.0x glibc's, 1.8x with 2 MiB; 1 MiB gave no less memory
 * and cost up to 10% in time; bench/results/notes.md.)  Extents larger
 * than the bound are never kept.
 */
#define DL_LARGE_CACHE_SLOTS 16
#define DL_LARGE_CACHE_FLOOR ((size_t)2 << 20)
struct dl_warm_extent {
	uintptr_t canon;
	size_t len;
};

static struct {
	dl_lock_t lock;
	struct dl_segment *seg;   /* packed large objects are carved here */
	unsigned seg_gen;         /* bumped whenever seg changes */
	struct dl_warm_extent warm[DL_LARGE_CACHE_SLOTS]; /* oldest first */
	unsigned nwarm;
	size_t warm_bytes;
} dl_large_state;


/*
 * A warm extent of at least len bytes and at most twice that (the
 * smallest), or 0.  Its tail beyond len goes back to the backend.
 */
static uintptr_t dl_warm_take(size_t len)
{
	unsigned best = DL_LARGE_CACHE_SLOTS;
	_dl_lock(&dl_large_state.lock);
	for (unsigned i = 0; i < dl_large_state.nwarm; i++) {
		size_t l = dl_large_state.warm[i].len;
		if (l >= len && l / 2 <= len &&
		    (best == DL_LARGE_CACHE_SLOTS ||
		     l < dl_large_state.warm[best].len))
			best = i;
	}
	if (best == DL_LARGE_CACHE_SLOTS) {
		_dl_unlock(&dl_large_state.lock);
		return 0;
	}
	struct dl_warm_extent e = dl_large_state.warm[best];
	memmove(&dl_large_state.warm[best], &dl_large_state.warm[best + 1],
		(--dl_large_state.nwarm - best) * sizeof(e));
	dl_large_state.warm_bytes -= e.len;
	_dl_unlock(&dl_large_state.lock);
	if (e.len > len) {
		_dl_be->canon_free((void *)(e.canon + len), e.len - len);
		DL_STAT_SUB(canonical_bytes, e.len - len);
	}
	return e.canon;
}

/* Keeps the freed extent warm, or gives back what the bound leaves out. */
static void dl_warm_put(uintptr_t canon, size_t len)
{
	struct dl_warm_extent out[DL_LARGE_CACHE_SLOTS + 1];
	unsigned nout = 0;
	_dl_lock(&dl_large_state.lock);
	size_t bound = _dl_live_quarter_or(DL_LARGE_CACHE_FLOOR);
	if (len > bound) {
		out[nout++] = (struct dl_warm_extent){canon, len};
	} else {
		while (dl_large_state.nwarm == DL_LARGE_CACHE_SLOTS ||
		       dl_large_state.warm_bytes + len > bound) {
			out[nout++] = dl_large_state.warm[0];
			dl_large_state.warm_bytes -= dl_large_state.warm[0].len;
			memmove(&dl_large_state.warm[0],
				&dl_large_state.warm[1],
				--dl_large_state.nwarm * sizeof(out[0]));
		}
		dl_large_state.warm[dl_large_state.nwarm++] =
			(struct dl_warm_extent){canon, len};
		dl_large_state.warm_bytes += len;
	}
	_dl_unlock(&dl_large_state.lock);
	for (unsigned i = 0; i < nout; i++) {
		_dl_be->canon_free((void *)out[i].canon, out[i].len);
		DL_STAT_SUB(canonical_bytes, out[i].len);
	}
}

/* Objects are carved in address order: binary search. */
static struct dl_large *dl_large_of(struct dl_segment *seg, uintptr_t addr)
{
	unsigned lo = 0, hi = seg->used;
	while (lo < hi) {
		unsigned mid = (lo + hi) / 2;
		struct dl_large *o = &seg->objs[mid];
		if (addr < o->range)
			hi = mid;
		else if (addr >= o->range + o->range_len)
			lo = mid + 1;
		else
			return o;
	}
	return NULL;
}

/* o is freed: its range stops working and its memory goes back. */
static void dl_large_finish(struct dl_segment *seg, struct dl_large *o)
{
	/* Releasing revokes: the range faults from here on, so the extent
	 * may be handed out again. */
	_dl_be->alias_release((void *)o->range, o->range_len);
	DL_STAT_ADD(revokes, 1);
	DL_STAT_ADD(revoked_pages, o->range_len / DL_PAGE);
	dl_warm_put(o->canon, o->canon_len);
	_dl_lock(&dl_large_state.lock);
	unsigned dead = atomic_fetch_add(&seg->dead, 1) + 1;
	dl_assert(dead <= seg->used);
	bool retire = seg->closed && dead == seg->used;
	_dl_unlock(&dl_large_state.lock);
	if (retire)
		_dl_segment_retire(seg);
}

void *_dl_large_alloc(size_t req, size_t align, bool zero,
		      struct dl_failure *fail)
{
	size_t len = DL_ALIGN_UP(req ? req : 1, DL_PAGE);
	if (len < req) {
		*fail = (struct dl_failure){12, NULL}; /* plain ENOMEM */
		return NULL;
	}
	if (align < DL_PAGE)
		align = DL_PAGE;
	void *canon = (void *)dl_warm_take(len);
	bool warm = canon != NULL;
	if (!warm) {
		canon = _dl_be->canon_alloc(len, true);
		if (!canon) {
			*fail = (struct dl_failure){12, NULL}; /* ENOMEM */
			return NULL;
		}
		DL_STAT_ADD(canonical_bytes, len);
	}
	/*
	 * New segments are made with the large lock dropped: reserving alias
	 * space may make a system call.  An object over DL_LARGE_PACK_MAX has
	 * one of its own; a shared one that another thread replaced while we
	 * made ours is retired unused.
	 */
	struct dl_segment *seg = NULL, *retire = NULL;
	uintptr_t alias;
	bool own = len > DL_LARGE_PACK_MAX || align > DL_SEG_SIZE;
	if (own) {
		seg = _dl_segment_new(DL_SEG_LARGE, 0, len, align, fail);
		if (seg)
			seg->cap = 1;
	}
	_dl_lock(&dl_large_state.lock);
	while (!own) {
		seg = dl_large_state.seg;
		alias = seg ? DL_ALIGN_UP(seg->bump, align) : 0;
		if (seg && seg->used < seg->cap &&
		    alias + len <= seg->base + seg->len)
			break;
		/* A generation, not seg itself, tells whether it changed
		 * meanwhile: seg may close, retire and its metadata come back
		 * as the next shared segment (I5). */
		unsigned gen = dl_large_state.seg_gen;
		_dl_unlock(&dl_large_state.lock);
		struct dl_segment *fresh = _dl_segment_new(
			DL_SEG_LARGE, 0, DL_SEG_SIZE, DL_SEG_SIZE, fail);
		_dl_lock(&dl_large_state.lock);
		if (!fresh) {
			seg = NULL;
			break;
		}
		bool changed = dl_large_state.seg_gen != gen;
		if (changed && dl_large_state.seg) {
			/* Someone replaced it first: ours is not needed. */
			_dl_unlock(&dl_large_state.lock);
			fresh->closed = true;
			_dl_segment_retire(fresh);
			_dl_lock(&dl_large_state.lock);
			continue;
		}
		if (!changed && seg) {
			seg->closed = true;
			if (atomic_load(&seg->dead) == seg->used)
				retire = seg;
		}
		dl_large_state.seg = fresh;
		dl_large_state.seg_gen++;
	}
	if (!seg) {
		_dl_unlock(&dl_large_state.lock);
		dl_warm_put((uintptr_t)canon, len);
		return NULL;
	}
	alias = DL_ALIGN_UP(seg->bump, align);
	dl_assert(alias >= seg->bump && alias + len <= seg->base + seg->len);
	struct dl_large *o = &seg->objs[seg->used];
	o->range = alias;
	o->range_len = len;
	o->alias = alias;
	o->canon = (uintptr_t)canon;
	o->canon_len = len;
	o->req = req;
	o->alloc_stack = _dl_opt.stacks ? _dl_stack_capture() : 0;
	o->free_stack = 0;
	atomic_store(&o->state, DL_LARGE_LIVE);
	/* I1: the range is above every one carved before it. */
	seg->bump = alias + len;
	/* publishes o to lock-free lookups: its fields first */
	atomic_thread_fence(memory_order_release);
	seg->used++;
	if (seg->used == seg->cap) {
		seg->closed = true;
		if (dl_large_state.seg == seg) {
			dl_large_state.seg = NULL; /* I5 */
			dl_large_state.seg_gen++;
		}
	}
	_dl_unlock(&dl_large_state.lock);
	if (retire)
		_dl_segment_retire(retire);

	/*
	 * Not populated, warm or not: MAP_POPULATE of a warm extent's pages
	 * costs ~120 ns a page here, paid again when the range is released,
	 * and the first write to each page still costs 4-5 us on this VM
	 * (shadow page tables); a 1 MiB malloc+free that touches two pages
	 * went from 22 to 110-150 us with it.
	 */
	int err = _dl_be->alias_map((void *)alias, canon, len, 0);
	if (err) {
		atomic_store(&o->state, DL_LARGE_FREED);
		dl_large_finish(seg, o);
		*fail = (struct dl_failure){-err, "mapping an alias"};
		return NULL;
	}
	DL_STAT_ADD(alias_maps, 1);
	/* A fresh extent reads zero; a warm one holds an old object's bytes. */
	if (warm && zero)
		memset((void *)alias, 0, len);
	DL_STAT_ADD(allocs, 1);
	DL_STAT_ADD(live_objects, 1);
	DL_STAT_ADD(live_bytes, req);
	return (void *)alias;
}

static enum dl_verdict dl_large_find(struct dl_segment *seg, void *p,
				     struct dl_obj *o, struct dl_large **out)
{
	struct dl_large *l = dl_large_of(seg, (uintptr_t)p);
	*o = (struct dl_obj){0};
	*out = l;
	if (!l)
		return DL_PTR_UNKNOWN;
	*o = (struct dl_obj){l->alias, l->req, l->alloc_stack, l->free_stack};
	if (atomic_load(&l->state) != DL_LARGE_LIVE)
		return DL_PTR_FREED;
	return (uintptr_t)p == l->alias ? DL_PTR_LIVE : DL_PTR_INTERIOR;
}

enum dl_verdict _dl_large_lookup(struct dl_segment *seg, void *p,
				 struct dl_obj *o)
{
	struct dl_large *l;
	return dl_large_find(seg, p, o, &l);
}

enum dl_verdict _dl_large_free(struct dl_segment *seg, void *p,
			       struct dl_obj *o)
{
	struct dl_large *l;
	enum dl_verdict v = dl_large_find(seg, p, o, &l);
	if (v != DL_PTR_LIVE)
		return v;
	int live = DL_LARGE_LIVE;
	if (!atomic_compare_exchange_strong(&l->state, &live, DL_LARGE_FREED))
		return DL_PTR_FREED;
	if (_dl_opt.stacks)
		l->free_stack = _dl_stack_capture();
	DL_STAT_ADD(frees, 1);
	DL_STAT_SUB(live_objects, 1);
	DL_STAT_SUB(live_bytes, l->req);
	dl_large_finish(seg, l);
	return DL_PTR_LIVE;
}

size_t _dl_large_usable(struct dl_segment *seg, void *p)
{
	struct dl_large *l = dl_large_of(seg, (uintptr_t)p);
	return l ? l->canon_len : 0;
}

void *_dl_large_canonical(struct dl_segment *seg, void *p)
{
	struct dl_large *l = dl_large_of(seg, (uintptr_t)p);
	if (!l || atomic_load(&l->state) != DL_LARGE_LIVE ||
	    (uintptr_t)p >= l->alias + l->canon_len)
		return NULL;
	return (void *)(l->canon + ((uintptr_t)p - l->alias));
}

bool _dl_large_resize(struct dl_segment *seg, void *p, size_t req)
{
	struct dl_large *l = dl_large_of(seg, (uintptr_t)p);
	size_t len = DL_ALIGN_UP(req ? req : 1, DL_PAGE);
	if (!l || len > l->canon_len)
		return false;
	if (len < l->canon_len) {
		/* Thesis semantics: the pages past the new end are revoked
		 * and their canonical memory goes back. */
		size_t cut = l->canon_len - len;
		_dl_be->alias_release((void *)(l->alias + len), cut);
		_dl_be->canon_free((void *)(l->canon + len), cut);
		DL_STAT_SUB(canonical_bytes, cut);
		DL_STAT_ADD(revokes, 1);
		DL_STAT_ADD(revoked_pages, cut / DL_PAGE);
		l->canon_len = len;
	}
	DL_STAT_ADD(live_bytes, req);
	DL_STAT_SUB(live_bytes, l->req);
	l->req = req;
	return true;
}

enum dl_fault_kind _dl_large_describe(struct dl_segment *seg, uintptr_t addr,
				      struct dl_obj *o)
{
	struct dl_large *l;
	dl_large_find(seg, (void *)addr, o, &l);
	if (!l)
		return DL_FAULT_NOT_OURS;
	if (atomic_load(&l->state) == DL_LARGE_FREED)
		return DL_FAULT_FREED;
	if (addr >= l->alias + l->canon_len)
		return DL_FAULT_SHRUNK;
	return DL_FAULT_NOT_OURS;
}

void _dl_large_lock_all(void)
{
	_dl_lock(&dl_large_state.lock);
}

void _dl_large_unlock_all(bool reset)
{
	(reset ? _dl_lock_reset : _dl_unlock)(&dl_large_state.lock);
}

/* Live large objects' canonical extents; the large lock is held. */
void _dl_large_for_each_live(struct dl_segment *seg,
			     void (*fn)(uintptr_t canon, size_t len))
{
	for (unsigned i = 0; i < seg->used; i++) {
		struct dl_large *o = &seg->objs[i];
		if (atomic_load(&o->state) == DL_LARGE_LIVE)
			fn(o->canon, o->canon_len);
	}
}

/* Live objects' extents of seg, or (seg NULL) the warm extents; the large
 * lock is held (memory.c). */
void _dl_large_account(struct dl_segment *seg, struct dl_mem_split *m)
{
	uint64_t bytes;
	if (!seg) {
		for (unsigned i = 0; i < dl_large_state.nwarm; i++)
			if (_dl_resident_bytes(dl_large_state.warm[i].canon,
					       dl_large_state.warm[i].len, &bytes))
				m->warm += bytes;
		return;
	}
	for (unsigned i = 0; i < seg->used; i++) {
		struct dl_large *o = &seg->objs[i];
		if (atomic_load(&o->state) != DL_LARGE_LIVE)
			continue;
		size_t head = DL_ALIGN_DOWN(o->req, DL_PAGE);
		if (_dl_resident_bytes(o->canon, head, &bytes))
			m->live += bytes;
		/* The page the request ends in: live up to the end of the
		 * request, slack after it. */
		if (o->req > head &&
		    _dl_resident_bytes(o->canon + head, DL_PAGE, &bytes) && bytes) {
			m->live += o->req - head;
			m->slack += DL_PAGE - (o->req - head);
		}
		size_t tail = DL_ALIGN_UP(o->req, DL_PAGE);
		if (o->canon_len > tail &&
		    _dl_resident_bytes(o->canon + tail, o->canon_len - tail,
				       &bytes))
			m->slack += bytes;
	}
}
