/* SPDX-License-Identifier: MIT */
/*
 * Alias space and its page tables.  Alias space is top-table slots
 * KVM_ALIAS_SLOT_FIRST.. of the guest (upper half: of the PML4 with 4-level
 * paging, of the PML5 with 5), carved in order, never twice.  Its tables
 * (PML4s under a PML5, PDPT, PD, PT) come from a pool of our own: one 1 GiB
 * region of process memory, so a table's guest-physical address is the
 * region's base plus its offset.  libdune's pool never gives pages back, and
 * alias space is used up as a program runs, so ours does: a PT whose 2 MiB
 * is released as a whole goes back to the pool once every vCPU has dropped
 * what it cached of it.  PML4s, PDPTs and PDs stay (one page per GiB of
 * alias space ever used).
 *
 * Concurrency: a PTE is written by the one thread that maps or revokes its
 * page (the core hands each alias page out once); tables are installed and
 * freed under pt.lock; readers walk without a lock, and kvm_translate,
 * which may walk into a released range, checks pt.freed around its walk.
 */
#include <errno.h>
#include <string.h>
#include <sys/mman.h>

#include "kvm.h"

#define KVM_PT_POOL_SIZE KVM_GIB
#define PT_INTERIOR (PTE_P | PTE_W | PTE_U)
#define PT_INDEX(va, level) (((uint64_t)(va) >> (12 + 9 * ((level)-1))) & 511)
#define SPAN_2M ((uintptr_t)1 << 21)

struct kvm_paging kvm_paging;

void kvm_paging_init(void)
{
	int levels = dune_paging_levels();
	kvm_paging.levels = levels == 5 ? 5 : 4;
	kvm_paging.addr_bits = levels == 5 ? 56 : 47;
	kvm_paging.top = dune_pgtable_top();
	kvm_paging.alias_start =
		kvm_top_slot_base(KVM_ALIAS_SLOT_FIRST, kvm_paging.levels);
	kvm_paging.alias_end =
		kvm_top_slot_base(KVM_ALIAS_SLOT_END, kvm_paging.levels);
}

static struct {
	char *pool;           /* KVM_PT_POOL_SIZE, 1 GiB aligned */
	uint64_t pool_pa;     /* its guest-physical base */
	dl_lock_t lock;       /* installs and frees tables */
	size_t bump;          /* pool offsets below are in use or free */
	void *free_pages;     /* freed tables, linked through their first word */
	_Atomic uint64_t freed; /* tables freed so far: kvm_translate retries */
	dl_lock_t alias_lock;
	uintptr_t alias_next; /* alias space below is handed out */
} pt;

