/* SPDX-License-Identifier: MIT */
/*
 * Runs and the chunks carved from them, under the class lock (layout and
 * invariants: internal.h).  A thread whose cache of a class is used up
 * carves a new chunk here: the row of a run with the most free slots,
 * marked carved; free() gives slots back once their aliases are revoked.
 */
#include "internal.h"

struct dl_class_state {
	dl_lock_t lock;
	struct dl_run *partial;   /* runs with free slots */
	struct dl_segment *seg;   /* where new chunks are carved */
	struct dl_segment *spare; /* made by a thread that lost a race */
	struct dl_run *last_run;  /* the run the last chunk mapped */
	struct dl_run_group *group; /* where new runs are carved */
	struct dl_run_group *groups; /* all of them, newest first */
	struct dl_run *warm_head, *warm_tail; /* empty runs with their pages */
	struct dl_run *newest;    /* the run made last */
	unsigned narrow_carves;   /* chunks carved from narrow runs */
	size_t slots, slots_carved; /* in open columns / carved into chunks */
} __attribute__((aligned(64)));
static struct dl_class_state dl_cs[DL_NCLASSES_MAX];

bool _dl_release_dead_chunks;

static struct dl_pool dl_run_pool = DL_POOL(struct dl_run, "runs");
static struct dl_pool dl_group_pool =
	DL_POOL(struct dl_run_group, "run groups");

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

/* The first n columns. */
static uint32_t dl_cols_mask(unsigned n)
{
	return n >= 32 ? ~0u : (1u << n) - 1;
}

static unsigned dl_open_cols(const struct dl_run *run)
{
	return (unsigned)__builtin_popcount(run->open);
}

/* Opens the first n columns of run (layout: internal.h).  Columns never
 * opened were never carved, so their slots are free and their pages
 * untouched. */
static void dl_open(struct dl_class_state *cs, const struct dl_class *c,
		    struct dl_run *run, unsigned n)
{
	uint32_t more = dl_cols_mask(n < c->cols ? n : c->cols) & ~run->open;
	unsigned k = (unsigned)__builtin_popcount(more);
	if (!k)
		return;
	run->open |= more;
	for (unsigned r = 0; r < c->rows; r++)
		run->row_free[r] = (uint8_t)(run->row_free[r] + k);
	run->nfree = (uint16_t)(run->nfree + c->rows * k);
	cs->slots += (size_t)c->rows * k;
	if (!run->in_partial)
		dl_partial_push(cs, run);
}

static bool dl_run_whole(const struct dl_class *c, const struct dl_run *run)
{
	return run->open == dl_cols_mask(c->cols);
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
		void *canon = _dl_be->canon_alloc(DL_GROUP_RUNS * run_len,
						   false);
		if (!canon) {
			_dl_pool_free(&dl_group_pool, g);
			return NULL;
		}
		g->canon = (uintptr_t)canon;
		g->next = cs->groups;
		cs->groups = g;
		cs->group = g;
	}
	struct dl_run *run = _dl_pool_alloc(&dl_run_pool);
	if (!run)
		return NULL;
	run->index = (uint16_t)g->used;
	run->group = g;
	run->canon = g->canon + run->index * run_len;
	run->cls = (uint8_t)cls;
	g->runs[g->used++] = run;
	unsigned narrow = DL_NARROW_PAGES / c->col_pages;
	dl_open(cs, c, run, cs->newest || !narrow ? c->cols : narrow);
	cs->newest = run;
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
 * is three quarters carved grows: by opening the rest of its first run
 * while that is narrow, else by a fresh run at the end of the group (at
 * most a third more memory than it uses, and its growth costs one mapping
 * per round of the group rather than one per row).
 */
