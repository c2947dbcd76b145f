/* SPDX-License-Identifier: MIT */
/*
 * The guest of smp_stress: each vCPU loops over system calls made through
 * `out` to port 0xd0, libdune's way (rax = number, rdi rsi rdx = arguments,
 * rax = result), and checks in with `out` to port 0xd1 every 64 rounds so
 * that the host can stop it.  Entered with r12 = the write end of a pipe,
 * r13 = its read end, r14 = a one-byte buffer in the host process (the host
 * kernel reads and writes it, the guest never does), r15 = this vCPU's
 * counter in guest memory.  The IDT's 32 handlers report any exception to
 * port 0xfe: rax = vector, rbx = CR2, rcx and rdx = the two words the CPU
 * pushed last (error code and RIP, or RIP and CS).
 */
	.text
	.globl smp_guest_start, smp_guest_vectors, smp_guest_end
	.code64
smp_guest_start:
	xor %ebp, %ebp
1:	mov $39, %eax           /* getpid */
	out %al, $0xd0
	test %rcx, %rcx         /* what follows an `out` in libdune's entry */
	mov %rax, %rbx
	mov $1, %eax            /* write(r12, r14, 1) */
	mov %r12, %rdi
	mov %r14, %rsi
	mov $1, %edx
	out %al, $0xd0
	push %rbx
	xor %eax, %eax          /* read(r13, r14, 1) */
	mov %r13, %rdi
	mov %r14, %rsi
	mov $1, %edx
	out %al, $0xd0
	pop %rbx
	incq (%r15)
	inc %ebp
	test $63, %ebp
	jnz 1b
	out %al, $0xd1
	jmp 1b

	.balign 16
smp_guest_vectors:
	vec = 0
	.rept 32
	.balign 16
	pushq $vec
	jmp smp_guest_report
	vec = vec + 1
	.endr

smp_guest_report:
	mov (%rsp), %rax
	mov %cr2, %rbx
	mov 8(%rsp), %rcx
	mov 16(%rsp), %rdx
	out %al, $0xfe
2:	hlt
	jmp 2b
smp_guest_end:
	.section .note.GNU-stack, "", @progbits
