/* SPDX-License-Identifier: MIT */
/*
 * Alias space that lasts: a conservative sweep finds the revoked alias
 * ranges that nothing the program can read points into any more, and makes
 * exactly those reusable (R1-R3 in internal.h).
 *
 * Unit: a retired segment (2 MiB, or a large object's own segments), whose
 * every object was freed and revoked.  Its map entries are rewritten for
 * the sweep to hold its index (DL_SEGMAP_CAND), so that every scanned word
 * costs a compare and, inside alias space, one load.
 *
 * Roots, with every other thread stopped (world.c says why stopped):
 *  - every thread's registers as its signal frame holds them (general,
 *    x87/SSE/AVX state), and the sweeping thread's callee-saved registers;
 *  - every readable mapping of /proc/self/maps that is writable, or
 *    anonymous (read-only heaps, JIT code): stacks (whole, the sweeper's
 *    from its own frame up), data and bss of every loaded object, TLS
 *    (glibc puts it in thread stacks and loader memory), the heaps of other
 *    allocators, the program's own mmaps and shared memory;
 *  - the PT_GNU_RELRO ranges of loaded objects (read-only again, but
 *    written at load time), from dl_iterate_phdr before the world stops;
 *  - every thread's alternate signal stack (Dangless's own are in its
 *    metadata region, which is otherwise never scanned);
 *  - live heap objects: every handed-out, not freed slot and every live
 *    large object, read through canonical memory (free or cached slots
 *    hold nothing the program can read).
 * Not scanned: alias space itself (live objects are read through canonical
 * memory instead, revoked pages would fault), the backend's canonical
 * memory and page tables (own_memory), Dangless's metadata region, and the
 * vDSO.  Other memory is read with process_vm_readv, so that a page that
 * cannot be read (guard pages, a file mapping past its end) is skipped
 * instead of faulting.
 *
 * A word pins a range when it lies inside it or one byte past its end
 * (p + size of the last object).  Words are read at 8-byte alignment.
 * What is not seen is the documented limit (README, "Alias space that
 * lasts"): pointers stored unaligned, XORed, compressed or tagged in their
 * top bits; pointers held in files, pipes or sockets, by the kernel (aio,
 * io_uring, robust futex lists) or by another process (shared memory
 * mapped elsewhere but not here); and memory written meanwhile by a vfork
 * child, which shares the address space but is not a thread.
 */
#include <errno.h>
#include <link.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/sysinfo.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

#define DL_SCAN_BUF ((size_t)64 << 10)
#define DL_PROC_BUF ((size_t)64 << 10)
#define DL_RELRO_MAX 512
#define DL_OWN_MAX 16
#define DL_SLOTS_MIN 64

/*
 * What the inner loop reads lives in metadata memory, which is never
 * scanned: a copy of a candidate's address in our own .bss would pin it.
 */
struct dl_sweep_hot {
	uintptr_t lo, span;       /* candidates lie in [lo, lo + span] */
	struct dl_retired *cand;
	int regs_of;              /* scanning registers: -1 no, else whose */
};
static struct dl_sweep_hot *dl_hot;

static struct {
	atomic_int busy;          /* one sweep at a time */
	char *scan_buf, *proc_buf;
	struct dl_world_slot *slots;
	unsigned cap;
	struct dl_range relro[DL_RELRO_MAX];
	unsigned nrelro;
	struct dl_range own[DL_OWN_MAX]; /* never scanned as roots */
	unsigned nown;
	size_t ncand;
	uintptr_t self_sp;
	uint64_t scanned;
	bool unreadable;          /* process_vm_readv refused: pin all */
	bool swap;                /* swap configured: mincore can't tell */
	bool anon;                /* the mapping being scanned is anonymous */
	pid_t pid;
	bool warned;
	unsigned char vec[DL_SEG_SIZE / DL_PAGE];
} dl_rc;

/* ---- scanning ---- */

static void dl_read_remote(uintptr_t start, uintptr_t end);

static inline void dl_pin(uintptr_t v, uintptr_t at)
{
	/* v lies between two retired ranges' ends: canonical, but its leaf
	 * may never have been made */
	_Atomic uintptr_t *slot = _dl_segmap_slot(v);
	uintptr_t e = slot ? atomic_load_explicit(slot, memory_order_relaxed)
			   : 0;
	if (DL_SEGMAP_IS_CAND(e)) {
		struct dl_retired *r = &dl_hot->cand[e >> 2];
		if (!r->pinned) {
			r->pinned_at = dl_hot->regs_of < 0 ? at : 0;
			r->pinned_regs = dl_hot->regs_of;
		}
		r->pinned = true;
	}
}

