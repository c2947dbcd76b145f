/* SPDX-License-Identifier: MIT */
/*
 * TLB shootdown.  Before free() returns every other vCPU must have dropped
 * what it cached of the cleared PTEs, by one of two roads:
 *
 *  - a thread inside a system call (its host side runs; its vCPU runs no
 *    guest code) flushes in the post-hook, before any guest code runs
 *    again: kvm_thread_to_guest() marks it running, then compares the
 *    flush generation with the one it has seen and reloads CR3 if behind;
 *  - a thread running guest code is interrupted: by KVM_SHOOTDOWN_SIGNAL,
 *    which takes the thread out to the host and libdune delivers into the
 *    guest; or, where libdune gives the vCPUs interrupts between them
 *    (over dune.ko by default; over /dev/kvm with DUNE_IPI=1,
 *    experimental), by an inter-processor interrupt,
 *    KVM_SHOOTDOWN_VECTOR, which KVM or dune.ko delivers without leaving
 *    the kernel.
 *    Either handler
 *    reloads CR3 and records the generation, and the freeing thread waits
 *    for that.
 *
 * The freeing thread bumps the generation after clearing its PTEs and then
 * reads each thread's state; a thread stores its state before it reads the
 * generation (both sequentially consistent), so either the freeing thread
 * sees it running (and signals it) or it sees the new generation (and
 * flushes).  Threads are known from their first system call on (glibc's
 * new threads make several before running the program's code); an exiting
 * thread flushes and leaves the table, so a vCPU kept for a later thread
 * holds nothing stale.
 */
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "kvm.h"

/* The second-highest real-time signal: glibc uses the lowest ones, and
 * programs that pick a real-time signal mostly count up from SIGRTMIN.
 * Taken only where there are no interrupts between vCPUs. */
#define KVM_SHOOTDOWN_SIGNAL (SIGRTMAX - 1)
/* Linux's own TLB-flush vector is in this range too; any of 32-254 would
 * do, since nothing else interrupts libdune's vCPUs. */
#define KVM_SHOOTDOWN_VECTOR 0xf2

enum { KVM_T_FREE, KVM_T_GUEST, KVM_T_HOST };

struct kvm_thread {
	_Atomic int state;
	_Atomic uint64_t seen;   /* flush generation this vCPU has flushed to */
	_Atomic uint64_t kicked; /* generation of the last signal sent to it */
	pid_t tid;
	uint32_t apic_id;        /* of its vCPU */
	uintptr_t vcpu;          /* libdune's per-vCPU pointer (GS base) */
};

/* glibc's own sigaction (the library's sigaction is the interposed one,
 * for SIGSEGV/SIGBUS): it sets the restorer libdune's signal frames
 * return through. */
extern int __sigaction(int, const struct sigaction *, struct sigaction *);

static struct kvm_thread kvm_threads[KVM_MAX_VCPUS];
static _Atomic unsigned kvm_nthreads; /* slots ever used */
static _Atomic uint64_t kvm_gen;
static bool kvm_by_ipi; /* else by signal */
static bool kvm_ipi_after_sigreturn; /* see kvm_shootdown_reaches_sigreturn */
static __thread struct kvm_thread *kvm_self
	__attribute__((tls_model("initial-exec")));

void kvm_flush_all(void)
{
	uint64_t cr3;
	__asm__ volatile("mov %%cr3, %0; mov %0, %%cr3" : "=r"(cr3) : : "memory");
	DL_STAT_ADD(tlb_flushes, 1);
}

void kvm_flush_page(uintptr_t va)
{
	__asm__ volatile("invlpg (%0)" : : "r"(va) : "memory");
	DL_STAT_ADD(tlb_invlpgs, 1);
}

/* Ours for this thread when it belongs to this vCPU (not a vfork child
 * running on its parent's TLS). */
static inline struct kvm_thread *kvm_mine(void)
{
	struct kvm_thread *t = kvm_self;
	return t && t->vcpu == kvm_cur_vcpu() ? t : NULL;
}

