/* One malloc+free pair, timed per size from 16 B to 1 MiB (powers of two).
 * The first and the last byte are written, so a lazily mapped page is
 * faulted in.  Prints one line per size: "size <bytes> ns <ns per pair>".
 * argv[1] scales the time spent per size (100 ms at 1.0). */
#include "common.h"

int main(int argc, char **argv)
{
	double s = argc > 1 ? atof(argv[1]) : 1.0;
	if (s <= 0)
		s = 1.0;
	double budget = 100e6 * s;
	if (budget < 10e6)
		budget = 10e6;
	for (size_t size = 16; size <= (1u << 20); size *= 2) {
		for (int i = 0; i < 64; i++) { /* warm up */
			char *p = xmalloc(size);
			p[0] = 1;
			p[size - 1] = 2;
			free(p);
		}
		long iters = 0;
		double t0 = now_ns(), t;
		do {
			for (int i = 0; i < 64; i++) {
				char *p = xmalloc(size);
				p[0] = 1;
				p[size - 1] = 2;
				escape(p);
				free(p);
			}
			iters += 64;
			t = now_ns();
		} while (t - t0 < budget || iters < 256);
		printf("size %zu ns %.1f iters %ld\n", size, (t - t0) / (double)iters, iters);
		fflush(stdout);
	}
	return 0;
}
