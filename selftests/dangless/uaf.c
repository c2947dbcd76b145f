// SPDX-License-Identifier: MIT
/*
 * Use-after-free is caught, and said so: every dangling access runs in a
 * forked child (th_run) which must die of SIGSEGV with a report naming the
 * address, the offset and the size of the freed allocation.  The child prints
 * "target=<address>" before the access so that the report can be checked
 * against the address actually touched; "survived" means it was not caught.
 *
 * Then the frees that are wrong in themselves: double, invalid, interior,
 * realloc of a freed pointer - each must abort with its own message.
 */
#include "st-common.h"

#include <malloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/mman.h>

struct st_uaf {
	size_t size;  /* allocation size */
	size_t off;   /* where the dangling access lands */
	bool write;
	size_t align; /* posix_memalign's, or 0: malloc */
};

static void st_touch(char *p, size_t size, size_t off)
{
	/* touch only the ends and the target: the object may be huge */
	p[0] = 'a';
	p[size - 1] = 'z';
	p[off] = 'o';
}

static void st_dangle(char *p, size_t off, bool write)
{
	if (write)
		st_write(p + off, 0x42);
	else
		(void)st_read(p + off);
	printf("survived\n");
}

static void st_uaf_body(void *arg)
{
	struct st_uaf *u = arg;
	char *p = NULL;
	if (u->align ? posix_memalign((void **)&p, u->align, u->size) != 0
		     : !(p = malloc(u->size))) {
		printf("malloc failed\n");
		return;
	}
	st_touch(p, u->size, u->off);
	printf("target=%p\n", (void *)(p + u->off));
	free(p);
	st_dangle(p, u->off, u->write);
}

static void st_check_uaf_aligned(size_t size, size_t align, size_t off,
				 bool write)
{
	struct st_uaf u = {size, off, write, align};
	struct th_child res;
	th_run(st_uaf_body, &u, ST_CHILD_S, &res);
	EXPECT_FALSE(strstr(res.out, "survived") != NULL);
	uintptr_t target = st_hex_after(res.out, "target=");
	ASSERT_NE((uintptr_t)0, target);
	ASSERT_UAF_REPORT(res, write ? "WRITE" : "READ", target, off, size);
	th_child_free(&res);
}

static void st_check_uaf(size_t size, size_t off, bool write)
{
	st_check_uaf_aligned(size, 0, off, write);
}

TEST_TIMEOUT(uaf_read_small, ST_CHILDREN_BUDGET(3))
{
	st_check_uaf(24, 0, false);
	st_check_uaf(24, 23, false);
	st_check_uaf(1, 0, false);
}

TEST_TIMEOUT(uaf_write_small, ST_CHILDREN_BUDGET(2))
{
	st_check_uaf(24, 0, true);
	st_check_uaf(100, 57, true);
}

TEST_TIMEOUT(uaf_read_write_page_sized, ST_CHILDREN_BUDGET(2))
{
	st_check_uaf(ST_PAGE, 0, false);
	st_check_uaf(ST_PAGE, ST_PAGE - 1, true);
}

TEST_TIMEOUT(uaf_read_write_multi_page, ST_CHILDREN_BUDGET(3))
{
	size_t size = 5 * ST_PAGE + 100;
	st_check_uaf(size, 0, false);
	st_check_uaf(size, 3 * ST_PAGE + 7, false);
	st_check_uaf(size, size - 1, true);
}

TEST_TIMEOUT(uaf_read_write_256MiB, ST_CHILDREN_BUDGET(3))
{
	size_t size = 256UL << 20;
	st_check_uaf(size, 0, true);
	st_check_uaf(size, 200UL << 20, false);
	st_check_uaf(size + 12345, size + 12000, true);
}

static void st_busy_then_dangle(void *arg)
{
	(void)arg;
	char *p = malloc(40);
	strcpy(p, "secret");
	printf("target=%p\n", (void *)(p + 3));
	free(p);
	/* a busy heap afterwards: the same size class, over and over */
	for (int i = 0; i < 20000; i++) {
		char *q = malloc(40);
		strcpy(q, "reused?");
		if (i % 2)
			free(q);
	}
	st_dangle(p, 3, false);
}

