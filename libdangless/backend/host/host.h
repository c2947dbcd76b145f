/* SPDX-License-Identifier: MIT */
/*
 * The `host` backend: aliases made by the host kernel, no privileges.
 *
 * Canonical memory is one sparse memfd, mapped once (the canonical view);
 * an alias is a second mapping of the same pages at an address in our
 * reservation, made by mremap with an old size of 0 from the canonical
 * view.  Revocation installs guard markers
 * (MADV_GUARD_INSTALL, Linux 6.15+ for shared file mappings): the page-table
 * entry becomes a marker that faults, and the kernel mapping is not split,
 * so revoking costs no entry against vm.max_map_count.  Older kernels get
 * mprotect(PROT_NONE), which works but splits mappings.
 *
 * Invariant H1: every address in a reservation block stays mapped (by an
 * alias or by PROT_NONE anonymous memory) for the life of the process, so
 * the kernel never hands it to anyone else.
 *
 * Invariant H2: the backend holds no file descriptor between calls.  The
 * memfd is closed once the canonical view maps it, and everything after
 * works on mappings: mremap duplicates the view into aliases, MADV_REMOVE
 * punches freed extents, and the object is known by (canon_dev, canon_ino)
 * in /proc/self/maps.  The program owns its whole descriptor table: it may
 * close, dup2 onto or close_range any number, and no descriptor number it
 * reuses can ever name our memory, nor ours its file.  Descriptors opened
 * inside a call (/proc files, a fork child's new memfd) are closed before
 * it returns.
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
/*
 * Invariant H3: every range of alias space (a reservation block, a
 * dedicated range) and the canonical view have HOST_GAP of inaccessible
 * PROT_NONE memory of ours on both sides, never handed out: an access
 * within 2 MiB of an alias page (p[-1] of the first object, p[n] past the
 * last page) faults and is reported, instead of reading or writing what the
 * kernel placed next to it (our metadata, the program's memory).  2 MiB is
 * a huge page: more than any one indexing mistake reaches in practice.
 */
#define HOST_GAP ((size_t)2 << 20)

struct host_state {
	char *canon;              /* canonical view of the whole memfd */
	dev_t canon_dev;          /* the memfd, as /proc/self/maps names it */
	ino_t canon_ino;
	bool guard;               /* MADV_GUARD_INSTALL works here */
	/* process_madvise installs guards on this process (PIDFD_SELF);
	 * without it alias_revoke_many loops over alias_revoke. */
	bool batch_guard;
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
/* A page-aligned range of the canonical view, duplicated at a fresh address
 * the kernel picks (for probes); MAP_FAILED on failure. */
void *host_canon_dup(size_t off, size_t len);
/* The live extents: [DL_PAGE, bump) less the free list and the recent
 * ones, in address order.  Runs under the fork locks (canon_lock held). */
void host_canon_for_each_live(void (*fn)(uintptr_t off, size_t len, void *ctx),
			      void *ctx);
/* filled is of no use here: memfd pages are 4 KiB (shmem huge pages are
 * off by default and never asked for). */
void *host_canon_alloc(size_t len, bool filled);
void host_canon_free(void *canon, size_t len);
void host_canon_discard(void *canon, size_t len);

/* alias.c */
void *host_alias_reserve(size_t len, size_t align);
int host_alias_dedicate(void *start, size_t len);
int host_alias_map(void *alias, void *canon, size_t len, size_t populate);
int host_alias_revoke(void *alias, size_t len);
int host_alias_revoke_many(const struct dl_range *ranges, unsigned n);
/* Finds how process_madvise may name this process (host.self_pidfd). */
void host_probe_batch_guard(void);
int host_alias_release(void *alias, size_t len);
int host_alias_reuse(void *alias, size_t len);
void host_own_memory(void (*fn)(uintptr_t start, size_t len, void *ctx),
		     void *ctx);
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
bool host_memory_held(const struct dl_proc_memory *proc,
		      struct dl_memory_held *m);
bool host_explain_enomem(char *buf, size_t len);
bool host_check(int fd);

/* fork.c */
void host_fork_prepare(void);
void host_fork_parent(void);
bool host_fork_child(void);

#endif
