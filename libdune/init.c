/* SPDX-License-Identifier: MIT */
/*
 * dune_init(): picks the driver (DUNE_DEVICE / dune_set_device(): /dev/dune
 * when present and usable, else /dev/kvm), lets it check the device, times
 * a probe guest (probe.c), then creates the VM through the driver, the
 * page-table pool and its memslot, the IDT every vCPU shares, and registers
 * the memory libdune needs (or all of /proc/self/maps).
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

/* ---- dune_init ---- */

static void idt_build(void)
{
	for (int v = 0; v < 256; v++) {
		uint64_t h = dune_trap_stubs[v];
		/* IST2 for NMI, #DF, #MC; IST3 for interrupts (vectors 32 and
		 * up), so that an exception inside an interrupt's handler (the
		 * #PF that maps a 1 GiB chunk on first touch) does not build
		 * its frame over the interrupt's; IST1 for the other
		 * exceptions.  Interrupts do not nest: their gates clear IF. */
		uint64_t ist = (v == 2 || v == 8 || v == 18) ? 2 : v >= 32 ? 3 : 1;
		dune_idt[2 * v] = (h & 0xffff) | ((uint64_t)GDT_KCODE << 16) |
				  (ist << 32) | (0x8eULL << 40) |
				  (((h >> 16) & 0xffff) << 48);
		dune_idt[2 * v + 1] = h >> 32;
	}
}

/* Creates the VM, the pool and the memslots.  0 or negative errno. */
int dune_vm_setup(int map_full)
{
	dune_vm.map_full = map_full;
	int r = dune_drv->vm_create();
	if (r)
		return r;
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
	/* 5-level paging: a PML5 above the same PML4, so that everything
	 * libdune does in the lower half is unchanged; the upper half is the
	 * program's (dune_pgtable_top()). */
	int want = dune_env.paging ? dune_env.paging : dune_vm.want_levels;
	dune_vm.levels = want == 5 && dune_vm.max_levels >= 5 ? 5 : 4;
	dune_vm.top = pgroot;
	if (dune_vm.levels == 5) {
		ptent_t *pml5 = dune_pool_alloc();
		pml5[0] = dune_pool_pa(pgroot) | PTE_P | PTE_W | PTE_U;
		dune_vm.top = pml5;
	}

	dune_idt = mmap(NULL, 4096, PROT_READ | PROT_WRITE,
			MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (dune_idt == MAP_FAILED)
		return dune_fail(-ENOMEM, "cannot allocate the IDT");
	idt_build();
	dune_map_range((uint64_t)dune_idt, 4096);
	dune_map_range((uint64_t)&dune_vm, sizeof(dune_vm));
	dune_map_range((uint64_t)dune_syscall_entry, 1);
	dune_map_range((uint64_t)dune_chunk_gpa, sizeof(dune_chunk_gpa));
	/* before the guest can need it: KVM and dune.ko cannot grow it */
	dune_stack_setup();
	if (map_full)
		dune_map_proc_self_maps();
	return 0;
}

const struct dune_driver *dune_drv;
static const char *dune_device_wanted; /* dune_set_device(); NULL: env */

int dune_set_device(const char *name)
{
	if (dune_inited)
		return -EBUSY;
	if (name && strcmp(name, "auto") && strcmp(name, "kvm") && strcmp(name, "dune"))
		return -EINVAL;
	dune_device_wanted = name ? name : "auto";
	return 0;
}

const char *dune_device(void)
{
	return dune_inited ? dune_drv->name : NULL;
}

int dune_set_paging_levels(int levels)
{
	if (dune_inited)
		return -EBUSY;
	if (levels != 4 && levels != 5)
		return -EINVAL;
	dune_vm.want_levels = levels;
	return 0;
}

int dune_paging_levels(void)
{
	return dune_inited ? dune_vm.levels : 0;
}

static int has_xsave(void)
{
	unsigned a, b, c, d;
	__cpuid(1, a, b, c, d);
	return (c & (1u << 26)) && (c & (1u << 27));
}

/* The driver's checks, then the probe: 0 if drv can run this process. */
static int try_driver(const struct dune_driver *drv)
{
	dune_drv = drv;
	int r = drv->check();
	if (r)
		return r;
	r = dune_speed_probe();
	if (r && dune_vm.kvm_fd >= 0)
		dune_close_fd(dune_vm.kvm_fd);
	return r;
}

int dune_init(int map_full)
{
	if (dune_inited)
		return 0;
	dune_errbuf[0] = 0;
	dune_env_read();
	const char *want = dune_device_wanted ? dune_device_wanted : getenv("DUNE_DEVICE");
	if (!want || !*want)
		want = "auto";
	if (strcmp(want, "auto") && strcmp(want, "kvm") && strcmp(want, "dune"))
		return dune_fail(-EINVAL, "DUNE_DEVICE=%s: say kvm, dune or auto", want);
	if (dune_env.paging < 0)
		return dune_fail(-EINVAL, "DUNE_PAGING=%s: say 4 or 5",
				 getenv("DUNE_PAGING"));
	if (!has_xsave())
		return dune_fail(-ENOTSUP, "the CPU has no XSAVE/OSXSAVE");
	dune_vm.kvm_fd = -1;
	int r;
	if (!strcmp(want, "auto")) {
		/* /dev/dune when it is there and works; quietly /dev/kvm else */
		r = -ENOENT;
		if (access("/dev/dune", F_OK) == 0) {
			dune_fail_quiet = 1;
			r = try_driver(&dune_drv_dune);
			dune_fail_quiet = 0;
		}
		if (r) {
			dune_errbuf[0] = 0;
			r = try_driver(&dune_drv_kvm);
		}
	} else {
		r = try_driver(!strcmp(want, "dune") ? &dune_drv_dune : &dune_drv_kvm);
	}
	if (r)
		return r;
	r = dune_vm_setup(map_full);
	if (r) {
		if (dune_vm.kvm_fd >= 0)
			dune_close_fd(dune_vm.kvm_fd);
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
