// SPDX-License-Identifier: MIT
/*
 * The kvm backend, in the QEMU rig (selftests/dangless/run-kvm-in-rig runs
 * this suite with DANGLESS_OPTIONS=backend=kvm, next to the shared suites):
 * that it really runs (guest ring 0, its own PTEs), that malloc/free in
 * steady state leave the guest neither for a system call nor a VM exit,
 * the two roads of its TLB shootdown (a thread running guest code is
 * interrupted: by a signal, SIGRTMAX-1, or by an IPI where libdune has
 * them (over dune.ko unless DUNE_IPI=0, over /dev/kvm with DUNE_IPI=1),
 * and then SIGRTMAX-1 is the program's; a thread inside
 * a system call flushes on its way back), that
 * released page tables go back to the pool, the demo's report, and a
 * program's deep stacks (the main thread's whole RLIMIT_STACK, a 64 MiB
 * thread stack, an overflow caught on a sigaltstack), and a fork after
 * setenv moved environ into alias space.
 */
#include "st-common.h"

#include <ctype.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <sys/mman.h>
#include <stdatomic.h>

static bool st_in_guest_ring_0(void)
{
	uint16_t cs;
	__asm__ volatile("mov %%cs, %0" : "=r"(cs));
	return (cs & 3) == 0;
}

/*
 * The paging the backend runs with here: 5 levels where the CPU has LA57
 * (CPUID.7.0:ECX bit 16, as libdune passes it to the vCPU) under
 * backend=kvm, unless DUNE_PAGING=4 keeps 4; 4 under dune.ko.
 */
static unsigned st_levels_with(const char *options, const char *dune_paging)
{
	if (options && strstr(options, "backend=dune"))
		return 4;
	if (dune_paging && !strcmp(dune_paging, "4"))
		return 4;
	uint32_t a = 7, b, c = 0, d;
	__asm__ volatile("cpuid" : "+a"(a), "=b"(b), "+c"(c), "=d"(d));
	return c & (1u << 16) ? 5 : 4;
}

static unsigned st_levels(void)
{
	return st_levels_with(getenv("DANGLESS_OPTIONS"), getenv("DUNE_PAGING"));
}

/* Alias space: top-table slots 256-510, less 2 MiB at either end. */
static bool st_is_alias(uintptr_t p, unsigned levels)
{
	uintptr_t lo = levels == 5 ? 0xff00000000000000UL : 0xffff800000000000UL;
	uintptr_t hi = levels == 5 ? 0xffff000000000000UL : 0xffffff8000000000UL;
	return p >= lo + (2UL << 20) && p < hi - (2UL << 20);
}

TEST(runs_in_guest_ring_0_with_its_own_ptes)
{
	ASSERT_TRUE(st_in_guest_ring_0());
	struct dangless_stats before = st_stats();
	char *p = malloc(64);
	ASSERT_NOT_NULL(p);
	memset(p, 7, 64);
	/* an upper-half alias: no host mapping can be there */
	if (!st_is_alias((uintptr_t)p, st_levels()))
		TH_LOG("%p is not in the %u-level alias space", (void *)p,
		       st_levels());
	EXPECT_TRUE(st_is_alias((uintptr_t)p, st_levels()));
	free(p);
	struct dangless_stats after = st_stats();
	EXPECT_TRUE(after.pte_writes > before.pte_writes);
	EXPECT_TRUE(after.guest_syscalls > 0);
	EXPECT_TRUE(after.pt_pages > 0);
	/* and stats=1 names it, in a program started afresh */
	const char *const env[] = {"DANGLESS_OPTIONS=backend=kvm:stats=1",
				   NULL};
	const char *const argv[] = {st_selftest_prog("st-scenario"), "basic",
				    NULL};
	struct th_child res;
	th_exec(argv, env, NULL, 120, &res);
	ASSERT_EXITED(0, res);
	EXPECT_CONTAINS("basic ok", res.out);
	EXPECT_CONTAINS("dangless: stats (backend kvm):", res.err);
	th_child_free(&res);
}

