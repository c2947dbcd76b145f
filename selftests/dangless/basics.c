// SPDX-License-Identifier: MIT
/*
 * The thesis basics, plus the corners of the malloc API: free(NULL), plain
 * malloc/free, no alias page ever handed out twice, calloc, page-sized and
 * many small objects, the realloc cases, malloc(0), malloc_usable_size,
 * calloc/reallocarray overflow, every aligned allocator from 8 B to 2 MiB,
 * the dangless_* names and the statistics.
 *
 * Linked with libdangless.a (whole archive): every malloc here is Dangless.
 */
#include "st-common.h"

#include <malloc.h>
#include <pthread.h>
#include <sys/mman.h>

static bool st_is_dangless(void *p)
{
	/* An alias is never the canonical address of its bytes. */
	return dangless_get_canonical(p) != p;
}

TEST(free_null)
{
	free(NULL);
	dangless_free(NULL);
}

TEST(free_keeps_errno)
{
	/* glibc's free leaves errno alone (POSIX.1-2024 requires it): code
	 * that frees before reporting an error relies on that */
	static const size_t sizes[] = {0, 16, 5000, 1 << 20};
	for (size_t i = 0; i < 4; i++) {
		void *p = malloc(sizes[i]);
		ASSERT_NOT_NULL(p);
		errno = EILSEQ;
		free(p);
		EXPECT_EQ(EILSEQ, errno);
	}
	errno = EILSEQ;
	free(NULL);
	EXPECT_EQ(EILSEQ, errno);
}

TEST(simple_malloc_free)
{
	char *p = malloc(100);
	ASSERT_NOT_NULL(p);
	ASSERT_TRUE(st_is_dangless(p));
	memset(p, 'x', 100);
	for (int i = 0; i < 100; i++)
		ASSERT_EQ('x', p[i]);
	free(p);
}

TEST(malloc_is_dangless_everywhere)
{
	/* stdio, strdup and friends allocate through Dangless too. */
	char *s = strdup("dangless");
	ASSERT_TRUE(st_is_dangless(s));
	free(s);
	char *a = NULL;
	ASSERT_EQ(2, asprintf(&a, "%d", 42));
	ASSERT_TRUE(st_is_dangless(a));
	free(a);
	/* and not-Dangless memory is given back unchanged */
	int on_stack = 0;
	ASSERT_EQ((void *)&on_stack, dangless_get_canonical(&on_stack));
}

TEST(alias_offset_equals_canonical_offset)
{
	static const size_t sizes[] = {1, 8, 24, 100, 1000, 4000, 4096,
				       5000, 3 * 4096 + 17, 1 << 20};
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		char *p = malloc(sizes[i]);
		ASSERT_NOT_NULL(p);
		char *c = dangless_get_canonical(p);
		ASSERT_NE((void *)p, (void *)c);
		EXPECT_EQ((uintptr_t)p % ST_PAGE, (uintptr_t)c % ST_PAGE);
		/* the alias and the canonical address are the same bytes */
		p[sizes[i] - 1] = 'z';
		p[0] = 'a';
		EXPECT_EQ('a', c[0]);
		c[0] = 'b';
		EXPECT_EQ('b', p[0]);
		char *c_last = dangless_get_canonical(p + sizes[i] - 1);
		if (sizes[i] > 1)
			EXPECT_EQ('z', *c_last);
		EXPECT_EQ((uintptr_t)(p + sizes[i] - 1) % ST_PAGE,
			  (uintptr_t)c_last % ST_PAGE);
		free(p);
	}
}

#define ST_CYCLES 100000

