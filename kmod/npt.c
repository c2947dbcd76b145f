// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * The guest-physical map: guest-physical -> the process's own pages, in
 * AMD's nested page tables or Intel's EPT (the entry format is the
 * vendor's: dune_vendor->gpm; the walk, the fault path and the MMU
 * notifier are the same for both, so "NPT" below means either).
 *
 * Filled on demand: a nested page fault in a region looks the page up with
 * get_user_pages_fast (so the process's own protections apply) and installs
 * a 4 KiB entry, writable only after a write fault; a 2 MiB one where the
 * process maps the whole aligned 2 MiB around it with one huge page (THP or
 * hugetlb) and the region covers it at the same alignment, so that a guest
 * touching a huge page takes one fault instead of 512.  PFNMAP/IO mappings
 * (get_user_pages refuses them) are reached for reading only, and only
 * where they map RAM: that is the vDSO's data page (vvar), which the
 * guest's clock_gettime reads; device memory stays out of reach.  No page reference is kept: an MMU notifier removes the
 * entries of every range the process's page tables change (munmap, mremap,
 * mprotect, copy-on-write, reclaim, migration) before the page can go
 * elsewhere, and kicks the vCPUs that run so that none keeps a stale
 * translation.  A fault that raced with such a change is retried.
 */
#define pr_fmt(fmt) "dune: " fmt

#include <linux/ioport.h>
#include <linux/mm.h>
#include <linux/mem_encrypt.h>
#include <linux/version.h>
#include <linux/sched/signal.h>
#include <asm/io.h>
#include <asm/trap_pf.h>

#include "dune_internal.h"

#define NPT_PS (1ull << 7) /* in a level-1 entry: a 2 MiB leaf (NPT and EPT) */
#define NPT_HUGE_SIZE (1ull << 21)
#define NPT_ADDR_MASK 0x000ffffffffff000ull
#define NPT_LEVELS 4

static unsigned int npt_index(u64 gpa, int level) /* level 3 = root */
{
	return (gpa >> (12 + 9 * level)) & 511;
}

static bool npt_present(u64 entry)
{
	return entry & dune_vendor->gpm->present;
}

static u64 *npt_table(u64 entry)
{
	return __va(__sme_clr(entry & NPT_ADDR_MASK));
}

int dune_npt_init(struct dune_vm *vm)
{
	vm->npt_root = dune_alloc_page();
	return vm->npt_root ? 0 : -ENOMEM;
}

static bool npt_is_table(u64 entry, int level)
{
	return level > 0 && npt_present(entry) && !(entry & NPT_PS);
}

static void npt_free_level(u64 *table, int level)
{
	unsigned int i;

	if (level > 0)
		for (i = 0; i < 512; i++)
			if (npt_is_table(table[i], level))
				npt_free_level(npt_table(table[i]), level - 1);
	dune_free_page(virt_to_page(table));
}

void dune_npt_destroy(struct dune_vm *vm)
{
	if (vm->npt_root)
		npt_free_level(page_address(vm->npt_root), NPT_LEVELS - 1);
	vm->npt_root = NULL;
	while (vm->pt_cached)
		dune_free_page(vm->pt_cache[--vm->pt_cached]);
}

/* Clears the leaves in [start, end) under table; returns how many. */
static unsigned long npt_zap_level(u64 *table, int level, u64 base, u64 start,
				   u64 end)
{
	u64 span = 1ull << (12 + 9 * level);
	unsigned long zapped = 0;
	unsigned int i;

	for (i = 0; i < 512; i++) {
		u64 lo = base + i * span, hi = lo + span;

		if (hi <= start || lo >= end || !npt_present(table[i]))
			continue;
		if (!npt_is_table(table[i], level)) {
			/* a leaf, 2 MiB ones whole even when the range
			 * covers part: the next fault maps what is left */
			WRITE_ONCE(table[i], 0);
			zapped++;
		} else {
			zapped += npt_zap_level(npt_table(table[i]), level - 1,
						lo, start, end);
		}
	}
	return zapped;
}

static unsigned long npt_zap(struct dune_vm *vm, u64 start, u64 end)
{
	lockdep_assert_held(&vm->mmu_lock);
	return npt_zap_level(page_address(vm->npt_root), NPT_LEVELS - 1, 0,
			     start, end);
}

/* After a zap, with mmu_lock dropped: no vCPU keeps an old translation. */
static void npt_zapped(struct dune_vm *vm, unsigned long zapped)
{
	if (!zapped)
		return;
	atomic64_add(zapped, &dune_counters.npt_zaps);
	atomic64_inc(&vm->tlb_gen);
	dune_kick_vcpus(vm);
}