TEST(check_says_kvm_runs_here)
{
	const char *const argv[] = {st_dangless_bin(), "check", NULL};
	/* on host: entered itself, check would only say that it is */
	const char *const env[] = {"DANGLESS_OPTIONS=backend=host", NULL};
	struct th_child res;
	th_exec(argv, env, NULL, 120, &res);
	ASSERT_EXITED(0, res);
	const char *kvm = strstr(res.out, "backend kvm: ");
	ASSERT_NOT_NULL(kvm);
	EXPECT_CONTAINS("  /dev/kvm works", kvm);
	EXPECT_CONTAINS("  runs on this host\nbackend dune", kvm);
	th_child_free(&res);
}

/*
 * 57-bit alias space (issue 21): where the CPU has LA57 the guest runs with
 * 5-level paging and aliases come from its 2^56-byte upper half, far above
 * what 4-level paging can address; a dangling read there faults and is
 * reported like any other (the core's two-level map finds its segment).
 * Without LA57, or with DUNE_PAGING=4, everything stays 4-level.  Each run
 * in a child: the signal and the report.
 */
static void st_uaf_read_with(const char *dune_paging, unsigned levels)
{
	const char *opts = "DANGLESS_OPTIONS=backend=kvm:verbosity=1";
	char paging[32];
	snprintf(paging, sizeof(paging), "DUNE_PAGING=%s",
		 dune_paging ? dune_paging : "");
	const char *const env[] = {opts, dune_paging ? paging : NULL, NULL};
	const char *const argv[] = {st_selftest_prog("st-scenario"),
				    "uaf-read", NULL};
	struct th_child res;
	th_exec(argv, env, NULL, 120, &res);
	ASSERT_KILLED_BY(SIGSEGV, res);
	uintptr_t target = st_hex_after(res.out, "target=");
	TH_LOG("DUNE_PAGING=%s: target %#lx, %u levels expected",
	       dune_paging ? dune_paging : "(unset)", (unsigned long)target,
	       levels);
	EXPECT_TRUE(st_is_alias(target, levels));
	if (levels == 5) /* bits 47-55 not all set: beyond 4-level paging */
		EXPECT_TRUE(target < 0xffff800000000000UL);
	char want[160];
	snprintf(want, sizeof(want), "%u-level paging", levels);
	EXPECT_CONTAINS(want, res.err);
	snprintf(want, sizeof(want),
		 "dangless: use-after-free READ of size 1 at %#lx: 10 bytes "
		 "into a 100-byte allocation (freed)",
		 (unsigned long)target);
	EXPECT_CONTAINS(want, res.err);
	EXPECT_CONTAINS("SUMMARY: Dangless: heap-use-after-free", res.err);
	EXPECT_TRUE(strstr(res.err, "dune:") == NULL);
	th_child_free(&res);
}

TEST_TIMEOUT(alias_space_is_57_bit_where_the_cpu_has_la57,
	     3 * 120 + TH_PARENT_ROOM)
{
	if (st_backend_is("dune"))
		SKIP(return, "dune.ko runs its guests with 4-level paging");
	unsigned levels = st_levels_with("backend=kvm", NULL);
	st_uaf_read_with(NULL, levels);
	/* DUNE_PAGING=4 keeps today's layout on an LA57 CPU */
	st_uaf_read_with("4", 4);
	/* and `dangless check` says which */
	const char *const argv[] = {st_dangless_bin(), "check", NULL};
	const char *const env[] = {"DANGLESS_OPTIONS=backend=host", NULL};
	struct th_child res;
	th_exec(argv, env, NULL, 120, &res);
	ASSERT_EXITED(0, res);
	EXPECT_CONTAINS(levels == 5 ? "  5-level paging (LA57): alias space "
				      "is the guest's 64 PiB upper half"
				    : "  4-level paging: alias space is the "
				      "guest's 128 TiB upper half",
			res.out);
	th_child_free(&res);
}

/*
 * The point of the backend: once warm, a malloc/free pair is PTE writes
 * and an invlpg, with no system call and no VM exit.
 */
