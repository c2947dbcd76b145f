/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <sys/sysinfo.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "host.h"

/*
 * fork: memfd pages are shared across fork(), so the child moves to a copy: a
 * fresh memfd with the same contents, mapped at every address where the
 * old one was.  The parent waits in fork() until the copy is taken so that
 * it cannot change the heap under it; it waits on a futex in a shared page,
 * not a pipe, so that no descriptor of ours is open in the parent while its
 * other threads run (H2).  vfork/posix_spawn run no atfork handlers and pay
 * nothing.
 *
 * The child reads the old memfd through the canonical view (it has no
 * descriptor for it, H2).  A page the view cannot show to mincore may be a
 * hole or a page the kernel swapped out: without swap it is a hole, and
 * holes are skipped, so the copy costs what the heap holds; with swap
 * configured every page of the live extents is copied, which may give
 * memory to holes in them (parent's and child's alike) but loses nothing.
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

/*
 * The handshake page, shared with every child (MAP_SHARED|MAP_ANONYMOUS):
 * the child writes its pid, copies, then sets copied and wakes the parent.
 */
struct host_fork_sync {
	_Atomic uint32_t copied;
	_Atomic pid_t child;
};
static struct host_fork_sync *host_sync;

static bool host_sync_ready(void)
{
	if (host_sync)
		return true;
	void *p = mmap(NULL, DL_PAGE, PROT_READ | PROT_WRITE,
		       MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return false;
	host_sync = p;
	return true;
}

void host_fork_prepare(void)
{
	_dl_lock(&host.canon_lock);
	_dl_lock(&host.alias_lock);
	_dl_lock(&host_budget.lock);
	_dl_lock(&host_maps_lock);
	if (host_sync_ready()) {
		atomic_store(&host_sync->copied, 0);
		atomic_store(&host_sync->child, 0);
	}
	host_guards.taken =
		host.guard && host_single_threaded() && host_guards_scan();
}

/* The child ended (or was reaped) without saying it copied. */
static bool host_child_gone(pid_t pid)
{
	if (kill(pid, 0) != 0 && errno == ESRCH)
		return true;
	siginfo_t si = {0};
	return waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT) == 0 &&
	       si.si_pid == pid;
}

static void host_wait_for_copy(void)
{
	/* A child that has not said its pid after this long never ran its
	 * handler (killed at birth): nothing will copy. */
	const unsigned pidless_rounds = 200; /* 10 s */
	for (unsigned round = 0; !atomic_load(&host_sync->copied); round++) {
		struct timespec tick = {0, 50 * 1000 * 1000};
		syscall(SYS_futex, &host_sync->copied, FUTEX_WAIT, 0, &tick,
			NULL, 0);
		pid_t child = atomic_load(&host_sync->child);
		if (child > 0 ? host_child_gone(child) : round >= pidless_rounds)
			return;
	}
}

void host_fork_parent(void)
{
	if (host_sync)
		host_wait_for_copy();
	_dl_unlock(&host_maps_lock);
	_dl_unlock(&host_budget.lock);
	_dl_unlock(&host.alias_lock);
	_dl_unlock(&host.canon_lock);
}

struct host_copy {
	int to;             /* the child's new memfd */
	bool holes_known;   /* not in memory means a hole: no swap here */
	bool ok;
};

static bool host_no_swap(void)
{
	struct sysinfo si;
	return sysinfo(&si) == 0 && si.totalswap == 0;
}

static bool host_write_at(int fd, const char *from, size_t len, off_t at)
{
	/* Pages allocated in one call first: writing into holes allocates
	 * them one at a time, 50x slower on this kind of VM. */
	fallocate(fd, 0, at, (off_t)len);
	while (len) {
		ssize_t n = pwrite(fd, from, len, at);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return false;
		from += n, len -= (size_t)n, at += n;
	}
	return true;
}

