/* SPDX-License-Identifier: MIT */
/*
 * The guest's page tables: a pool of page-table pages (one 1 GiB-aligned
 * region of process memory, so guest-physical = pool base + offset) and the
 * walk/map/unmap helpers.  Usable from the guest and from the host; built
 * with -mgeneral-regs-only because the guest's trap path calls into it.
 */
#include "internal.h"

#include <errno.h>

ptent_t *pgroot;

#define PT_INTERIOR (PTE_P | PTE_W | PTE_U)
#define L5(va) (((uint64_t)(va) >> 48) & 511)
#define L4(va) (((uint64_t)(va) >> 39) & 511)
#define L3(va) (((uint64_t)(va) >> 30) & 511)
#define L2(va) (((uint64_t)(va) >> 21) & 511)
#define L1(va) (((uint64_t)(va) >> 12) & 511)

static uint64_t pool_gpa(void)
{
	uint64_t g = dune_chunk_gpa[(uint64_t)dune_vm.pool >> DUNE_CHUNK_SHIFT];
	return g - 1;
}

ptent_t *dune_pool_alloc(void)
{
	uint64_t off = __atomic_fetch_add(&dune_vm.pool_used, DUNE_PGSIZE,
					  __ATOMIC_RELAXED);
	if (off + DUNE_PGSIZE > dune_vm.pool_size)
		return NULL;
	/* Pool pages are never freed, so a fresh one is still all zero. */
	return (ptent_t *)(dune_vm.pool + off);
}

uint64_t dune_pool_pa(const void *p)
{
	return pool_gpa() + ((const uint8_t *)p - dune_vm.pool);
}

void *dune_pool_va(uint64_t pa)
{
	uint64_t base = pool_gpa();
	if (pa < base || pa >= base + dune_vm.pool_size)
		return NULL;
	return dune_vm.pool + (pa - base);
}

/* Next-level table of an interior entry, or NULL. */
static ptent_t *next_table(ptent_t e)
{
	if (!(e & PTE_P) || (e & PTE_PS))
		return NULL;
	return dune_pool_va(PTE_ADDR(e));
}

/* Makes *slot point to a table: allocates one if empty (alloc), splits a
 * large leaf (split) into a table of the next size down. */
static ptent_t *descend(ptent_t *slot, int level, int alloc, int split)
{
	for (;;) {
		ptent_t e = __atomic_load_n(slot, __ATOMIC_ACQUIRE);
		if ((e & PTE_P) && !(e & PTE_PS))
			return dune_pool_va(PTE_ADDR(e));
		if (!(e & PTE_P) && !alloc)
			return NULL;
		if ((e & PTE_P) && !split)
			return NULL;
		ptent_t *t = dune_pool_alloc();
		if (!t)
			return NULL;
		if (e & PTE_P) {
			/* split a 1 GiB (level 3) or 2 MiB (level 2) leaf */
			uint64_t step = level == 3 ? (1ULL << 21) : (1ULL << 12);
			ptent_t flags = PTE_FLAGS(e) & ~PTE_PS;
			if (level == 3)
				flags |= PTE_PS;
			for (int i = 0; i < 512; i++)
				t[i] = (PTE_ADDR(e) + i * step) | flags;
		}
		ptent_t ne = dune_pool_pa(t) | PT_INTERIOR;
		if (__atomic_compare_exchange_n(slot, &e, ne, false,
						__ATOMIC_ACQ_REL,
						__ATOMIC_ACQUIRE))
			return t;
		/* lost a race: the page stays in the pool unused */
	}
}

ptent_t *dune_pgtable_top(void)
{
	return dune_vm.top ? dune_vm.top : pgroot;
}

/*
 * The PML4 that maps va under root: root itself, unless root is the PML5
 * of 5-level paging, whose entry 0 is pgroot (the process's lower half)
 * and whose upper half is the caller's.  NULL when there is none (and
 * alloc is 0).
 */
static ptent_t *pml4_of(ptent_t *root, uint64_t va, int alloc)
{
	if (!root || root != dune_vm.top || dune_vm.levels != 5)
		return root;
	return descend(&root[L5(va)], 5, alloc, 0);
}

