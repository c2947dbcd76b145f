/* SPDX-License-Identifier: MIT */
/*
 * The /dev/dune driver: libdune's VM on our own module, dune.ko (kmod/,
 * ABI in kmod/dune_abi.h).  Each open of /dev/dune is a VM of the opening
 * process; memslots are its regions; a vCPU is a descriptor run with
 * DUNE_VCPU_RUN.
 *
 * What differs from KVM:
 *  - The guest runs on the calling thread's own FPU and vector registers,
 *    so this driver keeps the guest's copy in the run area: restored right
 *    before DUNE_VCPU_RUN and saved right after it, in one asm block, so
 *    that libdune's own host code (memcpy, printf, ...) never disturbs it.
 *  - The guest's CPUID and XCR0 are the host's own (dune.ko intercepts
 *    neither cpuid nor xgetbv and refuses xsetbv), so glibc's ifunc choices
 *    stay valid with nothing to mask; the TSC is the host's (offset 0).
 *  - An `out` exit is already past the instruction: nothing to complete.
 *  - dune.ko makes the guest's ordinary system calls itself, in the
 *    kernel, without coming back here (DUNE_SET_SYSCALLS): every call but
 *    the ones syscall.c handles.
 *  - Interrupts between vCPUs have no local APIC behind them: the module
 *    handles the guest's ICR write itself and hands the vector to the
 *    target as a virtual interrupt, which needs no EOI.
 */
#include "internal.h"
#include "../kmod/dune_abi.h"

#include <cpuid.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#define DD_FPU_SIZE 4096 /* as struct kvm_xsave: holds DUNE_XCR0_MAX's state */

struct dd_run {
	struct dune_exit exit;
	uint8_t fpu[DD_FPU_SIZE] __attribute__((aligned(64)));
};

static uint32_t dd_mxcsr_mask = 0xffbf;

static int dd_open(void)
{
	int fd = open("/dev/dune", O_RDWR | O_CLOEXEC);
	if (fd < 0) {
		int e = errno;
		if (e == ENOENT || e == ENXIO || e == ENODEV)
			return dune_fail(-ENOENT, "no /dev/dune (dune.ko is not loaded: "
						  "sudo dangless-setup, or DUNE_DEVICE=kvm)");
		if (e == EACCES || e == EPERM)
			return dune_fail(-EACCES, "no permission to open /dev/dune "
						  "(join the dune group?)");
		return dune_fail(-e, "cannot open /dev/dune: %s", strerror(e));
	}
	int abi = ioctl(fd, DUNE_GET_ABI_VERSION);
	if (abi != DUNE_ABI_VERSION) {
		close(fd);
		return dune_fail(-ENOTSUP, "/dev/dune speaks ABI %d, this libdune "
					   "needs %d: load the dune.ko built with it",
				 abi, DUNE_ABI_VERSION);
	}
	return fd;
}

static int dd_check(void)
{
	int fd = dd_open();
	if (fd < 0)
		return fd;
	close(fd);
	dune_vm.kvm_fd = -1;
	return 0;
}

