/* SPDX-License-Identifier: MIT */
/*
 * Signals for entered threads, host side.
 *
 * For every signal the program handles (other than glibc's internal 32/33),
 * libdune installs its own small host handler.  On an entered thread it only
 * records the signal and kicks the vCPU out of its run (immediate_exit);
 * the vCPU loop then builds a signal frame on the guest's stack like the
 * kernel would (rt_sigframe: return address = the program's restorer,
 * ucontext with the interrupted registers, FPU state, siginfo) and points the
 * vCPU at the program's handler, in guest ring 0.  The handler's
 * rt_sigreturn comes back here through the LSTAR stub and restores the
 * registers, FPU state and signal mask from the frame.  On a thread that has
 * not entered, the host handler calls the program's handler directly.
 * Default and ignored dispositions stay the kernel's own.
 */
#include "internal.h"

#include <errno.h>
#include <string.h>
#include <sys/syscall.h>
#include <ucontext.h>

struct ksigaction {
	uint64_t handler, flags, restorer, mask;
};

#define KSA_SIGINFO 0x4ULL
#define KSA_RESTORER 0x04000000ULL
#define KSA_ONSTACK 0x08000000ULL
#define KSA_RESTART 0x10000000ULL
#define KSA_NODEFER 0x40000000ULL
#define KSA_RESETHAND 0x80000000ULL

static struct ksigaction prog_act[65];
static volatile uint8_t routed[65];
static __thread struct dune_vcpu *dune_host_self
	__attribute__((tls_model("initial-exec")));

static int routable(long sig)
{
	return sig >= 1 && sig <= 64 && sig != SIGKILL && sig != SIGSTOP &&
	       sig != 32 && sig != 33; /* glibc's SIGCANCEL/SIGSETXID */
}

static uint64_t sigbit(int sig)
{
	return 1ULL << (sig - 1);
}

void dune_signals_set_self(struct dune_vcpu *v)
{
	dune_host_self = v;
}

static void host_handler(int sig, siginfo_t *info, void *uc)
{
	struct dune_vcpu *v = dune_host_self;
	if (v && info->si_code > 0 &&
	    (sig == SIGSEGV || sig == SIGBUS || sig == SIGILL || sig == SIGFPE)) {
		/* A fault of libdune's host side on this thread (the guest's
		 * own faults never arrive as host signals), e.g. a system call
		 * frame or signal frame at a bad address.  Returning would
		 * fault again forever: end the process as the kernel would. */
		static const char m[] = "dune: fault in libdune's host side "
					"(bad frame or stack in the guest?)\n";
		struct ksigaction dfl = {0, 0, 0, 0};
		uint64_t bit = sigbit(sig);
		dune_sys3(SYS_write, 2, m, sizeof(m) - 1);
		dune_sys6(SYS_rt_sigaction, sig, (long)&dfl, 0, 8, 0, 0);
		dune_sys6(SYS_rt_sigprocmask, SIG_UNBLOCK, (long)&bit, 0, 8, 0, 0);
		return; /* the fault repeats with the default action */
	}
	if (!v) {
		/* a thread still on the host: the program's handler, now */
		struct ksigaction *a = &prog_act[sig];
		if (a->handler <= 1)
			return;
		if (a->flags & KSA_SIGINFO)
			((void (*)(int, siginfo_t *, void *))a->handler)(sig, info, uc);
		else
			((void (*)(int))a->handler)(sig);
		return;
	}
	v->siginfo[sig] = *info;
	__atomic_or_fetch(&v->sig_pending, sigbit(sig), __ATOMIC_SEQ_CST);
	if (v->kick)
		*v->kick = 1;
}

static long install_host(int sig, const struct ksigaction *prog)
{
	struct ksigaction h = {
		.handler = (uint64_t)host_handler,
		/* no SA_RESTART on the host: a blocked system call must come
		 * back so the guest's handler runs; libdune restarts it after
		 * the handler when the program asked for SA_RESTART */
		.flags = (prog->flags | KSA_SIGINFO | KSA_RESTORER) & ~KSA_RESTART,
		.restorer = (uint64_t)dune_host_restorer,
		.mask = prog->mask,
	};
	return dune_sys6(SYS_rt_sigaction, sig, (long)&h, 0, 8, 0, 0);
}

