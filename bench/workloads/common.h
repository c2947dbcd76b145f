/* Shared helpers for the bench workloads: a clock, a fast RNG, the scale
 * argument, and an escape hatch so the compiler cannot elide malloc/free. */
#ifndef BENCH_COMMON_H
#define BENCH_COMMON_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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

#endif
