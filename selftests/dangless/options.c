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

#include <dirent.h>
#include <sys/stat.h>

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

/*
 * The function that the first frame under the line starting with title
 * names ("#0 0xADDR in FUNCTION ..."); "" when there is none.
 */
static const char *st_first_frame_fn(const char *err, const char *title)
{
	static char fn[256];
	fn[0] = 0;
	const char *at = strstr(err, title);
	if (!at || !(at = strchr(at, '\n')))
		return fn;
	sscanf(at + 1, "dangless: #0 0x%*x in %255[^ +\n]", fn);
	return fn;
}

/* one scenario, its three stacks symbolised by the report itself */
BOTH_TIMEOUT(stacks_1_frames_point_at_the_program, ST_CHILDREN_BUDGET(1))
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

/* st_scenario with one more environment entry. */
static void st_scenario_env(const char *opts, const char *extra,
			    const char *a1, struct th_child *res)
{
	char env[256];
	snprintf(env, sizeof(env), "DANGLESS_OPTIONS=%s", opts);
	const char *const envv[] = {env, extra,
				    st_mode ? st_preload_env() : NULL, NULL};
	const char *const argv[] = {
		st_selftest_prog(st_mode ? "st-scenario-plain" : "st-scenario"),
		a1, NULL};
	th_exec(argv, envv, NULL, ST_CHILD_S, res);
}

/*
 * A backend this host cannot run stops the program with the reason, or,
 * with fallback=1, says so in one line and runs on the default; messages
 * name the backend that runs.  kvm is made to be refused everywhere (on a
 * host with hardware virtualisation too) by a speed probe that no KVM
 * passes.
 */
#define ST_REFUSE_KVM "DUNE_PROBE_MAX_RATIO=0"
BOTH(refused_backend_stops_with_the_reason)
{
	struct th_child res;
	st_scenario_env("backend=kvm", ST_REFUSE_KVM, "basic", &res);
	ASSERT_KILLED_BY(SIGABRT, res);
	EXPECT_CONTAINS("dangless: backend=kvm: libdune cannot use /dev/kvm (",
			res.err);
	EXPECT_CONTAINS("With DANGLESS_OPTIONS=fallback=1 the program runs "
			"on the host backend instead.",
			res.err);
	EXPECT_TRUE(strstr(res.out, "basic ok") == NULL);
	th_child_free(&res);
}

BOTH_TIMEOUT(refused_backend_fallback_1_says_so_once_and_runs_on_host,
	     ST_CHILDREN_BUDGET(2))
{
	struct th_child res;
	st_scenario_env("backend=kvm:fallback=1:stats=1:verbosity=1",
			ST_REFUSE_KVM, "uaf-read", &res);
	ASSERT_KILLED_BY(SIGSEGV, res);
	EXPECT_EQ(1, st_count(res.err, "backend=kvm: libdune cannot use"));
	EXPECT_CONTAINS("); using the host backend\n", res.err);
	/* libdune's own copy of the reason is kept quiet */
	EXPECT_EQ(0, st_count(res.err, "\ndune: "));
	EXPECT_CONTAINS("options: backend=kvm (running: host)", res.err);
	uintptr_t target = st_hex_after(res.out, "target=");
	ASSERT_UAF_REPORT(res, "READ", target, 10, 100);
	th_child_free(&res);
	st_scenario_env("backend=kvm:fallback=1:stats=1", ST_REFUSE_KVM,
			"basic", &res);
	ASSERT_EXITED(0, res);
	EXPECT_CONTAINS("dangless: stats (backend host):", res.err);
	EXPECT_TRUE(strstr(res.err, "stats (backend kvm)") == NULL);
	th_child_free(&res);
}

/* `dangless check` names the kvm backend's refusal and what it needs. */
TEST(check_says_why_kvm_cannot_run)
{
	const char *const env[] = {ST_REFUSE_KVM, NULL};
	const char *const argv[] = {st_dangless_bin(), "check", NULL};
	struct th_child res;
	th_exec(argv, env, NULL, 60, &res);
	ASSERT_EXITED(0, res); /* host runs */
	const char *kvm = strstr(res.out, "backend kvm: ");
	ASSERT_NOT_NULL(kvm);
	EXPECT_CONTAINS("  libdune cannot use /dev/kvm (", kvm);
	EXPECT_CONTAINS("hardware virtualisation (Intel VT-x or AMD-V", kvm);
	EXPECT_CONTAINS("  cannot run on this host (see above)\nbackend dune",
			kvm);
	th_child_free(&res);
}

