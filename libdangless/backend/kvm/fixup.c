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

#include "fixup.h"
#include "syscall_args.h"

#define PAGE 4096UL
/* below this a non-alias pointer is left to the kernel, never read */
#define LOW_LIMIT 0x10000UL
/* the end of the lower half: above it, only alias space is ours */
#define USER_LIMIT 0x800000000000UL
#define UIO_MAXIOV 1024
#define MAX_ARG_STRLEN (32 * PAGE)

enum action_kind {
	ACT_COPYBACK,        /* copy len bytes of copy to guest */
	ACT_COPYBACK_MASKED, /* the same, but not the 64-bit words in mask */
	ACT_MSGHDR,          /* recvmsg: the lengths and flags of copy */
	ACT_MMSGHDR,         /* msg_len (and for recvmmsg the msghdr fields) */
	ACT_ALTSTACK_OLD,    /* the old stack_t at guest: host ss_sp -> alias */
	ACT_ALTSTACK_SET,    /* remember (guest, host) as the thread's stack */
};

struct dl_kvm_fixup_action {
	struct dl_kvm_fixup_action *next;
	uint8_t kind;
	bool by_result; /* COPYBACK: at most the call's result in bytes */
	bool recv;      /* MMSGHDR: recvmmsg */
	uintptr_t guest;
	void *copy;
	size_t len;     /* bytes, or entries for MMSGHDR */
	uint64_t mask;  /* COPYBACK_MASKED, or the host address for SET */
};

static struct dl_kvm_fixup_stats stats;

#define COUNT(field, n) __atomic_fetch_add(&stats.field, (n), __ATOMIC_RELAXED)

void dl_kvm_fixup_get_stats(struct dl_kvm_fixup_stats *st)
{
	uint64_t *dst = (uint64_t *)st;
	uint64_t *src = (uint64_t *)&stats;
	for (size_t i = 0; i < sizeof(stats) / sizeof(uint64_t); i++)
		dst[i] = __atomic_load_n(&src[i], __ATOMIC_RELAXED);
}

void dl_kvm_fixup_init(struct dl_kvm_fixup *fx, void *scratch, size_t size)
{
	memset(fx, 0, sizeof(*fx));
	fx->scratch = scratch;
	fx->scratch_size = size;
}

/* ---- scratch and the post-hook's list ---- */

static void *scratch_take(struct dl_kvm_fixup *fx, size_t len)
{
	size_t at = (fx->used + 15) & ~(size_t)15;
	if (at > fx->scratch_size || len > fx->scratch_size - at)
		return NULL;
	fx->used = at + len;
	return fx->scratch + at;
}

static struct dl_kvm_fixup_action *add_action(struct dl_kvm_fixup *fx,
					      enum action_kind kind,
					      uintptr_t guest, void *copy,
					      size_t len)
{
	struct dl_kvm_fixup_action *a = scratch_take(fx, sizeof(*a));
	if (!a)
		return NULL;
	memset(a, 0, sizeof(*a));
	a->kind = (uint8_t)kind;
	a->guest = guest;
	a->copy = copy;
	a->len = len;
	if (fx->last)
		fx->last->next = a;
	else
		fx->first = a;
	fx->last = a;
	return a;
}

/* ---- translation ---- */

static bool is_alias(struct dl_kvm_fixup *fx, uintptr_t va)
{
	uintptr_t host;
	size_t contig;
	return !fx->translate(va, &host, &contig) || host != va;
}

/* A pointer the hook may read: an alias, or a user address above the low
 * limit (an unmapped one there is a limit written above). */
static bool readable(struct dl_kvm_fixup *fx, uintptr_t va)
{
	if (!va)
		return false;
	return is_alias(fx, va) || (va >= LOW_LIMIT && va < USER_LIMIT);
}

enum { RUN_ONE = 0, RUN_SPLIT = 1 };

/*
 * Whether [va, va+len) is one host run: RUN_ONE with *host, RUN_SPLIT if
 * not (every page of it mapped), -EFAULT if some page of it is revoked.
 */
static int range_host(struct dl_kvm_fixup *fx, uintptr_t va, size_t len,
		      uintptr_t *host)
{
	size_t contig;
	if (!fx->translate(va, host, &contig))
		return -EFAULT;
	if (contig >= len)
		return RUN_ONE;
	for (;;) {
		va += contig;
		len -= contig;
		uintptr_t h;
		if (!fx->translate(va, &h, &contig))
			return -EFAULT;
		if (contig >= len)
			return RUN_SPLIT;
	}
}

static int copy_in(struct dl_kvm_fixup *fx, void *dst, uintptr_t va,
		   size_t len)
{
	unsigned char *d = dst;
	while (len) {
		uintptr_t h;
		size_t contig;
		if (!fx->translate(va, &h, &contig))
			return -EFAULT;
		size_t n = contig < len ? contig : len;
		memcpy(d, (const void *)h, n);
		d += n;
		va += n;
		len -= n;
	}
	return 0;
}

/* After the call: what is revoked by now is skipped, never written. */
static void copy_out(struct dl_kvm_fixup *fx, uintptr_t va, const void *src,
		     size_t len)
{
	const unsigned char *s = src;
	while (len) {
		uintptr_t h;
		size_t contig;
		size_t n;
		if (fx->translate(va, &h, &contig)) {
			n = contig < len ? contig : len;
			memcpy((void *)h, s, n);
		} else {
			n = PAGE - (va & (PAGE - 1));
			if (n > len)
				n = len;
		}
		s += n;
		va += n;
		len -= n;
	}
}

/* The word a kept pointer names, by its host address, or an error. */
static int translate_kept(struct dl_kvm_fixup *fx, uint64_t *arg, size_t len)
{
	uintptr_t va = (uintptr_t)*arg, host;
	if (!va)
		return 0;
	int r = range_host(fx, va, len ? len : 1, &host);
	if (r < 0)
		return r;
	if (r == RUN_SPLIT) {
		COUNT(refused, 1);
		return -EINVAL;
	}
	if (host != va) {
		*arg = host;
		COUNT(translated, 1);
	}
	return 0;
}

