/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * dune_svm_enter(gprs, guest_vmcb_pa, host_save_pa): one VMRUN.
 *
 * Called with interrupts disabled and GIF clear.  VMRUN itself saves and
 * restores only part of the host's state (RSP, RIP, RFLAGS, CRs, EFER,
 * GDTR/IDTR and RAX); the rest is swapped here: FS/GS/TR/LDTR and the
 * syscall MSRs by VMSAVE/VMLOAD through a per-CPU host page, the
 * general-purpose registers through `gprs` (struct dune_guest_gprs) and the
 * stack.  Interrupts are enabled across VMRUN (GIF is still clear, so none
 * is taken before the guest runs) so that a host interrupt ends the guest's
 * run with an INTR exit; they are disabled again before GIF is set.
 *
 * The guest is the process's own code, but at ring 0 and entering the host
 * kernel by #VMEXIT, not through the kernel's entry code, so the kernel's
 * speculation mitigations for that entry are made here, each patched in at
 * load time only where the kernel turned it on (as KVM's are): CPU buffers
 * cleared before VMRUN (MDS/TSA), and after the exit, before any RET and
 * before interrupts (GIF) come back, the return stack buffer overwritten
 * (the guest's calls must not steer the host's returns) and the return
 * predictor untrained (retbleed/SRSO).
 */
#include <linux/linkage.h>
#include <asm/nospec-branch.h>

#define G_RBX 0
#define G_RCX 8
#define G_RDX 16
#define G_RSI 24
#define G_RDI 32
#define G_RBP 40
#define G_R8  48
#define G_R9  56
#define G_R10 64
#define G_R11 72
#define G_R12 80
#define G_R13 88
#define G_R14 96
#define G_R15 104

	.text
SYM_FUNC_START(dune_svm_enter)
	push %rbp
	mov %rsp, %rbp
	push %r15
	push %r14
	push %r13
	push %r12
	push %rbx
	push %rdi		/* gprs */
	push %rdx		/* host save page */
	push %rsi		/* guest VMCB */

	mov %rdx, %rax
	vmsave %rax

	mov %rsi, %rax
	mov G_RBX(%rdi), %rbx
	mov G_RCX(%rdi), %rcx
	mov G_RDX(%rdi), %rdx
	mov G_RSI(%rdi), %rsi
	mov G_RBP(%rdi), %rbp
	mov G_R8(%rdi), %r8
	mov G_R9(%rdi), %r9
	mov G_R10(%rdi), %r10
	mov G_R11(%rdi), %r11
	mov G_R12(%rdi), %r12
	mov G_R13(%rdi), %r13
	mov G_R14(%rdi), %r14
	mov G_R15(%rdi), %r15
	mov G_RDI(%rdi), %rdi

	vmload %rax
#ifdef VM_CLEAR_CPU_BUFFERS
	VM_CLEAR_CPU_BUFFERS
#endif
	sti
	vmrun %rax
	cli
	/* RAX is the host's again (the guest VMCB's address), RSP too. */
	vmsave %rax
	/* The host's GS base back before anything below reaches per-CPU
	 * data (newer kernels' mitigation macros do). */
	mov 8(%rsp), %rax	/* host save page */
	vmload %rax
	FILL_RETURN_BUFFER %rax, RSB_CLEAR_LOOPS, X86_FEATURE_RSB_VMEXIT

	push %rdi
	mov 24(%rsp), %rdi
	mov %rbx, G_RBX(%rdi)
	mov %rcx, G_RCX(%rdi)
	mov %rdx, G_RDX(%rdi)
	mov %rsi, G_RSI(%rdi)
	mov %rbp, G_RBP(%rdi)
	mov %r8, G_R8(%rdi)
	mov %r9, G_R9(%rdi)
	mov %r10, G_R10(%rdi)
	mov %r11, G_R11(%rdi)
	mov %r12, G_R12(%rdi)
	mov %r13, G_R13(%rdi)
	mov %r14, G_R14(%rdi)
	mov %r15, G_R15(%rdi)
	popq G_RDI(%rdi)

#ifdef UNTRAIN_RET_VM
	UNTRAIN_RET_VM		/* may clobber RAX, RCX, RDX */
#else
	UNTRAIN_RET
#endif

	/* No guest value stays in a register the C caller may read. */
	xor %ecx, %ecx
	xor %edx, %edx
	xor %esi, %esi
	xor %edi, %edi
	xor %r8d, %r8d
	xor %r9d, %r9d
	xor %r10d, %r10d
	xor %r11d, %r11d

	xor %eax, %eax
	add $24, %rsp		/* guest VMCB, host save page, gprs */
	pop %rbx
	pop %r12
	pop %r13
	pop %r14
	pop %r15
	pop %rbp
	RET
SYM_FUNC_END(dune_svm_enter)
