/* SPDX-License-Identifier: MIT */
/*
 * Small objects: each thread hands out the slots of its current chunk of a
 * class without a lock; when the chunk is used up it carves a new one
 * (run.c) and maps one alias of the whole run.  free() marks the slot
 * freed; its alias is then revoked at once (strict) or by the quarantine
 * (batch), and only then does the slot go back to its run (I2).
 */
#include <string.h>

#include "internal.h"

/*
 * A thread's slots of one class: the chunk it hands out now, and the
 * chunks carved with it that come next (neighbours in the same segment).
 */
struct dl_cached_chunk {
	struct dl_segment *seg;
	struct dl_chunk *chunk;   /* handing out now */
	uintptr_t alias;          /* its alias range */
	uint32_t avail;           /* carved slots not yet handed out */
	uint8_t next, n;          /* queued[next..n) follow chunk */
	uint16_t refills;         /* of this class by this thread */
	uint32_t queued[DL_REFILL_MAX - 1]; /* carved columns of the next ones */
};
/*
 * The thread's caches live in a metadata block, not in TLS: initial-exec
 * TLS must fit the few KiB glibc keeps for libraries loaded later, or
 * dlopen of libdangless.so (`dangless check`, --help) fails.  A thread
 * gets its block on its first small allocation and gives it back at exit;
 * one that allocates again later (another TLS destructor) gets another.
 */
struct dl_thread_cache {
	struct dl_cached_chunk cls[DL_NCLASSES_MAX];
};
static struct dl_pool dl_cache_pool =
	DL_POOL(struct dl_thread_cache, "thread caches");
static __thread struct dl_thread_cache *dl_cache
	__attribute__((tls_model("initial-exec")));

/* ---- requested sizes (I6) ---- */

static size_t dl_req(struct dl_segment *seg, const struct dl_chunk *ch,
		     unsigned col)
{
	const struct dl_class *c = &_dl_classes[seg->cls];
	/* A reader racing a block's reuse (I4) may see another class's size:
	 * a wrong size in a report, but never one past the slot. */
	if (c->wide) {
		size_t req = dl_wide_req(seg, (unsigned)(ch - seg->chunks))[col];
		return req <= c->size ? req : c->size;
	}
	return ch->slack[col] <= c->size ? c->size - ch->slack[col] : 0;
}

static void dl_set_req(struct dl_segment *seg, struct dl_chunk *ch,
		       unsigned col, size_t req)
{
	const struct dl_class *c = &_dl_classes[seg->cls];
	if (c->wide) {
		dl_wide_req(seg, (unsigned)(ch - seg->chunks))[col] =
			(uint16_t)req;
	} else {
		dl_assert(req <= c->size && c->size - req <= UINT8_MAX);
		ch->slack[col] = (uint8_t)(c->size - req);
	}
}

/* ---- chunk address math ---- */

/* The chunk of seg that addr falls in, its column and that slot's start. */
static struct dl_chunk *dl_chunk_of(struct dl_segment *seg, uintptr_t addr,
				    unsigned *col, uintptr_t *slot_start)
{
	const struct dl_class *c = &_dl_classes[seg->cls];
	size_t chunk_len = (size_t)c->run_pages * DL_PAGE;
	size_t col_len = (size_t)c->col_pages * DL_PAGE;
	uintptr_t off = addr - seg->base;
	unsigned k = (unsigned)(off / chunk_len);
	if (k >= seg->used)
		return NULL;
	struct dl_chunk *ch = &seg->chunks[k];
	uintptr_t in_chunk = off % chunk_len;
	*col = (unsigned)(in_chunk / col_len);
	*slot_start = seg->base + k * chunk_len + *col * col_len +
		      (uintptr_t)ch->row * c->size;
	return ch;
}

static uintptr_t dl_chunk_alias(struct dl_segment *seg, struct dl_chunk *ch)
{
	const struct dl_class *c = &_dl_classes[seg->cls];
	return seg->base +
	       (uintptr_t)(ch - seg->chunks) * c->run_pages * DL_PAGE;
}

/* ---- allocation ---- */

