/* SPDX-License-Identifier: MIT */
/*
 * The guest's system-call hooks (libdune runs them in guest ring 0 around
 * every system call of the program):
 *  - the TLB shootdown's bookkeeping: a thread is marked inside the host
 *    while its call runs, and flushes on the way back if a revocation
 *    happened meanwhile (shootdown.c);
 *  - pointer fix-ups: the host kernel cannot see our PTEs, so an argument
 *    that points into alias space is rewritten to the canonical address
 *    before the call and restored after it.
 *
 * SEAM for the fix-up engine (issue 9 item 3, libdangless/backend/kvm/
 * fixup.c, written apart): kvm_fixup_pre/kvm_fixup_post below are a
 * TEMPORARY stand-in that handles read and write only.  At merge they are
 * replaced by dl_kvm_fixup_pre(tf, kvm_translate, ...) and
 * dl_kvm_fixup_post(tf, ...); kvm_translate (pt.c) is the
 * dl_kvm_translate_fn the engine is given.
 */
#include <errno.h>
#include <linux/sched.h>
#include <sys/syscall.h>

#include "kvm.h"

/* ---- TEMPORARY: read/write only, until fixup.c is merged ---- */
static __thread struct {
	bool active;
	uint64_t buf, count;
} kvm_fix_saved __attribute__((tls_model("initial-exec")));

static bool kvm_fixup_pre(struct dune_tf *tf)
{
	long nr = (long)DUNE_SC_NR(tf);
	if (nr != SYS_read && nr != SYS_write)
		return true;
	uintptr_t buf = DUNE_SC_ARG1(tf), host;
	size_t count = DUNE_SC_ARG2(tf), contig;
	if (!count || !kvm_is_alias(buf))
		return true;
	if (!kvm_translate(buf, &host, &contig)) {
		DUNE_SC_RET(tf) = (uint64_t)-EFAULT; /* as the host's guard */
		return false;
	}
	kvm_fix_saved.active = true;
	kvm_fix_saved.buf = DUNE_SC_ARG1(tf);
	kvm_fix_saved.count = DUNE_SC_ARG2(tf);
	DUNE_SC_ARG1(tf) = host;
	/* A buffer that runs into the next object: a short transfer, which
	 * read(2) and write(2) allow. */
	if (count > contig)
		DUNE_SC_ARG2(tf) = contig;
	return true;
}

static void kvm_fixup_post(struct dune_tf *tf)
{
	if (!kvm_fix_saved.active)
		return;
	kvm_fix_saved.active = false;
	DUNE_SC_ARG1(tf) = kvm_fix_saved.buf;
	DUNE_SC_ARG2(tf) = kvm_fix_saved.count;
}
/* ---- end of TEMPORARY ---- */

/* vfork, and clone(CLONE_VFORK) as posix_spawn makes it. */
static bool kvm_is_vfork(const struct dune_tf *tf)
{
	long nr = (long)DUNE_SC_NR(tf);
	return nr == SYS_vfork ||
	       (nr == SYS_clone && (DUNE_SC_ARG0(tf) & CLONE_VFORK));
}

static bool kvm_pre(struct dune_tf *tf)
{
	kvm_thread_register();
	if (!kvm_fixup_pre(tf))
		return false; /* answered here: the thread stays in the guest */
	if (DUNE_SC_NR(tf) == SYS_exit)
		kvm_thread_exit();
	else if (!kvm_is_vfork(tf))
		kvm_thread_to_host();
	/* A vfork parent comes back without the post-hook (libdune resumes
	 * it from a saved context): it stays marked running, so a shootdown
	 * meanwhile signals it and waits until it is back and has flushed. */
	return true;
}

static void kvm_post(struct dune_tf *tf)
{
	kvm_thread_to_guest(); /* before anything reads guest memory */
	kvm_fixup_post(tf);
}

void kvm_hooks_install(void)
{
	dune_register_syscall_hooks(kvm_pre, kvm_post);
}
