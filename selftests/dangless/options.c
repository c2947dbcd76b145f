// SPDX-License-Identifier: MIT
/*
 * DANGLESS_OPTIONS, each option in a fresh process, both with libdangless.a
 * linked in (st-scenario, tests *_static) and preloaded into an ordinary
 * program (st-scenario-plain, tests *_preload): stacks=1 adds where the
 * object was allocated and freed, stats=1 prints the counters at exit,
 * revoke=batch:N still catches the dangling access once the batch is
 * flushed, and the rest are accepted.
 */
#include "st-common.h"

/* 0: st-scenario (libdangless.a linked in); 1: st-scenario-plain preloaded */
static int st_mode;

static void st_scenario(const char *opts, const char *a1, const char *a2,
			struct th_child *res)
{
	char env[256];
	snprintf(env, sizeof(env), "DANGLESS_OPTIONS=%s", opts);
	const char *const envv[] = {env, st_mode ? st_preload_env() : NULL,
				    NULL};
	const char *const argv[] = {
		st_selftest_prog(st_mode ? "st-scenario-plain" : "st-scenario"),
		a1, a2, NULL};
	th_exec(argv, envv, NULL, ST_CHILD_S, res);
}

/*
 * Each test runs twice: name_static and name_preload, each with the budget
 * given (0: the harness's default).
 */