static struct dl_run *dl_pick_run(unsigned cls)
{
	struct dl_class_state *cs = &dl_cs[cls];
	struct dl_run *last = cs->last_run, *run = NULL;
	struct dl_run_group *g = last ? last->group : NULL;
	for (unsigned i = 1; g && i <= g->used && !run; i++) {
		struct dl_run *r = g->runs[(last->index + i) % g->used];
		if (r->nfree && !r->discarding)
			run = r;
	}
	bool wraps = !run || run->index <= last->index;
	bool growing = 4 * cs->slots_carved >= 3 * cs->slots;
	struct dl_run *newest = cs->newest;
	const struct dl_class *c = &_dl_classes[cls];
	bool narrow = newest && !dl_run_whole(c, newest);
	if (narrow && cs->slots_carved >= DL_NARROW_SLOTS)
		growing = true;
	if (wraps && (growing || !run) && narrow && !newest->discarding) {
		dl_open(cs, c, newest, c->cols);
		run = newest;
	} else if (wraps && (growing || !run) &&
		   (!g || g->used < DL_GROUP_RUNS || !cs->partial)) {
		struct dl_run *fresh = dl_run_new(cls);
		if (fresh)
			run = fresh;
	}
	for (struct dl_run *r = cs->partial; !run && r; r = r->next)
		if (!r->discarding)
			run = r;
	if (!run) {
		/* Only runs being discarded have room: not worth waiting. */
		run = dl_run_new(cls);
	}
	if (run)
		cs->last_run = run;
	return run;
}

/*
 * The run right after prev in its group, when it has room: a chunk of it
 * carved right after prev's continues prev's chunk in both alias and
 * canonical space, so one mapping serves both.  Never a fresh run: the
 * mapping is populated, and a fresh run's pages would then be made for
 * slots that wait in one thread's cache (8 threads of the threads
 * workload held 6% more memory so).
 */
static struct dl_run *dl_next_neighbour(struct dl_run *prev)
{
	struct dl_run_group *g = prev->group;
	unsigned i = prev->index + 1u;
	if (i >= g->used)
		return NULL;
	struct dl_run *r = g->runs[i];
	return r->nfree && !r->discarding ? r : NULL;
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
			if (best_free == dl_open_cols(run))
				break;
		}
	}
	run->row_cursor = (uint16_t)((best + 1) % c->rows);
	return best;
}

/*
 * Empty runs whose pages are kept warm, over all classes: a program that
 * frees and allocates in waves (or the batch quarantine, which empties
 * about a batch of objects at once) then reuses warm pages instead of
 * punching them now and faulting them in again later.  The pages held so
 * scale with the program's own heap: at most a quarter of its live bytes,
 * or DL_WARM_FLOOR for a small program; in batch mode at least what one
 * batch of its average objects holds.  Beyond that an empty run's pages
 * go back to the OS.
 */
#define DL_WARM_FLOOR ((size_t)512 << 10)
static atomic_size_t dl_warm_bytes;

static size_t dl_warm_budget(void)
{
	size_t budget = _dl_live_quarter_or(DL_WARM_FLOOR);
	size_t objects = atomic_load_explicit(&_dl_stats.live_objects,
					      memory_order_relaxed);
	if (_dl_opt.revoke == DL_REVOKE_BATCH && objects) {
		size_t live = atomic_load_explicit(&_dl_stats.live_bytes,
						   memory_order_relaxed);
		size_t wave = (size_t)_dl_opt.batch * (live / objects);
		if (wave > budget)
			budget = wave;
	}
	return budget;
}

static void dl_warm_add(struct dl_class_state *cs, struct dl_run *run,
			size_t run_len)
{
	run->warm = true;
	run->warm_prev = NULL;
	run->warm_next = cs->warm_head;
	if (cs->warm_head)
		cs->warm_head->warm_prev = run;
	else
		cs->warm_tail = run;
	cs->warm_head = run;
	atomic_fetch_add_explicit(&dl_warm_bytes, run_len, memory_order_relaxed);
}

static void dl_warm_remove(struct dl_class_state *cs, struct dl_run *run,
			   size_t run_len)
{
	if (run->warm_prev)
		run->warm_prev->warm_next = run->warm_next;
	else
		cs->warm_head = run->warm_next;
	if (run->warm_next)
		run->warm_next->warm_prev = run->warm_prev;
	else
		cs->warm_tail = run->warm_prev;
	run->warm_next = run->warm_prev = NULL;
	run->warm = false;
	atomic_fetch_sub_explicit(&dl_warm_bytes, run_len, memory_order_relaxed);
}

/* The most warm runs one emptied run gives back besides itself: a heap
 * that shrank sheds its surplus over the next frees, none pays for all. */
#define DL_WARM_TRIM 2

/*
 * An emptied run stays warm within the budget.  Over it, its pages go back,
 * and so do those of the class's oldest warm runs while the warm runs hold
 * more than the budget (it shrinks with the live heap).  Fills out[] with
 * the runs to discard, each marked discarding; returns how many.
 */
