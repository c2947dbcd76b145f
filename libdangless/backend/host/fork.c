/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "host.h"

/*
 * fork: memfd pages are shared across fork(), so the child moves to a copy: a
 * fresh memfd with the same contents, mapped at every address where the
 * old one was.  The parent waits in fork() until the copy is taken so that
 * it cannot change the heap under it.  vfork/posix_spawn run no atfork
 * handlers and pay nothing.
 *
 * Mapping the copy drops the guard markers of every revoked alias.  Putting
 * them back one madvise per freed object is most of a fork's cost (a fork
 * server forks thousands of times a second), so a single-threaded parent
 * reads its markers with PAGEMAP_SCAN (Linux 6.14+; shared-file guards need
 * 6.15 anyway) before the fork, and the child puts them back with
 * alias_revoke_many (process_madvise, up to 1024 ranges a call).  With other threads alive, one of them may have marked an object
 * freed and not yet revoked it; then the core revokes again from its own
 * metadata, as before.
 */

/* linux/fs.h of Linux 6.14+; older headers lack them. */
struct host_page_region {
	uint64_t start, end, categories;
};
struct host_pm_scan_arg {
	uint64_t size, flags, start, end, walk_end, vec, vec_len, max_pages,
		category_inverted, category_mask, category_anyof_mask,
		return_mask;
};
#define HOST_PAGEMAP_SCAN _IOWR('f', 16, struct host_pm_scan_arg)
#define HOST_PAGE_IS_GUARD (1u << 8)
#define HOST_USER_END (((uint64_t)1 << 47) - DL_PAGE) /* TASK_SIZE_MAX */

/* The parent's guard markers at fork, as ranges for alias_revoke_many. */
static struct {
	struct dl_range *ranges; /* metadata pages, inherited by the child */
	size_t n, cap;
	bool taken; /* complete: the child reinstalls them, the core need not */
} host_guards;

/* PAGEMAP_SCAN's output, one batch at a time (used under the fork locks) */
static struct host_page_region host_scan_batch[1024];