/*
 * The entry that maps gpa at leaf_level (0: 4 KiB, 1: 2 MiB), building
 * tables from the cache; NULL if it ran dry, or if a 2 MiB leaf is wanted
 * where a table of 4 KiB entries is (kept: freeing it would first need
 * every vCPU out of it).  A 2 MiB leaf where a 4 KiB one is wanted is
 * removed, counted in *zapped.
 */
static u64 *npt_leaf(struct dune_vm *vm, u64 gpa, int leaf_level,
		     unsigned long *zapped)
{
	u64 *table = page_address(vm->npt_root);
	int level;

	for (level = NPT_LEVELS - 1; level > leaf_level; level--) {
		u64 *entry = &table[npt_index(gpa, level)];

		if (*entry & NPT_PS) {
			WRITE_ONCE(*entry, 0);
			++*zapped;
		}
		if (!npt_present(*entry)) {
			struct page *page;

			if (!vm->pt_cached)
				return NULL;
			page = vm->pt_cache[--vm->pt_cached];
			WRITE_ONCE(*entry, __sme_set(page_to_phys(page)) | dune_vendor->gpm->table);
		}
		table = npt_table(*entry);
	}
	if (npt_is_table(table[npt_index(gpa, leaf_level)], leaf_level))
		return NULL;
	return &table[npt_index(gpa, leaf_level)];
}

/*
 * Whether the process maps hva, right now, with a 2 MiB page that holds
 * pfn (writable, if write).  Read without locks, as get_user_pages_fast
 * reads, with interrupts off so that no page-table page is freed under the
 * walk; the caller holds mmu_lock and has checked invalidation_seq, so a
 * change after this read is followed by a notifier that zaps the entry.
 */
static bool npt_host_maps_huge(unsigned long hva, unsigned long pfn, bool write)
{
	struct mm_struct *mm = current->mm;
	unsigned long flags;
	bool huge = false;
	pgd_t *pgd;
	p4d_t *p4dp, p4d;
	pud_t *pudp, pud;
	pmd_t pmd;

	local_irq_save(flags);
	pgd = pgd_offset(mm, hva);
	if (pgd_none(READ_ONCE(*pgd)))
		goto out;
	p4dp = p4d_offset(pgd, hva);
	p4d = READ_ONCE(*p4dp);
	if (!p4d_present(p4d))
		goto out;
	pudp = pud_offset(&p4d, hva);
	pud = READ_ONCE(*pudp);
	if (!pud_present(pud) || pud_leaf(pud))
		goto out;
	pmd = READ_ONCE(*pmd_offset(&pud, hva));
	huge = pmd_present(pmd) && pmd_leaf(pmd) &&
	       pmd_pfn(pmd) == (pfn & ~(unsigned long)(PTRS_PER_PMD - 1)) &&
	       (!write || pmd_write(pmd));
out:
	local_irq_restore(flags);
	return huge;
}

/* The 2 MiB guest-physical frame around gpa lies in r at hva's alignment. */
static bool npt_region_fits_huge(const struct dune_region_slot *r, u64 gpa,
				 unsigned long hva)
{
	u64 lo = gpa & ~(NPT_HUGE_SIZE - 1);

	return !((gpa ^ hva) & (NPT_HUGE_SIZE - 1)) && lo >= r->gpa &&
	       lo + NPT_HUGE_SIZE <= r->gpa + r->size;
}

static int npt_fill_cache(struct dune_vm *vm)
{
	while (vm->pt_cached < NPT_LEVELS - 1) {
		struct page *page = dune_alloc_page();

		if (!page)
			return -ENOMEM;
		spin_lock(&vm->mmu_lock);
		if (vm->pt_cached < ARRAY_SIZE(vm->pt_cache))
			vm->pt_cache[vm->pt_cached++] = page, page = NULL;
		spin_unlock(&vm->mmu_lock);
		if (page)
			dune_free_page(page);
	}
	return 0;
}

static struct dune_region_slot *npt_region_of(struct dune_vm *vm, u64 gpa)
{
	unsigned int i;

	for (i = 0; i < vm->regions_end; i++) {
		struct dune_region_slot *r = &vm->regions[i];

		if (r->used && gpa >= r->gpa && gpa - r->gpa < r->size)
			return r;
	}
	return NULL;
}

