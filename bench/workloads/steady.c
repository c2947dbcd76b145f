/* malloc/free in steady state, with Dangless's own counters over the same
 * window (make bench-kvm: bench/kvm_rig.py runs it in the QEMU rig under
 * glibc, Dangless host and Dangless kvm side by side).
 *
 *   steady pair N        N pairs malloc(64)+free, first and last byte written
 *   steady scattered N   N replacements in a live set of 2,000 objects of
 *                        16 B-64 KiB (log-uniform, fixed seed, as
 *                        churn_scattered at a tenth of its live set): a free
 *                        of a random member, then its replacement, first and
 *                        last byte written
 *
 * Each warms up first (segments, runs, pools, page-table pages: what a long
 * run has in place), then times N operations and prints one line:
 *   steady WORKLOAD ops N ns_per_op T [COUNTER DELTA]...
 * The counters are dangless_stats() before and after the timed window,
 * found with dlsym so the same binary runs on glibc (no counters then).
 * Nothing inside the window makes a system call of its own. */
#include "common.h"

#include <dlfcn.h>
#include <stdbool.h>

#include <dangless/dangless.h>

#define LIVE 2000

typedef int (*stats_fn)(struct dangless_stats *);

static void pairs(long n)
{
	for (long i = 0; i < n; i++) {
		char *p = xmalloc(64);
		p[0] = 1;
		p[63] = 2;
		escape(p);
		free(p);
	}
}

static char *slot[LIVE];
static size_t len[LIVE];
static rng_t rng;
static uint64_t sum;

static void replace(long ops)
{
	for (long k = 0; k < ops; k++) {
		size_t i = rng_below(&rng, LIVE);
		sum += (unsigned char)slot[i][len[i] - 1];
		free(slot[i]);
		slot[i] = scattered_make(&rng, &len[i], k);
	}
}

int main(int argc, char **argv)
{
	if (argc != 3 || atol(argv[2]) <= 0 ||
	    (strcmp(argv[1], "pair") && strcmp(argv[1], "scattered"))) {
		fprintf(stderr, "usage: steady pair|scattered N (N > 0 operations timed)\n");
		return 2;
	}
	long n = atol(argv[2]);
	bool pair = !strcmp(argv[1], "pair");
	stats_fn get_stats = (stats_fn)dlsym(RTLD_DEFAULT, "dangless_stats");

	if (pair) {
		pairs(20000);
	} else {
		rng = rng_seed(12);
		for (long i = 0; i < LIVE; i++)
			slot[i] = scattered_make(&rng, &len[i], i);
		replace(2 * LIVE);
	}

	struct dangless_stats before = {0}, after = {0};
	if (get_stats)
		get_stats(&before);
	double t0 = now_ns();
	if (pair)
		pairs(n);
	else
		replace(n);
	double t = now_ns() - t0;
	if (get_stats)
		get_stats(&after);

	printf("steady %s ops %ld ns_per_op %.1f", argv[1], n, t / (double)n);
	if (get_stats) {
#define DELTA(name, what) \
	printf(" %s %lld", #name, (long long)(after.name - before.name));
		DANGLESS_STAT_FIELDS(DELTA)
#undef DELTA
	}
	printf(" sum %llu\n", (unsigned long long)sum);
	if (!pair)
		for (long i = 0; i < LIVE; i++)
			free(slot[i]);
	return 0;
}
