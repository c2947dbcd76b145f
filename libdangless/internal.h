/* SPDX-License-Identifier: MIT */
/*
 * Dangless internals shared between the core's files (backends never see
 * this header: they have services.h and backend.h).
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
 * A row's slots lie on every column's pages, so a class of a few dozen
 * objects would make all of a run's pages resident.  A class's first run
 * therefore opens only its first columns (run->open, DL_NARROW_PAGES
 * worth) until the class outgrows them (three quarters carved, or
 * DL_NARROW_SLOTS slots), then the rest; its later runs are whole from the
 * start.  A narrow run's chunk still maps the whole run; only its open
 * columns are carved, so the others' pages are never touched.  Narrowness
 * costs a mapping and a chunk of alias space per few objects: worth it for
 * the many classes a program makes a few dozen objects of, bounded by
 * DL_NARROW_SLOTS live objects, and by DL_NARROW_CARVES chunks for a class
 * that churns a few objects (its run is then opened whole).
 *
 * Alias space is cut into DL_SEG_SIZE segments; _dl_segmap[] maps each
 * segment to its metadata.  A small segment serves one class and is carved
 * into chunks in address order, never twice; a class's segments follow one
 * another in a stream of its own, so its chunks are neighbours.  A large
 * segment holds large objects (each its own canonical extent and alias
 * range) in address order; an object bigger than DL_LARGE_PACK_MAX gets
 * segments of its own.
 *
 * ---- Invariants (who keeps them; `make DEBUG=1` asserts them) -----------
 *
 * I1 An alias page is handed to alias_map at most once between two sweeps
 *    that find nothing pointing into it: segments are bump-carved, released
 *    ranges stay reserved, and a retired range comes back only as R2 says.
 *    Kept by segment.c (carving, reuse), small.c and large.c (mapping).
 * I2 A canonical slot is in at most one state: free in its run, or carved
 *    into exactly one chunk that has not yet finished with it.  A slot goes
 *    back to its run only after its alias in that chunk is revoked.
 *    Kept by run.c (_dl_slots_return is the only way back).
 * I3 chunk->pending counts the chunk's slots that are carved but not yet
 *    finished (still cached or live).  When it reaches zero every handed
 *    slot has been revoked and the chunk is dead; its range is released
 *    with its segment's (releasing it alone would split a merged mapping).
 * I4 Segment and chunk metadata are never unmapped: a fault report may
 *    read them at any time without taking a lock.  Freed metadata goes back
 *    to its pool and a segment's map entry becomes a dead marker first.
 * I5 A segment's metadata is used only while something keeps the segment
 *    from retiring: once it is closed and its last chunk (object) is
 *    counted dead, it retires, and its metadata may go back to its pool at
 *    any moment (a sweep, a drop from the dead ring) and come out again as
 *    another class's segment.  So the carve that closes a segment also
 *    takes it out of the class's current segment (the large state's),
 *    under the lock it carves under, and a dead chunk is counted only
 *    after whatever is done with it unlocked.  Kept by run.c
 *    (dl_carve_row, _dl_slots_return) and large.c (_dl_large_alloc).
 * I6 A handed slot's requested size is exact.  Most classes receive only
 *    requests within 255 bytes of their size, and a chunk keeps the
 *    difference in a byte per slot; the rest (wide: an alignment or a gap
 *    between classes can leave more) keep 16-bit sizes after their
 *    segment's chunks, in blocks from pools of their own, so a block's
 *    wideness is as fixed as its cap (I4's readers).  A resize that would
 *    leave a narrow slot more than 255 bytes short moves the object.
 *    Kept by classes.c (wide), segment.c (the blocks) and small.c.
 *
 * ---- Lock order (fork holds them all, in this order) --------------------
 *
 * the stats lock (stats.c) -> class locks (run.c) -> large lock (large.c)
 * -> segment locks (segment.c) -> the backend's (fork_prepare) -> pools
 * (meta.c).
 *
 * ---- Who calls whom ------------------------------------------------------
 *
 * malloc.c (the API) and init.c (start-up, threads, fork) sit on top and
 * call down; report.c and fault.c describe what the layers below know;
 * small.c, quarantine.c and large.c use run.c, segment.c and classes.c;
 * everything uses services.h.  No file calls one above it: a failure
 * travels up as a return value.
 */