/*
 * A buffer of len bytes the kernel reads (dir & IN) and/or writes
 * (dir & OUT) during the call.  -ENOMEM when it needs a bounce that does not
 * fit the scratch area.
 */
static int fix_buffer(struct dl_kvm_fixup *fx, uint64_t *arg, size_t len,
		      int dir, bool by_result)
{
	uintptr_t va = (uintptr_t)*arg, host;
	size_t contig;
	if (!va)
		return 0;
	if (!len) {
		/* the kernel touches nothing: translate what can be */
		if (fx->translate(va, &host, &contig) && host != va)
			*arg = host;
		return 0;
	}
	int r = range_host(fx, va, len, &host);
	if (r < 0)
		return r;
	if (r == RUN_ONE) {
		if (host != va) {
			*arg = host;
			COUNT(translated, 1);
		}
		return 0;
	}
	void *bounce = scratch_take(fx, len);
	if (!bounce)
		return -ENOMEM;
	r = copy_in(fx, bounce, va, len);
	if (r < 0)
		return r;
	if (dir & DUNE_SC_OUT) {
		struct dl_kvm_fixup_action *a =
			add_action(fx, ACT_COPYBACK, va, bounce, len);
		if (!a)
			return -ENOMEM;
		a->by_result = by_result;
	}
	*arg = (uintptr_t)bounce;
	COUNT(bounced, 1);
	COUNT(bounced_bytes, len);
	return 0;
}

/* Read a value of len bytes at a guest address. */
static int read_guest(struct dl_kvm_fixup *fx, uintptr_t va, void *dst,
		      size_t len)
{
	return copy_in(fx, dst, va, len);
}

/*
 * A NUL-terminated string.  With trunc_ok, a string without a NUL within
 * limit bytes is taken as its first limit bytes (prctl's 16-byte names).
 */
static int fix_string(struct dl_kvm_fixup *fx, uint64_t *arg, size_t limit,
		      bool trunc_ok)
{
	uintptr_t va = (uintptr_t)*arg, host;
	size_t contig;
	if (!va)
		return 0;
	if (!fx->translate(va, &host, &contig))
		return -EFAULT;
	if (host == va)
		return 0; /* not alias: the kernel reads it itself */
	size_t len = 0; /* bytes before the NUL */
	bool found = false, one_run = true;
	uintptr_t p = va;
	uintptr_t h = host;
	for (;;) {
		size_t n = contig < limit - len ? contig : limit - len;
		const char *z = memchr((const void *)h, 0, n);
		if (z) {
			len += (size_t)(z - (const char *)h);
			found = true;
			break;
		}
		len += n;
		p += n;
		if (len >= limit)
			break;
		one_run = false;
		if (!fx->translate(p, &h, &contig))
			return -EFAULT;
	}
	if (!found && !trunc_ok)
		return -ENAMETOOLONG;
	size_t need = found ? len + 1 : len;
	COUNT(strings, 1);
	if (one_run) {
		*arg = host;
		return 0;
	}
	char *copy = scratch_take(fx, need);
	if (!copy)
		return -ENOMEM;
	int r = copy_in(fx, copy, va, need);
	if (r < 0)
		return r;
	*arg = (uintptr_t)copy;
	COUNT(bounced, 1);
	COUNT(bounced_bytes, need);
	return 0;
}

/* argv/envp: a NULL-terminated array of strings. */
static int fix_strarray(struct dl_kvm_fixup *fx, uint64_t *arg)
{
	uintptr_t va = (uintptr_t)*arg;
	if (!readable(fx, va))
		return 0;
	bool any = is_alias(fx, va);
	size_t n = 0;
	for (;;) {
		uint64_t s;
		int r = read_guest(fx, va + n * 8, &s, 8);
		if (r < 0)
			return r;
		if (!s)
			break;
		any |= is_alias(fx, (uintptr_t)s);
		if (++n >= fx->scratch_size / 8)
			return -E2BIG;
	}
	if (!any)
		return 0;
	uint64_t *copy = scratch_take(fx, (n + 1) * 8);
	if (!copy)
		return -E2BIG;
	for (size_t i = 0; i < n; i++) {
		int r = read_guest(fx, va + i * 8, &copy[i], 8);
		if (r < 0)
			return r;
		if (!copy[i])
			return -EFAULT; /* changed under us */
		r = fix_string(fx, &copy[i], MAX_ARG_STRLEN, false);
		if (r < 0)
			return r == -ENOMEM ? -E2BIG : r;
	}
	copy[n] = 0;
	*arg = (uintptr_t)copy;
	COUNT(nested, 1);
	return 0;
}

/* ---- iovecs ---- */

struct kiovec {
	uint64_t base, len;
};

/* How many host runs [base, base+len) takes, or -EFAULT. */
static long count_runs(struct dl_kvm_fixup *fx, uintptr_t base, size_t len)
{
	long runs = 0;
	while (len) {
		uintptr_t h;
		size_t contig;
		if (!fx->translate(base, &h, &contig))
			return -EFAULT;
		size_t n = contig < len ? contig : len;
		base += n;
		len -= n;
		runs++;
	}
	return runs ? runs : 1;
}

/*
 * An array of count iovecs at *arg whose bases are this process's memory
 * (or another's when remote: only the array is translated).  May rewrite
 * *count_arg when a base splits into runs.
 */