/* p: len bytes read from (as the program sees it) address `from`. */
static void dl_scan_words(const void *p, size_t len, uintptr_t from)
{
	const uintptr_t *w = p;
	uintptr_t lo = dl_hot->lo, span = dl_hot->span;
	for (size_t i = 0, n = len / sizeof(uintptr_t); i < n; i++) {
		uintptr_t v = w[i];
		if (likely(v - lo > span))
			continue;
		dl_pin(v, from + i * sizeof(uintptr_t));
		/* one past the end of a segment's last object */
		if (!(v & (DL_SEG_SIZE - 1)))
			dl_pin(v - 1, from + i * sizeof(uintptr_t));
	}
	dl_rc.scanned += len;
}

/* Memory that may not be readable everywhere: read through the kernel. */
static void dl_scan_remote(uintptr_t start, uintptr_t end)
{
	if (dl_rc.anon && !dl_rc.swap && end - start > DL_SCAN_BUF) {
		/* Anonymous memory never touched reads zero: skip it rather
		 * than fault it in (a sparse reservation of the program's,
		 * idle stacks).  Exact only without swap, where a page that is
		 * not resident was never written. */
		uintptr_t at = DL_ALIGN_DOWN(start, DL_PAGE);
		while (at < end) {
			uintptr_t to = DL_ALIGN_DOWN(at, DL_SEG_SIZE) + DL_SEG_SIZE;
			if (to > end)
				to = DL_ALIGN_UP(end, DL_PAGE);
			if (mincore((void *)at, to - at, dl_rc.vec)) {
				dl_read_remote(at > start ? at : start,
					       to < end ? to : end);
			} else {
				for (uintptr_t p = at; p < to;) {
					uintptr_t q = p;
					while (q < to &&
					       (dl_rc.vec[(q - at) / DL_PAGE] & 1))
						q += DL_PAGE;
					if (q > p)
						dl_read_remote(p > start ? p : start,
							       q < end ? q : end);
					p = q + DL_PAGE;
				}
			}
			at = to;
		}
		return;
	}
	dl_read_remote(start, end);
}

static void dl_read_remote(uintptr_t start, uintptr_t end)
{
	start = DL_ALIGN_UP(start, sizeof(uintptr_t));
	while (start < end) {
		size_t want = end - start < DL_SCAN_BUF ? end - start
							: DL_SCAN_BUF;
		struct iovec local = {dl_rc.scan_buf, want};
		struct iovec remote = {(void *)start, want};
		ssize_t n = process_vm_readv(dl_rc.pid, &local, 1, &remote, 1,
					     0);
		if (n < 0 && errno != EFAULT && errno != EINTR) {
			dl_rc.unreadable = true;
			return;
		}
		if (n > 0)
			dl_scan_words(dl_rc.scan_buf, (size_t)n, start);
		if (n < 0 && errno == EINTR)
			continue;
		/* A page that cannot be read, not even by the program: skip
		 * it. */
		start += n > 0 ? (size_t)n : 0;
		if ((size_t)(n > 0 ? n : 0) < want)
			start = DL_ALIGN_DOWN(start, DL_PAGE) + DL_PAGE;
	}
}

/* [start, end) less the backend's memory and our metadata region; alias
 * space (any segment we ever mapped) is skipped segment by segment. */
static void dl_scan_root(uintptr_t start, uintptr_t end)
{
	for (unsigned i = 0; i < dl_rc.nown; i++) {
		uintptr_t os = dl_rc.own[i].start;
		uintptr_t oe = os + dl_rc.own[i].len;
		if (os >= end || oe <= start)
			continue;
		if (start < os)
			dl_scan_root(start, os);
		if (oe < end)
			dl_scan_root(oe, end);
		return;
	}
	while (start < end) {
		uintptr_t next = DL_ALIGN_DOWN(start, DL_SEG_SIZE) + DL_SEG_SIZE;
		if (next > end || next < start)
			next = end;
		if (!_dl_segmap_get(start))
			dl_scan_remote(start, next);
		start = next;
	}
}

