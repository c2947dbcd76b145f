/* SPDX-License-Identifier: MIT */
/*
 * Stopping the world for a sweep (reclaim.c), and reading what the kernel
 * says about the process (/proc/self/task, /proc/self/maps) without
 * allocating.
 *
 * The sweeping thread sends DL_WORLD_SIG to every other thread it finds in
 * /proc/self/task.  The handler saves the thread's registers as the kernel
 * left them in its signal frame (general-purpose and the FPU/SSE/AVX state:
 * a pointer may sit in an XMM register between a memcpy's load and store),
 * and its alternate signal stack, in its slot, says so, and waits on a
 * futex until the sweep is over.  The sweeper waits until every thread it
 * signalled has stopped or is gone, then reads /proc/self/task again and
 * signals whoever is new (a thread that was inside clone()), until no new
 * thread shows up.  A thread that does not stop within DL_WORLD_TIMEOUT
 * (it blocks the signal, or is stopped by a debugger) makes the sweep give
 * up: nothing is reclaimed then, which is always safe.
 *
 * Why stop the world rather than sweep alongside the program (MineSweeper,
 * MarkUs): a concurrent sweep must see every pointer the program moves
 * while it scans, which takes a write barrier or a second, stopped pass
 * over what changed (soft-dirty bits), and a mutator may copy the only
 * pointer to a freed range from a page not yet scanned into one already
 * scanned.  Dangless reuses a range only when nothing can point to it, so
 * it must see one consistent picture; with the others stopped, registers
 * and memory are that picture.  Sweeps are rare (alias space is large) and
 * their pause is measured (bench/, README).
 *
 * Everything here is async-signal-safe: raw system calls into buffers the
 * caller gave, no locks, no allocation.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <signal.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>

#include "internal.h"

extern int __sigaction(int, const struct sigaction *, struct sigaction *);

#define DL_WORLD_TIMEOUT_NS (5ull * 1000 * 1000 * 1000)

/* SIGRTMAX - 2: SIGRTMAX - 1 is the kvm backend's TLB shootdown; glibc
 * keeps the lowest real-time signals for itself. */
static int dl_world_sig(void)
{
	return SIGRTMAX - 2;
}

static struct {
	struct dl_world_slot *slots;
	unsigned cap;
	atomic_uint n;            /* slots in use this sweep */
	atomic_int active;        /* a sweep is stopping or has stopped */
	atomic_uint gen;          /* futex: bumped to let them go */
	atomic_uint stopped;      /* futex: bumped by each that stops */
	pid_t pid;
	bool installed;
} dl_world;

static long dl_futex(atomic_uint *word, int op, unsigned val,
		     const struct timespec *timeout)
{
	return syscall(SYS_futex, word, op | FUTEX_PRIVATE_FLAG, val, timeout,
		       NULL, 0);
}

static pid_t dl_gettid(void)
{
	return (pid_t)syscall(SYS_gettid);
}

/* Offsets in the FXSAVE image of the software bytes the kernel adds when
 * the frame holds an XSAVE image (struct _fpx_sw_bytes). */
#define DL_FPX_SW_OFF 464
#define DL_FP_XSTATE_MAGIC1 0x46505853u

static void dl_world_save(struct dl_world_slot *s, const ucontext_t *uc)
{
	size_t len = sizeof(uc->uc_mcontext.gregs);
	memcpy(s->regs, uc->uc_mcontext.gregs, len);
	s->sp = (uintptr_t)uc->uc_mcontext.gregs[REG_RSP];
	const unsigned char *fp = (const void *)uc->uc_mcontext.fpregs;
	if (fp) {
		size_t fl = 512;
		uint32_t magic, size;
		memcpy(&magic, fp + DL_FPX_SW_OFF, 4);
		memcpy(&size, fp + DL_FPX_SW_OFF + 16, 4); /* xstate_size */
		if (magic == DL_FP_XSTATE_MAGIC1 && size > fl)
			fl = size;
		if (fl > sizeof(s->regs) - len)
			fl = sizeof(s->regs) - len;
		memcpy(s->regs + len, fp, fl);
		len += fl;
	}
	s->regs_len = len;
	stack_t ss;
	s->altstack = s->altstack_len = 0;
	if (!syscall(SYS_sigaltstack, NULL, &ss) && !(ss.ss_flags & SS_DISABLE)) {
		s->altstack = (uintptr_t)ss.ss_sp;
		s->altstack_len = ss.ss_size;
	}
}

static struct dl_world_slot *dl_world_find(pid_t tid)
{
	unsigned n = atomic_load(&dl_world.n);
	for (unsigned i = 0; i < n && i < dl_world.cap; i++)
		if (atomic_load(&dl_world.slots[i].tid) == tid)
			return &dl_world.slots[i];
	return NULL;
}

