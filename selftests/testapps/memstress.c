// SPDX-License-Identifier: MIT
/*
 * memstress N SIZE INTERVAL ITERATIONS
 *
 * Each iteration allocates N objects of 1..SIZE bytes (pseudo-random, seeded,
 * so every run is the same), writing each one full; every INTERVAL-th
 * allocation also frees an earlier object picked at random.  At the end of an
 * iteration every object is checked and freed.  Prints one checksum line per
 * iteration: the output is identical whatever the malloc.
 *
 * Defaults: 20000 objects of up to 512 bytes, a free every 3rd, 5 iterations.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct obj {
	uint32_t size;
	uint32_t seed;
	unsigned char data[];
};

static uint64_t rng_state = 88172645463325252ull;

static uint64_t rng(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}

static int check_and_free(struct obj *o, uint64_t *sum)
{
	for (uint32_t i = 0; i < o->size; i++)
		if (o->data[i] != (unsigned char)(o->seed + i))
			return -1;
	*sum = *sum * 31 + o->size + o->seed;
	free(o);
	return 0;
}

int main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 20000;
	long size = argc > 2 ? atol(argv[2]) : 512;
	long interval = argc > 3 ? atol(argv[3]) : 3;
	long iterations = argc > 4 ? atol(argv[4]) : 5;
	if (n < 1 || size < 1 || interval < 1 || iterations < 1) {
		fprintf(stderr, "usage: memstress N SIZE INTERVAL ITERATIONS\n");
		return 2;
	}
	struct obj **objs = calloc((size_t)n, sizeof(*objs));
	if (!objs)
		return 1;
	for (long it = 0; it < iterations; it++) {
		uint64_t sum = 0;
		long freed_early = 0;
		for (long i = 0; i < n; i++) {
			uint32_t sz = (uint32_t)(1 + rng() % (uint64_t)size);
			struct obj *o = malloc(sizeof(*o) + sz);
			if (!o) {
				fprintf(stderr, "out of memory\n");
				return 1;
			}
			o->size = sz;
			o->seed = (uint32_t)rng();
			for (uint32_t j = 0; j < sz; j++)
				o->data[j] = (unsigned char)(o->seed + j);
			objs[i] = o;
			if (i % interval == interval - 1) {
				long victim = (long)(rng() % (uint64_t)(i + 1));
				if (objs[victim]) {
					if (check_and_free(objs[victim], &sum))
						goto corrupt;
					objs[victim] = NULL;
					freed_early++;
				}
			}
		}
		for (long i = 0; i < n; i++) {
			if (objs[i] && check_and_free(objs[i], &sum))
				goto corrupt;
			objs[i] = NULL;
		}
		printf("iteration %ld: %ld objects, %ld freed early, checksum %016llx\n",
		       it, n, freed_early, (unsigned long long)sum);
	}
	free(objs);
	return 0;
corrupt:
	printf("memstress: an object was corrupted\n");
	return 1;
}