static unsigned dl_run_emptied(struct dl_class_state *cs,
			       const struct dl_class *c, struct dl_run *run,
			       struct dl_run **out)
{
	size_t run_len = (size_t)c->run_pages * DL_PAGE;
	size_t budget = dl_warm_budget();
	dl_assert(!run->warm && !run->discarding);
	/* Other classes may warm runs at the same time: the budget may be
	 * passed by a run per class at most. */
	if (atomic_load_explicit(&dl_warm_bytes, memory_order_relaxed) +
		    run_len <=
	    budget) {
		dl_warm_add(cs, run, run_len);
		return 0;
	}
	unsigned n = 0;
	run->discarding = true;
	out[n++] = run;
	while (n < 1 + DL_WARM_TRIM && cs->warm_tail &&
	       atomic_load_explicit(&dl_warm_bytes, memory_order_relaxed) >
		       budget) {
		struct dl_run *old = cs->warm_tail;
		dl_warm_remove(cs, old, run_len);
		old->discarding = true;
		out[n++] = old;
	}
	return n;
}

/* Under the class lock: true when this dead chunk was its closed
 * segment's last, which the caller then retires. */
static bool dl_chunk_counted_dead(struct dl_segment *seg)
{
	unsigned dead = atomic_fetch_add(&seg->dead, 1) + 1;
	return seg->closed && dead == seg->used;
}

/*
 * Retires the segment when that was the last of it.  An empty run keeps
 * its slot in the class, but its pages go back to the OS unless it is the
 * run in use or dl_run_emptied keeps it warm.
 *
 * The discard (a fallocate on the host) happens after the class lock is
 * dropped, so other threads of the class do not wait for the kernel.  That
 * stays correct because a run marked discarding is never carved
 * (dl_pick_run and dl_next_neighbour skip it): were it carved and written
 * meanwhile, the late discard would zero the new objects.  Nothing can
 * come back to it either: it is empty, no chunk holds a slot of it.  The
 * mark goes once the pages are gone (in a child after fork, at once: the
 * run is empty, whatever its pages hold).
 */
void _dl_slots_return(struct dl_segment *seg, struct dl_chunk *ch,
		      uint32_t cols)
{
	unsigned cls = seg->cls, n = (unsigned)__builtin_popcount(cols);
	const struct dl_class *c = &_dl_classes[cls];
	struct dl_class_state *cs = &dl_cs[cls];
	struct dl_run *run = ch->run;
	bool retire = false;
	struct dl_run *discard[1 + DL_WARM_TRIM];
	unsigned ndiscard = 0;

	_dl_lock(&cs->lock);
	/* I2: only slots carved into this chunk, once each; I3: the count
	 * covers them. */
	dl_assert(run && (run->row_used[ch->row] & cols) == cols);
	dl_assert((atomic_load(&ch->carved) & cols) == cols);
	dl_assert(atomic_load(&ch->pending) >= n);
	dl_assert(!run->discarding);
	run->row_used[ch->row] &= ~cols;
	atomic_fetch_or_explicit(&ch->returned, cols, memory_order_relaxed);
	run->row_free[ch->row] = (uint8_t)(run->row_free[ch->row] + n);
	run->nfree = (uint16_t)(run->nfree + n);
	cs->slots_carved -= n;
	if (!run->in_partial)
		dl_partial_push(cs, run);
	if (run->nfree == c->rows * dl_open_cols(run) && run != cs->last_run)
		ndiscard = dl_run_emptied(cs, c, run, discard);
	bool chunk_dead = atomic_fetch_sub(&ch->pending, n) == n;
	/*
	 * A dead chunk released on its own (every slot is revoked, I3:
	 * nothing in it is reachable) is counted dead only once its release
	 * is done: until then its segment cannot retire, so neither its
	 * metadata nor its range can come back as another segment's while
	 * the release runs unlocked (I5).  The last chunk is not released
	 * alone: its segment's retirement releases everything.
	 */
	size_t chunk_len = (size_t)c->run_pages * DL_PAGE;
	uintptr_t release = 0;
	if (chunk_dead) {
		ch->run = NULL;
		bool last = seg->closed &&
			    atomic_load(&seg->dead) + 1 == seg->used;
		if (_dl_release_dead_chunks && !last)
			release = seg->base +
				  (uintptr_t)(ch - seg->chunks) * chunk_len;
		else
			retire = dl_chunk_counted_dead(seg);
	}
	_dl_unlock(&cs->lock);

	for (unsigned i = 0; i < ndiscard; i++)
		_dl_be->canon_discard((void *)discard[i]->canon, chunk_len);
	if (release)
		_dl_be->alias_release((void *)release, chunk_len);
	if (ndiscard || release) {
		_dl_lock(&cs->lock);
		for (unsigned i = 0; i < ndiscard; i++) {
			discard[i]->discarding = false;
			discard[i]->discarded = true;
		}
		if (release)
			retire = dl_chunk_counted_dead(seg);
		_dl_unlock(&cs->lock);
	}
	if (retire)
		_dl_segment_retire(seg);
}