static int fix_iovec(struct dl_kvm_fixup *fx, uint64_t *arg,
		     uint64_t *count_arg, bool remote)
{
	uintptr_t va = (uintptr_t)*arg;
	uint64_t count = *count_arg;
	if (!count || count > UIO_MAXIOV || !readable(fx, va))
		return 0; /* the kernel answers these itself */
	size_t bytes = count * sizeof(struct kiovec);
	if (remote)
		return fix_buffer(fx, arg, bytes, DUNE_SC_IN, false);
	bool any = is_alias(fx, va);
	long total = 0;
	for (uint64_t i = 0; i < count; i++) {
		struct kiovec v;
		int r = read_guest(fx, va + i * sizeof(v), &v, sizeof(v));
		if (r < 0)
			return r;
		if (!v.base || !is_alias(fx, v.base)) {
			total++;
			continue;
		}
		any = true;
		long runs = v.len ? count_runs(fx, v.base, v.len) : 1;
		if (runs < 0)
			return (int)runs;
		total += runs;
	}
	if (!any)
		return 0;
	if (total > UIO_MAXIOV) {
		COUNT(refused, 1);
		return -ENOMEM;
	}
	struct kiovec *copy = scratch_take(fx, (size_t)total * sizeof(*copy));
	if (!copy)
		return -ENOMEM;
	size_t out = 0;
	for (uint64_t i = 0; i < count; i++) {
		struct kiovec v;
		int r = read_guest(fx, va + i * sizeof(v), &v, sizeof(v));
		if (r < 0)
			return r;
		if (!v.base || !is_alias(fx, v.base)) {
			if (out >= (size_t)total)
				return -EFAULT; /* changed under us */
			copy[out++] = v;
			continue;
		}
		if (!v.len) {
			uintptr_t h;
			size_t contig;
			bool ok = fx->translate(v.base, &h, &contig);
			if (out >= (size_t)total)
				return -EFAULT;
			copy[out++] = (struct kiovec){ok ? h : 0, 0};
			continue;
		}
		uintptr_t b = v.base;
		size_t len = v.len;
		while (len) {
			uintptr_t h;
			size_t contig;
			if (!fx->translate(b, &h, &contig))
				return -EFAULT;
			size_t n = contig < len ? contig : len;
			if (out >= (size_t)total)
				return -EFAULT;
			copy[out++] = (struct kiovec){h, n};
			b += n;
			len -= n;
		}
		COUNT(translated, 1);
	}
	*arg = (uintptr_t)copy;
	*count_arg = out;
	COUNT(nested, 1);
	return 0;
}

/* ---- msghdr, mmsghdr ---- */

struct kmsghdr {
	uint64_t name;
	int32_t namelen;
	uint32_t pad0;
	uint64_t iov;
	uint64_t iovlen;
	uint64_t control;
	uint64_t controllen;
	uint32_t flags;
	uint32_t pad1;
};
_Static_assert(sizeof(struct kmsghdr) == 56, "struct user_msghdr");

struct kmmsghdr {
	struct kmsghdr hdr;
	uint32_t len;
	uint32_t pad;
};
_Static_assert(sizeof(struct kmmsghdr) == 64, "struct mmsghdr");

/* The pointers of a msghdr already copied to m; *changed if any moved. */
static int fix_msghdr_fields(struct dl_kvm_fixup *fx, struct kmsghdr *m,
			     bool recv, bool *changed)
{
	int dir = recv ? DUNE_SC_OUT : DUNE_SC_IN;
	uint64_t name = m->name, iov = m->iov, control = m->control;
	int r = 0;
	if (m->namelen > 0)
		r = fix_buffer(fx, &m->name, (size_t)m->namelen, dir, false);
	if (!r)
		r = fix_iovec(fx, &m->iov, &m->iovlen, false);
	if (!r && m->controllen)
		r = fix_buffer(fx, &m->control, m->controllen, dir, false);
	*changed |= m->name != name || m->iov != iov || m->control != control;
	return r;
}

static int fix_msghdr(struct dl_kvm_fixup *fx, uint64_t *arg, bool recv)
{
	uintptr_t va = (uintptr_t)*arg;
	if (!readable(fx, va))
		return 0;
	size_t mark = fx->used;
	struct kmsghdr *m = scratch_take(fx, sizeof(*m));
	if (!m)
		return -ENOMEM;
	int r = read_guest(fx, va, m, sizeof(*m));
	if (r < 0)
		return r;
	bool changed = false;
	r = fix_msghdr_fields(fx, m, recv, &changed);
	if (r < 0)
		return r;
	uintptr_t host;
	if (!changed && range_host(fx, va, sizeof(*m), &host) == RUN_ONE) {
		fx->used = mark; /* nothing was bounced: give the copy back */
		if (host != va) {
			*arg = host;
			COUNT(translated, 1);
		}
		return 0;
	}
	if (recv && !add_action(fx, ACT_MSGHDR, va, m, 1))
		return -ENOMEM;
	*arg = (uintptr_t)m;
	COUNT(nested, 1);
	return 0;
}

static int fix_mmsghdr(struct dl_kvm_fixup *fx, uint64_t *arg,
		       uint64_t *vlen_arg, bool recv)
{
	uintptr_t va = (uintptr_t)*arg;
	uint64_t vlen = *vlen_arg;
	if (!vlen || !readable(fx, va))
		return 0;
	if (vlen > UIO_MAXIOV)
		vlen = UIO_MAXIOV; /* what the kernel does */
	size_t mark = fx->used;
	struct kmmsghdr *copy = scratch_take(fx, vlen * sizeof(*copy));
	if (!copy) {
		/* as many as fit, with room for their bounces */
		size_t room = fx->scratch_size > fx->used
				      ? (fx->scratch_size - fx->used) / 2
				      : 0;
		vlen = room / sizeof(*copy);
		if (!vlen)
			return -ENOMEM;
		copy = scratch_take(fx, vlen * sizeof(*copy));
		if (!copy)
			return -ENOMEM;
		COUNT(shortened, 1);
	}
	bool changed = vlen != *vlen_arg;
	uint64_t done = 0;
	for (; done < vlen; done++) {
		size_t before = fx->used;
		int r = read_guest(fx, va + done * sizeof(*copy), &copy[done],
				   sizeof(*copy));
		if (r < 0)
			return r;
		r = fix_msghdr_fields(fx, &copy[done].hdr, recv, &changed);
		if (r == -ENOMEM && done > 0) {
			fx->used = before; /* stop here: a short count */
			changed = true;
			COUNT(shortened, 1);
			break;
		}
		if (r < 0)
			return r;
	}
	uintptr_t host;
	if (!changed && range_host(fx, va, vlen * sizeof(*copy), &host) ==
				RUN_ONE) {
		fx->used = mark;
		if (host != va) {
			*arg = host;
			COUNT(translated, 1);
		}
		return 0;
	}
	struct dl_kvm_fixup_action *a =
		add_action(fx, ACT_MMSGHDR, va, copy, (size_t)done);
	if (!a)
		return -ENOMEM;
	a->recv = recv;
	*arg = (uintptr_t)copy;
	*vlen_arg = done;
	COUNT(nested, 1);
	return 0;
}