static void st_aligned_dangle(void *arg)
{
	size_t align = *(size_t *)arg;
	char *p = aligned_alloc(align, 100 + align - 100 % align);
	memset(p, 1, 100);
	printf("target=%p\n", (void *)(p + 99));
	free(p);
	st_dangle(p, 99, true);
}

TEST_TIMEOUT(uaf_aligned_allocation, ST_CHILDREN_BUDGET(4))
{
	size_t aligns[] = {64, 4096, 1 << 16, 2 << 20};
	for (int i = 0; i < 4; i++) {
		struct th_child res;
		th_run(st_aligned_dangle, &aligns[i], ST_CHILD_S, &res);
		uintptr_t target = st_hex_after(res.out, "target=");
		ASSERT_NE((uintptr_t)0, target);
		ASSERT_KILLED_BY(SIGSEGV, res);
		struct st_uaf_report r;
		ASSERT_TRUE(st_parse_uaf(res.err, &r));
		EXPECT_STREQ("WRITE", r.kind);
		EXPECT_EQ(target, r.addr);
		EXPECT_EQ((size_t)99, r.off);
		EXPECT_EQ(100 + aligns[i] - 100 % aligns[i], r.size);
		th_child_free(&res);
	}
}

/* Requests far below their class's size (an alignment, or a gap between
 * classes) are reported with the size asked for, not the class's. */
TEST_TIMEOUT(uaf_report_names_the_size_asked_for, ST_CHILDREN_BUDGET(3))
{
	st_check_uaf_aligned(3, 1024, 0, false);
	st_check_uaf_aligned(2049, 16, 0, false);
	st_check_uaf_aligned(5, 4096, 0, false);
}

static void st_realloc_zero_dangle(void *arg)
{
	(void)arg;
	char *p = malloc(80);
	memset(p, 1, 80);
	printf("target=%p\n", (void *)(p + 40));
	char *q = realloc(p, 0); /* frees p (and may return a new pointer) */
	printf("q=%p\n", (void *)q);
	st_dangle(p, 40, false);
}

TEST(uaf_after_realloc_to_zero)
{
	struct th_child res;
	th_run(st_realloc_zero_dangle, NULL, ST_CHILD_S, &res);
	uintptr_t target = st_hex_after(res.out, "target=");
	ASSERT_NE((uintptr_t)0, target);
	ASSERT_UAF_REPORT(res, "READ", target, 40, 80);
	th_child_free(&res);
}

TEST(uaf_stays_caught_after_many_allocations)
{
	struct th_child res;
	th_run(st_busy_then_dangle, NULL, ST_CHILD_S, &res);
	EXPECT_FALSE(strstr(res.out, "survived") != NULL);
	uintptr_t target = st_hex_after(res.out, "target=");
	ASSERT_NE((uintptr_t)0, target);
	ASSERT_UAF_REPORT(res, "READ", target, 3, 40);
	th_child_free(&res);
}

static void st_calloc_dangle(void *arg)
{
	(void)arg;
	int *v = calloc(50, sizeof(int));
	printf("target=%p\n", (void *)(v + 10));
	free(v);
	st_dangle((char *)v, 10 * sizeof(int), true);
}

TEST(uaf_write_calloc)
{
	struct th_child res;
	th_run(st_calloc_dangle, NULL, ST_CHILD_S, &res);
	uintptr_t target = st_hex_after(res.out, "target=");
	ASSERT_NE((uintptr_t)0, target);
	ASSERT_UAF_REPORT(res, "WRITE", target, 40, 200);
	th_child_free(&res);
}

/* ---- realloc ---- */