/* At the first dune_enter: take over the handlers installed so far. */
void dune_signals_route(void)
{
	static int done;
	if (done)
		return;
	done = 1;
	for (int sig = 1; sig <= 64; sig++) {
		struct ksigaction cur;
		if (!routable(sig) ||
		    dune_sys6(SYS_rt_sigaction, sig, 0, (long)&cur, 8, 0, 0))
			continue;
		if (cur.handler <= 1 || cur.handler == (uint64_t)host_handler)
			continue;
		prog_act[sig] = cur;
		routed[sig] = 1;
		if (install_host(sig, &cur))
			routed[sig] = 0;
	}
}

long dune_sys_rt_sigaction(long sig, const void *act, void *oact, long size)
{
	if (!routable(sig) || size != 8)
		return dune_sys6(SYS_rt_sigaction, sig, (long)act, (long)oact, size,
				 0, 0);
	struct ksigaction old, nw;
	long r;
	if (routed[sig])
		old = prog_act[sig];
	else if ((r = dune_sys6(SYS_rt_sigaction, sig, 0, (long)&old, 8, 0, 0)))
		return r;
	if (act) {
		memcpy(&nw, act, sizeof(nw));
		if (nw.handler <= 1) {
			r = dune_sys6(SYS_rt_sigaction, sig, (long)&nw, 0, 8, 0, 0);
			if (r)
				return r;
			routed[sig] = 0;
			prog_act[sig] = nw;
		} else {
			prog_act[sig] = nw;
			routed[sig] = 1;
			r = install_host((int)sig, &nw);
			if (r) {
				routed[sig] = 0;
				return r;
			}
		}
	}
	if (oact)
		memcpy(oact, &old, sizeof(old));
	return 0;
}

/* Finishes a pending `out` so that registers can be set. */
void dune_vcpu_complete_io(struct dune_vcpu *v)
{
	dune_drv->complete_io(v);
}

static uint64_t host_mask(void)
{
	uint64_t m = 0;
	dune_sys6(SYS_rt_sigprocmask, SIG_BLOCK, 0, (long)&m, 8, 0, 0);
	return m;
}

struct dune_sigframe {
	uint64_t pretcode;
	ucontext_t uc;
	siginfo_t info;
};

/* Points the vCPU at the program's handler for sig, with a frame for the
 * interrupted context ctx.  The vCPU must have no I/O pending. */
