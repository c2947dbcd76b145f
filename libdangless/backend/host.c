/* SPDX-License-Identifier: MIT */
/*
 * The `host` backend: aliases made by the host kernel, no privileges.
 *
 * Canonical memory is one sparse memfd, mapped once (the canonical view);
 * an alias is a MAP_SHARED|MAP_FIXED mapping of the same file offsets at an
 * address in our reservation.  Revocation installs guard markers
 * (MADV_GUARD_INSTALL, Linux 6.15+ for shared file mappings): the page-table
 * entry becomes a marker that faults, and the kernel mapping is not split,
 * so revoking costs no entry against vm.max_map_count.  Older kernels get
 * mprotect(PROT_NONE), which works but splits mappings.
 *
 * Invariant H1: every address in a reservation block stays mapped (by an
 * alias or by PROT_NONE anonymous memory) for the life of the process, so
 * the kernel never hands it to anyone else.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "../internal.h"

#ifndef MADV_GUARD_INSTALL
#define MADV_GUARD_INSTALL 102
#endif

#define HOST_CANON_SIZE ((size_t)1 << 40)
#define HOST_BLOCK_SIZE ((size_t)1 << 40)

struct host_extent {
	uintptr_t off, len;
	struct host_extent *next;
};

static struct {
	int fd;
	char *canon;              /* canonical view of the whole memfd */
	bool guard;               /* MADV_GUARD_INSTALL works here */
	dl_lock_t canon_lock;
	uintptr_t canon_bump;     /* file offsets below are in use or free-listed */
	struct host_extent *free_extents; /* address-ordered, coalesced */
	uintptr_t run_stack[256]; /* freed run-sized extents, for quick reuse */
	unsigned run_stack_n;
	dl_lock_t alias_lock;
	uintptr_t block_next, block_end;
	/* dangless_dedicate_vmem ranges not yet started; once any was given,
	 * no other alias space is reserved */
	uintptr_t dedicated[16][2];
	unsigned ndedicated;
	bool dedicated_only;
	int fork_pipe[2];
	long map_limit;           /* vm.max_map_count when last read */
	bool map_refused;         /* alias_map said no to keep headroom */
} host = {.fd = -1, .fork_pipe = {-1, -1}};

/* Mappings at the last count of /proc/self/maps, and maps made since. */
static struct {
	dl_lock_t lock;
	long counted;
	long since;
} host_budget;

/* host_for_each_mapping's buffer; held across fork by fork_prepare. */
static dl_lock_t host_maps_lock;

static long host_read_long(const char *path);
static long host_count_mappings(void);

static struct dl_pool host_extent_pool = {
	.block = sizeof(struct host_extent), .name = "host extents"};

static int host_probe_guard(void)
{
	char *probe = mmap(NULL, DL_PAGE, PROT_READ | PROT_WRITE, MAP_SHARED,
			   host.fd, 0);
	if (probe == MAP_FAILED)
		return -errno;
	host.guard = madvise(probe, DL_PAGE, MADV_GUARD_INSTALL) == 0;
	munmap(probe, DL_PAGE);
	return 0;
}

