/* SPDX-License-Identifier: MIT */
/*
 * The malloc family, under the standard names and as dangless_*: checks
 * what the program passed, sends it to small.c, large.c or the fallback,
 * and turns a failure from below into its report.
 *
 * Calls that arrive before Dangless is ready (from the dynamic loader, from
 * dlsym's first calloc, or from inside our own initialisation) are served
 * from a static early arena: unprotected, never reused, and accepted by
 * free() and realloc() later.
 */
#include <errno.h>
#include <string.h>

#include "internal.h"

#define DL_ENTRY() (_dl_api_caller = __builtin_return_address(0))

/* ---- the early arena ----
 * 256 KiB: what it serves is small (7 KiB under kvm, whose start-up
 * allocates inside our initialisation; nothing under host, measured on
 * python3, perl and gcc), and the library's .bss must stay under 2 MiB:
 * an anonymous mapping that long holds no aligned 2 MiB, so where THP is
 * "always" the kernel cannot back it with a huge page (with a 1 MiB arena
 * it was 2.4 MiB, and about one start in three held 2 MiB more). */
#define DL_EARLY_SIZE ((size_t)256 << 10)
static char dl_early[DL_EARLY_SIZE] __attribute__((aligned(4096)));
static atomic_size_t dl_early_used;

struct dl_early_header {
	size_t size;
	size_t pad;
};

static void *dl_early_alloc(size_t size, size_t align)
{
	if (align < DL_MIN_ALIGN)
		align = DL_MIN_ALIGN;
	size_t need = DL_ALIGN_UP(size, DL_MIN_ALIGN) + align +
		      sizeof(struct dl_early_header);
	size_t at = atomic_fetch_add(&dl_early_used, need);
	if (at + need > DL_EARLY_SIZE || need < size) {
		errno = ENOMEM;
		return NULL;
	}
	uintptr_t p = DL_ALIGN_UP((uintptr_t)dl_early + at +
					  sizeof(struct dl_early_header),
				  align);
	((struct dl_early_header *)p)[-1].size = size;
	DL_STAT_ADD(early_allocs, 1);
	return (void *)p;
}

static bool dl_is_early(const void *p)
{
	return (const char *)p >= dl_early &&
	       (const char *)p < dl_early + DL_EARLY_SIZE;
}

static size_t dl_early_size(const void *p)
{
	return ((const struct dl_early_header *)p)[-1].size;
}

/* ---- allocation ---- */

static void *dl_alloc_failed(const struct dl_failure *fail, size_t size,
			     size_t align)
{
	if (!fail->what) {
		errno = fail->err;
		return NULL;
	}
	if (!_dl_opt.fallback)
		_dl_report_exhausted(fail, false);
	if (!atomic_exchange(&_dl_fallback_used, true))
		_dl_report_exhausted(fail, true);
	DL_STAT_ADD(fallback_allocs, 1);
	return _dl_fallback_alloc(size, align);
}

static void *dl_alloc(size_t size, size_t align, bool zero)
{
	if (unlikely(atomic_load_explicit(&_dl_state, memory_order_acquire) !=
		     DL_READY)) {
		int r = _dl_ensure_init();
		if (r == -EAGAIN)
			return dl_early_alloc(size, align);
		if (r)
			return _dl_fallback_alloc(size, align);
	}
	if (unlikely(!_dl_thread_ready))
		_dl_thread_start();
	if (unlikely(atomic_load_explicit(&_dl_fallback_used,
					  memory_order_relaxed))) {
		DL_STAT_ADD(fallback_allocs, 1);
		return _dl_fallback_alloc(size, align);
	}
	struct dl_failure fail = {0, NULL};
	unsigned cls = _dl_size_class(size, align);
	void *p = cls != (unsigned)-1 ? _dl_small_alloc(cls, size, &fail)
				      : _dl_large_alloc(size, align, zero,
							&fail);
	if (unlikely(!p) && fail.what && _dl_reclaim(true) >= 0) {
		/* Out of alias space: a sweep may have made some reusable
		 * (this one, or another thread's that just ended). */
		fail = (struct dl_failure){0, NULL};
		p = cls != (unsigned)-1
			    ? _dl_small_alloc(cls, size, &fail)
			    : _dl_large_alloc(size, align, zero, &fail);
	}
	if (unlikely(!p))
		return dl_alloc_failed(&fail, size, align);
	/* Used alias space passed the mark: sweep now, with no lock held. */
	if (unlikely(atomic_load_explicit(&_dl_reclaim_wanted,
					  memory_order_relaxed)))
		_dl_reclaim(false);
	return p;
}

