/* SPDX-License-Identifier: MIT */
/*
 * Core services: what every file of libdangless, backends included, may
 * use.  Locks, metadata memory, async-signal-safe messages, counters and
 * assertions.  Nothing here knows the allocator's layout; backends include
 * this header and backend.h, never internal.h.
 *
 * Names: public dangless_*; cross-file _dl_<module>_*; file-local dl_*.
 */
#ifndef DANGLESS_SERVICES_H
#define DANGLESS_SERVICES_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dangless/dangless.h"

#define DL_PAGE_SHIFT 12
#define DL_PAGE ((size_t)1 << DL_PAGE_SHIFT)
/*
 * The bits of one half of the address space: x86-64's user space with
 * 4-level paging (the host's, always), and the most a backend may say it
 * uses (backend.h, addr_bits): 5-level paging's 56.  Bits DL_ADDR_BITS_MAX
 * + 1 to 63 of a pointer are never part of an address.
 */
#define DL_ADDR_BITS 47
#define DL_ADDR_BITS_MAX 56

#define DL_ALIGN_UP(x, a) (((x) + (a)-1) & ~((uintptr_t)(a)-1))
#define DL_ALIGN_DOWN(x, a) ((x) & ~((uintptr_t)(a)-1))
/*
 * An entry from code we do not control (the program's calls, atexit, signal
 * and fork handlers, thread-exit and libdune hooks): the stack is realigned
 * to 16 on the way in.  Hijacked control flow rarely keeps the ABI's
 * alignment, and the compiler's aligned spills (movaps) would fault inside
 * the very report that explains the hijack.
 */
#define DL_REALIGN_STACK __attribute__((force_align_arg_pointer))
/* The public names, each an entry; everything else stays inside. */
#define DL_EXPORT __attribute__((visibility("default"))) DL_REALIGN_STACK
#define likely(x) __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)

/* ---- assertions (print.c) ----
 * `make DEBUG=1` builds with DL_DEBUG: dl_assert checks the layout's
 * invariants where they are kept and stops with the failed condition.  A
 * release build compiles them out (the condition is not evaluated).
 */
__attribute__((noreturn)) void _dl_assert_fail(const char *cond,
					       const char *file, int line);
