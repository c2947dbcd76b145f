/* Large objects: sizes log-uniform between 64 KiB and 64 MiB, every page
 * written once, a window of four live at a time. */
#include "common.h"
#include <math.h>

#define WINDOW 4

int main(int argc, char **argv)
{
	work_begin();
	long ops = scaled(argc, argv, 400, 20);
	rng_t r = rng_seed(4);
	char *live[WINDOW] = { 0 };
	size_t sz[WINDOW] = { 0 };
	uint64_t sum = 0, bytes = 0;
	for (long k = 0; k < ops; k++) {
		int w = (int)(k % WINDOW);
		if (live[w]) {
			sum += (unsigned char)live[w][sz[w] - 1];
			free(live[w]);
		}
		/* 2^16 .. 2^26 bytes, log-uniform */
		double e = 16.0 + 10.0 * (double)rng_below(&r, 1u << 20) / (double)(1u << 20);
		size_t n = (size_t)pow(2.0, e);
		live[w] = xmalloc(n);
		sz[w] = n;
		for (size_t off = 0; off < n; off += 4096)
			live[w][off] = (char)off;
		live[w][n - 1] = (char)k;
		bytes += n;
	}
	footprint_report();
	for (int w = 0; w < WINDOW; w++)
		free(live[w]);
	printf("large ops=%ld MiB=%llu sum=%llu\n", ops, (unsigned long long)(bytes >> 20),
	       (unsigned long long)sum);
	work_end();
	return 0;
}
