/* SPDX-License-Identifier: MIT */
/*
 * Dangless internals shared between the core's files.
 *
 * Names: public dangless_*; cross-file _dl_<module>_* (grouped below by the
 * file that defines them); file-local static dl_*.
 *
 * ---- Layout -------------------------------------------------------------
 *
 * Canonical memory holds the bytes.  Small objects (up to DL_SMALL_MAX) live
 * in runs: a run is `cols` columns of `col_pages` pages each (cols *
 * col_pages <= DL_RUN_PAGES).  A column holds `rows` slots of the class
 * size, one after the other.  Slot (row r, column c) sits at
 *
 *     run->canon + c * col_pages * PAGE + r * size
 *
 * so the slots of one row lie on different columns at the same offset.
 * One alias mapping of the whole run (a *chunk*) therefore gives a fresh
 * alias to every slot of one row at once: one mmap, one kernel mapping,
 * up to `cols` objects.  The alias of slot (r, c) through chunk k is
 *
 *     chunk_alias + c * col_pages * PAGE + r * size
 *
 * so the in-page offset of an alias equals that of its canonical bytes.
 *
 * Alias space is cut into DL_SEG_SIZE segments; _dl_segmap[] maps each
 * segment to its metadata.  A small segment serves one class and is carved
 * into chunks in address order, never twice; a class's segments follow one
 * another in a stream of its own, so its chunks are neighbours.  A large segment holds large
 * objects (each its own canonical extent and alias range) in address order;
 * an object bigger than DL_LARGE_PACK_MAX gets segments of its own.
 *
 * ---- Invariants (who keeps them) ---------------------------------------
 *
 * I1 An alias page is handed to alias_map at most once in the life of the
 *    process (segments are bump-carved; released ranges stay reserved).
 *    Kept by segment.c.
 * I2 A canonical slot is in at most one state: free in its run, or carved
 *    into exactly one chunk that has not yet finished with it.  A slot goes
 *    back to its run only after its alias in that chunk is revoked.
 *    Kept by heap.c (dl_slot_return is the only way back).
 * I3 chunk->pending counts the chunk's slots that are carved but not yet
 *    finished (still cached or live).  When it reaches zero every handed
 *    slot has been revoked and the chunk is dead; its range is released
 *    with its segment's (releasing it alone would split a merged mapping).
 * I4 Segment and chunk metadata are never unmapped: a fault report may
 *    read them at any time without taking a lock.  Freed metadata goes back
 *    to its pool and a segment's map entry becomes a dead marker first.
 */
#ifndef DANGLESS_INTERNAL_H
#define DANGLESS_INTERNAL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "backend.h"
#include "dangless/dangless.h"

#define DL_PAGE_SHIFT 12
#define DL_PAGE ((size_t)1 << DL_PAGE_SHIFT)
#define DL_SEG_SHIFT 21
#define DL_SEG_SIZE ((size_t)1 << DL_SEG_SHIFT)
#define DL_SEG_PAGES (DL_SEG_SIZE / DL_PAGE)
#define DL_RUN_PAGES 32
#define DL_MAX_COLS 32
#define DL_MAX_ROWS 256 /* DL_PAGE / smallest class */
#define DL_SMALL_MAX ((size_t)32 << 10)
#define DL_LARGE_PACK_MAX ((size_t)1 << 20)
#define DL_LARGE_PER_SEG 64
#define DL_CHUNKS_PER_SEG (DL_SEG_PAGES / DL_RUN_PAGES) /* at most */
#define DL_ADDR_BITS 47
#define DL_MIN_ALIGN 16
#define DL_MAX_FRAMES 16

#define DL_ALIGN_UP(x, a) (((x) + (a)-1) & ~((uintptr_t)(a)-1))
#define DL_ALIGN_DOWN(x, a) ((x) & ~((uintptr_t)(a)-1))
/* The public names; everything else stays inside the library. */
#define DL_EXPORT __attribute__((visibility("default")))
#define likely(x) __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)

/* ---- size classes (heap.c) ---- */
struct dl_class {
	uint32_t size;      /* slot size, a multiple of 16 */
	uint16_t col_pages; /* pages per column */
	uint16_t cols;      /* columns per run */
	uint16_t rows;      /* slots per column */
	uint16_t run_pages; /* cols * col_pages */
	uint16_t chunks_per_seg;
};
#define DL_NCLASSES_MAX 48
extern struct dl_class _dl_classes[DL_NCLASSES_MAX];
extern unsigned _dl_nclasses;

