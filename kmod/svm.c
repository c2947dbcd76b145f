// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * AMD SVM behind the vendor seam (dune_svm_ops): the CPU checks, SVM on
 * and off per CPU, a VMCB per vCPU and the VMRUN loop.
 *
 * SVM is switched on lazily, on a CPU the first time a vCPU runs there, and
 * off on every CPU when the last VM is closed, so that KVM can use SVM
 * whenever no /dev/dune VM exists (and the other way round: whichever sets
 * EFER.SVME first on a CPU has it, the other gets EBUSY).
 */
#define pr_fmt(fmt) "dune: " fmt

#include <linux/cpuhotplug.h>
#include <linux/mem_encrypt.h>
#include <linux/mm.h>
#include <linux/percpu.h>
#include <linux/sched/signal.h>
#include <linux/smp.h>
#include <linux/version.h>
#include <asm/cpufeature.h>
#include <asm/fpu/api.h>
#include <asm/io.h>
#include <asm/mce.h>
#include <asm/msr.h>
#include <asm/processor.h>
#include <asm/svm.h>

#include "dune_internal.h"

struct dune_cpu {
	struct page *hsave;     /* VM_HSAVE_PA: VMRUN's host state */
	struct page *host_save; /* VMSAVE/VMLOAD of the host's other state */
	bool svm_on;            /* this module set EFER.SVME here */
	u64 asid_generation;
	unsigned int next_asid;
};
static DEFINE_PER_CPU(struct dune_cpu, dune_cpus);

static unsigned int dune_max_asid;
static bool dune_have_nrips;
static struct page *dune_iopm, *dune_msrpm;
static int dune_cpuhp_state = -1;

/* The offsets svm_run.S uses. */
static_assert(offsetof(struct dune_guest_gprs, rbx) == 0);
static_assert(offsetof(struct dune_guest_gprs, rdi) == 32);
static_assert(offsetof(struct dune_guest_gprs, rbp) == 40);
static_assert(offsetof(struct dune_guest_gprs, r8) == 48);
static_assert(offsetof(struct dune_guest_gprs, r15) == 104);

static __always_inline void dune_clgi(void)
{
	asm volatile("clgi" ::: "memory");
}

static __always_inline void dune_stgi(void)
{
	asm volatile("stgi" ::: "memory");
}

#define IOPM_ORDER 2  /* 12 KiB used */
#define MSRPM_ORDER 1 /* 8 KiB */

static u64 dune_pa(struct page *page)
{
	return __sme_set(page_to_phys(page));
}

static void dune_count_svme(void *busy)
{
	u64 efer;

	rdmsrl(MSR_EFER, efer);
	if (efer & EFER_SVME)
		atomic_inc(busy);
}

static int dune_svm_check_cpu(void)
{
	atomic_t busy = ATOMIC_INIT(0);
	u64 vm_cr;

	if (!boot_cpu_has(X86_FEATURE_SVM)) {
		pr_err("this CPU is not supported: dune.ko needs AMD SVM or Intel VT-x, and it has neither (in a VM, give it the svm or vmx flag)\n");
		return -ENODEV;
	}
	rdmsrl(MSR_VM_CR, vm_cr);
	if (vm_cr & SVM_VM_CR_SVM_DIS_MASK) {
		pr_err("SVM is disabled by the firmware (VM_CR.SVMDIS): enable SVM/virtualization in the BIOS setup\n");
		return -ENODEV;
	}
	if (!boot_cpu_has(X86_FEATURE_NPT)) {
		pr_err("this CPU is not supported: dune.ko needs AMD SVM with nested paging (NPT)\n");
		return -ENODEV;
	}
	on_each_cpu(dune_count_svme, &busy, 1);
	if (atomic_read(&busy)) {
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 12, 0)
		/* KVM holds SVM from its load by default since 6.12 */
		const char *why = "kvm_amd is loaded, with kvm.enable_virt_at_load=1, the default since 6.12, or a KVM virtual machine is running";
		const char *fix = "unload kvm_amd or reload kvm with enable_virt_at_load=0";
#else
		const char *why = "a KVM virtual machine is running?";
		const char *fix = "stop it";
#endif
		pr_err("SVM is in use by another hypervisor (EFER.SVME is set on %d CPU(s); %s): %s, then load dune.ko again\n",
		       atomic_read(&busy), why, fix);
		return -EBUSY;
	}
	return 0;
}

