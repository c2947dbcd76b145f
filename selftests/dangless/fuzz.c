// SPDX-License-Identifier: MIT
/*
 * Dangless as the heap checker of a fuzzer: afl-fuzz (Debian's afl++) in
 * non-instrumented mode (-n) runs selftests/testapps/fuzz-target, whose
 * use-after-free sits behind the input byte 'X', from the seed "W".  With
 * AFL_PRELOAD=libdangless.so the fuzzer records the bug as a crash; with
 * plain glibc it reaches the same path (the target counts its visits in a
 * file) and records nothing.
 *
 * afl-fuzz runs unattended here: no UI, no CPU binding (the machine may be
 * busy), no checks of the CPU governor or core_pattern, and each run has a
 * hard deadline: afl-fuzz's own -V and a kill after it.
 */
#include "st-common.h"

#include <dirent.h>
#include <sys/stat.h>

/* Runs of afl-fuzz: generous (a run takes about a second), and with the
 * replay under 120 s, the harness's budget for a test. */
#define ST_AFL_SECONDS 40
#define ST_AFL_KILL_AFTER 60

static const char *st_afl_fuzz(void)
{
	static char path[1024];
	const char *dirs[] = {"/usr/bin", "/usr/local/bin", NULL};
	for (int i = 0; dirs[i]; i++) {
		snprintf(path, sizeof(path), "%s/afl-fuzz", dirs[i]);
		if (access(path, X_OK) == 0)
			return path;
	}
	return NULL;
}

#define ST_NEED_AFL()                                                          \
	do {                                                                   \
		if (!st_afl_fuzz())                                            \
			SKIP(return, "afl-fuzz not installed (Debian package " \
				     "afl++, in tools/apt-packages; run "      \
				     "tools/install-deps)");                   \
	} while (0)

struct st_fuzz_dir {
	char root[64];
	char in[96];
	char out[96];
	char reached[96];
};

static void st_fuzz_dir_make(struct st_fuzz_dir *d)
{
	snprintf(d->root, sizeof(d->root), "/tmp/dl-fuzz-XXXXXX");
	if (!mkdtemp(d->root))
		abort();
	snprintf(d->in, sizeof(d->in), "%s/in", d->root);
	snprintf(d->out, sizeof(d->out), "%s/out", d->root);
	snprintf(d->reached, sizeof(d->reached), "%s/reached", d->root);
	mkdir(d->in, 0755);
	char seed[128];
	snprintf(seed, sizeof(seed), "%s/seed", d->in);
	FILE *f = fopen(seed, "w");
	if (!f)
		abort();
	fputs("W", f); /* one mutation away from the bug */
	fclose(f);
}

static void st_fuzz_dir_remove(const struct st_fuzz_dir *d)
{
	char cmd[256];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", d->root);
	if (system(cmd) != 0)
		TH_LOG("could not remove %s", d->root);
}

/* afl++ 4.04 writes to OUT/crashes without -M/-S; later ones OUT/default. */
static int st_crashes(const char *out, char *first, size_t first_len)
{
	const char *subdirs[] = {"crashes", "default/crashes"};
	int n = 0;
	for (int i = 0; i < 2; i++) {
		char dir[256];
		snprintf(dir, sizeof(dir), "%s/%s", out, subdirs[i]);
		DIR *dp = opendir(dir);
		struct dirent *e;
		while (dp && (e = readdir(dp))) {
			if (strncmp(e->d_name, "id:", 3) != 0)
				continue;
			if (!n && first)
				snprintf(first, first_len, "%s/%s", dir,
					 e->d_name);
			n++;
		}
		if (dp)
			closedir(dp);
	}
	return n;
}

static long st_file_size(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0 ? (long)st.st_size : 0;
}

/*
 * Starts afl-fuzz -n on the target with the given extra environment, its
 * output to ROOT/afl.log.  Returns its pid (its own process group).
 */
static pid_t st_afl_start(const struct st_fuzz_dir *d, const char *const env[])
{
	char log[128], secs[16];
	snprintf(log, sizeof(log), "%s/afl.log", d->root);
	snprintf(secs, sizeof(secs), "%d", ST_AFL_SECONDS);
	fflush(stdout);
	pid_t pid = fork();
	if (pid < 0)
		abort();
	if (pid == 0) {
		setpgid(0, 0);
		int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
		int in = open("/dev/null", O_RDONLY);
		if (fd < 0 || in < 0)
			_exit(127);
		dup2(in, 0);
		dup2(fd, 1);
		dup2(fd, 2);
		/* the suite's own environment must not reach the target */
		unsetenv("LD_PRELOAD");
		unsetenv("DANGLESS_OPTIONS");
		putenv("AFL_NO_UI=1");
		putenv("AFL_SKIP_CPUFREQ=1");
		putenv("AFL_NO_AFFINITY=1");
		putenv("AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1");
		putenv("AFL_NO_AUTODICT=1");
		for (size_t i = 0; env && env[i]; i++)
			putenv((char *)env[i]);
		/* -t: a crash that takes longer than afl-fuzz's own guess of
		 * a timeout (tens of ms, from the dry run) would be counted
		 * as a hang on a busy machine */
		const char *argv[] = {st_afl_fuzz(), "-n", "-t", "10000",
				      "-V", secs, "-i", d->in, "-o", d->out,
				      "--", st_testapp("fuzz-target"), NULL};
		execv(argv[0], (char *const *)argv);
		_exit(127);
	}
	return pid;
}

