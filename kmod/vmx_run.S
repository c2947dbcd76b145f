/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * dune_vmx_enter(gprs, resume, spec_ctrl, restore_spec_ctrl): one
 * VMLAUNCH (resume false) or VMRESUME of the current VMCS; 0 after the VM
 * exit, 1 if the instruction failed (VM_INSTRUCTION_ERROR says why).
 *
 * Called with interrupts disabled (a host interrupt ends the guest's run
 * with an exit: external-interrupt exiting).  The VMCS's HOST_RIP is
 * dune_vmx_exit_point and HOST_RSP is written here, so a VM exit comes back
 * below with this function's stack.  VMX saves and restores none of the
 * guest's general-purpose registers but RSP: they go through `gprs`
 * (struct dune_guest_gprs, offsets as svm_run.S, RAX at 112).
 *
 * The guest is the process's own code, but at ring 0 and entering the host
 * kernel by a VM exit, not through the kernel's entry code, so the
 * kernel's speculation mitigations for that entry are made here, as the
 * SVM half makes them, each patched in at load time only where the kernel
 * turned it on: CPU buffers cleared before the entry (MDS), and after the
 * exit, before any RET, the return stack buffer overwritten, SPEC_CTRL
 * written again where the kernel runs with IBRS (the write is what makes
 * IBRS a barrier against the guest's predictions), and the return
 * predictor untrained (retbleed).
 *
 * The exit comes in at a label that no instruction jumps to: objtool is
 * told (UNWIND_HINT_SAVE/RESTORE) that the stack there is as it was at the
 * VMLAUNCH/VMRESUME.
 */
#include <linux/linkage.h>
#include <asm/asm.h>
#include <asm/msr-index.h>
#include <asm/nospec-branch.h>
#include <asm/segment.h>
#include <asm/unwind_hints.h>

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
#define G_RAX 112

#define VMCS_HOST_RSP 0x6c14	/* the field's encoding (SDM vol. 3, app. B) */

/* the frame below the callee-saved registers: */
#define F_RESTORE 0	/* restore_spec_ctrl */
#define F_SPEC 8	/* spec_ctrl */
#define F_GPRS 16	/* gprs */

	.text
SYM_FUNC_START(dune_vmx_enter)
	push %rbp
	mov %rsp, %rbp
	push %r15
	push %r14
	push %r13
	push %r12
	push %rbx
	push %rdi		/* F_GPRS */
	push %rdx		/* F_SPEC */
	movzbl %cl, %ecx
	push %rcx		/* F_RESTORE */

	mov $VMCS_HOST_RSP, %eax
	vmwrite %rsp, %rax

	/* CF = resume; nothing below touches CF before the branch */
	bt $0, %esi

	mov G_RAX(%rdi), %rax
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

	/* VERW: changes ZF only */
#if defined(VM_CLEAR_CPU_BUFFERS)
	VM_CLEAR_CPU_BUFFERS
#elif defined(CLEAR_CPU_BUFFERS)
	CLEAR_CPU_BUFFERS
#endif
	jc .Lresume
	UNWIND_HINT_SAVE
	vmlaunch
	jmp .Lfailed
.Lresume:
	vmresume
	jmp .Lfailed

SYM_INNER_LABEL(dune_vmx_exit_point, SYM_L_GLOBAL)
	UNWIND_HINT_RESTORE
	ENDBR
	push %rdi
	mov 8+F_GPRS(%rsp), %rdi
	mov %rax, G_RAX(%rdi)
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

	FILL_RETURN_BUFFER %rax, RSB_CLEAR_LOOPS, X86_FEATURE_RSB_VMEXIT

	cmpq $0, F_RESTORE(%rsp)
	je 1f
	mov $MSR_IA32_SPEC_CTRL, %ecx
	mov F_SPEC(%rsp), %rax
	mov %rax, %rdx
	shr $32, %rdx
	wrmsr
1:	lfence

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
	jmp .Lout

.Lfailed:
	/* Still the host's stack; the guest's values in the registers are
	 * the process's own, but clear them all the same. */
	xor %ecx, %ecx
	xor %edx, %edx
	xor %esi, %esi
	xor %edi, %edi
	xor %r8d, %r8d
	xor %r9d, %r9d
	xor %r10d, %r10d
	xor %r11d, %r11d
	mov $1, %eax
.Lout:
	add $24, %rsp		/* F_RESTORE, F_SPEC, F_GPRS */
	pop %rbx
	pop %r12
	pop %r13
	pop %r14
	pop %r15
	pop %rbp
	RET
SYM_FUNC_END(dune_vmx_enter)

/*
 * dune_vmx_call_nmi(handler): an NMI that ended the guest's run (an NMI
 * exit) is the host's: call the kernel's NMI entry for it with an
 * interrupt frame, as if the CPU had delivered it here.  Its IRET also
 * ends the NMI blocking that the exit left.  Interrupts are disabled.
 */
SYM_FUNC_START(dune_vmx_call_nmi)
	push %rbp
	mov %rsp, %rbp
	and $-16, %rsp
	push $__KERNEL_DS
	push %rbp
	pushf
	push $__KERNEL_CS
	CALL_NOSPEC rdi
	leave
	RET
SYM_FUNC_END(dune_vmx_call_nmi)