#ifndef DANGLESS_INTERNAL_H
#define DANGLESS_INTERNAL_H

#include "backend.h"
#include "services.h"

#define DL_SEG_SHIFT 21
#define DL_SEG_SIZE ((size_t)1 << DL_SEG_SHIFT)
#define DL_SEG_PAGES (DL_SEG_SIZE / DL_PAGE)
#define DL_RUN_PAGES 32
#define DL_MAX_COLS 32
#define DL_MAX_ROWS 256 /* DL_PAGE / smallest class */
#define DL_MIN_ALIGN 16
#define DL_SMALL_MAX ((size_t)32 << 10)
#define DL_LARGE_PACK_MAX ((size_t)1 << 20)
#define DL_LARGE_PER_SEG 64
/* At most: a class of p-page columns has runs of p * (32 / p) >= 33 - p
 * pages, and p goes up to DL_SMALL_MAX / DL_PAGE. */
#define DL_CHUNKS_PER_SEG                                                      \
	(DL_SEG_PAGES / (DL_RUN_PAGES + 1 - DL_SMALL_MAX / DL_PAGE))
#define DL_MAX_FRAMES 16
#define DL_NCLASSES_MAX 48
/* The runs of a class are carved from groups this many runs long. */
#define DL_GROUP_RUNS 64
/* A fresh run opens this many pages' worth of columns (layout above). */
#define DL_NARROW_PAGES 8
/* Slots a class holds in its narrow run before that opens whole. */
#define DL_NARROW_SLOTS 256
/* Chunks a class carves from its narrow run before that opens whole. */
#define DL_NARROW_CARVES 256

/* Column sets are 32-bit masks; row counts and per-row counters bytes. */
_Static_assert(DL_MAX_COLS <= 32, "column masks are uint32_t");
_Static_assert(DL_RUN_PAGES <= DL_MAX_COLS,
	       "a one-page class has DL_RUN_PAGES columns");
_Static_assert(DL_PAGE / DL_MIN_ALIGN <= DL_MAX_ROWS,
	       "the smallest class fills a page with rows");
_Static_assert(DL_MAX_COLS <= 255, "row_free counts columns in a byte");
_Static_assert(DL_SEG_PAGES % DL_RUN_PAGES == 0,
	       "a segment holds whole chunks");
_Static_assert(DL_SMALL_MAX <= DL_RUN_PAGES * DL_PAGE,
	       "the largest small class fits a run");
_Static_assert(DL_SMALL_MAX < 65536, "requested sizes are uint16_t");
_Static_assert(DL_NCLASSES_MAX < 255, "classes fit a byte, with a dead mark");
_Static_assert(DL_LARGE_PACK_MAX <= DL_SEG_SIZE,
	       "a packed large object fits a segment");

/* ---- classes.c: size classes ---- */
struct dl_class {
	uint32_t size;      /* slot size, a multiple of 16 */
	uint16_t col_pages; /* pages per column */
	uint16_t cols;      /* columns per run */
	uint16_t rows;      /* slots per column */
	uint16_t run_pages; /* cols * col_pages */
	uint16_t chunks_per_seg;
	bool wide;          /* requests may fall > 255 bytes short (I6) */
};
extern struct dl_class _dl_classes[DL_NCLASSES_MAX];
extern unsigned _dl_nclasses;
void _dl_classes_init(void);
/* The smallest class that holds size bytes at the alignment, or -1. */
unsigned _dl_size_class(size_t size, size_t align);

/* ---- metadata ---- */
struct dl_run_group;
struct dl_run {
	uintptr_t canon;
	struct dl_run_group *group;
	uint16_t index;           /* in its group: canon = group + index runs */
	uint8_t cls;
	bool in_partial;
	bool warm;                /* empty, and its pages kept */
	bool discarding;          /* empty, its pages going back: not carved */
	bool discarded;           /* empty, its pages given back: what the
				   * backend still holds of them is its own
				   * (kvm: stale), until a row is carved */
	uint32_t open;            /* columns that may be carved: a prefix */
	uint16_t nfree;           /* free slots in the whole run */
	struct dl_run *next, *prev; /* class's list of runs with free slots */
	struct dl_run *warm_next, *warm_prev; /* class's warm runs, newest first */
	uint16_t row_cursor;
	uint8_t row_free[DL_MAX_ROWS]; /* free slots per row (<= 32) */
	uint32_t row_used[DL_MAX_ROWS]; /* bit c: slot (row, c) carved */
};

