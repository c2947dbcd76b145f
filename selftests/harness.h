/* SPDX-License-Identifier: MIT */
/*
 * A small test harness in the style of the Linux kselftest harness.
 *
 *   TEST(name) { ASSERT_EQ(4, 2 + 2); }
 *   TEST_SIGNAL(name, SIGSEGV) { *(volatile int *)0 = 1; }
 *   TEST_TIMEOUT(name, 300) { ...a test that needs more than the default... }
 *   TEST_HARNESS_MAIN
 *
 * Every test runs in a forked child in its own process group with a budget
 * in seconds, so a test that crashes or hangs fails alone.  The budget is
 * the one TEST_TIMEOUT gives, else TH_TIMEOUT from the environment, else 120.
 * ASSERT_* ends the test, EXPECT_* records the failure and goes on.  Output
 * is TAP 13, each result line ending in the test's time ("ok 3 name # 1.2 s");
 * the last line is exactly "N passed, N failed" so that any runner can read
 * the result.
 *
 * th_run() runs a function in a further child with its stdout and stderr
 * captured, and th_exec() runs a program the same way: use them to show that
 * a dangling access really kills the process, and with which report.  Each
 * child gets its own budget, and the budgets of all the children a test
 * starts must fit in the test's own with TH_PARENT_ROOM seconds to spare:
 * otherwise the test would pass or time out depending on how loaded the
 * machine is.  So the harness fails a test as it starts the child that does
 * not fit, on any machine, and says what budget the test needs.
 *
 * TH_SLOWDOWN=N in the environment (an integer, default 1) multiplies every
 * budget, the tests' and their children's alike, for an emulator that runs
 * the same work N times slower: the children still fit as they did.
 */
#ifndef DANGLESS_SELFTEST_HARNESS_H
#define DANGLESS_SELFTEST_HARNESS_H

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define TH_KSFT_PASS 0
#define TH_KSFT_FAIL 1
#define TH_KSFT_SKIP 4

#define TH_DEFAULT_TIMEOUT 120
/* What a test keeps for its own work beyond its children's budgets. */
#define TH_PARENT_ROOM 15

struct th_test {
	const char *name;
	void (*fn)(void);
	int expect_signal; /* 0: must exit 0; else must die by this signal */
	int timeout_s;     /* 0: TH_TIMEOUT or TH_DEFAULT_TIMEOUT */
	struct th_test *next;
};

extern struct th_test *th_tests_head, **th_tests_tail;
extern int th_failed_expectations;
extern const char *th_current;
/* In a test or th_run child: its budget, and what its children were given. */
extern int th_budget_s, th_children_budget_s;
/* In a th_run child, whose stdout is captured rather than the TAP stream. */
extern bool th_in_run_child;

static inline void th_register(struct th_test *t)
{
	if (!th_tests_tail)
		th_tests_tail = &th_tests_head;
	*th_tests_tail = t;
	th_tests_tail = &t->next;
}

