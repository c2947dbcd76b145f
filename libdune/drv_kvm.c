/* SPDX-License-Identifier: MIT */
/*
 * The /dev/kvm driver: libdune's VM as a KVM virtual machine.  Refuses what
 * is not hardware KVM (no vmx/svm flag; probe.c times it too), gives the
 * guest the host's CPUID (masked with what KVM offers) and XCR0, memslots
 * for the 1 GiB chunks, and vCPUs whose exits come back through KVM_RUN.
 */
#include "internal.h"

#include <cpuid.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#define MSR_STAR 0xc0000081
#define MSR_LSTAR 0xc0000082
#define MSR_CSTAR 0xc0000083
#define MSR_SFMASK 0xc0000084
#define MSR_KERNEL_GS_BASE 0xc0000102
#define MSR_IA32_TSC 0x10

static int cpu_has_hw_virt(void)
{
	FILE *f = fopen("/proc/cpuinfo", "re");
	char line[4096];
	int found = 0;
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		if (strncmp(line, "flags", 5) != 0)
			continue;
		if (strstr(line, " vmx") || strstr(line, " svm"))
			found = 1;
		break;
	}
	fclose(f);
	return found;
}

static int kvm_check(void)
{
	int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (fd < 0) {
		int e = errno;
		if (e == ENOENT)
			return dune_fail(-ENOENT, "no /dev/kvm (KVM not available here)");
		if (e == EACCES || e == EPERM)
			return dune_fail(-EACCES, "no permission to open /dev/kvm "
						  "(join the kvm group?)");
		return dune_fail(-e, "cannot open /dev/kvm: %s", strerror(e));
	}
	int api = ioctl(fd, KVM_GET_API_VERSION, 0);
	if (api != KVM_API_VERSION) {
		close(fd);
		return dune_fail(-ENOTSUP, "KVM API version %d, want %d", api,
				 KVM_API_VERSION);
	}
	int hv = cpu_has_hw_virt();
	if (hv == 0 && !dune_env.allow_no_hwvirt) {
		close(fd);
		return dune_fail(-ENODEV, "no hardware virtualisation: /proc/cpuinfo has "
					  "no vmx or svm flag, so /dev/kvm is a software "
					  "backend here (it emulates ring 0 and hangs on "
					  "vmcall/vmmcall); refusing");
	}
	dune_vm.kvm_fd = dune_hide_fd(fd);
	return 0;
}

static int setup_cpuid(void)
{
	int n = 128;
	struct kvm_cpuid2 *c;
	for (;;) {
		c = calloc(1, sizeof(*c) + n * sizeof(struct kvm_cpuid_entry2));
		if (!c)
			return -ENOMEM;
		c->nent = n;
		if (ioctl(dune_vm.kvm_fd, KVM_GET_SUPPORTED_CPUID, c) == 0)
			break;
		free(c);
		if (errno != E2BIG)
			return dune_fail(-ENOTSUP, "KVM_GET_SUPPORTED_CPUID: %s",
					 strerror(errno));
		n *= 2;
	}
	/* Never claim a feature the host CPU lacks: glibc chose its routines
	 * from the host's CPUID. */
	for (uint32_t i = 0; i < c->nent; i++) {
		struct kvm_cpuid_entry2 *e = &c->entries[i];
		unsigned a, b, cc, d;
		if (e->function != 1 && e->function != 7 &&
		    e->function != 0x80000001)
			continue;
		__cpuid_count(e->function, e->index, a, b, cc, d);
		if (e->function == 1) {
			e->ecx &= cc | (1u << 27); /* OSXSAVE follows CR4 */
			e->edx &= d;
		} else {
			e->ebx &= b;
			e->ecx &= cc;
			e->edx &= d;
		}
	}
	dune_vm.cpuid = c;
	unsigned a, b, cc, d;
	__cpuid(0x80000008, a, b, cc, d);
	for (uint32_t i = 0; i < c->nent; i++)
		if (c->entries[i].function == 0x80000008)
			a = c->entries[i].eax;
	dune_vm.phys_bits = a & 0xff;
	if (dune_vm.phys_bits < 36 || dune_vm.phys_bits > 52)
		dune_vm.phys_bits = 36;
	return 0;
}

