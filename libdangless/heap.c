/* SPDX-License-Identifier: MIT */
/*
 * Size classes, runs, chunks and the per-thread caches (layout and
 * invariants: internal.h).
 *
 * malloc of a small size takes the next slot of the thread's current chunk
 * for that class, without a lock.  When the chunk is used up the thread
 * carves a new one under the class lock: it picks the row of a run with the
 * most free slots, marks them carved, and maps one alias of the whole run.
 * free() revokes the slot's alias page(s) and, under the class lock, gives
 * the slot back to its run (I2) and counts the chunk down (I3).
 */
#include <errno.h>
#include <pthread.h>
#include <string.h>

#include "internal.h"

struct dl_class _dl_classes[DL_NCLASSES_MAX];
unsigned _dl_nclasses;
static uint8_t dl_class_of[DL_SMALL_MAX / 16 + 1];

struct dl_class_state {
	dl_lock_t lock;
	struct dl_run *partial;   /* runs with free slots */
	struct dl_segment *seg;   /* where new chunks are carved */
	struct dl_run *last_run;  /* the run the last chunk mapped */
	struct dl_run_group *group; /* where new runs are carved */
	size_t slots, slots_carved; /* in all runs / carved into chunks */
	unsigned warm_runs;       /* empty runs whose pages are kept */
} __attribute__((aligned(64)));
static struct dl_class_state dl_cs[DL_NCLASSES_MAX];

static struct {
	dl_lock_t lock;
	struct dl_segment *seg;   /* packed large objects are carved here */
} dl_large_state;

static struct dl_pool dl_run_pool = {.block = sizeof(struct dl_run),
				     .name = "runs"};
static struct dl_pool dl_group_pool = {.block = sizeof(struct dl_run_group),
				       .name = "run groups"};
static struct dl_pool dl_stacks_pool = {.block = sizeof(struct dl_slot_stacks),
					.name = "stacks"};

/* ---- the thread cache ---- */
struct dl_cached_chunk {
	struct dl_segment *seg;
	struct dl_chunk *chunk;
	uintptr_t alias;          /* the chunk's alias range */
	uint32_t avail;           /* carved slots not yet handed out */
};

struct dl_quarantined {
	uintptr_t page;           /* first alias page to revoke */
	uint32_t pages;
	uint8_t col;
	struct dl_segment *seg;
	struct dl_chunk *chunk;
};

struct dl_thread {
	bool ready;
	struct dl_cached_chunk cache[DL_NCLASSES_MAX];
	struct dl_quarantined *quarantine;
	unsigned quarantined;
};
static __thread struct dl_thread dl_self
	__attribute__((tls_model("initial-exec")));
static pthread_key_t dl_thread_key;

/* ---- classes ---- */

static void dl_add_class(uint32_t size, uint16_t col_pages)
{
	struct dl_class *c = &_dl_classes[_dl_nclasses++];
	c->size = size;
	c->col_pages = col_pages;
	c->cols = (uint16_t)(DL_RUN_PAGES / col_pages);
	c->rows = (uint16_t)(col_pages * DL_PAGE / size);
	c->run_pages = (uint16_t)(c->cols * col_pages);
	c->chunks_per_seg = (uint16_t)(DL_SEG_PAGES / c->run_pages);
}

static void dl_classes_init(void)
{
	for (uint32_t s = 16; s <= 256; s += 16)
		dl_add_class(s, 1);
	/* Then one class per slots-per-page count: little waste per page. */
	for (uint32_t per_page = 15; per_page >= 1; per_page--) {
		uint32_t s = (uint32_t)(DL_PAGE / per_page) & ~15u;
		if (s > _dl_classes[_dl_nclasses - 1].size)
			dl_add_class(s, 1);
	}
	for (uint16_t pages = 2; pages * DL_PAGE <= DL_SMALL_MAX; pages++)
		dl_add_class((uint32_t)(pages * DL_PAGE), pages);
	unsigned c = 0;
	for (size_t i = 0; i <= DL_SMALL_MAX / 16; i++) {
		while (_dl_classes[c].size < i * 16)
			c++;
		dl_class_of[i] = (uint8_t)c;
	}
}

/* The smallest class that holds size bytes at the given alignment, or -1. */
unsigned _dl_size_class(size_t size, size_t align)
{
	if (size > DL_SMALL_MAX || align > DL_PAGE)
		return (unsigned)-1;
	unsigned c = dl_class_of[(size + 15) / 16];
	if (align <= DL_MIN_ALIGN)
		return c;
	/* Every slot offset is a multiple of size; single-row columns start
	 * on a page. */
	for (; c < _dl_nclasses; c++)
		if (_dl_classes[c].size % align == 0 || _dl_classes[c].rows == 1)
			return c;
	return (unsigned)-1;
}

