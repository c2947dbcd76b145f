/* One malloc+free pair, timed per size from 16 B to 1 MiB (powers of two).
 * The first and the last byte are written, so a lazily mapped page is
 * faulted in.  Prints one line per size: "size <bytes> ns <ns per pair>".
 * argv[1] scales the time spent per size (100 ms at 1.0).  The time is cut
 * into 9 slices and the median slice is reported, so that a burst of noise
 * from a shared machine moves the figure less. */
#include "common.h"

#define SLICES 9

static int cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

static double slice(size_t size, double budget)
{
	long iters = 0;
	double t0 = now_ns(), t;
	do {
		for (int i = 0; i < 16; i++) {
			char *p = xmalloc(size);
			p[0] = 1;
			p[size - 1] = 2;
			escape(p);
			free(p);
		}
		iters += 16;
		t = now_ns();
	} while (t - t0 < budget || iters < 32);
	return (t - t0) / (double)iters;
}

int main(int argc, char **argv)
{
	double s = argc > 1 ? atof(argv[1]) : 1.0;
	if (s <= 0)
		s = 1.0;
	double budget = 100e6 * s;
	if (budget < 10e6)
		budget = 10e6;
	for (size_t size = 16; size <= (1u << 20); size *= 2) {
		double v[SLICES];
		slice(size, budget / SLICES / 4); /* warm up */
		for (int k = 0; k < SLICES; k++)
			v[k] = slice(size, budget / SLICES);
		qsort(v, SLICES, sizeof *v, cmp);
		printf("size %zu ns %.1f min %.1f max %.1f\n", size, v[SLICES / 2], v[0], v[SLICES - 1]);
		fflush(stdout);
	}
	return 0;
}
