/* A long-lived heap: 10^6 small objects (at full scale) built up, then slow
 * turnover - half the heap replaced one random object at a time, with reads
 * of random live objects in between.  This is the workload that runs into
 * vm.max_map_count (65530) when each object costs a mapping. */
#include "common.h"
#include <dlfcn.h>

/* lines in /proc/self/maps: the same measure for every allocator */
static long count_maps(void)
{
	FILE *f = fopen("/proc/self/maps", "r");
	if (!f)
		return -1;
	long n = 0;
	int c;
	while ((c = getc_unlocked(f)) != EOF)
		n += c == '\n';
	fclose(f);
	return n;
}

int main(int argc, char **argv)
{
	work_begin();
	long live = scaled(argc, argv, 1000000, 10000) / 10 * 10;
	long turnover = live / 2;
	rng_t r = rng_seed(5);
	char **obj = calloc((size_t)live, sizeof(char *));
	if (!obj)
		abort();
	/* mappings per live object: maps counted every tenth of the build-up
	 * (printed at once, so the last line survives a crash) */
	long maps0 = count_maps();
	printf("maps live=0 maps=%ld\n", maps0);
	fflush(stdout);
	for (long i = 0; i < live; i++) {
		size_t n = 16 + rng_below(&r, 113);
		obj[i] = xmalloc(n);
		obj[i][0] = (char)i;
		if ((i + 1) % (live / 10) == 0) {
			printf("maps live=%ld maps=%ld\n", i + 1, count_maps());
			fflush(stdout);
		}
	}
	printf("longlived live=%ld built\n", live);
	fflush(stdout);
	/* with BENCH_STATS_AT_PEAK set, Dangless's counters at the peak */
	void (*stats)(void) = getenv("BENCH_STATS_AT_PEAK") ?
		(void (*)(void))dlsym(RTLD_DEFAULT, "dangless_print_stats") : NULL;
	if (stats)
		stats();
	uint64_t sum = 0;
	for (long k = 0; k < turnover; k++) {
		long i = (long)rng_below(&r, (uint64_t)live);
		free(obj[i]);
		size_t n = 16 + rng_below(&r, 113);
		obj[i] = xmalloc(n);
		obj[i][0] = (char)k;
		for (int j = 0; j < 4; j++)
			sum += (unsigned char)obj[rng_below(&r, (uint64_t)live)][0];
		if ((k + 1) % (turnover / 10) == 0) {
			printf("maps live=%ld maps=%ld\n", live, count_maps());
			fflush(stdout);
		}
	}
	footprint_report();
	for (long i = 0; i < live; i++)
		free(obj[i]);
	free(obj);
	printf("longlived live=%ld turnover=%ld sum=%llu\n", live, turnover,
	       (unsigned long long)sum);
	work_end();
	return 0;
}