static bool dl_scan_mapping(const struct dl_mapping *m, void *ctx)
{
	(void)ctx;
	bool special = m->name[0] == '[' && m->name[1] == 'v';
	if (!m->read || special || (!m->write && m->inode))
		return true;
	uintptr_t start = m->start;
	/* The sweeper's own stack: from the frame that called us up. */
	if (dl_rc.self_sp >= m->start && dl_rc.self_sp < m->end)
		start = dl_rc.self_sp;
	/* A stopped thread's stack: from its stack pointer, less the red
	 * zone that leaf functions use below it; what lies further down is
	 * dead frames, which the program cannot read (and the kernel wrote
	 * the signal frame over), so stale pointers there keep nothing. */
	struct dl_world_slot *slots;
	unsigned n = _dl_world_stopped(&slots);
	for (unsigned i = 0; i < n; i++) {
		if (atomic_load(&slots[i].state) != DL_WORLD_STOPPED)
			continue;
		uintptr_t sp = slots[i].sp - 128;
		if (sp >= m->start && sp < m->end && sp > start)
			start = sp;
	}
	dl_rc.anon = !m->inode;
	dl_scan_root(start, m->end);
	dl_rc.anon = false;
	return true;
}

/* Canonical memory of a live object: ours, readable; a large one's pages
 * that were never touched are skipped (they read zero) when the system
 * has no swap, where mincore tells holes from pages. */
static void dl_scan_canon(uintptr_t canon, size_t len)
{
	if (len <= DL_SEG_SIZE / 8 || dl_rc.swap) {
		dl_scan_words((const void *)canon, len, canon);
		return;
	}
	for (uintptr_t at = canon; at < canon + len; at += DL_SEG_SIZE) {
		size_t n = canon + len - at < DL_SEG_SIZE ? canon + len - at
							   : DL_SEG_SIZE;
		if (mincore((void *)at, DL_ALIGN_UP(n, DL_PAGE), dl_rc.vec)) {
			dl_scan_words((const void *)at, n, at);
			continue;
		}
		for (size_t p = 0; p < DL_ALIGN_UP(n, DL_PAGE) / DL_PAGE; p++) {
			if (!(dl_rc.vec[p] & 1))
				continue;
			size_t off = p * DL_PAGE;
			dl_scan_words((const void *)(at + off),
				      n - off < DL_PAGE ? n - off : DL_PAGE,
				      at + off);
		}
	}
}

static void dl_scan_segment(struct dl_segment *seg)
{
	if (seg->kind == DL_SEG_SMALL)
		_dl_small_for_each_live(seg, dl_scan_canon);
	else
		_dl_large_for_each_live(seg, dl_scan_canon);
}

static void dl_scan_threads(const uintptr_t *self_regs)
{
	dl_hot->regs_of = 0;
	dl_scan_words(self_regs, 6 * sizeof(uintptr_t), 0);
	struct dl_world_slot *slots;
	unsigned n = _dl_world_stopped(&slots);
	for (unsigned i = 0; i < n; i++) {
		if (atomic_load(&slots[i].state) != DL_WORLD_STOPPED)
			continue;
		dl_hot->regs_of = (int)i + 1;
		dl_scan_words(slots[i].regs, slots[i].regs_len, 0);
		dl_hot->regs_of = -1;
		if (slots[i].altstack_len)
			dl_scan_remote(slots[i].altstack,
				       slots[i].altstack +
					       slots[i].altstack_len);
	}
	dl_hot->regs_of = -1;
	stack_t ss;
	if (!sigaltstack(NULL, &ss) && !(ss.ss_flags & SS_DISABLE))
		dl_scan_remote((uintptr_t)ss.ss_sp,
			       (uintptr_t)ss.ss_sp + ss.ss_size);
}

/* verbosity=2: what keeps ranges revoked (kept until the world resumes:
 * printing makes no allocation and takes no lock). */
static void dl_note_pins(void)
{
	unsigned shown = 0;
	for (size_t i = 0; i < dl_rc.ncand && shown < 8; i++) {
		const struct dl_retired *r = &dl_hot->cand[i];
		if (!r->pinned)
			continue;
		shown++;
		if (!r->pinned_at)
			_dl_info("reclaim: %p (%zu KiB) kept: pointed to from "
				 "the registers of %s %d",
				 (void *)r->base, r->len >> 10,
				 r->pinned_regs ? "stopped thread" : "the sweeper",
				 r->pinned_regs ? r->pinned_regs - 1 : 0);
		else
			_dl_info("reclaim: %p (%zu KiB) kept: pointed to from "
				 "the word at %p",
				 (void *)r->base, r->len >> 10,
				 (void *)r->pinned_at);
	}
}

