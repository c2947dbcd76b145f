// SPDX-License-Identifier: MIT
/*
 * Documented heap exploitation techniques (how2heap's, written for glibc)
 * against Dangless, strict and batch: each scenario (st-scenario technique
 * NAME, our own code) goes as far as the step that would give the attacker
 * something, and Dangless must stop it at the first misuse with the right
 * report.  Elsewhere: unsafe_unlink's p[-1] (gaps suite), house_of_lore's
 * misaligned exit (options suite).
 *
 * What batch mode cannot see, shown here on purpose: a read of freed memory
 * is not reported under revoke=batch (the object is still mapped until its
 * batch is revoked); it reads poison (0xd5...) instead of the old pointer,
 * so the leak fails, silently.
 */
#include "st-common.h"

static const char *const st_modes[] = {"DANGLESS_OPTIONS=revoke=strict",
				       "DANGLESS_OPTIONS=revoke=batch:64"};

static void st_technique(const char *mode, const char *name,
			 struct th_child *res)
{
	const char *const envv[] = {st_preload_env(), mode, NULL};
	const char *const argv[] = {st_selftest_prog("st-scenario-plain"),
				    "technique", name, NULL};
	TH_LOG("%s %s", name, mode);
	th_exec(argv, envv, NULL, ST_CHILD_S, res);
	if (strstr(res->out, "hijacked"))
		th_print_quoted(res->out);
	ASSERT_FALSE(strstr(res->out, "hijacked") != NULL);
}

static void st_expect_line(const struct th_child *res, const char *head,
			   const char *tail)
{
	uintptr_t target = st_hex_after(res->out, "target=");
	ASSERT_NE((uintptr_t)0, target);
	char want[256];
	snprintf(want, sizeof(want), "%s%#lx%s", head, (unsigned long)target,
		 tail);
	ASSERT_CONTAINS(want, res->err);
}

TEST_TIMEOUT(fastbin_dup_is_a_double_free, ST_CHILDREN_BUDGET(2))
{
	for (int i = 0; i < 2; i++) {
		struct th_child res;
		st_technique(st_modes[i], "fastbin-dup", &res);
		ASSERT_KILLED_BY(SIGABRT, res);
		ASSERT_CONTAINS("dangless: double free of ", res.err);
		ASSERT_CONTAINS("a 24-byte allocation that was already freed",
				res.err);
		th_child_free(&res);
	}
}

TEST_TIMEOUT(tcache_poisoning_write_is_caught, ST_CHILDREN_BUDGET(2))
{
	struct th_child res;
	st_technique(st_modes[0], "tcache-poisoning", &res);
	ASSERT_UAF_REPORT(res, "WRITE", st_hex_after(res.out, "target="), 0,
			  128);
	th_child_free(&res);
	/* batch: the write lands in the quarantined object; the flush at
	 * exit finds it, and no malloc ever returns the target */
	st_technique(st_modes[1], "tcache-poisoning", &res);
	ASSERT_KILLED_BY(SIGABRT, res);
	st_expect_line(&res,
		       "dangless: write-after-free detected late "
		       "(revoke=batch:64) at ",
		       ": 0 bytes into a 128-byte allocation (freed");
	th_child_free(&res);
}

TEST_TIMEOUT(house_of_spirit_is_an_invalid_free, ST_CHILDREN_BUDGET(2))
{
	for (int i = 0; i < 2; i++) {
		struct th_child res;
		st_technique(st_modes[i], "house-of-spirit", &res);
		ASSERT_KILLED_BY(SIGABRT, res);
		st_expect_line(&res, "dangless: invalid free of ",
			       ": not a pointer Dangless returned");
		th_child_free(&res);
	}
}

TEST_TIMEOUT(freed_pointer_leak_strict_caught_batch_reads_poison,
	     ST_CHILDREN_BUDGET(2))
{
	struct th_child res;
	st_technique(st_modes[0], "freed-pointer-leak", &res);
	ASSERT_UAF_REPORT(res, "READ", st_hex_after(res.out, "target="), 0,
			  64);
	th_child_free(&res);
	st_technique(st_modes[1], "freed-pointer-leak", &res);
	ASSERT_EXITED(0, res);
	ASSERT_CONTAINS("leaked 0xd5d5d5d5d5d5d5d5\n", res.out);
	ASSERT_CONTAINS("no address leaked", res.out);
	th_child_free(&res);
}

TEST_HARNESS_MAIN
