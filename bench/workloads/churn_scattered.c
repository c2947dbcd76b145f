/* Churn with scattered frees: a live set of 20,000 objects of 16 B-64 KiB
 * (log-uniform), each operation frees a random member and allocates its
 * replacement (fixed seed), writing the first and the last byte of the new
 * object.  Consecutive frees are almost never neighbours in memory, so an
 * allocator cannot merge them into one revocation: unlike `churn`, whose
 * frees are mostly LIFO bursts of temporaries made one after the other.
 * The replacement phase is timed on its own and the pages each operation
 * maps and writes are counted, so the harness can set it against the
 * page-table floor per operation:
 *   churn_scattered ops N replace_ns T pages_spanned_per_op S pages_touched_per_op W */
#include "common.h"

#define LIVE 20000
#define PG 4096

int main(int argc, char **argv)
{
	work_begin();
	long ops = scaled(argc, argv, 300000, 2000);
	rng_t r = rng_seed(12);
	static char *slot[LIVE];
	static size_t len[LIVE];
	uint64_t sum = 0;
	for (long i = 0; i < LIVE; i++)
		slot[i] = scattered_make(&r, &len[i], i);

	double spanned = 0, touched = 0;
	double t0 = now_ns();
	for (long k = 0; k < ops; k++) {
		size_t i = rng_below(&r, LIVE);
		sum += (unsigned char)slot[i][len[i] - 1];
		free(slot[i]);
		slot[i] = scattered_make(&r, &len[i], k);
		spanned += (double)((len[i] + PG - 1) / PG);
		touched += len[i] > PG ? 2 : 1;
	}
	double replace_ns = now_ns() - t0;
	footprint_report();
	for (long i = 0; i < LIVE; i++)
		free(slot[i]);
	printf("churn_scattered ops %ld replace_ns %.0f pages_spanned_per_op %.3f "
	       "pages_touched_per_op %.3f live %d sum %llu\n",
	       ops, replace_ns, spanned / (double)ops, touched / (double)ops, LIVE,
	       (unsigned long long)sum);
	work_end();
	return 0;
}
