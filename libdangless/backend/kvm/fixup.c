/* SPDX-License-Identifier: MIT */
/*
 * System-call pointer fix-ups for the kvm backend (thesis 3.3, "vmcall
 * hooks"; issue 9 item 3).  The classification of every argument comes from
 * libdune/syscall_args.c (tools/gen-syscalls); this file acts on it.
 *
 * Decisions
 * ---------
 * Buffers.  A buffer whose bytes are one run of host memory is passed by
 * its host address: no copy.  One that crosses into a page that is not the
 * next host page goes through a bounce buffer in the thread's scratch area:
 * copied in before the call (for out buffers too, so that the bytes the
 * kernel does not write copy back unchanged) and out after it for out and
 * inout buffers, through a fresh translation (a page revoked meanwhile is
 * skipped, never written).  Calls whose result is the byte count written
 * (read, pread64, recvfrom, getrandom, getdents*, readlink*) copy back that
 * many bytes only.  A buffer is never passed half translated.  A bounce
 * larger than what is left of the scratch area: read, write, pread64,
 * pwrite64, getdents, getdents64 and getrandom are cut to their first
 * contiguous run (a short count, which they may legally return); any other
 * call is refused with -ENOMEM.  The system-call number is never changed:
 * libdune re-issues an interrupted SA_RESTART call from DUNE_SC_NR_DONE and
 * the registers the post-hook restored, so the re-issued call goes through
 * these hooks again.
 *
 * Nested structures.  iovec arrays, msghdr/mmsghdr (name, iov, control),
 * argv/envp, clone_args, futex_waitv, pselect6's and io_pgetevents'
 * {sigset pointer, size}, sigaltstack's stack_t, mq_notify's sigevent,
 * move_pages' page list and sock_fprog (SO_ATTACH_FILTER, seccomp) are
 * copied into scratch with their inner pointers translated, and the copy is
 * passed; the program's own memory is never rewritten, so after writev
 * iov[i].iov_base still holds the alias and a later use through it still
 * faults (thesis 3.3.4, here by copying instead of restoring).  An iovec
 * whose buffer is not one host run becomes several iovecs, one per run (the
 * count argument grows; over UIO_MAXIOV, 1024, the call gets -ENOMEM).  A
 * struct is copied only when something in it changes; otherwise it is
 * passed by its (translated) address.  Lengths the kernel writes into a
 * copied struct are copied back: msg_namelen, msg_controllen, msg_flags of
 * recvmsg/recvmmsg, msg_len of every processed mmsghdr.  sendmmsg/recvmmsg
 * whose copies do not all fit the scratch area are cut to the messages that
 * fit (they return how many were processed).  sigaction is copied as it is:
 * sa_handler and sa_restorer are code addresses, and alias pages are NX, so
 * code cannot live there (libdune keeps them and calls them in the guest).
 *
 * Strings (paths, argv entries) are walked run by run until the NUL: a
 * string inside one host run is passed translated, one that spans runs is
 * copied.  A revoked page before the NUL: -EFAULT; no NUL within 128 KiB
 * (MAX_ARG_STRLEN): -ENAMETOOLONG.
 *
 * Calls that keep a pointer (the table's kept_args): never a bounce (the
 * scratch copy would be gone when the kernel uses it) and never an alias.
 *  - set_tid_address, clone's parent/child tid, clone3's child_tid,
 *    parent_tid and pidfd: translated (4-byte words, always one run; a run
 *    break would be refused with -EINVAL).  The kernel then clears and wakes
 *    the canonical word, which is what the alias shows while the object
 *    lives.  clone3's stack and tls are left alone: the CPU uses them, in
 *    the guest, where the alias is mapped.
 *  - set_robust_list: the head is translated (-EINVAL if not one run); the
 *    list entries it points to are not (the kernel walks them at thread
 *    exit and stops at the first alias: owner-died recovery does not work
 *    for robust mutexes in malloc'd memory; glibc's head is in the TCB).
 *  - rseq: translated (-EINVAL if not one run).  rseq_cs, written by the
 *    program later, is not: a critical-section descriptor in malloc'd memory
 *    would make the kernel fail the thread (glibc's are static).
 *  - sigaltstack: the stack_t is copied with ss_sp translated; the whole
 *    stack must be one host run (-ENOMEM otherwise; a malloc'd stack is one
 *    canonical extent).  The (alias, host) pair is kept in the thread's fx
 *    so that the old stack reads back by its alias (a program that frees
 *    it must get its malloc'd pointer back).
 *  - io_uring_setup/enter/register and aio's io_setup/io_submit/io_cancel:
 *    refused with -ENOSYS, as on a kernel built without them.  Their buffers
 *    and iovecs are used when each request runs, after the call; the SQEs
 *    and iocbs live in shared rings or are reported back by address
 *    (io_event.obj), so neither copying nor translating them keeps both
 *    the program's view and use-after-free detection.  Programs fall back to
 *    ordinary I/O (liburing users, libaio users check io_setup).
 *  - futex words, everywhere (futex, futex_waitv, futex_wake/wait): always
 *    translated, never copied: the kernel keys waiters by address, and
 *    every guest call translates the same way, so waiter and waker meet.
 *
 * Command-dependent arguments ('depends'): ioctl commands with an _IOC
 * encoding (size and direction in the number) and the legacy tty ones
 * (TCGETS/TCSETS*, TIOCGWINSZ/TIOCSWINSZ, FIONREAD, TIOCOUTQ, TIOC[GS]PGRP,
 * FIONBIO, ...) and the interface ioctls (struct ifreq); fcntl F_GETLK,
 * F_SETLK(W), F_OFD_*, F_[GS]ETOWN_EX, F_GETOWNER_UIDS and the rw hints;
 * prctl's PR_GET_* that write an int, PR_[GS]ET_NAME, PR_GET_TID_ADDRESS,
 * PR_SET_VMA's name, PR_SET_SECCOMP's filter; arch_prctl's ARCH_GET_*;
 * setsockopt/getsockopt by optlen (SO_ATTACH_FILTER's program too);
 * futex's timeout and second word by op; capget/capset by the header's
 * version; name_to_handle_at's mount id; landlock rules; seccomp's filter.
 * Any other command whose argument lies in alias space: the first
 * contiguous run is translated (best effort: correct whenever the object is
 * one run, as small ones are) and counted in unknown_commands.  A value
 * outside alias space is passed as it is: it is either not a pointer or
 * needs nothing.  Structs of unknown layout that the table calls nested
 * (bpf_attr, perf_event_attr, kexec_segment) are copied and each aligned
 * 64-bit word holding an alias is translated the same way (counted too);
 * the words translated are not copied back.
 *
 * Address ranges (mmap and friends): an alias is never copied or
 * translated; mmap/mremap/shmat at a fixed alias address are refused with
 * -EINVAL (the host would create a mapping in alias space), a mere hint
 * there is dropped; munmap, mprotect, madvise, ... of alias space go
 * through unchanged (the host has nothing there and answers as for an
 * unmapped range) and are counted in vmrange_alias.
 *
 * An unknown system-call number passes untouched (unknown_syscalls).
 *
 * Limits: what a nested argument points to (an iovec array, a msghdr, ...)
 * is read in the hook even when it is outside alias space: NULL and the
 * first 64 KiB are left to the kernel (EFAULT or "none"), but any other
 * unmapped non-alias pointer faults in the hook instead of giving EFAULT.
 * A revoked alias anywhere in a buffer gives -EFAULT for the whole call
 * (the kernel might have done part of it).  Scratch is per thread:
 * DL_KVM_FIXUP_SCRATCH_SIZE is what one call may copy in all.
 */