/*
 * How many chunks a refill carves.  Each mapping costs a system call (and
 * the process's mapping lock, shared by every thread), so a thread that
 * keeps coming back for the same class gets up to DL_REFILL_MAX chunks
 * mapped at once; a thread that allocates a class now and then takes one
 * at a time and holds few slots it may never use.
 */
static unsigned dl_refill_size(const struct dl_cached_chunk *cc)
{
	unsigned want = 1u + cc->refills / 2u;
	return want < DL_REFILL_MAX ? want : DL_REFILL_MAX;
}

static bool dl_refill(struct dl_cached_chunk *cc, unsigned cls,
		      struct dl_failure *fail)
{
	const struct dl_class *c = &_dl_classes[cls];
	size_t chunk_len = (size_t)c->run_pages * DL_PAGE;
	if (cc->next < cc->n) {
		/* The next chunk carved with this one: already mapped. */
		cc->chunk++;
		cc->alias += chunk_len;
		cc->avail = cc->queued[cc->next++ - 1];
		return true;
	}
	struct dl_carve carve[DL_REFILL_MAX];
	unsigned n = _dl_chunk_carve(cls, dl_refill_size(cc), carve, fail);
	if (!n)
		return false;
	unsigned slots = 0, open = 0;
	for (unsigned i = 0; i < n; i++) {
		slots += (unsigned)__builtin_popcount(carve[i].carved);
		open += (unsigned)__builtin_popcount(carve[i].open);
	}
	/* Making all the runs' page-table entries at once costs about a
	 * quarter of faulting one page in: worth it when the chunks hand
	 * out at least a quarter of their columns, and once this thread has
	 * used up a chunk of the class.  The first chunk is faulted in page
	 * by page: populating it made a shmem page for every column of every
	 * class a program ever touched, ~2 ms of /bin/ls's start-up (450
	 * page faults) for objects most short-lived programs never make.
	 * Of a narrow run (the last carved, if any), only the pages of its
	 * open columns: the others' are what narrowness saves.  Never for a
	 * class whose columns span pages (past 4 KiB): a row's slot covers
	 * a part of its column, so populating made the other rows' pages and
	 * every page of an object the program writes a byte of (1,000
	 * objects of 20,000 B, a byte written each: 21 MB, glibc 4.3). */
	bool populate = cc->refills > 0 && 4 * slots >= open &&
			c->col_pages == 1;
	size_t touch = (n - 1) * chunk_len +
		       (size_t)__builtin_popcount(carve[n - 1].open) *
			       c->col_pages * DL_PAGE;
	/* I1: the chunks' range is mapped once, right after it is carved. */
	int err = _dl_be->alias_map((void *)carve[0].alias,
				    (void *)carve[0].chunk->run->canon,
				    n * chunk_len, populate ? touch : 0);
	if (err) {
		/* Never handed out, so nothing to revoke (I2). */
		for (unsigned i = 0; i < n; i++)
			_dl_slots_return(carve[i].seg, carve[i].chunk,
					 carve[i].carved);
		*fail = (struct dl_failure){-err, "mapping an alias"};
		return false;
	}
	DL_STAT_ADD(alias_maps, 1);
	if (cc->refills < UINT16_MAX)
		cc->refills++;
	cc->seg = carve[0].seg;
	cc->chunk = carve[0].chunk;
	cc->alias = carve[0].alias;
	cc->avail = carve[0].carved;
	for (unsigned i = 1; i < n; i++) {
		dl_assert(carve[i].chunk == carve[0].chunk + i &&
			  carve[i].alias == carve[0].alias + i * chunk_len &&
			  carve[i].chunk->run->canon ==
				  carve[0].chunk->run->canon + i * chunk_len);
		cc->queued[i - 1] = carve[i].carved;
	}
	cc->next = 1;
	cc->n = (uint8_t)n;
	return true;
}

