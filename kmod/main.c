// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * dune.ko: /dev/dune, a VM per open descriptor whose guest-physical memory
 * is the opening process's own, and vCPU descriptors that run it (the ABI:
 * dune_abi.h).  Every ioctl works only from the process (mm) that opened
 * /dev/dune, so a descriptor passed to or inherited by another process
 * reaches nothing of it.
 *
 * What differs between AMD SVM and Intel VT-x is behind one ops table
 * (struct dune_vendor_ops: svm.c, vmx.c), picked here at load from CPUID;
 * this file, npt.c (the guest-physical map and its MMU notifier) and
 * syscall.c are shared.
 */
#define pr_fmt(fmt) "dune: " fmt

#include <linux/anon_inodes.h>
#include <linux/file.h>
#include <linux/fs.h>
#include <linux/miscdevice.h>
#include <linux/module.h>
#include <linux/sched/mm.h>
#include <linux/slab.h>
#include <linux/uaccess.h>
#include <asm/cpufeature.h>
#include <asm/mce.h>

#include "dune_internal.h"

#define DUNE_MAX_VCPUS 1024

struct dune_counters dune_counters;
const struct dune_vendor_ops *dune_vendor;
unsigned int dune_phys_bits;

/* VMs holding SVM/VMX on (DUNE_GET_STATS's svm_users) */
static unsigned int dune_hw_users;
static DEFINE_MUTEX(dune_hw_users_lock);

static void dune_hw_get(void)
{
	mutex_lock(&dune_hw_users_lock);
	dune_hw_users++;
	mutex_unlock(&dune_hw_users_lock);
}

static void dune_hw_put(void)
{
	mutex_lock(&dune_hw_users_lock);
	if (--dune_hw_users == 0)
		dune_vendor->disable_all();
	mutex_unlock(&dune_hw_users_lock);
}

bool dune_canonical(u64 addr)
{
	return __is_canonical_address(addr, boot_cpu_data.x86_virt_bits);
}

/* An IPI's whole work: arriving, which ends a guest run on that CPU. */
void dune_kick_nothing(void *unused)
{
}

/* After a guest-physical map zap: no vCPU of vm may go on with the old
 * translations. */
void dune_kick_vcpus(struct dune_vm *vm)
{
	struct dune_vcpu *vcpu;

	smp_mb__after_atomic(); /* tlb_gen bumped before running_cpu is read */
	spin_lock(&vm->vcpus_lock);
	list_for_each_entry(vcpu, &vm->vcpus, node) {
		int cpu = READ_ONCE(vcpu->running_cpu);

		/* The IPI ends its guest run; its next entry flushes (a new
		 * ASID on SVM, INVEPT on VMX). */
		if (cpu >= 0)
			smp_call_function_single(cpu, dune_kick_nothing, NULL, 1);
	}
	spin_unlock(&vm->vcpus_lock);
}

/*
 * The CPU does not call the host's #MC handler for a machine check that
 * the intercept turned into an exit; call it as for one taken in user mode
 * (the guest is the process's code), so that the error is logged and the
 * process, not the kernel, pays for a poisoned page.  As KVM does.  The
 * rigs cannot raise a machine check: untested there.
 */
void dune_host_machine_check(void)
{
#ifdef CONFIG_X86_MCE
	struct pt_regs regs = { .cs = 3, .flags = X86_EFLAGS_IF };

	do_machine_check(&regs);
#endif
}

/* RFLAGS bits a guest may hold (reserved ones and VM/VIF/VIP excluded). */
#define DUNE_RFLAGS_ALLOWED                                                   \
	(X86_EFLAGS_CF | X86_EFLAGS_FIXED | X86_EFLAGS_PF | X86_EFLAGS_AF |   \
	 X86_EFLAGS_ZF | X86_EFLAGS_SF | X86_EFLAGS_TF | X86_EFLAGS_IF |      \
	 X86_EFLAGS_DF | X86_EFLAGS_OF | X86_EFLAGS_IOPL | X86_EFLAGS_NT |    \
	 X86_EFLAGS_RF | X86_EFLAGS_AC | X86_EFLAGS_ID)

