/* SPDX-License-Identifier: MIT */
/*
 * libdune: process virtualization on /dev/kvm (no kernel module), or on
 * /dev/dune (our dune.ko) where it is loaded: see dune_set_device().
 *
 *   if (dune_init(1) == 0 && dune_enter() == 0) {
 *       // this thread now runs in guest ring 0 of a KVM virtual machine
 *       // whose memory is this process's memory
 *   }
 *
 * See Documentation/libdune.md for what is and is not supported.
 */
#ifndef LIBDUNE_DUNE_H
#define LIBDUNE_DUNE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- life cycle ---- */

/*
 * Creates the virtual machine.  map_full != 0 maps every region of
 * /proc/self/maps into the guest now; 0 maps only what libdune itself needs
 * and the rest on first touch.  (Regions mmapped later are always mapped as
 * they appear.)  Returns 0, or a negative errno with a one-line reason in
 * dune_strerror() (also printed on stderr unless DUNE_QUIET is set):
 *   -ENOENT   no /dev/kvm (or /dev/dune when that was asked for)
 *   -EACCES   no permission to open the device
 *   -ENODEV   no hardware virtualisation (no vmx/svm in /proc/cpuinfo), or a
 *             software KVM backend (too slow to be of any use, or hangs)
 *   -ENOTSUP  KVM lacks something libdune needs, or dune.ko speaks another
 *             ABI version
 *   -EBUSY    /dev/dune: a KVM virtual machine holds the CPU's
 *             virtualisation
 *   -EINVAL   DUNE_DEVICE is not kvm, dune or auto
 * Calling it again after success returns 0.
 */
int dune_init(int map_full);

/*
 * Moves the calling thread into guest ring 0: it continues after the call
 * with the same callee-saved registers, stack, FS base (TLS), signal mask and
 * floating-point control state, and dune_enter() returns 0 there.  Its
 * system calls are forwarded to the host, threads it creates get their own
 * vCPUs, and the program's signal handlers run in the guest too.  On
 * failure it returns a negative errno, still on the host.  Calling it again
 * in the guest returns 0.
 */
int dune_enter(void);

/*
 * Which hypervisor device dune_init() uses; call it before dune_init():
 *   "kvm"   /dev/kvm, no module needed
 *   "dune"  /dev/dune, our module dune.ko (kmod/): guest system calls run
 *           in the kernel, much cheaper than /dev/kvm's exit to user space
 *   "auto"  (or NULL, the default) /dev/dune when it is present and usable,
 *           else /dev/kvm
 * Without a call the environment variable DUNE_DEVICE says the same.
 * 0, -EINVAL for another name, -EBUSY after dune_init() succeeded.
 */
int dune_set_device(const char *name);
#define DUNE_DEVICE_KVM "kvm"
#define DUNE_DEVICE_DUNE "dune"

/* "kvm" or "dune" once dune_init() has succeeded, else NULL. */
const char *dune_device(void);

/*
 * How many levels of page tables the guest runs with; call it before
 * dune_init():
 *   4  (the default) 48-bit addresses: the process's lower half and a
 *      128 TiB upper half (PML4 entries 256-511)
 *   5  57-bit addresses (CR4.LA57) where the vCPU can have them: over
 *      /dev/kvm when the CPU has LA57 (CPUID.7.0:ECX bit 16, in what KVM
 *      offers); elsewhere, dune.ko included, 4.  The lower half is the
 *      process's as before (pgroot, the same PML4, is entry 0 of a PML5;
 *      host addresses stay 47-bit) and the upper half grows to 2^56 bytes
 *      (64 PiB, PML5 entries 256-511), all of it the caller's.
 * DUNE_PAGING=4 or 5 in the environment at dune_init says the same and
 * wins over the call, so that one program can be run both ways.
 * 0, -EINVAL for another number, -EBUSY after dune_init() succeeded.
 */
int dune_set_paging_levels(int levels);
/* The levels in force (4 or 5) once dune_init() has succeeded, else 0. */
int dune_paging_levels(void);

/* dune_init(map_full) then dune_enter(). */
int dune_init_and_enter(int map_full);

/* The reason for the last failure of dune_init()/dune_enter(). */
const char *dune_strerror(void);

