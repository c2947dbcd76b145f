/* SPDX-License-Identifier: MIT */
/*
 * vCPUs: allocating one (its GDT, TSS, IST stacks and host stack), creating
 * or reusing the KVM vCPU and putting it in 64-bit ring 0 with libdune's
 * IDT, LSTAR stub and the host's TSC, XCR0 and CPUID, and dune_enter(),
 * which moves the calling thread onto a new vCPU with its registers and
 * FPU state and continues in vcpu_run.c's loop.
 */
#include "internal.h"

#include <asm/prctl.h>
#include <cpuid.h>
#include <errno.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>

#define MSR_EFER 0xc0000080
#define MSR_STAR 0xc0000081
#define MSR_LSTAR 0xc0000082
#define MSR_CSTAR 0xc0000083
#define MSR_SFMASK 0xc0000084
#define MSR_KERNEL_GS_BASE 0xc0000102
#define MSR_IA32_TSC 0x10

#define EFER_SCE 0x1
#define EFER_LME 0x100
#define EFER_LMA 0x400
#define EFER_NXE 0x800

#define HOST_STACK_SIZE (1024 * 1024)

static uint64_t gdt_tss_lo(uint64_t base, uint32_t limit)
{
	return (limit & 0xffff) | ((base & 0xffffff) << 16) | (0x89ULL << 40) |
	       ((uint64_t)((limit >> 16) & 0xf) << 48) |
	       (((base >> 24) & 0xff) << 56);
}