int kvm_pt_init(void)
{
	char *res = mmap(NULL, 2 * KVM_PT_POOL_SIZE, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (res == MAP_FAILED) {
		int err = errno;
		_dl_warn("kvm backend: cannot reserve the page-table pool: %s",
			 _dl_strerror(err));
		return -err;
	}
	char *pool = (char *)DL_ALIGN_UP((uintptr_t)res, KVM_PT_POOL_SIZE);
	if (pool > res)
		munmap(res, (size_t)(pool - res));
	munmap(pool + KVM_PT_POOL_SIZE,
	       (size_t)(res + KVM_PT_POOL_SIZE - pool));
	pt.pool = pool;
	pt.alias_next = KVM_ALIAS_START + KVM_GAP;
	return 0;
}

void kvm_pt_fini(void)
{
	if (pt.pool)
		munmap(pt.pool, KVM_PT_POOL_SIZE);
	pt.pool = NULL;
}

/* In the guest, before the first table is made. */
int kvm_pt_start(void)
{
	pt.pool_pa = kvm_default_pa((uintptr_t)pt.pool);
	if (pt.pool_pa == UINT64_MAX || (pt.pool_pa & (KVM_PT_POOL_SIZE - 1)))
		return -EFAULT;
	return 0;
}

static ptent_t *pt_table(ptent_t e)
{
	return (ptent_t *)(pt.pool + (PTE_ADDR(e) - pt.pool_pa));
}

/* Under pt.lock: a zeroed table page, or NULL. */
static ptent_t *pt_page_alloc(void)
{
	ptent_t *t = pt.free_pages;
	if (t) {
		pt.free_pages = *(void **)t;
		memset(t, 0, DL_PAGE);
	} else {
		if (pt.bump + DL_PAGE > KVM_PT_POOL_SIZE)
			return NULL;
		t = (ptent_t *)(pt.pool + pt.bump); /* never touched: zero */
		pt.bump += DL_PAGE;
	}
	DL_STAT_ADD(pt_pages, 1);
	return t;
}

static void pt_page_free(ptent_t *t)
{
	*(void **)t = pt.free_pages;
	pt.free_pages = t;
	DL_STAT_SUB(pt_pages, 1);
}

/* The PT (last-level table) that maps va, made if create; NULL if none. */
static ptent_t *pt_leaf(uintptr_t va, bool create)
{
	ptent_t *t = kvm_paging.top;
	for (int level = (int)kvm_paging.levels; level > 1; level--) {
		_Atomic ptent_t *slot = (_Atomic ptent_t *)&t[PT_INDEX(va, level)];
		ptent_t e = atomic_load_explicit(slot, memory_order_acquire);
		if (!(e & PTE_P)) {
			if (!create)
				return NULL;
			_dl_lock(&pt.lock);
			e = atomic_load_explicit(slot, memory_order_relaxed);
			if (!(e & PTE_P)) {
				ptent_t *n = pt_page_alloc();
				if (!n) {
					_dl_unlock(&pt.lock);
					return NULL;
				}
				e = (pt.pool_pa + (uint64_t)((char *)n - pt.pool)) |
				    PT_INTERIOR;
				atomic_store_explicit(slot, e,
						      memory_order_release);
			}
			_dl_unlock(&pt.lock);
		}
		t = pt_table(e);
	}
	return t;
}

void *kvm_alias_reserve(size_t len, size_t align)
{
	_dl_lock(&pt.alias_lock);
	uintptr_t start = DL_ALIGN_UP(pt.alias_next, align);
	if (start < pt.alias_next || start + len < start ||
	    start + len > KVM_ALIAS_END - KVM_GAP) {
		_dl_unlock(&pt.alias_lock);
		return NULL;
	}
	pt.alias_next = start + len;
	_dl_unlock(&pt.alias_lock);
	DL_STAT_ADD(alias_bytes_reserved, len);
	return (void *)start;
}

/* Sets the PTEs of [va, va+len) (all in existing tables) to value. */
static size_t pt_set(uintptr_t va, size_t len, ptent_t value)
{
	size_t written = 0;
	for (uintptr_t a = va, end = va + len; a < end;) {
		uintptr_t span_end = (a | (SPAN_2M - 1)) + 1;
		if (span_end > end)
			span_end = end;
		ptent_t *t = pt_leaf(a, false);
		if (t) {
			for (uintptr_t p = a; p < span_end; p += DL_PAGE)
				atomic_store_explicit(
					(_Atomic ptent_t *)&t[PT_INDEX(p, 1)],
					value, memory_order_relaxed);
			written += (span_end - a) / DL_PAGE;
		}
		a = span_end;
	}
	return written;
}

/* This vCPU forgets [va, va+len): invlpg each page, or reload CR3. */
static void pt_flush_local(uintptr_t va, size_t pages)
{
	if (pages > KVM_INVLPG_MAX) {
		kvm_flush_all();
		return;
	}
	for (size_t i = 0; i < pages; i++)
		kvm_flush_page(va + i * DL_PAGE);
}

int kvm_alias_map(void *alias, void *canon_v, size_t len, size_t populate)
{
	(void)populate; /* the PTEs are made now either way */
	uintptr_t a = (uintptr_t)alias, c = (uintptr_t)canon_v;
	if (!kvm_is_alias(a) || !kvm_is_alias(a + len - 1))
		return -EINVAL;
	kvm_canon_reuse(canon_v, len);
	for (size_t off = 0; off < len;) {
		uintptr_t va = a + off;
		ptent_t *t = pt_leaf(va, true);
		if (!t) {
			pt_set(a, off, 0); /* as before the call */
			pt_flush_local(a, off / DL_PAGE);
			return -ENOMEM;
		}
		size_t n = 512 - PT_INDEX(va, 1);
		if (n > (len - off) / DL_PAGE)
			n = (len - off) / DL_PAGE;
		for (size_t i = 0; i < n; i++, off += DL_PAGE) {
			uint64_t pa = kvm_canon_pa(c + off);
			if (pa == UINT64_MAX) {
				pt_set(a, off, 0);
				pt_flush_local(a, off / DL_PAGE);
				return -EFAULT;
			}
			atomic_store_explicit(
				(_Atomic ptent_t *)&t[PT_INDEX(va, 1) + i],
				pa | KVM_PTE_ALIAS, memory_order_release);
		}
		DL_STAT_ADD(pte_writes, n);
	}
	return 0;
}

int kvm_alias_revoke(void *alias, size_t len)
{
	uintptr_t a = (uintptr_t)alias;
	DL_STAT_ADD(pte_writes, pt_set(a, len, KVM_PTE_REVOKED));
	pt_flush_local(a, len / DL_PAGE);
	kvm_shootdown();
	return 0;
}

int kvm_alias_revoke_many(const struct dl_range *ranges, unsigned n)
{
	size_t pages = 0;
	for (unsigned i = 0; i < n; i++) {
		DL_STAT_ADD(pte_writes, pt_set(ranges[i].start, ranges[i].len,
					       KVM_PTE_REVOKED));
		pages += ranges[i].len / DL_PAGE;
	}
	if (pages > KVM_INVLPG_MAX)
		kvm_flush_all();
	else
		for (unsigned i = 0; i < n; i++)
			pt_flush_local(ranges[i].start,
				       ranges[i].len / DL_PAGE);
	kvm_shootdown();
	return 0;
}

/*
 * Released for good: the PTEs are cleared, and a PT whose whole 2 MiB lies
 * in the range is unhooked from its PD; the unhooked PTs go back to the pool
 * only after the shootdown, when no vCPU can still walk through them.
 */
#define KVM_RELEASE_BATCH 64
int kvm_alias_release(void *alias, size_t len)
{
	uintptr_t a = (uintptr_t)alias, end = a + len;
	while (a < end) {
		ptent_t *unhooked[KVM_RELEASE_BATCH];
		unsigned nun = 0;
		uintptr_t from = a;
		size_t pages = 0;
		while (a < end && nun < KVM_RELEASE_BATCH) {
			uintptr_t span = DL_ALIGN_DOWN(a, SPAN_2M);
			uintptr_t span_end = span + SPAN_2M;
			if (a == span && span_end <= end) {
				/* the PD entry of this span */
				ptent_t *t = kvm_paging.top;
				for (int level = (int)kvm_paging.levels;
				     level > 2 && t; level--) {
					ptent_t e = t[PT_INDEX(a, level)];
					t = (e & PTE_P) ? pt_table(e) : NULL;
				}
				if (t) {
					_Atomic ptent_t *slot =
						(_Atomic ptent_t *)&t[PT_INDEX(a, 2)];
					ptent_t e = atomic_load(slot);
					if (e & PTE_P) {
						atomic_store(slot, 0);
						unhooked[nun++] = pt_table(e);
						DL_STAT_ADD(pte_writes, 1);
					}
				}
				a = span_end;
				pages += SPAN_2M / DL_PAGE;
				continue;
			}
			uintptr_t stop = span_end < end ? span_end : end;
			DL_STAT_ADD(pte_writes, pt_set(a, stop - a, 0));
			pages += (stop - a) / DL_PAGE;
			a = stop;
		}
		/* Unhooked tables may sit in paging-structure caches: only a
		 * CR3 reload drops those everywhere. */
		if (nun)
			kvm_flush_all();
		else
			pt_flush_local(from, pages);
		kvm_shootdown();
		if (nun) {
			atomic_fetch_add(&pt.freed, 1);
			_dl_lock(&pt.lock);
			for (unsigned i = 0; i < nun; i++)
				pt_page_free(unhooked[i]);
			_dl_unlock(&pt.lock);
		}
	}
	return 0;
}

/* One walk; false if va is not mapped. */
static bool pt_walk_one(uintptr_t va, uintptr_t *host, size_t *contig)
{
	ptent_t *t = pt_leaf(va, false);
	if (!t)
		return false;
	unsigned i = (unsigned)PT_INDEX(va, 1);
	ptent_t e = atomic_load_explicit((_Atomic ptent_t *)&t[i],
					 memory_order_acquire);
	if (!(e & PTE_P))
		return false;
	uintptr_t h = kvm_canon_of_pa(PTE_ADDR(e));
	if (!h)
		return false;
	*host = h + (va & (DL_PAGE - 1));
	/* Following pages that continue the same canonical run. */
	size_t run = DL_PAGE - (va & (DL_PAGE - 1));
	uintptr_t next_host = h + DL_PAGE;
	uintptr_t p = DL_ALIGN_DOWN(va, DL_PAGE) + DL_PAGE;
	for (;;) {
		if (PT_INDEX(p, 1) == 0) {
			if (!kvm_is_alias(p) || !(t = pt_leaf(p, false)))
				break;
		}
		e = atomic_load_explicit((_Atomic ptent_t *)&t[PT_INDEX(p, 1)],
					 memory_order_acquire);
		if (!(e & PTE_P) || kvm_canon_of_pa(PTE_ADDR(e)) != next_host)
			break;
		run += DL_PAGE;
		next_host += DL_PAGE;
		p += DL_PAGE;
	}
	*contig = run;
	return true;
}

bool kvm_translate(uintptr_t va, uintptr_t *host, size_t *contig)
{
	if (!kvm_is_alias(va)) {
		*host = va;
		*contig = SIZE_MAX - va;
		return true;
	}
	for (;;) {
		uint64_t before = atomic_load(&pt.freed);
		bool ok = pt_walk_one(va, host, contig);
		if (atomic_load(&pt.freed) == before)
			return ok;
	}
}

void kvm_pt_lock(void)
{
	_dl_lock(&pt.alias_lock);
	_dl_lock(&pt.lock);
}

void kvm_pt_unlock(bool reset)
{
	if (reset) {
		_dl_lock_reset(&pt.lock);
		_dl_lock_reset(&pt.alias_lock);
		return;
	}
	_dl_unlock(&pt.lock);
	_dl_unlock(&pt.alias_lock);
}

/*
 * A released range holds no translation: kvm_alias_release cleared its
 * PTEs (or unhooked whole PTs), flushed this vCPU and shot down the others
 * before it returned.  Mapping it again is what a fresh range gets:
 * pt_set installs tables where they are missing.  Nothing is left to do.
 */
int kvm_alias_reuse(void *alias, size_t len)
{
	(void)alias;
	(void)len;
	return 0;
}

/* The page-table pool (entries, not pointers) and our state, whose
 * reservation cursor points into alias space: not a sweep's roots. */
void kvm_pt_own(void (*fn)(uintptr_t start, size_t len, void *ctx), void *ctx)
{
	if (pt.pool)
		fn((uintptr_t)pt.pool, KVM_PT_POOL_SIZE, ctx);
	fn((uintptr_t)&pt, sizeof(pt), ctx);
}

/* The pool's pages in use or kept free (stats). */
bool kvm_pt_resident(uint64_t *bytes)
{
	_dl_lock(&pt.lock);
	size_t end = pt.bump;
	_dl_unlock(&pt.lock);
	/* libdune's own tables (the guest's view of the rest of the
	 * process) are page tables too, not the program's memory. */
	struct dune_stats st;
	dune_get_stats(&st);
	uint64_t libdune = 0;
	if (!pt.pool || !_dl_resident_bytes((uintptr_t)pt.pool, end, bytes) ||
	    (st.pt_pool &&
	     !_dl_resident_bytes(st.pt_pool, st.pt_pool_used, &libdune)))
		return false;
	*bytes += libdune;
	return true;
}
