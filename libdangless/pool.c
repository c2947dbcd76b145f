/* SPDX-License-Identifier: MIT */
/*
 * Fixed-size blocks for metadata, carved from anonymous memory that is
 * never given back: fault reports read metadata without locks (I4), so a
 * freed block must stay readable.
 */
#include "internal.h"

#define DL_POOL_GROW ((size_t)1 << 20)

void _dl_lock(dl_lock_t *l)
{
	for (;;) {
		if (!atomic_exchange_explicit(&l->v, 1, memory_order_acquire))
			return;
		while (atomic_load_explicit(&l->v, memory_order_relaxed))
			__builtin_ia32_pause();
	}
}

void *_dl_pool_alloc(struct dl_pool *pool)
{
	_dl_lock(&pool->lock);
	void *p = pool->free_list;
	if (p) {
		pool->free_list = *(void **)p;
	} else {
		size_t block = DL_ALIGN_UP(pool->block, 16);
		if (!pool->cur || pool->cur + block > pool->end) {
			size_t grow = block * 64 > DL_POOL_GROW ? block * 64
								 : DL_POOL_GROW;
			char *m = _dl_os_pages(grow);
			if (!m) {
				_dl_unlock(&pool->lock);
				return NULL;
			}
			pool->cur = m;
			pool->end = m + grow;
		}
		p = pool->cur;
		pool->cur += block;
	}
	_dl_unlock(&pool->lock);
	__builtin_memset(p, 0, pool->block);
	return p;
}

void _dl_pool_free(struct dl_pool *pool, void *p)
{
	_dl_lock(&pool->lock);
	*(void **)p = pool->free_list;
	pool->free_list = p;
	_dl_unlock(&pool->lock);
}
