// SPDX-License-Identifier: MIT
/*
 * st-scenario: small programs for the suites to run with th_exec(), so that
 * a scenario starts in a fresh process (DANGLESS_OPTIONS is read at start-up;
 * LD_PRELOAD and `dangless run` need a program to run).
 *
 * Built twice: st-scenario is linked with libdangless.a, st-scenario-plain
 * with nothing (glibc malloc, or Dangless when preloaded).  The dangless_*
 * calls are weak, and looked up with dlsym when preloaded.
 *
 *   st-scenario basic          malloc API round trip; prints "basic ok"
 *   st-scenario active         prints "dangless=yes" or "dangless=no"
 *   st-scenario uaf-read       dangling read; prints target=<address>
 *   st-scenario uaf-write      dangling write
 *   st-scenario double-free    frees one pointer twice
 *   st-scenario outside SIZE,OFF  reads OFF bytes from a live SIZE-byte
 *                              allocation's start, outside it
 *   st-scenario half-line-uaf  writes half a line to stderr, then uaf-read
 *   st-scenario batch N        frees, then 2N+1 more frees, then reads
 *   st-scenario fork-batch N   batch N across fork: both sides must catch
 *   st-scenario batch-write N  writes right after free, then N more frees
 *   st-scenario batch-write-exit  writes right after free, then exits
 *   st-scenario batch-read     reads right after free; prints the bytes
 *   st-scenario batch-read-pointer  follows a pointer read after free
 *   st-scenario churn N        N malloc/free pairs, prints a checksum
 *   st-scenario exec NAME      runs a little, then execs itself as NAME
 *   st-scenario maps SIZE MAX  live SIZE-byte objects, every other freed,
 *                              until MAX are made; prints how far it got
 *   st-scenario stats          prints the counters, one "name value" a line
 *   st-scenario class-memory N SIZE  N objects of SIZE bytes, written; prints
 *                              the heap memory they took and their live bytes
 *   st-scenario env NAME       prints NAME=<its value in the environment>
 *   st-scenario dedicate       dangless_dedicate_vmem(1 GiB at 0x500000000000)
 *                              before the first malloc, then allocates
 *   st-scenario dedicate-small MIB  only MIB MiB, then 20000 allocations:
 *                              where did they go
 *   st-scenario descriptors ACTION [FILE]  does ACTION to the descriptor
 *                              table (close-range, closefrom, dup2 FILE onto
 *                              3..255, fork-close-all: a child closes all),
 *                              then 10^5 allocations, checking that live
 *                              objects keep their bytes; "descriptors ok",
 *                              then a read of an object freed before them
 *   st-scenario fd-list        allocates, forks, frees; prints the open
 *                              descriptors above 2 ("fds: 3 7")
 *   st-scenario misaligned-exit  batch-write-exit, but exit() is reached with
 *                              the stack misaligned by 8, as hijacked
 *                              control flow leaves it
 *   st-scenario misaligned-uaf-read  uaf-read from such a function
 *   st-scenario first-underflow  reads p[-1] of the first allocation
 *   st-scenario maps-gaps      a mixed workload, then checks /proc/self/maps:
 *                              "gaps ok", or the mapping that comes within
 *                              2 MiB of an alias mapping
 *   st-scenario dedicated-end  fills an 8 MiB dedicated range with 64 KiB
 *                              objects, then reads the byte after the page
 *                              of the highest one
 *   st-scenario technique NAME  the first steps of a documented heap
 *                              exploitation technique (how2heap's, for
 *                              glibc), in our own words: fastbin-dup,
 *                              tcache-poisoning, house-of-spirit,
 *                              freed-pointer-leak; prints "hijacked" when
 *                              the allocator was fooled
 */
#include <dangless/dangless.h>

#include <dlfcn.h>
#include <errno.h>
#include <stdbool.h>
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#pragma weak dangless_get_canonical
#pragma weak dangless_stats
#pragma weak dangless_dedicate_vmem

