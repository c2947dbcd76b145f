// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * Intel VT-x behind the vendor seam (dune_vmx_ops): the CPU checks, VMX
 * on and off per CPU, a VMCS per vCPU, EPT, and the VMLAUNCH/VMRESUME loop.
 *
 * As on SVM, VMX is switched on lazily (VMXON on a CPU the first time a
 * vCPU runs there) and off on every CPU when the last VM is closed, so
 * that KVM can have it whenever no /dev/dune VM exists.  Whoever sets
 * CR4.VMXE first on a CPU has VMX there: kvm_intel checks it the same way
 * (on 6.1 it holds VMX only while it has VMs; since 6.12 from its load,
 * unless kvm.enable_virt_at_load=0), the other gets EBUSY.
 *
 * A VMCS can be read and written only on the CPU that has it current, and
 * must be VMCLEARed there before another CPU loads it: each CPU keeps the
 * list of VMCSs active on it (VMCLEARed when it goes offline or VMX goes
 * off), and a vCPU that moves has its VMCS cleared on the old CPU by an
 * IPI.  The guest's state therefore lives in struct dune_vmx_guest between
 * runs: written into the VMCS when DUNE_VCPU_SET_STATE changed it, read
 * back after every exit.
 *
 * What the guest sees is what the SVM half gives it (dune_abi.h): 64-bit
 * ring 0, flat segments, the host's CPUID (CPUID always exits on VMX: it
 * runs here on the host), the host's XCR0, TSC and FPU registers.  Exits
 * reach user space with the SVM exit code of the same event in
 * svm_exit_code (vmmcall 0x81, NPF 0x400, ...; 0x10000 + the VMX exit
 * reason where SVM has none), so that user space reads one format.  The
 * hypercall instruction is vmcall; vmmcall raises #UD in the guest.
 */
#define pr_fmt(fmt) "dune: " fmt

#include <linux/cpuhotplug.h>
#include <linux/hw_breakpoint.h>
#include <linux/mm.h>
#include <linux/percpu.h>
#include <linux/sched/signal.h>
#include <linux/smp.h>
#include <linux/version.h>
#include <asm/cpu_entry_area.h>
#include <asm/cpufeature.h>
#include <asm/debugreg.h>
#include <asm/desc.h>
#include <asm/fpu/api.h>
#include <asm/idtentry.h>
#include <asm/io.h>
#include <asm/msr.h>
#include <asm/nospec-branch.h>
#include <asm/processor.h>
#include <asm/tlbflush.h>
#include <asm/trap_pf.h>
#include <asm/tsc.h>
#include <asm/vmx.h>

#include "dune_internal.h"

/* The #NPF error code's bits for where a nested fault happened (APM 15.25.6),
 * given on EPT violations too so that user space reads one format. */
#define DUNE_NPF_FINAL_GPA (1ull << 32)
#define DUNE_NPF_PAGE_WALK (1ull << 33)
/* svm_exit_code for a VMX exit that SVM has no code for */
#define DUNE_VMX_EXIT_CODE(reason) (0x10000ull + (reason))

struct dune_vmx_cpu {
	struct page *vmxon_page;
	bool vmx_on;                   /* this module did VMXON here */
	struct list_head loaded;       /* vCPUs whose VMCS is active here */
	struct dune_vcpu *current_vcpu; /* whose VMCS is current here */
};
static DEFINE_PER_CPU(struct dune_vmx_cpu, dune_vmx_cpus);

/* What the CPU offers, read once at load. */
static struct {
	u32 revision;
	u32 pin, proc, proc2, exit, entry;
	u64 cr0_fixed0, cr0_fixed1, cr4_fixed0, cr4_fixed1;
	u64 ept_vpid_cap;
	bool vpid, invept_single, invvpid_single, invvpid_all, ept_huge;
	bool l1d_flush;
	u32 preemption_timer;          /* its value for DUNE_VMX_BACKSTOP_US, or 0 */
} dune_vmx;

/*
 * The VMX-preemption timer ends every guest run after this long: a
 * backstop behind external-interrupt exiting, which on hardware ends a run
 * at the first host interrupt.  Bochs (the Intel rig) lets a host
 * interrupt end a guest run only if the guest entered or later ran with
 * RFLAGS.IF set (it re-evaluates its interrupt masking when IF changes,
 * and at entry before it counts as guest mode), so a guest spinning with
 * IF clear would hold its CPU for ever.  One exit per host timer tick
 * costs little on hardware.
 */
#define DUNE_VMX_BACKSTOP_US 4000

/* The host's values of what VMX does not switch (the same on every CPU). */
static u64 dune_host_star, dune_host_lstar, dune_host_cstar, dune_host_sfmask;
static u64 dune_host_efer, dune_host_pat;
static u32 dune_host_sysenter_cs;
static u64 dune_host_sysenter_eip;

static struct page *dune_msr_bitmap;
static int dune_vmx_cpuhp_state = -1;

/* VPIDs 1..65535 for vCPUs; 0 is the host's (no VPID: flush at each entry). */
#define DUNE_VPIDS 65536
static DECLARE_BITMAP(dune_vpids, DUNE_VPIDS);
static DEFINE_SPINLOCK(dune_vpids_lock);

extern const char dune_vmx_exit_point[];

/* ---- VMX instructions ---- */

static __always_inline bool dune_vmxon(u64 pa)
{
	bool fail;

	asm volatile("vmxon %1; setna %0" : "=qm"(fail) : "m"(pa) : "cc", "memory");
	return fail;
}

static __always_inline void dune_vmxoff(void)
{
	asm volatile("vmxoff" ::: "cc", "memory");
}

static __always_inline bool dune_vmclear(u64 pa)
{
	bool fail;

	asm volatile("vmclear %1; setna %0" : "=qm"(fail) : "m"(pa) : "cc", "memory");
	return fail;
}

static __always_inline bool dune_vmptrld(u64 pa)
{
	bool fail;

	asm volatile("vmptrld %1; setna %0" : "=qm"(fail) : "m"(pa) : "cc", "memory");
	return fail;
}

static __always_inline u64 dune_vmread(unsigned long field)
{
	u64 value;

	asm volatile("vmread %1, %0" : "=rm"(value) : "r"(field) : "cc");
	return value;
}

static void dune_vmwrite(unsigned long field, u64 value)
{
	bool fail;

	asm volatile("vmwrite %1, %2; setna %0"
		     : "=qm"(fail) : "rm"(value), "r"(field) : "cc");
	if (unlikely(fail))
		pr_err_ratelimited("VMWRITE of field 0x%lx failed (VM-instruction error %llu)\n",
				   field, dune_vmread(VM_INSTRUCTION_ERROR));
}

static void dune_invept(unsigned long type, u64 eptp)
{
	struct { u64 eptp, zero; } desc = { eptp, 0 };

	asm volatile("invept %0, %1" : : "m"(desc), "r"(type) : "cc", "memory");
}

static void dune_invvpid(unsigned long type, u16 vpid)
{
	struct { u64 vpid, gva; } desc = { vpid, 0 };

	asm volatile("invvpid %0, %1" : : "m"(desc), "r"(type) : "cc", "memory");
}

static u64 dune_vmx_pa(struct page *page)
{
	return page_to_phys(page);
}

static u64 dune_vmx_eptp(struct dune_vm *vm)
{
	return dune_vmx_pa(vm->npt_root) | VMX_EPTP_PWL_4 | VMX_EPTP_MT_WB;
}

/* ---- the CPU's capabilities ---- */

/* Controls: `want` must be possible, `opt` where it is; the MSR says which
 * bits must be 1 (low half) and which may be (high half). */
static int dune_vmx_adjust(u32 want, u32 opt, u32 msr, u32 *out, const char *what)
{
	u32 lo, hi, ctl;

	rdmsr(msr, lo, hi);
	ctl = ((want | opt) & hi) | lo;
	if ((ctl & want) != want) {
		pr_err("this CPU is not supported: its VT-x lacks %s controls 0x%x\n",
		       what, want & ~ctl);
		return -ENODEV;
	}
	*out = ctl;
	return 0;
}

static void dune_count_vmxe(void *busy)
{
	if (cr4_read_shadow() & X86_CR4_VMXE)
		atomic_inc(busy);
}

