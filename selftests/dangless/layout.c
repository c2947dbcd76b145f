// SPDX-License-Identifier: MIT
/*
 * The alias layout against the kernel's limits: how many mappings a heap
 * costs, that they stay bounded under turnover and thread churn, and that
 * fork keeps every revoked alias revoked, dead chunks included.
 */
#include "../harness.h"
#include "st-common.h"

#include <dangless/dangless.h>
#include <pthread.h>
#include <sys/wait.h>

/* VmSize, in KiB */
static long st_vm_size(void)
{
	FILE *f = fopen("/proc/self/status", "r");
	char line[256];
	long kib = -1;
	while (f && fgets(line, sizeof(line), f))
		if (sscanf(line, "VmSize: %ld kB", &kib) == 1)
			break;
	if (f)
		fclose(f);
	return kib;
}

/*
 * 2*10^5 live small objects, then 2*10^5 random replacements: slots come
 * free thinly spread over every run.  Consecutive chunks must still merge
 * into few kernel mappings (issue target: at most one per 16 live objects).
 */
TEST(long_lived_heap_with_turnover_keeps_mappings_few)
{
	enum { N = 200000, T = 200000 };
	void **v = malloc(N * sizeof(*v));
	ASSERT_NOT_NULL(v);
	for (int i = 0; i < N; i++) {
		v[i] = malloc(16 + (size_t)(i % 4) * 16);
		ASSERT_NOT_NULL(v[i]);
	}
	unsigned s = 1;
	for (int i = 0; i < T; i++) {
		s = s * 1103515245u + 12345u;
		int k = (int)((s >> 8) % N);
		free(v[k]);
		v[k] = malloc(16 + (size_t)(s % 4) * 16);
		ASSERT_NOT_NULL(v[k]);
	}
	struct dangless_stats st;
	ASSERT_EQ(0, dangless_stats(&st));
	TH_LOG("%lu live objects, %lu kernel mappings hold aliases",
	       (unsigned long)st.live_objects,
	       (unsigned long)st.alias_mappings_live);
	ASSERT_LE((uint64_t)N, st.live_objects);
	ASSERT_LT((uint64_t)0, st.alias_mappings_live);
	ASSERT_LE(st.alias_mappings_live * 16, st.live_objects);
	for (int i = 0; i < N; i++)
		free(v[i]);
	free(v);
}

static void *st_one_malloc(void *arg)
{
	free(malloc(100));
	return arg;
}

/*
 * Each thread gets an alternate signal stack on its first allocation (so a
 * report can be printed even from a thread whose stack overflowed): it
 * must go with the thread, or 20000 threads keep 1.25 GiB of them.
 */
TEST(thread_churn_leaves_no_memory_behind)
{
	free(malloc(100));
	long before = st_vm_size();
	for (int i = 0; i < 20000; i++) {
		pthread_t t;
		ASSERT_EQ(0, pthread_create(&t, NULL, st_one_malloc, NULL));
		ASSERT_EQ(0, pthread_join(t, NULL));
	}
	long after = st_vm_size();
	TH_LOG("VmSize: %ld KiB before, %ld KiB after 20000 threads", before,
	       after);
	ASSERT_LT(after, before + 64 * 1024);
}

static char *st_dead[64];

static void st_touch_dead_chunk(void *arg)
{
	(void)arg;
	pid_t child = fork();
	if (child == 0) {
		st_dead[3][0] = 1; /* must fault in the child too */
		_exit(0);
	}
	int status;
	waitpid(child, &status, 0);
	if (WIFSIGNALED(status))
		printf("child died of %d\n", WTERMSIG(status));
	else
		printf("child exited %d\n", WEXITSTATUS(status));
}

/*
 * A chunk whose every object is freed stays mapped, guarded, until its
 * segment goes; fork rebuilds the child's mappings, and must guard the
 * dead chunk's pages again.
 */
TEST(fork_child_faults_in_a_fully_freed_chunk)
{
	for (int i = 0; i < 64; i++)
		st_dead[i] = malloc(32);
	for (int i = 0; i < 64; i++)
		free(st_dead[i]);
	struct th_child res;
	th_run(st_touch_dead_chunk, NULL, 60, &res);
	ASSERT_EXITED(0, res);
	ASSERT_CONTAINS("child died of 11\n", res.out);
	ASSERT_CONTAINS("dangless: use-after-free WRITE ", res.err);
	ASSERT_CONTAINS("bytes into a 32-byte allocation (freed)", res.err);
	th_child_free(&res);
}

TEST_HARNESS_MAIN