#define TH_DEFINE(test_name, sig, timeout)                                     \
	static void test_##test_name(void);                                    \
	static struct th_test th_desc_##test_name = {                          \
		.name = #test_name,                                            \
		.fn = test_##test_name,                                        \
		.expect_signal = sig,                                          \
		.timeout_s = timeout};                                         \
	__attribute__((constructor)) static void th_reg_##test_name(void)      \
	{                                                                      \
		th_register(&th_desc_##test_name);                             \
	}                                                                      \
	static void test_##test_name(void)

#define TEST(name) TH_DEFINE(name, 0, 0)
#define TEST_SIGNAL(name, sig) TH_DEFINE(name, sig, 0)
#define TEST_TIMEOUT(name, seconds) TH_DEFINE(name, 0, seconds)

#define TH_LOG(fmt, ...)                                                       \
	fprintf(stdout, "# %s:%d:%s: " fmt "\n", __FILE__, __LINE__,           \
		th_current, ##__VA_ARGS__)

#define SKIP(statement, fmt, ...)                                              \
	do {                                                                   \
		fprintf(stdout, "# SKIP " fmt "\n", ##__VA_ARGS__);            \
		fflush(stdout);                                                \
		_exit(TH_KSFT_SKIP);                                           \
		statement;                                                     \
	} while (0)

/* Compare as intmax_t or uintmax_t depending on the expected value's type. */
#define TH_CMP(expected, seen, op, is_assert)                                  \
	do {                                                                   \
		__typeof__(expected) th_e = (expected);                        \
		__typeof__(seen) th_s = (seen);                                \
		if (!(th_e op th_s)) {                                         \
			fprintf(stdout,                                        \
				"# %s:%d:%s: expected %s (%jd, 0x%jx) " #op    \
				" %s (%jd, 0x%jx)\n",                          \
				__FILE__, __LINE__, th_current, #expected,     \
				(intmax_t)th_e, (uintmax_t)th_e, #seen,        \
				(intmax_t)th_s, (uintmax_t)th_s);              \
			th_fail(is_assert);                                    \
		}                                                              \
	} while (0)

static inline void th_fail(bool is_assert)
{
	fflush(stdout);
	if (is_assert)
		_exit(TH_KSFT_FAIL);
	th_failed_expectations++;
}

#define ASSERT_EQ(e, s) TH_CMP(e, s, ==, true)
#define ASSERT_NE(e, s) TH_CMP(e, s, !=, true)
#define ASSERT_LT(e, s) TH_CMP(e, s, <, true)
#define ASSERT_LE(e, s) TH_CMP(e, s, <=, true)
#define ASSERT_GT(e, s) TH_CMP(e, s, >, true)
#define ASSERT_GE(e, s) TH_CMP(e, s, >=, true)
#define ASSERT_TRUE(s) TH_CMP(0, !!(s), !=, true)
#define ASSERT_FALSE(s) TH_CMP(0, !!(s), ==, true)
#define ASSERT_NULL(s) TH_CMP((void *)0, (void *)(s), ==, true)
#define ASSERT_NOT_NULL(s) TH_CMP((void *)0, (void *)(s), !=, true)
#define EXPECT_EQ(e, s) TH_CMP(e, s, ==, false)
#define EXPECT_NE(e, s) TH_CMP(e, s, !=, false)
#define EXPECT_LT(e, s) TH_CMP(e, s, <, false)
#define EXPECT_LE(e, s) TH_CMP(e, s, <=, false)
#define EXPECT_GT(e, s) TH_CMP(e, s, >, false)
#define EXPECT_GE(e, s) TH_CMP(e, s, >=, false)
#define EXPECT_TRUE(s) TH_CMP(0, !!(s), !=, false)
#define EXPECT_FALSE(s) TH_CMP(0, !!(s), ==, false)

#define TH_STR(kind, e, s, is_assert)                                          \
	do {                                                                   \
		const char *th_e = (e), *th_s = (s);                           \
		bool th_ok = kind == 0 ? strcmp(th_e, th_s) == 0               \
				       : strstr(th_s, th_e) != NULL;           \
		if (!th_ok) {                                                  \
			fprintf(stdout, "# %s:%d:%s: %s \"%s\" %s:\n",         \
				__FILE__, __LINE__, th_current,                \
				kind == 0 ? "expected" : "expected to find",   \
				th_e, kind == 0 ? "to equal" : "in");          \
			th_print_quoted(th_s);                                 \
			th_fail(is_assert);                                    \
		}                                                              \
	} while (0)

static inline void th_print_quoted(const char *s)
{
	fputs("#   | ", stdout);
	for (; *s; s++) {
		fputc(*s, stdout);
		if (*s == '\n' && s[1])
			fputs("#   | ", stdout);
	}
	fputc('\n', stdout);
}

#define ASSERT_STREQ(e, s) TH_STR(0, e, s, true)
#define EXPECT_STREQ(e, s) TH_STR(0, e, s, false)
/* The text e occurs somewhere in s. */
#define ASSERT_CONTAINS(e, s) TH_STR(1, e, s, true)
#define EXPECT_CONTAINS(e, s) TH_STR(1, e, s, false)

/* ---- running a body or a program in a child, output captured ---- */

struct th_child {
	int status;      /* as from waitpid */
	bool timed_out;
	char *out;       /* stdout, NUL-terminated */
	size_t out_len;
	char *err;       /* stderr, NUL-terminated */
	size_t err_len;
};

#define TH_CHILD_OUTPUT_MAX (8u << 20)

static inline void th_append(char **buf, size_t *len, size_t *cap,
			     const char *data, size_t n)
{
	if (*len + n + 1 > *cap) {
		size_t ncap = *cap ? *cap : 4096;
		while (*len + n + 1 > ncap)
			ncap *= 2;
		*buf = realloc(*buf, ncap);
		if (!*buf)
			abort();
		*cap = ncap;
	}
	memcpy(*buf + *len, data, n);
	*len += n;
	(*buf)[*len] = 0;
}

/* Collects both pipes until EOF or the deadline, then reaps the child. */
static inline void th_collect(pid_t pid, int out_fd, int err_fd,
			      int timeout_s, struct th_child *res)
{
	size_t out_cap = 0, err_cap = 0;
	struct pollfd fds[2] = {{out_fd, POLLIN, 0}, {err_fd, POLLIN, 0}};
	struct timespec start, now;
	int open_fds = 2;

	memset(res, 0, sizeof(*res));
	th_append(&res->out, &res->out_len, &out_cap, "", 0);
	th_append(&res->err, &res->err_len, &err_cap, "", 0);
	clock_gettime(CLOCK_MONOTONIC, &start);
	while (open_fds > 0) {
		clock_gettime(CLOCK_MONOTONIC, &now);
		long left_ms = timeout_s * 1000L -
			       ((now.tv_sec - start.tv_sec) * 1000L +
				(now.tv_nsec - start.tv_nsec) / 1000000L);
		if (left_ms <= 0) {
			res->timed_out = true;
			kill(-pid, SIGKILL);
			kill(pid, SIGKILL);
			break;
		}
		int n = poll(fds, 2, (int)left_ms);
		if (n < 0 && errno == EINTR)
			continue;
		for (int i = 0; i < 2; i++) {
			if (fds[i].fd < 0 || !fds[i].revents)
				continue;
			char chunk[65536];
			ssize_t got = read(fds[i].fd, chunk, sizeof(chunk));
			if (got <= 0) {
				close(fds[i].fd);
				fds[i].fd = -1;
				open_fds--;
				continue;
			}
			if (i == 0 && res->out_len < TH_CHILD_OUTPUT_MAX)
				th_append(&res->out, &res->out_len, &out_cap,
					  chunk, (size_t)got);
			if (i == 1 && res->err_len < TH_CHILD_OUTPUT_MAX)
				th_append(&res->err, &res->err_len, &err_cap,
					  chunk, (size_t)got);
		}
	}
	for (int i = 0; i < 2; i++)
		if (fds[i].fd >= 0)
			close(fds[i].fd);
	while (waitpid(pid, &res->status, 0) < 0 && errno == EINTR)
		;
}

/*
 * Books timeout_s against the budget of the test (or th_run child) that is
 * about to start a child; fails it if its children's budgets no longer fit.
 */
static inline void th_book_child_budget(int timeout_s)
{
	if (!th_budget_s)
		return; /* not inside a test */
	th_children_budget_s += timeout_s;
	if (th_children_budget_s + TH_PARENT_ROOM <= th_budget_s)
		return;
	int needed = th_children_budget_s + TH_PARENT_ROOM;
	if (th_in_run_child)
		fprintf(stderr,
			"# %s: a th_run child's own children have budgets "
			"adding up to %d s (this one %d s), over its %d s less "
			"%d s of room: give that th_run %d s or more, or its "
			"children less\n",
			th_current, th_children_budget_s, timeout_s,
			th_budget_s, TH_PARENT_ROOM, needed);
	else
		fprintf(stdout,
			"# %s: its children's budgets add up to %d s (this one "
			"%d s), over its own %d s less %d s of room, so on a "
			"loaded machine it could time out while its children "
			"are in time: give it TEST_TIMEOUT(%s, %d) or more, or "
			"its children less\n",
			th_current, th_children_budget_s, timeout_s,
			th_budget_s, TH_PARENT_ROOM, th_current, needed);
	th_fail(true);
}

/*
 * In a freshly forked child: its own process group (so that a timeout kills
 * all it started), and death with the process that forked it, so that a
 * budget running out above it also ends it and nothing is left running on.
 * (The death signal follows the forking thread: fork from a test's main
 * thread.)
 */
static inline void th_child_setup(int budget_s, bool run_child)
{
	pid_t parent = getppid();
	setpgid(0, 0);
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != parent)
		_exit(TH_KSFT_FAIL);
	th_budget_s = budget_s;
	th_children_budget_s = 0;
	th_in_run_child = run_child;
}

static inline void th_child_free(struct th_child *res)
{
	free(res->out);
	free(res->err);
	res->out = res->err = NULL;
}

/* A budget as written, stretched by TH_SLOWDOWN. */
static inline int th_scaled(int seconds)
{
	const char *env = getenv("TH_SLOWDOWN");
	int k = env ? atoi(env) : 1;
	return k > 1 && k <= 100 ? seconds * k : seconds;
}

/* Runs fn(arg) in a forked child; the child exits 0 if fn returns. */
static inline void th_run(void (*fn)(void *), void *arg, int timeout_s,
			  struct th_child *res)
{
	int out[2], err[2];
	timeout_s = th_scaled(timeout_s);
	th_book_child_budget(timeout_s);
	if (pipe2(out, O_CLOEXEC) || pipe2(err, O_CLOEXEC))
		abort();
	fflush(stdout);
	fflush(stderr);
	pid_t pid = fork();
	if (pid < 0)
		abort();
	if (pid == 0) {
		th_child_setup(timeout_s, true);
		dup2(out[1], 1);
		dup2(err[1], 2);
		fn(arg);
		fflush(stdout);
		fflush(stderr);
		_exit(0);
	}
	close(out[1]);
	close(err[1]);
	th_collect(pid, out[0], err[0], timeout_s, res);
}

/*
 * Runs argv[0] (looked up in PATH) with the extra environment entries
 * "NAME=value" in env (NULL-terminated, may be NULL); stdin is /dev/null
 * unless stdin_path names a file.
 */
static inline void th_exec(const char *const argv[], const char *const env[],
			   const char *stdin_path, int timeout_s,
			   struct th_child *res)
{
	int out[2], err[2];
	timeout_s = th_scaled(timeout_s);
	th_book_child_budget(timeout_s);
	if (pipe2(out, O_CLOEXEC) || pipe2(err, O_CLOEXEC))
		abort();
	fflush(stdout);
	fflush(stderr);
	pid_t pid = fork();
	if (pid < 0)
		abort();
	if (pid == 0) {
		th_child_setup(timeout_s, false);
		int in = open(stdin_path ? stdin_path : "/dev/null", O_RDONLY);
		if (in >= 0)
			dup2(in, 0);
		dup2(out[1], 1);
		dup2(err[1], 2);
		for (size_t i = 0; env && env[i]; i++)
			putenv((char *)env[i]);
		execvp(argv[0], (char *const *)argv);
		fprintf(stderr, "th_exec: %s: %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	close(out[1]);
	close(err[1]);
	th_collect(pid, out[0], err[0], timeout_s, res);
}

#define ASSERT_EXITED(code, res)                                               \
	do {                                                                   \
		if (!WIFEXITED((res).status) ||                                \
		    WEXITSTATUS((res).status) != (code)) {                     \
			TH_LOG("expected exit(%d), got status 0x%x%s; stderr:",\
			       (code), (res).status,                           \
			       (res).timed_out ? " (timed out)" : "");         \
			th_print_quoted((res).err);                            \
			th_fail(true);                                         \
		}                                                              \
	} while (0)

#define ASSERT_KILLED_BY(sig, res)                                             \
	do {                                                                   \
		if (!WIFSIGNALED((res).status) ||                              \
		    WTERMSIG((res).status) != (sig)) {                         \
			TH_LOG("expected death by %s, got status 0x%x%s; "     \
			       "stderr:",                                      \
			       strsignal(sig), (res).status,                   \
			       (res).timed_out ? " (timed out)" : "");         \
			th_print_quoted((res).err);                            \
			th_fail(true);                                         \
		}                                                              \
	} while (0)

/* ---- the runner ---- */

#define TEST_HARNESS_MAIN                                                      \
	struct th_test *th_tests_head, **th_tests_tail;                        \
	int th_failed_expectations;                                            \
	const char *th_current = "";                                           \
	int th_budget_s, th_children_budget_s;                                 \
	bool th_in_run_child;                                                  \
	int main(int argc, char **argv)                                        \
	{                                                                      \
		return th_main(argc, argv);                                    \
	}

static inline struct th_test *th_find_test(const char *name)
{
	for (struct th_test *t = th_tests_head; t; t = t->next)
		if (strcmp(t->name, name) == 0)
			return t;
	return NULL;
}

/* The budget of test t: its own, else TH_TIMEOUT, else the default... */
static inline int th_test_budget_as_written(const struct th_test *t)
{
	if (t->timeout_s > 0)
		return t->timeout_s;
	const char *env = getenv("TH_TIMEOUT");
	int v = env ? atoi(env) : 0;
	return v > 0 ? v : TH_DEFAULT_TIMEOUT;
}

/* ...stretched by TH_SLOWDOWN. */
static inline int th_test_budget(const struct th_test *t)
{
	return th_scaled(th_test_budget_as_written(t));
}

static inline double th_seconds_since(const struct timespec *start)
{
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	return (double)(now.tv_sec - start->tv_sec) +
	       (double)(now.tv_nsec - start->tv_nsec) / 1e9;
}

static inline int th_run_one(struct th_test *t, int *skipped)
{
	int budget = th_test_budget(t), status = 0;
	fflush(stdout);
	pid_t pid = fork();
	if (pid < 0) {
		perror("fork");
		return 0;
	}
	if (pid == 0) {
		th_child_setup(budget, false);
		th_current = t->name;
		t->fn();
		fflush(stdout);
		_exit(th_failed_expectations ? TH_KSFT_FAIL : TH_KSFT_PASS);
	}
	struct timespec start;
	clock_gettime(CLOCK_MONOTONIC, &start);
	for (;;) {
		pid_t r = waitpid(pid, &status, WNOHANG);
		if (r == pid)
			break;
		if (th_seconds_since(&start) >= budget) {
			kill(-pid, SIGKILL);
			kill(pid, SIGKILL);
			waitpid(pid, &status, 0);
			printf("# %s: timed out after %d s\n", t->name, budget);
			return 0;
		}
		usleep(2000);
	}
	kill(-pid, SIGKILL); /* whatever the test left behind */
	if (t->expect_signal) {
		if (WIFSIGNALED(status) && WTERMSIG(status) == t->expect_signal)
			return 1;
		printf("# %s: expected death by %s, got status 0x%x\n",
		       t->name, strsignal(t->expect_signal), status);
		return 0;
	}
	if (WIFEXITED(status) && WEXITSTATUS(status) == TH_KSFT_SKIP) {
		*skipped = 1;
		return 1;
	}
	if (WIFSIGNALED(status)) {
		printf("# %s: killed by %s\n", t->name,
		       strsignal(WTERMSIG(status)));
		return 0;
	}
	return WIFEXITED(status) && WEXITSTATUS(status) == TH_KSFT_PASS;
}

/* -t NAME[,NAME...]: the tests named, or all without -t. */
static inline int th_selected(const char *only, const char *name)
{
	if (!only)
		return 1;
	size_t n = strlen(name);
	for (const char *p = only; *p;) {
		const char *end = strchr(p, ',');
		size_t len = end ? (size_t)(end - p) : strlen(p);
		if (len == n && !strncmp(p, name, n))
			return 1;
		p += len + (end != NULL);
	}
	return 0;
}

static inline int th_main(int argc, char **argv)
{
	const char *only = NULL;
	int opt;
	while ((opt = getopt(argc, argv, "lt:")) != -1) {
		if (opt == 'l') {
			for (struct th_test *t = th_tests_head; t; t = t->next)
				printf("%s\n", t->name);
			return 0;
		}
		if (opt == 't')
			only = optarg;
		else if (opt != 'l') {
			fprintf(stderr, "usage: %s [-l] [-t test[,test...]]\n",
				argv[0]);
			return 2;
		}
	}
	int total = 0, passed = 0, failed = 0, skipped = 0, n = 0;
	for (struct th_test *t = th_tests_head; t; t = t->next)
		total += th_selected(only, t->name);
	setvbuf(stdout, NULL, _IOLBF, 0);
	printf("TAP version 13\n1..%d\n", total);
	for (struct th_test *t = th_tests_head; t; t = t->next) {
		if (!th_selected(only, t->name))
			continue;
		int skip = 0;
		struct timespec start;
		printf("# RUN %s\n", t->name);
		clock_gettime(CLOCK_MONOTONIC, &start);
		int ok = th_run_one(t, &skip);
		double took = th_seconds_since(&start);
		n++;
		if (skip) {
			skipped++;
			printf("ok %d %s # SKIP\n", n, t->name);
		} else if (ok) {
			passed++;
			printf("ok %d %s # %.1f s\n", n, t->name, took);
		} else {
			failed++;
			printf("not ok %d %s # %.1f s\n", n, t->name, took);
		}
	}
	printf("# Totals: pass:%d fail:%d xfail:0 xpass:0 skip:%d error:0\n",
	       passed, failed, skipped);
	printf("%d passed, %d failed\n", passed, failed);
	return failed ? 1 : 0;
}

#endif