DL_EXPORT long dangless_reclaim(void)
{
	int r = _dl_ensure_init();
	if (r)
		return r == -EAGAIN ? -EDEADLK : r;
	return _dl_reclaim(true);
}

DL_EXPORT void *dangless_malloc(size_t size)
{
	DL_ENTRY();
	return dl_alloc(size, DL_MIN_ALIGN, false);
}

DL_EXPORT void *dangless_calloc(size_t nmemb, size_t size)
{
	DL_ENTRY();
	size_t total;
	if (__builtin_mul_overflow(nmemb, size, &total)) {
		errno = ENOMEM;
		return NULL;
	}
	void *p = dl_alloc(total, DL_MIN_ALIGN, true);
	/* Large objects come zeroed from large.c (fresh pages, or cleared
	 * warm ones); small slots are reused, and early or fallback memory
	 * may be too. */
	if (p && (total <= DL_SMALL_MAX || !_dl_segmap_get((uintptr_t)p)))
		memset(p, 0, total);
	return p;
}

/* ---- what the program passed ---- */

/* The segment p belongs to, or NULL; aborts if p is in freed alias space. */
static struct dl_segment *dl_owner(void *p, const char *op)
{
	uintptr_t e = _dl_segmap_get((uintptr_t)p);
	if (!e)
		return NULL;
	if (e & 1)
		_dl_report_dead_pointer(op, p);
	return (struct dl_segment *)e;
}

/* A pointer neither in our space nor the early arena: glibc's, or bad. */
static bool dl_foreign_ok(void *p, const char *op)
{
	if (dl_is_early(p))
		return true;
	if (atomic_load_explicit(&_dl_fallback_used, memory_order_relaxed) &&
	    _dl_fallback_available())
		return true;
	struct dl_obj none = {0};
	_dl_report_bad_pointer(op, p, DL_PTR_UNKNOWN, &none);
	return false; /* halt_on_error=0: reported, p left alone */
}

static void dl_free(void *p)
{
	if (!p)
		return;
	if (_dl_segmap_get((uintptr_t)p) & 1) {
		/* returns only with halt_on_error=0: p is left alone */
		_dl_report_dead_pointer("free", p);
		return;
	}
	struct dl_segment *seg = dl_owner(p, "free");
	if (seg) {
		struct dl_obj o;
		enum dl_verdict v;
		if (seg->kind == DL_SEG_SMALL) {
			struct dl_freed_slot slot;
			v = _dl_small_free(seg, p, &slot, &o);
			if (v == DL_PTR_LIVE) {
				if (_dl_opt.revoke != DL_REVOKE_BATCH) {
					_dl_small_retire(&slot);
					return;
				}
				if (unlikely(!_dl_thread_ready))
					_dl_thread_start();
				struct dl_late_write lw;
				if (!_dl_quarantine_add(&slot, &lw))
					_dl_report_late_write(&lw);
				return;
			}
		} else {
			v = _dl_large_free(seg, p, &o);
			if (v == DL_PTR_LIVE)
				return;
		}
		_dl_report_bad_pointer("free", p, v, &o);
		return; /* halt_on_error=0: reported, p left alone */
	}
	if (dl_foreign_ok(p, "free") && !dl_is_early(p))
		_dl_fallback_free(p); /* the early arena is never reused */
}

/*
 * The usable size of live allocation p in our space (NULL *seg_out when
 * it is not ours); reports and stops if p is no live allocation.
 */
static size_t dl_usable(void *p, const char *op, size_t *req,
			struct dl_segment **seg_out)
{
	struct dl_segment *seg = dl_owner(p, op);
	*seg_out = seg;
	if (!seg) {
		if (dl_is_early(p))
			return *req = dl_early_size(p);
		return 0;
	}
	struct dl_obj o;
	bool small = seg->kind == DL_SEG_SMALL;
	enum dl_verdict v = small ? _dl_small_lookup(seg, p, &o)
				  : _dl_large_lookup(seg, p, &o);
	if (v != DL_PTR_LIVE)
		_dl_report_bad_pointer(op, p, v, &o);
	*req = o.size;
	return small ? _dl_small_usable(seg, p) : _dl_large_usable(seg, p);
}

static void *dl_realloc(void *p, size_t size)
{
	if (!p)
		return dl_alloc(size, DL_MIN_ALIGN, false);
	if (size == 0) { /* as glibc: frees, returns NULL */
		dl_free(p);
		return NULL;
	}
	struct dl_segment *seg;
	size_t requested;
	/* All of it moves: malloc_usable_size told the program it may use it. */
	size_t old = dl_usable(p, "realloc", &requested, &seg);
	if (seg) {
		bool in_place = seg->kind == DL_SEG_SMALL
					? _dl_small_resize(seg, p, size)
					: _dl_large_resize(seg, p, size);
		if (in_place)
			return p;
	} else if (dl_foreign_ok(p, "realloc") && !dl_is_early(p)) {
		return _dl_fallback_realloc(p, size);
	}
	/* A move: copy, then free, which revokes every old page. */
	void *q = dl_alloc(size, DL_MIN_ALIGN, false);
	if (!q)
		return NULL;
	memcpy(q, p, old < size ? old : size);
	dl_free(p);
	return q;
}