static void inject(struct dune_vcpu *v, const struct kvm_regs *ctx, int sig,
		   const siginfo_t *info, uint64_t err, uint64_t trapno,
		   uint64_t cr2)
{
	struct ksigaction act = prog_act[sig];
	struct kvm_xsave xs;
	stack_t ss;
	memset(&xs, 0, sizeof(xs));
	dune_drv->get_xsave(v, &xs);
	memset(&ss, 0, sizeof(ss));
	ss.ss_flags = SS_DISABLE;
	dune_sys2(SYS_sigaltstack, 0, &ss);

	uint64_t sp = ctx->rsp;
	int on_alt = !(ss.ss_flags & SS_DISABLE) && sp > (uint64_t)ss.ss_sp &&
		     sp <= (uint64_t)ss.ss_sp + ss.ss_size;
	sp -= 128; /* red zone */
	if ((act.flags & KSA_ONSTACK) && !(ss.ss_flags & SS_DISABLE) && !on_alt)
		sp = (uint64_t)ss.ss_sp + ss.ss_size;
	uint64_t frame_hi = sp;
	sp = (sp - sizeof(xs.region)) & ~63ULL;
	uint64_t frame_lo = ((sp - sizeof(struct dune_sigframe)) & ~15ULL) - 8;
	if (dune_stack_guard_overlaps(frame_lo, frame_hi))
		/* the main thread's stack is used up and the handler has no
		 * other: the kernel cannot build the frame either, and kills
		 * with SIGSEGV (force_sigsegv), whatever the handler */
		dune_die_by_signal(SIGSEGV);
	uint8_t *fpstate = (uint8_t *)sp;
	memcpy(fpstate, xs.region, sizeof(xs.region));
	sp = ((sp - sizeof(struct dune_sigframe)) & ~15ULL) - 8;
	struct dune_sigframe *f = (struct dune_sigframe *)sp;
	memset(f, 0, sizeof(*f));
	f->pretcode = act.restorer;
	f->uc.uc_stack = ss;
	if (!(ss.ss_flags & SS_DISABLE))
		f->uc.uc_stack.ss_flags = on_alt ? SS_ONSTACK : 0;
	greg_t *g = f->uc.uc_mcontext.gregs;
	g[REG_R8] = ctx->r8;
	g[REG_R9] = ctx->r9;
	g[REG_R10] = ctx->r10;
	g[REG_R11] = ctx->r11;
	g[REG_R12] = ctx->r12;
	g[REG_R13] = ctx->r13;
	g[REG_R14] = ctx->r14;
	g[REG_R15] = ctx->r15;
	g[REG_RDI] = ctx->rdi;
	g[REG_RSI] = ctx->rsi;
	g[REG_RBP] = ctx->rbp;
	g[REG_RBX] = ctx->rbx;
	g[REG_RDX] = ctx->rdx;
	g[REG_RAX] = ctx->rax;
	g[REG_RCX] = ctx->rcx;
	g[REG_RSP] = ctx->rsp;
	g[REG_RIP] = ctx->rip;
	g[REG_EFL] = ctx->rflags;
	g[REG_CSGSFS] = GDT_KCODE;
	g[REG_ERR] = err;
	g[REG_TRAPNO] = trapno;
	g[REG_CR2] = cr2;
	f->uc.uc_mcontext.fpregs = (fpregset_t)fpstate;
	uint64_t old = host_mask();
	memcpy(&f->uc.uc_sigmask, &old, sizeof(old));
	f->info = *info;

	uint64_t nm = old | act.mask;
	if (!(act.flags & KSA_NODEFER))
		nm |= sigbit(sig);
	dune_sys6(SYS_rt_sigprocmask, SIG_SETMASK, (long)&nm, 0, 8, 0, 0);
	if (act.flags & KSA_RESETHAND) {
		struct ksigaction dfl = {0, 0, 0, 0};
		prog_act[sig] = dfl;
		routed[sig] = 0;
		dune_sys6(SYS_rt_sigaction, sig, (long)&dfl, 0, 8, 0, 0);
	}

	struct kvm_regs r = *ctx;
	r.rip = act.handler;
	r.rdi = sig;
	r.rsi = (uint64_t)&f->info;
	r.rdx = (uint64_t)&f->uc;
	r.rax = 0;
	r.rsp = sp;
	r.rflags = (ctx->rflags & ~0x500ULL) | 2; /* clear TF and DF */
	dune_drv->set_regs(v, &r);
	v->in_kernel = v->in_trap = v->in_hook = 0;
	v->sig_check = 0;
}

/* The lowest pending signal that still has a handler; others are dropped
 * (ignored, or defaulted meanwhile: the kernel re-raises those itself). */
static int next_signal(struct dune_vcpu *v, siginfo_t *info)
{
	for (;;) {
		uint64_t p = __atomic_load_n(&v->sig_pending, __ATOMIC_SEQ_CST);
		if (!p)
			return 0;
		int sig = __builtin_ctzll(p) + 1;
		*info = v->siginfo[sig];
		__atomic_and_fetch(&v->sig_pending, ~sigbit(sig), __ATOMIC_SEQ_CST);
		if (prog_act[sig].handler > 1)
			return sig;
	}
}

static void after_inject(struct dune_vcpu *v)
{
	/* more to deliver: come straight back out (nested frames, like the
	 * kernel) */
	if (v->sig_pending)
		*v->kick = 1;
}

