/* SPDX-License-Identifier: MIT */
/*
 * revoke=batch:N.  A freed slot waits in its thread's quarantine, still
 * mapped but never reused (I2: its slot goes back only once revoked),
 * until N of them are there; then all are revoked at once, sorted by
 * address so that neighbours (the columns of a chunk, chunks side by side)
 * go in one call, and the slots go back one chunk at a time.
 */
#include <string.h>

#include "internal.h"

static __thread struct {
	struct dl_freed_slot *slots; /* _dl_opt.batch of them */
	struct dl_range *ranges;     /* as many, for the flush */
	unsigned n;
} dl_quarantine __attribute__((tls_model("initial-exec")));

static size_t dl_quarantine_bytes(void)
{
	return _dl_opt.batch *
	       (sizeof(struct dl_freed_slot) + sizeof(struct dl_range));
}

static void dl_sort(struct dl_freed_slot *q, unsigned n)
{
	/* Insertion sort of nearly sorted runs, Shell-gapped: no allocation. */
	static const unsigned gaps[] = {701, 301, 132, 57, 23, 10, 4, 1};
	for (unsigned g = 0; g < sizeof(gaps) / sizeof(gaps[0]); g++) {
		unsigned gap = gaps[g];
		for (unsigned i = gap; i < n; i++) {
			struct dl_freed_slot v = q[i];
			unsigned j = i;
			for (; j >= gap && q[j - gap].page > v.page; j -= gap)
				q[j] = q[j - gap];
			q[j] = v;
		}
	}
}

static void dl_poison(struct dl_freed_slot *slot)
{
	uintptr_t page_end = DL_ALIGN_UP(slot->obj + 1, DL_PAGE);
	if (slot->poisoned > page_end - slot->obj)
		slot->poisoned = (uint32_t)(page_end - slot->obj);
	memset((void *)slot->obj, DL_POISON_BYTE, slot->poisoned);
}

/* The first byte of the fill that changed, or 0. */
static uintptr_t dl_poison_changed(const struct dl_freed_slot *slot)
{
	const unsigned char *p = (const unsigned char *)slot->obj;
	uint32_t n = slot->poisoned, i = 0;
	const uint64_t word = 0x0101010101010101ull * DL_POISON_BYTE;
	for (; i + 8 <= n; i += 8) {
		uint64_t w;
		memcpy(&w, p + i, 8);
		if (w != word)
			break;
	}
	for (; i < n; i++)
		if (p[i] != DL_POISON_BYTE)
			return (uintptr_t)(p + i);
	return 0;
}

bool _dl_quarantine_flush(struct dl_late_write *lw)
{
	unsigned n = dl_quarantine.n;
	if (!n)
		return true;
	struct dl_freed_slot *q = dl_quarantine.slots;
	for (unsigned i = 0; i < n; i++) {
		uintptr_t at = dl_poison_changed(&q[i]);
		if (at) {
			*lw = (struct dl_late_write){at, q[i].obj, q[i].seg};
			return false;
		}
	}
	dl_sort(q, n);
	struct dl_range *r = dl_quarantine.ranges;
	unsigned nr = 0;
	for (unsigned i = 0; i < n;) {
		uintptr_t start = q[i].page;
		uintptr_t end = start + (uintptr_t)q[i].pages * DL_PAGE;
		unsigned j = i + 1;
		while (j < n && q[j].page == end) {
			end += (uintptr_t)q[j].pages * DL_PAGE;
			j++;
		}
		r[nr++] = (struct dl_range){start, end - start};
		i = j;
	}
	_dl_alias_revoke_many(r, nr);
	dl_quarantine.n = 0;
	DL_STAT_SUB(quarantined, n);
	/* One return (one lock round) per chunk: its entries are neighbours. */
	for (unsigned i = 0; i < n;) {
		uint32_t cols = 0;
		unsigned j = i;
		for (; j < n && q[j].chunk == q[i].chunk; j++)
			cols |= 1u << q[j].col;
		_dl_slots_return(q[i].seg, q[i].chunk, cols);
		i = j;
	}
	return true;
}

bool _dl_quarantine_add(struct dl_freed_slot *slot, struct dl_late_write *lw)
{
	if (unlikely(!dl_quarantine.slots)) {
		dl_quarantine.slots = _dl_meta_pages(dl_quarantine_bytes());
		if (!dl_quarantine.slots) {
			/* No room to wait in: strict for this one. */
			_dl_small_retire(slot);
			return true;
		}
		dl_quarantine.ranges =
			(struct dl_range *)(dl_quarantine.slots + _dl_opt.batch);
	}
	dl_poison(slot);
	dl_quarantine.slots[dl_quarantine.n++] = *slot;
	DL_STAT_ADD(quarantined, 1);
	if (dl_quarantine.n == _dl_opt.batch)
		return _dl_quarantine_flush(lw);
	return true;
}

bool _dl_quarantine_thread_exit(struct dl_late_write *lw)
{
	if (!_dl_quarantine_flush(lw))
		return false;
	if (dl_quarantine.slots)
		_dl_meta_unpages(dl_quarantine.slots, dl_quarantine_bytes());
	dl_quarantine.slots = NULL;
	dl_quarantine.ranges = NULL;
	return true;
}