static void dl_thread_destructor(void *unused)
{
	(void)unused;
	_dl_heap_thread_exit();
}

void _dl_heap_init(void)
{
	dl_classes_init();
	pthread_key_create(&dl_thread_key, dl_thread_destructor);
}

static struct dl_thread *dl_thread(void)
{
	struct dl_thread *t = &dl_self;
	if (unlikely(!t->ready)) {
		t->ready = true;
		pthread_setspecific(dl_thread_key, t);
		_dl_fault_thread_init();
	}
	return t;
}

/* ---- reporting a failed alias ---- */

bool _dl_fallback_used;

void _dl_alias_exhausted(int err, const char *what)
{
	char why[512] = "";
	bool explained = err == ENOMEM && _dl_be->explain_enomem &&
			 _dl_be->explain_enomem(why, sizeof(why));
	if (_dl_opt.fallback) {
		if (!__atomic_exchange_n(&_dl_fallback_used, true,
					 __ATOMIC_RELAXED))
			_dl_warn("cannot make more aliases (%s: %s). %s%s"
				 "Falling back to unprotected allocation "
				 "(fallback=1): use-after-free is no longer "
				 "detected for new allocations.",
				 what, strerror(err), why, explained ? ". " : "");
		return;
	}
	_dl_fatal("cannot make more aliases (%s: %s). %s%sStopping "
		  "(fallback=0); with DANGLESS_OPTIONS=fallback=1 the program "
		  "would go on without protection for new allocations.",
		  what, strerror(err), why, explained ? ". " : "");
}

/* ---- runs and chunks ---- */

static void dl_partial_push(struct dl_class_state *cs, struct dl_run *run)
{
	run->prev = NULL;
	run->next = cs->partial;
	if (cs->partial)
		cs->partial->prev = run;
	cs->partial = run;
	run->in_partial = true;
}

static void dl_partial_remove(struct dl_class_state *cs, struct dl_run *run)
{
	if (run->prev)
		run->prev->next = run->next;
	else
		cs->partial = run->next;
	if (run->next)
		run->next->prev = run->prev;
	run->next = run->prev = NULL;
	run->in_partial = false;
}

/* A fresh run, the next one of the class's current group. */
static struct dl_run *dl_run_new(unsigned cls)
{
	const struct dl_class *c = &_dl_classes[cls];
	struct dl_class_state *cs = &dl_cs[cls];
	size_t run_len = (size_t)c->run_pages * DL_PAGE;
	struct dl_run_group *g = cs->group;
	if (!g || g->used == DL_GROUP_RUNS) {
		g = _dl_pool_alloc(&dl_group_pool);
		if (!g)
			return NULL;
		/* Only the address range: pages are made as runs are used. */
		void *canon = _dl_be->canon_alloc(DL_GROUP_RUNS * run_len);
		if (!canon) {
			_dl_pool_free(&dl_group_pool, g);
			return NULL;
		}
		g->canon = (uintptr_t)canon;
		cs->group = g;
	}
	struct dl_run *run = _dl_pool_alloc(&dl_run_pool);
	if (!run)
		return NULL;
	run->index = (uint16_t)g->used;
	run->group = g;
	run->canon = g->canon + run->index * run_len;
	run->cls = (uint8_t)cls;
	run->nfree = (uint16_t)(c->rows * c->cols);
	cs->slots += run->nfree;
	for (unsigned r = 0; r < c->rows; r++)
		run->row_free[r] = (uint8_t)c->cols;
	g->runs[g->used++] = run;
	DL_STAT_ADD(canonical_bytes, run_len);
	return run;
}

/*
 * Which run the next chunk maps.  Neighbouring runs of a group are
 * neighbours in canonical memory, and a class's chunks are neighbours in
 * alias space, so a chunk of the run right after the last one mapped
 * continues the last mapping and the kernel merges the two.  So: the next
 * run of the group with room, round the group; a streak of them costs one
 * kernel mapping, a wrap starts the next.  Rather than wrap, a class that
 * is three quarters carved grows by a fresh run at the end of the group
 * (at most a third more memory than it uses, and its growth costs one
 * mapping per round of the group rather than one per row).
 */
static struct dl_run *dl_pick_run(unsigned cls)
{
	struct dl_class_state *cs = &dl_cs[cls];
	struct dl_run *last = cs->last_run, *run = NULL;
	struct dl_run_group *g = last ? last->group : NULL;
	for (unsigned i = 1; g && i <= g->used && !run; i++) {
		struct dl_run *r = g->runs[(last->index + i) % g->used];
		if (r->nfree)
			run = r;
	}
	bool wraps = !run || run->index <= last->index;
	bool growing = 4 * cs->slots_carved >= 3 * cs->slots;
	if (wraps && (growing || !run) && (!g || g->used < DL_GROUP_RUNS ||
					    !cs->partial)) {
		struct dl_run *fresh = dl_run_new(cls);
		if (fresh) {
			dl_partial_push(cs, fresh);
			run = fresh;
		}
	}
	if (!run)
		run = cs->partial;
	if (run)
		cs->last_run = run;
	return run;
}

