/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/* What the files of dune.ko share. */
#ifndef DUNE_INTERNAL_H
#define DUNE_INTERNAL_H

#include <linux/atomic.h>
#include <linux/bitmap.h>
#include <linux/kref.h>
#include <linux/mmu_notifier.h>
#include <linux/mutex.h>
#include <linux/spinlock.h>
#include <linux/types.h>
#include <linux/xarray.h>
#include <asm/svm.h>

#include "dune_abi.h"

#define DUNE_NAME "dune"

/* Module-wide counters (DUNE_GET_STATS); live_* must be 0 at unload. */
struct dune_counters {
	atomic64_t live_vms, live_vcpus, live_pages;
	atomic64_t vmruns, npt_faults, npt_zaps, syscalls, ipis;
};
extern struct dune_counters dune_counters;

struct page *dune_alloc_page(void);
void dune_free_page(struct page *page);

struct dune_region_slot {
	bool used;
	bool readonly;
	u64 gpa, uaddr, size;
};

struct dune_vm {
	struct kref ref;
	struct mm_struct *mm;           /* the opener's; held by the notifier */
	struct mmu_notifier notifier;
	bool notifier_registered;

	struct mutex regions_lock;      /* serialises DUNE_SET_REGION */
	/*
	 * mmu_lock protects the regions' contents as the fault path and the
	 * notifiers read them, the NPT, and the invalidation counters.
	 */
	spinlock_t mmu_lock;
	struct dune_region_slot regions[DUNE_MAX_REGIONS];
	unsigned int regions_end;       /* slots at and above are unused */
	struct page *npt_root;
	unsigned long invalidations_running; /* notifier start..end pairs open */
	unsigned long invalidation_seq;      /* bumped by every start and end */
	bool mm_gone;                        /* notifier ->release ran */

	/* vCPUs share the NPT: a zap bumps tlb_gen and kicks running ones. */
	atomic64_t tlb_gen;
	spinlock_t vcpus_lock;
	struct list_head vcpus;
	unsigned int nr_vcpus;
	/* APIC ID -> vCPU (ipi.c); a vCPU found here under vcpus_lock stays
	 * until that lock is dropped, as its release erases it under it. */
	struct xarray apic_ids;

	/* DUNE_SET_SYSCALLS */
	spinlock_t syscalls_lock;
	unsigned int syscall_port;
	DECLARE_BITMAP(syscalls_allowed, DUNE_SYSCALLS_MAX);

	/* Page-table pages allocated before mmu_lock is taken. */
	struct page *pt_cache[4];
	unsigned int pt_cached;
};

/*
 * The guest's general-purpose registers that neither VMCB nor VMCS holds:
 * all but RSP.  The vendor's entry code (svm_run.S, vmx_run.S) loads and
 * saves rbx..r15 through this, at these offsets; RAX is here for both (SVM
 * copies it to and from the VMCB around VMRUN, VMX has no field for it).
 */
struct dune_guest_gprs {
	u64 rbx, rcx, rdx, rsi, rdi, rbp;
	u64 r8, r9, r10, r11, r12, r13, r14, r15;
	u64 rax;
};

/* svm.c's part of a vCPU */
struct dune_svm_vcpu {
	struct page *vmcb_page;
	struct vmcb *vmcb;
	u64 asid_generation;
};

/* vmx.c's part of a vCPU: the guest's state lives here between runs (the
 * VMCS can be read and written only on the CPU that has it loaded). */
struct dune_vmx_guest {
	u64 rsp, rip, rflags;
	u64 cr0, cr2, cr3, cr4, efer;    /* cr0, cr4: as the guest sees them */
	u64 gdt_base, idt_base, tr_base;
	u32 gdt_limit, idt_limit, tr_limit;
	u64 fs_base, gs_base, kernel_gs_base;
	u64 star, lstar, cstar, sfmask;
};

struct dune_vmx_vcpu {
	struct page *vmcs_page;
	struct list_head loaded_node;   /* on its CPU's list while loaded */
	int vmcs_cpu;                   /* where the VMCS is active, or -1 */
	bool launched;                  /* VMLAUNCH done since the last VMCLEAR */
	bool vmcs_setup;                /* the fixed fields are written */
	bool segs_reset;                /* write the flat segments again */
	bool intr_window;               /* the VMCS asks for interrupt-window exits */
	bool state_dirty;               /* guest changed by SET_STATE: rewrite */
	bool rip_dirty;                 /* RIP moved past an instruction */
	u16 vpid;
	u32 event_inj, event_inj_err, event_inj_len; /* to re-inject, or 0 */
	u64 host_cr3, host_cr4;         /* what the VMCS has now */
	struct dune_vmx_guest g;
};

struct dune_vcpu {
	struct dune_vm *vm;
	struct list_head node;          /* in vm->vcpus */
	struct mutex run_lock;          /* one thread runs it at a time */
	struct dune_guest_gprs gprs;
	int running_cpu;                /* -1 unless between entry and exit */
	int last_cpu;
	u64 tlb_gen_seen;
	bool state_undefined;           /* after a shutdown, until SET_STATE */
	u32 apic_id;                    /* DUNE_APIC_ID_NONE until set */
	/* vectors sent to it and not yet handed to the guest (ipi.c) */
	DECLARE_BITMAP(ipi_pending, 256);
	union {
		struct dune_svm_vcpu svm;
		struct dune_vmx_vcpu vmx;
	};
};