/* The first byte after the page holding p. */
#define DL_PAGE_END(p) (((uintptr_t)(p) | 4095) + 1)

static void *launder(void *p)
{
	__asm__ volatile("" : "+r"(p));
	return p;
}

static int (*get_stats(void))(struct dangless_stats *)
{
	if (dangless_stats)
		return dangless_stats;
	return (int (*)(struct dangless_stats *))dlsym(RTLD_DEFAULT,
						       "dangless_stats");
}

static int (*get_dedicate(void))(void *, void *)
{
	if (dangless_dedicate_vmem)
		return dangless_dedicate_vmem;
	return (int (*)(void *, void *))dlsym(RTLD_DEFAULT,
					      "dangless_dedicate_vmem");
}

static bool is_active(void)
{
	void *(*canon)(void *) = dangless_get_canonical;
	if (!canon)
		canon = (void *(*)(void *))dlsym(RTLD_DEFAULT,
						 "dangless_get_canonical");
	if (!canon)
		return false;
	void *p = malloc(16);
	bool yes = canon(p) != p;
	free(p);
	return yes;
}

static int fail(const char *what)
{
	printf("FAILED: %s\n", what);
	return 1;
}

static int basic(void)
{
	char *p = malloc(100);
	if (!p)
		return fail("malloc");
	memset(p, 'b', 100);
	p = realloc(p, 10000);
	if (!p || p[99] != 'b')
		return fail("realloc");
	free(p);
	int *z = calloc(1000, sizeof(int));
	for (int i = 0; i < 1000; i++)
		if (!z || z[i])
			return fail("calloc");
	free(z);
	for (size_t align = 8; align <= (2UL << 20); align *= 2) {
		void *a = NULL;
		if (posix_memalign(&a, align, 100) || (uintptr_t)a % align)
			return fail("posix_memalign");
		free(a);
		a = aligned_alloc(align, align);
		if (!a || (uintptr_t)a % align)
			return fail("aligned_alloc");
		free(a);
		a = memalign(align, 10);
		if (!a || (uintptr_t)a % align)
			return fail("memalign");
		free(a);
	}
	void *v = valloc(10), *pv = pvalloc(10);
	if (!v || !pv || (uintptr_t)v % 4096 || (uintptr_t)pv % 4096)
		return fail("valloc");
	free(v);
	free(pv);
	void *zero = malloc(0);
	if (!zero)
		return fail("malloc(0)");
	free(zero);
	free(NULL);
	if (malloc_usable_size(p = malloc(77)) < 77)
		return fail("malloc_usable_size");
	free(p);
	volatile size_t half = SIZE_MAX / 2 + 2, two = 2;
	errno = 0;
	if (calloc(half, two) || errno != ENOMEM)
		return fail("calloc overflow");
	printf("basic ok\n");
	return 0;
}

static int uaf(bool write)
{
	char *p = malloc(100);
	memset(p, 'u', 100);
	printf("target=%p\n", (void *)(p + 10));
	fflush(stdout);
	free(p);
	if (write)
		*(volatile char *)launder(p + 10) = 1;
	else
		(void)*(volatile char *)launder(p + 10);
	printf("survived\n");
	return 0;
}

static int double_free(void)
{
	char *p = malloc(10);
	printf("target=%p\n", (void *)p);
	fflush(stdout);
	free(p);
	free(launder(p));
	printf("survived\n");
	return 0;
}

/* A read at p + off, off outside a fresh live allocation of size bytes. */
static int outside(size_t size, long off)
{
	char *p = malloc(size);
	memset(p, 1, size);
	printf("target=%p\n", (void *)(p + off));
	fflush(stdout);
	printf("read %d\nsurvived\n", *(volatile char *)launder(p + off));
	return 0;
}

/* The program had half-written a line of its own when the bug hits. */
static int half_line_uaf(void)
{
	fputs("readelf: Error: ", stderr);
	fflush(stderr);
	return uaf(false);
}