#include <errno.h>
#include <string.h>
#include <sys/syscall.h>

#include "fixup_shared.h"

void dl_kvm_fixup_get_stats(struct dl_kvm_fixup_stats *st)
{
	uint64_t *dst = (uint64_t *)st;
	uint64_t *src = (uint64_t *)&dl_kvm_fx_stats;
	for (size_t i = 0; i < sizeof(dl_kvm_fx_stats) / sizeof(uint64_t); i++)
		dst[i] = __atomic_load_n(&src[i], __ATOMIC_RELAXED);
}

void dl_kvm_fixup_init(struct dl_kvm_fixup *fx, void *scratch, size_t size)
{
	memset(fx, 0, sizeof(*fx));
	fx->scratch = scratch;
	fx->scratch_size = size;
}

/* ---- the generic walk ---- */

/* Calls that may return fewer bytes than asked: cut to the first run when
 * the bounce does not fit. */
static bool may_shorten(uint64_t nr)
{
	return nr == SYS_read || nr == SYS_write || nr == SYS_pread64 ||
	       nr == SYS_pwrite64 || nr == SYS_getdents ||
	       nr == SYS_getdents64 || nr == SYS_getrandom;
}

/* Calls whose result is the number of bytes written into their buffer. */
static bool result_is_bytes(uint64_t nr)
{
	return nr == SYS_read || nr == SYS_pread64 || nr == SYS_recvfrom ||
	       nr == SYS_getrandom || nr == SYS_getdents ||
	       nr == SYS_getdents64 || nr == SYS_readlink ||
	       nr == SYS_readlinkat;
}

/* Calls refused whatever their arguments (see the top of this file). */
static bool refused_call(uint64_t nr)
{
	return nr == SYS_io_setup || nr == SYS_io_submit ||
	       nr == SYS_io_cancel || nr == SYS_io_uring_setup ||
	       nr == SYS_io_uring_enter || nr == SYS_io_uring_register;
}