/* ---- a tiny spinning lock; held only around metadata updates ---- */
typedef struct {
	atomic_int v;
} dl_lock_t;
void _dl_lock(dl_lock_t *l);
static inline void _dl_unlock(dl_lock_t *l)
{
	atomic_store_explicit(&l->v, 0, memory_order_release);
}
static inline void _dl_lock_reset(dl_lock_t *l)
{
	atomic_store_explicit(&l->v, 0, memory_order_relaxed);
}

/* ---- metadata ---- */
struct dl_run_group;
struct dl_run {
	uintptr_t canon;
	struct dl_run_group *group;
	uint16_t index;           /* in its group: canon = group + index runs */
	uint8_t cls;
	bool in_partial;
	bool warm;                /* empty, and its pages kept */
	uint16_t nfree;           /* free slots in the whole run */
	struct dl_run *next, *prev; /* class's list of runs with free slots */
	uint16_t row_cursor;
	uint8_t row_free[DL_MAX_ROWS]; /* free slots per row (<= 32) */
	uint32_t row_used[DL_MAX_ROWS]; /* bit c: slot (row, c) carved */
};

/*
 * The runs of a class are carved from groups of DL_GROUP_RUNS runs that are
 * contiguous in canonical memory, so that chunks of neighbouring runs, made
 * one after the other, are contiguous in both alias and canonical space:
 * the kernel merges their mappings into one (see heap.c, dl_pick_run).
 */
#define DL_GROUP_RUNS 64
struct dl_run_group {
	uintptr_t canon;
	unsigned used;            /* runs carved so far */
	struct dl_run *runs[DL_GROUP_RUNS];
};

/* Per-slot stacks, only when the stacks option is on. */
struct dl_slot_stacks {
	uint32_t alloc[DL_MAX_COLS];
	uint32_t freed[DL_MAX_COLS];
};

struct dl_chunk {
	struct dl_run *run;       /* NULL once released (I3) */
	uint16_t row;
	atomic_uint pending;      /* I3 */
	atomic_uint carved;       /* bit c: slot c carved into this chunk */
	atomic_uint handed;       /* bit c: given to the program */
	atomic_uint freed;        /* bit c: freed by the program */
	uint16_t req[DL_MAX_COLS]; /* requested size of each handed slot */
	struct dl_slot_stacks *stacks;
};

struct dl_large {
	uintptr_t alias;          /* first alias byte handed out */
	uintptr_t range;          /* alias range start (page-aligned) */
	size_t range_len;         /* alias range length */
	uintptr_t canon;          /* canonical extent (maps range) */
	size_t canon_len;
	size_t req;               /* requested size */
	atomic_int state;         /* DL_LARGE_* */
	uint32_t alloc_stack, free_stack;
};
enum { DL_LARGE_LIVE = 1, DL_LARGE_FREED = 2 };

enum { DL_SEG_SMALL = 1, DL_SEG_LARGE = 2 };
struct dl_segment {
	uintptr_t base;           /* alias address of the first page */
	size_t len;               /* bytes of alias space (large: may be > 1 seg) */
	uint8_t kind;
	uint8_t cls;              /* small: class index */
	uint16_t used;            /* chunks (small) / objects (large) carved */
	uint16_t cap;             /* the most it can take */
	uintptr_t bump;           /* large: next free alias byte */
	atomic_uint dead;         /* chunks released / objects freed */
	bool closed;              /* no more carving */
	struct dl_segment *next_dead; /* ring of recently dead segments */
	union {
		struct dl_chunk chunks[DL_CHUNKS_PER_SEG];
		struct dl_large objs[DL_LARGE_PER_SEG];
	};
};

/*
 * _dl_segmap[addr >> DL_SEG_SHIFT]: 0 = not alias space we ever used;
 * a struct dl_segment pointer; or a dead marker (low bit set) that keeps
 * the class of a segment whose metadata is gone (DL_DEAD_LARGE for large).
 */
extern _Atomic uintptr_t *_dl_segmap;
#define DL_DEAD_MARK(cls) (((uintptr_t)(cls) << 1) | 1)
#define DL_DEAD_LARGE 0xff
static inline uintptr_t _dl_segmap_get(uintptr_t addr)
{
	if (addr >> DL_ADDR_BITS || !_dl_segmap)
		return 0;
	return atomic_load_explicit(&_dl_segmap[addr >> DL_SEG_SHIFT],
				    memory_order_acquire);
}

/* ---- options (options.c) ---- */
enum dl_revoke_mode { DL_REVOKE_STRICT, DL_REVOKE_BATCH };
struct dl_options {
	const char *backend;
	bool fallback;
	bool stacks;
	bool stats;
	int verbosity;
	enum dl_revoke_mode revoke;
	unsigned batch;
};
extern struct dl_options _dl_opt;
void _dl_options_parse(const char *env);
void _dl_options_print(void);

/* ---- stats (stats.c) ---- */
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

