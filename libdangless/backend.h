/* SPDX-License-Identifier: MIT */
/*
 * The backend seam: everything the allocator core needs from whatever makes
 * its aliases (the host kernel through memfd + mremap, or guest page tables
 * under libdune), and the registry of backends.  The core sees addresses
 * and lengths only; a backend sees no allocator layout (services.h is all
 * it may use of the core).
 *
 * Contract, for every hook:
 *  - addresses and lengths are page-aligned, lengths non-zero;
 *  - an int result is 0 or a negative errno, and a failing call leaves the
 *    range as it was (alias_map: the range faults, as before the call);
 *  - hooks may be called from any thread at once; the backend locks what
 *    it shares.  None is called from a signal handler.
 *
 * What the core guarantees in return:
 *  - C1 an alias range is given to alias_map at most once, except a range
 *    that alias_release released and alias_reuse then accepted: the core
 *    hands it out again only after a sweep found nothing pointing into it
 *    (I1, R2 in internal.h);
 *  - C2 the canonical range given to alias_map lies inside one extent that
 *    canon_alloc returned and that is not freed while the alias is live;
 *  - C3 alias ranges passed to alias_revoke and alias_release lie inside
 *    ranges that alias_reserve or alias_dedicate handed out.
 *
 * Required hooks: init, canon_alloc, canon_free, canon_discard,
 * alias_reserve, alias_map, alias_revoke, alias_release.  The others
 * (addr_bits, alias_dedicate, alias_revoke_many, alias_reuse, own_memory, the fork
 * hooks,
 * count_alias_mappings, refresh_stats, memory_held, explain_enomem,
 * revoke_splits, check, why_refused, die_after_report) may be NULL, and
 * the core checks before each call.
 */
#ifndef DANGLESS_BACKEND_H
#define DANGLESS_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A range of alias space, for the hooks that take many at once. */
struct dl_range {
	uintptr_t start;
	size_t len;
};

/* What a backend holds, as the kernel counts it (memory_held). */
struct dl_memory_held {
	/* canonical memory the host has pages for, each page once however
	 * many aliases map it */
	uint64_t canonical;
	/* of which no mapping of the process maps a page: not in its Pss
	 * (host: memfd pages reached through revoked aliases only) */
	uint64_t canonical_unmapped;
	/* the page tables of the process, and the backend's own for alias
	 * space where they live in the process's memory (kvm) */
	uint64_t page_tables;
};

struct dl_proc_memory; /* services.h */

struct dl_backend {
	/*
	 * Starts the backend.  0, or -errno with a message already printed,
	 * or (with why_refused) with nothing printed: the host cannot run
	 * this backend, and the core says so in one line and falls back.
	 */
	int (*init)(void);
	/* Optional.  After init failed: why, in a few words. */
	const char *(*why_refused)(void);
	/*
	 * Optional.  Asked once, after init: the bits of a half of the
	 * address space that alias space lies in, from DL_ADDR_BITS (47,
	 * 4-level paging; the default without the hook) to DL_ADDR_BITS_MAX
	 * (56, 5-level paging).  The core's map of alias space and its
	 * canonical-address checks cover that much.
	 */
	unsigned (*addr_bits)(void);

	/*
	 * Canonical memory: `len` bytes, page-aligned, zero-filled, readable
	 * and writable at the returned address.  NULL when exhausted.
	 * filled: the caller will use all of it soon (a large object); else
	 * its pages are used piecemeal (a group of runs), and memory backed
	 * by huge pages would hold 2 MiB for each page used.
	 */
	void *(*canon_alloc)(size_t len, bool filled);
	/*
	 * Gives [canon, canon+len) back; it may be handed out again later.
	 * The range may be any page-aligned part of an extent canon_alloc
	 * returned (a shrinking realloc frees the tail of one), and the rest
	 * of that extent stays in use.
	 */
	void (*canon_free)(void *canon, size_t len);
	/* Gives the pages back but keeps the range: it reads zero again. */
	void (*canon_discard)(void *canon, size_t len);

	/*
	 * Alias address space: a range of `len` bytes aligned to `align` (a
	 * power of two, at least a page) that nothing else in the process
	 * will ever be given.  Accesses fault until alias_map.  NULL when the
	 * address space is exhausted, or when dedicated ranges were given
	 * and are used up.
	 */
	void *(*alias_reserve)(size_t len, size_t align);
	/*
	 * Optional.  From now on alias_reserve carves only dedicated ranges,
	 * in the order given, and fails once they are used up.  The range
	 * must not be in use.  0; -EEXIST if something is mapped there;
	 * -EINVAL if it is not page-aligned or not user space; -ENOSPC if the
	 * backend keeps no more ranges.
	 */
	int (*alias_dedicate)(void *start, size_t len);
	/*
	 * Makes [alias, alias+len) a second, readable and writable view of
	 * [canon, canon+len) (C1, C2).  The translations of its first
	 * `populate` bytes (a page multiple, at most len; 0 for none) are
	 * made now rather than on first touch: the core is about to touch
	 * them.  -ENOMEM when a limit of the host is reached
	 * (explain_enomem says which).
	 */
	int (*alias_map)(void *alias, void *canon, size_t len, size_t populate);
	/*
	 * Revokes the alias: from return on, any access through it faults,
	 * in every thread.  The range stays reserved and is never mapped
	 * again.  Must not raise the backend's use of a limited resource
	 * (mapping count): it runs on every free().
	 */
	int (*alias_revoke)(void *alias, size_t len);
	/*
	 * Optional.  alias_revoke of n ranges (sorted by address, none
	 * touching the next) in as few system calls as the host allows: the
	 * batch quarantine revokes its whole batch with it.  On failure some
	 * ranges may be revoked and the others not (the core stops then).
	 * Without it the core calls alias_revoke once per range.
	 */
	int (*alias_revoke_many)(const struct dl_range *ranges, unsigned n);
	/*
	 * The whole range is dead for good: drop whatever it costs (mapping
	 * entries, page tables).  It may still be live (a freed large object,
	 * a shrinking realloc's tail): releasing also revokes, so accesses
	 * fault from return on, and keep faulting.
	 */
	int (*alias_release)(void *alias, size_t len);