DL_REALIGN_STACK static void dl_world_handler(int sig, siginfo_t *si,
					      void *uc)
{
	(void)sig;
	int saved = errno;
	/* Only our own tgkill: a stray kill(2) of this number is ignored. */
	if (si->si_code != SI_TKILL || si->si_pid != dl_world.pid)
		goto out;
	unsigned gen = atomic_load(&dl_world.gen);
	if (!atomic_load(&dl_world.active))
		goto out; /* late, from a sweep that gave up: nothing to do */
	struct dl_world_slot *s = dl_world_find(dl_gettid());
	int expect = DL_WORLD_SIGNALLED;
	if (!s || !atomic_compare_exchange_strong(&s->state, &expect,
						  DL_WORLD_SAVING))
		goto out;
	dl_world_save(s, uc);
	atomic_store(&s->state, DL_WORLD_STOPPED);
	atomic_fetch_add(&dl_world.stopped, 1);
	dl_futex(&dl_world.stopped, FUTEX_WAKE, 1, NULL);
	while (atomic_load(&dl_world.gen) == gen)
		dl_futex(&dl_world.gen, FUTEX_WAIT, gen, NULL);
out:
	errno = saved;
}

int _dl_world_signal(void)
{
	return dl_world.installed ? dl_world_sig() : 0;
}

bool _dl_world_prepare(struct dl_world_slot *slots, unsigned cap)
{
	dl_world.slots = slots;
	dl_world.cap = cap;
	if (dl_world.installed)
		return true;
	struct sigaction act = {.sa_sigaction = dl_world_handler,
				.sa_flags = SA_SIGINFO | SA_RESTART};
	/* Nothing else runs on a stopped thread: a handler of the program's
	 * could move a pointer the sweep has not read yet. */
	sigfillset(&act.sa_mask);
	if (__sigaction(dl_world_sig(), &act, NULL))
		return false;
	dl_world.installed = true;
	return true;
}

/* ---- reading /proc without allocating ---- */

static int dl_open(const char *path)
{
	return (int)syscall(SYS_openat, AT_FDCWD, path, O_RDONLY | O_CLOEXEC,
			    0);
}

static int dl_open_dir(const char *path)
{
	return (int)syscall(SYS_openat, AT_FDCWD, path,
			    O_RDONLY | O_CLOEXEC | O_DIRECTORY, 0);
}

struct dl_dirent64 {
	uint64_t ino;
	int64_t off;
	unsigned short reclen;
	unsigned char type;
	char name[];
};

/* Calls fn for every thread of the process but the caller; false when the
 * directory could not be read. */
static bool dl_for_each_task(char *buf, size_t len,
			     bool (*fn)(pid_t tid, void *ctx), void *ctx)
{
	int fd = dl_open_dir("/proc/self/task");
	if (fd < 0)
		return false;
	pid_t self = dl_gettid();
	bool ok = true;
	for (;;) {
		long n = syscall(SYS_getdents64, fd, buf, len);
		if (n <= 0) {
			ok = n == 0;
			break;
		}
		for (long at = 0; at < n;) {
			struct dl_dirent64 *d = (void *)(buf + at);
			at += d->reclen;
			pid_t tid = 0;
			const char *c = d->name;
			if (*c < '0' || *c > '9')
				continue;
			for (; *c >= '0' && *c <= '9'; c++)
				tid = tid * 10 + (*c - '0');
			if (tid != self && !fn(tid, ctx)) {
				ok = false;
				goto done;
			}
		}
	}
done:
	close(fd);
	return ok;
}

static bool dl_task_alive(pid_t tid)
{
	if (syscall(SYS_tgkill, dl_world.pid, tid, 0) != 0)
		return false;
	/* An exiting thread is past signals and never stops; it runs no
	 * more program code either. */
	char path[64], st[256];
	struct dl_buf b = {path, 0, sizeof(path) - 1};
	_dl_buf_str(&b, "/proc/self/task/");
	_dl_buf_dec(&b, (uint64_t)tid);
	_dl_buf_str(&b, "/stat");
	path[b.len] = 0;
	int fd = dl_open(path);
	if (fd < 0)
		return false;
	long n = read(fd, st, sizeof(st) - 1);
	close(fd);
	if (n <= 0)
		return false;
	st[n] = 0;
	const char *p = strrchr(st, ')');
	return !(p && p[1] == ' ' && (p[2] == 'Z' || p[2] == 'X'));
}

static bool dl_world_signal_one(pid_t tid, void *ctx)
{
	bool *grew = ctx;
	if (dl_world_find(tid))
		return true;
	unsigned i = atomic_load(&dl_world.n);
	if (i == dl_world.cap)
		return false; /* more threads than slots: the sweep gives up */
	struct dl_world_slot *s = &dl_world.slots[i];
	atomic_store(&s->state, DL_WORLD_SIGNALLED);
	atomic_store(&s->tid, tid);
	atomic_store(&dl_world.n, i + 1);
	*grew = true;
	if (syscall(SYS_tgkill, dl_world.pid, tid, dl_world_sig()) != 0)
		atomic_store(&s->state, DL_WORLD_GONE);
	return true;
}

