/* SPDX-License-Identifier: MIT */
/*
 * System-call pointer fix-ups for the kvm backend (issue 9, item 3).
 *
 * The host kernel cannot see the guest's page tables, so an alias address
 * in a system call would make it fail (EFAULT) or, worse, act on whatever
 * the host has there.  Before a guest call leaves for the host,
 * dl_kvm_fixup_pre() rewrites every argument that may point into alias
 * space, and every pointer nested in what they point to, to host
 * (canonical) addresses; dl_kvm_fixup_post() undoes what the program could
 * observe.  The decisions (bounce buffers, calls that keep pointers,
 * command-dependent arguments, limits) are written at the top of fixup.c.
 *
 * Use, from libdune's system-call hooks (guest ring 0):
 *
 *   struct dl_kvm_fixup *fx = <the vCPU's own>;
 *   dl_kvm_fixup_init(fx, scratch, scratch_len);   // once per vCPU
 *   pre:  return dl_kvm_fixup_pre(tf, &fx, translate);
 *   post: dl_kvm_fixup_post(tf, &fx);
 *
 * Both are async-signal-safe: no allocation, no lock, no system call; all
 * state is in *fx and its scratch area, so one fx per vCPU (and one more
 * for any hook that could run nested on the same vCPU) is enough.  Keep it
 * per vCPU rather than in __thread storage: a vfork child runs on its own
 * vCPU with its parent's TLS while the parent waits inside vfork.  The
 * post-hook must get the same frame as the pre-hook and the number in
 * DUNE_SC_NR_DONE (as libdune does); otherwise it does nothing.
 */
#ifndef DANGLESS_KVM_FIXUP_H
#define DANGLESS_KVM_FIXUP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dune.h"

/*
 * Host address for guest address va, and how many bytes from va on are
 * contiguous in host memory; false if va is in alias space but not mapped
 * (revoked).  Addresses outside alias space translate to themselves with
 * contig = SIZE_MAX (or large).
 */
typedef bool (*dl_kvm_translate_fn)(uintptr_t va, uintptr_t *host,
				    size_t *contig);

/* Scratch a thread should give dl_kvm_fixup_init: bounce buffers and the
 * copies of nested structs of one call come out of it.  Smaller works (down
 * to DL_KVM_FIXUP_SCRATCH_MIN) with more calls shortened or refused. */
#define DL_KVM_FIXUP_SCRATCH_SIZE (64u * 1024)
#define DL_KVM_FIXUP_SCRATCH_MIN (8u * 1024)

struct dl_kvm_fixup_action; /* a copy-back or patch for the post-hook */

/* Per-thread fix-up state: what the current call rewrote.  Treat as opaque. */
struct dl_kvm_fixup {
	/* set by dl_kvm_fixup_init */
	unsigned char *scratch;
	size_t scratch_size;
	/* kept across calls: the alternate signal stack the thread gave by
	 * its alias, so that sigaltstack's old value reads back as the alias */
	uintptr_t altstack_alias, altstack_host;
	/* the call in progress (pre to post) */
	size_t used;                 /* bytes of scratch taken */
	dl_kvm_translate_fn translate;
	const void *call;            /* const struct dune_sc_call * */
	uint64_t nr;
	uint64_t args[6];            /* as the program passed them */
	uint64_t new_args[6];        /* as the host gets them */
	const struct dune_tf *tf;    /* the frame pre rewrote */
	struct dl_kvm_fixup_action *first, *last;
	bool pending;                /* pre rewrote tf and post has not run */
};

void dl_kvm_fixup_init(struct dl_kvm_fixup *fx, void *scratch, size_t size);

/*
 * Rewrites every argument of the call in tf that may point into alias
 * space to host addresses, including nested pointers.  Returns true to make
 * the call; false to skip it with tf->rax already set to the result (e.g.
 * -EFAULT for a revoked alias, exactly as the kernel would for an unmapped
 * address).
 */
bool dl_kvm_fixup_pre(struct dune_tf *tf, struct dl_kvm_fixup *fx,
		      dl_kvm_translate_fn translate);

/*
 * After the call (also after a skipped one): copies bounce buffers back
 * (out/inout), restores the argument registers as the program passed them,
 * and rewrites results that hold addresses the program gave by their alias
 * (sigaltstack's old stack) and lengths the kernel updated in copied
 * structs (msghdr, mmsghdr).
 */
void dl_kvm_fixup_post(struct dune_tf *tf, struct dl_kvm_fixup *fx);

/* Counters over all threads since start (relaxed atomics). */
struct dl_kvm_fixup_stats {
	uint64_t calls_rewritten;  /* calls with at least one argument changed */
	uint64_t translated;       /* pointers passed by their host address */
	uint64_t bounced;          /* buffers copied through scratch */
	uint64_t bounced_bytes;
	uint64_t nested;           /* structs/arrays copied with inner pointers */
	uint64_t strings;          /* strings (paths, argv) translated or copied */
	uint64_t shortened;        /* read/write-like calls cut to a short count */
	uint64_t efault;           /* calls answered -EFAULT (revoked alias) */
	uint64_t refused;          /* calls answered another error (kept
	                              pointer, no scratch, unsupported) */
	uint64_t unknown_syscalls; /* numbers the table does not know */
	uint64_t unknown_commands; /* ioctl/fcntl/prctl/... commands with an
	                              alias argument, translated best effort */
	uint64_t vmrange_alias;    /* mmap-like ranges in alias space */
};
void dl_kvm_fixup_get_stats(struct dl_kvm_fixup_stats *st);

#endif