/* With interrupts off: SVM on for this CPU, or -EBUSY if someone else has it. */
static int dune_cpu_enable(struct dune_cpu *c)
{
	u64 efer;

	rdmsrl(MSR_EFER, efer);
	if (efer & EFER_SVME)
		return c->svm_on ? 0 : -EBUSY;
	wrmsrl(MSR_VM_HSAVE_PA, dune_pa(c->hsave));
	wrmsrl(MSR_EFER, efer | EFER_SVME);
	c->svm_on = true;
	/* Whoever used SVM here before may have left entries for any ASID. */
	c->asid_generation++;
	c->next_asid = dune_max_asid + 1;
	return 0;
}

static void dune_cpu_disable(void *unused)
{
	struct dune_cpu *c = this_cpu_ptr(&dune_cpus);
	u64 efer;

	if (!c->svm_on)
		return;
	c->svm_on = false;
	rdmsrl(MSR_EFER, efer);
	wrmsrl(MSR_VM_HSAVE_PA, 0);
	wrmsrl(MSR_EFER, efer & ~EFER_SVME);
}

static int dune_cpu_offline(unsigned int cpu)
{
	dune_cpu_disable(NULL);
	return 0;
}

static void dune_svm_disable_all(void)
{
	on_each_cpu(dune_cpu_disable, NULL, 1);
}

/* Lets the guest use the MSRs that VMLOAD/VMSAVE swap; all others exit. */
static void dune_msrpm_allow(u8 *msrpm, u32 msr)
{
	u32 base, off;

	if (msr < 0x2000)
		base = 0, off = msr;
	else if (msr >= 0xc0000000 && msr < 0xc0002000)
		base = 0x800, off = msr - 0xc0000000;
	else
		return;
	off *= 2;
	msrpm[base + off / 8] &= ~(3u << (off % 8));
}

static void dune_svm_module_exit(void);

static int dune_svm_module_init(void)
{
	static const u32 swapped_msrs[] = {
		MSR_FS_BASE, MSR_GS_BASE, MSR_KERNEL_GS_BASE, MSR_STAR,
		MSR_LSTAR, MSR_CSTAR, MSR_SYSCALL_MASK, MSR_IA32_SYSENTER_CS,
		MSR_IA32_SYSENTER_ESP, MSR_IA32_SYSENTER_EIP,
	};
	unsigned int cpu, i;
	int ret;

	dune_max_asid = cpuid_ebx(0x8000000a) - 1;
	if (dune_max_asid < 1) {
		pr_err("this CPU reports no ASIDs for guests (CPUID 8000000A EBX)\n");
		return -ENODEV;
	}
	dune_have_nrips = boot_cpu_has(X86_FEATURE_NRIPS);

	dune_iopm = alloc_pages(GFP_KERNEL, IOPM_ORDER);
	dune_msrpm = alloc_pages(GFP_KERNEL, MSRPM_ORDER);
	if (!dune_iopm || !dune_msrpm)
		goto nomem;
	memset(page_address(dune_iopm), 0xff, PAGE_SIZE << IOPM_ORDER);
	memset(page_address(dune_msrpm), 0xff, PAGE_SIZE << MSRPM_ORDER);
	for (i = 0; i < ARRAY_SIZE(swapped_msrs); i++)
		dune_msrpm_allow(page_address(dune_msrpm), swapped_msrs[i]);

	for_each_possible_cpu(cpu) {
		struct dune_cpu *c = per_cpu_ptr(&dune_cpus, cpu);

		c->hsave = alloc_page(GFP_KERNEL | __GFP_ZERO);
		c->host_save = alloc_page(GFP_KERNEL | __GFP_ZERO);
		if (!c->hsave || !c->host_save)
			goto nomem;
	}
	ret = cpuhp_setup_state_nocalls(CPUHP_AP_ONLINE_DYN, "dune:online",
					NULL, dune_cpu_offline);
	if (ret < 0) {
		dune_svm_module_exit();
		return ret;
	}
	dune_cpuhp_state = ret;
	return 0;
nomem:
	dune_svm_module_exit();
	return -ENOMEM;
}

