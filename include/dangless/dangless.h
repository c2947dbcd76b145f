/* SPDX-License-Identifier: MIT */
/*
 * Dangless: a malloc whose every allocation is reached through its own fresh
 * virtual alias, revoked by free(), so that a dangling pointer faults at once.
 *
 * The standard names (malloc, free, ...) are exported by libdangless.so and
 * libdangless.a; the dangless_* names below are the same functions under
 * names of their own, plus the calls that only Dangless has.
 */
#ifndef DANGLESS_DANGLESS_H
#define DANGLESS_DANGLESS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define DANGLESS_VERSION "0.1.0"

void *dangless_malloc(size_t size);
void *dangless_calloc(size_t nmemb, size_t size);
void *dangless_realloc(void *p, size_t size);
void *dangless_reallocarray(void *p, size_t nmemb, size_t size);
void dangless_free(void *p);
int dangless_posix_memalign(void **out, size_t alignment, size_t size);
void *dangless_aligned_alloc(size_t alignment, size_t size);
void *dangless_memalign(size_t alignment, size_t size);
void *dangless_valloc(size_t size);
void *dangless_pvalloc(size_t size);
size_t dangless_malloc_usable_size(void *p);

/*
 * Initialises Dangless if nothing has yet (the first malloc, the library's
 * constructor or .preinit_array all do).  Returns 0, or a negative errno when
 * the backend cannot start; allocation then falls back as the options say.
 */
int dangless_init(void);

/*
 * Gives Dangless the address range [start, end) for its aliases, instead of
 * reserving its own: from the first call on, aliases come only from ranges
 * given this way (up to 16, used in order), and when they are used up the
 * allocator is out of alias space (a report, or fallback=1) once sweeps
 * find nothing more in them to reclaim.  Must be
 * page-aligned and not otherwise in use; best called before the first
 * allocation.  On the host backend the first and last 2 MiB stay
 * inaccessible guard gaps, so the range must be larger than 4 MiB.
 * Returns 0 or a negative errno.
 */
int dangless_dedicate_vmem(void *start, void *end);

/*
 * The canonical address of the byte that p points to (p is a live alias), or
 * p itself when p is not Dangless memory.
 */
void *dangless_get_canonical(void *p);