TEST(steady_state_malloc_free_leaves_the_guest_never)
{
	for (int i = 0; i < 20000; i++) /* warm: segments, runs, pools */
		free(st_launder(malloc(64)));
	struct dangless_stats before = st_stats();
	for (int i = 0; i < 1000; i++) {
		char *p = malloc(64);
		p[0] = 1;
		free(st_launder(p));
	}
	struct dangless_stats after = st_stats();
	printf("# per 1000 malloc/free pairs: %llu system calls, %llu VM "
	       "exits, %llu PTE writes, %llu invlpgs\n",
	       (unsigned long long)(after.guest_syscalls - before.guest_syscalls),
	       (unsigned long long)(after.vm_exits - before.vm_exits),
	       (unsigned long long)(after.pte_writes - before.pte_writes),
	       (unsigned long long)(after.tlb_invlpgs - before.tlb_invlpgs));
	/* st_stats itself and the printf are outside the window */
	EXPECT_EQ(0ULL, (unsigned long long)(after.guest_syscalls -
					     before.guest_syscalls));
	EXPECT_EQ(0ULL, (unsigned long long)(after.vm_exits - before.vm_exits));
	EXPECT_TRUE(after.tlb_invlpgs - before.tlb_invlpgs >= 1000);
}

/* ---- shootdown, road 1: a thread running guest code is interrupted ---- */

static void st_print_kicks(const struct dangless_stats *before,
			   const struct dangless_stats *after)
{
	printf("signals=%llu ipis=%llu\n",
	       (unsigned long long)(after->shootdown_signals - before->shootdown_signals),
	       (unsigned long long)(after->shootdown_ipis - before->shootdown_ipis));
}

/* At least one interrupt of the kind this run uses, none of the other. */
static bool st_interrupted_by_expected_road(const char *out)
{
	unsigned long long signals, ipis;
	const char *at = strstr(out, "signals=");
	if (!at || sscanf(at, "signals=%llu ipis=%llu", &signals, &ipis) != 2) {
		TH_LOG("no interrupt counts in the child's output");
		return false;
	}
	bool by_signal = !st_shootdowns_by_ipi();
	if (by_signal ? signals >= 1 && ipis == 0 : ipis >= 1 && signals == 0)
		return true;
	TH_LOG("expected %s, saw signals=%llu ipis=%llu",
	       by_signal ? "signals and no IPIs" : "IPIs and no signals",
	       signals, ipis);
	return false;
}

static char *volatile st_hot;
static atomic_int st_phase;

static atomic_int st_handled;

static void st_note_signal(int sig)
{
	(void)sig;
	atomic_fetch_add(&st_handled, 1);
}

static void *st_spinning_reader(void *arg)
{
	/* With arg, the thread first takes a signal in a handler of its own:
	 * it comes back to guest code through rt_sigreturn, which the host
	 * answers by setting the vCPU's registers, without the system-call
	 * post-hook, and must still count as running guest code. */
	if (arg) {
		raise(SIGUSR1);
		if (atomic_load(&st_handled) != 1)
			printf("handler did not run\n");
	}
	unsigned sum = 0;
	atomic_store(&st_phase, 1);
	while (atomic_load(&st_phase) == 1)
		sum += st_read(st_hot + 8); /* no system call in here */
	sum += st_read(st_hot + 8);         /* after free(): must fault */
	printf("survived %u\n", sum);
	return NULL;
}

static void st_spinning_body(void *arg)
{
	if (arg)
		signal(SIGUSR1, st_note_signal);
	st_hot = malloc(64);
	memset(st_hot, 1, 64);
	printf("target=%p\n", (void *)(st_hot + 8));
	/* Counted from before the thread starts: an interrupt sent to it for
	 * an earlier free() and not yet taken when free(st_hot) runs (its vCPU
	 * not scheduled for a while, as under TCG) stands for this one too,
	 * one being outstanding per thread, and free(st_hot) waits for it. */
	struct dangless_stats before = st_stats();
	pthread_t t;
	pthread_create(&t, NULL, st_spinning_reader, arg);
	while (atomic_load(&st_phase) != 1)
		sched_yield();
	usleep(20000);
	free(st_hot);
	struct dangless_stats after = st_stats();
	st_print_kicks(&before, &after);
	fflush(stdout);
	atomic_store(&st_phase, 2);
	pthread_join(t, NULL);
}

/* Budgets of its own: run alone (-t) there is no TH_TIMEOUT to cover the
 * three children. */
#define ST_SPIN_ROUND_S 60
/* One child: the spinning thread (after a signal handler of its own
 * when signal_first) is interrupted and faults on its read after free(). */
