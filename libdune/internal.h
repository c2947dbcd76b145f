/* SPDX-License-Identifier: MIT */
/* libdune internals shared by the host side (kvm.c, memslot.c, vcpu.c,
 * vcpu_run.c, syscall.c, signal.c, ...) and the guest side with what it
 * calls (guest.c, vm.c, entry.S). */
#ifndef LIBDUNE_INTERNAL_H
#define LIBDUNE_INTERNAL_H

#include "dune.h"

#include <stdint.h>
#include <stddef.h>
#include <linux/kvm.h>
#include <signal.h>

#define DUNE_HIDDEN __attribute__((visibility("hidden")))

/* Ports the guest writes to leave the guest (vmcall/vmmcall cannot reach user
 * space on x86 KVM).  The argument is in the vCPU structure (GS base). */
#define DUNE_PORT_SYSCALL 0xd0 /* vcpu->tf: a system call frame */
#define DUNE_PORT_FATAL 0xd1   /* vcpu->tf: an exception nobody handled */
#define DUNE_PORT_CHUNK 0xd2   /* vcpu->arg: map the 1 GiB chunk of this va */
#define DUNE_PORT_PROBE 0xd3   /* the init-time speed probe finished */
#define DUNE_PORT_SIGNAL 0xd4  /* vcpu->tf: deliver pending signals here */

#define DUNE_CHUNK_SHIFT 30
#define DUNE_CHUNK_SIZE (1ULL << DUNE_CHUNK_SHIFT)
#define DUNE_VA_LIMIT 0x800000000000ULL /* 47-bit user space */
#define DUNE_TASK_SIZE 0x7ffffffff000ULL
#define DUNE_NCHUNKS (DUNE_VA_LIMIT >> DUNE_CHUNK_SHIFT)

/* stack.c: the main thread's stack is grown to RLIMIT_STACK before the
 * guest runs (get_user_pages, which faults guest memory in, no longer grows
 * stacks since Linux 6.5/6.1.37), at most DUNE_STACK_MAX (RLIMIT_STACK
 * unlimited), with DUNE_STACK_GUARD below it unmapped in the guest (the
 * kernel's default stack_guard_gap, 256 pages) */
#define DUNE_STACK_MAX (1ULL << 30)
#define DUNE_STACK_GUARD (1ULL << 20)

#define DUNE_IST_SIZE (32 * 1024)
#define DUNE_NIST 3

#define GDT_NULL 0
#define GDT_KCODE 0x08
#define GDT_KDATA 0x10
#define GDT_TSS 0x18 /* 16 bytes */
#define GDT_ENTRIES 6

struct dune_tss {
	uint32_t reserved0;
	uint64_t rsp[3];
	uint64_t reserved1;
	uint64_t ist[7];
	uint64_t reserved2;
	uint16_t reserved3;
	uint16_t iomap_base;
} __attribute__((packed));

/* One per vCPU; the guest finds it through GS base (self at offset 0). */
struct dune_vcpu {
	struct dune_vcpu *self;
	struct dune_tf *tf;     /* guest -> host: frame of this exit */
	uint64_t arg;           /* guest -> host: argument */
	int64_t ret;            /* host -> guest: answer */
	int in_hook;            /* guest: inside a syscall hook */
	int in_trap;            /* guest: inside a #PF/interrupt handler */
	int in_kernel;          /* guest: depth of libdune's guest code */
	int vfork_child;        /* host: a CLONE_VFORK child's vCPU */
	volatile int sig_check; /* host -> guest: leave by DUNE_PORT_SIGNAL */
	uint64_t sig_pending;   /* host: signals for this thread's guest */
	int fd;
	int id;
	void *run;              /* the driver's run area (KVM: struct kvm_run) */
	size_t run_size;
	volatile uint8_t *kick; /* in run: non-zero makes the next run return
				   EINTR at once (a signal for the guest) */
	uint32_t last_exit;     /* the driver's code of the last exit, for
				   reports */
	void *host_stack;
	size_t host_stack_size;
	uint64_t fs_base;
	void *ist_mem;
	uint64_t gdt[GDT_ENTRIES] __attribute__((aligned(16)));
	struct dune_tss tss __attribute__((aligned(16)));
	siginfo_t siginfo[65];  /* host: of each pending signal */
	uint8_t fpu_sys[8192] __attribute__((aligned(64)));  /* hooks */
	uint8_t fpu_trap[8192] __attribute__((aligned(64))); /* handlers */
};