void *_dl_small_alloc(unsigned cls, size_t req, struct dl_failure *fail)
{
	struct dl_thread_cache *tc = dl_cache;
	if (unlikely(!tc)) {
		tc = dl_cache = _dl_pool_alloc(&dl_cache_pool);
		if (!tc) {
			*fail = (struct dl_failure){12, NULL}; /* plain ENOMEM */
			return NULL;
		}
	}
	struct dl_cached_chunk *cc = &tc->cls[cls];
	if (unlikely(!cc->avail) && !dl_refill(cc, cls, fail))
		return NULL;
	const struct dl_class *c = &_dl_classes[cls];
	struct dl_chunk *ch = cc->chunk;
	unsigned col = (unsigned)__builtin_ctz(cc->avail);
	cc->avail &= cc->avail - 1;
	dl_set_req(cc->seg, ch, col, req);
	if (ch->stacks)
		ch->stacks->alloc[col] = _dl_stack_capture();
	atomic_fetch_or_explicit(&ch->handed, 1u << col, memory_order_release);
	DL_STAT_ADD(allocs, 1);
	DL_STAT_ADD(live_objects, 1);
	DL_STAT_ADD(live_bytes, req);
	return (void *)(cc->alias + (uintptr_t)col * c->col_pages * DL_PAGE +
			(uintptr_t)ch->row * c->size);
}

/* ---- what a pointer is ---- */

/* What reports say of slot col of ch, which starts at start. */
static void dl_slot_obj(struct dl_segment *seg, const struct dl_chunk *ch,
			unsigned col, uintptr_t start, struct dl_obj *o)
{
	o->start = start;
	o->size = dl_req(seg, ch, col);
	if (ch->stacks) {
		o->alloc_stack = ch->stacks->alloc[col];
		o->free_stack = ch->stacks->freed[col];
	}
}

static enum dl_verdict dl_small_find(struct dl_segment *seg, void *p,
				     struct dl_obj *o, struct dl_chunk **ch_out,
				     unsigned *col_out)
{
	unsigned col;
	uintptr_t start;
	*o = (struct dl_obj){0};
	struct dl_chunk *ch = dl_chunk_of(seg, (uintptr_t)p, &col, &start);
	if (!ch)
		return DL_PTR_UNKNOWN;
	uint32_t bit = 1u << col;
	if (!(atomic_load_explicit(&ch->handed, memory_order_acquire) & bit))
		return DL_PTR_UNKNOWN;
	dl_slot_obj(seg, ch, col, start, o);
	*ch_out = ch;
	*col_out = col;
	if (atomic_load(&ch->freed) & bit)
		return DL_PTR_FREED;
	return (uintptr_t)p == start ? DL_PTR_LIVE : DL_PTR_INTERIOR;
}

enum dl_verdict _dl_small_lookup(struct dl_segment *seg, void *p,
				 struct dl_obj *o)
{
	struct dl_chunk *ch;
	unsigned col;
	return dl_small_find(seg, p, o, &ch, &col);
}

enum dl_verdict _dl_small_free(struct dl_segment *seg, void *p,
			       struct dl_freed_slot *slot, struct dl_obj *o)
{
	struct dl_chunk *ch;
	unsigned col;
	enum dl_verdict v = dl_small_find(seg, p, o, &ch, &col);
	if (v != DL_PTR_LIVE)
		return v;
	uint32_t bit = 1u << col;
	/* Two threads freeing the same pointer: only one gets here first. */
	if (atomic_fetch_or(&ch->freed, bit) & bit)
		return DL_PTR_FREED;
	if (ch->stacks)
		ch->stacks->freed[col] = _dl_stack_capture();
	const struct dl_class *c = &_dl_classes[seg->cls];
	DL_STAT_ADD(frees, 1);
	DL_STAT_SUB(live_objects, 1);
	size_t req = dl_req(seg, ch, col);
	DL_STAT_SUB(live_bytes, req);
	*slot = (struct dl_freed_slot){
		.page = (uintptr_t)p - (uintptr_t)ch->row * c->size,
		.pages = c->col_pages,
		.col = (uint8_t)col,
		.seg = seg,
		.chunk = ch,
		.obj = (uintptr_t)p,
		.poisoned = req,
	};
	return DL_PTR_LIVE;
}

void _dl_small_retire(const struct dl_freed_slot *slot)
{
	_dl_alias_revoke(slot->page, (size_t)slot->pages * DL_PAGE);
	_dl_slots_return(slot->seg, slot->chunk, 1u << slot->col);
}