static int dune_vmx_check_cpu(void)
{
	atomic_t busy = ATOMIC_INIT(0);
	u64 basic, feat;
	u32 proc_unwanted;
	int ret;

	if (!boot_cpu_has(X86_FEATURE_VMX)) {
		/* the kernel clears the flag when the firmware left VMX off */
		pr_err("%s\n", cpuid_ecx(1) & (1u << 5) ?
		       "Intel VT-x is disabled by the firmware (IA32_FEATURE_CONTROL): enable VT-x/virtualization in the BIOS setup" :
		       "this CPU is not supported: dune.ko needs AMD SVM or Intel VT-x, and it has neither (in a VM, give it the svm or vmx flag)");
		return -ENODEV;
	}
	rdmsrl(MSR_IA32_FEAT_CTL, feat);
	if (!(feat & FEAT_CTL_LOCKED) || !(feat & FEAT_CTL_VMX_ENABLED_OUTSIDE_SMX)) {
		pr_err("Intel VT-x is disabled by the firmware (IA32_FEATURE_CONTROL 0x%llx): enable VT-x/virtualization in the BIOS setup\n",
		       feat);
		return -ENODEV;
	}
	rdmsrl(MSR_IA32_VMX_BASIC, basic);
	/* true controls (bit 55), write-back VMCS (bits 53:50 = 6), VMCS <= 4 KiB,
	 * 64-bit physical addresses (bit 48 clear) */
	if (!(basic & (1ull << 55)) || ((basic >> 50) & 0xf) != 6 ||
	    ((basic >> 32) & 0x1fff) > PAGE_SIZE || (basic & (1ull << 48))) {
		pr_err("this CPU is not supported: its VT-x (IA32_VMX_BASIC 0x%llx) lacks true controls or a write-back VMCS\n",
		       basic);
		return -ENODEV;
	}
	dune_vmx.revision = basic & 0x7fffffff;

	ret = dune_vmx_adjust(PIN_BASED_EXT_INTR_MASK | PIN_BASED_NMI_EXITING,
			      PIN_BASED_VMX_PREEMPTION_TIMER,
			      MSR_IA32_VMX_TRUE_PINBASED_CTLS, &dune_vmx.pin, "pin-based");
	if (ret)
		return ret;
	if ((dune_vmx.pin & PIN_BASED_VMX_PREEMPTION_TIMER) && tsc_khz) {
		u64 misc, ticks;

		rdmsrl(MSR_IA32_VMX_MISC, misc);
		ticks = ((u64)tsc_khz * DUNE_VMX_BACKSTOP_US / 1000) >>
			(misc & 0x1f); /* IA32_VMX_MISC[4:0]: TSC bits per tick */
		dune_vmx.preemption_timer = clamp_t(u64, ticks, 1, U32_MAX);
	} else {
		dune_vmx.pin &= ~PIN_BASED_VMX_PREEMPTION_TIMER;
	}
	/*
	 * What SVM intercepts, VMX intercepts: hlt, mwait/monitor, rdpmc, the
	 * debug registers (DR0-3 are not switched), all I/O (the `out` exits),
	 * MSRs but those the guest owns, and CR8 (the real TPR otherwise).
	 */
	ret = dune_vmx_adjust(CPU_BASED_HLT_EXITING | CPU_BASED_MWAIT_EXITING |
			      CPU_BASED_RDPMC_EXITING | CPU_BASED_CR8_LOAD_EXITING |
			      CPU_BASED_CR8_STORE_EXITING | CPU_BASED_MOV_DR_EXITING |
			      CPU_BASED_UNCOND_IO_EXITING | CPU_BASED_USE_MSR_BITMAPS |
			      CPU_BASED_MONITOR_EXITING | CPU_BASED_INTR_WINDOW_EXITING |
			      CPU_BASED_ACTIVATE_SECONDARY_CONTROLS, 0,
			      MSR_IA32_VMX_TRUE_PROCBASED_CTLS, &dune_vmx.proc,
			      "processor-based");
	if (ret)
		return ret;
	/* Wanted above only to know the CPU has it: set while an interrupt
	 * waits for the guest (dune_vmx_offer_ipi).  It is never a default-1
	 * control (SDM vol. 3, A.3.2), so clearing it is allowed. */
	dune_vmx.proc &= ~CPU_BASED_INTR_WINDOW_EXITING;
	proc_unwanted = CPU_BASED_CR3_LOAD_EXITING | CPU_BASED_CR3_STORE_EXITING |
			CPU_BASED_INVLPG_EXITING | CPU_BASED_RDTSC_EXITING |
			CPU_BASED_USE_IO_BITMAPS;
	if (dune_vmx.proc & proc_unwanted) {
		pr_err("this CPU is not supported: its VT-x forces exits on 0x%x (CR3, invlpg or rdtsc)\n",
		       dune_vmx.proc & proc_unwanted);
		return -ENODEV;
	}
	ret = dune_vmx_adjust(SECONDARY_EXEC_ENABLE_EPT,
			      SECONDARY_EXEC_ENABLE_VPID | SECONDARY_EXEC_ENABLE_RDTSCP |
			      SECONDARY_EXEC_ENABLE_INVPCID | SECONDARY_EXEC_WBINVD_EXITING,
			      MSR_IA32_VMX_PROCBASED_CTLS2, &dune_vmx.proc2,
			      "secondary processor-based (EPT)");
	if (ret)
		return ret;
	ret = dune_vmx_adjust(VM_EXIT_HOST_ADDR_SPACE_SIZE | VM_EXIT_LOAD_IA32_PAT |
			      VM_EXIT_LOAD_IA32_EFER, 0,
			      MSR_IA32_VMX_TRUE_EXIT_CTLS, &dune_vmx.exit, "VM-exit");
	if (ret)
		return ret;
	ret = dune_vmx_adjust(VM_ENTRY_IA32E_MODE | VM_ENTRY_LOAD_IA32_PAT |
			      VM_ENTRY_LOAD_IA32_EFER, 0,
			      MSR_IA32_VMX_TRUE_ENTRY_CTLS, &dune_vmx.entry, "VM-entry");
	if (ret)
		return ret;

	rdmsrl(MSR_IA32_VMX_EPT_VPID_CAP, dune_vmx.ept_vpid_cap);
	if (!(dune_vmx.ept_vpid_cap & VMX_EPT_PAGE_WALK_4_BIT) ||
	    !(dune_vmx.ept_vpid_cap & VMX_EPTP_WB_BIT) ||
	    !(dune_vmx.ept_vpid_cap & VMX_EPT_INVEPT_BIT) ||
	    !(dune_vmx.ept_vpid_cap & (VMX_EPT_EXTENT_CONTEXT_BIT | VMX_EPT_EXTENT_GLOBAL_BIT))) {
		pr_err("this CPU is not supported: its EPT (IA32_VMX_EPT_VPID_CAP 0x%llx) lacks 4-level tables, write-back or INVEPT\n",
		       dune_vmx.ept_vpid_cap);
		return -ENODEV;
	}
	dune_vmx.invept_single = dune_vmx.ept_vpid_cap & VMX_EPT_EXTENT_CONTEXT_BIT;
	dune_vmx.ept_huge = dune_vmx.ept_vpid_cap & VMX_EPT_2MB_PAGE_BIT;
	dune_vmx.invvpid_single = (dune_vmx.ept_vpid_cap >> 32) & VMX_VPID_EXTENT_SINGLE_CONTEXT_BIT;
	dune_vmx.invvpid_all = (dune_vmx.ept_vpid_cap >> 32) & VMX_VPID_EXTENT_GLOBAL_CONTEXT_BIT;
	dune_vmx.vpid = (dune_vmx.proc2 & SECONDARY_EXEC_ENABLE_VPID) &&
			((dune_vmx.ept_vpid_cap >> 32) & VMX_VPID_INVVPID_BIT) &&
			(dune_vmx.invvpid_single || dune_vmx.invvpid_all);
	if (!dune_vmx.vpid)
		dune_vmx.proc2 &= ~SECONDARY_EXEC_ENABLE_VPID;

	rdmsrl(MSR_IA32_VMX_CR0_FIXED0, dune_vmx.cr0_fixed0);
	rdmsrl(MSR_IA32_VMX_CR0_FIXED1, dune_vmx.cr0_fixed1);
	rdmsrl(MSR_IA32_VMX_CR4_FIXED0, dune_vmx.cr4_fixed0);
	rdmsrl(MSR_IA32_VMX_CR4_FIXED1, dune_vmx.cr4_fixed1);
	/* paging is on in the guest: PE and PG may be fixed, that is fine */

	/*
	 * L1TF: a guest that controls its own page tables can read what is in
	 * L1D through a not-present entry; the kernel's L1D flush on every
	 * entry is the mitigation (as KVM's l1tf=flush).
	 */
	if (boot_cpu_has_bug(X86_BUG_L1TF)) {
		dune_vmx.l1d_flush = boot_cpu_has(X86_FEATURE_FLUSH_L1D);
		if (!dune_vmx.l1d_flush)
			pr_warn("this CPU is vulnerable to L1TF and has no L1D flush: guests can read the L1 data cache\n");
	}

	on_each_cpu(dune_count_vmxe, &busy, 1);
	if (atomic_read(&busy)) {
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 12, 0)
		/* KVM holds VMX from its load by default since 6.12 */
		const char *why = "kvm_intel is loaded, with kvm.enable_virt_at_load=1, the default since 6.12, or a KVM virtual machine is running";
		const char *fix = "unload kvm_intel or reload kvm with enable_virt_at_load=0 (or boot with kvm.enable_virt_at_load=0)";
#else
		const char *why = "a KVM virtual machine is running?";
		const char *fix = "stop it";
#endif
		pr_err("VT-x is in use by another hypervisor (CR4.VMXE is set on %d CPU(s); %s): %s, then load dune.ko again\n",
		       atomic_read(&busy), why, fix);
		return -EBUSY;
	}
	return 0;
}

