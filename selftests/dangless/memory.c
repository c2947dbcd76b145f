/* SPDX-License-Identifier: MIT */
/*
 * The footprint split of dangless_stats() (issue 23): the kernel's figure
 * for the process (Pss + page tables) and the parts Dangless names in it.
 * The parts are measured, each on its own (residency from the kernel, by
 * what the memory holds); only the program's own part is what is left.  So
 * a part that misses memory shows as a program part that grows with the
 * heap: every test here checks that it does not, and that the named parts
 * moved by what the test did.  Runs under the backend DANGLESS_OPTIONS
 * names (make test: host; the QEMU rig: kvm).
 */
#include "st-common.h"

#include <elf.h>
#include <sys/mman.h>

#define ST_MIB (1024.0 * 1024.0)

static void st_mem_log(const char *when, const struct dangless_stats *s)
{
	TH_LOG("%s: footprint %.1f MiB = live %.1f + slack %.1f + free %.1f + "
	       "warm %.1f + quarantine %.1f + stale %.1f + page tables %.1f + "
	       "metadata %.1f + program %.1f",
	       when, s->footprint_bytes / ST_MIB, s->mem_live_bytes / ST_MIB,
	       s->mem_slack_bytes / ST_MIB, s->mem_free_bytes / ST_MIB,
	       s->mem_warm_bytes / ST_MIB, s->mem_quarantine_bytes / ST_MIB,
	       s->mem_stale_bytes / ST_MIB, s->mem_page_table_bytes / ST_MIB,
	       s->mem_metadata_bytes / ST_MIB, s->mem_program_bytes / ST_MIB);
}

static uint64_t st_named(const struct dangless_stats *s)
{
	return s->mem_live_bytes + s->mem_slack_bytes + s->mem_free_bytes +
	       s->mem_warm_bytes + s->mem_quarantine_bytes + s->mem_stale_bytes +
	       s->mem_page_table_bytes + s->mem_metadata_bytes;
}

/* The footprint less the named parts, unclamped: the program's part as
 * stats gives it (clamped at 0) unless pages shared with the process that
 * forked this one count half in the footprint (Pss) and whole in a part,
 * as the harness's forked tests have Dangless's start-up memory. */
static int64_t st_unnamed(const struct dangless_stats *s)
{
	return (int64_t)s->footprint_bytes - (int64_t)st_named(s);
}

/* The program's part moved by at most 3% of what the footprint moved, and
 * 1 MiB: the split saw where the heap's memory went. */
static void st_expect_program_steady(const struct dangless_stats *a,
				     const struct dangless_stats *b)
{
	int64_t dp = st_unnamed(b) - st_unnamed(a);
	int64_t df = (int64_t)b->footprint_bytes - (int64_t)a->footprint_bytes;
	int64_t room = (df < 0 ? -df : df) * 3 / 100 + (1 << 20);
	TH_LOG("program part moved %+.2f MiB while the footprint moved %+.2f MiB",
	       dp / ST_MIB, df / ST_MIB);
	EXPECT_LE(dp < 0 ? -dp : dp, room);
}

/* Sizes over the small classes and into large objects, every byte
 * written: 24 B .. 48 KiB. */
static size_t st_mem_size(unsigned i)
{
	static const size_t sizes[] = {24, 40, 100, 250, 700, 1500, 3000,
				       5000, 12000, 40000, 49152};
	return sizes[i % (sizeof(sizes) / sizeof(sizes[0]))];
}

enum { ST_MEM_N = 20000 };

