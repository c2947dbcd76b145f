// SPDX-License-Identifier: MIT
/*
 * dune.ko's suite.  Runs as root inside the QEMU rig (selftests/kmod/run-in-rig):
 * it loads and unloads the module itself (finit_module/delete_module, from
 * $DUNE_KO), so it needs no kmod tools, and reads the kernel log from
 * /dev/kmsg.  Guests: selftests/kmod/guest.S.
 */
#include <fcntl.h>
#include <pthread.h>
#include <linux/kvm.h>
#include <setjmp.h>
#include <stddef.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/time.h>
#include <sys/utsname.h>

#include "harness.h"
#include "../../kmod/dune_abi.h"

extern const char kmod_guest_start[], kmod_guest_end[];
extern const char kmod_guest_stepped[], kmod_guest_db_handler[], kmod_guest_ipi_handler[];

#define MEM_SIZE (2ul << 20)      /* region 0: gpa 0, code, tables, stack */
#define DATA_GPA (4ull << 30)     /* region 1: gpa 4 GiB, guest VA 1 GiB */
#define DATA_VA 0x40000000ull
#define DATA_SIZE (64ul << 10)
#define CODE_GPA 0x10000
#define STACK_TOP 0x80000

enum { G_WRITE_PAGES, G_REREAD, G_SPIN, G_LOAD, G_WRMSR, G_OUT, G_TRIPLE, G_STORE, G_WAIT_VALUE,
       G_SYSCALL, G_SINGLE_STEP, G_TAKE_IPIS, G_SEND_IPI };

struct guest {
	int dune, vcpu;
	uint8_t *mem;
	volatile uint64_t *data;
};

/* Whether /proc/cpuinfo's flags have `flag` (" svm", " vmx"). */
static bool cpu_has_flag(const char *flag)
{
	char line[4096];
	bool has = false;
	FILE *f = fopen("/proc/cpuinfo", "r");
	if (!f)
		return false;
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, "flags", 5) && strstr(line, flag))
			has = true;
	fclose(f);
	return has;
}

/* dune.ko drives VT-x on a CPU without SVM (main.c). */
static bool on_intel(void)
{
	static int intel = -1;
	if (intel < 0)
		intel = !cpu_has_flag(" svm") && cpu_has_flag(" vmx");
	return intel;
}

/* What dune.ko calls the CPU's virtualisation in its messages. */
static const char *hw_name(void)
{
	return on_intel() ? "VT-x" : "SVM";
}

/*
 * guest.S reports with vmmcall, AMD's hypercall; on Intel that is #UD and
 * vmcall is the hypercall (dune.ko reports either as DUNE_EXIT_VMMCALL):
 * the copy in guest memory gets vmcall (0f 01 d9 -> 0f 01 c1).
 */
static void patch_hypercalls(uint8_t *code, size_t len)
{
	if (!on_intel())
		return;
	for (size_t i = 0; i + 2 < len; i++)
		if (code[i] == 0x0f && code[i + 1] == 0x01 && code[i + 2] == 0xd9)
			code[i + 2] = 0xc1;
}

/* Whether the running kernel is release major.minor or later. */
static bool kernel_at_least(int major, int minor)
{
	struct utsname u;
	int ma = 0, mi = 0;

	if (uname(&u) || sscanf(u.release, "%d.%d", &ma, &mi) != 2)
		return false;
	return ma > major || (ma == major && mi >= minor);
}

/* ---- the module ---- */

static const char *ko_path(void)
{
	const char *p = getenv("DUNE_KO");
	return p ? p : "build/kmod/rig/dune.ko";
}