/*
 * Stopped on the way back from libdune's guest code to the program (after
 * the C part returned, so its own check is past): the frame that holds the
 * program's context, or NULL.  At the very last instruction of each path
 * the context is in the registers already: *ctx is filled and 1 returned.
 */
static struct dune_tf *tail_frame(const struct kvm_regs *r, struct kvm_regs *ctx,
				  int *in_regs)
{
	uint64_t rip = r->rip;
	*in_regs = 0;
	if (rip == (uint64_t)dune_sc_ret)
		return (struct dune_tf *)r->rbx;
	if ((rip >= (uint64_t)dune_sc_tail && rip < (uint64_t)dune_sc_popf) ||
	    (rip >= (uint64_t)dune_sc_tail2 && rip < (uint64_t)dune_sc_jmp) ||
	    (rip >= (uint64_t)dune_trap_ret && rip < (uint64_t)dune_trap_iret))
		return (struct dune_tf *)r->rsp;
	if (rip == (uint64_t)dune_sc_popf)
		return (struct dune_tf *)(r->rsp + 8);
	if (rip == (uint64_t)dune_sc_jmp) {
		*ctx = *r;
		ctx->rip = r->rcx;
		*in_regs = 1;
	} else if (rip == (uint64_t)dune_trap_iret) {
		const uint64_t *hw = (const uint64_t *)r->rsp;
		*ctx = *r;
		ctx->rip = hw[0];
		ctx->rflags = hw[2] | 2;
		ctx->rsp = hw[3];
		*in_regs = 1;
	}
	return NULL;
}

/* The run returned EINTR: the guest is stopped between two instructions. */
void dune_signals_at_exit(struct dune_vcpu *v)
{
	struct kvm_regs r, ctx;
	if (!v->sig_pending)
		return;
	if (dune_drv->get_regs(v, &r))
		return;
	if (v->in_kernel == 0) {
		int in_regs;
		struct dune_tf *tf = tail_frame(&r, &ctx, &in_regs);
		if (tf) {
			v->tf = tf;
			dune_signals_at_frame(v);
			return;
		}
		if (in_regs) {
			siginfo_t info;
			int sig = next_signal(v, &info);
			if (sig)
				inject(v, &ctx, sig, &info, 0, 0, 0);
			after_inject(v);
			return;
		}
	}
	if (v->in_kernel || (r.rip >= (uint64_t)dune_entry_text_start &&
			     r.rip < (uint64_t)dune_entry_text_end)) {
		/* inside libdune's guest code: it leaves by DUNE_PORT_SIGNAL */
		v->sig_check = 1;
		return;
	}
	siginfo_t info;
	int sig = next_signal(v, &info);
	if (sig)
		inject(v, &r, sig, &info, 0, 0, 0);
	after_inject(v);
}

static int no_restart(uint64_t nr)
{
	switch (nr) {
	case SYS_pause: case SYS_rt_sigsuspend: case SYS_rt_sigtimedwait:
	case SYS_nanosleep: case SYS_clock_nanosleep: case SYS_select:
	case SYS_pselect6: case SYS_poll: case SYS_ppoll: case SYS_epoll_wait:
	case SYS_epoll_pwait: case SYS_epoll_pwait2: case SYS_io_getevents:
	case SYS_msgrcv: case SYS_msgsnd: case SYS_semop: case SYS_semtimedop:
		return 1;
	}
	return 0;
}

/* The guest left by DUNE_PORT_SIGNAL with v->tf: the context to interrupt. */
void dune_signals_at_frame(struct dune_vcpu *v)
{
	struct dune_tf *tf = v->tf;
	siginfo_t info;
	int sig = next_signal(v, &info);
	if (!sig)
		return; /* nothing left: the guest goes on */
	dune_vcpu_complete_io(v);
	struct kvm_regs r;
	dune_regs_of_tf(&r, tf);
	if (tf->vector == DUNE_SYSCALL_VECTOR) {
		/* as the kernel leaves a system call: rcx = rip, r11 = flags */
		r.rcx = tf->rip;
		r.r11 = tf->rflags;
		if ((long)tf->rax == -EINTR && (prog_act[sig].flags & KSA_RESTART) &&
		    !no_restart(tf->err)) {
			r.rax = tf->err; /* the number: run it again */
			r.rip -= 2;      /* the syscall instruction */
		}
	}
	inject(v, &r, sig, &info, 0, 0, 0);
	after_inject(v);
}

