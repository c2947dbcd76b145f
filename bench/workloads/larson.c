/* Larson-like server churn: each thread replaces random objects in a block
 * of slots; between rounds the blocks rotate to the next thread, so most
 * objects are freed by a different thread from the one that made them. */
#include "common.h"
#include <pthread.h>

#define NTHREADS 4
#define SLOTS 2000

static char **blocks[NTHREADS];
static long per_round;
static int rounds;
static pthread_barrier_t bar;
static uint64_t sums[NTHREADS];

static void *worker(void *arg)
{
	int id = (int)(intptr_t)arg;
	rng_t r = rng_seed(100 + (uint64_t)id);
	uint64_t sum = 0;
	for (int round = 0; round < rounds; round++) {
		char **b = blocks[(id + round) % NTHREADS];
		for (long k = 0; k < per_round; k++) {
			size_t i = rng_below(&r, SLOTS), n = 16 + rng_below(&r, 241);
			if (b[i])
				sum += (unsigned char)b[i][1];
			free(b[i]);
			b[i] = xmalloc(n);
			b[i][0] = (char)id;
			b[i][1] = (char)k;
		}
		pthread_barrier_wait(&bar);
	}
	sums[id] = sum;
	return NULL;
}

int main(int argc, char **argv)
{
	work_begin();
	long ops = scaled(argc, argv, 400000, 4000);
	rounds = 20;
	per_round = ops / (NTHREADS * rounds);
	pthread_barrier_init(&bar, NULL, NTHREADS);
	for (int t = 0; t < NTHREADS; t++) {
		blocks[t] = calloc(SLOTS, sizeof(char *));
		if (!blocks[t])
			abort();
	}
	pthread_t th[NTHREADS];
	for (int t = 0; t < NTHREADS; t++)
		if (pthread_create(&th[t], NULL, worker, (void *)(intptr_t)t))
			abort();
	uint64_t sum = 0;
	for (int t = 0; t < NTHREADS; t++) {
		pthread_join(th[t], NULL);
		sum += sums[t];
	}
	footprint_report();
	for (int t = 0; t < NTHREADS; t++) {
		for (int i = 0; i < SLOTS; i++)
			free(blocks[t][i]);
		free(blocks[t]);
	}
	printf("larson threads=%d ops=%ld sum=%llu\n", NTHREADS,
	       per_round * NTHREADS * rounds, (unsigned long long)sum);
	work_end();
	return 0;
}
