/* SPDX-License-Identifier: MIT */
/*
 * libdune's own file descriptors (/dev/kvm, the VM, the vCPUs): moved high,
 * since the program expects low numbers free, and protected from the
 * guest's close/close_range/dup2 (e.g. a child closing every descriptor
 * before exec would otherwise take its vCPU away).
 */
#include "internal.h"

#include <fcntl.h>
#include <sys/resource.h>
#include <sys/syscall.h>

#define DUNE_FD_MAX 8192
static uint64_t dune_fd_bits[DUNE_FD_MAX / 64];

int dune_owns_fd(long fd)
{
	return fd >= 0 && fd < DUNE_FD_MAX &&
	       (__atomic_load_n(&dune_fd_bits[fd / 64], __ATOMIC_RELAXED) >>
		(fd % 64)) & 1;
}

static void fd_mark(int fd, int on)
{
	if (fd < 0 || fd >= DUNE_FD_MAX)
		return;
	if (on)
		__atomic_or_fetch(&dune_fd_bits[fd / 64], 1ULL << (fd % 64),
				  __ATOMIC_RELAXED);
	else
		__atomic_and_fetch(&dune_fd_bits[fd / 64], ~(1ULL << (fd % 64)),
				   __ATOMIC_RELAXED);
}

int dune_hide_fd(int fd)
{
	if (fd < 0)
		return fd;
	struct rlimit rl;
	long base = 768;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
		base = (long)rl.rlim_cur - 256;
	if (base > 4096)
		base = 4096;
	if (base < 3)
		base = 3;
	int nfd = (int)dune_sys3(SYS_fcntl, fd, F_DUPFD_CLOEXEC, base);
	if (nfd >= 0) {
		dune_sys1(SYS_close, fd);
		fd = nfd;
	} else {
		dune_sys3(SYS_fcntl, fd, F_SETFD, FD_CLOEXEC);
	}
	fd_mark(fd, 1);
	return fd;
}

void dune_close_fd(int fd)
{
	fd_mark(fd, 0);
	dune_sys1(SYS_close, fd);
}

/* close_range(2) around libdune's descriptors */
long dune_close_range_around(unsigned long first, unsigned long last,
			     unsigned long flags)
{
	if (flags & 4 /* CLOSE_RANGE_CLOEXEC: ours are cloexec already */)
		return dune_sys3(SYS_close_range, first, last, flags);
	unsigned long lo = first;
	long r = 0;
	for (unsigned long fd = first; fd <= last && fd < DUNE_FD_MAX; fd++) {
		if (!dune_owns_fd((long)fd))
			continue;
		if (fd > lo && (r = dune_sys3(SYS_close_range, lo, fd - 1, flags)))
			return r;
		lo = fd + 1;
	}
	if (lo <= last)
		r = dune_sys3(SYS_close_range, lo, last, flags);
	return r;
}