static bool host_single_threaded(void)
{
	/* /proc/self/stat: field 20, the 18th after the ")" ending comm */
	char buf[1024];
	int fd = open("/proc/self/stat", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return false;
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return false;
	buf[n] = 0;
	char *p = strrchr(buf, ')');
	for (int field = 2; p && field < 20; field++)
		p = strchr(p + 1, ' ');
	return p && strtol(p + 1, NULL, 10) == 1;
}

static bool host_guards_reserve(size_t more)
{
	if (host_guards.n + more <= host_guards.cap)
		return true;
	size_t cap = host_guards.cap ? host_guards.cap : 8192;
	while (cap < host_guards.n + more)
		cap *= 2;
	struct dl_range *r = _dl_meta_pages(cap * sizeof(*r));
	if (!r)
		return false;
	if (host_guards.ranges) {
		memcpy(r, host_guards.ranges, host_guards.n * sizeof(*r));
		_dl_meta_unpages(host_guards.ranges,
				 host_guards.cap * sizeof(*r));
	}
	host_guards.ranges = r;
	host_guards.cap = cap;
	return true;
}

/* Every guard marker of the process, in address order. */
static bool host_guards_scan(void)
{
	int pagemap = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	if (pagemap < 0)
		return false;
	host_guards.n = 0;
	uint64_t from = DL_PAGE;
	bool ok = true;
	while (ok && from < HOST_USER_END) {
		struct host_pm_scan_arg arg = {
			.size = sizeof(arg),
			.start = from,
			.end = HOST_USER_END,
			.vec = (uintptr_t)host_scan_batch,
			.vec_len = sizeof(host_scan_batch) /
				   sizeof(host_scan_batch[0]),
			.category_mask = HOST_PAGE_IS_GUARD,
			.return_mask = HOST_PAGE_IS_GUARD,
		};
		long got = ioctl(pagemap, HOST_PAGEMAP_SCAN, &arg);
		if (got < 0) {
			ok = errno == EINTR;
			continue;
		}
		ok = host_guards_reserve((size_t)got) &&
		     arg.walk_end > from;
		for (long i = 0; ok && i < got; i++) {
			struct host_page_region *g = &host_scan_batch[i];
			host_guards.ranges[host_guards.n++] =
				(struct dl_range){g->start, g->end - g->start};
		}
		from = arg.walk_end;
	}
	close(pagemap);
	return ok;
}

void host_fork_prepare(void)
{
	_dl_lock(&host.canon_lock);
	_dl_lock(&host.alias_lock);
	_dl_lock(&host_budget.lock);
	_dl_lock(&host_maps_lock);
	if (pipe2(host.fork_pipe, O_CLOEXEC) != 0)
		host.fork_pipe[0] = host.fork_pipe[1] = -1;
	host_guards.taken =
		host.guard && host_single_threaded() && host_guards_scan();
}

void host_fork_parent(void)
{
	if (host.fork_pipe[0] >= 0) {
		char c;
		close(host.fork_pipe[1]);
		/* One byte when the copy is taken, EOF if the child died. */
		while (read(host.fork_pipe[0], &c, 1) < 0 && errno == EINTR)
			;
		close(host.fork_pipe[0]);
	}
	host.fork_pipe[0] = host.fork_pipe[1] = -1;
	_dl_unlock(&host_maps_lock);
	_dl_unlock(&host_budget.lock);
	_dl_unlock(&host.alias_lock);
	_dl_unlock(&host.canon_lock);
}

static bool host_copy_file(int from, int to, uintptr_t end)
{
	off_t pos = 0;
	while ((uintptr_t)pos < end) {
		off_t data = lseek(from, pos, SEEK_DATA);
		if (data < 0 || (uintptr_t)data >= end)
			break;
		off_t hole = lseek(from, data, SEEK_HOLE);
		if (hole < 0)
			return false;
		off_t in = data, out = data;
		while (in < hole) {
			ssize_t n = copy_file_range(from, &in, to, &out,
						    (size_t)(hole - in), 0);
			if (n <= 0) {
				if (n < 0 && errno == EINTR)
					continue;
				return false;
			}
		}
		pos = hole;
	}
	return true;
}

static bool host_remap_one(unsigned long start, unsigned long end, int prot,
			   unsigned long off, void *newfd)
{
	return mmap((void *)start, end - start, prot, MAP_SHARED | MAP_FIXED,
		    *(int *)newfd, (off_t)off) != MAP_FAILED;
}

bool host_fork_child(void)
{
	struct stat old;
	_dl_lock_reset(&host_maps_lock); /* the iterator below takes it */
	int newfd = (int)syscall(SYS_memfd_create, "dangless", MFD_CLOEXEC);
	bool ok = newfd >= 0 && fstat(host.fd, &old) == 0 &&
		  ftruncate(newfd, (off_t)HOST_CANON_SIZE) == 0 &&
		  host_copy_file(host.fd, newfd, host.extents.bump);
	if (host.fork_pipe[1] >= 0) {
		(void)!write(host.fork_pipe[1], "c", 1);
		close(host.fork_pipe[1]);
		close(host.fork_pipe[0]);
	}
	host.fork_pipe[0] = host.fork_pipe[1] = -1;
	if (!ok || !host_for_each_mapping(old.st_dev, old.st_ino,
					  host_remap_one, &newfd))
		_dl_fatal("fork: could not give the child a private copy of "
			  "the heap (%s); the child would share the parent's "
			  "memory, so it stops here",
			  strerror(errno));
	dup3(newfd, host.fd, O_CLOEXEC);
	close(newfd);
	host_batch_guard_fork_child();
	/* Guard markers lived in the old mappings' page tables. */
	bool core_rerevokes = host.guard;
	if (host_guards.taken && host_guards.n <= UINT32_MAX) {
		int err = host_alias_revoke_many(host_guards.ranges,
						 (unsigned)host_guards.n);
		if (err)
			_dl_fatal("fork: could not revoke freed memory again "
				  "in the child (%s)",
				  strerror(-err));
		core_rerevokes = false;
	}
	_dl_lock_reset(&host_budget.lock);
	_dl_lock_reset(&host.alias_lock);
	_dl_lock_reset(&host.canon_lock);
	return core_rerevokes;
}
