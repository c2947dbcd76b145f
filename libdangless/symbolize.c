/* SPDX-License-Identifier: MIT */
/*
 * Function, file and line for the frames of a report, from a symboliser
 * process (addr2line, or llvm-symbolizer with symbolizer=PATH) started when
 * the report is made.  The faulting process may be in a signal handler or
 * inside malloc: no allocation, no stdio, no locks here.  Fixed buffers,
 * socketpair/vfork/execve/poll/waitpid only, and a deadline, so that a hung
 * symboliser costs the report its file:line, never the report itself.
 *
 * dladdr (used to find each frame's object) is not on POSIX's list of
 * async-signal-safe functions; it takes the loader's lock and reads its
 * tables, which reports have always done (stack.c).
 */
#include <dlfcn.h>
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <link.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

extern char **environ;

/* The whole report's budget for symbolisers (they start, read the debug
 * info of one object each, and print a few lines). */
#define DL_SYM_BUDGET_MS 10000
#define DL_SYM_MAX_ENV 256

static atomic_bool dl_missing_noted;
static atomic_bool dl_timed_out;

static int64_t dl_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The value of name in environ (read-only, no getenv: it is not on the
 * async-signal-safe list either). */
static const char *dl_env(const char *name)
{
	size_t n = strlen(name);
	for (char **e = environ; e && *e; e++)
		if (!strncmp(*e, name, n) && (*e)[n] == '=')
			return *e + n + 1;
	return NULL;
}

/* The symboliser to run, as an absolute path in buf; false when none. */
static bool dl_find_symbolizer(char *buf, size_t cap)
{
	const char *want = _dl_opt.symbolizer[0] ? _dl_opt.symbolizer
						 : "addr2line";
	if (strchr(want, '/')) {
		if (strlen(want) >= cap)
			return false;
		strcpy(buf, want);
		return access(buf, X_OK) == 0;
	}
	/* Under secure execution the user's PATH would choose what runs with
	 * the program's privileges: only the system's own directories. */
	const char *path = _dl_opt.secure ? NULL : dl_env("PATH");
	if (!path || !*path)
		path = "/usr/bin:/bin";
	while (*path) {
		size_t dir = strcspn(path, ":");
		if (dir && dir + 1 + strlen(want) < cap) {
			memcpy(buf, path, dir);
			buf[dir] = '/';
			strcpy(buf + dir + 1, want);
			if (access(buf, X_OK) == 0)
				return true;
		}
		path += dir + (path[dir] == ':');
	}
	return false;
}

/*
 * Runs the symboliser on object with input on its stdin; its stdout goes to
 * out.  Returns the length read, or -1 (cannot start, or out of time).
 */
static ssize_t dl_run(const char *tool, const char *object, const char *input,
		      size_t in_len, char *out, size_t cap, int64_t deadline)
{
	bool llvm = strstr(tool, "llvm-symbolizer") != NULL;
	const char *argv[10];
	int a = 0;
	argv[a++] = tool;
	if (llvm)
		argv[a++] = "--output-style=GNU";
	argv[a++] = "-a"; /* each address first: where one frame's lines end */
	argv[a++] = "-f";
	argv[a++] = "-i";
	argv[a++] = "-C";
	argv[a++] = "-e";
	argv[a++] = object;
	argv[a] = NULL;

	/* Not Dangless in the symboliser, nor the program's preloads. */
	const char *envp[DL_SYM_MAX_ENV + 1];
	int ne = 0;
	if (!_dl_opt.secure)
		for (char **e = environ; e && *e && ne < DL_SYM_MAX_ENV; e++)
			if (strncmp(*e, "LD_PRELOAD=", 11) &&
			    strncmp(*e, "DANGLESS_OPTIONS=", 17))
				envp[ne++] = *e;
	envp[ne] = NULL;

	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv))
		return -1;
	int devnull = open("/dev/null", O_WRONLY | O_CLOEXEC);
	pid_t pid = vfork();
	if (pid == 0) {
		dup2(sv[1], 0);
		dup2(sv[1], 1);
		if (devnull >= 0)
			dup2(devnull, 2);
		execve(tool, (char *const *)argv, (char *const *)envp);
		_exit(127);
	}
	close(sv[1]);
	if (devnull >= 0)
		close(devnull);
	if (pid < 0) {
		close(sv[0]);
		return -1;
	}
	/* A few hundred bytes: fits the socket buffer in one go; no SIGPIPE
	 * if the symboliser is already gone. */
	ssize_t sent = send(sv[0], input, in_len, MSG_NOSIGNAL);
	shutdown(sv[0], SHUT_WR);
	size_t len = 0;
	bool timed_out = false;
	while (sent == (ssize_t)in_len && len + 1 < cap) {
		int64_t left = deadline - dl_now_ms();
		struct pollfd pfd = {.fd = sv[0], .events = POLLIN};
		if (left <= 0) {
			timed_out = true;
			break;
		}
		int r = poll(&pfd, 1, (int)left);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			timed_out = r == 0;
			break;
		}
		ssize_t got = read(sv[0], out + len, cap - 1 - len);
		if (got < 0 && errno == EINTR)
			continue;
		if (got <= 0)
			break;
		len += (size_t)got;
	}
	out[len] = 0;
	close(sv[0]);
	if (timed_out || len + 1 >= cap)
		kill(pid, SIGKILL);
	int status;
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	if (timed_out) {
		atomic_store(&dl_timed_out, true);
		return -1;
	}
	return (ssize_t)len;
}

/* The file to give the symboliser for the object holding addr, and addr
 * as that file's own address. */
