/* SPDX-License-Identifier: MIT */
/*
 * Helpers shared by the Dangless suites (the .c files in this directory):
 * where the built artefacts are, hiding pointers from the compiler, and
 * reading the first line of a Dangless report back into numbers, so that a
 * test compares addresses, offsets and sizes rather than the exact spelling
 * of a hex number.
 *
 * Paths come from -D at build time (selftests.mk) and can be overridden by the
 * environment variable of the same name.
 */
#ifndef DANGLESS_ST_COMMON_H
#define DANGLESS_ST_COMMON_H

#include "../harness.h"

#include <dangless/dangless.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef ST_DANGLESS_SO
#define ST_DANGLESS_SO "libdangless.so"
#endif
#ifndef ST_DANGLESS_BIN
#define ST_DANGLESS_BIN "dangless"
#endif
#ifndef ST_SELFTESTS_DIR
#define ST_SELFTESTS_DIR "."
#endif
#ifndef ST_TESTAPPS_DIR
#define ST_TESTAPPS_DIR "."
#endif
#ifndef ST_SOURCE_DIR
#define ST_SOURCE_DIR "."
#endif

#define ST_PAGE 4096UL

/*
 * The budget of one child (th_run, th_exec) that runs a scenario or a small
 * program: generous on a loaded 2-core machine.  A test that runs n such
 * children one after the other gets their sum and the harness's room.
 */
#define ST_CHILD_S 60
#define ST_CHILDREN_BUDGET(n) ((n) * ST_CHILD_S + TH_PARENT_ROOM)

static inline const char *st_path(const char *env_name, const char *built_in)
{
	const char *v = getenv(env_name);
	return v && *v ? v : built_in;
}

#define st_dangless_so() st_path("ST_DANGLESS_SO", ST_DANGLESS_SO)
#define st_dangless_bin() st_path("ST_DANGLESS_BIN", ST_DANGLESS_BIN)
#define st_selftests_dir() st_path("ST_SELFTESTS_DIR", ST_SELFTESTS_DIR)
#define st_testapps_dir() st_path("ST_TESTAPPS_DIR", ST_TESTAPPS_DIR)
#define st_source_dir() st_path("ST_SOURCE_DIR", ST_SOURCE_DIR)

/* buf = dir + "/" + name. */
static inline const char *st_join(char *buf, size_t n, const char *dir,
				  const char *name)
{
	snprintf(buf, n, "%s/%s", dir, name);
	return buf;
}

/*
 * Hides a pointer (or size) from the optimiser, so that accesses after free()
 * are neither diagnosed at compile time (-Wuse-after-free) nor dropped.
 */
static inline void *st_launder(void *p)
{
	__asm__ volatile("" : "+r"(p));
	return p;
}

static inline size_t st_launder_size(size_t n)
{
	__asm__ volatile("" : "+r"(n));
	return n;
}

static inline unsigned char st_read(const void *p)
{
	return *(const volatile unsigned char *)st_launder((void *)p);
}

static inline void st_write(void *p, unsigned char v)
{
	*(volatile unsigned char *)st_launder(p) = v;
}

/* The first line of a use-after-free report, parsed. */
struct st_uaf_report {
	char kind[8]; /* READ or WRITE */
	uintptr_t addr;
	size_t off;
	size_t size;
	size_t access; /* bytes accessed, 0 when not said */
};

/*
 * Finds "dangless: use-after-free KIND [of size N] at 0xADDR: OFF bytes into a
 * SIZE-byte allocation (freed)" in text.  Returns true when the line is there
 * with every field in that shape.
 */
static inline bool st_parse_uaf(const char *text, struct st_uaf_report *r)
{
	const char *line = strstr(text, "dangless: use-after-free ");
	if (!line)
		return false;
	unsigned long long addr = 0, off = 0, size = 0, access = 0;
	char tail[16] = "";
	int n = sscanf(line, "dangless: use-after-free %7[A-Z] ", r->kind);
	/* "of size N" when the faulting instruction was decoded */
	const char *at = strstr(line, " at 0x");
	if (n != 1 || !at || at > strchr(line, '\n'))
		return false;
	sscanf(line + strlen("dangless: use-after-free ") + strlen(r->kind),
	       " of size %llu", &access);
	r->access = (size_t)access;
	n = sscanf(at, " at 0x%llx: %llu bytes into a %llu-byte allocation "
		       "%15[^\n]",
		   &addr, &off, &size, tail);
	if (n != 4 || strcmp(tail, "(freed)") != 0)
		return false;
	r->addr = (uintptr_t)addr;
	r->off = (size_t)off;
	r->size = (size_t)size;
	return true;
}