/* ---- structs with pointers ---- */

/* A copy of len bytes at *arg, for a handler to rewrite. */
static int copy_struct(struct dl_kvm_fixup *fx, uintptr_t va, size_t len,
		       void **copy)
{
	*copy = scratch_take(fx, len);
	if (!*copy)
		return -ENOMEM;
	return read_guest(fx, va, *copy, len);
}

/* A struct sock_fprog {u16 len; struct sock_filter *filter} (8 bytes each). */
static int fix_sock_fprog(struct dl_kvm_fixup *fx, uint64_t *arg)
{
	uintptr_t va = (uintptr_t)*arg;
	if (!readable(fx, va))
		return 0;
	uint64_t *f;
	int r = copy_struct(fx, va, 16, (void **)&f);
	if (r < 0)
		return r;
	uint64_t filter = f[1];
	r = fix_buffer(fx, &f[1], (f[0] & 0xffff) * 8, DUNE_SC_IN, false);
	if (r < 0)
		return r;
	if (f[1] == filter && !is_alias(fx, va))
		return 0;
	*arg = (uintptr_t)f;
	COUNT(nested, 1);
	return 0;
}

/* A {const void *ptr; size_t len} pair (pselect6's sigset, __aio_sigset). */
static int fix_ptr_len(struct dl_kvm_fixup *fx, uint64_t *arg)
{
	uintptr_t va = (uintptr_t)*arg;
	if (!readable(fx, va))
		return 0;
	uint64_t *p;
	int r = copy_struct(fx, va, 16, (void **)&p);
	if (r < 0)
		return r;
	uint64_t ptr = p[0];
	r = fix_buffer(fx, &p[0], p[1] <= 128 ? p[1] : 0, DUNE_SC_IN, false);
	if (r < 0)
		return r;
	if (p[0] == ptr && !is_alias(fx, va))
		return 0;
	*arg = (uintptr_t)p;
	COUNT(nested, 1);
	return 0;
}

#define KSS_DISABLE 2

static int fix_sigaltstack_in(struct dl_kvm_fixup *fx, uint64_t *arg)
{
	uintptr_t va = (uintptr_t)*arg;
	if (!readable(fx, va))
		return 0;
	struct {
		uint64_t sp;
		int32_t flags;
		uint32_t pad;
		uint64_t size;
	} *ss;
	int r = copy_struct(fx, va, sizeof(*ss), (void **)&ss);
	if (r < 0)
		return r;
	uintptr_t sp = ss->sp, host = sp;
	if (!(ss->flags & KSS_DISABLE) && sp && is_alias(fx, sp)) {
		r = range_host(fx, sp, ss->size ? ss->size : 1, &host);
		if (r < 0)
			return r;
		if (r == RUN_SPLIT) {
			COUNT(refused, 1);
			return -ENOMEM;
		}
		ss->sp = host;
		COUNT(translated, 1);
	}
	struct dl_kvm_fixup_action *a =
		add_action(fx, ACT_ALTSTACK_SET, host != sp ? sp : 0, NULL, 0);
	if (!a)
		return -ENOMEM;
	a->mask = host != sp ? host : 0;
	if (host == sp && !is_alias(fx, va))
		return 0;
	*arg = (uintptr_t)ss;
	COUNT(nested, 1);
	return 0;
}

/* clone3's struct clone_args: size bytes (at least 64, the first version). */
static int fix_clone_args(struct dl_kvm_fixup *fx, uint64_t *arg,
			  uint64_t size)
{
	uintptr_t va = (uintptr_t)*arg;
	if (!readable(fx, va) || size < 64 || size > PAGE)
		return 0; /* the kernel refuses these itself */
	uint64_t *ca;
	int r = copy_struct(fx, va, size, (void **)&ca);
	if (r < 0)
		return r;
	bool changed = is_alias(fx, va);
	/* pidfd, child_tid, parent_tid: words the kernel writes (child_tid
	 * also at thread exit: kept) */
	for (int i = 1; i <= 3; i++) {
		uint64_t before = ca[i];
		r = translate_kept(fx, &ca[i], 4);
		if (r < 0)
			return r;
		changed |= ca[i] != before;
	}
	if (size >= 80 && ca[8] && ca[9] && ca[9] <= 32) { /* set_tid */
		uint64_t before = ca[8];
		r = fix_buffer(fx, &ca[8], ca[9] * 4, DUNE_SC_IN, false);
		if (r < 0)
			return r;
		changed |= ca[8] != before;
	}
	if (!changed)
		return 0;
	*arg = (uintptr_t)ca;
	COUNT(nested, 1);
	return 0;
}

/* futex_waitv entries: {u64 val; u64 uaddr; u32 flags; u32 reserved}. */
static int fix_futex_waitv(struct dl_kvm_fixup *fx, uint64_t *arg,
			   uint64_t count)
{
	uintptr_t va = (uintptr_t)*arg;
	if (!count || count > 128 || !readable(fx, va))
		return 0;
	uint64_t *w;
	int r = copy_struct(fx, va, count * 24, (void **)&w);
	if (r < 0)
		return r;
	bool changed = is_alias(fx, va);
	for (uint64_t i = 0; i < count; i++) {
		uint64_t before = w[i * 3 + 1];
		r = translate_kept(fx, &w[i * 3 + 1], 4);
		if (r < 0)
			return r;
		changed |= w[i * 3 + 1] != before;
	}
	if (!changed)
		return 0;
	*arg = (uintptr_t)w;
	COUNT(nested, 1);
	return 0;
}