/* Picks the row with the most free slots; a wholly free row ends the scan. */
static unsigned dl_pick_row(const struct dl_class *c, struct dl_run *run)
{
	unsigned best = run->row_cursor, best_free = 0;
	for (unsigned i = 0; i < c->rows; i++) {
		unsigned r = (run->row_cursor + i) % c->rows;
		if (run->row_free[r] > best_free) {
			best = r;
			best_free = run->row_free[r];
			if (best_free == c->cols)
				break;
		}
	}
	run->row_cursor = (uint16_t)((best + 1) % c->rows);
	return best;
}

/*
 * An empty run keeps its pages while the class's empty runs hold less than
 * a quarter of its runs, or 1 MiB, or what one batch quarantine holds,
 * whichever is most: a program that frees
 * and allocates in waves (or the batch quarantine) then reuses warm pages
 * instead of punching and faulting them in again.  Beyond that the pages
 * go back to the OS.  Called under the class lock: once it is dropped the
 * run may be carved again and written, and a late discard would zero the
 * new objects.
 */
static void dl_run_emptied(struct dl_class_state *cs, const struct dl_class *c,
			   struct dl_run *run)
{
	size_t run_len = (size_t)c->run_pages * DL_PAGE;
	size_t runs = cs->slots / ((size_t)c->rows * c->cols);
	/* The batch quarantine empties about batch objects' worth at once. */
	size_t floor = (size_t)_dl_opt.batch * c->size;
	if (floor < ((size_t)1 << 20))
		floor = (size_t)1 << 20;
	size_t keep = runs / 4 * run_len > floor ? runs / 4 * run_len : floor;
	if (run->warm)
		return;
	if ((cs->warm_runs + 1) * run_len <= keep) {
		run->warm = true;
		cs->warm_runs++;
		return;
	}
	_dl_be->canon_discard((void *)run->canon, run_len);
}

/*
 * Gives slots of ch back to their run and counts the chunk down; retires
 * the segment when that was the last of it.  An empty run keeps its slot
 * in the class, but its pages go back to the OS unless it is the run in
 * use.
 */
static void dl_slots_return(struct dl_segment *seg, struct dl_chunk *ch,
			    uint32_t cols)
{
	unsigned cls = seg->cls, n = (unsigned)__builtin_popcount(cols);
	const struct dl_class *c = &_dl_classes[cls];
	struct dl_class_state *cs = &dl_cs[cls];
	struct dl_run *run = ch->run;
	bool retire = false;

	_dl_lock(&cs->lock);
	run->row_used[ch->row] &= ~cols;
	run->row_free[ch->row] = (uint8_t)(run->row_free[ch->row] + n);
	run->nfree = (uint16_t)(run->nfree + n);
	cs->slots_carved -= n;
	if (!run->in_partial)
		dl_partial_push(cs, run);
	if (run->nfree == c->rows * c->cols && run != cs->last_run)
		dl_run_emptied(cs, c, run);
	if (atomic_fetch_sub(&ch->pending, n) == n) {
		ch->run = NULL;
		unsigned dead = atomic_fetch_add(&seg->dead, 1) + 1;
		retire = seg->closed && dead == seg->used;
	}
	_dl_unlock(&cs->lock);

	if (retire)
		_dl_segment_retire(seg);
}