static void st_spinning_round(bool signal_first)
{
	struct th_child res;
	th_run(st_spinning_body, signal_first ? (void *)1 : NULL,
	       ST_SPIN_ROUND_S, &res);
	EXPECT_FALSE(strstr(res.out, "handler did not run") != NULL);
	EXPECT_FALSE(strstr(res.out, "survived") != NULL);
	EXPECT_TRUE(st_interrupted_by_expected_road(res.out));
	uintptr_t target = st_hex_after(res.out, "target=");
	ASSERT_NE((uintptr_t)0, target);
	ASSERT_UAF_REPORT(res, "READ", target, 8, 64);
	th_child_free(&res);
}

TEST_TIMEOUT(shootdown_interrupts_a_thread_running_guest_code,
	     3 * ST_SPIN_ROUND_S + TH_PARENT_ROOM)
{
	for (int round = 0; round < 3; round++)
		st_spinning_round(false);
}

/* The same after the thread took a signal: it was left marked inside the
 * host, so no shootdown reached it (0 interrupts) until its next call. */
TEST_TIMEOUT(shootdown_reaches_a_thread_back_from_a_signal_handler,
	     ST_SPIN_ROUND_S + TH_PARENT_ROOM)
{
	if (st_shootdowns_by_ipi() && !st_backend_is("dune"))
		SKIP(return, "the IPI road over /dev/kvm keeps this gap (README, Limits)");
	st_spinning_round(true);
}

/* ---- road 2: a thread inside a system call flushes on its way back ---- */

static int st_pipe[2];

static void *st_blocked_reader(void *arg)
{
	(void)arg;
	unsigned sum = 0;
	for (int i = 0; i < 1000; i++)
		sum += st_read(st_hot + 8); /* its TLB holds the alias */
	atomic_store(&st_phase, 1);
	char c;
	if (read(st_pipe[0], &c, 1) != 1) /* blocks: its vCPU is idle */
		printf("read failed\n");
	sum += st_read(st_hot + 8); /* freed meanwhile: must fault */
	printf("survived %u\n", sum);
	return NULL;
}

static void st_blocked_body(void *arg)
{
	(void)arg;
	if (pipe(st_pipe) != 0)
		return;
	st_hot = malloc(64);
	memset(st_hot, 1, 64);
	printf("target=%p\n", (void *)(st_hot + 8));
	pthread_t t;
	pthread_create(&t, NULL, st_blocked_reader, NULL);
	while (atomic_load(&st_phase) != 1)
		sched_yield();
	usleep(100000); /* well inside read() by now */
	struct dangless_stats before = st_stats();
	free(st_hot);
	struct dangless_stats after = st_stats();
	st_print_kicks(&before, &after);
	fflush(stdout);
	if (write(st_pipe[1], "x", 1) != 1)
		printf("write failed\n");
	pthread_join(t, NULL);
}

TEST(shootdown_waits_for_no_thread_inside_a_system_call)
{
	struct th_child res;
	th_run(st_blocked_body, NULL, 60, &res);
	EXPECT_FALSE(strstr(res.out, "survived") != NULL);
	/* neither signal nor IPI: it was in the host; it flushed in the
	 * post-hook */
	EXPECT_CONTAINS("signals=0 ipis=0\n", res.out);
	uintptr_t target = st_hex_after(res.out, "target=");
	ASSERT_NE((uintptr_t)0, target);
	ASSERT_UAF_REPORT(res, "READ", target, 8, 64);
	th_child_free(&res);
}

/* The IPI road (DUNE_IPI=1: experimental over /dev/kvm, the default over
 * dune.ko): the road-1 tests and the next one, run afresh with libdune
 * giving its vCPUs interrupts between them (KVM's local APICs, or
 * dune.ko's; over /dev/kvm the one after a signal handler skips). */