/* mq_notify's sigevent: with SIGEV_THREAD, sival_ptr is a 32-byte cookie. */
static int fix_sigevent_cookie(struct dl_kvm_fixup *fx, uint64_t *arg)
{
	uintptr_t va = (uintptr_t)*arg;
	if (!readable(fx, va))
		return 0;
	uint64_t *se;
	int r = copy_struct(fx, va, 64, (void **)&se);
	if (r < 0)
		return r;
	int32_t notify = (int32_t)(se[1] >> 32);
	uint64_t before = se[0];
	if (notify == 2 /* SIGEV_THREAD */) {
		r = fix_buffer(fx, &se[0], 32, DUNE_SC_IN, false);
		if (r < 0)
			return r;
	}
	if (se[0] == before && !is_alias(fx, va))
		return 0;
	*arg = (uintptr_t)se;
	COUNT(nested, 1);
	return 0;
}

/* move_pages' list of page addresses in process pid (0: this one). */
static int fix_page_list(struct dl_kvm_fixup *fx, uint64_t *arg,
			 uint64_t count, uint64_t pid)
{
	uintptr_t va = (uintptr_t)*arg;
	if (pid || !count || !readable(fx, va))
		return pid ? fix_buffer(fx, arg, count * 8, DUNE_SC_IN, false)
			   : 0;
	if (count > fx->scratch_size / 8)
		return -ENOMEM;
	uint64_t *pages;
	int r = copy_struct(fx, va, count * 8, (void **)&pages);
	if (r < 0)
		return r;
	bool changed = is_alias(fx, va);
	for (uint64_t i = 0; i < count; i++) {
		uintptr_t h;
		size_t contig;
		/* a revoked page stays an alias: the kernel reports -EFAULT in
		 * its status entry, as for any unmapped page */
		if (fx->translate(pages[i], &h, &contig) && h != pages[i]) {
			pages[i] = h;
			changed = true;
		}
	}
	if (!changed)
		return 0;
	*arg = (uintptr_t)pages;
	COUNT(nested, 1);
	return 0;
}

/* The best effort for a pointer of unknown extent: its first run. */
static int fix_unknown(struct dl_kvm_fixup *fx, uint64_t *arg)
{
	uintptr_t va = (uintptr_t)*arg, host;
	size_t contig;
	if (!va || !is_alias(fx, va))
		return 0;
	if (!fx->translate(va, &host, &contig))
		return -EFAULT;
	*arg = host;
	COUNT(unknown_commands, 1);
	return 0;
}

/*
 * A struct of unknown layout that holds pointers (bpf_attr,
 * perf_event_attr, kexec_segment): copied, each aligned word holding an
 * alias translated, and those words left out of the copy back.
 */
static int fix_scanned(struct dl_kvm_fixup *fx, uint64_t *arg, size_t len,
		       int dir)
{
	uintptr_t va = (uintptr_t)*arg;
	if (!readable(fx, va) || !len)
		return 0;
	if (len > 512)
		len = 512; /* the mask covers 64 words; beyond: left alone */
	size_t mark = fx->used;
	uint64_t *w;
	int r = copy_struct(fx, va, len, (void **)&w);
	if (r < 0)
		return r;
	uint64_t mask = 0;
	for (size_t i = 0; i < len / 8; i++) {
		uint64_t before = w[i];
		r = fix_unknown(fx, &w[i]);
		if (r < 0)
			return r;
		if (w[i] != before)
			mask |= 1ULL << i;
	}
	if (!mask) {
		/* nothing inside: only the struct itself may need moving */
		fx->used = mark;
		return fix_buffer(fx, arg, len, dir, false);
	}
	if (dir & DUNE_SC_OUT) {
		struct dl_kvm_fixup_action *a =
			add_action(fx, ACT_COPYBACK_MASKED, va, w, len);
		if (!a)
			return -ENOMEM;
		a->mask = mask;
	}
	*arg = (uintptr_t)w;
	COUNT(nested, 1);
	return 0;
}

/* ---- command-dependent arguments ---- */

struct cmd_arg {
	uint32_t cmd;
	uint16_t size;
	uint8_t dir;
};

static const struct cmd_arg *find_cmd(const struct cmd_arg *t, size_t n,
				      uint32_t cmd)
{
	for (size_t i = 0; i < n; i++)
		if (t[i].cmd == cmd)
			return &t[i];
	return NULL;
}

#define IN DUNE_SC_IN
#define OUT DUNE_SC_OUT
#define INOUT DUNE_SC_INOUT

/* tty ioctls from before the _IOC encoding (asm-generic/ioctls.h) */
static const struct cmd_arg legacy_ioctls[] = {
	{0x5401, 36, OUT},   /* TCGETS: struct termios */
	{0x5402, 36, IN},    /* TCSETS */
	{0x5403, 36, IN},    /* TCSETSW */
	{0x5404, 36, IN},    /* TCSETSF */
	{0x5405, 18, OUT},   /* TCGETA: struct termio */
	{0x5406, 18, IN},    /* TCSETA */
	{0x5407, 18, IN},    /* TCSETAW */
	{0x5408, 18, IN},    /* TCSETAF */
	{0x540F, 4, OUT},    /* TIOCGPGRP */
	{0x5410, 4, IN},     /* TIOCSPGRP */
	{0x5411, 4, OUT},    /* TIOCOUTQ */
	{0x5412, 1, IN},     /* TIOCSTI */
	{0x5413, 8, OUT},    /* TIOCGWINSZ */
	{0x5414, 8, IN},     /* TIOCSWINSZ */
	{0x5415, 4, OUT},    /* TIOCMGET */
	{0x5416, 4, IN},     /* TIOCMBIS */
	{0x5417, 4, IN},     /* TIOCMBIC */
	{0x5418, 4, IN},     /* TIOCMSET */
	{0x541B, 4, OUT},    /* FIONREAD */
	{0x5421, 4, IN},     /* FIONBIO */
	{0x5423, 4, IN},     /* TIOCSETD */
	{0x5424, 4, OUT},    /* TIOCGETD */
	{0x5429, 4, OUT},    /* TIOCGSID */
	{0x5452, 4, IN},     /* FIOASYNC */
};