static int batch(long n)
{
	char *p = malloc(64);
	memset(p, 1, 64);
	printf("target=%p\n", (void *)(p + 1));
	fflush(stdout);
	free(p);
	for (long i = 0; i < 2 * n + 1; i++)
		free(malloc(64));
	(void)*(volatile char *)launder(p + 1);
	printf("survived\n");
	return 0;
}

/* a write after free lands in the quarantine: the next flush finds it */
static int batch_write(long n)
{
	char *p = malloc(64);
	memset(p, 1, 64);
	printf("target=%p\n", (void *)(p + 5));
	fflush(stdout);
	free(p);
	*(volatile char *)launder(p + 5) = 'X';
	for (long i = 0; i < n; i++)
		free(malloc(64));
	printf("survived\n");
	return 0;
}

/*
 * Calls fn(arg) with rsp 16-aligned at its first instruction, where the ABI
 * has it 8 past a multiple of 16: what a return-oriented jump or a
 * corrupted frame leaves.  Compiled code then misplaces every aligned
 * spill (movaps) by 8.
 */
void st_call_misaligned(void (*fn)(void *), void *arg);
__asm__(".text\n"
	".type st_call_misaligned, @function\n"
	"st_call_misaligned:\n"
	"	push %rbp\n"
	"	mov %rsp, %rbp\n"
	"	and $-16, %rsp\n"
	"	sub $8, %rsp\n"
	"	mov %rdi, %rax\n"
	"	mov %rsi, %rdi\n"
	"	call *%rax\n"
	"	leave\n"
	"	ret\n"
	".size st_call_misaligned, .-st_call_misaligned\n");

static void exit_now(void *unused)
{
	(void)unused;
	exit(0);
}

static int misaligned_exit(void)
{
	char *p = malloc(64);
	memset(p, 1, 64);
	printf("target=%p\n", (void *)(p + 5));
	fflush(stdout);
	free(p);
	*(volatile char *)launder(p + 5) = 'X';
	st_call_misaligned(exit_now, NULL);
	printf("survived\n");
	return 0;
}

static void read_byte(void *p)
{
	(void)*(volatile char *)p;
}

static int misaligned_uaf_read(void)
{
	char *p = malloc(100);
	memset(p, 1, 100);
	free(p);
	printf("target=%p\n", (void *)(p + 10));
	fflush(stdout);
	st_call_misaligned(read_byte, launder(p + 10));
	printf("survived\n");
	return 0;
}

static int first_underflow(void)
{
	char *p = malloc(0x420);
	printf("target=%p\n", (void *)(p - 1));
	fflush(stdout);
	printf("survived %d\n", *(volatile char *)launder(p - 1));
	return 0;
}

struct mapping {
	uintptr_t start, end;
	bool alias, accessible;
};

/* The mappings of /proc/self/maps; aliases are those of the memfd
 * "dangless" but its canonical view (the largest). */
static size_t read_maps(struct mapping *m, size_t cap)
{
	FILE *f = fopen("/proc/self/maps", "r");
	char line[512];
	size_t n = 0, view = SIZE_MAX;
	while (f && n < cap && fgets(line, sizeof(line), f)) {
		unsigned long s, e;
		char perms[8];
		if (sscanf(line, "%lx-%lx %7s", &s, &e, perms) != 3)
			continue;
		m[n] = (struct mapping){s, e, strstr(line, "/memfd:dangless"),
					strncmp(perms, "---", 3) != 0};
		if (m[n].alias && (view == SIZE_MAX ||
				   e - s > m[view].end - m[view].start))
			view = n;
		n++;
	}
	if (f)
		fclose(f);
	if (view != SIZE_MAX)
		m[view].alias = false;
	return n;
}

/* Whether an accessible mapping other than an alias comes within 2 MiB of
 * an alias mapping; says which. */