/* Carves a new chunk of class cls into the thread's cache. */
static bool dl_refill(struct dl_thread *t, unsigned cls)
{
	const struct dl_class *c = &_dl_classes[cls];
	struct dl_class_state *cs = &dl_cs[cls];
	struct dl_cached_chunk *cc = &t->cache[cls];
	size_t chunk_len = (size_t)c->run_pages * DL_PAGE;

	_dl_lock(&cs->lock);
	struct dl_run *run = dl_pick_run(cls);
	if (!run) {
		_dl_unlock(&cs->lock);
		return false;
	}
	struct dl_segment *seg = cs->seg;
	if (!seg || seg->used == seg->cap) {
		seg = _dl_segment_new(DL_SEG_SMALL, (uint8_t)cls,
				      DL_SEG_SIZE, DL_SEG_SIZE);
		if (!seg) {
			_dl_unlock(&cs->lock);
			return false;
		}
		cs->seg = seg;
	}
	unsigned row = dl_pick_row(c, run);
	if (run->warm) {
		run->warm = false;
		cs->warm_runs--;
	}
	uint32_t all = c->cols == 32 ? ~0u : (1u << c->cols) - 1;
	uint32_t carved = all & ~run->row_used[row];
	unsigned n = (unsigned)__builtin_popcount(carved);
	run->row_used[row] |= carved;
	run->row_free[row] = 0;
	run->nfree = (uint16_t)(run->nfree - n);
	cs->slots_carved += n;
	if (run->nfree == 0)
		dl_partial_remove(cs, run);

	unsigned k = seg->used++;
	struct dl_chunk *ch = &seg->chunks[k];
	ch->run = run;
	ch->row = (uint16_t)row;
	atomic_store(&ch->pending, n);
	atomic_store(&ch->carved, carved);
	atomic_store(&ch->handed, 0);
	atomic_store(&ch->freed, 0);
	if (seg->used == seg->cap)
		seg->closed = true;
	_dl_unlock(&cs->lock);

	if (_dl_opt.stacks && !ch->stacks)
		ch->stacks = _dl_pool_alloc(&dl_stacks_pool);
	uintptr_t alias = seg->base + k * chunk_len;
	/* Making all the run's page-table entries at once costs about a
	 * quarter of faulting one page in: worth it when the chunk hands
	 * out at least a quarter of its columns. */
	int err = _dl_be->alias_map((void *)alias, (void *)run->canon,
				    chunk_len, 4 * n >= c->cols);
	if (err) {
		dl_slots_return(seg, ch, carved);
		_dl_alias_exhausted(-err, "mapping an alias");
		return false;
	}
	DL_STAT_ADD(alias_maps, 1);
	cc->seg = seg;
	cc->chunk = ch;
	cc->alias = alias;
	cc->avail = carved;
	return true;
}

void *_dl_small_alloc(unsigned cls, size_t req)
{
	struct dl_thread *t = dl_thread();
	struct dl_cached_chunk *cc = &t->cache[cls];
	if (unlikely(!cc->avail) && !dl_refill(t, cls))
		return NULL;
	const struct dl_class *c = &_dl_classes[cls];
	struct dl_chunk *ch = cc->chunk;
	unsigned col = (unsigned)__builtin_ctz(cc->avail);
	cc->avail &= cc->avail - 1;
	ch->req[col] = (uint16_t)req;
	if (ch->stacks)
		ch->stacks->alloc[col] = _dl_stack_capture();
	atomic_fetch_or_explicit(&ch->handed, 1u << col, memory_order_release);
	DL_STAT_ADD(allocs, 1);
	DL_STAT_ADD(live_objects, 1);
	DL_STAT_ADD(live_bytes, req);
	return (void *)(cc->alias + (uintptr_t)col * c->col_pages * DL_PAGE +
			(uintptr_t)ch->row * c->size);
}

/* ---- free ---- */

/* Makes [start, start+len) fault from now on (the mapping stays). */
static void dl_revoke(uintptr_t start, size_t len)
{
	int err = _dl_be->alias_revoke((void *)start, len);
	if (err)
		_dl_fatal("could not revoke the aliases at %p (%s); stopping "
			  "rather than leave a dangling pointer usable",
			  (void *)start, strerror(-err));
	DL_STAT_ADD(revokes, 1);
	DL_STAT_ADD(revoked_pages, len / DL_PAGE);
}

static int dl_quarantine_cmp(const struct dl_quarantined *a,
			     const struct dl_quarantined *b)
{
	return a->page < b->page ? -1 : a->page > b->page;
}

static void dl_quarantine_sort(struct dl_quarantined *q, unsigned n)
{
	/* Insertion sort of nearly sorted runs, Shell-gapped: no allocation. */
	static const unsigned gaps[] = {701, 301, 132, 57, 23, 10, 4, 1};
	for (unsigned g = 0; g < sizeof(gaps) / sizeof(gaps[0]); g++) {
		unsigned gap = gaps[g];
		for (unsigned i = gap; i < n; i++) {
			struct dl_quarantined v = q[i];
			unsigned j = i;
			for (; j >= gap && dl_quarantine_cmp(&q[j - gap], &v) > 0;
			     j -= gap)
				q[j] = q[j - gap];
			q[j] = v;
		}
	}
}

/*
 * Revokes what the quarantine holds, sorted by address so that neighbours
 * (the columns of a chunk, chunks side by side) go in one call, then gives
 * the slots back.
 */
void _dl_quarantine_flush(void)
{
	struct dl_thread *t = &dl_self;
	unsigned n = t->quarantined;
	if (!n)
		return;
	struct dl_quarantined *q = t->quarantine;
	dl_quarantine_sort(q, n);
	for (unsigned i = 0; i < n;) {
		uintptr_t start = q[i].page;
		uintptr_t end = start + (uintptr_t)q[i].pages * DL_PAGE;
		unsigned j = i + 1;
		while (j < n && q[j].page == end) {
			end += (uintptr_t)q[j].pages * DL_PAGE;
			j++;
		}
		dl_revoke(start, end - start);
		i = j;
	}
	t->quarantined = 0;
	DL_STAT_SUB(quarantined, n);
	/* One return (one lock round) per chunk: its entries are neighbours. */
	for (unsigned i = 0; i < n;) {
		uint32_t cols = 0;
		unsigned j = i;
		for (; j < n && q[j].chunk == q[i].chunk; j++)
			cols |= 1u << q[j].col;
		dl_slots_return(q[i].seg, q[i].chunk, cols);
		i = j;
	}
}

