/* SPDX-License-Identifier: MIT */
/*
 * Output that is safe in a signal handler and inside the allocator: no
 * stdio, no allocation, one write(2) per message where it fits.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <string.h>
#include <stdlib.h>
#include <unistd.h>

#include "services.h"

int _dl_msg_verbosity;

static char dl_log_base[256];
static atomic_int dl_log_fd = -1;
static atomic_int dl_log_pid;

bool _dl_log_path_set(const char *path, size_t len)
{
	if (len == 0 || len >= sizeof(dl_log_base))
		return false;
	memcpy(dl_log_base, path, len);
	dl_log_base[len] = 0;
	return true;
}

const char *_dl_log_path(void)
{
	return dl_log_base;
}

int _dl_out_fd(void)
{
	if (!dl_log_base[0])
		return 2;
	int pid = (int)getpid();
	if (atomic_load(&dl_log_pid) == pid)
		return atomic_load(&dl_log_fd);
	char name[sizeof(dl_log_base) + 24];
	struct dl_buf b = {name, 0, sizeof(name)};
	_dl_buf_str(&b, dl_log_base);
	_dl_buf_char(&b, '.');
	_dl_buf_dec(&b, (uint64_t)pid);
	int saved = errno;
	int fd = open(name, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
	int err = errno;
	errno = saved;
	if (fd < 0) {
		char msg[sizeof(name) + 128];
		struct dl_buf m = {msg, 0, sizeof(msg)};
		_dl_buf_str(&m, "dangless: cannot open log_path file ");
		_dl_buf_str(&m, name);
		_dl_buf_str(&m, " (errno ");
		_dl_buf_dec(&m, (uint64_t)err);
		_dl_buf_str(&m, err == EACCES   ? ", permission denied"
				: err == ENOENT ? ", no such directory"
						: "");
		_dl_buf_str(&m, "); writing to stderr instead\n");
		_dl_write_all(2, msg, m.len);
		fd = 2;
	}
	/* A forked child: the parent's file stays the parent's. */
	int old = atomic_exchange(&dl_log_fd, fd);
	if (old > 2)
		close(old);
	atomic_store(&dl_log_pid, pid);
	return fd;
}

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

void _dl_buf_char(struct dl_buf *b, char c)
{
	if (b->len + 1 < b->cap)
		b->p[b->len++] = c;
	if (b->cap)
		b->p[b->len] = 0;
}

void _dl_buf_str(struct dl_buf *b, const char *s)
{
	for (s = s ? s : "(null)"; *s; s++)
		_dl_buf_char(b, *s);
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
		_dl_buf_char(b, '-');
	while (n)
		_dl_buf_char(b, digits[--n]);
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

const char *_dl_strerror(int err)
{
	/* the errors system calls give Dangless, in glibc's words */
	static const char *const text[] = {
		[EPERM] = "Operation not permitted",
		[ENOENT] = "No such file or directory",
		[ESRCH] = "No such process",
		[EINTR] = "Interrupted system call",
		[EIO] = "Input/output error",
		[ENXIO] = "No such device or address",
		[E2BIG] = "Argument list too long",
		[EBADF] = "Bad file descriptor",
		[EAGAIN] = "Resource temporarily unavailable",
		[ENOMEM] = "Cannot allocate memory",
		[EACCES] = "Permission denied",
		[EFAULT] = "Bad address",
		[EBUSY] = "Device or resource busy",
		[EEXIST] = "File exists",
		[ENODEV] = "No such device",
		[EINVAL] = "Invalid argument",
		[ENFILE] = "Too many open files in system",
		[EMFILE] = "Too many open files",
		[ENOTTY] = "Inappropriate ioctl for device",
		[ENOSPC] = "No space left on device",
		[EROFS] = "Read-only file system",
		[ERANGE] = "Numerical result out of range",
		[ENOSYS] = "Function not implemented",
		[EOVERFLOW] = "Value too large for defined data type",
		[EOPNOTSUPP] = "Operation not supported",
		[ETIMEDOUT] = "Connection timed out",
	};
	if (err > 0 && (size_t)err < sizeof(text) / sizeof(text[0]) && text[err])
		return text[err];
	static __thread char other[32];
	struct dl_buf b = {other, 0, sizeof(other)};
	_dl_buf_str(&b, "error ");
	_dl_buf_dec(&b, (uint64_t)(err < 0 ? -(int64_t)err : err));
	return other;
}

/* %s %c %d %i %u %x %p %%, with l, ll, z, j; enough for our messages. */
static void dl_vformat(struct dl_buf *b, const char *fmt, va_list ap)
{
	for (; *fmt; fmt++) {
		if (*fmt != '%') {
			_dl_buf_char(b, *fmt);
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
			_dl_buf_char(b, (char)va_arg(ap, int));
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
			_dl_buf_char(b, '%');
			break;
		default:
			if (!*fmt)
				return;
			_dl_buf_char(b, '%');
			_dl_buf_char(b, *fmt);
		}
	}
}

static void dl_vprint(const char *prefix, const char *fmt, va_list ap)
{
	char line[1024];
	struct dl_buf b = {line, 0, sizeof(line)};
	_dl_buf_str(&b, prefix);
	dl_vformat(&b, fmt, ap);
	_dl_buf_char(&b, '\n');
	_dl_write_all(_dl_out_fd(), line, b.len);
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

void _dl_info(const char *fmt, ...)
{
	if (_dl_msg_verbosity < 1)
		return;
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

void _dl_assert_fail(const char *cond, const char *file, int line)
{
	_dl_printf("dangless: internal error: assertion '%s' failed at %s:%d",
		   cond, file, line);
	abort();
}
