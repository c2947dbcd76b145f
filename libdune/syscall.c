/* SPDX-License-Identifier: MIT */
/*
 * The guest's system calls, performed on the host by the vCPU loop: most
 * are passed through as they are; the ones that concern libdune itself are
 * done here: exit (keep the vCPU for the next thread), clone/fork/vfork (a
 * vCPU for the new thread, a new VM for a forked child), arch_prctl (FS
 * base), close/close_range/dup2 (libdune's descriptors), mmap/mremap/brk/
 * shmat (register the new memory's chunks), setrlimit/prlimit64 of
 * RLIMIT_STACK (grow the main thread's stack), and the signal calls.
 *
 * This runs on the host stack of the thread's vCPU loop with the thread's
 * TLS, so it makes raw system calls and never touches errno on the way of a
 * forwarded call.
 */
#include "internal.h"

#include <asm/prctl.h>
#include <errno.h>
#include <linux/sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>

static uint64_t dune_brk_last;

/* The registers of a trap frame as a system call leaves them:
 * rcx = rip, r11 = rflags. */
static void regs_from_tf(struct kvm_regs *r, const struct dune_tf *tf)
{
	dune_regs_of_tf(r, tf);
	r->rcx = tf->rip;
	r->r11 = tf->rflags;
}

/* A new thread's vCPU (clone with CLONE_VM): runs on its host stack. */
static void thread_start(void *arg)
{
	dune_vcpu_loop(arg);
}

#define DUNE_REGS_SET (-EINTR - 10001) /* the vCPU's registers are set */

/* clone with CLONE_VM: a thread, or a vfork-style child sharing the mm. */
static long do_clone_vm(struct dune_vcpu *v, struct dune_tf *tf,
			unsigned long flags, unsigned long newsp, int *ptid,
			int *ctid, unsigned long tls)
{
	struct dune_vcpu *nv = dune_vcpu_alloc();
	struct kvm_xsave xs;
	struct kvm_regs r;
	long ret;
	if (!nv)
		return -ENOMEM;
	ret = dune_vcpu_create(nv, (flags & CLONE_SETTLS) ? tls : v->fs_base);
	if (ret)
		goto fail;
	regs_from_tf(&r, tf);
	r.rax = 0;
	if (newsp)
		r.rsp = newsp;
	if ((ret = dune_drv->set_regs(nv, &r)) || (ret = dune_drv->get_xsave(v, &xs)) ||
	    (ret = dune_drv->set_xsave(nv, &xs)))
		goto fail;
	/* A new thread may have run and exited, and unmapped nv, by the time
	 * clone returns here: nothing of nv is read after it but for a vfork
	 * child, whose parent we are and which has stopped running. */
	int vfork_child = (flags & CLONE_VFORK) && !(flags & CLONE_THREAD);
	nv->vfork_child = vfork_child;
	/* A vfork child runs on our stack, over the system-call frame the
	 * stub left below our red zone: keep our context here instead. */
	struct dune_tf saved = *tf;
	ret = dune_clone_thread(flags, (char *)nv->host_stack + nv->host_stack_size,
				ptid, ctid, tls, thread_start, nv);
	/* Without CLONE_SETTLS the child's host side ran on our TLS. */
	if (!(flags & CLONE_SETTLS))
		dune_signals_set_self(v);
	if (ret >= 0 && vfork_child) {
		/* it has exec'd or exited: its vCPU's resources are ours (the
		 * vCPU itself goes to the spares), and we return to the program
		 * straight from the saved context */
		dune_vcpu_complete_io(nv);
		if (dune_vcpu_spare_put(nv) == 0) {
			nv->run = NULL;
			nv->kick = NULL;
			nv->fd = -1;
		}
		dune_vcpu_free(nv);
		dune_vcpu_complete_io(v);
		regs_from_tf(&r, &saved);
		r.rax = ret;
		dune_drv->set_regs(v, &r);
		v->in_kernel = v->in_hook = v->in_trap = 0;
		return DUNE_REGS_SET;
	}
	if (ret >= 0)
		return ret;
fail:
	dune_vcpu_free(nv);
	return ret;
}

/* fork: neither KVM nor dune.ko runs a VM from another mm, so the child
 * builds its own VM with the same memslots and (its copy of) the same page
 * tables. */
