// SPDX-License-Identifier: MIT
/*
 * Alias space that lasts (issue 21): with alias_space=64M a program that
 * allocates without end keeps running, because sweeps find the revoked
 * ranges nothing points to and hand them out again; a dangling pointer
 * kept anywhere the sweep looks (a global, a stack, a heap object, TLS, a
 * register of another thread) keeps its range revoked and still faults
 * with its report after many sweeps; threads and fork() go on across
 * sweeps.  Each case runs st-reclaim (reclaim-child.c) under its options.
 */
#include "st-common.h"

#include <signal.h>

/* Small objects take 4 KiB of alias space each in strict mode: 64 MiB
 * holds 16384 of them, so this count makes ~17 sweeps (ST_RECLAIM_CHURN
 * overrides: 10000000 runs the ten million, a few minutes here). */
#define ST_CHURN_DEFAULT 200000

static void st_reclaim(const char *opts, const char *a1, const char *a2,
		       const char *a3, struct th_child *res)
{
	/* ST_RECLAIM_OPTS goes first (backend=kvm in the rig) */
	const char *pre = getenv("ST_RECLAIM_OPTS");
	char env[512];
	snprintf(env, sizeof(env), "DANGLESS_OPTIONS=%s%s%s",
		 pre && *pre ? pre : "", pre && *pre ? ":" : "", opts);
	const char *const envv[] = {env, NULL};
	const char *const argv[] = {st_selftest_prog("st-reclaim"), a1, a2,
				    a3, NULL};
	th_exec(argv, envv, NULL, ST_CHILD_S, res);
}

static unsigned long long st_num_after(const char *text, const char *key)
{
	const char *at = strstr(text, key);
	return at ? strtoull(at + strlen(key), NULL, 10) : 0;
}

TEST_TIMEOUT(churn_runs_to_the_end_in_64M, ST_CHILDREN_BUDGET(3))
{
	const char *n = getenv("ST_RECLAIM_CHURN");
	char count[32];
	snprintf(count, sizeof(count), "%ld",
		 n && *n ? atol(n) : (long)ST_CHURN_DEFAULT);
	struct th_child res;
	st_reclaim("alias_space=64M", "churn", count, NULL, &res);
	ASSERT_EXITED(0, res);
	ASSERT_CONTAINS("done\n", res.out);
	EXPECT_EQ(0ULL, st_num_after(res.out, "fallback_allocs "));
	unsigned long long limit = st_num_after(res.out, " limit ");
	EXPECT_EQ(64ULL << 20, limit);
	EXPECT_LE(st_num_after(res.out, "used "), limit);
	/* far more alias space handed out than the cap: reused */
	EXPECT_LT(4 * limit, st_num_after(res.out, "handed_out "));
	EXPECT_LT(0ULL, st_num_after(res.out, "reused "));
	EXPECT_LT(3ULL, st_num_after(res.out, "reclaims "));
	EXPECT_EQ(0ULL, st_num_after(res.out, "abandoned "));
	th_child_free(&res);
}

TEST_TIMEOUT(without_reclaim_64M_runs_out, ST_CHILDREN_BUDGET(1))
{
	struct th_child res;
	st_reclaim("alias_space=64M:reclaim=0", "churn", "100000", NULL, &res);
	ASSERT_KILLED_BY(SIGABRT, res);
	EXPECT_CONTAINS("alias_space=64M is used up", res.err);
	EXPECT_CONTAINS("reclaim=0", res.err);
	EXPECT_CONTAINS("fallback=1", res.err);
	th_child_free(&res);
}

/* The report that alias space ran out comes out (and the program aborts)
 * in a program with a locale, where glibc's strerror allocates. */
TEST_TIMEOUT(running_out_is_reported_where_strerror_would_allocate,
	     ST_CHILDREN_BUDGET(1))
{
	struct th_child res;
	st_reclaim("alias_space=64M:reclaim=0", "churn", "100000", "locale",
		   &res);
	ASSERT_KILLED_BY(SIGABRT, res);
	EXPECT_CONTAINS("(alias_space: Cannot allocate memory)", res.err);
	EXPECT_CONTAINS("alias_space=64M is used up", res.err);
	th_child_free(&res);
}

TEST_TIMEOUT(without_reclaim_fallback_goes_on, ST_CHILDREN_BUDGET(1))
{
	struct th_child res;
	st_reclaim("alias_space=64M:reclaim=0:fallback=1", "churn", "30000",
		   NULL, &res);
	ASSERT_EXITED(0, res);
	EXPECT_CONTAINS("done\n", res.out);
	EXPECT_CONTAINS("alias_space=64M is used up", res.err);
	EXPECT_LT(0ULL, st_num_after(res.out, "fallback_allocs "));
	th_child_free(&res);
}