/* ---- VMX on and off per CPU ---- */

/* With interrupts off: VMX on for this CPU, or -EBUSY if someone else has it. */
static int dune_vmx_cpu_enable(struct dune_vmx_cpu *c)
{
	if (c->vmx_on)
		return 0;
	if (cr4_read_shadow() & X86_CR4_VMXE)
		return -EBUSY; /* KVM's */
	cr4_set_bits_irqsoff(X86_CR4_VMXE);
	if (dune_vmxon(dune_vmx_pa(c->vmxon_page))) {
		cr4_clear_bits_irqsoff(X86_CR4_VMXE);
		pr_err_ratelimited("VMXON failed on CPU %d\n", smp_processor_id());
		return -EBUSY;
	}
	c->vmx_on = true;
	c->current_vcpu = NULL;
	/* Whoever used VMX here before may have left translations for any
	 * EPTP or VPID. */
	dune_invept(VMX_EPT_EXTENT_GLOBAL, 0);
	if (dune_vmx.vpid && dune_vmx.invvpid_all)
		dune_invvpid(VMX_VPID_EXTENT_ALL_CONTEXT, 0);
	return 0;
}

/* On the VMCS's own CPU, interrupts off. */
static void dune_vmx_clear_here(struct dune_vcpu *vcpu)
{
	struct dune_vmx_cpu *c = this_cpu_ptr(&dune_vmx_cpus);
	struct dune_vmx_vcpu *vmx = &vcpu->vmx;

	if (vmx->vmcs_cpu != smp_processor_id())
		return;
	dune_vmclear(dune_vmx_pa(vmx->vmcs_page));
	list_del(&vmx->loaded_node);
	if (c->current_vcpu == vcpu)
		c->current_vcpu = NULL;
	vmx->launched = false;
	WRITE_ONCE(vmx->vmcs_cpu, -1);
}

static void dune_vmx_clear_ipi(void *vcpu)
{
	dune_vmx_clear_here(vcpu);
}

/* Wherever the vCPU's VMCS is active: VMCLEAR it there.  Process context,
 * interrupts on (an IPI when it is elsewhere). */
static void dune_vmx_clear(struct dune_vcpu *vcpu)
{
	int cpu = READ_ONCE(vcpu->vmx.vmcs_cpu);

	/* an offline CPU cleared its VMCSs on the way down */
	if (cpu >= 0)
		smp_call_function_single(cpu, dune_vmx_clear_ipi, vcpu, 1);
}

static void dune_vmx_cpu_disable(void *unused)
{
	struct dune_vmx_cpu *c = this_cpu_ptr(&dune_vmx_cpus);
	struct dune_vmx_vcpu *vmx, *tmp;
	unsigned long flags;

	local_irq_save(flags);
	list_for_each_entry_safe(vmx, tmp, &c->loaded, loaded_node)
		dune_vmx_clear_here(container_of(vmx, struct dune_vcpu, vmx));
	if (c->vmx_on) {
		dune_vmxoff();
		cr4_clear_bits_irqsoff(X86_CR4_VMXE);
		c->vmx_on = false;
	}
	local_irq_restore(flags);
}

static int dune_vmx_cpu_offline(unsigned int cpu)
{
	dune_vmx_cpu_disable(NULL);
	return 0;
}

static void dune_vmx_disable_all(void)
{
	on_each_cpu(dune_vmx_cpu_disable, NULL, 1);
}

/* The guest owns these MSRs (no exit): FS/GS bases and SYSENTER are in the
 * VMCS, KERNEL_GS_BASE is switched around every run; the syscall MSRs are
 * switched too but only read here (a write exits, as all others). */
static void dune_msr_allow(u8 *bitmap, u32 msr, bool write)
{
	u32 base;

	if (msr < 0x2000)
		base = 0;
	else if (msr >= 0xc0000000 && msr < 0xc0002000)
		base = 1024, msr -= 0xc0000000;
	else
		return;
	__clear_bit(msr, (unsigned long *)(bitmap + base));
	if (write)
		__clear_bit(msr, (unsigned long *)(bitmap + 2048 + base));
}

static int dune_vmx_module_init(void)
{
	static const u32 owned[] = {
		MSR_FS_BASE, MSR_GS_BASE, MSR_KERNEL_GS_BASE,
		MSR_IA32_SYSENTER_CS, MSR_IA32_SYSENTER_ESP, MSR_IA32_SYSENTER_EIP,
	};
	static const u32 readable[] = { MSR_STAR, MSR_LSTAR, MSR_CSTAR, MSR_SYSCALL_MASK };
	unsigned int cpu, i;
	u32 lo, hi;
	int ret;

	rdmsrl(MSR_STAR, dune_host_star);
	rdmsrl(MSR_LSTAR, dune_host_lstar);
	rdmsrl(MSR_CSTAR, dune_host_cstar);
	rdmsrl(MSR_SYSCALL_MASK, dune_host_sfmask);
	rdmsrl(MSR_EFER, dune_host_efer);
	rdmsrl(MSR_IA32_CR_PAT, dune_host_pat);
	rdmsr(MSR_IA32_SYSENTER_CS, lo, hi);
	dune_host_sysenter_cs = lo;
	rdmsrl(MSR_IA32_SYSENTER_EIP, dune_host_sysenter_eip);

	dune_msr_bitmap = alloc_page(GFP_KERNEL);
	if (!dune_msr_bitmap)
		return -ENOMEM;
	memset(page_address(dune_msr_bitmap), 0xff, PAGE_SIZE);
	for (i = 0; i < ARRAY_SIZE(owned); i++)
		dune_msr_allow(page_address(dune_msr_bitmap), owned[i], true);
	for (i = 0; i < ARRAY_SIZE(readable); i++)
		dune_msr_allow(page_address(dune_msr_bitmap), readable[i], false);
	__set_bit(0, dune_vpids);

	for_each_possible_cpu(cpu) {
		struct dune_vmx_cpu *c = per_cpu_ptr(&dune_vmx_cpus, cpu);

		INIT_LIST_HEAD(&c->loaded);
		c->vmxon_page = alloc_page(GFP_KERNEL | __GFP_ZERO);
		if (!c->vmxon_page)
			goto nomem;
		*(u32 *)page_address(c->vmxon_page) = dune_vmx.revision;
	}
	ret = cpuhp_setup_state_nocalls(CPUHP_AP_ONLINE_DYN, "dune:vmx-online",
					NULL, dune_vmx_cpu_offline);
	if (ret < 0)
		goto fail;
	dune_vmx_cpuhp_state = ret;
	return 0;
nomem:
	ret = -ENOMEM;
fail:
	for_each_possible_cpu(cpu) {
		struct dune_vmx_cpu *c = per_cpu_ptr(&dune_vmx_cpus, cpu);

		if (c->vmxon_page)
			__free_page(c->vmxon_page);
		c->vmxon_page = NULL;
	}
	__free_page(dune_msr_bitmap);
	dune_msr_bitmap = NULL;
	return ret;
}

