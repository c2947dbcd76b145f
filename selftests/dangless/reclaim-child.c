// SPDX-License-Identifier: MIT
/*
 * st-reclaim: the programs the reclaim suite runs, each under its own
 * DANGLESS_OPTIONS (alias_space=64M, so that sweeps come every few
 * thousand allocations).  Linked with libdangless.a.
 *
 *   st-reclaim churn N          allocates and frees N 32-byte objects;
 *                               prints the stats that show reuse
 *   st-reclaim keep WHERE N     frees a 64-byte object whose pointer stays
 *                               in WHERE (global, stack, heap, tls,
 *                               register), churns N objects (many sweeps,
 *                               and dangless_reclaim() between), then reads
 *                               through the pointer: must be reported
 *   st-reclaim reuse            drops every pointer to a freed object, then
 *                               sweeps: its range must be handed out again
 *   st-reclaim threads N        4 threads churn N objects each, checking
 *                               their contents, while main sweeps
 *   st-reclaim fork N           a thread sweeps while main forks N times;
 *                               each child reads a dangling pointer
 *                               (must die of SIGSEGV) or churns (exit 0)
 *   st-reclaim hold N           holds N 32-byte objects at once, frees
 *                               them, then churns 8N: the live peak stays
 *   st-reclaim closed           a thread closes a segment of each of four
 *                               classes and exits; a sweep frees the
 *                               segments' metadata; four other classes
 *                               make new segments; the first four
 *                               allocate again, each in a segment of its
 *                               own
 */
#include "st-common.h"

#include <locale.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/wait.h>
#include <unistd.h>

#define VICTIM 64

static void print_stats(void)
{
	struct dangless_stats s = st_stats();
	printf("reclaims %llu\n", (unsigned long long)s.reclaims);
	printf("abandoned %llu\n", (unsigned long long)s.reclaims_abandoned);
	printf("used %llu limit %llu\n",
	       (unsigned long long)s.alias_space_used,
	       (unsigned long long)s.alias_space_limit);
	printf("handed_out %llu\n", (unsigned long long)s.alias_bytes_used);
	printf("reused %llu\n", (unsigned long long)s.alias_bytes_reused);
	printf("pinned %llu\n", (unsigned long long)s.alias_space_pinned);
	printf("threads_stopped %llu\n",
	       (unsigned long long)s.sweep_threads_stopped);
	printf("fallback_allocs %llu\n",
	       (unsigned long long)s.fallback_allocs);
	printf("live_peak %llu\n",
	       (unsigned long long)s.alias_space_live_peak);
	fflush(stdout);
}

/* Allocates and frees n objects of 32 bytes, each written and read. */
static __attribute__((noinline)) long churn_sized(long n, size_t size)
{
	long bad = 0;
	size_t last = size / sizeof(long) - 1;
	for (long i = 0; i < n; i++) {
		volatile long *p = malloc(size);
		if (!p)
			return -1;
		p[0] = i;
		p[last] = ~i;
		bad += p[0] != i || p[last] != ~i;
		free((void *)p);
	}
	return bad;
}

static long churn(long n)
{
	return churn_sized(n, 32);
}

/* ---- keep ---- */

static void *volatile g_keep;
static __thread void *volatile t_keep;
struct holder {
	long before;
	void *volatile keep;
	long after;
};

static atomic_int reg_phase;
static void *volatile reg_handoff;

/* Holds the pointer in r15 only, spinning, until told to give it back. */
static void *reg_thread(void *arg)
{
	(void)arg;
	void *p = reg_handoff;
	__asm__ volatile("mov %0, %%r15\n\t"
			 "xor %0, %0\n\t"
			 "movl $1, (%1)\n\t"
			 "1: pause\n\t"
			 "cmpl $2, (%1)\n\t"
			 "jne 1b\n\t"
			 "mov %%r15, %0"
			 : "+r"(p)
			 : "r"(&reg_phase)
			 : "r15", "memory");
	return p;
}