static long do_fork(struct dune_vcpu *v, struct dune_tf *tf,
		    unsigned long flags, unsigned long ptid, unsigned long ctid,
		    unsigned long tls)
{
	struct kvm_xsave xs;
	long e = dune_drv->get_xsave(v, &xs);
	if (e)
		return e;
	flags &= ~(unsigned long)(CLONE_VM | CLONE_VFORK);
	long pid = dune_sys6(SYS_clone, flags, 0, ptid, ctid, tls, 0);
	if (pid != 0)
		return pid;

	/* child: a fresh VM */
	char msg[sizeof(dune_errbuf) + 64];
	int parent_vm = dune_vm.vm_fd;
	dune_fail_quiet = 1;
	if (dune_drv->vm_create()) {
		snprintf(msg, sizeof(msg), "dune: fork child: no VM of its own: %s\n",
			 dune_errbuf);
		goto die;
	}
	dune_fail_quiet = 0;
	dune_close_fd(parent_vm);
	dune_chunk_lock = 0;
	int slot = 0;
	for (uint64_t c = 0; c < DUNE_NCHUNKS; c++) {
		if (!dune_chunk_gpa[c])
			continue;
		if (dune_set_memslot(slot++, dune_chunk_gpa[c] - 1,
				     c << DUNE_CHUNK_SHIFT)) {
			snprintf(msg, sizeof(msg), "dune: fork child: memslot failed\n");
			goto die;
		}
	}
	dune_vm.next_slot = slot;
	dune_vcpu_forget_spares(); /* the parent's */
	dune_vcpu_release(v);
	v->in_hook = v->in_trap = v->in_kernel = v->sig_check = 0;
	v->sig_pending = 0;
	dune_vm.next_vcpu_id = 0;
	int r = dune_vcpu_create(v, v->fs_base);
	struct kvm_regs regs;
	regs_from_tf(&regs, tf);
	regs.rax = 0;
	if (r || dune_drv->set_regs(v, &regs) || dune_drv->set_xsave(v, &xs)) {
		snprintf(msg, sizeof(msg), "dune: fork child: vCPU setup failed\n");
		goto die;
	}
	return -EINTR - 10000; /* tells the caller: the child's vCPU is new */
die:
	dune_write_str(msg);
	dune_sys1(SYS_exit_group, 127);
	__builtin_unreachable();
}
#define DUNE_FORK_CHILD (-EINTR - 10000)

static void set_guest_fs(struct dune_vcpu *v, uint64_t base)
{
	dune_drv->set_fs_base(v, base);
	v->fs_base = base;
}

static int is_err(long r)
{
	return (unsigned long)r > -4096UL;
}

/* The calls dune_handle_syscall() does something of its own for (its
 * switch below); dune.ko may make every other one in the kernel. */
static const int dune_special_calls[] = {
	SYS_exit, SYS_exit_group, SYS_arch_prctl, SYS_clone, SYS_close,
	SYS_close_range, SYS_dup2, SYS_dup3, SYS_clone3, SYS_fork, SYS_vfork,
	SYS_rt_sigreturn, SYS_rt_sigaction, SYS_mmap, SYS_mremap, SYS_shmat,
	SYS_brk, SYS_setrlimit, SYS_prlimit64,
};

void dune_syscalls_not_special(uint64_t allowed[8])
{
	memset(allowed, 0xff, 8 * sizeof(uint64_t));
	for (size_t i = 0; i < sizeof(dune_special_calls) / sizeof(dune_special_calls[0]); i++)
		allowed[dune_special_calls[i] / 64] &= ~(1ULL << (dune_special_calls[i] % 64));
}

/* Performs the guest's system call on the host.  Returns 1 if the vCPU was
 * replaced (fork child) and the frame must not be written. */
