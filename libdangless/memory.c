/* SPDX-License-Identifier: MIT */
/*
 * Where the memory goes, for stats: every resident byte of canonical
 * memory the core holds, by what it holds (struct dl_mem_split).
 *
 * The walk holds every class lock, the large lock and the segment locks
 * (the fork order), so no run, chunk or object changes state under it
 * except by bits that free() flips lock-free; it costs one mincore per
 * group of runs and per large object, and stops allocation meanwhile.
 * Residency comes from the kernel, not from what we wrote: a slot whose
 * pages were never touched holds no memory, whatever its state.
 */
#include "internal.h"

static struct {
	dl_lock_t lock;           /* one split at a time: the context below */
	struct dl_mem_split *m;
	const unsigned char *vec;
} dl_mem;

static void dl_mem_segment(struct dl_segment *seg)
{
	if (seg->kind == DL_SEG_SMALL)
		_dl_small_account(seg, dl_mem.m, dl_mem.vec);
	else
		_dl_large_account(seg, dl_mem.m);
}

bool _dl_memory_split(struct dl_mem_split *m)
{
	*m = (struct dl_mem_split){0};
	_dl_lock(&dl_mem.lock);
	_dl_runs_lock_all();
	_dl_large_lock_all();
	_dl_segment_lock_all();
	size_t pages = _dl_runs_pages();
	unsigned char *vec = pages ? _dl_meta_pages(pages) : NULL;
	bool ok = !pages || (vec && _dl_runs_resident(vec));
	if (ok) {
		dl_mem.m = m;
		dl_mem.vec = vec;
		_dl_runs_account(m, vec);
		_dl_segment_for_each_live(dl_mem_segment);
		_dl_large_account(NULL, m);
	}
	_dl_segment_unlock_all(false);
	_dl_large_unlock_all(false);
	_dl_runs_unlock_all(false);
	_dl_unlock(&dl_mem.lock);
	if (vec)
		_dl_meta_unpages(vec, pages);
	return ok;
}