#define BOTH_TIMEOUT(name, budget_s)                                           \
	static void st_body_##name(void);                                      \
	TEST_TIMEOUT(name##_static, budget_s)                                  \
	{                                                                      \
		st_mode = 0;                                                   \
		st_body_##name();                                              \
	}                                                                      \
	TEST_TIMEOUT(name##_preload, budget_s)                                 \
	{                                                                      \
		st_mode = 1;                                                   \
		st_body_##name();                                              \
	}                                                                      \
	static void st_body_##name(void)
#define BOTH(name) BOTH_TIMEOUT(name, 0)

BOTH(environment_reaches_main)
{
	/* start-up must leave the program its environment */
	const char *const envv[] = {"ST_PROBE=hello",
				    st_mode ? st_preload_env() : NULL, NULL};
	const char *const argv[] = {
		st_selftest_prog(st_mode ? "st-scenario-plain" : "st-scenario"),
		"env", "ST_PROBE", NULL};
	struct th_child res;
	th_exec(argv, envv, NULL, ST_CHILD_S, &res);
	ASSERT_EXITED(0, res);
	ASSERT_STREQ("ST_PROBE=hello\n", res.out);
	th_child_free(&res);
}

BOTH_TIMEOUT(no_options_basic, ST_CHILDREN_BUDGET(2))
{
	struct th_child res;
	st_scenario("", "basic", NULL, &res);
	ASSERT_EXITED(0, res);
	ASSERT_CONTAINS("basic ok", res.out);
	th_child_free(&res);
	st_scenario("", "active", NULL, &res);
	ASSERT_CONTAINS("dangless=yes", res.out);
	th_child_free(&res);
}

BOTH(default_report_is_use_after_free)
{
	struct th_child res;
	st_scenario("", "uaf-read", NULL, &res);
	uintptr_t target = st_hex_after(res.out, "target=");
	ASSERT_NE((uintptr_t)0, target);
	ASSERT_UAF_REPORT(res, "READ", target, 10, 100);
	th_child_free(&res);
}

BOTH(stacks_1_shows_alloc_and_free_stacks)
{
	struct th_child res;
	st_scenario("stacks=1", "uaf-write", NULL, &res);
	uintptr_t target = st_hex_after(res.out, "target=");
	ASSERT_NE((uintptr_t)0, target);
	ASSERT_UAF_REPORT(res, "WRITE", target, 10, 100);
	ASSERT_CONTAINS("\ndangless: allocated at:", res.err);
	ASSERT_CONTAINS("\ndangless: freed at:", res.err);
	/* and in that order, after the first line */
	const char *first = strstr(res.err, "dangless: use-after-free");
	const char *alloc = strstr(res.err, "dangless: allocated at:");
	const char *freed = strstr(res.err, "dangless: freed at:");
	EXPECT_TRUE(first < alloc);
	EXPECT_TRUE(alloc < freed);
	/* each is followed by at least one frame line */
	const char *nl = strchr(alloc, '\n');
	ASSERT_NOT_NULL(nl);
	EXPECT_FALSE(strncmp(nl + 1, "dangless: freed at:", 19) == 0);
	/* and the first frames differ: malloc and free are different calls */
	const char *nl2 = strchr(freed, '\n');
	ASSERT_NOT_NULL(nl2);
	size_t l1 = strcspn(nl + 1, "\n"), l2 = strcspn(nl2 + 1, "\n");
	EXPECT_FALSE(l1 == l2 && strncmp(nl + 1, nl2 + 1, l1) == 0);
	th_child_free(&res);
}

#define ST_ADDR2LINE_S 30

/*
 * The function that the first frame under the line starting with title
 * names, by addr2line on its "(FILE+0xOFFSET)"; "" when there is none.
 */
static const char *st_first_frame_fn(const char *err, const char *title)
{
	static char fn[256];
	fn[0] = 0;
	const char *at = strstr(err, title);
	if (!at || !(at = strchr(at, '\n')))
		return fn;
	const char *open = strchr(at + 1, '('), *end = strchr(at + 1, '\n');
	if (!open || (end && open > end))
		return fn;
	char file[512], off[32];
	if (sscanf(open + 1, "%511[^+]+%31[0-9a-fx])", file, off) != 2)
		return fn;
	const char *const argv[] = {"addr2line", "-f", "-e", file, off, NULL};
	struct th_child res;
	th_exec(argv, NULL, NULL, ST_ADDR2LINE_S, &res);
	snprintf(fn, sizeof(fn), "%.*s", (int)strcspn(res.out, "\n"), res.out);
	th_child_free(&res);
	return fn;
}

/* one scenario, then addr2line on each of its three stacks */
BOTH_TIMEOUT(stacks_1_frames_point_at_the_program,
	     ST_CHILDREN_BUDGET(1) + 3 * ST_ADDR2LINE_S)
{
	/* the first frame of each stack is the program's own code (uaf() in
	 * scenario.c), not Dangless's or the signal handler's */
	struct th_child res;
	st_scenario("stacks=1", "uaf-read", NULL, &res);
	ASSERT_KILLED_BY(SIGSEGV, res);
	EXPECT_STREQ("uaf", st_first_frame_fn(res.err, "dangless: at:"));
	EXPECT_STREQ("uaf",
		     st_first_frame_fn(res.err, "dangless: allocated at:"));
	EXPECT_STREQ("uaf", st_first_frame_fn(res.err, "dangless: freed at:"));
	if (th_failed_expectations)
		th_print_quoted(res.err);
	th_child_free(&res);
}

BOTH(stacks_1_double_free)
{
	struct th_child res;
	st_scenario("stacks=1", "double-free", NULL, &res);
	ASSERT_KILLED_BY(SIGABRT, res);
	uintptr_t target = st_hex_after(res.out, "target=");
	ASSERT_CONTAINS("dangless: double free of 0x", res.err);
	EXPECT_EQ(target, st_hex_after(res.err, "double free of "));
	th_child_free(&res);
}

BOTH_TIMEOUT(stats_1_prints_counters_at_exit, ST_CHILDREN_BUDGET(2))
{
	struct th_child res;
	st_scenario("stats=1", "churn", "1000", &res);
	ASSERT_EXITED(0, res);
	ASSERT_CONTAINS("churn 1000 sum", res.out);
	/* the counters by name, on stderr */
	EXPECT_CONTAINS("allocs", res.err);
	EXPECT_CONTAINS("frees", res.err);
	EXPECT_CONTAINS("revoked_pages", res.err);
	th_child_free(&res);

	/* without it, a clean run says nothing */
	st_scenario("", "churn", "1000", &res);
	ASSERT_EXITED(0, res);
	EXPECT_STREQ("", res.err);
	th_child_free(&res);
}

BOTH(stats_reflect_churn)
{
	struct th_child res;
	st_scenario("", "stats", NULL, &res);
	ASSERT_EXITED(0, res);
	/* st-scenario stats does 100 malloc/free pairs first */
	unsigned long long allocs = 0, frees = 0, live = 0;
	const char *a = strstr(res.out, "\nallocs "),
		   *f = strstr(res.out, "\nfrees "),
		   *l = strstr(res.out, "\nlive_objects ");
	if (!a)
		a = strncmp(res.out, "allocs ", 7) == 0 ? res.out - 1 : NULL;
	ASSERT_NOT_NULL(a);
	ASSERT_NOT_NULL(f);
	ASSERT_NOT_NULL(l);
	sscanf(a + 1, "allocs %llu", &allocs);
	sscanf(f + 1, "frees %llu", &frees);
	sscanf(l + 1, "live_objects %llu", &live);
	EXPECT_LE(100ULL, allocs);
	EXPECT_LE(100ULL, frees);
	EXPECT_EQ(allocs - frees, live);
	th_child_free(&res);
}

BOTH_TIMEOUT(verbosity_levels_accepted, ST_CHILDREN_BUDGET(3))
{
	static const char *const v[] = {"verbosity=0", "verbosity=1",
					"verbosity=2"};
	for (int i = 0; i < 3; i++) {
		struct th_child res;
		st_scenario(v[i], "basic", NULL, &res);
		ASSERT_EXITED(0, res);
		ASSERT_CONTAINS("basic ok", res.out);
		th_child_free(&res);
	}
}

BOTH_TIMEOUT(backend_host, ST_CHILDREN_BUDGET(2))
{
	struct th_child res;
	st_scenario("backend=host", "basic", NULL, &res);
	ASSERT_EXITED(0, res);
	ASSERT_CONTAINS("basic ok", res.out);
	th_child_free(&res);
	st_scenario("backend=host", "uaf-read", NULL, &res);
	ASSERT_KILLED_BY(SIGSEGV, res);
	th_child_free(&res);
}

BOTH_TIMEOUT(fallback_1_without_exhaustion_changes_nothing,
	     ST_CHILDREN_BUDGET(2))
{
	struct th_child res;
	st_scenario("fallback=1", "uaf-read", NULL, &res);
	uintptr_t target = st_hex_after(res.out, "target=");
	ASSERT_UAF_REPORT(res, "READ", target, 10, 100);
	th_child_free(&res);
	st_scenario("fallback=1", "stats", NULL, &res);
	ASSERT_EXITED(0, res);
	EXPECT_CONTAINS("\nfallback_allocs 0\n", res.out);
	th_child_free(&res);
}

BOTH(revoke_strict_explicit)
{
	struct th_child res;
	st_scenario("revoke=strict", "uaf-read", NULL, &res);
	uintptr_t target = st_hex_after(res.out, "target=");
	ASSERT_UAF_REPORT(res, "READ", target, 10, 100);
	th_child_free(&res);
}

BOTH_TIMEOUT(revoke_batch_catches_after_the_batch, ST_CHILDREN_BUDGET(4))
{
	static const char *const batches[][2] = {
		{"revoke=batch:16", "16"},
		{"revoke=batch:256", "256"},
	};
	for (int i = 0; i < 2; i++) {
		struct th_child res;
		st_scenario(batches[i][0], "basic", NULL, &res);
		ASSERT_EXITED(0, res);
		ASSERT_CONTAINS("basic ok", res.out);
		th_child_free(&res);
		st_scenario(batches[i][0], "batch", batches[i][1], &res);
		EXPECT_FALSE(strstr(res.out, "survived") != NULL);
		uintptr_t target = st_hex_after(res.out, "target=");
		ASSERT_NE((uintptr_t)0, target);
		ASSERT_UAF_REPORT(res, "READ", target, 1, 64);
		th_child_free(&res);
	}
}

BOTH(revoke_batch_across_fork)
{
	struct th_child res;
	st_scenario("revoke=batch:32", "fork-batch", "32", &res);
	EXPECT_FALSE(strstr(res.out, "survived") != NULL);
	char want[32];
	snprintf(want, sizeof(want), "child signal %d\n", SIGSEGV);
	EXPECT_CONTAINS(want, res.out);
	uintptr_t target = st_hex_after(res.out, "target=");
	ASSERT_NE((uintptr_t)0, target);
	ASSERT_UAF_REPORT(res, "READ", target, 2, 64);
	EXPECT_EQ(2, st_count(res.err, "dangless: use-after-free READ"));
	th_child_free(&res);
}

BOTH(revoke_batch_quarantine_counts)
{
	struct th_child res;
	st_scenario("revoke=batch:1000", "stats", NULL, &res);
	ASSERT_EXITED(0, res);
	/* 100 frees so far, fewer than a batch: some await revocation */
	EXPECT_FALSE(strstr(res.out, "\nquarantined 0\n") != NULL);
	th_child_free(&res);
}

BOTH(several_options_at_once)
{
	struct th_child res;
	st_scenario("stacks=1:stats=1:verbosity=1:revoke=strict", "uaf-read",
		    NULL, &res);
	uintptr_t target = st_hex_after(res.out, "target=");
	ASSERT_UAF_REPORT(res, "READ", target, 10, 100);
	ASSERT_CONTAINS("dangless: allocated at:", res.err);
	th_child_free(&res);
}

BOTH(dedicate_vmem_before_first_malloc)
{
	struct th_child res;
	st_scenario("", "dedicate", NULL, &res);
	EXPECT_CONTAINS("bad range -22\n", res.out); /* -EINVAL */
	EXPECT_CONTAINS("unaligned -22\n", res.out);
	ASSERT_CONTAINS("dedicate 0\n", res.out);
	EXPECT_CONTAINS("inside 1001 of 1001\n", res.out);
	uintptr_t target = st_hex_after(res.out, "target=");
	ASSERT_NE((uintptr_t)0, target);
	EXPECT_LE((uintptr_t)0x500000000000UL, target);
	EXPECT_GT((uintptr_t)0x500000000000UL + (1UL << 30), target);
	ASSERT_UAF_REPORT(res, "READ", target, 0, 64);
	th_child_free(&res);
}

BOTH(dedicate_vmem_is_all_the_alias_space)
{
	/* "instead of reserving its own" (dangless.h): once the dedicated
	 * range is used up, what follows is the fallback, not a new range */
	struct th_child res;
	st_scenario("fallback=1", "dedicate-small", "32", &res);
	ASSERT_EXITED(0, res);
	ASSERT_CONTAINS("dedicate 0\n", res.out);
	EXPECT_FALSE(strstr(res.out, "inside 0 ") != NULL);
	EXPECT_CONTAINS("nulls 0\n", res.out);
	EXPECT_CONTAINS("reserved beyond the dedicated range: 0 bytes\n",
			res.out);
	EXPECT_FALSE(strstr(res.out, "fallback_allocs 0\n") != NULL);
	th_child_free(&res);
}

BOTH(dedicate_vmem_used_up_fallback_0_aborts)
{
	struct th_child res;
	st_scenario("", "dedicate-small", "32", &res);
	ASSERT_KILLED_BY(SIGABRT, res);
	/* a clear message: Dangless, out of alias space, what to do */
	ASSERT_CONTAINS("dangless: ", res.err);
	EXPECT_CONTAINS("alias", res.err);
	EXPECT_CONTAINS("fallback=1", res.err);
	th_child_free(&res);
}

TEST_HARNESS_MAIN
