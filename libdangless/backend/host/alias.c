/* SPDX-License-Identifier: MIT */
/*
 * Alias space: reservation blocks (or dedicated ranges), aliases mapped
 * from the memfd, revoked by guard markers or mprotect, released back to
 * PROT_NONE (H1).
 */
#include <errno.h>
#include <string.h>
#include <sys/mman.h>

#include "host.h"

/* ---- alias space ---- */

/* A range that faults on access and costs no memory (H1). */
static void *host_reserve(size_t len)
{
	void *p = mmap(NULL, len, PROT_NONE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	return p == MAP_FAILED ? NULL : p;
}

void *host_alias_reserve(size_t len, size_t align)
{
	_dl_lock(&host.alias_lock);
	uintptr_t start = DL_ALIGN_UP(host.block_next, align);
	/* The tail of a block too short for this request is never used. */
	while (!host.block_next || start + len > host.block_end ||
	       start + len < start) {
		if (host.ndedicated) {
			host.block_next = host.dedicated[0][0];
			host.block_end = host.dedicated[0][1];
			memmove(host.dedicated[0], host.dedicated[1],
				--host.ndedicated * sizeof(host.dedicated[0]));
		} else if (host.dedicated_only) {
			_dl_unlock(&host.alias_lock);
			return NULL; /* all that was dedicated is used */
		} else {
			size_t block = len + align > HOST_BLOCK_SIZE
					       ? len + align
					       : HOST_BLOCK_SIZE;
			char *b = host_reserve(block);
			if (!b) {
				_dl_unlock(&host.alias_lock);
				return NULL;
			}
			host.block_next = (uintptr_t)b;
			host.block_end = (uintptr_t)b + block;
			DL_STAT_ADD(alias_bytes_reserved, block);
		}
		start = DL_ALIGN_UP(host.block_next, align);
	}
	host.block_next = start + len;
	_dl_unlock(&host.alias_lock);
	return (void *)start;
}

int host_alias_dedicate(void *start, size_t len)
{
	if (((uintptr_t)start | len) & (DL_PAGE - 1) || !len ||
	    ((uintptr_t)start + len) >> DL_ADDR_BITS)
		return -EINVAL;
	void *r = mmap(start, len, PROT_NONE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE |
			       MAP_FIXED_NOREPLACE,
		       -1, 0);
	if (r == MAP_FAILED)
		return -errno;
	if (r != start) { /* kernels before 4.17 ignore the flag */
		munmap(r, len);
		return -EEXIST;
	}
	_dl_lock(&host.alias_lock);
	if (host.ndedicated == sizeof(host.dedicated) / sizeof(host.dedicated[0])) {
		_dl_unlock(&host.alias_lock);
		munmap(start, len);
		return -ENOSPC;
	}
	if (!host.dedicated_only) {
		/* From the first dedicated range on, nothing else. */
		host.dedicated_only = true;
		host.block_next = host.block_end = 0;
	}
	host.dedicated[host.ndedicated][0] = (uintptr_t)start;
	host.dedicated[host.ndedicated][1] = (uintptr_t)start + len;
	host.ndedicated++;
	_dl_unlock(&host.alias_lock);
	DL_STAT_ADD(alias_bytes_reserved, len);
	return 0;
}

static int host_reprotect(void *alias, size_t len)
{
	void *r = mmap(alias, len, PROT_NONE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE,
		       -1, 0);
	return r == MAP_FAILED ? -errno : 0;
}

int host_alias_map(void *alias, void *canon, size_t len,
			  bool populate)
{
	/* (Without guard markers every revocation splits a mapping and the
	 * count is not ours to predict: the kernel's ENOMEM decides.) */
	if (host.guard && !host_within_map_budget())
		return -ENOMEM;
	off_t off = (off_t)((char *)canon - host.canon);
	void *r = mmap(alias, len, PROT_READ | PROT_WRITE,
		       MAP_SHARED | MAP_FIXED | (populate ? MAP_POPULATE : 0),
		       host.fd, off);
	if (r == MAP_FAILED) {
		int err = errno;
		host_reprotect(alias, len); /* H1, whatever the kernel did */
		return -err;
	}
	return 0;
}

int host_alias_revoke(void *alias, size_t len)
{
	int r;
	if (host.guard) {
		do
			r = madvise(alias, len, MADV_GUARD_INSTALL);
		while (r != 0 && (errno == EAGAIN || errno == EINTR));
	} else {
		r = mprotect(alias, len, PROT_NONE);
	}
	return r == 0 ? 0 : -errno;
}

int host_alias_release(void *alias, size_t len)
{
	/* Anonymous PROT_NONE merges back into the reservation (H1). */
	return host_reprotect(alias, len);
}