TEST(no_alias_reuse_100k_cycles)
{
	uintptr_t *pages = mmap(NULL, ST_CYCLES * sizeof(uintptr_t),
				PROT_READ | PROT_WRITE,
				MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ASSERT_NE(MAP_FAILED, (void *)pages);
	for (size_t i = 0; i < ST_CYCLES; i++) {
		char *p = malloc(16);
		ASSERT_NOT_NULL(p);
		p[0] = (char)i;
		pages[i] = (uintptr_t)p / ST_PAGE;
		free(st_launder(p));
	}
	size_t dups = st_count_duplicates(pages, ST_CYCLES);
	EXPECT_EQ((size_t)0, dups);
	munmap(pages, ST_CYCLES * sizeof(uintptr_t));
}

TEST(no_alias_reuse_mixed_sizes)
{
	/* Multi-page objects: no page of any of them is ever seen twice. */
	enum { N = 3000 };
	static uintptr_t pages[N * 4];
	size_t n = 0;
	for (size_t i = 0; i < N; i++) {
		size_t size = 1 + (i * 7919) % (3 * ST_PAGE);
		char *p = malloc(size);
		ASSERT_NOT_NULL(p);
		uintptr_t first = (uintptr_t)p / ST_PAGE;
		uintptr_t last = ((uintptr_t)p + size - 1) / ST_PAGE;
		for (uintptr_t pg = first; pg <= last; pg++)
			pages[n++] = pg;
		p[0] = 1;
		p[size - 1] = 2;
		free(st_launder(p));
	}
	EXPECT_EQ((size_t)0, st_count_duplicates(pages, n));
}

TEST(calloc_zeroed)
{
	static const size_t sizes[] = {1, 7, 64, 4096, 10000, 1 << 21};
	for (int round = 0; round < 2; round++) {
		for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
			unsigned char *p = calloc(1, sizes[i]);
			ASSERT_NOT_NULL(p);
			for (size_t j = 0; j < sizes[i]; j++)
				if (p[j])
					ASSERT_EQ(0, p[j]);
			/* dirty it so that reuse of canonical memory shows */
			memset(p, 0xa5, sizes[i]);
			free(p);
		}
	}
	int *v = calloc(1000, sizeof(int));
	ASSERT_NOT_NULL(v);
	for (int i = 0; i < 1000; i++)
		ASSERT_EQ(0, v[i]);
	free(v);
}

TEST(calloc_zeroed_after_dirty_frees)
{
	/* canonical memory given back and handed out again is zero again */
	static const size_t sizes[] = {16, 64, 200, 1024, 5000, 40000};
	enum { N = 2000 };
	static unsigned char *p[N];
	for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
		for (int round = 0; round < 3; round++) {
			for (int i = 0; i < N; i++) {
				p[i] = calloc(1, sizes[s]);
				ASSERT_NOT_NULL(p[i]);
				for (size_t j = 0; j < sizes[s]; j += 8)
					if (p[i][j])
						ASSERT_EQ(0, p[i][j]);
				ASSERT_EQ(0, p[i][sizes[s] - 1]);
				memset(p[i], 0xff, sizes[s]);
			}
			for (int i = 0; i < N; i++)
				free(p[i]);
		}
	}
}

TEST(page_sized)
{
	char *p[64];
	for (int i = 0; i < 64; i++) {
		p[i] = malloc(ST_PAGE);
		ASSERT_NOT_NULL(p[i]);
		memset(p[i], i, ST_PAGE);
	}
	for (int i = 0; i < 64; i++) {
		for (size_t j = 0; j < ST_PAGE; j += 512)
			ASSERT_EQ(i, p[i][j]);
		free(p[i]);
	}
}

TEST(many_small)
{
	enum { N = 50000 };
	static uint32_t *obj[N];
	for (uint32_t i = 0; i < N; i++) {
		size_t size = 4 + (i % 13) * 4;
		obj[i] = malloc(size);
		ASSERT_NOT_NULL(obj[i]);
		for (size_t j = 0; j < size / 4; j++)
			obj[i][j] = i ^ (uint32_t)j;
	}
	for (uint32_t i = 0; i < N; i++) {
		size_t size = 4 + (i % 13) * 4;
		for (size_t j = 0; j < size / 4; j++)
			ASSERT_EQ(i ^ (uint32_t)j, obj[i][j]);
		/* objects never overlap: each sits at its own address */
		if (i)
			ASSERT_NE((void *)obj[i], (void *)obj[i - 1]);
	}
	for (uint32_t i = 0; i < N; i += 2)
		free(obj[i]);
	for (uint32_t i = 1; i < N; i += 2) {
		ASSERT_EQ(i, obj[i][0]);
		free(obj[i]);
	}
}

TEST(realloc_null_is_malloc)
{
	char *p = realloc(NULL, 100);
	ASSERT_NOT_NULL(p);
	ASSERT_TRUE(st_is_dangless(p));
	memset(p, 1, 100);
	ASSERT_LE((size_t)100, malloc_usable_size(p));
	free(p);
}