/* One live extent, through the canonical view, in runs of pages that
 * mincore finds in memory (or all of them, when holes are not known). */
static void host_copy_extent(uintptr_t off, size_t len, void *ctx)
{
	struct host_copy *c = ctx;
	unsigned char vec[4096];
	while (c->ok && len) {
		size_t pages = len / DL_PAGE < sizeof(vec) ? len / DL_PAGE
							   : sizeof(vec);
		if (!c->holes_known ||
		    mincore(host.canon + off, pages * DL_PAGE, vec) != 0)
			memset(vec, 1, pages);
		for (size_t i = 0; c->ok && i < pages;) {
			size_t j = i;
			while (j < pages && (vec[j] & 1) == (vec[i] & 1))
				j++;
			if (vec[i] & 1)
				c->ok = host_write_at(c->to,
						      host.canon + off + i * DL_PAGE,
						      (j - i) * DL_PAGE,
						      (off_t)(off + i * DL_PAGE));
			i = j;
		}
		off += pages * DL_PAGE;
		len -= pages * DL_PAGE;
	}
}

static bool host_copy_heap(int to)
{
	struct host_copy c = {to, host_no_swap(), true};
	host_canon_for_each_live(host_copy_extent, &c);
	/* Swap turned on while we copied: a skipped page may have been in
	 * it.  Copy again, all of it. */
	if (c.ok && c.holes_known && !host_no_swap()) {
		c.holes_known = false;
		host_canon_for_each_live(host_copy_extent, &c);
	}
	return c.ok;
}

static bool host_remap_one(unsigned long start, unsigned long end, int prot,
			   unsigned long off, void *newfd)
{
	return mmap((void *)start, end - start, prot, MAP_SHARED | MAP_FIXED,
		    *(int *)newfd, (off_t)off) != MAP_FAILED;
}

bool host_fork_child(void)
{
	if (host_sync)
		atomic_store(&host_sync->child, getpid());
	_dl_lock_reset(&host_maps_lock); /* the iterator below takes it */
	/* The only descriptor of ours: closed before the child goes on (H2);
	 * no other thread runs here yet. */
	int newfd = (int)syscall(SYS_memfd_create, "dangless", MFD_CLOEXEC);
	struct stat st;
	bool ok = newfd >= 0 && ftruncate(newfd, (off_t)HOST_CANON_SIZE) == 0 &&
		  fstat(newfd, &st) == 0 && host_copy_heap(newfd);
	int err = errno;
	if (host_sync) {
		atomic_store(&host_sync->copied, 1);
		syscall(SYS_futex, &host_sync->copied, FUTEX_WAKE, 1, NULL,
			NULL, 0);
	}
	if (!ok || !host_for_each_mapping(host.canon_dev, host.canon_ino,
					  host_remap_one, &newfd))
		_dl_fatal("fork: could not give the child a private copy of "
			  "the heap (%s); the child would share the parent's "
			  "memory, so it stops here",
			  _dl_strerror(ok ? errno : err));
	host.canon_dev = st.st_dev;
	host.canon_ino = st.st_ino;
	close(newfd);
	if (host_sync) {
		/* Ours was the parent's page: our own children get a new one. */
		munmap(host_sync, DL_PAGE);
		host_sync = NULL;
	}
	/* Guard markers lived in the old mappings' page tables. */
	bool core_rerevokes = host.guard;
	if (host_guards.taken && host_guards.n <= UINT32_MAX) {
		int rerr = host_alias_revoke_many(host_guards.ranges,
						  (unsigned)host_guards.n);
		if (rerr)
			_dl_fatal("fork: could not revoke freed memory again "
				  "in the child (%s)",
				  _dl_strerror(-rerr));
		core_rerevokes = false;
	}
	_dl_lock_reset(&host_budget.lock);
	_dl_lock_reset(&host.alias_lock);
	_dl_lock_reset(&host.canon_lock);
	return core_rerevokes;
}
