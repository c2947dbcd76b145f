// SPDX-License-Identifier: MIT
/*
 * Guard gaps: alias space is surrounded by inaccessible memory of ours, so
 * an access just outside it (p[-1] of the first object, the byte after the
 * last page of a reservation) faults with the out-of-bounds report instead
 * of reading or writing whatever the kernel placed next to it; and no
 * readable or writable mapping ever comes within 2 MiB of an alias.
 */
#include "st-common.h"

static void st_scenario_preloaded(const char *opts, const char *what,
				  struct th_child *res)
{
	const char *const envv[] = {st_preload_env(), opts, NULL};
	const char *const argv[] = {st_selftest_prog("st-scenario-plain"), what,
				    NULL};
	th_exec(argv, envv, NULL, ST_CHILD_S, res);
}

/* res died of SIGSEGV with an out-of-bounds report at its target=. */
static void st_assert_out_of_bounds(struct th_child *res, const char *where)
{
	ASSERT_KILLED_BY(SIGSEGV, *res);
	uintptr_t target = st_hex_after(res->out, "target=");
	ASSERT_NE((uintptr_t)0, target);
	char want[128];
	snprintf(want, sizeof(want),
		 "dangless: out-of-bounds READ of size 1 at %#lx: %s",
		 (unsigned long)target, where);
	ASSERT_CONTAINS(want, res->err);
}

/* how2heap's unsafe_unlink read chunk0_ptr[-1] and got our metadata. */
TEST_TIMEOUT(first_allocation_underflow_is_reported, ST_CHILDREN_BUDGET(2))
{
	static const char *const revokes[] = {"DANGLESS_OPTIONS=revoke=strict",
					      "DANGLESS_OPTIONS=revoke=batch:64"};
	for (int i = 0; i < 2; i++) {
		struct th_child res;
		TH_LOG("%s", revokes[i]);
		st_scenario_preloaded(revokes[i], "first-underflow", &res);
		st_assert_out_of_bounds(&res, "1 bytes before a 1056-byte "
					      "allocation (live)");
		th_child_free(&res);
	}
}

TEST_TIMEOUT(byte_after_the_last_page_of_a_reservation_is_reported,
	     ST_CHILDREN_BUDGET(1))
{
	struct th_child res;
	st_scenario_preloaded("DANGLESS_OPTIONS=fallback=1", "dedicated-end",
			      &res);
	st_assert_out_of_bounds(&res, "0 bytes after a 65536-byte allocation "
				      "(live)");
	th_child_free(&res);
}

TEST_TIMEOUT(no_accessible_mapping_within_2_mib_of_an_alias,
	     ST_CHILDREN_BUDGET(1))
{
	struct th_child res;
	st_scenario_preloaded(NULL, "maps-gaps", &res);
	if (!strstr(res.out, "gaps ok"))
		th_print_quoted(res.out);
	ASSERT_EXITED(0, res);
	ASSERT_CONTAINS("gaps ok", res.out);
	th_child_free(&res);
}

TEST_HARNESS_MAIN