/* Waits for afl-fuzz until it exits, or kills its group at the deadline. */
static int st_afl_wait(pid_t pid, int deadline_s)
{
	int status = 0;
	for (int ms = 0; ms < deadline_s * 1000; ms += 20) {
		if (waitpid(pid, &status, WNOHANG) == pid)
			return status;
		usleep(20000);
	}
	TH_LOG("afl-fuzz still running after %d s: killed", deadline_s);
	kill(-pid, SIGKILL);
	waitpid(pid, &status, 0);
	return status;
}

static void st_print_log(const struct st_fuzz_dir *d)
{
	char log[128];
	snprintf(log, sizeof(log), "%s/afl.log", d->root);
	char *text = st_slurp(log);
	if (!text)
		return;
	/* the end says why it stopped */
	size_t n = strlen(text);
	th_print_quoted(n > 3000 ? text + n - 3000 : text);
	free(text);
}

/* Without afl-fuzz: the target's bug is invisible on glibc, fatal under
 * Dangless, and the report names the line. */
TEST_TIMEOUT(target_bug_is_silent_on_glibc_and_caught_by_dangless,
	     2 * 60 + TH_PARENT_ROOM)
{
	char in[] = "/tmp/dl-fuzz-input-XXXXXX";
	int fd = mkstemp(in);
	ASSERT_LE(0, fd);
	ASSERT_EQ(1, (int)write(fd, "X", 1));
	close(fd);
	const char *const plain[] = {st_testapp("fuzz-target"), NULL};
	struct th_child g;
	th_exec(plain, NULL, in, 60, &g);
	ASSERT_EXITED(0, g);
	const char *const run[] = {st_dangless_bin(), "run", "--",
				   st_testapp("fuzz-target"), NULL};
	struct th_child d;
	th_exec(run, NULL, in, 60, &d);
	unlink(in);
	struct st_uaf_report r;
	ASSERT_KILLED_BY(SIGSEGV, d);
	ASSERT_TRUE(st_parse_uaf(d.err, &r));
	EXPECT_STREQ("READ", r.kind);
	EXPECT_CONTAINS("SUMMARY: Dangless: heap-use-after-free ", d.err);
	EXPECT_CONTAINS("fuzz-target.c:", d.err);
	th_child_free(&g);
	th_child_free(&d);
}

TEST(afl_fuzz_records_the_uaf_as_a_crash_under_dangless)
{
	ST_NEED_AFL();
	struct st_fuzz_dir d;
	st_fuzz_dir_make(&d);
	char preload[1100];
	snprintf(preload, sizeof(preload), "AFL_PRELOAD=%s", st_dangless_so());
	/* symbolize=0: afl-fuzz throws the target's stderr away anyway */
	const char *const env[] = {preload, "AFL_BENCH_UNTIL_CRASH=1",
				   "DANGLESS_OPTIONS=symbolize=0", NULL};
	pid_t pid = st_afl_start(&d, env);
	int status = st_afl_wait(pid, ST_AFL_KILL_AFTER);
	char crash[512] = "";
	int crashes = st_crashes(d.out, crash, sizeof(crash));
	if (crashes == 0 || !WIFEXITED(status)) {
		TH_LOG("afl-fuzz status 0x%x, %d crashes; its log:", status,
		       crashes);
		st_print_log(&d);
	}
	ASSERT_LT(0, crashes);
	/* the input it saved is the one behind the bug, and it replays:
	 * Dangless's report for it, as a developer would then run it */
	char *input = st_slurp(crash);
	ASSERT_NOT_NULL(input);
	EXPECT_EQ('X', input[0]);
	free(input);
	const char *const run[] = {st_dangless_bin(), "run", "--",
				   st_testapp("fuzz-target"), NULL};
	struct th_child rep;
	th_exec(run, NULL, crash, 30, &rep);
	ASSERT_KILLED_BY(SIGSEGV, rep);
	EXPECT_CONTAINS("SUMMARY: Dangless: heap-use-after-free ", rep.err);
	/* afl-fuzz saved it as a signal death, the way it names them */
	EXPECT_TRUE(strstr(crash, ",sig:11,") != NULL);
	if (th_failed_expectations)
		TH_LOG("saved as %s", crash);
	th_child_free(&rep);
	st_fuzz_dir_remove(&d);
}

TEST(afl_fuzz_records_nothing_on_glibc)
{
	ST_NEED_AFL();
	struct st_fuzz_dir d;
	st_fuzz_dir_make(&d);
	char reached[160];
	snprintf(reached, sizeof(reached), "FUZZ_TARGET_REACHED=%s", d.reached);
	const char *const env[] = {reached, NULL};
	pid_t pid = st_afl_start(&d, env);
	/* afl-fuzz runs one input at a time: once the buggy path has run
	 * twice, the first of those runs has been judged (a crash would be
	 * saved by now).  Then it is stopped as a user would, with ^C. */
	int status = 0;
	bool exited = false;
	for (int ms = 0; ms < ST_AFL_SECONDS * 1000; ms += 20) {
		if (st_file_size(d.reached) >= 2)
			break;
		if (waitpid(pid, &status, WNOHANG) == pid) {
			exited = true;
			break;
		}
		usleep(20000);
	}
	if (!exited) {
		kill(pid, SIGINT);
		status = st_afl_wait(pid, ST_AFL_KILL_AFTER - ST_AFL_SECONDS);
	}
	long visits = st_file_size(d.reached);
	int crashes = st_crashes(d.out, NULL, 0);
	if (visits < 2 || crashes) {
		TH_LOG("afl-fuzz status 0x%x; its log:", status);
		st_print_log(&d);
	}
	ASSERT_LE(2, visits);
	ASSERT_EQ(0, crashes);
	st_fuzz_dir_remove(&d);
}

TEST_HARNESS_MAIN