static int load_module(void)
{
	int fd = open(ko_path(), O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	int r = syscall(SYS_finit_module, fd, "", 0);
	int e = errno;
	close(fd);
	return r == 0 ? 0 : -e;
}

static int unload_module(void)
{
	for (int i = 0; i < 200; i++) { /* a just-closed descriptor may still hold it */
		if (syscall(SYS_delete_module, "dune", O_NONBLOCK) == 0)
			return 0;
		if (errno != EAGAIN && errno != EBUSY)
			return -errno;
		usleep(10000);
	}
	return -EBUSY;
}

static void ensure_loaded(void)
{
	if (access("/dev/dune", F_OK) == 0)
		return;
	int r = load_module();
	if (r && r != -EEXIST) {
		TH_LOG("loading %s: %s", ko_path(), strerror(-r));
		th_fail(true);
	}
	for (int i = 0; i < 100 && access("/dev/dune", F_OK); i++)
		usleep(10000);
	ASSERT_EQ(0, access("/dev/dune", F_OK));
}

/* ---- the kernel log ---- */

/* A /dev/kmsg reader positioned at the end: what is logged from now on. */
static int kmsg_open_at_end(void)
{
	int fd = open("/dev/kmsg", O_RDONLY | O_NONBLOCK | O_CLOEXEC);
	if (fd >= 0)
		lseek(fd, 0, SEEK_END);
	return fd;
}

/* Appends the messages since the last read to buf (NUL-terminated). */
static void kmsg_read(int fd, char *buf, size_t cap)
{
	size_t len = strlen(buf);
	char rec[8192];
	for (;;) {
		ssize_t n = read(fd, rec, sizeof(rec) - 1);
		if (n < 0 && errno == EPIPE)
			continue; /* overwritten records: go on */
		if (n <= 0)
			break;
		rec[n] = 0;
		char *text = strchr(rec, ';');
		text = text ? text + 1 : rec;
		size_t t = strlen(text);
		if (len + t + 1 < cap) {
			memcpy(buf + len, text, t + 1);
			len += t;
		}
	}
}

static int count_substr(const char *hay, const char *needle)
{
	int n = 0;
	for (const char *p = hay; (p = strstr(p, needle)); p += strlen(needle))
		n++;
	return n;
}

/* How a WARN, BUG, oops or leak report begins in the kernel log. */
static const char *const kernel_trouble[] = {
	"WARNING: CPU:", "BUG:", "Oops:", "Call Trace:", "general protection fault",
	"dune: LEAK", "RIP: 0010:",
};

static void assert_log_clean(const char *log)
{
	for (size_t i = 0; i < sizeof(kernel_trouble) / sizeof(kernel_trouble[0]); i++) {
		const char *hit = strstr(log, kernel_trouble[i]);
		if (hit) {
			while (hit > log && hit[-1] != '\n')
				hit--;
			TH_LOG("the kernel log has \"%s\", from:", kernel_trouble[i]);
			char excerpt[4096];
			snprintf(excerpt, sizeof(excerpt), "%s", hit);
			th_print_quoted(excerpt);
			th_fail(true);
		}
	}
}

/* ---- guests ---- */

static struct dune_module_stats stats_of(int dune)
{
	struct dune_module_stats st;
	memset(&st, 0, sizeof(st));
	if (ioctl(dune, DUNE_GET_STATS, &st))
		th_fail(true);
	return st;
}

static int set_region(int dune, uint32_t slot, uint64_t gpa, const void *uaddr,
		      uint64_t size, uint32_t flags)
{
	struct dune_region r = {.slot = slot, .flags = flags, .guest_phys = gpa,
				.user_addr = (uintptr_t)uaddr, .size = size};
	return ioctl(dune, DUNE_SET_REGION, &r);
}

/*
 * Guest page tables in region 0: VA [0, 2 MiB) -> gpa 0 and
 * VA [1 GiB, 1 GiB + 2 MiB) -> gpa 4 GiB, both as 2 MiB pages.
 */
static void build_page_tables(uint8_t *mem)
{
	uint64_t *pml4 = (uint64_t *)(mem + 0x1000);
	uint64_t *pdpt = (uint64_t *)(mem + 0x2000);
	uint64_t *pd0 = (uint64_t *)(mem + 0x3000);
	uint64_t *pd1 = (uint64_t *)(mem + 0x4000);
	pml4[0] = 0x2000 | 3;
	pdpt[0] = 0x3000 | 3;
	pdpt[1] = 0x4000 | 3;
	pd0[0] = 0x0 | 0x83;
	pd1[0] = DATA_GPA | 0x83;
}

/* The registers guest.S starts guest `which` with. */
static struct dune_regs entry_regs(int which, uint64_t arg)
{
	return (struct dune_regs){.rip = CODE_GPA, .rsp = STACK_TOP, .rflags = 2,
				  .rdi = (uint64_t)which, .rsi = arg, .rdx = DATA_VA};
}

/* A VM with both regions and one vCPU about to run guest `which`. */
static void guest_setup(struct guest *g, int which, uint64_t arg, volatile uint64_t *data,
			uint32_t data_flags)
{
	g->dune = open("/dev/dune", O_RDWR | O_CLOEXEC);
	if (g->dune < 0) {
		TH_LOG("open /dev/dune: %s", strerror(errno));
		th_fail(true);
	}
	ASSERT_EQ(DUNE_ABI_VERSION, ioctl(g->dune, DUNE_GET_ABI_VERSION));
	g->mem = mmap(NULL, MEM_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ASSERT_NE(MAP_FAILED, (void *)g->mem);
	/* Small pages, so that each page the guest touches first comes through
	 * its own nested page fault, as the tests count.  Newer kernels (6.12
	 * here) align a 2 MiB anonymous mapping to 2 MiB, and THP "always" then
	 * backs it with one huge page, which the NPT maps with one entry. */
	ASSERT_EQ(0, madvise(g->mem, MEM_SIZE, MADV_NOHUGEPAGE));
	g->data = data;
	if (!g->data) {
		g->data = mmap(NULL, DATA_SIZE, PROT_READ | PROT_WRITE,
			       MAP_SHARED | MAP_ANONYMOUS, -1, 0);
		ASSERT_NE(MAP_FAILED, (void *)g->data);
	}
	build_page_tables(g->mem);
	memcpy(g->mem + CODE_GPA, kmod_guest_start, kmod_guest_end - kmod_guest_start);
	patch_hypercalls(g->mem + CODE_GPA, kmod_guest_end - kmod_guest_start);
	ASSERT_EQ(0, set_region(g->dune, 0, 0, g->mem, MEM_SIZE, 0));
	ASSERT_EQ(0, set_region(g->dune, 1, DATA_GPA, (void *)g->data, DATA_SIZE, data_flags));
	g->vcpu = ioctl(g->dune, DUNE_CREATE_VCPU);
	ASSERT_LE(0, g->vcpu);

	struct dune_vcpu_state st;
	ASSERT_EQ(0, ioctl(g->vcpu, DUNE_VCPU_GET_STATE, &st));
	st.regs = entry_regs(which, arg);
	st.sregs.cr0 = 0x80050033; /* PG WP NE ET MP PE */
	st.sregs.cr3 = 0x1000;
	st.sregs.cr4 = 0x620;      /* OSXMMEXCPT OSFXSR PAE */
	st.sregs.efer = 0xd00;     /* NXE LMA LME */
	ASSERT_EQ(0, ioctl(g->vcpu, DUNE_VCPU_SET_STATE, &st));
}

static void guest_close(struct guest *g)
{
	close(g->vcpu);
	close(g->dune);
	munmap(g->mem, MEM_SIZE);
}

static struct dune_exit run(struct guest *g)
{
	struct dune_exit ex;
	memset(&ex, 0xa5, sizeof(ex));
	ex.immediate_exit = 0;
	int r;
	while ((r = ioctl(g->vcpu, DUNE_VCPU_RUN, &ex)) < 0 && errno == EINTR)
		;
	if (r) {
		TH_LOG("DUNE_VCPU_RUN: %s", strerror(errno));
		th_fail(true);
	}
	return ex;
}

/* Where the code of guest.S label `sym` is in the guest. */
static uint64_t guest_addr(const char *sym)
{
	return CODE_GPA + (uint64_t)(sym - kmod_guest_start);
}

static struct dune_regs regs_of(struct guest *g)
{
	struct dune_vcpu_state st;
	if (ioctl(g->vcpu, DUNE_VCPU_GET_STATE, &st))
		th_fail(true);
	return st.regs;
}

#define ASSERT_EXIT(want_reason, exit_expr)                                   \
	do {                                                                  \
		struct dune_exit ae_ex = (exit_expr);                         \
		if (ae_ex.reason != (want_reason))                            \
			TH_LOG("exit reason %u (svm exit code 0x%llx, info1 " \
			       "0x%llx, info2 0x%llx), expected %u",          \
			       ae_ex.reason,                                  \
			       (unsigned long long)ae_ex.svm_exit_code,       \
			       (unsigned long long)ae_ex.info1,               \
			       (unsigned long long)ae_ex.info2, (want_reason)); \
		ASSERT_EQ((uint32_t)(want_reason), ae_ex.reason);             \
	} while (0)

/* ---- load-time checks ---- */

TEST(load_refused_while_kvm_holds_svm)
{
	if (access("/dev/dune", F_OK) == 0)
		ASSERT_EQ(0, unload_module());
	int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (kvm < 0)
		SKIP(return, "no /dev/kvm in this kernel");
	int kvm_vm = ioctl(kvm, KVM_CREATE_VM, 0); /* KVM sets EFER.SVME (CR4.VMXE) now */
	ASSERT_LE(0, kvm_vm);
	char log[16384] = "", want[128];
	int kmsg = kmsg_open_at_end();
	ASSERT_EQ(-EBUSY, load_module());
	kmsg_read(kmsg, log, sizeof(log));
	snprintf(want, sizeof(want), "dune: %s is in use by another hypervisor", hw_name());
	ASSERT_CONTAINS(want, log);
	ASSERT_NE(0, access("/dev/dune", F_OK));
	close(kvm_vm);
	close(kvm);
	ASSERT_EQ(0, load_module());
	ASSERT_EQ(0, access("/dev/dune", F_OK));
}

TEST(load_refused_without_svm)
{
	if (cpu_has_flag(" svm") || cpu_has_flag(" vmx"))
		SKIP(return, "this CPU has SVM or VT-x (run-in-rig boots a second rig without SVM)");
	char log[16384] = "";
	int kmsg = kmsg_open_at_end();
	ASSERT_EQ(-ENODEV, load_module());
	kmsg_read(kmsg, log, sizeof(log));
	ASSERT_CONTAINS("dune: this CPU is not supported: dune.ko needs AMD SVM or Intel VT-x, and it has neither", log);
	ASSERT_NE(0, access("/dev/dune", F_OK));
}

TEST(dev_dune_abi_version_and_mode)
{
	ensure_loaded();
	struct stat sb;
	ASSERT_EQ(0, stat("/dev/dune", &sb));
	ASSERT_TRUE(S_ISCHR(sb.st_mode));
	ASSERT_EQ(0600u, sb.st_mode & 0777); /* until the udev rule gives it to group dune */
	int fd = open("/dev/dune", O_RDWR | O_CLOEXEC);
	ASSERT_LE(0, fd);
	ASSERT_EQ(DUNE_ABI_VERSION, ioctl(fd, DUNE_GET_ABI_VERSION));
	ASSERT_EQ(3, DUNE_ABI_VERSION);
	ASSERT_EQ(-1, ioctl(fd, _IO(DUNE_IOC_MAGIC, 0x7f)));
	ASSERT_EQ(ENOTTY, errno);
	close(fd);
}

/* ---- the hypervisor ---- */

TEST(guest_writes_process_memory_and_vmmcalls)
{
	ensure_loaded();
	struct guest g;
	const uint64_t pages = DATA_SIZE / 4096;
	guest_setup(&g, G_WRITE_PAGES, pages, NULL, 0);
	struct dune_module_stats before = stats_of(g.dune);
	struct dune_exit ex = run(&g);
	ASSERT_EXIT(DUNE_EXIT_VMMCALL, ex);
	ASSERT_EQ(0x81ull, ex.svm_exit_code); /* SVM_EXIT_VMMCALL */
	struct dune_regs r = regs_of(&g);
	ASSERT_EQ(0x600dull, r.rax);
	uint64_t sum = 0;
	for (uint64_t i = 0; i < pages; i++) {
		ASSERT_EQ(0x0d0e0000ull + i, g.data[i * 512]); /* seen by the host */
		sum += 0x0d0e0000ull + i;
	}
	ASSERT_EQ(sum, r.rbx);
	/* Each data page and the code/stack/table pages came through #NPF. */
	struct dune_module_stats after = stats_of(g.dune);
	ASSERT_LE(before.npt_faults + pages + 4, after.npt_faults);
	ASSERT_LT(before.vmruns, after.vmruns);
	/* Running again continues after the vmmcall: the hlt. */
	ex = run(&g);
	ASSERT_EXIT(DUNE_EXIT_HLT, ex);
	guest_close(&g);
}

TEST(npt_follows_the_process_mapping)
{
	ensure_loaded();
	struct guest g;
	volatile uint64_t *data = mmap(NULL, DATA_SIZE, PROT_READ | PROT_WRITE,
				       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ASSERT_NE(MAP_FAILED, (void *)data);
	data[0] = 0x1111;
	guest_setup(&g, G_REREAD, 0, data, 0);
	struct dune_exit ex = run(&g);
	ASSERT_EXIT(DUNE_EXIT_VMMCALL, ex);
	ASSERT_EQ(0x1111ull, regs_of(&g).rbx);
	struct dune_module_stats before = stats_of(g.dune);
	/* A new page at the same address: the guest must see it, not the old one. */
	void *again = mmap((void *)data, DATA_SIZE, PROT_READ | PROT_WRITE,
			   MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
	ASSERT_EQ((void *)data, again);
	data[0] = 0x2222;
	ex = run(&g);
	ASSERT_EXIT(DUNE_EXIT_VMMCALL, ex);
	ASSERT_EQ(2ull, regs_of(&g).rax);
	ASSERT_EQ(0x2222ull, regs_of(&g).rcx);
	ASSERT_LT(before.npt_zaps, stats_of(g.dune).npt_zaps);
	guest_close(&g);
	munmap((void *)data, DATA_SIZE);
}

static void *remap_page0_when_guest_spins(void *arg)
{
	volatile uint64_t *data = arg;
	for (int i = 0; i < 3000 && data[512] < 100000; i++)
		usleep(10000);
	/* The guest is spinning on page 0's old frame: replace the page. */
	void *p = mmap((void *)data, 4096, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
	if (p == (void *)data)
		data[0] = 0x2222;
	return p;
}

/* With 2 CPUs in the rig the zap must reach a vCPU in guest mode by IPI. */
TEST(npt_zap_reaches_a_running_vcpu)
{
	ensure_loaded();
	struct guest g;
	volatile uint64_t *data = mmap(NULL, DATA_SIZE, PROT_READ | PROT_WRITE,
				       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ASSERT_NE(MAP_FAILED, (void *)data);
	data[0] = 0x1111;
	guest_setup(&g, G_WAIT_VALUE, 0x2222, data, 0);
	struct dune_module_stats before = stats_of(g.dune);
	pthread_t t;
	ASSERT_EQ(0, pthread_create(&t, NULL, remap_page0_when_guest_spins, (void *)data));
	struct dune_exit ex = run(&g); /* spins forever if the guest keeps the old frame */
	void *remapped;
	pthread_join(t, &remapped);
	ASSERT_EQ((void *)data, remapped);
	ASSERT_EXIT(DUNE_EXIT_VMMCALL, ex);
	ASSERT_EQ(8ull, regs_of(&g).rax);
	ASSERT_LE(100000ull, regs_of(&g).rbx);
	ASSERT_LT(before.npt_zaps, stats_of(g.dune).npt_zaps);
	printf("# the guest spun %llu rounds; %ld CPUs\n",
	       (unsigned long long)regs_of(&g).rbx, sysconf(_SC_NPROCESSORS_ONLN));
	guest_close(&g);
	munmap((void *)data, DATA_SIZE);
}

/* Whether the process maps addr with a transparent huge page (smaps). */
static bool thp_backed(const void *addr)
{
	FILE *f = fopen("/proc/self/smaps", "re");
	char line[256];
	bool in_vma = false, huge = false;
	if (!f)
		return false;
	while (fgets(line, sizeof(line), f)) {
		unsigned long lo, hi, kb;
		if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2)
			in_vma = lo <= (uintptr_t)addr && (uintptr_t)addr < hi;
		else if (in_vma && sscanf(line, "AnonHugePages: %lu kB", &kb) == 1)
			huge = kb >= 2048;
	}
	fclose(f);
	return huge;
}

/* Runs guest `which` again from the start on g's vCPU. */
static void restart(struct guest *g, int which, uint64_t arg)
{
	struct dune_vcpu_state st;
	ASSERT_EQ(0, ioctl(g->vcpu, DUNE_VCPU_GET_STATE, &st));
	st.regs = entry_regs(which, arg);
	ASSERT_EQ(0, ioctl(g->vcpu, DUNE_VCPU_SET_STATE, &st));
}

/*
 * A huge page of the process is one 2 MiB NPT entry: the guest writing its
 * 512 small pages takes one nested page fault, not 512; and when the
 * process splits it (MADV_DONTNEED of one small page) the guest sees the
 * change.
 */
TEST(npt_maps_a_host_huge_page_with_one_entry)
{
	ensure_loaded();
	const size_t huge_size = 2ul << 20;
	uint8_t *res = mmap(NULL, 2 * huge_size, PROT_READ | PROT_WRITE,
			    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ASSERT_NE(MAP_FAILED, (void *)res);
	volatile uint64_t *huge = (volatile uint64_t *)(((uintptr_t)res + huge_size - 1) &
							~(huge_size - 1));
	madvise((void *)huge, huge_size, MADV_HUGEPAGE);
	huge[0] = 1;
	if (!thp_backed((const void *)huge)) {
		munmap(res, 2 * huge_size);
		SKIP(return, "no transparent huge page for an aligned 2 MiB (THP off?)");
	}
	struct guest g;
	guest_setup(&g, G_WRITE_PAGES, 512, NULL, 0);
	ASSERT_EQ(0, set_region(g.dune, 1, DATA_GPA, (const void *)huge, huge_size, 0));
	struct dune_module_stats before = stats_of(g.dune);
	ASSERT_EXIT(DUNE_EXIT_VMMCALL, run(&g));
	struct dune_module_stats after = stats_of(g.dune);
	struct dune_regs r = regs_of(&g);
	EXPECT_EQ(0x600dull, r.rax);
	EXPECT_EQ(512ull * 0x0d0e0000 + 511 * 512 / 2, r.rbx);
	long wrong = 0;
	for (int i = 0; i < 512; i++)
		wrong += huge[i * 512] != 0x0d0e0000ull + i;
	EXPECT_EQ(0, wrong);
	/* code, stack and page tables are small pages: a handful more */
	TH_LOG("512 small pages written: %llu nested page faults",
	       (unsigned long long)(after.npt_faults - before.npt_faults));
	EXPECT_LT(after.npt_faults - before.npt_faults, 32ull);
	EXPECT_TRUE(thp_backed((const void *)huge));

	madvise((void *)&huge[7 * 512], 4096, MADV_DONTNEED);
	huge[9 * 512] = 0x99;
	restart(&g, G_LOAD, DATA_VA + 7 * 4096);
	ASSERT_EXIT(DUNE_EXIT_VMMCALL, run(&g));
	EXPECT_EQ(0ull, regs_of(&g).rbx); /* the dropped page, not the old frame */
	restart(&g, G_LOAD, DATA_VA + 9 * 4096);
	ASSERT_EXIT(DUNE_EXIT_VMMCALL, run(&g));
	EXPECT_EQ(0x99ull, regs_of(&g).rbx);
	EXPECT_LT(after.npt_zaps, stats_of(g.dune).npt_zaps);
	guest_close(&g);
	munmap(res, 2 * huge_size);
}

TEST(npf_outside_every_region_exits_to_user)
{
	ensure_loaded();
	struct guest g;
	guest_setup(&g, G_LOAD, DATA_VA + (1u << 20), NULL, 0); /* gpa 4 GiB + 1 MiB */
	struct dune_exit ex = run(&g);
	ASSERT_EXIT(DUNE_EXIT_NPF, ex);
	ASSERT_EQ(DATA_GPA + (1u << 20), ex.gpa);
	ASSERT_EQ(0x400ull, ex.svm_exit_code); /* SVM_EXIT_NPF */
	ASSERT_EQ(0ull, ex.error_code & 2);    /* a read */
	guest_close(&g);
}

TEST(readonly_region_refuses_guest_writes)
{
	ensure_loaded();
	struct guest g;
	guest_setup(&g, G_STORE, DATA_VA + 8, NULL, DUNE_REGION_READONLY);
	g.data[1] = 77;
	struct dune_exit ex = run(&g);
	ASSERT_EXIT(DUNE_EXIT_NPF, ex);
	ASSERT_EQ(DATA_GPA, ex.gpa & ~0xfffull);
	ASSERT_EQ(2ull, ex.error_code & 2); /* a write */
	ASSERT_EQ(77ull, g.data[1]);
	guest_close(&g);
}

TEST(guest_cannot_reach_host_msrs_or_ports)
{
	ensure_loaded();
	struct guest g;
	guest_setup(&g, G_WRMSR, 0, NULL, 0);
	struct dune_exit ex = run(&g);
	ASSERT_EXIT(DUNE_EXIT_INTERCEPT, ex);
	ASSERT_EQ(0x7cull, ex.svm_exit_code); /* SVM_EXIT_MSR, at the rdmsr */
	guest_close(&g);
	/* An `out` reaches no device: an exit to user space, then on after it */
	guest_setup(&g, G_OUT, 0, NULL, 0);
	ex = run(&g);
	ASSERT_EXIT(DUNE_EXIT_IO, ex);
	ASSERT_EQ(0x7bull, ex.svm_exit_code); /* SVM_EXIT_IOIO */
	ASSERT_EQ(0x80, ex.port);
	ASSERT_EQ(1, ex.size);
	ASSERT_EQ(0x42ull, regs_of(&g).rax & 0xff);
	ASSERT_EXIT(DUNE_EXIT_VMMCALL, run(&g));
	ASSERT_EQ(6ull, regs_of(&g).rax);
	guest_close(&g);
}

TEST(triple_fault_is_a_shutdown_exit)
{
	ensure_loaded();
	struct guest g;
	guest_setup(&g, G_TRIPLE, 0, NULL, 0);
	struct dune_exit ex = run(&g);
	ASSERT_EXIT(DUNE_EXIT_SHUTDOWN, ex);
	memset(&ex, 0, sizeof(ex));
	ASSERT_EQ(-1, ioctl(g.vcpu, DUNE_VCPU_RUN, &ex));
	ASSERT_EQ(EINVAL, errno); /* a new state first */
	guest_close(&g);
}

/* A GDT (flat 64-bit code 0x08, data 0x10) and an IDT in region 0 whose
 * vector `vec` is an interrupt gate to the guest.S label `handler`, loaded
 * into vCPU `vcpu` of g's VM. */
static void guest_tables(struct guest *g, int vcpu, unsigned int vec, const char *handler)
{
	uint64_t *gdt = (uint64_t *)(g->mem + 0x5000), *idt = (uint64_t *)(g->mem + 0x6000);
	uint64_t at = guest_addr(handler);
	gdt[1] = 0x00af9b000000ffffull; /* the 64-bit code segment, selector 0x08 */
	gdt[2] = 0x00cf93000000ffffull;
	idt[2 * vec] = (at & 0xffff) | (0x08ull << 16) | (0x8e00ull << 32) |
		       ((at >> 16 & 0xffff) << 48); /* interrupt gate */
	idt[2 * vec + 1] = at >> 32;
	struct dune_vcpu_state st;
	ASSERT_EQ(0, ioctl(vcpu, DUNE_VCPU_GET_STATE, &st));
	st.sregs.gdt_base = 0x5000, st.sregs.gdt_limit = 3 * 8 - 1;
	st.sregs.idt_base = 0x6000, st.sregs.idt_limit = 256 * 16 - 1;
	ASSERT_EQ(0, ioctl(vcpu, DUNE_VCPU_SET_STATE, &st));
}

/*
 * The APM (15.7.2) has the hypervisor deliver again an event whose
 * delivery an intercept stopped: here a single-step #DB whose frame goes
 * to a page the NPT does not have yet.  Lost, the trap would come one
 * instruction late (TF is still set), at the wrong RIP.
 */
TEST(event_stopped_by_a_nested_page_fault_is_delivered_after_it)
{
	ensure_loaded();
	struct guest g;
	const uint64_t fresh_stack_top = 1ull << 20; /* untouched until the trap */
	guest_setup(&g, G_SINGLE_STEP, fresh_stack_top, NULL, 0);
	guest_tables(&g, g.vcpu, 1, kmod_guest_db_handler); /* #DB */
	/* the frame's page is not even in the process yet, so not in the NPT */
	unsigned char resident = 1;
	ASSERT_EQ(0, mincore(g.mem + fresh_stack_top - 4096, 4096, &resident));
	ASSERT_EQ(0, resident & 1);

	ASSERT_EXIT(DUNE_EXIT_VMMCALL, run(&g));
	struct dune_regs r = regs_of(&g);
	EXPECT_EQ(0xdbull, r.rax);
	EXPECT_EQ(guest_addr(kmod_guest_stepped), r.rbx);
	guest_close(&g);
}

/* ---- interrupts between vCPUs ---- */

#define IPI_VECTOR 0xf2
/* the x2APIC ICR: destination, assert, fixed delivery of vector */
#define ICR(dest, vector) ((uint64_t)(dest) << 32 | 0x4000 | (vector))

/* g's VM with a vCPU that takes interrupts (G_TAKE_IPIS until `count`
 * handled), APIC ID 5, and a second one that sends `icr` (G_SEND_IPI),
 * APIC ID 6, in *sender. */
static void ipi_setup(struct guest *g, uint64_t count, uint64_t icr, struct guest *sender)
{
	guest_setup(g, G_TAKE_IPIS, count, NULL, 0);
	guest_tables(g, g->vcpu, IPI_VECTOR, kmod_guest_ipi_handler);
	ASSERT_EQ(0, ioctl(g->vcpu, DUNE_VCPU_SET_APIC_ID, 5));
	*sender = *g;
	sender->vcpu = ioctl(g->dune, DUNE_CREATE_VCPU);
	ASSERT_LE(0, sender->vcpu);
	struct dune_vcpu_state st;
	ASSERT_EQ(0, ioctl(g->vcpu, DUNE_VCPU_GET_STATE, &st));
	st.regs = entry_regs(G_SEND_IPI, icr);
	ASSERT_EQ(0, ioctl(sender->vcpu, DUNE_VCPU_SET_STATE, &st));
	ASSERT_EQ(0, ioctl(sender->vcpu, DUNE_VCPU_SET_APIC_ID, 6));
}

/* The sender's run: its ICR write, then vmmcall 12; ready to send again. */
static void ipi_send(struct guest *sender, uint64_t icr)
{
	ASSERT_EXIT(DUNE_EXIT_VMMCALL, run(sender));
	ASSERT_EQ(12ull, regs_of(sender).rax);
	struct dune_vcpu_state st;
	ASSERT_EQ(0, ioctl(sender->vcpu, DUNE_VCPU_GET_STATE, &st));
	st.regs = entry_regs(G_SEND_IPI, icr);
	ASSERT_EQ(0, ioctl(sender->vcpu, DUNE_VCPU_SET_STATE, &st));
}

struct ipi_receiver {
	struct guest *g;
	struct dune_exit ex;
};

static void *ipi_receive(void *arg)
{
	struct ipi_receiver *r = arg;
	r->ex = run(r->g);
	return NULL;
}

/* Until the receiver has counted `rounds` rounds (its second data page),
 * or `handled` interrupts (data[2]), for at most `seconds`. */
static bool ipi_wait(struct guest *g, uint64_t rounds, uint64_t handled, int seconds)
{
	for (int i = 0; i < seconds * 100; i++) {
		if ((rounds && g->data[512] >= rounds) || (handled && g->data[2] >= handled))
			return true;
		usleep(10000);
	}
	return false;
}

/* The sender's write does not leave the kernel; the receiver, spinning in
 * guest code on the other CPU, takes the vector at once through its IDT. */
TEST(ipi_reaches_a_vcpu_running_guest_code)
{
	ensure_loaded();
	struct guest g, sender;
	ipi_setup(&g, 1, ICR(5, IPI_VECTOR), &sender);
	struct dune_module_stats before = stats_of(g.dune);
	struct ipi_receiver r = {.g = &g};
	pthread_t t;
	ASSERT_EQ(0, pthread_create(&t, NULL, ipi_receive, &r));
	ASSERT_TRUE(ipi_wait(&g, 1000, 0, 60)); /* it spins in the guest */
	ipi_send(&sender, ICR(5, IPI_VECTOR));
	bool taken = ipi_wait(&g, 0, 1, 60);
	g.data[3] = 1; /* stops it if the interrupt was lost */
	pthread_join(t, NULL);
	struct dune_module_stats after = stats_of(g.dune);
	ASSERT_TRUE(taken);
	ASSERT_EXIT(DUNE_EXIT_VMMCALL, r.ex);
	EXPECT_EQ(11ull, regs_of(&g).rax);
	EXPECT_EQ(1ull, regs_of(&g).rbx);
	EXPECT_EQ(1ull, after.ipis - before.ipis);
	printf("# %llu rounds before the stop; %ld CPUs\n",
	       (unsigned long long)g.data[512], sysconf(_SC_NPROCESSORS_ONLN));
	close(sender.vcpu);
	guest_close(&g);
}

/* Sent twice before the receiver ever ran: it takes the vector when it
 * enters, and once (a vector pending is pending once, as in an APIC). */
TEST(ipi_waits_for_a_vcpu_outside_the_guest_and_is_taken_once)
{
	ensure_loaded();
	struct guest g, sender;
	ipi_setup(&g, 2, ICR(5, IPI_VECTOR), &sender);
	ipi_send(&sender, ICR(5, IPI_VECTOR));
	ipi_send(&sender, ICR(5, IPI_VECTOR));
	EXPECT_EQ(0ull, g.data[2]);
	struct ipi_receiver r = {.g = &g};
	pthread_t t;
	ASSERT_EQ(0, pthread_create(&t, NULL, ipi_receive, &r));
	/* a second interrupt, if there were one, would come at the first
	 * entry too; these rounds are long after it */
	ipi_wait(&g, 1000000, 2, 60);
	g.data[3] = 1;
	pthread_join(t, NULL);
	ASSERT_EXIT(DUNE_EXIT_VMMCALL, r.ex);
	EXPECT_EQ(11ull, regs_of(&g).rax);
	EXPECT_EQ(1ull, regs_of(&g).rbx);
	close(sender.vcpu);
	guest_close(&g);
}

/* An ICR the module does not take (a shorthand, another delivery mode, a
 * vector below 32) is the guest's exit to user space, as any other MSR
 * write; one to an APIC ID nobody has is dropped. */
TEST(ipi_forms_the_module_does_not_take_exit_to_user_space)
{
	ensure_loaded();
	static const uint64_t refused[] = {
		ICR(5, IPI_VECTOR) | 3u << 18, /* all excluding self */
		ICR(5, IPI_VECTOR) | 1u << 8,  /* lowest priority */
		ICR(5, IPI_VECTOR) | 1u << 11, /* logical destination */
		ICR(5, 0x10),
	};
	for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
		struct guest g, sender;
		ipi_setup(&g, 1, refused[i], &sender);
		struct dune_exit ex = run(&sender);
		ASSERT_EXIT(DUNE_EXIT_INTERCEPT, ex);
		EXPECT_EQ(0x7cull, ex.svm_exit_code); /* MSR */
		EXPECT_EQ(1ull, ex.info1);            /* a write */
		close(sender.vcpu);
		guest_close(&g);
	}
	struct guest g, sender;
	ipi_setup(&g, 1, ICR(77, IPI_VECTOR), &sender);
	struct dune_module_stats before = stats_of(g.dune);
	ipi_send(&sender, ICR(77, IPI_VECTOR));
	EXPECT_EQ(before.ipis, stats_of(g.dune).ipis);
	close(sender.vcpu);
	guest_close(&g);
}

TEST(apic_ids_are_unique_in_a_vm_and_set_once)
{
	ensure_loaded();
	struct guest g;
	guest_setup(&g, G_WRITE_PAGES, 1, NULL, 0);
	int other = ioctl(g.dune, DUNE_CREATE_VCPU);
	ASSERT_LE(0, other);
	ASSERT_EQ(0, ioctl(g.vcpu, DUNE_VCPU_SET_APIC_ID, 5));
	EXPECT_EQ(-1, ioctl(g.vcpu, DUNE_VCPU_SET_APIC_ID, 6));
	EXPECT_EQ(EBUSY, errno);
	EXPECT_EQ(-1, ioctl(other, DUNE_VCPU_SET_APIC_ID, 5));
	EXPECT_EQ(EEXIST, errno);
	EXPECT_EQ(-1, ioctl(other, DUNE_VCPU_SET_APIC_ID, (unsigned long)DUNE_APIC_ID_NONE));
	EXPECT_EQ(EINVAL, errno);
	EXPECT_EQ(-1, ioctl(other, DUNE_VCPU_SET_APIC_ID, 1ul << 40));
	EXPECT_EQ(EINVAL, errno);
	/* another VM has IDs of its own */
	struct guest h;
	guest_setup(&h, G_WRITE_PAGES, 1, NULL, 0);
	EXPECT_EQ(0, ioctl(h.vcpu, DUNE_VCPU_SET_APIC_ID, 5));
	guest_close(&h);
	/* a closed vCPU's ID is free again */
	close(g.vcpu);
	g.vcpu = other;
	EXPECT_EQ(0, ioctl(other, DUNE_VCPU_SET_APIC_ID, 5));
	guest_close(&g);
}

static volatile uint64_t *spin_data;
static volatile int alarms;
static void on_alarm(int sig)
{
	(void)sig;
	if (++alarms >= 3)
		spin_data[1] = 1; /* the guest stops spinning */
}

TEST(signal_ends_the_run_with_eintr_and_run_continues)
{
	ensure_loaded();
	struct guest g;
	guest_setup(&g, G_SPIN, 0, NULL, 0);
	spin_data = g.data;
	struct sigaction sa = {.sa_handler = on_alarm}; /* no SA_RESTART */
	sigaction(SIGALRM, &sa, NULL);
	struct itimerval it = {{0, 100000}, {0, 100000}};
	setitimer(ITIMER_REAL, &it, NULL);
	struct dune_exit ex = {0};
	int eintr = 0, r;
	uint64_t last = 0;
	bool grew = true;
	int alarms_seen = 0;
	while ((r = ioctl(g.vcpu, DUNE_VCPU_RUN, &ex)) < 0 && errno == EINTR) {
		eintr++;
		/* the guest ran between signals (an EINTR may also come from
		 * task work or rseq, without a signal and maybe without a run) */
		if (alarms != alarms_seen) {
			grew = grew && g.data[0] > last;
			last = g.data[0];
			alarms_seen = alarms;
		}
	}
	memset(&it, 0, sizeof(it));
	setitimer(ITIMER_REAL, &it, NULL);
	ASSERT_EQ(0, r);
	ASSERT_EXIT(DUNE_EXIT_VMMCALL, ex);
	ASSERT_EQ(3ull, regs_of(&g).rax);
	ASSERT_LE(3, eintr);
	ASSERT_TRUE(grew);
	/* it went on from where the last signal stopped it (a reset state
	 * would start again from 0); under an emulator that stops it between
	 * any two instructions (Bochs), possibly right before the check */
	ASSERT_LE(last, regs_of(&g).rbx);
	guest_close(&g);
}

TEST(descriptors_are_useless_in_another_process)
{
	ensure_loaded();
	struct guest g;
	guest_setup(&g, G_WRITE_PAGES, 1, NULL, 0);
	pid_t pid = fork();
	ASSERT_LE(0, pid);
	if (pid == 0) {
		struct dune_exit ex = {0};
		int ok = ioctl(g.vcpu, DUNE_VCPU_RUN, &ex) == -1 && errno == EPERM &&
			 set_region(g.dune, 2, 8ull << 30, g.mem, 4096, 0) == -1 && errno == EPERM &&
			 ioctl(g.dune, DUNE_CREATE_VCPU) == -1 && errno == EPERM;
		_exit(ok ? 0 : 1);
	}
	int status;
	ASSERT_EQ(pid, waitpid(pid, &status, 0));
	ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	ASSERT_EXIT(DUNE_EXIT_VMMCALL, run(&g)); /* still the parent's */
	guest_close(&g);
}

TEST(sigkill_in_the_guest_leaves_the_module_usable)
{
	ensure_loaded();
	volatile uint64_t *data = mmap(NULL, DATA_SIZE, PROT_READ | PROT_WRITE,
				       MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	ASSERT_NE(MAP_FAILED, (void *)data);
	pid_t pid = fork();
	ASSERT_LE(0, pid);
	if (pid == 0) {
		struct guest g;
		guest_setup(&g, G_SPIN, 0, data, 0);
		run(&g);
		_exit(3); /* never: nothing stops the spin */
	}
	for (int i = 0; i < 3000 && data[0] < 1000; i++)
		usleep(10000);
	ASSERT_LE(1000ull, data[0]); /* the child is in the guest */
	kill(pid, SIGKILL);
	int status;
	ASSERT_EQ(pid, waitpid(pid, &status, 0));
	ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);

	int fd = open("/dev/dune", O_RDWR | O_CLOEXEC);
	ASSERT_LE(0, fd);
	struct dune_module_stats st = stats_of(fd);
	ASSERT_EQ(1ull, st.live_vms);   /* fd itself */
	ASSERT_EQ(0ull, st.live_vcpus);
	ASSERT_EQ(1ull, st.live_pages); /* fd's NPT root */
	close(fd);

	struct guest g;
	guest_setup(&g, G_WRITE_PAGES, 4, NULL, 0);
	ASSERT_EXIT(DUNE_EXIT_VMMCALL, run(&g));
	ASSERT_EQ(0x0d0e0003ull, g.data[3 * 512]);
	guest_close(&g);
}

TEST(kvm_and_dune_take_turns_at_svm)
{
	ensure_loaded();
	int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (kvm < 0)
		SKIP(return, "no /dev/kvm in this kernel");
	struct guest g;
	guest_setup(&g, G_WRITE_PAGES, 1, NULL, 0);
	ASSERT_EXIT(DUNE_EXIT_VMMCALL, run(&g)); /* dune.ko has SVM (VMX) now */
	ASSERT_EQ(-1, ioctl(kvm, KVM_CREATE_VM, 0));
	/* 6.1's KVM says EBUSY; since 6.12 it enables SVM through CPU-hotplug
	 * callbacks, and a CPU where that fails is EIO. */
	ASSERT_EQ(kernel_at_least(6, 12) ? EIO : EBUSY, errno);
	guest_close(&g); /* the last VM: SVM is off again */
	int kvm_vm = ioctl(kvm, KVM_CREATE_VM, 0);
	ASSERT_LE(0, kvm_vm);
	guest_setup(&g, G_WRITE_PAGES, 1, NULL, 0);
	struct dune_exit ex = {0};
	ASSERT_EQ(-1, ioctl(g.vcpu, DUNE_VCPU_RUN, &ex));
	ASSERT_EQ(EBUSY, errno);
	guest_close(&g);
	close(kvm_vm);
	close(kvm);
}

static int set_syscalls(int dune, uint32_t port, uint64_t allowed[8])
{
	struct dune_syscalls sc = {.port = port};
	memcpy(sc.allowed, allowed, sizeof(sc.allowed));
	int r = ioctl(dune, DUNE_SET_SYSCALLS, &sc);
	memcpy(allowed, sc.allowed, sizeof(sc.allowed));
	return r;
}

static bool bit_set(const uint64_t *bits, unsigned int nr)
{
	return (bits[nr / 64] >> (nr % 64)) & 1;
}

/* The guest's system call `nr`(a, b, c) through G_SYSCALL's `out 0xd0`. */
static void guest_syscall_setup(struct guest *g, long nr, uint64_t a, uint64_t b, uint64_t c)
{
	guest_setup(g, G_SYSCALL, nr, NULL, 0);
	struct dune_vcpu_state st;
	ASSERT_EQ(0, ioctl(g->vcpu, DUNE_VCPU_GET_STATE, &st));
	st.regs.r12 = a, st.regs.r13 = b, st.regs.r14 = c;
	ASSERT_EQ(0, ioctl(g->vcpu, DUNE_VCPU_SET_STATE, &st));
}

TEST(allowed_system_calls_run_in_the_kernel)
{
	ensure_loaded();
	struct guest g;
	uint64_t all[8];
	memset(all, 0xff, sizeof(all));
	guest_syscall_setup(&g, SYS_getpid, 0, 0, 0);
	/* the module keeps the calls it never runs for the guest out */
	ASSERT_EQ(0, set_syscalls(g.dune, 0xd0, all));
	EXPECT_TRUE(bit_set(all, SYS_getpid));
	EXPECT_TRUE(bit_set(all, SYS_write));
	EXPECT_FALSE(bit_set(all, SYS_ioctl));
	EXPECT_FALSE(bit_set(all, SYS_clone));
	EXPECT_FALSE(bit_set(all, SYS_execve));
	EXPECT_FALSE(bit_set(all, SYS_exit_group));
	EXPECT_FALSE(bit_set(all, SYS_rt_sigreturn));
	EXPECT_FALSE(bit_set(all, SYS_close));
	EXPECT_FALSE(bit_set(all, SYS_rseq));
	EXPECT_FALSE(bit_set(all, 511));
	struct dune_module_stats before = stats_of(g.dune);
	ASSERT_EXIT(DUNE_EXIT_VMMCALL, run(&g)); /* no exit at the `out` */
	struct dune_regs r = regs_of(&g);
	EXPECT_EQ((uint64_t)getpid(), r.rax);
	EXPECT_EQ(1ull, r.rcx);
	EXPECT_LT(before.syscalls, stats_of(g.dune).syscalls);
	guest_close(&g);

	/* write(2) to a pipe, from the process's own buffer */
	int p[2];
	ASSERT_EQ(0, pipe(p));
	static char msg[] = "from the guest";
	guest_syscall_setup(&g, SYS_write, p[1], (uintptr_t)msg, sizeof(msg));
	memset(all, 0xff, sizeof(all));
	ASSERT_EQ(0, set_syscalls(g.dune, 0xd0, all));
	ASSERT_EXIT(DUNE_EXIT_VMMCALL, run(&g));
	EXPECT_EQ(sizeof(msg), regs_of(&g).rax);
	char got[sizeof(msg)] = "";
	ASSERT_EQ((ssize_t)sizeof(msg), read(p[0], got, sizeof(got)));
	EXPECT_STREQ(msg, got);
	guest_close(&g);

	/* a call not in the set, and the feature off: exits to user space */
	guest_syscall_setup(&g, SYS_getppid, 0, 0, 0);
	uint64_t only_getpid[8] = {0};
	only_getpid[SYS_getpid / 64] = 1ull << (SYS_getpid % 64);
	ASSERT_EQ(0, set_syscalls(g.dune, 0xd0, only_getpid));
	struct dune_exit ex = run(&g);
	ASSERT_EXIT(DUNE_EXIT_IO, ex);
	EXPECT_EQ(0xd0, ex.port);
	EXPECT_EQ(0u, ex.flags);
	EXPECT_EQ(0ull, regs_of(&g).rcx);
	EXPECT_EQ((uint64_t)SYS_getppid, regs_of(&g).rax);
	guest_close(&g);
	guest_syscall_setup(&g, SYS_getpid, 0, 0, 0);
	memset(all, 0xff, sizeof(all));
	ASSERT_EQ(0, set_syscalls(g.dune, 0, all));
	EXPECT_EQ(0ull, all[0] | all[1] | all[7]);
	ASSERT_EXIT(DUNE_EXIT_IO, run(&g));
	/* malformed */
	struct dune_syscalls sc = {.port = 0x100};
	EXPECT_EQ(-1, ioctl(g.dune, DUNE_SET_SYSCALLS, &sc));
	EXPECT_EQ(EINVAL, errno);
	sc.port = 0xd0, sc.flags = 1;
	EXPECT_EQ(-1, ioctl(g.dune, DUNE_SET_SYSCALLS, &sc));
	EXPECT_EQ(EINVAL, errno);
	EXPECT_EQ(-1, ioctl(g.dune, DUNE_SET_SYSCALLS, (void *)16));
	EXPECT_EQ(EFAULT, errno);
	guest_close(&g);
	close(p[0]);
	close(p[1]);
}

static volatile int interrupting_alarms;
static void on_interrupting_alarm(int sig)
{
	(void)sig;
	interrupting_alarms++;
}

TEST(interrupted_system_call_goes_to_user_space)
{
	ensure_loaded();
	int p[2];
	ASSERT_EQ(0, pipe(p));
	static char buf[8];
	struct guest g;
	guest_syscall_setup(&g, SYS_read, p[0], (uintptr_t)buf, sizeof(buf));
	uint64_t all[8];
	memset(all, 0xff, sizeof(all));
	ASSERT_EQ(0, set_syscalls(g.dune, 0xd0, all));
	struct sigaction sa = {.sa_handler = on_interrupting_alarm}; /* no SA_RESTART */
	sigaction(SIGALRM, &sa, NULL);
	struct itimerval it = {{0, 0}, {0, 200000}};
	setitimer(ITIMER_REAL, &it, NULL);
	/* the read blocks in the kernel until the alarm */
	struct dune_exit ex = run(&g);
	ASSERT_EXIT(DUNE_EXIT_IO, ex);
	EXPECT_EQ(0xd0, ex.port);
	EXPECT_EQ((uint32_t)DUNE_EXIT_F_SYSCALL_INTERRUPTED, ex.flags);
	EXPECT_EQ(1, interrupting_alarms);
	EXPECT_EQ(0ull, regs_of(&g).rcx); /* not made: user space decides */
	guest_close(&g);
	close(p[0]);
	close(p[1]);
}

TEST(immediate_exit_returns_eintr_before_the_guest_runs)
{
	ensure_loaded();
	struct guest g;
	guest_setup(&g, G_WRITE_PAGES, 1, NULL, 0);
	struct dune_module_stats before = stats_of(g.dune);
	struct dune_exit ex = {.immediate_exit = 1};
	ASSERT_EQ(-1, ioctl(g.vcpu, DUNE_VCPU_RUN, &ex));
	ASSERT_EQ(EINTR, errno);
	ASSERT_EQ(before.vmruns, stats_of(g.dune).vmruns);
	ASSERT_EQ(0ull, g.data[0]);
	ASSERT_EXIT(DUNE_EXIT_VMMCALL, run(&g));
	ASSERT_EQ(0x0d0e0000ull, g.data[0]);
	guest_close(&g);
}

TEST(guest_tss_is_set_and_checked)
{
	ensure_loaded();
	struct guest g;
	guest_setup(&g, G_WRITE_PAGES, 1, NULL, 0);
	struct dune_vcpu_state st;
	ASSERT_EQ(0, ioctl(g.vcpu, DUNE_VCPU_GET_STATE, &st));
	ASSERT_EQ(0x67u, st.sregs.tr_limit);
	st.sregs.tr_base = 0x6000;
	ASSERT_EQ(0, ioctl(g.vcpu, DUNE_VCPU_SET_STATE, &st));
	ASSERT_EQ(0, ioctl(g.vcpu, DUNE_VCPU_GET_STATE, &st));
	ASSERT_EQ(0x6000ull, st.sregs.tr_base);
	st.sregs.tr_limit = 0x20; /* smaller than a 64-bit TSS */
	ASSERT_EQ(-1, ioctl(g.vcpu, DUNE_VCPU_SET_STATE, &st));
	ASSERT_EQ(EINVAL, errno);
	st.sregs.tr_limit = 0x67;
	st.sregs.tr_base = 0x0000800000000000ull; /* not canonical */
	ASSERT_EQ(-1, ioctl(g.vcpu, DUNE_VCPU_SET_STATE, &st));
	ASSERT_EQ(EINVAL, errno);
	guest_close(&g);
}

/* ---- robustness ---- */

TEST(load_unload_20_times_nothing_leaked)
{
	ensure_loaded();
	static char log[1 << 17];
	log[0] = 0;
	int kmsg = kmsg_open_at_end();
	for (int i = 0; i < 20; i++) {
		ASSERT_EQ(0, unload_module());
		ASSERT_EQ(0, load_module());
		struct guest g;
		guest_setup(&g, G_WRITE_PAGES, 1 + i % 16, NULL, 0);
		ASSERT_EXIT(DUNE_EXIT_VMMCALL, run(&g));
		struct dune_module_stats st = stats_of(g.dune);
		ASSERT_EQ(1ull, st.live_vms);
		ASSERT_EQ(1ull, st.live_vcpus);
		ASSERT_LT(3ull, st.live_pages); /* VMCB, NPT root and tables */
		guest_close(&g);
		munmap((void *)g.data, DATA_SIZE);
	}
	ASSERT_EQ(0, unload_module());
	kmsg_read(kmsg, log, sizeof(log));
	/* 21 unloads: the one before each of the 20 loads, and the last */
	EXPECT_EQ(21, count_substr(log, "dune: unloaded, nothing leaked"));
	char loaded[64];
	snprintf(loaded, sizeof(loaded), "dune: loaded: /dev/dune ABI %d", DUNE_ABI_VERSION);
	EXPECT_EQ(20, count_substr(log, loaded));
	assert_log_clean(log);
	ASSERT_EQ(0, load_module());
}

static uint64_t rnd_state;
static uint64_t rnd(void)
{
	rnd_state ^= rnd_state << 13;
	rnd_state ^= rnd_state >> 7;
	rnd_state ^= rnd_state << 17;
	return rnd_state;
}

static void on_fuzz_alarm(int sig)
{
	(void)sig;
}

/* A pointer of some kind: valid, NULL, unmapped, kernel, straddling, odd. */
static void *fuzz_pointer(uint8_t *buf, size_t buf_size, uint8_t *guard)
{
	switch (rnd() % 8) {
	case 0: return NULL;
	case 1: return (void *)0xffff888000000000ull;
	case 2: return guard - 8 - (rnd() % 64);      /* runs into PROT_NONE */
	case 3: return (void *)(uintptr_t)rnd();
	case 4: return buf + 1;
	default: return buf + (rnd() % (buf_size / 2));
	}
}

TEST(seeded_fuzz_of_malformed_ioctls_leaves_the_kernel_healthy)
{
	ensure_loaded();
	const char *s = getenv("DUNE_FUZZ_SEED");
	uint64_t seed = s ? strtoull(s, NULL, 0) : 0x5eed10;
	const int iterations = getenv("DUNE_FUZZ_N") ? atoi(getenv("DUNE_FUZZ_N")) : 6000;
	rnd_state = seed | 1;
	printf("# fuzz: seed 0x%llx, %d calls (DUNE_FUZZ_SEED, DUNE_FUZZ_N)\n",
	       (unsigned long long)seed, iterations);
	static char log[1 << 17];
	log[0] = 0;
	int kmsg = kmsg_open_at_end();

	/* buf, then a PROT_NONE page right after it */
	size_t buf_size = 4 * 4096;
	uint8_t *buf = mmap(NULL, buf_size + 4096, PROT_READ | PROT_WRITE,
			    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ASSERT_NE(MAP_FAILED, (void *)buf);
	mprotect(buf + buf_size, 4096, PROT_NONE);
	struct sigaction sa = {.sa_handler = on_fuzz_alarm};
	sigaction(SIGALRM, &sa, NULL);
	struct itimerval it = {{0, 20000}, {0, 20000}}; /* random guests may spin */
	setitimer(ITIMER_REAL, &it, NULL);

	static const unsigned long cmds[] = {
		DUNE_GET_ABI_VERSION, DUNE_SET_REGION, DUNE_CREATE_VCPU, DUNE_GET_STATS,
		DUNE_VCPU_GET_STATE, DUNE_VCPU_SET_STATE, DUNE_VCPU_RUN, DUNE_SET_SYSCALLS,
		DUNE_VCPU_SET_APIC_ID,
	};
	const unsigned int ncmds = sizeof(cmds) / sizeof(cmds[0]);
	struct guest g;
	guest_setup(&g, G_WRITE_PAGES, 4, NULL, 0);
	int vcpus[8] = {g.vcpu, -1, -1, -1, -1, -1, -1, -1};
	struct dune_vcpu_state good_state;
	ASSERT_EQ(0, ioctl(g.vcpu, DUNE_VCPU_GET_STATE, &good_state));
	struct dune_module_stats fuzz_start = stats_of(g.dune);
	long ok_calls = 0, failed_calls = 0;
	for (int i = 0; i < iterations; i++) {
		for (size_t k = 0; k < buf_size; k += 8)
			*(uint64_t *)(buf + k) = rnd() % 3 ? rnd() : rnd() % 0x10000;
		unsigned long cmd = cmds[rnd() % ncmds];
		switch (rnd() % 6) {
		case 0: /* wrong size or direction */
			cmd ^= (unsigned long)(rnd() % 0x3fff) << _IOC_SIZESHIFT;
			break;
		case 1:
			cmd ^= (unsigned long)(1 + rnd() % 3) << _IOC_DIRSHIFT;
			break;
		case 2: /* another number */
			cmd = _IOC(rnd() % 4, DUNE_IOC_MAGIC, rnd() % 256, rnd() % 512);
			break;
		default:
			break;
		}
		void *arg = fuzz_pointer(buf, buf_size, buf + buf_size);
		/* Plausible regions over our own memory, now and then. */
		if ((cmd == DUNE_SET_REGION) && rnd() % 2 && arg >= (void *)buf &&
		    arg < (void *)(buf + buf_size / 2)) {
			struct dune_region *r = arg;
			r->slot = rnd() % 70;
			r->flags = rnd() % 4 ? 0 : (uint32_t)rnd();
			r->guest_phys = (rnd() % 16) << 21;
			r->user_addr = (uintptr_t)(rnd() % 2 ? (uint8_t *)g.data : buf) + (rnd() % 3) * 4096;
			r->size = (rnd() % 5) * 4096;
		}
		/* A valid state with one bit flipped, then a run of it, now and then. */
		if (cmd == DUNE_VCPU_SET_STATE && rnd() % 2 && arg >= (void *)buf &&
		    arg < (void *)(buf + buf_size / 2)) {
			memcpy(arg, &good_state, sizeof(good_state));
			((uint64_t *)arg)[rnd() % (sizeof(good_state) / 8)] ^= 1ull << (rnd() % 64);
		}
		/* In-kernel system calls with random ports and flags, but only
		 * getpid: a flipped guest could reach an `out` with any number. */
		if (cmd == DUNE_SET_SYSCALLS && arg >= (void *)buf &&
		    arg < (void *)(buf + buf_size / 2)) {
			struct dune_syscalls *sc = arg;
			memset(sc->allowed, 0, sizeof(sc->allowed));
			sc->allowed[SYS_getpid / 64] = 1ull << (SYS_getpid % 64);
			if (rnd() % 2)
				sc->port = 0xd0, sc->flags = rnd() % 4 ? 0 : (uint32_t)rnd();
		}
		int fd = rnd() % 3 == 0 ? g.dune : vcpus[rnd() % 8];
		if (fd < 0)
			fd = g.vcpu;
		long r = ioctl(fd, cmd, arg);
		if (r >= 0 && cmd == DUNE_CREATE_VCPU) {
			int slot = 1 + rnd() % 7;
			if (vcpus[slot] >= 0)
				close(vcpus[slot]);
			vcpus[slot] = (int)r;
		}
		if (r >= 0)
			ok_calls++;
		else
			failed_calls++;
	}
	memset(&it, 0, sizeof(it));
	setitimer(ITIMER_REAL, &it, NULL);
	for (int k = 1; k < 8; k++)
		if (vcpus[k] >= 0)
			close(vcpus[k]);
	struct dune_module_stats fuzz_end = stats_of(g.dune);
	guest_close(&g);
	printf("# fuzz: %ld calls succeeded, %ld failed; %llu guest entries, %llu nested page faults filled\n",
	       ok_calls, failed_calls,
	       (unsigned long long)(fuzz_end.vmruns - fuzz_start.vmruns),
	       (unsigned long long)(fuzz_end.npt_faults - fuzz_start.npt_faults));
	ASSERT_LT(0, failed_calls);
	ASSERT_LT(fuzz_start.vmruns, fuzz_end.vmruns); /* guests did run */

	int fd = open("/dev/dune", O_RDWR | O_CLOEXEC);
	ASSERT_LE(0, fd);
	struct dune_module_stats st = stats_of(fd);
	ASSERT_EQ(1ull, st.live_vms);
	ASSERT_EQ(0ull, st.live_vcpus);
	ASSERT_EQ(1ull, st.live_pages);
	close(fd);
	kmsg_read(kmsg, log, sizeof(log));
	assert_log_clean(log);

	/* And a well-formed guest still runs. */
	guest_setup(&g, G_WRITE_PAGES, 16, NULL, 0);
	ASSERT_EXIT(DUNE_EXIT_VMMCALL, run(&g));
	ASSERT_EQ(0x0d0e000full, g.data[15 * 512]);
	guest_close(&g);
}

TEST(kernel_log_has_no_oops_or_warning)
{
	/* The log since boot (records are read from the start). */
	static char log[1 << 20];
	log[0] = 0;
	int fd = open("/dev/kmsg", O_RDONLY | O_NONBLOCK | O_CLOEXEC);
	ASSERT_LE(0, fd);
	kmsg_read(fd, log, sizeof(log));
	close(fd);
	ASSERT_LT(0, (int)strlen(log));
	/* From dune.ko's first message on: what the kernel said before
	 * (6.12 under Bochs WARNs about the emulated CPU's topology at boot)
	 * is not the module's doing. */
	const char *from = strstr(log, "dune: ");
	if (!from)
		from = log;
	while (from > log && from[-1] != '\n')
		from--;
	assert_log_clean(from);
}

TEST_HARNESS_MAIN