int dune_handle_syscall(struct dune_vcpu *v)
{
	struct dune_tf *tf = v->tf;
	long nr = (long)tf->rax, ret;
	long a0 = tf->rdi, a1 = tf->rsi, a2 = tf->rdx, a3 = tf->r10,
	     a4 = tf->r8, a5 = tf->r9;

	__atomic_fetch_add(&dune_stat_syscalls, 1, __ATOMIC_RELAXED);
	switch (nr) {
	case SYS_exit:
		if (v->vfork_child) /* the parent frees its resources */
			dune_sys1(SYS_exit, a0);
		/* this thread only: drop its vCPU's mapping and host stack,
		 * with signals blocked as glibc does on the way out */
		{
			uint64_t all = ~0ULL;
			dune_sys6(SYS_rt_sigprocmask, SIG_BLOCK, (long)&all, 0, 8, 0, 0);
		}
		dune_signals_set_self(NULL);
		/* finish the `out` of this call, then keep the vCPU for the next
		 * thread */
		dune_vcpu_complete_io(v);
		if (dune_vcpu_spare_put(v) != 0)
			dune_vcpu_release(v);
		dune_sys2(SYS_munmap, v->ist_mem, DUNE_NIST * DUNE_IST_SIZE);
		{
			void *stack = v->host_stack;
			size_t size = v->host_stack_size;
			dune_sys2(SYS_munmap, v, sizeof(*v));
			dune_unmap_and_exit(stack, size, (int)a0);
		}
	case SYS_exit_group:
		dune_sys1(SYS_exit_group, a0);
		__builtin_unreachable();
	case SYS_arch_prctl:
		if (a0 == ARCH_SET_GS) {
			ret = -EPERM; /* GS base belongs to libdune in the guest */
			break;
		}
		ret = dune_sys6(nr, a0, a1, a2, a3, a4, a5);
		if (ret == 0 && a0 == ARCH_SET_FS)
			set_guest_fs(v, a1);
		break;
	case SYS_clone:
		if (a0 & CLONE_VM)
			ret = do_clone_vm(v, tf, a0, a1, (int *)a2, (int *)a3, a4);
		else
			ret = do_fork(v, tf, a0, a2, a3, a4);
		break;
	case SYS_close:
		ret = dune_owns_fd(a0) ? 0 : dune_sys1(nr, a0);
		break;
	case SYS_close_range:
		ret = dune_close_range_around(a0, a1, a2);
		break;
	case SYS_dup2:
	case SYS_dup3:
		ret = dune_owns_fd(a1) ? -EBUSY : dune_sys6(nr, a0, a1, a2, a3, a4, a5);
		break;
	case SYS_clone3:
		ret = -ENOSYS; /* glibc falls back to clone */
		break;
	case SYS_fork:
		ret = do_fork(v, tf, SIGCHLD, 0, 0, 0);
		break;
	case SYS_vfork:
		/* the child borrows our stack and VM until it execs or exits */
		ret = do_clone_vm(v, tf, CLONE_VM | CLONE_VFORK | SIGCHLD, 0, NULL,
				  NULL, 0);
		break;
	case SYS_rt_sigreturn:
		dune_sys_rt_sigreturn(v);
		return 1;
	case SYS_rt_sigaction:
		ret = dune_sys_rt_sigaction(a0, (const void *)a1, (void *)a2, a3);
		break;
	case SYS_mmap:
		ret = dune_sys6(nr, a0, a1, a2, a3, a4, a5);
		if (!is_err(ret))
			dune_map_range(ret, a1);
		break;
	case SYS_mremap:
		ret = dune_sys6(nr, a0, a1, a2, a3, a4, a5);
		if (!is_err(ret))
			dune_map_range(ret, a2);
		break;
	case SYS_shmat:
		ret = dune_sys6(nr, a0, a1, a2, a3, a4, a5);
		if (!is_err(ret))
			dune_map_range(ret, 1);
		break;
	case SYS_brk:
		ret = dune_sys6(nr, a0, a1, a2, a3, a4, a5);
		if (!is_err(ret) && ret) {
			uint64_t lo = dune_brk_last && dune_brk_last < (uint64_t)ret
					      ? dune_brk_last
					      : (uint64_t)ret - 1;
			dune_map_range(lo, (uint64_t)ret - lo);
			dune_brk_last = ret;
		}
		break;
	case SYS_setrlimit:
		ret = dune_sys6(nr, a0, a1, a2, a3, a4, a5);
		if (ret == 0 && a0 == RLIMIT_STACK && a1)
			dune_stack_limit_changed();
		break;
	case SYS_prlimit64:
		/* gcc raises its own stack limit at start (to 64 MiB): the
		 * main thread's stack grows with it as on the host */
		ret = dune_sys6(nr, a0, a1, a2, a3, a4, a5);
		if (ret == 0 && a1 == RLIMIT_STACK && a2 &&
		    (a0 == 0 || a0 == dune_sys0(SYS_getpid)))
			dune_stack_limit_changed();
		break;
	default:
		ret = dune_sys6(nr, a0, a1, a2, a3, a4, a5);
		break;
	}
	if (ret == DUNE_FORK_CHILD || ret == DUNE_REGS_SET)
		return 1;
	tf->rax = ret;
	return 0;
}
