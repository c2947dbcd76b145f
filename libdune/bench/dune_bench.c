/* SPDX-License-Identifier: MIT */
/*
 * libdune measurements (make bench-libdune; runs inside the QEMU rig):
 * a null system call on the host and in the guest, a guest PTE write +
 * invlpg, and a #PF round trip through the guest IDT, on the device
 * DUNE_DEVICE picks.
 *
 * dune_bench --compare-getpid [N]: getpid() per call on the host, in the
 * guest over /dev/kvm and in the guest over /dev/dune, one process after
 * the other (a KVM VM and dune.ko cannot hold SVM at once), and the ratio
 * kvm/dune (make bench-dune: in the rig, with dune.ko loaded).
 *
 * dune_bench --compare-touch [MIB]: the first write to each 4 KiB page of
 * MIB MiB of fresh memory (2 MiB aligned, MADV_HUGEPAGE), per page, on the
 * host and in the guest over both devices: what a nested page fault costs
 * each, and how many 2 MiB entries save.
 */
#include "dune.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <signal.h>

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec * 1e9 + t.tv_nsec;
}

static double null_syscall(long n)
{
	double t = now();
	for (long i = 0; i < n; i++)
		syscall(SYS_getppid);
	return (now() - t) / n;
}

static double clock_loop(long n)
{
	struct timespec ts;
	double t = now();
	for (long i = 0; i < n; i++)
		clock_gettime(CLOCK_MONOTONIC, &ts);
	return (now() - t) / n;
}

static volatile long usr1;
static void on_usr1(int s)
{
	(void)s;
	usr1++;
}

static double signal_loop(long n)
{
	double t = now();
	for (long i = 0; i < n; i++)
		raise(SIGUSR1);
	return (now() - t) / n;
}

static ptent_t *pf_pte;
static volatile long pf_count;
static void pf_handler(uintptr_t addr, uint64_t fec, struct dune_tf *tf)
{
	(void)addr;
	(void)fec;
	(void)tf;
	*pf_pte |= PTE_P;
	pf_count++;
}

static double getpid_loop(long n)
{
	double t = now();
	for (long i = 0; i < n; i++)
		syscall(SYS_getpid);
	return (now() - t) / n;
}

/* ns per 4 KiB page for the first write to each page of mib MiB of fresh
 * memory that the kernel may back with huge pages. */