/* The inner run: its three tests' own budgets, and room for its start */
#define ST_IPI_INNER_S (4 * ST_SPIN_ROUND_S + 2 * TH_PARENT_ROOM + 60 + TH_PARENT_ROOM)
TEST_TIMEOUT(shootdown_by_ipi_where_libdune_is_asked_for_them,
	     ST_IPI_INNER_S + TH_PARENT_ROOM)
{
	const char *o = getenv("DANGLESS_OPTIONS");
	char opts[256];
	snprintf(opts, sizeof(opts), "DANGLESS_OPTIONS=%s", o ? o : "backend=kvm");
	const char *const env[] = {opts, "DUNE_IPI=1", NULL};
	const char *const argv[] = {
		st_selftest_prog("kvm"), "-t",
		"shootdown_interrupts_a_thread_running_guest_code,"
		"shootdown_reaches_a_thread_back_from_a_signal_handler,"
		"sigrtmax_minus_1_is_the_programs_where_ipis_run",
		NULL};
	struct th_child res;
	th_exec(argv, env, NULL, ST_IPI_INNER_S, &res);
	if (!WIFEXITED(res.status) || WEXITSTATUS(res.status)) {
		/* the inner suite says which case failed, on stdout */
		TH_LOG("the inner suite's output:");
		th_print_quoted(res.out);
	}
	ASSERT_EXITED(0, res);
	EXPECT_CONTAINS(st_backend_is("dune") ? "3 passed, 0 failed" : "2 passed, 0 failed",
			res.out);
	th_child_free(&res);
}

/*
 * Where shootdowns go by IPI, SIGRTMAX-1 is the program's: Dangless
 * installs nothing there, and the program's handler gets every one it is
 * sent, while other threads' frees interrupt a thread spinning in guest
 * code.
 */
static atomic_int st_rt_caught;

static void st_rt_handler(int sig)
{
	if (sig == SIGRTMAX - 1)
		atomic_fetch_add(&st_rt_caught, 1);
}

/* Runs guest code until told to stop: every free() elsewhere interrupts
 * it.  It reads an object that stays live. */
static void *st_rt_spinner(void *arg)
{
	char *live = arg;
	unsigned sum = 0;
	atomic_store(&st_phase, 1);
	while (atomic_load(&st_phase) == 1)
		sum += st_read(live);
	return (void *)(uintptr_t)sum;
}

TEST_TIMEOUT(sigrtmax_minus_1_is_the_programs_where_ipis_run, 60)
{
	if (!st_shootdowns_by_ipi())
		SKIP(return, "shootdowns go by signal here (over /dev/kvm without "
			     "DUNE_IPI=1, or DUNE_IPI=0)");
	struct sigaction old, act = {.sa_handler = st_rt_handler};
	sigemptyset(&act.sa_mask);
	ASSERT_EQ(0, sigaction(SIGRTMAX - 1, NULL, &old));
	EXPECT_TRUE(old.sa_handler == SIG_DFL);
	ASSERT_EQ(0, sigaction(SIGRTMAX - 1, &act, NULL));
	char *live = malloc(64);
	ASSERT_NOT_NULL(live);
	memset(live, 1, 64);
	atomic_store(&st_phase, 0);
	pthread_t t;
	ASSERT_EQ(0, pthread_create(&t, NULL, st_rt_spinner, live));
	while (atomic_load(&st_phase) != 1)
		sched_yield();
	struct dangless_stats before = st_stats();
	/* one signal at a time: libdune keeps one pending per thread */
	int sent = 0;
	for (int i = 0; i < 200; i++) {
		free(st_launder(malloc(64)));
		if (i % 20 == 0) {
			pthread_kill(t, SIGRTMAX - 1);
			sent++;
			for (int w = 0; w < 5000 && atomic_load(&st_rt_caught) < sent; w++)
				usleep(200);
			raise(SIGRTMAX - 1);
			sent++;
		}
	}
	struct dangless_stats after = st_stats();
	atomic_store(&st_phase, 2);
	ASSERT_EQ(0, pthread_join(t, NULL));
	free(live);
	EXPECT_EQ(20, sent);
	EXPECT_EQ(sent, atomic_load(&st_rt_caught));
	EXPECT_EQ(0ULL, (unsigned long long)(after.shootdown_signals -
					     before.shootdown_signals));
	EXPECT_TRUE(after.shootdown_ipis > before.shootdown_ipis);
	ASSERT_EQ(0, sigaction(SIGRTMAX - 1, NULL, &old));
	EXPECT_TRUE(old.sa_handler == st_rt_handler);
}

/* ---- brk past 4 GiB (the thesis's memstress 1500000 9000 case) ---- */