TEST(realloc_shrink_in_place)
{
	char *p = malloc(100);
	ASSERT_NOT_NULL(p);
	for (int i = 0; i < 100; i++)
		p[i] = (char)i;
	char *q = realloc(p, 50);
	ASSERT_EQ((void *)p, (void *)q);
	for (int i = 0; i < 50; i++)
		ASSERT_EQ((char)i, q[i]);
	free(q);
}

TEST(realloc_shrink_across_pages_in_place)
{
	size_t old_size = 5 * ST_PAGE, new_size = ST_PAGE + 10;
	char *p = malloc(old_size);
	ASSERT_NOT_NULL(p);
	for (size_t i = 0; i < old_size; i++)
		p[i] = (char)(i * 31);
	char *q = realloc(p, new_size);
	ASSERT_EQ((void *)p, (void *)q);
	for (size_t i = 0; i < new_size; i++)
		ASSERT_EQ((char)(i * 31), q[i]);
	ASSERT_LE(new_size, malloc_usable_size(q));
	free(q);
}

TEST(realloc_grow_in_place_within_usable_size)
{
	static const size_t sizes[] = {1, 13, 100, 1000, 5000, 3 * 4096 + 1};
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		char *p = malloc(sizes[i]);
		ASSERT_NOT_NULL(p);
		size_t usable = malloc_usable_size(p);
		ASSERT_LE(sizes[i], usable);
		memset(p, 'u', sizes[i]);
		char *q = realloc(p, usable);
		ASSERT_EQ((void *)p, (void *)q);
		for (size_t j = 0; j < sizes[i]; j++)
			ASSERT_EQ('u', q[j]);
		/* the whole usable size is ours to write */
		memset(q, 'v', usable);
		free(q);
	}
}

TEST(realloc_grow_moves_and_keeps_contents)
{
	char *p = malloc(100);
	ASSERT_NOT_NULL(p);
	for (int i = 0; i < 100; i++)
		p[i] = (char)(i + 1);
	char *blocker = malloc(100); /* takes the alias pages after p */
	ASSERT_NOT_NULL(blocker);
	char *q = realloc(p, 1 << 20);
	ASSERT_NOT_NULL(q);
	ASSERT_TRUE(st_is_dangless(q));
	for (int i = 0; i < 100; i++)
		ASSERT_EQ((char)(i + 1), q[i]);
	memset(q + 100, 0x5a, (1 << 20) - 100);
	ASSERT_LE((size_t)(1 << 20), malloc_usable_size(q));
	q = realloc(q, 3 << 20);
	ASSERT_NOT_NULL(q);
	for (int i = 0; i < 100; i++)
		ASSERT_EQ((char)(i + 1), q[i]);
	ASSERT_EQ(0x5a, q[(1 << 20) - 1]);
	free(q);
	free(blocker);
}

TEST(realloc_move_keeps_every_usable_byte)
{
	/* bytes written up to malloc_usable_size are the program's too */
	static const size_t sizes[] = {1, 20, 100, 3000, 5000, 40000};
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		unsigned char *p = malloc(sizes[i]);
		ASSERT_NOT_NULL(p);
		size_t usable = malloc_usable_size(p);
		for (size_t j = 0; j < usable; j++)
			p[j] = (unsigned char)(j * 13 + 1);
		unsigned char *q = realloc(p, 8 << 20);
		ASSERT_NOT_NULL(q);
		for (size_t j = 0; j < usable; j++)
			if (q[j] != (unsigned char)(j * 13 + 1)) {
				TH_LOG("%zu-byte object (usable %zu): byte %zu "
				       "lost in the move",
				       sizes[i], usable, j);
				ASSERT_EQ((unsigned char)(j * 13 + 1), q[j]);
			}
		free(q);
	}
}

TEST(realloc_zero_size)
{
	/* glibc frees and returns NULL; either NULL or a freeable pointer. */
	char *p = malloc(10);
	ASSERT_NOT_NULL(p);
	char *q = realloc(p, 0);
	free(q);
}

TEST(realloc_chain_keeps_contents)
{
	/* up through every size class into large objects, then back down */
	unsigned char *p = NULL;
	size_t size = 0;
	uint32_t x = 12345;
	for (int step = 0; step < 400; step++) {
		size_t next;
		if (step < 200)
			next = size + 1 + size / 20 + (x % 97);
		else
			next = size - size / 25 - 1;
		x = x * 1103515245 + 12345;
		unsigned char *q = realloc(p, next);
		ASSERT_NOT_NULL(q);
		size_t keep = size < next ? size : next;
		for (size_t i = 0; i < keep; i++)
			if (q[i] != (unsigned char)(i * 7 + (i >> 8)))
				ASSERT_EQ((unsigned char)(i * 7 + (i >> 8)),
					  q[i]);
		for (size_t i = keep; i < next; i++)
			q[i] = (unsigned char)(i * 7 + (i >> 8));
		p = q;
		size = next;
	}
	free(p);
}