static void dl_format_size(struct dl_buf *b, size_t size, const char *tail)
{
	_dl_buf_str(b, "a ");
	_dl_buf_dec(b, size);
	_dl_buf_str(b, "-byte allocation");
	_dl_buf_str(b, tail);
}

/*
 * Aborts with the right report for a pointer that op (free, realloc,
 * malloc_usable_size) cannot take: one already freed, one inside an
 * allocation (start and size known), or one that is no allocation at all.
 */
static __attribute__((noreturn)) void
dl_bad_pointer(const char *op, void *p, uintptr_t start, size_t size,
	       bool freed, uint32_t alloc_stack, uint32_t free_stack)
{
	char msg[512];
	struct dl_buf b = {msg, 0, sizeof(msg)};
	bool is_free = strcmp(op, "free") == 0;
	_dl_buf_str(&b, "dangless: ");
	if (freed) {
		/* "double free of P" / "realloc of freed pointer P" */
		_dl_buf_str(&b, is_free ? "double free of " : op);
		if (!is_free)
			_dl_buf_str(&b, " of freed pointer ");
		_dl_buf_hex(&b, (uintptr_t)p);
		_dl_buf_str(&b, ": ");
		dl_format_size(&b, size, " that was already freed");
	} else {
		_dl_buf_str(&b, "invalid ");
		_dl_buf_str(&b, op);
		_dl_buf_str(&b, " of ");
		_dl_buf_hex(&b, (uintptr_t)p);
		_dl_buf_str(&b, ": ");
		if (start && (uintptr_t)p != start) {
			_dl_buf_dec(&b, (uintptr_t)p - start);
			_dl_buf_str(&b, " bytes into ");
			dl_format_size(&b, size, " (not its start)");
		} else {
			_dl_buf_str(&b, "not a pointer Dangless returned");
		}
	}
	_dl_report_abort(msg, alloc_stack, free_stack);
}

void _dl_bad_dead_pointer(const char *op, void *p)
{
	char msg[256];
	struct dl_buf b = {msg, 0, sizeof(msg)};
	bool is_free = strcmp(op, "free") == 0;
	_dl_buf_str(&b, "dangless: ");
	_dl_buf_str(&b, is_free ? "double free of " : op);
	if (!is_free)
		_dl_buf_str(&b, " of freed pointer ");
	_dl_buf_hex(&b, (uintptr_t)p);
	_dl_buf_str(&b, ": memory Dangless freed long ago (details no longer "
			"kept)");
	_dl_report_abort(msg, 0, 0);
}

void _dl_bad_unknown_pointer(const char *op, void *p)
{
	dl_bad_pointer(op, p, 0, 0, false, 0, 0);
}

/* Validates p as a live small allocation; aborts with a report otherwise. */
static struct dl_chunk *dl_small_lookup(struct dl_segment *seg, void *p,
					const char *op, unsigned *col_out)
{
	unsigned col;
	uintptr_t start;
	struct dl_chunk *ch = _dl_chunk_of(seg, (uintptr_t)p, &col, &start);
	if (!ch)
		dl_bad_pointer(op, p, 0, 0, false, 0, 0);
	uint32_t bit = 1u << col;
	uint32_t handed = atomic_load_explicit(&ch->handed, memory_order_acquire);
	uint32_t a = ch->stacks ? ch->stacks->alloc[col] : 0;
	uint32_t f = ch->stacks ? ch->stacks->freed[col] : 0;
	if (!(handed & bit))
		dl_bad_pointer(op, p, 0, 0, false, 0, 0);
	if (atomic_load(&ch->freed) & bit)
		dl_bad_pointer(op, p, start, ch->req[col], true, a, f);
	if ((uintptr_t)p != start)
		dl_bad_pointer(op, p, start, ch->req[col], false, a, f);
	*col_out = col;
	return ch;
}

