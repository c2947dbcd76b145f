// SPDX-License-Identifier: MIT
/*
 * Running out of mappings: with vm.max_map_count lowered, Dangless must say
 * so clearly (the setting, its value, the sysctl to raise it, dangless-setup)
 * and then abort (fallback=0, the default) or carry on unprotected
 * (fallback=1).
 *
 * vm.max_map_count is system-wide, so it is lowered only around the one
 * st-scenario run and always put back: by the test itself, and - should the
 * test be killed first - by a guardian process in its own session that
 * restores the saved value when the test's end of a pipe closes.
 */
#include "st-common.h"

#include <sys/file.h>
#include <sys/stat.h>

#define ST_MMC "/proc/sys/vm/max_map_count"
#define ST_LOW_LIMIT 1500L

static long st_get_mmc(void)
{
	char buf[32] = "";
	int fd = open(ST_MMC, O_RDONLY);
	if (fd < 0)
		return -1;
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	return n > 0 ? atol(buf) : -1;
}

static bool st_set_mmc(long v)
{
	char buf[32];
	int len = snprintf(buf, sizeof(buf), "%ld\n", v);
	int fd = open(ST_MMC, O_WRONLY);
	if (fd < 0)
		return false;
	bool ok = write(fd, buf, (size_t)len) == len;
	close(fd);
	return ok;
}

struct st_lowered {
	long saved;
	int pipe_w;
	pid_t guardian;
	int lock_fd;
};

/*
 * Lowers vm.max_map_count to v (0: leaves it), with a guardian to put it
 * back.  Two runs at once would each save the other's lowered value: a lock
 * on a file in /tmp (held by the test and by its guardian) makes them take
 * turns.
 */