static bool maps_touch_aliases(void)
{
	static struct mapping m[100000];
	size_t n = read_maps(m, sizeof(m) / sizeof(m[0]));
	const uintptr_t gap = 2 << 20;
	for (size_t i = 0; i < n; i++) {
		if (!m[i].alias)
			continue;
		for (size_t j = 0; j < n; j++) {
			if (m[j].alias || !m[j].accessible ||
			    m[j].end + gap <= m[i].start ||
			    m[j].start >= m[i].end + gap)
				continue;
			printf("%#lx-%#lx is within 2 MiB of the alias "
			       "%#lx-%#lx\n",
			       (unsigned long)m[j].start,
			       (unsigned long)m[j].end,
			       (unsigned long)m[i].start,
			       (unsigned long)m[i].end);
			return true;
		}
	}
	return false;
}

/* Checked from the first allocation on (a reservation's first aliases are
 * released again later, when their objects go), and as the heap grows. */
static int maps_gaps(void)
{
	enum { live = 3000 };
	static char *keep[live];
	for (int i = 0; i < 30000; i++) {
		int k = (i * 7919) % live;
		free(keep[k]);
		size_t len = i % 50 == 0 ? (size_t)(i % 7 + 1) << 16
					 : 8 + (size_t)(i * 131) % 3000;
		keep[k] = malloc(len);
		memset(keep[k], 1, len);
		if (i % 3 == 0)
			keep[k] = realloc(keep[k], len * 2 + 1);
		if ((i == 0 || i % 5000 == 4999) && maps_touch_aliases())
			return 1;
	}
	printf("gaps ok\n");
	return 0;
}

static int dedicated_end(void)
{
	int (*ded)(void *, void *) = get_dedicate();
	if (!ded)
		return fail("no dangless_dedicate_vmem");
	char *start = (char *)0x520000000000UL, *end = start + (8 << 20);
	if (ded(start, end) != 0)
		return fail("dangless_dedicate_vmem");
	char *last = NULL;
	for (int i = 0; i < 1000; i++) {
		char *p = malloc(65536);
		if (!p || p < start || p >= end)
			break;
		last = p > last ? p : last;
	}
	if (!last)
		return fail("no allocation in the dedicated range");
	char *after = (char *)DL_PAGE_END(last + 65535);
	printf("target=%p\n", (void *)after);
	fflush(stdout);
	printf("survived %d\n", *(volatile char *)launder(after));
	return 0;
}

/*
 * Each technique up to the step that gains the attacker something, with
 * glibc's outcome noted; under Dangless the first misuse must be reported
 * (or, for the leak under revoke=batch, read poison instead of a pointer).
 */
static int technique(const char *name)
{
	static char target[64] __attribute__((aligned(16)));
	if (!strcmp(name, "fastbin-dup")) {
		/* glibc: a, b, a again: two later mallocs return one chunk */
		char *a = malloc(24), *b = malloc(24);
		free(a);
		free(b);
		free(launder(a));
		char *x = malloc(24), *y = malloc(24), *z = malloc(24);
		if (x == z || x == y || y == z)
			printf("hijacked: one chunk handed out twice\n");
	} else if (!strcmp(name, "tcache-poisoning")) {
		/* glibc: a freed chunk's next pointer, overwritten, makes a
		 * later malloc return the attacker's address */
		uintptr_t *a = malloc(128), *b = malloc(128);
		free(a);
		free(b);
		printf("target=%p\n", (void *)b);
		fflush(stdout);
		*(uintptr_t *volatile)launder(b) = (uintptr_t)target;
		malloc(128);
		if (malloc(128) == (void *)target)
			printf("hijacked: malloc returned the target\n");
	} else if (!strcmp(name, "house-of-spirit")) {
		/* glibc: free() of a fake chunk on the stack puts it in a bin */
		size_t fake[8] __attribute__((aligned(16))) = {0, 0x40};
		fake[7] = 0x1234;
		printf("target=%p\n", (void *)&fake[2]);
		fflush(stdout);
		free(launder(&fake[2]));
		if (malloc(0x30) == (void *)&fake[2])
			printf("hijacked: malloc returned the stack\n");
	} else if (!strcmp(name, "freed-pointer-leak")) {
		/* glibc: a freed chunk still holds heap pointers: read one */
		void **a = malloc(64), **b = malloc(64);
		*a = b;
		free(b);
		free(a);
		printf("target=%p\n", (void *)a);
		fflush(stdout);
		uintptr_t leak = *(uintptr_t *volatile)launder(a);
		printf("leaked %#lx\n", (unsigned long)leak);
		printf(leak == (uintptr_t)b ? "hijacked: a heap address leaked\n"
					    : "no address leaked\n");
	} else {
		return fail("unknown technique");
	}
	printf("survived\n");
	return 0;
}

