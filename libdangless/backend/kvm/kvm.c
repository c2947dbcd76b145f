/* SPDX-License-Identifier: MIT */
/*
 * The kvm backend: start-up (libdune's dune_init + dune_enter on the thread
 * that starts Dangless), `dangless check`, stats, fork, and its row of
 * hooks (kvm.h).
 */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "kvm.h"

static char kvm_refusal[300];
/* Which of libdune's devices: DUNE_DEVICE_KVM (/dev/kvm) or DUNE_DEVICE_DUNE
 * (dune.ko's /dev/dune); the backend is the same over either. */
static const char *kvm_device = DUNE_DEVICE_KVM;

/*
 * dune_init(0): nothing of the address space is registered with KVM up
 * front; each 1 GiB is when the guest first touches it (or maps it).  The
 * canonical arena and the page-table pool are reserved after dune_init and
 * before dune_enter (on the host, where mmap registers nothing), so only
 * the parts in use take guest-physical space.
 *
 * libdune prints its refusal on stderr unless DUNE_QUIET is set; the core
 * prints ours, in one line.
 */
static int kvm_dune_init(void)
{
	bool quiet_set = !getenv("DUNE_QUIET");
	if (quiet_set)
		setenv("DUNE_QUIET", "1", 1);
	/* Never libdune's "auto": backend=kvm means /dev/kvm, even where
	 * dune.ko is loaded. */
	int err = dune_set_device(kvm_device);
	/* 57-bit alias space where the CPU has LA57 (512x the 4-level
	 * upper half); libdune falls back to 4 levels where it has not, and
	 * DUNE_PAGING=4 keeps them. */
	if (!err)
		err = dune_set_paging_levels(5);
	if (!err)
		err = dune_init(0);
	if (quiet_set)
		unsetenv("DUNE_QUIET");
	if (err) {
		const char *why = dune_strerror();
		if (!strncmp(why, "dune: ", 6))
			why += 6;
		struct dl_buf b = {kvm_refusal, 0, sizeof(kvm_refusal) - 1};
		_dl_buf_str(&b, "libdune cannot use /dev/");
		_dl_buf_str(&b, kvm_device);
		_dl_buf_str(&b, " (");
		_dl_buf_str(&b, why);
		_dl_buf_str(&b, ")");
		kvm_refusal[b.len] = 0;
	}
	return err;
}

static int kvm_init(void)
{
	int err = kvm_dune_init();
	if (err)
		return err;
	kvm_paging_init();
	if ((err = kvm_canon_init()) || (err = kvm_pt_init())) {
		kvm_canon_fini();
		return err;
	}
	err = dune_enter();
	if (err) {
		struct dl_buf b = {kvm_refusal, 0, sizeof(kvm_refusal) - 1};
		_dl_buf_str(&b, "libdune could not enter the guest (");
		_dl_buf_str(&b, dune_strerror());
		_dl_buf_str(&b, ")");
		kvm_refusal[b.len] = 0;
		kvm_pt_fini();
		kvm_canon_fini();
		return err;
	}
	/* In guest ring 0 from here on: no way back to the host backend. */
	if ((err = kvm_pt_start()))
		_dl_fatal("kvm backend: the page-table pool has no "
			  "guest-physical address (%s)",
			  _dl_strerror(-err));
	if ((err = kvm_shootdown_init(!strcmp(kvm_device, DUNE_DEVICE_DUNE))))
		_dl_fatal("kvm backend: cannot start TLB shootdowns");
	kvm_hooks_install();
	_dl_info("kvm backend: running in guest ring 0, %u-level paging; "
		 "alias space %p-%p",
		 kvm_paging.levels, (void *)KVM_ALIAS_START,
		 (void *)KVM_ALIAS_END);
	return 0;
}

/* The core's map and canonical checks cover this much (backend.h). */
static unsigned kvm_addr_bits(void)
{
	return kvm_paging.addr_bits;
}

static const char *kvm_why_refused(void)
{
	return kvm_refusal[0] ? kvm_refusal : "libdune could not start";
}

static void kvm_put(int fd, const char *s)
{
	_dl_write_all(fd, s, strlen(s));
}

/* Whether libdune accepts this host's /dev/kvm (it makes a VM, runs its
 * speed probe, and does not enter). */
static bool kvm_check(int fd)
{
	if (dune_in_guest()) {
		kvm_put(fd, "  works: this process runs in the guest\n");
		return true;
	}
	if (kvm_dune_init()) {
		kvm_put(fd, "  ");
		kvm_put(fd, kvm_refusal);
		kvm_put(fd, !strcmp(kvm_device, DUNE_DEVICE_KVM)
				    ? "\n  needs /dev/kvm with hardware "
				      "virtualisation (Intel VT-x or AMD-V; nested "
				      "virtualisation in a VM), readable and "
				      "writable by the user\n"
				    : "\n  needs dune.ko loaded (AMD SVM with NPT, or "
				      "Intel VT-x with EPT; dangless-setup, README "
				      "'dune.ko') "
				      "and /dev/dune readable and writable by the "
				      "user (group dune)\n");
		return false;
	}
	kvm_put(fd, "  /dev/");
	kvm_put(fd, kvm_device);
	kvm_put(fd, " works (hardware virtualisation, libdune accepts it)\n");
	kvm_put(fd, dune_paging_levels() == 5
			    ? "  5-level paging (LA57): alias space is the "
			      "guest's 64 PiB upper half; pointers keep bits "
			      "57-63 only for tags\n"
			    : "  4-level paging: alias space is the guest's "
			      "128 TiB upper half\n");
	return true;
}

