/* SPDX-License-Identifier: MIT */
/*
 * The host backend: its state, start-up and its row of hooks (host.h).
 */
#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "host.h"

static int host_probe_guard(void)
{
	char *probe = host_canon_dup(0, DL_PAGE);
	if (probe == MAP_FAILED) {
		int err = errno;
		_dl_warn("host backend: cannot duplicate the canonical view "
			 "with mremap: %s", _dl_strerror(err));
		return -err;
	}
	host.guard = madvise(probe, DL_PAGE, MADV_GUARD_INSTALL) == 0;
	munmap(probe, DL_PAGE);
	host_probe_batch_guard();
	return 0;
}

/* The canonical view of a new memfd, which is closed again at once (H2). */
static int host_map_canon(void)
{
	/* Not MFD_NOEXEC_SEAL: programs may mprotect heap memory PROT_EXEC. */
	int fd = (int)syscall(SYS_memfd_create, "dangless", MFD_CLOEXEC);
	if (fd < 0) {
		int err = errno;
		_dl_warn("host backend: memfd_create failed: %s",
			 _dl_strerror(err));
		return -err;
	}
	struct stat st;
	int err = 0;
	if (ftruncate(fd, (off_t)HOST_CANON_SIZE) != 0 || fstat(fd, &st) != 0) {
		err = errno;
		_dl_warn("host backend: sizing the canonical memfd: %s",
			 _dl_strerror(err));
	} else {
		/* Inside gaps (H3): the view is placed in a reservation. */
		char *res = mmap(NULL, HOST_CANON_SIZE + 2 * HOST_GAP, PROT_NONE,
				 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
				 -1, 0);
		host.canon = res == MAP_FAILED
				     ? MAP_FAILED
				     : mmap(res + HOST_GAP, HOST_CANON_SIZE,
					    PROT_READ | PROT_WRITE,
					    MAP_SHARED | MAP_NORESERVE |
						    MAP_FIXED,
					    fd, 0);
		if (host.canon == MAP_FAILED) {
			err = errno;
			if (res != MAP_FAILED)
				munmap(res, HOST_CANON_SIZE + 2 * HOST_GAP);
			_dl_warn("host backend: cannot map %zu GiB of "
				 "canonical view: %s",
				 HOST_CANON_SIZE >> 30, _dl_strerror(err));
		}
		host.canon_dev = st.st_dev;
		host.canon_ino = st.st_ino;
	}
	close(fd);
	return -err;
}

static int host_init(void)
{
	int err = host_map_canon();
	if (!err)
		err = host_probe_guard();
	if (err)
		return err;
	/* The limit and the count are read when first needed (limits.c). */
	/* Offset 0 was touched by the probe's mapping only; skip it anyway. */
	host.extents.bump = DL_PAGE;
	host.extents.end = HOST_CANON_SIZE;
	if (!host.guard)
		_dl_info("host backend: no guard regions on this kernel "
			 "(Linux < 6.15); revoking with mprotect, which uses "
			 "more kernel mappings");
	return 0;
}

const struct dl_backend _dl_backend_host = {
	.init = host_init,
	.canon_alloc = host_canon_alloc,
	.canon_free = host_canon_free,
	.canon_discard = host_canon_discard,
	.alias_reserve = host_alias_reserve,
	.alias_dedicate = host_alias_dedicate,
	.alias_map = host_alias_map,
	.alias_revoke = host_alias_revoke,
	.alias_revoke_many = host_alias_revoke_many,
	.alias_release = host_alias_release,
	.alias_reuse = host_alias_reuse,
	.own_memory = host_own_memory,
	.fork_prepare = host_fork_prepare,
	.fork_parent = host_fork_parent,
	.fork_child = host_fork_child,
	.count_alias_mappings = host_count_alias_mappings,
	.memory_held = host_memory_held,
	.explain_enomem = host_explain_enomem,
	.check = host_check,
	.revoke_splits = host_revoke_splits,
};
