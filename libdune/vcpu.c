/* SPDX-License-Identifier: MIT */
/*
 * vCPUs: allocating one (its GDT, TSS, IST stacks and host stack), creating
 * or reusing the driver's vCPU and putting it in 64-bit ring 0 with
 * libdune's IDT and LSTAR stub (the driver adds the host's TSC, XCR0 and
 * CPUID), and dune_enter(), which moves the calling thread onto a new vCPU
 * with its registers and FPU state and continues in vcpu_run.c's loop.
 */
#include "internal.h"

#include <asm/prctl.h>
#include <cpuid.h>
#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>

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

void dune_vcpu_release(struct dune_vcpu *v)
{
	/* the same for both drivers: the run area mmapped from the vCPU's
	 * descriptor, and the descriptor */
	if (v->run)
		dune_sys2(SYS_munmap, v->run, v->run_size);
	if (v->fd >= 0)
		dune_close_fd(v->fd);
	v->run = NULL;
	v->kick = NULL;
	v->fd = -1;
}

void dune_vcpu_free(struct dune_vcpu *v)
{
	dune_vcpu_release(v);
	munmap(v->host_stack, v->host_stack_size);
	munmap(v->ist_mem, DUNE_NIST * DUNE_IST_SIZE);
	munmap(v, sizeof(*v));
}

static void cpu_setup_of(struct dune_cpu_setup *cs, struct dune_vcpu *v,
			 uint64_t fs_base)
{
	memset(cs, 0, sizeof(*cs));
	cs->fs_base = fs_base;
	cs->gs_base = (uint64_t)v;
	cs->tr_base = (uint64_t)&v->tss;
	cs->tr_limit = sizeof(v->tss) - 1;
	cs->tr_sel = GDT_TSS;
	cs->gdt_base = (uint64_t)v->gdt;
	cs->gdt_limit = sizeof(v->gdt) - 1;
	cs->idt_base = (uint64_t)dune_idt;
	cs->idt_limit = 256 * 16 - 1;
	cs->cr0 = 0x80050033; /* PG AM WP NE ET MP PE */
	cs->cr3 = dune_pool_pa(dune_pgtable_top());
	cs->cr4 = 0x20 | 0x200 | 0x400 | 0x40000; /* PAE OSFXSR OSXMMEXCPT OSXSAVE */
	if (dune_vm.levels == 5)
		cs->cr4 |= DUNE_CR4_LA57; /* the driver allowed it (max_levels) */
	{
		unsigned a, b, c, d;
		if (__get_cpuid_count(7, 0, &a, &b, &c, &d) && (b & 1))
			cs->cr4 |= 0x10000; /* FSGSBASE, as the host kernel gives */
	}
	cs->efer = EFER_SCE | EFER_LME | EFER_LMA | EFER_NXE;
	cs->star = (uint64_t)GDT_KCODE << 32 | (uint64_t)GDT_KCODE << 48;
	cs->lstar = (uint64_t)dune_syscall_entry;
	cs->cstar = 0;
	cs->sfmask = 0x100 | 0x400 | 0x4000 | 0x40000; /* TF DF NT AC */
	cs->kernel_gs_base = 0;
}

/* vCPUs of exited threads, for reuse: KVM frees a vCPU only with its VM,
 * and a VM has at most KVM_MAX_VCPUS of them. */
#define DUNE_SPARE_MAX 4096
static struct {
	int fd, id;
	void *run;
	size_t run_size;
	volatile uint8_t *kick;
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
		dune_spare[dune_nspare].run_size = v->run_size;
		dune_spare[dune_nspare].kick = v->kick;
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
		v->run_size = dune_spare[dune_nspare].run_size;
		v->kick = dune_spare[dune_nspare].kick;
		ok = 0;
	}
	spare_unlock();
	return ok;
}

int dune_vcpu_create(struct dune_vcpu *v, uint64_t fs_base)
{
	int r;
	if (spare_get(v) != 0) {
		v->id = __atomic_fetch_add(&dune_vm.next_vcpu_id, 1, __ATOMIC_RELAXED);
		if ((r = dune_drv->vcpu_create(v)))
			return r;
		dune_stat_vcpus++;
	}
	struct dune_cpu_setup cs;
	cpu_setup_of(&cs, v, fs_base);
	if ((r = dune_drv->vcpu_setup(v, &cs)))
		return r;
	v->fs_base = fs_base;
	return 0;
}

/* The registers of a trap frame, every one as it is in the frame. */
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

/* The host's own FPU/SSE/AVX state, in the standard xsave layout. */
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
	int r = dune_vcpu_create(v, fs);
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
	if ((r = dune_drv->set_regs(v, &regs)) || (r = dune_drv->set_xsave(v, &xs))) {
		dune_vcpu_free(v);
		return dune_fail(r, "cannot set the vCPU's registers: %s", strerror(-r));
	}
	dune_signals_route();
	dune_run_on_stack((char *)v->host_stack + v->host_stack_size,
			  dune_vcpu_loop, v);
}