static void dune_vmx_module_exit(void)
{
	unsigned int cpu;

	if (dune_vmx_cpuhp_state >= 0)
		cpuhp_remove_state_nocalls(dune_vmx_cpuhp_state);
	dune_vmx_cpuhp_state = -1;
	dune_vmx_disable_all();
	for_each_possible_cpu(cpu) {
		struct dune_vmx_cpu *c = per_cpu_ptr(&dune_vmx_cpus, cpu);

		if (c->vmxon_page)
			__free_page(c->vmxon_page);
		c->vmxon_page = NULL;
	}
	if (dune_msr_bitmap)
		__free_page(dune_msr_bitmap);
	dune_msr_bitmap = NULL;
}

/* ---- the VMCS ---- */

/* The guest's CR0/CR4 bits it may not change without an exit: those VMX
 * fixes, and for CR4 those the ABI does not allow. */
static u64 dune_cr0_mask(void)
{
	return (dune_vmx.cr0_fixed0 | ~dune_vmx.cr0_fixed1 | X86_CR0_CD | X86_CR0_NW) &
	       0xffffffffull;
}

static u64 dune_cr4_mask(void)
{
	return dune_vmx.cr4_fixed0 | ~dune_vmx.cr4_fixed1 | ~DUNE_CR4_ALLOWED;
}

static u64 dune_cr0_real(u64 cr0)
{
	return (cr0 | dune_vmx.cr0_fixed0) & dune_vmx.cr0_fixed1;
}

static u64 dune_cr4_real(u64 cr4)
{
	return (cr4 | dune_vmx.cr4_fixed0) & dune_vmx.cr4_fixed1;
}

/* The state a new vCPU (or one after a shutdown) starts from, as svm.c's. */
static void dune_vmx_reset_guest(struct dune_vcpu *vcpu)
{
	struct dune_vmx_guest *g = &vcpu->vmx.g;

	memset(g, 0, sizeof(*g));
	g->cr0 = X86_CR0_PG | X86_CR0_WP | X86_CR0_NE | X86_CR0_ET | X86_CR0_MP |
		 X86_CR0_PE;
	g->cr4 = X86_CR4_PAE | X86_CR4_OSFXSR | X86_CR4_OSXMMEXCPT;
	g->efer = EFER_LME | EFER_LMA;
	g->rflags = X86_EFLAGS_FIXED;
	g->tr_limit = 0x67;
	vcpu->vmx.state_dirty = true;
	vcpu->vmx.segs_reset = true;
	vcpu->vmx.event_inj = 0;
	vcpu->state_undefined = false;
}

/* VMX access rights: type[3:0] S[4] DPL[6:5] P[7] AVL[12] L[13] DB[14] G[15] unusable[16] */
#define AR_CODE64 0xa09b /* execute/read, accessed, S, P, L, G */
#define AR_DATA   0xc093 /* read/write, accessed, S, P, DB, G */
#define AR_TSS64  0x008b /* busy 64-bit TSS, P */
#define AR_UNUSABLE 0x10000

static void dune_vmx_flat_segment(unsigned long sel_field, u16 sel, u32 ar)
{
	/* the selector, limit, access-rights and base fields of one segment
	 * are at fixed distances from the selector's encoding */
	unsigned long idx = sel_field - GUEST_ES_SELECTOR;

	dune_vmwrite(sel_field, sel);
	dune_vmwrite(GUEST_ES_LIMIT + idx, 0xffffffff);
	dune_vmwrite(GUEST_ES_AR_BYTES + idx, ar);
	dune_vmwrite(GUEST_ES_BASE + idx, 0);
}

/* The fields that never change, the first time the VMCS is current. */
static void dune_vmx_setup_vmcs(struct dune_vcpu *vcpu)
{
	struct dune_vmx_vcpu *vmx = &vcpu->vmx;
	u32 proc2 = dune_vmx.proc2;
	struct desc_ptr idt;

	if (!vmx->vpid)
		proc2 &= ~SECONDARY_EXEC_ENABLE_VPID;
	dune_vmwrite(PIN_BASED_VM_EXEC_CONTROL, dune_vmx.pin);
	dune_vmwrite(CPU_BASED_VM_EXEC_CONTROL, dune_vmx.proc);
	dune_vmwrite(SECONDARY_VM_EXEC_CONTROL, proc2);
	dune_vmwrite(VM_EXIT_CONTROLS, dune_vmx.exit);
	dune_vmwrite(VM_ENTRY_CONTROLS, dune_vmx.entry);
	/* A machine check in guest mode is the host's (see the exit below). */
	dune_vmwrite(EXCEPTION_BITMAP, 1u << MC_VECTOR);
	dune_vmwrite(PAGE_FAULT_ERROR_CODE_MASK, 0);
	dune_vmwrite(PAGE_FAULT_ERROR_CODE_MATCH, 0);
	dune_vmwrite(CR3_TARGET_COUNT, 0);
	dune_vmwrite(VM_EXIT_MSR_STORE_COUNT, 0);
	dune_vmwrite(VM_EXIT_MSR_LOAD_COUNT, 0);
	dune_vmwrite(VM_ENTRY_MSR_LOAD_COUNT, 0);
	dune_vmwrite(VM_ENTRY_INTR_INFO_FIELD, 0);
	/* reloaded at every entry (its value is not saved at exits) */
	if (dune_vmx.pin & PIN_BASED_VMX_PREEMPTION_TIMER)
		dune_vmwrite(VMX_PREEMPTION_TIMER_VALUE, dune_vmx.preemption_timer);
	dune_vmwrite(MSR_BITMAP, dune_vmx_pa(dune_msr_bitmap));
	dune_vmwrite(EPT_POINTER, dune_vmx_eptp(vcpu->vm));
	if (vmx->vpid)
		dune_vmwrite(VIRTUAL_PROCESSOR_ID, vmx->vpid);
	dune_vmwrite(CR0_GUEST_HOST_MASK, dune_cr0_mask());
	dune_vmwrite(CR4_GUEST_HOST_MASK, dune_cr4_mask());
	dune_vmwrite(VMCS_LINK_POINTER, ~0ull);

	/* the host's state that is the same on every CPU */
	dune_vmwrite(HOST_CS_SELECTOR, __KERNEL_CS);
	dune_vmwrite(HOST_SS_SELECTOR, __KERNEL_DS);
	dune_vmwrite(HOST_DS_SELECTOR, 0);
	dune_vmwrite(HOST_ES_SELECTOR, 0);
	dune_vmwrite(HOST_FS_SELECTOR, 0);
	dune_vmwrite(HOST_GS_SELECTOR, 0);
	dune_vmwrite(HOST_TR_SELECTOR, GDT_ENTRY_TSS * 8);
	store_idt(&idt);
	dune_vmwrite(HOST_IDTR_BASE, idt.address);
	dune_vmwrite(HOST_RIP, (unsigned long)dune_vmx_exit_point);
	dune_vmwrite(HOST_IA32_SYSENTER_CS, dune_host_sysenter_cs);
	dune_vmwrite(HOST_IA32_SYSENTER_EIP, dune_host_sysenter_eip);
	dune_vmwrite(HOST_IA32_EFER, dune_host_efer);
	dune_vmwrite(HOST_IA32_PAT, dune_host_pat);
	dune_vmwrite(HOST_CR0, read_cr0());
	vmx->host_cr3 = vmx->host_cr4 = 0;
	vmx->intr_window = false;
	vmx->vmcs_setup = true;
}

/* The host's state of this CPU, whenever the VMCS comes to it. */
static void dune_vmx_setup_host_cpu(int cpu)
{
	u64 v;

	dune_vmwrite(HOST_TR_BASE, (unsigned long)&get_cpu_entry_area(cpu)->tss.x86_tss);
	dune_vmwrite(HOST_GDTR_BASE, (unsigned long)get_current_gdt_ro());
	rdmsrl(MSR_IA32_SYSENTER_ESP, v);
	dune_vmwrite(HOST_IA32_SYSENTER_ESP, v);
	rdmsrl(MSR_GS_BASE, v); /* the kernel's per-CPU base */
	dune_vmwrite(HOST_GS_BASE, v);
}

