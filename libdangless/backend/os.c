/* SPDX-License-Identifier: MIT */
/* Anonymous memory for the allocator's own use, whichever backend runs. */
#include <sys/mman.h>

#include "../internal.h"

void *_dl_os_pages(size_t len)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	return p == MAP_FAILED ? NULL : p;
}

void _dl_os_unpages(void *p, size_t len)
{
	munmap(p, len);
}

void *_dl_os_reserve(size_t len)
{
	void *p = mmap(NULL, len, PROT_NONE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	return p == MAP_FAILED ? NULL : p;
}