/* Registers dune_enter() hands to the C side. */
struct dune_enter_regs {
	uint64_t rbx, rbp, r12, r13, r14, r15, rsp, rip, rflags;
};

/* ---- drivers: the hypervisor device (drv_kvm.c, drv_dune.c) ----
 *
 * Everything libdune asks of /dev/kvm or /dev/dune goes through one of
 * these, kvmtool-style.  Registers travel as struct kvm_regs and FPU state
 * as struct kvm_xsave (standard XSAVE layout) whatever the driver.  The
 * operations used on the vCPU loop's path (run, regs, xsave, memslots) make
 * raw system calls and return 0 or -errno, never touching errno.
 */
enum dune_exit_kind {
	DUNE_X_IO,         /* an `out` to port */
	DUNE_X_HLT,
	DUNE_X_SHUTDOWN,   /* triple fault */
	DUNE_X_UNMAPPED,   /* guest-physical address outside every memslot */
	DUNE_X_FAIL_ENTRY, /* the CPU refused the guest's state */
	DUNE_X_INTERNAL,   /* the hypervisor's own trouble */
	DUNE_X_OTHER,
};
struct dune_run_exit {
	int kind;
	uint16_t port;               /* DUNE_X_IO */
	int syscall_interrupted;     /* DUNE_X_IO at DUNE_PORT_SYSCALL: dune.ko's
					in-kernel call was stopped by a signal */
	uint64_t code;               /* for the report: address or reason */
};
/* What a vCPU starts with, besides its general registers. */
struct dune_cpu_setup {
	uint64_t cr0, cr3, cr4, efer;
	uint64_t gdt_base, idt_base, tr_base, fs_base, gs_base;
	uint16_t gdt_limit, idt_limit, tr_sel;
	uint32_t tr_limit;
	uint64_t star, lstar, cstar, sfmask, kernel_gs_base;
};
struct dune_driver {
	const char *name;   /* "kvm", "dune": DUNE_DEVICE's values */
	const char *device; /* "/dev/kvm" */
	/* dune_init's checks: 0, or a dune_fail() code */
	int (*check)(void);
	/* a VM for the calling process: dune_vm.vm_fd, max_slots, xcr0,
	 * phys_bits; 0 or a dune_fail() code */
	int (*vm_create)(void);
	int (*set_memslot)(int slot, uint64_t gpa, uint64_t va, uint64_t size);
	/* a new vCPU (v->id is set): v->fd, run, run_size, kick */
	int (*vcpu_create)(struct dune_vcpu *v);
	int (*vcpu_setup)(struct dune_vcpu *v, const struct dune_cpu_setup *cs);
	int (*get_regs)(struct dune_vcpu *v, struct kvm_regs *r);
	int (*set_regs)(struct dune_vcpu *v, const struct kvm_regs *r);
	int (*set_fs_base)(struct dune_vcpu *v, uint64_t base);
	uint64_t (*get_cr2)(struct dune_vcpu *v);
	int (*get_xsave)(struct dune_vcpu *v, struct kvm_xsave *xs);
	int (*set_xsave)(struct dune_vcpu *v, const struct kvm_xsave *xs);
	/* 0 with *x, -EINTR/-EAGAIN for a signal, -EFAULT for guest access to
	 * host memory that is not there, another -errno on failure */
	long (*run)(struct dune_vcpu *v, struct dune_run_exit *x);
	/* after an `out` exit, before the registers are set (KVM finishes the
	 * instruction on the next run; dune.ko is past it already) */
	void (*complete_io)(struct dune_vcpu *v);
};
extern const struct dune_driver dune_drv_kvm DUNE_HIDDEN, dune_drv_dune DUNE_HIDDEN;
extern const struct dune_driver *dune_drv DUNE_HIDDEN; /* the one in use */

