/* SPDX-License-Identifier: MIT */
/*
 * libdune's messages and ways to die: the text dune_strerror() returns, the
 * one-line reasons on stderr, and ending the process as the host kernel
 * would.  Output is a raw write(2), not stdio: the vCPU loop reports from
 * its own stack in the middle of the program's system calls.
 */
#include "internal.h"

#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>

char dune_errbuf[256];
int dune_fail_quiet;
struct dune_env dune_env;

void dune_env_read(void)
{
	dune_env.quiet = getenv("DUNE_QUIET") != NULL;
	dune_env.no_kernel_syscalls = getenv("DUNE_NO_KERNEL_SYSCALLS") != NULL;
	dune_env.allow_no_hwvirt = getenv("DUNE_ALLOW_NO_HWVIRT") != NULL;
	const char *ipi = getenv("DUNE_IPI");
	dune_env.ipi = !ipi ? -1 : strcmp(ipi, "0") != 0;
	const char *paging = getenv("DUNE_PAGING");
	dune_env.paging = !paging || !*paging    ? 0
			  : !strcmp(paging, "4") ? 4
			  : !strcmp(paging, "5") ? 5
						 : -1;
	dune_env.read = true;
}

void dune_write_str(const char *s)
{
	dune_sys3(SYS_write, 2, s, strlen(s));
}

int dune_fail(int err, const char *fmt, ...)
{
	va_list ap;
	int n = snprintf(dune_errbuf, sizeof(dune_errbuf), "dune: ");
	va_start(ap, fmt);
	vsnprintf(dune_errbuf + n, sizeof(dune_errbuf) - n, fmt, ap);
	va_end(ap);
	/* before dune_init nothing runs in the guest: environ is the host's */
	bool quiet = dune_env.read ? dune_env.quiet : getenv("DUNE_QUIET") != NULL;
	if (!dune_fail_quiet && !quiet) {
		dune_write_str(dune_errbuf);
		dune_write_str("\n");
	}
	return err;
}

const char *dune_strerror(void)
{
	return dune_errbuf[0] ? dune_errbuf : "dune: no error";
}

/* Ends the process the way the host kernel would for this signal. */
void dune_die_by_signal(int sig)
{
	struct {
		unsigned long handler, flags, restorer, mask;
	} sa = {0, 0, 0, 0};
	unsigned long set = 1UL << (sig - 1);
	dune_sys6(SYS_rt_sigaction, sig, (long)&sa, 0, 8, 0, 0);
	dune_sys6(SYS_rt_sigprocmask, SIG_UNBLOCK, (long)&set, 0, 8, 0, 0);
	dune_sys3(SYS_tgkill, dune_sys0(SYS_getpid), dune_sys0(SYS_gettid), sig);
	dune_sys1(SYS_exit_group, 128 + sig);
	__builtin_unreachable();
}

void dune_die(void)
{
	dune_sys1(SYS_exit_group, 1);
	__builtin_unreachable();
}
