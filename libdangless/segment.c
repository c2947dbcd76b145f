/* SPDX-License-Identifier: MIT */
/*
 * Alias segments and the map from an alias address to its metadata.
 *
 * The map is one flat array over the 47-bit user address space, one word
 * per DL_SEG_SIZE segment, reserved without backing: only the parts that
 * cover alias space we used ever get pages.  Lookups are a load, without
 * locks, from free(), realloc() and the fault handler.
 */
#include <string.h>

#include "internal.h"

_Atomic uintptr_t *_dl_segmap;

static struct dl_pool dl_segment_pool = {.block = sizeof(struct dl_segment),
					 .name = "segments"};

/*
 * Retired segments keep their metadata for a while so that a late
 * dangling access is still reported with the allocation's size; the
 * oldest are dropped to dead markers.
 */
#define DL_DEAD_KEEP 1024
static struct {
	dl_lock_t lock;
	struct dl_segment *head, *tail;
	unsigned n;
} dl_dead;

/* Live segments, for the walk after fork. */
static struct {
	dl_lock_t lock;
	struct dl_segment **v;
	size_t n, cap;
} dl_live;

int _dl_segmap_init(void)
{
	size_t entries = (size_t)1 << (DL_ADDR_BITS - DL_SEG_SHIFT);
	_dl_segmap = _dl_os_pages(entries * sizeof(uintptr_t));
	return _dl_segmap ? 0 : -12;
}

static bool dl_live_add(struct dl_segment *seg)
{
	_dl_lock(&dl_live.lock);
	if (dl_live.n == dl_live.cap) {
		size_t cap = dl_live.cap ? dl_live.cap * 2 : 4096;
		struct dl_segment **v = _dl_os_pages(cap * sizeof(*v));
		if (!v) {
			_dl_unlock(&dl_live.lock);
			return false;
		}
		if (dl_live.v) {
			memcpy(v, dl_live.v, dl_live.n * sizeof(*v));
			_dl_os_unpages(dl_live.v, dl_live.cap * sizeof(*v));
		}
		dl_live.v = v;
		dl_live.cap = cap;
	}
	dl_live.v[dl_live.n++] = seg;
	_dl_unlock(&dl_live.lock);
	return true;
}

static void dl_live_remove(struct dl_segment *seg)
{
	_dl_lock(&dl_live.lock);
	for (size_t i = dl_live.n; i-- > 0;) {
		if (dl_live.v[i] == seg) {
			dl_live.v[i] = dl_live.v[--dl_live.n];
			break;
		}
	}
	_dl_unlock(&dl_live.lock);
}

static void dl_segmap_set(uintptr_t base, size_t len, uintptr_t value)
{
	for (uintptr_t a = base; a < base + len; a += DL_SEG_SIZE)
		atomic_store_explicit(&_dl_segmap[a >> DL_SEG_SHIFT], value,
				      memory_order_release);
}

/*
 * Each class carves its segments from a stream of its own, so that its
 * chunks are neighbours in alias space (mappings can merge).  A stream is
 * only touched under its class's lock.
 */
#define DL_STREAM_SIZE ((size_t)16 << 20)
static struct {
	uintptr_t next, end;
} dl_stream[DL_NCLASSES_MAX];

static void *dl_stream_carve(uint8_t cls, size_t len)
{
	if (dl_stream[cls].next + len > dl_stream[cls].end ||
	    !dl_stream[cls].next) {
		void *block = _dl_be->alias_reserve(DL_STREAM_SIZE, DL_SEG_SIZE);
		if (!block)
			return NULL;
		dl_stream[cls].next = (uintptr_t)block;
		dl_stream[cls].end = (uintptr_t)block + DL_STREAM_SIZE;
	}
	uintptr_t base = dl_stream[cls].next;
	dl_stream[cls].next += len;
	return (void *)base;
}

/* New alias space was dedicated: streams start over from it. */
void _dl_segment_streams_reset(void)
{
	memset(dl_stream, 0, sizeof(dl_stream));
}

struct dl_segment *_dl_segment_new(uint8_t kind, uint8_t cls, size_t len,
				   size_t align)
{
	len = DL_ALIGN_UP(len, DL_SEG_SIZE);
	if (align < DL_SEG_SIZE)
		align = DL_SEG_SIZE;
	void *base = kind == DL_SEG_SMALL ? dl_stream_carve(cls, len)
					  : _dl_be->alias_reserve(len, align);
	if (!base) {
		_dl_alias_exhausted(12, "alias address space");
		return NULL;
	}
	struct dl_segment *seg = _dl_pool_alloc(&dl_segment_pool);
	if (!seg || !dl_live_add(seg)) {
		_dl_alias_exhausted(12, "metadata memory");
		return NULL;
	}
	seg->base = (uintptr_t)base;
	seg->len = len;
	seg->kind = kind;
	seg->cls = cls;
	seg->bump = seg->base;
	if (kind == DL_SEG_SMALL)
		seg->cap = _dl_classes[cls].chunks_per_seg;
	else
		seg->cap = DL_LARGE_PER_SEG;
	dl_segmap_set(seg->base, len, (uintptr_t)seg);
	DL_STAT_ADD(alias_bytes_used, len);
	return seg;
}