/*
 * Dune mapped the heap in a guest-physical window of 4 GiB, so a program
 * whose brk heap grew past 4 GiB broke; libdune registers brk's growth as
 * memslots 1 GiB chunk by chunk.  Here the heap grows by 4.25 GiB in steps,
 * one byte per MiB written and read back, on both sides of the 4 GiB line
 * (4 KiB pages: 17 MiB resident).
 */
TEST(brk_heap_grows_past_4_gib_in_the_guest)
{
	enum { STEP = 256 << 20, MIB = 1 << 20 };
	const size_t total = (4UL << 30) + STEP;
	ASSERT_TRUE(st_in_guest_ring_0());
	char *base = sbrk(0);
	ASSERT_TRUE(base != (char *)-1);
	for (size_t grown = 0; grown < total; grown += STEP) {
		char *step = sbrk(STEP);
		if (step == (char *)-1) {
			printf("# sbrk failed after %zu MiB: %s\n", grown / MIB,
			       strerror(errno));
			ASSERT_TRUE(false);
		}
		ASSERT_TRUE(step == base + grown);
	}
	ASSERT_TRUE((char *)sbrk(0) == base + total);
	/* one byte per MiB must not fault in 2 MiB each: the rig has 3 GiB */
	ASSERT_EQ(0, madvise(base, total, MADV_NOHUGEPAGE));
	for (size_t off = 0; off < total; off += MIB)
		st_write(base + off, (unsigned char)(off / MIB * 7 + 1));
	size_t wrong = 0;
	for (size_t off = 0; off < total; off += MIB)
		wrong += st_read(base + off) != (unsigned char)(off / MIB * 7 + 1);
	/* the last byte of the heap, above the line */
	st_write(base + total - 1, 0x5a);
	EXPECT_EQ(0x5a, st_read(base + total - 1));
	printf("# brk heap %p..%p (%zu MiB): %zu of %zu MiB read back wrong\n",
	       (void *)base, (void *)(base + total), total / MIB, wrong,
	       total / MIB);
	EXPECT_EQ((size_t)0, wrong);
	/* the host's view agrees: the same bytes through /proc/self/mem */
	int fd = open("/proc/self/mem", O_RDONLY);
	ASSERT_TRUE(fd >= 0);
	unsigned char above = 0;
	off_t at = (off_t)(uintptr_t)(base + (4UL << 30) + 3 * MIB);
	EXPECT_EQ((ssize_t)1, pread(fd, &above, 1, at));
	EXPECT_EQ((unsigned char)((4UL << 30) / MIB * 7 + 3 * 7 + 1), above);
	close(fd);
	ASSERT_TRUE(sbrk(-(intptr_t)total) != (void *)-1);
	ASSERT_TRUE((char *)sbrk(0) == base);
}

/* ---- page tables ---- */

TEST(released_page_tables_go_back_to_the_pool)
{
	enum { N = 32, SIZE = 4 << 20 };
	static char *objs[N];
	struct dangless_stats before = st_stats();
	for (int i = 0; i < N; i++) {
		objs[i] = malloc(SIZE);
		ASSERT_NOT_NULL(objs[i]);
		objs[i][0] = objs[i][SIZE - 1] = 1;
	}
	struct dangless_stats live = st_stats();
	for (int i = 0; i < N; i++)
		free(objs[i]);
	struct dangless_stats after = st_stats();
	printf("# pt_pages: %llu before, %llu live, %llu after\n",
	       (unsigned long long)before.pt_pages,
	       (unsigned long long)live.pt_pages,
	       (unsigned long long)after.pt_pages);
	/* each 4 MiB object needs two PTs of its own */
	EXPECT_TRUE(live.pt_pages >= before.pt_pages + 2 * N);
	/* they go back (PDs stay: one per GiB of alias space used) */
	EXPECT_TRUE(after.pt_pages <= before.pt_pages + 2);
	/* and the pool reuses them */
	char *again = malloc(SIZE);
	ASSERT_NOT_NULL(again);
	again[SIZE / 2] = 3;
	EXPECT_EQ(3, again[SIZE / 2]);
	free(again);
}

/* ---- the demo ---- */

/* The report with addresses blanked, from the first "dangless:" line on. */
static char *st_report_shape(const char *err)
{
	const char *start = strstr(err, "dangless: use-after-free");
	if (!start)
		return strdup("");
	char *out = malloc(strlen(start) + 1), *o = out;
	for (const char *s = start; *s;) {
		if (s[0] == '0' && s[1] == 'x') {
			*o++ = '#';
			s += 2;
			while (isxdigit((unsigned char)*s))
				s++;
			continue;
		}
		*o++ = *s++;
	}
	*o = 0;
	return out;
}

