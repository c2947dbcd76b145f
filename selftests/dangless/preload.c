// SPDX-License-Identifier: MIT
/*
 * Dangless without relinking: st-scenario-plain is an ordinary program
 * (glibc malloc), run under LD_PRELOAD=libdangless.so and under
 * `dangless run --`.  Also: the preload is inherited across execve, and the
 * same program without Dangless does not catch anything (so the catching is
 * Dangless's doing, not the scenario's).
 */
#include "st-common.h"

static void st_plain(const char *how, const char *a1, const char *a2,
		     struct th_child *res)
{
	const char *prog = st_selftest_prog("st-scenario-plain");
	if (!strcmp(how, "preload")) {
		const char *const envv[] = {st_preload_env(), NULL};
		const char *const argv[] = {prog, a1, a2, NULL};
		th_exec(argv, envv, NULL, ST_CHILD_S, res);
	} else if (!strcmp(how, "run")) {
		const char *const argv[] = {st_dangless_bin(), "run", "--",
					    prog, a1, a2, NULL};
		th_exec(argv, NULL, NULL, ST_CHILD_S, res);
	} else {
		const char *const argv[] = {prog, a1, a2, NULL};
		th_exec(argv, NULL, NULL, ST_CHILD_S, res);
	}
}

static const char *const st_hows[] = {"preload", "run"};

TEST_TIMEOUT(without_dangless_nothing_is_caught, ST_CHILDREN_BUDGET(2))
{
	struct th_child res;
	st_plain("glibc", "active", NULL, &res);
	ASSERT_EXITED(0, res);
	ASSERT_CONTAINS("dangless=no", res.out);
	th_child_free(&res);
	st_plain("glibc", "uaf-read", NULL, &res);
	ASSERT_EXITED(0, res);
	ASSERT_CONTAINS("survived", res.out);
	th_child_free(&res);
}

TEST_TIMEOUT(dangless_is_active, ST_CHILDREN_BUDGET(2))
{
	for (int i = 0; i < 2; i++) {
		struct th_child res;
		st_plain(st_hows[i], "active", NULL, &res);
		ASSERT_EXITED(0, res);
		if (!strstr(res.out, "dangless=yes"))
			TH_LOG("under %s", st_hows[i]);
		ASSERT_CONTAINS("dangless=yes", res.out);
		th_child_free(&res);
	}
}

TEST_TIMEOUT(basic_api, ST_CHILDREN_BUDGET(2))
{
	for (int i = 0; i < 2; i++) {
		struct th_child res;
		st_plain(st_hows[i], "basic", NULL, &res);
		ASSERT_EXITED(0, res);
		ASSERT_CONTAINS("basic ok", res.out);
		th_child_free(&res);
	}
}

TEST_TIMEOUT(uaf_read_and_write_caught, ST_CHILDREN_BUDGET(4))
{
	for (int i = 0; i < 2; i++) {
		struct th_child res;
		st_plain(st_hows[i], "uaf-read", NULL, &res);
		uintptr_t target = st_hex_after(res.out, "target=");
		ASSERT_NE((uintptr_t)0, target);
		ASSERT_UAF_REPORT(res, "READ", target, 10, 100);
		th_child_free(&res);
		st_plain(st_hows[i], "uaf-write", NULL, &res);
		target = st_hex_after(res.out, "target=");
		ASSERT_UAF_REPORT(res, "WRITE", target, 10, 100);
		th_child_free(&res);
	}
}

TEST_TIMEOUT(double_free_caught, ST_CHILDREN_BUDGET(2))
{
	for (int i = 0; i < 2; i++) {
		struct th_child res;
		st_plain(st_hows[i], "double-free", NULL, &res);
		ASSERT_KILLED_BY(SIGABRT, res);
		uintptr_t target = st_hex_after(res.out, "target=");
		ASSERT_CONTAINS("dangless: double free of 0x", res.err);
		EXPECT_EQ(target, st_hex_after(res.err, "double free of "));
		th_child_free(&res);
	}
}

TEST_TIMEOUT(churn_same_output_as_glibc, ST_CHILDREN_BUDGET(3))
{
	struct th_child g, d;
	st_plain("glibc", "churn", "20000", &g);
	ASSERT_EXITED(0, g);
	for (int i = 0; i < 2; i++) {
		st_plain(st_hows[i], "churn", "20000", &d);
		ASSERT_EXITED(0, d);
		ASSERT_STREQ(g.out, d.out);
		th_child_free(&d);
	}
	th_child_free(&g);
}

