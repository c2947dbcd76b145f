/* SPDX-License-Identifier: MIT */
/*
 * libdune's low-level entry points.
 *
 * struct dune_tf layout (dune.h): rax rbx rcx rdx rsi rdi rbp r8 r9 r10 r11
 * r12 r13 r14 r15 vector err rip cs rflags rsp ss, 8 bytes each.
 */
#define TF_RAX 0
#define TF_RBX 8
#define TF_RCX 16
#define TF_RDX 24
#define TF_RSI 32
#define TF_RDI 40
#define TF_RBP 48
#define TF_R8 56
#define TF_R9 64
#define TF_R10 72
#define TF_R11 80
#define TF_R12 88
#define TF_R13 96
#define TF_R14 104
#define TF_R15 112
#define TF_VEC 120
#define TF_ERR 128
#define TF_RIP 136
#define TF_CS 144
#define TF_RFLAGS 152
#define TF_RSP 160
#define TF_SS 168

#define GDT_KCODE 0x08
#define GDT_KDATA 0x10
#define DUNE_SYSCALL_VECTOR 0x100

.macro SAVE_GPRS
	movq %rax, TF_RAX(%rsp)
	movq %rbx, TF_RBX(%rsp)
	movq %rcx, TF_RCX(%rsp)
	movq %rdx, TF_RDX(%rsp)
	movq %rsi, TF_RSI(%rsp)
	movq %rdi, TF_RDI(%rsp)
	movq %rbp, TF_RBP(%rsp)
	movq %r8, TF_R8(%rsp)
	movq %r9, TF_R9(%rsp)
	movq %r10, TF_R10(%rsp)
	movq %r11, TF_R11(%rsp)
	movq %r12, TF_R12(%rsp)
	movq %r13, TF_R13(%rsp)
	movq %r14, TF_R14(%rsp)
	movq %r15, TF_R15(%rsp)
.endm

	.text

/*
 * The guest's LSTAR: `syscall` at CPL0 lands here with the user's stack
 * (no stack switch), rcx = return address, r11 = rflags.  Build a dune_tf
 * below the red zone, let dune_guest_syscall() run the hooks and leave the
 * guest with an `out`, then return like the kernel would (rcx and r11
 * clobbered with the return address and flags).
 */
	.globl dune_entry_text_start
	.hidden dune_entry_text_start
dune_entry_text_start:
	.globl dune_syscall_entry
	.hidden dune_syscall_entry
	.type dune_syscall_entry, @function
	.align 16
dune_syscall_entry:
	leaq -128(%rsp), %rsp		/* skip the red zone */
	pushq $GDT_KDATA		/* ss */
	pushq %rsp			/* rsp: value before this push */
	addq $136, (%rsp)		/* ... + 8 + 128 = the user's rsp */
	pushq %r11			/* rflags */
	pushq $GDT_KCODE		/* cs */
	pushq %rcx			/* rip */
	pushq $0			/* err */
	pushq $DUNE_SYSCALL_VECTOR	/* vector */
	subq $120, %rsp
	SAVE_GPRS
	movq %rsp, %rbx
	andq $-16, %rsp
	cld
	movq %rbx, %rdi
	call dune_guest_syscall
	/* The host may stop us anywhere below with a signal to deliver: the
	 * labels tell it where the frame is (signal.c, tail_frame()). */
	.globl dune_sc_ret, dune_sc_tail, dune_sc_popf, dune_sc_tail2, dune_sc_jmp
	.hidden dune_sc_ret, dune_sc_tail, dune_sc_popf, dune_sc_tail2, dune_sc_jmp
dune_sc_ret:				/* frame = rbx */
	movq %rbx, %rsp
dune_sc_tail:				/* frame = rsp */
	movq TF_RAX(%rsp), %rax
	movq TF_RDX(%rsp), %rdx
	movq TF_RSI(%rsp), %rsi
	movq TF_RDI(%rsp), %rdi
	movq TF_RBP(%rsp), %rbp
	movq TF_R8(%rsp), %r8
	movq TF_R9(%rsp), %r9
	movq TF_R10(%rsp), %r10
	movq TF_R12(%rsp), %r12
	movq TF_R13(%rsp), %r13
	movq TF_R14(%rsp), %r14
	movq TF_R15(%rsp), %r15
	movq TF_RBX(%rsp), %rbx
	pushq TF_RFLAGS(%rsp)
dune_sc_popf:				/* frame = rsp + 8 */
	popfq
dune_sc_tail2:				/* frame = rsp */
	movq TF_RIP(%rsp), %rcx
	movq TF_RFLAGS(%rsp), %r11
	movq TF_RSP(%rsp), %rsp
dune_sc_jmp:				/* back in the program's context */
	jmp *%rcx
	.size dune_syscall_entry, . - dune_syscall_entry

/*
 * Exception and interrupt stubs, one per vector, all on IST stacks (ring 0
 * to ring 0 would otherwise push onto the user's stack, over its red zone).
 * Vectors with a CPU error code: 8 10 11 12 13 14 17 21 29 30.
 */
	.align 16
dune_trap_common:
	subq $120, %rsp
	SAVE_GPRS
	cld
	movq %rsp, %rdi
	call dune_guest_trap
	.globl dune_trap_ret, dune_trap_iret
	.hidden dune_trap_ret, dune_trap_iret
