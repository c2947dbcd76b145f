/* SPDX-License-Identifier: MIT */
/*
 * The `kvm` backend: the process runs in guest ring 0 under libdune
 * (libdune/dune.h) and Dangless writes its own page-table entries.
 *
 * Canonical memory is one arena of ordinary anonymous process memory,
 * reserved once before libdune starts (so it is registered with KVM chunk by
 * chunk, on first touch, and a forked child has its own copy for free).
 *
 * Alias space is the upper half of the guest's address space: slots
 * KVM_ALIAS_SLOT_FIRST..KVM_ALIAS_SLOT_END-1 of the top page table, which
 * is the PML4 with 4-level paging (0xffff8000_00000000 and up, 127.5 TiB)
 * and, where the CPU has LA57, the PML5 of 5-level paging, which the
 * backend asks libdune for (0xff000000_00000000 and up, 63.75 PiB; the
 * process's lower half, PML5 entry 0, is libdune's as before).  No host
 * mapping can reach it and libdune never maps it, so only our PTEs exist
 * there.  The tables below those top slots are ours,
 * from a pool of our own (pt.c) that gives pages back when a released range
 * empties them; libdune's pool never frees.
 *
 * A revoked PTE holds KVM_PTE_REVOKED (not present).  Other vCPUs are shot
 * down before free() returns (shootdown.c): threads running guest code get
 * a signal whose handler reloads CR3; threads inside a system call flush in
 * the post-hook before they run guest code again.
 *
 * Files: kvm.c (start, check, the table, stats), canon.c (canonical
 * arena), pt.c (page tables: map, revoke, release, translate),
 * shootdown.c (threads, TLB shootdown), hooks.c (system-call hooks).
 */
#ifndef DANGLESS_BACKEND_KVM_H
#define DANGLESS_BACKEND_KVM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../../backend.h"
#include "../../services.h"
#include "dune.h"
#include "fixup.h"

/* KVM's vCPU limit on 6.1: threads (shootdown.c) and fix-up state
 * (hooks.c) are kept per vCPU in tables this long. */
#define KVM_MAX_VCPUS 1024

/* Top-table slots of alias space.  Slot 511 (the top 512 GiB with 4
 * levels, 256 TiB with 5, where -errno values cast to pointers live) is
 * left out. */
#define KVM_ALIAS_SLOT_FIRST 256
#define KVM_ALIAS_SLOT_END 511
/*
 * The paging the guest runs with, set once in kvm_init (dune_init decided)
 * before anything is mapped, read everywhere after: a fork child keeps it.
 */
struct kvm_paging {
	unsigned levels;          /* 4 or 5 */
	unsigned addr_bits;       /* of a half: 47 or 56 */
	ptent_t *top;             /* what CR3 holds: PML4 or PML5 */
	uintptr_t alias_start, alias_end;
};
extern struct kvm_paging kvm_paging;
/* The address of a top-table slot: bits 39-47 (4 levels) or 48-56 (5),
 * sign-extended from the highest. */
static inline uintptr_t kvm_top_slot_base(unsigned slot, unsigned levels)
{
	unsigned shift = 12 + 9 * (levels - 1), unused = 64 - (shift + 9);
	return (uintptr_t)((int64_t)((uint64_t)slot << shift << unused) >>
			   unused);
}
#define KVM_ALIAS_START (kvm_paging.alias_start)
#define KVM_ALIAS_END (kvm_paging.alias_end)
/*
 * The first and last 2 MiB of alias space are never handed out, and no
 * more than 2 MiB around the canonical arena is ever mapped: p[-1] of the
 * first object would otherwise be a non-canonical address (a #GP with no
 * address to report) and the arena's neighbours the program's memory.
 */
#define KVM_GAP ((size_t)2 << 20)
static inline bool kvm_is_alias(uintptr_t va)
{
	return va >= KVM_ALIAS_START && va < KVM_ALIAS_END;
}

/* Not present, and recognisable in a dump: "dead" in the software bits. */
#define KVM_PTE_REVOKED 0x0dead00000000000ULL
/* An alias PTE: writable, not executable, A and D set so that the CPU
 * never writes the entry back. */
#define KVM_PTE_ALIAS (PTE_P | PTE_W | PTE_U | PTE_A | PTE_D | PTE_NX)

