/* SPDX-License-Identifier: MIT */
/*
 * Output that is safe in a signal handler and inside the allocator: no
 * stdio, no allocation, one write(2) per message where it fits.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <unistd.h>

#include "services.h"

int _dl_msg_verbosity;

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