TEST_TIMEOUT(execve_keeps_the_preload, ST_CHILDREN_BUDGET(2))
{
	for (int i = 0; i < 2; i++) {
		struct th_child res;
		st_plain(st_hows[i], "exec", "uaf-read", &res);
		ASSERT_CONTAINS("exec uaf-read\n", res.out);
		uintptr_t target = st_hex_after(res.out, "target=");
		ASSERT_NE((uintptr_t)0, target);
		ASSERT_UAF_REPORT(res, "READ", target, 10, 100);
		th_child_free(&res);
	}
}

/*
 * Stacks come from the unwinder linked into libdangless.so: starting
 * Dangless loads no libgcc_s (glibc's backtrace() did, ~0.2 ms of every
 * process), and C++ programs keep their own for exceptions.
 */
TEST_TIMEOUT(start_up_loads_no_unwinder_library, ST_CHILDREN_BUDGET(1))
{
	struct th_child res;
	const char *const envv[] = {st_preload_env(), NULL};
	const char *const argv[] = {"/bin/cat", "/proc/self/maps", NULL};
	th_exec(argv, envv, NULL, ST_CHILD_S, &res);
	ASSERT_EXITED(0, res);
	ASSERT_CONTAINS("libdangless.so", res.out);
	/* Dangless did start in cat: its canonical memfd (host backend), or
	 * the vCPU libdune made for it (backend=kvm, as the rig runs it) */
	ASSERT_TRUE(strstr(res.out, "/memfd:dangless") ||
		    strstr(res.out, "anon_inode:kvm-vcpu"));
	EXPECT_FALSE(strstr(res.out, "libgcc_s") != NULL);
	if (th_failed_expectations)
		th_print_quoted(res.out);
	th_child_free(&res);
}

TEST(execve_through_a_shell)
{
	/* dangless run -- sh -c '...': the shell's children are covered too */
	char cmd[1200];
	snprintf(cmd, sizeof(cmd), "%s active; exec %s uaf-write",
		 st_selftest_prog("st-scenario-plain"),
		 st_selftest_prog("st-scenario-plain"));
	const char *const argv[] = {st_dangless_bin(), "run", "--", "/bin/sh",
				    "-c", cmd, NULL};
	struct th_child res;
	th_exec(argv, NULL, NULL, ST_CHILD_S, &res);
	ASSERT_CONTAINS("dangless=yes", res.out);
	uintptr_t target = st_hex_after(res.out, "target=");
	ASSERT_UAF_REPORT(res, "WRITE", target, 10, 100);
	th_child_free(&res);
}

TEST(preload_options_pass_through)
{
	/* dangless run passes DANGLESS_OPTIONS on */
	const char *const envv[] = {"DANGLESS_OPTIONS=stacks=1", NULL};
	const char *const argv[] = {st_dangless_bin(), "run", "--",
				    st_selftest_prog("st-scenario-plain"),
				    "uaf-read", NULL};
	struct th_child res;
	th_exec(argv, envv, NULL, ST_CHILD_S, &res);
	ASSERT_KILLED_BY(SIGSEGV, res);
	EXPECT_CONTAINS("dangless: allocated at:", res.err);
	EXPECT_CONTAINS("dangless: freed at:", res.err);
	th_child_free(&res);
}

TEST(dangless_run_exit_status_passes_through)
{
	const char *const argv[] = {st_dangless_bin(), "run", "--", "/bin/sh",
				    "-c", "exit 7", NULL};
	struct th_child res;
	th_exec(argv, NULL, NULL, ST_CHILD_S, &res);
	ASSERT_EXITED(7, res);
	th_child_free(&res);
}

TEST(dangless_run_o_option)
{
	/* dangless run -o name=value is DANGLESS_OPTIONS by another name */
	const char *const argv[] = {st_dangless_bin(), "run", "-o", "stacks=1",
				    "-o", "stats=1", "--",
				    st_selftest_prog("st-scenario-plain"),
				    "uaf-read", NULL};
	struct th_child res;
	th_exec(argv, NULL, NULL, ST_CHILD_S, &res);
	uintptr_t target = st_hex_after(res.out, "target=");
	ASSERT_UAF_REPORT(res, "READ", target, 10, 100);
	EXPECT_CONTAINS("dangless: allocated at:", res.err);
	EXPECT_CONTAINS("dangless: freed at:", res.err);
	th_child_free(&res);
}

TEST(dangless_version)
{
	const char *const argv[] = {st_dangless_bin(), "--version", NULL};
	struct th_child res;
	th_exec(argv, NULL, NULL, ST_CHILD_S, &res);
	ASSERT_EXITED(0, res);
	ASSERT_CONTAINS(DANGLESS_VERSION, res.out);
	th_child_free(&res);
}

TEST_HARNESS_MAIN