size_t _dl_small_usable(struct dl_segment *seg, void *p)
{
	struct dl_obj o;
	struct dl_chunk *ch;
	unsigned col;
	dl_small_find(seg, p, &o, &ch, &col);
	const struct dl_class *c = &_dl_classes[seg->cls];
	if (c->col_pages == 1)
		return c->size;
	/* A shrinking realloc revoked the pages past the end (see
	 * _dl_small_resize): only the pages up to it are usable. */
	size_t mapped = DL_ALIGN_UP((uintptr_t)p + (o.size ? o.size : 1),
				    DL_PAGE) -
			(uintptr_t)p;
	return mapped < c->size ? mapped : c->size;
}

void *_dl_small_canonical(struct dl_segment *seg, void *p)
{
	unsigned col;
	uintptr_t start;
	struct dl_chunk *ch = dl_chunk_of(seg, (uintptr_t)p, &col, &start);
	struct dl_run *run = ch ? ch->run : NULL;
	if (!run || (atomic_load(&ch->freed) & (1u << col)))
		return NULL;
	return (void *)(run->canon + ((uintptr_t)p - dl_chunk_alias(seg, ch)));
}

bool _dl_small_resize(struct dl_segment *seg, void *p, size_t req)
{
	struct dl_obj o;
	struct dl_chunk *ch;
	unsigned col;
	dl_small_find(seg, p, &o, &ch, &col);
	const struct dl_class *c = &_dl_classes[seg->cls];
	if (req > c->size || (!c->wide && c->size - req > UINT8_MAX))
		return false; /* I6: a narrow slot keeps a byte of slack */
	/* Thesis semantics: pages past the new end stop being reachable. */
	if (c->col_pages > 1) {
		uintptr_t keep = DL_ALIGN_UP((uintptr_t)p + (req ? req : 1),
					     DL_PAGE);
		uintptr_t end = (uintptr_t)p + c->size;
		uintptr_t was = DL_ALIGN_UP((uintptr_t)p + o.size, DL_PAGE);
		if (req < o.size && keep < end && keep < was)
			_dl_alias_revoke(keep, was - keep);
		if (req > o.size && was < end &&
		    DL_ALIGN_UP((uintptr_t)p + req, DL_PAGE) > was)
			return false; /* those pages may be revoked */
	}
	DL_STAT_ADD(live_bytes, req);
	DL_STAT_SUB(live_bytes, o.size);
	dl_set_req(seg, ch, col, req);
	return true;
}

enum dl_fault_kind _dl_small_describe(struct dl_segment *seg, uintptr_t addr,
				      struct dl_obj *o)
{
	unsigned col;
	uintptr_t start;
	struct dl_chunk *ch = dl_chunk_of(seg, addr, &col, &start);
	*o = (struct dl_obj){0};
	if (!ch)
		return DL_FAULT_NOT_OURS;
	uint32_t bit = 1u << col;
	dl_slot_obj(seg, ch, col, start, o);
	if (atomic_load(&ch->freed) & bit)
		return DL_FAULT_FREED;
	const struct dl_class *c = &_dl_classes[seg->cls];
	if ((atomic_load(&ch->handed) & bit) && c->col_pages > 1 &&
	    addr >= DL_ALIGN_UP(start + o->size, DL_PAGE))
		return DL_FAULT_SHRUNK;
	return DL_FAULT_NOT_OURS;
}

void _dl_small_for_each_revoked(struct dl_segment *seg,
				void (*fn)(uintptr_t, size_t))
{
	const struct dl_class *c = &_dl_classes[seg->cls];
	size_t col_len = (size_t)c->col_pages * DL_PAGE;
	/* Dead chunks too: they stay mapped until their segment goes. */
	for (unsigned k = 0; k < seg->used; k++) {
		unsigned freed = atomic_load(&seg->chunks[k].freed);
		uintptr_t base = dl_chunk_alias(seg, &seg->chunks[k]);
		for (unsigned col = 0; col < c->cols;) {
			if (!(freed & (1u << col))) {
				col++;
				continue;
			}
			unsigned first = col;
			while (col < c->cols && (freed & (1u << col)))
				col++;
			fn(base + first * col_len, (col - first) * col_len);
		}
	}
}

