/* SPDX-License-Identifier: MIT */
/*
 * Counting mappings against vm.max_map_count, explaining ENOMEM, and what
 * `dangless check` says of this host.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "host.h"

/*
 * Leave the program room under vm.max_map_count (thread stacks, dlopen,
 * its own mmaps, glibc's heap for fallback=1): aliases may take the limit
 * less a headroom of 1/16 of it, at least 1024.  Without guard markers
 * (Linux < 6.15) every revocation may split a mapping in three, and a
 * revocation must never fail for want of one: there the headroom is a
 * quarter of the limit, at least 4096, and revocations count too, so that
 * new aliases are refused (a report, or fallback=1) while revocations still
 * have room.  Mappings are counted from /proc/self/maps (the kernel merges
 * neighbouring aliases, so our own tally would be useless), but only when
 * what was made since the last count could have reached the line.
 */
static long host_headroom(long limit)
{
	if (host.guard)
		return limit / 16 > 1024 ? limit / 16 : 1024;
	return limit / 4 > 4096 ? limit / 4 : 4096;
}

/*
 * The first count waits until this many mappings were taken: reading
 * /proc/self/maps and the limit is ~70 us of every process's start-up,
 * and most short-lived ones never map that many.  It is safe because
 * the wait is at most 1/16 of the smallest headroom (1024): what a program
 * starting at the headroom's edge loses is 64 mappings of its own room,
 * and only one that starts within 64 mappings of the limit itself (which
 * its own next mmaps would hit anyway) could see an alias refused by the
 * kernel (ENOMEM, reported as ever) instead of by us.
 */
#define HOST_UNCOUNTED_MAPS 64

bool host_map_budget_take(long mappings)
{
	_dl_lock(&host_budget.lock);
	host_budget.since += mappings;
	long headroom = host_headroom(host.map_limit);
	long expected = host_budget.counted + host_budget.since + headroom;
	bool recount = host_budget.ever_counted
			       ? host.map_limit > 0 && expected >= host.map_limit
			       : host_budget.since >= HOST_UNCOUNTED_MAPS;
	if (recount)
		host_budget.ever_counted = true;
	_dl_unlock(&host_budget.lock);
	if (!recount)
		return true;
	/*
	 * Near the limit, or the first time: read the limit (it may have
	 * been raised) and count the real mappings, with no lock held across
	 * the reads, so other threads' maps do not wait for /proc.  Two threads may count at
	 * once; each count is a true reading, and maps made while one runs
	 * are at most one per other thread, far inside the headroom.
	 */
	long limit = host_read_long("/proc/sys/vm/max_map_count");
	long counted = host_count_mappings();
	headroom = host_headroom(limit);
	bool ok = limit <= 0 || counted + headroom < limit;
	_dl_lock(&host_budget.lock);
	host.map_limit = limit;
	host_budget.counted = counted;
	host_budget.since = 0;
	host.map_refused |= !ok;
	_dl_unlock(&host_budget.lock);
	return ok;
}

/*
 * The buffer is on the stack (it holds one line at least: a path is at
 * most PATH_MAX), so that no lock is held across the reads of /proc.
 */
bool host_for_each_mapping(dev_t dev, ino_t ino,
				  bool (*fn)(unsigned long start,
					     unsigned long end, int prot,
					     unsigned long off, void *ctx),
				  void *ctx)
{
	int maps = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
	if (maps < 0)
		return false;
	char buf[8192];
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
		if (have == sizeof(buf) - 1) {
			/* A line longer than the buffer: the kernel prints
			 * no such line; give up rather than misread one. */
			ok = false;
			break;
		}
		memmove(buf, line, have);
	}
	close(maps);
	return ok;
}

long host_read_long(const char *path)
{
	char buf[32] = {0};
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	return n > 0 ? strtol(buf, NULL, 10) : -1;
}

long host_count_mappings(void)
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

long host_count_alias_mappings(void)
{
	long n = 0;
	if (!host_for_each_mapping(host.canon_dev, host.canon_ino,
				   host_count_one, &n))
		return -1;
	return n - 1; /* not the canonical view */
}

