/* The page-table floor on this machine, measured the same way every run:
 * what the kernel (and the virtual machine under it) charges to make, to use
 * for the first time and to revoke a populated shared mapping of a memfd, in
 * bulk (512 pages per call), one page per call, and as a batch of scattered
 * one-page ranges in one process_madvise() call.  Every revocation is timed
 * on pages that were written first, as an object's pages are when it is
 * freed.  Each step maps at virtual addresses never used before in the
 * process, as Dangless's aliases are (on this machine the first write to a
 * page costs several times more at a fresh address than at a reused one).
 * Prints "key value" lines, ns per page (per range, per call), the
 * median over the repetitions; an operation this kernel refuses is printed as
 * "key n/a" with a "note" line saying why.  argv[1] scales the repetitions. */
#include "common.h"
#include <errno.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#ifndef MADV_GUARD_INSTALL
#define MADV_GUARD_INSTALL 102
#endif

#define P 512
#define PG 4096L
#define MAXREP 400
/* scattered ranges: every other page of the 512 (no two adjacent, so
 * nothing coalesces), in a random order */
#define SCATTERED (P / 2)
#define BATCH_SMALL 64 /* revoke=batch:64 */

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

static void map_fixed(char *a, long len, int fd, long off, int populate)
{
	if (mmap(a, (size_t)len, PROT_READ | PROT_WRITE,
		 MAP_SHARED | MAP_FIXED | (populate ? MAP_POPULATE : 0), fd, off) != a) {
		perror("floor: mmap");
		exit(1);
	}
}

/* one byte written per page, as the first use of an object does */
static void touch_pages(char *a, int pages, char v)
{
	volatile char *p = a;
	for (int i = 0; i < pages; i++)
		p[i * PG] = v;
}

/* A reservation of address space handed out in slices of 512 pages, each
 * slice once: a step's mappings never land where an earlier one was. */
static char *space;
static long space_used, space_len;

static char *fresh_slice(void)
{
	if (space_used + P * PG > space_len) {
		fprintf(stderr, "floor: address space reservation exhausted\n");
		exit(1);
	}
	space_used += P * PG;
	return space + space_used - P * PG;
}

/* a fresh slice mapped over the canonical pages, each page written once */
static char *map_and_touch(int fd)
{
	char *a = fresh_slice();
	map_fixed(a, P * PG, fd, 0, 1);
	touch_pages(a, P, 1);
	return a;
}

static long process_madvise_(int pidfd, const struct iovec *iov, size_t n, int advice)
{
	return syscall(SYS_process_madvise, pidfd, iov, n, advice, 0u);
}

/* Can MADV_GUARD_INSTALL go through process_madvise() on our own memfd
 * mapping?  (Linux 6.13+ for guards through process_madvise, 6.15+ for
 * guards in shared file mappings.)  Returns the pidfd, or -1 after saying
 * why not. */
static int batched_guard_probe(int fd)
{
	int pidfd = (int)syscall(SYS_pidfd_open, getpid(), 0u);
	if (pidfd < 0) {
		printf("note batched_guard_install: pidfd_open refused: %s\n", strerror(errno));
		return -1;
	}
	char *scratch = map_and_touch(fd);
	struct iovec iov[2] = { { scratch, PG }, { scratch + 2 * PG, PG } };
	long r = process_madvise_(pidfd, iov, 2, MADV_GUARD_INSTALL);
	if (r != 2 * PG) {
		printf("note batched_guard_install: process_madvise(MADV_GUARD_INSTALL) of a memfd "
		       "MAP_SHARED mapping returned %ld: %s\n", r, r < 0 ? strerror(errno) : "partial");
		close(pidfd);
		return -1;
	}
	/* a guarded page must fault: reading it through the kernel says EFAULT */
	int pipefd[2];
	if (pipe(pipefd) == 0) {
		long w = write(pipefd[1], scratch, 1);
		int e = errno;
		close(pipefd[0]);
		close(pipefd[1]);
		if (w != -1 || e != EFAULT) {
			printf("note batched_guard_install: process_madvise accepted the guards "
			       "but the page is still readable\n");
			close(pidfd);
			return -1;
		}
	}
	return pidfd;
}