/* True when the calling thread runs in the guest (CS.RPL == 0). */
bool dune_in_guest(void);

/* Ends the whole process at once with exit status 1 (guest or host). */
__attribute__((noreturn)) void dune_die(void);

/* ---- trap frames and handlers ---- */

/* Saved guest state at a trap or a system call. */
struct dune_tf {
	uint64_t rax, rbx, rcx, rdx, rsi, rdi, rbp;
	uint64_t r8, r9, r10, r11, r12, r13, r14, r15;
	uint64_t vector; /* exception vector; DUNE_SYSCALL_VECTOR for syscalls */
	uint64_t err;    /* error code (0 if the vector has none) */
	uint64_t rip, cs, rflags, rsp, ss;
};
#define DUNE_SYSCALL_VECTOR 0x100

/* System call view of a frame: rax = number, then the six arguments; rip is
 * the return address. */
#define DUNE_SC_NR(tf) ((tf)->rax)
#define DUNE_SC_ARG0(tf) ((tf)->rdi)
#define DUNE_SC_ARG1(tf) ((tf)->rsi)
#define DUNE_SC_ARG2(tf) ((tf)->rdx)
#define DUNE_SC_ARG3(tf) ((tf)->r10)
#define DUNE_SC_ARG4(tf) ((tf)->r8)
#define DUNE_SC_ARG5(tf) ((tf)->r9)
#define DUNE_SC_RET(tf) ((tf)->rax)
/* In the post-hook rax is the result; the number (as the pre-hook left it)
 * is here. */
#define DUNE_SC_NR_DONE(tf) ((tf)->err)

/*
 * #PF handler: runs in guest ring 0 on an exception stack with the faulting
 * address (CR2) and the error code.  Returning retries the instruction.  It
 * may use the FPU/SSE (libdune saves the state around it) and make system
 * calls.  A fault inside the handler itself is fatal.
 */
typedef void (*dune_pgflt_cb)(uintptr_t addr, uint64_t fec, struct dune_tf *tf);
void dune_register_pgflt_handler(dune_pgflt_cb cb);

/* Handler for any other vector (0-255) raised in the guest; returning
 * resumes at tf->rip (which the handler may change). */
typedef void (*dune_intr_cb)(struct dune_tf *tf);
void dune_register_intr_handler(int vec, dune_intr_cb cb);

/*
 * Interrupts between vCPUs (inter-processor interrupts): over dune.ko unless
 * the environment has DUNE_IPI=0 at dune_init, over /dev/kvm only where it
 * has DUNE_IPI (another value; experimental there: Documentation/libdune.md,
 * "Interrupts between vCPUs").  A vCPU sends a vector to another with one
 * WRMSR to the x2APIC's ICR, which the kernel handles without coming back
 * to user space: over /dev/kvm each vCPU has a local APIC in the kernel
 * (KVM's split irqchip: no PIC or I/O APIC; and no exit at all where the
 * CPU virtualises IPIs); dune.ko takes the write itself and hands the
 * vector to the target as a virtual interrupt.  A target running guest
 * code takes it at once, one outside the guest (in a system call made on
 * the host) when it re-enters.  Otherwise dune_ipi_available() is false
 * and dune_send_ipi() does nothing.
 *
 * dune_register_ipi_handler(): vec 32-254; the handler runs in guest ring 0
 * with interrupts off, on an exception stack, like dune_intr_cb; libdune
 * acknowledges the interrupt (EOI, where the APIC needs one) when it
 * returns.  Interrupts are on
 * wherever the program runs (RFLAGS.IF as on the host) and off in libdune's
 * handlers.  dune_vcpu_apic_id() and dune_send_ipi() are for guest code.
 */
bool dune_ipi_available(void);
int dune_register_ipi_handler(int vec, dune_intr_cb cb);
uint32_t dune_vcpu_apic_id(void);
void dune_send_ipi(uint32_t apic_id, int vec);

/*
 * System call hooks, run in guest ring 0 around every system call the guest
 * makes (system calls made by the hooks themselves are not hooked).
 * The pre-hook may rewrite the number (tf->rax), the six arguments and the
 * return address (tf->rip); returning false skips the call, and tf->rax is
 * then the result.  The post-hook sees the result in tf->rax (and the number
 * in DUNE_SC_NR_DONE(tf), the arguments as they were) and may rewrite it.  Either may be NULL.
 */
