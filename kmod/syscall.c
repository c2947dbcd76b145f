// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * Guest system calls made in the kernel (DUNE_SET_SYSCALLS): the reason a
 * module beats /dev/kvm for programs that make system calls.  On KVM every
 * guest system call is an exit to user space and back; here the vCPU's run
 * loop makes the call itself, as the process's own (it runs in the
 * process's task, with its credentials and memory), and re-enters the guest.
 *
 * The kernel exports no way to make a system call for a task from a
 * module, so the module looks up the kernel's own dispatcher by name at
 * load time: x64_sys_call (6.1.85 and later, 6.9+) or sys_call_table,
 * through kallsyms_lookup_name, which itself is found through a kprobe (it
 * is not exported since 5.7), once, at load time, by root; the guest's
 * callers never influence it.  Where the kernel enforces indirect-branch
 * tracking and has sealed x64_sys_call, the table is used instead.  Where
 * neither is found the feature is off and every guest system call exits to
 * user space, as on KVM.
 *
 * Only calls that need nothing of the user-mode context run here (see
 * dune_abi.h for the ones that never do), and none while the thread is
 * traced, audited or filtered by seccomp: those hooks live on the kernel's
 * system-call entry path, which this path does not take.
 */
#define pr_fmt(fmt) "dune: " fmt

#include <linux/entry-common.h>
#include <linux/errno.h>
#include <linux/kprobes.h>
#include <linux/nospec.h>
#include <linux/sched.h>
#include <linux/uaccess.h>
#include <asm/ptrace.h>
#include <asm/syscall.h>
#include <asm/unistd.h>

#include "dune_internal.h"

typedef long (*dune_dispatch_fn)(const struct pt_regs *regs, unsigned int nr);

static dune_dispatch_fn dune_x64_sys_call;
static const sys_call_ptr_t *dune_sys_call_table;

/* Calls that depend on the user-mode context, replace the image, or could
 * drop the descriptor the running DUNE_VCPU_RUN came through. */
static const unsigned int dune_never_in_kernel[] = {
	__NR_clone, __NR_clone3, __NR_fork, __NR_vfork, __NR_execve,
	__NR_execveat, __NR_exit, __NR_exit_group, __NR_rt_sigreturn,
	__NR_arch_prctl, __NR_sigaltstack, __NR_iopl, __NR_ioperm,
	__NR_modify_ldt, __NR_seccomp, __NR_ioctl, __NR_restart_syscall,
	__NR_close, __NR_close_range, __NR_dup2, __NR_dup3,
	/* these swap the signal mask for the wait and restore it on the way
	 * back to user mode */
	__NR_rt_sigsuspend, __NR_ppoll, __NR_pselect6, __NR_epoll_pwait,
	__NR_epoll_pwait2, __NR_io_pgetevents, __NR_io_uring_enter,
	/* these act on the user-mode registers of the calling thread: here,
	 * the ones DUNE_VCPU_RUN returns to (rseq's abort redirects that IP) */
	__NR_rseq,
#ifdef __NR_uretprobe
	__NR_uretprobe,
#endif
#ifdef __NR_uprobe
	__NR_uprobe,
#endif
};

static unsigned long dune_lookup_symbol(const char *name)
{
	static unsigned long (*lookup)(const char *name);

	if (!lookup) {
		struct kprobe kp = { .symbol_name = "kallsyms_lookup_name" };

		if (register_kprobe(&kp) < 0)
			return 0;
		lookup = (unsigned long (*)(const char *))kp.addr;
		unregister_kprobe(&kp);
	}
	return lookup ? lookup(name) : 0;
}

/*
 * Whether an indirect call to fn is allowed where the kernel enforces
 * indirect-branch tracking: fn must begin with ENDBR64.  x64_sys_call is
 * called directly by the kernel, so the kernel may have sealed it (its ENDBR
 * replaced by a NOP at boot): calling it through a pointer would then be a
 * control-protection fault.  The table's entries are indirect targets.
 */