/* ---- shared state (defined in kvm.c, memslot.c and api.c) ---- */
struct dune_vm {
	int kvm_fd; /* KVM's system descriptor (-1 with dune.ko) */
	int vm_fd;
	int map_full;
	int next_vcpu_id;
	unsigned phys_bits;
	uint64_t next_gpa;
	int next_slot;
	int max_slots;
	size_t run_size;
	struct kvm_cpuid2 *cpuid;
	uint64_t xcr0;
	uint32_t xsave_size;
	int have_tsc_ctrl;
	/* interrupts between vCPUs: every vCPU has an APIC ID (its id) and
	 * sends with an x2APIC ICR write (KVM: an in-kernel local APIC;
	 * dune.ko: the module's own handling of that write) */
	bool ipi;
	bool ipi_eoi; /* a taken interrupt needs an EOI (KVM's APIC) */
	/* paging: what the driver's vCPUs can run (vm_create sets it: 5
	 * where CR4.LA57 is allowed), what was asked, what is in force */
	int max_levels;
	int want_levels;
	int levels;
	ptent_t *top; /* what CR3 holds: pgroot (4 levels) or its PML5 */
	/* the page-table pool: one 1 GiB-aligned region */
	uint8_t *pool;
	uint64_t pool_size;
	uint64_t pool_used; /* atomic */
};
extern struct dune_vm dune_vm DUNE_HIDDEN;
extern volatile int dune_chunk_lock DUNE_HIDDEN;
/* chunk index -> guest-physical base + 1 (0: not registered) */
extern uint64_t dune_chunk_gpa[DUNE_NCHUNKS] DUNE_HIDDEN;

extern dune_pgflt_cb dune_pgflt_handler DUNE_HIDDEN;
extern dune_intr_cb dune_intr_handlers[256] DUNE_HIDDEN;
extern bool dune_ipi_vectors[256] DUNE_HIDDEN; /* acknowledged after the handler where ipi_eoi */
extern dune_syscall_prehook dune_prehook DUNE_HIDDEN;
extern dune_syscall_posthook dune_posthook DUNE_HIDDEN;
extern uint64_t dune_stat_syscalls DUNE_HIDDEN, dune_stat_exits DUNE_HIDDEN,
	dune_stat_chunks DUNE_HIDDEN, dune_stat_vcpus DUNE_HIDDEN;

/* entry.S */
extern char dune_syscall_entry[] DUNE_HIDDEN;
extern uint64_t dune_trap_stubs[256] DUNE_HIDDEN;
int dune_enter_asm(void) DUNE_HIDDEN; /* saves regs, calls dune_enter_c */
__attribute__((noreturn)) void dune_run_on_stack(void *stack_top,
						 void (*fn)(void *), void *arg) DUNE_HIDDEN;
long dune_clone_thread(unsigned long flags, void *host_stack_top, int *ptid,
		       int *ctid, unsigned long tls, void (*fn)(void *),
		       void *arg) DUNE_HIDDEN;
__attribute__((noreturn)) void dune_unmap_and_exit(void *addr, size_t len,
						   int code) DUNE_HIDDEN;
extern char dune_probe_code[] DUNE_HIDDEN, dune_probe_code_end[] DUNE_HIDDEN;

extern char dune_entry_text_start[] DUNE_HIDDEN, dune_entry_text_end[] DUNE_HIDDEN;
extern char dune_sc_ret[] DUNE_HIDDEN, dune_sc_tail[] DUNE_HIDDEN,
	dune_sc_popf[] DUNE_HIDDEN, dune_sc_tail2[] DUNE_HIDDEN,
	dune_sc_jmp[] DUNE_HIDDEN, dune_trap_ret[] DUNE_HIDDEN,
	dune_trap_iret[] DUNE_HIDDEN;
void dune_host_restorer(void) DUNE_HIDDEN;

/* signal.c (host side) */
void dune_signals_route(void) DUNE_HIDDEN;
void dune_signals_set_self(struct dune_vcpu *v) DUNE_HIDDEN;
long dune_sys_rt_sigaction(long sig, const void *act, void *oact, long size) DUNE_HIDDEN;
void dune_sys_rt_sigreturn(struct dune_vcpu *v) DUNE_HIDDEN;
void dune_signals_at_exit(struct dune_vcpu *v) DUNE_HIDDEN; /* EINTR */
void dune_signals_at_frame(struct dune_vcpu *v) DUNE_HIDDEN; /* PORT_SIGNAL */
int dune_signal_fault(struct dune_vcpu *v, struct dune_tf *tf, int sig,
		      uint64_t addr, int from_regs) DUNE_HIDDEN;
void dune_vcpu_complete_io(struct dune_vcpu *v) DUNE_HIDDEN;

/* kvm.c: the VM */
extern uint64_t *dune_idt DUNE_HIDDEN; /* one IDT, shared by every vCPU */
extern int dune_inited DUNE_HIDDEN;    /* dune_init() succeeded */
int dune_vm_setup(int map_full) DUNE_HIDDEN; /* the VM, pool and memslots */

