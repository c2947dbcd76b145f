// SPDX-License-Identifier: MIT
/*
 * Real programs, unmodified, under `dangless run --`: python3 (with
 * PYTHONMALLOC=malloc, so that its objects go through malloc), sqlite3, perl
 * and gcc, each on a small allocation-heavy input from selftests/real/.
 * Their output must be exactly what they print with glibc's malloc, and
 * DANGLESS_OPTIONS=stats=1 must show that Dangless did the allocating.
 */
#include "st-common.h"

#include <sys/stat.h>

static const char *st_real_file(const char *name)
{
	static char buf[4][1024];
	static int next;
	char dir[900];
	snprintf(dir, sizeof(dir), "%s/real", st_source_dir());
	return st_join(buf[next++ % 4], sizeof(buf[0]), dir, name);
}

/*
 * Programs run from here need a PATH (gcc finds as and ld through it).  If
 * this process has lost its environment - a start-up bug that the options
 * suite tests for on its own - give them a plain one rather than failing
 * every test here too.
 */
__attribute__((constructor)) static void st_ensure_path(void)
{
	if (!getenv("PATH"))
		setenv("PATH", "/usr/local/bin:/usr/bin:/bin", 1);
}

/* The first of the candidates that is an executable file. */
static const char *st_find_prog(const char *const cands[])
{
	for (int i = 0; cands[i]; i++) {
		if (strchr(cands[i], '/')) {
			if (access(cands[i], X_OK) == 0)
				return cands[i];
			continue;
		}
		const char *path = getenv("PATH");
		char buf[1024];
		while (path && *path) {
			const char *end = strchrnul(path, ':');
			snprintf(buf, sizeof(buf), "%.*s/%s", (int)(end - path),
				 path, cands[i]);
			if (access(buf, X_OK) == 0)
				return strdup(buf);
			path = *end ? end + 1 : end;
		}
	}
	return NULL;
}

#define ST_MAX_ENV 8

/*
 * A run of a real program (python3, sqlite3, perl, gcc), plain or under
 * Dangless; st_compare() makes two.
 */
#define ST_REAL_RUN_S 90
#define ST_COMPARE_BUDGET (2 * ST_REAL_RUN_S + TH_PARENT_ROOM)

/*
 * Runs args plainly and under `dangless run -- ` (with stats=1), both with
 * the extra environment env and stdin from stdin_path; both must exit 0 with
 * the same stdout, and the Dangless run's stderr must hold the statistics.
 */
/* stats=1, after whatever DANGLESS_OPTIONS the suite itself runs with (the
 * rig runs it with backend=kvm). */
static const char *st_stats_options(void)
{
	static char buf[512];
	const char *outer = getenv("DANGLESS_OPTIONS");
	snprintf(buf, sizeof(buf), "DANGLESS_OPTIONS=%s%sstats=1",
		 outer ? outer : "", outer && *outer ? ":" : "");
	return buf;
}

static void st_compare(const char *const args[], const char *const env[],
		       const char *stdin_path, struct th_child *g,
		       struct th_child *d)
{
	const char *argv[32], *denv[ST_MAX_ENV + 2];
	int n = 0, e = 0;
	for (; env && env[e] && e < ST_MAX_ENV; e++)
		denv[e] = env[e];
	denv[e++] = st_stats_options();
	denv[e] = NULL;

	th_exec(args, env, stdin_path, ST_REAL_RUN_S, g);
	ASSERT_EXITED(0, *g);

	argv[n++] = st_dangless_bin();
	argv[n++] = "run";
	argv[n++] = "--";
	for (int i = 0; args[i] && n < 31; i++)
		argv[n++] = args[i];
	argv[n] = NULL;
	th_exec(argv, denv, stdin_path, ST_REAL_RUN_S, d);
	ASSERT_EXITED(0, *d);
	ASSERT_LT((size_t)0, g->out_len);
	if (strcmp(g->out, d->out) != 0) {
		TH_LOG("stdout differs; glibc:");
		th_print_quoted(g->out);
		TH_LOG("dangless:");
		th_print_quoted(d->out);
		th_fail(true);
	}
	/* stats=1: Dangless was there, and said so at exit */
	ASSERT_CONTAINS("allocs", d->err);
}

TEST_TIMEOUT(python3_pymalloc_off, ST_COMPARE_BUDGET)
{
	static const char *const cands[] = {"/usr/bin/python3", "python3", NULL};
	const char *py = st_find_prog(cands);
	if (!py)
		SKIP(return, "no python3");
	const char *const args[] = {py, st_real_file("alloc.py"), NULL};
	const char *const env[] = {"PYTHONMALLOC=malloc", "PYTHONHASHSEED=0",
				   "PYTHONDONTWRITEBYTECODE=1", NULL};
	struct th_child g, d;
	st_compare(args, env, NULL, &g, &d);
	ASSERT_CONTAINS("list: 30000 449985000\n", d.out);
	th_child_free(&g);
	th_child_free(&d);
}

TEST_TIMEOUT(sqlite3_script, ST_COMPARE_BUDGET)
{
	static const char *const cands[] = {"sqlite3", NULL};
	const char *sq = st_find_prog(cands);
	if (!sq)
		SKIP(return, "no sqlite3");
	const char *const args[] = {sq, ":memory:", NULL};
	struct th_child g, d;
	st_compare(args, NULL, st_real_file("script.sql"), &g, &d);
	ASSERT_CONTAINS("20000|4990000|name-9999\n", d.out);
	th_child_free(&g);
	th_child_free(&d);
}