void _dl_segment_retire(struct dl_segment *seg)
{
	dl_live_remove(seg);
	/* Whatever is still mapped goes; dead ranges keep faulting. */
	_dl_be->alias_release((void *)seg->base, seg->len);
	struct dl_segment *drop = NULL;
	_dl_lock(&dl_dead.lock);
	seg->next_dead = NULL;
	if (dl_dead.tail)
		dl_dead.tail->next_dead = seg;
	else
		dl_dead.head = seg;
	dl_dead.tail = seg;
	if (++dl_dead.n > DL_DEAD_KEEP) {
		drop = dl_dead.head;
		dl_dead.head = drop->next_dead;
		dl_dead.n--;
	}
	_dl_unlock(&dl_dead.lock);
	if (drop) {
		uint8_t cls = drop->kind == DL_SEG_SMALL ? drop->cls
							 : DL_DEAD_LARGE;
		dl_segmap_set(drop->base, drop->len, DL_DEAD_MARK(cls));
		_dl_pool_free(&dl_segment_pool, drop);
	}
}

void _dl_segment_for_each_revoked(void (*fn)(uintptr_t, size_t))
{
	for (size_t i = 0; i < dl_live.n; i++) {
		struct dl_segment *seg = dl_live.v[i];
		if (seg->kind != DL_SEG_SMALL)
			continue; /* large frees release their range at once */
		const struct dl_class *c = &_dl_classes[seg->cls];
		size_t chunk_len = (size_t)c->run_pages * DL_PAGE;
		size_t col_len = (size_t)c->col_pages * DL_PAGE;
		/* Dead chunks too: they stay mapped until their segment goes. */
		for (unsigned k = 0; k < seg->used; k++) {
			unsigned freed = atomic_load(&seg->chunks[k].freed);
			uintptr_t base = seg->base + k * chunk_len;
			for (unsigned col = 0; col < c->cols;) {
				if (!(freed & (1u << col))) {
					col++;
					continue;
				}
				unsigned first = col;
				while (col < c->cols && (freed & (1u << col)))
					col++;
				fn(base + first * col_len, (col - first) * col_len);
			}
		}
	}
}

struct dl_chunk *_dl_chunk_of(struct dl_segment *seg, uintptr_t addr,
			      unsigned *col, uintptr_t *slot_start)
{
	const struct dl_class *c = &_dl_classes[seg->cls];
	size_t chunk_len = (size_t)c->run_pages * DL_PAGE;
	size_t col_len = (size_t)c->col_pages * DL_PAGE;
	uintptr_t off = addr - seg->base;
	unsigned k = (unsigned)(off / chunk_len);
	if (k >= seg->used)
		return NULL;
	struct dl_chunk *ch = &seg->chunks[k];
	uintptr_t in_chunk = off % chunk_len;
	*col = (unsigned)(in_chunk / col_len);
	*slot_start = seg->base + k * chunk_len + *col * col_len +
		      (uintptr_t)ch->row * c->size;
	return ch;
}

struct dl_large *_dl_large_of(struct dl_segment *seg, uintptr_t addr)
{
	/* Objects are carved in address order: binary search. */
	unsigned lo = 0, hi = seg->used;
	while (lo < hi) {
		unsigned mid = (lo + hi) / 2;
		struct dl_large *o = &seg->objs[mid];
		if (addr < o->range)
			hi = mid;
		else if (addr >= o->range + o->range_len)
			lo = mid + 1;
		else
			return o;
	}
	return NULL;
}

void _dl_segment_lock_all(void)
{
	_dl_lock(&dl_live.lock);
	_dl_lock(&dl_dead.lock);
	_dl_lock(&dl_segment_pool.lock);
}

void _dl_segment_unlock_all(bool reset)
{
	if (reset) {
		_dl_lock_reset(&dl_segment_pool.lock);
		_dl_lock_reset(&dl_dead.lock);
		_dl_lock_reset(&dl_live.lock);
		return;
	}
	_dl_unlock(&dl_segment_pool.lock);
	_dl_unlock(&dl_dead.lock);
	_dl_unlock(&dl_live.lock);
}