static double touch_loop(long mib)
{
	size_t len = (size_t)mib << 20, huge = 2u << 20;
	char *res = mmap(NULL, len + huge, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (res == MAP_FAILED)
		return -ENOMEM;
	char *m = (char *)(((uintptr_t)res + huge - 1) & ~(uintptr_t)(huge - 1));
	madvise(m, len, MADV_HUGEPAGE);
	double t = now();
	for (size_t off = 0; off < len; off += 4096)
		m[off] = 1;
	t = (now() - t) / (double)(len / 4096);
	munmap(res, len + huge);
	return t;
}

/* fn(n) in the guest over device dev, in a child of its own, after
 * fn(n / 10 + 1) if warm_up (user_calls: dune.ko sends every call to user
 * space); a negative errno if the guest could not be entered.
 * *forwarded: the system calls that reached libdune's vCPU loop meanwhile. */
static double in_guest(const char *dev, int user_calls, double (*fn)(long),
		       int warm_up, long n, double *forwarded)
{
	int p[2];
	double r[2] = {-EIO, 0};
	if (pipe(p))
		return -errno;
	pid_t pid = fork();
	if (pid == 0) {
		close(p[0]);
		double res[2] = {0, 0};
		struct dune_stats st0, st1;
		if (user_calls)
			setenv("DUNE_NO_KERNEL_SYSCALLS", "1", 1);
		int e = dune_set_device(dev);
		if (!e)
			e = dune_init(1);
		if (!e)
			e = dune_enter();
		if (e) {
			res[0] = e;
		} else {
			if (warm_up)
				fn(n / 10 + 1); /* first touches, caches */
			dune_get_stats(&st0);
			res[0] = fn(n);
			dune_get_stats(&st1);
			res[1] = (double)(st1.syscalls - st0.syscalls);
		}
		_exit(write(p[1], res, sizeof(res)) == sizeof(res) ? 0 : 1);
	}
	close(p[1]);
	if (pid > 0 && read(p[0], r, sizeof(r)) != sizeof(r))
		r[0] = -EIO;
	close(p[0]);
	if (pid > 0)
		waitpid(pid, NULL, 0);
	*forwarded = r[1];
	return r[0];
}

static int compare_getpid(long n)
{
	double fk, fd, fu;
	double host = getpid_loop(n);
	double kvm = in_guest("kvm", 0, getpid_loop, 1, n, &fk);
	double dune = in_guest("dune", 0, getpid_loop, 1, n, &fd);
	double user = in_guest("dune", 1, getpid_loop, 1, n, &fu);
	printf("getpid() per call, %ld calls each, one rig run:\n", n);
	printf("  host:                                  %8.0f ns\n", host);
	if (kvm < 0 || dune < 0 || user < 0) {
		printf("  guest over /dev/kvm:  %s\n", kvm < 0 ? strerror((int)-kvm) : "ok");
		printf("  guest over /dev/dune: %s\n", dune < 0 ? strerror((int)-dune) : "ok");
		return 1;
	}
	printf("  guest over /dev/kvm:                   %8.0f ns (%.0f of %ld calls through user space)\n",
	       kvm, fk, n);
	printf("  guest over /dev/dune, in the kernel:   %8.0f ns (%.0f of %ld calls through user space)\n",
	       dune, fd, n);
	printf("  guest over /dev/dune, via user space:  %8.0f ns (%.0f of %ld calls through user space)\n",
	       user, fu, n);
	printf("  /dev/dune is %.1fx cheaper than /dev/kvm (target: at least 5x); "
	       "its in-kernel calls %.1fx cheaper than its own exits to user space\n",
	       kvm / dune, user / dune);
	return 0;
}

static int compare_touch(long mib)
{
	double unused;
	/* once unmeasured: the rig's own RAM is backed by QEMU's at its first
	 * use, which would be charged to whoever ran first */
	touch_loop(mib);
	double host = touch_loop(mib);
	double kvm = in_guest("kvm", 0, touch_loop, 0, mib, &unused);
	double dune = in_guest("dune", 0, touch_loop, 0, mib, &unused);
	printf("first write to each 4 KiB page of %ld MiB (THP asked for), per page, one rig run:\n",
	       mib);
	if (host < 0 || kvm < 0 || dune < 0) {
		printf("  host: %s, guest over /dev/kvm: %s, over /dev/dune: %s\n",
		       host < 0 ? strerror((int)-host) : "ok", kvm < 0 ? strerror((int)-kvm) : "ok",
		       dune < 0 ? strerror((int)-dune) : "ok");
		return 1;
	}
	printf("  host:                 %8.0f ns\n", host);
	printf("  guest over /dev/kvm:  %8.0f ns (%.1fx the host)\n", kvm, kvm / host);
	printf("  guest over /dev/dune: %8.0f ns (%.1fx the host, %.1fx /dev/kvm)\n", dune,
	       dune / host, dune / kvm);
	return 0;
}

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc > 1 && !strcmp(argv[1], "--compare-getpid"))
		return compare_getpid(argc > 2 ? atol(argv[2]) : 20000);
	if (argc > 1 && !strcmp(argv[1], "--compare-touch"))
		return compare_touch(argc > 2 ? atol(argv[2]) : 256);
	long n = argc > 1 ? atol(argv[1]) : 20000;
	double host = null_syscall(n * 5);
	double host_clock = clock_loop(n * 5);
	signal(SIGUSR1, on_usr1);
	double host_sig = signal_loop(n);
	char *m = mmap(NULL, 3 * 4096, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	memset(m, 'A', 4096);
	memset(m + 4096, 'B', 4096);
	if (dune_init(1) || dune_enter()) {
		fprintf(stderr, "bench: %s\n", dune_strerror());
		return 1;
	}
	double guest = null_syscall(n);
	printf("null syscall (getppid): host %.0f ns, guest %.0f ns (x%.1f)\n",
	       host, guest, guest / host);

	double guest_clock = clock_loop(n * 5);
	printf("clock_gettime (vDSO): host %.0f ns, guest %.0f ns\n", host_clock,
	       guest_clock);
	double guest_sig = signal_loop(n / 4);
	printf("raise(SIGUSR1) to a handler and back: host %.0f ns, guest %.0f ns "
	       "(%ld handled)\n",
	       host_sig, guest_sig, usr1);

	ptent_t *pte;
	char *va = m + 2 * 4096;
	if (dune_vm_lookup(pgroot, va, 1, &pte))
		return 1;
	uint64_t pa[2] = {dune_va_to_pa(m), dune_va_to_pa(m + 4096)};
	long bad = 0, iters = n * 5;
	double t = now();
	for (long i = 0; i < iters; i++) {
		*pte = pa[i & 1] | PTE_P | PTE_W;
		dune_flush_tlb_one(va);
		bad += *(volatile char *)va != (i & 1 ? 'B' : 'A');
	}
	t = (now() - t) / iters;
	printf("guest PTE write + invlpg + read: %.0f ns (%ld/%ld wrong)\n", t,
	       bad, iters);

	pf_pte = pte;
	dune_register_pgflt_handler(pf_handler);
	t = now();
	for (long i = 0; i < n; i++) {
		*pte &= ~PTE_P;
		dune_flush_tlb_one(va);
		(void)*(volatile char *)va;
	}
	t = (now() - t) / n;
	printf("#PF round trip through the guest IDT: %.0f ns (%ld faults for %ld)\n",
	       t, pf_count, n);
	return bad || pf_count != n;
}
