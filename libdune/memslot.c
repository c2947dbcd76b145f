/* SPDX-License-Identifier: MIT */
/*
 * Guest memory: the process's address space, 1 GiB chunk by chunk, as
 * memslots (KVM's, or dune.ko's regions; guest-physical addresses handed
 * out from 4 GiB up), each registered when the host first has memory there,
 * and its default mapping in the guest's page tables.
 */
#include "internal.h"

#include <errno.h>
#include <stdio.h>
#include <sys/syscall.h>

volatile int dune_chunk_lock;
uint64_t dune_chunk_gpa[DUNE_NCHUNKS];

static void chunk_lock(void)
{
	while (__atomic_exchange_n(&dune_chunk_lock, 1, __ATOMIC_ACQUIRE))
		__builtin_ia32_pause();
}

static void chunk_unlock(void)
{
	__atomic_store_n(&dune_chunk_lock, 0, __ATOMIC_RELEASE);
}

int dune_set_memslot(int slot, uint64_t gpa, uint64_t va)
{
	uint64_t size = DUNE_CHUNK_SIZE;
	if (va + size > DUNE_TASK_SIZE)
		size = DUNE_TASK_SIZE - va;
	return dune_drv->set_memslot(slot, gpa, va, size);
}

/* Registers the chunk of va (va | 1: even if the host has nothing mapped at
 * va yet) and installs its default mapping.  Host side only.  0, or
 * -EEXIST (without va | 1) if it was registered already, -EFAULT if the host
 * has nothing at va. */
int dune_map_chunk(uint64_t va)
{
	int force = va & 1;
	va &= ~0xfffULL;
	if (va >= DUNE_TASK_SIZE)
		return -EFAULT;
	if (!force) {
		unsigned char vec;
		if (dune_sys3(SYS_mincore, va, 4096, &vec) == -ENOMEM)
			return -EFAULT;
	}
	uint64_t c = va >> DUNE_CHUNK_SHIFT;
	int r = 0;
	chunk_lock();
	if (dune_chunk_gpa[c]) {
		/* Registered already: its default mapping was installed then,
		 * and whatever the guest's tables say now is the guest's. */
		r = force ? 0 : -EEXIST;
	} else {
		uint64_t gpa = dune_vm.next_gpa;
		if (gpa + DUNE_CHUNK_SIZE > (1ULL << dune_vm.phys_bits) ||
		    dune_vm.next_slot >= dune_vm.max_slots) {
			r = -ENOSPC;
			goto out;
		}
		r = dune_set_memslot(dune_vm.next_slot, gpa, c << DUNE_CHUNK_SHIFT);
		if (r)
			goto out;
		dune_vm.next_slot++;
		dune_vm.next_gpa += DUNE_CHUNK_SIZE;
		dune_chunk_gpa[c] = gpa + 1;
		dune_stat_chunks++;
		if (pgroot)
			r = dune_install_chunk_mapping(c, gpa);
	}
out:
	chunk_unlock();
	return r;
}

void dune_map_range(uint64_t start, uint64_t len)
{
	if (!len || start >= DUNE_TASK_SIZE)
		return;
	uint64_t end = start + len;
	if (end > DUNE_TASK_SIZE || end < start)
		end = DUNE_TASK_SIZE;
	for (uint64_t c = start >> DUNE_CHUNK_SHIFT;
	     c <= (end - 1) >> DUNE_CHUNK_SHIFT; c++)
		if (!dune_chunk_gpa[c])
			dune_map_chunk((c << DUNE_CHUNK_SHIFT) | 1);
}

int dune_map_proc_self_maps(void)
{
	FILE *f = fopen("/proc/self/maps", "re");
	char line[512];
	if (!f)
		return -errno;
	while (fgets(line, sizeof(line), f)) {
		unsigned long lo, hi;
		if (sscanf(line, "%lx-%lx", &lo, &hi) == 2)
			dune_map_range(lo, hi - lo);
	}
	fclose(f);
	return 0;
}
