/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * The /dev/dune ABI: what dune.ko and its user-space drivers (libdune, the
 * tests) share.  Included by the module and by user programs alike.
 *
 * A process opens /dev/dune: that descriptor is one VM whose guest-physical
 * memory is the process's own memory, in regions it declares
 * (DUNE_SET_REGION: guest-physical range -> range of its address space).
 * DUNE_CREATE_VCPU returns a second descriptor, one virtual CPU, which a
 * thread runs with DUNE_VCPU_RUN until the guest does something the module
 * leaves to user space (a vmmcall, hlt, a fault outside every region, ...).
 * Both descriptors work only in the process (mm) that opened /dev/dune.
 *
 * Versioning: DUNE_GET_ABI_VERSION returns DUNE_ABI_VERSION as the ioctl's
 * result.  A change to any structure or ioctl below bumps it; reserved
 * fields must be zero (the module refuses anything else with EINVAL) so that
 * later versions can give them a meaning.  Version 2 (libdune's driver): the
 * guest's TSS (tr_base, tr_limit), `out` exits (DUNE_EXIT_IO), the run's
 * immediate_exit, 512 regions, and system calls run in the kernel
 * (DUNE_SET_SYSCALLS).  Version 3: interrupts between vCPUs
 * (DUNE_VCPU_SET_APIC_ID, the x2APIC ICR write) and the ipis counter.
 */
#ifndef DUNE_ABI_H
#define DUNE_ABI_H

#include <linux/ioctl.h>
#include <linux/types.h>

#define DUNE_ABI_VERSION 3
/* The group that may open /dev/dune (kmod/60-dune.rules, dangless-setup). */
#define DUNE_GROUP "dune"

#define DUNE_IOC_MAGIC 0xD7

/* ---- on the /dev/dune descriptor (the VM) ---- */

/* Returns DUNE_ABI_VERSION (>= 1), no argument. */
#define DUNE_GET_ABI_VERSION _IO(DUNE_IOC_MAGIC, 0x00)

/*
 * Maps guest-physical [guest_phys, guest_phys + size) to the calling
 * process's [user_addr, user_addr + size).  Page-aligned, size > 0, at most
 * DUNE_MAX_REGIONS regions, no two overlapping in guest-physical space,
 * guest_phys + size below the CPU's physical-address limit.  size == 0
 * removes region `slot`.  The guest sees what the process sees at that
 * address, at the time of the access: the mapping follows mmap, munmap,
 * mremap, copy-on-write and reclaim (MMU notifiers).  Memory the kernel
 * cannot hand out by get_user_pages (PFNMAP/IO mappings) is not reachable.
 */
#define DUNE_MAX_REGIONS 512
#define DUNE_REGION_READONLY (1u << 0) /* the guest may only read */
struct dune_region {
	__u32 slot;  /* 0 .. DUNE_MAX_REGIONS-1 */
	__u32 flags; /* DUNE_REGION_* */
	__u64 guest_phys;
	__u64 user_addr;
	__u64 size;
};
#define DUNE_SET_REGION _IOW(DUNE_IOC_MAGIC, 0x01, struct dune_region)

/* Returns a new vCPU descriptor (O_CLOEXEC), no argument. */
#define DUNE_CREATE_VCPU _IO(DUNE_IOC_MAGIC, 0x02)

/*
 * The module's own counters, global (all processes): what it holds now and
 * what it has done since it was loaded.  The "live" counts are how the
 * tests show that nothing leaks.
 */
struct dune_module_stats {
	__u64 live_vms;
	__u64 live_vcpus;
	__u64 live_pages;     /* pages the module allocated: VMCBs, NPT, ... */
	__u64 svm_users;      /* VMs keeping SVM enabled */
	__u64 vmruns;         /* guest entries */
	__u64 npt_faults;     /* nested page faults filled in the kernel */
	__u64 npt_zaps;       /* NPT entries removed by MMU notifiers */
	__u64 syscalls;       /* guest system calls run in the kernel */
	__u64 ipis;           /* interrupts sent between vCPUs */
	__u64 reserved[7];
};
#define DUNE_GET_STATS _IOR(DUNE_IOC_MAGIC, 0x03, struct dune_module_stats)

/*
 * System calls run in the kernel.  When the guest writes to port `port`
 * with an `out` instruction, holding a system call as the `syscall`
 * instruction would (RAX the number, RDI RSI RDX R10 R8 R9 the arguments),
 * and the number's bit is set in `allowed`, the module makes that call as
 * the process's own (same task, credentials and memory; pointers are the
 * process's addresses), puts the result in the guest's RAX, sets its RCX to
 * 1 and runs the guest on after the `out` without returning to user space.
 * Otherwise the `out` is an ordinary DUNE_EXIT_IO.  A call interrupted by a
 * signal before it did anything (the kernel's internal restart codes) ends
 * the run with DUNE_EXIT_IO and DUNE_EXIT_F_SYSCALL_INTERRUPTED: user space
 * decides whether it fails with EINTR (a handler will run) or is made again.
 * While the thread is traced, audited or under seccomp, every call exits to
 * user space, so that those apply.
 *
 * The module never runs in the kernel the calls that change the calling
 * context or the process's image (clone*, fork, vfork, execve*, exit*,
 * rt_sigreturn, arch_prctl, sigaltstack, iopl, ioperm, modify_ldt, seccomp,
 * ioctl, rseq and uretprobe, and those that swap the signal mask while
 * they wait): it clears
 * their bits and returns in `allowed` the set it will run.  port 0 turns
 * the feature off.  The set is the VM's (every vCPU).
 */
#define DUNE_SYSCALLS_MAX 512
struct dune_syscalls {
	__u32 port;     /* 1..255 (the `out imm8` form), 0 = off */
	__u32 flags;    /* none yet: 0 */
	__u64 allowed[DUNE_SYSCALLS_MAX / 64];
};
#define DUNE_SET_SYSCALLS _IOWR(DUNE_IOC_MAGIC, 0x04, struct dune_syscalls)

/* ---- on a vCPU descriptor ---- */

/*
 * The guest runs in 64-bit mode at CPL 0 with flat segments (CS 0x08, data
 * 0x10); it may load its own GDT and IDT.  Control registers are checked
 * when set: CR0 needs PE|PG (and no bit above 31), CR4 needs PAE and only
 * the bits in DUNE_CR4_ALLOWED, EFER needs LME|LMA and only
 * DUNE_EFER_ALLOWED.  Base addresses must be canonical.
 */
struct dune_regs {
	__u64 rax, rbx, rcx, rdx, rsi, rdi, rbp, rsp;
	__u64 r8, r9, r10, r11, r12, r13, r14, r15;
	__u64 rip, rflags;
};

/*
 * TR is selector 0x18, a busy 64-bit TSS at tr_base with limit tr_limit
 * (at least 0x67): the CPU takes its IST stacks from there.
 */
struct dune_sregs {
	__u64 cr0, cr2, cr3, cr4, efer;
	__u64 gdt_base, idt_base;
	__u16 gdt_limit, idt_limit;
	__u32 tr_limit;
	__u64 fs_base, gs_base, kernel_gs_base;
	__u64 star, lstar, cstar, sfmask;
	__u64 tr_base;
	__u64 reserved[3];
};

struct dune_vcpu_state {
	struct dune_regs regs;
	struct dune_sregs sregs;
};

#define DUNE_CR0_REQUIRED 0x80000001ull          /* PG | PE */
#define DUNE_CR4_REQUIRED 0x00000020ull          /* PAE */
#define DUNE_EFER_REQUIRED 0x00000500ull         /* LME | LMA */
/* DE PSE PAE MCE PGE PCE OSFXSR OSXMMEXCPT UMIP FSGSBASE PCIDE OSXSAVE SMEP SMAP */
#define DUNE_CR4_ALLOWED  0x00370ff8ull
#define DUNE_EFER_ALLOWED 0x00000d01ull          /* SCE | LME | LMA | NXE */

/* An exception whose delivery an exit interrupted is delivered when the
 * guest runs again, unless DUNE_VCPU_SET_STATE replaces the state first
 * (as the guest's re-executed instruction raises most of them again). */
#define DUNE_VCPU_GET_STATE _IOR(DUNE_IOC_MAGIC, 0x10, struct dune_vcpu_state)
#define DUNE_VCPU_SET_STATE _IOW(DUNE_IOC_MAGIC, 0x11, struct dune_vcpu_state)

/*
 * Why DUNE_VCPU_RUN returned 0.  The guest's RIP is already past a vmmcall,
 * hlt or out, so running again continues after it.
 */
enum dune_exit_reason {
	DUNE_EXIT_VMMCALL = 1,   /* hypercall: number and arguments in the registers */
	DUNE_EXIT_HLT = 2,
	DUNE_EXIT_NPF = 3,       /* guest-physical address outside every region,
				    a write to a read-only one, or host memory
				    the process cannot access: gpa, error_code */
	DUNE_EXIT_SHUTDOWN = 4,  /* triple fault */
	DUNE_EXIT_INVALID = 5,   /* the CPU refused the guest state */
	DUNE_EXIT_INTERCEPT = 6, /* an instruction the guest may not run (in,
				    string I/O, MSR, debug registers, xsetbv,
				    ...): svm_exit_code, info1, info2 as the
				    CPU gave them */
	DUNE_EXIT_IO = 7,        /* an `out` (not a string one) to `port`;
				    nothing reached any device: the guest's
				    registers (DUNE_VCPU_GET_STATE) say the rest */
};

#define DUNE_EXIT_F_SYSCALL_INTERRUPTED (1u << 0) /* see DUNE_SET_SYSCALLS */

/*
 * immediate_exit is the one field user space writes: when it is non-zero
 * at the start of DUNE_VCPU_RUN the call fails with EINTR at once, without
 * entering the guest (a signal handler sets it so that a signal which
 * arrived just before the call is not held up until the guest's next exit;
 * the module never clears it).  The module fills the rest.
 */
struct dune_exit {
	__u32 reason;            /* enum dune_exit_reason */
	__u8 immediate_exit;
	__u8 reserved0[3];
	__u64 svm_exit_code;     /* the VMCB exit code (AMD APM vol. 2, app. C) */
	__u64 info1, info2;      /* EXITINFO1/2 */
	__u64 gpa;               /* DUNE_EXIT_NPF */
	__u64 error_code;        /* DUNE_EXIT_NPF: the #NPF error code */
	__u16 port;              /* DUNE_EXIT_IO */
	__u16 size;              /* DUNE_EXIT_IO: 1, 2 or 4 bytes */
	__u32 flags;             /* DUNE_EXIT_F_* */
	__u64 reserved[2];
};

/*
 * Runs the guest until an exit the module does not handle itself; 0 with
 * *exit filled.  Nested page faults inside a region, host interrupts,
 * rescheduling and the allowed system calls (DUNE_SET_SYSCALLS) are handled
 * in the kernel.  A pending signal, work the kernel must do on the way back
 * to user space (task work), or immediate_exit ends the call with EINTR
 * before or during the guest's run (the guest's state is kept: call again
 * to continue).  The guest's FPU and vector registers are the calling
 * thread's own: what the guest left in them is there when the call returns,
 * and what the thread has in them is what the guest finds.  EBUSY: another hypervisor (a KVM VM) holds SVM
 * on this CPU; EINVAL: after DUNE_EXIT_SHUTDOWN, until DUNE_VCPU_SET_STATE.
 *
 * Every ioctl but DUNE_GET_ABI_VERSION and DUNE_GET_STATS fails with EPERM
 * in a process other than the one that opened /dev/dune; malformed
 * arguments give EINVAL, unreadable ones EFAULT, unknown requests ENOTTY.
 */
#define DUNE_VCPU_RUN _IOWR(DUNE_IOC_MAGIC, 0x12, struct dune_exit)

/*
 * Interrupts between vCPUs.  A vCPU with an APIC ID (the ioctl's argument,
 * below DUNE_APIC_ID_NONE, unique in the VM: EEXIST otherwise; set once:
 * EBUSY after) can be sent a vector by any vCPU of its VM the way an x2APIC
 * sends one: the guest writes MSR 0x830 (the ICR) with the destination's
 * APIC ID in bits 63:32 and the vector (32-255) in bits 7:0, fixed
 * delivery, physical destination, no shorthand (bit 14, assert, may be
 * set; every other bit clear).  The module handles the write without
 * leaving the kernel; an ICR it does not handle (another delivery mode, a
 * shorthand, a vector below 32) ends the run with DUNE_EXIT_INTERCEPT.  A
 * write to an APIC ID no vCPU has is dropped, as an APIC drops it.
 *
 * The target takes the vector through its IDT as an external interrupt
 * when RFLAGS.IF allows: at once if it runs guest code (its CPU is
 * interrupted), else when it next enters the guest.  A vector sent again
 * before the target took it is taken once; pending vectors are taken
 * highest first, one at a time.  Nothing needs acknowledging: a write to
 * the EOI register (MSR 0x80b) is accepted and does nothing.  No other
 * part of a local APIC exists (no timer, priorities or ID register).
 */
#define DUNE_APIC_ID_NONE 0xffffffffu
#define DUNE_VCPU_SET_APIC_ID _IO(DUNE_IOC_MAGIC, 0x13)

#endif
