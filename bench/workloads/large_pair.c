/* Large objects one at a time: malloc of 64 KiB-1 MiB (log-uniform, fixed
 * seed), one byte written in every page, free.  The floor of one operation
 * is the page-table work on all of its pages (map, first write, revoke),
 * so the pages are counted:
 *   large_pair ops N ns_per_op T pages_per_op P */
#include "common.h"
#include <math.h>

#define PG 4096

int main(int argc, char **argv)
{
	work_begin();
	long ops = scaled(argc, argv, 2000, 100);
	rng_t r = rng_seed(13);
	uint64_t sum = 0, pages = 0;
	double t0 = now_ns();
	for (long k = 0; k < ops; k++) {
		double e = 16.0 + 4.0 * (double)rng_below(&r, 1u << 20) / (double)(1u << 20);
		size_t n = (size_t)exp2(e);
		volatile char *p = xmalloc(n);
		for (size_t off = 0; off < n; off += PG)
			p[off] = (char)k;
		p[n - 1] = (char)(k >> 8);
		sum += (unsigned char)p[n - 1];
		free((void *)p);
		pages += (n + PG - 1) / PG;
	}
	double ns = now_ns() - t0;
	printf("large_pair ops %ld ns_per_op %.1f pages_per_op %.2f sum %llu\n", ops, ns / (double)ops,
	       (double)pages / (double)ops, (unsigned long long)sum);
	work_end();
	return 0;
}
