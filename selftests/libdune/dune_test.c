/* SPDX-License-Identifier: MIT */
/*
 * libdune selftests.  They need a /dev/kvm with hardware virtualisation:
 * make test runs them inside the QEMU rig (selftests/libdune/run-in-rig).
 * Each test enters in its own forked child, so each gets its own VM.
 */
#include "harness.h"
#include "dune.h"

#include <pthread.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sched.h>
#include <setjmp.h>

static void enter(void)
{
	int r = dune_init(1);
	if (r)
		TH_LOG("dune_init: %d: %s", r, dune_strerror());
	ASSERT_EQ(0, r);
	r = dune_enter();
	if (r)
		TH_LOG("dune_enter: %d: %s", r, dune_strerror());
	ASSERT_EQ(0, r);
	ASSERT_TRUE(dune_in_guest());
}

static __thread int tls_marker = 0x5151;
static volatile int h_in_guest = -1, h_count;
static void on_usr1_guest(int s);

/*
 * int enter_with_regs(uint64_t out[6]): loads known values into the
 * callee-saved registers, calls dune_enter() and stores what they hold
 * afterwards (rbx r12 r13 r14 r15 rbp) into out.
 */
int enter_with_regs(uint64_t *out);
__asm__(".text\n"
	".globl enter_with_regs\n"
	".type enter_with_regs, @function\n"
	"enter_with_regs:\n"
	"	push %rbx\n	push %rbp\n	push %r12\n	push %r13\n"
	"	push %r14\n	push %r15\n	push %rdi\n"
	"	movabs $0xb0b0b0b0b0b0b0b0, %rbx\n"
	"	movabs $0x1212121212121212, %r12\n"
	"	movabs $0x1313131313131313, %r13\n"
	"	movabs $0x1414141414141414, %r14\n"
	"	movabs $0x1515151515151515, %r15\n"
	"	movabs $0xbebebebebebebebe, %rbp\n"
	"	call dune_enter\n"
	"	pop %rdi\n"
	"	mov %rbx, 0(%rdi)\n	mov %r12, 8(%rdi)\n	mov %r13, 16(%rdi)\n"
	"	mov %r14, 24(%rdi)\n	mov %r15, 32(%rdi)\n	mov %rbp, 40(%rdi)\n"
	"	pop %r15\n	pop %r14\n	pop %r13\n	pop %r12\n"
	"	pop %rbp\n	pop %rbx\n"
	"	ret\n"
	".size enter_with_regs, . - enter_with_regs\n");

TEST(enter_ring0_keeps_registers_stack_tls)
{
	volatile uint64_t on_stack = 0x1122334455667788ULL;
	uint64_t got[6] = {0};
	uint16_t cs_before, cs_after;
	uint64_t fs_before = 0, fs_after = 0;
	sigset_t mask_before, mask_after;

	ASSERT_EQ(0, dune_init(1));
	__asm__ volatile("mov %%cs, %0" : "=r"(cs_before));
	ASSERT_EQ(3, cs_before & 3);
	syscall(SYS_arch_prctl, 0x1003 /* ARCH_GET_FS */, &fs_before);
	tls_marker = 0x7777;
	sigemptyset(&mask_before);
	sigaddset(&mask_before, SIGUSR2);
	sigprocmask(SIG_BLOCK, &mask_before, NULL);
	sigprocmask(SIG_BLOCK, NULL, &mask_before);
	ASSERT_EQ(0, enter_with_regs(got));
	__asm__ volatile("mov %%cs, %0" : "=r"(cs_after));
	EXPECT_EQ(0, cs_after & 3);
	EXPECT_EQ(0xb0b0b0b0b0b0b0b0ULL, got[0]);
	EXPECT_EQ(0x1212121212121212ULL, got[1]);
	EXPECT_EQ(0x1313131313131313ULL, got[2]);
	EXPECT_EQ(0x1414141414141414ULL, got[3]);
	EXPECT_EQ(0x1515151515151515ULL, got[4]);
	EXPECT_EQ(0xbebebebebebebebeULL, got[5]);
	EXPECT_EQ(0x1122334455667788ULL, on_stack);
	EXPECT_EQ(0x7777, tls_marker);
	syscall(SYS_arch_prctl, 0x1003, &fs_after);
	EXPECT_EQ(fs_before, fs_after);
	/* the guest's own FS base really is the thread's: read it by hand */
	uint64_t self;
	__asm__ volatile("mov %%fs:0, %0" : "=r"(self));
	EXPECT_EQ(fs_before, self);
	sigemptyset(&mask_after);
	sigprocmask(SIG_BLOCK, NULL, &mask_after);
	EXPECT_EQ(1, sigismember(&mask_after, SIGUSR2));
	uint64_t mb, ma;
	memcpy(&mb, &mask_before, 8);
	memcpy(&ma, &mask_after, 8);
	EXPECT_EQ(mb, ma);
	/* a second dune_enter() in the guest is a no-op */
	EXPECT_EQ(0, dune_enter());
}

