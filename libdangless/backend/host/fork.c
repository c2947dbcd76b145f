/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
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
 */
void host_fork_prepare(void)
{
	_dl_lock(&host.canon_lock);
	_dl_lock(&host.alias_lock);
	_dl_lock(&host_budget.lock);
	_dl_lock(&host_maps_lock);
	if (pipe2(host.fork_pipe, O_CLOEXEC) != 0)
		host.fork_pipe[0] = host.fork_pipe[1] = -1;
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
	host_batch_guard_fork_child();
	_dl_lock_reset(&host_budget.lock);
	_dl_lock_reset(&host.alias_lock);
	_dl_lock_reset(&host.canon_lock);
	/* Guard markers lived in the old mappings' page tables. */
	return host.guard;
}