/*
 * A segment of the class with room for another chunk (cs->seg), with the
 * class lock held on return (true) or not (false, *fail says why).  A new
 * segment is made with the lock dropped (reserving alias space may make a
 * system call); if another thread installed one meanwhile, the new one
 * waits as the class's spare, or, if there is one already, is retired
 * unused.
 */
static bool dl_seg_with_room(unsigned cls, struct dl_failure *fail)
{
	struct dl_class_state *cs = &dl_cs[cls];
	while (!cs->seg) {
		if (cs->spare) {
			cs->seg = cs->spare;
			cs->spare = NULL;
			break;
		}
		_dl_unlock(&cs->lock);
		struct dl_segment *fresh = _dl_segment_new(
			DL_SEG_SMALL, (uint8_t)cls, DL_SEG_SIZE, DL_SEG_SIZE,
			fail);
		if (!fresh)
			return false;
		_dl_lock(&cs->lock);
		if (!cs->seg) {
			cs->seg = fresh;
		} else if (!cs->spare) {
			cs->spare = fresh;
		} else {
			_dl_unlock(&cs->lock);
			fresh->closed = true; /* nothing carved: dead already */
			_dl_segment_retire(fresh);
			_dl_lock(&cs->lock);
		}
	}
	dl_assert(cs->seg->cls == cls && !cs->seg->closed); /* I5 */
	return true;
}

/* Carves the free slots of one row of run into chunk k of seg. */
static void dl_carve_row(struct dl_class_state *cs, const struct dl_class *c,
			 struct dl_run *run, struct dl_segment *seg,
			 struct dl_carve *out)
{
	size_t chunk_len = (size_t)c->run_pages * DL_PAGE;
	if (!dl_run_whole(c, run) && ++cs->narrow_carves >= DL_NARROW_CARVES)
		dl_open(cs, c, run, c->cols); /* the class is busy: see above */
	unsigned row = dl_pick_row(c, run);
	if (run->warm)
		dl_warm_remove(cs, run, chunk_len);
	uint32_t carved = run->open & ~run->row_used[row];
	unsigned n = (unsigned)__builtin_popcount(carved);
	dl_assert(n == run->row_free[row] && n > 0); /* I2 */
	dl_assert(!run->discarding);
	run->discarded = false;
	run->row_used[row] |= carved;
	run->row_free[row] = 0;
	run->nfree = (uint16_t)(run->nfree - n);
	cs->slots_carved += n;
	if (run->nfree == 0)
		dl_partial_remove(cs, run);

	unsigned k = seg->used++;
	struct dl_chunk *ch = &seg->chunks[k];
	dl_assert(!ch->run && !atomic_load(&ch->pending)); /* I1: fresh */
	ch->run = run;
	ch->row = (uint16_t)row;
	atomic_store(&ch->pending, n);
	atomic_store(&ch->carved, carved);
	atomic_store(&ch->handed, 0);
	atomic_store(&ch->freed, 0);
	atomic_store(&ch->returned, 0);
	if (seg->used == seg->cap) {
		/* I5: once its chunks die, it retires and its metadata goes */
		seg->closed = true;
		cs->seg = NULL;
	}
	cs->last_run = run;
	out->seg = seg;
	out->chunk = ch;
	out->alias = seg->base + k * chunk_len;
	out->carved = carved;
	out->open = run->open;
}

unsigned _dl_chunk_carve(unsigned cls, unsigned want, struct dl_carve *out,
			 struct dl_failure *fail)
{
	const struct dl_class *c = &_dl_classes[cls];
	struct dl_class_state *cs = &dl_cs[cls];

