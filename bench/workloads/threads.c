/* Throughput by thread count: the same work - 160,000 replacements (at
 * scale 1) of random objects of 16-512 B in a live set of 4,000 - done by 1,
 * 2, 4 and 8 threads.  The live set is cut into one block per thread; after
 * each of the 16 rounds the blocks move on to the next thread, so with more
 * than one thread most frees are of objects another thread allocated
 * (larson-style).  Each thread count runs in a fresh process (this program
 * runs itself again, under the same environment), so none inherits the
 * heap, the mappings or the warm state of the one before.  Prints, per
 * thread count:  threads T ops N ns T ops_per_s X */
#include "common.h"
#include <pthread.h>
#include <spawn.h>
#include <sys/wait.h>

#define LIVE 4000
#define ROUNDS 16
#define MAXT 8

extern char **environ;

static int nthreads;
static long per_thread_round;
static char **blocks[MAXT];
static pthread_barrier_t bar;
static uint64_t sums[MAXT];

static void *worker(void *arg)
{
	int id = (int)(intptr_t)arg;
	rng_t r = rng_seed(300 + (uint64_t)id);
	size_t slots = LIVE / (size_t)nthreads;
	uint64_t sum = 0;
	for (int round = 0; round < ROUNDS; round++) {
		char **b = blocks[(id + round) % nthreads];
		for (long k = 0; k < per_thread_round; k++) {
			size_t i = rng_below(&r, slots), n = 16 + rng_below(&r, 497);
			if (b[i])
				sum += (unsigned char)b[i][1];
			free(b[i]);
			b[i] = xmalloc(n);
			b[i][0] = (char)id;
			b[i][1] = (char)k;
			b[i][n - 1] = (char)round;
		}
		pthread_barrier_wait(&bar);
	}
	sums[id] = sum;
	return NULL;
}

/* one thread count, in this process */
static int run(long ops, int t)
{
	nthreads = t;
	per_thread_round = ops / ((long)t * ROUNDS);
	pthread_barrier_init(&bar, NULL, (unsigned)t);
	for (int i = 0; i < t; i++) {
		blocks[i] = calloc(LIVE / (size_t)t, sizeof(char *));
		if (!blocks[i])
			abort();
	}
	pthread_t th[MAXT];
	double t0 = now_ns();
	for (int i = 0; i < t; i++)
		if (pthread_create(&th[i], NULL, worker, (void *)(intptr_t)i))
			abort();
	uint64_t sum = 0;
	for (int i = 0; i < t; i++) {
		pthread_join(th[i], NULL);
		sum += sums[i];
	}
	double ns = now_ns() - t0;
	long done = per_thread_round * t * ROUNDS;
	footprint_report();
	for (int i = 0; i < t; i++) {
		for (size_t j = 0; j < LIVE / (size_t)t; j++)
			free(blocks[i][j]);
		free(blocks[i]);
	}
	printf("threads %d ops %ld ns %.0f ops_per_s %.0f sum %llu\n", t, done, ns,
	       (double)done * 1e9 / ns, (unsigned long long)sum);
	fflush(stdout);
	return 0;
}

int main(int argc, char **argv)
{
	const char *scale = argc > 1 ? argv[1] : "1";
	long ops = scaled(argc, argv, 160000, 8 * ROUNDS * 4);
	if (argc > 2)
		return run(ops, atoi(argv[2]));
	work_begin();
	int failed = 0;
	for (int t = 1; t <= MAXT; t *= 2) {
		char tn[8];
		snprintf(tn, sizeof tn, "%d", t);
		char *args[] = { "/proc/self/exe", (char *)scale, tn, NULL };
		pid_t pid;
		int st;
		if (posix_spawn(&pid, "/proc/self/exe", NULL, NULL, args, environ) ||
		    waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st)) {
			fprintf(stderr, "threads: the run with %d threads failed\n", t);
			failed = 1;
		}
	}
	work_end();
	return failed;
}