/*
 * The guest-physical map's entry format (npt.c builds it, the vendor's
 * hardware walks it): AMD's nested page tables use the x86 PTE format,
 * Intel's EPT its own (R/W/X in bits 0-2, memory type in 3-5, no A/D
 * unless enabled).  Both put a 2 MiB leaf's PS at bit 7 and the address in
 * bits 12-51.
 */
struct dune_gpm_format {
	u64 present;    /* any of these bits: the entry is in use */
	u64 table;      /* a non-leaf entry's bits */
	u64 leaf;       /* a leaf's bits for a read (and fetch) */
	u64 leaf_write; /* added for a writable leaf */
	bool huge;      /* 2 MiB leaves are possible */
};

/*
 * The vendor seam, in the manner of KVM's kvm_x86_ops: everything that
 * differs between AMD SVM (svm.c) and Intel VMX (vmx.c).  main.c picks one
 * at load (dune_vendor); the device, regions, guest-physical map, MMU
 * notifier, in-kernel system calls and counters are shared.
 */
struct dune_vendor_ops {
	const char *name;               /* for the log: "AMD SVM", "Intel VT-x" */
	/* at load: 0, or the reason (logged) why this CPU cannot serve */
	int (*check_cpu)(void);
	int (*init)(void);              /* at module load, after check_cpu */
	void (*exit)(void);             /* at unload */
	/*
	 * SVM/VMX is switched on lazily, per CPU, by vcpu_run; every VM holds
	 * it (main.c counts them) and when the last one goes this switches it
	 * off on every CPU, so that KVM may have it.
	 */
	void (*disable_all)(void);
	int (*vcpu_init)(struct dune_vcpu *vcpu);
	void (*vcpu_destroy)(struct dune_vcpu *vcpu);
	void (*vcpu_get_state)(struct dune_vcpu *vcpu, struct dune_vcpu_state *st);
	int (*vcpu_set_state)(struct dune_vcpu *vcpu, const struct dune_vcpu_state *st);
	int (*vcpu_run)(struct dune_vcpu *vcpu, struct dune_exit *exit);
	const struct dune_gpm_format *gpm;
};

extern const struct dune_vendor_ops dune_svm_ops, dune_vmx_ops;
extern const struct dune_vendor_ops *dune_vendor;
extern unsigned int dune_phys_bits;

/* main.c */
void dune_kick_nothing(void *unused);
void dune_kick_vcpus(struct dune_vm *vm);
bool dune_canonical(u64 addr);
void dune_host_machine_check(void);

/* npt.c: the guest-physical map (NPT or EPT) */
extern const struct mmu_notifier_ops dune_mmu_notifier_ops;
int dune_npt_init(struct dune_vm *vm);
void dune_npt_destroy(struct dune_vm *vm);
int dune_npt_set_region(struct dune_vm *vm, const struct dune_region *r);
/* 0: mapped (re-enter); 1: not ours to map (exit to user space); <0: error.
 * error_code in the #NPF format (X86_PF_WRITE, X86_PF_RSVD). */
int dune_npt_fault(struct dune_vm *vm, u64 gpa, u64 error_code);

/* ipi.c: interrupts between vCPUs */
#define DUNE_MSR_X2APIC_EOI 0x80b
#define DUNE_MSR_X2APIC_ICR 0x830
int dune_ipi_set_apic_id(struct dune_vcpu *vcpu, unsigned long id);
void dune_ipi_forget(struct dune_vcpu *vcpu);
/* a WRMSR the module handles in the kernel: true, else the guest's exit */
bool dune_ipi_wrmsr(struct dune_vcpu *vcpu, u32 msr, u64 value);
/* after running_cpu's store and a full barrier: the highest pending
 * vector, taken off; or -1 */
int dune_ipi_take(struct dune_vcpu *vcpu);
static inline bool dune_ipi_any(const struct dune_vcpu *vcpu)
{
	return !bitmap_empty(vcpu->ipi_pending, 256);
}

/* syscall.c */
enum { DUNE_SYSCALL_USER, DUNE_SYSCALL_DONE, DUNE_SYSCALL_INTERRUPTED };
void dune_syscalls_module_init(void);
int dune_set_syscalls(struct dune_vm *vm, struct dune_syscalls *req);
int dune_syscall_in_kernel(struct dune_vcpu *vcpu);

/* svm_run.S */
void dune_svm_enter(struct dune_guest_gprs *gprs, u64 guest_vmcb_pa,
		    u64 host_save_pa);

/* vmx_run.S: 0 after a VM exit, 1 if VMLAUNCH/VMRESUME failed */
int dune_vmx_enter(struct dune_guest_gprs *gprs, bool resume, u64 spec_ctrl,
		   bool restore_spec_ctrl);
void dune_vmx_call_nmi(void (*handler)(void));

#endif
