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
	struct dl_run *last_run;  /* the run the last chunk mapped */
	struct dl_run_group *group; /* where new runs are carved */
	size_t slots, slots_carved; /* in all runs / carved into chunks */
	unsigned warm_runs;       /* empty runs whose pages are kept */
} __attribute__((aligned(64)));
static struct dl_class_state dl_cs[DL_NCLASSES_MAX];

bool _dl_release_dead_chunks;

static struct dl_pool dl_run_pool = DL_POOL(struct dl_run, "runs");
static struct dl_pool dl_group_pool =
	DL_POOL(struct dl_run_group, "run groups");
static struct dl_pool dl_stacks_pool =
	DL_POOL(struct dl_slot_stacks, "stacks");

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
 * Retires the segment when that was the last of it.  An empty run keeps
 * its slot in the class, but its pages go back to the OS unless it is the
 * run in use or dl_run_emptied keeps it warm.
 */
void _dl_slots_return(struct dl_segment *seg, struct dl_chunk *ch,
		      uint32_t cols)
{
	unsigned cls = seg->cls, n = (unsigned)__builtin_popcount(cols);
	const struct dl_class *c = &_dl_classes[cls];
	struct dl_class_state *cs = &dl_cs[cls];
	struct dl_run *run = ch->run;
	bool retire = false;

	_dl_lock(&cs->lock);
	/* I2: only slots carved into this chunk, once each; I3: the count
	 * covers them. */
	dl_assert(run && (run->row_used[ch->row] & cols) == cols);
	dl_assert((atomic_load(&ch->carved) & cols) == cols);
	dl_assert(atomic_load(&ch->pending) >= n);
	run->row_used[ch->row] &= ~cols;
	run->row_free[ch->row] = (uint8_t)(run->row_free[ch->row] + n);
	run->nfree = (uint16_t)(run->nfree + n);
	cs->slots_carved -= n;
	if (!run->in_partial)
		dl_partial_push(cs, run);
	if (run->nfree == c->rows * c->cols && run != cs->last_run)
		dl_run_emptied(cs, c, run);
	bool chunk_dead = atomic_fetch_sub(&ch->pending, n) == n;
	if (chunk_dead) {
		ch->run = NULL;
		unsigned dead = atomic_fetch_add(&seg->dead, 1) + 1;
		retire = seg->closed && dead == seg->used;
	}
	_dl_unlock(&cs->lock);

	if (retire) {
		_dl_segment_retire(seg);
	} else if (chunk_dead && _dl_release_dead_chunks) {
		/* Every slot is revoked (I3): nothing here is reachable. */
		size_t chunk_len = (size_t)c->run_pages * DL_PAGE;
		_dl_be->alias_release(
			(void *)(seg->base + (uintptr_t)(ch - seg->chunks) *
						     chunk_len),
			chunk_len);
	}
}

bool _dl_chunk_carve(unsigned cls, struct dl_carve *out,
		     struct dl_failure *fail)
{
	const struct dl_class *c = &_dl_classes[cls];
	struct dl_class_state *cs = &dl_cs[cls];
	size_t chunk_len = (size_t)c->run_pages * DL_PAGE;

	_dl_lock(&cs->lock);
	struct dl_run *run = dl_pick_run(cls);
	if (!run) {
		_dl_unlock(&cs->lock);
		*fail = (struct dl_failure){12, NULL}; /* plain ENOMEM */
		return false;
	}
	struct dl_segment *seg = cs->seg;
	if (!seg || seg->used == seg->cap) {
		seg = _dl_segment_new(DL_SEG_SMALL, (uint8_t)cls, DL_SEG_SIZE,
				      DL_SEG_SIZE, fail);
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
	dl_assert(n == run->row_free[row] && n > 0); /* I2 */
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
	if (seg->used == seg->cap)
		seg->closed = true;
	_dl_unlock(&cs->lock);

	if (_dl_opt.stacks && !ch->stacks)
		ch->stacks = _dl_pool_alloc(&dl_stacks_pool);
	out->seg = seg;
	out->chunk = ch;
	out->alias = seg->base + k * chunk_len;
	out->carved = carved;
	/* Making all the run's page-table entries at once costs about a
	 * quarter of faulting one page in: worth it when the chunk hands
	 * out at least a quarter of its columns. */
	out->populate = 4 * n >= c->cols;
	return true;
}

void _dl_runs_lock_all(void)
{
	for (unsigned c = 0; c < _dl_nclasses; c++)
		_dl_lock(&dl_cs[c].lock);
}

void _dl_runs_unlock_all(bool reset)
{
	void (*op)(dl_lock_t *) = reset ? _dl_lock_reset : _dl_unlock;
	for (unsigned c = 0; c < _dl_nclasses; c++)
		op(&dl_cs[c].lock);
}