TEST(many_live_small_objects)
{
	/* 200k live objects must not run into any limit */
	enum { N = 200000 };
	uint64_t **v = mmap(NULL, N * sizeof(*v), PROT_READ | PROT_WRITE,
			    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ASSERT_NE(MAP_FAILED, (void *)v);
	for (uint64_t i = 0; i < N; i++) {
		v[i] = malloc(16);
		ASSERT_NOT_NULL(v[i]);
		*v[i] = i;
	}
	struct dangless_stats s = st_stats();
	TH_LOG("%llu live objects in %llu alias mappings",
	       (unsigned long long)s.live_objects,
	       (unsigned long long)s.alias_mappings_live);
	EXPECT_LE((uint64_t)N, s.live_objects);
	for (uint64_t i = 0; i < N; i++) {
		ASSERT_EQ(i, *v[i]);
		free(v[i]);
	}
	munmap(v, N * sizeof(*v));
}

static long st_rss_kb(void)
{
	long pages = 0, resident = 0;
	FILE *f = fopen("/proc/self/statm", "r");
	if (f) {
		if (fscanf(f, "%ld %ld", &pages, &resident) != 2)
			resident = 0;
		fclose(f);
	}
	return resident * (long)(ST_PAGE / 1024);
}

TEST(churn_keeps_memory_and_mappings_bounded)
{
	/* 200k allocations, never more than 128 live: what is kept must not
	 * grow with the number of allocations made (alias space aside) */
	void *live[128] = {0};
	uint32_t x = 1;
	for (int i = 0; i < 200000; i++) {
		x = x * 1103515245 + 12345;
		size_t k = (x >> 8) % 128;
		free(live[k]);
		size_t n = 1 + (x >> 12) % ((x & 1) ? 200 : 20000);
		live[k] = malloc(n);
		ASSERT_NOT_NULL(live[k]);
		memset(live[k], 1, n);
	}
	struct dangless_stats s = st_stats();
	long rss = st_rss_kb();
	TH_LOG("canonical %llu KiB, rss %ld KiB, %llu live mappings, "
	       "%llu MiB of alias space used",
	       (unsigned long long)s.canonical_bytes >> 10, rss,
	       (unsigned long long)s.alias_mappings_live,
	       (unsigned long long)s.alias_bytes_used >> 20);
	EXPECT_GT(32ULL << 20, (unsigned long long)s.canonical_bytes);
	EXPECT_GT(4096ULL, (unsigned long long)s.alias_mappings_live);
	EXPECT_GT(256L << 10, rss);
	for (int k = 0; k < 128; k++)
		free(live[k]);
}

TEST(calloc_large_is_zero)
{
	size_t size = 128UL << 20;
	unsigned char *p = calloc(1, size);
	ASSERT_NOT_NULL(p);
	for (size_t i = 0; i < size; i += 1 << 20)
		ASSERT_EQ(0, p[i]);
	ASSERT_EQ(0, p[size - 1]);
	free(p);
	int *z = calloc(0, 4);
	ASSERT_NOT_NULL(z);
	free(z);
	void *a = NULL;
	ASSERT_EQ(0, posix_memalign(&a, 64, 0));
	ASSERT_NOT_NULL(a);
	free(a);
}

TEST(calloc_large_after_free_of_same_size_is_zero)
{
	/* a freed large extent is kept warm and handed out again: calloc
	 * must still see zeros, and the old alias must not come back */
	static const size_t sizes[] = {64 << 10, 200 << 10, 1 << 20};
	for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
		size_t size = sizes[s];
		for (int round = 0; round < 3; round++) {
			unsigned char *dirty = malloc(size);
			ASSERT_NOT_NULL(dirty);
			memset(dirty, 0xab, size);
			struct dangless_stats before = st_stats();
			free(dirty);
			struct dangless_stats after = st_stats();
			/* kept warm, not given back (older extents may be,
			 * to keep the warm ones within their bound) */
			EXPECT_LT(after.canonical_bytes_released -
					  before.canonical_bytes_released,
				  (uint64_t)size);
			EXPECT_GE(after.mem_warm_bytes, (uint64_t)size);
			unsigned char *p = calloc(1, size);
			ASSERT_NOT_NULL(p);
			ASSERT_NE(dirty, p);
			size_t nonzero = 0;
			for (size_t i = 0; i < size; i++)
				nonzero += p[i] != 0;
			ASSERT_EQ((size_t)0, nonzero);
			free(p);
		}
	}
}