TEST_TIMEOUT(demo_reports_exactly_as_on_the_host_and_dies_of_sigsegv,
	     2 * 120 + TH_PARENT_ROOM)
{
	char preload[512];
	snprintf(preload, sizeof(preload), "LD_PRELOAD=%s", st_dangless_so());
	/*
	 * The environment goes through env(1)'s arguments: putenv() here
	 * would move environ into malloc'd (alias) memory, and execve's
	 * nested pointers wait for the fix-up engine.
	 */
	const char *const kvm_argv[] = {
		"/usr/bin/env", preload,
		"DANGLESS_OPTIONS=backend=kvm:verbosity=1",
		st_testapp("messaging"), NULL};
	const char *const host_argv[] = {"/usr/bin/env", preload,
					 "DANGLESS_OPTIONS=backend=host",
					 st_testapp("messaging"), NULL};
	struct th_child kvm, host;
	th_exec(kvm_argv, NULL, NULL, 120, &kvm);
	th_exec(host_argv, NULL, NULL, 120, &host);
	ASSERT_KILLED_BY(SIGSEGV, kvm);
	ASSERT_KILLED_BY(SIGSEGV, host);
	EXPECT_CONTAINS("kvm backend: running in guest ring 0", kvm.err);
	EXPECT_CONTAINS("dangless: use-after-free READ", kvm.err);
	EXPECT_CONTAINS("SUMMARY: Dangless: heap-use-after-free", kvm.err);
	EXPECT_CONTAINS("messaging.c:", kvm.err);
	/* libdune says nothing of its own about the fault */
	EXPECT_TRUE(strstr(kvm.err, "dune:") == NULL);
	char *a = st_report_shape(kvm.err), *b = st_report_shape(host.err);
	/* glibc picks its string functions by CPU: the frames in libc may
	 * differ by name, never the program's */
	EXPECT_CONTAINS("in main ", a);
	EXPECT_EQ(st_count(a, "\n"), st_count(b, "\n"));
	EXPECT_CONTAINS(strstr(b, "dangless: DANGLESS_OPTIONS=stacks=1"), a);
	free(a);
	free(b);
	th_child_free(&kvm);
	th_child_free(&host);
}

/* Alias space starts 2 MiB into its PML4 slot: p[-1] of the first object
 * is an unmapped page there, reported, not a non-canonical address. */
TEST(first_allocation_underflow_is_reported)
{
	const char *const env[] = {"DANGLESS_OPTIONS=backend=kvm:fallback=0",
				   NULL};
	const char *const argv[] = {st_selftest_prog("st-scenario"),
				    "first-underflow", NULL};
	struct th_child res;
	th_exec(argv, env, NULL, 120, &res);
	ASSERT_KILLED_BY(SIGSEGV, res);
	uintptr_t target = st_hex_after(res.out, "target=");
	ASSERT_NE((uintptr_t)0, target);
	char want[128];
	snprintf(want, sizeof(want),
		 "dangless: out-of-bounds READ of size 1 at %#lx: 1 bytes "
		 "before a 1056-byte allocation (live)",
		 (unsigned long)target);
	ASSERT_CONTAINS(want, res.err);
	th_child_free(&res);
}

/*
 * Deep stacks under the backend (issue 18; selftests/libdune/dune_test.c
 * has the same checks for libdune alone): testapps/stack-depth under
 * libdangless.so with the soft RLIMIT_STACK set by a shell first, so that
 * the suite's own process keeps its limit and environ.  Under backend=kvm
 * or dune (the suite's DANGLESS_OPTIONS, with verbosity=1 to show the
 * guest ran it).
 */
static void st_stack_depth(const char *limit_kib, const char *mode,
			   const char *mib, const char *raise_mib,
			   struct th_child *res)
{
	char preload[512], opts[512];
	const char *o = getenv("DANGLESS_OPTIONS");
	snprintf(preload, sizeof(preload), "LD_PRELOAD=%s", st_dangless_so());
	snprintf(opts, sizeof(opts), "DANGLESS_OPTIONS=%s:verbosity=1",
		 o && *o ? o : "backend=kvm");
	const char *const argv[] = {
		"/bin/sh", "-c",
		"ulimit -S -s \"$1\" && shift && exec /usr/bin/env \"$@\"",
		"sh", limit_kib, preload, opts, st_testapp("stack-depth"),
		mode, mib, raise_mib, NULL};
	th_exec(argv, NULL, NULL, 60, res);
}