static int dd_vm_create(void)
{
	int fd = dd_open();
	if (fd < 0)
		return fd;
	dune_vm.vm_fd = dune_hide_fd(fd);
	dune_vm.max_slots = DUNE_MAX_REGIONS;
	/* dune.ko's VMCB/VMCS starts the guest with 4-level paging and its
	 * nested tables are 4-level too (kmod/): no LA57 here, yet. */
	dune_vm.max_levels = 4;
	dune_vm.xcr0 = dune_host_xcr0() & DUNE_XCR0_MAX;
	unsigned a, b, c, d;
	__cpuid(0x80000008, a, b, c, d);
	dune_vm.phys_bits = a & 0xff;
	if (dune_vm.phys_bits < 36 || dune_vm.phys_bits > 52)
		dune_vm.phys_bits = 36;
	uint8_t fx[512] __attribute__((aligned(16)));
	memset(fx, 0, sizeof(fx));
	__asm__ volatile("fxsave64 %0" : "=m"(fx));
	memcpy(&dd_mxcsr_mask, fx + 28, 4);
	if (!dd_mxcsr_mask)
		dd_mxcsr_mask = 0xffbf;

	/* The guest's ordinary system calls, made by the module in the kernel */
	struct dune_syscalls sc;
	memset(&sc, 0, sizeof(sc));
	if (!dune_env.no_kernel_syscalls) {
		uint64_t allowed[DUNE_SYSCALLS_MAX / 64];
		sc.port = DUNE_PORT_SYSCALL;
		dune_syscalls_not_special(allowed);
		memcpy(sc.allowed, allowed, sizeof(sc.allowed));
	}
	if (ioctl(dune_vm.vm_fd, DUNE_SET_SYSCALLS, &sc) < 0)
		return dune_fail(-errno, "DUNE_SET_SYSCALLS: %s", strerror(errno));
	/* Interrupts between vCPUs unless DUNE_IPI=0 refuses them (a fork
	 * child's VM alike, from the same environment): each vCPU gets its id
	 * as APIC ID; the module takes the ICR write and needs no EOI. */
	dune_vm.ipi = dune_env.ipi != 0;
	dune_vm.ipi_eoi = false;
	return 0;
}

static int dd_set_memslot(int slot, uint64_t gpa, uint64_t va, uint64_t size)
{
	struct dune_region r = {.slot = (uint32_t)slot, .flags = 0,
				.guest_phys = gpa, .user_addr = va, .size = size};
	return (int)dune_sys3(SYS_ioctl, dune_vm.vm_fd, DUNE_SET_REGION, &r);
}

static void dd_xsave(uint8_t *buf)
{
	uint64_t m = dune_vm.xcr0;
	__asm__ volatile("xsave64 (%0)"
			 :
			 : "r"(buf), "a"((uint32_t)m), "d"((uint32_t)(m >> 32))
			 : "memory");
}