static int walk(ptent_t *root, const void *va, int alloc, int split,
		ptent_t **pte_out)
{
	uint64_t a = (uint64_t)va;
	if (!(root = pml4_of(root, a, alloc)))
		return -ENOENT;
	ptent_t *pdpt = descend(&root[L4(a)], 4, alloc, split);
	if (!pdpt)
		return -ENOENT;
	ptent_t *pd = descend(&pdpt[L3(a)], 3, alloc, split);
	if (!pd)
		return -ENOENT;
	ptent_t *pt = descend(&pd[L2(a)], 2, alloc, split);
	if (!pt)
		return -ENOENT;
	*pte_out = &pt[L1(a)];
	return 0;
}

int dune_vm_lookup(ptent_t *root, const void *va, int create, ptent_t **pte_out)
{
	return walk(root, va, create, create, pte_out);
}

bool dune_chunk_in_pt(uint64_t va)
{
	ptent_t *r = pgroot;
	if (!r || !(r[L4(va)] & PTE_P))
		return false;
	ptent_t *pdpt = next_table(r[L4(va)]);
	return pdpt && (pdpt[L3(va)] & PTE_P);
}

uint64_t dune_va_to_pa(const void *va)
{
	uint64_t a = (uint64_t)va;
	ptent_t *t = pml4_of(dune_pgtable_top(), a, 0), e;
	if (!t)
		return (uint64_t)-1;
	e = t[L4(a)];
	if (!(t = next_table(e)))
		return (uint64_t)-1;
	e = t[L3(a)];
	if (!(e & PTE_P))
		return (uint64_t)-1;
	if (e & PTE_PS)
		return PTE_ADDR(e) + (a & ((1ULL << 30) - 1));
	t = next_table(e);
	e = t[L2(a)];
	if (!(e & PTE_P))
		return (uint64_t)-1;
	if (e & PTE_PS)
		return PTE_ADDR(e) + (a & ((1ULL << 21) - 1));
	t = next_table(e);
	e = t[L1(a)];
	if (!(e & PTE_P))
		return (uint64_t)-1;
	return PTE_ADDR(e) + (a & 0xfff);
}

void *dune_pa_to_va(uint64_t pa)
{
	/* the default mapping: find the chunk with this guest-physical base */
	uint64_t base = pa & ~(DUNE_CHUNK_SIZE - 1);
	for (uint64_t c = 0; c < DUNE_NCHUNKS; c++)
		if (dune_chunk_gpa[c] == base + 1)
			return (void *)((c << DUNE_CHUNK_SHIFT) + (pa - base));
	return NULL;
}

int dune_vm_map_phys(ptent_t *root, void *va, size_t len, uint64_t pa,
		     uint64_t perm)
{
	uint64_t a = (uint64_t)va;
	if ((a | pa | len) & 0xfff)
		return -EINVAL;
	for (uint64_t off = 0; off < len; off += DUNE_PGSIZE) {
		ptent_t *pte;
		int r = walk(root, (void *)(a + off), 1, 1, &pte);
		if (r)
			return r == -ENOENT ? -ENOMEM : r;
		__atomic_store_n(pte, (pa + off) | perm | PTE_P, __ATOMIC_RELEASE);
	}
	return 0;
}

int dune_vm_map_pages(ptent_t *root, void *va, size_t len, uint64_t perm)
{
	uint64_t a = (uint64_t)va;
	if ((a | len) & 0xfff)
		return -EINVAL;
	for (uint64_t off = 0; off < len; off += DUNE_PGSIZE) {
		uint64_t p = a + off, c = p >> DUNE_CHUNK_SHIFT;
		if (p >= DUNE_VA_LIMIT)
			return -EINVAL;
		if (!dune_chunk_gpa[c]) {
			int r = dune_in_guest() ? dune_guest_map_chunk(p)
						: dune_map_chunk(p | 1);
			if (r)
				return r;
		}
		uint64_t pa = dune_chunk_gpa[c] - 1 + (p & (DUNE_CHUNK_SIZE - 1));
		int r = dune_vm_map_phys(root, (void *)p, DUNE_PGSIZE, pa, perm);
		if (r)
			return r;
	}
	return 0;
}