TEST(glibc_allocates_through_dangless)
{
	/* getline, open_memstream: glibc's own mallocs and reallocs */
	char *buf = NULL;
	size_t bufsize = 0;
	FILE *ms = open_memstream(&buf, &bufsize);
	ASSERT_NOT_NULL(ms);
	for (int i = 0; i < 5000; i++)
		fprintf(ms, "line %d\n", i);
	fclose(ms);
	ASSERT_TRUE(st_is_dangless(buf));
	FILE *in = fmemopen(buf, bufsize, "r");
	ASSERT_NOT_NULL(in);
	char *line = NULL;
	size_t cap = 0;
	int n = 0;
	while (getline(&line, &cap, in) > 0)
		n++;
	fclose(in);
	EXPECT_EQ(5000, n);
	ASSERT_TRUE(st_is_dangless(line));
	free(line);
	free(buf);
}

TEST(reallocarray_works)
{
	int *v = reallocarray(NULL, 10, sizeof(int));
	ASSERT_NOT_NULL(v);
	for (int i = 0; i < 10; i++)
		v[i] = i;
	v = reallocarray(v, 10000, sizeof(int));
	ASSERT_NOT_NULL(v);
	for (int i = 0; i < 10; i++)
		ASSERT_EQ(i, v[i]);
	free(v);
}

TEST(malloc_zero_unique)
{
	enum { N = 2000 };
	static void *p[N];
	static uintptr_t addr[N];
	for (int i = 0; i < N; i++) {
		p[i] = malloc(0);
		ASSERT_NOT_NULL(p[i]);
		addr[i] = (uintptr_t)p[i];
	}
	EXPECT_EQ((size_t)0, st_count_duplicates(addr, N));
	for (int i = 0; i < N; i++)
		free(p[i]);
	void *d = dangless_malloc(0);
	ASSERT_NOT_NULL(d);
	dangless_free(d);
}

TEST(malloc_usable_size_sane)
{
	EXPECT_EQ((size_t)0, malloc_usable_size(NULL));
	for (size_t size = 1; size < 70000; size = size * 3 + 1) {
		char *p = malloc(size);
		ASSERT_NOT_NULL(p);
		size_t u = malloc_usable_size(p);
		ASSERT_LE(size, u);
		EXPECT_EQ(u, dangless_malloc_usable_size(p));
		/* usable bytes stay within the object's own pages */
		memset(p, 0xee, u);
		free(p);
	}
}

TEST(calloc_overflow_enomem)
{
	size_t huge = st_launder_size(SIZE_MAX / 2 + 2);
	errno = 0;
	ASSERT_NULL(calloc(huge, 2));
	EXPECT_EQ(ENOMEM, errno);
	errno = 0;
	ASSERT_NULL(calloc(2, huge));
	EXPECT_EQ(ENOMEM, errno);
	errno = 0;
	ASSERT_NULL(dangless_calloc(st_launder_size(1UL << 33),
				    st_launder_size(1UL << 33)));
	EXPECT_EQ(ENOMEM, errno);
	errno = 0;
	ASSERT_NULL(reallocarray(NULL, huge, 4));
	EXPECT_EQ(ENOMEM, errno);
}

TEST(malloc_huge_enomem)
{
	errno = 0;
	ASSERT_NULL(malloc(st_launder_size(SIZE_MAX - 4096)));
	EXPECT_EQ(ENOMEM, errno);
	char *p = malloc(10);
	ASSERT_NOT_NULL(p);
	errno = 0;
	ASSERT_NULL(realloc(p, st_launder_size(SIZE_MAX - 4096)));
	EXPECT_EQ(ENOMEM, errno);
	/* a failed realloc leaves the old object alone */
	p[9] = 1;
	free(p);
}

/* ---- aligned allocation, 8 B .. 2 MiB ---- */

