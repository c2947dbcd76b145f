/* SPDX-License-Identifier: MIT */
/*
 * The guests of kmod_test: 64-bit ring-0 code, position independent, copied
 * by the test to guest-physical (= guest-virtual) 0x10000.  Entered with
 * rdi = which guest, rsi = argument, rdx = guest-virtual address of the
 * data region.  Each reports through vmmcall with its result in rax (and
 * rbx), then halts.
 */
	.text
	.globl kmod_guest_start, kmod_guest_end
	.code64
kmod_guest_start:
	cmp $0, %rdi
	je g_write_pages
	cmp $1, %rdi
	je g_reread
	cmp $2, %rdi
	je g_spin
	cmp $3, %rdi
	je g_load_rsi
	cmp $4, %rdi
	je g_wrmsr_efer
	cmp $5, %rdi
	je g_out
	cmp $6, %rdi
	je g_triple_fault
	cmp $7, %rdi
	je g_store_rsi
	cmp $8, %rdi
	je g_wait_value
	cmp $9, %rdi
	je g_syscall
	cmp $10, %rdi
	je g_single_step
	cmp $11, %rdi
	je g_take_ipis
	cmp $12, %rdi
	je g_send_ipi
	mov $0xbad, %rax
	vmmcall
	hlt

/* Page i of the data region gets 0x0d0e0000 + i in its first word, for
   i < rsi; rax = 0x600d, rbx = the sum read back. */
g_write_pages:
	xor %rcx, %rcx
	xor %rbx, %rbx
1:	cmp %rsi, %rcx
	jae 2f
	mov %rcx, %rax
	shl $12, %rax
	lea 0x0d0e0000(%rcx), %r8
	mov %r8, (%rdx,%rax)
	add (%rdx,%rax), %rbx
	inc %rcx
	jmp 1b
2:	mov $0x600d, %rax
	vmmcall
	hlt
	jmp 2b

/* Reads the data region's first word twice, with an exit between, in
   which the host replaces the page: rbx = first read, rcx = second. */
g_reread:
	mov (%rdx), %rbx
	mov $1, %rax
	vmmcall
	mov (%rdx), %rcx
	mov $2, %rax
	vmmcall
	hlt

/* Counts in data[0] until data[1] is non-zero. */
g_spin:
	movq $0, (%rdx)
1:	incq (%rdx)
	cmpq $0, 8(%rdx)
	je 1b
	mov (%rdx), %rbx
	mov $3, %rax
	vmmcall
	hlt

/* Loads from (rsi): a guest-virtual address chosen by the test. */
g_load_rsi:
	mov (%rsi), %rbx
	mov $4, %rax
	vmmcall
	hlt

/* Stores to (rsi). */
g_store_rsi:
	movq $0x5107e, (%rsi)
	mov $7, %rax
	vmmcall
	hlt

/* Spins until data[0] == rsi, counting its rounds in the data region's
   second page (which the host watches): rbx = the rounds. */
g_wait_value:
1:	incq 4096(%rdx)
	cmp (%rdx), %rsi
	jne 1b
	mov 4096(%rdx), %rbx
	mov $8, %rax
	vmmcall
	hlt

/* The host's EFER is not the guest's to write. */
g_wrmsr_efer:
	mov $0xc0000080, %ecx
	rdmsr
	wrmsr
	mov $5, %rax
	vmmcall
	hlt

g_out:
	mov $0x42, %al
	out %al, $0x80
	mov $6, %rax
	vmmcall
	hlt

/* An empty IDT: int3 -> #GP -> #DF -> shutdown. */
g_triple_fault:
	pushq $0
	pushq $0
	lidt (%rsp)
	int3
	mov $0xbad, %rax
	vmmcall
	hlt

/* System call rsi with arguments r12 r13 r14 through an `out` to port
   0xd0, libdune's way; then vmmcall with rax = the result (if the module
   made the call) and rcx = 1 if it did, 0 if the exit went to user space. */
g_syscall:
	mov %rsi, %rax
	mov %r12, %rdi
	mov %r13, %rsi
	mov %r14, %rdx
	xor %ecx, %ecx
	out %al, $0xd0
	vmmcall
	hlt

/* Single-steps one instruction that moves the stack to a page the guest
   has never touched (rsi: its top), so that delivering the #DB trap stops
   on a nested page fault.  The handler (IDT by the test) reports
   rax = 0xdb, rbx = the RIP the trap saved: kmod_guest_stepped if the
   trap survived the exit, a later one if it was lost and TF trapped again. */
	.globl kmod_guest_stepped, kmod_guest_db_handler
g_single_step:
	pushfq
	orq $0x100, (%rsp)
	popfq
	mov %rsi, %rsp
kmod_guest_stepped:
	nop
	nop
	mov $0xbad1, %rax
	vmmcall
	hlt
kmod_guest_db_handler:
	mov (%rsp), %rbx
	mov $0xdb, %rax
	vmmcall
	hlt

/* Interrupts on, counts rounds in the data region's second page until
   the interrupt handler below has run rsi times (data[2] counts them) or
   the host sets data[3]: rbx = data[2].  The handler's IDT entry is the
   test's. */
	.globl kmod_guest_ipi_handler
g_take_ipis:
	sti
1:	incq 4096(%rdx)
	cmpq $0, 24(%rdx)
	jne 2f
	cmp 16(%rdx), %rsi
	ja 1b
2:	cli
	mov 16(%rdx), %rbx
	mov $11, %rax
	vmmcall
	hlt
kmod_guest_ipi_handler:
	push %rax
	mov $0x40000000, %eax  /* DATA_VA: the interrupted code's rdx */
	incq 16(%rax)
	pop %rax
	iretq

/* Writes rsi to the x2APIC's ICR (MSR 0x830), then vmmcall rax = 12. */
g_send_ipi:
	mov $0x830, %ecx
	mov %rsi, %rax
	mov %rsi, %rdx
	shr $32, %rdx
	wrmsr
	mov $12, %rax
	vmmcall
	hlt

kmod_guest_end:
	.section .note.GNU-stack,"",@progbits