static const struct cmd_arg fcntl_cmds[] = {
	{5, 32, INOUT},   /* F_GETLK: struct flock */
	{6, 32, IN},      /* F_SETLK */
	{7, 32, IN},      /* F_SETLKW */
	{36, 32, INOUT},  /* F_OFD_GETLK */
	{37, 32, IN},     /* F_OFD_SETLK */
	{38, 32, IN},     /* F_OFD_SETLKW */
	{15, 8, IN},      /* F_SETOWN_EX: struct f_owner_ex */
	{16, 8, OUT},     /* F_GETOWN_EX */
	{17, 8, OUT},     /* F_GETOWNER_UIDS: u32[2] */
	{1035, 8, OUT},   /* F_GET_RW_HINT */
	{1036, 8, IN},    /* F_SET_RW_HINT */
	{1037, 8, OUT},   /* F_GET_FILE_RW_HINT */
	{1038, 8, IN},    /* F_SET_FILE_RW_HINT */
};

/* prctl options whose arg2 points to something of a fixed size */
static const struct cmd_arg prctl_arg2[] = {
	{2, 4, OUT},   /* PR_GET_PDEATHSIG */
	{5, 4, OUT},   /* PR_GET_UNALIGN */
	{9, 4, OUT},   /* PR_GET_FPEMU */
	{11, 4, OUT},  /* PR_GET_FPEXC */
	{16, 16, OUT}, /* PR_GET_NAME */
	{19, 4, OUT},  /* PR_GET_ENDIAN */
	{25, 4, OUT},  /* PR_GET_TSC */
	{37, 4, OUT},  /* PR_GET_CHILD_SUBREAPER */
	{40, 8, OUT},  /* PR_GET_TID_ADDRESS */
};

static const struct cmd_arg arch_prctl_cmds[] = {
	{0x1003, 8, OUT}, /* ARCH_GET_FS */
	{0x1004, 8, OUT}, /* ARCH_GET_GS */
	{0x1021, 8, OUT}, /* ARCH_GET_XCOMP_SUPP */
	{0x1022, 8, OUT}, /* ARCH_GET_XCOMP_PERM */
	{0x1024, 8, OUT}, /* ARCH_GET_XCOMP_GUEST_PERM */
	{0x5005, 8, OUT}, /* ARCH_SHSTK_STATUS */
};

/* ARCH_SET_FS/GS and ARCH_SET_CPUID take values the CPU uses in the guest */
static bool arch_prctl_value(uint64_t option)
{
	return option == 0x1001 || option == 0x1002 || option == 0x1012;
}

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

static int fix_cmd(struct dl_kvm_fixup *fx, uint64_t *arg,
		   const struct cmd_arg *c)
{
	if (!c)
		return fix_unknown(fx, arg);
	return fix_buffer(fx, arg, c->size, c->dir, false);
}

static int fix_ioctl(struct dl_kvm_fixup *fx, uint64_t *a)
{
	uint32_t cmd = (uint32_t)a[1];
	uint32_t dir = cmd >> 30, size = (cmd >> 16) & 0x3fff;
	if (dir && size) {
		/* _IOC: _IOC_WRITE (1) is the kernel reading, _IOC_READ (2)
		 * the kernel writing */
		int d = (dir & 1 ? IN : 0) | (dir & 2 ? OUT : 0);
		return fix_buffer(fx, &a[2], size, d, false);
	}
	/* socket interface ioctls on struct ifreq (SIOCGIFCONF, 0x8912,
	 * holds a pointer: left to the best effort) */
	if (cmd >= 0x8913 && cmd <= 0x8960)
		return fix_buffer(fx, &a[2], 40, INOUT, false);
	return fix_cmd(fx, &a[2], find_cmd(legacy_ioctls,
					   ARRAY_LEN(legacy_ioctls), cmd));
}

static int fix_prctl(struct dl_kvm_fixup *fx, uint64_t *a)
{
	uint64_t option = a[0];
	if (option == 15) /* PR_SET_NAME: up to 16 bytes of a string */
		return fix_string(fx, &a[1], 16, true);
	if (option == 22 && a[1] == 2) /* PR_SET_SECCOMP, FILTER */
		return fix_sock_fprog(fx, &a[2]);
	if (option == 0x53564d41 && a[1] == 0) /* PR_SET_VMA_ANON_NAME */
		return fix_string(fx, &a[4], 80, false);
	const struct cmd_arg *c =
		find_cmd(prctl_arg2, ARRAY_LEN(prctl_arg2), (uint32_t)option);
	if (c && option == (uint64_t)c->cmd)
		return fix_buffer(fx, &a[1], c->size, c->dir, false);
	for (int i = 1; i <= 4; i++) {
		int r = fix_unknown(fx, &a[i]);
		if (r < 0)
			return r;
	}
	return 0;
}

static int fix_sockopt(struct dl_kvm_fixup *fx, uint64_t *a, bool set)
{
	uint64_t level = (uint32_t)a[1], optname = (uint32_t)a[2];
	int32_t optlen;
	if (set) {
		optlen = (int32_t)fx->args[4];
		if (level == 1 && (optname == 26 || optname == 51))
			return fix_sock_fprog(fx, &a[3]); /* SO_ATTACH_FILTER,
							     SO_ATTACH_REUSEPORT_CBPF */
	} else {
		if (!readable(fx, fx->args[4]))
			return 0;
		int r = read_guest(fx, fx->args[4], &optlen, 4);
		if (r < 0)
			return r;
	}
	if (optlen <= 0)
		return 0;
	return fix_buffer(fx, &a[3], (size_t)optlen, set ? IN : OUT, false);
}

