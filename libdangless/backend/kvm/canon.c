/* SPDX-License-Identifier: MIT */
/*
 * Canonical memory: one arena of private anonymous memory, reserved once
 * (MAP_NORESERVE, 1 GiB aligned so that its chunks are libdune's chunks),
 * carved into extents with a free list.
 *
 * Freed and discarded ranges become *stale*: they keep their old bytes and
 * their host pages for now, and read zero again by the time anything can
 * see them.  Each MADV_DONTNEED is a VM exit and a host system call, and
 * the pages it drops fault back in through nested paging when the range is
 * reused, which in a churning program is soon; zeroing in the guest costs
 * neither.  So a stale range is zeroed in the guest when alias_map first
 * maps part of it again (every use of canonical memory starts there: the
 * core reaches its memory through aliases only), and what stays stale is
 * given back to the host in one burst of MADV_DONTNEED (one call per
 * coalesced range) once more than kvm_stale_bytes_bound() bytes or
 * KVM_STALE_RANGES_MAX ranges are stale: at most that much is held back.
 *
 * Guest-physical addresses: each 1 GiB chunk of the arena becomes a KVM
 * memslot when it is first touched (dune_init(0) registers nothing of it
 * eagerly, which keeps guest-physical space for what is used); the chunk's
 * base is learnt once and kept both ways, for alias PTEs and for
 * translating them back.
 */
#include <errno.h>
#include <string.h>
#include <sys/mman.h>

#include "kvm.h"

static struct {
	char *base;
	size_t size;
	dl_lock_t lock;
	struct dl_extents extents;        /* offsets: free ones, and the bump */
	/* per GiB of the arena: its guest-physical base + 1 (0: not known) */
	_Atomic uint64_t *chunk_pa;
	/* per GiB of guest-physical space: arena GiB index + 1 */
	_Atomic uint32_t *pa_chunk;
	size_t pa_chunks;
} canon;

/*
 * Held back from the host at most: past either bound, every stale range
 * is given back at once.  The bytes scale with the program's heap, as the
 * core's warm runs and extents do: a quarter of the live bytes, at least
 * KVM_STALE_BYTES_FLOOR and at most KVM_STALE_BYTES_MAX.  A fixed 16 MiB
 * held a small program's whole past: sqlite3 in the rig ended with 17 MB
 * (9 MB of it emptied runs never given back) where the host backend ends
 * with 8; bounded so, with 9 MB, for 21 more exits in the whole run.
 */
#define KVM_STALE_BYTES_FLOOR ((size_t)1 << 20)
#define KVM_STALE_BYTES_MAX ((size_t)16 << 20)
#define KVM_STALE_RANGES_MAX 256u

static size_t kvm_stale_bytes_bound(void)
{
	size_t bound = _dl_live_quarter_or(KVM_STALE_BYTES_FLOOR);
	return bound < KVM_STALE_BYTES_MAX ? bound : KVM_STALE_BYTES_MAX;
}

/* Room for the ranges being given back merged into the stale ones (a
 * forked child whose parent was giving back, kvm_canon_fork_child). */
#define KVM_STALE_CAP (2 * KVM_STALE_RANGES_MAX + 2)

struct kvm_stale_range {
	uintptr_t start, end;
};

/*
 * Stale ranges (see the top), address-ordered, disjoint and not touching,
 * and the batch being given back: the giving thread drops the lock for the
 * system calls, and alias_map of a range in the batch waits until it is
 * done (the pages must be gone before anyone writes to them).  `any` is
 * how many of both there are, for alias_map's lock-free fast path.
 */
static struct {
	dl_lock_t lock;
	struct kvm_stale_range *ranges, *giving;
	unsigned n, ngiving;
	size_t bytes;
	atomic_uint any;
	atomic_bool busy; /* a batch is being given back */
} stale;

#define KVM_HUGE ((size_t)2 << 20)

/* Guest-physical addresses stay below 2^52 on x86-64. */
#define KVM_PA_BITS 52