typedef bool (*dune_syscall_prehook)(struct dune_tf *tf);
typedef void (*dune_syscall_posthook)(struct dune_tf *tf);
void dune_register_syscall_hooks(dune_syscall_prehook pre,
				 dune_syscall_posthook post);

/* ---- the guest's page tables ---- */

typedef uint64_t ptent_t;
#define PTE_P 0x001ULL
#define PTE_W 0x002ULL
#define PTE_U 0x004ULL
#define PTE_PWT 0x008ULL
#define PTE_PCD 0x010ULL
#define PTE_A 0x020ULL
#define PTE_D 0x040ULL
#define PTE_PS 0x080ULL
#define PTE_G 0x100ULL
#define PTE_NX (1ULL << 63)
#define PTE_ADDR(pte) ((pte) & 0x000ffffffffff000ULL)
#define PTE_FLAGS(pte) ((pte) & ~0x000ffffffffff000ULL)
#define DUNE_PGSIZE 4096UL

/*
 * The guest's PML4 (a process address: page tables live in libdune's pool,
 * which is ordinary process memory, so both guest and host can edit them).
 * By default each 1 GiB of the process's address space is mapped to guest
 * physical memory with 2 MiB pages; the helpers below split them on demand.
 */
extern ptent_t *pgroot;
/*
 * What CR3 holds: pgroot with 4 levels; with 5 (dune_paging_levels()) a
 * PML5 whose entry 0 points to pgroot.  The helpers below take either
 * root; pgroot reaches the lower half only.
 */
ptent_t *dune_pgtable_top(void);

/* Guest-physical address of va under the current page tables, or
 * (uint64_t)-1 if unmapped. */
uint64_t dune_va_to_pa(const void *va);
/* Process address of a guest-physical address of the default mapping, or
 * NULL. */
void *dune_pa_to_va(uint64_t pa);

/*
 * Finds the 4 KiB PTE for va, creating page tables (and splitting a 2 MiB
 * mapping) when create is non-zero.  0 and *pte_out, or -ENOENT / -ENOMEM.
 */
int dune_vm_lookup(ptent_t *root, const void *va, int create, ptent_t **pte_out);
/* Maps [va, va+len) to guest-physical pa.. with perm (PTE_W, PTE_U, PTE_NX;
 * PTE_P is implied), 4 KiB pages.  No TLB flush: see dune_flush_tlb*(). */
int dune_vm_map_phys(ptent_t *root, void *va, size_t len, uint64_t pa,
		     uint64_t perm);
/* Maps [va, va+len) to the process's own memory at va (the default). */
int dune_vm_map_pages(ptent_t *root, void *va, size_t len, uint64_t perm);
/* Clears the PTEs of [va, va+len) (splitting large pages); no flush. */
int dune_vm_unmap(ptent_t *root, void *va, size_t len);
/* Calls cb for each present leaf in [start, end): level 0 = 4 KiB,
 * 1 = 2 MiB, 2 = 1 GiB.  A non-zero return stops the walk and is returned. */
typedef int (*dune_page_walk_cb)(void *arg, ptent_t *pte, void *va, int level);
int dune_vm_page_walk(ptent_t *root, void *start, void *end,
		      dune_page_walk_cb cb, void *arg);
/* invlpg / CR3 reload in the guest; no-ops on the host. */
void dune_flush_tlb_one(const void *va);
void dune_flush_tlb(void);

/* ---- counters (for tests and benchmarks) ---- */
struct dune_stats {
	uint64_t syscalls;   /* system calls forwarded to the host */
	uint64_t exits;      /* KVM_RUN returns */
	uint64_t chunks;     /* 1 GiB memslots registered */
	uint64_t vcpus;      /* vCPUs created */
	uint64_t pt_pool;    /* where the guest's page tables are carved */
	uint64_t pt_pool_used; /* bytes of it carved so far */
};
void dune_get_stats(struct dune_stats *st);

#ifdef __cplusplus
}
#endif
#endif