static int fix_futex(struct dl_kvm_fixup *fx, uint64_t *a)
{
	uint64_t op = a[1] & 127; /* without FUTEX_PRIVATE_FLAG, CLOCK_REALTIME */
	switch (op) {
	case 0:  /* FUTEX_WAIT */
	case 6:  /* FUTEX_LOCK_PI */
	case 9:  /* FUTEX_WAIT_BITSET */
	case 13: /* FUTEX_LOCK_PI2 */
		return fix_buffer(fx, &a[3], 16, IN, false);
	case 11: /* FUTEX_WAIT_REQUEUE_PI: a timeout and a second word */
	{
		int r = fix_buffer(fx, &a[3], 16, IN, false);
		return r < 0 ? r : translate_kept(fx, &a[4], 4);
	}
	case 3:  /* FUTEX_REQUEUE */
	case 4:  /* FUTEX_CMP_REQUEUE */
	case 5:  /* FUTEX_WAKE_OP */
	case 12: /* FUTEX_CMP_REQUEUE_PI */
		return translate_kept(fx, &a[4], 4);
	default:
		return 0;
	}
}

static int fix_cap_data(struct dl_kvm_fixup *fx, uint64_t *a, int dir)
{
	uint32_t version;
	if (!a[1] || !readable(fx, fx->args[0]))
		return 0;
	int r = read_guest(fx, fx->args[0], &version, 4);
	if (r < 0)
		return r;
	size_t n = version == 0x19980330 ? 1
		   : version == 0x20071026 || version == 0x20080522 ? 2
								    : 0;
	return n ? fix_buffer(fx, &a[1], n * 12, dir, false) : 0;
}