static int dd_vcpu_create(struct dune_vcpu *v)
{
	long fd = dune_sys3(SYS_ioctl, dune_vm.vm_fd, DUNE_CREATE_VCPU, 0);
	if (fd < 0)
		return (int)fd;
	v->fd = dune_hide_fd((int)fd);
	if (dune_vm.ipi) {
		long r = dune_sys3(SYS_ioctl, v->fd, DUNE_VCPU_SET_APIC_ID, v->id);
		if (r < 0)
			return dune_fail((int)r, "DUNE_VCPU_SET_APIC_ID %d: %s", v->id,
					 strerror((int)-r));
	}
	v->run_size = sizeof(struct dd_run);
	struct dd_run *run = mmap(NULL, v->run_size, PROT_READ | PROT_WRITE,
				  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (run == MAP_FAILED)
		return -errno;
	v->run = run;
	v->kick = &run->exit.immediate_exit;
	memset(run->fpu, 0, 1024);
	dd_xsave(run->fpu); /* the thread's state until set_xsave says more */
	return 0;
}

static int dd_get_state(struct dune_vcpu *v, struct dune_vcpu_state *st)
{
	return (int)dune_sys3(SYS_ioctl, v->fd, DUNE_VCPU_GET_STATE, st);
}

static int dd_set_state(struct dune_vcpu *v, const struct dune_vcpu_state *st)
{
	return (int)dune_sys3(SYS_ioctl, v->fd, DUNE_VCPU_SET_STATE, st);
}

static int dd_vcpu_setup(struct dune_vcpu *v, const struct dune_cpu_setup *cs)
{
	struct dune_vcpu_state st;
	int r = dd_get_state(v, &st);
	if (r)
		return r;
	struct dune_sregs *s = &st.sregs;
	s->cr0 = cs->cr0;
	s->cr3 = cs->cr3;
	s->cr4 = cs->cr4;
	s->efer = cs->efer;
	s->gdt_base = cs->gdt_base;
	s->gdt_limit = cs->gdt_limit;
	s->idt_base = cs->idt_base;
	s->idt_limit = cs->idt_limit;
	s->tr_base = cs->tr_base;
	s->tr_limit = cs->tr_limit;
	s->fs_base = cs->fs_base;
	s->gs_base = cs->gs_base;
	s->kernel_gs_base = cs->kernel_gs_base;
	s->star = cs->star;
	s->lstar = cs->lstar;
	s->cstar = cs->cstar;
	s->sfmask = cs->sfmask;
	return dd_set_state(v, &st);
}

static int dd_get_regs(struct dune_vcpu *v, struct kvm_regs *r)
{
	struct dune_vcpu_state st;
	int e = dd_get_state(v, &st);
	if (e)
		return e;
	const struct dune_regs *d = &st.regs;
	memset(r, 0, sizeof(*r));
	r->rax = d->rax, r->rbx = d->rbx, r->rcx = d->rcx, r->rdx = d->rdx;
	r->rsi = d->rsi, r->rdi = d->rdi, r->rsp = d->rsp, r->rbp = d->rbp;
	r->r8 = d->r8, r->r9 = d->r9, r->r10 = d->r10, r->r11 = d->r11;
	r->r12 = d->r12, r->r13 = d->r13, r->r14 = d->r14, r->r15 = d->r15;
	r->rip = d->rip, r->rflags = d->rflags;
	return 0;
}

static int dd_set_regs(struct dune_vcpu *v, const struct kvm_regs *r)
{
	struct dune_vcpu_state st;
	int e = dd_get_state(v, &st);
	if (e)
		return e;
	struct dune_regs *d = &st.regs;
	d->rax = r->rax, d->rbx = r->rbx, d->rcx = r->rcx, d->rdx = r->rdx;
	d->rsi = r->rsi, d->rdi = r->rdi, d->rsp = r->rsp, d->rbp = r->rbp;
	d->r8 = r->r8, d->r9 = r->r9, d->r10 = r->r10, d->r11 = r->r11;
	d->r12 = r->r12, d->r13 = r->r13, d->r14 = r->r14, d->r15 = r->r15;
	d->rip = r->rip;
	/* a program's signal context may carry any bits: keep those dune.ko
	 * lets a guest hold (not VM, VIF, VIP or reserved ones) */
	d->rflags = (r->rflags & 0x257fd7ULL) | 2;
	return dd_set_state(v, &st);
}

static int dd_set_fs_base(struct dune_vcpu *v, uint64_t base)
{
	struct dune_vcpu_state st;
	int e = dd_get_state(v, &st);
	if (e)
		return e;
	st.sregs.fs_base = base;
	return dd_set_state(v, &st);
}

static uint64_t dd_get_cr2(struct dune_vcpu *v)
{
	struct dune_vcpu_state st;
	return dd_get_state(v, &st) ? 0 : st.sregs.cr2;
}

static int dd_get_xsave(struct dune_vcpu *v, struct kvm_xsave *xs)
{
	struct dd_run *run = v->run;
	memcpy(xs->region, run->fpu, sizeof(xs->region));
	return 0;
}

/* A program's signal context may hold anything: keep what xrstor refuses
 * (reserved header or MXCSR bits) out of the image, as KVM_SET_XSAVE would
 * refuse it. */
static int dd_set_xsave(struct dune_vcpu *v, const struct kvm_xsave *xs)
{
	struct dd_run *run = v->run;
	uint64_t hdr[8];
	uint32_t mxcsr;
	memcpy(run->fpu, xs->region, sizeof(xs->region));
	memcpy(hdr, run->fpu + 512, sizeof(hdr));
	hdr[0] &= dune_vm.xcr0; /* XSTATE_BV */
	for (int i = 1; i < 8; i++)
		hdr[i] = 0; /* XCOMP_BV (standard format) and reserved */
	memcpy(run->fpu + 512, hdr, sizeof(hdr));
	memcpy(&mxcsr, run->fpu + 24, 4);
	mxcsr &= dd_mxcsr_mask;
	memcpy(run->fpu + 24, &mxcsr, 4);
	return 0;
}

/* xrstor the guest's FPU state, DUNE_VCPU_RUN, xsave it: nothing of
 * libdune's own runs in between. */
static long dd_enter(int fd, struct dd_run *run)
{
	uint64_t m = dune_vm.xcr0;
	uint32_t lo = (uint32_t)m, hi = (uint32_t)(m >> 32);
	long ret;
	__asm__ volatile("mov %[lo], %%eax\n\t"
			 "mov %[hi], %%edx\n\t"
			 "xrstor64 (%[fpu])\n\t"
			 "mov %[nr], %%eax\n\t"
			 "mov %[arg], %%rdx\n\t"
			 "syscall\n\t"
			 "mov %%rax, %[ret]\n\t"
			 "mov %[lo], %%eax\n\t"
			 "mov %[hi], %%edx\n\t"
			 "xsave64 (%[fpu])"
			 : [ret] "=&r"(ret)
			 : [lo] "r"(lo), [hi] "r"(hi), [fpu] "r"(run->fpu),
			   [nr] "i"(SYS_ioctl), [arg] "r"(&run->exit),
			   "D"((long)fd), "S"((long)DUNE_VCPU_RUN)
			 : "rax", "rdx", "rcx", "r11", "memory");
	return ret;
}

/* KVM answers a guest's vmcall/vmmcall with -KVM_ENOSYS; so does this. */
#define DD_KVM_ENOSYS 1000

static long dd_run(struct dune_vcpu *v, struct dune_run_exit *x)
{
	struct dd_run *run = v->run;
	for (;;) {
		long r = dd_enter(v->fd, run);
		/* EINTR without a signal for the guest: the kernel did its work
		 * on the way back to user mode (task work, rseq); run on */
		if (r == -EINTR && !*v->kick)
			continue;
		if (r < 0)
			return r;
		const struct dune_exit *e = &run->exit;
		memset(x, 0, sizeof(*x));
		v->last_exit = e->reason;
		switch (e->reason) {
		case DUNE_EXIT_IO:
			x->kind = DUNE_X_IO;
			x->port = e->port;
			x->syscall_interrupted =
				!!(e->flags & DUNE_EXIT_F_SYSCALL_INTERRUPTED);
			return 0;
		case DUNE_EXIT_VMMCALL: {
			struct kvm_regs regs;
			if ((r = dd_get_regs(v, &regs)))
				return r;
			regs.rax = (uint64_t)-DD_KVM_ENOSYS;
			if ((r = dd_set_regs(v, &regs)))
				return r;
			continue;
		}
		case DUNE_EXIT_HLT:
			x->kind = DUNE_X_HLT;
			return 0;
		case DUNE_EXIT_SHUTDOWN:
			x->kind = DUNE_X_SHUTDOWN;
			return 0;
		case DUNE_EXIT_NPF:
			/* inside a memslot: host memory that is not there or
			 * protected (KVM_RUN's EFAULT) */
			if (e->gpa >= (4ULL << 30) && e->gpa < dune_vm.next_gpa)
				return -EFAULT;
			x->kind = DUNE_X_UNMAPPED;
			x->code = e->gpa;
			return 0;
		case DUNE_EXIT_INVALID:
			x->kind = DUNE_X_FAIL_ENTRY;
			x->code = e->svm_exit_code;
			return 0;
		default:
			x->kind = DUNE_X_OTHER;
			x->code = e->svm_exit_code;
			return 0;
		}
	}
}

static void dd_complete_io(struct dune_vcpu *v)
{
	(void)v; /* dune.ko's `out` exits are past the instruction already */
}

const struct dune_driver dune_drv_dune = {
	.name = "dune",
	.device = "/dev/dune",
	.check = dd_check,
	.vm_create = dd_vm_create,
	.set_memslot = dd_set_memslot,
	.vcpu_create = dd_vcpu_create,
	.vcpu_setup = dd_vcpu_setup,
	.get_regs = dd_get_regs,
	.set_regs = dd_set_regs,
	.set_fs_base = dd_set_fs_base,
	.get_cr2 = dd_get_cr2,
	.get_xsave = dd_get_xsave,
	.set_xsave = dd_set_xsave,
	.run = dd_run,
	.complete_io = dd_complete_io,
};