static int kvm_vm_create(void)
{
	int fd = ioctl(dune_vm.kvm_fd, KVM_CREATE_VM, 0);
	if (fd < 0)
		return dune_fail(-ENODEV, "KVM_CREATE_VM: %s", strerror(errno));
	dune_vm.vm_fd = dune_hide_fd(fd);
	/* kvm_intel wants three pages of guest-physical space for the TSS
	 * of its real-mode emulation (kvm_amd ignores the call).  libdune's
	 * vCPUs never leave long mode, so they are never used, but they must
	 * not overlap a memslot: below 4 GiB, where libdune puts none.  Its
	 * other private page, the identity map (KVM_SET_IDENTITY_MAP_ADDR,
	 * default 0xfeffc000, for EPT without unrestricted guest while paging
	 * is off), is below 4 GiB too and left at its default
	 * (Documentation/libdune.md, "Intel VT-x and AMD SVM"). */
	ioctl(dune_vm.vm_fd, KVM_SET_TSS_ADDR, 0xfffbd000UL);
	dune_vm.run_size = ioctl(dune_vm.kvm_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
	int slots = ioctl(dune_vm.kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_NR_MEMSLOTS);
	dune_vm.max_slots = slots > 0 ? slots : 32;
	/* KVM_VCPU_TSC_OFFSET (vCPU attribute, Linux 5.16+) */
	dune_vm.have_tsc_ctrl = ioctl(dune_vm.vm_fd, KVM_CHECK_EXTENSION,
				      KVM_CAP_VCPU_ATTRIBUTES) > 0;
	/* Interrupts between vCPUs, only where DUNE_IPI asks for them
	 * (experimental: Documentation/libdune.md): a local APIC per vCPU in
	 * the kernel and nothing else of a PC's interrupt hardware (KVM's
	 * split irqchip with no routes kept for a user-space I/O APIC).  A
	 * fork child's VM has them if its parent's had. */
	bool forked = dune_vm.cpuid != NULL;
	if (forked ? dune_vm.ipi : dune_env.ipi == 1) {
		struct kvm_enable_cap cap = {.cap = KVM_CAP_SPLIT_IRQCHIP};
		bool ok = ioctl(dune_vm.vm_fd, KVM_ENABLE_CAP, &cap) == 0;
		if (forked && !ok)
			return dune_fail(-ENODEV, "KVM_CAP_SPLIT_IRQCHIP: %s", strerror(errno));
		dune_vm.ipi = dune_vm.ipi_eoi = ok;
	}
	if (forked)
		return 0; /* the parent asked for the rest already */
	int r = setup_cpuid();
	if (r)
		return r;
	for (uint32_t i = 0; i < dune_vm.cpuid->nent && dune_vm.ipi; i++)
		if (dune_vm.cpuid->entries[i].function == 1)
			dune_vm.cpuid->entries[i].ecx |= 1u << 21; /* x2APIC */
	/* XCR0: the host's, limited to what KVM offers this process (no AMX
	 * without a guest permission) and to what libdune's save areas hold. */
	uint64_t kvm_xcr0 = 0x3;
	for (uint32_t i = 0; i < dune_vm.cpuid->nent; i++) {
		struct kvm_cpuid_entry2 *e = &dune_vm.cpuid->entries[i];
		if (e->function == 0xd && e->index == 0)
			kvm_xcr0 = e->eax | ((uint64_t)e->edx << 32);
	}
	dune_vm.xcr0 = dune_host_xcr0() & kvm_xcr0 & DUNE_XCR0_MAX;
	/* KVM accepts CR4.LA57 (KVM_SET_SREGS) only from a vCPU whose CPUID,
	 * as set by KVM_SET_CPUID2, has LA57; this table is that CPUID, and
	 * has it where KVM offers it and the host CPU has it (setup_cpuid). */
	dune_vm.max_levels = 4;
	for (uint32_t i = 0; i < dune_vm.cpuid->nent; i++) {
		struct kvm_cpuid_entry2 *e = &dune_vm.cpuid->entries[i];
		if (e->function == 7 && e->index == 0 &&
		    (e->ecx & DUNE_CPUID7_ECX_LA57))
			dune_vm.max_levels = 5;
	}
	return 0;
}

static int kvm_set_memslot(int slot, uint64_t gpa, uint64_t va, uint64_t size)
{
	struct kvm_userspace_memory_region reg = {
		.slot = (uint32_t)slot,
		.flags = 0,
		.guest_phys_addr = gpa,
		.memory_size = size,
		.userspace_addr = va,
	};
	return (int)dune_sys3(SYS_ioctl, dune_vm.vm_fd, KVM_SET_USER_MEMORY_REGION,
			      &reg);
}

static int kvm_vcpu_create(struct dune_vcpu *v)
{
	long fd = dune_sys3(SYS_ioctl, dune_vm.vm_fd, KVM_CREATE_VCPU, v->id);
	if (fd < 0)
		return (int)fd;
	v->fd = dune_hide_fd((int)fd);
	v->run_size = dune_vm.run_size;
	struct kvm_run *run = mmap(NULL, v->run_size, PROT_READ | PROT_WRITE,
				   MAP_SHARED, v->fd, 0);
	if (run == MAP_FAILED)
		return -errno;
	v->run = run;
	v->kick = &run->immediate_exit;
	long r = dune_sys3(SYS_ioctl, v->fd, KVM_SET_CPUID2, dune_vm.cpuid);
	return r < 0 ? (int)r : 0;
}

static void kvm_seg(struct kvm_segment *s, uint16_t sel, int code, uint64_t base)
{
	memset(s, 0, sizeof(*s));
	s->base = base;
	s->limit = 0xffffffff;
	s->selector = sel;
	s->type = code ? 11 : 3;
	s->present = 1;
	s->dpl = 0;
	s->db = code ? 0 : 1;
	s->s = 1;
	s->l = code ? 1 : 0;
	s->g = 1;
}

/*
 * The vCPU's local APIC, once kvm_vcpu_setup has put it in x2APIC mode
 * (its APIC ID is the vCPU's id): software-enabled (spurious vector 0xff),
 * and the vCPU runnable: with an in-kernel APIC KVM starts every vCPU but
 * the first waiting for INIT and SIPI, as a PC's application processors do.
 */
static int kvm_apic_setup(struct dune_vcpu *v)
{
	struct kvm_lapic_state apic;
	if (ioctl(v->fd, KVM_GET_LAPIC, &apic) < 0)
		return -errno;
	uint32_t svr;
	memcpy(&svr, apic.regs + DUNE_APIC_SVR, 4);
	svr |= DUNE_APIC_SVR_ENABLE | 0xff;
	memcpy(apic.regs + DUNE_APIC_SVR, &svr, 4);
	if (ioctl(v->fd, KVM_SET_LAPIC, &apic) < 0)
		return -errno;
	struct kvm_mp_state mp = {.mp_state = KVM_MP_STATE_RUNNABLE};
	if (ioctl(v->fd, KVM_SET_MP_STATE, &mp) < 0)
		return -errno;
	return 0;
}

static int kvm_vcpu_setup(struct dune_vcpu *v, const struct dune_cpu_setup *cs)
{
	struct kvm_sregs s;
	if (ioctl(v->fd, KVM_GET_SREGS, &s) < 0)
		return -errno;
	kvm_seg(&s.cs, GDT_KCODE, 1, 0);
	kvm_seg(&s.ds, GDT_KDATA, 0, 0);
	s.es = s.ss = s.ds;
	kvm_seg(&s.fs, GDT_KDATA, 0, cs->fs_base);
	kvm_seg(&s.gs, GDT_KDATA, 0, cs->gs_base);
	memset(&s.tr, 0, sizeof(s.tr));
	s.tr.base = cs->tr_base;
	s.tr.limit = cs->tr_limit;
	s.tr.selector = cs->tr_sel;
	s.tr.type = 11;
	s.tr.present = 1;
	s.gdt.base = cs->gdt_base;
	s.gdt.limit = cs->gdt_limit;
	s.idt.base = cs->idt_base;
	s.idt.limit = cs->idt_limit;
	s.cr0 = cs->cr0;
	s.cr3 = cs->cr3;
	s.cr4 = cs->cr4;
	s.efer = cs->efer;
	if (ioctl(v->fd, KVM_SET_SREGS, &s) < 0)
		return -errno;

	uint64_t mbuf[(sizeof(struct kvm_msrs) + 8 * sizeof(struct kvm_msr_entry)) / 8];
	struct kvm_msrs *m = (struct kvm_msrs *)mbuf;
	memset(mbuf, 0, sizeof(mbuf));
	uint32_t idx[] = {MSR_STAR, MSR_LSTAR, MSR_CSTAR, MSR_SFMASK,
			  MSR_KERNEL_GS_BASE};
	uint64_t val[] = {cs->star, cs->lstar, cs->cstar, cs->sfmask,
			  cs->kernel_gs_base};
	int n = 5;
	for (int i = 0; i < n; i++) {
		m->entries[i].index = idx[i];
		m->entries[i].data = val[i];
	}
	/* The TSC must agree with the host's so the vDSO's clock_gettime is
	 * right in the guest: offset 0 where KVM allows setting it. */
	if (dune_vm.have_tsc_ctrl) {
		uint64_t off = 0;
		struct kvm_device_attr a = {.group = KVM_VCPU_TSC_CTRL,
					    .attr = KVM_VCPU_TSC_OFFSET,
					    .addr = (uint64_t)&off};
		if (ioctl(v->fd, KVM_SET_DEVICE_ATTR, &a) < 0)
			dune_vm.have_tsc_ctrl = 0;
	}
	if (!dune_vm.have_tsc_ctrl) {
		m->entries[n].index = MSR_IA32_TSC;
		m->entries[n].data = __builtin_ia32_rdtsc();
		n++;
	}
	if (dune_vm.ipi) { /* x2APIC mode: CPUID says x2APIC by now */
		m->entries[n].index = DUNE_MSR_APIC_BASE;
		m->entries[n].data = DUNE_APIC_DEFAULT_BASE | DUNE_APIC_BASE_EN |
				     DUNE_APIC_BASE_EXTD |
				     (v->id == 0 ? DUNE_APIC_BASE_BSP : 0);
		n++;
	}
	m->nmsrs = n;
	if (ioctl(v->fd, KVM_SET_MSRS, m) != n)
		return -EINVAL;
	struct kvm_xcrs x;
	memset(&x, 0, sizeof(x));
	x.nr_xcrs = 1;
	x.xcrs[0].xcr = 0;
	x.xcrs[0].value = dune_vm.xcr0;
	if (ioctl(v->fd, KVM_SET_XCRS, &x) < 0)
		return -errno;
	return dune_vm.ipi ? kvm_apic_setup(v) : 0;
}

static int kvm_get_regs(struct dune_vcpu *v, struct kvm_regs *r)
{
	return (int)dune_sys3(SYS_ioctl, v->fd, KVM_GET_REGS, r);
}

static int kvm_set_regs(struct dune_vcpu *v, const struct kvm_regs *r)
{
	return (int)dune_sys3(SYS_ioctl, v->fd, KVM_SET_REGS, r);
}

static int kvm_set_fs_base(struct dune_vcpu *v, uint64_t base)
{
	struct kvm_sregs s;
	long r = dune_sys3(SYS_ioctl, v->fd, KVM_GET_SREGS, &s);
	if (r)
		return (int)r;
	s.fs.base = base;
	return (int)dune_sys3(SYS_ioctl, v->fd, KVM_SET_SREGS, &s);
}

static uint64_t kvm_get_cr2(struct dune_vcpu *v)
{
	struct kvm_sregs s;
	memset(&s, 0, sizeof(s));
	dune_sys3(SYS_ioctl, v->fd, KVM_GET_SREGS, &s);
	return s.cr2;
}

static int kvm_get_xsave(struct dune_vcpu *v, struct kvm_xsave *xs)
{
	return (int)dune_sys3(SYS_ioctl, v->fd, KVM_GET_XSAVE, xs);
}

static int kvm_set_xsave(struct dune_vcpu *v, const struct kvm_xsave *xs)
{
	return (int)dune_sys3(SYS_ioctl, v->fd, KVM_SET_XSAVE, xs);
}

static long kvm_run(struct dune_vcpu *v, struct dune_run_exit *x)
{
	long r = dune_sys3(SYS_ioctl, v->fd, KVM_RUN, 0);
	if (r < 0)
		return r;
	struct kvm_run *run = v->run;
	memset(x, 0, sizeof(*x));
	v->last_exit = run->exit_reason;
	switch (run->exit_reason) {
	case KVM_EXIT_IO:
		x->kind = DUNE_X_IO;
		x->port = run->io.port;
		break;
	case KVM_EXIT_HLT:
		x->kind = DUNE_X_HLT;
		break;
	case KVM_EXIT_SHUTDOWN:
		x->kind = DUNE_X_SHUTDOWN;
		break;
	case KVM_EXIT_MMIO:
		x->kind = DUNE_X_UNMAPPED;
		x->code = run->mmio.phys_addr;
		break;
	case KVM_EXIT_FAIL_ENTRY:
		x->kind = DUNE_X_FAIL_ENTRY;
		x->code = run->fail_entry.hardware_entry_failure_reason;
		break;
	case KVM_EXIT_INTERNAL_ERROR:
		x->kind = DUNE_X_INTERNAL;
		x->code = run->internal.suberror;
		break;
	default:
		x->kind = DUNE_X_OTHER;
		x->code = run->exit_reason;
		break;
	}
	return 0;
}

/* KVM completes a pending `out` on the next KVM_RUN, which immediate_exit
 * ends before any guest instruction. */
static void kvm_complete_io(struct dune_vcpu *v)
{
	*v->kick = 1;
	dune_sys3(SYS_ioctl, v->fd, KVM_RUN, 0);
	*v->kick = 0;
}

const struct dune_driver dune_drv_kvm = {
	.name = "kvm",
	.device = "/dev/kvm",
	.check = kvm_check,
	.vm_create = kvm_vm_create,
	.set_memslot = kvm_set_memslot,
	.vcpu_create = kvm_vcpu_create,
	.vcpu_setup = kvm_vcpu_setup,
	.get_regs = kvm_get_regs,
	.set_regs = kvm_set_regs,
	.set_fs_base = kvm_set_fs_base,
	.get_cr2 = kvm_get_cr2,
	.get_xsave = kvm_get_xsave,
	.set_xsave = kvm_set_xsave,
	.run = kvm_run,
	.complete_io = kvm_complete_io,
};