static int batch_read(bool follow)
{
	struct node {
		struct node *next;
		char data[40];
	} *p = malloc(sizeof(*p));
	p->next = p;
	memset(p->data, 1, sizeof(p->data));
	free(p);
	p = launder(p);
	if (follow) {
		/* what was a valid pointer is poison now */
		struct node *next = *(struct node *volatile *)&p->next;
		printf("next=%p\n", (void *)next);
		fflush(stdout);
		(void)*(volatile char *)next->data;
		printf("survived\n");
		return 0;
	}
	printf("bytes=");
	for (size_t i = 0; i < sizeof(*p); i++)
		printf("%02x", ((volatile unsigned char *)p)[i]);
	printf("\n");
	return 0;
}

/* batch mode across fork: what was queued before the fork is revoked on
 * both sides once each side's batch is flushed */
static int fork_batch(long n)
{
	char *p = malloc(64);
	memset(p, 1, 64);
	free(p); /* queued, not yet revoked */
	printf("target=%p\n", (void *)(p + 2));
	fflush(stdout);
	pid_t pid = fork();
	if (pid == 0) {
		for (long i = 0; i < 2 * n + 1; i++)
			free(malloc(64));
		(void)*(volatile char *)launder(p + 2);
		printf("child survived\n");
		fflush(stdout);
		_exit(0);
	}
	int status = 0;
	waitpid(pid, &status, 0);
	printf("child signal %d\n", WIFSIGNALED(status) ? WTERMSIG(status) : 0);
	fflush(stdout);
	for (long i = 0; i < 2 * n + 1; i++)
		free(malloc(64));
	(void)*(volatile char *)launder(p + 2);
	printf("parent survived\n");
	return 0;
}

static int churn(long n)
{
	uint64_t sum = 0;
	for (long i = 0; i < n; i++) {
		size_t size = 1 + (size_t)(i * 2654435761u) % 3000;
		unsigned char *p = malloc(size);
		if (!p)
			return fail("malloc");
		p[0] = (unsigned char)i;
		p[size - 1] = (unsigned char)(i >> 8);
		sum += p[0] + p[size - 1] + size;
		free(p);
	}
	printf("churn %ld sum %llu\n", n, (unsigned long long)sum);
	return 0;
}

static int exec_as(const char *name)
{
	/* leave some state behind, then replace the process */
	for (int i = 0; i < 100; i++)
		free(malloc(100));
	char *keep = strdup("kept across exec? no: the image is replaced");
	(void)keep;
	printf("exec %s\n", name);
	fflush(stdout);
	char *const argv[] = {(char *)"st-scenario", (char *)name, NULL};
	execv("/proc/self/exe", argv);
	perror("execv");
	return 1;
}

static int maps(size_t size, long max)
{
	int (*stats)(struct dangless_stats *) = get_stats();
	char **keep = mmap(NULL, (size_t)max * sizeof(char *),
			   PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
			   -1, 0);
	if (keep == MAP_FAILED)
		return fail("mmap");
	long made = 0;
	for (long i = 0; i < max; i++) {
		char *p = malloc(size);
		if (!p) {
			printf("malloc returned NULL at %ld\n", i);
			break;
		}
		p[0] = (char)i;
		p[size - 1] = (char)i;
		if (i % 2) {
			free(p); /* a hole between live neighbours */
			keep[i] = NULL;
		} else {
			keep[i] = p;
		}
		made = i + 1;
	}
	/* the live ones are intact and can be freed */
	for (long i = 0; i < made; i += 2) {
		if (keep[i][0] != (char)i || keep[i][size - 1] != (char)i)
			return fail("object corrupted");
		free(keep[i]);
	}
	char *after = malloc(size);
	if (!after)
		return fail("malloc after");
	free(after);
	printf("made %ld\n", made);
	if (stats) {
		struct dangless_stats s = {.version = DANGLESS_STATS_VERSION};
		stats(&s);
		printf("fallback_allocs %llu\n",
		       (unsigned long long)s.fallback_allocs);
	}
	printf("maps done\n");
	return 0;
}