static void st_realloc_move_dangle(void *arg)
{
	size_t old_size = *(size_t *)arg;
	char *p = malloc(old_size);
	memset(p, 'p', old_size);
	char *blocker = malloc(100); /* the alias pages after p are taken */
	char *q = realloc(p, 64UL << 20);
	if (q == p) {
		printf("not moved\n");
		return;
	}
	if (q[old_size - 1] != 'p')
		printf("contents lost\n");
	size_t off = old_size > ST_PAGE ? old_size - 5 : old_size / 2;
	printf("target=%p\n", (void *)(p + off));
	printf("off=0x%zx\n", off);
	st_dangle(p, off, false);
	free(blocker);
}

TEST_TIMEOUT(uaf_after_realloc_move, ST_CHILDREN_BUDGET(2))
{
	size_t sizes[] = {100, 3 * ST_PAGE + 50};
	for (int i = 0; i < 2; i++) {
		struct th_child res;
		th_run(st_realloc_move_dangle, &sizes[i], ST_CHILD_S, &res);
		EXPECT_FALSE(strstr(res.out, "not moved") != NULL);
		EXPECT_FALSE(strstr(res.out, "contents lost") != NULL);
		uintptr_t target = st_hex_after(res.out, "target=");
		size_t off = st_hex_after(res.out, "off=");
		ASSERT_NE((uintptr_t)0, target);
		ASSERT_UAF_REPORT(res, "READ", target, off, sizes[i]);
		th_child_free(&res);
	}
}

static void st_realloc_move_page(void *arg)
{
	size_t page = *(size_t *)arg, old_size = 4 * ST_PAGE;
	char *p = malloc(old_size);
	memset(p, 1, old_size);
	char *blocker = malloc(10);
	char *q = realloc(p, 32UL << 20);
	if (q == p) {
		printf("not moved\n");
		return;
	}
	/* first byte of that page of the old object */
	char *at = (char *)(((uintptr_t)p / ST_PAGE + page) * ST_PAGE);
	if (at < p)
		at = p;
	printf("target=%p\n", (void *)at);
	st_dangle(at, 0, true);
	free(blocker);
}

TEST_TIMEOUT(realloc_move_revokes_every_old_page, ST_CHILDREN_BUDGET(4))
{
	for (size_t page = 0; page < 4; page++) {
		struct th_child res;
		th_run(st_realloc_move_page, &page, ST_CHILD_S, &res);
		EXPECT_FALSE(strstr(res.out, "not moved") != NULL);
		uintptr_t target = st_hex_after(res.out, "target=");
		ASSERT_NE((uintptr_t)0, target);
		ASSERT_KILLED_BY(SIGSEGV, res);
		struct st_uaf_report r;
		if (!st_parse_uaf(res.err, &r)) {
			TH_LOG("page %zu: no report:", page);
			th_print_quoted(res.err);
			ASSERT_TRUE(false);
		}
		EXPECT_STREQ("WRITE", r.kind);
		EXPECT_EQ(target, r.addr);
		EXPECT_EQ(4 * ST_PAGE, r.size);
		th_child_free(&res);
	}
}

static void st_shrink_dangle(void *arg)
{
	(void)arg;
	size_t old_size = 6 * ST_PAGE, new_size = ST_PAGE + 10;
	char *p = malloc(old_size);
	memset(p, 7, old_size);
	char *q = realloc(p, new_size);
	if (q != p) {
		printf("moved\n");
		return;
	}
	/* the live part is still fine, up to the usable size */
	memset(q, 8, new_size);
	/* the first page wholly past the new end */
	uintptr_t gone = ((uintptr_t)q + new_size + ST_PAGE - 1) / ST_PAGE *
			 ST_PAGE;
	if (gone >= (uintptr_t)p + old_size) {
		printf("nothing past the end\n");
		return;
	}
	printf("target=%p\n", (void *)(gone + 100));
	st_dangle((char *)gone, 100, false);
}

TEST(uaf_past_end_after_shrinking_realloc)
{
	struct th_child res;
	th_run(st_shrink_dangle, NULL, ST_CHILD_S, &res);
	EXPECT_FALSE(strstr(res.out, "moved") != NULL);
	EXPECT_FALSE(strstr(res.out, "nothing past the end") != NULL);
	uintptr_t target = st_hex_after(res.out, "target=");
	ASSERT_NE((uintptr_t)0, target);
	ASSERT_KILLED_BY(SIGSEGV, res);
	/* st_read is a volatile byte load: its size is decoded */
	ASSERT_CONTAINS("dangless: use-after-free READ of size 1 at 0x",
			res.err);
	EXPECT_EQ(target, st_hex_after(res.err, "READ of size 1 at "));
	th_child_free(&res);
}

