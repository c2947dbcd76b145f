/* SPDX-License-Identifier: MIT */
/* dangless_stats(): the counters, and what only the backend can count. */
#include "internal.h"

DL_EXPORT int
dangless_stats(struct dangless_stats *out)
{
	out->version = DANGLESS_STATS_VERSION;
	if (_dl_be && _dl_be->refresh_stats)
		_dl_be->refresh_stats();
#define DL_STAT_COPY(name, what)                                               \
	out->name = atomic_load_explicit(&_dl_stats.name, memory_order_relaxed);
	DANGLESS_STAT_FIELDS(DL_STAT_COPY)
#undef DL_STAT_COPY
	/* Mappings merge in the kernel: only the kernel can count them. */
	long mappings = _dl_be && _dl_be->count_alias_mappings
				? _dl_be->count_alias_mappings()
				: -1;
	out->alias_mappings_live = mappings > 0 ? (uint64_t)mappings : 0;
	uint64_t canonical = 0, page_tables = 0;
	if (_dl_be && _dl_be->memory_held &&
	    !_dl_be->memory_held(&canonical, &page_tables))
		canonical = page_tables = 0;
	struct dl_space_info si;
	_dl_space_info(&si);
	out->alias_space_limit = si.limit;
	out->alias_space_used = si.used;
	out->alias_space_left = si.limit > si.used ? si.limit - si.used : 0;
	out->alias_space_retired = si.retired;
	out->alias_space_pinned = si.pinned;
	out->canonical_bytes_resident = canonical;
	out->page_table_bytes = page_tables;
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