static void dune_svm_module_exit(void)
{
	unsigned int cpu;

	if (dune_cpuhp_state >= 0)
		cpuhp_remove_state_nocalls(dune_cpuhp_state);
	dune_cpuhp_state = -1;
	on_each_cpu(dune_cpu_disable, NULL, 1);
	for_each_possible_cpu(cpu) {
		struct dune_cpu *c = per_cpu_ptr(&dune_cpus, cpu);

		if (c->hsave)
			__free_page(c->hsave);
		if (c->host_save)
			__free_page(c->host_save);
		c->hsave = c->host_save = NULL;
	}
	if (dune_iopm)
		__free_pages(dune_iopm, IOPM_ORDER);
	if (dune_msrpm)
		__free_pages(dune_msrpm, MSRPM_ORDER);
	dune_iopm = dune_msrpm = NULL;
}

static void dune_set_intercept(struct vmcb *vmcb, unsigned int bit)
{
	vmcb->control.intercepts[bit / 32] |= 1u << (bit % 32);
}

static void dune_flat_segment(struct vmcb_seg *s, u16 sel, u16 attrib)
{
	s->selector = sel;
	s->attrib = attrib;
	s->limit = 0xffffffff;
	s->base = 0;
}

/* VMCB segment attributes: type[3:0] S[4] DPL[6:5] P[7] AVL[8] L[9] DB[10] G[11] */
#define SEG_CODE64 0xa9b /* execute/read, accessed, S, P, L, G */
#define SEG_DATA   0xc93 /* read/write, accessed, S, P, DB, G */
#define SEG_TSS64  0x08b /* busy 64-bit TSS, P */

static void dune_vmcb_init(struct dune_vcpu *vcpu)
{
	struct vmcb *vmcb = vcpu->svm.vmcb;
	struct vmcb_control_area *ctl = &vmcb->control;
	struct vmcb_save_area *save = &vmcb->save;
	static const unsigned int intercepts[] = {
		INTERCEPT_INTR, INTERCEPT_NMI, INTERCEPT_INIT, INTERCEPT_RDPMC,
		INTERCEPT_RSM, INTERCEPT_INVD, INTERCEPT_HLT, INTERCEPT_INVLPGA,
		INTERCEPT_IOIO_PROT, INTERCEPT_MSR_PROT, INTERCEPT_TASK_SWITCH,
		INTERCEPT_FERR_FREEZE, INTERCEPT_SHUTDOWN, INTERCEPT_VMRUN,
		INTERCEPT_VMMCALL, INTERCEPT_VMLOAD, INTERCEPT_VMSAVE,
		INTERCEPT_STGI, INTERCEPT_CLGI, INTERCEPT_SKINIT,
		INTERCEPT_WBINVD, INTERCEPT_MONITOR, INTERCEPT_MWAIT,
		INTERCEPT_MWAIT_COND, INTERCEPT_XSETBV,
	};
	unsigned int i;

	memset(vmcb, 0, PAGE_SIZE);
	for (i = 0; i < ARRAY_SIZE(intercepts); i++)
		dune_set_intercept(vmcb, intercepts[i]);
	/* DR0-3 are not swapped by VMRUN: the guest must not see or set the host's. */
	ctl->intercepts[INTERCEPT_DR] = 0xffffffff;
	/* A machine check in guest mode is the host's hardware error, not the
	 * guest's exception: see the exit below. */
	dune_set_intercept(vmcb, INTERCEPT_EXCEPTION_OFFSET + MC_VECTOR);
	ctl->iopm_base_pa = dune_pa(dune_iopm);
	ctl->msrpm_base_pa = dune_pa(dune_msrpm);
	ctl->int_ctl = V_INTR_MASKING_MASK;
	ctl->nested_ctl = SVM_NESTED_CTL_NP_ENABLE;
	ctl->nested_cr3 = dune_pa(vcpu->vm->npt_root);

	dune_flat_segment(&save->cs, 0x08, SEG_CODE64);
	dune_flat_segment(&save->ds, 0x10, SEG_DATA);
	dune_flat_segment(&save->es, 0x10, SEG_DATA);
	dune_flat_segment(&save->ss, 0x10, SEG_DATA);
	dune_flat_segment(&save->fs, 0x10, SEG_DATA);
	dune_flat_segment(&save->gs, 0x10, SEG_DATA);
	save->tr.selector = 0x18;
	save->tr.attrib = SEG_TSS64;
	save->tr.limit = 0x67;
	save->cpl = 0;
	save->cr0 = X86_CR0_PG | X86_CR0_WP | X86_CR0_NE | X86_CR0_ET |
		    X86_CR0_MP | X86_CR0_PE;
	save->cr4 = X86_CR4_PAE | X86_CR4_OSFXSR | X86_CR4_OSXMMEXCPT;
	save->efer = EFER_LME | EFER_LMA | EFER_SVME;
	save->rflags = X86_EFLAGS_FIXED;
	save->dr6 = 0xffff0ff0; /* architectural reset values */
	save->dr7 = 0x400;
	save->g_pat = 0x0007040600070406ull;
	vcpu->state_undefined = false;
	vcpu->last_cpu = -1; /* ASID 0 is the host's: take one at the next run */
}