/*
 * Makes the vCPU's VMCS current on this CPU, VMCLEARing it first where it
 * was active before.  Preemption off, interrupts on.
 */
static void dune_vmx_load(struct dune_vcpu *vcpu, struct dune_vmx_cpu *c, int cpu)
{
	struct dune_vmx_vcpu *vmx = &vcpu->vmx;
	u64 pa = dune_vmx_pa(vmx->vmcs_page);

	if (vmx->vmcs_cpu == cpu) {
		if (c->current_vcpu != vcpu) {
			dune_vmptrld(pa);
			c->current_vcpu = vcpu;
		}
		return;
	}
	dune_vmx_clear(vcpu);
	local_irq_disable();
	dune_vmclear(pa); /* a fresh VMCS must be cleared before its first use */
	if (dune_vmptrld(pa))
		pr_err_ratelimited("VMPTRLD failed on CPU %d\n", cpu);
	list_add(&vmx->loaded_node, &c->loaded);
	c->current_vcpu = vcpu;
	WRITE_ONCE(vmx->vmcs_cpu, cpu);
	vmx->launched = false;
	local_irq_enable();
	if (!vmx->vmcs_setup)
		dune_vmx_setup_vmcs(vcpu);
	dune_vmx_setup_host_cpu(cpu);
}

static int dune_vmx_vcpu_init(struct dune_vcpu *vcpu)
{
	struct dune_vmx_vcpu *vmx = &vcpu->vmx;
	unsigned long vpid = 0;

	vmx->vmcs_page = dune_alloc_page();
	if (!vmx->vmcs_page)
		return -ENOMEM;
	*(u32 *)page_address(vmx->vmcs_page) = dune_vmx.revision;
	vmx->vmcs_cpu = -1;
	INIT_LIST_HEAD(&vmx->loaded_node);
	if (dune_vmx.vpid) {
		spin_lock(&dune_vpids_lock);
		vpid = find_first_zero_bit(dune_vpids, DUNE_VPIDS);
		if (vpid < DUNE_VPIDS)
			__set_bit(vpid, dune_vpids);
		else
			vpid = 0; /* none left: this vCPU flushes at every entry */
		spin_unlock(&dune_vpids_lock);
	}
	vmx->vpid = vpid;
	dune_vmx_reset_guest(vcpu);
	return 0;
}

static void dune_vmx_vcpu_destroy(struct dune_vcpu *vcpu)
{
	struct dune_vmx_vcpu *vmx = &vcpu->vmx;

	if (!vmx->vmcs_page)
		return;
	dune_vmx_clear(vcpu);
	dune_free_page(vmx->vmcs_page);
	vmx->vmcs_page = NULL;
	if (vmx->vpid) {
		spin_lock(&dune_vpids_lock);
		__clear_bit(vmx->vpid, dune_vpids);
		spin_unlock(&dune_vpids_lock);
	}
	vmx->vpid = 0;
}

static void dune_vmx_vcpu_get_state(struct dune_vcpu *vcpu, struct dune_vcpu_state *st)
{
	const struct dune_vmx_guest *s = &vcpu->vmx.g;
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
	sr->efer = s->efer;
	sr->gdt_base = s->gdt_base, sr->gdt_limit = s->gdt_limit;
	sr->idt_base = s->idt_base, sr->idt_limit = s->idt_limit;
	sr->fs_base = s->fs_base, sr->gs_base = s->gs_base;
	sr->kernel_gs_base = s->kernel_gs_base;
	sr->star = s->star, sr->lstar = s->lstar, sr->cstar = s->cstar;
	sr->sfmask = s->sfmask;
	sr->tr_base = s->tr_base, sr->tr_limit = s->tr_limit;
}

/* main.c has checked it against the ABI; this, against what VMX allows. */
static int dune_vmx_vcpu_set_state(struct dune_vcpu *vcpu,
				   const struct dune_vcpu_state *st)
{
	const struct dune_regs *r = &st->regs;
	const struct dune_sregs *sr = &st->sregs;
	struct dune_vmx_guest *s = &vcpu->vmx.g;
	struct dune_guest_gprs *g = &vcpu->gprs;

	if (((sr->cr4 | dune_vmx.cr4_fixed0) & ~dune_vmx.cr4_fixed1) ||
	    ((sr->cr0 | dune_vmx.cr0_fixed0) & ~dune_vmx.cr0_fixed1))
		return -EINVAL;
	if (vcpu->state_undefined)
		dune_vmx_reset_guest(vcpu);
	/* The caller's state replaces the guest's: an event that was being
	 * delivered belongs to the old one. */
	vcpu->vmx.event_inj = 0;
	g->rax = r->rax, s->rsp = r->rsp, s->rip = r->rip;
	s->rflags = r->rflags | X86_EFLAGS_FIXED;
	g->rbx = r->rbx, g->rcx = r->rcx, g->rdx = r->rdx, g->rsi = r->rsi;
	g->rdi = r->rdi, g->rbp = r->rbp, g->r8 = r->r8, g->r9 = r->r9;
	g->r10 = r->r10, g->r11 = r->r11, g->r12 = r->r12, g->r13 = r->r13;
	g->r14 = r->r14, g->r15 = r->r15;
	s->cr0 = sr->cr0, s->cr2 = sr->cr2, s->cr3 = sr->cr3, s->cr4 = sr->cr4;
	s->efer = sr->efer;
	s->gdt_base = sr->gdt_base, s->gdt_limit = sr->gdt_limit;
	s->idt_base = sr->idt_base, s->idt_limit = sr->idt_limit;
	s->fs_base = sr->fs_base, s->gs_base = sr->gs_base;
	s->kernel_gs_base = sr->kernel_gs_base;
	s->star = sr->star, s->lstar = sr->lstar, s->cstar = sr->cstar;
	s->sfmask = sr->sfmask;
	s->tr_base = sr->tr_base, s->tr_limit = sr->tr_limit;
	vcpu->vmx.state_dirty = true;
	return 0;
}