struct dune_vcpu *dune_vcpu_alloc(void)
{
	struct dune_vcpu *v = mmap(NULL, sizeof(*v), PROT_READ | PROT_WRITE,
				   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (v == MAP_FAILED)
		return NULL;
	v->self = v;
	v->fd = -1;
	v->ist_mem = mmap(NULL, DUNE_NIST * DUNE_IST_SIZE, PROT_READ | PROT_WRITE,
			  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	v->host_stack_size = HOST_STACK_SIZE;
	v->host_stack = mmap(NULL, HOST_STACK_SIZE, PROT_READ | PROT_WRITE,
			     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK,
			     -1, 0);
	if (v->ist_mem == MAP_FAILED || v->host_stack == MAP_FAILED) {
		munmap(v, sizeof(*v));
		return NULL;
	}
	dune_map_range((uint64_t)v, sizeof(*v));
	dune_map_range((uint64_t)v->ist_mem, DUNE_NIST * DUNE_IST_SIZE);
	v->gdt[0] = 0;
	v->gdt[1] = 0x00af9b000000ffffULL; /* 64-bit code, DPL 0 */
	v->gdt[2] = 0x00cf93000000ffffULL; /* data, DPL 0 */
	uint64_t tb = (uint64_t)&v->tss;
	v->gdt[3] = gdt_tss_lo(tb, sizeof(v->tss) - 1);
	v->gdt[4] = tb >> 32;
	v->gdt[5] = 0;
	for (int i = 0; i < DUNE_NIST; i++)
		v->tss.ist[i] = (uint64_t)v->ist_mem + (i + 1) * DUNE_IST_SIZE;
	v->tss.iomap_base = sizeof(v->tss);
	return v;
}

void dune_vcpu_free(struct dune_vcpu *v)
{
	if (v->run)
		munmap(v->run, v->run_size);
	if (v->fd >= 0)
		dune_close_fd(v->fd);
	munmap(v->host_stack, v->host_stack_size);
	munmap(v->ist_mem, DUNE_NIST * DUNE_IST_SIZE);
	munmap(v, sizeof(*v));
}

static void seg(struct kvm_segment *s, uint16_t sel, int code, uint64_t base)
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

static int vcpu_sregs(struct dune_vcpu *v, uint64_t fs_base)
{
	struct kvm_sregs s;
	if (ioctl(v->fd, KVM_GET_SREGS, &s) < 0)
		return -errno;
	seg(&s.cs, GDT_KCODE, 1, 0);
	seg(&s.ds, GDT_KDATA, 0, 0);
	s.es = s.ss = s.ds;
	seg(&s.fs, GDT_KDATA, 0, fs_base);
	seg(&s.gs, GDT_KDATA, 0, (uint64_t)v);
	memset(&s.tr, 0, sizeof(s.tr));
	s.tr.base = (uint64_t)&v->tss;
	s.tr.limit = sizeof(v->tss) - 1;
	s.tr.selector = GDT_TSS;
	s.tr.type = 11;
	s.tr.present = 1;
	s.gdt.base = (uint64_t)v->gdt;
	s.gdt.limit = sizeof(v->gdt) - 1;
	s.idt.base = (uint64_t)dune_idt;
	s.idt.limit = 256 * 16 - 1;
	s.cr0 = 0x80050033; /* PG AM WP NE ET MP PE */
	s.cr3 = dune_pool_pa(pgroot);
	s.cr4 = 0x20 | 0x200 | 0x400 | 0x40000; /* PAE OSFXSR OSXMMEXCPT OSXSAVE */
	{
		unsigned a, b, c, d;
		if (__get_cpuid_count(7, 0, &a, &b, &c, &d) && (b & 1))
			s.cr4 |= 0x10000; /* FSGSBASE, as the host kernel gives */
	}
	s.efer = EFER_SCE | EFER_LME | EFER_LMA | EFER_NXE;
	if (ioctl(v->fd, KVM_SET_SREGS, &s) < 0)
		return -errno;
	v->fs_base = fs_base;
	return 0;
}

/* vCPUs of exited threads, for reuse: KVM frees a vCPU only with its VM,
 * and a VM has at most KVM_MAX_VCPUS of them. */
#define DUNE_SPARE_MAX 4096
static struct {
	int fd, id;
	struct kvm_run *run;
} dune_spare[DUNE_SPARE_MAX];
static int dune_nspare;
static volatile int dune_spare_lock;

static void spare_lock(void)
{
	while (__atomic_exchange_n(&dune_spare_lock, 1, __ATOMIC_ACQUIRE))
		__builtin_ia32_pause();
}

static void spare_unlock(void)
{
	__atomic_store_n(&dune_spare_lock, 0, __ATOMIC_RELEASE);
}

/* Keeps an exiting thread's vCPU; 0, or -1 if there is no room. */
int dune_vcpu_spare_put(struct dune_vcpu *v)
{
	int ok = -1;
	spare_lock();
	if (dune_nspare < DUNE_SPARE_MAX) {
		dune_spare[dune_nspare].fd = v->fd;
		dune_spare[dune_nspare].id = v->id;
		dune_spare[dune_nspare].run = v->run;
		dune_nspare++;
		ok = 0;
	}
	spare_unlock();
	return ok;
}

/* Fork child: the spares are the parent's vCPUs, of the parent's VM. */
void dune_vcpu_forget_spares(void)
{
	dune_nspare = 0;
	dune_spare_lock = 0;
}

static int spare_get(struct dune_vcpu *v)
{
	int ok = -1;
	spare_lock();
	if (dune_nspare > 0) {
		dune_nspare--;
		v->fd = dune_spare[dune_nspare].fd;
		v->id = dune_spare[dune_nspare].id;
		v->run = dune_spare[dune_nspare].run;
		v->run_size = dune_vm.run_size;
		ok = 0;
	}
	spare_unlock();
	return ok;
}

int dune_vcpu_create(struct dune_vcpu *v, int vm_fd, uint64_t fs_base)
{
	if (vm_fd != dune_vm.vm_fd || spare_get(v) != 0) {
		int id = __atomic_fetch_add(&dune_vm.next_vcpu_id, 1,
					    __ATOMIC_RELAXED);
		v->id = id;
		v->fd = ioctl(vm_fd, KVM_CREATE_VCPU, id);
		if (v->fd < 0)
			return -errno;
		v->fd = dune_hide_fd(v->fd);
		v->run_size = dune_vm.run_size;
		v->run = mmap(NULL, v->run_size, PROT_READ | PROT_WRITE,
			      MAP_SHARED, v->fd, 0);
		if (v->run == MAP_FAILED) {
			v->run = NULL;
			return -errno;
		}
		if (ioctl(v->fd, KVM_SET_CPUID2, dune_vm.cpuid) < 0)
			return -errno;
		dune_stat_vcpus++;
	}
	int r = vcpu_sregs(v, fs_base);
	if (r)
		return r;
	uint64_t mbuf[(sizeof(struct kvm_msrs) + 8 * sizeof(struct kvm_msr_entry)) / 8];
	struct kvm_msrs *m = (struct kvm_msrs *)mbuf;
	memset(mbuf, 0, sizeof(mbuf));
	uint32_t idx[] = {MSR_STAR, MSR_LSTAR, MSR_CSTAR, MSR_SFMASK,
			  MSR_KERNEL_GS_BASE};
	uint64_t val[] = {(uint64_t)GDT_KCODE << 32 | (uint64_t)GDT_KCODE << 48,
			  (uint64_t)dune_syscall_entry, 0,
			  0x100 | 0x400 | 0x4000 | 0x40000, /* TF DF NT AC */
			  0};
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
	return 0;
}

/* KVM's registers from a trap frame, every register as it is in the frame. */
void dune_regs_of_tf(struct kvm_regs *r, const struct dune_tf *tf)
{
	memset(r, 0, sizeof(*r));
	r->rax = tf->rax;
	r->rbx = tf->rbx;
	r->rcx = tf->rcx;
	r->rdx = tf->rdx;
	r->rsi = tf->rsi;
	r->rdi = tf->rdi;
	r->rbp = tf->rbp;
	r->r8 = tf->r8;
	r->r9 = tf->r9;
	r->r10 = tf->r10;
	r->r11 = tf->r11;
	r->r12 = tf->r12;
	r->r13 = tf->r13;
	r->r14 = tf->r14;
	r->r15 = tf->r15;
	r->rip = tf->rip;
	r->rsp = tf->rsp;
	r->rflags = tf->rflags | 2;
}

/* The host's own FPU/SSE/AVX state, in KVM's (standard xsave) layout. */
static void host_xsave(struct kvm_xsave *xs)
{
	uint8_t buf[8192] __attribute__((aligned(64)));
	memset(buf, 0, 4096);
	uint64_t mask = dune_vm.xcr0;
	__asm__ volatile("xsave64 (%0)"
			 :
			 : "r"(buf), "a"((uint32_t)mask), "d"((uint32_t)(mask >> 32))
			 : "memory");
	memcpy(xs->region, buf, sizeof(xs->region));
}

int dune_enter_c(struct dune_enter_regs *er)
{
	if (dune_in_guest())
		return 0;
	if (!dune_inited)
		return dune_fail(-EINVAL, "dune_enter() before dune_init()");
	struct dune_vcpu *v = dune_vcpu_alloc();
	if (!v)
		return dune_fail(-ENOMEM, "cannot allocate a vCPU");
	uint64_t fs = 0;
	dune_sys2(SYS_arch_prctl, ARCH_GET_FS, &fs);
	int r = dune_vcpu_create(v, dune_vm.vm_fd, fs);
	if (r) {
		dune_vcpu_free(v);
		return dune_fail(r, "cannot create a vCPU: %s", strerror(-r));
	}
	dune_map_range(er->rsp - 4096, 8192);
	dune_map_range(er->rip, 1);
	dune_map_range(fs, 1);
	struct kvm_regs regs;
	memset(&regs, 0, sizeof(regs));
	regs.rbx = er->rbx;
	regs.rbp = er->rbp;
	regs.r12 = er->r12;
	regs.r13 = er->r13;
	regs.r14 = er->r14;
	regs.r15 = er->r15;
	regs.rsp = er->rsp;
	regs.rip = er->rip;
	regs.rflags = er->rflags | 2;
	regs.rax = 0;
	struct kvm_xsave xs;
	host_xsave(&xs);
	if (ioctl(v->fd, KVM_SET_REGS, &regs) < 0 ||
	    ioctl(v->fd, KVM_SET_XSAVE, &xs) < 0) {
		r = -errno;
		dune_vcpu_free(v);
		return dune_fail(r, "cannot set the vCPU's registers: %s", strerror(-r));
	}
	dune_signals_route();
	dune_run_on_stack((char *)v->host_stack + v->host_stack_size,
			  dune_vcpu_loop, v);
}
