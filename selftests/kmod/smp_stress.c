// SPDX-License-Identifier: MIT
/*
 * smp_stress DEVICE SECONDS [VCPUS]: a guest without libdune, to tell whose
 * the two-CPU triple fault of issue 10 is (Documentation/libdune.md, "Known
 * bug over /dev/dune with two CPUs").  DEVICE is kvm, dune (system calls in
 * the module) or dune-user (every call an exit to user space).
 *
 * Round after round for SECONDS: a new VM laid out as libdune lays one out
 * (page tables in a region of their own at guest-physical 4 GiB, 2 MiB
 * pages, accessed bits left to the CPU), then VCPUS threads (default 4)
 * started one after the other, each creating its own vCPU and running
 * smp_guest.S: getpid, a write and a read on the thread's own pipe, all
 * through `out`, as libdune's four-threads test does.  After 300 ms the
 * threads stop at their next check-in and the VM is closed.  Prints each
 * triple fault or exception with where it happened, and at the end one
 * line: "DEVICE, N CPU(s): R rounds, C calls, T triple faults, E exceptions"
 * (C: the calls forwarded to user space; for `dune`, the module's count of
 * calls it made in the kernel since it was loaded).
 * Exit status 0 if none, 1 if any, 2 if the VM could not be made.
 * A diagnostic for the rig (selftests/kmod/repro-triple-fault), not a test.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "../../kmod/dune_abi.h"

extern const char smp_guest_start[], smp_guest_vectors[], smp_guest_end[];

#define MEM_SIZE (2ul << 20)   /* gpa 0: code, GDT, IDT, stacks */
#define CODE_GPA 0x10000ull
#define GDT_GPA 0x5000ull
#define IDT_GPA 0x6000ull
#define STACKS_GPA 0x100000ull
#define STACK_SIZE 0x8000ull
#define POOL_GPA (4ull << 30)  /* page tables, as libdune's pool */
#define POOL_SIZE (2ul << 20)
#define DATA_GPA (8ull << 30)  /* counters, at guest VA 1 GiB */
#define DATA_VA (1ull << 30)
#define DATA_SIZE (2ul << 20)
#define MAX_VCPUS 8
#define ROUND_MS 300

#define PORT_SYSCALL 0xd0
#define PORT_CHECK_IN 0xd1
#define PORT_EXCEPTION 0xfe

enum device { DEV_KVM, DEV_DUNE, DEV_DUNE_USER };

struct vm {
	enum device dev;
	int fd, kvm_fd;
	uint8_t *mem, *pool;
	volatile uint64_t *data;
	struct kvm_cpuid2 *cpuid;
	size_t run_size;
};

struct vcpu_thread {
	struct vm *vm;
	int index, pipe[2];
	char buf;
	pthread_t thread;
};

static volatile int stop_round;
static long triple_faults, exceptions, calls;
static pthread_mutex_t report_lock = PTHREAD_MUTEX_INITIALIZER;

static void die(const char *what)
{
	fprintf(stderr, "smp_stress: %s: %s\n", what, strerror(errno));
	exit(2);
}