/* Into the current VMCS, before an entry: what changed since the last. */
static void dune_vmx_write_guest(struct dune_vcpu *vcpu)
{
	struct dune_vmx_vcpu *vmx = &vcpu->vmx;
	const struct dune_vmx_guest *g = &vmx->g;

	if (vmx->segs_reset) {
		dune_vmx_flat_segment(GUEST_CS_SELECTOR, 0x08, AR_CODE64);
		dune_vmx_flat_segment(GUEST_DS_SELECTOR, 0x10, AR_DATA);
		dune_vmx_flat_segment(GUEST_ES_SELECTOR, 0x10, AR_DATA);
		dune_vmx_flat_segment(GUEST_SS_SELECTOR, 0x10, AR_DATA);
		dune_vmx_flat_segment(GUEST_FS_SELECTOR, 0x10, AR_DATA);
		dune_vmx_flat_segment(GUEST_GS_SELECTOR, 0x10, AR_DATA);
		dune_vmwrite(GUEST_TR_SELECTOR, 0x18);
		dune_vmwrite(GUEST_TR_AR_BYTES, AR_TSS64);
		dune_vmwrite(GUEST_LDTR_SELECTOR, 0);
		dune_vmwrite(GUEST_LDTR_LIMIT, 0);
		dune_vmwrite(GUEST_LDTR_BASE, 0);
		dune_vmwrite(GUEST_LDTR_AR_BYTES, AR_UNUSABLE);
		dune_vmwrite(GUEST_SYSENTER_CS, 0);
		dune_vmwrite(GUEST_SYSENTER_ESP, 0);
		dune_vmwrite(GUEST_SYSENTER_EIP, 0);
		dune_vmwrite(GUEST_DR7, 0x400); /* architectural reset values */
		dune_vmwrite(GUEST_IA32_DEBUGCTL, 0);
		dune_vmwrite(GUEST_IA32_PAT, 0x0007040600070406ull);
		dune_vmwrite(GUEST_ACTIVITY_STATE, 0);
		dune_vmwrite(GUEST_INTERRUPTIBILITY_INFO, 0);
		dune_vmwrite(GUEST_PENDING_DBG_EXCEPTIONS, 0);
		vmx->segs_reset = false;
	}
	if (vmx->state_dirty) {
		dune_vmwrite(GUEST_RSP, g->rsp);
		dune_vmwrite(GUEST_RIP, g->rip);
		dune_vmwrite(GUEST_RFLAGS, g->rflags);
		dune_vmwrite(GUEST_CR0, dune_cr0_real(g->cr0));
		dune_vmwrite(CR0_READ_SHADOW, g->cr0);
		dune_vmwrite(GUEST_CR3, g->cr3);
		dune_vmwrite(GUEST_CR4, dune_cr4_real(g->cr4));
		dune_vmwrite(CR4_READ_SHADOW, g->cr4);
		dune_vmwrite(GUEST_IA32_EFER, g->efer);
		dune_vmwrite(GUEST_GDTR_BASE, g->gdt_base);
		dune_vmwrite(GUEST_GDTR_LIMIT, g->gdt_limit);
		dune_vmwrite(GUEST_IDTR_BASE, g->idt_base);
		dune_vmwrite(GUEST_IDTR_LIMIT, g->idt_limit);
		dune_vmwrite(GUEST_FS_BASE, g->fs_base);
		dune_vmwrite(GUEST_GS_BASE, g->gs_base);
		dune_vmwrite(GUEST_TR_BASE, g->tr_base);
		dune_vmwrite(GUEST_TR_LIMIT, g->tr_limit);
		/* a new state has no instruction in flight */
		dune_vmwrite(GUEST_INTERRUPTIBILITY_INFO, 0);
		vmx->state_dirty = false;
		vmx->rip_dirty = false;
	} else if (vmx->rip_dirty) {
		/* past an instruction: a mov-ss/sti shadow ends with it */
		u32 intr = dune_vmread(GUEST_INTERRUPTIBILITY_INFO);

		dune_vmwrite(GUEST_RIP, g->rip);
		if (intr & (GUEST_INTR_STATE_STI | GUEST_INTR_STATE_MOV_SS))
			dune_vmwrite(GUEST_INTERRUPTIBILITY_INFO,
				     intr & ~(GUEST_INTR_STATE_STI | GUEST_INTR_STATE_MOV_SS));
		vmx->rip_dirty = false;
	}
	if (vmx->event_inj) {
		dune_vmwrite(VM_ENTRY_INTR_INFO_FIELD, vmx->event_inj);
		dune_vmwrite(VM_ENTRY_EXCEPTION_ERROR_CODE, vmx->event_inj_err);
		dune_vmwrite(VM_ENTRY_INSTRUCTION_LEN, vmx->event_inj_len);
		vmx->event_inj = 0; /* the entry consumes it */
	}
}

/* Out of the current VMCS, after an exit: what the guest may have changed
 * without one. */
static void dune_vmx_read_guest(struct dune_vcpu *vcpu)
{
	struct dune_vmx_guest *g = &vcpu->vmx.g;

	g->rsp = dune_vmread(GUEST_RSP);
	g->rip = dune_vmread(GUEST_RIP);
	g->rflags = dune_vmread(GUEST_RFLAGS);
	g->cr0 = (dune_vmread(GUEST_CR0) & ~dune_cr0_mask()) | (g->cr0 & dune_cr0_mask());
	g->cr3 = dune_vmread(GUEST_CR3);
	g->cr4 = (dune_vmread(GUEST_CR4) & ~dune_cr4_mask()) | (g->cr4 & dune_cr4_mask());
	g->gdt_base = dune_vmread(GUEST_GDTR_BASE);
	g->gdt_limit = dune_vmread(GUEST_GDTR_LIMIT);
	g->idt_base = dune_vmread(GUEST_IDTR_BASE);
	g->idt_limit = dune_vmread(GUEST_IDTR_LIMIT);
	g->fs_base = dune_vmread(GUEST_FS_BASE);
	g->gs_base = dune_vmread(GUEST_GS_BASE);
	g->tr_base = dune_vmread(GUEST_TR_BASE);
	g->tr_limit = dune_vmread(GUEST_TR_LIMIT);
}

/*
 * An exit can interrupt the delivery of an event through the guest's IDT
 * (an EPT violation on the IDT or the stack, a host interrupt): the CPU
 * reports it in the IDT-vectoring information and it is injected again at
 * the next entry, as on SVM.  Software interrupts and the #BP/#OF traps of
 * INT3/INTO are left out: RIP still points at their instruction, which
 * raises them again when it runs.
 */
static void dune_vmx_requeue_event(struct dune_vmx_vcpu *vmx, u32 info, u32 err)
{
	u32 type = info & INTR_INFO_INTR_TYPE_MASK;

	vmx->event_inj = 0;
	if (!(info & VECTORING_INFO_VALID_MASK) || type == INTR_TYPE_SOFT_INTR ||
	    type == INTR_TYPE_SOFT_EXCEPTION || type == INTR_TYPE_PRIV_SW_EXCEPTION)
		return;
	vmx->event_inj = info & (INTR_INFO_VECTOR_MASK | INTR_INFO_INTR_TYPE_MASK |
				 INTR_INFO_DELIVER_CODE_MASK | INTR_INFO_VALID_MASK);
	vmx->event_inj_err = err;
	vmx->event_inj_len = 0;
}

/* Before the entry, interrupts off: stale translations of this VM's EPT
 * (a zap since this vCPU last ran) or of its VPID (it ran elsewhere since
 * it last ran here, or never) go. */
static void dune_vmx_flush(struct dune_vcpu *vcpu, int cpu, u64 tlb_gen)
{
	u64 eptp = dune_vmx_eptp(vcpu->vm);
	bool moved = vcpu->last_cpu != cpu;

	if (moved || vcpu->tlb_gen_seen != tlb_gen) {
		if (dune_vmx.invept_single)
			dune_invept(VMX_EPT_EXTENT_CONTEXT, eptp);
		else
			dune_invept(VMX_EPT_EXTENT_GLOBAL, 0);
	}
	if (moved && vcpu->vmx.vpid) {
		if (dune_vmx.invvpid_single)
			dune_invvpid(VMX_VPID_EXTENT_SINGLE_CONTEXT, vcpu->vmx.vpid);
		else
			dune_invvpid(VMX_VPID_EXTENT_ALL_CONTEXT, 0);
	}
	vcpu->last_cpu = cpu;
	vcpu->tlb_gen_seen = tlb_gen;
}

/*
 * A vector sent to this vCPU (ipi.c) is injected as an external interrupt
 * when the guest can take one now (RFLAGS.IF set, no sti or mov-ss shadow,
 * no other event being injected: SDM vol. 3, 27.3.1.5); otherwise, or
 * while more wait, the VMCS asks for an exit as soon as it can (the
 * interrupt window), and the next entry comes back here.  With the VMCS
 * current, interrupts off, after running_cpu's store and its barrier.
 */
static void dune_vmx_offer_ipi(struct dune_vcpu *vcpu)
{
	struct dune_vmx_vcpu *vmx = &vcpu->vmx;
	bool window = false;

	if (dune_ipi_any(vcpu)) {
		u32 shadow = dune_vmread(GUEST_INTERRUPTIBILITY_INFO) &
			     (GUEST_INTR_STATE_STI | GUEST_INTR_STATE_MOV_SS);
		bool injecting = dune_vmread(VM_ENTRY_INTR_INFO_FIELD) & INTR_INFO_VALID_MASK;
		int vector;

		if ((vmx->g.rflags & X86_EFLAGS_IF) && !shadow && !injecting &&
		    (vector = dune_ipi_take(vcpu)) >= 0)
			dune_vmwrite(VM_ENTRY_INTR_INFO_FIELD,
				     vector | INTR_TYPE_EXT_INTR | INTR_INFO_VALID_MASK);
		window = dune_ipi_any(vcpu);
	}
	if (window != vmx->intr_window) {
		dune_vmwrite(CPU_BASED_VM_EXEC_CONTROL,
			     dune_vmx.proc | (window ? CPU_BASED_INTR_WINDOW_EXITING : 0));
		vmx->intr_window = window;
	}
}

/* The exit information the handling below needs, read while the VMCS is
 * current. */
struct dune_vmx_exit {
	u32 reason, intr_info, idt_info, idt_err, insn_len;
	u64 qual, gpa;
};

