/* SPDX-License-Identifier: MIT */
/*
 * Metadata memory (pages and pools), the lock and the counters: the core
 * services that hold state (services.h).
 */
#include <sched.h>
#include <sys/mman.h>

#include "services.h"

#define DL_POOL_GROW ((size_t)1 << 20)

struct dl_stats_atomic _dl_stats;

/*
 * Holders keep a lock for a few hundred instructions and make no system
 * call meanwhile, so a short spin usually wins.  But with more threads
 * than cores the holder may have been preempted: spinning on then burns
 * the waiter's whole time slice while the holder waits for a core, so
 * after a while the waiter gives its core away.
 */
#define DL_LOCK_SPINS 128
void _dl_lock(dl_lock_t *l)
{
	for (;;) {
		if (!atomic_exchange_explicit(&l->v, 1, memory_order_acquire))
			return;
		for (unsigned spins = 0;
		     atomic_load_explicit(&l->v, memory_order_relaxed);
		     spins++) {
			if (spins < DL_LOCK_SPINS)
				__builtin_ia32_pause();
			else
				sched_yield();
		}
	}
}

void *_dl_meta_pages(size_t len)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	return p == MAP_FAILED ? NULL : p;
}

void _dl_meta_unpages(void *p, size_t len)
{
	munmap(p, len);
}

/* Every pool that has handed out a block, for fork's lock order. */
static struct {
	dl_lock_t lock;
	struct dl_pool *head;
} dl_pools;

static void dl_pool_list(struct dl_pool *pool)
{
	_dl_lock(&dl_pools.lock);
	if (!pool->listed) {
		pool->next_pool = dl_pools.head;
		dl_pools.head = pool;
		pool->listed = true;
	}
	_dl_unlock(&dl_pools.lock);
}

void *_dl_pool_alloc(struct dl_pool *pool)
{
	if (unlikely(!pool->listed))
		dl_pool_list(pool);
	_dl_lock(&pool->lock);
	void *p = pool->free_list;
	if (p) {
		pool->free_list = *(void **)p;
	} else {
		size_t block = DL_ALIGN_UP(pool->block, 16);
		while (!pool->cur || pool->cur + block > pool->end) {
			/* The mmap happens with the pool unlocked; another
			 * thread may have grown the pool meanwhile, and then
			 * these pages, never handed out, go back. */
			size_t grow = block * 64 > DL_POOL_GROW ? block * 64
								 : DL_POOL_GROW;
			_dl_unlock(&pool->lock);
			char *m = _dl_meta_pages(grow);
			if (!m)
				return NULL;
			_dl_lock(&pool->lock);
			if (!pool->cur || pool->cur + block > pool->end) {
				pool->cur = m;
				pool->end = m + grow;
			} else {
				_dl_unlock(&pool->lock);
				_dl_meta_unpages(m, grow);
				_dl_lock(&pool->lock);
			}
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

/* Pools are leaves of the lock order: nothing is locked while one is held. */
void _dl_pools_lock_all(void)
{
	_dl_lock(&dl_pools.lock);
	for (struct dl_pool *p = dl_pools.head; p; p = p->next_pool)
		_dl_lock(&p->lock);
}

void _dl_pools_unlock_all(bool reset)
{
	void (*op)(dl_lock_t *) = reset ? _dl_lock_reset : _dl_unlock;
	for (struct dl_pool *p = dl_pools.head; p; p = p->next_pool)
		op(&p->lock);
	op(&dl_pools.lock);
}
