/* xmalloc-like producer/consumer: producer threads allocate batches of
 * objects and hand them over a bounded queue; consumer threads read and free
 * them.  Every object is freed by a thread that did not allocate it. */
#include "common.h"
#include <pthread.h>

#define PRODUCERS 2
#define CONSUMERS 2
#define BATCH 256
#define QCAP 64

struct batch { char *obj[BATCH]; unsigned short len[BATCH]; };

static struct batch *queue[QCAP];
static int qhead, qlen, producers_left = PRODUCERS;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t not_full = PTHREAD_COND_INITIALIZER, not_empty = PTHREAD_COND_INITIALIZER;
static long batches_each;
static uint64_t consumed[CONSUMERS], corrupt[CONSUMERS];

static void *producer(void *arg)
{
	rng_t r = rng_seed(200 + (uint64_t)(intptr_t)arg);
	for (long b = 0; b < batches_each; b++) {
		struct batch *bt = xmalloc(sizeof *bt);
		for (int i = 0; i < BATCH; i++) {
			size_t n = 16 + rng_below(&r, 497);
			bt->obj[i] = xmalloc(n);
			bt->len[i] = (unsigned short)n;
			bt->obj[i][0] = 1;
			bt->obj[i][n - 1] = 2;
		}
		pthread_mutex_lock(&mu);
		while (qlen == QCAP)
			pthread_cond_wait(&not_full, &mu);
		queue[(qhead + qlen) % QCAP] = bt;
		qlen++;
		pthread_cond_signal(&not_empty);
		pthread_mutex_unlock(&mu);
	}
	pthread_mutex_lock(&mu);
	producers_left--;
	pthread_cond_broadcast(&not_empty);
	pthread_mutex_unlock(&mu);
	return NULL;
}

static void *consumer(void *arg)
{
	int id = (int)(intptr_t)arg;
	uint64_t n = 0, bad = 0;
	for (;;) {
		pthread_mutex_lock(&mu);
		while (qlen == 0 && producers_left > 0)
			pthread_cond_wait(&not_empty, &mu);
		if (qlen == 0) {
			pthread_mutex_unlock(&mu);
			break;
		}
		struct batch *bt = queue[qhead];
		qhead = (qhead + 1) % QCAP;
		qlen--;
		pthread_cond_signal(&not_full);
		pthread_mutex_unlock(&mu);
		for (int i = 0; i < BATCH; i++) {
			/* what the producer wrote must still be there */
			if (bt->obj[i][0] != 1 || bt->obj[i][bt->len[i] - 1] != 2) {
				if (bad++ < 4)
					fprintf(stderr, "xmalloc: object %p (%u bytes) changed: first %d last %d\n",
						(void *)bt->obj[i], bt->len[i], bt->obj[i][0],
						bt->obj[i][bt->len[i] - 1]);
			}
			n++;
			free(bt->obj[i]);
		}
		free(bt);
	}
	consumed[id] = n;
	corrupt[id] = bad;
	return NULL;
}

int main(int argc, char **argv)
{
	work_begin();
	long objs = scaled(argc, argv, 400000, 4 * BATCH * PRODUCERS);
	batches_each = objs / (BATCH * PRODUCERS);
	pthread_t p[PRODUCERS], c[CONSUMERS];
	for (int i = 0; i < CONSUMERS; i++)
		if (pthread_create(&c[i], NULL, consumer, (void *)(intptr_t)i))
			abort();
	for (int i = 0; i < PRODUCERS; i++)
		if (pthread_create(&p[i], NULL, producer, (void *)(intptr_t)i))
			abort();
	for (int i = 0; i < PRODUCERS; i++)
		pthread_join(p[i], NULL);
	uint64_t total = 0, bad = 0;
	for (int i = 0; i < CONSUMERS; i++) {
		pthread_join(c[i], NULL);
		total += consumed[i];
		bad += corrupt[i];
	}
	printf("xmalloc objects=%llu corrupt=%llu\n", (unsigned long long)total, (unsigned long long)bad);
	if (bad)
		fprintf(stderr, "xmalloc: %llu objects changed between malloc and free\n",
			(unsigned long long)bad);
	work_end();
	return total == (uint64_t)batches_each * BATCH * PRODUCERS && !bad ? 0 : 1;
}