int kvm_canon_init(void)
{
	size_t size = KVM_CANON_MAX;
	char *res = MAP_FAILED;
	/* A host in strict overcommit mode counts even MAP_NORESERVE: ask
	 * for less until it agrees. */
	for (; size >= KVM_CANON_MIN; size /= 2) {
		res = mmap(NULL, size + KVM_GIB + 2 * KVM_GAP,
			   PROT_READ | PROT_WRITE,
			   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
		if (res != MAP_FAILED)
			break;
	}
	if (res == MAP_FAILED) {
		int err = errno;
		_dl_warn("kvm backend: cannot reserve canonical memory: %s",
			 _dl_strerror(err));
		return -err;
	}
	char *base = (char *)DL_ALIGN_UP((uintptr_t)res + KVM_GAP, KVM_GIB);
	char *end = res + size + KVM_GIB + 2 * KVM_GAP;
	if (base - KVM_GAP > res)
		munmap(res, (size_t)(base - KVM_GAP - res));
	if (end > base + size + KVM_GAP)
		munmap(base + size + KVM_GAP,
		       (size_t)(end - (base + size + KVM_GAP)));
	/* The gaps stay ours and inaccessible (kvm.h, KVM_GAP). */
	mprotect(base - KVM_GAP, KVM_GAP, PROT_NONE);
	mprotect(base + size, KVM_GAP, PROT_NONE);
	/* No transparent huge pages but where kvm_canon_alloc asks for them
	 * (a host whose THP setting is "always" would otherwise back runs'
	 * sparse pages with 2 MiB each). */
	madvise(base, size, MADV_NOHUGEPAGE);
	canon.pa_chunks = (size_t)1 << (KVM_PA_BITS - KVM_GIB_SHIFT);
	canon.chunk_pa = _dl_meta_pages((size >> KVM_GIB_SHIFT) *
					sizeof(*canon.chunk_pa));
	canon.pa_chunk = _dl_meta_pages(canon.pa_chunks *
					sizeof(*canon.pa_chunk));
	stale.ranges = _dl_meta_pages(KVM_STALE_CAP * sizeof(*stale.ranges));
	stale.giving = _dl_meta_pages(KVM_STALE_CAP * sizeof(*stale.giving));
	if (!canon.chunk_pa || !canon.pa_chunk || !stale.ranges ||
	    !stale.giving) {
		munmap(base, size);
		_dl_warn("kvm backend: no memory for the canonical chunk map");
		return -ENOMEM;
	}
	canon.base = base;
	canon.size = size;
	/* Offset 0 stays unused: a zero offset never means "no extent". */
	canon.extents.bump = DL_PAGE;
	canon.extents.end = size;
	return 0;
}

/* Gives the arena back when the backend could not start. */
void kvm_canon_fini(void)
{
	if (canon.base)
		munmap(canon.base, canon.size);
	canon.base = NULL;
}

uint64_t kvm_default_pa(uintptr_t va)
{
	uint64_t pa = dune_va_to_pa((const void *)va);
	if (pa != UINT64_MAX)
		return pa;
	/* Not registered with KVM yet: the first touch in the guest makes
	 * libdune register its 1 GiB chunk (a read: no page is written). */
	(void)*(volatile const char *)va;
	return dune_va_to_pa((const void *)va);
}

uint64_t kvm_canon_pa(uintptr_t c)
{
	uintptr_t off = c - (uintptr_t)canon.base;
	if (off >= canon.size)
		return UINT64_MAX;
	size_t chunk = off >> KVM_GIB_SHIFT;
	uint64_t known = atomic_load_explicit(&canon.chunk_pa[chunk],
					      memory_order_acquire);
	if (likely(known))
		return known - 1 + (off & (KVM_GIB - 1));
	uint64_t pa = kvm_default_pa(c);
	if (pa == UINT64_MAX)
		return pa;
	uint64_t base = pa - (off & (KVM_GIB - 1));
	if ((base >> KVM_PA_BITS) || (base & (KVM_GIB - 1)))
		return UINT64_MAX; /* not libdune's 1 GiB default mapping */
	atomic_store_explicit(&canon.pa_chunk[base >> KVM_GIB_SHIFT],
			      (uint32_t)chunk + 1, memory_order_release);
	atomic_store_explicit(&canon.chunk_pa[chunk], base + 1,
			      memory_order_release);
	return pa;
}

uintptr_t kvm_canon_of_pa(uint64_t pa)
{
	if (pa >> KVM_PA_BITS)
		return 0;
	uint32_t chunk = atomic_load_explicit(
		&canon.pa_chunk[pa >> KVM_GIB_SHIFT], memory_order_acquire);
	if (!chunk)
		return 0;
	return (uintptr_t)canon.base + ((uintptr_t)(chunk - 1) << KVM_GIB_SHIFT) +
	       (pa & (KVM_GIB - 1));
}

/*
 * 2 MiB host pages (where the host has transparent huge pages) save nested
 * page walks: KVM maps guest-physical memory at the host page's size.  But
 * a huge page is all resident once touched, and runs use their group's
 * pages one by one: a class's first object held 2 MiB (the kvm backend held
 * 6-9x glibc's footprint, issue 23).  So only extents the core will fill
 * (large objects) get huge pages, the whole 2 MiB pages inside them; the
 * advice is set both ways because an extent may reuse the other kind's
 * range.  (Not MAP_HUGETLB: a reserved pool that runs dry would SIGBUS
 * the program.)
 */
static void kvm_canon_advise(char *c, size_t len, bool filled)
{
	uintptr_t a = DL_ALIGN_UP((uintptr_t)c, KVM_HUGE);
	uintptr_t b = DL_ALIGN_DOWN((uintptr_t)c + len, KVM_HUGE);
	if (a < b)
		madvise((void *)a, b - a, filled ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
}

void *kvm_canon_alloc(size_t len, bool filled)
{
	_dl_lock(&canon.lock);
	uintptr_t off;
	bool ok = _dl_extents_take(&canon.extents, len, &off);
	_dl_unlock(&canon.lock);
	if (!ok)
		return NULL;
	kvm_canon_advise(canon.base + off, len, filled);
	return canon.base + off;
}

/* ---- stale ranges ---- */

static void kvm_stale_publish(void)
{
	atomic_store_explicit(&stale.any, stale.n + stale.ngiving,
			      memory_order_release);
}

/* The first range that ends at or after a (a range ending at a touches
 * [a, ...) and is merged with it). */
static unsigned kvm_stale_find(uintptr_t a)
{
	unsigned lo = 0, hi = stale.n;
	while (lo < hi) {
		unsigned mid = (lo + hi) / 2;
		if (stale.ranges[mid].end < a)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* Adds [a, b) to the stale ranges, merged with any it overlaps or touches.
 * Under the lock, with room for one more range. */
static void kvm_stale_insert(uintptr_t a, uintptr_t b)
{
	unsigned i = kvm_stale_find(a), j = i;
	while (j < stale.n && stale.ranges[j].start <= b) {
		if (stale.ranges[j].start < a)
			a = stale.ranges[j].start;
		if (stale.ranges[j].end > b)
			b = stale.ranges[j].end;
		stale.bytes -= stale.ranges[j].end - stale.ranges[j].start;
		j++;
	}
	if (j == i) {
		memmove(&stale.ranges[i + 1], &stale.ranges[i],
			(stale.n - i) * sizeof(*stale.ranges));
		stale.n++;
	} else if (j > i + 1) {
		memmove(&stale.ranges[i + 1], &stale.ranges[j],
			(stale.n - j) * sizeof(*stale.ranges));
		stale.n -= j - i - 1;
	}
	stale.ranges[i] = (struct kvm_stale_range){a, b};
	stale.bytes += b - a;
}

static void kvm_give_back(uintptr_t a, uintptr_t b)
{
	/* Private anonymous memory reads zero after this; KVM's MMU notifier
	 * drops the guest-physical translations of the old pages. */
	if (madvise((void *)a, b - a, MADV_DONTNEED) == 0)
		DL_STAT_ADD(canonical_bytes_released, b - a);
}

/*
 * [c, c+len) holds nothing anyone needs and must read zero when it is next
 * used.  Kept stale within the bounds; past them, every stale range goes
 * back to the host now, with the lock dropped.
 */
static void kvm_stale_add(void *c, size_t len)
{
	uintptr_t a = (uintptr_t)c, b = a + len;
	_dl_lock(&stale.lock);
	bool over = stale.n >= KVM_STALE_RANGES_MAX ||
		    stale.bytes + len > kvm_stale_bytes_bound();
	if (!over) {
		kvm_stale_insert(a, b);
		kvm_stale_publish();
		_dl_unlock(&stale.lock);
		return;
	}
	if (atomic_load_explicit(&stale.busy, memory_order_relaxed)) {
		/* Another thread is giving a batch back: this one goes alone. */
		_dl_unlock(&stale.lock);
		kvm_give_back(a, b);
		return;
	}
	kvm_stale_insert(a, b);
	struct kvm_stale_range *batch = stale.ranges;
	unsigned n = stale.n;
	stale.ranges = stale.giving;
	stale.giving = batch;
	stale.ngiving = n;
	stale.n = 0;
	stale.bytes = 0;
	atomic_store_explicit(&stale.busy, true, memory_order_relaxed);
	kvm_stale_publish();
	_dl_unlock(&stale.lock);
	/* One exit per coalesced range: process_madvise(MADV_DONTNEED) over
	 * an iovec would make it one per batch, but needs Linux 6.13 on the
	 * host (the rig runs 6.1). */
	for (unsigned i = 0; i < n; i++)
		kvm_give_back(batch[i].start, batch[i].end);
	_dl_lock(&stale.lock);
	stale.ngiving = 0;
	atomic_store_explicit(&stale.busy, false, memory_order_release);
	kvm_stale_publish();
	_dl_unlock(&stale.lock);
}

static bool kvm_stale_giving_overlaps(uintptr_t a, uintptr_t b)
{
	for (unsigned i = 0; i < stale.ngiving; i++)
		if (stale.giving[i].start < b && a < stale.giving[i].end)
			return true;
	return false;
}

/*
 * [c, c+len) is about to be mapped (alias_map): whatever of it is stale is
 * zeroed here, in the guest, before any alias can reach it.  Zeroed under
 * the lock, so that a second thread mapping another part of a stale range
 * does not write before the zeroing is done.
 */
void kvm_canon_reuse(void *c, size_t len)
{
	if (likely(!atomic_load_explicit(&stale.any, memory_order_acquire)))
		return;
	uintptr_t a = (uintptr_t)c, b = a + len;
	_dl_lock(&stale.lock);
	while (atomic_load_explicit(&stale.busy, memory_order_relaxed) &&
	       kvm_stale_giving_overlaps(a, b)) {
		/* Its pages are being dropped: wait, then it reads zero. */
		_dl_unlock(&stale.lock);
		while (atomic_load_explicit(&stale.busy, memory_order_acquire))
			__builtin_ia32_pause();
		_dl_lock(&stale.lock);
	}
	unsigned i = kvm_stale_find(a + 1);
	while (i < stale.n && stale.ranges[i].start < b) {
		struct kvm_stale_range *r = &stale.ranges[i];
		uintptr_t lo = r->start > a ? r->start : a;
		uintptr_t hi = r->end < b ? r->end : b;
		if (lo > r->start && hi < r->end &&
		    stale.n >= KVM_STALE_RANGES_MAX) {
			/* No room to split it: all of it is zeroed. */
			lo = r->start;
			hi = r->end;
		}
		memset((void *)lo, 0, hi - lo);
		stale.bytes -= hi - lo;
		if (lo > r->start && hi < r->end) {
			memmove(r + 1, r, (stale.n - i) * sizeof(*r));
			stale.n++;
			r[0].end = lo;
			r[1].start = hi;
			break;
		}
		if (lo > r->start) {
			r->end = lo;
			i++;
		} else if (hi < r->end) {
			r->start = hi;
			i++;
		} else {
			memmove(r, r + 1, (stale.n - i - 1) * sizeof(*r));
			stale.n--;
		}
	}
	kvm_stale_publish();
	_dl_unlock(&stale.lock);
}

void kvm_canon_discard(void *c, size_t len)
{
	kvm_stale_add(c, len);
}

void kvm_canon_free(void *c, size_t len)
{
	/* Stale before it is free: once another thread can take the extent,
	 * its alias_map must find it stale. */
	kvm_stale_add(c, len);
	_dl_lock(&canon.lock);
	_dl_extents_give(&canon.extents, (uintptr_t)((char *)c - canon.base),
			 len);
	_dl_unlock(&canon.lock);
}

void kvm_canon_lock(void)
{
	_dl_lock(&canon.lock);
	_dl_lock(&stale.lock);
}

void kvm_canon_unlock(bool reset)
{
	if (reset) {
		_dl_lock_reset(&stale.lock);
		_dl_lock_reset(&canon.lock);
	} else {
		_dl_unlock(&stale.lock);
		_dl_unlock(&canon.lock);
	}
}

/*
 * In a forked child.  A batch the parent was giving back has no thread to
 * finish it here: its ranges (zero or not in the child's copy) are stale
 * again, so that alias_map zeroes them instead of waiting forever.
 */
void kvm_canon_fork_child(void)
{
	if (!atomic_load_explicit(&stale.busy, memory_order_relaxed))
		return;
	for (unsigned i = 0; i < stale.ngiving; i++)
		kvm_stale_insert(stale.giving[i].start, stale.giving[i].end);
	stale.ngiving = 0;
	atomic_store_explicit(&stale.busy, false, memory_order_relaxed);
	kvm_stale_publish();
}

/* The arena and its gaps: live objects are scanned through the core's
 * metadata, the rest is free, stale or never used. */
void kvm_canon_own(void (*fn)(uintptr_t start, size_t len, void *ctx),
		   void *ctx)
{
	if (canon.base)
		fn((uintptr_t)canon.base - KVM_GAP, canon.size + 2 * KVM_GAP,
		   ctx);
}

/* Pages the host holds for the arena, each once (stats). */
bool kvm_canon_resident(uint64_t *bytes)
{
	_dl_lock(&canon.lock);
	uintptr_t end = canon.extents.bump;
	_dl_unlock(&canon.lock);
	return canon.base && _dl_resident_bytes((uintptr_t)canon.base, end, bytes);
}