dune_trap_ret:				/* frame = rsp */
	movq TF_RAX(%rsp), %rax
	movq TF_RBX(%rsp), %rbx
	movq TF_RCX(%rsp), %rcx
	movq TF_RDX(%rsp), %rdx
	movq TF_RSI(%rsp), %rsi
	movq TF_RDI(%rsp), %rdi
	movq TF_RBP(%rsp), %rbp
	movq TF_R8(%rsp), %r8
	movq TF_R9(%rsp), %r9
	movq TF_R10(%rsp), %r10
	movq TF_R11(%rsp), %r11
	movq TF_R12(%rsp), %r12
	movq TF_R13(%rsp), %r13
	movq TF_R14(%rsp), %r14
	movq TF_R15(%rsp), %r15
	addq $136, %rsp
dune_trap_iret:				/* the CPU's frame at rsp */
	iretq

	.section .data.rel.ro, "aw"
	.align 8
	.globl dune_trap_stubs
	.hidden dune_trap_stubs
dune_trap_stubs:
	.text

.set vec, 0
.rept 256
	.align 16
1:
	.if vec < 32
	.if ((0x60227D00 >> vec) & 1) == 0
	pushq $0
	.endif
	.else
	pushq $0
	.endif
	pushq $vec
	jmp dune_trap_common
	.pushsection .data.rel.ro, "aw"
	.quad 1b
	.popsection
.set vec, vec + 1
.endr
	.globl dune_entry_text_end
	.hidden dune_entry_text_end
dune_entry_text_end:

/* Restorer for libdune's own host signal handler. */
	.globl dune_host_restorer
	.hidden dune_host_restorer
	.type dune_host_restorer, @function
	.align 16
dune_host_restorer:
	movl $15, %eax			/* SYS_rt_sigreturn */
	syscall
	ud2
	.size dune_host_restorer, . - dune_host_restorer

/*
 * int dune_enter(void): saves what the guest must continue with and calls
 * dune_enter_c(), which returns only on failure (or when already entered);
 * on success the guest resumes at our return address with rax = 0.
 */
	.globl dune_enter
	.type dune_enter, @function
	.align 16
dune_enter:
	subq $72, %rsp
	movq %rbx, 0(%rsp)
	movq %rbp, 8(%rsp)
	movq %r12, 16(%rsp)
	movq %r13, 24(%rsp)
	movq %r14, 32(%rsp)
	movq %r15, 40(%rsp)
	leaq 80(%rsp), %rax		/* rsp after our ret */
	movq %rax, 48(%rsp)
	movq 72(%rsp), %rax		/* return address */
	movq %rax, 56(%rsp)
	pushfq
	popq %rax
	movq %rax, 64(%rsp)
	movq %rsp, %rdi
	call dune_enter_c
	addq $72, %rsp
	ret
	.size dune_enter, . - dune_enter

/* void dune_run_on_stack(void *stack_top, void (*fn)(void *), void *arg) */
	.globl dune_run_on_stack
	.hidden dune_run_on_stack
	.type dune_run_on_stack, @function
dune_run_on_stack:
	movq %rdi, %rsp
	andq $-16, %rsp
	xorl %ebp, %ebp
	movq %rdx, %rdi
	call *%rsi
	ud2
	.size dune_run_on_stack, . - dune_run_on_stack

/*
 * long dune_clone_thread(flags, host_stack_top, ptid, ctid, tls, fn, arg):
 * raw clone(2) whose child calls fn(arg) on host_stack_top.
 */
	.globl dune_clone_thread
	.hidden dune_clone_thread
	.type dune_clone_thread, @function
dune_clone_thread:
	movq 8(%rsp), %rax		/* arg */
	andq $-16, %rsi
	subq $16, %rsi
	movq %r9, 0(%rsi)		/* fn */
	movq %rax, 8(%rsi)		/* arg */
	movq %rcx, %r10
	movl $56, %eax			/* SYS_clone */
	syscall
	testq %rax, %rax
	jnz 1f
	xorl %ebp, %ebp
	popq %rax
	popq %rdi
	call *%rax
	ud2
1:	ret
	.size dune_clone_thread, . - dune_clone_thread

/* void dune_unmap_and_exit(void *addr, size_t len, int code): munmap the
 * stack we run on, then exit this thread, touching no memory between. */
	.globl dune_unmap_and_exit
	.hidden dune_unmap_and_exit
	.type dune_unmap_and_exit, @function
dune_unmap_and_exit:
	movq %rdx, %r12
	movl $11, %eax			/* SYS_munmap */
	syscall
	movq %r12, %rdi
	movl $60, %eax			/* SYS_exit */
	syscall
	ud2
	.size dune_unmap_and_exit, . - dune_unmap_and_exit

/* Speed probe run by dune_init() in a throw-away child: 200000 iterations
 * of a two-instruction loop, then leave through an `out`. */
	.globl dune_probe_code
	.hidden dune_probe_code
	.globl dune_probe_code_end
	.hidden dune_probe_code_end
	.align 16
dune_probe_code:
	movl $200000, %ecx
2:	decl %ecx
	jnz 2b
	movw $0xd3, %dx
	outb %al, %dx
	hlt
	jmp dune_probe_code
dune_probe_code_end:

	.section .note.GNU-stack, "", @progbits
