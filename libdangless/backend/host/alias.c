/* SPDX-License-Identifier: MIT */
/*
 * Alias space: reservation blocks (or dedicated ranges), aliases mapped
 * from the memfd, revoked by guard markers or mprotect, released back to
 * PROT_NONE (H1).
 */
#include <errno.h>
#include <stddef.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include "host.h"

/* ---- alias space ---- */

/* A range that faults on access and costs no memory (H1), inside gaps that
 * are never handed out (H3). */
static void *host_reserve(size_t len)
{
	char *p = mmap(NULL, len + 2 * HOST_GAP, PROT_NONE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	return p == MAP_FAILED ? NULL : p + HOST_GAP;
}

static void host_unreserve(char *start, size_t len)
{
	munmap(start - HOST_GAP, len + 2 * HOST_GAP);
}

/*
 * A new reservation block is mapped with alias_lock dropped (other threads
 * carve meanwhile from what is left); if someone else installed a block
 * while we mapped ours, ours goes back unused (nothing was handed out of
 * it, so H1 does not hold it).
 */
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
			_dl_unlock(&host.alias_lock);
			char *b = host_reserve(block);
			if (!b)
				return NULL;
			_dl_lock(&host.alias_lock);
			start = DL_ALIGN_UP(host.block_next, align);
			bool fits = host.block_next &&
				    start + len <= host.block_end &&
				    start + len >= start;
			if (!fits && !host.ndedicated && !host.dedicated_only) {
				host.block_next = (uintptr_t)b;
				host.block_end = (uintptr_t)b + block;
				DL_STAT_ADD(alias_bytes_reserved, block);
			} else {
				_dl_unlock(&host.alias_lock);
				host_unreserve(b, block);
				_dl_lock(&host.alias_lock);
			}
		}
		start = DL_ALIGN_UP(host.block_next, align);
	}
	host.block_next = start + len;
	_dl_unlock(&host.alias_lock);
	return (void *)start;
}

int host_alias_dedicate(void *start, size_t len)
{
	/* The range holds its own gaps (H3): aliases come from its middle. */
	if (((uintptr_t)start | len) & (DL_PAGE - 1) ||
	    len <= 2 * HOST_GAP || ((uintptr_t)start + len) >> DL_ADDR_BITS)
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
	host.dedicated[host.ndedicated][0] = (uintptr_t)start + HOST_GAP;
	host.dedicated[host.ndedicated][1] = (uintptr_t)start + len - HOST_GAP;
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

int host_alias_map(void *alias, void *canon, size_t len, size_t populate)
{
	if (!host_map_budget_take(1))
		return -ENOMEM;
	/* An old size of 0 duplicates the shared mapping: the same pages at
	 * `alias`, with no descriptor involved (H2). */
	void *r = mremap(canon, 0, len, MREMAP_MAYMOVE | MREMAP_FIXED, alias);
	if (r == MAP_FAILED) {
		int err = errno;
		host_reprotect(alias, len); /* H1, whatever the kernel did */
		return -err;
	}
	/* A hint: without it (Linux < 5.14) pages come on first touch. */
	if (populate)
		madvise(alias, populate, MADV_POPULATE_WRITE);
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
		/* May split the alias's mapping in three: counted, so that new
		 * aliases are refused before a revocation can fail. */
		host_map_budget_take(2);
		r = mprotect(alias, len, PROT_NONE);
	}
	return r == 0 ? 0 : -errno;
}

bool host_revoke_splits(void)
{
	return !host.guard;
}

/* ---- many ranges in one call ---- */

/*
 * process_madvise(MADV_GUARD_INSTALL) takes an iovec of ranges: one system
 * call (one mmap lock round, one TLB flush) for a whole batch instead of one
 * per range.  The core's ranges are passed as the iovec itself.
 */