/* backend=dune (the kvm backend over dune.ko) where no /dev/dune exists:
 * one line with the reason, then host; messages name the running one. */
BOTH(dune_backend_without_the_module_says_so_and_runs_on_host)
{
	if (access("/dev/dune", F_OK) == 0)
		SKIP(return, "dune.ko is loaded here");
	struct th_child res;
	st_scenario("backend=dune:fallback=1:stats=1:verbosity=1", "uaf-read",
		    NULL, &res);
	ASSERT_KILLED_BY(SIGSEGV, res);
	EXPECT_EQ(1, st_count(res.err, "backend=dune: libdune cannot use "
				       "/dev/dune ("));
	EXPECT_CONTAINS("); using the host backend\n", res.err);
	EXPECT_CONTAINS("options: backend=dune (running: host)", res.err);
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

/* The quarantine's blind window: a freed object is still mapped, so it is
 * poisoned and the poison checked when the batch is flushed. */
BOTH_TIMEOUT(revoke_batch_write_after_free_is_reported_by_the_next_flush, ST_CHILDREN_BUDGET(2))
{
	static const char *const cases[][2] = {
		{"batch-write", "64"}, /* found when the batch fills */
		{"batch-write-exit", NULL}, /* found at exit */
	};
	for (int i = 0; i < 2; i++) {
		struct th_child res;
		st_scenario("revoke=batch:64:stacks=1", cases[i][0],
			    cases[i][1], &res);
		ASSERT_KILLED_BY(SIGABRT, res);
		EXPECT_FALSE(strstr(res.out, "survived") != NULL);
		uintptr_t target = st_hex_after(res.out, "target=");
		ASSERT_NE((uintptr_t)0, target);
		char want[160];
		snprintf(want, sizeof(want),
			 "dangless: write-after-free detected late "
			 "(revoke=batch:64) at %#lx: 5 bytes into a 64-byte "
			 "allocation (freed",
			 (unsigned long)target);
		EXPECT_CONTAINS(want, res.err);
		EXPECT_CONTAINS("dangless: allocated at:", res.err);
		EXPECT_CONTAINS("dangless: freed at:", res.err);
		th_child_free(&res);
	}
}

/* Hijacked control flow rarely keeps the ABI's stack alignment; the report
 * is exactly when it matters, so every entry into Dangless realigns. */
BOTH_TIMEOUT(reports_come_out_when_entered_with_a_misaligned_stack,
	     ST_CHILDREN_BUDGET(2))
{
	struct th_child res;
	st_scenario("revoke=batch:64", "misaligned-exit", NULL, &res);
	ASSERT_KILLED_BY(SIGABRT, res);
	uintptr_t target = st_hex_after(res.out, "target=");
	ASSERT_NE((uintptr_t)0, target);
	char want[160];
	snprintf(want, sizeof(want),
		 "dangless: write-after-free detected late (revoke=batch:64) "
		 "at %#lx: 5 bytes into a 64-byte allocation (freed",
		 (unsigned long)target);
	ASSERT_CONTAINS(want, res.err);
	th_child_free(&res);
	st_scenario("revoke=strict", "misaligned-uaf-read", NULL, &res);
	target = st_hex_after(res.out, "target=");
	ASSERT_NE((uintptr_t)0, target);
	ASSERT_UAF_REPORT(res, "READ", target, 10, 100);
	th_child_free(&res);
}

BOTH_TIMEOUT(revoke_batch_read_after_free_gets_poison, ST_CHILDREN_BUDGET(2))
{
	struct th_child res;
	st_scenario("revoke=batch:64", "batch-read", NULL, &res);
	ASSERT_EXITED(0, res);
	char want[2 * 48 + 16] = "bytes=";
	for (int i = 0; i < 48; i++)
		strcat(want, "d5");
	strcat(want, "\n");
	EXPECT_CONTAINS(want, res.out);
	th_child_free(&res);
	/* a pointer read from a freed object does not lead anywhere */
	st_scenario("revoke=batch:64", "batch-read-pointer", NULL, &res);
	ASSERT_KILLED_BY(SIGSEGV, res);
	EXPECT_CONTAINS("next=0xd5d5d5d5d5d5d5d5", res.out);
	EXPECT_FALSE(strstr(res.out, "survived") != NULL);
	th_child_free(&res);
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
	 * range is used up, what follows is the fallback, not a new range
	 * (reclaim=0: with sweeps, freed space in it is reused instead) */
	struct th_child res;
	st_scenario("fallback=1:reclaim=0", "dedicate-small", "32", &res);
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
	st_scenario("reclaim=0", "dedicate-small", "32", &res);
	ASSERT_KILLED_BY(SIGABRT, res);
	/* a clear message: Dangless, out of alias space, what to do */
	ASSERT_CONTAINS("dangless: ", res.err);
	EXPECT_CONTAINS("alias", res.err);
	EXPECT_CONTAINS("fallback=1", res.err);
	th_child_free(&res);
}

BOTH(dedicate_vmem_lasts_with_reclaim)
{
	/* The same 20000 objects in 32 MiB: sweeps find the freed ranges
	 * unreferenced, and the dedicated range is reused, never left. */
	struct th_child res;
	st_scenario("fallback=1", "dedicate-small", "32", &res);
	ASSERT_EXITED(0, res);
	EXPECT_CONTAINS("inside 20000 nulls 0\n", res.out);
	EXPECT_CONTAINS("reserved beyond the dedicated range: 0 bytes\n",
			res.out);
	EXPECT_CONTAINS("fallback_allocs 0\n", res.out);
	th_child_free(&res);
}

/* `dangless check` says how much alias space there is, whether it lasts,
 * and what caps it. */
TEST(check_shows_alias_space)
{
	const char *const env[] = {"DANGLESS_OPTIONS=alias_space=64M", NULL};
	const char *const argv[] = {st_dangless_bin(), "check", NULL};
	struct th_child res;
	th_exec(argv, env, NULL, 60, &res);
	ASSERT_EXITED(0, res);
	EXPECT_CONTAINS("alias space: used 0 and left ", res.out);
	EXPECT_CONTAINS("capped by alias_space=64M\n", res.out);
	const char *host = strstr(res.out, "backend host: ");
	ASSERT_NOT_NULL(host);
	EXPECT_CONTAINS("  alias space lasts: revoked ranges that nothing "
			"points to are reclaimed by sweeps",
			host);
	th_child_free(&res);
}

/* ---- reports: SUMMARY, symbols, where they go, how they end ---- */

BOTH_TIMEOUT(summary_line_ends_each_report, ST_CHILDREN_BUDGET(2))
{
	struct th_child res;
	st_scenario("", "uaf-read", NULL, &res);
	ASSERT_KILLED_BY(SIGSEGV, res);
	/* the last line, naming the program's own function */
	const char *sum = strstr(res.err, "\nSUMMARY: Dangless: "
					  "heap-use-after-free ");
	ASSERT_NOT_NULL(sum);
	EXPECT_CONTAINS("scenario.c:", sum);
	EXPECT_CONTAINS(" in uaf\n", sum);
	EXPECT_EQ(strlen(sum + 1), strcspn(sum + 1, "\n") + 1);
	th_child_free(&res);
	st_scenario("", "double-free", NULL, &res);
	ASSERT_KILLED_BY(SIGABRT, res);
	EXPECT_CONTAINS("\nSUMMARY: Dangless: double-free ", res.err);
	EXPECT_CONTAINS(" in double_free\n", res.err);
	th_child_free(&res);
}

BOTH(report_starts_on_a_line_of_its_own)
{
	struct th_child res;
	st_scenario("", "half-line-uaf", NULL, &res);
	ASSERT_KILLED_BY(SIGSEGV, res);
	ASSERT_CONTAINS("readelf: Error: ", res.err);
	ASSERT_CONTAINS("\ndangless: use-after-free READ", res.err);
	EXPECT_TRUE(strstr(res.err, "Error: dangless:") == NULL);
	th_child_free(&res);
}

BOTH(live_allocation_overrun_is_reported)
{
	/* past the end of a 64 KiB object: the next page is unmapped */
	struct th_child res;
	st_scenario("", "outside", "65536,65536", &res);
	ASSERT_KILLED_BY(SIGSEGV, res);
	EXPECT_FALSE(strstr(res.out, "survived") != NULL);
	uintptr_t target = st_hex_after(res.out, "target=");
	ASSERT_NE((uintptr_t)0, target);
	EXPECT_EQ(target, st_hex_after(res.err, "out-of-bounds READ of size "
						"1 at "));
	EXPECT_CONTAINS(": 0 bytes after a 65536-byte allocation (live)\n",
			res.err);
	EXPECT_CONTAINS("\nSUMMARY: Dangless: heap-buffer-overflow ", res.err);
	th_child_free(&res);
	/* p[-1] is not tested: whether the page before an object is mapped
	 * (a neighbour's) or not depends on where the class streams landed */
}

BOTH(symbolize_0_prints_object_offsets)
{
	struct th_child res;
	st_scenario("symbolize=0", "uaf-read", NULL, &res);
	ASSERT_KILLED_BY(SIGSEGV, res);
	EXPECT_TRUE(strstr(res.err, "scenario.c:") == NULL);
	EXPECT_CONTAINS(" (", res.err);
	EXPECT_CONTAINS("st-scenario", res.err);
	EXPECT_CONTAINS("+0x", res.err);
	EXPECT_CONTAINS("`addr2line -f -i -e FILE OFFSET`", res.err);
	th_child_free(&res);
}

BOTH(missing_symbolizer_degrades_with_one_note)
{
	struct th_child res;
	st_scenario("symbolizer=/nonexistent/addr2line:stacks=1", "uaf-read",
		    NULL, &res);
	ASSERT_KILLED_BY(SIGSEGV, res);
	/* three stacks, one note */
	EXPECT_EQ(1, st_count(res.err, "symbolizer /nonexistent/addr2line "
				       "not found"));
	EXPECT_TRUE(strstr(res.err, "scenario.c:") == NULL);
	EXPECT_CONTAINS("st-scenario", res.err);
	EXPECT_CONTAINS("+0x", res.err);
	EXPECT_CONTAINS("\nSUMMARY: Dangless: heap-use-after-free (", res.err);
	th_child_free(&res);
}

BOTH(llvm_symbolizer_when_asked)
{
	if (access("/usr/bin/llvm-symbolizer", X_OK))
		SKIP(return, "llvm-symbolizer is not installed");
	struct th_child res;
	st_scenario("symbolizer=/usr/bin/llvm-symbolizer", "uaf-read", NULL,
		    &res);
	ASSERT_KILLED_BY(SIGSEGV, res);
	EXPECT_CONTAINS(" in uaf ", res.err);
	EXPECT_CONTAINS("scenario.c:", res.err);
	th_child_free(&res);
}

/* A fresh directory for files the child writes. */
static const char *st_tmpdir(void)
{
	static char dir[64];
	snprintf(dir, sizeof(dir), "/tmp/dl-options-XXXXXX");
	return mkdtemp(dir);
}

/* Files in dir whose name starts with prefix; the last one in path. */
static int st_files(const char *dir, const char *prefix, char *path,
		    size_t cap)
{
	DIR *d = opendir(dir);
	int n = 0;
	if (!d)
		return 0;
	for (struct dirent *e; (e = readdir(d));)
		if (!strncmp(e->d_name, prefix, strlen(prefix))) {
			snprintf(path, cap, "%s/%s", dir, e->d_name);
			n++;
		}
	closedir(d);
	return n;
}

BOTH(log_path_writes_path_dot_pid)
{
	const char *dir = st_tmpdir();
	ASSERT_NOT_NULL(dir);
	char opts[256], log[300];
	snprintf(opts, sizeof(opts), "log_path=%s/report", dir);
	struct th_child res;
	st_scenario(opts, "uaf-read", NULL, &res);
	ASSERT_KILLED_BY(SIGSEGV, res);
	EXPECT_TRUE(strstr(res.err, "use-after-free") == NULL);
	/* report.PID: digits after the dot */
	ASSERT_EQ(1, st_files(dir, "report.", log, sizeof(log)));
	EXPECT_TRUE(strspn(strrchr(log, '.') + 1, "0123456789") ==
		    strlen(strrchr(log, '.') + 1));
	char *text = st_slurp(log);
	ASSERT_NOT_NULL(text);
	uintptr_t target = st_hex_after(res.out, "target=");
	struct th_child as_if = res;
	as_if.err = text;
	ASSERT_UAF_REPORT(as_if, "READ", target, 10, 100);
	EXPECT_CONTAINS("\nSUMMARY: Dangless: ", text);
	free(text);
	unlink(log);
	rmdir(dir);
	th_child_free(&res);
}

BOTH_TIMEOUT(exitcode_n_for_bad_frees, ST_CHILDREN_BUDGET(2))
{
	struct th_child res;
	st_scenario("exitcode=23", "double-free", NULL, &res);
	ASSERT_EXITED(23, res);
	EXPECT_CONTAINS("dangless: double free of 0x", res.err);
	EXPECT_FALSE(strstr(res.out, "survived") != NULL);
	th_child_free(&res);
	/* a dangling access still dies of its signal */
	st_scenario("exitcode=23", "uaf-read", NULL, &res);
	ASSERT_KILLED_BY(SIGSEGV, res);
	th_child_free(&res);
}

BOTH_TIMEOUT(abort_on_error_1_aborts_every_report, ST_CHILDREN_BUDGET(2))
{
	struct th_child res;
	st_scenario("abort_on_error=1", "uaf-read", NULL, &res);
	ASSERT_KILLED_BY(SIGABRT, res);
	EXPECT_CONTAINS("dangless: use-after-free READ", res.err);
	th_child_free(&res);
	st_scenario("abort_on_error=1:exitcode=23", "double-free", NULL, &res);
	ASSERT_KILLED_BY(SIGABRT, res);
	th_child_free(&res);
}

BOTH_TIMEOUT(halt_on_error_0_goes_on_after_a_bad_free, ST_CHILDREN_BUDGET(2))
{
	struct th_child res;
	st_scenario("halt_on_error=0", "double-free", NULL, &res);
	ASSERT_EXITED(0, res);
	EXPECT_CONTAINS("survived", res.out);
	EXPECT_CONTAINS("dangless: double free of 0x", res.err);
	EXPECT_CONTAINS("\nSUMMARY: Dangless: double-free ", res.err);
	th_child_free(&res);
	/* but not after a dangling access */
	st_scenario("halt_on_error=0", "uaf-read", NULL, &res);
	ASSERT_KILLED_BY(SIGSEGV, res);
	th_child_free(&res);
}

/*
 * A setuid-root copy of st-scenario (Dangless linked in: the loader ignores
 * LD_PRELOAD there) run by an unprivileged user: revoke=batch would let the
 * dangling read through, log_path would write a file as root.
 */
TEST_TIMEOUT(secure_execution_ignores_weakening_options, ST_CHILDREN_BUDGET(4))
{
	if (geteuid() != 0)
		SKIP(return, "needs root to make a setuid-root program");
	if (access("/usr/bin/setpriv", X_OK))
		SKIP(return, "setpriv (util-linux) is not installed");
	const char *dir = st_tmpdir();
	ASSERT_NOT_NULL(dir);
	char prog[128], cmd[1024], opts[256], log[160];
	snprintf(prog, sizeof(prog), "%s/st-scenario-suid", dir);
	snprintf(cmd, sizeof(cmd),
		 "cp '%s' '%s' && chown root:root '%s' && chmod 4755 '%s' && "
		 "chmod 755 '%s'",
		 st_selftest_prog("st-scenario"), prog, prog, prog, dir);
	const char *const sh[] = {"/bin/sh", "-c", cmd, NULL};
	struct th_child res;
	th_exec(sh, NULL, NULL, 60, &res);
	ASSERT_EXITED(0, res);
	th_child_free(&res);
	snprintf(opts, sizeof(opts),
		 "DANGLESS_OPTIONS=revoke=batch:60000:fallback=1:"
		 "log_path=%s/log:verbosity=1",
		 dir);
	const char *const envv[] = {opts, NULL};
	/* nobody: the unprivileged user every Debian system has */
	const char *const argv[] = {"/usr/bin/setpriv", "--reuid=65534",
				    "--regid=65534", "--clear-groups", prog,
				    "uaf-read", NULL};
	th_exec(argv, envv, NULL, 60, &res);
	uintptr_t target = st_hex_after(res.out, "target=");
	ASSERT_UAF_REPORT(res, "READ", target, 10, 100);
	EXPECT_CONTAINS("secure execution", res.err);
	EXPECT_CONTAINS(" revoke", res.err);
	EXPECT_CONTAINS(" fallback", res.err);
	EXPECT_CONTAINS(" log_path", res.err);
	EXPECT_EQ(0, st_files(dir, "log", log, sizeof(log)));
	th_child_free(&res);
	/* the same options, run by its owner (no AT_SECURE): they apply, so
	 * the test above shows them ignored, not ineffective */
	const char *const plain[] = {prog, "uaf-read", NULL};
	th_exec(plain, envv, NULL, 60, &res);
	ASSERT_EXITED(0, res); /* batch:60000 has not revoked it yet */
	EXPECT_CONTAINS("survived", res.out);
	EXPECT_EQ(1, st_files(dir, "log.", log, sizeof(log)));
	th_child_free(&res);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	th_exec(sh, NULL, NULL, 60, &res);
	th_child_free(&res);
}

TEST_HARNESS_MAIN
