// SPDX-License-Identifier: MIT
/*
 * The thesis's test applications (selftests/testapps/), ordinary programs
 * not linked with Dangless: each runs once plainly (glibc malloc) and once
 * under `dangless run --`, and must print the same.  Then the demo,
 * messaging: plainly it leaks Cecile's PIN through the dangling preview;
 * under Dangless it dies at the dangling read with the report.
 */
#include "st-common.h"

/* A run of one of the programs, plain or under Dangless (stacks=1 is slow). */
#define ST_APP_RUN_S 90
/* A test that runs an application n times. */
#define ST_APP_RUNS_BUDGET(n) ((n) * ST_APP_RUN_S + TH_PARENT_ROOM)

static void st_app(bool dangless, const char *const args[],
		   const char *const env[], struct th_child *res)
{
	const char *argv[16];
	int n = 0;
	if (dangless) {
		argv[n++] = st_dangless_bin();
		argv[n++] = "run";
		argv[n++] = "--";
	}
	argv[n++] = st_testapp(args[0]);
	for (int i = 1; args[i] && n < 15; i++)
		argv[n++] = args[i];
	argv[n] = NULL;
	th_exec(argv, env, NULL, ST_APP_RUN_S, res);
}

/* Runs args both ways; both exit 0 with the same stdout. */
static void st_same_output(const char *const args[])
{
	struct th_child g, d;
	st_app(false, args, NULL, &g);
	ASSERT_EXITED(0, g);
	ASSERT_LT((size_t)0, g.out_len);
	st_app(true, args, NULL, &d);
	ASSERT_EXITED(0, d);
	ASSERT_EQ(g.out_len, d.out_len);
	ASSERT_STREQ(g.out, d.out);
	th_child_free(&g);
	th_child_free(&d);
}

TEST_TIMEOUT(hello_world, ST_APP_RUNS_BUDGET(2))
{
	const char *const args[] = {"hello-world", NULL};
	st_same_output(args);
}

TEST(hello_world_runs_under_dangless)
{
	/* stats=1 at exit shows that Dangless really was there */
	const char *const args[] = {"hello-world", NULL};
	const char *const env[] = {"DANGLESS_OPTIONS=stats=1", NULL};
	struct th_child d;
	st_app(true, args, env, &d);
	ASSERT_EXITED(0, d);
	ASSERT_STREQ("Hello, world!\n", d.out);
	ASSERT_CONTAINS("allocs", d.err);
	th_child_free(&d);
}

TEST_TIMEOUT(memstress_defaults, ST_APP_RUNS_BUDGET(2))
{
	const char *const args[] = {"memstress", NULL};
	st_same_output(args);
}

TEST_TIMEOUT(memstress_multi_page_objects, ST_APP_RUNS_BUDGET(2))
{
	const char *const args[] = {"memstress", "2000", "20000", "2", "2",
				    NULL};
	st_same_output(args);
}

TEST_TIMEOUT(memstress_tiny_objects, ST_APP_RUNS_BUDGET(2))
{
	const char *const args[] = {"memstress", "50000", "16", "5", "1",
				    NULL};
	st_same_output(args);
}

TEST_TIMEOUT(writev_syscall, ST_APP_RUNS_BUDGET(2))
{
	const char *const args[] = {"writev-syscall", NULL};
	st_same_output(args);
}

TEST_TIMEOUT(cpp_ofstream, ST_APP_RUNS_BUDGET(2))
{
	const char *const args[] = {"cpp-ofstream", NULL};
	st_same_output(args);
}

TEST_TIMEOUT(memstress_with_options, ST_APP_RUNS_BUDGET(4))
{
	/* the same output whatever the options */
	static const char *const opts[] = {
		"DANGLESS_OPTIONS=stacks=1",
		"DANGLESS_OPTIONS=revoke=batch:64",
		"DANGLESS_OPTIONS=stacks=1:revoke=batch:1000:verbosity=0",
	};
	const char *const args[] = {"memstress", "5000", "3000", "3", "2",
				    NULL};
	struct th_child g;
	st_app(false, args, NULL, &g);
	ASSERT_EXITED(0, g);
	for (int i = 0; i < 3; i++) {
		const char *const env[] = {opts[i], NULL};
		struct th_child d;
		st_app(true, args, env, &d);
		if (!WIFEXITED(d.status))
			TH_LOG("with %s", opts[i]);
		ASSERT_EXITED(0, d);
		ASSERT_STREQ(g.out, d.out);
		th_child_free(&d);
	}
	th_child_free(&g);
}

/* ---- the demo ---- */

