/* SPDX-License-Identifier: MIT */
/*
 * The VM: dune_init() refuses what is not hardware KVM (no vmx/svm flag, no
 * XSAVE, then probe.c's timing), creates the VM with the host's CPUID and
 * XCR0, the page-table pool and its memslot, the IDT every vCPU shares, and
 * registers the memory libdune needs (or all of /proc/self/maps).
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
#include <unistd.h>

struct dune_vm dune_vm;
uint64_t *dune_idt;
int dune_inited;

/* ---- host checks ---- */

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

static uint64_t host_xgetbv0(void)
{
	uint32_t lo, hi;
	__asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
	return ((uint64_t)hi << 32) | lo;
}

/* ---- dune_init ---- */

static void idt_build(void)
{
	for (int v = 0; v < 256; v++) {
		uint64_t h = dune_trap_stubs[v];
		/* IST2 for NMI, #DF, #MC; IST1 for the rest */
		uint64_t ist = (v == 2 || v == 8 || v == 18) ? 2 : 1;
		dune_idt[2 * v] = (h & 0xffff) | ((uint64_t)GDT_KCODE << 16) |
				  (ist << 32) | (0x8eULL << 40) |
				  (((h >> 16) & 0xffff) << 48);
		dune_idt[2 * v + 1] = h >> 32;
	}
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

/* Creates the VM, the pool and the memslots.  0 or negative errno. */
int dune_vm_setup(int map_full)
{
	dune_vm.map_full = map_full;
	dune_vm.vm_fd = ioctl(dune_vm.kvm_fd, KVM_CREATE_VM, 0);
	if (dune_vm.vm_fd < 0)
		return dune_fail(-ENODEV, "KVM_CREATE_VM: %s", strerror(errno));
	dune_vm.vm_fd = dune_hide_fd(dune_vm.vm_fd);
	ioctl(dune_vm.vm_fd, KVM_SET_TSS_ADDR, 0xfffbd000UL); /* Intel needs it */
	dune_vm.run_size = ioctl(dune_vm.kvm_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
	int slots = ioctl(dune_vm.kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_NR_MEMSLOTS);
	dune_vm.max_slots = slots > 0 ? slots : 32;
	/* KVM_VCPU_TSC_OFFSET (vCPU attribute, Linux 5.16+) */
	dune_vm.have_tsc_ctrl = ioctl(dune_vm.vm_fd, KVM_CHECK_EXTENSION,
				      KVM_CAP_VCPU_ATTRIBUTES) > 0;
	int r = setup_cpuid();
	if (r)
		return r;
	/* XCR0: the host's, limited to what KVM offers this process (no AMX
	 * without a guest permission) and to state that fits libdune's 8 KiB
	 * save areas (x87 SSE AVX MPX AVX-512 PKRU). */
	uint64_t kvm_xcr0 = 0x3;
	for (uint32_t i = 0; i < dune_vm.cpuid->nent; i++) {
		struct kvm_cpuid_entry2 *e = &dune_vm.cpuid->entries[i];
		if (e->function == 0xd && e->index == 0)
			kvm_xcr0 = e->eax | ((uint64_t)e->edx << 32);
	}
	dune_vm.xcr0 = host_xgetbv0() & kvm_xcr0 & 0x2ffULL;
	dune_vm.next_gpa = 4ULL << 30; /* stay clear of the < 4 GiB holes */
	dune_vm.next_slot = 0;

	/* the page-table pool: 1 GiB aligned, so one chunk covers it */
	dune_vm.pool_size = 256ULL << 20;
	uint8_t *res = mmap(NULL, 2 * DUNE_CHUNK_SIZE, PROT_NONE,
			    MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (res == MAP_FAILED)
		return dune_fail(-ENOMEM, "cannot reserve the page-table pool");
	uint8_t *pool = (uint8_t *)(((uint64_t)res + DUNE_CHUNK_SIZE - 1) &
				    ~(DUNE_CHUNK_SIZE - 1));
	if (pool > res)
		munmap(res, pool - res);
	munmap(pool + dune_vm.pool_size,
	       res + 2 * DUNE_CHUNK_SIZE - (pool + dune_vm.pool_size));
	if (mprotect(pool, dune_vm.pool_size, PROT_READ | PROT_WRITE))
		return dune_fail(-ENOMEM, "cannot map the page-table pool");
	dune_vm.pool = pool;
	dune_vm.pool_used = 0;
	if ((r = dune_map_chunk((uint64_t)pool | 1)))
		return dune_fail(r, "cannot register the pool's memslot: %s",
				 strerror(-r));
	pgroot = dune_pool_alloc();
	dune_install_chunk_mapping((uint64_t)pool >> DUNE_CHUNK_SHIFT,
				   dune_chunk_gpa[(uint64_t)pool >> DUNE_CHUNK_SHIFT] - 1);

	dune_idt = mmap(NULL, 4096, PROT_READ | PROT_WRITE,
			MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (dune_idt == MAP_FAILED)
		return dune_fail(-ENOMEM, "cannot allocate the IDT");
	idt_build();
	dune_map_range((uint64_t)dune_idt, 4096);
	dune_map_range((uint64_t)&dune_vm, sizeof(dune_vm));
	dune_map_range((uint64_t)dune_syscall_entry, 1);
	dune_map_range((uint64_t)dune_chunk_gpa, sizeof(dune_chunk_gpa));
	if (map_full)
		dune_map_proc_self_maps();
	return 0;
}

int dune_init(int map_full)
{
	if (dune_inited)
		return 0;
	dune_errbuf[0] = 0;
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
	if (hv == 0 && !getenv("DUNE_ALLOW_NO_HWVIRT")) {
		close(fd);
		return dune_fail(-ENODEV, "no hardware virtualisation: /proc/cpuinfo has "
					  "no vmx or svm flag, so /dev/kvm is a software "
					  "backend here (it emulates ring 0 and hangs on "
					  "vmcall/vmmcall); refusing");
	}
	{
		unsigned a, b, c, d;
		__cpuid(1, a, b, c, d);
		if (!(c & (1u << 26)) || !(c & (1u << 27))) {
			close(fd);
			return dune_fail(-ENOTSUP, "the CPU has no XSAVE/OSXSAVE");
		}
	}
	dune_vm.kvm_fd = fd = dune_hide_fd(fd);
	int r = dune_speed_probe();
	if (r) {
		dune_close_fd(fd);
		return r;
	}
	r = dune_vm_setup(map_full);
	if (r) {
		dune_close_fd(fd);
		return r;
	}
	dune_inited = 1;
	return 0;
}

int dune_init_and_enter(int map_full)
{
	int r = dune_init(map_full);
	return r ? r : dune_enter();
}