/* The canonical memory the heap holds (the named parts but page tables
 * and metadata). */
static uint64_t heap_held(const struct dangless_stats *s)
{
	return s->mem_live_bytes + s->mem_slack_bytes + s->mem_free_bytes +
	       s->mem_warm_bytes + s->mem_quarantine_bytes + s->mem_stale_bytes;
}

/* n objects of size bytes, every byte written, in a process that has made
 * none of that size before: what they made the heap hold. */
static int class_memory(long n, size_t size)
{
	int (*stats)(struct dangless_stats *) = get_stats();
	if (!stats)
		return fail("no dangless_stats");
	char **keep = mmap(NULL, (size_t)n * sizeof(char *),
			   PROT_READ | PROT_WRITE,
			   MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	if (keep == MAP_FAILED)
		return fail("mmap");
	struct dangless_stats a = {.version = DANGLESS_STATS_VERSION};
	struct dangless_stats b = {.version = DANGLESS_STATS_VERSION};
	stats(&a);
	for (long i = 0; i < n; i++) {
		keep[i] = malloc(size);
		if (!keep[i])
			return fail("malloc");
		memset(keep[i], 1, size);
	}
	stats(&b);
	printf("held %llu live %llu\n",
	       (unsigned long long)(heap_held(&b) - heap_held(&a)),
	       (unsigned long long)(b.mem_live_bytes - a.mem_live_bytes));
	return 0;
}

static int print_stats(void)
{
	int (*stats)(struct dangless_stats *) = get_stats();
	if (!stats)
		return fail("no dangless_stats");
	for (int i = 0; i < 100; i++)
		free(malloc(100));
	struct dangless_stats s = {.version = DANGLESS_STATS_VERSION};
	stats(&s);
#define PRINT_STAT(name, what) printf(#name " %llu\n", (unsigned long long)s.name);
	DANGLESS_STAT_FIELDS(PRINT_STAT)
#undef PRINT_STAT
	return 0;
}

/* Gives Dangless 1 GiB at a fixed address, then allocates from it. */
static int dedicate(void)
{
	int (*ded)(void *, void *) = get_dedicate();
	if (!ded)
		return fail("no dangless_dedicate_vmem");
	char *start = (char *)0x500000000000UL, *end = start + (1UL << 30);
	/* nothing allocated yet, not even stdout's buffer */
	int bad = ded(end, start), unaligned = ded(start + 100, end);
	int rc = ded(start, end);
	printf("bad range %d\n", bad);
	printf("unaligned %d\n", unaligned);
	printf("dedicate %d\n", rc);
	int inside = 0;
	for (int i = 0; i < 1000; i++) {
		char *p = malloc(1 + (size_t)i * 37);
		p[0] = 1;
		inside += p >= start && p < end;
		if (i % 3)
			free(p);
	}
	char *big = malloc(8 << 20);
	big[(8 << 20) - 1] = 1;
	inside += big >= start && big < end;
	free(big);
	printf("inside %d of 1001\n", inside);
	char *q = malloc(64);
	printf("target=%p\n", (void *)q);
	fflush(stdout);
	free(q);
	(void)*(volatile char *)launder(q);
	printf("survived\n");
	return 0;
}

/*
 * Dedicates only mib MiB, then makes 20000 allocations (every alias page is
 * new, so they need far more than that) and says where they went.
 */
static int dedicate_small(long mib)
{
	int (*ded)(void *, void *) = get_dedicate();
	int (*stats)(struct dangless_stats *) = get_stats();
	if (!ded || !stats)
		return fail("no dangless_dedicate_vmem or dangless_stats");
	char *start = (char *)0x510000000000UL, *end = start + (mib << 20);
	struct dangless_stats before = {.version = DANGLESS_STATS_VERSION};
	stats(&before);
	int rc = ded(start, end);
	long inside = 0, nulls = 0;
	for (long i = 0; i < 20000; i++) {
		char *p = malloc(100);
		if (!p) {
			nulls++;
			continue;
		}
		p[0] = 1;
		inside += p >= start && p < end;
		free(p);
	}
	struct dangless_stats after = {.version = DANGLESS_STATS_VERSION};
	stats(&after);
	printf("dedicate %d\n", rc);
	printf("inside %ld nulls %ld\n", inside, nulls);
	printf("reserved beyond the dedicated range: %lld bytes\n",
	       (long long)(after.alias_bytes_reserved -
			   before.alias_bytes_reserved) -
		       (long long)(mib << 20));
	printf("fallback_allocs %llu\n",
	       (unsigned long long)after.fallback_allocs);
	return 0;
}

/*
 * A rolling window of live objects, each filled with a byte of its own, of
 * sizes from 16 B to 256 KiB: every one is checked before it is freed.
 * Returns the number of objects found changed.
 */
static long churn_checked(long rounds)
{
	enum { window = 512 };
	static unsigned char *live[window];
	static size_t len[window];
	long bad = 0;
	for (long i = 0; i < rounds + window; i++) {
		unsigned w = (unsigned)i % window;
		if (live[w]) {
			unsigned char want = (unsigned char)(w * 7 + 1);
			if (live[w][0] != want || live[w][len[w] - 1] != want ||
			    live[w][len[w] / 2] != want)
				bad++;
			free(live[w]);
			live[w] = NULL;
		}
		if (i >= rounds)
			continue;
		len[w] = i % 97 == 0 ? (size_t)(i % 4 + 1) << 16
				     : 16 + (size_t)(i * 37) % 2000;
		live[w] = malloc(len[w]);
		if (!live[w])
			return -1;
		memset(live[w], w * 7 + 1, len[w]);
	}
	return bad;
}

static int descriptors(const char *action, const char *file)
{
	char *freed = malloc(100);
	memset(freed, 'd', 100);
	if (!strcmp(action, "close-range")) {
		if (syscall(SYS_close_range, 3U, ~0U, 0U) != 0)
			return fail("close_range");
	} else if (!strcmp(action, "closefrom")) {
		closefrom(3);
	} else if (!strcmp(action, "dup2") && file) {
		int fd = open(file, O_RDWR);
		if (fd < 0)
			return fail("open FILE");
		for (int n = 3; n < 256; n++)
			if (n != fd && dup2(fd, n) != n)
				return fail("dup2");
	} else if (!strcmp(action, "fork-close-all")) {
		pid_t pid = fork();
		if (pid < 0)
			return fail("fork");
		if (pid == 0) {
			syscall(SYS_close_range, 0U, ~0U, 0U);
			_exit(churn_checked(100000) == 0 ? 0 : 1);
		}
		int status;
		if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) ||
		    WEXITSTATUS(status) != 0) {
			printf("child status 0x%x\n", status);
			return fail("the child that closed everything");
		}
	} else {
		return fail("unknown action");
	}
	/* Freed before the churn, so that a batch quarantine has revoked it
	 * by the end. */
	free(freed);
	long bad = churn_checked(100000);
	if (bad) {
		printf("%ld objects changed\n", bad);
		return fail("objects kept their bytes");
	}
	printf("descriptors ok\n");
	printf("target=%p\n", (void *)(freed + 10));
	fflush(stdout);
	printf("survived %d\n", *(volatile char *)launder(freed + 10));
	return 0;
}