static uint64_t dl_now_ns(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

/* Waits until every slot is stopped or gone; false on the timeout. */
static bool dl_world_wait(uint64_t deadline)
{
	for (;;) {
		unsigned seen = atomic_load(&dl_world.stopped);
		bool all = true;
		unsigned n = atomic_load(&dl_world.n);
		for (unsigned i = 0; i < n; i++) {
			int st = atomic_load(&dl_world.slots[i].state);
			if (st == DL_WORLD_STOPPED || st == DL_WORLD_GONE)
				continue;
			all = false;
		}
		if (all)
			return true;
		uint64_t now = dl_now_ns();
		if (now > deadline)
			return false;
		struct timespec ts = {0, 10 * 1000 * 1000};
		if (dl_futex(&dl_world.stopped, FUTEX_WAIT, seen, &ts) != 0 &&
		    errno == ETIMEDOUT) {
			/* Slow: some may have exited meanwhile. */
			for (unsigned i = 0; i < n; i++) {
				struct dl_world_slot *s = &dl_world.slots[i];
				int expect = DL_WORLD_SIGNALLED;
				if (atomic_load(&s->state) == expect &&
				    !dl_task_alive(atomic_load(&s->tid)))
					atomic_compare_exchange_strong(
						&s->state, &expect,
						DL_WORLD_GONE);
			}
		}
	}
}

int _dl_world_stop(char *buf, size_t len, int *stuck)
{
	dl_world.pid = getpid();
	atomic_store(&dl_world.n, 0);
	atomic_store(&dl_world.active, 1);
	uint64_t deadline = dl_now_ns() + DL_WORLD_TIMEOUT_NS;
	*stuck = 0;
	for (;;) {
		bool grew = false;
		if (!dl_for_each_task(buf, len, dl_world_signal_one, &grew))
			return atomic_load(&dl_world.n) == dl_world.cap
				       ? -ENOSPC
				       : -EIO;
		if (!dl_world_wait(deadline)) {
			unsigned n = atomic_load(&dl_world.n);
			for (unsigned i = 0; i < n; i++)
				if (atomic_load(&dl_world.slots[i].state) ==
				    DL_WORLD_SIGNALLED)
					*stuck = atomic_load(
						&dl_world.slots[i].tid);
			return -EAGAIN;
		}
		if (!grew)
			return 0;
	}
}

unsigned _dl_world_stopped(struct dl_world_slot **slots)
{
	*slots = dl_world.slots;
	return atomic_load(&dl_world.n);
}

void _dl_world_resume(void)
{
	atomic_store(&dl_world.active, 0);
	atomic_fetch_add(&dl_world.gen, 1);
	dl_futex(&dl_world.gen, FUTEX_WAKE, INT32_MAX, NULL);
}

/* ---- /proc/self/maps ---- */

static bool dl_hex(const char **p, uintptr_t *out)
{
	uintptr_t v = 0;
	const char *c = *p;
	if (!((*c >= '0' && *c <= '9') || (*c >= 'a' && *c <= 'f')))
		return false;
	for (;; c++) {
		if (*c >= '0' && *c <= '9')
			v = v * 16 + (uintptr_t)(*c - '0');
		else if (*c >= 'a' && *c <= 'f')
			v = v * 16 + (uintptr_t)(*c - 'a' + 10);
		else
			break;
	}
	*p = c;
	*out = v;
	return true;
}

/* One line: "start-end rwxp offset dev inode   path". */
static bool dl_parse_map(const char *l, struct dl_mapping *m)
{
	uintptr_t off, ino;
	if (!dl_hex(&l, &m->start) || *l++ != '-' || !dl_hex(&l, &m->end) ||
	    *l++ != ' ')
		return false;
	m->read = l[0] == 'r';
	m->write = l[1] == 'w';
	m->shared = l[3] == 's';
	l += 4;
	if (*l++ != ' ' || !dl_hex(&l, &off) || *l++ != ' ')
		return false;
	while (*l && *l != ' ') /* dev */
		l++;
	if (*l++ != ' ')
		return false;
	ino = 0;
	for (; *l >= '0' && *l <= '9'; l++)
		ino = ino * 10 + (uintptr_t)(*l - '0');
	while (*l == ' ')
		l++;
	m->inode = ino;
	m->name = l;
	return true;
}

bool _dl_world_for_each_mapping(char *buf, size_t len,
				bool (*fn)(const struct dl_mapping *m,
					   void *ctx),
				void *ctx)
{
	int fd = dl_open("/proc/self/maps");
	if (fd < 0)
		return false;
	size_t have = 0, pos = 0;
	bool ok = true;
	for (;;) {
		char *nl = memchr(buf + pos, '\n', have - pos);
		if (nl) {
			*nl = 0;
			struct dl_mapping m;
			if (dl_parse_map(buf + pos, &m) && !fn(&m, ctx)) {
				ok = false;
				break;
			}
			pos = (size_t)(nl + 1 - buf);
			continue;
		}
		/* No whole line left: keep the part, read more after it. */
		memmove(buf, buf + pos, have - pos);
		have -= pos;
		pos = 0;
		if (have == len - 1) {
			ok = false; /* a line longer than buf: cannot be */
			break;
		}
		long n = read(fd, buf + have, len - 1 - have);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			ok = n == 0 && have == 0;
			break;
		}
		have += (size_t)n;
	}
	close(fd);
	return ok;
}