/* ---- before the world stops: what may need a lock or memory ---- */

static int dl_relro(struct dl_phdr_info *info, size_t size, void *ctx)
{
	(void)size;
	(void)ctx;
	for (unsigned i = 0; i < info->dlpi_phnum; i++) {
		const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
		if (ph->p_type != PT_GNU_RELRO || dl_rc.nrelro == DL_RELRO_MAX)
			continue;
		uintptr_t s = info->dlpi_addr + ph->p_vaddr;
		dl_rc.relro[dl_rc.nrelro++] = (struct dl_range){
			DL_ALIGN_DOWN(s, DL_PAGE),
			DL_ALIGN_UP(s + ph->p_memsz, DL_PAGE) -
				DL_ALIGN_DOWN(s, DL_PAGE)};
	}
	return 0;
}

static void dl_own(uintptr_t start, size_t len, void *ctx)
{
	(void)ctx;
	if (dl_rc.nown < DL_OWN_MAX)
		dl_rc.own[dl_rc.nown++] = (struct dl_range){start, len};
}

static bool dl_buffers(unsigned cap)
{
	if (!dl_rc.scan_buf)
		dl_rc.scan_buf = _dl_meta_pages(DL_SCAN_BUF);
	if (!dl_rc.proc_buf)
		dl_rc.proc_buf = _dl_meta_pages(DL_PROC_BUF);
	if (!dl_hot)
		dl_hot = _dl_meta_pages(DL_PAGE);
	if (cap > dl_rc.cap) {
		struct dl_world_slot *s = _dl_meta_pages(cap * sizeof(*s));
		if (s) {
			/* The old slots stay: a late handler of a sweep that
			 * gave up may still look at them. */
			dl_rc.slots = s;
			dl_rc.cap = cap;
		}
	}
	return dl_rc.scan_buf && dl_rc.proc_buf && dl_rc.slots && dl_hot;
}

