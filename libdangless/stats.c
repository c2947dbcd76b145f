/* SPDX-License-Identifier: MIT */
/* dangless_stats(): the counters, and what only the backend can count. */
#include "internal.h"

/*
 * The footprint split: the kernel's figure for the whole process (Pss, the
 * backend's canonical pages that no mapping maps, page tables), and the
 * parts Dangless can name; the program's own is what is left.  Each named
 * part is measured on its own (memory.c, the backend, meta.c), so a part
 * that missed memory shows as a program part that grows with the heap
 * (selftests/dangless/memory.c checks that it does not).  After fork() a
 * page shared with the other process counts half in Pss but whole in a
 * part: the program's part may then read low.
 */
struct dl_memory_measured {
	bool ok;                  /* false without /proc: the fields stay 0 */
	struct dl_proc_memory proc;
	uint64_t meta;
	struct dl_mem_split split;
	bool have_held;           /* else held is all zero */
	struct dl_memory_held held;
};

static void dl_memory_measure(struct dl_memory_measured *mm)
{
	*mm = (struct dl_memory_measured){0};
	if (!_dl_proc_memory(&mm->proc))
		return;
	mm->have_held = _dl_be && _dl_be->memory_held &&
			_dl_be->memory_held(&mm->proc, &mm->held);
	if (!mm->have_held)
		mm->held = (struct dl_memory_held){0};
	mm->ok = _dl_meta_resident(&mm->meta) && _dl_memory_split(&mm->split);
}

static void dl_stats_memory(struct dangless_stats *out,
			    const struct dl_memory_measured *mm)
{
	out->canonical_bytes_resident = mm->held.canonical;
	out->page_table_bytes = mm->held.page_tables;
	if (!mm->ok)
		return;
	const struct dl_mem_split *m = &mm->split;
	const struct dl_memory_held *held = &mm->held;
	uint64_t canonical = held->canonical;
	uint64_t page_tables =
		mm->have_held ? held->page_tables : mm->proc.vm_pte;
	/* The backend's own page-table pages, if any, are inside Pss. */
	uint64_t footprint =
		mm->proc.pss + held->canonical_unmapped + mm->proc.vm_pte;
	uint64_t core = m->live + m->slack + m->free + m->warm + m->quarantine;
	out->footprint_bytes = footprint;
	out->mem_live_bytes = m->live;
	out->mem_slack_bytes = m->slack;
	out->mem_free_bytes = m->free;
	out->mem_warm_bytes = m->warm;
	out->mem_quarantine_bytes = m->quarantine;
	out->mem_stale_bytes = canonical > core ? canonical - core : 0;
	out->mem_page_table_bytes = page_tables;
	out->mem_metadata_bytes = mm->meta;
	uint64_t named = core + out->mem_stale_bytes + page_tables + mm->meta;
	out->mem_program_bytes = footprint > named ? footprint - named : 0;
}

/*
 * The exits and forwarded system calls dangless_stats() made itself to
 * measure the footprint (/proc reads, mincore over runs): left out of the
 * counters it reports, so that two snapshots around a stretch of code count
 * that code only.  (Another thread's, made during a snapshot, are left out
 * with them.)
 */
static struct {
	dl_lock_t lock;
	uint64_t vm_exits, guest_syscalls;
} dl_stats_own;

/* First in fork's lock order: dangless_stats() takes every other lock
 * while it holds this one. */
void _dl_stats_lock(void)
{
	_dl_lock(&dl_stats_own.lock);
}

void _dl_stats_unlock(bool reset)
{
	(reset ? _dl_lock_reset : _dl_unlock)(&dl_stats_own.lock);
}

static void dl_backend_counters(uint64_t *exits, uint64_t *syscalls)
{
	if (_dl_be && _dl_be->refresh_stats)
		_dl_be->refresh_stats();
	*exits = atomic_load_explicit(&_dl_stats.vm_exits, memory_order_relaxed);
	*syscalls = atomic_load_explicit(&_dl_stats.guest_syscalls,
					 memory_order_relaxed);
}

DL_EXPORT int
dangless_stats(struct dangless_stats *out)
{
	*out = (struct dangless_stats){0};
	_dl_lock(&dl_stats_own.lock);
	uint64_t exits0, syscalls0, exits1, syscalls1;
	dl_backend_counters(&exits0, &syscalls0);
	/* Mappings merge in the kernel: only the kernel can count them. */
	long mappings = _dl_be && _dl_be->count_alias_mappings
				? _dl_be->count_alias_mappings()
				: -1;
	struct dl_memory_measured mm;
	dl_memory_measure(&mm);
	dl_backend_counters(&exits1, &syscalls1);
	dl_stats_own.vm_exits += exits1 - exits0;
	dl_stats_own.guest_syscalls += syscalls1 - syscalls0;

	out->version = DANGLESS_STATS_VERSION;
#define DL_STAT_COPY(name, what)                                               \
	out->name = atomic_load_explicit(&_dl_stats.name, memory_order_relaxed);
	DANGLESS_STAT_FIELDS(DL_STAT_COPY)
#undef DL_STAT_COPY
	out->vm_exits = exits1 - dl_stats_own.vm_exits;
	out->guest_syscalls = syscalls1 - dl_stats_own.guest_syscalls;
	_dl_unlock(&dl_stats_own.lock);
	out->alias_mappings_live = mappings > 0 ? (uint64_t)mappings : 0;
	struct dl_space_info si;
	_dl_space_info(&si);
	out->alias_space_limit = si.limit;
	out->alias_space_used = si.used;
	out->alias_space_left = si.limit > si.used ? si.limit - si.used : 0;
	out->alias_space_retired = si.retired;
	out->alias_space_pinned = si.pinned;
	out->alias_space_live_peak = si.live_peak;
	dl_stats_memory(out, &mm);
	out->mappings_per_1000_live =
		out->live_objects
			? out->alias_mappings_live * 1000 / out->live_objects
			: 0;
	return 0;
}

DL_EXPORT void dangless_print_stats(void)
{
	struct dangless_stats s;
	dangless_stats(&s);
	_dl_printf("dangless: stats (backend %s):", _dl_be ? _dl_be_name
							   : "none running");
#define DL_STAT_PRINT(name, what)                                              \
	_dl_printf("dangless:   %s = %lu (%s)", #name, s.name, what);
	DANGLESS_STAT_FIELDS(DL_STAT_PRINT)
#undef DL_STAT_PRINT
	_dl_printf("dangless:   mappings_per_live_object = %lu.%lu%lu%lu",
		   s.mappings_per_1000_live / 1000,
		   s.mappings_per_1000_live / 100 % 10,
		   s.mappings_per_1000_live / 10 % 10,
		   s.mappings_per_1000_live % 10);
}
