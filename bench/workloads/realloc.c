/* realloc growth: a thousand growing buffers, half of them vectors that
 * double their capacity, half strings that realloc to the exact new length
 * on every append; each is dropped and restarted when it reaches a random
 * cap between 64 B and 64 KiB. */
#include "common.h"

#define NBUF 1000

struct buf { char *p; size_t len, cap, limit; int exact; };

int main(int argc, char **argv)
{
	work_begin();
	long appends = scaled(argc, argv, 300000, 2000);
	rng_t r = rng_seed(3);
	static struct buf b[NBUF];
	uint64_t reallocs = 0, sum = 0;
	for (int i = 0; i < NBUF; i++) {
		b[i].exact = i & 1;
		b[i].limit = 64u << rng_below(&r, 11);
	}
	for (long k = 0; k < appends; k++) {
		struct buf *x = &b[rng_below(&r, NBUF)];
		size_t add = x->exact ? 1 + rng_below(&r, 32) : 8;
		if (x->len + add > x->cap) {
			size_t cap = x->exact ? x->len + add : (x->cap ? x->cap * 2 : 16);
			x->p = xrealloc(x->p, cap);
			x->cap = cap;
			reallocs++;
		}
		memset(x->p + x->len, (int)k, add);
		x->len += add;
		if (x->len >= x->limit) {
			sum += (unsigned char)x->p[x->len / 2];
			free(x->p);
			x->p = NULL;
			x->len = x->cap = 0;
			x->limit = 64u << rng_below(&r, 11);
		}
	}
	footprint_report();
	for (int i = 0; i < NBUF; i++)
		free(b[i].p);
	printf("realloc appends=%ld reallocs=%llu sum=%llu\n", appends,
	       (unsigned long long)reallocs, (unsigned long long)sum);
	work_end();
	return 0;
}