_Static_assert(sizeof(struct dl_range) == sizeof(struct iovec) &&
		       offsetof(struct dl_range, start) ==
			       offsetof(struct iovec, iov_base) &&
		       offsetof(struct dl_range, len) ==
			       offsetof(struct iovec, iov_len),
	       "a dl_range array is passed to the kernel as an iovec");
/* PIDFD_SELF_THREAD (linux/pidfd.h, 6.14+): the caller, without an fd;
 * every thread's memory is the process's. */
#define HOST_PIDFD_SELF (-10000)
/* UIO_MAXIOV: the most ranges one call takes. */
#define HOST_MAX_IOV 1024

void host_probe_batch_guard(void)
{
	host.batch_guard = false;
	if (!host.guard)
		return; /* mprotect has no many-range form */
	/*
	 * Only PIDFD_SELF (6.14+; guards on shared file mappings came in
	 * 6.15): a pidfd_open descriptor would be one the program can close
	 * or replace (H2).
	 */
	char *probe = host_canon_dup(0, DL_PAGE);
	if (probe == MAP_FAILED)
		return;
	struct iovec iov = {probe, DL_PAGE};
	host.batch_guard = syscall(SYS_process_madvise, HOST_PIDFD_SELF, &iov,
				   1, MADV_GUARD_INSTALL, 0) == (long)DL_PAGE;
	munmap(probe, DL_PAGE);
}

static int host_revoke_each(const struct dl_range *r, unsigned n)
{
	for (unsigned i = 0; i < n; i++) {
		int err = host_alias_revoke((void *)r[i].start, r[i].len);
		if (err)
			return err;
	}
	return 0;
}

int host_alias_revoke_many(const struct dl_range *ranges, unsigned n)
{
	while (n) {
		if (!host.batch_guard)
			return host_revoke_each(ranges, n);
		unsigned now = n < HOST_MAX_IOV ? n : HOST_MAX_IOV;
		long done = syscall(SYS_process_madvise, HOST_PIDFD_SELF,
				    ranges, now, MADV_GUARD_INSTALL, 0);
		if (done < 0 && (errno == EAGAIN || errno == EINTR))
			continue;
		if (done <= 0) {
			/* The kernel changed its mind: one range at a time,
			 * which also says what went wrong, if anything. */
			return host_revoke_each(ranges, n);
		}
		/* It returns the bytes advised, and stops early on a range it
		 * could not do: skip what is done, go on with the rest. */
		size_t left = (size_t)done;
		while (now && left >= ranges->len) {
			left -= ranges->len;
			ranges++, n--, now--;
		}
		if (left && now) {
			int err = host_alias_revoke((void *)(ranges->start + left),
						    ranges->len - left);
			if (err)
				return err;
			ranges++, n--;
		}
	}
	return 0;
}

int host_alias_release(void *alias, size_t len)
{
	/* Anonymous PROT_NONE merges back into the reservation (H1). */
	return host_reprotect(alias, len);
}

/*
 * A released range is anonymous PROT_NONE memory of the reservation again
 * (host_alias_release), exactly what alias_reserve hands out: mapping it
 * again is an mremap into the reservation as for a fresh range, so the
 * kernel merges it with its neighbours as before (no new mapping per
 * object), and the old alias's page-table entries, guard markers included,
 * went with the mapping that held them (the kernel flushed every CPU's TLB
 * when it replaced it).  Nothing is left to do.
 */
int host_alias_reuse(void *alias, size_t len)
{
	(void)alias;
	(void)len;
	return 0;
}

/* The canonical view and its gaps: live objects are scanned through the
 * core's metadata, the rest of the view is freed or never used.  And the
 * backend's own state. */
void host_own_memory(void (*fn)(uintptr_t start, size_t len, void *ctx),
		     void *ctx)
{
	if (host.canon && host.canon != (char *)-1)
		fn((uintptr_t)host.canon - HOST_GAP,
		   HOST_CANON_SIZE + 2 * HOST_GAP, ctx);
	/* Our state: its reservation cursors point into alias space. */
	fn((uintptr_t)&host, sizeof(host), ctx);
}