static void st_shrink_usable(void *arg)
{
	(void)arg;
	char *p = malloc(6 * ST_PAGE);
	memset(p, 7, 6 * ST_PAGE);
	char *q = realloc(p, ST_PAGE + 10);
	size_t usable = malloc_usable_size(q);
	printf("usable=0x%zx\n", usable);
	fflush(stdout);
	/* malloc_usable_size promises these bytes may be used */
	memset(q, 9, usable);
	printf("all usable bytes written\n");
}

TEST(usable_size_after_shrink_is_all_usable)
{
	struct th_child res;
	th_run(st_shrink_usable, NULL, ST_CHILD_S, &res);
	if (!WIFEXITED(res.status))
		th_print_quoted(res.err);
	ASSERT_EXITED(0, res);
	ASSERT_CONTAINS("all usable bytes written", res.out);
	EXPECT_LE(ST_PAGE + 10, st_hex_after(res.out, "usable="));
	th_child_free(&res);
}

/* ---- through library code ---- */

static void st_memcpy_dangle(void *arg)
{
	bool write = *(bool *)arg;
	char buf[300];
	char *p = malloc(300);
	memset(p, 'm', 300);
	printf("start=%p\n", (void *)p);
	free(p);
	if (write)
		memcpy(st_launder(p), buf, 300);
	else
		memcpy(buf, st_launder(p), 300);
	printf("survived %d\n", buf[0]);
}

TEST_TIMEOUT(uaf_through_memcpy, ST_CHILDREN_BUDGET(2))
{
	for (int w = 0; w < 2; w++) {
		bool write = w;
		struct th_child res;
		th_run(st_memcpy_dangle, &write, ST_CHILD_S, &res);
		EXPECT_FALSE(strstr(res.out, "survived") != NULL);
		uintptr_t start = st_hex_after(res.out, "start=");
		ASSERT_NE((uintptr_t)0, start);
		ASSERT_KILLED_BY(SIGSEGV, res);
		struct st_uaf_report r;
		if (!st_parse_uaf(res.err, &r)) {
			th_print_quoted(res.err);
			ASSERT_TRUE(false);
		}
		/* memcpy may start anywhere in the block; the report agrees */
		EXPECT_STREQ(write ? "WRITE" : "READ", r.kind);
		EXPECT_LE(start, r.addr);
		EXPECT_LT(r.addr, start + 300);
		EXPECT_EQ(r.addr - start, r.off);
		EXPECT_EQ((size_t)300, r.size);
		th_child_free(&res);
	}
}

static void st_strlen_dangle(void *arg)
{
	(void)arg;
	char *s = strdup("a string that is freed too early");
	printf("start=%p\n", (void *)s);
	free(s);
	printf("survived %zu\n", strlen(st_launder(s)));
}

TEST(uaf_through_strlen)
{
	struct th_child res;
	th_run(st_strlen_dangle, NULL, ST_CHILD_S, &res);
	uintptr_t start = st_hex_after(res.out, "start=");
	ASSERT_NE((uintptr_t)0, start);
	ASSERT_KILLED_BY(SIGSEGV, res);
	struct st_uaf_report r;
	ASSERT_TRUE(st_parse_uaf(res.err, &r));
	EXPECT_STREQ("READ", r.kind);
	EXPECT_EQ(r.addr - start, r.off);
	EXPECT_EQ((size_t)33, r.size);
	th_child_free(&res);
}

/*
 * The kernel cannot use a revoked alias either: a freed buffer handed to a
 * system call gets EFAULT, and nothing of it reaches the other end.
 */