#ifdef DL_DEBUG
#define dl_assert(cond)                                                        \
	(likely(cond) ? (void)0 : _dl_assert_fail(#cond, __FILE__, __LINE__))
#else
#define dl_assert(cond) ((void)sizeof(!(cond)))
#endif

/* ---- a small spinning lock; held only around metadata updates (meta.c) */
typedef struct {
	atomic_int v;
} dl_lock_t;
void _dl_lock(dl_lock_t *l);
static inline void _dl_unlock(dl_lock_t *l)
{
	atomic_store_explicit(&l->v, 0, memory_order_release);
}
/* In a child after fork(): whoever held it is gone. */
static inline void _dl_lock_reset(dl_lock_t *l)
{
	atomic_store_explicit(&l->v, 0, memory_order_relaxed);
}

/* ---- metadata memory (meta.c) ---- */
/* Zeroed anonymous pages for the allocator's own use, never the program's. */
void *_dl_meta_pages(size_t len);
void _dl_meta_unpages(void *p, size_t len);
/* The region metadata pages come from ([0, 0) before the first). */
void _dl_meta_region(uintptr_t *start, size_t *len);
/* Its pages the kernel holds (stats; pages from past the region, which
 * only a program with over 64 GiB of metadata has, are not seen). */
bool _dl_meta_resident(uint64_t *bytes);

/*
 * Fixed-size blocks carved from metadata pages that are never given back:
 * fault reports read metadata without locks, so a freed block must stay
 * readable.  A pool registers itself on first use, so that fork can hold
 * every pool's lock (_dl_pools_lock_all).
 */
struct dl_pool {
	dl_lock_t lock;
	size_t block;
	void *free_list;
	char *cur, *end;
	const char *name;
	struct dl_pool *next_pool;
	bool listed;
};
#define DL_POOL(type, label) {.block = sizeof(type), .name = (label)}
void *_dl_pool_alloc(struct dl_pool *pool);
void _dl_pool_free(struct dl_pool *pool, void *p);
void _dl_pools_lock_all(void);
void _dl_pools_unlock_all(bool reset);

/* ---- free ranges of a bump-carved range (extent.c); caller locks ---- */
struct dl_extent;
struct dl_extents {
	struct dl_extent *free;   /* address-ordered, coalesced */
	uintptr_t bump, end;      /* never carved: [bump, end) */
};
/* A range of len from the free list (first fit) or the bump; false when
 * there is no room. */
bool _dl_extents_take(struct dl_extents *x, size_t len, uintptr_t *off);
void _dl_extents_give(struct dl_extents *x, uintptr_t off, size_t len);
/* Calls fn for every range of [from, bump) that is not free, in order. */
void _dl_extents_for_each_carved(const struct dl_extents *x, uintptr_t from,
				 void (*fn)(uintptr_t off, size_t len,
					    void *ctx),
				 void *ctx);

/* ---- counters (meta.c); the fields are the public stats' ---- */
struct dl_stats_atomic {
#define DL_STAT_ATOMIC(name, what) _Atomic uint64_t name;
	DANGLESS_STAT_FIELDS(DL_STAT_ATOMIC)
#undef DL_STAT_ATOMIC
};
extern struct dl_stats_atomic _dl_stats;
#define DL_STAT_ADD(field, n)                                                  \
	atomic_fetch_add_explicit(&_dl_stats.field, (n), memory_order_relaxed)
#define DL_STAT_SUB(field, n)                                                  \
	atomic_fetch_sub_explicit(&_dl_stats.field, (n), memory_order_relaxed)

/*
 * The most memory one cache kept for speed may hold (warm runs, warm large
 * extents, kvm's stale ranges): a quarter of the live heap's bytes, or
 * floor for a small program.  Each cache has its own, so a footprint grows
 * by a bounded share of the heap, never by a fixed size (issue 23).
 */
static inline size_t _dl_live_quarter_or(size_t floor)
{
	size_t quarter = atomic_load_explicit(&_dl_stats.live_bytes,
					      memory_order_relaxed) / 4;
	return quarter > floor ? quarter : floor;
}

/* ---- what the kernel holds for us (resident.c): stats only ---- */
/* mincore of [start, start + pages pages): vec[i] & 1 is page i's. */
bool _dl_resident_vec(uintptr_t start, size_t pages, unsigned char *vec);
/* The bytes of [start, start+len) the kernel holds pages for. */
bool _dl_resident_bytes(uintptr_t start, size_t len, uint64_t *bytes);
/* The kernel's figures for the whole process, each file read once so that
 * they describe one moment and a long smaps_rollup walk is paid once. */
struct dl_proc_memory {
	uint64_t pss, pss_shmem; /* smaps_rollup */
	uint64_t vm_pte;         /* status */
};
bool _dl_proc_memory(struct dl_proc_memory *pm);

/* ---- messages (print.c): no stdio, no allocation, one write(2) each ---- */
struct dl_buf {
	char *p;
	size_t len, cap;
};
void _dl_buf_str(struct dl_buf *b, const char *s);
void _dl_buf_char(struct dl_buf *b, char c);
void _dl_buf_hex(struct dl_buf *b, uintptr_t v);
void _dl_buf_dec(struct dl_buf *b, uint64_t v);
void _dl_write_all(int fd, const char *s, size_t n);
/* strerror's C-locale text, without strerror: that one may translate, and
 * translating allocates (in an allocator out of memory it recursed until
 * the stack overflowed, and the report never came out). */
const char *_dl_strerror(int err);
/* printf-like: %s %c %d %i %u %x %p %%, with l, ll, z, j. */
void _dl_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* "dangless: " and the message, always. */
void _dl_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* The same, only with verbosity=1 or more. */
void _dl_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
__attribute__((noreturn)) void _dl_fatal(const char *fmt, ...)
	__attribute__((format(printf, 1, 2)));
/*
 * Where messages and reports go: stderr, or with log_path=PATH the file
 * PATH.PID (opened on the first message of each process, so a forked child
 * writes its own).  _dl_log_path_set is false when the path does not fit.
 */
int _dl_out_fd(void);
bool _dl_log_path_set(const char *path, size_t len);
const char *_dl_log_path(void);
/* Set from the options; read by _dl_info. */
extern int _dl_msg_verbosity;

#endif