/*
 * Runs of a group are contiguous in canonical memory, so that chunks of
 * neighbouring runs, made one after the other, are contiguous in both alias
 * and canonical space: the kernel merges their mappings (run.c).
 */
struct dl_run_group {
	uintptr_t canon;
	unsigned used;            /* runs carved so far */
	struct dl_run_group *next; /* the class's groups, newest first */
	size_t resident_at;       /* its pages' place in a memory split's
				   * residency vector (memory.c) */
	struct dl_run *runs[DL_GROUP_RUNS];
};

/* Per-slot stacks, only when the stacks option is on. */
struct dl_slot_stacks {
	uint32_t alloc[DL_MAX_COLS];
	uint32_t freed[DL_MAX_COLS];
};

struct dl_chunk {
	struct dl_run *run;       /* NULL once dead (I3) */
	uint16_t row;
	atomic_uint pending;      /* I3 */
	atomic_uint carved;       /* bit c: slot c carved into this chunk */
	atomic_uint handed;       /* bit c: given to the program */
	atomic_uint freed;        /* bit c: freed by the program */
	atomic_uint returned;     /* bit c: back in its run (I2), for stats */
	uint8_t slack[DL_MAX_COLS]; /* class size - requested size (I6) */
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
	atomic_uint dead;         /* chunks dead / objects freed */
	bool closed;              /* no more carving */
	uint8_t swept;            /* retired: what the last sweep found (R2) */
	struct dl_segment *next_dead; /* ring of recently dead segments */
	union {
		struct dl_chunk chunks[DL_CHUNKS_PER_SEG];
		struct dl_large objs[DL_LARGE_PER_SEG];
	};
	/* a wide class's segment: uint16_t req[cap][DL_MAX_COLS] (I6) */
};

/* The requested sizes of chunk k of a wide class's segment (I6). */
static inline uint16_t *dl_wide_req(struct dl_segment *seg, unsigned k)
{
	char *after = (char *)seg + offsetof(struct dl_segment, chunks) +
		      (size_t)seg->cap * sizeof(struct dl_chunk);
	return (uint16_t *)after + (size_t)k * DL_MAX_COLS;
}

/* ---- what the layers below tell the ones above ---- */

/*
 * Why an allocation failed.  With `what`, aliases ran out (a report, then
 * a stop or the fallback); without, memory itself did: plain ENOMEM.
 */
struct dl_failure {
	int err;                  /* errno */
	const char *what;         /* what ran out */
};

/* An allocation as the metadata knows it, for reports. */
struct dl_obj {
	uintptr_t start;          /* first byte handed out */
	size_t size;              /* requested size */
	uint32_t alloc_stack, free_stack;
};

/* What free/realloc/malloc_usable_size were given. */
enum dl_verdict {
	DL_PTR_LIVE,              /* the start of a live allocation */
	DL_PTR_FREED,             /* the start of a freed one */
	DL_PTR_INTERIOR,          /* inside an allocation, not its start */
	DL_PTR_UNKNOWN,           /* in our space, but no allocation's */
};

/* What a faulting address was. */
enum dl_fault_kind {
	DL_FAULT_NOT_OURS,
	DL_FAULT_FREED,           /* in a freed allocation */
	DL_FAULT_SHRUNK,          /* past the end left by a shrinking realloc */
};

