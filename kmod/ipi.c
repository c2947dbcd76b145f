// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * Interrupts between the vCPUs of a VM: of an x2APIC only what sends a
 * vector to one other vCPU (the ICR write: fixed delivery, one physical
 * destination) and an EOI that does nothing (dune_abi.h says what the guest
 * sees).  No interrupt controller is emulated: a sent vector waits in its
 * target's ipi_pending until the vendor's entry code hands it to the guest
 * as an external interrupt (SVM: a virtual interrupt, V_IRQ; VMX: an
 * injected one, or an interrupt-window exit until the guest can take it).
 *
 * Invariant: a vector is never left behind a guest run that does not end.
 * The sender sets the bit and then reads the target's running_cpu; the
 * target publishes running_cpu and then reads the bits (dune_ipi_take),
 * each with a full barrier between.  So either the target's entry sees the
 * bit, or the sender sees it running and interrupts its CPU, which ends
 * the run (host interrupts are intercepted) and brings it back through the
 * entry code.
 */
#define pr_fmt(fmt) "dune: " fmt

#include <linux/smp.h>

#include "dune_internal.h"

/* ICR bits (Intel SDM vol. 3, 11.6.1; in x2APIC mode one 64-bit MSR) */
#define ICR_VECTOR       0x000000ffull
#define ICR_LEVEL_ASSERT 0x00004000ull
#define ICR_DEST_SHIFT   32
#define ICR_DEST         (0xffffffffull << ICR_DEST_SHIFT)

int dune_ipi_set_apic_id(struct dune_vcpu *vcpu, unsigned long id)
{
	struct dune_vm *vm = vcpu->vm;
	int ret;

	if (id >= DUNE_APIC_ID_NONE)
		return -EINVAL;
	if (vcpu->apic_id != DUNE_APIC_ID_NONE)
		return -EBUSY;
	ret = xa_insert(&vm->apic_ids, id, vcpu, GFP_KERNEL_ACCOUNT);
	if (ret == -EBUSY)
		return -EEXIST;
	if (ret)
		return ret;
	vcpu->apic_id = id;
	return 0;
}

/* At the vCPU's release, with vm->vcpus_lock held. */
void dune_ipi_forget(struct dune_vcpu *vcpu)
{
	if (vcpu->apic_id != DUNE_APIC_ID_NONE)
		xa_erase(&vcpu->vm->apic_ids, vcpu->apic_id);
}

static void dune_ipi_send(struct dune_vm *vm, u32 dest, unsigned int vector)
{
	struct dune_vcpu *target;
	int cpu = -1;

	spin_lock(&vm->vcpus_lock);
	target = xa_load(&vm->apic_ids, dest);
	if (target) {
		set_bit(vector, target->ipi_pending);
		smp_mb__after_atomic(); /* the bit set before running_cpu is read */
		cpu = READ_ONCE(target->running_cpu);
	}
	spin_unlock(&vm->vcpus_lock);
	if (!target)
		return; /* as an APIC drops a message to no one */
	atomic64_inc(&dune_counters.ipis);
	/* Not waiting: the interrupt alone ends the target's guest run.  A CPU
	 * that no longer runs it by now takes an interrupt for nothing. */
	if (cpu >= 0)
		smp_call_function_single(cpu, dune_kick_nothing, NULL, 0);
}

bool dune_ipi_wrmsr(struct dune_vcpu *vcpu, u32 msr, u64 value)
{
	unsigned int vector = value & ICR_VECTOR;
	u64 others = value & ~(ICR_DEST | ICR_LEVEL_ASSERT | ICR_VECTOR);

	switch (msr) {
	case DUNE_MSR_X2APIC_EOI:
		return true;
	case DUNE_MSR_X2APIC_ICR:
		/* fixed, physical, no shorthand: all those fields 0 */
		if (others || vector < 32)
			return false;
		dune_ipi_send(vcpu->vm, value >> ICR_DEST_SHIFT, vector);
		return true;
	default:
		return false;
	}
}

int dune_ipi_take(struct dune_vcpu *vcpu)
{
	unsigned long vector;

	/* the caller's smp_mb() after its running_cpu store orders this read */
	vector = find_last_bit(vcpu->ipi_pending, 256);
	if (vector >= 256)
		return -1;
	/* only this vCPU's entry clears bits: the one found is still set */
	clear_bit(vector, vcpu->ipi_pending);
	return vector;
}