TEST_TIMEOUT(perl_script, ST_COMPARE_BUDGET)
{
	static const char *const cands[] = {"/usr/bin/perl", "perl", NULL};
	const char *pl = st_find_prog(cands);
	if (!pl)
		SKIP(return, "no perl");
	const char *const args[] = {pl, st_real_file("script.pl"), NULL};
	const char *const env[] = {"PERL_HASH_SEED=0",
				   "PERL_PERTURB_KEYS=0", NULL};
	struct th_child g, d;
	st_compare(args, env, NULL, &g, &d);
	ASSERT_CONTAINS("distinct: ", d.out);
	th_child_free(&g);
	th_child_free(&d);
}

/* Compile (two runs), nm (two), link (two), run the programs (two). */
#define ST_LINK_RUN_S 60
#define ST_QUICK_RUN_S 30
TEST_TIMEOUT(gcc_compiles_a_c_file,
	     2 * (ST_REAL_RUN_S + ST_QUICK_RUN_S + ST_LINK_RUN_S +
		  ST_QUICK_RUN_S) + TH_PARENT_ROOM)
{
	static const char *const cands[] = {"gcc", "cc", NULL};
	const char *gcc = st_find_prog(cands);
	if (!gcc)
		SKIP(return, "no gcc");
	char dir[] = "/tmp/dangless-gcc.XXXXXX";
	ASSERT_NOT_NULL(mkdtemp(dir));
	char obj_g[1100], obj_d[1100], exe_g[1100], exe_d[1100];
	snprintf(obj_g, sizeof(obj_g), "%s/glibc.o", dir);
	snprintf(obj_d, sizeof(obj_d), "%s/dangless.o", dir);
	snprintf(exe_g, sizeof(exe_g), "%s/glibc", dir);
	snprintf(exe_d, sizeof(exe_d), "%s/dangless", dir);
	const char *src = st_real_file("prog.c");

	/* compile: plainly, and with every gcc process under Dangless */
	struct th_child g, d;
	const char *const cg[] = {gcc, "-O2", "-c", src, "-o", obj_g, NULL};
	th_exec(cg, NULL, NULL, ST_REAL_RUN_S, &g);
	ASSERT_EXITED(0, g);
	const char *const env[] = {st_stats_options(), NULL};
	const char *const cd[] = {st_dangless_bin(), "run", "--", gcc, "-O2",
				  "-c", src, "-o", obj_d, NULL};
	th_exec(cd, env, NULL, ST_REAL_RUN_S, &d);
	ASSERT_EXITED(0, d);
	char *stats_err = strdup(d.err); /* checked at the end */
	th_child_free(&g);
	th_child_free(&d);

	/* the same symbols ... */
	const char *const ng[] = {"nm", obj_g, NULL}, *const nd[] = {"nm", obj_d, NULL};
	th_exec(ng, NULL, NULL, ST_QUICK_RUN_S, &g);
	th_exec(nd, NULL, NULL, ST_QUICK_RUN_S, &d);
	ASSERT_EXITED(0, g);
	ASSERT_EXITED(0, d);
	ASSERT_CONTAINS(" T main\n", g.out);
	ASSERT_STREQ(g.out, d.out);
	th_child_free(&g);
	th_child_free(&d);

	/* ... the same bytes ... */
	char *bg = st_slurp(obj_g), *bd = st_slurp(obj_d);
	struct stat sg, sd;
	ASSERT_EQ(0, stat(obj_g, &sg));
	ASSERT_EQ(0, stat(obj_d, &sd));
	EXPECT_EQ(sg.st_size, sd.st_size);
	if (sg.st_size == sd.st_size)
		EXPECT_EQ(0, memcmp(bg, bd, (size_t)sg.st_size));
	free(bg);
	free(bd);

	/* ... and the same behaviour once linked */
	const char *const lg[] = {gcc, obj_g, "-o", exe_g, NULL};
	const char *const ld[] = {gcc, obj_d, "-o", exe_d, NULL};
	th_exec(lg, NULL, NULL, ST_LINK_RUN_S, &g);
	th_exec(ld, NULL, NULL, ST_LINK_RUN_S, &d);
	ASSERT_EXITED(0, g);
	ASSERT_EXITED(0, d);
	th_child_free(&g);
	th_child_free(&d);
	const char *const rg[] = {exe_g, NULL}, *const rd[] = {exe_d, NULL};
	th_exec(rg, NULL, NULL, ST_QUICK_RUN_S, &g);
	th_exec(rd, NULL, NULL, ST_QUICK_RUN_S, &d);
	ASSERT_EXITED(0, g);
	ASSERT_EXITED(0, d);
	ASSERT_CONTAINS("depth ", g.out);
	ASSERT_STREQ(g.out, d.out);
	th_child_free(&g);
	th_child_free(&d);

	/* stats=1: Dangless was there, and said so at exit */
	ASSERT_CONTAINS("allocs", stats_err);
	free(stats_err);

	unlink(obj_g);
	unlink(obj_d);
	unlink(exe_g);
	unlink(exe_d);
	rmdir(dir);
}

TEST_HARNESS_MAIN