static __attribute__((noinline)) void churn_and_sweep(long n)
{
	for (int i = 0; i < 4; i++) {
		if (churn(n / 4)) {
			printf("contents changed\n");
			exit(3);
		}
		long r = dangless_reclaim();
		if (r < 0) {
			printf("dangless_reclaim %ld\n", r);
			exit(3);
		}
	}
}

static int keep(const char *where, long n)
{
	void *volatile stack_keep = NULL;
	struct holder *h = malloc(sizeof(*h));
	pthread_t t;
	char *p = malloc(VICTIM);
	memset(p, 'v', VICTIM);
	if (!strcmp(where, "global"))
		g_keep = p;
	else if (!strcmp(where, "stack"))
		stack_keep = p;
	else if (!strcmp(where, "heap"))
		h->keep = p;
	else if (!strcmp(where, "tls"))
		t_keep = p;
	else if (!strcmp(where, "register")) {
		reg_handoff = p;
		pthread_create(&t, NULL, reg_thread, NULL);
		while (atomic_load(&reg_phase) != 1)
			;
		reg_handoff = NULL;
	} else {
		return 2;
	}
	printf("target=%p\n", (void *)(p + 8));
	free(p);
	p = NULL;
	churn_and_sweep(n);
	void *back = NULL;
	if (!strcmp(where, "global"))
		back = g_keep;
	else if (!strcmp(where, "stack"))
		back = stack_keep;
	else if (!strcmp(where, "heap"))
		back = h->keep;
	else if (!strcmp(where, "tls"))
		back = t_keep;
	else {
		atomic_store(&reg_phase, 2);
		pthread_join(t, &back);
	}
	print_stats();
	(void)st_read((char *)back + 8);
	printf("survived\n");
	return 0;
}

/* ---- reuse ---- */

#define HIDE 0x5a5a5a5a5a5a5a5aUL
#define SEG_BYTES (2UL << 20)

/* The segment (2 MiB of alias space, the unit of reuse) p lies in. */
static uintptr_t seg_of(const void *p)
{
	return (uintptr_t)p & ~(SEG_BYTES - 1);
}

/* The pointer lives only in this frame and caller-saved registers, both
 * dead once it returns (a callee-saved register of the caller could keep
 * it, and a later frame spill it where the sweep looks). */
static __attribute__((noinline)) uintptr_t alloc_hidden(void)
{
	char *p = malloc(32); /* the class churn() uses */
	uintptr_t hidden = (uintptr_t)p ^ HIDE;
	free(p);
	return hidden;
}

static int reuse(void)
{
	/* The freed object's address is kept only XORed: invisible to the
	 * sweep, the documented limit, which is what lets its range go. */
	uintptr_t hidden = alloc_hidden();
	/* the rest of its segment and many more: used and freed, so that
	 * its segment retires; nothing kept */
	if (churn(40000))
		return 3;
	struct dangless_stats before = st_stats();
	long r = dangless_reclaim();
	struct dangless_stats after = st_stats();
	printf("reclaim %s\n", r > 0 ? "positive" : "nothing");
	uintptr_t seg = seg_of((void *)(hidden ^ HIDE));
	long same = 0;
	/* strict mode maps one 128 KiB chunk per 32 objects of a class: 64K
	 * allocations of the same class walk through the reusable ranges */
	for (long i = 0; i < 65536 && !same; i++) {
		char *q = malloc(32);
		same += seg_of(q) == seg;
		free(q);
	}
	struct dangless_stats end = st_stats();
	printf("left_grew %d\n",
	       after.alias_space_left > before.alias_space_left);
	printf("reused_grew %d\n",
	       end.alias_bytes_reused > after.alias_bytes_reused);
	printf("same_range_again %ld (segment %p)\n", same, (void *)seg);
	return 0;
}

/* ---- threads ---- */

static atomic_int threads_stop;
static atomic_long threads_done;