TEST(syscalls_and_errno_match_host)
{
	pid_t host_pid = getpid();
	int host_fd = open("/nonexistent/x", O_RDONLY);
	int host_errno = errno;
	ASSERT_EQ(-1, host_fd);
	enter();
	EXPECT_EQ(host_pid, getpid());
	errno = 0;
	EXPECT_EQ(-1, open("/nonexistent/x", O_RDONLY));
	EXPECT_EQ(host_errno, errno);
	errno = 0;
	EXPECT_EQ(-1, close(12345));
	EXPECT_EQ(EBADF, errno);

	int p[2];
	ASSERT_EQ(0, pipe(p));
	ASSERT_EQ(5, write(p[1], "hello", 5));
	char buf[8] = {0};
	ASSERT_EQ(5, read(p[0], buf, sizeof(buf)));
	EXPECT_STREQ("hello", buf);

	int fd = open("/proc/self/status", O_RDONLY);
	ASSERT_GE(fd, 0);
	char st[4096];
	ssize_t n = read(fd, st, sizeof(st) - 1);
	ASSERT_GT(n, 0);
	st[n] = 0;
	EXPECT_CONTAINS("Name:", st);
	close(fd);

	char *m = mmap(NULL, 1 << 20, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ASSERT_NE(MAP_FAILED, m);
	memset(m, 0xab, 1 << 20);
	EXPECT_EQ(0xab, (unsigned char)m[(1 << 20) - 1]);
	EXPECT_EQ(0, munmap(m, 1 << 20));
	errno = 0;
	EXPECT_EQ(MAP_FAILED, mmap(NULL, 4096, PROT_READ, MAP_PRIVATE, 12345, 0));
	EXPECT_EQ(EBADF, errno);
	/* stdio through the guest */
	printf("# printf from the guest works\n");
	fflush(stdout);
}

static int hook_pre_seen, hook_post_seen;
static uint64_t hook_seen_arg;

static bool pre_hook(struct dune_tf *tf)
{
	if (DUNE_SC_NR(tf) == SYS_getppid && DUNE_SC_ARG0(tf) == 0x5eed) {
		hook_pre_seen++;
		hook_seen_arg = DUNE_SC_ARG0(tf);
		DUNE_SC_NR(tf) = SYS_getpid; /* rewrite the number */
	}
	if (DUNE_SC_NR(tf) == SYS_getuid && DUNE_SC_ARG0(tf) == 0xdead) {
		hook_pre_seen++;
		DUNE_SC_RET(tf) = 777; /* skip the call with a result */
		return false;
	}
	if (DUNE_SC_NR(tf) == SYS_getgid && DUNE_SC_ARG0(tf) == 0xbeef &&
	    DUNE_SC_ARG1(tf) == 0xcafe) {
		hook_pre_seen++;
		tf->rip += 2; /* rewrite the return address: skip a ud2 */
	}
	if (DUNE_SC_NR(tf) == SYS_write && DUNE_SC_ARG2(tf) == 3 &&
	    DUNE_SC_ARG0(tf) == 0x7777)
		DUNE_SC_ARG0(tf) = 1 << 20; /* rewrite an argument: a bad fd */
	return true;
}

static void post_hook(struct dune_tf *tf)
{
	if (DUNE_SC_NR_DONE(tf) == SYS_getpid && DUNE_SC_ARG0(tf) == 0x5eed)
		hook_post_seen++;
	if (DUNE_SC_NR_DONE(tf) == SYS_write && (long)DUNE_SC_RET(tf) == -EBADF &&
	    DUNE_SC_ARG0(tf) == 1 << 20) {
		hook_post_seen++;
		DUNE_SC_RET(tf) = 3; /* rewrite the result */
	}
}

TEST(syscall_hooks_see_and_rewrite)
{
	enter();
	dune_register_syscall_hooks(pre_hook, post_hook);
	/* number rewrite: getppid(0x5eed) becomes getpid */
	EXPECT_EQ(getpid(), syscall(SYS_getppid, 0x5eed));
	EXPECT_EQ(0x5eedULL, hook_seen_arg);
	/* skipped call with the hook's result */
	EXPECT_EQ(777, syscall(SYS_getuid, 0xdead));
	/* return address rewrite: the ud2 after the syscall is skipped */
	long r = SYS_getgid, gid = getgid();
	uint64_t di = 0xbeef, si = 0xcafe;
	__asm__ volatile("syscall\n\tud2\n\t"
			 : "+a"(r), "+D"(di), "+S"(si)
			 :
			 : "rcx", "r11", "memory");
	EXPECT_EQ(gid, r);
	/* argument rewrite to a bad fd, then the post-hook rewrites -EBADF */
	EXPECT_EQ(3, syscall(SYS_write, 0x7777, "abc", 3));
	EXPECT_EQ(2, hook_post_seen);
	EXPECT_EQ(3, hook_pre_seen);
	dune_register_syscall_hooks(NULL, NULL);
	EXPECT_EQ(-1, syscall(SYS_write, 0x7777, "abc", 3));
}

static volatile uintptr_t pf_addr;
static volatile uint64_t pf_err;
static volatile int pf_count;

static void pf_handler(uintptr_t addr, uint64_t fec, struct dune_tf *tf)
{
	(void)tf;
	pf_addr = addr;
	pf_err = fec;
	pf_count++;
	void *page = (void *)(addr & ~4095UL);
	dune_vm_map_pages(pgroot, page, 4096, PTE_W | PTE_U);
	dune_flush_tlb_one(page);
}

static int count_leaves(void *arg, ptent_t *pte, void *va, int level)
{
	(void)pte;
	(void)va;
	if (level == 0)
		(*(int *)arg)++;
	return 0;
}

TEST(page_fault_reaches_handler)
{
	volatile char *m = mmap(NULL, 8192, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ASSERT_NE(MAP_FAILED, m);
	m[0] = 1;
	m[4096] = 2;
	enter();
	dune_register_pgflt_handler(pf_handler);
	uint64_t pa = dune_va_to_pa((char *)m + 4096);
	ASSERT_NE((uint64_t)-1, pa);
	EXPECT_EQ((char *)m + 4096, (char *)dune_pa_to_va(pa));
	ASSERT_EQ(0, dune_vm_unmap(pgroot, (char *)m + 4096, 4096));
	dune_flush_tlb_one((char *)m + 4096);
	EXPECT_EQ((uint64_t)-1, dune_va_to_pa((char *)m + 4096));
	EXPECT_EQ(1, m[0]); /* the neighbour is still mapped (split 2 MiB) */
	EXPECT_EQ(0, pf_count);
	m[4096 + 8] = 5; /* store: #PF, the handler maps it back */
	EXPECT_EQ(1, pf_count);
	EXPECT_EQ((uintptr_t)m + 4096 + 8, pf_addr);
	EXPECT_EQ(2ULL, pf_err & 2); /* W bit: a write */
	EXPECT_EQ(0ULL, pf_err & 1); /* not present */
	EXPECT_EQ(2, m[4096]);
	EXPECT_EQ(5, m[4096 + 8]);
	EXPECT_EQ(pa, dune_va_to_pa((char *)m + 4096));

	/* remap a page to another frame: the guest sees the other frame */
	ASSERT_EQ(0, dune_vm_map_phys(pgroot, (char *)m + 4096, 4096,
				      dune_va_to_pa((char *)m) & ~4095ULL, PTE_W));
	dune_flush_tlb_one((char *)m + 4096);
	EXPECT_EQ(1, m[4096]);
	/* page walk sees 4 KiB leaves */
	int count = 0;
	EXPECT_EQ(0, dune_vm_page_walk(pgroot, (char *)m, (char *)m + 8192,
				       count_leaves, &count));
	EXPECT_EQ(2, count);
}

/* An address the compiler cannot see through. */
static volatile int *bad_ptr(uintptr_t a)
{
	volatile uintptr_t v = a;
	return (volatile int *)v;
}

static volatile uintptr_t big_fault_addr;
static void big_pf_handler(uintptr_t addr, uint64_t fec, struct dune_tf *tf)
{
	(void)fec;
	(void)tf;
	big_fault_addr = addr;
	dune_vm_map_pages(pgroot, (void *)(addr & ~4095UL), 4096, PTE_W);
	dune_flush_tlb_one((void *)addr);
}

TEST(unmap_whole_gigabyte_stays_unmapped)
{
	enter();
	/* a 1 GiB-aligned gigabyte of the host's memory */
	char *res = mmap(NULL, 2UL << 30, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	ASSERT_NE(MAP_FAILED, res);
	volatile char *g = (char *)(((uintptr_t)res + (1UL << 30) - 1) & ~((1UL << 30) - 1));
	g[0] = 1;
	g[(1UL << 30) - 1] = 2;
	ASSERT_EQ(0, dune_vm_unmap(pgroot, (char *)g, 1UL << 30));
	dune_flush_tlb();
	EXPECT_EQ((uint64_t)-1, dune_va_to_pa((char *)g + 12345));
	dune_register_pgflt_handler(big_pf_handler);
	/* the fault reaches our handler: libdune does not map it back */
	EXPECT_EQ(2, g[(1UL << 30) - 1]);
	EXPECT_EQ((uintptr_t)g + (1UL << 30) - 1, big_fault_addr);
	EXPECT_EQ(1, g[0]);
	EXPECT_EQ((uintptr_t)g, big_fault_addr);
}

/* ---- 5-level paging (dune_set_paging_levels) ---- */

static uint64_t read_cr4(void)
{
	uint64_t v;
	__asm__ volatile("mov %%cr4, %0" : "=r"(v));
	return v;
}

/* CPUID.7.0:ECX.LA57 on the host, which libdune's /dev/kvm VM passes on */
static bool host_has_la57(void)
{
	uint32_t a = 7, b, c = 0, d;
	__asm__ volatile("cpuid" : "+a"(a), "=b"(b), "+c"(c), "=d"(d));
	return c & (1u << 16);
}

/* Maps the faulting upper-half page to the frame of la57_frame. */
static volatile char *la57_frame;
static volatile uintptr_t la57_fault_addr;
static void la57_pf_handler(uintptr_t addr, uint64_t fec, struct dune_tf *tf)
{
	(void)fec;
	(void)tf;
	la57_fault_addr = addr;
	void *page = (void *)(addr & ~4095UL);
	uint64_t pa = dune_va_to_pa((const char *)la57_frame);
	if (dune_vm_map_phys(dune_pgtable_top(), page, 4096, pa, PTE_W | PTE_NX))
		dune_die();
	dune_flush_tlb_one(page);
}

/*
 * Asked for 5 levels, where the CPU has LA57: CR4.LA57 in the guest, the
 * process's own memory where it was, and a page of it mapped far above
 * the 4-level upper half (an address with bits 48-56 not all set) and
 * reached through it, first by a fault that carries the whole address.
 */
TEST(five_level_paging_where_the_cpu_has_la57)
{
	if (!getenv("DUNE_PAGING"))
		ASSERT_EQ(0, dune_set_paging_levels(5));
	EXPECT_EQ(-EINVAL, dune_set_paging_levels(3));
	EXPECT_EQ(0, dune_paging_levels());
	volatile char *m = mmap(NULL, 4096, PROT_READ | PROT_WRITE,
				MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ASSERT_NE(MAP_FAILED, m);
	m[0] = 7;
	m[5] = 7;
	enter();
	EXPECT_EQ(-EBUSY, dune_set_paging_levels(4));
	int want = getenv("DUNE_PAGING") ? atoi(getenv("DUNE_PAGING")) : 5;
	int levels = dune_paging_levels();
	TH_LOG("host CPU LA57: %d; paging levels in the guest: %d, CR4 %#llx",
	       host_has_la57(), levels, (unsigned long long)read_cr4());
	bool over_dune_ko = !strcmp(dune_device(), DUNE_DEVICE_DUNE);
	if (want == 5 && (!host_has_la57() || over_dune_ko)) {
		EXPECT_EQ(4, levels); /* falls back, and says so */
		EXPECT_EQ(0ULL, read_cr4() & (1ULL << 12));
		EXPECT_EQ(pgroot, dune_pgtable_top());
		SKIP(return, "%s: 4-level paging, as it should",
		     over_dune_ko ? "dune.ko has no 5-level mode"
				  : "no LA57 on this CPU");
	}
	ASSERT_EQ(want, levels);
	if (levels == 4) {
		EXPECT_EQ(0ULL, read_cr4() & (1ULL << 12));
		EXPECT_EQ(pgroot, dune_pgtable_top());
		return;
	}
	EXPECT_EQ(1ULL << 12, read_cr4() & (1ULL << 12));
	ASSERT_NE(pgroot, dune_pgtable_top());
	/* the lower half is pgroot's, as with 4 levels */
	EXPECT_EQ(7, m[0]);
	uint64_t pa = dune_va_to_pa((const char *)m);
	ASSERT_NE((uint64_t)-1, pa);
	ptent_t *pte;
	EXPECT_EQ(0, dune_vm_lookup(dune_pgtable_top(), (const void *)m, 1, &pte));
	EXPECT_EQ(pa & ~4095ULL, PTE_ADDR(*pte));
	/* above the 4-level upper half: PML5 entry 300 */
	uintptr_t hi = 0xff2c000000000000UL + 0x123456789000UL;
	la57_frame = m;
	dune_register_pgflt_handler(la57_pf_handler);
	EXPECT_EQ((uint64_t)-1, dune_va_to_pa((void *)hi));
	volatile char *h = (volatile char *)hi;
	EXPECT_EQ(7, h[5]); /* #PF, the handler maps it, the load runs again */
	EXPECT_EQ(hi + 5, la57_fault_addr);
	h[1] = 9;
	EXPECT_EQ(9, m[1]);
	EXPECT_EQ(pa & ~4095ULL, dune_va_to_pa((void *)hi) & ~4095ULL);
	ASSERT_EQ(0, dune_vm_unmap(dune_pgtable_top(), (void *)hi, 4096));
	dune_flush_tlb_one((void *)hi);
	EXPECT_EQ((uint64_t)-1, dune_va_to_pa((void *)hi));
}

/* Not asked: 4 levels, whatever the CPU has; DUNE_PAGING=4 wins over a
 * program that asks for 5. */
TEST(four_level_paging_unless_asked)
{
	enter();
	if (getenv("DUNE_PAGING"))
		SKIP(return, "DUNE_PAGING is set");
	EXPECT_EQ(4, dune_paging_levels());
	EXPECT_EQ(0ULL, read_cr4() & (1ULL << 12));
	EXPECT_EQ(pgroot, dune_pgtable_top());
}

TEST(dune_paging_4_in_the_environment_wins)
{
	setenv("DUNE_PAGING", "4", 1);
	ASSERT_EQ(0, dune_set_paging_levels(5));
	enter();
	EXPECT_EQ(4, dune_paging_levels());
	EXPECT_EQ(0ULL, read_cr4() & (1ULL << 12));
}

static void fault_body(void *arg)
{
	(void)arg;
	if (dune_init(1) || dune_enter())
		_exit(99);
	*bad_ptr(16) = 1;
	_exit(0);
}

TEST(unhandled_fault_kills_with_sigsegv)
{
	struct th_child res;
	th_run(fault_body, NULL, 60, &res);
	ASSERT_KILLED_BY(SIGSEGV, res);
	EXPECT_CONTAINS("unhandled #PF", res.err);
	EXPECT_CONTAINS("cr2 0x10", res.err);
	th_child_free(&res);
}

static void ud2_body(void *arg)
{
	(void)arg;
	if (dune_init(1) || dune_enter())
		_exit(99);
	__asm__ volatile("ud2");
	_exit(0);
}

TEST(invalid_opcode_kills_with_sigill)
{
	struct th_child res;
	th_run(ud2_body, NULL, 60, &res);
	ASSERT_KILLED_BY(SIGILL, res);
	EXPECT_CONTAINS("#UD", res.err);
	th_child_free(&res);
}

static int bp_seen;
static void bp_handler(struct dune_tf *tf)
{
	(void)tf;
	bp_seen++;
}

TEST(interrupt_handler_runs)
{
	enter();
	dune_register_intr_handler(3, bp_handler);
	__asm__ volatile("int3");
	EXPECT_EQ(1, bp_seen);
}

struct thr {
	int in_guest;
	uint64_t vcpu;
	long sum;
	pid_t tid;
};

static pthread_barrier_t thr_barrier;

static void *thread_fn(void *arg)
{
	struct thr *t = arg;
	/* all four alive at once, so none can inherit another's vCPU */
	pthread_barrier_wait(&thr_barrier);
	t->in_guest = dune_in_guest();
	__asm__ volatile("mov %%gs:0, %0" : "=r"(t->vcpu));
	for (int i = 0; i < 100000; i++)
		t->sum += i;
	t->tid = (pid_t)syscall(SYS_gettid);
	char *p = malloc(100000);
	memset(p, 1, 100000);
	free(p);
	return arg;
}

TEST(pthreads_each_on_own_vcpu)
{
	enter();
	pthread_t th[4];
	struct thr t[4];
	memset(t, 0, sizeof(t));
	ASSERT_EQ(0, pthread_barrier_init(&thr_barrier, NULL, 4));
	for (int i = 0; i < 4; i++)
		ASSERT_EQ(0, pthread_create(&th[i], NULL, thread_fn, &t[i]));
	for (int i = 0; i < 4; i++) {
		void *ret;
		ASSERT_EQ(0, pthread_join(th[i], &ret));
		EXPECT_EQ(&t[i], ret);
	}
	uint64_t mine;
	__asm__ volatile("mov %%gs:0, %0" : "=r"(mine));
	for (int i = 0; i < 4; i++) {
		EXPECT_EQ(1, t[i].in_guest);
		EXPECT_EQ(4999950000L, t[i].sum);
		EXPECT_NE(mine, t[i].vcpu);
		EXPECT_NE(getpid(), t[i].tid);
		for (int j = 0; j < i; j++)
			EXPECT_NE(t[j].vcpu, t[i].vcpu);
	}
	struct dune_stats st;
	dune_get_stats(&st);
	EXPECT_GE(st.vcpus, 5ULL);
}

static void *short_thread(void *arg)
{
	return (void *)((uintptr_t)arg * 2 + dune_in_guest());
}

TEST(thread_churn_reuses_vcpus)
{
	/* exited threads' vCPUs are reused, so a process is not bound by
	 * KVM's vCPU limit (1024) over its life (1500 threads pass in ~30 s
	 * in the rig; 300 keep the suite short) */
	enter();
	for (uintptr_t i = 0; i < 300; i++) {
		pthread_t t;
		void *ret;
		ASSERT_EQ(0, pthread_create(&t, NULL, short_thread, (void *)i));
		ASSERT_EQ(0, pthread_join(t, &ret));
		ASSERT_EQ(i * 2 + 1, (uintptr_t)ret);
	}
	struct dune_stats st;
	dune_get_stats(&st);
	EXPECT_LE(st.vcpus, 10ULL);
}

static volatile int probe_chld;
static void on_probe_chld(int s)
{
	(void)s;
	probe_chld++;
}

TEST(init_sends_the_program_no_sigchld)
{
	signal(SIGCHLD, on_probe_chld);
	ASSERT_EQ(0, dune_init(1));
	usleep(100000);
	EXPECT_EQ(0, probe_chld);
}

TEST(fork_child_runs_and_exits_with_status)
{
	enter();
	int local = 5;
	pid_t pid = fork();
	ASSERT_GE(pid, 0);
	if (pid == 0) {
		local = 6;
		_exit(dune_in_guest() && getppid() > 1 ? 40 + local : 1);
	}
	int status = 0;
	ASSERT_EQ(pid, waitpid(pid, &status, 0));
	ASSERT_TRUE(WIFEXITED(status));
	EXPECT_EQ(46, WEXITSTATUS(status));
	EXPECT_EQ(5, local);
	/* a forked child that faults dies by SIGSEGV */
	pid = fork();
	if (pid == 0) {
		*bad_ptr(8) = 0;
		_exit(0);
	}
	ASSERT_EQ(pid, waitpid(pid, &status, 0));
	EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGSEGV);
}

static void exec_body(void *arg)
{
	(void)arg;
	if (dune_init(1) || dune_enter())
		_exit(99);
	char *const argv[] = {"/bin/echo", "exec", "from", "the", "guest", NULL};
	execv("/bin/echo", argv);
	_exit(98);
}

TEST(execve_replaces_the_image)
{
	struct th_child res;
	th_run(exec_body, NULL, 60, &res);
	ASSERT_EXITED(0, res);
	EXPECT_STREQ("exec from the guest\n", res.out);
	th_child_free(&res);
	/* and fork + exec + wait from the guest */
	enter();
	pid_t pid = fork();
	if (pid == 0) {
		execl("/bin/sh", "sh", "-c", "exit 7", (char *)NULL);
		_exit(98);
	}
	int status;
	ASSERT_EQ(pid, waitpid(pid, &status, 0));
	EXPECT_TRUE(WIFEXITED(status));
	EXPECT_EQ(7, WEXITSTATUS(status));
}

static volatile int alarms, chlds;
static void on_alarm(int s)
{
	(void)s;
	alarms++;
}
static void on_chld(int s)
{
	(void)s;
	chlds++;
}

TEST(signals_handlers_run)
{
	enter();
	signal(SIGALRM, on_alarm);
	signal(SIGCHLD, on_chld);
	struct itimerval it = {{0, 0}, {0, 50000}};
	ASSERT_EQ(0, setitimer(ITIMER_REAL, &it, NULL));
	for (int i = 0; i < 100 && !alarms; i++)
		pause();
	EXPECT_EQ(1, alarms);
	/* a blocked signal waits, and arrives when unblocked */
	sigset_t set, old;
	sigemptyset(&set);
	sigaddset(&set, SIGALRM);
	ASSERT_EQ(0, sigprocmask(SIG_BLOCK, &set, &old));
	raise(SIGALRM);
	EXPECT_EQ(1, alarms);
	ASSERT_EQ(0, sigprocmask(SIG_SETMASK, &old, NULL));
	EXPECT_EQ(2, alarms);
	/* SIGCHLD arrives */
	pid_t pid = fork();
	if (pid == 0)
		_exit(0);
	for (int i = 0; i < 200 && !chlds; i++)
		usleep(10000);
	EXPECT_EQ(1, chlds);
	waitpid(pid, NULL, 0);
	/* spinning guest code is interrupted by a signal too */
	alarms = 0;
	ASSERT_EQ(0, setitimer(ITIMER_REAL, &it, NULL));
	volatile unsigned long spin = 0;
	while (!alarms && spin < 4000000000UL)
		spin++;
	EXPECT_EQ(1, alarms);
}

TEST_SIGNAL(sigint_default_kills, SIGINT)
{
	enter();
	kill(getpid(), SIGINT);
	for (;;)
		pause();
}

static int64_t ts_ns(const struct timespec *t)
{
	return (int64_t)t->tv_sec * 1000000000LL + t->tv_nsec;
}

TEST(clock_gettime_matches_host)
{
	struct timespec before, vdso, sys, mono_vdso, mono_sys;
	clock_gettime(CLOCK_REALTIME, &before);
	enter();
	struct dune_stats st0, st1;
	dune_get_stats(&st0);
	ASSERT_EQ(0, clock_gettime(CLOCK_REALTIME, &vdso));
	ASSERT_EQ(0, clock_gettime(CLOCK_MONOTONIC, &mono_vdso));
	dune_get_stats(&st1);
	ASSERT_EQ(0, syscall(SYS_clock_gettime, CLOCK_REALTIME, &sys));
	ASSERT_EQ(0, syscall(SYS_clock_gettime, CLOCK_MONOTONIC, &mono_sys));
	TH_LOG("vDSO calls made %llu system calls; realtime guest-host %lld ns, "
	       "monotonic %lld ns",
	       (unsigned long long)(st1.syscalls - st0.syscalls),
	       (long long)(ts_ns(&sys) - ts_ns(&vdso)),
	       (long long)(ts_ns(&mono_sys) - ts_ns(&mono_vdso)));
	EXPECT_GE(ts_ns(&vdso), ts_ns(&before));
	EXPECT_LE(ts_ns(&vdso), ts_ns(&sys));
	EXPECT_LT(ts_ns(&sys) - ts_ns(&vdso), 50 * 1000000LL);
	EXPECT_LE(ts_ns(&mono_vdso), ts_ns(&mono_sys));
	EXPECT_LT(ts_ns(&mono_sys) - ts_ns(&mono_vdso), 50 * 1000000LL);
}

TEST(mmap_1gib_after_entering)
{
	enter();
	size_t len = 1UL << 30;
	char *m = mmap(NULL, len, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	ASSERT_NE(MAP_FAILED, m);
	for (size_t off = 0; off < len; off += 4096)
		m[off] = (char)(off >> 12);
	size_t bad = 0;
	for (size_t off = 0; off < len; off += 4096)
		bad += m[off] != (char)(off >> 12);
	EXPECT_EQ((size_t)0, bad);
	EXPECT_EQ(0, munmap(m, len));
}

static const char *preload_path(void)
{
	const char *p = getenv("DUNE_TEST_PRELOAD");
	return p ? p : "build/libdune-preload.so";
}

TEST(preload_hello_world)
{
	const char *hello = getenv("DUNE_TEST_HELLO");
	char env[512];
	snprintf(env, sizeof(env), "LD_PRELOAD=%s", preload_path());
	const char *const envs[] = {env, "DUNE_PRELOAD_STRICT=1",
				    "DUNE_PRELOAD_VERBOSE=1", NULL};
	const char *const argv[] = {hello ? hello : "build/libdune/hello", "5",
				    NULL};
	struct th_child res;
	th_exec(argv, envs, NULL, 60, &res);
	ASSERT_EXITED(5, res);
	EXPECT_STREQ("hello, world (2 args, x)\n", res.out);
	EXPECT_CONTAINS("libdune-preload: ran in the guest (ring 0)", res.err);
	th_child_free(&res);
}

/* its python3 run has 120 s; the test keeps the 180 s the rig gives all */
TEST_TIMEOUT(preload_python3, 180)
{
	char env[512];
	snprintf(env, sizeof(env), "LD_PRELOAD=%s", preload_path());
	const char *const envs[] = {env, "DUNE_PRELOAD_STRICT=1",
				    "DUNE_PRELOAD_VERBOSE=1", NULL};
	const char *const argv[] = {
		"python3", "-c",
		"import hashlib, subprocess, threading; r = []; "
		"t = threading.Thread(target=lambda: r.append(1)); t.start(); t.join(); "
		"s = subprocess.run(['echo', 'sub'], capture_output=True); "
		"print(sum(range(1000)), hashlib.sha256(b'x').hexdigest()[:8], "
		"s.stdout.decode().strip(), len(r))",
		NULL};
	struct th_child res;
	if (access("/usr/bin/python3", X_OK))
		SKIP(return, "no python3 on this machine");
	th_exec(argv, envs, NULL, 120, &res);
	ASSERT_EXITED(0, res);
	EXPECT_STREQ("499500 2d711642 sub 1\n", res.out);
	EXPECT_CONTAINS("libdune-preload: ran in the guest (ring 0)", res.err);
	th_child_free(&res);
}

TEST(system_and_posix_spawn)
{
	enter();
	/* glibc's system() and posix_spawn use clone(CLONE_VM | CLONE_VFORK) */
	int st = system("exit 3");
	ASSERT_TRUE(WIFEXITED(st));
	EXPECT_EQ(3, WEXITSTATUS(st));
	FILE *p = popen("echo spawned", "r");
	ASSERT_NOT_NULL(p);
	char line[64] = "";
	EXPECT_TRUE(fgets(line, sizeof(line), p) != NULL);
	EXPECT_STREQ("spawned\n", line);
	EXPECT_EQ(0, pclose(p));
}

static volatile int vfork_seen;

TEST(vfork_child_borrows_the_parent)
{
	enter();
	int marker = 1;
	pid_t pid = vfork();
	if (pid == 0) {
		/* shares our memory until it exits */
		vfork_seen = dune_in_guest() ? 2 : 3;
		_exit(21);
	}
	ASSERT_GT(pid, 0);
	EXPECT_EQ(2, vfork_seen); /* the parent waited and sees the write */
	int status;
	ASSERT_EQ(pid, waitpid(pid, &status, 0));
	EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 21);
	pid = vfork();
	if (pid == 0) {
		execl("/bin/sh", "sh", "-c", "exit 9", (char *)NULL);
		_exit(98);
	}
	ASSERT_EQ(pid, waitpid(pid, &status, 0));
	EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 9);
	EXPECT_EQ(1, marker);
	/* signals still reach this thread's handler in the guest */
	signal(SIGUSR1, on_usr1_guest);
	h_count = 0;
	raise(SIGUSR1);
	EXPECT_EQ(1, h_count);
	EXPECT_EQ(1, h_in_guest);
}

TEST(closing_every_descriptor_keeps_the_vm)
{
	enter();
	int devnull = open("/dev/null", O_RDONLY);
	ASSERT_GE(devnull, 0);
	pid_t pid = fork();
	if (pid == 0) {
		/* what subprocess-style code does before exec */
		syscall(SYS_close_range, 3U, ~0U, 0);
		for (int fd = 3; fd < 8192; fd++)
			close(fd);
		if (fcntl(devnull, F_GETFD) != -1)
			_exit(2);
		execl("/bin/sh", "sh", "-c", "exit 4", (char *)NULL);
		_exit(3);
	}
	int status;
	ASSERT_EQ(pid, waitpid(pid, &status, 0));
	EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 4);
	/* and in this process too */
	syscall(SYS_close_range, 3U, ~0U, 0);
	EXPECT_EQ(-1, fcntl(devnull, F_GETFD));
	EXPECT_EQ(getpid(), syscall(SYS_getpid));
}

TEST(arch_prctl_set_fs)
{
	enter();
	static uint64_t block[64];
	uint64_t old = 0, seen = 0, now = 0;
	long r;
	block[0] = (uint64_t)block;
	block[1] = 0xf5f5;
	__asm__ volatile("syscall" : "=a"(r) : "a"(SYS_arch_prctl), "D"(0x1003), "S"(&old) : "rcx", "r11", "memory");
	ASSERT_EQ(0, r);
	__asm__ volatile("syscall" : "=a"(r) : "a"(SYS_arch_prctl), "D"(0x1002), "S"(block) : "rcx", "r11", "memory");
	__asm__ volatile("mov %%fs:8, %0" : "=r"(seen));
	__asm__ volatile("syscall" : "=a"(r) : "a"(SYS_arch_prctl), "D"(0x1003), "S"(&now) : "rcx", "r11", "memory");
	__asm__ volatile("syscall" : "=a"(r) : "a"(SYS_arch_prctl), "D"(0x1002), "S"(old) : "rcx", "r11", "memory");
	ASSERT_EQ(0, r);
	EXPECT_EQ(0xf5f5ULL, seen);
	EXPECT_EQ((uint64_t)block, now);
	EXPECT_EQ(0x5151, tls_marker);
}

static volatile uintptr_t altstack_seen;
static void on_usr1(int s)
{
	int local;
	(void)s;
	altstack_seen = (uintptr_t)&local;
}

TEST(sigaltstack_is_used)
{
	enter();
	static char alt[64 * 1024];
	stack_t ss = {.ss_sp = alt, .ss_size = sizeof(alt), .ss_flags = 0};
	ASSERT_EQ(0, sigaltstack(&ss, NULL));
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_usr1;
	sa.sa_flags = SA_ONSTACK;
	ASSERT_EQ(0, sigaction(SIGUSR1, &sa, NULL));
	raise(SIGUSR1);
	EXPECT_GE(altstack_seen, (uintptr_t)alt);
	EXPECT_LT(altstack_seen, (uintptr_t)alt + sizeof(alt));
}

TEST(brk_and_mremap_memory_is_reachable)
{
	enter();
	char *b = sbrk(0);
	ASSERT_NE((void *)-1, sbrk(64 << 20));
	for (size_t i = 0; i < (64 << 20); i += 4096)
		b[i] = 1;
	EXPECT_EQ(1, b[(64 << 20) - 4096]);
	char *m = mmap(NULL, 1 << 20, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ASSERT_NE(MAP_FAILED, m);
	m[0] = 42;
	/* grow it far away: a fresh part of the address space */
	void *hint = (void *)0x3f0000000000ULL;
	char *n = mremap(m, 1 << 20, 256 << 20, MREMAP_MAYMOVE | MREMAP_FIXED, hint);
	ASSERT_EQ(hint, (void *)n);
	EXPECT_EQ(42, n[0]);
	n[(256 << 20) - 1] = 7;
	EXPECT_EQ(7, n[(256 << 20) - 1]);
}

TEST(lazy_mapping_without_map_full)
{
	ASSERT_EQ(0, dune_init(0));
	ASSERT_EQ(0, dune_enter());
	/* everything not mapped at entry arrives on first touch */
	printf("# lazily mapped printf\n");
	fflush(stdout);
	char *m = mmap((void *)0x2e0000000000ULL, 4096, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
	ASSERT_NE(MAP_FAILED, m);
	m[1] = 3;
	EXPECT_EQ(3, m[1]);
}

static void fake_software_body(void *arg)
{
	(void)arg;
	setenv("DUNE_PROBE_MAX_RATIO", "0.0001", 1);
	int r = dune_init(1);
	printf("%d\n", r);
}

TEST(init_refuses_a_slow_kvm)
{
	struct th_child res;
	th_run(fake_software_body, NULL, 60, &res);
	ASSERT_EXITED(0, res);
	EXPECT_STREQ("-19\n", res.out);
	EXPECT_CONTAINS("software backend", res.err);
	th_child_free(&res);
}

/* The device this run of the suite asked for (DUNE_DEVICE): /dev/kvm, or
 * /dev/dune. */
static const char *device_path(void)
{
	const char *d = getenv("DUNE_DEVICE");
	return d && !strcmp(d, "dune") ? "/dev/dune" : "/dev/kvm";
}

static void no_kvm_body(void *arg)
{
	(void)arg;
	if (unshare(CLONE_NEWNS) || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) ||
	    mount("tmpfs", "/dev", "tmpfs", 0, NULL)) {
		printf("setup failed: %s\n", strerror(errno));
		return;
	}
	printf("%d\n", dune_init(1));
}

TEST(init_without_dev_kvm)
{
	struct th_child res;
	if (geteuid() != 0)
		SKIP(return, "needs root for a mount namespace");
	th_run(no_kvm_body, NULL, 60, &res);
	ASSERT_EXITED(0, res);
	EXPECT_STREQ("-2\n", res.out);
	char want[64];
	snprintf(want, sizeof(want), "no %s", device_path());
	EXPECT_CONTAINS(want, res.err);
	th_child_free(&res);
}

static void no_perm_body(void *arg)
{
	(void)arg;
	if (setgid(65534) || setuid(65534)) {
		printf("setuid failed\n");
		return;
	}
	printf("%d\n", dune_init(1));
}

TEST(init_without_permission)
{
	struct th_child res;
	struct stat st;
	if (geteuid() != 0)
		SKIP(return, "needs root to drop to nobody");
	ASSERT_EQ(0, stat(device_path(), &st));
	if (st.st_mode & 0006)
		SKIP(return, "the device is world-accessible here");
	th_run(no_perm_body, NULL, 60, &res);
	ASSERT_EXITED(0, res);
	EXPECT_STREQ("-13\n", res.out);
	EXPECT_CONTAINS("no permission", res.err);
	th_child_free(&res);
}

static void on_usr1_guest(int s)
{
	(void)s;
	uint16_t cs;
	__asm__ volatile("mov %%cs, %0" : "=r"(cs));
	h_in_guest = (cs & 3) == 0;
	h_count++;
}

TEST(signal_handlers_run_in_the_guest)
{
	/* one installed before entering, one after */
	signal(SIGUSR1, on_usr1_guest);
	enter();
	raise(SIGUSR1);
	EXPECT_EQ(1, h_count);
	EXPECT_EQ(1, h_in_guest);
	struct sigaction sa, old;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_usr1_guest;
	ASSERT_EQ(0, sigaction(SIGUSR2, &sa, &old));
	EXPECT_TRUE(old.sa_handler == SIG_DFL);
	ASSERT_EQ(0, sigaction(SIGUSR2, NULL, &old));
	EXPECT_TRUE(old.sa_handler == on_usr1_guest);
	h_in_guest = -1;
	kill(getpid(), SIGUSR2);
	EXPECT_EQ(2, h_count);
	EXPECT_EQ(1, h_in_guest);
}

static void *late_writer(void *arg)
{
	/* write only well after the handler ran, so the read spans it */
	for (int i = 0; i < 5000 && !alarms; i++)
		usleep(1000);
	usleep(200000);
	if (write(*(int *)arg, "z", 1) != 1)
		abort();
	return NULL;
}

static void on_alarm_count(int s)
{
	(void)s;
	alarms++;
}

TEST(sa_restart_restarts_and_eintr_interrupts)
{
	enter();
	int p[2];
	ASSERT_EQ(0, pipe(p));
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_alarm_count;
	sa.sa_flags = SA_RESTART;
	ASSERT_EQ(0, sigaction(SIGALRM, &sa, NULL));
	struct itimerval it = {{0, 0}, {0, 50000}};
	pthread_t t;
	ASSERT_EQ(0, pthread_create(&t, NULL, late_writer, &p[1]));
	alarms = 0;
	ASSERT_EQ(0, setitimer(ITIMER_REAL, &it, NULL));
	char c = 0;
	EXPECT_EQ(1, read(p[0], &c, 1)); /* restarted after the handler */
	EXPECT_EQ('z', c);
	EXPECT_EQ(1, alarms);
	pthread_join(t, NULL);
	/* without SA_RESTART the read fails with EINTR (a repeating timer, in
	 * case the first tick comes before the read blocks) */
	sa.sa_flags = 0;
	ASSERT_EQ(0, sigaction(SIGALRM, &sa, NULL));
	struct itimerval rep = {{0, 50000}, {0, 50000}};
	ASSERT_EQ(0, setitimer(ITIMER_REAL, &rep, NULL));
	errno = 0;
	EXPECT_EQ(-1, read(p[0], &c, 1));
	EXPECT_EQ(EINTR, errno);
	struct itimerval off = {{0, 0}, {0, 0}};
	setitimer(ITIMER_REAL, &off, NULL);
	EXPECT_GE(alarms, 2);
}

static sigjmp_buf segv_jmp;
static volatile uintptr_t segv_addr;
static volatile int segv_code;
static void on_segv(int s, siginfo_t *si, void *uc)
{
	(void)s;
	(void)uc;
	segv_addr = (uintptr_t)si->si_addr;
	segv_code = si->si_code;
	siglongjmp(segv_jmp, 1);
}

/* 1 if touching addr ended in the SIGSEGV handler's siglongjmp */
static __attribute__((noinline)) int touch_and_catch(uintptr_t addr)
{
	if (sigsetjmp(segv_jmp, 1) == 0) {
		*bad_ptr(addr) = 1;
		return 0;
	}
	return 1;
}

TEST(guest_fault_runs_the_programs_sigsegv_handler)
{
	enter();
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = on_segv;
	sa.sa_flags = SA_SIGINFO;
	ASSERT_EQ(0, sigaction(SIGSEGV, &sa, NULL));
	EXPECT_EQ(1, touch_and_catch(0x40));
	EXPECT_EQ((uintptr_t)0x40, segv_addr);
	EXPECT_EQ(SEGV_MAPERR, segv_code);
	EXPECT_TRUE(dune_in_guest());
	/* again: siglongjmp restored the mask that blocked SIGSEGV */
	EXPECT_EQ(1, touch_and_catch(0x80));
	EXPECT_EQ((uintptr_t)0x80, segv_addr);
}

static volatile double fp_sink;
static void on_alarm_fp(int s)
{
	(void)s;
	double x = 1.0;
	for (int i = 0; i < 100; i++)
		x = x * 1.0001 + 0.5;
	fp_sink = x;
	alarms++;
}

static double harmonic_rounds(int rounds)
{
	volatile double acc = 0;
	for (int r = 0; r < rounds; r++)
		for (int i = 1; i <= 20000; i++)
			acc += 1.0 / i;
	return acc;
}

TEST(fpu_state_survives_signal_handlers)
{
	enter();
	double want = harmonic_rounds(300);
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_alarm_fp;
	ASSERT_EQ(0, sigaction(SIGALRM, &sa, NULL));
	struct itimerval it = {{0, 1000}, {0, 1000}};
	alarms = 0;
	ASSERT_EQ(0, setitimer(ITIMER_REAL, &it, NULL));
	double got = harmonic_rounds(300);
	struct itimerval off = {{0, 0}, {0, 0}};
	setitimer(ITIMER_REAL, &off, NULL);
	TH_LOG("%d handlers ran during the loop", alarms);
	EXPECT_GE(alarms, 1);
	EXPECT_TRUE(want == got);
}

static volatile int defer_alarms_inside = -1;
static ptent_t *defer_pte;
static void on_alarm_defer(int s)
{
	(void)s;
	alarms++;
}

static void slow_pf_handler(uintptr_t addr, uint64_t fec, struct dune_tf *tf)
{
	(void)addr;
	(void)fec;
	(void)tf;
	/* spin until a timer signal must have come (~200 ms) */
	struct timespec t0, t;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	do
		clock_gettime(CLOCK_MONOTONIC, &t);
	while ((t.tv_sec - t0.tv_sec) * 1000000000L + (t.tv_nsec - t0.tv_nsec) <
	       200000000L);
	defer_alarms_inside = alarms;
	*defer_pte |= PTE_P;
	dune_flush_tlb_one((void *)addr);
}

TEST(signal_during_fault_handler_waits_for_it)
{
	enter();
	char *m = mmap(NULL, 4096, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	ASSERT_NE(MAP_FAILED, m);
	ASSERT_EQ(0, dune_vm_lookup(pgroot, m, 1, &defer_pte));
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_alarm_defer;
	ASSERT_EQ(0, sigaction(SIGALRM, &sa, NULL));
	dune_register_pgflt_handler(slow_pf_handler);
	*defer_pte &= ~PTE_P;
	dune_flush_tlb_one(m);
	alarms = 0;
	struct itimerval it = {{0, 0}, {0, 20000}};
	ASSERT_EQ(0, setitimer(ITIMER_REAL, &it, NULL));
	*(volatile char *)m = 1; /* the handler spins through the alarm */
	int after = alarms;
	EXPECT_EQ(0, defer_alarms_inside); /* not inside libdune's code */
	EXPECT_EQ(1, after);               /* but right after it */
}

static volatile long storm_hits;
static void on_storm(int s)
{
	(void)s;
	volatile double x = 3;
	for (int i = 0; i < 10; i++)
		x = x * 1.5 - 1;
	storm_hits++;
}

TEST(signal_storm_during_syscalls_keeps_registers)
{
	enter();
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_storm;
	sa.sa_flags = SA_RESTART;
	ASSERT_EQ(0, sigaction(SIGALRM, &sa, NULL));
	struct itimerval it = {{0, 500}, {0, 500}};
	ASSERT_EQ(0, setitimer(ITIMER_REAL, &it, NULL));
	long ppid = getppid(), bad = 0, calls = 0;
	struct timespec t0, t;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	do {
		for (long i = 0; i < 50; i++, calls++) {
			register long r12 __asm__("r12") = 0x1200 + i;
			register long r13 __asm__("r13") = 0x1300 + i;
			register long r14 __asm__("r14") = 0x1400 + i;
			register long r15 __asm__("r15") = 0x1500 + i;
			long rbx = 0xbb00 + i, rdi = 0xd100 + i, rsi = 0x5100 + i;
			long rdx = 0xdd00 + i, rax = SYS_getppid;
			__asm__ volatile("syscall"
					 : "+a"(rax), "+b"(rbx), "+D"(rdi), "+S"(rsi),
					   "+d"(rdx), "+r"(r12), "+r"(r13), "+r"(r14),
					   "+r"(r15)
					 :
					 : "rcx", "r11", "memory");
			bad += rax != ppid || rbx != 0xbb00 + i || rdi != 0xd100 + i ||
			       rsi != 0x5100 + i || rdx != 0xdd00 + i ||
			       r12 != 0x1200 + i || r13 != 0x1300 + i ||
			       r14 != 0x1400 + i || r15 != 0x1500 + i;
		}
		clock_gettime(CLOCK_MONOTONIC, &t);
	} while (t.tv_sec - t0.tv_sec < 2);
	struct itimerval off = {{0, 0}, {0, 0}};
	setitimer(ITIMER_REAL, &off, NULL);
	TH_LOG("%ld system calls, %ld signals handled", calls, storm_hits);
	EXPECT_EQ(0, bad);
	EXPECT_GT(storm_hits, 10);
}

/* Both ends of a ping-pong run guest code at once, each in its own VM. */
TEST(two_processes_in_the_guest_at_once)
{
	enter();
	int up[2], down[2];
	ASSERT_EQ(0, pipe(up));
	ASSERT_EQ(0, pipe(down));
	const int rounds = 300;
	pid_t pid = fork();
	ASSERT_GE(pid, 0);
	if (pid == 0) {
		int bad = 0;
		for (int i = 0; i < rounds; i++) {
			int got = -1;
			if (read(down[0], &got, sizeof(got)) != sizeof(got))
				_exit(2);
			bad += got != i || !dune_in_guest();
			got = i * 3;
			if (write(up[1], &got, sizeof(got)) != sizeof(got))
				_exit(3);
		}
		_exit(bad ? 4 : 0);
	}
	int bad = 0;
	for (int i = 0; i < rounds; i++) {
		int v = i, got = -1;
		ASSERT_EQ((ssize_t)sizeof(v), write(down[1], &v, sizeof(v)));
		ASSERT_EQ((ssize_t)sizeof(got), read(up[0], &got, sizeof(got)));
		bad += got != i * 3 || !dune_in_guest();
	}
	EXPECT_EQ(0, bad);
	int status;
	ASSERT_EQ(pid, waitpid(pid, &status, 0));
	EXPECT_TRUE(WIFEXITED(status));
	EXPECT_EQ(0, WEXITSTATUS(status));
}

struct sys_thread {
	int fds[2];
	long bad, calls;
};

static void *syscall_thread(void *arg)
{
	struct sys_thread *t = arg;
	pid_t pid = getpid(), tid = (pid_t)syscall(SYS_gettid);
	for (int i = 0; i < 500; i++, t->calls += 4) {
		char c = (char)i, got = 0;
		t->bad += getpid() != pid || (pid_t)syscall(SYS_gettid) != tid ||
			  write(t->fds[1], &c, 1) != 1 || read(t->fds[0], &got, 1) != 1 ||
			  got != c || !dune_in_guest();
	}
	return NULL;
}

/* Four threads, each on its own vCPU, making system calls at the same
 * time (over /dev/dune: in the kernel, concurrently). */
TEST(threads_make_system_calls_at_once)
{
	enter();
	pthread_t th[4];
	struct sys_thread t[4];
	memset(t, 0, sizeof(t));
	for (int i = 0; i < 4; i++) {
		ASSERT_EQ(0, pipe(t[i].fds));
		ASSERT_EQ(0, pthread_create(&th[i], NULL, syscall_thread, &t[i]));
	}
	for (int i = 0; i < 4; i++) {
		ASSERT_EQ(0, pthread_join(th[i], NULL));
		EXPECT_EQ(0, t[i].bad);
		EXPECT_EQ(2000, t[i].calls);
	}
}

/* Over /dev/dune the module makes the guest's ordinary system calls in the
 * kernel: they leave the vCPU loop neither as forwarded calls nor as exits;
 * libdune's own (mmap here) still come to it. */
TEST(dune_ko_makes_system_calls_in_the_kernel)
{
	enter();
	if (strcmp(dune_device(), "dune"))
		SKIP(return, "runs on /dev/dune (DUNE_DEVICE=dune), not %s", dune_device());
	struct dune_stats st0, st1;
	long ppid = getppid();
	dune_get_stats(&st0);
	long bad = 0;
	for (int i = 0; i < 1000; i++)
		bad += syscall(SYS_getppid) != ppid;
	dune_get_stats(&st1);
	EXPECT_EQ(0, bad);
	TH_LOG("1000 getppid: %llu forwarded, %llu exits",
	       (unsigned long long)(st1.syscalls - st0.syscalls),
	       (unsigned long long)(st1.exits - st0.exits));
	EXPECT_LT(st1.syscalls - st0.syscalls, 10ULL);
	EXPECT_LT(st1.exits - st0.exits, 100ULL);
	void *m = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ASSERT_NE(MAP_FAILED, m);
	struct dune_stats st2;
	dune_get_stats(&st2);
	EXPECT_LE(st1.syscalls + 1, st2.syscalls);
}

/*
 * The main thread's stack in the guest (issue 18): it grows on demand on
 * the host, but KVM and dune.ko fault guest memory in through
 * get_user_pages, which no longer grows stacks (Linux 6.5, 6.1.37+), so
 * libdune grows it to RLIMIT_STACK before the guest runs.  Each test runs
 * testapps/stack-depth under libdune-preload.so with the soft limit set
 * here (a fresh process: the limit also chose its mmap layout).
 */
static const char *stack_depth_path(void)
{
	const char *p = getenv("DUNE_TEST_STACK_DEPTH");
	return p ? p : "build/testapps/stack-depth";
}

static void run_stack_depth(rlim_t soft_limit, const char *const args[],
			    struct th_child *res)
{
	struct rlimit rl;
	ASSERT_EQ(0, getrlimit(RLIMIT_STACK, &rl));
	rl.rlim_cur = soft_limit;
	if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < soft_limit)
		rl.rlim_max = soft_limit; /* root in the rig */
	ASSERT_EQ(0, setrlimit(RLIMIT_STACK, &rl));
	char env[512];
	snprintf(env, sizeof(env), "LD_PRELOAD=%s", preload_path());
	const char *const envs[] = {env, "DUNE_PRELOAD_STRICT=1", NULL};
	const char *argv[6] = {stack_depth_path()};
	for (int i = 0; args[i] && i < 4; i++)
		argv[i + 1] = args[i];
	th_exec(argv, envs, NULL, 60, res);
}

TEST(stack_main_thread_uses_7_of_8_mib)
{
	const char *const args[] = {"main", "7", NULL};
	struct th_child res;
	run_stack_depth(8 << 20, args, &res);
	ASSERT_EXITED(0, res);
	EXPECT_STREQ("main: used 7 MiB\n", res.out);
	EXPECT_STREQ("", res.err);
	th_child_free(&res);
}

TEST(stack_main_thread_unlimited_uses_7_mib)
{
	const char *const args[] = {"main", "7", NULL};
	struct th_child res;
	run_stack_depth(RLIM_INFINITY, args, &res);
	ASSERT_EXITED(0, res);
	EXPECT_STREQ("main: used 7 MiB\n", res.out);
	EXPECT_STREQ("", res.err);
	th_child_free(&res);
}

/* as gcc does at start: setrlimit to 64 MiB, then recurse deeper than 8 */
TEST(stack_grows_with_a_limit_raised_in_the_guest)
{
	const char *const args[] = {"main", "60", "64", NULL};
	struct th_child res;
	run_stack_depth(8 << 20, args, &res);
	ASSERT_EXITED(0, res);
	EXPECT_STREQ("main: used 60 MiB\n", res.out);
	th_child_free(&res);
}

TEST(stack_thread_uses_its_whole_64_mib)
{
	const char *const args[] = {"thread", "64", NULL};
	struct th_child res;
	run_stack_depth(8 << 20, args, &res);
	ASSERT_EXITED(0, res);
	EXPECT_STREQ("thread: used 64 MiB of 64\n", res.out);
	th_child_free(&res);
}

TEST(stack_overflow_reaches_the_sigaltstack_handler)
{
	const char *const args[] = {"overflow", NULL};
	struct th_child res;
	run_stack_depth(8 << 20, args, &res);
	ASSERT_EXITED(42, res);
	EXPECT_STREQ("overflow: caught at 8 MiB on the alternate stack, "
		     "si_addr next to the deepest frame\n", res.out);
	th_child_free(&res);
}

/* no handler: SIGSEGV as on the host, and no line of libdune's */
TEST(stack_overflow_without_handler_dies_of_sigsegv)
{
	const char *const args[] = {"main", "9", NULL};
	struct th_child res;
	run_stack_depth(8 << 20, args, &res);
	ASSERT_KILLED_BY(SIGSEGV, res);
	EXPECT_STREQ("", res.err);
	th_child_free(&res);
}

TEST_HARNESS_MAIN