static void st_check_aligned(void *p, size_t align, size_t size)
{
	ASSERT_NOT_NULL(p);
	if ((uintptr_t)p % align)
		TH_LOG("%p not aligned to %zu (size %zu)", p, align, size);
	ASSERT_EQ((uintptr_t)0, (uintptr_t)p % align);
	ASSERT_TRUE(st_is_dangless(p));
	ASSERT_LE(size, malloc_usable_size(p));
	memset(p, 0x77, size);
	((volatile char *)p)[size - 1] = 1;
}

static const size_t st_sizes[] = {1, 24, 100, 4096, 5000};

TEST(posix_memalign_8B_to_2MiB)
{
	for (size_t align = 8; align <= (2UL << 20); align *= 2) {
		for (size_t i = 0; i < 5; i++) {
			void *p = NULL;
			ASSERT_EQ(0, posix_memalign(&p, align, st_sizes[i]));
			st_check_aligned(p, align, st_sizes[i]);
			free(p);
		}
		void *p = NULL;
		ASSERT_EQ(0, dangless_posix_memalign(&p, align, 3 * align));
		st_check_aligned(p, align, 3 * align);
		dangless_free(p);
	}
	void *p = (void *)1;
	EXPECT_EQ(EINVAL, posix_memalign(&p, 12, 16));
	EXPECT_EQ(EINVAL, posix_memalign(&p, 4, 16)); /* < sizeof(void *) */
}

TEST(aligned_alloc_8B_to_2MiB)
{
	for (size_t align = 8; align <= (2UL << 20); align *= 2) {
		for (size_t i = 0; i < 5; i++) {
			/* C11 wants size a multiple of the alignment */
			size_t size = (st_sizes[i] + align - 1) / align * align;
			void *p = aligned_alloc(align, size);
			st_check_aligned(p, align, size);
			free(p);
		}
		void *p = dangless_aligned_alloc(align, align);
		st_check_aligned(p, align, align);
		free(p);
	}
}

TEST(memalign_8B_to_2MiB)
{
	for (size_t align = 8; align <= (2UL << 20); align *= 2) {
		for (size_t i = 0; i < 5; i++) {
			void *p = memalign(align, st_sizes[i]);
			st_check_aligned(p, align, st_sizes[i]);
			free(p);
		}
		void *p = dangless_memalign(align, 2 * align + 1);
		st_check_aligned(p, align, 2 * align + 1);
		free(p);
	}
}

TEST(valloc_pvalloc_page_aligned)
{
	for (size_t i = 0; i < 5; i++) {
		void *p = valloc(st_sizes[i]);
		st_check_aligned(p, ST_PAGE, st_sizes[i]);
		free(p);
		p = pvalloc(st_sizes[i]);
		size_t rounded = (st_sizes[i] + ST_PAGE - 1) / ST_PAGE * ST_PAGE;
		st_check_aligned(p, ST_PAGE, rounded);
		free(p);
		p = dangless_valloc(st_sizes[i]);
		st_check_aligned(p, ST_PAGE, st_sizes[i]);
		dangless_free(p);
		p = dangless_pvalloc(st_sizes[i]);
		st_check_aligned(p, ST_PAGE, rounded);
		dangless_free(p);
	}
}

TEST(aligned_realloc_keeps_data)
{
	void *p = NULL;
	ASSERT_EQ(0, posix_memalign(&p, 1 << 16, 1000));
	memset(p, 3, 1000);
	char *q = realloc(p, 200000);
	ASSERT_NOT_NULL(q);
	for (int i = 0; i < 1000; i++)
		ASSERT_EQ(3, q[i]);
	free(q);
}

/* ---- the dangless_* names and the statistics ---- */

TEST(dangless_names_work)
{
	ASSERT_EQ(0, dangless_init());
	ASSERT_EQ(0, dangless_init()); /* idempotent */
	char *p = dangless_malloc(10);
	ASSERT_NOT_NULL(p);
	strcpy(p, "123456789");
	p = dangless_realloc(p, 20000);
	ASSERT_NOT_NULL(p);
	ASSERT_STREQ("123456789", p);
	free(p); /* any name frees any allocation */
	int *z = dangless_calloc(100, sizeof(int));
	ASSERT_NOT_NULL(z);
	for (int i = 0; i < 100; i++)
		ASSERT_EQ(0, z[i]);
	z = dangless_reallocarray(z, 200, sizeof(int));
	ASSERT_NOT_NULL(z);
	dangless_free(z);
}