/* The handlers for 'depends' arguments, by call. */
static int fix_depends(struct dl_kvm_fixup *fx, uint64_t nr, int i,
		       uint64_t *a)
{
	switch (nr) {
	case SYS_ioctl:
		return fix_ioctl(fx, a);
	case SYS_fcntl:
		return fix_cmd(fx, &a[2], find_cmd(fcntl_cmds,
						   ARRAY_LEN(fcntl_cmds),
						   (uint32_t)a[1]));
	case SYS_prctl:
		return i == 1 ? fix_prctl(fx, a) : 0; /* all at once */
	case SYS_arch_prctl:
		if (arch_prctl_value(a[0]))
			return 0;
		return fix_cmd(fx, &a[1], find_cmd(arch_prctl_cmds,
						   ARRAY_LEN(arch_prctl_cmds),
						   (uint32_t)a[0]));
	case SYS_setsockopt:
		return fix_sockopt(fx, a, true);
	case SYS_getsockopt:
		return fix_sockopt(fx, a, false);
	case SYS_futex:
		return i == 3 ? fix_futex(fx, a) : 0; /* both at once */
	case SYS_capget:
		return fix_cap_data(fx, a, OUT);
	case SYS_capset:
		return fix_cap_data(fx, a, IN);
	case SYS_name_to_handle_at:
		/* AT_HANDLE_MNT_ID_UNIQUE: a u64 mount id, else an int */
		return fix_buffer(fx, &a[3], a[4] & 1 ? 8 : 4, OUT, false);
	case SYS_landlock_add_rule:
		return a[1] == 1   ? fix_buffer(fx, &a[2], 12, IN, false)
		       : a[1] == 2 ? fix_buffer(fx, &a[2], 16, IN, false)
				   : fix_unknown(fx, &a[2]);
	case SYS_seccomp:
		return a[0] == 1 ? fix_sock_fprog(fx, &a[2]) /* SET_MODE_FILTER */
				 : fix_unknown(fx, &a[2]);
	case SYS_ptrace:
		/* addr is in the tracee, whose aliases are its own */
		return i == 3 ? fix_unknown(fx, &a[i]) : 0;
	default:
		return fix_unknown(fx, &a[i]);
	}
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

/* A buffer's length from the program's arguments. */
static int buf_len(struct dl_kvm_fixup *fx, const struct dune_sc_arg *arg,
		   size_t *len)
{
	*len = 0;
	if (arg->len_arg < 0 || arg->len_arg > 5)
		return 0;
	uint64_t n = fx->args[arg->len_arg];
	size_t elem = arg->size ? arg->size : 1;
	switch (arg->len_unit) {
	case DUNE_SC_LEN_BYTES:
		*len = n;
		break;
	case DUNE_SC_LEN_ELEMS:
		if (n > SIZE_MAX / elem)
			return 0;
		*len = n * elem;
		break;
	case DUNE_SC_LEN_BITS:
		*len = (n + 63) / 64 * 8;
		break;
	case DUNE_SC_LEN_PAGES:
		*len = (n + PAGE - 1) / PAGE;
		break;
	case DUNE_SC_LEN_PTR: {
		int32_t v;
		if (!n || !readable(fx, n))
			return 0;
		int r = read_guest(fx, n, &v, 4);
		if (r < 0)
			return r;
		*len = v > 0 ? (size_t)v : 0;
		break;
	}
	}
	if (*len)
		*len += arg->extra;
	return 0;
}

static int fix_vmrange(struct dl_kvm_fixup *fx, uint64_t nr, int i,
		       uint64_t *a)
{
	uintptr_t va = a[i];
	if (!va || !is_alias(fx, va))
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

static int fix_nested(struct dl_kvm_fixup *fx, uint64_t nr, int i,
		      uint64_t *a, const struct dune_sc_arg *arg,
		      bool kept)
{
	const char *type = arg->type ? arg->type : "";
	if (!strcmp(type, "struct sigaction"))
		return fix_buffer(fx, &a[i], arg->size, arg->dir, false);
	if (!strcmp(type, "struct sigaltstack")) {
		if (arg->dir == DUNE_SC_IN)
			return fix_sigaltstack_in(fx, &a[i]);
		int r = fix_buffer(fx, &a[i], arg->size, arg->dir, false);
		if (r < 0 || !a[i])
			return r;
		return add_action(fx, ACT_ALTSTACK_OLD, fx->args[i], NULL, 0)
			       ? 0
			       : -ENOMEM;
	}
	if (!strcmp(type, "struct clone_args"))
		return fix_clone_args(fx, &a[i], fx->args[1]);
	if (!strcmp(type, "struct futex_waitv"))
		return fix_futex_waitv(fx, &a[i], fx->args[1]);
	if (!strcmp(type, "struct futex_waitv[2]"))
		return fix_futex_waitv(fx, &a[i], 2);
	if (!strcmp(type, "struct robust_list_head") ||
	    !strcmp(type, "struct rseq"))
		return translate_kept(fx, &a[i], arg->size);
	if (!strcmp(type, "pselect6 sigset") ||
	    !strcmp(type, "struct __aio_sigset"))
		return fix_ptr_len(fx, &a[i]);
	if (!strcmp(type, "struct sigevent (mq_notify)"))
		return fix_sigevent_cookie(fx, &a[i]);
	if (!strcmp(type, "move_pages addresses"))
		return fix_page_list(fx, &a[i], fx->args[1], fx->args[0]);
	if (kept) {
		COUNT(refused, 1);
		return -EINVAL; /* a kept struct this file does not know */
	}
	size_t len = arg->size;
	if (nr == SYS_bpf)
		len = fx->args[2]; /* union bpf_attr: the size argument */
	else if (arg->len_arg >= 0 && arg->len_unit == DUNE_SC_LEN_ELEMS)
		len = (size_t)fx->args[arg->len_arg] * arg->size;
	return fix_scanned(fx, &a[i], len, arg->dir);
}

static int selfsized_len(struct dl_kvm_fixup *fx, uintptr_t va,
			 const struct dune_sc_arg *arg, size_t *len)
{
	uint32_t v;
	*len = 0;
	if (!readable(fx, va))
		return 0;
	int r = read_guest(fx, va, &v, 4);
	if (r < 0)
		return r;
	if (arg->type && !strcmp(arg->type, "struct file_handle"))
		*len = 8 + (v <= 128 ? v : 128); /* MAX_HANDLE_SZ */
	else
		*len = v ? v : arg->size;
	if (*len > PAGE)
		*len = PAGE;
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
			return translate_kept(fx, &a[i], arg->size);
		return fix_buffer(fx, &a[i], arg->size, arg->dir, false);
	case DUNE_SC_BUF:
		r = buf_len(fx, arg, &len);
		if (r < 0)
			return r;
		if (kept)
			return translate_kept(fx, &a[i], len);
		r = fix_buffer(fx, &a[i], len, arg->dir,
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
		r = selfsized_len(fx, a[i], arg, &len);
		if (r < 0)
			return r;
		return fix_buffer(fx, &a[i], len, arg->dir, false);
	case DUNE_SC_STRING:
		return fix_string(fx, &a[i], MAX_ARG_STRLEN, false);
	case DUNE_SC_STRARRAY:
		return fix_strarray(fx, &a[i]);
	case DUNE_SC_IOVEC:
	case DUNE_SC_IOVEC_REMOTE:
		if (arg->len_arg < 0)
			return 0;
		return fix_iovec(fx, &a[i], &a[arg->len_arg],
				 arg->kind == DUNE_SC_IOVEC_REMOTE);
	case DUNE_SC_MSGHDR:
		return fix_msghdr(fx, &a[i], nr == SYS_recvmsg);
	case DUNE_SC_MMSGHDR:
		if (arg->len_arg < 0)
			return 0;
		return fix_mmsghdr(fx, &a[i], &a[arg->len_arg],
				   nr == SYS_recvmmsg);
	case DUNE_SC_NESTED:
		return fix_nested(fx, nr, i, a, arg, kept);
	case DUNE_SC_DEPENDS:
		return fix_depends(fx, nr, i, a);
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
	copy_out(fx, va + offsetof(struct kmsghdr, namelen), &m->namelen, 4);
	copy_out(fx, va + offsetof(struct kmsghdr, controllen),
		 &m->controllen, 8);
	copy_out(fx, va + offsetof(struct kmsghdr, flags), &m->flags, 4);
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
				n = ret < 0 ? 0 : (size_t)ret < n ? (size_t)ret : n;
			copy_out(fx, a->guest, a->copy, n);
			break;
		}
		case ACT_COPYBACK_MASKED:
			for (size_t off = 0; off < a->len; off += 8) {
				size_t n = a->len - off < 8 ? a->len - off : 8;
				if (!(a->mask & (1ULL << (off / 8))))
					copy_out(fx, a->guest + off,
						 (char *)a->copy + off, n);
			}
			break;
		case ACT_MSGHDR:
			if (ret >= 0)
				post_msghdr(fx, a->guest, a->copy);
			break;
		case ACT_MMSGHDR: {
			struct kmmsghdr *m = a->copy;
			for (int64_t k = 0; k < ret && (size_t)k < a->len; k++) {
				uintptr_t va = a->guest + (size_t)k * sizeof(*m);
				copy_out(fx, va + offsetof(struct kmmsghdr, len),
					 &m[k].len, 4);
				if (a->recv)
					post_msghdr(fx, va, &m[k].hdr);
			}
			break;
		}
		case ACT_ALTSTACK_OLD: {
			uint64_t sp;
			if (ret != 0 || !fx->altstack_host ||
			    read_guest(fx, a->guest, &sp, 8) < 0)
				break;
			if (sp == fx->altstack_host)
				copy_out(fx, a->guest, &fx->altstack_alias, 8);
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
