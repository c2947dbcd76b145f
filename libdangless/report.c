/* SPDX-License-Identifier: MIT */
/*
 * Output that is safe in a signal handler and inside the allocator: no
 * stdio, no allocation, one write(2) per message where it fits.  Stacks are
 * captured with backtrace() (warmed up at init, so it no longer loads
 * anything) and kept in a deduplicating depot; dladdr names them when a
 * report is printed.
 */
#include <dlfcn.h>
#include <errno.h>
#include <execinfo.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "internal.h"

void _dl_write_all(int fd, const char *s, size_t n)
{
	int saved = errno;
	while (n) {
		ssize_t w = write(fd, s, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			break;
		s += w;
		n -= (size_t)w;
	}
	errno = saved;
}

static void dl_buf_put(struct dl_buf *b, char c)
{
	if (b->len + 1 < b->cap)
		b->p[b->len++] = c;
	if (b->cap)
		b->p[b->len] = 0;
}

void _dl_buf_str(struct dl_buf *b, const char *s)
{
	for (s = s ? s : "(null)"; *s; s++)
		dl_buf_put(b, *s);
}

static void dl_buf_num(struct dl_buf *b, uint64_t v, unsigned base,
		       bool negative)
{
	char digits[24];
	int n = 0;
	do {
		digits[n++] = "0123456789abcdef"[v % base];
		v /= base;
	} while (v);
	if (negative)
		dl_buf_put(b, '-');
	while (n)
		dl_buf_put(b, digits[--n]);
}

void _dl_buf_hex(struct dl_buf *b, uintptr_t v)
{
	_dl_buf_str(b, "0x");
	dl_buf_num(b, v, 16, false);
}

void _dl_buf_dec(struct dl_buf *b, uint64_t v)
{
	dl_buf_num(b, v, 10, false);
}

/* %s %c %d %i %u %x %p %%, with l, ll, z, j; enough for our messages. */
static void dl_vformat(struct dl_buf *b, const char *fmt, va_list ap)
{
	for (; *fmt; fmt++) {
		if (*fmt != '%') {
			dl_buf_put(b, *fmt);
			continue;
		}
		int longs = 0;
		for (fmt++; *fmt == 'l' || *fmt == 'z' || *fmt == 'j'; fmt++)
			longs = 2;
		switch (*fmt) {
		case 's':
			_dl_buf_str(b, va_arg(ap, const char *));
			break;
		case 'c':
			dl_buf_put(b, (char)va_arg(ap, int));
			break;
		case 'd':
		case 'i': {
			int64_t v = longs ? va_arg(ap, int64_t)
					  : va_arg(ap, int);
			dl_buf_num(b, v < 0 ? -(uint64_t)v : (uint64_t)v, 10,
				   v < 0);
			break;
		}
		case 'u':
		case 'x': {
			uint64_t v = longs ? va_arg(ap, uint64_t)
					   : va_arg(ap, unsigned);
			dl_buf_num(b, v, *fmt == 'u' ? 10 : 16, false);
			break;
		}
		case 'p':
			_dl_buf_hex(b, (uintptr_t)va_arg(ap, void *));
			break;
		case '%':
			dl_buf_put(b, '%');
			break;
		default:
			if (!*fmt)
				return;
			dl_buf_put(b, '%');
			dl_buf_put(b, *fmt);
		}
	}
}

static void dl_vprint(const char *prefix, const char *fmt, va_list ap)
{
	char line[1024];
	struct dl_buf b = {line, 0, sizeof(line)};
	_dl_buf_str(&b, prefix);
	dl_vformat(&b, fmt, ap);
	dl_buf_put(&b, '\n');
	_dl_write_all(2, line, b.len);
}

void _dl_printf(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	dl_vprint("", fmt, ap);
	va_end(ap);
}

void _dl_warn(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	dl_vprint("dangless: ", fmt, ap);
	va_end(ap);
}

void _dl_fatal(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	dl_vprint("dangless: ", fmt, ap);
	va_end(ap);
	abort();
}

/* ---- stack depot ---- */

struct dl_stack_entry {
	uint32_t hash;
	uint32_t n;
	void *frames[DL_MAX_FRAMES];
};

#define DL_DEPOT_SLOTS (1u << 18)
static struct dl_stack_entry *dl_depot;
static dl_lock_t dl_depot_lock;

static uint32_t dl_hash_frames(void *const *frames, int n)
{
	uint64_t h = 0xcbf29ce484222325ull;
	for (int i = 0; i < n; i++) {
		h ^= (uintptr_t)frames[i];
		h *= 0x100000001b3ull;
	}
	return (uint32_t)(h ^ (h >> 32)) | 1;
}

/*
 * Frames inside the allocator itself tell the reader nothing: the stack
 * starts at the program's call into it (_dl_api_caller), when found.
 */
static int dl_skip_own_frames(void *const *frames, int n)
{
	for (int i = 0; i < n; i++)
		if (frames[i] == _dl_api_caller)
			return i;
	return 0;
}

/* Returns 0 when nothing could be kept. */
uint32_t _dl_stack_capture(void)
{
	/* backtrace() may allocate (its unwinder's first use): no recursion */
	static __thread bool capturing
		__attribute__((tls_model("initial-exec")));
	if (capturing)
		return 0;
	capturing = true;
	void *all[DL_MAX_FRAMES + 8];
	int n = backtrace(all, DL_MAX_FRAMES + 8);
	capturing = false;
	int skip = dl_skip_own_frames(all, n);
	if (!skip)
		skip = n > 2 ? 2 : 0; /* at least not this function */
	void **frames = all + skip;
	n -= skip;
	if (n > DL_MAX_FRAMES)
		n = DL_MAX_FRAMES;
	if (n <= 0)
		return 0;
	if (!dl_depot) {
		_dl_lock(&dl_depot_lock);
		if (!dl_depot)
			dl_depot = _dl_os_pages(DL_DEPOT_SLOTS *
						sizeof(*dl_depot));
		_dl_unlock(&dl_depot_lock);
		if (!dl_depot)
			return 0;
	}
	uint32_t h = dl_hash_frames(frames, n);
	for (uint32_t probe = 0; probe < 64; probe++) {
		uint32_t i = (h + probe) & (DL_DEPOT_SLOTS - 1);
		struct dl_stack_entry *e = &dl_depot[i];
		uint32_t seen = __atomic_load_n(&e->hash, __ATOMIC_ACQUIRE);
		if (seen == h && e->n == (uint32_t)n &&
		    !memcmp(e->frames, frames, (size_t)n * sizeof(void *)))
			return i + 1;
		if (seen == 0) {
			_dl_lock(&dl_depot_lock);
			if (e->hash == 0) {
				e->n = (uint32_t)n;
				memcpy(e->frames, frames,
				       (size_t)n * sizeof(void *));
				__atomic_store_n(&e->hash, h, __ATOMIC_RELEASE);
				_dl_unlock(&dl_depot_lock);
				return i + 1;
			}
			_dl_unlock(&dl_depot_lock);
		}
	}
	return 0;
}

void _dl_backtrace_print(void *const *frames, int n)
{
	for (int i = 0; i < n; i++) {
		char line[512];
		struct dl_buf b = {line, 0, sizeof(line)};
		Dl_info info;
		_dl_buf_str(&b, "dangless:   #");
		_dl_buf_dec(&b, (uint64_t)i);
		_dl_buf_str(&b, " ");
		_dl_buf_hex(&b, (uintptr_t)frames[i]);
		if (dladdr(frames[i], &info) && info.dli_fname) {
			if (info.dli_sname) {
				_dl_buf_str(&b, " in ");
				_dl_buf_str(&b, info.dli_sname);
				_dl_buf_str(&b, "+");
				_dl_buf_hex(&b, (uintptr_t)frames[i] -
							(uintptr_t)info.dli_saddr);
			}
			_dl_buf_str(&b, " (");
			_dl_buf_str(&b, info.dli_fname);
			_dl_buf_str(&b, "+");
			_dl_buf_hex(&b, (uintptr_t)frames[i] -
						(uintptr_t)info.dli_fbase);
			_dl_buf_str(&b, ")");
		}
		dl_buf_put(&b, '\n');
		_dl_write_all(2, line, b.len);
	}
}

void _dl_stack_print(const char *title, uint32_t id)
{
	if (!id || !dl_depot) {
		_dl_printf("dangless: %s: (not recorded%s)", title,
			   _dl_opt.stacks ? "" : "; run with stacks=1");
		return;
	}
	struct dl_stack_entry *e = &dl_depot[id - 1];
	_dl_printf("dangless: %s:", title);
	_dl_backtrace_print(e->frames, (int)e->n);
}

void _dl_report_hints(void)
{
	if (!_dl_opt.stacks)
		_dl_printf("dangless: DANGLESS_OPTIONS=stacks=1 also shows where "
			   "the allocation was made and freed");
	_dl_printf("dangless: FILE+OFFSET above: `addr2line -f -i -e FILE "
		   "OFFSET` names the function and line");
}

void _dl_report_abort(const char *msg, uint32_t alloc_stack,
		      uint32_t free_stack)
{
	void *frames[DL_MAX_FRAMES + 8];
	_dl_write_all(2, msg, strlen(msg));
	_dl_write_all(2, "\n", 1);
	int n = backtrace(frames, DL_MAX_FRAMES + 8);
	int skip = dl_skip_own_frames(frames, n);
	_dl_printf("dangless: at:");
	_dl_backtrace_print(frames + skip, n - skip > DL_MAX_FRAMES
						   ? DL_MAX_FRAMES
						   : n - skip);
	if (alloc_stack || _dl_opt.stacks)
		_dl_stack_print("allocated at", alloc_stack);
	if (free_stack || _dl_opt.stacks)
		_dl_stack_print("freed at", free_stack);
	_dl_report_hints();
	abort();
}