int dune_vm_unmap(ptent_t *root, void *va, size_t len)
{
	uint64_t a = (uint64_t)va, end = a + len;
	if ((a | len) & 0xfff)
		return -EINVAL;
	if (!root)
		return -ENOENT;
	while (a < end) {
		ptent_t *pml4 = pml4_of(root, a, 0);
		if (!pml4) {
			a = (a | ((1ULL << 48) - 1)) + 1;
			continue;
		}
		/* whole aligned 1 GiB / 2 MiB blocks: clear the upper entry
		 * (nothing to split, no page tables to allocate) */
		ptent_t *pdpt = next_table(pml4[L4(a)]);
		if (!pdpt) {
			a = (a | ((1ULL << 39) - 1)) + 1;
			continue;
		}
		if (!(a & ((1ULL << 30) - 1)) && a + (1ULL << 30) <= end) {
			__atomic_store_n(&pdpt[L3(a)], 0, __ATOMIC_RELEASE);
			a += 1ULL << 30;
			continue;
		}
		ptent_t *pd = descend(&pdpt[L3(a)], 3, 0, 1);
		if (!pd) {
			a = (a | ((1ULL << 30) - 1)) + 1;
			continue;
		}
		if (!(a & ((1ULL << 21) - 1)) && a + (1ULL << 21) <= end) {
			__atomic_store_n(&pd[L2(a)], 0, __ATOMIC_RELEASE);
			a += 1ULL << 21;
			continue;
		}
		ptent_t *pt = descend(&pd[L2(a)], 2, 0, 1);
		if (pt)
			__atomic_store_n(&pt[L1(a)], 0, __ATOMIC_RELEASE);
		a += DUNE_PGSIZE;
	}
	return 0;
}

static int walk_level(ptent_t *t, int level, uint64_t base, uint64_t start,
		      uint64_t end, dune_page_walk_cb cb, void *arg)
{
	int shift = 12 + 9 * (level - 1);
	uint64_t span = 1ULL << shift;
	for (int i = 0; i < 512; i++) {
		uint64_t lo = base + i * span, hi = lo + span;
		/* the top table's upper half: sign-extended addresses */
		if (!base && i >= 256 && level >= 4 && t == dune_pgtable_top()) {
			lo = (uint64_t)((int64_t)(lo << (63 - shift - 8)) >>
					(63 - shift - 8));
			hi = lo + span;
		}
		if ((hi <= start && hi) || lo >= end) /* hi 0: the very top */
			continue;
		ptent_t e = t[i];
		if (!(e & PTE_P))
			continue;
		if (level == 1 || (e & PTE_PS)) {
			if (level >= 4)
				continue;
			int r = cb(arg, &t[i], (void *)lo, level - 1);
			if (r)
				return r;
			continue;
		}
		ptent_t *next = next_table(e);
		if (!next)
			continue;
		int r = walk_level(next, level - 1, lo, start, end, cb, arg);
		if (r)
			return r;
	}
	return 0;
}

int dune_vm_page_walk(ptent_t *root, void *start, void *end,
		      dune_page_walk_cb cb, void *arg)
{
	if (!root)
		return -ENOENT;
	int levels = root == dune_vm.top && dune_vm.levels == 5 ? 5 : 4;
	return walk_level(root, levels, 0, (uint64_t)start, (uint64_t)end, cb,
			  arg);
}

bool dune_in_guest(void)
{
	uint16_t cs;
	__asm__ volatile("mov %%cs, %0" : "=r"(cs));
	return (cs & 3) == 0;
}

void dune_flush_tlb_one(const void *va)
{
	if (dune_in_guest())
		__asm__ volatile("invlpg (%0)" : : "r"(va) : "memory");
}

void dune_flush_tlb(void)
{
	if (dune_in_guest()) {
		uint64_t cr3;
		__asm__ volatile("mov %%cr3, %0; mov %0, %%cr3"
				 : "=r"(cr3)
				 :
				 : "memory");
	}
}

/* Host side: installs the default 2 MiB mapping of one 1 GiB chunk unless
 * the guest's tables already have something there. */
int dune_install_chunk_mapping(uint64_t chunk, uint64_t gpa)
{
	uint64_t va = chunk << DUNE_CHUNK_SHIFT;
	ptent_t *pdpt = descend(&pgroot[L4(va)], 4, 1, 0);
	if (!pdpt)
		return -ENOMEM;
	if (pdpt[L3(va)] & PTE_P)
		return 0;
	ptent_t *pd = dune_pool_alloc();
	if (!pd)
		return -ENOMEM;
	for (int i = 0; i < 512; i++)
		pd[i] = (gpa + ((uint64_t)i << 21)) | PTE_P | PTE_W | PTE_U | PTE_PS;
	ptent_t zero = 0;
	__atomic_compare_exchange_n(&pdpt[L3(va)], &zero,
				    dune_pool_pa(pd) | PT_INTERIOR, false,
				    __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
	return 0;
}