/* guards on the scattered pages, `per_call` ranges per process_madvise();
 * returns ns per range, or a negative value if the kernel refused */
static double batched_guards(int fd, int pidfd, const int *order, int per_call)
{
	static struct iovec iov[SCATTERED];
	char *a = map_and_touch(fd);
	for (int i = 0; i < SCATTERED; i++) {
		iov[i].iov_base = a + (long)order[i] * PG;
		iov[i].iov_len = PG;
	}
	double t0 = now_ns();
	for (int i = 0; i < SCATTERED; i += per_call)
		if (process_madvise_(pidfd, iov + i, (size_t)per_call, MADV_GUARD_INSTALL) !=
		    per_call * PG)
			return -1;
	return (now_ns() - t0) / SCATTERED;
}

int main(int argc, char **argv)
{
	int reps = (int)scaled(argc, argv, 100, 10);
	if (reps > MAXREP)
		reps = MAXREP;
	/* the first 512 pages are the canonical memory every alias maps; the
	 * second 512 have their hole punched before each use (fresh pages) */
	int fd = memfd_create("bench-floor", 0);
	if (fd < 0 || ftruncate(fd, 2 * P * PG)) {
		perror("floor: memfd");
		return 1;
	}
	/* address space for every slice of every repetition (8 per repetition,
	 * one more for the probe), reserved once */
	space_len = (long)(8 * reps + 1) * P * PG;
	space = mmap(NULL, (size_t)space_len, PROT_NONE,
		     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (space == MAP_FAILED) {
		perror("floor: reserve");
		return 1;
	}
	static double bmap[MAXREP], touch1[MAXREP], touch2[MAXREP], brev[MAXREP],
		fmap[MAXREP], ftouch[MAXREP], srev[MAXREP], sguard[MAXREP], bguard[MAXREP],
		pguard_small[MAXREP], pguard_all[MAXREP], smap[MAXREP], sunmap[MAXREP];
	int guard_ok = 1;
	int pidfd = batched_guard_probe(fd);
	static int order[SCATTERED];
	rng_t rng = rng_seed(12);
	for (int i = 0; i < SCATTERED; i++)
		order[i] = 2 * i;
	for (int i = SCATTERED - 1; i > 0; i--) {
		int j = (int)rng_below(&rng, (uint64_t)i + 1), t = order[i];
		order[i] = order[j];
		order[j] = t;
	}
	for (int r = 0; r < reps; r++) {
		char *rep_start = space + space_used, *a;
		double t0, t1, t2, t3, t4;

		/* bulk: one mmap(MAP_POPULATE) of 512 pages, the first write to
		 * each page, a second write, one mprotect(PROT_NONE) */
		a = fresh_slice();
		t0 = now_ns();
		map_fixed(a, P * PG, fd, 0, 1);
		t1 = now_ns();
		touch_pages(a, P, 1);
		t2 = now_ns();
		touch_pages(a, P, 2);
		t3 = now_ns();
		mprotect(a, P * PG, PROT_NONE);
		t4 = now_ns();
		bmap[r] = (t1 - t0) / P;
		touch1[r] = (t2 - t1) / P;
		touch2[r] = (t3 - t2) / P;
		brev[r] = (t4 - t3) / P;

		/* the same on memfd pages that do not exist yet: what mapping
		 * costs when the canonical memory was given back */
		fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, P * PG, P * PG);
		a = fresh_slice();
		t0 = now_ns();
		map_fixed(a, P * PG, fd, P * PG, 1);
		t1 = now_ns();
		touch_pages(a, P, 1);
		t2 = now_ns();
		fmap[r] = (t1 - t0) / P;
		ftouch[r] = (t2 - t1) / P;

		/* single page revoke: mprotect one page per call (every other page,
		 * so each call splits the VMA as a strict free() would) */
		a = map_and_touch(fd);
		t0 = now_ns();
		for (int i = 0; i < P; i += 2)
			mprotect(a + i * PG, PG, PROT_NONE);
		srev[r] = (now_ns() - t0) / (P / 2);

		/* single page guard install, madvise(MADV_GUARD_INSTALL) per page:
		 * no VMA split */
		a = map_and_touch(fd);
		t0 = now_ns();
		for (int i = 0; i < P && guard_ok; i += 2)
			if (madvise(a + i * PG, PG, MADV_GUARD_INSTALL))
				guard_ok = 0;
		sguard[r] = (now_ns() - t0) / (P / 2);

		/* bulk guard install over 512 pages */
		a = map_and_touch(fd);
		t0 = now_ns();
		if (guard_ok && madvise(a, P * PG, MADV_GUARD_INSTALL))
			guard_ok = 0;
		bguard[r] = (now_ns() - t0) / P;

		/* scattered one-page guards, a batch per process_madvise() call:
		 * 64 ranges per call, then all 256 in one call */
		if (pidfd >= 0) {
			pguard_small[r] = batched_guards(fd, pidfd, order, BATCH_SMALL);
			pguard_all[r] = batched_guards(fd, pidfd, order, SCATTERED);
			if (pguard_small[r] < 0 || pguard_all[r] < 0) {
				printf("note batched_guard_install: process_madvise refused a batch: %s\n",
				       strerror(errno));
				close(pidfd);
				pidfd = -1;
			}
		}

		/* one page per call: mmap + first touch, then munmap */
		char *b = fresh_slice();
		t0 = now_ns();
		for (int i = 0; i < P; i += 2) {
			map_fixed(b + i * PG, PG, fd, 0, 0);
			b[i * PG] = 1;
		}
		t1 = now_ns();
		for (int i = 0; i < P; i += 2)
			munmap(b + i * PG, PG);
		t2 = now_ns();
		smap[r] = (t1 - t0) / (P / 2);
		sunmap[r] = (t2 - t1) / (P / 2);

		/* this repetition's slices back to reserved address space: the
		 * memory goes, the addresses stay used */
		long used = space + space_used - rep_start;
		if (mmap(rep_start, (size_t)used, PROT_NONE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED, -1, 0) != rep_start) {
			perror("floor: re-reserve");
			return 1;
		}
	}
	printf("reps %d\n", reps);
	printf("bulk_map_populate_ns_per_page %.1f\n", median(bmap, reps));
	printf("first_touch_ns_per_page %.1f\n", median(touch1, reps));
	printf("second_touch_ns_per_page %.1f\n", median(touch2, reps));
	printf("bulk_revoke_mprotect_ns_per_page %.1f\n", median(brev, reps));
	printf("bulk_map_fresh_pages_ns_per_page %.1f\n", median(fmap, reps));
	printf("first_touch_fresh_pages_ns_per_page %.1f\n", median(ftouch, reps));
	printf("single_revoke_mprotect_ns %.1f\n", median(srev, reps));
	if (guard_ok) {
		printf("single_guard_install_ns %.1f\n", median(sguard, reps));
		printf("bulk_guard_install_ns_per_page %.1f\n", median(bguard, reps));
	} else {
		printf("note guard_install: madvise(MADV_GUARD_INSTALL) refused (Linux 6.15+)\n");
		printf("single_guard_install_ns n/a\n");
		printf("bulk_guard_install_ns_per_page n/a\n");
	}
	if (pidfd >= 0) {
		printf("batched_guard_install_%d_ns_per_range %.1f\n", BATCH_SMALL,
		       median(pguard_small, reps));
		printf("batched_guard_install_%d_ns_per_range %.1f\n", SCATTERED,
		       median(pguard_all, reps));
	} else {
		printf("batched_guard_install_%d_ns_per_range n/a\n", BATCH_SMALL);
		printf("batched_guard_install_%d_ns_per_range n/a\n", SCATTERED);
	}
	printf("single_map_touch_ns %.1f\n", median(smap, reps));
	printf("single_munmap_ns %.1f\n", median(sunmap, reps));
	return 0;
}
