/* SPDX-License-Identifier: MIT */
/*
 * Public calls that only set or read state the rest of libdune uses: the
 * guest's #PF and interrupt handlers and system-call hooks (guest.c calls
 * them) and the counters dune_get_stats() reports.
 */
#include "internal.h"

#include <errno.h>

dune_pgflt_cb dune_pgflt_handler;
dune_intr_cb dune_intr_handlers[256];
bool dune_ipi_vectors[256];
dune_syscall_prehook dune_prehook;
dune_syscall_posthook dune_posthook;
uint64_t dune_stat_syscalls, dune_stat_exits, dune_stat_chunks, dune_stat_vcpus;

void dune_register_pgflt_handler(dune_pgflt_cb cb)
{
	dune_pgflt_handler = cb;
}

void dune_register_intr_handler(int vec, dune_intr_cb cb)
{
	if (vec >= 0 && vec < 256)
		dune_intr_handlers[vec] = cb;
}

bool dune_ipi_available(void)
{
	return dune_inited && dune_vm.ipi;
}

int dune_register_ipi_handler(int vec, dune_intr_cb cb)
{
	if (vec < 32 || vec > 254)
		return -EINVAL;
	if (!dune_ipi_available())
		return -ENOTSUP;
	dune_intr_handlers[vec] = cb;
	__atomic_store_n(&dune_ipi_vectors[vec], true, __ATOMIC_RELEASE);
	return 0;
}

uint32_t dune_vcpu_apic_id(void)
{
	return (uint32_t)dune_cur_vcpu()->id;
}

void dune_send_ipi(uint32_t apic_id, int vec)
{
	if (!dune_vm.ipi)
		return;
	/* the x2APIC's ICR: destination in the high half; fixed delivery,
	 * physical destination, edge */
	uint64_t icr = ((uint64_t)apic_id << 32) | DUNE_APIC_ICR_ASSERT | (uint8_t)vec;
	dune_wrmsr(DUNE_MSR_X2APIC_ICR, icr);
}

void dune_register_syscall_hooks(dune_syscall_prehook pre,
				 dune_syscall_posthook post)
{
	dune_prehook = pre;
	dune_posthook = post;
}

void dune_get_stats(struct dune_stats *st)
{
	st->syscalls = dune_stat_syscalls;
	st->exits = dune_stat_exits;
	st->chunks = dune_stat_chunks;
	st->vcpus = dune_stat_vcpus;
	st->pt_pool = (uint64_t)dune_vm.pool;
	st->pt_pool_used = __atomic_load_n(&dune_vm.pool_used, __ATOMIC_RELAXED);
}