/*
 * t->seen only grows.  The shootdown's handler may run between the
 * thread's read of the generation and its store (a signal in kvm_shootdown,
 * where it reaches guest code at any instruction outside libdune's own; an
 * IPI anywhere, kvm_thread_to_guest included) and record a later
 * generation: a plain store afterwards would take that back, and the
 * freeing thread, which sent its one signal or interrupt already, would
 * wait for a flush that had happened.
 */
static void kvm_seen_advance(struct kvm_thread *t, uint64_t g)
{
	uint64_t cur = atomic_load(&t->seen);
	while (cur < g && !atomic_compare_exchange_weak(&t->seen, &cur, g))
		;
}

void kvm_thread_register(void)
{
	if (kvm_self)
		return;
	struct kvm_thread *t = NULL;
	unsigned n = atomic_load(&kvm_nthreads);
	for (unsigned i = 0; i < n && !t; i++) {
		int expect = KVM_T_FREE;
		if (atomic_compare_exchange_strong(&kvm_threads[i].state,
						   &expect, KVM_T_GUEST))
			t = &kvm_threads[i];
	}
	while (!t) {
		unsigned i = atomic_load(&kvm_nthreads);
		if (i >= KVM_MAX_VCPUS)
			return; /* more threads than KVM has vCPUs */
		int expect = KVM_T_FREE;
		if (atomic_compare_exchange_strong(&kvm_threads[i].state,
						   &expect, KVM_T_GUEST))
			t = &kvm_threads[i];
		unsigned want = i;
		atomic_compare_exchange_strong(&kvm_nthreads, &want, i + 1);
	}
	t->tid = (pid_t)syscall(SYS_gettid);
	t->apic_id = dune_vcpu_apic_id();
	t->vcpu = kvm_cur_vcpu();
	/* A new thread may sit on the vCPU of an exited one, or have run a
	 * little before its first system call: flush once. */
	atomic_store(&t->seen, 0);
	atomic_store(&t->kicked, 0);
	kvm_self = t;
}

void kvm_thread_to_host(void)
{
	struct kvm_thread *t = kvm_mine();
	if (t)
		atomic_store(&t->state, KVM_T_HOST);
}

void kvm_thread_to_guest(void)
{
	struct kvm_thread *t = kvm_mine();
	if (!t)
		return;
	atomic_store(&t->state, KVM_T_GUEST);
	uint64_t g = atomic_load(&kvm_gen);
	if (atomic_load_explicit(&t->seen, memory_order_relaxed) < g) {
		kvm_flush_all();
		kvm_seen_advance(t, g);
	}
}

void kvm_thread_exit(void)
{
	struct kvm_thread *t = kvm_mine();
	if (!t)
		return;
	kvm_flush_all();
	kvm_self = NULL;
	atomic_store(&t->state, KVM_T_FREE);
}

static void kvm_shootdown_flush(void)
{
	struct kvm_thread *t = kvm_mine();
	uint64_t g = atomic_load(&kvm_gen);
	kvm_flush_all();
	if (t)
		kvm_seen_advance(t, g);
}

DL_REALIGN_STACK static void kvm_shootdown_handler(int sig)
{
	(void)sig;
	kvm_shootdown_flush();
}

/* In guest ring 0 on libdune's exception stack, interrupts off; libdune
 * acknowledges the interrupt after it. */
static void kvm_shootdown_interrupt(struct dune_tf *tf)
{
	(void)tf;
	kvm_shootdown_flush();
}

/*
 * Interrupts t unless an interrupt it has not yet answered is on its way
 * (its handler flushes everything up to the generation it reads then: one
 * outstanding per thread is enough; real-time signals would otherwise
 * queue up, one handler each, and each IPI is a WRMSR that KVM handles).
 */