static int dune_svm_vcpu_init(struct dune_vcpu *vcpu)
{
	vcpu->svm.vmcb_page = dune_alloc_page();
	if (!vcpu->svm.vmcb_page)
		return -ENOMEM;
	vcpu->svm.vmcb = page_address(vcpu->svm.vmcb_page);
	dune_vmcb_init(vcpu);
	return 0;
}

static void dune_svm_vcpu_destroy(struct dune_vcpu *vcpu)
{
	if (vcpu->svm.vmcb_page)
		dune_free_page(vcpu->svm.vmcb_page);
	vcpu->svm.vmcb_page = NULL;
	vcpu->svm.vmcb = NULL;
}

static void dune_svm_vcpu_get_state(struct dune_vcpu *vcpu, struct dune_vcpu_state *st)
{
	const struct vmcb_save_area *s = &vcpu->svm.vmcb->save;
	const struct dune_guest_gprs *g = &vcpu->gprs;
	struct dune_regs *r = &st->regs;
	struct dune_sregs *sr = &st->sregs;

	memset(st, 0, sizeof(*st));
	r->rax = g->rax, r->rsp = s->rsp, r->rip = s->rip, r->rflags = s->rflags;
	r->rbx = g->rbx, r->rcx = g->rcx, r->rdx = g->rdx, r->rsi = g->rsi;
	r->rdi = g->rdi, r->rbp = g->rbp, r->r8 = g->r8, r->r9 = g->r9;
	r->r10 = g->r10, r->r11 = g->r11, r->r12 = g->r12, r->r13 = g->r13;
	r->r14 = g->r14, r->r15 = g->r15;
	sr->cr0 = s->cr0, sr->cr2 = s->cr2, sr->cr3 = s->cr3, sr->cr4 = s->cr4;
	sr->efer = s->efer & ~EFER_SVME;
	sr->gdt_base = s->gdtr.base, sr->gdt_limit = s->gdtr.limit;
	sr->idt_base = s->idtr.base, sr->idt_limit = s->idtr.limit;
	sr->fs_base = s->fs.base, sr->gs_base = s->gs.base;
	sr->kernel_gs_base = s->kernel_gs_base;
	sr->star = s->star, sr->lstar = s->lstar, sr->cstar = s->cstar;
	sr->sfmask = s->sfmask;
	sr->tr_base = s->tr.base, sr->tr_limit = s->tr.limit;
}