/* All there is: a half of the address space the backend runs in, 2^56
 * bytes under backend=kvm with 5-level paging (where the CPU has LA57). */
static unsigned long long st_default_limit(void)
{
	const char *pre = getenv("ST_RECLAIM_OPTS");
	if (!pre || !strstr(pre, "backend=kvm"))
		return 1ULL << 47;
	uint32_t a = 7, b, c = 0, d;
	__asm__ volatile("cpuid" : "+a"(a), "=b"(b), "+c"(c), "=d"(d));
	return c & (1u << 16) ? 1ULL << 56 : 1ULL << 47;
}

TEST_TIMEOUT(alias_space_bad_values_keep_the_default, ST_CHILDREN_BUDGET(4))
{
	struct th_child res;
	st_reclaim("alias_space=1M", "churn", "10", NULL, &res);
	ASSERT_EXITED(0, res);
	EXPECT_CONTAINS("bad value in DANGLESS_OPTIONS item 'alias_space=1M'",
			res.err);
	EXPECT_EQ(st_default_limit(), st_num_after(res.out, " limit "));
	th_child_free(&res);
	st_reclaim("alias_space=12Q", "churn", "10", NULL, &res);
	EXPECT_CONTAINS("bad value", res.err);
	th_child_free(&res);
	st_reclaim("alias_space=2G", "churn", "10", NULL, &res);
	EXPECT_EQ(2ULL << 30, st_num_after(res.out, " limit "));
	EXPECT_FALSE(strstr(res.err, "bad value") != NULL);
	th_child_free(&res);
	st_reclaim("alias_space=1t", "churn", "10", NULL, &res);
	EXPECT_EQ(1ULL << 40, st_num_after(res.out, " limit "));
	th_child_free(&res);
}

/* A 64-byte object freed with its pointer kept in `where`, then ~8 sweeps
 * (4 forced): the read through it is still a use-after-free, 8 bytes into
 * a 64-byte allocation. */
static void st_keep(const char *where)
{
	struct th_child res;
	st_reclaim("alias_space=64M:verbosity=2", "keep", where, "80000",
		   &res);
	EXPECT_FALSE(strstr(res.out, "survived") != NULL);
	EXPECT_LT(5ULL, st_num_after(res.out, "reclaims "));
	EXPECT_LT(0ULL, st_num_after(res.out, "reused "));
	uintptr_t target = st_hex_after(res.out, "target=");
	ASSERT_NE((uintptr_t)0, target);
	ASSERT_UAF_REPORT(res, "READ", target, 8, 64);
	th_child_free(&res);
}

TEST_TIMEOUT(dangling_in_a_global_still_faults, ST_CHILDREN_BUDGET(3))
{
	st_keep("global");
}

TEST_TIMEOUT(dangling_on_the_stack_still_faults, ST_CHILDREN_BUDGET(3))
{
	st_keep("stack");
}

TEST_TIMEOUT(dangling_in_a_heap_object_still_faults, ST_CHILDREN_BUDGET(3))
{
	st_keep("heap");
}

TEST_TIMEOUT(dangling_in_tls_still_faults, ST_CHILDREN_BUDGET(3))
{
	st_keep("tls");
}

TEST_TIMEOUT(dangling_in_a_register_still_faults, ST_CHILDREN_BUDGET(3))
{
	st_keep("register");
}

TEST_TIMEOUT(dropped_ranges_are_reused, ST_CHILDREN_BUDGET(1))
{
	struct th_child res;
	st_reclaim("alias_space=64M", "reuse", NULL, NULL, &res);
	ASSERT_EXITED(0, res);
	EXPECT_CONTAINS("reclaim positive\n", res.out);
	EXPECT_CONTAINS("left_grew 1\n", res.out);
	EXPECT_CONTAINS("reused_grew 1\n", res.out);
	EXPECT_LT(0ULL, st_num_after(res.out, "same_range_again "));
	th_child_free(&res);
}

/* A class whose segment was closed by its last carve and retired by its
 * last free, before the class allocated again: the sweep frees that
 * segment's metadata, other classes' new segments take it, and the class
 * must not carve into whichever one did (it did, from a pointer kept to
 * its closed segment: a free of the new object was an "invalid free"). */
TEST_TIMEOUT(a_closed_segment_is_not_carved_after_a_sweep, ST_CHILDREN_BUDGET(1))
{
	struct th_child res;
	st_reclaim("alias_space=64M", "closed", NULL, NULL, &res);
	ASSERT_EXITED(0, res);
	EXPECT_CONTAINS("reclaimed positive\n", res.out);
	/* the sweep freed a victim's metadata: its range came back (all
	 * four as a rule; one is enough to take the path) */
	EXPECT_LT(0ULL, st_num_after(res.out, "victim_ranges_reused "));
	EXPECT_CONTAINS("in_another_class_segment 0\n", res.out);
	EXPECT_FALSE(strstr(res.err, "invalid free") != NULL);
	th_child_free(&res);
}