/* Bumped whenever a field is added: fields come in this order. */
#define DANGLESS_STATS_VERSION 7
#define DANGLESS_STAT_FIELDS(X)                                                \
	X(allocs, "allocations made")                                          \
	X(frees, "allocations freed")                                          \
	X(live_objects, "allocations live now")                                \
	X(live_bytes, "bytes requested by live allocations")                   \
	X(alias_maps, "alias mappings made")                                   \
	X(alias_mappings_live, "alias mappings live now")                      \
	X(revokes, "revocation calls made")                                    \
	X(revoked_pages, "alias pages revoked")                                \
	X(quarantined, "freed allocations awaiting revocation")                \
	X(alias_bytes_reserved, "alias address space reserved")                \
	X(alias_bytes_used, "alias address space handed out, in all")   \
	X(canonical_bytes, "canonical memory in runs and large objects")       \
	X(canonical_bytes_released, "canonical memory given back to the OS")   \
	X(fallback_allocs, "allocations served unprotected (fallback)")        \
	X(early_allocs, "allocations served before initialisation")          \
	X(pte_writes, "page-table entries written (kvm)")                      \
	X(tlb_invlpgs, "single-page TLB flushes, invlpg (kvm)")                \
	X(tlb_flushes, "whole-TLB flushes, CR3 reloads (kvm)")                 \
	X(shootdowns, "TLB shootdowns that had to interrupt another vCPU (kvm)") \
	X(shootdown_signals, "signals sent for TLB shootdowns (kvm)")          \
	X(shootdown_ipis, "interrupts sent to vCPUs for TLB shootdowns (kvm)") \
	X(vm_exits, "VM exits to the host: KVM_RUN returns (kvm)")             \
	X(guest_syscalls, "system calls forwarded to the host (kvm)")          \
	X(pt_pages, "page-table pages held for alias space (kvm)")             \
	X(syscalls_fixed, "system calls whose pointers were rewritten (kvm)")  \
	X(fixup_pointers, "pointers passed by their canonical address (kvm)")  \
	X(fixup_bounced, "buffers copied through scratch (kvm)")               \
	X(fixup_nested, "structs and arrays copied with inner pointers (kvm)") \
	X(fixup_efault, "calls answered EFAULT: a revoked alias (kvm)")        \
	X(fixup_refused, "calls refused: kept pointer, no scratch (kvm)")      \
	X(unknown_syscalls, "system calls the table does not know (kvm)")      \
	X(unknown_commands, "ioctl/fcntl commands translated best effort (kvm)")  \
	X(canonical_bytes_resident,                                            \
	  "canonical memory the OS holds now, each page once")                \
	X(page_table_bytes, "page tables of the whole process now")        \
	X(alias_space_limit, "alias address space Dangless may use "          \
	  "(alias_space=, or all the backend has)")                           \
	X(alias_space_used, "alias address space in use now: live, or "      \
	  "revoked and not reclaimed")                                        \
	X(alias_space_left, "alias address space left: never used, or "       \
	  "reclaimed")                                                         \
	X(alias_space_retired, "revoked alias space waiting for a sweep, "    \
	  "or still pointed to")                                               \
	X(alias_space_pinned, "revoked alias space the last sweep found "     \
	  "still pointed to (stays revoked)")                                  \
	X(alias_bytes_reused, "alias address space handed out again after " \
	  "a reclaim")                                                         \
	X(reclaims, "sweeps for reusable alias space")                        \
	X(reclaims_abandoned, "sweeps given up: a thread did not stop, "      \
	  "nothing reclaimed")                                                 \
	X(reclaimed_bytes, "revoked alias space found unreferenced and "      \
	  "made reusable")                                                     \
	X(sweep_scanned_bytes, "bytes of roots and live objects sweeps "      \
	  "scanned")                                                           \
	X(sweep_threads_stopped, "threads stopped by sweeps (each time)")     \
	X(sweep_ns, "time in sweeps, nanoseconds (others stopped meanwhile)") \
	X(footprint_bytes, "the process's memory as the kernel counts it: "   \
	  "Pss plus page tables")                                              \
	X(mem_live_bytes, "of which: live allocations' requested bytes")      \
	X(mem_slack_bytes, "of which: the rest of their size classes, "       \
	  "pages and run columns")                                             \
	X(mem_free_bytes, "of which: free slots of runs in use, and slots "   \
	  "cached by threads")                                                 \
	X(mem_warm_bytes, "of which: empty runs and freed large extents "     \
	  "kept for reuse")                                                    \
	X(mem_quarantine_bytes, "of which: freed allocations not yet "        \
	  "revoked or given back")                                             \
	X(mem_stale_bytes, "of which: canonical memory the backend holds "    \
	  "besides (kvm: stale ranges, huge-page tails)")                      \
	X(mem_page_table_bytes, "of which: page tables (the process's; under " \
	  "kvm also the guest's, libdune's and the backend's)")                \
	X(mem_metadata_bytes, "of which: Dangless's metadata")                \
	X(mem_program_bytes, "of which: the rest: the program's code, data, " \
	  "stacks and own mappings")                                          \
	X(alias_space_live_peak, "the most alias space live segments held at " \
	  "once: less alias_space= than this runs out")

struct dangless_stats {
	uint32_t version;
#define DANGLESS_STAT_MEMBER(name, what) uint64_t name;
	DANGLESS_STAT_FIELDS(DANGLESS_STAT_MEMBER)
#undef DANGLESS_STAT_MEMBER
	/* alias_mappings_live / live_objects, in thousandths */
	uint64_t mappings_per_1000_live;
};

/*
 * Sweeps for revoked alias space that nothing points to any more and makes
 * it reusable (Dangless does this by itself when used alias space passes
 * a threshold; see README "Alias space that lasts").  Every other thread
 * is stopped meanwhile.  Returns the bytes made reusable, or a negative
 * errno: -ENOSYS when the backend cannot reuse alias space or reclaim=0,
 * -EAGAIN when a thread could not be stopped (nothing was reclaimed),
 * -EDEADLK when called from inside Dangless (a signal handler that
 * interrupted it).
 */
long dangless_reclaim(void);

/* Fills *out with the counters as they are now.  Returns 0. */
int dangless_stats(struct dangless_stats *out);

/* Prints the counters to stderr (what stats=1 does at exit). */
void dangless_print_stats(void);

/* Writes the DANGLESS_OPTIONS table (name, default, meaning) to fd. */
void dangless_print_options_help(int fd);

#ifdef __cplusplus
}
#endif

#endif