/* ---- segment.c: alias space and its map ---- */
/*
 * _dl_segmap_get(addr): 0 = not alias space we ever used; a struct
 * dl_segment pointer; or a dead marker (low bit set) that keeps the class
 * of a segment whose metadata is gone (DL_DEAD_LARGE for large).
 *
 * The map has two levels, so that it costs what alias space is used
 * whatever the address width: a flat array for 57-bit addresses would be
 * 2^37 words.  The top table holds one leaf pointer per 512 GiB of a
 * 58-bit space (bits 39-57: both halves of a 57-bit address space, and of
 * a 48-bit one, which sign extension puts at the top's two ends); a leaf
 * holds one word per DL_SEG_SIZE segment of its 512 GiB.  A leaf is made
 * when a segment is first entered there (_dl_segment_new) and never given
 * back, so readers (free, realloc, the fault handler: I4) take two loads
 * and no lock.  _dl_addr_bits says how wide the halves are: the backend's
 * (backend.h, addr_bits), set once at start-up before the first segment.
 */
extern _Atomic(_Atomic uintptr_t *) *_dl_segmap;
extern unsigned _dl_addr_bits;
#define DL_DEAD_MARK(cls) (((uintptr_t)(cls) << 1) | 1)
#define DL_DEAD_LARGE 0xff
#define DL_SEGMAP_LEAF_SHIFT 39
#define DL_SEGMAP_LEAF_ENTRIES                                                  \
	((size_t)1 << (DL_SEGMAP_LEAF_SHIFT - DL_SEG_SHIFT))
#define DL_SEGMAP_TOP_ENTRIES                                                   \
	((size_t)1 << (DL_ADDR_BITS_MAX + 2 - DL_SEGMAP_LEAF_SHIFT))
static inline bool _dl_addr_canonical(uintptr_t addr)
{
	/* bits _dl_addr_bits to 63 all clear or all set */
	uintptr_t top = addr >> _dl_addr_bits;
	return top == 0 || top == (UINTPTR_MAX >> _dl_addr_bits);
}
/* The word of addr's segment, or NULL when its leaf was never made. */
static inline _Atomic uintptr_t *_dl_segmap_slot(uintptr_t addr)
{
	_Atomic uintptr_t *leaf = atomic_load_explicit(
		&_dl_segmap[(addr >> DL_SEGMAP_LEAF_SHIFT) &
			    (DL_SEGMAP_TOP_ENTRIES - 1)],
		memory_order_acquire);
	if (!leaf)
		return NULL;
	return &leaf[(addr >> DL_SEG_SHIFT) & (DL_SEGMAP_LEAF_ENTRIES - 1)];
}
static inline uintptr_t _dl_segmap_get(uintptr_t addr)
{
	if (!_dl_addr_canonical(addr) || !_dl_segmap)
		return 0;
	_Atomic uintptr_t *slot = _dl_segmap_slot(addr);
	return slot ? atomic_load_explicit(slot, memory_order_acquire) : 0;
}
int _dl_segmap_init(void);
/* A new segment, or NULL with *fail saying what ran out. */
struct dl_segment *_dl_segment_new(uint8_t kind, uint8_t cls, size_t len,
				   size_t align, struct dl_failure *fail);
/* The segment has nothing live and will carve no more: release it. */
void _dl_segment_retire(struct dl_segment *seg);
void _dl_segment_for_each_live(void (*fn)(struct dl_segment *));
/* A chunk's stacks block (stacks=1), freed with its segment's metadata. */
struct dl_slot_stacks *_dl_slot_stacks_alloc(void);
/* Makes [start, start+len) fault from now on; stops the process if the
 * backend cannot (a dangling pointer must never stay usable). */
void _dl_alias_revoke(uintptr_t start, size_t len);
/* The same for n sorted ranges, in as few calls as the backend can. */
void _dl_alias_revoke_many(const struct dl_range *ranges, unsigned n);
void _dl_segment_streams_reset(void);

/*
 * ---- segment.c: how much alias space, and its reuse ----
 *
 * R1 Every range of alias space the core took is in one state: live (a
 *    segment's), retired (revoked and released; listed in the retired
 *    array; its map entry the segment or a dead marker), or reusable (in
 *    the reuse list; its map entry 0).
 * R2 A retired range becomes reusable only in a sweep (reclaim.c) that
 *    stopped every other thread and found no word it scanned pointing into
 *    the range or at its end.  A range that is pointed to stays retired and
 *    keeps its segment's metadata (the kept list) for reports.
 * R3 used = taken fresh - reusable; only fresh takes count against the cap
 *    (alias_space=), so reclaimed space is handed out before fresh space.
 */