static void *churner(void *arg)
{
	long n = (long)arg;
	unsigned seed = (unsigned)(uintptr_t)&n;
	char *keep = NULL;
	for (long i = 0; i < n; i++) {
		size_t size = 16 + rand_r(&seed) % 240;
		unsigned char *p = malloc(size);
		if (!p)
			return (void *)1;
		memset(p, (int)(i & 0xff), size);
		for (size_t k = 0; k < size; k += 97)
			if (p[k] != (unsigned char)(i & 0xff))
				return (void *)2;
		if (i == n / 2) {
			keep = (char *)p; /* stays on this stack, dangling */
			printf("thread_target=%p\n", (void *)keep);
		}
		free(p);
		atomic_fetch_add(&threads_done, 1);
	}
	return keep;
}

static int threads(long n)
{
	pthread_t t[4];
	for (int i = 0; i < 4; i++)
		pthread_create(&t[i], NULL, churner, (void *)n);
	long sweeps = 0;
	while (atomic_load(&threads_done) < 4 * n) {
		if (dangless_reclaim() >= 0)
			sweeps++;
		usleep(2000);
	}
	void *kept[4];
	int bad = 0;
	for (int i = 0; i < 4; i++) {
		pthread_join(t[i], &kept[i]);
		bad += (uintptr_t)kept[i] < 16;
	}
	printf("sweeps_by_main %ld bad %d\n", sweeps, bad);
	print_stats();
	(void)st_read(kept[0]);
	printf("survived\n");
	return 0;
}

/* ---- fork ---- */

static void *sweeper(void *arg)
{
	(void)arg;
	while (!atomic_load(&threads_stop)) {
		dangless_reclaim();
		churn(200);
	}
	return NULL;
}

static int fork_test(long n)
{
	char *dangling = malloc(VICTIM);
	free(dangling);
	pthread_t t;
	pthread_create(&t, NULL, sweeper, NULL);
	int segv = 0, clean = 0;
	for (long i = 0; i < n; i++) {
		churn(500);
		pid_t pid = fork();
		if (pid == 0) {
			if (i % 2) {
				/* a child sweeps and allocates on its own */
				if (churn(5000) || dangless_reclaim() < 0)
					_exit(3);
				_exit(0);
			}
			(void)st_read(dangling);
			_exit(4);
		}
		int status;
		waitpid(pid, &status, 0);
		if (WIFSIGNALED(status) && WTERMSIG(status) == SIGSEGV)
			segv++;
		else if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
			clean++;
	}
	atomic_store(&threads_stop, 1);
	pthread_join(t, NULL);
	printf("children segv %d clean %d of %ld\n", segv, clean, n);
	print_stats();
	return 0;
}

/* ---- hold ---- */

static int hold(long n)
{
	void **v = calloc((size_t)n, sizeof(*v));
	if (!v)
		return 1;
	for (long i = 0; i < n; i++)
		if (!(v[i] = malloc(32)))
			return 1;
	for (long i = 0; i < n; i++)
		free(v[i]);
	free(v);
	long bad = churn(8 * n);
	print_stats();
	printf("%s\n", bad ? "contents changed" : "done");
	return 0;
}

/* ---- closed ---- */

#define CHUNK_BYTES (128UL << 10) /* 32 pages: classes of a page a column */

static const size_t victim[] = {96, 112, 128, 144};
static const size_t other[] = {160, 176, 192, 208};
/* Closed the same way and retired last at the thread's exit (classes go
 * back in size order), so that the retirement's own stack words, left in
 * the thread's cached stack where the sweep reads them, pin its range and
 * not a victim's. */
#define DECOY 240
#define NVICTIMS (sizeof(victim) / sizeof(victim[0]))
static uintptr_t victim_seg[NVICTIMS + 1]; /* hidden from the sweep */

/* Dead frames below us may still hold the objects' addresses. */
static __attribute__((noinline)) void scrub_stack(void)
{
	volatile char junk[64 << 10];
	memset((char *)junk, 0, sizeof(junk));
}

/*
 * A thread allocates each victim class and the decoy (nothing else here
 * allocates them) until an object lands in the last chunk of the class's
 * first segment: the carve of that chunk closed the segment, and the class
 * carves no more.  Every object is freed at once; the thread's exit gives
 * its cached slots back, so the segment's last chunk dies and it retires.
 */