/* The memfd's pages in memory, each once, from mincore on the canonical
 * view (it reports the file's pages, however they were touched). */
/*
 * The memfd's pages, each once (RSS counts a page once per mapping that
 * maps it; mincore of the memfd's whole mapping at host.canon sees every
 * page the memfd holds, mapped or not); VmPTE is what the page tables of
 * all those aliases cost.  A page is reached through its aliases only (the
 * core never touches host.canon), so one whose aliases are all revoked is
 * in no page table and not in Pss: those are the memfd's pages less the
 * process's shared memory in Pss (which counts any other shared memory of
 * the program too: then this reads low).
 */
bool host_memory_held(const struct dl_proc_memory *proc,
		      struct dl_memory_held *m)
{
	_dl_lock(&host.canon_lock);
	uintptr_t end = host.extents.bump;
	_dl_unlock(&host.canon_lock);
	if (!_dl_resident_bytes((uintptr_t)host.canon, end, &m->canonical))
		return false;
	m->page_tables = proc->vm_pte;
	m->canonical_unmapped = m->canonical > proc->pss_shmem
					? m->canonical - proc->pss_shmem
					: 0;
	return true;
}

bool host_explain_enomem(char *buf, size_t len)
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

static void host_say(int fd, const char *fmt, long v)
{
	char line[512];
	struct dl_buf b = {line, 0, sizeof(line)};
	for (const char *f = fmt; *f; f++) {
		if (f[0] == '%' && f[1] == 'l') {
			if (v < 0)
				_dl_buf_str(&b, "unknown");
			else
				_dl_buf_dec(&b, (uint64_t)v);
			f++;
		} else {
			_dl_buf_char(&b, *f);
		}
	}
	_dl_write_all(fd, line, b.len);
}

/* What `dangless check` says of this host; works before init. */
bool host_check(int fd)
{
	int memfd = (int)syscall(SYS_memfd_create, "dangless-check",
				 MFD_CLOEXEC);
	if (memfd < 0 || ftruncate(memfd, (off_t)DL_PAGE) != 0) {
		host_say(fd, "  memfd_create failed: the host backend needs "
			     "Linux 3.17+ with memfd (errno %l)\n", errno);
		if (memfd >= 0)
			close(memfd);
		return false;
	}
	char *p = mmap(NULL, DL_PAGE, PROT_READ | PROT_WRITE, MAP_SHARED,
		       memfd, 0);
	close(memfd);
	char *alias = p == MAP_FAILED ? MAP_FAILED
				      : mremap(p, 0, DL_PAGE, MREMAP_MAYMOVE);
	if (alias == MAP_FAILED) {
		host_say(fd, "  mremap cannot duplicate a shared mapping here "
			     "(errno %l): the host backend makes its aliases "
			     "so, and cannot run\n", errno);
		if (p != MAP_FAILED)
			munmap(p, DL_PAGE);
		return false;
	}
	bool guard = madvise(alias, DL_PAGE, MADV_GUARD_INSTALL) == 0;
	munmap(alias, DL_PAGE);
	munmap(p, DL_PAGE);
	host_say(fd, guard ? "  revocation: guard regions (MADV_GUARD_INSTALL):"
			     " revoking costs no kernel mapping\n"
			   : "  revocation: mprotect (kernel before 6.15): every"
			     " revoked alias splits a mapping, so the mapping "
			     "limit comes sooner\n",
		 0);
	long limit = host_read_long("/proc/sys/vm/max_map_count");
	host_say(fd, "  vm.max_map_count: %l", limit);
	if (limit > 0)
		host_say(fd, " (room for roughly %l live small allocations at "
			     "32 per mapping",
			 limit * 32);
	if (limit > 0)
		host_say(fd, ", %l when every live object holds a mapping of "
			     "its own)",
			 limit);
	host_say(fd, "\n", 0);
	if (limit > 0 && limit < 1000000)
		host_say(fd, "  hint: programs with millions of live objects "
			     "want more: sysctl -w vm.max_map_count=4000000, "
			     "or dangless-setup (as root)\n",
			 0);
	return true;
}