TEST(syscalls_on_freed_memory_get_efault)
{
	int pfd[2];
	ASSERT_EQ(0, pipe2(pfd, O_NONBLOCK));
	fcntl(pfd[1], F_SETPIPE_SZ, 1 << 20);
	static const size_t sizes[] = {100, 3 * ST_PAGE, 100000};
	for (int i = 0; i < 3; i++) {
		char *p = malloc(sizes[i]);
		ASSERT_NOT_NULL(p);
		memset(p, 's', sizes[i]);
		free(p);
		char *dangling = st_launder(p);
		errno = 0;
		EXPECT_EQ((ssize_t)-1, write(pfd[1], dangling, sizes[i]));
		EXPECT_EQ(EFAULT, errno);
		ASSERT_EQ((ssize_t)1, write(pfd[1], "!", 1));
		errno = 0;
		EXPECT_EQ((ssize_t)-1, read(pfd[0], dangling, sizes[i]));
		EXPECT_EQ(EFAULT, errno);
		char c = 0;
		/* only the marker went through, and it is still there */
		ASSERT_EQ((ssize_t)1, read(pfd[0], &c, 1));
		EXPECT_EQ('!', c);
	}
	close(pfd[0]);
	close(pfd[1]);
}

/* ---- threads ---- */

static void *st_thread_reader(void *p)
{
	(void)st_read(p);
	printf("survived\n");
	return NULL;
}

static void *st_thread_freer(void *p)
{
	free(p);
	return NULL;
}

static void st_thread_dangle(void *arg)
{
	int variant = *(int *)arg;
	char *p = malloc(64);
	memset(p, 1, 64);
	printf("target=%p\n", (void *)(p + 8));
	pthread_t t;
	if (variant == 0) {
		/* freed here, used there */
		free(p);
		pthread_create(&t, NULL, st_thread_reader, p + 8);
		pthread_join(t, NULL);
	} else {
		/* freed there, used here */
		pthread_create(&t, NULL, st_thread_freer, p);
		pthread_join(t, NULL);
		st_dangle(p, 8, false);
	}
}

TEST_TIMEOUT(uaf_in_another_thread, ST_CHILDREN_BUDGET(2))
{
	for (int variant = 0; variant < 2; variant++) {
		struct th_child res;
		th_run(st_thread_dangle, &variant, ST_CHILD_S, &res);
		EXPECT_FALSE(strstr(res.out, "survived") != NULL);
		uintptr_t target = st_hex_after(res.out, "target=");
		ASSERT_NE((uintptr_t)0, target);
		ASSERT_UAF_REPORT(res, "READ", target, 8, 64);
		th_child_free(&res);
	}
}

/*
 * Strict revocation is immediate for every thread: a thread that has been
 * reading the object all along (its TLB warm) faults on its first read
 * after free() has returned in another thread.
 */
static char *volatile st_hot;
static atomic_int st_phase;

static void *st_hot_reader(void *arg)
{
	(void)arg;
	unsigned sum = 0;
	while (atomic_load(&st_phase) == 0)
		sum += st_read(st_hot + 8);
	/* free() has returned: this read must fault */
	sum += st_read(st_hot + 8);
	printf("survived %u\n", sum);
	return NULL;
}

static void st_hot_body(void *arg)
{
	(void)arg;
	st_hot = malloc(64);
	memset(st_hot, 1, 64);
	printf("target=%p\n", (void *)(st_hot + 8));
	fflush(stdout);
	pthread_t t;
	pthread_create(&t, NULL, st_hot_reader, NULL);
	usleep(20000);
	free(st_hot);
	atomic_store(&st_phase, 1);
	pthread_join(t, NULL);
}

#define ST_HOT_ROUNDS 10
#define ST_HOT_ROUND_S 30
TEST_TIMEOUT(uaf_seen_at_once_by_a_thread_reading_all_along,
	     ST_HOT_ROUNDS * ST_HOT_ROUND_S + TH_PARENT_ROOM)
{
	for (int round = 0; round < ST_HOT_ROUNDS; round++) {
		struct th_child res;
		th_run(st_hot_body, NULL, ST_HOT_ROUND_S, &res);
		EXPECT_FALSE(strstr(res.out, "survived") != NULL);
		uintptr_t target = st_hex_after(res.out, "target=");
		ASSERT_NE((uintptr_t)0, target);
		ASSERT_UAF_REPORT(res, "READ", target, 8, 64);
		th_child_free(&res);
	}
}