/* memslot.c: guest memory, 1 GiB chunks as memslots (host side) */
int dune_set_memslot(int slot, uint64_t gpa, uint64_t va) DUNE_HIDDEN;
int dune_map_chunk(uint64_t va) DUNE_HIDDEN;
/* registers every chunk [start, start + len) touches */
void dune_map_range(uint64_t start, uint64_t len) DUNE_HIDDEN;
int dune_map_proc_self_maps(void) DUNE_HIDDEN;

/* stack.c: the main thread's stack (host side) */
void dune_stack_setup(void) DUNE_HIDDEN;         /* at dune_init */
void dune_stack_limit_changed(void) DUNE_HIDDEN; /* RLIMIT_STACK was set */
/* [lo, hi) reaches into the guard below the main thread's stack */
bool dune_stack_guard_overlaps(uint64_t lo, uint64_t hi) DUNE_HIDDEN;

/* vcpu.c */
struct dune_vcpu *dune_vcpu_alloc(void) DUNE_HIDDEN;
/* a vCPU of the VM (a spare one if there is one) for v, in guest ring 0 */
int dune_vcpu_create(struct dune_vcpu *v, uint64_t fs_base) DUNE_HIDDEN;
/* the vCPU's descriptor and run area, where one is held (driver's) */
void dune_vcpu_release(struct dune_vcpu *v) DUNE_HIDDEN;
void dune_vcpu_free(struct dune_vcpu *v) DUNE_HIDDEN;
int dune_vcpu_spare_put(struct dune_vcpu *v) DUNE_HIDDEN;
void dune_vcpu_forget_spares(void) DUNE_HIDDEN;
int dune_enter_c(struct dune_enter_regs *r) DUNE_HIDDEN;
void dune_regs_of_tf(struct kvm_regs *r, const struct dune_tf *tf) DUNE_HIDDEN;

/* vcpu_run.c: runs vCPU v until the thread exits; does not return */
void dune_vcpu_loop(void *v) DUNE_HIDDEN;

/* syscall.c: performs the guest's system call in v->tf; 1 if the frame
 * must not be written back (the vCPU's registers were set instead) */
int dune_handle_syscall(struct dune_vcpu *v) DUNE_HIDDEN;
/* the calls dune_handle_syscall() need not see (bit per number): dune.ko
 * may make them in the kernel */
void dune_syscalls_not_special(uint64_t allowed[8]) DUNE_HIDDEN;

/* probe.c: 0 if /dev/kvm runs guest code at hardware speed, else a
 * dune_fail() code */
int dune_speed_probe(void) DUNE_HIDDEN;

/* fd.c: libdune's own descriptors, out of the program's way */
int dune_hide_fd(int fd) DUNE_HIDDEN; /* moves fd high, cloexec; the new fd */
void dune_close_fd(int fd) DUNE_HIDDEN;
int dune_owns_fd(long fd) DUNE_HIDDEN;
long dune_close_range_around(unsigned long first, unsigned long last,
			     unsigned long flags) DUNE_HIDDEN;

/* error.c */
extern char dune_errbuf[256] DUNE_HIDDEN; /* what dune_strerror() says */
void dune_write_str(const char *s) DUNE_HIDDEN; /* to stderr */
/* Records the reason for dune_strerror(), prints it unless DUNE_QUIET, and
 * returns err. */
__attribute__((format(printf, 2, 3))) int dune_fail(int err, const char *fmt,
						     ...) DUNE_HIDDEN;
__attribute__((noreturn)) void dune_die_by_signal(int sig) DUNE_HIDDEN;
extern int dune_fail_quiet DUNE_HIDDEN; /* dune_fail() records, never prints */
/*
 * libdune's environment variables, read by dune_init on the host before
 * the program enters the guest, and never again: once in the guest the
 * program may point environ at memory only the guest can read (under
 * Dangless a setenv moves it into alias space), and the host side reads
 * it in a fork child (git's setenv, then a fork to run a command) or on
 * a late error.
 */
struct dune_env {
	bool read;
	bool quiet;              /* DUNE_QUIET: dune_fail() prints nothing */
	bool no_kernel_syscalls; /* DUNE_NO_KERNEL_SYSCALLS: dune.ko's calls exit */
	bool allow_no_hwvirt;    /* DUNE_ALLOW_NO_HWVIRT: a software /dev/kvm */
	int ipi;                 /* DUNE_IPI: interrupts between vCPUs: 1 asked
				  * for, 0 refused ("0"), -1 unset: the
				  * driver's default (dune.ko on, KVM off) */
	int paging;              /* DUNE_PAGING: 4 or 5; 0 not set, -1 bad */
};
extern struct dune_env dune_env DUNE_HIDDEN;
void dune_env_read(void) DUNE_HIDDEN;