static int dune_svm_vcpu_set_state(struct dune_vcpu *vcpu,
				   const struct dune_vcpu_state *st)
{
	const struct dune_regs *r = &st->regs;
	const struct dune_sregs *sr = &st->sregs;
	struct vmcb_save_area *s = &vcpu->svm.vmcb->save;
	struct dune_guest_gprs *g = &vcpu->gprs;

	if (vcpu->state_undefined)
		dune_vmcb_init(vcpu);
	/* The caller's state replaces the guest's: an event that was being
	 * delivered belongs to the old one (see dune_requeue_event). */
	vcpu->svm.vmcb->control.event_inj = 0;
	g->rax = r->rax, s->rsp = r->rsp, s->rip = r->rip;
	s->rflags = r->rflags | X86_EFLAGS_FIXED;
	g->rbx = r->rbx, g->rcx = r->rcx, g->rdx = r->rdx, g->rsi = r->rsi;
	g->rdi = r->rdi, g->rbp = r->rbp, g->r8 = r->r8, g->r9 = r->r9;
	g->r10 = r->r10, g->r11 = r->r11, g->r12 = r->r12, g->r13 = r->r13;
	g->r14 = r->r14, g->r15 = r->r15;
	s->cr0 = sr->cr0, s->cr2 = sr->cr2, s->cr3 = sr->cr3, s->cr4 = sr->cr4;
	s->efer = sr->efer | EFER_SVME;
	s->gdtr.base = sr->gdt_base, s->gdtr.limit = sr->gdt_limit;
	s->idtr.base = sr->idt_base, s->idtr.limit = sr->idt_limit;
	s->fs.base = sr->fs_base, s->gs.base = sr->gs_base;
	s->kernel_gs_base = sr->kernel_gs_base;
	s->star = sr->star, s->lstar = sr->lstar, s->cstar = sr->cstar;
	s->sfmask = sr->sfmask;
	s->tr.base = sr->tr_base, s->tr.limit = sr->tr_limit;
	return 0;
}

/*
 * A fresh ASID on this CPU instead of a flush: after a migration, a
 * generation change or an NPT zap.  When the CPU runs out, every ASID is
 * flushed and handed out again.
 */
static u8 dune_pick_asid(struct dune_vcpu *vcpu, struct dune_cpu *c, int cpu,
			 u64 tlb_gen)
{
	u8 tlb_ctl = TLB_CONTROL_DO_NOTHING;

	if (vcpu->last_cpu == cpu && vcpu->svm.asid_generation == c->asid_generation &&
	    vcpu->tlb_gen_seen == tlb_gen)
		return tlb_ctl;
	if (c->next_asid > dune_max_asid) {
		c->asid_generation++;
		c->next_asid = 1;
		tlb_ctl = TLB_CONTROL_FLUSH_ALL_ASID;
	}
	vcpu->svm.vmcb->control.asid = c->next_asid++;
	vcpu->svm.asid_generation = c->asid_generation;
	vcpu->last_cpu = cpu;
	vcpu->tlb_gen_seen = tlb_gen;
	return tlb_ctl;
}

static void dune_skip_instruction(struct vmcb *vmcb, unsigned int len)
{
	if (dune_have_nrips && vmcb->control.next_rip)
		vmcb->save.rip = vmcb->control.next_rip;
	else
		vmcb->save.rip += len;
}

/*
 * An exit can interrupt the delivery of an event through the guest's IDT
 * (a nested page fault on the IDT or the stack, a host interrupt): the CPU
 * reports it in EXITINTINFO and, as the APM (15.7.2) requires of the
 * hypervisor, it is delivered again at the next VMRUN.  Software interrupts
 * and the #BP/#OF traps of INT3/INTO are left out: RIP still points at
 * their instruction, which raises them again when it runs.
 *
 * An interrupt can only be one of ipi.c's vectors (nothing else interrupts
 * these guests): it goes back to the pending ones, to be offered again as
 * the virtual interrupt, unless it still is one.  QEMU leaves V_IRQ set
 * when the delivery of a virtual interrupt exits, and reports it as an
 * exception with that vector, which no CPU has above 31 and which it would
 * refuse to inject (SVM_EXIT_ERR).
 */
static void dune_requeue_event(struct dune_vcpu *vcpu)
{
	struct vmcb_control_area *ctl = &vcpu->svm.vmcb->control;
	u32 info = ctl->exit_int_info;
	u32 type = info & SVM_EXITINTINFO_TYPE_MASK;
	u8 vector = info & SVM_EXITINTINFO_VEC_MASK;

	ctl->event_inj = 0;
	if (!(info & SVM_EXITINTINFO_VALID) || type == SVM_EXITINTINFO_TYPE_SOFT ||
	    (type == SVM_EXITINTINFO_TYPE_EXEPT && (vector == BP_VECTOR || vector == OF_VECTOR)))
		return;
	if (type == SVM_EXITINTINFO_TYPE_INTR ||
	    (type == SVM_EXITINTINFO_TYPE_EXEPT && vector >= 32)) {
		if (!(ctl->int_ctl & V_IRQ_MASK) || ctl->int_vector != vector)
			set_bit(vector, vcpu->ipi_pending);
		return;
	}
	ctl->event_inj = info;
	ctl->event_inj_err = ctl->exit_int_info_err;
}