static void *fill_victims(void *arg)
{
	(void)arg;
	for (size_t v = 0; v <= NVICTIMS; v++) {
		size_t size = v < NVICTIMS ? victim[v] : DECOY;
		uintptr_t first = 0;
		for (long i = 0; i < 100000 && !victim_seg[v]; i++) {
			char *p = malloc(size);
			if (!p)
				return (void *)1;
			memset(p, (int)i, size);
			uintptr_t seg = seg_of(p) ^ HIDE;
			bool last = ((uintptr_t)p & (SEG_BYTES - 1)) >=
				    SEG_BYTES - CHUNK_BYTES;
			free(p);
			if (!first)
				first = seg;
			if (seg != first)
				return (void *)2; /* not the class's first */
			if (last)
				victim_seg[v] = seg;
		}
	}
	scrub_stack();
	return NULL;
}

static int closed(void)
{
	pthread_t t;
	void *ret;
	if (pthread_create(&t, NULL, fill_victims, NULL) ||
	    pthread_join(t, &ret))
		return 1;
	for (size_t v = 0; v <= NVICTIMS; v++)
		if (ret || !victim_seg[v]) {
			printf("class of %zu bytes: no closed segment (%p)\n",
			       v < NVICTIMS ? victim[v] : DECOY, ret);
			return 4;
		}
	scrub_stack();
	long reclaimed = dangless_reclaim();
	/* New segments, whose metadata comes from what the sweep freed */
	void *o[NVICTIMS];
	int reused = 0;
	for (size_t j = 0; j < NVICTIMS; j++) {
		if (!(o[j] = malloc(other[j])))
			return 1;
		for (size_t v = 0; v < NVICTIMS; v++)
			reused += seg_of(o[j]) == (victim_seg[v] ^ HIDE);
	}
	int strangers = 0;
	for (size_t v = 0; v < NVICTIMS; v++) {
		char *p = malloc(victim[v]);
		if (!p)
			return 1;
		for (size_t j = 0; j < NVICTIMS; j++)
			strangers += seg_of(p) == seg_of(o[j]);
		memset(p, 0xab, victim[v]);
		free(p);
	}
	for (size_t j = 0; j < NVICTIMS; j++)
		free(o[j]);
	printf("reclaimed %s\n", reclaimed > 0 ? "positive" : "nothing");
	printf("victim_ranges_reused %d\n", reused);
	printf("in_another_class_segment %d\n", strangers);
	return 0;
}

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IONBF, 0);
	if (argc > 2 && !strcmp(argv[1], "churn")) {
		/* As perl does: glibc then translates messages, which
		 * allocates (strerror did, inside Dangless's report), and
		 * what it allocates is 16-byte class, which the churn uses up
		 * so that no cached slot serves it. */
		bool locale = argc > 3 && !strcmp(argv[3], "locale");
		if (locale && !setlocale(LC_ALL, "C.UTF-8"))
			return 3;
		long bad = churn_sized(atol(argv[2]), locale ? 16 : 32);
		print_stats();
		printf("%s\n", bad ? "contents changed" : "done");
		return 0;
	}
	if (argc > 3 && !strcmp(argv[1], "keep"))
		return keep(argv[2], atol(argv[3]));
	if (argc > 1 && !strcmp(argv[1], "reuse"))
		return reuse();
	if (argc > 2 && !strcmp(argv[1], "threads"))
		return threads(atol(argv[2]));
	if (argc > 2 && !strcmp(argv[1], "fork"))
		return fork_test(atol(argv[2]));
	if (argc > 2 && !strcmp(argv[1], "hold"))
		return hold(atol(argv[2]));
	if (argc > 1 && !strcmp(argv[1], "closed"))
		return closed();
	fprintf(stderr, "usage: st-reclaim churn N [locale] | keep WHERE N | reuse | "
			"threads N | fork N | hold N | closed\n");
	return 2;
}
