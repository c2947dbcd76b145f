/* SPDX-License-Identifier: MIT */
/*
 * Canonical memory: one arena of private anonymous memory, reserved once
 * (MAP_NORESERVE, 1 GiB aligned so that its chunks are libdune's chunks),
 * carved into extents with a free list.  Freed and discarded extents are
 * given back with MADV_DONTNEED and read zero again.
 *
 * Guest-physical addresses: each 1 GiB chunk of the arena becomes a KVM
 * memslot when it is first touched (dune_init(0) registers nothing of it
 * eagerly, which keeps guest-physical space for what is used); the chunk's
 * base is learnt once and kept both ways, for alias PTEs and for
 * translating them back.
 */
#include <errno.h>
#include <string.h>
#include <sys/mman.h>

#include "kvm.h"

struct kvm_extent {
	uintptr_t off, len;
	struct kvm_extent *next;
};

static struct {
	char *base;
	size_t size;
	dl_lock_t lock;
	uintptr_t bump;                   /* offsets below are in use or free */
	struct kvm_extent *free_extents;  /* address-ordered, coalesced */
	/* per GiB of the arena: its guest-physical base + 1 (0: not known) */
	_Atomic uint64_t *chunk_pa;
	/* per GiB of guest-physical space: arena GiB index + 1 */
	_Atomic uint32_t *pa_chunk;
	size_t pa_chunks;
} canon;

static struct dl_pool kvm_extent_pool =
	DL_POOL(struct kvm_extent, "kvm extents");

/* Guest-physical addresses stay below 2^52 on x86-64. */
#define KVM_PA_BITS 52

