/* SPDX-License-Identifier: MIT */
/*
 * Guest-side C: runs in guest ring 0 from the LSTAR stub and the IDT stubs.
 * Built with -mgeneral-regs-only: it must not touch the interrupted code's
 * vector registers (handlers and hooks are wrapped in xsave/xrstor).
 */
#include "internal.h"

/* The components the guest's XCR0 enables all fit the 8 KiB areas
 * (dune_vm.xcr0 excludes AMX). */
static inline void xsave_to(void *buf)
{
	uint64_t m = dune_vm.xcr0;
	__asm__ volatile("xsave64 (%0)"
			 :
			 : "r"(buf), "a"((uint32_t)m), "d"((uint32_t)(m >> 32))
			 : "memory");
}

static inline void xrstor_from(void *buf)
{
	uint64_t m = dune_vm.xcr0;
	__asm__ volatile("xrstor64 (%0)"
			 :
			 : "r"(buf), "a"((uint32_t)m), "d"((uint32_t)(m >> 32))
			 : "memory");
}

static inline uint64_t read_cr2(void)
{
	uint64_t v;
	__asm__ volatile("mov %%cr2, %0" : "=r"(v));
	return v;
}

/* Leaving libdune's guest code for the interrupted context: if the host saw
 * a signal while we were in here, let it deliver it now, on tf. */
static inline void kernel_exit(struct dune_vcpu *v, struct dune_tf *tf)
{
	if (v->in_kernel == 1 && v->sig_check) {
		v->sig_check = 0;
		v->tf = tf;
		dune_outb(DUNE_PORT_SIGNAL); /* does not come back if delivered */
	}
	v->in_kernel--;
}

/*
 * Leaves the guest for the host's side of a system call, with the call in
 * the registers as `syscall` has them: dune.ko then makes most calls in the
 * kernel without leaving at all (RCX = 1, the result in RAX).  Otherwise
 * (KVM, or a call libdune makes itself) the host wrote the result into tf.
 */
static inline void syscall_exit(struct dune_tf *tf)
{
	register uint64_t r10 __asm__("r10") = tf->r10;
	register uint64_t r8 __asm__("r8") = tf->r8;
	register uint64_t r9 __asm__("r9") = tf->r9;
	uint64_t rax = tf->rax, rdi = tf->rdi, rsi = tf->rsi, rdx = tf->rdx;
	uint64_t done = 0;
	__asm__ volatile("outb %%al, %[port]"
			 : "+a"(rax), "+c"(done), "+D"(rdi), "+S"(rsi), "+d"(rdx),
			   "+r"(r10), "+r"(r8), "+r"(r9)
			 : [port] "N"(DUNE_PORT_SYSCALL)
			 : "memory");
	if (done)
		tf->rax = rax;
}

static void guest_syscall(struct dune_vcpu *v, struct dune_tf *tf);

void dune_guest_syscall(struct dune_tf *tf)
{
	struct dune_vcpu *v = dune_cur_vcpu();
	v->in_kernel++;
	guest_syscall(v, tf);
	kernel_exit(v, tf);
}

static void guest_syscall(struct dune_vcpu *v, struct dune_tf *tf)
{
	dune_syscall_prehook pre = dune_prehook;
	dune_syscall_posthook post = dune_posthook;
	int hooks = (pre || post) && !v->in_hook;
	int skip = 0;

	if (hooks && pre) {
		v->in_hook = 1;
		xsave_to(v->fpu_sys);
		skip = !pre(tf);
		xrstor_from(v->fpu_sys);
		v->in_hook = 0;
	}
	tf->err = tf->rax; /* the number, for the post-hook */
	if (!skip) {
		v->tf = tf;
		syscall_exit(tf);
	}
	if (hooks && post) {
		v->in_hook = 1;
		xsave_to(v->fpu_sys);
		post(tf);
		xrstor_from(v->fpu_sys);
		v->in_hook = 0;
	}
}

int dune_guest_map_chunk(uint64_t va)
{
	struct dune_vcpu *v = dune_cur_vcpu();
	v->arg = va | 1; /* 1: map even if the host has nothing there yet */
	dune_outb(DUNE_PORT_CHUNK);
	return (int)v->ret;
}

static void guest_trap(struct dune_vcpu *v, struct dune_tf *tf);

void dune_guest_trap(struct dune_tf *tf)
{
	struct dune_vcpu *v = dune_cur_vcpu();
	v->in_kernel++;
	guest_trap(v, tf);
	kernel_exit(v, tf);
}

static void guest_trap(struct dune_vcpu *v, struct dune_tf *tf)
{
	uint64_t vec = tf->vector;

	if (vec == 14) {
		uint64_t cr2 = read_cr2();
		/* Nothing in the guest's tables for this 1 GiB yet: ask the host
		 * to register it if the host has memory there. */
		if (cr2 < DUNE_VA_LIMIT && !dune_chunk_in_pt(cr2)) {
			v->arg = cr2 & ~0xfffULL;
			dune_outb(DUNE_PORT_CHUNK);
			/* mapped now (by us, or by another vCPU meanwhile) */
			if (v->ret == 0 || dune_chunk_in_pt(cr2))
				return;
		}
		if (dune_pgflt_handler && !v->in_trap) {
			v->in_trap = 1;
			xsave_to(v->fpu_trap);
			dune_pgflt_handler(cr2, tf->err, tf);
			xrstor_from(v->fpu_trap);
			v->in_trap = 0;
			return;
		}
		v->arg = cr2;
	} else if (vec < 256 && dune_intr_handlers[vec] && !v->in_trap) {
		/* (an IPI never finds in_trap set: interrupt gates clear IF
		 * in libdune's handlers) */
		v->in_trap = 1;
		xsave_to(v->fpu_trap);
		dune_intr_handlers[vec](tf);
		xrstor_from(v->fpu_trap);
		v->in_trap = 0;
		if (dune_vm.ipi_eoi &&
		    __atomic_load_n(&dune_ipi_vectors[vec], __ATOMIC_ACQUIRE))
			dune_wrmsr(DUNE_MSR_X2APIC_EOI, 0);
		return;
	} else {
		v->arg = 0;
	}
	/* The host ends the process, or delivers a signal to the program's
	 * handler for it (and then does not come back here). */
	v->tf = tf;
	for (;;)
		dune_outb(DUNE_PORT_FATAL);
}