static bool st_lower_mmc(struct st_lowered *l, long v)
{
	l->lock_fd = open("/tmp/dangless-selftests-max_map_count.lock",
			  O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (l->lock_fd >= 0)
		while (flock(l->lock_fd, LOCK_EX) < 0 && errno == EINTR)
			;
	l->saved = st_get_mmc();
	if (l->saved <= 0)
		return false;
	int p[2];
	if (pipe2(p, O_CLOEXEC))
		return false;
	l->guardian = fork();
	if (l->guardian < 0)
		return false;
	if (l->guardian == 0) {
		setsid(); /* out of the test's process group */
		close(p[1]);
		char c;
		while (read(p[0], &c, 1) != 0 && errno == EINTR)
			;
		st_set_mmc(l->saved);
		_exit(0);
	}
	close(p[0]);
	l->pipe_w = p[1];
	return v > 0 ? st_set_mmc(v) : true; /* 0: just hold the lock */
}

/* Puts the saved value back; returns what the setting reads afterwards. */
static long st_restore_mmc(struct st_lowered *l)
{
	st_set_mmc(l->saved);
	long now = st_get_mmc();
	if (l->pipe_w >= 0)
		close(l->pipe_w);
	if (l->guardian > 0)
		waitpid(l->guardian, NULL, 0);
	if (l->lock_fd >= 0)
		close(l->lock_fd); /* the guardian has gone: the lock is free */
	return now;
}

/* false: st-scenario (libdangless.a); true: st-scenario-plain preloaded */
static bool st_preload;

static void st_maps_run(const char *opts, long limit, const char *size,
			const char *count, struct th_child *res)
{
	char env[128];
	snprintf(env, sizeof(env), "DANGLESS_OPTIONS=%s", opts);
	const char *const envv[] = {env, st_preload ? st_preload_env() : NULL,
				    NULL};
	const char *const argv[] = {
		st_selftest_prog(st_preload ? "st-scenario-plain" : "st-scenario"),
		"maps", size, count, NULL};
	struct st_lowered l = {0, -1, -1, -1};
	bool can = getuid() == 0 && access(ST_MMC, W_OK) == 0;
	if (limit > 0 && !can)
		SKIP(return, "needs root to change " ST_MMC);
	/* even unlowered, take the lock: no other run lowers it meanwhile */
	if (can && !st_lower_mmc(&l, limit)) {
		st_restore_mmc(&l);
		TH_LOG("cannot lower " ST_MMC);
		th_fail(true);
	}
	th_exec(argv, envv, NULL, 60, res);
	if (can)
		ASSERT_EQ(l.saved, st_restore_mmc(&l));
	if (res->timed_out ||
	    (WIFEXITED(res->status) && WEXITSTATUS(res->status))) {
		TH_LOG("st-scenario maps %s %s (%s, %s), stdout:", size, count,
		       opts, st_preload ? "preloaded" : "linked");
		th_print_quoted(res->out);
	}
}

static void st_expect_message(const struct th_child *res, long limit)
{
	char value[32];
	snprintf(value, sizeof(value), "%ld", limit);
	ASSERT_CONTAINS("vm.max_map_count", res->err);
	EXPECT_CONTAINS(value, res->err);
	EXPECT_CONTAINS("sysctl -w vm.max_map_count=", res->err);
	EXPECT_CONTAINS("dangless-setup", res->err);
	if (th_failed_expectations)
		th_print_quoted(res->err);
}

TEST(maps_scenario_clean_without_limit)
{
	struct th_child res;
	st_maps_run("", 0, "65536", "3000", &res);
	ASSERT_EXITED(0, res);
	ASSERT_CONTAINS("made 3000\n", res.out);
	EXPECT_CONTAINS("fallback_allocs 0\n", res.out);
	EXPECT_FALSE(strstr(res.err, "vm.max_map_count") != NULL);
	th_child_free(&res);
}

TEST(max_map_count_fallback_0_aborts_with_message)
{
	struct th_child res;
	st_maps_run("fallback=0", ST_LOW_LIMIT, "65536", "6000", &res);
	ASSERT_KILLED_BY(SIGABRT, res);
	EXPECT_FALSE(strstr(res.out, "maps done") != NULL);
	st_expect_message(&res, ST_LOW_LIMIT);
	th_child_free(&res);
}

TEST(max_map_count_default_is_fallback_0)
{
	struct th_child res;
	st_maps_run("", ST_LOW_LIMIT, "65536", "6000", &res);
	ASSERT_KILLED_BY(SIGABRT, res);
	st_expect_message(&res, ST_LOW_LIMIT);
	th_child_free(&res);
}

TEST(max_map_count_fallback_1_continues)
{
	struct th_child res;
	st_maps_run("fallback=1", ST_LOW_LIMIT, "65536", "6000", &res);
	ASSERT_EXITED(0, res);
	ASSERT_CONTAINS("made 6000\n", res.out);
	ASSERT_CONTAINS("maps done\n", res.out);
	EXPECT_FALSE(strstr(res.out, "fallback_allocs 0\n") != NULL);
	EXPECT_TRUE(strstr(res.out, "fallback_allocs ") != NULL);
	st_expect_message(&res, ST_LOW_LIMIT);
	th_child_free(&res);
}

TEST(max_map_count_preload_fallback_0_aborts_with_message)
{
	struct th_child res;
	st_preload = true;
	st_maps_run("", ST_LOW_LIMIT, "65536", "6000", &res);
	ASSERT_KILLED_BY(SIGABRT, res);
	st_expect_message(&res, ST_LOW_LIMIT);
	th_child_free(&res);
}

TEST(max_map_count_preload_fallback_1_continues)
{
	struct th_child res;
	st_preload = true;
	st_maps_run("fallback=1", ST_LOW_LIMIT, "65536", "6000", &res);
	ASSERT_EXITED(0, res);
	ASSERT_CONTAINS("maps done\n", res.out);
	EXPECT_FALSE(strstr(res.out, "fallback_allocs 0\n") != NULL);
	st_expect_message(&res, ST_LOW_LIMIT);
	th_child_free(&res);
}

TEST(max_map_count_small_objects)
{
	/* small objects share mappings (a chunk each): it takes many more */
	struct th_child res;
	st_maps_run("fallback=1", ST_LOW_LIMIT, "40", "400000", &res);
	ASSERT_EXITED(0, res);
	ASSERT_CONTAINS("maps done\n", res.out);
	TH_LOG("%s", strstr(res.err, "vm.max_map_count")
			     ? "the limit was reached and reported"
			     : "the limit was not reached");
	th_child_free(&res);
}

TEST_HARNESS_MAIN