static char **st_mem_table(void)
{
	/* Outside the heap, touched before the first reading. */
	char **v = mmap(NULL, ST_MEM_N * sizeof(*v), PROT_READ | PROT_WRITE,
			MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	return v == MAP_FAILED ? NULL : v;
}

TEST(split_names_a_live_heap_it_was_given)
{
	char **v = st_mem_table();
	ASSERT_NOT_NULL(v);
	struct dangless_stats a = st_stats();
	ASSERT_GT(a.footprint_bytes, (uint64_t)0);
	st_mem_log("before", &a);
	uint64_t asked = 0;
	for (unsigned i = 0; i < ST_MEM_N; i++) {
		size_t n = st_mem_size(i);
		v[i] = malloc(n);
		ASSERT_NOT_NULL(v[i]);
		memset(v[i], (int)i, n);
		asked += n;
	}
	struct dangless_stats b = st_stats();
	st_mem_log("20,000 live", &b);
	TH_LOG("asked for %.1f MiB", asked / ST_MIB);
	/* Every requested byte was written, so every one is resident and
	 * counted as live, none elsewhere. */
	EXPECT_EQ(asked, b.mem_live_bytes - a.mem_live_bytes);
	EXPECT_LE(b.mem_slack_bytes - a.mem_slack_bytes, asked / 2);
	st_expect_program_steady(&a, &b);
	for (unsigned i = 0; i < ST_MEM_N; i++)
		free(v[i]);
}

TEST(freed_memory_leaves_the_live_part)
{
	char **v = st_mem_table();
	ASSERT_NOT_NULL(v);
	struct dangless_stats a = st_stats();
	for (unsigned i = 0; i < ST_MEM_N; i++) {
		v[i] = malloc(st_mem_size(i));
		ASSERT_NOT_NULL(v[i]);
		memset(v[i], 1, st_mem_size(i));
	}
	struct dangless_stats b = st_stats();
	uint64_t dropped = 0;
	for (unsigned i = 0; i < ST_MEM_N; i += 2) {
		dropped += st_mem_size(i);
		free(v[i]);
	}
	struct dangless_stats c = st_stats();
	st_mem_log("all live", &b);
	st_mem_log("every other one freed", &c);
	EXPECT_EQ(dropped, b.mem_live_bytes - c.mem_live_bytes);
	/* What was freed is free, warm, in quarantine, or gone. */
	uint64_t held_b = b.mem_free_bytes + b.mem_warm_bytes +
			  b.mem_quarantine_bytes + b.mem_stale_bytes;
	uint64_t held_c = c.mem_free_bytes + c.mem_warm_bytes +
			  c.mem_quarantine_bytes + c.mem_stale_bytes;
	EXPECT_GT(held_c, held_b);
	st_expect_program_steady(&a, &c);
	for (unsigned i = 1; i < ST_MEM_N; i += 2)
		free(v[i]);
}

/*
 * Runs emptied past the warm budget go back to the backend; what it still
 * holds of them (kvm keeps freed ranges stale, to give them back in
 * bursts) is its part, not free slots of the class.
 */
TEST(runs_given_back_are_not_free_slots)
{
	enum { N = 40000, SIZE = 100 }; /* 4.5 MB of 112-byte slots */
	char **v = mmap(NULL, N * sizeof(*v), PROT_READ | PROT_WRITE,
			MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	ASSERT_NE(MAP_FAILED, v);
	for (int i = 0; i < N; i++) {
		v[i] = malloc(SIZE);
		ASSERT_NOT_NULL(v[i]);
		memset(v[i], 1, SIZE);
	}
	for (int i = 0; i < N; i++)
		free(v[i]);
	struct dangless_stats s = st_stats();
	st_mem_log("40,000 objects of 100 B made and freed", &s);
	/* the run in use, and the slots this thread caches */
	EXPECT_LE(s.mem_free_bytes, (uint64_t)512 << 10);
	/* the budget's floor; the rest went back (host) or is stale (kvm) */
	EXPECT_LE(s.mem_warm_bytes, (uint64_t)512 << 10);
	munmap(v, N * sizeof(*v));
}

TEST(the_programs_own_memory_stays_the_programs)
{
	/* 64 MiB the program maps itself: its part, not Dangless's. */
	struct dangless_stats a = st_stats();
	size_t len = (size_t)64 << 20;
	char *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ASSERT_NE(MAP_FAILED, (void *)p);
	memset(p, 7, len);
	struct dangless_stats b = st_stats();
	st_mem_log("with 64 MiB of the program's", &b);
	int64_t dp = st_unnamed(&b) - st_unnamed(&a);
	EXPECT_GE(dp, (int64_t)len - (1 << 20));
	EXPECT_LE(dp, (int64_t)len + (1 << 20));
	munmap(p, len);
}

/* The size of the .bss of the ELF64 file at path, or -1. */
static long long st_bss_size(const char *path)
{
	FILE *f = fopen(path, "rb");
	long long size = -1;
	Elf64_Ehdr eh;
	if (!f || fread(&eh, sizeof(eh), 1, f) != 1 ||
	    memcmp(eh.e_ident, ELFMAG, SELFMAG) || eh.e_ident[EI_CLASS] != ELFCLASS64)
		goto out;
	Elf64_Shdr names;
	if (fseek(f, (long)(eh.e_shoff + (uint64_t)eh.e_shstrndx * eh.e_shentsize), SEEK_SET) ||
	    fread(&names, sizeof(names), 1, f) != 1)
		goto out;
	for (unsigned i = 0; i < eh.e_shnum && size < 0; i++) {
		Elf64_Shdr sh;
		char name[8] = "";
		if (fseek(f, (long)(eh.e_shoff + (uint64_t)i * eh.e_shentsize), SEEK_SET) ||
		    fread(&sh, sizeof(sh), 1, f) != 1 ||
		    fseek(f, (long)(names.sh_offset + sh.sh_name), SEEK_SET) ||
		    !fgets(name, sizeof(name), f))
			break;
		if (sh.sh_type == SHT_NOBITS && !strcmp(name, ".bss"))
			size = (long long)sh.sh_size;
	}
out:
	if (f)
		fclose(f);
	return size;
}

/*
 * The library's zeroed statics are one anonymous mapping.  Where the
 * kernel's THP setting is "always" (Debian's default), a mapping that holds
 * an aligned 2 MiB gets a huge page at its first touch there: 2 MiB in
 * every process for statics mostly never written.  Under 2 MiB less a page
 * it cannot hold one, wherever the loader puts it.
 */
TEST(the_librarys_statics_cannot_take_a_huge_page)
{
	long long bss = st_bss_size(st_dangless_so());
	ASSERT_GE(bss, 0);
	TH_LOG("%s: .bss %lld KiB", st_dangless_so(), bss >> 10);
	EXPECT_LT(bss, (2LL << 20) - 4096);
}

/* What st-scenario class-memory N SIZE printed: heap held, live bytes. */
static void st_class_memory(const char *n, const char *size,
			    unsigned long long *held,
			    unsigned long long *live)
{
	const char *const argv[] = {st_selftest_prog("st-scenario"),
				    "class-memory", n, size, NULL};
	struct th_child res;
	th_exec(argv, NULL, NULL, ST_CHILD_S, &res);
	ASSERT_EXITED(0, res);
	ASSERT_EQ(2, sscanf(res.out, "held %llu live %llu", held, live));
	TH_LOG("%s objects of %s B: %llu KiB held for %llu KiB live", n, size,
	       *held >> 10, *live >> 10);
	th_child_free(&res);
}

/*
 * A class a program makes a few dozen objects of holds a few pages, not a
 * whole run: one row of a run lies on all of its 32 pages, so 64 objects
 * of 100 B made every page of a run resident (128 KiB for 6.4 KiB) before
 * runs opened their columns a quarter at a time.
 */
TEST(a_class_of_a_few_objects_holds_a_few_pages)
{
	unsigned long long held, live;
	st_class_memory("64", "100", &held, &live);
	EXPECT_EQ(64ULL * 100, live);
	EXPECT_LE(held, 12ULL * 4096);
}

/* ... and one the program fills gets whole runs, packed as before. */
TEST(a_class_in_heavy_use_is_packed_in_whole_runs)
{
	unsigned long long held, live;
	st_class_memory("20000", "100", &held, &live);
	EXPECT_EQ(20000ULL * 100, live);
	/* 112-byte slots; at most a third more for the run a class grows
	 * into, and two runs more for those being filled. */
	EXPECT_LE(held, 20000ULL * 112 * 4 / 3 + 2 * 32 * 4096);
}

/* A 4,500-byte object takes 5 KiB (columns of 5 pages, 4 rows), not the
 * 8 KiB of two whole pages; at most a third more for growth, as above. */
TEST(an_object_a_little_over_a_page_takes_little_over_its_size)
{
	unsigned long long held, live;
	st_class_memory("100", "4500", &held, &live);
	EXPECT_EQ(100ULL * 4500, live);
	EXPECT_LE(held, 100ULL * 5120 * 4 / 3);
}

/*
 * Freed large buffers kept warm are bounded by the live heap, not by a
 * fixed size: a small program keeps at most 2 MiB of them (it kept 4 MiB,
 * more than the whole heap of many programs), a program with a big heap a
 * quarter of it.
 */
enum { ST_BUFFERS = 6, ST_BUFFER = 768 << 10 };

/* ST_BUFFERS buffers live at once, written, then all freed. */
static void st_buffers_at_once(void)
{
	char *p[ST_BUFFERS];
	for (int i = 0; i < ST_BUFFERS; i++) {
		p[i] = malloc(ST_BUFFER);
		ASSERT_NOT_NULL(p[i]);
		memset(p[i], 0x5a, ST_BUFFER);
	}
	for (int i = 0; i < ST_BUFFERS; i++)
		free(p[i]);
}

TEST(a_small_heap_keeps_few_freed_large_buffers_warm)
{
	st_buffers_at_once();
	struct dangless_stats s = st_stats();
	st_mem_log("after 6 buffers of 768 KiB", &s);
	/* extents up to the 2 MiB floor (two of these), and run.c's warm
	 * runs (their 512 KiB floor) */
	EXPECT_LE(s.mem_warm_bytes, (uint64_t)5 << 19);
}

TEST(a_big_heap_keeps_its_freed_large_buffers_warm)
{
	enum { N = 10000, SIZE = 4000 }; /* 40 MB live: a quarter is 10 */
	char **v = st_mem_table();
	ASSERT_NOT_NULL(v);
	for (int i = 0; i < N; i++) {
		v[i] = malloc(SIZE);
		ASSERT_NOT_NULL(v[i]);
		memset(v[i], i, SIZE);
	}
	st_buffers_at_once(); /* all six kept */
	struct dangless_stats before = st_stats();
	st_buffers_at_once(); /* served from them, kept again */
	struct dangless_stats after = st_stats();
	st_mem_log("with 40 MB live, after 12 buffers of 768 KiB", &after);
	EXPECT_GE(after.mem_warm_bytes, (uint64_t)ST_BUFFERS * ST_BUFFER);
	EXPECT_EQ(before.canonical_bytes_released,
		  after.canonical_bytes_released);
	for (int i = 0; i < N; i++)
		free(v[i]);
	munmap(v, ST_MEM_N * sizeof(*v));
}

/*
 * An object past a page that the program writes a byte of holds about the
 * page written, as under glibc: chunks of such classes are not populated
 * (a row's slot covers part of its column; populating made every page of
 * every column resident).
 */
TEST(an_object_written_in_part_holds_the_pages_written)
{
	enum { N = 2000, SIZE = 20000 };
	char **v = st_mem_table();
	ASSERT_NOT_NULL(v);
	struct dangless_stats a = st_stats();
	for (int i = 0; i < N; i++) {
		v[i] = malloc(SIZE);
		ASSERT_NOT_NULL(v[i]);
		v[i][0] = 1;
	}
	struct dangless_stats b = st_stats();
	st_mem_log("2,000 objects of 20,000 B, a byte written each", &b);
	/* a page each, and room for metadata and page tables; populated,
	 * every one of their 5 pages (40 MB) */
	EXPECT_LE(b.footprint_bytes - a.footprint_bytes, (uint64_t)N * 3 * 4096);
	for (int i = 0; i < N; i++)
		free(v[i]);
	munmap(v, ST_MEM_N * sizeof(*v));
}

static void st_print_stats_body(void *arg)
{
	(void)arg;
	char *p = malloc(3000);
	memset(p, 1, 3000);
	dangless_print_stats();
	free(p);
}

TEST(print_stats_gives_the_footprint_and_the_live_part)
{
	struct th_child res;
	th_run(st_print_stats_body, NULL, ST_CHILD_S, &res);
	ASSERT_EXITED(0, res);
	/* the kernel's figure is there (basics checks every name) */
	EXPECT_CONTAINS("footprint_bytes = ", res.err);
	EXPECT_EQ(NULL, strstr(res.err, "footprint_bytes = 0 ("));
	/* and the 3000 bytes live now are in the live part */
	const char *live = strstr(res.err, "mem_live_bytes = ");
	ASSERT_NOT_NULL(live);
	EXPECT_GE(strtoull(live + strlen("mem_live_bytes = "), NULL, 10), 3000ULL);
	th_child_free(&res);
}

TEST_HARNESS_MAIN