/* backend=dune: this backend over dune.ko's /dev/dune. */
static int kvm_init_over_dune(void)
{
	kvm_device = DUNE_DEVICE_DUNE;
	return kvm_init();
}

static bool kvm_check_over_dune(int fd)
{
	const char *was = kvm_device;
	kvm_device = DUNE_DEVICE_DUNE;
	bool ok = kvm_check(fd);
	kvm_device = was;
	return ok;
}

static void kvm_refresh_stats(void)
{
	struct dune_stats st;
	dune_get_stats(&st);
	atomic_store_explicit(&_dl_stats.vm_exits, st.exits,
			      memory_order_relaxed);
	atomic_store_explicit(&_dl_stats.guest_syscalls, st.syscalls,
			      memory_order_relaxed);
	struct dl_kvm_fixup_stats fx;
	dl_kvm_fixup_get_stats(&fx);
#define KVM_FIXUP_STAT(field, from)                                            \
	atomic_store_explicit(&_dl_stats.field, fx.from, memory_order_relaxed)
	KVM_FIXUP_STAT(syscalls_fixed, calls_rewritten);
	KVM_FIXUP_STAT(fixup_pointers, translated);
	KVM_FIXUP_STAT(fixup_bounced, bounced);
	KVM_FIXUP_STAT(fixup_nested, nested);
	KVM_FIXUP_STAT(fixup_efault, efault);
	KVM_FIXUP_STAT(fixup_refused, refused);
	KVM_FIXUP_STAT(unknown_syscalls, unknown_syscalls);
	KVM_FIXUP_STAT(unknown_commands, unknown_commands);
#undef KVM_FIXUP_STAT
}

/*
 * A reported dangling access: end the process of sig by the default
 * action.  Returning to run the access again would end it too, but libdune
 * prints a line of its own for an unhandled guest fault.  Raw system calls:
 * this runs in the SIGSEGV handler.
 */
static void kvm_die_after_report(int sig)
{
	struct {
		unsigned long handler, flags, restorer, mask;
	} dfl = {(unsigned long)SIG_DFL, 0, 0, 0};
	unsigned long set = 1UL << (sig - 1);
	syscall(SYS_rt_sigaction, sig, &dfl, NULL, sizeof(set));
	syscall(SYS_rt_sigprocmask, SIG_UNBLOCK, &set, NULL, sizeof(set));
	syscall(SYS_tgkill, getpid(), syscall(SYS_gettid), sig);
	syscall(SYS_exit_group, 128 + sig);
}

static void kvm_fork_prepare(void)
{
	kvm_canon_lock();
	kvm_pt_lock();
}

static void kvm_fork_parent(void)
{
	kvm_pt_unlock(false);
	kvm_canon_unlock(false);
}

/* libdune built the child a VM from its copy of the page tables and the
 * canonical arena is private memory: revoked PTEs are still revoked. */
static bool kvm_fork_child(void)
{
	kvm_pt_unlock(true);
	kvm_canon_fork_child();
	kvm_canon_unlock(true);
	kvm_shootdown_fork_child();
	return false;
}

/* What a sweep must not take for roots (reclaim.c): ours, not the
 * program's. */
static void kvm_own_memory(void (*fn)(uintptr_t start, size_t len, void *ctx),
			   void *ctx)
{
	kvm_canon_own(fn, ctx);
	kvm_pt_own(fn, ctx);
}

/* The arena's pages, each once (private memory: each is mapped, in Pss);
 * the host's page tables for the process (VmPTE) and ours for alias
 * space, which live in the process's memory. */
static bool kvm_memory_held(const struct dl_proc_memory *proc,
			    struct dl_memory_held *m)
{
	uint64_t ours;
	if (!kvm_canon_resident(&m->canonical) || !kvm_pt_resident(&ours))
		return false;
	m->canonical_unmapped = 0;
	m->page_tables = proc->vm_pte + ours;
	return true;
}

#define KVM_BACKEND_HOOKS                                                      \
	.why_refused = kvm_why_refused, .addr_bits = kvm_addr_bits,            \
	.canon_alloc = kvm_canon_alloc,                                        \
	.canon_free = kvm_canon_free, .canon_discard = kvm_canon_discard,      \
	.alias_reserve = kvm_alias_reserve, .alias_map = kvm_alias_map,        \
	.alias_revoke = kvm_alias_revoke,                                      \
	.alias_revoke_many = kvm_alias_revoke_many,                            \
	.alias_release = kvm_alias_release,                                    \
	.alias_reuse = kvm_alias_reuse, .own_memory = kvm_own_memory,          \
	.fork_prepare = kvm_fork_prepare, .fork_parent = kvm_fork_parent,      \
	.fork_child = kvm_fork_child, .refresh_stats = kvm_refresh_stats,      \
	.memory_held = kvm_memory_held,                                        \
	.die_after_report = kvm_die_after_report

const struct dl_backend _dl_backend_kvm = {
	.init = kvm_init,
	.check = kvm_check,
	KVM_BACKEND_HOOKS,
};

const struct dl_backend _dl_backend_dune = {
	.init = kvm_init_over_dune,
	.check = kvm_check_over_dune,
	KVM_BACKEND_HOOKS,
};