void _dl_small_free(struct dl_segment *seg, void *p)
{
	unsigned col;
	struct dl_chunk *ch = dl_small_lookup(seg, p, "free", &col);
	uint32_t bit = 1u << col;
	/* Two threads freeing the same pointer: only one gets here first. */
	if (atomic_fetch_or(&ch->freed, bit) & bit)
		dl_bad_pointer("free", p, (uintptr_t)p, ch->req[col], true,
			    0, 0);
	if (ch->stacks)
		ch->stacks->freed[col] = _dl_stack_capture();
	const struct dl_class *c = &_dl_classes[seg->cls];
	size_t col_len = (size_t)c->col_pages * DL_PAGE;
	uintptr_t page = (uintptr_t)p - (uintptr_t)ch->row * c->size;
	DL_STAT_ADD(frees, 1);
	DL_STAT_SUB(live_objects, 1);
	DL_STAT_SUB(live_bytes, ch->req[col]);

	if (_dl_opt.revoke == DL_REVOKE_BATCH) {
		struct dl_thread *t = dl_thread();
		if (!t->quarantine)
			t->quarantine = _dl_os_pages(_dl_opt.batch *
						     sizeof(*t->quarantine));
		if (t->quarantine) {
			t->quarantine[t->quarantined++] = (struct dl_quarantined){
				page, c->col_pages, (uint8_t)col, seg, ch};
			DL_STAT_ADD(quarantined, 1);
			if (t->quarantined == _dl_opt.batch)
				_dl_quarantine_flush();
			return;
		}
	}
	dl_revoke(page, col_len);
	dl_slots_return(seg, ch, bit);
}

size_t _dl_small_usable(struct dl_segment *seg, void *p, const char *op,
			size_t *req)
{
	unsigned col;
	struct dl_chunk *ch = dl_small_lookup(seg, p, op, &col);
	if (req)
		*req = ch->req[col];
	const struct dl_class *c = &_dl_classes[seg->cls];
	if (c->col_pages == 1)
		return c->size;
	/* A shrinking realloc revoked the pages past the end (see
	 * _dl_small_resize): only the pages up to it are usable. */
	size_t mapped = DL_ALIGN_UP((uintptr_t)p + (ch->req[col] ? ch->req[col]
								 : 1),
				    DL_PAGE) -
			(uintptr_t)p;
	return mapped < c->size ? mapped : c->size;
}

void *_dl_small_canonical(struct dl_segment *seg, void *p)
{
	unsigned col;
	uintptr_t start;
	struct dl_chunk *ch = _dl_chunk_of(seg, (uintptr_t)p, &col, &start);
	struct dl_run *run = ch ? ch->run : NULL;
	if (!run || (atomic_load(&ch->freed) & (1u << col)))
		return NULL;
	const struct dl_class *c = &_dl_classes[seg->cls];
	uintptr_t col_len = (uintptr_t)c->col_pages * DL_PAGE;
	uintptr_t chunk_alias = start - (uintptr_t)ch->row * c->size -
				col * col_len;
	return (void *)(run->canon + ((uintptr_t)p - chunk_alias));
}

bool _dl_small_resize(struct dl_segment *seg, void *p, size_t req)
{
	unsigned col;
	struct dl_chunk *ch = dl_small_lookup(seg, p, "realloc", &col);
	const struct dl_class *c = &_dl_classes[seg->cls];
	if (req > c->size)
		return false;
	/* Thesis semantics: pages past the new end stop being reachable. */
	if (c->col_pages > 1) {
		uintptr_t keep = DL_ALIGN_UP((uintptr_t)p + (req ? req : 1),
					     DL_PAGE);
		uintptr_t end = (uintptr_t)p + c->size;
		uintptr_t was = DL_ALIGN_UP((uintptr_t)p + ch->req[col], DL_PAGE);
		if (req < ch->req[col] && keep < end && keep < was)
			dl_revoke(keep, was - keep);
		if (req > ch->req[col] && was < end &&
		    DL_ALIGN_UP((uintptr_t)p + req, DL_PAGE) > was)
			return false; /* those pages may be revoked */
	}
	DL_STAT_ADD(live_bytes, req);
	DL_STAT_SUB(live_bytes, ch->req[col]);
	ch->req[col] = (uint16_t)req;
	return true;
}

/* ---- large objects ---- */

/* o is freed: its range stops working and its memory goes back. */
static void dl_large_finish(struct dl_segment *seg, struct dl_large *o)
{
	/* Releasing revokes: the range faults from here on. */
	_dl_be->alias_release((void *)o->range, o->range_len);
	_dl_be->canon_free((void *)o->canon, o->canon_len);
	DL_STAT_SUB(canonical_bytes, o->canon_len);
	DL_STAT_ADD(revokes, 1);
	DL_STAT_ADD(revoked_pages, o->range_len / DL_PAGE);
	_dl_lock(&dl_large_state.lock);
	unsigned dead = atomic_fetch_add(&seg->dead, 1) + 1;
	bool retire = seg->closed && dead == seg->used;
	_dl_unlock(&dl_large_state.lock);
	if (retire)
		_dl_segment_retire(seg);
}