static int host_init(void)
{
	/* Not MFD_NOEXEC_SEAL: programs may mprotect heap memory PROT_EXEC. */
	host.fd = (int)syscall(SYS_memfd_create, "dangless", MFD_CLOEXEC);
	if (host.fd < 0) {
		int err = errno;
		_dl_warn("host backend: memfd_create failed: %s",
			 strerror(err));
		return -err;
	}
	if (ftruncate(host.fd, (off_t)HOST_CANON_SIZE) != 0) {
		int err = errno;
		_dl_warn("host backend: ftruncate of the canonical memfd: %s",
			 strerror(err));
		return -err;
	}
	host.canon = mmap(NULL, HOST_CANON_SIZE, PROT_READ | PROT_WRITE,
			  MAP_SHARED | MAP_NORESERVE, host.fd, 0);
	if (host.canon == MAP_FAILED) {
		int err = errno;
		_dl_warn("host backend: cannot map %zu GiB of canonical view: %s",
			 HOST_CANON_SIZE >> 30, strerror(err));
		return -err;
	}
	int err = host_probe_guard();
	if (err)
		return err;
	host.map_limit = host_read_long("/proc/sys/vm/max_map_count");
	host_budget.counted = host_count_mappings();
	/* Offset 0 was touched by the probe's mapping only; skip it anyway. */
	host.canon_bump = DL_PAGE;
	if (!host.guard && _dl_opt.verbosity)
		_dl_warn("host backend: no guard regions on this kernel "
			 "(Linux < 6.15); revoking with mprotect, which uses "
			 "more kernel mappings");
	return 0;
}

/* ---- canonical extents ---- */

static void host_punch(uintptr_t off, size_t len)
{
	/* Reads after this see zeros; the memory goes back to the kernel. */
	if (fallocate(host.fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
		      (off_t)off, (off_t)len) == 0)
		DL_STAT_ADD(canonical_bytes_released, len);
}

static uintptr_t host_take_extent(size_t len)
{
	struct host_extent **link = &host.free_extents;
	for (struct host_extent *e = *link; e; link = &e->next, e = *link) {
		if (e->len < len)
			continue;
		uintptr_t off = e->off;
		e->off += len;
		e->len -= len;
		if (e->len == 0) {
			*link = e->next;
			_dl_pool_free(&host_extent_pool, e);
		}
		return off;
	}
	if (len > HOST_CANON_SIZE - host.canon_bump)
		return UINTPTR_MAX;
	uintptr_t off = host.canon_bump;
	host.canon_bump += len;
	return off;
}

static void host_give_extent(uintptr_t off, size_t len)
{
	struct host_extent **link = &host.free_extents, *prev = NULL;
	while (*link && (*link)->off < off) {
		prev = *link;
		link = &(*link)->next;
	}
	struct host_extent *next = *link;
	if (prev && prev->off + prev->len == off) {
		prev->len += len;
		if (next && prev->off + prev->len == next->off) {
			prev->len += next->len;
			prev->next = next->next;
			_dl_pool_free(&host_extent_pool, next);
		}
		return;
	}
	if (next && off + len == next->off) {
		next->off = off;
		next->len += len;
		return;
	}
	struct host_extent *e = _dl_pool_alloc(&host_extent_pool);
	if (!e)
		return; /* leaks the range: it stays punched and unused */
	*e = (struct host_extent){off, len, next};
	*link = e;
}

static void *host_canon_alloc(size_t len)
{
	const size_t run_len = DL_RUN_PAGES * DL_PAGE;
	uintptr_t off = UINTPTR_MAX;
	_dl_lock(&host.canon_lock);
	if (len == run_len && host.run_stack_n)
		off = host.run_stack[--host.run_stack_n];
	else
		off = host_take_extent(len);
	_dl_unlock(&host.canon_lock);
	if (off == UINTPTR_MAX)
		return NULL;
	return host.canon + off;
}

static void host_canon_discard(void *canon, size_t len)
{
	host_punch((uintptr_t)((char *)canon - host.canon), len);
}

static void host_canon_free(void *canon, size_t len)
{
	const size_t run_len = DL_RUN_PAGES * DL_PAGE;
	uintptr_t off = (uintptr_t)((char *)canon - host.canon);
	host_punch(off, len);
	_dl_lock(&host.canon_lock);
	if (len == run_len && host.run_stack_n < 256)
		host.run_stack[host.run_stack_n++] = off;
	else
		host_give_extent(off, len);
	_dl_unlock(&host.canon_lock);
}

/* ---- alias space ---- */

static void *host_alias_reserve(size_t len, size_t align)
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
			char *b = _dl_os_reserve(block);
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