/* ---- report.c: async-signal-safe output, fatal errors ---- */
struct dl_buf {
	char *p;
	size_t len, cap;
};
void _dl_buf_str(struct dl_buf *b, const char *s);
void _dl_buf_hex(struct dl_buf *b, uintptr_t v);
void _dl_buf_dec(struct dl_buf *b, uint64_t v);
void _dl_write_all(int fd, const char *s, size_t n);
void _dl_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void _dl_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
__attribute__((noreturn)) void _dl_fatal(const char *fmt, ...)
	__attribute__((format(printf, 1, 2)));
/* A bad free/realloc: the report, where, the allocation's stacks, abort(). */
__attribute__((noreturn)) void _dl_report_abort(const char *msg,
						uint32_t alloc_stack,
						uint32_t free_stack);
/* The closing lines of every report: how to learn more. */
void _dl_report_hints(void);
uint32_t _dl_stack_capture(void);
void _dl_stack_print(const char *title, uint32_t id);
void _dl_backtrace_print(void *const *frames, int n);

/* ---- segment.c: alias space and its map ---- */
int _dl_segmap_init(void);
struct dl_segment *_dl_segment_new(uint8_t kind, uint8_t cls, size_t len,
				   size_t align);
/* The segment has nothing live and will carve no more: release it. */
void _dl_segment_retire(struct dl_segment *seg);
/* Calls fn for every revoked alias range not yet released (after fork). */
void _dl_segment_for_each_revoked(void (*fn)(uintptr_t, size_t));
struct dl_chunk *_dl_chunk_of(struct dl_segment *seg, uintptr_t addr,
			      unsigned *col, uintptr_t *slot_start);
struct dl_large *_dl_large_of(struct dl_segment *seg, uintptr_t addr);
void _dl_segment_streams_reset(void); /* with the heap locked */
void _dl_segment_lock_all(void);
void _dl_segment_unlock_all(bool reset);

/* ---- heap.c: classes, runs, chunks, thread caches ---- */
void _dl_heap_init(void);
unsigned _dl_size_class(size_t size, size_t align);
void *_dl_small_alloc(unsigned cls, size_t req);
void _dl_small_free(struct dl_segment *seg, void *p);
void *_dl_large_alloc(size_t req, size_t align);
void _dl_large_free(struct dl_segment *seg, void *p);
/*
 * Usable size of the live allocation p (and its requested size in *req);
 * aborts with a report naming op when p is not one.
 */
size_t _dl_small_usable(struct dl_segment *seg, void *p, const char *op,
			size_t *req);
size_t _dl_large_usable(struct dl_segment *seg, void *p, const char *op,
			size_t *req);
/* realloc in place; false when the object must move */
bool _dl_small_resize(struct dl_segment *seg, void *p, size_t req);
bool _dl_large_resize(struct dl_segment *seg, void *p, size_t req);
void *_dl_small_canonical(struct dl_segment *seg, void *p);
void *_dl_large_canonical(struct dl_segment *seg, void *p);
/* Fills b with what addr was; 1 when it is a dangling access of ours. */
int _dl_describe_fault(uintptr_t addr, struct dl_buf *b,
		       uint32_t *alloc_stack, uint32_t *free_stack);
__attribute__((noreturn)) void _dl_bad_dead_pointer(const char *op, void *p);
__attribute__((noreturn)) void _dl_bad_unknown_pointer(const char *op,
						       void *p);
void _dl_heap_lock_all(void);
void _dl_heap_unlock_all(bool reset);
void _dl_heap_thread_exit(void);
/* Revokes what the batch quarantine holds. */
void _dl_quarantine_flush(void);
/* Reports an alias_map failure; returns only when falling back. */
void _dl_alias_exhausted(int err, const char *what);

/* ---- fault.c ---- */
void _dl_fault_init(void);
void _dl_fault_thread_init(void);
void _dl_fault_thread_exit(void);

/* ---- init.c ---- */
enum { DL_UNINIT, DL_INITIALISING, DL_READY, DL_FAILED };
extern atomic_int _dl_state;
extern const struct dl_backend *_dl_be;
int _dl_ensure_init(void);

/* ---- malloc.c ---- */
/* Where the program called the current malloc-family function from. */
extern __thread void *_dl_api_caller;
extern bool _dl_fallback_used;
/* Finds the allocator to fall back to; start-up only (dlsym allocates). */
void _dl_fallback_resolve(void);

/* ---- pool.c: fixed-size blocks for metadata ---- */
struct dl_pool {
	dl_lock_t lock;
	size_t block;
	void *free_list;
	char *cur, *end;
	const char *name;
};
void *_dl_pool_alloc(struct dl_pool *pool);
void _dl_pool_free(struct dl_pool *pool, void *p);

#endif