static bool kvm_kick(struct kvm_thread *t, pid_t pid)
{
	uint64_t kicked = atomic_load(&t->kicked);
	if (kicked > atomic_load(&t->seen))
		return false;
	if (!atomic_compare_exchange_strong(&t->kicked, &kicked,
					    atomic_load(&kvm_gen)))
		return false;
	if (kvm_by_ipi) {
		dune_send_ipi(t->apic_id, KVM_SHOOTDOWN_VECTOR);
		DL_STAT_ADD(shootdown_ipis, 1);
		return true;
	}
	static _Atomic bool said;
	if (!atomic_exchange(&said, true))
		_dl_info("kvm backend: no interrupts between vCPUs (over "
			 "/dev/kvm without DUNE_IPI=1, or DUNE_IPI=0): TLB "
			 "shootdowns signal each thread "
			 "running guest code (signal %d is Dangless's)",
			 KVM_SHOOTDOWN_SIGNAL);
	if (syscall(SYS_tgkill, pid, t->tid, KVM_SHOOTDOWN_SIGNAL) != 0)
		return false;
	DL_STAT_ADD(shootdown_signals, 1);
	return true;
}

void kvm_shootdown(void)
{
	uint64_t g = atomic_fetch_add(&kvm_gen, 1) + 1;
	struct kvm_thread *me = kvm_mine();
	if (me)
		kvm_seen_advance(me, g); /* the caller flushed already */
	unsigned n = atomic_load(&kvm_nthreads);
	if (n <= 1)
		return;
	pid_t pid = 0;
	bool counted = false;
	/* Until each other thread has flushed, entered a system call or
	 * exited: signal those that run guest code. */
	for (unsigned i = 0; i < n; i++) {
		struct kvm_thread *t = &kvm_threads[i];
		for (unsigned spins = 0;
		     t != me && atomic_load(&t->state) == KVM_T_GUEST &&
		     atomic_load(&t->seen) < g;
		     spins++) {
			if (!pid && !kvm_by_ipi)
				pid = getpid();
			if (kvm_kick(t, pid) && !counted) {
				DL_STAT_ADD(shootdowns, 1);
				counted = true;
			}
			if (spins < 64)
				__builtin_ia32_pause();
			else
				sched_yield();
		}
	}
}

bool kvm_shootdown_by_ipi(void)
{
	return kvm_by_ipi;
}

bool kvm_shootdown_reaches_sigreturn(void)
{
	return !kvm_by_ipi || kvm_ipi_after_sigreturn;
}

int kvm_shootdown_init(bool over_dune)
{
	if (dune_register_ipi_handler(KVM_SHOOTDOWN_VECTOR,
				      kvm_shootdown_interrupt) == 0) {
		/* the program keeps KVM_SHOOTDOWN_SIGNAL */
		kvm_by_ipi = true;
		kvm_ipi_after_sigreturn = over_dune;
		kvm_thread_register();
		return 0;
	}
	struct sigaction act = {.sa_handler = kvm_shootdown_handler,
				.sa_flags = SA_RESTART};
	sigemptyset(&act.sa_mask);
	if (__sigaction(KVM_SHOOTDOWN_SIGNAL, &act, NULL) != 0) {
		int err = errno;
		_dl_warn("kvm backend: cannot install the TLB shootdown "
			 "handler (signal %d): %s",
			 KVM_SHOOTDOWN_SIGNAL, _dl_strerror(err));
		return -err;
	}
	kvm_thread_register();
	return 0;
}

/* The child of fork() is this thread alone, on a fresh VM. */
void kvm_shootdown_fork_child(void)
{
	struct kvm_thread *me = kvm_self;
	unsigned n = atomic_load(&kvm_nthreads);
	for (unsigned i = 0; i < n; i++)
		if (&kvm_threads[i] != me)
			atomic_store(&kvm_threads[i].state, KVM_T_FREE);
	if (me) {
		me->tid = (pid_t)syscall(SYS_gettid);
		me->apic_id = dune_vcpu_apic_id();
		me->vcpu = kvm_cur_vcpu();
		atomic_store(&me->state, KVM_T_GUEST);
	}
}