/* svm_exit_code for the VMX exits SVM has a code for (APM vol. 2, app. C) */
static u64 dune_vmx_svm_code(const struct dune_vmx_exit *e)
{
	u32 reason = e->reason & 0xffff;

	switch (reason) {
	case EXIT_REASON_EXCEPTION_NMI:
		return 0x40 + (e->intr_info & INTR_INFO_VECTOR_MASK);
	case EXIT_REASON_EXTERNAL_INTERRUPT: return 0x60;
	case EXIT_REASON_TRIPLE_FAULT: return 0x7f;
	case EXIT_REASON_INIT_SIGNAL: return 0x63;
	case EXIT_REASON_TASK_SWITCH: return 0x7d;
	case EXIT_REASON_CPUID: return 0x72;
	case EXIT_REASON_HLT: return 0x78;
	case EXIT_REASON_INVD: return 0x76;
	case EXIT_REASON_INVLPG: return 0x79;
	case EXIT_REASON_RDPMC: return 0x6f;
	case EXIT_REASON_RDTSC: return 0x6e;
	case EXIT_REASON_VMCALL: return 0x81;
	case EXIT_REASON_CR_ACCESS: {
		unsigned int cr = e->qual & 15, type = (e->qual >> 4) & 3;

		return type == 1 ? cr : 0x10 + (type == 0 ? cr : 0);
	}
	case EXIT_REASON_DR_ACCESS:
		return (e->qual & 16 ? 0x20 : 0x30) + (e->qual & 7);
	case EXIT_REASON_IO_INSTRUCTION: return 0x7b;
	case EXIT_REASON_MSR_READ:
	case EXIT_REASON_MSR_WRITE: return 0x7c;
	case EXIT_REASON_MWAIT_INSTRUCTION: return 0x8b;
	case EXIT_REASON_MONITOR_INSTRUCTION: return 0x8a;
	case EXIT_REASON_PAUSE_INSTRUCTION: return 0x77;
	case EXIT_REASON_EPT_VIOLATION:
	case EXIT_REASON_EPT_MISCONFIG: return 0x400;
	case EXIT_REASON_WBINVD: return 0x89;
	case EXIT_REASON_XSETBV: return 0x8d;
	case EXIT_REASON_RDTSCP: return 0x87;
	}
	if (e->reason & VMX_EXIT_REASONS_FAILED_VMENTRY)
		return (u64)-1; /* SVM_EXIT_ERR */
	return DUNE_VMX_EXIT_CODE(reason);
}

/* An EPT violation's qualification as the #NPF error code npt.c and user
 * space read (bits as APM 15.25.6). */
static u64 dune_vmx_npf_code(u64 qual)
{
	u64 ec = X86_PF_USER; /* guest-physical accesses count as user */

	if (qual & EPT_VIOLATION_ACC_WRITE)
		ec |= X86_PF_WRITE;
	if (qual & EPT_VIOLATION_ACC_INSTR)
		ec |= X86_PF_INSTR;
	if (qual & EPT_VIOLATION_RWX_MASK)
		ec |= X86_PF_PROT;
	if (qual & EPT_VIOLATION_GVA_IS_VALID)
		ec |= qual & EPT_VIOLATION_GVA_TRANSLATED ? DUNE_NPF_FINAL_GPA :
							    DUNE_NPF_PAGE_WALK;
	return ec;
}

static void dune_vmx_skip(struct dune_vcpu *vcpu, const struct dune_vmx_exit *e)
{
	vcpu->vmx.g.rip += e->insn_len;
	vcpu->vmx.rip_dirty = true;
}

/* The host's segment and descriptor-table state a VM exit leaves wrong. */
struct dune_vmx_host_segs {
	u16 ds, es, ldt;
};

static __always_inline u16 dune_sldt(void)
{
	u16 sel;

	asm volatile("sldt %0" : "=g"(sel));
	return sel;
}