/* Past this many pages a revocation reloads CR3 instead of invlpg each. */
#define KVM_INVLPG_MAX 32

/* The canonical arena: up to this much, less if the host refuses. */
#define KVM_CANON_MAX ((size_t)1 << 40)
#define KVM_CANON_MIN ((size_t)4 << 30)
#define KVM_GIB_SHIFT 30
#define KVM_GIB ((size_t)1 << KVM_GIB_SHIFT)

/* canon.c */
int kvm_canon_init(void);
void kvm_canon_fini(void);
void kvm_canon_lock(void);
void kvm_canon_unlock(bool reset);
void *kvm_canon_alloc(size_t len, bool filled);
void kvm_canon_free(void *canon, size_t len);
void kvm_canon_discard(void *canon, size_t len);
/* Before alias_map: what of [canon, canon+len) was freed or discarded is
 * zeroed now. */
void kvm_canon_reuse(void *canon, size_t len);
void kvm_canon_fork_child(void);
/* Guest-physical address of a canonical address (its chunk is registered
 * with KVM first if it was not), or UINT64_MAX. */
uint64_t kvm_canon_pa(uintptr_t canon);
/* Guest-physical address of a process address under libdune's default
 * mapping, registering its 1 GiB chunk first if needed; UINT64_MAX if
 * the host has nothing there. */
uint64_t kvm_default_pa(uintptr_t va);
/* The canonical address of a guest-physical one, or 0 if it is not in the
 * arena. */
uintptr_t kvm_canon_of_pa(uint64_t pa);
bool kvm_canon_resident(uint64_t *bytes);
void kvm_canon_own(void (*fn)(uintptr_t start, size_t len, void *ctx),
		   void *ctx);

/* pt.c */
/* After dune_init: the paging libdune runs the guest with, and alias
 * space in it. */
void kvm_paging_init(void);
int kvm_pt_init(void);
void kvm_pt_fini(void);
/* In the guest: learns the pool's guest-physical address. */
int kvm_pt_start(void);
void kvm_pt_lock(void);
void kvm_pt_unlock(bool reset);
void *kvm_alias_reserve(size_t len, size_t align);
int kvm_alias_map(void *alias, void *canon, size_t len, size_t populate);
int kvm_alias_revoke(void *alias, size_t len);
int kvm_alias_revoke_many(const struct dl_range *ranges, unsigned n);
int kvm_alias_release(void *alias, size_t len);
int kvm_alias_reuse(void *alias, size_t len);
void kvm_pt_own(void (*fn)(uintptr_t start, size_t len, void *ctx), void *ctx);
bool kvm_pt_resident(uint64_t *bytes);
bool kvm_translate(uintptr_t va, uintptr_t *host, size_t *contig);

/* shootdown.c; over_dune: libdune runs on dune.ko, not KVM */
int kvm_shootdown_init(bool over_dune);
/* The calling thread, known to shootdowns from now on (idempotent). */
void kvm_thread_register(void);
/* Every other vCPU has dropped what it cached of cleared PTEs. */
void kvm_shootdown(void);
/* Shootdowns go by IPI (libdune has interrupts between vCPUs), not by
 * signal. */
bool kvm_shootdown_by_ipi(void);
/* A thread coming back from a signal handler (rt_sigreturn, without the
 * post-hook) stays marked running guest code, so that shootdowns reach it:
 * everywhere but on the IPI road over /dev/kvm (hooks.c says why). */
bool kvm_shootdown_reaches_sigreturn(void);
/* The calling thread leaves the guest for a system call / comes back. */
void kvm_thread_to_host(void);
void kvm_thread_to_guest(void);
void kvm_thread_exit(void);
void kvm_shootdown_fork_child(void);
/* CR3 reload / invlpg, counted. */
void kvm_flush_all(void);
void kvm_flush_page(uintptr_t va);

/* libdune's per-vCPU structure (GS:0 in the guest): a vfork child shares
 * its parent's TLS but not its vCPU. */
static inline uintptr_t kvm_cur_vcpu(void)
{
	uintptr_t v;
	__asm__ volatile("mov %%gs:0, %0" : "=r"(v));
	return v;
}

/* hooks.c */
void kvm_hooks_install(void);

#endif