static int fix_vmrange(struct dl_kvm_fixup *fx, uint64_t nr, int i,
		       uint64_t *a)
{
	uintptr_t va = a[i];
	if (!va || !dl_kvm_fx_is_alias(fx, va))
		return 0;
	COUNT(vmrange_alias, 1);
	bool fixed = (nr == SYS_mmap && (a[3] & (0x10 | 0x100000))) ||
		     (nr == SYS_mremap && i == 4 && (a[3] & 2)) ||
		     nr == SYS_shmat;
	if (fixed) {
		COUNT(refused, 1);
		return -EINVAL;
	}
	if (nr == SYS_mmap)
		a[0] = 0; /* a hint into alias space: let the host choose */
	return 0;
}

static int fix_arg(struct dl_kvm_fixup *fx, const struct dune_sc_call *call,
		   int i, uint64_t *a)
{
	const struct dune_sc_arg *arg = &call->args[i];
	uint64_t nr = fx->nr;
	bool kept = call->kept_args & (1u << i);
	size_t len;
	int r;

	switch (arg->kind) {
	case DUNE_SC_NONE:
	case DUNE_SC_SCALAR:
		return 0;
	case DUNE_SC_VMRANGE:
		return fix_vmrange(fx, nr, i, a);
	case DUNE_SC_FIXED:
		if (kept)
			return dl_kvm_fx_translate_kept(fx, &a[i], arg->size);
		return dl_kvm_fx_buffer(fx, &a[i], arg->size, arg->dir, false);
	case DUNE_SC_BUF:
		r = dl_kvm_fx_buf_len(fx, arg, &len);
		if (r < 0)
			return r;
		if (kept)
			return dl_kvm_fx_translate_kept(fx, &a[i], len);
		r = dl_kvm_fx_buffer(fx, &a[i], len, arg->dir,
				     result_is_bytes(nr) &&
				     arg->len_unit == DUNE_SC_LEN_BYTES);
		if (r == -ENOMEM && may_shorten(nr) &&
		    arg->len_unit == DUNE_SC_LEN_BYTES) {
			uintptr_t host;
			size_t contig;
			if (!fx->translate(a[i], &host, &contig))
				return -EFAULT;
			a[i] = host;
			a[arg->len_arg] = contig;
			COUNT(shortened, 1);
			return 0;
		}
		if (r == -ENOMEM)
			COUNT(refused, 1);
		return r;
	case DUNE_SC_SELFSIZED:
		r = dl_kvm_fx_selfsized_len(fx, a[i], arg, &len);
		if (r < 0)
			return r;
		return dl_kvm_fx_buffer(fx, &a[i], len, arg->dir, false);
	case DUNE_SC_STRING:
		return dl_kvm_fx_string(fx, &a[i], MAX_ARG_STRLEN, false);
	case DUNE_SC_STRARRAY:
		return dl_kvm_fx_strarray(fx, &a[i]);
	case DUNE_SC_IOVEC:
	case DUNE_SC_IOVEC_REMOTE:
		if (arg->len_arg < 0)
			return 0;
		return dl_kvm_fx_iovec(fx, &a[i], &a[arg->len_arg],
				       arg->kind == DUNE_SC_IOVEC_REMOTE);
	case DUNE_SC_MSGHDR:
		return dl_kvm_fx_msghdr(fx, &a[i], nr == SYS_recvmsg);
	case DUNE_SC_MMSGHDR:
		if (arg->len_arg < 0)
			return 0;
		return dl_kvm_fx_mmsghdr(fx, &a[i], &a[arg->len_arg],
					 nr == SYS_recvmmsg);
	case DUNE_SC_NESTED:
		return dl_kvm_fx_nested(fx, nr, i, a, arg, kept);
	case DUNE_SC_DEPENDS:
		return dl_kvm_fx_depends(fx, nr, i, a);
	}
	return 0;
}

static uint64_t *tf_arg(struct dune_tf *tf, int i)
{
	switch (i) {
	case 0: return &DUNE_SC_ARG0(tf);
	case 1: return &DUNE_SC_ARG1(tf);
	case 2: return &DUNE_SC_ARG2(tf);
	case 3: return &DUNE_SC_ARG3(tf);
	case 4: return &DUNE_SC_ARG4(tf);
	default: return &DUNE_SC_ARG5(tf);
	}
}

static bool has_pointers(const struct dune_sc_call *call)
{
	for (int i = 0; i < call->nargs; i++)
		if (call->args[i].kind > DUNE_SC_SCALAR)
			return true;
	return false;
}

