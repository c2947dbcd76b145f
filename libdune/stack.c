/* SPDX-License-Identifier: MIT */
/*
 * The main thread's stack, host side (issue 18).
 *
 * The kernel grows the main thread's stack ([stack], VM_GROWSDOWN) when a
 * user-mode access faults just below it.  A guest's access never takes
 * that path: the hypervisor faults the page in through get_user_pages
 * (KVM's hva_to_pfn, dune.ko's NPT fault), and since the StackRot fix
 * (Linux 6.5, backported to 6.1.37 and later) get_user_pages no longer
 * expands a stack.  A guest that recursed below the stack's current bottom
 * stopped with KVM_RUN's EFAULT.
 *
 * So libdune grows the stack to its whole limit before the guest runs, from
 * host context, where the kernel still expands stacks: a system call that
 * writes to the lowest address the limit allows (getrlimit's result, 16
 * bytes) takes the kernel's own fault path, which extends [stack] down to
 * it, or fails with EFAULT where the kernel would not grow it (nothing is
 * killed).  That one page is given back at once; the rest of the range is
 * part of the stack VMA but has no pages until touched, as a grown stack's.
 * Nothing new is mapped: /proc/self/maps still shows one [stack], so
 * pthread_getattr_np and core dumps see the stack the kernel would, and
 * the kernel's own stack_guard_gap keeps later mappings away from it.
 *
 *     mapping below |  ...  | guard | [stack], grown to the limit    |
 *                           guard_lo reserved_lo                    top
 *
 * The guard, DUNE_STACK_GUARD (the kernel's default stack_guard_gap) below
 * the grown stack, is unmapped in the guest's page tables: a touch there is
 * a guest #PF with its address in CR2, delivered as the program's SIGSEGV
 * (on its sigaltstack if it asked), where the default 1 GiB mapping would
 * have sent it to the host memory that is not there (KVM_RUN's EFAULT, no
 * address).  Its chunks are registered here so that the unmap holds.
 *
 * Invariants, while top != 0: [reserved_lo, top) is the stack VMA (no
 * growth needed), guard_lo + DUNE_STACK_GUARD == reserved_lo, the guard is
 * unmapped in pgroot and nothing of [reserved_lo, top) is.  reserved_lo
 * only moves down: a raised RLIMIT_STACK (setrlimit, prlimit64 on the
 * process itself: dune_stack_limit_changed) grows the stack again; a
 * lowered one changes nothing (the kernel keeps what a stack has grown to
 * as well, but would refuse growth past the new limit: libdune cannot
 * tell first use of the grown range from growth).
 *
 * Bounds: top - RLIMIT_STACK's soft limit (acct_stack_growth bounds the
 * stack VMA's size by it), never closer than DUNE_STACK_GUARD to the
 * mapping below (expand_downwards keeps the same gap), and at most
 * DUNE_STACK_MAX below the top whatever the limit: with RLIMIT_STACK
 * unlimited the kernel lays out mmap bottom-up and the stack could grow by
 * tens of TiB, which no memslot budget covers (and the growth is charged
 * as committed memory).  If the kernel refuses a growth (commit limit),
 * libdune tries half the distance, down to what the stack has already.
 */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>

#define DUNE_PAGE 4096ULL

static struct {
	uint64_t top;         /* end of [stack]; 0: libdune does not manage it */
	uint64_t reserved_lo; /* start of [stack], grown to its limit */
	uint64_t guard_lo;    /* start of the guard below it */
	uint64_t limit;       /* the RLIMIT_STACK it was grown for */
	volatile int lock;
} main_stack;

static void stack_lock(void)
{
	while (__atomic_exchange_n(&main_stack.lock, 1, __ATOMIC_ACQUIRE))
		__builtin_ia32_pause();
}

static void stack_unlock(void)
{
	__atomic_store_n(&main_stack.lock, 0, __ATOMIC_RELEASE);
}

static uint64_t parse_hex(const char **p)
{
	uint64_t v = 0;
	for (;; (*p)++) {
		char c = **p;
		if (c >= '0' && c <= '9')
			v = v * 16 + (uint64_t)(c - '0');
		else if (c >= 'a' && c <= 'f')
			v = v * 16 + (uint64_t)(c - 'a' + 10);
		else
			return v;
	}
}

/*
 * [stack] and the end of the mapping just below it, from /proc/self/maps.
 * 0 or -ENOENT.  Raw system calls and a buffer on the stack, no stdio: this
 * also runs on the vCPU loop's host side (a guest setrlimit), where
 * malloc may be the guest's own (Dangless's aliases exist only there).
 */