/* The thread's cached slots were never handed out: straight back. */
void _dl_small_thread_exit(void)
{
	struct dl_thread_cache *tc = dl_cache;
	if (!tc)
		return;
	dl_cache = NULL;
	for (unsigned cls = 0; cls < _dl_nclasses; cls++) {
		struct dl_cached_chunk *cc = &tc->cls[cls];
		if (cc->avail)
			_dl_slots_return(cc->seg, cc->chunk, cc->avail);
		for (unsigned i = cc->next; i < cc->n; i++)
			_dl_slots_return(cc->seg, cc->chunk + (i - cc->next + 1),
					 cc->queued[i - 1]);
		cc->avail = 0;
		cc->next = cc->n = 0;
	}
	_dl_pool_free(&dl_cache_pool, tc);
}

/*
 * Calls fn for each slot of seg's chunks still alive whose bit pick(chunk)
 * sets: its chunk, column and offset in the run.  The class lock is held
 * (a sweep or a memory split holds them all), so no chunk dies meanwhile,
 * though free() may still flip its bits.
 */
typedef void dl_slot_fn(struct dl_chunk *ch, unsigned col, size_t off,
			void *ctx);
static void dl_for_each_slot(struct dl_segment *seg,
			     uint32_t (*pick)(struct dl_chunk *ch),
			     dl_slot_fn *fn, void *ctx)
{
	const struct dl_class *c = &_dl_classes[seg->cls];
	size_t col_len = (size_t)c->col_pages * DL_PAGE;
	for (unsigned k = 0; k < seg->used; k++) {
		struct dl_chunk *ch = &seg->chunks[k];
		if (!ch->run)
			continue;
		for (uint32_t bits = pick(ch); bits; bits &= bits - 1) {
			unsigned col = (unsigned)__builtin_ctz(bits);
			fn(ch, col, col * col_len + (size_t)ch->row * c->size,
			   ctx);
		}
	}
}

/* Handed out and not freed: what the program can still read. */
static uint32_t dl_pick_live(struct dl_chunk *ch)
{
	return atomic_load(&ch->handed) & ~atomic_load(&ch->freed);
}

static void dl_live_slot(struct dl_chunk *ch, unsigned col, size_t off,
			 void *ctx)
{
	(void)col;
	void (*fn)(uintptr_t, size_t) = *(void (**)(uintptr_t, size_t))ctx;
	fn(ch->run->canon + off, _dl_classes[ch->run->cls].size);
}

void _dl_small_for_each_live(struct dl_segment *seg,
			     void (*fn)(uintptr_t canon, size_t len))
{
	dl_for_each_slot(seg, dl_pick_live, dl_live_slot, &fn);
}

/* Carved and not yet back in the run: live, cached or freed (memory.c). */
static uint32_t dl_pick_carved(struct dl_chunk *ch)
{
	return atomic_load(&ch->carved) & ~atomic_load(&ch->returned);
}

struct dl_account_ctx {
	struct dl_segment *seg;
	struct dl_mem_split *m;
	const unsigned char *vec;
};

static void dl_account_slot(struct dl_chunk *ch, unsigned col, size_t off,
			    void *ctx)
{
	struct dl_account_ctx *a = ctx;
	struct dl_run *run = ch->run;
	size_t size = _dl_classes[run->cls].size;
	uint32_t bit = 1u << col;
	if (atomic_load(&ch->freed) & bit) {
		a->m->quarantine += _dl_run_resident(run, a->vec, off, size);
	} else if (atomic_load(&ch->handed) & bit) {
		size_t req = dl_req(a->seg, ch, col);
		a->m->live += _dl_run_resident(run, a->vec, off, req);
		a->m->slack += _dl_run_resident(run, a->vec, off + req,
						size - req);
	} else {
		a->m->free += _dl_run_resident(run, a->vec, off, size);
	}
}

void _dl_small_account(struct dl_segment *seg, struct dl_mem_split *m,
		       const unsigned char *vec)
{
	struct dl_account_ctx a = {seg, m, vec};
	dl_for_each_slot(seg, dl_pick_carved, dl_account_slot, &a);
}