/* What the ABI (dune_abi.h) allows of DUNE_VCPU_SET_STATE, on either vendor. */
static int dune_check_state(const struct dune_vcpu_state *st)
{
	const struct dune_regs *r = &st->regs;
	const struct dune_sregs *sr = &st->sregs;
	unsigned int i;

	for (i = 0; i < ARRAY_SIZE(sr->reserved); i++)
		if (sr->reserved[i])
			return -EINVAL;
	if ((sr->cr0 & DUNE_CR0_REQUIRED) != DUNE_CR0_REQUIRED ||
	    (sr->cr0 >> 32) || (sr->cr0 & (X86_CR0_CD | X86_CR0_NW)))
		return -EINVAL;
	if ((sr->cr4 & DUNE_CR4_REQUIRED) != DUNE_CR4_REQUIRED ||
	    (sr->cr4 & ~DUNE_CR4_ALLOWED))
		return -EINVAL;
	if ((sr->efer & DUNE_EFER_REQUIRED) != DUNE_EFER_REQUIRED ||
	    (sr->efer & ~DUNE_EFER_ALLOWED))
		return -EINVAL;
	if (sr->cr3 >> dune_phys_bits)
		return -EINVAL;
	if (r->rflags & ~(u64)DUNE_RFLAGS_ALLOWED)
		return -EINVAL;
	if (!dune_canonical(r->rip) || !dune_canonical(sr->gdt_base) ||
	    !dune_canonical(sr->idt_base) || !dune_canonical(sr->fs_base) ||
	    !dune_canonical(sr->gs_base) || !dune_canonical(sr->kernel_gs_base) ||
	    !dune_canonical(sr->lstar) || !dune_canonical(sr->cstar) ||
	    !dune_canonical(sr->tr_base) || (sr->sfmask >> 32))
		return -EINVAL;
	/* A 64-bit TSS is 0x68 bytes; a larger limit covers an I/O bitmap. */
	if (sr->tr_limit < 0x67 || sr->tr_limit > 0xffff)
		return -EINVAL;

	return 0;
}

struct page *dune_alloc_page(void)
{
	struct page *page = alloc_page(GFP_KERNEL_ACCOUNT | __GFP_ZERO);

	if (page)
		atomic64_inc(&dune_counters.live_pages);
	return page;
}

void dune_free_page(struct page *page)
{
	__free_page(page);
	atomic64_dec(&dune_counters.live_pages);
}

static void dune_vm_destroy(struct kref *ref)
{
	struct dune_vm *vm = container_of(ref, struct dune_vm, ref);

	if (vm->notifier_registered)
		mmu_notifier_unregister(&vm->notifier, vm->mm);
	dune_npt_destroy(vm);
	xa_destroy(&vm->apic_ids); /* empty: each vCPU's release erased its ID */
	dune_hw_put();
	kfree(vm);
	atomic64_dec(&dune_counters.live_vms);
}

static void dune_vm_put(struct dune_vm *vm)
{
	kref_put(&vm->ref, dune_vm_destroy);
}

/* ---- vCPU descriptors ---- */

static int dune_vcpu_release(struct inode *inode, struct file *file)
{
	struct dune_vcpu *vcpu = file->private_data;
	struct dune_vm *vm = vcpu->vm;

	spin_lock(&vm->vcpus_lock);
	list_del(&vcpu->node);
	vm->nr_vcpus--;
	dune_ipi_forget(vcpu);
	spin_unlock(&vm->vcpus_lock);
	dune_vendor->vcpu_destroy(vcpu);
	kfree(vcpu);
	atomic64_dec(&dune_counters.live_vcpus);
	dune_vm_put(vm);
	return 0;
}

static long dune_vcpu_ioctl(struct file *file, unsigned int cmd,
			    unsigned long arg)
{
	struct dune_vcpu *vcpu = file->private_data;
	void __user *uarg = (void __user *)arg;
	struct dune_vcpu_state state;
	struct dune_exit exit;
	long ret;

	if (vcpu->vm->mm != current->mm)
		return -EPERM;
	if (cmd != DUNE_VCPU_GET_STATE && cmd != DUNE_VCPU_SET_STATE &&
	    cmd != DUNE_VCPU_RUN && cmd != DUNE_VCPU_SET_APIC_ID)
		return -ENOTTY;
	if (cmd == DUNE_VCPU_SET_STATE && copy_from_user(&state, uarg, sizeof(state)))
		return -EFAULT;
	if (cmd == DUNE_VCPU_RUN) {
		/* The one field user space writes: read it now, before the run. */
		if (get_user(exit.immediate_exit,
			     (u8 __user *)uarg + offsetof(struct dune_exit, immediate_exit)))
			return -EFAULT;
		if (exit.immediate_exit)
			return -EINTR;
	}
	if (mutex_lock_killable(&vcpu->run_lock))
		return -EINTR;
	switch (cmd) {
	case DUNE_VCPU_GET_STATE:
		dune_vendor->vcpu_get_state(vcpu, &state);
		ret = 0;
		break;
	case DUNE_VCPU_SET_STATE:
		ret = dune_check_state(&state);
		if (!ret)
			ret = dune_vendor->vcpu_set_state(vcpu, &state);
		break;
	case DUNE_VCPU_SET_APIC_ID:
		ret = dune_ipi_set_apic_id(vcpu, arg);
		break;
	default:
		ret = dune_vendor->vcpu_run(vcpu, &exit);
		break;
	}
	mutex_unlock(&vcpu->run_lock);
	if (ret)
		return ret;
	if (cmd == DUNE_VCPU_GET_STATE && copy_to_user(uarg, &state, sizeof(state)))
		return -EFAULT;
	if (cmd == DUNE_VCPU_RUN && copy_to_user(uarg, &exit, sizeof(exit)))
		return -EFAULT;
	return 0;
}

