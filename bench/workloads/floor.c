/* The page-table floor on this machine, measured the same way every run:
 * what the kernel charges to make and to revoke a populated shared mapping
 * of a memfd, in bulk (512 pages per call) and one page per call.
 * Prints "key value" lines, ns per page, medians over the repetitions.
 * argv[1] scales the repetitions. */
#include "common.h"
#include <sys/mman.h>
#include <unistd.h>

#ifndef MADV_GUARD_INSTALL
#define MADV_GUARD_INSTALL 102
#endif

#define P 512
#define PG 4096L
#define MAXREP 400

static int cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

static double median(double *v, int n)
{
	qsort(v, (size_t)n, sizeof *v, cmp);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static void map_fixed(char *a, long len, int fd, int populate)
{
	if (mmap(a, (size_t)len, PROT_READ | PROT_WRITE,
		 MAP_SHARED | MAP_FIXED | (populate ? MAP_POPULATE : 0), fd, 0) != a) {
		perror("floor: mmap");
		exit(1);
	}
}

int main(int argc, char **argv)
{
	int reps = (int)scaled(argc, argv, 100, 10);
	if (reps > MAXREP)
		reps = MAXREP;
	int fd = memfd_create("bench-floor", 0);
	if (fd < 0 || ftruncate(fd, P * PG)) {
		perror("floor: memfd");
		return 1;
	}
	/* one reservation; every repetition works on a fresh slice of it */
	char *base = mmap(NULL, (size_t)P * PG * 2, PROT_NONE,
			  MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (base == MAP_FAILED) {
		perror("floor: reserve");
		return 1;
	}
	static double bmap[MAXREP], brev[MAXREP], srev[MAXREP], sguard[MAXREP], bguard[MAXREP],
		smap[MAXREP], sunmap[MAXREP];
	int guard_ok = 1;
	for (int r = 0; r < reps; r++) {
		char *a = base;
		double t0, t1, t2;

		/* bulk: one mmap(MAP_POPULATE) of 512 pages, one mprotect(PROT_NONE) */
		t0 = now_ns();
		map_fixed(a, P * PG, fd, 1);
		t1 = now_ns();
		mprotect(a, P * PG, PROT_NONE);
		t2 = now_ns();
		bmap[r] = (t1 - t0) / P;
		brev[r] = (t2 - t1) / P;

		/* single page revoke: mprotect one page per call (every other page,
		 * so each call splits the VMA as a strict free() would) */
		map_fixed(a, P * PG, fd, 1);
		t0 = now_ns();
		for (int i = 0; i < P; i += 2)
			mprotect(a + i * PG, PG, PROT_NONE);
		srev[r] = (now_ns() - t0) / (P / 2);

		/* single page guard install, madvise(MADV_GUARD_INSTALL) per page:
		 * no VMA split */
		map_fixed(a, P * PG, fd, 1);
		t0 = now_ns();
		for (int i = 0; i < P && guard_ok; i += 2)
			if (madvise(a + i * PG, PG, MADV_GUARD_INSTALL))
				guard_ok = 0;
		sguard[r] = (now_ns() - t0) / (P / 2);

		/* bulk guard install over 512 pages */
		map_fixed(a, P * PG, fd, 1);
		t0 = now_ns();
		if (guard_ok && madvise(a, P * PG, MADV_GUARD_INSTALL))
			guard_ok = 0;
		bguard[r] = (now_ns() - t0) / P;

		/* one page per call: mmap + first touch, then munmap */
		char *b = base + P * PG;
		t0 = now_ns();
		for (int i = 0; i < P; i += 2) {
			map_fixed(b + i * PG, PG, fd, 0);
			b[i * PG] = 1;
		}
		t1 = now_ns();
		for (int i = 0; i < P; i += 2)
			munmap(b + i * PG, PG);
		t2 = now_ns();
		smap[r] = (t1 - t0) / (P / 2);
		sunmap[r] = (t2 - t1) / (P / 2);

		/* back to a clean PROT_NONE reservation */
		if (mmap(base, (size_t)P * PG * 2, PROT_NONE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED, -1, 0) != base) {
			perror("floor: re-reserve");
			return 1;
		}
	}
	printf("reps %d\n", reps);
	printf("bulk_map_populate_ns_per_page %.1f\n", median(bmap, reps));
	printf("bulk_revoke_mprotect_ns_per_page %.1f\n", median(brev, reps));
	printf("single_revoke_mprotect_ns %.1f\n", median(srev, reps));
	if (guard_ok) {
		printf("single_guard_install_ns %.1f\n", median(sguard, reps));
		printf("bulk_guard_install_ns_per_page %.1f\n", median(bguard, reps));
	} else {
		printf("guard_install unsupported\n");
	}
	printf("single_map_touch_ns %.1f\n", median(smap, reps));
	printf("single_munmap_ns %.1f\n", median(sunmap, reps));
	return 0;
}
