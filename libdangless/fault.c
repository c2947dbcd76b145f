/* SPDX-License-Identifier: MIT */
/*
 * The fault handler: a SIGSEGV or SIGBUS in a revoked alias is reported
 * (async-signal-safely, on its own stack) and the process then dies of
 * SIGSEGV by the default action, so exit status and core dumps are right.
 * Any other fault goes to the program's own handler, or the default.
 *
 * The program may install its own SIGSEGV/SIGBUS handlers later; sigaction()
 * and signal() are interposed so that such a handler is recorded as the one
 * to chain to, and ours stays installed.
 */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <ucontext.h>
#include <unistd.h>

#include "internal.h"

#define DL_ALTSTACK_SIZE (64 << 10)

/* glibc's own sigaction, under its public internal name. */
extern int __sigaction(int, const struct sigaction *, struct sigaction *);

static bool dl_handler_installed;
static struct sigaction dl_chained[2]; /* SIGSEGV, SIGBUS */
static dl_lock_t dl_chain_lock;
static bool dl_world_noted;

static int dl_slot(int sig)
{
	return sig == SIGSEGV ? 0 : sig == SIGBUS ? 1 : -1;
}

static void dl_reset_default(int sig)
{
	struct sigaction dfl = {.sa_handler = SIG_DFL};
	sigemptyset(&dfl.sa_mask);
	__sigaction(sig, &dfl, NULL);
}

/* Hands a fault that is not ours to whoever would have had it. */
static void dl_chain(int sig, siginfo_t *info, void *uc)
{
	struct sigaction act = dl_chained[dl_slot(sig)];
	if (act.sa_flags & SA_SIGINFO) {
		if (act.sa_flags & SA_RESETHAND)
			dl_chained[dl_slot(sig)].sa_handler = SIG_DFL;
		act.sa_sigaction(sig, info, uc);
		return;
	}
	if (act.sa_handler == SIG_DFL || act.sa_handler == SIG_IGN) {
		/* A synchronous fault cannot be ignored: returning re-runs the
		 * access, which now takes the default action. */
		dl_reset_default(sig);
		return;
	}
	if (act.sa_flags & SA_RESETHAND)
		dl_chained[dl_slot(sig)].sa_handler = SIG_DFL;
	act.sa_handler(sig);
}

static const char *dl_access_kind(const ucontext_t *uc)
{
#if defined(__x86_64__)
	/* Page-fault error code bit 1: the access was a write. */
	return (uc->uc_mcontext.gregs[REG_ERR] & 2) ? "WRITE" : "READ";
#else
	(void)uc;
	return "ACCESS";
#endif
}

/*
 * Bytes the faulting instruction accesses, decoded for the integer moves
 * and arithmetic compilers emit for plain loads and stores; 0 (not said)
 * for the rest: SSE/AVX, string instructions, x87.
 */
static unsigned dl_access_size(const ucontext_t *uc)
{
#if defined(__x86_64__)
	const uint8_t *ip = (const uint8_t *)uc->uc_mcontext.gregs[REG_RIP];
	bool operand16 = false, rex_w = false;
	for (int i = 0; i < 4; i++, ip++) {
		if (*ip == 0x66)
			operand16 = true;
		else if (*ip != 0xf0 && *ip != 0x67 && *ip != 0x64 &&
			 *ip != 0x65 && *ip != 0x2e && *ip != 0x3e &&
			 *ip != 0x26 && *ip != 0x36)
			break;
	}
	if ((*ip & 0xf0) == 0x40)
		rex_w = *ip++ & 8;
	unsigned full = rex_w ? 8 : operand16 ? 2 : 4;
	uint8_t op = ip[0], reg = (ip[1] >> 3) & 7;
	if (op == 0x0f)
		return ip[1] == 0xb6 || ip[1] == 0xbe   ? 1 /* movzx/movsx m8 */
		       : ip[1] == 0xb7 || ip[1] == 0xbf ? 2
							: 0;
	/* ALU r/m8 forms (add, or, adc, sbb, and, sub, xor, cmp: 00, 02 ...) */
	if (op < 0x40 && (op & 7) <= 3)
		return (op & 1) ? full : 1;
	switch (op) {
	case 0x88: case 0x8a: case 0xc6: case 0x80: case 0x84: case 0x86:
	case 0xf6: case 0xfe: case 0xc0: case 0xd0: case 0xd2:
		return 1;
	case 0x89: case 0x8b: case 0xc7: case 0x81: case 0x83: case 0x85:
	case 0x87: case 0xf7: case 0xc1: case 0xd1: case 0xd3:
		return full;
	case 0x63: /* movsxd */
		return 4;
	case 0x8f: /* pop m64 */
		return 8;
	case 0xff: /* call, jmp, push m64 are 64-bit whatever the prefix */
		return reg == 2 || reg == 4 || reg == 6 ? 8 : reg <= 1 ? full : 0;
	}
#else
	(void)uc;
#endif
	return 0;
}