static void *map_anon(size_t size, int shared)
{
	void *p = mmap(NULL, size, PROT_READ | PROT_WRITE,
		       (shared ? MAP_SHARED : MAP_PRIVATE) | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		die("mmap");
	return p;
}

/* VA [0, 2 MiB) -> gpa 0 and VA [1 GiB, 1 GiB + 2 MiB) -> DATA_GPA, as
 * 2 MiB pages, with the accessed and dirty bits clear (libdune's way). */
static void build_page_tables(uint8_t *pool)
{
	uint64_t *pml4 = (uint64_t *)pool, *pdpt = (uint64_t *)(pool + 0x1000);
	uint64_t *pd0 = (uint64_t *)(pool + 0x2000), *pd1 = (uint64_t *)(pool + 0x3000);
	pml4[0] = (POOL_GPA + 0x1000) | 7;
	pdpt[0] = (POOL_GPA + 0x2000) | 7;
	pdpt[1] = (POOL_GPA + 0x3000) | 7;
	pd0[0] = 0x0 | 0x87;
	pd1[0] = DATA_GPA | 0x87;
}

static void build_descriptor_tables(uint8_t *mem)
{
	uint64_t *gdt = (uint64_t *)(mem + GDT_GPA), *idt = (uint64_t *)(mem + IDT_GPA);
	gdt[1] = 0x00af9b000000ffffull; /* 0x08: 64-bit code */
	gdt[2] = 0x00cf93000000ffffull; /* 0x10: data */
	for (int v = 0; v < 32; v++) {
		uint64_t h = CODE_GPA + (uint64_t)(smp_guest_vectors - smp_guest_start) + 16 * v;
		idt[2 * v] = (h & 0xffff) | (0x08ull << 16) | (0x8e00ull << 32) |
			     ((h >> 16 & 0xffff) << 48);
		idt[2 * v + 1] = h >> 32;
	}
}

static void add_region(struct vm *vm, uint32_t slot, uint64_t gpa, void *uaddr, uint64_t size)
{
	int r;
	if (vm->dev == DEV_KVM) {
		struct kvm_userspace_memory_region m = {.slot = slot, .guest_phys_addr = gpa,
			.memory_size = size, .userspace_addr = (uintptr_t)uaddr};
		r = ioctl(vm->fd, KVM_SET_USER_MEMORY_REGION, &m);
	} else {
		struct dune_region d = {.slot = slot, .guest_phys = gpa,
			.user_addr = (uintptr_t)uaddr, .size = size};
		r = ioctl(vm->fd, DUNE_SET_REGION, &d);
	}
	if (r)
		die("set region");
}

static void vm_create(struct vm *vm, enum device dev)
{
	memset(vm, 0, sizeof(*vm));
	vm->dev = dev;
	vm->kvm_fd = -1;
	if (dev == DEV_KVM) {
		vm->kvm_fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
		if (vm->kvm_fd < 0)
			die("/dev/kvm");
		vm->fd = ioctl(vm->kvm_fd, KVM_CREATE_VM, 0);
		if (vm->fd < 0)
			die("KVM_CREATE_VM");
		int n = ioctl(vm->kvm_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
		if (n <= 0)
			die("KVM_GET_VCPU_MMAP_SIZE");
		vm->run_size = (size_t)n;
		vm->cpuid = calloc(1, sizeof(*vm->cpuid) + 256 * sizeof(struct kvm_cpuid_entry2));
		vm->cpuid->nent = 256;
		if (ioctl(vm->kvm_fd, KVM_GET_SUPPORTED_CPUID, vm->cpuid))
			die("KVM_GET_SUPPORTED_CPUID");
	} else {
		vm->fd = open("/dev/dune", O_RDWR | O_CLOEXEC);
		if (vm->fd < 0)
			die("/dev/dune");
		struct dune_syscalls sc = {.port = dev == DEV_DUNE ? PORT_SYSCALL : 0};
		memset(sc.allowed, 0xff, sizeof(sc.allowed));
		if (ioctl(vm->fd, DUNE_SET_SYSCALLS, &sc))
			die("DUNE_SET_SYSCALLS");
	}
	vm->mem = map_anon(MEM_SIZE, 0);
	vm->pool = map_anon(POOL_SIZE, 0);
	vm->data = map_anon(DATA_SIZE, 1);
	memcpy(vm->mem + CODE_GPA, smp_guest_start, smp_guest_end - smp_guest_start);
	build_descriptor_tables(vm->mem);
	build_page_tables(vm->pool);
	add_region(vm, 0, 0, vm->mem, MEM_SIZE);
	add_region(vm, 1, POOL_GPA, vm->pool, POOL_SIZE);
	add_region(vm, 2, DATA_GPA, (void *)vm->data, DATA_SIZE);
}

static void vm_destroy(struct vm *vm)
{
	close(vm->fd);
	if (vm->kvm_fd >= 0)
		close(vm->kvm_fd);
	munmap(vm->mem, MEM_SIZE);
	munmap(vm->pool, POOL_SIZE);
	munmap((void *)vm->data, DATA_SIZE);
	free(vm->cpuid);
}

/* What smp_guest.S starts with (see there). */
struct entry {
	uint64_t rip, rsp, r12, r13, r14, r15;
};

static struct entry entry_of(const struct vcpu_thread *t)
{
	return (struct entry){.rip = CODE_GPA,
			      .rsp = STACKS_GPA + (t->index + 1) * STACK_SIZE,
			      .r12 = (uint64_t)t->pipe[1],
			      .r13 = (uint64_t)t->pipe[0],
			      .r14 = (uintptr_t)&t->buf,
			      .r15 = DATA_VA + 64 * (uint64_t)t->index};
}

static void report(struct vcpu_thread *t, const char *what, uint64_t a, uint64_t b,
		   uint64_t c, uint64_t d)
{
	pthread_mutex_lock(&report_lock);
	printf("smp_stress: vCPU %d (on CPU %d): %s 0x%llx 0x%llx 0x%llx 0x%llx\n", t->index,
	       sched_getcpu(), what, (unsigned long long)a, (unsigned long long)b,
	       (unsigned long long)c, (unsigned long long)d);
	fflush(stdout);
	pthread_mutex_unlock(&report_lock);
}

static long forward(uint64_t nr, uint64_t a0, uint64_t a1, uint64_t a2)
{
	__atomic_fetch_add(&calls, 1, __ATOMIC_RELAXED);
	long r = syscall((long)nr, a0, a1, a2);
	return r < 0 ? -errno : r;
}

static void run_kvm(struct vcpu_thread *t)
{
	struct vm *vm = t->vm;
	int fd = ioctl(vm->fd, KVM_CREATE_VCPU, t->index);
	if (fd < 0)
		die("KVM_CREATE_VCPU");
	struct kvm_run *run = mmap(NULL, vm->run_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (run == MAP_FAILED)
		die("mmap kvm_run");
	if (ioctl(fd, KVM_SET_CPUID2, vm->cpuid))
		die("KVM_SET_CPUID2");
	struct kvm_sregs s;
	if (ioctl(fd, KVM_GET_SREGS, &s))
		die("KVM_GET_SREGS");
	struct kvm_segment code = {.base = 0, .limit = 0xffffffff, .selector = 0x08, .type = 11,
				   .present = 1, .s = 1, .l = 1, .g = 1};
	struct kvm_segment data = {.base = 0, .limit = 0xffffffff, .selector = 0x10, .type = 3,
				   .present = 1, .s = 1, .db = 1, .g = 1};
	s.cs = code;
	s.ds = s.es = s.fs = s.gs = s.ss = data;
	s.tr = (struct kvm_segment){.base = 0x7000, .limit = 0x67, .selector = 0x18, .type = 11,
				    .present = 1};
	s.gdt.base = GDT_GPA, s.gdt.limit = 3 * 8 - 1;
	s.idt.base = IDT_GPA, s.idt.limit = 32 * 16 - 1;
	s.cr0 = 0x80050033, s.cr3 = POOL_GPA, s.cr4 = 0x620, s.efer = 0xd00;
	if (ioctl(fd, KVM_SET_SREGS, &s))
		die("KVM_SET_SREGS");
	struct entry e = entry_of(t);
	struct kvm_regs regs = {.rip = e.rip, .rsp = e.rsp, .rflags = 2, .r12 = e.r12,
				.r13 = e.r13, .r14 = e.r14, .r15 = e.r15};
	if (ioctl(fd, KVM_SET_REGS, &regs))
		die("KVM_SET_REGS");
	for (;;) {
		if (ioctl(fd, KVM_RUN, 0) && errno != EINTR)
			die("KVM_RUN");
		if (run->exit_reason == KVM_EXIT_IO && run->io.direction == KVM_EXIT_IO_OUT) {
			if (run->io.port == PORT_SYSCALL) {
				if (ioctl(fd, KVM_GET_REGS, &regs))
					die("KVM_GET_REGS");
				regs.rax = forward(regs.rax, regs.rdi, regs.rsi, regs.rdx);
				regs.rcx = 0;
				if (ioctl(fd, KVM_SET_REGS, &regs))
					die("KVM_SET_REGS");
				continue;
			}
			if (run->io.port == PORT_CHECK_IN) {
				if (stop_round)
					break;
				continue;
			}
			if (run->io.port == PORT_EXCEPTION) {
				ioctl(fd, KVM_GET_REGS, &regs);
				__atomic_fetch_add(&exceptions, 1, __ATOMIC_RELAXED);
				report(t, "exception (vector, cr2, pushed)", regs.rax, regs.rbx,
				       regs.rcx, regs.rdx);
				break;
			}
		}
		if (run->exit_reason == KVM_EXIT_SHUTDOWN) {
			__atomic_fetch_add(&triple_faults, 1, __ATOMIC_RELAXED);
			report(t, "triple fault", 0, 0, 0, 0);
			break;
		}
		if (run->exit_reason == KVM_EXIT_INTR)
			continue;
		report(t, "unexpected exit", run->exit_reason, 0, 0, 0);
		__atomic_fetch_add(&exceptions, 1, __ATOMIC_RELAXED);
		break;
	}
	munmap(run, vm->run_size);
	close(fd);
}

static void run_dune(struct vcpu_thread *t)
{
	struct vm *vm = t->vm;
	int fd = ioctl(vm->fd, DUNE_CREATE_VCPU);
	if (fd < 0)
		die("DUNE_CREATE_VCPU");
	struct dune_vcpu_state st;
	if (ioctl(fd, DUNE_VCPU_GET_STATE, &st))
		die("DUNE_VCPU_GET_STATE");
	struct entry e = entry_of(t);
	st.regs = (struct dune_regs){.rip = e.rip, .rsp = e.rsp, .rflags = 2, .r12 = e.r12,
				     .r13 = e.r13, .r14 = e.r14, .r15 = e.r15};
	st.sregs.cr0 = 0x80050033, st.sregs.cr3 = POOL_GPA, st.sregs.cr4 = 0x620;
	st.sregs.efer = 0xd00;
	st.sregs.gdt_base = GDT_GPA, st.sregs.gdt_limit = 3 * 8 - 1;
	st.sregs.idt_base = IDT_GPA, st.sregs.idt_limit = 32 * 16 - 1;
	if (ioctl(fd, DUNE_VCPU_SET_STATE, &st))
		die("DUNE_VCPU_SET_STATE");
	for (;;) {
		struct dune_exit ex = {0};
		if (ioctl(fd, DUNE_VCPU_RUN, &ex)) {
			if (errno == EINTR)
				continue;
			die("DUNE_VCPU_RUN");
		}
		if (ex.reason == DUNE_EXIT_IO && ex.port == PORT_SYSCALL) {
			if (ioctl(fd, DUNE_VCPU_GET_STATE, &st))
				die("DUNE_VCPU_GET_STATE");
			st.regs.rax = forward(st.regs.rax, st.regs.rdi, st.regs.rsi, st.regs.rdx);
			st.regs.rcx = 0;
			if (ioctl(fd, DUNE_VCPU_SET_STATE, &st))
				die("DUNE_VCPU_SET_STATE");
			continue;
		}
		if (ex.reason == DUNE_EXIT_IO && ex.port == PORT_CHECK_IN) {
			if (stop_round)
				break;
			continue;
		}
		ioctl(fd, DUNE_VCPU_GET_STATE, &st);
		if (ex.reason == DUNE_EXIT_IO && ex.port == PORT_EXCEPTION) {
			__atomic_fetch_add(&exceptions, 1, __ATOMIC_RELAXED);
			report(t, "exception (vector, cr2, pushed)", st.regs.rax, st.regs.rbx,
			       st.regs.rcx, st.regs.rdx);
		} else if (ex.reason == DUNE_EXIT_SHUTDOWN) {
			__atomic_fetch_add(&triple_faults, 1, __ATOMIC_RELAXED);
			report(t, "triple fault (rip, cr2, exitintinfo)", st.regs.rip, st.sregs.cr2,
			       ex.info1, ex.info2);
		} else {
			__atomic_fetch_add(&exceptions, 1, __ATOMIC_RELAXED);
			report(t, "unexpected exit (reason, code, info1, info2)", ex.reason,
			       ex.svm_exit_code, ex.info1, ex.info2);
		}
		break;
	}
	close(fd);
}

static void *vcpu_main(void *arg)
{
	struct vcpu_thread *t = arg;
	if (t->vm->dev == DEV_KVM)
		run_kvm(t);
	else
		run_dune(t);
	return NULL;
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr, "usage: smp_stress kvm|dune|dune-user SECONDS [VCPUS]\n");
		return 2;
	}
	enum device dev = !strcmp(argv[1], "kvm")	? DEV_KVM
			  : !strcmp(argv[1], "dune")	? DEV_DUNE
			  : !strcmp(argv[1], "dune-user") ? DEV_DUNE_USER
							  : (enum device)-1;
	if ((int)dev < 0) {
		fprintf(stderr, "smp_stress: unknown device %s\n", argv[1]);
		return 2;
	}
	double end = now() + atof(argv[2]);
	int nvcpus = argc > 3 ? atoi(argv[3]) : 4;
	if (nvcpus < 1 || nvcpus > MAX_VCPUS)
		nvcpus = 4;
	long rounds = 0;
	while (now() < end) {
		struct vm vm;
		struct vcpu_thread t[MAX_VCPUS];
		vm_create(&vm, dev);
		stop_round = 0;
		for (int i = 0; i < nvcpus; i++) {
			t[i] = (struct vcpu_thread){.vm = &vm, .index = i};
			if (pipe(t[i].pipe))
				die("pipe");
			if (pthread_create(&t[i].thread, NULL, vcpu_main, &t[i]))
				die("pthread_create");
		}
		usleep(ROUND_MS * 1000);
		stop_round = 1;
		for (int i = 0; i < nvcpus; i++) {
			pthread_join(t[i].thread, NULL);
			close(t[i].pipe[0]);
			close(t[i].pipe[1]);
		}
		if (dev == DEV_DUNE) {
			struct dune_module_stats st;
			if (!ioctl(vm.fd, DUNE_GET_STATS, &st))
				calls = (long)st.syscalls;
		}
		vm_destroy(&vm);
		rounds++;
	}
	printf("%s, %ld CPU(s): %ld rounds, %ld calls, %ld triple faults, %ld exceptions\n",
	       argv[1], sysconf(_SC_NPROCESSORS_ONLN), rounds, calls, triple_faults, exceptions);
	return triple_faults || exceptions;
}