struct dl_retired {
	uintptr_t base;
	size_t len;
	uintptr_t was;            /* its map entry, during a sweep */
	bool pinned;              /* a scanned word points into it */
	uintptr_t pinned_at;      /* where the first such word was read, */
	int pinned_regs;          /* or whose registers: 0 the sweeper's,
				   * i + 1 stopped thread i's */
};
/* During a sweep a retired range's map entries hold its index here. */
#define DL_SEGMAP_CAND(i) (((uintptr_t)(i) << 2) | 2)
#define DL_SEGMAP_IS_CAND(e) (((e)&3) == 2)
/* struct dl_segment.swept */
enum { DL_SWEPT_NOT, DL_SWEPT_PINNED, DL_SWEPT_REUSABLE };
/* Raised when used alias space passes the mark; malloc.c sweeps. */
extern atomic_bool _dl_reclaim_wanted;
struct dl_space_info {
	uint64_t limit, used, reusable, retired, pinned;
	uint64_t live_peak;       /* the most used - retired at once */
};
void _dl_space_init(uint64_t limit);
void _dl_space_info(struct dl_space_info *si);
/* reclaim.c, every lock held, the world stopped: the retired ranges, their
 * map entries turned into DL_SEGMAP_CAND; [*lo, *hi] spans them. */
struct dl_retired *_dl_space_sweep_begin(size_t *n, uintptr_t *lo,
					 uintptr_t *hi);
/* Still stopped: map entries back (pinned) or 0 (reusable from now). */
void _dl_space_sweep_decide(void);
/* The world running again, the segment locks (_dl_segment_lock_all) still
 * held: reusable ranges go to the reuse list, their metadata back to its
 * pool.  Returns the bytes made reusable. */
uint64_t _dl_space_sweep_finish(void);
/* The sweep could not stop the world: try again when half of what is left
 * is used (locks held). */
void _dl_space_sweep_abandoned(void);
/* Our own state that holds alias addresses (stream cursors): not roots. */
void _dl_segment_own(void (*fn)(uintptr_t start, size_t len, void *ctx),
		     void *ctx);
void _dl_segment_lock_all(void);
void _dl_segment_unlock_all(bool reset);

/* ---- run.c: runs, and chunks carved from them under the class lock ---- */
struct dl_carve {
	struct dl_segment *seg;
	struct dl_chunk *chunk;
	uintptr_t alias;          /* the chunk's alias range */
	uint32_t carved;          /* columns carved into it */
	uint32_t open;            /* its run's open columns then */
};
/* The most chunks one refill carves (and maps) together. */
#define DL_REFILL_MAX 4
/*
 * Carves up to `want` (<= DL_REFILL_MAX) chunks of class cls into out[]:
 * chunks side by side in one segment, of runs side by side in one group,
 * so one alias mapping covers them all (from out[0].alias, of
 * out[0].chunk->run->canon).  Returns how many, or 0 with *fail saying
 * what ran out.
 */
unsigned _dl_chunk_carve(unsigned cls, unsigned want, struct dl_carve *out,
			 struct dl_failure *fail);
/* Gives the columns `cols` of ch back to their run (I2) once revoked, and
 * counts the chunk down (I3). */
void _dl_slots_return(struct dl_segment *seg, struct dl_chunk *ch,
		      uint32_t cols);
/* Release each chunk once dead rather than with its segment (set at
 * start-up when the backend's revocations split mappings). */
extern bool _dl_release_dead_chunks;
void _dl_runs_lock_all(void);
void _dl_runs_unlock_all(bool reset);

/*
 * ---- memory.c, run.c, small.c, large.c: where the memory goes (stats) ----
 * Resident canonical bytes by what they hold.  Every resident byte of a
 * run or a large extent is counted in exactly one field; what the backend
 * holds beyond them is its own (stale, or huge-page tails).
 */
struct dl_mem_split {
	uint64_t live;            /* the requested bytes of live allocations */
	uint64_t slack;           /* the rest of their slots and extents, and
				   * the tails of columns that hold them */
	uint64_t free;            /* free slots of non-empty runs, and slots
				   * waiting in threads' chunks */
	uint64_t warm;            /* empty runs, freed extents kept */
	uint64_t quarantine;      /* freed, not yet revoked or given back */
};
/* Every class lock held: the pages of all runs, for the vector. */
size_t _dl_runs_pages(void);
/* Fills vec (_dl_runs_pages() bytes) with the runs' residency; false
 * when the kernel would not tell. */