#define ASSERT_RAN_IN_THE_GUEST(res)                                           \
	do {                                                                   \
		EXPECT_CONTAINS("backend: running in guest ring 0", (res).err);\
		EXPECT_TRUE(strstr((res).err, "dune:") == NULL);               \
	} while (0)

TEST(stack_main_thread_uses_7_of_8_mib)
{
	struct th_child res;
	st_stack_depth("8192", "main", "7", NULL, &res);
	ASSERT_EXITED(0, res);
	EXPECT_STREQ("main: used 7 MiB\n", res.out);
	ASSERT_RAN_IN_THE_GUEST(res);
	th_child_free(&res);
}

TEST(stack_main_thread_unlimited_uses_7_mib)
{
	struct th_child res;
	st_stack_depth("unlimited", "main", "7", NULL, &res);
	ASSERT_EXITED(0, res);
	EXPECT_STREQ("main: used 7 MiB\n", res.out);
	ASSERT_RAN_IN_THE_GUEST(res);
	th_child_free(&res);
}

/* as gcc does at start: setrlimit to 64 MiB (made by libdune on the host,
 * while malloc is Dangless's), then recurse deeper than 8 */
TEST(stack_grows_with_a_limit_raised_in_the_guest)
{
	struct th_child res;
	st_stack_depth("8192", "main", "60", "64", &res);
	ASSERT_EXITED(0, res);
	EXPECT_STREQ("main: used 60 MiB\n", res.out);
	ASSERT_RAN_IN_THE_GUEST(res);
	th_child_free(&res);
}

TEST(stack_thread_uses_its_whole_64_mib)
{
	struct th_child res;
	st_stack_depth("8192", "thread", "64", NULL, &res);
	ASSERT_EXITED(0, res);
	EXPECT_STREQ("thread: used 64 MiB of 64\n", res.out);
	ASSERT_RAN_IN_THE_GUEST(res);
	th_child_free(&res);
}

TEST(stack_overflow_reaches_the_sigaltstack_handler)
{
	struct th_child res;
	st_stack_depth("8192", "overflow", NULL, NULL, &res);
	ASSERT_EXITED(42, res);
	EXPECT_STREQ("overflow: caught at 8 MiB on the alternate stack, "
		     "si_addr next to the deepest frame\n", res.out);
	ASSERT_RAN_IN_THE_GUEST(res);
	th_child_free(&res);
}

/*
 * How git runs a command: setenv (environ's array moves into the heap,
 * alias space that only the guest can read), every signal blocked, fork,
 * exec.  libdune's host side builds the fork child's VM and must not read
 * environ there: it once did (getenv in /dev/dune's VM setup), and the
 * child died of a SIGSEGV nobody reported, under backend=dune.
 */
TEST(fork_and_exec_after_setenv_moved_environ_into_alias_space)
{
	extern char **environ;
	ASSERT_EQ(0, setenv("ST_FORK_AFTER_SETENV", "7", 1));
	ASSERT_TRUE(st_is_alias((uintptr_t)environ, st_levels()));
	sigset_t all, old;
	sigfillset(&all);
	ASSERT_EQ(0, pthread_sigmask(SIG_SETMASK, &all, &old));
	pid_t pid = fork();
	if (pid == 0) {
		pthread_sigmask(SIG_SETMASK, &old, NULL);
		execl("/bin/sh", "sh", "-c", "exit $ST_FORK_AFTER_SETENV", (char *)NULL);
		_exit(127);
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	ASSERT_TRUE(pid > 0);
	int status;
	ASSERT_EQ(pid, waitpid(pid, &status, 0));
	EXPECT_TRUE(WIFEXITED(status));
	if (WIFSIGNALED(status))
		TH_LOG("the child died of signal %d", WTERMSIG(status));
	EXPECT_EQ(7, WEXITSTATUS(status));
}

TEST_HARNESS_MAIN
