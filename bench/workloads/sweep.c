/*
 * sweep: what a reclaim sweep costs (issue 21).  Runs under Dangless only
 * (dangless_reclaim and dangless_stats found with dlsym).
 *
 *   sweep heap MIB          a live heap of MIB MiB of 256-byte objects
 *                           (random words, no pointers), then sweeps:
 *                           ms per sweep, ns per MiB and s per GiB scanned
 *   sweep roots MIB         MIB MiB of touched anonymous memory of the
 *                           program's own (read through process_vm_readv)
 *   sweep threads N         N threads blocked in a read(), a tiny heap:
 *                           sweep time and its growth per thread
 *   sweep churn N           N malloc+free pairs of 64 B; run it with and
 *                           without alias_space=64M to see what the sweeps
 *                           add per allocation
 *
 * Each sweep needs revoked space to look at: 2 MiB of objects are
 * allocated and freed before each (their segment retires).
 */
#include <dlfcn.h>
#include <pthread.h>
#include <sys/mman.h>

#include "../../include/dangless/dangless.h"
#include "common.h"

typedef long (*reclaim_fn)(void);
typedef int (*stats_fn)(struct dangless_stats *);
static reclaim_fn do_reclaim;
static stats_fn get_stats;

static void retire_some(void)
{
	/* 600 small objects of one class: more than a 2 MiB segment holds,
	 * all freed, so at least one segment retires */
	for (int i = 0; i < 600; i++) {
		char *p = xmalloc(16);
		p[0] = 1;
		free(p);
	}
}

static void measure(const char *what, long units, const char *unit, int n)
{
	struct dangless_stats a = {.version = DANGLESS_STATS_VERSION}, b = a;
	double best = 1e30, sum = 0;
	get_stats(&a);
	for (int i = 0; i < n; i++) {
		retire_some();
		double t0 = now_ns();
		long r = do_reclaim();
		double t = now_ns() - t0;
		if (r < 0) {
			fprintf(stderr, "sweep: dangless_reclaim: %ld\n", r);
			exit(1);
		}
		sum += t;
		best = t < best ? t : best;
	}
	get_stats(&b);
	double scanned = (double)(b.sweep_scanned_bytes - a.sweep_scanned_bytes) / n;
	double in_ns = (double)(b.sweep_ns - a.sweep_ns) / n;
	printf("| %s | %ld %s | %.2f | %.2f | %.1f | %.3f | %llu |\n", what,
	       units, unit, best / 1e6, sum / n / 1e6, scanned / (1 << 20),
	       scanned > 0 ? in_ns / 1e9 / (scanned / (1 << 30)) : 0,
	       (unsigned long long)(b.sweep_threads_stopped -
				    a.sweep_threads_stopped) / n);
}

static int pipefd[2];
static void *blocked(void *arg)
{
	(void)arg;
	char c;
	if (read(pipefd[0], &c, 1) < 0)
		perror("read");
	return NULL;
}

int main(int argc, char **argv)
{
	do_reclaim = (reclaim_fn)dlsym(RTLD_DEFAULT, "dangless_reclaim");
	get_stats = (stats_fn)dlsym(RTLD_DEFAULT, "dangless_stats");
	if (argc < 3 || !do_reclaim || !get_stats) {
		fprintf(stderr, "usage (under Dangless): sweep heap|roots|"
				"threads|churn N\n");
		return 2;
	}
	long n = atol(argv[2]);
	rng_t r = rng_seed(7);
	if (!strcmp(argv[1], "heap")) {
		long objs = n * 4096; /* 256 B each */
		uint64_t **v = xmalloc(objs * sizeof(*v));
		for (long i = 0; i < objs; i++) {
			v[i] = xmalloc(256);
			for (int k = 0; k < 32; k++)
				v[i][k] = rng_next(&r) | 1; /* never a pointer */
		}
		measure("live heap", n, "MiB", 5);
		return 0;
	}
	if (!strcmp(argv[1], "roots")) {
		size_t len = (size_t)n << 20;
		uint64_t *m = mmap(NULL, len, PROT_READ | PROT_WRITE,
				   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		for (size_t i = 0; i < len / 8; i++)
			m[i] = rng_next(&r) | 1;
		measure("anonymous roots", n, "MiB", 5);
		return 0;
	}
	if (!strcmp(argv[1], "threads")) {
		if (pipe(pipefd))
			return 1;
		pthread_t *t = xmalloc(n * sizeof(*t));
		for (long i = 0; i < n; i++)
			pthread_create(&t[i], NULL, blocked, NULL);
		usleep(100000);
		measure("blocked threads", n, "threads", 9);
		for (long i = 0; i < n; i++)
			if (write(pipefd[1], "x", 1) != 1)
				return 1;
		for (long i = 0; i < n; i++)
			pthread_join(t[i], NULL);
		return 0;
	}
	if (!strcmp(argv[1], "churn")) {
		struct dangless_stats a = {.version = DANGLESS_STATS_VERSION};
		double t0 = now_ns();
		for (long i = 0; i < n; i++) {
			char *p = xmalloc(64);
			p[0] = 1;
			free(p);
		}
		double t = now_ns() - t0;
		get_stats(&a);
		printf("| churn | %ld pairs | %.2f us/pair | %llu sweeps | "
		       "%.1f ms in sweeps | %.2f us/pair of it |\n",
		       n, t / n / 1e3, (unsigned long long)a.reclaims,
		       a.sweep_ns / 1e6, a.sweep_ns / 1e3 / n);
		return 0;
	}
	return 2;
}