bool _dl_runs_resident(unsigned char *vec);
/* The resident bytes of [run->canon + off, + len), from vec. */
uint64_t _dl_run_resident(const struct dl_run *run, const unsigned char *vec,
			  size_t off, size_t len);
/* Free slots, column tails and warm runs. */
void _dl_runs_account(struct dl_mem_split *m, const unsigned char *vec);
/* Carved slots of seg's chunks: live, cached or freed. */
void _dl_small_account(struct dl_segment *seg, struct dl_mem_split *m,
		       const unsigned char *vec);
/* The large lock held: seg's live objects; warm extents (seg NULL). */
void _dl_large_account(struct dl_segment *seg, struct dl_mem_split *m);
/* Takes the locks (class, large, segment) around the walk; false when
 * the kernel would not tell residency or there was no memory for it. */
bool _dl_memory_split(struct dl_mem_split *m);

/* ---- stats.c: dangless_stats() ---- */
void _dl_stats_lock(void);
void _dl_stats_unlock(bool reset);

/* ---- small.c: small objects through the thread's chunks ---- */
void *_dl_small_alloc(unsigned cls, size_t req, struct dl_failure *fail);
/* A freed slot: its alias pages and where it goes back. */
struct dl_freed_slot {
	uintptr_t page;           /* first alias page to revoke */
	uint32_t pages;
	uint8_t col;
	struct dl_segment *seg;
	struct dl_chunk *chunk;
	uintptr_t obj;            /* the pointer freed */
	uint32_t poisoned;        /* bytes from obj filled (quarantine.c) */
};
/* Marks p freed (DL_PTR_LIVE) and says what to revoke, or says why not. */
enum dl_verdict _dl_small_free(struct dl_segment *seg, void *p,
			       struct dl_freed_slot *slot, struct dl_obj *o);
void _dl_small_retire(const struct dl_freed_slot *slot);
enum dl_verdict _dl_small_lookup(struct dl_segment *seg, void *p,
				 struct dl_obj *o);
/* Usable size of the live allocation p. */
size_t _dl_small_usable(struct dl_segment *seg, void *p);
/* realloc in place of live p; false when the object must move */
bool _dl_small_resize(struct dl_segment *seg, void *p, size_t req);
void *_dl_small_canonical(struct dl_segment *seg, void *p);
enum dl_fault_kind _dl_small_describe(struct dl_segment *seg, uintptr_t addr,
				      struct dl_obj *o);
/* Calls fn for every revoked alias of seg not yet released. */
void _dl_small_for_each_revoked(struct dl_segment *seg,
				void (*fn)(uintptr_t, size_t));
void _dl_small_thread_exit(void);

/* ---- quarantine.c: revoke=batch:N ---- */
/*
 * A quarantined object is filled with this byte; a pointer read from it is
 * 0xd5d5...d5, not canonical on x86-64, so using it faults.
 */
#define DL_POISON_BYTE 0xd5
/* A write into a quarantined object, found when its batch was flushed. */
struct dl_late_write {
	uintptr_t at;             /* the first byte that changed */
	uintptr_t obj;            /* the object's pointer */
	struct dl_segment *seg;
};
/* False when flushing found a late write (*lw says where); nothing of the
 * batch is revoked or reused then: the caller reports and stops. */
bool _dl_quarantine_add(struct dl_freed_slot *slot, struct dl_late_write *lw);
bool _dl_quarantine_flush(struct dl_late_write *lw);
bool _dl_quarantine_thread_exit(struct dl_late_write *lw);

/* ---- large.c ---- */
/* zero: the bytes must read zero (calloc); fresh extents do already. */
void *_dl_large_alloc(size_t req, size_t align, bool zero,
		      struct dl_failure *fail);
enum dl_verdict _dl_large_free(struct dl_segment *seg, void *p,
			       struct dl_obj *o);
enum dl_verdict _dl_large_lookup(struct dl_segment *seg, void *p,
				 struct dl_obj *o);