	_dl_lock(&cs->lock);
	if (!dl_seg_with_room(cls, fail))
		return 0;
	struct dl_segment *seg = cs->seg;
	struct dl_run *run = dl_pick_run(cls);
	if (!run) {
		_dl_unlock(&cs->lock);
		*fail = (struct dl_failure){12, NULL}; /* plain ENOMEM */
		return 0;
	}
	unsigned n = 0;
	for (;;) {
		dl_carve_row(cs, c, run, seg, &out[n++]);
		/* A narrow chunk ends the refill: only its open columns'
		 * pages are populated (small.c). */
		if (n == want || seg->used == seg->cap || !dl_run_whole(c, run))
			break;
		run = dl_next_neighbour(run);
		if (!run)
			break;
	}
	_dl_unlock(&cs->lock);

	for (unsigned i = 0; i < n; i++)
		if (_dl_opt.stacks && !out[i].chunk->stacks)
			out[i].chunk->stacks = _dl_slot_stacks_alloc();
	return n;
}

void _dl_runs_lock_all(void)
{
	for (unsigned c = 0; c < _dl_nclasses; c++)
		_dl_lock(&dl_cs[c].lock);
}

void _dl_runs_unlock_all(bool reset)
{
	for (unsigned c = 0; c < _dl_nclasses; c++) {
		if (reset) {
			/* The threads discarding these runs are gone. */
			for (struct dl_run *r = dl_cs[c].partial; r; r = r->next)
				if (r->discarding) {
					r->discarding = false;
					r->discarded = true;
				}
			_dl_lock_reset(&dl_cs[c].lock);
		} else {
			_dl_unlock(&dl_cs[c].lock);
		}
	}
}

/* ---- where the memory goes (memory.c); every class lock is held ---- */

size_t _dl_runs_pages(void)
{
	size_t pages = 0;
	for (unsigned c = 0; c < _dl_nclasses; c++)
		for (struct dl_run_group *g = dl_cs[c].groups; g; g = g->next)
			pages += (size_t)g->used * _dl_classes[c].run_pages;
	return pages;
}

bool _dl_runs_resident(unsigned char *vec)
{
	size_t at = 0;
	for (unsigned c = 0; c < _dl_nclasses; c++) {
		for (struct dl_run_group *g = dl_cs[c].groups; g; g = g->next) {
			size_t pages = (size_t)g->used * _dl_classes[c].run_pages;
			g->resident_at = at;
			if (!_dl_resident_vec(g->canon, pages, vec + at))
				return false;
			at += pages;
		}
	}
	return true;
}

uint64_t _dl_run_resident(const struct dl_run *run, const unsigned char *vec,
			  size_t off, size_t len)
{
	const unsigned char *v =
		vec + run->group->resident_at +
		(run->canon - run->group->canon) / DL_PAGE;
	uint64_t bytes = 0;
	for (size_t end = off + len; off < end;) {
		size_t next = DL_ALIGN_DOWN(off, DL_PAGE) + DL_PAGE;
		if (next > end)
			next = end;
		if (v[off / DL_PAGE] & 1)
			bytes += next - off;
		off = next;
	}
	return bytes;
}

void _dl_runs_account(struct dl_mem_split *m, const unsigned char *vec)
{
	for (unsigned cls = 0; cls < _dl_nclasses; cls++) {
		const struct dl_class *c = &_dl_classes[cls];
		size_t col_len = (size_t)c->col_pages * DL_PAGE;
		size_t slots_len = (size_t)c->rows * c->size;
		for (struct dl_run_group *g = dl_cs[cls].groups; g; g = g->next) {
			for (unsigned i = 0; i < g->used; i++) {
				struct dl_run *run = g->runs[i];
				if (run->warm || run->discarding) {
					m->warm += _dl_run_resident(
						run, vec, 0,
						(size_t)c->run_pages * DL_PAGE);
					continue;
				}
				/* The backend's now: its part (stale) is what it
				 * holds besides the core's. */
				if (run->discarded)
					continue;
				for (unsigned col = 0; col < c->cols; col++) {
					size_t base = col * col_len;
					m->slack += _dl_run_resident(
						run, vec, base + slots_len,
						col_len - slots_len);
					for (unsigned r = 0; r < c->rows; r++)
						if (!(run->row_used[r] & (1u << col)))
							m->free += _dl_run_resident(
								run, vec,
								base + (size_t)r * c->size,
								c->size);
				}
			}
		}
	}
}