static const struct file_operations dune_vcpu_fops = {
	.owner = THIS_MODULE,
	.release = dune_vcpu_release,
	.unlocked_ioctl = dune_vcpu_ioctl,
	.llseek = noop_llseek,
};

static int dune_create_vcpu(struct dune_vm *vm)
{
	struct dune_vcpu *vcpu;
	int fd, ret;

	vcpu = kzalloc(sizeof(*vcpu), GFP_KERNEL_ACCOUNT);
	if (!vcpu)
		return -ENOMEM;
	vcpu->vm = vm;
	vcpu->running_cpu = -1;
	vcpu->last_cpu = -1;
	vcpu->apic_id = DUNE_APIC_ID_NONE;
	mutex_init(&vcpu->run_lock);
	ret = dune_vendor->vcpu_init(vcpu);
	if (ret)
		goto free;
	spin_lock(&vm->vcpus_lock);
	if (vm->nr_vcpus >= DUNE_MAX_VCPUS) {
		spin_unlock(&vm->vcpus_lock);
		ret = -ENOSPC;
		goto free;
	}
	vm->nr_vcpus++;
	list_add(&vcpu->node, &vm->vcpus);
	spin_unlock(&vm->vcpus_lock);
	kref_get(&vm->ref);
	atomic64_inc(&dune_counters.live_vcpus);

	fd = anon_inode_getfd("dune-vcpu", &dune_vcpu_fops, vcpu, O_RDWR | O_CLOEXEC);
	if (fd < 0) {
		/* Never seen by user space: undo as its release would. */
		spin_lock(&vm->vcpus_lock);
		list_del(&vcpu->node);
		vm->nr_vcpus--;
		spin_unlock(&vm->vcpus_lock);
		atomic64_dec(&dune_counters.live_vcpus);
		dune_vm_put(vm);
		ret = fd;
		goto free;
	}
	return fd;
free:
	dune_vendor->vcpu_destroy(vcpu);
	kfree(vcpu);
	return ret;
}

/* ---- /dev/dune ---- */

static void dune_get_stats(struct dune_module_stats *st)
{
	memset(st, 0, sizeof(*st));
	st->live_vms = atomic64_read(&dune_counters.live_vms);
	st->live_vcpus = atomic64_read(&dune_counters.live_vcpus);
	st->live_pages = atomic64_read(&dune_counters.live_pages);
	st->svm_users = READ_ONCE(dune_hw_users); /* VMX users on Intel */
	st->vmruns = atomic64_read(&dune_counters.vmruns);
	st->npt_faults = atomic64_read(&dune_counters.npt_faults);
	st->npt_zaps = atomic64_read(&dune_counters.npt_zaps);
	st->syscalls = atomic64_read(&dune_counters.syscalls);
	st->ipis = atomic64_read(&dune_counters.ipis);
}

static int dune_open(struct inode *inode, struct file *file)
{
	struct dune_vm *vm;
	int ret;

	if (!current->mm)
		return -EINVAL;
	vm = kzalloc(sizeof(*vm), GFP_KERNEL_ACCOUNT);
	if (!vm)
		return -ENOMEM;
	kref_init(&vm->ref);
	mutex_init(&vm->regions_lock);
	spin_lock_init(&vm->mmu_lock);
	spin_lock_init(&vm->vcpus_lock);
	spin_lock_init(&vm->syscalls_lock);
	INIT_LIST_HEAD(&vm->vcpus);
	xa_init(&vm->apic_ids);
	atomic64_set(&vm->tlb_gen, 1);
	vm->mm = current->mm;
	dune_hw_get();
	atomic64_inc(&dune_counters.live_vms);

	ret = dune_npt_init(vm);
	if (ret)
		goto fail;
	vm->notifier.ops = &dune_mmu_notifier_ops;
	ret = mmu_notifier_register(&vm->notifier, vm->mm);
	if (ret)
		goto fail;
	vm->notifier_registered = true;
	file->private_data = vm;
	return 0;
fail:
	dune_vm_put(vm);
	return ret;
}

