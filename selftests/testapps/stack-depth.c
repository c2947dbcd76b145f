/* SPDX-License-Identifier: MIT */
/*
 * Uses a stack deeply, as a compiler's recursive descent does, so that the
 * suites can check a program in the guest gets the stack it would get on the
 * host (issue 18: the main thread's stack grows on demand, and a guest's
 * touch below its current bottom used to kill the process).
 *
 *   stack-depth main MIB [LIMIT_MIB]
 *                            recursion on the main thread down to MIB MiB
 *                            below the top of its stack, after raising
 *                            RLIMIT_STACK to LIMIT_MIB if given (as gcc
 *                            raises its own to 64 MiB); prints
 *                            "main: used N MiB", exits 0
 *   stack-depth thread MIB   a pthread with a MIB MiB stack, used down to
 *                            its last 64 KiB; prints "thread: used N MiB"
 *   stack-depth overflow     unbounded recursion on the main thread with a
 *                            SIGSEGV handler on a sigaltstack: the handler
 *                            checks it runs on the alternate stack with
 *                            si_addr next to the deepest frame, prints
 *                            "overflow: caught at N MiB on the alternate
 *                            stack" and exits 42
 *
 * A plain program (no Dangless, no libdune): the suites run it under
 * libdune-preload.so or libdangless.so.
 */
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

/* Each level touches every page of its frame, top to bottom, as a push or
 * a local array would. */
#define FRAME_BYTES 4096

static uintptr_t stack_top;        /* an address near the top of the stack */
static uintptr_t stop_below;       /* recursion ends when a frame is under */
static volatile uintptr_t deepest; /* the lowest frame reached so far */

__attribute__((noinline)) static unsigned long recurse(unsigned long depth)
{
	volatile char frame[FRAME_BYTES];
	for (size_t i = FRAME_BYTES; i > 0; i -= 512)
		frame[i - 1] = (char)depth;
	deepest = (uintptr_t)frame;
	if ((uintptr_t)frame < stop_below)
		return depth;
	/* used after the call, so that it is no tail call */
	return recurse(depth + 1) + frame[0] * 0;
}

static double mib(uintptr_t bytes)
{
	return (double)bytes / (1024.0 * 1024.0);
}

static int main_stack(unsigned long want_mib, unsigned long limit_mib)
{
	if (limit_mib) {
		struct rlimit rl = {.rlim_cur = limit_mib * 1024 * 1024,
				    .rlim_max = RLIM_INFINITY};
		if (getrlimit(RLIMIT_STACK, &rl) == 0)
			rl.rlim_cur = limit_mib * 1024 * 1024;
		if (setrlimit(RLIMIT_STACK, &rl))
			return 2;
	}
	char here;
	stack_top = (uintptr_t)&here;
	stop_below = stack_top - want_mib * 1024 * 1024;
	recurse(0);
	printf("main: used %.0f MiB\n", mib(stack_top - deepest));
	return 0;
}

static void *thread_body(void *arg)
{
	(void)arg;
	pthread_attr_t a;
	void *lo;
	size_t size;
	if (pthread_getattr_np(pthread_self(), &a) ||
	    pthread_attr_getstack(&a, &lo, &size))
		return (void *)1;
	pthread_attr_destroy(&a);
	char here;
	stack_top = (uintptr_t)&here;
	/* to the end: stop one frame and a margin above its lowest byte */
	stop_below = (uintptr_t)lo + 64 * 1024;
	recurse(0);
	printf("thread: used %.0f MiB of %.0f\n", mib(stack_top - deepest),
	       mib(size));
	return NULL;
}

static int thread_stack(unsigned long want_mib)
{
	pthread_attr_t a;
	pthread_t t;
	void *ret = (void *)1;
	if (pthread_attr_init(&a) ||
	    pthread_attr_setstacksize(&a, want_mib * 1024 * 1024) ||
	    pthread_create(&t, &a, thread_body, NULL) || pthread_join(t, &ret))
		return 2;
	return ret ? 3 : 0;
}

static char altstack[256 * 1024];

static void on_overflow(int sig, siginfo_t *si, void *uc)
{
	(void)sig;
	(void)uc;
	char here;
	char msg[160];
	uintptr_t p = (uintptr_t)&here, addr = (uintptr_t)si->si_addr;
	int on_alt = p >= (uintptr_t)altstack &&
		     p < (uintptr_t)altstack + sizeof(altstack);
	/* the fault is in the deepest frame (the page of its lowest bytes
	 * may be touched only after it was recorded) or at most one more
	 * frame and a call's push below it */
	int addr_ok = addr < deepest + FRAME_BYTES &&
		      addr + 2 * FRAME_BYTES >= deepest;
	int n = snprintf(msg, sizeof(msg),
			 "overflow: caught at %.0f MiB %s, si_addr %s\n",
			 mib(stack_top - deepest),
			 on_alt ? "on the alternate stack" : "NOT on the alternate stack",
			 addr_ok ? "next to the deepest frame" : "ELSEWHERE");
	if (!addr_ok && n > 0 && (size_t)n < sizeof(msg))
		n += snprintf(msg + n - 1, sizeof(msg) - (size_t)n + 1,
			      " (si_addr %#lx, deepest frame %#lx, code %d)\n",
			      (unsigned long)addr, (unsigned long)deepest,
			      si->si_code) - 1;
	if (write(1, msg, (size_t)n) < 0)
		_exit(5);
	_exit(on_alt && addr_ok ? 42 : 4);
}

static int overflow(void)
{
	stack_t ss = {.ss_sp = altstack, .ss_size = sizeof(altstack)};
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = on_overflow;
	sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
	if (sigaltstack(&ss, NULL) || sigaction(SIGSEGV, &sa, NULL))
		return 2;
	char here;
	stack_top = (uintptr_t)&here;
	stop_below = 0;
	recurse(0);
	return 3; /* unreachable: the stack is not endless */
}

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IONBF, 0);
	if ((argc == 3 || argc == 4) && !strcmp(argv[1], "main"))
		return main_stack(strtoul(argv[2], NULL, 0),
				  argc == 4 ? strtoul(argv[3], NULL, 0) : 0);
	if (argc == 3 && !strcmp(argv[1], "thread"))
		return thread_stack(strtoul(argv[2], NULL, 0));
	if (argc == 2 && !strcmp(argv[1], "overflow"))
		return overflow();
	fprintf(stderr, "usage: stack-depth main MIB [LIMIT_MIB] | thread MIB | "
			"overflow\n");
	return 2;
}