/*
 * Asserts that res died of SIGSEGV with a use-after-free report of the given
 * kind at addr, off bytes into a size-byte allocation.
 */
#define ASSERT_UAF_REPORT(res, want_kind, want_addr, want_off, want_size)      \
	do {                                                                   \
		struct st_uaf_report st_r;                                     \
		ASSERT_KILLED_BY(SIGSEGV, res);                                \
		if (!st_parse_uaf((res).err, &st_r)) {                         \
			TH_LOG("no well-formed use-after-free report in "      \
			       "stderr:");                                     \
			th_print_quoted((res).err);                            \
			th_fail(true);                                         \
		}                                                              \
		EXPECT_STREQ(want_kind, st_r.kind);                            \
		EXPECT_EQ((uintptr_t)(want_addr), st_r.addr);                  \
		EXPECT_EQ((size_t)(want_off), st_r.off);                       \
		EXPECT_EQ((size_t)(want_size), st_r.size);                     \
		if (th_failed_expectations)                                    \
			th_print_quoted((res).err);                            \
	} while (0)

/* Reads "<prefix>0x<hex>" out of text; returns 0 when absent. */
static inline uintptr_t st_hex_after(const char *text, const char *prefix)
{
	const char *at = strstr(text, prefix);
	unsigned long long v = 0;
	if (!at || sscanf(at + strlen(prefix), "0x%llx", &v) != 1)
		return 0;
	return (uintptr_t)v;
}

static inline int st_cmp_uintptr(const void *a, const void *b)
{
	uintptr_t x = *(const uintptr_t *)a, y = *(const uintptr_t *)b;
	return x < y ? -1 : x > y;
}

/* Number of adjacent equal values after sorting v[0..n). */
static inline size_t st_count_duplicates(uintptr_t *v, size_t n)
{
	size_t dups = 0;
	qsort(v, n, sizeof(*v), st_cmp_uintptr);
	for (size_t i = 1; i < n; i++)
		dups += v[i] == v[i - 1];
	return dups;
}

static inline struct dangless_stats st_stats(void)
{
	struct dangless_stats s;
	memset(&s, 0, sizeof(s));
	s.version = DANGLESS_STATS_VERSION;
	dangless_stats(&s);
	return s;
}

/* This run's DANGLESS_OPTIONS name backend `name` ("kvm", "dune"). */
static inline bool st_backend_is(const char *name)
{
	const char *o = getenv("DANGLESS_OPTIONS");
	char want[32];
	snprintf(want, sizeof(want), "backend=%s", name);
	return o && strstr(o, want);
}

/* The kvm backend's TLB shootdowns go by IPI in this run, not by signal:
 * DUNE_IPI says so ("0": no), or unset, libdune's default does: on over
 * dune.ko (backend=dune), off over /dev/kvm. */
static inline bool st_shootdowns_by_ipi(void)
{
	const char *ipi = getenv("DUNE_IPI");
	if (ipi)
		return strcmp(ipi, "0") != 0;
	return st_backend_is("dune");
}

/* The whole of a small file, NUL-terminated, or NULL. */
static inline char *st_slurp(const char *path)
{
	FILE *f = fopen(path, "r");
	if (!f)
		return NULL;
	size_t cap = 4096, len = 0;
	char *buf = malloc(cap);
	for (;;) {
		if (len + 4096 + 1 > cap)
			buf = realloc(buf, cap *= 2);
		size_t got = fread(buf + len, 1, 4096, f);
		len += got;
		if (got == 0)
			break;
	}
	fclose(f);
	buf[len] = 0;
	return buf;
}

/* The path of a program built next to the suites (st-scenario, ...). */
static inline const char *st_selftest_prog(const char *name)
{
	static char buf[8][1024];
	static int next;
	char *b = buf[next++ % 8];
	return st_join(b, sizeof(buf[0]), st_selftests_dir(), name);
}

static inline const char *st_testapp(const char *name)
{
	static char buf[8][1024];
	static int next;
	char *b = buf[next++ % 8];
	return st_join(b, sizeof(buf[0]), st_testapps_dir(), name);
}

/* "LD_PRELOAD=<libdangless.so>", for th_exec's env. */
static inline const char *st_preload_env(void)
{
	static char buf[1100];
	snprintf(buf, sizeof(buf), "LD_PRELOAD=%s", st_dangless_so());
	return buf;
}

/* Occurrences of needle in haystack. */
static inline int st_count(const char *haystack, const char *needle)
{
	int n = 0;
	for (const char *at = haystack; (at = strstr(at, needle)); at++)
		n++;
	return n;
}

#endif