static int fd_list(void)
{
	void *keep[64];
	for (int i = 0; i < 64; i++)
		keep[i] = malloc(1000 + (size_t)i * 100);
	pid_t pid = fork();
	if (pid == 0)
		_exit(0);
	waitpid(pid, NULL, 0);
	for (int i = 0; i < 64; i++)
		free(keep[i]);
	DIR *d = opendir("/proc/self/fd");
	if (!d)
		return fail("opendir");
	printf("fds:");
	for (struct dirent *e; (e = readdir(d));) {
		int fd = atoi(e->d_name);
		if (e->d_name[0] != '.' && fd > 2 && fd != dirfd(d))
			printf(" %d", fd);
	}
	printf("\n");
	closedir(d);
	return 0;
}

int main(int argc, char **argv)
{
	const char *what = argc > 1 ? argv[1] : "";
	if (!strcmp(what, "basic"))
		return basic();
	if (!strcmp(what, "active")) {
		printf("dangless=%s\n", is_active() ? "yes" : "no");
		return 0;
	}
	if (!strcmp(what, "uaf-read"))
		return uaf(false);
	if (!strcmp(what, "uaf-write"))
		return uaf(true);
	if (!strcmp(what, "double-free"))
		return double_free();
	if (!strcmp(what, "outside") && argc > 2 && strchr(argv[2], ','))
		return outside((size_t)atol(argv[2]),
			       atol(strchr(argv[2], ',') + 1));
	if (!strcmp(what, "half-line-uaf"))
		return half_line_uaf();
	if (!strcmp(what, "batch") && argc > 2)
		return batch(atol(argv[2]));
	if (!strcmp(what, "fork-batch") && argc > 2)
		return fork_batch(atol(argv[2]));
	if (!strcmp(what, "batch-write") && argc > 2)
		return batch_write(atol(argv[2]));
	if (!strcmp(what, "batch-write-exit"))
		return batch_write(0);
	if (!strcmp(what, "batch-read"))
		return batch_read(false);
	if (!strcmp(what, "batch-read-pointer"))
		return batch_read(true);
	if (!strcmp(what, "churn") && argc > 2)
		return churn(atol(argv[2]));
	if (!strcmp(what, "exec") && argc > 2)
		return exec_as(argv[2]);
	if (!strcmp(what, "maps") && argc > 3)
		return maps((size_t)atol(argv[2]), atol(argv[3]));
	if (!strcmp(what, "stats"))
		return print_stats();
	if (!strcmp(what, "class-memory") && argc > 3)
		return class_memory(atol(argv[2]), (size_t)atol(argv[3]));
	if (!strcmp(what, "dedicate"))
		return dedicate();
	if (!strcmp(what, "dedicate-small") && argc > 2)
		return dedicate_small(atol(argv[2]));
	if (!strcmp(what, "descriptors") && argc > 2)
		return descriptors(argv[2], argc > 3 ? argv[3] : NULL);
	if (!strcmp(what, "fd-list"))
		return fd_list();
	if (!strcmp(what, "technique") && argc > 2)
		return technique(argv[2]);
	if (!strcmp(what, "first-underflow"))
		return first_underflow();
	if (!strcmp(what, "maps-gaps"))
		return maps_gaps();
	if (!strcmp(what, "dedicated-end"))
		return dedicated_end();
	if (!strcmp(what, "misaligned-exit"))
		return misaligned_exit();
	if (!strcmp(what, "misaligned-uaf-read"))
		return misaligned_uaf_read();
	if (!strcmp(what, "env") && argc > 2) {
		const char *v = getenv(argv[2]);
		printf("%s=%s\n", argv[2], v ? v : "(unset)");
		return 0;
	}
	fprintf(stderr, "usage: st-scenario basic|active|uaf-read|uaf-write|"
			"double-free|batch N|churn N|exec NAME|maps SIZE MAX|"
			"stats|env NAME|dedicate|dedicate-small MIB|"
			"fork-batch N|batch-write N|batch-write-exit|"
			"batch-read|batch-read-pointer|descriptors ACTION "
			"[FILE]|fd-list\n");
	return 2;
}
