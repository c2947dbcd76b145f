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
 *
 * Files: host.c (start, the table), canon.c (canonical extents), alias.c
 * (alias space), limits.c (vm.max_map_count, `dangless check`), fork.c.
 */
#ifndef DANGLESS_BACKEND_HOST_H
#define DANGLESS_BACKEND_HOST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "../../backend.h"
#include "../../services.h"

#ifndef MADV_GUARD_INSTALL
#define MADV_GUARD_INSTALL 102
#endif

#define HOST_CANON_SIZE ((size_t)1 << 40)
#define HOST_BLOCK_SIZE ((size_t)1 << 40)

struct host_state {
	int fd;
	char *canon;              /* canonical view of the whole memfd */
	bool guard;               /* MADV_GUARD_INSTALL works here */
	/* What process_madvise takes to mean this process, or -1 when it
	 * does not install guards here (alias_revoke_many loops then). */
	int self_pidfd;
	bool self_pidfd_owned;    /* a pidfd_open fd: reopened after fork */
	dl_lock_t canon_lock;
	struct dl_extents extents; /* file offsets: free ones, and the bump */
	struct host_recent {      /* recently freed extents, reused by size */
		uintptr_t off, len;
	} recent[64];
	unsigned nrecent;
	dl_lock_t alias_lock;
	uintptr_t block_next, block_end;
	/* dangless_dedicate_vmem ranges not yet started; once any was given,
	 * no other alias space is reserved */
	uintptr_t dedicated[16][2];
	unsigned ndedicated;
	bool dedicated_only;
	int fork_pipe[2];
	long map_limit;           /* vm.max_map_count when last read; 0 before */
	bool map_refused;         /* alias_map said no to keep headroom */
};
extern struct host_state host;

/* Mappings at the last count of /proc/self/maps, and maps made since. */
struct host_budget {
	dl_lock_t lock;
	long counted;
	long since;
	bool ever_counted; /* the first count is deferred (limits.c) */
};
extern struct host_budget host_budget;

/* Held across fork by fork_prepare.  (host_for_each_mapping's buffer is on
 * the stack now and needs no lock; fork.c still takes this one.) */
extern dl_lock_t host_maps_lock;

/* canon.c */
void *host_canon_alloc(size_t len);
void host_canon_free(void *canon, size_t len);
void host_canon_discard(void *canon, size_t len);

/* alias.c */
void *host_alias_reserve(size_t len, size_t align);
int host_alias_dedicate(void *start, size_t len);
int host_alias_map(void *alias, void *canon, size_t len, bool populate);
int host_alias_revoke(void *alias, size_t len);
int host_alias_revoke_many(const struct dl_range *ranges, unsigned n);
/* Finds how process_madvise may name this process (host.self_pidfd). */
void host_probe_batch_guard(void);
void host_batch_guard_fork_child(void);
int host_alias_release(void *alias, size_t len);
bool host_revoke_splits(void);

/* limits.c */
long host_read_long(const char *path);
long host_count_mappings(void);
/* Counts `mappings` more against vm.max_map_count; false when a new alias
 * must be refused to keep the headroom. */
bool host_map_budget_take(long mappings);
/*
 * Calls fn for every mapping of the file (dev, ino), streaming
 * /proc/self/maps through a fixed buffer (no allocation: this also runs in
 * a child right after fork).  False if the file could not be read or fn
 * said so.
 */
bool host_for_each_mapping(dev_t dev, ino_t ino,
			   bool (*fn)(unsigned long start, unsigned long end,
				      int prot, unsigned long off, void *ctx),
			   void *ctx);
long host_count_alias_mappings(void);
bool host_memory_held(uint64_t *canonical, uint64_t *page_tables);
bool host_explain_enomem(char *buf, size_t len);
bool host_check(int fd);

/* fork.c */
void host_fork_prepare(void);
void host_fork_parent(void);
bool host_fork_child(void);

#endif