TEST(stats_count_allocations)
{
	struct dangless_stats a = st_stats();
	EXPECT_EQ((uint32_t)DANGLESS_STATS_VERSION, a.version);
	enum { N = 1000 };
	static void *p[N];
	for (int i = 0; i < N; i++)
		p[i] = malloc(48);
	struct dangless_stats b = st_stats();
	for (int i = 0; i < N; i++)
		free(p[i]);
	struct dangless_stats c = st_stats();

	EXPECT_EQ(a.allocs + N, b.allocs);
	EXPECT_EQ(a.live_objects + N, b.live_objects);
	EXPECT_LE(a.live_bytes + N * 48, b.live_bytes);
	EXPECT_LT(a.alias_bytes_used, b.alias_bytes_used);
	EXPECT_LE(b.alias_bytes_used, b.alias_bytes_reserved);
	if (b.pte_writes == 0) {
		/* aliases made by the host kernel: its mappings hold them */
		EXPECT_LT(0ULL, (unsigned long long)b.alias_mappings_live);
		EXPECT_LE(1ULL, (unsigned long long)b.mappings_per_1000_live);
	} else {
		/* the kvm backend's aliases are its own PTEs: no mapping */
		EXPECT_LT(a.pte_writes, b.pte_writes);
		EXPECT_EQ(0ULL, (unsigned long long)b.alias_mappings_live);
	}
	EXPECT_EQ(b.frees + N, c.frees);
	EXPECT_EQ(a.live_objects, c.live_objects);
	EXPECT_EQ(a.live_bytes, c.live_bytes);
	EXPECT_LE(b.revoked_pages + 1, c.revoked_pages);
	EXPECT_LE(b.revokes + 1, c.revokes);
	EXPECT_EQ(0ULL, (unsigned long long)c.quarantined); /* strict: nothing waits */
	EXPECT_EQ(0ULL, (unsigned long long)c.fallback_allocs);
	/* alias space is never handed back */
	EXPECT_LE(b.alias_bytes_used, c.alias_bytes_used);
	EXPECT_EQ(c.allocs - c.frees, c.live_objects);
}

/* Every class, and alignments that leave a request far below its class's
 * size: freeing gives back exactly what allocating counted. */
TEST(stats_live_bytes_exact_in_every_class)
{
	static const struct {
		size_t size, align;
	} cases[] = {
		{1, 16},    {15, 16},   {17, 16},    {255, 16},   {257, 16},
		{273, 16},  {449, 16},  {511, 16},   {513, 16},   {817, 16},
		{1025, 16}, {1361, 16}, {2049, 16},  {4095, 16},  {4097, 16},
		{5121, 16}, {32767, 16}, {1, 64},    {1, 256},    {1, 512},
		{3, 1024},  {100, 2048}, {1, 4096},  {4097, 4096}, {0, 16},
		{0, 256},   {0, 4096},
	};
	enum { N = sizeof(cases) / sizeof(cases[0]) };
	void *p[N];
	size_t asked = 0;
	struct dangless_stats a = st_stats();
	for (int i = 0; i < N; i++) {
		ASSERT_EQ(0, posix_memalign(&p[i], cases[i].align,
					    cases[i].size));
		asked += cases[i].size;
	}
	struct dangless_stats b = st_stats();
	for (int i = 0; i < N; i++) {
		EXPECT_EQ((uintptr_t)0, (uintptr_t)p[i] % cases[i].align);
		EXPECT_LE(cases[i].size, malloc_usable_size(p[i]));
		free(p[i]);
	}
	struct dangless_stats c = st_stats();
	EXPECT_EQ(a.live_bytes + asked, b.live_bytes);
	EXPECT_EQ(a.live_bytes, c.live_bytes);
}

/* A shrink to far below a class's size: the contents and the count stay
 * right, whether the object moves or not. */
TEST(realloc_shrink_far_below_the_class)
{
	size_t sizes[][2] = {{440, 8}, {4000, 1}, {30000, 100}};
	for (int i = 0; i < 3; i++) {
		char *p = malloc(sizes[i][0]);
		ASSERT_NOT_NULL(p);
		for (size_t k = 0; k < sizes[i][0]; k++)
			p[k] = (char)(k * 7 + i);
		struct dangless_stats a = st_stats();
		char *q = realloc(p, sizes[i][1]);
		struct dangless_stats b = st_stats();
		ASSERT_NOT_NULL(q);
		for (size_t k = 0; k < sizes[i][1]; k++)
			ASSERT_EQ((char)(k * 7 + i), q[k]);
		EXPECT_EQ(a.live_bytes - sizes[i][0] + sizes[i][1],
			  b.live_bytes);
		free(q);
	}
}