/* With stacks=1 each chunk has a block of stacks; a sweep that frees a
 * segment's metadata frees those too (they were lost when the metadata
 * went to its next segment: 0.7 MB after 50,000 pairs, 1.9 MB after
 * 200,000).  Four times the churn, about the same metadata. */
static unsigned long long st_metadata_after_churn(const char *n)
{
	struct th_child res;
	st_reclaim("alias_space=64M:stacks=1:stats=1", "churn", n, NULL, &res);
	ASSERT_EXITED(0, res);
	unsigned long long bytes = st_num_after(res.err, "mem_metadata_bytes = ");
	th_child_free(&res);
	return bytes;
}

TEST_TIMEOUT(reclaimed_segments_give_their_stacks_back, ST_CHILDREN_BUDGET(2))
{
	unsigned long long small = st_metadata_after_churn("50000");
	unsigned long long big = st_metadata_after_churn("200000");
	ASSERT_LT(0ULL, small);
	EXPECT_LT(big, small + small / 2);
}

/* The live peak: what the program held at once (a page of alias space per
 * small object), not what it was handed out in all; it tells the least
 * alias_space= the program runs under. */
#define ST_HOLD 6000
TEST_TIMEOUT(live_peak_is_what_was_held_at_once, ST_CHILDREN_BUDGET(1))
{
	struct th_child res;
	char n[16];
	snprintf(n, sizeof(n), "%d", ST_HOLD);
	st_reclaim("alias_space=64M", "hold", n, NULL, &res);
	ASSERT_EXITED(0, res);
	ASSERT_CONTAINS("done\n", res.out);
	unsigned long long peak = st_num_after(res.out, "live_peak ");
	EXPECT_LE((unsigned long long)ST_HOLD * 4096, peak);
	/* and a few segments more: the ones partly carved at the peak */
	EXPECT_GE((unsigned long long)ST_HOLD * 4096 + (8ULL << 20), peak);
	EXPECT_LT(2 * peak, st_num_after(res.out, "handed_out "));
	EXPECT_LT(0ULL, st_num_after(res.out, "reclaims "));
	th_child_free(&res);
}

TEST_TIMEOUT(threads_allocate_while_main_sweeps, ST_CHILDREN_BUDGET(3))
{
	struct th_child res;
	/* 256M: each thread's cached chunk of each of the 16 classes may hold
	 * a segment of its own (a narrow chunk serves 8 objects), ~128 MiB
	 * live at once, which ran a 128M cap out in 1 of 60 runs in the rig */
	st_reclaim("alias_space=256M", "threads", "20000", NULL, &res);
	EXPECT_CONTAINS("bad 0\n", res.out);
	EXPECT_FALSE(strstr(res.out, "survived") != NULL);
	EXPECT_LT(3ULL, st_num_after(res.out, "reclaims "));
	EXPECT_LT(0ULL, st_num_after(res.out, "threads_stopped "));
	EXPECT_EQ(0ULL, st_num_after(res.out, "abandoned "));
	EXPECT_EQ(0ULL, st_num_after(res.out, "fallback_allocs "));
	/* the read through one thread's kept pointer, after the sweeps */
	uintptr_t target = st_hex_after(res.out, "thread_target=");
	ASSERT_NE((uintptr_t)0, target);
	ASSERT_KILLED_BY(SIGSEGV, res);
	EXPECT_CONTAINS("dangless: use-after-free READ", res.err);
	th_child_free(&res);
}

TEST_TIMEOUT(fork_during_and_after_sweeps, ST_CHILDREN_BUDGET(3))
{
	/* ST_RECLAIM_FORKS: fewer under TCG in the rig (~3 s a fork) */
	const char *env = getenv("ST_RECLAIM_FORKS");
	long n = env && *env ? atol(env) : 20;
	char forks[32], want[96];
	snprintf(forks, sizeof(forks), "%ld", n);
	snprintf(want, sizeof(want), "children segv %ld clean %ld of %ld\n",
		 (n + 1) / 2, n / 2, n);
	struct th_child res;
	st_reclaim("alias_space=64M", "fork", forks, NULL, &res);
	ASSERT_EXITED(0, res);
	EXPECT_CONTAINS(want, res.out);
	EXPECT_LT(0ULL, st_num_after(res.out, "reclaims "));
	th_child_free(&res);
}

TEST_HARNESS_MAIN