#if LINUX_VERSION_CODE < KERNEL_VERSION(6, 10, 0)
static int npt_follow_pfn(struct vm_area_struct *vma, unsigned long hva,
			  unsigned long *pfn)
{
	return follow_pfn(vma, hva, pfn);
}
#elif LINUX_VERSION_CODE >= KERNEL_VERSION(6, 12, 0)
static int npt_follow_pfn(struct vm_area_struct *vma, unsigned long hva,
			  unsigned long *pfn)
{
	struct follow_pfnmap_args args = { .vma = vma, .address = hva };
	int ret = follow_pfnmap_start(&args);

	if (!ret) {
		*pfn = args.pfn;
		follow_pfnmap_end(&args);
	}
	return ret;
}
#else
static int npt_follow_pfn(struct vm_area_struct *vma, unsigned long hva,
			  unsigned long *pfn)
{
	return -EFAULT; /* 6.10 and 6.11: PFNMAP mappings stay out of reach */
}
#endif

/*
 * The RAM frame behind hva in a PFNMAP/IO mapping the process may read,
 * faulting it in on the host first; for a read only.  0 or -EFAULT.
 */
static int npt_pfnmap_frame(unsigned long hva, unsigned long *pfn)
{
	struct mm_struct *mm = current->mm;
	struct vm_area_struct *vma;
	int ret = -EFAULT;

	mmap_read_lock(mm);
	vma = vma_lookup(mm, hva);
	if (vma && (vma->vm_flags & (VM_IO | VM_PFNMAP)) && (vma->vm_flags & VM_READ)) {
		ret = npt_follow_pfn(vma, hva, pfn);
		if (ret) {
			bool unlocked = false;

			ret = fixup_user_fault(mm, hva, 0, &unlocked);
			vma = ret ? NULL : vma_lookup(mm, hva);
			ret = vma && (vma->vm_flags & (VM_IO | VM_PFNMAP)) ?
				npt_follow_pfn(vma, hva, pfn) : -EFAULT;
		}
		if (!ret && !page_is_ram(*pfn))
			ret = -EFAULT;
	}
	mmap_read_unlock(mm);
	return ret ? -EFAULT : 0;
}

int dune_npt_fault(struct dune_vm *vm, u64 gpa, u64 error_code)
{
	bool write = error_code & X86_PF_WRITE;
	struct dune_region_slot *r;
	unsigned long seq, hva, pfn, zapped = 0;
	struct page *page = NULL;
	bool fits_huge;
	u64 *leaf, entry;
	int ret;

	if (error_code & X86_PF_RSVD) /* a malformed NPT: report, do not loop */
		return 1;
	gpa &= PAGE_MASK;
	spin_lock(&vm->mmu_lock);
	r = npt_region_of(vm, gpa);
	if (!r || (write && r->readonly) || vm->mm_gone) {
		spin_unlock(&vm->mmu_lock);
		return 1;
	}
	hva = r->uaddr + (gpa - r->gpa);
	fits_huge = npt_region_fits_huge(r, gpa, hva);
	seq = vm->invalidation_seq;
	spin_unlock(&vm->mmu_lock);

	ret = npt_fill_cache(vm);
	if (ret)
		return ret;
	smp_rmb(); /* seq read before the host page tables are */
	ret = get_user_pages_fast(hva, 1, write ? FOLL_WRITE : 0, &page);
	if (ret == 1) {
		pfn = page_to_pfn(page);
	} else {
		page = NULL;
		if (fatal_signal_pending(current))
			return -EINTR;
		if (write || npt_pfnmap_frame(hva, &pfn))
			return 1; /* the process has no such page: user space decides */
	}

	spin_lock(&vm->mmu_lock);
	if (vm->invalidations_running || vm->invalidation_seq != seq) {
		/* The host mapping changed meanwhile: fault again. */
		spin_unlock(&vm->mmu_lock);
		if (page)
			put_page(page);
		return 0;
	}
	entry = dune_vendor->gpm->leaf | (write ? dune_vendor->gpm->leaf_write : 0);
	leaf = NULL;
	/* the regions cannot have changed: that bumps the sequence */
	if (page && fits_huge && dune_vendor->gpm->huge &&
	    npt_host_maps_huge(hva, pfn, write)) {
		leaf = npt_leaf(vm, gpa, 1, &zapped);
		if (leaf)
			entry |= NPT_PS | __sme_set(PFN_PHYS(pfn & ~(unsigned long)(PTRS_PER_PMD - 1)));
	}
	if (!leaf) {
		leaf = npt_leaf(vm, gpa, 0, &zapped);
		entry |= __sme_set(PFN_PHYS(pfn));
	}
	if (leaf) {
		WRITE_ONCE(*leaf, entry);
		atomic64_inc(&dune_counters.npt_faults);
	}
	spin_unlock(&vm->mmu_lock);
	npt_zapped(vm, zapped);
	if (page)
		put_page(page);
	return 0;
}