static bool dune_indirect_target(const void *fn)
{
	const u32 endbr64 = 0xfa1e0ff3; /* f3 0f 1e fa */
	u32 insn;

	if (!cpu_feature_enabled(X86_FEATURE_IBT))
		return true;
	return !get_kernel_nofault(insn, (const u32 *)fn) && insn == endbr64;
}

void dune_syscalls_module_init(void)
{
	dune_x64_sys_call = (dune_dispatch_fn)dune_lookup_symbol("x64_sys_call");
	if (dune_x64_sys_call && !dune_indirect_target(dune_x64_sys_call))
		dune_x64_sys_call = NULL;
	if (!dune_x64_sys_call)
		dune_sys_call_table =
			(const sys_call_ptr_t *)dune_lookup_symbol("sys_call_table");
	if (!dune_x64_sys_call && !dune_sys_call_table)
		pr_warn("the kernel's system-call dispatcher was not found: every guest system call exits to user space\n");
}

int dune_set_syscalls(struct dune_vm *vm, struct dune_syscalls *req)
{
	unsigned int i;

	if (req->flags || req->port > 0xff)
		return -EINVAL;
	if (!req->port || (!dune_x64_sys_call && !dune_sys_call_table))
		memset(req->allowed, 0, sizeof(req->allowed));
	for (i = 0; i < ARRAY_SIZE(dune_never_in_kernel); i++)
		__clear_bit(dune_never_in_kernel[i],
			    (unsigned long *)req->allowed);
	/* Beyond the table: the dispatcher would say ENOSYS; let user space. */
	for (i = NR_syscalls; i < DUNE_SYSCALLS_MAX; i++)
		__clear_bit(i, (unsigned long *)req->allowed);

	spin_lock(&vm->syscalls_lock);
	vm->syscall_port = req->port;
	bitmap_copy(vm->syscalls_allowed, (unsigned long *)req->allowed,
		    DUNE_SYSCALLS_MAX);
	spin_unlock(&vm->syscalls_lock);
	return 0;
}

/*
 * An `out` to vm->syscall_port with the call in the guest's registers.
 * DUNE_SYSCALL_DONE: made (result in the guest's RAX, RCX = 1);
 * DUNE_SYSCALL_INTERRUPTED: a signal stopped it before it did anything;
 * DUNE_SYSCALL_USER: for user space.
 */
int dune_syscall_in_kernel(struct dune_vcpu *vcpu)
{
	struct dune_vm *vm = vcpu->vm;
	struct dune_guest_gprs *g = &vcpu->gprs;
	struct pt_regs regs = {};
	u64 nr = g->rax;
	long ret;

	if (nr >= DUNE_SYSCALLS_MAX || !test_bit(nr, vm->syscalls_allowed))
		return DUNE_SYSCALL_USER;
	if (READ_ONCE(current_thread_info()->syscall_work) & SYSCALL_WORK_ENTER)
		return DUNE_SYSCALL_USER;
	/* as the kernel's entry does: no table read past its end, even
	 * speculatively (set_syscalls keeps the bits above NR_syscalls clear) */
	nr = array_index_nospec(nr, NR_syscalls);

	regs.di = g->rdi;
	regs.si = g->rsi;
	regs.dx = g->rdx;
	regs.r10 = g->r10;
	regs.r8 = g->r8;
	regs.r9 = g->r9;
	regs.orig_ax = nr;
	regs.ax = -ENOSYS;
	if (dune_x64_sys_call)
		ret = dune_x64_sys_call(&regs, nr);
	else if (dune_sys_call_table)
		ret = dune_sys_call_table[nr](&regs);
	else
		return DUNE_SYSCALL_USER;
	atomic64_inc(&dune_counters.syscalls);

	switch (ret) {
	case -ERESTARTSYS:
	case -ERESTARTNOINTR:
	case -ERESTARTNOHAND:
	case -ERESTART_RESTARTBLOCK:
		/* What the kernel would do depends on the signal's handler:
		 * user space knows it. */
		return DUNE_SYSCALL_INTERRUPTED;
	}
	g->rax = ret;
	g->rcx = 1;
	return DUNE_SYSCALL_DONE;
}