DL_REALIGN_STACK static void dl_fault(int sig, siginfo_t *info, void *ucv)
{
	int saved = errno;
	ucontext_t *uc = ucv;
	uintptr_t addr = (uintptr_t)info->si_addr;
	char what[384];
	struct dl_buf w = {what, 0, sizeof(what)};
	uint32_t alloc_stack, free_stack;
	const char *kind = info->si_code <= 0 /* sent by kill(), not a fault */
				   ? NULL
				   : _dl_describe_fault(addr, &w, &alloc_stack,
							&free_stack);
	if (!kind) {
		errno = saved;
		dl_chain(sig, info, ucv);
		return;
	}
	/* An empty line first: the report's lines start lines even after a
	 * half-written line of the program's (we cannot know its column). */
	char msg[512];
	struct dl_buf b = {msg, 0, sizeof(msg)};
	_dl_buf_str(&b, "\ndangless: ");
	_dl_buf_str(&b, !strcmp(kind, "heap-use-after-free") ? "use-after-free "
							     : "out-of-bounds ");
	_dl_buf_str(&b, dl_access_kind(uc));
	unsigned size = dl_access_size(uc);
	if (size) {
		_dl_buf_str(&b, " of size ");
		_dl_buf_dec(&b, size);
	}
	_dl_buf_str(&b, " at ");
	_dl_buf_hex(&b, addr);
	_dl_buf_str(&b, ": ");
	_dl_buf_str(&b, what);
	_dl_buf_str(&b, "\n");
	_dl_write_all(_dl_out_fd(), msg, b.len);

	void *frames[DL_MAX_FRAMES + 1];
	int n = _dl_backtrace(frames, DL_MAX_FRAMES + 1);
	/* Start at the faulting instruction, not in the handler. */
	void *pc = (void *)uc->uc_mcontext.gregs[REG_RIP];
	int first = 0;
	for (int i = 0; i < n; i++)
		if (frames[i] == pc)
			first = i;
	if (!first) {
		frames[0] = pc;
		n = 1;
	}
	struct dl_top_frame top = {.raw = false};
	_dl_printf("dangless: at:");
	_dl_backtrace_print(frames + first, n - first, true, &top);
	_dl_report_end(kind, &top, alloc_stack, free_stack);
	if (_dl_opt.abort_on_error)
		abort();
	if (_dl_be && _dl_be->die_after_report)
		_dl_be->die_after_report(sig);
	/* Die of the signal itself: returning re-runs the access. */
	dl_reset_default(SIGSEGV);
	dl_reset_default(SIGBUS);
	errno = saved;
}

static __thread void *dl_altstack __attribute__((tls_model("initial-exec")));

void _dl_fault_thread_init(void)
{
	stack_t cur;
	if (sigaltstack(NULL, &cur) == 0 && !(cur.ss_flags & SS_DISABLE))
		return; /* the program has its own */
	void *mem = _dl_meta_pages(DL_ALTSTACK_SIZE);
	if (!mem)
		return;
	stack_t st = {.ss_sp = mem, .ss_size = DL_ALTSTACK_SIZE};
	if (sigaltstack(&st, NULL) == 0)
		dl_altstack = mem;
	else
		_dl_meta_unpages(mem, DL_ALTSTACK_SIZE);
}

/* A thread's alternate stack goes with it (threads may come and go by the
 * million; each stack is a mapping). */
void _dl_fault_thread_exit(void)
{
	stack_t cur, off = {.ss_flags = SS_DISABLE};
	if (!dl_altstack || sigaltstack(NULL, &cur) != 0 ||
	    cur.ss_sp != dl_altstack || (cur.ss_flags & SS_ONSTACK))
		return;
	if (sigaltstack(&off, NULL) == 0) {
		_dl_meta_unpages(dl_altstack, DL_ALTSTACK_SIZE);
		dl_altstack = NULL;
	}
}

void _dl_fault_init(void)
{
	struct sigaction act = {.sa_sigaction = dl_fault,
				.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_NODEFER};
	sigemptyset(&act.sa_mask);
	_dl_lock(&dl_chain_lock);
	__sigaction(SIGSEGV, &act, &dl_chained[0]);
	__sigaction(SIGBUS, &act, &dl_chained[1]);
	dl_handler_installed = true;
	_dl_unlock(&dl_chain_lock);
	_dl_fault_thread_init();
}

/* ---- interposed: the program's view of SIGSEGV/SIGBUS ---- */

DL_EXPORT int sigaction(int sig, const struct sigaction *act,
			struct sigaction *old)
{
	int slot = dl_slot(sig);
	if (sig == _dl_world_signal() && sig) {
		/* Sweeps stop threads with it: the program's handler is not
		 * installed (one note), and it reads back as the default. */
		if (act && !dl_world_noted) {
			dl_world_noted = true;
			_dl_info("the program's handler for signal %d is not "
				 "installed: Dangless stops threads with it "
				 "for its sweeps", sig);
		}
		if (old) {
			memset(old, 0, sizeof(*old));
			old->sa_handler = SIG_DFL;
		}
		return 0;
	}
	if (slot < 0 || !dl_handler_installed)
		return __sigaction(sig, act, old);
	_dl_lock(&dl_chain_lock);
	if (old)
		*old = dl_chained[slot];
	if (act)
		dl_chained[slot] = *act;
	_dl_unlock(&dl_chain_lock);
	return 0;
}

static sighandler_t dl_signal(int sig, sighandler_t handler, int flags)
{
	struct sigaction act = {.sa_handler = handler, .sa_flags = flags},
			 old;
	sigemptyset(&act.sa_mask);
	sigaddset(&act.sa_mask, sig);
	if (sigaction(sig, &act, &old) < 0)
		return SIG_ERR;
	return old.sa_handler;
}

DL_EXPORT sighandler_t signal(int sig, sighandler_t handler)
{
	return dl_signal(sig, handler, SA_RESTART);
}

DL_EXPORT sighandler_t bsd_signal(int sig, sighandler_t handler)
{
	return dl_signal(sig, handler, SA_RESTART);
}

DL_EXPORT sighandler_t sysv_signal(int sig, sighandler_t handler)
{
	return dl_signal(sig, handler, SA_RESETHAND | SA_NODEFER);
}
