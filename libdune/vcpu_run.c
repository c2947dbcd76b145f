/* SPDX-License-Identifier: MIT */
/*
 * The loop that runs a vCPU (the driver's run: KVM_RUN or DUNE_VCPU_RUN)
 * and dispatches its exits: the guest's
 * port writes (system call, chunk to map, signal delivery, unhandled
 * exception), signals that interrupted KVM_RUN, and the fatal ones, which
 * end the process with a one-line report and the signal the host kernel
 * would have sent.
 *
 * Each entered thread runs this on its own host stack (the guest keeps the
 * thread's stack) with the thread's TLS, so it makes raw system calls and
 * never touches errno on the way of a forwarded call.
 */
#include "internal.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>

static const char *vector_name(uint64_t v)
{
	static const char *const n[] = {
		"#DE", "#DB", "NMI", "#BP", "#OF", "#BR", "#UD", "#NM",
		"#DF", "#CSO", "#TS", "#NP", "#SS", "#GP", "#PF", "#15",
		"#MF", "#AC", "#MC", "#XM", "#VE", "#CP"};
	return v < sizeof(n) / sizeof(n[0]) ? n[v] : "interrupt";
}

static int vector_signal(uint64_t v)
{
	switch (v) {
	case 0: case 16: case 19:
		return SIGFPE;
	case 1: case 3:
		return SIGTRAP;
	case 6:
		return SIGILL;
	case 17:
		return SIGBUS;
	default:
		return SIGSEGV;
	}
}

/* "file+0xoff" of the mapping that holds addr, for messages. */
static void where(uint64_t addr, char *out, size_t len)
{
	FILE *f = fopen("/proc/self/maps", "re");
	char line[512];
	snprintf(out, len, "?");
	if (!f)
		return;
	while (fgets(line, sizeof(line), f)) {
		unsigned long lo, hi, off;
		char path[400] = "";
		if (sscanf(line, "%lx-%lx %*s %lx %*s %*s %399s", &lo, &hi, &off,
			   path) < 3)
			continue;
		if (addr >= lo && addr < hi) {
			const char *b = strrchr(path, '/');
			snprintf(out, len, "%s+0x%lx", b ? b + 1 : path,
				 (unsigned long)(addr - lo + off));
			break;
		}
	}
	fclose(f);
}

__attribute__((noreturn)) static void fatal_trap(struct dune_vcpu *v)
{
	struct dune_tf *tf = v->tf;
	char msg[512], w[128];
	if (tf->vector == 14 && dune_stack_guard_overlaps(v->arg, v->arg + 1))
		/* the main thread's stack overflowed its limit: an ordinary
		 * SIGSEGV of the program, which the host's kernel would not
		 * comment on either */
		dune_die_by_signal(SIGSEGV);
	where(tf->rip, w, sizeof(w));
	snprintf(msg, sizeof(msg),
		 "dune: unhandled %s (vector %lu) in the guest at rip 0x%lx (%s), "
		 "cr2 0x%lx, error 0x%lx, rsp 0x%lx\n",
		 vector_name(tf->vector), (unsigned long)tf->vector,
		 (unsigned long)tf->rip, w, (unsigned long)v->arg,
		 (unsigned long)tf->err, (unsigned long)tf->rsp);
	dune_write_str(msg);
	dune_die_by_signal(vector_signal(tf->vector));
}

__attribute__((noreturn)) static void fatal_exit(struct dune_vcpu *v,
						  const char *what, long err)
{
	struct kvm_regs r;
	char msg[320];
	memset(&r, 0, sizeof(r));
	dune_drv->get_regs(v, &r);
	snprintf(msg, sizeof(msg),
		 "dune: %s (%s exit %u, error %ld) at rip 0x%llx rsp 0x%llx "
		 "cr2 0x%llx\n",
		 what, dune_drv->name, v->last_exit, err, r.rip, r.rsp,
		 (unsigned long long)dune_drv->get_cr2(v));
	dune_write_str(msg);
	dune_die_by_signal(SIGSEGV);
}

void dune_vcpu_loop(void *arg)
{
	struct dune_vcpu *v = arg;
	struct dune_run_exit x;
	dune_signals_set_self(v);
	for (;;) {
		long r = dune_drv->run(v, &x);
		*v->kick = 0;
		dune_stat_exits++;
		if (r == -EINTR || r == -EAGAIN) {
			/* a signal: to the program's handler in the guest */
			dune_signals_at_exit(v);
			continue;
		}
		if (r < 0) {
			if (r == -EFAULT) {
				if (dune_signal_fault(v, NULL, SIGSEGV, 0, 1) == 0)
					continue;
				fatal_exit(v, "guest touched memory the host has "
					      "not mapped or protects",
					   r);
			}
			fatal_exit(v, "running the vCPU failed", r);
		}
		switch (x.kind) {
		case DUNE_X_IO:
			switch (x.port) {
			case DUNE_PORT_SYSCALL:
				if (x.syscall_interrupted && v->sig_pending) {
					/* dune.ko's call met a signal with a
					 * handler: it fails as the host's own
					 * call would (SA_RESTART makes it again) */
					v->tf->rax = (uint64_t)-EINTR;
					v->sig_check = 1;
					continue;
				}
				if (dune_handle_syscall(v) == 0 && v->sig_pending)
					v->sig_check = 1; /* deliver on the way out */
				continue;
			case DUNE_PORT_CHUNK:
				v->ret = dune_map_chunk(v->arg);
				continue;
			case DUNE_PORT_SIGNAL:
				dune_signals_at_frame(v);
				continue;
			case DUNE_PORT_FATAL:
				if (dune_signal_fault(v, v->tf,
						      vector_signal(v->tf->vector),
						      v->arg, 0) == 0)
					continue;
				fatal_trap(v);
			}
			fatal_exit(v, "unexpected port I/O", x.port);
		case DUNE_X_HLT:
			fatal_exit(v, "hlt in the guest", 0);
		case DUNE_X_SHUTDOWN:
			fatal_exit(v, "triple fault in the guest", 0);
		case DUNE_X_UNMAPPED:
			fatal_exit(v, "guest touched guest-physical memory "
				      "outside every memslot", (long)x.code);
		case DUNE_X_FAIL_ENTRY:
			fatal_exit(v, "VM entry failed", (long)x.code);
		case DUNE_X_INTERNAL:
			fatal_exit(v, "hypervisor internal error", (long)x.code);
		default:
			fatal_exit(v, "unexpected exit", (long)x.code);
		}
	}
}