	/*
	 * Optional, both or neither: without them the core never reuses
	 * alias space (no sweeps).  alias_reuse: [alias, alias+len) was
	 * released, and a sweep found nothing pointing into it; from return
	 * on the core may give it to alias_map again, as if alias_reserve had
	 * just handed it out.  It must come back where fresh ranges are
	 * made (the host backend: its reservation, so mappings still merge),
	 * faulting until mapped, and no thread may still hold a translation
	 * of its old mapping.  0, or -errno: the range is then never used.
	 */
	int (*alias_reuse)(void *alias, size_t len);
	/*
	 * own_memory: calls fn for each range of process memory the backend
	 * holds besides alias space (canonical memory, page-table pools), so
	 * that a sweep does not scan it as roots: live objects are scanned
	 * through the core's own metadata instead.  Called with every other
	 * thread stopped, so it must take no lock and make no system call.
	 */
	void (*own_memory)(void (*fn)(uintptr_t start, size_t len, void *ctx),
			   void *ctx);

	/*
	 * Optional, all three or none.  fork(): prepare runs in the parent
	 * before, parent after, child in the child (the core holds its own
	 * locks around them).  When child returns true the core calls
	 * alias_revoke again on every revoked alias that it has not yet
	 * released (the child's view of memory was rebuilt).
	 */
	void (*fork_prepare)(void);
	void (*fork_parent)(void);
	bool (*fork_child)(void);

	/*
	 * Optional.  How many mappings of the host hold aliases now (for
	 * stats), or -1 when the backend cannot tell.
	 */
	long (*count_alias_mappings)(void);
	/* Optional.  Brings the counters that only the backend can read
	 * (_dl_stats) up to date, before the stats are read. */
	void (*refresh_stats)(void);

	/*
	 * Optional.  The memory held now, for stats (struct dl_memory_held),
	 * given the kernel's figures for the process read just before.
	 * False when the backend cannot tell.  Allocates nothing.
	 */
	bool (*memory_held)(const struct dl_proc_memory *proc,
			    struct dl_memory_held *m);

	/*
	 * Optional.  Explains an ENOMEM from alias_map (e.g. the host's
	 * mapping limit) into buf; false when there is nothing more to say.
	 */
	bool (*explain_enomem)(char *buf, size_t len);

	/*
	 * Optional.  True when alias_revoke may cost the host a mapping
	 * after all (the host backend without guard markers splits one per
	 * revocation): the core then releases each chunk as soon as all of
	 * it is revoked, rather than with its segment, so that split
	 * mappings do not pile up.  Asked once, after init.
	 */
	bool (*revoke_splits)(void);

	/*
	 * Optional.  For `dangless check`: whether this host can run the
	 * backend, and if not why and what to do, one line per fact, each
	 * written to fd.  True when it can run.
	 */
	bool (*check)(int fd);

	/*
	 * Optional.  A dangling access was reported from the SIGSEGV/SIGBUS
	 * handler: end the process of sig now, as the kernel would have.
	 * Without it the handler restores the default action and returns,
	 * so the access runs again and the kernel ends the process; a
	 * backend under which that second fault would print more (libdune
	 * reports unhandled guest faults) ends it here instead.
	 */
	void (*die_after_report)(int sig);
};

/*
 * The registry (backend/registry.c): one row per backend name.  A name
 * whose backend is not built has ops == NULL and says why in `missing`.
 */
struct dl_backend_entry {
	const char *name;
	const struct dl_backend *ops;
	const char *what;         /* one line for --help and README */
	const char *missing;      /* why ops is NULL */
};
extern const struct dl_backend_entry _dl_backends[];
extern const unsigned _dl_nbackends;
const struct dl_backend_entry *_dl_backend_find(const char *name, size_t len);
/* The backend in use and its name, set once at start-up. */
extern const struct dl_backend *_dl_be;
extern const char *_dl_be_name;

extern const struct dl_backend _dl_backend_host;
extern const struct dl_backend _dl_backend_kvm;
extern const struct dl_backend _dl_backend_dune;

#endif
