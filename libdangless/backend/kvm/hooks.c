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
 * The fix-ups themselves are fixup.c's (every call's arguments, from
 * libdune's generated table), with kvm_translate (pt.c) as the way from an
 * alias to its canonical bytes.
 */
#include <errno.h>
#include <linux/sched.h>
#include <sys/syscall.h>

#include "kvm.h"
#include "syscall_args.h"

/*
 * Fix-up state lives per vCPU, not per thread: a vfork child runs on a
 * vCPU of its own with its parent's TLS, and its execve must not use (or
 * be undone with) its parent's state.  libdune reuses the vCPUs of exited
 * threads, so the table stays as long as the vCPUs ever made, and each
 * slot's scratch is mapped once, by the first call that needs one.
 * libdune runs the post-hook before a signal handler and re-issues an
 * SA_RESTART call through the pre-hook again, so calls do not nest on a
 * vCPU and one state each is enough.
 */
struct kvm_fix_slot {
	_Atomic uintptr_t vcpu;       /* 0: free */
	struct dl_kvm_fixup fx;
};
static struct kvm_fix_slot kvm_fix_slots[KVM_MAX_VCPUS];
static __thread struct kvm_fix_slot *kvm_fix_cached
	__attribute__((tls_model("initial-exec")));

static struct dl_kvm_fixup *kvm_fixup_state(void)
{
	uintptr_t vcpu = kvm_cur_vcpu();
	struct kvm_fix_slot *s = kvm_fix_cached;
	if (likely(s && atomic_load_explicit(&s->vcpu, memory_order_relaxed) ==
				vcpu))
		return &s->fx;
	s = NULL;
	for (unsigned i = 0; i < KVM_MAX_VCPUS && !s; i++) {
		uintptr_t have = atomic_load(&kvm_fix_slots[i].vcpu);
		if (have == vcpu)
			s = &kvm_fix_slots[i];
		else if (!have && atomic_compare_exchange_strong(
					  &kvm_fix_slots[i].vcpu, &have, vcpu))
			s = &kvm_fix_slots[i];
	}
	if (!s)
		return NULL;
	if (!s->fx.scratch) {
		void *scratch = _dl_meta_pages(DL_KVM_FIXUP_SCRATCH_SIZE);
		if (!scratch)
			return NULL;
		dl_kvm_fixup_init(&s->fx, scratch, DL_KVM_FIXUP_SCRATCH_SIZE);
	}
	kvm_fix_cached = s;
	return &s->fx;
}

static bool kvm_fixup_pre(struct dune_tf *tf)
{
	struct dl_kvm_fixup *fx = kvm_fixup_state();
	if (unlikely(!fx)) {
		/* No state to undo with: only calls without pointers go. */
		const struct dune_sc_call *call =
			dune_sc_lookup((long)DUNE_SC_NR(tf));
		for (int i = 0; call && i < call->nargs; i++) {
			if (call->args[i].kind > DUNE_SC_SCALAR) {
				DUNE_SC_RET(tf) = (uint64_t)-ENOMEM;
				return false;
			}
		}
		return true;
	}
	return dl_kvm_fixup_pre(tf, fx, kvm_translate);
}

static void kvm_fixup_post(struct dune_tf *tf)
{
	struct dl_kvm_fixup *fx = kvm_fixup_state();
	if (fx)
		dl_kvm_fixup_post(tf, fx);
}

/* vfork, and clone(CLONE_VFORK) as posix_spawn makes it. */
static bool kvm_is_vfork(const struct dune_tf *tf)
{
	long nr = (long)DUNE_SC_NR(tf);
	return nr == SYS_vfork ||
	       (nr == SYS_clone && (DUNE_SC_ARG0(tf) & CLONE_VFORK));
}

DL_REALIGN_STACK static bool kvm_pre(struct dune_tf *tf)
{
	kvm_thread_register();
	if (!kvm_fixup_pre(tf))
		return false; /* answered here: the thread stays in the guest */
	long nr = (long)DUNE_SC_NR(tf);
	bool back_without_post_hook =
		kvm_is_vfork(tf) ||
		(nr == SYS_rt_sigreturn && kvm_shootdown_reaches_sigreturn());
	if (nr == SYS_exit)
		kvm_thread_exit();
	else if (!back_without_post_hook)
		kvm_thread_to_host();
	/* A vfork parent, and a signal handler's rt_sigreturn, come back
	 * without the post-hook (libdune sets the vCPU's registers: the saved
	 * context, the interrupted one): they stay marked running, so a
	 * shootdown meanwhile signals them and waits until they are back and
	 * have flushed.  Marked inside the host, the thread would run guest
	 * code that no shootdown reaches until its next system call.  Not on
	 * the IPI road over /dev/kvm (experimental): there an IPI sent to a
	 * vCPU coming back from rt_sigreturn hung it inside KVM in 3 of 8 runs
	 * in the QEMU rig (none in 8 without), so that road keeps the gap
	 * (README, Limits).  dune.ko holds such an IPI until the vCPU enters
	 * again and hands it over as a virtual interrupt: no gap there. */
	return true;
}

DL_REALIGN_STACK static void kvm_post(struct dune_tf *tf)
{
	kvm_thread_to_guest(); /* before anything reads guest memory */
	kvm_fixup_post(tf);
}

void kvm_hooks_install(void)
{
	dune_register_syscall_hooks(kvm_pre, kvm_post);
}