TEST(stats_big_object_canonical)
{
	struct dangless_stats a = st_stats();
	char *p = malloc(64 << 20);
	ASSERT_NOT_NULL(p);
	p[0] = 1;
	p[(64 << 20) - 1] = 1;
	struct dangless_stats b = st_stats();
	free(p);
	struct dangless_stats c = st_stats();
	EXPECT_LE(a.canonical_bytes + (64 << 20), b.canonical_bytes);
	EXPECT_LE(a.alias_bytes_used + (64 << 20), b.alias_bytes_used);
	/* a big object's memory goes back to the OS when it is freed */
	EXPECT_LE(b.canonical_bytes_released + (60 << 20),
		  c.canonical_bytes_released);
	EXPECT_LE(b.revoked_pages + (64 << 20) / ST_PAGE, c.revoked_pages);
}

TEST(stats_memory_held_counts_each_page_once)
{
	/* 32 MiB written through aliases: every page is mapped twice (its
	 * alias and the canonical view), but held once.  Freed, it goes back
	 * but for the small warm reserve a small live heap is allowed. */
	enum { N = 2048, SIZE = 16 << 10 };
	static char *p[N];
	struct dangless_stats a = st_stats();
	for (int i = 0; i < N; i++) {
		p[i] = malloc(SIZE);
		ASSERT_NOT_NULL(p[i]);
		memset(p[i], 0x5a, SIZE);
	}
	struct dangless_stats b = st_stats();
	for (int i = 0; i < N; i++)
		free(p[i]);
	struct dangless_stats c = st_stats();
	TH_LOG("held %llu -> %llu -> %llu KiB, page tables %llu KiB",
	       (unsigned long long)a.canonical_bytes_resident >> 10,
	       (unsigned long long)b.canonical_bytes_resident >> 10,
	       (unsigned long long)c.canonical_bytes_resident >> 10,
	       (unsigned long long)b.page_table_bytes >> 10);
	/* warm runs left by earlier tests may take part of it */
	EXPECT_LE(a.canonical_bytes_resident + (24 << 20),
		  b.canonical_bytes_resident);
	EXPECT_GE(a.canonical_bytes_resident + (40 << 20),
		  b.canonical_bytes_resident);
	EXPECT_LT(0ULL, (unsigned long long)b.page_table_bytes);
	EXPECT_LE(c.canonical_bytes_resident + (28 << 20),
		  b.canonical_bytes_resident);
}

static void st_print_stats_body(void *arg)
{
	(void)arg;
	free(malloc(10));
	dangless_print_stats();
}

TEST(print_stats_names_every_counter)
{
	struct th_child res;
	th_run(st_print_stats_body, NULL, 30, &res);
	ASSERT_EXITED(0, res);
#define ST_EXPECT_NAMED(name, what) EXPECT_CONTAINS(#name, res.err);
	DANGLESS_STAT_FIELDS(ST_EXPECT_NAMED)
#undef ST_EXPECT_NAMED
	th_child_free(&res);
}

static void st_options_help_body(void *arg)
{
	(void)arg;
	dangless_print_options_help(1);
}

TEST(options_help_lists_every_option)
{
	struct th_child res;
	th_run(st_options_help_body, NULL, 30, &res);
	ASSERT_EXITED(0, res);
	static const char *const names[] = {"backend", "fallback", "stacks",
					    "stats", "verbosity", "revoke"};
	for (int i = 0; i < 6; i++)
		EXPECT_CONTAINS(names[i], res.out);
	th_child_free(&res);
}

static void *st_thread_alloc(void *arg)
{
	(void)arg;
	char *p = malloc(1000);
	if (p)
		memset(p, 1, 1000);
	return p;
}

TEST(free_from_other_thread)
{
	pthread_t t;
	void *p = NULL;
	ASSERT_EQ(0, pthread_create(&t, NULL, st_thread_alloc, NULL));
	ASSERT_EQ(0, pthread_join(t, &p));
	ASSERT_NOT_NULL(p);
	ASSERT_TRUE(st_is_dangless(p));
	ASSERT_EQ(1, ((char *)p)[999]);
	free(p);
}

TEST_HARNESS_MAIN