size_t _dl_large_usable(struct dl_segment *seg, void *p);
bool _dl_large_resize(struct dl_segment *seg, void *p, size_t req);
void *_dl_large_canonical(struct dl_segment *seg, void *p);
enum dl_fault_kind _dl_large_describe(struct dl_segment *seg, uintptr_t addr,
				      struct dl_obj *o);
void _dl_large_lock_all(void);
void _dl_large_unlock_all(bool reset);

/* ---- options.c ---- */
enum dl_revoke_mode { DL_REVOKE_STRICT, DL_REVOKE_BATCH };
struct dl_options {
	const struct dl_backend_entry *backend; /* NULL: the registry's first */
	bool fallback;
	bool stacks;
	bool stats;
	int verbosity;
	enum dl_revoke_mode revoke;
	unsigned batch;
	bool symbolize;
	char symbolizer[256];     /* "": addr2line from PATH */
	int exitcode;             /* bad frees: -1 abort(), else _exit(N) */
	bool abort_on_error;      /* every report ends in abort() */
	bool halt_on_error;       /* false: a bad free is reported and leaked */
	bool secure;              /* AT_SECURE: options may only tighten */
	uint64_t alias_space;     /* cap on alias space in use; 0: none */
	bool reclaim;             /* sweep for reusable alias space */
};
extern struct dl_options _dl_opt;
/* secure: the process runs with privileges its user lacks (AT_SECURE). */
void _dl_options_parse(const char *env, bool secure);
void _dl_options_print(void);

/* ---- symbolize.c: function, file and line from a symboliser process ---- */
#define DL_SYM_MAX_LINES (DL_MAX_FRAMES * 4)
struct dl_sym_line {
	int frame;                /* index into the frames given */
	const char *func, *loc;   /* NULL when unknown; loc is FILE:LINE */
};
struct dl_symbols {
	int n;
	size_t used;
	struct dl_sym_line line[DL_SYM_MAX_LINES]; /* by frame, inlined first */
	char text[4096];
};
/* Fills s for frames[0..n) (frames[0] is the faulting instruction when
 * first_is_pc, else every frame is a return address); returns the lines
 * found, or -1 when none could run (symbolize=0, none found, timed out). */
int _dl_symbolize(void *const *frames, int n, bool first_is_pc,
		  struct dl_symbols *s);

/* ---- stack.c: stacks, captured into a depot and printed ---- */
/* Where the program called the current malloc-family function from. */
extern __thread void *_dl_api_caller;
/* Like backtrace(): return addresses from the caller on; async-signal-safe
 * once _dl_stack_warm has run. */
int _dl_backtrace(void **frames, int max);
/* The unwinder's one-time set-up, before a signal handler needs it. */
void _dl_stack_warm(void);
uint32_t _dl_stack_capture(void);
/*
 * What a report's SUMMARY line names: the first frame with a source line,
 * else the first frame ("FILE:LINE in FUNC", "(OBJECT+0xOFF) in FUNC").
 * raw: the frames were printed without a symboliser.
 */
struct dl_top_frame {
	char where[512];
	bool have_line;
	bool raw;
};
void _dl_stack_print(const char *title, uint32_t id, struct dl_top_frame *top);
/* first_is_pc: frames[0] is the faulting instruction, not a return address;
 * top may be NULL. */
void _dl_backtrace_print(void *const *frames, int n, bool first_is_pc,
			 struct dl_top_frame *top);
/* The stack of the current call, from the program's frame on. */
void _dl_backtrace_here(struct dl_top_frame *top);

/* ---- report.c: what went wrong, in words ---- */
/* Reports, then stops the process; returns (p leaked) only for op "free"
 * with halt_on_error=0. */
void _dl_report_bad_pointer(const char *op, void *p, enum dl_verdict v,
			    const struct dl_obj *o);
/* p lies in alias space whose metadata is gone; returns as the above. */
void _dl_report_dead_pointer(const char *op, void *p);
/* Fills b with what addr was and returns the kind of bug for SUMMARY
 * ("heap-use-after-free", ...), or NULL when addr is not in our space. */
const char *_dl_describe_fault(uintptr_t addr, struct dl_buf *b,
			       uint32_t *alloc_stack, uint32_t *free_stack);