/* A guest fault (tf != NULL: a trap frame; else the current registers, for
 * the run's EFAULT) for which the program has a handler: deliver it as the
 * kernel would.  0 if delivered; -1 if the process must die instead. */
int dune_signal_fault(struct dune_vcpu *v, struct dune_tf *tf, int sig,
		      uint64_t addr, int from_regs)
{
	if (!routable(sig) || prog_act[sig].handler <= 1 ||
	    (host_mask() & sigbit(sig)))
		return -1;
	struct kvm_regs r;
	siginfo_t info;
	memset(&info, 0, sizeof(info));
	info.si_signo = sig;
	uint64_t vec = 0, err = 0;
	if (from_regs) {
		if (dune_drv->get_regs(v, &r))
			return -1;
		info.si_code = SEGV_MAPERR;
		vec = 14;
	} else {
		dune_vcpu_complete_io(v);
		dune_regs_of_tf(&r, tf);
		vec = tf->vector;
		err = tf->err;
		switch (vec) {
		case 14:
			info.si_code = (err & 1) ? SEGV_ACCERR : SEGV_MAPERR;
			break;
		case 6:
			info.si_code = ILL_ILLOPN;
			break;
		case 0:
			info.si_code = FPE_INTDIV;
			break;
		case 3:
		case 1:
			info.si_code = TRAP_BRKPT;
			break;
		default:
			info.si_code = SI_KERNEL;
			break;
		}
	}
	info.si_addr = (void *)(vec == 14 ? addr : r.rip);
	inject(v, &r, sig, &info, err, vec, vec == 14 ? addr : 0);
	return 0;
}

/* rt_sigreturn from the guest's handler: rsp points at the frame's
 * ucontext (the handler's `ret` popped pretcode). */
void dune_sys_rt_sigreturn(struct dune_vcpu *v)
{
	struct dune_tf *tf = v->tf;
	ucontext_t *uc = (ucontext_t *)tf->rsp;
	greg_t *g = uc->uc_mcontext.gregs;
	uint64_t mask;
	memcpy(&mask, &uc->uc_sigmask, sizeof(mask));
	dune_vcpu_complete_io(v);
	struct kvm_regs r;
	memset(&r, 0, sizeof(r));
	r.r8 = g[REG_R8];
	r.r9 = g[REG_R9];
	r.r10 = g[REG_R10];
	r.r11 = g[REG_R11];
	r.r12 = g[REG_R12];
	r.r13 = g[REG_R13];
	r.r14 = g[REG_R14];
	r.r15 = g[REG_R15];
	r.rdi = g[REG_RDI];
	r.rsi = g[REG_RSI];
	r.rbp = g[REG_RBP];
	r.rbx = g[REG_RBX];
	r.rdx = g[REG_RDX];
	r.rax = g[REG_RAX];
	r.rcx = g[REG_RCX];
	r.rsp = g[REG_RSP];
	r.rip = g[REG_RIP];
	r.rflags = (g[REG_EFL] & ~0x100ULL) | 2;
	dune_drv->set_regs(v, &r);
	if (uc->uc_mcontext.fpregs) {
		struct kvm_xsave xs;
		memcpy(xs.region, uc->uc_mcontext.fpregs, sizeof(xs.region));
		dune_drv->set_xsave(v, &xs);
	}
	v->in_kernel = v->in_trap = v->in_hook = 0;
	v->sig_check = 0;
	/* may unblock pending signals: the kernel delivers them to our host
	 * handler on the way out of this call */
	dune_sys6(SYS_rt_sigprocmask, SIG_SETMASK, (long)&mask, 0, 8, 0, 0);
	after_inject(v);
}