int dune_npt_set_region(struct dune_vm *vm, const struct dune_region *req)
{
	struct dune_region_slot *slot, new = {};
	unsigned long zapped = 0;
	unsigned int i;

	if (req->slot >= DUNE_MAX_REGIONS || (req->flags & ~DUNE_REGION_READONLY))
		return -EINVAL;
	if (req->size) {
		u64 gpa_limit = 1ull << dune_phys_bits;

		if (!PAGE_ALIGNED(req->guest_phys) || !PAGE_ALIGNED(req->user_addr) ||
		    !PAGE_ALIGNED(req->size))
			return -EINVAL;
		if (req->guest_phys >= gpa_limit || req->size > gpa_limit - req->guest_phys)
			return -EINVAL;
		if (req->user_addr + req->size < req->user_addr ||
		    !access_ok((void __user *)(unsigned long)req->user_addr, req->size))
			return -EFAULT;
		new.used = true;
		new.readonly = req->flags & DUNE_REGION_READONLY;
		new.gpa = req->guest_phys;
		new.uaddr = req->user_addr;
		new.size = req->size;
	} else if (req->guest_phys || req->user_addr || req->flags) {
		return -EINVAL;
	}

	mutex_lock(&vm->regions_lock);
	for (i = 0; new.used && i < vm->regions_end; i++) {
		const struct dune_region_slot *o = &vm->regions[i];

		if (i != req->slot && o->used && new.gpa < o->gpa + o->size &&
		    o->gpa < new.gpa + new.size) {
			mutex_unlock(&vm->regions_lock);
			return -EEXIST;
		}
	}
	slot = &vm->regions[req->slot];
	spin_lock(&vm->mmu_lock);
	if (slot->used)
		zapped = npt_zap(vm, slot->gpa, slot->gpa + slot->size);
	*slot = new;
	if (new.used && req->slot >= vm->regions_end)
		vm->regions_end = req->slot + 1;
	while (vm->regions_end && !vm->regions[vm->regions_end - 1].used)
		vm->regions_end--;
	vm->invalidation_seq++;
	spin_unlock(&vm->mmu_lock);
	mutex_unlock(&vm->regions_lock);
	npt_zapped(vm, zapped);
	return 0;
}

static struct dune_vm *to_vm(struct mmu_notifier *mn)
{
	return container_of(mn, struct dune_vm, notifier);
}

static int dune_mn_invalidate_range_start(struct mmu_notifier *mn,
					  const struct mmu_notifier_range *range)
{
	struct dune_vm *vm = to_vm(mn);
	unsigned long zapped = 0;
	unsigned int i;

	/* Only a spinlock and IPIs: fine for non-blockable callers too. */
	spin_lock(&vm->mmu_lock);
	vm->invalidations_running++;
	vm->invalidation_seq++;
	for (i = 0; i < vm->regions_end; i++) {
		const struct dune_region_slot *r = &vm->regions[i];
		u64 lo, hi;

		if (!r->used)
			continue;
		lo = max_t(u64, range->start, r->uaddr);
		hi = min_t(u64, range->end, r->uaddr + r->size);
		if (lo < hi)
			zapped += npt_zap(vm, r->gpa + (lo - r->uaddr),
					  r->gpa + (hi - r->uaddr));
	}
	spin_unlock(&vm->mmu_lock);
	npt_zapped(vm, zapped);
	return 0;
}

static void dune_mn_invalidate_range_end(struct mmu_notifier *mn,
					 const struct mmu_notifier_range *range)
{
	struct dune_vm *vm = to_vm(mn);

	spin_lock(&vm->mmu_lock);
	vm->invalidations_running--;
	vm->invalidation_seq++;
	spin_unlock(&vm->mmu_lock);
}

/* The address space is going away (exit, or the last user of the mm). */
static void dune_mn_release(struct mmu_notifier *mn, struct mm_struct *mm)
{
	struct dune_vm *vm = to_vm(mn);
	unsigned long zapped;

	spin_lock(&vm->mmu_lock);
	vm->mm_gone = true;
	vm->invalidation_seq++;
	zapped = npt_zap(vm, 0, ~0ull);
	spin_unlock(&vm->mmu_lock);
	npt_zapped(vm, zapped);
}

const struct mmu_notifier_ops dune_mmu_notifier_ops = {
	.invalidate_range_start = dune_mn_invalidate_range_start,
	.invalidate_range_end = dune_mn_invalidate_range_end,
	.release = dune_mn_release,
};