bool dl_kvm_fixup_pre(struct dune_tf *tf, struct dl_kvm_fixup *fx,
		      dl_kvm_translate_fn translate)
{
	/* pending only once something is to undo: a call that needs nothing
	 * leaves no state for a post-hook to misapply */
	fx->pending = false;
	fx->nr = DUNE_SC_NR(tf);
	const struct dune_sc_call *call = dune_sc_lookup((long)fx->nr);
	fx->call = call;
	if (!call) {
		COUNT(unknown_syscalls, 1);
		return true;
	}
	if (!has_pointers(call))
		return true;
	fx->translate = translate;
	fx->tf = tf;
	fx->used = 0;
	fx->first = fx->last = NULL;
	for (int i = 0; i < 6; i++)
		fx->args[i] = fx->new_args[i] = *tf_arg(tf, i);
	int r = 0;
	if (refused_call(fx->nr)) {
		COUNT(refused, 1);
		r = -ENOSYS;
	}
	for (int i = 0; !r && i < call->nargs; i++)
		r = fix_arg(fx, call, i, fx->new_args);
	if (r < 0) {
		/* tf's arguments are untouched: nothing for the post-hook */
		if (r == -EFAULT)
			COUNT(efault, 1);
		DUNE_SC_RET(tf) = (uint64_t)(int64_t)r;
		return false;
	}
	bool changed = false;
	for (int i = 0; i < 6; i++) {
		changed |= fx->new_args[i] != fx->args[i];
		*tf_arg(tf, i) = fx->new_args[i];
	}
	if (changed)
		COUNT(calls_rewritten, 1);
	fx->pending = true;
	return true;
}

static void post_msghdr(struct dl_kvm_fixup *fx, uintptr_t va,
			const struct kmsghdr *m)
{
	dl_kvm_fx_copy_out(fx, va + offsetof(struct kmsghdr, namelen),
			   &m->namelen, 4);
	dl_kvm_fx_copy_out(fx, va + offsetof(struct kmsghdr, controllen),
			   &m->controllen, 8);
	dl_kvm_fx_copy_out(fx, va + offsetof(struct kmsghdr, flags), &m->flags,
			   4);
}

void dl_kvm_fixup_post(struct dune_tf *tf, struct dl_kvm_fixup *fx)
{
	/* only the frame pre rewrote: a vfork child that shares this fx, or a
	 * call whose post-hook never ran (execve), must not be undone here */
	if (!fx->pending || tf != fx->tf || DUNE_SC_NR_DONE(tf) != fx->nr)
		return;
	fx->pending = false;
	int64_t ret = (int64_t)DUNE_SC_RET(tf);
	uintptr_t set_alias = 0, set_host = 0;
	bool set = false;
	for (struct dl_kvm_fixup_action *a = fx->first; a; a = a->next) {
		switch (a->kind) {
		case ACT_COPYBACK: {
			size_t n = a->len;
			if (a->by_result)
				n = ret < 0           ? 0
				    : (size_t)ret < n ? (size_t)ret
						      : n;
			dl_kvm_fx_copy_out(fx, a->guest, a->copy, n);
			break;
		}
		case ACT_COPYBACK_MASKED:
			for (size_t off = 0; off < a->len; off += 8) {
				size_t n = a->len - off < 8 ? a->len - off : 8;
				if (!(a->mask & (1ULL << (off / 8))))
					dl_kvm_fx_copy_out(
						fx, a->guest + off,
						(char *)a->copy + off, n);
			}
			break;
		case ACT_MSGHDR:
			if (ret >= 0)
				post_msghdr(fx, a->guest, a->copy);
			break;
		case ACT_MMSGHDR: {
			struct kmmsghdr *m = a->copy;
			for (int64_t k = 0; k < ret && (size_t)k < a->len;
			     k++) {
				uintptr_t va =
					a->guest + (size_t)k * sizeof(*m);
				dl_kvm_fx_copy_out(
					fx, va + offsetof(struct kmmsghdr, len),
					&m[k].len, 4);
				if (a->recv)
					post_msghdr(fx, va, &m[k].hdr);
			}
			break;
		}
		case ACT_ALTSTACK_OLD: {
			uint64_t sp;
			if (ret != 0 || !fx->altstack_host ||
			    dl_kvm_fx_read_guest(fx, a->guest, &sp, 8) < 0)
				break;
			if (sp == fx->altstack_host)
				dl_kvm_fx_copy_out(fx, a->guest,
						   &fx->altstack_alias, 8);
			break;
		}
		case ACT_ALTSTACK_SET:
			set = ret == 0;
			set_alias = a->guest;
			set_host = (uintptr_t)a->mask;
			break;
		}
	}
	if (set) {
		fx->altstack_alias = set_alias;
		fx->altstack_host = set_host;
	}
	for (int i = 0; i < 6; i++)
		*tf_arg(tf, i) = fx->args[i];
}
