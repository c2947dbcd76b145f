// SPDX-License-Identifier: MIT
/*
 * Threads and fork: 8 threads x 10^5 operations with frees from other
 * threads, nothing corrupted and nothing lost; after fork() each side has
 * its own copy (a write in the child is not seen by the parent, a free in
 * the child does not disturb the parent) and both still catch dangling
 * accesses.
 */
#include "st-common.h"

#include <malloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/mman.h>

/* ---- 8 threads x 10^5 operations ---- */

#define ST_THREADS 8
#define ST_OPS 100000
#define ST_LIVE 256  /* objects each thread keeps */
#define ST_SLOTS 64  /* the exchange between threads */
#define ST_MAGIC 0x44414e47u

struct st_obj {
	uint32_t magic;
	uint32_t size; /* whole object, header included */
	uint32_t seed;
	unsigned char fill;
	unsigned char pad[3]; /* data starts at sizeof(struct st_obj) */
	unsigned char data[];
};

static _Atomic(struct st_obj *) st_slots[ST_SLOTS];
static atomic_long st_bad, st_cross_frees, st_made, st_freed;

static uint64_t st_rand(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

static struct st_obj *st_obj_new(uint64_t *rng)
{
	uint64_t r = st_rand(rng);
	size_t size = sizeof(struct st_obj) + 1 + r % 2000;
	if (r % 97 == 0)
		size += 20000 + r % 50000; /* now and then a multi-page one */
	struct st_obj *o = malloc(size);
	if (!o)
		return NULL;
	o->magic = ST_MAGIC;
	o->size = (uint32_t)size;
	o->seed = (uint32_t)(r >> 32);
	o->fill = (unsigned char)(o->seed * 7 + 1);
	memset(o->data, o->fill, size - sizeof(*o));
	atomic_fetch_add(&st_made, 1);
	return o;
}

/* What the first corrupted object looked like, for the log. */
static char st_first_bad[256];
static atomic_flag st_first_bad_taken = ATOMIC_FLAG_INIT;

static void st_note_bad(const struct st_obj *o, const char *where, long at,
			unsigned got, unsigned want)
{
	if (atomic_flag_test_and_set(&st_first_bad_taken))
		return;
	snprintf(st_first_bad, sizeof(st_first_bad),
		 "object %p (%u bytes, canonical %p), checked at %s: byte %ld "
		 "is 0x%02x, not 0x%02x",
		 (const void *)o, o->size,
		 dangless_get_canonical((void *)o), where, at, got, want);
}

static bool st_obj_check(const struct st_obj *o, const char *where)
{
	if (o->magic != ST_MAGIC) {
		st_note_bad(o, where, 0, o->magic & 0xff, ST_MAGIC & 0xff);
		return false;
	}
	unsigned char fill = (unsigned char)(o->seed * 7 + 1);
	if (o->fill != fill) {
		st_note_bad(o, where, 12, o->fill, fill);
		return false;
	}
	size_t n = o->size - sizeof(*o);
	/* ends and a stride: enough to see an overlap, cheap enough */
	for (size_t i = 0; i < n; i += 61)
		if (o->data[i] != fill) {
			st_note_bad(o, where, (long)(sizeof(*o) + i),
				    o->data[i], fill);
			return false;
		}
	if (o->data[n - 1] != fill) {
		st_note_bad(o, where, (long)(sizeof(*o) + n - 1),
			    o->data[n - 1], fill);
		return false;
	}
	return true;
}

static void st_obj_free(struct st_obj *o, const char *where)
{
	if (!st_obj_check(o, where))
		atomic_fetch_add(&st_bad, 1);
	o->magic = 0;
	free(o);
	atomic_fetch_add(&st_freed, 1);
}

static void *st_worker(void *arg)
{
	uint64_t rng = 0x9e3779b97f4a7c15ull * ((uintptr_t)arg + 1);
	struct st_obj *live[ST_LIVE] = {0};
	char origin[ST_LIVE] = {0}; /* 1: last made by realloc */
	for (long op = 0; op < ST_OPS; op++) {
		uint64_t r = st_rand(&rng);
		size_t i = (r >> 8) % ST_LIVE;
		switch (r % 8) {
		case 0: /* give one away, take whatever was there */
		case 1: {
			size_t s = (r >> 24) % ST_SLOTS;
			struct st_obj *got =
				atomic_exchange(&st_slots[s], live[i]);
			live[i] = NULL;
			if (got) {
				st_obj_free(got, "free of one from a slot");
				atomic_fetch_add(&st_cross_frees, 1);
			}
			break;
		}
		case 2: /* realloc, contents kept */
			if (live[i]) {
				if (!st_obj_check(live[i], "realloc"))
					atomic_fetch_add(&st_bad, 1);
				size_t ns = sizeof(struct st_obj) + 1 +
					    (r >> 20) % 6000;
				struct st_obj *n = realloc(live[i], ns);
				if (!n) {
					atomic_fetch_add(&st_bad, 1);
					break;
				}
				size_t keep = n->size < ns ? n->size : ns;
				n->size = (uint32_t)ns;
				if (ns > keep)
					memset((char *)n + keep, n->fill,
					       ns - keep);
				live[i] = n;
				origin[i] = 1;
			}
			break;
		case 3:
		case 4:
			if (live[i]) {
				st_obj_free(live[i], origin[i]
							     ? "free of a realloc'd one"
							     : "free of a new one");
				live[i] = NULL;
			}
			break;
		default:
			if (live[i])
				st_obj_free(live[i], origin[i]
							     ? "free of a realloc'd one"
							     : "free of a new one");
			live[i] = st_obj_new(&rng);
			origin[i] = 0;
			if (!live[i])
				atomic_fetch_add(&st_bad, 1);
		}
	}
	for (size_t i = 0; i < ST_LIVE; i++)
		if (live[i])
			st_obj_free(live[i], "free at the end");
	return NULL;
}

/*
 * 8 x 10^5 operations took 2 s on a quiet machine and up to a minute under
 * stacks=1 or batch:64 on a loaded one; the batch flushes and the stack
 * captures are exercised under contention the more operations there are.
 */
#define ST_CROSS_FREES_S 300
TEST_TIMEOUT(threads_8x100k_cross_thread_frees, ST_CROSS_FREES_S)
{
	struct dangless_stats before = st_stats();
	pthread_t t[ST_THREADS];
	for (uintptr_t i = 0; i < ST_THREADS; i++)
		ASSERT_EQ(0, pthread_create(&t[i], NULL, st_worker, (void *)i));
	for (int i = 0; i < ST_THREADS; i++)
		ASSERT_EQ(0, pthread_join(t[i], NULL));
	for (int s = 0; s < ST_SLOTS; s++) {
		struct st_obj *o = atomic_exchange(&st_slots[s], NULL);
		if (o)
			st_obj_free(o, "free of a slot's at the end");
	}
	struct dangless_stats after = st_stats();
	long made = atomic_load(&st_made), freed = atomic_load(&st_freed),
	     cross = atomic_load(&st_cross_frees), bad = atomic_load(&st_bad);
	TH_LOG("made %ld, freed %ld, %ld of them by another thread", made,
	       freed, cross);
	if (bad)
		TH_LOG("first corrupted: %s", st_first_bad);
	/* run-threads-in-rig asks for a guest backend: it must be the one
	 * that ran, with its own page-table entries for the aliases */
	if (st_backend_is("kvm") || st_backend_is("dune")) {
		TH_LOG("%llu PTE writes, %llu shootdowns (%llu signals, %llu "
		       "IPIs)",
		       (unsigned long long)(after.pte_writes - before.pte_writes),
		       (unsigned long long)(after.shootdowns - before.shootdowns),
		       (unsigned long long)(after.shootdown_signals -
					    before.shootdown_signals),
		       (unsigned long long)(after.shootdown_ipis -
					    before.shootdown_ipis));
		EXPECT_LT(before.pte_writes, after.pte_writes);
		/* and its road: no kick of the other kind */
		if (st_shootdowns_by_ipi())
			EXPECT_EQ(before.shootdown_signals, after.shootdown_signals);
		else
			EXPECT_EQ(before.shootdown_ipis, after.shootdown_ipis);
	}
	EXPECT_EQ(0L, bad);
	EXPECT_EQ(made, freed);
	EXPECT_LT(1000L, cross);
	EXPECT_LE(before.allocs + (uint64_t)made, after.allocs);
	/* nothing of the workers' is left live (pthread keeps a few) */
	EXPECT_LE(after.live_objects, before.live_objects + 4 * ST_THREADS);
	EXPECT_EQ(after.allocs - after.frees, after.live_objects);
}

/*
 * Narrowed down: 8 threads, small objects only, a third of the operations
 * a realloc to 16..6000 bytes; every object is checked before each use.
 */
static atomic_long st_realloc_bad;

static void *st_realloc_worker(void *arg)
{
	uint64_t r = 88172645463325252ull * ((uintptr_t)arg + 1);
	unsigned char *p[64] = {0}, f[64] = {0};
	size_t n[64] = {0};
	for (int i = 0; i < 40000; i++) {
		size_t k = (st_rand(&r) >> 8) % 64;
		if (p[k] && (p[k][0] != f[k] || p[k][n[k] - 1] != f[k])) {
			if (atomic_fetch_add(&st_realloc_bad, 1) == 0)
				printf("first bad: %p, %zu bytes: 0x%02x..0x%02x,"
				       " not 0x%02x\n",
				       (void *)p[k], n[k], p[k][0],
				       p[k][n[k] - 1], f[k]);
		}
		if (p[k] && r % 3 == 0) {
			size_t m = 16 + (r >> 20) % 6000;
			unsigned char *q = realloc(p[k], m);
			if (!q)
				abort();
			if (m > n[k])
				memset(q + n[k], f[k], m - n[k]);
			p[k] = q;
			n[k] = m;
		} else {
			free(p[k]);
			n[k] = 1 + (r >> 16) % 2000;
			f[k] = (unsigned char)(r >> 40) | 1;
			p[k] = malloc(n[k]);
			if (!p[k])
				abort();
			memset(p[k], f[k], n[k]);
		}
	}
	for (int k = 0; k < 64; k++)
		free(p[k]);
	return NULL;
}

static void st_realloc_body(void *arg)
{
	(void)arg;
	pthread_t t[8];
	for (uintptr_t i = 0; i < 8; i++)
		pthread_create(&t[i], NULL, st_realloc_worker, (void *)i);
	for (int i = 0; i < 8; i++)
		pthread_join(t[i], NULL);
	printf("bad %ld\n", atomic_load(&st_realloc_bad));
}

#define ST_REALLOC_ROUNDS 3
#define ST_REALLOC_ROUND_S 90
#define ST_REALLOC_S (ST_REALLOC_ROUNDS * ST_REALLOC_ROUND_S + TH_PARENT_ROOM)
TEST_TIMEOUT(threads_realloc_keeps_contents, ST_REALLOC_S)
{
	for (int round = 0; round < ST_REALLOC_ROUNDS; round++) {
		struct th_child res;
		th_run(st_realloc_body, NULL, ST_REALLOC_ROUND_S, &res);
		ASSERT_EXITED(0, res);
		if (!strstr(res.out, "bad 0\n"))
			th_print_quoted(res.out);
		ASSERT_CONTAINS("bad 0\n", res.out);
		th_child_free(&res);
	}
}

/*
 * The same, narrowed down: threads that only allocate, fill and free
 * multi-page objects of one small size class each.
 */
static void *st_multi_page_worker(void *arg)
{
	size_t size = (size_t)(uintptr_t)arg;
	char *live[64] = {0};
	for (int i = 0; i < 20000; i++) {
		int k = (i * 7) % 64;
		free(live[k]);
		live[k] = malloc(size);
		if (!live[k])
			return (void *)1;
		memset(live[k], 1, size);
	}
	for (int k = 0; k < 64; k++)
		free(live[k]);
	return NULL;
}

static void st_multi_page_body(void *arg)
{
	pthread_t t[4];
	for (int i = 0; i < 4; i++)
		pthread_create(&t[i], NULL, st_multi_page_worker, arg);
	for (int i = 0; i < 4; i++) {
		void *r = NULL;
		pthread_join(t[i], &r);
		if (r)
			printf("malloc failed\n");
	}
	printf("done\n");
}

TEST_TIMEOUT(threads_multi_page_small_objects, ST_CHILDREN_BUDGET(2))
{
	static const size_t sizes[] = {9000, 27000};
	for (int i = 0; i < 2; i++) {
		struct th_child res;
		th_run(st_multi_page_body, (void *)(uintptr_t)sizes[i],
		       ST_CHILD_S, &res);
		if (!WIFEXITED(res.status))
			TH_LOG("4 threads of %zu-byte objects", sizes[i]);
		ASSERT_EXITED(0, res);
		ASSERT_STREQ("done\n", res.out);
		th_child_free(&res);
	}
}

/*
 * The thread tests again in a fresh copy of this suite with other options:
 * batch revocation (quarantine and flushes under contention) and stacks=1
 * (a stack captured on every malloc and free).  One test per test and
 * option set, each with the budget of the test it reruns and room for the
 * suite around it: together they take minutes on a loaded machine.  The
 * options come after the suite's own, so that a suite run with
 * backend=kvm reruns under kvm too.
 */
static void st_rerun_with_options(const char *test, const char *options)
{
	const struct th_test *t = th_find_test(test);
	ASSERT_NOT_NULL(t);
	const char *inherited = getenv("DANGLESS_OPTIONS");
	char env[256];
	int n = snprintf(env, sizeof(env), "DANGLESS_OPTIONS=%s%s%s",
			 inherited ? inherited : "", inherited ? ":" : "",
			 options);
	ASSERT_LT(n, (int)sizeof(env));
	const char *const envv[] = {env, NULL};
	const char *const argv[] = {"/proc/self/exe", "-t", test, NULL};
	struct th_child res;
	/* (th_exec stretches it by TH_SLOWDOWN, as the rerun's child does) */
	th_exec(argv, envv, NULL, th_test_budget_as_written(t) + TH_PARENT_ROOM,
		&res);
	if (!strstr(res.out, "\n1 passed, 0 failed\n")) {
		TH_LOG("%s with %s:", test, env);
		th_print_quoted(res.out);
		th_print_quoted(res.err);
	}
	ASSERT_CONTAINS("\n1 passed, 0 failed\n", res.out);
	/* Dangless only warns about an option it cannot take, and goes on
	 * with its default: the rerun would quietly test the defaults */
	EXPECT_STREQ("", res.err);
	th_child_free(&res);
}

#define ST_RERUN(name, test, test_budget_s, options)                          \
	TEST_TIMEOUT(name, (test_budget_s) + 2 * TH_PARENT_ROOM)               \
	{                                                                      \
		st_rerun_with_options(#test, options);                         \
	}

ST_RERUN(threads_8x100k_cross_thread_frees_batch_64,
	 threads_8x100k_cross_thread_frees, ST_CROSS_FREES_S, "revoke=batch:64")
ST_RERUN(threads_8x100k_cross_thread_frees_batch_1000,
	 threads_8x100k_cross_thread_frees, ST_CROSS_FREES_S,
	 "revoke=batch:1000")
ST_RERUN(threads_8x100k_cross_thread_frees_stacks,
	 threads_8x100k_cross_thread_frees, ST_CROSS_FREES_S, "stacks=1")
ST_RERUN(threads_realloc_keeps_contents_batch_64,
	 threads_realloc_keeps_contents, ST_REALLOC_S, "revoke=batch:64")
ST_RERUN(threads_realloc_keeps_contents_batch_1000,
	 threads_realloc_keeps_contents, ST_REALLOC_S, "revoke=batch:1000")
ST_RERUN(threads_realloc_keeps_contents_stacks,
	 threads_realloc_keeps_contents, ST_REALLOC_S, "stacks=1")

/* All threads allocate at once: every object gets its own alias pages. */
#define ST_PER_THREAD 5000
static uintptr_t st_pages[ST_THREADS * ST_PER_THREAD];

static void *st_grab(void *arg)
{
	uintptr_t base = (uintptr_t)arg * ST_PER_THREAD;
	for (uintptr_t i = 0; i < ST_PER_THREAD; i++) {
		char *p = malloc(100);
		p[0] = 1;
		st_pages[base + i] = (uintptr_t)p / ST_PAGE;
		free(p);
	}
	return NULL;
}

TEST(threads_never_share_an_alias_page)
{
	pthread_t t[ST_THREADS];
	for (uintptr_t i = 0; i < ST_THREADS; i++)
		ASSERT_EQ(0, pthread_create(&t[i], NULL, st_grab, (void *)i));
	for (int i = 0; i < ST_THREADS; i++)
		pthread_join(t[i], NULL);
	EXPECT_EQ((size_t)0, st_count_duplicates(st_pages, ST_THREADS * ST_PER_THREAD));
}

/* Threads come and go; what they allocated outlives them. */
static void *st_short_lived(void *arg)
{
	uintptr_t id = (uintptr_t)arg;
	char **objs = malloc(100 * sizeof(char *));
	for (int i = 0; i < 100; i++) {
		objs[i] = malloc(16 + (size_t)i * 50);
		memset(objs[i], (int)(id & 0x7f), 16 + (size_t)i * 50);
		if (i % 3 == 0) {
			free(objs[i]);
			objs[i] = NULL;
		}
	}
	return objs;
}

TEST(objects_outlive_their_threads)
{
	for (uintptr_t round = 0; round < 20; round++) {
		pthread_t t[10];
		for (uintptr_t i = 0; i < 10; i++)
			ASSERT_EQ(0, pthread_create(&t[i], NULL, st_short_lived,
						    (void *)(round * 10 + i)));
		for (uintptr_t i = 0; i < 10; i++) {
			char **objs = NULL;
			ASSERT_EQ(0, pthread_join(t[i], (void **)&objs));
			ASSERT_NOT_NULL(objs);
			char want = (char)((round * 10 + i) & 0x7f);
			for (int k = 0; k < 100; k++) {
				if (!objs[k])
					continue;
				ASSERT_EQ(want, objs[k][0]);
				ASSERT_EQ(want, objs[k][15 + k * 50]);
				free(objs[k]);
			}
			free(objs);
		}
	}
}

/* ---- fork ---- */

static void st_fork_private(void *arg)
{
	(void)arg;
	char *small = malloc(64);
	strcpy(small, "parent");
	size_t big_size = 64UL << 20;
	char *big = malloc(big_size);
	memset(big, 'P', big_size);
	char *mid = malloc(3 * ST_PAGE);
	memset(mid, 'p', 3 * ST_PAGE);

	pid_t pid = fork();
	if (pid == 0) {
		strcpy(small, "child");
		memset(mid, 'c', 3 * ST_PAGE);
		big[0] = 'C';
		big[big_size - 1] = 'C';
		free(big); /* big enough to give its memory back */
		free(mid);
		for (int i = 0; i < 1000; i++)
			free(malloc(i * 13 + 1));
		char *n = malloc(64);
		strcpy(n, "child's own");
		printf("child sees %s, %s\n", small, n);
		fflush(stdout);
		_exit(0);
	}
	int status = 0;
	waitpid(pid, &status, 0);
	printf("child exit %d\n", WIFEXITED(status) ? WEXITSTATUS(status) : -1);
	printf("parent sees %s %c%c %c%c\n", small, big[0], big[big_size - 1],
	       mid[0], mid[3 * ST_PAGE - 1]);
	for (size_t i = 0; i < big_size; i += ST_PAGE)
		if (big[i] != 'P') {
			printf("big changed at %zu\n", i);
			break;
		}
	/* the parent goes on allocating and freeing as usual */
	free(mid);
	free(big);
	for (int i = 0; i < 1000; i++)
		free(malloc(i * 13 + 1));
	free(small);
	printf("parent done\n");
}

TEST(fork_child_writes_stay_private)
{
	struct th_child res;
	th_run(st_fork_private, NULL, 60, &res);
	ASSERT_EXITED(0, res);
	EXPECT_CONTAINS("child sees child, child's own\n", res.out);
	EXPECT_CONTAINS("child exit 0\n", res.out);
	EXPECT_CONTAINS("parent sees parent PP pp\n", res.out);
	EXPECT_FALSE(strstr(res.out, "big changed") != NULL);
	EXPECT_CONTAINS("parent done\n", res.out);
	if (th_failed_expectations) {
		th_print_quoted(res.out);
		th_print_quoted(res.err);
	}
	th_child_free(&res);
}

/*
 * After fork both processes allocate and write at the same time; neither
 * may see the other's bytes, in new objects or in ones from before the fork.
 */
enum { ST_FORK_OBJS = 600 };

static size_t st_fork_size(int i)
{
	return 1 + (size_t)(i * 2654435761u) % (i % 10 == 0 ? 100000 : 3000);
}

static int st_fill_and_check(char **objs, char **old, char mark, int rfd,
			     int wfd)
{
	for (int i = 0; i < ST_FORK_OBJS; i++) {
		objs[i] = malloc(st_fork_size(i));
		memset(objs[i], mark, st_fork_size(i));
		memset(old[i], mark, st_fork_size(i));
	}
	/* both sides have written everything: now look */
	char c = 0;
	if (write(wfd, "x", 1) != 1 || read(rfd, &c, 1) != 1)
		return -1;
	int bad = 0;
	for (int i = 0; i < ST_FORK_OBJS; i++) {
		size_t n = st_fork_size(i);
		for (size_t j = 0; j < n; j += 97)
			bad += objs[i][j] != mark || old[i][j] != mark;
		bad += objs[i][n - 1] != mark || old[i][n - 1] != mark;
		free(objs[i]);
	}
	return bad;
}

static void st_fork_concurrent(void *arg)
{
	(void)arg;
	static char *old[ST_FORK_OBJS], *mine[ST_FORK_OBJS];
	for (int i = 0; i < ST_FORK_OBJS; i++) {
		old[i] = malloc(st_fork_size(i));
		memset(old[i], 'o', st_fork_size(i));
	}
	for (int i = 0; i < ST_FORK_OBJS; i += 3) { /* holes to be reused */
		free(old[i]);
		old[i] = malloc(st_fork_size(i));
	}
	int to_child[2], to_parent[2];
	if (pipe(to_child) || pipe(to_parent))
		return;
	pid_t pid = fork();
	if (pid == 0) {
		int bad = st_fill_and_check(mine, old, 'c', to_child[0],
					    to_parent[1]);
		printf("child bad %d\n", bad);
		fflush(stdout);
		_exit(0);
	}
	int bad = st_fill_and_check(mine, old, 'p', to_parent[0], to_child[1]);
	int status;
	waitpid(pid, &status, 0);
	printf("parent bad %d\n", bad);
}

TEST(fork_both_sides_allocate_at_once)
{
	struct th_child res;
	th_run(st_fork_concurrent, NULL, 60, &res);
	ASSERT_EXITED(0, res);
	EXPECT_CONTAINS("child bad 0\n", res.out);
	EXPECT_CONTAINS("parent bad 0\n", res.out);
	if (th_failed_expectations)
		th_print_quoted(res.out);
	th_child_free(&res);
}

static void st_fork_both_catch(void *arg)
{
	(void)arg;
	char *before = malloc(48); /* freed before the fork */
	memset(before, 1, 48);
	free(before);
	pid_t pid = fork();
	if (pid == 0) {
		/* freed before fork: revoked here too */
		printf("child target=%p\n", (void *)(before + 5));
		fflush(stdout);
		(void)st_read(before + 5);
		printf("child survived\n");
		fflush(stdout);
		_exit(0);
	}
	int status = 0;
	waitpid(pid, &status, 0);
	printf("child signal %d\n", WIFSIGNALED(status) ? WTERMSIG(status) : 0);

	pid = fork();
	if (pid == 0) {
		/* allocated and freed in the child */
		char *c = malloc(200);
		memset(c, 2, 200);
		printf("child2 target=%p\n", (void *)(c + 7));
		fflush(stdout);
		free(c);
		st_write(c + 7, 9);
		printf("child2 survived\n");
		fflush(stdout);
		_exit(0);
	}
	waitpid(pid, &status, 0);
	printf("child2 signal %d\n",
	       WIFSIGNALED(status) ? WTERMSIG(status) : 0);

	/* and the parent, after its children */
	char *p = malloc(300);
	memset(p, 3, 300);
	printf("parent target=%p\n", (void *)(p + 299));
	fflush(stdout);
	free(p);
	(void)st_read(p + 299);
	printf("parent survived\n");
}

TEST(fork_both_sides_catch_uaf)
{
	struct th_child res;
	th_run(st_fork_both_catch, NULL, 60, &res);
	EXPECT_FALSE(strstr(res.out, "survived") != NULL);
	char want[64];
	snprintf(want, sizeof(want), "child signal %d\n", SIGSEGV);
	EXPECT_CONTAINS(want, res.out);
	snprintf(want, sizeof(want), "child2 signal %d\n", SIGSEGV);
	EXPECT_CONTAINS(want, res.out);
	ASSERT_KILLED_BY(SIGSEGV, res);
	/* three reports, each at its own target */
	EXPECT_EQ(3, st_count(res.err, "dangless: use-after-free "));
	uintptr_t t1 = st_hex_after(res.out, "child target="),
		  t2 = st_hex_after(res.out, "child2 target="),
		  t3 = st_hex_after(res.out, "parent target=");
	EXPECT_EQ(t1, st_hex_after(res.err, "READ of size 1 at "));
	EXPECT_EQ(t2, st_hex_after(res.err, "WRITE of size 1 at "));
	const char *second_read = strstr(res.err, "READ of size 1 at ");
	if (second_read)
		second_read = strstr(second_read + 1, "READ of size 1 at ");
	ASSERT_NOT_NULL(second_read);
	EXPECT_EQ(t3, st_hex_after(second_read, "READ of size 1 at "));
	if (th_failed_expectations) {
		th_print_quoted(res.out);
		th_print_quoted(res.err);
	}
	th_child_free(&res);
}

/* Enough scattered frees that the child's revocations take several
 * batches (1024 ranges a call), and a shrunk realloc's revoked tail. */
#define ST_FORK_OBJS 6000

struct st_fork_heap {
	char *obj[ST_FORK_OBJS];
	char *shrunk;
};

static void st_fork_touch(void *arg)
{
	char *p = arg;
	printf("target=%p\n", (void *)p);
	fflush(stdout);
	(void)st_read(p);
	printf("survived\n");
	fflush(stdout);
	_exit(0);
}

/* In the child: each freed sample faults (each in a child of its own),
 * every live object still holds what the parent wrote. */
static void st_fork_heap_child(void *arg)
{
	struct st_fork_heap *h = arg;
	int bad = 0;
	for (int i = 1; i < ST_FORK_OBJS; i += 2)
		for (int k = 0; k < 32; k++)
			bad += h->obj[i][k] != (char)i;
	printf("live objects damaged %d\n", bad);
	char *probes[] = {h->obj[0], h->obj[ST_FORK_OBJS / 2],
			  h->obj[ST_FORK_OBJS - 2], h->shrunk + 3 * 4096};
	for (unsigned i = 0; i < 4; i++) {
		struct th_child res;
		th_run(st_fork_touch, probes[i], 30, &res);
		printf("probe %u signal %d report %d\n", i,
		       WIFSIGNALED(res.status) ? WTERMSIG(res.status) : 0,
		       strstr(res.err, "dangless: ") != NULL);
		th_child_free(&res);
	}
}

/* the forked child runs four 30 s probes; the body runs that child */
#define ST_FORK_HEAP_CHILD_S (4 * 30 + TH_PARENT_ROOM)
#define ST_FORK_HEAP_BODY_S (ST_FORK_HEAP_CHILD_S + TH_PARENT_ROOM)

static void st_fork_heap_body(void *arg)
{
	(void)arg;
	struct st_fork_heap *h = malloc(sizeof(*h));
	for (int i = 0; i < ST_FORK_OBJS; i++) {
		h->obj[i] = malloc(32 + (size_t)(i % 7) * 40);
		memset(h->obj[i], (char)i, 32);
	}
	for (int i = 0; i < ST_FORK_OBJS; i += 2)
		free(h->obj[i]);
	h->shrunk = malloc(5 * 4096);
	memset(h->shrunk, 1, 5 * 4096);
	char *same = realloc(h->shrunk, 100); /* the pages past 100 B go */
	printf("realloc in place %d\n", same == h->shrunk);
	struct th_child res;
	th_run(st_fork_heap_child, h, ST_FORK_HEAP_CHILD_S, &res);
	fputs(res.out, stdout);
	fputs(res.err, stderr);
	printf("child exit %d\n", WIFEXITED(res.status) ? WEXITSTATUS(res.status) : -1);
	th_child_free(&res);
}

/* A forked child keeps every revocation made before the fork: thousands of
 * scattered freed objects and a shrunk realloc's tail fault in the child
 * too, and the live objects between them are intact. */
TEST_TIMEOUT(fork_child_keeps_every_revocation,
	     ST_FORK_HEAP_BODY_S + TH_PARENT_ROOM)
{
	struct th_child res;
	th_run(st_fork_heap_body, NULL, ST_FORK_HEAP_BODY_S, &res);
	ASSERT_EXITED(0, res);
	ASSERT_CONTAINS("child exit 0\n", res.out);
	EXPECT_CONTAINS("live objects damaged 0\n", res.out);
	char want[64];
	for (int i = 0; i < 3; i++) {
		snprintf(want, sizeof(want), "probe %d signal %d report 1\n",
			 i, SIGSEGV);
		EXPECT_CONTAINS(want, res.out);
	}
	/* the tail only when realloc shrank in place (it does: same class) */
	if (strstr(res.out, "realloc in place 1\n")) {
		snprintf(want, sizeof(want), "probe 3 signal %d report 1\n",
			 SIGSEGV);
		EXPECT_CONTAINS(want, res.out);
	}
	EXPECT_FALSE(strstr(res.out, "survived") != NULL);
	if (th_failed_expectations) {
		th_print_quoted(res.out);
		th_print_quoted(res.err);
	}
	th_child_free(&res);
}

static void *st_forker(void *arg)
{
	(void)arg;
	for (int i = 0; i < 20; i++) {
		pid_t pid = fork();
		if (pid == 0) {
			char *p = malloc(100);
			memset(p, 1, 100);
			free(p);
			_exit(0);
		}
		int status;
		waitpid(pid, &status, 0);
		if (!WIFEXITED(status) || WEXITSTATUS(status))
			atomic_fetch_add(&st_bad, 1);
	}
	return NULL;
}

static void *st_allocator(void *arg)
{
	atomic_bool *stop = arg;
	while (!atomic_load(stop)) {
		char *p = malloc(64);
		memset(p, 2, 64);
		free(p);
	}
	return NULL;
}

static void st_fork_threads_body(void *arg)
{
	(void)arg;
	atomic_bool stop = false;
	pthread_t a[3], f;
	for (int i = 0; i < 3; i++)
		pthread_create(&a[i], NULL, st_allocator, &stop);
	pthread_create(&f, NULL, st_forker, NULL);
	pthread_join(f, NULL);
	atomic_store(&stop, true);
	for (int i = 0; i < 3; i++)
		pthread_join(a[i], NULL);
	printf("bad children %ld\n", atomic_load(&st_bad));
}

/* fork() while other threads allocate: the child is never left locked. */
TEST(fork_while_threads_allocate)
{
	struct th_child res;
	th_run(st_fork_threads_body, NULL, 40, &res);
	ASSERT_EXITED(0, res);
	ASSERT_CONTAINS("bad children 0\n", res.out);
	th_child_free(&res);
}

/* exit() while other threads are busy allocating: no hang, status kept. */
static void st_exit_body(void *arg)
{
	(void)arg;
	static atomic_bool stop;
	pthread_t a[4];
	for (int i = 0; i < 4; i++)
		pthread_create(&a[i], NULL, st_allocator, &stop);
	usleep(50000);
	printf("exiting\n");
	fflush(stdout);
	exit(3);
}

TEST(exit_while_threads_allocate)
{
	for (int round = 0; round < 5; round++) {
		struct th_child res;
		th_run(st_exit_body, NULL, 20, &res);
		ASSERT_EXITED(3, res);
		ASSERT_STREQ("exiting\n", res.out);
		th_child_free(&res);
	}
}

/* posix_spawn, system and popen from a Dangless process. */
#include <spawn.h>
extern char **environ;

static void st_spawn_body(void *arg)
{
	(void)arg;
	pid_t pid;
	char *const argv[] = {(char *)"/bin/sh", (char *)"-c",
			      (char *)"echo spawned", NULL};
	char *const envp[] = {(char *)"PATH=/usr/bin:/bin", NULL};
	if (posix_spawn(&pid, "/bin/sh", NULL, NULL, argv, envp) == 0) {
		int status;
		waitpid(pid, &status, 0);
		printf("spawn status %d\n", status);
	}
	fflush(stdout);
	printf("system %d\n", system("echo from system"));
	fflush(stdout);
	FILE *f = popen("echo from popen", "r");
	char line[64] = "";
	if (f && fgets(line, sizeof(line), f))
		printf("popen read: %s", line);
	if (f)
		printf("pclose %d\n", pclose(f));
}

TEST(spawn_system_popen)
{
	struct th_child res;
	th_run(st_spawn_body, NULL, 30, &res);
	ASSERT_EXITED(0, res);
	EXPECT_CONTAINS("spawned\nspawn status 0\n", res.out);
	EXPECT_CONTAINS("from system\nsystem 0\n", res.out);
	EXPECT_CONTAINS("popen read: from popen\npclose 0\n", res.out);
	if (th_failed_expectations)
		th_print_quoted(res.out);
	th_child_free(&res);
}

TEST_HARNESS_MAIN