/* CR4.LA57 (57-bit linear addresses, 5-level paging) and where CPUID
 * says the CPU has it: leaf 7, subleaf 0, ECX */
#define DUNE_CR4_LA57 (1ULL << 12)
#define DUNE_CPUID7_ECX_LA57 (1u << 16)

/* the host's own XCR0 (what user mode runs with) */
static inline uint64_t dune_host_xcr0(void)
{
	uint32_t lo, hi;
	__asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
	return ((uint64_t)hi << 32) | lo;
}
/* XCR0 components libdune's 8 KiB (and KVM's 4 KiB) save areas hold:
 * x87 SSE AVX MPX AVX-512 PKRU, no AMX */
#define DUNE_XCR0_MAX 0x2ffULL

/* vm.c */
ptent_t *dune_pool_alloc(void) DUNE_HIDDEN;
uint64_t dune_pool_pa(const void *p) DUNE_HIDDEN;
void *dune_pool_va(uint64_t pa) DUNE_HIDDEN;
int dune_install_chunk_mapping(uint64_t chunk, uint64_t gpa) DUNE_HIDDEN;
bool dune_chunk_in_pt(uint64_t va) DUNE_HIDDEN;

/* guest.c */
void dune_guest_syscall(struct dune_tf *tf) DUNE_HIDDEN;
void dune_guest_trap(struct dune_tf *tf) DUNE_HIDDEN;
int dune_guest_map_chunk(uint64_t va) DUNE_HIDDEN;

static inline long dune_sys6(long n, long a1, long a2, long a3, long a4,
			     long a5, long a6)
{
	long ret;
	register long r10 __asm__("r10") = a4;
	register long r8 __asm__("r8") = a5;
	register long r9 __asm__("r9") = a6;
	__asm__ volatile("syscall"
			 : "=a"(ret)
			 : "a"(n), "D"(a1), "S"(a2), "d"(a3), "r"(r10),
			   "r"(r8), "r"(r9)
			 : "rcx", "r11", "memory");
	return ret;
}
#define dune_sys0(n) dune_sys6(n, 0, 0, 0, 0, 0, 0)
#define dune_sys1(n, a) dune_sys6(n, (long)(a), 0, 0, 0, 0, 0)
#define dune_sys2(n, a, b) dune_sys6(n, (long)(a), (long)(b), 0, 0, 0, 0)
#define dune_sys3(n, a, b, c)                                                  \
	dune_sys6(n, (long)(a), (long)(b), (long)(c), 0, 0, 0)

static inline struct dune_vcpu *dune_cur_vcpu(void)
{
	struct dune_vcpu *v;
	__asm__ volatile("mov %%gs:0, %0" : "=r"(v));
	return v;
}

/* The local APIC in x2APIC mode (Intel SDM vol. 3, 11.12; AMD APM vol. 2,
 * 16.11): its registers are MSRs. */
#define DUNE_MSR_APIC_BASE 0x1b
#define DUNE_APIC_BASE_BSP (1ULL << 8)
#define DUNE_APIC_BASE_EXTD (1ULL << 10) /* x2APIC mode */
#define DUNE_APIC_BASE_EN (1ULL << 11)
#define DUNE_APIC_DEFAULT_BASE 0xfee00000ULL
#define DUNE_MSR_X2APIC_EOI 0x80b
#define DUNE_MSR_X2APIC_ICR 0x830
#define DUNE_APIC_ICR_ASSERT (1ULL << 14)
#define DUNE_APIC_SVR 0xf0 /* in struct kvm_lapic_state's register page */
#define DUNE_APIC_SVR_ENABLE 0x100

static inline void dune_wrmsr(uint32_t msr, uint64_t val)
{
	__asm__ volatile("wrmsr"
			 :
			 : "c"(msr), "a"((uint32_t)val), "d"((uint32_t)(val >> 32))
			 : "memory");
}

static inline void dune_outb(uint16_t port)
{
	__asm__ volatile("outb %%al, %%dx" : : "a"(0), "d"(port) : "memory");
}

#endif