static int dune_release(struct inode *inode, struct file *file)
{
	dune_vm_put(file->private_data);
	return 0;
}

static long dune_ioctl(struct file *file, unsigned int cmd, unsigned long arg)
{
	struct dune_vm *vm = file->private_data;
	void __user *uarg = (void __user *)arg;

	switch (cmd) {
	case DUNE_GET_ABI_VERSION:
		return DUNE_ABI_VERSION;
	case DUNE_GET_STATS: {
		struct dune_module_stats st;

		dune_get_stats(&st);
		return copy_to_user(uarg, &st, sizeof(st)) ? -EFAULT : 0;
	}
	case DUNE_SET_REGION: {
		struct dune_region r;

		if (vm->mm != current->mm)
			return -EPERM;
		if (copy_from_user(&r, uarg, sizeof(r)))
			return -EFAULT;
		return dune_npt_set_region(vm, &r);
	}
	case DUNE_CREATE_VCPU:
		if (vm->mm != current->mm)
			return -EPERM;
		return dune_create_vcpu(vm);
	case DUNE_SET_SYSCALLS: {
		struct dune_syscalls sc;
		int ret;

		if (vm->mm != current->mm)
			return -EPERM;
		if (copy_from_user(&sc, uarg, sizeof(sc)))
			return -EFAULT;
		ret = dune_set_syscalls(vm, &sc);
		if (ret)
			return ret;
		return copy_to_user(uarg, &sc, sizeof(sc)) ? -EFAULT : 0;
	}
	default:
		return -ENOTTY;
	}
}

static const struct file_operations dune_fops = {
	.owner = THIS_MODULE,
	.open = dune_open,
	.release = dune_release,
	.unlocked_ioctl = dune_ioctl,
	.llseek = noop_llseek,
};

/* 0600 root until a udev rule gives it to group dune (kmod/60-dune.rules). */
static struct miscdevice dune_misc = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = "dune",
	.fops = &dune_fops,
	.mode = 0600,
};

static int __init dune_init(void)
{
	int ret;

	/* SVM first: a CPU never has both, but an odd VM might say so */
	dune_vendor = boot_cpu_has(X86_FEATURE_SVM) || !boot_cpu_has(X86_FEATURE_VMX) ?
		&dune_svm_ops : &dune_vmx_ops;
	/* both maps have four levels: 48 bits of guest-physical space at most */
	dune_phys_bits = min_t(unsigned int, boot_cpu_data.x86_phys_bits, 48);
	ret = dune_vendor->check_cpu();
	if (ret)
		return ret;
	ret = dune_vendor->init();
	if (ret)
		return ret;
	dune_syscalls_module_init();
	ret = misc_register(&dune_misc);
	if (ret) {
		pr_err("cannot register /dev/dune (%d)\n", ret);
		dune_vendor->exit();
		return ret;
	}
	pr_info("loaded: /dev/dune ABI %d, %s, %u-bit guest-physical addresses\n",
		DUNE_ABI_VERSION, dune_vendor->name, dune_phys_bits);
	return 0;
}

static void __exit dune_exit(void)
{
	s64 vms, vcpus, pages;

	misc_deregister(&dune_misc);
	dune_vendor->exit();
	vms = atomic64_read(&dune_counters.live_vms);
	vcpus = atomic64_read(&dune_counters.live_vcpus);
	pages = atomic64_read(&dune_counters.live_pages);
	if (vms || vcpus || pages)
		pr_err("LEAK at unload: %lld VMs, %lld vCPUs, %lld pages still counted\n",
		       vms, vcpus, pages);
	else
		pr_info("unloaded, nothing leaked (0 VMs, 0 vCPUs, 0 pages; %lld guest entries)\n",
			(s64)atomic64_read(&dune_counters.vmruns));
}

module_init(dune_init);
module_exit(dune_exit);
MODULE_LICENSE("Dual MIT/GPL");
MODULE_DESCRIPTION("Dune: processes in guest ring 0 (AMD SVM, Intel VT-x)");