int kvm_canon_init(void)
{
	size_t size = KVM_CANON_MAX;
	char *res = MAP_FAILED;
	/* A host in strict overcommit mode counts even MAP_NORESERVE: ask
	 * for less until it agrees. */
	for (; size >= KVM_CANON_MIN; size /= 2) {
		res = mmap(NULL, size + KVM_GIB, PROT_READ | PROT_WRITE,
			   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
		if (res != MAP_FAILED)
			break;
	}
	if (res == MAP_FAILED) {
		int err = errno;
		_dl_warn("kvm backend: cannot reserve canonical memory: %s",
			 strerror(err));
		return -err;
	}
	char *base = (char *)DL_ALIGN_UP((uintptr_t)res, KVM_GIB);
	if (base > res)
		munmap(res, (size_t)(base - res));
	munmap(base + size, (size_t)(res + size + KVM_GIB - (base + size)));
	/* 2 MiB host pages where the host has transparent huge pages: the
	 * guest maps the arena with 2 MiB pages too.  (Not MAP_HUGETLB: a
	 * reserved pool that runs dry would SIGBUS the program.) */
	madvise(base, size, MADV_HUGEPAGE);
	canon.pa_chunks = (size_t)1 << (KVM_PA_BITS - KVM_GIB_SHIFT);
	canon.chunk_pa = _dl_meta_pages((size >> KVM_GIB_SHIFT) *
					sizeof(*canon.chunk_pa));
	canon.pa_chunk = _dl_meta_pages(canon.pa_chunks *
					sizeof(*canon.pa_chunk));
	if (!canon.chunk_pa || !canon.pa_chunk) {
		munmap(base, size);
		_dl_warn("kvm backend: no memory for the canonical chunk map");
		return -ENOMEM;
	}
	canon.base = base;
	canon.size = size;
	/* Offset 0 stays unused: a zero offset never means "no extent". */
	canon.bump = DL_PAGE;
	return 0;
}

/* Gives the arena back when the backend could not start. */
void kvm_canon_fini(void)
{
	if (canon.base)
		munmap(canon.base, canon.size);
	canon.base = NULL;
}

uint64_t kvm_default_pa(uintptr_t va)
{
	uint64_t pa = dune_va_to_pa((const void *)va);
	if (pa != UINT64_MAX)
		return pa;
	/* Not registered with KVM yet: the first touch in the guest makes
	 * libdune register its 1 GiB chunk (a read: no page is written). */
	(void)*(volatile const char *)va;
	return dune_va_to_pa((const void *)va);
}

uint64_t kvm_canon_pa(uintptr_t c)
{
	uintptr_t off = c - (uintptr_t)canon.base;
	if (off >= canon.size)
		return UINT64_MAX;
	size_t chunk = off >> KVM_GIB_SHIFT;
	uint64_t known = atomic_load_explicit(&canon.chunk_pa[chunk],
					      memory_order_acquire);
	if (likely(known))
		return known - 1 + (off & (KVM_GIB - 1));
	uint64_t pa = kvm_default_pa(c);
	if (pa == UINT64_MAX)
		return pa;
	uint64_t base = pa - (off & (KVM_GIB - 1));
	if ((base >> KVM_PA_BITS) || (base & (KVM_GIB - 1)))
		return UINT64_MAX; /* not libdune's 1 GiB default mapping */
	atomic_store_explicit(&canon.pa_chunk[base >> KVM_GIB_SHIFT],
			      (uint32_t)chunk + 1, memory_order_release);
	atomic_store_explicit(&canon.chunk_pa[chunk], base + 1,
			      memory_order_release);
	return pa;
}

uintptr_t kvm_canon_of_pa(uint64_t pa)
{
	if (pa >> KVM_PA_BITS)
		return 0;
	uint32_t chunk = atomic_load_explicit(
		&canon.pa_chunk[pa >> KVM_GIB_SHIFT], memory_order_acquire);
	if (!chunk)
		return 0;
	return (uintptr_t)canon.base + ((uintptr_t)(chunk - 1) << KVM_GIB_SHIFT) +
	       (pa & (KVM_GIB - 1));
}

/* ---- extents ---- */

static uintptr_t kvm_take_extent(size_t len)
{
	struct kvm_extent **link = &canon.free_extents;
	for (struct kvm_extent *e = *link; e; link = &e->next, e = *link) {
		if (e->len < len)
			continue;
		uintptr_t off = e->off;
		e->off += len;
		e->len -= len;
		if (e->len == 0) {
			*link = e->next;
			_dl_pool_free(&kvm_extent_pool, e);
		}
		return off;
	}
	if (len > canon.size - canon.bump)
		return 0;
	uintptr_t off = canon.bump;
	canon.bump += len;
	return off;
}

static void kvm_give_extent(uintptr_t off, size_t len)
{
	struct kvm_extent **link = &canon.free_extents, *prev = NULL;
	while (*link && (*link)->off < off) {
		prev = *link;
		link = &(*link)->next;
	}
	struct kvm_extent *next = *link;
	if (prev && prev->off + prev->len == off) {
		prev->len += len;
		if (next && prev->off + prev->len == next->off) {
			prev->len += next->len;
			prev->next = next->next;
			_dl_pool_free(&kvm_extent_pool, next);
		}
		return;
	}
	if (next && off + len == next->off) {
		next->off = off;
		next->len += len;
		return;
	}
	struct kvm_extent *e = _dl_pool_alloc(&kvm_extent_pool);
	if (!e)
		return; /* the range stays unused: zero pages, no memory */
	*e = (struct kvm_extent){off, len, next};
	*link = e;
}

void *kvm_canon_alloc(size_t len)
{
	_dl_lock(&canon.lock);
	uintptr_t off = kvm_take_extent(len);
	_dl_unlock(&canon.lock);
	return off ? canon.base + off : NULL;
}

void kvm_canon_discard(void *c, size_t len)
{
	/* Private anonymous memory reads zero after this; KVM's MMU notifier
	 * drops the guest-physical translations of the old pages. */
	if (madvise(c, len, MADV_DONTNEED) == 0)
		DL_STAT_ADD(canonical_bytes_released, len);
}

void kvm_canon_free(void *c, size_t len)
{
	kvm_canon_discard(c, len);
	_dl_lock(&canon.lock);
	kvm_give_extent((uintptr_t)((char *)c - canon.base), len);
	_dl_unlock(&canon.lock);
}

void kvm_canon_lock(void)
{
	_dl_lock(&canon.lock);
}

void kvm_canon_unlock(bool reset)
{
	if (reset)
		_dl_lock_reset(&canon.lock);
	else
		_dl_unlock(&canon.lock);
}