void *_dl_large_alloc(size_t req, size_t align)
{
	size_t len = DL_ALIGN_UP(req ? req : 1, DL_PAGE);
	if (len < req)
		return NULL;
	if (align < DL_PAGE)
		align = DL_PAGE;
	void *canon = _dl_be->canon_alloc(len);
	if (!canon)
		return NULL;
	DL_STAT_ADD(canonical_bytes, len);
	struct dl_segment *seg, *retire = NULL;
	uintptr_t alias;
	_dl_lock(&dl_large_state.lock);
	if (len > DL_LARGE_PACK_MAX || align > DL_SEG_SIZE) {
		seg = _dl_segment_new(DL_SEG_LARGE, 0, len, align);
		if (seg)
			seg->cap = 1;
	} else {
		seg = dl_large_state.seg;
		alias = seg ? DL_ALIGN_UP(seg->bump, align) : 0;
		if (!seg || seg->used == seg->cap ||
		    alias + len > seg->base + seg->len) {
			if (seg) {
				seg->closed = true;
				if (atomic_load(&seg->dead) == seg->used)
					retire = seg;
			}
			seg = _dl_segment_new(DL_SEG_LARGE, 0, DL_SEG_SIZE,
					      DL_SEG_SIZE);
			dl_large_state.seg = seg;
		}
	}
	if (!seg) {
		_dl_unlock(&dl_large_state.lock);
		_dl_be->canon_free(canon, len);
		DL_STAT_SUB(canonical_bytes, len);
		return NULL;
	}
	alias = DL_ALIGN_UP(seg->bump, align);
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
	seg->bump = alias + len;
	/* publishes o to lock-free lookups: its fields first */
	atomic_thread_fence(memory_order_release);
	seg->used++;
	if (seg->used == seg->cap)
		seg->closed = true;
	_dl_unlock(&dl_large_state.lock);
	if (retire)
		_dl_segment_retire(retire);

	int err = _dl_be->alias_map((void *)alias, canon, len, false);
	if (err) {
		atomic_store(&o->state, DL_LARGE_FREED);
		dl_large_finish(seg, o);
		_dl_alias_exhausted(-err, "mapping an alias");
		return NULL;
	}
	DL_STAT_ADD(alias_maps, 1);
	DL_STAT_ADD(allocs, 1);
	DL_STAT_ADD(live_objects, 1);
	DL_STAT_ADD(live_bytes, req);
	return (void *)alias;
}

static struct dl_large *dl_large_lookup(struct dl_segment *seg, void *p,
					const char *op)
{
	struct dl_large *o = _dl_large_of(seg, (uintptr_t)p);
	if (!o)
		dl_bad_pointer(op, p, 0, 0, false, 0, 0);
	if (atomic_load(&o->state) != DL_LARGE_LIVE)
		dl_bad_pointer(op, p, o->alias, o->req, true, o->alloc_stack,
			    o->free_stack);
	if ((uintptr_t)p != o->alias)
		dl_bad_pointer(op, p, o->alias, o->req, false, o->alloc_stack,
			    o->free_stack);
	return o;
}

void _dl_large_free(struct dl_segment *seg, void *p)
{
	struct dl_large *o = dl_large_lookup(seg, p, "free");
	int live = DL_LARGE_LIVE;
	if (!atomic_compare_exchange_strong(&o->state, &live, DL_LARGE_FREED))
		dl_bad_pointer("free", p, o->alias, o->req, true,
			    o->alloc_stack, o->free_stack);
	if (_dl_opt.stacks)
		o->free_stack = _dl_stack_capture();
	DL_STAT_ADD(frees, 1);
	DL_STAT_SUB(live_objects, 1);
	DL_STAT_SUB(live_bytes, o->req);
	dl_large_finish(seg, o);
}

size_t _dl_large_usable(struct dl_segment *seg, void *p, const char *op,
			size_t *req)
{
	struct dl_large *o = dl_large_lookup(seg, p, op);
	if (req)
		*req = o->req;
	return o->canon_len;
}

void *_dl_large_canonical(struct dl_segment *seg, void *p)
{
	struct dl_large *o = _dl_large_of(seg, (uintptr_t)p);
	if (!o || atomic_load(&o->state) != DL_LARGE_LIVE ||
	    (uintptr_t)p >= o->alias + o->canon_len)
		return NULL;
	return (void *)(o->canon + ((uintptr_t)p - o->alias));
}

bool _dl_large_resize(struct dl_segment *seg, void *p, size_t req)
{
	struct dl_large *o = dl_large_lookup(seg, p, "realloc");
	size_t len = DL_ALIGN_UP(req ? req : 1, DL_PAGE);
	if (len > o->canon_len)
		return false;
	if (len < o->canon_len) {
		/* Thesis semantics: the pages past the new end are revoked
		 * and their canonical memory goes back. */
		size_t cut = o->canon_len - len;
		_dl_be->alias_release((void *)(o->alias + len), cut);
		_dl_be->canon_free((void *)(o->canon + len), cut);
		DL_STAT_SUB(canonical_bytes, cut);
		DL_STAT_ADD(revokes, 1);
		DL_STAT_ADD(revoked_pages, cut / DL_PAGE);
		o->canon_len = len;
	}
	DL_STAT_ADD(live_bytes, req);
	DL_STAT_SUB(live_bytes, o->req);
	o->req = req;
	return true;
}