static int find_stack(uint64_t *lo, uint64_t *hi, uint64_t *below_end)
{
	char buf[4096];
	size_t have = 0;
	uint64_t prev_end = 0;
	int r = -ENOENT, skipping = 0;
	long fd = dune_sys3(SYS_open, "/proc/self/maps", O_RDONLY | O_CLOEXEC, 0);
	if (fd < 0)
		return -ENOENT;
	for (;;) {
		long n = dune_sys3(SYS_read, fd, buf + have, sizeof(buf) - 1 - have);
		if (n <= 0)
			break;
		have += (size_t)n;
		buf[have] = 0;
		char *line = buf, *nl;
		if (skipping) { /* the rest of a line longer than buf */
			if (!(nl = strchr(line, '\n'))) {
				have = 0;
				continue;
			}
			skipping = 0;
			line = nl + 1;
		}
		while ((nl = strchr(line, '\n'))) {
			*nl = 0;
			const char *p = line;
			uint64_t a = parse_hex(&p);
			uint64_t b = *p == '-' ? (p++, parse_hex(&p)) : 0;
			if (strstr(line, " [stack]")) {
				*lo = a;
				*hi = b;
				*below_end = prev_end;
				r = 0;
				goto out;
			}
			prev_end = b;
			line = nl + 1;
		}
		/* keep the partial last line; one that fills buf (a path
		 * near PATH_MAX) is not [stack]'s: skip it (were it the one
		 * below [stack], below_end would be too low, and the kernel's
		 * own gap check would still refuse growth into it) */
		have = (size_t)(buf + have - line);
		memmove(buf, line, have);
		if (have == sizeof(buf) - 1) {
			have = 0;
			skipping = 1;
		}
	}
out:
	dune_sys1(SYS_close, fd);
	return r;
}

static uint64_t soft_stack_limit(void)
{
	struct rlimit rl;
	if (dune_sys2(SYS_getrlimit, RLIMIT_STACK, &rl))
		return 0;
	return rl.rlim_cur;
}

/* Has the kernel extend [stack] down to lo (page-aligned) as a user-mode
 * fault there would: 0, or -EFAULT where it will not (limit, gap). */
static int kernel_grow_stack(uint64_t lo)
{
	if (dune_sys2(SYS_getrlimit, RLIMIT_STACK, lo))
		return -EFAULT;
	/* the VMA stays; the one page the probe wrote goes */
	dune_sys3(SYS_madvise, lo, DUNE_PAGE, MADV_DONTNEED);
	return 0;
}

/*
 * Grows the stack for this limit and moves the guard below it.  Caller
 * holds the lock.  The stack's start and the mapping below are read again
 * each time: the kernel may have grown the stack meanwhile (host code),
 * and mmap may have placed something below it.
 */
static void grow_for(uint64_t limit)
{
	uint64_t lo, top, below;
	if (find_stack(&lo, &top, &below) || top != main_stack.top)
		return;
	if (limit > DUNE_STACK_MAX)
		limit = DUNE_STACK_MAX;
	/* rounded up: the VMA's size stays within the limit */
	uint64_t want = limit >= top ? 0 : (top - limit + DUNE_PAGE - 1) & ~(DUNE_PAGE - 1);
	if (want < below + DUNE_STACK_GUARD)
		want = below + DUNE_STACK_GUARD;
	for (int tries = 0; want < lo; tries++) {
		if (kernel_grow_stack(want) == 0) {
			lo = want;
			break;
		}
		if (tries == 8)
			break; /* the stack stays as it is, guarded */
		want = (lo - (lo - want) / 2) & ~(DUNE_PAGE - 1);
	}
	if (lo < below + DUNE_STACK_GUARD)
		return; /* no room for a guard: leave the stack as it is */

	uint64_t old_guard = main_stack.guard_lo, old_lo = main_stack.reserved_lo;
	uint64_t guard = lo - DUNE_STACK_GUARD;
	dune_map_range(guard, top - guard);
	/* what was guard is stack now: the default mapping again */
	if (old_guard < old_lo && lo < old_lo) {
		uint64_t from = old_guard > lo ? old_guard : lo;
		dune_vm_map_pages(pgroot, (void *)from, old_lo - from,
				  PTE_W | PTE_U);
	}
	/* The host has nothing there, so no vCPU can hold a translation of
	 * it: unmapping needs no TLB flush. */
	dune_vm_unmap(pgroot, (void *)guard, lo - guard);
	main_stack.guard_lo = guard;
	main_stack.reserved_lo = lo;
}

void dune_stack_setup(void)
{
	uint64_t lo, top, below;
	if (main_stack.top || find_stack(&lo, &top, &below))
		return; /* no [stack] (no /proc?): growth stays the kernel's */
	stack_lock();
	main_stack.top = top;
	main_stack.reserved_lo = main_stack.guard_lo = lo;
	main_stack.limit = soft_stack_limit();
	grow_for(main_stack.limit);
	if (main_stack.guard_lo == main_stack.reserved_lo)
		main_stack.top = 0; /* not managed: as before */
	stack_unlock();
}

void dune_stack_limit_changed(void)
{
	if (!main_stack.top)
		return;
	stack_lock();
	uint64_t limit = soft_stack_limit();
	if (limit > main_stack.limit) {
		main_stack.limit = limit;
		grow_for(limit);
	}
	stack_unlock();
}

bool dune_stack_guard_overlaps(uint64_t lo, uint64_t hi)
{
	return main_stack.top && lo < main_stack.reserved_lo &&
	       hi > main_stack.guard_lo;
}