DL_EXPORT void dangless_free(void *p)
{
	DL_ENTRY();
	dl_free(p);
}

DL_EXPORT void *dangless_realloc(void *p, size_t size)
{
	DL_ENTRY();
	return dl_realloc(p, size);
}

DL_EXPORT void *dangless_reallocarray(void *p, size_t nmemb, size_t size)
{
	DL_ENTRY();
	size_t total;
	if (__builtin_mul_overflow(nmemb, size, &total)) {
		errno = ENOMEM;
		return NULL;
	}
	return dl_realloc(p, total);
}

static bool dl_power_of_two(size_t x)
{
	return x && !(x & (x - 1));
}

DL_EXPORT int dangless_posix_memalign(void **out, size_t alignment,
				      size_t size)
{
	DL_ENTRY();
	if (!dl_power_of_two(alignment) || alignment % sizeof(void *))
		return EINVAL;
	int saved = errno;
	void *p = dl_alloc(size, alignment, false);
	if (!p) {
		errno = saved;
		return ENOMEM;
	}
	*out = p;
	return 0;
}

DL_EXPORT void *dangless_aligned_alloc(size_t alignment, size_t size)
{
	DL_ENTRY();
	if (!dl_power_of_two(alignment)) {
		errno = EINVAL;
		return NULL;
	}
	return dl_alloc(size, alignment, false);
}

DL_EXPORT void *dangless_memalign(size_t alignment, size_t size)
{
	DL_ENTRY();
	/* As glibc: a non-power-of-two alignment is rounded up. */
	if (!dl_power_of_two(alignment)) {
		if (alignment > ((size_t)1 << 62)) {
			errno = EINVAL;
			return NULL;
		}
		size_t a = DL_MIN_ALIGN;
		while (a < alignment)
			a <<= 1;
		alignment = a;
	}
	return dl_alloc(size, alignment, false);
}

DL_EXPORT void *dangless_valloc(size_t size)
{
	DL_ENTRY();
	return dl_alloc(size, DL_PAGE, false);
}

DL_EXPORT void *dangless_pvalloc(size_t size)
{
	DL_ENTRY();
	size_t rounded = DL_ALIGN_UP(size ? size : 1, DL_PAGE);
	if (rounded < size) {
		errno = ENOMEM;
		return NULL;
	}
	return dl_alloc(rounded, DL_PAGE, false);
}

DL_EXPORT size_t dangless_malloc_usable_size(void *p)
{
	DL_ENTRY();
	if (!p)
		return 0;
	struct dl_segment *seg;
	size_t req;
	size_t usable = dl_usable(p, "malloc_usable_size", &req, &seg);
	if (!seg && dl_foreign_ok(p, "malloc_usable_size") && !dl_is_early(p))
		return 0; /* glibc's; it knows, we do not */
	return usable;
}

DL_EXPORT void *dangless_get_canonical(void *p)
{
	uintptr_t e = _dl_segmap_get((uintptr_t)p);
	if (!e || (e & 1))
		return p;
	struct dl_segment *seg = (struct dl_segment *)e;
	void *c = seg->kind == DL_SEG_SMALL ? _dl_small_canonical(seg, p)
					    : _dl_large_canonical(seg, p);
	return c ? c : p;
}

/* ---- the standard names ---- */
#define DL_ALIAS(name) __attribute__((alias(#name), visibility("default")))
void *malloc(size_t) DL_ALIAS(dangless_malloc);
void *calloc(size_t, size_t) DL_ALIAS(dangless_calloc);
void *realloc(void *, size_t) DL_ALIAS(dangless_realloc);
void *reallocarray(void *, size_t, size_t) DL_ALIAS(dangless_reallocarray);
void free(void *) DL_ALIAS(dangless_free);
int posix_memalign(void **, size_t, size_t) DL_ALIAS(dangless_posix_memalign);
void *aligned_alloc(size_t, size_t) DL_ALIAS(dangless_aligned_alloc);
void *memalign(size_t, size_t) DL_ALIAS(dangless_memalign);
void *valloc(size_t) DL_ALIAS(dangless_valloc);
void *pvalloc(size_t) DL_ALIAS(dangless_pvalloc);
size_t malloc_usable_size(void *) DL_ALIAS(dangless_malloc_usable_size);