/* A dangling read in a thread with the smallest stack allowed. */
static void *st_small_stack_reader(void *p)
{
	(void)st_read(p);
	printf("survived\n");
	return NULL;
}

static void st_small_stack_body(void *arg)
{
	(void)arg;
	char *p = malloc(48);
	memset(p, 1, 48);
	printf("target=%p\n", (void *)(p + 4));
	fflush(stdout);
	free(p);
	pthread_attr_t attr;
	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, 16384);
	pthread_t t;
	if (pthread_create(&t, &attr, st_small_stack_reader, p + 4) == 0)
		pthread_join(t, NULL);
	else
		printf("no thread\n");
}

TEST(uaf_in_a_thread_with_a_small_stack)
{
	struct th_child res;
	th_run(st_small_stack_body, NULL, ST_CHILD_S, &res);
	EXPECT_FALSE(strstr(res.out, "survived") != NULL);
	uintptr_t target = st_hex_after(res.out, "target=");
	ASSERT_NE((uintptr_t)0, target);
	ASSERT_UAF_REPORT(res, "READ", target, 4, 48);
	th_child_free(&res);
}

/* Running off the end of the stack is a plain crash, not a report. */
static int st_recurse(volatile char *prev, long depth)
{
	volatile char buf[1024];
	buf[0] = prev ? prev[0] + 1 : 0;
	if (depth == 0) /* never: the stack ends long before */
		return buf[0];
	return st_recurse(buf, depth - 1) + buf[1];
}

static void st_overflow_body(void *arg)
{
	(void)arg;
	free(malloc(10));
	printf("%d\n", st_recurse(NULL, (long)st_launder_size(1L << 40)));
}

TEST(stack_overflow_is_not_reported_as_uaf)
{
	struct th_child res;
	th_run(st_overflow_body, NULL, ST_CHILD_S, &res);
	ASSERT_KILLED_BY(SIGSEGV, res);
	EXPECT_FALSE(strstr(res.err, "use-after-free") != NULL);
	th_child_free(&res);
}

/* The report comes with a stack (at least one frame line after it). */
TEST(uaf_report_has_stack_lines)
{
	struct st_uaf u = {32, 4, false, 0};
	struct th_child res;
	th_run(st_uaf_body, &u, ST_CHILD_S, &res);
	ASSERT_KILLED_BY(SIGSEGV, res);
	const char *line = strstr(res.err, "dangless: use-after-free");
	ASSERT_NOT_NULL(line);
	const char *next = strchr(line, '\n');
	ASSERT_NOT_NULL(next);
	/* something follows the first line */
	EXPECT_LT(3, (long)strlen(next));
	th_child_free(&res);
}

/* A fault that is not a dangling pointer is left alone: plain SIGSEGV. */
static void st_null_deref(void *arg)
{
	(void)arg;
	(void)st_read((void *)16);
	printf("survived\n");
}

TEST(wild_segv_is_not_reported_as_uaf)
{
	struct th_child res;
	th_run(st_null_deref, NULL, ST_CHILD_S, &res);
	ASSERT_KILLED_BY(SIGSEGV, res);
	EXPECT_FALSE(strstr(res.err, "use-after-free") != NULL);
	th_child_free(&res);
}

/*
 * A program with a SIGSEGV handler of its own (a JIT, a GC, a sandbox)
 * still gets its own faults; Dangless only takes those in revoked aliases.
 */
#include <setjmp.h>
static sigjmp_buf st_jmp;

static void st_own_handler(int sig, siginfo_t *info, void *uc)
{
	(void)sig;
	(void)uc;
	printf("own handler: fault at %p\n", info->si_addr);
	siglongjmp(st_jmp, 1);
}