TEST(messaging_leaks_pin_under_glibc)
{
	const char *const args[] = {"messaging", NULL};
	struct th_child g;
	st_app(false, args, NULL, &g);
	ASSERT_EXITED(0, g);
	ASSERT_CONTAINS("latest message from \"cecile\": \"PIN 4711\"", g.out);
	ASSERT_CONTAINS("!! Alice's screen shows Cecile's PIN", g.out);
	th_child_free(&g);
}

TEST(messaging_stopped_by_dangless)
{
	const char *const args[] = {"messaging", NULL};
	struct th_child d;
	st_app(true, args, NULL, &d);
	ASSERT_KILLED_BY(SIGSEGV, d);
	/* it got as far as the dangling read, and no further */
	ASSERT_CONTAINS("refreshes her inbox", d.out);
	EXPECT_FALSE(strstr(d.out, "4711\"") != NULL);
	EXPECT_FALSE(strstr(d.out, "!!") != NULL);
	struct st_uaf_report r;
	if (!st_parse_uaf(d.err, &r)) {
		th_print_quoted(d.err);
		ASSERT_TRUE(false);
	}
	EXPECT_STREQ("READ", r.kind);
	EXPECT_EQ((size_t)64, r.size); /* a struct message */
	EXPECT_GT((size_t)64, r.off);
	th_child_free(&d);
}

/* The line of messaging.c that holds text, found in the source now. */
static int st_source_line(const char *file, const char *text)
{
	char path[1024], buf[512];
	snprintf(path, sizeof(path), "%s/testapps/%s", st_source_dir(), file);
	FILE *f = fopen(path, "r");
	int n = 0, found = 0;
	while (f && fgets(buf, sizeof(buf), f) && !found)
		if (++n && strstr(buf, text))
			found = n;
	if (f)
		fclose(f);
	return found;
}

TEST(messaging_report_names_file_and_line)
{
	/* the dangling read is the printf of the preview: its call spans two
	 * lines, and compilers attribute the call to either */
	int line = st_source_line("messaging.c", "latest message from");
	ASSERT_LT(0, line);
	const char *const args[] = {"messaging", NULL};
	struct th_child d;
	st_app(true, args, NULL, &d);
	ASSERT_KILLED_BY(SIGSEGV, d);
	char want1[64], want2[64];
	snprintf(want1, sizeof(want1), "messaging.c:%d\n", line - 1);
	snprintf(want2, sizeof(want2), "messaging.c:%d\n", line);
	if (!strstr(d.err, want1) && !strstr(d.err, want2)) {
		TH_LOG("neither %s nor %s in the report:", want1, want2);
		th_print_quoted(d.err);
		ASSERT_TRUE(false);
	}
	EXPECT_CONTAINS("\nSUMMARY: Dangless: heap-use-after-free ", d.err);
	const char *sum = strstr(d.err, "\nSUMMARY:");
	ASSERT_NOT_NULL(sum);
	EXPECT_CONTAINS("messaging.c:", sum);
	EXPECT_CONTAINS(" in main", sum);
	/* symbolised: no hint to run addr2line by hand */
	EXPECT_TRUE(strstr(d.err, "addr2line") == NULL);
	th_child_free(&d);
}

TEST_TIMEOUT(stripped_program_still_reports_function_and_offset, 150 + TH_PARENT_ROOM)
{
	char dir[] = "/tmp/dl-strip-XXXXXX", copy[64], cmd[512];
	ASSERT_NOT_NULL(mkdtemp(dir));
	snprintf(copy, sizeof(copy), "%s/messaging-stripped", dir);
	snprintf(cmd, sizeof(cmd), "strip -o '%s' '%s'", copy,
		 st_testapp("messaging"));
	const char *const sh[] = {"/bin/sh", "-c", cmd, NULL};
	struct th_child s;
	th_exec(sh, NULL, NULL, 60, &s);
	ASSERT_EXITED(0, s);
	th_child_free(&s);
	const char *const argv[] = {st_dangless_bin(), "run", "--", copy, NULL};
	struct th_child d;
	th_exec(argv, NULL, NULL, 90, &d);
	ASSERT_KILLED_BY(SIGSEGV, d);
	struct st_uaf_report r;
	EXPECT_TRUE(st_parse_uaf(d.err, &r));
	/* -rdynamic keeps main in the dynamic symbols; the offset into the
	 * file is there for a copy that has its debug info */
	EXPECT_CONTAINS(" in main (", d.err);
	EXPECT_CONTAINS("messaging-stripped+0x", d.err);
	EXPECT_CONTAINS("\nSUMMARY: Dangless: heap-use-after-free ", d.err);
	th_child_free(&d);
	unlink(copy);
	rmdir(dir);
}

TEST_HARNESS_MAIN
