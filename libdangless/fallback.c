/* SPDX-License-Identifier: MIT */
/*
 * The allocator after Dangless in symbol order (glibc's), for fallback=1:
 * once aliases run out, new allocations go there, unprotected, and free()
 * and realloc() of its pointers go back to it.  Looked up at start-up,
 * where dlsym's own allocations are served from the early arena; a fully
 * static program has none, and its fallback fails with ENOMEM.
 */
#include <dlfcn.h>
#include <errno.h>

#include "internal.h"

atomic_bool _dl_fallback_used;

static struct {
	void *(*malloc)(size_t);
	void *(*memalign)(size_t, size_t);
	void *(*realloc)(void *, size_t);
	void (*free)(void *);
} dl_next;

void _dl_fallback_resolve(void)
{
	dl_next.malloc = (void *(*)(size_t))dlsym(RTLD_NEXT, "malloc");
	dl_next.memalign =
		(void *(*)(size_t, size_t))dlsym(RTLD_NEXT, "memalign");
	dl_next.realloc =
		(void *(*)(void *, size_t))dlsym(RTLD_NEXT, "realloc");
	dl_next.free = (void (*)(void *))dlsym(RTLD_NEXT, "free");
	if (!dl_next.malloc || !dl_next.memalign || !dl_next.realloc ||
	    !dl_next.free) {
		dl_next.malloc = NULL;
		_dl_warn("fallback=1: no allocator after Dangless to fall back "
			 "to (a fully static program?); allocations will fail "
			 "with ENOMEM once aliases run out");
		return;
	}
	/* Its heap must exist before the mapping limit is reached: growing
	 * it later takes no new mapping, creating it would. */
	dl_next.free(dl_next.malloc(1));
}

bool _dl_fallback_available(void)
{
	return dl_next.malloc != NULL;
}

void *_dl_fallback_alloc(size_t size, size_t align)
{
	if (dl_next.malloc)
		return align > DL_MIN_ALIGN ? dl_next.memalign(align, size)
					    : dl_next.malloc(size);
	errno = ENOMEM;
	return NULL;
}

void *_dl_fallback_realloc(void *p, size_t size)
{
	return dl_next.realloc(p, size);
}

void _dl_fallback_free(void *p)
{
	dl_next.free(p);
}