static bool dl_object_of(void *addr, char *path, size_t cap, uintptr_t *rel)
{
	Dl_info info;
	struct link_map *map = NULL;
	if (!dladdr1(addr, &info, (void **)&map, RTLD_DL_LINKMAP) ||
	    !info.dli_fbase)
		return false;
	if (map && map->l_name && map->l_name[0]) {
		if (strlen(map->l_name) >= cap)
			return false;
		strcpy(path, map->l_name);
	} else {
		/* The program itself: its name as started may be relative to a
		 * directory it has since left. */
		ssize_t n = readlink("/proc/self/exe", path, cap - 1);
		if (n <= 0)
			return false;
		path[n] = 0;
	}
	const ElfW(Ehdr) *eh = info.dli_fbase;
	*rel = (uintptr_t)addr;
	if (eh->e_type == ET_DYN)
		*rel -= (uintptr_t)info.dli_fbase;
	return true;
}

/* The line at *p (it ends at its newline), and *p moved past it. */
static const char *dl_take_line(const char **p)
{
	const char *line = *p;
	const char *nl = strchr(line, '\n');
	if (!nl)
		return NULL;
	*p = nl + 1;
	return line;
}

static void dl_add(struct dl_symbols *s, int frame, const char *func,
		   size_t func_len, const char *loc, size_t loc_len)
{
	if (s->n >= DL_SYM_MAX_LINES)
		return;
	/* "file:line (discriminator N)": the file:line is what people want */
	const char *disc = memmem(loc, loc_len, " (discriminator", 15);
	if (disc)
		loc_len = (size_t)(disc - loc);
	bool no_func = func_len == 2 && !memcmp(func, "??", 2);
	bool no_loc = loc_len >= 2 && !memcmp(loc, "??", 2);
	if (no_func && no_loc)
		return;
	if (s->used + func_len + loc_len + 2 > sizeof(s->text))
		return;
	struct dl_sym_line *l = &s->line[s->n++];
	l->frame = frame;
	l->func = no_func ? NULL : s->text + s->used;
	if (!no_func) {
		memcpy(s->text + s->used, func, func_len);
		s->used += func_len;
		s->text[s->used++] = 0;
	}
	l->loc = no_loc ? NULL : s->text + s->used;
	if (!no_loc) {
		memcpy(s->text + s->used, loc, loc_len);
		s->used += loc_len;
		s->text[s->used++] = 0;
	}
}

/* addr2line -a -f -i: "0xADDR", then pairs of function and file:line,
 * the innermost inlined function first. */
static void dl_parse(struct dl_symbols *s, const char *out, const int *frame_of,
		     int nin)
{
	int k = -1;
	const char *line;
	while ((line = dl_take_line(&out))) {
		if (line[0] == '0' && line[1] == 'x') {
			k++;
			continue;
		}
		const char *loc = dl_take_line(&out);
		if (!loc || k < 0 || k >= nin)
			return;
		dl_add(s, frame_of[k], line, strcspn(line, "\n"), loc,
		       strcspn(loc, "\n"));
	}
}

int _dl_symbolize(void *const *frames, int n, bool first_is_pc,
		  struct dl_symbols *s)
{
	s->n = 0;
	s->used = 0;
	if (!_dl_opt.symbolize || atomic_load(&dl_timed_out))
		return -1;
	if (n <= 0)
		return 0;
	char tool[512];
	if (!dl_find_symbolizer(tool, sizeof(tool))) {
		if (!atomic_exchange(&dl_missing_noted, true))
			_dl_warn("symbolizer %s not found: stacks show "
				 "FILE+OFFSET (`addr2line -f -i -e FILE "
				 "OFFSET` names the line); symbolizer=PATH "
				 "names another",
				 _dl_opt.symbolizer[0] ? _dl_opt.symbolizer
						       : "addr2line");
		return -1;
	}
	if (n > DL_MAX_FRAMES)
		n = DL_MAX_FRAMES;
	int64_t deadline = dl_now_ms() + DL_SYM_BUDGET_MS;
	bool done[DL_MAX_FRAMES] = {0};
	/* One symboliser per object, fed all of that object's frames. */
	for (int i = 0; i < n; i++) {
		if (done[i])
			continue;
		char object[512], other[512];
		uintptr_t rel;
		if (!dl_object_of(frames[i], object, sizeof(object), &rel)) {
			done[i] = true;
			continue;
		}
		char input[DL_MAX_FRAMES * 24];
		struct dl_buf in = {input, 0, sizeof(input)};
		int frame_of[DL_MAX_FRAMES], nin = 0;
		for (int j = i; j < n; j++) {
			if (done[j])
				continue;
			if (j != i &&
			    (!dl_object_of(frames[j], other, sizeof(other),
					   &rel) ||
			     strcmp(other, object)))
				continue;
			if (j == i)
				dl_object_of(frames[j], other, sizeof(other),
					     &rel);
			/* A return address is the instruction after the call:
			 * the call's own line is one byte back. */
			if (j > 0 || !first_is_pc)
				rel--;
			_dl_buf_hex(&in, rel);
			_dl_buf_char(&in, '\n');
			done[j] = true;
			frame_of[nin++] = j;
		}
		char out[4096];
		ssize_t got = dl_run(tool, object, input, in.len, out,
				     sizeof(out), deadline);
		if (got > 0)
			dl_parse(s, out, frame_of, nin);
		if (atomic_load(&dl_timed_out)) {
			_dl_warn("the symbolizer %s took over %d s: stacks "
				 "show FILE+OFFSET from here on",
				 tool, DL_SYM_BUDGET_MS / 1000);
			break;
		}
	}
	return s->n;
}
