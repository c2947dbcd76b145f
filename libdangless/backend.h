/* SPDX-License-Identifier: MIT */
/*
 * The backend seam: everything the allocator core needs from whatever makes
 * its aliases (the host kernel through memfd + mmap, or guest page tables
 * under libdune).  The core includes no OS header beyond libc's; it sees
 * addresses and page counts only.
 *
 * Contract, for every call below:
 *  - addresses and lengths are page-aligned, lengths non-zero;
 *  - an int result is 0 or a negative errno, and a failing call leaves the
 *    range as it was;
 *  - alias ranges are only ever given to alias_map once (the core never
 *    reuses alias address space), and canonical ranges passed to alias_map
 *    lie inside memory that canon_alloc returned and that is not yet freed.
 */
#ifndef DANGLESS_BACKEND_H
#define DANGLESS_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct dl_backend {
	const char *name;

	/* Starts the backend.  0, or -errno with a message already printed. */
	int (*init)(void);

	/*
	 * Canonical memory: `len` bytes, page-aligned, zero-filled, readable
	 * and writable at the returned address.  NULL when exhausted.
	 */
	void *(*canon_alloc)(size_t len);
	/* Gives the pages back; the range may be handed out again later. */
	void (*canon_free)(void *canon, size_t len);
	/* Gives the pages back but keeps the range: it reads zero again. */
	void (*canon_discard)(void *canon, size_t len);

	/*
	 * Alias address space: a range of `len` bytes aligned to `align` (a
	 * power of two, at least a page) that nothing else in the process
	 * will ever be given.  Accesses fault until alias_map.  NULL when the
	 * address space is exhausted.
	 */
	void *(*alias_reserve)(size_t len, size_t align);
	/*
	 * From now on alias_reserve carves only dedicated ranges, in the order
	 * given, and fails once they are used up.  The range must not be in
	 * use.  0, -EEXIST if something is mapped there, -EINVAL if it is not
	 * page-aligned or not user space, -ENOSPC after 16 ranges.
	 */
	int (*alias_dedicate)(void *start, size_t len);
	/*
	 * Makes [alias, alias+len) a second view of [canon, canon+len); with
	 * populate, the page-table entries are made now rather than on first
	 * touch.
	 */
	int (*alias_map)(void *alias, void *canon, size_t len, bool populate);
	/*
	 * Revokes the alias: from return on, any access faults.  The range
	 * stays reserved.  Cheap, and does not raise the mapping count.
	 */
	int (*alias_revoke)(void *alias, size_t len);
	/*
	 * The whole range is dead for good: drop whatever the mapping costs
	 * (mapping entries, page tables).  Accesses keep faulting.
	 */
	int (*alias_release)(void *alias, size_t len);

	/*
	 * fork(): prepare runs in the parent before, parent after, child in
	 * the child.  When child returns true the core must call
	 * alias_revoke again on every revoked alias that it has not yet
	 * released (the child's view of memory was rebuilt).
	 */
	void (*fork_prepare)(void);
	void (*fork_parent)(void);
	bool (*fork_child)(void);

	/*
	 * How many kernel mappings hold aliases now (for stats), or -1 when
	 * the backend cannot tell.
	 */
	long (*count_alias_mappings)(void);

	/*
	 * Explains an ENOMEM from alias_map (e.g. the host's mapping limit)
	 * into buf; returns false when there is nothing more to say.
	 */
	bool (*explain_enomem)(char *buf, size_t len);
};

extern const struct dl_backend _dl_backend_host;

/* Anonymous memory for the allocator's own metadata (never the program's). */
void *_dl_os_pages(size_t len);
void _dl_os_unpages(void *p, size_t len);
/* Reserves a range that faults on access and costs no memory. */
void *_dl_os_reserve(size_t len);

#endif