static uint64_t dl_now_ns(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

/* ---- the sweep ---- */

static long dl_sweep(const uintptr_t *self_regs)
{
	dl_rc.nrelro = 0;
	dl_iterate_phdr(dl_relro, NULL);
	dl_rc.nown = 0;
	uintptr_t meta;
	size_t meta_len;
	_dl_meta_region(&meta, &meta_len);
	if (meta_len)
		dl_own(meta, meta_len, NULL);
	_dl_be->own_memory(dl_own, NULL);
	_dl_segment_own(dl_own, NULL);
	struct sysinfo sys;
	dl_rc.swap = sysinfo(&sys) != 0 || sys.totalswap != 0;
	dl_rc.self_sp = self_regs[6];
	dl_rc.pid = getpid();
	dl_rc.anon = false;
	dl_rc.scanned = 0;
	dl_rc.unreadable = false;

	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	uint64_t t0 = dl_now_ns();
	_dl_runs_lock_all();
	_dl_large_lock_all();
	_dl_segment_lock_all();
	int stuck = 0;
	int err = _dl_world_prepare(dl_rc.slots, dl_rc.cap)
			  ? _dl_world_stop(dl_rc.proc_buf, DL_PROC_BUF, &stuck)
			  : -EIO;
	struct dl_world_slot *slots;
	unsigned nthreads = _dl_world_stopped(&slots);
	uint64_t reclaimed = 0;
	if (!err) {
		uintptr_t hi;
		dl_hot->regs_of = -1;
		dl_hot->cand =
			_dl_space_sweep_begin(&dl_rc.ncand, &dl_hot->lo, &hi);
		dl_hot->span = hi - dl_hot->lo; /* hi itself: one past */
		if (dl_rc.ncand) {
			dl_scan_threads(self_regs);
			if (!_dl_world_for_each_mapping(dl_rc.proc_buf,
							DL_PROC_BUF,
							dl_scan_mapping, NULL))
				dl_rc.unreadable = true;
			for (unsigned i = 0; i < dl_rc.nrelro; i++)
				dl_scan_remote(dl_rc.relro[i].start,
					       dl_rc.relro[i].start +
						       dl_rc.relro[i].len);
			_dl_segment_for_each_live(dl_scan_segment);
			if (dl_rc.unreadable) /* not seen whole: keep all */
				for (size_t i = 0; i < dl_rc.ncand; i++)
					dl_hot->cand[i].pinned = true;
		}
		if (_dl_opt.verbosity >= 2)
			dl_note_pins();
		_dl_space_sweep_decide();
	} else {
		_dl_space_sweep_abandoned();
	}
	_dl_world_resume();
	if (!err)
		reclaimed = _dl_space_sweep_finish();
	_dl_segment_unlock_all(false);
	_dl_large_unlock_all(false);
	_dl_runs_unlock_all(false);
	uint64_t ns = dl_now_ns() - t0;
	pthread_sigmask(SIG_SETMASK, &old, NULL);

	DL_STAT_ADD(sweep_ns, ns);
	if (err) {
		DL_STAT_ADD(reclaims_abandoned, 1);
		if (err == -ENOSPC) {
			dl_buffers(dl_rc.cap * 2);
			return -EAGAIN;
		}
		if (!dl_rc.warned) {
			dl_rc.warned = true;
			if (stuck)
				_dl_warn("reclaim: thread %d did not stop within "
					 "5 s (does it block signal %d?); "
					 "nothing reclaimed this time",
					 (int)stuck, _dl_world_signal());
			else
				_dl_warn("reclaim: could not list the threads "
					 "(/proc/self/task); nothing reclaimed");
		}
		return err == -EAGAIN ? -EAGAIN : -EIO;
	}
	if (dl_rc.unreadable && !dl_rc.warned) {
		dl_rc.warned = true;
		_dl_warn("reclaim: memory could not be read whole "
			 "(process_vm_readv or /proc/self/maps refused: a "
			 "seccomp filter?); nothing is reclaimed");
	}
	DL_STAT_ADD(reclaims, 1);
	DL_STAT_ADD(sweep_scanned_bytes, dl_rc.scanned);
	DL_STAT_ADD(sweep_threads_stopped, nthreads);
	struct dl_space_info si;
	_dl_space_info(&si);
	_dl_info("reclaim: %llu MiB made reusable, %llu MiB still pointed to "
		 "stays revoked; scanned %llu MiB, stopped %u other threads, "
		 "%llu us",
		 (unsigned long long)(reclaimed >> 20),
		 (unsigned long long)(si.pinned >> 20),
		 (unsigned long long)(dl_rc.scanned >> 20), nthreads,
		 (unsigned long long)(ns / 1000));
	return (long)reclaimed;
}

/*
 * The entry: the caller's callee-saved registers and the stack pointer,
 * before anything of the sweep touches them.  Everything the sweep does
 * runs in frames below this one, which the scan of this thread's stack
 * leaves out: its own locals hold candidate addresses.
 */
__attribute__((noinline)) long _dl_reclaim(bool forced)
{
	uintptr_t regs[7];
	__asm__ volatile("mov %%rbx, 0(%0)\n\t"
			 "mov %%rbp, 8(%0)\n\t"
			 "mov %%r12, 16(%0)\n\t"
			 "mov %%r13, 24(%0)\n\t"
			 "mov %%r14, 32(%0)\n\t"
			 "mov %%r15, 40(%0)\n\t"
			 "mov %%rsp, 48(%0)"
			 :
			 : "r"(regs)
			 : "memory");
	if (!_dl_opt.reclaim || !_dl_be || !_dl_be->alias_reuse ||
	    !_dl_be->own_memory)
		return -ENOSYS;
	int expect = 0;
	if (!atomic_compare_exchange_strong(&dl_rc.busy, &expect, 1)) {
		/* Another thread sweeps: the threshold needs only one; a
		 * forced call waits for it (and is stopped by it meanwhile)
		 * and sweeps again. */
		if (!forced)
			return 0;
		do {
			expect = 0;
			sched_yield();
		} while (!atomic_compare_exchange_strong(&dl_rc.busy, &expect,
							 1));
	}
	long r = -ENOMEM;
	for (int tries = 0; tries < 3; tries++) {
		unsigned cap = dl_rc.cap ? dl_rc.cap : DL_SLOTS_MIN;
		if (!dl_buffers(cap))
			break;
		r = dl_sweep(regs);
		if (r != -EAGAIN || dl_rc.cap == cap)
			break; /* -EAGAIN with more slots now: again */
	}
	atomic_store(&dl_rc.busy, 0);
	return r;
}

void _dl_reclaim_fork_child(void)
{
	/* A fork between taking busy and the locks: nobody sweeps here. */
	atomic_store(&dl_rc.busy, 0);
}