static int dune_vmx_vcpu_run(struct dune_vcpu *vcpu, struct dune_exit *exit)
{
	struct dune_vm *vm = vcpu->vm;
	struct dune_vmx_vcpu *vmx = &vcpu->vmx;
	struct dune_vmx_guest *g = &vmx->g;
	int ret;

	if (vcpu->state_undefined)
		return -EINVAL;
	memset(exit, 0, sizeof(*exit));
	for (;;) {
		struct dune_vmx_host_segs segs;
		struct dune_vmx_cpu *c;
		struct dune_vmx_exit e;
		u64 host_kgs, debugctl, cr3, cr4, v;
		unsigned long cr2;
		bool failed;
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
		cpu = smp_processor_id();
		c = this_cpu_ptr(&dune_vmx_cpus);
		local_irq_disable();
		ret = dune_vmx_cpu_enable(c);
		local_irq_enable();
		if (ret) {
			preempt_enable();
			return ret;
		}
		dune_vmx_load(vcpu, c, cpu);

		local_irq_disable();
		/* The guest shares the process's FPU registers: have them loaded. */
		if (test_thread_flag(TIF_NEED_FPU_LOAD))
			switch_fpu_return();
		dune_vmx_write_guest(vcpu);
		cr3 = __read_cr3();
		if (cr3 != vmx->host_cr3) {
			dune_vmwrite(HOST_CR3, cr3);
			vmx->host_cr3 = cr3;
		}
		cr4 = cr4_read_shadow();
		if (cr4 != vmx->host_cr4) {
			dune_vmwrite(HOST_CR4, cr4);
			vmx->host_cr4 = cr4;
		}
		rdmsrl(MSR_FS_BASE, v); /* the thread's own */
		dune_vmwrite(HOST_FS_BASE, v);
		savesegment(ds, segs.ds);
		savesegment(es, segs.es);
		segs.ldt = dune_sldt();
		debugctl = get_debugctlmsr();

		/* what VMX does not switch: the syscall MSRs and CR2 */
		rdmsrl(MSR_KERNEL_GS_BASE, host_kgs);
		wrmsrl(MSR_KERNEL_GS_BASE, g->kernel_gs_base);
		if (g->star != dune_host_star)
			wrmsrl(MSR_STAR, g->star);
		if (g->lstar != dune_host_lstar)
			wrmsrl(MSR_LSTAR, g->lstar);
		if (g->cstar != dune_host_cstar)
			wrmsrl(MSR_CSTAR, g->cstar);
		if (g->sfmask != dune_host_sfmask)
			wrmsrl(MSR_SYSCALL_MASK, g->sfmask);
		cr2 = native_read_cr2();
		if (cr2 != g->cr2)
			native_write_cr2(g->cr2);

		WRITE_ONCE(vcpu->running_cpu, cpu);
		smp_mb(); /* running_cpu set before tlb_gen is read (dune_kick_vcpus) */
		dune_vmx_flush(vcpu, cpu, atomic64_read(&vm->tlb_gen));
		dune_vmx_offer_ipi(vcpu);
		if (dune_vmx.l1d_flush)
			wrmsrl(MSR_IA32_FLUSH_CMD, L1D_FLUSH);

		failed = dune_vmx_enter(&vcpu->gprs, vmx->launched,
					this_cpu_read(x86_spec_ctrl_current),
					cpu_feature_enabled(X86_FEATURE_KERNEL_IBRS));

		g->cr2 = native_read_cr2();
		WRITE_ONCE(vcpu->running_cpu, -1);
		rdmsrl(MSR_KERNEL_GS_BASE, g->kernel_gs_base);
		wrmsrl(MSR_KERNEL_GS_BASE, host_kgs);
		if (g->star != dune_host_star)
			wrmsrl(MSR_STAR, dune_host_star);
		if (g->lstar != dune_host_lstar)
			wrmsrl(MSR_LSTAR, dune_host_lstar);
		if (g->cstar != dune_host_cstar)
			wrmsrl(MSR_CSTAR, dune_host_cstar);
		if (g->sfmask != dune_host_sfmask)
			wrmsrl(MSR_SYSCALL_MASK, dune_host_sfmask);
		/* a VM exit loads null DS/ES/LDTR, a GDT limit of 0xffff and a
		 * TSS limit of 0x67 (no I/O bitmap), clears DEBUGCTL and DR7 */
		if (segs.ds | segs.es) {
			loadsegment(ds, segs.ds);
			loadsegment(es, segs.es);
		}
		if (segs.ldt)
			asm volatile("lldt %0" : : "rm"(segs.ldt));
		load_fixmap_gdt(cpu);
		invalidate_tss_limit();
		if (debugctl)
			update_debugctlmsr(debugctl);
		if (hw_breakpoint_active())
			hw_breakpoint_restore();

		if (failed) {
			e.reason = VMX_EXIT_REASONS_FAILED_VMENTRY;
			e.qual = dune_vmread(VM_INSTRUCTION_ERROR);
			e.intr_info = e.idt_info = e.idt_err = e.insn_len = 0;
			e.gpa = 0;
		} else {
			e.reason = dune_vmread(VM_EXIT_REASON);
			/* an entry that failed on the guest's state leaves the
			 * launch state as it was */
			if (!(e.reason & VMX_EXIT_REASONS_FAILED_VMENTRY))
				vmx->launched = true;
			e.qual = dune_vmread(EXIT_QUALIFICATION);
			e.intr_info = dune_vmread(VM_EXIT_INTR_INFO);
			e.idt_info = dune_vmread(IDT_VECTORING_INFO_FIELD);
			e.idt_err = dune_vmread(IDT_VECTORING_ERROR_CODE);
			e.insn_len = dune_vmread(VM_EXIT_INSTRUCTION_LEN);
			e.gpa = dune_vmread(GUEST_PHYSICAL_ADDRESS);
			dune_vmx_read_guest(vcpu);
		}
		/* An NMI that ended the run is the host's, not yet handled. */
		if ((u16)e.reason == EXIT_REASON_EXCEPTION_NMI &&
		    (e.intr_info & INTR_INFO_INTR_TYPE_MASK) == INTR_TYPE_NMI_INTR)
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 3, 0)
			dune_vmx_call_nmi(asm_exc_nmi_kvm_vmx);
#else
			dune_vmx_call_nmi(asm_exc_nmi_noist);
#endif
		local_irq_enable(); /* a host interrupt that ended the run is taken here */
		preempt_enable();
		atomic64_inc(&dune_counters.vmruns);

		if (!failed)
			dune_vmx_requeue_event(vmx, e.idt_info, e.idt_err);
		switch ((u16)e.reason) {
		case EXIT_REASON_EXCEPTION_NMI:
			if ((e.intr_info & INTR_INFO_INTR_TYPE_MASK) == INTR_TYPE_NMI_INTR)
				continue;
			if ((e.intr_info & INTR_INFO_VECTOR_MASK) == MC_VECTOR) {
				dune_host_machine_check();
				continue; /* a fatal one has left a signal pending */
			}
			exit->reason = DUNE_EXIT_INTERCEPT;
			break;
		case EXIT_REASON_MCE_DURING_VMENTRY:
			dune_host_machine_check();
			continue;
		case EXIT_REASON_EXTERNAL_INTERRUPT:
		case EXIT_REASON_PREEMPTION_TIMER:
		case EXIT_REASON_INTERRUPT_WINDOW: /* the entry injects */
			continue;
		case EXIT_REASON_MSR_WRITE:
			/* the x2APIC registers ipi.c keeps */
			if (dune_ipi_wrmsr(vcpu, vcpu->gprs.rcx,
					   vcpu->gprs.rdx << 32 | (u32)vcpu->gprs.rax)) {
				dune_vmx_skip(vcpu, &e);
				continue;
			}
			exit->reason = DUNE_EXIT_INTERCEPT;
			break;
		case EXIT_REASON_CPUID: {
			/* always an exit on VMX: the host's, as the SVM guest sees */
			u32 a = vcpu->gprs.rax, b, cx = vcpu->gprs.rcx, d;

			cpuid_count(a, cx, &a, &b, &cx, &d);
			vcpu->gprs.rax = a, vcpu->gprs.rbx = b;
			vcpu->gprs.rcx = cx, vcpu->gprs.rdx = d;
			dune_vmx_skip(vcpu, &e);
			continue;
		}
		case EXIT_REASON_EPT_VIOLATION:
		case EXIT_REASON_EPT_MISCONFIG: {
			u64 ec = (u16)e.reason == EXIT_REASON_EPT_MISCONFIG ?
				 X86_PF_RSVD | X86_PF_PROT | X86_PF_USER :
				 dune_vmx_npf_code(e.qual);

			ret = dune_npt_fault(vm, e.gpa, ec);
			if (ret == 0)
				continue;
			if (ret < 0)
				return ret;
			exit->reason = DUNE_EXIT_NPF;
			exit->gpa = e.gpa;
			exit->error_code = ec;
			break;
		}
		case EXIT_REASON_VMCALL:
			dune_vmx_skip(vcpu, &e);
			exit->reason = DUNE_EXIT_VMMCALL;
			break;
		case EXIT_REASON_IO_INSTRUCTION: {
			u16 port = e.qual >> 16;
			unsigned int size = (e.qual & 7) + 1;

			/* `in` and string I/O: nothing here to emulate them with */
			if (e.qual & (8 | 16 | 32)) {
				exit->reason = DUNE_EXIT_INTERCEPT;
				break;
			}
			dune_vmx_skip(vcpu, &e);
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
			exit->size = size;
			break;
		}
		case EXIT_REASON_HLT:
			dune_vmx_skip(vcpu, &e);
			exit->reason = DUNE_EXIT_HLT;
			break;
		case EXIT_REASON_TRIPLE_FAULT:
			/* as on SVM: a new state is needed */
			vcpu->state_undefined = true;
			exit->reason = DUNE_EXIT_SHUTDOWN;
			break;
		default:
			exit->reason = e.reason & VMX_EXIT_REASONS_FAILED_VMENTRY ?
				DUNE_EXIT_INVALID : DUNE_EXIT_INTERCEPT;
			break;
		}
		exit->svm_exit_code = dune_vmx_svm_code(&e);
		if ((u16)e.reason == EXIT_REASON_IO_INSTRUCTION) {
			/* SVM's IOIO information: port, type, size, string, rep */
			exit->info1 = (e.qual >> 16) << 16 | !!(e.qual & 8) |
				      (e.qual & 16 ? 4 : 0) | (e.qual & 32 ? 8 : 0) |
				      (((e.qual & 7) + 1) << 4);
			exit->info2 = g->rip;
		} else if (exit->reason == DUNE_EXIT_NPF) {
			/* as SVM's: the error code and the address */
			exit->info1 = exit->error_code;
			exit->info2 = exit->gpa;
		} else if ((u16)e.reason == EXIT_REASON_MSR_READ ||
			   (u16)e.reason == EXIT_REASON_MSR_WRITE) {
			exit->info1 = (u16)e.reason == EXIT_REASON_MSR_WRITE;
		} else {
			/* the exit qualification and the full exit reason */
			exit->info1 = e.qual;
			exit->info2 = e.reason;
		}
		return 0;
	}
}

/* EPT entries: R/W/X in bits 0-2, memory type in 3-5 (write-back, the
 * guest's PAT ignored: it is the process's memory), no accessed/dirty bits
 * (not enabled in the EPTP). */
static struct dune_gpm_format dune_ept_format = {
	.present = VMX_EPT_RWX_MASK,
	.table = VMX_EPT_RWX_MASK,
	.leaf = VMX_EPT_READABLE_MASK | VMX_EPT_EXECUTABLE_MASK |
		(VMX_EPTP_MT_WB << VMX_EPT_MT_EPTE_SHIFT) | VMX_EPT_IPAT_BIT,
	.leaf_write = VMX_EPT_WRITABLE_MASK,
	.huge = true, /* cleared at load where the CPU has no 2 MiB EPT pages */
};

static int dune_vmx_module_init_all(void)
{
	dune_ept_format.huge = dune_vmx.ept_huge;
	return dune_vmx_module_init();
}

const struct dune_vendor_ops dune_vmx_ops = {
	.name = "Intel VT-x with EPT",
	.check_cpu = dune_vmx_check_cpu,
	.init = dune_vmx_module_init_all,
	.exit = dune_vmx_module_exit,
	.disable_all = dune_vmx_disable_all,
	.vcpu_init = dune_vmx_vcpu_init,
	.vcpu_destroy = dune_vmx_vcpu_destroy,
	.vcpu_get_state = dune_vmx_vcpu_get_state,
	.vcpu_set_state = dune_vmx_vcpu_set_state,
	.vcpu_run = dune_vmx_vcpu_run,
	.gpm = &dune_ept_format,
};
