/* Shared helpers for the bench workloads: a clock, a fast RNG, the scale
 * argument, and an escape hatch so the compiler cannot elide malloc/free. */
#ifndef BENCH_COMMON_H
#define BENCH_COMMON_H

#include <dirent.h>
#include <dlfcn.h>
#include <fcntl.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <dangless/dangless.h>

static inline double now_ns(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec * 1e9 + (double)t.tv_nsec;
}

/* xorshift64*: cheap enough not to show next to a malloc */
typedef struct { uint64_t s; } rng_t;
static inline uint64_t rng_next(rng_t *r)
{
	uint64_t x = r->s;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	r->s = x;
	return x * 0x2545F4914F6CDD1DULL;
}
static inline uint64_t rng_below(rng_t *r, uint64_t n) { return rng_next(r) % n; }
static inline rng_t rng_seed(uint64_t seed) { rng_t r = { seed * 0x9E3779B97F4A7C15ULL + 1 }; return r; }

/* argv[1] is the scale (1.0 = full size); returns n scaled, at least lo */
static inline long scaled(int argc, char **argv, double n, long lo)
{
	double s = argc > 1 ? atof(argv[1]) : 1.0;
	if (s <= 0)
		s = 1.0;
	long v = (long)(n * s);
	return v < lo ? lo : v;
}

/* the pointer escapes: the compiler must assume it is read */
static inline void escape(void *p) { __asm__ volatile("" : : "r"(p) : "memory"); }

static inline void *xmalloc(size_t n)
{
	void *p = malloc(n);
	if (!p && n) {
		fprintf(stderr, "bench: malloc(%zu) failed\n", n);
		abort();
	}
	escape(p);
	return p;
}

static inline void *xrealloc(void *q, size_t n)
{
	void *p = realloc(q, n);
	if (!p && n) {
		fprintf(stderr, "bench: realloc(%zu) failed\n", n);
		abort();
	}
	escape(p);
	return p;
}

/* The work itself, timed inside the program (process start and exit left
 * out): work_begin() first thing in main, work_end() before returning;
 * prints "work_ns <ns>" for the harness. */
static double work_t0;
static inline void work_begin(void) { work_t0 = now_ns(); }
static inline void work_end(void)
{
	printf("work_ns %.0f\n", now_ns() - work_t0);
	fflush(stdout);
}

/* "Key: N kB" from a /proc file, 0 if absent */
static inline long proc_kb(const char *path, const char *key)
{
	FILE *f = fopen(path, "r");
	if (!f)
		return 0;
	char line[256];
	long v = 0;
	size_t kl = strlen(key);
	while (fgets(line, sizeof line, f))
		if (!strncmp(line, key, kl) && line[kl] == ':') {
			v = atol(line + kl + 1);
			break;
		}
	fclose(f);
	return v;
}

/* allocated pages of the process's memfds, each file counted once */
static inline long memfd_kb(void)
{
	DIR *d = opendir("/proc/self/fd");
	if (!d)
		return 0;
	struct { dev_t dev; ino_t ino; } seen[16];
	int nseen = 0;
	long kb = 0;
	struct dirent *e;
	while ((e = readdir(d))) {
		char target[64];
		ssize_t n = readlinkat(dirfd(d), e->d_name, target, sizeof target - 1);
		struct stat st;
		if (n < 7 || strncmp(target, "/memfd:", 7) || fstatat(dirfd(d), e->d_name, &st, 0))
			continue;
		int dup = 0;
		for (int i = 0; i < nseen; i++)
			dup |= seen[i].dev == st.st_dev && seen[i].ino == st.st_ino;
		if (dup)
			continue;
		if (nseen < 16) {
			seen[nseen].dev = st.st_dev;
			seen[nseen].ino = st.st_ino;
			nseen++;
		}
		kb += (long)st.st_blocks / 2;
	}
	closedir(d);
	return kb;
}

/* Under Dangless (found with dlsym, so the same binary runs under every
 * allocator): its own split of the footprint at the same point, one line
 * "footprint_split footprint_kb N live_kb N slack_kb N ... program_kb N". */
static inline void footprint_split_report(void)
{
	typedef int (*stats_fn)(struct dangless_stats *);
	stats_fn get = (stats_fn)dlsym(RTLD_DEFAULT, "dangless_stats");
	struct dangless_stats s = {.version = DANGLESS_STATS_VERSION};
	if (!get || get(&s) != 0 || s.version != DANGLESS_STATS_VERSION ||
	    !s.footprint_bytes)
		return;
	printf("footprint_split footprint_kb %llu live_kb %llu slack_kb %llu "
	       "free_kb %llu warm_kb %llu quarantine_kb %llu stale_kb %llu "
	       "page_tables_kb %llu metadata_kb %llu program_kb %llu\n",
	       (unsigned long long)s.footprint_bytes >> 10,
	       (unsigned long long)s.mem_live_bytes >> 10,
	       (unsigned long long)s.mem_slack_bytes >> 10,
	       (unsigned long long)s.mem_free_bytes >> 10,
	       (unsigned long long)s.mem_warm_bytes >> 10,
	       (unsigned long long)s.mem_quarantine_bytes >> 10,
	       (unsigned long long)s.mem_stale_bytes >> 10,
	       (unsigned long long)s.mem_page_table_bytes >> 10,
	       (unsigned long long)s.mem_metadata_bytes >> 10,
	       (unsigned long long)s.mem_program_bytes >> 10);
}

/* The memory the process holds, read by the process itself at the point
 * where its live set is in place (the same point under every allocator):
 * Pss (a memfd page that several aliases map counts once; RSS would count it
 * once per alias), plus memfd pages held but mapped nowhere (a memfd's
 * allocated pages less its mapped part, Pss_Shmem), plus page tables (VmPTE).
 * Prints "footprint_kb N pss_kb N memfd_unmapped_kb N pte_kb N"; the time it
 * takes is left out of the work time. */
static inline void footprint_report(void)
{
	double t0 = now_ns();
	long pss = proc_kb("/proc/self/smaps_rollup", "Pss");
	long shmem = proc_kb("/proc/self/smaps_rollup", "Pss_Shmem");
	long pte = proc_kb("/proc/self/status", "VmPTE");
	long unmapped = memfd_kb() - shmem;
	if (unmapped < 0)
		unmapped = 0;
	printf("footprint_kb %ld pss_kb %ld memfd_unmapped_kb %ld pte_kb %ld\n",
	       pss + unmapped + pte, pss, unmapped, pte);
	footprint_split_report();
	fflush(stdout);
	work_t0 += now_ns() - t0;
}

/* mostly small sizes, a few larger ones, as in cfrac/espresso traces */
static inline size_t small_size(rng_t *r)
{
	uint64_t x = rng_below(r, 100);
	if (x < 70)
		return 8 + rng_below(r, 57);     /* 8..64 */
	if (x < 95)
		return 65 + rng_below(r, 448);   /* 65..512 */
	return 513 + rng_below(r, 3584);         /* 513..4096 */
}

/* 16 B .. 64 KiB, log-uniform (churn_scattered, steady scattered) */
static inline size_t scattered_size(rng_t *r)
{
	double e = 4.0 + 12.0 * (double)rng_below(r, 1u << 20) / (double)(1u << 20);
	return (size_t)exp2(e);
}

/* A scattered-size object with its first and last byte written; *n = its size. */
static inline char *scattered_make(rng_t *r, size_t *n, long k)
{
	*n = scattered_size(r);
	char *p = xmalloc(*n);
	p[0] = (char)k;
	p[*n - 1] = (char)(k >> 8);
	return p;
}

#endif