static int host_alias_dedicate(void *start, size_t len)
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

/*
 * Leave the program room under vm.max_map_count (thread stacks, dlopen,
 * its own mmaps, glibc's heap for fallback=1): aliases may take the limit
 * less a headroom of 1/16 of it, at least 1024.  Mappings are counted from
 * /proc/self/maps (the kernel merges neighbouring aliases, so our own tally
 * would be useless), but only when the maps made since the last count
 * could have reached the line.
 */
static bool host_within_map_budget(void)
{
	bool ok = true;
	_dl_lock(&host_budget.lock);
	long headroom = host.map_limit / 16 > 1024 ? host.map_limit / 16 : 1024;
	if (host.map_limit > 0 &&
	    host_budget.counted + ++host_budget.since + headroom >=
		    host.map_limit) {
		/* The limit may have been raised since we read it. */
		host.map_limit = host_read_long("/proc/sys/vm/max_map_count");
		headroom = host.map_limit / 16 > 1024 ? host.map_limit / 16
						      : 1024;
		host_budget.counted = host_count_mappings();
		host_budget.since = 0;
		ok = host.map_limit <= 0 ||
		     host_budget.counted + headroom < host.map_limit;
		host.map_refused |= !ok;
	}
	_dl_unlock(&host_budget.lock);
	return ok;
}