/*
 * A vector sent to this vCPU (ipi.c) becomes the virtual interrupt, which
 * the guest takes through its IDT when its RFLAGS.IF allows
 * (V_INTR_MASKING) and the CPU then clears; one at a time.  Not EVENTINJ:
 * that would deliver it whatever IF says, and QEMU's emulation of VMRUN
 * delivers an injected interrupt twice now and then (Documentation/
 * libdune.md, "Interrupts between vCPUs").
 */
static void dune_svm_offer_ipi(struct dune_vcpu *vcpu)
{
	struct vmcb_control_area *ctl = &vcpu->svm.vmcb->control;
	int vector;

	if (ctl->int_ctl & V_IRQ_MASK)
		return; /* the last one is not taken yet */
	vector = dune_ipi_take(vcpu);
	if (vector < 0)
		return;
	ctl->int_vector = vector;
	ctl->int_ctl |= V_IRQ_MASK | V_IGN_TPR_MASK | (0xfu << V_INTR_PRIO_SHIFT);
}

static int dune_svm_vcpu_run(struct dune_vcpu *vcpu, struct dune_exit *exit)
{
	struct dune_vm *vm = vcpu->vm;
	struct vmcb *vmcb = vcpu->svm.vmcb;
	u64 vmcb_pa = dune_pa(vcpu->svm.vmcb_page);
	int ret;

	if (vcpu->state_undefined)
		return -EINVAL;
	memset(exit, 0, sizeof(*exit));
	for (;;) {
		struct dune_cpu *c;
		u32 code;
		int cpu;

		/*
		 * Signals, and work the kernel does on the way back to user mode
		 * (task work such as a deferred fput, rseq): user space, then
		 * run again.
		 */
		if (signal_pending(current) || test_thread_flag(TIF_NOTIFY_RESUME))
			return -EINTR;
		cond_resched();

		preempt_disable();
		local_irq_disable();
		cpu = smp_processor_id();
		c = this_cpu_ptr(&dune_cpus);
		ret = dune_cpu_enable(c);
		if (ret) {
			local_irq_enable();
			preempt_enable();
			return ret;
		}
		/* The guest shares the process's FPU registers: have them loaded. */
		if (test_thread_flag(TIF_NEED_FPU_LOAD))
			switch_fpu_return();
		WRITE_ONCE(vcpu->running_cpu, cpu);
		smp_mb(); /* running_cpu set before tlb_gen is read (dune_kick_vcpus) */
		vmcb->control.tlb_ctl =
			dune_pick_asid(vcpu, c, cpu, atomic64_read(&vm->tlb_gen));
		dune_svm_offer_ipi(vcpu);
		vmcb->control.clean = 0;

		vmcb->save.rax = vcpu->gprs.rax;
		dune_clgi();
		dune_svm_enter(&vcpu->gprs, vmcb_pa, dune_pa(c->host_save));
		dune_stgi();
		vcpu->gprs.rax = vmcb->save.rax;
		WRITE_ONCE(vcpu->running_cpu, -1);
		local_irq_enable(); /* a host interrupt that ended the run is taken here */
		preempt_enable();
		atomic64_inc(&dune_counters.vmruns);

		code = vmcb->control.exit_code;
		dune_requeue_event(vcpu);
		switch (code) {
		case SVM_EXIT_INTR:
		case SVM_EXIT_NMI:
			continue;
		case SVM_EXIT_EXCP_BASE + MC_VECTOR:
			dune_host_machine_check();
			continue; /* a fatal one has left a signal pending */
		case SVM_EXIT_NPF:
			ret = dune_npt_fault(vm, vmcb->control.exit_info_2,
					     vmcb->control.exit_info_1);
			if (ret == 0)
				continue;
			if (ret < 0)
				return ret;
			exit->reason = DUNE_EXIT_NPF;
			exit->gpa = vmcb->control.exit_info_2;
			exit->error_code = vmcb->control.exit_info_1;
			break;
		case SVM_EXIT_VMMCALL:
			dune_skip_instruction(vmcb, 3);
			exit->reason = DUNE_EXIT_VMMCALL;
			break;
		case SVM_EXIT_IOIO: {
			u32 io = vmcb->control.exit_info_1;
			u16 port = io >> 16;

			/* `in` and string I/O: nothing here to emulate them with */
			if (io & (SVM_IOIO_TYPE_MASK | SVM_IOIO_STR_MASK | SVM_IOIO_REP_MASK)) {
				exit->reason = DUNE_EXIT_INTERCEPT;
				break;
			}
			vmcb->save.rip = vmcb->control.exit_info_2; /* the next instruction */
			if (port && port == READ_ONCE(vm->syscall_port)) {
				switch (dune_syscall_in_kernel(vcpu)) {
				case DUNE_SYSCALL_DONE:
					continue;
				case DUNE_SYSCALL_INTERRUPTED:
					exit->flags |= DUNE_EXIT_F_SYSCALL_INTERRUPTED;
					break;
				}
			}
			exit->reason = DUNE_EXIT_IO;
			exit->port = port;
			exit->size = (io >> SVM_IOIO_SIZE_SHIFT) & 7;
			break;
		}
		case SVM_EXIT_MSR:
			/* WRMSR (info1 1) of the x2APIC registers ipi.c keeps */
			if (vmcb->control.exit_info_1 == 1 &&
			    dune_ipi_wrmsr(vcpu, vcpu->gprs.rcx,
					   vcpu->gprs.rdx << 32 | (u32)vcpu->gprs.rax)) {
				dune_skip_instruction(vmcb, 2);
				continue;
			}
			exit->reason = DUNE_EXIT_INTERCEPT;
			break;
		case SVM_EXIT_HLT:
			dune_skip_instruction(vmcb, 1);
			exit->reason = DUNE_EXIT_HLT;
			break;
		case SVM_EXIT_SHUTDOWN:
			/* The VMCB is undefined after a shutdown: a new state is needed. */
			vcpu->state_undefined = true;
			exit->reason = DUNE_EXIT_SHUTDOWN;
			break;
		case (u32)SVM_EXIT_ERR:
			exit->reason = DUNE_EXIT_INVALID;
			break;
		default:
			exit->reason = DUNE_EXIT_INTERCEPT;
			break;
		}
		exit->svm_exit_code = ((u64)vmcb->control.exit_code_hi << 32) | code;
		exit->info1 = vmcb->control.exit_info_1;
		exit->info2 = vmcb->control.exit_info_2;
		return 0;
	}
}