static void st_own_handler_body(void *arg)
{
	(void)arg;
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = st_own_handler;
	sa.sa_flags = SA_SIGINFO | SA_NODEFER;
	sigaction(SIGSEGV, &sa, NULL);
	for (volatile int i = 0; i < 3; i++)
		if (!sigsetjmp(st_jmp, 1))
			(void)st_read((void *)(uintptr_t)(16 + i));
	/* and allocation goes on as before */
	char *p = malloc(100);
	memset(p, 1, 100);
	free(p);
	printf("back in the program\n");
}

TEST(program_sigsegv_handler_still_works)
{
	struct th_child res;
	th_run(st_own_handler_body, NULL, ST_CHILD_S, &res);
	ASSERT_EXITED(0, res);
	EXPECT_EQ(3, st_count(res.out, "own handler: fault at "));
	EXPECT_CONTAINS("own handler: fault at 0x10\n", res.out);
	EXPECT_CONTAINS("back in the program\n", res.out);
	EXPECT_FALSE(strstr(res.err, "use-after-free") != NULL);
	th_child_free(&res);
}

/* ---- wrong frees ---- */

static void st_double_free(void *arg)
{
	size_t size = *(size_t *)arg;
	char *p = malloc(size);
	printf("target=%p\n", (void *)p);
	free(p);
	for (int i = 0; i < 1000; i++)
		free(malloc(size)); /* the heap moves on meanwhile */
	free(st_launder(p));
	printf("survived\n");
}

TEST_TIMEOUT(double_free_aborts, ST_CHILDREN_BUDGET(3))
{
	size_t sizes[] = {16, 5000, 1 << 20};
	for (int i = 0; i < 3; i++) {
		struct th_child res;
		th_run(st_double_free, &sizes[i], ST_CHILD_S, &res);
		EXPECT_FALSE(strstr(res.out, "survived") != NULL);
		uintptr_t target = st_hex_after(res.out, "target=");
		ASSERT_NE((uintptr_t)0, target);
		ASSERT_KILLED_BY(SIGABRT, res);
		ASSERT_CONTAINS("dangless: double free of 0x", res.err);
		EXPECT_EQ(target, st_hex_after(res.err, "double free of "));
		th_child_free(&res);
	}
}

