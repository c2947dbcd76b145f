/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/* What the files of dune.ko share. */
#ifndef DUNE_INTERNAL_H
#define DUNE_INTERNAL_H

#include <linux/atomic.h>
#include <linux/kref.h>
#include <linux/mmu_notifier.h>
#include <linux/mutex.h>
#include <linux/spinlock.h>
#include <linux/types.h>
#include <asm/svm.h>

#include "dune_abi.h"

#define DUNE_NAME "dune"

/* Module-wide counters (DUNE_GET_STATS); live_* must be 0 at unload. */
struct dune_counters {
	atomic64_t live_vms, live_vcpus, live_pages;
	atomic64_t vmruns, npt_faults, npt_zaps, syscalls;
};
extern struct dune_counters dune_counters;
extern unsigned int dune_svm_users;

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

	/* DUNE_SET_SYSCALLS */
	spinlock_t syscalls_lock;
	unsigned int syscall_port;
	DECLARE_BITMAP(syscalls_allowed, DUNE_SYSCALLS_MAX);

	/* Page-table pages allocated before mmu_lock is taken. */
	struct page *pt_cache[4];
	unsigned int pt_cached;
};

struct dune_guest_gprs { /* saved and restored by dune_svm_enter */
	u64 rbx, rcx, rdx, rsi, rdi, rbp;
	u64 r8, r9, r10, r11, r12, r13, r14, r15;
};

struct dune_vcpu {
	struct dune_vm *vm;
	struct list_head node;          /* in vm->vcpus */
	struct mutex run_lock;          /* one thread runs it at a time */
	struct page *vmcb_page;
	struct vmcb *vmcb;
	struct dune_guest_gprs gprs;
	int running_cpu;                /* -1 unless between entry and exit */
	int last_cpu;
	u64 asid_generation;
	u64 tlb_gen_seen;
	bool state_undefined;           /* after a shutdown, until SET_STATE */
};

/* svm.c */
int dune_svm_check_cpu(void);
int dune_svm_module_init(void);
void dune_svm_module_exit(void);
int dune_svm_get(void);
void dune_svm_put(void);
int dune_vcpu_init(struct dune_vcpu *vcpu);
void dune_vcpu_destroy(struct dune_vcpu *vcpu);
void dune_vcpu_get_state(struct dune_vcpu *vcpu, struct dune_vcpu_state *st);
int dune_vcpu_set_state(struct dune_vcpu *vcpu, const struct dune_vcpu_state *st);
int dune_vcpu_run(struct dune_vcpu *vcpu, struct dune_exit *exit);
void dune_kick_vcpus(struct dune_vm *vm);
extern unsigned int dune_phys_bits;

/* npt.c */
extern const struct mmu_notifier_ops dune_mmu_notifier_ops;
int dune_npt_init(struct dune_vm *vm);
void dune_npt_destroy(struct dune_vm *vm);
int dune_npt_set_region(struct dune_vm *vm, const struct dune_region *r);
/* 0: mapped (re-enter); 1: not ours to map (exit to user space); <0: error */
int dune_npt_fault(struct dune_vm *vm, u64 gpa, u64 error_code);

/* syscall.c */
enum { DUNE_SYSCALL_USER, DUNE_SYSCALL_DONE, DUNE_SYSCALL_INTERRUPTED };
void dune_syscalls_module_init(void);
int dune_set_syscalls(struct dune_vm *vm, struct dune_syscalls *req);
int dune_syscall_in_kernel(struct dune_vcpu *vcpu);

/* svm_run.S */
void dune_svm_enter(struct dune_guest_gprs *gprs, u64 guest_vmcb_pa,
		    u64 host_save_pa);

#endif
