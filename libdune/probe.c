/* SPDX-License-Identifier: MIT */
/*
 * The speed probe dune_init() runs before anything else: a short loop of
 * guest ring-0 code in a throw-away child, timed against the same loop on
 * the host, so that a software /dev/kvm (kvm_pvm: ring 0 emulated at ~1 us
 * an instruction, hangs on some instructions) is refused with a clear
 * reason instead of running the program thousands of times slower.  With
 * /dev/dune it also finds the CPU's virtualisation held by KVM.
 */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now_s(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

/* The probe's loop, natively: 200000 iterations of dec/jnz. */
static void host_probe_loop(void)
{
	__asm__ volatile("movl $200000, %%ecx\n1:\tdecl %%ecx\n\tjnz 1b"
			 :
			 :
			 : "rcx", "cc");
}

/*
 * Runs a short loop of guest ring-0 code in a throw-away child and times it
 * against the same loop on the host (best of three each, so a loaded
 * machine slows both alike).
 * A software backend (like kvm_pvm, which emulates ring 0 at ~1 us per
 * instruction and hangs on some instructions) takes far longer or never
 * finishes; nothing here can hang: the child is killed after a deadline.
 * Returns 0 (hardware speed), or a dune_fail() code.
 */
int dune_speed_probe(void)
{
	const double max_ratio = getenv("DUNE_PROBE_MAX_RATIO")
					 ? atof(getenv("DUNE_PROBE_MAX_RATIO"))
					 : 100;
	int pfd[2];
	if (pipe2(pfd, O_CLOEXEC))
		return dune_fail(-errno, "pipe: %s", strerror(errno));
	/* The probe child's SIGCHLD is ours, not the program's: block it and
	 * consume it afterwards unless one was already pending. */
	sigset_t chld, oldmask, pending;
	sigemptyset(&chld);
	sigaddset(&chld, SIGCHLD);
	pthread_sigmask(SIG_BLOCK, &chld, &oldmask);
	sigpending(&pending);
	int chld_was_pending = sigismember(&pending, SIGCHLD);
	pid_t pid = fork();
	if (pid < 0) {
		int e = errno;
		pthread_sigmask(SIG_SETMASK, &oldmask, NULL);
		return dune_fail(-e, "fork: %s", strerror(e));
	}
	if (pid == 0) {
		pthread_sigmask(SIG_SETMASK, &oldmask, NULL);
		char res[sizeof(dune_errbuf) + 16] = "setup";
		close(pfd[0]);
		signal(SIGALRM, SIG_DFL);
		alarm(5);
		dune_fail_quiet = 1;
		if (dune_vm_setup(0) == 0) {
			struct dune_vcpu *v = dune_vcpu_alloc();
			dune_map_range((uint64_t)dune_probe_code, 1);
			if (v && dune_vcpu_create(v, 0) == 0) {
				double guest = 1e9, host = 1e9;
				int ok = 1;
				for (int k = 0; k < 3; k++) {
					double t0 = now_s();
					host_probe_loop();
					double t = now_s() - t0;
					host = t < host ? t : host;
				}
				for (int k = 0; k < 3 && ok; k++) {
					struct kvm_regs r;
					struct dune_run_exit x;
					memset(&r, 0, sizeof(r));
					memset(&x, 0, sizeof(x));
					r.rip = (uint64_t)dune_probe_code;
					r.rsp = v->tss.ist[0];
					r.rflags = 2;
					dune_drv->set_regs(v, &r);
					double t0 = now_s();
					long rc = dune_drv->run(v, &x);
					double t = now_s() - t0;
					guest = t < guest ? t : guest;
					ok = rc == 0 && x.kind == DUNE_X_IO &&
					     x.port == DUNE_PORT_PROBE;
					if (rc == -EBUSY)
						snprintf(res, sizeof(res), "busy");
					else if (!ok)
						snprintf(res, sizeof(res), "exit %ld %d",
							 rc, x.kind);
					/* finish the out before setting rip again */
					dune_drv->complete_io(v);
				}
				if (ok)
					snprintf(res, sizeof(res), "ok %.6f %.6f", guest,
						 host);
			} else if (v) {
				snprintf(res, sizeof(res), "no vCPU");
			}
		} else {
			snprintf(res, sizeof(res), "no VM: %s", dune_errbuf);
		}
		if (write(pfd[1], res, strlen(res) + 1) < 0)
			_exit(2);
		_exit(0);
	}
	close(pfd[1]);
	char buf[sizeof(dune_errbuf) + 16] = "";
	ssize_t got = 0;
	struct pollfd pf = {pfd[0], POLLIN, 0};
	double t0 = now_s();
	for (;;) { /* at most ~4 s in all */
		int left = (int)((4.0 - (now_s() - t0)) * 1000);
		if (left <= 0)
			break;
		int n = poll(&pf, 1, left);
		if (n < 0 && errno == EINTR)
			continue;
		if (n > 0)
			got = read(pfd[0], buf, sizeof(buf) - 1);
		break;
	}
	close(pfd[0]);
	kill(pid, SIGKILL);
	while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
		;
	if (!chld_was_pending) {
		struct timespec zero = {0, 0};
		sigtimedwait(&chld, NULL, &zero);
	}
	pthread_sigmask(SIG_SETMASK, &oldmask, NULL);
	double tg, th;
	const char *dev = dune_drv->device;
	if (got > 0 && sscanf(buf, "ok %lf %lf", &tg, &th) == 2) {
		if (th < 1e-6)
			th = 1e-6;
		if (tg / th > max_ratio || tg > 2.0)
			return dune_fail(-ENODEV,
					 "%s is a software backend: guest ring-0 "
					 "code ran %.0fx slower than the same loop on the "
					 "host (%.2f ms against %.3f ms)",
					 dev, tg / th, tg * 1e3, th * 1e3);
		return 0;
	}
	if (got <= 0)
		return dune_fail(-ENODEV, "%s is not usable: a guest probe did "
					  "not finish in time (software KVM backend?)", dev);
	if (!strcmp(buf, "busy"))
		return dune_fail(-EBUSY, "%s is busy: another hypervisor holds the "
					 "CPU's virtualisation (a KVM virtual machine "
					 "is running?); try again when it has stopped, "
					 "or DUNE_DEVICE=kvm", dev);
	return dune_fail(-ENODEV, "%s is not usable: probe said \"%s\"", dev, buf);
}