static void st_invalid_free(void *arg)
{
	int variant = *(int *)arg;
	static char static_buf[64];
	char stack_buf[64];
	void *p;
	if (variant == 0) {
		p = stack_buf;
	} else if (variant == 1) {
		p = static_buf + 16;
	} else if (variant == 2) {
		p = mmap(NULL, ST_PAGE, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	} else {
		/* the canonical address of a live object is not its pointer */
		p = dangless_get_canonical(malloc(100));
	}
	printf("target=%p\n", p);
	free(st_launder(p));
	printf("survived\n");
}

TEST_TIMEOUT(invalid_free_aborts, ST_CHILDREN_BUDGET(4))
{
	for (int variant = 0; variant < 4; variant++) {
		struct th_child res;
		th_run(st_invalid_free, &variant, ST_CHILD_S, &res);
		if (!WIFSIGNALED(res.status))
			TH_LOG("variant %d (stack, static, mmap, canonical)",
			       variant);
		EXPECT_FALSE(strstr(res.out, "survived") != NULL);
		uintptr_t target = st_hex_after(res.out, "target=");
		ASSERT_NE((uintptr_t)0, target);
		ASSERT_KILLED_BY(SIGABRT, res);
		ASSERT_CONTAINS("dangless: invalid free of 0x", res.err);
		ASSERT_CONTAINS(": not a pointer Dangless returned", res.err);
		EXPECT_EQ(target, st_hex_after(res.err, "invalid free of "));
		th_child_free(&res);
	}
}

struct st_interior {
	size_t size, off;
};

static void st_interior_free(void *arg)
{
	struct st_interior *in = arg;
	char *p = malloc(in->size);
	printf("target=%p\n", (void *)(p + in->off));
	free(st_launder(p + in->off));
	printf("survived\n");
}

TEST_TIMEOUT(interior_free_aborts, ST_CHILDREN_BUDGET(2))
{
	struct st_interior cases[] = {{100, 16}, {3 * ST_PAGE, ST_PAGE + 8}};
	for (int i = 0; i < 2; i++) {
		struct th_child res;
		th_run(st_interior_free, &cases[i], ST_CHILD_S, &res);
		EXPECT_FALSE(strstr(res.out, "survived") != NULL);
		uintptr_t target = st_hex_after(res.out, "target=");
		ASSERT_NE((uintptr_t)0, target);
		ASSERT_KILLED_BY(SIGABRT, res);
		char want[160];
		snprintf(want, sizeof(want),
			 ": %zu bytes into a %zu-byte allocation (not its "
			 "start)",
			 cases[i].off, cases[i].size);
		ASSERT_CONTAINS("dangless: invalid free of 0x", res.err);
		EXPECT_CONTAINS(want, res.err);
		EXPECT_EQ(target, st_hex_after(res.err, "invalid free of "));
		th_child_free(&res);
	}
}

static void st_realloc_freed(void *arg)
{
	(void)arg;
	char *p = malloc(50);
	printf("target=%p\n", (void *)p);
	free(p);
	char *q = realloc(st_launder(p), 100);
	printf("survived %p\n", (void *)q);
}

TEST(realloc_of_freed_pointer_aborts)
{
	struct th_child res;
	th_run(st_realloc_freed, NULL, ST_CHILD_S, &res);
	EXPECT_FALSE(strstr(res.out, "survived") != NULL);
	uintptr_t target = st_hex_after(res.out, "target=");
	ASSERT_NE((uintptr_t)0, target);
	ASSERT_KILLED_BY(SIGABRT, res);
	ASSERT_CONTAINS("dangless: realloc of freed pointer 0x", res.err);
	EXPECT_EQ(target, st_hex_after(res.err, "realloc of freed pointer "));
	th_child_free(&res);
}

/* A live object next to a freed one is untouched by the revocation. */
TEST(neighbours_survive_a_free)
{
	enum { N = 200 };
	static char *p[N];
	for (int i = 0; i < N; i++) {
		p[i] = malloc(24);
		memset(p[i], i, 24);
	}
	for (int i = 0; i < N; i += 2)
		free(p[i]);
	for (int i = 1; i < N; i += 2) {
		for (int j = 0; j < 24; j++)
			ASSERT_EQ((char)i, p[i][j]);
		free(p[i]);
	}
}

/* The same for multi-page sizes that are not a whole number of pages. */
static void st_neighbours_body(void *arg)
{
	size_t size = *(size_t *)arg;
	enum { N = 64 };
	char *p[N];
	for (int i = 0; i < N; i++) {
		p[i] = malloc(size);
		memset(p[i], i, size);
	}
	for (int i = 0; i < N; i += 2)
		free(p[i]);
	for (int i = 1; i < N; i += 2) {
		printf("checking %p\n", (void *)p[i]);
		fflush(stdout);
		for (size_t j = 0; j < size; j += 512)
			if (p[i][j] != (char)i)
				printf("object %d changed at %zu\n", i, j);
		if (p[i][size - 1] != (char)i)
			printf("object %d changed at its end\n", i);
		free(p[i]);
	}
	printf("all checked\n");
}

TEST_TIMEOUT(multi_page_neighbours_survive_a_free, ST_CHILDREN_BUDGET(6))
{
	static size_t sizes[] = {5000, 8193, 16385, 20000, 24577, 32767};
	for (int i = 0; i < 6; i++) {
		struct th_child res;
		th_run(st_neighbours_body, &sizes[i], ST_CHILD_S, &res);
		if (!strstr(res.out, "all checked\n")) {
			TH_LOG("64 objects of %zu bytes, every other one freed; "
			       "the live ones:", sizes[i]);
			th_print_quoted(res.out);
		}
		ASSERT_EXITED(0, res);
		EXPECT_FALSE(strstr(res.out, "changed") != NULL);
		th_child_free(&res);
	}
}

TEST_HARNESS_MAIN