static int host_alias_map(void *alias, void *canon, size_t len,
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

static int host_alias_revoke(void *alias, size_t len)
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

static int host_alias_release(void *alias, size_t len)
{
	/* Anonymous PROT_NONE merges back into the reservation (H1). */
	return host_reprotect(alias, len);
}

/* ---- fork ----
 * memfd pages are shared across fork(), so the child moves to a copy: a
 * fresh memfd with the same contents, mapped at every address where the
 * old one was.  The parent waits in fork() until the copy is taken so that
 * it cannot change the heap under it.  vfork/posix_spawn run no atfork
 * handlers and pay nothing.
 */
static void host_fork_prepare(void)
{
	_dl_lock(&host.canon_lock);
	_dl_lock(&host.alias_lock);
	_dl_lock(&host_budget.lock);
	_dl_lock(&host_maps_lock);
	if (pipe2(host.fork_pipe, O_CLOEXEC) != 0)
		host.fork_pipe[0] = host.fork_pipe[1] = -1;
}

static void host_fork_parent(void)
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

/*
 * Calls fn for every mapping of the file (dev, ino), streaming
 * /proc/self/maps through a fixed buffer (no allocation: this also runs in
 * a child right after fork).  False if the file could not be read or fn
 * said so.
 */
static bool host_for_each_mapping(dev_t dev, ino_t ino,
				  bool (*fn)(unsigned long start,
					     unsigned long end, int prot,
					     unsigned long off, void *ctx),
				  void *ctx)
{
	int maps = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
	if (maps < 0)
		return false;
	static char buf[1 << 16];
	_dl_lock(&host_maps_lock);
	size_t have = 0;
	bool ok = true;
	for (;;) {
		ssize_t n = read(maps, buf + have, sizeof(buf) - have - 1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		have += (size_t)n;
		buf[have] = 0;
		char *line = buf, *nl;
		while ((nl = memchr(line, '\n', have - (size_t)(line - buf)))) {
			*nl = 0;
			unsigned long start, end, off, maj, min, inode;
			char perms[8];
			if (sscanf(line, "%lx-%lx %7s %lx %lx:%lx %lu", &start,
				   &end, perms, &off, &maj, &min, &inode) == 7 &&
			    inode == ino &&
			    makedev((unsigned)maj, (unsigned)min) == dev) {
				int prot = (perms[0] == 'r' ? PROT_READ : 0) |
					   (perms[1] == 'w' ? PROT_WRITE : 0);
				ok &= fn(start, end, prot, off, ctx);
			}
			line = nl + 1;
		}
		have -= (size_t)(line - buf);
		memmove(buf, line, have);
	}
	_dl_unlock(&host_maps_lock);
	close(maps);
	return ok;
}

static bool host_remap_one(unsigned long start, unsigned long end, int prot,
			   unsigned long off, void *newfd)
{
	return mmap((void *)start, end - start, prot, MAP_SHARED | MAP_FIXED,
		    *(int *)newfd, (off_t)off) != MAP_FAILED;
}

static bool host_fork_child(void)
{
	struct stat old;
	_dl_lock_reset(&host_maps_lock); /* the iterator below takes it */
	int newfd = (int)syscall(SYS_memfd_create, "dangless", MFD_CLOEXEC);
	bool ok = newfd >= 0 && fstat(host.fd, &old) == 0 &&
		  ftruncate(newfd, (off_t)HOST_CANON_SIZE) == 0 &&
		  host_copy_file(host.fd, newfd, host.canon_bump);
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
	_dl_lock_reset(&host_budget.lock);
	_dl_lock_reset(&host.alias_lock);
	_dl_lock_reset(&host.canon_lock);
	/* Guard markers lived in the old mappings' page tables. */
	return host.guard;
}

static long host_read_long(const char *path)
{
	char buf[32] = {0};
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	return n > 0 ? strtol(buf, NULL, 10) : -1;
}

static long host_count_mappings(void)
{
	int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	char buf[4096];
	long lines = 0;
	ssize_t n;
	while ((n = read(fd, buf, sizeof(buf))) > 0)
		for (ssize_t i = 0; i < n; i++)
			lines += buf[i] == '\n';
	close(fd);
	return lines;
}

static bool host_count_one(unsigned long start, unsigned long end, int prot,
			   unsigned long off, void *count)
{
	(void)start, (void)end, (void)prot, (void)off;
	++*(long *)count;
	return true;
}

static long host_count_alias_mappings(void)
{
	struct stat st;
	long n = 0;
	if (fstat(host.fd, &st) != 0 ||
	    !host_for_each_mapping(st.st_dev, st.st_ino, host_count_one, &n))
		return -1;
	return n - 1; /* not the canonical view */
}

static bool host_explain_enomem(char *buf, size_t len)
{
	long limit = host_read_long("/proc/sys/vm/max_map_count");
	long now = host_count_mappings();
	if (limit <= 0 || now < 0 || (!host.map_refused && now + 16 < limit))
		return false;
	struct dl_buf b = {buf, 0, len};
	_dl_buf_str(&b, "the process has ");
	_dl_buf_dec(&b, (uint64_t)now);
	_dl_buf_str(&b, " memory mappings and vm.max_map_count is ");
	_dl_buf_dec(&b, (uint64_t)limit);
	if (host.map_refused)
		_dl_buf_str(&b, " (Dangless keeps 1/16 of it for the program)");
	_dl_buf_str(&b, ". Raise the limit (as root): sysctl -w "
			"vm.max_map_count=");
	_dl_buf_dec(&b, (uint64_t)(limit < 1000000 ? 4000000 : limit * 4));
	_dl_buf_str(&b, ", or once for good: dangless-setup (writes "
			"/etc/sysctl.d/60-dangless.conf)");
	return true;
}

const struct dl_backend _dl_backend_host = {
	.name = "host",
	.init = host_init,
	.canon_alloc = host_canon_alloc,
	.canon_free = host_canon_free,
	.canon_discard = host_canon_discard,
	.alias_reserve = host_alias_reserve,
	.alias_dedicate = host_alias_dedicate,
	.alias_map = host_alias_map,
	.alias_revoke = host_alias_revoke,
	.alias_release = host_alias_release,
	.fork_prepare = host_fork_prepare,
	.fork_parent = host_fork_parent,
	.fork_child = host_fork_child,
	.count_alias_mappings = host_count_alias_mappings,
	.explain_enomem = host_explain_enomem,
};