/* ---- describing a fault (called from the signal handler) ---- */

static void dl_describe_offset(struct dl_buf *b, uintptr_t addr,
			       uintptr_t start, size_t size, const char *tail)
{
	if (addr >= start) {
		_dl_buf_dec(b, addr - start);
		_dl_buf_str(b, addr - start < size ? " bytes into "
						   : " bytes from the start of ");
	} else {
		_dl_buf_dec(b, start - addr);
		_dl_buf_str(b, " bytes before ");
	}
	dl_format_size(b, size, tail);
}

int _dl_describe_fault(uintptr_t addr, struct dl_buf *b, uint32_t *alloc_stack,
		       uint32_t *free_stack)
{
	uintptr_t e = _dl_segmap_get(addr);
	*alloc_stack = *free_stack = 0;
	if (!e)
		return 0;
	if (e & 1) {
		unsigned cls = (unsigned)(e >> 1);
		if (cls == DL_DEAD_LARGE) {
			_dl_buf_str(b, "in a freed large allocation "
				       "(details no longer kept)");
		} else {
			_dl_buf_str(b, "in a freed allocation of the ");
			_dl_buf_dec(b, _dl_classes[cls].size);
			_dl_buf_str(b, "-byte class (details no longer kept)");
		}
		return 1;
	}
	struct dl_segment *seg = (struct dl_segment *)e;
	if (seg->kind == DL_SEG_SMALL) {
		unsigned col;
		uintptr_t start;
		struct dl_chunk *ch = _dl_chunk_of(seg, addr, &col, &start);
		if (!ch)
			return 0;
		uint32_t bit = 1u << col;
		if (ch->stacks) {
			*alloc_stack = ch->stacks->alloc[col];
			*free_stack = ch->stacks->freed[col];
		}
		if (atomic_load(&ch->freed) & bit) {
			dl_describe_offset(b, addr, start, ch->req[col],
					   " (freed)");
			return 1;
		}
		const struct dl_class *c = &_dl_classes[seg->cls];
		if ((atomic_load(&ch->handed) & bit) && c->col_pages > 1 &&
		    addr >= DL_ALIGN_UP(start + ch->req[col], DL_PAGE)) {
			dl_describe_offset(b, addr, start, ch->req[col],
					   " (past the end left by a "
					   "shrinking realloc)");
			return 1;
		}
		return 0;
	}
	struct dl_large *o = _dl_large_of(seg, addr);
	if (!o)
		return 0;
	*alloc_stack = o->alloc_stack;
	*free_stack = o->free_stack;
	if (atomic_load(&o->state) == DL_LARGE_FREED) {
		dl_describe_offset(b, addr, o->alias, o->req, " (freed)");
		return 1;
	}
	if (addr >= o->alias + o->canon_len) {
		dl_describe_offset(b, addr, o->alias, o->req,
				   " (past the end left by a shrinking realloc)");
		return 1;
	}
	return 0;
}

/* ---- threads, fork ---- */

void _dl_heap_thread_exit(void)
{
	struct dl_thread *t = &dl_self;
	_dl_quarantine_flush();
	for (unsigned cls = 0; cls < _dl_nclasses; cls++) {
		struct dl_cached_chunk *cc = &t->cache[cls];
		if (cc->avail)
			dl_slots_return(cc->seg, cc->chunk, cc->avail);
		cc->avail = 0;
	}
	if (t->quarantine)
		_dl_os_unpages(t->quarantine,
			       _dl_opt.batch * sizeof(*t->quarantine));
	t->quarantine = NULL;
	_dl_fault_thread_exit();
}

void _dl_heap_lock_all(void)
{
	for (unsigned c = 0; c < _dl_nclasses; c++)
		_dl_lock(&dl_cs[c].lock);
	_dl_lock(&dl_large_state.lock);
	_dl_lock(&dl_run_pool.lock);
	_dl_lock(&dl_group_pool.lock);
	_dl_lock(&dl_stacks_pool.lock);
}

void _dl_heap_unlock_all(bool reset)
{
	void (*op)(dl_lock_t *) = reset ? _dl_lock_reset : _dl_unlock;
	op(&dl_stacks_pool.lock);
	op(&dl_group_pool.lock);
	op(&dl_run_pool.lock);
	op(&dl_large_state.lock);
	for (unsigned c = 0; c < _dl_nclasses; c++)
		op(&dl_cs[c].lock);
}