/* The closing lines of every report: the stacks, how to learn more, and
 * "SUMMARY: Dangless: KIND WHERE" (kind: heap-use-after-free, ...). */
void _dl_report_end(const char *kind, struct dl_top_frame *top,
		    uint32_t alloc_stack, uint32_t free_stack);
/* A write after free found in the quarantine: report, abort. */
__attribute__((noreturn)) void
_dl_report_late_write(const struct dl_late_write *lw);
/* Aliases ran out: stops, or (going_on) warns once. */
void _dl_report_exhausted(const struct dl_failure *fail, bool going_on);

/* ---- fault.c: the SIGSEGV handler ---- */
void _dl_fault_init(void);
void _dl_fault_thread_init(void);
void _dl_fault_thread_exit(void);

/* ---- fallback.c: the allocator after us, for fallback=1 ---- */
extern atomic_bool _dl_fallback_used;
/* Finds it; start-up only (dlsym allocates). */
void _dl_fallback_resolve(void);
bool _dl_fallback_available(void);
void *_dl_fallback_alloc(size_t size, size_t align);
void *_dl_fallback_realloc(void *p, size_t size);
void _dl_fallback_free(void *p);

/* ---- world.c: stopping the other threads; /proc without allocating ---- */
enum {
	DL_WORLD_SIGNALLED = 1,   /* sent the signal, not yet stopped */
	DL_WORLD_SAVING,          /* in the handler, saving its registers */
	DL_WORLD_STOPPED,         /* waiting for the sweep to end */
	DL_WORLD_GONE,            /* exited before it stopped */
};
struct dl_world_slot {
	atomic_int tid;
	atomic_int state;
	uintptr_t sp;             /* its stack pointer when it stopped */
	uintptr_t altstack;       /* its sigaltstack, if any */
	size_t altstack_len;
	size_t regs_len;
	/* general registers, then the FXSAVE/XSAVE image as the kernel
	 * wrote it in the signal frame (AVX-512 state fits) */
	unsigned char regs[4096 - 64] __attribute__((aligned(16)));
};
/* Installs the handler (once) and gives it cap slots. */
bool _dl_world_prepare(struct dl_world_slot *slots, unsigned cap);
/* Stops every other thread; 0, or -EAGAIN (*stuck: a thread that did not
 * stop in time), -ENOSPC (more threads than slots), -EIO.  The world
 * must be resumed in every case.  buf: scratch for reading /proc. */
int _dl_world_stop(char *buf, size_t len, int *stuck);
unsigned _dl_world_stopped(struct dl_world_slot **slots);
void _dl_world_resume(void);
/* The signal the world is stopped with, once installed; else 0. */
int _dl_world_signal(void);
struct dl_mapping {
	uintptr_t start, end;
	bool read, write, shared;
	uintptr_t inode;
	const char *name;         /* "" for anonymous memory */
};
/* Streams /proc/self/maps through buf; false when it could not be read
 * whole, or fn returned false. */
bool _dl_world_for_each_mapping(char *buf, size_t len,
				bool (*fn)(const struct dl_mapping *m,
					   void *ctx),
				void *ctx);

/* ---- reclaim.c: sweeps for reusable alias space ---- */
/* forced: dangless_reclaim() (else the threshold).  Bytes made reusable,
 * or -errno (dangless.h). */
long _dl_reclaim(bool forced);
/* In a child after fork(): no sweep runs there. */
void _dl_reclaim_fork_child(void);
/* Live objects of seg, through canonical memory (reclaim.c scans them). */
void _dl_small_for_each_live(struct dl_segment *seg,
			     void (*fn)(uintptr_t canon, size_t len));
void _dl_large_for_each_live(struct dl_segment *seg,
			     void (*fn)(uintptr_t canon, size_t len));

/* ---- init.c: start-up, threads, fork ---- */
enum { DL_UNINIT, DL_INITIALISING, DL_READY, DL_FAILED };
extern atomic_int _dl_state;
int _dl_ensure_init(void);
extern __thread bool _dl_thread_ready;
/* The calling thread's first allocation: its exit hook and signal stack. */
void _dl_thread_start(void);

#endif