/* Nested page tables: x86 PTEs, walked as user accesses (U set). */
static const struct dune_gpm_format dune_npt_format = {
	.present = _PAGE_PRESENT,
	.table = _PAGE_PRESENT | _PAGE_RW | _PAGE_USER | _PAGE_ACCESSED,
	/*
	 * Accessed (and, when writable, dirty) are set when an entry is made,
	 * as KVM does: nothing reads them, and the CPU's walker then never
	 * writes an entry the zap path may be clearing (TCG's walker sets
	 * them with a plain read-modify-write that could put a zapped entry
	 * back).
	 */
	.leaf = _PAGE_PRESENT | _PAGE_USER | _PAGE_ACCESSED,
	.leaf_write = _PAGE_RW | _PAGE_DIRTY,
	.huge = true,
};

const struct dune_vendor_ops dune_svm_ops = {
	.name = "AMD SVM with nested paging",
	.check_cpu = dune_svm_check_cpu,
	.init = dune_svm_module_init,
	.exit = dune_svm_module_exit,
	.disable_all = dune_svm_disable_all,
	.vcpu_init = dune_svm_vcpu_init,
	.vcpu_destroy = dune_svm_vcpu_destroy,
	.vcpu_get_state = dune_svm_vcpu_get_state,
	.vcpu_set_state = dune_svm_vcpu_set_state,
	.vcpu_run = dune_svm_vcpu_run,
	.gpm = &dune_npt_format,
};
